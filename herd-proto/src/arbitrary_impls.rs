//! `Arbitrary` impls that build only valid messages, so a fuzzer explores the encoder and the parser
//! together (`parse(encode(m)) == m`) instead of being rejected at the first field.

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::borrow::Cow;

use arbitrary::{Arbitrary, Result, Unstructured};

use crate::message::{AtRecord, ClientTime, IAmAt, Location, Message, Radius, WhatsAt};
use crate::peer::{KeyRange, PeerMessage, CELL_BYTES, MAX_CELLS, MAX_CHUNK, MAX_IDS, PEER_VERSION};
use crate::time::{TimeDiff, Timestamp};

/// A non-empty run of non-white-space bytes.
fn token(u: &mut Unstructured<'_>) -> Result<Cow<'static, [u8]>> {
    let mut v: Vec<u8> = Vec::<u8>::arbitrary(u)?
        .into_iter()
        .filter(|&b| !crate::parse::is_ws(b))
        .take(64)
        .collect();
    if v.is_empty() {
        v.push(u.int_in_range(b'!'..=b'~')?);
    }
    Ok(Cow::Owned(v))
}

fn digits(u: &mut Unstructured<'_>, min: usize, max: usize) -> Result<String> {
    let n = u.int_in_range(min..=max)?;
    (0..n)
        .map(|_| Ok(char::from(u.int_in_range(b'0'..=b'9')?)))
        .collect()
}

/// `[+-]D+(.D+)?` with an integer part below `max` (so any fraction stays in range), or `max` exactly.
fn degrees(u: &mut Unstructured<'_>, max: u32) -> Result<String> {
    let sign = if bool::arbitrary(u)? { '-' } else { '+' };
    let zeros = "0".repeat(u.int_in_range(0..=2)?);
    if u.ratio(1, 8)? {
        let frac = if bool::arbitrary(u)? {
            format!(".{}", "0".repeat(u.int_in_range(1..=4)?))
        } else {
            String::new()
        };
        return Ok(format!("{sign}{zeros}{max}{frac}"));
    }
    let int = u.int_in_range(0..=max - 1)?;
    let frac = if bool::arbitrary(u)? {
        format!(".{}", digits(u, 1, 12)?)
    } else {
        String::new()
    };
    Ok(format!("{sign}{zeros}{int}{frac}"))
}

impl<'a> Arbitrary<'a> for Location<'static> {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let text = format!("{}{}", degrees(u, 90)?, degrees(u, 180)?);
        Location::parse(text.as_bytes())
            .map(Location::into_owned)
            .map_err(|_| arbitrary::Error::IncorrectFormat)
    }
}

impl<'a> Arbitrary<'a> for ClientTime<'static> {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let secs = u64::arbitrary(u)?;
        let text = if bool::arbitrary(u)? {
            format!("{secs}.{}", digits(u, 1, 9)?)
        } else {
            secs.to_string()
        };
        ClientTime::parse(text.as_bytes())
            .map(ClientTime::into_owned)
            .map_err(|_| arbitrary::Error::IncorrectFormat)
    }
}

impl<'a> Arbitrary<'a> for Radius<'static> {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let int = u.int_in_range(0..=50u32)?;
        let text = if int == 50 || bool::arbitrary(u)? {
            format!("{}", int.max(1))
        } else {
            format!("{int}.{}1", digits(u, 0, 8)?)
        };
        Radius::parse(text.as_bytes())
            .map(Radius::into_owned)
            .map_err(|_| arbitrary::Error::IncorrectFormat)
    }
}

impl<'a> Arbitrary<'a> for Timestamp {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(
            Timestamp::new(u64::arbitrary(u)?, u.int_in_range(0..=999_999_999)?)
                .unwrap_or_default(),
        )
    }
}

impl<'a> Arbitrary<'a> for TimeDiff {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(TimeDiff::from_nanos(i128::arbitrary(u)?))
    }
}

impl<'a> Arbitrary<'a> for Message<'static> {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(if bool::arbitrary(u)? {
            Message::IAmAt(IAmAt {
                client: token(u)?,
                location: Location::arbitrary(u)?,
                time: ClientTime::arbitrary(u)?,
            })
        } else {
            Message::WhatsAt(WhatsAt {
                client: token(u)?,
                radius: Radius::arbitrary(u)?,
                bound: u.int_in_range(0..=WhatsAt::MAX_BOUND)?,
            })
        })
    }
}

impl<'a> Arbitrary<'a> for AtRecord<'static> {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(AtRecord {
            server: token(u)?,
            diff: TimeDiff::arbitrary(u)?,
            client: token(u)?,
            location: Location::arbitrary(u)?,
            time: ClientTime::arbitrary(u)?,
        })
    }
}

/// A key range of at most `most` digits (the fingerprint split needs fewer than 16).
fn key_range(u: &mut Unstructured<'_>, most: u8) -> Result<KeyRange> {
    let digits = u.int_in_range(0..=most)?;
    Ok(KeyRange::new(digits, u64::arbitrary(u)?).unwrap_or(KeyRange::ALL))
}

/// `least` to [`MAX_IDS`] short ids (a want needs one at least).
fn hashes(u: &mut Unstructured<'_>, least: usize) -> Result<Vec<u32>> {
    let n = u.int_in_range(least..=MAX_IDS)?;
    (0..n).map(|_| u32::arbitrary(u)).collect()
}

/// A chunk of a table that fits the limits: a whole number of cell triples, a chunk of at most
/// [`MAX_CHUNK`] cells inside it.
fn cells(u: &mut Unstructured<'_>) -> Result<PeerMessage<'static>> {
    let total = 3 * u.int_in_range(1..=MAX_CELLS / 3)?;
    let n = u.int_in_range(1..=MAX_CHUNK.min(total as usize))?;
    let at = u.int_in_range(0..=total - n as u32)?;
    let mut cells = alloc::vec![0u8; n * CELL_BYTES];
    u.fill_buffer(&mut cells)?;
    Ok(PeerMessage::Cells {
        range: key_range(u, 16)?,
        total,
        at,
        cells,
    })
}

impl<'a> Arbitrary<'a> for PeerMessage<'static> {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.int_in_range(0..=12u8)? {
            0 => PeerMessage::Hello {
                version: PEER_VERSION,
                name: token(u)?,
                to: token(u)?,
                handshake: token(u)?,
            },
            1 => PeerMessage::Welcome {
                name: token(u)?,
                handshake: token(u)?,
            },
            2 => PeerMessage::Ping,
            3 => PeerMessage::Refused { reason: token(u)? },
            4 => PeerMessage::Synced {
                count: u64::arbitrary(u)?,
            },
            5 => PeerMessage::Record(AtRecord::arbitrary(u)?),
            6 => PeerMessage::Pong,
            7 => PeerMessage::Root {
                count: u64::arbitrary(u)?,
                fingerprint: u64::arbitrary(u)?,
                salt: u64::arbitrary(u)?,
            },
            8 => PeerMessage::Fingerprints {
                range: key_range(u, 15)?,
                children: <[u32; 16]>::arbitrary(u)?,
            },
            12 => cells(u)?,
            9 => PeerMessage::Ids {
                range: key_range(u, 16)?,
                hashes: hashes(u, 0)?,
            },
            10 => PeerMessage::Want {
                range: key_range(u, 16)?,
                hashes: hashes(u, 1)?,
            },
            11 => PeerMessage::Over,
            _ => PeerMessage::Record(AtRecord::arbitrary(u)?),
        })
    }
}
