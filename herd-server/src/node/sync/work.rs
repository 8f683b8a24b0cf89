//! The work a reconciliation line asks for ([`Work`]), done a budget at a time by
//! [`Session::transmit`]: comparing fingerprints, listing, looking up, building and decoding tables.

use super::*;

/// One step of a reconciliation that may visit many records, waiting to be done.
#[derive(Debug)]
pub(super) enum Work {
    /// `HERD-FP` received: compare its 16 fingerprints with mine.
    Compare(Children, [u32; 16]),
    /// A range to split: send the fingerprints of its 16 parts.
    Split(Children),
    /// A differing range that holds few records here: list them (`HERD-IDS`).
    List(Records),
    /// `HERD-IDS` received: send what they lack, ask for what I lack.
    Match(Records, Vec<u32>),
    /// `HERD-WANT` received: send the records asked for.
    Want(Records, Vec<u32>),
    /// A whole table received (their cells): decode it against mine.
    Decode(KeyRange, Vec<Cell>, Decoding),
    /// A table of mine to send.
    Table(Tabling),
    /// `HERD-OVER` received: answer the turn's differing ranges.
    Turn,
    /// The turn's answers are queued: end it.
    EndTurn,
}

/// Where the decoding of a table is.
#[derive(Debug)]
pub(super) enum Decoding {
    /// Building my table of the range.
    Building(Tabling),
    /// Peeling the difference of the two, with my items (by cache index) to find what to send.
    Peeling(Peel, Vec<(u32, Item)>),
    /// Choosing, from the decoded difference, what to send and what to ask for.
    Answering(Box<Answering>),
}

/// A decoded difference being answered a budget at a time (it may hold tens of thousands of items).
#[derive(Debug, Default)]
pub(super) struct Answering {
    pub(super) items: Vec<(u32, Item)>,
    pub(super) only_mine: Vec<Item>,
    pub(super) only_theirs: Vec<Item>,
    pub(super) mine_by_key: std::collections::HashMap<u32, u8>,
    pub(super) theirs_by_key: std::collections::HashMap<u32, u8>,
    pub(super) send: std::collections::HashSet<Item>,
    pub(super) want: Vec<u32>,
    pub(super) records: Vec<u32>,
    /// Which pass, and how far into it.
    pub(super) pass: u8,
    pub(super) at: usize,
}

impl Answering {
    /// The next indexes of a pass over `len` things that the budget allows (one unit each); moves
    /// to the next pass when this one is done.
    pub(super) fn next(&mut self, len: usize, budget: &mut Budget) -> std::ops::Range<usize> {
        let n = (len - self.at).min(usize::try_from(budget.left).unwrap_or(usize::MAX));
        budget.left -= n as u64;
        let r = self.at..self.at + n;
        self.at += n;
        if self.at == len {
            self.pass += 1;
            self.at = 0;
        }
        r
    }
}

/// Work waiting, with what it was counted to cost.
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) work: Work,
    pub(super) cost: Backlog,
}

/// What waiting work may still cost: records it may visit, bytes of peer lines it holds.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Backlog {
    pub(super) records: u64,
    pub(super) bytes: usize,
}

impl Backlog {
    pub(super) fn add(&mut self, cost: Backlog) {
        self.records += cost.records;
        self.bytes += cost.bytes;
    }

    pub(super) fn sub(&mut self, cost: Backlog) {
        self.records = self.records.saturating_sub(cost.records);
        self.bytes = self.bytes.saturating_sub(cost.bytes);
    }
}

impl Work {
    pub(super) fn compare(range: KeyRange, theirs: [u32; 16], sketch: &Sketch) -> Work {
        Work::Compare(Children::of(range, sketch), theirs)
    }

    pub(super) fn decode(range: KeyRange, theirs: Vec<Cell>, sketch: &Sketch) -> Work {
        let building = Tabling::new(range, theirs.len(), sketch);
        Work::Decode(range, theirs, Decoding::Building(building))
    }

    /// At most what this work will visit and the bytes it holds, read from the trie.
    pub(super) fn cost(&self, sketch: &Sketch) -> Backlog {
        let leaf = |g: &Children| {
            if g.range().digits() < sketch.depth() {
                0
            } else {
                at_most(g.range(), sketch)
            }
        };
        let (records, bytes) = match self {
            Work::Compare(g, _) => (leaf(g), 64),
            Work::Split(g) => (leaf(g), 0),
            Work::List(g) => (at_most(g.range(), sketch), 0),
            Work::Match(g, ids) | Work::Want(g, ids) => (at_most(g.range(), sketch), 4 * ids.len()),
            Work::Decode(range, cells, _) => (
                at_most(*range, sketch),
                cells.len() * std::mem::size_of::<Cell>(),
            ),
            Work::Table(_) | Work::Turn | Work::EndTurn => (0, 0),
        };
        Backlog { records, bytes }
    }
}

impl Session {
    /// Does waiting work, in order, until it or the budget runs out.
    pub(super) fn work_on(&mut self, sketch: &Sketch, entries: &[Entry], budget: &mut Budget) {
        while !budget.spent() {
            let Some(mut q) = self.work.pop_front() else {
                break;
            };
            if !self.step(&mut q.work, sketch, entries, budget) {
                self.work.push_front(q);
                break;
            }
            self.backlog.sub(q.cost);
        }
    }

    /// Goes on with `work`; `true` when it is done (its answers queued). Work it gives rise to is put
    /// at the front, in order, only when it is done.
    fn step(
        &mut self,
        work: &mut Work,
        sketch: &Sketch,
        entries: &[Entry],
        budget: &mut Budget,
    ) -> bool {
        let salt = self.salt;
        match work {
            Work::Compare(g, theirs) => {
                let done = g.step(sketch, entries, budget);
                if done {
                    self.compare(g.range(), theirs, &g.acc, sketch);
                }
                done
            }
            Work::Split(g) => {
                let done = g.step(sketch, entries, budget);
                if done {
                    let children = g.acc.map(|s| short_fp(s, salt));
                    let range = g.range();
                    self.line(&PeerMessage::Fingerprints { range, children });
                }
                done
            }
            Work::List(g) => {
                let done = g.step(sketch, entries, budget);
                if done {
                    self.list(g.range(), &g.acc);
                }
                done
            }
            Work::Match(g, theirs) => {
                let done = g.step(sketch, entries, budget);
                if done {
                    self.matched(&g.acc, std::mem::take(theirs), g.range());
                }
                done
            }
            Work::Want(g, hashes) => self.want(g, hashes, sketch, entries, budget),
            Work::Decode(range, theirs, d) => {
                self.decode(*range, theirs, d, sketch, entries, budget)
            }
            Work::Table(t) => {
                let done = t.run(salt, sketch, entries, budget);
                if done {
                    self.send_table(t);
                }
                done
            }
            Work::Turn => {
                self.by_id = None;
                self.resolve(sketch);
                true
            }
            Work::EndTurn => {
                self.back();
                self.end_turn();
                true
            }
        }
    }

    /// Puts `work` at the front of what waits, in order (it answers the work just done, so it goes
    /// before what later lines asked).
    pub(super) fn first(&mut self, work: Vec<Work>) {
        for work in work.into_iter().rev() {
            let cost = Backlog::default();
            self.work.push_front(Queued { work, cost });
        }
    }

    /// `HERD-FP` compared with my sums of the 16 parts of `range`.
    fn compare(&mut self, range: KeyRange, theirs: &[u32; 16], mine: &[Sum; 16], sketch: &Sketch) {
        if self.tabled.iter().any(|(r, _)| *r == range) {
            // The other side could not decode our table of this range.
            self.no_tables = true;
        }
        let salt = self.salt;
        let total: u64 = mine.iter().map(|s| s.count).sum();
        let differ = theirs
            .iter()
            .zip(mine)
            .filter(|(t, m)| **t != short_fp(**m, salt))
            .count();
        if differ > 0 && total == 0 {
            // Nothing here: the other side sends all it holds in the range.
            self.line(&PeerMessage::Ids {
                range,
                hashes: Vec::new(),
            });
            return;
        }
        self.compared += 16;
        if differ == 16 && total <= DENSE {
            // Every part differs, in a range small enough to send whole: whether the difference is
            // that dense is known only from the whole turn (see `Session::resolve`).
            self.differing += 16;
            self.dense.push((range, *theirs, *mine));
            return;
        }
        self.differing += self.parts(range, theirs, mine, sketch);
    }

    /// The parts of `range` that differ: sent whole where the other side holds nothing, kept to answer
    /// at the end of the turn otherwise. Returns how many differ.
    fn parts(
        &mut self,
        range: KeyRange,
        theirs: &[u32; 16],
        mine: &[Sum; 16],
        sketch: &Sketch,
    ) -> u64 {
        let mut differing = 0;
        for (d, (theirs, mine)) in theirs.iter().zip(mine).enumerate() {
            let Some(c) = range.child(d as u8) else { break };
            if short_fp(*mine, self.salt) == *theirs {
                continue;
            }
            differing += 1;
            if *theirs == 0 {
                self.send_range(c, sketch);
            } else {
                self.pending.push((c, *mine));
            }
        }
        differing
    }

    /// The small ranges of the turn whose 16 parts all differed (`DENSE`). Where every part compared in
    /// the turn differed too, the difference is as dense as the walk can tell (every record, or
    /// nearly): both sides send all they hold in them, which costs less than finding their few equal
    /// records. Otherwise their parts are answered like any others (by tables where the turn shows
    /// a dense difference): with one client in ten differing, a range of a few hundred clients often
    /// has every part differ, and sending those whole sent five times the records that differ.
    fn answer_dense(&mut self, total: bool, sketch: &Sketch) {
        for (range, theirs, mine) in std::mem::take(&mut self.dense) {
            if total {
                self.send_range(range, sketch);
                self.line(&PeerMessage::Ids {
                    range,
                    hashes: Vec::new(),
                });
            } else {
                self.parts(range, &theirs, &mine, sketch);
            }
        }
    }

    /// How a differing range is answered: split it, or list it.
    pub(super) fn answer(range: KeyRange, mine: Sum, sketch: &Sketch) -> Work {
        if mine.count > LIST && range.child(0).is_some() {
            Work::Split(Children::of(range, sketch))
        } else {
            Work::List(Records::new(range, sketch))
        }
    }

    /// Lists my records of `range` (`HERD-IDS`).
    fn list(&mut self, range: KeyRange, items: &[(u32, u64)]) {
        if items.len() <= MAX_IDS {
            let hashes = items.iter().map(|&(_, h)| short_id(h, self.salt)).collect();
            self.line(&PeerMessage::Ids { range, hashes });
        } else {
            // Only at 16 digits: more clients than a line lists share one key. Send them all and
            // ask for all of the other side's.
            self.records(items.iter().map(|&(i, _)| i));
            self.line(&PeerMessage::Ids {
                range,
                hashes: Vec::new(),
            });
        }
    }

    /// Answers the sub-ranges that differed in the turn just received: each on its own (split or
    /// listed), or, where the turn shows the difference is dense, in groups by one table each. The
    /// turn ends after them.
    pub(super) fn resolve(&mut self, sketch: &Sketch) {
        let expect = self.expected();
        self.answer_dense(expect.is_none(), sketch);
        let pending = std::mem::take(&mut self.pending);
        let mut work = Vec::new();
        let mut groups: std::collections::BTreeMap<KeyRange, Vec<(KeyRange, Sum)>> =
            std::collections::BTreeMap::new();
        for (range, mine) in pending {
            match expect {
                Some(e) if e >= TABLE_AT && !self.no_tables => {
                    let up = range.digits().saturating_sub(2);
                    let group = KeyRange::new(up, range.prefix()).unwrap_or(KeyRange::ALL);
                    groups.entry(group).or_default().push((range, mine));
                }
                _ => work.push(Self::answer(range, mine, sketch)),
            }
        }
        let e = expect.unwrap_or(0.0);
        for (group, members) in groups {
            let clients = members.len() as f64 * e;
            let cells = (2.0 * clients * CELLS_PER_ITEM / 3.0).ceil() as usize * 3 + 12;
            if clients < TABLE_MIN || cells > MAX_CELLS as usize {
                work.extend(members.into_iter().map(|(r, m)| Self::answer(r, m, sketch)));
                continue;
            }
            self.tables_sent += 1;
            work.push(Work::Table(Tabling::new(group, cells, sketch)));
        }
        work.push(Work::EndTurn);
        self.first(work);
    }

    /// Differing clients expected in a differing sub-range of the turn just received, were the
    /// differences spread evenly (Poisson): λ/(1 − e^−λ) where e^−λ is the share that were equal.
    fn expected(&mut self) -> Option<f64> {
        let (compared, differing) = (self.compared, self.differing);
        self.compared = 0;
        self.differing = 0;
        if differing == 0 || differing >= compared {
            None
        } else {
            let f = differing as f64 / compared as f64;
            Some(-(1.0 - f).ln() / f)
        }
    }

    /// Queues the `HERD-IBF` lines of a table of mine, now built.
    fn send_table(&mut self, t: &mut Tabling) {
        let range = t.items.range();
        let mut by_id: Vec<(u32, u32)> = t.items.acc.iter().map(|&(i, it)| (it.id, i)).collect();
        by_id.sort_unstable();
        self.tabled.push((range, by_id));
        let cells = std::mem::take(&mut t.built.cells);
        let mut bytes = Vec::with_capacity(MAX_CHUNK * CELL_BYTES);
        for (k, chunk) in cells.chunks(MAX_CHUNK).enumerate() {
            bytes.clear();
            for c in chunk {
                c.write(&mut bytes);
            }
            self.line(&PeerMessage::Cells {
                range,
                total: cells.len() as u32,
                at: (k * MAX_CHUNK) as u32,
                cells: bytes.clone(),
            });
        }
    }
}
