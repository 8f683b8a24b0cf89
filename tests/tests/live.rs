//! The live page in a real headless browser: a three-server herd of real processes with admin
//! addresses, the page of one of them open in chromium (driven over WebDriver by chromedriver), and
//! what it shows read from the DOM: the records held before it opened are drawn at once, new clients
//! and counts appear, the rates are charted, a client is found by id, no two labels overlap (their
//! boxes as the browser lays them out), a killed server's links show down, and once it is back they
//! come up again and the herd shows converged. A screenshot of each state is saved and its path
//! printed.
//!
//! Where chromium or chromedriver is missing the test says so and passes (`.ci/run` installs them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use fantoccini::{Client, ClientBuilder, Locator};
use herd_tests::client::exchange_text;
use herd_tests::eventually;
use herd_tests::herd::Processes;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

/// The first of `names` found on `PATH`.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// A chromedriver on a free loopback port, stopped when dropped.
struct Driver {
    _child: Child,
    url: String,
}

impl Driver {
    async fn start(chromedriver: &Path) -> Driver {
        let port = herd_tests::free_port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn chromedriver");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        eventually("chromedriver to listen", || async move {
            tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
        })
        .await;
        Driver {
            _child: child,
            url: format!("http://{addr}"),
        }
    }

    /// A headless chromium session (no sandbox: CI runs as root).
    async fn browser(&self, chromium: &Path) -> Client {
        let caps = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1700"],
            }
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a chromium session")
    }
}

/// What the page shows, read in one script: the stream's state, counts, servers, links, clients.
const READ: &str = r#"
const t = (s) => { const e = document.querySelector(s); return e ? e.textContent : null; };
const rows = (s, attr) => Object.fromEntries([...document.querySelectorAll(s)].map((r) =>
  [r.getAttribute(attr), { state: r.querySelector('.state').textContent,
                           records: (r.querySelector('.records') || {}).textContent }]));
return {
  stream: t('#stream'),
  clients: t('#client-count'),
  converged: document.querySelector('#converged').dataset.converged,
  convergedText: t('#converged'),
  servers: rows('tr[data-server]', 'data-server'),
  links: rows('tr[data-link]', 'data-link'),
  points: [...document.querySelectorAll('circle.client[data-client]')].map((c) => c.getAttribute('data-client')),
  newest: [...document.querySelectorAll('circle.client.new')].map((c) => c.getAttribute('data-client')),
  asks: [...document.querySelectorAll('ellipse.whatsat[data-client]')].map((c) => c.getAttribute('data-client')),
  downLabels: [...document.querySelectorAll('#graph text.label.down')].map((e) => e.textContent),
  held: t('#held-note'),
  found: t('#found'),
  foundMarks: [...document.querySelectorAll('#map circle.found')].map((c) => c.getAttribute('data-client')),
  askLabels: [...document.querySelectorAll('#map text.asklabel')]
    .filter((e) => e.getAttribute('display') !== 'none').map((e) => e.getAttribute('data-client')),
  rateMax: Object.fromEntries([...document.querySelectorAll('svg[data-rate]')]
    .map((e) => [e.getAttribute('data-rate'), Number(e.getAttribute('data-max'))])),
  labels: shown().length,
  overlaps: overlaps(),
};
// Every text drawn in the two pictures, with its box on the screen.
function shown() {
  return [...document.querySelectorAll('svg#graph text, svg#map text')]
    .filter((e) => e.textContent && e.getAttribute('display') !== 'none' && getComputedStyle(e).display !== 'none')
    .map((e) => ({ text: e.textContent, svg: e.ownerSVGElement.id, box: e.getBoundingClientRect() }));
}
// Pairs of texts of one picture whose boxes share more than half a pixel each way.
function overlaps() {
  const all = shown(), out = [];
  for (let i = 0; i < all.length; i++) for (let j = i + 1; j < all.length; j++) {
    const [a, b] = [all[i], all[j]];
    if (a.svg !== b.svg) continue;
    const w = Math.min(a.box.right, b.box.right) - Math.max(a.box.left, b.box.left);
    const h = Math.min(a.box.bottom, b.box.bottom) - Math.max(a.box.top, b.box.top);
    if (w > 0.5 && h > 0.5) out.push(a.text + ' / ' + b.text);
  }
  return out;
}
"#;

async fn read(browser: &Client) -> Value {
    browser.execute(READ, vec![]).await.expect("read the page")
}

/// Polls the page until `check` holds; fails with the last reading.
async fn until(browser: &Client, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let found = tokio::time::timeout(herd_tests::DEADLINE, async {
        loop {
            let v = read(browser).await;
            if check(&v) {
                return v;
            }
            last = v;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting for {what}; the page shows {last:#}"))
}

async fn screenshot(browser: &Client, dir: &Path, name: &str) {
    let png = browser.screenshot().await.expect("screenshot");
    let path = dir.join(format!("live-{name}.png"));
    std::fs::write(&path, png).expect("save the screenshot");
    println!("screenshot of the {name} herd: {}", path.display());
}

async fn iamat(addr: SocketAddr, client: &str, location: &str, time: u32) {
    let reply = exchange_text(addr, format!("IAMAT {client} {location} {time}\n")).await;
    assert!(reply.starts_with("AT "), "{reply}");
}

#[tokio::test]
async fn the_live_page_in_a_browser() {
    let chromium = on_path(&["chromium", "chromium-browser", "google-chrome"]);
    let chromedriver = on_path(&["chromedriver"]);
    let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
        println!(
            "skipped: chromium and chromedriver not found (install Debian's chromium chromium-driver)"
        );
        return;
    };
    let mut herd = Processes::new(
        &[
            ("Alford", &["Ball", "Hamilton"]),
            ("Ball", &["Alford", "Hamilton"]),
            ("Hamilton", &["Alford", "Ball"]),
        ],
        "",
    )
    .with_admin();
    herd.start_all().await;
    // Records exist before the page opens: it must draw them from what Alford holds.
    iamat(herd.addr("Alford"), "kiwi", "+34.068930-118.445127", 1).await;
    iamat(herd.addr("Alford"), "pear", "+48.856600+002.352200", 1).await;
    iamat(herd.addr("Alford"), "fig", "+35.676200+139.650300", 1).await;
    iamat(herd.addr("Alford"), "lime", "-33.868800+151.209300", 1).await;
    let shots = std::env::temp_dir().join(format!("herd-live-{}", std::process::id()));
    std::fs::create_dir_all(&shots).expect("screenshot folder");

    let driver = Driver::start(&chromedriver).await;
    let browser = driver.browser(&chromium).await;
    browser
        .goto(&format!("http://{}/", herd.admin("Alford")))
        .await
        .expect("open the page");
    let all_up = |v: &Value, names: &[&str]| names.iter().all(|n| v["servers"][n]["state"] == "up");
    until(&browser, "the page to be live with three servers", |v| {
        v["stream"]
            .as_str()
            .is_some_and(|s| s.starts_with("live from Alford"))
            && all_up(v, &["Alford", "Ball", "Hamilton"])
            && ["Alford-Ball", "Alford-Hamilton", "Ball-Hamilton"]
                .iter()
                .all(|l| v["links"][l]["state"] == "up")
    })
    .await;

    // The four held records are drawn at once (the page was not watching when they came).
    let v = until(&browser, "the held records drawn", |v| {
        v["clients"] == "4" && v["held"] == "all 4 records held by Alford when the page opened"
    })
    .await;
    let mut points: Vec<&str> = v["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    points.sort_unstable();
    assert_eq!(points, ["fig", "kiwi", "lime", "pear"]);

    // Three more clients near kiwi, through each server, and a WHATSAT of each: four circles whose
    // labels would fall on one spot.
    iamat(herd.addr("Ball"), "date", "+34.100000-118.400000", 1).await;
    iamat(herd.addr("Hamilton"), "nut", "+34.030000-118.500000", 1).await;
    iamat(herd.addr("Alford"), "yam", "+34.080000-118.460000", 1).await;
    for client in ["kiwi", "date", "nut", "yam"] {
        let answer = exchange_text(herd.addr("Alford"), format!("WHATSAT {client} 50 1\n")).await;
        assert!(answer.starts_with("AT "), "{answer}");
    }
    let v = until(
        &browser,
        "seven clients, counted on every server, four WHATSATs",
        |v| {
            let mut asks: Vec<&str> = v["asks"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            asks.sort_unstable();
            v["clients"] == "7"
                && ["Alford", "Ball", "Hamilton"]
                    .iter()
                    .all(|n| v["servers"][n]["records"] == "7")
                && v["converged"] == "true"
                && asks == ["date", "kiwi", "nut", "yam"]
                && v["rateMax"]["Alford-iamat"]
                    .as_f64()
                    .is_some_and(|m| m > 0.0)
        },
    )
    .await;
    assert!(!v["newest"].as_array().unwrap().is_empty(), "{v:#}");
    assert!(v["convergedText"]
        .as_str()
        .unwrap()
        .starts_with("converged"));
    // Every label is shown, and no two overlap: server names and counts, link labels, the four
    // WHATSAT labels.
    assert_eq!(v["askLabels"].as_array().unwrap().len(), 4, "{v:#}");
    assert!(v["labels"].as_u64().unwrap() >= 3 * 3 + 3 + 4, "{v:#}");
    assert_eq!(v["overlaps"], json!([]), "{v:#}");

    // Find a client by id: its place is said and ringed on the map; an unknown id is said unknown.
    let find = |id: &'static str| {
        let browser = browser.clone();
        async move {
            let input = browser
                .find(Locator::Id("find-id"))
                .await
                .expect("the search box");
            input.clear().await.expect("clear the search box");
            input.send_keys(id).await.expect("type an id");
            browser
                .find(Locator::Css("#find button"))
                .await
                .expect("the find button")
                .click()
                .await
                .expect("click find");
        }
    };
    find("lime").await;
    let v = until(&browser, "lime found", |v| {
        v["found"]
            .as_str()
            .is_some_and(|f| f.starts_with("lime at 33.869° S 151.209° E"))
    })
    .await;
    assert_eq!(v["foundMarks"], json!(["lime"]), "{v:#}");
    find("nobody").await;
    until(&browser, "nobody not found", |v| {
        v["found"] == "no record of nobody on Alford" && v["foundMarks"] == json!([])
    })
    .await;
    screenshot(&browser, &shots, "converged").await;

    // Ball dies: its links show down (in text too), and the herd cannot be called converged.
    herd.kill("Ball").await;
    iamat(herd.addr("Alford"), "plum", "-22.906800-043.172900", 2).await;
    let v = until(&browser, "Ball's links down", |v| {
        v["servers"]["Ball"]["state"] == "down"
            && v["links"]["Alford-Ball"]["state"] == "down"
            && v["links"]["Ball-Hamilton"]["state"] == "down"
            && v["links"]["Alford-Hamilton"]["state"] == "up"
            && v["clients"] == "8"
    })
    .await;
    assert_eq!(v["converged"], "false", "{v:#}");
    assert!(
        v["downLabels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.starts_with("down"))),
        "{v:#}"
    );
    screenshot(&browser, &shots, "ball-down").await;

    // Ball is back (with no records): its links come up, it catches up, the herd converges.
    herd.start("Ball").await;
    until(&browser, "Ball back and the herd converged", |v| {
        all_up(v, &["Alford", "Ball", "Hamilton"])
            && ["Alford-Ball", "Alford-Hamilton", "Ball-Hamilton"]
                .iter()
                .all(|l| v["links"][l]["state"] == "up")
            && v["servers"]["Ball"]["records"] == "8"
            && v["converged"] == "true"
    })
    .await;
    screenshot(&browser, &shots, "ball-back").await;

    browser.close().await.expect("close the browser");
    drop(driver);
}
