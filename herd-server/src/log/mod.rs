//! Logs: one file per server (`<Name>.log`), and a short summary on stderr.
//!
//! Two roads lead to a server's file, both ending in the same writer thread (the `writer` module):
//!
//! - **Lines** (every line in and out, PROTOCOL.md §6) take the fast path: a connection formats the
//!   lines of a batch into a [`LogBuf`] it owns — the clock read once per batch, no allocation, no
//!   `format!` and no span look-up per line — and hands the whole buffer to its server's [`Log`].
//! - **Events** (start, stop, connections, links, refusals) go through `tracing`: they are rare, and a
//!   structured event is worth its cost there. Several servers can share one process (`herd-server
//!   up`), so an event is routed to a file by the `server` field of the span it happens in: every task
//!   of a server runs inside `info_span!("server", server = %name)`.
//!
//! The queue between a server and its writer is bounded in bytes ([`QUEUE_BYTES`]): when the disk is
//! slower than the clients, connections wait for room instead of the server's memory growing. The
//! writer rotates by size (`[log] max_bytes`, `keep`), reopens its file on SIGHUP ([`Logs::reopen`]),
//! and when the disk refuses a write it keeps the server serving, says so on stderr, counts what it
//! drops and writes the count when it can write again.
//!
//! # Format
//! One line per entry, every line escaped onto one line (bytes outside printable ASCII, and `\`, as
//! `\xNN`, `\n`, `\\` …), so an entry can neither break nor forge another. The hot path writes what
//! a reader needs and nothing twice: a request and its reply share one entry — the time (UTC,
//! microseconds) once, the connection as `c<N>`, the request, a tab, the reply — with no level (every
//! such entry is routine). An IAMAT's reply repeats the request's fields byte for byte (the client's id,
//! coordinates and time as sent); the entry writes them once, ending the reply in `…` (U+2026, which no
//! escaped line holds), so the reply is the part before `…` followed by the request after `IAMAT `.
//! Rare events keep their level and `key=value` fields, with the connection second when they have one,
//! so `awk '$2 == "c7"'` follows connection 7:
//! ```text
//! 2026-03-01T10:00:00.123456Z c7 INFO connection opened peer=127.0.0.1:50312
//! 2026-03-01T10:00:00.123501Z c7 IAMAT kiwi +34.068930-118.445127 1479413884.392014450\tAT Alford +0.263873386 …
//! 2026-03-01T10:00:00.124020Z c7 WHATSAT kiwi 10 5\tAT Alford +0.263873386 kiwi +34.068930-118.445127 1479413884.392014450
//! 2026-03-01T10:00:00.124020Z c7 out-json backend=offline status=OK results=5 bytes=2411 ms=0.081
//! 2026-03-01T10:00:00.125310Z c7 INFO connection closed
//! 2026-03-01T10:00:01.002000Z c9 <Hamilton AT Hamilton +0.000120000 kiwi +1+1 2
//! 2026-03-01T10:00:01.002100Z c9 >Hamilton AT Alford +0.263873386 kiwi +34.068930-118.445127 1479413884.392014450
//! ```
//! (`\t` above is the tab.)

mod writer;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use writer::{FileTarget, LogQueue, Writer, WriterConfig};

/// The target of the stderr summary lines (listening address, back-end, links).
pub const SUMMARY: &str = "herd::summary";

/// Most bytes of log lines a server holds waiting for its writer; past it, connections wait.
pub const QUEUE_BYTES: usize = 4 * 1024 * 1024;

/// A connection hands its log buffer over once it holds this much, even mid-batch.
pub const HAND_OVER_AT: usize = 64 * 1024;

pub use herd_config::LogSettings;

/// How long closing a log waits for its writer to write what is queued. A writer stuck in a write that
/// never returns (a FIFO nobody reads, a hung mount) is left behind rather than waited for: the server
/// still stops.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// One log file: its queue and its writer thread.
struct LogFile {
    name: String,
    queue: LogQueue,
    /// Lines dropped in all (a full disk, a write error, a stuck writer).
    dropped: Arc<std::sync::atomic::AtomicU64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl LogFile {
    /// Asks the writer to write what is queued and stop; returns its thread, to wait for.
    fn close(&self) -> Option<std::thread::JoinHandle<()>> {
        self.queue.close();
        self.thread.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Waits until `deadline` for the writer's thread to end; a writer still in a write then is left
    /// behind (and said so).
    fn wait(&self, thread: std::thread::JoinHandle<()>, deadline: Instant) {
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            say(&format!(
                "herd-server: {}: the log writer is still in a write after {CLOSE_WAIT:?}; stopping \
                 without it (what it holds is lost; {} log lines dropped in all)",
                self.name,
                self.dropped.load(std::sync::atomic::Ordering::Relaxed)
            ));
        }
    }
}

/// Writes a message on stderr, never panicking ([`crate::say`]).
fn say(msg: &str) {
    crate::say(format_args!("{msg}"));
}

/// A server's log: where its connections and links hand their buffers (cheap to clone).
///
/// [`Log::off`] is a log that writes nothing (servers run in tests without files).
#[derive(Clone, Default)]
pub struct Log {
    file: Option<Arc<LogFile>>,
}

impl Log {
    /// A log that writes nothing.
    pub fn off() -> Log {
        Log::default()
    }

    /// Whether anything handed to this log reaches a file.
    pub fn is_on(&self) -> bool {
        self.file.is_some()
    }

    /// Log lines dropped so far because the file could not be written.
    pub fn dropped(&self) -> u64 {
        self.file
            .as_ref()
            .map_or(0, |f| f.dropped.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// A buffer for connection `conn` (and, on a peer link, the neighbour's `peer` name): the caller
    /// owns it and formats lines into it, then hands it over with [`Log::submit`].
    pub fn buffer(&self, conn: u64, peer: Option<&str>) -> LogBuf {
        let mut tag = Vec::with_capacity(24);
        conn_tag(&mut tag, conn);
        let mut peer_name = Vec::new();
        if let Some(p) = peer {
            escape_into(&mut peer_name, p.as_bytes());
            peer_name.push(b' ');
        }
        let mut b = LogBuf {
            buf: Vec::new(),
            tag,
            peer: peer_name,
            stamp: [b'0'; STAMP],
            second: u64::MAX,
        };
        b.stamp();
        b
    }

    /// A buffer for connection `conn` of a door other than the line protocol's: its lines are marked
    /// `door=<door>` (`http`, `ws`).
    pub fn door_buffer(&self, conn: u64, door: &str) -> LogBuf {
        let mut b = self.buffer(conn, None);
        b.door_tag(conn, door);
        b
    }

    /// Hands `buf`'s lines to the writer thread and leaves `buf` empty, ready for the next batch. Waits
    /// (asynchronously) while the queue holds [`QUEUE_BYTES`]: a slow disk slows the clients instead
    /// of growing the server's memory.
    pub async fn submit(&self, buf: &mut LogBuf) {
        if buf.buf.is_empty() {
            return;
        }
        match &self.file {
            Some(f) => {
                let full = std::mem::take(&mut buf.buf);
                buf.buf = f.queue.push(full).await;
            }
            None => buf.buf.clear(),
        }
    }

    /// Writes one already formatted entry (with its `\n`), never waiting. For rare events from any
    /// thread.
    fn event(&self, line: Vec<u8>) {
        if let Some(f) = &self.file {
            f.queue.push_event(line);
        }
    }

    /// The most bytes this log's queue has held at once (at most about [`QUEUE_BYTES`]).
    pub fn queue_high_water(&self) -> usize {
        self.file.as_ref().map_or(0, |f| f.queue.high_water())
    }
}

/// Which way a peer link's line went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// From the neighbour: `<Name` before the line.
    PeerIn,
    /// To the neighbour: `>Name` before the line.
    PeerOut,
}

/// Ends an IAMAT's reply in an entry where the rest of the reply is the request's fields (U+2026:
/// escaped lines are printable ASCII, so it cannot be part of one).
pub const ELIDED: &str = "…";

/// `2026-03-01T10:00:00.123456Z`
const STAMP: usize = 27;

/// Log lines of one connection, formatted into a buffer it owns and handed over a batch at a time.
///
/// ```
/// # async fn demo(log: herd_server::log::Log) {
/// use herd_server::log::Dir;
/// let mut buf = log.buffer(7, Some("Hamilton"));
/// buf.stamp(); // one clock read for the whole batch
/// buf.line(Dir::PeerIn, b"AT Hamilton +0.000120000 kiwi +1+1 2");
/// log.submit(&mut buf).await;
/// # }
/// ```
pub struct LogBuf {
    buf: Vec<u8>,
    /// ` c7 `, made once per connection.
    tag: Vec<u8>,
    /// On a peer link, the neighbour's name and a space (escaped), made once.
    peer: Vec<u8>,
    stamp: [u8; STAMP],
    /// The second `stamp` was fully formatted for (`u64::MAX`: never).
    second: u64,
}

/// Makes `tag` the mark of connection `conn`'s lines: ` c7 `.
fn conn_tag(tag: &mut Vec<u8>, conn: u64) {
    tag.clear();
    let _ = write!(tag, " c{conn} ");
}

impl LogBuf {
    /// Marks the lines added from now on as those of connection `conn` of `door` (as
    /// [`Log::door_buffer`] does): a door that serves several requests on one connection, each logged
    /// as a connection of its own, keeps one buffer (and its clock stamp) for them all.
    pub fn door_tag(&mut self, conn: u64, door: &str) {
        conn_tag(&mut self.tag, conn);
        self.tag.extend_from_slice(b"door=");
        self.tag.extend_from_slice(door.as_bytes());
        self.tag.push(b' ');
    }

    /// Reads the clock: the lines added until the next call carry this time.
    pub fn stamp(&mut self) {
        self.stamp_at(SystemTime::now());
    }

    fn stamp_at(&mut self, now: SystemTime) {
        let since = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        if since.as_secs() == self.second {
            // Within the second of the last stamp only the microseconds change: a non-pipelined
            // connection stamps every request, and formatting the date each time shows in profiles.
            let mut micros = since.subsec_micros();
            for d in self.stamp[20..26].iter_mut().rev() {
                *d = b'0' + (micros % 10) as u8;
                micros /= 10;
            }
            return;
        }
        self.second = since.as_secs();
        let mut cursor = &mut self.stamp[..];
        let _ = write!(cursor, "{}", humantime::format_rfc3339_micros(now));
    }

    fn head(&mut self) {
        self.buf.extend_from_slice(&self.stamp);
        self.buf.extend_from_slice(&self.tag);
    }

    /// Adds one line of a peer link going `dir` (without its `\n`; a trailing `\n` is dropped).
    pub fn line(&mut self, dir: Dir, line: &[u8]) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        self.head();
        self.buf.push(match dir {
            Dir::PeerIn => b'<',
            Dir::PeerOut => b'>',
        });
        self.buf.extend_from_slice(&self.peer);
        escape_into(&mut self.buf, line);
        self.buf.push(b'\n');
    }

    /// Adds a client's request and its reply as one entry: the request, a tab, the reply (each
    /// without its `\n`). Where the reply ends with a space and the request's text after `IAMAT `
    /// (an IAMAT's AT line repeats the fields as sent), that text is written once: the reply ends in
    /// [`ELIDED`] instead. Half the bytes of the busiest entry, and the reply is still exact.
    pub fn pair(&mut self, request: &[u8], reply: &[u8]) {
        let request = request.strip_suffix(b"\n").unwrap_or(request);
        let reply = reply.strip_suffix(b"\n").unwrap_or(reply);
        self.head();
        escape_into(&mut self.buf, request);
        self.buf.push(b'\t');
        match elided(request, reply) {
            Some(head) => {
                escape_into(&mut self.buf, head);
                self.buf.push(b' ');
                self.buf.extend_from_slice(ELIDED.as_bytes());
            }
            None => escape_into(&mut self.buf, reply),
        }
        self.buf.push(b'\n');
    }

    /// Adds the summary of a WHATSAT's JSON answer (its look-up's `backend`, `status`, number of
    /// `results`, `bytes` on the wire and `ms` taken), and the JSON itself, escaped onto the same line,
    /// when `body` is given (`[log] bodies = true`).
    pub fn whatsat(
        &mut self,
        backend: &str,
        status: &str,
        results: usize,
        bytes: usize,
        ms: f64,
        body: Option<&[u8]>,
    ) {
        self.head();
        self.buf.extend_from_slice(b"out-json backend=");
        escape_into(&mut self.buf, backend.as_bytes());
        self.buf.extend_from_slice(b" status=");
        escape_into(&mut self.buf, status.as_bytes());
        let _ = write!(self.buf, " results={results} bytes={bytes} ms={ms:.3}");
        if let Some(body) = body {
            self.buf.extend_from_slice(b" body=");
            escape_into(&mut self.buf, body);
        }
        self.buf.push(b'\n');
    }

    /// Bytes waiting to be handed over.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing waits to be handed over.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// The head of `reply` before a space and `request`'s text after `IAMAT `, if `reply` ends so.
fn elided<'a>(request: &[u8], reply: &'a [u8]) -> Option<&'a [u8]> {
    let fields = request.strip_prefix(b"IAMAT ")?;
    let head = reply.strip_suffix(fields)?.strip_suffix(b" ")?;
    (!fields.is_empty() && !head.is_empty()).then_some(head)
}

/// The reply of an entry written by [`LogBuf::pair`], as it went out (escaped as in the log):
/// `request` and `reply` are the entry's two parts. Undoes the [`ELIDED`] form.
pub fn expand_reply(request: &str, reply: &str) -> String {
    match (reply.strip_suffix(ELIDED), request.strip_prefix("IAMAT ")) {
        (Some(head), Some(fields)) => format!("{head}{fields}"),
        _ => reply.to_owned(),
    }
}

/// Appends `src` with bytes outside printable ASCII, and `\`, escaped (`\n`, `\t`, `\\`, `\xNN`).
fn escape_into(dst: &mut Vec<u8>, src: &[u8]) {
    // Nearly every line is clean: checked 16 bytes at a time without a branch per byte (the compiler
    // makes it vector code), then copied whole.
    let dirty = |b: u8| !(0x20..0x7f).contains(&b) || b == b'\\';
    let chunks = src.chunks_exact(16);
    let tail = chunks.remainder();
    let clean = chunks
        .into_iter()
        .all(|c| !c.iter().fold(false, |acc, &b| acc | dirty(b)))
        && !tail.iter().any(|&b| dirty(b));
    if clean {
        dst.extend_from_slice(src);
        return;
    }
    let mut rest = src;
    loop {
        let clean = rest
            .iter()
            .position(|&b| !(0x20..0x7f).contains(&b) || b == b'\\')
            .unwrap_or(rest.len());
        dst.extend_from_slice(&rest[..clean]);
        let Some((&b, tail)) = rest[clean..].split_first() else {
            return;
        };
        dst.extend(std::ascii::escape_default(b));
        rest = tail;
    }
}

/// The open log files of a process; closing it (or dropping it) writes what is queued and stops the
/// writers. Hold it until the servers have stopped.
#[must_use]
pub struct Logs {
    files: Vec<(String, Arc<LogFile>)>,
}

impl Logs {
    /// Opens `<dir>/<Name>.log` for each of `servers`, each with its writer thread.
    ///
    /// # Errors
    /// The folder or a file cannot be created.
    pub fn open(dir: &Path, servers: &[String], settings: LogSettings) -> anyhow::Result<Logs> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating log folder {}", dir.display()))?;
        let mut files = Vec::new();
        for name in servers {
            let path = dir.join(format!("{name}.log"));
            let target = FileTarget::open(&path)
                .with_context(|| format!("opening log file {}", path.display()))?;
            let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let w = Writer::new(
                target,
                WriterConfig {
                    name: name.clone(),
                    max_bytes: settings.max_bytes,
                    keep: settings.keep,
                    retry: writer::RETRY,
                    dropped: dropped.clone(),
                },
                Box::new(say),
            );
            let stall = writer::Stall {
                after: writer::STALL,
                dropped: dropped.clone(),
                report: Box::new(say),
                name: name.clone(),
                path: path.display().to_string(),
            };
            let file = Arc::new(LogFile {
                name: name.clone(),
                queue: LogQueue::with_stall(QUEUE_BYTES, stall),
                dropped,
                thread: Mutex::new(None),
            });
            let f = file.clone();
            let thread = std::thread::Builder::new()
                .name(format!("log-{name}"))
                .spawn(move || w.run(&f.queue))
                .context("starting a log writer thread")?;
            *file.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
            files.push((name.clone(), file));
        }
        Ok(Logs { files })
    }

    /// The log of server `name` ([`Log::off`] if it has no file here).
    pub fn log(&self, name: &str) -> Log {
        Log {
            file: self
                .files
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, f)| f.clone()),
        }
    }

    /// Every file is reopened at its path (SIGHUP: logrotate has moved them away).
    pub fn reopen(&self) {
        for (_, f) in &self.files {
            f.queue.reopen();
        }
    }

    /// A handle that reopens these files, for a signal task.
    pub fn reopener(&self) -> Reopener {
        Reopener(self.files.iter().map(|(_, f)| f.clone()).collect())
    }

    /// Writes what is queued and stops the writers, waiting at most 5 s in all for them (a writer stuck
    /// in a write is left behind).
    pub fn close(&self) {
        let threads: Vec<_> = self.files.iter().map(|(_, f)| f.close()).collect();
        let deadline = Instant::now() + CLOSE_WAIT;
        for ((_, f), t) in self.files.iter().zip(threads) {
            if let Some(t) = t {
                f.wait(t, deadline);
            }
        }
    }
}

impl Drop for Logs {
    fn drop(&mut self) {
        self.close();
    }
}

/// Reopens a process's log files ([`Logs::reopener`]).
#[derive(Clone)]
pub struct Reopener(Vec<Arc<LogFile>>);

impl Reopener {
    /// Every file is reopened at its path.
    pub fn reopen(&self) {
        for f in &self.0 {
            f.queue.reopen();
        }
    }
}

/// Sends each rare event to its server's file.
struct FileRouter {
    files: HashMap<String, Log>,
}

struct ServerName(String);

#[derive(Default)]
struct LineFields {
    server: Option<String>,
    /// The connection an event is about, written second (`c7`) as on the hot path's entries.
    conn: Option<String>,
    message: String,
    rest: String,
}

impl Visit for LineFields {
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
            "conn" => self.conn = Some(format!("{value:?}")),
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
        let mut f = LineFields::default();
        attrs.record(&mut f);
        if let (Some(name), Some(span)) = (f.server, ctx.span(id)) {
            span.extensions_mut().insert(ServerName(name));
        }
    }

    /// Nothing at TRACE is routed: the server writes no such event, and the `log` records of its
    /// libraries at that level (the WebSocket library writes several for every frame) are then
    /// stopped at the `log` crate's level check, instead of each being dispatched to the layers.
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::DEBUG)
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(log) = ctx.event_scope(event).and_then(|scope| {
            scope.from_root().find_map(|span| {
                span.extensions()
                    .get::<ServerName>()
                    .and_then(|n| self.files.get(&n.0).cloned())
            })
        }) else {
            return;
        };
        let mut f = LineFields::default();
        event.record(&mut f);
        let time = humantime::format_rfc3339_micros(SystemTime::now());
        let text = format!("{}{}", f.message, f.rest);
        let line = match f.conn {
            Some(conn) => format!(
                "{time} c{conn} {} {}\n",
                event.metadata().level(),
                text.trim_start()
            ),
            None => format!(
                "{time} {:>5} {}\n",
                event.metadata().level(),
                text.trim_start()
            ),
        };
        log.event(line.into_bytes());
    }
}

/// Opens the log files ([`Logs::open`]) and installs the global subscriber: events of each server to
/// its file, the summary on stderr.
///
/// # Errors
/// The folder or a file cannot be created, or a subscriber is already installed.
pub fn init(dir: &Path, servers: &[String], settings: LogSettings) -> anyhow::Result<Logs> {
    let logs = Logs::open(dir, servers, settings)?;
    let files = servers.iter().map(|n| (n.clone(), logs.log(n))).collect();
    // Warnings can come from hot paths (a client's over-long line): they never wait for stderr.
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(crate::stderr::StderrMessage::default)
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
    Ok(logs)
}

/// A line for a tracing event: printable ASCII as is, other bytes escaped.
pub fn show(line: &[u8]) -> String {
    line.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_escaped_onto_one_line() {
        let mut out = Vec::new();
        escape_into(&mut out, b"IAMAT k\xffi\\ \"x\"\n\tend");
        assert_eq!(out, b"IAMAT k\\xffi\\\\ \"x\"\\n\\tend");
    }

    #[test]
    fn clean_lines_are_copied_whole_and_dirty_bytes_escaped_anywhere() {
        let clean = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450";
        let mut out = Vec::new();
        escape_into(&mut out, clean);
        assert_eq!(out, clean);
        // A byte to escape in the first chunk, a later chunk, and the tail.
        for at in [0, 15, 16, 31, clean.len() - 1] {
            let mut line = clean.to_vec();
            line[at] = b'\x7f';
            let mut out = Vec::new();
            escape_into(&mut out, &line);
            let want = format!(
                "{}\\x7f{}",
                String::from_utf8_lossy(&clean[..at]),
                String::from_utf8_lossy(&clean[at + 1..])
            );
            assert_eq!(String::from_utf8(out).unwrap(), want, "at {at}");
        }
    }

    #[test]
    fn a_stamp_in_the_same_second_is_the_full_format() {
        let mut b = Log::off().buffer(1, None);
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::new(1_780_000_000, 999_000);
        b.stamp_at(t0);
        assert_eq!(&b.stamp, b"2026-05-28T20:26:40.000999Z");
        for micros in [1, 10, 123_456, 999_999] {
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::new(1_780_000_000, micros * 1000);
            b.stamp_at(t);
            let full = humantime::format_rfc3339_micros(t).to_string();
            assert_eq!(std::str::from_utf8(&b.stamp).unwrap(), full);
        }
        // The next second is formatted afresh.
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::new(1_780_000_060, 5000);
        b.stamp_at(t);
        assert_eq!(&b.stamp, b"2026-05-28T20:27:40.000005Z");
    }

    #[test]
    fn a_batch_shares_one_stamp_and_the_connection_tag() {
        let log = Log::off();
        let mut b = log.buffer(7, Some("Ham ilton"));
        b.line(Dir::PeerIn, b"AT x\n");
        b.line(Dir::PeerOut, b"AT y");
        b.whatsat("offline", "OK", 3, 120, 0.25, Some(b"{\n  \"a\": 1\n}"));
        let text = String::from_utf8(b.buf.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let stamp = &lines[0][..STAMP];
        assert!(stamp.ends_with('Z') && stamp.contains('T'), "{stamp}");
        assert!(lines.iter().all(|l| l.starts_with(stamp)), "{text}");
        assert_eq!(&lines[0][STAMP..], " c7 <Ham ilton AT x");
        assert_eq!(&lines[1][STAMP..], " c7 >Ham ilton AT y");
        assert_eq!(
            &lines[2][STAMP..],
            " c7 out-json backend=offline status=OK results=3 bytes=120 \
             ms=0.250 body={\\n  \"a\": 1\\n}"
        );
    }

    /// The entry of `request` and `reply`, split back into its two parts.
    fn entry(request: &[u8], reply: &[u8]) -> (String, String) {
        let mut b = Log::off().buffer(12, None);
        b.pair(request, reply);
        let text = String::from_utf8(b.buf).unwrap();
        let line = text.strip_suffix('\n').unwrap();
        assert!(!line.contains('\n'), "{line:?}");
        let rest = line[STAMP..].strip_prefix(" c12 ").unwrap();
        let (req, rep) = rest.split_once('\t').unwrap();
        assert!(!rep.contains('\t'), "{line:?}");
        (req.to_owned(), rep.to_owned())
    }

    #[test]
    fn an_iamat_and_its_reply_are_one_entry_with_the_fields_once() {
        let iamat = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450\n";
        let at =
            b"AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450\n";
        let (req, rep) = entry(iamat, at);
        assert_eq!(
            req,
            "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450"
        );
        assert_eq!(rep, "AT Alford +0.263873386 …");
        assert_eq!(expand_reply(&req, &rep).as_bytes(), &at[..at.len() - 1]);
        // A reply that does not repeat the request is written whole.
        let (req, rep) = entry(b"WHATSAT kiwi 10 5", &at[..]);
        assert_eq!(req, "WHATSAT kiwi 10 5");
        assert_eq!(rep.as_bytes(), &at[..at.len() - 1]);
        assert_eq!(expand_reply(&req, &rep), rep);
    }

    #[test]
    fn every_entry_gives_back_the_exact_request_and_reply() {
        use proptest::prelude::*;
        // Bytes a client may send, the white space and escapes included, and replies that do and
        // do not end with the request's fields.
        let part = proptest::collection::vec(
            prop_oneof![
                Just(b' '),
                Just(b'\\'),
                Just(b'\t'),
                Just(0xe2),
                Just(b'a'),
                any::<u8>()
            ],
            0..24,
        );
        let mut runner = proptest::test_runner::TestRunner::default();
        runner
            .run(
                &(part.clone(), part, any::<bool>(), any::<bool>()),
                |(fields, head, iamat, repeat)| {
                    let fields: Vec<u8> = fields.into_iter().filter(|&b| b != b'\n').collect();
                    let head: Vec<u8> = head.into_iter().filter(|&b| b != b'\n').collect();
                    let request = if iamat {
                        [b"IAMAT ".as_slice(), &fields].concat()
                    } else {
                        fields.clone()
                    };
                    let reply = if repeat {
                        [head.as_slice(), b" ", &fields].concat()
                    } else {
                        head.clone()
                    };
                    let (req, rep) = entry(&request, &reply);
                    let mut want_req = Vec::new();
                    escape_into(&mut want_req, &request);
                    let mut want_rep = Vec::new();
                    escape_into(&mut want_rep, &reply);
                    prop_assert_eq!(req.as_bytes(), &want_req[..]);
                    let got = expand_reply(&req, &rep);
                    prop_assert_eq!(got.as_bytes(), &want_rep[..]);
                    Ok(())
                },
            )
            .unwrap();
    }
}
