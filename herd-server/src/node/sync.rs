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
//! # Why range-based reconciliation over this trie, with tables where the difference is dense
//! Of the three designs the issue names, the walk is Meyer's range-based reconciliation (as Negentropy
//! runs it), on ranges fixed by key prefixes so they line up with a hash tree kept as records arrive
//! (as Riak's active anti-entropy does). It was chosen because:
//! - its cost follows the difference: equal roots cost one line each way; one differing client costs
//!   one 16-fingerprint line per level of the trie (four or five for a million clients) and one short
//!   id list, well under a kilobyte in all, whatever the size of the cache;
//! - it needs no estimate of the difference and no decoding that can fail; rateless IBLT would need
//!   its coded symbols computed over the whole set per session (or kept per symbol index), a scan per
//!   link-up that the issue rules out;
//! - the same walk works when the two sides' tries have different depths (a range deeper than one
//!   side's leaves is answered from a scan of that leaf), and when records change during it: a record
//!   stored while reconciling is flooded on the link anyway;
//! - a side that holds nothing in a range gets that range as a plain stream of records; a new server
//!   (`HERD-ROOT 0 0 …`) gets the whole cache as the old catch-up did.
//!
//! Where the difference is dense, the walk alone costs several times the records: with 10,000 of a
//! million clients differing, every range down to 256 clients differs, and finding the ~2.4 differing
//! clients of each costs a line of 16 fingerprints and lists of leaves of ~15 ids. So the walk
//! measures the density as it goes — of the sub-ranges compared in a turn, the share that was equal
//! gives the expected number of differing clients per differing sub-range (Poisson) — and where that
//! is two or more, it sends for each group of them one invertible Bloom filter (`HERD-IBF`) of the range
//! two digits up, sized for the estimate: about 1.4 cells of 12 bytes per differing record, the
//! difference decoded in one turn. A table is built from the range's records (the trie's leaf chains
//! find them), a bounded scan of the part of the cache that the walk has shown to differ. A table
//! that does not decode is answered by splitting its range, and ends tables for that session.
//!
//! Three more savings, each needed for the goal of twice the differing records:
//! - fingerprints and ids are 32 bits, salted per reconciliation (a chance collision, one in four
//!   billion per comparison, is not repeated by the next check), written in base64url;
//! - the items of a table carry a *hint*, the low byte of the client time: where both sides hold a
//!   record of one client, only the newer by its hint crosses, not both;
//! - hints can be wrong (client times more than two minutes apart), so during a reconciliation a
//!   record older than the one held is answered with the held one (`Session::older`): the newer still
//!   crosses, once.
//!
//! The turns and lines are documented with the peer grammar ([`herd_proto::PeerMessage`]).

use std::collections::VecDeque;

use herd_proto::{KeyRange, PeerMessage, CELL_BYTES, MAX_CELLS, MAX_CHUNK, MAX_IDS};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::node::cache::Entry;

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

/// The salted 32-bit fingerprint of a range for this reconciliation (`0`: no record there).
pub fn short_fp(s: Sum, salt: u64) -> u32 {
    if s.count == 0 {
        0
    } else {
        (xxh3_64_with_seed(&s.fingerprint.to_le_bytes(), salt) as u32).max(1)
    }
}

/// The salted 32-bit id of a record (from its hash) for this reconciliation.
pub fn short_id(hash: u64, salt: u64) -> u32 {
    xxh3_64_with_seed(&hash.to_le_bytes(), salt) as u32
}

/// The salted 32-bit key of a client (from its key) for this reconciliation.
pub fn short_key(key: u64, salt: u64) -> u32 {
    xxh3_64_with_seed(&key.to_le_bytes(), salt.wrapping_add(1)) as u32
}

/// A record's hint: the low 8 bits of its client time in whole seconds. Of two records of one client
/// whose client times are less than about two minutes apart, the greater hint (modulo 256) is the
/// newer record; equal hints say nothing.
pub fn hint(e: &Entry) -> u8 {
    e.time().secs() as u8
}

/// A range holding at most this many records here is answered with its ids rather than split: below
/// it a list is cheaper than 16 fingerprints and another turn.
pub const LIST: u64 = 16;

/// A range whose 16 sub-ranges all differ and that holds at most this many records here is sent
/// whole both ways rather than split: at that density nearly every record differs, and the records
/// cost less than the fingerprints and id lists that would find them (so a cache that differs
/// everywhere reconciles at about the speed of a plain stream).
pub const DENSE: u64 = 16 * 32;

/// Sub-ranges that differ are answered together with one table (`HERD-IBF`) of the range two digits
/// up when each is expected to hold at least this many differing clients (estimated from how many
/// of the sub-ranges compared in the turn were equal). Below it, splitting and listing cost less.
pub const TABLE_AT: f64 = 2.0;

/// A table is sent for a group only when it is expected to hold at least this many differing
/// clients: a smaller one costs more in cells than the splits it saves.
pub const TABLE_MIN: f64 = 24.0;

/// Cells per expected item of a table (three cells per item, peeled: a table decodes with high
/// probability above 1.23 cells per item; the rest is margin for the estimate).
const CELLS_PER_ITEM: f64 = 1.4;

/// One cell of a table (`HERD-IBF`): see the peer grammar for the layout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cell {
    count: u8,
    /// Short key (high half) and short id (low half), XORed.
    item: u64,
    hint: u8,
    check: u16,
}

/// One record as a table item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Item {
    key: u32,
    id: u32,
    hint: u8,
}

impl Item {
    fn bytes(self) -> [u8; 9] {
        let mut b = [0; 9];
        b[..4].copy_from_slice(&self.key.to_be_bytes());
        b[4..8].copy_from_slice(&self.id.to_be_bytes());
        b[8] = self.hint;
        b
    }

    fn packed(self) -> u64 {
        u64::from(self.key) << 32 | u64::from(self.id)
    }

    fn check(self, salt: u64) -> u16 {
        xxh3_64_with_seed(&self.bytes(), salt.wrapping_add(2)) as u16
    }

    /// The item's cell in each third of a table of `n` cells.
    fn cells(self, salt: u64, n: usize) -> [usize; 3] {
        let third = n / 3;
        let h = xxh3_64_with_seed(&self.bytes(), salt.wrapping_add(3));
        [0, 1, 2].map(|j| j * third + ((h >> (21 * j)) & 0x1f_ffff) as usize % third)
    }
}

impl Cell {
    fn toggle(&mut self, item: Item, check: u16, add: bool) {
        self.count = if add {
            self.count.wrapping_add(1)
        } else {
            self.count.wrapping_sub(1)
        };
        self.item ^= item.packed();
        self.hint ^= item.hint;
        self.check ^= check;
    }

    fn write(self, out: &mut Vec<u8>) {
        out.push(self.count);
        out.extend_from_slice(&self.item.to_be_bytes());
        out.push(self.hint);
        out.extend_from_slice(&self.check.to_be_bytes());
    }

    fn read(b: &[u8]) -> Cell {
        let mut item = [0; 8];
        item.copy_from_slice(&b[1..9]);
        Cell {
            count: b[0],
            item: u64::from_be_bytes(item),
            hint: b[9],
            check: u16::from_be_bytes([b[10], b[11]]),
        }
    }
}

/// A table of `n` cells (a multiple of 3) of `items`.
fn table(items: impl Iterator<Item = Item>, n: usize, salt: u64) -> Vec<Cell> {
    let mut cells = vec![Cell::default(); n];
    for item in items {
        let check = item.check(salt);
        for c in item.cells(salt, n) {
            cells[c].toggle(item, check, true);
        }
    }
    cells
}

/// Peels `cells` (mine minus theirs): the items only I hold and those only they hold, or `None` when
/// the difference is too large for the table.
fn peel(mut cells: Vec<Cell>, salt: u64) -> Option<(Vec<Item>, Vec<Item>)> {
    let n = cells.len();
    let (mut mine, mut theirs) = (Vec::new(), Vec::new());
    let mut queue: Vec<usize> = (0..n).collect();
    // Every peel empties a cell for good, so this ends; the bound is a guard.
    let mut budget = 4 * n;
    while let Some(i) = queue.pop() {
        budget = budget.checked_sub(1)?;
        let c = cells[i];
        if c.count != 1 && c.count != u8::MAX {
            continue;
        }
        let item = Item {
            key: (c.item >> 32) as u32,
            id: c.item as u32,
            hint: c.hint,
        };
        let check = item.check(salt);
        let at = item.cells(salt, n);
        if check != c.check || !at.contains(&i) {
            continue;
        }
        let add = c.count == u8::MAX;
        for j in at {
            cells[j].toggle(item, check, add);
            queue.push(j);
        }
        if add {
            theirs.push(item);
        } else {
            mine.push(item);
        }
    }
    cells
        .iter()
        .all(|c| *c == Cell::default())
        .then_some((mine, theirs))
}

/// A table being received, line by line.
#[derive(Debug)]
struct Incoming {
    range: KeyRange,
    cells: Vec<Cell>,
    total: usize,
}

/// Whether bit `index` is set.
fn bit(bits: &[u64], index: u32) -> bool {
    bits.get(index as usize / 64)
        .is_some_and(|w| w >> (index % 64) & 1 == 1)
}

/// Sets bit `index`.
fn set_bit(bits: &mut Vec<u64>, index: u32) {
    let word = index as usize / 64;
    if bits.len() <= word {
        bits.resize(word + 1, 0);
    }
    bits[word] |= 1 << (index % 64);
}

/// What a link's reconciliation still has to write, in order.
#[derive(Debug)]
enum Job {
    /// A control line, with its `\n`.
    Line(Vec<u8>),
    /// Records by cache index, read when written (so the newest is sent).
    Records(VecDeque<u32>),
    /// Records the other side sent older versions of, unless this session has sent them already.
    Back(VecDeque<u32>),
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
    /// An `HERD-IBF` line that does not continue the table being sent.
    #[error("reconciliation table line out of order")]
    Table,
    /// A line that has no place in a reconciliation (not a peer message this server reads, or a
    /// greeting line) arrived while one ran: the exchange could wait for ever on it.
    #[error("a line with no place in a reconciliation")]
    Unexpected,
    /// A range listed (`HERD-IDS`), asked for (`HERD-WANT`) or tabled (`HERD-IBF`) again in one
    /// exchange: each range is answered at most once per exchange.
    #[error("a range asked about twice in one exchange")]
    Repeated,
    /// The exchange's queued output passed [`MAX_QUEUED_BYTES`]: the peer asks more than it reads.
    #[error("more reconciliation output queued than a link may hold")]
    Overloaded,
    /// A `HERD-ROOT` opening an exchange past the rate a link-up may open them
    /// ([`crate::node::conduct::EXCHANGES`]).
    #[error("reconciliation exchanges opened faster than a link may open them")]
    TooSoon,
}

/// The most bytes of reconciliation lines one link may have queued and not yet written; past it the
/// link is closed ([`SyncError::Overloaded`]). Records are queued by cache index, each at most once
/// per exchange, so they are bounded by the cache; this bounds the control lines.
pub const MAX_QUEUED_BYTES: usize = 8 << 20;

/// The most records one peer line makes this side scan when it lists (`HERD-IDS`) or asks for
/// (`HERD-WANT`) a range: a range this side holds more of is split instead (or, asked for, breaks the
/// exchange: this side never lists so many), so no line holds the node for long.
pub const MAX_SCAN: u64 = 4096;

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
    /// The salt of this reconciliation's short values.
    salt: u64,
    /// Sessions this side opened on the link (the salt's seed, so each one salts anew).
    opened: u64,
    /// Sub-ranges that differ, met in the turn being received, to answer at its end, with my sums.
    pending: Vec<(KeyRange, Sum)>,
    /// Sub-ranges compared in that turn, and how many of them differed.
    compared: u64,
    differing: u64,
    /// A table being received.
    incoming: Option<Incoming>,
    /// The records of the range last asked for (`HERD-WANT`), by short id.
    by_id: Option<(KeyRange, Vec<(u32, u32)>)>,
    /// Ranges this side sent a table of in this session, with the table's records by short id (for
    /// the `HERD-WANT` that follows).
    tabled: Vec<(KeyRange, Vec<(u32, u32)>)>,
    /// A table failed to decode in this session (here, or there: the other side answered a table
    /// of ours with its fingerprints), so no more are sent: the plain walk always ends.
    no_tables: bool,
    /// Cache indexes of records the other side sent older versions of in the turn being received.
    older: Vec<u32>,
    /// Cache indexes this session has written, a bit each.
    written: Vec<u64>,
    /// Cache indexes this session has queued or written, a bit each: a record is sent at most once
    /// per exchange, so what an exchange sends is bounded by the cache, whatever the peer asks.
    queued: Vec<u64>,
    /// Cache indexes put in `older` in this exchange, a bit each.
    backed: Vec<u64>,
    /// The whole-cache stream was queued in this exchange (it runs at most once).
    streamed_all: bool,
    /// Ranges this exchange listed, asked for or decoded a table of (`HERD-IDS`, `HERD-WANT`,
    /// `HERD-IBF` received), by kind: each is answered at most once per exchange.
    answered: std::collections::HashSet<(u8, KeyRange)>,
    /// Bytes of control lines queued and not yet written.
    queued_bytes: usize,
    /// Where the whole-cache stream is, while it is queued or running.
    all: Option<usize>,
    jobs: VecDeque<Job>,
    /// A link-up catch-up has finished on this link: later sessions are periodic checks.
    caught_up: bool,
    /// Tables queued to send, and tables received whole, since the link came up (the operator's
    /// count of the dense path).
    tables_sent: u64,
    tables_received: u64,
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
    /// Tables (`HERD-IBF`) queued to send since the link came up.
    pub fn tables_sent(&self) -> u64 {
        self.tables_sent
    }

    /// Tables received whole since the link came up.
    pub fn tables_received(&self) -> u64 {
        self.tables_received
    }

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

    fn start(&mut self, salt: u64) {
        self.active = true;
        self.periodic = self.caught_up;
        self.asked = false;
        self.sent = 0;
        self.received = 0;
        self.turns = 0;
        self.bytes = 0;
        self.salt = salt;
        self.pending.clear();
        self.compared = 0;
        self.differing = 0;
        self.incoming = None;
        self.tabled.clear();
        self.no_tables = false;
        self.by_id = None;
        self.older.clear();
        self.written.clear();
        self.queued.clear();
        self.backed.clear();
        self.streamed_all = false;
        self.answered.clear();
    }

    /// Keeps of `indexes` those not yet queued or written in this exchange, and marks them queued.
    fn fresh(&mut self, indexes: impl IntoIterator<Item = u32>) -> VecDeque<u32> {
        let mut out = VecDeque::new();
        for i in indexes {
            if !bit(&self.queued, i) {
                set_bit(&mut self.queued, i);
                out.push_back(i);
            }
        }
        out
    }

    /// Queues the records at `indexes` that this exchange has not queued yet.
    fn records(&mut self, indexes: impl IntoIterator<Item = u32>) {
        let fresh = self.fresh(indexes);
        if !fresh.is_empty() {
            self.jobs.push_back(Job::Records(fresh));
        }
    }

    /// Range `range` of kind `kind` (`b'I'`, `b'W'`, `b'T'`) is answered now; an error if it was in
    /// this exchange already.
    fn once(&mut self, kind: u8, range: KeyRange) -> Result<(), SyncError> {
        if self.answered.insert((kind, range)) {
            Ok(())
        } else {
            Err(SyncError::Repeated)
        }
    }

    /// Queues the whole-cache stream, once per exchange.
    fn stream_all(&mut self) {
        if !self.streamed_all {
            self.streamed_all = true;
            self.all = Some(0);
            self.jobs.push_back(Job::All);
        }
    }

    /// The other side sent an older record than the one at cache index `index`: during a
    /// reconciliation, it lacks this one, so it is sent back at the end of the turn (unless this
    /// session sends it anyway).
    pub fn older(&mut self, index: usize) {
        let i = index as u32;
        // Each index once per exchange: a peer repeating an old record cannot grow this.
        if self.active && !bit(&self.backed, i) {
            set_bit(&mut self.backed, i);
            self.older.push(i);
        }
    }

    fn back(&mut self) {
        if !self.older.is_empty() {
            let older = std::mem::take(&mut self.older);
            self.jobs.push_back(Job::Back(older.into()));
        }
    }

    fn line(&mut self, m: &PeerMessage<'_>) {
        let mut v = Vec::with_capacity(128);
        m.write_to(&mut v);
        v.push(b'\n');
        self.queued_bytes += v.len();
        if matches!(
            m,
            PeerMessage::Fingerprints { .. }
                | PeerMessage::Ids { .. }
                | PeerMessage::Want { .. }
                | PeerMessage::Cells { .. }
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
        let root = sketch.root();
        self.opened += 1;
        let salt = xxh3_64_with_seed(
            &[root.fingerprint.to_le_bytes(), root.count.to_le_bytes()].concat(),
            self.opened,
        );
        self.start(salt);
        self.line(&PeerMessage::Root {
            count: root.count,
            fingerprint: root.fingerprint,
            salt,
        });
        if root.count > 0 {
            // The first split goes with the root, saving a turn when the roots differ.
            let children = sketch
                .children(KeyRange::ALL, &[])
                .map(|s| short_fp(s, salt));
            self.line(&PeerMessage::Fingerprints {
                range: KeyRange::ALL,
                children,
            });
        }
        self.asked = false;
        self.line(&PeerMessage::Over);
        true
    }

    /// Answers a mismatch on `range`: split it, or list it.
    fn answer(&mut self, range: KeyRange, mine: Sum, sketch: &Sketch, entries: &[Entry]) {
        if mine.count > LIST && range.child(0).is_some() {
            let salt = self.salt;
            let children = sketch.children(range, entries).map(|s| short_fp(s, salt));
            self.line(&PeerMessage::Fingerprints { range, children });
            return;
        }
        let items = sketch.items(range, entries);
        if items.len() <= MAX_IDS {
            let hashes = items.iter().map(|&(_, h)| short_id(h, self.salt)).collect();
            self.line(&PeerMessage::Ids { range, hashes });
        } else {
            // Only at 16 digits: more clients than a line lists share one key. Send them all and
            // ask for all of the other side's.
            self.records(items.iter().map(|&(i, _)| i as u32));
            self.line(&PeerMessage::Ids {
                range,
                hashes: Vec::new(),
            });
        }
    }

    /// Answers the sub-ranges that differed in the turn just received: each on its own (split or
    /// listed), or, where the turn shows the difference is dense, in groups by one table each.
    fn resolve(&mut self, sketch: &Sketch, entries: &[Entry]) {
        let pending = std::mem::take(&mut self.pending);
        let (compared, differing) = (self.compared, self.differing);
        self.compared = 0;
        self.differing = 0;
        // Differing clients expected in a differing sub-range, were the differences spread evenly
        // (Poisson): λ/(1 − e^−λ) where e^−λ is the share of sub-ranges that were equal.
        let expect = if differing == 0 || differing >= compared {
            None
        } else {
            let f = differing as f64 / compared as f64;
            Some(-(1.0 - f).ln() / f)
        };
        let mut groups: std::collections::BTreeMap<KeyRange, Vec<(KeyRange, Sum)>> =
            std::collections::BTreeMap::new();
        for (range, mine) in pending {
            match expect {
                Some(e) if e >= TABLE_AT && !self.no_tables => {
                    let up = range.digits().saturating_sub(2);
                    let group = KeyRange::new(up, range.prefix()).unwrap_or(KeyRange::ALL);
                    groups.entry(group).or_default().push((range, mine));
                }
                _ => self.answer(range, mine, sketch, entries),
            }
        }
        let e = expect.unwrap_or(0.0);
        for (group, members) in groups {
            let clients = members.len() as f64 * e;
            let cells = (2.0 * clients * CELLS_PER_ITEM / 3.0).ceil() as usize * 3 + 12;
            if clients < TABLE_MIN || cells > MAX_CELLS as usize {
                for (range, mine) in members {
                    self.answer(range, mine, sketch, entries);
                }
                continue;
            }
            self.send_table(group, cells, sketch, entries);
        }
    }

    /// This side's items in `range`, with their cache indexes.
    fn items(&self, range: KeyRange, sketch: &Sketch, entries: &[Entry]) -> Vec<(usize, Item)> {
        let salt = self.salt;
        sketch
            .items(range, entries)
            .into_iter()
            .map(|(i, h)| {
                let e = &entries[i];
                let item = Item {
                    key: short_key(key(e.client()), salt),
                    id: short_id(h, salt),
                    hint: hint(e),
                };
                (i, item)
            })
            .collect()
    }

    /// Queues `HERD-IBF` lines of this side's table of `range`, `n` cells.
    fn send_table(&mut self, range: KeyRange, n: usize, sketch: &Sketch, entries: &[Entry]) {
        let items = self.items(range, sketch, entries);
        let mut by_id: Vec<(u32, u32)> = items.iter().map(|&(i, it)| (it.id, i as u32)).collect();
        by_id.sort_unstable();
        self.tabled.push((range, by_id));
        let cells = table(items.iter().map(|&(_, it)| it), n, self.salt);
        self.tables_sent += 1;
        let mut bytes = Vec::with_capacity(MAX_CHUNK * CELL_BYTES);
        for (k, chunk) in cells.chunks(MAX_CHUNK).enumerate() {
            bytes.clear();
            for c in chunk {
                c.write(&mut bytes);
            }
            self.line(&PeerMessage::Cells {
                range,
                total: n as u32,
                at: (k * MAX_CHUNK) as u32,
                cells: bytes.clone(),
            });
        }
    }

    /// A whole table of `range` came: decode it against this side's, and send or ask for what
    /// differs; split the range instead when it does not decode.
    fn decode(&mut self, range: KeyRange, theirs: Vec<Cell>, sketch: &Sketch, entries: &[Entry]) {
        let salt = self.salt;
        let items = self.items(range, sketch, entries);
        let mut cells = table(items.iter().map(|&(_, it)| it), theirs.len(), salt);
        for (c, t) in cells.iter_mut().zip(&theirs) {
            c.count = c.count.wrapping_sub(t.count);
            c.item ^= t.item;
            c.hint ^= t.hint;
            c.check ^= t.check;
        }
        let Some((only_mine, only_theirs)) = peel(cells, salt) else {
            self.no_tables = true;
            let mine = sketch.sum(range, entries);
            if mine.count == 0 {
                self.line(&PeerMessage::Ids {
                    range,
                    hashes: Vec::new(),
                });
            } else if range.child(0).is_some() {
                let children = sketch.children(range, entries).map(|s| short_fp(s, salt));
                self.line(&PeerMessage::Fingerprints { range, children });
            } else {
                self.answer(range, mine, sketch, entries);
            }
            return;
        };
        // Where both sides hold a record of one client, only the newer by its hint crosses (both
        // when the hints are equal; a wrong hint is put right by the record sent back).
        let theirs_by_key: std::collections::HashMap<u32, u8> =
            only_theirs.iter().map(|it| (it.key, it.hint)).collect();
        let mine_by_key: std::collections::HashMap<u32, u8> =
            only_mine.iter().map(|it| (it.key, it.hint)).collect();
        let newer = |a: u8, b: u8| (a.wrapping_sub(b) as i8) >= 0;
        let send: std::collections::HashSet<Item> = only_mine
            .iter()
            .filter(|it| {
                theirs_by_key
                    .get(&it.key)
                    .is_none_or(|&h| newer(it.hint, h))
            })
            .copied()
            .collect();
        let want: Vec<u32> = only_theirs
            .iter()
            .filter(|it| mine_by_key.get(&it.key).is_none_or(|&h| newer(it.hint, h)))
            .map(|it| it.id)
            .collect();
        let records: Vec<u32> = items
            .iter()
            .filter(|(_, it)| send.contains(it))
            .map(|&(i, _)| i as u32)
            .collect();
        self.records(records);
        for chunk in want.chunks(MAX_IDS) {
            self.line(&PeerMessage::Want {
                range,
                hashes: chunk.to_vec(),
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
    /// [`SyncError::OutOfTurn`]: the line breaks the turns; [`SyncError::Table`]: a table line does
    /// not continue the table being received (the driver closes the link).
    pub fn receive(
        &mut self,
        link: usize,
        m: &PeerMessage<'_>,
        sketch: &Sketch,
        entries: &[Entry],
    ) -> Result<Outcome, SyncError> {
        let outcome = self.receive_line(link, m, sketch, entries)?;
        if self.queued_bytes > MAX_QUEUED_BYTES {
            return Err(SyncError::Overloaded);
        }
        Ok(outcome)
    }

    fn receive_line(
        &mut self,
        link: usize,
        m: &PeerMessage<'_>,
        sketch: &Sketch,
        entries: &[Entry],
    ) -> Result<Outcome, SyncError> {
        let before = self.jobs.len();
        match m {
            PeerMessage::Root { count, salt, .. } => {
                if self.active {
                    return Err(SyncError::OutOfTurn);
                }
                self.start(*salt);
                let mine = sketch.root();
                if *count == 0 && mine.count > 0 {
                    self.stream_all();
                }
                // Otherwise the `HERD-FP -` that follows is compared (equal roots: nothing to do).
            }
            _ if !self.active => return Err(SyncError::OutOfTurn),
            PeerMessage::Fingerprints { range, children } => {
                if self.tabled.iter().any(|(r, _)| r == range) {
                    // The other side could not decode our table of this range.
                    self.no_tables = true;
                }
                let salt = self.salt;
                let mine = sketch.children(*range, entries);
                let total: u64 = mine.iter().map(|s| s.count).sum();
                let differ = children
                    .iter()
                    .zip(&mine)
                    .filter(|(t, m)| **t != short_fp(**m, salt))
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
                self.compared += 16;
                for (d, (theirs, mine)) in children.iter().zip(mine).enumerate() {
                    let Some(c) = range.child(d as u8) else { break };
                    if short_fp(mine, salt) == *theirs {
                        continue;
                    }
                    self.differing += 1;
                    if *theirs == 0 {
                        self.send_range(c);
                    } else {
                        self.pending.push((c, mine));
                    }
                }
            }
            PeerMessage::Ids { range, hashes } if hashes.is_empty() => {
                self.once(b'I', *range)?;
                // The other side holds nothing here: a plain stream, the whole cache by index when
                // the range is everything.
                if *range == KeyRange::ALL {
                    self.stream_all();
                } else {
                    self.send_range(*range);
                }
            }
            PeerMessage::Ids { range, hashes } => {
                self.once(b'I', *range)?;
                let salt = self.salt;
                if range.child(0).is_some() && sketch.sum(*range, entries).count > MAX_SCAN {
                    // The other side lists a few records where this one holds many: split the range
                    // instead of scanning it under the lock (the other side lists its parts).
                    let children = sketch.children(*range, entries).map(|s| short_fp(s, salt));
                    self.line(&PeerMessage::Fingerprints {
                        range: *range,
                        children,
                    });
                    return Ok(Outcome::Queued);
                }
                let mut theirs = hashes.clone();
                theirs.sort_unstable();
                let items: Vec<(usize, u32)> = sketch
                    .items(*range, entries)
                    .into_iter()
                    .map(|(i, h)| (i, short_id(h, salt)))
                    .collect();
                let send: Vec<u32> = items
                    .iter()
                    .filter(|(_, h)| theirs.binary_search(h).is_err())
                    .map(|&(i, _)| i as u32)
                    .collect();
                self.records(send);
                let mut mine: Vec<u32> = items.iter().map(|&(_, h)| h).collect();
                mine.sort_unstable();
                theirs.dedup();
                let want: Vec<u32> = theirs
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
                // The ids of the range by id, kept for the next line: a decoded table is asked
                // for in many lines of the same (large) range.
                let salt = self.salt;
                if let Some(at) = self
                    .tabled
                    .iter()
                    .position(|(r, ids)| r == range && !ids.is_empty())
                {
                    // Asked from a table of ours: its records, by id, are kept.
                    let ids = std::mem::take(&mut self.tabled[at].1);
                    self.by_id = Some((*range, ids));
                }
                if self.by_id.as_ref().is_none_or(|(r, _)| r != range) {
                    // A range is scanned for its ids once per exchange, and only one this side
                    // could have listed (a table's ranges keep their ids).
                    self.once(b'W', *range)?;
                    if range.child(0).is_some() && sketch.sum(*range, entries).count > MAX_SCAN {
                        return Err(SyncError::Overloaded);
                    }
                    let mut ids: Vec<(u32, u32)> = sketch
                        .items(*range, entries)
                        .into_iter()
                        .map(|(i, h)| (short_id(h, salt), i as u32))
                        .collect();
                    ids.sort_unstable();
                    self.by_id = Some((*range, ids));
                }
                let ids = self.by_id.as_ref().map_or(&[][..], |(_, ids)| &ids[..]);
                let mut send = Vec::new();
                for &h in hashes {
                    let from = ids.partition_point(|&(id, _)| id < h);
                    send.extend(
                        ids[from..]
                            .iter()
                            .take_while(|&&(id, _)| id == h)
                            .map(|&(_, i)| i),
                    );
                }
                self.records(send);
            }
            PeerMessage::Cells {
                range,
                total,
                at,
                cells,
            } => {
                let incoming = self.incoming.get_or_insert_with(|| Incoming {
                    range: *range,
                    cells: Vec::with_capacity(*total as usize),
                    total: *total as usize,
                });
                if incoming.range != *range
                    || incoming.total != *total as usize
                    || incoming.cells.len() != *at as usize
                {
                    self.incoming = None;
                    return Err(SyncError::Table);
                }
                incoming
                    .cells
                    .extend(cells.chunks_exact(CELL_BYTES).map(Cell::read));
                if incoming.cells.len() >= incoming.total {
                    if let Some(done) = self.incoming.take() {
                        self.once(b'T', done.range)?;
                        self.tables_received += 1;
                        self.decode(done.range, done.cells, sketch, entries);
                    }
                }
            }
            PeerMessage::Over => {
                if self.incoming.is_some() {
                    return Err(SyncError::Table);
                }
                self.by_id = None;
                self.resolve(sketch, entries);
                self.back();
                self.end_turn();
            }
            PeerMessage::Synced { count } => {
                self.back();
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
            self.line(&PeerMessage::Over);
            self.asked = false;
        } else {
            self.jobs.push_back(Job::Synced);
        }
    }

    fn finish(&mut self, link: usize) -> Report {
        self.active = false;
        self.caught_up = true;
        self.by_id = None;
        self.pending.clear();
        self.incoming = None;
        Report {
            link,
            periodic: self.periodic,
            sent: self.sent,
            received: self.received,
            turns: self.turns,
            bytes: self.bytes,
        }
    }

    /// The link went down or came up again: forget everything but how many sessions were opened
    /// (so the next one salts anew).
    pub fn reset(&mut self) {
        *self = Session {
            opened: self.opened,
            ..Session::default()
        };
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
                    self.queued_bytes = self.queued_bytes.saturating_sub(v.len());
                    lines += 1;
                    self.jobs.pop_front();
                }
                Job::Records(q) | Job::Back(q) => match q.pop_front() {
                    Some(i) => {
                        let back = matches!(job, Job::Back(_));
                        if back && bit(&self.written, i) {
                            continue;
                        }
                        if let Some(e) = entries.get(i as usize) {
                            out.extend_from_slice(e.line());
                            out.push(b'\n');
                            lines += 1;
                            records += 1;
                            set_bit(&mut self.written, i);
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
                    let found = self.fresh(found);
                    if !found.is_empty() {
                        self.jobs.push_front(Job::Records(found));
                    }
                }
                Job::All => {
                    let cursor = self.all.unwrap_or(0);
                    match entries.get(cursor) {
                        Some(e) => {
                            set_bit(&mut self.queued, cursor as u32);
                            out.extend_from_slice(e.line());
                            out.push(b'\n');
                            lines += 1;
                            records += 1;
                            set_bit(&mut self.written, cursor as u32);
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
    use crate::node::cache::Cache;
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
            c.push(crate::node::cache::Entry::new(&r, None));
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

    fn items(range: std::ops::Range<u32>) -> Vec<Item> {
        range
            .map(|i| Item {
                key: i.wrapping_mul(0x9e37_79b9),
                id: i ^ 0x5555_aaaa,
                hint: i as u8,
            })
            .collect()
    }

    /// Mine minus theirs, cell by cell.
    fn minus(mut mine: Vec<Cell>, theirs: &[Cell]) -> Vec<Cell> {
        for (c, t) in mine.iter_mut().zip(theirs) {
            c.count = c.count.wrapping_sub(t.count);
            c.item ^= t.item;
            c.hint ^= t.hint;
            c.check ^= t.check;
        }
        mine
    }

    #[test]
    fn a_table_decodes_a_difference_it_was_sized_for_and_says_so_when_not() {
        let salt = 77;
        // 1,000 shared items; 40 only mine, 30 only theirs: 70 items in 1.4 × 70 + 12 cells.
        let shared = items(0..1000);
        let mine: Vec<Item> = shared.iter().copied().chain(items(1000..1040)).collect();
        let theirs: Vec<Item> = shared.iter().copied().chain(items(2000..2030)).collect();
        let n = 111;
        let diff = minus(
            table(mine.iter().copied(), n, salt),
            &table(theirs.iter().copied(), n, salt),
        );
        let (mut only_mine, mut only_theirs) = peel(diff, salt).expect("decodes");
        only_mine.sort();
        only_theirs.sort();
        let mut want_mine = items(1000..1040);
        let mut want_theirs = items(2000..2030);
        want_mine.sort();
        want_theirs.sort();
        assert_eq!((only_mine, only_theirs), (want_mine, want_theirs));
        // Ten times the difference it was sized for: decoding fails, and says so.
        let theirs: Vec<Item> = shared.iter().copied().chain(items(3000..3700)).collect();
        let diff = minus(
            table(mine.iter().copied(), n, salt),
            &table(theirs.iter().copied(), n, salt),
        );
        assert_eq!(peel(diff, salt), None);
        // Cells survive the wire.
        let t = table(mine.iter().copied(), n, salt);
        let mut bytes = Vec::new();
        for c in &t {
            c.write(&mut bytes);
        }
        assert_eq!(bytes.len(), n * CELL_BYTES);
        let back: Vec<Cell> = bytes.chunks_exact(CELL_BYTES).map(Cell::read).collect();
        assert_eq!(back, t);
    }

    /// A table that does not decode is answered with the range's fingerprints, and the session
    /// sends no table after that (so a walk that keeps failing cannot loop).
    #[test]
    fn an_undecodable_table_is_answered_by_splitting_the_range() {
        let mut c = Cache::default();
        for i in 0..600u32 {
            let line = format!("AT A +0.000000001 c{i} +1+1 {i}");
            c.push(Entry::new(&AtRecord::parse(line.as_bytes()).unwrap(), None));
        }
        let mut s = Session::default();
        let (sk, e) = (c.sketch(), c.entries());
        let root = PeerMessage::Root {
            count: 1,
            fingerprint: 1,
            salt: 5,
        };
        assert_eq!(s.receive(0, &root, sk, e), Ok(Outcome::Nothing));
        // Three cells, each pure-looking garbage.
        let cells = vec![1u8; 3 * CELL_BYTES];
        let m = PeerMessage::Cells {
            range: KeyRange::ALL,
            total: 3,
            at: 0,
            cells,
        };
        assert_eq!(s.receive(0, &m, sk, e), Ok(Outcome::Queued));
        assert!(s.no_tables);
        let mut out = Vec::new();
        s.transmit(0, sk, e, &mut out, 100);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HERD-FP - "), "{text}");
        // A table line that does not continue the one being received closes the link.
        let part = PeerMessage::Cells {
            range: KeyRange::ALL,
            total: 6,
            at: 0,
            cells: vec![0; 3 * CELL_BYTES],
        };
        assert_eq!(s.receive(0, &part, sk, e), Ok(Outcome::Nothing));
        let skip = PeerMessage::Cells {
            range: KeyRange::ALL,
            total: 6,
            at: 4,
            cells: vec![0; CELL_BYTES],
        };
        assert_eq!(s.receive(0, &skip, sk, e), Err(SyncError::Table));
    }
}
