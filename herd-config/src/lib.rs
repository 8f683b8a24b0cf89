//! The herd's configuration: a TOML file, or the built-in default herd of PROTOCOL.md §7.
//!
//! A crate of its own so the `herd` client reads the same herd config as the servers without
//! depending on the server (its HTTP client, its places data): serde + toml + herd-proto only (and
//! `dirs`, for the user's config folder). Both binaries find their config with the one [`locate`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

mod locate;

pub use locate::{locate, locate_in, Located, Origin, CONFIG_ENV};

/// The environment variable that holds the Google Places API key.
pub const API_KEY_ENV: &str = "GOOGLE_PLACES_API_KEY";

/// The whole herd: every server, the Places back-end, limits and the optional secret.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where WHATSAT look-ups go.
    pub places: PlacesConfig,
    /// The herd's secrets (`[herd] secret = "x"` or `secrets = ["new", "old"]`): a neighbour must prove
    /// one of them, and the first is the one this server proves with. Empty: no secret.
    pub secrets: Vec<String>,
    /// `[herd] insecure`: listening beyond loopback without a secret was asked for explicitly.
    pub insecure: bool,
    /// Per-server limits.
    pub limits: Limits,
    /// What the logs hold and how big they grow (`[log]`).
    pub log: LogSettings,
    /// Where and how records are kept on disk (`[store]`).
    pub store: StoreSettings,
    /// The admin doors' guards (`[admin]`).
    pub admin: AdminSettings,
    /// The servers, in file order; neighbour links are symmetric.
    pub servers: Vec<ServerConfig>,
}

/// One server of the herd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Its name, as it appears in AT lines; also the name of its log file and data folder, so
    /// one plain word (checked at load).
    pub name: String,
    /// `host:port` it listens on, for clients and peers alike.
    pub listen: String,
    /// Names of its neighbours (made symmetric when the file is read).
    pub neighbors: Vec<String>,
    /// `host:port` of its admin address (`GET /metrics`, `/health`, `/status`); `None`: off.
    pub admin: Option<String>,
    /// `host:port` of its client door over HTTP/JSON and WebSocket (PROTOCOL.md §10); `None`: off.
    pub http: Option<String>,
}

/// Which Places service answers WHATSAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// Places API (New), `POST …/v1/places:searchNearby`.
    Google,
    /// Places Nearby Search (legacy), `GET …/nearbysearch/json`.
    GoogleLegacy,
    /// The built-in data set: no network, no key.
    Offline,
}

impl Backend {
    /// Its name in the config (`google`, `google-legacy`, `offline`).
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Google => "google",
            Backend::GoogleLegacy => "google-legacy",
            Backend::Offline => "offline",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[places]`.
#[derive(Clone)]
pub struct PlacesConfig {
    /// The back-end.
    pub backend: Backend,
    /// Where it is; `None` means Google's public URL of that back-end.
    pub url: Option<String>,
    /// Give up on a look-up after this long.
    pub timeout: Duration,
    /// The API key (from `GOOGLE_PLACES_API_KEY`, or `key` in the file).
    pub key: Option<String>,
    /// How long an identical look-up is answered from the cache (0 turns the cache off).
    pub cache_ttl: Duration,
    /// Most cached answers kept.
    pub cache_entries: usize,
    /// Most upstream calls in flight at once.
    pub max_in_flight: usize,
    /// How many upstream calls a client connection and a server may make (`connection_rate`,
    /// `connection_burst`, `server_rate`, `server_burst`).
    pub budget: PlacesBudget,
}

/// The budget of upstream Places calls (cache misses of a network back-end): a token bucket per client
/// connection and one per server. A call takes a token from both; with either empty the WHATSAT is
/// answered `OVER_QUERY_LIMIT` at no cost, so no client can run up the bill of a paid API.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlacesBudget {
    /// Calls a second one connection's bucket refills with.
    pub connection_rate: f64,
    /// Calls one connection may make at once after a pause (its bucket's size).
    pub connection_burst: u32,
    /// Calls a second the server's bucket refills with (all connections together).
    pub server_rate: f64,
    /// The server's bucket's size.
    pub server_burst: u32,
}

impl PlacesConfig {
    /// `timeout_ms` unset.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(5000);
    /// `cache_ttl_ms` unset.
    pub const DEFAULT_CACHE_TTL: Duration = Duration::from_millis(60_000);
    /// `cache_entries` unset.
    pub const DEFAULT_CACHE_ENTRIES: usize = 10_000;
    /// `max_in_flight` unset.
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 32;
}

impl Default for PlacesBudget {
    /// A person's app asks a few times a minute; a herd of them stays well under 20 calls a second.
    fn default() -> Self {
        PlacesBudget {
            connection_rate: 2.0,
            connection_burst: 10,
            server_rate: 20.0,
            server_burst: 40,
        }
    }
}

/// `[admin]`: the guards of every server's admin door (PROTOCOL.md §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Most admin connections open at once (its own budget, not the clients'); one more is closed at
    /// once, so idle admin connections cannot take the process's file descriptors.
    pub max_connections: usize,
    /// Host names, besides IP literals and `localhost`, that requests may name in `Host` (a name the
    /// door is reached by, such as `herd-1.example.net`). Any other name is answered 421: a page of
    /// another site that rebinds its name to this address reads nothing.
    pub hosts: Vec<String>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            max_connections: 64,
            hosts: Vec::new(),
        }
    }
}

impl fmt::Debug for PlacesConfig {
    /// Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlacesConfig")
            .field("backend", &self.backend)
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("key", &self.key.as_ref().map(|_| "<set>"))
            .field("cache_ttl", &self.cache_ttl)
            .field("cache_entries", &self.cache_entries)
            .field("max_in_flight", &self.max_in_flight)
            .field("budget", &self.budget)
            .finish()
    }
}

/// `[limits]`: every resource a client can make the server hold has a finite bound (PROTOCOL.md §1, §2).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest line in bytes (PROTOCOL.md §1).
    pub max_line: usize,
    /// Most client connections at once; one more is answered `? busy` and closed.
    pub max_connections: usize,
    /// Most client connections at once from one IP address; one more is answered `? busy` and closed.
    pub max_connections_per_ip: usize,
    /// A line must end this long after its first byte arrived, or the connection is closed: a client
    /// dripping one byte at a time cannot hold a connection. Also bounds how long a reply may wait for a
    /// client that does not read.
    pub line_timeout: Duration,
    /// A client connection with nothing pending that stays silent this long is closed.
    pub idle_timeout: Duration,
    /// An IAMAT whose time is further ahead of the server's clock than this is invalid.
    pub max_future: Duration,
    /// Most clients the server takes new IAMATs for; past it only known clients update (records from
    /// peers are refused alike).
    pub max_clients: usize,
    /// The longest client id in bytes; a longer one is refused from a client or a peer.
    pub max_client_id: usize,
    /// The cache's byte budget: AT lines held plus about a hundred bytes a client. A record that
    /// would take it past this is refused, from a client or a peer.
    pub max_cache_bytes: u64,
    /// Most watches on one server, over all the WebSocket door's connections (PROTOCOL.md §10).
    pub max_watches: usize,
    /// Most watches one WebSocket connection holds.
    pub max_watches_per_connection: usize,
    /// Most records waiting for one watcher; a watcher whose queue is full is closed with a reason.
    pub watch_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let max_connections = 10_000;
        Limits {
            max_line: herd_proto::DEFAULT_MAX_LINE,
            max_connections,
            // Unset, one address may use every client slot (loopback tools, a NAT).
            max_connections_per_ip: max_connections,
            line_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_future: Duration::from_secs(86_400),
            max_clients: 10_000_000,
            max_client_id: herd_proto::DEFAULT_MAX_LINE,
            max_cache_bytes: 4 << 30,
            max_watches: 100_000,
            max_watches_per_connection: 64,
            watch_queue: 1024,
        }
    }
}

/// `[log]`: what the server logs and how its files rotate (PROTOCOL.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSettings {
    /// Log every line in and out, and each WHATSAT's look-up (`lines`, default true).
    pub lines: bool,
    /// Log WHATSAT answers' JSON whole instead of a summary (`bodies`, default false).
    pub bodies: bool,
    /// Rotate a file before it grows past this many bytes; 0 never rotates (`max_bytes`).
    pub max_bytes: u64,
    /// Rotated files kept: `Name.log.1` (newest) to `Name.log.<keep>` (`keep`, at most
    /// [`MAX_KEEP`]).
    pub keep: usize,
}

/// The most rotated log files `[log] keep` may ask for. A rotation renames every kept file while its
/// server's log waits, so a huge `keep` (a typo, or `u64::MAX`) would stall logging for minutes at
/// each rotation; a thousand files is far past any real need (logrotate covers longer histories).
pub const MAX_KEEP: usize = 1000;

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            lines: true,
            bodies: false,
            max_bytes: 100 * 1024 * 1024,
            keep: 5,
        }
    }
}

/// When stored records reach the disk (`[store] fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fsync {
    /// A reply goes out only once its record is on disk (one sync per batch: group commit).
    Always,
    /// Replies do not wait; records reach the kernel within a few milliseconds (a `kill -9` loses at
    /// most those) and the disk once a second (a crash of the machine loses at most about a second).
    #[default]
    Everysec,
    /// Replies do not wait; records reach the kernel within a few milliseconds, and the disk when
    /// the operating system sees fit.
    No,
}

impl Fsync {
    /// Whether a reply waits until the records it shows are on disk — the one it stored, or one held
    /// that another connection or a peer stored and that may still be on its way: the rule the
    /// server's client connection follows before it writes a batch's replies.
    pub fn replies_wait_for_disk(self) -> bool {
        self == Fsync::Always
    }

    /// Its name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::Everysec => "everysec",
            Fsync::No => "no",
        }
    }
}

impl fmt::Display for Fsync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// The data folder: each server keeps `dir/<Name>/` (`--data-dir` overrides it). `None`: records
    /// live in memory only.
    pub dir: Option<PathBuf>,
    /// When records reach the disk.
    pub fsync: Fsync,
    /// Journals smaller than this are never compacted (`compact_bytes`, default 64 MiB).
    pub compact_bytes: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            dir: None,
            fsync: Fsync::Everysec,
            compact_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A configuration that cannot work, with where and why.
#[derive(Debug, thiserror::Error)]
#[error("{origin}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file (or `<default>`).
    pub origin: String,
    /// 1-based line of the offending value, where known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    places: Option<PlacesFile>,
    herd: Option<HerdFile>,
    limits: Option<LimitsFile>,
    log: Option<LogFileSection>,
    store: Option<StoreFile>,
    admin: Option<AdminFile>,
    #[serde(default)]
    server: Vec<ServerFile>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PlacesFile {
    backend: Option<Backend>,
    url: Option<String>,
    timeout_ms: Option<u64>,
    key: Option<String>,
    cache_ttl_ms: Option<u64>,
    cache_entries: Option<usize>,
    max_in_flight: Option<usize>,
    connection_rate: Option<f64>,
    connection_burst: Option<u32>,
    server_rate: Option<f64>,
    server_burst: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminFile {
    max_connections: Option<Spanned<u64>>,
    hosts: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HerdFile {
    secret: Option<Spanned<String>>,
    secrets: Option<Spanned<Vec<String>>>,
    insecure: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    max_line: Option<Spanned<u64>>,
    max_connections: Option<Spanned<u64>>,
    max_connections_per_ip: Option<Spanned<u64>>,
    line_timeout_ms: Option<Spanned<u64>>,
    idle_timeout_ms: Option<Spanned<u64>>,
    max_future_ms: Option<Spanned<u64>>,
    max_clients: Option<Spanned<u64>>,
    max_client_id: Option<Spanned<u64>>,
    max_cache_bytes: Option<Spanned<u64>>,
    max_watches: Option<Spanned<u64>>,
    max_watches_per_connection: Option<Spanned<u64>>,
    watch_queue: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogFileSection {
    lines: Option<bool>,
    bodies: Option<bool>,
    max_bytes: Option<u64>,
    keep: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    dir: Option<PathBuf>,
    fsync: Option<Fsync>,
    compact_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    name: Spanned<String>,
    listen: Spanned<String>,
    #[serde(default)]
    neighbors: Vec<Spanned<String>>,
    admin: Option<Spanned<String>>,
    http: Option<Spanned<String>>,
}

/// The default herd of PROTOCOL.md §7.
const DEFAULT_HERD: &str = r#"
[[server]]
name = "Alford"
listen = "127.0.0.1:12000"
neighbors = ["Hamilton", "Welsh"]
admin = "127.0.0.1:12100"

[[server]]
name = "Ball"
listen = "127.0.0.1:12001"
neighbors = ["Holiday", "Welsh"]
admin = "127.0.0.1:12101"

[[server]]
name = "Hamilton"
listen = "127.0.0.1:12002"
neighbors = ["Alford", "Holiday"]
admin = "127.0.0.1:12102"

[[server]]
name = "Holiday"
listen = "127.0.0.1:12003"
neighbors = ["Ball", "Hamilton"]
admin = "127.0.0.1:12103"

[[server]]
name = "Welsh"
listen = "127.0.0.1:12004"
neighbors = ["Alford", "Ball"]
admin = "127.0.0.1:12104"
"#;

/// The built-in default herd as TOML (what `herd-server default-config` prints).
pub fn default_herd_toml() -> &'static str {
    DEFAULT_HERD.trim_start()
}

/// Checks the sections of one config text, each in a function of its own; errors name the text's
/// origin and, where known, the line.
struct Checker<'a> {
    text: &'a str,
    origin: &'a str,
}

/// The port of a `host:port`, if it is one.
fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

impl Checker<'_> {
    /// The line of the text where `span` starts.
    fn line_of(&self, span: std::ops::Range<usize>) -> Option<usize> {
        Some(
            self.text[..span.start.min(self.text.len())]
                .matches('\n')
                .count()
                + 1,
        )
    }

    fn err(&self, line: Option<usize>, message: String) -> ConfigError {
        ConfigError {
            origin: self.origin.to_owned(),
            line,
            message,
        }
    }

    /// An error at the line of `span`.
    fn at(&self, span: std::ops::Range<usize>, message: String) -> ConfigError {
        self.err(self.line_of(span), message)
    }

    /// `[[server]]`: names and addresses each used once, neighbours known, links made symmetric.
    fn servers(&self, file: &[ServerFile]) -> Result<Vec<ServerConfig>, ConfigError> {
        if file.is_empty() {
            return Err(self.err(None, "no [[server]] is configured".into()));
        }
        let names = self.names_and_addresses(file)?;
        let mut neighbors: Vec<Vec<String>> = vec![Vec::new(); file.len()];
        for (i, s) in file.iter().enumerate() {
            for n in &s.neighbors {
                let other = n.get_ref();
                let Some(&j) = names.get(other) else {
                    return Err(self.at(
                        n.span(),
                        format!("{} lists unknown neighbour {other:?}", s.name.get_ref()),
                    ));
                };
                if i == j {
                    return Err(self.at(
                        n.span(),
                        format!("{} lists itself as a neighbour", s.name.get_ref()),
                    ));
                }
                // A one-sided link is made symmetric.
                for (a, b) in [(i, j), (j, i)] {
                    let name = file[b].name.get_ref();
                    if !neighbors[a].contains(name) {
                        neighbors[a].push(name.clone());
                    }
                }
            }
        }
        Ok(file
            .iter()
            .zip(neighbors)
            .map(|(s, neighbors)| ServerConfig {
                name: s.name.get_ref().clone(),
                listen: s.listen.get_ref().clone(),
                neighbors,
                admin: s.admin.as_ref().map(|a| a.get_ref().clone()),
                http: s.http.as_ref().map(|a| a.get_ref().clone()),
            })
            .collect())
    }

    /// Every server's name valid and used once, its addresses `host:port` and used once; returns
    /// each name's index.
    fn names_and_addresses(
        &self,
        file: &[ServerFile],
    ) -> Result<HashMap<String, usize>, ConfigError> {
        let mut names = HashMap::new();
        let mut addrs = HashSet::new();
        for s in file {
            let name = s.name.get_ref();
            if let Some(why) = name_problem(name) {
                return Err(self.at(s.name.span(), format!("server name {name:?} {why}")));
            }
            if names.insert(name.clone(), names.len()).is_some() {
                return Err(self.at(s.name.span(), format!("server name {name:?} is used twice")));
            }
            let listen = s.listen.get_ref();
            if port_of(listen).is_none() {
                return Err(self.at(
                    s.listen.span(),
                    format!("listen address {listen:?} of {name} is not host:port"),
                ));
            }
            if !addrs.insert(listen.clone()) {
                return Err(self.at(
                    s.listen.span(),
                    format!("listen address {listen:?} is used twice"),
                ));
            }
            for (what, addr) in [("admin", &s.admin), ("http", &s.http)] {
                let Some(addr) = addr else { continue };
                let a = addr.get_ref();
                if port_of(a).is_none() {
                    return Err(self.at(
                        addr.span(),
                        format!("{what} address {a:?} of {name} is not host:port"),
                    ));
                }
                if !addrs.insert(a.clone()) {
                    return Err(self.at(addr.span(), format!("{what} address {a:?} is used twice")));
                }
            }
        }
        Ok(names)
    }

    /// `[places]` (a missing table is the same as an empty one); `env_key` overrides its `key`.
    fn places(&self, p: PlacesFile, env_key: Option<String>) -> Result<PlacesConfig, ConfigError> {
        let key = env_key.or(p.key);
        let d = PlacesBudget::default();
        let places = PlacesConfig {
            backend: p.backend.unwrap_or(if key.is_some() {
                Backend::Google
            } else {
                Backend::Offline
            }),
            url: p.url,
            timeout: p
                .timeout_ms
                .map_or(PlacesConfig::DEFAULT_TIMEOUT, Duration::from_millis),
            key,
            cache_ttl: p
                .cache_ttl_ms
                .map_or(PlacesConfig::DEFAULT_CACHE_TTL, Duration::from_millis),
            cache_entries: p
                .cache_entries
                .unwrap_or(PlacesConfig::DEFAULT_CACHE_ENTRIES),
            max_in_flight: p
                .max_in_flight
                .unwrap_or(PlacesConfig::DEFAULT_MAX_IN_FLIGHT),
            budget: PlacesBudget {
                connection_rate: p.connection_rate.unwrap_or(d.connection_rate),
                connection_burst: p.connection_burst.unwrap_or(d.connection_burst),
                server_rate: p.server_rate.unwrap_or(d.server_rate),
                server_burst: p.server_burst.unwrap_or(d.server_burst),
            },
        };
        if places.max_in_flight == 0 {
            return Err(self.err(
                None,
                "[places] max_in_flight = 0 would send no look-up (at least 1)".into(),
            ));
        }
        if places.backend != Backend::Offline && places.key.is_none() {
            return Err(self.err(
                None,
                format!(
                    "the {} back-end needs an API key: set {API_KEY_ENV} (or `key` under [places])",
                    places.backend
                ),
            ));
        }
        check_workable(&places).map_err(|m| self.err(None, m))?;
        Ok(places)
    }

    /// A `[limits]` value within `min..=max`; a value that cannot work is refused with its line, never
    /// silently replaced.
    fn limit(
        &self,
        v: &Option<Spanned<u64>>,
        key: &str,
        min: u64,
        max: u64,
    ) -> Result<Option<u64>, ConfigError> {
        let Some(v) = v else { return Ok(None) };
        let n = *v.get_ref();
        if n < min || n > max {
            let why = if n < min {
                format!("at least {min}")
            } else {
                format!("at most {max}")
            };
            return Err(self.at(
                v.span(),
                format!("[limits] {key} = {n} cannot work: it must be {why}"),
            ));
        }
        Ok(Some(n))
    }

    /// `[limits]`.
    fn limits(&self, l: &LimitsFile) -> Result<Limits, ConfigError> {
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let ms = Duration::from_millis;
        // Times up to ~30 years; counts up to what a 32-bit client index and a process can hold.
        const MAX_MS: u64 = 1_000_000_000_000;
        let count = u64::from(u32::MAX);
        let d = Limits::default();
        let max_connections = self
            .limit(&l.max_connections, "max_connections", 1, count)?
            .map_or(d.max_connections, size);
        Ok(Limits {
            max_line: self
                .limit(&l.max_line, "max_line", MIN_MAX_LINE as u64, count)?
                .map_or(d.max_line, size),
            max_connections,
            // Unset, one address may use every client slot (loopback tools, a NAT).
            max_connections_per_ip: self
                .limit(
                    &l.max_connections_per_ip,
                    "max_connections_per_ip",
                    1,
                    count,
                )?
                .map_or(max_connections, size),
            line_timeout: self
                .limit(&l.line_timeout_ms, "line_timeout_ms", 1, MAX_MS)?
                .map_or(d.line_timeout, ms),
            idle_timeout: self
                .limit(&l.idle_timeout_ms, "idle_timeout_ms", 1, MAX_MS)?
                .map_or(d.idle_timeout, ms),
            // 0 is strict but can work: no time ahead of the server's clock at all.
            max_future: self
                .limit(&l.max_future_ms, "max_future_ms", 0, MAX_MS)?
                .map_or(d.max_future, ms),
            max_clients: self
                .limit(&l.max_clients, "max_clients", 1, count)?
                .map_or(d.max_clients, size),
            max_client_id: self
                .limit(&l.max_client_id, "max_client_id", 1, count)?
                .map_or(d.max_client_id, size),
            max_cache_bytes: self
                .limit(&l.max_cache_bytes, "max_cache_bytes", 1, u64::MAX)?
                .unwrap_or(d.max_cache_bytes),
            max_watches: self
                .limit(&l.max_watches, "max_watches", 0, count)?
                .map_or(d.max_watches, size),
            max_watches_per_connection: self
                .limit(
                    &l.max_watches_per_connection,
                    "max_watches_per_connection",
                    0,
                    count,
                )?
                .map_or(d.max_watches_per_connection, size),
            watch_queue: self
                .limit(&l.watch_queue, "watch_queue", 1, count)?
                .map_or(d.watch_queue, size),
        })
    }

    /// `[herd]`: the secrets (`secret` or `secrets`, none empty) and `insecure`; without a secret,
    /// every address of `servers` must be on loopback unless `insecure`.
    fn herd(
        &self,
        herd: HerdFile,
        servers: &[ServerFile],
    ) -> Result<(Vec<String>, bool), ConfigError> {
        let secrets = match (herd.secret, herd.secrets) {
            (Some(one), Some(_)) => {
                return Err(self.at(
                    one.span(),
                    "[herd] has both `secret` and `secrets`: use one (`secrets = [new, old]` to rotate)"
                        .into(),
                ))
            }
            (Some(one), None) => vec![one],
            (None, Some(many)) => {
                let span = many.span();
                many.into_inner()
                    .into_iter()
                    .map(|s| Spanned::new(span.clone(), s))
                    .collect()
            }
            (None, None) => Vec::new(),
        };
        if let Some(empty) = secrets.iter().find(|s| s.get_ref().is_empty()) {
            return Err(self.at(empty.span(), "a herd secret must not be empty".into()));
        }
        let secrets: Vec<String> = secrets.into_iter().map(Spanned::into_inner).collect();
        let insecure = herd.insecure.unwrap_or(false);
        if secrets.is_empty() && !insecure {
            self.all_on_loopback(servers)?;
        }
        Ok((secrets, insecure))
    }

    /// Without a secret (and without `insecure`), no address may be beyond loopback.
    fn all_on_loopback(&self, servers: &[ServerFile]) -> Result<(), ConfigError> {
        if let Some(s) = servers.iter().find(|s| !is_loopback(s.listen.get_ref())) {
            return Err(self.at(
                s.listen.span(),
                format!(
                    "{} listens on {:?}, beyond loopback, but the herd has no secret: anyone who \
                     can reach it could pose as a server. Set [herd] secret (or secrets), or \
                     [herd] insecure = true to run without one",
                    s.name.get_ref(),
                    s.listen.get_ref()
                ),
            ));
        }
        // The client door over HTTP follows the rule of `listen` (PROTOCOL.md §10).
        if let Some((s, a)) = servers.iter().find_map(|s| {
            s.http
                .as_ref()
                .filter(|a| !is_loopback(a.get_ref()))
                .map(|a| (s, a))
        }) {
            return Err(self.at(
                a.span(),
                format!(
                    "{} has its http door on {:?}, beyond loopback, but the herd has no secret: \
                     the same rule as `listen`. Set [herd] secret (or secrets), or [herd] \
                     insecure = true to run without one",
                    s.name.get_ref(),
                    a.get_ref()
                ),
            ));
        }
        if let Some((s, a)) = servers.iter().find_map(|s| {
            s.admin
                .as_ref()
                .filter(|a| !is_loopback(a.get_ref()))
                .map(|a| (s, a))
        }) {
            return Err(self.at(
                a.span(),
                format!(
                    "the admin address {:?} of {} is beyond loopback, but the herd has no secret: \
                     anyone who can reach it could read every client's location. Set [herd] secret \
                     (requests from beyond loopback then need its bearer token: `herd-server \
                     admin-token`), or [herd] insecure = true to serve it to anyone",
                    a.get_ref(),
                    s.name.get_ref()
                ),
            ));
        }
        Ok(())
    }

    /// `[log]`.
    fn log(&self, l: LogFileSection) -> Result<LogSettings, ConfigError> {
        let d = LogSettings::default();
        let keep = match l.keep {
            None => d.keep,
            Some(k) if *k.get_ref() > MAX_KEEP as u64 => {
                return Err(self.at(
                    k.span(),
                    format!(
                        "[log] keep = {} cannot work: it must be at most {MAX_KEEP}",
                        k.get_ref()
                    ),
                ))
            }
            Some(k) => *k.get_ref() as usize,
        };
        Ok(LogSettings {
            lines: l.lines.unwrap_or(d.lines),
            bodies: l.bodies.unwrap_or(d.bodies),
            max_bytes: l.max_bytes.unwrap_or(d.max_bytes),
            keep,
        })
    }

    /// `[admin]`.
    fn admin(&self, a: AdminFile) -> Result<AdminSettings, ConfigError> {
        let d = AdminSettings::default();
        let max_connections = match a.max_connections {
            None => d.max_connections,
            Some(m) if *m.get_ref() < 1 || *m.get_ref() > 1_000_000 => {
                return Err(self.at(
                    m.span(),
                    format!(
                        "[admin] max_connections = {} cannot work: it must be from 1 to 1000000",
                        m.get_ref()
                    ),
                ))
            }
            Some(m) => *m.get_ref() as usize,
        };
        Ok(AdminSettings {
            max_connections,
            hosts: a
                .hosts
                .unwrap_or_default()
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
        })
    }
}

impl Config {
    /// The built-in default herd, with the Places back-end chosen from the environment.
    pub fn default_herd() -> Config {
        Self::parse(
            DEFAULT_HERD,
            "<default herd>",
            std::env::var(API_KEY_ENV).ok(),
        )
        .expect("the built-in herd is valid")
    }

    /// Reads and checks a config file; the key comes from `GOOGLE_PLACES_API_KEY` when set.
    ///
    /// # Errors
    /// The file cannot be read, is not TOML, or describes a herd that cannot work.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &origin, std::env::var(API_KEY_ENV).ok())
    }

    /// Parses and checks config text; `origin` names it in errors, `env_key` is the environment's key.
    /// Each section is checked by a function of its own (`Checker`).
    ///
    /// # Errors
    /// Bad TOML, an unknown key, an unknown neighbour, a name or address used twice, a server listed as
    /// its own neighbour, no server at all.
    pub fn parse(text: &str, origin: &str, env_key: Option<String>) -> Result<Config, ConfigError> {
        let c = Checker { text, origin };
        let file: File = toml::from_str(text).map_err(|e| {
            c.err(
                e.span().and_then(|s| c.line_of(s)),
                e.message().trim().to_owned(),
            )
        })?;
        let servers = c.servers(&file.server)?;
        let places = c.places(file.places.unwrap_or_default(), env_key)?;
        let limits = file
            .limits
            .map_or(Ok(Limits::default()), |l| c.limits(&l))?;
        let (secrets, insecure) = c.herd(file.herd.unwrap_or_default(), &file.server)?;
        let log = file.log.map_or(Ok(LogSettings::default()), |l| c.log(l))?;
        let admin = file
            .admin
            .map_or(Ok(AdminSettings::default()), |a| c.admin(a))?;
        Ok(Config {
            places,
            admin,
            secrets,
            insecure,
            limits,
            log,
            store: file.store.map_or(StoreSettings::default(), |s| {
                let d = StoreSettings::default();
                StoreSettings {
                    dir: s.dir,
                    fsync: s.fsync.unwrap_or(d.fsync),
                    compact_bytes: s.compact_bytes.unwrap_or(d.compact_bytes),
                }
            }),
            servers,
        })
    }

    /// The server named `name`.
    pub fn server(&self, name: &str) -> Option<&ServerConfig> {
        self.servers.iter().find(|s| s.name == name)
    }
}

/// The smallest `max_line` that works: an IAMAT with a short id, a full location and a nanosecond
/// time is about 60 bytes.
pub const MIN_MAX_LINE: usize = 64;

/// Refuses `[places]` settings that parse but cannot work (`[limits]` are checked with their lines).
fn check_workable(places: &PlacesConfig) -> Result<(), String> {
    if places.timeout.is_zero() {
        return Err("[places] timeout_ms = 0 would fail every look-up at once".into());
    }
    let b = &places.budget;
    for (key, rate) in [
        ("connection_rate", b.connection_rate),
        ("server_rate", b.server_rate),
    ] {
        // A budget that never refills would refuse every look-up after the first burst.
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!(
                "[places] {key} = {rate} cannot work: it must be more than 0 (calls a second)"
            ));
        }
    }
    for (key, burst) in [
        ("connection_burst", b.connection_burst),
        ("server_burst", b.server_burst),
    ] {
        if burst == 0 {
            return Err(format!(
                "[places] {key} = 0 would refuse every look-up (at least 1)"
            ));
        }
    }
    Ok(())
}

/// Why `name` cannot name a server, if it cannot. A name is a field of AT lines, so it is what
/// herd-proto takes as one (non-empty, no white space of PROTOCOL.md §1); it also names the server's
/// log file (`<log-dir>/<Name>.log`) and data folder (`<data-dir>/<Name>/`), so it must be one plain
/// path component that stays in its folder, and it must read as one word in logs and on terminals.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.bytes().any(herd_proto::is_whitespace) {
        Some("must be non-empty without white space")
    } else if name == "." || name == ".." || name.contains(['/', '\\']) {
        Some("must not be `.`, `..` or hold `/` or `\\`: it names the server's log file and data folder")
    } else if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Some("must not hold a control character or white space")
    } else {
        None
    }
}

/// Whether a `host:port` listens on loopback only (`127.0.0.0/8`, `::1`, `localhost`).
fn is_loopback(listen: &str) -> bool {
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "herd.toml", None)
    }

    #[test]
    fn an_admin_address_beyond_loopback_needs_a_secret_or_insecure() {
        let herd = |top: &str, admin: &str| {
            parse(&format!(
                "{top}\n[[server]]\nname = \"A\"\nlisten = \"127.0.0.1:1\"\nadmin = \"{admin}\"\n"
            ))
        };
        let e = herd("", "0.0.0.0:2").unwrap_err().to_string();
        assert!(e.starts_with("herd.toml:5: "), "{e}");
        assert!(e.contains("admin address") && e.contains("secret"), "{e}");
        assert!(herd("", "127.0.0.1:2").is_ok());
        assert!(herd("", "localhost:2").is_ok());
        assert!(herd("[herd]\nsecret = \"s\"", "0.0.0.0:2").is_ok());
        assert!(herd("[herd]\ninsecure = true", "[::]:2").is_ok());
    }

    #[test]
    fn an_http_door_is_read_checked_and_follows_the_rule_of_listen() {
        let herd = |top: &str, http: &str| {
            parse(&format!(
                "{top}\n[[server]]\nname = \"A\"\nlisten = \"127.0.0.1:1\"\nhttp = \"{http}\"\n"
            ))
        };
        let c = herd("", "127.0.0.1:3").unwrap();
        assert_eq!(c.servers[0].http.as_deref(), Some("127.0.0.1:3"));
        assert_eq!(parse(DEFAULT_HERD).unwrap().servers[0].http, None);
        let e = herd("", "0.0.0.0:2").unwrap_err().to_string();
        assert!(e.contains("http door") && e.contains("secret"), "{e}");
        assert!(herd("[herd]\ninsecure = true", "0.0.0.0:2").is_ok());
        let e = herd("", "127.0.0.1:1").unwrap_err().to_string();
        assert!(e.contains("http address") && e.contains("twice"), "{e}");
        let e = herd("", "nope").unwrap_err().to_string();
        assert!(e.contains("not host:port"), "{e}");
        let l = herd(
            "[limits]\nmax_watches = 5\nmax_watches_per_connection = 2\nwatch_queue = 7",
            "127.0.0.1:3",
        )
        .unwrap()
        .limits;
        assert_eq!(
            (l.max_watches, l.max_watches_per_connection, l.watch_queue),
            (5, 2, 7)
        );
        assert!(herd("[limits]\nwatch_queue = 0", "127.0.0.1:3").is_err());
    }

    #[test]
    fn admin_guards_and_places_budget_are_read_and_checked() {
        let c = parse("[[server]]\nname = \"A\"\nlisten = \"127.0.0.1:1\"\n").unwrap();
        assert_eq!(c.admin, AdminSettings::default());
        assert_eq!(c.places.budget, PlacesBudget::default());
        let c = parse(
            "[admin]\nmax_connections = 8\nhosts = [\"Herd-1.Example.net\"]\n\
             [places]\nconnection_rate = 0.5\nconnection_burst = 3\nserver_rate = 7\nserver_burst = 9\n\
             [[server]]\nname = \"A\"\nlisten = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        assert_eq!(c.admin.max_connections, 8);
        assert_eq!(c.admin.hosts, ["herd-1.example.net"]);
        let b = c.places.budget;
        assert_eq!((b.connection_rate, b.connection_burst), (0.5, 3));
        assert_eq!((b.server_rate, b.server_burst), (7.0, 9));
        for bad in [
            "[admin]\nmax_connections = 0",
            "[places]\nconnection_rate = 0",
            "[places]\nserver_rate = -1",
            "[places]\nserver_burst = 0",
        ] {
            let text = format!("{bad}\n[[server]]\nname = \"A\"\nlisten = \"127.0.0.1:1\"\n");
            assert!(parse(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_server_name_is_one_word_and_one_plain_path_component() {
        // A TOML basic string: every character but printable ASCII as a `\u` escape.
        let one = |name: &str| {
            let quoted: String = name
                .chars()
                .map(|c| match c {
                    ' '..='~' if c != '"' && c != '\\' => c.to_string(),
                    c => format!("\\u{:04X}", c as u32),
                })
                .collect();
            format!("[[server]]\nname = \"{quoted}\"\nlisten = \"127.0.0.1:1\"\n")
        };
        for bad in [
            "",
            ".",
            "..",
            "../escaped",
            "a/b",
            "/tmp/x/abs",
            "a\\b",
            "..\\up",
            "nul\0",
            "tab\tx",
            "esc\u{1b}[31m",
            "del\u{7f}",
            "rs\u{1e}",
            "nel\u{85}",
            "ls\u{2028}",
            "no\u{a0}break",
        ] {
            let got = parse(&one(bad)).unwrap_err().to_string();
            assert!(
                got.starts_with(&format!("herd.toml:2: server name {bad:?} must")),
                "{bad:?}: {got}"
            );
        }
        for good in [
            "Alford", "a.b", "...", ".hidden", "x-1_y", "Zürich", "\u{ff}",
        ] {
            let c = parse(&one(good)).unwrap_or_else(|e| panic!("{good:?}: {e}"));
            assert_eq!(c.servers[0].name, good);
        }
    }

    #[test]
    fn default_herd_is_protocol_section_7() {
        let c = Config::parse(DEFAULT_HERD, "<default>", None).unwrap();
        assert_eq!(c.servers.len(), 5);
        assert_eq!(c.places.backend, Backend::Offline);
        let alford = c.server("Alford").unwrap();
        assert_eq!(alford.listen, "127.0.0.1:12000");
        assert_eq!(alford.neighbors, ["Hamilton", "Welsh"]);
        assert_eq!(c.server("Welsh").unwrap().neighbors, ["Alford", "Ball"]);
    }

    #[test]
    fn key_picks_google() {
        let c = Config::parse(DEFAULT_HERD, "<default>", Some("k".into())).unwrap();
        assert_eq!(c.places.backend, Backend::Google);
        assert!(!format!("{:?}", c.places).contains("\"k\""));
    }

    #[test]
    fn secrets_and_exposure() {
        let herd = |extra: &str, listen: &str| {
            parse(&format!(
                "[herd]\n{extra}\n[[server]]\nname = \"A\"\nlisten = \"{listen}\"\n"
            ))
        };
        assert_eq!(
            herd("secret = \"x\"", "127.0.0.1:1").unwrap().secrets,
            ["x"]
        );
        assert_eq!(
            herd("secrets = [\"new\", \"old\"]", "127.0.0.1:1")
                .unwrap()
                .secrets,
            ["new", "old"]
        );
        for listen in ["127.0.0.1:1", "[::1]:1", "localhost:1", "127.0.0.2:1"] {
            assert!(herd("", listen).is_ok(), "{listen}");
        }
        for listen in ["0.0.0.0:1", "10.0.0.1:1", "example.org:1", "[::]:1"] {
            let e = herd("", listen).unwrap_err().to_string();
            assert!(e.contains("secret") && e.contains("insecure"), "{e}");
            assert!(e.starts_with("herd.toml:5:"), "{e}");
            assert!(herd("insecure = true", listen).is_ok());
            assert!(herd("secret = \"s\"", listen).is_ok());
        }
        let e = herd("secret = \"a\"\nsecrets = [\"b\"]", "127.0.0.1:1").unwrap_err();
        assert!(e.to_string().contains("both"), "{e}");
        let e = herd("secrets = [\"a\", \"\"]", "127.0.0.1:1").unwrap_err();
        assert!(e.to_string().contains("must not be empty"), "{e}");
    }

    #[test]
    fn log_table() {
        let c = parse("[[server]]\nname = \"A\"\nlisten = \"127.0.0.1:1\"\n").unwrap();
        assert_eq!(c.log, LogSettings::default());
        let c = parse(
            "[log]\nlines = false\nbodies = true\nmax_bytes = 1000\nkeep = 2\n\
             [[server]]\nname = \"A\"\nlisten = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        assert_eq!(
            c.log,
            LogSettings {
                lines: false,
                bodies: true,
                max_bytes: 1000,
                keep: 2
            }
        );
        // The bound itself is taken; one past it is refused (see the bad-config table).
        let c = parse("[log]\nkeep = 1000\n[[server]]\nname = \"A\"\nlisten = \"127.0.0.1:1\"\n")
            .unwrap();
        assert_eq!(c.log.keep, MAX_KEEP);
        let e = parse("[log]\nmax_bytes = -1\n[[server]]\nname = \"A\"\nlisten = \"x:1\"\n");
        assert!(e.unwrap_err().to_string().starts_with("herd.toml:2:"));
    }

    #[test]
    fn limits_have_finite_defaults_and_read_every_key() {
        let d = parse("[[server]]\nname = \"A\"\nlisten = \"127.0.0.1:1\"\n")
            .unwrap()
            .limits;
        assert_eq!(
            (d.max_connections, d.max_connections_per_ip, d.max_clients),
            (10_000, 10_000, 10_000_000)
        );
        assert_eq!(d.line_timeout, Duration::from_secs(10));
        assert_eq!(d.max_future, Duration::from_secs(86_400));
        let l = parse(
            "[limits]\nmax_line = 100\nmax_connections = 50\nmax_connections_per_ip = 5\n\
             line_timeout_ms = 700\nidle_timeout_ms = 800\nmax_future_ms = 0\nmax_clients = 3\n\
             [[server]]\nname = \"A\"\nlisten = \"127.0.0.1:1\"\n",
        )
        .unwrap()
        .limits;
        assert_eq!(
            (
                l.max_line,
                l.max_connections,
                l.max_connections_per_ip,
                l.max_clients
            ),
            (100, 50, 5, 3)
        );
        assert_eq!(
            (l.line_timeout, l.idle_timeout, l.max_future),
            (
                Duration::from_millis(700),
                Duration::from_millis(800),
                Duration::ZERO
            )
        );
        // Unset, the per-address limit follows the total.
        let l = parse(
            "[limits]\nmax_connections = 50\n[[server]]\nname = \"A\"\nlisten = \"127.0.0.1:1\"\n",
        )
        .unwrap()
        .limits;
        assert_eq!(l.max_connections_per_ip, 50);
    }

    #[test]
    fn store_table() {
        let c = parse("[[server]]\nname = \"A\"\nlisten = \"127.0.0.1:1\"\n").unwrap();
        assert_eq!(c.store, StoreSettings::default());
        assert_eq!(c.store.fsync, Fsync::Everysec);
        let c = parse(
            "[store]\ndir = \"data\"\nfsync = \"always\"\ncompact_bytes = 1000\n\
             [[server]]\nname = \"A\"\nlisten = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        assert_eq!(
            c.store,
            StoreSettings {
                dir: Some("data".into()),
                fsync: Fsync::Always,
                compact_bytes: 1000
            }
        );
        let e =
            parse("[store]\nfsync = \"sometimes\"\n[[server]]\nname = \"A\"\nlisten = \"x:1\"\n");
        let e = e.unwrap_err().to_string();
        assert!(
            e.starts_with("herd.toml:2:") && e.contains("sometimes"),
            "{e}"
        );
    }

    #[test]
    fn one_sided_links_become_symmetric() {
        let c = parse(
            "[[server]]\nname = \"A\"\nlisten = \"127.0.0.1:1\"\nneighbors = [\"B\"]\n\
             [[server]]\nname = \"B\"\nlisten = \"127.0.0.1:2\"\n",
        )
        .unwrap();
        assert_eq!(c.server("B").unwrap().neighbors, ["A"]);
    }

    #[test]
    fn bad_configs_name_file_line_and_problem() {
        let two = |extra: &str| {
            format!(
                "[[server]]\nname = \"A\"\nlisten = \"127.0.0.1:1\"\nneighbors = [\"B\"]\n\n\
                 [[server]]\nname = \"B\"\nlisten = \"127.0.0.1:2\"\n{extra}"
            )
        };
        let cases = [
            (
                two("neighbors = [\"C\"]\n"),
                "herd.toml:9: B lists unknown neighbour \"C\"",
            ),
            (
                two("neighbors = [\"B\"]\n"),
                "herd.toml:9: B lists itself as a neighbour",
            ),
            (
                two("[[server]]\nname = \"A\"\nlisten = \"127.0.0.1:3\"\n"),
                "herd.toml:10: server name \"A\" is used twice",
            ),
            (
                two("[[server]]\nname = \"C\"\nlisten = \"127.0.0.1:2\"\n"),
                "herd.toml:11: listen address \"127.0.0.1:2\" is used twice",
            ),
            (two("colour = 1\n"), "herd.toml:9: unknown field `colour`"),
            ("[[server]\n".to_string(), "herd.toml:1:"),
            (
                "[places]\nbackend = \"bing\"\n[[server]]\nname = \"A\"\nlisten = \"x:1\"\n".into(),
                "herd.toml:2: unknown variant `bing`",
            ),
            (
                "[places]\nbackend = \"google\"\n[[server]]\nname = \"A\"\nlisten = \"x:1\"\n"
                    .into(),
                "needs an API key",
            ),
            ("".into(), "no [[server]]"),
            ("".into(), "no [[server]]"),
            (
                "[limits]\nmax_connections = 0\n[[server]]\nname = \"A\"\nlisten = \"x:1\"\n".into(),
                "herd.toml:2: [limits] max_connections = 0 cannot work: it must be at least 1",
            ),
            (
                two("[limits]\nline_timeout_ms = 0\n"),
                "herd.toml:10: [limits] line_timeout_ms = 0 cannot work",
            ),
            (
                two("[limits]\nmax_clients = 0\n"),
                "herd.toml:10: [limits] max_clients = 0 cannot work",
            ),
            (
                two("[limits]\nmax_clients = 5000000000\n"),
                "herd.toml:10: [limits] max_clients = 5000000000 cannot work: it must be at most 4294967295",
            ),
            (
                two("[limits]\nmax_connections_per_ip = 0\n"),
                "herd.toml:10: [limits] max_connections_per_ip = 0",
            ),
            (two("[limits]\nidle_timeout_ms = 0\n"), "herd.toml:10: [limits] idle_timeout_ms"),
            (two("[limits]\nmax_line = 0\n"), "herd.toml:10: [limits] max_line"),
            (two("[limits]\nmax_future_ms = -1\n"), "herd.toml:10:"),
            (two("[limits]\nmax_conections = 5\n"), "herd.toml:10: unknown field `max_conections`"),
            (
                format!("[limits]\nmax_line = 63\n{}", two("")),
                "[limits] max_line = 63 cannot work: it must be at least 64",
            ),
            (
                format!("[places]\ntimeout_ms = 0\n{}", two("")),
                "timeout_ms = 0",
            ),
            (
                format!("[places]\nmax_in_flight = 0\n{}", two("")),
                "max_in_flight = 0",
            ),
            (
                two("admin = \"127.0.0.1:1\"\n"),
                "herd.toml:9: admin address \"127.0.0.1:1\" is used twice",
            ),
            (
                two("admin = \"nope\"\n"),
                "herd.toml:9: admin address \"nope\" of B",
            ),
            (
                two("[[server]]\nname = \"../escaped\"\nlisten = \"127.0.0.1:3\"\n"),
                "herd.toml:10: server name \"../escaped\" must not be `.`, `..` or hold `/`",
            ),
            (
                two("[log]\nkeep = 1001\n"),
                "herd.toml:10: [log] keep = 1001 cannot work: it must be at most 1000",
            ),
            (
                two("[log]\nkeep = 18446744073709551615\n"),
                "herd.toml:10: [log] keep = 18446744073709551615 cannot work: it must be at most 1000",
            ),
        ];
        for (text, want) in cases {
            let got = parse(&text).unwrap_err().to_string();
            assert!(got.contains(want), "got {got:?}, want {want:?}");
        }
    }
}
