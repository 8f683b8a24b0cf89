//! Fingerprints of the cache and reconciliation of two caches over a link (issue: catch-up by
//! difference). Sans-IO like the rest of the node: messages in, lines out.
//!
//! # The order both sides share
//! Every client has a *key*, XXH3-64 of its id, and every record a *hash*, XXH3-64 of its AT line (the
//! line is flooded byte for byte, so one record has one hash on every server). A set's *fingerprint* is
//! the sum of its hashes modulo 2⁶⁴. A sum, unlike a hash over a sorted list, is updated in constant
//! time when one record replaces another (subtract the old hash, add the new), so the cache keeps the
//! fingerprint of every range of keys up to date as records are stored — never a scan per link-up.
//!
//! # The tree: a hex trie of sums
//! [`Sketch`] keeps a complete 16-ary tree over the key's leading hex digits: level `d` has 16^d
//! nodes, node `p` holds the count and fingerprint of the keys starting with the `d` digits `p`. The
//! leaves (level [`Sketch::depth`]) also chain the cache indexes of their clients, so the records of any
//! range are found without a scan of the cache. A store touches one node per level (depth + 1 ≤ 6
//! additions). The depth grows with the cache (about 16 to 32 clients a leaf) by rebuilding once per
//! sixteenfold growth, so the work per record stays constant amortised. A range deeper than the leaves
//! is answered by scanning its leaf (a few dozen records).
//!
//! # Why range-based reconciliation over this trie, with tables where the difference is dense
//! Of the three designs the issue names, the walk is Meyer's range-based reconciliation (as Negentropy
//! runs it), on ranges fixed by key prefixes so they line up with a hash tree kept as records arrive
//! (as Riak's active anti-entropy does). It was chosen because:
//! - its cost follows the difference: equal roots cost one line each way; one differing client costs
//!   one 16-fingerprint line per level of the trie (four or five for a million clients) and one short
//!   id list, well under a kilobyte in all, whatever the size of the cache;
//! - it needs no estimate of the difference and no decoding that can fail; rateless IBLT would need
//!   its coded symbols computed over the whole set per session (or kept per symbol index), a scan per
//!   link-up that the issue rules out;
//! - the same walk works when the two sides' tries have different depths (a range deeper than one
//!   side's leaves is answered from a scan of that leaf), and when records change during it: a record
//!   stored while reconciling is flooded on the link anyway;
//! - a side that holds nothing in a range gets that range as a plain stream of records; a new server
//!   (`HERD-ROOT 0 0 …`) gets the whole cache as the old catch-up did.
//!
//! Where the difference is dense, the walk alone costs several times the records: with 10,000 of a
//! million clients differing, every range down to 256 clients differs, and finding the ~2.4 differing
//! clients of each costs a line of 16 fingerprints and lists of leaves of ~15 ids. So the walk
//! measures the density as it goes — of the sub-ranges compared in a turn, the share that was equal
//! gives the expected number of differing clients per differing sub-range (Poisson) — and where that
//! is two or more, it sends for each group of them one invertible Bloom filter (`HERD-IBF`) of the range
//! two digits up, sized for the estimate: about 1.4 cells of 12 bytes per differing record, the
//! difference decoded in one turn. A table is built from the range's records (the trie's leaf chains
//! find them), a bounded scan of the part of the cache that the walk has shown to differ. A table
//! that does not decode is answered by splitting its range, and ends tables for that session.
//!
//! Three more savings, each needed for the goal of twice the differing records:
//! - fingerprints and ids are 32 bits, salted per reconciliation (a chance collision, one in four
//!   billion per comparison, is not repeated by the next check), written in base64url;
//! - the items of a table carry a *hint*, the low byte of the client time: where both sides hold a
//!   record of one client, only the newer by its hint crosses, not both;
//! - hints can be wrong (client times more than two minutes apart), so during a reconciliation a
//!   record older than the one held is answered with the held one (`Session::older`): the newer still
//!   crosses, once.
//!
//! The turns and lines are documented with the peer grammar ([`herd_proto::PeerMessage`]).

mod answer;
#[cfg(test)]
mod bounds;
mod exchange;
mod scan;
mod sketch;
mod table;
mod transmit;
mod work;

use std::collections::VecDeque;

use herd_proto::{KeyRange, PeerMessage, CELL_BYTES, MAX_CELLS, MAX_CHUNK, MAX_IDS};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::node::cache::Entry;

pub use exchange::*;
pub use scan::WORK_PER_CALL;
use scan::*;
pub use sketch::*;
pub use table::*;
use work::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::cache::Cache;
    use herd_proto::AtRecord;

    /// Every node of the trie agrees with a scan of its records.
    fn consistent(c: &Cache) {
        let (s, e) = (c.sketch(), c.entries());
        for d in 0..=s.depth() {
            for p in 0..(1u64 << (4 * u32::from(d))) {
                let r = KeyRange::new(
                    d,
                    if d == 0 {
                        0
                    } else {
                        p << (64 - 4 * u32::from(d))
                    },
                )
                .unwrap();
                let mut scan = Sum::default();
                for x in e.iter().filter(|x| r.contains(key(x.client()))) {
                    scan.add(x.with_line(hash));
                }
                assert_eq!(s.sum(r, e), scan, "range {r:?}");
                assert_eq!(s.items(r, e).len() as u64, scan.count);
            }
        }
    }

    #[test]
    fn the_trie_matches_a_scan_as_it_grows_and_records_change() {
        let mut c = Cache::default();
        for i in 0..1200u32 {
            let line = format!("AT A +0.000000001 c{i} +1+1 {i}");
            let r = AtRecord::parse(line.as_bytes()).unwrap();
            c.push(crate::node::cache::Entry::new(&r, None));
            if i % 97 == 0 {
                let j = (i / 2) as usize;
                let line = format!("AT B +0.000000002 c{j} +2+2 {}", 5000 + i);
                let r = AtRecord::parse(line.as_bytes()).unwrap();
                c.replace(j, &r, None);
            }
            if i == 10 || i == 600 || i == 1199 {
                consistent(&c);
            }
        }
        assert_eq!(c.sketch().depth(), 2);
    }

    fn items(range: std::ops::Range<u32>) -> Vec<Item> {
        range
            .map(|i| Item {
                key: i.wrapping_mul(0x9e37_79b9),
                id: i ^ 0x5555_aaaa,
                hint: i as u8,
            })
            .collect()
    }

    /// Mine minus theirs, cell by cell.
    fn minus(mut mine: Vec<Cell>, theirs: &[Cell]) -> Vec<Cell> {
        for (c, t) in mine.iter_mut().zip(theirs) {
            c.count = c.count.wrapping_sub(t.count);
            c.item ^= t.item;
            c.hint ^= t.hint;
            c.check ^= t.check;
        }
        mine
    }

    #[test]
    fn a_table_decodes_a_difference_it_was_sized_for_and_says_so_when_not() {
        let salt = 77;
        // 1,000 shared items; 40 only mine, 30 only theirs: 70 items in 1.4 × 70 + 12 cells.
        let shared = items(0..1000);
        let mine: Vec<Item> = shared.iter().copied().chain(items(1000..1040)).collect();
        let theirs: Vec<Item> = shared.iter().copied().chain(items(2000..2030)).collect();
        let n = 111;
        let diff = minus(
            table(mine.iter().copied(), n, salt),
            &table(theirs.iter().copied(), n, salt),
        );
        let (mut only_mine, mut only_theirs) = peel(diff, salt).expect("decodes");
        only_mine.sort();
        only_theirs.sort();
        let mut want_mine = items(1000..1040);
        let mut want_theirs = items(2000..2030);
        want_mine.sort();
        want_theirs.sort();
        assert_eq!((only_mine, only_theirs), (want_mine, want_theirs));
        // Ten times the difference it was sized for: decoding fails, and says so.
        let theirs: Vec<Item> = shared.iter().copied().chain(items(3000..3700)).collect();
        let diff = minus(
            table(mine.iter().copied(), n, salt),
            &table(theirs.iter().copied(), n, salt),
        );
        assert_eq!(peel(diff, salt), None);
        // Cells survive the wire.
        let t = table(mine.iter().copied(), n, salt);
        let mut bytes = Vec::new();
        for c in &t {
            c.write(&mut bytes);
        }
        assert_eq!(bytes.len(), n * CELL_BYTES);
        let back: Vec<Cell> = bytes.chunks_exact(CELL_BYTES).map(Cell::read).collect();
        assert_eq!(back, t);
    }

    /// A table that does not decode is answered with the range's fingerprints, and the session
    /// sends no table after that (so a walk that keeps failing cannot loop).
    #[test]
    fn an_undecodable_table_is_answered_by_splitting_the_range() {
        let mut c = Cache::default();
        for i in 0..600u32 {
            let line = format!("AT A +0.000000001 c{i} +1+1 {i}");
            c.push(Entry::new(&AtRecord::parse(line.as_bytes()).unwrap(), None));
        }
        let mut s = Session::default();
        let (sk, e) = (c.sketch(), c.entries());
        let root = PeerMessage::Root {
            count: 1,
            fingerprint: 1,
            salt: 5,
        };
        assert_eq!(s.receive(0, &root, sk, e), Ok(Outcome::Nothing));
        // Three cells, each pure-looking garbage.
        let cells = vec![1u8; 3 * CELL_BYTES];
        let m = PeerMessage::Cells {
            range: KeyRange::ALL,
            total: 3,
            at: 0,
            cells,
        };
        assert_eq!(s.receive(0, &m, sk, e), Ok(Outcome::Queued));
        let mut out = Vec::new();
        // The decode is work done a budget at a time: 600 records take two calls.
        for _ in 0..10 {
            s.transmit(0, sk, e, &mut out, 100);
            if !s.working() {
                break;
            }
        }
        assert!(s.no_tables);
        assert!(s.most_work() <= WORK_PER_CALL);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HERD-FP - "), "{text}");
        // A table line that does not continue the one being received closes the link.
        let part = PeerMessage::Cells {
            range: KeyRange::ALL,
            total: 6,
            at: 0,
            cells: vec![0; 3 * CELL_BYTES],
        };
        assert_eq!(s.receive(0, &part, sk, e), Ok(Outcome::Nothing));
        let skip = PeerMessage::Cells {
            range: KeyRange::ALL,
            total: 6,
            at: 4,
            cells: vec![0; CELL_BYTES],
        };
        assert_eq!(s.receive(0, &skip, sk, e), Err(SyncError::Table));
    }
}
