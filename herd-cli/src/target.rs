//! Which herd, and which server of it: `--config` (or `HERD_CONFIG`, `./herd.toml`, the user's
//! config folder, the built-in default herd: [`herd_config::locate`]) and `--to` (a server name of the herd, or `HOST:PORT`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use herd_config::{Config, Located};

use crate::usage;

/// The herd and where it came from: the one lookup both binaries share ([`herd_config::locate`]:
/// `--config`, `$HERD_CONFIG`, `./herd.toml`, the user's config folder, the built-in default herd). A
/// file that cannot be read or does not check out is a usage error (exit 2), with the file, line and
/// problem.
pub fn herd(config: Option<&Path>) -> anyhow::Result<(Config, Located)> {
    let located = herd_config::locate(config);
    match located.load() {
        Ok(c) => Ok((c, located)),
        Err(e) => Err(usage(format!("{e} ({})", located.why()))),
    }
}

/// Says on stderr which config the command used (`herd: using ./herd.toml (found in the current
/// folder)`), so a herd moved by a `herd.toml` in the current folder is never a surprise. Said only
/// when the config chose something (a server name, or the default server): `--to HOST:PORT` needs
/// no herd.
pub fn say_using(located: &Located) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "herd: {located}");
}

/// Whether `to` was answered from the herd's config (a server name, or no `--to` at all).
pub fn names_a_server(to: Option<&str>, herd: &Config) -> bool {
    to.is_none_or(|t| herd.server(t).is_some())
}

/// `--to` as text, `HOST:PORT`: the listen address of the server named `to` in `herd`, or `to` itself
/// when it is `HOST:PORT`; without `to`, the herd's first server.
///
/// # Errors
/// A usage error: `to` is neither a server name nor `HOST:PORT` (with a hint when the port is missing).
pub fn address_of(to: Option<&str>, herd: &Config) -> anyhow::Result<String> {
    let Some(t) = to else {
        return Ok(herd.servers[0].listen.clone());
    };
    if let Some(server) = herd.server(t) {
        return Ok(server.listen.clone());
    }
    let is_ip = t.parse::<std::net::IpAddr>().is_ok();
    if let Some((host, port)) = t.rsplit_once(':').filter(|_| !is_ip) {
        if !host.is_empty() && port.parse::<u16>().is_ok() {
            return Ok(t.to_owned());
        }
        return Err(usage(format!("--to {t:?}: {port:?} is not a port number")));
    }
    let looks_like_host = is_ip || t.contains('.') || t == "localhost";
    if looks_like_host {
        let port = herd.servers[0]
            .listen
            .rsplit_once(':')
            .map_or("12000", |(_, p)| p);
        let host = if t.contains(':') {
            format!("[{t}]")
        } else {
            t.to_owned()
        };
        return Err(usage(format!(
            "--to {t:?} has no port: give HOST:PORT, e.g. --to {host}:{port}"
        )));
    }
    let names: Vec<&str> = herd.servers.iter().map(|s| s.name.as_str()).collect();
    Err(usage(format!(
        "{t:?} is neither a server of the herd ({}) nor HOST:PORT",
        names.join(", ")
    )))
}

/// Resolves `HOST:PORT` to one address within `timeout`.
///
/// # Errors
/// A network error (exit 3): the name does not resolve, or not in time.
pub async fn lookup(addr: &str, timeout: Duration) -> anyhow::Result<SocketAddr> {
    let mut addrs = tokio::time::timeout(timeout, tokio::net::lookup_host(addr))
        .await
        .map_err(|_| anyhow::anyhow!("resolving {addr}: no answer within {timeout:?}"))?
        .with_context(|| format!("resolving {addr}"))?;
    addrs
        .next()
        .with_context(|| format!("{addr} resolves to no address"))
}

/// Resolves `--to` (see [`address_of`]) to an address.
///
/// # Errors
/// A usage error for a bad `--to` or config, a network error when the host does not resolve.
pub async fn resolve(
    to: Option<&str>,
    config: Option<&Path>,
    timeout: Duration,
) -> anyhow::Result<SocketAddr> {
    let (herd, located) = herd(config)?;
    let addr = address_of(to, &herd)?;
    if names_a_server(to, &herd) {
        say_using(&located);
    }
    lookup(&addr, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_names_addresses_and_hints() {
        let herd = Config::default_herd();
        assert_eq!(address_of(None, &herd).unwrap(), "127.0.0.1:12000");
        assert_eq!(
            address_of(Some("Holiday"), &herd).unwrap(),
            "127.0.0.1:12003"
        );
        assert_eq!(address_of(Some("h:1"), &herd).unwrap(), "h:1");
        assert_eq!(address_of(Some("[::1]:5"), &herd).unwrap(), "[::1]:5");
        let e = address_of(Some("127.0.0.1"), &herd)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no port") && e.contains("127.0.0.1:12000"),
            "{e}"
        );
        let e = address_of(Some("::1"), &herd).unwrap_err().to_string();
        assert!(e.contains("[::1]:12000"), "{e}");
        let e = address_of(Some("h:x"), &herd).unwrap_err().to_string();
        assert!(e.contains("not a port"), "{e}");
        let e = address_of(Some("Nowhere"), &herd).unwrap_err().to_string();
        assert!(e.contains("neither a server of the herd (Alford,"), "{e}");
    }
}
