//! `herd`: the command-line client of a herd.

mod bench;
mod ops;
mod pretty;
mod target;
mod watch;

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, Parser, Subcommand};
use herd_proto::{AtRecord, ClientTime, ErrorKind, Location, Message, Timestamp};
use pretty::ColorChoice;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

/// Talk to a herd: report a location, ask what is near a client, send raw lines, tail a session,
/// see how the herd is doing, or load-test a server.
///
/// `--to` takes a server name of the herd or HOST:PORT; the default is the herd's first server. The herd
/// is read from --config, else $HERD_CONFIG, else ./herd.toml, else herd/herd.toml in the user's config
/// folder (~/.config on Linux), else the built-in default herd (Alford, Ball, Hamilton, Holiday, Welsh on
/// 127.0.0.1:12000-12004): the same lookup as herd-server's. Which one is used is said on stderr
/// (`herd: using ./herd.toml (found in the current folder)`) whenever it names the server.
///
/// Exit codes: 0 success; 1 the server answered `? …` (the reason on stderr); 2 usage error (bad
/// arguments or config file); 3 network error (cannot resolve, connect or send, no answer within
/// --timeout, the connection closed early, or an answer that is not the herd protocol).
///
/// Errors print their cause chain; HERD_DEBUG=1 adds a backtrace.
#[derive(Parser)]
#[command(name = "herd", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    target: ServerChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct ServerChoice {
    /// Server name of the herd, or HOST:PORT.
    #[arg(long, global = true, value_name = "SERVER|HOST:PORT")]
    to: Option<String>,
    /// The herd's config file, for server names [default: $HERD_CONFIG, ./herd.toml, then the user's
    /// config folder].
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Give up on connecting, or on an answer, after this long: seconds, or with a unit (500ms, 2s, 1m).
    #[arg(long, global = true, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
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
        /// Print the AT record as JSON fields.
        #[arg(long)]
        json: bool,
    },
    /// Ask what is near CLIENT: the AT line, then the places.
    Whatsat {
        /// The client whose location is the centre.
        client: String,
        /// Radius in kilometres (more than 0, at most 50).
        radius_km: String,
        /// Most places (0 to 20).
        bound: String,
        /// Print one JSON object: the AT record as fields, and the Places answer under "places".
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
    /// pretty-printed). Ctrl-D half-closes and waits for the rest. --timeout applies to connecting.
    Tail {
        /// Colour: auto, always, never.
        #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
        color: ColorChoice,
    },
    /// Send raw LINEs on one connection (pipelined) and print the replies as received; `-` reads the
    /// lines from stdin.
    Send {
        /// The lines, sent as given, each followed by a newline; `-` alone: stdin.
        #[arg(required = true)]
        lines: Vec<String>,
    },
    /// Every server of the herd (or the --to one): address, up or down (and why: refused, timed out,
    /// …), open connections, links, records held (one a client), uptime. Reads
    /// each server's admin address (`admin` in the config, or --admin).
    Status {
        /// Ask this admin address (HOST:PORT) instead of the config's.
        #[arg(long, value_name = "HOST:PORT")]
        admin: Option<String>,
        /// Print the servers' status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check that a server is up: its admin `/health` when it has an admin address, else a connection
    /// to its client port; prints the round-trip time.
    Ping {
        /// Ask this admin address (HOST:PORT) instead of the config's.
        #[arg(long, value_name = "HOST:PORT")]
        admin: Option<String>,
    },
    /// Watch records as the herd stores them, wherever their IAMAT arrived: `watch client ID` or
    /// `watch near LAT LON KM`, over the WebSocket door of the --to server (its `http` address in the
    /// config, or --http HOST:PORT). Prints one line per record (`--json`: the fields of `herd iamat
    /// --json`) until interrupted, --count records, or the server closes the watch (with its reason).
    Watch(watch::WatchArgs),
    /// Load generator: many connections, pipelining, a mix of IAMAT and WHATSAT, or any raw line.
    Bench(bench::BenchArgs),
    /// Print a shell completion script: `herd completions bash > /etc/bash_completion.d/herd`. `--to`
    /// completes the server names of the herd the config lookup finds now (make the script again
    /// after renaming servers).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (herd.1), or write one per command into DIR.
    Man {
        /// Write herd.1, herd-iamat.1, … into this folder.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// A mistake in the command line or config that clap could not see (exit code 2).
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

/// `10`, `2.5`, `500ms`, `2s`, `1m`: a time-out or a bench duration.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && (v * scale) < 1e9 => Ok(Duration::from_secs_f64(v * scale)),
        _ => Err(format!(
            "{s:?} is not a duration: a positive number of seconds, or with ms, s or m"
        )),
    }
}

fn main() -> ExitCode {
    // anyhow captures a backtrace whenever RUST_BACKTRACE is set, which many Rust users have: only
    // HERD_DEBUG=1 asks for one here (panics still follow RUST_BACKTRACE).
    let debug = std::env::var_os("HERD_DEBUG").is_some_and(|v| v == "1");
    // Set before any thread starts.
    std::env::set_var("RUST_LIB_BACKTRACE", if debug { "1" } else { "0" });
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
        // `herd … | head`: the reader left; nothing more to say.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = std::io::stdout().flush();
            eprintln!("herd: error: {}", report(&err, debug));
            if err.downcast_ref::<Usage>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(3)
            }
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes (`Caused by:`, as anyhow prints them), and a backtrace when `debug`.
fn report(err: &anyhow::Error, debug: bool) -> String {
    let mut out = err.to_string();
    let causes: Vec<String> = err.chain().skip(1).map(|c| c.to_string()).collect();
    if !causes.is_empty() {
        out.push_str("\n\nCaused by:");
        for (i, c) in causes.iter().enumerate() {
            if causes.len() > 1 {
                out.push_str(&format!("\n    {i}: {c}"));
            } else {
                out.push_str(&format!("\n    {c}"));
            }
        }
    }
    if debug {
        out.push_str(&format!("\n\nBacktrace:\n{}", err.backtrace()));
    }
    out
}

/// Runs `fut`, or fails with "`what`: no answer within T" (a network error).
async fn within<T>(
    timeout: Duration,
    what: impl FnOnce() -> String,
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!(
            "{}: no answer within {} (--timeout)",
            what(),
            humantime(timeout)
        )),
    }
}

fn humantime(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} s", d.as_secs_f64())
    }
}

async fn connect(target: &ServerChoice) -> anyhow::Result<(TcpStream, SocketAddr)> {
    let addr = target::resolve(
        target.to.as_deref(),
        target.config.as_deref(),
        target.timeout,
    )
    .await?;
    let stream = within(target.timeout, || format!("connecting to {addr}"), async {
        TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))
    })
    .await?;
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
            json,
        } => iamat(&client, &lat_or_location, lon, time, json, &target).await,
        Command::Whatsat {
            client,
            radius_km,
            bound,
            json,
            raw,
            color,
        } => whatsat(&client, &radius_km, &bound, json, raw, color, &target).await,
        Command::Tail { color } => tail(color.enabled(), &target).await,
        Command::Send { lines } => send(lines, &target).await,
        Command::Status { admin, json } => ops::status(&target, admin.as_deref(), json).await,
        Command::Ping { admin } => ops::ping(&target, admin.as_deref()).await,
        Command::Bench(args) => bench::run(args, &target).await,
        Command::Watch(args) => watch::run(args, &target).await,
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut completed(&target)?, "herd", &mut script);
            std::io::stdout().write_all(&script)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => man(dir),
    }
}

/// The command as the completion scripts see it: `--to` offers the server names of the herd (found
/// by the usual lookup, when the script is made) instead of file names. Only the script is changed:
/// `--to` still takes any `HOST:PORT`.
fn completed(target: &ServerChoice) -> anyhow::Result<clap::Command> {
    let (herd, located) = target::herd(target.config.as_deref())?;
    target::say_using(&located);
    let names: Vec<String> = herd.servers.iter().map(|s| s.name.clone()).collect();
    Ok(Cli::command().mut_arg("to", |a| {
        a.value_parser(clap::builder::PossibleValuesParser::new(names))
    }))
}

fn man(dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let cmd = Cli::command();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            std::io::stdout().write_all(&page)?;
        }
    }
    Ok(ExitCode::SUCCESS)
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

/// A client id the protocol can carry: one field, no white space.
fn check_client(client: &str) -> anyhow::Result<()> {
    if client.is_empty() || client.bytes().any(herd_proto::is_whitespace) {
        return Err(usage(format!(
            "CLIENT {client:?} must be one word, without white space"
        )));
    }
    Ok(())
}

/// The WHATSAT line for these arguments, checked as the server will check it.
fn whatsat_line(client: &str, radius: &str, bound: &str) -> anyhow::Result<String> {
    check_client(client)?;
    let line = format!("WHATSAT {client} {radius} {bound}");
    match Message::parse(line.as_bytes()) {
        Ok(_) => Ok(line),
        Err(e) => Err(usage(match e.kind {
            ErrorKind::Radius | ErrorKind::RadiusRange => format!(
                "RADIUS_KM {radius:?}: the radius is in kilometres, more than 0 and at most 50"
            ),
            ErrorKind::Bound | ErrorKind::BoundRange => {
                format!("BOUND {bound:?}: the bound is a whole number from 0 to 20")
            }
            kind => format!("{line:?} is not a valid WHATSAT: {kind}"),
        })),
    }
}

/// Why the server may have answered `? line` to `sent`, for stderr.
fn why_invalid(sent: &str) -> String {
    match Message::parse(sent.as_bytes()) {
        Err(e) => format!("the line is not valid: {}", e.kind),
        Ok(Message::WhatsAt(w)) => format!(
            "the server holds no location for {:?}: report one first (herd iamat {} LAT LON)",
            String::from_utf8_lossy(&w.client),
            String::from_utf8_lossy(&w.client),
        ),
        Ok(_) => "the server refused the line (see its log)".into(),
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

/// An answer that is neither an AT line nor `? …`: the far end does not speak the herd protocol.
fn not_herd(addr: SocketAddr, line: &[u8]) -> anyhow::Error {
    let shown = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(line)).into_owned();
    let shown: String = shown.chars().take(80).collect();
    anyhow::anyhow!(
        "{addr} answered {shown:?}, which is not the herd protocol (is it a herd server?)"
    )
}

use herd_proto::record_json;

/// Prints a `? …` answer (as JSON with its reason under `--json`) and the reason on stderr; exit 1.
fn invalid(answer: &[u8], sent: &str, as_json: bool) -> anyhow::Result<ExitCode> {
    let reason = why_invalid(sent);
    let answer = answer.strip_suffix(b"\n").unwrap_or(answer);
    if as_json {
        let v = json!({"invalid": String::from_utf8_lossy(answer), "reason": reason});
        writeln!(std::io::stdout(), "{v}")?;
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(answer)?;
        out.write_all(b"\n")?;
    }
    eprintln!("herd: the server answered `?`: {reason}");
    Ok(ExitCode::from(1))
}

async fn iamat(
    client: &str,
    loc: &str,
    lon: Option<f64>,
    time: Option<String>,
    as_json: bool,
    target: &ServerChoice,
) -> anyhow::Result<ExitCode> {
    check_client(client)?;
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
    let sent = format!("IAMAT {client} {location} {time}");
    let line = within(target.timeout, || format!("waiting for {addr}"), async {
        let (r, mut w) = stream.into_split();
        w.write_all(format!("{sent}\n").as_bytes())
            .await
            .with_context(|| format!("sending to {addr}"))?;
        read_line(&mut BufReader::new(r)).await
    })
    .await?;
    if line.is_empty() {
        anyhow::bail!("{addr} closed the connection without an answer");
    }
    if line.starts_with(b"? ") {
        return invalid(&line, &sent, as_json);
    }
    let at = line.strip_suffix(b"\n").unwrap_or(&line);
    let record = AtRecord::parse(at).map_err(|_| not_herd(addr, &line))?;
    if as_json {
        writeln!(std::io::stdout(), "{}", Value::Object(record_json(&record)))?;
    } else {
        std::io::stdout().write_all(&line)?;
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
async fn whatsat(
    client: &str,
    radius: &str,
    bound: &str,
    as_json: bool,
    raw: bool,
    color: ColorChoice,
    target: &ServerChoice,
) -> anyhow::Result<ExitCode> {
    let sent = whatsat_line(client, radius, bound)?;
    let (stream, addr) = connect(target).await?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let first = within(target.timeout, || format!("waiting for {addr}"), async {
        w.write_all(format!("{sent}\n").as_bytes())
            .await
            .with_context(|| format!("sending to {addr}"))?;
        read_line(&mut r).await
    })
    .await?;
    if first.is_empty() {
        anyhow::bail!("{addr} closed the connection without an answer");
    }
    if first.starts_with(b"? ") {
        return invalid(&first, &sent, as_json);
    }
    let at_line = first.strip_suffix(b"\n").unwrap_or(&first);
    let record = AtRecord::parse(at_line).map_err(|_| not_herd(addr, &first))?;
    let body = within(
        target.timeout,
        || format!("waiting for the places from {addr}"),
        places_body(&mut r, addr),
    )
    .await?;
    let mut stdout = std::io::stdout().lock();
    if raw {
        stdout.write_all(&first)?;
        stdout.write_all(&body)?;
        stdout.write_all(b"\n")?;
        return Ok(ExitCode::SUCCESS);
    }
    let color = color.enabled();
    let value: Value = serde_json::from_slice(&body).context("the answer's JSON does not parse")?;
    if as_json {
        let mut m = record_json(&record);
        m.insert("places".into(), value);
        writeln!(stdout, "{}", pretty::json(&Value::Object(m), color))?;
    } else {
        stdout.write_all(at_line)?;
        stdout.write_all(b"\n")?;
        stdout.write_all(pretty::places(&record, &value, color).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The JSON after a WHATSAT's AT line: every line up to the empty line that ends the answer.
async fn places_body(
    r: &mut BufReader<OwnedReadHalf>,
    addr: SocketAddr,
) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(r).await?;
        if line.is_empty() {
            anyhow::bail!("{addr} closed the connection inside the answer");
        }
        if line == b"\n" {
            return Ok(body);
        }
        body.extend_from_slice(&line);
    }
}

async fn send(lines: Vec<String>, target: &ServerChoice) -> anyhow::Result<ExitCode> {
    let mut out = Vec::new();
    if lines.len() == 1 && lines[0] == "-" {
        tokio::io::stdin()
            .read_to_end(&mut out)
            .await
            .context("reading stdin")?;
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.push(b'\n');
        }
    } else {
        for l in &lines {
            out.extend_from_slice(l.as_bytes());
            out.push(b'\n');
        }
    }
    let (stream, addr) = connect(target).await?;
    let (mut r, mut w) = stream.into_split();
    let all = within(target.timeout, || format!("waiting for {addr}"), async {
        w.write_all(&out)
            .await
            .with_context(|| format!("sending to {addr}"))?;
        w.shutdown().await?;
        let mut all = Vec::new();
        r.read_to_end(&mut all)
            .await
            .context("reading the replies")?;
        Ok(all)
    })
    .await?;
    std::io::stdout().write_all(&all)?;
    let invalid = all.split(|&b| b == b'\n').any(|l| l.starts_with(b"? "));
    Ok(if invalid {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn tail(color: bool, target: &ServerChoice) -> anyhow::Result<ExitCode> {
    let (stream, addr) = connect(target).await?;
    // The prompt is for a person at a terminal; a script piping lines in gets only the replies.
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        eprintln!("connected to {addr}; type lines, Ctrl-D to finish");
    }
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
                    match serde_json::from_slice::<Value>(body) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        for bad in ["0", "-1", "x", "", "1h", "1e12"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn whatsat_arguments_are_checked_with_the_reason() {
        assert!(whatsat_line("kiwi", "10", "3").is_ok());
        let e = whatsat_line("kiwi", "abc", "3").unwrap_err().to_string();
        assert!(e.contains("RADIUS_KM \"abc\""), "{e}");
        let e = whatsat_line("kiwi", "51", "3").unwrap_err().to_string();
        assert!(e.contains("at most 50"), "{e}");
        let e = whatsat_line("kiwi", "10", "21").unwrap_err().to_string();
        assert!(e.contains("BOUND \"21\"") && e.contains("0 to 20"), "{e}");
        let e = whatsat_line("a b", "10", "2").unwrap_err().to_string();
        assert!(e.contains("white space"), "{e}");
    }

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
