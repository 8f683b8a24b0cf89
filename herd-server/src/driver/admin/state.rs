//! What the admin door's handlers share ([`AdminState`]): the handles of the server it reads, never
//! the driver's own state, and what each request carries (its address, an `/events` stream's
//! progress).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::driver::admin::streams::Streams;
use crate::driver::gate::Gate;
use crate::driver::metrics::Stats;
use crate::driver::node_handle::NodeHandle;
use crate::driver::samples::Live;
use crate::driver::shared::{Lifecycle, Shared};
use crate::driver::spec::ServerSpec;
use crate::store::{LoadReport, Store};

/// The handles the admin door reads, and its own state.
#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) spec: Arc<ServerSpec>,
    pub(crate) node: Arc<NodeHandle>,
    pub(crate) store: Option<Store>,
    /// What the start loaded from the store: clients held after it, and its report.
    pub(crate) loaded: Option<Arc<(usize, LoadReport)>>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) live: Arc<Live>,
    /// The driver's refusals and warnings.
    pub(crate) gate: Arc<Gate>,
    pub(crate) life: Lifecycle,
    /// The `/events` streams open.
    pub(crate) streams: Arc<Mutex<Streams>>,
    /// The client listener's address, shown by `/status`.
    pub(crate) listen: Arc<str>,
}

impl AdminState {
    /// The admin door's view of the server `shared` holds, which loaded `loaded` at its start and
    /// listens for clients on `listen`.
    pub(crate) fn new(shared: &Shared, loaded: Option<(usize, LoadReport)>, listen: &str) -> Self {
        AdminState {
            spec: shared.spec.clone(),
            node: shared.node.clone(),
            store: shared.store.clone(),
            loaded: loaded.map(Arc::new),
            stats: shared.stats.clone(),
            live: shared.live.clone(),
            gate: shared.gate.clone(),
            life: shared.life.clone(),
            streams: Arc::default(),
            listen: listen.into(),
        }
    }
}

/// The address a request came from (put in its extensions by the admin door's connection).
#[derive(Clone, Copy)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);

/// When an `/events` stream last sent an event (milliseconds after [`StreamProgress::epoch`]; 0: it is
/// not a stream), so the connection's task can close a stream whose page stopped reading.
#[derive(Clone)]
pub(crate) struct StreamProgress {
    epoch: Instant,
    at: Arc<AtomicU64>,
}

impl StreamProgress {
    pub(crate) fn new() -> Self {
        StreamProgress {
            epoch: Instant::now(),
            at: Arc::new(AtomicU64::new(0)),
        }
    }

    /// An event was taken (or a stream began).
    pub(crate) fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.at.store(ms.max(1), Ordering::Relaxed);
    }

    /// A stream that has sent nothing for longer than `limit`.
    pub(crate) fn stalled(&self, limit: Duration) -> bool {
        let at = self.at.load(Ordering::Relaxed);
        at != 0 && self.epoch.elapsed().as_millis() as u64 > at + limit.as_millis() as u64
    }
}
