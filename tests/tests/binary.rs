//! The `herd-server` binary: config file, log files, signals, and refusals with clear messages.

use std::net::SocketAddr;
use std::process::Command;

use herd_tests::client::exchange_text;
use herd_tests::eventually;
use herd_tests::fake_places::{FakePlaces, Script};
use herd_tests::fixture;
use herd_tests::herd::{server_binary, Processes};

#[tokio::test]
async fn serve_with_config_and_log_dir() {
    let fake = FakePlaces::start(Script::ok(fixture("legacy-ok"))).await;
    let places = format!(
        "[places]\nbackend = \"google-legacy\"\nurl = \"{}\"\nkey = \"sekrit-file-key\"\ntimeout_ms = 2000\n",
        fake.url("/maps/api/place/nearbysearch/json")
    );
    let mut herd = Processes::new(&[("Alford", &[])], &places);
    herd.start("Alford").await;
    let addr = herd.addr("Alford");
    let at = exchange_text(
        addr,
        "IAMAT kiwi +34.068930-118.445127 1479413884.392014450\n",
    )
    .await;
    assert!(at.starts_with("AT Alford +"), "{at}");
    let answer = exchange_text(addr, "WHATSAT kiwi 10 2\nnonsense\n").await;
    assert!(answer.contains("Ackerman Union"), "{answer}");
    assert!(answer.ends_with("}\n\n? nonsense\n"), "{answer}");
    assert_eq!(fake.requests().len(), 1);

    assert_eq!(herd.terminate("Alford").await, Some(0), "SIGTERM exits 0");
    let log = herd.log("Alford");
    for needle in [
        "server started",
        "connection opened",
        "connection closed",
        " IAMAT kiwi +34.068930-118.445127 1479413884.392014450\tAT Alford +",
        " WHATSAT kiwi 10 2\tAT Alford +",
        " nonsense\t? nonsense\n",
        " out-json backend=google-legacy status=OK results=2 bytes=",
        " ms=",
        "server stopped",
    ] {
        assert!(log.contains(needle), "log lacks {needle:?}:\n{log}");
    }
    assert!(!log.contains("sekrit"), "the key is in the log");
}

fn run_with_config(text: &str) -> (Option<i32>, String) {
    run_with_config_and(text, &[])
}

/// [`run_with_config`], with more arguments for `up`.
fn run_with_config_and(text: &str, args: &[&str]) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!(
        "herd-bad-config-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let mut child = Command::new(server_binary())
        .args(["up", "--config"])
        .arg(&path)
        .arg("--log-dir")
        .arg(dir.join("logs"))
        .args(args)
        .env_remove("GOOGLE_PLACES_API_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A server that starts when it should have been refused is stopped (and reported as such:
    // no exit code) rather than left running.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configs_are_refused_with_file_line_and_reason() {
    let ok = "[[server]]\nname = \"A\"\nlisten = \"127.0.0.1:1\"\n";
    for (text, want) in [
        (
            format!("{ok}neighbors = [\"Z\"]\n"),
            "bad.toml:4: A lists unknown neighbour \"Z\"",
        ),
        (
            format!("{ok}neighbors = [\"A\"]\n"),
            "bad.toml:4: A lists itself as a neighbour",
        ),
        (
            format!("{ok}[[server]]\nname = \"A\"\nlisten = \"127.0.0.1:2\"\n"),
            "bad.toml:5: server name \"A\" is used twice",
        ),
        (
            format!("{ok}[[server]]\nname = \"B\"\nlisten = \"127.0.0.1:1\"\n"),
            "bad.toml:6: listen address \"127.0.0.1:1\" is used twice",
        ),
        ("[[server]\n".to_string(), "bad.toml:1:"),
    ] {
        let (code, err) = run_with_config(&text);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains(want), "stderr {err:?} lacks {want:?}");
    }
}

#[tokio::test]
async fn a_taken_port_is_refused() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (code, err) = run_with_config(&format!(
        "[[server]]\nname = \"A\"\nlisten = \"127.0.0.1:{port}\"\n"
    ));
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("A cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}

/// On event loops a server's listeners share the port (`SO_REUSEPORT`) among themselves only: a second
/// server started on the same port is refused, and the first goes on answering on every loop.
#[tokio::test]
async fn a_port_held_by_a_server_on_event_loops_is_refused_to_a_second() {
    let mut herd = Processes::new(&[("Alford", &[])], "");
    herd.args = ["--threads", "2", "--runtime", "loops"]
        .map(String::from)
        .to_vec();
    herd.start("Alford").await;
    let addr = herd.addr("Alford");
    for shape in ["loops", "stealing"] {
        let (code, err) = run_with_config_and(
            &format!("[[server]]\nname = \"A\"\nlisten = \"{addr}\"\n"),
            &["--threads", "2", "--runtime", shape],
        );
        assert_eq!(code, Some(1), "{shape}: {err}");
        assert!(err.contains(&format!("A cannot listen on {addr}")), "{err}");
    }
    // Connections are spread over both loops by the kernel: all of them are answered.
    let mut answers = Vec::new();
    for i in 0..32 {
        answers.push(tokio::spawn(exchange_text(
            addr,
            format!("IAMAT c{i} +1+1 1479413884\n"),
        )));
    }
    for a in answers {
        let reply = a.await.unwrap();
        assert!(reply.starts_with("AT Alford "), "{reply}");
    }
}

#[tokio::test]
async fn up_runs_the_whole_herd_in_one_process() {
    let mut herd = Processes::new(&[("Alford", &["Ball"]), ("Ball", &["Alford"])], "");
    // `up` in one process, through the same config.
    let mut child = tokio::process::Command::new(server_binary())
        .args(["up", "--config"])
        .arg(&herd.config)
        .arg("--log-dir")
        .arg(herd.dir.join("logs"))
        .env_remove("GOOGLE_PLACES_API_KEY")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (a, b) = (herd.addr("Alford"), herd.addr("Ball"));
    eventually("Alford to listen", || async move {
        tokio::net::TcpStream::connect(a).await.ok()
    })
    .await;
    let at = exchange_text(a, "IAMAT kiwi +1+1 1\n").await;
    eventually("the record to reach Ball", || {
        let at = at.clone();
        async move {
            let reply = exchange_text(b, "WHATSAT kiwi 1 0\n").await;
            reply.starts_with(&at).then_some(())
        }
    })
    .await;
    let pid = child.id().unwrap().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(herd.log("Alford").contains("server stopped"));
    assert!(herd.log("Ball").contains("server stopped"));
    herd.kill("none").await;
}

/// Whether process `pid` ignores SIGHUP, and whether it handles it (its `SigIgn` and `SigCgt` masks).
fn sighup_disposition(pid: u32) -> Option<(bool, bool)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let bit = |key: &str| {
        let mask = status.lines().find_map(|l| l.strip_prefix(key))?.trim();
        // Signal n is bit n - 1; SIGHUP is 1 on every Linux architecture.
        Some(u64::from_str_radix(mask, 16).ok()? & 1 != 0)
    };
    Some((bit("SigIgn:")?, bit("SigCgt:")?))
}

/// `herd-server serve Alford` of `herd`, its stdout dropped and its stderr as given.
fn spawn_alford(herd: &Processes, stderr: std::process::Stdio) -> tokio::process::Child {
    tokio::process::Command::new(server_binary())
        .args(["serve", "Alford", "--config"])
        .arg(&herd.config)
        .arg("--log-dir")
        .arg(herd.dir.join("logs"))
        .env_remove("GOOGLE_PLACES_API_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Answers an IAMAT at `addr`, then stops on SIGTERM with status 0 (`what`: the circumstance, for the
/// failure message).
async fn answers_then_stops(mut child: tokio::process::Child, addr: SocketAddr, what: &str) {
    let at = exchange_text(addr, "IAMAT kiwi +1+1 1\n").await;
    assert!(at.starts_with("AT Alford "), "{what}: {at}");
    let pid = child.id().unwrap();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(herd_tests::DEADLINE, child.wait())
        .await
        .unwrap_or_else(|_| panic!("the server to stop on SIGTERM {what}"))
        .unwrap();
    assert_eq!(status.code(), Some(0), "{what}");
}

/// `kill -HUP` during a start or restart (systemd's `ExecReload`, logrotate) must not kill the server:
/// SIGHUP is ignored from the start of `main` until the handler that reopens the logs is installed.
/// The start is held where it reads its config (a FIFO the test writes only once it has looked), so the
/// early window is seen whatever the machine's speed: a start takes a few milliseconds.
#[tokio::test]
async fn sighup_while_the_server_starts_is_harmless() {
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("skipped: no /proc to read a process's signal dispositions from");
        return;
    }
    let mut herd = Processes::new(&[("Alford", &[])], "");
    let text = std::fs::read_to_string(&herd.config).unwrap();
    let fifo = herd.dir.join("held.toml");
    let made = Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipped: no mkfifo to hold the start with");
        return;
    }
    herd.config = fifo.clone();
    let mut child = spawn_alford(&herd, std::process::Stdio::null());
    let pid = child.id().unwrap();
    // A signal while the loader maps the binary, before `main`, kills any program: wait (polling
    // closely, bounded) until the process has taken SIGHUP over. It is held reading its config, long
    // before the handler is installed (after the config, the bind and the logs): SIGHUP is ignored.
    let began = std::time::Instant::now();
    let seen = loop {
        match sighup_disposition(pid) {
            Some((false, false)) | None => {}
            Some(seen) => break seen,
        }
        assert!(
            began.elapsed() < herd_tests::DEADLINE,
            "SIGHUP never taken over"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    };
    assert_eq!(
        seen,
        (true, false),
        "SIGHUP not ignored (ignored, caught) while the server reads its config"
    );
    for _ in 0..5 {
        Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
    }
    // The config goes in once the server has it open (a FIFO's writer waits for its reader).
    let writer = tokio::task::spawn_blocking(move || std::fs::write(fifo, text));
    writer.await.unwrap().unwrap();
    // From here, SIGHUP after SIGHUP (at most 300) until the server answers, and a few more.
    let addr = herd.addr("Alford");
    let (mut hups, mut after_up) = (0, 0);
    while after_up < 5 {
        if hups < 300 {
            Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
                .unwrap();
            hups += 1;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("a SIGHUP at start killed the server ({hups} sent): {status}");
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            after_up += 1;
        }
        assert!(
            began.elapsed() < herd_tests::DEADLINE,
            "the server did not start listening"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    answers_then_stops(child, addr, "after SIGHUPs at start").await;
}

/// A server whose stderr is gone (its reader closed the pipe) still serves, and still stops on
/// SIGTERM: no message to stderr may panic the task that hears the signal.
#[tokio::test]
async fn a_closed_stderr_does_not_keep_sigterm_from_stopping_the_server() {
    let herd = Processes::new(&[("Alford", &[])], "");
    let mut child = spawn_alford(&herd, std::process::Stdio::piped());
    // Close the pipe's reading end: every write to stderr from now on fails (EPIPE).
    drop(child.stderr.take());
    let addr = herd.addr("Alford");
    let began = std::time::Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the server died with its stderr closed: {status}");
        }
        assert!(
            began.elapsed() < herd_tests::DEADLINE,
            "the server did not start listening"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    answers_then_stops(child, addr, "with its stderr closed").await;
}

/// A link refused for its secret is a warning on stderr on both sides — the dialling and the accepting
/// server — whichever side lacks the secret or holds another.
#[tokio::test]
async fn a_peer_refusal_is_a_warning_on_both_sides() {
    for (alford, ball) in [
        ("[herd]\nsecret = \"one\"\n", "[herd]\nsecret = \"two\"\n"),
        ("", "[herd]\nsecret = \"two\"\n"),
        ("[herd]\nsecret = \"one\"\n", ""),
    ] {
        let mut herd = Processes::new(&[("Alford", &["Ball"]), ("Ball", &["Alford"])], "");
        let a = herd.write_config("alford.toml", alford, &[]);
        let b = herd.write_config("ball.toml", ball, &[]);
        herd.start_with("Ball", &b).await;
        herd.start_with("Alford", &a).await;
        let herd = &herd;
        eventually("a warning on both sides", || async move {
            let (sa, sb) = (herd.stderr("Alford"), herd.stderr("Ball"));
            (sa.contains("WARN") && sb.contains("WARN")).then_some(())
        })
        .await;
        let (sa, sb) = (herd.stderr("Alford"), herd.stderr("Ball"));
        assert!(
            sa.contains("Ball") && sb.contains("refused"),
            "{alford:?} {ball:?}\n{sa}\n{sb}"
        );
    }
}

/// `herd-server default-config` prints a config that `check` accepts and describes as the default herd;
/// `check` refuses a config that cannot work, and `--threads 0` is refused before anything starts.
#[test]
fn check_default_config_and_settings_that_cannot_work() {
    let run = |args: &[&str]| {
        let out = Command::new(server_binary())
            .args(args)
            .env_remove("GOOGLE_PLACES_API_KEY")
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, toml, _) = run(&["default-config"]);
    assert_eq!(code, Some(0));
    let dir = std::env::temp_dir().join(format!("herd-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("default.toml");
    std::fs::write(&file, &toml).unwrap();
    let (code, out, err) = run(&["check", "--config", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("default.toml: ok\nservers: 5\n"), "{out}");
    assert!(
        out.contains(
            "Alford    127.0.0.1:12000  admin 127.0.0.1:12100  neighbours: Hamilton, Welsh"
        ),
        "{out}"
    );
    assert!(
        out.contains("places: offline") && out.contains("max_line 4096"),
        "{out}"
    );

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[limits]\nmax_line = 10\n[[server]]\nname = \"A\"\nlisten = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let (code, _, err) = run(&["check", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("bad.toml:2: [limits] max_line = 10 cannot work: it must be at least 64"),
        "{err}"
    );
    assert!(
        !err.contains("acktrace"),
        "no backtrace without HERD_DEBUG: {err}"
    );
    let (code, _, err) = run(&["up", "--threads", "0"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("'--threads <N>'"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `herd-server man` prints a roff page that names every command; `--dir` writes one page per command
/// (an unwritable folder is an error with its cause, exit 1).
#[test]
fn man_pages_for_the_server() {
    let out = Command::new(server_binary()).arg("man").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.starts_with(".ie \\n(.g .ds Aq"), "{page}");
    assert!(page.contains(".TH herd-server 1"), "{page}");
    for command in [
        "serve",
        "up",
        "check",
        "admin\\-token",
        "default\\-config",
        "man",
    ] {
        assert!(
            page.contains(&format!("herd\\-server\\-{command}(1)")),
            "{command} in {page}"
        );
    }
    let dir = std::env::temp_dir().join(format!("herd-server-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(server_binary())
        .args(["man", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "herd-server-admin-token.1",
            "herd-server-check.1",
            "herd-server-default-config.1",
            "herd-server-man.1",
            "herd-server-serve.1",
            "herd-server-up.1",
            "herd-server.1"
        ]
    );
    let serve = std::fs::read_to_string(dir.join("herd-server-serve.1")).unwrap();
    assert!(serve.contains("\\-\\-data\\-dir"), "{serve}");
    // A folder that cannot be made.
    let file = dir.join("herd-server.1");
    let out = Command::new(server_binary())
        .args(["man", "--dir", file.join("sub").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("herd-server: error: creating "), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `deploy/herd-server@.service` passes `systemd-analyze verify` (where systemd is installed), with its
/// binary path pointed at the one built here.
#[test]
fn the_systemd_unit_verifies() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: unit not checked");
        return;
    };
    assert!(version.status.success());
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/herd-server@.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/herd-server serve %i"));
    // The store's suggested folder is writable under ProtectSystem=strict.
    assert!(unit.contains("\nStateDirectory=herd\n") && unit.contains("ProtectSystem=strict"));
    let unit = unit.replace(
        "/usr/local/bin/herd-server",
        server_binary().to_str().unwrap(),
    );
    let dir = std::env::temp_dir().join(format!("herd-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("herd-server@Alford.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}
