//! The gate of a server: the connection budget every connection is admitted by ([`Admission`]), a
//! connection's place in it ([`AdmissionSlot`]), the connection numbers, and the rate-limited
//! warnings about what comes in ([`Warnings`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tracing::{info, warn};

use crate::config::Limits;
use crate::driver::admission::Admission;
use crate::driver::warnings::{Warn, WarnKind, Warnings, WARN_PERIOD};
use crate::log::SUMMARY;
use crate::node::limits::{Limit, Refusals};

/// Admission, connection numbers and warnings of one server.
pub(crate) struct Gate {
    /// The server's name, for the summary.
    name: String,
    /// The configured `max_connections` and `max_connections_per_ip`, for the summary.
    configured: (usize, usize),
    /// Connection counts by kind and address, and the refusals of the driver.
    admission: Mutex<Admission>,
    /// Repeated warnings, rate-limited per kind and peer address.
    warnings: Mutex<Warnings>,
    next_conn: AtomicU64,
}

impl Gate {
    /// The gate of server `name` configured with `limits`, admitting by `admission`.
    pub(crate) fn new(name: &str, limits: &Limits, admission: Admission) -> Self {
        Gate {
            name: name.to_owned(),
            configured: (limits.max_connections, limits.max_connections_per_ip),
            admission: Mutex::new(admission),
            warnings: Mutex::new(Warnings::default()),
            next_conn: AtomicU64::new(1),
        }
    }

    /// A new connection's number, for the log.
    pub(crate) fn conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// The connection budget and its counts.
    pub(crate) fn admission(&self) -> MutexGuard<'_, Admission> {
        self.admission.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The driver's refusals so far (`? busy`, line time-outs).
    pub(crate) fn refusals(&self) -> Refusals {
        self.admission().refusals()
    }

    /// Counts refusal `why` of the connection from `addr`, and says on the summary the first time the
    /// client connection limit refuses one.
    pub(crate) fn refused(&self, why: Limit, addr: SocketAddr) {
        let first = self.admission().refused(why);
        if first {
            let (max, per_ip) = self.configured;
            info!(target: SUMMARY,
                "{} at its connection limit (max_connections={max}, max_connections_per_ip={per_ip}): refusing with `? busy` (first: {addr})",
                self.name);
        }
    }

    /// Whether to log a warning of `kind` about `addr` now (the first few of a period are; the rest
    /// are counted and summed up once a period, [`Gate::flush_warnings`]).
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
                s.count, s.kind.as_str(), WARN_PERIOD.as_secs());
        }
    }

    /// Warnings logged and suppressed so far, by kind.
    pub(crate) fn warning_counts(&self) -> Vec<(WarnKind, u64, u64)> {
        let w = self.warnings.lock().unwrap_or_else(|p| p.into_inner());
        WarnKind::ALL
            .iter()
            .map(|&k| (k, w.logged(k), w.suppressed(k)))
            .collect()
    }
}

/// A connection's place in the budget; given back when dropped.
pub(crate) struct AdmissionSlot {
    gate: Arc<Gate>,
    kind: SlotKind,
}

/// Which part of the budget an [`AdmissionSlot`] holds.
pub(crate) enum SlotKind {
    /// A client connection from this address.
    Client(IpAddr),
    /// A neighbour's link.
    Peer,
    /// A connection over the client limit, waiting to show a neighbour's greeting.
    Pending,
}

impl AdmissionSlot {
    /// The place of `kind` in `gate`'s budget, already counted there.
    pub(crate) fn new(gate: &Arc<Gate>, kind: SlotKind) -> Self {
        AdmissionSlot {
            gate: gate.clone(),
            kind,
        }
    }

    /// A client connection turned out to be a neighbour's link: it moves to the peers' budget (when
    /// there is room), so links never hold client slots.
    pub(crate) fn into_peer(mut self) -> AdmissionSlot {
        if let SlotKind::Client(ip) = self.kind {
            let mut a = self.gate.admission();
            if a.admit_peer() {
                a.release_client(ip);
                self.kind = SlotKind::Peer;
            }
        }
        self
    }
}

impl Drop for AdmissionSlot {
    fn drop(&mut self) {
        let mut a = self.gate.admission();
        match self.kind {
            SlotKind::Client(ip) => a.release_client(ip),
            SlotKind::Peer => a.release_peer(),
            SlotKind::Pending => a.release_pending(),
        }
    }
}
