//! `--to`: a server name of the herd, or `HOST:PORT`.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, Context as _};
use herd_config::Config;

/// Resolves `to` (a server name of the herd in `config`, the default herd without one, or
/// `HOST:PORT`) to an address; without `to`, the herd's first server.
pub async fn resolve(to: Option<&str>, config: Option<&Path>) -> anyhow::Result<SocketAddr> {
    let herd = match config {
        Some(path) => Config::load(path)?,
        None => Config::default_herd(),
    };
    let target = match to {
        Some(t) => match herd.server(t) {
            Some(server) => server.listen.clone(),
            None if t.contains(':') => t.to_owned(),
            None => {
                let names: Vec<&str> = herd.servers.iter().map(|s| s.name.as_str()).collect();
                bail!(
                    "{t:?} is neither a server of the herd ({}) nor HOST:PORT",
                    names.join(", ")
                );
            }
        },
        None => herd.servers[0].listen.clone(),
    };
    let mut addrs = tokio::net::lookup_host(&target)
        .await
        .with_context(|| format!("resolving {target}"))?;
    addrs
        .next()
        .with_context(|| format!("{target} resolves to no address"))
}
