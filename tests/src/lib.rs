//! Helpers for the end-to-end tests: servers on loopback, a line client, a fake Places server.
//!
//! Every wait here polls with a deadline; nothing sleeps a fixed time to "let things settle".

pub mod admin;
pub mod client;
pub mod fake_places;
pub mod herd;
pub mod insider;
pub mod proxy;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How long any one wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A sample Places answer from `tests/fixtures`.
pub fn fixture(name: &str) -> &'static str {
    match name {
        "legacy-ok" => include_str!("../fixtures/legacy-nearbysearch-ok.json"),
        "legacy-zero" => include_str!("../fixtures/legacy-nearbysearch-zero.json"),
        "legacy-denied" => include_str!("../fixtures/legacy-nearbysearch-denied.json"),
        "legacy-over-limit" => include_str!("../fixtures/legacy-nearbysearch-over-limit.json"),
        "new-ok" => include_str!("../fixtures/new-searchnearby-ok.json"),
        "new-empty" => include_str!("../fixtures/new-searchnearby-empty.json"),
        "new-403" => include_str!("../fixtures/new-searchnearby-403.json"),
        "new-429" => include_str!("../fixtures/new-searchnearby-429.json"),
        other => panic!("no fixture {other}"),
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// A port that was free a moment ago (for configs of separate processes).
///
/// Picked outside the kernel's ephemeral range, where the tests' own client
/// connections and the servers' peer links take their local ports: a port from that range could be
/// taken by a client socket before the server that was meant to listen on it starts, and nothing
/// would listen there.
///
/// Never the same port twice in one test process: the tests of a binary run side by side, and a port
/// handed to one test's server (free while that server is not started yet, or killed for a restart)
/// would otherwise pass the check for another test, whose server would then take it first.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let range = ports_to_pick();
    for _ in 0..1000 {
        let port = fastrand::u16(range.clone());
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in {range:?}");
}

/// Where [`free_port`] picks unless the ephemeral range covers it: below Linux's default one.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// Where [`free_port`] picks: [`PORTS`], below Linux's default ephemeral range (32768..=60999); on a
/// machine whose ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`) covers part of it, the
/// larger stretch of ports above 10000 outside that range ([`PORTS`] again when neither stretch holds
/// a thousand ports).
fn ports_to_pick() -> std::ops::Range<u16> {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut ends = text.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((ends.next()??, ends.next()??))
        });
    match ephemeral {
        Some((low, high)) => outside(low, high),
        None => PORTS,
    }
}

/// [`ports_to_pick`] for an ephemeral range of `low..=high`.
fn outside(low: u16, high: u16) -> std::ops::Range<u16> {
    if high < PORTS.start || low >= PORTS.end {
        return PORTS;
    }
    let below = 10_000..low.max(10_000);
    let above = high.saturating_add(1).max(10_000)..u16::MAX;
    let larger = if below.len() >= above.len() {
        below
    } else {
        above
    };
    if larger.len() >= 1_000 {
        larger
    } else {
        PORTS
    }
}

#[cfg(test)]
mod tests {
    use super::outside;

    #[test]
    fn ports_are_picked_outside_the_ephemeral_range() {
        // Linux's default range: the usual stretch below it.
        assert_eq!(outside(32_768, 60_999), 20_000..32_000);
        // A range that starts lower: the stretch below it, or above it when that one is larger.
        assert_eq!(outside(28_000, 60_999), 10_000..28_000);
        assert_eq!(outside(15_000, 40_000), 40_001..u16::MAX);
        // Nearly every port ephemeral: no stretch of a thousand ports left, the usual one.
        assert_eq!(outside(1_024, 65_000), 20_000..32_000);
    }
}
