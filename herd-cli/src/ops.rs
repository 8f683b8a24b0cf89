//! `herd status` and `herd ping`: how the servers of a herd are doing, from their admin addresses.
//!
//! The admin address answers `GET /status` (JSON) and `GET /health` over HTTP/1.1, with a
//! `Content-Length` and `Connection: close` when asked; so a request here is one write and a read to
//! the end, and the command-line client stays light (no HTTP library). What can go wrong is an
//! [`AskError`], so each failure has its own short reason in the table.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use herd_config::Config;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{target, within, ServerChoice};

/// Largest admin answer read (a `/status` of a server with many links is a few KiB).
const MAX_ADMIN_ANSWER: u64 = 1 << 20;

/// The environment variable holding the admin token sent as `Authorization: Bearer` (an admin
/// address beyond loopback asks for it when the herd has a secret: `herd-server admin-token`).
pub const TOKEN_ENV: &str = "HERD_ADMIN_TOKEN";

/// Why asking an admin address failed.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// The host name does not resolve (or not in time).
    #[error("{addr} does not resolve: {why}")]
    Resolve {
        /// The `host:port` asked.
        addr: String,
        /// What the resolver said.
        why: String,
    },
    /// No whole answer within the time-out.
    #[error("asking {addr}: no answer within {after:?} (--timeout)")]
    Timeout {
        /// The `host:port` asked.
        addr: String,
        /// The time-out.
        after: Duration,
    },
    /// Connecting, sending or reading failed.
    #[error("{doing} {addr}")]
    Io {
        /// What was being done: `connecting to`, `sending to`, `reading from`.
        doing: &'static str,
        /// The `host:port` asked.
        addr: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// What came back is not an HTTP/1 answer.
    #[error("{addr}: the answer is not HTTP")]
    NotHttp {
        /// The `host:port` asked.
        addr: String,
    },
    /// An answer other than 200.
    #[error("HTTP {code}")]
    Status {
        /// Its status code.
        code: u16,
    },
    /// A 200 whose body is not the JSON asked for.
    #[error("the status is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// The config gives the server no admin address.
    #[error("no admin address, client port {}", if *.client_port_open { "open" } else { "closed" })]
    NoAdmin {
        /// Whether its client port accepts connections.
        client_port_open: bool,
    },
}

impl AskError {
    /// A few words for the table: what an operator checks first (refused: nothing listens; timed
    /// out: a firewall or a stuck process; no admin address: the config; HTTP 401: the token).
    pub fn reason(&self) -> String {
        use std::io::ErrorKind as K;
        match self {
            AskError::Resolve { .. } => "does not resolve".to_owned(),
            AskError::Timeout { .. } => "timed out".to_owned(),
            AskError::Io { source, .. } => match source.kind() {
                K::ConnectionRefused => "refused".to_owned(),
                K::TimedOut => "timed out".to_owned(),
                K::ConnectionReset | K::ConnectionAborted => "reset".to_owned(),
                K::UnexpectedEof => "closed early".to_owned(),
                _ => source.to_string(),
            },
            AskError::Status { code: 401 } => format!("HTTP 401: set {TOKEN_ENV}"),
            AskError::Status { code } => format!("HTTP {code}"),
            AskError::NotHttp { .. } | AskError::NotJson(_) => "not the herd's status".to_owned(),
            AskError::NoAdmin {
                client_port_open: true,
            } => "no admin address".to_owned(),
            e @ AskError::NoAdmin { .. } => e.to_string(),
        }
    }
}

/// `GET path` on `admin` (`HOST:PORT`): the status code and the body.
///
/// # Errors
/// The address does not resolve, does not answer HTTP within `timeout`, or the connection fails.
pub async fn get(admin: &str, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>), AskError> {
    let addr = admin.to_owned();
    let io = |doing, source| AskError::Io {
        doing,
        addr: addr.clone(),
        source,
    };
    let work = async {
        let to = target::lookup(admin, timeout)
            .await
            .map_err(|e| AskError::Resolve {
                addr: addr.clone(),
                why: format!("{e:#}"),
            })?;
        let mut s = TcpStream::connect(to)
            .await
            .map_err(|e| io("connecting to", e))?;
        let token = std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty() && !t.contains(['\r', '\n']))
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\n{token}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .map_err(|e| io("sending to", e))?;
        let mut all = Vec::new();
        (&mut s)
            .take(MAX_ADMIN_ANSWER)
            .read_to_end(&mut all)
            .await
            .map_err(|e| io("reading from", e))?;
        parse_response(&all).ok_or_else(|| AskError::NotHttp { addr: addr.clone() })
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(answer) => answer,
        Err(_) => Err(AskError::Timeout {
            addr: format!("{admin}{path}"),
            after: timeout,
        }),
    }
}

/// The status code and body of an HTTP/1.x response read to its end; `None` if it is not one.
fn parse_response(all: &[u8]) -> Option<(u16, Vec<u8>)> {
    let head_end = all.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&all[..head_end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|_| head.starts_with("HTTP/1."))?;
    Some((status, all[head_end + 4..].to_vec()))
}

/// The servers to ask: `(name, client address, admin address)`.
fn servers(
    target: &ServerChoice,
    admin: Option<&str>,
) -> anyhow::Result<Vec<(String, String, Option<String>)>> {
    let (herd, located): (Config, _) = target::herd(target.config.as_deref())?;
    if target::names_a_server(target.to.as_deref(), &herd) {
        target::say_using(&located);
    }
    if let Some(a) = admin {
        let listen = target::address_of(target.to.as_deref(), &herd)?;
        let name = herd
            .servers
            .iter()
            .find(|s| s.listen == listen)
            .map_or_else(|| "?".to_owned(), |s| s.name.clone());
        return Ok(vec![(name, listen, Some(a.to_owned()))]);
    }
    let chosen: Vec<_> = match target.to.as_deref() {
        None => herd.servers.iter().collect(),
        Some(to) => {
            let listen = target::address_of(Some(to), &herd)?;
            match herd.servers.iter().find(|s| s.listen == listen) {
                Some(s) => vec![s],
                None => return Ok(vec![("?".into(), listen, None)]),
            }
        }
    };
    Ok(chosen
        .into_iter()
        .map(|s| (s.name.clone(), s.listen.clone(), s.admin.clone()))
        .collect())
}

/// Whether something accepts connections at `addr` within `timeout`.
async fn reachable(addr: &str, timeout: Duration) -> bool {
    within(timeout, String::new, async {
        let a = target::lookup(addr, timeout).await?;
        Ok(TcpStream::connect(a).await?)
    })
    .await
    .is_ok()
}

fn uptime(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// `herd status`: one row a server, like `consul members`. Exit 0 when every server asked is up, 3 when
/// any is down.
pub async fn status(
    target: &ServerChoice,
    admin: Option<&str>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let servers = servers(target, admin)?;
    let answers = ask_all(&servers, target.timeout).await?;
    let mut rows = Vec::new();
    let mut all = Vec::new();
    let mut all_up = true;
    for ((name, listen, _), answer) in servers.iter().zip(answers) {
        match answer {
            Ok(v) => {
                rows.push(up_row(name, listen, &v));
                all.push(v);
            }
            Err(e) => {
                let (row, json, up) = down_row(name, listen, e);
                all_up &= up;
                rows.push(row);
                all.push(json);
            }
        }
    }
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", Value::Array(all))?;
    } else {
        write!(out, "{}", table(&rows))?;
    }
    Ok(if all_up {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// Every server's `/status`, in the order of `servers`. Asked together, so a herd with servers
/// down waits one time-out, not one a server.
async fn ask_all(
    servers: &[(String, String, Option<String>)],
    timeout: Duration,
) -> anyhow::Result<Vec<Result<Value, AskError>>> {
    let mut asks = tokio::task::JoinSet::new();
    for (i, (_, listen, admin)) in servers.iter().enumerate() {
        let (listen, admin) = (listen.clone(), admin.clone());
        asks.spawn(async move { (i, ask_status(&listen, admin.as_deref(), timeout).await) });
    }
    let mut answers: Vec<Option<Result<Value, AskError>>> = servers.iter().map(|_| None).collect();
    while let Some(done) = asks.join_next().await {
        let (i, answer) = done.context("status task")?;
        answers[i] = Some(answer);
    }
    Ok(answers
        .into_iter()
        .map(|a| {
            a.unwrap_or_else(|| {
                Err(AskError::NoAdmin {
                    client_port_open: false,
                })
            })
        })
        .collect())
}

/// The row of a server that answered with its status `v`.
fn up_row(name: &str, listen: &str, v: &Value) -> [String; 7] {
    let links = v["links"].as_array().map_or(0, Vec::len);
    let up = v["links"]
        .as_array()
        .map_or(0, |l| l.iter().filter(|l| l["up"] == true).count());
    [
        v["server"].as_str().unwrap_or(name).to_owned(),
        listen.to_owned(),
        if v["ready"] == true { "up" } else { "starting" }.to_owned(),
        v["clients"].as_u64().map_or("-".into(), |c| c.to_string()),
        format!("{up}/{links}"),
        v["records"].as_u64().map_or("-".into(), |c| c.to_string()),
        v["uptime_seconds"].as_f64().map_or("-".into(), uptime),
    ]
}

/// The row and the JSON of a server that did not answer, and whether it is up all the same (its
/// client port accepts connections, and it has no admin address to ask).
fn down_row(name: &str, listen: &str, e: AskError) -> ([String; 7], Value, bool) {
    let up = matches!(
        e,
        AskError::NoAdmin {
            client_port_open: true
        }
    );
    let why = e.reason();
    let row = [
        name.to_owned(),
        listen.to_owned(),
        if up {
            "up (no admin address)".to_owned()
        } else {
            format!("down ({why})")
        },
        "-".into(),
        "-".into(),
        "-".into(),
        "-".into(),
    ];
    let json = serde_json::json!({
        "server": name, "listen": listen, "up": up, "reason": why, "error": anyhow::Error::new(e).to_string(),
    });
    (row, json, up)
}

/// One server's `/status`; an error says whether its client port at least accepts connections.
async fn ask_status(
    listen: &str,
    admin: Option<&str>,
    timeout: Duration,
) -> Result<Value, AskError> {
    match admin {
        Some(a) => match get(a, "/status", timeout).await? {
            (200, body) => Ok(serde_json::from_slice::<Value>(&body)?),
            (code, _) => Err(AskError::Status { code }),
        },
        None => Err(AskError::NoAdmin {
            client_port_open: reachable(listen, timeout).await,
        }),
    }
}

/// The status table. "Connections" are the client connections open now; "Records" the clients whose
/// location the server holds (one record a client).
fn table(rows: &[[String; 7]]) -> String {
    let head = [
        "Server",
        "Address",
        "Status",
        "Connections",
        "Links",
        "Records",
        "Uptime",
    ];
    let mut widths = head.map(str::len);
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&head);
    for r in rows {
        line(&r.each_ref().map(String::as_str));
    }
    out
}

/// `herd ping`: the admin `/health` (or a connection to the client port) and how long it took.
pub async fn ping(target: &ServerChoice, admin: Option<&str>) -> anyhow::Result<ExitCode> {
    let (name, listen, admin) = servers(target, admin)?
        .into_iter()
        .next()
        .context("the herd has no server")?;
    let began = Instant::now();
    match admin {
        Some(a) => {
            let (code, body) = get(&a, "/health", target.timeout).await?;
            let ms = began.elapsed().as_secs_f64() * 1000.0;
            let text = String::from_utf8_lossy(&body).trim().to_owned();
            println!("{name} ({listen}, admin {a}): {text} in {ms:.2} ms");
            Ok(if code == 200 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        None => {
            let addr = target::lookup(&listen, target.timeout).await?;
            within(target.timeout, || format!("connecting to {addr}"), async {
                TcpStream::connect(addr)
                    .await
                    .with_context(|| format!("connecting to {addr}"))
            })
            .await?;
            let ms = began.elapsed().as_secs_f64() * 1000.0;
            println!("{name} ({listen}): accepts connections, {ms:.2} ms (no admin address: health not checked)");
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_and_tables() {
        let (code, body) =
            parse_response(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nno")
                .unwrap();
        assert_eq!((code, &body[..]), (503, &b"no"[..]));
        assert!(parse_response(b"-ERR unknown command\r\n").is_none());
        let t = table(&[[
            "Alford".into(),
            "127.0.0.1:12000".into(),
            "up".into(),
            "3".into(),
            "2/2".into(),
            "10".into(),
            "1m05s".into(),
        ]]);
        assert_eq!(t, "Server  Address          Status  Connections  Links  Records  Uptime\nAlford  127.0.0.1:12000  up      3            2/2    10       1m05s\n");
        assert_eq!(uptime(3_725.0), "1h02m");
        let refused = AskError::Io {
            doing: "connecting to",
            addr: "127.0.0.1:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(refused.reason(), "refused");
        let late = AskError::Timeout {
            addr: "a/status".into(),
            after: Duration::from_secs(1),
        };
        assert_eq!(late.reason(), "timed out");
        assert_eq!(AskError::Status { code: 503 }.reason(), "HTTP 503");
        assert_eq!(
            AskError::Status { code: 401 }.reason(),
            "HTTP 401: set HERD_ADMIN_TOKEN"
        );
        assert_eq!(
            AskError::NoAdmin {
                client_port_open: false
            }
            .reason(),
            "no admin address, client port closed"
        );
    }
}
