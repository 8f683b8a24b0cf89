//! The accept loop and the admission of each connection.
//!
//! Every connection is accepted at once (none waits in the kernel's queue) and admitted by the
//! connection budget of [`Admission`](crate::driver::admission::Admission): under the client limits it
//! is served; over them it gets one `? busy …` line and is closed. Links from neighbours have their
//! own budget, so a full server still takes its neighbours: a connection over the client limit is
//! given a short grace ([`PEER_GRACE`]) to show a neighbour's `HERD-HELLO` before it is refused, and
//! those waits are themselves bounded (beyond them, the refusal is at once).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use herd_proto::HerdCodec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::codec::Decoder;
use tracing::{error, info, Instrument};

use crate::driver::admission::Busy;
use crate::driver::conn;
use crate::driver::gate::{AdmissionSlot, SlotKind};
use crate::driver::peers::{self, greeting_name, is_hello};
use crate::driver::shared::Shared;
use crate::node::limits::Limit;

/// How long a connection over the client limit may take to show a neighbour's `HERD-HELLO` before it
/// is answered `? busy`. A dialling neighbour sends it right after connecting, so this is generous;
/// it keeps every `? busy` well within a second.
pub const PEER_GRACE: Duration = Duration::from_millis(500);
/// After `? busy`, how long the rest of what the client sent is read and dropped, so the close is a
/// clean FIN that lets the client read the answer, not a reset that can destroy it.
const BUSY_DRAIN: Duration = Duration::from_millis(500);
/// Most bytes read and dropped after `? busy`.
const BUSY_DRAIN_BYTES: usize = 64 * 1024;

/// Listen backlog: bursts of connects wait in the kernel instead of overflowing into SYN cookies
/// and resets (the kernel caps it at `net.core.somaxconn`).
pub(crate) const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (`host:port`) with a deep accept queue and `SO_REUSEADDR`, so a restarted server can
/// take its port back at once.
///
/// # Errors
/// The address does not resolve, or cannot be bound (taken, not local, no permission).
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("{addr} resolves to no address"))))
}

/// Accepts connections on `listener` until shutdown; each is served by a task on this thread's runtime.
pub(super) async fn accept(shared: &Arc<Shared>, listener: TcpListener) {
    let mut backoff = std::time::Duration::from_millis(10);
    let mut reserve = crate::driver::admission::Reserve::take();
    loop {
        // Accept whatever the client count: a connection over a limit is answered and closed, never
        // left waiting silently in the kernel's queue.
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shared.life.shutdown.cancelled() => {
                shared.life.begin_stopping();
                break;
            }
        };
        match accepted {
            Ok((stream, addr)) => {
                backoff = std::time::Duration::from_millis(10);
                // Taken again if a refusal could not (one check of an `Option` when it is held).
                reserve.restore();
                admit(shared, stream, addr);
            }
            Err(e) if crate::driver::admission::out_of_descriptors(&e) && reserve.release() => {
                // The reserve descriptor makes room for one: it is told `? busy` and closed, not
                // left waiting in the kernel's queue.
                if let Ok(Ok((stream, addr))) =
                    tokio::time::timeout(Duration::from_millis(10), listener.accept()).await
                {
                    let limit = shared.gate.admission().limits().max_connections;
                    let busy = Busy {
                        refusal: Limit::Busy,
                        limit,
                    };
                    refuse_now(shared, stream, shared.conn_id(), addr, busy);
                }
                reserve.restore();
            }
            Err(e) => {
                // Out of file descriptors and the like: wait, then go on.
                error!(cause = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
            }
        }
    }
}

/// Decides what becomes of a connection just accepted: served, or over a limit.
fn admit(shared: &Arc<Shared>, stream: TcpStream, addr: SocketAddr) {
    let admitted = shared.gate.admission().admit_client(addr.ip());
    let s = shared.clone();
    match admitted {
        Ok(()) => {
            let ticket = AdmissionSlot::new(&shared.gate, SlotKind::Client(addr.ip()));
            shared
                .life
                .tracker
                .spawn(conn::handle(s, stream, addr, ticket).in_current_span());
        }
        Err(busy) => {
            if shared.gate.admission().hold_pending() {
                let ticket = AdmissionSlot::new(&shared.gate, SlotKind::Pending);
                shared
                    .life
                    .tracker
                    .spawn(over_limit(s, stream, addr, busy, ticket).in_current_span());
            } else {
                // No room even to wait: answer and close without a task.
                let conn = shared.conn_id();
                refuse_now(shared, stream, conn, addr, busy);
            }
        }
    }
}

/// A connection over a client limit: if its first line, within [`PEER_GRACE`], is a configured
/// neighbour's greeting, it is a link and takes the peers' budget; anything else gets `? busy`.
async fn over_limit(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    addr: SocketAddr,
    busy: Busy,
    ticket: AdmissionSlot,
) {
    let conn = shared.conn_id();
    let mut buf = BytesMut::with_capacity(512);
    let first = first_line(&shared, &mut stream, &mut buf).await;
    let mut busy = busy;
    if let Some(line) = first {
        let neighbour = is_hello(&line)
            && greeting_name(&line).is_some_and(|n| shared.node().link_id(n).is_some());
        if neighbour {
            let admitted = shared.gate.admission().admit_peer();
            if admitted {
                let _ticket = AdmissionSlot::new(&shared.gate, SlotKind::Peer);
                drop(ticket);
                let _ = stream.set_nodelay(true);
                info!(conn, peer = %addr, "connection opened (a neighbour, over the client limit)");
                peers::accept(shared.clone(), stream, conn, addr, line, buf).await;
                return;
            }
            busy = Busy {
                refusal: Limit::BusyPeers,
                limit: 0,
            };
        }
    }
    shared.gate.refused(busy.refusal, addr);
    info!(conn, peer = %addr, refusal = %busy.refusal, limit = busy.key(), "connection refused: busy");
    let _ = tokio::time::timeout(BUSY_DRAIN, answer_busy(&mut stream, &busy)).await;
    drop(ticket);
}

/// The first line of a connection over the client limit, if it comes within [`PEER_GRACE`] (and the
/// server has neighbours to wait for); `buf` keeps what came after it.
async fn first_line(shared: &Shared, stream: &mut TcpStream, buf: &mut BytesMut) -> Option<Bytes> {
    if shared.node.links().is_empty() {
        return None; // no neighbour to wait for
    }
    let mut codec = HerdCodec::new_with_max_length(shared.spec.limits.max_line);
    let grace = tokio::time::Instant::now() + PEER_GRACE;
    loop {
        match codec.decode(buf) {
            Ok(Some(line)) => return Some(line),
            Ok(None) => {}
            Err(_) => return None,
        }
        let read = tokio::select! {
            r = tokio::time::timeout_at(grace, stream.read_buf(buf)) => r,
            _ = shared.life.shutdown.cancelled() => return None,
        };
        match read {
            Ok(Ok(n)) if n > 0 => {}
            _ => return None, // EOF, error or the grace is over
        }
    }
}

/// Writes `busy`'s line and closes, then reads and drops what else the client sent (up to
/// [`BUSY_DRAIN_BYTES`]), so the close does not reset the answer away.
async fn answer_busy(stream: &mut TcpStream, busy: &Busy) -> std::io::Result<()> {
    stream.write_all(busy.line().as_bytes()).await?;
    stream.shutdown().await?;
    let mut drained = 0;
    let mut sink = [0u8; 4096];
    while drained < BUSY_DRAIN_BYTES {
        match stream.read(&mut sink).await? {
            0 => break,
            n => drained += n,
        }
    }
    Ok(())
}

/// `? busy` without a task, when even the waits over the limit are all taken: one non-blocking write
/// (a fresh socket's buffer is empty), whatever the client sent already read and dropped, then close.
/// On the plain socket, so nothing depends on whether the runtime has seen a socket this fresh ready.
fn refuse_now(shared: &Shared, stream: TcpStream, conn: u64, addr: SocketAddr, busy: Busy) {
    use std::io::{Read as _, Write as _};
    shared.gate.refused(busy.refusal, addr);
    info!(conn, peer = %addr, refusal = %busy.refusal, limit = busy.key(), "connection refused: busy");
    let Ok(mut stream) = stream.into_std() else {
        return;
    };
    let _ = stream.write(busy.line().as_bytes());
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < BUSY_DRAIN_BYTES {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => drained += n,
            _ => break,
        }
    }
}
