//! Reading store files at start: streamed in bounded steps, never read whole.
//!
//! A file is checked before anything is read from it: it must be a regular file (a link to a device
//! such as `/dev/full`, which never ends, is refused) whose header names its kind and version. Its
//! records are then read [`READ_CHUNK`] bytes at a time: this thread walks the frames (lengths only) and
//! hands batches of whole frames to parsing threads, which check each checksum and parse each record;
//! this thread then takes the parsed records in file order. At most [`IN_FLIGHT`] batches are out at
//! once, so memory stays a few MiB above the cache however large the file.
//!
//! A bad spot (a checksum mismatch, an impossible length, a record that is not an AT line, a record
//! cut short) is a *torn tail* when no whole record starts anywhere after it, and *damage*
//! otherwise. With repair, damage is skipped: reading goes on at the next whole record (found by the
//! same search), and the bytes skipped are reported by offset.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::mpsc;

use super::format::{self, Header, Kind, RecordFrame};
use super::Loader;

/// Bytes read from a file per step, and the most a batch handed to a parsing thread holds.
pub(super) const READ_CHUNK: usize = 1 << 20;

/// Batches out at the parsing threads at once.
const IN_FLIGHT: usize = 4;

/// A store file opened for reading, its header checked.
pub(super) struct Source {
    file: File,
    /// Its length when opened: nothing past it is read.
    len: u64,
}

/// Why a file cannot be read at all.
#[derive(Debug)]
pub(super) enum Refused {
    /// Not a regular file (a device, a FIFO, a folder).
    NotAFile(&'static str),
    /// Fewer bytes than a header, all of them a header's: a file whose creation a crash interrupted.
    Torn(u64),
    /// Not a herd file of this kind.
    Foreign,
    /// A format version this build cannot read.
    Version(u32),
}

impl Source {
    /// Opens `path`, checking that it is a regular file with the header of `kind`.
    pub(super) fn open(path: &Path, kind: Kind) -> io::Result<Result<Source, Refused>> {
        // `metadata` follows links: a journal that is a link to a device is judged by the device.
        let meta = std::fs::metadata(path)?;
        let ft = meta.file_type();
        if !ft.is_file() {
            use std::os::unix::fs::FileTypeExt as _;
            let what = if ft.is_dir() {
                "a folder"
            } else if ft.is_char_device() || ft.is_block_device() {
                "a device"
            } else if ft.is_fifo() {
                "a FIFO"
            } else if ft.is_socket() {
                "a socket"
            } else {
                "not a regular file"
            };
            return Ok(Err(Refused::NotAFile(what)));
        }
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut head = [0u8; format::HEADER_LEN];
        let n = read_at_most(&file, &mut head, 0, len)?;
        let verdict = match format::check_header(&head[..n], kind) {
            Header::Valid => None,
            Header::Torn => Some(Refused::Torn(n as u64)),
            Header::Foreign => Some(Refused::Foreign),
            Header::Version(v) => Some(Refused::Version(v)),
        };
        Ok(match verdict {
            Some(r) => Err(r),
            None => Ok(Source { file, len }),
        })
    }

    /// The file's length when it was opened.
    pub(super) fn len(&self) -> u64 {
        self.len
    }
}

/// Reads into `buf` from `offset`, up to `buf.len()` bytes and never past `limit`; returns how many.
fn read_at_most(file: &File, buf: &mut [u8], offset: u64, limit: u64) -> io::Result<usize> {
    let want = (limit.saturating_sub(offset)).min(buf.len() as u64) as usize;
    let mut got = 0;
    while got < want {
        match file.read_at(&mut buf[got..want], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Damage skipped by a repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Where the bad spot starts (a byte offset in the file).
    pub at: u64,
    /// Bytes skipped, up to the next whole record.
    pub len: u64,
    /// What was wrong there.
    pub why: &'static str,
    /// Records in the stretch, where their lengths lead from its start exactly to its end (a
    /// record whose payload or checksum was damaged); 0 where they do not (a damaged length).
    pub records: u64,
}

/// How reading a file ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tail {
    /// Every byte belongs to a whole record (or to damage skipped).
    Clean,
    /// A torn last record starts at `at`.
    Torn { at: u64 },
    /// A bad spot with whole records after it (reading stopped there: no repair).
    Damaged { at: u64, why: &'static str },
}

/// What reading a file found.
#[derive(Debug)]
pub(super) struct FileScan {
    /// Records taken.
    pub(super) records: u64,
    /// Damage skipped (repair only).
    pub(super) skipped: Vec<Skipped>,
    pub(super) tail: Tail,
}

/// Reads the records of `src` into `loader`, in file order. Without `repair` it stops at the first
/// damage; with it, it skips each damaged stretch and goes on at the next whole record.
///
/// # Errors
/// The file cannot be read.
pub(super) fn scan<L: Loader>(src: &Source, repair: bool, loader: &mut L) -> io::Result<FileScan> {
    let mut scan = FileScan {
        records: 0,
        skipped: Vec::new(),
        tail: Tail::Clean,
    };
    let mut from = format::HEADER_LEN as u64;
    let mut reserved = false;
    // Each round reads from `from` to the end or to a bad spot; a repair starts another round after
    // it. Every round ends further on in the file, so this ends.
    loop {
        let (n, stop) = run(src, from, loader, &mut reserved)?;
        scan.records += n;
        let Some((at, why)) = stop else {
            return Ok(scan);
        };
        match next_record(src, at + 1)? {
            None => {
                scan.tail = Tail::Torn { at };
                return Ok(scan);
            }
            Some(next) if repair => {
                scan.skipped.push(Skipped {
                    at,
                    len: next - at,
                    why,
                    records: frames_between(src, at, next)?,
                });
                from = next;
            }
            Some(_) => {
                scan.tail = Tail::Damaged { at, why };
                return Ok(scan);
            }
        }
    }
}

/// A batch of whole frames (lengths checked, checksums not yet), from file offset `at`.
struct ReplayBatch {
    at: u64,
    bytes: Vec<u8>,
}

/// A batch checked and parsed: the payloads' ranges in `bytes` and what the parser made of them, and
/// where checking stopped (an offset in `bytes`, why).
struct Done<P> {
    batch: ReplayBatch,
    parsed: Vec<(std::ops::Range<usize>, P)>,
    stop: Option<(usize, &'static str)>,
}

/// Walks the frames of a file, [`READ_CHUNK`] bytes at a time.
struct Walker<'a> {
    src: &'a Source,
    buf: Vec<u8>,
    /// The file offset of `buf[0]`.
    buf_at: u64,
    /// The next frame starts at `buf[pos]`.
    pos: usize,
    /// The walk found a bad length or a record cut short there: nothing more is read.
    stop: Option<(u64, &'static str)>,
}

impl Walker<'_> {
    /// The next batch of whole frames, or `None` at the end (or at a bad spot, in `stop`).
    fn next(&mut self) -> io::Result<Option<ReplayBatch>> {
        loop {
            if self.stop.is_some() {
                return Ok(None);
            }
            let start = self.pos;
            let mut need = format::FRAME_OVERHEAD;
            while self.pos - start < READ_CHUNK {
                let rest = &self.buf[self.pos..];
                let Some(head) = rest.get(..4) else {
                    need = format::FRAME_OVERHEAD;
                    break;
                };
                let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
                if len == 0 || len > format::MAX_RECORD {
                    self.stop = Some((self.buf_at + self.pos as u64, "bad record length"));
                    break;
                }
                if rest.len() < format::framed_len(len) {
                    need = format::framed_len(len);
                    break;
                }
                self.pos += format::framed_len(len);
            }
            if self.pos > start {
                return Ok(Some(ReplayBatch {
                    at: self.buf_at + start as u64,
                    bytes: self.buf[start..self.pos].to_vec(),
                }));
            }
            if self.stop.is_some() {
                return Ok(None);
            }
            // Nothing whole is buffered: keep the partial frame, read more after it.
            self.buf.drain(..self.pos);
            self.buf_at += self.pos as u64;
            self.pos = 0;
            let have = self.buf.len();
            let room = READ_CHUNK.max(need);
            self.buf.resize(room, 0);
            let n = read_at_most(
                &self.src.file,
                &mut self.buf[have..],
                self.buf_at + have as u64,
                self.src.len,
            )?;
            self.buf.truncate(have + n);
            if n == 0 {
                if have > 0 {
                    self.stop = Some((self.buf_at, "record cut short"));
                }
                return Ok(None);
            }
        }
    }
}

/// Checks and parses a batch (on a parsing thread).
fn check<L: Loader>(parser: &L::Parser, batch: ReplayBatch) -> Done<L::Parsed> {
    let mut parsed = Vec::with_capacity(batch.bytes.len() / 64);
    let mut stop = None;
    let mut at = 0;
    while at < batch.bytes.len() {
        match format::frame(&batch.bytes[at..]) {
            RecordFrame::Whole(r, len) => {
                let range = at + r.start..at + r.end;
                match L::parse(parser, &batch.bytes[range.clone()]) {
                    Some(p) => parsed.push((range, p)),
                    None => {
                        stop = Some((at, "record is not an AT line"));
                        break;
                    }
                }
                at += len;
            }
            RecordFrame::Partial => {
                stop = Some((at, "record cut short"));
                break;
            }
            RecordFrame::Bad(why) => {
                stop = Some((at, why));
                break;
            }
        }
    }
    Done {
        batch,
        parsed,
        stop,
    }
}

/// Reads `src` from `from` into `loader` until its end or the first bad spot; returns the records
/// taken and the bad spot (a file offset, why).
fn run<L: Loader>(
    src: &Source,
    from: u64,
    loader: &mut L,
    reserved: &mut bool,
) -> io::Result<(u64, Option<(u64, &'static str)>)> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(2, 4)
        - 1;
    let parser = loader.parser();
    let mut walker = Walker {
        src,
        buf: Vec::new(),
        buf_at: from,
        pos: 0,
        stop: None,
    };
    std::thread::scope(|scope| {
        let mut checkers = Checkers::start::<L>(scope, &parser, workers);
        let mut reading = true;
        let mut records = 0u64;
        let mut bad = None;
        loop {
            while reading && checkers.in_flight.len() < IN_FLIGHT {
                match walker.next()? {
                    Some(batch) => {
                        if !*reserved {
                            *reserved = true;
                            reserve_for(loader, src, &batch);
                        }
                        checkers.send(batch)?;
                    }
                    None => reading = false,
                }
            }
            let Some(done) = checkers.recv()? else {
                break;
            };
            let (taken, stop) = take_batch(loader, done);
            records += taken;
            if stop.is_some() {
                bad = stop;
                break;
            }
        }
        // Hang up: the parsing threads end once their queue is empty.
        drop(checkers);
        Ok((records, bad.or(walker.stop)))
    })
}

/// The parsing threads and the batches out with them: handed out in turn and taken back in the
/// same order, so the records reach the loader in file order.
struct Checkers<P> {
    to: Vec<mpsc::Sender<ReplayBatch>>,
    back: Vec<mpsc::Receiver<Done<P>>>,
    /// The thread of each batch out, oldest first.
    in_flight: VecDeque<usize>,
    next: usize,
}

impl<P: Send> Checkers<P> {
    /// Starts `workers` threads in `scope`, each checking and parsing the batches it is sent.
    fn start<'scope, L: Loader<Parsed = P>>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        parser: &'scope L::Parser,
        workers: usize,
    ) -> Self
    where
        P: 'scope,
    {
        let mut to = Vec::new();
        let mut back = Vec::new();
        for _ in 0..workers {
            let (tx, rx) = mpsc::channel::<ReplayBatch>();
            let (done_tx, done_rx) = mpsc::channel::<Done<P>>();
            scope.spawn(move || {
                for batch in rx {
                    if done_tx.send(check::<L>(parser, batch)).is_err() {
                        return;
                    }
                }
            });
            to.push(tx);
            back.push(done_rx);
        }
        Checkers {
            to,
            back,
            in_flight: VecDeque::new(),
            next: 0,
        }
    }

    /// Hands `batch` to the next thread in turn.
    fn send(&mut self, batch: ReplayBatch) -> io::Result<()> {
        let w = self.next;
        self.next = (self.next + 1) % self.to.len();
        if self.to[w].send(batch).is_err() {
            return Err(io::Error::other("a parsing thread ended"));
        }
        self.in_flight.push_back(w);
        Ok(())
    }

    /// The oldest batch out, checked; `None` when none is out.
    fn recv(&mut self) -> io::Result<Option<Done<P>>> {
        let Some(w) = self.in_flight.pop_front() else {
            return Ok(None);
        };
        self.back[w]
            .recv()
            .map(Some)
            .map_err(|_| io::Error::other("a parsing thread ended"))
    }
}

/// The first batch tells the size of a record: room for the file's worth is made once, not grown
/// step by step.
fn reserve_for<L: Loader>(loader: &mut L, src: &Source, batch: &ReplayBatch) {
    let frames = batch_frames(&batch.bytes).max(1);
    let per = (batch.bytes.len() / frames).max(1) as u64;
    loader.reserve((src.len() / per) as usize);
}

/// Hands a checked batch's records to `loader` in order; returns how many it took and the first bad
/// spot (a file offset, why): a record the loader refused, or where checking stopped.
fn take_batch<L: Loader>(
    loader: &mut L,
    done: Done<L::Parsed>,
) -> (u64, Option<(u64, &'static str)>) {
    let mut records = 0;
    for (range, p) in done.parsed {
        if !loader.take(&done.batch.bytes[range.clone()], p) {
            let at = range.start - format::FRAME_OVERHEAD;
            return (
                records,
                Some((done.batch.at + at as u64, "record is not an AT line")),
            );
        }
        records += 1;
    }
    let stop = done.stop.map(|(at, why)| (done.batch.at + at as u64, why));
    (records, stop)
}

/// Frames in a batch of whole frames.
fn batch_frames(bytes: &[u8]) -> usize {
    let mut n = 0;
    let mut at = 0;
    while let Some(l) = bytes.get(at..at + 4) {
        at += format::framed_len(u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize);
        n += 1;
    }
    n
}

/// How many frames lead from `at` exactly to `end` by their lengths alone; 0 if they do not.
fn frames_between(src: &Source, at: u64, end: u64) -> io::Result<u64> {
    let (mut pos, mut n) = (at, 0);
    let mut head = [0u8; 4];
    while pos < end {
        if read_at_most(&src.file, &mut head, pos, end)? < 4 {
            return Ok(0);
        }
        let len = u32::from_le_bytes(head) as usize;
        if len == 0 || len > format::MAX_RECORD {
            return Ok(0);
        }
        pos += format::framed_len(len) as u64;
        n += 1;
    }
    Ok(if pos == end { n } else { 0 })
}

/// The offset of the first whole, valid record that starts at or after `from`, found by reading the
/// file in [`READ_CHUNK`] steps (and a record's length more for a candidate that runs past a step). Only
/// a frame whose payload starts like an AT line is a candidate, so a stretch of random bytes costs a
/// comparison per byte, not a checksum.
///
/// # Errors
/// The file cannot be read.
pub(super) fn next_record(src: &Source, from: u64) -> io::Result<Option<u64>> {
    const LEAD: usize = format::FRAME_OVERHEAD + 3;
    let mut block = vec![0u8; READ_CHUNK];
    let mut at = from;
    while at + LEAD as u64 <= src.len {
        let n = read_at_most(&src.file, &mut block, at, src.len)?;
        if n < LEAD {
            return Ok(None);
        }
        for i in 0..=n - LEAD {
            let l = &block[i..i + LEAD];
            let len = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
            if !(3..=format::MAX_RECORD).contains(&len) || &l[8..] != b"AT " {
                continue;
            }
            let whole = format::framed_len(len);
            let found = if i + whole <= n {
                matches!(format::frame(&block[i..]), RecordFrame::Whole(..))
            } else if at + (i + whole) as u64 <= src.len {
                let mut rec = vec![0u8; whole];
                let got = read_at_most(&src.file, &mut rec, at + i as u64, src.len)?;
                got == whole && matches!(format::frame(&rec), RecordFrame::Whole(..))
            } else {
                false
            };
            if found {
                return Ok(Some(at + i as u64));
            }
        }
        // The last LEAD - 1 positions are looked at again with the next step.
        at += (n - LEAD + 1) as u64;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct Collect(Vec<Vec<u8>>);

    impl Loader for Collect {
        type Parsed = ();
        type Parser = ();
        fn parser(&self) {}
        fn parse((): &(), p: &[u8]) -> Option<()> {
            p.starts_with(b"AT ").then_some(())
        }
        fn reserve(&mut self, _: usize) {}
        fn take(&mut self, payload: &[u8], (): ()) -> bool {
            self.0.push(payload.to_vec());
            true
        }
    }

    fn line(i: usize) -> Vec<u8> {
        format!("AT A +0.100000000 c{i} +1+1 {i}").into_bytes()
    }

    fn write(name: &str, data: &[u8]) -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "herd-load-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::write(&p, data).unwrap();
        p
    }

    fn scan_path(p: &Path, repair: bool) -> (Vec<Vec<u8>>, FileScan) {
        let src = Source::open(p, Kind::Journal).unwrap().unwrap();
        let mut c = Collect(Vec::new());
        let s = scan(&src, repair, &mut c).unwrap();
        (c.0, s)
    }

    /// Records spanning many steps load whole, whatever their size against a step.
    #[test]
    fn a_file_of_many_steps_loads_whole_and_a_flip_is_skipped_by_repair() {
        let n = 40_000;
        let mut data = format::header(Kind::Journal).to_vec();
        let mut starts = Vec::new();
        let mut lines = Vec::new();
        for i in 0..n {
            let mut l = line(i);
            if i % 997 == 0 {
                l.extend(std::iter::repeat_n(b'x', 3 * READ_CHUNK / 2));
            }
            starts.push(data.len() as u64);
            format::write_record(&l, &mut data);
            lines.push(l);
        }
        let p = write("many", &data);
        let (got, s) = scan_path(&p, false);
        assert_eq!(s.tail, Tail::Clean);
        assert_eq!(got.len(), n);
        assert!(got == lines);
        // One flipped byte mid-file: refused without repair, one record dropped with it.
        let k = 20_001;
        let mut bad = data.clone();
        bad[starts[k] as usize + 12] ^= 0x01;
        std::fs::write(&p, &bad).unwrap();
        let (got, s) = scan_path(&p, false);
        assert_eq!(
            s.tail,
            Tail::Damaged {
                at: starts[k],
                why: "checksum mismatch"
            }
        );
        assert_eq!(got.len(), k);
        let (got, s) = scan_path(&p, true);
        assert_eq!(s.tail, Tail::Clean);
        assert_eq!(got.len(), n - 1);
        assert_eq!(
            s.skipped,
            [Skipped {
                at: starts[k],
                len: starts[k + 1] - starts[k],
                why: "checksum mismatch",
                records: 1,
            }]
        );
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn a_torn_tail_and_a_bad_length_are_told_apart_from_damage() {
        let mut data = format::header(Kind::Journal).to_vec();
        for i in 0..10 {
            format::write_record(&line(i), &mut data);
        }
        let whole = data.len() as u64;
        data.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3]);
        let p = write("torn", &data);
        let (got, s) = scan_path(&p, true);
        assert_eq!((got.len(), s.tail), (10, Tail::Torn { at: whole }));
        // Zeros, then a whole record: damage at the zeros, skipped by repair.
        data.truncate(whole as usize);
        data.extend_from_slice(&[0; 100]);
        format::write_record(&line(10), &mut data);
        std::fs::write(&p, &data).unwrap();
        let (_, s) = scan_path(&p, false);
        assert_eq!(
            s.tail,
            Tail::Damaged {
                at: whole,
                why: "bad record length"
            }
        );
        let (got, s) = scan_path(&p, true);
        assert_eq!(got.len(), 11);
        assert_eq!(s.skipped[0].len, 100);
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn devices_and_foreign_headers_are_refused_before_reading() {
        assert!(matches!(
            Source::open(Path::new("/dev/full"), Kind::Journal).unwrap(),
            Err(Refused::NotAFile("a device"))
        ));
        let p = write("foreign", &[0u8; 64]);
        assert!(matches!(
            Source::open(&p, Kind::Journal).unwrap(),
            Err(Refused::Foreign)
        ));
        std::fs::write(&p, b"HERD").unwrap();
        assert!(matches!(
            Source::open(&p, Kind::Journal).unwrap(),
            Err(Refused::Torn(4))
        ));
        let _ = std::fs::remove_file(&p);
    }
}
