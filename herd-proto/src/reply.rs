//! Server replies that are not a single typed message: `? <line>` and the WHATSAT answer framing.

use crate::message::AtRecord;
#[allow(unused_imports)]
use crate::prelude::*;

/// Appends the reply to an invalid line: `? `, the line byte for byte (without its terminator), `\n`.
///
/// # Format
/// ```text
/// ? IAMAT kiwi.cs.ucla.edu 34.06-118.44 1479413884.392014450
/// ```
pub fn write_invalid(line: &[u8], dst: &mut Vec<u8>) {
    dst.reserve(line.len() + 3);
    dst.extend_from_slice(b"? ");
    dst.extend_from_slice(line);
    dst.push(b'\n');
}

/// Appends a whole WHATSAT answer: the AT line, `\n`, the JSON, `\n\n`.
///
/// The protocol ends the answer at the first empty line, so the JSON is written without empty lines
/// (lines of white space only are dropped) and without trailing white space; exactly two `\n` follow.
///
/// # Format
/// ```text
/// AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450
/// {
///   "results": [],
///   "status": "ZERO_RESULTS"
/// }
///
/// ```
pub fn write_whatsat(record: &AtRecord<'_>, json: &[u8], dst: &mut Vec<u8>) {
    record.write_to(dst);
    dst.push(b'\n');
    dst.reserve(json.len() + 2);
    let mut wrote = false;
    for line in json.split(|&b| b == b'\n') {
        let line = trim_end(line);
        if line.iter().all(|&b| crate::parse::is_ws(b)) {
            continue;
        }
        if wrote {
            dst.push(b'\n');
        }
        dst.extend_from_slice(line);
        wrote = true;
    }
    if !wrote {
        dst.extend_from_slice(b"{}");
    }
    dst.extend_from_slice(b"\n\n");
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., last] = s {
        if crate::parse::is_ws(*last) {
            s = rest;
        } else {
            break;
        }
    }
    s
}
