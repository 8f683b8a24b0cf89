//! `herd-server`: run one server of a herd, or the whole herd in one process.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use herd_server::{Config, Places, ServerSpec};
use tokio_util::sync::CancellationToken;

/// A herd of application servers: clients report where they are (IAMAT), any server answers what is
/// near them (WHATSAT), and the servers flood every update to each other.
///
/// Without --config, the built-in default herd: Alford, Ball, Hamilton, Holiday and Welsh on
/// 127.0.0.1:12000-12004. Places come from the offline data set unless GOOGLE_PLACES_API_KEY is set.
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
}

#[derive(clap::Args)]
struct Common {
    /// The herd's TOML config (see README); without it, the default herd.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where `<Name>.log` files go.
    #[arg(long, value_name = "DIR", default_value = "logs")]
    log_dir: PathBuf,
    /// Runtime threads; 1 runs everything on one thread (no cross-core hand-offs). Default: one per core.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Keep records on disk in DIR/<Name>/ (overrides `[store] dir`); without it (and without
    /// `[store] dir`), records live in memory only.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Start even if a store file is damaged: cut it at its first bad record (the records after it
    /// are lost) and go on.
    #[arg(long)]
    repair: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Serve { common, .. } | Command::Up { common } => common.threads,
    };
    let runtime = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.max(1))
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herd-server: error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("herd-server: error: {err:?}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (names, common) = match &cli.command {
        Command::Serve { name, common } => (Some(vec![name.clone()]), common),
        Command::Up { common } => (None, common),
    };
    let mut config = match &common.config {
        Some(path) => Config::load(path)?,
        None => Config::default_herd(),
    };
    if let Some(dir) = &common.data_dir {
        config.store.dir = Some(dir.clone());
    }
    if common.repair && config.store.dir.is_none() {
        anyhow::bail!("--repair needs a data folder (--data-dir or [store] dir)");
    }
    let names = names.unwrap_or_else(|| config.servers.iter().map(|s| s.name.clone()).collect());
    let places = Places::new(&config.places, herd_server::http_client(&config)?);
    let mut specs = Vec::new();
    for name in &names {
        let mut spec = ServerSpec::from_config(&config, name, places.clone())?;
        if let Some(store) = &mut spec.store {
            store.repair = common.repair;
        }
        specs.push(spec);
    }
    // Bind every listener before serving, so a taken port stops the start with a clear message.
    let mut listeners = Vec::new();
    for spec in &specs {
        let listen = &config.server(&spec.name).context("server vanished")?.listen;
        let listener = herd_server::bind(listen)
            .await
            .with_context(|| format!("{} cannot listen on {listen}", spec.name))?;
        listeners.push(listener);
    }
    let logs = herd_server::log::init(&common.log_dir, &names, config.log)?;
    for spec in &mut specs {
        spec.log = logs.log(&spec.name);
    }
    // SIGHUP reopens the log files (logrotate's `create` mode); without a handler it would kill us.
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
        // A file-size limit (`ulimit -f`) must fail the log's write (EFBIG, then counted as dropped),
        // not kill the server: handling SIGXFSZ turns its default action off for the whole process.
        let _xfsz = signal(SignalKind::from_raw(libc::SIGXFSZ));
    }

    let shutdown = CancellationToken::new();
    let mut servers = tokio::task::JoinSet::new();
    for (spec, listener) in specs.into_iter().zip(listeners) {
        servers.spawn(herd_server::run(listener, spec, shutdown.clone()));
    }
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!("herd-server: shutting down");
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
    // Every server has stopped: write what the logs still hold, then exit.
    logs.close();
    result
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
