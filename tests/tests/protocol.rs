//! One server and its clients: every rule of PROTOCOL.md §1–4, on the wire, byte for byte.

use std::sync::Arc;
use std::time::Duration;

use herd_proto::Timestamp;
use herd_server::config::{Backend, Limits, PlacesConfig};
use herd_server::Places;
use herd_tests::client::{exchange, exchange_text, Client};
use herd_tests::fake_places::{FakePlaces, Script};
use herd_tests::herd::{held, start_herd, start_server, Options};
use herd_tests::{eventually, fixture};

const IAMAT: &str = "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450";
const AT: &str =
    "AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450";

fn fixed_clock() -> Options {
    Options {
        clock: Some(Arc::new(|| Timestamp::new(1479413884, 655887836).unwrap())),
        ..Options::default()
    }
}

#[tokio::test]
async fn the_protocol_example_byte_for_byte() {
    let s = start_server("Alford", fixed_clock()).await;
    assert_eq!(
        exchange_text(s.addr, format!("{IAMAT}\n")).await,
        format!("{AT}\n")
    );
    // WHATSAT answers with the AT line as first produced, then JSON, then an empty line.
    let answer = exchange_text(s.addr, "WHATSAT kiwi.cs.ucla.edu 10 5\n").await;
    assert!(answer.starts_with(&format!("{AT}\n{{\n")), "{answer}");
    assert!(answer.ends_with("}\n\n"), "{answer}");
    assert!(
        !answer[..answer.len() - 2].contains("\n\n"),
        "no empty line inside: {answer}"
    );
    s.stop().await;
}

#[tokio::test]
async fn client_styles() {
    let s = start_server("Alford", fixed_clock()).await;
    // One line, no newline, half-close: EOF ends the line.
    assert_eq!(exchange_text(s.addr, IAMAT).await, format!("{AT}\n"));
    // \r\n terminators.
    assert_eq!(
        exchange_text(s.addr, format!("{IAMAT}\r\n")).await,
        format!("{AT}\n")
    );
    // Many lines in one write, with blank and white-space-only lines ignored.
    let many = format!("{IAMAT}\n\n   \t\n{IAMAT}\r\nHELLO\n{IAMAT}");
    assert_eq!(
        exchange_text(s.addr, many).await,
        format!("{AT}\n{AT}\n? HELLO\n{AT}\n")
    );
    // One line split across many writes.
    let mut c = Client::connect(s.addr).await;
    for chunk in format!("{IAMAT}\n").as_bytes().chunks(3) {
        c.send(chunk).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(c.text_line().await, format!("{AT}\n"));
    // The connection stays open after an invalid line.
    c.send("iamat x +0+0 1\n").await;
    assert_eq!(c.text_line().await, "? iamat x +0+0 1\n");
    c.send(format!("{IAMAT}\n")).await;
    assert_eq!(c.text_line().await, format!("{AT}\n"));
    s.stop().await;
}

#[tokio::test]
async fn invalid_lines_are_echoed_exactly() {
    let s = start_server("Alford", fixed_clock()).await;
    for line in [
        "HELLO",
        "iamat kiwi +34-118 1",
        "IAMTA kiwi +34-118 1",
        "IAMAT kiwi +34-118",
        "IAMAT kiwi 34.06-118.44 1",
        "IAMAT kiwi +91.0+0.0 1",
        "IAMAT kiwi +34-118 1e9",
        "WHATSAT nobody 10 5",
        "WHATSAT kiwi.cs.ucla.edu 0 5",
        "WHATSAT kiwi.cs.ucla.edu 10 21",
        "  IAMAT \t kiwi  ",
        AT,
        "HERD-PING",
    ] {
        exchange(s.addr, format!("{IAMAT}\n")).await;
        assert_eq!(
            exchange_text(s.addr, format!("{line}\r\n")).await,
            format!("? {line}\n"),
            "{line:?}"
        );
    }
    // Bytes, not text: invalid UTF-8 comes back as it was.
    let raw = b"FOO \xff\xfe\x00bar\n";
    assert_eq!(exchange(s.addr, raw).await, b"? FOO \xff\xfe\x00bar\n");
    // A valid IAMAT with an invalid-UTF-8 id is answered with that id.
    let reply = exchange(s.addr, b"IAMAT \xff\xfe +1+1 1479413884\n").await;
    assert_eq!(reply, b"AT Alford +0.655887836 \xff\xfe +1+1 1479413884\n");
    s.stop().await;
}

#[tokio::test]
async fn stale_iamat_gets_the_held_record() {
    let s = start_server("Alford", fixed_clock()).await;
    exchange(s.addr, format!("{IAMAT}\n")).await;
    let stale = exchange_text(s.addr, "IAMAT kiwi.cs.ucla.edu +1+1 1479413800\n").await;
    assert_eq!(stale, format!("{AT}\n"));
    let newer = exchange_text(s.addr, "IAMAT kiwi.cs.ucla.edu +1+1 1479413884.5\n").await;
    assert_eq!(
        newer,
        "AT Alford +0.155887836 kiwi.cs.ucla.edu +1+1 1479413884.5\n"
    );
    s.stop().await;
}

#[tokio::test]
async fn over_long_line_is_answered_and_closed() {
    let s = start_server(
        "Alford",
        Options {
            limits: Limits {
                max_line: 100,
                ..Limits::default()
            },
            ..fixed_clock()
        },
    )
    .await;
    let mut c = Client::connect(s.addr).await;
    let long = "X".repeat(200);
    c.send(format!("{IAMAT}\n{long}\n{IAMAT}\n")).await;
    let all = String::from_utf8(c.read_to_end().await).unwrap();
    assert_eq!(all, format!("{AT}\n? {}\n", &long[..100]));
    // The server goes on serving.
    assert_eq!(exchange_text(s.addr, IAMAT).await, format!("{AT}\n"));
    s.stop().await;
}

#[tokio::test]
async fn default_limit_is_4096_bytes() {
    let s = start_server("Alford", fixed_clock()).await;
    let ok = format!("IAMAT {} +1+1 1\n", "k".repeat(4096 - 13));
    assert_eq!(ok.len(), 4097);
    assert!(exchange_text(s.addr, &ok).await.starts_with("AT Alford"));
    let long = format!("IAMAT {} +1+1 1\n", "k".repeat(5000));
    let reply = exchange_text(s.addr, &long).await;
    assert_eq!(reply, format!("? {}\n", &long[..4096]));
    s.stop().await;
}

/// A fake google-legacy back-end that answers after `delay`.
async fn slow_places(delay: Duration) -> (FakePlaces, Places) {
    let fake = FakePlaces::start(Script::ok(fixture("legacy-ok")).after(delay)).await;
    let cfg = PlacesConfig {
        backend: Backend::GoogleLegacy,
        url: Some(fake.url("/maps/api/place/nearbysearch/json")),
        timeout: Duration::from_secs(5),
        key: Some("test-key".into()),
        cache_ttl: Duration::ZERO,
        cache_entries: 0,
        max_in_flight: 8,
        budget: Default::default(),
    };
    let places = Places::new(&cfg, reqwest_client());
    (fake, places)
}

/// Alford with a Places back-end that answers after `delay`, already holding kiwi's record.
async fn slow_server(delay: Duration) -> (FakePlaces, herd_tests::herd::InProcess) {
    let (fake, places) = slow_places(delay).await;
    let s = start_server(
        "Alford",
        Options {
            places,
            ..fixed_clock()
        },
    )
    .await;
    exchange(s.addr, format!("{IAMAT}\n")).await;
    (fake, s)
}

fn reqwest_client() -> herd_server::places::HttpClient {
    herd_server::places::HttpClient::new()
}

#[tokio::test]
async fn slow_whatsat_then_quick_iamats_keep_their_order() {
    let (_fake, s) = slow_server(Duration::from_millis(300)).await;
    let mut c = Client::connect(s.addr).await;
    c.send(format!(
        "WHATSAT kiwi.cs.ucla.edu 10 2\n{IAMAT}\nIAMAT other +1+1 1479413884\n"
    ))
    .await;
    let answer = c.whatsat_answer().await;
    assert!(answer.starts_with(&format!("{AT}\n{{")), "{answer}");
    assert!(answer.contains("\"status\": \"OK\""), "{answer}");
    assert_eq!(c.text_line().await, format!("{AT}\n"));
    assert_eq!(
        c.text_line().await,
        "AT Alford +0.655887836 other +1+1 1479413884\n"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_slow_lookup_does_not_hold_up_other_clients() {
    let (_fake, s) = slow_server(Duration::from_secs(2)).await;
    let mut slow = Client::connect(s.addr).await;
    slow.send("WHATSAT kiwi.cs.ucla.edu 10 2\n").await;
    // Another client is answered while the look-up is pending.
    let started = std::time::Instant::now();
    assert_eq!(exchange_text(s.addr, IAMAT).await, format!("{AT}\n"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "other clients were held up"
    );
    assert!(slow.whatsat_answer().await.contains("\"status\": \"OK\""));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_clients() {
    let s = start_server("Alford", Options::default()).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let addr = s.addr;
        tasks.spawn(async move {
            let reply = exchange_text(addr, format!("IAMAT client-{i} +34.1-118.4 {i}.5\n")).await;
            assert!(reply.starts_with("AT Alford "), "{reply}");
            assert!(
                reply.ends_with(&format!(" client-{i} +34.1-118.4 {i}.5\n")),
                "{reply}"
            );
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    // Every client is now known.
    let reply = exchange_text(s.addr, "WHATSAT client-999 5 1\n").await;
    assert!(reply.starts_with("AT Alford "), "{reply}");
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_stop_the_server() {
    let s = start_server("Alford", fixed_clock()).await;
    exchange(s.addr, format!("{IAMAT}\n")).await;
    let mut hog = Client::connect(s.addr).await;
    // Ask for megabytes of answers and never read them.
    let burst = "WHATSAT kiwi.cs.ucla.edu 50 20\n".repeat(2000);
    let writer = tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(3), hog.send(burst)).await;
        hog
    });
    for _ in 0..20 {
        assert_eq!(exchange_text(s.addr, IAMAT).await, format!("{AT}\n"));
    }
    drop(writer.await.unwrap());
    s.stop().await;
}

#[tokio::test]
async fn offline_places_near_ucla_are_real() {
    let s = start_server("Alford", fixed_clock()).await;
    exchange(s.addr, format!("{IAMAT}\n")).await;
    let answer = exchange_text(s.addr, "WHATSAT kiwi.cs.ucla.edu 10 5\n").await;
    let json: serde_json::Value = serde_json::from_str(answer.split_once('\n').unwrap().1).unwrap();
    assert_eq!(json["status"], "OK");
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    let names: Vec<&str> = results
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for near in ["Beverly Hills", "Century City"] {
        assert!(names.contains(&near), "{near} missing from {names:?}");
    }
    assert!(json["html_attributions"][0]
        .as_str()
        .unwrap()
        .contains("GeoNames"));
    // Bound 0: no results, still the full shape.
    let answer = exchange_text(s.addr, "WHATSAT kiwi.cs.ucla.edu 10 0\n").await;
    assert!(answer.contains("\"results\": []"), "{answer}");
    s.stop().await;
}

/// Servers whose clients and inbound links are all served on another event loop
/// (`herd_server::driver::loops`): replies, a record flooded over a link accepted on that loop, a Places
/// look-up over HTTP from it, and a shutdown that waits for the loop's connections.
#[tokio::test]
async fn servers_on_another_event_loop_answer_flood_and_look_up() {
    let loops = herd_server::Loops::start(1).unwrap();
    let (fake, places) = slow_places(Duration::ZERO).await;
    let herd = start_herd(
        &[("Alford", &["Hamilton"]), ("Hamilton", &["Alford"])],
        Options {
            places,
            on_loop: Some(loops.handles()[0].clone()),
            ..fixed_clock()
        },
    )
    .await;
    let (alford, hamilton) = (herd["Alford"].addr, herd["Hamilton"].addr);
    // Alford dials Hamilton (its name sorts first): the link lands on Hamilton's loop.
    let at = exchange_text(hamilton, format!("{IAMAT}\n")).await;
    assert_eq!(at, format!("{}\n", AT.replace("Alford", "Hamilton")));
    eventually("the record to reach Alford", || async {
        (held(alford, "kiwi.cs.ucla.edu").await.as_deref() == Some(at.trim_end())).then_some(())
    })
    .await;
    let mut c = Client::connect(alford).await;
    c.send("WHATSAT kiwi.cs.ucla.edu 10 2\n").await;
    let answer = c.whatsat_answer().await;
    assert!(answer.contains("\"status\": \"OK\""), "{answer}");
    assert!(!fake.requests().is_empty(), "the look-up went out");
    // A connection still open on the loop is closed by the shutdown, which then completes.
    for (_, s) in herd {
        tokio::time::timeout(Duration::from_secs(10), s.stop())
            .await
            .expect("the server stops");
    }
    drop(c);
    loops.stop();
}

#[tokio::test]
async fn shutdown_finishes_replies_in_flight() {
    let (fake, s) = slow_server(Duration::from_millis(500)).await;
    let mut c = Client::connect(s.addr).await;
    c.send("WHATSAT kiwi.cs.ucla.edu 10 1\n").await;
    // Once the look-up is under way, shut down: the answer still arrives.
    eventually("the look-up to start", || async {
        (!fake.requests().is_empty()).then_some(())
    })
    .await;
    let stop = tokio::spawn(s.stop());
    let answer = c.whatsat_answer().await;
    assert!(answer.contains("\"status\": \"OK\""), "{answer}");
    stop.await.unwrap();
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_time_out() {
    let s = start_server(
        "Alford",
        Options {
            limits: Limits {
                idle_timeout: Duration::from_millis(300),
                ..Limits::default()
            },
            ..fixed_clock()
        },
    )
    .await;
    let mut c = Client::connect(s.addr).await;
    // Activity every 150 ms keeps it open past the 300 ms time-out…
    for i in 0..4 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        c.send(format!("{IAMAT}\n")).await;
        assert_eq!(c.text_line().await, format!("{AT}\n"));
    }
    // …silence closes it.
    let silent = std::time::Instant::now();
    assert_eq!(c.read_to_end().await, b"");
    assert!(
        silent.elapsed() >= Duration::from_millis(250),
        "closed too early"
    );
    s.stop().await;
}
