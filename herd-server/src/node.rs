//! The node: every herd rule in one deterministic state machine, with no sockets and no clock.
//!
//! The tokio layer (`server`, `peers`) feeds it events — a client line with its receive time, a record
//! from a peer, a link going up or down — and carries out what it returns: the reply bytes, a Places
//! look-up, records to send on a link. Because it owns no I/O, the simulation tests run a hundred nodes
//! in one thread with links cut, delayed and healed at will.
//!
//! Flooding: a record is stored only if it is greater (herd-proto's order) than the one held; only then
//! is it queued for every link that is up, except the one it came from. Each link's queue holds at most
//! one entry per client — the client's index — and the record is read from the cache when it is sent,
//! so a slow link sends only the newest record of each client and its memory is bounded by the number of
//! clients. When a link comes up, the node streams its whole cache on it (the catch-up) with a cursor,
//! ending with `HERD-SYNCED`; that repairs whatever a dead link or a restart lost.

use std::cmp::Ordering;
use std::collections::VecDeque;

use herd_proto::{AtRecord, Message, PeerMessage, Radius, Timestamp};

use crate::cache::{Cache, Entry};

/// A WHATSAT that needs the Places back-end: the driver looks it up, then writes
/// [`herd_proto::write_whatsat`] with `at_line` and the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup {
    /// The client's AT line as first produced (without `\n`).
    pub at_line: Vec<u8>,
    /// Centre of the search, degrees.
    pub latitude: f64,
    /// Centre of the search, degrees.
    pub longitude: f64,
    /// The exact location text (a cache key that needs no float formatting).
    pub location: String,
    /// Search radius as the client wrote it, in kilometres.
    pub radius: Radius<'static>,
    /// Most results.
    pub bound: u8,
}

/// What became of a client line.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The reply is written; `stored` says a new record was stored and queued for the links.
    Answered {
        /// A new record was stored (links have something to send).
        stored: bool,
    },
    /// A WHATSAT whose reply needs a Places look-up.
    Lookup(Lookup),
}

/// Stores `record` if it is greater than the one held, queueing it for every link but `from`.
/// Returns whether it was stored, and the index of the client's entry. A free function over the
/// node's parts, so the caller can keep borrowing the node's name inside `record`.
fn offer(
    clients: &mut Cache,
    links: &mut [Link],
    record: AtRecord<'_>,
    line: Option<&[u8]>,
    from: Option<usize>,
) -> (bool, usize) {
    let index = match clients.index_of(&record.client) {
        Some(i) => {
            if clients
                .get(i)
                .is_some_and(|e| e.cmp_record(&record) != Ordering::Less)
            {
                return (false, i);
            }
            clients.replace(i, &record, line);
            i
        }
        None => clients.push(Entry::new(&record, line)),
    };
    for (id, link) in links.iter_mut().enumerate() {
        if Some(id) != from {
            link.enqueue(index);
        }
    }
    (true, index)
}

/// A neighbour link as the node sees it.
#[derive(Debug, Default)]
struct Link {
    up: bool,
    /// Bumped at each link-up, so a stale connection cannot take a newer link down.
    epoch: u64,
    /// Client indexes waiting to be sent, each at most once.
    queue: VecDeque<u32>,
    queued: Vec<bool>,
    /// Catch-up position in the cache, while the catch-up runs.
    sync: Option<usize>,
}

impl Link {
    fn enqueue(&mut self, index: usize) {
        if !self.up || self.sync.is_some_and(|cursor| index >= cursor) {
            return; // a link that is down catches up on link-up; the cursor has not reached it yet
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
        self.sync = None;
    }
}

/// One server's herd state: its name, its neighbours, its cache and its links.
#[derive(Debug)]
pub struct Node {
    name: Box<[u8]>,
    neighbors: Vec<String>,
    clients: Cache,
    links: Vec<Link>,
}

impl Node {
    /// A node with an empty cache; `neighbors` fixes the link numbering (index = link id).
    pub fn new(name: &str, neighbors: Vec<String>) -> Self {
        let links = neighbors.iter().map(|_| Link::default()).collect();
        Node {
            name: name.as_bytes().into(),
            neighbors,
            clients: Cache::default(),
            links,
        }
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

    /// The AT line held for `client`.
    pub fn get(&self, client: &[u8]) -> Option<&[u8]> {
        self.clients
            .index_of(client)
            .and_then(|i| self.clients.get(i))
            .map(Entry::line)
    }

    /// Every held AT line, in cache order.
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        self.clients.iter().map(Entry::line)
    }

    /// A line from a client, received at `now`: writes the reply to `out` (with its `\n`) or asks for a
    /// Places look-up.
    pub fn client_line(&mut self, line: &[u8], now: Timestamp, out: &mut Vec<u8>) -> Step {
        match Message::parse(line) {
            Ok(Message::IAmAt(iamat)) => {
                let record = AtRecord::new(&self.name, iamat, now);
                // Write the new record as the reply; it is also the line the cache keeps.
                let start = out.len();
                record.write_to(out);
                let (stored, held) = offer(
                    &mut self.clients,
                    &mut self.links,
                    record,
                    Some(&out[start..]),
                    None,
                );
                if !stored {
                    out.truncate(start);
                    out.extend_from_slice(self.clients.get(held).map_or(&[][..], Entry::line));
                }
                out.push(b'\n');
                Step::Answered { stored }
            }
            Ok(Message::WhatsAt(q)) => match self
                .clients
                .index_of(&q.client)
                .and_then(|i| self.clients.get(i))
                .and_then(|e| {
                    let r = e.record()?;
                    Some((
                        e,
                        r.location.latitude(),
                        r.location.longitude(),
                        r.location.as_str().to_owned(),
                    ))
                }) {
                Some((entry, latitude, longitude, location)) => Step::Lookup(Lookup {
                    at_line: entry.line().to_vec(),
                    latitude,
                    longitude,
                    location,
                    radius: q.radius.into_owned(),
                    bound: q.bound,
                }),
                None => {
                    herd_proto::write_invalid(line, out);
                    Step::Answered { stored: false }
                }
            },
            Err(_) => {
                herd_proto::write_invalid(line, out);
                Step::Answered { stored: false }
            }
        }
    }

    /// A record from neighbour `from`; returns whether it was new here (and so flooded on).
    pub fn peer_record(&mut self, from: usize, record: AtRecord<'_>) -> bool {
        offer(&mut self.clients, &mut self.links, record, None, Some(from)).0
    }

    /// Link `id` came up: starts the catch-up on it. Returns the link's epoch.
    pub fn link_up(&mut self, id: usize) -> u64 {
        let link = &mut self.links[id];
        link.reset();
        link.up = true;
        link.epoch += 1;
        link.sync = Some(0);
        link.epoch
    }

    /// Link `id` of epoch `epoch` went down. A newer link of the same neighbour is left alone.
    pub fn link_down(&mut self, id: usize, epoch: u64) {
        let link = &mut self.links[id];
        if link.epoch == epoch {
            link.up = false;
            link.reset();
        }
    }

    /// Whether link `id` is up.
    pub fn is_up(&self, id: usize) -> bool {
        self.links[id].up
    }

    /// Whether link `id` has anything to send.
    pub fn wants_transmit(&self, id: usize) -> bool {
        let link = &self.links[id];
        link.up && (link.sync.is_some() || !link.queue.is_empty())
    }

    /// Writes up to `max` lines for link `id` (catch-up first, then queued records), each with `\n`.
    /// Returns how many records were written.
    pub fn poll_transmit(&mut self, id: usize, epoch: u64, out: &mut Vec<u8>, max: usize) -> usize {
        let link = &mut self.links[id];
        if !link.up || link.epoch != epoch {
            return 0;
        }
        let mut n = 0;
        while n < max {
            let Some(cursor) = link.sync else { break };
            match self.clients.get(cursor) {
                Some(entry) => {
                    out.extend_from_slice(entry.line());
                    out.push(b'\n');
                    link.sync = Some(cursor + 1);
                    n += 1;
                }
                None => {
                    link.sync = None;
                    PeerMessage::Synced {
                        count: cursor as u64,
                    }
                    .write_to(out);
                    out.push(b'\n');
                }
            }
        }
        while n < max {
            let Some(index) = link.queue.pop_front() else {
                break;
            };
            link.queued[index as usize] = false;
            if let Some(entry) = self.clients.get(index as usize) {
                out.extend_from_slice(entry.line());
                out.push(b'\n');
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> Timestamp {
        Timestamp::new(secs, 0).unwrap()
    }

    fn reply(node: &mut Node, line: &str, now: u64) -> (String, Step) {
        let mut out = Vec::new();
        let step = node.client_line(line.as_bytes(), t(now), &mut out);
        (String::from_utf8(out).unwrap(), step)
    }

    #[test]
    fn iamat_then_stale_then_whatsat() {
        let mut n = Node::new("Alford", vec!["Hamilton".into()]);
        let (out, step) = reply(&mut n, "IAMAT kiwi +34-118 100", 101);
        assert_eq!(out, "AT Alford +1.000000000 kiwi +34-118 100\n");
        assert_eq!(step, Step::Answered { stored: true });
        let (out, step) = reply(&mut n, "IAMAT kiwi +1-1 99", 102);
        assert_eq!(
            out, "AT Alford +1.000000000 kiwi +34-118 100\n",
            "stale IAMAT gets the held record"
        );
        assert_eq!(step, Step::Answered { stored: false });
        let (out, step) = reply(&mut n, "WHATSAT kiwi 10 5", 103);
        assert_eq!(out, "");
        let Step::Lookup(l) = step else { panic!() };
        assert_eq!(l.at_line, b"AT Alford +1.000000000 kiwi +34-118 100");
        assert_eq!((l.latitude, l.longitude, l.bound), (34.0, -118.0, 5));
        assert_eq!(
            reply(&mut n, "WHATSAT nobody 10 5", 104).0,
            "? WHATSAT nobody 10 5\n"
        );
        assert_eq!(
            reply(&mut n, "AT Alford +1.000000000 kiwi +34-118 100", 104).0,
            "? AT Alford +1.000000000 kiwi +34-118 100\n"
        );
    }

    #[test]
    fn floods_to_all_links_but_the_source_and_catches_up() {
        let mut n = Node::new("Hamilton", vec!["Alford".into(), "Holiday".into()]);
        let e0 = n.link_up(0);
        let e1 = n.link_up(1);
        let mut out = Vec::new();
        // Empty catch-ups.
        assert_eq!(n.poll_transmit(0, e0, &mut out, 10), 0);
        assert_eq!(n.poll_transmit(1, e1, &mut out, 10), 0);
        assert_eq!(out, b"HERD-SYNCED 0\nHERD-SYNCED 0\n");
        let r = AtRecord::parse(b"AT Alford +1.000000000 kiwi +34-118 100").unwrap();
        assert!(n.peer_record(0, r.clone()));
        assert!(!n.peer_record(1, r), "not new: dropped");
        assert!(!n.wants_transmit(0));
        assert!(n.wants_transmit(1));
        out.clear();
        assert_eq!(n.poll_transmit(1, e1, &mut out, 10), 1);
        assert_eq!(out, b"AT Alford +1.000000000 kiwi +34-118 100\n");
        // A link that comes up again gets the whole cache.
        n.link_down(1, e1);
        let e1 = n.link_up(1);
        out.clear();
        n.poll_transmit(1, e1, &mut out, 10);
        assert_eq!(
            out,
            b"AT Alford +1.000000000 kiwi +34-118 100\nHERD-SYNCED 1\n"
        );
        // A stale epoch changes nothing.
        n.link_down(1, e1 - 1);
        assert!(n.is_up(1));
    }

    #[test]
    fn a_slow_link_holds_one_entry_per_client() {
        let mut n = Node::new("A", vec!["B".into()]);
        let e = n.link_up(0);
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
}
