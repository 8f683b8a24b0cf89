//! Fingerprints of the cache and reconciliation of two caches over a link (issue: catch-up by
//! difference). Sans-IO like the rest of the node: messages in, lines out.
//!
//! # The order both sides share
//! Every client has a *key*, XXH3-64 of its id, and every record a *hash*, XXH3-64 of its AT line (the
//! line is flooded byte for byte, so one record has one hash on every server). A set's *fingerprint* is
//! the sum of its hashes modulo 2⁶⁴. A sum, unlike a hash over a sorted list, is updated in constant
//! time when one record replaces another (subtract the old hash, add the new), so the cache keeps the
//! fingerprint of every range of keys up to date as records are stored — never a scan per link-up.
//!
//! # The tree: a hex trie of sums
//! [`Sketch`] keeps a complete 16-ary tree over the key's leading hex digits: level `d` has 16^d
//! nodes, node `p` holds the count and fingerprint of the keys starting with the `d` digits `p`. The
//! leaves (level [`Sketch::depth`]) also chain the cache indexes of their clients, so the records of any
//! range are found without a scan of the cache. A store touches one node per level (depth + 1 ≤ 6
//! additions). The depth grows with the cache (about 16 to 32 clients a leaf) by rebuilding once per
//! sixteenfold growth, so the work per record stays constant amortised. A range deeper than the leaves
//! is answered by scanning its leaf (a few dozen records).
//!
//! # Why range-based reconciliation over this trie
//! Of the three designs the issue names, this one (Meyer's range-based reconciliation, as Negentropy
//! runs it, on ranges fixed by key prefixes so they line up with a hash tree kept as records arrive,
//! as Riak's active anti-entropy does) was chosen because:
//! - its cost follows the difference: equal roots cost one line each way; one differing client costs
//!   one 16-fingerprint line per level of the trie (four or five for a million clients) and one short
//!   hash list, a few kilobytes in all, whatever the size of the cache;
//! - it needs no estimate of the difference (unlike a fixed-size IBLT) and no decoding that can fail;
//!   rateless IBLT would send fewer bytes for a large difference, but its symbols must be computed
//!   over the whole set per session (or kept per coded symbol index), a scan the issue rules out;
//! - the same walk works when the two sides' tries have different depths (a range deeper than one
//!   side's leaves is answered from a scan of that leaf), and when records change during it: a record
//!   stored while reconciling is flooded on the link anyway.
//! - a side that holds nothing in a range gets that range as a plain stream of records; a new server
//!   (`HERD-ROOT 0 0`) gets the whole cache as today's catch-up did.
//!
//! The turns and lines are documented with the peer grammar ([`herd_proto::PeerMessage`]).

use std::collections::VecDeque;

use herd_proto::{KeyRange, PeerMessage, MAX_IDS};
use xxhash_rust::xxh3::xxh3_64;

use crate::cache::Entry;

/// The reconciliation key of a client: where it sits in the order both sides share.
#[inline]
pub fn key(client: &[u8]) -> u64 {
    xxh3_64(client)
}

/// The hash of a record, from its AT line.
#[inline]
pub fn hash(line: &[u8]) -> u64 {
    xxh3_64(line)
}

/// A range's size and fingerprint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sum {
    /// How many records.
    pub count: u64,
    /// Their fingerprint: the sum of their hashes, modulo 2⁶⁴.
    pub fingerprint: u64,
}

impl Sum {
    fn add(&mut self, hash: u64) {
        self.count += 1;
        self.fingerprint = self.fingerprint.wrapping_add(hash);
    }
}

/// No index: the end of a leaf's chain.
const NONE: u32 = u32::MAX;
/// Deepest trie: 16⁵ leaves, for tens of millions of clients.
const MAX_DEPTH: u8 = 5;
/// Grow a level when leaves hold this many clients on average.
const GROW_AT: usize = 32;

#[derive(Debug, Clone, Copy, Default)]
struct Node {
    count: u32,
    fingerprint: u64,
}

/// The fingerprint trie of a cache (see the module docs). It holds no records: the cache's entries are
/// passed in where they are needed.
#[derive(Debug)]
pub struct Sketch {
    depth: u8,
    /// Level `d` has 16^d nodes.
    levels: Vec<Vec<Node>>,
    /// Per leaf, the newest client index of its chain.
    heads: Vec<u32>,
    /// Per client index, the next index of its leaf's chain.
    next: Vec<u32>,
}

impl Default for Sketch {
    fn default() -> Self {
        Self::with_depth(1)
    }
}

impl Sketch {
    fn with_depth(depth: u8) -> Self {
        Sketch {
            depth,
            levels: (0..=depth)
                .map(|d| vec![Node::default(); 1 << (4 * u32::from(d))])
                .collect(),
            heads: vec![NONE; 1 << (4 * u32::from(depth))],
            next: Vec::new(),
        }
    }

    /// The leaf level, in hex digits.
    pub fn depth(&self) -> u8 {
        self.depth
    }

    fn slot(key: u64, level: u8) -> usize {
        match level {
            0 => 0,
            d => (key >> (64 - 4 * u32::from(d))) as usize,
        }
    }

    /// Client `index` (the next index of the cache) with `key` and record hash `hash` was added.
    /// `entries` is the cache after the push (used only when the trie grows a level).
    pub fn insert(&mut self, index: usize, key: u64, hash: u64, entries: &[Entry]) {
        debug_assert_eq!(index, self.next.len());
        let leaf = Self::slot(key, self.depth);
        self.next.push(self.heads[leaf]);
        self.heads[leaf] = index as u32;
        for (d, level) in self.levels.iter_mut().enumerate() {
            let n = &mut level[Self::slot(key, d as u8)];
            n.count += 1;
            n.fingerprint = n.fingerprint.wrapping_add(hash);
        }
        if self.depth < MAX_DEPTH && self.next.len() > GROW_AT << (4 * u32::from(self.depth)) {
            self.rebuild(self.depth + 1, entries);
        }
    }

    /// The record of a client with `key` changed from hash `old` to `new`.
    pub fn update(&mut self, key: u64, old: u64, new: u64) {
        for (d, level) in self.levels.iter_mut().enumerate() {
            let n = &mut level[Self::slot(key, d as u8)];
            n.fingerprint = n.fingerprint.wrapping_sub(old).wrapping_add(new);
        }
    }

    /// Rebuilds at `depth` from the cache: once per sixteenfold growth, so constant work per record
    /// amortised.
    fn rebuild(&mut self, depth: u8, entries: &[Entry]) {
        let mut fresh = Sketch::with_depth(depth);
        let mut scratch = Vec::new();
        std::mem::swap(&mut fresh.next, &mut scratch);
        for (i, e) in entries.iter().enumerate() {
            let (k, h) = (key(e.client()), hash(e.line()));
            let leaf = Self::slot(k, depth);
            scratch.push(fresh.heads[leaf]);
            fresh.heads[leaf] = i as u32;
            for (d, level) in fresh.levels.iter_mut().enumerate() {
                let n = &mut level[Self::slot(k, d as u8)];
                n.count += 1;
                n.fingerprint = n.fingerprint.wrapping_add(h);
            }
        }
        fresh.next = scratch;
        *self = fresh;
    }

    /// Count and fingerprint of every record.
    pub fn root(&self) -> Sum {
        let n = self.levels[0][0];
        Sum {
            count: u64::from(n.count),
            fingerprint: n.fingerprint,
        }
    }

    /// Calls `f(index, key)` for every client of `range`'s leaves (a superset of `range` when the range
    /// is deeper than the leaves; filter with the key).
    fn each_in_leaves(&self, range: KeyRange, mut f: impl FnMut(usize)) {
        let (first, last) = self.leaves_of(range);
        for leaf in first..=last {
            let mut i = self.heads[leaf];
            while i != NONE {
                f(i as usize);
                i = self.next[i as usize];
            }
        }
    }

    /// The first and last leaf that `range` touches.
    fn leaves_of(&self, range: KeyRange) -> (usize, usize) {
        (
            Self::slot(range.prefix(), self.depth),
            Self::slot(range.last(), self.depth),
        )
    }

    /// The leaf holding `key`, and the first key after that leaf (`None` past the end).
    pub fn leaf_after(&self, key: u64) -> Option<u64> {
        let shift = 64 - 4 * u32::from(self.depth);
        let leaf = key >> shift;
        leaf.checked_add(1)
            .and_then(|l| l.checked_shl(shift))
            .filter(|&k| k != 0)
    }

    /// The cache indexes and hashes of the records in `range`.
    pub fn items(&self, range: KeyRange, entries: &[Entry]) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        self.each_in_leaves(range, |i| {
            let e = &entries[i];
            if range.digits() <= self.depth || range.contains(key(e.client())) {
                out.push((i, hash(e.line())));
            }
        });
        out
    }

    /// The cache indexes of the records of the leaf holding `key` that lie in `range`.
    pub fn leaf_items(&self, key_in_leaf: u64, range: KeyRange, entries: &[Entry]) -> Vec<u32> {
        let leaf = Self::slot(key_in_leaf, self.depth);
        let mut out = Vec::new();
        let mut i = self.heads[leaf];
        while i != NONE {
            if range.digits() <= self.depth || range.contains(key(entries[i as usize].client())) {
                out.push(i);
            }
            i = self.next[i as usize];
        }
        out
    }

    /// Count and fingerprint of `range`.
    pub fn sum(&self, range: KeyRange, entries: &[Entry]) -> Sum {
        if range.digits() <= self.depth {
            let n =
                self.levels[range.digits() as usize][Self::slot(range.prefix(), range.digits())];
            return Sum {
                count: u64::from(n.count),
                fingerprint: n.fingerprint,
            };
        }
        let mut s = Sum::default();
        self.each_in_leaves(range, |i| {
            let e = &entries[i];
            if range.contains(key(e.client())) {
                s.add(hash(e.line()));
            }
        });
        s
    }

    /// Count and fingerprint of each of the 16 sub-ranges of `range` (which has fewer than 16 digits).
    pub fn children(&self, range: KeyRange, entries: &[Entry]) -> [Sum; 16] {
        let mut out = [Sum::default(); 16];
        if range.digits() < self.depth {
            for (d, s) in out.iter_mut().enumerate() {
                if let Some(c) = range.child(d as u8) {
                    *s = self.sum(c, entries);
                }
            }
            return out;
        }
        let shift = 60 - 4 * u32::from(range.digits());
        self.each_in_leaves(range, |i| {
            let e = &entries[i];
            let k = key(e.client());
            if range.contains(k) {
                out[((k >> shift) & 0xf) as usize].add(hash(e.line()));
            }
        });
        out
    }
}

/// A range holding at most this many records here is answered with its hashes rather than split:
/// below it a list is cheaper than 16 fingerprints and another turn.
pub const LIST: u64 = 16;

/// A range whose 16 sub-ranges all differ and that holds at most this many records here is sent
/// whole both ways rather than split: at that density nearly every record differs, and the records
/// cost less than the fingerprints and hash lists that would find them (so a cache that differs
/// everywhere reconciles at about the speed of a plain stream).
pub const DENSE: u64 = 16 * 32;

/// What a link's reconciliation still has to write, in order.
#[derive(Debug)]
enum Job {
    /// A control line, with its `\n`.
    Line(Vec<u8>),
    /// Records by cache index, read when written (so the newest is sent).
    Records(VecDeque<u32>),
    /// Every record of `range`, leaf by leaf, from the leaf holding `next`.
    Range { range: KeyRange, next: u64 },
    /// The whole cache by index: the plain stream for a side that holds nothing.
    All,
    /// `HERD-SYNCED <records sent>`: the end of the session.
    Synced,
}

/// How a reconciliation ended, for the driver's log and the benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// The link.
    pub link: usize,
    /// A periodic check of a live link (not the catch-up of a link that came up).
    pub periodic: bool,
    /// Records this side sent.
    pub sent: u64,
    /// Records the other side said it sent.
    pub received: u64,
    /// Turns this side received (`HERD-ROOT`/`HERD-OVER` ends).
    pub turns: u32,
    /// Bytes of reconciliation lines and records this side wrote.
    pub bytes: u64,
}

/// A reconciliation line that breaks the protocol: the link is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// A reconciliation line while none is running (or a `HERD-ROOT` while one is).
    #[error("reconciliation line out of turn")]
    OutOfTurn,
}

/// One link's reconciliation state.
#[derive(Debug, Default)]
pub struct Session {
    active: bool,
    periodic: bool,
    /// This turn's answer asks something, so it ends with `HERD-OVER`.
    asked: bool,
    sent: u64,
    received: u64,
    turns: u32,
    bytes: u64,
    /// Where the whole-cache stream is, while it is queued or running.
    all: Option<usize>,
    jobs: VecDeque<Job>,
    /// A link-up catch-up has finished on this link: later sessions are periodic checks.
    caught_up: bool,
}

/// What an incoming reconciliation line did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Something was queued to send.
    Queued,
    /// Nothing to send.
    Nothing,
    /// The session ended (the report is ready).
    Ended(Report),
}

impl Session {
    /// Whether a reconciliation is under way.
    pub fn active(&self) -> bool {
        self.active
    }

    /// Whether the run under way is a periodic check (a link-up catch-up otherwise).
    pub fn periodic(&self) -> bool {
        self.periodic
    }

    /// Whether the whole-cache stream is queued or running (the other side held nothing).
    pub fn streaming_all(&self) -> bool {
        self.all.is_some()
    }

    /// Whether there is anything to write.
    pub fn wants_transmit(&self) -> bool {
        !self.jobs.is_empty()
    }

    /// Whether the whole-cache stream will still send cache index `index` (so a flood need not).
    pub fn streams(&self, index: usize) -> bool {
        self.all.is_some_and(|cursor| index >= cursor)
    }

    fn start(&mut self) {
        self.active = true;
        self.periodic = self.caught_up;
        self.asked = false;
        self.sent = 0;
        self.received = 0;
        self.turns = 0;
        self.bytes = 0;
    }

    fn line(&mut self, m: &PeerMessage<'_>) {
        let mut v = Vec::with_capacity(64);
        m.write_to(&mut v);
        v.push(b'\n');
        if matches!(
            m,
            PeerMessage::Fingerprints { .. } | PeerMessage::Ids { .. } | PeerMessage::Want { .. }
        ) {
            self.asked = true;
        }
        self.jobs.push_back(Job::Line(v));
    }

    /// Opens a reconciliation (the dialling side, at link-up or for a periodic check).
    pub fn open(&mut self, sketch: &Sketch) -> bool {
        if self.active {
            return false;
        }
        self.start();
        let root = sketch.root();
        self.line(&PeerMessage::Root {
            count: root.count,
            fingerprint: root.fingerprint,
        });
        if root.count > 0 {
            // The first split goes with the root, saving a turn when the roots differ.
            let children = sketch.children(KeyRange::ALL, &[]).map(|s| s.fingerprint);
            self.jobs.push_back(Job::Line({
                let mut v = Vec::with_capacity(300);
                PeerMessage::Fingerprints {
                    range: KeyRange::ALL,
                    children,
                }
                .write_to(&mut v);
                v.push(b'\n');
                v
            }));
        }
        self.line(&PeerMessage::Over);
        true
    }

    /// Answers a mismatch on `range`: split it, or list it.
    fn answer(&mut self, range: KeyRange, mine: Sum, sketch: &Sketch, entries: &[Entry]) {
        if mine.count > LIST || range.digits() == 16 {
            if let (Some(_), true) = (range.child(0), mine.count > LIST) {
                let children = sketch.children(range, entries).map(|s| s.fingerprint);
                self.line(&PeerMessage::Fingerprints { range, children });
                return;
            }
        }
        let items = sketch.items(range, entries);
        if items.len() <= MAX_IDS {
            let hashes = items.iter().map(|&(_, h)| h).collect();
            self.line(&PeerMessage::Ids { range, hashes });
        } else {
            // Only at 16 digits: more clients than a line lists share one key. Send them all and
            // ask for all of the other side's.
            self.jobs
                .push_back(Job::Records(items.iter().map(|&(i, _)| i as u32).collect()));
            self.line(&PeerMessage::Ids {
                range,
                hashes: Vec::new(),
            });
        }
    }

    /// Sends every record of `range`.
    fn send_range(&mut self, range: KeyRange) {
        self.jobs.push_back(Job::Range {
            range,
            next: range.prefix(),
        });
    }

    /// Handles a reconciliation line from the other side.
    ///
    /// # Errors
    /// [`SyncError::OutOfTurn`]: the line breaks the turns (the driver closes the link).
    pub fn receive(
        &mut self,
        link: usize,
        m: &PeerMessage<'_>,
        sketch: &Sketch,
        entries: &[Entry],
    ) -> Result<Outcome, SyncError> {
        let before = self.jobs.len();
        match m {
            PeerMessage::Root { count, fingerprint } => {
                if self.active {
                    return Err(SyncError::OutOfTurn);
                }
                self.start();
                let mine = sketch.root();
                if *count == 0 && mine.count > 0 {
                    self.all = Some(0);
                    self.jobs.push_back(Job::All);
                }
                // Otherwise the `HERD-FP -` that follows is compared (equal roots: nothing to do).
                let _ = fingerprint;
            }
            _ if !self.active => return Err(SyncError::OutOfTurn),
            PeerMessage::Fingerprints { range, children } => {
                let mine = sketch.children(*range, entries);
                let total: u64 = mine.iter().map(|s| s.count).sum();
                let differ = children
                    .iter()
                    .zip(&mine)
                    .filter(|(t, m)| **t != m.fingerprint)
                    .count();
                if differ > 0 && (total == 0 || (differ == 16 && total <= DENSE)) {
                    // Nothing here, or a difference so dense that listing costs more than the
                    // records: both sides send all they hold in the range.
                    if total > 0 {
                        self.send_range(*range);
                    }
                    self.line(&PeerMessage::Ids {
                        range: *range,
                        hashes: Vec::new(),
                    });
                    return Ok(Outcome::Queued);
                }
                for (d, (theirs, mine)) in children.iter().zip(mine).enumerate() {
                    let Some(c) = range.child(d as u8) else { break };
                    if mine.fingerprint == *theirs {
                        continue;
                    }
                    if *theirs == 0 {
                        self.send_range(c);
                    } else {
                        self.answer(c, mine, sketch, entries);
                    }
                }
            }
            PeerMessage::Ids { range, hashes } if hashes.is_empty() => {
                // The other side holds nothing here: a plain stream, the whole cache by index when
                // the range is everything.
                if *range == KeyRange::ALL {
                    self.all = Some(0);
                    self.jobs.push_back(Job::All);
                } else {
                    self.send_range(*range);
                }
            }
            PeerMessage::Ids { range, hashes } => {
                let mut theirs = hashes.clone();
                theirs.sort_unstable();
                let items = sketch.items(*range, entries);
                let send: VecDeque<u32> = items
                    .iter()
                    .filter(|(_, h)| theirs.binary_search(h).is_err())
                    .map(|&(i, _)| i as u32)
                    .collect();
                if !send.is_empty() {
                    self.jobs.push_back(Job::Records(send));
                }
                let mut mine: Vec<u64> = items.iter().map(|&(_, h)| h).collect();
                mine.sort_unstable();
                theirs.dedup();
                let want: Vec<u64> = theirs
                    .into_iter()
                    .filter(|h| mine.binary_search(h).is_err())
                    .collect();
                if !want.is_empty() {
                    self.line(&PeerMessage::Want {
                        range: *range,
                        hashes: want,
                    });
                }
            }
            PeerMessage::Want { range, hashes } => {
                let send: VecDeque<u32> = sketch
                    .items(*range, entries)
                    .into_iter()
                    .filter(|(_, h)| hashes.contains(h))
                    .map(|(i, _)| i as u32)
                    .collect();
                if !send.is_empty() {
                    self.jobs.push_back(Job::Records(send));
                }
            }
            PeerMessage::Over => self.end_turn(),
            PeerMessage::Synced { count } => {
                self.received = *count;
                return Ok(Outcome::Ended(self.finish(link)));
            }
            _ => return Ok(Outcome::Nothing),
        }
        Ok(if self.jobs.len() > before {
            Outcome::Queued
        } else {
            Outcome::Nothing
        })
    }

    /// The other side's turn is over and answered: ask on, or end.
    fn end_turn(&mut self) {
        self.turns += 1;
        if self.asked {
            self.asked = false;
            self.line(&PeerMessage::Over);
        } else {
            self.jobs.push_back(Job::Synced);
        }
    }

    fn finish(&mut self, link: usize) -> Report {
        self.active = false;
        self.caught_up = true;
        Report {
            link,
            periodic: self.periodic,
            sent: self.sent,
            received: self.received,
            turns: self.turns,
            bytes: self.bytes,
        }
    }

    /// The link went down or came up again: forget everything but whether it ever caught up.
    pub fn reset(&mut self) {
        *self = Session::default();
    }

    /// Writes up to `max` lines; returns how many records were written and, when the session ended
    /// with this write, its report.
    pub fn transmit(
        &mut self,
        link: usize,
        sketch: &Sketch,
        entries: &[Entry],
        out: &mut Vec<u8>,
        max: usize,
    ) -> (usize, usize, Option<Report>) {
        let start = out.len();
        let (mut lines, mut records) = (0, 0);
        while lines < max {
            let Some(job) = self.jobs.front_mut() else {
                break;
            };
            match job {
                Job::Line(v) => {
                    out.extend_from_slice(v);
                    lines += 1;
                    self.jobs.pop_front();
                }
                Job::Records(q) => match q.pop_front() {
                    Some(i) => {
                        if let Some(e) = entries.get(i as usize) {
                            out.extend_from_slice(e.line());
                            out.push(b'\n');
                            lines += 1;
                            records += 1;
                        }
                    }
                    None => {
                        self.jobs.pop_front();
                    }
                },
                Job::Range { range, next } => {
                    let (range, at) = (*range, *next);
                    let found = sketch.leaf_items(at, range, entries);
                    match sketch.leaf_after(at).filter(|&k| range.contains(k)) {
                        Some(k) => *next = k,
                        None => {
                            self.jobs.pop_front();
                        }
                    }
                    if !found.is_empty() {
                        self.jobs.push_front(Job::Records(found.into()));
                    }
                }
                Job::All => {
                    let cursor = self.all.unwrap_or(0);
                    match entries.get(cursor) {
                        Some(e) => {
                            out.extend_from_slice(e.line());
                            out.push(b'\n');
                            lines += 1;
                            records += 1;
                            self.all = Some(cursor + 1);
                        }
                        None => {
                            self.all = None;
                            self.jobs.pop_front();
                        }
                    }
                }
                Job::Synced => {
                    self.jobs.pop_front();
                    self.sent += records as u64;
                    PeerMessage::Synced { count: self.sent }.write_to(out);
                    out.push(b'\n');
                    lines += 1;
                    self.bytes += (out.len() - start) as u64;
                    return (lines, records, Some(self.finish(link)));
                }
            }
        }
        self.sent += records as u64;
        self.bytes += (out.len() - start) as u64;
        (lines, records, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use herd_proto::AtRecord;

    /// Every node of the trie agrees with a scan of its records.
    fn consistent(c: &Cache) {
        let (s, e) = (c.sketch(), c.entries());
        for d in 0..=s.depth() {
            for p in 0..(1u64 << (4 * u32::from(d))) {
                let r = KeyRange::new(
                    d,
                    if d == 0 {
                        0
                    } else {
                        p << (64 - 4 * u32::from(d))
                    },
                )
                .unwrap();
                let mut scan = Sum::default();
                for x in e.iter().filter(|x| r.contains(key(x.client()))) {
                    scan.add(hash(x.line()));
                }
                assert_eq!(s.sum(r, e), scan, "range {r:?}");
                assert_eq!(s.items(r, e).len() as u64, scan.count);
            }
        }
    }

    #[test]
    fn the_trie_matches_a_scan_as_it_grows_and_records_change() {
        let mut c = Cache::default();
        for i in 0..1200u32 {
            let line = format!("AT A +0.000000001 c{i} +1+1 {i}");
            let r = AtRecord::parse(line.as_bytes()).unwrap();
            c.push(crate::cache::Entry::new(&r, None));
            if i % 97 == 0 {
                let j = (i / 2) as usize;
                let line = format!("AT B +0.000000002 c{j} +2+2 {}", 5000 + i);
                let r = AtRecord::parse(line.as_bytes()).unwrap();
                c.replace(j, &r, None);
            }
            if i == 10 || i == 600 || i == 1199 {
                consistent(&c);
            }
        }
        assert_eq!(c.sketch().depth(), 2);
    }
}
