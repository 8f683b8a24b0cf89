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
use herd_proto::{ErrorKind, PeerMessage, Timestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::driver::node_handle::LinkSlot;
use crate::driver::shared::Shared;
use crate::driver::warnings::WarnKind;
use crate::log::{show, Dir, SUMMARY};
use crate::node::conduct::Strikes;
use crate::node::handshake::{Established, Failure, Greeting, Opener, Refusal, Sealer, Verdict};
use crate::node::sync::Report;
use crate::node::{Closing, LinkAction, LinkEvent, Node};

/// A dial's TCP connect must be done within this (the greeting then has its own deadline,
/// [`Greeting::poll_timeout`]).
const CONNECT: Duration = Duration::from_secs(5);
/// Records per write while catching up or draining a backlog.
const BATCH: usize = 1024;

/// Carries out the node's link decisions (`Node::handle_timeout`) when they are due: dial, close,
/// and wake a link that has a keep-alive or a periodic check to send. Sleeps until the node's next
/// deadline, or until a link goes up or down or a dial fails (`NodeHandle::wake_timers`).
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
                    shared.life.tracker.spawn(dial(s, id).in_current_span());
                }
                LinkAction::Transmit(id) => shared.node.link(id).notify.notify_one(),
                LinkAction::Close(id) => {
                    let slot = shared.node.link(id);
                    info!(peer = %slot.name, "peer link silent too long; closing");
                    slot.close();
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
            _ = shared.node.timers_moved() => {}
            _ = shared.life.shutdown.cancelled() => return,
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
        let verdict = greeting.feed(input, &*shared.node, Instant::now(), &mut out);
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
    let addr = shared.node.link(id).addr.clone();
    let name = shared.node.link(id).name.clone();
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
            shared.node.wake_timers();
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
            if shared.gate.warn_ok(WarnKind::Greeting, addr.ip()) {
                warn!(conn, peer = %addr, cause = %e, "refused peer greeting");
            }
            let _ = stream.shutdown().await;
        }
    }
}

/// One running link: which neighbour, from where, under which link epoch of the node.
#[derive(Clone)]
struct RunningLink {
    shared: Arc<Shared>,
    id: usize,
    epoch: u64,
    conn: u64,
    addr: SocketAddr,
}

impl RunningLink {
    fn slot(&self) -> &LinkSlot {
        self.shared.node.link(self.id)
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
    wire: BytesMut,
) {
    let id = est.link;
    let Established {
        authenticated,
        channel,
        ..
    } = est;
    let (mut sealer, opener, plain) = (channel.sealer, channel.opener, channel.first);
    let (rd, mut wr) = stream.into_split();
    let up = shared.node().try_link_up(id, Instant::now(), authenticated);
    let epoch = match up {
        Ok(epoch) => epoch,
        Err(refusal) => {
            say_refused(&shared, id, conn, addr, authenticated, refusal);
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
    let link = RunningLink {
        shared,
        id,
        epoch,
        conn,
        addr,
    };
    let token = link_up(&link, authenticated);
    let writer = write_link(link.clone(), sealer, wr, token.clone());
    let writer = tokio::spawn(writer.in_current_span());
    let why = read_link(&link, rd, opener, wire, plain, &token).await;
    token.cancel();
    let _ = writer.await;
    link_down(&link, why);
}

/// Says why the node refused the link of neighbour `id` from `addr`, when the neighbour's link is
/// up and alive: a name clash when the newcomer proved the herd's secret.
fn say_refused(
    shared: &Shared,
    id: usize,
    conn: u64,
    addr: SocketAddr,
    authenticated: bool,
    refusal: Refusal,
) {
    let slot = shared.node.link(id);
    match slot.live() {
        // It proved the herd's secret, yet the neighbour by that name answers on its link:
        // two processes serve one name (or a peer holding the secret greets as another).
        Some(live) if authenticated && shared.gate.warn_ok(WarnKind::NameClash, addr.ip()) => {
            warn!(target: SUMMARY,
                "two servers claim the name {}: {live} and {addr} (the link from {live} is up and answers; {addr} is refused)",
                slot.name);
            warn!(conn, peer = %addr, name = %slot.name, live = %live,
                "two servers claim the name {}: {live} and {addr}", slot.name);
        }
        Some(_) if authenticated => {}
        _ => {
            if shared.gate.warn_ok(WarnKind::Greeting, addr.ip()) {
                warn!(conn, peer = %addr, name = %slot.name, refusal = refusal.word(),
                    "refused peer link: the link to this neighbour is up and alive");
            }
        }
    }
}

/// The node took the link: it now serves its neighbour (a link it replaces is cancelled), the
/// timers and the writer are woken, and it is said. Returns the token that ends the link.
fn link_up(link: &RunningLink, authenticated: bool) -> CancellationToken {
    let shared = &link.shared;
    let slot = link.slot();
    shared.node.wake_timers();
    let token = shared.life.shutdown.child_token();
    slot.serve(token.clone(), link.addr);
    slot.notify.notify_one();
    let kind = if authenticated { "encrypted" } else { "plain" };
    info!(target: SUMMARY, "{} link to {} up ({kind})", shared.spec.name, slot.name);
    info!(conn = link.conn, peer = %link.addr, name = %slot.name, channel = kind, "peer link up");
    token
}

/// The link's writer: sends what the node gives for it, sealed, until `token` is cancelled or a
/// write fails. Woken by the node's timers (keep-alive, check), by the reader (an answer), or by a
/// record stored from elsewhere.
async fn write_link(
    link: RunningLink,
    mut sealer: Sealer,
    mut wr: OwnedWriteHalf,
    token: CancellationToken,
) {
    let shared = &link.shared;
    let slot = link.slot();
    let mut out = Vec::with_capacity(64 * 1024);
    let mut sealed = Vec::new();
    let mut log = shared.spec.log.buffer(link.conn, Some(&slot.name));
    loop {
        out.clear();
        let (n, working) = {
            let mut node = shared.node();
            let n = node.poll_transmit(link.id, link.epoch, &mut out, BATCH);
            log_events(shared, &mut node);
            (n, out.is_empty() && node.working(link.id, link.epoch))
        };
        if working {
            // Reconciliation work is done a slice a call: let others have the node.
            tokio::task::yield_now().await;
            continue;
        }
        if out.is_empty() {
            tokio::select! {
                _ = slot.notify.notified() => continue,
                _ = token.cancelled() => return,
            }
        }
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
        shared.node().sent(link.id, Instant::now());
    }
}

/// The link's reader: opens what the socket brings and hands the plain bytes to the node, until
/// the link ends; returns why it ended.
async fn read_link(
    link: &RunningLink,
    mut rd: OwnedReadHalf,
    mut opener: Opener,
    mut wire: BytesMut,
    mut plain: BytesMut,
    token: &CancellationToken,
) -> &'static str {
    let shared = &link.shared;
    let slot = link.slot();
    let mut log = shared.spec.log.buffer(link.conn, Some(&slot.name));
    loop {
        if let Err(e) = opener.open(&mut wire, &mut plain) {
            warn!(conn = link.conn, peer = %link.addr, name = %slot.name, cause = %e, "peer link broken: closing");
            return "a frame failed authentication";
        }
        if !plain.is_empty() {
            if let Some(closing) = take_input(link, &mut plain, &mut log).await {
                return closing;
            }
        }
        wire.reserve(16 * 1024);
        let read = tokio::select! {
            r = rd.read_buf(&mut wire) => r,
            // Cancelled by a newer link, by the node's keep-alive verdict, or by shutdown.
            _ = token.cancelled() => return if shared.life.shutdown.is_cancelled() {
                "shutting down"
            } else if shared.node().link_status(link.id).closing {
                "silent too long"
            } else {
                "replaced by a newer link"
            },
        };
        match read {
            Ok(0) => return "closed by peer",
            Ok(_) => {}
            Err(_) => return "read error",
        }
    }
}

/// Hands the link's plain bytes to the node (which decodes and dispatches each line), wakes the
/// links that have something to send, and waits while the journal falls behind. Returns why the
/// link must close, if the node says so.
async fn take_input(
    link: &RunningLink,
    plain: &mut BytesMut,
    log: &mut crate::log::LogBuf,
) -> Option<&'static str> {
    let shared = &link.shared;
    log.stamp();
    let (input, ticket) = {
        let mut node = shared.node();
        let log_lines = shared.spec.log_lines;
        let (now, wall) = (Instant::now(), Timestamp::now());
        let input = node.handle_link_input(link.id, link.epoch, plain, now, wall, |line| {
            if log_lines {
                log.line(Dir::PeerIn, line);
            }
        });
        log_events(shared, &mut node);
        (input, shared.journal(&mut node))
    };
    plain.advance(input.consumed);
    if input.transmit {
        link.slot().notify.notify_one();
    }
    if input.stored {
        shared.notify_links(Some(link.id));
    }
    shared.spec.log.submit(log).await;
    if let (Some(t), Some(store)) = (ticket, &shared.store) {
        // Peers' records are journaled like clients'; a link reads on only while the journal
        // keeps up, so a slow disk slows the catch-up instead of growing memory.
        store.keep_up(t).await;
    }
    input.close.map(|closing| closing.as_str())
}

/// The link ended for `why`: the node is told, the timers woken, the slot freed (unless a newer link
/// serves the neighbour), and it is said.
fn link_down(link: &RunningLink, why: &str) {
    let shared = &link.shared;
    let slot = link.slot();
    {
        let mut node = shared.node();
        node.link_down(link.id, link.epoch, Instant::now());
        log_events(shared, &mut node);
    }
    shared.node.wake_timers();
    slot.ended();
    info!(target: SUMMARY, "{} link to {} down ({why})", shared.spec.name, slot.name);
    info!(conn = link.conn, peer = %link.addr, name = %slot.name, reason = why, "peer link down");
}

/// Logs what the node has to say about its links. Warnings about a link's lines are rate-limited
/// per the link's address; a quarantine is said every time (its own doubling period limits it).
fn log_events(shared: &Shared, node: &mut Node) {
    while let Some(event) = node.poll_event() {
        let link = match &event {
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
            let live = shared.node.link(link).live();
            let ip = live.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
            if !shared.gate.warn_ok(WarnKind::PeerLine, ip) {
                continue;
            }
        }
        log_event(shared, event);
    }
}

/// Logs one of the node's link events: a catch-up as info, a periodic check that had to repair
/// something as a warning with its size (flooding should have prevented it), lines refused or out
/// of place as warnings naming the peer.
fn log_event(shared: &Shared, event: LinkEvent) {
    let name = |link: usize| &shared.node.link(link).name;
    match event {
        LinkEvent::Reconciled(r) => say_reconciled(name(r.link), &r),
        LinkEvent::Quarantined {
            link,
            cause,
            strikes,
            period,
        } => {
            let slot = shared.node.link(link);
            let addr = slot
                .live()
                .map_or_else(|| "-".to_string(), |a| a.to_string());
            say_quarantined(&slot.name, &addr, cause, strikes, period);
        }
        LinkEvent::Foreign { link, line } => {
            warn!(peer = %name(link), line = %show(&line),
                "refused a record naming a server outside the herd");
        }
        LinkEvent::ForeignTotal { link, count } => {
            warn!(peer = %name(link), count, "refused records naming servers outside the herd");
        }
        LinkEvent::RecordRefused { link, limit, line } => {
            warn!(peer = %name(link), limit = %limit, line = %show(&line),
                "refused a peer's record past a limit (more are counted, and totalled when the link goes down)");
        }
        LinkEvent::RefusedTotal { link, counts } => {
            warn!(peer = %name(link), refused = %counts, "refused peer records past limits");
        }
        LinkEvent::Unexpected { link, line, cause } => match cause {
            Some(e) => {
                warn!(peer = %name(link), line = %show(&line), cause = %e, "invalid peer line")
            }
            None => warn!(peer = %name(link), line = %show(&line), "unexpected peer line"),
        },
        LinkEvent::Broken { link, line, cause } => {
            warn!(peer = %name(link), line = %show(&line), cause = %cause,
                "peer broke reconciliation: closing (the catch-up runs again when the link is back)");
        }
        LinkEvent::Refused { link, reason } => {
            warn!(peer = %name(link), reason = %show(&reason), "peer refused the link");
            if Refusal::from_word(&reason) == Some(Refusal::LinkUp) {
                warn!(target: SUMMARY,
                    "{} refused the link: a link from another server named {} is up there (two servers claim the name {})",
                    name(link), shared.spec.name, shared.spec.name);
            }
        }
        LinkEvent::TooLong { link } => {
            warn!(peer = %name(link), "peer line too long: closing");
        }
    }
}

/// Says a catch-up as info, and a periodic check that had to repair something as a warning with its
/// size (flooding should have prevented it).
fn say_reconciled(peer: &str, r: &Report) {
    if !r.periodic {
        info!(peer = %peer, sent = r.sent, received = r.received, turns = r.turns,
            bytes = r.bytes, "caught up with peer by reconciliation");
    } else if r.sent + r.received > 0 {
        warn!(peer = %peer, sent = r.sent, received = r.received, turns = r.turns,
            bytes = r.bytes, "periodic check found the link diverged; repaired");
    }
}

/// Says, on the summary and in the log, that the node closed the link to `name` (at `addr`) for
/// `cause` and quarantines its name for `period`.
fn say_quarantined(name: &str, addr: &str, cause: Closing, strikes: Strikes, period: Duration) {
    warn!(target: SUMMARY,
        "closing the link to {name} ({addr}): {cause}; greetings as {name} are refused for {period:?}");
    warn!(peer = %name, addr = %addr, cause = %cause, hard = strikes.hard,
        soft = strikes.soft, quarantine_ms = period.as_millis() as u64,
        "peer misbehaving: link closed and its name quarantined");
}

/// The neighbour name in a greeting line, `HERD-HELLO <version> <name> …`, if it is one.
pub(crate) fn greeting_name(line: &[u8]) -> Option<&[u8]> {
    let mut words = line
        .split(|&b| herd_proto::is_whitespace(b))
        .filter(|w| !w.is_empty());
    if words.next()? != b"HERD-HELLO" {
        return None;
    }
    words.next()?;
    words.next()
}

/// A peer's greeting, read as the first line of a connection.
pub(crate) type Hello = Bytes;

/// Whether a connection's first line is a peer greeting (of this version or another, so another
/// version is refused as such rather than answered as a client line).
pub(crate) fn is_hello(line: &[u8]) -> bool {
    match PeerMessage::parse(line) {
        Ok(PeerMessage::Hello { .. }) => true,
        Err(e) => e.kind == ErrorKind::Version,
        Ok(_) => false,
    }
}
