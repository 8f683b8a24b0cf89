//! The tokio driver: the accept loop and one task per client connection.
//!
//! Each connection reads what the socket has, answers every complete line in order into one buffer,
//! writes it, and only then reads again — so replies never overtake each other, pipelined lines are
//! answered with one write, and a client that never reads stops being read from instead of growing
//! the server's memory.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use herd_proto::{CodecError, ErrorKind, HerdCodec, PeerMessage, Timestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_util::codec::Decoder;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::config::{Config, Limits};
use crate::handshake::Keyring;
use crate::log::{Dir, Log, LogBuf, HAND_OVER_AT, SUMMARY};
use crate::node::{Node, Step};
use crate::peers;
use crate::places::{Answer, Places};

/// Where receive times come from: the system clock, or a test's.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Flush the reply buffer once it holds this much, even mid-batch.
const FLUSH_AT: usize = 64 * 1024;
/// Most lines decoded and answered per batch.
const BATCH_LINES: usize = 256;

/// Listen backlog: bursts of connects wait in the kernel instead of overflowing into SYN cookies
/// and resets (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: u32 = 4096;

/// Binds `addr` (`host:port`) with a deep accept queue and `SO_REUSEADDR`, so a restarted server can
/// take its port back at once.
///
/// # Errors
/// The address does not resolve, or cannot be bound (taken, not local, no permission).
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(BACKLOG)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("{addr} resolves to no address"))))
}

/// Everything one server needs to run.
#[derive(Clone)]
pub struct ServerSpec {
    /// Its name.
    pub name: String,
    /// Its neighbours: name and `host:port`.
    pub neighbors: Vec<(String, String)>,
    /// The herd's secrets as keys (empty: links are neither authenticated nor encrypted).
    pub keyring: Keyring,
    /// Every server name of the herd: records naming another server are refused.
    pub members: Vec<String>,
    /// Limits on lines and connections.
    pub limits: Limits,
    /// Log every line in and out, and each WHATSAT's look-up (`[log] lines`).
    pub log_lines: bool,
    /// Log WHATSAT answers' JSON whole instead of a summary line (`[log] bodies`).
    pub log_bodies: bool,
    /// Where its log lines go ([`Log::off`]: nowhere).
    pub log: Log,
    /// The Places back-end (shared by the servers of one process).
    pub places: Places,
    /// The receive-time clock.
    pub clock: Clock,
}

impl ServerSpec {
    /// The spec of server `name` of `config`.
    ///
    /// # Errors
    /// `name` is not a server of the herd.
    pub fn from_config(config: &Config, name: &str, places: Places) -> anyhow::Result<Self> {
        let Some(server) = config.server(name) else {
            let names: Vec<&str> = config.servers.iter().map(|s| s.name.as_str()).collect();
            anyhow::bail!(
                "no server named {name:?} in the herd (servers: {})",
                names.join(", ")
            );
        };
        let neighbors = server
            .neighbors
            .iter()
            .filter_map(|n| config.server(n).map(|s| (s.name.clone(), s.listen.clone())))
            .collect();
        Ok(ServerSpec {
            name: name.to_owned(),
            neighbors,
            keyring: Keyring::new(&config.secrets),
            members: config.servers.iter().map(|s| s.name.clone()).collect(),
            limits: config.limits,
            log_lines: config.log.lines,
            log_bodies: config.log.bodies,
            log: Log::off(),
            places,
            clock: Arc::new(Timestamp::now),
        })
    }
}

/// One neighbour as the driver sees it.
pub(crate) struct PeerSlot {
    pub(crate) name: String,
    pub(crate) addr: String,
    /// Wakes the link's writer: something to send.
    pub(crate) notify: Notify,
    /// The node asked for a keep-alive on this link.
    pub(crate) ping_due: std::sync::atomic::AtomicBool,
    /// Cancels the link currently serving this neighbour, when a newer one replaces it.
    pub(crate) current: Mutex<Option<CancellationToken>>,
}

/// State shared by a server's tasks.
pub(crate) struct Shared {
    pub(crate) spec: ServerSpec,
    pub(crate) node: Mutex<Node>,
    pub(crate) peers: Vec<PeerSlot>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tracker: TaskTracker,
    next_conn: AtomicU64,
}

impl Shared {
    /// The node, never held across an `.await`.
    pub(crate) fn node(&self) -> MutexGuard<'_, Node> {
        self.node.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A record was stored: wake every link but `except`.
    pub(crate) fn notify_links(&self, except: Option<usize>) {
        for (id, p) in self.peers.iter().enumerate() {
            if Some(id) != except {
                p.notify.notify_one();
            }
        }
    }

    pub(crate) fn conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

/// Runs one server on `listener` until `shutdown` is cancelled, then waits for the replies in flight.
///
/// # Errors
/// Never for a connection's trouble (those are logged); only if the server cannot run at all.
pub async fn run(
    listener: TcpListener,
    spec: ServerSpec,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let span = info_span!("server", server = %spec.name);
    run_inner(listener, spec, shutdown).instrument(span).await
}

async fn run_inner(
    listener: TcpListener,
    spec: ServerSpec,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let me = spec.name.clone();
    let peers = spec
        .neighbors
        .iter()
        .map(|(name, addr)| PeerSlot {
            name: name.clone(),
            addr: addr.clone(),
            notify: Notify::new(),
            ping_due: std::sync::atomic::AtomicBool::new(false),
            current: Mutex::new(None),
        })
        .collect();
    let node = Node::new(&me, spec.neighbors.iter().map(|(n, _)| n.clone()).collect())
        .with_members(&spec.members);
    let shared = Arc::new(Shared {
        node: Mutex::new(node),
        peers,
        shutdown: shutdown.clone(),
        tracker: TaskTracker::new(),
        next_conn: AtomicU64::new(1),
        spec,
    });
    let local = listener.local_addr()?;
    let neighbors: Vec<&str> = shared.peers.iter().map(|p| p.name.as_str()).collect();
    info!(target: SUMMARY, "{me} listening on {local}, places: {}, neighbours: {}", shared.spec.places.backend(), neighbors.join(", "));
    info!(%local, places = %shared.spec.places.backend(), neighbours = %neighbors.join(","), "server started");

    if !shared.peers.is_empty() {
        // The node decides when to dial (only the server whose name sorts first dials a pair),
        // ping and close; this task carries it out.
        let s = shared.clone();
        shared
            .tracker
            .spawn(peers::link_manager(s).in_current_span());
    }

    let limit = Arc::new(Semaphore::new(shared.spec.limits.max_connections));
    let mut backoff = std::time::Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => p?,
            _ = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, addr)) => {
                backoff = std::time::Duration::from_millis(10);
                let s = shared.clone();
                shared.tracker.spawn(
                    async move {
                        handle(s, stream, addr).await;
                        drop(permit);
                    }
                    .in_current_span(),
                );
            }
            Err(e) => {
                // Out of file descriptors and the like: wait, then go on.
                error!(cause = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
            }
        }
    }
    drop(listener);
    info!("stopped accepting; finishing connections");
    shared.tracker.close();
    shared.tracker.wait().await;
    info!(target: SUMMARY, "{me} stopped");
    info!("server stopped");
    Ok(())
}

async fn handle(shared: Arc<Shared>, stream: TcpStream, addr: SocketAddr) {
    let id = shared.conn_id();
    let _ = stream.set_nodelay(true);
    info!(conn = id, peer = %addr, "connection opened");
    let mut c = Connection::new(&shared, stream, id);
    let served = c.serve().await;
    // The lines of a batch that an error cut short are still logged.
    shared.spec.log.submit(&mut c.log).await;
    let mut stream = match served {
        Ok(Some(hello)) => {
            let (stream, buf) = c.into_parts();
            peers::accept(shared, stream, id, addr, hello, buf).await;
            return;
        }
        Ok(None) => c.into_parts().0,
        Err(e) => {
            debug!(conn = id, cause = %e, "connection error");
            c.into_parts().0
        }
    };
    let _ = stream.shutdown().await;
    info!(conn = id, "connection closed");
}

/// A peer's greeting, read as the first line of a connection.
pub(crate) type Hello = Bytes;

/// Whether a connection's first line is a peer greeting (of this version or another, so another
/// version is refused as such rather than answered as a client line).
fn is_hello(line: &[u8]) -> bool {
    match PeerMessage::parse(line) {
        Ok(PeerMessage::Hello { .. }) => true,
        Err(e) => e.kind == ErrorKind::Version,
        Ok(_) => false,
    }
}

/// What [`Connection::read_batch`] found.
enum Batch {
    /// Complete lines to answer are in `lines` (and perhaps a line over the limit in `too_long`).
    Lines,
    /// The first line was a peer's greeting: the connection is a peer link.
    Peer(Hello),
    /// End of stream, the idle time-out or shutdown: nothing more to answer.
    End,
}

/// A client connection: its stream and the buffers it owns — bytes read and not yet decoded, the
/// batch of lines being answered, replies not yet written and log lines not yet handed over.
///
/// It reads what the socket has ([`read_batch`](Self::read_batch)), answers every complete line in
/// order into the reply and log buffers ([`answer_batch`](Self::answer_batch)), hands the log buffer
/// over and writes the replies ([`flush`](Self::flush)), and only then reads again.
struct Connection<'a> {
    shared: &'a Shared,
    stream: TcpStream,
    id: u64,
    codec: HerdCodec,
    /// Bytes read and not yet decoded; grows on first use, so an idle connection costs little.
    buf: BytesMut,
    /// The batch being answered.
    lines: Vec<Bytes>,
    /// A line over the limit ended the batch: it is answered, then the connection closes.
    too_long: Option<Bytes>,
    /// Replies not yet written.
    out: Vec<u8>,
    /// Log lines not yet handed to the log's writer.
    log: LogBuf,
    /// Lines in and out are logged.
    logging: bool,
    /// No line has been read yet (the first one may be a peer's greeting).
    first: bool,
    eof: bool,
    /// It has sent something: reads go in 4 KiB steps.
    active: bool,
    // Made once per connection: a fresh `cancelled()` or `timeout()` per read costs a waiter
    // registration or a timer insertion on every request.
    cancelled: Pin<Box<WaitForCancellationFuture<'a>>>,
    idle: Pin<Box<tokio::time::Sleep>>,
    last_read: tokio::time::Instant,
}

impl<'a> Connection<'a> {
    fn new(shared: &'a Shared, stream: TcpStream, id: u64) -> Self {
        let spec = &shared.spec;
        Connection {
            shared,
            stream,
            id,
            codec: HerdCodec::new_with_max_length(spec.limits.max_line),
            buf: BytesMut::new(),
            lines: Vec::new(),
            too_long: None,
            out: Vec::new(),
            log: spec.log.buffer(id, None),
            logging: spec.log_lines && spec.log.is_on(),
            first: true,
            eof: false,
            active: false,
            cancelled: Box::pin(shared.shutdown.cancelled()),
            idle: Box::pin(tokio::time::sleep(spec.limits.idle_timeout)),
            last_read: tokio::time::Instant::now(),
        }
    }

    /// The stream and the bytes read but not decoded (a peer link's first records).
    fn into_parts(self) -> (TcpStream, BytesMut) {
        (self.stream, self.buf)
    }

    /// Serves client lines until EOF, the idle time-out, an over-long line or shutdown. Returns the
    /// greeting if the connection turns out to be a peer link.
    async fn serve(&mut self) -> std::io::Result<Option<Hello>> {
        loop {
            match self.read_batch().await? {
                Batch::Lines => {}
                Batch::Peer(hello) => return Ok(Some(hello)),
                Batch::End => return Ok(None),
            }
            let closing = self.too_long.is_some();
            self.answer_batch().await?;
            self.flush().await?;
            if closing {
                return Ok(None);
            }
        }
    }

    /// Decodes up to [`BATCH_LINES`] complete lines into `lines`, reading from the socket only when
    /// none is buffered.
    async fn read_batch(&mut self) -> std::io::Result<Batch> {
        loop {
            self.lines.clear();
            while self.lines.len() < BATCH_LINES {
                let next = if self.eof {
                    self.codec.decode_eof(&mut self.buf)
                } else {
                    self.codec.decode(&mut self.buf)
                };
                match next {
                    Ok(Some(line)) => {
                        // The first line decides whether this is a peer link; nothing after it is
                        // read here.
                        if std::mem::take(&mut self.first) && is_hello(&line) {
                            return Ok(Batch::Peer(line));
                        }
                        self.lines.push(line);
                    }
                    Ok(None) => break,
                    Err(CodecError::LineTooLong { head, .. }) => {
                        self.too_long = Some(head);
                        break;
                    }
                    Err(CodecError::Io(e)) => return Err(e),
                    Err(e) => return Err(std::io::Error::other(e.to_string())),
                }
            }
            if !self.lines.is_empty() || self.too_long.is_some() {
                return Ok(Batch::Lines);
            }
            if self.eof || !self.fill().await? {
                return Ok(Batch::End);
            }
        }
    }

    /// Reads what the socket has. `Ok(false)`: shutdown or the idle time-out ends the connection.
    async fn fill(&mut self) -> std::io::Result<bool> {
        // A connection that has sent something reads in 4 KiB steps; one that has not (an idle
        // client) holds no more than the few bytes `read_buf` reserves for itself.
        if self.active {
            self.buf.reserve(4096);
        }
        let idle_timeout = self.shared.spec.limits.idle_timeout;
        let read = loop {
            tokio::select! {
                r = self.stream.read_buf(&mut self.buf) => break r,
                _ = &mut self.cancelled => return Ok(false),
                _ = &mut self.idle => {
                    // The timer is not pushed back on every read; on expiry, check the last one.
                    let deadline = self.last_read + idle_timeout;
                    if tokio::time::Instant::now() >= deadline {
                        info!(conn = self.id, "idle time-out");
                        return Ok(false);
                    }
                    self.idle.as_mut().reset(deadline);
                }
            }
        };
        self.last_read = tokio::time::Instant::now();
        match read? {
            0 => self.eof = true,
            _ => self.active = true,
        }
        Ok(true)
    }

    /// Answers the batch in order into `out`, and logs each line and its reply into `log`. The node
    /// is locked once for a run of lines, not once per line, and never across the await of a Places
    /// look-up; the clock is read once per batch (and again after a look-up).
    async fn answer_batch(&mut self) -> std::io::Result<()> {
        let shared = self.shared;
        let spec = &shared.spec;
        let mut now = (spec.clock)();
        if self.logging {
            self.log.stamp();
        }
        let mut i = 0;
        let mut stored = false;
        while i < self.lines.len() {
            let mut lookup = None;
            {
                let mut node = shared.node();
                while i < self.lines.len() {
                    let line = &self.lines[i];
                    let start = self.out.len();
                    match node.client_line(line, now, &mut self.out) {
                        Step::Answered { stored: s } => {
                            stored |= s;
                            if self.logging {
                                self.log.line(Dir::In, line);
                                self.log.line(Dir::Out, &self.out[start..]);
                            }
                            i += 1;
                        }
                        Step::Lookup(q) => {
                            lookup = Some(q);
                            break;
                        }
                    }
                    if self.out.len() >= FLUSH_AT || self.log.len() >= HAND_OVER_AT {
                        break;
                    }
                }
            }
            if let Some(q) = lookup {
                let began = Instant::now();
                let answer = spec.places.lookup(&q).await;
                let start = self.out.len();
                herd_proto::write_whatsat(&q.record, answer.to_pretty(), &mut self.out);
                if self.logging {
                    self.log.stamp();
                    self.log_whatsat(i, start, &answer, began);
                }
                i += 1;
                now = (spec.clock)();
            }
            if self.out.len() >= FLUSH_AT || self.log.len() >= HAND_OVER_AT {
                self.flush().await?;
            }
        }
        if stored {
            shared.notify_links(None);
        }
        if let Some(head) = &self.too_long {
            warn!(
                conn = self.id,
                max = spec.limits.max_line,
                "line too long; closing"
            );
            let start = self.out.len();
            herd_proto::write_invalid(head, &mut self.out);
            if self.logging {
                self.log.line(Dir::In, head);
                self.log.line(Dir::Out, &self.out[start..]);
            }
        }
        Ok(())
    }

    /// Logs a WHATSAT (line `i`) and its answer (at `start` in `out`): the AT line, then one summary
    /// line of the JSON, or the JSON whole where `[log] bodies` asks for it.
    fn log_whatsat(&mut self, i: usize, start: usize, answer: &Answer, began: Instant) {
        let spec = &self.shared.spec;
        let reply = &self.out[start..];
        let at_end = reply
            .iter()
            .position(|&b| b == b'\n')
            .map_or(reply.len(), |p| p + 1);
        let (at, body) = reply.split_at(at_end);
        let body = body.strip_suffix(b"\n\n").unwrap_or(body);
        let results = answer
            .json
            .get("results")
            .and_then(serde_json::Value::as_array)
            .map_or(0, Vec::len);
        self.log.line(Dir::In, &self.lines[i]);
        self.log.line(Dir::Out, at);
        self.log.whatsat(
            spec.places.backend().as_str(),
            answer.status(),
            results,
            body.len(),
            began.elapsed().as_secs_f64() * 1000.0,
            spec.log_bodies.then_some(body),
        );
    }

    /// Hands the log lines over, then writes the replies. The log goes first: a client never sees a
    /// reply whose line is not yet on its way to the log, and a full log queue holds the client back.
    async fn flush(&mut self) -> std::io::Result<()> {
        self.shared.spec.log.submit(&mut self.log).await;
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }
}
