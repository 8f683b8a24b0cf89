//! Line framing for tokio: a `Decoder` that yields whole lines and an `Encoder` for messages.
//!
//! The decoder yields each line as raw [`Bytes`] rather than a parsed message because an invalid line
//! must be echoed byte for byte (`? <line>`): framing and parsing are separate steps, and the caller
//! decides what an invalid line means (a client gets `? …`, a peer link is closed).

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::message::{AtRecord, Message};
use crate::parse::is_ws;
use crate::peer::PeerMessage;

/// The default longest line, in bytes without the terminator (PROTOCOL.md §1).
pub const DEFAULT_MAX_LINE: usize = 4096;

/// Frames a byte stream into protocol lines.
///
/// - A line ends at `\n`; a `\r` before it is dropped too. End of stream ends a last line.
/// - Lines of white space only are skipped (the protocol ignores them).
/// - A line longer than the maximum is an error carrying its first `max_length` bytes: the protocol
///   answers `? ` + those bytes and closes the connection. The limit is always finite.
#[derive(Debug, Clone)]
pub struct HerdCodec {
    max_length: usize,
    /// How far the buffer has been searched for `\n` already, so a line that arrives in many small
    /// reads is not re-scanned from its start each time.
    next_index: usize,
}

/// What can go wrong while framing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A line exceeded the maximum length; `head` holds its first `max_length` bytes.
    #[error("line longer than {max} bytes")]
    LineTooLong {
        /// The first `max` bytes of the line.
        head: Bytes,
        /// The limit in force.
        max: usize,
    },
    /// The underlying stream failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl HerdCodec {
    /// A codec with the default limit of [`DEFAULT_MAX_LINE`] bytes.
    pub fn new() -> Self {
        Self::new_with_max_length(DEFAULT_MAX_LINE)
    }

    /// A codec whose lines may hold at most `max_length` bytes (at least 1), not counting the terminator.
    pub fn new_with_max_length(max_length: usize) -> Self {
        HerdCodec {
            max_length: max_length.max(1),
            next_index: 0,
        }
    }

    /// The limit in force.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    fn too_long(&mut self, buf: &mut BytesMut) -> CodecError {
        self.next_index = 0;
        let head = buf.split_to(self.max_length).freeze();
        buf.clear();
        CodecError::LineTooLong {
            head,
            max: self.max_length,
        }
    }
}

impl Default for HerdCodec {
    fn default() -> Self {
        Self::new()
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|&b| is_ws(b))
}

impl Decoder for HerdCodec {
    type Item = Bytes;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        loop {
            // A line of `max_length` bytes may still be followed by `\r\n`.
            let window = buf.len().min(self.max_length.saturating_add(2));
            let start = self.next_index.min(window);
            match memchr::memchr(b'\n', &buf[start..window]) {
                Some(i) => {
                    let end = start + i;
                    self.next_index = 0;
                    let content = if end > 0 && buf[end - 1] == b'\r' {
                        end - 1
                    } else {
                        end
                    };
                    if content > self.max_length {
                        return Err(self.too_long(buf));
                    }
                    let mut line = buf.split_to(end + 1);
                    line.truncate(content);
                    if is_blank(&line) {
                        continue;
                    }
                    return Ok(Some(line.freeze()));
                }
                None if window > self.max_length.saturating_add(1) => {
                    return Err(self.too_long(buf))
                }
                None => {
                    self.next_index = window;
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        if let Some(line) = self.decode(buf)? {
            return Ok(Some(line));
        }
        self.next_index = 0;
        if buf.is_empty() {
            return Ok(None);
        }
        let mut content = buf.len();
        if buf[content - 1] == b'\r' {
            content -= 1;
        }
        if content > self.max_length {
            return Err(self.too_long(buf));
        }
        let mut line = buf.split_to(buf.len());
        line.truncate(content);
        if is_blank(&line) {
            return Ok(None);
        }
        Ok(Some(line.freeze()))
    }
}

/// Writes the line and its `\n` into the frame buffer.
fn put_line(dst: &mut BytesMut, write: impl FnOnce(&mut Vec<u8>)) {
    let mut v = Vec::with_capacity(96);
    write(&mut v);
    v.push(b'\n');
    dst.extend_from_slice(&v);
}

impl Encoder<&Message<'_>> for HerdCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &Message<'_>, dst: &mut BytesMut) -> Result<(), CodecError> {
        put_line(dst, |v| item.write_to(v));
        Ok(())
    }
}

impl Encoder<&AtRecord<'_>> for HerdCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &AtRecord<'_>, dst: &mut BytesMut) -> Result<(), CodecError> {
        put_line(dst, |v| item.write_to(v));
        Ok(())
    }
}

impl Encoder<&PeerMessage<'_>> for HerdCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &PeerMessage<'_>, dst: &mut BytesMut) -> Result<(), CodecError> {
        put_line(dst, |v| item.write_to(v));
        Ok(())
    }
}
