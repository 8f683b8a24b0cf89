//! Line framing for tokio: a `Decoder` that yields whole lines and an `Encoder` for messages.
//!
//! The decoder yields each line as raw [`Bytes`] rather than a parsed message because an invalid line
//! must be echoed byte for byte (`? <line>`): framing and parsing are separate steps, and the caller
//! decides what an invalid line means (a client gets `? …`, a peer link is closed).

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::frame::{Frame, Framer};
use crate::message::{AtRecord, Message};
use crate::peer::PeerMessage;

/// Frames a byte stream into protocol lines: [`Framer`] for tokio.
///
/// - A line ends at `\n`; a `\r` before it is dropped too. End of stream ends a last line.
/// - Lines of white space only are skipped (the protocol ignores them).
/// - A line longer than the maximum is an error carrying its first `max_length` bytes. The decoder
///   then skips the rest of that line and goes on with the next ones, as tokio-util's `LinesCodec`
///   does, for a caller that calls `decode` again. (`FramedRead` ends the stream at the first error;
///   the herd server answers `? ` + the head and closes the connection, as the protocol says.) The
///   limit is always finite.
#[derive(Debug, Clone, Default)]
pub struct HerdCodec {
    framer: Framer,
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
    /// A codec with the default limit of [`DEFAULT_MAX_LINE`](crate::DEFAULT_MAX_LINE) bytes.
    ///
    /// # Example
    /// ```
    /// use herd_proto::tokio_util::codec::Decoder;
    /// use herd_proto::{bytes::BytesMut, HerdCodec, Message};
    ///
    /// let mut codec = HerdCodec::new();
    /// let mut buf = BytesMut::from(&b"WHATSAT kiwi 10 5\r\nIAMAT"[..]);
    /// let line = codec.decode(&mut buf).unwrap().unwrap();
    /// assert!(matches!(Message::parse(&line), Ok(Message::WhatsAt(_))));
    /// assert_eq!(codec.decode(&mut buf).unwrap(), None); // `IAMAT` is not a whole line yet
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// A codec whose lines may hold at most `max_length` bytes (at least 1), not counting the terminator.
    pub fn new_with_max_length(max_length: usize) -> Self {
        HerdCodec {
            framer: Framer::new(max_length),
        }
    }

    /// The limit in force.
    pub fn max_length(&self) -> usize {
        self.framer.max_length()
    }

    fn take(&self, frame: Frame, buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        let (range, consumed, too_long) = match frame {
            Frame::Line { line, consumed } => (line, consumed, false),
            Frame::TooLong { head, consumed } => (head, consumed, true),
            Frame::Partial { consumed } => {
                buf.advance(consumed);
                return Ok(None);
            }
        };
        let mut taken = buf.split_to(consumed);
        taken.truncate(range.end);
        taken.advance(range.start);
        let taken = taken.freeze();
        if too_long {
            return Err(CodecError::LineTooLong {
                head: taken,
                max: self.max_length(),
            });
        }
        Ok(Some(taken))
    }
}

impl Decoder for HerdCodec {
    type Item = Bytes;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        let frame = self.framer.next(buf);
        self.take(frame, buf)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        let frame = self.framer.finish(buf);
        self.take(frame, buf)
    }
}

/// Writes the line and its `\n` straight into the frame buffer.
fn put_line(dst: &mut BytesMut, write: impl FnOnce(&mut BytesMut)) {
    dst.reserve(96);
    write(dst);
    dst.extend_from_slice(b"\n");
}

impl Encoder<&Message<'_>> for HerdCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &Message<'_>, dst: &mut BytesMut) -> Result<(), CodecError> {
        put_line(dst, |v| item.write_into(v));
        Ok(())
    }
}

impl Encoder<&AtRecord<'_>> for HerdCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &AtRecord<'_>, dst: &mut BytesMut) -> Result<(), CodecError> {
        put_line(dst, |v| item.write_into(v));
        Ok(())
    }
}

impl Encoder<&PeerMessage<'_>> for HerdCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &PeerMessage<'_>, dst: &mut BytesMut) -> Result<(), CodecError> {
        put_line(dst, |v| item.write_into(v));
        Ok(())
    }
}
