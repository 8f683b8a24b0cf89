//! Logs: one file per server (`<Name>.log`), and a short summary on stderr.
//!
//! Several servers can share one process (`herd-server up`), so events are routed to a file by the
//! `server` field of the span they happen in: every task of a server runs inside
//! `info_span!("server", server = %name)`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context as _;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The target of the stderr summary lines (listening address, back-end, links).
pub const SUMMARY: &str = "herd::summary";

/// Keeps the log writers flushing; drop it last, at exit, to flush the files.
#[must_use]
pub struct LogGuard {
    _guards: Vec<WorkerGuard>,
}

/// Sends each event to its server's file.
struct FileRouter {
    files: HashMap<String, Mutex<NonBlocking>>,
}

struct ServerName(String);

#[derive(Default)]
struct Fields {
    server: Option<String>,
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "server" => self.server = Some(value.to_owned()),
            "message" => self.message.push_str(value),
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "server" => self.server = Some(format!("{value:?}")),
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            name => {
                let shown = format!("{value:?}");
                if (name == "line" || shown.contains(' ')) && !shown.starts_with('"') {
                    let _ = write!(self.rest, " {name}=\"{shown}\"");
                } else {
                    let _ = write!(self.rest, " {name}={shown}");
                }
            }
        }
    }
}

impl<S> Layer<S> for FileRouter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut f = Fields::default();
        attrs.record(&mut f);
        if let (Some(name), Some(span)) = (f.server, ctx.span(id)) {
            span.extensions_mut().insert(ServerName(name));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(server) = ctx.event_scope(event).and_then(|scope| {
            scope
                .from_root()
                .find_map(|span| span.extensions().get::<ServerName>().map(|n| n.0.clone()))
        }) else {
            return;
        };
        let Some(file) = self.files.get(&server) else {
            return;
        };
        let mut f = Fields::default();
        event.record(&mut f);
        let line = format!(
            "{} {:>5} {}\n",
            humantime::format_rfc3339_micros(std::time::SystemTime::now()),
            event.metadata().level(),
            format!("{}{}", f.message, f.rest).trim_start()
        );
        if let Ok(mut w) = file.lock() {
            let _ = w.write_all(line.as_bytes());
        }
    }
}

/// Installs the global subscriber: `<dir>/<Name>.log` for each of `servers`, the summary on stderr.
///
/// # Errors
/// The folder or a file cannot be created.
pub fn init(dir: &Path, servers: &[String]) -> anyhow::Result<LogGuard> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating log folder {}", dir.display()))?;
    let mut files = HashMap::new();
    let mut guards = Vec::new();
    for name in servers {
        let path = dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening log file {}", path.display()))?;
        // Not lossy: PROTOCOL.md §6 asks for every line; a full buffer slows the server instead.
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(false)
            .buffered_lines_limit(256 * 1024)
            .finish(file);
        files.insert(name.clone(), Mutex::new(writer));
        guards.push(guard);
    }
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_filter(
            Targets::new()
                .with_target(SUMMARY, Level::INFO)
                .with_default(Level::WARN),
        );
    tracing_subscriber::registry()
        .with(FileRouter { files })
        .with(stderr)
        .try_init()
        .context("installing the log subscriber")?;
    Ok(LogGuard { _guards: guards })
}

/// A line for the log: UTF-8 as is, other bytes escaped.
pub fn show(line: &[u8]) -> String {
    line.escape_ascii().to_string()
}
