//! Floods a server with IAMATs and records which were acknowledged, then checks a (restarted) server
//! still holds every one: the durability half of `bench/store.sh`.
//!
//! ```text
//! ack_flood flood HOST:PORT CONNS BATCH FILE   # until the server goes away; acknowledged AT lines to FILE
//! ack_flood check HOST:PORT FILE               # prints "acked N missing M"
//! ```
//! Each connection writes a batch of IAMATs (unique client ids) at once, then reads their replies.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

fn flood(addr: &str, conns: usize, batch: usize, file: &str) {
    let next = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let run = format!("{}", std::process::id());
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let (next, acked, addr, run) =
                (next.clone(), acked.clone(), addr.to_owned(), run.clone());
            std::thread::spawn(move || {
                let Ok(stream) = TcpStream::connect(&addr) else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                let mut w = stream.try_clone().expect("clone");
                let mut r = BufReader::new(stream);
                let mut line = String::new();
                // Bounded: at most ten million IAMATs per connection.
                for _ in 0..(10_000_000 / batch.max(1)) {
                    let mut out = String::new();
                    for _ in 0..batch {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        out.push_str(&format!(
                            "IAMAT f{run}-{n} +34.068930-118.445127 {}.5\n",
                            n + 1
                        ));
                    }
                    if w.write_all(out.as_bytes()).is_err() {
                        return;
                    }
                    let mut got = Vec::with_capacity(batch);
                    for _ in 0..batch {
                        line.clear();
                        match r.read_line(&mut line) {
                            Ok(n) if n > 0 && line.starts_with("AT ") => {
                                got.push(line.trim_end().to_owned())
                            }
                            _ => {
                                acked.lock().unwrap().extend(got);
                                return;
                            }
                        }
                    }
                    acked.lock().unwrap().extend(got);
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let acked = acked.lock().unwrap();
    let mut text = acked.join("\n");
    text.push('\n');
    std::fs::write(file, text).expect("write the acknowledged lines");
    eprintln!("acknowledged {}", acked.len());
}

fn check(addr: &str, file: &str) {
    let text = std::fs::read_to_string(file).expect("read the acknowledged lines");
    let acked: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let stream = TcpStream::connect(addr).expect("connect");
    let mut w = stream.try_clone().expect("clone");
    let mut r = BufReader::new(stream);
    let mut missing = 0;
    for chunk in acked.chunks(1000) {
        // A stale IAMAT (client time 0) is answered with the record held.
        let mut out = String::new();
        for at in chunk {
            let client = at.split(' ').nth(3).unwrap_or("");
            out.push_str(&format!("IAMAT {client} +1+1 0\n"));
        }
        w.write_all(out.as_bytes()).expect("write");
        for at in chunk {
            let mut line = String::new();
            r.read_line(&mut line).expect("read");
            if line.trim_end() != *at {
                missing += 1;
            }
        }
    }
    println!("acked {} missing {missing}", acked.len());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["flood", addr, conns, batch, file] => flood(
            addr,
            conns.parse().expect("CONNS"),
            batch.parse().expect("BATCH"),
            file,
        ),
        ["check", addr, file] => check(addr, file),
        _ => {
            eprintln!("usage: ack_flood flood HOST:PORT CONNS BATCH FILE | check HOST:PORT FILE");
            std::process::exit(2);
        }
    }
}
