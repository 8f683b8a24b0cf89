//! Abuse and overload against real `herd-server` processes, each with a small `[limits]`: connections
//! over the limits are told `? busy` at once, a full server still takes its neighbour's link, a
//! dripping line is cut off, a clock from the far future is refused, and the client cap refuses new
//! ids while known ones update (PROTOCOL.md §1, §2).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herd_tests::client::{exchange_text, Client};
use herd_tests::herd::Processes;
use herd_tests::{eventually, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const LONE: [(&str, &[&str]); 1] = [("Alford", &[])];
const PAIR: [(&str, &[&str]); 2] = [("Alford", &["Hamilton"]), ("Hamilton", &["Alford"])];

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A connection to `addr` from the loopback address `from` (Linux answers all of 127/8).
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::from(from), 0))
        .expect("bind a loopback source address");
    tokio::time::timeout(DEADLINE, socket.connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// A client connection that the server has admitted: its IAMAT was answered.
async fn admitted(addr: SocketAddr, client: &str) -> Client {
    let mut c = Client::connect(addr).await;
    c.send(format!("IAMAT {client} +1+1 {}\n", now_secs()))
        .await;
    let reply = c.text_line().await;
    assert!(reply.starts_with("AT "), "{client}: {reply:?}");
    c
}

/// Everything the server says on `stream` until it closes (a reset counts as closed), and how long
/// that took.
async fn until_closed(mut stream: TcpStream) -> (String, Duration) {
    let start = Instant::now();
    let mut all = Vec::new();
    let read = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut all)).await;
    assert!(read.is_ok(), "the server left the connection open");
    (String::from_utf8_lossy(&all).into_owned(), start.elapsed())
}

/// The AT line `addr` holds for `client`, if any.
async fn held(addr: SocketAddr, client: &str) -> Option<String> {
    let reply = exchange_text(addr, format!("WHATSAT {client} 1 0\n")).await;
    reply
        .starts_with("AT ")
        .then(|| reply.lines().next().unwrap_or("").to_owned())
}

/// Writes a copy of the herd's config with `limits` in place of its `[limits]` table, for one server
/// started next; the servers and ports stay the same.
fn config_with(herd: &Processes, file: &str, limits: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(&herd.config).expect("config");
    let servers = &text[text.find("[[server]]").expect("servers")..];
    let path = herd.dir.join(file);
    std::fs::write(&path, format!("[limits]\n{limits}\n{servers}")).expect("write config");
    path
}

/// When even the waits over the limit are all taken (256 connections held for the neighbour's grace),
/// a connection is answered without a task of its own: it must still read `? busy`, not a bare close.
#[tokio::test]
async fn past_the_held_waits_a_connection_is_still_told_busy() {
    // Alford has a neighbour (not started), so connections over the limit wait its grace (500 ms).
    let mut herd = Processes::new(&PAIR, "[limits]\nmax_connections = 2\n");
    herd.start("Alford").await;
    let addr = herd.addr("Alford");
    let _held_open = [admitted(addr, "a").await, admitted(addr, "b").await];
    // More than the 256 waits at once: the rest are refused on the spot.
    let began = Instant::now();
    let tries: Vec<_> = (0..320)
        .map(|_| {
            tokio::spawn(async move {
                let stream = TcpStream::connect(addr).await.expect("connect");
                let (answer, _) = until_closed(stream).await;
                (answer, began.elapsed())
            })
        })
        .collect();
    let mut quick = 0;
    for t in tries {
        let (answer, took) = t.await.expect("task");
        assert_eq!(answer, "? busy max_connections=2\n");
        if took < Duration::from_millis(400) {
            quick += 1;
        }
    }
    // The waits end after the grace; only a connection refused on the spot is answered before it.
    assert!(quick > 0, "no connection was refused on the spot");
}

#[tokio::test]
async fn the_51st_connection_is_told_busy_within_a_second() {
    let mut herd = Processes::new(
        &LONE,
        "[limits]\nmax_connections = 50\nmax_connections_per_ip = 30\n",
    );
    herd.start("Alford").await;
    let addr = herd.addr("Alford");
    // 30 from 127.0.0.1 (its address limit), 20 from 127.0.0.2: 50 in all.
    let mut held_open = Vec::new();
    for i in 0..30 {
        held_open.push(admitted(addr, &format!("c{i}")).await);
    }
    let (answer, took) = until_closed(connect_from([127, 0, 0, 1], addr).await).await;
    assert_eq!(answer, "? busy max_connections_per_ip=30\n");
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    let mut others = Vec::new();
    for i in 0..20 {
        let mut s = connect_from([127, 0, 0, 2], addr).await;
        s.write_all(format!("IAMAT d{i} +1+1 1\n").as_bytes())
            .await
            .unwrap();
        let mut reply = [0u8; 3];
        s.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"AT ", "served from another address");
        others.push(s);
    }
    // The 51st: one line, then closed, at once. A client that speaks first is answered the same.
    for from in [[127, 0, 0, 3], [127, 0, 0, 1]] {
        let (answer, took) = until_closed(connect_from(from, addr).await).await;
        assert_eq!(answer, "? busy max_connections=50\n");
        assert!(took < Duration::from_secs(1), "answered after {took:?}");
    }
    let mut eager = connect_from([127, 0, 0, 4], addr).await;
    eager.write_all(b"IAMAT eager +1+1 1\n").await.unwrap();
    assert_eq!(until_closed(eager).await.0, "? busy max_connections=50\n");
    // A slot that frees up is taken again.
    drop(held_open.pop());
    eventually("a freed slot to serve again", || async move {
        let reply = exchange_text(addr, "IAMAT again +1+1 1\n").await;
        reply.starts_with("AT ").then_some(())
    })
    .await;
    // Each refusal is logged with the peer address; the summary says once that the limit is hit. The
    // log's writer takes a moment to write what it is handed, so the file is read until it holds them.
    eventually("every refusal in the log", || {
        let log = herd.log("Alford");
        async move {
            (log.contains("connection refused: busy")
                && log.contains("peer=127.0.0.3:")
                && log.contains("refusal=busy-per-ip"))
            .then_some(())
        }
    })
    .await;
    assert_eq!(herd.terminate("Alford").await, Some(0));
    let stderr = herd.stderr("Alford");
    assert_eq!(
        stderr.matches("at its connection limit").count(),
        1,
        "{stderr}"
    );
    // Three refusals above, and maybe more while the freed slot was being given back.
    assert!(
        stderr.contains("refused: busy=") && stderr.contains(" busy-per-ip=1"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_neighbour_restarts_and_links_up_while_the_client_limit_is_exhausted() {
    let mut herd = Processes::new(&PAIR, "[limits]\nmax_connections = 50\n");
    herd.start_all().await;
    let (alford, hamilton) = (herd.addr("Alford"), herd.addr("Hamilton"));
    let reply = exchange_text(hamilton, "IAMAT kiwi +1+1 1000\n").await;
    let at = reply.trim_end().to_owned();
    assert!(at.starts_with("AT Hamilton "), "{reply}");
    eventually("Alford to hold kiwi", || {
        let at = at.clone();
        async move { (held(alford, "kiwi").await == Some(at)).then_some(()) }
    })
    .await;

    // Alford goes down; Hamilton fills up with clients.
    herd.kill("Alford").await;
    let mut fillers = Vec::new();
    for i in 0..50 {
        fillers.push(admitted(hamilton, &format!("filler{i}")).await);
    }
    let (answer, took) = until_closed(TcpStream::connect(hamilton).await.unwrap()).await;
    assert_eq!(answer, "? busy max_connections=50\n");
    assert!(took < Duration::from_secs(1), "busy after {took:?}");

    // Alford restarts empty; its link to the full Hamilton comes up and catches it up.
    herd.start("Alford").await;
    eventually("Alford to catch up from the full Hamilton", || {
        let at = at.clone();
        async move { (held(alford, "kiwi").await == Some(at)).then_some(()) }
    })
    .await;
    // Hamilton is still full for clients: the link took no client slot.
    let (answer, _) = until_closed(TcpStream::connect(hamilton).await.unwrap()).await;
    assert_eq!(answer, "? busy max_connections=50\n");
    // And records flood over that link: an update at Alford reaches Hamilton's connected clients' view.
    let reply = exchange_text(alford, format!("IAMAT filler7 +2+2 {}\n", now_secs() + 10)).await;
    let newer = reply.trim_end().to_owned();
    assert!(newer.starts_with("AT Alford "), "{reply}");
    let c = &mut fillers[0];
    let start = Instant::now();
    loop {
        c.send("WHATSAT filler7 1 0\n").await;
        if c.whatsat_answer().await.starts_with(&format!("{newer}\n")) {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "Alford's update never reached Hamilton"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually("the neighbour's refusal in Hamilton's log", || {
        let log = herd.log("Hamilton");
        async move {
            log.contains("a neighbour, over the client limit")
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_dripping_connection_is_closed_after_the_line_time_out() {
    let mut herd = Processes::new(&LONE, "[limits]\nline_timeout_ms = 1000\n");
    herd.start("Alford").await;
    let addr = herd.addr("Alford");
    // An honest client sending whole lines over the same time, and a silent one, stay open: the line
    // time-out runs only while a line is partly sent.
    let mut honest = admitted(addr, "honest").await;
    let silent = TcpStream::connect(addr).await.unwrap();

    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let first_byte = Instant::now();
    // One byte every 100 ms for up to 10 s, never a newline.
    let drip = tokio::spawn(async move {
        for b in b"IAMAT kiwi +1+1 1".iter().cycle().take(100) {
            if wr.write_all(&[*b]).await.is_err() {
                return true; // the server closed
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, rd.read_to_end(&mut rest))
        .await
        .expect("the dripping connection was never closed");
    let took = first_byte.elapsed();
    assert!(rest.is_empty(), "no reply to a line that never ended");
    assert!(
        !drip.is_finished() || drip.await.unwrap(),
        "closed only when the drip ended ({took:?})"
    );
    assert!(
        took >= Duration::from_millis(900),
        "closed before the line time-out: {took:?}"
    );
    for i in 0..5 {
        honest
            .send(format!("IAMAT honest +1+1 {}\n", now_secs() + i))
            .await;
        assert!(honest.text_line().await.starts_with("AT "));
    }
    let mut silent = silent;
    silent.write_all(b"IAMAT silent +1+1 1\n").await.unwrap();
    let mut reply = [0u8; 3];
    silent.read_exact(&mut reply).await.unwrap();
    assert_eq!(
        &reply, b"AT ",
        "a silent connection outlived the line time-out"
    );

    eventually("the line time-out in the log", || {
        let log = herd.log("Alford");
        async move {
            (log.contains("line not ended within the line time-out; closing")
                && log.contains("refusal=line-timeout"))
            .then_some(())
        }
    })
    .await;
    assert_eq!(herd.terminate("Alford").await, Some(0));
    assert!(herd.stderr("Alford").contains("refused: line-timeout=1"));
}

#[tokio::test]
async fn a_far_future_iamat_is_refused_and_a_near_one_accepted() {
    let mut herd = Processes::new(&PAIR, "[limits]\nmax_future_ms = 60000\n");
    herd.start("Alford").await;
    let alford = herd.addr("Alford");
    let now = now_secs();
    let poison = "IAMAT x +1+1 18446744073709551615.999999999";
    let far = format!("IAMAT x +1+1 {}", now + 3600);
    let mut c = Client::connect(alford).await;
    c.send(format!("{poison}\n{far}\n{poison}\n")).await;
    assert_eq!(c.text_line().await, format!("? {poison}\n"));
    assert_eq!(c.text_line().await, format!("? {far}\n"));
    assert_eq!(c.text_line().await, format!("? {poison}\n"));
    // Thirty seconds ahead is within the bound (a client whose clock runs a little fast).
    c.send(format!("IAMAT x +1+1 {}\n", now + 30)).await;
    let near = c.text_line().await;
    assert!(near.starts_with("AT Alford -"), "{near}");
    // The poison did not pin the record: a later real update replaces it.
    c.send(format!("IAMAT x +2+2 {}\n", now + 40)).await;
    assert!(c.text_line().await.contains(" x +2+2 "));
    eventually("one refusal line for the connection", || {
        let log = herd.log("Alford");
        async move {
            (log.matches("IAMAT refused by a limit").count() == 1
                && log.contains("refusal=future-time"))
            .then_some(())
        }
    })
    .await;

    // A peer's record is judged with the herd's skew allowance (60 s) on top: Hamilton, with a
    // one-second bound, stores what Alford accepted 50 s ahead, but refuses the same line from a
    // client.
    let strict = config_with(&herd, "strict.toml", "max_future_ms = 1000");
    herd.config = strict;
    herd.start("Hamilton").await;
    let hamilton = herd.addr("Hamilton");
    let at = near_record(alford, "y", now + 50).await;
    eventually("Hamilton to hold Alford's record from the future", || {
        let at = at.clone();
        async move { (held(hamilton, "y").await == Some(at)).then_some(()) }
    })
    .await;
    let refused = exchange_text(hamilton, format!("IAMAT z +1+1 {}\n", now + 50)).await;
    assert_eq!(refused, format!("? IAMAT z +1+1 {}\n", now + 50));
    assert_eq!(herd.terminate("Alford").await, Some(0));
    assert!(herd.stderr("Alford").contains("refused: future-time=3"));
}

async fn near_record(addr: SocketAddr, client: &str, time: u64) -> String {
    let reply = exchange_text(addr, format!("IAMAT {client} +1+1 {time}\n")).await;
    assert!(reply.starts_with("AT "), "{reply}");
    reply.trim_end().to_owned()
}

#[tokio::test]
async fn the_client_limit_refuses_new_ids_and_keeps_updating_old_ones() {
    let mut herd = Processes::new(&PAIR, "[limits]\nmax_clients = 100\n");
    herd.start("Alford").await;
    // Hamilton may hold two clients of its own.
    let capped = config_with(&herd, "capped.toml", "max_clients = 2");
    herd.config = capped;
    herd.start("Hamilton").await;
    let (alford, hamilton) = (herd.addr("Alford"), herd.addr("Hamilton"));

    let a = near_record(hamilton, "a", 1).await;
    near_record(hamilton, "b", 1).await;
    let mut c = Client::connect(hamilton).await;
    c.send("IAMAT c +1+1 1\nIAMAT d +1+1 1\nIAMAT a +3+3 2\nIAMAT a +4+4 0\nIAMAT e +1+1 1\n")
        .await;
    assert_eq!(c.text_line().await, "? IAMAT c +1+1 1\n");
    assert_eq!(c.text_line().await, "? IAMAT d +1+1 1\n");
    let updated = c.text_line().await;
    assert!(
        updated.starts_with("AT Hamilton ") && updated.contains(" a +3+3 2"),
        "{updated}"
    );
    assert_eq!(
        c.text_line().await,
        updated,
        "a stale update gets the held record"
    );
    assert_eq!(c.text_line().await, "? IAMAT e +1+1 1\n");
    assert_ne!(updated.trim_end(), a);
    // WHATSAT still works for known clients.
    c.send("WHATSAT b 10 1\n").await;
    assert!(c.whatsat_answer().await.starts_with("AT Hamilton "));

    // Records from a peer keep the cap too (a peer cannot fill the cache past it): refused,
    // counted and warned about once for the link.
    near_record(alford, "f", 1).await;
    eventually(
        "Hamilton to refuse a peer's new client past its cap",
        || {
            let log = herd.log("Hamilton");
            async move {
                (log.contains("refused a peer's record past a limit")
                    && log.contains("limit=client-cap"))
                .then_some(())
            }
        },
    )
    .await;
    assert_eq!(held(hamilton, "f").await, None);
    assert_eq!(
        exchange_text(hamilton, "IAMAT g +1+1 1\n").await,
        "? IAMAT g +1+1 1\n"
    );

    eventually("the refusal and the cap in Hamilton's log", || {
        let log = herd.log("Hamilton");
        async move {
            (log.contains("refusal=client-cap") && log.contains("peer=127.0.0.1:")).then_some(())
        }
    })
    .await;
    assert_eq!(herd.terminate("Hamilton").await, Some(0));
    let stderr = herd.stderr("Hamilton");
    assert_eq!(
        stderr.matches("IAMATs for new clients are refused").count(),
        1,
        "once, not per line: {stderr}"
    );
    assert!(stderr.contains("refused: client-cap=4"), "{stderr}");
    let log = herd.log("Hamilton");
    assert_eq!(log.matches("IAMATs for new clients are refused").count(), 1);
    // One refusal line per connection: `c` sent three over-cap IAMATs.
    assert_eq!(log.matches("IAMAT refused by a limit").count(), 2, "{log}");
}

/// Under `ulimit -n 256`, a thousand idle connections cannot leave an honest client unanswered: the
/// server fits `max_connections` into its descriptors (and says so), and a connection past it is told
/// `? busy` and closed within the second, not left in the kernel's queue.
#[tokio::test]
async fn busy_under_a_low_open_file_limit() {
    // This test holds a thousand sockets itself.
    let _ = herd_server::driver::admission::open_files_limit();
    let mut herd = Processes::new(&LONE, "");
    herd.start_wrapped("Alford", &["sh", "-c", "ulimit -n 256 && exec \"$@\"", "-"])
        .await;
    let addr = herd.addr("Alford");
    let mut idle = Vec::new();
    for _ in 0..1000 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await
        {
            idle.push(s);
        }
    }
    let began = Instant::now();
    let mut honest = TcpStream::connect(addr).await.expect("connect");
    honest
        .write_all(format!("IAMAT honest +1+1 {}\n", now_secs()).as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    let read = async {
        while !answer.ends_with(b"\n") {
            match honest.read(&mut byte).await {
                Ok(1) => answer.push(byte[0]),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        answer.starts_with("? busy max_connections=") || answer.starts_with("AT Alford "),
        "no answer within 2 s: {answer:?} after {:?}",
        began.elapsed()
    );
    let stderr = herd.stderr("Alford");
    assert_eq!(
        stderr.matches("max_connections lowered from 10000").count(),
        1,
        "{stderr}"
    );
    drop(idle);
}
