//! The node: every herd rule in one deterministic state machine, with no sockets and no clock.
//!
//! The tokio driver (`conn`, `peers`) feeds it events — a client batch with its receive time, the bytes
//! a link brought ([`Node::handle_link_input`]), a link going up or down, a dial that failed, a timer
//! that fired ([`Node::handle_timeout`]) — and carries out what it returns: the reply bytes, a Places
//! look-up, lines to send on a link ([`Node::poll_transmit`]), links to dial or close, what to log
//! ([`Node::poll_event`]), and when to wake it next ([`Node::poll_timeout`]). Every peer line is
//! decoded and dispatched here, once: the driver, the simulation, the adversary test, the property
//! tests and the benchmarks all call the same entry point, so what they test is what ships. Because it
//! owns no I/O, the simulation tests run a hundred nodes in one thread with links cut, delayed and
//! healed at will, each on a clock of its own.
//!
//! Flooding: a record is stored only if it is greater (herd-proto's order) than the one held; only then
//! is it queued for every link that is up, except the one it came from. Each link's queue holds at most
//! one entry per client — the client's index — and the record is read from the cache when it is sent,
//! so a slow link sends only the newest record of each client and its memory is bounded by the number of
//! clients. When a link comes up, the two nodes reconcile (the catch-up, [`crate::node::sync`]): they compare
//! fingerprints of ranges of their caches, narrow down the ranges that differ and send each other only
//! the records of clients that differ, ending with `HERD-SYNCED`; that repairs whatever a dead link or a
//! restart lost. A node with nothing gets the whole cache as one plain stream. The dialling side checks
//! a live link the same way every [`CHECK_EVERY`] (equal root fingerprints: one line each way), which
//! repairs a divergence that flooding should have prevented.
//!
//! Links' timing is decided here too, from the times the driver passes in: [`Node::handle_timeout`]
//! says which neighbour to dial (only the server whose name sorts first dials, so a pair has one link), which link
//! needs a keep-alive and which has been silent too long; failed dials back off exponentially with
//! jitter from a seeded generator, so a run is reproducible.

pub mod cache;
pub mod conduct;
pub mod handshake;
pub mod limits;
pub mod sync;
pub mod watch;

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use herd_proto::{
    AtRecord, Frame, Framer, IAmAt, Message, ParseError, PeerMessage, Radius, Timestamp, WhatsAt,
};

use crate::node::cache::{Cache, Entry, Prepared, Preparer};
use crate::node::conduct::{Exchanges, Quarantine, Strike, Strikes};
use crate::node::handshake::Refusal;
use crate::node::limits::{
    too_far_ahead, Limit, NodeLimits, Refusals, ENTRY_OVERHEAD, SKEW_ALLOWANCE,
};
use crate::node::sync::{Outcome, Report, Session, Sum, SyncError};
use crate::node::watch::Watches;
use crate::store::format;

/// A WHATSAT that needs the Places back-end: the driver looks it up, then writes
/// [`herd_proto::write_whatsat`] with `record` and the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup {
    /// The client's record as first produced; its location is the centre of the search.
    pub record: AtRecord<'static>,
    /// Search radius as the client wrote it, in kilometres.
    pub radius: Radius<'static>,
    /// Most results.
    pub bound: u8,
}

impl Lookup {
    /// Centre of the search, degrees.
    pub fn latitude(&self) -> f64 {
        self.record.location.latitude()
    }

    /// Centre of the search, degrees.
    pub fn longitude(&self) -> f64 {
        self.record.location.longitude()
    }
}

/// What became of a client line: the node's decision, so the driver never infers one from the
/// reply's bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// An IAMAT, answered with the record held for its client; `stored` says it was new and is
    /// queued for the links.
    Iamat {
        /// A new record was stored (links have something to send).
        stored: bool,
    },
    /// A line answered `? <line>` (PROTOCOL.md §1), and why.
    Invalid(Invalid),
    /// A WHATSAT whose reply needs a Places look-up.
    Lookup(Lookup),
    /// An IAMAT refused by a limit (PROTOCOL.md §2): the `? ` reply is written, nothing is stored.
    Refused(Limit),
}

/// What [`Node::client_lines`] decided for a run of client lines.
#[derive(Debug, Default, PartialEq)]
pub struct Decided {
    /// Lines answered, from the first: the next line to answer is at this index.
    pub answered: usize,
    /// IAMATs answered (refused ones aside).
    pub iamats: u64,
    /// The index of the last IAMAT answered.
    pub last_iamat: Option<usize>,
    /// A new record was stored (links have something to send).
    pub stored: bool,
    /// The line at [`Decided::answered`] is a WHATSAT whose reply needs this Places look-up.
    pub lookup: Option<Lookup>,
}

/// Why a client line was answered `? <line>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// The line does not parse.
    Malformed(herd_proto::ErrorKind),
    /// A WHATSAT for a client this server holds no record of.
    UnknownClient,
}

/// What [`offer`] did with a record.
enum Offer {
    /// Stored (new to this server), and queued for the links.
    Stored,
    /// The same as the record held at this index; nothing changed.
    Held(usize),
    /// Less than the record held at this index; nothing changed.
    Newer(usize),
    /// A new client past a bound of the cache (the client cap or the byte budget); nothing changed.
    Full(Limit),
}

/// The bounds a new client must fit in: the client cap and the byte budget.
#[derive(Debug, Clone, Copy)]
struct Room {
    clients: usize,
    bytes: u64,
}

/// The AT line a record arrives with.
#[derive(Debug, Clone, Copy)]
enum Given<'a> {
    /// None: the cache renders the record's own (a peer's record).
    Nothing,
    /// Written from the record here (an IAMAT's reply): the line the record renders.
    Written(&'a [u8]),
    /// Read back from disk: kept byte for byte, whatever the record would render.
    Kept(&'a [u8]),
}

/// Who hears of a record [`offer`] stores besides the links: the journal and the watches (either
/// may be left out: records read back from disk go to neither).
#[derive(Default)]
struct Told<'a> {
    journal: Option<&'a mut Journal>,
    watches: Option<&'a mut Watches>,
}

/// Stores `record` if it is greater than the one held, queueing it for every link but `from` and
/// framing it into `journal` (when the node keeps one), and firing the `watches` it matches. A new client is refused when the cache
/// already holds `room.clients` clients or its line would take the cache past `room.bytes` (`None`:
/// no bound, for records read back from disk). A known client's update is always taken (its line
/// grows by a few bytes at most). A free function over the node's parts, so the caller can keep
/// borrowing the node's name inside `record`.
fn offer(
    clients: &mut Cache,
    links: &mut [Link],
    told: Told<'_>,
    record: AtRecord<'_>,
    line: Given<'_>,
    from: Option<usize>,
    room: Option<Room>,
) -> Offer {
    // The stored record's line when the cache renders it (a peer's record), rendered once.
    let mut rendered = Vec::new();
    let index = match clients.index_of(&record.client) {
        Some(i) => {
            match clients.get(i).map(|e| e.cmp_record(&record)) {
                Some(Ordering::Equal) => return Offer::Held(i),
                Some(Ordering::Greater) => return Offer::Newer(i),
                _ => {}
            }
            match line {
                Given::Written(l) => clients.replace_written(i, &record, l),
                Given::Kept(l) => clients.replace(i, &record, Some(l)),
                Given::Nothing => clients.replace(i, &record, None),
            }
            i
        }
        None => {
            if let Some(room) = room {
                if clients.len() >= room.clients {
                    return Offer::Full(Limit::ClientCap);
                }
            }
            let kept = match line {
                Given::Kept(l) => Some(l),
                Given::Written(_) | Given::Nothing => None,
            };
            let entry = Entry::new(&record, kept);
            let stored = stored_line(&line, Some(&entry), &mut rendered);
            if let Some(room) = room {
                if clients.bytes() + stored.len() as u64 + ENTRY_OVERHEAD > room.bytes {
                    return Offer::Full(Limit::CacheBytes);
                }
            }
            clients.push_line(entry, stored)
        }
    };
    if told.journal.is_some() || told.watches.is_some() {
        let stored = stored_line(&line, clients.get(index), &mut rendered);
        if let Some(journal) = told.journal {
            format::write_record(stored, &mut journal.bytes);
            journal.records += 1;
        }
        if let Some(watches) = told.watches {
            watches.fire(&record, stored);
        }
    }
    for (id, link) in links.iter_mut().enumerate() {
        if Some(id) != from {
            link.enqueue(index);
        }
    }
    Offer::Stored
}

/// Records stored and not yet handed to the store, framed for its journal.
#[derive(Debug, Default)]
pub struct Journal {
    /// The framed records ([`crate::store::format`]).
    pub bytes: Vec<u8>,
    /// How many.
    pub records: u64,
}

/// What became of a record read back from disk at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restored {
    /// Held now.
    Stored,
    /// A greater record of that client was read already.
    Held,
    /// It names a server no longer in the herd: skipped.
    Foreign,
    /// Not an AT line.
    Invalid,
}

/// A link with nothing to send gets a `HERD-PING` this often.
pub const KEEPALIVE: Duration = Duration::from_secs(1);
/// A link that has heard nothing for this long is dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(4);
/// A link silent this long has left a keep-alive unanswered (each side pings after [`KEEPALIVE`]
/// without writing, and the other answers at once): an unauthenticated greeting may replace it.
pub const PROVEN_DEAD: Duration = Duration::from_millis(2_500);
/// The dialling side of a live link reconciles it this often (root fingerprints first).
pub const CHECK_EVERY: Duration = Duration::from_secs(30);
/// First wait after a failed dial; it doubles up to [`BACKOFF_MAX`], each wait jittered ±50 %.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between dials.
pub const BACKOFF_MAX: Duration = Duration::from_secs(3);

/// What became of a record from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// New here: stored and queued for the other links.
    Stored,
    /// Not greater than the one held: dropped.
    Held,
    /// It names a server that is not in the herd: refused.
    Foreign,
    /// It breaks a bound a client's record must keep (PROTOCOL.md §5): refused, and not flooded on.
    Refused(Limit),
}

/// What the driver must do for a link, from [`Node::handle_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkAction {
    /// Dial neighbour `id` (and greet it); report [`Node::link_up`] or [`Node::dial_failed`].
    Dial(usize),
    /// Link `id` has been silent too long: close it (then report [`Node::link_down`]).
    Close(usize),
    /// Link `id` has lines to send (a keep-alive, or a periodic check that was opened): wake its
    /// writer, which calls [`Node::poll_transmit`].
    Transmit(usize),
}

/// What [`Node::handle_link_input`] made of a link's bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkInput {
    /// Bytes of whole lines used: drop them from the front of the buffer. The rest is the start of
    /// a line still to come.
    pub consumed: usize,
    /// A record new here was stored: the other links have something to send.
    pub stored: bool,
    /// This link has lines to send (an answer, a pong, flooded records): wake its writer.
    pub transmit: bool,
    /// The link must be closed, and why (the reason is also in [`Node::poll_event`]).
    pub close: Option<Closing>,
}

/// Why the node asks for a link to be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// A line longer than any record can be.
    LineTooLong,
    /// The peer broke a reconciliation: a line out of turn, a table out of order, or a line that has
    /// no place in a reconciliation while one ran. The catch-up runs again when the link is back.
    Reconciliation,
    /// The peer refused the link.
    Refused,
    /// The link was replaced or went down: this input belongs to a connection that is no longer it.
    Stale,
    /// The peer asked for more reconciliation work than an exchange may cost, or let more output
    /// queue up than a link may hold ([`crate::node::sync`]'s bounds): the link closes and is dialled
    /// again with back-off.
    Overloaded,
    /// The peer kept sending what is refused (records past a bound, lines this server does not
    /// read) past [`crate::node::conduct`]'s bounds: the link closes and its name is quarantined.
    Misbehaving,
}

impl Closing {
    /// A few words for the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Closing::LineTooLong => "peer line too long",
            Closing::Reconciliation => "the peer broke the reconciliation",
            Closing::Refused => "refused",
            Closing::Stale => "replaced by a newer link",
            Closing::Overloaded => "the peer asked for more work than a link may cost",
            Closing::Misbehaving => "the peer kept sending what is refused",
        }
    }
}

impl Closing {
    /// The peer broke the protocol or its bounds (not merely refused or went away): its name is
    /// quarantined ([`crate::node::conduct`]).
    pub fn is_fault(self) -> bool {
        matches!(
            self,
            Closing::LineTooLong
                | Closing::Reconciliation
                | Closing::Overloaded
                | Closing::Misbehaving
        )
    }
}

impl std::fmt::Display for Closing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something the driver should log, from [`Node::poll_event`]. Lines are the peer's bytes: escape
/// them before showing them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A reconciliation on the link ended.
    Reconciled(Report),
    /// The first record of this link-up that names a server outside the herd (refused; the rest are
    /// counted and reported by [`LinkEvent::ForeignTotal`] when the link goes down).
    Foreign {
        /// The link.
        link: usize,
        /// The record.
        line: Vec<u8>,
    },
    /// Records refused for naming servers outside the herd, over a link-up that ended.
    ForeignTotal {
        /// The link.
        link: usize,
        /// How many.
        count: u64,
    },
    /// The first record of this link-up refused by a bound a client's record must keep (a time too
    /// far ahead, a new client past the cap or the byte budget, an id too long). The rest are
    /// counted and reported by [`LinkEvent::RefusedTotal`] when the link goes down.
    RecordRefused {
        /// The link.
        link: usize,
        /// The bound it broke.
        limit: Limit,
        /// The record.
        line: Vec<u8>,
    },
    /// Records refused by a bound over a link-up that ended (more than one), by bound.
    RefusedTotal {
        /// The link.
        link: usize,
        /// How many of each.
        counts: Refusals,
    },
    /// A line that is no peer message this server knows (`cause`), or one that has no place on a
    /// running link (a greeting line: `cause` is `None`). Outside a reconciliation it is ignored;
    /// during one it is [`LinkEvent::Broken`] instead.
    Unexpected {
        /// The link.
        link: usize,
        /// The line.
        line: Vec<u8>,
        /// Why it did not parse, if it did not.
        cause: Option<ParseError>,
    },
    /// The peer broke a reconciliation with `line`: the link closes ([`Closing::Reconciliation`]).
    Broken {
        /// The link.
        link: usize,
        /// The line.
        line: Vec<u8>,
        /// What was wrong with it.
        cause: SyncError,
    },
    /// The peer refused the link (`HERD-REFUSED`).
    Refused {
        /// The link.
        link: usize,
        /// The reason it gave.
        reason: Vec<u8>,
    },
    /// A line longer than any record can be: the link closes ([`Closing::LineTooLong`]).
    TooLong {
        /// The link.
        link: usize,
    },
    /// The link closes for a fault (`cause`) and the neighbour's name is quarantined for `period`:
    /// greetings claiming it are refused meanwhile, and this side does not dial it
    /// ([`crate::node::conduct`]).
    Quarantined {
        /// The link.
        link: usize,
        /// Why the link closes.
        cause: Closing,
        /// The strikes of the current period when it closed.
        strikes: Strikes,
        /// How long greetings claiming the name are refused.
        period: Duration,
    },
}

/// When a link was last heard from and written to, and when to dial it next.
#[derive(Debug)]
struct Timing {
    /// This side dials (its name sorts before the neighbour's).
    dials: bool,
    /// A dial is under way.
    dialing: bool,
    /// No dial before this; `None` is at once.
    next_dial: Option<Instant>,
    backoff: Duration,
    last_heard: Option<Instant>,
    last_sent: Option<Instant>,
    /// A `Close` was asked for and the link is not down yet.
    closing: bool,
    /// Which secret of the keyring the next dial proves with; moves on after a `bad-proof`.
    key: usize,
    /// When the last reconciliation was opened on this link.
    last_check: Option<Instant>,
    /// The link was closed for breaking the peer protocol: the next dial backs off as after a failed
    /// one, so a peer that breaks every exchange cannot make the link flap at full speed.
    faulted: bool,
    /// The name's quarantine, kept across link-ups.
    quarantine: Quarantine,
}

/// A neighbour link as the node sees it.
#[derive(Debug)]
struct Link {
    up: bool,
    /// Bumped at each link-up, so a stale connection cannot take a newer link down.
    epoch: u64,
    /// Client indexes waiting to be sent, each at most once.
    queue: VecDeque<u32>,
    queued: Vec<bool>,
    /// Reconciliation: the catch-up at link-up, then periodic checks.
    session: Session,
    timing: Timing,
    /// What the link carried, over all its link-ups (never reset).
    counts: LinkCounts,
    /// Splits the link's bytes into lines (bounded by [`NodeLimits::max_peer_line`]).
    framer: Framer,
    /// A keep-alive is due ([`Node::handle_timeout`]).
    ping_due: bool,
    /// The peer pinged: a `HERD-PONG` is due.
    pong_due: bool,
    /// Records refused for naming a server outside the herd, this link-up.
    foreign: u64,
    /// Records refused by a bound, this link-up.
    refused: Refusals,
    /// Refusals and lines out of place in the current period, this link-up.
    strikes: Strikes,
    /// Exchanges the other side opened, this link-up.
    exchanges: Exchanges,
}

/// What a link has carried since the server started, every link-up of it added together: the
/// operator's counters (`/metrics`), kept as plain integers under the node's lock, so counting costs
/// no atomic operation on the peer path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounts {
    /// Records received from the neighbour, flooded or sent by a reconciliation.
    pub records_in: u64,
    /// Records sent to the neighbour, flooded or sent by a reconciliation.
    pub records_out: u64,
    /// Link-up catch-ups begun (either side may begin one: the dialling side opens it, the other
    /// joins when its `HERD-ROOT` arrives).
    pub catchups_started: u64,
    /// Link-up catch-ups that ended with `HERD-SYNCED` (the others were cut by the link going down).
    pub catchups_finished: u64,
    /// Periodic checks of a live link begun.
    pub checks_started: u64,
    /// Periodic checks that ended.
    pub checks_finished: u64,
    /// Whole-cache streams begun towards the neighbour, because it held nothing.
    pub full_streams: u64,
    /// Records this side sent in reconciliations.
    pub sync_records_out: u64,
    /// Bytes this side wrote in reconciliations: control lines and records, with their newlines.
    pub sync_bytes_out: u64,
    /// Records received while a reconciliation ran on the link (a record flooded meanwhile is
    /// among them: on the wire the two look alike).
    pub sync_records_in: u64,
    /// Bytes received in reconciliations: control lines, and records received while one ran.
    pub sync_bytes_in: u64,
    /// Tables (`HERD-IBF`, the dense path) this side sent in reconciliations.
    pub sync_tables_out: u64,
    /// Tables this side received whole and decoded (or split, when they did not decode).
    pub sync_tables_in: u64,
    /// Reconciliations ended because the peer broke them (the link was closed and caught up again).
    pub sync_broken: u64,
    /// Lines that were no peer message this server knows, or had no place on a running link.
    pub lines_unexpected: u64,
    /// Times the link was closed for a fault and the neighbour's name quarantined.
    pub quarantines: u64,
    /// Exchanges the neighbour tried to open past the rate a link-up may open them.
    pub exchanges_refused: u64,
}

impl LinkCounts {
    /// A reconciliation began: a periodic check or a link-up catch-up.
    fn started(&mut self, periodic: bool) {
        if periodic {
            self.checks_started += 1;
        } else {
            self.catchups_started += 1;
        }
    }

    /// A reconciliation ended (`report`).
    fn finished(&mut self, report: &Report) {
        if report.periodic {
            self.checks_finished += 1;
        } else {
            self.catchups_finished += 1;
        }
    }
}

/// What one call of [`Node::handle_link_input`] read, counted in local integers and added to the
/// link's counts once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Received {
    /// Any line, whole or too long: the link is alive.
    heard: bool,
    /// Records (`AT` lines).
    records: u64,
    /// Of them, those that arrived while a reconciliation ran on the link.
    sync_records: u64,
    /// Bytes of reconciliation lines, and of the records counted in `sync_records`, with newlines.
    sync_bytes: u64,
}

impl Link {
    fn new(dials: bool, max_line: usize) -> Self {
        Link {
            up: false,
            epoch: 0,
            queue: VecDeque::new(),
            queued: Vec::new(),
            session: Session::default(),
            counts: LinkCounts::default(),
            framer: Framer::new(max_line),
            ping_due: false,
            pong_due: false,
            foreign: 0,
            refused: Refusals::default(),
            strikes: Strikes::default(),
            exchanges: Exchanges::default(),
            timing: Timing {
                dials,
                dialing: false,
                next_dial: None,
                backoff: BACKOFF_MIN,
                last_heard: None,
                last_sent: None,
                closing: false,
                key: 0,
                last_check: None,
                faulted: false,
                quarantine: Quarantine::default(),
            },
        }
    }

    fn enqueue(&mut self, index: usize) {
        if !self.up || self.session.streams(index) {
            return; // a link that is down catches up on link-up; a whole-cache stream will send it
        }
        if self.queued.len() <= index {
            self.queued.resize(index + 1, false);
        }
        if !self.queued[index] {
            self.queued[index] = true;
            self.queue.push_back(index as u32);
        }
    }

    fn reset(&mut self) {
        self.queue = VecDeque::new();
        self.queued = Vec::new();
        self.session.reset();
        self.framer = Framer::new(self.framer.max_length());
        self.ping_due = false;
        self.pong_due = false;
        self.foreign = 0;
        self.refused = Refusals::default();
        self.strikes = Strikes::default();
        self.exchanges = Exchanges::default();
    }

    /// The totals of a link-up that ends, for the log.
    fn totals(&self, id: usize, events: &mut VecDeque<LinkEvent>) {
        if self.foreign > 1 {
            events.push_back(LinkEvent::ForeignTotal {
                link: id,
                count: self.foreign,
            });
        }
        if self.refused.total() > 1 {
            events.push_back(LinkEvent::RefusedTotal {
                link: id,
                counts: self.refused,
            });
        }
    }
}

/// A link as [`Node::link_status`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStatus {
    /// The link is up.
    pub up: bool,
    /// Records queued for the neighbour.
    pub queue: usize,
    /// When the neighbour was last heard (`None`: never).
    pub last_heard: Option<Instant>,
    /// A reconciliation (a link-up catch-up or a periodic check) is under way on the link.
    pub reconciling: bool,
    /// The node asked for the link to be closed (silent too long) and it is not down yet.
    pub closing: bool,
    /// What the link carried since the server started.
    pub counts: LinkCounts,
    /// Until when the neighbour's name is quarantined (greetings claiming it refused), if it is.
    pub quarantined_until: Option<Instant>,
}

/// One server's herd state: its name, its neighbours, its cache and its links.
#[derive(Debug)]
pub struct Node {
    name: Box<[u8]>,
    neighbors: Vec<String>,
    clients: Cache,
    links: Vec<Link>,
    /// Every server of the herd (sorted): a record naming another server is refused. Empty: any.
    members: Vec<Box<[u8]>>,
    /// Jitter for back-off, seeded from the name: the same inputs give the same schedule.
    rng: fastrand::Rng,
    /// What the driver should log ([`Node::poll_event`]).
    events: VecDeque<LinkEvent>,
    limits: NodeLimits,
    /// IAMATs refused by a limit.
    refusals: Refusals,
    /// Records from peers refused by a limit.
    peer_refusals: Refusals,
    /// The client cap: not reached, reached and not yet reported, reported.
    cap: CapState,
    /// Every record stored, framed for the journal (`None`: records live in memory only).
    journal: Option<Journal>,
    /// The latest time an event brought: a dial due "at once" is due at this instant.
    clock: Option<Instant>,
    /// The watches of the WebSocket door's watchers, fired by every record stored (PROTOCOL.md §10).
    watches: Watches,
}

/// Where the cache stands against [`NodeLimits::max_clients`]; reported once (clients are never
/// removed, so it is reached once a run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CapState {
    Below,
    Reached,
    Reported,
}

/// The line of the record `entry` holds after [`offer`]: the one given (a written line is the
/// record's own, and a kept one is what the entry renders, whole or compact), or else rendered into
/// `rendered` once.
fn stored_line<'a>(line: &Given<'a>, entry: Option<&Entry>, rendered: &'a mut Vec<u8>) -> &'a [u8] {
    match line {
        Given::Written(l) | Given::Kept(l) => l,
        Given::Nothing => {
            if let (true, Some(e)) = (rendered.is_empty(), entry) {
                e.write_line(rendered);
            }
            rendered
        }
    }
}

impl Node {
    /// A node with an empty cache; `neighbors` fixes the link numbering (index = link id).
    pub fn new(name: &str, neighbors: Vec<String>) -> Self {
        let max_line = NodeLimits::default().max_peer_line();
        let links = neighbors
            .iter()
            .map(|n| Link::new(name < n.as_str(), max_line))
            .collect();
        for server in std::iter::once(name).chain(neighbors.iter().map(String::as_str)) {
            cache::servers::register(server.as_bytes());
        }
        let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Node {
            name: name.as_bytes().into(),
            neighbors,
            clients: Cache::default(),
            links,
            members: Vec::new(),
            rng: fastrand::Rng::with_seed(seed),
            events: VecDeque::new(),
            limits: NodeLimits::default(),
            refusals: Refusals::default(),
            peer_refusals: Refusals::default(),
            cap: CapState::Below,
            journal: None,
            clock: None,
            watches: Watches::default(),
        }
    }

    /// The node with `limits` (the future-time bound and the client cap) instead of the defaults.
    pub fn with_limits(mut self, limits: NodeLimits) -> Self {
        self.limits = limits;
        for link in &mut self.links {
            link.framer = Framer::new(limits.max_peer_line());
        }
        self
    }

    /// The watch registry: the door registers its watchers and their watches here, and every record
    /// the node stores fires it ([`watch`]).
    pub fn watches(&mut self) -> &mut Watches {
        &mut self.watches
    }

    /// The node with the watch registry's bounds.
    pub fn with_watch_limits(mut self, limits: watch::WatchLimits) -> Self {
        self.watches = Watches::new(limits);
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> NodeLimits {
        self.limits
    }

    /// IAMATs refused by a limit so far.
    pub fn refusals(&self) -> Refusals {
        self.refusals
    }

    /// Records from peers refused by a limit so far (PROTOCOL.md §5).
    pub fn peer_refusals(&self) -> Refusals {
        self.peer_refusals
    }

    /// What the cache holds against the byte budget (`max_cache_bytes`).
    pub fn cache_bytes(&self) -> u64 {
        self.clients.bytes()
    }

    /// The bounds a new client must fit in.
    fn room(&self) -> Room {
        Room {
            clients: self.limits.max_clients,
            bytes: self.limits.max_cache_bytes,
        }
    }

    /// `Some(clients)` once, the first time it is asked after the cache reached
    /// [`NodeLimits::max_clients`] — by a client or by a peer — so the driver says so once.
    pub fn take_cap_reached(&mut self) -> Option<usize> {
        if self.cap == CapState::Reached {
            self.cap = CapState::Reported;
            return Some(self.clients.len());
        }
        None
    }

    fn note_len(&mut self) {
        if self.cap == CapState::Below && self.clients.len() >= self.limits.max_clients {
            self.cap = CapState::Reached;
        }
    }

    /// Makes the node journal every record it stores from then on — from a client or from a peer —
    /// for the driver to hand to the store ([`Node::journal`]). Records read back at start
    /// ([`Node::restore`]) are not journaled again.
    pub fn with_journal(mut self) -> Self {
        self.journal = Some(Journal::default());
        self
    }

    /// The records stored since the driver last emptied this (`None` without a journal). The driver
    /// hands them to the store before it lets go of the node, and — when the rule of
    /// [`Fsync::replies_wait_for_disk`](crate::config::Fsync::replies_wait_for_disk) says so — sends
    /// the replies that acknowledge them only once the store has them on disk.
    pub fn journal(&mut self) -> Option<&mut Journal> {
        self.journal.as_mut().filter(|j| !j.bytes.is_empty())
    }

    /// A record read back from disk at start: held if it is the greatest of its client so far. It is
    /// neither journaled again nor queued for links (none is up yet): the catch-up on link-up sends
    /// the cache as it stands, as for any record.
    pub fn restore(&mut self, line: &[u8]) -> Restored {
        let Ok(record) = AtRecord::parse(line) else {
            return Restored::Invalid;
        };
        if !self.is_member(&record.server) {
            return Restored::Foreign;
        }
        // Everything that was stored is held again, whatever the cap says now.
        match offer(
            &mut self.clients,
            &mut self.links,
            Told::default(),
            record,
            Given::Kept(line),
            None,
            None,
        ) {
            Offer::Stored => {
                self.note_len();
                Restored::Stored
            }
            _ => Restored::Held,
        }
    }

    /// What [`Node::restore_prepared`] needs is made from a line on any thread by this
    /// ([`Preparer::prepare_line`]): loading at start prepares records on other threads, so only
    /// the cache work is left in order.
    pub fn preparer(&self) -> Preparer {
        self.clients.preparer()
    }

    /// [`Node::restore`] of a record made by [`Node::preparer`].
    pub fn restore_prepared(&mut self, p: Prepared) -> Restored {
        let e = p.entry();
        if !self.is_member(e.server()) {
            return Restored::Foreign;
        }
        // No link is up yet, so nothing is queued (catch-up sends the cache on link-up), and
        // nothing is journaled again.
        if self.clients.put_prepared(p) {
            self.note_len();
            Restored::Stored
        } else {
            Restored::Held
        }
    }

    /// Makes room for about `records` more clients (at start, before loading them).
    pub fn reserve(&mut self, records: usize) {
        self.clients.reserve(records);
    }

    /// Frames the records at cache indexes `from..` into `out` (at most `max`), for a snapshot;
    /// returns where the next chunk starts, or `None` after the last record. Indexes never change,
    /// so a snapshot read chunk by chunk, unlocking in between, misses no client.
    pub fn snapshot_chunk(&self, from: usize, max: usize, out: &mut Vec<u8>) -> Option<usize> {
        let end = from.saturating_add(max).min(self.clients.len());
        for i in from..end {
            if let Some(e) = self.clients.get(i) {
                e.with_line(|l| format::write_record(l, out));
            }
        }
        (end < self.clients.len()).then_some(end)
    }

    /// Sets the herd's members: records naming a server outside it are refused
    /// ([`Node::handle_link_input`]). The driver always sets it; without it any name is taken.
    pub fn with_members<S: AsRef<str>>(mut self, members: &[S]) -> Self {
        self.members = members
            .iter()
            .map(|m| m.as_ref().as_bytes().into())
            .collect();
        for m in &self.members {
            cache::servers::register(m);
        }
        self.members.sort();
        self
    }

    /// Whether `server` may appear in a record.
    fn is_member(&self, server: &[u8]) -> bool {
        self.members.is_empty() || self.members.binary_search_by(|m| (**m).cmp(server)).is_ok()
    }

    /// The server's name.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The neighbours' names, by link id.
    pub fn neighbors(&self) -> &[String] {
        &self.neighbors
    }

    /// The link id of neighbour `name`.
    pub fn link_id(&self, name: &[u8]) -> Option<usize> {
        self.neighbors.iter().position(|n| n.as_bytes() == name)
    }

    /// How many clients the cache holds.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// How many records the node holds and their fingerprint (the root of the trie that catch-up
    /// compares): two servers that hold the same records have the same one. Constant time, so an
    /// operator's page can compare whole servers at every refresh.
    pub fn fingerprint(&self) -> Sum {
        self.clients.sketch().root()
    }

    /// The AT line held for `client` (rendered from the record the cache keeps).
    pub fn get(&self, client: &[u8]) -> Option<Vec<u8>> {
        self.clients
            .index_of(client)
            .and_then(|i| self.clients.get(i))
            .map(|e| e.line().into_owned())
    }

    /// The AT line of the client at cache index `index` (indexes run from 0 to [`Node::len`]).
    pub fn line_at(&self, index: usize) -> Option<Vec<u8>> {
        self.clients.get(index).map(|e| e.line().into_owned())
    }

    /// Every held AT line, in cache order (each rendered from the record the cache keeps).
    pub fn lines(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.clients.iter().map(|e| e.line().into_owned())
    }

    /// A line from a client, received at `now`: writes the reply to `out` (with its `\n`) or asks for a
    /// Places look-up.
    pub fn client_line(&mut self, line: &[u8], now: Timestamp, out: &mut Vec<u8>) -> Step {
        match Message::parse(line) {
            Ok(Message::IAmAt(iamat)) => self.iamat(line, iamat, now, out),
            Ok(Message::WhatsAt(q)) => self.whatsat(line, q, out),
            Err(e) => {
                herd_proto::write_invalid(line, out);
                Step::Invalid(Invalid::Malformed(e.kind))
            }
        }
    }

    /// An IAMAT: judged against the limits, then offered to the cache as a new record. The reply is
    /// the record stored, or the one held if it is not newer (PROTOCOL.md §3), or `? ` if refused.
    #[inline]
    fn iamat(&mut self, line: &[u8], iamat: IAmAt<'_>, now: Timestamp, out: &mut Vec<u8>) -> Step {
        // Judged here, where the record is born, and again by every server a peer hands it
        // to (with the skew allowance: `accept_peer_record`).
        if too_far_ahead(iamat.time.value(), now, self.limits.max_future) {
            return self.refuse(Limit::FutureTime, line, out);
        }
        if iamat.client.len() > self.limits.max_client_id {
            return self.refuse(Limit::ClientId, line, out);
        }
        let room = self.room();
        let record = AtRecord::new(&self.name, iamat, now);
        // Write the new record as the reply.
        let start = out.len();
        record.write_to(out);
        // The cache keeps the record's fields; its line renders back as this reply.
        let offered = offer(
            &mut self.clients,
            &mut self.links,
            Told {
                journal: self.journal.as_mut(),
                watches: Some(&mut self.watches),
            },
            record,
            Given::Written(&out[start..]),
            None,
            Some(room),
        );
        let stored = match offered {
            Offer::Stored => {
                self.note_len();
                true
            }
            // A record equal to the one held (the same IAMAT again, read in the same instant) is
            // the very line just written, when the entry renders its fields: kept, not rendered
            // again.
            Offer::Held(held) if self.clients.get(held).is_some_and(Entry::is_fields) => false,
            Offer::Held(held) | Offer::Newer(held) => {
                out.truncate(start);
                if let Some(e) = self.clients.get(held) {
                    e.write_line(out);
                }
                false
            }
            Offer::Full(limit) => {
                out.truncate(start);
                return self.refuse(limit, line, out);
            }
        };
        out.push(b'\n');
        Step::Iamat { stored }
    }

    /// A WHATSAT: about a client held here, it needs a Places look-up (done by the driver,
    /// unlocked); about one unknown here, it is answered `? `.
    #[inline]
    fn whatsat(&self, line: &[u8], q: WhatsAt<'_>, out: &mut Vec<u8>) -> Step {
        let held = self
            .clients
            .index_of(&q.client)
            .and_then(|i| self.clients.get(i))
            .and_then(Entry::record);
        match held {
            Some(record) => Step::Lookup(Lookup {
                record,
                radius: q.radius.into_owned(),
                bound: q.bound,
            }),
            None => {
                herd_proto::write_invalid(line, out);
                Step::Invalid(Invalid::UnknownClient)
            }
        }
    }

    /// Answers `lines` in order into `out`, all received at `now`, and says what it decided. It stops
    /// before a WHATSAT that needs a Places look-up (returned in [`Decided::lookup`], not answered),
    /// or after a line for which `each` returns `false`. `each` is told every line answered, its
    /// step and its reply (the bytes it added to `out`), so the driver can count, log and decide when
    /// the replies must go out first, without reading a decision from the bytes.
    pub fn client_lines<L: AsRef<[u8]>>(
        &mut self,
        lines: &[L],
        now: Timestamp,
        out: &mut Vec<u8>,
        mut each: impl FnMut(&[u8], &Step, &[u8]) -> bool,
    ) -> Decided {
        let mut decided = Decided::default();
        for (i, line) in lines.iter().enumerate() {
            let line = line.as_ref();
            let start = out.len();
            let step = self.client_line(line, now, out);
            if let Step::Lookup(q) = step {
                decided.lookup = Some(q);
                return decided;
            }
            if let Step::Iamat { stored } = step {
                decided.stored |= stored;
                decided.iamats += 1;
                decided.last_iamat = Some(i);
            }
            decided.answered += 1;
            if !each(line, &step, &out[start..]) {
                break;
            }
        }
        decided
    }

    /// Counts `why`, answers `? <line>`.
    fn refuse(&mut self, why: Limit, line: &[u8], out: &mut Vec<u8>) -> Step {
        self.refusals.count(why);
        herd_proto::write_invalid(line, out);
        Step::Refused(why)
    }

    /// A record from neighbour `from`, received when this server's clock read `wall`: stored and
    /// flooded on if it is new here, names a server of the herd, and keeps every bound a client's
    /// record must keep (PROTOCOL.md §5): a client time no further ahead of `wall` than `max_future`
    /// plus [`SKEW_ALLOWANCE`], an id of at most `max_client_id` bytes, and — for a new client — room
    /// under the client cap and the byte budget. Holding the herd's secret lifts none of them. An
    /// older record than the one held, received while reconciling with `from`, is answered with the
    /// held one.
    ///
    /// A refused record is not held and not flooded on: the herd converges on the records every
    /// server admits. The server that holds it sends it again at most once per reconciliation (its
    /// fingerprints differ), and this one refuses it again, so no exchange runs longer for it.
    fn accept_peer_record(
        &mut self,
        from: usize,
        record: AtRecord<'_>,
        wall: Timestamp,
    ) -> Accepted {
        if !self.is_member(&record.server) {
            return Accepted::Foreign;
        }
        let limit = if too_far_ahead(
            record.time.value(),
            wall,
            self.limits.max_future.saturating_add(SKEW_ALLOWANCE),
        ) {
            Some(Limit::FutureTime)
        } else if record.client.len() > self.limits.max_client_id {
            Some(Limit::ClientId)
        } else {
            None
        };
        if let Some(limit) = limit {
            self.peer_refusals.count(limit);
            return Accepted::Refused(limit);
        }
        let room = self.room();
        match offer(
            &mut self.clients,
            &mut self.links,
            Told {
                journal: self.journal.as_mut(),
                watches: Some(&mut self.watches),
            },
            record,
            Given::Nothing,
            Some(from),
            Some(room),
        ) {
            Offer::Stored => {
                self.note_len();
                Accepted::Stored
            }
            Offer::Full(limit) => {
                self.peer_refusals.count(limit);
                Accepted::Refused(limit)
            }
            Offer::Newer(held) => {
                // During a reconciliation the other side sent an older record than this one (a
                // hint that chose the wrong side, or records sent whole both ways): it lacks ours.
                if let Some(link) = self.links.get_mut(from) {
                    link.session.older(held);
                }
                Accepted::Held
            }
            _ => Accepted::Held,
        }
    }

    /// The bytes link `id` (of epoch `epoch`) brought, decrypted, at `now` (monotonic) when the wall
    /// clock read `wall` (records from the future are judged by it): every whole line in
    /// `input` is decoded and handled here — records, keep-alives, reconciliation, refusals — and
    /// `seen` is called with each record line (for the driver's log). The one way peer lines enter
    /// the node: the driver, the simulation and the tests all call it.
    ///
    /// Returns how many bytes were used (the rest is a line still arriving: keep it and call again
    /// with more), whether the other links or this one have something to send, and whether the link
    /// must close. What deserves a log line is queued for [`Node::poll_event`].
    pub fn handle_link_input(
        &mut self,
        id: usize,
        epoch: u64,
        input: &[u8],
        now: Instant,
        wall: Timestamp,
        seen: impl FnMut(&[u8]),
    ) -> LinkInput {
        let mut result = LinkInput::default();
        let live = self.links.get(id).is_some_and(|l| l.up && l.epoch == epoch);
        if !live {
            result.consumed = input.len();
            result.close = Some(Closing::Stale);
            return result;
        }
        self.tell(now);
        let batch = self.read_lines(id, input, now, wall, &mut result, seen);
        self.settle_input(id, now, batch, &result);
        result.transmit = result.close.is_none() && self.wants_transmit(id);
        result
    }

    /// Frames and handles the lines of `input` from link `id` until the input ends with a partial
    /// line or the link must close, counting into `result` what was used and decided.
    fn read_lines(
        &mut self,
        id: usize,
        input: &[u8],
        now: Instant,
        wall: Timestamp,
        result: &mut LinkInput,
        mut seen: impl FnMut(&[u8]),
    ) -> Received {
        let mut batch = Received::default();
        while result.close.is_none() {
            let rest = &input[result.consumed..];
            match self.links[id].framer.next(rest) {
                Frame::Line { line, consumed } => {
                    batch.heard = true;
                    let line = &rest[line];
                    if let Err(closing) = self.peer_line(id, line, now, wall, &mut batch, result) {
                        result.close = Some(closing);
                    } else if line.starts_with(b"AT ") {
                        seen(line);
                    }
                    result.consumed += consumed;
                }
                Frame::TooLong { consumed, .. } => {
                    batch.heard = true;
                    result.consumed += consumed;
                    self.events.push_back(LinkEvent::TooLong { link: id });
                    result.close = Some(Closing::LineTooLong);
                }
                Frame::Partial { consumed } => {
                    result.consumed += consumed;
                    break;
                }
                _ => break,
            }
        }
        batch
    }

    /// After a read from link `id`: its timer and counts, and — if it must close for a fault — the
    /// quarantine of its name and the back-off of the next dial.
    fn settle_input(&mut self, id: usize, now: Instant, batch: Received, result: &LinkInput) {
        let link = &mut self.links[id];
        if batch.heard {
            link.timing.last_heard = Some(now);
        }
        let c = &mut link.counts;
        c.records_in += batch.records;
        c.sync_records_in += batch.sync_records;
        c.sync_bytes_in += batch.sync_bytes;
        if let Some(cause) = result.close.filter(|c| c.is_fault()) {
            // Broken, overloaded, misbehaving or too long: the name is quarantined (greetings
            // claiming it are refused, and this side does not dial it, for a while).
            let period = link.timing.quarantine.fault(now);
            link.counts.quarantines += 1;
            self.events.push_back(LinkEvent::Quarantined {
                link: id,
                cause,
                strikes: link.strikes,
                period,
            });
        }
        if matches!(result.close, Some(c) if c.is_fault() || c == Closing::Refused) {
            // A fault, or refused (another server holds the link by this name): the next dial
            // backs off, so the link cannot flap at full speed.
            link.timing.faulted = true;
        }
    }

    /// One whole line from link `id`, received at `now`.
    fn peer_line(
        &mut self,
        id: usize,
        line: &[u8],
        now: Instant,
        wall: Timestamp,
        batch: &mut Received,
        result: &mut LinkInput,
    ) -> Result<(), Closing> {
        let reconciling = self.links[id].session.active();
        let bytes = line.len() as u64 + 1;
        let m = match PeerMessage::parse(line) {
            Ok(m) => m,
            Err(e) => return self.unexpected(id, line, now, Some(e)),
        };
        match m {
            PeerMessage::Record(r) => {
                batch.records += 1;
                if reconciling {
                    batch.sync_records += 1;
                    batch.sync_bytes += bytes;
                }
                match self.accept_peer_record(id, r, wall) {
                    Accepted::Stored => result.stored = true,
                    Accepted::Held => {}
                    Accepted::Refused(limit) => self.refused_record(id, limit, line, now)?,
                    Accepted::Foreign => self.foreign_record(id, line, now)?,
                }
            }
            PeerMessage::Ping => self.links[id].pong_due = true,
            PeerMessage::Pong => {}
            PeerMessage::Refused { reason } => {
                self.events.push_back(LinkEvent::Refused {
                    link: id,
                    reason: reason.into_owned(),
                });
                return Err(Closing::Refused);
            }
            m @ (PeerMessage::Root { .. }
            | PeerMessage::Fingerprints { .. }
            | PeerMessage::Ids { .. }
            | PeerMessage::Want { .. }
            | PeerMessage::Cells { .. }
            | PeerMessage::Over
            | PeerMessage::Synced { .. }) => {
                batch.sync_bytes += bytes;
                self.peer_sync(id, line, &m, now)?;
            }
            // A greeting line on a running link, or a message of a later version.
            _ => return self.unexpected(id, line, now, None),
        }
        Ok(())
    }

    /// A record from link `id` refused for breaking `limit`: counted, the first one logged, and a
    /// strike — hard for what no honest server sends (a time from the future, an over-long id),
    /// soft for what a full cache refuses — that may close the link.
    fn refused_record(
        &mut self,
        id: usize,
        limit: Limit,
        line: &[u8],
        now: Instant,
    ) -> Result<(), Closing> {
        let link = &mut self.links[id];
        link.refused.count(limit);
        if link.refused.total() == 1 {
            self.events.push_back(LinkEvent::RecordRefused {
                link: id,
                limit,
                line: line.to_vec(),
            });
        }
        let kind = match limit {
            Limit::FutureTime | Limit::ClientId => Strike::Hard,
            _ => Strike::Soft,
        };
        if link.strikes.strike(kind, now) {
            return Err(Closing::Misbehaving);
        }
        Ok(())
    }

    /// A record from link `id` naming a server outside the herd: counted, the first one logged, and
    /// a soft strike that may close the link.
    fn foreign_record(&mut self, id: usize, line: &[u8], now: Instant) -> Result<(), Closing> {
        let link = &mut self.links[id];
        link.foreign += 1;
        if link.foreign == 1 {
            self.events.push_back(LinkEvent::Foreign {
                link: id,
                line: line.to_vec(),
            });
        }
        if link.strikes.strike(Strike::Soft, now) {
            return Err(Closing::Misbehaving);
        }
        Ok(())
    }

    /// A reconciliation line from link `id`: handed to its exchange, unless it opens one too soon
    /// after the last; a broken exchange closes the link.
    fn peer_sync(
        &mut self,
        id: usize,
        line: &[u8],
        m: &PeerMessage<'_>,
        now: Instant,
    ) -> Result<(), Closing> {
        let link = &mut self.links[id];
        if matches!(m, PeerMessage::Root { .. })
            && !link.session.active()
            && !link.exchanges.open(now)
        {
            // The other side opens exchanges back to back: each may ask the whole cache.
            link.counts.exchanges_refused += 1;
            self.broken(id, line, SyncError::TooSoon);
            return Err(Closing::Overloaded);
        }
        if let Err(cause) = self.sync_message(id, m) {
            let closing = self.broken(id, line, cause);
            return Err(if cause == SyncError::Overloaded {
                Closing::Overloaded
            } else {
                closing
            });
        }
        Ok(())
    }

    /// A line with no place on a running link: counted, logged, and ignored — unless a
    /// reconciliation runs, which it then breaks (the exchange could wait for ever on an answer the
    /// peer sent in a form this server does not read).
    fn unexpected(
        &mut self,
        id: usize,
        line: &[u8],
        now: Instant,
        cause: Option<ParseError>,
    ) -> Result<(), Closing> {
        self.links[id].counts.lines_unexpected += 1;
        if self.links[id].session.active() {
            return Err(self.broken(id, line, SyncError::Unexpected));
        }
        self.events.push_back(LinkEvent::Unexpected {
            link: id,
            line: line.to_vec(),
            cause,
        });
        if self.links[id].strikes.strike(Strike::Soft, now) {
            return Err(Closing::Misbehaving);
        }
        Ok(())
    }

    /// The peer broke the reconciliation on link `id` with `line`.
    fn broken(&mut self, id: usize, line: &[u8], cause: SyncError) -> Closing {
        self.links[id].counts.sync_broken += 1;
        self.events.push_back(LinkEvent::Broken {
            link: id,
            line: line.to_vec(),
            cause,
        });
        Closing::Reconciliation
    }

    /// Whether a `HERD-HELLO` from `name`, addressed `to`, may go on; the link id if so.
    /// `authenticated` says the greeting will prove a secret before the link comes up.
    ///
    /// # Errors
    /// The refusal to send: not a neighbour, not meant for this server, from the side that should
    /// accept (only the server whose name sorts first dials), or for a link that is up and alive
    /// (authenticated or not).
    pub fn admit_hello(
        &self,
        name: &[u8],
        to: &[u8],
        authenticated: bool,
        now: Instant,
    ) -> Result<usize, Refusal> {
        let id = self.link_id(name).ok_or(Refusal::UnknownPeer)?;
        if to != &*self.name {
            return Err(Refusal::WrongName);
        }
        if self.links[id].timing.dials {
            return Err(Refusal::WrongSide);
        }
        if self.links[id].timing.quarantine.holds(now) {
            // Before any proof is checked: a quarantined name costs a line, not a handshake.
            return Err(Refusal::Quarantined);
        }
        if !authenticated {
            // An authenticated greeting is judged once it has proved the secret
            // ([`Node::try_link_up`]): only then is a refusal news of a second server by that name.
            self.may_replace(id, now)?;
        }
        Ok(id)
    }

    /// A link that is up is replaced only once it is proven dead: silent for [`PROVEN_DEAD`], so it
    /// left a keep-alive unanswered. Proving the secret is not enough — a second process given the
    /// same name, or a peer holding the secret that greets again and again, would otherwise take the
    /// link from the server that answers on it (and restart its catch-up each time). A neighbour
    /// that restarted closed its old connection (its kernel resets it), or that link falls silent.
    fn may_replace(&self, id: usize, now: Instant) -> Result<(), Refusal> {
        let link = &self.links[id];
        let silent = link
            .timing
            .last_heard
            .map_or(Duration::MAX, |at| now.saturating_duration_since(at));
        if link.up && silent < PROVEN_DEAD {
            return Err(Refusal::LinkUp);
        }
        Ok(())
    }

    /// A greeting for link `id` finished: the link comes up (replacing an older one) unless the
    /// rule of [`Node::admit_hello`] forbids it now. Returns the new epoch.
    ///
    /// # Errors
    /// [`Refusal::LinkUp`]: the link already up is alive (it answers keep-alives).
    pub fn try_link_up(
        &mut self,
        id: usize,
        now: Instant,
        authenticated: bool,
    ) -> Result<u64, Refusal> {
        let _ = authenticated;
        if self.links[id].timing.quarantine.holds(now) {
            return Err(Refusal::Quarantined);
        }
        self.may_replace(id, now)?;
        Ok(self.link_up(id, now))
    }

    /// Which secret the next dial of link `id` proves with (an index into the keyring).
    pub fn dial_key(&self, id: usize) -> usize {
        self.links[id].timing.key
    }

    /// Neighbour `id` refused our proof: the next dial proves with the next secret, so a herd in the
    /// middle of a rotation links up whichever of its secrets each side knows.
    pub fn proof_refused(&mut self, id: usize) {
        self.links[id].timing.key += 1;
    }

    /// Link `id` came up: starts the catch-up on it (the dialling side opens the reconciliation).
    /// Returns the link's epoch.
    pub fn link_up(&mut self, id: usize, now: Instant) -> u64 {
        self.tell(now);
        let link = &mut self.links[id];
        if link.up {
            // Replaced while up: the old link-up's refusals are said now.
            link.totals(id, &mut self.events);
        }
        link.reset();
        link.up = true;
        link.epoch += 1;
        if link.timing.dials && link.session.open(self.clients.sketch()) {
            link.counts.started(link.session.periodic());
        }
        let t = &mut link.timing;
        t.last_check = Some(now);
        t.dialing = false;
        t.closing = false;
        t.faulted = false;
        t.last_heard = Some(now);
        t.last_sent = Some(now);
        link.epoch
    }

    /// Link `id` of epoch `epoch` went down at `now`. A newer link of the same neighbour is left
    /// alone. A dialling side dials again soon — after a back-off when the link was closed for
    /// breaking the protocol.
    pub fn link_down(&mut self, id: usize, epoch: u64, now: Instant) {
        self.tell(now);
        let jitter = 0.5 + self.rng.f64();
        let link = &mut self.links[id];
        if link.epoch == epoch && link.up {
            link.totals(id, &mut self.events);
            link.up = false;
            link.reset();
            let t = &mut link.timing;
            t.closing = false;
            if t.faulted {
                let after = now + t.backoff.mul_f64(jitter);
                // A quarantined name is not dialled either.
                t.next_dial = Some(t.quarantine.until().map_or(after, |q| q.max(after)));
                t.backoff = (t.backoff * 2).min(BACKOFF_MAX);
            } else {
                t.next_dial = Some(now + BACKOFF_MIN.mul_f64(jitter));
            }
        }
    }

    /// A dial of neighbour `id` failed at `now`: the next one waits, longer each time.
    pub fn dial_failed(&mut self, id: usize, now: Instant) {
        self.tell(now);
        let jitter = 0.5 + self.rng.f64();
        let t = &mut self.links[id].timing;
        t.dialing = false;
        t.next_dial = Some(now + t.backoff.mul_f64(jitter));
        t.backoff = (t.backoff * 2).min(BACKOFF_MAX);
    }

    /// Something was written on link `id` at `now` (the keep-alive counts from there).
    pub fn sent(&mut self, id: usize, now: Instant) {
        self.tell(now);
        self.links[id].timing.last_sent = Some(now);
    }

    /// Keeps the latest time an event brought (clocks given by the driver never go back, but a
    /// batch may be handled after a later one: the greatest is kept).
    fn tell(&mut self, now: Instant) {
        self.clock = Some(self.clock.map_or(now, |c| c.max(now)));
    }

    /// When the node next needs [`Node::handle_timeout`]: the earliest dial, keep-alive, dead-link
    /// verdict or periodic check. `None`: nothing is due until an event arrives (no link up and no
    /// dial to make, or a new node that was never told the time: call [`Node::handle_timeout`] once
    /// when it starts). The driver sleeps until then, or until a link goes up or down or a dial
    /// fails (which move the deadlines earlier).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.links
            .iter()
            .filter_map(|l| l.deadline(self.clock))
            .min()
    }

    /// Does what is due at `now`: returns the dials to make, the links to close and the links that
    /// have lines to send (keep-alives, periodic checks).
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<LinkAction> {
        self.tell(now);
        let mut actions = Vec::new();
        for (id, link) in self.links.iter_mut().enumerate() {
            let t = &mut link.timing;
            if link.up {
                let due = |at: Option<Instant>, after: Duration| {
                    at.is_none_or(|at| now.saturating_duration_since(at) >= after)
                };
                if !t.closing && due(t.last_heard, DEAD_AFTER) {
                    t.closing = true;
                    actions.push(LinkAction::Close(id));
                    continue;
                }
                let mut transmit = false;
                if t.dials
                    && due(t.last_check, CHECK_EVERY)
                    && link.session.open(self.clients.sketch())
                {
                    link.counts.started(link.session.periodic());
                    t.last_check = Some(now);
                    transmit = true;
                }
                if due(t.last_sent, KEEPALIVE) {
                    t.last_sent = Some(now);
                    link.ping_due = true;
                    transmit = true;
                }
                if transmit {
                    actions.push(LinkAction::Transmit(id));
                }
            } else if t.dials && !t.dialing && t.next_dial.is_none_or(|at| now >= at) {
                t.dialing = true;
                actions.push(LinkAction::Dial(id));
            }
        }
        actions
    }

    /// Whether link `id` is up.
    pub fn is_up(&self, id: usize) -> bool {
        self.links[id].up
    }

    /// The epoch of link `id` while it is up.
    pub fn epoch(&self, id: usize) -> Option<u64> {
        let link = self.links.get(id)?;
        link.up.then_some(link.epoch)
    }

    /// What an operator sees of link `id`: up or down, records waiting, when the neighbour was last
    /// heard.
    pub fn link_status(&self, id: usize) -> LinkStatus {
        let link = &self.links[id];
        LinkStatus {
            up: link.up,
            queue: link.queue.len(),
            last_heard: link.timing.last_heard,
            reconciling: link.session.active(),
            closing: link.timing.closing,
            counts: link.counts,
            quarantined_until: link
                .timing
                .quarantine
                .until()
                .filter(|&at| self.clock.is_none_or(|now| now < at)),
        }
    }

    /// Whether link `id` (of `epoch`) has reconciliation work left that the last
    /// [`Node::poll_transmit`] did not finish, even if it wrote nothing: the writer calls again
    /// after letting others have the node (see [`crate::node::sync::WORK_PER_CALL`]).
    pub fn working(&self, id: usize, epoch: u64) -> bool {
        let link = &self.links[id];
        link.up && link.epoch == epoch && link.session.working()
    }

    /// Whether link `id` has anything to send.
    pub fn wants_transmit(&self, id: usize) -> bool {
        let link = &self.links[id];
        link.up
            && (link.ping_due
                || link.pong_due
                || link.session.wants_transmit()
                || !link.queue.is_empty())
    }

    /// Opens a reconciliation on live link `id` now, as the periodic check does (the dialling side
    /// only, and not while one runs). Returns whether it opened one.
    pub fn check_link(&mut self, id: usize) -> bool {
        let link = &mut self.links[id];
        let opened = link.up && link.timing.dials && link.session.open(self.clients.sketch());
        if opened {
            link.counts.started(link.session.periodic());
        }
        opened
    }

    /// Whether a reconciliation is under way on link `id`.
    pub fn reconciling(&self, id: usize) -> bool {
        self.links[id].session.active()
    }

    /// A reconciliation line (`HERD-ROOT`, `HERD-FP`, `HERD-IDS`, `HERD-WANT`, `HERD-IBF`,
    /// `HERD-OVER`, `HERD-SYNCED`) from neighbour `id`; what it asks is queued for
    /// [`Node::poll_transmit`].
    ///
    /// # Errors
    /// The line breaks the turns of reconciliation: close the link.
    fn sync_message(&mut self, id: usize, m: &PeerMessage<'_>) -> Result<(), SyncError> {
        let link = &mut self.links[id];
        let sketch = self.clients.sketch();
        let (was_active, was_streaming) = (link.session.active(), link.session.streaming_all());
        let tables = link.session.tables_received();
        let outcome = link
            .session
            .receive(id, m, sketch, self.clients.entries())?;
        link.counts.sync_tables_in += link.session.tables_received() - tables;
        if !was_active && link.session.active() {
            link.counts.started(link.session.periodic());
        }
        if !was_streaming && link.session.streaming_all() {
            link.counts.full_streams += 1;
        }
        if let Outcome::Ended(report) = outcome {
            link.counts.finished(&report);
            self.ended(report);
        }
        Ok(())
    }

    /// A reconciliation ended: logged, and a finished catch-up ends the dial back-off.
    fn ended(&mut self, report: Report) {
        if !report.periodic {
            self.links[report.link].timing.backoff = BACKOFF_MIN;
        }
        self.events.push_back(LinkEvent::Reconciled(report));
    }

    /// The next thing to log: an ended reconciliation, a refused or unexpected line.
    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// Writes up to `max` lines for link `id` (a keep-alive or its answer first, then reconciliation,
    /// then queued records), each with `\n`. Returns how many records were written.
    pub fn poll_transmit(&mut self, id: usize, epoch: u64, out: &mut Vec<u8>, max: usize) -> usize {
        let link = &mut self.links[id];
        if !link.up || link.epoch != epoch {
            return 0;
        }
        for (due, m) in [
            (&mut link.pong_due, PeerMessage::Pong),
            (&mut link.ping_due, PeerMessage::Ping),
        ] {
            if std::mem::take(due) {
                m.write_to(out);
                out.push(b'\n');
            }
        }
        let start = out.len();
        let tables = link.session.tables_sent();
        let (lines, mut n, report) =
            link.session
                .transmit(id, self.clients.sketch(), self.clients.entries(), out, max);
        link.counts.sync_tables_out += link.session.tables_sent() - tables;
        link.counts.sync_records_out += n as u64;
        link.counts.sync_bytes_out += (out.len() - start) as u64;
        if let Some(r) = &report {
            link.counts.finished(r);
        }
        let mut n_lines = lines;
        while n_lines < max {
            let Some(index) = link.queue.pop_front() else {
                break;
            };
            link.queued[index as usize] = false;
            if let Some(entry) = self.clients.get(index as usize) {
                entry.write_line(out);
                out.push(b'\n');
                n += 1;
                n_lines += 1;
            }
        }
        link.counts.records_out += n as u64;
        if let Some(r) = report {
            self.ended(r);
        }
        n
    }
}

impl Link {
    /// When this link next needs the node's attention (see [`Node::poll_timeout`]); a dial due at
    /// once is due at `clock`, the latest time the node was told.
    fn deadline(&self, clock: Option<Instant>) -> Option<Instant> {
        let t = &self.timing;
        if !self.up {
            return t.next_dial.or(clock).filter(|_| t.dials && !t.dialing);
        }
        let mut next = t.last_sent.map(|at| at + KEEPALIVE);
        let mut earliest = |at: Option<Instant>| {
            if let Some(at) = at {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        };
        if !t.closing {
            earliest(t.last_heard.map(|at| at + DEAD_AFTER));
        }
        if t.dials && !self.session.active() {
            earliest(t.last_check.map(|at| at + CHECK_EVERY));
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Instant {
        Instant::now()
    }

    fn t(secs: u64) -> Timestamp {
        Timestamp::new(secs, 0).unwrap()
    }

    fn reply(node: &mut Node, line: &str, now: u64) -> (String, Step) {
        let mut out = Vec::new();
        let step = node.client_line(line.as_bytes(), t(now), &mut out);
        (String::from_utf8(out).unwrap(), step)
    }

    #[test]
    fn the_same_iamat_in_the_same_instant_is_answered_with_the_line_held() {
        let mut n = Node::new("A", vec![]);
        let (first, _) = reply(&mut n, "IAMAT kiwi +1+1 100", 101);
        assert_eq!(first, "AT A +1.000000000 kiwi +1+1 100\n");
        let (again, step) = reply(&mut n, "IAMAT kiwi +1+1 100", 101);
        assert_eq!(
            (again.as_str(), step),
            (first.as_str(), Step::Iamat { stored: false })
        );
        // Held as written by hand (the difference with a leading zero): an equal record, whose
        // line is the one held, not this reply's own form.
        let mut m = Node::new("A", vec![]);
        let hand = "AT A +01.000000000 kiwi +1+1 100";
        assert_eq!(m.restore(hand.as_bytes()), Restored::Stored);
        let (held, _) = reply(&mut m, "IAMAT kiwi +1+1 100", 101);
        assert_eq!(held, format!("{hand}\n"));
    }

    #[test]
    fn iamat_then_stale_then_whatsat() {
        let mut n = Node::new("Alford", vec!["Hamilton".into()]);
        let (out, step) = reply(&mut n, "IAMAT kiwi +34-118 100", 101);
        assert_eq!(out, "AT Alford +1.000000000 kiwi +34-118 100\n");
        assert_eq!(step, Step::Iamat { stored: true });
        let (out, step) = reply(&mut n, "IAMAT kiwi +1-1 99", 102);
        assert_eq!(
            out, "AT Alford +1.000000000 kiwi +34-118 100\n",
            "stale IAMAT gets the held record"
        );
        assert_eq!(step, Step::Iamat { stored: false });
        let (out, step) = reply(&mut n, "WHATSAT kiwi 10 5", 103);
        assert_eq!(out, "");
        let Step::Lookup(l) = step else { panic!() };
        assert_eq!(
            l.record.to_bytes(),
            b"AT Alford +1.000000000 kiwi +34-118 100"
        );
        assert_eq!((l.latitude(), l.longitude(), l.bound), (34.0, -118.0, 5));
        assert_eq!(
            reply(&mut n, "WHATSAT nobody 10 5", 104).0,
            "? WHATSAT nobody 10 5\n"
        );
        assert_eq!(
            reply(&mut n, "AT Alford +1.000000000 kiwi +34-118 100", 104).0,
            "? AT Alford +1.000000000 kiwi +34-118 100\n"
        );
    }

    fn limited(name: &str, neighbors: &[&str], max_clients: usize) -> Node {
        Node::new(name, neighbors.iter().map(|n| n.to_string()).collect()).with_limits(NodeLimits {
            max_future: Duration::from_secs(60),
            max_clients,
            ..NodeLimits::default()
        })
    }

    #[test]
    fn a_time_too_far_ahead_is_invalid_where_born_and_from_a_peer_past_the_skew_allowance() {
        let mut n = limited("Alford", &["Hamilton"], 10);
        // The clock poison of the issue: a time no honest update could ever beat.
        let poison = "IAMAT x +1+1 18446744073709551615.999999999";
        let (out, step) = reply(&mut n, poison, 1000);
        assert_eq!(out, format!("? {poison}\n"));
        assert_eq!(step, Step::Refused(Limit::FutureTime));
        assert_eq!(n.get(b"x"), None);
        // 60 s ahead is within the bound; 61 s is not.
        let (out, step) = reply(&mut n, "IAMAT x +1+1 1060", 1000);
        assert_eq!(out, "AT Alford -60.000000000 x +1+1 1060\n");
        assert_eq!(step, Step::Iamat { stored: true });
        assert_eq!(
            reply(&mut n, "IAMAT x +1+1 1061.000000001", 1000).1,
            Step::Refused(Limit::FutureTime)
        );
        assert_eq!(n.refusals().get(Limit::FutureTime), 2);
        // A peer's record is judged again, with the skew allowance on top: holding the secret lifts
        // no bound, so the pin of the issue (a time of u64::MAX) is refused from a peer too.
        n.link_up(0, now());
        let far = AtRecord::parse(b"AT Hamilton -99999.000000000 x +2+2 100999").unwrap();
        assert_eq!(
            n.accept_peer_record(0, far, t(1000)),
            Accepted::Refused(Limit::FutureTime)
        );
        let pin =
            AtRecord::parse(b"AT Hamilton +0.000000000 x +2+2 18446744073709551615.5").unwrap();
        assert_eq!(
            n.accept_peer_record(0, pin, t(1000)),
            Accepted::Refused(Limit::FutureTime)
        );
        let skewed = AtRecord::parse(b"AT Hamilton -100.000000000 x +2+2 1100").unwrap();
        assert_eq!(
            n.accept_peer_record(0, skewed, t(1000)),
            Accepted::Stored,
            "60 s of bound and 60 s of skew allowance"
        );
        assert_eq!(
            n.get(b"x").as_deref(),
            Some(&b"AT Hamilton -100.000000000 x +2+2 1100"[..])
        );
    }

    #[test]
    fn the_client_cap_refuses_new_clients_and_keeps_updating_known_ones() {
        let mut n = limited("Alford", &["Hamilton"], 2);
        assert_eq!(n.take_cap_reached(), None);
        reply(&mut n, "IAMAT a +1+1 1", 10);
        assert_eq!(n.take_cap_reached(), None);
        reply(&mut n, "IAMAT b +1+1 1", 10);
        assert_eq!(n.take_cap_reached(), Some(2), "reached: reported once");
        assert_eq!(n.take_cap_reached(), None);
        let (out, step) = reply(&mut n, "IAMAT c +1+1 1", 10);
        assert_eq!(out, "? IAMAT c +1+1 1\n");
        assert_eq!(step, Step::Refused(Limit::ClientCap));
        // Known clients still update, and a stale update still gets the held record.
        let (out, step) = reply(&mut n, "IAMAT a +2+2 2", 10);
        assert_eq!(out, "AT Alford +8.000000000 a +2+2 2\n");
        assert_eq!(step, Step::Iamat { stored: true });
        assert_eq!(
            reply(&mut n, "IAMAT b +2+2 0", 10).0,
            "AT Alford +9.000000000 b +1+1 1\n"
        );
        // WHATSAT is untouched.
        assert!(matches!(
            reply(&mut n, "WHATSAT a 1 1", 10).1,
            Step::Lookup(_)
        ));
        // Records from peers keep the cap too (a peer holding the secret cannot fill the cache), and
        // update known clients past it.
        n.link_up(0, now());
        let r = AtRecord::parse(b"AT Hamilton +1.000000000 c +1+1 1").unwrap();
        assert_eq!(
            n.accept_peer_record(0, r, t(10)),
            Accepted::Refused(Limit::ClientCap)
        );
        let known = AtRecord::parse(b"AT Hamilton +1.000000000 a +1+1 5").unwrap();
        assert_eq!(n.accept_peer_record(0, known, t(10)), Accepted::Stored);
        assert_eq!(n.len(), 2);
        assert_eq!(n.peer_refusals().get(Limit::ClientCap), 1);
        assert_eq!(
            reply(&mut n, "IAMAT c +1+1 5", 10).1,
            Step::Refused(Limit::ClientCap)
        );
        assert_eq!(n.refusals().get(Limit::ClientCap), 2);
        assert_eq!(n.take_cap_reached(), None);
    }

    #[test]
    fn a_cap_reached_by_peers_is_reported_too() {
        let mut n = limited("Hamilton", &["Alford"], 1);
        n.link_up(0, now());
        let r = AtRecord::parse(b"AT Alford +1.000000000 a +1+1 1").unwrap();
        assert_eq!(n.accept_peer_record(0, r, t(1000)), Accepted::Stored);
        assert_eq!(n.take_cap_reached(), Some(1));
    }

    #[test]
    fn a_peer_fills_no_more_than_the_byte_budget_and_long_ids_are_refused_and_warned_once() {
        let mut n = Node::new("Hamilton", vec!["Alford".into()])
            .with_members(&["Alford", "Hamilton"])
            .with_limits(NodeLimits {
                max_client_id: 16,
                max_cache_bytes: 1_000,
                ..NodeLimits::default()
            });
        let e = n.link_up(0, now());
        let mut flood = Vec::new();
        for i in 0..100 {
            flood.extend_from_slice(
                format!("AT Alford +1.000000000 client-{i} +1+1 {i}\n").as_bytes(),
            );
        }
        flood.extend_from_slice(
            format!("AT Alford +1.000000000 {} +1+1 1\n", "x".repeat(17)).as_bytes(),
        );
        let input = n.handle_link_input(0, e, &flood, now(), t(1000), |_| {});
        assert_eq!((input.consumed, input.close), (flood.len(), None));
        assert!(n.cache_bytes() <= 1_000, "{}", n.cache_bytes());
        let held = n.len();
        assert!(held > 0 && held < 100, "{held}");
        let refused = n.peer_refusals();
        assert_eq!(refused.get(Limit::CacheBytes), (100 - held) as u64);
        assert_eq!(refused.get(Limit::ClientId), 1);
        let events: Vec<LinkEvent> = std::iter::from_fn(|| n.poll_event()).collect();
        assert!(
            matches!(
                events[..],
                [LinkEvent::RecordRefused {
                    limit: Limit::CacheBytes,
                    ..
                }]
            ),
            "one warning for the link-up: {events:?}"
        );
        n.link_down(0, e, now());
        let events: Vec<LinkEvent> = std::iter::from_fn(|| n.poll_event()).collect();
        assert!(
            matches!(&events[..], [LinkEvent::RefusedTotal { counts, .. }] if counts.total() == refused.total()),
            "the counts when the link goes down: {events:?}"
        );
        // A client's IAMAT keeps the same bounds.
        assert_eq!(
            reply(&mut n, "IAMAT xxxxxxxxxxxxxxxxx +1+1 1", 10).1,
            Step::Refused(Limit::ClientId)
        );
        assert_eq!(
            reply(&mut n, "IAMAT new +1+1 1", 10).1,
            Step::Refused(Limit::CacheBytes)
        );
    }

    /// Carries lines between `a`'s link `ia` and `b`'s link `ib` until both are quiet; returns the
    /// lines each way.
    fn pump(a: &mut Node, ia: usize, b: &mut Node, ib: usize) -> (Vec<String>, Vec<String>) {
        let mut seen = (Vec::new(), Vec::new());
        for _ in 0..1000 {
            let quiet = step(a, ia, b, ib, &mut seen.0) & step(b, ib, a, ia, &mut seen.1);
            if quiet {
                return seen;
            }
        }
        panic!("no quiescence");
    }

    /// One write of up to 7 lines from `from` to `to`, through the entry point the driver uses;
    /// whether it was empty.
    fn step(from: &mut Node, fid: usize, to: &mut Node, tid: usize, log: &mut Vec<String>) -> bool {
        let mut out = Vec::new();
        let epoch = from.links[fid].epoch;
        from.poll_transmit(fid, epoch, &mut out, 7);
        let working = from.working(fid, epoch);
        for line in out.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
            log.push(String::from_utf8(line.to_vec()).unwrap());
        }
        let epoch = to.links[tid].epoch;
        let input = to.handle_link_input(tid, epoch, &out, now(), Timestamp::now(), |_| {});
        assert_eq!((input.consumed, input.close), (out.len(), None));
        out.is_empty() && !working
    }

    /// The next ended reconciliation among `n`'s events.
    fn report(n: &mut Node) -> Option<Report> {
        while let Some(e) = n.poll_event() {
            if let LinkEvent::Reconciled(r) = e {
                return Some(r);
            }
        }
        None
    }

    /// A watcher's queue the test reads.
    struct Watched(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl watch::Deliver for Watched {
        fn deliver(&mut self, line: &[u8]) -> bool {
            self.0
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(line).into_owned());
            true
        }
    }

    #[test]
    fn a_watch_fires_for_records_stored_from_a_client_a_flood_and_a_catch_up() {
        let (mut a, mut b) = (
            Node::new("Alford", vec!["Hamilton".into()]),
            Node::new("Hamilton", vec!["Alford".into()]),
        );
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        b.watches().register(7, Box::new(Watched(seen.clone())));
        let watch = |line: &str| {
            herd_proto::WatchLine::parse(line.as_bytes())
                .unwrap()
                .watch()
                .clone()
                .into_owned()
        };
        b.watches().watch(7, watch("WATCH CLIENT kiwi")).unwrap();
        b.watches()
            .watch(7, watch("WATCH NEAR -10 -10 10"))
            .unwrap();
        // Before the link is up: the catch-up brings it. Then a flood. Then a client here.
        let (early, _) = reply(&mut a, "IAMAT kiwi +34-118 100", 100);
        a.link_up(0, now());
        b.link_up(0, now());
        pump(&mut a, 0, &mut b, 0);
        let (flooded, _) = reply(&mut a, "IAMAT kiwi +34-118 101", 101);
        reply(&mut a, "IAMAT plum +1+1 101", 101);
        pump(&mut a, 0, &mut b, 0);
        let (here, _) = reply(&mut b, "IAMAT pear -10.01-10.01 102", 102);
        // An older record is not stored, so it fires nothing.
        reply(&mut b, "IAMAT kiwi +34-118 50", 103);
        let got = seen.lock().unwrap().clone();
        assert_eq!(got, [early.trim_end(), flooded.trim_end(), here.trim_end()]);
        b.watches().unregister(7);
        reply(&mut b, "IAMAT kiwi +34-118 200", 200);
        assert_eq!(seen.lock().unwrap().len(), 3);
    }

    #[test]
    fn floods_to_all_links_but_the_source_and_catches_up() {
        let mut n = Node::new("Hamilton", vec!["Alford".into(), "Holiday".into()]);
        let e0 = n.link_up(0, now());
        let e1 = n.link_up(1, now());
        let mut out = Vec::new();
        // Hamilton dials Holiday, so it opens that link's reconciliation; Alford opens the other.
        assert_eq!(n.poll_transmit(0, e0, &mut out, 10), 0);
        assert_eq!(out, b"");
        assert_eq!(n.poll_transmit(1, e1, &mut out, 10), 0);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.starts_with("HERD-ROOT 0 0 ") && text.ends_with("\nHERD-OVER\n"),
            "{text}"
        );
        let r = AtRecord::parse(b"AT Alford +1.000000000 kiwi +34-118 100").unwrap();
        assert_eq!(
            n.accept_peer_record(0, r.clone(), t(1000)),
            Accepted::Stored
        );
        assert_eq!(
            n.accept_peer_record(1, r, t(1000)),
            Accepted::Held,
            "not new: dropped"
        );
        assert!(!n.wants_transmit(0));
        assert!(n.wants_transmit(1));
        out.clear();
        assert_eq!(n.poll_transmit(1, e1, &mut out, 10), 1);
        assert_eq!(out, b"AT Alford +1.000000000 kiwi +34-118 100\n");
        // A stale epoch changes nothing.
        n.link_down(1, e1 - 1, now());
        assert!(n.is_up(1));
        // Out of turn: a reconciliation line with no reconciliation running breaks the link.
        let input = n.handle_link_input(0, e0, b"HERD-OVER\n", now(), Timestamp::now(), |_| {});
        assert_eq!(input.close, Some(Closing::Reconciliation));
        assert!(matches!(
            n.poll_event(),
            Some(LinkEvent::Broken {
                cause: SyncError::OutOfTurn,
                ..
            })
        ));
    }

    #[test]
    fn reconciliations_and_floods_are_counted_per_link() {
        let mut a = Node::new("A", vec!["B".into()]);
        let mut b = Node::new("B", vec!["A".into()]);
        for i in 0..100u64 {
            reply(&mut a, &format!("IAMAT c{i} +1+1 {i}"), 5000);
        }
        let bytes = |v: &[String]| v.iter().map(|l| l.len() as u64 + 1).sum::<u64>();
        // B holds nothing: a link-up catch-up that streams the whole cache.
        a.link_up(0, now());
        b.link_up(0, now());
        assert!(a.link_status(0).reconciling, "the dialling side opened it");
        assert!(!b.link_status(0).reconciling, "no HERD-ROOT yet");
        let (ab, ba) = pump(&mut a, 0, &mut b, 0);
        let (sa, sb) = (a.link_status(0), b.link_status(0));
        assert!(!sa.reconciling && !sb.reconciling);
        let (ca, cb) = (sa.counts, sb.counts);
        assert_eq!(
            (ca.catchups_started, ca.catchups_finished, ca.full_streams),
            (1, 1, 1)
        );
        assert_eq!(
            (cb.catchups_started, cb.catchups_finished, cb.full_streams),
            (1, 1, 0)
        );
        assert_eq!((ca.sync_records_out, ca.records_out), (100, 100));
        assert_eq!((cb.sync_records_in, cb.records_in), (100, 100));
        assert_eq!((cb.sync_records_out, ca.sync_records_in), (0, 0));
        assert_eq!(
            (ca.sync_bytes_out, cb.sync_bytes_in),
            (bytes(&ab), bytes(&ab))
        );
        assert_eq!(
            (cb.sync_bytes_out, ca.sync_bytes_in),
            (bytes(&ba), bytes(&ba))
        );
        // A flood is counted on the link, not as a reconciliation's.
        reply(&mut a, "IAMAT late +1+1 1", 6000);
        pump(&mut a, 0, &mut b, 0);
        let (ca, cb) = (a.link_status(0).counts, b.link_status(0).counts);
        assert_eq!((ca.records_out, ca.sync_records_out), (101, 100));
        assert_eq!((cb.records_in, cb.sync_records_in), (101, 100));
        // A periodic check (equal roots) is counted apart from the catch-ups.
        assert!(a.check_link(0));
        assert!(!b.check_link(0), "only the dialling side opens one");
        pump(&mut a, 0, &mut b, 0);
        for c in [a.link_status(0).counts, b.link_status(0).counts] {
            assert_eq!((c.checks_started, c.checks_finished), (1, 1));
            assert_eq!((c.catchups_started, c.catchups_finished), (1, 1));
        }
        // A catch-up cut by the link going down is started, never finished; counts survive link-ups.
        a.link_down(0, a.links[0].epoch, now());
        a.link_up(0, now());
        let c = a.link_status(0).counts;
        assert_eq!(
            (c.catchups_started, c.catchups_finished, c.records_out),
            (2, 1, 101)
        );
    }

    #[test]
    fn link_up_sends_only_what_differs() {
        let mut a = Node::new("A", vec!["B".into()]);
        let mut b = Node::new("B", vec!["A".into()]);
        for i in 0..2000u64 {
            reply(&mut a, &format!("IAMAT c{i} +1+1 {i}"), 5000);
        }
        // B starts empty: the whole cache as a plain stream.
        a.link_up(0, now());
        b.link_up(0, now());
        let (ab, ba) = pump(&mut a, 0, &mut b, 0);
        assert!(ab[0].starts_with("HERD-ROOT 2000 ") && ab[1].starts_with("HERD-FP - "));
        assert_eq!(ab[2], "HERD-OVER");
        assert_eq!(ba, ["HERD-IDS -", "HERD-OVER"]);
        assert_eq!(ab.len(), 3 + 2000 + 1);
        assert_eq!(ab.last().unwrap(), "HERD-SYNCED 2000");
        assert_eq!(b.len(), 2000);
        assert_eq!(
            report(&mut a).map(|r| (r.sent, r.received)),
            Some((2000, 0))
        );
        // Equal: one line each way.
        a.link_down(0, a.links[0].epoch, now());
        b.link_down(0, b.links[0].epoch, now());
        a.link_up(0, now());
        b.link_up(0, now());
        let (ab, ba) = pump(&mut a, 0, &mut b, 0);
        assert_eq!((ab.len(), ba), (3, vec!["HERD-SYNCED 0".to_string()]));
        // Cut: each side learns a few clients the other lacks, and one client differs.
        a.link_down(0, a.links[0].epoch, now());
        b.link_down(0, b.links[0].epoch, now());
        reply(&mut a, "IAMAT c7 +2+2 9999", 6000);
        reply(&mut a, "IAMAT new-a +2+2 9999", 6000);
        reply(&mut b, "IAMAT c8 +3+3 9999", 6000);
        reply(&mut b, "IAMAT new-b +3+3 9999", 6000);
        a.link_up(0, now());
        b.link_up(0, now());
        let (ab, ba) = pump(&mut a, 0, &mut b, 0);
        let records = |v: &[String]| v.iter().filter(|l| l.starts_with("AT ")).count();
        // Both versions of a client that differs cross (neither side can tell which is greater from
        // a hash), unless the newer one arrived first and replaced it: 4 or 5 records for 4 changes.
        let crossed = records(&ab) + records(&ba);
        assert!((4..=5).contains(&crossed), "{ab:?} {ba:?}");
        assert!(ab.len() + ba.len() < 30, "{ab:?} {ba:?}");
        let all = |n: &Node| {
            let mut v: Vec<Vec<u8>> = n.lines().collect();
            v.sort();
            v
        };
        assert_eq!(all(&a), all(&b));
        assert_eq!(a.len(), 2002);
        assert!(a.get(b"c8").unwrap().ends_with(b"+3+3 9999"));
        // A periodic check of a live link that agrees: one line each way; one that does not repairs.
        assert!(a.check_link(0));
        assert!(!a.check_link(0), "one at a time");
        let (ab, ba) = pump(&mut a, 0, &mut b, 0);
        assert_eq!((ab.len(), ba.len()), (3, 1));
        let lost = AtRecord::parse(b"AT B +1.000000000 lost +1+1 1").unwrap();
        b.accept_peer_record(0, lost, t(1000));
        assert!(!b.check_link(0), "only the dialling side checks");
        while a.poll_event().is_some() {}
        assert!(a.check_link(0));
        pump(&mut a, 0, &mut b, 0);
        assert!(a.get(b"lost").is_some());
        let report = report(&mut a).unwrap();
        assert!(report.periodic && report.received == 1, "{report:?}");
    }

    #[test]
    fn journals_what_it_stores_from_clients_and_peers_and_restores_without_journaling() {
        let mut n = Node::new("A", vec!["B".into()])
            .with_members(&["A", "B"])
            .with_journal();
        assert!(n.journal().is_none());
        reply(&mut n, "IAMAT kiwi +1+1 100", 101);
        reply(&mut n, "IAMAT kiwi +1+1 99", 101); // stale: not stored, not journaled
        let peer = AtRecord::parse(b"AT B +0.500000000 pear +2+2 50").unwrap();
        assert_eq!(
            n.accept_peer_record(0, peer.clone(), t(1000)),
            Accepted::Stored
        );
        assert_eq!(n.accept_peer_record(0, peer, t(1000)), Accepted::Held);
        let j = n.journal().unwrap();
        assert_eq!(j.records, 2);
        let mut lines = Vec::new();
        let mut file = format::header(format::Kind::Journal).to_vec();
        file.extend_from_slice(&std::mem::take(&mut j.bytes));
        j.records = 0;
        let end = format::scan(&file, format::Kind::Journal, |p| {
            lines.push(String::from_utf8(p.to_vec()).unwrap());
            true
        });
        assert_eq!(end, format::End::Clean);
        assert_eq!(
            lines,
            [
                "AT A +1.000000000 kiwi +1+1 100",
                "AT B +0.500000000 pear +2+2 50"
            ]
        );
        assert!(n.journal().is_none(), "emptied");

        // Restored elsewhere, at start (links down): held, not journaled, queued for no link (the
        // link-up's catch-up covers them); foreign and invalid lines skipped.
        let mut m = Node::new("A", vec!["B".into()])
            .with_members(&["A", "B"])
            .with_journal();
        for l in &lines {
            assert_eq!(m.restore(l.as_bytes()), Restored::Stored);
        }
        assert_eq!(m.restore(lines[0].as_bytes()), Restored::Held);
        assert_eq!(m.restore(b"AT Z +0.500000000 x +2+2 50"), Restored::Foreign);
        assert_eq!(m.restore(b"IAMAT x +2+2 50"), Restored::Invalid);
        assert!(m.journal().is_none());
        assert_eq!(m.get(b"kiwi").as_deref(), Some(lines[0].as_bytes()));
        assert!(m.links.iter().all(|l| l.queue.is_empty()));
        let mut snap = Vec::new();
        assert_eq!(m.snapshot_chunk(0, 1, &mut snap), Some(1));
        assert_eq!(m.snapshot_chunk(1, 1, &mut snap), None);
        let mut again = format::header(format::Kind::Snapshot).to_vec();
        again.extend_from_slice(&snap);
        let mut n = 0;
        assert_eq!(
            format::scan(&again, format::Kind::Snapshot, |_| {
                n += 1;
                true
            }),
            format::End::Clean
        );
        assert_eq!(n, 2);
    }

    #[test]
    fn a_slow_link_holds_one_entry_per_client() {
        let mut n = Node::new("A", vec!["B".into()]);
        let e = n.link_up(0, now());
        n.poll_transmit(0, e, &mut Vec::new(), 10);
        for i in 0..1000u64 {
            reply(&mut n, &format!("IAMAT c{} +1+1 {i}", i % 10), 2000);
        }
        let mut out = Vec::new();
        assert_eq!(n.poll_transmit(0, e, &mut out, 10_000), 10);
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("AT A +1001.000000000 c9 +1+1 999\n"));
    }

    #[test]
    fn timers_dial_ping_close_and_back_off_and_say_when_they_are_due() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Alford sorts before Hamilton and dials it; it does not dial Aaron, who dials it.
        let mut n = Node::new("Alford", vec!["Hamilton".into(), "Aaron".into()]);
        assert_eq!(n.handle_timeout(at(0)), [LinkAction::Dial(0)]);
        assert_eq!(n.poll_timeout(), None, "nothing due while the dial runs");
        assert_eq!(n.handle_timeout(at(10)), [], "one dial at a time");
        // Failures back off: 100 ms, 200 ms, … capped at 3 s, each ±50 %; the node says when.
        let mut waits = Vec::new();
        let mut now = 0;
        for _ in 0..8 {
            n.dial_failed(0, at(now));
            let due = n.poll_timeout().unwrap();
            let wait = due.duration_since(at(now)).as_millis() as u64;
            assert_eq!(n.handle_timeout(due - Duration::from_millis(1)), []);
            assert_eq!(n.handle_timeout(due), [LinkAction::Dial(0)]);
            waits.push(wait);
            now += wait;
        }
        assert!(waits[0] >= 50 && waits[0] <= 150, "{waits:?}");
        assert!(waits[3] >= 400, "grows: {waits:?}");
        assert!(waits.iter().all(|&w| w <= 4_500), "capped: {waits:?}");
        // Up: quiet links get a keep-alive each second; a link heard from stays up.
        let e = n.link_up(0, at(now));
        assert_eq!(n.poll_timeout(), Some(at(now + 1_000)));
        assert_eq!(n.handle_timeout(at(now + 500)), []);
        assert_eq!(n.handle_timeout(at(now + 1_000)), [LinkAction::Transmit(0)]);
        let mut out = Vec::new();
        n.poll_transmit(0, e, &mut out, 10);
        assert!(out.starts_with(b"HERD-PING\n"), "{out:?}");
        let input = n.handle_link_input(
            0,
            e,
            b"HERD-PING\nHERD-PO",
            at(now + 3_000),
            Timestamp::now(),
            |_| {},
        );
        assert_eq!((input.consumed, input.transmit), (10, true));
        out.clear();
        n.poll_transmit(0, e, &mut out, 10);
        assert_eq!(out, b"HERD-PONG\n", "a ping is answered");
        n.sent(0, at(now + 3_000));
        assert_eq!(n.handle_timeout(at(now + 3_500)), []);
        // Silent for 4 s: close it, once; the dead-link verdict is among the deadlines.
        assert_eq!(n.poll_timeout(), Some(at(now + 4_000)));
        assert_eq!(n.handle_timeout(at(now + 7_000)), [LinkAction::Close(0)]);
        assert!(!n
            .handle_timeout(at(now + 7_100))
            .contains(&LinkAction::Close(0)));
        // Down: dialled again soon.
        n.link_down(0, e, at(now + 7_200));
        let due = n.poll_timeout().unwrap();
        assert!(
            due <= at(now + 7_350),
            "re-dial after {:?}",
            due - at(now + 7_200)
        );
        assert_eq!(n.handle_timeout(due), [LinkAction::Dial(0)]);
        // The periodic check of a live link is a deadline too.
        let e = n.link_up(0, at(now + 8_000));
        let later = now + 8_000 + CHECK_EVERY.as_millis() as u64;
        for t in (now + 8_500..later).step_by(500) {
            n.handle_link_input(0, e, b"HERD-PONG\n", at(t), Timestamp::now(), |_| {});
            n.sent(0, at(t));
        }
        while n.poll_event().is_some() {}
        let mut out = Vec::new();
        n.poll_transmit(0, e, &mut out, 100); // the link-up catch-up's opening
        n.handle_link_input(
            0,
            e,
            b"HERD-SYNCED 0\n",
            at(later - 1),
            Timestamp::now(),
            |_| {},
        );
        assert!(!n.reconciling(0));
        n.sent(0, at(later - 1));
        assert_eq!(n.poll_timeout(), Some(at(later)));
        assert_eq!(n.handle_timeout(at(later)), [LinkAction::Transmit(0)]);
        assert!(n.reconciling(0), "a periodic check was opened");
    }

    /// The take-over of the issue: a greeting that proves the secret does not replace a link that
    /// answers keep-alives; once the link has left one unanswered it may.
    #[test]
    fn a_live_link_is_not_replaced_by_a_greeting_claiming_its_name() {
        let mut n = Node::new("B", vec!["A".into()]);
        let start = now();
        let e = n.link_up(0, start);
        for t in (0..10_000).step_by(500) {
            let at = start + Duration::from_millis(t);
            n.handle_link_input(0, e, b"HERD-PONG\n", at, Timestamp::now(), |_| {});
            assert_eq!(n.try_link_up(0, at, true), Err(Refusal::LinkUp));
            assert_eq!(n.admit_hello(b"A", b"B", false, at), Err(Refusal::LinkUp));
        }
        assert_eq!(n.epoch(0), Some(e), "never replaced");
        let silent = start + Duration::from_millis(9_500) + PROVEN_DEAD;
        assert_eq!(n.try_link_up(0, silent, true), Ok(e + 1));
    }

    /// The freeze of the issue, from an insider on a link: `HERD-IDS` of the whole range again and
    /// again. The first is answered (the records once); the second breaks the exchange and closes the
    /// link, which is dialled again after a back-off. Output stays within the cache.
    #[test]
    fn a_range_is_answered_once_per_exchange_and_no_record_is_sent_twice() {
        for attack in ["HERD-IDS - AAAAAA", "HERD-IDS -"] {
            let mut n = Node::new("B", vec!["A".into()]);
            for i in 0..300 {
                reply(&mut n, &format!("IAMAT c{i} +1+1 {i}"), 1000);
            }
            let e = n.link_up(0, now());
            let mut lines = b"HERD-ROOT 9 0000000000000009 0000000000000001\n".to_vec();
            for _ in 0..1000 {
                lines.extend_from_slice(attack.as_bytes());
                lines.push(b'\n');
            }
            let input = n.handle_link_input(0, e, &lines, now(), Timestamp::now(), |_| {});
            assert_eq!(input.close, Some(Closing::Reconciliation), "{attack}");
            let broken = std::iter::from_fn(|| n.poll_event()).any(|ev| {
                matches!(
                    ev,
                    LinkEvent::Broken {
                        cause: SyncError::Repeated,
                        ..
                    }
                )
            });
            assert!(broken, "{attack}");
            // What was queued before the close is at most the cache, each record once.
            let mut out = Vec::new();
            while n.poll_transmit(0, e, &mut out, 1024) > 0 {}
            let records = out.split(|&b| b == b'\n').filter(|l| l.starts_with(b"AT "));
            let mut seen = std::collections::HashSet::new();
            for r in records {
                assert!(seen.insert(r.to_vec()), "{attack}: sent twice");
            }
            assert!(seen.len() <= 300, "{attack}");
            n.link_down(0, e, now());
            assert_eq!(n.link_status(0).counts.sync_broken, 1);
        }
    }

    /// A listing where this side holds many records is split, not scanned (a line's work is
    /// bounded); asking (`HERD-WANT`) for such a range breaks the exchange.
    #[test]
    fn a_line_never_scans_a_large_range() {
        let mut n = Node::new("B", vec!["A".into()]);
        for i in 0..5_000 {
            reply(&mut n, &format!("IAMAT c{i} +1+1 {i}"), 10_000);
        }
        let e = n.link_up(0, now());
        let input = n.handle_link_input(
            0,
            e,
            b"HERD-ROOT 9 0000000000000009 0000000000000001\nHERD-IDS - AAAAAA\n",
            now(),
            Timestamp::now(),
            |_| {},
        );
        assert_eq!(input.close, None);
        let mut out = Vec::new();
        n.poll_transmit(0, e, &mut out, 1024);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HERD-FP - "), "{text}");
        assert!(!text.contains("AT "), "{text}");
        let input = n.handle_link_input(
            0,
            e,
            b"HERD-WANT - AAAAAA\n",
            now(),
            Timestamp::now(),
            |_| {},
        );
        assert_eq!(input.close, Some(Closing::Overloaded));
    }

    /// Every kind of peer message reaches the node through `handle_link_input` and is handled
    /// there: arbitrary messages of every kind are fed, whole, to a link with a reconciliation
    /// running, and none but a greeting line (which has no place on a running link) is reported
    /// as a line the node does not handle. A new kind of message added to herd-proto without a
    /// place in the node fails here.
    #[test]
    fn every_peer_message_kind_is_handled_by_the_single_entry_point() {
        use arbitrary::{Arbitrary, Unstructured};
        let mut kinds = std::collections::HashSet::new();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut bytes = vec![0u8; 8192];
        for _ in 0..4_000 {
            rng.fill(&mut bytes);
            let Ok(m) = PeerMessage::arbitrary(&mut Unstructured::new(&bytes)) else {
                continue;
            };
            kinds.insert(std::mem::discriminant(&m));
            let greeting = matches!(m, PeerMessage::Hello { .. } | PeerMessage::Welcome { .. });
            // A dials B: its link-up opens a reconciliation, so every message arrives mid-exchange.
            let mut n = Node::new("A", vec!["B".into()]);
            let e = n.link_up(0, now());
            let mut line = m.to_bytes();
            line.push(b'\n');
            let input = n.handle_link_input(0, e, &line, now(), Timestamp::now(), |_| {});
            assert_eq!(input.consumed, line.len());
            let unhandled = std::iter::from_fn(|| n.poll_event()).any(|ev| {
                matches!(
                    ev,
                    LinkEvent::Unexpected { .. }
                        | LinkEvent::Broken {
                            cause: SyncError::Unexpected,
                            ..
                        }
                )
            });
            assert_eq!(unhandled, greeting, "{m:?}");
        }
        assert_eq!(kinds.len(), 13, "arbitrary made only {} kinds", kinds.len());
    }

    /// A line with no place in a running reconciliation is never ignored: the exchange ends with a
    /// warning and the link closes; it is counted; the next dial backs off, and the catch-up runs
    /// again on the next link-up. Outside a reconciliation the same line is warned about and ignored.
    #[test]
    fn an_unexpected_line_during_a_reconciliation_ends_it_and_it_runs_again() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut n = Node::new("A", vec!["B".into()]);
        let e = n.link_up(0, at(0));
        assert!(n.reconciling(0), "the dialling side opened the catch-up");
        let input = n.handle_link_input(
            0,
            e,
            b"HERD-FROM-THE-FUTURE 1 2\n",
            at(1),
            Timestamp::now(),
            |_| {},
        );
        assert_eq!(input.close, Some(Closing::Reconciliation));
        assert!(matches!(
            n.poll_event(),
            Some(LinkEvent::Broken {
                cause: SyncError::Unexpected,
                ..
            })
        ));
        let c = n.link_status(0).counts;
        assert_eq!((c.sync_broken, c.lines_unexpected), (1, 1));
        // The driver closes the link; the re-dial backs off as after a failed dial, not at once.
        n.link_down(0, e, at(2));
        let first = n.poll_timeout().unwrap();
        assert_eq!(n.handle_timeout(first), [LinkAction::Dial(0)]);
        let e = n.link_up(0, first);
        assert!(n.reconciling(0), "the catch-up runs again");
        n.handle_link_input(
            0,
            e,
            b"HERD-HELLO 4 B A -\n",
            first,
            Timestamp::now(),
            |_| {},
        );
        n.link_down(0, e, first);
        let second = n.poll_timeout().unwrap();
        assert!(
            second - first >= BACKOFF_MIN,
            "backs off: {:?}",
            second - first
        );
        // Outside a reconciliation: warned and ignored, the link stays.
        assert_eq!(n.handle_timeout(second), [LinkAction::Dial(0)]);
        let e = n.link_up(0, second);
        let mut out = Vec::new();
        n.poll_transmit(0, e, &mut out, 100);
        n.handle_link_input(0, e, b"HERD-SYNCED 0\n", second, Timestamp::now(), |_| {});
        assert!(!n.reconciling(0));
        while n.poll_event().is_some() {}
        let input = n.handle_link_input(
            0,
            e,
            b"HERD-FROM-THE-FUTURE\n",
            second,
            Timestamp::now(),
            |_| {},
        );
        assert_eq!(input.close, None);
        assert!(matches!(
            n.poll_event(),
            Some(LinkEvent::Unexpected { cause: Some(_), .. })
        ));
        assert_eq!(n.link_status(0).counts.lines_unexpected, 3);
    }

    fn quarantines(n: &mut Node) -> Vec<(Closing, Duration)> {
        std::iter::from_fn(|| n.poll_event())
            .filter_map(|e| match e {
                LinkEvent::Quarantined { cause, period, .. } => Some((cause, period)),
                _ => None,
            })
            .collect()
    }

    /// The pin and the fill of issue 25 as a steady load: a link that keeps sending records past a
    /// bound is closed after a few, and its name is quarantined — greetings claiming it refused
    /// before any proof, for a period that doubles each time. A few refusals never close a link.
    #[test]
    fn a_peer_that_keeps_sending_what_is_refused_is_cut_and_its_name_quarantined() {
        use crate::node::conduct::{HARD_STRIKES, QUARANTINE_MIN, SOFT_STRIKES};
        let mut b = limited("B", &["A", "C"], 10);
        let mut at = now();
        for round in 0..3u32 {
            let e = b.try_link_up(0, at, true).expect("the quarantine is over");
            let mut lines = format!("AT A +0.000000000 honest{round} +1+1 5\n").into_bytes();
            for i in 0..HARD_STRIKES - 1 {
                lines.extend_from_slice(
                    format!("AT C +0.000000000 pin{i} +1+1 18446744073709551615\n").as_bytes(),
                );
            }
            let input = b.handle_link_input(0, e, &lines, at, Timestamp::now(), |_| {});
            assert_eq!(input.close, None, "a few refusals are only counted");
            assert!(b.get(format!("honest{round}").as_bytes()).is_some());
            let pin = b"AT C +0.000000000 pin +1+1 18446744073709551615\nAT A +0.000000000 after +1+1 5\n";
            let input = b.handle_link_input(0, e, pin, at, Timestamp::now(), |_| {});
            assert_eq!(input.close, Some(Closing::Misbehaving));
            assert_eq!(b.get(b"after"), None, "nothing is read past the close");
            let period = QUARANTINE_MIN * 2u32.pow(round);
            assert_eq!(quarantines(&mut b), [(Closing::Misbehaving, period)]);
            b.link_down(0, e, at);
            for authenticated in [true, false] {
                assert_eq!(
                    b.admit_hello(b"A", b"B", authenticated, at + period / 2),
                    Err(Refusal::Quarantined)
                );
            }
            assert_eq!(b.try_link_up(0, at, true), Err(Refusal::Quarantined));
            assert!(b.link_status(0).quarantined_until.is_some());
            at += period;
            assert_eq!(b.admit_hello(b"A", b"B", true, at), Ok(0));
        }
        assert_eq!(b.link_status(0).counts.quarantines, 3);
        // Soft refusals (past the cap) have a far higher bound: an honest neighbour with a fuller
        // cache sends some.
        let e = b.try_link_up(0, at, true).unwrap();
        let mut fill = Vec::new();
        let room = 10 - b.len() as u32;
        for i in 0..room + SOFT_STRIKES - 1 {
            fill.extend_from_slice(format!("AT A +0.000000000 f{i} +1+1 5\n").as_bytes());
        }
        let input = b.handle_link_input(0, e, &fill, at, Timestamp::now(), |_| {});
        assert_eq!(input.close, None);
        assert_eq!(b.len(), 10, "the cap holds");
        let input = b.handle_link_input(
            0,
            e,
            b"AT A +0.000000000 g +1+1 5\n",
            at,
            Timestamp::now(),
            |_| {},
        );
        assert_eq!(input.close, Some(Closing::Misbehaving));
        // The dialling side does not dial a quarantined name either.
        let mut a = Node::new("A", vec!["B".into()]);
        let start = now();
        let e = a.link_up(0, start);
        let input = a.handle_link_input(0, e, &[b'x'; 20_000], start, Timestamp::now(), |_| {});
        assert_eq!(input.close, Some(Closing::LineTooLong));
        let [(_, period)] = quarantines(&mut a)[..] else {
            panic!("one quarantine")
        };
        a.link_down(0, e, start);
        let early = a.handle_timeout(start + period - Duration::from_millis(1));
        assert!(!early.contains(&LinkAction::Dial(0)), "{early:?}");
        assert!(a
            .handle_timeout(start + period)
            .contains(&LinkAction::Dial(0)));
    }

    /// The freeze of issue 25 spread over exchanges: a peer may open only a few exchanges on a
    /// link-up in a window (the periodic check runs every thirty seconds); one more closes the link
    /// and quarantines its name.
    #[test]
    fn a_peer_opening_exchanges_back_to_back_is_cut_and_quarantined() {
        use crate::node::conduct::{EXCHANGES, QUARANTINE_MIN};
        let mut a = Node::new("A", vec!["B".into()]);
        let mut b = Node::new("B", vec!["A".into()]);
        reply(&mut a, "IAMAT c +1+1 5", 10);
        let ea = a.link_up(0, now());
        let eb = b.link_up(0, now());
        pump(&mut a, 0, &mut b, 0); // the catch-up: the first exchange
        for _ in 1..EXCHANGES {
            assert!(a.check_link(0));
            pump(&mut a, 0, &mut b, 0);
        }
        assert!(a.check_link(0));
        let mut out = Vec::new();
        a.poll_transmit(0, ea, &mut out, 64);
        let at = now();
        let input = b.handle_link_input(0, eb, &out, at, Timestamp::now(), |_| {});
        assert_eq!(input.close, Some(Closing::Overloaded));
        let events: Vec<_> = std::iter::from_fn(|| b.poll_event()).collect();
        assert!(events.iter().any(|e| matches!(
            e,
            LinkEvent::Broken {
                cause: SyncError::TooSoon,
                ..
            }
        )));
        assert!(events.contains(&LinkEvent::Quarantined {
            link: 0,
            cause: Closing::Overloaded,
            strikes: b.links[0].strikes,
            period: QUARANTINE_MIN
        }));
        let counts = b.link_status(0).counts;
        assert_eq!((counts.exchanges_refused, counts.quarantines), (1, 1));
        assert_eq!(
            b.admit_hello(b"A", b"B", true, at),
            Err(Refusal::Quarantined)
        );
    }
}
