//! A server's start and its shared state: the [`ServerSpec`] it runs from, the `Shared` handles its
//! tasks hold, and [`run`], which loads the store, starts the tasks and accepts until shutdown. The
//! rooms it starts: `listener` (accept and admission), `conn` (a client connection), `peers` (a
//! neighbour's link), `upkeep` (the store's loading and compaction) and [`admin`](super::admin).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use herd_proto::Timestamp;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, info_span, warn, Instrument};

use crate::config::{Config, Limits};
use crate::driver::admin::live::Live;
use crate::driver::admission::{Admission, ConnLimits};
use crate::driver::loops::Listeners;
use crate::driver::metrics::Stats;
use crate::driver::peers;
use crate::driver::warnings::{Warn, WarnKind, Warnings};
use crate::driver::{listener, upkeep};
use crate::log::{Log, SUMMARY};
use crate::node::handshake::Keyring;
use crate::node::limits::{Limit, NodeLimits, Refusals};
use crate::node::Node;
use crate::places::Places;
use crate::store::{LoadReport, Store, StoreConfig};

/// Where receive times come from: the system clock, or a test's.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

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
    pub(super) next_conn: AtomicU64,
    /// Connection counts by kind and address, and the refusals of the driver.
    pub(super) admission: Mutex<Admission>,
    /// Repeated warnings, rate-limited per kind and peer address.
    pub(crate) warnings: Mutex<Warnings>,
    /// Set once shutdown has begun (by the accept loops, when the token fires): a plain load for the
    /// connections to check on every read, where the token's own check takes its lock.
    pub(super) stopping: AtomicBool,
}

impl Shared {
    /// A WHATSAT's Places look-up `q` for one client connection, from either door: shown on the live
    /// page, paid from the connection's `budget` (made on first use) and the server's, counted. Returns
    /// the answer, the budget spent (if the look-up was refused for it) and when the look-up began.
    pub(crate) async fn places_lookup(
        &self,
        q: &crate::node::Lookup,
        now: Timestamp,
        budget: &mut Option<crate::places::Budget>,
    ) -> (
        Arc<crate::places::Answer>,
        Option<crate::places::Spent>,
        Instant,
    ) {
        self.live.offer_whatsat(q, now);
        let began = Instant::now();
        let budget = budget.get_or_insert_with(|| self.places_budget.connection());
        let (answer, spent) = self.spec.places.lookup(q, budget).await;
        if let Some(spent) = spent {
            self.stats.over_budget(spent.as_str());
        }
        let backend = self.spec.places.backend().as_str();
        self.stats.lookup(backend, answer.status(), began.elapsed());
        (answer, spent, began)
    }

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

    /// Hands the records `node` stored since the last call to the store; returns the store position they end at. Called
    /// before the node is unlocked, so no compaction can start between storing and journaling.
    pub(crate) fn journal(&self, node: &mut Node) -> Option<u64> {
        let store = self.store.as_ref()?;
        let j = node.journal()?;
        let end = store.append(&mut j.bytes, j.records);
        j.records = 0;
        Some(end)
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
                s.count, s.kind.as_str(), crate::driver::warnings::WARN_PERIOD.as_secs());
        }
    }

    pub(super) fn admission(&self) -> MutexGuard<'_, Admission> {
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
    pub(super) fn refused(&self, why: Limit, addr: SocketAddr) {
        let first = self.admission().refused(why);
        if first {
            let l = &self.spec.limits;
            info!(target: SUMMARY,
                "{} at its connection limit (max_connections={}, max_connections_per_ip={}): refusing with `? busy` (first: {addr})",
                self.spec.name, l.max_connections, l.max_connections_per_ip);
        }
    }

    /// Says once, on the summary and in the log, that the cache reached `max_clients`.
    pub(super) fn cap_reached(&self, clients: usize) {
        info!(target: SUMMARY,
            "{} holds {clients} clients, its limit (max_clients={}): IAMATs for new clients are refused; known clients still update",
            self.spec.name, self.spec.limits.max_clients);
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

/// The connection limits of `spec`, fitted into the process's file descriptors (with `admin`: the
/// admin door's connections beside them); says so when `max_connections` had to be lowered.
fn conn_limits(spec: &ServerSpec, admin: bool) -> ConnLimits {
    let me = &spec.name;
    let wanted = ConnLimits::new(
        spec.limits.max_connections,
        spec.limits.max_connections_per_ip,
        spec.neighbors.len(),
    );
    let admin_fds = if admin { spec.admin.max_connections } else { 0 };
    let Some(fds) = crate::driver::admission::descriptors_per_server() else {
        return wanted;
    };
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
                tokio::task::spawn_blocking(move || upkeep::load(node, &cfg, &members)).await??;
            let clients = node.len();
            (node, Some(store), Some((clients, report)))
        }
        None => (node.with_members(&spec.members), None, None),
    };
    let conn_limits = conn_limits(&spec, admin.is_some());
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
        let http = listener::bind(&addr)
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
        shared
            .tracker
            .spawn(upkeep::keep_store(s).in_current_span());
    }

    // Each other loop accepts on its own listener; the connections it accepts are its tasks.
    for (handle, listener) in listeners.more {
        let s = shared.clone();
        let accepting = async move {
            match listener
                .set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(listener))
            {
                Ok(l) => listener::accept(&s, l).await,
                Err(e) => error!(cause = %e, "cannot listen on an event loop"),
            }
        };
        handle.spawn(shared.tracker.track_future(accepting.in_current_span()));
    }
    listener::accept(&shared, listeners.first).await;
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
