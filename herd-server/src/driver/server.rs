//! The tokio driver: the accept loop and one task per client connection.
//!
//! Every connection is accepted at once (none waits in the kernel's queue) and admitted by the
//! connection budget of [`crate::node::limits::Admission`]: under the client limits it is served; over them
//! it gets one `? busy …` line and is closed. Links from neighbours have their own budget, so a full
//! server still takes its neighbours: a connection over the client limit is given a short grace
//! ([`PEER_GRACE`]) to show a neighbour's `HERD-HELLO` before it is refused, and those waits are
//! themselves bounded (beyond them, the refusal is at once).
//!
//! Each connection reads what the socket has, answers every complete line in order into one buffer,
//! writes it, and only then reads again — so replies never overtake each other, pipelined lines are
//! answered with one write, and a client that never reads stops being read from instead of growing
//! the server's memory.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use herd_proto::{CodecError, ErrorKind, HerdCodec, PeerMessage, Timestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio_util::codec::Decoder;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::config::{Config, Limits};
use crate::driver::admin::live::Live;
use crate::driver::admin::Stats;
use crate::driver::loops::Listeners;
use crate::driver::peers;
use crate::log::{show, Dir, Log, LogBuf, HAND_OVER_AT, SUMMARY};
use crate::node::handshake::Keyring;
use crate::node::limits::{
    Admission, Busy, ConnLimits, Limit, NodeLimits, Refusals, Warn, WarnKind, Warnings,
};
use crate::node::{Node, Restored, Step};
use crate::places::{Answer, Places};
use crate::say;
use crate::store::{LoadReport, NotDurable, Store, StoreConfig};

/// Where receive times come from: the system clock, or a test's.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Flush the reply buffer once it holds this much, even mid-batch.
const FLUSH_AT: usize = 64 * 1024;
/// Most lines decoded and answered per batch.
const BATCH_LINES: usize = 256;

/// How long a connection over the client limit may take to show a neighbour's `HERD-HELLO` before it
/// is answered `? busy`. A dialling neighbour sends it right after connecting, so this is generous;
/// it keeps every `? busy` well within a second.
pub const PEER_GRACE: Duration = Duration::from_millis(500);
/// After `? busy`, how long the rest of what the client sent is read and dropped, so the close is a
/// clean FIN that lets the client read the answer, not a reset that can destroy it.
const BUSY_DRAIN: Duration = Duration::from_millis(500);
/// Most bytes read and dropped after `? busy`.
const BUSY_DRAIN_BYTES: usize = 64 * 1024;

/// Listen backlog: bursts of connects wait in the kernel instead of overflowing into SYN cookies
/// and resets (the kernel caps it at `net.core.somaxconn`).
pub(crate) const BACKLOG: u32 = 4096;

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
    /// The admin addresses (`host:port`) of the herd's servers that have one, by name: the live page
    /// gathers their `/status` (see [`crate::driver::admin::live`]).
    pub admins: Vec<(String, String)>,
    /// How its admin door guards itself (connection cap, allowed `Host` names, tokens).
    pub admin: crate::driver::admin::AdminGuard,
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
    /// Where its records are kept on disk (`None`: in memory only).
    pub store: Option<StoreConfig>,
    /// The `host:port` of its client door over HTTP/JSON and WebSocket (`None`: off; see
    /// [`crate::driver::door`]).
    pub http: Option<String>,
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
            admins: config
                .servers
                .iter()
                .filter_map(|s| Some((s.name.clone(), s.admin.clone()?)))
                .collect(),
            admin: crate::driver::admin::AdminGuard::from_config(config),
            limits: config.limits,
            log_lines: config.log.lines,
            log_bodies: config.log.bodies,
            log: Log::off(),
            places,
            clock: Arc::new(Timestamp::now),
            store: config.store.dir.as_ref().map(|dir| StoreConfig {
                fsync: config.store.fsync,
                compact_bytes: config.store.compact_bytes,
                members: config.servers.iter().map(|s| s.name.clone()).collect(),
                ..StoreConfig::new(dir.join(name), name)
            }),
            http: server.http.clone(),
        })
    }
}

/// One neighbour as the driver sees it.
pub(crate) struct PeerSlot {
    pub(crate) name: String,
    pub(crate) addr: String,
    /// Wakes the link's writer: something to send.
    pub(crate) notify: Notify,
    /// Cancels the link currently serving this neighbour, when a newer one replaces it.
    pub(crate) current: Mutex<Option<CancellationToken>>,
    /// The address of the link serving this neighbour now, for the diagnosis of two servers that
    /// claim its name.
    pub(crate) live: Mutex<Option<SocketAddr>>,
}

/// State shared by a server's tasks.
pub(crate) struct Shared {
    pub(crate) spec: ServerSpec,
    pub(crate) node: Mutex<Node>,
    pub(crate) peers: Vec<PeerSlot>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tracker: TaskTracker,
    /// Wakes the task that keeps the node's timers: a link went up or down, or a dial failed, so
    /// the node's next deadline may be earlier than the one it sleeps until.
    pub(crate) timers: Notify,
    /// The records on disk, when the server keeps them there.
    pub(crate) store: Option<Store>,
    /// Counters for the admin endpoint.
    pub(crate) stats: Stats,
    /// Samples of what clients do, for the live page.
    pub(crate) live: Live,
    /// What the start loaded from the store: clients held after it, and its report.
    pub(crate) loaded: Option<(usize, LoadReport)>,
    /// The server's budget of upstream Places calls; each connection takes its own from it.
    pub(crate) places_budget: crate::places::ServerBudget,
    next_conn: AtomicU64,
    /// Connection counts by kind and address, and the refusals of the driver.
    admission: Mutex<Admission>,
    /// Repeated warnings, rate-limited per kind and peer address.
    pub(crate) warnings: Mutex<Warnings>,
    /// Set once shutdown has begun (by the accept loops, when the token fires): a plain load for the
    /// connections to check on every read, where the token's own check takes its lock.
    stopping: AtomicBool,
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

    /// Hands the records `node` stored since the last call to the store; returns their ticket. Called
    /// before the node is unlocked, so no compaction can start between storing and journaling.
    pub(crate) fn journal(&self, node: &mut Node) -> Option<u64> {
        let store = self.store.as_ref()?;
        let j = node.journal()?;
        let ticket = store.append(&mut j.bytes, j.records);
        j.records = 0;
        Some(ticket)
    }

    pub(crate) fn conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether to log a warning of `kind` about `addr` now (the first few of a period are; the rest
    /// are counted and summed up once a period, [`Shared::flush_warnings`]).
    pub(crate) fn warn_ok(&self, kind: WarnKind, addr: IpAddr) -> bool {
        self.flush_warnings();
        let now = Instant::now();
        let mut w = self.warnings.lock().unwrap_or_else(|p| p.into_inner());
        w.check(kind, addr, now) == Warn::Log
    }

    /// Logs a summary of each kind and address whose period ended with warnings suppressed.
    pub(crate) fn flush_warnings(&self) {
        let summaries = self
            .warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flush(Instant::now());
        for s in summaries {
            let addr = s
                .addr
                .map_or_else(|| "other addresses".to_owned(), |a| a.to_string());
            warn!(kind = s.kind.as_str(), peer = %addr, suppressed = s.count,
                "suppressed {} similar warnings ({}) from {addr} in the last {} s",
                s.count, s.kind.as_str(), crate::node::limits::WARN_PERIOD.as_secs());
        }
    }

    /// A place for a client connection from `ip` in the client budget (the HTTP door's connections
    /// take theirs here too), or why not.
    pub(crate) fn client_ticket(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Busy> {
        self.admission().admit_client(ip)?;
        Ok(Ticket {
            shared: self.clone(),
            kind: TicketKind::Client(ip),
        })
    }

    fn admission(&self) -> MutexGuard<'_, Admission> {
        self.admission.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every refusal so far: the driver's (`? busy`, line time-outs) and the node's (IAMATs refused by
    /// a limit). The node is locked briefly.
    pub(crate) fn refusals(&self) -> Refusals {
        let driver = self.admission().refusals();
        driver.merged(&self.node().refusals())
    }

    /// Counts refusal `why` of the connection from `addr`, and says on the summary the first time the
    /// client connection limit refuses one.
    pub(crate) fn refused(&self, why: Limit, addr: SocketAddr) {
        let first = self.admission().refused(why);
        if first {
            let l = &self.spec.limits;
            info!(target: SUMMARY,
                "{} at its connection limit (max_connections={}, max_connections_per_ip={}): refusing with `? busy` (first: {addr})",
                self.spec.name, l.max_connections, l.max_connections_per_ip);
        }
    }

    /// Says once, on the summary and in the log, that the cache reached `max_clients`.
    pub(crate) fn cap_reached(&self, clients: usize) {
        info!(target: SUMMARY,
            "{} holds {clients} clients, its limit (max_clients={}): IAMATs for new clients are refused; known clients still update",
            self.spec.name, self.spec.limits.max_clients);
    }
}

/// A connection's place in the budget; given back when dropped.
pub(crate) struct Ticket {
    shared: Arc<Shared>,
    kind: TicketKind,
}

enum TicketKind {
    Client(IpAddr),
    Peer,
    Pending,
}

impl Ticket {
    /// A client connection turned out to be a neighbour's link: it moves to the peers' budget (when
    /// there is room), so links never hold client slots.
    fn into_peer(mut self) -> Ticket {
        if let TicketKind::Client(ip) = self.kind {
            let mut a = self.shared.admission();
            if a.admit_peer() {
                a.release_client(ip);
                self.kind = TicketKind::Peer;
            }
        }
        self
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut a = self.shared.admission();
        match self.kind {
            TicketKind::Client(ip) => a.release_client(ip),
            TicketKind::Peer => a.release_peer(),
            TicketKind::Pending => a.release_pending(),
        }
    }
}

/// Runs one server on `listener` until `shutdown` is cancelled, then waits for the replies in flight.
/// `listener` is a [`TcpListener`], or [`Listeners`] to accept on several event loops
/// ([`crate::driver::loops`]); each connection is served by the loop that accepted it.
///
/// # Errors
/// Never for a connection's trouble (those are logged); only if the server cannot run at all.
pub async fn run(
    listener: impl Into<Listeners>,
    spec: ServerSpec,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with_admin(listener, None, spec, shutdown).await
}

/// [`run`], also serving the admin endpoint (`GET /metrics`, `/health`, `/status`; see
/// [`crate::driver::admin`]) on `admin` when given.
///
/// # Errors
/// As [`run`].
pub async fn run_with_admin(
    listener: impl Into<Listeners>,
    admin: Option<TcpListener>,
    spec: ServerSpec,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let span = info_span!("server", server = %spec.name);
    run_inner(listener.into(), admin, spec, shutdown)
        .instrument(span)
        .await
}

async fn run_inner(
    listeners: Listeners,
    admin: Option<TcpListener>,
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
            current: Mutex::new(None),
            live: Mutex::new(None),
        })
        .collect();
    let node = Node::new(&me, spec.neighbors.iter().map(|(n, _)| n.clone()).collect())
        .with_limits(NodeLimits::from(&spec.limits))
        .with_watch_limits(crate::node::watch::WatchLimits {
            per_server: spec.limits.max_watches,
            per_connection: spec.limits.max_watches_per_connection,
        });
    // Records on disk are loaded before anything is accepted (and before the node knows the herd's
    // members: see `load`).
    let (node, store, loaded) = match spec.store.clone() {
        Some(cfg) => {
            let members = spec.members.clone();
            let (node, store, report) =
                tokio::task::spawn_blocking(move || load(node, &cfg, &members)).await??;
            let clients = node.len();
            (node, Some(store), Some((clients, report)))
        }
        None => (node.with_members(&spec.members), None, None),
    };
    let wanted = ConnLimits::new(
        spec.limits.max_connections,
        spec.limits.max_connections_per_ip,
        spec.neighbors.len(),
    );
    let admin_fds = admin.as_ref().map_or(0, |_| spec.admin.max_connections);
    let conn_limits = match crate::node::limits::descriptors_per_server() {
        Some(fds) => {
            let (fitted, lowered) = wanted.fit(fds, admin_fds, spec.neighbors.len());
            if lowered {
                warn!(target: SUMMARY,
                    "{me}: max_connections lowered from {} to {} to fit the open-file limit ({fds} descriptors; raise it with `ulimit -n` or LimitNOFILE=)",
                    wanted.max_connections, fitted.max_connections);
                warn!(
                    wanted = wanted.max_connections,
                    max_connections = fitted.max_connections,
                    descriptors = fds,
                    "max_connections lowered to fit the open-file limit"
                );
            }
            fitted
        }
        None => wanted,
    };
    let admission = Admission::new(conn_limits);
    let shared = Arc::new(Shared {
        node: Mutex::new(node),
        peers,
        shutdown: shutdown.clone(),
        tracker: TaskTracker::new(),
        timers: Notify::new(),
        store,
        stats: Stats::new(spec.store.is_some()),
        live: Live::default(),
        loaded,
        places_budget: spec.places.server_budget(),
        next_conn: AtomicU64::new(1),
        admission: Mutex::new(admission),
        warnings: Mutex::new(Warnings::default()),
        stopping: AtomicBool::new(false),
        spec,
    });
    let local = listeners.local_addr()?;
    if let Some(addr) = shared.spec.http.clone() {
        let http = bind(&addr)
            .await
            .with_context(|| format!("{me} cannot listen on its http address {addr}"))?;
        let s = shared.clone();
        shared
            .tracker
            .spawn(crate::driver::door::serve(s, http).in_current_span());
    }
    if let Some(admin) = admin {
        let s = shared.clone();
        shared
            .tracker
            .spawn(crate::driver::admin::serve(s, admin, local.to_string()).in_current_span());
    }
    let neighbors: Vec<&str> = shared.peers.iter().map(|p| p.name.as_str()).collect();
    info!(target: SUMMARY, "{me} listening on {local}, places: {}, neighbours: {}", shared.spec.places.backend(), neighbors.join(", "));
    info!(%local, places = %shared.spec.places.backend(), neighbours = %neighbors.join(","), "server started");

    {
        // Sums up the warnings suppressed in each period, even when no new one comes.
        let s = shared.clone();
        shared.tracker.spawn(
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = tick.tick() => s.flush_warnings(),
                        _ = s.shutdown.cancelled() => return,
                    }
                }
            }
            .in_current_span(),
        );
    }

    if !shared.peers.is_empty() {
        // The node decides when to dial (only the server whose name sorts first dials a pair),
        // ping, check and close; this task sleeps until its next deadline and carries it out.
        let s = shared.clone();
        shared
            .tracker
            .spawn(peers::link_manager(s).in_current_span());
    }

    if shared.store.is_some() {
        let s = shared.clone();
        shared.tracker.spawn(keep_store(s).in_current_span());
    }

    // Each other loop accepts on its own listener; the connections it accepts are its tasks.
    for (handle, listener) in listeners.more {
        let s = shared.clone();
        let accepting = async move {
            match listener
                .set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(listener))
            {
                Ok(l) => accept(&s, l).await,
                Err(e) => error!(cause = %e, "cannot listen on an event loop"),
            }
        };
        handle.spawn(shared.tracker.track_future(accepting.in_current_span()));
    }
    accept(&shared, listeners.first).await;
    info!("stopped accepting; finishing connections");
    shared.tracker.close();
    shared.tracker.wait().await;
    if let Some(store) = shared.store.clone() {
        // What was appended is written (and synced) before the process may exit.
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
    }
    let refusals = shared.refusals();
    info!(target: SUMMARY, "{me} stopped (refused: {refusals})");
    info!(%refusals, "server stopped");
    Ok(())
}

/// Accepts connections on `listener` until shutdown; each is served by a task on this thread's runtime.
async fn accept(shared: &Arc<Shared>, listener: TcpListener) {
    let mut backoff = std::time::Duration::from_millis(10);
    let mut reserve = crate::node::limits::Reserve::take();
    loop {
        // Accept whatever the client count: a connection over a limit is answered and closed, never
        // left waiting silently in the kernel's queue.
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shared.shutdown.cancelled() => {
                shared.stopping.store(true, Ordering::Relaxed);
                break;
            }
        };
        match accepted {
            Ok((stream, addr)) => {
                backoff = std::time::Duration::from_millis(10);
                // Taken again if a refusal could not (one check of an `Option` when it is held).
                reserve.restore();
                admit(shared, stream, addr);
            }
            Err(e) if crate::node::limits::out_of_descriptors(&e) && reserve.release() => {
                // The reserve descriptor makes room for one: it is told `? busy` and closed, not
                // left waiting in the kernel's queue.
                if let Ok(Ok((stream, addr))) =
                    tokio::time::timeout(Duration::from_millis(10), listener.accept()).await
                {
                    let limit = shared.admission().limits().max_connections;
                    let busy = Busy {
                        refusal: Limit::Busy,
                        limit,
                    };
                    refuse_now(shared, stream, shared.conn_id(), addr, busy);
                }
                reserve.restore();
            }
            Err(e) => {
                // Out of file descriptors and the like: wait, then go on.
                error!(cause = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
            }
        }
    }
}

/// Decides what becomes of a connection just accepted: served, or over a limit.
fn admit(shared: &Arc<Shared>, stream: TcpStream, addr: SocketAddr) {
    let admitted = shared.admission().admit_client(addr.ip());
    let s = shared.clone();
    match admitted {
        Ok(()) => {
            let ticket = Ticket {
                shared: shared.clone(),
                kind: TicketKind::Client(addr.ip()),
            };
            shared
                .tracker
                .spawn(handle(s, stream, addr, ticket).in_current_span());
        }
        Err(busy) => {
            if shared.admission().hold_pending() {
                let ticket = Ticket {
                    shared: shared.clone(),
                    kind: TicketKind::Pending,
                };
                shared
                    .tracker
                    .spawn(over_limit(s, stream, addr, busy, ticket).in_current_span());
            } else {
                // No room even to wait: answer and close without a task.
                let conn = shared.conn_id();
                refuse_now(shared, stream, conn, addr, busy);
            }
        }
    }
}

/// Opens the store of `cfg` and feeds what it holds to `node` (with its journal turned on), before
/// the node is told the herd's `members`: a record naming a server that left the config is kept —
/// served, flooded and compacted like any other — and said with counts, since a config edited by
/// mistake must not cost records. Only the servers `cfg.forget` names have their records dropped,
/// and then for good: the start writes a snapshot without them before it serves, as it does after a
/// repair.
fn load(
    node: Node,
    cfg: &StoreConfig,
    members: &[String],
) -> anyhow::Result<(Node, Store, LoadReport)> {
    let began = Instant::now();
    /// The node being filled, and the records of servers outside the herd (kept) or forgotten
    /// (dropped), by server.
    struct Restoring {
        node: Node,
        members: Vec<Vec<u8>>,
        forget: Vec<Vec<u8>>,
        foreign: BTreeMap<Vec<u8>, u64>,
        forgotten: BTreeMap<Vec<u8>, u64>,
    }
    impl crate::store::Loader for Restoring {
        type Parsed = crate::node::cache::Prepared;
        type Parser = crate::node::cache::Preparer;
        fn parser(&self) -> Self::Parser {
            self.node.preparer()
        }
        fn parse(p: &Self::Parser, line: &[u8]) -> Option<Self::Parsed> {
            p.prepare_line(line)
        }
        fn reserve(&mut self, records: usize) {
            self.node.reserve(records);
        }
        fn take(&mut self, _: &[u8], prepared: Self::Parsed) -> bool {
            let server = prepared.entry().key().server;
            if self.forget.iter().any(|f| f == server) {
                *self.forgotten.entry(server.to_vec()).or_default() += 1;
                return true;
            }
            if !self.members.iter().any(|m| m == server) {
                *self.foreign.entry(server.to_vec()).or_default() += 1;
            }
            !matches!(self.node.restore_prepared(prepared), Restored::Invalid)
        }
    }
    let mut restoring = Restoring {
        node: node.with_journal(),
        members: members.iter().map(|m| m.as_bytes().to_vec()).collect(),
        forget: cfg.forget.iter().map(|f| f.as_bytes().to_vec()).collect(),
        foreign: BTreeMap::new(),
        forgotten: BTreeMap::new(),
    };
    let (store, report) = Store::open_with(cfg, &mut restoring)?;
    let Restoring {
        node,
        foreign,
        forgotten,
        ..
    } = restoring;
    let node = node.with_members(members);
    let counts = |m: &BTreeMap<Vec<u8>, u64>| {
        m.iter()
            .map(|(s, n)| format!("{} ({n})", String::from_utf8_lossy(s)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for name in &cfg.forget {
        if !forgotten.contains_key(name.as_bytes()) {
            say(format_args!(
                "herd-server: --forget {name}: no stored record names {name}"
            ));
        }
    }
    if !forgotten.is_empty() {
        let n: u64 = forgotten.values().sum();
        say(format_args!(
            "herd-server: forgot {n} stored records as asked (--forget): {}",
            counts(&forgotten)
        ));
        warn!(count = n, servers = %counts(&forgotten), "forgot stored records as asked (--forget)");
    }
    if !foreign.is_empty() {
        let n: u64 = foreign.values().sum();
        say(format_args!(
            "herd-server: kept {n} stored records naming servers no longer in the config: {} (they \
             are served and flooded as before; start with --forget NAME to drop them)",
            counts(&foreign)
        ));
        warn!(count = n, servers = %counts(&foreign),
            "kept stored records naming servers no longer in the config (--forget NAME drops them)");
    }
    if report.rewrite || !forgotten.is_empty() {
        // Repaired or forgotten records are gone from memory only until this snapshot is on disk:
        // it is written before anything is served.
        let snap = Instant::now();
        store
            .compact(|from, out| node.snapshot_chunk(from, 4096, out))
            .context("writing a snapshot of the records loaded, before serving")?;
        info!(target: SUMMARY, "{} wrote a snapshot of the {} clients loaded ({:.0} ms)",
            String::from_utf8_lossy(node.name()), node.len(), snap.elapsed().as_secs_f64() * 1000.0);
    }
    let ms = began.elapsed().as_secs_f64() * 1000.0;
    info!(target: SUMMARY, "{} loaded {} clients from {} ({} records in {} files, {ms:.0} ms, fsync {})",
        String::from_utf8_lossy(node.name()), node.len(), cfg.dir.display(), report.records, report.files, cfg.fsync);
    info!(dir = %cfg.dir.display(), clients = node.len(), records = report.records, files = report.files,
        cut = report.cut, ms, fsync = %cfg.fsync, "store loaded");
    Ok((node, store, report))
}

/// Compacts the store when it should ([`Store::wants_compaction`]), on a blocking thread, the node
/// locked one chunk at a time. After a failure (a full disk) it tries again each second.
async fn keep_store(shared: Arc<Shared>) {
    /// Records per chunk of a snapshot: the node is locked for about this many copies at a time.
    const CHUNK: usize = 4096;
    let Some(store) = shared.store.clone() else {
        return;
    };
    let mut wait = std::time::Duration::from_millis(250);
    // The last failure said: a failure that repeats every second is said once, not every second.
    let mut said: Option<String> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.shutdown.cancelled() => return,
        }
        let live = shared.node().len() as u64;
        if !store.wants_compaction(live) {
            continue;
        }
        let (s, st) = (shared.clone(), store.clone());
        let began = Instant::now();
        let done = tokio::task::spawn_blocking(move || {
            st.compact(|from, out| s.node().snapshot_chunk(from, CHUNK, out))
        })
        .await;
        match done {
            Ok(Ok(())) => {
                wait = std::time::Duration::from_millis(250);
                if said.take().is_some() {
                    warn!("store compaction works again");
                }
                info!(
                    clients = live,
                    ms = began.elapsed().as_millis() as u64,
                    "store compacted"
                );
            }
            Ok(Err(e)) => {
                wait = std::time::Duration::from_secs(1);
                let cause = format!("{e:#}");
                if said.as_deref() != Some(cause.as_str()) {
                    warn!(cause = %cause, "store compaction failed (the working journal stays in use); retrying every second");
                    said = Some(cause);
                }
            }
            Err(e) => {
                wait = std::time::Duration::from_secs(1);
                error!(cause = %e, "store compaction panicked");
            }
        }
    }
}

async fn handle(shared: Arc<Shared>, stream: TcpStream, addr: SocketAddr, ticket: Ticket) {
    let id = shared.conn_id();
    let _ = stream.set_nodelay(true);
    info!(conn = id, peer = %addr, "connection opened");
    shared.stats.connection(true);
    let mut c = Connection::new(&shared, stream, id, addr);
    let served = c.serve().await;
    shared.stats.connection(false);
    // The lines of a batch that an error cut short are still logged.
    shared.spec.log.submit(&mut c.log).await;
    let mut stream = match served {
        Ok(Some(hello)) => {
            let (stream, buf) = c.into_parts();
            let _ticket = ticket.into_peer();
            peers::accept(shared.clone(), stream, id, addr, hello, buf).await;
            return;
        }
        Ok(None) => c.into_parts().0,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            shared.refused(Limit::LineTimeout, addr);
            info!(conn = id, peer = %addr, refusal = %Limit::LineTimeout,
                "replies not taken within the line time-out; closing");
            c.into_parts().0
        }
        Err(e) => {
            debug!(conn = id, cause = %e, "connection error");
            c.into_parts().0
        }
    };
    // The slot is free before the client sees the close, so it can connect again at once.
    drop(ticket);
    let _ = stream.shutdown().await;
    info!(conn = id, "connection closed");
}

/// The neighbour name in a greeting line, `HERD-HELLO <version> <name> …`, if it is one.
fn greeting_name(line: &[u8]) -> Option<&[u8]> {
    let mut words = line
        .split(|&b| herd_proto::is_whitespace(b))
        .filter(|w| !w.is_empty());
    if words.next()? != b"HERD-HELLO" {
        return None;
    }
    words.next()?;
    words.next()
}

/// A connection over a client limit: if its first line, within [`PEER_GRACE`], is a configured
/// neighbour's greeting, it is a link and takes the peers' budget; anything else gets `? busy`.
async fn over_limit(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    addr: SocketAddr,
    busy: Busy,
    ticket: Ticket,
) {
    let conn = shared.conn_id();
    let mut codec = HerdCodec::new_with_max_length(shared.spec.limits.max_line);
    let mut buf = BytesMut::with_capacity(512);
    let grace = tokio::time::Instant::now() + PEER_GRACE;
    let first = loop {
        if shared.peers.is_empty() {
            break None; // no neighbour to wait for
        }
        match codec.decode(&mut buf) {
            Ok(Some(line)) => break Some(line),
            Ok(None) => {}
            Err(_) => break None,
        }
        let read = tokio::select! {
            r = tokio::time::timeout_at(grace, stream.read_buf(&mut buf)) => r,
            _ = shared.shutdown.cancelled() => break None,
        };
        match read {
            Ok(Ok(n)) if n > 0 => {}
            _ => break None, // EOF, error or the grace is over
        }
    };
    let mut busy = busy;
    if let Some(line) = first {
        let neighbour = is_hello(&line)
            && greeting_name(&line).is_some_and(|n| shared.node().link_id(n).is_some());
        if neighbour {
            let admitted = shared.admission().admit_peer();
            if admitted {
                let _ticket = Ticket {
                    shared: shared.clone(),
                    kind: TicketKind::Peer,
                };
                drop(ticket);
                let _ = stream.set_nodelay(true);
                info!(conn, peer = %addr, "connection opened (a neighbour, over the client limit)");
                peers::accept(shared.clone(), stream, conn, addr, line, buf).await;
                return;
            }
            busy = Busy {
                refusal: Limit::BusyPeers,
                limit: 0,
            };
        }
    }
    shared.refused(busy.refusal, addr);
    info!(conn, peer = %addr, refusal = %busy.refusal, limit = busy.key(), "connection refused: busy");
    let answered = async {
        stream.write_all(busy.line().as_bytes()).await?;
        stream.shutdown().await?;
        // Read and drop what else the client sent, so the close does not reset the answer away.
        let mut drained = 0;
        let mut sink = [0u8; 4096];
        while drained < BUSY_DRAIN_BYTES {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(BUSY_DRAIN, answered).await;
    drop(ticket);
}

/// `? busy` without a task, when even the waits over the limit are all taken: one non-blocking write
/// (a fresh socket's buffer is empty), whatever the client sent already read and dropped, then close.
/// On the plain socket, so nothing depends on whether the runtime has seen a socket this fresh ready.
fn refuse_now(shared: &Shared, stream: TcpStream, conn: u64, addr: SocketAddr, busy: Busy) {
    use std::io::{Read as _, Write as _};
    shared.refused(busy.refusal, addr);
    info!(conn, peer = %addr, refusal = %busy.refusal, limit = busy.key(), "connection refused: busy");
    let Ok(mut stream) = stream.into_std() else {
        return;
    };
    let _ = stream.write(busy.line().as_bytes());
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < BUSY_DRAIN_BYTES {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => drained += n,
            _ => break,
        }
    }
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
    /// The client's address, for the refusals' log lines.
    addr: SocketAddr,
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
    /// The store's ticket for records stored by replies in `out` not yet written.
    ticket: Option<u64>,
    first: bool,
    eof: bool,
    /// It has sent something: reads go in 4 KiB steps.
    active: bool,
    // Made once per connection: a fresh `cancelled()` or `timeout()` per read costs a waiter
    // registration or a timer insertion on every request.
    cancelled: Pin<Box<WaitForCancellationFuture<'a>>>,
    /// One timer for both time-outs: the line time-out while a line is partly read (from the read
    /// that brought its first byte), the idle time-out otherwise. It is moved earlier only when a
    /// partial line starts before it would fire, and re-armed when it fires early, so a busy
    /// connection does not pay a timer update per read.
    idle: Pin<Box<tokio::time::Sleep>>,
    /// When the timer is set to fire.
    timer_at: tokio::time::Instant,
    last_read: tokio::time::Instant,
    /// When the first byte of the partial line in `buf` arrived.
    partial_since: Option<tokio::time::Instant>,
    /// A line ended since the last read.
    line_ended: bool,
    /// Limit refusals already logged on this connection (one log line per kind, not per line).
    logged: Vec<Limit>,
    /// What this connection may still spend on upstream Places calls (made at its first WHATSAT).
    budget: Option<crate::places::Budget>,
    /// An `OVER_QUERY_LIMIT` was logged on this connection (once per connection).
    budget_logged: bool,
}

impl<'a> Connection<'a> {
    fn new(shared: &'a Shared, stream: TcpStream, id: u64, addr: SocketAddr) -> Self {
        let spec = &shared.spec;
        let now = tokio::time::Instant::now();
        let timer_at = now + spec.limits.idle_timeout;
        Connection {
            shared,
            stream,
            id,
            addr,
            codec: HerdCodec::new_with_max_length(spec.limits.max_line),
            buf: BytesMut::new(),
            lines: Vec::new(),
            too_long: None,
            out: Vec::new(),
            log: spec.log.buffer(id, None),
            logging: spec.log_lines && spec.log.is_on(),
            ticket: None,
            first: true,
            eof: false,
            active: false,
            cancelled: Box::pin(shared.shutdown.cancelled()),
            idle: Box::pin(tokio::time::sleep_until(timer_at)),
            timer_at,
            last_read: now,
            partial_since: None,
            line_ended: false,
            logged: Vec::new(),
            budget: None,
            budget_logged: false,
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
                        self.line_ended = true;
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

    /// Reads what the socket has. `Ok(false)`: shutdown, the idle time-out or the line time-out ends
    /// the connection.
    async fn fill(&mut self) -> std::io::Result<bool> {
        // A connection that has sent something reads in 4 KiB steps; one that has not (an idle
        // client) holds no more than the few bytes `read_buf` reserves for itself.
        if self.active {
            self.buf.reserve(4096);
        }
        let limits = &self.shared.spec.limits;
        // What is left in the buffer is the start of a line: its clock runs from the read that
        // brought its first byte (the last read, if a line ended since; else whenever it began).
        if self.buf.is_empty() {
            self.partial_since = None;
        } else if self.line_ended || self.partial_since.is_none() {
            self.partial_since = Some(self.last_read);
        }
        self.line_ended = false;
        let deadline = match self.partial_since {
            Some(since) => since + limits.line_timeout,
            None => self.last_read + limits.idle_timeout,
        };
        if deadline < self.timer_at {
            self.timer_at = deadline;
            self.idle.as_mut().reset(deadline);
        }
        // Shutdown is checked with a load here, so the select below can poll the read first: a
        // busy connection's read is ready at once, and the two other futures are polled (to be woken)
        // only when it is not. An unbiased select draws a random order and polls them on every call.
        // The flag is set by the accept loops a moment after the token fires; until then a connection
        // whose read is pending hears the token itself.
        if self.shared.stopping.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let read = loop {
            tokio::select! {
                biased;
                r = self.stream.read_buf(&mut self.buf) => break r,
                _ = &mut self.cancelled => return Ok(false),
                _ = &mut self.idle => {
                    // The timer is not pushed back on every read; on expiry, check the deadline.
                    if tokio::time::Instant::now() >= deadline {
                        if self.partial_since.is_some() {
                            self.shared.refused(Limit::LineTimeout, self.addr);
                            info!(conn = self.id, peer = %self.addr, refusal = %Limit::LineTimeout,
                                pending_bytes = self.buf.len(),
                                "line not ended within the line time-out; closing");
                        } else {
                            info!(conn = self.id, "idle time-out");
                        }
                        return Ok(false);
                    }
                    self.timer_at = deadline;
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
        // Counted here and added to the shared counters once per batch.
        let (mut iamats, mut whatsats) = (0u64, 0u64);
        // The batch's last IAMAT answered, offered to the live page's samples once per batch.
        let mut last_iamat = None;
        while i < self.lines.len() {
            let mut lookup = None;
            let mut refused = None;
            let mut cap_reached = None;
            {
                let mut node = shared.node();
                while i < self.lines.len() {
                    let line = &self.lines[i];
                    let start = self.out.len();
                    match node.client_line(line, now, &mut self.out) {
                        Step::Answered { stored: s } => {
                            stored |= s;
                            if self.out[start..].starts_with(b"? ") {
                                shared.stats.invalid(line);
                            } else if line.starts_with(b"I") {
                                iamats += 1;
                                last_iamat = Some(i);
                            } else {
                                whatsats += 1;
                            }
                            if self.logging {
                                self.log.line(Dir::In, line);
                                self.log.line(Dir::Out, &self.out[start..]);
                            }
                            i += 1;
                        }
                        Step::Refused(why) => {
                            if self.logging {
                                self.log.line(Dir::In, line);
                                self.log.line(Dir::Out, &self.out[start..]);
                            }
                            i += 1;
                            if !self.logged.contains(&why) {
                                refused = Some(why);
                                break;
                            }
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
                if let Some(t) = shared.journal(&mut node) {
                    self.ticket = Some(t);
                } else if let Some(store) = shared.store.as_ref().filter(|_| i > 0) {
                    if store.fsync().replies_wait_for_disk() {
                        // Replies that show records stored by others wait for those too.
                        self.ticket = Some(store.position());
                    }
                }
                // The cap may be reached by this batch, or (when a line is refused by it) by a
                // peer's records since.
                if stored || refused == Some(Limit::ClientCap) {
                    cap_reached = node.take_cap_reached();
                }
            }
            if let Some(clients) = cap_reached {
                shared.cap_reached(clients);
            }
            if let Some(why) = refused {
                self.logged.push(why);
                // The line is the client's bytes: escaped, as every logged line is, so it cannot
                // break the entry or forge another.
                info!(conn = self.id, peer = %self.addr, refusal = %why,
                    line = %show(&self.lines[i - 1]),
                    "IAMAT refused by a limit (logged once per connection)");
            }
            if let Some(q) = lookup {
                shared.live.offer_whatsat(&q, now);
                let began = Instant::now();
                let budget = self
                    .budget
                    .get_or_insert_with(|| shared.places_budget.connection());
                let (answer, spent) = spec.places.lookup(&q, budget).await;
                if let Some(spent) = spent {
                    shared.stats.over_budget(spent.as_str());
                    if !std::mem::replace(&mut self.budget_logged, true) {
                        info!(conn = self.id, peer = %self.addr, budget = spent.as_str(),
                            "WHATSAT answered OVER_QUERY_LIMIT: Places budget spent (logged once per connection)");
                    }
                }
                whatsats += 1;
                shared.stats.lookup(
                    spec.places.backend().as_str(),
                    answer.status(),
                    began.elapsed(),
                );
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
        shared.stats.answered(iamats, whatsats);
        if let Some(i) = last_iamat {
            shared.live.offer_iamat(&self.lines[i], now);
        }
        if stored {
            shared.notify_links(None);
        }
        if let Some(head) = &self.too_long {
            shared.stats.line_too_long();
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
    /// With a store, replies that acknowledge stored records wait as the fsync rule says: under
    /// `always` until the records are on disk (if they cannot be, the replies are never sent and the
    /// connection closes); otherwise only while the journal is far behind.
    async fn flush(&mut self) -> std::io::Result<()> {
        if let (Some(t), Some(store)) = (self.ticket.take(), &self.shared.store) {
            if store.fsync().replies_wait_for_disk() {
                if let Err(e) = store.durable(t).await {
                    warn!(conn = self.id, "{e}: closing without the replies");
                    self.out.clear();
                    return Err(std::io::Error::other(e));
                }
            } else {
                store.keep_up(t).await;
                if !store.acknowledging() {
                    // Persistence has failed for longer than the setting allows: these records
                    // would be acknowledged without being on any disk.
                    warn!(
                        conn = self.id,
                        "persistence is failing: closing without the replies"
                    );
                    self.out.clear();
                    return Err(std::io::Error::other(NotDurable));
                }
            }
        }
        self.shared.spec.log.submit(&mut self.log).await;
        if !self.out.is_empty() {
            // Nearly always the socket takes the whole reply at once: no timer is made for that.
            let sent = match self.stream.try_write(&self.out) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            if sent == self.out.len() {
                self.out.clear();
                // `try_write` spends none of the task's budget: a client that keeps its socket full
                // must still let the loop's other connections, links and admin requests run.
                tokio::task::consume_budget().await;
                return Ok(());
            }
            // A client that does not take its replies within the line time-out is given up on
            // (`TimedOut`), so a client that never reads cannot hold its connection for ever.
            let limit = self.shared.spec.limits.line_timeout;
            let rest = &self.out[sent..];
            match tokio::time::timeout(limit, self.stream.write_all(rest)).await {
                Ok(written) => written?,
                Err(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client did not take its replies",
                    ))
                }
            }
            self.out.clear();
        }
        Ok(())
    }
}
