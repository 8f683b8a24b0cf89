//! The client cache: each client's newest record, compact and index-addressable.
//!
//! A record is kept as its AT line (which the server replies and floods byte for byte) plus the two
//! numbers of its order key (client time, time difference), and where the client id sits in the line.
//! The hash table holds only `u32` indexes into the entry vector and finds a client by comparing the
//! id inside the line, so no id is stored twice. Indexes never change (clients are never removed):
//! link queues and the catch-up cursor address clients by index.
//!
//! The cache also keeps the fingerprint trie of its records ([`crate::node::sync::Sketch`]) up to date as
//! they are stored, so reconciliation never scans it.
//!
//! About 150 bytes a client (line, entry, table slot, trie chain): a million clients fit in well under
//! 200 MB.

use std::cmp::Ordering;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use herd_proto::{AtRecord, RecordKey, TimeDiff, Timestamp};

use crate::node::limits::ENTRY_OVERHEAD;
use crate::node::sync::{self, Sketch};

/// One client's record: its AT line, and the two numbers of its order key so they are never parsed
/// again. The rest of the key, and where the client id sits, come from herd-proto's
/// [`RecordKey::of_line`]: the line's layout is herd-proto's alone.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The AT line, without `\n`, exactly as first produced.
    line: Box<[u8]>,
    time: Timestamp,
    diff: TimeDiff,
    client_start: u32,
    client_len: u32,
}

impl Entry {
    /// The entry of `record`; `line` is its AT line when the caller has it written already.
    pub fn new(record: &AtRecord<'_>, line: Option<&[u8]>) -> Self {
        let line: Box<[u8]> = line.map_or_else(|| record.to_bytes().into_boxed_slice(), Box::from);
        Self::with_line(record, line)
    }

    /// The entry of `record` whose AT line is `line`.
    fn with_line(record: &AtRecord<'_>, line: Box<[u8]>) -> Self {
        Self::of_line(line, record.time.value(), record.diff)
    }

    /// The entry of an AT line whose client time and time difference are known already (a record
    /// read back from disk, checked and parsed on another thread).
    pub fn of_line(line: Box<[u8]>, time: Timestamp, diff: TimeDiff) -> Self {
        let client = RecordKey::of_line(&line, time, diff).client;
        // Where the key's client slice starts in the line.
        let client_start = (client.as_ptr() as usize).saturating_sub(line.as_ptr() as usize);
        Entry {
            client_start: client_start as u32,
            client_len: client.len() as u32,
            line,
            time,
            diff,
        }
    }

    /// The AT line.
    pub fn line(&self) -> &[u8] {
        &self.line
    }

    /// The client id.
    pub fn client(&self) -> &[u8] {
        let start = self.client_start as usize;
        self.line
            .get(start..start + self.client_len as usize)
            .unwrap_or_default()
    }

    /// The client time.
    pub fn time(&self) -> Timestamp {
        self.time
    }

    /// The full record, parsed back from the line this server wrote.
    pub fn record(&self) -> Option<AtRecord<'_>> {
        AtRecord::parse(&self.line).ok()
    }

    /// This record's place in the herd's order.
    pub fn key(&self) -> RecordKey<'_> {
        RecordKey::of_line(&self.line, self.time, self.diff)
    }

    /// `self` against `other` in the herd's record order.
    pub fn cmp_record(&self, other: &AtRecord<'_>) -> Ordering {
        self.key().cmp(&other.key())
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
        let entry = Entry::of_line(line.into(), time, diff);
        Prepared {
            table_hash: self.hasher.hash_one(entry.client()),
            sync_key: sync::key(entry.client()),
            line_hash: sync::hash(entry.line()),
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
                let old = sync::hash(self.entries[i].line());
                self.bytes =
                    self.bytes - self.entries[i].line.len() as u64 + p.entry.line.len() as u64;
                self.entries[i] = p.entry;
                self.sketch.update(p.sync_key, old, p.line_hash);
            }
            None => {
                let index = self.entries.len();
                self.bytes += p.entry.line.len() as u64 + ENTRY_OVERHEAD;
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

    /// Stores `record` as the entry at `index` (same client). A line of the same length as the old
    /// one — the usual case: same client, same server, same formats — reuses its allocation.
    pub fn replace(&mut self, index: usize, record: &AtRecord<'_>, line: Option<&[u8]>) {
        let Some(slot) = self.entries.get_mut(index) else {
            return;
        };
        let old = sync::hash(slot.line());
        self.bytes -= slot.line.len() as u64;
        match line {
            Some(line) if line.len() == slot.line.len() => {
                let mut reused = std::mem::take(&mut slot.line);
                reused.copy_from_slice(line);
                *slot = Entry::with_line(record, reused);
            }
            _ => *slot = Entry::new(record, line),
        }
        self.bytes += slot.line.len() as u64;
        self.sketch
            .update(sync::key(slot.client()), old, sync::hash(slot.line()));
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
        self.bytes += entry.line.len() as u64 + ENTRY_OVERHEAD;
        let (key, record) = (sync::key(entry.client()), sync::hash(entry.line()));
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
            c.get(777).unwrap().line(),
            b"AT Ball -5.000000000 client777 +2+2 9999"
        );
        assert_eq!(c.index_of(b"client777"), Some(777));
        // Same length: the allocation is reused, and the entry reads the new line.
        let line = b"AT Ball -6.000000000 client777 +3+3 9999";
        let same_len = AtRecord::parse(line).unwrap();
        c.replace(777, &same_len, Some(line));
        assert_eq!(c.get(777).unwrap().line(), line);
        assert_eq!(c.get(777).unwrap().client(), b"client777");
        assert_eq!(c.get(777).unwrap().cmp_record(&same_len), Ordering::Equal);
        // Equal keys, different time text: not the same record; the full order decides.
        let other_text = AtRecord::parse(b"AT Ball -6.000000000 client777 +3+3 9999.0").unwrap();
        assert_eq!(c.get(777).unwrap().cmp_record(&other_text), Ordering::Less);
        assert_eq!(c.index_of(b"client777"), Some(777));
    }
}
