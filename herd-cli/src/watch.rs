//! `herd watch client ID` / `herd watch near LAT LON KM`: records as the herd stores them, over a
//! server's WebSocket door (`GET /v1/ws`, PROTOCOL.md §10).

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use futures::{SinkExt as _, StreamExt as _};
use herd_proto::{record_json, AtRecord, WatchLine};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::{target, usage, ServerChoice};

#[derive(Args)]
pub struct WatchArgs {
    #[command(subcommand)]
    what: What,
    /// Print each record as one line of JSON fields (those of `herd iamat --json`).
    #[arg(long, global = true)]
    json: bool,
    /// The server's HTTP door (HOST:PORT) instead of the config's `http` of the --to server.
    #[arg(long, global = true, value_name = "HOST:PORT")]
    http: Option<String>,
    /// Stop after this many records (default: run until interrupted or the server closes).
    #[arg(long, global = true, value_name = "N")]
    count: Option<u64>,
}

#[derive(Subcommand)]
enum What {
    /// Every record of client ID.
    Client {
        /// The client id.
        id: String,
    },
    /// Every record within KM kilometres of LAT LON (decimal degrees; KM more than 0, at most 50).
    #[command(allow_negative_numbers = true)]
    Near {
        /// Latitude in degrees.
        lat: String,
        /// Longitude in degrees.
        lon: String,
        /// Radius in kilometres.
        km: String,
    },
}

/// The HTTP door to ask: `--http`, else the `http` of the --to server (or the herd's first).
fn door(args: &WatchArgs, target: &ServerChoice) -> anyhow::Result<String> {
    if let Some(h) = &args.http {
        return Ok(h.clone());
    }
    let (herd, located) = target::herd(target.config.as_deref())?;
    let to = target.to.as_deref();
    let server = match to {
        None => herd.servers.first(),
        Some(t) => herd.server(t),
    };
    let Some(server) = server else {
        return Err(usage(format!(
            "--to {:?} is not a server of the herd: give its HTTP door with --http HOST:PORT",
            to.unwrap_or_default()
        )));
    };
    target::say_using(&located);
    server.http.clone().ok_or_else(|| {
        usage(format!(
            "{} has no http address in the config: give one with --http HOST:PORT",
            server.name
        ))
    })
}

pub async fn run(args: WatchArgs, target: &ServerChoice) -> anyhow::Result<ExitCode> {
    let line = watch_line(&args.what)?;
    let addr = door(&args, target)?;
    let url = format!("ws://{addr}/v1/ws");
    let (mut ws, _) = tokio::time::timeout(target.timeout, tokio_tungstenite::connect_async(&url))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to {url}: no answer within {:?}", target.timeout))?
        .with_context(|| format!("connecting to {url}"))?;
    ws.send(Message::text(line.clone()))
        .await
        .with_context(|| format!("sending to {url}"))?;
    let mut seen = 0u64;
    let mut confirmed = false;
    let mut stdout = std::io::stdout();
    while args.count.is_none_or(|n| seen < n) {
        let next = if confirmed {
            ws.next().await
        } else {
            tokio::time::timeout(target.timeout, ws.next())
                .await
                .map_err(|_| {
                    anyhow::anyhow!("{url} did not answer {line:?} within {:?}", target.timeout)
                })?
        };
        let Some(text) = text_of(next, &url)? else {
            continue;
        };
        let text = text.trim_end_matches('\n');
        if !confirmed {
            if let Some(refused) = confirm(text, &line, &url)? {
                return Ok(refused);
            }
            confirmed = true;
            continue;
        }
        print_record(text, &url, args.json, &mut stdout)?;
        seen += 1;
    }
    let _ = ws.close(None).await;
    Ok(ExitCode::SUCCESS)
}

/// The WATCH line asked for, checked here by the same parser the server uses, so a typo is a usage
/// error, not a round trip.
fn watch_line(what: &What) -> anyhow::Result<String> {
    let line = match what {
        What::Client { id } => format!("WATCH CLIENT {id}"),
        What::Near { lat, lon, km } => format!("WATCH NEAR {lat} {lon} {km}"),
    };
    if let Err(e) = WatchLine::parse(line.as_bytes()) {
        return Err(usage(format!("{line:?}: {}", e.kind.description())));
    }
    Ok(line)
}

/// The text of what the door sent (`None`: a message with none, such as a ping); an error when it
/// closed the connection or the watch.
fn text_of(
    next: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    url: &str,
) -> anyhow::Result<Option<String>> {
    Ok(Some(match next {
        None => anyhow::bail!("{url} closed the connection"),
        Some(Err(e)) => return Err(e).with_context(|| format!("reading from {url}")),
        Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
        Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
        Some(Ok(Message::Close(c))) => {
            let why = c.map_or_else(
                || "no reason".to_owned(),
                |c| format!("{}: {}", u16::from(c.code), c.reason),
            );
            anyhow::bail!("{url} closed the watch ({why})");
        }
        Some(Ok(_)) => return Ok(None),
    }))
}

/// The door's first answer: `WATCHING …` confirms the watch (said on stderr); `? …` refuses it
/// (exit 1, returned); anything else is not the herd's door.
fn confirm(text: &str, line: &str, url: &str) -> anyhow::Result<Option<ExitCode>> {
    if text.starts_with("? ") {
        eprintln!(
            "herd: the server refused {line:?}: a watch limit of the server, or of this connection"
        );
        return Ok(Some(ExitCode::from(1)));
    }
    anyhow::ensure!(
        text.starts_with("WATCHING "),
        "{url} answered {text:?}, which is not the herd's WebSocket door"
    );
    eprintln!("herd: {text} at {url}");
    Ok(None)
}

/// Prints one pushed record: a line of JSON fields, or a line for people.
fn print_record(
    text: &str,
    url: &str,
    json: bool,
    stdout: &mut std::io::Stdout,
) -> anyhow::Result<()> {
    let Ok(record) = AtRecord::parse(text.as_bytes()) else {
        anyhow::bail!("{url} pushed {text:?}, which is not an AT line");
    };
    if json {
        writeln!(stdout, "{}", Value::Object(record_json(&record)))?;
    } else {
        writeln!(
            stdout,
            "{}  {}  at {}  (from {}, {} s)",
            String::from_utf8_lossy(&record.client),
            record.location.as_str(),
            record.time.as_str(),
            String::from_utf8_lossy(&record.server),
            record.diff,
        )?;
    }
    stdout.flush()?;
    Ok(())
}
