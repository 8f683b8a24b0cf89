//! What a reconciliation writes ([`Session::transmit`]): waiting work first, a budget a call, then
//! the lines and records queued, in order.

use super::*;

/// What one call of [`Session::transmit`] wrote.
#[derive(Debug, Default)]
struct Written {
    lines: usize,
    records: usize,
}

impl Session {
    /// Does up to [`WORK_PER_CALL`] units of waiting work, then writes up to `max` lines; returns
    /// how many lines and records were written and, when the session ended with this write, its
    /// report. It may write nothing and still have work left ([`Session::working`]): call it again
    /// (the node is free between calls).
    pub fn transmit(
        &mut self,
        link: usize,
        sketch: &Sketch,
        entries: &[Entry],
        out: &mut Vec<u8>,
        max: usize,
    ) -> (usize, usize, Option<Report>) {
        let start = out.len();
        let mut budget = Budget::new(WORK_PER_CALL);
        self.work_on(sketch, entries, &mut budget);
        let mut w = Written::default();
        let mut ended = false;
        while w.lines < max {
            let Some(job) = self.jobs.front_mut() else {
                break;
            };
            match job {
                Job::Line(_) => self.write_control(out, &mut w),
                Job::Records(_) | Job::Back(_) => self.write_record(entries, out, &mut w),
                Job::Range(_) if budget.spent() => break,
                Job::Range(_) => self.walk_range(sketch, entries, &mut budget),
                Job::All => self.write_next(entries, out, &mut w),
                Job::Synced => {
                    self.jobs.pop_front();
                    self.sent += w.records as u64;
                    PeerMessage::Synced { count: self.sent }.write_to(out);
                    out.push(b'\n');
                    w.lines += 1;
                    ended = true;
                    break;
                }
            }
        }
        if !ended {
            self.sent += w.records as u64;
        }
        self.bytes += (out.len() - start) as u64;
        let used = WORK_PER_CALL - budget.left;
        self.most_work = self.most_work.max(used);
        self.all_work += used;
        let report = ended.then(|| self.finish(link));
        (w.lines, w.records, report)
    }

    /// Writes the control line at the front.
    fn write_control(&mut self, out: &mut Vec<u8>, w: &mut Written) {
        if let Some(Job::Line(v)) = self.jobs.pop_front() {
            out.extend_from_slice(&v);
            self.queued_bytes = self.queued_bytes.saturating_sub(v.len());
            w.lines += 1;
        }
    }

    /// Writes the next record of the list at the front (one sent back only if this session has not
    /// sent it).
    fn write_record(&mut self, entries: &[Entry], out: &mut Vec<u8>, w: &mut Written) {
        let (next, back) = match self.jobs.front_mut() {
            Some(Job::Records(q)) => (q.pop_front(), false),
            Some(Job::Back(q)) => (q.pop_front(), true),
            _ => return,
        };
        let Some(i) = next else {
            self.jobs.pop_front();
            return;
        };
        if back && bit(&self.written, i) {
            return;
        }
        if let Some(e) = entries.get(i as usize) {
            e.write_line(out);
            out.push(b'\n');
            w.lines += 1;
            w.records += 1;
            set_bit(&mut self.written, i);
        }
    }

    /// Walks on through the range at the front, queueing the records found ahead of it.
    fn walk_range(&mut self, sketch: &Sketch, entries: &[Entry], budget: &mut Budget) {
        let Some(Job::Range(scan)) = self.jobs.front_mut() else {
            return;
        };
        let mut found = Vec::new();
        let walk = scan.walk(sketch, entries, budget, |i, _| found.push(i));
        match walk {
            Walk::Done => {
                self.jobs.pop_front();
            }
            Walk::More => {}
            // The trie grew a level: walk the range again (records already queued are not
            // queued twice).
            Walk::Rebuilt => *scan = Scan::new(scan.range(), sketch),
        }
        let found = self.fresh(found);
        if !found.is_empty() {
            self.jobs.push_front(Job::Records(found));
        }
    }

    /// Writes the next record of the whole-cache stream.
    fn write_next(&mut self, entries: &[Entry], out: &mut Vec<u8>, w: &mut Written) {
        let cursor = self.all.unwrap_or(0);
        match entries.get(cursor) {
            Some(e) => {
                set_bit(&mut self.queued, cursor as u32);
                e.write_line(out);
                out.push(b'\n');
                w.lines += 1;
                w.records += 1;
                set_bit(&mut self.written, cursor as u32);
                self.all = Some(cursor + 1);
            }
            None => {
                self.all = None;
                self.jobs.pop_front();
            }
        }
    }
}
