//! An insider: a process that holds the herd's secret and speaks the real greeting and channel to a
//! real server, then writes whatever lines it likes on the link (PROTOCOL.md §5: holding the secret
//! lifts no bound).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use herd_server::node::handshake::{Greeting, Keyring, Opener, Sealer, Verdict};
use herd_server::node::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A link greeted with the secret, as server `me` to server `to`.
pub struct Insider {
    stream: TcpStream,
    sealer: Sealer,
    opener: Opener,
    wire: BytesMut,
    /// What the server sent on the link, decrypted.
    pub plain: BytesMut,
}

impl Insider {
    /// Greets `addr` (server `to`) as `me`, which must sort before `to` (the dialling side), proving
    /// `secret`. Panics if the greeting itself is refused or takes longer than the test deadline.
    pub async fn greet(addr: SocketAddr, me: &str, to: &str, secret: &str) -> Insider {
        match Insider::try_greet(addr, me, to, secret).await {
            Ok(insider) => insider,
            Err(f) => panic!("the insider's greeting was refused: {f}"),
        }
    }

    /// Greets like [`Insider::greet`]; a refusal is returned (`refused: quarantined`, …), not a panic.
    pub async fn try_greet(
        addr: SocketAddr,
        me: &str,
        to: &str,
        secret: &str,
    ) -> Result<Insider, String> {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let keyring = Keyring::new(&[secret]);
        let node = Node::new(me, vec![to.into()]);
        let mut out = Vec::new();
        let mut greeting = Greeting::dial(me.as_bytes(), to.as_bytes(), 0, &keyring, 0, &mut out);
        let mut input = BytesMut::new();
        let deadline = Instant::now() + crate::DEADLINE;
        let est = loop {
            stream.write_all(&out).await.expect("write");
            out.clear();
            match greeting.feed(&mut input, &node, Instant::now(), &mut out) {
                Verdict::Established(est) => break est,
                Verdict::Failed(f) => return Err(format!("{}: {}", f.refusal.word(), f.detail)),
                Verdict::Pending => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let read = tokio::time::timeout(left, stream.read_buf(&mut input)).await;
            if !matches!(read, Ok(Ok(n)) if n > 0) {
                return Err("greeting cut short".into());
            }
        };
        stream.write_all(&out).await.expect("write");
        Ok(Insider {
            stream,
            sealer: est.channel.sealer,
            opener: est.channel.opener,
            wire: BytesMut::new(),
            plain: est.channel.first,
        })
    }

    /// Seals `lines` and writes them on the link. Returns false if the server closed it.
    pub async fn send(&mut self, lines: &[u8]) -> bool {
        let mut out = Vec::new();
        self.sealer.seal(lines, &mut out);
        self.stream.write_all(&out).await.is_ok()
    }

    /// Reads what the server sends for up to `wait`, or until it closes the link (then true).
    pub async fn read_for(&mut self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match tokio::time::timeout(left, self.stream.read_buf(&mut self.wire)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {
                    if self.opener.open(&mut self.wire, &mut self.plain).is_err() {
                        return true;
                    }
                }
            }
        }
    }

    /// Reads until the server closes the link or the test deadline passes; whether it closed.
    pub async fn until_closed(&mut self) -> bool {
        self.read_for(crate::DEADLINE).await
    }

    /// What the server sent, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.plain).into_owned()
    }
}
