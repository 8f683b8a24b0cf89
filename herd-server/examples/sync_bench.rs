//! Reconciliation against the old whole-cache catch-up, in one process: two nodes of N clients that
//! differ in d of them are linked, and the lines between them are carried until both are quiet.
//! Prints, per case, the round trips (a round trip is one turn each way), the bytes each way and the
//! time to `synced` (CPU time of the one thread that runs both nodes, parsing every line: no network,
//! and other work on the machine is not counted).
//!
//! `cargo run --release -p herd-server --example sync_bench -- [N] [d…]` (bench/sync.sh runs it).

use std::time::Instant;

/// CPU seconds this thread has used: the box the bench runs on may be shared, and wall time would
/// count the other work.
fn cpu() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

use herd_server::node::Node;

/// Client `i`'s record at client time `t`.
fn line(server: &str, i: usize, t: u32) -> String {
    format!("AT {server} +0.100000000 client{i:07} +34.068930-118.445127 {t}")
}

fn node(name: &str, peer: &str) -> Node {
    Node::new(name, vec![peer.into(), "Loader".into()])
}

fn store(n: &mut Node, l: &str) {
    n.restore(l.as_bytes());
}

/// A with N clients; B with the same but `d` of them different (half newer on each side); B empty
/// when `empty`.
fn pair(n: usize, d: usize, empty: bool) -> (Node, Node) {
    let (mut a, mut b) = (node("A", "B"), node("B", "A"));
    // B learnt its clients in another order than A (as two real servers do), so neither side's
    // stream arrives in the other's memory order.
    let mut at_b = Vec::with_capacity(if empty { 0 } else { n });
    for i in 0..n {
        let differs = i < d;
        let (ta, tb) = match (differs, i % 2) {
            (false, _) => (1, 1),
            (true, 0) => (2, 1),
            (true, _) => (1, 2),
        };
        store(&mut a, &line("A", i, ta));
        if !empty {
            at_b.push(line(if ta == tb { "A" } else { "B" }, i, tb));
        }
    }
    let len = at_b.len();
    for k in 0..len {
        store(&mut b, &at_b[(k * 7919) % len]);
    }
    (a, b)
}

struct Run {
    /// Bytes per kind of line (`AT`, `HERD-FP`, …), each way.
    kinds: std::collections::BTreeMap<String, (u64, u64)>,
    half_trips: u32,
    ab: u64,
    ba: u64,
    records: (u64, u64),
    secs: f64,
}

/// Link-up, then each side in turn writes everything it has and the other reads it.
fn run(a: &mut Node, b: &mut Node) -> Run {
    let start = cpu();
    let now = Instant::now();
    let (ea, eb) = (a.link_up(0, now), b.link_up(0, now));
    let mut r = Run {
        kinds: Default::default(),
        half_trips: 0,
        ab: 0,
        ba: 0,
        records: (0, 0),
        secs: 0.0,
    };
    let mut out = Vec::with_capacity(1 << 20);
    let mut quiet_turns = 0;
    let mut forward = true;
    while quiet_turns < 2 {
        let (from, fe, to, bytes, recs) = if forward {
            (&mut *a, ea, &mut *b, &mut r.ab, &mut r.records.0)
        } else {
            (&mut *b, eb, &mut *a, &mut r.ba, &mut r.records.1)
        };
        let kinds = &mut r.kinds;
        let mut wrote = false;
        loop {
            out.clear();
            let n = from.poll_transmit(0, fe, &mut out, 4096);
            if out.is_empty() {
                if from.working(0, fe) {
                    continue;
                }
                break;
            }
            wrote = true;
            *recs += n as u64;
            *bytes += out.len() as u64;
            for l in out.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
                let kind = l.split(|&c| c == b' ').next().unwrap_or_default();
                let k = kinds
                    .entry(String::from_utf8_lossy(kind).into_owned())
                    .or_default();
                if forward {
                    k.0 += l.len() as u64 + 1;
                } else {
                    k.1 += l.len() as u64 + 1;
                }
            }
            let te = to.epoch(0).expect("the link is up");
            let input = to.handle_link_input(
                0,
                te,
                &out,
                Instant::now(),
                herd_proto::Timestamp::now(),
                |_| {},
            );
            assert_eq!((input.consumed, input.close), (out.len(), None));
        }
        if wrote {
            r.half_trips += 1;
            quiet_turns = 0;
        } else {
            quiet_turns += 1;
        }
        forward = !forward;
    }
    r.secs = cpu() - start;
    assert!(!a.reconciling(0) && !b.reconciling(0));
    r
}

/// Today's catch-up before reconciliation: each side streams its whole cache to the other.
fn full_stream(a: &mut Node, b: &mut Node) -> (u64, f64) {
    let start = cpu();
    let mut bytes = 0;
    let mut buf = Vec::with_capacity(1 << 20);
    let from_a: Vec<Vec<u8>> = a.lines().collect();
    let from_b: Vec<Vec<u8>> = b.lines().collect();
    for (lines, to) in [(from_a, &mut *b), (from_b, &mut *a)] {
        let epoch = to.link_up(0, Instant::now());
        for chunk in lines.chunks(4096) {
            buf.clear();
            for l in chunk {
                buf.extend_from_slice(l);
                buf.push(b'\n');
            }
            bytes += buf.len() as u64;
            to.handle_link_input(
                0,
                epoch,
                &buf,
                Instant::now(),
                herd_proto::Timestamp::now(),
                |_| {},
            );
        }
    }
    (bytes, cpu() - start)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.replace('_', "").parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(1_000_000);
    let ds: Vec<usize> = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        vec![0, 1, 100, 10_000, n]
    };
    println!("| N | d | round trips | bytes A→B | bytes B→A | records A→B / B→A | time to synced | today's full stream (bytes both ways, time) |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut cases: Vec<(usize, bool)> = ds.iter().map(|&d| (d, false)).collect();
    cases.push((n, true));
    let mut breakdown = Vec::new();
    for (d, empty) in cases {
        let (mut a, mut b) = pair(n, d, empty);
        let r = run(&mut a, &mut b);
        let same = a.len() == b.len() && {
            let mut x: Vec<Vec<u8>> = a.lines().collect();
            let mut y: Vec<Vec<u8>> = b.lines().collect();
            x.sort_unstable();
            y.sort_unstable();
            x == y
        };
        assert!(same, "d = {d}: the two caches differ after reconciliation");
        let (mut a, mut b) = pair(n, d, empty);
        let (full_bytes, full_secs) = full_stream(&mut a, &mut b);
        let label = if empty {
            format!("{d} (B empty)")
        } else {
            d.to_string()
        };
        println!(
            "| {n} | {label} | {} | {} | {} | {} / {} | {:.3} s | {} B, {:.3} s |",
            r.half_trips.div_ceil(2),
            r.ab,
            r.ba,
            r.records.0,
            r.records.1,
            r.secs,
            full_bytes,
            full_secs
        );
        let kinds: Vec<String> = r
            .kinds
            .iter()
            .map(|(k, (ab, ba))| format!("{k} {ab} / {ba}"))
            .collect();
        breakdown.push(format!("| {label} | {} |", kinds.join(", ")));
    }
    println!();
    println!("| d | bytes by kind of line, A→B / B→A |");
    println!("| --- | --- |");
    for b in breakdown {
        println!("{b}");
    }
}
