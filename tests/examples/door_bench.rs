//! The client door's figures, side by side in one run (bench/door.sh starts the servers):
//!
//! - `rate ADDR_TCP ADDR_HTTP CONNS SECS ROUNDS`: IAMATs a second, one request in flight per connection
//!   (a round trip each), over TCP lines, HTTP/1.1 keep-alive JSON (a lean client: [`HttpClient`]) and WebSocket messages, interleaved
//!   round by round; prints each round and the medians with their ratios to TCP. `DOORS=http` (or
//!   `tcp`, `ws`, a comma list) runs only those doors, to profile one door's load.
//! - `fence ADDR_TCP_FAR ADDR_HTTP_NEAR N`: the time from an IAMAT sent to one server to the push of its
//!   record to a watcher at another (two hops away in bench/door.sh); prints p50, p99, max.
//! - `watchers ADDR_TCP ADDR_HTTP WATCHES PER_CONN CONNS SECS ROUNDS`: TCP IAMAT throughput with no
//!   watch, then with WATCHES watches on the server (half `CLIENT`, half `NEAR`, none matching the
//!   load), interleaved round by round.
//!
//! Everything is on loopback; every wait is bounded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy)]
enum Door {
    Tcp,
    Http,
    Ws,
}

impl Door {
    fn name(self) -> &'static str {
        match self {
            Door::Tcp => "tcp",
            Door::Http => "http",
            Door::Ws => "ws",
        }
    }
}

/// A WebSocket client with a small read buffer: tungstenite zeroes its whole read buffer (128 KiB by
/// default) before every read, which made the generator, not the server, the limit of a one-line
/// exchange.
async fn ws(http: SocketAddr) -> Ws {
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async_with_config(
            format!("ws://{http}/v1/ws"),
            Some(config),
            true,
        ),
    )
    .await
    .expect("handshake in time")
    .expect("handshake")
    .0
}

async fn next_text(w: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(WAIT, w.next())
            .await
            .expect("an answer in time")
        {
            Some(Ok(Message::Text(t))) => return t.as_str().to_owned(),
            Some(Ok(_)) => {}
            other => panic!("the socket ended: {other:?}"),
        }
    }
}

/// A lean HTTP/1.1 keep-alive client for the rate: each request is written as bytes on one TCP
/// connection and each response read by its `content-length` (its head parsed by httparse). A general
/// client (reqwest: a pool, a connector, a task per connection) costs the shared two cores far more per
/// request than the TCP client does, which measured the generator rather than the door.
struct HttpClient {
    stream: TcpStream,
    host: String,
    req: Vec<u8>,
    buf: Vec<u8>,
}

impl HttpClient {
    async fn connect(http: SocketAddr) -> HttpClient {
        let stream = TcpStream::connect(http).await.expect("connect");
        stream.set_nodelay(true).ok();
        HttpClient {
            stream,
            host: http.to_string(),
            req: Vec::with_capacity(512),
            buf: Vec::with_capacity(4096),
        }
    }

    /// `POST /v1/iamat` with client `b{id}` at time `t`: the status and the body.
    async fn iamat(&mut self, id: usize, t: u64) -> (u16, &[u8]) {
        use std::io::Write as _;
        let body = format!(
            r#"{{"client":"b{id}","latitude":34.06893,"longitude":-118.445127,"time":"{t}"}}"#
        );
        self.req.clear();
        write!(
            self.req,
            "POST /v1/iamat HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        )
        .expect("a request");
        self.stream.write_all(&self.req).await.expect("send");
        tokio::time::timeout(WAIT, self.response())
            .await
            .expect("an answer in time")
    }

    /// Reads one response: its head, then `content-length` bytes of body.
    async fn response(&mut self) -> (u16, &[u8]) {
        self.buf.clear();
        let (status, head, len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut r = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = r.parse(&self.buf).expect("an HTTP response")
            {
                let len = r
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                    .expect("a content-length");
                break (r.code.expect("a status"), head, len);
            }
            self.read_more().await;
        };
        while self.buf.len() < head + len {
            self.read_more().await;
        }
        (status, &self.buf[head..head + len])
    }

    async fn read_more(&mut self) {
        use tokio::io::AsyncReadExt as _;
        let mut chunk = [0u8; 2048];
        let n = self.stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

/// One connection's loop: IAMATs one at a time until `stop`; counts answers into `done`.
async fn client(
    door: Door,
    tcp: SocketAddr,
    http: SocketAddr,
    id: usize,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) {
    let mut t = 1u64;
    match door {
        Door::Tcp => {
            let s = TcpStream::connect(tcp).await.expect("connect");
            s.set_nodelay(true).ok();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            let mut line = String::new();
            while !stop.load(Ordering::Relaxed) {
                t += 1;
                w.write_all(format!("IAMAT b{id} +34.068930-118.445127 {t}\n").as_bytes())
                    .await
                    .expect("send");
                line.clear();
                tokio::time::timeout(WAIT, r.read_line(&mut line))
                    .await
                    .expect("in time")
                    .expect("read");
                assert!(line.starts_with("AT "), "{line}");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }
        Door::Http => {
            let mut c = HttpClient::connect(http).await;
            while !stop.load(Ordering::Relaxed) {
                t += 1;
                let (status, body) = c.iamat(id, t).await;
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(body));
                done.fetch_add(1, Ordering::Relaxed);
            }
        }
        Door::Ws => {
            let mut w = ws(http).await;
            while !stop.load(Ordering::Relaxed) {
                t += 1;
                w.send(Message::text(format!(
                    "IAMAT b{id} +34.068930-118.445127 {t}"
                )))
                .await
                .expect("send");
                let a = next_text(&mut w).await;
                assert!(a.starts_with("AT "), "{a}");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// IAMATs a second over `door` with `conns` connections for `secs`.
async fn round(door: Door, tcp: SocketAddr, http: SocketAddr, conns: usize, secs: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..conns)
        .map(|i| tokio::spawn(client(door, tcp, http, i, stop.clone(), done.clone())))
        .collect();
    // A short warm-up (connections made, pools filled), then the measured window.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (n0, t0) = (done.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let rate = (done.load(Ordering::Relaxed) - n0) as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        tokio::time::timeout(WAIT, t)
            .await
            .expect("clients stop in time")
            .expect("client");
    }
    rate
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn rate(tcp: SocketAddr, http: SocketAddr, conns: usize, secs: f64, rounds: usize) {
    let doors = [Door::Tcp, Door::Http, Door::Ws];
    let only = std::env::var("DOORS").unwrap_or_default();
    let on = |d: Door| only.is_empty() || only.split(',').any(|n| n == d.name());
    let mut rates = vec![Vec::new(); doors.len()];
    for r in 0..rounds {
        let mut line = format!("round {r}:");
        for (i, d) in doors.iter().enumerate() {
            if !on(*d) {
                rates[i].push(f64::NAN);
                continue;
            }
            let x = round(*d, tcp, http, conns, secs).await;
            rates[i].push(x);
            line.push_str(&format!(" {} {:.0}/s", d.name(), x));
        }
        println!("{line}");
    }
    let m: Vec<f64> = rates.iter_mut().map(|v| median(v)).collect();
    println!(
        "median c{conns}: tcp {:.0}/s, http {:.0}/s ({:.2}x tcp), ws {:.0}/s ({:.2}x tcp)",
        m[0],
        m[1],
        m[1] / m[0],
        m[2],
        m[2] / m[0]
    );
}

async fn fence(far: SocketAddr, near_http: SocketAddr, n: usize) {
    let mut w = ws(near_http).await;
    w.send(Message::text("WATCH CLIENT fence"))
        .await
        .expect("send");
    assert!(next_text(&mut w).await.starts_with("WATCHING"));
    let s = TcpStream::connect(far).await.expect("connect");
    s.set_nodelay(true).ok();
    let (r, mut wr) = s.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let sent = Instant::now();
        wr.write_all(format!("IAMAT fence +1+1 {}\n", i + 10).as_bytes())
            .await
            .expect("send");
        let pushed = next_text(&mut w).await;
        lat.push(sent.elapsed().as_secs_f64() * 1000.0);
        assert!(pushed.contains(&format!(" {}\n", i + 10)), "{pushed}");
        line.clear();
        tokio::time::timeout(WAIT, r.read_line(&mut line))
            .await
            .expect("in time")
            .expect("read");
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "fence delivery over two hops, {n} records: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        p(0.5),
        p(0.99),
        lat[lat.len() - 1]
    );
}

async fn watchers(
    tcp: SocketAddr,
    http: SocketAddr,
    watches: usize,
    per: usize,
    conns: usize,
    secs: f64,
    rounds: usize,
) {
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let a = round(Door::Tcp, tcp, http, conns, secs).await;
        // The watchers: `per` watches a connection, half CLIENT (ids the load never uses), half NEAR
        // (circles around the globe, away from the load's location).
        let mut held = Vec::new();
        for c in 0..watches.div_ceil(per) {
            let mut w = ws(http).await;
            for k in 0..per.min(watches - c * per) {
                let i = c * per + k;
                let line = if i % 2 == 0 {
                    format!("WATCH CLIENT w{i}")
                } else {
                    format!(
                        "WATCH NEAR {} {} 10",
                        (i % 160) as i64 - 80,
                        (i * 7 % 340) as i64 - 170
                    )
                };
                w.send(Message::text(line)).await.expect("send");
                let a = next_text(&mut w).await;
                assert!(a.starts_with("WATCHING"), "{a}");
            }
            held.push(w);
        }
        let b = round(Door::Tcp, tcp, http, conns, secs).await;
        for mut w in held {
            let _ = w.close(None).await;
        }
        println!(
            "round {r}: no watch {a:.0}/s, {watches} watches {b:.0}/s ({:.3}x)",
            b / a
        );
        without.push(a);
        with.push(b);
    }
    let (a, b) = (median(&mut without), median(&mut with));
    println!(
        "median c{conns}: no watch {a:.0}/s, {watches} watches {b:.0}/s ({:.3}x, cost {:.1} %)",
        b / a,
        (1.0 - b / a) * 100.0
    );
}

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let addr = |i: usize| a[i].parse::<SocketAddr>().expect("HOST:PORT");
    let num = |i: usize| a[i].parse::<f64>().expect("a number");
    match a.get(1).map(String::as_str) {
        Some("rate") => rate(addr(2), addr(3), num(4) as usize, num(5), num(6) as usize).await,
        Some("fence") => fence(addr(2), addr(3), num(4) as usize).await,
        Some("watchers") => {
            watchers(
                addr(2),
                addr(3),
                num(4) as usize,
                num(5) as usize,
                num(6) as usize,
                num(7),
                num(8) as usize,
            )
            .await
        }
        _ => eprintln!("usage: door_bench rate|fence|watchers … (see the source's head)"),
    }
}
