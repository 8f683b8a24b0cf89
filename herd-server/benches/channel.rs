//! The peer channel's cost per byte: sealing and opening a catch-up's worth of AT lines with the Noise
//! channel the greeting sets up, against the plain channel (a copy), and one whole greeting.
//!
//! `cargo bench -p herd-server --bench channel`

use std::time::Instant;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herd_server::node::handshake::{Established, Greeting, Keyring, Verdict};
use herd_server::node::Node;

/// Runs a greeting between a dialer and an acceptor over perfect pipes.
fn link(keyring: &Keyring) -> (Established, Established) {
    let (a, b) = (
        Node::new("A", vec!["B".into()]),
        Node::new("B", vec!["A".into()]),
    );
    let now = Instant::now();
    let mut to_b = Vec::new();
    let mut dialer = Greeting::dial(b"A", b"B", 0, keyring, 0, &mut to_b);
    let mut acceptor = Greeting::accept(b"B", keyring);
    let (mut ab, mut ba) = (BytesMut::new(), BytesMut::new());
    let (mut ea, mut eb) = (None, None);
    for _ in 0..4 {
        ab.extend_from_slice(&to_b);
        to_b.clear();
        let mut to_a = Vec::new();
        if eb.is_none() {
            if let Verdict::Established(e) = acceptor.feed(&mut ab, &b, now, &mut to_a) {
                eb = Some(e);
            }
        }
        ba.extend_from_slice(&to_a);
        if ea.is_none() {
            if let Verdict::Established(e) = dialer.feed(&mut ba, &a, now, &mut to_b) {
                ea = Some(e);
            }
        }
    }
    (ea.expect("dialer up"), eb.expect("acceptor up"))
}

fn channel(c: &mut Criterion) {
    // 1,024 records, as one write of the link's writer.
    let mut batch = Vec::new();
    for i in 0..1024 {
        batch.extend_from_slice(
            format!(
                "AT Alford +0.000123456 client-{i:07} +34.068930-118.445127 1479413884.392014450\n"
            )
            .as_bytes(),
        );
    }
    let mut g = c.benchmark_group("peer channel");
    g.throughput(Throughput::Bytes(batch.len() as u64));
    for (name, keyring) in [
        ("plain", Keyring::default()),
        ("noise", Keyring::new(&["secret"])),
    ] {
        let (a, b) = link(&keyring);
        let (mut sealer, mut opener) = (a.channel.sealer, b.channel.opener);
        let mut wire = Vec::with_capacity(batch.len() * 2);
        let mut input = BytesMut::with_capacity(batch.len() * 2);
        let mut plain = BytesMut::with_capacity(batch.len() * 2);
        g.bench_function(format!("seal+open 1024 records, {name}"), |bench| {
            bench.iter(|| {
                wire.clear();
                sealer.seal(&batch, &mut wire);
                input.extend_from_slice(&wire);
                plain.clear();
                opener.open(&mut input, &mut plain).unwrap();
                assert_eq!(plain.len(), batch.len());
            })
        });
    }
    g.finish();
    c.bench_function("greeting with a secret, both sides", |bench| {
        let keyring = Keyring::new(&["secret"]);
        bench.iter(|| link(&keyring))
    });
}

criterion_group!(benches, channel);
criterion_main!(benches);
