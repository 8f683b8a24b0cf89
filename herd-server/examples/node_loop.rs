//! Drives the node core with IAMATs for a space of clients: a target for `perf record` when tuning
//! the hot path. `cargo run --release -p herd-server --example node_loop -- 5000000 100000`

use herd_proto::Timestamp;
use herd_server::node::Node;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000_000);
    let clients: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let mut node = Node::new("Alford", vec!["Hamilton".into()]);
    let lines: Vec<Vec<u8>> = (0..clients)
        .map(|i| format!("IAMAT bench-{i} +34.068930-118.445127 1479413884.392014450").into_bytes())
        .collect();
    let mut out = Vec::with_capacity(1 << 20);
    let start = std::time::Instant::now();
    for i in 0..n {
        out.clear();
        node.client_line(&lines[(i % clients) as usize], Timestamp::now(), &mut out);
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    println!("{} clients, {ns:.1} ns/IAMAT", node.len());
}
