//! The line decoder fed arbitrary bytes in arbitrary chunks: the lines it yields do not depend on how
//! the input was split, and no yielded line is longer than the limit or holds a `\n`.
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use herd_proto::{CodecError, HerdCodec};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

#[derive(Debug, Arbitrary)]
struct Input {
    max: u8,
    data: Vec<u8>,
    cuts: Vec<u8>,
}

/// Every line, then `Err(head)` if the stream ended in an over-long line.
fn run(max: usize, data: &[u8], cuts: &[u8]) -> Vec<Result<Vec<u8>, Vec<u8>>> {
    let mut codec = HerdCodec::new_with_max_length(max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = data;
    let mut cuts = cuts.iter().cycle();
    loop {
        let n = if rest.is_empty() {
            0
        } else {
            usize::from(*cuts.next().unwrap_or(&255)).clamp(1, rest.len())
        };
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            let step = if rest.is_empty() {
                codec.decode_eof(&mut buf)
            } else {
                codec.decode(&mut buf)
            };
            match step {
                Ok(Some(line)) => {
                    assert!(line.len() <= max);
                    assert!(!line.contains(&b'\n'));
                    out.push(Ok(line.to_vec()));
                }
                Ok(None) => break,
                Err(CodecError::LineTooLong { head, .. }) => {
                    assert_eq!(head.len(), max);
                    out.push(Err(head.to_vec()));
                    return out;
                }
                Err(e) => panic!("{e}"),
            }
        }
        if rest.is_empty() {
            return out;
        }
    }
}

fuzz_target!(|input: Input| {
    let max = usize::from(input.max).max(1);
    let whole = run(max, &input.data, &[255]);
    let chunked = run(
        max,
        &input.data,
        if input.cuts.is_empty() {
            &[1]
        } else {
            &input.cuts
        },
    );
    assert_eq!(whole, chunked);
});
