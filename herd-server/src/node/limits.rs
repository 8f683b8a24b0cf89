//! Limits: the node's rules that protect a server from hostile or broken clients (PROTOCOL.md §1, §2),
//! without I/O so they can be tested (and attacked) without sockets: an IAMAT too far ahead of the
//! server's clock is invalid ([`too_far_ahead`]), and past [`NodeLimits::max_clients`] an IAMAT for a
//! new client is invalid ([`crate::node::Node`] applies both where a record is born; a record from a
//! peer is never judged by them, so the herd converges).
//!
//! Every refusal is counted in [`Refusals`]; the driver logs each one once per connection. The
//! driver's connection budget is [`crate::driver::admission`].

use std::fmt;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
