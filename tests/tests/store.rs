//! Durability with real processes: `kill -9` in a flood, of a whole herd and during compaction; torn
//! and damaged files; a disk that fills.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use herd_tests::herd::{converge, iamat, server_binary, Processes, DEFAULT_TOPOLOGY, NAMES};
use herd_tests::{eventually, DEADLINE};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A `[store]` table keeping data in `dir` with `fsync`, and quiet logs.
fn store_toml(dir: &Path, fsync: &str, extra: &str) -> String {
    format!(
        "[store]\ndir = {:?}\nfsync = \"{fsync}\"\n{extra}\n[log]\nlines = false\n",
        dir.display().to_string()
    )
}

/// Acknowledged AT lines, by client.
type Acked = Arc<Mutex<HashMap<String, Vec<String>>>>;

/// The client time (last field) of an AT line.
fn client_time(line: &str) -> f64 {
    line.rsplit(' ')
        .next()
        .unwrap_or("")
        .parse()
        .unwrap_or(f64::NAN)
}

/// Floods `addr` from `conns` connections: each writes a batch of `batch` IAMATs at once, reads their
/// replies, and goes on, for at most `batches` batches or until the server goes away. Client `n % ids`
/// gets client time `n + 1` (`n` counts every IAMAT sent). Every reply goes into `acked`.
async fn flood(
    addr: SocketAddr,
    conns: usize,
    batch: usize,
    batches: usize,
    ids: u64,
    acked: Acked,
) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (next, acked) = (next.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(stream) = TcpStream::connect(addr).await else {
                return;
            };
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            let mut line = String::new();
            for _ in 0..batches {
                let mut out = String::new();
                for _ in 0..batch {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    out.push_str(&format!(
                        "IAMAT c{} +34.068930-118.445127 {}\n",
                        n % ids,
                        n + 1
                    ));
                }
                if w.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
                for _ in 0..batch {
                    line.clear();
                    match tokio::time::timeout(DEADLINE, r.read_line(&mut line)).await {
                        Ok(Ok(n)) if n > 0 && line.starts_with("AT ") => {
                            let at = line.trim_end().to_owned();
                            let client = at.split(' ').nth(3).unwrap_or("").to_owned();
                            acked.lock().unwrap().entry(client).or_default().push(at);
                        }
                        _ => return,
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// What `addr` holds for each of `clients`, asked on one connection with stale IAMATs (client time 0),
/// which a server answers with the record it holds.
async fn holds(addr: SocketAddr, clients: &[String]) -> BTreeMap<String, String> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut out = String::new();
    for c in clients {
        out.push_str(&format!("IAMAT {c} +1+1 0\n"));
    }
    let writer = tokio::spawn(async move {
        w.write_all(out.as_bytes()).await.expect("write");
        w
    });
    let mut held = BTreeMap::new();
    for c in clients {
        let mut line = String::new();
        tokio::time::timeout(DEADLINE, r.read_line(&mut line))
            .await
            .expect("reply in time")
            .expect("read");
        held.insert(c.clone(), line.trim_end().to_owned());
    }
    drop(writer.await);
    held
}

/// Every acknowledged record is held, or a newer one of its client.
async fn assert_all_held(addr: SocketAddr, acked: &Acked) -> usize {
    let acked = acked.lock().unwrap().clone();
    let clients: Vec<String> = acked.keys().cloned().collect();
    let held = holds(addr, &clients).await;
    let mut n = 0;
    for (client, lines) in &acked {
        let newest = lines
            .iter()
            .max_by(|a, b| client_time(a).total_cmp(&client_time(b)))
            .unwrap();
        let h = &held[client];
        assert!(
            h == newest || client_time(h) > client_time(newest),
            "acknowledged {newest:?} but the restarted server holds {h:?}"
        );
        n += lines.len();
    }
    n
}

fn data_dir(herd: &Processes) -> PathBuf {
    herd.dir.join("data")
}

#[tokio::test]
async fn always_kill9_mid_flood_loses_no_acknowledged_record() {
    let mut herd = Processes::new(&[("Alford", &[])], "");
    let data = data_dir(&herd);
    herd.config = herd.write_config("store.toml", &store_toml(&data, "always", ""), &[]);
    herd.start("Alford").await;
    let addr = herd.addr("Alford");
    let acked: Acked = Arc::default();
    // Unique ids: every acknowledged record must be answerable exactly.
    let f = tokio::spawn(flood(addr, 4, 100, 500, u64::MAX, acked.clone()));
    let count = || acked.lock().unwrap().len();
    eventually("2000 acknowledged records", || async {
        (count() >= 2000).then_some(())
    })
    .await;
    herd.kill("Alford").await;
    f.await.unwrap();
    let before = count();
    herd.start("Alford").await;
    let n = assert_all_held(addr, &acked).await;
    assert!(n >= before && n >= 2000);
    assert!(
        herd.stderr("Alford").contains("loaded"),
        "{}",
        herd.stderr("Alford")
    );
}

/// Waits until the files of `dir` hold every one of `lines` (the writer thread has written them).
async fn on_disk(dir: PathBuf, lines: Vec<String>) {
    eventually(&format!("{lines:?} on disk in {}", dir.display()), || {
        let (dir, lines) = (dir.clone(), lines.clone());
        async move {
            let mut all = Vec::new();
            for e in std::fs::read_dir(&dir).ok()?.flatten() {
                all.extend(std::fs::read(e.path()).unwrap_or_default());
            }
            let has = |l: &String| all.windows(l.len()).any(|w| w == l.as_bytes());
            lines.iter().all(has).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_whole_herd_killed_comes_back_with_every_record_exactly() {
    let mut herd = Processes::new(&DEFAULT_TOPOLOGY, "");
    let data = data_dir(&herd);
    herd.config = herd.write_config("store.toml", &store_toml(&data, "everysec", ""), &[]);
    herd.start_all().await;
    let mut records = Vec::new();
    for i in 0..10 {
        let name = NAMES[i % NAMES.len()];
        let at = iamat(
            herd.addr(name),
            &format!("k{i}"),
            &format!("{}.5", 1000 + i),
        )
        .await;
        records.push((format!("k{i}"), at));
    }
    for (client, at) in &records {
        converge(&herd, &NAMES, client, at).await;
    }
    let lines: Vec<String> = records.iter().map(|(_, at)| at.clone()).collect();
    for name in NAMES {
        // Written (not necessarily synced): a kill -9 leaves what the kernel has.
        on_disk(data.join(name), lines.clone()).await;
    }
    for name in NAMES {
        herd.kill(name).await;
    }
    herd.start_all().await;
    let clients: Vec<String> = records.iter().map(|(c, _)| c.clone()).collect();
    for name in NAMES {
        // Asked at once: each server answers from what it loaded from its own disk.
        let held = holds(herd.addr(name), &clients).await;
        for (client, at) in &records {
            assert_eq!(&held[client], at, "{name}");
        }
        let err = herd.stderr(name);
        assert!(err.contains(&format!("{name} loaded 10 clients")), "{err}");
    }
}

/// Under `no` (as under `everysec`, above) replies do not wait for the disk, but the writer hands
/// the records to the kernel within a few milliseconds, idle server or not: a `kill -9` then loses
/// nothing it acknowledged.
#[tokio::test]
async fn under_no_acknowledged_records_reach_the_kernel_and_survive_kill9() {
    let mut herd = Processes::new(&[("Alford", &[])], "");
    let data = data_dir(&herd);
    herd.config = herd.write_config("store.toml", &store_toml(&data, "no", ""), &[]);
    herd.start("Alford").await;
    let addr = herd.addr("Alford");
    let mut lines = Vec::new();
    for i in 0..3 {
        lines.push(iamat(addr, &format!("n{i}"), &format!("{i}.5")).await);
        // Each one alone on an idle server: the writer must come for it without a second append.
        on_disk(data.join("Alford"), lines.clone()).await;
    }
    herd.kill("Alford").await;
    herd.start("Alford").await;
    let held = holds(addr, &["n0".into(), "n1".into(), "n2".into()]).await;
    assert_eq!(held.values().cloned().collect::<Vec<_>>(), lines);
}

/// The journal file of server `name` (the only one: no compaction ran).
fn journal(data: &Path, name: &str) -> PathBuf {
    data.join(name).join("journal.1")
}

#[tokio::test]
async fn a_torn_tail_is_cut_off_and_logged() {
    let mut herd = Processes::new(&[("Alford", &[])], "");
    let data = data_dir(&herd);
    herd.config = herd.write_config("store.toml", &store_toml(&data, "always", ""), &[]);
    herd.start("Alford").await;
    let addr = herd.addr("Alford");
    let a = iamat(addr, "t1", "1.5").await;
    let b = iamat(addr, "t2", "2.5").await;
    assert_eq!(herd.terminate("Alford").await, Some(0));
    let path = journal(&data, "Alford");
    let mut bytes = std::fs::read(&path).unwrap();
    let whole = bytes.len();
    // Half of a record, as a crash in the middle of a write leaves it.
    bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4, b'A', b'T', b' ']);
    std::fs::write(&path, &bytes).unwrap();
    herd.start("Alford").await;
    let held = holds(addr, &["t1".into(), "t2".into()]).await;
    assert_eq!(held.values().cloned().collect::<Vec<_>>(), [a, b]);
    let err = herd.stderr("Alford");
    assert!(
        err.contains(&format!(
            "cut off a torn last record (11 bytes at byte offset {whole})"
        )),
        "{err}"
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), whole as u64, "cut");
}

#[tokio::test]
async fn a_damaged_journal_is_refused_then_repaired() {
    let mut herd = Processes::new(&[("Alford", &[])], "");
    let data = data_dir(&herd);
    herd.config = herd.write_config("store.toml", &store_toml(&data, "always", ""), &[]);
    herd.start("Alford").await;
    let addr = herd.addr("Alford");
    let mut lines = Vec::new();
    for i in 0..3 {
        lines.push(iamat(addr, &format!("d{i}"), &format!("{i}.5")).await);
    }
    assert_eq!(herd.terminate("Alford").await, Some(0));
    // A flipped byte inside the second record.
    let path = journal(&data, "Alford");
    let mut bytes = std::fs::read(&path).unwrap();
    let second = 16 + 8 + lines[0].len();
    bytes[second + 8 + 5] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let out = std::process::Command::new(server_binary())
        .args(["serve", "Alford", "--config"])
        .arg(&herd.config)
        .arg("--log-dir")
        .arg(herd.dir.join("logs"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{} is damaged at byte offset {second}",
            path.display()
        )),
        "{err}"
    );
    assert!(err.contains("--repair"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "refused, untouched");

    herd.args = vec!["--repair".into()];
    herd.start("Alford").await;
    let held = holds(addr, &["d0".into()]).await;
    assert_eq!(held["d0"], lines[0]);
    let err = herd.stderr("Alford");
    assert!(
        err.contains("repair:") && err.contains(&format!("offset {second}")),
        "{err}"
    );
    // The records after the damage are gone; the file is whole again.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), second as u64);
}

#[tokio::test]
async fn kill9_during_compaction_loses_nothing_acknowledged() {
    let mut herd = Processes::new(&[("Alford", &[])], "");
    let data = data_dir(&herd);
    // Compaction whenever the journals hold twice the clients' count: constantly, under a flood
    // that updates 5000 clients over and over.
    herd.config = herd.write_config(
        "store.toml",
        &store_toml(&data, "always", "compact_bytes = 1"),
        &[],
    );
    herd.start("Alford").await;
    let addr = herd.addr("Alford");
    let acked: Acked = Arc::default();
    let f = tokio::spawn(flood(addr, 4, 100, 2000, 5000, acked.clone()));
    // Kill when a compaction is half done: a snapshot being written, or the journal it replaces
    // still beside the new one.
    let dir = data.join("Alford");
    let mid = eventually("a compaction in progress", || {
        let dir = dir.clone();
        async move {
            let names: Vec<String> = std::fs::read_dir(&dir)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect();
            let journals = names.iter().filter(|n| n.starts_with("journal.")).count();
            let mid = names.iter().any(|n| n.ends_with(".tmp")) || journals > 1;
            mid.then_some(names)
        }
    })
    .await;
    herd.kill("Alford").await;
    f.await.unwrap();
    herd.start("Alford").await;
    let n = assert_all_held(addr, &acked).await;
    assert!(n > 0, "killed at {mid:?} before anything was acknowledged");
}

/// Alford alone, keeping its records with `fsync`, on files that may grow to 32 KiB (bash counts
/// `ulimit -f` in KiB): the journal fills after ~400 records.
async fn on_a_small_disk(fsync: &str) -> Processes {
    let mut herd = Processes::new(&[("Alford", &[])], "");
    let data = data_dir(&herd);
    herd.config = herd.write_config("store.toml", &store_toml(&data, fsync, ""), &[]);
    herd.start_wrapped(
        "Alford",
        &["bash", "-c", "ulimit -f 32 && exec \"$@\"", "-"],
    )
    .await;
    herd
}

#[tokio::test]
async fn a_full_disk_under_always_acknowledges_nothing_it_cannot_keep() {
    let mut herd = on_a_small_disk("always").await;
    let addr = herd.addr("Alford");
    let acked: Acked = Arc::default();
    flood(addr, 1, 50, 40, u64::MAX, acked.clone()).await;
    let n = acked.lock().unwrap().len();
    assert!(
        n < 2000,
        "the flood ended early: a batch went unanswered ({n} acknowledged)"
    );
    let err = herd.stderr("Alford");
    assert!(err.contains("persistence is failing"), "{err}");
    assert!(herd.running("Alford"), "never a crash");
    // A new connection's IAMAT is not acknowledged either while the disk is full.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"IAMAT late +1+1 1\n").await.unwrap();
    let mut reply = String::new();
    let _ = tokio::time::timeout(DEADLINE, BufReader::new(&mut s).read_line(&mut reply)).await;
    assert_eq!(reply, "", "no acknowledgement without the disk");
    // Restarted without the limit: the files load (never corrupt) with everything acknowledged.
    herd.kill("Alford").await;
    herd.start("Alford").await;
    assert_all_held(addr, &acked).await;
}

#[tokio::test]
async fn a_full_disk_under_everysec_keeps_serving_and_says_so() {
    let mut herd = on_a_small_disk("everysec").await;
    let addr = herd.addr("Alford");
    let acked: Acked = Arc::default();
    flood(addr, 1, 50, 40, u64::MAX, acked.clone()).await;
    assert_eq!(acked.lock().unwrap().len(), 2000, "every IAMAT answered");
    // The writer hands records to the kernel on its own pace, after the replies: wait for its failure.
    eventually("stderr says persistence is failing", || async {
        herd.stderr("Alford")
            .contains("persistence is failing")
            .then_some(())
    })
    .await;
    let err = herd.stderr("Alford");
    assert!(err.contains("serving from memory"), "{err}");
    assert!(herd.running("Alford"), "never a crash: {err}");
    herd.kill("Alford").await;
    // The files load cleanly: what failed was cut back, never left half-written. The port is bound
    // before the load ends: wait for the line that says it loaded.
    herd.start("Alford").await;
    eventually(
        "the restarted Alford to say it loaded its files",
        || async {
            herd.stderr("Alford")
                .contains("Alford loaded")
                .then_some(())
        },
    )
    .await;
    assert!(herd.running("Alford"), "{}", herd.stderr("Alford"));
}
