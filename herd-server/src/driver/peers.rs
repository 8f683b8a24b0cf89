//! Links to neighbours, carried out for the node: dial with back-off, run the greeting state machine
//! ([`crate::node::handshake`]) over the socket, then the two halves of a running link.
//!
//! Every rule of trust — who may link, from which side, with which proof, and whether a greeting may
//! replace a link that is up — is decided by the greeting and the node; this module moves bytes and
//! keeps time. With a secret, a running link carries its lines in the encrypted channel the greeting
//! set up; a frame that fails to open closes the link (logged as a warning with the peer's address)
//! and the dialling side dials again.
//!
//! A running link is two tasks: the writer drains the node's queue for this link (keep-alives and
//! the catch-up first); the reader hands every byte it decrypts to the node
//! ([`Node::handle_link_input`](crate::node::Node::handle_link_input)), which decodes and dispatches
//! each line itself. They are separate so two servers that both have much to send never wait on each
//! other's writes. One more task sleeps until the node's next deadline
//! ([`Node::poll_timeout`](crate::node::Node::poll_timeout)) and carries out what is due then.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use herd_proto::{PeerMessage, Timestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{info, warn, Instrument};

use crate::driver::server::Shared;
use crate::driver::warnings::WarnKind;
use crate::log::{show, Dir, SUMMARY};
use crate::node::handshake::{Established, Failure, Greeting, Refusal, Verdict};
use crate::node::{LinkAction, LinkEvent, Node};

/// A dial's TCP connect must be done within this (the greeting then has its own deadline,
/// [`Greeting::poll_timeout`]).
const CONNECT: Duration = Duration::from_secs(5);
/// Records per write while catching up or draining a backlog.
const BATCH: usize = 1024;

/// Carries out the node's link decisions (`Node::handle_timeout`) when they are due: dial, close,
/// and wake a link that has a keep-alive or a periodic check to send. Sleeps until the node's next
/// deadline, or until a link goes up or down or a dial fails (`Shared::timers`).
pub(crate) async fn link_manager(shared: Arc<Shared>) {
    loop {
        let (actions, next) = {
            let mut node = shared.node();
            let actions = node.handle_timeout(Instant::now());
            (actions, node.poll_timeout())
        };
        for action in actions {
            match action {
                LinkAction::Dial(id) => {
                    let s = shared.clone();
                    shared.tracker.spawn(dial(s, id).in_current_span());
                }
                LinkAction::Transmit(id) => shared.peers[id].notify.notify_one(),
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
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = shared.timers.notified() => {}
            _ = shared.shutdown.cancelled() => return,
        }
    }
}

/// Why a greeting did not bring a link up.
enum GreetError {
    /// The greeting's own verdict (already sent to the other side where this side refused).
    Failed(Failure),
    /// The socket failed, closed or timed out.
    Io(String),
}

impl std::fmt::Display for GreetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GreetError::Failed(x) if x.refusal == Refusal::RefusedByPeer => {
                write!(f, "refused by the peer: {}", x.detail)
            }
            GreetError::Failed(x) => write!(f, "{}: {}", x.refusal.word(), x.detail),
            GreetError::Io(e) => f.write_str(e),
        }
    }
}

/// Feeds the greeting what the socket brings until its verdict, within the greeting's own deadline. What is left in
/// `input` after it is established belongs to the channel.
async fn greet(
    shared: &Shared,
    stream: &mut TcpStream,
    greeting: &mut Greeting,
    input: &mut BytesMut,
) -> Result<Established, GreetError> {
    let mut out = Vec::new();
    loop {
        out.clear();
        // The node is locked only while it says who may link, not across the Noise handshake.
        let verdict = greeting.feed(input, &shared.node, Instant::now(), &mut out);
        let deadline = greeting
            .poll_timeout()
            .map_or_else(tokio::time::Instant::now, Into::into);
        if !out.is_empty() {
            stream
                .write_all(&out)
                .await
                .map_err(|e| GreetError::Io(format!("write failed: {e}")))?;
        }
        match verdict {
            Verdict::Established(e) => return Ok(e),
            Verdict::Failed(f) => return Err(GreetError::Failed(f)),
            Verdict::Pending => {}
        }
        if input.len() > 64 * 1024 {
            return Err(GreetError::Io("greeting too long".into()));
        }
        input.reserve(1024);
        match tokio::time::timeout_at(deadline, stream.read_buf(input)).await {
            Err(_) => return Err(GreetError::Io("greeting timed out".into())),
            Ok(Ok(0)) => return Err(GreetError::Io("closed during the greeting".into())),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(GreetError::Io(format!("read failed: {e}"))),
        }
    }
}

/// One dial of neighbour `id`: connect, greet, run the link until it drops. A failure is reported to
/// the node, which decides when to try again (and with which secret).
async fn dial(shared: Arc<Shared>, id: usize) {
    let addr = shared.peers[id].addr.clone();
    let name = shared.peers[id].name.clone();
    let attempt = async {
        let mut stream = tokio::time::timeout(CONNECT, TcpStream::connect(&addr))
            .await
            .map_err(|_| GreetError::Io("connect timed out".into()))?
            .map_err(|e| GreetError::Io(format!("connect failed: {e}")))?;
        let _ = stream.set_nodelay(true);
        let peer_addr = stream
            .peer_addr()
            .map_err(|e| GreetError::Io(e.to_string()))?;
        let key = shared.node().dial_key(id);
        let mut out = Vec::new();
        let mut greeting = Greeting::dial(
            shared.spec.name.as_bytes(),
            name.as_bytes(),
            id,
            &shared.spec.keyring,
            key,
            &mut out,
        );
        stream
            .write_all(&out)
            .await
            .map_err(|e| GreetError::Io(format!("write failed: {e}")))?;
        let mut input = BytesMut::new();
        let est = greet(&shared, &mut stream, &mut greeting, &mut input).await?;
        Ok::<_, GreetError>((stream, peer_addr, est, input))
    };
    match attempt.await {
        Ok((stream, peer_addr, est, input)) => {
            let conn = shared.conn_id();
            run_link(shared, conn, peer_addr, stream, est, input).await
        }
        Err(e) => {
            if let GreetError::Failed(f) = &e {
                warn!(peer = %name, %addr, cause = %e, "link dial refused");
                if f.by_peer == Some(Refusal::LinkUp) {
                    warn!(target: SUMMARY,
                        "{name} refused the link: a link from another server named {} is up there (two servers claim the name {})",
                        shared.spec.name, shared.spec.name);
                }
                if f.by_peer == Some(Refusal::BadProof) {
                    shared.node().proof_refused(id);
                }
            } else {
                info!(peer = %name, %addr, cause = %e, "link dial failed");
            }
            shared.node().dial_failed(id, Instant::now());
            shared.timers.notify_one();
        }
    }
}

/// A connection whose first line was a `HERD-HELLO` (`hello`, followed in `buf` by whatever came
/// after it): run the greeting as the accepting side, then the link.
pub(crate) async fn accept(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    conn: u64,
    addr: SocketAddr,
    hello: Bytes,
    buf: BytesMut,
) {
    let mut input = BytesMut::with_capacity(hello.len() + 1 + buf.len());
    input.extend_from_slice(&hello);
    input.extend_from_slice(b"\n");
    input.extend_from_slice(&buf);
    let mut greeting = Greeting::accept(shared.spec.name.as_bytes(), &shared.spec.keyring);
    match greet(&shared, &mut stream, &mut greeting, &mut input).await {
        Ok(est) => run_link(shared, conn, addr, stream, est, input).await,
        Err(e) => {
            if shared.warn_ok(WarnKind::Greeting, addr.ip()) {
                warn!(conn, peer = %addr, cause = %e, "refused peer greeting");
            }
            let _ = stream.shutdown().await;
        }
    }
}

/// Runs an established link until it drops, a newer link replaces it, or the server shuts down.
/// `wire` holds what was received after the greeting.
async fn run_link(
    shared: Arc<Shared>,
    conn: u64,
    addr: SocketAddr,
    stream: TcpStream,
    est: Established,
    mut wire: BytesMut,
) {
    let id = est.link;
    let slot = &shared.peers[id];
    let Established {
        authenticated,
        channel,
        ..
    } = est;
    let (mut sealer, mut opener, mut plain) = (channel.sealer, channel.opener, channel.first);
    let (mut rd, mut wr) = stream.into_split();
    let up = shared.node().try_link_up(id, Instant::now(), authenticated);
    let epoch = match up {
        Ok(epoch) => epoch,
        Err(refusal) => {
            let live = *slot.live.lock().unwrap_or_else(|p| p.into_inner());
            match live {
                // It proved the herd's secret, yet the neighbour by that name answers on its link:
                // two processes serve one name (or a peer holding the secret greets as another).
                Some(live) if authenticated && shared.warn_ok(WarnKind::NameClash, addr.ip()) => {
                    warn!(target: SUMMARY,
                        "two servers claim the name {}: {live} and {addr} (the link from {live} is up and answers; {addr} is refused)",
                        slot.name);
                    warn!(conn, peer = %addr, name = %slot.name, live = %live,
                        "two servers claim the name {}: {live} and {addr}", slot.name);
                }
                Some(_) if authenticated => {}
                _ => {
                    if shared.warn_ok(WarnKind::Greeting, addr.ip()) {
                        warn!(conn, peer = %addr, name = %slot.name, refusal = refusal.word(),
                            "refused peer link: the link to this neighbour is up and alive");
                    }
                }
            }
            let mut line = Vec::new();
            PeerMessage::Refused {
                reason: refusal.word().as_bytes().into(),
            }
            .write_to(&mut line);
            line.push(b'\n');
            let mut out = Vec::new();
            sealer.seal(&line, &mut out);
            let _ = wr.write_all(&out).await;
            return;
        }
    };
    shared.timers.notify_one();
    let token = shared.shutdown.child_token();
    if let Some(old) = slot
        .current
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .replace(token.clone())
    {
        old.cancel();
    }
    *slot.live.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr);
    slot.notify.notify_one();
    let kind = if authenticated { "encrypted" } else { "plain" };
    info!(target: SUMMARY, "{} link to {} up ({kind})", shared.spec.name, slot.name);
    info!(conn, peer = %addr, name = %slot.name, channel = kind, "peer link up");

    let writer = {
        let shared = shared.clone();
        let token = token.clone();
        async move {
            let slot = &shared.peers[id];
            let mut out = Vec::with_capacity(64 * 1024);
            let mut sealed = Vec::new();
            let mut log = shared.spec.log.buffer(conn, Some(&slot.name));
            loop {
                out.clear();
                let (n, working) = {
                    let mut node = shared.node();
                    let n = node.poll_transmit(id, epoch, &mut out, BATCH);
                    log_events(&shared, &mut node);
                    (n, out.is_empty() && node.working(id, epoch))
                };
                if working {
                    // Reconciliation work is done a slice a call: let others have the node.
                    tokio::task::yield_now().await;
                    continue;
                }
                if !out.is_empty() {
                    if shared.spec.log_lines && n > 0 {
                        log.stamp();
                        for line in out.split(|&b| b == b'\n').filter(|l| l.starts_with(b"AT ")) {
                            log.line(Dir::PeerOut, line);
                        }
                        shared.spec.log.submit(&mut log).await;
                    }
                    sealed.clear();
                    sealer.seal(&out, &mut sealed);
                    let w = tokio::select! {
                        w = wr.write_all(&sealed) => w,
                        _ = token.cancelled() => return,
                    };
                    if w.is_err() {
                        return;
                    }
                    shared.node().sent(id, Instant::now());
                    continue;
                }
                // Woken by the node's timers (keep-alive, check), by the reader (an answer), or by a
                // record stored from elsewhere.
                tokio::select! {
                    _ = slot.notify.notified() => {}
                    _ = token.cancelled() => return,
                }
            }
        }
    };
    let writer = tokio::spawn(writer.in_current_span());

    let mut log = shared.spec.log.buffer(conn, Some(&slot.name));
    let why = loop {
        if let Err(e) = opener.open(&mut wire, &mut plain) {
            warn!(conn, peer = %addr, name = %slot.name, cause = %e, "peer link broken: closing");
            break "a frame failed authentication";
        }
        if !plain.is_empty() {
            log.stamp();
            let (input, ticket) = {
                let mut node = shared.node();
                let log_lines = shared.spec.log_lines;
                let (now, wall) = (Instant::now(), Timestamp::now());
                let input = node.handle_link_input(id, epoch, &plain, now, wall, |line| {
                    if log_lines {
                        log.line(Dir::PeerIn, line);
                    }
                });
                log_events(&shared, &mut node);
                (input, shared.journal(&mut node))
            };
            plain.advance(input.consumed);
            if input.transmit {
                slot.notify.notify_one();
            }
            if input.stored {
                shared.notify_links(Some(id));
            }
            shared.spec.log.submit(&mut log).await;
            if let (Some(t), Some(store)) = (ticket, &shared.store) {
                // Peers' records are journaled like clients'; a link reads on only while the journal
                // keeps up, so a slow disk slows the catch-up instead of growing memory.
                store.keep_up(t).await;
            }
            if let Some(closing) = input.close {
                break closing.as_str();
            }
        }
        wire.reserve(16 * 1024);
        let read = tokio::select! {
            r = rd.read_buf(&mut wire) => r,
            // Cancelled by a newer link, by the node's keep-alive verdict, or by shutdown.
            _ = token.cancelled() => break if shared.shutdown.is_cancelled() {
                "shutting down"
            } else if shared.node().link_status(id).closing {
                "silent too long"
            } else {
                "replaced by a newer link"
            },
        };
        match read {
            Ok(0) => break "closed by peer",
            Ok(_) => {}
            Err(_) => break "read error",
        }
    };
    token.cancel();
    let _ = writer.await;
    {
        let mut node = shared.node();
        node.link_down(id, epoch, Instant::now());
        log_events(&shared, &mut node);
    }
    shared.timers.notify_one();
    {
        let mut current = slot.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|t| t.is_cancelled()) {
            *current = None;
            *slot.live.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }
    info!(target: SUMMARY, "{} link to {} down ({why})", shared.spec.name, slot.name);
    info!(conn, peer = %addr, name = %slot.name, reason = why, "peer link down");
}

/// Logs what the node has to say about its links: a catch-up as info, a periodic check that had to
/// repair something as a warning with its size (flooding should have prevented it), lines refused or
/// out of place as warnings naming the peer.
fn log_events(shared: &Shared, node: &mut Node) {
    while let Some(event) = node.poll_event() {
        // Warnings about a link's lines are rate-limited per the link's address.
        let link = match &event {
            // A quarantine is said every time: it is rate-limited by its own doubling period.
            LinkEvent::Reconciled(_)
            | LinkEvent::Refused { .. }
            | LinkEvent::Quarantined { .. } => None,
            LinkEvent::Foreign { link, .. }
            | LinkEvent::ForeignTotal { link, .. }
            | LinkEvent::RecordRefused { link, .. }
            | LinkEvent::RefusedTotal { link, .. }
            | LinkEvent::Unexpected { link, .. }
            | LinkEvent::Broken { link, .. }
            | LinkEvent::TooLong { link } => Some(*link),
        };
        if let Some(link) = link {
            let live = *shared.peers[link]
                .live
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let ip = live.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
            if !shared.warn_ok(WarnKind::PeerLine, ip) {
                continue;
            }
        }
        match event {
            LinkEvent::Reconciled(r) => {
                let peer = &shared.peers[r.link].name;
                if !r.periodic {
                    info!(peer = %peer, sent = r.sent, received = r.received, turns = r.turns,
                        bytes = r.bytes, "caught up with peer by reconciliation");
                } else if r.sent + r.received > 0 {
                    warn!(peer = %peer, sent = r.sent, received = r.received, turns = r.turns,
                        bytes = r.bytes, "periodic check found the link diverged; repaired");
                }
            }
            LinkEvent::Foreign { link, line } => {
                warn!(peer = %shared.peers[link].name, line = %show(&line),
                    "refused a record naming a server outside the herd");
            }
            LinkEvent::ForeignTotal { link, count } => {
                warn!(peer = %shared.peers[link].name, count,
                    "refused records naming servers outside the herd");
            }
            LinkEvent::RecordRefused { link, limit, line } => {
                warn!(peer = %shared.peers[link].name, limit = %limit, line = %show(&line),
                    "refused a peer's record past a limit (more are counted, and totalled when the link goes down)");
            }
            LinkEvent::RefusedTotal { link, counts } => {
                warn!(peer = %shared.peers[link].name, refused = %counts,
                    "refused peer records past limits");
            }
            LinkEvent::Unexpected { link, line, cause } => match cause {
                Some(e) => warn!(peer = %shared.peers[link].name, line = %show(&line),
                    cause = %e, "invalid peer line"),
                None => warn!(peer = %shared.peers[link].name, line = %show(&line),
                    "unexpected peer line"),
            },
            LinkEvent::Broken { link, line, cause } => {
                warn!(peer = %shared.peers[link].name, line = %show(&line), cause = %cause,
                    "peer broke reconciliation: closing (the catch-up runs again when the link is back)");
            }
            LinkEvent::Refused { link, reason } => {
                warn!(peer = %shared.peers[link].name, reason = %show(&reason),
                    "peer refused the link");
                if Refusal::from_word(&reason) == Some(Refusal::LinkUp) {
                    warn!(target: SUMMARY,
                        "{} refused the link: a link from another server named {} is up there (two servers claim the name {})",
                        shared.peers[link].name, shared.spec.name, shared.spec.name);
                }
            }
            LinkEvent::TooLong { link } => {
                warn!(peer = %shared.peers[link].name, "peer line too long: closing");
            }
            LinkEvent::Quarantined {
                link,
                cause,
                strikes,
                period,
            } => {
                let name = &shared.peers[link].name;
                let addr = *shared.peers[link]
                    .live
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let addr = addr.map_or_else(|| "-".to_string(), |a| a.to_string());
                warn!(target: SUMMARY,
                    "closing the link to {name} ({addr}): {cause}; greetings as {name} are refused for {period:?}");
                warn!(peer = %name, addr = %addr, cause = %cause, hard = strikes.hard,
                    soft = strikes.soft, quarantine_ms = period.as_millis() as u64,
                    "peer misbehaving: link closed and its name quarantined");
            }
        }
    }
}
