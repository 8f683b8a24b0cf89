//! Bounded work: walks over a range's records that stop when one call's budget is spent and go on
//! from there on the next call, so no peer line holds the node for long, whatever the range.
//!
//! A range may hold the whole cache (a table of every key), and one leaf may hold thousands of
//! clients whose ids were chosen to share a key prefix. Either would be a scan of that many records
//! under the node's lock if done at once; a [`Scan`] does at most [`WORK_PER_CALL`] units of it per
//! call and keeps its place (a leaf and a record of its chain) between calls.

use super::*;

/// Units of work (a leaf or record visited, an item put in a table, a cell peeled) one call into a
/// reconciliation may do: about a third of a millisecond on the machine of the benchmarks
/// (`cargo bench -p herd-server --bench worst_line`), so no peer line holds the node over ~1 ms.
pub const WORK_PER_CALL: u64 = 1024;

/// The work one call may still do.
#[derive(Debug)]
pub(super) struct Budget {
    pub(super) left: u64,
}

impl Budget {
    pub(super) fn new(units: u64) -> Budget {
        Budget { left: units }
    }

    /// Takes one unit; `false` when none is left.
    pub(super) fn take(&mut self) -> bool {
        match self.left.checked_sub(1) {
            Some(left) => {
                self.left = left;
                true
            }
            None => false,
        }
    }

    pub(super) fn spent(&self) -> bool {
        self.left == 0
    }
}

/// How far a walk went in one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Walk {
    /// Every record of the range was visited.
    Done,
    /// The budget ran out: call again.
    More,
    /// The trie grew a level since the walk began, so its place means nothing: start over.
    Rebuilt,
}

/// A walk over the records of a range, leaf by leaf along the trie's chains.
///
/// Its place survives changes to the cache between calls: a record stored meanwhile joins the head
/// of its leaf's chain (behind the walk, and flooded on the link anyway), a record replaced keeps its
/// index, and a trie that grew a level is detected by its depth ([`Walk::Rebuilt`]).
#[derive(Debug, Clone)]
pub(super) struct Scan {
    range: KeyRange,
    depth: u8,
    leaf: usize,
    last: usize,
    /// The next record of the current leaf's chain; `None`: the leaf's head.
    at: Option<u32>,
}

impl Scan {
    pub(super) fn new(range: KeyRange, sketch: &Sketch) -> Scan {
        let (leaf, last) = sketch.leaves_of(range);
        Scan {
            range,
            depth: sketch.depth(),
            leaf,
            last,
            at: None,
        }
    }

    /// A walk with nothing left to visit (its result was read from the trie).
    pub(super) fn finished(range: KeyRange, sketch: &Sketch) -> Scan {
        Scan {
            leaf: 1,
            last: 0,
            ..Scan::new(range, sketch)
        }
    }

    pub(super) fn range(&self) -> KeyRange {
        self.range
    }

    /// Visits records of the range, calling `f(index, entry)`, until they or the budget run out.
    pub(super) fn walk(
        &mut self,
        sketch: &Sketch,
        entries: &[Entry],
        budget: &mut Budget,
        mut f: impl FnMut(u32, &Entry),
    ) -> Walk {
        if sketch.depth() != self.depth {
            return Walk::Rebuilt;
        }
        // A range deeper than the leaves shares its leaf with other ranges: filter by key.
        let filter = self.range.digits() > self.depth;
        while self.leaf <= self.last {
            let mut i = match self.at {
                Some(i) => i,
                None if budget.take() => sketch.heads[self.leaf],
                None => return Walk::More,
            };
            while i != NONE {
                if !budget.take() {
                    self.at = Some(i);
                    return Walk::More;
                }
                let e = &entries[i as usize];
                if !filter || self.range.contains(key(e.client())) {
                    f(i, e);
                }
                i = sketch.next[i as usize];
            }
            self.leaf += 1;
            self.at = None;
        }
        Walk::Done
    }
}

/// A walk that folds the records of a range into `acc`, over as many calls as it takes.
#[derive(Debug)]
pub(super) struct Gather<A> {
    scan: Scan,
    pub(super) acc: A,
}

impl<A: Default> Gather<A> {
    pub(super) fn new(range: KeyRange, sketch: &Sketch) -> Self {
        Gather {
            scan: Scan::new(range, sketch),
            acc: A::default(),
        }
    }

    /// A result read without a walk (from the trie).
    pub(super) fn ready(range: KeyRange, sketch: &Sketch, acc: A) -> Self {
        Gather {
            scan: Scan::finished(range, sketch),
            acc,
        }
    }

    pub(super) fn range(&self) -> KeyRange {
        self.scan.range()
    }

    /// Goes on folding; `true` once every record of the range is in `acc`. A trie rebuilt since the
    /// walk began starts it over from nothing.
    pub(super) fn run(
        &mut self,
        sketch: &Sketch,
        entries: &[Entry],
        budget: &mut Budget,
        mut f: impl FnMut(&mut A, u32, &Entry),
    ) -> bool {
        loop {
            let acc = &mut self.acc;
            match self.scan.walk(sketch, entries, budget, |i, e| f(acc, i, e)) {
                Walk::Done => return true,
                Walk::More => return false,
                Walk::Rebuilt => *self = Gather::new(self.scan.range(), sketch),
            }
        }
    }
}

/// The count and fingerprint of each of the 16 sub-ranges of a range, gathered.
pub(super) type Children = Gather<[Sum; 16]>;

/// The cache indexes and record hashes of a range, gathered.
pub(super) type Records = Gather<Vec<(u32, u64)>>;

impl Children {
    /// Read from the trie when the sub-ranges are nodes of it; otherwise a walk of the range's leaf.
    pub(super) fn of(range: KeyRange, sketch: &Sketch) -> Children {
        if range.digits() < sketch.depth() {
            Gather::ready(range, sketch, sketch.children(range, &[]))
        } else {
            Gather::new(range, sketch)
        }
    }

    /// Goes on; `true` when the sums are whole.
    pub(super) fn step(&mut self, sketch: &Sketch, entries: &[Entry], budget: &mut Budget) -> bool {
        // A range of 16 digits has no sub-ranges: its sums stay empty.
        let shift = 60u32.checked_sub(4 * u32::from(self.range().digits()));
        self.run(sketch, entries, budget, |acc, i, e| {
            if let Some(shift) = shift {
                let k = key(e.client());
                acc[((k >> shift) & 0xf) as usize].add(sketch.hash_of(i));
            }
        })
    }
}

impl Records {
    /// Goes on; `true` when every record of the range is listed.
    pub(super) fn step(&mut self, sketch: &Sketch, entries: &[Entry], budget: &mut Budget) -> bool {
        self.run(sketch, entries, budget, |acc, i, _| {
            acc.push((i, sketch.hash_of(i)));
        })
    }
}

/// A bound on the records of `range` here, read from the trie in constant time: exact for a range
/// that is a node of it, the count of its leaf for a deeper one.
pub(super) fn at_most(range: KeyRange, sketch: &Sketch) -> u64 {
    let digits = range.digits().min(sketch.depth());
    KeyRange::new(digits, range.prefix()).map_or(0, |r| sketch.sum(r, &[]).count)
}
