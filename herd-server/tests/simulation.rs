//! Deterministic simulation of a herd of `Node`s, each on a clock of its own: seeded random schedules
//! of client updates, bytes delayed and delivered in pieces, link cuts and heals, crashes that lose a
//! node's memory, restarts that keep it (a data dir), records lost on a live link (a divergence only
//! the periodic check repairs) and periodic checks.
//!
//! The nodes are driven only through the entry points the driver uses: `handle_timeout` and
//! `poll_timeout` decide when to dial, ping, check and close; `handle_link_input` takes the bytes a
//! link brought and dispatches every line; `poll_transmit` says what to send. So keep-alives, dead
//! links, dial back-off and the periodic check run here as they do in a server.
//!
//! After healing and waiting past a periodic check, every node must hold the same cache, and each
//! client's record must be the greatest one that some node stored and did not lose in a crash.
//!
//! A failure prints its seed; `HERD_SIM_SEED=<seed> cargo test -p herd-server --test simulation`
//! replays exactly that run (add `HERD_SIM_NODES=<n>` for a random-graph seed).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use herd_proto::{AtRecord, Timestamp};
use herd_server::node::{LinkAction, Node, Step, CHECK_EVERY};

/// One direction of a link: whole lines the sender wrote that the receiver has not read, and the
/// receiver's buffer of bytes read but not yet used (a line that arrived in pieces).
#[derive(Default)]
struct Pipe {
    lines: VecDeque<Vec<u8>>,
    /// Bytes of the front line already handed over.
    front: usize,
    inbox: Vec<u8>,
}

impl Pipe {
    fn clear(&mut self) {
        *self = Pipe::default();
    }

    fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.inbox.is_empty()
    }
}

struct Edge {
    a: usize,
    b: usize,
    /// Link ids: `a`'s id for `b`, and `b`'s id for `a`.
    a_id: usize,
    b_id: usize,
    cut: bool,
    /// Epochs while the link is up.
    up: Option<(u64, u64)>,
    ab: Pipe,
    ba: Pipe,
}

struct Sim {
    rng: fastrand::Rng,
    names: Vec<String>,
    nodes: Vec<Node>,
    alive: Vec<bool>,
    edges: Vec<Edge>,
    /// Records (AT lines) → nodes that stored them and have not crashed since.
    holders: HashMap<Vec<u8>, BTreeSet<usize>>,
    clients: Vec<String>,
    /// Client time (seconds) for the next IAMAT.
    clock: u64,
    /// Simulated time since the start, and where each node's clock stands at its zero (their clocks
    /// disagree, and run at slightly different rates).
    elapsed: Duration,
    start: Instant,
    offsets: Vec<Duration>,
    rates: Vec<f64>,
}

impl Sim {
    fn new(seed: u64, names: Vec<String>, links: &[(usize, usize)]) -> Sim {
        let mut neighbors: Vec<Vec<String>> = vec![Vec::new(); names.len()];
        for &(a, b) in links {
            neighbors[a].push(names[b].clone());
            neighbors[b].push(names[a].clone());
        }
        let nodes: Vec<Node> = names
            .iter()
            .zip(&neighbors)
            .map(|(n, ns)| Node::new(n, ns.clone()))
            .collect();
        let edges = links
            .iter()
            .map(|&(a, b)| Edge {
                a,
                b,
                a_id: nodes[a].link_id(names[b].as_bytes()).unwrap(),
                b_id: nodes[b].link_id(names[a].as_bytes()).unwrap(),
                cut: false,
                up: None,
                ab: Pipe::default(),
                ba: Pipe::default(),
            })
            .collect();
        let mut rng = fastrand::Rng::with_seed(seed);
        let clients = (0..rng.usize(1..12))
            .map(|i| format!("client{i}"))
            .collect();
        let n = names.len();
        let offsets = (0..n)
            .map(|_| Duration::from_millis(rng.u64(0..100_000)))
            .collect();
        let rates = (0..n).map(|_| 1.0 + (rng.f64() - 0.5) / 500.0).collect();
        let mut sim = Sim {
            rng,
            names,
            nodes,
            alive: vec![true; n],
            edges,
            holders: HashMap::new(),
            clients,
            clock: 1_000,
            elapsed: Duration::ZERO,
            start: Instant::now(),
            offsets,
            rates,
        };
        sim.timers();
        sim
    }

    /// Node `n`'s clock now.
    fn now(&self, n: usize) -> Instant {
        self.start + self.offsets[n] + self.elapsed.mul_f64(self.rates[n])
    }

    /// Lets time pass, then runs every timer that is due on every live node.
    fn advance(&mut self, by: Duration) {
        self.elapsed += by;
        self.timers();
    }

    /// Runs each live node's due timers and carries out what they ask, as the driver's timer task does.
    fn timers(&mut self) {
        for n in 0..self.nodes.len() {
            if !self.alive[n] {
                continue;
            }
            let now = self.now(n);
            if self.nodes[n].poll_timeout().is_some_and(|at| at > now) {
                continue;
            }
            for action in self.nodes[n].handle_timeout(now) {
                match action {
                    LinkAction::Dial(link) => self.dial(n, link),
                    LinkAction::Close(link) => {
                        if let Some(e) = self.edge_of(n, link) {
                            self.link_down(e);
                        }
                    }
                    LinkAction::Transmit(_) => {} // `settle` and `transmit` poll every link
                }
            }
        }
    }

    fn edge_of(&self, n: usize, link: usize) -> Option<usize> {
        self.edges
            .iter()
            .position(|e| (e.a == n && e.a_id == link) || (e.b == n && e.b_id == link))
    }

    /// Node `n` dials its link `link`: the greeting succeeds at once, unless the link is cut or the
    /// other side is down (then the dial fails and backs off).
    fn dial(&mut self, n: usize, link: usize) {
        let Some(e) = self.edge_of(n, link) else {
            return;
        };
        let edge = &self.edges[e];
        let other = if edge.a == n { edge.b } else { edge.a };
        if edge.cut || !self.alive[other] {
            let now = self.now(n);
            self.nodes[n].dial_failed(link, now);
            return;
        }
        // A new connection: whatever the old one carried is gone, and a side that still thought the
        // old link up is replaced (an authenticated greeting replaces a live link).
        let (a, b, a_id, b_id) = (edge.a, edge.b, edge.a_id, edge.b_id);
        let (na, nb) = (self.now(a), self.now(b));
        let ea = self.nodes[a].try_link_up(a_id, na, true).unwrap();
        let eb = self.nodes[b].try_link_up(b_id, nb, true).unwrap();
        let edge = &mut self.edges[e];
        edge.ab.clear();
        edge.ba.clear();
        edge.up = Some((ea, eb));
    }

    /// Breaks a link: both sides see it go down, and what was in flight is lost (as with TCP).
    fn link_down(&mut self, e: usize) {
        let (a, b) = (self.edges[e].a, self.edges[e].b);
        let (na, nb) = (self.now(a), self.now(b));
        let edge = &mut self.edges[e];
        if let Some((ea, eb)) = edge.up.take() {
            self.nodes[edge.a].link_down(edge.a_id, ea, na);
            self.nodes[edge.b].link_down(edge.b_id, eb, nb);
        }
        edge.ab.clear();
        edge.ba.clear();
    }

    fn crash(&mut self, n: usize) {
        for e in 0..self.edges.len() {
            if self.edges[e].a == n || self.edges[e].b == n {
                self.link_down(e);
            }
        }
        self.alive[n] = false;
        let neighbors = self.nodes[n].neighbors().to_vec();
        self.nodes[n] = Node::new(&self.names[n], neighbors);
        for holders in self.holders.values_mut() {
            holders.remove(&n);
        }
    }

    /// A restart that keeps the node's records (a data dir): its links go down, and its timers
    /// bring them back.
    fn bounce(&mut self, n: usize) {
        for e in 0..self.edges.len() {
            if self.edges[e].a == n || self.edges[e].b == n {
                self.link_down(e);
            }
        }
    }

    /// A record lost on a live link without the link noticing: only a reconciliation repairs it.
    fn lose_record(&mut self, e: usize) {
        let edge = &mut self.edges[e];
        let pipe = if self.rng.bool() {
            &mut edge.ab
        } else {
            &mut edge.ba
        };
        // Not the front line if part of it was handed over already.
        let skip = usize::from(pipe.front > 0);
        if let Some(at) = pipe
            .lines
            .iter()
            .skip(skip)
            .position(|l| l.starts_with(b"AT "))
        {
            pipe.lines.remove(at + skip);
        }
    }

    /// The periodic check, now: the dialling side of edge `e` opens a reconciliation if none runs.
    fn check_link(&mut self, e: usize) {
        let edge = &self.edges[e];
        if edge.up.is_some() {
            let (a, b) = (edge.a, edge.b);
            let (a_id, b_id) = (edge.a_id, edge.b_id);
            self.nodes[a].check_link(a_id);
            self.nodes[b].check_link(b_id);
        }
    }

    fn restart(&mut self, n: usize) {
        self.alive[n] = true;
    }

    fn iamat(&mut self) {
        let alive: Vec<usize> = (0..self.nodes.len()).filter(|&n| self.alive[n]).collect();
        if alive.is_empty() {
            return;
        }
        let n = alive[self.rng.usize(..alive.len())];
        let client = &self.clients[self.rng.usize(..self.clients.len())];
        // Client times collide on purpose, so the server name and time difference break ties.
        let time = format!("{}.{}", self.rng.u64(0..50), self.rng.u32(0..3));
        self.clock += self.rng.u64(1..1_000);
        let now = Timestamp::new(self.clock, self.rng.u32(0..1_000_000_000)).unwrap();
        let line = format!(
            "IAMAT {client} +{}.5-{}.25 {time}",
            self.rng.u8(0..90),
            self.rng.u8(0..180)
        );
        let mut out = Vec::new();
        let step = self.nodes[n].client_line(line.as_bytes(), now, &mut out);
        assert!(out.starts_with(b"AT "), "{}", String::from_utf8_lossy(&out));
        if step == (Step::Iamat { stored: true }) {
            out.pop();
            self.holders.entry(out).or_default().insert(n);
        }
    }

    /// The sender writes up to `max` lines into the pipe.
    fn transmit(&mut self, e: usize, forward: bool, max: usize) {
        let edge = &mut self.edges[e];
        let Some((ea, eb)) = edge.up else { return };
        let (from, id, epoch, pipe) = if forward {
            (edge.a, edge.a_id, ea, &mut edge.ab)
        } else {
            (edge.b, edge.b_id, eb, &mut edge.ba)
        };
        let mut out = Vec::new();
        self.nodes[from].poll_transmit(id, epoch, &mut out, max);
        if out.is_empty() {
            return;
        }
        pipe.lines
            .extend(out.split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec));
        let now = self.now(from);
        self.nodes[from].sent(id, now);
    }

    /// The receiver reads up to `bytes` bytes of the pipe (lines arrive in pieces) and hands what it
    /// has to its node.
    fn deliver(&mut self, e: usize, forward: bool, bytes: usize) {
        let edge = &mut self.edges[e];
        let Some((ea, eb)) = edge.up else { return };
        let (to, id, epoch, pipe) = if forward {
            (edge.b, edge.b_id, eb, &mut edge.ab)
        } else {
            (edge.a, edge.a_id, ea, &mut edge.ba)
        };
        let mut left = bytes;
        while left > 0 {
            let Some(line) = pipe.lines.front() else {
                break;
            };
            let take = left.min(line.len() - pipe.front);
            pipe.inbox
                .extend_from_slice(&line[pipe.front..pipe.front + take]);
            pipe.front += take;
            left -= take;
            if pipe.front == line.len() {
                pipe.lines.pop_front();
                pipe.front = 0;
            }
        }
        if pipe.inbox.is_empty() {
            return;
        }
        let now = self.start + self.offsets[to] + self.elapsed.mul_f64(self.rates[to]);
        let mut records = Vec::new();
        let node = &mut self.nodes[to];
        let wall = Timestamp::new(self.clock, 0).unwrap();
        let input = node.handle_link_input(id, epoch, &pipe.inbox, now, wall, |l| {
            records.push(l.to_vec());
        });
        pipe.inbox.drain(..input.consumed);
        while node.poll_event().is_some() {}
        assert_eq!(
            input.close, None,
            "{} closed a link to an honest peer",
            self.names[to]
        );
        for line in records {
            let r = AtRecord::parse(&line).unwrap();
            if node.get(&r.client).as_deref() == Some(&line[..]) {
                self.holders.entry(line).or_default().insert(to);
            }
        }
    }

    fn step(&mut self) {
        let e = self.rng.usize(..self.edges.len().max(1));
        let has_edges = !self.edges.is_empty();
        match self.rng.u32(0..100) {
            0..=24 => self.iamat(),
            25..=54 if has_edges => {
                let (f, max) = (self.rng.bool(), self.rng.usize(1..6));
                self.transmit(e, f, max)
            }
            55..=84 if has_edges => {
                let (f, bytes) = (self.rng.bool(), self.rng.usize(1..400));
                self.deliver(e, f, bytes)
            }
            85..=89 => {
                let ms = self.rng.u64(0..1_500);
                self.advance(Duration::from_millis(ms));
            }
            90..=92 if has_edges => {
                self.edges[e].cut = true;
                self.link_down(e);
            }
            93..=95 if has_edges => self.edges[e].cut = false,
            96 => {
                let n = self.rng.usize(..self.nodes.len());
                if self.alive[n] {
                    self.crash(n);
                }
            }
            97 => match self.rng.u32(0..3) {
                0 => {
                    let n = self.rng.usize(..self.nodes.len());
                    if self.alive[n] {
                        self.bounce(n);
                    }
                }
                1 if has_edges => self.lose_record(e),
                _ if has_edges => self.check_link(e),
                _ => {}
            },
            _ => {
                let n = self.rng.usize(..self.nodes.len());
                if !self.alive[n] {
                    self.restart(n);
                }
            }
        }
    }

    /// Heals every cut and restarts every crashed node, then lets a little more than a periodic
    /// check's interval pass, settling as it goes: links come back through the nodes' own dials and
    /// back-off, catch up, and every link is checked by its timer (records lost on a live link are
    /// repaired only by that check).
    fn heal_and_settle(&mut self) {
        for n in 0..self.nodes.len() {
            self.restart(n);
        }
        for edge in &mut self.edges {
            edge.cut = false;
        }
        let mut waited = Duration::ZERO;
        while waited < CHECK_EVERY + Duration::from_secs(5) {
            self.settle();
            self.advance(Duration::from_millis(250));
            waited += Duration::from_millis(250);
        }
        self.settle();
        for (e, edge) in self.edges.iter().enumerate() {
            if edge.up.is_none() {
                for (n, id) in [(edge.a, edge.a_id), (edge.b, edge.b_id)] {
                    eprintln!(
                        "node {n} alive {} link {id}: {:?} timeout {:?} now {:?}",
                        self.alive[n],
                        self.nodes[n].link_status(id),
                        self.nodes[n].poll_timeout(),
                        self.now(n)
                    );
                }
            }
            assert!(edge.up.is_some(), "edge {e} never came back up");
            assert!(
                !self.nodes[edge.a].reconciling(edge.a_id)
                    && !self.nodes[edge.b].reconciling(edge.b_id),
                "edge {e}: a reconciliation never ended"
            );
        }
    }

    /// Runs until nothing is left to send.
    fn settle(&mut self) {
        for round in 0.. {
            assert!(round < 1_000_000, "no quiescence");
            let mut busy = false;
            for e in 0..self.edges.len() {
                for forward in [true, false] {
                    let edge = &self.edges[e];
                    let (from, id) = if forward {
                        (edge.a, edge.a_id)
                    } else {
                        (edge.b, edge.b_id)
                    };
                    if edge.up.is_some() && self.nodes[from].wants_transmit(id) {
                        let max = self.rng.usize(1..6);
                        self.transmit(e, forward, max);
                        busy = true;
                    }
                    let pipe = if forward {
                        &self.edges[e].ab
                    } else {
                        &self.edges[e].ba
                    };
                    if !pipe.lines.is_empty() {
                        // Deliver in a random amount, so pipes interleave differently per seed.
                        let bytes = self.rng.usize(1..300);
                        self.deliver(e, forward, bytes);
                        busy = true;
                    }
                }
            }
            if !busy {
                return;
            }
        }
    }

    fn check(&self) {
        for (e, edge) in self.edges.iter().enumerate() {
            assert!(
                edge.ab.is_empty() && edge.ba.is_empty(),
                "edge {e}: bytes left unread"
            );
        }
        let caches: Vec<BTreeMap<Vec<u8>, Vec<u8>>> = self
            .nodes
            .iter()
            .map(|n| {
                n.lines()
                    .map(|l| (AtRecord::parse(&l).unwrap().client.into_owned(), l))
                    .collect()
            })
            .collect();
        for (i, c) in caches.iter().enumerate() {
            assert_eq!(
                c, &caches[0],
                "node {} differs from node {}",
                self.names[i], self.names[0]
            );
        }
        // The greatest record per client that some surviving node stored.
        let mut expected: BTreeMap<Vec<u8>, AtRecord<'_>> = BTreeMap::new();
        for (line, holders) in &self.holders {
            if holders.is_empty() {
                continue;
            }
            let r = AtRecord::parse(line).unwrap();
            let key = r.client.to_vec();
            if expected.get(&key).is_none_or(|held| *held < r) {
                expected.insert(key, r);
            }
        }
        let got: BTreeMap<Vec<u8>, AtRecord<'_>> = caches[0]
            .iter()
            .map(|(c, l)| (c.clone(), AtRecord::parse(l).unwrap()))
            .collect();
        assert_eq!(got, expected, "caches hold what was kept, and only that");
    }
}

fn run(seed: u64, names: Vec<String>, links: &[(usize, usize)], steps: usize) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut sim = Sim::new(seed, names.clone(), links);
        for _ in 0..steps {
            sim.step();
        }
        sim.heal_and_settle();
        sim.check();
    }));
    if let Err(e) = result {
        eprintln!(
            "simulation failed: replay with HERD_SIM_SEED={seed} HERD_SIM_NODES={}",
            names.len()
        );
        std::panic::resume_unwind(e);
    }
}

fn default_herd() -> (Vec<String>, Vec<(usize, usize)>) {
    let names = ["Alford", "Ball", "Hamilton", "Holiday", "Welsh"]
        .map(String::from)
        .to_vec();
    // Alford–Hamilton, Alford–Welsh, Ball–Holiday, Ball–Welsh, Hamilton–Holiday.
    (names, vec![(0, 2), (0, 4), (1, 3), (1, 4), (2, 3)])
}

/// A random connected graph: a random spanning tree plus a few extra edges.
fn random_graph(seed: u64, n: usize) -> (Vec<String>, Vec<(usize, usize)>) {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x9e37_79b9_7f4a_7c15);
    let names = (0..n).map(|i| format!("S{i:03}")).collect();
    let mut links = BTreeSet::new();
    for i in 1..n {
        links.insert((rng.usize(..i), i));
    }
    for _ in 0..rng.usize(0..=n) {
        let (a, b) = (rng.usize(..n), rng.usize(..n));
        if a != b {
            links.insert((a.min(b), a.max(b)));
        }
    }
    (names, links.into_iter().collect())
}

fn replay() -> Option<(u64, usize)> {
    let seed = std::env::var("HERD_SIM_SEED").ok()?.parse().ok()?;
    let nodes = std::env::var("HERD_SIM_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    Some((seed, nodes))
}

#[test]
fn default_herd_many_seeds() {
    let (names, links) = default_herd();
    if let Some((seed, 5)) = replay() {
        return run(seed, names, &links, 400);
    }
    for seed in 0..2000 {
        run(seed, names.clone(), &links, 400);
    }
}

#[test]
fn random_graphs_up_to_100_nodes() {
    if let Some((seed, n)) = replay() {
        if n != 5 {
            let (names, links) = random_graph(seed, n);
            return run(seed, names, &links, 40 * n);
        }
    }
    for seed in 0..200u64 {
        let n = 2 + (seed as usize * 7) % 99;
        let (names, links) = random_graph(seed, n);
        run(seed, names, &links, 40 * n);
    }
}

/// Thousands of clients, and differences dense enough for the table path (`HERD-IBF`): a node is cut
/// off or restarted with its records while many clients move elsewhere, then the herd heals through
/// its own timers. Every client's newest record must reach every node.
#[test]
fn dense_differences_heal_through_the_shipped_path() {
    for seed in 0..6u64 {
        let result = std::panic::catch_unwind(|| {
            let (names, links) = default_herd();
            let mut sim = Sim::new(seed, names, &links);
            sim.clients = (0..3_000).map(|i| format!("c{i:05}")).collect();
            for _ in 0..4 {
                // A node cut off (its links cut) or restarted with its data while its neighbours
                // take a few hundred to a few thousand updates.
                let n = sim.rng.usize(..sim.nodes.len());
                let restart = sim.rng.bool();
                for e in 0..sim.edges.len() {
                    if sim.edges[e].a == n || sim.edges[e].b == n {
                        sim.edges[e].cut = !restart;
                        sim.link_down(e);
                    }
                }
                for _ in 0..sim.rng.usize(200..4_000) {
                    sim.iamat();
                }
                sim.heal_and_settle();
                sim.check();
            }
            let tables: u64 = (0..sim.nodes.len())
                .flat_map(|n| {
                    let node = &sim.nodes[n];
                    (0..node.neighbors().len()).map(move |l| node.link_status(l).counts)
                })
                .map(|c| c.sync_tables_in)
                .sum();
            assert!(tables > 0, "seed {seed}: no table was ever sent");
        });
        if let Err(e) = result {
            eprintln!("dense simulation failed at seed {seed}");
            std::panic::resume_unwind(e);
        }
    }
}

#[test]
fn a_node_that_never_crashes_keeps_every_acknowledged_record() {
    // Without crashes nothing may be lost at all: every stored record is at least matched.
    let (names, links) = default_herd();
    let mut sim = Sim::new(7, names, &links);
    for _ in 0..2000 {
        match sim.rng.u32(0..5) {
            0 => sim.iamat(),
            1 => {
                let e = sim.rng.usize(..sim.edges.len());
                sim.transmit(e, true, 3);
                sim.deliver(e, true, 200);
            }
            2 => {
                let e = sim.rng.usize(..sim.edges.len());
                sim.link_down(e);
            }
            3 => sim.advance(Duration::from_millis(300)),
            _ => {
                let e = sim.rng.usize(..sim.edges.len());
                sim.transmit(e, false, 3);
                sim.deliver(e, false, 200);
            }
        }
    }
    sim.heal_and_settle();
    assert!(sim.holders.values().all(|h| !h.is_empty()));
    sim.check();
}
