//! Server-to-server messages: the herd's own peer wire format (PROTOCOL.md §5).
//!
//! A peer link is an ordinary TCP connection to a neighbour's listening address whose first line is a
//! greeting. It is line based like the client protocol, with the same white space rules:
//!
//! ```text
//! HERD-HELLO 4 <name> <to> <handshake>   dialer → acceptor: version, who I am, whom I dial, a key share
//! HERD-WELCOME <name> <handshake>         acceptor → dialer: who I am, my key share
//! HERD-REFUSED <reason>                   either side, then it closes: e.g. `unknown-peer`, `bad-proof`
//! AT <server> <diff> <client> <location> <time>   a record, exactly the fields of its AT line
//! HERD-ROOT <count> <fp> <salt>           reconciliation opens: how many records I hold, their
//!                                         fingerprint, and the salt of this reconciliation's short ids
//! HERD-FP <range> <fps>                   the short fingerprints of my records in the 16 sub-ranges of
//!                                         <range> (base64url of 16 × 4 bytes)
//! HERD-IDS <range> [<ids>]                the short ids of all my records in <range> (base64url of
//!                                         4 bytes each; none: I have none there)
//! HERD-WANT <range> <ids>                 send me your records in <range> with these short ids
//! HERD-IBF <range> <cells> <at> <cells…>  cells <at>… of an invertible Bloom filter of my records in
//!                                         <range> that has <cells> cells (base64url of 12 bytes each)
//! HERD-OVER                               end of my turn of reconciliation: your turn
//! HERD-SYNCED <count>                     end of reconciliation: `count` records were sent in it
//! HERD-PING / HERD-PONG                   keep-alive
//! ```
//!
//! `handshake` is the hex of a handshake message of the server's secure channel (in the herd server, a
//! Noise `NNpsk0` message keyed from the herd secret and bound to the version and both names), or `-` in
//! a herd without a secret. The greeting lines are plain text; with a secret, everything after them is
//! carried in the encrypted channel, as lines of this same grammar.
//!
//! # Reconciliation (version 4)
//!
//! After the greeting the two servers reconcile their records, then flood new records as they come.
//! Every client has a *key*, a 64-bit hash of its id, and every record a *hash* of its AT line (both
//! XXH3-64 with seed 0). A *fingerprint* of a set of records is the sum of their hashes modulo 2⁶⁴ (`0`
//! for none), so it can be kept up to date as records are stored. A `<range>` is the set of keys that
//! start with the given hex digits (1 to 16 of them), or `-` for every key; `HERD-FP` lists its 16
//! sub-ranges in order, digit `0` to `f`.
//!
//! The opener's `HERD-ROOT` carries the full 64-bit fingerprint (lowercase hex) and a `<salt>` (hex)
//! chosen for this reconciliation. Every later line uses 32-bit values salted with it, so that bytes
//! follow the difference and a chance collision of short values does not repeat in the next
//! reconciliation:
//! - a *short fingerprint* is `0` for a range with no record and otherwise the low 32 bits of
//!   XXH3-64 (seed `salt`) of the fingerprint's 8 little-endian bytes (`1` if that is `0`);
//! - a record's *short id* is the low 32 bits of XXH3-64 (seed `salt`) of its hash's 8 little-endian
//!   bytes; a client's *short key* the same of its key with seed `salt` + 1;
//! - 32-bit values are written big-endian, packed, as unpadded base64url (RFC 4648 §5).
//!
//! An `HERD-IBF` table of `n` cells (a multiple of 3) holds an item for each record of the range: its
//! client's short key, its short id and its *hint*, the low 8 bits of its client time in whole seconds
//! (13 bytes, in that order, the 32-bit values big-endian). A cell is 12 bytes: the number of items
//! added modulo 256 (1 byte), the XOR of their short keys and short ids (8 bytes), of their hints (1
//! byte) and of their checks (2 bytes, the low 16 bits of XXH3-64 with seed `salt` + 2 of the item).
//! An item goes into one cell of each third of the table: cell `j·n/3 + (h_j mod n/3)` for `j` = 0, 1,
//! 2, where `h_j` is bits `21·j` to `21·j + 20` of XXH3-64 (seed `salt` + 3) of the item. A table is
//! sent in lines of at most [`MAX_CHUNK`] cells, in order.
//!
//! The side that dialled opens with `HERD-ROOT`, the `HERD-FP` of `-`, and `HERD-OVER`; from then on
//! the sides take turns, each turn ending with `HERD-OVER`. In its turn a side answers every line of
//! the other's turn:
//! - a `HERD-FP` fingerprint equal to its own needs nothing; one that differs is answered with `HERD-FP`
//!   of that range when it holds many records there, or with `HERD-IDS` when it holds few; a range that
//!   the other holds nothing of (fingerprint `0`) is answered with all its records there (a new server,
//!   `HERD-ROOT 0 0 <salt>`, gets the whole cache as one plain stream). When the sub-ranges that differ
//!   are so many that most hold several differing records (an estimate from how many of them were equal),
//!   it may instead answer a whole group of them at once with the `HERD-IBF` of the range two digits
//!   shorter that holds them, sized for the records it expects to differ there;
//! - `HERD-IDS` is answered with the records the other's list lacks, and a `HERD-WANT` of the ids it
//!   lacks itself; `HERD-WANT` with those records;
//! - a complete `HERD-IBF` is subtracted from the same table of its own records and decoded. When that
//!   works, the receiver knows every item on one side only: it sends its records of those, and a
//!   `HERD-WANT` of the other's; where both sides hold a different record of one client, only the one
//!   whose hint is greater (compared modulo 256: a difference below 128 is greater) is asked for or sent
//!   (both on equal hints). When decoding fails, it answers with its `HERD-FP` of the range.
//!
//! Hints can be wrong (client times more than two minutes apart), so a side that receives, during a
//! reconciliation, a record older than the one it holds sends its own back on that link.
//!
//! A side that has answered a turn and asks nothing (no `HERD-FP`, `HERD-IDS`, `HERD-IBF` or
//! `HERD-WANT`) ends with `HERD-SYNCED` instead of `HERD-OVER`; the reconciliation is then over on both
//! sides. A receiver keeps the greater of two records of a client, as for any flooded record, so a
//! client whose records differ ends with the greater on both. The dialling side opens a `HERD-ROOT`
//! again periodically on a live link: equal roots cost one line each way (`HERD-ROOT`, `HERD-SYNCED 0`).
//!
//! A greeting of another version fails to parse with [`ErrorKind::Version`](crate::ErrorKind::Version),
//! so a server can refuse it cleanly (`HERD-REFUSED version`) instead of treating it as a client line: a
//! version 3 server, which sends 64-bit hex fingerprints and ids, is refused rather than misread.

#[allow(unused_imports)]
use crate::prelude::*;
use crate::Sink;
use alloc::borrow::Cow;

use crate::error::ParseError;
use crate::message::AtRecord;
use crate::parse;

/// The peer protocol version this crate speaks, sent in `HERD-HELLO`.
pub const PEER_VERSION: u32 = 4;

/// Most short ids in one `HERD-IDS` or `HERD-WANT` line; a range holding more is split further.
pub const MAX_IDS: usize = 64;

/// Bytes of one cell of an `HERD-IBF` table.
pub const CELL_BYTES: usize = 12;

/// Most cells in one `HERD-IBF` line: 21 cells are 336 base64 characters, so the line fits the
/// smallest peer line limit a server can be given (384 bytes).
pub const MAX_CHUNK: usize = 21;

/// Most cells of one `HERD-IBF` table.
pub const MAX_CELLS: u32 = 1 << 16;

/// A range of the reconciliation key space: every 64-bit key whose first [`KeyRange::digits`] hex
/// digits are those of [`KeyRange::prefix`].
///
/// # Format
/// ```text
/// -      every key
/// a3     keys 0xa300000000000000 ..= 0xa3ffffffffffffff
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyRange {
    digits: u8,
    prefix: u64,
}

impl KeyRange {
    /// Every key.
    pub const ALL: KeyRange = KeyRange {
        digits: 0,
        prefix: 0,
    };

    /// The keys that start with the first `digits` hex digits of `prefix` (the rest of `prefix` is
    /// ignored); `None` for more than 16 digits.
    pub fn new(digits: u8, prefix: u64) -> Option<KeyRange> {
        (digits <= 16).then(|| KeyRange {
            digits,
            prefix: prefix & Self::mask(digits),
        })
    }

    fn mask(digits: u8) -> u64 {
        match digits {
            0 => 0,
            d => u64::MAX << (64 - 4 * u32::from(d)),
        }
    }

    /// How many leading hex digits are fixed (0 to 16).
    pub fn digits(self) -> u8 {
        self.digits
    }

    /// The fixed digits, left-aligned (the smallest key of the range).
    pub fn prefix(self) -> u64 {
        self.prefix
    }

    /// The greatest key of the range.
    pub fn last(self) -> u64 {
        self.prefix | !Self::mask(self.digits)
    }

    /// Whether `key` is in the range.
    pub fn contains(self, key: u64) -> bool {
        key & Self::mask(self.digits) == self.prefix
    }

    /// Sub-range `digit` (0 to 15) of the 16 one digit longer; `None` for a range of 16 digits.
    pub fn child(self, digit: u8) -> Option<KeyRange> {
        (self.digits < 16 && digit < 16).then(|| KeyRange {
            digits: self.digits + 1,
            prefix: self.prefix | (u64::from(digit) << (60 - 4 * u32::from(self.digits))),
        })
    }

    /// Appends the wire form (`-`, or the fixed hex digits).
    pub fn write_to(self, dst: &mut Vec<u8>) {
        self.write_into(dst);
    }

    pub(crate) fn write_into(self, dst: &mut impl Sink) {
        if self.digits == 0 {
            dst.byte(b'-');
        }
        for i in 0..self.digits {
            let nibble = (self.prefix >> (60 - 4 * u32::from(i))) & 0xf;
            dst.byte(HEX[nibble as usize]);
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Appends `bytes` as unpadded base64url.
pub(crate) fn write_b64(bytes: &[u8], dst: &mut impl Sink) {
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let v = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..=chunk.len() {
            dst.byte(B64[((v >> (18 - 6 * i)) & 0x3f) as usize]);
        }
    }
}

/// The bytes of unpadded base64url `text`; `None` if it is not that (or has stray low bits, so that
/// every byte string has one spelling).
pub(crate) fn read_b64(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in text {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (acc == 0).then_some(out)
}

fn write_u32s(values: &[u32], dst: &mut impl Sink) {
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for v in values {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    write_b64(&bytes, dst);
}

/// Appends `v` as lowercase hex without leading zeros (`0` for zero).
pub(crate) fn write_hex(v: u64, dst: &mut impl Sink) {
    let digits = (64 - v.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        dst.byte(HEX[((v >> (4 * i)) & 0xf) as usize]);
    }
}

/// Appends `n` in decimal.
fn write_number(n: impl Into<u128>, dst: &mut impl Sink) {
    crate::time::write_u128(n.into(), dst);
}

/// Appends each of `words` after a space, as it is: the greetings' names, handshakes and reasons.
fn write_words(words: &[&[u8]], dst: &mut impl Sink) {
    for w in words {
        dst.byte(b' ');
        dst.put(w);
    }
}

/// `HERD-ROOT <count> <fp> <salt>`.
fn write_root(count: u64, fingerprint: u64, salt: u64, dst: &mut impl Sink) {
    dst.put(b"HERD-ROOT ");
    write_number(count, dst);
    dst.byte(b' ');
    write_hex(fingerprint, dst);
    dst.byte(b' ');
    write_hex(salt, dst);
}

/// `HERD-IBF <range> <total> <at> <cells>`.
fn write_cells(range: KeyRange, total: u32, at: u32, cells: &[u8], dst: &mut impl Sink) {
    dst.put(b"HERD-IBF ");
    range.write_into(dst);
    dst.byte(b' ');
    write_number(total, dst);
    dst.byte(b' ');
    write_number(at, dst);
    dst.byte(b' ');
    write_b64(cells, dst);
}

/// `HERD-IDS <range> [<ids>]` or `HERD-WANT <range> <ids>` (`command` ends with its space): no
/// hashes, no field.
fn write_ids(command: &[u8], range: KeyRange, hashes: &[u32], dst: &mut impl Sink) {
    dst.put(command);
    range.write_into(dst);
    if !hashes.is_empty() {
        dst.byte(b' ');
        write_u32s(hashes, dst);
    }
}

/// One line on a peer link.
///
/// `#[non_exhaustive]`: the peer protocol grows (new greetings, reconciliation messages); match with a
/// wildcard arm.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerMessage<'a> {
    /// `HERD-HELLO <version> <name> <to> <handshake>`: the dialer's greeting.
    Hello {
        /// Peer protocol version; this crate speaks [`PEER_VERSION`].
        version: u32,
        /// The dialing server's name.
        name: Cow<'a, [u8]>,
        /// The name of the server it means to reach.
        to: Cow<'a, [u8]>,
        /// The first handshake message, hex (`-` without a secret).
        handshake: Cow<'a, [u8]>,
    },
    /// `HERD-WELCOME <name> <handshake>`: the acceptor's answer.
    Welcome {
        /// The accepting server's name.
        name: Cow<'a, [u8]>,
        /// The answering handshake message, hex (`-` without a secret).
        handshake: Cow<'a, [u8]>,
    },
    /// `HERD-REFUSED <reason>`: the link is refused and will be closed.
    Refused {
        /// A one-word reason.
        reason: Cow<'a, [u8]>,
    },
    /// `AT …`: a record.
    Record(AtRecord<'a>),
    /// `HERD-SYNCED <count>`: reconciliation is over.
    Synced {
        /// How many records the sender sent in it.
        count: u64,
    },
    /// `HERD-ROOT <count> <fp> <salt>`: opens a reconciliation with the sender's whole key space.
    Root {
        /// How many records (clients) the sender holds.
        count: u64,
        /// The fingerprint of all of them.
        fingerprint: u64,
        /// The salt of this reconciliation's short fingerprints, ids and keys.
        salt: u64,
    },
    /// `HERD-FP <range> <fps>`: the short fingerprints of the sender's records in the 16 sub-ranges of
    /// `range` (which has fewer than 16 digits).
    Fingerprints {
        /// The range split.
        range: KeyRange,
        /// One short fingerprint per sub-range, digit 0 to 15 (`0`: no record there).
        children: [u32; 16],
    },
    /// `HERD-IDS <range> [<ids>]`: the short ids of every record the sender holds in `range` (at most
    /// [`MAX_IDS`]; none: it holds none there).
    Ids {
        /// The range listed.
        range: KeyRange,
        /// The records' short ids.
        hashes: Vec<u32>,
    },
    /// `HERD-WANT <range> <ids>`: asks for the receiver's records in `range` with these short ids (1 to
    /// [`MAX_IDS`]).
    Want {
        /// The range the ids were listed or decoded for.
        range: KeyRange,
        /// The records' short ids.
        hashes: Vec<u32>,
    },
    /// `HERD-IBF <range> <cells> <at> <cells…>`: cells `at`… of the sender's table of `range`, which
    /// has `total` cells (a multiple of 3, at most [`MAX_CELLS`]).
    Cells {
        /// The range the table holds.
        range: KeyRange,
        /// How many cells the whole table has.
        total: u32,
        /// The index of the first cell of this line.
        at: u32,
        /// 1 to [`MAX_CHUNK`] cells of [`CELL_BYTES`] each, as sent.
        cells: Vec<u8>,
    },
    /// `HERD-OVER`: the end of the sender's turn of reconciliation.
    Over,
    /// `HERD-PING`: asks for a `HERD-PONG`.
    Ping,
    /// `HERD-PONG`: answers a `HERD-PING`.
    Pong,
}

impl<'a> PeerMessage<'a> {
    /// Parses one peer line.
    ///
    /// # Errors
    /// A [`ParseError`] locating the first offending byte.
    pub fn parse(line: &'a [u8]) -> Result<Self, ParseError> {
        parse::peer_message(line)
    }

    /// Appends the wire form, without the line terminator.
    pub fn write_to(&self, dst: &mut Vec<u8>) {
        self.write_into(dst);
    }

    /// Appends the wire form: the command, then each field as its kind writes it.
    pub(crate) fn write_into(&self, dst: &mut impl Sink) {
        match self {
            PeerMessage::Hello {
                version,
                name,
                to,
                handshake,
            } => {
                dst.put(b"HERD-HELLO ");
                write_number(*version, dst);
                write_words(&[name, to, handshake], dst);
            }
            PeerMessage::Welcome { name, handshake } => {
                dst.put(b"HERD-WELCOME");
                write_words(&[name, handshake], dst);
            }
            PeerMessage::Refused { reason } => {
                dst.put(b"HERD-REFUSED");
                write_words(&[reason], dst);
            }
            PeerMessage::Record(r) => r.write_into(dst),
            PeerMessage::Synced { count } => {
                dst.put(b"HERD-SYNCED ");
                write_number(*count, dst);
            }
            PeerMessage::Root {
                count,
                fingerprint,
                salt,
            } => write_root(*count, *fingerprint, *salt, dst),
            PeerMessage::Fingerprints { range, children } => {
                dst.put(b"HERD-FP ");
                range.write_into(dst);
                dst.byte(b' ');
                write_u32s(children, dst);
            }
            PeerMessage::Cells {
                range,
                total,
                at,
                cells,
            } => write_cells(*range, *total, *at, cells, dst),
            PeerMessage::Ids { range, hashes } => write_ids(b"HERD-IDS ", *range, hashes, dst),
            PeerMessage::Want { range, hashes } => write_ids(b"HERD-WANT ", *range, hashes, dst),
            PeerMessage::Over => dst.put(b"HERD-OVER"),
            PeerMessage::Ping => dst.put(b"HERD-PING"),
            PeerMessage::Pong => dst.put(b"HERD-PONG"),
        }
    }

    /// The wire form as a new vector, without the line terminator.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(96);
        self.write_to(&mut v);
        v
    }

    /// Copies every borrowed field.
    pub fn into_owned(self) -> PeerMessage<'static> {
        let own = |c: Cow<'a, [u8]>| Cow::Owned(c.into_owned());
        match self {
            PeerMessage::Hello {
                version,
                name,
                to,
                handshake,
            } => PeerMessage::Hello {
                version,
                name: own(name),
                to: own(to),
                handshake: own(handshake),
            },
            PeerMessage::Welcome { name, handshake } => PeerMessage::Welcome {
                name: own(name),
                handshake: own(handshake),
            },
            PeerMessage::Refused { reason } => PeerMessage::Refused {
                reason: own(reason),
            },
            PeerMessage::Record(r) => PeerMessage::Record(r.into_owned()),
            PeerMessage::Synced { count } => PeerMessage::Synced { count },
            PeerMessage::Root {
                count,
                fingerprint,
                salt,
            } => PeerMessage::Root {
                count,
                fingerprint,
                salt,
            },
            PeerMessage::Cells {
                range,
                total,
                at,
                cells,
            } => PeerMessage::Cells {
                range,
                total,
                at,
                cells,
            },
            PeerMessage::Fingerprints { range, children } => {
                PeerMessage::Fingerprints { range, children }
            }
            PeerMessage::Ids { range, hashes } => PeerMessage::Ids { range, hashes },
            PeerMessage::Want { range, hashes } => PeerMessage::Want { range, hashes },
            PeerMessage::Over => PeerMessage::Over,
            PeerMessage::Ping => PeerMessage::Ping,
            PeerMessage::Pong => PeerMessage::Pong,
        }
    }
}
