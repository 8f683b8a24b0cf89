//! Catch-up by difference with real processes: a link cut for two seconds under load sends, when it
//! heals, what differs and not the whole cache. Alford dials Bravo through a proxy that counts the
//! bytes and can cut the link.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use herd_tests::client::Client;
use herd_tests::eventually;
use herd_tests::herd::{held, Processes};
use herd_tests::proxy::Proxy;

const PAIR: [(&str, &[&str]); 2] = [("Alford", &["Bravo"]), ("Bravo", &["Alford"])];

/// Sends one IAMAT for each of `clients` (pipelined) and reads the replies; returns the last reply.
async fn load(addr: SocketAddr, clients: impl Iterator<Item = String>, time: u32) -> String {
    let mut c = Client::connect(addr).await;
    let mut batch = String::new();
    let mut n = 0;
    for client in clients {
        batch.push_str(&format!("IAMAT {client} +34.068930-118.445127 {time}\n"));
        n += 1;
    }
    c.send(batch).await;
    let mut last = String::new();
    for _ in 0..n {
        last = c.text_line().await;
        assert!(last.starts_with("AT "), "{last}");
    }
    last.trim_end().to_owned()
}

async fn holds(addr: SocketAddr, client: &str, want: &str) {
    eventually(&format!("{addr} to hold {want}"), || async move {
        (held(addr, client).await.as_deref() == Some(want)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_link_cut_for_two_seconds_under_load_sends_only_what_differs_on_heal() {
    const BASE: usize = 6000;
    let mut herd = Processes::new(&PAIR, "");
    let proxy = Proxy::start(herd.addr("Bravo")).await;
    let via_proxy = herd.write_config("alford.toml", "", &[("Bravo", proxy.addr)]);
    herd.start("Bravo").await;
    herd.start_with("Alford", &via_proxy).await;
    let (alford, bravo) = (herd.addr("Alford"), herd.addr("Bravo"));

    // A shared cache: half the clients report to each side, and flooding copies them across.
    let last_a = load(alford, (0..BASE / 2).map(|i| format!("a{i}")), 1).await;
    let last_b = load(bravo, (0..BASE / 2).map(|i| format!("b{i}")), 1).await;
    holds(bravo, &format!("a{}", BASE / 2 - 1), &last_a).await;
    holds(alford, &format!("b{}", BASE / 2 - 1), &last_b).await;
    let full: u64 = proxy
        .captures()
        .iter()
        .map(|c| c.up_bytes + c.down_bytes)
        .sum();

    // Cut for two seconds while both sides keep taking updates: new clients and moves of old ones.
    proxy.cut();
    let cut_at = Instant::now();
    let mut changed = 0;
    let mut round = 0u32;
    while cut_at.elapsed() < Duration::from_secs(2) && round < 40 {
        let first = round as usize * 2;
        load(
            alford,
            (first..first + 2).map(|i| format!("a{i}")),
            2 + round,
        )
        .await;
        load(alford, (0..2).map(|i| format!("new-a{round}-{i}")), 2).await;
        load(
            bravo,
            (first..first + 2).map(|i| format!("b{i}")),
            2 + round,
        )
        .await;
        load(bravo, (0..2).map(|i| format!("new-b{round}-{i}")), 2).await;
        changed += 8;
        round += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last_new_a = load(alford, std::iter::once("last-a".to_string()), 9).await;
    let last_new_b = load(bravo, std::iter::once("last-b".to_string()), 9).await;
    changed += 2;
    let before = proxy.captures().len();
    proxy.heal();

    // Healed: both sides hold each other's updates, and what crossed is about the difference.
    holds(bravo, "last-a", &last_new_a).await;
    holds(alford, "last-b", &last_new_b).await;
    for i in [0, round - 1] {
        let want = held(alford, &format!("new-a{i}-1")).await.unwrap();
        holds(bravo, &format!("new-a{i}-1"), &want).await;
        let want = held(bravo, &format!("b{}", i as usize * 2)).await.unwrap();
        holds(alford, &format!("b{}", i as usize * 2), &want).await;
    }
    let healed = eventually("the link to come back", || {
        let c = proxy.captures();
        async move { c.get(before).cloned() }
    })
    .await;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (up, down) = (text(&healed.up), text(&healed.down));
    let records = up.matches("\nAT ").count() + down.matches("\nAT ").count();
    let bytes = healed.up_bytes + healed.down_bytes;
    eprintln!(
        "cache {} clients, {changed} changed during a {:.1} s cut; on heal {records} records and \
         {bytes} bytes crossed ({} up, {} down); the first catch-up and flood took {full} bytes",
        BASE + changed,
        cut_at.elapsed().as_secs_f64(),
        healed.up_bytes,
        healed.down_bytes,
    );
    assert!(up.contains("HERD-ROOT "), "{up}");
    // A client changed on one side crosses once; one changed on both sides at most twice.
    assert!(
        records <= 2 * changed,
        "{records} records for {changed} changes"
    );
    assert!(
        records >= changed / 2,
        "{records} records cannot carry {changed} changes"
    );
    // The whole cache is ~6,300 records (~300 KB each way); the difference is a small part of it.
    assert!(
        bytes < full / 4,
        "{bytes} bytes crossed on heal, against {full} for the whole cache"
    );
}
