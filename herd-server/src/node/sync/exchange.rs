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
    /// Every record of a range, walked a budget at a time.
    Range(Scan),
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

/// The most records of a range this side lists (`HERD-IDS`) or looks up (`HERD-WANT`) in one
/// exchange step: a range listed by the other side where this one holds more is split instead (and
/// asking for one breaks the exchange: this side never lists so many), so the work a line asks for
/// follows the difference, not the cache.
pub const MAX_SCAN: u64 = 4096;

/// The most bytes of peer lines (ids, table cells) one link may have waiting for work not yet done;
/// past it the link is closed ([`SyncError::Overloaded`]). Sixteen whole tables of the largest size
/// fit, more than an honest turn sends.
pub const MAX_BACKLOG_BYTES: usize = 24 << 20;

/// The most records one link's waiting work may still visit, with `cached` records here: past it
/// the link is closed ([`SyncError::Overloaded`]). An honest turn asks about each record a few times
/// at most (its ranges do not overlap), an insider's asks for the same records again and again.
pub fn max_backlog_records(cached: usize) -> u64 {
    4 * cached as u64 + 16 * MAX_SCAN
}

/// One link's reconciliation state.
///
/// # Bounded work per line
/// Receiving a line only checks it and queues what it asks for (`Work`); the work is done by
/// [`Session::transmit`], at most [`WORK_PER_CALL`] units a call, in the order the lines came (so the
/// answers go out in that order, and the turn's end after them). A peer that asks faster than the
/// work is done meets [`MAX_BACKLOG_BYTES`] and [`max_backlog_records`].
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
    /// Ranges of that turn small enough to send whole whose 16 parts all differ (`DENSE`), with their
    /// fingerprints and my sums of the parts, to answer at its end.
    pub(super) dense: Vec<(KeyRange, [u32; 16], [Sum; 16])>,
    /// Sub-ranges compared in that turn, and how many of them differed.
    pub(super) compared: u64,
    pub(super) differing: u64,
    /// A table being received.
    pub(super) incoming: Option<Incoming>,
    /// The records of the range last asked for (`HERD-WANT`), by short id.
    pub(super) by_id: Option<(KeyRange, Vec<(u32, u32)>)>,
    /// The range the last `HERD-WANT` of this turn named, as received (the look-up it asks for is
    /// kept for the lines that follow it, so only a new range counts against the exchange).
    pub(super) wanting: Option<KeyRange>,
    /// Ranges this side sent a table of in this session, with the table's records by short id (for
    /// the `HERD-WANT` that follows).
    pub(super) tabled: Vec<(KeyRange, Vec<(u32, u32)>)>,
    /// Tabled ranges whose ids a `HERD-WANT` already took, as received.
    pub(super) tabled_wanted: Vec<KeyRange>,
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
    /// What the lines received asked for, not yet done, in order.
    pub(super) work: VecDeque<Queued>,
    /// What that work will still cost at most.
    pub(super) backlog: Backlog,
    /// The most units of work one call did, and all the units done, since the link came up.
    pub(super) most_work: u64,
    pub(super) all_work: u64,
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
    /// Something was queued to send, or work to do before sending.
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

    /// The most units of work (see [`WORK_PER_CALL`]) one call did since the link came up.
    pub fn most_work(&self) -> u64 {
        self.most_work
    }

    /// All the units of work done since the link came up.
    pub fn all_work(&self) -> u64 {
        self.all_work
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

    /// Whether there is anything to write, or work to do before writing.
    pub fn wants_transmit(&self) -> bool {
        !self.jobs.is_empty() || !self.work.is_empty()
    }

    /// Whether work asked for is still undone (a call of [`Session::transmit`] may write nothing
    /// and still have more to do).
    pub fn working(&self) -> bool {
        !self.work.is_empty()
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
        self.dense.clear();
        self.compared = 0;
        self.differing = 0;
        self.incoming = None;
        self.tabled.clear();
        self.tabled_wanted.clear();
        self.no_tables = false;
        self.by_id = None;
        self.wanting = None;
        self.older.clear();
        self.written.clear();
        self.queued.clear();
        self.backed.clear();
        self.streamed_all = false;
        self.answered.clear();
        self.work.clear();
        self.backlog = Backlog::default();
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
            // The first split goes with the root (read from the trie), saving a turn when the
            // roots differ.
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

    /// Sends every record of `range`.
    pub(super) fn send_range(&mut self, range: KeyRange, sketch: &Sketch) {
        self.jobs.push_back(Job::Range(Scan::new(range, sketch)));
    }

    /// Handles a reconciliation line from the other side: checks it and queues the work it asks for
    /// (done by [`Session::transmit`], a budget a call).
    ///
    /// # Errors
    /// [`SyncError::OutOfTurn`]: the line breaks the turns; [`SyncError::Table`]: a table line does
    /// not continue the table being received; [`SyncError::Repeated`]: a range asked about twice;
    /// [`SyncError::Overloaded`]: more asked than a link may have waiting (the driver closes the link).
    pub fn receive(
        &mut self,
        link: usize,
        m: &PeerMessage<'_>,
        sketch: &Sketch,
        entries: &[Entry],
    ) -> Result<Outcome, SyncError> {
        let outcome = self.receive_line(link, m, sketch)?;
        if self.queued_bytes > MAX_QUEUED_BYTES
            || self.backlog.bytes > MAX_BACKLOG_BYTES
            || self.backlog.records > max_backlog_records(entries.len())
        {
            return Err(SyncError::Overloaded);
        }
        Ok(outcome)
    }

    /// One line, checked and queued (see [`Session::receive`]).
    pub(super) fn receive_line(
        &mut self,
        link: usize,
        m: &PeerMessage<'_>,
        sketch: &Sketch,
    ) -> Result<Outcome, SyncError> {
        let before = (self.jobs.len(), self.work.len());
        match m {
            PeerMessage::Root { count, salt, .. } => self.receive_root(*count, *salt, sketch)?,
            _ if !self.active => return Err(SyncError::OutOfTurn),
            PeerMessage::Fingerprints { range, children } => {
                self.defer(Work::compare(*range, *children, sketch), sketch);
            }
            PeerMessage::Ids { range, hashes } => self.receive_ids(*range, hashes, sketch)?,
            PeerMessage::Want { range, hashes } => self.receive_want(*range, hashes, sketch)?,
            PeerMessage::Cells {
                range,
                total,
                at,
                cells,
            } => self.receive_cells(*range, *total, *at, cells, sketch)?,
            PeerMessage::Over => {
                if self.incoming.is_some() {
                    return Err(SyncError::Table);
                }
                self.wanting = None;
                self.defer(Work::Turn, sketch);
            }
            PeerMessage::Synced { count } => return Ok(Outcome::Ended(self.synced(link, *count))),
            _ => return Ok(Outcome::Nothing),
        }
        Ok(if (self.jobs.len(), self.work.len()) != before {
            Outcome::Queued
        } else {
            Outcome::Nothing
        })
    }

    /// `HERD-ROOT`: a reconciliation opens.
    fn receive_root(&mut self, count: u64, salt: u64, sketch: &Sketch) -> Result<(), SyncError> {
        if self.active {
            return Err(SyncError::OutOfTurn);
        }
        self.start(salt);
        if count == 0 && sketch.root().count > 0 {
            self.stream_all();
        }
        // Otherwise the `HERD-FP -` that follows is compared (equal roots: nothing to do).
        Ok(())
    }

    /// `HERD-IDS`: the other side's records of a range (none: send it all).
    fn receive_ids(
        &mut self,
        range: KeyRange,
        hashes: &[u32],
        sketch: &Sketch,
    ) -> Result<(), SyncError> {
        self.once(b'I', range)?;
        if hashes.is_empty() {
            // The other side holds nothing here: a plain stream, the whole cache by index when
            // the range is everything.
            if range == KeyRange::ALL {
                self.stream_all();
            } else {
                self.send_range(range, sketch);
            }
        } else if range.child(0).is_some() && at_most(range, sketch) > MAX_SCAN {
            // The other side lists a few records where this one (or its leaf) holds many: split
            // the range instead of listing it (the other side lists its parts).
            self.defer(Work::Split(Children::of(range, sketch)), sketch);
        } else {
            let theirs = hashes.to_vec();
            self.defer(Work::Match(Records::new(range, sketch), theirs), sketch);
        }
        Ok(())
    }

    /// `HERD-WANT`: records asked for by short id.
    fn receive_want(
        &mut self,
        range: KeyRange,
        hashes: &[u32],
        sketch: &Sketch,
    ) -> Result<(), SyncError> {
        let tabled = self
            .tabled
            .iter()
            .any(|(r, ids)| *r == range && !ids.is_empty());
        // Only the first line of a look-up not asked from a table of ours scans the range; the
        // lines after it (a decoded table is asked for in many) use the ids it gathered.
        let mut scans = false;
        if self.wanting == Some(range) {
            // Another line of the same look-up.
        } else if tabled && !self.tabled_wanted.contains(&range) {
            // Asked from a table of ours: its records, by id, are kept.
            self.tabled_wanted.push(range);
        } else {
            scans = true;
            // A range is looked up once per exchange, and only one this side could have listed.
            self.once(b'W', range)?;
            if range.child(0).is_some()
                && range.digits() <= sketch.depth()
                && at_most(range, sketch) > MAX_SCAN
            {
                return Err(SyncError::Overloaded);
            }
        }
        self.wanting = Some(range);
        let work = Work::Want(Records::new(range, sketch), hashes.to_vec());
        let mut cost = work.cost(sketch);
        if !scans {
            cost.records = 0;
        }
        self.queue(work, cost);
        Ok(())
    }

    /// `HERD-IBF`: a line of a table; a whole table is decoded.
    fn receive_cells(
        &mut self,
        range: KeyRange,
        total: u32,
        at: u32,
        cells: &[u8],
        sketch: &Sketch,
    ) -> Result<(), SyncError> {
        let incoming = self.incoming.get_or_insert_with(|| Incoming {
            range,
            cells: Vec::with_capacity(total as usize),
            total: total as usize,
        });
        if incoming.range != range
            || incoming.total != total as usize
            || incoming.cells.len() != at as usize
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
                self.defer(Work::decode(done.range, done.cells, sketch), sketch);
            }
        }
        Ok(())
    }

    /// `HERD-SYNCED`: the other side ends the session. Work still waiting was asked in the turn that
    /// ended it, which an honest side never does (it asks nothing when it ends): it is dropped.
    fn synced(&mut self, link: usize, count: u64) -> Report {
        self.work.clear();
        self.backlog = Backlog::default();
        self.back();
        self.received = count;
        self.finish(link)
    }

    /// Queues the work a line asks for, counting what it may cost.
    pub(super) fn defer(&mut self, work: Work, sketch: &Sketch) {
        let cost = work.cost(sketch);
        self.queue(work, cost);
    }

    /// Queues `work` counted at `cost` (see [`Session::defer`]).
    fn queue(&mut self, work: Work, cost: Backlog) {
        self.backlog.add(cost);
        self.work.push_back(Queued { work, cost });
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
        self.dense.clear();
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
}
