//! `herd-server`: run one server of a herd, or the whole herd in one process.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};
use herd_server::{Config, Loops, Places, ServerSpec};
use tokio_util::sync::CancellationToken;

/// A herd of application servers: clients report where they are (IAMAT), any server answers what is
/// near them (WHATSAT), and the servers flood every update to each other.
///
/// The config is read from --config, else $HERD_CONFIG, else ./herd.toml, else herd/herd.toml in the
/// user's config folder (~/.config on Linux), else the built-in default herd: Alford, Ball, Hamilton,
/// Holiday and Welsh on 127.0.0.1:12000-12004 (admin addresses 127.0.0.1:12100-12104; open
/// http://127.0.0.1:12100/ for the live page of the herd). The `herd` client looks in the same places;
/// both say on stderr which config they use. Places come from the offline data set unless
/// GOOGLE_PLACES_API_KEY is set.
///
/// The config is TOML: `herd-server default-config` prints the default herd as a file to start from,
/// with every key and its default in comments; `herd-server check --config FILE` checks one and prints
/// the herd it describes. Errors print their cause chain; HERD_DEBUG=1 adds a backtrace.
#[derive(Parser)]
#[command(name = "herd-server", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server NAME of the herd.
    Serve {
        /// The server's name, as in the config.
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Run every server of the herd in this one process (the demo).
    Up {
        #[command(flatten)]
        common: Common,
    },
    /// Check the config `serve` and `up` would use (the same lookup) and print the herd it describes;
    /// exit 1 with the file, line and problem when it cannot work.
    Check {
        /// The herd's TOML config [default: $HERD_CONFIG, ./herd.toml, then the user's config folder,
        /// then the built-in default herd].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print the admin doors' bearer token, derived from the herd's secret (requests to an admin
    /// address from beyond loopback need `Authorization: Bearer <token>`); exit 1 if it has none.
    AdminToken {
        /// The herd's TOML config [default: as for `check`].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print the built-in default herd as a TOML config, every other key at its default in comments.
    DefaultConfig,
    /// Print the man page (herd-server.1), or write one per command into DIR.
    Man {
        /// Write herd-server.1, herd-server-serve.1, … into this folder.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct Common {
    /// The herd's TOML config (`herd-server default-config` prints one) [default: $HERD_CONFIG,
    /// ./herd.toml, then the user's config folder, then the built-in default herd].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where `<Name>.log` files go.
    #[arg(long, value_name = "DIR", default_value = "logs")]
    log_dir: PathBuf,
    /// Threads serving clients: event loops, or the work-stealing runtime's workers (see --runtime);
    /// 1 runs everything on one thread. Default for `serve` with loops: one below four cores, three
    /// quarters of the cores from four up (the rest is left to the kernel and the log and store
    /// writers); otherwise one per core.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// How the threads share the clients: `loops`, one single-threaded event loop per thread, each
    /// accepting connections on its own listener (SO_REUSEPORT) and serving them to the end; or
    /// `stealing`, tokio's work-stealing runtime, where any thread may run any connection.
    #[arg(long, value_enum, default_value_t = Shape::Loops)]
    runtime: Shape,
    /// Keep records on disk in DIR/<Name>/ (overrides `[store] dir`); without it (and without
    /// `[store] dir`), records live in memory only.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Start even if store files are damaged or missing: read every snapshot and journal in the
    /// data folder, skip only the damaged records (reading goes on at the next whole one), say what
    /// was kept and dropped by file and offset, write a snapshot of it before serving, and rename
    /// the damaged files *.damaged.
    #[arg(long)]
    repair: bool,
    /// Drop the stored records that name server NAME (one that left the herd for good), and say how
    /// many; repeat for several. Without it, records naming servers no longer in the config are kept.
    #[arg(long, value_name = "NAME")]
    forget: Vec<String>,
}

/// How the runtime's threads share the clients (BENCHMARKS.md measures both).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Shape {
    /// One single-threaded event loop per thread, each with its own listener (`herd_server::driver::loops`).
    Loops,
    /// Tokio's multi-thread, work-stealing runtime.
    Stealing,
}

fn main() -> ExitCode {
    let code = main_code();
    // What was said on stderr (the "using …" line of every command, errors) goes through a queue
    // and a writer thread: let it out before the process ends, within a bound.
    herd_server::stderr::flush(STDERR_WAIT);
    code
}

fn main_code() -> ExitCode {
    // SIGHUP's default action kills the process, and its handler (which reopens the logs) can only be
    // installed once the config is read and the logs are open: a `kill -HUP` during a start or restart
    // (a reload by systemd or logrotate) would kill the server. Ignored from the first moment instead:
    // before the log files are open there is nothing to reopen, so dropping it loses nothing. The
    // handler installed later replaces this disposition.
    #[cfg(unix)]
    // SAFETY: sets a signal's disposition to SIG_IGN, before any other thread exists; no handler runs.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    // anyhow captures a backtrace whenever RUST_BACKTRACE is set: only HERD_DEBUG=1 asks for one.
    let debug = std::env::var_os("HERD_DEBUG").is_some_and(|v| v == "1");
    std::env::set_var("RUST_LIB_BACKTRACE", if debug { "1" } else { "0" });
    let cli = Cli::parse();
    let (threads, shape, one_server) = match &cli.command {
        Command::Serve { common, .. } => (common.threads, common.runtime, true),
        Command::Up { common } => (common.threads, common.runtime, false),
        other => return one_off(other, debug),
    };
    let threads = threads.map_or_else(|| default_threads(shape, one_server), usize::from);
    let (runtime, loops) = match start_runtime(shape, threads) {
        Ok(started) => started,
        Err(e) => {
            herd_server::say(format_args!(
                "herd-server: error: cannot start the runtime: {e}"
            ));
            herd_server::stderr::flush(STDERR_WAIT);
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(run(cli, &loops));
    // The servers have stopped: nothing of theirs runs on the loops any more.
    loops.stop();
    let code = match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            herd_server::say(format_args!("herd-server: error: {}", report(&err, debug)));
            ExitCode::from(1)
        }
    };
    // What is queued for stderr is written before the exit, unless nobody reads it.
    herd_server::stderr::flush(STDERR_WAIT);
    code
}

/// The commands that run no server (`check`, `admin-token`, `default-config`, `man`): done at once,
/// without a runtime.
fn one_off(command: &Command, debug: bool) -> ExitCode {
    match command {
        Command::Check { config } => check(config.as_deref(), debug),
        Command::AdminToken { config } => admin_token(config.as_deref(), debug),
        Command::DefaultConfig => {
            print!("{}", default_config());
            ExitCode::SUCCESS
        }
        Command::Man { dir } => match man(dir.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                herd_server::say(format_args!("herd-server: error: {}", report(&err, debug)));
                herd_server::stderr::flush(STDERR_WAIT);
                ExitCode::from(1)
            }
        },
        Command::Serve { .. } | Command::Up { .. } => ExitCode::SUCCESS,
    }
}

/// Threads when `--threads` is not given: as many as cores, or, for one server on event loops, the
/// loops' own rule.
fn default_threads(shape: Shape, one_server: bool) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    // The rule was measured for one server's loops; `up` runs five servers (and their
    // floods) in one process, and work stealing idles what it does not need.
    if one_server && shape == Shape::Loops {
        Loops::default_count(cores)
    } else {
        cores
    }
}

/// The runtime of `shape` on `threads` threads. The main thread's runtime is the first loop (or the
/// work-stealing runtime); the other loops run on threads of their own.
fn start_runtime(
    shape: Shape,
    threads: usize,
) -> std::io::Result<(tokio::runtime::Runtime, Loops)> {
    match (shape, threads) {
        (Shape::Loops, _) | (Shape::Stealing, 1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .and_then(|rt| {
                let more = if shape == Shape::Loops {
                    threads - 1
                } else {
                    0
                };
                Ok((rt, Loops::start(more)?))
            }),
        (Shape::Stealing, n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()
            .map(|rt| (rt, Loops::none())),
    }
}

/// How long the exit waits for stderr to take the messages queued for it.
const STDERR_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// `herd-server man`: the page of the whole command on stdout, or one page per command into `dir`.
fn man(dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    use std::io::Write as _;
    let cmd = Cli::command();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            std::io::stdout().write_all(&page)?;
        }
    }
    Ok(())
}

/// The error and its causes (`Caused by:`), and a backtrace when `debug`.
fn report(err: &anyhow::Error, debug: bool) -> String {
    let mut out = err.to_string();
    let causes: Vec<String> = err.chain().skip(1).map(|c| c.to_string()).collect();
    if !causes.is_empty() {
        out.push_str("\n\nCaused by:");
        for c in &causes {
            out.push_str(&format!("\n    {c}"));
        }
    }
    if debug {
        out.push_str(&format!("\n\nBacktrace:\n{}", err.backtrace()));
    }
    out
}

/// Finds the herd's config (the lookup `herd` shares) and says which on stderr, first thing.
fn locate(flag: Option<&std::path::Path>) -> herd_server::config::Located {
    let located = herd_server::config::locate(flag);
    herd_server::say(format_args!("herd-server: {located}"));
    located
}

/// `herd-server check`.
fn check(path: Option<&std::path::Path>, debug: bool) -> ExitCode {
    let located = locate(path);
    match located.load() {
        Ok(c) => {
            print!("{}: ok\n{}", located.name(), describe(&c));
            // The `using …` line is on its way to stderr: it is written before the process exits.
            herd_server::stderr::flush(STDERR_WAIT);
            ExitCode::SUCCESS
        }
        Err(e) => {
            herd_server::say(format_args!(
                "herd-server: error: {}",
                report(&anyhow::Error::new(e), debug)
            ));
            herd_server::stderr::flush(STDERR_WAIT);
            ExitCode::from(1)
        }
    }
}

/// `herd-server admin-token`: the token of the herd's first secret (the one its servers prove with).
fn admin_token(path: Option<&std::path::Path>, debug: bool) -> ExitCode {
    let located = locate(path);
    match located.load() {
        Ok(c) => match c.secrets.first() {
            Some(secret) => {
                println!("{}", herd_server::driver::admin::token(secret));
                herd_server::stderr::flush(STDERR_WAIT);
                ExitCode::SUCCESS
            }
            None => {
                herd_server::say(format_args!(
                    "herd-server: error: the herd has no secret, so its admin doors ask for no token"
                ));
                herd_server::stderr::flush(STDERR_WAIT);
                ExitCode::from(1)
            }
        },
        Err(e) => {
            herd_server::say(format_args!(
                "herd-server: error: {}",
                report(&anyhow::Error::new(e), debug)
            ));
            herd_server::stderr::flush(STDERR_WAIT);
            ExitCode::from(1)
        }
    }
}

/// The herd a config describes, for people: servers, links, back-end, trust, limits, logs.
fn describe(c: &Config) -> String {
    use std::fmt::Write as _;
    let mut out = describe_servers(c);
    let _ = writeln!(out, "{}", describe_places(&c.places));
    let _ = writeln!(
        out,
        "admin: max_connections {}, hosts {}",
        c.admin.max_connections,
        if c.admin.hosts.is_empty() {
            "IP literals and localhost".to_owned()
        } else {
            format!("IP literals, localhost, {}", c.admin.hosts.join(", "))
        }
    );
    let trust = match (c.secrets.len(), c.insecure) {
        (0, false) => "no secret: plain links, loopback only".to_owned(),
        (0, true) => "no secret, insecure = true: plain links beyond loopback".to_owned(),
        (1, _) => "a secret: authenticated, encrypted links".to_owned(),
        (n, _) => format!("{n} secrets (rotation): authenticated, encrypted links"),
    };
    let _ = writeln!(out, "herd: {trust}");
    let l = &c.limits;
    let _ = writeln!(
        out,
        "limits: max_line {} bytes, max_connections {}, idle_timeout {} ms",
        l.max_line,
        l.max_connections,
        l.idle_timeout.as_millis()
    );
    let g = &c.log;
    let _ = writeln!(
        out,
        "log: lines {}, bodies {}, max_bytes {}, keep {}",
        g.lines, g.bodies, g.max_bytes, g.keep
    );
    out
}

/// The servers of a config, one a line, for [`describe`].
fn describe_servers(c: &Config) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let name_w = c.servers.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let listen_w = c.servers.iter().map(|s| s.listen.len()).max().unwrap_or(0);
    let _ = writeln!(out, "servers: {}", c.servers.len());
    for s in &c.servers {
        let admin = s
            .admin
            .as_deref()
            .map_or("-".to_owned(), |a| format!("admin {a}"));
        let neighbours = if s.neighbors.is_empty() {
            "-".into()
        } else {
            s.neighbors.join(", ")
        };
        let _ = writeln!(
            out,
            "  {:<name_w$}  {:<listen_w$}  {admin}  neighbours: {neighbours}",
            s.name, s.listen,
        );
    }
    out
}

/// The Places back-end of a config, on one line, for [`describe`].
fn describe_places(p: &herd_server::config::PlacesConfig) -> String {
    format!(
        "places: {}{}, key {}, timeout {} ms, cache {} ms / {} entries, {} in flight, budget {}/s (burst {}) a connection, {}/s (burst {}) a server",
        p.backend,
        p.url
            .as_deref()
            .map(|u| format!(" at {u}"))
            .unwrap_or_default(),
        if p.key.is_some() { "set" } else { "not set" },
        p.timeout.as_millis(),
        p.cache_ttl.as_millis(),
        p.cache_entries,
        p.max_in_flight,
        p.budget.connection_rate,
        p.budget.connection_burst,
        p.budget.server_rate,
        p.budget.server_burst
    )
}

/// The default herd as a config file: the other tables at their defaults, commented out. The values
/// shown are the config's own defaults, so each is defined once (in `herd-config`).
fn default_config() -> String {
    format!(
        "# The herd's config: `herd-server serve NAME --config FILE`, `herd-server up --config FILE`.\n\
         # Every key but [[server]] is optional; the values shown commented are the defaults.\n\
         \n\
         {}{}{}\
         # Each server: its name (in AT lines), its address for clients and peers, its neighbours\n\
         # (links are made symmetric), and its admin address for GET /metrics, /health, /status\n\
         # and the live page of the herd, GET / (optional; off unless set), and its client door\n\
         # over HTTP/JSON and WebSocket, http = \"host:port\" (optional; off unless set).\n\
         {}",
        places_defaults(),
        limits_defaults(),
        other_defaults(),
        herd_server::config::default_herd_toml(),
    )
}

/// `[places]` and `[herd]` of [`default_config`].
fn places_defaults() -> String {
    use herd_server::config::{PlacesBudget, PlacesConfig};
    let PlacesBudget {
        connection_rate,
        connection_burst,
        server_rate,
        server_burst,
    } = PlacesBudget::default();
    let timeout_ms = PlacesConfig::DEFAULT_TIMEOUT.as_millis();
    let cache_ttl_ms = PlacesConfig::DEFAULT_CACHE_TTL.as_millis();
    let cache_entries = PlacesConfig::DEFAULT_CACHE_ENTRIES;
    let max_in_flight = PlacesConfig::DEFAULT_MAX_IN_FLIGHT;
    format!(
        "# [places]\n\
         # backend = \"offline\"        # \"google\" when GOOGLE_PLACES_API_KEY is set; or \"google-legacy\"\n\
         # url = \"…\"                  # where the back-end is (default: Google's URL of that back-end)\n\
         # timeout_ms = {timeout_ms}\n\
         # cache_ttl_ms = {cache_ttl_ms}\n\
         # cache_entries = {cache_entries}\n\
         # max_in_flight = {max_in_flight}\n\
         # connection_rate = {connection_rate:?}        # upstream calls a second one client connection may make\n\
         # connection_burst = {connection_burst}\n\
         # server_rate = {server_rate:?}           # upstream calls a second of the whole server\n\
         # server_burst = {server_burst}\n\
         # key = \"…\"                  # better: the GOOGLE_PLACES_API_KEY environment variable\n\
         \n\
         # [herd]\n\
         # secret = \"a long random string\"   # needed to listen beyond loopback\n\
         # secrets = [\"new\", \"old\"]        # instead of secret, to rotate\n\
         # insecure = false\n\
         \n"
    )
}

/// `[limits]` of [`default_config`].
fn limits_defaults() -> String {
    let l = herd_server::config::Limits::default();
    let (max_line, max_connections, max_clients) = (l.max_line, l.max_connections, l.max_clients);
    let line_timeout_ms = l.line_timeout.as_millis();
    let idle_timeout_ms = l.idle_timeout.as_millis();
    let max_future_ms = l.max_future.as_millis();
    let (max_watches, watch_queue) = (l.max_watches, l.watch_queue);
    let max_watches_per_connection = l.max_watches_per_connection;
    format!(
        "# [limits]\n\
         # max_line = {max_line}                # at least 64\n\
         # max_connections = {max_connections}\n\
         # max_connections_per_ip = {max_connections}  # default: max_connections\n\
         # line_timeout_ms = {line_timeout_ms}\n\
         # idle_timeout_ms = {idle_timeout_ms}\n\
         # max_future_ms = {max_future_ms}\n\
         # max_clients = {max_clients}\n\
         # max_watches = {max_watches}           # watches of the WebSocket door on the server\n\
         # max_watches_per_connection = {max_watches_per_connection}\n\
         # watch_queue = {watch_queue}             # records waiting for one watcher; past it, it is closed\n\
         \n"
    )
}

/// `[admin]`, `[store]` and `[log]` of [`default_config`].
fn other_defaults() -> String {
    use herd_server::config::{AdminSettings, LogSettings, StoreSettings};
    let admin_max_connections = AdminSettings::default().max_connections;
    let StoreSettings {
        fsync,
        compact_bytes,
        ..
    } = StoreSettings::default();
    let LogSettings {
        lines,
        bodies,
        max_bytes,
        keep,
    } = LogSettings::default();
    format!(
        "# [admin]\n\
         # max_connections = {admin_max_connections}           # admin connections at once, apart from the clients'\n\
         # hosts = []                     # Host names the admin doors answer to, besides IPs and localhost\n\
         \n\
         # [store]\n\
         # dir = \"/var/lib/herd\"        # default: none, records in memory only\n\
         # fsync = \"{fsync}\"           # or \"always\", \"no\"\n\
         # compact_bytes = {compact_bytes}\n\
         \n\
         # [log]\n\
         # lines = {lines}\n\
         # bodies = {bodies}\n\
         # max_bytes = {max_bytes}          # 0: never rotate (leave it to logrotate)\n\
         # keep = {keep}\n\
         \n"
    )
}

async fn run(cli: Cli, loops: &Loops) -> anyhow::Result<()> {
    let (names, common) = match &cli.command {
        Command::Serve { name, common } => (Some(vec![name.clone()]), common),
        Command::Up { common } => (None, common),
        Command::Check { .. }
        | Command::AdminToken { .. }
        | Command::DefaultConfig
        | Command::Man { .. } => return Ok(()),
    };
    let mut config: Config = locate(common.config.as_deref()).load()?;
    if let Some(dir) = &common.data_dir {
        config.store.dir = Some(dir.clone());
    }
    if common.repair && config.store.dir.is_none() {
        anyhow::bail!("--repair needs a data folder (--data-dir or [store] dir)");
    }
    if !common.forget.is_empty() && config.store.dir.is_none() {
        anyhow::bail!("--forget needs a data folder (--data-dir or [store] dir)");
    }
    let names = names.unwrap_or_else(|| config.servers.iter().map(|s| s.name.clone()).collect());
    // The servers of `up` share the process's descriptors: each fits its limits into its part.
    herd_server::driver::admission::share_descriptors(names.len());
    let mut specs = server_specs(&config, &names, common)?;
    let listeners = bind_all(&config, &specs, loops).await?;
    say_addresses(&specs, &listeners);
    let logs = herd_server::log::init(&common.log_dir, &names, config.log)?;
    for spec in &mut specs {
        spec.log = logs.log(&spec.name);
    }
    on_signals(&logs)?;
    let result = serve_all(specs, listeners).await;
    // Every server has stopped: write what the logs still hold, then exit.
    logs.close();
    result
}

/// The spec of each server of `names` in `config`, with the store options of the command line.
fn server_specs(
    config: &Config,
    names: &[String],
    common: &Common,
) -> anyhow::Result<Vec<ServerSpec>> {
    let places = Places::new(&config.places, herd_server::http_client(config)?);
    let mut specs = Vec::new();
    for name in names {
        let mut spec = ServerSpec::from_config(config, name, places.clone())?;
        if let Some(store) = &mut spec.store {
            store.repair = common.repair;
            store.forget.clone_from(&common.forget);
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// The client listener (on `loops`) and the admin listener of each server, all bound before any
/// serves, so a taken port stops the start with a clear message.
async fn bind_all(
    config: &Config,
    specs: &[ServerSpec],
    loops: &Loops,
) -> anyhow::Result<Vec<(herd_server::Listeners, Option<tokio::net::TcpListener>)>> {
    let mut listeners = Vec::new();
    for spec in specs {
        let server = config.server(&spec.name).context("server vanished")?;
        let listen = &server.listen;
        let listener = herd_server::bind_on(listen, loops)
            .await
            .with_context(|| format!("{} cannot listen on {listen}", spec.name))?;
        let admin = match &server.admin {
            Some(a) => Some(herd_server::bind(a).await.with_context(|| {
                format!("{} cannot listen on its admin address {a}", spec.name)
            })?),
            None => None,
        };
        listeners.push((listener, admin));
    }
    Ok(listeners)
}

/// Installs the signal handlers of a running process: SIGHUP reopens the log files (logrotate's
/// `create` mode; until now it was ignored, see `main`), and a file-size limit (`ulimit -f`) must
/// fail the log's write (EFBIG, then counted as dropped), not kill the server: handling SIGXFSZ
/// turns its default action off for the whole process.
fn on_signals(logs: &herd_server::log::Logs) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let reopener = logs.reopener();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                reopener.reopen();
            }
        });
        let _xfsz = signal(SignalKind::from_raw(libc::SIGXFSZ));
    }
    #[cfg(not(unix))]
    let _ = logs;
    Ok(())
}

/// Runs every server until a signal asks to stop (or one of them fails, which stops the others).
async fn serve_all(
    specs: Vec<ServerSpec>,
    listeners: Vec<(herd_server::Listeners, Option<tokio::net::TcpListener>)>,
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let mut servers = tokio::task::JoinSet::new();
    for (spec, (listener, admin)) in specs.into_iter().zip(listeners) {
        servers.spawn(herd_server::run_with_admin(
            listener,
            admin,
            spec,
            shutdown.clone(),
        ));
    }
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        herd_server::say(format_args!("herd-server: shutting down"));
        signal.cancel();
    });
    let mut result = Ok(());
    while let Some(done) = servers.join_next().await {
        let outcome = done.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = outcome {
            shutdown.cancel();
            result = Err(e);
        }
    }
    result
}

/// One line a server on stderr: where its clients connect and where its live page is (the
/// addresses as bound, so a port 0 shows the port given).
fn say_addresses(
    specs: &[ServerSpec],
    listeners: &[(herd_server::Listeners, Option<tokio::net::TcpListener>)],
) {
    let width = specs.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for (spec, (listener, admin)) in specs.iter().zip(listeners) {
        let clients = listener
            .local_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        let page = match admin.as_ref().map(tokio::net::TcpListener::local_addr) {
            Some(Ok(a)) => format!("live page and admin http://{a}/"),
            Some(Err(_)) => "live page and admin: ?".to_owned(),
            None => "no admin address (no live page)".to_owned(),
        };
        herd_server::say(format_args!(
            "herd-server: {:<width$}  clients {clients}  {page}",
            spec.name
        ));
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
