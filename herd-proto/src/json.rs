//! An AT record as JSON: the one shape `herd iamat --json`, `herd whatsat --json` and the HTTP door
//! (PROTOCOL.md §10) answer with.

use serde_json::{Map, Value};

use crate::AtRecord;

/// The record's fields: `server`, `time_diff`, `client`, `location` (the exact text), `latitude`,
/// `longitude` (degrees) and `client_time` (the exact text). Bytes that are not UTF-8 are shown
/// with U+FFFD.
pub fn record_json(record: &AtRecord<'_>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "server".into(),
        String::from_utf8_lossy(&record.server).into(),
    );
    m.insert("time_diff".into(), record.diff.to_string().into());
    m.insert(
        "client".into(),
        String::from_utf8_lossy(&record.client).into(),
    );
    m.insert("location".into(), record.location.as_str().into());
    m.insert("latitude".into(), record.location.latitude().into());
    m.insert("longitude".into(), record.location.longitude().into());
    m.insert("client_time".into(), record.time.as_str().into());
    m
}

/// Appends the record's JSON object to `out`: the bytes of [`record_json`] serialised compactly
/// (`Value::Object(record_json(record)).to_string()`), the same fields in the same order, written
/// without building the map.
///
/// A server answers a record this way on every HTTP IAMAT, where the map (a key string, a value and
/// an index entry per field, then a second pass to serialise it) was most of the answer's cost. The
/// strings and numbers still go through `serde_json`'s own writer, so escapes and float digits are
/// its own.
///
/// # Format
/// ```text
/// {"server":"Alford","time_diff":"+0.263873386","client":"kiwi","location":"+34.068930-118.445127","latitude":34.06893,"longitude":-118.445127,"client_time":"1479413884.392014450"}
/// ```
pub fn write_record_json(record: &AtRecord<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"server\":");
    json_str(&String::from_utf8_lossy(&record.server), out);
    out.extend_from_slice(b",\"time_diff\":\"");
    // The wire form of a difference is a sign, digits and a point: nothing to escape.
    record.diff.write_to(out);
    out.extend_from_slice(b"\",\"client\":");
    json_str(&String::from_utf8_lossy(&record.client), out);
    out.extend_from_slice(b",\"location\":");
    json_str(record.location.as_str(), out);
    out.extend_from_slice(b",\"latitude\":");
    json_f64(record.location.latitude(), out);
    out.extend_from_slice(b",\"longitude\":");
    json_f64(record.location.longitude(), out);
    out.extend_from_slice(b",\"client_time\":");
    json_str(record.time.as_str(), out);
    out.push(b'}');
}

/// `s` as a JSON string, escaped by `serde_json`.
fn json_str(s: &str, out: &mut Vec<u8>) {
    // Writing to a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// `x` as a JSON number, written by `serde_json` (`null` if not finite, as `Value::from` makes it).
fn json_f64(x: f64, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(&mut *out, &x);
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use proptest::prelude::*;

    use super::*;
    use crate::{ClientTime, Location, TimeDiff};

    fn record<'a>(
        server: &'a [u8],
        client: &'a [u8],
        location: &str,
        time: &str,
        diff: i128,
    ) -> AtRecord<'a> {
        AtRecord {
            server: Cow::Borrowed(server),
            diff: TimeDiff::from_nanos(diff),
            client: Cow::Borrowed(client),
            location: Location::parse(location.as_bytes()).unwrap().into_owned(),
            time: ClientTime::parse(time.as_bytes()).unwrap().into_owned(),
        }
    }

    fn both(r: &AtRecord<'_>) -> (String, String) {
        let mut out = Vec::new();
        write_record_json(r, &mut out);
        let written = String::from_utf8(out).expect("UTF-8");
        (written, Value::Object(record_json(r)).to_string())
    }

    #[test]
    fn the_written_json_is_serde_jsons() {
        // (server, client, location, client time, time difference in nanoseconds)
        type Case<'a> = (&'a [u8], &'a [u8], &'a str, &'a str, i128);
        let cases: &[Case<'_>] = &[
            (
                b"Alford",
                b"kiwi",
                "+34.068930-118.445127",
                "1479413884.392014450",
                263_873_386,
            ),
            (b"Ball", b"\"quoted\\back\"", "-90+180", "0", -500_000_000),
            (
                b"Welsh",
                b"ctl\x01\x1f\x7f\x08",
                "+0.5-0.25",
                "1479413884",
                0,
            ),
            (
                b"S\xffrv",
                b"bad\xc3utf8\xff",
                "+00012.000000000001-0",
                "18446744073709551615.999999999",
                i128::MAX,
            ),
            (
                b"caf\xc3\xa9",
                "日本\u{2028}".as_bytes(),
                "-89.999999+179.9",
                "1.1",
                i128::MIN,
            ),
            (b"", b"</script>&'", "+1+2", "2", 1),
        ];
        for &(server, client, location, time, diff) in cases {
            let (written, serde) = both(&record(server, client, location, time, diff));
            assert_eq!(written, serde);
        }
    }

    proptest! {
        #[test]
        fn any_record_is_written_as_serde_json_writes_it(
            server in proptest::collection::vec(any::<u8>(), 0..12),
            client in proptest::collection::vec(any::<u8>(), 1..24),
            lat in (any::<bool>(), 0u32..=90, "[0-9]{0,8}"),
            lon in (any::<bool>(), 0u32..=180, "[0-9]{0,8}"),
            frac in "[0-9]{0,9}",
            secs in any::<u64>(),
            diff in any::<i128>(),
        ) {
            let deg = |(neg, int, frac): (bool, u32, String)| {
                let sign = if neg { '-' } else { '+' };
                if frac.is_empty() { format!("{sign}{int}") } else { format!("{sign}{int}.{frac}") }
            };
            let location = format!("{}{}", deg(lat), deg(lon));
            let time = if frac.is_empty() { secs.to_string() } else { format!("{secs}.{frac}") };
            // Past the range (90.5, 180.1): not a location the grammar takes.
            let Ok(l) = Location::parse(location.as_bytes()) else { return Ok(()) };
            let r = AtRecord {
                server: Cow::Owned(server),
                diff: TimeDiff::from_nanos(diff),
                client: Cow::Owned(client),
                location: l.into_owned(),
                time: ClientTime::parse(time.as_bytes()).unwrap().into_owned(),
            };
            let (written, serde) = both(&r);
            prop_assert_eq!(written, serde);
        }
    }
}
