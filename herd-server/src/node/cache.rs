//! The client cache: each client's newest record, compact and index-addressable.
//!
//! A record is kept as the fields its AT line is made of, without the line's redundant text: the
//! server's name, the time difference as a number, and the client's id, coordinates and time as the
//! client sent them, in one allocation ([`Entry`]). The AT line is rendered from them when it is
//! needed (a reply, a WHATSAT, a flood, the journal, a fingerprint), byte for byte the line the record
//! was made with: the only field that is not kept as text, the time difference, has one wire form,
//! and a line that does not render back the same (one written by hand on disk) is kept whole.
//! The hash table holds only `u32` indexes into the entry vector and finds a client by comparing the
//! id inside the entry, so no id is stored twice. Indexes never change (clients are never removed):
//! link queues and the catch-up cursor address clients by index.
//!
//! The cache also keeps the fingerprint trie of its records ([`crate::node::sync::Sketch`]) up to date as
//! they are stored, so reconciliation never scans it.
//!
//! About 110 bytes a client (entry, fields, table slot, trie chain): a million clients fit in well
//! under 150 MB.

use std::borrow::Cow;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use herd_proto::{AtRecord, ClientTime, RecordKey, TimeDiff, Timestamp};

use crate::node::limits::ENTRY_OVERHEAD;
use crate::node::sync::{self, Sketch};

/// The first byte of an entry kept as its whole AT line (a compact entry starts with its server
/// name's length, at most [`MAX_SERVER`]).
const WHOLE: u8 = u8::MAX;
/// The longest server name a compact entry holds.
const MAX_SERVER: usize = WHOLE as usize - 1;
/// Bytes of a compact entry before its texts: the server name's length, the time difference
/// (nanoseconds, `i64`), the client id's and the location's lengths (`u16` each).
const HEAD: usize = 1 + 8 + 2 + 2;

/// One client's record, in one allocation of 16 bytes' handle.
///
/// Compact (nearly always): `[server len][diff i64][client len u16][location len u16]` then the
/// server name, the client id, the location and the client time as texts, little-endian numbers.
/// Whole (a line that would not render back the same, a field too long for the lengths): `WHOLE`
/// then the AT line. Either way the record's order key and line come from herd-proto's
/// [`RecordKey`] and [`AtRecord`]: the line's layout is herd-proto's alone.
#[derive(Debug, Clone)]
pub struct Entry {
    data: Box<[u8]>,
}

/// The fields of an entry, borrowed.
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

/// The bytes of `f`'s compact entry, if every field fits its length.
fn compact_len(f: &Fields<'_>) -> Option<usize> {
    i64::try_from(f.diff.as_nanos()).ok()?;
    u16::try_from(f.client.len()).ok()?;
    u16::try_from(f.location.len()).ok()?;
    (f.server.len() <= MAX_SERVER)
        .then(|| HEAD + f.server.len() + f.client.len() + f.location.len() + f.time.len())
}

/// Writes `f`'s compact entry into `data`, of [`compact_len`] bytes.
fn write_compact(f: &Fields<'_>, data: &mut [u8]) {
    let diff = i64::try_from(f.diff.as_nanos()).unwrap_or_default();
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        if let Some(d) = data.get_mut(at..at + bytes.len()) {
            d.copy_from_slice(bytes);
        }
        at += bytes.len();
    };
    put(&[f.server.len() as u8]);
    put(&diff.to_le_bytes());
    put(&(f.client.len() as u16).to_le_bytes());
    put(&(f.location.len() as u16).to_le_bytes());
    for text in [f.server, f.client, f.location, f.time] {
        put(text);
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
                write_fields(&fields, &mut line);
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
        let mut data = vec![0; compact_len(f)?].into_boxed_slice();
        write_compact(f, &mut data);
        Some(Entry { data })
    }

    /// Writes `record` over this entry in place when its compact form takes exactly as many bytes
    /// (the usual update: same client, same server, same formats), so an update allocates nothing.
    fn refill(&mut self, record: &AtRecord<'_>) -> bool {
        let f = Fields::of(record);
        if self.whole_line().is_some() || compact_len(&f) != Some(self.data.len()) {
            return false;
        }
        write_compact(&f, &mut self.data);
        true
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

    /// The AT line, when the entry is kept whole.
    fn whole_line(&self) -> Option<&[u8]> {
        match self.data.split_first() {
            Some((&WHOLE, line)) => Some(line),
            _ => None,
        }
    }

    /// The fields of a compact entry.
    fn fields(&self) -> Option<Fields<'_>> {
        let d = &self.data[..];
        let server = usize::from(*d.first()?);
        if server == usize::from(WHOLE) {
            return None;
        }
        let num = |at: usize, n: usize| d.get(at..at + n);
        let diff = i64::from_le_bytes(num(1, 8)?.try_into().ok()?);
        let client = usize::from(u16::from_le_bytes(num(9, 2)?.try_into().ok()?));
        let location = usize::from(u16::from_le_bytes(num(11, 2)?.try_into().ok()?));
        let texts = d.get(HEAD..)?;
        let (server, texts) = texts.split_at_checked(server)?;
        let (client, texts) = texts.split_at_checked(client)?;
        let (location, time) = texts.split_at_checked(location)?;
        Some(Fields {
            server,
            diff: TimeDiff::from_nanos(i128::from(diff)),
            client,
            location,
            time,
        })
    }

    /// Appends the AT line (without `\n`).
    pub fn write_line(&self, out: &mut Vec<u8>) {
        match self.fields() {
            Some(f) => write_fields(&f, out),
            None => out.extend_from_slice(self.whole_line().unwrap_or_default()),
        }
    }

    /// The AT line, exactly as first produced.
    pub fn line(&self) -> Cow<'_, [u8]> {
        match self.whole_line() {
            Some(line) => Cow::Borrowed(line),
            None => {
                let mut line = Vec::with_capacity(self.data.len() + 24);
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

    /// The AT line's length.
    pub fn line_len(&self) -> usize {
        self.with_line(<[u8]>::len)
    }

    /// The client id.
    pub fn client(&self) -> &[u8] {
        match self.fields() {
            Some(f) => f.client,
            None => self.key().client,
        }
    }

    /// The client time.
    pub fn time(&self) -> Timestamp {
        self.key().time
    }

    /// The full record, parsed back from its line.
    pub fn record(&self) -> Option<AtRecord<'static>> {
        self.with_line(|l| AtRecord::parse(l).ok().map(AtRecord::into_owned))
    }

    /// This record's place in the herd's order.
    pub fn key(&self) -> RecordKey<'_> {
        match self.fields() {
            Some(f) => RecordKey {
                time: ClientTime::parse(f.time)
                    .map(|t| t.value())
                    .unwrap_or_default(),
                server: f.server,
                diff: f.diff,
                client: f.client,
                location: f.location,
                time_text: f.time,
            },
            None => {
                let line = self.whole_line().unwrap_or_default();
                let (time, diff) = AtRecord::parse(line)
                    .map(|r| (r.time.value(), r.diff))
                    .unwrap_or_default();
                RecordKey::of_line(line, time, diff)
            }
        }
    }

    /// `self` against `other` in the herd's record order.
    pub fn cmp_record(&self, other: &AtRecord<'_>) -> Ordering {
        self.key().cmp(&other.key())
    }

    /// Bytes of the entry's allocation (for tests of its size).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.data.len()
    }
}

/// Appends the AT line of `f`, as herd-proto writes it.
fn write_fields(f: &Fields<'_>, out: &mut Vec<u8>) {
    AtRecord::write_fields_to(f.server, f.diff, f.client, f.location, f.time, out);
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
                if self.entries[i].key() >= p.entry.key() {
                    return false;
                }
                let (old, old_len) = self.entries[i].with_line(|l| (sync::hash(l), l.len()));
                self.bytes = self.bytes - old_len as u64 + p.line_len as u64;
                self.entries[i] = p.entry;
                self.sketch.update(p.sync_key, old, p.line_hash);
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
        let (old, old_len) = slot.with_line(|l| (sync::hash(l), l.len()));
        *slot = Entry::new(record, line);
        let (new, new_len) = slot.with_line(|l| (sync::hash(l), l.len()));
        self.bytes = self.bytes - old_len as u64 + new_len as u64;
        self.sketch.update(sync::key(slot.client()), old, new);
    }

    /// Stores `record` as the entry at `index` (same client), where `written` is the AT line
    /// written from it here (an IAMAT's reply): hashed as it is, and the entry rewritten in place when
    /// it keeps its size, so an update renders nothing new and allocates nothing.
    pub fn replace_written(&mut self, index: usize, record: &AtRecord<'_>, written: &[u8]) {
        let Some(slot) = self.entries.get_mut(index) else {
            return;
        };
        let (old, old_len) = slot.with_line(|l| (sync::hash(l), l.len()));
        if !slot.refill(record) {
            *slot = Entry::new(record, None);
        }
        self.bytes = self.bytes - old_len as u64 + written.len() as u64;
        self.sketch
            .update(sync::key(&record.client), old, sync::hash(written));
    }

    /// Makes room for `more` clients at once, so a start that loads a million records does not
    /// grow (and rehash) the table twenty times.
    pub fn reserve(&mut self, more: usize) {
        self.entries.reserve(more);
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.table
            .reserve(more, |&i| hasher.hash_one(entries[i as usize].client()));
    }

    /// Adds a client that is not in the cache; returns its index.
    pub fn push(&mut self, entry: Entry) -> usize {
        let hash = self.hasher.hash_one(entry.client());
        let index = self.entries.len();
        let (record, len) = entry.with_line(|l| (sync::hash(l), l.len()));
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

    /// Every way a record can arrive: made here, flooded, read back from disk (a line written by
    /// hand among them); the line the cache gives back is byte for byte the line it was given.
    #[test]
    fn every_line_renders_back_byte_for_byte() {
        use proptest::prelude::*;
        let text = |max| proptest::collection::vec(33u8..=255, 1..max);
        let digits = proptest::collection::vec(b'0'..=b'9', 1..24);
        let mut runner = proptest::test_runner::TestRunner::default();
        runner
            .run(
                &(
                    text(300),
                    prop_oneof![any::<i64>().prop_map(i128::from), any::<i128>()],
                    text(40),
                    (any::<bool>(), digits.clone(), digits.clone()),
                    (
                        digits,
                        proptest::option::of(proptest::collection::vec(b'0'..=b'9', 0..12)),
                    ),
                    any::<bool>(),
                ),
                |(server, diff, client, (north, lat, lon), (secs, frac), sloppy)| {
                    let mut loc = vec![if north { b'+' } else { b'-' }];
                    loc.extend_from_slice(&lat[..lat.len().min(2)]);
                    loc.push(if north { b'-' } else { b'+' });
                    loc.extend_from_slice(&lon[..lon.len().min(3)]);
                    let mut time = secs.clone();
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
                    let Ok(record) = AtRecord::parse(&line) else {
                        return Ok(());
                    };
                    // Kept as given (from disk, or the reply the IAMAT wrote).
                    let e = Entry::new(&record, Some(&line));
                    prop_assert_eq!(&e.line()[..], &line[..]);
                    prop_assert_eq!(e.key(), record.key());
                    prop_assert_eq!(e.client(), &record.client[..]);
                    let p = Preparer {
                        hasher: Default::default(),
                    }
                    .prepare(&line, record.time.value(), record.diff);
                    prop_assert_eq!(&p.entry().line()[..], &line[..]);
                    prop_assert_eq!(p.entry().key(), record.key());
                    // Made from the record alone (flooded): its canonical line.
                    let e = Entry::new(&record, None);
                    prop_assert_eq!(&e.line()[..], &record.to_bytes()[..]);
                    prop_assert_eq!(e.record().map(|r| r.to_bytes()), Some(record.to_bytes()));
                    Ok(())
                },
            )
            .unwrap();
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
        let line = b"AT Alford +0.263873386 bench-123456 +12.3456-123.4567 1479413884.392014450";
        let r = AtRecord::parse(line).unwrap();
        let e = Entry::new(&r, Some(line));
        assert_eq!(&e.line()[..], line);
        // The line less `AT `, the difference's text and four spaces, plus 13 bytes of lengths and
        // the difference: under 72 bytes, so one 80-byte block of the allocator.
        assert_eq!(e.held(), line.len() - 3 - 12 - 4 + HEAD);
        assert!(e.held() <= 72, "{}", e.held());
        assert_eq!(std::mem::size_of::<Entry>(), 16);
        // A line that does not render back the same (a difference written with a leading zero, by
        // hand) is kept whole, and given back as it was.
        let line = b"AT Alford +00.263873386 bench-1 +1+1 5";
        let r = AtRecord::parse(line).unwrap();
        let e = Entry::new(&r, Some(line));
        assert_eq!(e.held(), 1 + line.len());
        assert_eq!(&e.line()[..], line);
        assert_eq!(e.client(), b"bench-1");
        assert_eq!(e.key(), r.key());
    }
}
