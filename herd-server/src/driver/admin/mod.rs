//! The admin address: `GET /metrics` (Prometheus text format), `GET /health` and `GET /status` (JSON),
//! and the live page of the herd: `GET /`, `/herd`, `/events`, `/land.json`, `/records` (see [`live`]).
//!
//! Its figures are counted in [`crate::driver::metrics`].
//!
//! The door is HTTP/1.1 by hyper, routed by axum, with keep-alive, `HEAD` (the `GET` answer without
//! its body), a request head of at most [`MAX_REQUEST`] bytes read within [`REQUEST_TIMEOUT`] and every
//! answer but `/events` (server-sent events) within [`ANSWER_TIMEOUT`]. It guards itself
//! ([`AdminGuard`]): a connection cap of its own, `/events` places shared out by address, a `Host`
//! check that keeps pages of other sites out (421), and, for requests from beyond loopback when the herd
//! has a secret, a bearer token derived from it (401 without it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tower::Service as _;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn, Instrument as _};

use crate::driver::admin::state::{AdminState, ClientAddr, StreamProgress};
use crate::driver::shared::Lifecycle;

pub mod guard;
pub mod live;
pub(crate) mod state;
pub mod streams;
pub(crate) mod view;
pub use guard::{token, AdminGuard, TOKEN_LABEL};

/// Longest request head read.
pub const MAX_REQUEST: usize = 8 * 1024;
/// A request head must arrive within this (and an idle kept-alive connection is closed after it).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// When the server begins to stop, how long an admin connection may still bring a request (answered,
/// `/health` with 503) before it is closed once idle.
pub const DRAIN: Duration = Duration::from_millis(250);
/// Every answer but `/events` is sent within this, or 408.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The door's routes and guards. Every route but `/events` answers within [`ANSWER_TIMEOUT`]
/// (408 past it); request bodies are refused past [`MAX_REQUEST`] (413): the door takes no input.
fn router(state: AdminState) -> Router {
    let timed = Router::new()
        .route("/", get(page))
        .route("/herd", get(herd))
        .route("/land.json", get(land))
        .route("/records", get(records))
        .route("/metrics", get(metrics_route))
        .route("/health", get(health))
        .route("/status", get(status_route))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            ANSWER_TIMEOUT,
        ));
    Router::new()
        .route("/events", get(live::events))
        .merge(timed)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(RequestBodyLimitLayer::new(MAX_REQUEST))
        .with_state(state)
}

/// Every request passes here first: the Host check (421), then the token (401).
async fn guard(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let guard = &state.spec.admin;
    let host = request
        .headers()
        .get(header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    // No Host at all is no browser (they always send one): a script or an HTTP/1.0 scraper.
    if host.as_deref().is_some_and(|h| !guard.host_allowed(h)) {
        state.stats.admin_refused("host");
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "this admin door answers only to an IP address, localhost or a name in [admin] hosts\n",
        )
            .into_response();
    }
    let from = request
        .extensions()
        .get::<ClientAddr>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |f| f.0.ip());
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|a| a.as_bytes());
    if !guard.authorized(from, authorization) {
        state.stats.admin_refused("token");
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a request from beyond loopback needs the herd's admin token (herd-server admin-token)\n",
        )
            .into_response();
    }
    next.run(request).await
}

async fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        live::PAGE,
    )
        .into_response()
}

fn json_answer(code: StatusCode, v: &serde_json::Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{v}\n"),
    )
        .into_response()
}

async fn herd(State(state): State<AdminState>) -> Response {
    let herd = live::gather(&state, &mut Default::default()).await;
    json_answer(StatusCode::OK, &herd)
}

async fn land() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        live::land_json(),
    )
        .into_response()
}

async fn records(State(state): State<AdminState>, uri: Uri) -> Response {
    let (code, v) = live::records(&state, uri.query().unwrap_or(""));
    json_answer(StatusCode::from_u16(code).unwrap_or(StatusCode::OK), &v)
}

async fn metrics_route(State(state): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        view::metrics(&state),
    )
        .into_response()
}

async fn health(State(state): State<AdminState>) -> Response {
    if state.life.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response()
    } else {
        "ok\n".into_response()
    }
}

async fn status_route(State(state): State<AdminState>, uri: Uri) -> Response {
    let query = uri.query().unwrap_or("");
    let mut s = view::status(&state);
    // `?recent[=SEQ&boot=B]`: also the samples for a live page (see `live`).
    if query
        .split('&')
        .any(|p| p.split('=').next() == Some("recent"))
    {
        s["recent"] = state.live.recent(live::since_of(query));
    }
    json_answer(StatusCode::OK, &s)
}

async fn not_found(method: Method) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "only GET\n",
        )
            .into_response();
    }
    (
        StatusCode::NOT_FOUND,
        "not found: GET /, /herd, /events, /land.json, /records, /metrics, /health or /status\n",
    )
        .into_response()
}

/// Serves the admin endpoint on `listener` until shutdown: HTTP/1.1 by hyper, routed by axum. Each
/// connection takes one of [`AdminGuard::max_connections`] places (its own budget, apart from the
/// clients'); past them a connection is closed at once, so no number of idle admin connections can
/// hold the process's file descriptors. The cap is on connections, taken at accept, not a tower layer:
/// `tower::limit` bounds requests in flight, and an idle connection has none.
pub(crate) async fn serve(state: AdminState, listener: TcpListener) {
    let local = listener
        .local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    let max = state.spec.admin.max_connections;
    info!(admin = %local, max_connections = max, "admin endpoint listening");
    // The rates' history is kept from the start, so a page opened later shows the last minutes.
    let life = state.life.clone();
    life.tracker
        .spawn(live::keep_history(state.clone()).in_current_span());
    let app = router(state.clone());
    let places = Arc::new(Semaphore::new(max));
    let mut said = false;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = life.shutdown.cancelled() => break,
        };
        let (stream, from) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                debug!(cause = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            state.stats.admin_refused("max-connections");
            if !std::mem::replace(&mut said, true) {
                warn!(max_connections = max, first = %from,
                    "admin door at its connection limit: closing connections over it");
            }
            // A reset, not a FIN: the socket is gone at once (no TIME_WAIT, no close
            // handshake), which is all a flood past the cap costs.
            let _ = stream.set_zero_linger();
            drop(stream);
            // The door shares its event loop with the clients: a burst of refusals must not
            // run as one long turn in front of their replies.
            tokio::task::yield_now().await;
            continue;
        };
        let (life, app) = (life.clone(), app.clone());
        state.life.tracker.spawn(async move {
            connection(&life, stream, from, app).await;
            drop(place);
        });
    }
}

/// One admin connection, kept alive between requests: a request head must come within
/// [`REQUEST_TIMEOUT`] (the same bound holds an idle connection) and fit in [`MAX_REQUEST`] bytes
/// (431 past it). An `/events` stream whose page takes no event for [`live::WRITE_TIMEOUT`] is
/// closed. Ends early, between requests, when the server stops.
async fn connection(life: &Lifecycle, stream: TcpStream, from: SocketAddr, app: Router) {
    let progress = StreamProgress::new();
    let p = progress.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ClientAddr(from));
        request.extensions_mut().insert(p.clone());
        let mut app = app.clone();
        async move { app.call(request.map(Body::new)).await }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(REQUEST_TIMEOUT)
        .max_buf_size(MAX_REQUEST)
        .keep_alive(true)
        // A client that sends its request and shuts its side (`printf 'GET …' | nc`, a script) still
        // gets the answer, as it did before hyper.
        .half_close(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut check = tokio::time::interval(Duration::from_millis(500));
    let drain = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(drain);
    let (mut stopping, mut draining) = (false, false);
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    debug!(cause = %e, "admin connection ended");
                }
                return;
            }
            // A request already sent when the server begins to stop is still answered (`/health`
            // says 503): the connection closes once idle, after [`DRAIN`].
            _ = life.shutdown.cancelled(), if !stopping => {
                stopping = true;
                draining = true;
                drain.as_mut().reset(tokio::time::Instant::now() + DRAIN);
            }
            _ = drain.as_mut(), if draining => {
                draining = false;
                conn.as_mut().graceful_shutdown();
            }
            _ = check.tick() => if progress.stalled(live::WRITE_TIMEOUT) {
                debug!(peer = %from, "live page took no event in time; closing");
                return;
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::driver::server::{run_with_admin, ServerSpec};
    use crate::places::Places;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::sync::CancellationToken;

    /// Server `Alford` of a herd whose other server, `Ball`, has an admin address nobody listens on.
    async fn alford() -> (
        std::net::SocketAddr,
        std::net::SocketAddr,
        CancellationToken,
    ) {
        let config = Config::parse(
            "[[server]]\nname = \"Alford\"\nlisten = \"127.0.0.1:1\"\nneighbors = []\n\n\
             [[server]]\nname = \"Ball\"\nlisten = \"127.0.0.1:2\"\nneighbors = []\n",
            "test",
            None,
        )
        .unwrap();
        let mut spec = ServerSpec::from_config(&config, "Alford", Places::offline()).unwrap();
        let listener = crate::driver::listener::bind("127.0.0.1:0").await.unwrap();
        let admin = crate::driver::listener::bind("127.0.0.1:0").await.unwrap();
        // A port that was just free: Ball does not answer there.
        let silent = crate::driver::listener::bind("127.0.0.1:0").await.unwrap();
        let (addr, admin_addr) = (listener.local_addr().unwrap(), admin.local_addr().unwrap());
        spec.admins = vec![
            ("Alford".into(), admin_addr.to_string()),
            ("Ball".into(), silent.local_addr().unwrap().to_string()),
        ];
        drop(silent);
        let shutdown = CancellationToken::new();
        tokio::spawn(run_with_admin(
            listener,
            Some(admin),
            spec,
            shutdown.clone(),
        ));
        (addr, admin_addr, shutdown)
    }

    /// Sends `GET path` and reads `n` bytes or to the end, whichever comes first.
    async fn get(admin: std::net::SocketAddr, path: &str, n: usize) -> String {
        let mut s = TcpStream::connect(admin).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut all = Vec::new();
        (&mut s).take(n as u64).read_to_end(&mut all).await.unwrap();
        String::from_utf8(all).unwrap()
    }

    fn body(answer: &str) -> serde_json::Value {
        serde_json::from_str(answer.split_once("\r\n\r\n").unwrap().1).unwrap()
    }

    #[tokio::test]
    async fn the_live_page_and_its_feeds() {
        let (addr, admin, shutdown) = alford().await;
        let page = get(admin, "/", 1 << 20).await;
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(
            page.contains("content-type: text/html; charset=utf-8\r\n"),
            "{page}"
        );
        assert!(page.contains("<title>herd — live</title>") && page.contains("</html>"));
        // Self-contained: nothing is loaded from another host.
        for outside in ["http://", "https://", "//cdn"] {
            let hits: Vec<&str> = page
                .lines()
                .filter(|l| l.contains(outside) && !l.contains("http://www.w3.org/2000/svg"))
                .collect();
            assert!(hits.is_empty(), "{outside} in {hits:?}");
        }

        let land = body(&get(admin, "/land.json", 1 << 20).await);
        let cells = land["cells"].as_array().unwrap();
        assert!(cells.len() > 3000, "{}", cells.len());
        assert_eq!(land["cell"], crate::places::offline::LAND_CELL);

        // A page is watching once the herd is gathered: an IAMAT is then sampled.
        let herd = body(&get(admin, "/herd", 1 << 20).await);
        assert_eq!(herd["server"], "Alford");
        let servers = herd["servers"].as_array().unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0]["name"], "Alford");
        assert_eq!(servers[0]["up"], true);
        assert_eq!(servers[0]["status"]["records"], 0);
        assert_eq!(servers[1]["name"], "Ball");
        assert_eq!(servers[1]["up"], false, "{herd}");
        assert!(servers[1]["error"].as_str().is_some());
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"IAMAT kiwi +34.068930-118.445127 1\nWHATSAT kiwi 10 1\n")
            .await
            .unwrap();
        c.shutdown().await.unwrap();
        let mut replies = Vec::new();
        c.read_to_end(&mut replies).await.unwrap();
        let herd = body(&get(admin, "/herd", 1 << 20).await);
        let me = &herd["servers"][0]["status"];
        assert_eq!(me["records"], 1);
        assert_eq!(me["fingerprint"].as_str().unwrap().len(), 16);
        assert_eq!(me["recent"]["updates"][0]["client"], "kiwi");
        assert_eq!(me["recent"]["updates"][0]["lat"], 34.06893);
        assert_eq!(me["recent"]["whatsats"][0]["radius_km"], 10.0);

        // `/events` is a stream: its head, the retry hint, then an event per tick.
        let events = get(admin, "/events", 1000).await;
        let (head, stream) = events.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{events}");
        assert!(head.contains("content-type: text/event-stream"), "{events}");
        assert!(!head.contains("content-length"), "{events}");
        let first = stream.contains("retry: 1000\n\n") && stream.contains("data: {");
        assert!(first, "{events}");
        shutdown.cancel();
    }

    /// A page that opens late still draws what is held: `/records` is an even, bounded sample of
    /// the cache, or one client found by id; and the rates' history has points from the start.
    #[tokio::test]
    async fn records_held_are_sampled_and_found_and_rates_kept() {
        let (addr, admin, shutdown) = alford().await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut lines = String::new();
        for i in 0..50 {
            lines.push_str(&format!("IAMAT c{i} +{}.5-118.25 1\n", i % 80));
        }
        lines.push_str("IAMAT caf%C3%A9+x +1+2 3\n");
        c.write_all(lines.as_bytes()).await.unwrap();
        c.shutdown().await.unwrap();
        let mut replies = Vec::new();
        c.read_to_end(&mut replies).await.unwrap();

        let all = body(&get(admin, "/records", 1 << 20).await);
        assert_eq!(all["held"], 51);
        let records = all["records"].as_array().unwrap();
        assert_eq!(records.len(), 51);
        assert_eq!(records[3]["client"], "c3");
        assert_eq!(records[3]["server"], "Alford");
        assert_eq!(records[3]["lat"], 3.5);
        assert_eq!(records[3]["time"], 1.0);
        let some = body(&get(admin, "/records?max=10", 1 << 20).await);
        let some = some["records"].as_array().unwrap();
        assert_eq!(some.len(), 10, "{some:?}");
        // Even over the cache, not its first ten.
        assert!(some.iter().any(|r| r["client"] == "c45"), "{some:?}");

        let found = body(&get(admin, "/records?client=c7", 1 << 20).await);
        assert_eq!(
            (found["found"].clone(), found["record"]["client"].clone()),
            (true.into(), "c7".into())
        );
        // The id is percent-decoded: `caf%C3%A9+x` as sent is found by its escapes' escapes.
        let found = body(&get(admin, "/records?client=caf%25C3%25A9%2Bx", 1 << 20).await);
        assert_eq!(found["record"]["client"], "caf%C3%A9+x", "{found}");
        let missing = get(admin, "/records?client=nobody", 1 << 20).await;
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        assert_eq!(body(&missing)["found"], false);

        // The history takes a point a second from the start, and a page's first ask gets it.
        let t0 = std::time::Instant::now();
        let history = loop {
            let s = body(&get(admin, "/status?recent", 1 << 20).await);
            let h = s["recent"]["history"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if h.last().is_some_and(|p| p[1] == 51) || t0.elapsed() > Duration::from_secs(10) {
                break h;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let last = history.last().expect("a point within 10 s");
        assert_eq!(last.as_array().unwrap().len(), 5, "{last}");
        assert_eq!(last[1], 51, "IAMATs counted: {history:?}");
        shutdown.cancel();
    }

    #[test]
    fn hosts_allowed_are_ip_literals_localhost_and_configured_names() {
        let guard = AdminGuard {
            hosts: vec!["herd-1.example.net".into()],
            ..AdminGuard::default()
        };
        for ok in [
            "127.0.0.1",
            "127.0.0.1:12100",
            "10.1.2.3:80",
            "[::1]:12100",
            "::1",
            "localhost",
            "LOCALHOST:8080",
            "herd-1.example.net:12100",
            "Herd-1.Example.Net.",
        ] {
            assert!(guard.host_allowed(ok), "{ok}");
        }
        for foreign in [
            "rebind.attacker.example",
            "rebind.attacker.example:12100",
            "localhost.attacker.example",
            "127.0.0.1.nip.io",
            "",
            "[::1",
        ] {
            assert!(!guard.host_allowed(foreign), "{foreign}");
        }
    }

    #[test]
    fn the_token_is_derived_from_the_secret_and_asked_only_beyond_loopback() {
        let t = token("s3cret");
        assert_eq!(t.len(), 64);
        assert_eq!(t, token("s3cret"), "the same on every server");
        assert_ne!(t, token("other"));
        assert!(!t.contains("s3cret"));
        let guard = AdminGuard {
            tokens: vec![token("new"), token("old")],
            ..AdminGuard::default()
        };
        let far = std::net::IpAddr::from([192, 0, 2, 7]);
        let near = std::net::IpAddr::from([127, 0, 0, 1]);
        assert!(guard.authorized(near, None));
        assert!(!guard.authorized(far, None));
        assert!(!guard.authorized(far, Some(b"Bearer nope")));
        assert!(!guard.authorized(far, Some(token("new").as_bytes())));
        let bearer = |s: &str| format!("Bearer {}", token(s));
        assert!(guard.authorized(far, Some(bearer("new").as_bytes())));
        assert!(guard.authorized(far, Some(bearer("old").as_bytes())));
        assert!(
            AdminGuard::default().authorized(far, None),
            "no secret, no token"
        );
    }
}
