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
    // Past the cap by fewer than a link may have refused before it is closed as misbehaving.
    for i in 0..3_000 {
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
        (refused >= 2_500).then_some(())
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

/// The pin and the fill as a steady load: a link that keeps sending records past a bound is closed
/// after a few, with one warning naming the peer (log and stderr), and greetings claiming its name
/// are refused for a while (`quarantined`), before any proof is checked; then it may greet again.
#[tokio::test]
async fn a_peer_that_keeps_sending_what_is_refused_is_cut_and_its_name_quarantined() {
    let herd = herd("").await;
    let mut insider = Insider::greet(herd.addr("Bravo"), "Alford", "Bravo", SECRET).await;
    let mut pins = Vec::new();
    for i in 0..1_000 {
        pins.extend_from_slice(
            format!("AT Charlie +0.000000000 pin{i} +1+1 18446744073709551615\n").as_bytes(),
        );
    }
    insider.send(&pins).await;
    assert!(insider.until_closed().await, "the link stayed open");
    let refused = metric(
        &herd,
        "Bravo",
        "herd_peer_records_refused_total{limit=\"future-time\"}",
    )
    .await;
    assert!(
        (1..100).contains(&refused),
        "{refused} pins read before the link was closed"
    );
    assert_eq!(
        metric(
            &herd,
            "Bravo",
            "herd_link_quarantined_total{peer=\"Alford\"}"
        )
        .await,
        1
    );
    let stderr = herd.stderr("Bravo");
    assert!(
        stderr.contains("closing the link to Alford (127.0.0.1:")
            && stderr.contains("greetings as Alford are refused for"),
        "{stderr}"
    );
    // Quarantined: refused at once, whatever it proves.
    let again = Insider::try_greet(herd.addr("Bravo"), "Alford", "Bravo", SECRET).await;
    assert_eq!(again.err().as_deref(), Some("refused: quarantined"));
    // The quarantine ends; the name may link again.
    eventually("the quarantine to end", || async {
        Insider::try_greet(herd.addr("Bravo"), "Alford", "Bravo", SECRET)
            .await
            .ok()
    })
    .await;
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

/// The insider attacks `bench/insider.sh` measures, one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    /// `HERD-ROOT`, then 1,000 × `HERD-IDS -` and `HERD-IDS - AAAAAA` (30 KB) on each link.
    Freeze,
    /// 20,000 new clients with 4,000-byte ids on each link (80 MB).
    FillLong,
    /// 20,000 new clients with short ids on each link.
    FillShort,
    /// 20,000 records naming Charlie timed at `u64::MAX` on each link.
    Pin,
    /// One link kept alive, and greetings as its name again and again (a take-over).
    Regreet,
    /// The mix measured first: a freeze, then a fill of long ids each followed by a pin.
    Mix,
}

/// What one attack link brings: the lines, and whether it is greeted anew each round.
fn attack_lines(attack: Attack, n: &mut u64) -> Vec<u8> {
    let mut lines = Vec::new();
    let freeze = |lines: &mut Vec<u8>| {
        lines.extend_from_slice(b"HERD-ROOT 9 0000000000000009 0000000000000001\n");
        for _ in 0..1_000 {
            lines.extend_from_slice(b"HERD-IDS -\nHERD-IDS - AAAAAA\n");
        }
    };
    match attack {
        Attack::Freeze => freeze(&mut lines),
        Attack::Regreet => lines.extend_from_slice(b"HERD-PONG\n"),
        Attack::FillLong | Attack::FillShort | Attack::Pin => {
            for _ in 0..20_000 {
                *n += 1;
                let line = match attack {
                    Attack::FillLong => format!("AT Alford +0.000000000 {n:0>4000} +1+1 5\n"),
                    Attack::FillShort => format!("AT Alford +0.000000000 s{n} +1+1 5\n"),
                    _ => format!(
                        "AT Charlie +0.000000000 c{} +1+1 18446744073709551615\n",
                        *n % 20_000
                    ),
                };
                lines.extend_from_slice(line.as_bytes());
            }
        }
        Attack::Mix => {
            freeze(&mut lines);
            for _ in 0..20_000 {
                *n += 1;
                lines.extend_from_slice(
                    format!("AT Alford +0.000000000 {n:0>4000} +1+1 5\nAT Charlie +0.000000000 c{} +1+1 18446744073709551615\n", *n % 20_000)
                        .as_bytes(),
                );
            }
        }
    }
    lines
}

/// An honest client's p99 over IAMATs sent one at a time for `span` (at least 1,000 of them, at
/// most 200,000).
async fn p99(addr: std::net::SocketAddr, span: Duration) -> Duration {
    let mut c = herd_tests::client::Client::connect(addr).await;
    let mut times = Vec::new();
    let start = Instant::now();
    for i in 0..200_000 {
        if i >= 1_000 && start.elapsed() >= span {
            break;
        }
        let t = Instant::now();
        c.send(format!("IAMAT p{} +1+1 {i}\n", i % 100)).await;
        c.text_line().await;
        times.push(t.elapsed());
    }
    times.sort();
    times[times.len() * 99 / 100]
}

/// A process's resident memory.
fn rss(herd: &Processes, name: &str) -> u64 {
    let pid = herd.pid(name).expect("pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// What the insider did in one measurement.
#[derive(Default)]
struct Done {
    /// Links it got up.
    links: u64,
    /// Greetings refused (its name quarantined, or its live link kept).
    refused: u64,
    /// Bytes it sent on its links.
    sent: u64,
    /// Bytes it got back on its links.
    got: u64,
}

/// One attack against a fresh Bravo holding 20,000 clients: rounds of an honest p99 with the
/// insider paused, then while it attacks at full speed (side by side, the median ratio kept).
async fn measure(attack: Attack) {
    let budget: u64 = 64 << 20;
    let herd = herd(&format!(
        "[log]\nlines = false\n[limits]\nmax_cache_bytes = {budget}\nmax_clients = 40000\n"
    ))
    .await;
    let bravo = herd.addr("Bravo");
    let mut lines = String::new();
    for i in 0..20_000 {
        lines.push_str(&format!("IAMAT c{i} +1+1 {i}\n"));
    }
    exchange_text(bravo, lines).await;
    let rss_before = rss(&herd, "Bravo");
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    let (active, stop, rounds) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let attacker = {
        let (active, stop, rounds) = (active.clone(), stop.clone(), rounds.clone());
        tokio::spawn(async move {
            let mut done = Done::default();
            let mut n = 0u64;
            let mut held: Option<Insider> = None;
            while !stop.load(Relaxed) {
                if !active.load(Relaxed) {
                    held = None;
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                rounds.fetch_add(1, Relaxed);
                if attack == Attack::Regreet {
                    // Keep one link alive, and greet as its name again and again meanwhile.
                    if held.is_none() {
                        held = Insider::try_greet(bravo, "Alford", "Bravo", SECRET)
                            .await
                            .ok();
                        done.links += u64::from(held.is_some());
                    }
                    if let Some(h) = held.as_mut() {
                        h.send(b"HERD-PONG\n").await;
                    }
                    // The greeting proves the secret; the server then refuses the link on the
                    // channel (`HERD-REFUSED link-up`) while the live one answers.
                    match Insider::try_greet(bravo, "Alford", "Bravo", SECRET).await {
                        Ok(mut again) => {
                            again.read_for(Duration::from_millis(50)).await;
                            if again.text().contains("HERD-REFUSED") {
                                done.refused += 1;
                            } else {
                                done.links += 1;
                            }
                        }
                        Err(_) => done.refused += 1,
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let mut insider = match Insider::try_greet(bravo, "Alford", "Bravo", SECRET).await {
                    Ok(i) => i,
                    Err(_) => {
                        // Quarantined: an insider greets again soon (a greeting flood at full
                        // speed is a stranger's attack, measured by bench/abuse.sh).
                        done.refused += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                done.links += 1;
                let lines = attack_lines(attack, &mut n);
                done.sent += lines.len() as u64;
                insider.send(&lines).await;
                insider.read_for(Duration::from_millis(200)).await;
                done.got += insider.plain.len() as u64;
            }
            done
        })
    };
    let (mut ratios, mut idles, mut attackeds) = (Vec::new(), Vec::new(), Vec::new());
    let mut rss_attacked = 0;
    for _ in 0..3 {
        active.store(false, Relaxed);
        let idle = p99(bravo, Duration::from_secs(3)).await;
        active.store(true, Relaxed);
        let from = rounds.load(Relaxed);
        eventually("the insider to attack", || {
            let rounds = rounds.clone();
            async move { (rounds.load(Relaxed) > from).then_some(()) }
        })
        .await;
        let attacked = p99(bravo, Duration::from_secs(3)).await;
        rss_attacked = rss_attacked.max(rss(&herd, "Bravo"));
        ratios.push(attacked.as_secs_f64() / idle.as_secs_f64());
        idles.push(idle);
        attackeds.push(attacked);
    }
    stop.store(true, Relaxed);
    let done = attacker.await.unwrap();
    let rounds: Vec<String> = idles
        .iter()
        .zip(&attackeds)
        .map(|(i, a)| format!("{:.0}/{:.0}", i.as_micros(), a.as_micros()))
        .collect();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let cache = metric(&herd, "Bravo", "herd_cache_bytes").await;
    idles.sort();
    attackeds.sort();
    let quarantined = metric(
        &herd,
        "Bravo",
        "herd_link_quarantined_total{peer=\"Alford\"}",
    )
    .await;
    println!(
        "{attack:?}: honest p99 µs idle/attacked by round {}; medians {:?} / {:?}, median ratio {:.2}x; Bravo RSS {} MB before, {} MB under it, cache {} MB of {} MB; insider {} links, {} greetings refused, {} quarantines; sent {} KB, got back {} KB ({:.3} per byte)",
        rounds.join(" "),
        idles[1],
        attackeds[1],
        median(&mut ratios),
        rss_before >> 20,
        rss_attacked >> 20,
        cache >> 20,
        budget >> 20,
        done.links,
        done.refused,
        quarantined,
        done.sent >> 10,
        done.got >> 10,
        done.got as f64 / done.sent.max(1) as f64,
    );
}

/// The figures of `bench/insider.sh` (run with `--ignored --nocapture`, release build): for each
/// attack, an honest client's p99 idle and while an insider replays it at full speed, the memory of
/// the server under it against its byte budget, and what the insider got back per byte it sent.
#[tokio::test]
#[ignore]
async fn figures() {
    for attack in [
        Attack::Freeze,
        Attack::FillLong,
        Attack::FillShort,
        Attack::Pin,
        Attack::Regreet,
        Attack::Mix,
    ] {
        measure(attack).await;
    }
}

#[tokio::test]
async fn a_second_process_serving_a_name_is_diagnosed_and_does_not_take_the_link() {
    let mut herd = Processes::new(&CHAIN, &format!("[herd]\nsecret = {SECRET:?}\n"));
    herd.start("Bravo").await;
    herd.start("Alford").await;
    eventually("Alford's link to Bravo", || {
        let log = herd.log("Bravo");
        async move { log.contains("link to Alford up").then_some(()) }
    })
    .await;
    let twin_addr = std::net::SocketAddr::from(([127, 0, 0, 1], herd_tests::free_port()));
    let config = herd.write_config(
        "twin.toml",
        &format!("[herd]\nsecret = {SECRET:?}\n"),
        &[("Alford", twin_addr)],
    );
    let twin_err = herd.dir.join("twin.stderr");
    let _twin = tokio::process::Command::new(herd_tests::herd::server_binary())
        .args(["serve", "Alford", "--config"])
        .arg(&config)
        .arg("--log-dir")
        .arg(herd.dir.join("twin-logs"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&twin_err).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually("Bravo to diagnose two servers named Alford", || {
        let stderr = herd.stderr("Bravo");
        async move {
            stderr
                .contains("two servers claim the name Alford: 127.0.0.1:")
                .then_some(())
        }
    })
    .await;
    eventually("the twin to be told, and to try again after a back-off", || {
        let text = std::fs::read_to_string(&twin_err).unwrap_or_default();
        async move {
            (text.matches("two servers claim the name Alford").count() >= 2).then_some(())
        }
    })
    .await;
    // The link stayed with the first Alford all along: one link-up, records still cross.
    assert_eq!(herd.log("Bravo").matches("link to Alford up").count(), 1);
    let at = iamat(herd.addr("Alford"), "first", "1").await;
    converge(&herd, &["Bravo"], "first", &at).await;
}
