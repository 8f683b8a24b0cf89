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
/// Picked below Linux's ephemeral range (32768 and up), where the tests' own client connections take
/// their local ports: a port from that range could be taken by a client socket before the server
/// that was meant to listen on it starts.
///
/// Never the same port twice in one test process: the tests of a binary run side by side, and a port
/// handed to one test's server (free while that server is not started yet, or killed for a restart)
/// would otherwise pass the check for another test, whose server would then take it first.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..1000 {
        let port = fastrand::u16(20_000..32_000);
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in 20000..32000");
}
