//! Reconciliation as a property: for random pairs of record sets (from empty to a few thousand
//! clients, overlapping at random, some clients with different records on each side), one link-up
//! leaves both sides with the greatest record of every client, and the only records that cross are
//! those of clients whose records differed — strictly so where the difference is sparse; where every
//! sub-range of a small range differs, the range may be sent whole (`sync::DENSE`), which costs less
//! than finding its few equal records.

use std::collections::{BTreeMap, BTreeSet};

use herd_proto::{AtRecord, PeerMessage};
use herd_server::node::Node;
use proptest::prelude::*;

/// One side's records: client → (time, server index) of its AT line.
type Side = BTreeMap<u32, (u32, u8)>;

fn line(client: u32, (time, server): (u32, u8)) -> String {
    let name = ["A", "B", "C"][server as usize % 3];
    format!("AT {name} +0.000000001 c{client} +1+1 {time}")
}

fn load(node: &mut Node, side: &Side) {
    for (&c, &v) in side {
        let l = line(c, v);
        node.accept_peer_record(1, AtRecord::parse(l.as_bytes()).unwrap());
    }
}

/// Runs the link until both sides are quiet; returns the records that crossed each way.
fn reconcile(a: &mut Node, b: &mut Node) -> (Vec<String>, Vec<String>) {
    let now = std::time::Instant::now();
    let (ea, eb) = (a.link_up(0, now), b.link_up(0, now));
    let mut crossed = (Vec::new(), Vec::new());
    for _ in 0..100_000 {
        let mut quiet = true;
        for forward in [true, false] {
            let (from, fe, to, log) = if forward {
                (&mut *a, ea, &mut *b, &mut crossed.0)
            } else {
                (&mut *b, eb, &mut *a, &mut crossed.1)
            };
            let mut out = Vec::new();
            from.poll_transmit(0, fe, &mut out, 50);
            for l in out.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
                quiet = false;
                match PeerMessage::parse(l).unwrap() {
                    PeerMessage::Record(r) => {
                        log.push(String::from_utf8(l.to_vec()).unwrap());
                        to.accept_peer_record(0, r);
                    }
                    m => {
                        to.sync_message(0, &m).unwrap();
                    }
                }
            }
        }
        if quiet {
            assert!(
                !a.reconciling(0) && !b.reconciling(0),
                "a reconciliation never ended"
            );
            return crossed;
        }
    }
    panic!("no quiescence");
}

fn sides() -> impl Strategy<Value = (Side, Side)> {
    let pool = prop_oneof![Just(0u32), 1u32..40, 40u32..3000];
    pool.prop_flat_map(|n| {
        let record = (0u32..5, 0u8..3);
        let cell = (0u8..6, record.clone(), record);
        (proptest::collection::vec(cell, n as usize), 0u8..4)
    })
    .prop_map(|(cells, mode)| {
        let (mut a, mut b) = (Side::new(), Side::new());
        for (c, (what, ra, rb)) in cells.into_iter().enumerate() {
            let c = c as u32;
            // Mostly shared; some on one side only; some different on each side. Mode 1 empties
            // one side (a new server), mode 2 makes them equal, mode 3 differs in 1 client of 50.
            match (mode, what) {
                (3, _) if c % 50 != 7 => {
                    a.insert(c, ra);
                    b.insert(c, ra);
                }
                (1, _) => {
                    a.insert(c, ra);
                }
                (2, _) | (_, 0..=2) => {
                    a.insert(c, ra);
                    b.insert(c, ra);
                }
                (_, 3) => {
                    a.insert(c, ra);
                }
                (_, 4) => {
                    b.insert(c, rb);
                }
                _ => {
                    a.insert(c, ra);
                    b.insert(c, rb);
                }
            }
        }
        (a, b)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn reconciliation_leaves_the_greatest_and_touches_only_differing_clients((sa, sb) in sides()) {
        let all: BTreeSet<&u32> = sa.keys().chain(sb.keys()).collect();
        let differing = all.iter().filter(|c| sa.get(c) != sb.get(c)).count();
        let sparse = differing * 10 <= all.len();
        let mut a = Node::new("A", vec!["B".into(), "X".into()]);
        let mut b = Node::new("B", vec!["A".into(), "X".into()]);
        load(&mut a, &sa);
        load(&mut b, &sb);
        let (ab, ba) = reconcile(&mut a, &mut b);
        // Both hold the greatest record of every client, and only those.
        let mut want = BTreeSet::new();
        for c in sa.keys().chain(sb.keys()).collect::<BTreeSet<_>>() {
            let best = [sa.get(c), sb.get(c)]
                .into_iter()
                .flatten()
                .map(|&v| line(*c, v))
                .max_by(|x, y| {
                    AtRecord::parse(x.as_bytes()).unwrap().cmp(&AtRecord::parse(y.as_bytes()).unwrap())
                })
                .unwrap();
            want.insert(best);
        }
        let held = |n: &Node| n.lines().map(|l| String::from_utf8(l.to_vec()).unwrap()).collect::<BTreeSet<_>>();
        prop_assert_eq!(&held(&a), &want);
        prop_assert_eq!(&held(&b), &want);
        // Only clients that differed crossed, each at most once each way.
        let differs = |c: u32| sa.get(&c).map(|&v| line(c, v)) != sb.get(&c).map(|&v| line(c, v));
        for (sent, from) in [(&ab, &sa), (&ba, &sb)] {
            let mut clients = BTreeSet::new();
            for l in sent {
                let r = AtRecord::parse(l.as_bytes()).unwrap();
                let c: u32 = std::str::from_utf8(&r.client[1..]).unwrap().parse().unwrap();
                if !sparse {
                    continue; // a dense range is sent whole, with what arrived in the meantime
                }
                prop_assert!(differs(c), "c{} was the same on both sides but crossed", c);
                prop_assert!(from.contains_key(&c));
                prop_assert!(clients.insert(c), "c{} crossed twice", c);
            }
        }
    }
}
