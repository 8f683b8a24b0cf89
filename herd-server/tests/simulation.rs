//! Deterministic simulation of a herd of `Node`s: seeded random schedules of client updates, message
//! delays, link cuts and heals, crashes that lose a node's memory, restarts that keep it (a data dir),
//! records lost on a live link (a divergence only the periodic check repairs) and periodic checks.
//! Every link-up reconciles. After healing, a periodic check of every link and quiescence, every node
//! must hold the same cache, and each client's record must be the greatest one that some node stored
//! and did not lose in a crash.
//!
//! A failure prints its seed; `HERD_SIM_SEED=<seed> cargo test -p herd-server --test simulation`
//! replays exactly that run (add `HERD_SIM_NODES=<n>` for a random-graph seed).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use herd_proto::{AtRecord, PeerMessage, Timestamp};
use herd_server::node::{Node, Step};

/// The one instant the simulated nodes see: link timing plays no part in what they store.
fn now() -> std::time::Instant {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *START.get_or_init(std::time::Instant::now)
}

/// One direction of a link: what the sender has written and the receiver not yet read.
#[derive(Default)]
struct Pipe {
    lines: VecDeque<Vec<u8>>,
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
    clock: u64,
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
        let alive = vec![true; names.len()];
        let mut sim = Sim {
            rng,
            names,
            nodes,
            alive,
            edges,
            holders: HashMap::new(),
            clients,
            clock: 1_000,
        };
        for e in 0..sim.edges.len() {
            sim.link_up(e);
        }
        sim
    }

    fn link_up(&mut self, e: usize) {
        let edge = &self.edges[e];
        if edge.cut || edge.up.is_some() || !self.alive[edge.a] || !self.alive[edge.b] {
            return;
        }
        let ea = self.nodes[edge.a].link_up(edge.a_id, now());
        let eb = self.nodes[edge.b].link_up(edge.b_id, now());
        self.edges[e].up = Some((ea, eb));
    }

    /// Breaks a link: both sides see it go down, and what was in flight is lost (as with TCP).
    fn link_down(&mut self, e: usize) {
        let edge = &mut self.edges[e];
        if let Some((ea, eb)) = edge.up.take() {
            self.nodes[edge.a].link_down(edge.a_id, ea, now());
            self.nodes[edge.b].link_down(edge.b_id, eb, now());
        }
        edge.ab.lines.clear();
        edge.ba.lines.clear();
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

    /// A restart that keeps the node's records (a data dir): its links go down and come up again.
    fn bounce(&mut self, n: usize) {
        for e in 0..self.edges.len() {
            if self.edges[e].a == n || self.edges[e].b == n {
                self.link_down(e);
                self.link_up(e);
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
        if let Some(at) = pipe.lines.iter().position(|l| l.starts_with(b"AT ")) {
            pipe.lines.remove(at);
        }
    }

    /// The periodic check: the dialling side of edge `e` opens a reconciliation if none runs.
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
        for e in 0..self.edges.len() {
            if self.edges[e].a == n || self.edges[e].b == n {
                self.link_up(e);
            }
        }
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
        if step == (Step::Answered { stored: true }) {
            out.pop();
            self.holders.entry(out).or_default().insert(n);
        }
    }

    /// The sender writes a few lines into the pipe.
    fn transmit(&mut self, e: usize, forward: bool) {
        let max = self.rng.usize(1..6);
        let edge = &mut self.edges[e];
        let Some((ea, eb)) = edge.up else { return };
        let (from, id, epoch, pipe) = if forward {
            (edge.a, edge.a_id, ea, &mut edge.ab)
        } else {
            (edge.b, edge.b_id, eb, &mut edge.ba)
        };
        let mut out = Vec::new();
        self.nodes[from].poll_transmit(id, epoch, &mut out, max);
        pipe.lines.extend(
            out.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec),
        );
    }

    /// The receiver reads the oldest line of the pipe.
    fn deliver(&mut self, e: usize, forward: bool) {
        let edge = &mut self.edges[e];
        let (to, id, pipe) = if forward {
            (edge.b, edge.b_id, &mut edge.ab)
        } else {
            (edge.a, edge.a_id, &mut edge.ba)
        };
        let Some(line) = pipe.lines.pop_front() else {
            return;
        };
        match PeerMessage::parse(&line).expect("peer line") {
            PeerMessage::Record(r) => {
                if self.nodes[to].peer_record(id, r) {
                    self.holders.entry(line).or_default().insert(to);
                }
            }
            m @ (PeerMessage::Root { .. }
            | PeerMessage::Fingerprints { .. }
            | PeerMessage::Ids { .. }
            | PeerMessage::Want { .. }
            | PeerMessage::Over
            | PeerMessage::Synced { .. }) => {
                self.nodes[to]
                    .sync_message(id, &m)
                    .expect("reconciliation in turn");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn step(&mut self) {
        let e = self.rng.usize(..self.edges.len().max(1));
        let has_edges = !self.edges.is_empty();
        match self.rng.u32(0..100) {
            0..=24 => self.iamat(),
            25..=54 if has_edges => {
                let f = self.rng.bool();
                self.transmit(e, f)
            }
            55..=89 if has_edges => {
                let f = self.rng.bool();
                self.deliver(e, f)
            }
            90..=92 if has_edges => {
                self.edges[e].cut = true;
                self.link_down(e);
            }
            93..=95 if has_edges => {
                self.edges[e].cut = false;
                self.link_up(e);
            }
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

    /// Heals every cut and restarts every crashed node, runs until nothing is left to send, then checks
    /// every link (as the periodic check would) and settles again: records lost on a live link are
    /// repaired only by that check.
    fn heal_and_settle(&mut self) {
        for n in 0..self.nodes.len() {
            if !self.alive[n] {
                self.restart(n);
            }
        }
        for e in 0..self.edges.len() {
            self.edges[e].cut = false;
            self.link_up(e);
        }
        self.settle();
        for e in 0..self.edges.len() {
            self.check_link(e);
        }
        self.settle();
        for (e, edge) in self.edges.iter().enumerate() {
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
                    if self.nodes[from].wants_transmit(id) {
                        self.transmit(e, forward);
                        busy = true;
                    }
                    let pipe = if forward {
                        &self.edges[e].ab
                    } else {
                        &self.edges[e].ba
                    };
                    if !pipe.lines.is_empty() {
                        // Deliver in a random amount, so pipes interleave differently per seed.
                        for _ in 0..self.rng.usize(1..4) {
                            self.deliver(e, forward);
                        }
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
        let caches: Vec<BTreeMap<Vec<u8>, Vec<u8>>> = self
            .nodes
            .iter()
            .map(|n| {
                n.lines()
                    .map(|l| (AtRecord::parse(l).unwrap().client.into_owned(), l.to_vec()))
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
    for seed in 0..3000 {
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
    for seed in 0..300u64 {
        let n = 2 + (seed as usize * 7) % 99;
        let (names, links) = random_graph(seed, n);
        run(seed, names, &links, 40 * n);
    }
}

#[test]
fn a_node_that_never_crashes_keeps_every_acknowledged_record() {
    // Without crashes nothing may be lost at all: every stored record is at least matched.
    let (names, links) = default_herd();
    let mut sim = Sim::new(7, names, &links);
    for _ in 0..2000 {
        match sim.rng.u32(0..4) {
            0 => sim.iamat(),
            1 => {
                let e = sim.rng.usize(..sim.edges.len());
                sim.transmit(e, true);
                sim.deliver(e, false);
            }
            2 => {
                let e = sim.rng.usize(..sim.edges.len());
                sim.link_down(e);
            }
            _ => {
                let e = sim.rng.usize(..sim.edges.len());
                sim.link_up(e);
            }
        }
    }
    sim.heal_and_settle();
    assert!(sim.holders.values().all(|h| !h.is_empty()));
    sim.check();
}
