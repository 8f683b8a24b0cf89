//! The longest the node is held by one peer line: each of an insider's worst lines, fed through the
//! entry point the driver calls under the node's lock ([`Node::handle_link_input`]), against a node
//! holding 20,000 and 100,000 clients. The driver hands the node what one read brought (at most about
//! 16 KB), so a read of records is measured as 16 KB of them.
//!
//! `cargo bench -p herd-server --bench worst_line`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use herd_proto::{KeyRange, PeerMessage, Timestamp, CELL_BYTES, MAX_CELLS, MAX_CHUNK};
use herd_server::node::limits::NodeLimits;
use herd_server::node::Node;

const ROOT: &[u8] = b"HERD-ROOT 9 0000000000000009 0000000000000001\n";

/// A node at its client cap, so every new client a peer sends is refused (the fill past the cap).
fn node(clients: usize) -> Node {
    let mut n = Node::new("B", vec!["A".into(), "C".into()]).with_limits(NodeLimits {
        max_clients: clients,
        ..NodeLimits::default()
    });
    let wall = Timestamp::new(1_000_000, 0).unwrap();
    let mut out = Vec::new();
    for i in 0..clients {
        out.clear();
        n.client_line(format!("IAMAT c{i} +1+1 {i}").as_bytes(), wall, &mut out);
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

/// Times `line` on a fresh link-up of `n`, after `before` (not timed).
fn hold(n: &mut Node, before: &[u8], line: &[u8]) -> Duration {
    let now = Instant::now();
    let wall = Timestamp::new(1_000_000, 0).unwrap();
    let e = n.link_up(0, now);
    n.handle_link_input(0, e, before, now, wall, |_| {});
    let t = Instant::now();
    let input = n.handle_link_input(0, e, line, now, wall, |_| {});
    let took = t.elapsed();
    std::hint::black_box(input);
    let mut out = Vec::new();
    while n.poll_transmit(0, e, &mut out, 4096) > 0 {
        out.clear();
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
    let cases: [(&str, &[u8], &[u8]); 7] = [
        ("root then HERD-IDS - (whole cache)", ROOT, b"HERD-IDS -\n"),
        ("HERD-IDS - AAAAAA (split)", ROOT, b"HERD-IDS - AAAAAA\n"),
        ("HERD-FP - (16 ranges)", ROOT, b"HERD-FP - AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA AAAAAA\n"),
        ("last line of a whole-range HERD-IBF table", &root_table, &table_last),
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
