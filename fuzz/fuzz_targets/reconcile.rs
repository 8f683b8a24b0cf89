//! Reconciliation lines from a hostile or broken peer, fed to a node that holds records: every line
//! either parses and round-trips, and is answered, or is refused; nothing panics, and what the node
//! writes back is always lines of the peer grammar.
#![no_main]

use herd_proto::PeerMessage;
use herd_server::node::Node;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut node = Node::new("A", vec!["B".into(), "0".into()]);
    let mut out = Vec::new();
    for i in 0..40u32 {
        out.clear();
        let line = format!("IAMAT c{i} +1+1 {i}");
        node.client_line(
            line.as_bytes(),
            herd_proto::Timestamp::new(1000, 0).unwrap(),
            &mut out,
        );
    }
    // Link 0: A dials B (it opened the reconciliation); link 1: "0" dials A.
    let mut epochs = [
        node.link_up(0, std::time::Instant::now()),
        node.link_up(1, std::time::Instant::now()),
    ];
    // Lines alternate between the two links, each handed over whole with its newline, through the
    // entry point the driver uses.
    for (n, line) in data.split(|&b| b == b'\n').enumerate() {
        let id = n % 2;
        if let Ok(m) = PeerMessage::parse(line) {
            assert_eq!(PeerMessage::parse(&m.to_bytes()).as_ref(), Ok(&m));
        }
        let mut bytes = line.to_vec();
        bytes.push(b'\n');
        let now = std::time::Instant::now();
        let input = node.handle_link_input(
            id,
            epochs[id],
            &bytes,
            now,
            herd_proto::Timestamp::now(),
            |_| {},
        );
        assert!(input.consumed <= bytes.len());
        while node.poll_event().is_some() {}
        if input.close.is_some() {
            // The driver closes the link; it comes up again.
            node.link_down(id, epochs[id], now);
            epochs[id] = node.link_up(id, now);
        }
        out.clear();
        node.poll_transmit(id, epochs[id], &mut out, 64);
        for sent in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert!(
                PeerMessage::parse(sent).is_ok(),
                "{}",
                String::from_utf8_lossy(sent)
            );
        }
    }
});
