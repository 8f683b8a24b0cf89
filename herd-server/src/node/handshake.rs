//! The peer greeting as a sans-IO state machine, and the secure channel it sets up.
//!
//! Like quinn-proto's handshake, this owns no socket and no clock: the driver feeds it the bytes a
//! connection received ([`Greeting::feed`]) and sends what it writes to `out`, until the verdict is
//! [`Verdict::Established`] (run the link with the [`Channel`] it carries) or [`Verdict::Failed`]
//! (send what is in `out`, close, log). The simulation feeds it from an adversary instead.
//!
//! # Trust
//! With a secret, the greeting is a Noise `NNpsk0` handshake (`snow`: X25519, ChaCha20-Poly1305,
//! BLAKE2s) keyed with a pre-shared key derived from the herd secret, whose prologue binds the peer
//! protocol version, the dialer's name and the acceptor's name. So:
//! - only a server that knows a secret of the herd can produce or answer a greeting, and the secret
//!   never crosses the wire (the transcript is bound to fresh ephemeral keys of both sides, which play
//!   the part of both nonces);
//! - a greeting relayed to another server, or reflected back to its sender, fails: the names and the
//!   direction it was made for are in the prologue, and the Noise roles are fixed;
//! - the acceptor treats the link as authenticated only when the dialer's first encrypted frame opens
//!   with the fresh keys, so a replayed greeting (whose ephemeral key the replayer does not hold)
//!   never comes up;
//! - everything after the greeting is carried in the channel: each frame is authenticated and bound
//!   to its position by the nonce counter, so a byte changed, a line injected or a frame replayed,
//!   reordered or dropped fails to open and breaks the link.
//!
//! The rules about *who* may link (a neighbour, from the side that dials, never disturbing a live link
//! unless authenticated) are the node's ([`Node::admit_hello`]); this module asks it.
//!
//! Several secrets may be configured ([`Keyring`]): the dialer proves with the one the node picks
//! (the first, then the others in turn after `bad-proof` refusals, so a herd in the middle of a
//! rotation still links), and the acceptor accepts any.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use herd_proto::{ErrorKind, Frame, Framer, PeerMessage, PEER_VERSION};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use snow::{HandshakeState, StatelessTransportState};

use crate::node::Node;

/// The Noise protocol of the channel.
const PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Longest greeting line: names of up to a client line, plus a short handshake message.
const GREETING_MAX: usize = 8 * 1024;
/// A greeting must reach its verdict within this of its first step ([`Greeting::poll_timeout`]): a
/// peer that opens one and goes quiet holds a connection for no longer.
pub const GREETING_TIME: Duration = Duration::from_secs(5);
/// Authentication tag per frame.
const TAG: usize = 16;
/// Largest Noise message, so the largest frame body.
const MAX_FRAME: usize = 65535;
/// Most plaintext bytes per frame.
const MAX_PLAIN: usize = MAX_FRAME - TAG;

/// The herd's secrets as 32-byte pre-shared keys: the first proves, any is accepted.
#[derive(Clone, Default)]
pub struct Keyring {
    keys: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Keyring {
    /// Never prints a key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({} keys)", self.keys.len())
    }
}

impl Keyring {
    /// Derives one key per secret (HMAC-SHA256 under a fixed label), in order.
    pub fn new<S: AsRef<[u8]>>(secrets: &[S]) -> Self {
        let keys = secrets
            .iter()
            .map(|s| {
                let mut mac = Hmac::<Sha256>::new_from_slice(b"herd peer link psk v2")
                    .expect("HMAC takes a key of any length");
                mac.update(s.as_ref());
                mac.finalize().into_bytes().into()
            })
            .collect();
        Keyring { keys }
    }

    /// No secret: links are not authenticated, and carry plain lines.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many secrets.
    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

/// What the handshake binds besides the key: the version, the dialer's and the acceptor's names.
fn prologue(dialer: &[u8], acceptor: &[u8]) -> Vec<u8> {
    let mut p = format!("herd-peer {PEER_VERSION}\n").into_bytes();
    p.extend_from_slice(dialer);
    p.push(b'\n');
    p.extend_from_slice(acceptor);
    p
}

fn noise(key: &[u8; 32], dialer: &[u8], acceptor: &[u8], initiator: bool) -> HandshakeState {
    let prologue = prologue(dialer, acceptor);
    let builder = snow::Builder::new(PATTERN.parse().expect("a valid Noise pattern"))
        .psk(0, key)
        .and_then(|b| b.prologue(&prologue))
        .expect("a psk and a prologue are accepted once each");
    if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    }
    .expect("NNpsk0 needs nothing but the psk")
}

/// Why a greeting failed. The word ([`Refusal::word`]) goes on the wire in `HERD-REFUSED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Another peer protocol version.
    Version,
    /// The name is not a neighbour of this server.
    UnknownPeer,
    /// The neighbour is the side that accepts, not the one that dials.
    WrongSide,
    /// The greeting was made for another server.
    WrongName,
    /// The handshake does not prove a secret of this herd (or one side has none).
    BadProof,
    /// A link to this neighbour is up and alive (it answers keep-alives): no greeting replaces it,
    /// authenticated or not.
    LinkUp,
    /// The name is quarantined: its last link was closed for misbehaving
    /// ([`crate::node::conduct`]), and greetings claiming it are refused for a while.
    Quarantined,
    /// Not a greeting line, or not the one expected now.
    BadGreeting,
    /// The other side refused (with its own word).
    RefusedByPeer,
}

impl Refusal {
    /// The reason word sent in `HERD-REFUSED`.
    pub fn word(self) -> &'static str {
        match self {
            Refusal::Version => "version",
            Refusal::UnknownPeer => "unknown-peer",
            Refusal::WrongSide => "wrong-side",
            Refusal::WrongName => "wrong-name",
            Refusal::BadProof => "bad-proof",
            Refusal::LinkUp => "link-up",
            Refusal::Quarantined => "quarantined",
            Refusal::BadGreeting => "bad-greeting",
            Refusal::RefusedByPeer => "refused",
        }
    }

    /// The refusal a `HERD-REFUSED` reason word names, if it is one of [`Refusal::word`]'s (a
    /// peer's own word is its own; `refused` is never sent).
    pub fn from_word(word: &[u8]) -> Option<Refusal> {
        [
            Refusal::Version,
            Refusal::UnknownPeer,
            Refusal::WrongSide,
            Refusal::WrongName,
            Refusal::BadProof,
            Refusal::LinkUp,
            Refusal::BadGreeting,
        ]
        .into_iter()
        .find(|r| r.word().as_bytes() == word)
    }
}

/// The end of a greeting that failed: why, and a readable detail for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Why.
    pub refusal: Refusal,
    /// What was seen, for the log (never a secret).
    pub detail: String,
    /// When the peer refused ([`Refusal::RefusedByPeer`]): the refusal its word names, if any.
    pub by_peer: Option<Refusal>,
}

/// A greeting that succeeded.
#[derive(Debug)]
pub struct Established {
    /// The neighbour's link id.
    pub link: usize,
    /// Whether the peer proved a secret (a Noise channel), or the herd has none.
    pub authenticated: bool,
    /// The channel for everything after the greeting.
    pub channel: Channel,
}

/// What became of the bytes fed to a greeting.
#[derive(Debug)]
pub enum Verdict {
    /// More input is needed.
    Pending,
    /// The link may run; bytes left in the input belong to the channel.
    Established(Established),
    /// Close the connection after sending `out` (a `HERD-REFUSED` when this side refused).
    Failed(Failure),
}

#[derive(Debug)]
enum GreetState {
    /// Dialer: `HERD-HELLO` sent, waiting for `HERD-WELCOME`.
    Hello {
        link: usize,
        peer: Box<[u8]>,
        noise: Option<Box<HandshakeState>>,
    },
    /// Acceptor: waiting for `HERD-HELLO`.
    Listen,
    /// Acceptor: `HERD-WELCOME` sent, waiting for the dialer's first frame.
    Confirm {
        link: usize,
        transport: Arc<StatelessTransportState>,
    },
    /// Over: established or failed.
    Done,
}

/// One side of a peer greeting.
#[derive(Debug)]
pub struct Greeting {
    me: Box<[u8]>,
    keyring: Keyring,
    lines: Framer,
    state: GreetState,
    /// When [`Greeting::feed`] was first called.
    started: Option<Instant>,
}

impl Greeting {
    /// Starts dialling neighbour `peer` (link `link`), proving with secret number `key` of the keyring
    /// (taken modulo its length): writes the `HERD-HELLO` line to `out`.
    pub fn dial(
        me: &[u8],
        peer: &[u8],
        link: usize,
        keyring: &Keyring,
        key: usize,
        out: &mut Vec<u8>,
    ) -> Self {
        let mut handshake = b"-".to_vec();
        let noise = (!keyring.is_empty()).then(|| {
            let mut hs = noise(&keyring.keys[key % keyring.len()], me, peer, true);
            let mut msg = [0u8; 256];
            let n = hs
                .write_message(&[], &mut msg)
                .expect("the first NNpsk0 message fits");
            handshake = hex::encode(&msg[..n]).into_bytes();
            Box::new(hs)
        });
        write_line(
            &PeerMessage::Hello {
                version: PEER_VERSION,
                name: me.into(),
                to: peer.into(),
                handshake: handshake.into(),
            },
            out,
        );
        Greeting {
            me: me.into(),
            keyring: keyring.clone(),
            lines: Framer::new(GREETING_MAX),
            started: None,
            state: GreetState::Hello {
                link,
                peer: peer.into(),
                noise,
            },
        }
    }

    /// Waits for a `HERD-HELLO` on an accepted connection.
    pub fn accept(me: &[u8], keyring: &Keyring) -> Self {
        Greeting {
            me: me.into(),
            keyring: keyring.clone(),
            lines: Framer::new(GREETING_MAX),
            started: None,
            state: GreetState::Listen,
        }
    }

    /// When the greeting has run out of time (from its first [`Greeting::feed`]): the driver closes
    /// the connection then. `None` before the first feed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.started.map(|at| at + GREETING_TIME)
    }

    /// Feeds received bytes (taking what it uses from `input`), writing what to send to `out`.
    /// `node` answers who may link, as of `now` (the node itself, or the driver's lock around it:
    /// then it is locked only for that answer, never across the handshake's cryptography). After [`Verdict::Established`], what is left in
    /// `input` is the start of the channel.
    pub fn feed(
        &mut self,
        input: &mut BytesMut,
        node: &impl Admit,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Verdict {
        self.started.get_or_insert(now);
        loop {
            if let GreetState::Confirm { link, transport } = &self.state {
                let (link, transport) = (*link, transport.clone());
                return self.confirm(link, transport, input, out);
            }
            if matches!(self.state, GreetState::Done) {
                return Verdict::Pending;
            }
            let line = match self.next_line(input, out) {
                ControlFlow::Continue(line) => line,
                ControlFlow::Break(verdict) => return verdict,
            };
            let verdict = self.on_line(&line, node, now, out);
            if !matches!(verdict, Verdict::Pending) {
                return verdict;
            }
        }
    }

    /// The next greeting line taken from `input`, or what to answer when there is none yet (more
    /// input needed) or it is too long for a greeting.
    fn next_line(
        &mut self,
        input: &mut BytesMut,
        out: &mut Vec<u8>,
    ) -> ControlFlow<Verdict, Bytes> {
        match self.lines.next(input) {
            Frame::Line { line, consumed } => {
                ControlFlow::Continue(input.split_to(consumed).freeze().slice(line))
            }
            Frame::TooLong { consumed, .. } => {
                input.advance(consumed);
                ControlFlow::Break(self.fail(Refusal::BadGreeting, "over-long line".into(), out))
            }
            Frame::Partial { consumed } => {
                input.advance(consumed);
                ControlFlow::Break(Verdict::Pending)
            }
            _ => ControlFlow::Break(Verdict::Pending),
        }
    }

    /// One greeting line: a refusal ends the greeting, a HELLO is answered by the acceptor, a
    /// WELCOME read by the dialer; anything else — another version's HELLO included — is refused.
    fn on_line(
        &mut self,
        line: &[u8],
        node: &impl Admit,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Verdict {
        match PeerMessage::parse(line) {
            Ok(PeerMessage::Refused { reason }) => {
                self.state = GreetState::Done;
                Verdict::Failed(Failure {
                    refusal: Refusal::RefusedByPeer,
                    detail: show(&reason),
                    by_peer: Refusal::from_word(&reason),
                })
            }
            Ok(PeerMessage::Hello {
                name,
                to,
                handshake,
                ..
            }) if matches!(self.state, GreetState::Listen) => {
                self.on_hello(&name, &to, &handshake, node, now, out)
            }
            Ok(PeerMessage::Welcome { name, handshake })
                if matches!(self.state, GreetState::Hello { .. }) =>
            {
                self.on_welcome(&name, &handshake, out)
            }
            Err(e) if e.kind == ErrorKind::Version && line.starts_with(b"HERD-HELLO") => {
                self.fail(Refusal::Version, show(line), out)
            }
            _ => self.fail(Refusal::BadGreeting, show(line), out),
        }
    }

    /// Acceptor, after its WELCOME: the dialer's first frame (empty) is its proof — only the holder
    /// of the dialer's ephemeral key can seal it. What follows it in the frame's read is the channel's.
    fn confirm(
        &mut self,
        link: usize,
        transport: Arc<StatelessTransportState>,
        input: &mut BytesMut,
        out: &mut Vec<u8>,
    ) -> Verdict {
        let mut opener = Opener::secure(transport.clone());
        let mut first = BytesMut::new();
        match opener.open_one(input, &mut first) {
            Ok(false) => Verdict::Pending,
            Ok(true) => {
                self.state = GreetState::Done;
                Verdict::Established(Established {
                    link,
                    authenticated: true,
                    channel: Channel {
                        sealer: Sealer::secure(transport),
                        opener,
                        first,
                    },
                })
            }
            Err(e) => self.fail(Refusal::BadProof, format!("first frame: {e}"), out),
        }
    }

    /// Acceptor: a HELLO. The node says whether this name may link now; then the greeting is
    /// answered plainly (no secret here) or with the proof of a secret of the keyring.
    fn on_hello(
        &mut self,
        name: &[u8],
        to: &[u8],
        handshake: &[u8],
        node: &impl Admit,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Verdict {
        let authenticated = !self.keyring.is_empty();
        let link = match node.admit_hello(name, to, authenticated, now) {
            Ok(link) => link,
            Err(r) => return self.fail(r, format!("greeting as {}", show(name)), out),
        };
        if authenticated {
            self.prove_hello(link, name, handshake, out)
        } else {
            self.welcome_plain(link, handshake, out)
        }
    }

    /// Acceptor without a secret: a dialer that offers a proof holds a secret this server lacks;
    /// one without is welcomed and the link runs plain.
    fn welcome_plain(&mut self, link: usize, handshake: &[u8], out: &mut Vec<u8>) -> Verdict {
        if handshake != b"-" {
            return self.no_secret_here(out);
        }
        write_line(
            &PeerMessage::Welcome {
                name: self.me.as_ref().into(),
                handshake: b"-"[..].into(),
            },
            out,
        );
        self.state = GreetState::Done;
        Verdict::Established(Established {
            link,
            authenticated: false,
            channel: Channel::plain(),
        })
    }

    /// Acceptor with secrets: the dialer's handshake message must open with one key of the keyring
    /// (tried in turn, so secrets can be rotated); the WELCOME carries this side's answer, and the
    /// link waits for the dialer's first frame ([`Greeting::confirm`]).
    fn prove_hello(
        &mut self,
        link: usize,
        name: &[u8],
        handshake: &[u8],
        out: &mut Vec<u8>,
    ) -> Verdict {
        let Some(msg) = hex::decode(handshake).ok().filter(|m| m.len() <= 256) else {
            return self.fail(Refusal::BadProof, "no handshake".into(), out);
        };
        let mut payload = [0u8; 256];
        for key in &self.keyring.keys {
            let mut hs = noise(key, name, &self.me, false);
            if hs.read_message(&msg, &mut payload).is_err() {
                continue;
            }
            let mut reply = [0u8; 256];
            let Ok(n) = hs.write_message(&[], &mut reply) else {
                break;
            };
            let Ok(transport) = hs.into_stateless_transport_mode() else {
                break;
            };
            write_line(
                &PeerMessage::Welcome {
                    name: self.me.as_ref().into(),
                    handshake: hex::encode(&reply[..n]).into_bytes().into(),
                },
                out,
            );
            self.state = GreetState::Confirm {
                link,
                transport: Arc::new(transport),
            };
            return Verdict::Pending;
        }
        self.fail(
            Refusal::BadProof,
            format!("{} proved no secret of this herd", show(name)),
            out,
        )
    }

    /// Dialer: the WELCOME must come from the server dialled; then the link runs plain (neither
    /// side has a secret) or the acceptor's answer must complete the handshake.
    fn on_welcome(&mut self, name: &[u8], handshake: &[u8], out: &mut Vec<u8>) -> Verdict {
        let GreetState::Hello { link, peer, noise } =
            std::mem::replace(&mut self.state, GreetState::Done)
        else {
            unreachable!("checked by the caller");
        };
        if name != &*peer {
            return self.fail(
                Refusal::WrongName,
                format!("answered as {}, not {}", show(name), show(&peer)),
                out,
            );
        }
        match noise {
            Some(hs) => self.finish_dial(link, name, *hs, handshake, out),
            None if handshake != b"-" => self.no_secret_here(out),
            None => Verdict::Established(Established {
                link,
                authenticated: false,
                channel: Channel::plain(),
            }),
        }
    }

    /// Dialer with a secret: the acceptor's handshake message must open, proving it holds the same
    /// secret; then this side sends its first frame (empty), which convinces the acceptor.
    fn finish_dial(
        &mut self,
        link: usize,
        name: &[u8],
        mut hs: HandshakeState,
        handshake: &[u8],
        out: &mut Vec<u8>,
    ) -> Verdict {
        let mut payload = [0u8; 256];
        let opened = hex::decode(handshake)
            .ok()
            .filter(|m| m.len() <= 256)
            .is_some_and(|m| hs.read_message(&m, &mut payload).is_ok());
        let transport = match hs.into_stateless_transport_mode() {
            Ok(t) if opened => Arc::new(t),
            _ => {
                return self.fail(
                    Refusal::BadProof,
                    format!("{} proved no secret of this herd", show(name)),
                    out,
                )
            }
        };
        let mut sealer = Sealer::secure(transport.clone());
        // The first frame (empty) is what convinces the acceptor: only the holder of this side's
        // ephemeral key can make it.
        sealer.seal_frame(&[], out);
        Verdict::Established(Established {
            link,
            authenticated: true,
            channel: Channel {
                sealer,
                opener: Opener::secure(transport),
                first: BytesMut::new(),
            },
        })
    }

    /// The other side offers a proof of a secret, and this side has none: refused, as a bad proof.
    fn no_secret_here(&mut self, out: &mut Vec<u8>) -> Verdict {
        self.fail(
            Refusal::BadProof,
            "it has a secret, this server none".into(),
            out,
        )
    }

    fn fail(&mut self, refusal: Refusal, detail: String, out: &mut Vec<u8>) -> Verdict {
        self.state = GreetState::Done;
        if refusal != Refusal::RefusedByPeer {
            write_line(
                &PeerMessage::Refused {
                    reason: refusal.word().as_bytes().into(),
                },
                out,
            );
        }
        Verdict::Failed(Failure {
            refusal,
            detail,
            by_peer: None,
        })
    }
}

/// Who may link: [`Node::admit_hello`], asked by a greeting for the moment of its answer.
pub trait Admit {
    /// As [`Node::admit_hello`].
    ///
    /// # Errors
    /// The refusal the greeting gets.
    fn admit_hello(
        &self,
        name: &[u8],
        to: &[u8],
        authenticated: bool,
        now: Instant,
    ) -> Result<usize, Refusal>;
}

impl Admit for Node {
    fn admit_hello(
        &self,
        name: &[u8],
        to: &[u8],
        authenticated: bool,
        now: Instant,
    ) -> Result<usize, Refusal> {
        Node::admit_hello(self, name, to, authenticated, now)
    }
}

/// The node behind a lock, locked only while it answers.
impl Admit for std::sync::Mutex<Node> {
    fn admit_hello(
        &self,
        name: &[u8],
        to: &[u8],
        authenticated: bool,
        now: Instant,
    ) -> Result<usize, Refusal> {
        let node = self.lock().unwrap_or_else(|p| p.into_inner());
        node.admit_hello(name, to, authenticated, now)
    }
}

fn write_line(m: &PeerMessage<'_>, out: &mut Vec<u8>) {
    m.write_to(out);
    out.push(b'\n');
}

/// A line for a log: printable, cut short.
fn show(b: &[u8]) -> String {
    let s = b[..b.len().min(200)].escape_ascii().to_string();
    if b.len() > 200 {
        s + "…"
    } else {
        s
    }
}

/// Why the channel broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// A frame failed authentication: changed, injected, replayed, reordered or from another key.
    #[error("a frame failed authentication (changed, injected, replayed or out of order)")]
    Forged,
    /// A frame header announced a length no frame can have.
    #[error("a frame header is malformed")]
    Malformed,
}

/// The link's channel: plain lines without a secret, Noise frames with one.
#[derive(Debug)]
pub struct Channel {
    /// Outgoing side.
    pub sealer: Sealer,
    /// Incoming side.
    pub opener: Opener,
    /// Plaintext already opened during the greeting (nothing, so far).
    pub first: BytesMut,
}

impl Channel {
    fn plain() -> Self {
        Channel {
            sealer: Sealer {
                transport: None,
                nonce: 0,
            },
            opener: Opener {
                transport: None,
                nonce: 0,
                scratch: Vec::new(),
            },
            first: BytesMut::new(),
        }
    }

    /// Whether the channel encrypts.
    pub fn is_secure(&self) -> bool {
        self.sealer.transport.is_some()
    }
}

/// The sending half: plaintext in, wire bytes out. Frames are a 2-byte big-endian length, then the
/// Noise message (ciphertext and tag); the nonce is the frame's position, never sent.
#[derive(Debug)]
pub struct Sealer {
    transport: Option<Arc<StatelessTransportState>>,
    nonce: u64,
}

impl Sealer {
    /// The sending half of an encrypted channel, from its first frame.
    fn secure(transport: Arc<StatelessTransportState>) -> Self {
        Sealer {
            transport: Some(transport),
            nonce: 0,
        }
    }

    /// Appends the wire form of `plain` (any number of whole or partial lines) to `wire`.
    pub fn seal(&mut self, plain: &[u8], wire: &mut Vec<u8>) {
        if self.transport.is_none() {
            wire.extend_from_slice(plain);
            return;
        }
        for chunk in plain.chunks(MAX_PLAIN) {
            self.seal_frame(chunk, wire);
        }
    }

    fn seal_frame(&mut self, chunk: &[u8], wire: &mut Vec<u8>) {
        let Some(t) = &self.transport else { return };
        let len = chunk.len() + TAG;
        let start = wire.len();
        wire.extend_from_slice(&(len as u16).to_be_bytes());
        wire.resize(start + 2 + len, 0);
        let n = t
            .write_message(self.nonce, chunk, &mut wire[start + 2..])
            .expect("a chunk of at most MAX_PLAIN bytes fits one frame");
        debug_assert_eq!(n, len);
        self.nonce += 1;
    }
}

/// The receiving half: wire bytes in, plaintext out.
#[derive(Debug)]
pub struct Opener {
    transport: Option<Arc<StatelessTransportState>>,
    nonce: u64,
    scratch: Vec<u8>,
}

impl Opener {
    /// The receiving half of an encrypted channel, from its first frame.
    fn secure(transport: Arc<StatelessTransportState>) -> Self {
        Opener {
            transport: Some(transport),
            nonce: 0,
            scratch: Vec::new(),
        }
    }

    /// Moves every complete frame of `wire` into `plain`, opened; a partial frame stays in `wire`.
    ///
    /// # Errors
    /// A frame that does not open: the link must be closed, and nothing of that frame is used.
    pub fn open(&mut self, wire: &mut BytesMut, plain: &mut BytesMut) -> Result<(), ChannelError> {
        if self.transport.is_none() {
            plain.unsplit(wire.split());
            return Ok(());
        }
        while self.open_one(wire, plain)? {}
        Ok(())
    }

    /// Opens one frame if a whole one is buffered; returns whether it did.
    fn open_one(
        &mut self,
        wire: &mut BytesMut,
        plain: &mut BytesMut,
    ) -> Result<bool, ChannelError> {
        let Some(t) = &self.transport else {
            return Ok(false);
        };
        if wire.len() < 2 {
            return Ok(false);
        }
        let len = usize::from(u16::from_be_bytes([wire[0], wire[1]]));
        if len < TAG {
            return Err(ChannelError::Malformed);
        }
        if wire.len() < 2 + len {
            return Ok(false);
        }
        self.scratch.resize(len, 0);
        let n = t
            .read_message(self.nonce, &wire[2..2 + len], &mut self.scratch)
            .map_err(|_| ChannelError::Forged)?;
        self.nonce += 1;
        plain.extend_from_slice(&self.scratch[..n]);
        wire.advance(2 + len);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, neighbors: &[&str]) -> Node {
        Node::new(name, neighbors.iter().map(|n| n.to_string()).collect())
    }

    /// Runs a greeting between `a` (dialer) and `b` (acceptor) over perfect pipes.
    fn greet(
        a: &Node,
        ka: &Keyring,
        b: &Node,
        kb: &Keyring,
    ) -> (Verdict, Verdict, BytesMut, BytesMut) {
        let now = Instant::now();
        let mut to_b = Vec::new();
        let mut dialer = Greeting::dial(a.name(), b"B", 0, ka, 0, &mut to_b);
        let mut acceptor = Greeting::accept(b.name(), kb);
        let (mut ab, mut ba) = (BytesMut::new(), BytesMut::new());
        let (mut va, mut vb) = (Verdict::Pending, Verdict::Pending);
        for _ in 0..4 {
            ab.extend_from_slice(&to_b);
            to_b.clear();
            let mut to_a = Vec::new();
            if matches!(vb, Verdict::Pending) {
                vb = acceptor.feed(&mut ab, b, now, &mut to_a);
            }
            ba.extend_from_slice(&to_a);
            if matches!(va, Verdict::Pending) {
                va = dialer.feed(&mut ba, a, now, &mut to_b);
            }
        }
        (va, vb, ab, ba)
    }

    #[test]
    fn secret_handshake_then_frames_both_ways() {
        let (a, b) = (node("A", &["B"]), node("B", &["A"]));
        let k = Keyring::new(&["s"]);
        let (va, vb, mut ab, _) = greet(&a, &k, &b, &k);
        let (Verdict::Established(ea), Verdict::Established(eb)) = (va, vb) else {
            panic!("not established")
        };
        assert!(ea.authenticated && eb.authenticated);
        let (mut sa, mut ob) = (ea.channel.sealer, eb.channel.opener);
        let mut wire = Vec::new();
        sa.seal(b"AT A +0.000000000 c +0+0 1\n", &mut wire);
        assert!(!wire.windows(2).any(|w| w == b"AT"), "encrypted");
        ab.extend_from_slice(&wire);
        let mut plain = BytesMut::new();
        ob.open(&mut ab, &mut plain).unwrap();
        assert_eq!(&plain[..], b"AT A +0.000000000 c +0+0 1\n");
        // The same frame again (a replay) does not open.
        ab.extend_from_slice(&wire);
        assert_eq!(ob.open(&mut ab, &mut plain), Err(ChannelError::Forged));
    }

    #[test]
    fn wrong_secret_and_rotation() {
        let (a, b) = (node("A", &["B"]), node("B", &["A"]));
        let (va, vb, ..) = greet(&a, &Keyring::new(&["x"]), &b, &Keyring::new(&["y"]));
        assert!(matches!(
            vb,
            Verdict::Failed(Failure {
                refusal: Refusal::BadProof,
                ..
            })
        ));
        assert!(matches!(
            va,
            Verdict::Failed(Failure {
                refusal: Refusal::RefusedByPeer,
                ..
            })
        ));
        // The acceptor accepts any of its secrets.
        let (va, vb, ..) = greet(
            &a,
            &Keyring::new(&["old"]),
            &b,
            &Keyring::new(&["new", "old"]),
        );
        assert!(matches!(va, Verdict::Established(_)) && matches!(vb, Verdict::Established(_)));
    }

    #[test]
    fn secret_on_one_side_only_is_refused() {
        let (a, b) = (node("A", &["B"]), node("B", &["A"]));
        let (_, vb, ..) = greet(&a, &Keyring::default(), &b, &Keyring::new(&["s"]));
        assert!(matches!(
            vb,
            Verdict::Failed(Failure {
                refusal: Refusal::BadProof,
                ..
            })
        ));
        let (_, vb, ..) = greet(&a, &Keyring::new(&["s"]), &b, &Keyring::default());
        assert!(matches!(
            vb,
            Verdict::Failed(Failure {
                refusal: Refusal::BadProof,
                ..
            })
        ));
    }

    #[test]
    fn plain_herd_links_without_frames() {
        let (a, b) = (node("A", &["B"]), node("B", &["A"]));
        let k = Keyring::default();
        let (va, vb, ..) = greet(&a, &k, &b, &k);
        let (Verdict::Established(ea), Verdict::Established(eb)) = (va, vb) else {
            panic!("not established")
        };
        assert!(!ea.channel.is_secure() && !eb.authenticated);
    }
}
