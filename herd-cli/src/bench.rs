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

use crate::{usage, Target};

/// `herd bench` options.
#[derive(clap::Args, Clone)]
pub struct BenchArgs {
    /// Connections at once.
    #[arg(short = 'c', long, default_value_t = 50)]
    connections: usize,
    /// Run this many seconds (the default, 10, unless -n is given).
    #[arg(short = 'd', long, value_name = "SECONDS", conflicts_with = "requests")]
    duration: Option<f64>,
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
enum Kind {
    Iamat,
    Whatsat,
    Raw,
}

/// What the connections share: where to stop, and how far they got.
struct Plan {
    args: BenchArgs,
    addr: SocketAddr,
    timeout: Duration,
    iamat_weight: u64,
    whatsat_weight: u64,
    seeded: u64,
    deadline: Option<Instant>,
    budget: Option<AtomicU64>,
    stop: AtomicBool,
    done: AtomicU64,
}

impl Plan {
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
pub async fn run(args: BenchArgs, target: &Target) -> anyhow::Result<std::process::ExitCode> {
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
    // WHATSAT needs clients the server knows: report some first.
    let seeded = if whatsat_weight > 0 && args.raw_line.is_none() {
        let n = clients.min(10_000);
        crate::within(
            target.timeout,
            || format!("reporting {n} clients to {addr}"),
            seed(addr, n),
        )
        .await?;
        n
    } else {
        0
    };
    let duration = args.duration.unwrap_or(10.0);
    let started = Instant::now();
    let plan = Arc::new(Plan {
        addr,
        timeout: target.timeout,
        iamat_weight,
        whatsat_weight,
        seeded,
        deadline: args
            .requests
            .is_none()
            .then(|| started + Duration::from_secs_f64(duration.max(0.0))),
        budget: args.requests.map(AtomicU64::new),
        stop: AtomicBool::new(false),
        done: AtomicU64::new(0),
        args: args.clone(),
    });
    let progress = progress_bar(&plan);
    let mut tasks = tokio::task::JoinSet::new();
    for conn in 0..args.connections {
        tasks.spawn(connection(plan.clone(), conn as u64));
    }
    let mut total = Tally::default();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).context("histogram")?;
    while let Some(t) = tasks.join_next().await {
        let t = t.context("connection task")?;
        total.ok += t.ok;
        if total.first_error.is_none() {
            total.first_error = t.first_error;
        }
        for (k, v) in t.errors {
            total.error(k, v);
        }
        if let Some(h) = t.hist {
            hist.add(h).context("merging histograms")?;
        }
    }
    let elapsed = started.elapsed();
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    let invalid = total.errors.get("invalid").copied().unwrap_or(0);
    if total.ok == 0 && invalid == 0 {
        // Nothing was answered at all: one clear error, not a report of zeros.
        let cause = total
            .first_error
            .clone()
            .unwrap_or_else(|| "no request was sent".into());
        anyhow::bail!("no request to {addr} was answered: {cause}");
    }
    report(&args, addr, &total, &hist, elapsed);
    // Answered, but with `? …`: the server refused the requests (exit 1, as for the other commands).
    Ok(if invalid > 0 {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

fn progress_bar(plan: &Arc<Plan>) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() || plan.args.json {
        return None;
    }
    let bar = match (plan.args.requests, plan.deadline) {
        (Some(n), _) => indicatif::ProgressBar::new(n),
        _ => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed_precise} {pos} requests ({per_sec}) {wide_bar}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (p, b) = (plan.clone(), bar.clone());
    tokio::spawn(async move {
        while !b.is_finished() {
            b.set_position(p.done.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Some(bar)
}

async fn seed(addr: SocketAddr, n: u64) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let now = ClientTime::from_timestamp(Timestamp::now());
    let mut out = Vec::new();
    for i in 0..n {
        out.extend_from_slice(
            format!("IAMAT bench-{i} +34.068930-118.445127 {}\n", now.as_str()).as_bytes(),
        );
    }
    s.write_all(&out).await?;
    s.shutdown().await?;
    let mut sink = Vec::new();
    s.read_to_end(&mut sink).await?;
    Ok(())
}

async fn connection(plan: Arc<Plan>, conn: u64) -> Tally {
    let mut tally = Tally {
        hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).ok(),
        ..Tally::default()
    };
    let mut stream = match tokio::time::timeout(plan.timeout, TcpStream::connect(plan.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tally.error("connect", 1);
            tally.first_error = Some(format!("connecting to {}: {e}", plan.addr));
            return tally;
        }
        Err(_) => {
            tally.error("connect", 1);
            tally.first_error = Some(format!(
                "connecting to {}: no answer within {:?} (--timeout)",
                plan.addr, plan.timeout
            ));
            return tally;
        }
    };
    stream.set_nodelay(true).ok();
    let args = &plan.args;
    let mut out = Vec::with_capacity(args.pipeline * 80);
    let mut inbuf = vec![0u8; 64 * 1024];
    let mut pending: VecDeque<Kind> = VecDeque::with_capacity(args.pipeline);
    // Each connection walks its own stretch of the id space, so -n N --clients N reports N distinct clients.
    let mut seq = conn * (args.clients / args.connections as u64).max(1);
    let weight = plan.iamat_weight + plan.whatsat_weight;
    let time = ClientTime::from_timestamp(Timestamp::now());
    // What follows the client id in every IAMAT, made once: the generator's own cost per request
    // stays small next to the server's (it shares the machine).
    let iamat_tail = format!(" +34.068930-118.445127 {}", time.as_str());
    let mut digits = itoa::Buffer::new();
    // Bytes read but not yet matched to a reply, and whether we are inside a WHATSAT answer.
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = plan.claim(args.pipeline);
        if n == 0 {
            break;
        }
        out.clear();
        for _ in 0..n {
            seq += 1;
            let kind = if let Some(line) = &args.raw_line {
                out.extend_from_slice(line.as_bytes());
                Kind::Raw
            } else if seq % weight < plan.iamat_weight {
                let id = seq % args.clients.max(1);
                out.extend_from_slice(b"IAMAT bench-");
                out.extend_from_slice(digits.format(id).as_bytes());
                out.extend_from_slice(iamat_tail.as_bytes());
                Kind::Iamat
            } else {
                let id = seq % plan.seeded.max(1);
                out.extend_from_slice(
                    format!("WHATSAT bench-{id} {} {}", args.radius, args.bound).as_bytes(),
                );
                Kind::Whatsat
            };
            out.extend_from_slice(b"\n");
            pending.push_back(kind);
        }
        let sent = Instant::now();
        if let Err(e) = stream.write_all(&out).await {
            tally.error("write", pending.len() as u64);
            tally.first_error = Some(format!("sending to {}: {e}", plan.addr));
            return tally;
        }
        let mut in_json = false;
        while !pending.is_empty() {
            let got = match tokio::time::timeout(plan.timeout, stream.read(&mut inbuf)).await {
                Ok(Ok(0)) => {
                    tally.error("closed", pending.len() as u64);
                    tally.first_error = Some(format!("{} closed the connection", plan.addr));
                    return tally;
                }
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    tally.error("read", pending.len() as u64);
                    tally.first_error = Some(format!("reading from {}: {e}", plan.addr));
                    return tally;
                }
                Err(_) => {
                    tally.error("timeout", pending.len() as u64);
                    tally.first_error = Some(format!(
                        "{} sent no answer within {:?} (--timeout)",
                        plan.addr, plan.timeout
                    ));
                    return tally;
                }
            };
            carry.extend_from_slice(&inbuf[..got]);
            let mut start = 0;
            while let Some(i) = memchr::memchr(b'\n', &carry[start..]) {
                let line = &carry[start..start + i];
                start += i + 1;
                let Some(&kind) = pending.front() else { break };
                let complete = if in_json {
                    line.is_empty()
                } else if line.starts_with(b"? ") {
                    tally.error("invalid", 1);
                    pending.pop_front();
                    continue;
                } else if kind == Kind::Whatsat {
                    in_json = true;
                    false
                } else {
                    true
                };
                if complete {
                    in_json = false;
                    pending.pop_front();
                    tally.ok += 1;
                    if let Some(h) = tally.hist.as_mut() {
                        let _ = h.record((sent.elapsed().as_nanos() as u64).max(1));
                    }
                }
            }
            carry.drain(..start);
        }
        plan.done.fetch_add(n as u64, Ordering::Relaxed);
    }
    tally
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
