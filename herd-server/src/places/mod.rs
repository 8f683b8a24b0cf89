//! Places look-ups for WHATSAT: one type in front of three back-ends, with a small cache.
//!
//! Whatever the back-end, the answer is a legacy Nearby Search JSON object (`html_attributions`,
//! `results`, `status`, and `error_message` when it failed) — PROTOCOL.md §3 and §8. Failures never
//! escape as errors: they become an answer whose `status` says why.
//!
//! Every back-end sits behind a cache (the offline one too: it saves building and printing the JSON):
//! identical look-ups (same location text, radius and bound)
//! within the TTL are served from it, concurrent identical look-ups share one upstream call, and at most
//! `max_in_flight` upstream calls run at once — so a burst of WHATSATs cannot burn an API quota.
//! The radius in the cache key (and in the upstream call) is whole metres, so a client cannot make
//! every look-up a miss by varying the radius's decimals.
//!
//! # The bill
//! A network back-end's calls cost money, so each is paid from a [`ClientBudget`]: a token bucket of the client
//! connection and one of the server ([`PlacesBudget`]). A look-up that finds no answer cached takes a
//! token from both; with either empty it is answered at no cost with the Places status
//! `OVER_QUERY_LIMIT` and no results, and counted. Answers from the cache are free, and the offline
//! back-end costs nothing, so neither takes a token.

mod google;
mod legacy;
pub mod offline;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{OnceCell, Semaphore};

use crate::config::{Backend, PlacesBudget, PlacesConfig};
use crate::node::Lookup;

/// The HTTP client the network back-ends use (one per process; it pools connections).
pub type HttpClient = reqwest::Client;

/// A look-up's answer: the JSON object, and its wire form once asked for (cached answers are
/// printed once, not once per WHATSAT).
#[derive(Debug, Clone)]
pub struct Answer {
    /// The Nearby Search JSON object.
    pub json: Value,
    pretty: std::sync::OnceLock<Vec<u8>>,
}

impl Answer {
    /// An answer holding `json`.
    pub fn new(json: Value) -> Self {
        Answer {
            json,
            pretty: std::sync::OnceLock::new(),
        }
    }

    /// An answer that reports a failure: no results, a status and a message.
    pub fn error(status: &str, message: impl Into<String>) -> Self {
        Answer::new(json!({
            "html_attributions": [],
            "results": [],
            "status": status,
            "error_message": message.into(),
        }))
    }

    /// The answer's `status` (`OK`, `ZERO_RESULTS`, `REQUEST_DENIED`, …).
    pub fn status(&self) -> &str {
        self.json
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("UNKNOWN_ERROR")
    }

    /// Pretty-printed JSON, as it goes on the wire (framing is herd-proto's `write_whatsat`).
    pub fn to_pretty(&self) -> &[u8] {
        self.pretty.get_or_init(|| {
            serde_json::to_vec_pretty(&self.json).unwrap_or_else(|_| b"{}".to_vec())
        })
    }

    fn ok(results: Vec<Value>, attributions: Vec<Value>) -> Self {
        let status = if results.is_empty() {
            "ZERO_RESULTS"
        } else {
            "OK"
        };
        Answer::new(
            json!({ "html_attributions": attributions, "results": results, "status": status }),
        )
    }
}

enum Fetcher {
    Offline,
    Google(google::Google),
    Legacy(legacy::Legacy),
}

type Slot = Arc<OnceCell<Arc<Answer>>>;

#[derive(Default)]
struct AnswerCache {
    slots: HashMap<String, (Instant, Slot)>,
    order: VecDeque<(Instant, String)>,
}

/// The Places service the servers share (cheap to clone).
#[derive(Clone)]
pub struct Places {
    inner: Arc<PlacesInner>,
}

struct PlacesInner {
    client: Fetcher,
    /// The process's HTTP client (also the admin door's, to ask the herd's other servers).
    http: reqwest::Client,
    backend: Backend,
    timeout: Duration,
    ttl: Duration,
    max_entries: usize,
    cache: Mutex<AnswerCache>,
    in_flight: Semaphore,
    budget: PlacesBudget,
    /// Look-ups answered from the cache, and those that were not (for the admin endpoint's metrics).
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Places {
    /// Builds the back-end of `cfg`, reusing `http` for every call (reqwest pools connections).
    pub fn new(cfg: &PlacesConfig, http: reqwest::Client) -> Self {
        let key = cfg.key.clone().unwrap_or_default();
        let client = match cfg.backend {
            Backend::Offline => Fetcher::Offline,
            Backend::Google => {
                Fetcher::Google(google::Google::new(http.clone(), cfg.url.clone(), key))
            }
            Backend::GoogleLegacy => {
                Fetcher::Legacy(legacy::Legacy::new(http.clone(), cfg.url.clone(), key))
            }
        };
        if cfg.backend == Backend::Offline {
            // Build the index now, beside the start rather than in its way (it takes a moment, far
            // longer unoptimised), so the first WHATSAT does not wait for it; one that comes sooner
            // waits for this build rather than starting a second.
            let _ = std::thread::Builder::new()
                .name("places-index".into())
                .spawn(|| {
                    offline::index();
                });
        }
        Places {
            inner: Arc::new(PlacesInner {
                client,
                http,
                backend: cfg.backend,
                timeout: cfg.timeout,
                ttl: cfg.cache_ttl,
                max_entries: cfg.cache_entries,
                cache: Mutex::new(AnswerCache::default()),
                in_flight: Semaphore::new(cfg.max_in_flight),
                budget: cfg.budget,
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
            }),
        }
    }

    /// The offline back-end, for tests and tools.
    pub fn offline() -> Self {
        let cfg = PlacesConfig {
            backend: Backend::Offline,
            url: None,
            timeout: Duration::from_secs(5),
            key: None,
            cache_ttl: Duration::ZERO,
            cache_entries: 0,
            max_in_flight: 1,
            budget: PlacesBudget::default(),
        };
        Self::new(&cfg, reqwest::Client::new())
    }

    /// The process's HTTP client (it pools connections).
    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// Which back-end answers.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// Look-ups answered from the cache, and look-ups that went to the back-end, so far.
    pub fn cache_counts(&self) -> (u64, u64) {
        (
            self.inner.hits.load(Ordering::Relaxed),
            self.inner.misses.load(Ordering::Relaxed),
        )
    }

    /// A server's budget of upstream calls ([`PlacesBudget`]'s server bucket, full); its
    /// connections take theirs from it ([`ServerBudget::connection`]).
    pub fn server_budget(&self) -> ServerBudget {
        let b = self.inner.budget;
        ServerBudget {
            budget: b,
            bucket: Arc::new(Mutex::new(Bucket::full(b.server_rate, b.server_burst))),
        }
    }

    /// Looks up the places near `q`: always an answer, within the time-out. A look-up that goes
    /// upstream (no answer cached, a network back-end) is paid from `budget`; when it cannot be, the
    /// answer is `OVER_QUERY_LIMIT` and the second value names the budget spent.
    pub async fn lookup(
        &self,
        q: &Lookup,
        budget: &mut ClientBudget,
    ) -> (Arc<Answer>, Option<Spent>) {
        let inner = &self.inner;
        let paid = !matches!(inner.client, Fetcher::Offline);
        if inner.ttl.is_zero() || inner.max_entries == 0 {
            if paid {
                if let Err(spent) = budget.take() {
                    return (Arc::new(over_budget(spent)), Some(spent));
                }
            }
            inner.misses.fetch_add(1, Ordering::Relaxed);
            return (Arc::new(inner.fetch(q).await), None);
        }
        let key = format!(
            "{} {} {}",
            q.record.location.as_str(),
            whole_metres(q),
            q.bound
        );
        let slot = inner.slot(&key);
        if slot.initialized() {
            inner.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            // A look-up that shares a call already under way pays too: it errs towards the budget.
            if paid {
                if let Err(spent) = budget.take() {
                    return (Arc::new(over_budget(spent)), Some(spent));
                }
            }
            inner.misses.fetch_add(1, Ordering::Relaxed);
        }
        let answer = slot
            .get_or_init(|| async { Arc::new(inner.fetch(q).await) })
            .await
            .clone();
        if !matches!(answer.status(), "OK" | "ZERO_RESULTS") {
            // Failures are not remembered: the next look-up tries again.
            let mut cache = inner.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache
                .slots
                .get(&key)
                .is_some_and(|(_, s)| Arc::ptr_eq(s, &slot))
            {
                cache.slots.remove(&key);
            }
        }
        (answer, None)
    }
}

/// The radius of `q` in whole metres (at least 1): what the cache key holds and what goes upstream.
pub(crate) fn whole_metres(q: &Lookup) -> u64 {
    ((q.radius.km() * 1000.0).round() as u64).max(1)
}

/// Which budget could not pay for an upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spent {
    /// The client connection's.
    Connection,
    /// The server's.
    Server,
}

impl Spent {
    /// Its name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Spent::Connection => "connection",
            Spent::Server => "server",
        }
    }
}

/// The answer to a look-up no budget can pay for: Google's own status for a quota spent.
fn over_budget(spent: Spent) -> Answer {
    Answer::error(
        "OVER_QUERY_LIMIT",
        format!(
            "this {} has used its budget of Places look-ups; try again in a few seconds",
            spent.as_str()
        ),
    )
}

/// A token bucket: `rate` tokens a second, at most `burst` held.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: f64, burst: u32) -> Self {
        Bucket {
            rate,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            at: Instant::now(),
        }
    }

    /// Refills for the time since the last call; whether a whole token is there.
    fn has_token(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
        self.tokens >= 1.0
    }
}

/// A server's bucket of upstream calls (shared by its connections).
#[derive(Clone)]
pub struct ServerBudget {
    budget: PlacesBudget,
    bucket: Arc<Mutex<Bucket>>,
}

impl ServerBudget {
    /// A new connection's budget: its own full bucket, and this server's.
    pub fn connection(&self) -> ClientBudget {
        ClientBudget {
            own: Bucket::full(self.budget.connection_rate, self.budget.connection_burst),
            server: self.bucket.clone(),
        }
    }
}

/// What one client connection may spend on upstream calls: its bucket and its server's.
pub struct ClientBudget {
    own: Bucket,
    server: Arc<Mutex<Bucket>>,
}

impl ClientBudget {
    /// Takes a token from both buckets, or from neither and says which one was empty.
    fn take(&mut self) -> Result<(), Spent> {
        let now = Instant::now();
        if !self.own.has_token(now) {
            return Err(Spent::Connection);
        }
        let mut server = self.server.lock().unwrap_or_else(|p| p.into_inner());
        if !server.has_token(now) {
            return Err(Spent::Server);
        }
        server.tokens -= 1.0;
        self.own.tokens -= 1.0;
        Ok(())
    }
}

impl PlacesInner {
    /// The cache slot for `key`: a fresh one if there is none or it expired.
    fn slot(&self, key: &str) -> Slot {
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        // Expire from the front of the insertion order; cap the size.
        while let Some((at, k)) = cache.order.front() {
            let expired = now.duration_since(*at) >= self.ttl;
            if !expired && cache.slots.len() < self.max_entries {
                break;
            }
            let (at, k) = (*at, k.clone());
            cache.order.pop_front();
            if cache.slots.get(&k).is_some_and(|(t, _)| *t == at) {
                cache.slots.remove(&k);
            }
        }
        if let Some((at, slot)) = cache.slots.get(key) {
            if now.duration_since(*at) < self.ttl {
                return slot.clone();
            }
        }
        let slot = Slot::default();
        cache.slots.insert(key.to_owned(), (now, slot.clone()));
        cache.order.push_back((now, key.to_owned()));
        slot
    }

    async fn fetch(&self, q: &Lookup) -> Answer {
        let Ok(_permit) = self.in_flight.acquire().await else {
            return Answer::error("UNKNOWN_ERROR", "Places client is shutting down");
        };
        if matches!(self.client, Fetcher::Offline) {
            // Not counted against the look-up's time-out: the data is here, only not yet indexed.
            offline::ready().await;
        }
        let call = async {
            match &self.client {
                Fetcher::Offline => offline::search(q),
                Fetcher::Google(g) => g.search(q).await,
                Fetcher::Legacy(l) => l.search(q).await,
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(answer) => answer,
            Err(_) => Answer::error(
                "UNKNOWN_ERROR",
                format!(
                    "Places look-up timed out after {} ms",
                    self.timeout.as_millis()
                ),
            ),
        }
    }
}

/// Sends a request and reads its body as JSON: the HTTP status and the value, or the failure as an
/// answer (transport error, time-out, a body that is not JSON).
async fn send_json(
    request: reqwest::RequestBuilder,
) -> Result<(reqwest::StatusCode, Value), Answer> {
    let response = request.send().await.map_err(transport_error)?;
    let status = response.status();
    let body = response.bytes().await.map_err(transport_error)?;
    Ok((status, parse_body(status, &body)?))
}

/// Reads a body as JSON, or explains why it is not.
fn parse_body(status: reqwest::StatusCode, body: &[u8]) -> Result<Value, Answer> {
    serde_json::from_slice::<Value>(body).map_err(|_| {
        Answer::error(
            "UNKNOWN_ERROR",
            format!(
                "Places answered HTTP {} with a body that is not JSON",
                status.as_u16()
            ),
        )
    })
}

/// A transport failure (connect, reset, time-out inside reqwest) as an answer.
fn transport_error(err: reqwest::Error) -> Answer {
    // reqwest's message names the URL but never the key (it is in a header, or stripped below).
    let msg = err.without_url().to_string();
    Answer::error("UNKNOWN_ERROR", format!("Places request failed: {msg}"))
}
