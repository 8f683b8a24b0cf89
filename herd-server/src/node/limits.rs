//! Limits: the admission rules that protect a server from hostile or broken clients (PROTOCOL.md §1, §2).
//!
//! Two kinds live here, both without I/O so they can be tested (and attacked) without sockets:
//!
//! - the rules that are protocol and belong to the node: an IAMAT too far ahead of the server's clock
//!   is invalid ([`too_far_ahead`]), and past [`NodeLimits::max_clients`] an IAMAT for a new client is
//!   invalid ([`crate::node::Node`] applies both where a record is born; a record from a peer is never
//!   judged by them, so the herd converges);
//! - the connection budget the driver asks before it serves a connection ([`Admission`]): client
//!   connections in all and per address, and a separate budget for links from neighbours, so peers
//!   never compete with clients for a slot.
//!
//! Every refusal is counted in [`Refusals`]; the driver logs each one once per connection.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use herd_proto::Timestamp;

/// The node's share of `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLimits {
    /// An IAMAT whose time is further ahead of the receive time than this is invalid.
    pub max_future: Duration,
    /// Most clients that a client line may add; updates of known clients and records from peers are
    /// taken past it.
    pub max_clients: usize,
    /// The longest client line (`[limits] max_line`); a peer line may be about twice that (a record
    /// carries a client id of up to a whole client line, plus the server fields): see
    /// [`NodeLimits::max_peer_line`].
    pub max_line: usize,
    /// The longest client id, in bytes (`[limits] max_client_id`): a longer one is refused from a
    /// client and from a peer alike.
    pub max_client_id: usize,
    /// The cache's byte budget (`[limits] max_cache_bytes`): the AT lines held plus
    /// [`ENTRY_OVERHEAD`] a client. A record that would take the cache past it is refused.
    pub max_cache_bytes: u64,
}

/// What a held client costs the cache besides its AT line (entry, table slot, trie chain), for the
/// byte budget.
pub const ENTRY_OVERHEAD: u64 = 96;

/// How far a record from a peer may be ahead of this server's clock beyond `max_future`: the clock
/// skew allowed between the herd's servers. A record from a peer whose client time is further ahead
/// of the receive time than `max_future` plus this is refused, like a client's.
pub const SKEW_ALLOWANCE: Duration = Duration::from_secs(60);

impl NodeLimits {
    /// The longest line a link may carry: a record whose client id is a whole client line, with room
    /// for the server's fields. A longer line closes the link.
    pub fn max_peer_line(&self) -> usize {
        self.max_line.saturating_mul(2).saturating_add(256)
    }
}

impl Default for NodeLimits {
    fn default() -> Self {
        NodeLimits {
            max_future: Duration::from_secs(86_400),
            max_clients: 10_000_000,
            max_line: herd_proto::DEFAULT_MAX_LINE,
            max_client_id: herd_proto::DEFAULT_MAX_LINE,
            max_cache_bytes: 4 << 30,
        }
    }
}

impl From<&crate::config::Limits> for NodeLimits {
    fn from(l: &crate::config::Limits) -> Self {
        NodeLimits {
            max_future: l.max_future,
            max_clients: l.max_clients,
            max_line: l.max_line,
            max_client_id: l.max_client_id,
            max_cache_bytes: l.max_cache_bytes,
        }
    }
}

/// Whether client time `time` is further ahead of the receive time `now` than `max_future`: such a
/// record would win over every honest update of its client for as long as its clock is wrong (a time
/// of `18446744073709551615` pins it for ever), so it is refused where it is born.
pub fn too_far_ahead(time: Timestamp, now: Timestamp, max_future: Duration) -> bool {
    time.as_nanos() - now.as_nanos() > max_future.as_nanos() as i128
}

/// Why something was refused. Each has a counter in [`Refusals`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// A connection over `max_connections`.
    Busy,
    /// A connection over `max_connections_per_ip`.
    BusyPerIp,
    /// A connection over the limit that said it is a peer, but the peers' budget was spent.
    BusyPeers,
    /// A line that did not end within `line_timeout_ms` (or a reply the client did not take).
    LineTimeout,
    /// An IAMAT further ahead of the clock than `max_future_ms`.
    FutureTime,
    /// An IAMAT for a new client past `max_clients`.
    ClientCap,
    /// A client id longer than `max_client_id` bytes.
    ClientId,
    /// A record that would take the cache past `max_cache_bytes`.
    CacheBytes,
}

impl Limit {
    /// Every kind, in the order of the summary.
    pub const ALL: [Limit; 8] = [
        Limit::Busy,
        Limit::BusyPerIp,
        Limit::BusyPeers,
        Limit::LineTimeout,
        Limit::FutureTime,
        Limit::ClientCap,
        Limit::ClientId,
        Limit::CacheBytes,
    ];

    /// A short name for logs and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Busy => "busy",
            Limit::BusyPerIp => "busy-per-ip",
            Limit::BusyPeers => "busy-peers",
            Limit::LineTimeout => "line-timeout",
            Limit::FutureTime => "future-time",
            Limit::ClientCap => "client-cap",
            Limit::ClientId => "client-id",
            Limit::CacheBytes => "cache-bytes",
        }
    }

    fn index(self) -> usize {
        Limit::ALL.iter().position(|&r| r == self).unwrap_or(0)
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many of each refusal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refusals([u64; Limit::ALL.len()]);

impl Refusals {
    /// Counts one `r`.
    pub fn count(&mut self, r: Limit) {
        self.0[r.index()] += 1;
    }

    /// How many `r` so far.
    pub fn get(&self, r: Limit) -> u64 {
        self.0[r.index()]
    }

    /// Both counts added.
    pub fn merged(mut self, other: &Refusals) -> Refusals {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
        self
    }

    /// How many of every kind.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Whether nothing was refused.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&n| n == 0)
    }
}

impl fmt::Display for Refusals {
    /// `busy=3 line-timeout=1` (the kinds that happened), or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut sep = "";
        for r in Limit::ALL {
            let n = self.get(r);
            if n > 0 {
                write!(f, "{sep}{r}={n}")?;
                sep = " ";
            }
        }
        Ok(())
    }
}

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

/// A warning that repeats, rate-limited per kind and peer address ([`Warnings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WarnKind {
    /// A peer greeting refused (a stranger, a bad proof, the wrong side…).
    Greeting,
    /// A dial of a neighbour refused or failed.
    Dial,
    /// A peer line refused or out of place on a running link (invalid, unexpected, a refused
    /// record), or a link closed for breaking the protocol.
    PeerLine,
    /// A greeting refused because the link by its name is up (two servers claim a name).
    NameClash,
}

impl WarnKind {
    /// Every kind, in the order of `/metrics`.
    pub const ALL: [WarnKind; 4] = [
        WarnKind::Greeting,
        WarnKind::Dial,
        WarnKind::PeerLine,
        WarnKind::NameClash,
    ];

    /// Its name in summaries and `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            WarnKind::Greeting => "greeting",
            WarnKind::Dial => "dial",
            WarnKind::PeerLine => "peer-line",
            WarnKind::NameClash => "name-clash",
        }
    }

    fn index(self) -> usize {
        WarnKind::ALL.iter().position(|&k| k == self).unwrap_or(0)
    }
}

/// Warnings of one kind from one address logged before the rest of the period is summed up.
pub const WARN_BURST: u32 = 5;
/// How often a summary of the warnings suppressed is written (at most once a period per kind and
/// address).
pub const WARN_PERIOD: Duration = Duration::from_secs(10);
/// Most kinds × addresses tracked at once; past it, new addresses share one slot (so a flood from
/// many addresses cannot grow the table).
const WARN_SLOTS: usize = 4096;

/// What to do with one warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warn {
    /// Log it (one of the first [`WARN_BURST`] of its period).
    Log,
    /// Do not: it is counted, and summed up when the period ends.
    Suppress,
}

#[derive(Debug, Clone, Copy)]
struct WarnSlot {
    since: std::time::Instant,
    logged: u32,
    suppressed: u64,
}

/// Rate-limits repeated warnings per kind and peer address, as syslog and journald do: the first
/// [`WARN_BURST`] of a [`WARN_PERIOD`] are logged, the rest counted, and one summary a period says
/// how many were suppressed ([`Warnings::flush`]). Sans-IO: the caller passes the time.
#[derive(Debug, Default)]
pub struct Warnings {
    slots: HashMap<(WarnKind, Option<IpAddr>), WarnSlot>,
    logged: [u64; WarnKind::ALL.len()],
    suppressed: [u64; WarnKind::ALL.len()],
}

/// A summary to log: `count` warnings of `kind` from `addr` (`None`: addresses past the table's
/// bound) were suppressed in the period that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suppressed {
    /// The kind.
    pub kind: WarnKind,
    /// The address.
    pub addr: Option<IpAddr>,
    /// How many.
    pub count: u64,
}

impl Warnings {
    /// Whether to log a warning of `kind` from `addr` at `now`. A period that ended with
    /// suppressed warnings is summed up by [`Warnings::flush`] first, so call it before.
    pub fn check(&mut self, kind: WarnKind, addr: IpAddr, now: std::time::Instant) -> Warn {
        let key = if self.slots.len() < WARN_SLOTS || self.slots.contains_key(&(kind, Some(addr))) {
            (kind, Some(addr))
        } else {
            (kind, None)
        };
        let slot = self.slots.entry(key).or_insert(WarnSlot {
            since: now,
            logged: 0,
            suppressed: 0,
        });
        if slot.logged < WARN_BURST {
            slot.logged += 1;
            self.logged[kind.index()] += 1;
            Warn::Log
        } else {
            slot.suppressed += 1;
            self.suppressed[kind.index()] += 1;
            Warn::Suppress
        }
    }

    /// The summaries of the periods that ended by `now` (one per kind and address that suppressed
    /// something); their slots start afresh.
    pub fn flush(&mut self, now: std::time::Instant) -> Vec<Suppressed> {
        let mut out = Vec::new();
        self.slots.retain(|&(kind, addr), slot| {
            if now.saturating_duration_since(slot.since) < WARN_PERIOD {
                return true;
            }
            if slot.suppressed > 0 {
                out.push(Suppressed {
                    kind,
                    addr,
                    count: slot.suppressed,
                });
            }
            false
        });
        out
    }

    /// Warnings of `kind` logged so far.
    pub fn logged(&self, kind: WarnKind) -> u64 {
        self.logged[kind.index()]
    }

    /// Warnings of `kind` suppressed so far.
    pub fn suppressed(&self, kind: WarnKind) -> u64 {
        self.suppressed[kind.index()]
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

    #[test]
    fn the_future_bound_is_exact() {
        let now = Timestamp::new(1000, 0).unwrap();
        let day = Duration::from_secs(86_400);
        assert!(!too_far_ahead(
            Timestamp::new(1000 + 86_400, 0).unwrap(),
            now,
            day
        ));
        assert!(too_far_ahead(
            Timestamp::new(1000 + 86_400, 1).unwrap(),
            now,
            day
        ));
        assert!(too_far_ahead(
            Timestamp::new(u64::MAX, 999_999_999).unwrap(),
            now,
            day
        ));
        assert!(!too_far_ahead(Timestamp::new(0, 0).unwrap(), now, day));
        assert!(too_far_ahead(
            Timestamp::new(1000, 1).unwrap(),
            now,
            Duration::ZERO
        ));
    }

    #[test]
    fn repeated_warnings_are_logged_a_few_times_then_summed_up_once_a_period() {
        let mut w = Warnings::default();
        let t0 = std::time::Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let logged = (0..20_000)
            .filter(|_| w.check(WarnKind::Greeting, a, t0) == Warn::Log)
            .count();
        assert_eq!(logged, WARN_BURST as usize);
        assert_eq!(w.check(WarnKind::Greeting, b, t0), Warn::Log, "per address");
        assert_eq!(w.check(WarnKind::PeerLine, a, t0), Warn::Log, "per kind");
        assert!(w.flush(t0 + WARN_PERIOD / 2).is_empty());
        let summaries = w.flush(t0 + WARN_PERIOD);
        assert_eq!(
            summaries,
            vec![Suppressed {
                kind: WarnKind::Greeting,
                addr: Some(a),
                count: 20_000 - u64::from(WARN_BURST)
            }]
        );
        assert_eq!(
            w.suppressed(WarnKind::Greeting),
            20_000 - u64::from(WARN_BURST)
        );
        assert_eq!(w.logged(WarnKind::Greeting), u64::from(WARN_BURST) + 1);
        // A new period logs again.
        assert_eq!(w.check(WarnKind::Greeting, a, t0 + WARN_PERIOD), Warn::Log);
        // Many addresses share one slot past the table's bound.
        for i in 0..10_000u32 {
            w.check(WarnKind::Dial, IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(w.slots.len() <= WARN_SLOTS + 1);
    }
}
