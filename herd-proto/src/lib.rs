//! The herd line protocol: typed messages, exact parsing and encoding.
//!
//! A herd is a few servers that mobile clients talk to over TCP lines. Clients say where they are
//! (`IAMAT`) and ask what is near another client (`WHATSAT`); servers answer with `AT` records and flood
//! them to each other over peer links. This crate is the protocol and nothing else: it does no I/O,
//! reads no clock (times are passed in) and never panics on any input.
//!
//! - [`Message`]: the client lines `IAMAT` and `WHATSAT`, parsed from bytes, borrowing from them.
//! - [`AtRecord`]: a client's location record (one AT line), ordered by the herd's convergence order.
//! - [`PeerMessage`]: the server-to-server lines (greeting, records, catch-up, keep-alive).
//! - [`write_invalid`], [`write_whatsat`]: the replies that are not one message.
//! - [`HerdCodec`] (feature `codec`): a `tokio_util` line framer with a finite line limit.
//!
//! Client ids are bytes (any bytes but white space, invalid UTF-8 included), so encoding writes bytes:
//! `write_to(&mut Vec<u8>)` appends the exact wire form without the line terminator. For every valid
//! message `m`, `Message::parse(&m.to_bytes()) == Ok(m)`.
//!
//! # Example
//! ```
//! use herd_proto::{AtRecord, Message, Timestamp};
//!
//! let line = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450";
//! let Ok(Message::IAmAt(iamat)) = Message::parse(line) else { panic!("not an IAMAT") };
//! assert_eq!(&*iamat.client, b"kiwi.cs.ucla.edu");
//! assert_eq!(iamat.location.latitude(), 34.06893);
//!
//! // The server's receive time, read once per line; the difference is exact.
//! let received = Timestamp::new(1479413884, 655887836).unwrap();
//! let record = AtRecord::new(b"Alford", iamat, received);
//! assert_eq!(
//!     record.to_bytes(),
//!     b"AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450"
//! );
//!
//! // Errors say what and where.
//! let err = Message::parse(b"IAMAT kiwi 34.06-118.44 1479413884").unwrap_err();
//! assert_eq!(err.kind, herd_proto::ErrorKind::Location);
//! assert_eq!(err.offset, 11);
//! ```
//!
//! # Grammar
//! ```text
//! line     = ws* field (ws+ field)* ws*        ws = SP | TAB | CR | LF | FF | VT
//! IAMAT    = "IAMAT" client location time
//! WHATSAT  = "WHATSAT" client radius bound
//! AT       = "AT" server diff client location time
//! client   = 1*(any byte but ws)               server = 1*(any byte but ws)
//! location = [+-] D+ ("." D+)? [+-] D+ ("." D+)?   latitude -90..=90, longitude -180..=180
//! time     = D+ ("." 1*9D)?                    seconds fit in 64 bits
//! radius   = D+ ("." D+)?                      0 < radius <= 50
//! bound    = D+                                0..=20
//! diff     = [+-] D+ "." 9D
//! ```
//! The peer lines are described in [`PeerMessage`]'s module, [`peer`].
#![cfg_attr(not(feature = "std"), no_std)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![warn(unreachable_pub)]
#![forbid(unsafe_code)]

extern crate alloc;

/// What `std`'s prelude would give, from `alloc`, so every module reads the same with or without `std`.
#[allow(unused_imports)]
mod prelude {
    pub(crate) use alloc::borrow::ToOwned;
    pub(crate) use alloc::format;
    pub(crate) use alloc::string::{String, ToString};
    pub(crate) use alloc::vec::Vec;
}

/// Where the writers append bytes: a `Vec<u8>` for the public `write_to`s, and the codec's `BytesMut`
/// directly, with no line buffer in between.
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);
    fn byte(&mut self, b: u8);
}

impl Sink for prelude::Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn byte(&mut self, b: u8) {
        self.push(b);
    }
}

#[cfg(feature = "codec")]
impl Sink for bytes::BytesMut {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn byte(&mut self, b: u8) {
        self.extend_from_slice(&[b]);
    }
}

mod error;
pub mod frame;
mod message;
mod parse;
pub mod peer;
mod reply;
mod time;
mod watch;

#[cfg(feature = "arbitrary")]
mod arbitrary_impls;
#[cfg(feature = "json")]
mod json;
#[cfg(feature = "json")]
#[cfg_attr(docsrs, doc(cfg(feature = "json")))]
pub use json::{record_json, write_record_json};
#[cfg(feature = "codec")]
#[cfg_attr(docsrs, doc(cfg(feature = "codec")))]
pub mod codec;

pub use error::{ErrorKind, ParseError};
pub use message::{AtRecord, ClientTime, IAmAt, Location, Message, Radius, RecordKey, WhatsAt};
pub use peer::{KeyRange, PeerMessage, CELL_BYTES, MAX_CELLS, MAX_CHUNK, MAX_IDS, PEER_VERSION};
pub use reply::{write_invalid, write_whatsat};
pub use time::{TimeDiff, Timestamp};
#[cfg(feature = "std")]
pub use watch::km_between;
pub use watch::{Watch, WatchLine};

pub use frame::{Frame, Framer, DEFAULT_MAX_LINE};

#[cfg(feature = "codec")]
#[cfg_attr(docsrs, doc(cfg(feature = "codec")))]
pub use codec::{CodecError, HerdCodec};

/// The crates that appear in the API of [`HerdCodec`], re-exported so a user needs no version of
/// its own that must match.
#[cfg(feature = "codec")]
#[cfg_attr(docsrs, doc(cfg(feature = "codec")))]
pub use {bytes, tokio_util};

/// Is `b` white space in the protocol's sense (space, tab, CR, LF, form feed, vertical tab)?
pub fn is_whitespace(b: u8) -> bool {
    parse::is_ws(b)
}
