//! The connection budget the driver asks before it serves a connection ([`Admission`]): client
//! connections in all and per address, and a separate budget for links from neighbours, so peers
//! never compete with clients for a slot; and the file descriptors it fits into.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::node::limits::{Limit, Refusals};

/// The connection limits the driver enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most client connections at once.
    pub max_connections: usize,
    /// Most client connections at once from one address.
    pub max_connections_per_ip: usize,
    /// Most connections from neighbours (links and greetings under way) at once, apart from clients.
    pub max_peers: usize,
    /// Most connections over the client limit held at once for a short grace, to see whether they are
    /// a neighbour's link; beyond it, a connection over the limit is refused at once.
    pub max_pending: usize,
}

impl ConnLimits {
    /// The budget for a server with `neighbors` neighbours: a link per neighbour, room for a replacing
    /// link and a greeting or two each (a neighbour that restarts while its old link is not yet known
    /// dead), and a pool of 256 connections over the limit that may wait for their first line (only
    /// with neighbours) and for their `? busy` to be read.
    pub fn new(max_connections: usize, max_connections_per_ip: usize, neighbors: usize) -> Self {
        ConnLimits {
            max_connections,
            max_connections_per_ip,
            max_peers: 4 * neighbors,
            max_pending: 256,
        }
    }
}

/// Descriptors a server keeps for itself besides its connections: standard streams, the event loops'
/// pollers and wakers, listeners, log and store files, the Places client's pool, and the reserve of
/// the accept loops ([`Reserve`]).
pub const OWN_DESCRIPTORS: usize = 64;

impl ConnLimits {
    /// These limits fitted into `descriptors` file descriptors, with `admin` admin connections and
    /// `neighbors` outgoing links beside them: when they do not fit, fewer connections over the limit
    /// wait their grace (an eighth of what is left, at most [`ConnLimits::max_pending`]) and
    /// `max_connections` becomes what is left after that (at least 1). Returns the fitted limits and
    /// whether `max_connections` was lowered. A connection past the fitted limit is still answered
    /// `? busy` at once; past the descriptors it would wait unanswered in the kernel's queue.
    pub fn fit(self, descriptors: usize, admin: usize, neighbors: usize) -> (ConnLimits, bool) {
        let others = OWN_DESCRIPTORS + self.max_peers + neighbors + admin;
        let left = descriptors.saturating_sub(others);
        if self.max_connections.saturating_add(self.max_pending) <= left {
            return (self, false);
        }
        let max_pending = self.max_pending.min(left / 8).max(1);
        let max_connections = left.saturating_sub(max_pending).max(1);
        let lowered = max_connections < self.max_connections;
        let max_connections = max_connections.min(self.max_connections);
        (
            ConnLimits {
                max_connections,
                max_connections_per_ip: self.max_connections_per_ip.min(max_connections),
                max_pending,
                ..self
            },
            lowered,
        )
    }
}

/// The process's limit of open files: the soft `RLIMIT_NOFILE`, raised to the hard limit the first
/// time this is asked (as a server that must hold many sockets should; the soft limit is often 1024
/// while the hard one is far higher). `None` where it cannot be read.
#[cfg(unix)]
pub fn open_files_limit() -> Option<usize> {
    static LIMIT: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given, which lives for the call.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        // An unlimited hard limit cannot be the soft one on every system: a million is plenty.
        let want = if lim.rlim_max == libc::RLIM_INFINITY {
            1 << 20
        } else {
            lim.rlim_max
        };
        if want > lim.rlim_cur {
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: lim.rlim_max,
            };
            // SAFETY: setrlimit reads the struct it is given; raising the soft limit up to the hard
            // one needs no privilege.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                lim.rlim_cur = want;
            }
        }
        usize::try_from(lim.rlim_cur).ok()
    })
}

/// Where the open-file limit is not a thing this knows how to read: no bound.
#[cfg(not(unix))]
pub fn open_files_limit() -> Option<usize> {
    None
}

/// How many servers share this process's descriptors (`herd-server up` runs them all in one).
static SHARING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// Tells the servers of this process that `n` of them share its open-file limit: each fits its limits
/// into an equal part ([`descriptors_per_server`]).
pub fn share_descriptors(n: usize) {
    SHARING.store(n.max(1), std::sync::atomic::Ordering::Relaxed);
}

/// One server's part of the process's open-file limit (`None`: no known bound).
pub fn descriptors_per_server() -> Option<usize> {
    open_files_limit().map(|l| l / SHARING.load(std::sync::atomic::Ordering::Relaxed).max(1))
}

/// A descriptor held in reserve by an accept loop: when accepting fails for want of descriptors, it is
/// given up so that one connection can be accepted, told `? busy` and closed, and then taken again.
/// Without it, connections past the process's limit wait unanswered in the kernel's queue.
pub struct Reserve(Option<std::fs::File>);

impl Reserve {
    /// Takes the reserve (a handle on the null device).
    pub fn take() -> Reserve {
        Reserve(Self::open())
    }

    fn open() -> Option<std::fs::File> {
        #[cfg(unix)]
        let null = "/dev/null";
        #[cfg(not(unix))]
        let null = "NUL";
        std::fs::File::open(null).ok()
    }

    /// Gives the descriptor up; whether there was one to give.
    pub fn release(&mut self) -> bool {
        self.0.take().is_some()
    }

    /// Takes the descriptor again, if one is free.
    pub fn restore(&mut self) {
        if self.0.is_none() {
            self.0 = Self::open();
        }
    }
}

/// Whether an accept error means the process (or the system) is out of file descriptors.
pub fn out_of_descriptors(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// A connection over a client limit: which one, and the `? busy` line that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    /// Which limit.
    pub refusal: Limit,
    /// Its value.
    pub limit: usize,
}

impl Busy {
    /// The configuration key of the limit.
    pub fn key(&self) -> &'static str {
        match self.refusal {
            Limit::BusyPerIp => "max_connections_per_ip",
            Limit::BusyPeers => "peer links",
            _ => "max_connections",
        }
    }

    /// The whole answer with its `\n`, e.g. `? busy max_connections=10000`.
    ///
    /// # Format
    /// ```text
    /// ? busy max_connections=10000
    /// ? busy max_connections_per_ip=100
    /// ```
    pub fn line(&self) -> String {
        format!("? busy {}={}\n", self.key(), self.limit)
    }
}

/// The counts of a server's connections, by kind and address. The driver asks it before serving each
/// connection and tells it when one ends; it never sleeps, reads or writes.
#[derive(Debug)]
pub struct Admission {
    limits: ConnLimits,
    clients: usize,
    per_ip: HashMap<IpAddr, usize>,
    peers: usize,
    pending: usize,
    refusals: Refusals,
    /// The client limit was hit at least once (for a one-time notice).
    saturated: bool,
}

impl Admission {
    /// No connection yet.
    pub fn new(limits: ConnLimits) -> Self {
        Admission {
            limits,
            clients: 0,
            per_ip: HashMap::new(),
            peers: 0,
            pending: 0,
            refusals: Refusals::default(),
            saturated: false,
        }
    }

    /// A client connection from `ip`: counted, or the limit it is over.
    ///
    /// # Errors
    /// [`Busy`] names the limit (all connections, or this address's).
    pub fn admit_client(&mut self, ip: IpAddr) -> Result<(), Busy> {
        if self.clients >= self.limits.max_connections {
            return Err(Busy {
                refusal: Limit::Busy,
                limit: self.limits.max_connections,
            });
        }
        let n = self.per_ip.entry(ip).or_insert(0);
        if *n >= self.limits.max_connections_per_ip {
            return Err(Busy {
                refusal: Limit::BusyPerIp,
                limit: self.limits.max_connections_per_ip,
            });
        }
        *n += 1;
        self.clients += 1;
        Ok(())
    }

    /// A client connection from `ip` ended (or became a peer link).
    pub fn release_client(&mut self, ip: IpAddr) {
        self.clients = self.clients.saturating_sub(1);
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// A connection from a neighbour, outside the clients' budget: whether there is room.
    pub fn admit_peer(&mut self) -> bool {
        if self.peers >= self.limits.max_peers {
            return false;
        }
        self.peers += 1;
        true
    }

    /// A neighbour's connection ended.
    pub fn release_peer(&mut self) {
        self.peers = self.peers.saturating_sub(1);
    }

    /// A connection over the client limit may wait a short grace for a neighbour's greeting: whether
    /// there is room for one more such wait.
    pub fn hold_pending(&mut self) -> bool {
        if self.pending >= self.limits.max_pending {
            return false;
        }
        self.pending += 1;
        true
    }

    /// A pending connection is decided.
    pub fn release_pending(&mut self) {
        self.pending = self.pending.saturating_sub(1);
    }

    /// Counts a refusal. Returns `true` the first time the client connection limit refuses anything,
    /// so the driver can say so once where people look (the stderr summary).
    pub fn refused(&mut self, r: Limit) -> bool {
        self.refusals.count(r);
        let first = matches!(r, Limit::Busy | Limit::BusyPerIp) && !self.saturated;
        self.saturated |= first;
        first
    }

    /// The limits it admits by.
    pub fn limits(&self) -> ConnLimits {
        self.limits
    }

    /// The refusals counted so far.
    pub fn refusals(&self) -> Refusals {
        self.refusals
    }

    /// Client connections now.
    pub fn clients(&self) -> usize {
        self.clients
    }

    /// Neighbour connections now.
    pub fn peers(&self) -> usize {
        self.peers
    }

    /// Connections over the limit waiting for their first line now.
    pub fn pending(&self) -> usize {
        self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_fitted_into_the_descriptors() {
        let wanted = ConnLimits::new(10_000, 10_000, 2);
        let (same, lowered) = wanted.fit(1 << 20, 64, 2);
        assert_eq!((same, lowered), (wanted, false));
        // 256 descriptors: 64 own, 8 peers, 2 dials, 64 admin: 118 left, 14 of them for waits.
        let (fitted, lowered) = wanted.fit(256, 64, 2);
        assert!(lowered);
        assert_eq!(fitted.max_pending, 14);
        assert_eq!(fitted.max_connections, 104);
        assert_eq!(fitted.max_connections_per_ip, 104);
        assert_eq!(fitted.max_peers, wanted.max_peers);
        // Nothing left: still one client and one wait, never zero.
        let (tiny, _) = wanted.fit(10, 64, 2);
        assert_eq!((tiny.max_connections, tiny.max_pending), (1, 1));
        // A small limit that fits is kept as it is.
        let small = ConnLimits::new(50, 10, 0);
        assert_eq!(small.fit(1024, 0, 0), (small, false));
    }

    #[cfg(unix)]
    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_one() {
        let limit = open_files_limit().expect("a limit");
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: writes the struct given.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(limit as u64, lim.rlim_cur);
        if lim.rlim_max != libc::RLIM_INFINITY {
            assert_eq!(lim.rlim_cur, lim.rlim_max);
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn clients_are_bounded_in_all_and_per_address() {
        let mut a = Admission::new(ConnLimits::new(5, 2, 1));
        assert_eq!(a.admit_client(ip(1)), Ok(()));
        assert_eq!(a.admit_client(ip(1)), Ok(()));
        let busy = a.admit_client(ip(1)).unwrap_err();
        assert_eq!(busy.refusal, Limit::BusyPerIp);
        assert_eq!(busy.line(), "? busy max_connections_per_ip=2\n");
        for i in 2..5 {
            assert_eq!(a.admit_client(ip(i)), Ok(()));
        }
        let busy = a.admit_client(ip(9)).unwrap_err();
        assert_eq!(busy.line(), "? busy max_connections=5\n");
        assert_eq!(a.clients(), 5);
        a.release_client(ip(1));
        assert_eq!(a.admit_client(ip(9)), Ok(()));
        // Addresses with no connection are forgotten: the map is bounded by the connections.
        a.release_client(ip(9));
        a.release_client(ip(2));
        assert!(!a.per_ip.contains_key(&ip(9)) && !a.per_ip.contains_key(&ip(2)));
        assert_eq!(a.clients(), 3);
    }

    #[test]
    fn peers_and_pending_have_their_own_bounded_budgets() {
        let mut a = Admission::new(ConnLimits::new(1, 1, 2));
        assert_eq!(a.admit_client(ip(1)), Ok(()));
        assert!(a.admit_client(ip(2)).is_err());
        // Clients at their limit take nothing from the peers.
        for _ in 0..8 {
            assert!(a.admit_peer());
        }
        assert!(!a.admit_peer(), "4 per neighbour");
        a.release_peer();
        assert!(a.admit_peer());
        for _ in 0..256 {
            assert!(a.hold_pending());
        }
        assert!(!a.hold_pending());
        a.release_pending();
        assert!(a.hold_pending());
        // No neighbour: no peer budget.
        let mut lone = Admission::new(ConnLimits::new(1, 1, 0));
        assert!(!lone.admit_peer());
    }

    #[test]
    fn refusals_are_counted_and_the_first_busy_is_flagged_once() {
        let mut a = Admission::new(ConnLimits::new(1, 1, 0));
        assert!(!a.refused(Limit::LineTimeout));
        assert!(a.refused(Limit::Busy));
        assert!(!a.refused(Limit::BusyPerIp));
        assert!(!a.refused(Limit::Busy));
        let r = a.refusals();
        assert_eq!(r.get(Limit::Busy), 2);
        assert_eq!(r.to_string(), "busy=2 busy-per-ip=1 line-timeout=1");
        assert_eq!(Refusals::default().to_string(), "none");
        let mut other = Refusals::default();
        other.count(Limit::ClientCap);
        assert_eq!(r.merged(&other).get(Limit::ClientCap), 1);
    }
}
