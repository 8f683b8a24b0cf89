//! Durability with real processes: `kill -9` in a flood, of a whole herd and during compaction; torn
//! and damaged files; a disk that fills; a start that must refuse and change nothing; a folder's
//! identity, lock and modes; a stderr nobody reads.

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
    said(&herd, "Alford", "loaded").await;
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
        said(&herd, name, &format!("{name} loaded 10 clients")).await;
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
    said(
        &herd,
        "Alford",
        &format!("cut off a torn last record (11 bytes at byte offset {whole})"),
    )
    .await;
    assert_eq!(std::fs::metadata(&path).unwrap().len(), whole as u64, "cut");
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
    // still beside the new one; and only once something has been acknowledged, since a compaction
    // may begin with the first records, before the first answer is back.
    let dir = data.join("Alford");
    // Polled every millisecond: a compaction of 5000 clients takes a few.
    let began = std::time::Instant::now();
    let mid = loop {
        let names: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let journals = names.iter().filter(|n| n.starts_with("journal.")).count();
        let compacting = names.iter().any(|n| n.ends_with(".tmp")) || journals > 1;
        if compacting && !acked.lock().unwrap().is_empty() {
            break names;
        }
        assert!(
            began.elapsed() < DEADLINE,
            "timed out waiting for a compaction in progress"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    };
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
    // stderr is written by a thread of its own: the message comes a moment after the failure.
    eventually("stderr to say persistence is failing", || async {
        herd.stderr("Alford")
            .contains("persistence is failing")
            .then_some(())
    })
    .await;
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

/// Waits until server `name` has said `text` on stderr (written by a thread of its own, a moment
/// after the event); returns all it said.
async fn said(herd: &Processes, name: &str, text: &str) -> String {
    eventually(&format!("{name} to say {text:?}"), || async {
        let err = herd.stderr(name);
        err.contains(text).then_some(err)
    })
    .await
}

/// Every file of `dir` and its bytes, to tell that a refused start changed nothing.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect()
}

/// Runs `herd-server serve NAME` with `config` and `args` to its end (a start that must be refused),
/// within the test deadline; returns its exit code and stderr.
async fn refused_start(
    herd: &Processes,
    name: &str,
    config: &Path,
    args: &[&str],
) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(server_binary())
        .args(["serve", name, "--config"])
        .arg(config)
        .arg("--log-dir")
        .arg(herd.dir.join("logs"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(DEADLINE, out)
        .await
        .expect("a refused start ends at once")
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Stores `n` clients `{prefix}{i}` (client time `time`) on one connection; returns their AT lines.
async fn store_many(addr: SocketAddr, prefix: &str, n: usize, time: u64) -> Vec<String> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (r, mut w) = stream.into_split();
    let mut out = String::new();
    for i in 0..n {
        out.push_str(&format!("IAMAT {prefix}{i} +34.068930-118.445127 {time}\n"));
    }
    let writer = tokio::spawn(async move {
        w.write_all(out.as_bytes()).await.expect("write");
        w
    });
    let mut r = BufReader::new(r);
    let mut lines = Vec::new();
    for _ in 0..n {
        let mut line = String::new();
        tokio::time::timeout(DEADLINE, r.read_line(&mut line))
            .await
            .expect("reply in time")
            .expect("read");
        assert!(line.starts_with("AT "), "{line}");
        lines.push(line.trim_end().to_owned());
    }
    drop(writer.await);
    lines
}

/// How many of `lines` (AT lines) `addr` holds exactly.
async fn held_count(addr: SocketAddr, lines: &[String]) -> usize {
    let clients: Vec<String> = lines
        .iter()
        .map(|l| l.split(' ').nth(3).unwrap().to_owned())
        .collect();
    let held = holds(addr, &clients).await;
    lines
        .iter()
        .zip(&clients)
        .filter(|(l, c)| &held[*c] == *l)
        .count()
}

/// Waits until `dir` has a file named `name`.
async fn appears(dir: &Path, name: &str) {
    let path = dir.join(name);
    eventually(&format!("{} to appear", path.display()), || {
        let path = path.clone();
        async move { path.exists().then_some(()) }
    })
    .await;
}

/// Alford alone with a store that compacts as soon as its journals hold twice the clients: 500
/// clients stored, then all of them again (a compaction makes `snapshot.2` and `journal.2`), then
/// 200 more (in `journal.2` only). Stopped cleanly; returns the herd and the newest AT lines.
async fn compacted_store() -> (Processes, Vec<String>) {
    let mut herd = Processes::new(&[("Alford", &[])], "");
    let data = data_dir(&herd);
    herd.config = herd.write_config(
        "store.toml",
        &store_toml(&data, "always", "compact_bytes = 1"),
        &[],
    );
    herd.start("Alford").await;
    let addr = herd.addr("Alford");
    store_many(addr, "s", 500, 1).await;
    let mut lines = store_many(addr, "s", 500, 2).await;
    let dir = data.join("Alford");
    appears(&dir, "snapshot.2").await;
    eventually("journal.1 deleted after the compaction", || {
        let j = dir.join("journal.1");
        async move { (!j.exists()).then_some(()) }
    })
    .await;
    lines.extend(store_many(addr, "t", 200, 3).await);
    assert_eq!(herd.terminate("Alford").await, Some(0));
    (herd, lines)
}

#[tokio::test]
async fn a_deleted_newest_snapshot_is_refused_naming_both_files() {
    let (herd, lines) = compacted_store().await;
    let dir = data_dir(&herd).join("Alford");
    std::fs::remove_file(dir.join("snapshot.2")).unwrap();
    let before = files(&dir);
    let (code, err) = refused_start(&herd, "Alford", &herd.config, &[]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("journal.2 needs") && err.contains("snapshot.2, which is missing"),
        "{err}"
    );
    assert_eq!(files(&dir), before, "a refused start changes nothing");
    assert_eq!(lines.len(), 700);
}

#[tokio::test]
async fn a_half_written_or_empty_newer_snapshot_changes_nothing_and_repair_keeps_every_record() {
    for half in [false, true] {
        let (mut herd, lines) = compacted_store().await;
        let dir = data_dir(&herd).join("Alford");
        let good = std::fs::read(dir.join("snapshot.2")).unwrap();
        let newer = if half {
            &good[..good.len() / 2]
        } else {
            &[][..]
        };
        std::fs::write(dir.join("snapshot.3"), newer).unwrap();
        let before = files(&dir);
        let (code, err) = refused_start(&herd, "Alford", &herd.config, &[]).await;
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains("snapshot.3") && err.contains("--repair"),
            "{err}"
        );
        assert_eq!(
            files(&dir),
            before,
            "half {half}: a refused start changes nothing"
        );
        herd.args = vec!["--repair".into()];
        herd.start("Alford").await;
        let addr = herd.addr("Alford");
        assert_eq!(held_count(addr, &lines).await, 700, "half {half}");
        assert!(dir.join("snapshot.3.damaged").exists(), "set aside");
        said(&herd, "Alford", "repair:").await;
    }
}

#[tokio::test]
async fn a_data_dir_renamed_to_another_server_is_refused_unchanged() {
    let mut herd = Processes::new(&[("Alford", &["Ball"]), ("Ball", &["Alford"])], "");
    let data = data_dir(&herd);
    herd.config = herd.write_config("store.toml", &store_toml(&data, "always", ""), &[]);
    herd.start("Alford").await;
    iamat(herd.addr("Alford"), "r1", "1.5").await;
    assert_eq!(herd.terminate("Alford").await, Some(0));
    std::fs::rename(data.join("Alford"), data.join("Ball")).unwrap();
    let before = files(&data.join("Ball"));
    let (code, err) = refused_start(&herd, "Ball", &herd.config, &[]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("holds the records of server \"Alford\"") && err.contains("not of \"Ball\""),
        "{err}"
    );
    assert_eq!(files(&data.join("Ball")), before, "nothing changed");
}

/// A config with Alford alone (its neighbour removed), keeping records in `data`.
fn alone_config(herd: &Processes, data: &Path, extra: &str) -> PathBuf {
    let text = format!(
        "{}\n[[server]]\nname = \"Alford\"\nlisten = \"{}\"\nneighbors = []\n",
        store_toml(data, "always", extra),
        herd.addr("Alford")
    );
    let path = herd.dir.join("alone.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn records_of_a_removed_neighbour_are_kept_through_compaction_and_forget_drops_them() {
    let mut herd = Processes::new(&[("Alford", &["Ball"]), ("Ball", &["Alford"])], "");
    let data = data_dir(&herd);
    herd.config = herd.write_config("store.toml", &store_toml(&data, "always", ""), &[]);
    herd.start_all().await;
    let from_ball = store_many(herd.addr("Ball"), "b", 300, 1).await;
    converge(&herd, &["Alford"], "b299", &from_ball[299]).await;
    eventually("Alford to hold Ball's 300 records", || async {
        (held_count(herd.addr("Alford"), &from_ball).await == 300).then_some(())
    })
    .await;
    assert_eq!(herd.terminate("Alford").await, Some(0));
    assert_eq!(herd.terminate("Ball").await, Some(0));
    // Ball removed from the config; compactions run as soon as the journals allow.
    let alone = alone_config(&herd, &data, "compact_bytes = 1");
    herd.start_with("Alford", &alone).await;
    let addr = herd.addr("Alford");
    said(
        &herd,
        "Alford",
        "kept 300 stored records naming servers no longer in the config: Ball (300)",
    )
    .await;
    for t in 1..=6 {
        store_many(addr, "a", 100, t).await;
    }
    appears(&data.join("Alford"), "snapshot.2").await;
    assert_eq!(held_count(addr, &from_ball).await, 300, "served meanwhile");
    assert_eq!(herd.terminate("Alford").await, Some(0));
    // Ball back in the config: every record of Ball's is there.
    herd.start("Alford").await;
    assert_eq!(held_count(addr, &from_ball).await, 300, "all back");
    assert_eq!(herd.terminate("Alford").await, Some(0));
    // Dropped only when asked, said with counts, and for good.
    herd.args = vec!["--forget".into(), "Ball".into()];
    herd.start_with("Alford", &alone).await;
    said(&herd, "Alford", "forgot 300 stored records").await;
    assert_eq!(held_count(addr, &from_ball).await, 0);
    assert_eq!(herd.terminate("Alford").await, Some(0));
    herd.args.clear();
    herd.start("Alford").await;
    assert_eq!(held_count(addr, &from_ball).await, 0, "forgotten for good");
}

#[tokio::test]
async fn one_flipped_byte_is_refused_then_repair_keeps_999_of_1000() {
    let mut herd = Processes::new(&[("Alford", &[])], "");
    let data = data_dir(&herd);
    herd.config = herd.write_config("store.toml", &store_toml(&data, "always", ""), &[]);
    herd.start("Alford").await;
    let addr = herd.addr("Alford");
    let lines = store_many(addr, "f", 1000, 1).await;
    assert_eq!(herd.terminate("Alford").await, Some(0));
    let path = journal(&data, "Alford");
    let mut bytes = std::fs::read(&path).unwrap();
    // A flipped byte in the payload of record 500.
    let at: usize = 16 + lines[..500].iter().map(|l| 8 + l.len()).sum::<usize>();
    bytes[at + 8 + 20] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let (code, err) = refused_start(&herd, "Alford", &herd.config, &[]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("is damaged at byte offset {at}")),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "refused, untouched");
    herd.args = vec!["--repair".into()];
    herd.start("Alford").await;
    let err = said(&herd, "Alford", "kept 999 records, dropped 1 damaged").await;
    assert!(
        err.contains(&format!(
            "dropped 1 record ({} bytes at byte offset {at}",
            8 + lines[500].len()
        )),
        "{err}"
    );
    assert_eq!(held_count(addr, &lines).await, 999);
    assert_eq!(herd.terminate("Alford").await, Some(0));
    // Repaired for good: a plain start loads the 999.
    herd.args.clear();
    herd.start("Alford").await;
    assert_eq!(held_count(addr, &lines).await, 999);
    assert!(data.join("Alford").join("journal.1.damaged").exists());
}

/// Sets the file-size limit of process `pid` (`0` or `unlimited`), as a disk that fills and frees.
fn file_size_limit(pid: u32, limit: &str) {
    let ok = std::process::Command::new("prlimit")
        // The soft limit only: raising a hard limit again takes a privilege containers lack.
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--fsize={limit}:unlimited"),
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "prlimit --fsize={limit} on {pid}");
}

#[tokio::test]
async fn a_full_disk_under_everysec_stops_acknowledgements_within_a_second_and_loses_nothing() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: prlimit (util-linux) is missing");
        return;
    }
    let mut herd = Processes::new(&[("Alford", &[])], "").with_admin();
    let data = data_dir(&herd);
    herd.config = herd.write_config("store.toml", &store_toml(&data, "everysec", ""), &[]);
    herd.start("Alford").await;
    let addr = herd.addr("Alford");
    let acked: Acked = Arc::default();
    flood(addr, 1, 50, 20, u64::MAX, acked.clone()).await;
    // The disk fills: no write to any file can grow it.
    let pid = herd.pid("Alford").unwrap();
    file_size_limit(pid, "0");
    let full = std::time::Instant::now();
    // A flood goes on until a batch is not answered.
    flood(addr, 1, 50, 1_000_000, u64::MAX, acked.clone()).await;
    let stopped = full.elapsed();
    assert!(
        stopped < std::time::Duration::from_millis(1800),
        "acknowledgements went on for {stopped:?} after the disk filled"
    );
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"IAMAT late +1+1 1\n").await.unwrap();
    let mut reply = String::new();
    let _ = tokio::time::timeout(DEADLINE, BufReader::new(&mut s).read_line(&mut reply)).await;
    assert_eq!(reply, "", "no acknowledgement while the disk is full");
    // stderr is a file here, which cannot grow either: /status says why.
    let status = herd_tests::admin::get(herd.admin("Alford"), "/status").await;
    assert!(
        status.contains("\"acknowledging\":false") && status.contains("File too large"),
        "{status}"
    );
    // Room again: what was acknowledged is written, and acknowledgements resume.
    file_size_limit(pid, "unlimited");
    eventually("persistence to work again", || async {
        herd.stderr("Alford")
            .contains("persistence works again")
            .then_some(())
    })
    .await;
    let more = iamat(addr, "after", "5.5").await;
    // Under everysec a record reaches the kernel within the writer's pace after its reply.
    on_disk(data.join("Alford"), vec![more.clone()]).await;
    acked
        .lock()
        .unwrap()
        .entry("after".into())
        .or_default()
        .push(more);
    herd.kill("Alford").await;
    herd.start("Alford").await;
    let n = assert_all_held(addr, &acked).await;
    assert!(n >= 1000, "{n}");
}

/// Makes a folder immutable (`chattr +i`) for as long as it lives.
struct Immutable(PathBuf);

impl Immutable {
    fn set(dir: &Path) -> Option<Immutable> {
        let ok = std::process::Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Immutable(dir.to_owned()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_compaction_that_cannot_create_its_files_leaves_the_journal_working() {
    let mut herd = Processes::new(&[("Alford", &[])], "");
    let data = data_dir(&herd);
    herd.config = herd.write_config(
        "store.toml",
        &store_toml(&data, "always", "compact_bytes = 1"),
        &[],
    );
    herd.start("Alford").await;
    let addr = herd.addr("Alford");
    let mut lines = store_many(addr, "i", 300, 1).await;
    appears(&data.join("Alford"), "journal.1").await;
    let Some(guard) = Immutable::set(&data.join("Alford")) else {
        eprintln!("skipped: chattr +i is not allowed here");
        return;
    };
    // Every update makes a compaction due; none can create its journal.
    for t in 2..=4 {
        lines = store_many(addr, "i", 300, t).await;
    }
    said(&herd, "Alford", "store compaction failed").await;
    lines.extend(store_many(addr, "j", 300, 5).await);
    drop(guard);
    herd.kill("Alford").await;
    herd.start("Alford").await;
    assert_eq!(held_count(addr, &lines).await, 600);
    assert!(!herd.stderr("Alford").contains("persistence is failing"));
}

#[tokio::test]
async fn a_journal_linked_to_dev_full_is_refused_at_its_header() {
    let herd = Processes::new(&[("Alford", &[])], "");
    let data = data_dir(&herd);
    let config = herd.write_config("store.toml", &store_toml(&data, "always", ""), &[]);
    std::fs::create_dir_all(data.join("Alford")).unwrap();
    std::os::unix::fs::symlink("/dev/full", data.join("Alford").join("journal.1")).unwrap();
    let (code, err) = refused_start(&herd, "Alford", &config, &[]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("a device, not a regular file"), "{err}");
}

#[tokio::test]
async fn a_second_server_on_a_folder_in_use_is_refused_even_without_its_lock_file() {
    let mut herd = Processes::new(&[("Alford", &[])], "");
    let data = data_dir(&herd);
    herd.config = herd.write_config("store.toml", &store_toml(&data, "always", ""), &[]);
    herd.start("Alford").await;
    let _ = std::fs::remove_file(data.join("Alford").join("lock"));
    // The same data on another port.
    let other = format!(
        "{}\n[[server]]\nname = \"Alford\"\nlisten = \"127.0.0.1:{}\"\nneighbors = []\n",
        store_toml(&data, "always", ""),
        herd_tests::free_port()
    );
    let path = herd.dir.join("other.toml");
    std::fs::write(&path, other).unwrap();
    let (code, err) = refused_start(&herd, "Alford", &path, &[]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("in use by another running server"), "{err}");
    assert!(herd.running("Alford"));
}

#[tokio::test]
async fn folders_are_0700_and_files_0600_under_umask_022() {
    use std::os::unix::fs::PermissionsExt as _;
    let mut herd = Processes::new(&[("Alford", &[])], "");
    let data = data_dir(&herd);
    herd.config = herd.write_config(
        "store.toml",
        &store_toml(&data, "always", "compact_bytes = 1"),
        &[],
    );
    herd.start_wrapped("Alford", &["bash", "-c", "umask 022 && exec \"$@\"", "-"])
        .await;
    let addr = herd.addr("Alford");
    store_many(addr, "m", 100, 1).await;
    store_many(addr, "m", 100, 2).await;
    let dir = data.join("Alford");
    appears(&dir, "snapshot.2").await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "{}", data.display());
    assert_eq!(mode(&dir), 0o700);
    for name in ["identity", "journal.2", "snapshot.2"] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }
}

#[tokio::test]
async fn a_stderr_nobody_reads_stops_neither_service_nor_sigterm() {
    let herd = Processes::new(&[("Alford", &[])], "");
    let data = data_dir(&herd);
    let config = herd.write_config(
        "store.toml",
        &format!(
            "{}\n[limits]\nmax_line = 64\n",
            store_toml(&data, "everysec", "")
        ),
        &[],
    );
    // stderr is a pipe this test never reads: it fills after a few hundred warnings.
    let mut child = tokio::process::Command::new(server_binary())
        .args(["serve", "Alford", "--config"])
        .arg(&config)
        .arg("--log-dir")
        .arg(herd.dir.join("logs"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let _unread = child.stderr.take();
    let addr = herd.addr("Alford");
    eventually("Alford to listen", || async move {
        TcpStream::connect(addr).await.ok().map(|_| ())
    })
    .await;
    // Each over-long line is a warning; 2,000 of them, 50 connections at a time.
    let long = format!("IAMAT {} +1+1 1\n", "x".repeat(200));
    for _ in 0..40 {
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let long = long.clone();
            tasks.push(tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let _ = s.write_all(long.as_bytes()).await;
                let mut reply = String::new();
                let _ =
                    tokio::time::timeout(DEADLINE, BufReader::new(&mut s).read_line(&mut reply))
                        .await;
                assert!(reply.starts_with("? "), "{reply}");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    iamat(addr, "still", "1.5").await;
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("SIGTERM heard")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
