//! herd-server: one server of a herd, or a whole herd in one process.
//!
//! Data flows one way: bytes → `herd-proto` (parse) → [`node`] (decide) → `herd-proto` (encode) →
//! bytes. [`node::Node`] holds every herd rule and no I/O; [`driver`] drives it with tokio
//! (connections, links, event loops, the admin door); [`places`] answers WHATSAT; [`config`] reads the herd's TOML; [`store`] keeps
//! records on disk.

pub mod config;
pub mod driver;
pub mod log;
pub mod node;
pub mod places;
pub mod stderr;
pub mod store;

pub use config::Config;
pub use driver::listener::bind;
pub use driver::loops::{bind_on, Listeners, Loops};
pub use driver::server::{run, run_with_admin, Clock, ServerSpec};
pub use places::Places;

/// The one `reqwest::Client` of a process: rustls, the configured time-out, connection reuse.
///
/// # Errors
/// The TLS back-end cannot be initialised.
pub fn http_client(config: &Config) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(config.places.timeout)
        .user_agent(concat!("herd-server/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// Writes `msg` and a newline on stderr, through the [`stderr`] queue: never waits for stderr and
/// never panics, unlike `eprintln!`. A server whose stderr is gone (a closed pipe, a full disk) or
/// not read (a full pipe) loses the message, counts it, goes on, and still hears SIGTERM.
pub fn say(msg: std::fmt::Arguments<'_>) {
    stderr::write(format!("{msg}\n").into_bytes());
}
