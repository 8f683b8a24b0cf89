//! Server-to-server messages: the herd's own peer wire format (PROTOCOL.md §5).
//!
//! A peer link is an ordinary TCP connection to a neighbour's listening address whose first line is a
//! greeting. It is line based like the client protocol, with the same white space rules:
//!
//! ```text
//! HERD-HELLO 3 <name> <to> <handshake>   dialer → acceptor: version, who I am, whom I dial, a key share
//! HERD-WELCOME <name> <handshake>         acceptor → dialer: who I am, my key share
//! HERD-REFUSED <reason>                   either side, then it closes: e.g. `unknown-peer`, `bad-proof`
//! AT <server> <diff> <client> <location> <time>   a record, exactly the fields of its AT line
//! HERD-ROOT <count> <fp>                  reconciliation opens: how many records I hold, their fingerprint
//! HERD-FP <range> <fp0> … <fp15>          the fingerprints of my records in the 16 sub-ranges of <range>
//! HERD-IDS <range> <hash>…                the hashes of all my records in <range> (none: I have none)
//! HERD-WANT <range> <hash>…               send me your records in <range> with these hashes
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
//! # Reconciliation (version 3)
//!
//! After the greeting the two servers reconcile their records, then flood new records as they come.
//! Every client has a *key*, a 64-bit hash of its id, and every record a *hash* of its AT line (both
//! XXH3-64 with seed 0, written as lowercase hex without leading zeros). A *fingerprint* of a set of
//! records is the sum of their hashes modulo 2⁶⁴ (`0` for none), so it can be kept up to date as records
//! are stored. A `<range>` is the set of keys that start with the given hex digits (1 to 16 of them), or
//! `-` for every key; `HERD-FP` lists its 16 sub-ranges in order, digit `0` to `f`.
//!
//! The side that dialled opens with `HERD-ROOT` and `HERD-OVER`; from then on the sides take turns,
//! each turn ending with `HERD-OVER`. In its turn a side answers every line of the other's turn:
//! - a `HERD-ROOT` or `HERD-FP` fingerprint equal to its own needs nothing; one that differs is answered
//!   with `HERD-FP` of that range when it holds many records there, or with `HERD-IDS` when it holds few;
//!   a range that the other holds nothing of (fingerprint `0`) is answered with all its records there
//!   (a new server, `HERD-ROOT 0 0`, gets the whole cache as one plain stream);
//! - `HERD-IDS` is answered with the records the other's list lacks, and a `HERD-WANT` of the hashes it
//!   lacks itself; `HERD-WANT` with those records.
//!
//! A side that has answered a turn and asks nothing (no `HERD-FP`, `HERD-IDS` or `HERD-WANT`) ends with
//! `HERD-SYNCED` instead of `HERD-OVER`; the reconciliation is then over on both sides. A receiver keeps
//! the greater of two records of a client, as for any flooded record, so a client whose records differ
//! ends with the greater on both. The dialling side opens a `HERD-ROOT` again periodically on a live
//! link: equal roots cost one line each way (`HERD-ROOT`, `HERD-SYNCED 0`).
//!
//! A greeting of another version fails to parse with [`ErrorKind::Version`](crate::ErrorKind::Version),
//! so a server can refuse it cleanly (`HERD-REFUSED version`) instead of treating it as a client line: a
//! version 2 server, which streams its whole cache instead, is refused rather than misread.

#[allow(unused_imports)]
use crate::prelude::*;
use crate::Sink;
use alloc::borrow::Cow;

use crate::error::ParseError;
use crate::message::AtRecord;
use crate::parse;

/// The peer protocol version this crate speaks, sent in `HERD-HELLO`.
pub const PEER_VERSION: u32 = 3;

/// Most hashes in one `HERD-IDS` or `HERD-WANT` line; a range holding more is split further.
pub const MAX_IDS: usize = 64;

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

/// Appends `v` as lowercase hex without leading zeros (`0` for zero).
pub(crate) fn write_hex(v: u64, dst: &mut impl Sink) {
    let digits = (64 - v.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        dst.byte(HEX[((v >> (4 * i)) & 0xf) as usize]);
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
    /// `HERD-ROOT <count> <fp>`: opens a reconciliation with the sender's whole key space.
    Root {
        /// How many records (clients) the sender holds.
        count: u64,
        /// The fingerprint of all of them.
        fingerprint: u64,
    },
    /// `HERD-FP <range> <fp0> … <fp15>`: the fingerprints of the sender's records in the 16 sub-ranges
    /// of `range` (which has fewer than 16 digits).
    Fingerprints {
        /// The range split.
        range: KeyRange,
        /// One fingerprint per sub-range, digit 0 to 15.
        children: [u64; 16],
    },
    /// `HERD-IDS <range> <hash>…`: the hashes of every record the sender holds in `range` (at most
    /// [`MAX_IDS`]).
    Ids {
        /// The range listed.
        range: KeyRange,
        /// The records' hashes.
        hashes: Vec<u64>,
    },
    /// `HERD-WANT <range> <hash>…`: asks for the receiver's records in `range` with these hashes (1 to
    /// [`MAX_IDS`]).
    Want {
        /// The range the hashes were listed for.
        range: KeyRange,
        /// The records' hashes.
        hashes: Vec<u64>,
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

    pub(crate) fn write_into(&self, dst: &mut impl Sink) {
        let words: &[&[u8]] = match self {
            PeerMessage::Hello {
                version,
                name,
                to,
                handshake,
            } => {
                dst.put(b"HERD-HELLO ");
                crate::time::write_u128(u128::from(*version), dst);
                &[name, to, handshake]
            }
            PeerMessage::Welcome { name, handshake } => {
                dst.put(b"HERD-WELCOME");
                &[name, handshake]
            }
            PeerMessage::Refused { reason } => {
                dst.put(b"HERD-REFUSED");
                &[reason]
            }
            PeerMessage::Record(r) => {
                r.write_into(dst);
                &[]
            }
            PeerMessage::Synced { count } => {
                dst.put(b"HERD-SYNCED ");
                crate::time::write_u128(u128::from(*count), dst);
                &[]
            }
            PeerMessage::Root { count, fingerprint } => {
                dst.put(b"HERD-ROOT ");
                crate::time::write_u128(u128::from(*count), dst);
                dst.byte(b' ');
                write_hex(*fingerprint, dst);
                &[]
            }
            PeerMessage::Fingerprints { range, children } => {
                dst.put(b"HERD-FP ");
                range.write_into(dst);
                for fp in children {
                    dst.byte(b' ');
                    write_hex(*fp, dst);
                }
                &[]
            }
            PeerMessage::Ids { range, hashes } | PeerMessage::Want { range, hashes } => {
                dst.put(if matches!(self, PeerMessage::Ids { .. }) {
                    b"HERD-IDS "
                } else {
                    b"HERD-WANT "
                });
                range.write_into(dst);
                for h in hashes {
                    dst.byte(b' ');
                    write_hex(*h, dst);
                }
                &[]
            }
            PeerMessage::Over => {
                dst.put(b"HERD-OVER");
                &[]
            }
            PeerMessage::Ping => {
                dst.put(b"HERD-PING");
                &[]
            }
            PeerMessage::Pong => {
                dst.put(b"HERD-PONG");
                &[]
            }
        };
        for w in words {
            dst.byte(b' ');
            dst.put(w);
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
            PeerMessage::Root { count, fingerprint } => PeerMessage::Root { count, fingerprint },
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
