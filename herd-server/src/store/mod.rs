//! Records on disk: a journal of every record the server stores, and snapshots it is compacted into.
//!
//! The node decides what is journaled (every record it stores, from a client or a peer: see
//! [`Node::with_journal`](crate::node::Node::with_journal)) and frames it; this module only puts
//! those bytes in files and says when they are there. The driver appends a batch's bytes while it
//! still holds the node, gets a *ticket* (how many bytes had been appended in all), and — under
//! `fsync = "always"` — sends the batch's replies only once [`Store::durable`] says the ticket is on
//! disk. One writer thread writes whatever has been appended since its last write and syncs it
//! once: every batch that arrived meanwhile shares that one `fdatasync` (group commit).
//!
//! # Files, in `DIR/<Name>/` (created `0700`, files `0600`)
//! - `identity`: the server the folder belongs to and the herd's servers when it was created; a
//!   start under another name is refused (the `identity` module).
//! - `journal.<N>`: records appended as they are stored (format in the `format` module).
//! - `snapshot.<N>`: every record held at one moment; it makes every `journal.<M>` with `M < N`
//!   redundant. `journal.<N>` holds what was stored after it.
//! - `*.tmp`: a file being written; never read, deleted once a start has loaded everything.
//! - `*.damaged`: a file a repair found damaged, set aside (never read again, never deleted).
//!
//! The folder itself is locked (`flock`) for the life of the server, so two servers never share it.
//!
//! # Starting
//! A start reads and checks everything before it changes anything: it refuses a file that is
//! missing (a journal that needs a snapshot that is not there, a gap in the journals), damaged, of
//! another kind or version, or not a regular file, and then leaves every file as it was. Only once
//! every record is loaded does it cut torn tails (the write a crash interrupted), delete the files a
//! newer snapshot made redundant and the temporary files.
//!
//! Loading reads the newest snapshot, then every journal numbered from it on, streamed in bounded
//! steps (the `load` module). A record only replaces an older one of the same client (the herd's
//! order), so replaying the files in any order, or a record twice, gives the same cache: that is what
//! lets compaction run beside service, and a repair read every file there is.
//!
//! # Repair
//! With `repair`, a start reads *every* snapshot and journal in the folder and skips only damaged
//! records (reading goes on at the next whole record), reporting by file and offset what it kept and
//! dropped. The server then writes a snapshot of what it loaded before it serves
//! ([`LoadReport::rewrite`]); the damaged files are renamed `*.damaged` rather than deleted.
//!
//! # Compaction
//! When the journals hold far more records than the cache ([`should_compact`]), [`Store::compact`] starts
//! `journal.<N+1>` (new records go there from then on), writes the cache into `snapshot.<N+1>.tmp` a
//! few thousand records at a time (the node is locked only per chunk, and memory grows by one chunk,
//! not by a copy of the cache), syncs it, renames it to `snapshot.<N+1>`, syncs the folder, and only
//! then deletes the files it makes redundant. A crash at any point leaves either the old snapshot
//! with both journals, or the new snapshot (with leftovers deleted at the next start). A compaction
//! that cannot create its files leaves the working journal in use.
//!
//! # When the disk fails
//! A failed write or sync marks the journal *broken*: the bytes not yet on disk are dropped (they are
//! still in memory), the file is cut back to its last whole record, and every ticket up to now fails —
//! under `always` those replies are never sent. Under `everysec` and `no`, replies do not wait for
//! the disk, but once persistence has been failing for [`ACK_WINDOW`] the server acknowledges nothing
//! more ([`Store::acknowledging`]) until it works again. The driver retries a compaction every
//! second: once it succeeds, a new journal and a snapshot of everything in memory make the disk whole
//! again.

pub mod format;
pub mod identity;
mod load;

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use tokio::sync::watch;

use crate::config::Fsync;
use format::Kind;
pub use load::Skipped;

/// What a server's store is set to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The server's own folder (`DIR/<Name>`).
    pub dir: PathBuf,
    /// When records reach the disk.
    pub fsync: Fsync,
    /// Journals smaller than this are never compacted.
    pub compact_bytes: u64,
    /// Read every file and skip damaged records instead of refusing to start.
    pub repair: bool,
    /// The server's name: the folder's identity must name it.
    pub server: String,
    /// The herd's servers, recorded in a new folder's identity.
    pub members: Vec<String>,
    /// Servers whose records the start drops (`--forget NAME`): records naming any other server,
    /// in the herd or not, are kept.
    pub forget: Vec<String>,
}

impl StoreConfig {
    /// The store of server `server` in `dir`, with the default settings.
    pub fn new(dir: impl Into<PathBuf>, server: &str) -> StoreConfig {
        let d = herd_config::StoreSettings::default();
        StoreConfig {
            dir: dir.into(),
            fsync: d.fsync,
            compact_bytes: d.compact_bytes,
            repair: false,
            server: server.to_owned(),
            members: vec![server.to_owned()],
            forget: Vec::new(),
        }
    }
}

/// Whether the journals are worth compacting: at least `min_bytes`, and at least twice as many
/// records as the cache holds (so most of what they hold has been replaced).
pub fn should_compact(journal_bytes: u64, journal_records: u64, live: u64, min_bytes: u64) -> bool {
    journal_bytes >= min_bytes && journal_records >= live.saturating_mul(2).max(1)
}

/// A journal that has fallen this far behind the appends holds its appenders back.
pub const WRITER_BACKLOG: u64 = 8 * 1024 * 1024;

/// Under `everysec` and `no`, how long appended records may wait before the writer hands them to the
/// kernel: the writer sleeps this long between `write`s instead of being woken by every batch. A wake
/// and a small `write` per batch (tens of thousands a second) cost a quarter of the server's
/// throughput on two cores; one `write` every few milliseconds costs next to nothing. It is also the
/// most a `kill -9` of the server can lose under those settings (a record in the kernel survives the
/// process), on top of which a machine crash loses what was not yet synced.
pub const PACE: Duration = Duration::from_millis(5);

/// Under `everysec` and `no`, appends past this many pending bytes wake the writer before its pace
/// is up, so a burst never waits in memory long.
pub const WAKE_AT: usize = 1024 * 1024;

/// Under `everysec` and `no`, how long the server goes on acknowledging records from memory once
/// persistence fails: what `everysec` promises to lose at most. Past it, it acknowledges nothing
/// until the disk works again, as under `always`.
pub const ACK_WINDOW: Duration = Duration::from_secs(1);

/// Most bytes kept in memory for the next journal while the journal is failing (records from peers
/// go on arriving when clients get no acknowledgement); past it they are dropped, and the snapshot
/// that rescues the store writes them from the cache instead.
pub const RETAIN_MAX: usize = 64 * 1024 * 1024;

/// Where the writer is, in bytes appended (tickets).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Everything up to here has been written to the journal file.
    pub written: u64,
    /// Everything up to here is on disk (synced).
    pub durable: u64,
    /// Everything up to here that is not durable never will be (the journal broke).
    pub failed: u64,
}

/// The store could not make a batch durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the records could not be written to disk")]
pub struct NotDurable;

/// How the store stands, for the operator (`/metrics`, `/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreState {
    /// Bytes in the journals since the last snapshot.
    pub journal_bytes: u64,
    /// Records in the journals since the last snapshot.
    pub journal_records: u64,
    /// Bytes appended and not yet written to the journal file (the writer's backlog).
    pub unwritten_bytes: u64,
    /// Bytes appended and not yet synced by the server (under `fsync = "no"` the system syncs, so
    /// this only grows until shutdown).
    pub unsynced_bytes: u64,
    /// When the newest snapshot was written (`None`: there is none yet).
    pub snapshot_at: Option<SystemTime>,
    /// Compactions that completed since the start.
    pub compactions: u64,
    /// Persistence is failing: a write or sync failed and no compaction has repaired it yet.
    pub failing: bool,
    /// New records are acknowledged (`false`: persistence has failed for longer than the fsync
    /// setting allows, [`Store::acknowledging`]).
    pub acknowledging: bool,
}

/// A file whose damage a repair skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// The file.
    pub file: PathBuf,
    /// Records kept from it.
    pub kept: u64,
    /// Damaged stretches skipped, by offset.
    pub skipped: Vec<Skipped>,
}

impl Repaired {
    /// Records dropped: each stretch's count where its lengths tell it, at least one otherwise.
    pub fn dropped(&self) -> u64 {
        self.skipped.iter().map(|s| s.records.max(1)).sum()
    }
}

/// What a start found on disk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Records read (snapshot and journals), including ones replaced by a later record.
    pub records: u64,
    /// Files read.
    pub files: usize,
    /// Bytes cut off torn tails.
    pub cut: u64,
    /// Files with damage that a repair skipped.
    pub repaired: Vec<Repaired>,
    /// The start must write a snapshot of what it loaded before it serves ([`Store::compact`]): a
    /// repair read files that are damaged, incomplete or redundant.
    pub rewrite: bool,
    /// The herd's servers when the folder was created (`None`: it was created by this start).
    pub members_at_creation: Option<Vec<String>>,
}

/// The journal file being appended to.
struct JournalFile {
    file: File,
    gen: u64,
    /// Its length up to the last whole record written.
    len: u64,
    /// Written since the last sync.
    dirty: bool,
}

struct Appending {
    /// Appended, not yet taken by the writer.
    pending: Vec<u8>,
    /// Bytes appended in all (the last ticket).
    appended: u64,
    /// The journal broke and has not been replaced yet: appends are dropped.
    broken: bool,
    /// Something held in memory is on no disk: the next compaction must happen, and soon.
    needs_snapshot: bool,
    /// The first error since the journal last worked (said once on stderr).
    error: Option<String>,
    /// Bytes and records in the journals since the last snapshot.
    journal_bytes: u64,
    journal_records: u64,
    closing: bool,
    /// When the newest snapshot was written (`None`: there is none).
    snapshot_at: Option<SystemTime>,
    /// Compactions that completed since the start.
    compactions: u64,
    /// The writer is waiting for appends: the next append wakes it (a wake is a syscall; a busy
    /// writer finds the new bytes when it comes back for more).
    parked: bool,
    /// The writer is pacing (`everysec`, `no`): only an urgent append wakes it.
    idle: bool,
    /// Bytes kept through a failure passed [`RETAIN_MAX`] and were dropped: only a snapshot (of the
    /// memory that still holds them) makes the disk whole again.
    dropped_kept: bool,
}

struct StoreInner {
    dir: PathBuf,
    fsync: Fsync,
    compact_bytes: u64,
    state: Mutex<Appending>,
    wake: Condvar,
    journal: Mutex<Option<JournalFile>>,
    progress: watch::Sender<Progress>,
    /// One compaction at a time.
    compacting: Mutex<()>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// When `StoreInner` was made: the clock of `failing_since`.
    epoch: Instant,
    /// Milliseconds since `epoch` (plus one) at which persistence began to fail; 0 while it works.
    /// An atomic, so every batch's check of [`Store::acknowledging`] costs a load, not a lock.
    failing_since: AtomicU64,
    /// Acknowledgements have been said stopped (said once per failure).
    refusing_said: AtomicBool,
    /// Files a repair found damaged: the start's compaction renames them `*.damaged` instead of
    /// deleting them.
    damaged: Mutex<Vec<PathBuf>>,
    /// The folder, locked (`flock`) for the life of the store.
    _lock: File,
}

/// A server's store: cheap to clone; the writer thread stops at [`Store::close`].
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn journal_path(dir: &Path, gen: u64) -> PathBuf {
    dir.join(format!("journal.{gen}"))
}

fn snapshot_path(dir: &Path, gen: u64) -> PathBuf {
    dir.join(format!("snapshot.{gen}"))
}

/// Syncs a folder, so a file created, renamed or removed in it stays so after a power cut.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The numbered files of a store folder.
#[derive(Debug, Default)]
struct Listing {
    snapshots: Vec<u64>,
    journals: Vec<u64>,
    temps: Vec<PathBuf>,
}

impl Listing {
    /// The snapshots, then the journals, numbered below `gen`: what a snapshot numbered `gen`
    /// makes redundant.
    fn older_than(&self, dir: &Path, gen: u64) -> Vec<PathBuf> {
        let snapshots = self.snapshots.iter().filter(|&&s| s < gen);
        let journals = self.journals.iter().filter(|&&j| j < gen);
        snapshots
            .map(|&s| snapshot_path(dir, s))
            .chain(journals.map(|&j| journal_path(dir, j)))
            .collect()
    }
}

fn list(dir: &Path) -> anyhow::Result<Listing> {
    let mut l = Listing::default();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            l.temps.push(entry.path());
        } else if let Some(n) = name.strip_prefix("snapshot.").and_then(|n| n.parse().ok()) {
            l.snapshots.push(n);
        } else if let Some(n) = name.strip_prefix("journal.").and_then(|n| n.parse().ok()) {
            l.journals.push(n);
        }
    }
    l.snapshots.sort_unstable();
    l.journals.sort_unstable();
    Ok(l)
}

/// What loading does with the records of the files: [`Store::open_with`] checks and parses records
/// on other threads ([`Loader::parse`]) while the calling thread takes them in order
/// ([`Loader::take`]), so the start of a server with a million records uses every core.
pub trait Loader {
    /// What the parser finds in a record for [`Loader::take`].
    type Parsed: Send;

    /// What parsing needs of the loader, shared by the parsing threads.
    type Parser: Sync;

    /// The parser's state, taken before loading starts.
    fn parser(&self) -> Self::Parser;

    /// Checks one record's payload and extracts what [`Loader::take`] needs; `None` for a payload
    /// that is not a record (damage). Called on several threads at once.
    fn parse(parser: &Self::Parser, payload: &[u8]) -> Option<Self::Parsed>;

    /// About `records` more records follow (so maps are sized once, not grown step by step).
    fn reserve(&mut self, records: usize);

    /// Takes one record, in file order; `false` counts as damage at that record.
    fn take(&mut self, payload: &[u8], parsed: Self::Parsed) -> bool;
}

/// A [`Loader`] that hands each payload to a closure (no parsing ahead).
struct Each<F>(F);

impl<F: FnMut(&[u8]) -> bool> Loader for Each<F> {
    type Parsed = ();
    type Parser = ();
    fn parser(&self) {}
    fn parse((): &(), _: &[u8]) -> Option<()> {
        Some(())
    }
    fn reserve(&mut self, _: usize) {}
    fn take(&mut self, payload: &[u8], (): ()) -> bool {
        (self.0)(payload)
    }
}

/// Says what a repair kept and dropped, by file and offset, on stderr and in the log.
fn say_repaired(dir: &Path, report: &LoadReport) {
    let dropped: u64 = report.repaired.iter().map(Repaired::dropped).sum();
    if report.repaired.is_empty() {
        crate::say(format_args!(
            "herd-server: repair: {}: {} records read from {} files, none damaged",
            dir.display(),
            report.records,
            report.files
        ));
        tracing::warn!(dir = %dir.display(), records = report.records, files = report.files, "repair: nothing damaged");
        return;
    }
    crate::say(format_args!(
        "herd-server: repair: {}: kept {} records, dropped {dropped} damaged ({} files read)",
        dir.display(),
        report.records,
        report.files
    ));
    tracing::warn!(dir = %dir.display(), kept = report.records, dropped, files = report.files, "repair");
    for r in &report.repaired {
        for s in &r.skipped {
            let records = match s.records {
                0 => "at least 1 record".to_owned(),
                1 => "1 record".to_owned(),
                n => format!("{n} records"),
            };
            crate::say(format_args!(
                "herd-server: repair: {}: dropped {records} ({} bytes at byte offset {}: {}); kept {} \
                 records of the file; it will be renamed {}.damaged",
                r.file.display(),
                s.len,
                s.at,
                s.why,
                r.kept,
                r.file.display()
            ));
            tracing::warn!(file = %r.file.display(), offset = s.at, bytes = s.len, records = s.records,
                cause = s.why, kept = r.kept, "repair: skipped damaged records");
        }
    }
}

/// Creates `journal.<gen>` (`0600`) with its header, synced, and syncs the folder.
fn create_journal(dir: &Path, gen: u64) -> std::io::Result<JournalFile> {
    let path = journal_path(dir, gen);
    let mut file = identity::private()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let written = file
        .write_all(&format::header(Kind::Journal))
        .and_then(|()| file.sync_data())
        .and_then(|()| sync_dir(dir));
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(JournalFile {
        file,
        gen,
        len: format::HEADER_LEN as u64,
        dirty: false,
    })
}

/// What a start reads, and what it may delete once everything is loaded.
struct OpenPlan {
    /// The files to read, in order.
    files: Vec<(PathBuf, Kind)>,
    /// The newest snapshot's number (0: none).
    base: u64,
    /// Files a newer snapshot made redundant (deleted after loading).
    redundant: Vec<PathBuf>,
}

/// What to do when a file is missing or damaged, said at the end of every refusal.
const PROCEED: &str = "Nothing was changed. Put the file back (from a backup), or start with --repair \
                       to load every whole record of every file in the folder and set damaged files \
                       aside";

/// The files a start reads: the newest snapshot and the journals from it on; or, for a repair, every
/// file. Refuses (changing nothing) when a file the newest state needs is missing.
fn plan(dir: &Path, l: &Listing, repair: bool) -> anyhow::Result<OpenPlan> {
    let base = l.snapshots.last().copied().unwrap_or(0);
    if repair {
        let mut files: Vec<(PathBuf, Kind)> = l
            .snapshots
            .iter()
            .map(|&s| (snapshot_path(dir, s), Kind::Snapshot))
            .collect();
        files.extend(
            l.journals
                .iter()
                .map(|&j| (journal_path(dir, j), Kind::Journal)),
        );
        return Ok(OpenPlan {
            files,
            base,
            redundant: Vec::new(),
        });
    }
    let journals: Vec<u64> = l.journals.iter().copied().filter(|&j| j >= base).collect();
    check_unbroken(dir, base, &journals)?;
    let mut files = Vec::new();
    if base > 0 {
        files.push((snapshot_path(dir, base), Kind::Snapshot));
    }
    files.extend(
        journals
            .iter()
            .map(|&j| (journal_path(dir, j), Kind::Journal)),
    );
    Ok(OpenPlan {
        files,
        base,
        redundant: l.older_than(dir, base),
    })
}

/// Refuses a start when the newest state is not whole: the snapshot `base` (0: none) and then
/// every journal from it on, numbered without a gap, must be there.
fn check_unbroken(dir: &Path, base: u64, journals: &[u64]) -> anyhow::Result<()> {
    let show = |p: PathBuf| p.display().to_string();
    if base == 0 {
        if let Some(&first) = journals.first().filter(|&&j| j > 1) {
            anyhow::bail!(
                "{} needs {}, which is missing: that snapshot held every record stored before the \
                 journal began. {PROCEED}",
                show(journal_path(dir, first)),
                show(snapshot_path(dir, first))
            );
        }
    } else if !journals.contains(&base) {
        anyhow::bail!(
            "{} is here but {}, which holds the records stored after it, is missing. {PROCEED}",
            show(snapshot_path(dir, base)),
            show(journal_path(dir, base))
        );
    }
    for pair in journals.windows(2) {
        if pair[1] != pair[0] + 1 {
            anyhow::bail!(
                "{} is missing between {} and {}. {PROCEED}",
                show(journal_path(dir, pair[0] + 1)),
                show(journal_path(dir, pair[0])),
                show(journal_path(dir, pair[1]))
            );
        }
    }
    Ok(())
}

/// A torn tail to cut once everything is loaded.
struct Cut {
    path: PathBuf,
    at: u64,
    len: u64,
}

/// Cuts a journal's torn tail: back to its last whole record, or to a fresh header.
fn apply_cut(c: &Cut) -> anyhow::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(&c.path)
        .with_context(|| format!("opening {} to cut it", c.path.display()))?;
    if c.at < format::HEADER_LEN as u64 {
        // Not even a whole header: start the file again.
        file.set_len(0)?;
        (&file).write_all(&format::header(Kind::Journal))?;
    } else {
        file.set_len(c.at)?;
    }
    file.sync_all()
        .with_context(|| format!("syncing {}", c.path.display()))?;
    tracing::warn!(file = %c.path.display(), offset = c.at, cut = c.len, "cut off a torn last record");
    crate::say(format_args!(
        "herd-server: {}: cut off a torn last record ({} bytes at byte offset {})",
        c.path.display(),
        c.len,
        c.at
    ));
    Ok(())
}

/// Says how a file's damage reads and what to do, for a refused start.
fn damaged(path: &Path, at: u64, why: &str, len: u64) -> anyhow::Error {
    anyhow::anyhow!(
        "{} is damaged at byte offset {at} ({why}; {} bytes from there on). {PROCEED}; a repair \
         drops only the damaged records",
        path.display(),
        len.saturating_sub(at)
    )
}

/// Says once, on a folder opened to group or others, that it should not be.
fn check_mode(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(m) = std::fs::metadata(dir) {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = %format!("{mode:o}"),
                "the data folder is open to other users; records hold client ids and places: chmod 700 it");
            crate::say(format_args!(
                "herd-server: warning: {} is mode {mode:o}, open to other users (records hold client \
                 ids and places): chmod 700 it",
                dir.display()
            ));
        }
    }
}

/// The first step of a start: every planned file read, nothing changed. It gathers the report,
/// the torn tails to cut and the damaged files to set aside once everything is read (so a refused
/// start changes no file), and the journals' size, which the compaction rule needs.
struct Replay {
    repair: bool,
    report: LoadReport,
    cuts: Vec<Cut>,
    set_aside: Vec<PathBuf>,
    journal_bytes: u64,
    journal_records: u64,
}

impl Replay {
    fn new(repair: bool, members_at_creation: Option<Vec<String>>) -> Self {
        Replay {
            repair,
            report: LoadReport {
                members_at_creation,
                rewrite: repair,
                ..LoadReport::default()
            },
            cuts: Vec::new(),
            set_aside: Vec::new(),
            journal_bytes: 0,
            journal_records: 0,
        }
    }

    /// Reads one file's records into `loader`.
    fn file<L: Loader>(&mut self, path: &Path, kind: Kind, loader: &mut L) -> anyhow::Result<()> {
        self.report.files += 1;
        let opened = load::Source::open(path, kind)
            .with_context(|| format!("opening {}", path.display()))?;
        let src = match opened {
            Ok(src) => src,
            Err(refused) => return self.unreadable(path, kind, refused),
        };
        let scan = load::scan(&src, self.repair, loader)
            .with_context(|| format!("reading {}", path.display()))?;
        self.report.records += scan.records;
        let mut skipped = scan.skipped;
        self.tail(path, kind, scan.tail, src.len(), &mut skipped)?;
        if kind == Kind::Journal {
            self.journal_records += scan.records;
            self.journal_bytes += src.len();
        }
        if !skipped.is_empty() {
            self.set_aside.push(path.to_path_buf());
            self.report.repaired.push(Repaired {
                file: path.to_path_buf(),
                kept: scan.records,
                skipped,
            });
        }
        Ok(())
    }

    /// A file whose header was refused: another version's refuses the start; a journal whose
    /// creation a crash interrupted is cut back to a header; anything else refuses the start, or —
    /// for a repair — is set aside whole.
    fn unreadable(
        &mut self,
        path: &Path,
        kind: Kind,
        refused: load::Refused,
    ) -> anyhow::Result<()> {
        let why = match refused {
            load::Refused::Version(v) => anyhow::bail!(
                "{} is in store format version {v}; this server reads version {} (a newer server \
                 wrote it?). Nothing was changed",
                path.display(),
                format::VERSION
            ),
            // A crash while a journal was being created: nothing in it yet.
            load::Refused::Torn(n) if kind == Kind::Journal => {
                self.cuts.push(Cut {
                    path: path.to_path_buf(),
                    at: 0,
                    len: n,
                });
                return Ok(());
            }
            load::Refused::NotAFile(what) => format!("{what}, not a regular file"),
            load::Refused::Torn(_) => "a snapshot cut short in its header".into(),
            load::Refused::Foreign => format!("not a herd {} (bad header)", kind.as_str()),
        };
        if !self.repair {
            anyhow::bail!(
                "{} cannot be read: {why}; it was checked before anything was read \
                 from it. {PROCEED}",
                path.display()
            );
        }
        self.report.repaired.push(Repaired {
            file: path.to_path_buf(),
            kept: 0,
            skipped: vec![Skipped {
                at: 0,
                len: 0,
                why: "not a readable herd file",
                records: 0,
            }],
        });
        self.set_aside.push(path.to_path_buf());
        Ok(())
    }

    /// How a file of `len` bytes ended: a journal's torn last record is cut; a snapshot is synced
    /// before it is renamed into place, so a short one is damage (skipped by a repair); damage
    /// before the end refuses the start.
    fn tail(
        &mut self,
        path: &Path,
        kind: Kind,
        tail: load::Tail,
        len: u64,
        skipped: &mut Vec<Skipped>,
    ) -> anyhow::Result<()> {
        match tail {
            load::Tail::Clean => {}
            load::Tail::Torn { at } if kind == Kind::Journal => self.cuts.push(Cut {
                path: path.to_path_buf(),
                at,
                len: len - at,
            }),
            load::Tail::Torn { at } if self.repair => skipped.push(Skipped {
                at,
                len: len - at,
                why: "snapshot cut short",
                records: 0,
            }),
            load::Tail::Torn { at } => return Err(damaged(path, at, "snapshot cut short", len)),
            load::Tail::Damaged { at, why } => return Err(damaged(path, at, why, len)),
        }
        Ok(())
    }

    /// The second step, once everything is loaded: cut torn tails, say what was repaired, delete
    /// temporary and redundant files, write the folder's identity if it is new.
    fn settle(
        &mut self,
        cfg: &StoreConfig,
        listing: &Listing,
        plan: &OpenPlan,
        new: bool,
    ) -> anyhow::Result<()> {
        let dir = &cfg.dir;
        for c in &self.cuts {
            apply_cut(c)?;
            self.report.cut += c.len;
        }
        if cfg.repair {
            say_repaired(dir, &self.report);
        }
        for t in &listing.temps {
            std::fs::remove_file(t).with_context(|| format!("removing {}", t.display()))?;
        }
        for r in &plan.redundant {
            std::fs::remove_file(r).with_context(|| format!("removing {}", r.display()))?;
        }
        if new {
            identity::write(
                dir,
                &identity::Identity {
                    server: cfg.server.clone(),
                    members: cfg.members.clone(),
                },
            )?;
        }
        if !listing.temps.is_empty() || !plan.redundant.is_empty() || !self.cuts.is_empty() {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

/// The third step of a start: go on appending to the newest journal, or start one (after the newest
/// when that one is set aside). A repair starts a journal numbered above every file there is, so that
/// the snapshot its start writes replaces (and sets aside) all of them, a damaged newer snapshot
/// included.
fn open_journal(
    dir: &Path,
    listing: &Listing,
    base: u64,
    repair: bool,
    set_aside: &[PathBuf],
) -> anyhow::Result<JournalFile> {
    let newest = listing.journals.last().copied();
    let top = newest.max(listing.snapshots.last().copied());
    match newest {
        Some(gen) if !repair && !set_aside.contains(&journal_path(dir, gen)) => {
            let path = journal_path(dir, gen);
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let len = file.metadata()?.len();
            Ok(JournalFile {
                file,
                gen,
                len,
                dirty: false,
            })
        }
        _ => {
            let gen = top.map_or(base.max(1), |g| g + 1);
            create_journal(dir, gen)
                .with_context(|| format!("creating {}", journal_path(dir, gen).display()))
        }
    }
}

impl Appending {
    /// The state of a store just opened, whose journals since the last snapshot (`snapshot_at`)
    /// hold `journal_bytes` and `journal_records`.
    fn opened(journal_bytes: u64, journal_records: u64, snapshot_at: Option<SystemTime>) -> Self {
        Appending {
            pending: Vec::new(),
            appended: 0,
            broken: false,
            needs_snapshot: false,
            error: None,
            journal_bytes,
            journal_records,
            closing: false,
            snapshot_at,
            compactions: 0,
            parked: false,
            idle: false,
            dropped_kept: false,
        }
    }
}

impl Store {
    /// Opens (or creates) the store of `cfg.dir`, feeding every record on disk to `each` — the newest
    /// snapshot first, then the journals in order — before anything else happens. `each` returns
    /// `false` for a record it cannot take (not an AT line), which counts as damage.
    ///
    /// # Errors
    /// The folder cannot be created or locked, or belongs to another server; a file is missing,
    /// damaged before its end (unless `cfg.repair`), of an unknown version, or cannot be read, cut
    /// or created. A refused start changes no file.
    pub fn open(
        cfg: &StoreConfig,
        each: impl FnMut(&[u8]) -> bool,
    ) -> anyhow::Result<(Store, LoadReport)> {
        Self::open_with(cfg, &mut Each(each))
    }

    /// [`Store::open`] with a [`Loader`], which parses records on several threads.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with<L: Loader>(
        cfg: &StoreConfig,
        loader: &mut L,
    ) -> anyhow::Result<(Store, LoadReport)> {
        let dir = &cfg.dir;
        identity::create_dir(dir)
            .with_context(|| format!("creating the data folder {}", dir.display()))?;
        let lock_file = identity::lock_dir(dir)?;
        check_mode(dir);
        let id = identity::read(dir)?;
        if let Some(id) = &id {
            identity::check(dir, id, &cfg.server)?;
        }
        let listing = list(dir)?;
        let plan = plan(dir, &listing, cfg.repair)?;
        // 1. Read everything; change nothing.
        let mut replay = Replay::new(cfg.repair, id.as_ref().map(|i| i.members.clone()));
        for (path, kind) in &plan.files {
            replay.file(path, *kind, loader)?;
        }
        // 2. Everything is loaded: cut torn tails, delete what is redundant, say what was repaired.
        replay.settle(cfg, &listing, &plan, id.is_none())?;
        // 3. The journal to append to.
        let journal = open_journal(dir, &listing, plan.base, cfg.repair, &replay.set_aside)?;
        let snapshot_at = (plan.base > 0)
            .then(|| std::fs::metadata(snapshot_path(dir, plan.base)).and_then(|m| m.modified()))
            .and_then(Result::ok);
        let (progress, _) = watch::channel(Progress::default());
        let inner = Arc::new(StoreInner {
            dir: dir.clone(),
            fsync: cfg.fsync,
            compact_bytes: cfg.compact_bytes,
            state: Mutex::new(Appending::opened(
                replay.journal_bytes,
                replay.journal_records,
                snapshot_at,
            )),
            wake: Condvar::new(),
            journal: Mutex::new(Some(journal)),
            progress,
            compacting: Mutex::new(()),
            writer: Mutex::new(None),
            epoch: Instant::now(),
            failing_since: AtomicU64::new(0),
            refusing_said: AtomicBool::new(false),
            damaged: Mutex::new(replay.set_aside),
            _lock: lock_file,
        });
        let thread_inner = inner.clone();
        let writer = std::thread::Builder::new()
            .name("herd-journal".into())
            .spawn(move || writer(&thread_inner))
            .context("starting the journal's writer thread")?;
        *lock(&inner.writer) = Some(writer);
        Ok((Store { inner }, replay.report))
    }

    /// The fsync setting.
    pub fn fsync(&self) -> Fsync {
        self.inner.fsync
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Takes the framed records in `bytes` (leaving it empty) and returns their ticket. Call it
    /// while the records' node is still locked, so the journal never lags behind what a compaction
    /// could have missed.
    pub fn append(&self, bytes: &mut Vec<u8>, records: u64) -> u64 {
        let mut s = lock(&self.inner.state);
        s.appended += bytes.len() as u64;
        s.journal_bytes += bytes.len() as u64;
        s.journal_records += records;
        let ticket = s.appended;
        if s.broken && !retains(self.inner.fsync) {
            // Not kept: the rescue snapshot will write it from memory.
            bytes.clear();
            self.inner.progress.send_modify(|p| p.failed = ticket);
        } else {
            // Copied, not swapped: `bytes` keeps its capacity for the caller's next batch, and
            // `pending` keeps the writer's spare buffer's.
            s.pending.extend_from_slice(bytes);
            bytes.clear();
            if s.broken && s.pending.len() > RETAIN_MAX {
                s.pending = Vec::new();
                s.dropped_kept = true;
            }
            // Under `always` a reply waits for this batch: wake the writer now. Otherwise it comes
            // by on its own pace, unless the pending bytes grow large.
            let urgent = self.inner.fsync == Fsync::Always || s.pending.len() >= WAKE_AT;
            if s.parked || (s.idle && urgent) {
                s.parked = false;
                s.idle = false;
                self.inner.wake.notify_one();
            }
        }
        ticket
    }

    /// The ticket of everything appended so far: a reply that shows a record it did not store itself
    /// (a stale IAMAT's answer, a WHATSAT's AT line) waits for this under `always`, since the record
    /// it shows may still be on its way to the disk.
    pub fn position(&self) -> u64 {
        lock(&self.inner.state).appended
    }

    /// Waits until everything up to `ticket` is on disk.
    ///
    /// # Errors
    /// [`NotDurable`]: the journal broke before it got there.
    pub async fn durable(&self, ticket: u64) -> Result<(), NotDurable> {
        let mut rx = self.inner.progress.subscribe();
        let p = rx
            .wait_for(|p| p.durable >= ticket || p.failed >= ticket)
            .await
            .map(|p| *p)
            .map_err(|_| NotDurable)?;
        if p.durable >= ticket {
            Ok(())
        } else {
            Err(NotDurable)
        }
    }

    /// Holds the caller back while the writer is more than [`WRITER_BACKLOG`] behind `ticket`, so a slow
    /// disk slows appenders instead of growing memory; for at most twice [`ACK_WINDOW`], after
    /// which a journal that does not move has failed and [`Store::acknowledging`] says so.
    pub async fn keep_up(&self, ticket: u64) {
        let behind =
            |p: &Progress| ticket.saturating_sub(p.written.max(p.failed)) <= WRITER_BACKLOG;
        if behind(&self.inner.progress.borrow()) {
            return;
        }
        let mut rx = self.inner.progress.subscribe();
        let began = tokio::time::Instant::now();
        // Re-checked every tenth of a second: once acknowledgements stop, nobody waits longer.
        while began.elapsed() < 2 * ACK_WINDOW && self.acknowledging() {
            let step = tokio::time::timeout(Duration::from_millis(100), rx.wait_for(behind)).await;
            if step.is_ok() {
                return;
            }
        }
    }

    /// How the store stands now (one short lock).
    pub fn state(&self) -> StoreState {
        let p = *self.inner.progress.borrow();
        let s = lock(&self.inner.state);
        StoreState {
            journal_bytes: s.journal_bytes,
            journal_records: s.journal_records,
            unwritten_bytes: s.appended.saturating_sub(p.written.max(p.failed)),
            unsynced_bytes: s.appended.saturating_sub(p.durable.max(p.failed)),
            snapshot_at: s.snapshot_at,
            compactions: s.compactions,
            failing: s.broken || s.error.is_some(),
            acknowledging: self.acknowledging(),
        }
    }

    /// Whether new records may be acknowledged: always, unless persistence has been failing for
    /// longer than the fsync setting allows — [`ACK_WINDOW`] under `everysec` and `no` (under
    /// `always` every reply waits for the disk anyway). Said once, on stderr and in the log, when it
    /// turns false. One atomic load while the disk works.
    pub fn acknowledging(&self) -> bool {
        let inner = &self.inner;
        let since = inner.failing_since.load(Ordering::Relaxed);
        if since == 0 {
            return true;
        }
        let failing_for = inner
            .epoch
            .elapsed()
            .saturating_sub(Duration::from_millis(since - 1));
        if failing_for < ACK_WINDOW {
            return true;
        }
        if !inner.refusing_said.swap(true, Ordering::Relaxed) {
            let cause = self.failure().unwrap_or_default();
            crate::say(format_args!(
                "herd-server: persistence has been failing in {} for over {ACK_WINDOW:?} ({cause}):                  acknowledging no new record until it works again (fsync {} promises no more)",
                inner.dir.display(),
                inner.fsync
            ));
            tracing::error!(dir = %inner.dir.display(), cause = %cause, fsync = %inner.fsync,
                "persistence failing: acknowledging no new record until it works again");
        }
        false
    }

    /// What made persistence fail, while it fails.
    pub fn failure(&self) -> Option<String> {
        lock(&self.inner.state).error.clone()
    }

    /// The writer's position.
    pub fn progress(&self) -> Progress {
        *self.inner.progress.borrow()
    }

    /// Whether a compaction should run now, for a cache of `live` records: the journals are large
    /// and mostly replaced ([`should_compact`]), or the disk failed and memory holds records it lacks.
    pub fn wants_compaction(&self, live: u64) -> bool {
        let s = lock(&self.inner.state);
        s.needs_snapshot
            || should_compact(
                s.journal_bytes,
                s.journal_records,
                live,
                self.inner.compact_bytes,
            )
    }

    /// Stops the writer after it has written and synced everything appended.
    pub fn close(&self) {
        let mut s = lock(&self.inner.state);
        s.closing = true;
        drop(s);
        self.inner.wake.notify_one();
        if let Some(t) = lock(&self.inner.writer).take() {
            let _ = t.join();
        }
    }
}

fn broke(inner: &StoreInner, what: &str, e: &std::io::Error, batch: Vec<u8>) {
    let mut s = lock(&inner.state);
    s.broken = true;
    // A compaction's new journal is the way out: it is due now.
    s.needs_snapshot = true;
    if retains(inner.fsync) {
        // Acknowledged already: kept, in order, for the next journal that can be written.
        let mut kept = batch;
        kept.append(&mut s.pending);
        s.pending = kept;
    } else {
        s.pending.clear();
        let appended = s.appended;
        inner.progress.send_modify(|p| p.failed = appended);
    }
    if s.error.is_none() {
        let msg = format!("{what}: {e}");
        let since = inner.epoch.elapsed().as_millis() as u64 + 1;
        inner.failing_since.store(since, Ordering::Relaxed);
        inner.refusing_said.store(false, Ordering::Relaxed);
        let consequence = if inner.fsync.replies_wait_for_disk() {
            "records that cannot be made durable are not acknowledged (their connections are closed)"
        } else {
            "serving from memory; records stored meanwhile are on no disk until it works again, and \
             past a second of this no new record is acknowledged"
        };
        crate::say(format_args!(
            "herd-server: persistence is failing in {}: {msg}; {consequence}",
            inner.dir.display()
        ));
        tracing::error!(dir = %inner.dir.display(), cause = %msg, "persistence is failing");
        s.error = Some(msg);
    }
}

/// Whether the bytes of a failed write are kept for the next journal rather than dropped: under
/// `everysec` and `no` they were acknowledged already (under `always` their replies were not sent,
/// and never will be).
fn retains(fsync: Fsync) -> bool {
    fsync != Fsync::Always
}

/// Under `everysec` and `no`, a write to a new journal after a failure put the kept bytes on disk:
/// persistence works again (no snapshot is needed, nothing was dropped).
fn wrote_again(inner: &StoreInner) {
    let mut s = lock(&inner.state);
    if s.broken || s.dropped_kept {
        return;
    }
    s.needs_snapshot = false;
    let Some(e) = s.error.take() else { return };
    drop(s);
    inner.failing_since.store(0, Ordering::Relaxed);
    crate::say(format_args!(
        "herd-server: persistence works again in {} (after: {e}); every record acknowledged is \
         written, and new records are acknowledged again",
        inner.dir.display()
    ));
    tracing::warn!(dir = %inner.dir.display(), "persistence works again");
}

/// The writer thread: takes what was appended, writes it, syncs as `fsync` says, publishes progress.
///
/// Under `always` it writes as soon as anything is appended (a reply is waiting). Under `everysec`
/// and `no` it writes at most every [`PACE`] (sooner past [`WAKE_AT`] pending bytes): appends then
/// cost a copy under a lock, never a wake or a syscall, while the writer is pacing.
fn writer(inner: &StoreInner) {
    let mut w = JournalWriter {
        inner,
        paced: inner.fsync != Fsync::Always,
        last_sync: Instant::now(),
        last_write: Instant::now(),
        unsynced: false,
        spare: Vec::new(),
    };
    loop {
        let (mut batch, ticket, closing) = w.next_batch();
        let sync = match inner.fsync {
            Fsync::Always => !batch.is_empty(),
            Fsync::Everysec => w.last_sync.elapsed() >= EVERYSEC || closing,
            Fsync::No => closing,
        };
        let result = {
            let mut guard = lock(&inner.journal);
            match guard.as_mut() {
                None => Ok(false),
                Some(j) => write_batch(j, &batch, sync).map(|()| true),
            }
        };
        if !batch.is_empty() {
            w.last_write = Instant::now();
        }
        match result {
            Ok(wrote) => w.wrote(&batch, ticket, sync, wrote),
            Err(e) => {
                broke(inner, "writing the journal", &e, std::mem::take(&mut batch));
                if closing {
                    // Nothing more can be written: what is kept is lost with the process.
                    return;
                }
                continue;
            }
        }
        batch.clear();
        if batch.capacity() <= 4 * WAKE_AT {
            w.spare = batch;
        }
        if closing && lock(&inner.state).pending.is_empty() {
            return;
        }
    }
}

/// How often `everysec` syncs.
const EVERYSEC: Duration = Duration::from_secs(1);

/// What the writer thread remembers between batches.
struct JournalWriter<'a> {
    inner: &'a StoreInner,
    /// `everysec` or `no`: writes wait for [`PACE`] (or [`WAKE_AT`] bytes).
    paced: bool,
    last_sync: Instant,
    last_write: Instant,
    /// Written and not yet synced (everysec). Kept here, not read from the journal, so this thread
    /// never takes the journal's lock while it holds the state's (compaction takes them the other
    /// way).
    unsynced: bool,
    /// The buffer written last time, emptied: it becomes `pending` again, so neither side regrows
    /// one.
    spare: Vec<u8>,
}

impl JournalWriter<'_> {
    /// Waits until there is something to write (as the pacing allows), a sync is due, or the store
    /// closes; then takes the pending bytes, with their ticket and whether the store is closing.
    fn next_batch(&mut self) -> (Vec<u8>, u64, bool) {
        let inner = self.inner;
        let mut s = lock(&inner.state);
        loop {
            if s.closing {
                break;
            }
            if s.broken && retains(inner.fsync) {
                // The journal failed: wait for a compaction's new one (which wakes this thread).
                s = wait(inner, s, Some(Duration::from_millis(100)));
                continue;
            }
            if !s.pending.is_empty() {
                let due = if self.paced && s.pending.len() < WAKE_AT {
                    PACE.saturating_sub(self.last_write.elapsed())
                } else {
                    Duration::ZERO
                };
                if due.is_zero() {
                    break;
                }
                // Pacing: only a large backlog wakes it before `due`.
                s.idle = true;
                s = wait(inner, s, Some(due));
                continue;
            }
            // Nothing to write: wait for an append (which wakes it), or for the sync that is due.
            let sync_due = (inner.fsync == Fsync::Everysec && self.unsynced)
                .then(|| EVERYSEC.saturating_sub(self.last_sync.elapsed()));
            if sync_due == Some(Duration::ZERO) {
                break;
            }
            s.parked = true;
            s = wait(inner, s, sync_due);
        }
        s.idle = false;
        s.parked = false;
        let batch = std::mem::replace(&mut s.pending, std::mem::take(&mut self.spare));
        (batch, s.appended, s.closing)
    }

    /// `batch` (up to `ticket`) was written, and synced if `sync` — unless there was no journal
    /// (`wrote` false): publishes the progress, and says when persistence works again.
    fn wrote(&mut self, batch: &[u8], ticket: u64, sync: bool, wrote: bool) {
        let inner = self.inner;
        if sync {
            self.last_sync = Instant::now();
            self.unsynced = false;
        } else if !batch.is_empty() {
            self.unsynced = true;
        }
        inner.progress.send_modify(|p| {
            p.written = p.written.max(ticket);
            if sync && wrote {
                p.durable = p.durable.max(ticket);
            }
        });
        if wrote
            && !batch.is_empty()
            && retains(inner.fsync)
            && inner.failing_since.load(Ordering::Relaxed) != 0
        {
            wrote_again(inner);
        }
    }
}

/// Waits on the writer's condition variable, for at most `limit`.
fn wait<'a>(
    inner: &StoreInner,
    s: MutexGuard<'a, Appending>,
    limit: Option<Duration>,
) -> MutexGuard<'a, Appending> {
    match limit {
        Some(d) => {
            inner
                .wake
                .wait_timeout(s, d)
                .unwrap_or_else(|p| p.into_inner())
                .0
        }
        None => inner.wake.wait(s).unwrap_or_else(|p| p.into_inner()),
    }
}

/// Writes `batch` at the end of the journal, then syncs it if asked. On failure the file is cut back
/// to its last whole record, so what is on disk stays loadable.
fn write_batch(j: &mut JournalFile, batch: &[u8], sync: bool) -> std::io::Result<()> {
    if !batch.is_empty() {
        if let Err(e) = j.file.write_all(batch) {
            let _ = j.file.set_len(j.len);
            return Err(e);
        }
        j.len += batch.len() as u64;
        j.dirty = true;
    }
    if sync && j.dirty {
        j.file.sync_data()?;
        j.dirty = false;
    }
    Ok(())
}

/// Where a compaction stopped in a test that simulates a crash.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stop {
    /// After starting the new journal.
    Rotated,
    /// After writing the snapshot's temporary file, before renaming it.
    Written,
    /// After renaming it, before deleting the files it replaces.
    Renamed,
    /// Not at all.
    Never,
}

impl Store {
    /// Compacts: a new journal, then a snapshot of the cache, read `chunk` by `chunk` —
    /// `chunk(from, out)` frames the records at `from..` into `out` and returns where the next chunk
    /// starts, or `None` after the last. Runs on a blocking thread; service goes on meanwhile.
    ///
    /// # Errors
    /// A file could not be created, written, synced or renamed; the store is left as it was (with
    /// the new journal), and the next compaction tries again.
    pub fn compact(
        &self,
        chunk: impl FnMut(usize, &mut Vec<u8>) -> Option<usize>,
    ) -> anyhow::Result<()> {
        self.compact_until(chunk, Stop::Never)
    }

    #[doc(hidden)]
    pub fn compact_until(
        &self,
        mut chunk: impl FnMut(usize, &mut Vec<u8>) -> Option<usize>,
        stop: Stop,
    ) -> anyhow::Result<()> {
        let inner = &self.inner;
        let _one = lock(&inner.compacting);
        let dir = &inner.dir;
        // 1. A new journal: records stored from now on go there; the snapshot covers the rest.
        let gen = rotate(inner)?;
        if stop == Stop::Rotated {
            return Ok(());
        }
        // 2. The snapshot, chunk by chunk, into a temporary file.
        let tmp = dir.join(format!("snapshot.{gen}.tmp"));
        // Every record is still in the journals (the old ones and the new): nothing is lost, and a
        // rescue that was due stays due.
        if let Err(e) = write_snapshot(&tmp, &mut chunk) {
            let _ = std::fs::remove_file(&tmp);
            return Err(anyhow::Error::from(e).context(format!("writing {}", tmp.display())));
        }
        if stop == Stop::Written {
            return Ok(());
        }
        // 3. Into place, durably.
        let path = snapshot_path(dir, gen);
        if let Err(e) = std::fs::rename(&tmp, &path).and_then(|()| sync_dir(dir)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(anyhow::Error::from(e).context(format!("renaming {}", tmp.display())));
        }
        snapshot_written(inner);
        if stop == Stop::Renamed {
            return Ok(());
        }
        // 4. What it replaces.
        replace_older(inner, gen)
    }
}

/// A compaction's first step: the working journal synced and a new one started, numbered after it;
/// returns its number. If it cannot be created, the working journal stays in use: nothing is lost,
/// and the next compaction tries again.
fn rotate(inner: &StoreInner) -> anyhow::Result<u64> {
    let dir = &inner.dir;
    let mut guard = lock(&inner.journal);
    let old = guard.as_ref().map_or(0, |j| j.gen);
    if let Some(j) = guard.as_mut() {
        if j.dirty && j.file.sync_data().is_ok() {
            j.dirty = false;
        }
    }
    let gen = old + 1;
    match create_journal(dir, gen) {
        Ok(j) => *guard = Some(j),
        Err(e) => {
            return Err(anyhow::Error::from(e)
                .context(format!("creating {}", journal_path(dir, gen).display())))
        }
    }
    let mut s = lock(&inner.state);
    s.broken = false;
    s.journal_bytes = s.pending.len() as u64;
    s.journal_records = 0;
    // A writer waiting for a journal that works has one.
    inner.wake.notify_one();
    Ok(gen)
}

/// Writes a snapshot to `tmp`: a header, then what `chunk` frames, chunk by chunk, then a sync.
fn write_snapshot(
    tmp: &Path,
    chunk: &mut impl FnMut(usize, &mut Vec<u8>) -> Option<usize>,
) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::with_capacity(
        1 << 20,
        identity::private()
            .create(true)
            .truncate(true)
            .write(true)
            .open(tmp)?,
    );
    file.write_all(&format::header(Kind::Snapshot))?;
    let mut buf = Vec::with_capacity(1 << 20);
    let mut from = 0;
    loop {
        buf.clear();
        let next = chunk(from, &mut buf);
        file.write_all(&buf)?;
        match next {
            Some(n) => from = n,
            None => break,
        }
    }
    let file = file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

/// A snapshot is in place: every record held is on disk, so a failure of persistence is over.
fn snapshot_written(inner: &StoreInner) {
    let recovered = {
        let mut s = lock(&inner.state);
        s.needs_snapshot = false;
        s.dropped_kept = false;
        s.snapshot_at = Some(SystemTime::now());
        s.compactions += 1;
        s.error.take()
    };
    inner.failing_since.store(0, Ordering::Relaxed);
    if let Some(e) = recovered {
        crate::say(format_args!(
            "herd-server: persistence works again in {} (after: {e}); every record held is on disk",
            inner.dir.display()
        ));
        tracing::info!(dir = %inner.dir.display(), "persistence works again");
    }
}

/// A compaction's last step: the files older than snapshot `gen` are deleted — except those a
/// repair found damaged, which are set aside (`*.damaged`), never deleted: what a repair could not
/// read may still be read by hand.
fn replace_older(inner: &StoreInner, gen: u64) -> anyhow::Result<()> {
    let dir = &inner.dir;
    let listing = list(dir)?;
    let damaged = std::mem::take(&mut *lock(&inner.damaged));
    for path in listing.older_than(dir, gen) {
        if damaged.contains(&path) {
            let mut aside = path.clone().into_os_string();
            aside.push(".damaged");
            let _ = std::fs::rename(&path, &aside);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
    sync_dir(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "herd-store-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn cfg(dir: &Path, fsync: Fsync) -> StoreConfig {
        StoreConfig {
            fsync,
            compact_bytes: 0,
            ..StoreConfig::new(dir, "A")
        }
    }

    fn open(c: &StoreConfig) -> anyhow::Result<(Store, Vec<Vec<u8>>)> {
        let mut got = Vec::new();
        let (s, _) = Store::open(c, |p| {
            got.push(p.to_vec());
            true
        })?;
        Ok((s, got))
    }

    fn framed(lines: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in lines {
            format::write_record(l, &mut out);
        }
        out
    }

    fn lines(range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
        range
            .map(|i| format!("AT A +0.100000000 c{i} +1+1 {i}").into_bytes())
            .collect()
    }

    #[tokio::test]
    async fn appends_are_durable_and_load_back_in_order() {
        let d = dir("append");
        let c = cfg(&d, Fsync::Always);
        let (s, got) = open(&c).unwrap();
        assert!(got.is_empty());
        let mut t = 0;
        for chunk in lines(0..100).chunks(10) {
            t = s.append(&mut framed(chunk), chunk.len() as u64);
        }
        s.durable(t).await.unwrap();
        assert!(s.progress().durable >= t);
        drop(s.clone());
        let again = Store::open(&c, |_| true);
        assert!(
            again.is_err_and(|e| e.to_string().contains("in use")),
            "a second server on the same folder is refused"
        );
        s.close();
        drop(s);
        let (s, got) = open(&c).unwrap();
        assert_eq!(got, lines(0..100));
        s.close();
        let _ = std::fs::remove_dir_all(&d);
    }

    /// What `/metrics` shows of a store: journal size, backlog, snapshots and compactions, failure.
    #[tokio::test]
    async fn state_follows_appends_compactions_and_failures() {
        let d = dir("state");
        let c = cfg(&d, Fsync::Always);
        let (s, _) = open(&c).unwrap();
        let st = s.state();
        assert_eq!(
            (st.journal_records, st.compactions, st.failing),
            (0, 0, false)
        );
        assert_eq!(st.snapshot_at, None);
        let bytes = framed(&lines(0..10));
        let len = bytes.len() as u64;
        let t = s.append(&mut bytes.clone(), 10);
        s.durable(t).await.unwrap();
        let st = s.state();
        assert_eq!((st.journal_records, st.journal_bytes), (10, len));
        assert_eq!((st.unwritten_bytes, st.unsynced_bytes), (0, 0));
        // A failed write: failing until a compaction makes the disk whole again.
        broke(
            &s.inner,
            "writing the journal",
            &std::io::Error::other("no space"),
            Vec::new(),
        );
        assert!(s.state().failing);
        let live = lines(0..10);
        s.compact(|_, out| {
            out.extend_from_slice(&framed(&live));
            None
        })
        .unwrap();
        let st = s.state();
        assert!(!st.failing);
        assert_eq!((st.compactions, st.journal_records), (1, 0));
        let at = st.snapshot_at.expect("a snapshot");
        s.close();
        drop(s);
        // After a restart, the snapshot's age comes from its file.
        let (s, _) = open(&c).unwrap();
        let st = s.state();
        assert_eq!(st.compactions, 0);
        let since = st.snapshot_at.expect("the snapshot on disk");
        assert!(since.duration_since(at).unwrap_or_default() < Duration::from_secs(60));
        s.close();
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A crash at every step of a compaction leaves a store that loads every record.
    #[tokio::test]
    async fn compaction_is_crash_safe_at_every_step() {
        for stop in [Stop::Rotated, Stop::Written, Stop::Renamed, Stop::Never] {
            let d = dir("compact");
            let c = cfg(&d, Fsync::No);
            let (s, _) = open(&c).unwrap();
            // Ten versions of 20 clients' records; the cache holds the last of each.
            let mut t = 0;
            for v in 0..10 {
                let ls: Vec<Vec<u8>> = (0..20)
                    .map(|i| format!("AT A +0.100000000 c{i} +1+1 {v}").into_bytes())
                    .collect();
                t = s.append(&mut framed(&ls), 20);
            }
            // Written before the compaction (records written after it land in the new journal,
            // which is just as correct but loads more than the snapshot).
            let deadline = Instant::now() + Duration::from_secs(10);
            while s.progress().written < t {
                assert!(Instant::now() < deadline, "the writer never wrote");
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(s.wants_compaction(20));
            let live: Vec<Vec<u8>> = (0..20)
                .map(|i| format!("AT A +0.100000000 c{i} +1+1 9").into_bytes())
                .collect();
            s.compact_until(
                |from, out| {
                    let end = (from + 7).min(live.len());
                    out.extend_from_slice(&framed(&live[from..end]));
                    (end < live.len()).then_some(end)
                },
                stop,
            )
            .unwrap();
            s.close();
            drop(s);
            let (s, got) = open(&c).unwrap();
            let last: Vec<&Vec<u8>> = got.iter().rev().take(20).collect();
            assert!(
                live.iter().all(|l| got.contains(l)),
                "{stop:?}: every live record loads"
            );
            assert!(!last.is_empty());
            let names: Vec<String> = std::fs::read_dir(&d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
            if stop >= Stop::Renamed {
                assert_eq!(got.len(), 20, "{stop:?}: only the snapshot is read");
                assert!(!s.wants_compaction(20));
            }
            s.close();
            let _ = std::fs::remove_dir_all(&d);
        }
    }

    #[tokio::test]
    async fn torn_tail_is_cut_and_damage_refused_unless_repaired() {
        let d = dir("damage");
        let c = cfg(&d, Fsync::Always);
        let (s, _) = open(&c).unwrap();
        let t = s.append(&mut framed(&lines(0..10)), 10);
        s.durable(t).await.unwrap();
        s.close();
        drop(s);
        let path = journal_path(&d, 1);
        let mut data = std::fs::read(&path).unwrap();
        let whole = data.len();
        // A torn write: half a record.
        data.extend_from_slice(&framed(&lines(10..11))[..20]);
        std::fs::write(&path, &data).unwrap();
        let (s, got) = open(&c).unwrap();
        assert_eq!(got, lines(0..10));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole as u64);
        s.close();
        drop(s);
        // A flipped byte in the third record.
        let mut data = std::fs::read(&path).unwrap();
        let third = format::HEADER_LEN + 2 * framed(&lines(0..1)).len();
        data[third + 12] ^= 0x40;
        std::fs::write(&path, &data).unwrap();
        let e = open(&c).err().unwrap().to_string();
        assert!(
            e.contains("journal.1") && e.contains(&format!("offset {third}")),
            "{e}"
        );
        assert!(e.contains("--repair"), "{e}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            data,
            "a refused start changes nothing"
        );
        let mut got = Vec::new();
        let (s, report) = Store::open(
            &StoreConfig {
                repair: true,
                ..c.clone()
            },
            |p| {
                got.push(p.to_vec());
                true
            },
        )
        .unwrap();
        let mut want = lines(0..10);
        want.remove(2);
        assert_eq!(got, want, "only the damaged record is dropped");
        assert!(report.rewrite);
        assert_eq!(report.repaired.len(), 1);
        assert_eq!(
            (report.repaired[0].kept, report.repaired[0].dropped()),
            (9, 1)
        );
        assert_eq!(report.repaired[0].skipped[0].at, third as u64);
        s.compact(|_, out| {
            out.extend_from_slice(&framed(&want));
            None
        })
        .unwrap();
        s.close();
        drop(s);
        let (s, got) = open(&c).unwrap();
        assert_eq!(got, want, "repaired for good");
        assert!(
            d.join("journal.1.damaged").exists(),
            "set aside, not deleted"
        );
        s.close();
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Under everysec, the bytes of a failed write and what is appended after it were acknowledged:
    /// they are written into the next journal that works, and persistence then works again without
    /// a snapshot. Acknowledgements stop only once the failure outlasts [`ACK_WINDOW`].
    #[tokio::test]
    async fn everysec_keeps_what_a_failed_write_held_for_the_next_journal() {
        let d = dir("kept");
        let c = cfg(&d, Fsync::Everysec);
        let (s, _) = open(&c).unwrap();
        assert!(s.acknowledging());
        broke(
            &s.inner,
            "writing the journal",
            &std::io::Error::other("no space"),
            framed(&lines(0..5)),
        );
        let t = s.append(&mut framed(&lines(5..10)), 5);
        assert!(s.state().failing);
        assert!(s.acknowledging(), "within the window");
        s.compact_until(|_, _| None, Stop::Rotated).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.progress().written < t || s.state().failing {
            assert!(Instant::now() < deadline, "never written again");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(s.acknowledging());
        s.close();
        drop(s);
        let (s, got) = open(&c).unwrap();
        assert_eq!(got, lines(0..10));
        s.close();
        drop(s);
        // Past the window, nothing more is acknowledged.
        let (s, _) = open(&c).unwrap();
        broke(
            &s.inner,
            "writing the journal",
            &std::io::Error::other("no space"),
            Vec::new(),
        );
        let began = Instant::now();
        while s.acknowledging() {
            assert!(began.elapsed() < 5 * ACK_WINDOW, "acknowledging for ever");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(began.elapsed() >= ACK_WINDOW / 2, "stopped too soon");
        assert!(!s.state().acknowledging);
        s.close();
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn compaction_rule() {
        assert!(!should_compact(10, 100, 10, 1000), "too small");
        assert!(should_compact(2000, 100, 10, 1000));
        assert!(!should_compact(2000, 100, 60, 1000), "mostly live");
        assert!(!should_compact(0, 0, 0, 0));
    }
}
