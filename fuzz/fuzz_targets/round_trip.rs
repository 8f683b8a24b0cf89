//! Structured round trip: any valid message, record or peer line survives encode → parse unchanged.
#![no_main]

use arbitrary::Arbitrary;
use herd_proto::{AtRecord, Message, PeerMessage};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    message: Message<'static>,
    record: AtRecord<'static>,
    peer: PeerMessage<'static>,
}

fuzz_target!(|input: Input| {
    let bytes = input.message.to_bytes();
    assert_eq!(Message::parse(&bytes), Ok(input.message));
    let bytes = input.record.to_bytes();
    assert_eq!(AtRecord::parse(&bytes), Ok(input.record));
    let bytes = input.peer.to_bytes();
    assert_eq!(PeerMessage::parse(&bytes), Ok(input.peer));
});
