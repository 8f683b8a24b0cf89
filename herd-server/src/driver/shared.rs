//! The handles a server's tasks hold ([`Shared`]), each over a small state of its own: the node
//! ([`NodeHandle`]), the store, the counters ([`Stats`]), the live page's samples ([`Live`]), the
//! gate ([`Gate`]) and the server's lifecycle ([`Lifecycle`]). The server's start assembles them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use herd_proto::Timestamp;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::driver::gate::Gate;
use crate::driver::metrics::Stats;
use crate::driver::node_handle::NodeHandle;
use crate::driver::samples::Live;
use crate::driver::spec::ServerSpec;
use crate::log::SUMMARY;
use crate::node::limits::Refusals;
use crate::node::{Lookup, Node};
use crate::places::{Answer, ClientBudget, ServerBudget, Spent};
use crate::store::Store;

/// When a server stops, and the tasks it waits for before it does.
#[derive(Clone)]
pub(crate) struct Lifecycle {
    /// Cancelled when the server is to stop.
    pub(crate) shutdown: CancellationToken,
    /// The server's tasks, waited for once it stops accepting.
    pub(crate) tracker: TaskTracker,
    /// Set once shutdown has begun (by the accept loops, when the token fires): a plain load for the
    /// connections to check on every read, where the token's own check takes its lock.
    stopping: Arc<AtomicBool>,
}

impl Lifecycle {
    /// A server's lifecycle, ended by `shutdown`.
    pub(crate) fn new(shutdown: CancellationToken) -> Self {
        Lifecycle {
            shutdown,
            tracker: TaskTracker::new(),
            stopping: Arc::default(),
        }
    }

    /// Shutdown has begun.
    #[inline]
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Says to the connections that shutdown has begun.
    pub(crate) fn begin_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }
}

/// The handles a server's client connections, links and doors hold.
pub(crate) struct Shared {
    pub(crate) spec: Arc<ServerSpec>,
    pub(crate) node: Arc<NodeHandle>,
    /// The records on disk, when the server keeps them there.
    pub(crate) store: Option<Store>,
    /// Counters for the admin door.
    pub(crate) stats: Arc<Stats>,
    /// Samples of what clients do, for the live page.
    pub(crate) live: Arc<Live>,
    pub(crate) gate: Arc<Gate>,
    pub(crate) life: Lifecycle,
    /// The server's budget of upstream Places calls; each connection takes its own from it.
    places_budget: ServerBudget,
}

impl Shared {
    /// The handles of a server run from `spec`, over `node` and `store`, admitting by `gate`.
    pub(crate) fn new(
        spec: Arc<ServerSpec>,
        node: NodeHandle,
        store: Option<Store>,
        gate: Gate,
        life: Lifecycle,
    ) -> Self {
        Shared {
            node: Arc::new(node),
            stats: Arc::new(Stats::new(store.is_some())),
            store,
            live: Arc::default(),
            gate: Arc::new(gate),
            life,
            places_budget: spec.places.server_budget(),
            spec,
        }
    }

    /// A WHATSAT's Places look-up `q` for one client connection, from either door: shown on the live
    /// page, paid from the connection's `budget` (made on first use) and the server's, counted. Returns
    /// the answer, the budget spent (if the look-up was refused for it) and when the look-up began.
    pub(crate) async fn places_lookup(
        &self,
        q: &Lookup,
        now: Timestamp,
        budget: &mut Option<ClientBudget>,
    ) -> (Arc<Answer>, Option<Spent>, Instant) {
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
        self.node.lock()
    }

    /// A record was stored: wake every link but `except`.
    pub(crate) fn notify_links(&self, except: Option<usize>) {
        self.node.notify_links(except);
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

    /// A new connection's number, for the log.
    pub(crate) fn conn_id(&self) -> u64 {
        self.gate.conn_id()
    }

    /// Every refusal so far: the driver's (`? busy`, line time-outs) and the node's (IAMATs refused by
    /// a limit). The node is locked briefly.
    pub(crate) fn refusals(&self) -> Refusals {
        self.gate.refusals().merged(&self.node().refusals())
    }

    /// Says once, on the summary and in the log, that the cache reached `max_clients`.
    pub(crate) fn cap_reached(&self, clients: usize) {
        info!(target: SUMMARY,
            "{} holds {clients} clients, its limit (max_clients={}): IAMATs for new clients are refused; known clients still update",
            self.spec.name, self.spec.limits.max_clients);
    }
}
