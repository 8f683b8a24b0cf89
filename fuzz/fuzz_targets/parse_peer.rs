//! Raw bytes into the peer-line and AT-record parsers.
#![no_main]

use herd_proto::{AtRecord, PeerMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    match PeerMessage::parse(line) {
        Ok(m) => {
            let bytes = m.to_bytes();
            assert_eq!(PeerMessage::parse(&bytes).as_ref(), Ok(&m));
        }
        Err(e) => assert!(e.offset <= line.len()),
    }
    if let Ok(r) = AtRecord::parse(line) {
        assert_eq!(AtRecord::parse(&r.to_bytes()).as_ref(), Ok(&r));
    }
});
