//! The tables of a dense difference (`HERD-IBF`): cells, items, peeling, a table being received.

use super::*;

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
/// whole both ways rather than split, when every other sub-range compared in the same turn differed
/// too: at that density nearly every record differs, and the records cost less than the fingerprints
/// and id lists that would find them (so a cache that differs everywhere reconciles at about the
/// speed of a plain stream). Where some sub-ranges of the turn were equal, the difference is dense but
/// not total (one client in ten differing has every part of many such ranges differ), and the range's
/// parts are answered like the others, by tables.
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
pub(super) const CELLS_PER_ITEM: f64 = 1.4;

/// One cell of a table (`HERD-IBF`): see the peer grammar for the layout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Cell {
    pub(super) count: u8,
    /// Short key (high half) and short id (low half), XORed.
    pub(super) item: u64,
    pub(super) hint: u8,
    pub(super) check: u16,
}

/// One record as a table item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Item {
    pub(super) key: u32,
    pub(super) id: u32,
    pub(super) hint: u8,
}

impl Item {
    pub(super) fn bytes(self) -> [u8; 9] {
        let mut b = [0; 9];
        b[..4].copy_from_slice(&self.key.to_be_bytes());
        b[4..8].copy_from_slice(&self.id.to_be_bytes());
        b[8] = self.hint;
        b
    }

    pub(super) fn packed(self) -> u64 {
        u64::from(self.key) << 32 | u64::from(self.id)
    }

    pub(super) fn check(self, salt: u64) -> u16 {
        xxh3_64_with_seed(&self.bytes(), salt.wrapping_add(2)) as u16
    }

    /// The item's cell in each third of a table of `n` cells.
    pub(super) fn cells(self, salt: u64, n: usize) -> [usize; 3] {
        let third = n / 3;
        let h = xxh3_64_with_seed(&self.bytes(), salt.wrapping_add(3));
        [0, 1, 2].map(|j| j * third + ((h >> (21 * j)) & 0x1f_ffff) as usize % third)
    }
}

impl Cell {
    pub(super) fn toggle(&mut self, item: Item, check: u16, add: bool) {
        self.count = if add {
            self.count.wrapping_add(1)
        } else {
            self.count.wrapping_sub(1)
        };
        self.item ^= item.packed();
        self.hint ^= item.hint;
        self.check ^= check;
    }

    pub(super) fn write(self, out: &mut Vec<u8>) {
        out.push(self.count);
        out.extend_from_slice(&self.item.to_be_bytes());
        out.push(self.hint);
        out.extend_from_slice(&self.check.to_be_bytes());
    }

    pub(super) fn read(b: &[u8]) -> Cell {
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
#[cfg(test)]
pub(super) fn table(items: impl Iterator<Item = Item>, n: usize, salt: u64) -> Vec<Cell> {
    let mut cells = vec![Cell::default(); n];
    for item in items {
        let check = item.check(salt);
        for c in item.cells(salt, n) {
            cells[c].toggle(item, check, true);
        }
    }
    cells
}

/// Peels `cells` (mine minus theirs) at once: the items only I hold and those only they hold, or
/// `None` when the difference is too large for the table.
#[cfg(test)]
pub(super) fn peel(cells: Vec<Cell>, salt: u64) -> Option<(Vec<Item>, Vec<Item>)> {
    Peel::new(cells, salt)
        .run(&mut Budget::new(u64::MAX))
        .flatten()
}

/// The difference of two tables, peeled a budget at a time (a table of 65,535 cells is too much
/// for one call; see [`WORK_PER_CALL`]).
#[derive(Debug)]
pub(super) struct Peel {
    cells: Vec<Cell>,
    queue: Vec<usize>,
    mine: Vec<Item>,
    theirs: Vec<Item>,
    /// Every peel empties a cell for good, so peeling ends; this bound is a guard.
    guard: usize,
    salt: u64,
}

/// What peeling found: the items only I hold and those only they hold, or `None` when the difference
/// is too large for the table.
pub(super) type Peeled = Option<(Vec<Item>, Vec<Item>)>;

impl Peel {
    /// Peels `cells`, mine minus theirs.
    pub(super) fn new(cells: Vec<Cell>, salt: u64) -> Peel {
        let n = cells.len();
        Peel {
            cells,
            queue: (0..n).collect(),
            mine: Vec::new(),
            theirs: Vec::new(),
            guard: 4 * n,
            salt,
        }
    }

    /// Peels until done (`Some`) or the budget is spent (`None`: call again).
    pub(super) fn run(&mut self, budget: &mut Budget) -> Option<Peeled> {
        let n = self.cells.len();
        while let Some(i) = self.queue.pop() {
            if !budget.take() {
                self.queue.push(i);
                return None;
            }
            let Some(guard) = self.guard.checked_sub(1) else {
                return Some(None);
            };
            self.guard = guard;
            let c = self.cells[i];
            if c.count != 1 && c.count != u8::MAX {
                continue;
            }
            let item = Item {
                key: (c.item >> 32) as u32,
                id: c.item as u32,
                hint: c.hint,
            };
            let check = item.check(self.salt);
            let at = item.cells(self.salt, n);
            if check != c.check || !at.contains(&i) {
                continue;
            }
            let add = c.count == u8::MAX;
            for j in at {
                self.cells[j].toggle(item, check, add);
                self.queue.push(j);
            }
            if add {
                self.theirs.push(item);
            } else {
                self.mine.push(item);
            }
        }
        let whole = self.cells.iter().all(|c| *c == Cell::default());
        Some(whole.then(|| {
            (
                std::mem::take(&mut self.mine),
                std::mem::take(&mut self.theirs),
            )
        }))
    }
}

/// This side's table of a range being built from its items, a budget at a time.
#[derive(Debug)]
pub(super) struct Building {
    pub(super) cells: Vec<Cell>,
    next: usize,
}

impl Building {
    /// A table of `n` cells (a multiple of 3).
    pub(super) fn new(n: usize) -> Building {
        Building {
            cells: vec![Cell::default(); n],
            next: 0,
        }
    }

    /// Adds the next of `items`; `true` once all are in.
    pub(super) fn run(&mut self, items: &[(u32, Item)], salt: u64, budget: &mut Budget) -> bool {
        let n = self.cells.len();
        while let Some(&(_, item)) = items.get(self.next) {
            if !budget.take() {
                return false;
            }
            let check = item.check(salt);
            for c in item.cells(salt, n) {
                self.cells[c].toggle(item, check, true);
            }
            self.next += 1;
        }
        true
    }
}

/// A record as the item of a table.
pub(super) fn item(e: &Entry, record_hash: u64, salt: u64) -> Item {
    Item {
        key: short_key(key(e.client()), salt),
        id: short_id(record_hash, salt),
        hint: hint(e),
    }
}

/// A range's items gathered for a table, then the table built from them.
#[derive(Debug)]
pub(super) struct Tabling {
    pub(super) items: Gather<Vec<(u32, Item)>>,
    pub(super) built: Building,
}

impl Tabling {
    /// This side's table of `range`, `n` cells.
    pub(super) fn new(range: KeyRange, n: usize, sketch: &Sketch) -> Tabling {
        Tabling {
            items: Gather::new(range, sketch),
            built: Building::new(n),
        }
    }

    /// Goes on; `true` once the table is whole.
    pub(super) fn run(
        &mut self,
        salt: u64,
        sketch: &Sketch,
        entries: &[Entry],
        budget: &mut Budget,
    ) -> bool {
        let gathered = self.items.run(sketch, entries, budget, |acc, i, e| {
            acc.push((i, item(e, sketch.hash_of(i), salt)));
        });
        gathered && self.built.run(&self.items.acc, salt, budget)
    }
}

/// A table being received, line by line.
#[derive(Debug)]
pub(super) struct Incoming {
    pub(super) range: KeyRange,
    pub(super) cells: Vec<Cell>,
    pub(super) total: usize,
}

/// Whether bit `index` is set.
pub(super) fn bit(bits: &[u64], index: u32) -> bool {
    bits.get(index as usize / 64)
        .is_some_and(|w| w >> (index % 64) & 1 == 1)
}

/// Sets bit `index`.
pub(super) fn set_bit(bits: &mut Vec<u64>, index: u32) {
    let word = index as usize / 64;
    if bits.len() <= word {
        bits.resize(word + 1, 0);
    }
    bits[word] |= 1 << (index % 64);
}
