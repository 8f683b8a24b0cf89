//! One link's reconciliation ([`Session`]): the turns of the exchange, what it writes and how it ends.

use super::*;

/// What a link's reconciliation still has to write, in order.
#[derive(Debug)]
pub(super) enum Job {
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
    pub(super) active: bool,
    pub(super) periodic: bool,
    /// This turn's answer asks something, so it ends with `HERD-OVER`.
    pub(super) asked: bool,
    pub(super) sent: u64,
    pub(super) received: u64,
    pub(super) turns: u32,
    pub(super) bytes: u64,
    /// The salt of this reconciliation's short values.
    pub(super) salt: u64,
    /// Sessions this side opened on the link (the salt's seed, so each one salts anew).
    pub(super) opened: u64,
    /// Sub-ranges that differ, met in the turn being received, to answer at its end, with my sums.
    pub(super) pending: Vec<(KeyRange, Sum)>,
    /// Sub-ranges compared in that turn, and how many of them differed.
    pub(super) compared: u64,
    pub(super) differing: u64,
    /// A table being received.
    pub(super) incoming: Option<Incoming>,
    /// The records of the range last asked for (`HERD-WANT`), by short id.
    pub(super) by_id: Option<(KeyRange, Vec<(u32, u32)>)>,
    /// Ranges this side sent a table of in this session, with the table's records by short id (for
    /// the `HERD-WANT` that follows).
    pub(super) tabled: Vec<(KeyRange, Vec<(u32, u32)>)>,
    /// A table failed to decode in this session (here, or there: the other side answered a table
    /// of ours with its fingerprints), so no more are sent: the plain walk always ends.
    pub(super) no_tables: bool,
    /// Cache indexes of records the other side sent older versions of in the turn being received.
    pub(super) older: Vec<u32>,
    /// Cache indexes this session has written, a bit each.
    pub(super) written: Vec<u64>,
    /// Cache indexes this session has queued or written, a bit each: a record is sent at most once
    /// per exchange, so what an exchange sends is bounded by the cache, whatever the peer asks.
    pub(super) queued: Vec<u64>,
    /// Cache indexes put in `older` in this exchange, a bit each.
    pub(super) backed: Vec<u64>,
    /// The whole-cache stream was queued in this exchange (it runs at most once).
    pub(super) streamed_all: bool,
    /// Ranges this exchange listed, asked for or decoded a table of (`HERD-IDS`, `HERD-WANT`,
    /// `HERD-IBF` received), by kind: each is answered at most once per exchange.
    pub(super) answered: std::collections::HashSet<(u8, KeyRange)>,
    /// Bytes of control lines queued and not yet written.
    pub(super) queued_bytes: usize,
    /// Where the whole-cache stream is, while it is queued or running.
    pub(super) all: Option<usize>,
    pub(super) jobs: VecDeque<Job>,
    /// A link-up catch-up has finished on this link: later sessions are periodic checks.
    pub(super) caught_up: bool,
    /// Tables queued to send, and tables received whole, since the link came up (the operator's
    /// count of the dense path).
    pub(super) tables_sent: u64,
    pub(super) tables_received: u64,
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

    pub(super) fn start(&mut self, salt: u64) {
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
    pub(super) fn fresh(&mut self, indexes: impl IntoIterator<Item = u32>) -> VecDeque<u32> {
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
    pub(super) fn records(&mut self, indexes: impl IntoIterator<Item = u32>) {
        let fresh = self.fresh(indexes);
        if !fresh.is_empty() {
            self.jobs.push_back(Job::Records(fresh));
        }
    }

    /// Range `range` of kind `kind` (`b'I'`, `b'W'`, `b'T'`) is answered now; an error if it was in
    /// this exchange already.
    pub(super) fn once(&mut self, kind: u8, range: KeyRange) -> Result<(), SyncError> {
        if self.answered.insert((kind, range)) {
            Ok(())
        } else {
            Err(SyncError::Repeated)
        }
    }

    /// Queues the whole-cache stream, once per exchange.
    pub(super) fn stream_all(&mut self) {
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

    pub(super) fn back(&mut self) {
        if !self.older.is_empty() {
            let older = std::mem::take(&mut self.older);
            self.jobs.push_back(Job::Back(older.into()));
        }
    }

    pub(super) fn line(&mut self, m: &PeerMessage<'_>) {
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
    pub(super) fn answer(
        &mut self,
        range: KeyRange,
        mine: Sum,
        sketch: &Sketch,
        entries: &[Entry],
    ) {
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
    pub(super) fn resolve(&mut self, sketch: &Sketch, entries: &[Entry]) {
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
    pub(super) fn items(
        &self,
        range: KeyRange,
        sketch: &Sketch,
        entries: &[Entry],
    ) -> Vec<(usize, Item)> {
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
    pub(super) fn send_table(
        &mut self,
        range: KeyRange,
        n: usize,
        sketch: &Sketch,
        entries: &[Entry],
    ) {
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
    pub(super) fn decode(
        &mut self,
        range: KeyRange,
        theirs: Vec<Cell>,
        sketch: &Sketch,
        entries: &[Entry],
    ) {
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
    pub(super) fn send_range(&mut self, range: KeyRange) {
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

    pub(super) fn receive_line(
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
    pub(super) fn end_turn(&mut self) {
        self.turns += 1;
        if self.asked {
            self.line(&PeerMessage::Over);
            self.asked = false;
        } else {
            self.jobs.push_back(Job::Synced);
        }
    }

    pub(super) fn finish(&mut self, link: usize) -> Report {
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
                            e.write_line(out);
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
                            e.write_line(out);
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
