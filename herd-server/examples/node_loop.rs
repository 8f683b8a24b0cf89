//! Drives the node core with IAMATs for a space of clients: a target for `perf record` when tuning
//! the hot path. `cargo run --release -p herd-server --example node_loop -- 5000000 100000`
//!
//! With a third argument `fingerprint`, does only the fingerprint's share of the same IAMATs (the
//! client's key, the new line's hash, the trie's update from the old hash it keeps: what the cache adds to keep the
//! fingerprint current), over a trie of the same size; with `frame`, the same loop without that share
//! (making each AT line and keeping it), to subtract. Run each under `valgrind --tool=callgrind` at
//! two counts: the difference of instructions over the difference of IAMATs is the cost per IAMAT,
//! set-up excluded (`bench/fingerprint.sh` part 2).

use herd_proto::{AtRecord, Timestamp};
use herd_server::node::cache::Entry;
use herd_server::node::sync::{hash, key, Sketch};
use herd_server::node::Node;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000_000);
    let clients: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let mode = args.next();
    let lines: Vec<Vec<u8>> = (0..clients)
        .map(|i| format!("IAMAT bench-{i} +34.068930-118.445127 1479413884.392014450").into_bytes())
        .collect();
    if let Some(mode) = mode.as_deref() {
        return fingerprint(n, &lines, mode == "fingerprint");
    }
    let mut node = Node::new("Alford", vec!["Hamilton".into()]);
    let mut out = Vec::with_capacity(1 << 20);
    let start = std::time::Instant::now();
    for i in 0..n {
        out.clear();
        node.client_line(&lines[(i % clients) as usize], Timestamp::now(), &mut out);
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    println!("{} clients, {ns:.1} ns/IAMAT", node.len());
}

/// The fingerprint's work for `n` IAMATs over `lines`' clients: each client's first IAMAT adds it to
/// the trie, each later one replaces its record (two line hashes and the trie's update). Without
/// `work`, only the frame around it.
fn fingerprint(n: u64, lines: &[Vec<u8>], work: bool) {
    let mut sketch = Sketch::default();
    let mut entries: Vec<Entry> = Vec::with_capacity(lines.len());
    let mut held: Vec<Vec<u8>> = Vec::with_capacity(lines.len());
    let mut at = Vec::with_capacity(256);
    let start = std::time::Instant::now();
    let mut sum = 0u64;
    for i in 0..n {
        let c = (i % lines.len() as u64) as usize;
        let rest = &lines[c]["IAMAT ".len()..];
        // The AT line this IAMAT makes (not counted apart: the IAMAT path writes it anyway).
        at.clear();
        at.extend_from_slice(b"AT Alford +0.");
        let mut d = i % 1_000_000_000;
        let digits = at.len();
        at.extend_from_slice(b"000000000 ");
        for b in at[digits..digits + 9].iter_mut().rev() {
            *b = b'0' + (d % 10) as u8;
            d /= 10;
        }
        at.extend_from_slice(rest);
        let client = &rest[..rest.iter().position(|&b| b == b' ').unwrap_or(rest.len())];
        let (k, new) = if work {
            (key(client), hash(&at))
        } else {
            (client.len() as u64, at.len() as u64)
        };
        if c < entries.len() {
            if work {
                sketch.update(c, k, new);
            }
            held[c].clone_from(&at);
        } else {
            let r = AtRecord::parse(&at).expect("an AT line");
            entries.push(Entry::new(&r, None));
            if work {
                sketch.insert(c, k, new, &entries);
            }
            held.push(at.clone());
        }
        sum = sum.wrapping_add(new);
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    println!(
        "{} clients, {ns:.1} ns/IAMAT ({}; {:x})",
        entries.len(),
        if work { "fingerprint" } else { "frame" },
        sum ^ sketch.root().fingerprint
    );
}
