//! The nom grammar. Private: the public API speaks only [`ParseError`], never nom's types.
//!
//! Every parser here is a `complete` parser over one whole line (the codec owns partial input).
//! Numbers are validated on their digits, never through `f64`, so `inf`, `NaN`, `1e3`, `.5` and `5.`
//! are rejected and range checks are exact (`+90.000001` is out of range, `+90.000000` is not).

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::borrow::Cow;

use nom::bytes::complete::{tag, take_while_m_n};
use nom::character::complete::one_of;
use nom::combinator::{all_consuming, opt};
use nom::error::ParseError as NomError;
use nom::sequence::preceded;
use nom::{IResult, Offset, Parser};

use crate::error::{ErrorKind, ParseError};
use crate::message::{AtRecord, ClientTime, IAmAt, Location, Message, Radius, WhatsAt};
use crate::peer::{
    read_b64, KeyRange, PeerMessage, CELL_BYTES, MAX_CELLS, MAX_CHUNK, MAX_IDS, PEER_VERSION,
};
use crate::time::{TimeDiff, Timestamp};

type In<'a> = &'a [u8];

/// White space of PROTOCOL.md §1: space, tab, CR, LF, form feed, vertical tab.
#[inline]
pub(crate) fn is_ws(b: u8) -> bool {
    // One comparison for every byte above space, which is nearly every byte of a line.
    b <= b' ' && matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c)
}

/// Splits `line` after `pos` into exactly `N` more fields, returning each with its offset.
///
/// Splitting on white space is a byte scan, not a grammar, so it is a plain loop: it is the hottest
/// part of parsing (every byte of every line passes through it), and nom's per-field setup cost more
/// than the scan itself.
fn fields<const N: usize>(
    line: In<'_>,
    mut pos: usize,
) -> Result<[(usize, In<'_>); N], ParseError> {
    let mut out = [(0, &line[..0]); N];
    for slot in out.iter_mut() {
        match next_field(line, pos) {
            Some((start, end)) => {
                *slot = (start, &line[start..end]);
                pos = end;
            }
            None => return Err(ParseError::new(line.len(), ErrorKind::MissingField)),
        }
    }
    match next_field(line, pos) {
        Some((extra, _)) => Err(ParseError::new(extra, ErrorKind::ExtraField)),
        None => Ok(out),
    }
}

/// The bounds of the first field at or after `pos`.
#[inline]
fn next_field(line: In<'_>, pos: usize) -> Option<(usize, usize)> {
    let rest = line.get(pos..)?;
    let start = pos + rest.iter().position(|&b| !is_ws(b))?;
    let len = line[start..]
        .iter()
        .position(|&b| is_ws(b))
        .unwrap_or(line.len() - start);
    Some((start, start + len))
}

/// Maps a nom failure inside `field` (which starts at `base` in the line) to a positioned error.
fn fail(
    field: In<'_>,
    base: usize,
    err: nom::Err<nom::error::Error<In<'_>>>,
    kind: ErrorKind,
) -> ParseError {
    let at = match err {
        nom::Err::Error(e) | nom::Err::Failure(e) => field.offset(e.input),
        nom::Err::Incomplete(_) => field.len(),
    };
    ParseError::new(base + at, kind)
}

/// Runs a field grammar: first with nom's zero-size `()` error, which is all a valid field needs;
/// only if that fails, again with positions, to say where. Valid lines — nearly all of them — never
/// pay for error bookkeeping.
fn grammar<'a, O, Fast, Slow>(
    f: In<'a>,
    base: usize,
    kind: ErrorKind,
    mut fast: Fast,
    slow: Slow,
) -> Result<O, ParseError>
where
    Fast: Parser<In<'a>, Output = O, Error = ()>,
    Slow: Parser<In<'a>, Output = O, Error = nom::error::Error<In<'a>>>,
{
    match fast.parse(f) {
        Ok((_, out)) => Ok(out),
        Err(_) => {
            let mut slow = slow;
            match slow.parse(f) {
                Ok((_, out)) => Ok(out),
                Err(e) => Err(fail(f, base, e, kind)),
            }
        }
    }
}

/// `D+`: one or more ASCII digits. A leaf parser written out: `digit1` does the same through
/// nom's generic input traits, which costs more on the hot path than the loop itself.
fn digits<'a, E: NomError<In<'a>>>(i: In<'a>) -> IResult<In<'a>, In<'a>, E> {
    let n = i.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 {
        return Err(nom::Err::Error(E::from_error_kind(
            i,
            nom::error::ErrorKind::Digit,
        )));
    }
    Ok((&i[n..], &i[..n]))
}

/// `D+(.D+)?` as (integer digits, fraction digits).
fn decimal<'a, E: NomError<In<'a>>>(i: In<'a>) -> IResult<In<'a>, (In<'a>, Option<In<'a>>), E> {
    (digits, opt(preceded(tag(&b"."[..]), digits))).parse(i)
}

/// `[+-]D+(.D+)?` as (negative?, integer digits, fraction digits).
fn signed_decimal<'a, E: NomError<In<'a>>>(
    i: In<'a>,
) -> IResult<In<'a>, (bool, In<'a>, Option<In<'a>>), E> {
    let negative = match i.first() {
        Some(b'+') => false,
        Some(b'-') => true,
        _ => {
            return Err(nom::Err::Error(E::from_error_kind(
                i,
                nom::error::ErrorKind::OneOf,
            )))
        }
    };
    let (rest, (int, frac)) = decimal(&i[1..])?;
    Ok((rest, (negative, int, frac)))
}

/// Is the decimal `int.frac` at most `max`? Exact on the digits, for any number of them.
fn at_most(int: In<'_>, frac: Option<In<'_>>, max: u64) -> bool {
    let int = &int[int.iter().take_while(|&&d| d == b'0').count()..];
    if int.len() > 19 {
        return false;
    }
    let value = digits_value(int);
    value < max || (value == max && frac.unwrap_or_default().iter().all(|&d| d == b'0'))
}

/// The value of at most 19 ASCII digits (fits in `u64`).
fn digits_value(d: In<'_>) -> u64 {
    d.iter().fold(0u64, |v, &c| v * 10 + u64::from(c - b'0'))
}

pub(crate) fn location(f: In<'_>, base: usize) -> Result<Location<'_>, ParseError> {
    let ((_, lat_i, lat_f), (_, lon_i, lon_f)) = grammar(
        f,
        base,
        ErrorKind::Location,
        all_consuming((signed_decimal, signed_decimal)),
        all_consuming((signed_decimal, signed_decimal)),
    )?;
    let split = f.offset(lon_i) - 1;
    if !at_most(lat_i, lat_f, 90) {
        return Err(ParseError::new(base, ErrorKind::LatitudeRange));
    }
    if !at_most(lon_i, lon_f, 180) {
        return Err(ParseError::new(base + split, ErrorKind::LongitudeRange));
    }
    Ok(Location::from_validated(f, split))
}

pub(crate) fn client_time(f: In<'_>, base: usize) -> Result<ClientTime<'_>, ParseError> {
    let (secs, frac) = grammar(
        f,
        base,
        ErrorKind::Time,
        all_consuming(decimal),
        all_consuming(decimal),
    )?;
    let frac = frac.unwrap_or_default();
    if frac.len() > 9 {
        return Err(ParseError::new(
            base + f.offset(&frac[9..]),
            ErrorKind::TimePrecision,
        ));
    }
    let secs_digits = &secs[secs.iter().take_while(|&&d| d == b'0').count()..];
    let secs = match secs_digits.len() {
        0..=19 => digits_value(secs_digits),
        20 => secs_digits
            .iter()
            .try_fold(0u64, |v, &c| {
                v.checked_mul(10)?.checked_add(u64::from(c - b'0'))
            })
            .ok_or(ParseError::new(base, ErrorKind::TimeRange))?,
        _ => return Err(ParseError::new(base, ErrorKind::TimeRange)),
    };
    const SCALE: [u32; 10] = [
        1_000_000_000,
        100_000_000,
        10_000_000,
        1_000_000,
        100_000,
        10_000,
        1_000,
        100,
        10,
        1,
    ];
    let nanos = digits_value(frac) as u32 * SCALE[frac.len()];
    let value = Timestamp::new(secs, nanos).ok_or(ParseError::new(base, ErrorKind::Time))?;
    Ok(ClientTime::from_validated(f, value))
}

pub(crate) fn radius(f: In<'_>, base: usize) -> Result<Radius<'_>, ParseError> {
    let (int, frac) = grammar(
        f,
        base,
        ErrorKind::Radius,
        all_consuming(decimal),
        all_consuming(decimal),
    )?;
    let positive = int
        .iter()
        .chain(frac.unwrap_or_default())
        .any(|&d| d != b'0');
    if !positive || !at_most(int, frac, 50) {
        return Err(ParseError::new(base, ErrorKind::RadiusRange));
    }
    Ok(Radius::from_validated(f))
}

fn bound(f: In<'_>, base: usize) -> Result<u8, ParseError> {
    let d = grammar(
        f,
        base,
        ErrorKind::Bound,
        all_consuming(digits),
        all_consuming(digits),
    )?;
    if !at_most(d, None, u64::from(WhatsAt::MAX_BOUND)) {
        return Err(ParseError::new(base, ErrorKind::BoundRange));
    }
    Ok(digits_value(&d[d.len().saturating_sub(3)..]) as u8)
}

fn count(f: In<'_>, base: usize, kind: ErrorKind) -> Result<u64, ParseError> {
    let (_, d) = all_consuming(digits::<nom::error::Error<In<'_>>>)
        .parse(f)
        .map_err(|e| fail(f, base, e, kind))?;
    d.iter()
        .try_fold(0u64, |v, &c| {
            v.checked_mul(10)?.checked_add(u64::from(c - b'0'))
        })
        .ok_or(ParseError::new(base, kind))
}

/// Lowercase hex of 1 to 16 digits.
fn hex(f: In<'_>, base: usize) -> Result<u64, ParseError> {
    if f.is_empty() || f.len() > 16 {
        return Err(ParseError::new(base, ErrorKind::Hex));
    }
    let mut v = 0u64;
    for (i, &c) in f.iter().enumerate() {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return Err(ParseError::new(base + i, ErrorKind::Hex)),
        };
        v = (v << 4) | u64::from(d);
    }
    Ok(v)
}

/// `least` to `most` big-endian 32-bit values as unpadded base64url.
fn u32s(f: In<'_>, base: usize, least: usize, most: usize) -> Result<Vec<u32>, ParseError> {
    let bytes = read_b64(f)
        .filter(|b| b.len() % 4 == 0 && (least..=most).contains(&(b.len() / 4)))
        .ok_or(ParseError::new(base, ErrorKind::Base64))?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// `-`, or 1 to 16 lowercase hex digits fixing the start of the key.
fn key_range(f: In<'_>, base: usize) -> Result<KeyRange, ParseError> {
    if f == b"-" {
        return Ok(KeyRange::ALL);
    }
    let v = hex(f, base)?;
    let digits = f.len() as u8;
    KeyRange::new(digits, v << (64 - 4 * u32::from(digits)))
        .ok_or(ParseError::new(base, ErrorKind::Hex))
}

fn time_diff(f: In<'_>, base: usize) -> Result<TimeDiff, ParseError> {
    let nine = take_while_m_n(9, 9, |b: u8| b.is_ascii_digit());
    let (_, (sign, secs, _, frac)) =
        all_consuming((one_of(&b"+-"[..]), digits, tag(&b"."[..]), nine))
            .parse(f)
            .map_err(|e| fail(f, base, e, ErrorKind::TimeDiff))?;
    // Accumulate with the sign applied, so that i128::MIN (whose magnitude is not an i128) parses.
    let neg = sign == '-';
    let nanos = secs
        .iter()
        .chain(frac)
        .try_fold(0i128, |v, &c| {
            let d = i128::from(c - b'0');
            let v = v.checked_mul(10)?;
            if neg {
                v.checked_sub(d)
            } else {
                v.checked_add(d)
            }
        })
        .ok_or(ParseError::new(base, ErrorKind::TimeDiffRange))?;
    Ok(TimeDiff::from_nanos(nanos))
}

/// The first field of a line and where it starts, or `Empty`.
fn command(line: In<'_>) -> Result<(usize, In<'_>), ParseError> {
    match next_field(line, 0) {
        Some((start, end)) => Ok((start, &line[start..end])),
        None => Err(ParseError::new(0, ErrorKind::Empty)),
    }
}

pub(crate) fn message(line: In<'_>) -> Result<Message<'_>, ParseError> {
    let (at, cmd) = command(line)?;
    let rest = at + cmd.len();
    match cmd {
        b"IAMAT" => {
            let [(_, client), (lo, loc), (to, time)] = fields::<3>(line, rest)?;
            Ok(Message::IAmAt(IAmAt {
                client: Cow::Borrowed(client),
                location: location(loc, lo)?,
                time: client_time(time, to)?,
            }))
        }
        b"WHATSAT" => {
            let [(_, client), (ro, r), (bo, b)] = fields::<3>(line, rest)?;
            Ok(Message::WhatsAt(WhatsAt {
                client: Cow::Borrowed(client),
                radius: radius(r, ro)?,
                bound: bound(b, bo)?,
            }))
        }
        _ => Err(ParseError::new(at, ErrorKind::UnknownCommand)),
    }
}

fn at_fields<'a>(fs: [(usize, In<'a>); 5]) -> Result<AtRecord<'a>, ParseError> {
    let [(_, server), (d_at, diff), (_, client), (l_at, loc), (t_at, time)] = fs;
    Ok(AtRecord {
        server: Cow::Borrowed(server),
        diff: time_diff(diff, d_at)?,
        client: Cow::Borrowed(client),
        location: location(loc, l_at)?,
        time: client_time(time, t_at)?,
    })
}

pub(crate) fn at_record(line: In<'_>) -> Result<AtRecord<'_>, ParseError> {
    let (at, cmd) = command(line)?;
    let rest = at + cmd.len();
    if cmd != b"AT" {
        return Err(ParseError::new(at, ErrorKind::UnknownCommand));
    }
    at_fields(fields::<5>(line, rest)?)
}

/// A peer line: the command picks one small parser for that kind of message, each of which reads
/// the fields after the command (from `rest`) and checks what its kind requires.
pub(crate) fn peer_message(line: In<'_>) -> Result<PeerMessage<'_>, ParseError> {
    let (at, cmd) = command(line)?;
    let rest = at + cmd.len();
    match cmd {
        b"AT" => Ok(PeerMessage::Record(at_fields(fields::<5>(line, rest)?)?)),
        b"HERD-HELLO" => hello(line, rest),
        b"HERD-WELCOME" => welcome(line, rest),
        b"HERD-REFUSED" => refused(line, rest),
        b"HERD-SYNCED" => synced(line, rest),
        b"HERD-ROOT" => root(line, rest),
        b"HERD-FP" => fingerprints(line, rest),
        b"HERD-IBF" => cells(line, rest),
        b"HERD-IDS" => ids_or_want(line, rest, false),
        b"HERD-WANT" => ids_or_want(line, rest, true),
        b"HERD-OVER" => bare(line, rest, PeerMessage::Over),
        b"HERD-PING" => bare(line, rest, PeerMessage::Ping),
        b"HERD-PONG" => bare(line, rest, PeerMessage::Pong),
        _ => Err(ParseError::new(at, ErrorKind::UnknownCommand)),
    }
}

/// The first field after `rest`, or `MissingField` at the end of the line.
#[inline]
fn required_field(line: In<'_>, rest: usize) -> Result<(usize, usize), ParseError> {
    next_field(line, rest).ok_or_else(|| ParseError::new(line.len(), ErrorKind::MissingField))
}

/// `HERD-HELLO version name to handshake`. The version is checked first, so a greeting of another
/// version (with other fields) is told apart from a malformed one.
fn hello(line: In<'_>, rest: usize) -> Result<PeerMessage<'_>, ParseError> {
    let (vo, ve) = required_field(line, rest)?;
    let version = count(&line[vo..ve], vo, ErrorKind::Version)?;
    if version != u64::from(PEER_VERSION) {
        return Err(ParseError::new(vo, ErrorKind::Version));
    }
    let [_, (_, name), (_, to), (_, handshake)] = fields::<4>(line, rest)?;
    Ok(PeerMessage::Hello {
        version: PEER_VERSION,
        name: Cow::Borrowed(name),
        to: Cow::Borrowed(to),
        handshake: Cow::Borrowed(handshake),
    })
}

/// `HERD-WELCOME name handshake`.
fn welcome(line: In<'_>, rest: usize) -> Result<PeerMessage<'_>, ParseError> {
    let [(_, name), (_, handshake)] = fields::<2>(line, rest)?;
    Ok(PeerMessage::Welcome {
        name: Cow::Borrowed(name),
        handshake: Cow::Borrowed(handshake),
    })
}

/// `HERD-REFUSED reason`.
fn refused(line: In<'_>, rest: usize) -> Result<PeerMessage<'_>, ParseError> {
    let [(_, reason)] = fields::<1>(line, rest)?;
    Ok(PeerMessage::Refused {
        reason: Cow::Borrowed(reason),
    })
}

/// `HERD-SYNCED count`.
fn synced(line: In<'_>, rest: usize) -> Result<PeerMessage<'_>, ParseError> {
    let [(co, c)] = fields::<1>(line, rest)?;
    Ok(PeerMessage::Synced {
        count: count(c, co, ErrorKind::Count)?,
    })
}

/// `HERD-ROOT count fingerprint salt`.
fn root(line: In<'_>, rest: usize) -> Result<PeerMessage<'_>, ParseError> {
    let [(co, c), (fo, f), (so, salt)] = fields::<3>(line, rest)?;
    Ok(PeerMessage::Root {
        count: count(c, co, ErrorKind::Count)?,
        fingerprint: hex(f, fo)?,
        salt: hex(salt, so)?,
    })
}

/// `HERD-FP range children`: a full-length range has no children, and there are exactly 16.
fn fingerprints(line: In<'_>, rest: usize) -> Result<PeerMessage<'static>, ParseError> {
    let [(ro, r), (fo, f)] = fields::<2>(line, rest)?;
    let range = key_range(r, ro)?;
    if range.digits() == 16 {
        return Err(ParseError::new(ro, ErrorKind::Hex));
    }
    let fps = u32s(f, fo, 16, 16)?;
    let mut children = [0u32; 16];
    children.copy_from_slice(&fps);
    Ok(PeerMessage::Fingerprints { range, children })
}

/// `HERD-IBF range total at cells`: a table of a whole number of cell triples, at most
/// `MAX_CELLS`, sent in chunks of at most `MAX_CHUNK` cells that stay inside the table.
fn cells(line: In<'_>, rest: usize) -> Result<PeerMessage<'static>, ParseError> {
    let [(ro, r), (no, n), (ao, a), (co, c)] = fields::<4>(line, rest)?;
    let range = key_range(r, ro)?;
    let total = count(n, no, ErrorKind::Count)?;
    if total == 0 || total > u64::from(MAX_CELLS) || total % 3 != 0 {
        return Err(ParseError::new(no, ErrorKind::Count));
    }
    let at = count(a, ao, ErrorKind::Count)?;
    let cells = read_b64(c)
        .filter(|b| !b.is_empty() && b.len() % CELL_BYTES == 0 && b.len() / CELL_BYTES <= MAX_CHUNK)
        .ok_or(ParseError::new(co, ErrorKind::Base64))?;
    if at + (cells.len() / CELL_BYTES) as u64 > total {
        return Err(ParseError::new(ao, ErrorKind::Count));
    }
    Ok(PeerMessage::Cells {
        range,
        total: total as u32,
        at: at as u32,
        cells,
    })
}

/// `HERD-IDS range [hashes]` or `HERD-WANT range hashes`: the same fields, but a want without
/// hashes asks for nothing and is refused.
fn ids_or_want(line: In<'_>, rest: usize, want: bool) -> Result<PeerMessage<'static>, ParseError> {
    let (ro, re) = required_field(line, rest)?;
    let range = key_range(&line[ro..re], ro)?;
    let hashes = match next_field(line, re) {
        Some((start, end)) => {
            if let Some((extra, _)) = next_field(line, end) {
                return Err(ParseError::new(extra, ErrorKind::ExtraField));
            }
            u32s(&line[start..end], start, 1, MAX_IDS)?
        }
        None => Vec::new(),
    };
    if !want {
        Ok(PeerMessage::Ids { range, hashes })
    } else if hashes.is_empty() {
        Err(ParseError::new(line.len(), ErrorKind::MissingField))
    } else {
        Ok(PeerMessage::Want { range, hashes })
    }
}

/// A message without fields (`HERD-OVER`, `HERD-PING`, `HERD-PONG`): anything after it is extra.
fn bare(
    line: In<'_>,
    rest: usize,
    message: PeerMessage<'static>,
) -> Result<PeerMessage<'static>, ParseError> {
    fields::<0>(line, rest)?;
    Ok(message)
}

/// The fields of a line one by one, each with its offset: for lines whose field count depends on
/// their words (the watch lines), split by the same white-space rule as every other line.
pub(crate) struct Words<'a> {
    line: In<'a>,
    pos: usize,
}

impl<'a> Words<'a> {
    pub(crate) fn new(line: In<'a>) -> Self {
        Words { line, pos: 0 }
    }
}

impl<'a> Iterator for Words<'a> {
    type Item = (usize, In<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        let (start, end) = next_field(self.line, self.pos)?;
        self.pos = end;
        Some((start, &self.line[start..end]))
    }
}
