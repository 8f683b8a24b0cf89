//! Deterministic simulation of a herd whose every peer link runs the real greeting and channel
//! (`herd_server::node::handshake`) through an adversary that sits on the wire: it records everything,
//! flips bytes, injects forged lines and frames, drops, duplicates and replays chunks, relays and
//! reflects greetings to other servers, and opens greetings of its own (strangers, the wrong side,
//! captured handshakes, forged plain records).
//!
//! The oracle: no node ever stores a record the adversary forged (client ids `forged-…`), and once the
//! adversary stops, the links come back and every node holds the same records.
//!
//! A failure prints its seed; `HERD_ADV_SEED=<seed> cargo test -p herd-server --test adversary`
//! replays exactly that run.

use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use herd_proto::{AtRecord, Timestamp};
use herd_server::node::handshake::{Greeting, Keyring, Opener, Sealer, Verdict};
use herd_server::node::limits::{NodeLimits, SKEW_ALLOWANCE};
use herd_server::node::{LinkAction, Node};

/// Alford – Bravo – Charlie – Alford: a ring, so records have two ways round.
const NAMES: [&str; 3] = ["Alford", "Bravo", "Charlie"];

enum Phase {
    Greeting(Greeting),
    Up {
        link: usize,
        epoch: u64,
        sealer: Sealer,
        opener: Opener,
        plain: BytesMut,
    },
    /// The adversary's own end: it writes what it likes and reads nothing.
    Attacker,
    /// An insider's end: it holds the herd's secret, greets as Alford and, once up, writes what it
    /// likes in the channel (`Sim::insider_step`).
    Insider {
        greeting: Option<Greeting>,
        sealer: Option<Sealer>,
    },
    Closed,
}

struct Side {
    /// The honest node at this end, if any.
    node: Option<usize>,
    phase: Phase,
    /// Received, not yet consumed.
    input: BytesMut,
}

struct Conn {
    sides: [Side; 2],
    /// `wire[i]`: chunks in flight towards side `i`.
    wire: [Vec<Vec<u8>>; 2],
    /// The dialer's link id (for `dial_failed`), when an honest node dialled.
    dial: Option<(usize, usize)>,
}

struct Sim {
    rng: fastrand::Rng,
    nodes: Vec<Node>,
    keyring: Keyring,
    conns: Vec<Conn>,
    /// Every chunk the adversary has seen, for replays and relays.
    seen: Vec<Vec<u8>>,
    now: Instant,
    clock: u64,
    forged: u64,
    active: bool,
    /// Nodes run by the simulation (an insider's own identity is not).
    honest: Vec<bool>,
}

fn forged_line(n: u64) -> Vec<u8> {
    format!("AT Alford +0.000000000 forged-{n} +1+1 9999999999.{n:09}\n").into_bytes()
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let nodes = NAMES
            .iter()
            .map(|n| {
                let neighbors = NAMES.iter().filter(|m| *m != n).map(|m| m.to_string());
                Node::new(n, neighbors.collect()).with_members(&NAMES)
            })
            .collect();
        Sim {
            rng: fastrand::Rng::with_seed(seed),
            nodes,
            keyring: Keyring::new(&["the herd secret"]),
            conns: Vec::new(),
            seen: Vec::new(),
            now: Instant::now(),
            clock: 1_000,
            forged: 0,
            active: true,
            honest: vec![true; NAMES.len()],
        }
    }

    /// The wall clock every node reads (the simulation's clients' time).
    fn wall(&self) -> Timestamp {
        Timestamp::new(self.clock, 0).unwrap()
    }

    fn node_index(&self, name: &str) -> usize {
        NAMES.iter().position(|n| *n == name).unwrap()
    }

    /// An honest node dials neighbour `link`.
    fn dial(&mut self, n: usize, link: usize) {
        let peer = self.nodes[n].neighbors()[link].clone();
        let to = self.node_index(&peer);
        let key = self.nodes[n].dial_key(link);
        let mut hello = Vec::new();
        let g = Greeting::dial(
            self.nodes[n].name(),
            peer.as_bytes(),
            link,
            &self.keyring,
            key,
            &mut hello,
        );
        let acceptor = Greeting::accept(self.nodes[to].name(), &self.keyring);
        self.conns.push(Conn {
            sides: [
                Side {
                    node: Some(n),
                    phase: Phase::Greeting(g),
                    input: BytesMut::new(),
                },
                Side {
                    node: Some(to),
                    phase: Phase::Greeting(acceptor),
                    input: BytesMut::new(),
                },
            ],
            wire: [Vec::new(), vec![hello]],
            dial: Some((n, link)),
        });
    }

    /// The adversary opens a greeting of its own to a random node.
    fn attack_greeting(&mut self) {
        let to = self.rng.usize(..NAMES.len());
        let me = NAMES[to];
        let other = NAMES[(to + 1 + self.rng.usize(..NAMES.len() - 1)) % NAMES.len()];
        let captured: Vec<&Vec<u8>> = self
            .seen
            .iter()
            .filter(|c| c.starts_with(b"HERD-HELLO") || c.starts_with(b"HERD-WELCOME"))
            .collect();
        let mut bytes = match self.rng.u8(..6) {
            // A captured greeting, replayed or relayed as it is.
            0 if !captured.is_empty() => captured[self.rng.usize(..captured.len())].clone(),
            // A captured handshake under other names (a relay or a reflection).
            1 if !captured.is_empty() => {
                let c = captured[self.rng.usize(..captured.len())];
                let text = String::from_utf8_lossy(c);
                let hs = text.split_whitespace().last().unwrap_or("-").to_owned();
                format!("HERD-HELLO 4 {other} {me} {hs}\n").into_bytes()
            }
            2 => format!("HERD-HELLO 4 Mallory {me} -\n").into_bytes(),
            3 => format!("HERD-HELLO 4 {other} {me} -\n").into_bytes(),
            4 => format!("HERD-HELLO 4 {other} {me} {}\n", "ab".repeat(48)).into_bytes(),
            _ => {
                let mut junk = vec![0u8; self.rng.usize(1..200)];
                self.rng.fill(&mut junk);
                junk
            }
        };
        // Then something after the greeting: captured frames, or forged plain records.
        if self.rng.bool() && !self.seen.is_empty() {
            bytes.extend_from_slice(&self.seen[self.rng.usize(..self.seen.len())].clone());
        } else {
            self.forged += 1;
            bytes.extend_from_slice(&forged_line(self.forged));
        }
        let acceptor = Greeting::accept(self.nodes[to].name(), &self.keyring);
        self.conns.push(Conn {
            sides: [
                Side {
                    node: None,
                    phase: Phase::Attacker,
                    input: BytesMut::new(),
                },
                Side {
                    node: Some(to),
                    phase: Phase::Greeting(acceptor),
                    input: BytesMut::new(),
                },
            ],
            wire: [Vec::new(), vec![bytes]],
            dial: None,
        });
    }

    /// Delivers what is in flight on connection `c`, through the adversary.
    fn deliver(&mut self, c: usize) {
        for to in 0..2 {
            let chunks = std::mem::take(&mut self.conns[c].wire[to]);
            for mut chunk in chunks {
                if self.seen.len() < 4096 {
                    self.seen.push(chunk.clone());
                }
                if self.active && self.rng.u8(..10) == 0 {
                    match self.rng.u8(..6) {
                        0 if !chunk.is_empty() => {
                            let i = self.rng.usize(..chunk.len());
                            chunk[i] ^= 1 << self.rng.u8(..8);
                        }
                        1 => {
                            self.forged += 1;
                            chunk.extend_from_slice(&forged_line(self.forged));
                        }
                        2 => continue, // dropped
                        3 => {
                            let again = chunk.clone();
                            self.conns[c].sides[to].input.extend_from_slice(&again);
                        }
                        4 => {
                            let old = self.seen[self.rng.usize(..self.seen.len())].clone();
                            chunk.extend_from_slice(&old);
                        }
                        _ => {
                            // A fake frame: a plausible header and random bytes.
                            let len = self.rng.usize(16..64);
                            chunk.extend_from_slice(&(len as u16).to_be_bytes());
                            let mut body = vec![0u8; len];
                            self.rng.fill(&mut body);
                            chunk.extend_from_slice(&body);
                        }
                    }
                }
                self.conns[c].sides[to].input.extend_from_slice(&chunk);
            }
        }
    }

    /// Lets each honest end of connection `c` process its input and transmit.
    fn run_conn(&mut self, c: usize) {
        for i in 0..2 {
            let Some(n) = self.conns[c].sides[i].node else {
                continue;
            };
            let mut out = Vec::new();
            let mut close = false;
            let wall = self.wall();
            let side = &mut self.conns[c].sides[i];
            let node = &mut self.nodes[n];
            let mut next = None;
            match &mut side.phase {
                Phase::Greeting(g) => match g.feed(&mut side.input, node, self.now, &mut out) {
                    Verdict::Pending => {}
                    Verdict::Established(est) => {
                        match node.try_link_up(est.link, self.now, est.authenticated) {
                            Ok(epoch) => {
                                next = Some(Phase::Up {
                                    link: est.link,
                                    epoch,
                                    sealer: est.channel.sealer,
                                    opener: est.channel.opener,
                                    plain: est.channel.first,
                                })
                            }
                            Err(_) => close = true,
                        }
                    }
                    Verdict::Failed(_) => close = true,
                },
                Phase::Up {
                    link,
                    epoch,
                    sealer,
                    opener,
                    plain,
                } => {
                    if opener.open(&mut side.input, plain).is_err() {
                        close = true;
                    } else {
                        // The node decodes and handles every line, as under the driver.
                        let input =
                            node.handle_link_input(*link, *epoch, plain, self.now, wall, |_| {});
                        plain.advance(input.consumed);
                        while node.poll_event().is_some() {}
                        close |= input.close.is_some();
                        let mut reply = Vec::new();
                        node.poll_transmit(*link, *epoch, &mut reply, 64);
                        if !reply.is_empty() {
                            sealer.seal(&reply, &mut out);
                            node.sent(*link, self.now);
                        }
                    }
                }
                Phase::Attacker | Phase::Insider { .. } | Phase::Closed => {}
            }
            if let Some(p) = next {
                side.phase = p;
            }
            let other = 1 - i;
            if !out.is_empty() {
                self.conns[c].wire[other].push(out);
            }
            if close {
                self.close(c);
                return;
            }
        }
    }

    /// Closes connection `c`: each honest end that was up reports its link down.
    fn close(&mut self, c: usize) {
        for i in 0..2 {
            let side = &mut self.conns[c].sides[i];
            let phase = std::mem::replace(&mut side.phase, Phase::Closed);
            if let (Some(n), Phase::Up { link, epoch, .. }) = (side.node, &phase) {
                self.nodes[n].link_down(*link, *epoch, self.now);
            }
            if i == 0 && matches!(phase, Phase::Greeting(_)) {
                if let Some((n, link)) = self.conns[c].dial.take() {
                    self.nodes[n].dial_failed(link, self.now);
                }
            }
        }
        self.conns[c].wire = [Vec::new(), Vec::new()];
    }

    fn tick(&mut self) {
        self.now += Duration::from_millis(50);
        for n in 0..self.nodes.len() {
            if !self.honest[n] {
                continue;
            }
            for action in self.nodes[n].handle_timeout(self.now) {
                match action {
                    LinkAction::Dial(link) => self.dial(n, link),
                    LinkAction::Transmit(_) => {}
                    LinkAction::Close(link) => {
                        let open = self.conns.iter().position(|c| {
                            c.sides.iter().any(|s| {
                                s.node == Some(n)
                                    && matches!(s.phase, Phase::Up { link: l, .. } if l == link)
                            })
                        });
                        if let Some(c) = open {
                            self.close(c);
                        }
                    }
                }
            }
        }
        for c in 0..self.conns.len() {
            // A greeting past its own deadline is closed, as the driver does.
            let late = self.conns[c].sides.iter().any(|s| match &s.phase {
                Phase::Greeting(g) => g.poll_timeout().is_some_and(|at| self.now >= at),
                _ => false,
            });
            if late {
                self.close(c);
            }
        }
        // Forget closed connections.
        self.conns.retain(|c| {
            c.sides
                .iter()
                .any(|s| matches!(s.phase, Phase::Greeting(_) | Phase::Up { .. }))
        });
    }

    fn iamat(&mut self) {
        let n = self.rng.usize(..self.nodes.len());
        self.clock += 1;
        let line = format!("IAMAT c{} +1+1 {}", self.rng.u8(..20), self.clock);
        let t = Timestamp::new(self.clock, 0).unwrap();
        self.nodes[n].client_line(line.as_bytes(), t, &mut Vec::new());
    }

    fn check_nothing_forged(&self, seed: u64) {
        for node in &self.nodes {
            for line in node.lines() {
                assert!(
                    !line.windows(7).any(|w| w == b"forged-"),
                    "seed {seed}: {} stored a forged record: {}",
                    String::from_utf8_lossy(node.name()),
                    String::from_utf8_lossy(&line)
                );
            }
        }
    }

    fn step(&mut self) {
        match self.rng.u8(..10) {
            0..=2 => self.iamat(),
            3 if self.active => self.attack_greeting(),
            _ => {}
        }
        for c in 0..self.conns.len() {
            self.deliver(c);
            self.run_conn(c);
        }
        self.tick();
    }
}

fn run(seed: u64, steps: usize) {
    let mut sim = Sim::new(seed);
    for _ in 0..steps {
        sim.step();
        sim.check_nothing_forged(seed);
    }
    // The adversary stops: links come back and every node converges.
    sim.active = false;
    for _ in 0..400 {
        sim.step_quiet();
        sim.check_nothing_forged(seed);
    }
    let want: Vec<Vec<u8>> = sorted(&sim.nodes[0]);
    for node in &sim.nodes[1..] {
        assert_eq!(
            sorted(node),
            want,
            "seed {seed}: {} did not converge",
            String::from_utf8_lossy(node.name())
        );
    }
    assert!(sim.forged > 0, "seed {seed}: the adversary forged nothing");
}

impl Sim {
    /// A step with no new updates and no attacks, to let the herd settle.
    fn step_quiet(&mut self) {
        for c in 0..self.conns.len() {
            self.deliver(c);
            self.run_conn(c);
        }
        self.tick();
    }
}

fn sorted(node: &Node) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = node.lines().collect();
    v.sort();
    v
}

#[test]
fn no_forged_record_is_ever_stored_and_the_herd_converges() {
    if let Some(seed) = std::env::var("HERD_ADV_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        run(seed, 300);
        return;
    }
    for seed in 0..60 {
        run(seed, 300);
    }
}

/// The bounds the honest servers run with in the insider's simulation.
const CAP: usize = 60;
const FUTURE: Duration = Duration::from_secs(60);
const MAX_ID: usize = 32;
const BUDGET: u64 = 60 * 200;

/// The insider's identity: the herd's member Alford, compromised (the simulation does not run it).
const INSIDER: usize = 0;
const BRAVO: usize = 1;

impl Sim {
    fn with_insider(seed: u64) -> Sim {
        let mut sim = Sim::new(seed);
        let limits = NodeLimits {
            max_future: FUTURE,
            max_clients: CAP,
            max_client_id: MAX_ID,
            max_cache_bytes: BUDGET,
            ..NodeLimits::default()
        };
        sim.nodes = std::mem::take(&mut sim.nodes)
            .into_iter()
            .map(|n| n.with_limits(limits))
            .collect();
        sim.honest[INSIDER] = false;
        sim.active = false; // no adversary on the wire: the insider is the attacker here
        sim
    }

    /// The insider's link to Bravo, if a connection is open.
    fn insider_conn(&self) -> Option<usize> {
        self.conns
            .iter()
            .position(|c| matches!(c.sides[0].phase, Phase::Insider { .. }))
    }

    /// The insider greets Bravo as Alford, proving the herd's secret.
    fn insider_dial(&mut self) {
        let me = Node::new(NAMES[INSIDER], vec![NAMES[BRAVO].into()]);
        let mut hello = Vec::new();
        let g = Greeting::dial(
            me.name(),
            NAMES[BRAVO].as_bytes(),
            0,
            &self.keyring,
            0,
            &mut hello,
        );
        let acceptor = Greeting::accept(self.nodes[BRAVO].name(), &self.keyring);
        self.conns.push(Conn {
            sides: [
                Side {
                    node: None,
                    phase: Phase::Insider {
                        greeting: Some(g),
                        sealer: None,
                    },
                    input: BytesMut::new(),
                },
                Side {
                    node: Some(BRAVO),
                    phase: Phase::Greeting(acceptor),
                    input: BytesMut::new(),
                },
            ],
            wire: [Vec::new(), vec![hello]],
            dial: None,
        });
    }

    /// One of the insider's attacks, as lines in its channel: a pin, a fill, a freeze, ids too long,
    /// records from far ahead, and greetings again as Alford while its link is up (a take-over).
    fn insider_step(&mut self) {
        let me = Node::new(NAMES[INSIDER], vec![NAMES[BRAVO].into()]);
        // Every greeting of the insider under way goes on (a second one is a take-over attempt).
        for c in 0..self.conns.len() {
            let mut out = Vec::new();
            let side = &mut self.conns[c].sides[0];
            let Phase::Insider {
                greeting: greeting @ Some(_),
                sealer,
            } = &mut side.phase
            else {
                continue;
            };
            if let Some(g) = greeting {
                match g.feed(&mut side.input, &me, self.now, &mut out) {
                    Verdict::Pending => {}
                    Verdict::Established(est) => {
                        *sealer = Some(est.channel.sealer);
                        *greeting = None;
                    }
                    Verdict::Failed(f) => panic!("the insider's greeting failed: {f:?}"),
                }
            }
            if !out.is_empty() {
                self.conns[c].wire[1].push(out);
            }
        }
        let up = self.conns.iter().position(|c| {
            matches!(
                c.sides[0].phase,
                Phase::Insider {
                    sealer: Some(_),
                    ..
                }
            ) && matches!(c.sides[1].phase, Phase::Up { .. })
        });
        let Some(c) = up else {
            if self.insider_conn().is_none() {
                self.insider_dial();
            }
            return;
        };
        let side = &mut self.conns[c].sides[0];
        side.input.clear(); // what Bravo sends it: read and dropped
        let clock = self.clock;
        let mut lines = String::new();
        match self.rng.u8(..6) {
            0 => {
                let k = self.rng.u8(..20);
                lines.push_str(&format!(
                    "AT Charlie +0.000000000 h{k} +1+1 18446744073709551615.999999999\n"
                ));
                lines.push_str(&format!(
                    "AT Alford +0.000000000 h{k} +1+1 {}\n",
                    clock + 10_000
                ));
            }
            1 => {
                for _ in 0..40 {
                    self.forged += 1;
                    lines.push_str(&format!(
                        "AT Alford +0.000000000 i{} +1+1 {clock}\n",
                        self.forged
                    ));
                }
            }
            2 => {
                lines.push_str("HERD-ROOT 9 0000000000000009 0000000000000001\n");
                for _ in 0..50 {
                    lines.push_str(if self.rng.bool() {
                        "HERD-IDS -\n"
                    } else {
                        "HERD-IDS - AAAAAA\n"
                    });
                }
            }
            3 => lines.push_str(&format!(
                "AT Alford +0.000000000 {} +1+1 {clock}\n",
                "x".repeat(MAX_ID + 1)
            )),
            4 => {
                self.insider_dial();
                return;
            }
            _ => lines.push_str("HERD-WANT - AAAAAA\nHERD-FP - AAAAAA\nnonsense\n"),
        }
        let c = self.insider_conn().unwrap();
        if let Phase::Insider {
            sealer: Some(sealer),
            ..
        } = &mut self.conns[c].sides[0].phase
        {
            let mut out = Vec::new();
            sealer.seal(lines.as_bytes(), &mut out);
            self.conns[c].wire[1].push(out);
        }
    }

    /// An honest client at Bravo or Charlie: one of twenty clients moves.
    fn honest_iamat(&mut self, latest: &mut std::collections::HashMap<String, Vec<u8>>, k: u8) {
        let n = 1 + self.rng.usize(..2);
        self.clock += 1;
        let client = format!("h{k}");
        let line = format!("IAMAT {client} +1+1 {}", self.clock);
        let (mut out, wall) = (Vec::new(), self.wall());
        self.nodes[n].client_line(line.as_bytes(), wall, &mut out);
        assert!(
            out.starts_with(b"AT "),
            "an honest client was refused: {}",
            String::from_utf8_lossy(&out)
        );
        out.pop();
        latest.insert(client, out);
    }

    /// The insider's oracle, after every step: no honest server holds a record past a bound, and no
    /// greeting of the insider replaced its own live link (a take-over).
    fn check_bounds(&self, seed: u64) {
        let live = self.nodes[BRAVO].epoch(0);
        for c in &self.conns {
            if let (Phase::Insider { .. }, Phase::Up { epoch, .. }) =
                (&c.sides[0].phase, &c.sides[1].phase)
            {
                assert_eq!(
                    Some(*epoch),
                    live,
                    "seed {seed}: a greeting replaced a live link"
                );
            }
        }
        let ahead = self.wall().as_nanos() + (FUTURE + SKEW_ALLOWANCE).as_nanos() as i128;
        for n in (0..NAMES.len()).filter(|&n| self.honest[n]) {
            let node = &self.nodes[n];
            assert!(
                node.len() <= CAP,
                "seed {seed}: {} holds {} clients",
                NAMES[n],
                node.len()
            );
            assert!(
                node.cache_bytes() <= BUDGET,
                "seed {seed}: {} past its byte budget",
                NAMES[n]
            );
            for line in node.lines() {
                let r = AtRecord::parse(&line).unwrap();
                assert!(
                    r.client.len() <= MAX_ID,
                    "seed {seed}: an id too long is held"
                );
                assert!(
                    r.time.value().as_nanos() <= ahead,
                    "seed {seed}: {} holds a record from the future: {}",
                    NAMES[n],
                    String::from_utf8_lossy(&line)
                );
            }
        }
    }
}

/// What one run of the insider came to, for the oracle over all seeds.
#[derive(Default)]
struct Outcome {
    refused: bool,
    broken: bool,
}

fn run_insider(seed: u64, steps: usize) -> Outcome {
    let mut sim = Sim::with_insider(seed);
    let mut latest = std::collections::HashMap::new();
    // The honest clients first, while nothing attacks (past the cap, only known clients update:
    // a client new to the herd once an insider filled it is refused, as the cap says).
    for k in 0..20 {
        sim.honest_iamat(&mut latest, k);
        sim.step_quiet();
    }
    for _ in 0..steps {
        if sim.rng.u8(..3) == 0 {
            let k = sim.rng.u8(..20);
            sim.honest_iamat(&mut latest, k);
        }
        sim.insider_step();
        let before = sim.nodes[BRAVO].epoch(0);
        for c in 0..sim.conns.len() {
            sim.deliver(c);
            sim.run_conn(c);
        }
        // A quarantined name links up with no greeting: a link-up happens only once it ended.
        let after = sim.nodes[BRAVO].epoch(0);
        if after.is_some() && after != before {
            let status = sim.nodes[BRAVO].link_status(0);
            assert!(
                status.counts.quarantines == 0 || status.quarantined_until.is_none(),
                "seed {seed}: the insider linked up while its name was quarantined"
            );
        }
        // The insider's link output is bounded: Bravo never queues more for it than its cache.
        if let Some(epoch) = sim.nodes[BRAVO].epoch(0) {
            let _ = epoch;
            let status = sim.nodes[BRAVO].link_status(0);
            assert!(status.queue <= CAP, "seed {seed}: {} queued", status.queue);
        }
        sim.tick();
        sim.check_bounds(seed);
    }
    // The insider stops: the honest servers agree on every honest client's newest record.
    if let Some(c) = sim.insider_conn() {
        sim.close(c);
    }
    for _ in 0..200 {
        sim.step_quiet();
    }
    sim.check_bounds(seed);
    for (client, line) in &latest {
        for n in [1, 2] {
            assert_eq!(
                sim.nodes[n].get(client.as_bytes()).as_deref(),
                Some(&line[..]),
                "seed {seed}: {} lost the honest record of {client}",
                NAMES[n]
            );
        }
    }
    // Every run faults soon (a pin, an id too long, a freeze): the insider's name is quarantined,
    // so its attacks come in short bursts between quarantines, not as a steady load.
    let counts = sim.nodes[BRAVO].link_status(0).counts;
    assert!(
        counts.quarantines > 0,
        "seed {seed}: the insider was never quarantined"
    );
    Outcome {
        refused: sim.nodes[BRAVO].peer_refusals().total() > 0,
        broken: counts.sync_broken > 0,
    }
}

#[test]
fn an_insider_holding_the_secret_cannot_pin_fill_or_freeze_the_herd() {
    if let Some(seed) = std::env::var("HERD_ADV_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        run_insider(seed, 300);
        return;
    }
    let (mut refused, mut broken) = (false, false);
    for seed in 0..20 {
        let o = run_insider(seed, 300);
        refused |= o.refused;
        broken |= o.broken;
    }
    // Quarantine or not, each kind of attack met its rule in some run.
    assert!(refused, "the insider's records were never refused");
    assert!(broken, "no freeze was ever cut short");
}
