//! The Google back-ends against a fake Places server: what is asked, and how every answer and failure
//! reaches the client.

use std::sync::Arc;
use std::time::Duration;

use herd_proto::Timestamp;
use herd_server::config::{Backend, PlacesConfig};
use herd_server::places::HttpClient;
use herd_server::Places;
use herd_tests::client::exchange_text;
use herd_tests::fake_places::{FakePlaces, Script};
use herd_tests::fixture;
use herd_tests::herd::{start_server, InProcess, Options};
use serde_json::Value;

const IAMAT: &str = "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450\n";
const AT: &str =
    "AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450";
const LEGACY_PATH: &str = "/maps/api/place/nearbysearch/json";
const NEW_PATH: &str = "/v1/places:searchNearby";

fn config(backend: Backend, url: String, cache_ttl: Duration) -> PlacesConfig {
    PlacesConfig {
        backend,
        url: Some(url),
        timeout: Duration::from_millis(800),
        key: Some("sekrit-test-key".into()),
        cache_ttl,
        cache_entries: 100,
        max_in_flight: 4,
        budget: Default::default(),
    }
}

async fn server(backend: Backend, script: Script, cache_ttl: Duration) -> (FakePlaces, InProcess) {
    let fake = FakePlaces::start(script).await;
    let path = if backend == Backend::Google {
        NEW_PATH
    } else {
        LEGACY_PATH
    };
    let places = Places::new(
        &config(backend, fake.url(path), cache_ttl),
        HttpClient::new(),
    );
    let opts = Options {
        places,
        clock: Some(Arc::new(|| Timestamp::new(1479413884, 655887836).unwrap())),
        ..Options::default()
    };
    let s = start_server("Alford", opts).await;
    exchange_text(s.addr, IAMAT).await;
    (fake, s)
}

/// Sends a WHATSAT and returns the parsed JSON, checking the AT line and the framing.
async fn whatsat(s: &InProcess, radius: &str, bound: u8) -> Value {
    let answer = exchange_text(
        s.addr,
        format!("WHATSAT kiwi.cs.ucla.edu {radius} {bound}\n"),
    )
    .await;
    let (at, json) = answer.split_once('\n').expect("an AT line");
    assert_eq!(at, AT);
    assert!(json.ends_with("}\n\n"), "framing: {answer:?}");
    assert!(
        !json[..json.len() - 2].contains("\n\n"),
        "an empty line inside: {answer:?}"
    );
    serde_json::from_str(json).expect("JSON")
}

#[tokio::test]
async fn legacy_request_and_pass_through() {
    let (fake, s) = server(
        Backend::GoogleLegacy,
        Script::ok(fixture("legacy-ok")),
        Duration::ZERO,
    )
    .await;
    let json = whatsat(&s, "10.5", 3).await;
    assert_eq!(json["status"], "OK");
    assert_eq!(
        json["results"].as_array().unwrap().len(),
        3,
        "cut to the bound"
    );
    assert_eq!(json["results"][0]["name"], "Ackerman Union");
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", LEGACY_PATH));
    assert_eq!(r.param("location").as_deref(), Some("34.06893,-118.445127"));
    assert_eq!(r.param("radius").as_deref(), Some("10500"));
    assert_eq!(r.param("key").as_deref(), Some("sekrit-test-key"));
    s.stop().await;
}

#[tokio::test]
async fn legacy_error_statuses_pass_through() {
    for (name, status) in [
        ("legacy-zero", "ZERO_RESULTS"),
        ("legacy-denied", "REQUEST_DENIED"),
        ("legacy-over-limit", "OVER_QUERY_LIMIT"),
    ] {
        let (_fake, s) = server(
            Backend::GoogleLegacy,
            Script::ok(fixture(name)),
            Duration::ZERO,
        )
        .await;
        let json = whatsat(&s, "10", 5).await;
        assert_eq!(json["status"], status, "{name}");
        assert_eq!(json["results"], serde_json::json!([]), "{name}");
        s.stop().await;
    }
}

#[tokio::test]
async fn google_new_request_and_mapping() {
    let (fake, s) = server(
        Backend::Google,
        Script::ok(fixture("new-ok")),
        Duration::ZERO,
    )
    .await;
    let json = whatsat(&s, "10.5871263", 4).await;
    assert_eq!(json["status"], "OK");
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    let first = &results[0];
    assert_eq!(first["name"], "Ackerman Union");
    assert_eq!(first["place_id"], "SAMPLE_PLACE_ID_0");
    assert_eq!(first["geometry"]["location"]["lat"], 34.0705);
    assert_eq!(first["geometry"]["location"]["lng"], -118.4446);
    assert_eq!(first["vicinity"], "100 Sample Way, Los Angeles");
    assert_eq!(first["rating"], 4.0);
    assert_eq!(first["user_ratings_total"], 100);
    assert_eq!(first["business_status"], "OPERATIONAL");
    assert_eq!(first["opening_hours"]["open_now"], true);
    assert_eq!(first["price_level"], 1);
    assert_eq!(first["plus_code"]["global_code"], "85633H9X+6R");
    assert!(first["types"]
        .as_array()
        .unwrap()
        .contains(&Value::from("establishment")));

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", NEW_PATH));
    assert_eq!(r.header("x-goog-api-key"), Some("sekrit-test-key"));
    let mask = r.header("x-goog-fieldmask").unwrap();
    for f in [
        "places.displayName",
        "places.id",
        "places.location",
        "places.rating",
    ] {
        assert!(mask.split(',').any(|m| m == f), "{f} not in {mask}");
    }
    // The radius goes out in whole metres (as the cache key has it), never with an exponent.
    assert!(r.body.contains("\"radius\":10587}"), "{}", r.body);
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["maxResultCount"], 4);
    assert_eq!(
        body["locationRestriction"]["circle"]["center"]["latitude"],
        34.06893
    );
    assert_eq!(
        body["locationRestriction"]["circle"]["center"]["longitude"],
        -118.445127
    );
    s.stop().await;
}

#[tokio::test]
async fn google_new_empty_and_bound_zero() {
    let (fake, s) = server(
        Backend::Google,
        Script::ok(fixture("new-empty")),
        Duration::ZERO,
    )
    .await;
    assert_eq!(whatsat(&s, "10", 5).await["status"], "ZERO_RESULTS");
    let json = whatsat(&s, "10", 0).await;
    assert_eq!(json["results"], serde_json::json!([]));
    assert_eq!(fake.requests().len(), 1, "bound 0 needs no call");
    s.stop().await;
}

#[tokio::test]
async fn google_new_errors() {
    for (script, status, message) in [
        (
            Script::status(403, fixture("new-403")),
            "REQUEST_DENIED",
            "Permission denied",
        ),
        (
            Script::status(429, fixture("new-429")),
            "OVER_QUERY_LIMIT",
            "Quota exceeded",
        ),
        (Script::status(500, "{}"), "UNKNOWN_ERROR", "HTTP 500"),
        (
            Script::status(500, "<html>oops</html>"),
            "UNKNOWN_ERROR",
            "not JSON",
        ),
        (Script::ok("not json at all"), "UNKNOWN_ERROR", "not JSON"),
    ] {
        let (_fake, s) = server(Backend::Google, script, Duration::ZERO).await;
        let json = whatsat(&s, "10", 5).await;
        assert_eq!(json["status"], status);
        assert_eq!(json["results"], serde_json::json!([]));
        let msg = json["error_message"].as_str().unwrap();
        assert!(msg.contains(message), "{msg:?} lacks {message:?}");
        assert!(!msg.contains("sekrit"), "the key leaked: {msg}");
        s.stop().await;
    }
}

#[tokio::test]
async fn legacy_http_failures() {
    for (script, message) in [
        (Script::status(500, "{}"), "HTTP 500"),
        (Script::status(502, "Bad Gateway"), "not JSON"),
        (Script::ok("{\"results\": ["), "not JSON"),
    ] {
        let (_fake, s) = server(Backend::GoogleLegacy, script, Duration::ZERO).await;
        let json = whatsat(&s, "10", 5).await;
        assert_eq!(json["status"], "UNKNOWN_ERROR");
        assert!(
            json["error_message"].as_str().unwrap().contains(message),
            "{json}"
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn a_late_answer_times_out_within_the_limit() {
    for backend in [Backend::Google, Backend::GoogleLegacy] {
        let script = Script::ok(fixture("legacy-ok")).after(Duration::from_secs(5));
        let (_fake, s) = server(backend, script, Duration::ZERO).await;
        let started = std::time::Instant::now();
        let json = whatsat(&s, "10", 5).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(json["status"], "UNKNOWN_ERROR");
        assert!(
            json["error_message"]
                .as_str()
                .unwrap()
                .contains("timed out"),
            "{json}"
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn identical_lookups_share_one_upstream_call() {
    let script = Script::ok(fixture("legacy-ok")).after(Duration::from_millis(200));
    let (fake, s) = server(Backend::GoogleLegacy, script, Duration::from_secs(60)).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let addr = s.addr;
        tasks.spawn(async move { exchange_text(addr, "WHATSAT kiwi.cs.ucla.edu 10 5\n").await });
    }
    while let Some(answer) = tasks.join_next().await {
        assert!(answer.unwrap().contains("Ackerman Union"));
    }
    assert_eq!(
        fake.requests().len(),
        1,
        "concurrent identical look-ups share one call"
    );
    whatsat(&s, "10", 5).await;
    assert_eq!(fake.requests().len(), 1, "served from the cache");
    whatsat(&s, "11", 5).await;
    assert_eq!(
        fake.requests().len(),
        2,
        "another radius is another look-up"
    );
    s.stop().await;
}

#[tokio::test]
async fn failures_are_not_cached() {
    let (fake, s) = server(
        Backend::GoogleLegacy,
        Script::status(500, "{}"),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(whatsat(&s, "10", 5).await["status"], "UNKNOWN_ERROR");
    fake.set(Script::ok(fixture("legacy-ok")));
    assert_eq!(whatsat(&s, "10", 5).await["status"], "OK");
    assert_eq!(fake.requests().len(), 2);
    s.stop().await;
}

/// One connection asking WHATSATs with a new radius each time (every one a cache miss) against a real
/// server with a Google back-end: the upstream calls stay within the default budget, the rest are
/// answered `OVER_QUERY_LIMIT` with no results, and `/metrics` counts them.
#[tokio::test]
async fn the_upstream_budget_holds_against_one_abusive_connection() {
    use herd_tests::herd::Processes;
    let fake = FakePlaces::start(Script::ok(fixture("new-ok"))).await;
    let extra = format!(
        "[places]\nbackend = \"google\"\nurl = \"{}\"\nkey = \"k\"\n",
        fake.url(NEW_PATH)
    );
    let mut herd = Processes::new(&[("Alford", &[])], &extra).with_admin();
    herd.start("Alford").await;
    let (addr, admin) = (herd.addr("Alford"), herd.admin("Alford"));
    let began = std::time::Instant::now();
    let mut lines = String::from(IAMAT);
    for i in 0..200 {
        lines.push_str(&format!(
            "WHATSAT kiwi.cs.ucla.edu {}.{:03} 3\n",
            1 + i / 1000,
            i % 1000
        ));
    }
    let answers = exchange_text(addr, lines).await;
    let took = began.elapsed().as_secs_f64();
    let calls = fake.requests().len();
    // The defaults: a burst of 10, then 2 a second.
    let allowed = 10.0 + 2.0 * took;
    assert!(
        calls as f64 <= allowed,
        "{calls} upstream calls in {took:.2} s (budget {allowed:.1})"
    );
    assert!(calls >= 10, "the burst was not served: {calls}");
    let over = answers.matches("\"status\": \"OVER_QUERY_LIMIT\"").count();
    assert_eq!(over + calls, 200, "{over} over budget, {calls} upstream");
    assert!(answers.contains("\"results\": []"));
    // Each answer is still an AT line and the JSON.
    assert_eq!(answers.matches("\nAT Alford ").count() + 1, 201);
    let m = herd_tests::admin::get(admin, "/metrics").await;
    let counted = m
        .lines()
        .find(|l| l.starts_with("herd_places_over_budget_total{budget=\"connection\"} "))
        .and_then(|l| l.rsplit(' ').next()?.parse::<usize>().ok());
    assert_eq!(counted, Some(over), "{m}");
}
