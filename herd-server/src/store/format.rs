//! The on-disk format of journals and snapshots: a versioned header, then framed records. Pure
//! functions over bytes, so every rule of reading a damaged file is tested without a disk.
//!
//! # Format
//! ```text
//! header:  8 bytes magic ("HERD-JNL" for a journal, "HERD-SNP" for a snapshot)
//!          4 bytes format version, little-endian (1)
//!          4 bytes zero (reserved)
//! record:  4 bytes payload length n, little-endian (1 ..= MAX_RECORD)
//!          4 bytes CRC-32 (IEEE) of the 4 length bytes and the payload, little-endian
//!          n bytes payload: one AT line, without its newline
//! ```
//! The checksum covers the length too, so a flipped bit in a length is caught like one in a line.
//!
//! # Reading a damaged file
//! A record that is incomplete or fails its checksum is either a *torn tail* — the write a crash
//! interrupted — or *damage*. The rule: it is a torn tail when no whole, valid record starts anywhere
//! after it (a crash leaves at most one partial record, or zeros, at the end); otherwise the file is
//! damaged there, and loading stops unless asked to repair (cut the file at the bad record).

use std::ops::Range;

/// Bytes of the header.
pub const HEADER_LEN: usize = 16;
/// Bytes before each record's payload (length and checksum).
pub const FRAME_OVERHEAD: usize = 8;
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Longest payload accepted: far above any AT line a server produces (lines are bounded by
/// `[limits] max_line`), low enough that a damaged length never asks for gigabytes.
pub const MAX_RECORD: usize = 16 * 1024 * 1024;

/// Which kind of file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Records appended as they are stored.
    Journal,
    /// The whole cache at one moment, written by compaction.
    Snapshot,
}

impl Kind {
    fn magic(self) -> &'static [u8; 8] {
        match self {
            Kind::Journal => b"HERD-JNL",
            Kind::Snapshot => b"HERD-SNP",
        }
    }

    /// What the kind is called in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Journal => "journal",
            Kind::Snapshot => "snapshot",
        }
    }
}

/// The header of a new file of `kind`.
pub fn header(kind: Kind) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(kind.magic());
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// Appends one record framing `payload` to `out`.
pub fn write_record(payload: &[u8], out: &mut Vec<u8>) {
    let len = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(payload);
    out.reserve(FRAME_OVERHEAD + payload.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

/// The bytes a record of `payload_len` takes in a file.
pub fn framed_len(payload_len: usize) -> usize {
    FRAME_OVERHEAD + payload_len
}

/// What the first bytes of `rest` hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordFrame {
    /// A whole, valid record: its payload at this range of `rest`, and the frame's length.
    Whole(Range<usize>, usize),
    /// Not enough bytes to tell (more may follow in the file).
    Partial,
    /// Not a valid record: why.
    Bad(&'static str),
}

/// Reads the record at the start of `rest`.
pub fn frame(rest: &[u8]) -> RecordFrame {
    let Some(head) = rest.get(..FRAME_OVERHEAD) else {
        return RecordFrame::Partial;
    };
    let len_bytes: [u8; 4] = [head[0], head[1], head[2], head[3]];
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len == 0 || len > MAX_RECORD {
        return RecordFrame::Bad("bad record length");
    }
    let Some(payload) = rest.get(FRAME_OVERHEAD..FRAME_OVERHEAD + len) else {
        return RecordFrame::Partial;
    };
    let want = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len_bytes);
    crc.update(payload);
    if crc.finalize() != want {
        return RecordFrame::Bad("checksum mismatch");
    }
    RecordFrame::Whole(FRAME_OVERHEAD..FRAME_OVERHEAD + len, FRAME_OVERHEAD + len)
}

/// Whether a whole, valid record starts at any offset of `rest` after its first byte — that is,
/// whether a bad spot at the start of `rest` is damage rather than a torn tail.
pub fn valid_record_follows(rest: &[u8]) -> bool {
    (1..rest.len()).any(|i| matches!(frame(&rest[i..]), RecordFrame::Whole(..)))
}

/// What the header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    /// A header of this kind and version.
    Valid,
    /// Fewer bytes than a header, all matching one: a file whose creation a crash interrupted.
    Torn,
    /// Not a file of this kind.
    Foreign,
    /// A version this build cannot read.
    Version(u32),
}

/// Checks the header at the start of `data`.
pub fn check_header(data: &[u8], kind: Kind) -> Header {
    let want = header(kind);
    if data.len() < HEADER_LEN {
        return if want.starts_with(data) {
            Header::Torn
        } else {
            Header::Foreign
        };
    }
    if data[..8] != want[..8] || data[12..HEADER_LEN] != want[12..] {
        return Header::Foreign;
    }
    let version = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    if version != VERSION {
        return Header::Version(version);
    }
    Header::Valid
}

/// How a scan of a whole file ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Every byte belongs to a whole record.
    Clean,
    /// A torn last record starts at `at` (a file offset): cut the file there.
    Torn {
        /// Where the torn record starts.
        at: usize,
    },
    /// A bad record at `at` with valid records after it: the file is damaged.
    Damaged {
        /// Where the bad record starts.
        at: usize,
        /// What is wrong there.
        why: &'static str,
    },
    /// The header names a version this build cannot read.
    Version(u32),
}

/// Scans a whole file held in memory, calling `each` with every record's payload in order until the
/// end or the first bad spot. `each` returns `false` for a payload it cannot use (a checksum-valid
/// record that is not an AT line), which counts as damage at that record.
pub fn scan(data: &[u8], kind: Kind, mut each: impl FnMut(&[u8]) -> bool) -> End {
    match check_header(data, kind) {
        Header::Valid => {}
        Header::Torn => return End::Torn { at: 0 },
        Header::Foreign => {
            return End::Damaged {
                at: 0,
                why: "not a herd file of this kind (bad header)",
            }
        }
        Header::Version(v) => return End::Version(v),
    }
    let mut at = HEADER_LEN;
    while at < data.len() {
        let rest = &data[at..];
        let why = match frame(rest) {
            RecordFrame::Whole(payload, len) => {
                if each(&rest[payload]) {
                    at += len;
                    continue;
                }
                "record is not an AT line"
            }
            RecordFrame::Partial => "record cut short",
            RecordFrame::Bad(why) => why,
        };
        return bad_spot(rest, at, why);
    }
    End::Clean
}

/// The verdict on a bad record at file offset `at`, `rest` being the file from there to its end.
pub fn bad_spot(rest: &[u8], at: usize, why: &'static str) -> End {
    if valid_record_follows(rest) {
        End::Damaged { at, why }
    } else {
        End::Torn { at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(kind: Kind, records: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
        let mut out = header(kind).to_vec();
        let mut ends = vec![out.len()];
        for r in records {
            write_record(r, &mut out);
            ends.push(out.len());
        }
        (out, ends)
    }

    fn load(data: &[u8]) -> (Vec<Vec<u8>>, End) {
        let mut got = Vec::new();
        let end = scan(data, Kind::Journal, |p| {
            got.push(p.to_vec());
            true
        });
        (got, end)
    }

    fn line(i: usize) -> Vec<u8> {
        format!("AT Alford +0.000000001 client{i} +34.068930-118.445127 {i}.5").into_bytes()
    }

    #[test]
    fn round_trip_and_header() {
        let records: Vec<Vec<u8>> = (0..50).map(line).collect();
        let (data, _) = file(Kind::Journal, &records);
        assert_eq!(load(&data), (records, End::Clean));
        assert_eq!(
            scan(&header(Kind::Snapshot), Kind::Journal, |_| true),
            End::Damaged {
                at: 0,
                why: "not a herd file of this kind (bad header)"
            }
        );
        let mut v2 = header(Kind::Journal);
        v2[8] = 2;
        assert_eq!(scan(&v2, Kind::Journal, |_| true), End::Version(2));
        assert_eq!(scan(b"HERD", Kind::Journal, |_| true), End::Torn { at: 0 });
        assert_eq!(scan(b"", Kind::Journal, |_| true), End::Torn { at: 0 });
    }

    #[test]
    fn every_truncation_loads_the_whole_records_before_it() {
        let records: Vec<Vec<u8>> = (0..6).map(line).collect();
        let (data, ends) = file(Kind::Journal, &records);
        for cut in 0..=data.len() {
            let (got, end) = load(&data[..cut]);
            let whole = ends.iter().filter(|&&e| e <= cut).count().saturating_sub(1);
            assert_eq!(got, records[..whole], "cut at {cut}");
            let boundary = ends.contains(&cut);
            if boundary {
                assert_eq!(end, End::Clean, "cut at {cut}");
            } else {
                let at = ends.iter().rev().find(|&&e| e <= cut).copied().unwrap_or(0);
                assert_eq!(end, End::Torn { at }, "cut at {cut}");
            }
        }
    }

    #[test]
    fn a_zeroed_tail_is_torn() {
        let records: Vec<Vec<u8>> = (0..3).map(line).collect();
        let (mut data, ends) = file(Kind::Journal, &records);
        data.extend_from_slice(&[0; 4096]);
        assert_eq!(
            load(&data),
            (records, End::Torn { at: ends[3] }),
            "preallocated zeros after the last record"
        );
    }

    #[test]
    fn a_payload_that_is_not_accepted_is_damage() {
        let records: Vec<Vec<u8>> = (0..3).map(line).collect();
        let (data, ends) = file(Kind::Journal, &records);
        let mut n = 0;
        let end = scan(&data, Kind::Journal, |_| {
            n += 1;
            n != 2
        });
        assert_eq!(
            end,
            End::Damaged {
                at: ends[1],
                why: "record is not an AT line"
            }
        );
    }

    proptest! {
        #[test]
        fn records_round_trip(records in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 1..200), 0..40)) {
            let (data, _) = file(Kind::Snapshot, &records);
            let mut got = Vec::new();
            let end = scan(&data, Kind::Snapshot, |p| { got.push(p.to_vec()); true });
            prop_assert_eq!(end, End::Clean);
            prop_assert_eq!(got, records);
        }

        /// A flipped byte anywhere is never loaded as if nothing happened: the scan reports a torn
        /// tail or damage, and every record it did load is an original one, in order.
        #[test]
        fn a_flipped_byte_is_detected(n in 1usize..12, pos in any::<prop::sample::Index>(),
                                      flip in 1u8..=255) {
            let records: Vec<Vec<u8>> = (0..n).map(line).collect();
            let (mut data, ends) = file(Kind::Journal, &records);
            let pos = pos.index(data.len());
            data[pos] ^= flip;
            let (got, end) = load(&data);
            prop_assert!(end != End::Clean, "flip at {} went unnoticed", pos);
            prop_assert!(got.len() <= records.len());
            prop_assert_eq!(&got[..], &records[..got.len()]);
            // The records before the flipped one all load.
            let hit = ends.iter().filter(|&&e| e <= pos).count().saturating_sub(1);
            if pos >= HEADER_LEN {
                prop_assert_eq!(got.len(), hit);
            }
            // Damage is reported only where whole records follow the bad one.
            if let End::Torn { at } = end {
                prop_assert!(!valid_record_follows(&data[at..]));
            }
        }
    }
}
