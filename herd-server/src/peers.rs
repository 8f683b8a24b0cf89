//! Links to neighbours: dial with back-off, the greeting and its proof, the catch-up, keep-alive,
//! and the two halves of a running link.
//!
//! Of each pair of neighbours, the server whose name sorts first dials and the other accepts, so
//! there is one link per pair; if a neighbour greets again while a link is up (it restarted, or the
//! old connection is half dead), the newer link replaces the older one.
//!
//! A running link is two tasks: the writer drains the node's queue for this link (the catch-up first)
//! and sends a keep-alive when idle; the reader applies records. They are separate so two servers that
//! both have much to send never wait on each other's writes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::StreamExt;
use herd_proto::{HerdCodec, PeerMessage, PEER_VERSION};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;
use tracing::{info, warn, Instrument};

use crate::log::{show, SUMMARY};
use crate::node::LinkAction;
use crate::server::{Hello, Shared};

/// The greeting must be done within this.
const HANDSHAKE: Duration = Duration::from_secs(5);
/// How often the node is asked which links to dial, ping or close.
const TICK: Duration = Duration::from_millis(100);
/// Records per write while catching up or draining a backlog.
const BATCH: usize = 1024;

type Lines = FramedRead<OwnedReadHalf, HerdCodec>;

fn peer_codec(shared: &Shared) -> HerdCodec {
    // A record carries a client id of up to a whole client line, plus the server fields.
    HerdCodec::new_with_max_length(
        shared
            .spec
            .limits
            .max_line
            .saturating_mul(2)
            .saturating_add(256),
    )
}

fn nonce() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: still unique per link, though guessable.
        b[..8].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    }
    hex::encode(b)
}

/// The proof that `prover` knows the secret, over the other side's `nonce`; `-` without a secret.
fn proof(secret: Option<&str>, prover: &[u8], nonce: &[u8]) -> String {
    let Some(secret) = secret else {
        return "-".into();
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return "-".into();
    };
    mac.update(b"herd-peer-v1\n");
    mac.update(prover);
    mac.update(b"\n");
    mac.update(nonce);
    hex::encode(mac.finalize().into_bytes())
}

fn proof_ok(secret: Option<&str>, prover: &[u8], nonce: &[u8], got: &[u8]) -> bool {
    proof(secret, prover, nonce).as_bytes().ct_eq(got).into()
}

async fn send(w: &mut OwnedWriteHalf, m: &PeerMessage<'_>) -> std::io::Result<()> {
    let mut out = m.to_bytes();
    out.push(b'\n');
    w.write_all(&out).await
}

async fn next_message(lines: &mut Lines) -> anyhow::Result<PeerMessage<'static>> {
    let line = tokio::time::timeout(HANDSHAKE, lines.next())
        .await
        .map_err(|_| anyhow::anyhow!("greeting timed out"))?
        .ok_or_else(|| anyhow::anyhow!("closed during the greeting"))??;
    PeerMessage::parse(&line)
        .map(PeerMessage::into_owned)
        .map_err(|e| anyhow::anyhow!("bad greeting line {:?}: {e}", show(&line)))
}

/// Carries out the node's link decisions (`Node::tick`) every [`TICK`]: dial, keep-alive, close.
pub(crate) async fn link_manager(shared: Arc<Shared>) {
    loop {
        let actions = shared.node().tick(Instant::now());
        for action in actions {
            match action {
                LinkAction::Dial(id) => {
                    let s = shared.clone();
                    shared.tracker.spawn(dial(s, id).in_current_span());
                }
                LinkAction::Ping(id) => {
                    shared.peers[id].ping_due.store(true, Ordering::Relaxed);
                    shared.peers[id].notify.notify_one();
                }
                LinkAction::Close(id) => {
                    let slot = &shared.peers[id];
                    info!(peer = %slot.name, "peer link silent too long; closing");
                    if let Some(t) = slot
                        .current
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .as_ref()
                    {
                        t.cancel();
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shared.shutdown.cancelled() => return,
        }
    }
}

/// One dial of neighbour `id`: connect, greet, run the link until it drops. A failure is reported to
/// the node, which decides when to try again.
async fn dial(shared: Arc<Shared>, id: usize) {
    let addr = shared.peers[id].addr.clone();
    let name = shared.peers[id].name.clone();
    let attempt = async {
        let stream = tokio::time::timeout(HANDSHAKE, TcpStream::connect(&addr)).await??;
        let _ = stream.set_nodelay(true);
        let peer_addr = stream.peer_addr()?;
        let conn = shared.conn_id();
        let (rd, mut wr) = stream.into_split();
        let mut lines = FramedRead::new(rd, peer_codec(&shared));
        let me = shared.spec.name.as_bytes();
        let secret = shared.spec.secret.as_deref();
        let my_nonce = nonce();
        let hello = PeerMessage::Hello {
            version: PEER_VERSION,
            name: me.into(),
            nonce: my_nonce.as_bytes().into(),
        };
        send(&mut wr, &hello).await?;
        match next_message(&mut lines).await? {
            PeerMessage::Welcome {
                name: their_name,
                nonce: their_nonce,
                proof: their_proof,
            } => {
                if *their_name != *name.as_bytes() {
                    anyhow::bail!("{addr} says it is {:?}, not {name}", show(&their_name));
                }
                if !proof_ok(secret, &their_name, my_nonce.as_bytes(), &their_proof) {
                    send(
                        &mut wr,
                        &PeerMessage::Refused {
                            reason: b"bad-proof"[..].into(),
                        },
                    )
                    .await?;
                    anyhow::bail!("{name} did not prove the herd secret");
                }
                let p = proof(secret, me, &their_nonce);
                send(
                    &mut wr,
                    &PeerMessage::Proof {
                        proof: p.as_bytes().into(),
                    },
                )
                .await?;
            }
            PeerMessage::Refused { reason } => {
                anyhow::bail!("{name} refused the link: {}", show(&reason))
            }
            other => anyhow::bail!("unexpected greeting {:?}", show(&other.to_bytes())),
        }
        Ok::<_, anyhow::Error>((conn, peer_addr, lines, wr))
    };
    match attempt.await {
        Ok((conn, peer_addr, lines, wr)) => run_link(shared, id, conn, peer_addr, lines, wr).await,
        Err(e) => {
            info!(peer = %name, %addr, cause = %e, "link dial failed");
            shared.node().dial_failed(id, Instant::now());
        }
    }
}

/// A connection whose first line was `HERD-HELLO`: check the peer, finish the greeting, run the link.
pub(crate) async fn accept(
    shared: Arc<Shared>,
    stream: TcpStream,
    conn: u64,
    addr: SocketAddr,
    hello: Hello,
    buf: BytesMut,
) {
    let PeerMessage::Hello {
        name,
        nonce: their_nonce,
        ..
    } = hello
    else {
        return;
    };
    let (rd, mut wr) = stream.into_split();
    let mut lines = FramedRead::new(rd, peer_codec(&shared));
    *lines.read_buffer_mut() = buf;
    let id = shared.node().link_id(&name);
    let Some(id) = id else {
        warn!(conn, peer = %addr, name = %show(&name), "refused peer link: not a neighbour");
        let _ = send(
            &mut wr,
            &PeerMessage::Refused {
                reason: b"unknown-peer"[..].into(),
            },
        )
        .await;
        return;
    };
    let secret = shared.spec.secret.as_deref();
    let me = shared.spec.name.as_bytes();
    let my_nonce = nonce();
    let welcome = PeerMessage::Welcome {
        name: me.into(),
        nonce: my_nonce.as_bytes().into(),
        proof: proof(secret, me, &their_nonce).into_bytes().into(),
    };
    if send(&mut wr, &welcome).await.is_err() {
        return;
    }
    match next_message(&mut lines).await {
        Ok(PeerMessage::Proof { proof: p }) if proof_ok(secret, &name, my_nonce.as_bytes(), &p) => {
            run_link(shared, id, conn, addr, lines, wr).await;
        }
        Ok(PeerMessage::Proof { .. }) => {
            warn!(conn, peer = %addr, name = %show(&name), "refused peer link: wrong secret");
            let _ = send(
                &mut wr,
                &PeerMessage::Refused {
                    reason: b"bad-proof"[..].into(),
                },
            )
            .await;
        }
        Ok(other) => {
            warn!(conn, peer = %addr, line = %show(&other.to_bytes()), "refused peer link: no proof")
        }
        Err(e) => warn!(conn, peer = %addr, cause = %e, "peer greeting failed"),
    }
}

/// Runs an established link until it drops, a newer link replaces it, or the server shuts down.
async fn run_link(
    shared: Arc<Shared>,
    id: usize,
    conn: u64,
    addr: SocketAddr,
    mut lines: Lines,
    mut wr: OwnedWriteHalf,
) {
    let slot = &shared.peers[id];
    let token = shared.shutdown.child_token();
    if let Some(old) = slot
        .current
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .replace(token.clone())
    {
        old.cancel();
    }
    let epoch = shared.node().link_up(id, Instant::now());
    slot.notify.notify_one();
    info!(target: SUMMARY, "{} link to {} up", shared.spec.name, slot.name);
    info!(conn, peer = %addr, name = %slot.name, "peer link up");
    let pong_due = Arc::new(AtomicBool::new(false));

    let writer = {
        let shared = shared.clone();
        let token = token.clone();
        let pong_due = pong_due.clone();
        async move {
            let slot = &shared.peers[id];
            let mut out = Vec::with_capacity(64 * 1024);
            loop {
                out.clear();
                let n = shared.node().poll_transmit(id, epoch, &mut out, BATCH);
                if pong_due.swap(false, Ordering::Relaxed) {
                    PeerMessage::Pong.write_to(&mut out);
                    out.push(b'\n');
                }
                if slot.ping_due.swap(false, Ordering::Relaxed) {
                    PeerMessage::Ping.write_to(&mut out);
                    out.push(b'\n');
                }
                if !out.is_empty() {
                    if shared.spec.log_lines && n > 0 {
                        for line in out.split(|&b| b == b'\n').filter(|l| l.starts_with(b"AT ")) {
                            info!(conn, dir = "peer-out", peer = %slot.name, line = %show(line));
                        }
                    }
                    let w = tokio::select! {
                        w = wr.write_all(&out) => w,
                        _ = token.cancelled() => return,
                    };
                    if w.is_err() {
                        return;
                    }
                    shared.node().sent(id, Instant::now());
                    continue;
                }
                // Keep-alives come from the node's tick, through `ping_due` and this notify.
                tokio::select! {
                    _ = slot.notify.notified() => {}
                    _ = token.cancelled() => return,
                }
            }
        }
    };
    let writer = tokio::spawn(writer.in_current_span());

    let why = loop {
        let next = tokio::select! {
            n = lines.next() => n,
            // Cancelled by a newer link, by the node's keep-alive verdict, or by shutdown.
            _ = token.cancelled() => break "replaced, silent too long, or shutting down",
        };
        let line = match next {
            None => break "closed by peer",
            Some(Err(_)) => break "read error",
            Some(Ok(line)) => line,
        };
        let now = Instant::now();
        match PeerMessage::parse(&line) {
            Ok(PeerMessage::Record(r)) => {
                if shared.spec.log_lines {
                    info!(conn, dir = "peer-in", peer = %slot.name, line = %show(&line));
                }
                let stored = {
                    let mut node = shared.node();
                    node.heard(id, now);
                    node.peer_record(id, r)
                };
                if stored {
                    shared.notify_links(Some(id));
                }
                continue;
            }
            Ok(PeerMessage::Ping) => {
                pong_due.store(true, Ordering::Relaxed);
                slot.notify.notify_one();
            }
            Ok(PeerMessage::Pong) => {}
            Ok(PeerMessage::Synced { count }) => {
                info!(conn, peer = %slot.name, count, "catch-up from peer complete");
            }
            Ok(PeerMessage::Refused { reason }) => {
                warn!(conn, peer = %slot.name, reason = %show(&reason), "peer refused the link");
                break "refused";
            }
            Ok(other) => {
                warn!(conn, peer = %slot.name, line = %show(&other.to_bytes()), "unexpected peer line")
            }
            Err(e) => {
                warn!(conn, peer = %slot.name, line = %show(&line), cause = %e, "invalid peer line")
            }
        }
        shared.node().heard(id, now);
    };
    token.cancel();
    let _ = writer.await;
    shared.node().link_down(id, epoch, Instant::now());
    {
        let mut current = slot.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|t| t.is_cancelled()) {
            *current = None;
        }
    }
    info!(target: SUMMARY, "{} link to {} down ({why})", shared.spec.name, slot.name);
    info!(conn, peer = %addr, name = %slot.name, reason = why, "peer link down");
}
