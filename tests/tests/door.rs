//! The client door over HTTP/JSON and WebSocket (PROTOCOL.md §10), against real `herd-server`
//! processes: every endpoint with good and bad input, the WebSocket's lines answered as on TCP,
//! watches that fire for records stored anywhere in the herd, the bounds on watches, a slow watcher
//! dropped with a reason, and a closed connection's watches gone.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use herd_tests::client::{exchange_text, Client};
use herd_tests::herd::Processes;
use herd_tests::{eventually, DEADLINE};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const OFFLINE: &str = "[places]\nbackend = \"offline\"\n";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(addr: SocketAddr) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws"))
        .await
        .expect("websocket handshake");
    ws
}

/// The next text message, within the deadline.
async fn next_text(ws: &mut Ws) -> String {
    loop {
        let m = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("a message in time")
            .expect("the socket open")
            .expect("a message");
        match m {
            Message::Text(t) => return t.as_str().to_owned(),
            Message::Binary(b) => return String::from_utf8_lossy(&b).into_owned(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// Sends `line` and returns the one answer.
async fn ask(ws: &mut Ws, line: &str) -> String {
    ws.send(Message::text(line)).await.expect("send");
    next_text(ws).await
}

async fn body(r: reqwest::Response) -> (u16, Value) {
    let code = r.status().as_u16();
    let v = r.json::<Value>().await.expect("a JSON body");
    (code, v)
}

#[tokio::test]
async fn the_json_endpoints_answer_records_places_and_clear_errors() {
    let mut herd = Processes::new(&[("Alford", &["Ball"]), ("Ball", &[])], OFFLINE).with_http();
    herd.start_all().await;
    let http = reqwest::Client::new();
    let a = format!("http://{}", herd.http("Alford"));

    // JSON, with the exact time as a string.
    let r = http
        .post(format!("{a}/v1/iamat"))
        .json(&json!({"client": "kiwi", "latitude": 34.068930, "longitude": -118.445127, "time": "1479413884.392014450"}))
        .send()
        .await
        .unwrap();
    let (code, v) = body(r).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["server"], "Alford");
    assert_eq!(v["client"], "kiwi");
    assert_eq!(v["location"], "+34.068930-118.445127");
    assert_eq!(v["client_time"], "1479413884.392014450");
    assert!(v["time_diff"].as_str().unwrap().starts_with('+'), "{v}");
    assert_eq!(v["latitude"], 34.06893);

    // The raw line as text/plain; no time in JSON means the server's clock.
    let r = http
        .post(format!("{a}/v1/iamat"))
        .header("content-type", "text/plain")
        .body("IAMAT plum +34.07-118.44 1479413890\n")
        .send()
        .await
        .unwrap();
    let (code, v) = body(r).await;
    assert_eq!((code, v["client"].as_str()), (200, Some("plum")), "{v}");
    let r = http
        .post(format!("{a}/v1/iamat"))
        .json(&json!({"client": "now", "latitude": 1.5, "longitude": 2}))
        .send()
        .await
        .unwrap();
    let (code, v) = body(r).await;
    assert_eq!(code, 200, "{v}");
    assert!(v["client_time"].as_str().unwrap().len() > 9, "{v}");

    // The held record, here and (flooded) at the neighbour.
    let (code, v) = body(
        http.get(format!("{a}/v1/clients/kiwi"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (code, v["client_time"].as_str()),
        (200, Some("1479413884.392014450"))
    );
    let b = format!("http://{}", herd.http("Ball"));
    let held = eventually("kiwi at Ball", || {
        let (http, b) = (http.clone(), b.clone());
        async move {
            let r = http.get(format!("{b}/v1/clients/kiwi")).send().await.ok()?;
            (r.status() == 200).then_some(())?;
            r.json::<Value>().await.ok()
        }
    })
    .await;
    assert_eq!(held["server"], "Alford");
    let (code, v) = body(
        http.get(format!("{a}/v1/clients/nobody"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 404, "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains("unknown client"),
        "{v}"
    );

    // WHATSAT: the record's fields and the Places answer, the same as the line protocol's.
    let (code, v) = body(
        http.get(format!("{a}/v1/whatsat?client=kiwi&radius_km=10&bound=3"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["client"], "kiwi");
    assert_eq!(v["places"]["status"], "OK");
    let results = v["places"]["results"].as_array().unwrap();
    assert!(!results.is_empty() && results.len() <= 3, "{v}");
    let tcp = exchange_text(herd.addr("Alford"), "WHATSAT kiwi 10 3\n").await;
    let json_start = tcp.find('{').unwrap();
    let line_places: Value = serde_json::from_str(tcp[json_start..].trim_end()).unwrap();
    assert_eq!(v["places"], line_places);

    // Errors: JSON bodies with the reason, and the `? …` line where there is one.
    let bad = |body: Value| {
        let (http, a) = (http.clone(), a.clone());
        async move { body_of(http.post(format!("{a}/v1/iamat")).json(&body)).await }
    };
    let (code, v) = bad(json!({"client": "k", "latitude": 91, "longitude": 0})).await;
    assert_eq!(code, 400, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("latitude"), "{v}");
    let (code, v) = bad(json!({"client": "a b", "latitude": 1, "longitude": 0})).await;
    assert_eq!(code, 400, "{v}");
    let (code, v) = bad(json!({"client": "k", "latitude": 1, "longitude": 0, "time": "1e9"})).await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(v["error"], "? IAMAT k +1.000000+0.000000 1e9");
    assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()), "{v}");
    let (code, v) =
        bad(json!({"client": "k", "latitude": 1, "longitude": 0, "time": "99999999999"})).await;
    assert_eq!(code, 422, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("limit"), "{v}");
    let (code, v) = body_of(
        http.post(format!("{a}/v1/iamat"))
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_eq!(code, 400, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("JSON"), "{v}");
    let (code, v) = body_of(
        http.post(format!("{a}/v1/iamat"))
            .header("content-type", "text/plain")
            .body("IAMAT k 34.06-118.44 1"),
    )
    .await;
    assert_eq!(
        (code, v["error"].as_str()),
        (400, Some("? IAMAT k 34.06-118.44 1")),
        "{v}"
    );
    let (code, v) = body_of(
        http.post(format!("{a}/v1/iamat"))
            .header("content-type", "text/plain")
            .body("WHATSAT kiwi 10 3"),
    )
    .await;
    assert_eq!(code, 400, "{v}");
    for (q, want) in [
        ("client=nobody&radius_km=10&bound=3", 404),
        ("client=kiwi&radius_km=60&bound=3", 400),
        ("client=kiwi&radius_km=10&bound=21", 400),
        ("client=kiwi&radius_km=10", 400),
        ("client=a%20b&radius_km=10&bound=1", 400),
    ] {
        let (code, v) = body_of(http.get(format!("{a}/v1/whatsat?{q}"))).await;
        assert_eq!(code, want, "{q}: {v}");
        assert!(v["reason"].is_string(), "{q}: {v}");
    }
    let (code, _) = body_of(http.get(format!("{a}/v1/nothing"))).await;
    assert_eq!(code, 404);
    let (code, _) = body_of(http.delete(format!("{a}/v1/iamat"))).await;
    assert_eq!(code, 405);
    let too_big = "x".repeat(8192);
    let r = http
        .post(format!("{a}/v1/iamat"))
        .header("content-type", "text/plain")
        .body(too_big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // The description of the door.
    let (code, v) = body_of(http.get(format!("{a}/v1/openapi.json"))).await;
    assert_eq!(code, 200);
    assert!(v["openapi"].as_str().unwrap().starts_with("3."), "{v}");
    for path in ["/v1/iamat", "/v1/clients/{id}", "/v1/whatsat", "/v1/ws"] {
        assert!(
            v["paths"][path].is_object(),
            "{path} missing from the OpenAPI description"
        );
    }

    // Logged like the line protocol, marked with the door.
    let log = eventually("the door's lines in the log", || {
        let log = herd.log("Alford");
        async move { log.contains("door=http").then_some(log) }
    })
    .await;
    assert!(
        log.contains("IAMAT kiwi +34.068930-118.445127 1479413884.392014450"),
        "{log}"
    );
}

async fn body_of(r: reqwest::RequestBuilder) -> (u16, Value) {
    let r = r.send().await.expect("an answer");
    let code = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn websocket_lines_are_answered_as_on_tcp_and_a_watch_fires_two_hops_away() {
    // Alford - Ball - Welsh: Welsh is two hops from Alford.
    let mut herd = Processes::new(
        &[("Alford", &["Ball"]), ("Ball", &["Welsh"]), ("Welsh", &[])],
        OFFLINE,
    )
    .with_http();
    herd.start_all().await;
    let mut a = ws(herd.http("Alford")).await;

    // Each message is one line, answered exactly as on TCP.
    let at = ask(
        &mut a,
        "IAMAT kiwi +34.068930-118.445127 1479413884.392014450",
    )
    .await;
    assert!(
        at.starts_with("AT Alford +")
            && at.ends_with(" kiwi +34.068930-118.445127 1479413884.392014450\n"),
        "{at:?}"
    );
    assert_eq!(
        ask(&mut a, "IAMAT kiwi nowhere 1").await,
        "? IAMAT kiwi nowhere 1\n"
    );
    assert_eq!(ask(&mut a, "HELLO").await, "? HELLO\n");
    let places = ask(&mut a, "WHATSAT kiwi 10 2").await;
    assert!(
        places.starts_with(&at) && places.ends_with("}\n\n"),
        "{places:?}"
    );
    let tcp = exchange_text(herd.addr("Alford"), "WHATSAT kiwi 10 2\n").await;
    assert_eq!(places, tcp);

    // Watches: of a client, and of a circle; answered with what they watch.
    assert_eq!(
        ask(&mut a, "WATCH CLIENT plum").await,
        "WATCHING CLIENT plum\n"
    );
    assert_eq!(
        ask(&mut a, "WATCH NEAR 34.0522 -118.2437 5").await,
        "WATCHING NEAR +34.0522 -118.2437 5\n"
    );
    assert_eq!(
        ask(&mut a, "WATCH NEAR 91 0 5").await,
        "? WATCH NEAR 91 0 5\n"
    );
    assert_eq!(
        ask(&mut a, "UNWATCH CLIENT nobody").await,
        "? UNWATCH CLIENT nobody\n"
    );

    // An IAMAT at Welsh, two hops away, over TCP: the watcher at Alford is told.
    let mut e = Client::connect(herd.addr("Welsh")).await;
    e.send("IAMAT plum +10.0+10.0 1479413900\n").await;
    let answered = e.text_line().await;
    assert_eq!(next_text(&mut a).await, answered);
    // Downtown Los Angeles, inside the circle; and one outside it, which must not come.
    e.send("IAMAT faraway +40.0-100.0 1479413901\nIAMAT downtown +34.0500-118.2500 1479413902\n")
        .await;
    let _far = e.text_line().await;
    let downtown = e.text_line().await;
    assert_eq!(next_text(&mut a).await, downtown);
    // An older record is not stored, so it fires nothing; UNWATCH ends a watch.
    assert_eq!(
        ask(&mut a, "UNWATCH CLIENT plum").await,
        "UNWATCHED CLIENT plum\n"
    );
    e.send("IAMAT plum +10.0+10.0 1479413999\nIAMAT downtown +34.0500-118.2500 1479413903\n")
        .await;
    let _ = e.text_line().await;
    let downtown2 = e.text_line().await;
    assert_eq!(
        next_text(&mut a).await,
        downtown2,
        "the unwatched client must not come"
    );

    // Logged, marked with the door.
    let log = eventually("the ws lines in the log", || {
        let log = herd.log("Alford");
        async move { log.contains("door=ws").then_some(log) }
    })
    .await;
    assert!(log.contains("WATCH CLIENT plum"), "{log}");
}

#[tokio::test]
async fn watches_are_bounded_and_a_closed_connection_gives_its_watches_back() {
    let mut herd = Processes::new(
        &[("Alford", &[])],
        &format!("{OFFLINE}[limits]\nmax_watches = 3\nmax_watches_per_connection = 2\n"),
    )
    .with_http();
    herd.start_all().await;
    let mut one = ws(herd.http("Alford")).await;
    assert_eq!(ask(&mut one, "WATCH CLIENT a").await, "WATCHING CLIENT a\n");
    assert_eq!(ask(&mut one, "WATCH CLIENT a").await, "WATCHING CLIENT a\n"); // held once
    assert_eq!(ask(&mut one, "WATCH CLIENT b").await, "WATCHING CLIENT b\n");
    assert_eq!(ask(&mut one, "WATCH CLIENT c").await, "? WATCH CLIENT c\n");
    let mut two = ws(herd.http("Alford")).await;
    assert_eq!(ask(&mut two, "WATCH CLIENT c").await, "WATCHING CLIENT c\n");
    assert_eq!(ask(&mut two, "WATCH CLIENT d").await, "? WATCH CLIENT d\n");
    // Closing the first gives its two watches back; its watches fire no more.
    one.close(None).await.expect("close");
    drop(one);
    let mut three = ws(herd.http("Alford")).await;
    // Polled with a deadline: the server frees them when it reads the close.
    let started = std::time::Instant::now();
    let mut answer = String::new();
    for tries in 0..1000 {
        answer = ask(&mut three, &format!("WATCH CLIENT e{tries}")).await;
        if answer.starts_with("WATCHING") || started.elapsed() > DEADLINE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answer.starts_with("WATCHING CLIENT e"), "{answer}");
    // `two` still fires; nothing reaches the closed one (the server would fail writing to it).
    let at = exchange_text(herd.addr("Alford"), "IAMAT c +1+1 5\n").await;
    assert_eq!(next_text(&mut two).await, at);
}

#[tokio::test]
async fn a_slow_watcher_is_dropped_with_a_reason_and_the_herd_goes_on() {
    let mut herd = Processes::new(
        &[("Alford", &[])],
        &format!(
            "{OFFLINE}[log]\nlines = false\n[limits]\nwatch_queue = 4\nline_timeout_ms = 60000\n"
        ),
    )
    .with_http()
    .with_admin();
    herd.start_all().await;
    // A watcher that stops reading, and one that keeps up.
    let mut slow = ws(herd.http("Alford")).await;
    let id = "s".repeat(3000);
    assert!(ask(&mut slow, &format!("WATCH CLIENT {id}"))
        .await
        .starts_with("WATCHING"));
    let mut fast = ws(herd.http("Alford")).await;
    assert_eq!(
        ask(&mut fast, "WATCH CLIENT other").await,
        "WATCHING CLIENT other\n"
    );

    // Enough big records to fill every buffer between the server and the slow watcher.
    const N: usize = 6000;
    let mut c = Client::connect(herd.addr("Alford")).await;
    let mut answered = 0;
    for chunk in 0..N / 100 {
        let mut batch = String::new();
        for i in 0..100 {
            batch.push_str(&format!("IAMAT {id} +1+1 {}\n", chunk * 100 + i + 1));
        }
        c.send(batch).await;
        for _ in 0..100 {
            let line = c.line().await;
            assert!(
                line.starts_with(b"AT Alford "),
                "{:?}",
                String::from_utf8_lossy(&line)
            );
            answered += 1;
        }
    }
    assert_eq!(
        answered, N,
        "every IAMAT is answered while the watcher does not read"
    );

    // The other watcher is served all along.
    let at = exchange_text(herd.addr("Alford"), "IAMAT other +2+2 1\n").await;
    assert_eq!(next_text(&mut fast).await, at);

    // The slow one gets what was queued, then a close with the reason.
    let mut pushed = 0;
    let close = loop {
        let m = tokio::time::timeout(DEADLINE, slow.next())
            .await
            .expect("in time");
        match m {
            Some(Ok(Message::Text(_))) => pushed += 1,
            Some(Ok(Message::Close(c))) => break c,
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?} after {pushed} records"),
        }
        assert!(pushed <= N, "more records than were stored");
    };
    let close = close.expect("a close frame with a reason");
    assert_eq!(u16::from(close.code), 1008);
    assert!(close.reason.as_str().contains("too slow"), "{close:?}");
    assert!(
        pushed < N,
        "the watcher was dropped before all {N} records: got {pushed}"
    );

    // Counted: one watcher dropped, the other still holding its watch.
    let admin = herd.admin("Alford");
    let metrics = eventually("the drop on /metrics", || async move {
        let m = reqwest::get(format!("http://{admin}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        m.contains("herd_watchers_dropped_total 1\n").then_some(m)
    })
    .await;
    assert!(metrics.contains("herd_watches 1\n"), "{metrics}");
}

/// The next message within the deadline, which must be a close frame: its code and reason.
async fn close_of(ws: &mut Ws) -> (u16, String) {
    loop {
        let m = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("a close in time");
        match m {
            Some(Ok(Message::Close(Some(c)))) => return (c.code.into(), c.reason.to_string()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("not a close frame with a reason: {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_over_long_message_is_answered_as_an_over_long_line_then_closed() {
    let mut herd = Processes::new(
        &[("Alford", &[])],
        &format!("{OFFLINE}[limits]\nmax_line = 100\n"),
    )
    .with_http();
    herd.start_all().await;
    let long = format!("IAMAT {} +1+1 1", "x".repeat(150));
    // On TCP: `? ` and the line's first 100 bytes, then the connection closes.
    let tcp = exchange_text(herd.addr("Alford"), format!("{long}\n")).await;
    assert_eq!(tcp, format!("? {}\n", &long[..100]));
    // The same answer over the WebSocket, then a close saying why.
    let mut a = ws(herd.http("Alford")).await;
    assert_eq!(
        ask(&mut a, "IAMAT ok +1+1 1").await.get(..9),
        Some("AT Alford")
    );
    assert_eq!(ask(&mut a, &long).await, tcp);
    let (code, reason) = close_of(&mut a).await;
    assert_eq!(code, 1009);
    assert!(reason.contains("line too long: over 100 bytes"), "{reason}");
    // A message past what the door reads at all is closed with the same reason (nothing to echo).
    let mut b = ws(herd.http("Alford")).await;
    b.send(Message::text("y".repeat(1000))).await.expect("send");
    let (code, reason) = close_of(&mut b).await;
    assert_eq!(
        (code, reason.contains("line too long")),
        (1009, true),
        "{reason}"
    );
    // The server goes on.
    let mut c = ws(herd.http("Alford")).await;
    assert!(ask(&mut c, "IAMAT ok +1+1 2")
        .await
        .starts_with("AT Alford"));
}

/// Waits, within the deadline, for the server to end the socket (no message before the end).
async fn ended(ws: &mut Ws) {
    loop {
        let m = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("the end in time");
        match m {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_)) | Err(_)) | None => return,
            Some(Ok(other)) => panic!("a message instead of the end: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_quiet_socket_ends_at_the_idle_time_out_but_a_watcher_is_never_idle() {
    let mut herd = Processes::new(
        &[("Alford", &[])],
        &format!("{OFFLINE}[limits]\nidle_timeout_ms = 300\n"),
    )
    .with_http();
    herd.start_all().await;
    // A watcher, then a socket that says nothing: when the quiet one is ended, the watcher has been
    // silent for longer than the idle time-out too.
    let mut w = ws(herd.http("Alford")).await;
    assert_eq!(
        ask(&mut w, "WATCH CLIENT plum").await,
        "WATCHING CLIENT plum\n"
    );
    let mut quiet = ws(herd.http("Alford")).await;
    ended(&mut quiet).await;
    // The watcher is still served: its record comes, and it is answered.
    let mut e = Client::connect(herd.addr("Alford")).await;
    e.send("IAMAT plum +10.0+10.0 1479413900\n").await;
    let answered = e.text_line().await;
    assert_eq!(next_text(&mut w).await, answered);
    // Without its watch, it is idle like any other socket.
    assert_eq!(
        ask(&mut w, "UNWATCH CLIENT plum").await,
        "UNWATCHED CLIENT plum\n"
    );
    ended(&mut w).await;
}
