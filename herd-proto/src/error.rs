//! The error returned when a line does not follow the protocol.

#[allow(unused_imports)]
use crate::prelude::*;
use core::fmt;

/// What was wrong with a line.
///
/// The variants are coarse on purpose: a server answers every invalid line the same way (`? <line>`),
/// so the kind exists for logs, tools and tests. New kinds may be added in minor releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The line holds no field at all (only white space).
    Empty,
    /// The first field is not a command this parser knows (commands are case-sensitive).
    UnknownCommand,
    /// Fewer fields than the command needs.
    MissingField,
    /// More fields than the command takes.
    ExtraField,
    /// The location is not `[+-]D+(.D+)?[+-]D+(.D+)?`.
    Location,
    /// The latitude is outside -90..=90.
    LatitudeRange,
    /// The longitude is outside -180..=180.
    LongitudeRange,
    /// The client time is not `D+(.D{1,9})?`.
    Time,
    /// The client time has more than nine fractional digits.
    TimePrecision,
    /// The client time's seconds do not fit in 64 bits.
    TimeRange,
    /// The radius is not `D+(.D+)?`.
    Radius,
    /// The radius is not greater than 0 and at most 50 km.
    RadiusRange,
    /// The bound is not an integer `D+`.
    Bound,
    /// The bound is above 20.
    BoundRange,
    /// The time difference is not `[+-]D+.DDDDDDDDD`.
    TimeDiff,
    /// The time difference does not fit in 128-bit nanoseconds.
    TimeDiffRange,
    /// A peer greeting names a protocol version this parser does not speak.
    Version,
    /// A count is not an integer `D+` or does not fit in 64 bits.
    Count,
    /// A key range or fingerprint of reconciliation is not lowercase hex of at most 16 digits, or a
    /// reconciliation line has too many or too few of them.
    Hex,
    /// A reconciliation line's short fingerprints, ids or cells are not unpadded base64url of the
    /// right length.
    Base64,
}

impl ErrorKind {
    /// A short human description, without the position.
    pub fn description(self) -> &'static str {
        match self {
            ErrorKind::Empty => "empty line",
            ErrorKind::UnknownCommand => "unknown command",
            ErrorKind::MissingField => "missing field",
            ErrorKind::ExtraField => "unexpected extra field",
            ErrorKind::Location => "location is not [+-]D+(.D+)?[+-]D+(.D+)?",
            ErrorKind::LatitudeRange => "latitude outside -90..=90",
            ErrorKind::LongitudeRange => "longitude outside -180..=180",
            ErrorKind::Time => "time is not D+(.D{1,9})?",
            ErrorKind::TimePrecision => "time has more than nine fractional digits",
            ErrorKind::TimeRange => "time seconds do not fit in 64 bits",
            ErrorKind::Radius => "radius is not D+(.D+)?",
            ErrorKind::RadiusRange => "radius not greater than 0 and at most 50 km",
            ErrorKind::Bound => "bound is not an integer",
            ErrorKind::BoundRange => "bound above 20",
            ErrorKind::TimeDiff => "time difference is not [+-]D+.DDDDDDDDD",
            ErrorKind::TimeDiffRange => "time difference out of range",
            ErrorKind::Version => "unsupported peer protocol version",
            ErrorKind::Count => "count is not a 64-bit integer",
            ErrorKind::Hex => "not a key range or fingerprint (lowercase hex, at most 16 digits)",
            ErrorKind::Base64 => "not unpadded base64url of the right length",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

/// A line that does not parse: what went wrong and at which byte of the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{kind} at byte {offset}")]
pub struct ParseError {
    /// Byte offset into the parsed line where the offending field (or byte) starts.
    pub offset: usize,
    /// What was wrong.
    pub kind: ErrorKind,
}

impl ParseError {
    pub(crate) fn new(offset: usize, kind: ErrorKind) -> Self {
        ParseError { offset, kind }
    }
}
