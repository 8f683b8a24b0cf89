//! `herd`: the command-line client of a herd.

mod bench;
mod pretty;
mod target;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use herd_proto::{AtRecord, ClientTime, Location, Timestamp};
use pretty::ColorChoice;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

/// Talk to a herd: report a location, ask what is near a client, send raw lines, tail a session,
/// or load-test a server.
///
/// `--to` takes a server name of the herd (from --config, or the built-in default herd: Alford, Ball,
/// Hamilton, Holiday, Welsh) or HOST:PORT; the default is the herd's first server.
///
/// Exit codes: 0 success, 1 the server answered `? …`, 2 usage error, 3 network error.
#[derive(Parser)]
#[command(name = "herd", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Target {
    /// Server name of the herd, or HOST:PORT.
    #[arg(long, global = true, value_name = "SERVER|HOST:PORT")]
    to: Option<String>,
    /// The herd's config file, for server names.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Report where CLIENT is; prints the AT line.
    #[command(allow_negative_numbers = true)]
    Iamat {
        /// The client id.
        client: String,
        /// Latitude in degrees, or a whole ISO 6709 location such as +34.068930-118.445127.
        lat_or_location: String,
        /// Longitude in degrees (when LAT is a number).
        lon: Option<f64>,
        /// The client time (POSIX seconds, up to nine decimals); default: now.
        #[arg(long)]
        time: Option<String>,
    },
    /// Ask what is near CLIENT: the AT line, then the places.
    Whatsat {
        /// The client whose location is the centre.
        client: String,
        /// Radius in kilometres (more than 0, at most 50).
        radius_km: String,
        /// Most places (0 to 20).
        bound: String,
        /// Print the JSON, pretty and coloured.
        #[arg(long, conflicts_with = "raw")]
        json: bool,
        /// Print the bytes exactly as received.
        #[arg(long)]
        raw: bool,
        /// Colour: auto (on a terminal, unless NO_COLOR is set), always, never.
        #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
        color: ColorChoice,
    },
    /// An interactive session: lines from stdin go out, replies print as they arrive (WHATSAT JSON
    /// pretty-printed). Ctrl-D half-closes and waits for the rest.
    Tail {
        /// Colour: auto, always, never.
        #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
        color: ColorChoice,
    },
    /// Send raw LINEs on one connection (pipelined) and print the replies as received.
    Send {
        /// The lines, sent as given, each followed by a newline.
        #[arg(required = true)]
        lines: Vec<String>,
    },
    /// Load generator: many connections, pipelining, a mix of IAMAT and WHATSAT, or any raw line.
    Bench(bench::BenchArgs),
}

/// A mistake in the command line that clap could not see (exit code 2).
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("herd: error: {err:?}");
            if err.downcast_ref::<Usage>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(3)
            }
        }
    }
}

async fn connect(target: &Target) -> anyhow::Result<(TcpStream, SocketAddr)> {
    let addr = target::resolve(target.to.as_deref(), target.config.as_deref())
        .await
        .map_err(|e| usage(format!("{e:#}")))?;
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true).ok();
    Ok((stream, addr))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let target = cli.target;
    match cli.command {
        Command::Iamat {
            client,
            lat_or_location,
            lon,
            time,
        } => iamat(&client, &lat_or_location, lon, time, &target).await,
        Command::Whatsat {
            client,
            radius_km,
            bound,
            json,
            raw,
            color,
        } => whatsat(&client, &radius_km, &bound, json, raw, color, &target).await,
        Command::Tail { color } => tail(color.enabled(), &target).await,
        Command::Send { lines } => send(&lines, &target).await,
        Command::Bench(args) => bench::run(args, &target).await,
    }
}

fn location(lat_or_location: &str, lon: Option<f64>) -> anyhow::Result<String> {
    match lon {
        Some(lon) => {
            let lat: f64 = lat_or_location
                .parse()
                .map_err(|_| usage(format!("latitude {lat_or_location:?} is not a number")))?;
            Location::from_degrees(lat, lon)
                .map(|l| l.as_str().to_owned())
                .ok_or_else(|| usage(format!("{lat}, {lon} is not a location (latitude -90..90, longitude -180..180)")))
        }
        None => Location::parse(lat_or_location.as_bytes())
            .map(|l| l.as_str().to_owned())
            .map_err(|e| usage(format!("{lat_or_location:?} is not an ISO 6709 location like +34.068930-118.445127 ({e}); or give LAT LON"))),
    }
}

/// Reads one line (with its `\n`); an empty vector at EOF.
async fn read_line(r: &mut BufReader<OwnedReadHalf>) -> anyhow::Result<Vec<u8>> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)
        .await
        .context("reading the reply")?;
    Ok(line)
}

async fn iamat(
    client: &str,
    loc: &str,
    lon: Option<f64>,
    time: Option<String>,
    target: &Target,
) -> anyhow::Result<ExitCode> {
    let location = location(loc, lon)?;
    let time = match time {
        Some(t) => ClientTime::parse(t.as_bytes())
            .map_err(|e| usage(format!("--time {t:?}: {e}")))?
            .as_str()
            .to_owned(),
        None => ClientTime::from_timestamp(Timestamp::now())
            .as_str()
            .to_owned(),
    };
    let (stream, addr) = connect(target).await?;
    let (r, mut w) = stream.into_split();
    w.write_all(format!("IAMAT {client} {location} {time}\n").as_bytes())
        .await
        .with_context(|| format!("sending to {addr}"))?;
    let mut r = BufReader::new(r);
    let line = read_line(&mut r).await?;
    if line.is_empty() {
        anyhow::bail!("{addr} closed the connection without an answer");
    }
    std::io::stdout().write_all(&line)?;
    Ok(if line.starts_with(b"? ") {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[allow(clippy::too_many_arguments)]
async fn whatsat(
    client: &str,
    radius: &str,
    bound: &str,
    json: bool,
    raw: bool,
    color: ColorChoice,
    target: &Target,
) -> anyhow::Result<ExitCode> {
    let (stream, addr) = connect(target).await?;
    let (r, mut w) = stream.into_split();
    w.write_all(format!("WHATSAT {client} {radius} {bound}\n").as_bytes())
        .await
        .with_context(|| format!("sending to {addr}"))?;
    let mut r = BufReader::new(r);
    let first = read_line(&mut r).await?;
    if first.is_empty() {
        anyhow::bail!("{addr} closed the connection without an answer");
    }
    let mut stdout = std::io::stdout().lock();
    if first.starts_with(b"? ") {
        stdout.write_all(&first)?;
        return Ok(ExitCode::from(1));
    }
    let mut body = Vec::new();
    loop {
        let line = read_line(&mut r).await?;
        if line.is_empty() {
            anyhow::bail!("{addr} closed the connection inside the answer");
        }
        if line == b"\n" {
            break;
        }
        body.extend_from_slice(&line);
    }
    if raw {
        stdout.write_all(&first)?;
        stdout.write_all(&body)?;
        stdout.write_all(b"\n")?;
        return Ok(ExitCode::SUCCESS);
    }
    let color = color.enabled();
    let value: serde_json::Value =
        serde_json::from_slice(&body).context("the answer's JSON does not parse")?;
    let at_line = first.strip_suffix(b"\n").unwrap_or(&first);
    stdout.write_all(at_line)?;
    stdout.write_all(b"\n")?;
    if json {
        writeln!(stdout, "{}", pretty::json(&value, color))?;
    } else {
        let record = AtRecord::parse(at_line).context("the answer's AT line does not parse")?;
        stdout.write_all(pretty::places(&record, &value, color).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn send(lines: &[String], target: &Target) -> anyhow::Result<ExitCode> {
    let (stream, addr) = connect(target).await?;
    let (mut r, mut w) = stream.into_split();
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l.as_bytes());
        out.push(b'\n');
    }
    w.write_all(&out)
        .await
        .with_context(|| format!("sending to {addr}"))?;
    w.shutdown().await?;
    let mut all = Vec::new();
    r.read_to_end(&mut all)
        .await
        .context("reading the replies")?;
    std::io::stdout().write_all(&all)?;
    let invalid = all.split(|&b| b == b'\n').any(|l| l.starts_with(b"? "));
    Ok(if invalid {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn tail(color: bool, target: &Target) -> anyhow::Result<ExitCode> {
    let (stream, addr) = connect(target).await?;
    eprintln!("connected to {addr}; type lines, Ctrl-D to finish");
    let (r, mut w) = stream.into_split();
    let printer = tokio::spawn(async move {
        let mut r = BufReader::new(r);
        let mut invalid = false;
        let mut json: Option<Vec<u8>> = None;
        loop {
            let line = read_line(&mut r).await?;
            if line.is_empty() {
                return Ok::<bool, anyhow::Error>(invalid);
            }
            let mut stdout = std::io::stdout().lock();
            match json.as_mut() {
                // Inside a WHATSAT answer: collect the JSON up to the empty line, then pretty-print.
                Some(body) if line == b"\n" => {
                    match serde_json::from_slice::<serde_json::Value>(body) {
                        Ok(v) => writeln!(stdout, "{}\n", pretty::json(&v, color))?,
                        Err(_) => stdout.write_all(body)?,
                    }
                    json = None;
                }
                Some(body) => body.extend_from_slice(&line),
                None if line == b"{\n" => json = Some(line),
                None => {
                    invalid |= line.starts_with(b"? ");
                    stdout.write_all(&line)?;
                }
            }
            stdout.flush()?;
        }
    });
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    loop {
        line.clear();
        if stdin.read_until(b'\n', &mut line).await? == 0 {
            break;
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        if w.write_all(&line).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
    let invalid = printer.await.context("printer task")??;
    Ok(if invalid {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
