//! The tokio driver: it carries bytes and time for the sans-IO [`crate::node`], and holds
//! everything that does I/O around it — the client listener and connections ([`server`]), the
//! peer links (`peers`), the event loops ([`loops`]), the admin door ([`admin`]) and the
//! client door over HTTP/JSON and WebSocket ([`door`]).

pub mod admin;
pub mod admission;
pub(crate) mod conn;
pub mod door;
pub mod listener;
pub mod loops;
pub mod metrics;
pub(crate) mod peers;
pub mod server;
pub(crate) mod upkeep;
pub mod warnings;
