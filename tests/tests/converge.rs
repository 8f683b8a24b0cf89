//! Convergence through the driver that ships, with real processes: two servers with data dirs share
//! 20,000 clients; while one is stopped (or its link cut through a proxy), D of the clients move; once
//! it is back, both must hold the same newest record of every client. D runs from one client (the
//! sparse path: fingerprints and ids) to half the cache (the dense path: `HERD-IBF` tables), and the
//! test says which path each D took, from the servers' own counters.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use herd_tests::admin::{fingerprint, link};
use herd_tests::client::Client;
use herd_tests::eventually;
use herd_tests::herd::Processes;
use herd_tests::proxy::Proxy;

const PAIR: [(&str, &[&str]); 2] = [("Alford", &["Ball"]), ("Ball", &["Alford"])];
const N: usize = 20_000;
const MOVES: [usize; 5] = [1, 20, 1_000, 5_000, N / 2];

fn store_toml(dir: &Path) -> String {
    format!(
        "[store]\ndir = {:?}\nfsync = \"everysec\"\n\n[log]\nlines = false\n",
        dir.display().to_string()
    )
}

/// Sends an IAMAT for each client of `ids` at client time `time`, pipelined; returns the AT lines.
async fn report(addr: SocketAddr, ids: &[usize], time: u32) -> Vec<String> {
    let mut c = Client::connect(addr).await;
    let mut acked = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(2_000) {
        let batch: String = chunk
            .iter()
            .map(|i| format!("IAMAT c{i:07} +34.068930-118.445127 {time}\n"))
            .collect();
        c.send(batch).await;
        for _ in chunk {
            let line = c.text_line().await;
            assert!(line.starts_with("AT "), "{line}");
            acked.push(line.trim_end().to_owned());
        }
    }
    acked
}

/// Half the clients report at Alford and half at Ball; flooding copies them across.
async fn share(herd: &Processes, n: usize) {
    let ids: Vec<usize> = (0..n).collect();
    let (a, b) = ids.split_at(n / 2);
    report(herd.addr("Alford"), a, 1).await;
    report(herd.addr("Ball"), b, 1).await;
    same_everywhere(herd, n).await;
}

/// The AT lines `addr` holds for `lines`' clients, asked in one pipelined batch; the ones that differ.
async fn missing(addr: SocketAddr, lines: &[String]) -> Vec<String> {
    let mut c = Client::connect(addr).await;
    let mut wrong = Vec::new();
    for chunk in lines.chunks(2_000) {
        let batch: String = chunk
            .iter()
            .map(|l| format!("WHATSAT {} 1 0\n", l.split(' ').nth(3).unwrap()))
            .collect();
        c.send(batch).await;
        for want in chunk {
            let answer = c.whatsat_answer().await;
            if answer.lines().next() != Some(want.as_str()) {
                wrong.push(want.clone());
            }
        }
    }
    wrong
}

/// Waits until both servers show the same records and fingerprint; returns how long it took.
async fn same_everywhere(herd: &Processes, n: usize) -> f64 {
    let start = Instant::now();
    let (a, b) = (herd.admin("Alford"), herd.admin("Ball"));
    eventually("Alford and Ball to hold the same records", || async move {
        let fa = fingerprint(a).await?;
        (fa.0 == n as u64 && Some(&fa) == fingerprint(b).await.as_ref()).then_some(())
    })
    .await;
    start.elapsed().as_secs_f64()
}

/// Tables Alford sent and received on its link to Ball so far.
async fn tables(herd: &Processes) -> u64 {
    let l = link(herd.admin("Alford"), "Ball").await;
    let t = &l["catchup"]["tables"];
    t["sent"].as_u64().unwrap_or(0) + t["received"].as_u64().unwrap_or(0)
}

/// Checks that every moved record reached both servers, and says which path the catch-up took.
async fn check(herd: &Processes, d: usize, moved: &[String], tables_before: u64, took: f64) {
    for name in ["Alford", "Ball"] {
        let wrong = missing(herd.addr(name), moved).await;
        assert!(
            wrong.is_empty(),
            "D = {d}: {name} lacks {} of {} moved records, such as {:?}",
            wrong.len(),
            moved.len(),
            wrong.first()
        );
    }
    let dense = tables(herd).await > tables_before;
    eprintln!(
        "D = {d}: same records everywhere {took:.2} s after the link was back ({} path)",
        if dense {
            "tables: the dense path"
        } else {
            "no table: ranges compared, listed or sent whole"
        }
    );
    if d == 1 {
        assert!(!dense, "one moved client took the table path");
    }
    if d == N / 2 {
        assert!(dense, "half the cache moved, and no table was used");
    }
}

#[tokio::test]
async fn a_server_restarted_from_its_data_dir_gets_every_client_that_moved_meanwhile() {
    let mut herd = Processes::new(&PAIR, "").with_admin();
    herd.config = herd.write_config("store.toml", &store_toml(&herd.dir.join("data")), &[]);
    herd.start_all().await;
    share(&herd, N).await;
    for (round, d) in MOVES.into_iter().enumerate() {
        let before = tables(&herd).await;
        // Ball stops (its records stay in its data dir) while D clients move at Alford.
        assert_eq!(herd.terminate("Ball").await, Some(0));
        let start = (round * 3_331) % N;
        let ids: Vec<usize> = (0..d).map(|k| (start + k * 7) % N).collect();
        let moved = report(herd.addr("Alford"), &ids, 10 + round as u32).await;
        herd.start("Ball").await;
        let took = same_everywhere(&herd, N).await;
        check(&herd, d, &moved, before, took).await;
    }
    assert!(
        !herd.log("Alford").contains("unexpected peer line"),
        "{}",
        herd.log("Alford")
    );
}

#[tokio::test]
async fn a_link_cut_while_both_sides_take_moves_heals_to_the_newest_of_each() {
    let mut herd = Processes::new(&PAIR, "").with_admin();
    let data = store_toml(&herd.dir.join("data"));
    herd.config = herd.write_config("store.toml", &data, &[]);
    let proxy = Proxy::start(herd.addr("Ball")).await;
    let via_proxy = herd.write_config("alford.toml", &data, &[("Ball", proxy.addr)]);
    herd.start("Ball").await;
    herd.start_with("Alford", &via_proxy).await;
    share(&herd, N).await;
    for (round, d) in MOVES.into_iter().enumerate() {
        let before = tables(&herd).await;
        proxy.cut();
        eventually("the link to go down", || async {
            (link(herd.admin("Alford"), "Ball").await["up"] == false).then_some(())
        })
        .await;
        // Half the moves at each side, on different clients.
        let start = (round * 4_447) % N;
        let ids: Vec<usize> = (0..d).map(|k| (start + k * 11) % N).collect();
        let (at_a, at_b) = ids.split_at(d.div_ceil(2));
        let time = 100 + round as u32;
        let mut moved = report(herd.addr("Alford"), at_a, time).await;
        moved.extend(report(herd.addr("Ball"), at_b, time).await);
        proxy.heal();
        let took = same_everywhere(&herd, N).await;
        check(&herd, d, &moved, before, took).await;
    }
}

/// BENCHMARKS.md: the catch-up table of `bench/sync.sh` again, through the real driver: two processes
/// over loopback holding `HERD_SYNC_CLIENTS` clients (1M by default); per case d clients move while
/// the link is cut (half at each side), and the link heals. Prints the time from the heal to equal
/// fingerprints, and the bytes and records that crossed. Run by `bench/sync.sh` in release.
#[tokio::test]
#[ignore = "a measurement: bench/sync.sh runs it"]
async fn catch_up_table_through_the_driver() {
    let n: usize = std::env::var("HERD_SYNC_CLIENTS")
        .ok()
        .and_then(|s| s.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let mut herd = Processes::new(&PAIR, "[log]\nlines = false\n").with_admin();
    let proxy = Proxy::start(herd.addr("Ball")).await;
    let via_proxy = herd.write_config(
        "alford.toml",
        "[log]\nlines = false\n",
        &[("Ball", proxy.addr)],
    );
    herd.start("Ball").await;
    herd.start_with("Alford", &via_proxy).await;
    share(&herd, n).await;
    println!("| N | d | time from heal to equal fingerprints | bytes A→B | bytes B→A | records A→B / B→A | tables |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (round, d) in [0, 1, 100, 10_000, n].into_iter().enumerate() {
        let before = link(herd.admin("Alford"), "Ball").await;
        proxy.cut();
        eventually("the link to go down", || async {
            (link(herd.admin("Alford"), "Ball").await["up"] == false).then_some(())
        })
        .await;
        let ids: Vec<usize> = (0..d).map(|k| (k * 7_919) % n).collect();
        let (at_a, at_b) = ids.split_at(d.div_ceil(2));
        let time = 100 + round as u32;
        report(herd.addr("Alford"), at_a, time).await;
        report(herd.addr("Ball"), at_b, time).await;
        let captures = proxy.captures().len();
        proxy.heal();
        let took = same_everywhere(&herd, n).await;
        let c = proxy.captures();
        let healed = c.get(captures).cloned().unwrap_or_default();
        let after = link(herd.admin("Alford"), "Ball").await;
        let delta = |path: &[&str]| {
            let get =
                |v: &serde_json::Value| path.iter().fold(v, |v, k| &v[*k]).as_u64().unwrap_or(0);
            get(&after) - get(&before)
        };
        println!(
            "| {n} | {d} | {took:.3} s | {} | {} | {} / {} | {} |",
            healed.up_bytes,
            healed.down_bytes,
            delta(&["catchup", "records", "sent"]),
            delta(&["catchup", "records", "received"]),
            delta(&["catchup", "tables", "sent"]) + delta(&["catchup", "tables", "received"]),
        );
    }
}
