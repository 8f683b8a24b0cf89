//! A peer that holds the herd's secret, attacking real servers over a real greeting and channel
//! (PROTOCOL.md §5): it cannot pin a record, fill a cache past its bounds or freeze a server with
//! reconciliation lines; a stranger cannot flood a server's logs with refused greetings.
//!
//! The insider greets Bravo as Alford (which sorts first, so dials); the real Alford is not started,
//! so its name is free to take. Bravo floods what it admits on to Charlie.

use std::time::{Duration, Instant};

use herd_tests::admin;
use herd_tests::client::exchange_text;
use herd_tests::eventually;
use herd_tests::herd::{converge, held, iamat, Processes};
use herd_tests::insider::Insider;

const CHAIN: [(&str, &[&str]); 3] = [
    ("Alford", &["Bravo"]),
    ("Bravo", &["Alford", "Charlie"]),
    ("Charlie", &["Bravo"]),
];
const SECRET: &str = "a long random herd secret 51c0de";

async fn herd(limits: &str) -> Processes {
    let mut herd =
        Processes::new(&CHAIN, &format!("[herd]\nsecret = {SECRET:?}\n{limits}")).with_admin();
    herd.start("Bravo").await;
    herd.start("Charlie").await;
    herd
}

/// A counter's value in `/metrics` (the line that starts with `name`).
async fn metric(herd: &Processes, server: &str, name: &str) -> u64 {
    let text = admin::get(herd.admin(server), "/metrics").await;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test]
async fn a_record_timed_at_the_end_of_time_does_not_pin_a_client() {
    let herd = herd("").await;
    let mut insider = Insider::greet(herd.addr("Bravo"), "Alford", "Bravo", SECRET).await;
    insider
        .send(
            b"AT Charlie +0.000000000 pinned +1+1 18446744073709551615.999999999\n\
              AT Alford +0.000000000 honest +1+1 5\n",
        )
        .await;
    // The honest record behind it crosses; the pin is refused at Bravo and goes no further.
    converge(
        &herd,
        &["Bravo", "Charlie"],
        "honest",
        "AT Alford +0.000000000 honest +1+1 5",
    )
    .await;
    for name in ["Bravo", "Charlie"] {
        assert_eq!(held(herd.addr(name), "pinned").await, None, "{name}");
    }
    assert!(
        metric(
            &herd,
            "Bravo",
            "herd_peer_records_refused_total{limit=\"future-time\"}"
        )
        .await
            >= 1
    );
    assert!(herd.log("Bravo").contains("limit=future-time"));
    // An honest IAMAT at Charlie gets its own record, not the forged one.
    let at = iamat(herd.addr("Charlie"), "pinned", "100").await;
    assert!(at.starts_with("AT Charlie "), "{at}");
}

#[tokio::test]
async fn a_flood_of_new_clients_stops_at_the_cap_and_the_byte_budget() {
    let herd = herd("[limits]\nmax_clients = 500\nmax_client_id = 64\n").await;
    let mut insider = Insider::greet(herd.addr("Bravo"), "Alford", "Bravo", SECRET).await;
    let mut flood = Vec::new();
    for i in 0..5_000 {
        flood.extend_from_slice(format!("AT Alford +0.000000000 fill-{i} +1+1 5\n").as_bytes());
    }
    flood.extend_from_slice(
        format!("AT Alford +0.000000000 {} +1+1 5\n", "x".repeat(65)).as_bytes(),
    );
    assert!(insider.send(&flood).await);
    eventually("Bravo to refuse the flood past its cap", || async {
        let refused = metric(
            &herd,
            "Bravo",
            "herd_peer_records_refused_total{limit=\"client-cap\"}",
        )
        .await;
        (refused >= 4_500).then_some(())
    })
    .await;
    assert!(
        metric(
            &herd,
            "Bravo",
            "herd_peer_records_refused_total{limit=\"client-id\"}"
        )
        .await
            >= 1
    );
    for name in ["Bravo", "Charlie"] {
        let records = admin::status(herd.admin(name)).await["records"]
            .as_u64()
            .unwrap_or(u64::MAX);
        assert!(
            records <= 500,
            "{name} holds {records} clients, past its cap of 500"
        );
    }
    // One warning for the link-up, not one per record.
    let log = herd.log("Bravo");
    assert_eq!(
        log.matches("refused a peer's record past a limit").count(),
        1,
        "{log}"
    );
}

#[tokio::test]
async fn reconciliation_lines_repeated_cannot_freeze_a_server() {
    let herd = herd("").await;
    // Bravo holds a few thousand clients.
    let mut lines = String::new();
    for i in 0..3_000 {
        lines.push_str(&format!("IAMAT c{i} +1+1 {i}\n"));
    }
    let answers = exchange_text(herd.addr("Bravo"), lines).await;
    assert_eq!(answers.lines().count(), 3_000);
    let mut insider = Insider::greet(herd.addr("Bravo"), "Alford", "Bravo", SECRET).await;
    let mut attack = b"HERD-ROOT 9 0000000000000009 0000000000000001\n".to_vec();
    for _ in 0..1_000 {
        attack.extend_from_slice(b"HERD-IDS -\nHERD-IDS - AAAAAA\n");
    }
    let started = Instant::now();
    insider.send(&attack).await;
    // A client waits no longer than usual meanwhile.
    let t = Instant::now();
    let at = iamat(herd.addr("Bravo"), "during", "1").await;
    assert!(at.starts_with("AT Bravo "));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "a client waited {:?}",
        t.elapsed()
    );
    assert!(insider.until_closed().await, "the link stayed open");
    assert!(started.elapsed() < Duration::from_secs(10));
    // What came back is at most the cache once, not once per line.
    let records = insider
        .text()
        .lines()
        .filter(|l| l.starts_with("AT "))
        .count();
    assert!(records <= 3_001, "{records} records sent back");
    eventually("Bravo to log the broken exchange naming the peer", || {
        let log = herd.log("Bravo");
        async move {
            (log.contains("peer broke reconciliation") && log.contains("peer=Alford")).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn refused_greetings_from_a_stranger_do_not_flood_the_log() {
    let herd = herd("").await;
    let hello = b"HERD-HELLO 4 Mallory Bravo -\n".to_vec();
    let attempts = 300;
    for _ in 0..attempts {
        let answer = exchange_text(herd.addr("Bravo"), &hello).await;
        assert_eq!(answer, "HERD-REFUSED unknown-peer\n");
    }
    eventually("the refusals counted", || async {
        let suppressed = metric(
            &herd,
            "Bravo",
            "herd_warnings_suppressed_total{kind=\"greeting\"}",
        )
        .await;
        (suppressed >= attempts - 5).then_some(())
    })
    .await;
    let log = herd.log("Bravo");
    let warned = log.matches("refused peer greeting").count();
    assert!(
        warned <= 5,
        "{warned} warnings for {attempts} refused greetings"
    );
    // Charlie still links with Bravo, and records still cross.
    let at = iamat(herd.addr("Charlie"), "after", "1").await;
    converge(&herd, &["Bravo"], "after", &at).await;
}
