//! Raw bytes as a journal file: the scan never panics, stops inside the file, and everything it loads
//! is a whole record that frames back to the same bytes.
#![no_main]

use herd_server::store::format::{header, scan, write_record, End, Kind, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut loaded = Vec::new();
    let end = scan(data, Kind::Journal, |p| {
        loaded.push(p.to_vec());
        true
    });
    let mut again = header(Kind::Journal).to_vec();
    for p in &loaded {
        write_record(p, &mut again);
    }
    match end {
        End::Clean => assert_eq!(again, data),
        End::Torn { at } | End::Damaged { at, .. } => {
            assert!(at <= data.len());
            if at >= HEADER_LEN {
                assert_eq!(again, data[..at]);
            }
        }
        End::Version(_) => assert!(loaded.is_empty()),
    }
});
