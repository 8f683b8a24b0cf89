//! Watches: which watchers a stored record fires (PROTOCOL.md §10).
//!
//! A watcher (one WebSocket connection of the door) holds watches: `CLIENT <id>` matches every record
//! of that client, `NEAR <lat> <lon> <km>` every record within that great-circle distance. The node
//! calls [`Watches::fire`] with every record it stores — from a client here, or from a neighbour's
//! flood or catch-up — so a watcher at any server sees the whole herd. A watcher that matches
//! several of its watches gets the record once.
//!
//! Delivery is the driver's ([`Deliver`]): it must never wait, since it runs under the node's lock.
//! A watcher whose queue is full is dropped from the registry at once ([`Deliver::deliver`] says
//! so) and the driver closes it with a reason; the herd never waits for a slow watcher.
//!
//! Client watches are found by a hash of the id; near watches by a grid of one-degree cells, each
//! watch entered in every cell its circle's bounding box touches, so a record costs one hash look-up
//! and a distance check of the few watches of its cell — and nothing at all while nobody watches.

use std::collections::HashMap;

use herd_proto::{km_between, AtRecord, Watch};

/// The bounds of the registry (`[limits] max_watches`, `max_watches_per_connection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchLimits {
    /// Watches on the whole server.
    pub per_server: usize,
    /// Watches of one connection.
    pub per_connection: usize,
}

impl Default for WatchLimits {
    fn default() -> Self {
        WatchLimits {
            per_server: 100_000,
            per_connection: 64,
        }
    }
}

/// Where a watcher's records go: a bounded queue of the driver's.
pub trait Deliver: Send {
    /// Queues `line` (an AT line without `\n`) without waiting; `false`: the queue is full (or gone)
    /// and the watcher is dropped.
    fn deliver(&mut self, line: &[u8]) -> bool;
}

/// Why a `WATCH` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchRefused {
    /// The connection holds `max_watches_per_connection` watches.
    Connection,
    /// The server holds `max_watches` watches.
    Server,
    /// The watcher is not registered (it was dropped for being slow, or has closed).
    Gone,
}

impl WatchRefused {
    /// The reason as a short key (for logs, metrics and the `? …` answer's reason).
    pub fn as_str(self) -> &'static str {
        match self {
            WatchRefused::Connection => "max_watches_per_connection",
            WatchRefused::Server => "max_watches",
            WatchRefused::Gone => "watcher closed",
        }
    }
}

/// A near watch as the registry keeps it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Near {
    watcher: u64,
    lat: f64,
    lon: f64,
    km: f64,
}

struct Watcher {
    sink: Box<dyn Deliver>,
    watches: Vec<Watch<'static>>,
}

/// The registry of one node.
#[derive(Default)]
pub struct Watches {
    limits: WatchLimits,
    watchers: HashMap<u64, Watcher>,
    clients: HashMap<Box<[u8]>, Vec<u64>>,
    grid: HashMap<(i16, i16), Vec<Near>>,
    total: usize,
    dropped: u64,
    fired: u64,
    /// Scratch for one record's matches (kept to spare an allocation per record).
    hits: Vec<u64>,
}

impl std::fmt::Debug for Watches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watches")
            .field("watchers", &self.watchers.len())
            .field("watches", &self.total)
            .finish()
    }
}

/// Kilometres per degree of latitude (and of longitude at the equator).
const KM_PER_DEGREE: f64 = 111.19;

/// The grid cell of a point: whole degrees, longitude wrapped into -180..180.
fn cell(lat: f64, lon: f64) -> (i16, i16) {
    let mut ilon = lon.floor() as i32;
    if ilon >= 180 {
        ilon -= 360;
    }
    (lat.floor().clamp(-90.0, 89.0) as i16, ilon as i16)
}

/// Every cell the bounding box of a circle touches.
fn cells(lat: f64, lon: f64, km: f64) -> Vec<(i16, i16)> {
    let dlat = km / KM_PER_DEGREE;
    let (lo, hi) = ((lat - dlat).max(-90.0), (lat + dlat).min(90.0));
    let widest = lo.abs().max(hi.abs());
    // Longitude degrees shrink towards the poles; near one, every longitude is close.
    let cos = widest.to_radians().cos();
    let all = cos < 0.01 || dlat / cos >= 180.0;
    let lons: Vec<i32> = if all {
        (-180..180).collect()
    } else {
        let dlon = dlat / cos;
        ((lon - dlon).floor() as i32..=(lon + dlon).floor() as i32)
            .map(|l| (l + 540).rem_euclid(360) - 180)
            .collect()
    };
    let mut out = Vec::new();
    for ilat in cell(lo, 0.0).0..=cell(hi, 0.0).0 {
        for &ilon in &lons {
            if !out.contains(&(ilat, ilon as i16)) {
                out.push((ilat, ilon as i16));
            }
        }
    }
    out
}

impl Watches {
    /// An empty registry with `limits`.
    pub fn new(limits: WatchLimits) -> Self {
        Watches {
            limits,
            ..Watches::default()
        }
    }

    /// Whether nobody watches (the store path then costs one check).
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Watches held on the server.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Watchers registered.
    pub fn watchers(&self) -> usize {
        self.watchers.len()
    }

    /// Watchers dropped because their queue was full, since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Records delivered to watchers since the start.
    pub fn fired(&self) -> u64 {
        self.fired
    }

    /// Registers watcher `id` (a connection), delivering to `sink`.
    pub fn register(&mut self, id: u64, sink: Box<dyn Deliver>) {
        self.unregister(id);
        self.watchers.insert(
            id,
            Watcher {
                sink,
                watches: Vec::new(),
            },
        );
    }

    /// Whether watcher `id` is registered (it is not once dropped for being slow).
    pub fn is_registered(&self, id: u64) -> bool {
        self.watchers.contains_key(&id)
    }

    /// Whether watcher `id` holds no watch (or is not registered).
    pub fn is_empty_for(&self, id: u64) -> bool {
        self.watchers.get(&id).is_none_or(|w| w.watches.is_empty())
    }

    /// Removes watcher `id` and every watch it held (its connection closed, or it was too slow).
    pub fn unregister(&mut self, id: u64) {
        if let Some(w) = self.watchers.remove(&id) {
            for watch in &w.watches {
                self.unindex(id, watch);
            }
            self.total -= w.watches.len();
        }
    }

    /// Adds `watch` to watcher `id`; a watch it already holds is kept once (and is no error).
    ///
    /// # Errors
    /// A bound of [`WatchLimits`], or the watcher is not registered.
    pub fn watch(&mut self, id: u64, watch: Watch<'_>) -> Result<(), WatchRefused> {
        let total = self.total;
        let limits = self.limits;
        let w = self.watchers.get_mut(&id).ok_or(WatchRefused::Gone)?;
        if w.watches.contains(&watch) {
            return Ok(());
        }
        if w.watches.len() >= limits.per_connection {
            return Err(WatchRefused::Connection);
        }
        if total >= limits.per_server {
            return Err(WatchRefused::Server);
        }
        let watch = watch.into_owned();
        match &watch {
            Watch::Client(c) => self.clients.entry((**c).into()).or_default().push(id),
            Watch::Near { center, radius } => {
                let near = Near {
                    watcher: id,
                    lat: center.latitude(),
                    lon: center.longitude(),
                    km: radius.km(),
                };
                for c in cells(near.lat, near.lon, near.km) {
                    self.grid.entry(c).or_default().push(near);
                }
            }
        }
        w.watches.push(watch);
        self.total += 1;
        Ok(())
    }

    /// Removes `watch` from watcher `id`; `false` if it held no such watch.
    pub fn unwatch(&mut self, id: u64, watch: &Watch<'_>) -> bool {
        let Some(w) = self.watchers.get_mut(&id) else {
            return false;
        };
        let Some(i) = w.watches.iter().position(|x| x == watch) else {
            return false;
        };
        let watch = w.watches.swap_remove(i);
        self.unindex(id, &watch);
        self.total -= 1;
        true
    }

    fn unindex(&mut self, id: u64, watch: &Watch<'_>) {
        match watch {
            Watch::Client(c) => {
                if let Some(ids) = self.clients.get_mut(&**c) {
                    if let Some(i) = ids.iter().position(|&x| x == id) {
                        ids.swap_remove(i);
                    }
                    if ids.is_empty() {
                        self.clients.remove(&**c);
                    }
                }
            }
            Watch::Near { center, radius } => {
                let (lat, lon, km) = (center.latitude(), center.longitude(), radius.km());
                for c in cells(lat, lon, km) {
                    if let Some(v) = self.grid.get_mut(&c) {
                        if let Some(i) = v.iter().position(|n| {
                            n.watcher == id && n.lat == lat && n.lon == lon && n.km == km
                        }) {
                            v.swap_remove(i);
                        }
                        if v.is_empty() {
                            self.grid.remove(&c);
                        }
                    }
                }
            }
        }
    }

    /// A record was stored: `line` (its AT line, without `\n`) goes to every watcher it matches, once
    /// each. A watcher whose queue is full is dropped.
    pub fn fire(&mut self, record: &AtRecord<'_>, line: &[u8]) {
        if self.total == 0 {
            return;
        }
        let mut hits = std::mem::take(&mut self.hits);
        hits.clear();
        if let Some(ids) = self.clients.get(&*record.client) {
            hits.extend_from_slice(ids);
        }
        if !self.grid.is_empty() {
            let (lat, lon) = (record.location.latitude(), record.location.longitude());
            if let Some(near) = self.grid.get(&cell(lat, lon)) {
                hits.extend(
                    near.iter()
                        .filter(|n| km_between(n.lat, n.lon, lat, lon) <= n.km)
                        .map(|n| n.watcher),
                );
            }
        }
        hits.sort_unstable();
        hits.dedup();
        for &id in &hits {
            let delivered = self
                .watchers
                .get_mut(&id)
                .is_some_and(|w| w.sink.deliver(line));
            if delivered {
                self.fired += 1;
            } else {
                self.dropped += 1;
                self.unregister(id);
            }
        }
        self.hits = hits;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A queue of `cap` lines the test reads.
    #[derive(Clone, Default)]
    struct Q(Arc<Mutex<Vec<String>>>, usize);

    impl Deliver for Q {
        fn deliver(&mut self, line: &[u8]) -> bool {
            let mut q = self.0.lock().unwrap();
            if q.len() >= self.1 {
                return false;
            }
            q.push(String::from_utf8_lossy(line).into_owned());
            true
        }
    }

    fn q(cap: usize) -> Q {
        Q(Arc::default(), cap)
    }

    fn watch(line: &str) -> Watch<'static> {
        herd_proto::WatchLine::parse(line.as_bytes())
            .unwrap()
            .watch()
            .clone()
            .into_owned()
    }

    fn fire(w: &mut Watches, line: &str) {
        let r = AtRecord::parse(line.as_bytes()).unwrap();
        w.fire(&r, line.as_bytes());
    }

    const KIWI: &str = "AT A +0.100000000 kiwi +34.068930-118.445127 1.0";
    const FAR: &str = "AT A +0.100000000 far -33.8688+151.2093 1.0";
    const DATELINE: &str = "AT A +0.100000000 d +0.0-179.95 1.0";

    #[test]
    fn client_and_near_watches_fire_once_each_and_only_when_they_match() {
        let mut w = Watches::new(WatchLimits::default());
        let (a, b) = (q(10), q(10));
        w.register(1, Box::new(a.clone()));
        w.register(2, Box::new(b.clone()));
        w.watch(1, watch("WATCH CLIENT kiwi")).unwrap();
        w.watch(1, watch("WATCH NEAR 34.07 -118.44 5")).unwrap();
        w.watch(2, watch("WATCH NEAR 34.0522 -118.2437 10"))
            .unwrap();
        fire(&mut w, KIWI);
        fire(&mut w, FAR);
        // Both of 1's watches match kiwi: one delivery. 2's circle (downtown, 10 km) misses it.
        assert_eq!(*a.0.lock().unwrap(), [KIWI]);
        assert!(b.0.lock().unwrap().is_empty());
        assert_eq!(w.fired(), 1);
        // Across the antimeridian.
        w.watch(2, watch("WATCH NEAR 0 179.95 20")).unwrap();
        fire(&mut w, DATELINE);
        assert_eq!(*b.0.lock().unwrap(), [DATELINE]);
    }

    #[test]
    fn unwatch_and_unregister_clean_up_and_bounds_hold() {
        let mut w = Watches::new(WatchLimits {
            per_server: 3,
            per_connection: 2,
        });
        let a = q(10);
        w.register(1, Box::new(a.clone()));
        w.register(2, Box::new(q(10)));
        w.watch(1, watch("WATCH CLIENT kiwi")).unwrap();
        w.watch(1, watch("WATCH CLIENT kiwi")).unwrap(); // held once
        w.watch(1, watch("WATCH NEAR 34 -118 50")).unwrap();
        assert_eq!(
            w.watch(1, watch("WATCH CLIENT x")),
            Err(WatchRefused::Connection)
        );
        w.watch(2, watch("WATCH CLIENT y")).unwrap();
        assert_eq!(
            w.watch(2, watch("WATCH CLIENT z")),
            Err(WatchRefused::Server)
        );
        assert_eq!(w.watch(9, watch("WATCH CLIENT z")), Err(WatchRefused::Gone));
        assert!(w.unwatch(1, &watch("UNWATCH CLIENT kiwi")));
        assert!(!w.unwatch(1, &watch("UNWATCH CLIENT kiwi")));
        fire(&mut w, KIWI); // still matched by the near watch
        assert_eq!(a.0.lock().unwrap().len(), 1);
        w.unregister(1);
        assert_eq!(w.len(), 1);
        assert!(w.grid.is_empty() && !w.clients.contains_key(&b"kiwi"[..]));
        fire(&mut w, KIWI);
        assert_eq!(a.0.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_full_queue_drops_its_watcher_and_no_other() {
        let mut w = Watches::new(WatchLimits::default());
        let (slow, fast) = (q(1), q(10));
        w.register(1, Box::new(slow.clone()));
        w.register(2, Box::new(fast.clone()));
        w.watch(1, watch("WATCH CLIENT kiwi")).unwrap();
        w.watch(2, watch("WATCH CLIENT kiwi")).unwrap();
        fire(&mut w, KIWI);
        fire(&mut w, KIWI);
        assert!(!w.is_registered(1) && w.is_registered(2));
        assert_eq!((w.dropped(), w.len()), (1, 1));
        assert_eq!(fast.0.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_circle_near_a_pole_is_found_at_any_longitude() {
        let cs = cells(89.9, 0.0, 30.0);
        assert!(cs.len() >= 360);
        assert!(cells(0.0, 0.0, 50.0).len() <= 4);
    }
}
