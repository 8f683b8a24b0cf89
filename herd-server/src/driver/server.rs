//! A server's start and stop: [`run`] loads the store, assembles the handles its tasks hold
//! (`Shared`), starts the tasks (the doors, the link manager, the store's upkeep, the accept
//! loops) and, once shutdown is asked, waits for them. What it runs from is a [`ServerSpec`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn, Instrument};

use crate::driver::admin::state::AdminState;
use crate::driver::admission::{Admission, ConnLimits};
use crate::driver::gate::Gate;
use crate::driver::loops::Listeners;
use crate::driver::node_handle::NodeHandle;
use crate::driver::shared::{Lifecycle, Shared};
use crate::driver::{admin, door, listener, peers, upkeep};
use crate::log::SUMMARY;
use crate::node::limits::NodeLimits;
use crate::node::Node;
use crate::store::{LoadReport, Store};

pub use crate::driver::spec::{Clock, ServerSpec};

/// Runs one server on `listener` until `shutdown` is cancelled, then waits for the replies in flight.
/// `listener` is a [`TcpListener`], or [`Listeners`] to accept on several event loops
/// ([`crate::driver::loops`]); each connection is served by the loop that accepted it.
///
/// # Errors
/// Never for a connection's trouble (those are logged); only if the server cannot run at all.
pub async fn run(
    listener: impl Into<Listeners>,
    spec: ServerSpec,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with_admin(listener, None, spec, shutdown).await
}

/// [`run`], also serving the admin endpoint (`GET /metrics`, `/health`, `/status`; see
/// [`crate::driver::admin`]) on `admin` when given.
///
/// # Errors
/// As [`run`].
pub async fn run_with_admin(
    listener: impl Into<Listeners>,
    admin: Option<TcpListener>,
    spec: ServerSpec,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let span = info_span!("server", server = %spec.name);
    run_inner(listener.into(), admin, spec, shutdown)
        .instrument(span)
        .await
}

/// The connection limits of `spec`, fitted into the process's file descriptors (with `admin`: the
/// admin door's connections beside them); says so when `max_connections` had to be lowered.
fn conn_limits(spec: &ServerSpec, admin: bool) -> ConnLimits {
    let me = &spec.name;
    let wanted = ConnLimits::new(
        spec.limits.max_connections,
        spec.limits.max_connections_per_ip,
        spec.neighbors.len(),
    );
    let admin_fds = if admin { spec.admin.max_connections } else { 0 };
    let Some(fds) = crate::driver::admission::descriptors_per_server() else {
        return wanted;
    };
    let (fitted, lowered) = wanted.fit(fds, admin_fds, spec.neighbors.len());
    if lowered {
        warn!(target: SUMMARY,
            "{me}: max_connections lowered from {} to {} to fit the open-file limit ({fds} descriptors; raise it with `ulimit -n` or LimitNOFILE=)",
            wanted.max_connections, fitted.max_connections);
        warn!(
            wanted = wanted.max_connections,
            max_connections = fitted.max_connections,
            descriptors = fds,
            "max_connections lowered to fit the open-file limit"
        );
    }
    fitted
}

/// What the start loaded: the node (filled from the store, when the server keeps one), the store,
/// and the clients held after loading with the load's report. Records on disk are loaded before
/// anything is accepted (and before the node knows the herd's members: see [`upkeep::load`]).
async fn load_node(
    spec: &ServerSpec,
) -> anyhow::Result<(Node, Option<Store>, Option<(usize, LoadReport)>)> {
    let node = Node::new(
        &spec.name,
        spec.neighbors.iter().map(|(n, _)| n.clone()).collect(),
    )
    .with_limits(NodeLimits::from(&spec.limits))
    .with_watch_limits(crate::node::watch::WatchLimits {
        per_server: spec.limits.max_watches,
        per_connection: spec.limits.max_watches_per_connection,
    });
    let Some(cfg) = spec.store.clone() else {
        return Ok((node.with_members(&spec.members), None, None));
    };
    let members = spec.members.clone();
    let (node, store, report) =
        tokio::task::spawn_blocking(move || upkeep::load(node, &cfg, &members)).await??;
    let clients = node.len();
    Ok((node, Some(store), Some((clients, report))))
}

async fn run_inner(
    listeners: Listeners,
    admin: Option<TcpListener>,
    spec: ServerSpec,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (node, store, loaded) = load_node(&spec).await?;
    let admission = Admission::new(conn_limits(&spec, admin.is_some()));
    let gate = Gate::new(&spec.name, &spec.limits, admission);
    let node = NodeHandle::new(node, &spec.neighbors);
    let life = Lifecycle::new(shutdown);
    let shared = Arc::new(Shared::new(Arc::new(spec), node, store, gate, life));
    let local = listeners.local_addr()?;
    open_doors(&shared, admin, local, loaded).await?;
    say_started(&shared, local);
    start_tasks(&shared);
    accept_all(&shared, listeners).await;
    info!("stopped accepting; finishing connections");
    stop(&shared).await;
    Ok(())
}

/// Starts the client door over HTTP/JSON and WebSocket (when the spec has its address) and the admin
/// door on `admin` (when given). `local`: the client listener's address, shown by `/status`.
async fn open_doors(
    shared: &Arc<Shared>,
    admin: Option<TcpListener>,
    local: SocketAddr,
    loaded: Option<(usize, LoadReport)>,
) -> anyhow::Result<()> {
    let tracker = &shared.life.tracker;
    if let Some(addr) = shared.spec.http.clone() {
        let http = listener::bind(&addr).await.with_context(|| {
            format!(
                "{} cannot listen on its http address {addr}",
                shared.spec.name
            )
        })?;
        tracker.spawn(door::serve(shared.clone(), http).in_current_span());
    }
    if let Some(listener) = admin {
        let state = AdminState::new(shared, loaded, &local.to_string());
        tracker.spawn(admin::serve(state, listener).in_current_span());
    }
    Ok(())
}

/// Says on the summary and in the log that the server listens on `local`.
fn say_started(shared: &Shared, local: SocketAddr) {
    let me = &shared.spec.name;
    let places = shared.spec.places.backend();
    let neighbors: Vec<&str> = shared
        .node
        .links()
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    info!(target: SUMMARY, "{me} listening on {local}, places: {places}, neighbours: {}", neighbors.join(", "));
    info!(%local, %places, neighbours = %neighbors.join(","), "server started");
}

/// Starts the tasks that run beside the connections: the warnings' summaries, the link manager (with
/// neighbours) and the store's compaction (with a store).
fn start_tasks(shared: &Arc<Shared>) {
    let tracker = &shared.life.tracker;
    // Sums up the warnings suppressed in each period, even when no new one comes.
    let (gate, life) = (shared.gate.clone(), shared.life.clone());
    tracker.spawn(
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => gate.flush_warnings(),
                    _ = life.shutdown.cancelled() => return,
                }
            }
        }
        .in_current_span(),
    );
    if !shared.node.links().is_empty() {
        // The node decides when to dial (only the server whose name sorts first dials a pair),
        // ping, check and close; this task sleeps until its next deadline and carries it out.
        tracker.spawn(peers::link_manager(shared.clone()).in_current_span());
    }
    if let Some(store) = shared.store.clone() {
        let keep = upkeep::keep_store(shared.node.clone(), store, shared.life.shutdown.clone());
        tracker.spawn(keep.in_current_span());
    }
}

/// Accepts on every event loop's listener until shutdown: each other loop on its own (the connections
/// it accepts are its tasks), the first on this task.
async fn accept_all(shared: &Arc<Shared>, listeners: Listeners) {
    for (handle, listener) in listeners.more {
        let s = shared.clone();
        let accepting = async move {
            match listener
                .set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(listener))
            {
                Ok(l) => listener::accept(&s, l).await,
                Err(e) => error!(cause = %e, "cannot listen on an event loop"),
            }
        };
        handle.spawn(
            shared
                .life
                .tracker
                .track_future(accepting.in_current_span()),
        );
    }
    listener::accept(shared, listeners.first).await;
}

/// Waits for the server's tasks, then for the store to have written (and synced) what was appended,
/// before the process may exit; says what was refused while it ran.
async fn stop(shared: &Shared) {
    shared.life.tracker.close();
    shared.life.tracker.wait().await;
    if let Some(store) = shared.store.clone() {
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
    }
    let refusals = shared.refusals();
    info!(target: SUMMARY, "{} stopped (refused: {refusals})", shared.spec.name);
    info!(%refusals, "server stopped");
}
