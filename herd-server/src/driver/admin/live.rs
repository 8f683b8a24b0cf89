//! The live page of the herd: `GET /` (one self-contained page), `GET /herd` (every server's `/status`,
//! gathered by this one), `GET /events` (the same, pushed as server-sent events at a fixed rate),
//! `GET /land.json` (where the offline places are: the map's land) and `GET /records` (a bounded sample
//! of the records held, drawn when the page opens, or one client's record: the page's search).
//!
//! # What a page sees when it opens
//! The records the server already holds, as an even sample of at most [`SAMPLE`] of them (a million
//! clients are never sent whole: the sample shows where they are, and its size is said), and the last
//! [`HISTORY`] seconds of the server's rates (IAMAT, WHATSAT, records flooded, refusals), sampled once a
//! second by a task of the admin endpoint, so the page's charts start with the last minutes.
//!
//! # Why a page never slows the herd
//! The page is fed at a fixed rate ([`TICK`]) whatever the IAMAT rate: each tick gathers the servers'
//! `/status` (concurrently, each within [`ASK_TIMEOUT`]) and sends one event. What clients do is
//! *sampled*: a connection offers at most one IAMAT per batch it answers (and each WHATSAT that goes to
//! the Places back-end) to a small ring ([`Live`]), only while a page watches (gathering marks every
//! server asked as watched for [`WATCH_FOR`]), and only if the ring's lock is free (`try_lock`): a
//! connection never waits for the admin endpoint. Unwatched, a batch pays one clock read and one
//! atomic load.
//!
//! The ring decides nothing (it is no herd rule), so it lives here with the admin endpoint rather than
//! in the sans-IO node; it holds the newest [`UPDATES`] IAMATs and [`ASKS`] WHATSATs of this server.
//! Each server samples only what its own clients sent: the page gathers every server's ring, so it sees
//! the whole herd without a record being counted once per server it was flooded to.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use herd_proto::{Message, Timestamp};
use serde_json::{json, Value};

use crate::driver::server::Shared;
use crate::node::Lookup;

/// The page: HTML, CSS and script in one file, compiled in (nothing is fetched from elsewhere).
pub(crate) const PAGE: &str = include_str!("page.html");

/// How often `/events` sends the herd: the page's refresh rate, whatever the request rate.
pub const TICK: Duration = Duration::from_millis(400);
/// How long a server's `/status` may take before it is shown as down (less than a [`TICK`], so one
/// silent server never slows the page's refresh).
pub const ASK_TIMEOUT: Duration = Duration::from_millis(300);
/// How long a server samples its clients after a page last asked for its samples.
pub const WATCH_FOR: Duration = Duration::from_secs(5);
/// Newest IAMATs kept per server.
pub const UPDATES: usize = 64;
/// Newest WHATSATs kept per server.
pub const ASKS: usize = 16;
/// Most `/events` streams served at once (each costs a gathering per tick).
pub const MAX_STREAMS: usize = 16;
/// Most `/events` streams of one address: a quarter of [`MAX_STREAMS`], so one address (a script
/// opening streams and leaving them idle) cannot lock the operator out of the live page.
pub const MAX_STREAMS_PER_ADDRESS: usize = MAX_STREAMS / 4;
/// Most records `/records` sends: an even sample of the cache past that.
pub const SAMPLE: usize = 2000;
/// Seconds of rates kept for a page that opens (one point a second).
pub const HISTORY: usize = 300;
/// How often the rates' history takes a point.
pub const HISTORY_EVERY: Duration = Duration::from_secs(1);
/// A page that does not take an event within this is dropped.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `/status` answer read from another server.
const MAX_STATUS_ANSWER: usize = 1 << 20;

/// A sampled IAMAT.
struct Update {
    seq: u64,
    client: String,
    lat: f64,
    lon: f64,
    /// Receive time, seconds since the epoch.
    time: f64,
}

/// A sampled WHATSAT (its centre is the client's record).
struct Ask {
    seq: u64,
    client: String,
    lat: f64,
    lon: f64,
    radius_km: f64,
    time: f64,
}

/// The rate counters at one moment ([`crate::driver::admin::rate_counters`]): cumulative, so a page turns two
/// points into rates.
#[derive(Clone, Copy)]
struct Point {
    /// Seconds since the epoch.
    time: f64,
    counts: [u64; 4],
}

#[derive(Default)]
struct Ring {
    /// Sequence number of the newest sample (of either kind).
    seq: u64,
    updates: VecDeque<Update>,
    asks: VecDeque<Ask>,
}

/// A server's samples for the live page, and whether a page is watching.
pub struct Live {
    /// Tells this run's sequence numbers from a previous run's (a restarted server counts from 0).
    boot: String,
    epoch: Instant,
    /// Milliseconds after `epoch` until which clients are sampled.
    watched_until: AtomicU64,
    ring: Mutex<Ring>,
    /// The `/events` streams open.
    pub(crate) streams: Arc<Mutex<Streams>>,
    /// The newest [`HISTORY`] points of the rate counters.
    history: Mutex<VecDeque<Point>>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            boot: format!("{:016x}", fastrand::u64(..)),
            epoch: Instant::now(),
            watched_until: AtomicU64::new(0),
            ring: Mutex::default(),
            streams: Arc::default(),
            history: Mutex::default(),
        }
    }
}

fn secs(t: Timestamp) -> f64 {
    t.as_nanos() as f64 / 1e9
}

fn push<T>(ring: &mut VecDeque<T>, item: T, max: usize) {
    if ring.len() == max {
        ring.pop_front();
    }
    ring.push_back(item);
}

impl Live {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A page asked for this server's samples: sample clients for [`WATCH_FOR`].
    pub fn watch(&self) {
        let until = self.now_ms() + WATCH_FOR.as_millis() as u64;
        self.watched_until.fetch_max(until, Ordering::Relaxed);
    }

    /// Whether a page has asked for samples lately.
    #[inline]
    pub fn watched(&self) -> bool {
        self.watched_until.load(Ordering::Relaxed) > self.now_ms()
    }

    /// A connection answered the IAMAT `line` at `received` (the last of its batch). Kept only while
    /// watched and when the ring is free.
    pub fn offer_iamat(&self, line: &[u8], received: Timestamp) {
        if !self.watched() {
            return;
        }
        let Ok(Message::IAmAt(m)) = Message::parse(line) else {
            return;
        };
        let update = Update {
            seq: 0,
            client: String::from_utf8_lossy(&m.client).into_owned(),
            lat: m.location.latitude(),
            lon: m.location.longitude(),
            time: secs(received),
        };
        if let Ok(mut ring) = self.ring.try_lock() {
            ring.seq += 1;
            let update = Update {
                seq: ring.seq,
                ..update
            };
            push(&mut ring.updates, update, UPDATES);
        }
    }

    /// A WHATSAT goes to the Places back-end at `received`. Kept only while watched and when the ring
    /// is free.
    pub fn offer_whatsat(&self, q: &Lookup, received: Timestamp) {
        if !self.watched() {
            return;
        }
        let ask = Ask {
            seq: 0,
            client: String::from_utf8_lossy(&q.record.client).into_owned(),
            lat: q.latitude(),
            lon: q.longitude(),
            radius_km: q.radius.km(),
            time: secs(received),
        };
        if let Ok(mut ring) = self.ring.try_lock() {
            ring.seq += 1;
            let ask = Ask {
                seq: ring.seq,
                ..ask
            };
            push(&mut ring.asks, ask, ASKS);
        }
    }

    /// Keeps a point of the rate counters (`counts` at `time`, seconds since the epoch), dropping
    /// the oldest past [`HISTORY`].
    pub fn keep_point(&self, time: f64, counts: [u64; 4]) {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        push(&mut h, Point { time, counts }, HISTORY);
    }

    /// The rates' history, oldest first: `[time, iamat, whatsat, flooded, refused]` a point.
    fn history(&self) -> Value {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.iter()
            .map(|p| {
                let [a, b, c, d] = p.counts;
                json!([p.time, a, b, c, d])
            })
            .collect()
    }

    /// The samples newer than `since` (`boot` and sequence number of the newest one already seen;
    /// everything when `boot` is another run's), and marks the server watched. A page's first ask
    /// (no `since`, or another run's) also gets the rates' history.
    pub fn recent(&self, since: Option<(&str, u64)>) -> Value {
        self.watch();
        let after = match since {
            Some((boot, seq)) if boot == self.boot => seq,
            _ => 0,
        };
        let history = (after == 0).then(|| self.history());
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let updates: Vec<Value> = ring
            .updates
            .iter()
            .filter(|u| u.seq > after)
            .map(|u| json!({"seq": u.seq, "client": u.client, "lat": u.lat, "lon": u.lon, "time": u.time}))
            .collect();
        let asks: Vec<Value> = ring
            .asks
            .iter()
            .filter(|a| a.seq > after)
            .map(|a| json!({"seq": a.seq, "client": a.client, "lat": a.lat, "lon": a.lon, "radius_km": a.radius_km, "time": a.time}))
            .collect();
        let mut v =
            json!({"boot": self.boot, "seq": ring.seq, "updates": updates, "whatsats": asks});
        if let Some(h) = history {
            v["history"] = h;
        }
        v
    }
}

/// Takes a point of the rate counters every [`HISTORY_EVERY`] until the server stops.
pub(crate) async fn keep_history(shared: std::sync::Arc<Shared>) {
    let mut tick = tokio::time::interval(HISTORY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.shutdown.cancelled() => return,
        }
        let counts = crate::driver::admin::rate_counters(&shared);
        shared.live.keep_point(secs(Timestamp::now()), counts);
    }
}

/// A held record as the page draws it.
fn record_json(line: &[u8]) -> Option<Value> {
    let r = herd_proto::AtRecord::parse(line).ok()?;
    Some(json!({
        "client": String::from_utf8_lossy(&r.client),
        "server": String::from_utf8_lossy(&r.server),
        "lat": r.location.latitude(),
        "lon": r.location.longitude(),
        "time": secs(r.time.value()),
    }))
}

/// `GET /records`: an even sample of at most [`SAMPLE`] held records (`?max=N` asks for fewer), with
/// how many are held; `GET /records?client=ID` (percent-encoded): that client's record, or 404.
/// The node is locked only to copy the sampled lines (evenly spaced, so the sample covers the whole
/// cache); they are parsed after.
pub(crate) fn records(shared: &Shared, query: &str) -> (u16, Value) {
    let mut max = SAMPLE;
    let mut client = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("max", m)) => max = m.parse::<usize>().map_or(SAMPLE, |m| m.min(SAMPLE)),
            Some(("client", c)) => client = Some(percent_decode(c)),
            _ => {}
        }
    }
    if let Some(client) = client {
        let line = shared.node().get(&client);
        return match line.as_deref().and_then(record_json) {
            Some(r) => (
                200,
                json!({"server": shared.spec.name, "found": true, "record": r}),
            ),
            None => (
                404,
                json!({"server": shared.spec.name, "found": false,
                       "client": String::from_utf8_lossy(&client)}),
            ),
        };
    }
    let (held, lines) = {
        let node = shared.node();
        let held = node.len();
        let max = max.min(held);
        // The k-th of `max` is at index k * held / max: exactly `max`, spread over the whole cache.
        let lines: Vec<Vec<u8>> = (0..max)
            .filter_map(|k| node.line_at(k * held / max))
            .collect();
        (held, lines)
    };
    let records: Vec<Value> = lines.iter().filter_map(|l| record_json(l)).collect();
    (
        200,
        json!({"server": shared.spec.name, "held": held, "records": records}),
    )
}

/// `%XX` escapes (and `+` for a space) of a query value, as bytes: a client id may be any bytes.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// `boot` and `seq` from a query such as `recent=12&boot=00ab…` (`recent` alone: everything).
pub(crate) fn since_of(query: &str) -> Option<(&str, u64)> {
    let mut boot = None;
    let mut seq = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("boot", b)) => boot = Some(b),
            Some(("recent", s)) => seq = s.parse().ok(),
            _ => {}
        }
    }
    Some((boot?, seq?))
}

/// `/land.json`: the cells of the offline places ([`crate::places::offline::land`]), computed once.
pub(crate) fn land_json() -> &'static str {
    static LAND: OnceLock<String> = OnceLock::new();
    LAND.get_or_init(|| {
        let cells: Vec<[f64; 2]> = crate::places::offline::land()
            .into_iter()
            .map(|(lat, lon)| [lat, lon])
            .collect();
        json!({
            "cell": crate::places::offline::LAND_CELL,
            "attribution": "GeoNames cities1000, CC BY 4.0",
            "cells": cells,
        })
        .to_string()
    })
}

/// `GET path` on another server's admin address `addr`: its JSON body, or why not, within
/// [`ASK_TIMEOUT`]. Through the process's one HTTP client (the Places back-end's: it pools
/// connections, so a page's ticks reuse them), with the herd's admin token when it has a secret.
async fn ask(shared: &Shared, addr: &str, path: &str) -> Result<Value, String> {
    let work = async {
        let mut request = shared
            .spec
            .places
            .http()
            .get(format!("http://{addr}{path}"))
            .timeout(ASK_TIMEOUT);
        if let Some(token) = shared.spec.admin.tokens.first() {
            request = request.bearer_auth(token);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(format!("answered HTTP {}", status.as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| e.without_url().to_string())?
        {
            if body.len() + chunk.len() > MAX_STATUS_ANSWER {
                return Err(format!("status larger than {MAX_STATUS_ANSWER} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("status not JSON: {e}"))
    };
    match tokio::time::timeout(ASK_TIMEOUT, work).await {
        Ok(answer) => answer,
        Err(_) => Err(format!("no answer within {} ms", ASK_TIMEOUT.as_millis())),
    }
}

/// The whole herd as this server sees it: every server of the config with its `/status` (and its
/// samples newer than `since`, which is brought up to date), or why it did not answer. The servers are
/// asked concurrently, so this takes at most [`ASK_TIMEOUT`].
pub(crate) async fn gather(
    shared: &Shared,
    listen: &str,
    since: &mut HashMap<String, (String, u64)>,
) -> Value {
    let spec = &shared.spec;
    let admin_of = |name: &str| {
        spec.admins
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.clone())
    };
    let mut names = spec.members.clone();
    if !names.contains(&spec.name) {
        names.insert(0, spec.name.clone());
    }
    let asks = names.iter().map(|name| {
        let admin = admin_of(name);
        let path = match since.get(name) {
            Some((boot, seq)) => format!("/status?recent={seq}&boot={boot}"),
            None => "/status?recent".to_owned(),
        };
        let me = *name == spec.name;
        async move {
            let answer = if me {
                let mut s = super::status(shared, listen);
                let query = path.split_once('?').map_or("", |(_, q)| q);
                s["recent"] = shared.live.recent(since_of(query));
                Ok(s)
            } else {
                match &admin {
                    Some(a) => ask(shared, a, &path).await,
                    None => Err("no admin address in the herd config".to_owned()),
                }
            };
            (name, admin, answer)
        }
    });
    let answers = futures::future::join_all(asks).await;
    let servers: Vec<Value> = answers
        .into_iter()
        .map(|(name, admin, answer)| match answer {
            Ok(status) => {
                let recent = &status["recent"];
                if let (Some(boot), Some(seq)) = (recent["boot"].as_str(), recent["seq"].as_u64()) {
                    since.insert(name.clone(), (boot.to_owned(), seq));
                }
                json!({"name": name, "admin": admin, "up": true, "status": status})
            }
            Err(error) => json!({"name": name, "admin": admin, "up": false, "error": error}),
        })
        .collect();
    let now = secs(Timestamp::now());
    json!({
        "server": spec.name,
        "time": now,
        "tick_ms": TICK.as_millis() as u64,
        "servers": servers,
    })
}

/// The `/events` streams open: in all, and by address.
#[derive(Default)]
pub(crate) struct Streams {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Why an `/events` stream was not opened.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NoSlot {
    /// [`MAX_STREAMS`] are open.
    Full,
    /// [`MAX_STREAMS_PER_ADDRESS`] are open from this address.
    Address,
}

/// One `/events` stream's place among [`MAX_STREAMS`] (and its address's among
/// [`MAX_STREAMS_PER_ADDRESS`]); given back when dropped.
pub(crate) struct StreamSlot {
    streams: Arc<Mutex<Streams>>,
    from: IpAddr,
}

impl StreamSlot {
    pub(crate) fn take(streams: &Arc<Mutex<Streams>>, from: IpAddr) -> Result<Self, NoSlot> {
        let mut s = streams.lock().unwrap_or_else(|p| p.into_inner());
        if s.total >= MAX_STREAMS {
            return Err(NoSlot::Full);
        }
        let mine = s.by_address.entry(from).or_default();
        if *mine >= MAX_STREAMS_PER_ADDRESS {
            return Err(NoSlot::Address);
        }
        *mine += 1;
        s.total += 1;
        Ok(StreamSlot {
            streams: streams.clone(),
            from,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut s = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        s.total -= 1;
        if let Some(n) = s.by_address.get_mut(&self.from) {
            *n -= 1;
            if *n == 0 {
                s.by_address.remove(&self.from);
            }
        }
    }
}

/// What an `/events` stream carries from one tick to the next.
struct Feed {
    shared: Arc<Shared>,
    listen: Arc<str>,
    since: HashMap<String, (String, u64)>,
    tick: tokio::time::Interval,
    progress: Option<super::Progress>,
    first: bool,
    _slot: StreamSlot,
}

/// `GET /events`: the herd ([`gather`]) as one server-sent event every [`TICK`] (after a first event
/// telling the browser to reconnect after a second when the stream ends: a server restarted), until
/// the page goes away, stops reading (the connection's task closes it after [`WRITE_TIMEOUT`]) or the
/// server stops. 503 when [`MAX_STREAMS`] are open, or [`MAX_STREAMS_PER_ADDRESS`] from this address.
pub(crate) async fn events(
    axum::extract::State(door): axum::extract::State<super::Door>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::sse::{Event, Sse};
    use axum::response::IntoResponse as _;
    let from = request
        .extensions()
        .get::<super::From>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |f| f.0.ip());
    let progress = request.extensions().get::<super::Progress>().cloned();
    let shared = door.shared.clone();
    let slot = match StreamSlot::take(&shared.live.streams, from) {
        Ok(slot) => slot,
        Err(why) => {
            let (reason, text) = match why {
                NoSlot::Full => ("events", "too many live pages open; try again later\n"),
                NoSlot::Address => (
                    "events-per-address",
                    "too many live pages open from this address; close one and try again\n",
                ),
            };
            shared.stats.admin_refused(reason);
            return (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                [(axum::http::header::RETRY_AFTER, "5")],
                text,
            )
                .into_response();
        }
    };
    if let Some(p) = &progress {
        p.touch();
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let feed = Feed {
        shared,
        listen: door.listen.clone(),
        since: HashMap::new(),
        tick,
        progress,
        first: true,
        _slot: slot,
    };
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        if std::mem::take(&mut feed.first) {
            let retry = Event::default().retry(Duration::from_secs(1));
            return Some((Ok::<_, std::convert::Infallible>(retry), feed));
        }
        tokio::select! {
            _ = feed.tick.tick() => {}
            _ = feed.shared.shutdown.cancelled() => return None,
        }
        let herd = gather(&feed.shared, &feed.listen, &mut feed.since).await;
        if let Some(p) = &feed.progress {
            p.touch();
        }
        Some((Ok(Event::default().data(herd.to_string())), feed))
    });
    (
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Sse::new(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(client: &str) -> Lookup {
        let line = format!("AT Test +0.000000000 {client} +34.068930-118.445127 1");
        Lookup {
            record: herd_proto::AtRecord::parse(line.as_bytes())
                .unwrap()
                .into_owned(),
            radius: herd_proto::Radius::parse(b"10").unwrap().into_owned(),
            bound: 3,
        }
    }

    #[test]
    fn samples_only_while_watched_and_newest_first_kept() {
        let live = Live::default();
        let t = Timestamp::new(1_700_000_000, 0).unwrap();
        live.offer_iamat(b"IAMAT early +1+1 1", t);
        assert!(!live.watched());
        let all = live.recent(None);
        assert!(live.watched());
        assert_eq!(
            all["updates"],
            json!([]),
            "nothing sampled before a page watched"
        );
        for i in 0..UPDATES + 5 {
            live.offer_iamat(format!("IAMAT c{i} +34.5-118.25 1").as_bytes(), t);
        }
        live.offer_iamat(b"IAMAT not a line", t);
        live.offer_whatsat(&lookup("kiwi"), t);
        let all = live.recent(None);
        let updates = all["updates"].as_array().unwrap();
        assert_eq!(updates.len(), UPDATES, "the ring is bounded");
        assert_eq!(
            updates.last().unwrap()["client"],
            format!("c{}", UPDATES + 4)
        );
        assert_eq!(updates[0]["lat"], 34.5);
        assert_eq!(updates[0]["lon"], -118.25);
        assert_eq!(all["whatsats"][0]["client"], "kiwi");
        assert_eq!(all["whatsats"][0]["radius_km"], 10.0);
        // Only what is newer than what was seen; another run's `boot` gets everything.
        let boot = all["boot"].as_str().unwrap().to_owned();
        let seq = all["seq"].as_u64().unwrap();
        live.offer_iamat(b"IAMAT last +1+1 1", t);
        let newer = live.recent(Some((&boot, seq)));
        assert_eq!(newer["updates"].as_array().unwrap().len(), 1);
        assert_eq!(newer["whatsats"], json!([]));
        let other = live.recent(Some(("another", seq + 1)));
        assert_eq!(other["updates"].as_array().unwrap().len(), UPDATES);
    }

    #[test]
    fn query_values_are_percent_decoded_to_bytes() {
        assert_eq!(percent_decode("kiwi"), b"kiwi");
        assert_eq!(percent_decode("a%20b+c"), b"a b c");
        assert_eq!(percent_decode("caf%C3%A9"), "café".as_bytes());
        assert_eq!(percent_decode("%ff%FE"), [0xff, 0xfe]);
        // Not an escape: kept as it is, never a panic.
        for odd in ["%", "%4", "%zz", "a%", "100%"] {
            assert_eq!(percent_decode(odd), odd.as_bytes(), "{odd}");
        }
    }

    #[test]
    fn the_rates_history_is_bounded_and_sent_on_a_first_ask() {
        let live = Live::default();
        for i in 0..HISTORY as u64 + 10 {
            live.keep_point(i as f64, [i, 0, 0, 0]);
        }
        let first = live.recent(None);
        let h = first["history"].as_array().unwrap();
        assert_eq!(h.len(), HISTORY);
        assert_eq!(h[0], json!([10.0, 10, 0, 0, 0]));
        let boot = first["boot"].as_str().unwrap().to_owned();
        live.offer_iamat(b"IAMAT a +1+1 1", Timestamp::new(1, 0).unwrap());
        let later = live.recent(Some((&boot, 0)));
        assert!(
            later.get("history").is_some(),
            "nothing seen yet: a first ask"
        );
        let seq = later["seq"].as_u64().unwrap();
        assert!(live.recent(Some((&boot, seq))).get("history").is_none());
    }

    #[test]
    fn since_is_read_from_the_query() {
        assert_eq!(since_of("recent=12&boot=ab"), Some(("ab", 12)));
        assert_eq!(since_of("boot=ab&recent=3"), Some(("ab", 3)));
        assert_eq!(since_of("recent"), None);
        assert_eq!(since_of("recent=x&boot=ab"), None);
    }

    #[test]
    fn stream_slots_are_bounded_in_all_and_by_address() {
        let streams = Arc::default();
        let ip = |n: u8| IpAddr::from([127, 0, 0, n]);
        let mut slots: Vec<_> = (0..MAX_STREAMS_PER_ADDRESS)
            .map(|_| StreamSlot::take(&streams, ip(1)).unwrap())
            .collect();
        assert_eq!(
            StreamSlot::take(&streams, ip(1)).err(),
            Some(NoSlot::Address)
        );
        for n in 2..=(MAX_STREAMS / MAX_STREAMS_PER_ADDRESS) as u8 {
            for _ in 0..MAX_STREAMS_PER_ADDRESS {
                slots.push(StreamSlot::take(&streams, ip(n)).unwrap());
            }
        }
        assert_eq!(StreamSlot::take(&streams, ip(99)).err(), Some(NoSlot::Full));
        slots.truncate(0);
        assert!(StreamSlot::take(&streams, ip(1)).is_ok());
        assert!(streams.lock().unwrap().by_address.len() <= 1);
    }
}
