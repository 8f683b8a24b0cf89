//! Typed client messages and AT records, borrowed from the line they were parsed from.

#[allow(unused_imports)]
use crate::prelude::*;
use crate::Sink;
use alloc::borrow::Cow;
use core::cmp::Ordering;
use core::fmt;

use crate::error::ParseError;
use crate::parse;
use crate::time::{TimeDiff, Timestamp};

/// A line a client sends: `IAMAT` or `WHATSAT`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Message<'a> {
    /// `IAMAT <client> <location> <time>`
    IAmAt(IAmAt<'a>),
    /// `WHATSAT <client> <radius> <bound>`
    WhatsAt(WhatsAt<'a>),
}

impl<'a> Message<'a> {
    /// Parses one client line (without its `\n`; surrounding white space is allowed).
    ///
    /// # Errors
    /// A [`ParseError`] with the offset of the first byte that breaks the grammar of PROTOCOL.md §2–3.
    /// An AT line is an error here: records are accepted only on peer links (see [`PeerMessage`]).
    ///
    /// [`PeerMessage`]: crate::PeerMessage
    ///
    /// # Example
    /// ```
    /// use herd_proto::{ErrorKind, Message};
    ///
    /// let Ok(Message::WhatsAt(q)) = Message::parse(b"WHATSAT kiwi.cs.ucla.edu 10 5") else {
    ///     panic!("not a WHATSAT")
    /// };
    /// assert_eq!((&*q.client, q.radius.km(), q.bound), (&b"kiwi.cs.ucla.edu"[..], 10.0, 5));
    /// // The error says what and where: the bound is at most 20.
    /// let err = Message::parse(b"WHATSAT kiwi 10 21").unwrap_err();
    /// assert_eq!((err.kind, err.offset), (ErrorKind::BoundRange, 16));
    /// ```
    pub fn parse(line: &'a [u8]) -> Result<Self, ParseError> {
        parse::message(line)
    }

    /// Appends the wire form, without the line terminator.
    pub fn write_to(&self, dst: &mut Vec<u8>) {
        self.write_into(dst);
    }

    pub(crate) fn write_into(&self, dst: &mut impl Sink) {
        match self {
            Message::IAmAt(m) => m.write_into(dst),
            Message::WhatsAt(m) => m.write_into(dst),
        }
    }

    /// The wire form as a new vector, without the line terminator.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(80);
        self.write_to(&mut v);
        v
    }

    /// Copies every borrowed field, so the message can outlive the input line.
    pub fn into_owned(self) -> Message<'static> {
        match self {
            Message::IAmAt(m) => Message::IAmAt(m.into_owned()),
            Message::WhatsAt(m) => Message::WhatsAt(m.into_owned()),
        }
    }
}

impl fmt::Display for Message<'_> {
    /// The wire form, with invalid UTF-8 in client ids replaced (for humans; use `write_to` for bytes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

/// A client reporting where it is.
///
/// # Format
/// ```text
/// IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IAmAt<'a> {
    /// The client id: one or more bytes that are not white space (not necessarily UTF-8).
    pub client: Cow<'a, [u8]>,
    /// Where the client says it is.
    pub location: Location<'a>,
    /// When the client says it was there.
    pub time: ClientTime<'a>,
}

impl IAmAt<'_> {
    /// Appends `IAMAT <client> <location> <time>`.
    pub fn write_to(&self, dst: &mut Vec<u8>) {
        self.write_into(dst);
    }

    pub(crate) fn write_into(&self, dst: &mut impl Sink) {
        dst.put(b"IAMAT ");
        dst.put(&self.client);
        dst.byte(b' ');
        dst.put(self.location.as_bytes());
        dst.byte(b' ');
        dst.put(self.time.as_bytes());
    }

    /// Copies every borrowed field.
    pub fn into_owned(self) -> IAmAt<'static> {
        IAmAt {
            client: Cow::Owned(self.client.into_owned()),
            location: self.location.into_owned(),
            time: self.time.into_owned(),
        }
    }
}

/// A client asking what is near another client.
///
/// # Format
/// ```text
/// WHATSAT kiwi.cs.ucla.edu 10 5
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WhatsAt<'a> {
    /// The client whose location is the centre of the search.
    pub client: Cow<'a, [u8]>,
    /// The search radius in kilometres (greater than 0, at most 50).
    pub radius: Radius<'a>,
    /// The most places to return, 0 to 20.
    pub bound: u8,
}

impl WhatsAt<'_> {
    /// The largest bound the protocol allows.
    pub const MAX_BOUND: u8 = 20;

    /// Appends `WHATSAT <client> <radius> <bound>`.
    pub fn write_to(&self, dst: &mut Vec<u8>) {
        self.write_into(dst);
    }

    pub(crate) fn write_into(&self, dst: &mut impl Sink) {
        dst.put(b"WHATSAT ");
        dst.put(&self.client);
        dst.byte(b' ');
        dst.put(self.radius.text.0.as_ref());
        dst.byte(b' ');
        crate::time::write_u128(u128::from(self.bound), dst);
    }

    /// Copies every borrowed field.
    pub fn into_owned(self) -> WhatsAt<'static> {
        WhatsAt {
            client: Cow::Owned(self.client.into_owned()),
            radius: self.radius.into_owned(),
            bound: self.bound,
        }
    }
}

/// Validated ASCII text kept as bytes: the parser never pays for a UTF-8 check, and `as_str` is free
/// of failure because only ASCII digits, signs and points get in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Ascii<'a>(Cow<'a, [u8]>);

impl Ascii<'_> {
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.0).unwrap_or_default()
    }

    fn into_owned(self) -> Ascii<'static> {
        Ascii(Cow::Owned(self.0.into_owned()))
    }
}

/// An ISO 6709 location `[+-]D+(.D+)?[+-]D+(.D+)?`, kept as the exact text the client sent.
///
/// The text is echoed byte for byte in AT lines; the degrees are derived from it on demand.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location<'a> {
    text: Ascii<'a>,
    /// Index of the longitude's sign in `text`.
    split: usize,
}

impl<'a> Location<'a> {
    /// Parses and validates a location field (grammar and ranges of PROTOCOL.md §2).
    ///
    /// # Errors
    /// [`ErrorKind::Location`], [`ErrorKind::LatitudeRange`] or [`ErrorKind::LongitudeRange`], with
    /// offsets into `field`.
    ///
    /// [`ErrorKind::Location`]: crate::ErrorKind::Location
    /// [`ErrorKind::LatitudeRange`]: crate::ErrorKind::LatitudeRange
    /// [`ErrorKind::LongitudeRange`]: crate::ErrorKind::LongitudeRange
    pub fn parse(field: &'a [u8]) -> Result<Self, ParseError> {
        parse::location(field, 0)
    }

    pub(crate) fn from_validated(text: &'a [u8], split: usize) -> Self {
        Location {
            text: Ascii(Cow::Borrowed(text)),
            split,
        }
    }

    /// Builds a location from degrees with six decimals (about 0.1 m), as clients usually send it.
    ///
    /// Returns `None` for a latitude outside -90..=90, a longitude outside -180..=180, or NaN.
    pub fn from_degrees(latitude: f64, longitude: f64) -> Option<Location<'static>> {
        if !(-90.0..=90.0).contains(&latitude) || !(-180.0..=180.0).contains(&longitude) {
            return None;
        }
        let lat = format!("{:+.6}", latitude);
        let split = lat.len();
        let text = format!("{lat}{:+.6}", longitude);
        // Rounding to six decimals never leaves the range, and the text always re-parses.
        Location::parse(text.as_bytes()).ok()?;
        Some(Location {
            text: Ascii(Cow::Owned(text.into_bytes())),
            split,
        })
    }

    /// The exact text, e.g. `+34.068930-118.445127`.
    pub fn as_str(&self) -> &str {
        self.text.as_str()
    }

    /// The exact bytes (ASCII).
    pub fn as_bytes(&self) -> &[u8] {
        &self.text.0
    }

    /// The latitude text, e.g. `+34.068930`.
    pub fn latitude_str(&self) -> &str {
        self.as_str().get(..self.split).unwrap_or("")
    }

    /// The longitude text, e.g. `-118.445127`.
    pub fn longitude_str(&self) -> &str {
        self.as_str().get(self.split..).unwrap_or("")
    }

    /// The latitude in degrees (rounded to the nearest `f64`).
    pub fn latitude(&self) -> f64 {
        self.latitude_str().parse().unwrap_or(0.0)
    }

    /// The longitude in degrees (rounded to the nearest `f64`).
    pub fn longitude(&self) -> f64 {
        self.longitude_str().parse().unwrap_or(0.0)
    }

    /// Copies the text if it is borrowed.
    pub fn into_owned(self) -> Location<'static> {
        Location {
            text: self.text.into_owned(),
            split: self.split,
        }
    }
}

/// A client's POSIX time `D+(.D{1,9})?`: the exact text and its exact value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientTime<'a> {
    text: Ascii<'a>,
    value: Timestamp,
}

impl<'a> ClientTime<'a> {
    /// Parses and validates a time field.
    ///
    /// # Errors
    /// [`ErrorKind::Time`], [`ErrorKind::TimePrecision`] or [`ErrorKind::TimeRange`].
    ///
    /// [`ErrorKind::Time`]: crate::ErrorKind::Time
    /// [`ErrorKind::TimePrecision`]: crate::ErrorKind::TimePrecision
    /// [`ErrorKind::TimeRange`]: crate::ErrorKind::TimeRange
    pub fn parse(field: &'a [u8]) -> Result<Self, ParseError> {
        parse::client_time(field, 0)
    }

    pub(crate) fn from_validated(text: &'a [u8], value: Timestamp) -> Self {
        ClientTime {
            text: Ascii(Cow::Borrowed(text)),
            value,
        }
    }

    /// The canonical text of a timestamp: seconds, a point and nine digits.
    pub fn from_timestamp(value: Timestamp) -> ClientTime<'static> {
        ClientTime {
            text: Ascii(Cow::Owned(
                format!("{}.{:09}", value.secs(), value.subsec_nanos()).into_bytes(),
            )),
            value,
        }
    }

    /// The exact text the client sent.
    pub fn as_str(&self) -> &str {
        self.text.as_str()
    }

    /// The exact bytes the client sent (ASCII).
    pub fn as_bytes(&self) -> &[u8] {
        &self.text.0
    }

    /// The exact value.
    pub fn value(&self) -> Timestamp {
        self.value
    }

    /// Copies the text if it is borrowed.
    pub fn into_owned(self) -> ClientTime<'static> {
        ClientTime {
            text: self.text.into_owned(),
            value: self.value,
        }
    }
}

impl PartialOrd for ClientTime<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ClientTime<'_> {
    /// By value; equal values with different texts (`1.5`, `1.50`) are ordered by text, so the order
    /// stays consistent with equality.
    fn cmp(&self, other: &Self) -> Ordering {
        self.value
            .cmp(&other.value)
            .then_with(|| self.text.cmp(&other.text))
    }
}

/// A WHATSAT radius in kilometres, `D+(.D+)?`, greater than 0 and at most 50.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Radius<'a> {
    text: Ascii<'a>,
}

impl<'a> Radius<'a> {
    /// Parses and validates a radius field.
    ///
    /// # Errors
    /// [`ErrorKind::Radius`] or [`ErrorKind::RadiusRange`].
    ///
    /// [`ErrorKind::Radius`]: crate::ErrorKind::Radius
    /// [`ErrorKind::RadiusRange`]: crate::ErrorKind::RadiusRange
    pub fn parse(field: &'a [u8]) -> Result<Self, ParseError> {
        parse::radius(field, 0)
    }

    pub(crate) fn from_validated(text: &'a [u8]) -> Self {
        Radius {
            text: Ascii(Cow::Borrowed(text)),
        }
    }

    /// The exact text, in kilometres.
    pub fn as_str(&self) -> &str {
        self.text.as_str()
    }

    /// The radius in kilometres (rounded to the nearest `f64`).
    pub fn km(&self) -> f64 {
        self.as_str().parse().unwrap_or(0.0)
    }

    /// The radius in metres as an exact plain decimal, without exponent or needless zeros:
    /// `10` → `10000`, `10.5` → `10500`, `10.5871263` → `10587.1263`, `0.0001` → `0.1`.
    pub fn metres(&self) -> String {
        let text = self.as_str();
        let (int, frac) = text.split_once('.').unwrap_or((text, ""));
        let mut frac_digits = frac.as_bytes().to_vec();
        while frac_digits.len() < 3 {
            frac_digits.push(b'0');
        }
        let (shifted, rest) = frac_digits.split_at(3);
        let mut whole: String = int.trim_start_matches('0').to_owned();
        whole.push_str(core::str::from_utf8(shifted).unwrap_or("000"));
        let whole = whole.trim_start_matches('0');
        let rest = core::str::from_utf8(rest)
            .unwrap_or("")
            .trim_end_matches('0');
        let mut out = if whole.is_empty() {
            "0".to_owned()
        } else {
            whole.to_owned()
        };
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out
    }

    /// Copies the text if it is borrowed.
    pub fn into_owned(self) -> Radius<'static> {
        Radius {
            text: self.text.into_owned(),
        }
    }
}

/// A client's location record as the herd stores and floods it: the fields of one AT line.
///
/// # Format
/// ```text
/// AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450
/// ```
///
/// # Order
/// `Ord` is the herd's convergence order (PROTOCOL.md §2): client time (exactly), then server name
/// (bytewise), then time difference (numerically); the greater record wins. For a total order consistent
/// with equality, records equal in those three are further ordered by client id, location text and time
/// text, which two servers can only disagree on for the same client at the same instant (see
/// [`RecordKey`]).
///
/// # Example
/// ```
/// use herd_proto::AtRecord;
///
/// let held = AtRecord::parse(b"AT Alford +0.263873386 kiwi +34.068930-118.445127 1479413884.392014450")
///     .unwrap();
/// let newer = AtRecord::parse(b"AT Welsh -0.000001000 kiwi +34.1-118.4 1479413890").unwrap();
/// assert!(newer > held, "a later client time wins, whichever server took it");
/// assert_eq!(newer.location.latitude(), 34.1);
/// // Exactly the bytes it was parsed from.
/// assert_eq!(newer.to_bytes(), b"AT Welsh -0.000001000 kiwi +34.1-118.4 1479413890");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AtRecord<'a> {
    /// Name of the server that received the IAMAT.
    pub server: Cow<'a, [u8]>,
    /// That server's receive time minus the client's time.
    pub diff: TimeDiff,
    /// The client id, byte for byte.
    pub client: Cow<'a, [u8]>,
    /// The location, byte for byte.
    pub location: Location<'a>,
    /// The client's time, byte for byte.
    pub time: ClientTime<'a>,
}

impl<'a> AtRecord<'a> {
    /// The record a server named `server` makes of `iamat` received at `received`.
    pub fn new(server: &'a [u8], iamat: IAmAt<'a>, received: Timestamp) -> Self {
        AtRecord {
            server: Cow::Borrowed(server),
            diff: TimeDiff::between(received, iamat.time.value()),
            client: iamat.client,
            location: iamat.location,
            time: iamat.time,
        }
    }

    /// Parses an AT line.
    ///
    /// # Errors
    /// A [`ParseError`] locating the first offending byte.
    pub fn parse(line: &'a [u8]) -> Result<Self, ParseError> {
        parse::at_record(line)
    }

    /// Appends `AT <server> <diff> <client> <location> <time>`.
    pub fn write_to(&self, dst: &mut Vec<u8>) {
        self.write_into(dst);
    }

    pub(crate) fn write_into(&self, dst: &mut impl Sink) {
        write_at(
            &self.server,
            self.diff,
            &self.client,
            self.location.as_bytes(),
            self.time.as_bytes(),
            dst,
        );
    }

    /// The length of the AT line [`AtRecord::write_fields_to`] writes for fields of these lengths
    /// (`location` and `time`: the lengths of their texts as sent), found without writing it.
    pub fn fields_len(
        server: usize,
        diff: TimeDiff,
        client: usize,
        location: usize,
        time: usize,
    ) -> usize {
        // `AT ` and the four spaces between the five fields: the layout of `write_at`.
        AT_PREFIX.len() + server + 1 + diff.wire_len() + 1 + client + 1 + location + 1 + time
    }

    /// Appends the AT line of a record kept as its fields (a store that holds records compactly
    /// and renders the line on demand): exactly what [`AtRecord::write_to`] writes for a record
    /// with these fields, `location` and `time` being the texts as sent.
    pub fn write_fields_to(
        server: &[u8],
        diff: TimeDiff,
        client: &[u8],
        location: &[u8],
        time: &[u8],
        dst: &mut Vec<u8>,
    ) {
        write_at(server, diff, client, location, time, dst);
    }

    /// The wire form as a new vector, without the line terminator.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(96);
        self.write_to(&mut v);
        v
    }

    /// Copies every borrowed field.
    pub fn into_owned(self) -> AtRecord<'static> {
        AtRecord {
            server: Cow::Owned(self.server.into_owned()),
            diff: self.diff,
            client: Cow::Owned(self.client.into_owned()),
            location: self.location.into_owned(),
            time: self.time.into_owned(),
        }
    }
}

/// What an AT line starts with.
const AT_PREFIX: &[u8] = b"AT ";

/// `AT <server> <diff> <client> <location> <time>`: the one layout of an AT line.
fn write_at(
    server: &[u8],
    diff: TimeDiff,
    client: &[u8],
    location: &[u8],
    time: &[u8],
    dst: &mut impl Sink,
) {
    dst.put(AT_PREFIX);
    dst.put(server);
    dst.byte(b' ');
    diff.write_into(dst);
    dst.byte(b' ');
    dst.put(client);
    dst.byte(b' ');
    dst.put(location);
    dst.byte(b' ');
    dst.put(time);
}

impl PartialOrd for AtRecord<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for AtRecord<'_> {
    /// The herd's order: see [`RecordKey`].
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl AtRecord<'_> {
    /// This record's place in the herd's order.
    pub fn key(&self) -> RecordKey<'_> {
        RecordKey {
            time: self.time.value(),
            server: &self.server,
            diff: self.diff,
            client: &self.client,
            location: self.location.as_bytes(),
            time_text: self.time.as_bytes(),
        }
    }
}

/// A record's place in the herd's convergence order — the one definition of that order.
///
/// Keys compare field by field, in this order: the client's time (by value), the server's name, the
/// time difference (by value); then, so the order is total and consistent with equality, the client
/// id, the location text and the time text. A server keeps a record only if it is greater than the one
/// it holds. A store that keeps AT lines rather than parsed records gets the same key with
/// [`RecordKey::of_line`], without knowing the line's layout.
///
/// # Example
/// ```
/// use herd_proto::{AtRecord, RecordKey};
///
/// let a = AtRecord::parse(b"AT Alford +0.500000000 kiwi +1+1 10").unwrap();
/// let b = AtRecord::parse(b"AT Ball -0.100000000 kiwi +1+1 10.0").unwrap();
/// assert!(a < b, "the same client time: the server name decides");
/// let line = b.to_bytes();
/// assert_eq!(RecordKey::of_line(&line, b.time.value(), b.diff), b.key());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordKey<'a> {
    /// The client's time, by value.
    pub time: Timestamp,
    /// The name of the server that took the IAMAT.
    pub server: &'a [u8],
    /// The time difference, by value.
    pub diff: TimeDiff,
    /// The client id.
    pub client: &'a [u8],
    /// The location, as written.
    pub location: &'a [u8],
    /// The client's time, as written.
    pub time_text: &'a [u8],
}

impl<'a> RecordKey<'a> {
    /// The key of an AT line written by [`AtRecord::write_to`], given the record's client time and
    /// time difference (which a store keeps beside the line, so numbers are never parsed again). The
    /// text fields are found in the line; on a line that is not such an AT line they are empty.
    pub fn of_line(line: &'a [u8], time: Timestamp, diff: TimeDiff) -> Self {
        let mut fields = line.splitn(6, |&b| b == b' ');
        let mut next = || fields.next().unwrap_or_default();
        let (_at, server, _diff, client, location, time_text) =
            (next(), next(), next(), next(), next(), next());
        RecordKey {
            time,
            server,
            diff,
            client,
            location,
            time_text,
        }
    }
}

impl fmt::Display for AtRecord<'_> {
    /// The AT line, with invalid UTF-8 replaced (for humans; use `write_to` for bytes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}
