//! The longest the node is held by one peer line: each of an insider's worst lines, fed through the
//! entry points the driver calls under the node's lock ([`Node::handle_link_input`], then
//! [`Node::poll_transmit`] until the work the line asked for is done), against a node holding
//! 20,000 and 100,000 clients, 4,000 of them with ids chosen to share one leaf of the trie. What is
//! timed is the longest single call (one hold of the lock), not their sum. The driver hands the node
//! what one read brought (at most about 16 KB), so a read of records is measured as 16 KB of them.
//! Each call is timed in the thread's CPU time, so that a shared machine's scheduler taking the core
//! mid-call (as a lock holder's own work would not) does not count.
//!
//! `cargo bench -p herd-server --bench worst_line`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use herd_proto::{KeyRange, PeerMessage, Timestamp, CELL_BYTES, MAX_CELLS, MAX_CHUNK};
use herd_server::node::limits::NodeLimits;
use herd_server::node::sync::key;
use herd_server::node::Node;

const ROOT: &[u8] = b"HERD-ROOT 9 0000000000000009 0000000000000001\n";

/// Clients whose ids were chosen so their keys start with three zero hex digits: one leaf of the
/// trie (it has three levels at both sizes).
const CRAFTED: usize = 4_000;

/// A node at its client cap, so every new client a peer sends is refused (the fill past the cap).
fn node(clients: usize) -> Node {
    let mut n = Node::new("B", vec!["A".into(), "C".into()]).with_limits(NodeLimits {
        max_clients: clients,
        ..NodeLimits::default()
    });
    let wall = Timestamp::new(1_000_000, 0).unwrap();
    let mut out = Vec::new();
    for i in 0..clients - CRAFTED {
        out.clear();
        n.client_line(format!("IAMAT c{i} +1+1 {i}").as_bytes(), wall, &mut out);
    }
    let mut made = 0;
    for i in 0u64.. {
        if made == CRAFTED {
            break;
        }
        let id = format!("x{i}");
        if key(id.as_bytes()) >> 52 == 0 {
            out.clear();
            n.client_line(format!("IAMAT {id} +1+1 {i}").as_bytes(), wall, &mut out);
            made += 1;
        }
    }
    n
}

/// A whole `HERD-IBF` table of every key, as big as a table may be, its last line apart.
fn table() -> (Vec<u8>, Vec<u8>) {
    let total = MAX_CELLS - MAX_CELLS % 3;
    let mut lines = Vec::new();
    let mut last = Vec::new();
    let mut at = 0u32;
    while at < total {
        let n = (MAX_CHUNK as u32).min(total - at);
        let line = if at + n == total {
            &mut last
        } else {
            &mut lines
        };
        PeerMessage::Cells {
            range: KeyRange::ALL,
            total,
            at,
            cells: vec![0; n as usize * CELL_BYTES],
        }
        .write_to(line);
        line.push(b'\n');
        at += n;
    }
    (lines, last)
}

/// The CPU time this thread has used.
fn cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// The longest single call `line` costs on a fresh link-up of `n`, after `before` (its work done
/// first, not timed): handing it over, then each write until the work it asked for is done.
fn hold(n: &mut Node, before: &[u8], line: &[u8]) -> Duration {
    let now = Instant::now();
    let wall = Timestamp::new(1_000_000, 0).unwrap();
    let e = n.link_up(0, now);
    let mut out = Vec::new();
    n.handle_link_input(0, e, before, now, wall, |_| {});
    while n.poll_transmit(0, e, &mut out, 4096) > 0 || n.working(0, e) {
        out.clear();
    }
    let t = cpu();
    let input = n.handle_link_input(0, e, line, now, wall, |_| {});
    let mut took = cpu() - t;
    std::hint::black_box(input);
    loop {
        out.clear();
        let t = cpu();
        let wrote = n.poll_transmit(0, e, &mut out, 1024);
        took = took.max(cpu() - t);
        if wrote == 0 && out.is_empty() && !n.working(0, e) {
            break;
        }
    }
    while n.poll_event().is_some() {}
    n.link_down(0, e, now);
    took
}

fn bench(c: &mut Criterion) {
    let (table_lines, table_last) = table();
    let mut pins = Vec::new();
    let mut short = Vec::new();
    let mut long = Vec::new();
    for i in 0.. {
        let line = format!("AT C +0.000000000 p{i} +1+1 18446744073709551615\n");
        if pins.len() + line.len() > 16 << 10 {
            break;
        }
        pins.extend_from_slice(line.as_bytes());
    }
    for i in 0.. {
        let line = format!("AT A +0.000000000 s{i} +1+1 5\n");
        if short.len() + line.len() > 16 << 10 {
            break;
        }
        short.extend_from_slice(line.as_bytes());
    }
    for i in 0..4 {
        long.extend_from_slice(format!("AT A +0.000000000 {i:0>4000} +1+1 5\n").as_bytes());
    }
    let mut root_table = ROOT.to_vec();
    root_table.extend_from_slice(&table_lines);
    let mut crafted_fp = Vec::new();
    PeerMessage::Fingerprints {
        range: KeyRange::new(3, 0).unwrap(),
        children: [1; 16],
    }
    .write_to(&mut crafted_fp);
    crafted_fp.push(b'\n');
    let cases: [(&str, &[u8], &[u8]); 8] = [
        ("root then HERD-IDS - (whole cache)", ROOT, b"HERD-IDS -\n"),
        ("HERD-IDS - AAAAAA (split)", ROOT, b"HERD-IDS - AAAAAA\n"),
        ("HERD-FP - (16 ranges)", ROOT, b"HERD-FP - AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA\n"),
        ("last line of a whole-range HERD-IBF table", &root_table, &table_last),
        ("HERD-FP of a crafted leaf (4,000 clients)", ROOT, &crafted_fp),
        ("16 KB of pins", b"", &pins),
        ("16 KB of new short ids", b"", &short),
        ("16 KB of new 4,000-byte ids", b"", &long),
    ];
    for clients in [20_000, 100_000] {
        let mut n = node(clients);
        let mut group = c.benchmark_group(format!("worst line, {clients} clients"));
        group.sample_size(20);
        for (name, before, line) in cases {
            group.bench_function(name, |b| {
                b.iter_custom(|iters| (0..iters).map(|_| hold(&mut n, before, line)).sum())
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
