//! What the admin door shows: a snapshot of the server's handles ([`refresh`]), copied into the
//! counters for `/metrics` and shaped as JSON for `/status` and the live page.

use serde_json::{json, Value};

use crate::driver::admin::state::AdminState;
use crate::driver::metrics::{snapshot_age, LinkView, Scrape};
use crate::driver::node_handle::NodeView;
use crate::node::limits::{Limit, Refusals};
use crate::store::StoreState;

/// What a scrape read: the node's view, every refusal (the driver's and the node's) and the store's
/// state.
pub(crate) struct Snapshot {
    pub(crate) node: NodeView,
    pub(crate) refusals: Refusals,
    pub(crate) store: Option<StoreState>,
}

/// Reads what the node, the gate and the store know, and copies it into the counters; the node is
/// locked once.
pub(crate) fn refresh(state: &AdminState) -> Snapshot {
    let node = state.node.view();
    let refusals = state.gate.refusals().merged(&node.refusals);
    let store = state.store.as_ref().map(|s| s.state());
    state.stats.record(&Scrape {
        records: node.records,
        cache_bytes: node.cache_bytes,
        watches: node.watches,
        links: &node.links,
        refusals: &refusals,
        peer_refusals: &node.peer_refusals,
        warnings: state.gate.warning_counts(),
        store: store
            .as_ref()
            .zip(state.store.as_ref())
            .map(|(st, s)| (st, s.fsync().as_str())),
        loaded: state.loaded.as_deref().map(|(c, r)| (*c, r.records)),
    });
    Snapshot {
        node,
        refusals,
        store,
    }
}

/// The Prometheus text exposition of the server's figures.
pub(crate) fn metrics(state: &AdminState) -> String {
    refresh(state);
    state
        .stats
        .encode(state.spec.places.cache_counts(), state.spec.log.dropped())
}

/// `/status` as JSON. The fingerprint (hex, so a browser's numbers do not round it) is equal on two
/// servers that hold the same records.
pub(crate) fn status(state: &AdminState) -> Value {
    let Snapshot {
        node,
        refusals,
        store,
    } = refresh(state);
    let s = state.stats.counts();
    json!({
        "server": state.spec.name,
        "listen": &*state.listen,
        "version": env!("CARGO_PKG_VERSION"),
        "ready": !state.life.shutdown.is_cancelled(),
        "uptime_seconds": s.uptime.as_secs_f64(),
        "places": state.spec.places.backend().as_str(),
        "clients": s.open_connections.max(0),
        "connections": s.connections,
        "records": node.records,
        "fingerprint": format!("{:016x}", node.fingerprint.fingerprint),
        "requests": {"iamat": s.iamat, "whatsat": s.whatsat, "invalid": s.invalid},
        "flood": {"in": s.flood_in, "out": s.flood_out},
        "refused": Limit::ALL
            .iter()
            .map(|&l| (l.as_str().to_owned(), json!(refusals.get(l))))
            .collect::<serde_json::Map<_, _>>(),
        "links": node.links.iter().map(link_json).collect::<Vec<_>>(),
        "store": store.as_ref().map(|st| store_json(state, st)),
    })
}

/// A link in `/status`.
fn link_json(l: &LinkView) -> Value {
    let c = &l.counts;
    json!({
        "name": l.name,
        "up": l.up,
        "queue": l.queue,
        "last_heard_seconds": l.last_heard.map(|d| d.as_secs_f64()),
        "catching_up": l.reconciling,
        "flood": {"in": c.records_in, "out": c.records_out},
        "catchup": {
            "started": {"link_up": c.catchups_started, "periodic": c.checks_started},
            "finished": {"link_up": c.catchups_finished, "periodic": c.checks_finished},
            "full_streams": c.full_streams,
            "records": {"sent": c.sync_records_out, "received": c.sync_records_in},
            "bytes": {"sent": c.sync_bytes_out, "received": c.sync_bytes_in},
            "tables": {"sent": c.sync_tables_out, "received": c.sync_tables_in},
            "broken": c.sync_broken,
            "refused": c.exchanges_refused,
        },
        "unexpected_lines": c.lines_unexpected,
        "quarantines": c.quarantines,
    })
}

/// The store in `/status` (`st`: its state read by the snapshot); `null` without a store.
fn store_json(state: &AdminState, st: &StoreState) -> Value {
    let Some(store) = &state.store else {
        return Value::Null;
    };
    json!({
        "dir": store.dir().display().to_string(),
        "fsync": store.fsync().as_str(),
        "journal_bytes": st.journal_bytes,
        "journal_records": st.journal_records,
        "unwritten_bytes": st.unwritten_bytes,
        "unsynced_bytes": st.unsynced_bytes,
        "snapshot_age_seconds": snapshot_age(st),
        "compactions": st.compactions,
        "failing": st.failing,
        "failure": store.failure(),
        "acknowledging": st.acknowledging,
        "loaded": state.loaded.as_deref().map(|(clients, r)| json!({
            "clients": clients,
            "records": r.records,
            "files": r.files,
        })),
    })
}

/// The counters the live page charts as rates, cumulative: IAMATs and WHATSATs answered, records
/// flooded to neighbours, requests refused by a limit. Reads the node once ([`refresh`]).
pub(crate) fn rate_counters(state: &AdminState) -> [u64; 4] {
    let snapshot = refresh(state);
    let s = state.stats.counts();
    [
        s.iamat,
        s.whatsat,
        s.flood_out,
        Limit::ALL.iter().map(|&l| snapshot.refusals.get(l)).sum(),
    ]
}
