//! The line framer: terminators, EOF, white-space lines and the line limit (after tokio-util's
//! `lines_decoder_max_length`).

use bytes::BytesMut;
use futures::StreamExt;
use herd_proto::{CodecError, HerdCodec, DEFAULT_MAX_LINE};
use tokio_util::codec::{Decoder, FramedRead};

fn decode_all(codec: &mut HerdCodec, input: &[u8]) -> Vec<Result<Vec<u8>, String>> {
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(line)) => out.push(Ok(line.to_vec())),
            Ok(None) => break,
            Err(CodecError::LineTooLong { head, .. }) => {
                out.push(Err(String::from_utf8_lossy(&head).into_owned()));
                return out;
            }
            Err(e) => panic!("{e}"),
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(line)) => out.push(Ok(line.to_vec())),
            Ok(None) => break,
            Err(CodecError::LineTooLong { head, .. }) => {
                out.push(Err(String::from_utf8_lossy(&head).into_owned()));
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    out
}

fn ok(s: &str) -> Result<Vec<u8>, String> {
    Ok(s.as_bytes().to_vec())
}

#[test]
fn terminators_blank_lines_and_eof() {
    let mut c = HerdCodec::new();
    assert_eq!(
        decode_all(&mut c, b"a\nb\r\n\n \t\r\n\x0b\x0c\nc\r\r\nlast"),
        vec![ok("a"), ok("b"), ok("c\r"), ok("last")]
    );
    assert_eq!(decode_all(&mut c, b"last\r"), vec![ok("last")]);
    assert_eq!(decode_all(&mut c, b"   "), vec![]);
    assert_eq!(decode_all(&mut c, b"  x  \n"), vec![ok("  x  ")]);
}

#[test]
fn max_length() {
    const MAX: usize = 6;
    // A codec is the state of one stream: each input below is a new stream.
    let c = &mut || HerdCodec::new_with_max_length(MAX);
    assert_eq!(decode_all(&mut c(), b"123456\n"), vec![ok("123456")]);
    assert_eq!(decode_all(&mut c(), b"123456\r\n"), vec![ok("123456")]);
    assert_eq!(decode_all(&mut c(), b"123456"), vec![ok("123456")]);
    assert_eq!(decode_all(&mut c(), b"123456\r"), vec![ok("123456")]);
    assert_eq!(
        decode_all(&mut c(), b"1234567\n"),
        vec![Err("123456".into())]
    );
    assert_eq!(decode_all(&mut c(), b"1234567"), vec![Err("123456".into())]);
    assert_eq!(
        decode_all(&mut c(), b"a\n123456\rX\n"),
        vec![ok("a"), Err("123456".into())]
    );
    assert_eq!(
        decode_all(&mut c(), b"12\n1234567890123\nzz\n"),
        vec![ok("12"), Err("123456".into())]
    );
    assert_eq!(HerdCodec::new().max_length(), DEFAULT_MAX_LINE);
}

#[test]
fn after_an_over_long_line_the_next_lines_are_kept() {
    // As tokio-util's LinesCodec: the error once, then the rest of that line is skipped.
    let mut c = HerdCodec::new_with_max_length(4);
    let mut buf = BytesMut::from(&b"ok\n0123456789"[..]);
    assert_eq!(c.decode(&mut buf).unwrap().as_deref(), Some(&b"ok"[..]));
    let Err(CodecError::LineTooLong { head, max: 4 }) = c.decode(&mut buf) else {
        panic!("not too long")
    };
    assert_eq!(&head[..], b"0123");
    buf.extend_from_slice(b"abc\nnext\r\n");
    assert_eq!(c.decode(&mut buf).unwrap().as_deref(), Some(&b"next"[..]));
    assert!(buf.is_empty());
}

#[test]
fn byte_at_a_time_equals_all_at_once() {
    let input = b"IAMAT a +1+1 1\r\nWHATSAT a 10 5\n\n  \nIAMAT b +2+2 2";
    let mut c = HerdCodec::new_with_max_length(32);
    let whole = decode_all(&mut c, input);
    let mut c = HerdCodec::new_with_max_length(32);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for &b in input {
        buf.extend_from_slice(&[b]);
        while let Some(line) = c.decode(&mut buf).unwrap() {
            got.push(Ok(line.to_vec()));
        }
    }
    while let Some(line) = c.decode_eof(&mut buf).unwrap() {
        got.push(Ok(line.to_vec()));
    }
    assert_eq!(got, whole);
    assert_eq!(got.len(), 3);
}

#[tokio::test]
async fn framed_read_over_a_stream() {
    let data: &[u8] = b"IAMAT kiwi +34-118 1\nWHATSAT kiwi 10 5";
    let mut lines = FramedRead::new(data, HerdCodec::new());
    let mut seen = Vec::new();
    while let Some(line) = lines.next().await {
        let line = line.unwrap();
        seen.push(herd_proto::Message::parse(&line).unwrap().into_owned());
    }
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].to_bytes(), b"WHATSAT kiwi 10 5");
}
