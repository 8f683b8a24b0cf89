//! The handle on a server's node: the [`Node`] behind its lock, the wake-up of the task that keeps
//! its timers, and the slot of each neighbour's link ([`LinkSlot`]). Every task that asks the node
//! something holds this handle; [`NodeHandle::view`] is what the admin door reads of it.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::driver::metrics::LinkView;
use crate::node::handshake::{Admit, Refusal};
use crate::node::limits::Refusals;
use crate::node::sync::Sum;
use crate::node::Node;

/// One neighbour's link as the driver sees it.
pub(crate) struct LinkSlot {
    pub(crate) name: String,
    pub(crate) addr: String,
    /// Wakes the link's writer: something to send.
    pub(crate) notify: Notify,
    /// Cancels the link currently serving this neighbour, when a newer one replaces it.
    current: Mutex<Option<CancellationToken>>,
    /// The address of the link serving this neighbour now, for the diagnosis of two servers that
    /// claim its name.
    live: Mutex<Option<SocketAddr>>,
}

impl LinkSlot {
    /// The address of the link serving this neighbour now.
    pub(crate) fn live(&self) -> Option<SocketAddr> {
        *self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A link from `addr`, cancelled by `token`, serves this neighbour now: the one it replaces is
    /// cancelled.
    pub(crate) fn serve(&self, token: CancellationToken, addr: SocketAddr) {
        let old = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(token);
        if let Some(old) = old {
            old.cancel();
        }
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr);
    }

    /// Closes the link serving this neighbour (the node found it silent too long).
    pub(crate) fn close(&self) {
        if let Some(t) = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            t.cancel();
        }
    }

    /// A link of this neighbour ended: if it was cancelled (not replaced by a newer one still
    /// running), nothing serves the neighbour any more.
    pub(crate) fn ended(&self) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|t| t.is_cancelled()) {
            *current = None;
            *self.live.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }
}

/// What the admin door reads of the node, with it locked once.
pub(crate) struct NodeView {
    /// Clients held.
    pub(crate) records: usize,
    pub(crate) fingerprint: Sum,
    pub(crate) links: Vec<LinkView>,
    /// IAMATs the node refused by a limit.
    pub(crate) refusals: Refusals,
    /// Peers' records the node refused by a limit.
    pub(crate) peer_refusals: Refusals,
    pub(crate) cache_bytes: u64,
    /// Watchers, watches, watchers dropped, records pushed to watchers.
    pub(crate) watches: [u64; 4],
}

/// The node, its timers' wake-up and its links' slots.
pub(crate) struct NodeHandle {
    node: Mutex<Node>,
    /// Wakes the task that keeps the node's timers: a link went up or down, or a dial failed, so
    /// the node's next deadline may be earlier than the one it sleeps until.
    timers: Notify,
    links: Vec<LinkSlot>,
}

impl NodeHandle {
    /// The handle on `node`, with a slot for each of `neighbors` (name, `host:port`), in the node's
    /// link order.
    pub(crate) fn new(node: Node, neighbors: &[(String, String)]) -> Self {
        let links = neighbors
            .iter()
            .map(|(name, addr)| LinkSlot {
                name: name.clone(),
                addr: addr.clone(),
                notify: Notify::new(),
                current: Mutex::new(None),
                live: Mutex::new(None),
            })
            .collect();
        NodeHandle {
            node: Mutex::new(node),
            timers: Notify::new(),
            links,
        }
    }

    /// The node, never held across an `.await`.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Node> {
        self.node.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every neighbour's slot, in link order.
    pub(crate) fn links(&self) -> &[LinkSlot] {
        &self.links
    }

    /// The slot of link `id`.
    pub(crate) fn link(&self, id: usize) -> &LinkSlot {
        &self.links[id]
    }

    /// A record was stored: wake every link but `except`.
    pub(crate) fn notify_links(&self, except: Option<usize>) {
        for (id, p) in self.links.iter().enumerate() {
            if Some(id) != except {
                p.notify.notify_one();
            }
        }
    }

    /// The node's next deadline may have moved earlier: wake the task that keeps its timers.
    pub(crate) fn wake_timers(&self) {
        self.timers.notify_one();
    }

    /// Resolves when [`NodeHandle::wake_timers`] is called.
    pub(crate) async fn timers_moved(&self) {
        self.timers.notified().await;
    }

    /// What the admin door shows of the node, read with it locked once.
    pub(crate) fn view(&self) -> NodeView {
        let now = Instant::now();
        let mut node = self.lock();
        let links = self
            .links
            .iter()
            .enumerate()
            .map(|(id, p)| {
                let s = node.link_status(id);
                LinkView {
                    name: p.name.clone(),
                    up: s.up,
                    queue: s.queue,
                    last_heard: s.last_heard.map(|t| now.saturating_duration_since(t)),
                    reconciling: s.reconciling,
                    counts: s.counts,
                }
            })
            .collect();
        let w = node.watches();
        let watches = [w.watchers() as u64, w.len() as u64, w.dropped(), w.fired()];
        NodeView {
            records: node.len(),
            fingerprint: node.fingerprint(),
            links,
            refusals: node.refusals(),
            peer_refusals: node.peer_refusals(),
            cache_bytes: node.cache_bytes(),
            watches,
        }
    }
}

/// The node locked only while it says who may link, not across a greeting's cryptography.
impl Admit for NodeHandle {
    fn admit_hello(
        &self,
        name: &[u8],
        to: &[u8],
        authenticated: bool,
        now: Instant,
    ) -> Result<usize, Refusal> {
        self.lock().admit_hello(name, to, authenticated, now)
    }
}
