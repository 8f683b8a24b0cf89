//! A link cut with real network namespaces instead of a killed process: Hamilton runs in a namespace
//! of its own, joined to Alford's by a veth pair, and the test takes the veth down and up again.
//! Skipped (with a message) where namespaces cannot be made: not root, or no `ip`.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use herd_tests::client::exchange_text;
use herd_tests::herd::server_binary;
use herd_tests::{eventually, free_port};

struct Netns {
    name: String,
    host_if: String,
}

impl Netns {
    fn ip(args: &[&str]) -> bool {
        Command::new("ip")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// A namespace with a veth to this one: `host` on this side, `peer` inside.
    fn create(tag: &str, host: &str, peer: &str) -> Option<Netns> {
        let name = format!("herd-{tag}");
        let host_if = format!("hh{tag}");
        let ns_if = format!("hn{tag}");
        if !Self::ip(&["netns", "add", &name]) {
            return None;
        }
        let ns = Netns { name, host_if };
        let n = ns.name.as_str();
        let ok = Self::ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns_if,
        ]) && Self::ip(&["link", "set", &ns_if, "netns", n])
            && Self::ip(&["addr", "add", &format!("{host}/30"), "dev", &ns.host_if])
            && Self::ip(&["link", "set", &ns.host_if, "up"])
            && Self::ip(&["-n", n, "addr", "add", &format!("{peer}/30"), "dev", &ns_if])
            && Self::ip(&["-n", n, "link", "set", &ns_if, "up"])
            && Self::ip(&["-n", n, "link", "set", "lo", "up"]);
        ok.then_some(ns)
    }

    fn set_link(&self, up: bool) {
        assert!(Self::ip(&[
            "link",
            "set",
            &self.host_if,
            if up { "up" } else { "down" }
        ]));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth, and with it ours.
        Self::ip(&["netns", "del", &self.name]);
        Self::ip(&["link", "del", &self.host_if]);
    }
}

/// The `herd` client binary, next to `herd-server`.
fn herd_cli() -> std::path::PathBuf {
    server_binary().with_file_name(format!("herd{}", std::env::consts::EXE_SUFFIX))
}

/// What Hamilton (inside the namespace) holds for `client`, asked from inside the namespace.
fn held_inside(ns: &str, addr: &str, client: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(herd_cli())
        .args(["--to", addr, "send", &format!("WHATSAT {client} 1 0")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.starts_with("AT ")
        .then(|| text.lines().next().unwrap_or("").to_owned())
}

#[tokio::test]
async fn a_cut_link_heals_and_catches_up() {
    let root = std::env::var("USER").is_ok_and(|u| u == "root")
        || Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !root || !herd_cli().exists() {
        eprintln!("skipped: needs root and the herd binary");
        return;
    }
    // Link-local addresses on a veth this test makes: traffic never leaves the machine.
    let tag = format!("{}", std::process::id() % 100_000);
    let octet = std::process::id() % 250 + 1;
    let (host_ip, peer_ip) = (format!("169.254.{octet}.1"), format!("169.254.{octet}.2"));
    let Some(ns) = Netns::create(&tag, &host_ip, &peer_ip) else {
        eprintln!("skipped: cannot make a network namespace here");
        return;
    };
    let dir = std::env::temp_dir().join(format!("herd-netns-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let (pa, pb) = (free_port(), free_port());
    let b_addr = format!("{peer_ip}:{pb}");
    let config = dir.join("herd.toml");
    // Alford dials (its name sorts first); Hamilton only listens, on its veth address. Beyond
    // loopback a herd needs a secret, so this link is the encrypted channel.
    std::fs::write(
        &config,
        format!(
            "[herd]\nsecret = \"across the veth\"\n\n[[server]]\nname = \"Alford\"\nlisten = \"127.0.0.1:{pa}\"\nneighbors = [\"Hamilton\"]\n\n\
             [[server]]\nname = \"Hamilton\"\nlisten = \"{b_addr}\"\n"
        ),
    )
    .unwrap();
    let serve = |cmd: &mut Command, name: &str| {
        cmd.args(["serve", name, "--config"])
            .arg(&config)
            .arg("--log-dir")
            .arg(dir.join("logs"));
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut a = serve(&mut Command::new(server_binary()), "Alford");
    let mut b = serve(
        Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(server_binary()),
        "Hamilton",
    );
    let a_addr: SocketAddr = format!("127.0.0.1:{pa}").parse().unwrap();
    eventually("Alford to listen", || async move {
        tokio::net::TcpStream::connect(a_addr).await.ok()
    })
    .await;

    let first = exchange_text(a_addr, "IAMAT kiwi +1+1 1\n")
        .await
        .trim_end()
        .to_owned();
    let (n, ba) = (ns.name.clone(), b_addr.clone());
    let f = first.clone();
    eventually("Hamilton to get the first record", || {
        let (n, ba, f) = (n.clone(), ba.clone(), f.clone());
        async move { (held_inside(&n, &ba, "kiwi").as_deref() == Some(f.as_str())).then_some(()) }
    })
    .await;

    // Cut the wire. Alford's keep-alive notices within seconds; updates meanwhile stay on its side.
    ns.set_link(false);
    let log = dir.join("logs").join("Alford.log");
    eventually("Alford to see the link go down", || {
        let log = log.clone();
        async move {
            std::fs::read_to_string(&log)
                .ok()?
                .contains("peer link down")
                .then_some(())
        }
    })
    .await;
    let second = exchange_text(a_addr, "IAMAT kiwi +2+2 2\n")
        .await
        .trim_end()
        .to_owned();
    assert!(second.contains(" kiwi +2+2 2"), "{second}");
    // The link is down, so nothing can have reached Hamilton.
    assert_eq!(
        held_inside(&ns.name, &b_addr, "kiwi").as_deref(),
        Some(first.as_str()),
        "Hamilton is cut off"
    );

    // Heal: Alford re-dials, the link's catch-up brings Hamilton the newer record.
    ns.set_link(true);
    let s = second.clone();
    eventually("Hamilton to catch up after the heal", || {
        let (n, ba, s) = (n.clone(), ba.clone(), s.clone());
        async move { (held_inside(&n, &ba, "kiwi").as_deref() == Some(s.as_str())).then_some(()) }
    })
    .await;

    let _ = a.kill();
    let _ = b.kill();
    let _ = a.wait();
    let _ = b.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
