//! What a server runs from: its [`ServerSpec`], made from the herd's config or by a test.

use std::sync::Arc;

use herd_proto::Timestamp;

use crate::config::{Config, Limits};
use crate::driver::admin::guard::AdminGuard;
use crate::log::Log;
use crate::node::handshake::Keyring;
use crate::places::Places;
use crate::store::StoreConfig;

/// Where receive times come from: the system clock, or a test's.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Everything one server needs to run.
#[derive(Clone)]
pub struct ServerSpec {
    /// Its name.
    pub name: String,
    /// Its neighbours: name and `host:port`.
    pub neighbors: Vec<(String, String)>,
    /// The herd's secrets as keys (empty: links are neither authenticated nor encrypted).
    pub keyring: Keyring,
    /// Every server name of the herd: records naming another server are refused.
    pub members: Vec<String>,
    /// The admin addresses (`host:port`) of the herd's servers that have one, by name: the live page
    /// gathers their `/status` (see [`crate::driver::admin::live`]).
    pub admins: Vec<(String, String)>,
    /// How its admin door guards itself (connection cap, allowed `Host` names, tokens).
    pub admin: AdminGuard,
    /// Limits on lines and connections.
    pub limits: Limits,
    /// Log every line in and out, and each WHATSAT's look-up (`[log] lines`).
    pub log_lines: bool,
    /// Log WHATSAT answers' JSON whole instead of a summary line (`[log] bodies`).
    pub log_bodies: bool,
    /// Where its log lines go ([`Log::off`]: nowhere).
    pub log: Log,
    /// The Places back-end (shared by the servers of one process).
    pub places: Places,
    /// The receive-time clock.
    pub clock: Clock,
    /// Where its records are kept on disk (`None`: in memory only).
    pub store: Option<StoreConfig>,
    /// The `host:port` of its client door over HTTP/JSON and WebSocket (`None`: off; see
    /// [`crate::driver::door`]).
    pub http: Option<String>,
}

impl ServerSpec {
    /// The spec of server `name` of `config`.
    ///
    /// # Errors
    /// `name` is not a server of the herd.
    pub fn from_config(config: &Config, name: &str, places: Places) -> anyhow::Result<Self> {
        let Some(server) = config.server(name) else {
            let names: Vec<&str> = config.servers.iter().map(|s| s.name.as_str()).collect();
            anyhow::bail!(
                "no server named {name:?} in the herd (servers: {})",
                names.join(", ")
            );
        };
        let neighbors = server
            .neighbors
            .iter()
            .filter_map(|n| config.server(n).map(|s| (s.name.clone(), s.listen.clone())))
            .collect();
        Ok(ServerSpec {
            name: name.to_owned(),
            neighbors,
            keyring: Keyring::new(&config.secrets),
            members: config.servers.iter().map(|s| s.name.clone()).collect(),
            admins: config
                .servers
                .iter()
                .filter_map(|s| Some((s.name.clone(), s.admin.clone()?)))
                .collect(),
            admin: AdminGuard::from_config(config),
            limits: config.limits,
            log_lines: config.log.lines,
            log_bodies: config.log.bodies,
            log: Log::off(),
            places,
            clock: Arc::new(Timestamp::now),
            store: config.store.dir.as_ref().map(|dir| StoreConfig {
                fsync: config.store.fsync,
                compact_bytes: config.store.compact_bytes,
                members: config.servers.iter().map(|s| s.name.clone()).collect(),
                ..StoreConfig::new(dir.join(name), name)
            }),
            http: server.http.clone(),
        })
    }
}
