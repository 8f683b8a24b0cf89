//! A fake Places server on loopback: records every request and answers what the test scripted.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, e.g. `/v1/places:searchNearby`.
    pub path: String,
    /// The raw query string.
    pub query: String,
    /// Headers, lower-case names.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Recorded {
    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of query parameter `name` (undecoded but for `%2C` and `%2B`).
    pub fn param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| v.replace("%2C", ",").replace("%2B", "+"))
        })
    }
}

/// What the fake answers.
#[derive(Debug, Clone)]
pub struct Script {
    /// HTTP status.
    pub status: u16,
    /// Body, sent as `application/json`.
    pub body: String,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Script {
    /// HTTP 200 with `body`.
    pub fn ok(body: &str) -> Script {
        Script {
            status: 200,
            body: body.to_owned(),
            delay: Duration::ZERO,
        }
    }

    /// `status` with `body`.
    pub fn status(status: u16, body: &str) -> Script {
        Script {
            status,
            body: body.to_owned(),
            delay: Duration::ZERO,
        }
    }

    /// The same, after `delay`.
    pub fn after(mut self, delay: Duration) -> Script {
        self.delay = delay;
        self
    }
}

#[derive(Clone)]
struct Shared {
    script: Arc<Mutex<Script>>,
    seen: Arc<Mutex<Vec<Recorded>>>,
}

/// A running fake; it stops when the test's runtime ends.
pub struct FakePlaces {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Shared,
}

impl FakePlaces {
    /// Starts a fake on 127.0.0.1, port 0, answering `script` to every request.
    pub async fn start(script: Script) -> FakePlaces {
        let shared = Shared {
            script: Arc::new(Mutex::new(script)),
            seen: Arc::default(),
        };
        let app = Router::new().fallback(handler).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakePlaces { addr, shared }
    }

    /// The URL of `path` on the fake.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Changes what it answers from now on.
    pub fn set(&self, script: Script) {
        *self.shared.script.lock().unwrap() = script;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.seen.lock().unwrap().clone()
    }
}

async fn handler(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.seen.lock().unwrap().push(Recorded {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: query.unwrap_or_default(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let script = shared.script.lock().unwrap().clone();
    tokio::time::sleep(script.delay).await;
    (
        StatusCode::from_u16(script.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        script.body,
    )
        .into_response()
}
