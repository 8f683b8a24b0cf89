//! The writing side of one log file: a queue bounded in bytes, a thread that drains it, size rotation,
//! reopening on SIGHUP, and honest drops when the disk refuses.
//!
//! Connections hand whole buffers (many lines each) to [`LogQueue::push`]; the writer thread takes every
//! buffer queued at once and writes them with one `writev`. A small buffer (a non-pipelined request's
//! entry) is copied onto the queue's last chunk instead, and its producer keeps it. The queue counts the bytes it holds, the
//! buffers being written included, so a disk slower than the clients makes connections wait for room
//! (back-pressure) and the memory held for the log never passes the bound. The writer never touches the
//! async runtime, so a connection blocked on a full queue always gets room back.
//!
//! Wake-ups are what a busy log costs most, not bytes: a futex call for the producer and a context
//! switch for the writer, per batch of lines, on cores that the connections need. So a producer wakes
//! the writer only when it sleeps with nothing to do, or when [`LogQueue::wake_at`] bytes wait; under load
//! the writer instead lingers ([`LINGER`]) after each write and takes whatever came meanwhile, so it
//! runs a few hundred times a second whatever the request rate, and a producer's hand-over is a lock,
//! a `Vec` push or a short copy, and an unlock.
//!
//! A write that fails (no space, an I/O error, the folder removed) does not stop the server: the writer
//! says once on stderr that it is dropping lines, counts them, retries every [`RETRY`] (reopening the
//! file), and when a write succeeds again writes a line saying how many were lost, and says so on stderr.
//!
//! A write that never returns (a FIFO nobody reads, a hung network mount) must not stop the server
//! either: once the writer has been busy for [`STALL`] with the queue full, producers stop waiting and
//! drop their lines, counted, the same way; the writer says how many when it moves again. A slow disk
//! still holds producers back, as long as it writes the queue's bound within the stall time.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// While dropping, a write is tried again this often (buffers in between are counted, not written).
pub(crate) const RETRY: Duration = Duration::from_millis(200);
/// After a write, the writer waits this long for more lines before it writes again (unless
/// [`LogQueue::wake_at`] bytes wait sooner), so a busy server's lines go out in a few large writes.
/// It is also the most a line waits in the queue under load.
pub(crate) const LINGER: Duration = Duration::from_millis(2);
/// A producer wakes a lingering writer early once this many bytes wait (or a quarter of the bound, if
/// that is less), so a burst is written before it fills the bound.
const LOG_WAKE_AT: usize = 512 * 1024;
/// A buffer handed over with at most this many bytes is copied into the queue's last chunk rather
/// than queued itself (see [`WriterState::push`]); a chunk holds [`CHUNK`] bytes.
const COPY_MAX: usize = 4 * 1024;
const CHUNK: usize = 64 * 1024;
/// Most buffers handed to one `writev` (Linux takes up to 1024).
const IOV_MAX: usize = 1024;
/// A writer busy this long on one write (or one reopen) while the queue is full is stuck: producers
/// drop their lines (counted) rather than wait for it. Far above what a slow disk takes for a write of
/// the queue's bound, so back-pressure is kept for a disk that is only slow.
pub(crate) const STALL: Duration = Duration::from_secs(5);
/// Bytes of rare events a queue takes past its bound, so that an event never waits for room.
pub(crate) const EVENT_ROOM: usize = 1024 * 1024;
/// Most spare buffers kept for reuse, so a busy connection does not allocate a new buffer per batch…
const SPARES: usize = 256;
/// …and a spare buffer larger than this is freed instead of kept.
const SPARE_MAX: usize = 256 * 1024;

/// What the writer thread is doing, for producers deciding whether to wake it.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
enum Writing {
    /// Writing, or about to look at the queue: nobody needs to wake it.
    #[default]
    Busy,
    /// Asleep with an empty queue: the next buffer wakes it.
    Idle,
    /// Waiting [`LINGER`] for more after a write: only [`LogQueue::wake_at`] bytes wake it early.
    Lingering,
}

/// What became of a buffer handed to the queue.
enum Pushed {
    /// Queued; here is an empty buffer for the next batch.
    Queued(Vec<u8>),
    /// Dropped, `lines` of it, because the writer is stuck; `first`: the first drop since it was.
    Dropped {
        buf: Vec<u8>,
        lines: u64,
        first: bool,
    },
}

/// What a queue does when its writer is stuck.
pub(crate) struct Stall {
    /// How long a write may take before the writer counts as stuck.
    pub(crate) after: Duration,
    /// Lines dropped in all (shared with the writer, for the metrics).
    pub(crate) dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Says once on stderr that lines are being dropped.
    pub(crate) report: Box<dyn Fn(&str) + Send + Sync>,
    /// The server's name and the file, for that message.
    pub(crate) name: String,
    pub(crate) path: String,
}

impl Default for Stall {
    fn default() -> Self {
        Stall {
            after: STALL,
            dropped: Default::default(),
            report: Box::new(|_| {}),
            name: String::new(),
            path: String::new(),
        }
    }
}

/// The bounded queue between the connections of one server and its log file's writer thread.
pub(crate) struct LogQueue {
    state: Mutex<WriterState>,
    /// The writer waits here for buffers, a reopen or the close.
    ready: Condvar,
    /// Async producers (connections) wait here for room.
    room: tokio::sync::Notify,
    /// Most bytes held at once (a single larger buffer is let through when the queue is empty).
    cap: usize,
    /// Bytes queued that make a producer wake a lingering writer.
    wake_at: usize,
    stall: Stall,
}

#[derive(Default)]
struct WriterState {
    bufs: Vec<Vec<u8>>,
    /// Bytes queued plus the bytes being written.
    bytes: usize,
    spares: Vec<Vec<u8>>,
    /// Capacity held by `spares`.
    spare_bytes: usize,
    reopen: bool,
    closed: bool,
    writer: Writing,
    /// A producer found no room and waits: the writer must say when it frees some.
    starved: bool,
    /// The most bytes ever held, for tests and benchmarks.
    high_water: usize,
    /// When the writer let go of the lock to write or reopen (`None` while it holds the lock or
    /// sleeps): how long it has been at it.
    busy_since: Option<Instant>,
    /// Producers are dropping their lines: the writer was found stuck.
    stalled: bool,
    /// Lines producers dropped while the writer was stuck, not yet reported.
    lost: u64,
}

impl WriterState {
    /// Whether a producer that just changed the queue must wake the writer; if so, marks it awake,
    /// so one wake-up is enough however many producers come.
    fn wake(&mut self, wake_at: usize) -> bool {
        let wake = match self.writer {
            Writing::Busy => false,
            Writing::Idle => true,
            Writing::Lingering => self.bytes >= wake_at || self.starved,
        };
        if wake {
            self.writer = Writing::Busy;
        }
        wake
    }

    /// Queues `buf` if the queue stays within `limit` bytes and returns a spare buffer for the next
    /// batch; gives `buf` back (and marks the queue starved) if not — unless `wait` is `None` (the
    /// caller never waits) or the writer has been stuck for `wait` ([`STALL`]): then `buf`'s lines are
    /// dropped and counted (`Pushed::Dropped`).
    fn push(
        &mut self,
        buf: Vec<u8>,
        limit: usize,
        wait: Option<Duration>,
    ) -> Result<Pushed, Vec<u8>> {
        if self.closed {
            // The server has stopped: nothing is written any more.
            let mut buf = buf;
            buf.clear();
            return Ok(Pushed::Queued(buf));
        }
        if self.bytes > 0 && self.bytes + buf.len() > limit {
            let stuck = |stall| self.busy_since.is_some_and(|t| t.elapsed() >= stall);
            if wait.is_none_or(stuck) {
                let lines = count_lines(&[&buf]);
                self.lost += lines;
                let first = !std::mem::replace(&mut self.stalled, true);
                let mut buf = buf;
                buf.clear();
                return Ok(Pushed::Dropped { buf, lines, first });
            }
            self.starved = true;
            return Err(buf);
        }
        self.bytes += buf.len();
        self.high_water = self.high_water.max(self.bytes);
        if buf.len() > COPY_MAX {
            self.bufs.push(buf);
            return Ok(Pushed::Queued(self.spare()));
        }
        // A small buffer (a request or two) is copied onto the end of the queue, and the producer
        // keeps its own buffer, still in its core's cache. Handing over every small buffer cost a
        // non-pipelined connection a spare buffer per request (last touched by the writer, on the
        // other core) and the writer hundreds of short slices a write, each a step of the kernel's
        // copy.
        let last = self
            .bufs
            .last_mut()
            .filter(|l| l.capacity() - l.len() >= buf.len());
        match last {
            Some(last) => last.extend_from_slice(&buf),
            None => {
                let mut chunk = self.spare();
                chunk.reserve(CHUNK.max(buf.len()));
                chunk.extend_from_slice(&buf);
                self.bufs.push(chunk);
            }
        }
        let mut buf = buf;
        if buf.capacity() > 2 * COPY_MAX {
            // A large buffer (from a burst) goes back to the spares rather than stay with a producer
            // whose hand-overs are small: many connections must not each hold one.
            self.keep(std::mem::take(&mut buf), limit);
            return Ok(Pushed::Queued(buf));
        }
        buf.clear();
        Ok(Pushed::Queued(buf))
    }

    fn spare(&mut self) -> Vec<u8> {
        match self.spares.pop() {
            Some(b) => {
                self.spare_bytes -= b.capacity();
                b
            }
            None => Vec::new(),
        }
    }

    /// Keeps `buf` for reuse if the spares are not already holding enough.
    fn keep(&mut self, mut buf: Vec<u8>, cap: usize) {
        let c = buf.capacity();
        if self.spares.len() < SPARES && c <= SPARE_MAX && self.spare_bytes + c <= cap {
            buf.clear();
            self.spare_bytes += c;
            self.spares.push(buf);
        }
    }
}

impl LogQueue {
    #[cfg(test)]
    pub(crate) fn new(cap: usize) -> Self {
        Self::with_stall(cap, Stall::default())
    }

    /// A queue of `cap` bytes whose producers stop waiting for a stuck writer as `stall` says.
    pub(crate) fn with_stall(cap: usize, stall: Stall) -> Self {
        let cap = cap.max(1);
        LogQueue {
            state: Mutex::new(WriterState::default()),
            ready: Condvar::new(),
            room: tokio::sync::Notify::new(),
            cap,
            wake_at: (cap / 4).clamp(1, LOG_WAKE_AT),
            stall,
        }
    }

    /// `push`'s result for the caller: the spare buffer, after counting and (once) reporting a drop.
    fn settle(&self, pushed: Pushed) -> Vec<u8> {
        match pushed {
            Pushed::Queued(spare) => spare,
            Pushed::Dropped { buf, lines, first } => {
                self.stall
                    .dropped
                    .fetch_add(lines, std::sync::atomic::Ordering::Relaxed);
                if first {
                    (self.stall.report)(&format!(
                        "herd-server: {}: the log {} has taken more than {:?} to write; dropping log \
                         lines until it moves again",
                        self.stall.name, self.stall.path, self.stall.after
                    ));
                }
                buf
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, WriterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most bytes the queue ever held.
    pub(crate) fn high_water(&self) -> usize {
        self.lock().high_water
    }

    /// An empty buffer, reused when one is spare.
    #[cfg(test)]
    pub(crate) fn spare(&self) -> Vec<u8> {
        self.lock().spare()
    }

    /// Queues `buf` if there is room (returning a spare buffer); gives it back if not. Wakes the
    /// writer only when it must.
    fn try_push(&self, buf: Vec<u8>) -> Result<Vec<u8>, Vec<u8>> {
        let mut s = self.lock();
        let pushed = s.push(buf, self.cap, Some(self.stall.after));
        let wake = s.wake(self.wake_at);
        drop(s);
        if wake {
            self.ready.notify_one();
        }
        pushed.map(|p| self.settle(p))
    }

    /// Queues `buf`, waiting (without blocking the thread) until there is room, and returns an empty
    /// buffer to fill next (a spare one when there is one).
    pub(crate) async fn push(&self, buf: Vec<u8>) -> Vec<u8> {
        if buf.is_empty() {
            return buf;
        }
        let mut buf = match self.try_push(buf) {
            Ok(spare) => return spare,
            Err(b) => b,
        };
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            // Registered before the check, so room freed in between is not missed.
            notified.as_mut().enable();
            match self.try_push(buf) {
                Ok(spare) => return spare,
                Err(b) => buf = b,
            }
            // Woken by room, or after a while to see whether the writer is stuck.
            let _ = tokio::time::timeout(self.stall.after / 4, notified).await;
        }
    }

    /// Queues a rare event's `buf` (a connection or a link opened or closed, start, stop) without
    /// ever waiting: events come from any thread, runtime threads included, which a wait would stall
    /// (and under `herd-server up`, every server they run). They may use [`EVENT_ROOM`] bytes past the
    /// bound; past that the writer is far behind, and the event is dropped and counted.
    pub(crate) fn push_event(&self, buf: Vec<u8>) {
        let mut s = self.lock();
        let pushed = s.push(buf, self.cap + EVENT_ROOM, None);
        let wake = s.wake(self.wake_at);
        drop(s);
        if wake {
            self.ready.notify_one();
        }
        if let Ok(p) = pushed {
            self.settle(p);
        }
    }

    /// Asks the writer to reopen the file (SIGHUP).
    pub(crate) fn reopen(&self) {
        let mut s = self.lock();
        s.reopen = true;
        s.writer = Writing::Busy;
        drop(s);
        self.ready.notify_one();
    }

    /// Asks the writer to write what is queued and stop.
    pub(crate) fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.writer = Writing::Busy;
        drop(s);
        self.ready.notify_one();
        self.room.notify_waiters();
    }

    /// The buffers of `batch` are written (or dropped): their bytes are room again, and the buffers
    /// spares. Producers waiting for room are told.
    fn done(&self, batch: &mut Vec<Vec<u8>>) {
        let written: usize = batch.iter().map(Vec::len).sum();
        let mut s = self.lock();
        s.bytes -= written;
        for b in batch.drain(..) {
            s.keep(b, self.cap);
        }
        let starved = std::mem::take(&mut s.starved);
        drop(s);
        if starved {
            self.room.notify_waiters();
        }
    }
}

/// Where a log's bytes go: a file in production, a scripted failure in tests.
pub(crate) trait Target: Send {
    /// Writes all of `bufs`, in order (one `writev` when the disk takes them whole).
    fn write(&mut self, bufs: &[&[u8]]) -> io::Result<()>;
    /// Closes and opens the file again at its path (after SIGHUP, or to retry after a failure).
    fn reopen(&mut self) -> io::Result<()>;
    /// Bytes in the current file (as far as this writer knows).
    fn len(&self) -> u64;
    /// Moves the file to `.1` (older ones up to `.keep`) and starts a new one.
    fn rotate(&mut self, keep: usize) -> io::Result<()>;
    /// Where it writes, for messages.
    fn describe(&self) -> String;
    /// Whether the file being written has been deleted (its folder removed, say): whatever is written
    /// to it is lost. Looked at no more than once a second, unless `now` (before a rotation, which
    /// would fail on a removed file). A file only moved away is not removed: logrotate moves it and
    /// then sends SIGHUP, and the lines in between are in the moved file.
    fn removed(&mut self, now: bool) -> bool {
        let _ = now;
        false
    }
}

/// A log file opened for appending.
pub(crate) struct FileTarget {
    path: PathBuf,
    file: Option<File>,
    len: u64,
    /// When the open file was last looked at, and how often it is.
    checked: Instant,
    /// Why the last open failed, while no file is open.
    open_error: Option<(io::ErrorKind, String)>,
    check_every: Duration,
}

/// How often [`FileTarget::removed`] looks at the file.
const CHECK_PATH: Duration = Duration::from_secs(1);

impl FileTarget {
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let mut t = FileTarget {
            path: path.to_owned(),
            file: None,
            len: 0,
            checked: Instant::now(),
            check_every: CHECK_PATH,
            open_error: None,
        };
        t.reopen()?;
        Ok(t)
    }

    /// `self.path` numbered: `Name.log.<i>`.
    fn numbered(&self, i: usize) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{i}"));
        PathBuf::from(p)
    }
}

/// Opens `path` for appending without waiting for a reader: a FIFO nobody reads fails at once (ENXIO)
/// instead of blocking the writer in `open` for ever. Writes then block as usual (a reader that is only
/// slow holds the writer back, and the queue's stall rule covers one that never reads).
#[cfg(unix)]
fn open_append(path: &Path) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is the descriptor `file` owns, open for as long as this call.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok(file)
}

#[cfg(not(unix))]
fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Whether `file` has been deleted (no name leads to it any more).
#[cfg(unix)]
fn deleted(file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    file.metadata().is_ok_and(|m| m.nlink() == 0)
}

#[cfg(not(unix))]
fn deleted(_: &File) -> bool {
    false
}

impl Target for FileTarget {
    fn write(&mut self, bufs: &[&[u8]]) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            // Say why it is not open: the last open's error (a directory at the path, no folder…).
            return Err(match &self.open_error {
                Some((kind, why)) => io::Error::new(*kind, why.clone()),
                None => io::Error::new(io::ErrorKind::NotFound, "log file not open"),
            });
        };
        // The first byte not yet written: `bufs[i][off]`.
        let (mut i, mut off) = (0, 0);
        let mut slices = Vec::with_capacity(bufs.len().min(IOV_MAX));
        while i < bufs.len() {
            if off == bufs[i].len() {
                (i, off) = (i + 1, 0);
                continue;
            }
            slices.clear();
            slices.push(IoSlice::new(&bufs[i][off..]));
            slices.extend(
                bufs[i + 1..]
                    .iter()
                    .take(IOV_MAX - 1)
                    .map(|b| IoSlice::new(b)),
            );
            match file.write_vectored(&slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.len += n as u64;
                    let mut n = n;
                    while n > 0 {
                        let left = bufs[i].len() - off;
                        if n >= left {
                            n -= left;
                            (i, off) = (i + 1, 0);
                        } else {
                            off += n;
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.file = None;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?; // the folder may have been removed under us
        }
        let file = open_append(&self.path).inspect_err(|e| {
            self.open_error = Some((e.kind(), e.to_string()));
        })?;
        self.open_error = None;
        self.len = file.metadata().map_or(0, |m| m.len());
        self.checked = Instant::now();
        self.file = Some(file);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn rotate(&mut self, keep: usize) -> io::Result<()> {
        self.file = None;
        let rename = |from: &Path, to: &Path| {
            std::fs::rename(from, to).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("renaming {} to {}: {e}", from.display(), to.display()),
                )
            })
        };
        if keep == 0 {
            match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("removing {}: {e}", self.path.display()),
                    ))
                }
                _ => {}
            }
        } else {
            // Only the files that exist move up: `.1` to `.2` and so on up to the first gap (or to
            // `.keep`, which the one before replaces). The cost is the files there are, not `keep`.
            let mut end = 1;
            while end < keep && self.numbered(end).symlink_metadata().is_ok() {
                end += 1;
            }
            for i in (1..end).rev() {
                rename(&self.numbered(i), &self.numbered(i + 1))?;
            }
            rename(&self.path, &self.numbered(1))?;
        }
        self.reopen()
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn removed(&mut self, now: bool) -> bool {
        let Some(file) = &self.file else { return false };
        if !now && self.checked.elapsed() < self.check_every {
            return false;
        }
        self.checked = Instant::now();
        deleted(file)
    }
}

/// How a writer rotates and where it reports trouble.
pub(crate) struct WriterConfig {
    /// The server's name, for stderr messages.
    pub(crate) name: String,
    /// Rotate before a write would take the file past this; 0 never rotates.
    pub(crate) max_bytes: u64,
    /// Rotated files kept.
    pub(crate) keep: usize,
    /// While dropping, try a write again this often.
    pub(crate) retry: Duration,
    /// Log lines dropped in all (for the admin endpoint's metrics).
    pub(crate) dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Lines being dropped because the target refuses them.
struct Dropping {
    lines: u64,
    cause: String,
    /// The file hit a size limit (`ulimit -f`): with rotation on, a new file lets writing go on.
    too_large: bool,
    last_try: Instant,
    /// The failed write may have left half a line in the file.
    partial: bool,
}

/// The writer thread's state: the target, and whether it is dropping.
pub(crate) struct Writer<T: Target> {
    target: T,
    config: WriterConfig,
    dropping: Option<Dropping>,
    /// When a rotation last failed (until one succeeds): it is tried again only after
    /// [`Self::config`]'s retry time, and said on stderr once.
    rotate_failed: Option<Instant>,
    /// The size at which the file was found too large: files rotate before it from then on.
    size_limit: Option<u64>,
    report: Box<dyn FnMut(&str) + Send>,
}

/// Lines in `bufs` (each ends with `\n`).
fn count_lines(bufs: &[&[u8]]) -> u64 {
    bufs.iter()
        .map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64)
        .sum()
}

/// Of `bufs`, written up to byte `written`: the whole lines that made it, and whether the write
/// stopped inside a line (leaving half of it in the file).
fn lines_written(bufs: &[&[u8]], written: u64) -> (u64, bool) {
    let mut left = written;
    let mut lines = 0;
    for b in bufs {
        let n = left.min(b.len() as u64) as usize;
        lines += count_lines(&[&b[..n]]);
        left -= n as u64;
        if left == 0 {
            return (lines, n > 0 && b[n - 1] != b'\n');
        }
    }
    (lines, false)
}

impl<T: Target> Writer<T> {
    /// A writer to `target`; `report` gets the stderr messages.
    pub(crate) fn new(
        target: T,
        config: WriterConfig,
        report: Box<dyn FnMut(&str) + Send>,
    ) -> Self {
        Writer {
            target,
            config,
            dropping: None,
            rotate_failed: None,
            size_limit: None,
            report,
        }
    }

    /// Log lines dropped since the last successful write.
    #[cfg(test)]
    pub(crate) fn dropping(&self) -> Option<u64> {
        self.dropping.as_ref().map(|d| d.lines)
    }

    /// The size a file rotates at: `max_bytes`, or less if the file was found too large before it.
    fn max_bytes(&self) -> u64 {
        match (self.config.max_bytes, self.size_limit) {
            (0, _) => 0,
            (max, Some(limit)) => max.min(limit),
            (max, None) => max,
        }
    }

    /// `lost` lines were not written: counted, and said once on stderr.
    fn lose(&mut self, lost: u64, partial: bool, e: &io::Error) {
        self.config
            .dropped
            .fetch_add(lost, std::sync::atomic::Ordering::Relaxed);
        self.note_lost(lost, partial, e);
    }

    /// `lost` lines (counted already) were not written: remembered for the notice, and said once.
    fn note_lost(&mut self, lost: u64, partial: bool, e: &io::Error) {
        match &mut self.dropping {
            Some(d) => {
                d.lines += lost;
                d.partial |= partial;
            }
            None => {
                let msg = format!(
                    "herd-server: {}: cannot write the log {} ({e}); dropping log lines until it can",
                    self.config.name,
                    self.target.describe()
                );
                (self.report)(&msg);
                self.dropping = Some(Dropping {
                    lines: lost,
                    cause: e.to_string(),
                    too_large: e.kind() == io::ErrorKind::FileTooLarge,
                    last_try: Instant::now(),
                    partial,
                });
            }
        }
    }

    /// A write of `bufs` failed after the file had `before` bytes: the lines that did not make it
    /// whole are lost.
    fn fail(&mut self, bufs: &[&[u8]], before: u64, e: &io::Error) {
        let written = self.target.len().saturating_sub(before);
        let (whole, partial) = lines_written(bufs, written);
        self.lose(count_lines(bufs) - whole, partial, e);
    }

    /// Writes `bufs` (a batch of buffers, in order): rotates first if they would overflow the file,
    /// counts their lines as dropped if the target refuses them.
    pub(crate) fn write(&mut self, bufs: &[&[u8]]) {
        if !self.resume(bufs) {
            return;
        }
        self.write_through(bufs);
    }

    /// While dropping, and once the retry interval has passed: reopens the file and writes how many
    /// lines were lost. Returns whether the log is writable (else `bufs` are counted as dropped).
    fn resume(&mut self, bufs: &[&[u8]]) -> bool {
        if let Some(d) = &mut self.dropping {
            if d.last_try.elapsed() < self.config.retry {
                let lost = count_lines(bufs);
                d.lines += lost;
                self.config
                    .dropped
                    .fetch_add(lost, std::sync::atomic::Ordering::Relaxed);
                return false;
            }
            d.last_try = Instant::now();
            // A file that hit a size limit (`ulimit -f`): with rotation on, a new file is all it
            // takes, and from then on files rotate before they reach that size.
            let len = self.target.len();
            let rotated = d.too_large
                && self.config.max_bytes > 0
                && len > 0
                && self.target.rotate(self.config.keep).is_ok();
            if rotated {
                self.size_limit = Some(len);
            }
            if !rotated {
                // The file may be gone or replaced (space freed by removing it): open it afresh.
                let _ = self.target.reopen();
            }
            let notice = format!(
                "{}{}  WARN log lines lost: {} (could not write the log: {})\n",
                // Half a line may end the file: end it, unless the file is a new one.
                if d.partial && self.target.len() > 0 {
                    "\n"
                } else {
                    ""
                },
                humantime::format_rfc3339_micros(SystemTime::now()),
                d.lines,
                d.cause
            );
            let before = self.target.len();
            match self.target.write(&[notice.as_bytes()]) {
                Ok(()) => {
                    let msg = format!(
                        "herd-server: {}: writing the log {} again; {} log lines were lost",
                        self.config.name,
                        self.target.describe(),
                        d.lines
                    );
                    self.dropping = None;
                    (self.report)(&msg);
                }
                Err(e) => {
                    // The notice itself (or half of it) is not one of the lines lost.
                    let partial = self.target.len() != before;
                    self.lose(count_lines(bufs), partial, &e);
                    return false;
                }
            }
        }
        true
    }

    /// Whether a file past its size would be rotated now: not while a failed rotation waits for its
    /// retry (the file then grows past `max_bytes`).
    fn rotation_due(&self) -> bool {
        self.rotate_failed
            .is_none_or(|t| t.elapsed() >= self.config.retry.max(CHECK_PATH))
    }

    fn write_through(&mut self, bufs: &[&[u8]]) {
        let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        let due = self.rotation_due();
        let max = self.max_bytes();
        let rotate = |len: u64| max > 0 && len > 0 && len + total > max && due;
        if self.target.removed(rotate(self.target.len())) {
            // What was written since the last look went to a file nobody can read: open one at the
            // path again (making the folder again), and say so there and on stderr.
            let msg = format!(
                "the log {} was removed; writing a new file at its path (the lines of the second \
                 before are lost)",
                self.target.describe()
            );
            self.reopen();
            let line = format!(
                "{}  WARN {msg}\n",
                humantime::format_rfc3339_micros(SystemTime::now())
            );
            // Said only if the new file is there (else the write below fails and says why).
            if self.target.write(&[line.as_bytes()]).is_ok() {
                (self.report)(&format!("herd-server: {}: {msg}", self.config.name));
            }
        }
        if rotate(self.target.len()) {
            match self.target.rotate(self.config.keep) {
                Ok(()) => {
                    if self.rotate_failed.take().is_some() {
                        (self.report)(&format!(
                            "herd-server: {}: rotating the log {} works again",
                            self.config.name,
                            self.target.describe()
                        ));
                    }
                }
                Err(e) => {
                    // Keep writing where we can (the file grows past `max_bytes`); a failed
                    // rotation loses nothing, is said once, and is tried again now and then.
                    if self.rotate_failed.is_none() {
                        (self.report)(&format!(
                            "herd-server: {}: cannot rotate the log {} ({e}); writing on past \
                             max_bytes and trying again every second",
                            self.config.name,
                            self.target.describe()
                        ));
                    }
                    self.rotate_failed = Some(Instant::now());
                    let _ = self.target.reopen();
                }
            }
        }
        let before = self.target.len();
        if let Err(e) = self.target.write(bufs) {
            self.fail(bufs, before, &e);
        }
    }

    /// Writes one batch of buffers, split where a file of `max_bytes` must rotate.
    fn write_batch(&mut self, batch: &[Vec<u8>]) {
        let max = self.max_bytes();
        if max == 0 {
            let bufs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
            self.write(&bufs);
            return;
        }
        // As much as fits in the file's room goes in one write, cut at a line's end, so the file is
        // rotated between lines and never grown past `max` (a buffer holds many entries: the
        // queue copies small ones together). A line longer than the room goes alone, whole.
        let mut group: Vec<&[u8]> = Vec::new();
        let mut size = self.target.len();
        for buf in batch {
            let mut rest = buf.as_slice();
            while !rest.is_empty() {
                // While rotation fails the file grows on: nothing to cut for.
                let room = if self.rotation_due() {
                    usize::try_from(max.saturating_sub(size)).unwrap_or(usize::MAX)
                } else {
                    usize::MAX
                };
                if rest.len() <= room {
                    group.push(rest);
                    size += rest.len() as u64;
                    break;
                }
                let fits = rest[..room]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map(|i| i + 1);
                let cut = match fits {
                    Some(end) => end,
                    None if group.is_empty() => rest
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(rest.len(), |i| i + 1),
                    None => 0,
                };
                let (head, tail) = rest.split_at(cut);
                if !head.is_empty() {
                    group.push(head);
                }
                rest = tail;
                self.write(&group);
                group.clear();
                size = self.target.len();
            }
        }
        if !group.is_empty() {
            self.write(&group);
        }
    }

    /// SIGHUP: open the file at its path again (logrotate moved it away).
    pub(crate) fn reopen(&mut self) {
        if let Err(e) = self.target.reopen() {
            if self.dropping.is_none() {
                (self.report)(&format!(
                    "herd-server: {}: cannot reopen the log {}: {e}",
                    self.config.name,
                    self.target.describe()
                ));
            }
        }
    }

    /// At exit: say what was lost for good.
    pub(crate) fn finish(&mut self) {
        if let Some(d) = self.dropping.take() {
            (self.report)(&format!(
                "herd-server: {}: {} log lines were lost (the log {} could not be written: {})",
                self.config.name,
                d.lines,
                self.target.describe(),
                d.cause
            ));
        }
    }

    /// The writer thread: drains `queue` until it is closed and empty.
    ///
    /// It sleeps ([`Writing::Idle`]) while the queue is empty, and otherwise takes every buffer queued
    /// at once. After a write it lingers ([`LINGER`]) for more before writing again, unless enough
    /// bytes wait already; a producer wakes it only from `Idle`, or when `wake_at` bytes wait.
    pub(crate) fn run(mut self, queue: &LogQueue) {
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut wrote = false;
        let mut s = queue.lock();
        loop {
            let urgent = |s: &WriterState| s.closed || s.reopen || s.bytes >= queue.wake_at;
            if wrote && !urgent(&s) {
                s.writer = Writing::Lingering;
                s = queue
                    .ready
                    .wait_timeout(s, LINGER)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                s.writer = Writing::Busy;
            }
            while s.bufs.is_empty() && !s.closed && !s.reopen {
                s.writer = Writing::Idle;
                if self.dropping.is_some() {
                    // Nothing to write, but lines were lost: try again on a timer, so the loss is
                    // reported as soon as the disk takes writes again, not at the next line.
                    let (g, timeout) = queue
                        .ready
                        .wait_timeout(s, self.config.retry)
                        .unwrap_or_else(|p| p.into_inner());
                    s = g;
                    if timeout.timed_out() && s.bufs.is_empty() {
                        s.writer = Writing::Busy;
                        s.busy_since = Some(Instant::now());
                        drop(s);
                        self.resume(&[]);
                        s = self.back(queue);
                    }
                } else {
                    s = queue.ready.wait(s).unwrap_or_else(|p| p.into_inner());
                }
                s.writer = Writing::Busy;
            }
            let reopen = std::mem::take(&mut s.reopen);
            let closed = s.closed;
            std::mem::swap(&mut s.bufs, &mut batch);
            s.busy_since = Some(Instant::now());
            drop(s);
            if reopen {
                self.reopen();
            }
            wrote = !batch.is_empty();
            if wrote {
                self.write_batch(&batch);
                queue.done(&mut batch);
            } else if closed {
                break;
            }
            s = self.back(queue);
        }
        self.finish();
    }

    /// The writer is back from a write or a reopen: takes the queue's lock again, and if producers
    /// dropped lines meanwhile because it took too long, says how many (in the log and on stderr).
    fn back<'q>(&mut self, queue: &'q LogQueue) -> MutexGuard<'q, WriterState> {
        let mut s = queue.lock();
        s.busy_since = None;
        if !std::mem::take(&mut s.stalled) {
            return s;
        }
        let lost = std::mem::take(&mut s.lost);
        // Writing the notice may take as long again: producers still see a busy writer meanwhile.
        s.busy_since = Some(Instant::now());
        drop(s);
        if let Some(d) = &mut self.dropping {
            // The write ended in an error: these lines join the ones its notice will count.
            d.lines += lost;
        } else {
            let notice = format!(
                "{}  WARN log lines lost: {lost} (the log took more than {:?} to write)\n",
                humantime::format_rfc3339_micros(SystemTime::now()),
                queue.stall.after
            );
            let before = self.target.len();
            match self.target.write(&[notice.as_bytes()]) {
                Ok(()) => (self.report)(&format!(
                    "herd-server: {}: writing the log {} again; {lost} log lines were dropped \
                     while it was stuck",
                    self.config.name,
                    self.target.describe()
                )),
                // Counted already (by the producers that dropped them): only remembered.
                Err(e) => self.note_lost(lost, self.target.len() != before, &e),
            }
        }
        let mut s = queue.lock();
        s.busy_since = None;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A target that refuses writes while `full` is set, and rotations while `unrotatable` is (its
    /// `.1` a folder, say); it remembers what it took and counts its writes.
    #[derive(Clone, Default)]
    struct Flaky {
        full: Arc<std::sync::atomic::AtomicBool>,
        unrotatable: Arc<std::sync::atomic::AtomicBool>,
        taken: Arc<Mutex<Vec<u8>>>,
        reopens: Arc<AtomicUsize>,
        writes: Arc<AtomicUsize>,
    }

    impl Target for Flaky {
        fn write(&mut self, bufs: &[&[u8]]) -> io::Result<()> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            if self.full.load(Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            let mut taken = self.taken.lock().unwrap();
            for b in bufs {
                taken.extend_from_slice(b);
            }
            Ok(())
        }
        fn reopen(&mut self) -> io::Result<()> {
            self.reopens.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn len(&self) -> u64 {
            self.taken.lock().unwrap().len() as u64
        }
        fn rotate(&mut self, _keep: usize) -> io::Result<()> {
            if self.unrotatable.load(Ordering::SeqCst) {
                return Err(io::Error::other("Alford.log.1 is a folder"));
            }
            Ok(())
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
    }

    fn writer(t: Flaky) -> (Writer<Flaky>, Arc<Mutex<Vec<String>>>) {
        rotating_writer(t, 0, 0)
    }

    /// A writer to `t` rotating at `max_bytes` (0: never), and what it says on stderr.
    fn rotating_writer<T: Target>(
        t: T,
        max_bytes: u64,
        keep: usize,
    ) -> (Writer<T>, Arc<Mutex<Vec<String>>>) {
        let said = Arc::new(Mutex::new(Vec::new()));
        let s = said.clone();
        let w = Writer::new(
            t,
            WriterConfig {
                name: "Alford".into(),
                max_bytes,
                keep,
                retry: Duration::ZERO,
                dropped: Default::default(),
            },
            Box::new(move |m| s.lock().unwrap().push(m.to_owned())),
        );
        (w, said)
    }

    #[test]
    fn a_failing_target_is_reported_once_counted_and_resumed() {
        let t = Flaky::default();
        let (mut w, said) = writer(t.clone());
        w.write(&[b"one\n".as_slice()]);
        t.full.store(true, Ordering::SeqCst);
        w.write(&[b"two\nthree\n".as_slice()]);
        w.write(&[b"four\n".as_slice()]);
        assert_eq!(w.dropping(), Some(3));
        let msgs = said.lock().unwrap().clone();
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(msgs[0].contains("dropping log lines"), "{msgs:?}");
        assert!(msgs[0].contains("No space left"), "{msgs:?}");

        // Still full at the retry: counted, not reported again.
        w.write(&[b"five\n".as_slice()]);
        assert_eq!(w.dropping(), Some(4));
        assert_eq!(
            w.config.dropped.load(Ordering::SeqCst),
            4,
            "the total for the metrics"
        );
        assert_eq!(said.lock().unwrap().len(), 1);

        // Space again: the next write after the retry interval gets through, with the count.
        t.full.store(false, Ordering::SeqCst);
        w.write(&[b"six\n".as_slice()]);
        assert_eq!(w.dropping(), None);
        let text = String::from_utf8(t.taken.lock().unwrap().clone()).unwrap();
        assert!(text.starts_with("one\n"), "{text}");
        assert!(text.contains("WARN log lines lost: 4 ("), "{text}");
        assert!(text.ends_with("six\n"), "{text}");
        assert!(!text.contains("two") && !text.contains("five"), "{text}");
        let msgs = said.lock().unwrap().clone();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs[1].contains("4 log lines were lost"), "{msgs:?}");
        assert!(
            t.reopens.load(Ordering::SeqCst) >= 1,
            "retries reopen the file"
        );
    }

    #[test]
    fn lines_still_lost_at_exit_are_reported() {
        let t = Flaky::default();
        let (mut w, said) = writer(t.clone());
        t.full.store(true, Ordering::SeqCst);
        w.write(&[b"a\nb\n".as_slice()]);
        w.finish();
        let msgs = said.lock().unwrap().clone();
        assert!(msgs[1].contains("2 log lines were lost"), "{msgs:?}");
    }

    #[test]
    fn small_buffers_are_copied_onto_the_queue_and_their_producer_keeps_its_own() {
        let queue = LogQueue::new(1 << 20);
        let mut mine = Vec::with_capacity(256);
        let at = mine.as_ptr();
        let mut want = Vec::new();
        for i in 0..100 {
            let line = format!("request {i}\n");
            want.extend_from_slice(line.as_bytes());
            mine.extend_from_slice(line.as_bytes());
            mine = queue.try_push(mine).unwrap();
            assert_eq!(
                (mine.as_ptr(), mine.len()),
                (at, 0),
                "its own buffer back, empty"
            );
        }
        // A large buffer is queued as it is, and what comes after it starts a new chunk.
        let large = [vec![b'x'; COPY_MAX], b"\n".to_vec()].concat();
        want.extend_from_slice(&large);
        let spare = queue.try_push(large).unwrap();
        assert!(spare.is_empty());
        mine.extend_from_slice(b"after\n");
        want.extend_from_slice(b"after\n");
        let _ = queue.try_push(mine).unwrap();
        // A large buffer with room after it takes the copies that follow.
        let mut roomy = Vec::with_capacity(4 * COPY_MAX);
        roomy.resize(COPY_MAX + 1, b'z');
        want.extend_from_slice(&roomy);
        let _ = queue.try_push(roomy).unwrap();
        // A producer's buffer grown large by a burst goes to the spares after a small hand-over;
        // the producer gets a new, small one.
        let mut grown = Vec::with_capacity(8 * COPY_MAX);
        grown.extend_from_slice(b"small\n");
        want.extend_from_slice(b"small\n");
        let back = queue.try_push(grown).unwrap();
        assert_eq!((back.len(), back.capacity()), (0, 0));
        let s = queue.lock();
        assert_eq!(
            s.bufs.len(),
            4,
            "the copies, the large buffer, the copies, the roomy one"
        );
        assert_eq!(s.bufs.concat(), want, "every byte, in order");
        assert_eq!(s.bytes, want.len());
        assert!(s.spares.iter().any(|b| b.capacity() >= 8 * COPY_MAX));
    }

    /// A target that takes its time, like a slow disk.
    struct Slow(Arc<AtomicUsize>);

    impl Target for Slow {
        fn write(&mut self, bufs: &[&[u8]]) -> io::Result<()> {
            std::thread::sleep(Duration::from_micros(200));
            self.0
                .fetch_add(bufs.iter().map(|b| b.len()).sum(), Ordering::SeqCst);
            Ok(())
        }
        fn reopen(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn len(&self) -> u64 {
            0
        }
        fn rotate(&mut self, _keep: usize) -> io::Result<()> {
            Ok(())
        }
        fn describe(&self) -> String {
            "slow".into()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_writer_holds_producers_back_within_the_byte_bound() {
        const CAP: usize = 64 * 1024;
        let queue = Arc::new(LogQueue::new(CAP));
        let written = Arc::new(AtomicUsize::new(0));
        let w = Writer::new(
            Slow(written.clone()),
            WriterConfig {
                name: "Alford".into(),
                max_bytes: 0,
                keep: 0,
                retry: Duration::ZERO,
                dropped: Default::default(),
            },
            Box::new(|_| {}),
        );
        let q = queue.clone();
        let thread = std::thread::spawn(move || w.run(&q));
        // 20 producers × 200 buffers × 4 KiB = 16 MB offered, far more than the bound.
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let q = queue.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..200 {
                    let mut b = q.spare();
                    b.resize(4096, b'x');
                    q.push(b).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        queue.close();
        thread.join().unwrap();
        assert_eq!(written.load(Ordering::SeqCst), 20 * 200 * 4096);
        assert!(
            queue.high_water() <= CAP,
            "held {} bytes",
            queue.high_water()
        );
        assert!(queue.high_water() >= CAP / 2, "the bound was reached");
    }

    /// A target whose writes block until `open` is set, like a FIFO nobody reads or a hung mount.
    struct Stuck {
        open: Arc<(Mutex<bool>, Condvar)>,
        taken: Arc<Mutex<Vec<u8>>>,
    }

    impl Target for Stuck {
        fn write(&mut self, bufs: &[&[u8]]) -> io::Result<()> {
            let (lock, cv) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            let mut taken = self.taken.lock().unwrap();
            for b in bufs {
                taken.extend_from_slice(b);
            }
            Ok(())
        }
        fn reopen(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn len(&self) -> u64 {
            self.taken.lock().unwrap().len() as u64
        }
        fn rotate(&mut self, _keep: usize) -> io::Result<()> {
            Ok(())
        }
        fn describe(&self) -> String {
            "stuck".into()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stuck_writer_makes_producers_drop_and_count_instead_of_waiting_for_ever() {
        const CAP: usize = 16 * 1024;
        let said = Arc::new(Mutex::new(Vec::<String>::new()));
        let s = said.clone();
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let queue = Arc::new(LogQueue::with_stall(
            CAP,
            Stall {
                after: Duration::from_millis(200),
                dropped: dropped.clone(),
                report: Box::new(move |m| s.lock().unwrap().push(m.to_owned())),
                name: "Alford".into(),
                path: "stuck".into(),
            },
        ));
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let taken = Arc::new(Mutex::new(Vec::new()));
        let w = Writer::new(
            Stuck {
                open: gate.clone(),
                taken: taken.clone(),
            },
            WriterConfig {
                name: "Alford".into(),
                max_bytes: 0,
                keep: 0,
                retry: Duration::ZERO,
                dropped: dropped.clone(),
            },
            Box::new(|_| {}),
        );
        let q = queue.clone();
        let thread = std::thread::spawn(move || w.run(&q));
        // Four times the bound, in lines of 64 bytes: every push returns (the first ones queued, the
        // rest dropped once the writer has been stuck for the stall time), none waits for ever.
        let line = [b"x".repeat(63), b"\n".to_vec()].concat();
        let pushes = 4 * CAP / 1024;
        let producer = {
            let q = queue.clone();
            tokio::spawn(async move {
                for _ in 0..pushes {
                    q.push(line.repeat(16)).await;
                }
                // A rare event from a plain thread is not held for ever either.
                let q2 = q.clone();
                tokio::task::spawn_blocking(move || q2.push_event(b"rare\n".to_vec()))
                    .await
                    .unwrap();
            })
        };
        tokio::time::timeout(Duration::from_secs(30), producer)
            .await
            .expect("producers waited for a stuck writer")
            .unwrap();
        let lost = dropped.load(Ordering::SeqCst);
        assert!(lost > 0, "nothing dropped");
        let msgs = said.lock().unwrap().clone();
        assert_eq!(msgs.len(), 1, "said once: {msgs:?}");
        assert!(msgs[0].contains("dropping log lines"), "{msgs:?}");

        // The write returns at last: what was queued is written, then how many were lost.
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        queue.close();
        thread.join().unwrap();
        let text = String::from_utf8(taken.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains(&format!("WARN log lines lost: {lost} (")),
            "{lost}: {}",
            &text[text.len().saturating_sub(300)..]
        );
        let kept = text.lines().filter(|l| l.starts_with('x')).count() as u64;
        let rare = u64::from(text.contains("rare\n"));
        assert_eq!(
            kept + rare + lost,
            (pushes * 16 + 1) as u64,
            "every line written or counted"
        );
    }

    fn file_writer(
        dir: &Path,
        max_bytes: u64,
        keep: usize,
    ) -> (Writer<FileTarget>, Arc<Mutex<Vec<String>>>) {
        let said = Arc::new(Mutex::new(Vec::new()));
        let s = said.clone();
        let mut target = FileTarget::open(&dir.join("Alford.log")).unwrap();
        target.check_every = Duration::ZERO;
        let w = Writer::new(
            target,
            WriterConfig {
                name: "Alford".into(),
                max_bytes,
                keep,
                retry: Duration::ZERO,
                dropped: Default::default(),
            },
            Box::new(move |m| s.lock().unwrap().push(m.to_owned())),
        );
        (w, said)
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("herd-writer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_removed_log_folder_is_noticed_said_and_written_again() {
        let dir = scratch("removed");
        let (mut w, said) = file_writer(&dir, 0, 0);
        w.write(&[b"before\n".as_slice()]);
        std::fs::remove_dir_all(&dir).unwrap();
        w.write(&[b"after\n".as_slice()]);
        let text = std::fs::read_to_string(dir.join("Alford.log")).expect("written again");
        assert!(text.contains("WARN the log "), "{text}");
        assert!(text.ends_with("after\n"), "{text}");
        let msgs = said.lock().unwrap().clone();
        assert!(
            msgs.len() == 1 && msgs[0].contains("was removed;"),
            "{msgs:?}"
        );
        // Moved away (as logrotate does before its SIGHUP): the moved file is still written.
        std::fs::rename(dir.join("Alford.log"), dir.join("Alford.log.moved")).unwrap();
        w.write(&[b"moved\n".as_slice()]);
        let text = std::fs::read_to_string(dir.join("Alford.log.moved")).unwrap();
        assert!(text.ends_with("moved\n"), "{text}");
        assert!(!dir.join("Alford.log").exists());
        assert_eq!(said.lock().unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_log_removed_just_before_a_rotation_is_said_removed_not_a_failed_rotation() {
        let dir = scratch("removed-rotate");
        let (mut w, said) = file_writer(&dir, 40, 2);
        w.target.check_every = Duration::from_secs(3600);
        w.write(&[b"a line of the log\n".as_slice()]);
        std::fs::remove_file(dir.join("Alford.log")).unwrap();
        w.write(&[b"a line that makes it rotate\n".as_slice()]);
        let msgs = said.lock().unwrap().clone();
        assert!(
            msgs.len() == 1 && msgs[0].contains("was removed;"),
            "{msgs:?}"
        );
        let text = std::fs::read_to_string(dir.join("Alford.log")).unwrap();
        assert!(text.ends_with("a line that makes it rotate\n"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_buffer_of_many_lines_is_rotated_between_lines_within_max_bytes() {
        let dir = scratch("rotate-lines");
        let (mut w, said) = file_writer(&dir, 100, 100);
        // 30 entries of 20 bytes in one buffer (the queue copies small hand-overs together):
        // five a file, none cut, none past 100 bytes.
        let buf: Vec<u8> = (0..30)
            .flat_map(|i| format!("entry {i:02} of the log\n").into_bytes())
            .collect();
        // Then a line longer than a file may be: alone in its file, whole.
        let long = format!("{}\n", "y".repeat(150)).into_bytes();
        w.write_batch(&[buf.clone(), long.clone()]);
        let mut files: Vec<String> = vec!["Alford.log".into()];
        files.extend((1..=6).map(|n| format!("Alford.log.{n}")));
        let texts: Vec<Vec<u8>> = files
            .iter()
            .rev()
            .map(|f| std::fs::read(dir.join(f)).unwrap())
            .collect();
        assert_eq!(
            texts.concat(),
            [buf, long.clone()].concat(),
            "every byte, in order"
        );
        assert_eq!(texts.last().unwrap(), &long);
        for (f, t) in files.iter().rev().zip(&texts).take(texts.len() - 1) {
            assert!(
                t.len() <= 100 && t.ends_with(b"\n"),
                "{f}: {} bytes",
                t.len()
            );
        }
        assert!(!dir.join("Alford.log.7").exists());
        assert!(said.lock().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rotation_moves_only_the_files_there_are_and_a_failure_is_said_once() {
        let dir = scratch("rotate");
        // A `keep` of a billion costs what the files there are cost, not a billion renames.
        let (mut w, said) = file_writer(&dir, 10, 1_000_000_000);
        for i in 0..4 {
            w.write(&[format!("line {i} of the log\n").as_bytes()]);
        }
        for (f, want) in [("Alford.log", 3), ("Alford.log.1", 2), ("Alford.log.3", 0)] {
            let text = std::fs::read_to_string(dir.join(f)).unwrap();
            assert_eq!(text, format!("line {want} of the log\n"), "{f}");
        }
        assert!(said.lock().unwrap().is_empty());

        // `.1` cannot be replaced (a folder with something in it): said once, lines still written.
        let (mut w, said) = file_writer(&dir, 10, 1);
        std::fs::remove_file(dir.join("Alford.log.1")).unwrap();
        std::fs::create_dir_all(dir.join("Alford.log.1").join("x")).unwrap();
        for i in 0..50 {
            w.write(&[format!("more {i}\n").as_bytes()]);
        }
        let msgs = said.lock().unwrap().clone();
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(
            msgs[0].contains("cannot rotate") && msgs[0].contains("Alford.log.1"),
            "{msgs:?}"
        );
        let text = std::fs::read_to_string(dir.join("Alford.log")).unwrap();
        assert!(text.ends_with("more 49\n"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_nobody_reads_fails_at_open_instead_of_blocking() {
        let dir = scratch("fifo");
        let path = dir.join("Alford.log");
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string for the call's duration.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || tx.send(FileTarget::open(&p).is_err()).unwrap());
        let failed = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("open blocked on a FIFO nobody reads");
        assert!(failed);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A target whose files cannot grow past 200 bytes (a `ulimit -f`).
    #[derive(Clone, Default)]
    struct Limited {
        rotated: Arc<AtomicUsize>,
        taken: Arc<Mutex<Vec<u8>>>,
    }

    impl Target for Limited {
        fn write(&mut self, bufs: &[&[u8]]) -> io::Result<()> {
            let mut taken = self.taken.lock().unwrap();
            if taken.len() >= 200 {
                return Err(io::Error::from_raw_os_error(27)); // EFBIG
            }
            for b in bufs {
                taken.extend_from_slice(b);
            }
            Ok(())
        }
        fn reopen(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn len(&self) -> u64 {
            self.taken.lock().unwrap().len() as u64
        }
        fn rotate(&mut self, _keep: usize) -> io::Result<()> {
            self.rotated.fetch_add(1, Ordering::SeqCst);
            self.taken.lock().unwrap().clear();
            Ok(())
        }
        fn describe(&self) -> String {
            "limited".into()
        }
    }

    #[test]
    fn while_rotation_fails_a_buffer_of_many_lines_is_not_written_a_line_at_a_time() {
        let t = Flaky::default();
        t.unrotatable.store(true, Ordering::SeqCst);
        let (mut w, said) = rotating_writer(t.clone(), 100, 1);
        let buf: Vec<u8> = (0..30)
            .flat_map(|i| format!("entry {i:02} of the log\n").into_bytes())
            .collect();
        w.write_batch(std::slice::from_ref(&buf));
        // Five lines fill the file; the sixth finds rotation failing and goes on past the size;
        // the other 24 follow in one write, not one write each.
        assert_eq!(t.writes.load(Ordering::SeqCst), 3);
        assert_eq!(*t.taken.lock().unwrap(), buf);
        let msgs = said.lock().unwrap().clone();
        assert!(
            msgs.len() == 1 && msgs[0].contains("cannot rotate"),
            "{msgs:?}"
        );
    }

    #[test]
    fn a_file_too_large_is_rotated_away_when_rotation_is_on() {
        let t = Limited::default();
        let (mut w, said) = rotating_writer(t.clone(), 1000, 1);
        let hundred = [b"x".repeat(99), b"\n".to_vec()].concat();
        w.write(&[hundred.as_slice(), hundred.as_slice()]);
        w.write(&[b"refused\n".as_slice()]);
        assert_eq!(w.dropping(), Some(1));
        w.write(&[b"after\n".as_slice()]);
        assert_eq!(w.dropping(), None, "{:?}", said.lock().unwrap());
        assert_eq!(t.rotated.load(Ordering::SeqCst), 1);
        let text = String::from_utf8(t.taken.lock().unwrap().clone()).unwrap();
        assert!(text.contains("WARN log lines lost: 1 ("), "{text}");
        assert!(text.ends_with("after\n"), "{text}");
        // From then on files rotate before they reach the size found too large: nothing more lost.
        for _ in 0..10 {
            w.write(&[b"one more line of thirty bytes\n".as_slice()]);
            assert_eq!(w.dropping(), None);
        }
        assert!(t.rotated.load(Ordering::SeqCst) >= 2);
        assert_eq!(said.lock().unwrap().len(), 2, "{:?}", said.lock().unwrap());
    }
}
