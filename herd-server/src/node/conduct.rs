//! A neighbour's conduct: what a link that keeps sending what is refused costs it (PROTOCOL.md §5).
//!
//! Every record a peer sends is admitted like a client's, and every reconciliation line is answered
//! at most once per exchange; but each refusal is paid for only after the line was read, decrypted
//! and parsed, on the cores the honest clients share. A peer holding the herd's secret could keep
//! sending what is refused at full speed, and each refusal would be cheap but never-ending. So a link
//! that keeps doing it is *misbehaving*:
//! - past a small count of refusals in a period ([`Strikes`]) the node closes it, with one warning
//!   naming the peer;
//! - a link closed for misbehaving, for breaking a reconciliation, for asking more than a link may
//!   cost or for a line too long has its name *quarantined* ([`Quarantine`]): greetings claiming it are
//!   refused before any proof is checked (`HERD-REFUSED quarantined`), and the dialling side does not
//!   dial it, for a period that doubles each time (capped) and is forgiven after a clean spell;
//! - a link-up may open only a few reconciliation exchanges in a window ([`Exchanges`]): the periodic
//!   check runs every thirty seconds, so a peer opening them back to back is asking for the whole
//!   cache (or a full walk) over and over.
//!
//! An insider's attack then costs the herd a short burst each quarantine, not a steady load.
//!
//! What counts, and how much: a record refused for a time too far ahead or an id too long is a
//! *hard* strike — an honest server admitted it under the same bounds and would never send it (the
//! skew allowance covers the clocks). A record refused for the client cap or the byte budget, one
//! naming a server outside the herd, and a line that is no peer message this server reads are *soft*
//! strikes: an honest neighbour sends them too (its cache is a little fuller than this one, its
//! config names a new member first, it speaks a later version), so their bound is far higher. A
//! herd whose servers' caps or budgets differ by thousands of clients may see a link quarantined by
//! the server with less room: give the servers of a herd the same limits.

use std::time::{Duration, Instant};

/// The period over which a link-up's strikes are counted.
pub const STRIKE_PERIOD: Duration = Duration::from_secs(10);
/// Hard strikes (records too far ahead, ids too long) a link-up may earn in a period.
pub const HARD_STRIKES: u32 = 16;
/// Soft strikes (records past the cap or the budget, naming outsiders; unknown lines) a link-up may
/// earn in a period.
pub const SOFT_STRIKES: u32 = 4_096;
/// The first quarantine of a name.
pub const QUARANTINE_MIN: Duration = Duration::from_millis(500);
/// The longest quarantine: a name misbehaving without end is heard from once a minute.
pub const QUARANTINE_MAX: Duration = Duration::from_secs(60);
/// A name that went this long without a fault starts again at [`QUARANTINE_MIN`].
pub const QUARANTINE_FORGIVEN: Duration = Duration::from_secs(300);
/// Exchanges the other side may open on one link-up within [`EXCHANGE_WINDOW`] (the link-up
/// catch-up among them).
pub const EXCHANGES: usize = 4;
/// See [`EXCHANGES`].
pub const EXCHANGE_WINDOW: Duration = Duration::from_secs(10);

/// How bad a refusal is (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strike {
    /// An honest neighbour never sends it.
    Hard,
    /// An honest neighbour may send it, rarely.
    Soft,
}

/// A link-up's strikes in the current period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Strikes {
    /// Hard strikes this period.
    pub hard: u32,
    /// Soft strikes this period.
    pub soft: u32,
    since: Option<Instant>,
}

impl Strikes {
    /// Counts one strike at `now`; whether the link is now misbehaving (past a bound this period).
    pub fn strike(&mut self, kind: Strike, now: Instant) -> bool {
        if self
            .since
            .is_none_or(|at| now.saturating_duration_since(at) >= STRIKE_PERIOD)
        {
            *self = Strikes {
                since: Some(now),
                ..Strikes::default()
            };
        }
        match kind {
            Strike::Hard => self.hard += 1,
            Strike::Soft => self.soft += 1,
        }
        self.hard >= HARD_STRIKES || self.soft >= SOFT_STRIKES
    }
}

/// A neighbour name's quarantine, kept across its link-ups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quarantine {
    until: Option<Instant>,
    length: Duration,
    last_fault: Option<Instant>,
    /// Times the name was quarantined since the server started.
    pub count: u64,
}

impl Quarantine {
    /// The link of this name faulted at `now`: quarantines it, for twice as long as the last time
    /// (from [`QUARANTINE_MIN`] up to [`QUARANTINE_MAX`]; after [`QUARANTINE_FORGIVEN`] without a fault,
    /// from the start). Returns how long.
    pub fn fault(&mut self, now: Instant) -> Duration {
        let forgiven = self
            .last_fault
            .is_none_or(|at| now.saturating_duration_since(at) >= QUARANTINE_FORGIVEN);
        self.length = if forgiven {
            QUARANTINE_MIN
        } else {
            (self.length * 2).clamp(QUARANTINE_MIN, QUARANTINE_MAX)
        };
        self.last_fault = Some(now);
        self.until = Some(now + self.length);
        self.count += 1;
        self.length
    }

    /// Whether greetings claiming the name are refused at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    /// When the quarantine ends (`None`: there is none).
    pub fn until(&self) -> Option<Instant> {
        self.until
    }
}

/// The exchanges the other side opened on one link-up, the latest [`EXCHANGES`] of them.
#[derive(Debug, Clone, Default)]
pub struct Exchanges {
    opened: std::collections::VecDeque<Instant>,
}

impl Exchanges {
    /// The other side opens an exchange at `now`: whether it may (no more than [`EXCHANGES`] within
    /// [`EXCHANGE_WINDOW`]).
    pub fn open(&mut self, now: Instant) -> bool {
        if self.opened.len() == EXCHANGES {
            if self
                .opened
                .front()
                .is_some_and(|&at| now.saturating_duration_since(at) < EXCHANGE_WINDOW)
            {
                return false;
            }
            self.opened.pop_front();
        }
        self.opened.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strikes_past_a_bound_in_a_period_mark_a_link_misbehaving_and_a_new_period_starts_afresh() {
        let start = Instant::now();
        let mut s = Strikes::default();
        for _ in 1..HARD_STRIKES {
            assert!(!s.strike(Strike::Hard, start));
        }
        assert!(s.strike(Strike::Hard, start));
        let mut s = Strikes::default();
        for i in 0..10 * HARD_STRIKES {
            // Spread thinly over periods, hard strikes never add up.
            let at = start + STRIKE_PERIOD * (i / (HARD_STRIKES - 1));
            assert!(!s.strike(Strike::Hard, at), "{i}");
        }
        let mut s = Strikes::default();
        for _ in 1..SOFT_STRIKES {
            assert!(!s.strike(Strike::Soft, start));
        }
        assert!(s.strike(Strike::Soft, start));
    }

    #[test]
    fn a_quarantine_doubles_up_to_its_cap_and_is_forgiven_after_a_clean_spell() {
        let start = Instant::now();
        let mut q = Quarantine::default();
        assert!(!q.holds(start));
        let mut at = start;
        let mut lengths = Vec::new();
        for _ in 0..12 {
            let d = q.fault(at);
            assert!(q.holds(at) && q.holds(at + d - Duration::from_millis(1)));
            assert!(!q.holds(at + d));
            lengths.push(d);
            at += d;
        }
        assert_eq!(lengths[0], QUARANTINE_MIN);
        assert_eq!(lengths[1], QUARANTINE_MIN * 2);
        assert_eq!(*lengths.last().unwrap(), QUARANTINE_MAX);
        assert_eq!(q.count, 12);
        assert_eq!(q.fault(at + QUARANTINE_FORGIVEN), QUARANTINE_MIN);
    }

    #[test]
    fn a_link_up_opens_a_few_exchanges_a_window() {
        let start = Instant::now();
        let mut x = Exchanges::default();
        for _ in 0..EXCHANGES {
            assert!(x.open(start));
        }
        assert!(!x.open(start + EXCHANGE_WINDOW - Duration::from_millis(1)));
        assert!(x.open(start + EXCHANGE_WINDOW));
        // The periodic check's pace is always allowed.
        let mut x = Exchanges::default();
        for i in 0..100 {
            assert!(x.open(start + crate::node::CHECK_EVERY * i));
        }
    }
}
