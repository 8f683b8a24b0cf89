//! A server's samples of what its clients do, for the live page: the newest [`UPDATES`] IAMATs and
//! [`ASKS`] WHATSATs its connections offer, and the last [`HISTORY`] points of its rate counters.
//!
//! A connection offers at most one IAMAT per batch (and each WHATSAT that goes to the Places
//! back-end), kept only while a page watches ([`WATCH_FOR`] after a page last asked) and only if the
//! ring's lock is free: a connection never waits for the admin door.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use herd_proto::{Message, Timestamp};
use serde_json::{json, Value};

use crate::node::Lookup;

/// How long a server samples its clients after a page last asked for its samples.
pub const WATCH_FOR: Duration = Duration::from_secs(5);
/// Newest IAMATs kept per server.
pub const UPDATES: usize = 64;
/// Newest WHATSATs kept per server.
pub const ASKS: usize = 16;
/// Seconds of rates kept for a page that opens (one point a second).
pub const HISTORY: usize = 300;

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

/// The rate counters at one moment (the admin door's rate counters): cumulative, so a page turns two
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
            history: Mutex::default(),
        }
    }
}

pub(crate) fn secs(t: Timestamp) -> f64 {
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
}
