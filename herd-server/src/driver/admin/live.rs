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
//! The page is fed at a fixed rate ([`TICK`]); why it never slows the herd is in ARCHITECTURE.md.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use herd_proto::Timestamp;
use serde_json::{json, Value};

use crate::driver::admin::state::{AdminState, ClientAddr, StreamProgress};
use crate::driver::admin::streams::{NoSlot, StreamSlot};
use crate::driver::admin::view;
use crate::driver::samples::secs;

pub use crate::driver::admin::streams::{MAX_STREAMS, MAX_STREAMS_PER_ADDRESS};
pub use crate::driver::samples::{ASKS, HISTORY, UPDATES, WATCH_FOR};

/// The page: HTML, CSS and script in one file, compiled in (nothing is fetched from elsewhere).
pub(crate) const PAGE: &str = include_str!("page.html");

/// How often `/events` sends the herd: the page's refresh rate, whatever the request rate.
pub const TICK: Duration = Duration::from_millis(400);
/// How long a server's `/status` may take before it is shown as down (less than a [`TICK`], so one
/// silent server never slows the page's refresh).
pub const ASK_TIMEOUT: Duration = Duration::from_millis(300);
/// Most records `/records` sends: an even sample of the cache past that.
pub const SAMPLE: usize = 2000;
/// How often the rates' history takes a point.
pub const HISTORY_EVERY: Duration = Duration::from_secs(1);
/// A page that does not take an event within this is dropped.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `/status` answer read from another server.
const MAX_STATUS_ANSWER: usize = 1 << 20;

/// Takes a point of the rate counters every [`HISTORY_EVERY`] until the server stops.
pub(crate) async fn keep_history(state: AdminState) {
    let mut tick = tokio::time::interval(HISTORY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.life.shutdown.cancelled() => return,
        }
        let counts = view::rate_counters(&state);
        state.live.keep_point(secs(Timestamp::now()), counts);
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
pub(crate) fn records(state: &AdminState, query: &str) -> (u16, Value) {
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
        let line = state.node.lock().get(&client);
        return match line.as_deref().and_then(record_json) {
            Some(r) => (
                200,
                json!({"server": state.spec.name, "found": true, "record": r}),
            ),
            None => (
                404,
                json!({"server": state.spec.name, "found": false,
                       "client": String::from_utf8_lossy(&client)}),
            ),
        };
    }
    let (held, lines) = {
        let node = state.node.lock();
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
        json!({"server": state.spec.name, "held": held, "records": records}),
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
async fn ask(state: &AdminState, addr: &str, path: &str) -> Result<Value, String> {
    let work = async {
        let mut request = state
            .spec
            .places
            .http()
            .get(format!("http://{addr}{path}"))
            .timeout(ASK_TIMEOUT);
        if let Some(token) = state.spec.admin.tokens.first() {
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
    state: &AdminState,
    since: &mut HashMap<String, (String, u64)>,
) -> Value {
    let spec = &state.spec;
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
                let mut s = view::status(state);
                let query = path.split_once('?').map_or("", |(_, q)| q);
                s["recent"] = state.live.recent(since_of(query));
                Ok(s)
            } else {
                match &admin {
                    Some(a) => ask(state, a, &path).await,
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

/// What an `/events` stream carries from one tick to the next.
struct Feed {
    state: AdminState,
    since: HashMap<String, (String, u64)>,
    tick: tokio::time::Interval,
    progress: Option<StreamProgress>,
    first: bool,
    _slot: StreamSlot,
}

/// `GET /events`: the herd ([`gather`]) as one server-sent event every [`TICK`] (after a first event
/// telling the browser to reconnect after a second when the stream ends: a server restarted), until
/// the page goes away, stops reading (the connection's task closes it after [`WRITE_TIMEOUT`]) or the
/// server stops. 503 when [`MAX_STREAMS`] are open, or [`MAX_STREAMS_PER_ADDRESS`] from this address.
pub(crate) async fn events(
    axum::extract::State(state): axum::extract::State<AdminState>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::sse::Sse;
    use axum::response::IntoResponse as _;
    let from = request
        .extensions()
        .get::<ClientAddr>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |f| f.0.ip());
    let progress = request.extensions().get::<StreamProgress>().cloned();
    let slot = match StreamSlot::take(&state.streams, from) {
        Ok(slot) => slot,
        Err(why) => return no_stream(&state, &why),
    };
    if let Some(p) = &progress {
        p.touch();
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let feed = Feed {
        state,
        since: HashMap::new(),
        tick,
        progress,
        first: true,
        _slot: slot,
    };
    (
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Sse::new(futures::stream::unfold(feed, next_event)),
    )
        .into_response()
}

/// The 503 of an `/events` stream that found no place (`why`), counted.
fn no_stream(state: &AdminState, why: &NoSlot) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let (reason, text) = match why {
        NoSlot::Full => ("events", "too many live pages open; try again later\n"),
        NoSlot::Address => (
            "events-per-address",
            "too many live pages open from this address; close one and try again\n",
        ),
    };
    state.stats.admin_refused(reason);
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::RETRY_AFTER, "5")],
        text,
    )
        .into_response()
}

/// An `/events` stream's next event: first the reconnection delay, then the herd at each tick;
/// `None` once the server stops.
async fn next_event(
    mut feed: Feed,
) -> Option<(
    Result<axum::response::sse::Event, std::convert::Infallible>,
    Feed,
)> {
    use axum::response::sse::Event;
    if std::mem::take(&mut feed.first) {
        let retry = Event::default().retry(Duration::from_secs(1));
        return Some((Ok(retry), feed));
    }
    tokio::select! {
        _ = feed.tick.tick() => {}
        _ = feed.state.life.shutdown.cancelled() => return None,
    }
    let herd = gather(&feed.state, &mut feed.since).await;
    if let Some(p) = &feed.progress {
        p.touch();
    }
    Some((Ok(Event::default().data(herd.to_string())), feed))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn since_is_read_from_the_query() {
        assert_eq!(since_of("recent=12&boot=ab"), Some(("ab", 12)));
        assert_eq!(since_of("boot=ab&recent=3"), Some(("ab", 3)));
        assert_eq!(since_of("recent"), None);
        assert_eq!(since_of("recent=x&boot=ab"), None);
    }
}
