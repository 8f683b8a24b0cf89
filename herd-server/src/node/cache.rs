//! The client cache: each client's newest record, compact and index-addressable.
//!
//! A record is kept as the fields its AT line is made of, without the line's redundant text: the
//! server as its number among the herd's names, the time difference as a number, the client's
//! coordinates and time as numbers with their written form (sign, digits before and after the point)
//! when those render back to exactly the text the client sent, as that text otherwise, and the client
//! id, in one allocation ([`Entry`]). The AT line is rendered from them when it is needed (a reply, a
//! WHATSAT, a flood, the journal, a fingerprint), byte for byte the line the record was made with:
//! the time difference has one wire form, every other number is held only in a form that renders
//! back the same, and a line that does not render back the same (one written by hand on disk) is
//! kept whole.
//! The hash table holds only `u32` indexes into the entry vector and finds a client by comparing the
//! id inside the entry, so no id is stored twice. Indexes never change (clients are never removed):
//! link queues and the catch-up cursor address clients by index.
//!
//! The cache also keeps the fingerprint trie of its records ([`crate::node::sync::Sketch`]) up to date as
//! they are stored, so reconciliation never scans it.
//!
//! About 90 bytes a client (the 16-byte entry, its 48-byte block, table slot, the trie's chain link
//! and record hash) for records like the benchmark's: a million clients take about 90 MB above the
//! empty server.

use std::borrow::Cow;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use herd_proto::{AtRecord, ClientTime, RecordKey, TimeDiff, Timestamp};

use crate::node::limits::ENTRY_OVERHEAD;
use crate::node::sync::{self, Sketch};

/// The first byte of an entry kept as its whole AT line; a compact entry's first byte, its form,
/// is below it.
const WHOLE: u8 = u8::MAX;
/// A form bit: the server is held as its number among [`servers`], not as its name.
const SERVER_NUMBER: u8 = 1;
/// A form bit: the location is held as two [`Decimal`]s, not as its text.
const LOCATION_NUMBERS: u8 = 2;
/// A form bit: the client time is held as a [`Decimal`], not as its text.
const TIME_NUMBER: u8 = 4;
/// Where the form keeps the bytes of the time difference (0 to 8, bits 3 to 6).
const DIFF_SHIFT: u32 = 3;

/// One client's record, in one allocation of 16 bytes' handle.
///
/// Compact (nearly always), in this order:
/// - the form: which fields are held as numbers, and the time difference's length;
/// - the client id's length (`u16`) and the id: first, so the table's look-ups, which compare ids,
///   read no further;
/// - the server: its number among [`servers`] (one byte), or its name's length (`u8`) and name;
/// - the time difference in nanoseconds, zigzag-coded, little-endian, in as few bytes as it needs;
/// - the location: two decimals (each a head byte, its form, and its digits' value), or its text's
///   length (`u16`) and text;
/// - the client time: a decimal, or its text's length (`u16`) and text.
///
/// A location or time is held as numbers only when they render back to exactly the text the client
/// sent (a decimal is read from nothing else), so `AT Alford +0.263873386 bench-123456
/// +12.3456-123.4567 1764740000.123456789` takes 37 bytes (a 48-byte block of the allocator).
/// Whole (a line that would not render back the same, a field too long for its length): `WHOLE` then
/// the AT line. Either way the record's order key and line come from herd-proto's [`RecordKey`] and
/// [`AtRecord`]: the line's layout is herd-proto's alone.
#[derive(Debug, Clone)]
pub struct Entry {
    data: Box<[u8]>,
}

/// The names of the herd's servers, numbered in the order they were made known
/// ([`servers::register`]: a node its own name, its neighbours' and the herd's members), so a compact
/// entry holds its server in one byte. Process-wide and append-only (a name keeps its number for the
/// life of the process), so an entry renders without its cache, on any thread. At most 255 names; a
/// server past them, or never made known, is held by name.
pub mod servers {
    use std::sync::{Mutex, OnceLock, PoisonError};

    const MAX: usize = 255;
    static NAMES: [OnceLock<Box<[u8]>>; MAX] = [const { OnceLock::new() }; MAX];
    static ADDING: Mutex<()> = Mutex::new(());

    /// Numbers `name`, unless it has a number already or there is no room left.
    pub fn register(name: &[u8]) {
        let _adding = ADDING.lock().unwrap_or_else(PoisonError::into_inner);
        if number(name).is_none() {
            if let Some(slot) = NAMES.iter().find(|s| s.get().is_none()) {
                let _ = slot.set(name.into());
            }
        }
    }

    /// `name`'s number.
    pub(super) fn number(name: &[u8]) -> Option<u8> {
        let at = NAMES
            .iter()
            .map_while(OnceLock::get)
            .position(|n| **n == *name)?;
        u8::try_from(at).ok()
    }

    /// The name numbered `n`.
    pub(super) fn name(n: u8) -> Option<&'static [u8]> {
        NAMES.get(usize::from(n))?.get().map(|name| &**name)
    }
}

/// Bytes that hold every value of `n` decimal digits (up to `10^n - 1`), for `n` up to 19.
const VALUE_BYTES: [u8; 20] = [0, 1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 5, 6, 6, 7, 7, 8, 8, 8];

/// A decimal text held as a number: `D+(.D+)?`, or `[+-]D+(.D+)?` when signed, as the value of its
/// digits and its form (the sign, the digits before the point, the digits after it; none after: no
/// point). The form counts every digit written, leading and trailing zeros alike, so
/// [`Decimal::render`] gives back the very text [`Decimal::read`] took (`+0.0`, `-007.50`,
/// `0001700000000.000000000`). Held as its head byte and the value in [`VALUE_BYTES`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decimal {
    /// Bit 7: negative (signed only); bits 4 to 6 (signed) or 4 to 7: the digits before the point
    /// less one; bits 0 to 3: the digits after it.
    head: u8,
    /// The digits' value, the point left out.
    value: u64,
    /// Whether the text starts with a sign.
    signed: bool,
}

impl Decimal {
    /// Reads a decimal off the front of `text` (a sign first if `signed`): the decimal and what
    /// follows it. `None` if `text` does not start with one the form has room for: at most 19
    /// digits, 8 (signed) or 16 before the point, 15 after it.
    fn read(text: &[u8], signed: bool) -> Option<(Decimal, &[u8])> {
        let (negative, mut at) = match (signed, text.first()) {
            (false, _) => (false, 0),
            (true, Some(b'+')) => (false, 1),
            (true, Some(b'-')) => (true, 1),
            (true, _) => return None,
        };
        // One pass over the digits (this runs for every record stored): the value wraps past 19
        // digits, which the form refuses below anyway.
        let mut value = 0u64;
        let int = Self::digits(text.get(at..).unwrap_or_default(), &mut value);
        at += int;
        let frac = if text.get(at) == Some(&b'.') {
            at += 1;
            match Self::digits(text.get(at..).unwrap_or_default(), &mut value) {
                0 => return None,
                n => n,
            }
        } else {
            0
        };
        at += frac;
        let max_int = if signed { 8 } else { 16 };
        if int == 0 || int > max_int || frac > 15 || int + frac > 19 {
            return None;
        }
        let head = u8::from(negative) << 7 | ((int - 1) as u8) << 4 | frac as u8;
        Some((
            Decimal {
                head,
                value,
                signed,
            },
            text.get(at..).unwrap_or_default(),
        ))
    }

    /// How many ASCII digits `text` starts with, each added to `value` (times ten, plus the digit).
    #[inline]
    fn digits(text: &[u8], value: &mut u64) -> usize {
        let mut n = 0;
        for &b in text {
            let d = b.wrapping_sub(b'0');
            if d >= 10 {
                break;
            }
            *value = value.wrapping_mul(10).wrapping_add(u64::from(d));
            n += 1;
        }
        n
    }

    /// Digits before the point.
    fn int_digits(self) -> usize {
        usize::from(self.head >> 4 & if self.signed { 7 } else { 15 }) + 1
    }

    /// Digits after the point (0: no point).
    fn frac_digits(self) -> usize {
        usize::from(self.head & 15)
    }

    /// Bytes of the value in an entry.
    fn value_bytes(head: u8, signed: bool) -> usize {
        let d = Decimal {
            head,
            value: 0,
            signed,
        };
        VALUE_BYTES
            .get(d.int_digits() + d.frac_digits())
            .map_or(8, |&n| usize::from(n))
    }

    /// Bytes the decimal takes in an entry.
    fn packed_len(self) -> usize {
        1 + Self::value_bytes(self.head, self.signed)
    }

    /// Hands `put` the decimal's bytes in an entry: its head, then its value.
    fn pack(self, put: &mut impl FnMut(&[u8])) {
        put(&[self.head]);
        put(&self.value.to_le_bytes()[..Self::value_bytes(self.head, self.signed)]);
    }

    /// What follows the decimal packed at the front of `data` (its value left packed).
    fn skip(data: &[u8], signed: bool) -> Option<&[u8]> {
        let (&head, rest) = data.split_first()?;
        rest.get(Self::value_bytes(head, signed)..)
    }

    /// The length of the text of the decimal packed at the front of `data`, from its head alone.
    fn packed_text_len(data: &[u8], signed: bool) -> usize {
        data.first().map_or(0, |&head| {
            Decimal {
                head,
                value: 0,
                signed,
            }
            .text_len()
        })
    }

    /// The decimal packed at the front of `data`, and what follows it.
    fn unpack(data: &[u8], signed: bool) -> Option<(Decimal, &[u8])> {
        let (&head, rest) = data.split_first()?;
        let (value, rest) = rest.split_at_checked(Self::value_bytes(head, signed))?;
        Some((
            Decimal {
                head,
                value: le_u64(value),
                signed,
            },
            rest,
        ))
    }

    /// Appends the text the decimal was read from.
    fn render(self, out: &mut Small) {
        if self.signed {
            out.push(if self.head >> 7 == 1 { b'-' } else { b'+' });
        }
        let (int, frac) = (self.int_digits(), self.frac_digits());
        let n = int + frac + usize::from(frac > 0);
        let Some(text) = out.bytes.get_mut(out.len..out.len + n) else {
            return;
        };
        // Written in place from the last digit back: the fraction's digits, the point, the digits
        // before it (zeros in front once the value is spent, as many as were written).
        let mut value = self.value;
        let mut digit = || {
            let d = b'0' + (value % 10) as u8;
            value /= 10;
            d
        };
        let (before, after) = text.split_at_mut(int);
        if let Some((point, fraction)) = after.split_first_mut() {
            for b in fraction.iter_mut().rev() {
                *b = digit();
            }
            *point = b'.';
        }
        for b in before.iter_mut().rev() {
            *b = digit();
        }
        out.len += n;
    }

    /// The length of the text [`Decimal::render`] appends.
    fn text_len(self) -> usize {
        let frac = self.frac_digits();
        usize::from(self.signed) + self.int_digits() + if frac > 0 { 1 + frac } else { 0 }
    }

    /// The client time this (unsigned, at most nine decimals) decimal writes.
    fn timestamp(self) -> Timestamp {
        const POW10: [u64; 10] = [
            1,
            10,
            100,
            1_000,
            10_000,
            100_000,
            1_000_000,
            10_000_000,
            100_000_000,
            1_000_000_000,
        ];
        let frac = self.frac_digits().min(9);
        let scale = POW10[frac];
        let nanos = (self.value % scale) as u32 * POW10[9 - frac] as u32;
        Timestamp::new(self.value / scale, nanos).unwrap_or_default()
    }
}

/// The value of up to 8 little-endian bytes.
fn le_u64(bytes: &[u8]) -> u64 {
    let mut b = [0; 8];
    for (to, from) in b.iter_mut().zip(bytes) {
        *to = *from;
    }
    u64::from_le_bytes(b)
}

/// Texts rendered from numbers, on the stack: a location and a client time (three decimals of at
/// most 19 digits, a sign and a point each).
#[derive(Clone, Copy)]
struct Small {
    bytes: [u8; 64],
    len: usize,
}

impl Small {
    fn new() -> Self {
        Small {
            bytes: [0; 64],
            len: 0,
        }
    }

    fn push(&mut self, b: u8) {
        self.extend(&[b]);
    }

    fn extend(&mut self, bytes: &[u8]) {
        if let Some(to) = self.bytes.get_mut(self.len..self.len + bytes.len()) {
            to.copy_from_slice(bytes);
            self.len += bytes.len();
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A location or a client time as a compact entry holds it.
#[derive(Clone, Copy)]
enum Held<'a> {
    Text(&'a [u8]),
    /// The packed bytes of one unsigned decimal (a time) or of two signed ones (a location): read
    /// only as far as each use needs (a length from the heads alone, a time's value).
    Numbers {
        packed: &'a [u8],
        location: bool,
    },
}

impl<'a> Held<'a> {
    /// The text held, or `rendered` (its numbers' text, from [`Held::render`]).
    fn or<'b>(self, rendered: &'b [u8]) -> &'b [u8]
    where
        'a: 'b,
    {
        match self {
            Held::Text(t) => t,
            Held::Numbers { .. } => rendered,
        }
    }

    /// Appends the numbers' text to `out` (nothing for a text: see [`Held::or`]).
    fn render(self, out: &mut Small) {
        if let Held::Numbers { packed, location } = self {
            if let Some((a, rest)) = Decimal::unpack(packed, location) {
                a.render(out);
                if let Some((b, _)) = location.then(|| Decimal::unpack(rest, true)).flatten() {
                    b.render(out);
                }
            }
        }
    }

    /// The length of [`Held::text`], without rendering it.
    fn text_len(self) -> usize {
        match self {
            Held::Text(t) => t.len(),
            Held::Numbers { packed, location } => {
                let first = Decimal::packed_text_len(packed, location);
                match location.then(|| Decimal::skip(packed, true)).flatten() {
                    Some(rest) => first + Decimal::packed_text_len(rest, true),
                    None => first,
                }
            }
        }
    }

    /// The location (`location`) or client time held at the front of `data`, as numbers (their
    /// packed bytes, read no further than their heads) or as a text, and what follows it.
    fn unpack(data: &'a [u8], numbers: bool, location: bool) -> Option<(Held<'a>, &'a [u8])> {
        if !numbers {
            return Self::unpack_text(data);
        }
        let after = Decimal::skip(data, location)?;
        let after = if location {
            Decimal::skip(after, true)?
        } else {
            after
        };
        let (packed, after) = data.split_at(data.len() - after.len());
        Some((Held::Numbers { packed, location }, after))
    }

    /// A text held by its length (`u16`) at the front of `data`, and what follows it.
    fn unpack_text(data: &'a [u8]) -> Option<(Held<'a>, &'a [u8])> {
        let (len, rest) = data.split_at_checked(2)?;
        let (text, rest) =
            rest.split_at_checked(usize::from(u16::from_le_bytes([len[0], len[1]])))?;
        Some((Held::Text(text), rest))
    }
}

/// The fields of a record, as texts (the location and time as the client sent them).
struct Fields<'a> {
    server: &'a [u8],
    diff: TimeDiff,
    client: &'a [u8],
    location: &'a [u8],
    time: &'a [u8],
}

impl<'a> Fields<'a> {
    fn of(record: &'a AtRecord<'_>) -> Self {
        Fields {
            server: &record.server,
            diff: record.diff,
            client: &record.client,
            location: record.location.as_bytes(),
            time: record.time.as_bytes(),
        }
    }
}

/// The fields of a compact entry, as it holds them.
struct Parts<'a> {
    server: &'a [u8],
    diff: TimeDiff,
    location: Held<'a>,
    time: Held<'a>,
    client: &'a [u8],
}

impl Parts<'_> {
    /// `f` of the location's and the client time's texts, those held as numbers rendered into one
    /// buffer on the stack.
    fn with_texts<R>(&self, f: impl FnOnce(&[u8], &[u8]) -> R) -> R {
        let mut numbers = Small::new();
        self.location.render(&mut numbers);
        let at = numbers.len;
        self.time.render(&mut numbers);
        let (location, time) = numbers.as_bytes().split_at(at);
        f(self.location.or(location), self.time.or(time))
    }

    /// The client time's value.
    fn time_value(&self) -> Timestamp {
        match self.time {
            Held::Numbers { packed, .. } => Decimal::unpack(packed, false)
                .map(|(t, _)| t.timestamp())
                .unwrap_or_default(),
            Held::Text(t) => ClientTime::parse(t).map(|t| t.value()).unwrap_or_default(),
        }
    }
}

/// How a record's fields go into a compact entry: which are held as numbers, and the length.
struct Plan {
    form: u8,
    server: Option<u8>,
    /// The time difference, zigzag-coded.
    diff: u64,
    diff_bytes: usize,
    location: Option<(Decimal, Decimal)>,
    time: Option<Decimal>,
    len: usize,
}

/// Zigzag coding: small differences of either sign take few bytes.
fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(z: u64) -> i64 {
    (z >> 1) as i64 ^ -((z & 1) as i64)
}

impl Plan {
    /// How `f` goes into a compact entry; `None` if a field is too long for its length.
    fn of(f: &Fields<'_>) -> Option<Plan> {
        let diff = zigzag(i64::try_from(f.diff.as_nanos()).ok()?);
        let diff_bytes = (64 - diff.leading_zeros() as usize).div_ceil(8);
        let server = servers::number(f.server);
        let location = Decimal::read(f.location, true).and_then(|(lat, rest)| {
            let (lon, rest) = Decimal::read(rest, true)?;
            rest.is_empty().then_some((lat, lon))
        });
        // At most nine decimals: a client time's (whose value the entry computes).
        let time = Decimal::read(f.time, false)
            .and_then(|(t, rest)| (rest.is_empty() && t.frac_digits() <= 9).then_some(t));
        let text_len = |t: &[u8]| u16::try_from(t.len()).ok().map(|_| 2 + t.len());
        let len = 1
            + u16::try_from(f.client.len())
                .ok()
                .map(|_| 2 + f.client.len())?
            + match server {
                Some(_) => 1,
                None => u8::try_from(f.server.len())
                    .ok()
                    .map(|_| 1 + f.server.len())?,
            }
            + diff_bytes
            + match location {
                Some((lat, lon)) => lat.packed_len() + lon.packed_len(),
                None => text_len(f.location)?,
            }
            + match time {
                Some(t) => t.packed_len(),
                None => text_len(f.time)?,
            };
        let form = (diff_bytes as u8) << DIFF_SHIFT
            | if server.is_some() { SERVER_NUMBER } else { 0 }
            | if location.is_some() {
                LOCATION_NUMBERS
            } else {
                0
            }
            | if time.is_some() { TIME_NUMBER } else { 0 };
        Some(Plan {
            form,
            server,
            diff,
            diff_bytes,
            location,
            time,
            len,
        })
    }

    /// Writes `f`'s compact entry into `data`, of [`Plan::len`] bytes.
    fn write(&self, f: &Fields<'_>, data: &mut [u8]) {
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            if let Some(d) = data.get_mut(at..at + bytes.len()) {
                d.copy_from_slice(bytes);
            }
            at += bytes.len();
        };
        put(&[self.form]);
        put(&(f.client.len() as u16).to_le_bytes());
        put(f.client);
        match self.server {
            Some(n) => put(&[n]),
            None => {
                put(&[f.server.len() as u8]);
                put(f.server);
            }
        }
        put(&self.diff.to_le_bytes()[..self.diff_bytes]);
        match self.location {
            Some((lat, lon)) => {
                lat.pack(&mut put);
                lon.pack(&mut put);
            }
            None => {
                put(&(f.location.len() as u16).to_le_bytes());
                put(f.location);
            }
        }
        match self.time {
            Some(t) => t.pack(&mut put),
            None => {
                put(&(f.time.len() as u16).to_le_bytes());
                put(f.time);
            }
        }
    }
}

thread_local! {
    /// Where lines are rendered for a look (a hash, a length), so that costs no allocation.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Entry {
    /// The entry of `record`; `line` is the AT line to keep when the caller has one (read back from
    /// disk, say): kept whole if the record's fields do not render it back byte for byte.
    pub fn new(record: &AtRecord<'_>, line: Option<&[u8]>) -> Self {
        Self::checked(Fields::of(record), line)
    }

    /// The entry of `fields`, or of `line` whole if given and the fields do not render it.
    fn checked(fields: Fields<'_>, line: Option<&[u8]>) -> Self {
        match (Self::compact(&fields), line) {
            (Some(e), None) => e,
            (Some(e), Some(line)) if e.with_line(|l| l == line) => e,
            (_, Some(line)) => Self::whole(line),
            (None, None) => {
                let mut line = Vec::new();
                AtRecord::write_fields_to(
                    fields.server,
                    fields.diff,
                    fields.client,
                    fields.location,
                    fields.time,
                    &mut line,
                );
                Self::whole(&line)
            }
        }
    }

    fn whole(line: &[u8]) -> Self {
        let mut data = Vec::with_capacity(1 + line.len());
        data.push(WHOLE);
        data.extend_from_slice(line);
        Entry {
            data: data.into_boxed_slice(),
        }
    }

    /// The compact entry of `f`, if every field fits its length.
    fn compact(f: &Fields<'_>) -> Option<Self> {
        let plan = Plan::of(f)?;
        let mut data = vec![0; plan.len].into_boxed_slice();
        plan.write(f, &mut data);
        Some(Entry { data })
    }

    /// Writes `record` over this entry in place when its compact form takes exactly as many bytes
    /// (the usual update: same client, same server, same formats), so an update allocates nothing.
    fn refill(&mut self, record: &AtRecord<'_>) -> bool {
        let f = Fields::of(record);
        match Plan::of(&f) {
            Some(plan) if self.whole_line().is_none() && plan.len == self.data.len() => {
                plan.write(&f, &mut self.data);
                true
            }
            _ => false,
        }
    }

    /// The entry of an AT line whose client time and time difference are known already (a record
    /// read back from disk, checked and parsed on another thread).
    pub fn of_line(line: &[u8], time: Timestamp, diff: TimeDiff) -> Self {
        let key = RecordKey::of_line(line, time, diff);
        let fields = Fields {
            server: key.server,
            diff,
            client: key.client,
            location: key.location,
            time: key.time_text,
        };
        Self::checked(fields, Some(line))
    }

    /// Whether the entry holds the record's fields (and renders its line from them, the canonical
    /// line of those fields), rather than a line kept whole as it was given.
    pub fn is_fields(&self) -> bool {
        self.whole_line().is_none()
    }

    /// The AT line, when the entry is kept whole.
    fn whole_line(&self) -> Option<&[u8]> {
        match self.data.split_first() {
            Some((&WHOLE, line)) => Some(line),
            _ => None,
        }
    }

    /// The fields of a compact entry.
    fn parts(&self) -> Option<Parts<'_>> {
        let (&form, rest) = self.data.split_first()?;
        if form == WHOLE {
            return None;
        }
        let (client, rest) = Held::unpack_text(rest)?;
        let Held::Text(client) = client else {
            return None;
        };
        let (server, rest) = if form & SERVER_NUMBER != 0 {
            let (&n, rest) = rest.split_first()?;
            (servers::name(n)?, rest)
        } else {
            let (&len, rest) = rest.split_first()?;
            rest.split_at_checked(usize::from(len))?
        };
        let (diff, rest) = rest.split_at_checked(usize::from(form >> DIFF_SHIFT & 15))?;
        let (location, rest) = Held::unpack(rest, form & LOCATION_NUMBERS != 0, true)?;
        let (time, _) = Held::unpack(rest, form & TIME_NUMBER != 0, false)?;
        Some(Parts {
            server,
            diff: TimeDiff::from_nanos(i128::from(unzigzag(le_u64(diff)))),
            location,
            time,
            client,
        })
    }

    /// Appends the AT line (without `\n`).
    pub fn write_line(&self, out: &mut Vec<u8>) {
        match self.parts() {
            Some(p) => p.with_texts(|location, time| {
                AtRecord::write_fields_to(p.server, p.diff, p.client, location, time, out);
            }),
            None => out.extend_from_slice(self.whole_line().unwrap_or_default()),
        }
    }

    /// The AT line, exactly as first produced.
    pub fn line(&self) -> Cow<'_, [u8]> {
        match self.whole_line() {
            Some(line) => Cow::Borrowed(line),
            None => {
                let mut line = Vec::with_capacity(self.data.len() + 48);
                self.write_line(&mut line);
                Cow::Owned(line)
            }
        }
    }

    /// `f` of the AT line, rendered into a buffer kept for that (no allocation).
    pub fn with_line<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        if let Some(line) = self.whole_line() {
            return f(line);
        }
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                self.write_line(&mut buf);
                f(&buf)
            }
            // Asked again from within `f`: a buffer of its own.
            Err(_) => f(&self.line()),
        })
    }

    /// The AT line's length, worked out from the fields' lengths (nothing is rendered).
    pub fn line_len(&self) -> usize {
        match self.parts() {
            Some(p) => AtRecord::fields_len(
                p.server.len(),
                p.diff,
                p.client.len(),
                p.location.text_len(),
                p.time.text_len(),
            ),
            None => self.whole_line().map_or(0, <[u8]>::len),
        }
    }

    /// The client id.
    #[inline]
    pub fn client(&self) -> &[u8] {
        // A compact entry holds the id first, so finding a client in the table (which compares ids)
        // reads two lengths' bytes and the id, not the whole entry.
        match self.data.split_first() {
            Some((&form, rest)) if form != WHOLE => match Held::unpack_text(rest) {
                Some((Held::Text(client), _)) => client,
                _ => &[],
            },
            _ => self.whole_key(|k| k.client),
        }
    }

    /// The name of the server that took the record.
    pub fn server(&self) -> &[u8] {
        match self.parts() {
            Some(p) => p.server,
            None => self.whole_key(|k| k.server),
        }
    }

    /// The client time.
    pub fn time(&self) -> Timestamp {
        match self.parts() {
            Some(p) => p.time_value(),
            None => self.whole_key(|k| k.time),
        }
    }

    /// The full record, parsed back from its line.
    pub fn record(&self) -> Option<AtRecord<'static>> {
        self.with_line(|l| AtRecord::parse(l).ok().map(AtRecord::into_owned))
    }

    /// `f` of the key of an entry kept whole.
    fn whole_key<'s, R>(&'s self, f: impl FnOnce(RecordKey<'s>) -> R) -> R {
        let line = self.whole_line().unwrap_or_default();
        let (time, diff) = AtRecord::parse(line)
            .map(|r| (r.time.value(), r.diff))
            .unwrap_or_default();
        f(RecordKey::of_line(line, time, diff))
    }

    /// `f` of this record's place in the herd's order (its texts rendered on the stack).
    pub fn with_key<R>(&self, f: impl FnOnce(RecordKey<'_>) -> R) -> R {
        match self.parts() {
            Some(p) => p.with_texts(|location, time_text| {
                f(RecordKey {
                    time: p.time_value(),
                    server: p.server,
                    diff: p.diff,
                    client: p.client,
                    location,
                    time_text,
                })
            }),
            None => self.whole_key(f),
        }
    }

    /// `self` against the record of key `other` in the herd's order. The location's and time's
    /// texts, the key's last fields, are rendered only when the fields before them are equal.
    pub fn cmp_key(&self, other: &RecordKey<'_>) -> Ordering {
        let Some(p) = self.parts() else {
            return self.whole_key(|k| k.cmp(other));
        };
        let head = RecordKey {
            location: &[],
            time_text: &[],
            ..*other
        };
        let key = RecordKey {
            time: p.time_value(),
            server: p.server,
            diff: p.diff,
            client: p.client,
            location: &[],
            time_text: &[],
        };
        match key.cmp(&head) {
            Ordering::Equal => self.with_key(|k| k.cmp(other)),
            decided => decided,
        }
    }

    /// `self` against `other` in the herd's record order.
    pub fn cmp_record(&self, other: &AtRecord<'_>) -> Ordering {
        self.cmp_key(&other.key())
    }

    /// Bytes of the entry's allocation (for tests of its size).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.data.len()
    }
}

/// Makes [`Prepared`] records for one cache, on any thread.
#[derive(Debug, Clone)]
pub struct Preparer {
    hasher: foldhash::fast::RandomState,
}

impl Preparer {
    /// The prepared record of `line`, parsed and checked: `None` if it is not an AT line.
    pub fn prepare_line(&self, line: &[u8]) -> Option<Prepared> {
        let r = AtRecord::parse(line).ok()?;
        Some(self.prepare(line, r.time.value(), r.diff))
    }

    /// The entry of `line` (an AT line whose client time and time difference are known) and its
    /// hashes.
    pub fn prepare(&self, line: &[u8], time: Timestamp, diff: TimeDiff) -> Prepared {
        let entry = Entry::of_line(line, time, diff);
        Prepared {
            table_hash: self.hasher.hash_one(entry.client()),
            sync_key: sync::key(entry.client()),
            line_hash: sync::hash(line),
            line_len: line.len(),
            entry,
        }
    }
}

/// A record ready for [`Cache::put_prepared`].
#[derive(Debug)]
pub struct Prepared {
    entry: Entry,
    table_hash: u64,
    sync_key: u64,
    line_hash: u64,
    line_len: usize,
}

impl Prepared {
    /// The record's entry.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }
}

/// Client id → newest record.
#[derive(Debug, Default)]
pub struct Cache {
    table: HashTable<u32>,
    entries: Vec<Entry>,
    /// Randomly seeded, so crafted client ids cannot aim at one bucket.
    hasher: foldhash::fast::RandomState,
    /// Fingerprints of every range of reconciliation keys.
    sketch: Sketch,
    /// What the cache holds against the byte budget: every AT line plus
    /// [`ENTRY_OVERHEAD`](crate::node::limits::ENTRY_OVERHEAD) a client.
    bytes: u64,
}

impl Cache {
    /// How many clients.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no client.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The index of `client`.
    pub fn index_of(&self, client: &[u8]) -> Option<usize> {
        self.index_of_hashed(self.hasher.hash_one(client), client)
    }

    /// Everything about a record that does not need the cache: its entry and its hashes. Made on
    /// other threads at start ([`Preparer`]), so loading only probes and inserts.
    pub fn preparer(&self) -> Preparer {
        Preparer {
            hasher: self.hasher.clone(),
        }
    }

    /// Stores a prepared record: as a new client, or over an older record of its client.
    /// Returns whether it was stored (not older than or equal to the one held).
    pub fn put_prepared(&mut self, p: Prepared) -> bool {
        match self.index_of_hashed(p.table_hash, p.entry.client()) {
            Some(i) => {
                if p.entry.with_key(|new| self.entries[i].cmp_key(&new)) != Ordering::Less {
                    return false;
                }
                let old_len = self.entries[i].line_len();
                self.bytes = self.bytes - old_len as u64 + p.line_len as u64;
                self.entries[i] = p.entry;
                self.sketch.update(i, p.sync_key, p.line_hash);
            }
            None => {
                let index = self.entries.len();
                self.bytes += p.line_len as u64 + ENTRY_OVERHEAD;
                self.entries.push(p.entry);
                let (entries, hasher) = (&self.entries, &self.hasher);
                self.table.insert_unique(p.table_hash, index as u32, |&i| {
                    hasher.hash_one(entries[i as usize].client())
                });
                self.sketch
                    .insert(index, p.sync_key, p.line_hash, &self.entries);
            }
        }
        true
    }

    fn index_of_hashed(&self, hash: u64, client: &[u8]) -> Option<usize> {
        let entries = &self.entries;
        self.table
            .find(hash, |&i| entries[i as usize].client() == client)
            .map(|&i| i as usize)
    }

    /// The entry at `index`.
    pub fn get(&self, index: usize) -> Option<&Entry> {
        self.entries.get(index)
    }

    /// Stores `record` as the entry at `index` (same client); `line` as for [`Entry::new`].
    pub fn replace(&mut self, index: usize, record: &AtRecord<'_>, line: Option<&[u8]>) {
        let Some(slot) = self.entries.get_mut(index) else {
            return;
        };
        let old_len = slot.line_len();
        *slot = Entry::new(record, line);
        let (new, new_len) = slot.with_line(|l| (sync::hash(l), l.len()));
        self.bytes = self.bytes - old_len as u64 + new_len as u64;
        self.sketch.update(index, sync::key(slot.client()), new);
    }

    /// Stores `record` as the entry at `index` (same client), where `written` is the AT line
    /// written from it here (an IAMAT's reply): hashed as it is, and the entry rewritten in place when
    /// it keeps its size, so an update renders nothing new and allocates nothing.
    pub fn replace_written(&mut self, index: usize, record: &AtRecord<'_>, written: &[u8]) {
        let Some(slot) = self.entries.get_mut(index) else {
            return;
        };
        let old_len = slot.line_len();
        if !slot.refill(record) {
            *slot = Entry::new(record, None);
        }
        self.bytes = self.bytes - old_len as u64 + written.len() as u64;
        self.sketch
            .update(index, sync::key(&record.client), sync::hash(written));
    }

    /// Makes room for `more` clients at once, so a start that loads a million records does not
    /// grow (and rehash) the table twenty times.
    pub fn reserve(&mut self, more: usize) {
        self.entries.reserve(more);
        self.sketch.reserve(more);
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.table
            .reserve(more, |&i| hasher.hash_one(entries[i as usize].client()));
    }

    /// Adds a client that is not in the cache; returns its index.
    pub fn push(&mut self, entry: Entry) -> usize {
        let line = entry.line().into_owned();
        self.push_line(entry, &line)
    }

    /// [`Cache::push`] of an entry whose AT line is `line` (the caller has it: nothing is rendered).
    pub fn push_line(&mut self, entry: Entry, line: &[u8]) -> usize {
        let hash = self.hasher.hash_one(entry.client());
        let index = self.entries.len();
        let (record, len) = (sync::hash(line), line.len());
        self.bytes += len as u64 + ENTRY_OVERHEAD;
        let key = sync::key(entry.client());
        self.entries.push(entry);
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.table.insert_unique(hash, index as u32, |&i| {
            hasher.hash_one(entries[i as usize].client())
        });
        self.sketch.insert(index, key, record, &self.entries);
        index
    }

    /// What the cache holds against the byte budget: its AT lines plus
    /// [`ENTRY_OVERHEAD`] a client.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Every entry, by index.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The fingerprint trie of the records.
    pub fn sketch(&self) -> &Sketch {
        &self.sketch
    }

    /// Every entry, in index order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_clients_by_the_id_inside_the_line() {
        let mut c = Cache::default();
        for i in 0..1000 {
            let line = format!("AT Alford +0.000000001 client{i} +1+1 {i}");
            let r = AtRecord::parse(line.as_bytes()).unwrap();
            assert_eq!(c.push(Entry::new(&r, None)), i);
        }
        assert_eq!(c.index_of(b"client777"), Some(777));
        assert_eq!(c.get(777).unwrap().client(), b"client777");
        assert_eq!(c.index_of(b"client1000"), None);
        let newer = AtRecord::parse(b"AT Ball -5.000000000 client777 +2+2 9999").unwrap();
        assert_eq!(c.get(777).unwrap().cmp_record(&newer), Ordering::Less);
        c.replace(777, &newer, None);
        assert_eq!(
            &c.get(777).unwrap().line()[..],
            b"AT Ball -5.000000000 client777 +2+2 9999"
        );
        assert_eq!(c.index_of(b"client777"), Some(777));
        // The entry reads the new line.
        let line = b"AT Ball -6.000000000 client777 +3+3 9999";
        let same_len = AtRecord::parse(line).unwrap();
        c.replace(777, &same_len, Some(line));
        assert_eq!(&c.get(777).unwrap().line()[..], line);
        assert_eq!(c.get(777).unwrap().client(), b"client777");
        assert_eq!(c.get(777).unwrap().cmp_record(&same_len), Ordering::Equal);
        // Equal keys, different time text: not the same record; the full order decides.
        let other_text = AtRecord::parse(b"AT Ball -6.000000000 client777 +3+3 9999.0").unwrap();
        assert_eq!(c.get(777).unwrap().cmp_record(&other_text), Ordering::Less);
        assert_eq!(c.index_of(b"client777"), Some(777));
    }

    /// Drives `line` (a valid AT line) through every entry point of the cache, and checks that each
    /// gives it back byte for byte, with the record's key, client, server and time.
    fn through_the_cache(line: &[u8]) -> Result<(), String> {
        let record = AtRecord::parse(line).map_err(|e| format!("{e:?}"))?;
        let canonical = record.to_bytes();
        let check = |how: &str, e: &Entry, want: &[u8]| -> Result<(), String> {
            let fail = |what: &str| {
                Err(format!(
                    "{how}: {what} of {:?}",
                    String::from_utf8_lossy(line)
                ))
            };
            if &e.line()[..] != want {
                return fail(&format!("line {:?}", String::from_utf8_lossy(&e.line())));
            }
            if e.line_len() != want.len() || e.with_line(|l| l != want) {
                return fail("rendered line");
            }
            let r = AtRecord::parse(want).map_err(|e| format!("{e:?}"))?;
            if !e.with_key(|k| k == r.key()) || e.cmp_record(&r) != Ordering::Equal {
                return fail("key");
            }
            if e.client() != &r.client[..] || e.server() != &r.server[..] {
                return fail("client or server");
            }
            if e.time() != r.time.value() || e.record().as_ref() != Some(&r) {
                return fail("time or record");
            }
            Ok(())
        };
        // Read back from disk (the line kept as given): on a loading thread, then into the cache.
        let mut disk = Cache::default();
        let p = disk.preparer().prepare_line(line).ok_or("not prepared")?;
        check("prepared", p.entry(), line)?;
        disk.put_prepared(p);
        check("loaded", disk.get(0).ok_or("not loaded")?, line)?;
        check("kept", &Entry::new(&record, Some(line)), line)?;
        // A new client's IAMAT or a flooded record (no line given): its canonical line.
        let mut made = Cache::default();
        made.push(Entry::new(&record, None));
        check("pushed", made.get(0).ok_or("not pushed")?, &canonical)?;
        // An update over an older record of the client: flooded, and answered here (in place when
        // the sizes agree).
        let older = AtRecord {
            server: Cow::Borrowed(b"Ball"),
            diff: TimeDiff::from_nanos(0),
            client: record.client.clone(),
            location: herd_proto::Location::parse(b"+0+0").map_err(|e| format!("{e:?}"))?,
            time: ClientTime::parse(b"0").map_err(|e| format!("{e:?}"))?,
        };
        for written in [false, true] {
            let mut c = Cache::default();
            c.push(Entry::new(&older, None));
            if written {
                c.replace_written(0, &record, &canonical);
            } else {
                c.replace(0, &record, None);
            }
            check("updated", c.get(0).ok_or("no entry")?, &canonical)?;
            if c.sketch().root() != made.sketch().root() || c.bytes() != made.bytes() {
                return Err(format!("fingerprint after an update of {line:?}"));
            }
        }
        Ok(())
    }

    /// Every way a record can arrive: made here, flooded, read back from disk (a line written by
    /// hand among them); the line the cache gives back is byte for byte the line it was given,
    /// whether its fields are held as numbers or as text.
    #[test]
    fn every_line_renders_back_byte_for_byte() {
        use proptest::prelude::*;
        servers::register(b"Alford");
        servers::register(b"Hamilton");
        let text = |max| proptest::collection::vec(33u8..=255, 1..max);
        let digits = |max| proptest::collection::vec(b'0'..=b'9', 1..max);
        // `[+-]` leading zeros, digits, maybe a point and decimals.
        let coordinate = (
            any::<bool>(),
            0..4usize,
            digits(4),
            proptest::option::of(digits(20)),
        );
        let mut runner = proptest::test_runner::TestRunner::default();
        runner
            .run(
                &(
                    prop_oneof![
                        Just(b"Alford".to_vec()),
                        Just(b"Hamilton".to_vec()),
                        text(300)
                    ],
                    prop_oneof![
                        any::<i64>().prop_map(i128::from),
                        any::<i128>(),
                        (-10_000_000_000i128..10_000_000_000)
                    ],
                    text(40),
                    (coordinate.clone(), coordinate),
                    (0..4usize, digits(24), proptest::option::of(digits(12))),
                    any::<bool>(),
                ),
                |(server, diff, client, (lat, lon), (zeros, secs, frac), sloppy)| {
                    let mut loc = Vec::new();
                    for (negative, zeros, int, frac) in [lat, lon] {
                        loc.push(if negative { b'-' } else { b'+' });
                        loc.resize(loc.len() + zeros, b'0');
                        loc.extend_from_slice(&int);
                        if let Some(f) = frac {
                            loc.push(b'.');
                            loc.extend_from_slice(&f);
                        }
                    }
                    let mut time = vec![b'0'; zeros];
                    time.extend_from_slice(&secs);
                    if let Some(f) = frac {
                        time.push(b'.');
                        time.extend_from_slice(&f);
                    }
                    let mut line = Vec::new();
                    AtRecord::write_fields_to(
                        &server,
                        TimeDiff::from_nanos(diff),
                        &client,
                        &loc,
                        &time,
                        &mut line,
                    );
                    if sloppy {
                        // A line written by hand: the difference with a leading zero.
                        let at = 3 + server.len() + 2;
                        line.insert(at, b'0');
                    }
                    if AtRecord::parse(&line).is_err() {
                        return Ok(());
                    }
                    through_the_cache(&line).map_err(TestCaseError::fail)
                },
            )
            .unwrap();
    }

    /// Odd forms of the numbers a client sends: each is held as numbers when they render back to the
    /// very same text, and as text otherwise; either way every entry point gives it back unchanged.
    #[test]
    fn odd_forms_come_back_as_sent() {
        servers::register(b"Alford");
        let locations = [
            "+0.0+0.0",
            "-0.0-0.0",
            "+0-0",
            "-00.000+000.000",
            "+34.068930-118.445127",
            "+90-180",
            "-90.000000000000000+180.000000000000000",
            "+00000034.5-00000118.25",
            "+000000034.5-118.25",
            "+1.123456789012345+1.1234567890123456",
            "+1.5000000000000000000000-0.1",
            "+12.3456-123.4567",
            "-0.000001+0.00000000000001",
        ];
        let times = [
            "0",
            "0.0",
            "00",
            "0.000000000",
            "1700000000",
            "1700000000.000000000",
            "1700000000.1",
            "1700000000.10",
            "1764740000.123456789",
            "0001700000000.000000001",
            "9999999999999999.999",
            "99999999999999999",
            "999999999999999999",
            "18446744073709551615",
            "18446744073709551615.999999999",
            "0000000000000000000000000001",
            "1.000000001",
        ];
        let diffs = [
            "+0.000000000",
            "-0.000000001",
            "+0.263873386",
            "-12345.678901234",
            "+9223372036.854775807",
            "-9223372036.854775808",
            "+9223372036.854775808",
            "+170141183460469231731.687303715",
        ];
        for (i, (location, time)) in locations
            .iter()
            .flat_map(|l| times.iter().map(move |t| (l, t)))
            .enumerate()
        {
            for server in ["Alford", "Nowhere-not-in-the-herd"] {
                let diff = diffs[i % diffs.len()];
                let line = format!("AT {server} {diff} kiwi.cs.ucla.edu {location} {time}");
                through_the_cache(line.as_bytes()).unwrap();
                // Written by hand: a difference with a leading zero is not the canonical form.
                let hand = format!("AT {server} +00.000000000 c {location} {time}");
                through_the_cache(hand.as_bytes()).unwrap();
            }
        }
    }

    #[test]
    fn decimals_read_only_what_they_render_back() {
        for n in 1..20u32 {
            let max = 10u64.checked_pow(n).map_or(u64::MAX, |p| p - 1);
            let bytes = (64 - max.leading_zeros() as usize).div_ceil(8);
            assert_eq!(usize::from(VALUE_BYTES[n as usize]), bytes, "{n} digits");
        }
        let held = [
            ("+0", true),
            ("-0.0", true),
            ("+00000000.5", true),
            ("+1.000000000000000", true),
            ("0", false),
            ("0000000000000000.000", false),
            ("1234567890123456.789", false),
            ("1234.567890123456789", false),
        ];
        for (text, signed) in held {
            let (d, rest) = Decimal::read(text.as_bytes(), signed).unwrap();
            assert!(rest.is_empty(), "{text}");
            let mut out = Small::new();
            d.render(&mut out);
            assert_eq!(out.as_bytes(), text.as_bytes());
            let mut packed = Vec::new();
            d.pack(&mut |b| packed.extend_from_slice(b));
            assert_eq!(packed.len(), d.packed_len());
            assert_eq!(Decimal::unpack(&packed, signed), Some((d, &[][..])));
        }
        let not_held = [
            ("0", true),
            ("+", true),
            ("+.5", true),
            ("+1.", true),
            ("+000000000.5", true),
            ("+1.0000000000000000", true),
            ("+1", false),
            ("12345678901234567890", false),
            ("00000000000000001", false),
        ];
        for (text, signed) in not_held {
            assert!(Decimal::read(text.as_bytes(), signed).is_none(), "{text}");
        }
        // What follows is left: a location's longitude after its latitude.
        let (lat, rest) = Decimal::read(b"+34.068930-118.445127", true).unwrap();
        assert_eq!((lat.int_digits(), lat.frac_digits()), (2, 6));
        assert_eq!(rest, b"-118.445127");
    }

    #[test]
    fn an_update_written_here_is_the_same_entry_and_fingerprint_as_a_fresh_one() {
        let (mut updated, mut fresh) = (Cache::default(), Cache::default());
        for i in 0..100 {
            let line = format!("AT Alford +0.000000001 c{i} +1+1 {i}");
            updated.push(Entry::new(&AtRecord::parse(line.as_bytes()).unwrap(), None));
        }
        for i in 0..100 {
            // Same size (rewritten in place) for most, longer for every tenth.
            let time = if i % 10 == 0 {
                format!("{i}.5")
            } else {
                format!("{}", i + 1)
            };
            let line = format!("AT Alford +0.00000000{} c{i} +1+1 {time}", i % 10);
            let r = AtRecord::parse(line.as_bytes()).unwrap();
            updated.replace_written(i, &r, line.as_bytes());
            assert_eq!(&updated.get(i).unwrap().line()[..], line.as_bytes());
            fresh.push(Entry::new(&r, None));
        }
        assert_eq!(updated.sketch().root(), fresh.sketch().root());
        assert_eq!(updated.bytes(), fresh.bytes());
        assert_eq!(updated.index_of(b"c42"), Some(42));
    }

    #[test]
    fn a_record_takes_its_fields_and_not_its_line() {
        servers::register(b"Alford");
        let line = b"AT Alford +0.263873386 bench-123456 +12.3456-123.4567 1764740000.123456789";
        let r = AtRecord::parse(line).unwrap();
        let e = Entry::new(&r, Some(line));
        assert_eq!(&e.line()[..], line);
        // The form, the client id (its length first), the server's number, 4 bytes of difference,
        // 4 + 4 of location and 9 of time: at most 40 bytes, so one 48-byte block of the allocator.
        assert_eq!(e.held(), 1 + 2 + b"bench-123456".len() + 1 + 4 + 8 + 9);
        assert!(e.held() <= 40, "{}", e.held());
        assert_eq!(std::mem::size_of::<Entry>(), 16);
        // A server that is not one of the herd's names: held by name.
        let line = b"AT Elsewhere +0.263873386 bench-123456 +12.3456-123.4567 1764740000.123456789";
        let e = Entry::new(&AtRecord::parse(line).unwrap(), Some(line));
        assert_eq!(e.held(), 1 + 2 + b"bench-123456".len() + 1 + 9 + 4 + 8 + 9);
        assert_eq!(&e.line()[..], line);
        // Numbers that would not fit their form: held as text, still compact.
        let (location, time) = ("+1.12345678901234567-1", "00000000000000000001");
        let line = format!("AT Alford +0.100000000 c {location} {time}");
        let line = line.as_bytes();
        let e = Entry::new(&AtRecord::parse(line).unwrap(), Some(line));
        assert_eq!(
            e.held(),
            1 + 2 + 1 + 1 + 4 + 2 + location.len() + 2 + time.len()
        );
        assert_eq!(&e.line()[..], line);
        // A line that does not render back the same (a difference written with a leading zero, by
        // hand) is kept whole, and given back as it was.
        let line = b"AT Alford +00.263873386 bench-1 +1+1 5";
        let r = AtRecord::parse(line).unwrap();
        let e = Entry::new(&r, Some(line));
        assert_eq!(e.held(), 1 + line.len());
        assert_eq!(&e.line()[..], line);
        assert_eq!(e.client(), b"bench-1");
        assert!(e.with_key(|k| k == r.key()));
    }
}
