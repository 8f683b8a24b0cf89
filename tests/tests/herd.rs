//! The herd as separate `herd-server serve NAME` processes on the default topology: flooding, kills
//! and restarts, stale updates, peer trust.

use std::collections::{BTreeMap, BTreeSet};

use herd_tests::client::{exchange_text, Client};
use herd_tests::eventually;
use herd_tests::herd::{converge, held, iamat, Processes, DEFAULT_TOPOLOGY, NAMES};

#[tokio::test]
async fn an_update_reaches_every_server() {
    let mut herd = Processes::new(&DEFAULT_TOPOLOGY, "");
    herd.start_all().await;
    let at = iamat(
        herd.addr("Alford"),
        "kiwi.cs.ucla.edu",
        "1479413884.392014450",
    )
    .await;
    assert!(at.starts_with("AT Alford +"));
    converge(&herd, &NAMES, "kiwi.cs.ucla.edu", &at).await;
    // Holiday is two hops from Alford, whichever way round.
    let answer = exchange_text(herd.addr("Holiday"), "WHATSAT kiwi.cs.ucla.edu 10 3\n").await;
    assert!(answer.starts_with(&format!("{at}\n{{")), "{answer}");
}

/// Survivors connected to `from` when `dead` are down, on the default topology.
fn reachable(from: &str, dead: &[&str]) -> BTreeSet<&'static str> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![NAMES.iter().copied().find(|n| *n == from).unwrap()];
    while let Some(n) = todo.pop() {
        if dead.contains(&n) || !seen.insert(n) {
            continue;
        }
        let (_, neighbors) = DEFAULT_TOPOLOGY
            .iter()
            .find(|(name, _)| *name == n)
            .unwrap();
        todo.extend(neighbors.iter().copied());
    }
    seen
}

#[tokio::test]
async fn every_way_to_kill_two_servers() {
    let mut herd = Processes::new(&DEFAULT_TOPOLOGY, "");
    herd.start_all().await;
    // A record everyone has before the kills.
    let mut newest: BTreeMap<String, String> = BTreeMap::new();
    let base = iamat(herd.addr("Ball"), "kiwi", "1000").await;
    converge(&herd, &NAMES, "kiwi", &base).await;
    newest.insert("kiwi".into(), base.clone());
    let mut splits = 0;
    let mut case = 0u32;
    let pairs: Vec<[&str; 2]> = NAMES
        .iter()
        .enumerate()
        .flat_map(|(i, a)| NAMES[i + 1..].iter().map(move |b| [*a, *b]))
        .collect();
    assert_eq!(pairs.len(), 10);
    for dead in pairs {
        {
            case += 1;
            herd.kill(dead[0]).await;
            herd.kill(dead[1]).await;
            let survivors: Vec<&str> = NAMES
                .iter()
                .copied()
                .filter(|n| !dead.contains(n))
                .collect();
            let at_server = survivors[0];
            let before = held(herd.addr(survivors[0]), "kiwi").await.unwrap();
            let at = iamat(herd.addr(at_server), "kiwi", &format!("{}", 1000 + case)).await;
            // A client of this case only, for the restart check.
            let own = format!("case{case}");
            let own_at = iamat(herd.addr(at_server), &own, "1").await;
            let connected = reachable(at_server, &dead);
            let connected_now: Vec<&str> = connected.iter().copied().collect();
            converge(&herd, &connected_now, "kiwi", &at).await;
            let cut_off: Vec<&str> = survivors
                .iter()
                .copied()
                .filter(|n| !connected.contains(n))
                .collect();
            if !cut_off.is_empty() {
                splits += 1;
                for n in &cut_off {
                    let had = held(herd.addr(n), "kiwi").await;
                    assert_ne!(
                        had.as_deref(),
                        Some(at.as_str()),
                        "{n} is cut off from {at_server}"
                    );
                    assert!(had.is_some(), "{n} keeps what it had ({before})");
                }
            }
            herd.start(dead[0]).await;
            herd.start(dead[1]).await;
            converge(&herd, &NAMES, "kiwi", &at).await;
            converge(&herd, &NAMES, &own, &own_at).await;
            newest.insert("kiwi".into(), at);
            newest.insert(own, own_at);
        }
    }
    // The default herd is the ring Alford–Hamilton–Holiday–Ball–Welsh: killing two servers that are
    // not neighbours (five of the ten pairs) leaves the other three split in two.
    assert_eq!(splits, 5, "five of the ten pairs split the herd");
    // After all the restarts, every server holds the newest record of every client.
    for (client, at) in &newest {
        converge(&herd, &NAMES, client, at).await;
    }
}

#[tokio::test]
async fn a_stale_update_never_replaces_a_newer_one() {
    let mut herd = Processes::new(&DEFAULT_TOPOLOGY, "");
    herd.start_all().await;
    let newer = iamat(herd.addr("Alford"), "kiwi", "2000.5").await;
    converge(&herd, &NAMES, "kiwi", &newer).await;
    for name in NAMES {
        let reply = iamat(herd.addr(name), "kiwi", "1999.999999999").await;
        assert_eq!(
            reply, newer,
            "{name} answers a stale IAMAT with the held record"
        );
    }
    // Same client time at another server: the greater server name wins everywhere.
    let tie = iamat(herd.addr("Welsh"), "kiwi", "2000.5").await;
    assert!(tie.starts_with("AT Welsh "), "Welsh > Alford: {tie}");
    converge(&herd, &NAMES, "kiwi", &tie).await;
    let again = iamat(herd.addr("Ball"), "kiwi", "2000.5").await;
    assert_eq!(again, tie, "Ball < Welsh");
    converge(&herd, &NAMES, "kiwi", &tie).await;
}

#[tokio::test]
async fn peers_must_be_neighbours_and_know_the_secret() {
    let mut herd = Processes::new(
        &DEFAULT_TOPOLOGY,
        "[herd]\nsecret = \"correct horse battery staple\"\n",
    );
    herd.start_all().await;
    // Links come up with the secret: flooding works.
    let at = iamat(herd.addr("Alford"), "kiwi", "1").await;
    converge(&herd, &NAMES, "kiwi", &at).await;

    // Not a neighbour of Alford.
    let mut c = Client::connect(herd.addr("Alford")).await;
    c.send("HERD-HELLO 4 Mallory Alford -\n").await;
    assert_eq!(c.text_line().await, "HERD-REFUSED unknown-peer\n");
    assert_eq!(c.read_to_end().await, b"");
    // A neighbour's name, from the side that dials, but no knowledge of the secret.
    let mut c = Client::connect(herd.addr("Hamilton")).await;
    c.send(format!(
        "HERD-HELLO 4 Alford Hamilton {}\n",
        "ab".repeat(48)
    ))
    .await;
    assert_eq!(c.text_line().await, "HERD-REFUSED bad-proof\n");
    assert_eq!(c.read_to_end().await, b"");
    // The forged record was not taken.
    assert_eq!(
        held(herd.addr("Alford"), "kiwi").await.as_deref(),
        Some(at.as_str())
    );
    eventually("the refusals in the logs", || {
        let (a, h) = (herd.log("Alford"), herd.log("Hamilton"));
        async move {
            (a.contains("refused peer greeting")
                && a.contains("unknown-peer")
                && h.contains("refused peer greeting")
                && h.contains("bad-proof"))
            .then_some(())
        }
    })
    .await;
    let all_logs: String = NAMES.iter().map(|n| herd.log(n)).collect();
    assert!(
        !all_logs.contains("correct horse"),
        "the secret is in a log"
    );
}

#[tokio::test]
async fn kill_9_in_the_middle_of_a_stream_loses_no_acknowledged_update() {
    let mut herd = Processes::new(&DEFAULT_TOPOLOGY, "");
    herd.start_all().await;
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let targets = ["Hamilton", "Welsh"];
    let mut conns = Vec::new();
    for t in targets {
        conns.push(Client::connect(herd.addr(t)).await);
    }
    for i in 0..600u32 {
        if i == 300 {
            herd.kill("Alford").await;
        }
        let c = &mut conns[(i % 2) as usize];
        let client = format!("c{}", i % 150);
        c.send(format!("IAMAT {client} +10.5-20.25 {i}\n")).await;
        let reply = c.text_line().await;
        assert!(reply.starts_with("AT "), "{reply}");
        acked.insert(client, reply.trim_end().to_owned());
    }
    herd.start("Alford").await;
    for (client, at) in &acked {
        converge(&herd, &NAMES, client, at).await;
    }
}
