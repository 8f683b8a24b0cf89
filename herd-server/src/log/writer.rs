//! The writing side of one log file: a queue bounded in bytes, a thread that drains it, size rotation,
//! reopening on SIGHUP, and honest drops when the disk refuses.
//!
//! Connections hand whole buffers (many lines each) to [`Queue::push`]; the writer thread takes them in
//! order and does one `write` per buffer. The queue counts the bytes it holds, the buffer being written
//! included, so a disk slower than the clients makes connections wait for room (back-pressure) and the
//! memory held for the log never passes the bound. The writer never touches the async runtime, so a
//! connection blocked on a full queue always gets room back.
//!
//! A write that fails (no space, an I/O error, the folder removed) does not stop the server: the writer
//! says once on stderr that it is dropping lines, counts them, retries every [`RETRY`] (reopening the
//! file), and when a write succeeds again writes a line saying how many were lost, and says so on stderr.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// While dropping, a write is tried again this often (buffers in between are counted, not written).
pub(crate) const RETRY: Duration = Duration::from_millis(200);
/// Spare buffers kept for reuse, so a busy connection does not allocate a new buffer per batch.
const SPARES: usize = 32;
/// A spare buffer larger than this is freed instead of kept.
const SPARE_MAX: usize = 256 * 1024;

/// The bounded queue between the connections of one server and its log file's writer thread.
pub(crate) struct Queue {
    state: Mutex<State>,
    /// The writer waits here for buffers, a reopen or the close.
    ready: Condvar,
    /// Blocking producers (rare events logged from any thread) wait here for room.
    room_sync: Condvar,
    /// Async producers (connections) wait here for room.
    room: tokio::sync::Notify,
    /// Most bytes held at once (a single larger buffer is let through when the queue is empty).
    cap: usize,
    /// The most bytes ever held, for tests and benchmarks.
    high_water: AtomicUsize,
}

#[derive(Default)]
struct State {
    bufs: VecDeque<Vec<u8>>,
    /// Bytes queued plus the bytes being written.
    bytes: usize,
    spares: Vec<Vec<u8>>,
    reopen: bool,
    closed: bool,
}

impl Queue {
    pub(crate) fn new(cap: usize) -> Self {
        Queue {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            room_sync: Condvar::new(),
            room: tokio::sync::Notify::new(),
            cap: cap.max(1),
            high_water: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most bytes the queue ever held.
    pub(crate) fn high_water(&self) -> usize {
        self.high_water.load(Ordering::Relaxed)
    }

    /// An empty buffer, reused when one is spare.
    pub(crate) fn spare(&self) -> Vec<u8> {
        self.lock().spares.pop().unwrap_or_default()
    }

    /// Queues `buf` if there is room; gives it back if not.
    fn try_push(&self, buf: Vec<u8>) -> Result<(), Vec<u8>> {
        let mut s = self.lock();
        if s.closed {
            return Ok(()); // the server has stopped: nothing is written any more
        }
        if s.bytes > 0 && s.bytes + buf.len() > self.cap {
            return Err(buf);
        }
        s.bytes += buf.len();
        self.high_water.fetch_max(s.bytes, Ordering::Relaxed);
        s.bufs.push_back(buf);
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// Queues `buf`, waiting (without blocking the thread) until there is room.
    pub(crate) async fn push(&self, buf: Vec<u8>) {
        if buf.is_empty() {
            return;
        }
        let mut buf = buf;
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            // Registered before the check, so room freed in between is not missed.
            notified.as_mut().enable();
            match self.try_push(buf) {
                Ok(()) => return,
                Err(b) => buf = b,
            }
            notified.await;
        }
    }

    /// Queues `buf`, blocking the calling thread until there is room (for rare events only).
    pub(crate) fn push_blocking(&self, buf: Vec<u8>) {
        let mut s = self.lock();
        loop {
            if s.closed {
                return;
            }
            if s.bytes == 0 || s.bytes + buf.len() <= self.cap {
                s.bytes += buf.len();
                self.high_water.fetch_max(s.bytes, Ordering::Relaxed);
                s.bufs.push_back(buf);
                drop(s);
                self.ready.notify_one();
                return;
            }
            s = self.room_sync.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Asks the writer to reopen the file (SIGHUP).
    pub(crate) fn reopen(&self) {
        self.lock().reopen = true;
        self.ready.notify_one();
    }

    /// Asks the writer to write what is queued and stop.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
        self.room.notify_waiters();
        self.room_sync.notify_all();
    }

    /// `buf` is written (or dropped): its bytes are room again.
    fn done(&self, mut buf: Vec<u8>) {
        let mut s = self.lock();
        s.bytes -= buf.len();
        if s.spares.len() < SPARES && buf.capacity() <= SPARE_MAX {
            buf.clear();
            s.spares.push(buf);
        }
        drop(s);
        self.room.notify_waiters();
        self.room_sync.notify_all();
    }
}

/// Where a log's bytes go: a file in production, a scripted failure in tests.
pub(crate) trait Target: Send {
    /// Writes all of `buf` (one `write` call when the disk takes it whole).
    fn write(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Closes and opens the file again at its path (after SIGHUP, or to retry after a failure).
    fn reopen(&mut self) -> io::Result<()>;
    /// Bytes in the current file (as far as this writer knows).
    fn len(&self) -> u64;
    /// Moves the file to `.1` (older ones up to `.keep`) and starts a new one.
    fn rotate(&mut self, keep: usize) -> io::Result<()>;
    /// Where it writes, for messages.
    fn describe(&self) -> String;
}

/// A log file opened for appending.
pub(crate) struct FileTarget {
    path: PathBuf,
    file: Option<File>,
    len: u64,
}

impl FileTarget {
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let mut t = FileTarget {
            path: path.to_owned(),
            file: None,
            len: 0,
        };
        t.reopen()?;
        Ok(t)
    }
}

impl Target for FileTarget {
    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "log file not open"));
        };
        let mut rest = buf;
        while !rest.is_empty() {
            match file.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.len += n as u64;
                    rest = &rest[n..];
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
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.len = file.metadata().map_or(0, |m| m.len());
        self.file = Some(file);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn rotate(&mut self, keep: usize) -> io::Result<()> {
        self.file = None;
        let numbered = |i: usize| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        if keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            for i in (1..keep).rev() {
                match std::fs::rename(numbered(i), numbered(i + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        self.reopen()
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
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
    last_try: Instant,
    /// The failed write may have left half a line in the file.
    partial: bool,
}

/// The writer thread's state: the target, and whether it is dropping.
pub(crate) struct Writer<T: Target> {
    target: T,
    config: WriterConfig,
    dropping: Option<Dropping>,
    report: Box<dyn FnMut(&str) + Send>,
}

fn count_lines(buf: &[u8]) -> u64 {
    buf.iter().filter(|&&b| b == b'\n').count() as u64
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
            report,
        }
    }

    /// Log lines dropped since the last successful write.
    #[cfg(test)]
    pub(crate) fn dropping(&self) -> Option<u64> {
        self.dropping.as_ref().map(|d| d.lines)
    }

    fn fail(&mut self, buf: &[u8], before: u64, e: &io::Error) {
        let partial = self.target.len() != before;
        self.config
            .dropped
            .fetch_add(count_lines(buf), std::sync::atomic::Ordering::Relaxed);
        match &mut self.dropping {
            Some(d) => {
                d.lines += count_lines(buf);
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
                    lines: count_lines(buf),
                    cause: e.to_string(),
                    last_try: Instant::now(),
                    partial,
                });
            }
        }
    }

    /// Writes one buffer: rotates first if it would overflow the file, counts it as dropped if the
    /// target refuses it.
    pub(crate) fn write(&mut self, buf: &[u8]) {
        if !self.resume(buf) {
            return;
        }
        self.write_through(buf);
    }

    /// While dropping, and once the retry interval has passed: reopens the file and writes how many
    /// lines were lost. Returns whether the log is writable (else `buf` is counted as dropped).
    fn resume(&mut self, buf: &[u8]) -> bool {
        if let Some(d) = &mut self.dropping {
            if d.last_try.elapsed() < self.config.retry {
                d.lines += count_lines(buf);
                self.config
                    .dropped
                    .fetch_add(count_lines(buf), std::sync::atomic::Ordering::Relaxed);
                return false;
            }
            d.last_try = Instant::now();
            // The file may be gone or replaced (space freed by removing it): open it afresh.
            let _ = self.target.reopen();
            let notice = format!(
                "{}{}  WARN log lines lost: {} (could not write the log: {})\n",
                if d.partial { "\n" } else { "" },
                humantime::format_rfc3339_micros(SystemTime::now()),
                d.lines,
                d.cause
            );
            let before = self.target.len();
            match self.target.write(notice.as_bytes()) {
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
                    self.fail(buf, before, &e);
                    return false;
                }
            }
        }
        true
    }

    fn write_through(&mut self, buf: &[u8]) {
        let len = self.target.len();
        if self.config.max_bytes > 0 && len > 0 && len + buf.len() as u64 > self.config.max_bytes {
            if let Err(e) = self.target.rotate(self.config.keep) {
                // Keep writing where we can; a failed rotation is reported but loses nothing yet.
                (self.report)(&format!(
                    "herd-server: {}: cannot rotate the log {}: {e}",
                    self.config.name,
                    self.target.describe()
                ));
                let _ = self.target.reopen();
            }
        }
        let before = self.target.len();
        if let Err(e) = self.target.write(buf) {
            self.fail(buf, before, &e);
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
    pub(crate) fn run(mut self, queue: &Queue) {
        loop {
            let (buf, reopen) = {
                let mut s = queue.lock();
                while s.bufs.is_empty() && !s.closed && !s.reopen {
                    if self.dropping.is_some() {
                        // Nothing to write, but lines were lost: try again on a timer, so the loss
                        // is reported as soon as the disk takes writes again, not at the next line.
                        let (g, timeout) = queue
                            .ready
                            .wait_timeout(s, self.config.retry)
                            .unwrap_or_else(|p| p.into_inner());
                        s = g;
                        if timeout.timed_out() {
                            drop(s);
                            self.resume(&[]);
                            s = queue.lock();
                        }
                    } else {
                        s = queue.ready.wait(s).unwrap_or_else(|p| p.into_inner());
                    }
                }
                let reopen = std::mem::take(&mut s.reopen);
                (s.bufs.pop_front(), reopen)
            };
            if reopen {
                self.reopen();
            }
            match buf {
                Some(buf) => {
                    self.write(&buf);
                    queue.done(buf);
                }
                None if queue.lock().closed => break,
                None => {}
            }
        }
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A target that refuses writes while `full` is set, and remembers what it took.
    #[derive(Clone, Default)]
    struct Flaky {
        full: Arc<std::sync::atomic::AtomicBool>,
        taken: Arc<Mutex<Vec<u8>>>,
        reopens: Arc<AtomicUsize>,
    }

    impl Target for Flaky {
        fn write(&mut self, buf: &[u8]) -> io::Result<()> {
            if self.full.load(Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            self.taken.lock().unwrap().extend_from_slice(buf);
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
            Ok(())
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
    }

    fn writer(t: Flaky) -> (Writer<Flaky>, Arc<Mutex<Vec<String>>>) {
        let said = Arc::new(Mutex::new(Vec::new()));
        let s = said.clone();
        let w = Writer::new(
            t,
            WriterConfig {
                name: "Alford".into(),
                max_bytes: 0,
                keep: 0,
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
        w.write(b"one\n");
        t.full.store(true, Ordering::SeqCst);
        w.write(b"two\nthree\n");
        w.write(b"four\n");
        assert_eq!(w.dropping(), Some(3));
        let msgs = said.lock().unwrap().clone();
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(msgs[0].contains("dropping log lines"), "{msgs:?}");
        assert!(msgs[0].contains("No space left"), "{msgs:?}");

        // Still full at the retry: counted, not reported again.
        w.write(b"five\n");
        assert_eq!(w.dropping(), Some(4));
        assert_eq!(
            w.config.dropped.load(Ordering::SeqCst),
            4,
            "the total for the metrics"
        );
        assert_eq!(said.lock().unwrap().len(), 1);

        // Space again: the next write after the retry interval gets through, with the count.
        t.full.store(false, Ordering::SeqCst);
        w.write(b"six\n");
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
        w.write(b"a\nb\n");
        w.finish();
        let msgs = said.lock().unwrap().clone();
        assert!(msgs[1].contains("2 log lines were lost"), "{msgs:?}");
    }

    /// A target that takes its time, like a slow disk.
    struct Slow(Arc<AtomicUsize>);

    impl Target for Slow {
        fn write(&mut self, buf: &[u8]) -> io::Result<()> {
            std::thread::sleep(Duration::from_micros(200));
            self.0.fetch_add(buf.len(), Ordering::SeqCst);
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
        let queue = Arc::new(Queue::new(CAP));
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
}
