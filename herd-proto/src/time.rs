//! Exact time: POSIX timestamps and signed differences, in integer nanoseconds.
//!
//! Floating point would round: `1479413884.392014450` has more significant digits than an `f64` holds,
//! and the AT time difference must be exact to the nanosecond.

#[allow(unused_imports)]
use crate::prelude::*;
use crate::Sink;
use core::fmt;
#[cfg(feature = "std")]
use std::time::{SystemTime, UNIX_EPOCH};

const NANOS_PER_SEC: u32 = 1_000_000_000;

/// A non-negative POSIX time with nanosecond resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    secs: u64,
    nanos: u32,
}

impl Timestamp {
    /// A timestamp from whole seconds and nanoseconds; `None` if `nanos` is one second or more.
    pub const fn new(secs: u64, nanos: u32) -> Option<Self> {
        if nanos < NANOS_PER_SEC {
            Some(Timestamp { secs, nanos })
        } else {
            None
        }
    }

    /// The system clock's time, or the epoch for a clock set before 1970.
    #[cfg(feature = "std")]
    #[cfg_attr(docsrs, doc(cfg(feature = "std")))]
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// Converts a [`SystemTime`]; times before the epoch become the epoch.
    #[cfg(feature = "std")]
    #[cfg_attr(docsrs, doc(cfg(feature = "std")))]
    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp {
                secs: d.as_secs(),
                nanos: d.subsec_nanos(),
            },
            Err(_) => Timestamp::default(),
        }
    }

    /// Whole seconds since the epoch.
    pub const fn secs(self) -> u64 {
        self.secs
    }

    /// Nanoseconds past [`secs`](Self::secs), below one billion.
    pub const fn subsec_nanos(self) -> u32 {
        self.nanos
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> i128 {
        self.secs as i128 * NANOS_PER_SEC as i128 + self.nanos as i128
    }
}

/// A signed time difference in nanoseconds: the AT line's "server receive time minus client time".
///
/// # Format
/// Always a sign, the whole seconds, a point and exactly nine digits; zero is positive:
/// ```text
/// +0.263873386   -0.500000000   +0.000000000   +1234567.000000001
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TimeDiff(i128);

impl TimeDiff {
    /// A difference of `nanos` nanoseconds.
    pub const fn from_nanos(nanos: i128) -> Self {
        TimeDiff(nanos)
    }

    /// `received - sent`, exactly.
    pub const fn between(received: Timestamp, sent: Timestamp) -> Self {
        TimeDiff(received.as_nanos() - sent.as_nanos())
    }

    /// The difference in nanoseconds.
    pub const fn as_nanos(self) -> i128 {
        self.0
    }

    /// Appends the wire form (see [Format](Self#format)) to `dst`.
    pub fn write_to(self, dst: &mut Vec<u8>) {
        self.write_into(dst);
    }

    /// How many bytes [`TimeDiff::write_to`] appends, found without writing them.
    pub fn wire_len(self) -> usize {
        let secs = self.0.unsigned_abs() / NANOS_PER_SEC as u128;
        // The sign, the seconds' digits (at least one), the point, nine digits of nanoseconds.
        1 + secs.checked_ilog10().map_or(1, |l| l as usize + 1) + 1 + 9
    }

    pub(crate) fn write_into(self, dst: &mut impl Sink) {
        dst.byte(if self.0 < 0 { b'-' } else { b'+' });
        let abs = self.0.unsigned_abs();
        // Every real difference fits in 64 bits (584 years); 128-bit division is many times slower.
        let (secs, nanos) = match u64::try_from(abs) {
            Ok(n) => (
                u128::from(n / NANOS_PER_SEC as u64),
                (n % NANOS_PER_SEC as u64) as u32,
            ),
            Err(_) => (
                abs / NANOS_PER_SEC as u128,
                (abs % NANOS_PER_SEC as u128) as u32,
            ),
        };
        write_u128(secs, dst);
        dst.byte(b'.');
        write_u64(u64::from(nanos), 9, dst);
    }
}

impl fmt::Display for TimeDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = Vec::with_capacity(48);
        self.write_to(&mut buf);
        // The wire form is ASCII by construction.
        f.write_str(core::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

/// Appends the decimal digits of `n` without allocating.
pub(crate) fn write_u128(n: u128, dst: &mut impl Sink) {
    const TEN_POW_19: u128 = 10_000_000_000_000_000_000;
    match u64::try_from(n) {
        Ok(small) => write_u64(small, 1, dst),
        // 128-bit division only for values past 64 bits, in 19-digit pieces.
        Err(_) => {
            write_u128(n / TEN_POW_19, dst);
            write_u64((n % TEN_POW_19) as u64, 19, dst);
        }
    }
}

/// Appends the decimal digits of `n`, zero-padded to at least `width` (at most 20) digits.
fn write_u64(mut n: u64, width: usize, dst: &mut impl Sink) {
    let mut digits = [b'0'; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    dst.put(&digits[i.min(digits.len() - width.min(20))..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_exactly() {
        let cases: [(i128, &str); 9] = [
            (263_873_386, "+0.263873386"),
            (999_999_999, "+0.999999999"),
            (1_000_000_000, "+1.000000000"),
            (-9_999_999_999, "-9.999999999"),
            (-500_000_000, "-0.500000000"),
            (0, "+0.000000000"),
            (1_234_567_000_000_001, "+1234567.000000001"),
            (-1, "-0.000000001"),
            (i128::MIN, "-170141183460469231731687303715.884105728"),
        ];
        for (nanos, text) in cases {
            assert_eq!(TimeDiff::from_nanos(nanos).to_string(), text);
            assert_eq!(TimeDiff::from_nanos(nanos).wire_len(), text.len(), "{text}");
        }
    }

    #[test]
    fn between_is_exact() {
        let sent = Timestamp::new(1_479_413_884, 392_014_450).unwrap();
        let recv = Timestamp::new(1_479_413_884, 655_887_836).unwrap();
        assert_eq!(TimeDiff::between(recv, sent).to_string(), "+0.263873386");
        assert_eq!(TimeDiff::between(sent, recv).to_string(), "-0.263873386");
        let far = Timestamp::new(u64::MAX, 999_999_999).unwrap();
        assert_eq!(
            TimeDiff::between(Timestamp::default(), far).as_nanos(),
            -(u64::MAX as i128 * 1_000_000_000 + 999_999_999)
        );
    }
}
