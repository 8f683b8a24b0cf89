//! Peer trust, attacked as someone on the same network would (PROTOCOL.md §5): impersonation, relay,
//! reflection, replay, injection, a flipped byte, greetings from the wrong side or from strangers,
//! records naming servers outside the herd, and a rolling change of the herd's secret. Real
//! `herd-server` processes on loopback; a man-in-the-middle proxy written here.
//!
//! In every case no forged record is ever answerable at any server, and the herd converges again once
//! the attacker stops.

use herd_tests::client::{exchange_text, Client};
use herd_tests::eventually;
use herd_tests::herd::{converge, held, iamat, Processes, DEFAULT_TOPOLOGY, NAMES};
use herd_tests::insider::Insider;
use herd_tests::proxy::Proxy;

/// Alford dials Bravo, Bravo dials Charlie (the name that sorts first dials).
const CHAIN: [(&str, &[&str]); 3] = [
    ("Alford", &["Bravo"]),
    ("Bravo", &["Alford", "Charlie"]),
    ("Charlie", &["Bravo"]),
];
const THREE: [&str; 3] = ["Alford", "Bravo", "Charlie"];
const SECRET: &str = "a long random herd secret 7f3a9c";

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// No server answers for any of `clients`.
async fn held_nowhere(herd: &Processes, names: &[&str], clients: &[&str]) {
    for name in names {
        for client in clients {
            assert_eq!(
                held(herd.addr(name), client).await,
                None,
                "{name} holds the forged {client}"
            );
        }
    }
}

/// One greeting attempt from a stranger's socket: the lines the server answers until it closes.
async fn greet(addr: std::net::SocketAddr, bytes: impl AsRef<[u8]>) -> String {
    exchange_text(addr, bytes).await
}

/// Waits until `name`'s log has more than `before` lines containing `needle`.
async fn logged_more(herd: &Processes, name: &str, needle: &str, before: usize) {
    eventually(&format!("{name} to log {needle:?}"), || {
        let log = herd.log(name);
        async move { (count(&log, needle) > before).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn without_a_secret_no_greeting_replaces_a_live_link_and_strangers_records_are_refused() {
    let mut herd = Processes::new(&CHAIN, "");
    herd.start("Bravo").await;
    herd.start("Charlie").await;
    let seed = iamat(herd.addr("Bravo"), "seed", "1").await;
    converge(&herd, &["Bravo", "Charlie"], "seed", &seed).await;

    // Alford is down. Without a secret nothing can be authenticated, so a stranger can pose as
    // Alford — but a record naming a server outside the herd is refused, and goes nowhere.
    let mut fake = Client::connect(herd.addr("Bravo")).await;
    fake.send("HERD-HELLO 4 Alford Bravo -\n").await;
    assert_eq!(fake.text_line().await, "HERD-WELCOME Bravo -\n");
    fake.send(
        "AT Mallory +0.000000000 forged-foreign +1+1 5\n\
         AT Alford +0.000000000 member-record +1+1 5\n",
    )
    .await;
    converge(
        &herd,
        &["Bravo", "Charlie"],
        "member-record",
        "AT Alford +0.000000000 member-record +1+1 5",
    )
    .await;
    held_nowhere(&herd, &["Bravo", "Charlie"], &["forged-foreign"]).await;
    drop(fake);
    logged_more(&herd, "Bravo", "outside the herd", 0).await;

    // The real Alford links up; from then on a greeting in its name is refused and the live link
    // is left alone.
    herd.start("Alford").await;
    let at = iamat(herd.addr("Alford"), "kiwi", "10").await;
    converge(&herd, &THREE, "kiwi", &at).await;
    let downs = count(&herd.log("Bravo"), "link to Alford down");
    let answer = greet(herd.addr("Bravo"), "HERD-HELLO 4 Alford Bravo -\n").await;
    assert_eq!(answer, "HERD-REFUSED link-up\n");
    let at = iamat(herd.addr("Alford"), "kiwi", "11").await;
    converge(&herd, &THREE, "kiwi", &at).await;
    assert_eq!(
        count(&herd.log("Bravo"), "link to Alford down"),
        downs,
        "an unauthenticated greeting took the live link down"
    );
}

#[tokio::test]
async fn with_a_secret_injection_flips_replays_relays_and_reflections_all_fail() {
    let mut herd = Processes::new(&CHAIN, &format!("[herd]\nsecret = {SECRET:?}\n"));
    let proxy = Proxy::start(herd.addr("Bravo")).await;
    let via_proxy = herd.write_config(
        "alford.toml",
        &format!("[herd]\nsecret = {SECRET:?}\n"),
        &[("Bravo", proxy.addr)],
    );
    herd.start("Bravo").await;
    herd.start("Charlie").await;
    herd.start_with("Alford", &via_proxy).await;
    let at = iamat(herd.addr("Alford"), "kiwi", "1").await;
    converge(&herd, &THREE, "kiwi", &at).await;
    let session = proxy.captures()[0].clone();
    assert!(
        !String::from_utf8_lossy(&session.up).contains("kiwi"),
        "records crossed the wire in the clear"
    );
    assert!(!String::from_utf8_lossy(&session.up).contains(SECRET));
    let forged = ["forged-inject", "forged-flip", "forged-foreign"];

    // A line injected into the encrypted stream breaks the link (its bytes read as a frame header
    // swallow what follows until the link is declared silent, or fail to open); nothing of it is
    // stored; Alford dials again and the herd converges.
    let broken = "link to Alford down";
    let before = count(&herd.log("Bravo"), broken);
    proxy.inject(b"AT Alford +0.000000000 forged-inject +1+1 5\n");
    logged_more(&herd, "Bravo", broken, before).await;
    let at = iamat(herd.addr("Alford"), "kiwi", "2").await;
    converge(&herd, &THREE, "kiwi", &at).await;

    // One bit flipped in a frame: it fails to open, at once.
    let before = count(&herd.log("Bravo"), "peer link broken");
    proxy.flip_next();
    logged_more(&herd, "Bravo", "peer link broken", before).await;
    let at = iamat(herd.addr("Alford"), "kiwi", "3").await;
    converge(&herd, &THREE, "kiwi", &at).await;

    // A recorded session replayed whole on a new connection: its greeting is answered with fresh
    // keys, so its first frame does not open; the live link is not disturbed.
    let ups = count(&herd.log("Bravo"), "link to Alford up");
    let answer = greet(herd.addr("Bravo"), &session.up).await;
    let lines: Vec<&str> = answer.lines().collect();
    assert_eq!(lines.len(), 2, "{answer}");
    assert!(lines[0].starts_with("HERD-WELCOME Bravo "), "{answer}");
    assert_eq!(lines[1], "HERD-REFUSED bad-proof");
    assert_eq!(count(&herd.log("Bravo"), "link to Alford up"), ups);

    // Alford's greeting relayed to another server, as it is or in another name.
    let hello = String::from_utf8_lossy(&session.up)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let words: Vec<&str> = hello.split(' ').collect();
    assert_eq!(&words[..4], ["HERD-HELLO", "4", "Alford", "Bravo"]);
    let proof = words[4];
    assert_eq!(
        greet(herd.addr("Charlie"), format!("{hello}\n")).await,
        "HERD-REFUSED unknown-peer\n"
    );
    assert_eq!(
        greet(
            herd.addr("Charlie"),
            format!("HERD-HELLO 4 Bravo Charlie {proof}\n")
        )
        .await,
        "HERD-REFUSED bad-proof\n"
    );
    // Reflected: Alford's greeting back to Alford, and Bravo's answer back to Bravo as a greeting.
    assert_eq!(
        greet(herd.addr("Alford"), format!("{hello}\n")).await,
        "HERD-REFUSED unknown-peer\n"
    );
    let welcome = String::from_utf8_lossy(&session.down)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let answer_proof = welcome.rsplit(' ').next().unwrap();
    assert_eq!(
        greet(
            herd.addr("Bravo"),
            format!("HERD-HELLO 4 Alford Bravo {answer_proof}\n")
        )
        .await,
        "HERD-REFUSED bad-proof\n"
    );
    // From the side that must not dial, from a stranger, in another version.
    for (line, want) in [
        (
            format!("HERD-HELLO 4 Charlie Bravo {proof}\n"),
            "wrong-side",
        ),
        ("HERD-HELLO 4 Mallory Bravo -\n".into(), "unknown-peer"),
        (
            format!("HERD-HELLO 4 Alford Charlie {proof}\n"),
            "wrong-name",
        ),
        ("HERD-HELLO 4 Alford Bravo -\n".into(), "bad-proof"),
        ("HERD-HELLO 1 Alford 00112233\n".into(), "version"),
        // A server of the whole-cache catch-up (version 2) is refused, not misread.
        ("HERD-HELLO 2 Alford Bravo -\n".into(), "version"),
        // Version 3 (64-bit hex reconciliation lines) is refused, not misread.
        ("HERD-HELLO 3 Alford Bravo -\n".into(), "version"),
    ] {
        assert_eq!(
            greet(herd.addr("Bravo"), &line).await,
            format!("HERD-REFUSED {want}\n"),
            "{line}"
        );
    }
    assert_eq!(count(&herd.log("Bravo"), "link to Alford up"), ups);

    // A process holding the secret that greets as Alford while Alford's link answers is refused
    // (the live link is not replaced), and diagnosed as a second server claiming the name.
    let downs = count(&herd.log("Bravo"), "link to Alford down");
    let mut insider = Insider::greet(herd.addr("Bravo"), "Alford", "Bravo", SECRET).await;
    insider
        .send(b"AT Alford +0.000000000 sealed-member +1+1 5\n")
        .await;
    assert!(
        insider.until_closed().await,
        "the insider's link stayed open"
    );
    assert_eq!(insider.text(), "HERD-REFUSED link-up\n");
    logged_more(&herd, "Bravo", "two servers claim the name Alford", 0).await;
    assert!(herd
        .log("Bravo")
        .contains("two servers claim the name Alford: 127.0.0.1:"));
    assert_eq!(count(&herd.log("Bravo"), "link to Alford down"), downs);
    held_nowhere(&herd, &THREE, &["sealed-member"]).await;

    // Even a server that knows the secret cannot bring in a record of a server outside the herd
    // (with Alford stopped, its name is free to take).
    herd.terminate("Alford").await;
    logged_more(&herd, "Bravo", "link to Alford down", downs).await;
    let mut insider = Insider::greet(herd.addr("Bravo"), "Alford", "Bravo", SECRET).await;
    insider
        .send(
            b"AT Mallory +0.000000000 forged-foreign +1+1 5\n\
              AT Alford +0.000000000 sealed-member +1+1 5\n",
        )
        .await;
    converge(
        &herd,
        &["Bravo", "Charlie"],
        "sealed-member",
        "AT Alford +0.000000000 sealed-member +1+1 5",
    )
    .await;
    logged_more(&herd, "Bravo", "outside the herd", 0).await;
    drop(insider);
    herd.start_with("Alford", &via_proxy).await;

    // The attacker stops: the herd converges, and no forged record is answerable anywhere.
    let at = iamat(herd.addr("Alford"), "kiwi", "4").await;
    converge(&herd, &THREE, "kiwi", &at).await;
    held_nowhere(&herd, &THREE, &forged).await;
    let logs: String = THREE.iter().map(|n| herd.log(n)).collect();
    assert!(!logs.contains(SECRET), "the secret is in a log");
}

#[tokio::test]
async fn a_rolling_change_of_secret_loses_nothing() {
    let topology = &DEFAULT_TOPOLOGY;
    let herd_with = |secrets: &str| format!("[herd]\nsecrets = {secrets}\n");
    let mut herd = Processes::new(topology, &herd_with(r#"["old"]"#));
    let both = herd.write_config("both.toml", &herd_with(r#"["new", "old"]"#), &[]);
    let new = herd.write_config("new.toml", &herd_with(r#"["new"]"#), &[]);
    herd.start_all().await;
    let mut acked = Vec::new();
    let mut time = 0u32;
    // Updates flow at every step, at a server that stays up while another restarts; each step ends
    // when every acknowledged update is everywhere.
    for (step, config) in [&both, &new].into_iter().enumerate() {
        for (i, name) in NAMES.iter().enumerate() {
            let at_server = NAMES[(i + 2) % NAMES.len()];
            herd.terminate(name).await;
            for k in 0..5 {
                time += 1;
                let client = format!("roll-{step}-{i}-{k}");
                let at = iamat(herd.addr(at_server), &client, &time.to_string()).await;
                acked.push((client, at));
            }
            herd.start_with(name, config).await;
            for (client, at) in &acked {
                converge(&herd, &NAMES, client, at).await;
            }
        }
    }
    // Every link is up on the new secret alone: a fresh update reaches the far side.
    let at = iamat(herd.addr("Alford"), "last", "999").await;
    converge(&herd, &NAMES, "last", &at).await;
}
