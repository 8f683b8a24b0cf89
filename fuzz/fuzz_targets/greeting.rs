//! Arbitrary bytes into the peer greeting state machine, from either side, with and without a
//! secret: it never panics, and with a secret it never establishes a link from bytes it was not
//! given by a holder of the secret (arbitrary input cannot forge a Noise handshake).
#![no_main]

use std::time::Instant;

use bytes::BytesMut;
use herd_server::node::handshake::{Greeting, Keyring, Verdict};
use herd_server::node::Node;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let secret = mode & 1 == 1;
    let keyring = if secret {
        Keyring::new(&["fuzz secret"])
    } else {
        Keyring::default()
    };
    let now = Instant::now();
    let node = Node::new("Bravo", vec!["Alford".into(), "Charlie".into()]);
    let mut out = Vec::new();
    let mut greeting = if mode & 2 == 0 {
        Greeting::accept(b"Bravo", &keyring)
    } else {
        Greeting::dial(b"Bravo", b"Charlie", 1, &keyring, 0, &mut out)
    };
    // The rest arrives in chunks whose lengths the input chooses.
    let mut input = BytesMut::new();
    let mut rest = rest;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        input.extend_from_slice(&tail[..n]);
        rest = &tail[n..];
        match greeting.feed(&mut input, &node, now, &mut out) {
            Verdict::Pending => {}
            Verdict::Established(e) => {
                assert!(!secret, "forged a secret handshake: {e:?}");
                return;
            }
            Verdict::Failed(_) => return,
        }
    }
});
