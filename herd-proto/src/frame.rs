//! Line framing without a runtime: find the next protocol line at the front of a buffer.
//!
//! [`Framer`] applies the protocol's framing rules (PROTOCOL.md §1) to any buffer a caller fills —
//! a blocking socket, another async runtime, a test — and says where the next line is, as
//! `httparse` says where a request ends. [`HerdCodec`](crate::HerdCodec) (feature `codec`) is this
//! framer wrapped for tokio.
//!
//! - A line ends at `\n`; a `\r` just before it is not part of the line. At the end of the stream
//!   ([`Framer::finish`]) the rest of the buffer is a last line.
//! - Lines of white space only are skipped.
//! - A line longer than the limit is reported once, with its first `max_length` bytes
//!   ([`Frame::TooLong`]); the framer then skips the rest of it, up to its `\n`, and carries on with
//!   the lines after it (as tokio-util's `LinesCodec` does). The herd server instead answers
//!   `? ` + the head and closes the connection, as the protocol says: that is the caller's choice.
//!
//! # Example
//! ```
//! use herd_proto::{Frame, Framer, Message};
//!
//! let mut framer = Framer::new(4096);
//! let mut buf = b"\nIAMAT kiwi +34-118 1\r\nWHATSAT ki".to_vec();
//! match framer.next(&buf) {
//!     Frame::Line { line, consumed } => {
//!         assert!(Message::parse(&buf[line]).is_ok());
//!         buf.drain(..consumed);
//!     }
//!     other => panic!("{other:?}"),
//! }
//! // The rest is not a whole line yet: read more, and call again.
//! assert_eq!(framer.next(&buf), Frame::Partial { consumed: 0 });
//! ```

use core::ops::Range;

/// The default longest line, in bytes without the terminator (PROTOCOL.md §1).
pub const DEFAULT_MAX_LINE: usize = 4096;

/// What the front of a buffer holds. Ranges index the buffer given to [`Framer::next`]; after using
/// them, the caller must drop exactly `consumed` bytes from the front before the next call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// A whole line that is not blank: `line` is its content, without the terminator.
    Line {
        /// Where the line's content is.
        line: Range<usize>,
        /// Bytes to drop: skipped blank lines, the line and its terminator.
        consumed: usize,
    },
    /// No whole line yet: drop `consumed` bytes (blank lines, or part of an over-long line being
    /// skipped), read more, and call again.
    Partial {
        /// Bytes to drop.
        consumed: usize,
    },
    /// The line at the front is longer than the limit: `head` is its first `max_length` bytes.
    /// After `consumed` bytes are dropped, the framer skips the rest of that line by itself.
    TooLong {
        /// The first `max_length` bytes of the line.
        head: Range<usize>,
        /// Bytes to drop.
        consumed: usize,
    },
}

/// Splits a byte stream into protocol lines, with a finite line limit. Keeps how far it has
/// searched, so a line that arrives in many small reads is not scanned again from its start.
#[derive(Debug, Clone)]
pub struct Framer {
    max_length: usize,
    /// How far the front of the buffer has been searched for `\n`.
    searched: usize,
    /// Skipping the rest of an over-long line.
    discarding: bool,
}

impl Default for Framer {
    fn default() -> Self {
        Framer::new(DEFAULT_MAX_LINE)
    }
}

/// What [`Framer::scan`] found at the front of the buffer: a blank line to skip (up to `next`),
/// or what to tell the caller.
enum LineScan {
    Blank { next: usize },
    Frame(Frame),
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|&b| crate::is_whitespace(b))
}

impl Framer {
    /// A framer whose lines hold at most `max_length` bytes (at least 1), not counting the terminator.
    pub fn new(max_length: usize) -> Self {
        Framer {
            max_length: max_length.max(1),
            searched: 0,
            discarding: false,
        }
    }

    /// The limit in force.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Finds the next line in `buf` (the bytes received and not yet dropped).
    pub fn next(&mut self, buf: &[u8]) -> Frame {
        let mut pos = 0;
        loop {
            if self.discarding {
                match memchr::memchr(b'\n', &buf[pos..]) {
                    Some(i) => {
                        self.discarding = false;
                        self.searched = 0;
                        pos += i + 1;
                    }
                    None => {
                        return Frame::Partial {
                            consumed: buf.len(),
                        }
                    }
                }
            }
            match self.scan(buf, pos) {
                LineScan::Blank { next } => pos = next,
                LineScan::Frame(frame) => return frame,
            }
        }
    }

    /// Looks for the end of the line starting at `pos`, no further than a line of the limit (with
    /// its `\r\n`) could reach, so an endless line costs at most the limit to find out.
    #[inline]
    fn scan(&mut self, buf: &[u8], pos: usize) -> LineScan {
        let rest = &buf[pos..];
        // A line of `max_length` bytes may still be followed by `\r\n`.
        let window = rest.len().min(self.max_length.saturating_add(2));
        let start = self.searched.min(window);
        match memchr::memchr(b'\n', &rest[start..window]) {
            Some(i) => {
                self.searched = 0;
                self.ended(rest, pos, start + i)
            }
            None if window > self.max_length.saturating_add(1) => {
                self.searched = 0;
                LineScan::Frame(self.too_long_unended(buf, pos, window))
            }
            None => {
                self.searched = window;
                LineScan::Frame(Frame::Partial { consumed: pos })
            }
        }
    }

    /// The line at `pos` whose `\n` is at `end` in `rest`: blank (skipped), too long, or a line.
    #[inline]
    fn ended(&self, rest: &[u8], pos: usize, end: usize) -> LineScan {
        let content = if end > 0 && rest[end - 1] == b'\r' {
            end - 1
        } else {
            end
        };
        if content > self.max_length {
            return LineScan::Frame(Frame::TooLong {
                head: pos..pos + self.max_length,
                consumed: pos + end + 1,
            });
        }
        if is_blank(&rest[..content]) {
            return LineScan::Blank {
                next: pos + end + 1,
            };
        }
        LineScan::Frame(Frame::Line {
            line: pos..pos + content,
            consumed: pos + end + 1,
        })
    }

    /// The line at `pos` runs past the limit with no `\n` in `window`: it is reported now, and the
    /// rest of it is dropped, up to its `\n` if it is here, else all of it, and the skipping goes
    /// on in later calls.
    fn too_long_unended(&mut self, buf: &[u8], pos: usize, window: usize) -> Frame {
        let consumed = match memchr::memchr(b'\n', &buf[pos + window..]) {
            Some(j) => pos + window + j + 1,
            None => {
                self.discarding = true;
                buf.len()
            }
        };
        Frame::TooLong {
            head: pos..pos + self.max_length,
            consumed,
        }
    }

    /// Like [`Framer::next`] at the end of the stream: what is left after the last `\n` is a last
    /// line. Returns `Partial` when nothing is left.
    pub fn finish(&mut self, buf: &[u8]) -> Frame {
        let consumed = match self.next(buf) {
            Frame::Partial { consumed } => consumed,
            other => return other,
        };
        self.searched = 0;
        let rest = &buf[consumed..];
        if core::mem::take(&mut self.discarding) || rest.is_empty() {
            return Frame::Partial {
                consumed: buf.len(),
            };
        }
        let content = rest.len() - usize::from(rest.ends_with(b"\r"));
        if content > self.max_length {
            return Frame::TooLong {
                head: consumed..consumed + self.max_length,
                consumed: buf.len(),
            };
        }
        if is_blank(&rest[..content]) {
            return Frame::Partial {
                consumed: buf.len(),
            };
        }
        Frame::Line {
            line: consumed..consumed + content,
            consumed: buf.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// Every line `framer` yields from `input` fed in one piece, with `TooLong` as `?` + head.
    fn lines(max: usize, input: &[u8]) -> Vec<Vec<u8>> {
        let mut framer = Framer::new(max);
        let mut buf = input.to_vec();
        let mut out = Vec::new();
        loop {
            match framer.finish(&buf) {
                Frame::Line { line, consumed } => {
                    out.push(buf[line].to_vec());
                    buf.drain(..consumed);
                }
                Frame::TooLong { head, consumed } => {
                    let mut l = b"?".to_vec();
                    l.extend_from_slice(&buf[head]);
                    out.push(l);
                    buf.drain(..consumed);
                }
                Frame::Partial { .. } => return out,
            }
        }
    }

    #[test]
    fn terminators_blanks_and_the_last_line() {
        assert_eq!(
            lines(10, b"a\r\n \t\n\nb\nc"),
            [&b"a"[..], b"b", b"c"].map(<[u8]>::to_vec)
        );
        assert_eq!(lines(10, b"a\r"), [b"a".to_vec()]);
    }

    #[test]
    fn an_over_long_line_is_reported_once_and_the_next_lines_kept() {
        assert_eq!(
            lines(3, b"abcdefgh\nxy\nabcd\r\nabc\r\n"),
            [&b"?abc"[..], b"xy", b"?abc", b"abc"].map(<[u8]>::to_vec)
        );
        // In pieces: the long line's tail arrives later and is skipped.
        let mut f = Framer::new(3);
        assert!(matches!(
            f.next(b"abcdef"),
            Frame::TooLong { consumed: 6, .. }
        ));
        assert_eq!(f.next(b"gh"), Frame::Partial { consumed: 2 });
        assert_eq!(
            f.next(b"ij\nok\n"),
            Frame::Line {
                line: 3..5,
                consumed: 6
            }
        );
    }
}
