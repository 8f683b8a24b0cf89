//! `herd bench`: a load generator for the herd protocol (or any one-line-per-reply protocol).
//!
//! Each connection is one task that writes a batch of `-P` requests in one write and reads until all
//! their replies are in; latency is measured per request from its batch's write to its reply. Replies are
//! counted by scanning for line ends only (a WHATSAT answer ends at its empty line), so the generator
//! stays cheaper than the servers it measures.

use std::collections::{BTreeMap, VecDeque};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use herd_proto::{ClientTime, Timestamp};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{usage, ServerChoice};

/// `herd bench` options.
#[derive(clap::Args, Clone)]
pub struct BenchArgs {
    /// Connections at once.
    #[arg(short = 'c', long, default_value_t = 50)]
    connections: usize,
    /// Run this long: seconds, or with a unit (500ms, 2s, 1m) [default: 10s, unless -n is given].
    #[arg(short = 'd', long, value_name = "DURATION", conflicts_with = "requests", value_parser = crate::parse_duration)]
    duration: Option<Duration>,
    /// Send this many requests in all, then stop.
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Requests in flight per connection (pipelining depth).
    #[arg(short = 'P', long, default_value_t = 1)]
    pipeline: usize,
    /// IAMAT:WHATSAT ratio, e.g. 1:0 (only IAMAT), 9:1, 0:1 (only WHATSAT).
    #[arg(long, default_value = "1:0")]
    mix: String,
    /// Size of the client-id space (IAMATs cycle through it).
    #[arg(long, default_value_t = 100_000)]
    clients: u64,
    /// Where the clients are: each client id at its own place over the inhabited latitudes, the same
    /// for the same SEED (so two runs, or a run and a live page, see the same map).
    #[arg(long, value_name = "SEED", default_value_t = 1, conflicts_with = "at")]
    spread: u64,
    /// Every client at this one place instead: LAT,LON in degrees or ISO 6709 (+34.068930-118.445127).
    #[arg(long, value_name = "LOCATION", value_parser = parse_at)]
    at: Option<String>,
    /// WHATSAT radius in km.
    #[arg(long, default_value = "10")]
    radius: String,
    /// WHATSAT bound.
    #[arg(long, default_value_t = 5)]
    bound: u8,
    /// Send this line instead (e.g. PING for Redis) and count one reply line per request.
    #[arg(long, value_name = "LINE")]
    raw_line: Option<String>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    /// Generator threads (1: a single-threaded runtime, which leaves the other cores to the server).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RequestKind {
    Iamat,
    Whatsat,
    Raw,
}

/// What the connections share: where to stop, and how far they got.
struct BenchPlan {
    args: BenchArgs,
    addr: SocketAddr,
    timeout: Duration,
    iamat_weight: u64,
    whatsat_weight: u64,
    seeded: u64,
    /// Where each client is.
    places: PlacesMix,
    started: Instant,
    deadline: Option<Instant>,
    budget: Option<AtomicU64>,
    stop: AtomicBool,
    done: AtomicU64,
}

impl BenchPlan {
    /// Claims up to `n` requests; 0 means stop.
    fn claim(&self, n: usize) -> usize {
        if self.stop.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d) {
            return 0;
        }
        match &self.budget {
            None => n,
            Some(left) => {
                let mut cur = left.load(Ordering::Relaxed);
                loop {
                    let take = cur.min(n as u64);
                    if take == 0 {
                        return 0;
                    }
                    match left.compare_exchange_weak(
                        cur,
                        cur - take,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => return take as usize,
                        Err(now) => cur = now,
                    }
                }
            }
        }
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    /// The first network error, to name when nothing was answered.
    first_error: Option<String>,
    errors: BTreeMap<&'static str, u64>,
    hist: Option<Histogram<u64>>,
}

impl Tally {
    fn error(&mut self, kind: &'static str, n: u64) {
        *self.errors.entry(kind).or_default() += n;
    }

    /// A network error that ends the connection: `n` requests lost to it, and what happened, kept
    /// to name when nothing was answered at all.
    fn fail(&mut self, kind: &'static str, n: u64, message: String) {
        self.error(kind, n);
        self.first_error = Some(message);
    }

    /// Adds a connection's tally.
    fn add(&mut self, t: Tally, hist: &mut Histogram<u64>) -> anyhow::Result<()> {
        self.ok += t.ok;
        if self.first_error.is_none() {
            self.first_error = t.first_error;
        }
        for (k, v) in t.errors {
            self.error(k, v);
        }
        if let Some(h) = t.hist {
            hist.add(h).context("merging histograms")?;
        }
        Ok(())
    }
}

fn parse_mix(mix: &str) -> anyhow::Result<(u64, u64)> {
    let (a, b) = mix
        .split_once(':')
        .ok_or_else(|| usage(format!("--mix {mix:?} is not IAMAT:WHATSAT like 9:1")))?;
    let a: u64 = a
        .trim()
        .parse()
        .map_err(|_| usage(format!("--mix {mix:?}: {a:?} is not a count")))?;
    let b: u64 = b
        .trim()
        .parse()
        .map_err(|_| usage(format!("--mix {mix:?}: {b:?} is not a count")))?;
    if a + b == 0 {
        return Err(usage("--mix must send something"));
    }
    Ok((a, b))
}

/// Runs the benchmark and prints the figures.
pub async fn run(args: BenchArgs, target: &ServerChoice) -> anyhow::Result<std::process::ExitCode> {
    if args.connections == 0 || args.pipeline == 0 {
        return Err(usage("-c and -P must be at least 1"));
    }
    let (iamat_weight, whatsat_weight) = parse_mix(&args.mix)?;
    let addr = crate::target::resolve(
        target.to.as_deref(),
        target.config.as_deref(),
        target.timeout,
    )
    .await?;
    let clients = args.clients.max(1);
    let places = match &args.at {
        Some(at) => PlacesMix::At(at.clone()),
        None => PlacesMix::Spread(args.spread),
    };
    // WHATSAT needs clients the server knows: report some first.
    let seeded = if whatsat_weight > 0 && args.raw_line.is_none() {
        let n = clients.min(10_000);
        crate::within(
            target.timeout,
            || format!("reporting {n} clients to {addr}"),
            seed(addr, n, &places),
        )
        .await?;
        n
    } else {
        0
    };
    let duration = args.duration.unwrap_or(Duration::from_secs(10));
    let started = Instant::now();
    let plan = Arc::new(BenchPlan {
        addr,
        timeout: target.timeout,
        iamat_weight,
        whatsat_weight,
        seeded,
        places,
        started,
        deadline: args.requests.is_none().then(|| started + duration),
        budget: args.requests.map(AtomicU64::new),
        stop: AtomicBool::new(false),
        done: AtomicU64::new(0),
        args: args.clone(),
    });
    let (total, hist) = drive(&plan).await?;
    let elapsed = started.elapsed();
    verdict(&args, addr, &total, &hist, elapsed)
}

/// Runs the plan's connections, with the progress line, and adds up their tallies.
async fn drive(plan: &Arc<BenchPlan>) -> anyhow::Result<(Tally, Histogram<u64>)> {
    let progress = progress_bar(plan);
    let mut tasks = tokio::task::JoinSet::new();
    for conn in 0..plan.args.connections {
        tasks.spawn(connection(plan.clone(), conn as u64));
    }
    let mut total = Tally::default();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).context("histogram")?;
    while let Some(t) = tasks.join_next().await {
        total.add(t.context("connection task")?, &mut hist)?;
    }
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    Ok((total, hist))
}

/// Prints the report, unless nothing was answered at all (then one clear error, not a report of
/// zeros). Answered, but with `? …`: the server refused the requests (exit 1, as for the other
/// commands).
fn verdict(
    args: &BenchArgs,
    addr: SocketAddr,
    total: &Tally,
    hist: &Histogram<u64>,
    elapsed: Duration,
) -> anyhow::Result<std::process::ExitCode> {
    let invalid = total.errors.get("invalid").copied().unwrap_or(0);
    if total.ok == 0 && invalid == 0 {
        let cause = total
            .first_error
            .clone()
            .unwrap_or_else(|| "no request was sent".into());
        anyhow::bail!("no request to {addr} was answered: {cause}");
    }
    report(args, addr, total, hist, elapsed);
    Ok(if invalid > 0 {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// The progress line on a terminal (stderr), like oha's and wrk's: against the duration (the
/// default mode) or the request count (`-n`), with the requests so far and their rate as the final
/// report counts it (requests over elapsed time, rounded), so the last figure shown is the one
/// printed.
fn progress_bar(plan: &Arc<BenchPlan>) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() || plan.args.json {
        return None;
    }
    let (bar, template) = match (plan.args.requests, plan.deadline) {
        (Some(n), _) => (
            indicatif::ProgressBar::new(n),
            "{elapsed:>4} [{wide_bar}] {pos}/{len} requests, {msg}",
        ),
        (None, Some(deadline)) => {
            let ms = deadline.saturating_duration_since(plan.started).as_millis();
            (
                indicatif::ProgressBar::new(u64::try_from(ms).unwrap_or(u64::MAX).max(1)),
                "{elapsed:>4} of {prefix} [{wide_bar}] {msg}",
            )
        }
        (None, None) => (indicatif::ProgressBar::new_spinner(), "{spinner} {msg}"),
    };
    // Drawn only once its prefix and message are set.
    bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    if let Some(d) = plan.deadline {
        bar.set_prefix(seconds(d.saturating_duration_since(plan.started)));
        bar.set_message("0 requests, 0/s");
    } else {
        bar.set_message("0/s");
    }
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr_with_hz(10));
    let (p, b) = (plan.clone(), bar.clone());
    tokio::spawn(async move {
        while !b.is_finished() {
            let done = p.done.load(Ordering::Relaxed);
            let elapsed = p.started.elapsed();
            match p.args.requests {
                Some(_) => b.set_position(done),
                None => b.set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)),
            }
            let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
            let requests = if p.args.requests.is_some() {
                String::new()
            } else {
                format!("{} requests, ", grouped(done))
            };
            b.set_message(format!("{requests}{}/s", grouped(rate.round() as u64)));
            tokio::time::sleep(PROGRESS_EVERY).await;
        }
    });
    Some(bar)
}

/// `d` as whole seconds when it is, else with the tenths: `10s`, `2.5s`.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// `n` with thousands separated by commas: `22,219`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Where the bench's clients report to be.
#[derive(Clone)]
enum PlacesMix {
    /// Each client id at its own place, from this seed.
    Spread(u64),
    /// Every client here (ISO 6709).
    At(String),
}

impl PlacesMix {
    /// Writes the location of client `id` (ISO 6709, as IAMAT carries it) to `out`.
    fn write(&self, id: u64, out: &mut Vec<u8>) {
        match self {
            PlacesMix::At(at) => out.extend_from_slice(at.as_bytes()),
            PlacesMix::Spread(seed) => {
                let (lat, lon) = spread(*seed, id);
                write_degrees(lat, out);
                write_degrees(lon, out);
            }
        }
    }
}

/// Client `id`'s place under `seed`, in ten-thousandths of a degree: longitude anywhere, latitude
/// between 56° S and 72° N (where people live), even over the area, not bunched at the poles.
fn spread(seed: u64, id: u64) -> (i32, i32) {
    // splitmix64: every (seed, id) its own well-mixed 64 bits, with no state to share.
    let mut z = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(id)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let unit = |bits: u64| (bits as f64) / (u32::MAX as f64 + 1.0);
    let (south, north) = ((-56f64).to_radians().sin(), 72f64.to_radians().sin());
    let lat = (south + unit(z >> 32) * (north - south))
        .asin()
        .to_degrees();
    let lon = -180.0 + unit(z & 0xffff_ffff) * 360.0;
    ((lat * 1e4).round() as i32, (lon * 1e4).round() as i32)
}

/// Writes ten-thousandths of a degree as ISO 6709 does: a sign, the degrees, four decimals.
fn write_degrees(v: i32, out: &mut Vec<u8>) {
    out.push(if v < 0 { b'-' } else { b'+' });
    let v = v.unsigned_abs();
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(digits.format(v / 10_000).as_bytes());
    out.push(b'.');
    let frac = v % 10_000;
    out.extend_from_slice(&[
        b'0' + (frac / 1000) as u8,
        b'0' + (frac / 100 % 10) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// `--at`: LAT,LON in degrees, or an ISO 6709 location; as ISO 6709.
fn parse_at(s: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "{s:?} is not a location: LAT,LON in degrees, or ISO 6709 like +34.068930-118.445127"
        )
    };
    if let Some((lat, lon)) = s.split_once(',') {
        let (lat, lon) = (lat.trim().parse::<f64>(), lon.trim().parse::<f64>());
        let (Ok(lat), Ok(lon)) = (lat, lon) else {
            return Err(bad());
        };
        return herd_proto::Location::from_degrees(lat, lon)
            .map(|l| l.as_str().to_owned())
            .ok_or_else(bad);
    }
    herd_proto::Location::parse(s.as_bytes())
        .map(|l| l.as_str().to_owned())
        .map_err(|_| bad())
}

async fn seed(addr: SocketAddr, n: u64, places: &PlacesMix) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let now = ClientTime::from_timestamp(Timestamp::now());
    let mut out = Vec::new();
    for i in 0..n {
        out.extend_from_slice(format!("IAMAT bench-{i} ").as_bytes());
        places.write(i, &mut out);
        out.extend_from_slice(format!(" {}\n", now.as_str()).as_bytes());
    }
    s.write_all(&out).await?;
    s.shutdown().await?;
    let mut sink = Vec::new();
    s.read_to_end(&mut sink).await?;
    Ok(())
}

/// One connection: batches of `-P` requests, each written at once, then read until every reply
/// is in; stops when the plan says so or at the first network error (counted for the requests
/// still waiting).
async fn connection(plan: Arc<BenchPlan>, conn: u64) -> Tally {
    let mut tally = Tally {
        hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).ok(),
        ..Tally::default()
    };
    let mut stream = match connect(&plan).await {
        Ok(s) => s,
        Err(message) => {
            tally.fail("connect", 1, message);
            return tally;
        }
    };
    stream.set_nodelay(true).ok();
    let pipeline = plan.args.pipeline;
    let mut requests = Requests::new(&plan, conn);
    let mut replies = Replies::new(pipeline);
    let mut out = Vec::with_capacity(pipeline * 80);
    let mut inbuf = vec![0u8; 64 * 1024];
    loop {
        let n = plan.claim(pipeline);
        if n == 0 {
            break;
        }
        out.clear();
        for _ in 0..n {
            let kind = requests.write(&mut out);
            replies.pending.push_back(kind);
        }
        let sent = Instant::now();
        if let Err(e) = stream.write_all(&out).await {
            let message = format!("sending to {}: {e}", plan.addr);
            tally.fail("write", replies.pending.len() as u64, message);
            return tally;
        }
        replies.in_json = false;
        while !replies.pending.is_empty() {
            match read(&mut stream, &mut inbuf, &plan).await {
                Ok(got) => replies.feed(&inbuf[..got], sent, &mut tally),
                Err((kind, message)) => {
                    tally.fail(kind, replies.pending.len() as u64, message);
                    return tally;
                }
            }
        }
        plan.done.fetch_add(n as u64, Ordering::Relaxed);
    }
    tally
}

/// Connects to the server, within the timeout; or says why not.
async fn connect(plan: &BenchPlan) -> Result<TcpStream, String> {
    match tokio::time::timeout(plan.timeout, TcpStream::connect(plan.addr)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("connecting to {}: {e}", plan.addr)),
        Err(_) => Err(format!(
            "connecting to {}: no answer within {:?} (--timeout)",
            plan.addr, plan.timeout
        )),
    }
}

/// Reads what the server sent, within the timeout: the byte count, or the kind of error (as the
/// report counts it) and what happened.
async fn read(
    stream: &mut TcpStream,
    buf: &mut [u8],
    plan: &BenchPlan,
) -> Result<usize, (&'static str, String)> {
    match tokio::time::timeout(plan.timeout, stream.read(buf)).await {
        Ok(Ok(0)) => Err(("closed", format!("{} closed the connection", plan.addr))),
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(("read", format!("reading from {}: {e}", plan.addr))),
        Err(_) => Err((
            "timeout",
            format!(
                "{} sent no answer within {:?} (--timeout)",
                plan.addr, plan.timeout
            ),
        )),
    }
}

/// The requests of one connection, written one by one. What is the same in every request is made
/// once, so the generator's own cost per request stays small next to the server's (it shares the
/// machine).
struct Requests<'a> {
    plan: &'a BenchPlan,
    /// The request count so far, which picks each request's client and kind.
    seq: u64,
    weight: u64,
    /// What follows the location in every IAMAT.
    iamat_tail: String,
    digits: itoa::Buffer,
}

impl<'a> Requests<'a> {
    fn new(plan: &'a BenchPlan, conn: u64) -> Self {
        let args = &plan.args;
        let time = ClientTime::from_timestamp(Timestamp::now());
        Requests {
            plan,
            // Each connection walks its own stretch of the id space, so -n N --clients N reports N
            // distinct clients.
            seq: conn * (args.clients / args.connections as u64).max(1),
            weight: plan.iamat_weight + plan.whatsat_weight,
            iamat_tail: format!(" {}", time.as_str()),
            digits: itoa::Buffer::new(),
        }
    }

    /// Appends the next request line (with its `\n`) to `out`; returns its kind.
    #[inline]
    fn write(&mut self, out: &mut Vec<u8>) -> RequestKind {
        let (plan, args) = (self.plan, &self.plan.args);
        self.seq += 1;
        let kind = if let Some(line) = &args.raw_line {
            out.extend_from_slice(line.as_bytes());
            RequestKind::Raw
        } else if self.seq % self.weight < plan.iamat_weight {
            let id = self.seq % args.clients.max(1);
            out.extend_from_slice(b"IAMAT bench-");
            out.extend_from_slice(self.digits.format(id).as_bytes());
            out.push(b' ');
            plan.places.write(id, out);
            out.extend_from_slice(self.iamat_tail.as_bytes());
            RequestKind::Iamat
        } else {
            let id = self.seq % plan.seeded.max(1);
            out.extend_from_slice(
                format!("WHATSAT bench-{id} {} {}", args.radius, args.bound).as_bytes(),
            );
            RequestKind::Whatsat
        };
        out.extend_from_slice(b"\n");
        kind
    }
}

/// The replies a connection waits for, matched to its requests by scanning for line ends only: a
/// reply is one line, but a WHATSAT answer ends at its empty line.
struct Replies {
    /// The kinds of the requests not answered yet, oldest first.
    pending: VecDeque<RequestKind>,
    /// Bytes read but not yet matched to a reply.
    carry: Vec<u8>,
    /// Inside a WHATSAT answer.
    in_json: bool,
}

impl Replies {
    fn new(pipeline: usize) -> Self {
        Replies {
            pending: VecDeque::with_capacity(pipeline),
            carry: Vec::new(),
            in_json: false,
        }
    }

    /// Matches the whole lines of what was read (after what is carried) to the requests waiting,
    /// counting each answer — and its latency since `sent` — or `? ` refusal in `tally`.
    #[inline]
    fn feed(&mut self, bytes: &[u8], sent: Instant, tally: &mut Tally) {
        self.carry.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(i) = memchr::memchr(b'\n', &self.carry[start..]) {
            let line = &self.carry[start..start + i];
            start += i + 1;
            let Some(&kind) = self.pending.front() else {
                break;
            };
            let complete = if self.in_json {
                line.is_empty()
            } else if line.starts_with(b"? ") {
                tally.error("invalid", 1);
                self.pending.pop_front();
                continue;
            } else if kind == RequestKind::Whatsat {
                self.in_json = true;
                false
            } else {
                true
            };
            if complete {
                self.in_json = false;
                self.pending.pop_front();
                tally.ok += 1;
                if let Some(h) = tally.hist.as_mut() {
                    let _ = h.record((sent.elapsed().as_nanos() as u64).max(1));
                }
            }
        }
        self.carry.drain(..start);
    }
}

fn report(args: &BenchArgs, addr: SocketAddr, t: &Tally, h: &Histogram<u64>, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rate = t.ok as f64 / secs;
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let what = match &args.raw_line {
        Some(l) => format!("raw line {l:?}"),
        None => format!("mix IAMAT:WHATSAT {}", args.mix),
    };
    if args.json {
        let v = json!({
            "target": addr.to_string(),
            "connections": args.connections,
            "pipeline": args.pipeline,
            "workload": what,
            "seconds": secs,
            "requests": t.ok,
            "requests_per_sec": rate,
            "errors": t.errors,
            "latency_us": {
                "p50": us(0.5), "p90": us(0.9), "p99": us(0.99), "p99.9": us(0.999),
                "max": h.max() as f64 / 1000.0,
            },
        });
        println!("{v}");
        return;
    }
    println!(
        "herd bench: {addr}, {} connections, pipeline {}, {what}, {secs:.2} s",
        args.connections, args.pipeline
    );
    let errors: u64 = t.errors.values().sum();
    println!("requests: {} ({rate:.0}/s), errors: {errors}", t.ok);
    for (k, v) in &t.errors {
        println!("  {k}: {v}");
    }
    println!(
        "latency µs: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        h.max() as f64 / 1000.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_spread_over_the_inhabited_map_the_same_for_a_seed() {
        let mut seen = std::collections::HashSet::new();
        for id in 0..2000 {
            let (lat, lon) = spread(1, id);
            assert!((-560_000..=720_000).contains(&lat), "{lat}");
            assert!((-1_800_000..=1_800_000).contains(&lon), "{lon}");
            seen.insert((lat, lon));
            let mut out = Vec::new();
            PlacesMix::Spread(1).write(id, &mut out);
            let loc = herd_proto::Location::parse(&out).expect("an ISO 6709 location");
            assert!((loc.latitude() - f64::from(lat) / 1e4).abs() < 1e-9);
            assert!((loc.longitude() - f64::from(lon) / 1e4).abs() < 1e-9);
        }
        assert!(seen.len() > 1990, "{} places for 2000 clients", seen.len());
        // Both hemispheres, both sides of the meridian.
        assert!(
            seen.iter().any(|&(a, b)| a < 0 && b < 0) && seen.iter().any(|&(a, b)| a > 0 && b > 0)
        );
        assert_eq!(spread(1, 7), spread(1, 7));
        assert_ne!(spread(1, 7), spread(2, 7));
        let mut out = Vec::new();
        write_degrees(-5, &mut out);
        write_degrees(1_234_567, &mut out);
        assert_eq!(out, b"-0.0005+123.4567");
    }

    #[test]
    fn at_takes_degrees_or_iso_6709_and_rates_are_grouped() {
        assert_eq!(parse_at("34.5, -118.25").unwrap(), "+34.500000-118.250000");
        assert_eq!(
            parse_at("+34.068930-118.445127").unwrap(),
            "+34.068930-118.445127"
        );
        for bad in ["", "x,y", "91,0", "34.5", "+34"] {
            assert!(parse_at(bad).is_err(), "{bad}");
        }
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(22_219), "22,219");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(seconds(Duration::from_secs(10)), "10s");
        assert_eq!(seconds(Duration::from_millis(2500)), "2.5s");
    }
}
