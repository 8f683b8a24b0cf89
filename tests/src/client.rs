//! A minimal protocol client for tests: send bytes, read lines or everything, with deadlines.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::DEADLINE;

/// One connection to a server.
pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = timeout(DEADLINE, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        stream.set_nodelay(true).ok();
        let (r, w) = stream.into_split();
        Client {
            reader: BufReader::new(r),
            writer: w,
        }
    }

    /// Writes `bytes` as they are.
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.writer.write_all(bytes.as_ref()).await.expect("write");
    }

    /// Half-closes: the server sees EOF.
    pub async fn finish(&mut self) {
        self.writer.shutdown().await.expect("shutdown");
    }

    /// The next line, with its `\n`; empty at EOF.
    pub async fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        timeout(DEADLINE, self.reader.read_until(b'\n', &mut line))
            .await
            .expect("no line in time")
            .expect("read");
        line
    }

    /// The next line as text (lossy), with its `\n`.
    pub async fn text_line(&mut self) -> String {
        String::from_utf8_lossy(&self.line().await).into_owned()
    }

    /// A whole WHATSAT answer: lines up to and including the empty line.
    pub async fn whatsat_answer(&mut self) -> String {
        let mut all = String::new();
        loop {
            let line = self.text_line().await;
            assert!(!line.is_empty(), "EOF inside a WHATSAT answer: {all:?}");
            all.push_str(&line);
            if line == "\n" {
                return all;
            }
        }
    }

    /// Everything until the server closes.
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        timeout(DEADLINE, self.reader.read_to_end(&mut all))
            .await
            .expect("server did not close in time")
            .expect("read");
        all
    }
}

/// Sends `bytes` on a fresh connection, half-closes, and returns all the server says before it closes.
pub async fn exchange(addr: SocketAddr, bytes: impl AsRef<[u8]>) -> Vec<u8> {
    let mut c = Client::connect(addr).await;
    c.send(bytes).await;
    c.finish().await;
    c.read_to_end().await
}

/// [`exchange`], or `None` when the connection is refused or reset on the way (a door at its
/// connection cap, or closing the connections it held): for polling until a server answers again.
pub async fn try_exchange(addr: SocketAddr, bytes: impl AsRef<[u8]>) -> Option<Vec<u8>> {
    let talk = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(bytes.as_ref()).await.ok()?;
        s.shutdown().await.ok()?;
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.ok()?;
        Some(all)
    };
    timeout(DEADLINE, talk).await.ok().flatten()
}

/// [`exchange`] as text.
pub async fn exchange_text(addr: SocketAddr, bytes: impl AsRef<[u8]>) -> String {
    String::from_utf8_lossy(&exchange(addr, bytes).await).into_owned()
}
