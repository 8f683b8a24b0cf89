//! The fingerprint trie of a cache ([`Sketch`]): the key and hash of a record, the sums of ranges.

use super::*;

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
    pub(super) fn add(&mut self, hash: u64) {
        self.count += 1;
        self.fingerprint = self.fingerprint.wrapping_add(hash);
    }
}

/// No index: the end of a leaf's chain.
pub(super) const NONE: u32 = u32::MAX;
/// Deepest trie: 16⁵ leaves, for tens of millions of clients.
pub(super) const MAX_DEPTH: u8 = 5;
/// Grow a level when leaves hold this many clients on average.
pub(super) const GROW_AT: usize = 32;

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TrieNode {
    pub(super) count: u32,
    pub(super) fingerprint: u64,
}

/// The fingerprint trie of a cache (see the module docs). It holds no records: the cache's entries are
/// passed in where they are needed.
#[derive(Debug)]
pub struct Sketch {
    pub(super) depth: u8,
    /// Level `d` has 16^d nodes.
    pub(super) levels: Vec<Vec<TrieNode>>,
    /// Per leaf, the newest client index of its chain.
    pub(super) heads: Vec<u32>,
    /// Per client index, the next index of its leaf's chain.
    pub(super) next: Vec<u32>,
    /// Per client index, its record's hash: an update takes the old hash out of the sums without
    /// rendering the old record's line again, and sums of ranges read hashes, not lines.
    pub(super) hashes: Vec<u64>,
}

impl Default for Sketch {
    fn default() -> Self {
        Self::with_depth(1)
    }
}

impl Sketch {
    pub(super) fn with_depth(depth: u8) -> Self {
        Sketch {
            depth,
            levels: (0..=depth)
                .map(|d| vec![TrieNode::default(); 1 << (4 * u32::from(d))])
                .collect(),
            heads: vec![NONE; 1 << (4 * u32::from(depth))],
            next: Vec::new(),
            hashes: Vec::new(),
        }
    }

    /// The leaf level, in hex digits.
    pub fn depth(&self) -> u8 {
        self.depth
    }

    pub(super) fn slot(key: u64, level: u8) -> usize {
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
        self.hashes.push(hash);
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

    /// The record of client `index`, with `key`, changed: its hash is now `new`.
    pub fn update(&mut self, index: usize, key: u64, new: u64) {
        let Some(held) = self.hashes.get_mut(index) else {
            return;
        };
        let old = std::mem::replace(held, new);
        for (d, level) in self.levels.iter_mut().enumerate() {
            let n = &mut level[Self::slot(key, d as u8)];
            n.fingerprint = n.fingerprint.wrapping_sub(old).wrapping_add(new);
        }
    }

    /// Rebuilds at `depth` from the cache: once per sixteenfold growth, so constant work per record
    /// amortised.
    pub(super) fn rebuild(&mut self, depth: u8, entries: &[Entry]) {
        let mut fresh = Sketch::with_depth(depth);
        let mut scratch = Vec::new();
        std::mem::swap(&mut fresh.next, &mut scratch);
        for (i, (e, &h)) in entries.iter().zip(&self.hashes).enumerate() {
            let k = key(e.client());
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
        fresh.hashes = std::mem::take(&mut self.hashes);
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
    pub(super) fn each_in_leaves(&self, range: KeyRange, mut f: impl FnMut(usize)) {
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
    pub(super) fn leaves_of(&self, range: KeyRange) -> (usize, usize) {
        (
            Self::slot(range.prefix(), self.depth),
            Self::slot(range.last(), self.depth),
        )
    }

    /// The cache indexes and hashes of the records in `range`, at once (the reconciliation walks
    /// them a budget at a time instead: see [`WORK_PER_CALL`]).
    #[cfg(test)]
    pub fn items(&self, range: KeyRange, entries: &[Entry]) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        self.each_in_leaves(range, |i| {
            let e = &entries[i];
            if range.digits() <= self.depth || range.contains(key(e.client())) {
                out.push((i, self.hashes[i]));
            }
        });
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
                s.add(self.hashes[i]);
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
                out[((k >> shift) & 0xf) as usize].add(self.hashes[i]);
            }
        });
        out
    }

    /// The hash of client `index`'s record.
    pub(super) fn hash_of(&self, index: u32) -> u64 {
        self.hashes.get(index as usize).copied().unwrap_or_default()
    }

    /// Room for `more` clients.
    pub(crate) fn reserve(&mut self, more: usize) {
        self.next.reserve(more);
        self.hashes.reserve(more);
    }
}
