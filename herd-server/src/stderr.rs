//! stderr without waiting for it: every message for stderr — [`crate::say`] and the warnings and
//! summary lines of the log's stderr layer — goes into a queue bounded in bytes ([`BOUND`]), and one
//! thread writes it out. A stderr that nobody reads (a full pipe) then stalls that thread only: no
//! runtime thread waits on it, so clients are served and SIGTERM is heard. Messages that find the
//! queue full are dropped and counted, and the count is written as soon as stderr takes bytes again.

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Most bytes of messages waiting for stderr; past it, messages are dropped and counted.
pub const BOUND: usize = 256 * 1024;

#[derive(Default)]
struct StderrQueue {
    messages: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Dropped since the writer last said so.
    dropped: u64,
    /// The writer is in a write.
    writing: bool,
}

struct StderrState {
    queue: Mutex<StderrQueue>,
    /// Wakes the writer (something queued), and [`flush`] (the queue emptied).
    wake: Condvar,
    /// Whether the writer thread could be started; if not, messages are written in place.
    threaded: bool,
}

fn lock(m: &Mutex<StderrQueue>) -> MutexGuard<'_, StderrQueue> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn shared() -> &'static StderrState {
    static SHARED: OnceLock<StderrState> = OnceLock::new();
    SHARED.get_or_init(|| {
        let threaded = std::thread::Builder::new()
            .name("herd-stderr".into())
            .spawn(|| writer(shared()))
            .is_ok();
        StderrState {
            queue: Mutex::new(StderrQueue::default()),
            wake: Condvar::new(),
            threaded,
        }
    })
}

/// Queues `msg` (whole lines) for stderr; never waits for stderr, never panics.
pub fn write(msg: Vec<u8>) {
    let s = shared();
    if !s.threaded {
        let _ = std::io::stderr().write_all(&msg);
        return;
    }
    let mut q = lock(&s.queue);
    if q.bytes + msg.len() > BOUND {
        q.dropped += 1;
        return;
    }
    q.bytes += msg.len();
    q.messages.push_back(msg);
    drop(q);
    s.wake.notify_all();
}

/// Messages dropped since stderr last took one (a full queue).
pub fn dropped() -> u64 {
    lock(&shared().queue).dropped
}

/// Waits at most `limit` for the queued messages to be written (at exit: a stderr nobody reads
/// does not keep the process alive).
pub fn flush(limit: Duration) {
    let s = shared();
    let deadline = Instant::now() + limit;
    let mut q = lock(&s.queue);
    while !q.messages.is_empty() || q.writing {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        q = s
            .wake
            .wait_timeout(q, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

fn writer(s: &StderrState) {
    let mut err = std::io::stderr();
    loop {
        let (batch, dropped) = {
            let mut q = lock(&s.queue);
            while q.messages.is_empty() && q.dropped == 0 {
                q = s.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            q.writing = true;
            q.bytes = 0;
            (
                std::mem::take(&mut q.messages),
                std::mem::take(&mut q.dropped),
            )
        };
        if dropped > 0 {
            let _ = writeln!(
                err,
                "herd-server: {dropped} messages for stderr were dropped (stderr was not taking them)"
            );
        }
        for m in batch {
            let _ = err.write_all(&m);
        }
        let _ = err.flush();
        lock(&s.queue).writing = false;
        s.wake.notify_all();
    }
}

/// A writer of one message for the log's stderr layer: collects the event's bytes, queues them when
/// dropped.
#[derive(Default)]
pub struct StderrMessage(Vec<u8>);

impl std::io::Write for StderrMessage {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for StderrMessage {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            write(std::mem::take(&mut self.0));
        }
    }
}
