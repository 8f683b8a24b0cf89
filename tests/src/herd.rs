//! Servers for tests: in-process on port 0, or real `herd-server` processes on free ports.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use herd_server::config::Limits;
use herd_server::{Clock, Places, ServerSpec};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::client::exchange_text;
use crate::{eventually, free_port};

/// The default herd's topology (PROTOCOL.md §7).
pub const DEFAULT_TOPOLOGY: [(&str, &[&str]); 5] = [
    ("Alford", &["Hamilton", "Welsh"]),
    ("Ball", &["Holiday", "Welsh"]),
    ("Hamilton", &["Alford", "Holiday"]),
    ("Holiday", &["Ball", "Hamilton"]),
    ("Welsh", &["Alford", "Ball"]),
];

/// The five default server names.
pub const NAMES: [&str; 5] = ["Alford", "Ball", "Hamilton", "Holiday", "Welsh"];

/// A server running inside the test process.
pub struct InProcess {
    /// Its address.
    pub addr: SocketAddr,
    /// Its admin address (with [`Options::admin`]).
    pub admin: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    /// Stops it gracefully and waits until it is done.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("server task").expect("server run");
    }
}

/// Options for in-process servers.
#[derive(Clone)]
pub struct Options {
    /// The Places back-end.
    pub places: Places,
    /// A fixed clock, or the system's.
    pub clock: Option<Clock>,
    /// Limits.
    pub limits: Limits,
    /// Herd secret.
    pub secret: Option<String>,
    /// Where the servers' log lines go (nowhere by default).
    pub log: herd_server::log::Log,
    /// Serve the admin endpoint too, on a port of its own.
    pub admin: bool,
    /// Keep each server's records in `DIR/<Name>/` (fsync `everysec`); `None`: in memory only.
    pub data_dir: Option<PathBuf>,
    /// Accept clients (and neighbours' links) only on this event loop (a
    /// [`herd_server::Loops`] handle), not on the test's runtime, which runs the rest.
    pub on_loop: Option<tokio::runtime::Handle>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            places: Places::offline(),
            clock: None,
            limits: Limits::default(),
            secret: None,
            log: herd_server::log::Log::off(),
            admin: false,
            data_dir: None,
            on_loop: None,
        }
    }
}

/// Starts one server with no neighbours.
pub async fn start_server(name: &str, opts: Options) -> InProcess {
    start_herd(&[(name, &[])], opts)
        .await
        .into_values()
        .next()
        .expect("one server")
}

/// Starts a herd in this process: binds every listener first, then runs each server with its
/// neighbours' addresses.
pub async fn start_herd(
    topology: &[(&str, &[&str])],
    opts: Options,
) -> BTreeMap<String, InProcess> {
    let mut listeners = Vec::new();
    for (name, _) in topology {
        let l = herd_server::bind("127.0.0.1:0").await.expect("bind");
        let admin = match opts.admin {
            true => Some(herd_server::bind("127.0.0.1:0").await.expect("bind admin")),
            false => None,
        };
        listeners.push((name.to_string(), (l, admin)));
    }
    // Every admin address, so each server's live page can gather the others'.
    let admins: Vec<(String, String)> = listeners
        .iter()
        .filter_map(|(n, (_, a))| Some((n.clone(), a.as_ref()?.local_addr().ok()?.to_string())))
        .collect();
    let addrs: BTreeMap<String, SocketAddr> = listeners
        .iter()
        .map(|(n, (l, _))| (n.clone(), l.local_addr().unwrap()))
        .collect();
    let mut servers = BTreeMap::new();
    for ((name, neighbors), (_, (listener, admin))) in topology.iter().zip(listeners) {
        let spec = ServerSpec {
            name: name.to_string(),
            neighbors: neighbors
                .iter()
                .map(|n| (n.to_string(), addrs[*n].to_string()))
                .collect(),
            keyring: herd_server::node::handshake::Keyring::new(
                &opts.secret.iter().collect::<Vec<_>>(),
            ),
            members: topology.iter().map(|(n, _)| n.to_string()).collect(),
            admins: admins.clone(),
            admin: herd_server::driver::admin::AdminGuard::default(),
            limits: opts.limits,
            log_lines: true,
            log_bodies: false,
            http: None,
            log: opts.log.clone(),
            places: opts.places.clone(),
            clock: opts
                .clock
                .clone()
                .unwrap_or_else(|| Arc::new(herd_proto::Timestamp::now)),
            store: opts
                .data_dir
                .as_ref()
                .map(|dir| herd_server::store::StoreConfig::new(dir.join(name), name)),
        };
        let shutdown = CancellationToken::new();
        let addr = listener.local_addr().unwrap();
        let admin_addr = admin.as_ref().map(|l| l.local_addr().unwrap());
        let listeners = match &opts.on_loop {
            // The test's runtime listens on a port nobody is told of; the loop on the real one.
            Some(handle) => {
                herd_server::Listeners::from(herd_server::bind("127.0.0.1:0").await.expect("bind"))
                    .with(handle.clone(), listener.into_std().expect("listener"))
            }
            None => herd_server::Listeners::from(listener),
        };
        let task = tokio::spawn(herd_server::run_with_admin(
            listeners,
            admin,
            spec,
            shutdown.clone(),
        ));
        servers.insert(
            name.to_string(),
            InProcess {
                addr,
                admin: admin_addr,
                shutdown,
                task,
            },
        );
    }
    servers
}

/// The `herd-server` binary next to the test executable (cargo builds it with the workspace's tests).
pub fn server_binary() -> PathBuf {
    let mut dir = std::env::current_exe().expect("test executable");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(format!("herd-server{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p herd-server` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// A herd of real `herd-server serve NAME` processes on free loopback ports.
pub struct Processes {
    /// The folder of the config and the logs.
    pub dir: PathBuf,
    /// The config file.
    pub config: PathBuf,
    ports: BTreeMap<String, u16>,
    /// Admin ports, when the servers have admin addresses ([`Processes::with_admin`]).
    admin_ports: BTreeMap<String, u16>,
    /// HTTP door ports ([`Processes::with_http`]).
    http_ports: BTreeMap<String, u16>,
    topology: Vec<(String, Vec<String>)>,
    children: BTreeMap<String, Child>,
    /// Arguments added to every `herd-server serve` started from now on (such as `--repair`).
    pub args: Vec<String>,
    /// The TOML given to [`Processes::new`].
    extra: String,
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

impl Processes {
    /// Writes a config for `topology` (plus `extra` TOML) in a fresh folder; starts nothing.
    pub fn new(topology: &[(&str, &[&str])], extra: &str) -> Processes {
        let dir = std::env::temp_dir().join(format!(
            "herd-test-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let ports: BTreeMap<String, u16> = topology
            .iter()
            .map(|(n, _)| (n.to_string(), free_port()))
            .collect();
        let topology = topology
            .iter()
            .map(|(n, ns)| (n.to_string(), ns.iter().map(|n| n.to_string()).collect()))
            .collect();
        let mut herd = Processes {
            config: dir.join("herd.toml"),
            dir,
            ports,
            admin_ports: BTreeMap::new(),
            http_ports: BTreeMap::new(),
            topology,
            children: BTreeMap::new(),
            args: Vec::new(),
            extra: String::new(),
        };
        herd.extra = extra.to_owned();
        herd.config = herd.write_config("herd.toml", extra, &[]);
        herd
    }

    /// Gives every server an admin address on a free port (rewrites the config; starts nothing).
    pub fn with_admin(mut self) -> Processes {
        self.admin_ports = self
            .ports
            .keys()
            .map(|n| (n.clone(), free_port()))
            .collect();
        let extra = self.extra.clone();
        self.config = self.write_config("herd.toml", &extra, &[]);
        self
    }

    /// Gives every server an HTTP/JSON and WebSocket door on a free port (rewrites the config;
    /// starts nothing).
    pub fn with_http(mut self) -> Processes {
        self.http_ports = self
            .ports
            .keys()
            .map(|n| (n.clone(), free_port()))
            .collect();
        let extra = self.extra.clone();
        self.config = self.write_config("herd.toml", &extra, &[]);
        self
    }

    /// The HTTP door of server `name` (after [`Processes::with_http`]).
    pub fn http(&self, name: &str) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_ports[name]))
    }

    /// The admin address of server `name` (after [`Processes::with_admin`]).
    pub fn admin(&self, name: &str) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.admin_ports[name]))
    }

    /// Writes another config of the same herd in its folder: `extra` TOML first, and the servers of
    /// `elsewhere` listed at other addresses (so one server can be made to dial a proxy).
    pub fn write_config(
        &self,
        file: &str,
        extra: &str,
        elsewhere: &[(&str, SocketAddr)],
    ) -> PathBuf {
        let mut text = format!("{extra}\n");
        for (name, neighbors) in &self.topology {
            let list: Vec<String> = neighbors.iter().map(|n| format!("{n:?}")).collect();
            let addr = elsewhere
                .iter()
                .find(|(n, _)| n == name)
                .map_or_else(|| self.addr(name), |(_, a)| *a);
            text.push_str(&format!(
                "[[server]]\nname = {name:?}\nlisten = \"{addr}\"\nneighbors = [{}]\n",
                list.join(", ")
            ));
            if let Some(port) = self.admin_ports.get(name) {
                text.push_str(&format!("admin = \"127.0.0.1:{port}\"\n"));
            }
            if let Some(port) = self.http_ports.get(name) {
                text.push_str(&format!("http = \"127.0.0.1:{port}\"\n"));
            }
            text.push('\n');
        }
        let path = self.dir.join(file);
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// The address of server `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[name]))
    }

    /// Starts server `name` and waits until it accepts connections.
    pub async fn start(&mut self, name: &str) {
        let config = self.config.clone();
        self.launch(name, &config, &[]).await;
    }

    /// Starts server `name` with another config of the herd ([`Processes::write_config`]).
    pub async fn start_with(&mut self, name: &str, config: &std::path::Path) {
        self.launch(name, config, &[]).await;
    }

    /// Starts server `name` through `wrapper` (a command that ends by running its arguments, such as
    /// `["bash", "-c", "ulimit -f 16; exec \"$@\"", "-"]`), and waits until it accepts connections.
    pub async fn start_wrapped(&mut self, name: &str, wrapper: &[&str]) {
        let config = self.config.clone();
        self.launch(name, &config, wrapper).await;
    }

    /// Starts server `name` (through `wrapper`, if any); its stderr goes to [`Processes::stderr`].
    async fn launch(&mut self, name: &str, config: &std::path::Path, wrapper: &[&str]) {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(server_binary());
                c
            }
            None => Command::new(server_binary()),
        };
        let stderr = std::fs::File::create(self.stderr_path(name)).expect("stderr file");
        let child = cmd
            .args(["serve", name, "--config"])
            .arg(config)
            .arg("--log-dir")
            .arg(self.dir.join("logs"))
            .args(&self.args)
            .env_remove("GOOGLE_PLACES_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn herd-server");
        self.children.insert(name.to_string(), child);
        self.wait_listening(name).await;
        if self.http_ports.contains_key(name) {
            let http = self.http(name);
            eventually(&format!("{name}'s http door to listen"), || async move {
                tokio::net::TcpStream::connect(http).await.ok().map(|_| ())
            })
            .await;
        }
        // The port answering is not enough: it must be this process that answers.
        if let Some(child) = self.children.get_mut(name) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{name} exited at start ({status}; port {} taken?); its stderr:\n{}",
                    self.addr(name),
                    self.stderr(name)
                );
            }
        }
    }

    /// Waits until server `name` accepts connections. Fails at once, with what the server said on
    /// stderr, when the process has exited (a port taken, a config refused), and with its stderr too
    /// when it never listens: a start that fails must say why in the test's output.
    async fn wait_listening(&mut self, name: &str) {
        let addr = self.addr(name);
        let start = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(5);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return;
            }
            let exited = match self.children.get_mut(name) {
                Some(child) => child.try_wait().ok().flatten(),
                None => None,
            };
            if let Some(status) = exited {
                panic!(
                    "{name} exited at start ({status}); its stderr:\n{}",
                    self.stderr(name)
                );
            }
            assert!(
                start.elapsed() < crate::DEADLINE,
                "timed out waiting for {name} to listen on {addr}; its stderr so far:\n{}",
                self.stderr(name)
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(200));
        }
    }

    /// Starts every server.
    pub async fn start_all(&mut self) {
        let names: Vec<String> = self.ports.keys().cloned().collect();
        for n in names {
            self.start(&n).await;
        }
    }

    /// `kill -9`, and waits for the process to be gone.
    pub async fn kill(&mut self, name: &str) {
        if let Some(mut child) = self.children.remove(name) {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM; returns the exit code.
    pub async fn terminate(&mut self, name: &str) -> Option<i32> {
        let mut child = self.children.remove(name)?;
        let pid = child.id()?;
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .ok()?;
        let status = tokio::time::timeout(crate::DEADLINE, child.wait())
            .await
            .ok()?
            .ok()?;
        status.code()
    }

    fn stderr_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.stderr"))
    }

    /// What server `name` has written on stderr so far.
    pub fn stderr(&self, name: &str) -> String {
        std::fs::read_to_string(self.stderr_path(name)).unwrap_or_default()
    }

    /// The process id of server `name`, while it runs.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children.get(name)?.id()
    }

    /// Sends signal `sig` (`HUP`, `TERM`, …) to server `name`.
    pub fn signal(&self, name: &str, sig: &str) {
        let pid = self.pid(name).expect("running");
        let ok = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} {pid}");
    }

    /// Whether server `name` is still running.
    pub fn running(&mut self, name: &str) -> bool {
        self.children
            .get_mut(name)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The log file of `name` so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join("logs").join(format!("{name}.log")))
            .unwrap_or_default()
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The AT line `addr` holds for `client`, or `None` if it does not know the client.
pub async fn held(addr: SocketAddr, client: &str) -> Option<String> {
    let reply = exchange_text(addr, format!("WHATSAT {client} 1 0\n")).await;
    reply
        .starts_with("AT ")
        .then(|| reply.lines().next().unwrap_or("").to_owned())
}

/// Sends one IAMAT for `client` at a fixed place with client time `time`; returns the AT line.
pub async fn iamat(addr: SocketAddr, client: &str, time: &str) -> String {
    let reply = exchange_text(
        addr,
        format!("IAMAT {client} +34.068930-118.445127 {time}\n"),
    )
    .await;
    assert!(reply.starts_with("AT "), "{reply}");
    reply.trim_end().to_owned()
}

/// Waits until every server in `names` holds `want` for `client`.
pub async fn converge(herd: &Processes, names: &[&str], client: &str, want: &str) {
    for name in names {
        let addr = herd.addr(name);
        eventually(&format!("{name} to hold {want}"), || async move {
            (held(addr, client).await.as_deref() == Some(want)).then_some(())
        })
        .await;
    }
}
