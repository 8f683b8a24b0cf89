//! How the admin door guards itself: its connection cap, the `Host` names it answers to, and the
//! bearer tokens a request from beyond loopback must show (PROTOCOL.md §6).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// How the admin door guards itself (`[admin]`, `[herd] secret`).
#[derive(Clone, Debug)]
pub struct AdminGuard {
    /// Most admin connections open at once; one more is closed at once.
    pub max_connections: usize,
    /// Names a request's `Host` may hold besides IP literals and `localhost` (lower case): the
    /// configured `[admin] hosts` and the host names of the herd's admin addresses.
    pub hosts: Vec<String>,
    /// Bearer tokens a request from beyond loopback must show, one per herd secret ([`token`]);
    /// empty: none is asked for (the herd has no secret).
    pub tokens: Vec<String>,
}

impl Default for AdminGuard {
    fn default() -> Self {
        AdminGuard {
            max_connections: herd_config::AdminSettings::default().max_connections,
            hosts: Vec::new(),
            tokens: Vec::new(),
        }
    }
}

impl AdminGuard {
    /// The guard `config` describes.
    pub fn from_config(config: &crate::config::Config) -> Self {
        let mut hosts = config.admin.hosts.clone();
        for s in &config.servers {
            if let Some(host) = s.admin.as_deref().and_then(host_name) {
                if host.parse::<std::net::IpAddr>().is_err() && !hosts.contains(&host) {
                    hosts.push(host);
                }
            }
        }
        AdminGuard {
            max_connections: config.admin.max_connections,
            hosts,
            tokens: config.secrets.iter().map(|s| token(s)).collect(),
        }
    }

    /// Whether a request naming `host` (a `Host` header's value) is for this door: an IP literal,
    /// `localhost` or a configured name, with or without a port. A name that is none of these is
    /// what a page of another site sends after rebinding its name to this address.
    pub fn host_allowed(&self, host: &str) -> bool {
        let Some(name) = host_name(host) else {
            return false;
        };
        name == "localhost"
            || name.parse::<std::net::IpAddr>().is_ok()
            || self.hosts.contains(&name)
    }

    /// Whether a request from `from` showing `authorization` (the header's value) may be answered:
    /// always from loopback (the Host check keeps browsers' pages out), and from beyond only with
    /// the bearer token of one of the herd's secrets when it has one.
    pub(crate) fn authorized(&self, from: std::net::IpAddr, authorization: Option<&[u8]>) -> bool {
        if self.tokens.is_empty() || from.is_loopback() || is_mapped_loopback(from) {
            return true;
        }
        let Some(shown) = authorization.and_then(|a| a.strip_prefix(b"Bearer ")) else {
            return false;
        };
        // Compared as digests: the time taken says nothing about how much of a token was right.
        let shown = Sha256::digest(shown.trim_ascii());
        self.tokens
            .iter()
            .any(|t| Sha256::digest(t.as_bytes()) == shown)
    }
}

fn is_mapped_loopback(ip: std::net::IpAddr) -> bool {
    matches!(ip, std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()))
}

/// The host of a `host[:port]` (`[v6]:port` too), lower case; `None` if it is empty.
fn host_name(host: &str) -> Option<String> {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map(|(v6, _)| v6)?
    } else if host.matches(':').count() > 1 {
        host // a bare IPv6 literal
    } else {
        host.split_once(':').map_or(host, |(h, _)| h)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

/// The admin door's bearer token for herd secret `secret`: HMAC-SHA256 keyed by the secret over
/// [`TOKEN_LABEL`], in hex. Derived, so the token shown to a scraper is not the secret that lets a
/// server into the herd, and every server of the herd accepts the same one.
pub fn token(secret: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(TOKEN_LABEL);
    hex::encode(mac.finalize().into_bytes())
}

/// What a secret is MACed over to make the admin token (PROTOCOL.md §6).
pub const TOKEN_LABEL: &[u8] = b"herd admin token v1";
