//! The store's upkeep: loading it at start-up, before anything is served, and compacting it while
//! the server runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::driver::node_handle::NodeHandle;
use crate::log::SUMMARY;
use crate::node::{Node, Restored};
use crate::say;
use crate::store::{LoadReport, Store, StoreConfig};

/// The node being filled from the store, and the records of servers outside the herd (kept) or
/// forgotten (dropped), by server: the store's [`Loader`](crate::store::Loader) at start.
struct Restoring {
    node: Node,
    members: Vec<Vec<u8>>,
    forget: Vec<Vec<u8>>,
    foreign: BTreeMap<Vec<u8>, u64>,
    forgotten: BTreeMap<Vec<u8>, u64>,
}
impl crate::store::Loader for Restoring {
    type Parsed = crate::node::cache::Prepared;
    type Parser = crate::node::cache::Preparer;
    fn parser(&self) -> Self::Parser {
        self.node.preparer()
    }
    fn parse(p: &Self::Parser, line: &[u8]) -> Option<Self::Parsed> {
        p.prepare_line(line)
    }
    fn reserve(&mut self, records: usize) {
        self.node.reserve(records);
    }
    fn take(&mut self, _: &[u8], prepared: Self::Parsed) -> bool {
        let server = prepared.entry().server();
        if self.forget.iter().any(|f| f == server) {
            *self.forgotten.entry(server.to_vec()).or_default() += 1;
            return true;
        }
        if !self.members.iter().any(|m| m == server) {
            *self.foreign.entry(server.to_vec()).or_default() += 1;
        }
        !matches!(self.node.restore_prepared(prepared), Restored::Invalid)
    }
}

/// Opens the store of `cfg` and feeds what it holds to `node` (with its journal turned on), before
/// the node is told the herd's `members`: a record naming a server that left the config is kept —
/// served, flooded and compacted like any other — and said with counts, since a config edited by
/// mistake must not cost records. Only the servers `cfg.forget` names have their records dropped,
/// and then for good: the start writes a snapshot without them before it serves, as it does after a
/// repair.
pub(super) fn load(
    node: Node,
    cfg: &StoreConfig,
    members: &[String],
) -> anyhow::Result<(Node, Store, LoadReport)> {
    let began = Instant::now();
    let mut restoring = Restoring {
        node: node.with_journal(),
        members: members.iter().map(|m| m.as_bytes().to_vec()).collect(),
        forget: cfg.forget.iter().map(|f| f.as_bytes().to_vec()).collect(),
        foreign: BTreeMap::new(),
        forgotten: BTreeMap::new(),
    };
    let (store, report) = Store::open_with(cfg, &mut restoring)?;
    let Restoring {
        node,
        foreign,
        forgotten,
        ..
    } = restoring;
    let node = node.with_members(members);
    say_dropped_and_kept(&cfg.forget, &forgotten, &foreign);
    if report.rewrite || !forgotten.is_empty() {
        // Repaired or forgotten records are gone from memory only until this snapshot is on disk:
        // it is written before anything is served.
        let snap = Instant::now();
        store
            .compact(|from, out| node.snapshot_chunk(from, 4096, out))
            .context("writing a snapshot of the records loaded, before serving")?;
        info!(target: SUMMARY, "{} wrote a snapshot of the {} clients loaded ({:.0} ms)",
            String::from_utf8_lossy(node.name()), node.len(), snap.elapsed().as_secs_f64() * 1000.0);
    }
    let ms = began.elapsed().as_secs_f64() * 1000.0;
    info!(target: SUMMARY, "{} loaded {} clients from {} ({} records in {} files, {ms:.0} ms, fsync {})",
        String::from_utf8_lossy(node.name()), node.len(), cfg.dir.display(), report.records, report.files, cfg.fsync);
    info!(dir = %cfg.dir.display(), clients = node.len(), records = report.records, files = report.files,
        cut = report.cut, ms, fsync = %cfg.fsync, "store loaded");
    Ok((node, store, report))
}

/// Says, on stderr and in the log, which `--forget` names matched nothing, which records were
/// `forgotten` as asked and which, naming servers outside the herd, were kept (`foreign`).
fn say_dropped_and_kept(
    forget: &[String],
    forgotten: &BTreeMap<Vec<u8>, u64>,
    foreign: &BTreeMap<Vec<u8>, u64>,
) {
    let counts = |m: &BTreeMap<Vec<u8>, u64>| {
        m.iter()
            .map(|(s, n)| format!("{} ({n})", String::from_utf8_lossy(s)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for name in forget {
        if !forgotten.contains_key(name.as_bytes()) {
            say(format_args!(
                "herd-server: --forget {name}: no stored record names {name}"
            ));
        }
    }
    if !forgotten.is_empty() {
        let n: u64 = forgotten.values().sum();
        say(format_args!(
            "herd-server: forgot {n} stored records as asked (--forget): {}",
            counts(forgotten)
        ));
        warn!(count = n, servers = %counts(forgotten), "forgot stored records as asked (--forget)");
    }
    if !foreign.is_empty() {
        let n: u64 = foreign.values().sum();
        say(format_args!(
            "herd-server: kept {n} stored records naming servers no longer in the config: {} (they \
             are served and flooded as before; start with --forget NAME to drop them)",
            counts(foreign)
        ));
        warn!(count = n, servers = %counts(foreign),
            "kept stored records naming servers no longer in the config (--forget NAME drops them)");
    }
}

/// Compacts the store when it should ([`Store::wants_compaction`]), on a blocking thread, the node
/// locked one chunk at a time. After a failure (a full disk) it tries again each second.
pub(super) async fn keep_store(node: Arc<NodeHandle>, store: Store, shutdown: CancellationToken) {
    /// Records per chunk of a snapshot: the node is locked for about this many copies at a time.
    const COMPACT_CHUNK: usize = 4096;
    let mut wait = std::time::Duration::from_millis(250);
    // The last failure said: a failure that repeats every second is said once, not every second.
    let mut said: Option<String> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
        let live = node.lock().len() as u64;
        if !store.wants_compaction(live) {
            continue;
        }
        let (n, st) = (node.clone(), store.clone());
        let began = Instant::now();
        let done = tokio::task::spawn_blocking(move || {
            st.compact(|from, out| n.lock().snapshot_chunk(from, COMPACT_CHUNK, out))
        })
        .await;
        match done {
            Ok(Ok(())) => {
                wait = std::time::Duration::from_millis(250);
                if said.take().is_some() {
                    warn!("store compaction works again");
                }
                info!(
                    clients = live,
                    ms = began.elapsed().as_millis() as u64,
                    "store compacted"
                );
            }
            Ok(Err(e)) => {
                wait = std::time::Duration::from_secs(1);
                let cause = format!("{e:#}");
                if said.as_deref() != Some(cause.as_str()) {
                    warn!(cause = %cause, "store compaction failed (the working journal stays in use); retrying every second");
                    said = Some(cause);
                }
            }
            Err(e) => {
                wait = std::time::Duration::from_secs(1);
                error!(cause = %e, "store compaction panicked");
            }
        }
    }
}
