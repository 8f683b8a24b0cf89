//! A man in the middle for peer-link tests: forwards a link's bytes both ways, records them, and on
//! request flips a byte or writes extra bytes into the stream towards the server, or cuts the link
//! (closes its connections and refuses new ones until healed).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Most bytes recorded per direction of one connection.
const CAPTURE_MAX: usize = 1 << 20;

/// The bytes of one proxied connection, as they passed.
#[derive(Debug, Default, Clone)]
pub struct Capture {
    /// From the dialling server towards the listening one.
    pub up: Vec<u8>,
    /// From the listening server back.
    pub down: Vec<u8>,
    /// Every byte towards the listening server, including those past the recording limit.
    pub up_bytes: u64,
    /// Every byte back.
    pub down_bytes: u64,
}

#[derive(Default)]
struct Shared {
    captures: Mutex<Vec<Capture>>,
    inject: Mutex<Vec<u8>>,
    flip: AtomicBool,
    cut: AtomicBool,
    pumps: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// A proxy listening on loopback in front of `target`.
pub struct Proxy {
    /// Where the dialling server is pointed.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy on a free loopback port that forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        Self::start_on(
            TcpListener::bind("127.0.0.1:0").await.expect("bind proxy"),
            target,
        )
    }

    /// Starts a proxy on `listener`.
    pub fn start_on(listener: TcpListener, target: SocketAddr) -> Proxy {
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                if s.cut.load(Ordering::SeqCst) {
                    continue; // dropped: the dialler sees the connection closed
                }
                let Ok(up) = TcpStream::connect(target).await else {
                    continue;
                };
                let index = {
                    let mut c = s.captures.lock().unwrap();
                    c.push(Capture::default());
                    c.len() - 1
                };
                let task = tokio::spawn(pump(s.clone(), index, down, up));
                s.pumps.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy { addr, shared, task }
    }

    /// The connections so far, as recorded.
    pub fn captures(&self) -> Vec<Capture> {
        self.shared.captures.lock().unwrap().clone()
    }

    /// Writes `bytes` towards the server, just before the next bytes the dialler sends.
    pub fn inject(&self, bytes: &[u8]) {
        self.shared.inject.lock().unwrap().extend_from_slice(bytes);
    }

    /// Cuts the link: closes every connection and drops new ones until [`Proxy::heal`].
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        for task in self.shared.pumps.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Flips one bit of the next bytes the dialler sends.
    pub fn flip_next(&self) {
        self.shared.flip.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(shared: Arc<Shared>, index: usize, down: TcpStream, up: TcpStream) {
    let (mut dr, mut dw) = down.into_split();
    let (mut ur, mut uw) = up.into_split();
    let s = shared.clone();
    let upward = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match dr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let extra = std::mem::take(&mut *s.inject.lock().unwrap());
            if !extra.is_empty() && uw.write_all(&extra).await.is_err() {
                return;
            }
            if s.flip.swap(false, Ordering::SeqCst) {
                buf[n / 2] ^= 0x20;
            }
            record(&s, index, |c| (&mut c.up, &mut c.up_bytes), &buf[..n]);
            if uw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let s = shared.clone();
    let downward = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match ur.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            record(&s, index, |c| (&mut c.down, &mut c.down_bytes), &buf[..n]);
            if dw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Either side closing ends the connection, as a real link would.
    tokio::select! {
        _ = upward => {}
        _ = downward => {}
    }
}

fn record(
    s: &Shared,
    index: usize,
    side: impl Fn(&mut Capture) -> (&mut Vec<u8>, &mut u64),
    bytes: &[u8],
) {
    let mut captures = s.captures.lock().unwrap();
    let (v, total) = side(&mut captures[index]);
    *total += bytes.len() as u64;
    let room = CAPTURE_MAX.saturating_sub(v.len());
    v.extend_from_slice(&bytes[..bytes.len().min(room)]);
}
