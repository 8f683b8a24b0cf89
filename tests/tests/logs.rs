//! Log files of real `herd-server` processes (PROTOCOL.md §6): what each entry looks like, WHATSAT
//! summaries and whole bodies, `lines = false`, SIGHUP after the file was moved, size rotation, and a
//! log that cannot be written (a file-size limit, a full tmpfs) while every client is still answered.

use herd_tests::client::{exchange_text, Client};
use herd_tests::eventually;
use herd_tests::herd::Processes;

const IAMAT: &str = "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450";

/// Sends `n` IAMATs (16 in flight) on one connection and checks every answer.
async fn iamats(addr: std::net::SocketAddr, from: u32, n: u32) {
    let mut c = Client::connect(addr).await;
    let mut i = from;
    while i < from + n {
        let burst = (from + n - i).min(16);
        let mut text = String::new();
        for k in i..i + burst {
            text.push_str(&format!("IAMAT c{k} +34.068930-118.445127 {k}.5\n"));
        }
        c.send(text).await;
        for k in i..i + burst {
            let line = c.text_line().await;
            assert!(
                line.starts_with("AT Alford +")
                    && line.ends_with(&format!(" c{k} +34.068930-118.445127 {k}.5\n")),
                "{line}"
            );
        }
        i += burst;
    }
}

fn entries<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

#[tokio::test]
async fn every_event_has_its_entry_and_the_key_none() {
    let mut herd = Processes::new(
        &[("Alford", &["Hamilton"]), ("Hamilton", &["Alford"])],
        "[places]\nbackend = \"offline\"\nkey = \"sekrit-key-123\"\n",
    );
    herd.start_all().await;
    let addr = herd.addr("Alford");
    let at = exchange_text(
        addr,
        format!("{IAMAT}\nWHATSAT kiwi.cs.ucla.edu 10 3\nHELLO\n"),
    )
    .await;
    assert!(at.starts_with("AT Alford +"), "{at}");
    let first_at = at.lines().next().unwrap().to_owned();
    // The record reaches Hamilton over the link.
    eventually("the record at Hamilton", || async {
        let reply = exchange_text(herd.addr("Hamilton"), "WHATSAT kiwi.cs.ucla.edu 1 0\n").await;
        reply.starts_with(&first_at).then_some(())
    })
    .await;
    assert_eq!(herd.terminate("Alford").await, Some(0));
    assert_eq!(herd.terminate("Hamilton").await, Some(0));

    let log = herd.log("Alford");
    let stamp = |l: &str| {
        let t = &l[..27];
        assert!(t.ends_with('Z') && &t[10..11] == "T", "no time stamp: {l}");
    };
    for l in log.lines() {
        stamp(l);
    }
    // A request and its reply are one entry: time, connection, request, tab, reply; no level.
    let pairs = entries(&log, "\t");
    assert_eq!(pairs.len(), 3, "{log}");
    let conn = pairs[0].split_whitespace().nth(1).unwrap().to_owned();
    assert!(conn.starts_with('c'), "{}", pairs[0]);
    let tail = |l: &str| l[27..].to_owned();
    // The IAMAT's reply repeats its fields: written once, the reply ending in `…`.
    let head = first_at.strip_suffix(&IAMAT["IAMAT ".len()..]).unwrap();
    assert_eq!(tail(pairs[0]), format!(" {conn} {IAMAT}\t{head}…"));
    let (req, rep) = pairs[0][27..].split_once('\t').unwrap();
    assert_eq!(
        herd_server::log::expand_reply(req.strip_prefix(&format!(" {conn} ")).unwrap(), rep),
        first_at
    );
    assert_eq!(
        tail(pairs[1]),
        format!(" {conn} WHATSAT kiwi.cs.ucla.edu 10 3\t{first_at}")
    );
    assert_eq!(tail(pairs[2]), format!(" {conn} HELLO\t? HELLO"));
    let summary = tail(entries(&log, " out-json ")[0]);
    assert!(
        summary.starts_with(&format!(
            " {conn} out-json backend=offline status=OK results=3 bytes="
        )),
        "{summary}"
    );
    assert!(summary.contains(" ms="), "{summary}");
    assert!(
        !summary.contains("body="),
        "no body unless asked for: {summary}"
    );
    // The whole JSON is not in the log: one summary line instead.
    assert!(!log.contains("html_attributions"), "{log}");
    // Every entry of the connection, its events too, has it second: awk '$2 == "c7"' follows it.
    let followed: Vec<&str> = log
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(conn.as_str()))
        .collect();
    assert!(
        followed[0].contains(" INFO connection opened"),
        "{followed:?}"
    );
    assert!(
        followed.last().unwrap().contains(" INFO connection closed"),
        "{followed:?}"
    );
    assert_eq!(followed.len(), 6, "{followed:?}");

    for needle in [
        "server started",
        "connection opened",
        "connection closed",
        "peer link up",
        " >Hamilton AT Alford ",
        "server stopped",
    ] {
        assert!(
            log.contains(needle),
            "Alford's log lacks {needle:?}:\n{log}"
        );
    }
    let hamilton = herd.log("Hamilton");
    assert!(hamilton.contains(" <Alford AT Alford "), "{hamilton}");
    assert!(hamilton.contains("peer link up"), "{hamilton}");
    assert!(
        !log.contains("sekrit") && !hamilton.contains("sekrit"),
        "the key is in a log"
    );
}

#[tokio::test]
async fn bodies_true_logs_the_json_whole_on_one_line() {
    let mut herd = Processes::new(&[("Alford", &[])], "[log]\nbodies = true\n");
    herd.start("Alford").await;
    let addr = herd.addr("Alford");
    exchange_text(addr, format!("{IAMAT}\n")).await;
    let answer = exchange_text(addr, "WHATSAT kiwi.cs.ucla.edu 10 2\n").await;
    assert_eq!(herd.terminate("Alford").await, Some(0));
    let json = answer.split_once('\n').unwrap().1.trim_end_matches('\n');
    let log = herd.log("Alford");
    let line = entries(&log, " out-json ")[0];
    let body = line.split_once(" body=").expect("a body").1;
    assert_eq!(
        body,
        json.replace('\\', "\\\\").replace('\n', "\\n"),
        "{line}"
    );
    assert!(line.contains(&format!(" bytes={} ", json.len())), "{line}");
}

#[tokio::test]
async fn lines_false_is_silent_per_request() {
    let mut herd = Processes::new(&[("Alford", &[])], "[log]\nlines = false\n");
    herd.start("Alford").await;
    let addr = herd.addr("Alford");
    exchange_text(addr, format!("{IAMAT}\n")).await;
    let mut c = Client::connect(addr).await;
    for _ in 0..50 {
        c.send("WHATSAT kiwi.cs.ucla.edu 10 2\nnonsense\n").await;
        assert!(c.whatsat_answer().await.contains("\"status\": \"OK\""));
        assert_eq!(c.text_line().await, "? nonsense\n");
    }
    drop(c);
    assert_eq!(herd.terminate("Alford").await, Some(0));
    let log = herd.log("Alford");
    assert!(log.contains("connection opened"), "{log}");
    for needle in ["\t", "out-json", "look-up", "WHATSAT", "nonsense"] {
        assert!(!log.contains(needle), "{needle:?} is logged:\n{log}");
    }
}

#[tokio::test]
async fn a_refused_line_cannot_break_or_forge_log_entries() {
    let mut herd = Processes::new(&[("Alford", &[])], "");
    herd.start("Alford").await;
    // A client id may hold any byte but white space: here terminal escapes, NUL, a record separator,
    // U+2028, invalid UTF-8 and, after each break a viewer may honour, an entry of another connection
    // (its spaces are no-break spaces, which are not white space either). The fields are separated
    // by VT, CR and FF, and the time is centuries ahead, so a limit refuses the line and logs it.
    let forged = "2026-11-26T02:00:00.000000Z\u{a0}c999\u{a0}IAMAT\u{a0}forged";
    let mut line = b"IAMAT\x0b\x1b[31mred\x00".to_vec();
    for brk in ["\u{1e}", "\u{2028}", "\u{85}"] {
        line.extend_from_slice(brk.as_bytes());
        line.extend_from_slice(forged.as_bytes());
    }
    line.extend_from_slice(b"\xff\xfe\r+1+1\x0c99999999999.5\n");
    let reply = herd_tests::client::exchange(herd.addr("Alford"), &line).await;
    assert!(reply.starts_with(b"? IAMAT"), "{reply:?}");
    assert_eq!(herd.terminate("Alford").await, Some(0));

    let log = std::fs::read(herd.dir.join("logs").join("Alford.log")).unwrap();
    let text = String::from_utf8(log.clone()).expect("the log is UTF-8");
    assert!(
        text.contains("IAMAT refused by a limit"),
        "the refusal is logged:\n{text}"
    );
    // The only control bytes are the entries' ends and the one tab the server writes between a
    // request and its reply (a client's tab is escaped as `\t`).
    for (at, &b) in log.iter().enumerate() {
        assert!(
            b >= 0x20 && b != 0x7f || b == b'\n' || b == b'\t',
            "control byte {b:#04x} at {at}:\n{}",
            log.escape_ascii()
        );
    }
    for entry in log.split(|&b| b == b'\n') {
        assert!(
            entry.iter().filter(|&&b| b == b'\t').count() <= 1,
            "a second tab in {}",
            entry.escape_ascii()
        );
    }
    for c in ['\u{85}', '\u{2028}', '\u{2029}', '\u{a0}', '\u{fffd}'] {
        assert!(!text.contains(c), "{c:?} in the log:\n{text}");
    }
    // Every break a terminal, editor or log viewer may show as a new line.
    let breaks = [
        '\n', '\r', '\u{b}', '\u{c}', '\u{1c}', '\u{1d}', '\u{1e}', '\u{85}', '\u{2028}',
        '\u{2029}',
    ];
    for entry in text.split(&breaks[..]) {
        assert!(
            !entry.starts_with("2026-11-26T02:00:00.000000Z"),
            "a forged entry: {entry:?}"
        );
    }
}

#[tokio::test]
async fn sighup_reopens_a_moved_log_and_the_server_lives_on() {
    let mut herd = Processes::new(&[("Alford", &[])], "");
    herd.start("Alford").await;
    let addr = herd.addr("Alford");
    exchange_text(addr, "IAMAT before +1+1 1\n").await;
    let logs = herd.dir.join("logs");
    eventually("the first line in the log", || async {
        herd.log("Alford").contains(" IAMAT before").then_some(())
    })
    .await;
    std::fs::rename(logs.join("Alford.log"), logs.join("Alford.log.moved")).unwrap();
    herd.signal("Alford", "HUP");
    eventually("a new Alford.log", || async {
        logs.join("Alford.log").exists().then_some(())
    })
    .await;
    let at = exchange_text(addr, "IAMAT after +1+1 2\n").await;
    assert!(at.starts_with("AT Alford"), "{at}");
    assert!(herd.running("Alford"), "SIGHUP killed the server");
    assert_eq!(herd.terminate("Alford").await, Some(0));
    let new = herd.log("Alford");
    let old = std::fs::read_to_string(logs.join("Alford.log.moved")).unwrap();
    assert!(new.contains(" IAMAT after"), "{new}");
    assert!(!new.contains("IAMAT before"), "{new}");
    assert!(
        old.contains(" IAMAT before") && !old.contains("IAMAT after"),
        "{old}"
    );
}

/// A log replaced by a FIFO that nobody reads must not stop the server: the reopen fails at once
/// instead of blocking the writer in `open` for ever, lines are dropped and counted, and SIGTERM still
/// stops it. (A write that blocks, once open, is the queue's stall rule: a unit test of the writer.)
#[cfg(unix)]
#[tokio::test]
async fn a_log_turned_fifo_nobody_reads_does_not_stop_the_server() {
    let mut herd = Processes::new(&[("Alford", &[])], "");
    herd.start("Alford").await;
    let addr = herd.addr("Alford");
    let logs = herd.dir.join("logs");
    // The server listens before it opens its log (a port in use fails first): wait for the file.
    let log = logs.join("Alford.log");
    eventually("the log file", || async { log.exists().then_some(()) }).await;
    std::fs::remove_file(&log).unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(logs.join("Alford.log"))
        .status();
    if !fifo.is_ok_and(|s| s.success()) {
        eprintln!("skipped: mkfifo is not available here");
        return;
    }
    herd.signal("Alford", "HUP");
    let mut c = Client::connect(addr).await;
    // Far more than the log queue holds (about 250 bytes of log a request, 4 MiB queued at most).
    for round in 0..40 {
        let batch: String = (0..500)
            .map(|i| format!("IAMAT f{round}x{i} +1+1 {i}\n"))
            .collect();
        c.send(batch).await;
        for _ in 0..500 {
            assert!(c.text_line().await.starts_with("AT Alford"));
        }
    }
    drop(c);
    eventually("the failed reopen and the drop said on stderr", || async {
        let err = herd.stderr("Alford");
        (err.contains("cannot reopen the log") && err.contains("dropping log lines")).then_some(())
    })
    .await;
    assert_eq!(herd.terminate("Alford").await, Some(0));
}

#[tokio::test]
async fn size_rotation_keeps_at_most_keep_files() {
    let mut herd = Processes::new(&[("Alford", &[])], "[log]\nmax_bytes = 4096\nkeep = 2\n");
    herd.start("Alford").await;
    // About 250 bytes of log a request: 300 requests fill many 4 KiB files.
    let mut c = Client::connect(herd.addr("Alford")).await;
    for i in 0..300 {
        c.send(format!("IAMAT r{i} +1+1 {i}\n")).await;
        assert!(c.text_line().await.starts_with("AT Alford"));
    }
    drop(c);
    assert_eq!(herd.terminate("Alford").await, Some(0));
    let logs = herd.dir.join("logs");
    let mut names: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["Alford.log", "Alford.log.1", "Alford.log.2"]);
    for n in &names {
        let len = std::fs::metadata(logs.join(n)).unwrap().len();
        assert!(len <= 4096, "{n} has {len} bytes");
    }
    // Newest in Alford.log, older in .1, older still in .2; nothing is cut mid-line.
    let read = |n: &str| std::fs::read_to_string(logs.join(n)).unwrap();
    assert!(read("Alford.log").contains("server stopped"));
    for n in &names {
        assert!(read(n).ends_with('\n'), "{n}");
    }
    let last = |n: &str| {
        read(n)
            .lines()
            .filter_map(|l| l.split(" IAMAT r").nth(1))
            .filter_map(|r| r.split(' ').next()?.parse::<u32>().ok())
            .max()
    };
    assert!(last("Alford.log.2").is_some());
    assert!(last("Alford.log.2") < last("Alford.log.1"));
}

/// Floods a server whose log stops taking writes, checks every client is answered and stderr says
/// lines are dropped; then `free` makes room and the log must say how many were lost.
async fn drops_and_resumes(
    herd: &mut Processes,
    log_path: std::path::PathBuf,
    free: impl FnOnce(),
) {
    let addr = herd.addr("Alford");
    iamats(addr, 0, 2000).await;
    eventually("stderr to say lines are dropped", || async {
        herd.stderr("Alford")
            .contains("dropping log lines")
            .then_some(())
    })
    .await;
    let err = herd.stderr("Alford");
    assert_eq!(
        err.matches("dropping log lines").count(),
        1,
        "said once:\n{err}"
    );
    assert!(herd.running("Alford"));
    free();
    // The writer retries on its own; more lines keep coming meanwhile, and are answered.
    let mut from = 2000;
    eventually("the log to report the lost lines", || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let f = from;
        from += 10;
        async move {
            iamats(addr, f, 10).await;
            log.contains("WARN log lines lost: ").then_some(())
        }
    })
    .await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    let lost: u64 = log
        .split("WARN log lines lost: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a count");
    assert!(lost > 100, "lost {lost}");
    let err = herd.stderr("Alford");
    assert!(
        err.contains(&format!("again; {lost} log lines were lost")),
        "{err}"
    );
    // Lines after the resume are written again.
    iamats(addr, 900_000, 5).await;
    eventually("lines after the resume", || async {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        log.contains(" IAMAT c900004 ").then_some(())
    })
    .await;
    assert_eq!(herd.terminate("Alford").await, Some(0));
}

#[tokio::test]
async fn a_file_size_limit_drops_log_lines_honestly_and_a_new_file_resumes() {
    // Rotation off: with it on, the server rotates the full file away by itself (a unit test of the
    // writer covers that); here the operator frees it.
    let mut herd = Processes::new(&[("Alford", &[])], "[log]\nmax_bytes = 0\n");
    // 16 KiB per file (bash counts `ulimit -f` in KiB): the log hits it within a hundred requests.
    herd.start_wrapped(
        "Alford",
        &["bash", "-c", "ulimit -f 16 && exec \"$@\"", "-"],
    )
    .await;
    let logs = herd.dir.join("logs");
    let pid = herd.pid("Alford").unwrap();
    let path = logs.join("Alford.log");
    let (from, to) = (path.clone(), logs.join("Alford.log.full"));
    drops_and_resumes(&mut herd, path, move || {
        // What logrotate does: move the full file away, then SIGHUP.
        std::fs::rename(&from, &to).unwrap();
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    })
    .await;
}

#[tokio::test]
async fn a_full_tmpfs_drops_log_lines_honestly_and_freed_space_resumes() {
    let probe = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs \"$d\" && umount \"$d\" && rmdir \"$d\"")
        .stderr(std::process::Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!(
            "skipped: cannot mount a tmpfs in a private mount namespace here (needs `unshare -m` and \
             CAP_SYS_ADMIN); a_file_size_limit_drops_log_lines_honestly_… covers the same path"
        );
        return;
    }
    let mut herd = Processes::new(&[("Alford", &[])], "");
    let logs = herd.dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    // A 64 KiB tmpfs over the log folder, seen only by the server, three quarters taken by a filler.
    let script = format!(
        "mount -t tmpfs -o size=64k tmpfs '{0}' && head -c 49152 /dev/zero > '{0}/filler' && exec \"$@\"",
        logs.display()
    );
    herd.start_wrapped(
        "Alford",
        &[
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "-",
        ],
    )
    .await;
    // Inside the server's mount namespace, through its root.
    let pid = herd.pid("Alford").unwrap();
    let inside =
        std::path::PathBuf::from(format!("/proc/{pid}/root")).join(logs.strip_prefix("/").unwrap());
    let filler = inside.join("filler");
    assert!(filler.exists(), "no filler at {}", filler.display());
    drops_and_resumes(&mut herd, inside.join("Alford.log"), move || {
        std::fs::remove_file(&filler).unwrap();
    })
    .await;
}
