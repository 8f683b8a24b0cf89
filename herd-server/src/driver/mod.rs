//! The tokio driver: it carries bytes and time for the sans-IO [`crate::node`], and holds
//! everything that does I/O around it — the server's start ([`server`]), the client listener and
//! connections ([`listener`]), the peer links (`peers`), the event loops ([`loops`]), the admin door
//! ([`admin`]) and the client door over HTTP/JSON and WebSocket ([`door`]). The handles their tasks
//! hold are small types of their own (`shared`, `node_handle`, `gate`, [`metrics`], `samples`).

pub mod admin;
pub mod admission;
pub(crate) mod conn;
pub mod door;
pub(crate) mod gate;
pub mod listener;
pub mod loops;
pub mod metrics;
pub(crate) mod node_handle;
pub(crate) mod peers;
pub(crate) mod samples;
pub mod server;
pub(crate) mod shared;
pub mod spec;
pub(crate) mod upkeep;
pub mod warnings;
