//! Raw bytes into the client-line parsers (IAMAT/WHATSAT, and the WebSocket door's WATCH/UNWATCH):
//! never panics, errors point inside the line, and whatever parses re-encodes to a line that parses
//! to the same message.
#![no_main]

use herd_proto::{Message, WatchLine};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    match Message::parse(line) {
        Ok(m) => {
            let bytes = m.to_bytes();
            assert_eq!(Message::parse(&bytes).as_ref(), Ok(&m));
        }
        Err(e) => assert!(e.offset <= line.len()),
    }
    match WatchLine::parse(line) {
        Ok(w) => {
            let bytes = w.to_bytes();
            assert_eq!(WatchLine::parse(&bytes).as_ref(), Ok(&w));
        }
        Err(e) => assert!(e.offset <= line.len()),
    }
});
