//! The `herd` binary against real servers on loopback: every command, its output and exit codes.

use std::net::SocketAddr;
use std::sync::mpsc;

use assert_cmd::Command;
use predicates::prelude::*;

/// Starts a herd server (offline Places) and a line-echo server on a background runtime.
fn servers() -> (SocketAddr, SocketAddr) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let herd =
                herd_tests::herd::start_server("Alford", herd_tests::herd::Options::default())
                    .await;
            let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send((herd.addr, echo.local_addr().unwrap())).unwrap();
            loop {
                let (mut s, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
    });
    rx.recv().unwrap()
}

fn herd(addr: SocketAddr) -> Command {
    let mut c = Command::cargo_bin("herd").unwrap();
    c.env_remove("NO_COLOR")
        .env_remove("HERD_PRETEND_TTY")
        .arg("--to")
        .arg(addr.to_string());
    c
}

#[test]
fn iamat_prints_the_at_line() {
    let (addr, _) = servers();
    herd(addr)
        .args([
            "iamat",
            "kiwi",
            "34.068930",
            "-118.445127",
            "--time",
            "1479413884.392014450",
        ])
        .assert()
        .success()
        .stdout(
            predicate::str::is_match(
                r"^AT Alford \+\d+\.\d{9} kiwi \+34\.068930-118\.445127 1479413884\.392014450\n$",
            )
            .unwrap(),
        );
    herd(addr)
        .args(["iamat", "kiwi", "+34.07-118.44", "--time", "1479413885"])
        .assert()
        .success()
        .stdout(predicate::str::contains(" kiwi +34.07-118.44 1479413885\n"));
    // Without --time: now, with nanoseconds.
    herd(addr)
        .args(["iamat", "other", "1.5", "2.5"])
        .assert()
        .success()
        .stdout(predicate::str::is_match(r" other \+1\.500000\+2\.500000 \d+\.\d{9}\n$").unwrap());
}

#[test]
fn usage_and_network_errors() {
    let (addr, _) = servers();
    herd(addr)
        .args(["iamat", "kiwi", "34.06-118.44"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not an ISO 6709 location"));
    herd(addr)
        .args(["iamat", "kiwi", "95", "0"])
        .assert()
        .code(2);
    herd(addr)
        .args(["iamat", "kiwi", "+1+1", "--time", "1e9"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--time"));
    Command::cargo_bin("herd")
        .unwrap()
        .args(["iamat", "kiwi", "+1+1", "--to", "Nowhere"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("neither a server of the herd"));
    Command::cargo_bin("herd")
        .unwrap()
        .args(["whatsat"])
        .assert()
        .code(2);
    // Nothing listens on a port just freed.
    let port = herd_tests::free_port();
    Command::cargo_bin("herd")
        .unwrap()
        .args([
            "iamat",
            "kiwi",
            "+1+1",
            "--to",
            &format!("127.0.0.1:{port}"),
        ])
        .assert()
        .code(3)
        .stderr(
            predicate::str::contains("connecting to 127.0.0.1")
                .and(predicate::str::contains("Caused by")),
        );
}

#[test]
fn whatsat_readable_json_raw_and_colour() {
    let (addr, _) = servers();
    herd(addr)
        .args(["iamat", "kiwi", "+34.068930-118.445127"])
        .assert()
        .success();
    let out = herd(addr)
        .args(["whatsat", "kiwi", "10", "3"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("AT Alford "), "{text}");
    assert!(
        text.contains(" 1. ") && text.contains(" 3. ") && !text.contains(" 4. "),
        "{text}"
    );
    assert!(text.contains(" km"), "{text}");
    assert!(text.contains("GeoNames"), "{text}");
    assert!(!text.contains('\x1b'), "no colour off a terminal");

    let out = herd(addr)
        .args(["whatsat", "kiwi", "10", "3", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    let (at, json) = text.split_once('\n').unwrap();
    assert!(at.starts_with("AT Alford "));
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["results"].as_array().unwrap().len(), 3);

    // Colour: on a (pretend) terminal; never with NO_COLOR or --color never; always with --color always.
    let coloured = |c: &mut Command| {
        String::from_utf8(c.assert().success().get_output().stdout.clone())
            .unwrap()
            .contains('\x1b')
    };
    assert!(coloured(
        herd(addr)
            .env("HERD_PRETEND_TTY", "1")
            .args(["whatsat", "kiwi", "10", "3", "--json"])
    ));
    assert!(!coloured(
        herd(addr)
            .env("HERD_PRETEND_TTY", "1")
            .env("NO_COLOR", "1")
            .args(["whatsat", "kiwi", "10", "3", "--json"])
    ));
    assert!(!coloured(
        herd(addr)
            .env("HERD_PRETEND_TTY", "1")
            .args(["whatsat", "kiwi", "10", "3", "--color", "never"])
    ));
    assert!(coloured(
        herd(addr).args(["whatsat", "kiwi", "10", "3", "--color", "always"])
    ));

    let out = herd(addr)
        .args(["whatsat", "kiwi", "10", "1", "--raw"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(
        out.starts_with(b"AT Alford ") && out.ends_with(b"}\n\n"),
        "{}",
        String::from_utf8_lossy(&out)
    );

    herd(addr)
        .args(["whatsat", "nobody", "10", "3"])
        .assert()
        .code(1)
        .stdout("? WHATSAT nobody 10 3\n");
}

#[test]
fn send_pipelines_raw_lines() {
    let (addr, _) = servers();
    herd(addr)
        .args(["send", "IAMAT a +1+1 1", "IAMAT b +2+2 2"])
        .assert()
        .success()
        .stdout(
            predicate::str::is_match(r"^AT Alford \S+ a \+1\+1 1\nAT Alford \S+ b \+2\+2 2\n$")
                .unwrap(),
        );
    herd(addr)
        .args(["send", "IAMAT a +1+1 1", "HELLO"])
        .assert()
        .code(1)
        .stdout(predicate::str::ends_with("? HELLO\n"));
}

#[test]
fn tail_sends_stdin_and_pretty_prints() {
    let (addr, _) = servers();
    let out = herd(addr)
        .arg("tail")
        .write_stdin("IAMAT kiwi +34.068930-118.445127 1\nWHATSAT kiwi 10 1\nbogus\n")
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("AT Alford "));
    assert!(lines.next().unwrap().starts_with("AT Alford "));
    assert_eq!(lines.next(), Some("{"));
    assert!(text.contains("  \"results\": ["), "{text}");
    assert!(text.ends_with("? bogus\n"), "{text}");
}

#[test]
fn bench_counts_against_a_server_and_an_echo_server() {
    let (addr, echo) = servers();
    let out = herd(addr)
        .args([
            "bench",
            "-n",
            "3000",
            "-c",
            "4",
            "-P",
            "8",
            "--clients",
            "500",
            "--json",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["requests"], 3000, "{v}");
    assert_eq!(v["errors"], serde_json::json!({}), "{v}");
    assert!(v["latency_us"]["p99"].as_f64().unwrap() > 0.0);

    let out = herd(addr)
        .args([
            "bench",
            "-n",
            "400",
            "-c",
            "2",
            "-P",
            "4",
            "--mix",
            "1:1",
            "--clients",
            "50",
            "--json",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["requests"], 400, "{v}");
    assert_eq!(v["errors"], serde_json::json!({}), "{v}");

    let out = herd(echo)
        .args([
            "bench",
            "-n",
            "5000",
            "-c",
            "3",
            "-P",
            "16",
            "--raw-line",
            "PING",
            "--json",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["requests"], 5000, "{v}");

    // Duration mode stops by itself, and the text report names the figures.
    herd(echo)
        .args(["bench", "-d", "0.3", "-c", "2", "--raw-line", "PING"])
        .assert()
        .success()
        .stdout(predicate::str::contains("requests:").and(predicate::str::contains("p99.9")));
}
