//! Measures how long an update takes to reach another server of the herd: sends IAMATs one at a time
//! to FROM and, after each AT reply, polls TO with `WHATSAT id 1 0` until it answers with that record.
//! Prints p50/p90/p99/max of reply-to-visible time. Bounded by COUNT and a 60 s deadline.
//!
//! `cargo run --release -p herd-cli --example propagation -- FROM_ADDR TO_ADDR [COUNT]`

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let from = args.next().unwrap_or_else(|| "127.0.0.1:12000".into());
    let to = args.next().unwrap_or_else(|| "127.0.0.1:12003".into());
    let count: usize = args.next().and_then(|c| c.parse().ok()).unwrap_or(10_000);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (fr, mut fw) = TcpStream::connect(&from).await?.into_split();
    let (tr, mut tw) = TcpStream::connect(&to).await?.into_split();
    let (mut fr, mut tr) = (BufReader::new(fr), BufReader::new(tr));
    let mut samples = Vec::with_capacity(count);
    let mut line = String::new();
    let run = std::process::id();
    for i in 0..count {
        if Instant::now() > deadline {
            eprintln!("deadline reached after {i} updates");
            break;
        }
        let id = format!("probe-{run}-{}", i % 1000);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        fw.write_all(
            format!(
                "IAMAT {id} +1+1 {}.{:09}\n",
                now.as_secs(),
                now.subsec_nanos()
            )
            .as_bytes(),
        )
        .await?;
        line.clear();
        fr.read_line(&mut line).await?;
        let at = line.trim_end().to_owned();
        let acked = Instant::now();
        loop {
            tw.write_all(format!("WHATSAT {id} 1 0\n").as_bytes())
                .await?;
            let mut reply = String::new();
            tr.read_line(&mut reply).await?;
            let known = reply.starts_with("AT ");
            if known {
                // Skip the JSON and the empty line that end the answer.
                loop {
                    let mut l = String::new();
                    if tr.read_line(&mut l).await? == 0 || l == "\n" {
                        break;
                    }
                }
            }
            if reply.trim_end() == at {
                samples.push(acked.elapsed());
                break;
            }
            if Instant::now() > deadline {
                break;
            }
        }
    }
    samples.sort();
    let q = |p: f64| {
        samples
            .get(((samples.len() as f64 * p) as usize).min(samples.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{} updates {from} -> {to}: visible after p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        samples.last().copied().unwrap_or_default()
    );
    Ok(())
}
