//! The work of one call is bounded whatever a peer sends: an insider's worst reconciliation lines fed
//! through the entry points the driver calls ([`Node::handle_link_input`], [`Node::poll_transmit`]),
//! counting the units of work the node did per call. No timing: the hold in time is benchmarked
//! (`cargo bench -p herd-server --bench worst_line`).

use std::time::Instant;

use herd_proto::{KeyRange, PeerMessage, Timestamp, CELL_BYTES, MAX_CELLS, MAX_CHUNK};

use crate::node::sync::{key, WORK_PER_CALL};
use crate::node::Node;

const ROOT: &[u8] = b"HERD-ROOT 9 0000000000000009 0000000000000001\n";

fn wall() -> Timestamp {
    Timestamp::new(1_000_000, 0).unwrap()
}

/// A node holding `plain` clients, and `crafted` more whose ids were chosen so their keys share the
/// first two hex digits `00` (one leaf of the trie, which has two levels at this size).
fn node(plain: usize, crafted: usize) -> Node {
    let mut n = Node::new("B", vec!["A".into()]);
    let mut out = Vec::new();
    for i in 0..plain {
        out.clear();
        n.client_line(format!("IAMAT c{i} +1+1 {i}").as_bytes(), wall(), &mut out);
    }
    let mut made = 0;
    for i in 0u64.. {
        if made == crafted {
            break;
        }
        let id = format!("x{i}");
        if key(id.as_bytes()) >> 56 == 0 {
            out.clear();
            n.client_line(format!("IAMAT {id} +1+1 {i}").as_bytes(), wall(), &mut out);
            made += 1;
        }
    }
    n
}

fn line(m: PeerMessage<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    m.write_to(&mut v);
    v.push(b'\n');
    v
}

/// A whole table of `range`, every cell empty, as big as a table may be.
fn table(range: KeyRange) -> Vec<u8> {
    let total = MAX_CELLS - MAX_CELLS % 3;
    let mut lines = Vec::new();
    let mut at = 0u32;
    while at < total {
        let n = (MAX_CHUNK as u32).min(total - at);
        lines.extend(line(PeerMessage::Cells {
            range,
            total,
            at,
            cells: vec![0; n as usize * CELL_BYTES],
        }));
        at += n;
    }
    lines
}

/// Feeds `lines` on a fresh link-up, then lets the node write until its work is done. Returns the
/// most units of work one call did, all units done, and what was written.
fn drive(n: &mut Node, lines: &[u8]) -> (u64, u64, String) {
    let now = Instant::now();
    let e = n.link_up(0, now);
    let mut out = Vec::new();
    // The link-up's own opening (this side dials nobody here, so there is none) is drained.
    while n.poll_transmit(0, e, &mut out, 4096) > 0 {}
    out.clear();
    let input = n.handle_link_input(0, e, lines, now, wall(), |_| {});
    assert_eq!(input.close, None, "{}", String::from_utf8_lossy(lines));
    for _ in 0..100_000 {
        let before = out.len();
        n.poll_transmit(0, e, &mut out, 1024);
        if out.len() == before && !n.working(0, e) {
            break;
        }
    }
    assert!(!n.working(0, e), "the work never ended");
    let s = &n.links[0].session;
    let work = (s.most_work(), s.all_work());
    n.link_down(0, e, now);
    (work.0, work.1, String::from_utf8_lossy(&out).into_owned())
}

/// A table of the whole range makes the node build its own table of all 20,000 records and peel
/// 65,535 cells; the work is done over many calls, none over the bound, and the table is answered
/// (every record crosses: the empty table says the other side holds none).
#[test]
fn a_whole_range_table_is_decoded_a_budget_a_call() {
    let mut n = node(20_000, 0);
    let mut lines = ROOT.to_vec();
    lines.extend(table(KeyRange::ALL));
    lines.extend_from_slice(b"HERD-OVER\n");
    let (most, all, out) = drive(&mut n, &lines);
    assert!(most <= WORK_PER_CALL, "{most} units in one call");
    assert!(
        all > 2 * 20_000,
        "only {all} units: the table was not built"
    );
    let records = out.lines().filter(|l| l.starts_with("AT ")).count();
    assert_eq!(records, 20_000);
}

/// One leaf holding thousands of clients whose ids were chosen for it: comparing its parts, listing
/// it and asking for it each walk the whole leaf, a budget a call.
#[test]
fn a_crafted_leaf_is_walked_a_budget_a_call() {
    let mut n = node(2_000, 3_000);
    assert_eq!(n.clients.sketch().depth(), 2);
    let leaf = KeyRange::new(2, 0).unwrap();
    let deep = KeyRange::new(5, 0).unwrap();
    let fp = line(PeerMessage::Fingerprints {
        range: leaf,
        children: [1; 16],
    });
    let ids = line(PeerMessage::Ids {
        range: deep,
        hashes: vec![1, 2, 3],
    });
    let want = line(PeerMessage::Want {
        range: KeyRange::new(6, 0).unwrap(),
        hashes: vec![1],
    });
    for (what, attack) in [("HERD-FP", fp), ("HERD-IDS", ids), ("HERD-WANT", want)] {
        let mut lines = ROOT.to_vec();
        lines.extend(attack);
        lines.extend_from_slice(b"HERD-OVER\n");
        let (most, all, out) = drive(&mut n, &lines);
        assert!(most <= WORK_PER_CALL, "{what}: {most} units in one call");
        assert!(
            all >= 3_000,
            "{what}: only {all} units: the leaf was not walked"
        );
        assert!(out.contains("HERD-"), "{what}: unanswered: {out}");
    }
}

/// Listing a range where the node holds many is split from the trie, not walked.
#[test]
fn a_listing_of_a_huge_range_costs_no_walk() {
    let mut n = node(20_000, 0);
    let mut lines = ROOT.to_vec();
    lines.extend_from_slice(b"HERD-IDS - AAAAAA\nHERD-OVER\n");
    let (most, _, out) = drive(&mut n, &lines);
    assert!(most <= 16, "{most} units");
    assert!(out.starts_with("HERD-FP - "), "{out}");
}
