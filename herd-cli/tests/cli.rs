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
    assert!(
        text.contains("GeoNames (https://www.geonames.org/)") && !text.contains("<a "),
        "attribution as text: {text}"
    );
    assert!(!text.contains('\x1b'), "no colour off a terminal");

    let out = herd(addr)
        .args(["whatsat", "kiwi", "10", "3", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    // `--json` is one JSON document: the AT record as fields, the Places answer under "places".
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["server"], "Alford", "{v}");
    assert_eq!(v["client"], "kiwi");
    assert_eq!(v["location"], "+34.068930-118.445127");
    assert_eq!(v["latitude"], 34.06893);
    assert!(v["time_diff"].as_str().unwrap().starts_with('+'));
    assert_eq!(v["places"]["status"], "OK");
    assert_eq!(v["places"]["results"].as_array().unwrap().len(), 3);

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
        .stdout("? WHATSAT nobody 10 3\n")
        .stderr(predicate::str::contains("holds no location for \"nobody\""));
    let out = herd(addr)
        .args(["whatsat", "nobody", "10", "3", "--json"])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["invalid"], "? WHATSAT nobody 10 3");
    assert!(v["reason"].as_str().unwrap().contains("no location"));
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

    // Clients are spread over the map (the same place for the same seed), or all at --at.
    let place = |client: &str| {
        let out = herd(addr)
            .args(["send", &format!("WHATSAT {client} 1 0")])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let text = String::from_utf8(out).unwrap();
        text.split(' ').nth(4).unwrap_or_default().to_owned()
    };
    let bench = |extra: &[&str]| {
        herd(addr)
            .args(["bench", "-n", "4", "-c", "1", "--clients", "4", "--json"])
            .args(extra)
            .assert()
            .success();
    };
    bench(&[]);
    let (one, two) = (place("bench-1"), place("bench-2"));
    assert!(one.starts_with(['+', '-']) && one != two, "{one} {two}");
    bench(&["--spread", "7"]);
    assert_ne!(place("bench-1"), one, "another seed, another map");
    bench(&["--spread", "1"]);
    assert_eq!(place("bench-1"), one, "the same seed, the same map");
    bench(&["--at", "48.8566,2.3522"]);
    assert_eq!(place("bench-1"), "+48.856600+2.352200");
    assert_eq!(place("bench-2"), "+48.856600+2.352200");

    // Duration mode stops by itself, and the text report names the figures.
    herd(echo)
        .args(["bench", "-d", "0.3", "-c", "2", "--raw-line", "PING"])
        .assert()
        .success()
        .stdout(predicate::str::contains("requests:").and(predicate::str::contains("p99.9")));
}

/// A server that answers every line the way Redis answers an unknown command.
fn fake_redis() -> SocketAddr {
    use std::io::{BufRead, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(20) {
            let Ok(s) = s else { continue };
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                for line in std::io::BufReader::new(s).lines().take(100_000) {
                    if line.is_err() || w.write_all(b"-ERR unknown command\r\n").is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A server that accepts connections and never answers.
fn silent() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().take(20) {
            held.push(s);
        }
    });
    addr
}

fn herd_bare() -> Command {
    let mut c = Command::cargo_bin("herd").unwrap();
    c.env_remove("HERD_CONFIG").env_remove("HERD_DEBUG");
    c
}

#[test]
fn exit_3_when_the_host_does_not_resolve() {
    herd_bare()
        .args(["iamat", "kiwi", "+1+1", "--timeout", "5s"])
        .args(["--to", "no-such-host.invalid:12000"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(
            "resolving no-such-host.invalid:12000",
        ));
}

#[test]
fn exit_3_when_the_answer_is_not_the_herd_protocol() {
    let redis = fake_redis();
    for args in [
        &["iamat", "kiwi", "+1+1"][..],
        &["whatsat", "kiwi", "10", "2"][..],
    ] {
        herd_bare()
            .args(args)
            .args(["--to", &redis.to_string()])
            .assert()
            .code(3)
            .stderr(predicate::str::contains(
                "answered \"-ERR unknown command\\r\", which is not the herd protocol",
            ));
    }
}

#[test]
fn exit_3_when_no_answer_comes_within_the_timeout() {
    let quiet = silent();
    for args in [
        &["iamat", "kiwi", "+1+1"][..],
        &["whatsat", "kiwi", "10", "2"][..],
        &["send", "IAMAT kiwi +1+1 1"][..],
    ] {
        herd_bare()
            .args(args)
            .args(["--to", &quiet.to_string(), "--timeout", "300ms"])
            .timeout(std::time::Duration::from_secs(20))
            .assert()
            .code(3)
            .stderr(predicate::str::contains(
                "no answer within 0.3 s (--timeout)",
            ));
    }
}

#[test]
fn exit_2_for_usage_with_the_reason() {
    let dead = format!("127.0.0.1:{}", herd_tests::free_port());
    let cases: [(&[&str], &str); 6] = [
        (&["whatsat", "kiwi", "abc", "3"], "RADIUS_KM \"abc\""),
        (&["whatsat", "kiwi", "60", "3"], "at most 50"),
        (&["whatsat", "kiwi", "10", "x"], "BOUND \"x\""),
        (&["whatsat", "a b", "10", "3"], "white space"),
        (
            &["iamat", "kiwi", "+1+1", "--to", "127.0.0.1"],
            "has no port",
        ),
        (
            &["iamat", "kiwi", "+1+1", "--timeout", "0"],
            "not a duration",
        ),
    ];
    for (args, why) in cases {
        herd_bare()
            .args(["--to", &dead])
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(why));
    }
}

#[test]
fn no_backtrace_unless_herd_debug() {
    let dead = format!("127.0.0.1:{}", herd_tests::free_port());
    let out = herd_bare()
        .env("RUST_BACKTRACE", "1")
        .args(["iamat", "kiwi", "+1+1", "--to", &dead])
        .assert()
        .code(3)
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8(out).unwrap();
    assert!(err.starts_with("herd: error: connecting to"), "{err}");
    assert!(
        err.contains("Caused by:") && !err.contains("acktrace"),
        "{err}"
    );
    assert!(err.lines().count() <= 4, "{err}");
    herd_bare()
        .env("HERD_DEBUG", "1")
        .args(["iamat", "kiwi", "+1+1", "--to", &dead])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("Backtrace:"));
}

#[test]
fn bench_exit_codes() {
    let (addr, _) = servers();
    // Every request answered, with `? PING`: the server refused them (1), and the report says so.
    herd(addr)
        .args(["bench", "-n", "50", "-c", "2", "--raw-line", "PING"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("invalid: 50"));
    // Nothing listening: one clear error, no report of zeros.
    let dead = format!("127.0.0.1:{}", herd_tests::free_port());
    herd_bare()
        .args(["bench", "-n", "50", "-c", "2", "--to", &dead])
        .assert()
        .code(3)
        .stdout("")
        .stderr(
            predicate::str::contains("no request to 127.0.0.1")
                .and(predicate::str::contains("connecting to")),
        );
}

/// A fresh empty folder under the system's temporary folder.
fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("herd-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The lookup `herd-server` shares: `--config`, `$HERD_CONFIG`, `./herd.toml`, the user's config
/// folder, the built-in herd; the one used is said on stderr whenever it names the server.
#[test]
fn config_from_herd_config_then_herd_toml_then_the_user_folder() {
    let (addr, _) = servers();
    let config = |name: &str| format!("[[server]]\nname = \"{name}\"\nlisten = \"{addr}\"\n");
    let dir = temp_dir("config");
    let user = dir.join("user");
    std::fs::create_dir_all(user.join("herd")).unwrap();
    let cwd = dir.join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let run = |to: &str, env_config: Option<&std::path::Path>| {
        let mut c = herd_bare();
        c.current_dir(&cwd)
            .env("XDG_CONFIG_HOME", &user)
            .args(["iamat", "kiwi", "+1+1", "--to", to]);
        if let Some(p) = env_config {
            c.env("HERD_CONFIG", p);
        }
        c.assert()
    };
    let user_file = user.join("herd/herd.toml");
    // Nothing found: the built-in herd, said with where a file would be looked for.
    // (Whatever answers on the default herd's port on this machine, the line comes first.)
    run("Alford", None).stderr(predicate::str::starts_with(format!(
        "herd: using the built-in default herd (no --config, $HERD_CONFIG, ./herd.toml, {})\n",
        user_file.display()
    )));
    // The user's config folder.
    std::fs::write(&user_file, config("Usr")).unwrap();
    run("Usr", None).success().stderr(format!(
        "herd: using {} (found in the user's config folder)\n",
        user_file.display()
    ));
    // ./herd.toml comes first.
    std::fs::write(cwd.join("herd.toml"), config("Here")).unwrap();
    run("Here", None)
        .success()
        .stderr("herd: using ./herd.toml (found in the current folder)\n");
    run("Usr", None).code(2);
    // HERD_CONFIG comes before both.
    let env_file = dir.join("env.toml");
    std::fs::write(&env_file, config("Env")).unwrap();
    run("Env", Some(&env_file)).success().stderr(format!(
        "herd: using {} (from $HERD_CONFIG)\n",
        env_file.display()
    ));
    run("Here", Some(&env_file))
        .code(2)
        .stderr(predicate::str::contains(
            "neither a server of the herd (Env)",
        ));
    // --config before everything.
    let flag_file = dir.join("flag.toml");
    std::fs::write(&flag_file, config("Flag")).unwrap();
    herd_bare()
        .current_dir(&cwd)
        .env("HERD_CONFIG", &env_file)
        .arg("--config")
        .arg(&flag_file)
        .args(["iamat", "kiwi", "+1+1", "--to", "Flag"])
        .assert()
        .success()
        .stderr(format!(
            "herd: using {} (from --config)\n",
            flag_file.display()
        ));
    // --to HOST:PORT needs no herd: nothing is said.
    run(&addr.to_string(), None).success().stderr("");
    // A bad file is a usage error naming file, line and where it came from.
    std::fs::write(&env_file, "[[server]]\nname = 1\n").unwrap();
    run("Env", Some(&env_file)).code(2).stderr(
        predicate::str::contains("env.toml:2:")
            .and(predicate::str::contains("(from $HERD_CONFIG)")),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn send_dash_reads_stdin_and_tail_prompts_only_on_a_terminal() {
    let (addr, _) = servers();
    herd(addr)
        .args(["send", "-"])
        .write_stdin("IAMAT a +1+1 1\nIAMAT b +2+2 2")
        .assert()
        .success()
        .stdout(
            predicate::str::is_match(r"^AT Alford \S+ a \+1\+1 1\nAT Alford \S+ b \+2\+2 2\n$")
                .unwrap(),
        );
    herd(addr)
        .arg("tail")
        .write_stdin("IAMAT a +1+1 1\n")
        .assert()
        .success()
        .stderr("");
}

#[test]
fn completions_and_man_pages() {
    for (shell, marker) in [
        ("bash", "_herd()"),
        ("zsh", "#compdef herd"),
        ("fish", "complete -c herd"),
    ] {
        herd_bare()
            .args(["completions", shell])
            .assert()
            .success()
            .stdout(predicate::str::contains(marker).and(predicate::str::contains("whatsat")));
    }
    // `--to` completes the server names of the herd, not file names.
    let dir = temp_dir("completions");
    let config = dir.join("herd.toml");
    std::fs::write(
        &config,
        "[[server]]\nname = \"One\"\nlisten = \"127.0.0.1:1\"\n[[server]]\nname = \"Two\"\nlisten = \"127.0.0.1:2\"\n",
    )
    .unwrap();
    for (shell, marker) in [
        ("bash", "compgen -W \"One Two\""),
        ("zsh", ":SERVER|HOST:PORT:(One Two)"),
        (
            "fish",
            "-l to -d 'Server name of the herd, or HOST:PORT' -r -f -a \"One",
        ),
    ] {
        herd_bare()
            .arg("--config")
            .arg(&config)
            .args(["completions", shell])
            .assert()
            .success()
            .stdout(predicate::str::contains(marker))
            .stderr(format!(
                "herd: using {} (from --config)\n",
                config.display()
            ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    herd_bare()
        .arg("man")
        .assert()
        .success()
        .stdout(predicate::str::contains(".TH herd 1").and(predicate::str::contains("whatsat")));
    let dir = temp_dir("man");
    herd_bare()
        .args(["man", "--dir"])
        .arg(&dir)
        .assert()
        .success();
    assert!(dir.join("herd.1").is_file() && dir.join("herd-whatsat.1").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Alford and Ball (linked, with admin addresses) in a background runtime; returns a config naming
/// them, a third server, Gone, that does not run, and a fourth, Shut, whose admin address refuses.
fn herd_with_admin(dir: &std::path::Path) -> std::path::PathBuf {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let herd = herd_tests::herd::start_herd(
                &[("Alford", &["Ball"]), ("Ball", &["Alford"])],
                herd_tests::herd::Options {
                    admin: true,
                    ..Default::default()
                },
            )
            .await;
            let info: Vec<(String, SocketAddr, SocketAddr)> = herd
                .iter()
                .map(|(n, s)| (n.clone(), s.addr, s.admin.unwrap()))
                .collect();
            tx.send(info).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let servers = rx.recv().unwrap();
    let mut text = String::new();
    for (name, addr, admin) in &servers {
        text.push_str(&format!(
            "[[server]]\nname = \"{name}\"\nlisten = \"{addr}\"\nadmin = \"{admin}\"\n"
        ));
    }
    let gone = herd_tests::free_port();
    text.push_str(&format!(
        "[[server]]\nname = \"Gone\"\nlisten = \"127.0.0.1:{gone}\"\n"
    ));
    let (shut, shut_admin) = (herd_tests::free_port(), herd_tests::free_port());
    text.push_str(&format!(
        "[[server]]\nname = \"Shut\"\nlisten = \"127.0.0.1:{shut}\"\nadmin = \"127.0.0.1:{shut_admin}\"\n"
    ));
    let path = dir.join("herd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn status_is_a_table_of_the_herd_and_ping_checks_health() {
    let dir = temp_dir("status");
    let config = herd_with_admin(&dir);
    let status = |args: &[&str]| {
        let mut c = herd_bare();
        c.arg("--config").arg(&config).args(args);
        c
    };
    // Wait for the link, then read the table: Gone is down, so the exit code is 3.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let table = loop {
        let out = status(&["status"])
            .assert()
            .code(3)
            .get_output()
            .stdout
            .clone();
        let text = String::from_utf8(out).unwrap();
        if text.contains("1/1") && text.matches("1/1").count() == 2 {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "links never up:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(
        predicate::str::is_match(
            r"^Server  +Address  +Status  +Connections  +Links  +Records  +Uptime$"
        )
        .unwrap()
        .eval(lines[0]),
        "{table}"
    );
    assert!(
        predicate::str::is_match(r"^Alford  +127\.0\.0\.1:\d+ +up +0 +1/1 +0 +\d+s$")
            .unwrap()
            .eval(lines[1]),
        "{table}"
    );
    // Gone has no admin address and nothing listens on its port: down, and why.
    assert!(
        lines[3].starts_with("Gone ")
            && lines[3].contains(" down (no admin address, client port closed) "),
        "{table}"
    );
    assert!(
        lines[4].starts_with("Shut ") && lines[4].contains(" down (refused) "),
        "{table}"
    );
    // One server: all up, exit 0; as JSON.
    status(&["status", "--to", "Ball"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Ball").and(predicate::str::contains("Alford").not()));
    let out = status(&["status", "--json"])
        .assert()
        .code(3)
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v[0]["server"], "Alford");
    assert_eq!(v[0]["links"][0]["up"], true);
    assert_eq!(v[2]["up"], false);
    assert_eq!(v[2]["reason"], "no admin address, client port closed");
    assert_eq!(v[3]["reason"], "refused");
    // ping: the admin /health, or a clear network error.
    status(&["ping", "--to", "Ball"]).assert().success().stdout(
        predicate::str::is_match(
            r"^Ball \(127\.0\.0\.1:\d+, admin 127\.0\.0\.1:\d+\): ok in \d+\.\d+ ms\n$",
        )
        .unwrap(),
    );
    status(&["ping", "--to", "Gone"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("connecting to 127.0.0.1"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `herd ARGS` with its stderr on a pseudo-terminal (stdout a pipe, as `herd bench > out`
/// would have it); returns what the terminal showed and stdout. Bounded: the child is killed after
/// 30 s.
#[cfg(unix)]
fn on_a_terminal(args: &[&str]) -> (String, String) {
    use std::io::Read as _;
    use std::os::fd::{FromRawFd as _, OwnedFd};
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two new descriptors into the two integers; the other arguments may be
    // null.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are new and owned by nothing else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("herd"))
        .args(args)
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .env_remove("HERD_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::from(slave))
        .spawn()
        .unwrap();
    // The terminal is read until every writer is gone (EIO on Linux, end of file elsewhere).
    let reader = std::thread::spawn(move || {
        let mut shown = Vec::new();
        let mut file = std::fs::File::from(master);
        let mut buf = [0u8; 4096];
        while let Ok(n) = file.read(&mut buf) {
            if n == 0 {
                break;
            }
            shown.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&shown).into_owned()
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("herd {args:?} did not end within 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "herd {args:?}: {:?}", out.status);
    (
        reader.join().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

/// On a terminal, `herd bench -d 2s` shows its progress against the duration, with the requests so
/// far and a rounded rate; the report on stdout is unchanged.
#[cfg(unix)]
#[test]
fn bench_shows_progress_against_the_duration_on_a_terminal() {
    let (_, echo) = servers();
    let to = echo.to_string();
    let (shown, report) = on_a_terminal(&[
        "--to",
        &to,
        "bench",
        "-d",
        "2s",
        "-c",
        "2",
        "--raw-line",
        "PING",
    ]);
    // Lines as redrawn, without the erase-line sequence before each.
    let shown = shown.replace("\u{1b}[2K", "");
    let redraws: Vec<&str> = shown
        .split(['\r', '\n'])
        .filter(|l| l.contains(" of 2s ["))
        .collect();
    assert!(redraws.len() >= 5, "few redraws in 2 s:\n{shown:?}");
    let line =
        predicate::str::is_match(r"\d+s of 2s \[[=> ]+\] [\d,]+ requests, [\d,]+/s").unwrap();
    assert!(redraws.iter().all(|l| line.eval(l)), "{redraws:#?}");
    // The bar fills as time passes, whatever the request rate.
    let filled = |l: &str| l.split('[').nth(1).map_or(0, |b| b.matches('=').count());
    let last = redraws.iter().rev().find(|l| filled(l) > 0).copied();
    assert!(
        last.is_some_and(|l| filled(l) > filled(redraws[0])),
        "{redraws:#?}"
    );
    assert!(
        !shown.contains(".0000/s") && !predicate::str::is_match(r"\.\d+/s").unwrap().eval(&shown)
    );
    assert!(
        report.contains("requests:") && report.contains("p99.9"),
        "{report}"
    );
}

/// `herd watch client ID` (pretty) and `herd watch near LAT LON KM --json` at one server print the
/// records stored for an IAMAT at its neighbour, and stop after `--count`; a bad watch is a usage
/// error, and a server without an http address is named.
#[tokio::test]
async fn watch_prints_records_stored_anywhere_in_the_herd() {
    use herd_tests::herd::Processes;
    let mut herd = Processes::new(
        &[("Alford", &["Ball"]), ("Ball", &[])],
        "[places]\nbackend = \"offline\"\n",
    )
    .with_http();
    herd.start_all().await;
    let config = herd.config.display().to_string();
    let watch = |args: &[&str]| {
        tokio::process::Command::new(assert_cmd::cargo::cargo_bin("herd"))
            .args(["--config", &config, "--to", "Alford", "watch"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut pretty = watch(&["client", "kiwi", "--count", "1"]);
    let mut json = watch(&["near", "34.07", "-118.44", "5", "--count", "1", "--json"]);
    // Each says on stderr when the server holds its watch; only then is the IAMAT sent, once, at Ball.
    let deadline = std::time::Duration::from_secs(60);
    let watching = |child: &mut tokio::process::Child| {
        let stderr = child.stderr.take().expect("stderr piped");
        async move {
            use tokio::io::AsyncBufReadExt as _;
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            let mut seen = String::new();
            let found = tokio::time::timeout(deadline, async {
                while let Some(l) = lines.next_line().await.unwrap() {
                    seen.push_str(&l);
                    seen.push('\n');
                    if l.contains("WATCHING") {
                        return true;
                    }
                }
                false
            })
            .await;
            assert_eq!(found, Ok(true), "herd watch never said WATCHING: {seen}");
            seen
        }
    };
    let (pretty_err, _) = tokio::join!(watching(&mut pretty), watching(&mut json));
    herd_tests::client::exchange(
        herd.addr("Ball"),
        "IAMAT kiwi +34.068930-118.445127 1479413884\n",
    )
    .await;
    let (pretty, json) = tokio::time::timeout(deadline, async {
        let (p, j) = tokio::join!(pretty.wait_with_output(), json.wait_with_output());
        (p.unwrap(), j.unwrap())
    })
    .await
    .expect("herd watch printed the record flooded from Ball in time");
    assert!(pretty.status.success(), "{pretty:?}");
    let line = String::from_utf8(pretty.stdout).unwrap();
    assert!(
        line.starts_with("kiwi  +34.068930-118.445127  at 14794138"),
        "{line}"
    );
    assert!(line.contains("(from Ball, +"), "{line}");
    assert!(pretty_err.contains("WATCHING CLIENT kiwi"), "{pretty_err}");
    assert!(json.status.success(), "{json:?}");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        (v["client"].as_str(), v["server"].as_str()),
        (Some("kiwi"), Some("Ball"))
    );

    Command::cargo_bin("herd")
        .unwrap()
        .args(["--config", &config, "watch", "near", "91", "0", "5"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("latitude"));
    let plain = Processes::new(&[("Solo", &[])], "");
    Command::cargo_bin("herd")
        .unwrap()
        .args([
            "--config",
            &plain.config.display().to_string(),
            "watch",
            "client",
            "x",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("Solo has no http address"));
}
