//! The tokio driver: the accept loop and one task per client connection.
//!
//! Each connection reads what the socket has, answers every complete line in order into one buffer,
//! writes it, and only then reads again — so replies never overtake each other, pipelined lines are
//! answered with one write, and a client that never reads stops being read from instead of growing
//! the server's memory.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use herd_proto::{CodecError, ErrorKind, HerdCodec, PeerMessage, Timestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::config::{Config, Limits};
use crate::handshake::Keyring;
use crate::log::{show, SUMMARY};
use crate::node::{Node, Step};
use crate::peers;
use crate::places::Places;

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
    /// Log every line in and out.
    pub log_lines: bool,
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
            log_lines: config.log_lines,
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

async fn handle(shared: Arc<Shared>, mut stream: TcpStream, addr: SocketAddr) {
    let conn = shared.conn_id();
    let _ = stream.set_nodelay(true);
    info!(conn, peer = %addr, "connection opened");
    match serve(&shared, &mut stream, conn).await {
        Ok(Some((hello, buf))) => {
            peers::accept(shared, stream, conn, addr, hello, buf).await;
            return;
        }
        Ok(None) => {}
        Err(e) => debug!(conn, cause = %e, "connection error"),
    }
    let _ = stream.shutdown().await;
    info!(conn, "connection closed");
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

/// Serves client lines until EOF, the idle time-out, an over-long line or shutdown. Returns the greeting
/// if the connection turns out to be a peer link.
async fn serve(
    shared: &Shared,
    stream: &mut TcpStream,
    conn: u64,
) -> std::io::Result<Option<(Hello, BytesMut)>> {
    let spec = &shared.spec;
    let mut codec = HerdCodec::new_with_max_length(spec.limits.max_line);
    // Buffers grow on first use: an idle connection costs little more than its task.
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut lines: Vec<Bytes> = Vec::new();
    // (line index, reply range in `out`) for the log, written before `out` is flushed.
    let mut replies: Vec<(usize, Range<usize>)> = Vec::new();
    let mut first = true;
    let mut eof = false;
    let mut active = false;
    // Made once per connection: a fresh `cancelled()` or `timeout()` per read costs a waiter
    // registration or a timer insertion on every request.
    let cancelled = shared.shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut last_read = tokio::time::Instant::now();
    let idle = tokio::time::sleep(spec.limits.idle_timeout);
    tokio::pin!(idle);
    loop {
        lines.clear();
        let mut too_long = None;
        while lines.len() < BATCH_LINES {
            let next = if eof {
                codec.decode_eof(&mut buf)
            } else {
                codec.decode(&mut buf)
            };
            match next {
                Ok(Some(line)) => {
                    // The first line decides whether this is a peer link; nothing after it is read here.
                    if std::mem::take(&mut first) && is_hello(&line) {
                        return Ok(Some((line, buf)));
                    }
                    lines.push(line);
                }
                Ok(None) => break,
                Err(CodecError::LineTooLong { head, max }) => {
                    too_long = Some((head, max));
                    break;
                }
                Err(CodecError::Io(e)) => return Err(e),
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
        }

        // Answer the batch in order. The node is locked once for a run of lines, not once per line,
        // and never across the await of a Places look-up.
        let mut i = 0;
        let mut stored = false;
        while i < lines.len() {
            let mut lookup = None;
            {
                let mut node = shared.node();
                while i < lines.len() {
                    let start = out.len();
                    match node.client_line(&lines[i], (spec.clock)(), &mut out) {
                        Step::Answered { stored: s } => {
                            stored |= s;
                            replies.push((i, start..out.len()));
                            i += 1;
                        }
                        Step::Lookup(q) => {
                            lookup = Some(q);
                            break;
                        }
                    }
                    if out.len() >= FLUSH_AT {
                        break;
                    }
                }
            }
            if let Some(q) = lookup {
                let start = out.len();
                let began = Instant::now();
                let answer = spec.places.lookup(&q).await;
                info!(
                    conn,
                    backend = %spec.places.backend(),
                    status = answer.status(),
                    ms = began.elapsed().as_secs_f64() * 1000.0,
                    "places look-up"
                );
                herd_proto::write_whatsat(&q.record, answer.to_pretty(), &mut out);
                replies.push((i, start..out.len()));
                i += 1;
            }
            if out.len() >= FLUSH_AT {
                log_replies(spec.log_lines, conn, &lines, &mut replies, &out);
                stream.write_all(&out).await?;
                out.clear();
            }
        }
        if stored {
            shared.notify_links(None);
        }
        if let Some((head, max)) = too_long {
            warn!(conn, max, "line too long; closing");
            let start = out.len();
            herd_proto::write_invalid(&head, &mut out);
            lines.push(head);
            replies.push((lines.len() - 1, start..out.len()));
            log_replies(spec.log_lines, conn, &lines, &mut replies, &out);
            stream.write_all(&out).await?;
            return Ok(None);
        }
        log_replies(spec.log_lines, conn, &lines, &mut replies, &out);
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if lines.len() == BATCH_LINES {
            continue; // more complete lines may be buffered
        }
        if eof {
            return Ok(None);
        }
        // A connection that has sent something reads in 4 KiB steps; one that has not (an idle
        // client) holds no more than the few bytes `read_buf` reserves for itself.
        if active {
            buf.reserve(4096);
        }
        let read = loop {
            tokio::select! {
                r = stream.read_buf(&mut buf) => break r,
                _ = &mut cancelled => return Ok(None),
                _ = &mut idle => {
                    // The timer is not pushed back on every read; on expiry, check the last one.
                    let deadline = last_read + spec.limits.idle_timeout;
                    if tokio::time::Instant::now() >= deadline {
                        info!(conn, "idle time-out");
                        return Ok(None);
                    }
                    idle.as_mut().reset(deadline);
                }
            }
        };
        last_read = tokio::time::Instant::now();
        match read {
            Ok(0) => eof = true,
            Ok(_) => active = true,
            Err(e) => return Err(e),
        }
    }
}

/// Logs each answered line and its reply (PROTOCOL.md §6), then forgets them.
fn log_replies(
    enabled: bool,
    conn: u64,
    lines: &[Bytes],
    replies: &mut Vec<(usize, Range<usize>)>,
    out: &[u8],
) {
    if enabled {
        for (i, range) in replies.iter() {
            info!(conn, dir = "in", line = %show(&lines[*i]));
            let reply = &out[range.clone()];
            info!(conn, dir = "out", line = %show(reply.strip_suffix(b"\n").unwrap_or(reply)));
        }
    }
    replies.clear();
}
