//! What the lists, look-ups and tables of the other side are answered with, once the records they
//! name are gathered ([`Work::Match`], [`Work::Want`], [`Work::Decode`]).

use super::*;

impl Session {
    /// `HERD-IDS` (their short ids of `range`) against my records of it: send what they lack, ask
    /// for what I lack.
    pub(super) fn matched(&mut self, mine: &[(u32, u64)], mut theirs: Vec<u32>, range: KeyRange) {
        let salt = self.salt;
        theirs.sort_unstable();
        let items: Vec<(u32, u32)> = mine.iter().map(|&(i, h)| (i, short_id(h, salt))).collect();
        let send: Vec<u32> = items
            .iter()
            .filter(|(_, h)| theirs.binary_search(h).is_err())
            .map(|&(i, _)| i)
            .collect();
        self.records(send);
        let mut mine: Vec<u32> = items.iter().map(|&(_, h)| h).collect();
        mine.sort_unstable();
        theirs.dedup();
        let want: Vec<u32> = theirs
            .into_iter()
            .filter(|h| mine.binary_search(h).is_err())
            .collect();
        if !want.is_empty() {
            self.line(&PeerMessage::Want {
                range,
                hashes: want,
            });
        }
    }

    /// `HERD-WANT`: the records of `g`'s range with the short ids `hashes`. The range's ids by id
    /// are kept for the next line: a decoded table is asked for in many lines of the same range.
    pub(super) fn want(
        &mut self,
        g: &mut Records,
        hashes: &[u32],
        sketch: &Sketch,
        entries: &[Entry],
        budget: &mut Budget,
    ) -> bool {
        let range = g.range();
        if self.by_id.as_ref().is_none_or(|(r, _)| *r != range) {
            if let Some(at) = self
                .tabled
                .iter()
                .position(|(r, ids)| *r == range && !ids.is_empty())
            {
                // Asked from a table of ours: its records, by id, are kept.
                let ids = std::mem::take(&mut self.tabled[at].1);
                self.by_id = Some((range, ids));
            } else {
                if !g.step(sketch, entries, budget) {
                    return false;
                }
                let salt = self.salt;
                let mut ids: Vec<(u32, u32)> =
                    g.acc.iter().map(|&(i, h)| (short_id(h, salt), i)).collect();
                ids.sort_unstable();
                self.by_id = Some((range, ids));
            }
        }
        let ids = self.by_id.as_ref().map_or(&[][..], |(_, ids)| &ids[..]);
        let mut send = Vec::new();
        for &h in hashes {
            let from = ids.partition_point(|&(id, _)| id < h);
            send.extend(
                ids[from..]
                    .iter()
                    .take_while(|&&(id, _)| id == h)
                    .map(|&(_, i)| i),
            );
        }
        self.records(send);
        true
    }

    /// Goes on decoding a whole table of theirs: my table of the range is built, the difference
    /// peeled, then what differs sent or asked for (or the range split when it does not decode).
    pub(super) fn decode(
        &mut self,
        range: KeyRange,
        theirs: &[Cell],
        d: &mut Decoding,
        sketch: &Sketch,
        entries: &[Entry],
        budget: &mut Budget,
    ) -> bool {
        let salt = self.salt;
        if let Decoding::Building(t) = d {
            if !t.run(salt, sketch, entries, budget) {
                return false;
            }
            let mut cells = std::mem::take(&mut t.built.cells);
            for (c, t) in cells.iter_mut().zip(theirs) {
                c.count = c.count.wrapping_sub(t.count);
                c.item ^= t.item;
                c.hint ^= t.hint;
                c.check ^= t.check;
            }
            let items = std::mem::take(&mut t.items.acc);
            *d = Decoding::Peeling(Peel::new(cells, salt), items);
        }
        if let Decoding::Peeling(peel, items) = d {
            match peel.run(budget) {
                None => return false,
                Some(None) => {
                    self.undecodable(range, items.len(), sketch);
                    return true;
                }
                Some(Some((only_mine, only_theirs))) => {
                    let items = std::mem::take(items);
                    *d = Decoding::Answering(Box::new(Answering {
                        items,
                        only_mine,
                        only_theirs,
                        ..Answering::default()
                    }));
                }
            }
        }
        let Decoding::Answering(a) = d else {
            return true;
        };
        self.decoded(range, a, budget)
    }

    /// A table that did not decode: the range is split (or listed, or asked for whole), and no more
    /// tables are sent in this session.
    fn undecodable(&mut self, range: KeyRange, mine: usize, sketch: &Sketch) {
        self.no_tables = true;
        if mine == 0 {
            self.line(&PeerMessage::Ids {
                range,
                hashes: Vec::new(),
            });
        } else if range.child(0).is_some() {
            self.first(vec![Work::Split(Children::of(range, sketch))]);
        } else {
            self.first(vec![Work::List(Records::new(range, sketch))]);
        }
    }

    /// Goes on answering a decoded difference: where both sides hold a record of one client, only
    /// the newer by its hint crosses (both when the hints are equal; a wrong hint is put right by
    /// the record sent back). Five passes, each a unit per item; `true` when all are done.
    fn decoded(&mut self, range: KeyRange, a: &mut Answering, budget: &mut Budget) -> bool {
        let newer = |a: u8, b: u8| (a.wrapping_sub(b) as i8) >= 0;
        while !budget.spent() || a.pass == 5 {
            match a.pass {
                0 => {
                    for i in a.next(a.only_theirs.len(), budget) {
                        let it = a.only_theirs[i];
                        a.theirs_by_key.insert(it.key, it.hint);
                    }
                }
                1 => {
                    for i in a.next(a.only_mine.len(), budget) {
                        let it = a.only_mine[i];
                        a.mine_by_key.insert(it.key, it.hint);
                    }
                }
                2 => {
                    for i in a.next(a.only_mine.len(), budget) {
                        let it = a.only_mine[i];
                        if a.theirs_by_key
                            .get(&it.key)
                            .is_none_or(|&h| newer(it.hint, h))
                        {
                            a.send.insert(it);
                        }
                    }
                }
                3 => {
                    for i in a.next(a.only_theirs.len(), budget) {
                        let it = a.only_theirs[i];
                        if a.mine_by_key
                            .get(&it.key)
                            .is_none_or(|&h| newer(it.hint, h))
                        {
                            a.want.push(it.id);
                        }
                    }
                }
                4 => {
                    for i in a.next(a.items.len(), budget) {
                        let (index, it) = a.items[i];
                        if a.send.contains(&it) {
                            a.records.push(index);
                        }
                    }
                }
                _ => {
                    self.records(std::mem::take(&mut a.records));
                    for chunk in a.want.chunks(MAX_IDS) {
                        self.line(&PeerMessage::Want {
                            range,
                            hashes: chunk.to_vec(),
                        });
                    }
                    return true;
                }
            }
        }
        false
    }
}
