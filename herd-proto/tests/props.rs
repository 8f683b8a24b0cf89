//! Property tests: round trips, no panics on any bytes, a total record order, exact time arithmetic.

use std::borrow::Cow;

use herd_proto::{
    AtRecord, ClientTime, IAmAt, Location, Message, PeerMessage, Radius, TimeDiff, WhatsAt,
};
use proptest::prelude::*;

fn client_id() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        any::<u8>().prop_filter("no white space", |b| !herd_proto::is_whitespace(*b)),
        1..40,
    )
}

fn degrees(max: u32) -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        0..=max,
        proptest::option::of("[0-9]{1,12}"),
        0usize..3,
    )
        .prop_map(move |(neg, int, frac, zeros)| {
            let sign = if neg { '-' } else { '+' };
            let pad = "0".repeat(zeros);
            match frac {
                // At the limit only a zero fraction stays in range.
                Some(f) if int == max => format!("{sign}{pad}{int}.{}", "0".repeat(f.len())),
                Some(f) => format!("{sign}{pad}{int}.{f}"),
                None => format!("{sign}{pad}{int}"),
            }
        })
}

fn location() -> impl Strategy<Value = Location<'static>> {
    (degrees(90), degrees(180)).prop_map(|(a, b)| {
        Location::parse(format!("{a}{b}").as_bytes())
            .unwrap()
            .into_owned()
    })
}

fn client_time() -> impl Strategy<Value = ClientTime<'static>> {
    (any::<u64>(), proptest::option::of("[0-9]{1,9}")).prop_map(|(s, f)| {
        let text = match f {
            Some(f) => format!("{s}.{f}"),
            None => s.to_string(),
        };
        ClientTime::parse(text.as_bytes()).unwrap().into_owned()
    })
}

fn radius() -> impl Strategy<Value = Radius<'static>> {
    (
        1u32..=50,
        proptest::option::of("[0-9]{0,8}[1-9]"),
        any::<bool>(),
    )
        .prop_map(|(int, frac, below)| {
            let text = match frac {
                Some(f) if int < 50 => format!("{}.{f}", if below { int - 1 } else { int }),
                _ => int.to_string(),
            };
            Radius::parse(text.as_bytes()).unwrap().into_owned()
        })
}

fn message() -> impl Strategy<Value = Message<'static>> {
    prop_oneof![
        (client_id(), location(), client_time()).prop_map(|(c, location, time)| Message::IAmAt(
            IAmAt {
                client: Cow::Owned(c),
                location,
                time,
            }
        )),
        (client_id(), radius(), 0u8..=20).prop_map(|(c, radius, bound)| Message::WhatsAt(
            WhatsAt {
                client: Cow::Owned(c),
                radius,
                bound,
            }
        )),
    ]
}

fn record() -> impl Strategy<Value = AtRecord<'static>> {
    (
        prop_oneof![
            Just(b"Alford".to_vec()),
            Just(b"Ball".to_vec()),
            client_id()
        ],
        prop_oneof![any::<i128>(), -3i128..3],
        prop_oneof![Just(b"kiwi".to_vec()), client_id()],
        location(),
        prop_oneof![
            client_time(),
            Just(ClientTime::parse(b"1.5").unwrap().into_owned())
        ],
    )
        .prop_map(|(server, diff, client, location, time)| AtRecord {
            server: Cow::Owned(server),
            diff: TimeDiff::from_nanos(diff),
            client: Cow::Owned(client),
            location,
            time,
        })
}

/// Reconciliation lines with any key range, fingerprints and hash lists.
fn reconcile_message() -> impl Strategy<Value = PeerMessage<'static>> {
    let range = |most: u8| {
        (0..=most, any::<u64>()).prop_map(|(d, p)| herd_proto::KeyRange::new(d, p).unwrap())
    };
    let hashes =
        |least: usize| proptest::collection::vec(any::<u32>(), least..=herd_proto::MAX_IDS);
    let cells =
        (1..=herd_proto::MAX_CELLS / 3, 1..=herd_proto::MAX_CHUNK).prop_flat_map(|(t, n)| {
            let (total, n) = (3 * t, n.min(3 * t as usize));
            (
                Just(total),
                0..=total - n as u32,
                proptest::collection::vec(any::<u8>(), n * herd_proto::CELL_BYTES),
            )
        });
    prop_oneof![
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(count, fingerprint, salt)| {
            PeerMessage::Root {
                count,
                fingerprint,
                salt,
            }
        }),
        (range(15), any::<[u32; 16]>())
            .prop_map(|(range, children)| PeerMessage::Fingerprints { range, children }),
        (range(16), cells).prop_map(|(range, (total, at, cells))| PeerMessage::Cells {
            range,
            total,
            at,
            cells
        }),
        (range(16), hashes(0)).prop_map(|(range, hashes)| PeerMessage::Ids { range, hashes }),
        (range(16), hashes(1)).prop_map(|(range, hashes)| PeerMessage::Want { range, hashes }),
        Just(PeerMessage::Over),
        any::<u64>().prop_map(|count| PeerMessage::Synced { count }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn reconcile_messages_round_trip(m in reconcile_message()) {
        let bytes = m.to_bytes();
        prop_assert_eq!(PeerMessage::parse(&bytes), Ok(m));
    }

    #[test]
    fn messages_round_trip(m in message()) {
        let bytes = m.to_bytes();
        prop_assert_eq!(Message::parse(&bytes), Ok(m));
    }

    #[test]
    fn records_round_trip(r in record()) {
        let bytes = r.to_bytes();
        prop_assert_eq!(AtRecord::parse(&bytes), Ok(r.clone()));
        prop_assert_eq!(PeerMessage::parse(&bytes), Ok(PeerMessage::Record(r.clone())));
        // A record is never a client message.
        prop_assert!(Message::parse(&bytes).is_err());
    }

    #[test]
    fn the_length_of_a_line_is_known_without_writing_it(r in record(), nanos in any::<i128>()) {
        let len = AtRecord::fields_len(
            r.server.len(),
            r.diff,
            r.client.len(),
            r.location.as_bytes().len(),
            r.time.as_bytes().len(),
        );
        prop_assert_eq!(len, r.to_bytes().len());
        let (diff, mut written) = (TimeDiff::from_nanos(nanos), Vec::new());
        diff.write_to(&mut written);
        prop_assert_eq!(diff.wire_len(), written.len());
    }

    #[test]
    fn the_key_of_a_written_line_is_the_key_of_its_record(r in record()) {
        let line = r.to_bytes();
        prop_assert_eq!(herd_proto::RecordKey::of_line(&line, r.time.value(), r.diff), r.key());
    }

    #[test]
    fn arbitrary_bytes_never_panic(line in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Message::parse(&line);
        let _ = PeerMessage::parse(&line);
        let _ = AtRecord::parse(&line);
        if let Err(e) = Message::parse(&line) {
            prop_assert!(e.offset <= line.len());
        }
    }

    #[test]
    fn near_miss_lines_never_panic(
        cmd in prop_oneof![Just("IAMAT"), Just("WHATSAT"), Just("AT"), Just("HERD-HELLO"), Just("HERD-SYNCED"),
            Just("HERD-ROOT"), Just("HERD-FP"), Just("HERD-IDS"), Just("HERD-WANT"), Just("HERD-IBF")],
        fields in proptest::collection::vec("[-+0-9.eEinfNa]{0,30}", 0..20),
    ) {
        let line = format!("{cmd} {}", fields.join(" "));
        let _ = Message::parse(line.as_bytes());
        let _ = PeerMessage::parse(line.as_bytes());
    }

    #[test]
    fn record_order_is_total_and_consistent(a in record(), b in record(), c in record()) {
        prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
        prop_assert_eq!(a.cmp(&b).is_eq(), a == b);
        if a <= b && b <= c {
            prop_assert!(a <= c);
        }
        // The protocol's keys decide first.
        let key = |r: &AtRecord<'_>| (r.time.value(), r.server.to_vec(), r.diff);
        if key(&a) != key(&b) {
            prop_assert_eq!(a.cmp(&b), key(&a).cmp(&key(&b)));
        }
    }

    #[test]
    fn time_diff_matches_decimal_arithmetic(nanos in any::<i128>()) {
        let text = TimeDiff::from_nanos(nanos).to_string();
        // Re-derive the value from the text with string arithmetic only.
        let (sign, rest) = text.split_at(1);
        let (secs, frac) = rest.split_once('.').unwrap();
        prop_assert_eq!(frac.len(), 9);
        prop_assert!(sign == "+" || sign == "-");
        prop_assert_eq!(sign == "-", nanos < 0);
        let digits = format!("{secs}{frac}").trim_start_matches('0').to_string();
        let expect = nanos.unsigned_abs().to_string();
        prop_assert_eq!(if digits.is_empty() { "0".to_string() } else { digits }, expect);
    }
}
