//! The admin endpoint of real servers on loopback: `/metrics` counts what happened, `/health` and
//! `/status` say how the server is, anything else gets a clear HTTP error.

use std::net::SocketAddr;

use herd_server::config::Limits;
use herd_tests::client::{exchange, exchange_text, try_exchange, Client};
use herd_tests::eventually;
use herd_tests::herd::{start_herd, Options, Processes};

/// The raw HTTP answer to `request` sent to `admin`.
async fn http(admin: SocketAddr, request: &str) -> String {
    String::from_utf8_lossy(&exchange(admin, request).await).into_owned()
}

async fn get(admin: SocketAddr, path: &str) -> String {
    http(
        admin,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// The value of the sample line `name` in a `/metrics` answer.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn metrics_health_and_status() {
    let herd = start_herd(
        &[("Alford", &["Ball"]), ("Ball", &["Alford"])],
        Options {
            admin: true,
            ..Options::default()
        },
    )
    .await;
    let (a, b) = (&herd["Alford"], &herd["Ball"]);
    let (admin_a, admin_b) = (a.admin.unwrap(), b.admin.unwrap());
    eventually("the link up", || async move {
        let m = get(admin_a, "/metrics").await;
        (sample(&m, "herd_link_up{peer=\"Ball\"}") == Some(1.0)).then_some(())
    })
    .await;
    let replies = exchange_text(
        a.addr,
        "IAMAT kiwi +34.068930-118.445127 1\nIAMAT pear +1+1 2\nWHATSAT kiwi 10 2\nPING\nWHATSAT nobody 1 1\nWHATSAT kiwi 99 1\n",
    )
    .await;
    assert!(replies.ends_with("? WHATSAT kiwi 99 1\n"), "{replies}");
    let long = format!("IAMAT {} +1+1 1\n", "x".repeat(5000));
    exchange(a.addr, long).await;

    let m = get(admin_a, "/metrics").await;
    assert!(m.starts_with("HTTP/1.1 200 OK\r\n"), "{m}");
    assert!(
        m.contains("content-type: application/openmetrics-text"),
        "{m}"
    );
    for (name, want) in [
        ("herd_requests_total{kind=\"iamat\"}", 2.0),
        ("herd_requests_total{kind=\"whatsat\"}", 1.0),
        ("herd_invalid_total{reason=\"unknown-command\"}", 1.0),
        ("herd_invalid_total{reason=\"unknown-client\"}", 1.0),
        ("herd_invalid_total{reason=\"radius\"}", 1.0),
        ("herd_refused_line_too_long_total", 1.0),
        ("herd_connections_total", 2.0),
        ("herd_records", 2.0),
        (
            "herd_places_lookups_total{backend=\"offline\",status=\"OK\"}",
            1.0,
        ),
        ("herd_places_lookup_seconds_count{backend=\"offline\"}", 1.0),
        ("herd_places_cache_misses_total", 1.0),
        ("herd_places_cache_hits_total", 0.0),
    ] {
        assert_eq!(sample(&m, name), Some(want), "{name} in\n{m}");
    }
    assert!(m.trim_end().ends_with("# EOF"), "{m}");
    // Ball heard both records over the link, counted per link too.
    let mb = eventually("the flood counted", || async move {
        let m = get(admin_b, "/metrics").await;
        (sample(&m, "herd_flood_in_total") == Some(2.0)).then_some(m)
    })
    .await;
    assert_eq!(
        sample(&mb, "herd_link_flood_in_total{peer=\"Alford\"}"),
        Some(2.0),
        "{mb}"
    );
    // Alford's catch-up ends when Ball's HERD-SYNCED arrives.
    let m = eventually("the catch-up ended", || async move {
        let m = get(admin_a, "/metrics").await;
        let ended = "herd_catchup_finished_total{peer=\"Ball\",kind=\"link-up\"}";
        (sample(&m, ended) == Some(1.0)).then_some(m)
    })
    .await;
    for (name, want) in [
        ("herd_flood_out_total", 2.0),
        ("herd_link_flood_out_total{peer=\"Ball\"}", 2.0),
        ("herd_link_flood_in_total{peer=\"Ball\"}", 0.0),
        // The link-up catch-up of two empty servers: begun and ended, nothing sent.
        (
            "herd_catchup_started_total{peer=\"Ball\",kind=\"link-up\"}",
            1.0,
        ),
        (
            "herd_catchup_finished_total{peer=\"Ball\",kind=\"link-up\"}",
            1.0,
        ),
        (
            "herd_catchup_started_total{peer=\"Ball\",kind=\"periodic\"}",
            0.0,
        ),
        ("herd_catchup_full_streams_total{peer=\"Ball\"}", 0.0),
        (
            "herd_catchup_records_total{peer=\"Ball\",direction=\"sent\"}",
            0.0,
        ),
        ("herd_catchup_in_progress{peer=\"Ball\"}", 0.0),
        ("herd_refused_total{limit=\"busy\"}", 0.0),
        ("herd_refused_total{limit=\"client-cap\"}", 0.0),
        ("herd_store_enabled", 0.0),
    ] {
        assert_eq!(sample(&m, name), Some(want), "{name} in\n{m}");
    }
    // Bytes each way: Alford opened (HERD-ROOT 0 0 <salt>, HERD-OVER; the salt is 1 to 16 hex
    // digits), Ball ended (HERD-SYNCED 0).
    let cb = "herd_catchup_bytes_total{peer=\"Ball\",direction=";
    let sent = sample(&m, &format!("{cb}\"sent\"}}")).expect("bytes sent");
    let shortest = "HERD-ROOT 0 0 0\nHERD-OVER\n".len() as f64;
    assert!(
        (shortest..=shortest + 15.0).contains(&sent),
        "{sent} bytes sent in\n{m}"
    );
    assert_eq!(
        sample(&m, &format!("{cb}\"received\"}}")),
        Some("HERD-SYNCED 0\n".len() as f64),
        "{m}"
    );
    assert!(
        !m.contains("herd_store_journal"),
        "no store, no store figures: {m}"
    );

    let h = get(admin_a, "/health").await;
    assert!(
        h.starts_with("HTTP/1.1 200 OK\r\n") && h.ends_with("\r\n\r\nok\n"),
        "{h}"
    );

    let s = get(admin_a, "/status").await;
    let body = s.split_once("\r\n\r\n").unwrap().1;
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["server"], "Alford");
    assert_eq!(v["listen"], a.addr.to_string());
    assert_eq!(v["ready"], true);
    assert_eq!(v["records"], 2);
    assert_eq!(v["requests"]["iamat"], 2);
    assert_eq!(v["requests"]["invalid"], 3);
    assert_eq!(v["links"][0]["name"], "Ball");
    assert_eq!(v["links"][0]["up"], true);
    assert!(v["links"][0]["last_heard_seconds"].as_f64().is_some());
    assert_eq!(v["links"][0]["catching_up"], false);
    assert_eq!(v["links"][0]["flood"]["out"], 2);
    assert_eq!(v["links"][0]["catchup"]["started"]["link_up"], 1);
    assert_eq!(v["links"][0]["catchup"]["finished"]["link_up"], 1);
    assert_eq!(v["links"][0]["catchup"]["bytes"]["sent"], sent);
    assert_eq!(v["refused"]["busy"], 0);
    assert_eq!(v["store"], serde_json::Value::Null);

    assert!(get(admin_a, "/nope").await.starts_with("HTTP/1.1 404 "));
    assert!(http(admin_a, "POST /metrics HTTP/1.1\r\n\r\n")
        .await
        .starts_with("HTTP/1.1 405 "));
    assert!(http(admin_a, "IAMAT kiwi +1+1 1\n\n")
        .await
        .starts_with("HTTP/1.1 400 "));
    // Read whole (so no unread bytes reset the answer) and refused past 8 KiB.
    let huge = format!("GET /{} HTTP/1.1\r\n", "x".repeat(8_500));
    assert!(http(admin_a, &huge).await.starts_with("HTTP/1.1 431 "));

    for (_, s) in herd {
        s.stop().await;
    }
}

/// A connection over `max_connections` is answered `? busy` at accept and counted by its limit.
#[tokio::test]
async fn refusals_at_accept_are_counted() {
    let herd = start_herd(
        &[("Alford", &[])],
        Options {
            admin: true,
            limits: Limits {
                max_connections: 1,
                ..Limits::default()
            },
            ..Options::default()
        },
    )
    .await;
    let a = &herd["Alford"];
    let admin = a.admin.unwrap();
    let mut held = Client::connect(a.addr).await;
    held.send("IAMAT kiwi +1+1 1\n").await;
    assert!(held.text_line().await.starts_with("AT Alford "));
    let busy = String::from_utf8_lossy(&exchange(a.addr, "IAMAT pear +1+1 1\n").await).into_owned();
    assert_eq!(busy, "? busy max_connections=1\n");
    let m = get(admin, "/metrics").await;
    assert_eq!(
        sample(&m, "herd_refused_total{limit=\"busy\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "herd_refused_total{limit=\"busy-per-ip\"}"),
        Some(0.0),
        "{m}"
    );
    let s = get(admin, "/status").await;
    let v: serde_json::Value = serde_json::from_str(s.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(v["refused"]["busy"], 1);
    drop(held);
    for (_, s) in herd {
        s.stop().await;
    }
}

/// The store's state, and a whole-cache catch-up: a server restarted on its data folder shows what it
/// loaded; its neighbour, restarted with its folder wiped, gets everything as one stream, counted on both
/// sides of the link.
#[tokio::test]
async fn store_state_and_a_full_stream_catch_up() {
    let data = std::env::temp_dir().join(format!("herd-admin-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let topology: &[(&str, &[&str])] = &[("Alford", &["Ball"]), ("Ball", &["Alford"])];
    let opts = Options {
        admin: true,
        data_dir: Some(data.clone()),
        ..Options::default()
    };
    let herd = start_herd(topology, opts.clone()).await;
    let admin_b = herd["Ball"].admin.unwrap();
    exchange_text(
        herd["Alford"].addr,
        "IAMAT a +1+1 1\nIAMAT b +1+1 1\nIAMAT c +1+1 1\n",
    )
    .await;
    eventually("Ball holds all three", || async move {
        let m = get(admin_b, "/metrics").await;
        (sample(&m, "herd_records") == Some(3.0)).then_some(())
    })
    .await;
    for (_, s) in herd {
        s.stop().await;
    }
    std::fs::remove_dir_all(data.join("Ball")).unwrap();

    let herd = start_herd(topology, opts).await;
    let (admin_a, admin_b) = (herd["Alford"].admin.unwrap(), herd["Ball"].admin.unwrap());
    let mb = eventually("Ball caught up", || async move {
        let m = get(admin_b, "/metrics").await;
        (sample(&m, "herd_records") == Some(3.0)
            && sample(
                &m,
                "herd_catchup_finished_total{peer=\"Alford\",kind=\"link-up\"}",
            ) == Some(1.0))
        .then_some(m)
    })
    .await;
    let ma = eventually("Alford's catch-up ended", || async move {
        let m = get(admin_a, "/metrics").await;
        (sample(
            &m,
            "herd_catchup_finished_total{peer=\"Ball\",kind=\"link-up\"}",
        ) == Some(1.0))
        .then_some(m)
    })
    .await;
    for (name, want) in [
        ("herd_store_enabled", 1.0),
        ("herd_store_fsync{mode=\"everysec\"}", 1.0),
        ("herd_store_loaded_clients", 3.0),
        ("herd_store_loaded_records", 3.0),
        ("herd_store_journal_records", 3.0),
        ("herd_store_snapshot_age_seconds", -1.0),
        ("herd_store_compactions_total", 0.0),
        ("herd_store_failing", 0.0),
        ("herd_store_unwritten_bytes", 0.0),
        ("herd_catchup_full_streams_total{peer=\"Ball\"}", 1.0),
        (
            "herd_catchup_records_total{peer=\"Ball\",direction=\"sent\"}",
            3.0,
        ),
        ("herd_link_flood_out_total{peer=\"Ball\"}", 3.0),
        ("herd_catchup_in_progress{peer=\"Ball\"}", 0.0),
    ] {
        assert_eq!(sample(&ma, name), Some(want), "{name} in\n{ma}");
    }
    assert!(
        sample(&ma, "herd_store_journal_bytes").unwrap() > 0.0,
        "{ma}"
    );
    for (name, want) in [
        ("herd_store_loaded_clients", 0.0),
        ("herd_catchup_full_streams_total{peer=\"Alford\"}", 0.0),
        (
            "herd_catchup_records_total{peer=\"Alford\",direction=\"received\"}",
            3.0,
        ),
        ("herd_link_flood_in_total{peer=\"Alford\"}", 3.0),
    ] {
        assert_eq!(sample(&mb, name), Some(want), "{name} in\n{mb}");
    }
    // What Alford wrote, Ball read.
    let bytes = |m: &str, peer: &str, dir: &str| {
        sample(
            m,
            &format!("herd_catchup_bytes_total{{peer=\"{peer}\",direction=\"{dir}\"}}"),
        )
    };
    assert_eq!(bytes(&ma, "Ball", "sent"), bytes(&mb, "Alford", "received"));
    assert_eq!(bytes(&mb, "Alford", "sent"), bytes(&ma, "Ball", "received"));
    let s = get(admin_a, "/status").await;
    let v: serde_json::Value = serde_json::from_str(s.split_once("\r\n\r\n").unwrap().1).unwrap();
    let st = &v["store"];
    assert_eq!(st["fsync"], "everysec");
    assert_eq!(st["failing"], false);
    assert_eq!(st["loaded"]["clients"], 3);
    assert_eq!(st["snapshot_age_seconds"], serde_json::Value::Null);
    assert!(st["dir"].as_str().unwrap().ends_with("Alford"), "{st}");
    assert_eq!(v["links"][0]["catchup"]["full_streams"], 1);
    assert_eq!(v["links"][0]["catchup"]["records"]["sent"], 3);
    for (_, s) in herd {
        s.stop().await;
    }
    let _ = std::fs::remove_dir_all(&data);
}

/// `/health` says `503 stopping` once shutdown has begun: a request that arrives while the server
/// drains is answered so, and no new connection is taken.
#[tokio::test]
async fn health_is_503_while_stopping() {
    let mut herd = start_herd(
        &[("Alford", &[])],
        Options {
            admin: true,
            ..Options::default()
        },
    )
    .await;
    let a = herd.remove("Alford").unwrap();
    let (addr, admin) = (a.addr, a.admin.unwrap());
    let mut pending = Client::connect(admin).await;
    pending
        .send("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await;
    let stopping = tokio::spawn(a.stop());
    eventually("the listener closed", || async move {
        tokio::net::TcpStream::connect(addr).await.err().map(|_| ())
    })
    .await;
    pending.send("\r\n").await;
    let answer = String::from_utf8_lossy(&pending.read_to_end().await).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n")
            && answer.ends_with("stopping\n"),
        "{answer}"
    );
    stopping.await.unwrap();
}

/// The head of an `/events` answer (the stream stays open; `s` keeps it).
async fn events_head(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let read = async {
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.unwrap_or(0) == 0 {
                break;
            }
            head.push(byte[0]);
        }
    };
    let _ = tokio::time::timeout(herd_tests::DEADLINE, read).await;
    String::from_utf8_lossy(&head).into_owned()
}

/// Idle `/events` streams from one address take at most their address's share: a page from another
/// address still gets the live feed.
#[tokio::test]
async fn events_from_one_address_cannot_starve_another() {
    let mut herd = Processes::new(&[("Alford", &[])], "").with_admin();
    herd.start("Alford").await;
    let admin = herd.admin("Alford");
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..16 {
        let mut s = tokio::net::TcpStream::connect(admin)
            .await
            .expect("connect");
        let head = events_head(&mut s).await;
        if head.starts_with("HTTP/1.1 503 ") {
            refused += 1;
        } else {
            assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        }
        open.push(s);
    }
    assert!(refused > 0, "one address took all 16 streams");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from(([127, 0, 0, 2], 0))).unwrap();
    let mut other = socket.connect(admin).await.unwrap();
    let head = events_head(&mut other).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    let m = get(admin, "/metrics").await;
    assert_eq!(
        sample(
            &m,
            "herd_admin_refused_total{reason=\"events-per-address\"}"
        ),
        Some(f64::from(refused)),
        "{m}"
    );
}

/// A request naming a host that is no IP literal, `localhost` or configured name (a page of another
/// site whose name was rebound to this address) reads nothing: 421. HEAD is answered without a body,
/// and a connection serves several requests.
#[tokio::test]
async fn a_foreign_host_is_misdirected_and_head_has_no_body() {
    // No [admin] table: the defaults guard the door (configured names are in the unit tests).
    let mut herd = Processes::new(&[("Alford", &[])], "").with_admin();
    herd.start("Alford").await;
    let admin = herd.admin("Alford");
    let ask = |host: &str| {
        format!("GET /status?recent HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };
    let foreign = http(admin, &ask("rebind.attacker.example")).await;
    assert!(foreign.starts_with("HTTP/1.1 421 "), "{foreign}");
    assert!(!foreign.contains("\"server\""), "{foreign}");
    let foreign = http(admin, &ask("rebind.attacker.example:80")).await;
    assert!(foreign.starts_with("HTTP/1.1 421 "), "{foreign}");
    for ok in [format!("{admin}"), "localhost".into(), "[::1]:80".into()] {
        let answer = http(admin, &ask(&ok)).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{ok}: {answer}");
    }
    // HEAD: the GET answer's head, its length, no body.
    let head = http(
        admin,
        "HEAD /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("content-length: 3\r\n"), "{head}");
    assert!(
        head.ends_with("\r\n\r\n"),
        "a body after the head: {head:?}"
    );
    // Keep-alive: two answers on one connection.
    let two = http(
        admin,
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(two.matches("HTTP/1.1 200 OK").count(), 2, "{two}");
    let m = get(admin, "/metrics").await;
    assert_eq!(
        sample(&m, "herd_admin_refused_total{reason=\"host\"}"),
        Some(2.0),
        "{m}"
    );
}

/// Waves of idle admin connections under a low open-file limit: the admin door closes those past its
/// own cap, so the descriptors stay free and every honest IAMAT is answered within a second.
#[tokio::test]
async fn an_admin_flood_under_a_low_fd_limit_leaves_clients_answered() {
    // This test holds over a thousand sockets itself.
    let _ = herd_server::driver::admission::open_files_limit();
    let mut herd = Processes::new(&[("Alford", &[])], "").with_admin();
    herd.start_wrapped(
        "Alford",
        &["sh", "-c", "ulimit -n 1024 && exec \"$@\"", "-"],
    )
    .await;
    let (addr, admin) = (herd.addr("Alford"), herd.admin("Alford"));
    let mut flood = Vec::new();
    for _ in 0..1100 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            tokio::net::TcpStream::connect(admin),
        )
        .await
        {
            flood.push(s);
        }
    }
    let mut unanswered = 0;
    for i in 0..18 {
        let asked = async {
            let mut c = Client::connect(addr).await;
            c.send(format!("IAMAT honest{i} +1+1 1\n")).await;
            c.text_line().await
        };
        match tokio::time::timeout(std::time::Duration::from_secs(1), asked).await {
            Ok(line) if line.starts_with("AT Alford ") => {}
            _ => unanswered += 1,
        }
    }
    assert_eq!(unanswered, 0, "honest IAMATs without an answer within 1 s");
    drop(flood);
    // Once the flood is gone the door answers again.
    // Its connections close meanwhile: a connection may be refused or reset until they have.
    eventually("the admin door answers", || async move {
        let request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        try_exchange(admin, request)
            .await?
            .starts_with(b"HTTP/1.1 200 ")
            .then_some(())
    })
    .await;
    let m = get(admin, "/metrics").await;
    let refused = sample(&m, "herd_admin_refused_total{reason=\"max-connections\"}");
    assert!(refused.is_some_and(|n| n >= 1000.0), "{refused:?}\n{m}");
}

/// `herd-server check` refuses an admin address beyond loopback in a herd without a secret, and takes
/// it with one (or with `insecure = true`); `admin-token` prints the token such a door asks for.
#[test]
fn check_refuses_an_admin_address_beyond_loopback_without_a_secret() {
    let dir = std::env::temp_dir().join(format!("herd-admin-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |top: &str, args: &[&str]| {
        let file = dir.join("herd.toml");
        std::fs::write(
            &file,
            format!("{top}\n[[server]]\nname = \"A\"\nlisten = \"127.0.0.1:1\"\nadmin = \"0.0.0.0:2\"\n"),
        )
        .unwrap();
        let out = std::process::Command::new(herd_tests::herd::server_binary())
            .args(args)
            .arg("--config")
            .arg(&file)
            .env_remove("GOOGLE_PLACES_API_KEY")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = run("", &["check"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("herd.toml:5:") && err.contains("admin address") && err.contains("secret"),
        "{err}"
    );
    let (code, out, err) = run("[herd]\nsecret = \"s3cret\"", &["check"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("admin 0.0.0.0:2"), "{out}");
    assert_eq!(run("[herd]\ninsecure = true", &["check"]).0, Some(0));
    let (code, token, _) = run("[herd]\nsecret = \"s3cret\"", &["admin-token"]);
    assert_eq!(code, Some(0));
    assert_eq!(token.trim(), herd_server::driver::admin::token("s3cret"));
    let _ = std::fs::remove_dir_all(&dir);
}
