//! Event loops: the runtime shape where each thread runs its own single-threaded tokio runtime and
//! accepts clients on its own listener.
//!
//! A non-pipelined request is mostly wake-ups and system calls: the reply is a few hundred
//! nanoseconds of work between a `read` and a `write`. Tokio's work-stealing runtime spends more than
//! that moving the request between threads (the thread that polls the sockets wakes another to run the
//! task, and parked workers are woken to steal), where one loop per core, each owning its connections
//! from accept to close, wakes nobody: the shape of Redis, NGINX and most per-core servers. Each loop
//! has its own listener on the server's address, bound with `SO_REUSEPORT`, and the kernel spreads new
//! connections across them. What the loops share (the node, the log queue, the links' queues) is behind
//! the same locks as before.
//!
//! The caller's runtime is the first loop: it also runs everything that is not a client connection
//! (links to neighbours, the admin endpoint, the store's upkeep, signals). [`Loops`] are the others.
//!
//! ```no_run
//! # async fn demo(spec: herd_server::ServerSpec) -> anyhow::Result<()> {
//! use herd_server::driver::loops::{bind_on, Loops};
//! let loops = Loops::start(1)?; // a second loop on its own thread
//! let listeners = bind_on("127.0.0.1:12000", &loops).await?;
//! herd_server::run(listeners, spec, tokio_util::sync::CancellationToken::new()).await?;
//! loops.stop(); // after the servers have stopped
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::driver::listener::LISTEN_BACKLOG;

/// Event loops besides the caller's, each a single-threaded tokio runtime on its own thread. They run
/// until [`Loops::stop`] (or drop): stop them only after the servers that use them have stopped.
#[derive(Default)]
pub struct Loops {
    handles: Vec<Handle>,
    stop: CancellationToken,
    threads: Vec<JoinHandle<()>>,
}

impl Loops {
    /// How many threads serve clients when `--threads` is not given, on a machine with `cores`
    /// cores: one below four cores, three quarters of them from four up.
    ///
    /// A loop is not all a request costs: the kernel's TCP work, the log's and the store's writer
    /// threads and the links need CPU too, and a loop that has to share its core with them is
    /// preempted in the middle of its batches, and loops contend for the node's lock. On the
    /// two-core machine of BENCHMARKS.md, over four runs, one loop served 1.02–1.3× the pipelined
    /// IAMATs of two with every line logged (1.13–1.15× Redis `SET` with its append-only file,
    /// against 0.87–1.11×) on less CPU a request, with the unpipelined rate the same within the
    /// noise. The rule is Redis's advice for its I/O threads (use them only from four cores,
    /// leaving spare ones: two or three of four, six of eight).
    pub fn default_count(cores: usize) -> usize {
        if cores < 4 {
            1
        } else {
            cores * 3 / 4
        }
    }

    /// No loop besides the caller's.
    pub fn none() -> Loops {
        Loops::default()
    }

    /// Starts `n` loops, each on a thread named `loop-1`, `loop-2`, ….
    ///
    /// # Errors
    /// A runtime or a thread cannot be started.
    pub fn start(n: usize) -> std::io::Result<Loops> {
        let mut loops = Loops::none();
        for i in 1..=n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            loops.handles.push(runtime.handle().clone());
            let stop = loops.stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("loop-{i}"))
                .spawn(move || runtime.block_on(stop.cancelled()))?;
            loops.threads.push(thread);
        }
        Ok(loops)
    }

    /// The runtime handles of the loops, to hand them listeners ([`Listeners::with`]) or tasks.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// How many loops (besides the caller's).
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether there is no loop besides the caller's.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Stops the loops (what they still run is dropped) and waits for their threads.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.cancel();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Loops {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Where a server accepts clients: a listener on the caller's runtime and, with [`Loops`], one more on
/// each loop, all on the same address. A plain [`TcpListener`] converts into one.
pub struct Listeners {
    pub(crate) first: TcpListener,
    /// Not registered with any runtime yet: each is registered by the loop it is handed to.
    pub(crate) more: Vec<(Handle, std::net::TcpListener)>,
}

impl From<TcpListener> for Listeners {
    fn from(first: TcpListener) -> Self {
        Listeners {
            first,
            more: Vec::new(),
        }
    }
}

impl Listeners {
    /// Adds `listener` (a std listener, registered with no runtime yet) to be served by the loop of
    /// `handle`: the connections it accepts run on that loop. It usually shares the address of the
    /// others ([`bind_on`]) but need not.
    pub fn with(mut self, handle: Handle, listener: std::net::TcpListener) -> Self {
        self.more.push((handle, listener));
        self
    }

    /// The address they listen on.
    ///
    /// # Errors
    /// As [`TcpListener::local_addr`].
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.first.local_addr()
    }
}

/// Binds `addr` (`host:port`) once for the caller's runtime and once for each of `loops`. Without
/// loops this is [`crate::bind`]; with them every listener has `SO_REUSEPORT`, and a plain bind first
/// checks that nothing listens on the port, since with `SO_REUSEPORT` alone a second server started
/// by mistake would share the port silently instead of being refused.
///
/// # Errors
/// The address does not resolve, or cannot be bound (taken, not local, no permission).
pub async fn bind_on(addr: &str, loops: &Loops) -> std::io::Result<Listeners> {
    if loops.is_empty() {
        return crate::bind(addr).await.map(Listeners::from);
    }
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        match bind_group(a, &loops.handles) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("{addr} resolves to no address"))))
}

fn socket(a: SocketAddr) -> std::io::Result<TcpSocket> {
    let s = if a.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    Ok(s)
}

fn bind_group(a: SocketAddr, handles: &[Handle]) -> std::io::Result<Listeners> {
    if a.port() != 0 {
        // Fails if anything listens there, `SO_REUSEPORT` or not (a socket that is only bound, as
        // this one, does not stop the group below from binding: both have `SO_REUSEADDR`).
        socket(a)?.bind(a)?;
    }
    let first = socket(a)?;
    first.set_reuseport(true)?;
    first.bind(a)?;
    // With port 0 the first bind picks the port; the others join it.
    let at = first.local_addr()?;
    let first = first.listen(LISTEN_BACKLOG)?;
    let mut more = Vec::with_capacity(handles.len());
    for h in handles {
        let s = socket(at)?;
        s.set_reuseport(true)?;
        s.bind(at)?;
        more.push((h.clone(), s.listen(LISTEN_BACKLOG)?.into_std()?));
    }
    Ok(Listeners { first, more })
}

#[cfg(test)]
mod tests {
    use super::Loops;

    #[test]
    fn the_default_leaves_cores_to_the_kernel_and_the_writers() {
        let counts: Vec<usize> = [1, 2, 3, 4, 6, 8, 16, 64]
            .into_iter()
            .map(Loops::default_count)
            .collect();
        assert_eq!(counts, [1, 1, 1, 3, 4, 6, 12, 48]);
    }
}
