//! A server's counters ([`Stats`]): what its connections, links and admin door count, and what a
//! scrape copies in from the node, the admission and the store (`Scrape`).
//!
//! A connection adds its batch's counts once per batch; what the node, the admission and the store
//! already count is copied in only when scraped (ARCHITECTURE.md, "Counting off the request path").

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use herd_proto::ErrorKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::driver::warnings::WarnKind;
use crate::node::limits::{Limit, Refusals};
use crate::node::{Invalid, LinkCounts};
use crate::store::StoreState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WarnLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Peer {
    peer: String,
}

/// A reconciliation's kind: `link-up` (the catch-up when a link comes up) or `periodic` (a check of
/// a live link).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerKind {
    peer: String,
    kind: &'static str,
}

/// `sent` or `received`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerDirection {
    peer: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Mode {
    mode: &'static str,
}

type F64Gauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The store's metrics, registered only when the server keeps records on disk.
#[derive(Default)]
struct StoreStats {
    fsync: Family<Mode, Gauge>,
    journal_bytes: Gauge,
    journal_records: Gauge,
    unwritten_bytes: Gauge,
    unsynced_bytes: Gauge,
    snapshot_age: F64Gauge,
    compactions: Counter,
    failing: Gauge,
    acknowledging: Gauge,
    loaded_clients: Gauge,
    loaded_records: Gauge,
}

/// The links' metrics: each neighbour's link, its floods and its catch-ups, and their totals.
#[derive(Default)]
struct LinkStats {
    link_up: Family<Peer, Gauge>,
    link_queue: Family<Peer, Gauge>,
    link_last_heard: Family<Peer, F64Gauge>,
    flood_in: Counter,
    flood_out: Counter,
    link_flood_in: Family<Peer, Counter>,
    link_flood_out: Family<Peer, Counter>,
    catchup_started: Family<PeerKind, Counter>,
    catchup_finished: Family<PeerKind, Counter>,
    catchup_full_streams: Family<Peer, Counter>,
    catchup_records: Family<PeerDirection, Counter>,
    catchup_bytes: Family<PeerDirection, Counter>,
    catchup_in_progress: Family<Peer, Gauge>,
    catchup_tables: Family<PeerDirection, Counter>,
    catchup_broken: Family<Peer, Counter>,
    link_lines_unexpected: Family<Peer, Counter>,
    link_quarantined: Family<Peer, Counter>,
    catchup_refused: Family<Peer, Counter>,
}

impl LinkStats {
    /// Copies the links' figures, and their totals, into the registry.
    fn record(&self, links: &[LinkView]) {
        set(
            &self.flood_in,
            links.iter().map(|l| l.counts.records_in).sum(),
        );
        set(
            &self.flood_out,
            links.iter().map(|l| l.counts.records_out).sum(),
        );
        for l in links {
            self.record_link(l);
        }
    }

    /// Copies one link's figures into the registry.
    fn record_link(&self, l: &LinkView) {
        let c = &l.counts;
        let peer = Peer {
            peer: l.name.clone(),
        };
        self.link_up.get_or_create(&peer).set(i64::from(l.up));
        self.link_queue.get_or_create(&peer).set(l.queue as i64);
        self.link_last_heard
            .get_or_create(&peer)
            .set(l.last_heard.map_or(-1.0, |d| d.as_secs_f64()));
        set(&self.link_flood_in.get_or_create(&peer), c.records_in);
        set(&self.link_flood_out.get_or_create(&peer), c.records_out);
        set(
            &self.catchup_full_streams.get_or_create(&peer),
            c.full_streams,
        );
        self.catchup_in_progress
            .get_or_create(&peer)
            .set(i64::from(l.reconciling));
        set(&self.catchup_broken.get_or_create(&peer), c.sync_broken);
        set(
            &self.link_lines_unexpected.get_or_create(&peer),
            c.lines_unexpected,
        );
        set(&self.link_quarantined.get_or_create(&peer), c.quarantines);
        set(
            &self.catchup_refused.get_or_create(&peer),
            c.exchanges_refused,
        );
        for (kind, started, finished) in [
            ("link-up", c.catchups_started, c.catchups_finished),
            ("periodic", c.checks_started, c.checks_finished),
        ] {
            let label = PeerKind {
                peer: l.name.clone(),
                kind,
            };
            set(&self.catchup_started.get_or_create(&label), started);
            set(&self.catchup_finished.get_or_create(&label), finished);
        }
        for (direction, records, bytes) in [
            ("sent", c.sync_records_out, c.sync_bytes_out),
            ("received", c.sync_records_in, c.sync_bytes_in),
        ] {
            let label = PeerDirection {
                peer: l.name.clone(),
                direction,
            };
            set(&self.catchup_records.get_or_create(&label), records);
            set(&self.catchup_bytes.get_or_create(&label), bytes);
        }
        for (direction, tables) in [("sent", c.sync_tables_out), ("received", c.sync_tables_in)] {
            let label = PeerDirection {
                peer: l.name.clone(),
                direction,
            };
            set(&self.catchup_tables.get_or_create(&label), tables);
        }
    }

    /// Registers each link's state and the records flooded.
    fn register_flood(&self, r: &mut Registry) {
        r.register(
            "link_up",
            "Whether the link to a neighbour is up (1) or down (0)",
            self.link_up.clone(),
        );
        r.register(
            "link_queue",
            "Records waiting to be sent to a neighbour",
            self.link_queue.clone(),
        );
        r.register(
            "link_last_heard_seconds",
            "Seconds since the neighbour was last heard (-1: never)",
            self.link_last_heard.clone(),
        );
        r.register(
            "flood_in",
            "Records received from neighbours (flooded or sent by a catch-up)",
            self.flood_in.clone(),
        );
        r.register(
            "flood_out",
            "Records sent to neighbours (flooded or sent by a catch-up)",
            self.flood_out.clone(),
        );
        r.register(
            "link_flood_in",
            "Records received from a neighbour (flooded or sent by a catch-up)",
            self.link_flood_in.clone(),
        );
        r.register(
            "link_flood_out",
            "Records sent to a neighbour (flooded or sent by a catch-up)",
            self.link_flood_out.clone(),
        );
    }

    /// Registers the reconciliations' metrics.
    fn register_catchup(&self, r: &mut Registry) {
        r.register(
            "catchup_started",
            "Reconciliations begun with a neighbour, by kind: link-up (the catch-up when a link comes up) or periodic (a check of a live link)",
            self.catchup_started.clone(),
        );
        r.register(
            "catchup_finished",
            "Reconciliations that ended with HERD-SYNCED (begun minus finished: cut by the link going down)",
            self.catchup_finished.clone(),
        );
        r.register(
            "catchup_full_streams",
            "Whole-cache streams begun towards a neighbour that held nothing",
            self.catchup_full_streams.clone(),
        );
        r.register(
            "catchup_records",
            "Records sent, or received while a reconciliation ran, by direction",
            self.catchup_records.clone(),
        );
        r.register(
            "catchup_bytes",
            "Bytes of reconciliation lines and records (plaintext, with newlines), by direction",
            self.catchup_bytes.clone(),
        );
        r.register(
            "catchup_tables",
            "Tables (HERD-IBF, the path for a dense difference) sent to or received whole from a neighbour, by direction",
            self.catchup_tables.clone(),
        );
        r.register(
            "catchup_broken",
            "Reconciliations the neighbour broke (a line out of turn or with no place in one): the link was closed and caught up again",
            self.catchup_broken.clone(),
        );
        r.register(
            "link_lines_unexpected",
            "Lines from a neighbour that were no peer message this server reads, or had no place on a running link",
            self.link_lines_unexpected.clone(),
        );
        r.register(
            "link_quarantined",
            "Times the neighbour's link was closed for a fault (misbehaving, a broken or overloaded reconciliation, a line too long) and its name quarantined",
            self.link_quarantined.clone(),
        );
        r.register(
            "catchup_refused",
            "Reconciliations the neighbour tried to open faster than a link may open them (the link was closed)",
            self.catchup_refused.clone(),
        );
        r.register(
            "catchup_in_progress",
            "Whether a reconciliation (link-up catch-up or periodic check) is under way with the neighbour",
            self.catchup_in_progress.clone(),
        );
    }
}

impl StoreStats {
    /// Registers the store's metrics.
    fn register(&self, r: &mut Registry) {
        r.register(
            "store_fsync",
            "The fsync setting ([store] fsync), as the label of a 1",
            self.fsync.clone(),
        );
        r.register(
            "store_journal_bytes",
            "Bytes in the journals since the last snapshot",
            self.journal_bytes.clone(),
        );
        r.register(
            "store_journal_records",
            "Records in the journals since the last snapshot",
            self.journal_records.clone(),
        );
        r.register(
            "store_unwritten_bytes",
            "Bytes stored and not yet written to the journal (the writer's backlog)",
            self.unwritten_bytes.clone(),
        );
        r.register(
            "store_unsynced_bytes",
            "Bytes stored and not yet synced by the server (under fsync = no the system syncs: it grows)",
            self.unsynced_bytes.clone(),
        );
        r.register(
            "store_snapshot_age_seconds",
            "Seconds since the newest snapshot was written (-1: none yet)",
            self.snapshot_age.clone(),
        );
        r.register(
            "store_compactions",
            "Compactions completed since the start",
            self.compactions.clone(),
        );
        r.register(
            "store_failing",
            "Whether persistence is failing: a write or sync failed and no compaction has repaired it yet",
            self.failing.clone(),
        );
        r.register(
            "store_acknowledging",
            "Whether new records are acknowledged (0: persistence has failed for longer than the fsync setting allows)",
            self.acknowledging.clone(),
        );
        r.register(
            "store_loaded_clients",
            "Clients held after loading the store at start",
            self.loaded_clients.clone(),
        );
        r.register(
            "store_loaded_records",
            "Records read from the store at start (replaced ones included)",
            self.loaded_records.clone(),
        );
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabel {
    backend: &'static str,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: &'static str,
}

type HistogramFamily = Family<BackendLabel, Histogram, fn() -> Histogram>;

/// A server's counters, shared by its connections, links and admin endpoint.
pub struct Stats {
    registry: Registry,
    started: Instant,
    iamat: Counter,
    whatsat: Counter,
    invalid: Family<Reason, Counter>,
    /// The sum of `invalid`, for `/status` (not registered: the family is).
    invalid_total: Counter,
    connections: Counter,
    connections_open: Gauge,
    too_long: Counter,
    refused: Family<LimitLabel, Counter>,
    peer_refused: Family<LimitLabel, Counter>,
    warnings_logged: Family<WarnLabel, Counter>,
    warnings_suppressed: Family<WarnLabel, Counter>,
    cache_bytes: Gauge,
    watchers: Gauge,
    watches: Gauge,
    watchers_dropped: Counter,
    watch_records: Counter,
    records: Gauge,
    /// The links' figures, copied in from the node at a scrape.
    links: LinkStats,
    store_enabled: Gauge,
    store: Option<StoreStats>,
    lookups: Family<LookupLabel, Counter>,
    lookup_seconds: HistogramFamily,
    over_budget: Family<BudgetLabel, Counter>,
    admin_refused: Family<Reason, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabel {
    budget: &'static str,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new(false)
    }
}

impl Stats {
    /// Every metric at zero, registered under `herd_`; the store's too when `store` (the server keeps
    /// its records on disk).
    pub fn new(store: bool) -> Stats {
        let mut registry = Registry::with_prefix("herd");
        let requests = Family::<KindLabel, Counter>::default();
        registry.register(
            "requests",
            "Client lines answered, by kind (invalid ones are also in herd_invalid_total)",
            requests.clone(),
        );
        let stats = Stats {
            iamat: requests.get_or_create_owned(&KindLabel { kind: "iamat" }),
            whatsat: requests.get_or_create_owned(&KindLabel { kind: "whatsat" }),
            invalid: Family::default(),
            invalid_total: Counter::default(),
            connections: Counter::default(),
            connections_open: Gauge::default(),
            too_long: Counter::default(),
            refused: Family::default(),
            peer_refused: Family::default(),
            warnings_logged: Family::default(),
            warnings_suppressed: Family::default(),
            cache_bytes: Gauge::default(),
            watchers: Gauge::default(),
            watches: Gauge::default(),
            watchers_dropped: Counter::default(),
            watch_records: Counter::default(),
            records: Gauge::default(),
            links: LinkStats::default(),
            store_enabled: Gauge::default(),
            store: store.then(StoreStats::default),
            lookups: Family::default(),
            lookup_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 4.0, 10))
            }),
            over_budget: Family::default(),
            admin_refused: Family::default(),
            started: Instant::now(),
            registry: Registry::default(),
        };
        // Registered in this order, which is the order of the exposition.
        stats.register_clients(&mut registry);
        stats.register_cache(&mut registry);
        stats.links.register_flood(&mut registry);
        stats.links.register_catchup(&mut registry);
        stats.register_store(&mut registry);
        stats.register_places(&mut registry);
        Stats { registry, ..stats }
    }

    /// Registers the client connections' and lines' metrics.
    fn register_clients(&self, r: &mut Registry) {
        r.register(
            "invalid",
            "Lines answered `?`, by reason",
            self.invalid.clone(),
        );
        r.register(
            "connections",
            "Client connections accepted",
            self.connections.clone(),
        );
        r.register(
            "connections_open",
            "Client connections open now",
            self.connections_open.clone(),
        );
        r.register(
            "refused_line_too_long",
            "Connections closed for a line over [limits] max_line",
            self.too_long.clone(),
        );
        r.register(
            "refused",
            "Connections and lines refused by a limit ([limits]), by limit: busy, busy-per-ip and busy-peers at accept (`? busy`), line-timeout, future-time and client-cap for IAMATs",
            self.refused.clone(),
        );
        r.register(
            "peer_records_refused",
            "Records from peers refused by a limit a client's record must keep, by limit: future-time, client-cap, client-id, cache-bytes",
            self.peer_refused.clone(),
        );
        r.register(
            "warnings_logged",
            "Repeated warnings logged, by kind (greeting, dial, peer-line, name-clash): the first few of each period per peer address",
            self.warnings_logged.clone(),
        );
        r.register(
            "warnings_suppressed",
            "Repeated warnings not logged, by kind: past the first few of a period per peer address, summed up once a period",
            self.warnings_suppressed.clone(),
        );
    }

    /// Registers the cache's and the watches' metrics.
    fn register_cache(&self, r: &mut Registry) {
        r.register(
            "cache_bytes",
            "What the cache holds against [limits] max_cache_bytes: AT lines plus about a hundred bytes a client",
            self.cache_bytes.clone(),
        );
        r.register("records", "Client records held", self.records.clone());
        r.register(
            "watchers",
            "WebSocket connections of the client door (each may hold watches)",
            self.watchers.clone(),
        );
        r.register(
            "watches",
            "Watches held, against [limits] max_watches",
            self.watches.clone(),
        );
        r.register(
            "watchers_dropped",
            "Watchers closed because their queue ([limits] watch_queue) was full",
            self.watchers_dropped.clone(),
        );
        r.register(
            "watch_records",
            "Records pushed to watchers",
            self.watch_records.clone(),
        );
    }

    /// Registers whether records are kept on disk, and the store's metrics when they are.
    fn register_store(&self, r: &mut Registry) {
        r.register(
            "store_enabled",
            "Whether records are kept on disk (a data folder is set)",
            self.store_enabled.clone(),
        );
        if let Some(st) = &self.store {
            self.store_enabled.set(1);
            st.register(r);
        }
    }

    /// Registers the Places look-ups' and the admin door's metrics.
    fn register_places(&self, r: &mut Registry) {
        r.register(
            "places_lookups",
            "Places look-ups, by back-end and answer status",
            self.lookups.clone(),
        );
        r.register(
            "places_lookup_seconds",
            "Places look-up time, by back-end",
            self.lookup_seconds.clone(),
        );
        r.register(
            "places_over_budget",
            "WHATSATs answered OVER_QUERY_LIMIT without an upstream call, by the budget that was spent ([places] connection_rate/connection_burst, server_rate/server_burst)",
            self.over_budget.clone(),
        );
        r.register(
            "admin_refused",
            "Admin connections and requests refused, by reason: max-connections (closed at accept, [admin] max_connections), events and events-per-address (503 of /events), host (421: a Host that is no IP, localhost or [admin] hosts name), token (401: no admin token from beyond loopback)",
            self.admin_refused.clone(),
        );
    }

    /// A WHATSAT was answered `OVER_QUERY_LIMIT`: `budget` (`connection` or `server`) was spent.
    pub fn over_budget(&self, budget: &'static str) {
        self.over_budget
            .get_or_create(&BudgetLabel { budget })
            .inc();
    }

    /// The admin door refused a connection or a request, for `reason`.
    pub fn admin_refused(&self, reason: &'static str) {
        self.admin_refused.get_or_create(&Reason { reason }).inc();
    }

    /// A batch of a connection answered `iamat` IAMATs and `whatsat` WHATSATs (valid ones).
    #[inline]
    pub fn answered(&self, iamat: u64, whatsat: u64) {
        if iamat > 0 {
            self.iamat.inc_by(iamat);
        }
        if whatsat > 0 {
            self.whatsat.inc_by(whatsat);
        }
    }

    /// A line was answered `?`, for the reason the node gave.
    pub fn invalid(&self, why: Invalid) {
        let reason = match why {
            Invalid::UnknownClient => "unknown-client",
            Invalid::Malformed(kind) => reason_of(kind),
        };
        self.invalid.get_or_create(&Reason { reason }).inc();
        self.invalid_total.inc();
    }

    /// A line over the limit closed a connection.
    pub fn line_too_long(&self) {
        self.too_long.inc();
    }

    /// A client connection opened (`true`) or closed.
    pub fn connection(&self, open: bool) {
        if open {
            self.connections.inc();
            self.connections_open.inc();
        } else {
            self.connections_open.dec();
        }
    }

    /// A Places look-up ended with `status` after `took`.
    pub fn lookup(&self, backend: &'static str, status: &str, took: Duration) {
        self.lookups
            .get_or_create(&LookupLabel {
                backend,
                status: status.to_owned(),
            })
            .inc();
        self.lookup_seconds
            .get_or_create(&BackendLabel { backend })
            .observe(took.as_secs_f64());
    }

    /// The counters `/status` and the live page show, read now.
    pub(crate) fn counts(&self) -> Counts {
        Counts {
            uptime: self.started.elapsed(),
            connections: self.connections.get(),
            open_connections: self.connections_open.get(),
            iamat: self.iamat.get(),
            whatsat: self.whatsat.get(),
            invalid: self.invalid_total.get(),
            flood_in: self.links.flood_in.get(),
            flood_out: self.links.flood_out.get(),
        }
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> i64 {
        self.connections_open.get()
    }
}

/// The counters of a server at one moment ([`Stats::counts`]).
pub(crate) struct Counts {
    /// Since the server started.
    pub(crate) uptime: Duration,
    /// Client connections opened.
    pub(crate) connections: u64,
    /// Client connections open now.
    pub(crate) open_connections: i64,
    /// IAMATs answered.
    pub(crate) iamat: u64,
    /// WHATSATs answered.
    pub(crate) whatsat: u64,
    /// Lines answered `?`.
    pub(crate) invalid: u64,
    /// Records flooded in from neighbours and out to them.
    pub(crate) flood_in: u64,
    /// See `flood_in`.
    pub(crate) flood_out: u64,
}

fn reason_of(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Empty => "empty",
        ErrorKind::UnknownCommand => "unknown-command",
        ErrorKind::MissingField | ErrorKind::ExtraField => "fields",
        ErrorKind::Location | ErrorKind::LatitudeRange | ErrorKind::LongitudeRange => "location",
        ErrorKind::Time | ErrorKind::TimePrecision | ErrorKind::TimeRange => "time",
        ErrorKind::Radius | ErrorKind::RadiusRange => "radius",
        ErrorKind::Bound | ErrorKind::BoundRange => "bound",
        _ => "other",
    }
}

/// A link as `/status` and `/metrics` show it.
pub(crate) struct LinkView {
    pub(crate) name: String,
    pub(crate) up: bool,
    pub(crate) queue: usize,
    pub(crate) last_heard: Option<Duration>,
    pub(crate) reconciling: bool,
    pub(crate) counts: LinkCounts,
}

/// Sets a counter to a total kept elsewhere (a node's or store's count only grows).
fn set(counter: &Counter, total: u64) {
    counter.inner().store(total, Ordering::Relaxed);
}

/// What a scrape read from the node, the admission, the warnings and the store, to be copied into
/// the registry ([`Stats::record`]).
pub(crate) struct Scrape<'a> {
    /// Clients held.
    pub(crate) records: usize,
    /// Bytes the cache holds.
    pub(crate) cache_bytes: u64,
    /// The WebSocket door's watchers, their watches, the watchers dropped for being slow and the
    /// records delivered to watchers.
    pub(crate) watches: [u64; 4],
    /// Each link.
    pub(crate) links: &'a [LinkView],
    /// The refusals of the driver and of the node.
    pub(crate) refusals: &'a Refusals,
    /// The records refused from peers, by limit.
    pub(crate) peer_refusals: &'a Refusals,
    /// Warnings logged and suppressed, by kind.
    pub(crate) warnings: Vec<(WarnKind, u64, u64)>,
    /// The store's state and its fsync setting, when the server keeps its records on disk.
    pub(crate) store: Option<(&'a StoreState, &'static str)>,
    /// What the start loaded from the store: clients, records.
    pub(crate) loaded: Option<(usize, u64)>,
}

impl Stats {
    /// Copies what a scrape read into the registry.
    pub(crate) fn record(&self, scrape: &Scrape<'_>) {
        self.records.set(scrape.records as i64);
        self.cache_bytes.set(scrape.cache_bytes as i64);
        let [watchers, watches, dropped, fired] = scrape.watches;
        self.watchers.set(watchers as i64);
        self.watches.set(watches as i64);
        set(&self.watchers_dropped, dropped);
        set(&self.watch_records, fired);
        for &(kind, logged, suppressed) in &scrape.warnings {
            let label = WarnLabel {
                kind: kind.as_str(),
            };
            set(&self.warnings_logged.get_or_create(&label), logged);
            set(&self.warnings_suppressed.get_or_create(&label), suppressed);
        }
        for limit in Limit::ALL {
            let label = LimitLabel {
                limit: limit.as_str(),
            };
            set(
                &self.refused.get_or_create(&label),
                scrape.refusals.get(limit),
            );
            set(
                &self.peer_refused.get_or_create(&label),
                scrape.peer_refusals.get(limit),
            );
        }
        self.links.record(scrape.links);
        if let (Some(st), Some((state, fsync))) = (&self.store, scrape.store) {
            st.record(state, fsync, scrape.loaded);
        }
    }

    /// The Prometheus text of the registry, after the uptime and the per-process figures
    /// (`places_cache`: hits and misses; `log_dropped`: log lines dropped).
    pub(crate) fn encode(&self, places_cache: (u64, u64), log_dropped: u64) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP herd_uptime_seconds Seconds since the server started.\n# TYPE herd_uptime_seconds gauge\nherd_uptime_seconds {:.3}",
            self.started.elapsed().as_secs_f64()
        );
        let (hits, misses) = places_cache;
        let _ = writeln!(
            out,
            "# HELP herd_places_cache_hits Places look-ups answered from the cache (per process).\n# TYPE herd_places_cache_hits counter\nherd_places_cache_hits_total {hits}\n\
             # HELP herd_places_cache_misses Places look-ups sent to the back-end (per process).\n# TYPE herd_places_cache_misses counter\nherd_places_cache_misses_total {misses}\n\
             # HELP herd_log_lines_dropped Log lines dropped because the log could not be written.\n# TYPE herd_log_lines_dropped counter\nherd_log_lines_dropped_total {log_dropped}"
        );
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl StoreStats {
    /// Copies the store's state (`fsync`: its setting; `loaded`: clients and records the start
    /// loaded) into the registry.
    fn record(&self, state: &StoreState, fsync: &'static str, loaded: Option<(usize, u64)>) {
        self.fsync.get_or_create(&Mode { mode: fsync }).set(1);
        self.journal_bytes.set(state.journal_bytes as i64);
        self.journal_records.set(state.journal_records as i64);
        self.unwritten_bytes.set(state.unwritten_bytes as i64);
        self.unsynced_bytes.set(state.unsynced_bytes as i64);
        self.snapshot_age.set(snapshot_age(state).unwrap_or(-1.0));
        set(&self.compactions, state.compactions);
        self.failing.set(i64::from(state.failing));
        self.acknowledging.set(i64::from(state.acknowledging));
        if let Some((clients, records)) = loaded {
            self.loaded_clients.set(clients as i64);
            self.loaded_records.set(records as i64);
        }
    }
}

/// Seconds since the newest snapshot was written (`None`: there is none).
pub(crate) fn snapshot_age(state: &StoreState) -> Option<f64> {
    let at = state.snapshot_at?;
    Some(
        SystemTime::now()
            .duration_since(at)
            .unwrap_or_default()
            .as_secs_f64(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_lines_are_counted_by_reason() {
        let s = Stats::new(false);
        s.answered(3, 1);
        // The reasons as the node gives them, for the lines the driver hands it.
        let mut node = crate::node::Node::new("Alford", Vec::new());
        let now = herd_proto::Timestamp::new(1000, 0).unwrap();
        for line in ["WHATSAT kiwi abc 3", "WHATSAT kiwi 10 3", "PING"] {
            let step = node.client_line(line.as_bytes(), now, &mut Vec::new());
            let crate::node::Step::Invalid(why) = step else {
                panic!("{line}: {step:?}")
            };
            s.invalid(why);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &s.registry).unwrap();
        for want in [
            "herd_requests_total{kind=\"iamat\"} 3",
            "herd_requests_total{kind=\"whatsat\"} 1",
            "herd_invalid_total{reason=\"radius\"} 1",
            "herd_invalid_total{reason=\"unknown-client\"} 1",
            "herd_invalid_total{reason=\"unknown-command\"} 1",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
        let counts = s.counts();
        assert_eq!((counts.iamat, counts.whatsat, counts.invalid), (3, 1, 3));
    }
}
