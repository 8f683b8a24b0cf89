//! Server-to-server messages: the herd's own peer wire format (PROTOCOL.md §5).
//!
//! A peer link is an ordinary TCP connection to a neighbour's listening address whose first line is a
//! greeting. It is line based like the client protocol, with the same white space rules:
//!
//! ```text
//! HERD-HELLO 2 <name> <to> <handshake>   dialer → acceptor: version, who I am, whom I dial, a key share
//! HERD-WELCOME <name> <handshake>         acceptor → dialer: who I am, my key share
//! HERD-REFUSED <reason>                   either side, then it closes: e.g. `unknown-peer`, `bad-proof`
//! AT <server> <diff> <client> <location> <time>   a record, exactly the fields of its AT line
//! HERD-SYNCED <count>                     end of the catch-up stream: `count` records were sent
//! HERD-PING / HERD-PONG                   keep-alive
//! ```
//!
//! `handshake` is the hex of a handshake message of the server's secure channel (in the herd server, a
//! Noise `NNpsk0` message keyed from the herd secret and bound to the version and both names), or `-` in
//! a herd without a secret. The greeting lines are plain text; with a secret, everything after them is
//! carried in the encrypted channel, as lines of this same grammar. After the greeting, each side
//! streams every record it holds (the catch-up), ends it with `HERD-SYNCED`, and from then on floods new
//! records as they come.
//!
//! A greeting of another version fails to parse with [`ErrorKind::Version`](crate::ErrorKind::Version),
//! so a server can refuse it cleanly (`HERD-REFUSED version`) instead of treating it as a client line.

#[allow(unused_imports)]
use crate::prelude::*;
use crate::Sink;
use alloc::borrow::Cow;

use crate::error::ParseError;
use crate::message::AtRecord;
use crate::parse;

/// The peer protocol version this crate speaks, sent in `HERD-HELLO`.
pub const PEER_VERSION: u32 = 2;

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
    /// `HERD-SYNCED <count>`: the catch-up stream is complete.
    Synced {
        /// How many records the catch-up sent.
        count: u64,
    },
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
            PeerMessage::Ping => PeerMessage::Ping,
            PeerMessage::Pong => PeerMessage::Pong,
        }
    }
}
