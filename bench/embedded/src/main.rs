//! The server's journal against an embedded store (redb), on the work a server asks of its store:
//! appending a million records in batches of 16 (one pipelined batch of IAMATs), making batches
//! durable one by one from several connections at once (`fsync = "always"`), loading everything back
//! into a node at start, and the bytes each record takes on disk.
//!
//! ```text
//! cargo run --release -- DIR [RECORDS] [ALWAYS_BATCHES_PER_THREAD] [THREADS]
//! ```
//! Prints one line per measurement; `bench/embedded.sh` runs it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use herd_server::config::Fsync;
use herd_server::node::Node;
use herd_server::store::{format, Store, StoreConfig};
use redb::{Database, Durability, ReadableTable, TableDefinition};

/// Client id → its newest AT line: what the server would keep in an embedded store.
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// Records in one batch: one pipelined batch of 16 IAMATs.
const BATCH: usize = 16;

fn line(i: usize) -> Vec<u8> {
    format!(
        "AT Alford +0.000457229 client{i}.cs.ucla.edu +34.068930-118.445127 1795612826.{:09}",
        i % 1_000_000_000
    )
    .into_bytes()
}

/// The client id inside an AT line (the fourth field).
fn client(line: &[u8]) -> &[u8] {
    line.split(|&b| b == b' ').nth(3).unwrap_or_default()
}

fn du(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let d = dir.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("creating the bench folder");
    d
}

fn store_cfg(dir: &Path, fsync: Fsync) -> StoreConfig {
    StoreConfig {
        fsync,
        compact_bytes: u64::MAX,
        ..StoreConfig::new(dir, "Alford")
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// Loads a node from a journal folder, as the server does at start.
fn load_journal(dir: &Path) -> (usize, Duration) {
    let began = Instant::now();
    let mut node = Node::new("Alford", Vec::new()).with_journal();
    let (store, _) = Store::open(&store_cfg(dir, Fsync::No), |l| {
        !matches!(node.restore(l), herd_server::node::Restored::Invalid)
    })
    .expect("opening the journal");
    let took = began.elapsed();
    store.close();
    (node.len(), took)
}

/// Loads a node from a redb file: every value read back and restored.
fn load_redb(path: &Path) -> (usize, Duration) {
    let began = Instant::now();
    let mut node = Node::new("Alford", Vec::new()).with_journal();
    let db = Database::open(path).expect("opening redb");
    let txn = db.begin_read().expect("read transaction");
    let table = txn.open_table(RECORDS).expect("table");
    for entry in table.iter().expect("iterating") {
        let (_, v) = entry.expect("entry");
        node.restore(v.value());
    }
    (node.len(), began.elapsed())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .expect("usage: herd-bench-embedded DIR [RECORDS] [BATCHES] [THREADS]"),
    );
    let n: usize = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("RECORDS"));
    let per_thread: usize = args.next().map_or(200, |a| a.parse().expect("BATCHES"));
    let threads: usize = args.next().map_or(8, |a| a.parse().expect("THREADS"));
    let lines: Vec<Vec<u8>> = (0..n).map(line).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");

    // 1. A million appends in batches of 16, nothing waiting for the disk, one sync at the end.
    let jdir = fresh(&dir, "journal");
    let began = Instant::now();
    let (store, _) = Store::open(&store_cfg(&jdir, Fsync::Everysec), |_| true).expect("journal");
    let mut buf = Vec::new();
    for batch in lines.chunks(BATCH) {
        for l in batch {
            format::write_record(l, &mut buf);
        }
        store.append(&mut buf, batch.len() as u64);
    }
    store.close(); // writes and syncs everything
    let journal_append = began.elapsed();
    let journal_bytes = du(&jdir);
    drop(store);

    let rpath = fresh(&dir, "redb").join("herd.redb");
    let began = Instant::now();
    let db = Database::create(&rpath).expect("redb");
    for batch in lines.chunks(BATCH) {
        let mut txn = db.begin_write().expect("write transaction");
        txn.set_durability(Durability::None);
        {
            let mut t = txn.open_table(RECORDS).expect("table");
            for l in batch {
                t.insert(client(l), l.as_slice()).expect("insert");
            }
        }
        txn.commit().expect("commit");
    }
    let mut txn = db.begin_write().expect("write transaction");
    txn.set_durability(Durability::Immediate);
    txn.commit().expect("final commit");
    let redb_append = began.elapsed();
    drop(db);
    let redb_bytes = std::fs::metadata(&rpath).map_or(0, |m| m.len());
    println!(
        "append {n} records in batches of {BATCH}, one sync at the end: journal {} ({:.0} records/s), redb {} ({:.0} records/s)",
        secs(journal_append),
        n as f64 / journal_append.as_secs_f64(),
        secs(redb_append),
        n as f64 / redb_append.as_secs_f64()
    );
    println!(
        "bytes on disk per record: journal {:.1}, redb {:.1}",
        journal_bytes as f64 / n as f64,
        redb_bytes as f64 / n as f64
    );

    // 2. Load into a node, as at start.
    let (jn, jt) = load_journal(&jdir);
    let (rn, rt_) = load_redb(&rpath);
    println!(
        "load {n} records into a node: journal {} ({jn} clients), redb {} ({rn} clients)",
        secs(jt),
        secs(rt_)
    );

    // 3. `always`: THREADS connections each making BATCHES batches durable before the next.
    let ajdir = fresh(&dir, "journal-always");
    let (store, _) = Store::open(&store_cfg(&ajdir, Fsync::Always), |_| true).expect("journal");
    let began = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (store, lines, rt) = (&store, &lines, &rt);
            s.spawn(move || {
                let mut buf = Vec::new();
                for b in 0..per_thread {
                    let from = ((t * per_thread + b) * BATCH) % lines.len();
                    for l in &lines[from..(from + BATCH).min(lines.len())] {
                        format::write_record(l, &mut buf);
                    }
                    let ticket = store.append(&mut buf, BATCH as u64);
                    rt.block_on(store.durable(ticket)).expect("durable");
                }
            });
        }
    });
    let journal_always = began.elapsed();
    store.close();
    drop(store);

    let arpath = fresh(&dir, "redb-always").join("herd.redb");
    let db = Database::create(&arpath).expect("redb");
    let began = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (db, lines) = (&db, &lines);
            s.spawn(move || {
                for b in 0..per_thread {
                    let from = ((t * per_thread + b) * BATCH) % lines.len();
                    let mut txn = db.begin_write().expect("write transaction");
                    txn.set_durability(Durability::Immediate);
                    {
                        let mut table = txn.open_table(RECORDS).expect("table");
                        for l in &lines[from..(from + BATCH).min(lines.len())] {
                            table.insert(client(l), l.as_slice()).expect("insert");
                        }
                    }
                    txn.commit().expect("commit");
                }
            });
        }
    });
    let redb_always = began.elapsed();
    let batches = (threads * per_thread) as f64;
    println!(
        "fsync always: {threads} threads x {per_thread} batches of {BATCH}, each durable before the next: journal {} ({:.0} batches/s), redb {} ({:.0} batches/s)",
        secs(journal_always),
        batches / journal_always.as_secs_f64(),
        secs(redb_always),
        batches / redb_always.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
