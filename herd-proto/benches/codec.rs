//! Codec throughput beside a floor: splitting the same bytes on `\n` and on white space, doing nothing
//! else. `cargo bench -p herd-proto --features codec`.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herd_proto::{AtRecord, HerdCodec, Message, Timestamp};
use tokio_util::codec::Decoder;

const IAMAT: &[u8] = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450";
const WHATSAT: &[u8] = b"WHATSAT kiwi.cs.ucla.edu 10 5";

/// The floor: find the fields of a line by white space and touch each, nothing more.
fn split_fields(line: &[u8]) -> usize {
    line.split(|&b| herd_proto::is_whitespace(b))
        .filter(|f| !f.is_empty())
        .map(|f| f.len())
        .sum()
}

fn lines(n: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(n * 70);
    for i in 0..n {
        match i % 4 {
            3 => buf.extend_from_slice(WHATSAT),
            _ => {
                buf.extend_from_slice(b"IAMAT client");
                buf.extend_from_slice(i.to_string().as_bytes());
                buf.extend_from_slice(b" +34.068930-118.445127 1479413884.392014450");
            }
        }
        buf.push(b'\n');
    }
    buf
}

fn per_line(c: &mut Criterion) {
    let mut g = c.benchmark_group("line");
    g.throughput(Throughput::Bytes(IAMAT.len() as u64));
    g.bench_function("floor_split_ws_iamat", |b| {
        b.iter(|| split_fields(black_box(IAMAT)))
    });
    g.bench_function("parse_iamat", |b| {
        b.iter(|| Message::parse(black_box(IAMAT)).is_ok())
    });
    g.throughput(Throughput::Bytes(WHATSAT.len() as u64));
    g.bench_function("floor_split_ws_whatsat", |b| {
        b.iter(|| split_fields(black_box(WHATSAT)))
    });
    g.bench_function("parse_whatsat", |b| {
        b.iter(|| Message::parse(black_box(WHATSAT)).is_ok())
    });
    let Ok(Message::IAmAt(m)) = Message::parse(IAMAT) else {
        unreachable!()
    };
    let record = AtRecord::new(b"Alford", m, Timestamp::new(1479413884, 655887836).unwrap());
    let mut out = Vec::with_capacity(128);
    g.throughput(Throughput::Bytes(record.to_bytes().len() as u64));
    g.bench_function("encode_at", |b| {
        b.iter(|| {
            out.clear();
            black_box(&record).write_to(&mut out);
            out.len()
        })
    });
    g.finish();
}

fn stream(c: &mut Criterion) {
    let input = lines(1_000_000);
    let mut g = c.benchmark_group("stream_1M_lines");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.bench_function("floor_split_newline", |b| {
        b.iter(|| {
            black_box(&input)
                .split(|&b| b == b'\n')
                .map(|l| l.len())
                .sum::<usize>()
        })
    });
    g.bench_function("floor_split_newline_and_ws", |b| {
        b.iter(|| {
            black_box(&input)
                .split(|&b| b == b'\n')
                .map(split_fields)
                .sum::<usize>()
        })
    });
    g.bench_function("decode_only", |b| {
        b.iter(|| {
            let mut codec = HerdCodec::new();
            let mut buf = BytesMut::from(&input[..]);
            let mut n = 0;
            while let Ok(Some(line)) = codec.decode(&mut buf) {
                n += line.len();
            }
            n
        })
    });
    g.bench_function("decode_and_parse", |b| {
        b.iter(|| {
            let mut codec = HerdCodec::new();
            let mut buf = BytesMut::from(&input[..]);
            let mut n = 0;
            while let Ok(Some(line)) = codec.decode(&mut buf) {
                n += usize::from(Message::parse(&line).is_ok());
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, per_line, stream);
criterion_main!(benches);
