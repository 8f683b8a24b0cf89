//! Repeated warnings, rate-limited per kind and peer address ([`Warnings`]): the first few of a
//! period are logged, the rest counted and summed up once a period.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

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
