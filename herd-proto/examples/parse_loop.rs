//! Parses one IAMAT line many times: a target for `perf record` when tuning the parser.
//! `cargo run --release -p herd-proto --example parse_loop -- 20000000`

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let line = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450";
    let mut ok = 0u64;
    let start = std::time::Instant::now();
    for _ in 0..n {
        ok += u64::from(herd_proto::Message::parse(std::hint::black_box(line)).is_ok());
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    println!("{ok} parsed, {ns:.1} ns/line");
}
