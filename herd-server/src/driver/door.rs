//! The client door over HTTP/JSON and WebSocket (PROTOCOL.md §10), on the admin door's stack
//! (hyper 1 through axum).
//!
//! Every request becomes a protocol line and goes through the node's one client entry point,
//! [`Node::client_line`](crate::node::Node::client_line), as a TCP connection's lines do: the JSON
//! of `POST /v1/iamat` and the query of `GET /v1/whatsat` are written as an IAMAT or WHATSAT line,
//! and each WebSocket text message is one line. So the grammar, the limits (future time, client
//! cap, byte bounds), the record order, the flood and the Places budget are the line protocol's,
//! defined once. `POST /v1/iamat`, the hot route, is matched ahead of the router and answered by
//! the same functions, under the same body limit (`iamat_fast`). A connection of this door takes a
//! place in the client connection budget (`max_connections`, `max_connections_per_ip`); a request
//! head must come within the line time-out.
//! Lines in and out are logged like the line protocol's, marked `door=http` or `door=ws`, and
//! counted in the same metrics.
//!
//! Watches (`WATCH CLIENT id`, `WATCH NEAR lat lon km`, `UNWATCH …`, parsed by herd-proto) live in
//! the node's registry ([`crate::node::watch`]), fired by every record the node stores; this
//! driver only carries them: each watcher has a bounded queue ([`Limits::watch_queue`]), and a
//! watcher whose queue is full is dropped by the node and closed here with a reason, so a slow
//! watcher never slows the herd.
//!
//! [`Limits::watch_queue`]: crate::config::Limits::watch_queue

use std::borrow::Cow;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes as BodyBytes};
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::{FutureExt as _, StreamExt as _};

use herd_proto::{
    write_record_json, AtRecord, ClientTime, ErrorKind, Frame, Framer, Location, Timestamp,
    WatchLine,
};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tower::Service as _;
use tower_http::limit::RequestBodyLimitLayer;
use tracing::{debug, info, warn, Instrument as _};

use crate::config::Limits;
use crate::driver::gate::{AdmissionSlot, SlotKind};
use crate::driver::shared::{Lifecycle, Shared};
use crate::log::{show, LogBuf};
use crate::node::limits::Limit;
use crate::node::watch::{Deliver, WatchRefused};
use crate::node::{Invalid, Lookup, Step};
use crate::places::ClientBudget;

/// The OpenAPI description of this door, served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The reason of a WHATSAT or a `GET /v1/clients/{id}` for a client the server holds no record of.
const UNKNOWN_CLIENT: &str = "unknown client: the herd holds no record of it";

/// The close code and reason a watcher that could not keep up gets (1008: policy violation).
const SLOW_CLOSE: u16 = 1008;

/// What the door's handlers share.
#[derive(Clone)]
struct Door {
    shared: Arc<Shared>,
}

/// The address a request came from.
#[derive(Clone, Copy)]
struct From(SocketAddr);

/// What became of one line through the door.
enum LineOutcome {
    /// An AT record (an IAMAT's answer): the reply holds its line.
    Record,
    /// A WHATSAT answered: the reply holds the AT line, the JSON and two newlines.
    Places(Value),
    /// `? …`: invalid (the reason from the grammar, or an unknown client).
    Invalid(&'static str),
    /// `? …`: refused by a limit.
    Refused(Limit),
}

/// One client of the door: the per-connection state a TCP connection keeps for its lines.
struct Client {
    shared: Arc<Shared>,
    id: u64,
    addr: SocketAddr,
    log: LogBuf,
    logging: bool,
    budget: Option<ClientBudget>,
    /// Limit refusals already logged (once per kind and connection, as on TCP).
    logged: Vec<Limit>,
}

impl Client {
    fn new(shared: Arc<Shared>, addr: SocketAddr, door: &str) -> Client {
        let id = shared.conn_id();
        let spec = &shared.spec;
        Client {
            log: spec.log.door_buffer(id, door),
            logging: spec.log_lines && spec.log.is_on(),
            shared,
            id,
            addr,
            budget: None,
            logged: Vec::new(),
        }
    }

    /// Makes this client the next HTTP request's, logged and counted as a connection of its own (a
    /// new number, no refusal logged yet, a fresh Places budget) as a new [`Client`] would be,
    /// keeping its buffers.
    fn renew(&mut self) {
        self.id = self.shared.conn_id();
        self.log.door_tag(self.id, "http");
        self.logged.clear();
        self.budget = None;
    }

    /// Answers `line` into `out` through the node's client entry point, as a TCP connection does:
    /// journaled (and, where the fsync rule says so, on disk before the answer goes out), counted,
    /// sampled for the live page, flooded and logged.
    async fn answer(&mut self, line: &[u8], out: &mut Vec<u8>) -> std::io::Result<LineOutcome> {
        let shared = self.shared.clone();
        let now = (shared.spec.clock)();
        let start = out.len();
        let (step, journal_end) = self.decide(line, now, out);
        if self.logging {
            self.log.stamp();
        }
        let outcome = match step {
            Step::Iamat { stored } => {
                if stored {
                    shared.notify_links(None);
                }
                shared.stats.answered(1, 0);
                shared.live.offer_iamat(line, now);
                LineOutcome::Record
            }
            Step::Invalid(why) => {
                shared.stats.invalid(why);
                LineOutcome::Invalid(match why {
                    Invalid::Malformed(kind) => kind.description(),
                    Invalid::UnknownClient => UNKNOWN_CLIENT,
                })
            }
            Step::Refused(why) => {
                if !self.logged.contains(&why) {
                    self.logged.push(why);
                    info!(conn = self.id, peer = %self.addr, refusal = %why, line = %show(line),
                        "IAMAT refused by a limit (logged once per connection)");
                }
                LineOutcome::Refused(why)
            }
            Step::Lookup(q) => LineOutcome::Places(self.lookup(line, &q, now, out).await),
        };
        if self.logging && !matches!(outcome, LineOutcome::Places(_)) {
            self.log.pair(line, &out[start..]);
        }
        shared.spec.log.submit(&mut self.log).await;
        if let Err(e) = self.durable(journal_end).await {
            warn!(conn = self.id, "{e}: the answer is not sent");
            out.truncate(start);
            return Err(e);
        }
        Ok(outcome)
    }

    /// The node's decision for `line` (the batch entry point of a TCP connection, with a batch of
    /// one), its reply written to `out`, and the store position the reply must wait for.
    fn decide(&mut self, line: &[u8], now: Timestamp, out: &mut Vec<u8>) -> (Step, Option<u64>) {
        let shared = &self.shared;
        let mut node = shared.node();
        let mut step = None;
        let decided = node.client_lines(&[line], now, out, |_, s, _| {
            step = Some(s.clone());
            true
        });
        let step = match decided.lookup {
            Some(q) => Step::Lookup(q),
            None => step.unwrap_or(Step::Invalid(Invalid::Malformed(ErrorKind::Empty))),
        };
        let journal_end = shared.journal(&mut node).or_else(|| {
            // A reply that shows records stored by others waits for those too.
            let store = shared.store.as_ref()?;
            store
                .fsync()
                .replies_wait_for_disk()
                .then(|| store.position())
        });
        let cap = match step {
            Step::Iamat { stored: true } | Step::Refused(Limit::ClientCap) => {
                node.take_cap_reached()
            }
            _ => None,
        };
        drop(node);
        if let Some(clients) = cap {
            shared.cap_reached(clients);
        }
        (step, journal_end)
    }

    /// Answers a WHATSAT with its Places look-up `q` into `out`, spending this connection's budget;
    /// returns the Places JSON.
    async fn lookup(
        &mut self,
        line: &[u8],
        q: &Lookup,
        now: Timestamp,
        out: &mut Vec<u8>,
    ) -> Value {
        let shared = self.shared.clone();
        let spec = &shared.spec;
        let (answer, _, began) = shared.places_lookup(q, now, &mut self.budget).await;
        let backend = spec.places.backend().as_str();
        shared.stats.answered(0, 1);
        herd_proto::write_whatsat(&q.record, answer.to_pretty(), out);
        if self.logging {
            let body = answer.to_pretty();
            let results = answer
                .json
                .get("results")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            self.log.pair(line, &q.record.to_bytes());
            self.log.whatsat(
                backend,
                answer.status(),
                results,
                body.len(),
                began.elapsed().as_secs_f64() * 1000.0,
                spec.log_bodies.then_some(body),
            );
        }
        answer.json.clone()
    }

    /// Waits, as the fsync rule says, for the records a reply acknowledges (`journal_end`): under
    /// `always` until they are on disk; otherwise while the journal is far behind. An error: the
    /// reply must not be sent.
    async fn durable(&self, journal_end: Option<u64>) -> std::io::Result<()> {
        let (Some(t), Some(store)) = (journal_end, &self.shared.store) else {
            return Ok(());
        };
        if store.fsync().replies_wait_for_disk() {
            return store.durable(t).await.map_err(std::io::Error::other);
        }
        store.keep_up(t).await;
        if store.acknowledging() {
            Ok(())
        } else {
            Err(std::io::Error::other(crate::store::NotDurable))
        }
    }
}

/// Serves the door on `listener` until shutdown. Each connection takes a place in the client
/// budget; past it the connection is answered 503 with the `? busy` line and closed.
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let local = listener
        .local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    info!(target: crate::log::SUMMARY, "{} serving HTTP/JSON and WebSocket on {local}", shared.spec.name);
    info!(http = %local, "http door listening");
    let app = router(Door {
        shared: shared.clone(),
    });
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shared.life.shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, from)) => {
                let _ = stream.set_nodelay(true);
                let (s, app) = (shared.clone(), app.clone());
                let admitted = shared.gate.admission().admit_client(from.ip());
                match admitted {
                    Ok(()) => {
                        let slot = AdmissionSlot::new(&shared.gate, SlotKind::Client(from.ip()));
                        shared.life.tracker.spawn(
                            async move { connection(&s, stream, from, app, slot).await }
                                .in_current_span(),
                        );
                    }
                    Err(busy) => {
                        s.gate.refused(busy.refusal, from);
                        info!(peer = %from, refusal = %busy.refusal, door = "http", "connection refused: busy");
                        shared
                            .life
                            .tracker
                            .spawn(refuse(stream, busy.line()).in_current_span());
                    }
                }
            }
            Err(e) => {
                debug!(cause = %e, "http door accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A connection over the client limit: one 503 answer with the `? busy` line, then close.
async fn refuse(mut stream: TcpStream, line: String) {
    use tokio::io::AsyncWriteExt as _;
    let body = json!({"error": line.trim_end(), "reason": "busy"}).to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// One HTTP connection, kept alive between requests: a request head must come within the line
/// time-out (which also bounds an idle connection). A WebSocket upgraded on it lives on past the
/// request, holding the connection's place in the budget.
async fn connection(
    shared: &Arc<Shared>,
    stream: TcpStream,
    from: SocketAddr,
    app: Router,
    slot: AdmissionSlot,
) {
    use futures::future::Either;
    use tower::Layer as _;
    let slot = Arc::new(slot);
    let (s, kept) = (shared.clone(), Arc::new(std::sync::Mutex::new(None)));
    let hot = body_limit(shared).layer(tower::service_fn(move |request| {
        iamat_fast(s.clone(), from, kept.clone(), request)
    }));
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        if is_hot(&request) {
            let mut hot = hot.clone();
            return Either::Left(async move { Ok(hot.call(request).await?.map(Body::new)) });
        }
        request.extensions_mut().insert(From(from));
        request.extensions_mut().insert(slot.clone());
        let mut app = app.clone();
        Either::Right(async move { app.call(request.map(Body::new)).await })
    });
    let limits = &shared.spec.limits;
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.line_timeout)
        .max_buf_size(limits.max_line.max(8192))
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        done = conn.as_mut() => {
            if let Err(e) = done {
                debug!(cause = %e, "http door connection ended");
            }
        }
        _ = shared.life.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}

/// The bound on a request's body (`max_line`), for the router and the hot route alike.
fn body_limit(shared: &Shared) -> RequestBodyLimitLayer {
    RequestBodyLimitLayer::new(shared.spec.limits.max_line)
}

fn router(door: Door) -> Router {
    let limit = body_limit(&door.shared);
    Router::new()
        .route("/v1/iamat", post(iamat))
        .route("/v1/clients/{id}", get(client))
        .route("/v1/whatsat", get(whatsat))
        .route("/v1/ws", get(ws))
        .route("/v1/openapi.json", get(openapi))
        .fallback(not_found)
        .layer(limit)
        .with_state(door)
}

/// A JSON answer.
fn answer(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{v}\n"),
    )
        .into_response()
}

/// A JSON answer whose object is `body` (the newline is added).
fn answer_bytes(code: StatusCode, mut body: Vec<u8>) -> Response {
    body.push(b'\n');
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A bad request: the `? …` line the line protocol would answer (when there is one) and the reason.
fn refusal(code: StatusCode, line: Option<&[u8]>, reason: &str) -> Response {
    let mut v = json!({ "reason": reason });
    if let Some(line) = line {
        v["error"] = format!("? {}", String::from_utf8_lossy(line)).into();
    }
    answer(code, &v)
}

/// The answer to a line that was not a record: 400 (invalid), 404 (unknown client), 422 or 503
/// (refused by a limit), 500 (not durable).
fn failed(outcome: &LineOutcome, line: &[u8]) -> Response {
    match outcome {
        LineOutcome::Invalid(reason) if *reason == UNKNOWN_CLIENT => {
            refusal(StatusCode::NOT_FOUND, Some(line), reason)
        }
        LineOutcome::Invalid(reason) => refusal(StatusCode::BAD_REQUEST, Some(line), reason),
        LineOutcome::Refused(l @ (Limit::ClientCap | Limit::CacheBytes)) => refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(line),
            &format!("refused by a limit: {l}"),
        ),
        LineOutcome::Refused(l) => refusal(
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(line),
            &format!("refused by a limit: {l}"),
        ),
        LineOutcome::Record | LineOutcome::Places(_) => {
            refusal(StatusCode::INTERNAL_SERVER_ERROR, Some(line), "no answer")
        }
    }
}

/// The AT line at the start of `reply`, as the JSON object of its fields (written straight into the
/// answer's bytes: no map is built).
fn record_of(reply: &[u8]) -> Option<Vec<u8>> {
    let end = reply
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(reply.len());
    let record = AtRecord::parse(&reply[..end]).ok()?;
    let mut body = Vec::with_capacity(192);
    write_record_json(&record, &mut body);
    Some(body)
}

/// Runs `line` through the door for one HTTP request, as a client of its own (`c`: a new one, or
/// one [renewed](Client::renew)): the outcome with the reply in `out`, or (when the record could not
/// be made durable) the answer to send.
async fn through(
    c: &mut Client,
    line: &[u8],
    out: &mut Vec<u8>,
) -> Result<LineOutcome, Box<Response>> {
    out.clear();
    c.answer(line, out).await.map_err(|e| {
        Box::new(refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            &format!("not stored durably: {e}"),
        ))
    })
}

/// What an HTTP connection keeps from one `POST /v1/iamat` to the next on the hot path
/// ([`iamat_fast`]): the door's client, [renewed](Client::renew) for each request, and the reply
/// buffer. Making them afresh for every request (a log buffer with its date formatted, two
/// allocations) showed in the door's profile.
struct Kept {
    client: Option<Client>,
    out: Vec<u8>,
}

impl Kept {
    /// The client for the next request: the kept one renewed, or a new one.
    fn client(&mut self, shared: &Arc<Shared>, from: SocketAddr) -> &mut Client {
        if let Some(c) = &mut self.client {
            c.renew();
        }
        self.client
            .get_or_insert_with(|| Client::new(shared.clone(), from, "http"))
    }
}

/// The fields of `POST /v1/iamat`'s JSON, borrowed from the body (a string with escapes is copied).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IamatJson<'a> {
    #[serde(borrow)]
    client: Cow<'a, str>,
    latitude: f64,
    longitude: f64,
    /// Seconds since 1970 as a string (exact: `"1479413884.392014450"`) or a number; the server's
    /// clock when left out.
    #[serde(borrow)]
    time: Option<TimeField<'a>>,
}

/// The `time` of an IAMAT's JSON: what a `serde_json::Value` of it would have told apart, without
/// building one for the string or number that it nearly always is.
enum TimeField<'a> {
    /// A string, kept as written.
    Text(Cow<'a, str>),
    /// A number, written back as `serde_json` writes it.
    Number(serde_json::Number),
    /// `null` (the server's clock).
    Null,
    /// Any other JSON value (refused once the body has been read).
    Other,
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for TimeField<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TimeVisitor)
    }
}

/// Reads a [`TimeField`] as `serde_json::Value`'s own visitor would read the value: an array or an
/// object is read into a `Value` (the same checks, so a body refused before is refused with the
/// same error) and thrown away.
struct TimeVisitor;

impl<'de> serde::de::Visitor<'de> for TimeVisitor {
    type Value = TimeField<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(TimeField::Other)
    }
    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(TimeField::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(TimeField::Number(n.into()))
    }
    fn visit_f64<E>(self, x: f64) -> Result<Self::Value, E> {
        // `Value` holds a number that is not finite as `null`.
        Ok(serde_json::Number::from_f64(x).map_or(TimeField::Null, TimeField::Number))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(TimeField::Text(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(TimeField::Text(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(TimeField::Text(Cow::Owned(s)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(TimeField::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(TimeField::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        use serde::Deserialize as _;
        Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        Ok(TimeField::Other)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        use serde::Deserialize as _;
        Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        Ok(TimeField::Other)
    }
}

/// Why a body that serde could not read as an IAMAT's JSON is refused.
fn not_an_iamat(e: serde_json::Error) -> String {
    format!("the body is not the JSON of an IAMAT: {e}")
}

/// The location of an IAMAT body's coordinates, once its client id is checked; or why the body is
/// refused.
fn checked_location(
    client: &str,
    latitude: f64,
    longitude: f64,
) -> Result<Location<'static>, String> {
    if client.is_empty() || client.bytes().any(herd_proto::is_whitespace) {
        return Err("client: one or more characters, none of them white space".into());
    }
    Location::from_degrees(latitude, longitude).ok_or_else(|| {
        "latitude must be within -90..=90 and longitude within -180..=180".to_owned()
    })
}

/// The IAMAT line of a JSON body (at the time `clock` tells when the body gives none), or why there
/// is none.
fn iamat_line(body: &[u8], clock: impl FnOnce() -> Timestamp) -> Result<Vec<u8>, String> {
    use std::io::Write as _;
    let j: IamatJson<'_> = serde_json::from_slice(body).map_err(not_an_iamat)?;
    let location = checked_location(&j.client, j.latitude, j.longitude)?;
    let mut line = Vec::with_capacity(body.len() + 16);
    line.extend_from_slice(b"IAMAT ");
    line.extend_from_slice(j.client.as_bytes());
    line.push(b' ');
    line.extend_from_slice(location.as_bytes());
    line.push(b' ');
    match j.time {
        None | Some(TimeField::Null) => {
            line.extend_from_slice(ClientTime::from_timestamp(clock()).as_str().as_bytes())
        }
        Some(TimeField::Text(s)) => line.extend_from_slice(s.as_bytes()),
        Some(TimeField::Number(n)) => {
            let _ = write!(line, "{n}"); // to a Vec: cannot fail
        }
        Some(TimeField::Other) => {
            return Err("time: seconds since 1970, as a string or a number".into())
        }
    }
    Ok(line)
}

/// Whether a request's body is the raw IAMAT line (`text/plain`) rather than JSON.
fn is_plain(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"))
}

/// `POST /v1/iamat` through the router: JSON `{client, latitude, longitude, time?}`, or the IAMAT
/// line as `text/plain`; answers the AT record as JSON. A connection's requests take the hot path
/// ([`iamat_fast`]) instead; this one answers the same, through [`iamat_answer`].
async fn iamat(
    State(door): State<Door>,
    axum::Extension(From(from)): axum::Extension<From>,
    headers: HeaderMap,
    body: BodyBytes,
) -> Response {
    let mut kept = Kept {
        client: None,
        out: Vec::new(),
    };
    iamat_answer(&door.shared, from, &mut kept, is_plain(&headers), &body).await
}

/// The answer to `POST /v1/iamat` with `body` (the raw IAMAT line if `plain`, else its JSON): the AT
/// record as JSON, or the refusal.
async fn iamat_answer(
    shared: &Arc<Shared>,
    from: SocketAddr,
    kept: &mut Kept,
    plain: bool,
    body: &[u8],
) -> Response {
    let line = if plain {
        let b = body.strip_suffix(b"\n").unwrap_or(body);
        b.strip_suffix(b"\r").unwrap_or(b).to_vec()
    } else {
        match iamat_line(body, || (shared.spec.clock)()) {
            Ok(l) => l,
            Err(reason) => return refusal(StatusCode::BAD_REQUEST, None, &reason),
        }
    };
    if plain && !line.trim_ascii_start().starts_with(b"IAMAT") {
        return refusal(
            StatusCode::BAD_REQUEST,
            Some(&line),
            "POST /v1/iamat takes an IAMAT line",
        );
    }
    let mut out = std::mem::take(&mut kept.out);
    let answered = through(kept.client(shared, from), &line, &mut out).await;
    let response = match answered {
        Ok(LineOutcome::Record) => match record_of(&out) {
            Some(r) => answer_bytes(StatusCode::OK, r),
            None => refusal(StatusCode::INTERNAL_SERVER_ERROR, Some(&line), "no record"),
        },
        Ok(o) => failed(&o, &line),
        Err(r) => *r,
    };
    kept.out = out;
    response
}

/// The hot route, `POST /v1/iamat`, served ahead of the router (which costs a route look-up, a
/// header map copy, extensions and boxed futures on every request): the same body limit (the
/// router's layer), the same body extraction (axum's, with its refusals) and the same answer
/// ([`iamat_answer`]), with the connection's [`Kept`] client and buffer.
async fn iamat_fast(
    shared: Arc<Shared>,
    from: SocketAddr,
    kept: Arc<std::sync::Mutex<Option<Kept>>>,
    request: hyper::Request<tower_http::body::Limited<Incoming>>,
) -> Result<Response, std::convert::Infallible> {
    use axum::extract::FromRequest as _;
    let plain = is_plain(request.headers());
    let body = match BodyBytes::from_request(request.map(Body::new), &()).await {
        Ok(b) => b,
        Err(rejection) => return Ok(rejection.into_response()),
    };
    let taken = kept.lock().ok().and_then(|mut k| k.take());
    let mut k = taken.unwrap_or(Kept {
        client: None,
        out: Vec::new(),
    });
    let response = iamat_answer(&shared, from, &mut k, plain, &body).await;
    if let Ok(mut slot) = kept.lock() {
        *slot = Some(k);
    }
    Ok(response)
}

/// Whether a request takes the hot route ([`iamat_fast`]): the router's `/v1/iamat` route for POST
/// (the path alone, as the router matches it).
fn is_hot(request: &hyper::Request<Incoming>) -> bool {
    request.method() == Method::POST && request.uri().path() == "/v1/iamat"
}

/// `GET /v1/clients/{id}`: the record held for the client, or 404.
async fn client(State(door): State<Door>, Path(id): Path<String>) -> Response {
    let held = door.shared.node().get(id.as_bytes());
    match held.as_deref().and_then(record_of) {
        Some(r) => answer_bytes(StatusCode::OK, r),
        None => refusal(StatusCode::NOT_FOUND, None, UNKNOWN_CLIENT),
    }
}

/// The query of `GET /v1/whatsat`.
#[derive(serde::Deserialize)]
struct WhatsatQuery {
    client: Option<String>,
    radius_km: Option<String>,
    bound: Option<String>,
}

/// `GET /v1/whatsat?client=&radius_km=&bound=`: the record's fields and the Places answer under
/// `places`.
async fn whatsat(
    State(door): State<Door>,
    axum::Extension(From(from)): axum::Extension<From>,
    query: Result<Query<WhatsatQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return refusal(
            StatusCode::BAD_REQUEST,
            None,
            "the query is not client=&radius_km=&bound=",
        );
    };
    let (Some(client), Some(radius), Some(bound)) = (q.client, q.radius_km, q.bound) else {
        return refusal(
            StatusCode::BAD_REQUEST,
            None,
            "client, radius_km and bound are all needed",
        );
    };
    let fields = [&client, &radius, &bound];
    if fields
        .iter()
        .any(|f| f.is_empty() || f.bytes().any(herd_proto::is_whitespace))
    {
        return refusal(
            StatusCode::BAD_REQUEST,
            None,
            "client, radius_km and bound: each one or more characters, none of them white space",
        );
    }
    let line = format!("WHATSAT {client} {radius} {bound}").into_bytes();
    let mut c = Client::new(door.shared.clone(), from, "http");
    let mut out = Vec::new();
    match through(&mut c, &line, &mut out).await {
        Ok(LineOutcome::Places(places)) => match record_of(&out) {
            Some(mut r) => {
                // The record's object with `places` last, as a map would have it inserted.
                r.pop();
                r.extend_from_slice(b",\"places\":");
                let _ = serde_json::to_writer(&mut r, &places); // to a Vec: cannot fail
                r.push(b'}');
                answer_bytes(StatusCode::OK, r)
            }
            None => refusal(StatusCode::INTERNAL_SERVER_ERROR, Some(&line), "no record"),
        },
        Ok(o) => failed(&o, &line),
        Err(r) => *r,
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found(method: Method, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let known = ["/v1/iamat", "/v1/whatsat", "/v1/ws", "/v1/openapi.json"];
    if known.contains(&path.as_str()) || path.starts_with("/v1/clients/") {
        return refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            &format!("{method} is not served at {path}"),
        );
    }
    refusal(
        StatusCode::NOT_FOUND,
        None,
        "not found: POST /v1/iamat, GET /v1/clients/{id}, /v1/whatsat, /v1/ws or /v1/openapi.json",
    )
}

/// `GET /v1/ws`: a WebSocket of protocol lines and watches.
///
/// The library's read buffer is kept small: it zeroes the whole buffer before every read (128 KiB
/// by default), which was the top of the door's profile for one-line messages. Its message bound is
/// [`WS_HARD_BOUND`] lines, so that a message over `max_line` is read and answered as an over-long
/// line is on TCP ([`too_long`]); only one past that bound is cut off by the library unread.
async fn ws(
    State(door): State<Door>,
    axum::Extension(From(from)): axum::Extension<From>,
    axum::Extension(slot): axum::Extension<Arc<AdmissionSlot>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let max = door
        .shared
        .spec
        .limits
        .max_line
        .saturating_mul(WS_HARD_BOUND);
    upgrade
        .read_buffer_size(WS_READ_BUFFER)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            async move {
                websocket(door.shared, socket, from).await;
                drop(slot);
            }
            .in_current_span()
        })
}

/// The WebSocket library's read buffer, in bytes (a default line is 4 KiB).
const WS_READ_BUFFER: usize = 8 * 1024;

/// The longest message the WebSocket library reads, in `max_line`s: a longer one is refused by the
/// library before it is read (so there is no head to answer with), closed with code 1009.
const WS_HARD_BOUND: usize = 4;

/// The close code of a message over `max_line` (1009: message too big).
const TOO_BIG_CLOSE: u16 = 1009;

/// A watcher's queue: records wait here for the connection's task to send them.
struct Queue(mpsc::Sender<Vec<u8>>);

impl Deliver for Queue {
    fn deliver(&mut self, line: &[u8]) -> bool {
        let mut b = Vec::with_capacity(line.len() + 1);
        b.extend_from_slice(line);
        b.push(b'\n');
        self.0.try_send(b).is_ok()
    }
}

/// Removes the connection's watches from the node when the connection ends, however it ends.
struct Registered {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.shared.node().watches().unregister(self.id);
    }
}

/// The answer to a watch line (written into `out`); returns whether the connection now holds a watch.
fn watch_line(shared: &Shared, id: u64, w: WatchLine<'_>, line: &[u8], out: &mut Vec<u8>) -> bool {
    let mut node = shared.node();
    let watches = node.watches();
    let done = match &w {
        WatchLine::Watch(watch) => watches.watch(id, watch.clone()),
        WatchLine::Unwatch(watch) => {
            if watches.unwatch(id, watch) {
                Ok(())
            } else {
                Err(WatchRefused::Gone)
            }
        }
    };
    let watching = !watches.is_empty_for(id);
    drop(node);
    match done {
        Ok(()) => {
            out.extend_from_slice(match w {
                WatchLine::Watch(_) => b"WATCHING ",
                WatchLine::Unwatch(_) => b"UNWATCHED ",
            });
            w.watch().write_to(out);
            out.push(b'\n');
        }
        Err(why) => {
            debug!(conn = id, refusal = why.as_str(), "watch refused");
            herd_proto::write_invalid(line, out);
        }
    }
    watching
}

/// One message: text when the bytes are UTF-8 (nearly always), binary otherwise (a client id may hold
/// any bytes).
fn message(bytes: Vec<u8>) -> WsMessage {
    match String::from_utf8(bytes) {
        Ok(s) => WsMessage::Text(s.into()),
        Err(e) => WsMessage::Binary(e.into_bytes().into()),
    }
}

/// One message of a copy of `bytes`, as [`message`]: the buffer they are in is kept for the next
/// reply.
fn message_of(bytes: &[u8]) -> WsMessage {
    match std::str::from_utf8(bytes) {
        Ok(s) => WsMessage::Text(s.into()),
        Err(_) => WsMessage::Binary(BodyBytes::copy_from_slice(bytes)),
    }
}

impl Client {
    /// One message of a WebSocket as a line: a watch line is answered by the node's watch registry,
    /// any other through [`Client::answer`]. Returns, after a watch line, whether the connection
    /// now holds a watch. An error: the answer could not be made durable.
    async fn ws_line(
        &mut self,
        message: &[u8],
        out: &mut Vec<u8>,
    ) -> std::io::Result<Option<bool>> {
        let line = message.strip_suffix(b"\n").unwrap_or(message);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(|&b| herd_proto::is_whitespace(b)) {
            return Ok(None); // a line of white space only gets no reply (PROTOCOL.md §1)
        }
        let Ok(w) = WatchLine::parse(line) else {
            self.answer(line, out).await?;
            return Ok(None);
        };
        let watching = watch_line(&self.shared, self.id, w, line, out);
        if self.logging {
            self.log.stamp();
            self.log.pair(line, out);
            self.shared.spec.log.submit(&mut self.log).await;
        }
        Ok(Some(watching))
    }
}

/// The head of the first line of `message` longer than `max` bytes, by the framer's rule (as on TCP),
/// or `None`.
fn too_long(max: usize, message: &[u8]) -> Option<&[u8]> {
    let mut framer = Framer::new(max);
    let mut rest = message;
    loop {
        match framer.finish(rest) {
            Frame::TooLong { head, .. } => return Some(&rest[head]),
            Frame::Line { consumed, .. } if consumed < rest.len() => rest = &rest[consumed..],
            _ => return None,
        }
    }
}

/// What a WebSocket's task does next.
enum Event {
    /// A message from the client.
    Message(WsMessage),
    /// A record for this watcher, to send.
    Pushed(Vec<u8>),
    /// The node dropped this watcher: its queue was full.
    Slow,
    /// A message past the library's bound ([`WS_HARD_BOUND`]), not read.
    TooBig,
    /// The server is stopping.
    Stopping,
    /// The connection ended, for this reason.
    End(&'static str),
}

/// Whether a WebSocket read failed on the library's size bound.
fn is_too_big(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(tungstenite::Error::Capacity(_)) = c.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// One WebSocket: the socket, its watcher queue, its bounds and its timer.
///
/// The shutdown future and the timer are made once per connection, as a TCP connection's are: a fresh
/// `cancelled()` or `timeout()` per message costs a waiter registration on the shared token or a
/// timer insertion and removal on every request.
struct Socket {
    socket: WebSocket,
    queue: mpsc::Receiver<Vec<u8>>,
    limits: Limits,
    /// Whether the connection holds a watch (then it is never idle).
    watching: bool,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The idle time-out's timer. It is not pushed back on every message: when it fires before the
    /// deadline (the last message plus the idle time-out), it is re-armed for the deadline.
    idle: Pin<Box<Sleep>>,
    /// When the timer is set to fire.
    timer_at: Instant,
    /// When the last message came (or the socket opened).
    last_read: Instant,
}

impl Socket {
    fn new(socket: WebSocket, queue: mpsc::Receiver<Vec<u8>>, shared: &Shared) -> Socket {
        let limits = shared.spec.limits;
        let now = Instant::now();
        let timer_at = now + limits.idle_timeout;
        Socket {
            socket,
            queue,
            limits,
            watching: false,
            cancelled: Box::pin(shared.life.shutdown.clone().cancelled_owned()),
            idle: Box::pin(tokio::time::sleep_until(timer_at)),
            timer_at,
            last_read: now,
        }
    }

    /// Waits for the next event: a message, a record to push, the server stopping, or the end.
    async fn next(&mut self, life: &Lifecycle) -> Event {
        // Shutdown is checked with a load here, so the select below can poll the socket first (a busy
        // socket's message is ready at once); a socket with nothing to read hears the token itself.
        if life.stopping() {
            return Event::Stopping;
        }
        let idle = self.limits.idle_timeout;
        let deadline = self.last_read + idle;
        if !self.watching && deadline < self.timer_at {
            // The timer was re-armed while the connection held a watch: bring it back.
            self.timer_at = deadline;
            self.idle.as_mut().reset(deadline);
        }
        loop {
            tokio::select! {
                biased;
                m = self.socket.next() => {
                    self.last_read = Instant::now();
                    return match m {
                        Some(Ok(WsMessage::Close(_))) => Event::End("closed by the client"),
                        Some(Ok(m)) => Event::Message(m),
                        Some(Err(e)) if is_too_big(&e) => Event::TooBig,
                        None | Some(Err(_)) => Event::End("closed"),
                    };
                }
                pushed = self.queue.recv() => return pushed.map_or(Event::Slow, Event::Pushed),
                _ = &mut self.cancelled => return Event::Stopping,
                _ = &mut self.idle => {
                    let now = Instant::now();
                    let deadline = self.last_read + idle;
                    if !self.watching && now >= deadline {
                        return Event::End("idle time-out");
                    }
                    self.timer_at = if self.watching { now + idle } else { deadline };
                    self.idle.as_mut().reset(self.timer_at);
                }
            }
        }
    }

    /// Sends `m` within the line time-out; `false`: the client did not take it. Nearly always the
    /// socket takes it at once, and no timer is made for that.
    async fn send(&mut self, m: WsMessage) -> bool {
        let limit = self.limits.line_timeout;
        let mut sending = std::pin::pin!(self.socket.send(m));
        if let Some(sent) = sending.as_mut().now_or_never() {
            return sent.is_ok();
        }
        matches!(tokio::time::timeout(limit, sending).await, Ok(Ok(())))
    }

    /// Sends a close frame with `code` and `reason`, if the socket takes it soon.
    async fn close(&mut self, code: u16, reason: &str) {
        let frame = WsMessage::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        let _ = tokio::time::timeout(Duration::from_millis(500), self.socket.send(frame)).await;
    }

    /// A message over `max_line`: answered `? ` and its first `max_line` bytes (`head`; none when the
    /// library refused it unread), logged and counted as on TCP, then closed.
    async fn too_long(&mut self, c: &mut Client, head: Option<&[u8]>) -> &'static str {
        let max = self.limits.max_line;
        c.shared.stats.line_too_long();
        warn!(conn = c.id, max, door = "ws", "line too long; closing");
        if let Some(head) = head {
            let mut out = Vec::with_capacity(head.len() + 3);
            herd_proto::write_invalid(head, &mut out);
            if c.logging {
                c.log.stamp();
                c.log.pair(head, &out);
                c.shared.spec.log.submit(&mut c.log).await;
            }
            if !self.send(message(out)).await {
                return "line too long";
            }
        }
        let reason = format!("line too long: over {max} bytes");
        self.close(TOO_BIG_CLOSE, &reason).await;
        "line too long"
    }

    /// Serves the socket's messages and pushes until it ends; returns why it ended.
    async fn serve(&mut self, c: &mut Client) -> &'static str {
        let mut out = Vec::new();
        loop {
            let m = match self.next(&c.shared.life).await {
                Event::Message(m) => m,
                Event::Pushed(line) => {
                    if self.send(message(line)).await {
                        continue;
                    }
                    return "the watcher did not take its records";
                }
                Event::Slow => {
                    let queue = self.limits.watch_queue;
                    warn!(conn = c.id, peer = %c.addr, queue, "watcher too slow: closing");
                    let reason = format!("too slow: {queue} records waiting");
                    self.close(SLOW_CLOSE, &reason).await;
                    return "watcher too slow";
                }
                Event::TooBig => return self.too_long(c, None).await,
                Event::Stopping => {
                    self.close(1001, "server stopping").await;
                    return "server stopping";
                }
                Event::End(why) => return why,
            };
            let bytes: &[u8] = match &m {
                WsMessage::Text(t) => t.as_str().as_bytes(),
                WsMessage::Binary(b) => b,
                _ => continue, // pings are answered by the library
            };
            if let Some(head) = too_long(self.limits.max_line, bytes) {
                return self.too_long(c, Some(head)).await;
            }
            out.clear();
            match c.ws_line(bytes, &mut out).await {
                Ok(Some(w)) => self.watching = w,
                Ok(None) => {}
                Err(_) => return "not durable",
            }
            if !out.is_empty() && !self.send(message_of(&out)).await {
                return "replies not taken within the line time-out";
            }
        }
    }
}

/// Serves one WebSocket until it closes, the server stops, or (with no watch) the idle time-out.
async fn websocket(shared: Arc<Shared>, socket: WebSocket, from: SocketAddr) {
    let mut c = Client::new(shared.clone(), from, "ws");
    let id = c.id;
    info!(conn = id, peer = %from, door = "ws", "connection opened");
    shared.stats.connection(true);
    let limits = shared.spec.limits;
    let (tx, queue) = mpsc::channel(limits.watch_queue);
    shared.node().watches().register(id, Box::new(Queue(tx)));
    let registered = Registered {
        shared: shared.clone(),
        id,
    };
    let mut socket = Socket::new(socket, queue, &shared);
    let why = socket.serve(&mut c).await;
    drop(registered);
    shared.stats.connection(false);
    info!(conn = id, door = "ws", why, "connection closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body's fields as they were read before `TimeField`: a `Value` for the time (the same
    /// name as the door's, which serde's messages show).
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct IamatJson {
        client: String,
        latitude: f64,
        longitude: f64,
        time: Option<Value>,
    }

    /// The line (or the reason) a body got when it was read through a `Value`.
    fn through_value(body: &[u8]) -> Result<Vec<u8>, String> {
        let j: IamatJson = serde_json::from_slice(body).map_err(not_an_iamat)?;
        let location = checked_location(&j.client, j.latitude, j.longitude)?;
        let time = match j.time {
            None | Some(Value::Null) => "7.000000000".to_owned(),
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err("time: seconds since 1970, as a string or a number".into()),
        };
        Ok(format!("IAMAT {} {} {time}", j.client, location.as_str()).into_bytes())
    }

    #[test]
    fn a_body_gets_the_line_or_the_reason_a_value_gave_it() {
        let bodies: &[&[u8]] = &[
            br#"{"client":"kiwi","latitude":34.06893,"longitude":-118.445127,"time":"1479413884.392014450"}"#,
            br#"{"client":"k\u0041\"x","latitude":1,"longitude":2}"#,
            br#"{"client":"now","latitude":1.5,"longitude":2,"time":null}"#,
            br#"{"client":"n","latitude":-0.0,"longitude":180,"time":1479413884}"#,
            br#"{"client":"n","latitude":0,"longitude":0,"time":-5}"#,
            br#"{"client":"n","latitude":0,"longitude":0,"time":1.5e3}"#,
            br#"{"client":"n","latitude":0,"longitude":0,"time":18446744073709551616}"#,
            br#"{"client":"n","latitude":0,"longitude":0,"time":1e400}"#,
            br#"{"client":"n","latitude":0,"longitude":0,"time":true}"#,
            br#"{"client":"n","latitude":0,"longitude":0,"time":[1,"2",{"a":null}]}"#,
            br#"{"client":"n","latitude":0,"longitude":0,"time":{"a":[1,2}}"#,
            br#"{"client":"n","latitude":0,"longitude":0,"time":{"a":"\uD800"}}"#,
            b"{\"client\":\"n\",\"latitude\":0,\"longitude\":0,\"time\":[\"\xff\"]}",
            br#"{"client":"n","latitude":0,"longitude":0,"time":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"#,
            br#"{"client":"n","latitude":0,"longitude":0,"time":"1e9"}"#,
            br#"{"client":"n","latitude":0,"longitude":0,"time":"1","time":"2"}"#,
            br#"{"client":"n","latitude":0,"longitude":0,"extra":1}"#,
            br#"{"client":5,"latitude":0,"longitude":0}"#,
            br#"{"client":"a b","latitude":0,"longitude":0}"#,
            br#"{"client":"","latitude":0,"longitude":0}"#,
            br#"{"client":"k","latitude":91,"longitude":0}"#,
            br#"{"client":"k","latitude":"1","longitude":0}"#,
            br#"{"latitude":1,"longitude":0}"#,
            br#"{"client":"k","latitude":1}"#,
            br#"["k",1,2,"3"]"#,
            br#"["k",1,2]"#,
            br#"{"client":"k","latitude":1,"longitude":0} trailing"#,
            b"{not json",
            b"",
            b"null",
            "{\"client\":\"caf\u{e9}\",\"latitude\":1,\"longitude\":0,\"time\":\"\u{2028}\"}".as_bytes(),
        ];
        let clock = || Timestamp::new(7, 0).expect("a time");
        for body in bodies {
            assert_eq!(
                iamat_line(body, clock),
                through_value(body),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
