//! The admin endpoint of real servers on loopback: `/metrics` counts what happened, `/health` and
//! `/status` say how the server is, anything else gets a clear HTTP error.

use std::net::SocketAddr;

use herd_tests::client::{exchange, exchange_text};
use herd_tests::eventually;
use herd_tests::herd::{start_herd, Options};

/// The raw HTTP answer to `request` sent to `admin`.
async fn http(admin: SocketAddr, request: &str) -> String {
    String::from_utf8_lossy(&exchange(admin, request).await).into_owned()
}

async fn get(admin: SocketAddr, path: &str) -> String {
    http(
        admin,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
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
        m.contains("Content-Type: application/openmetrics-text"),
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
    // Ball heard both records over the link.
    eventually("the flood counted", || async move {
        let m = get(admin_b, "/metrics").await;
        (sample(&m, "herd_flood_in_total") == Some(2.0)).then_some(())
    })
    .await;

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
