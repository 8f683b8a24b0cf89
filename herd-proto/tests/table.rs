//! Every example and rule of PROTOCOL.md §1–4, valid and invalid, as a table.

use herd_proto::{AtRecord, ErrorKind, Message, PeerMessage, Radius, Timestamp};

/// `valid!(line)`: parses, and re-encodes to the same fields. `invalid!(line, Kind)`: fails with `Kind`.
macro_rules! valid {
    ($($line:expr),+ $(,)?) => {$(
        let line: &[u8] = $line;
        let m = Message::parse(line).unwrap_or_else(|e| panic!("{:?} should be valid: {e}", String::from_utf8_lossy(line)));
        assert_eq!(Message::parse(&m.to_bytes()), Ok(m.clone()), "round trip of {:?}", m);
    )+};
}

macro_rules! invalid {
    ($($line:expr => $kind:ident),+ $(,)?) => {$(
        let line: &[u8] = $line;
        match Message::parse(line) {
            Err(e) => assert_eq!(e.kind, ErrorKind::$kind, "{:?}: {e}", String::from_utf8_lossy(line)),
            Ok(m) => panic!("{:?} should be invalid, parsed as {m:?}", String::from_utf8_lossy(line)),
        }
    )+};
}

#[test]
fn protocol_examples() {
    valid!(
        b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450",
        b"WHATSAT kiwi.cs.ucla.edu 10 5",
    );
    let rec = b"AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1479413884.392014450";
    let r = AtRecord::parse(rec).unwrap();
    assert_eq!(r.to_bytes(), rec);
    assert_eq!(&*r.server, b"Alford");
    assert_eq!(r.diff.as_nanos(), 263_873_386);
}

#[test]
fn white_space_separators() {
    valid!(
        b"IAMAT\tkiwi\t+34-118\t1",
        b"IAMAT\x0ckiwi\x0b+34-118\r1",
        b"   IAMAT   kiwi  +34-118 1   ",
        b"\t\x0bWHATSAT kiwi 10 5\r",
        b"IAMAT kiwi +34-118 1\r\n",
    );
    let Message::IAmAt(m) = Message::parse(b"\x0b IAMAT \x0c kiwi\t\t+34-118  1 \r").unwrap()
    else {
        panic!()
    };
    assert_eq!(&*m.client, b"kiwi");
    assert_eq!(m.location.as_str(), "+34-118");
    assert_eq!(m.time.as_str(), "1");
}

#[test]
fn client_ids_are_bytes() {
    valid!(
        b"IAMAT \xff\xfe\x80 +34-118 1",
        "IAMAT 🦀kiwi🥝 +34-118 1".as_bytes(),
        b"WHATSAT \xc3\x28 10 5",
        b"IAMAT a\x00b +34-118 1",
    );
    let Message::IAmAt(m) = Message::parse(b"IAMAT \xff\xfe +34-118 1").unwrap() else {
        panic!()
    };
    assert_eq!(&*m.client, b"\xff\xfe");
}

#[test]
fn locations() {
    valid!(
        b"IAMAT c +34-118 1",
        b"IAMAT c -90+180 1",
        b"IAMAT c +90.0-180.0 1",
        b"IAMAT c +90.000000-180.000000000000 1",
        b"IAMAT c +0-0 1",
        b"IAMAT c -0.0+0.0 1",
        b"IAMAT c +0090.0+00180 1",
        b"IAMAT c +89.999999999999999999-179.99999999999999999999 1",
    );
    invalid!(
        b"IAMAT c +90.000001+0 1" => LatitudeRange,
        b"IAMAT c +91.0+0.0 1" => LatitudeRange,
        b"IAMAT c -90.1+0 1" => LatitudeRange,
        b"IAMAT c +0+180.0000001 1" => LongitudeRange,
        b"IAMAT c +0-181 1" => LongitudeRange,
        b"IAMAT c +99999999999999999999999+0 1" => LatitudeRange,
        b"IAMAT c 34.06-118.44 1" => Location,
        b"IAMAT c +34.06 1" => Location,
        b"IAMAT c ++34-118 1" => Location,
        b"IAMAT c +34.-118 1" => Location,
        b"IAMAT c +NaN+0 1" => Location,
        b"IAMAT c +inf+0 1" => Location,
        b"IAMAT c +1e3+0 1" => Location,
        b"IAMAT c +.5+0 1" => Location,
        b"IAMAT c +5.+0 1" => Location,
        b"IAMAT c +34-118+1 1" => Location,
        b"IAMAT c +34,5-118 1" => Location,
        b"IAMAT c +34-118. 1" => Location,
        b"IAMAT c + 34-118 1" => ExtraField,
    );
}

#[test]
fn degrees_are_derived_from_the_text() {
    let Message::IAmAt(m) = Message::parse(b"IAMAT c +34.068930-118.445127 1").unwrap() else {
        panic!()
    };
    assert_eq!(m.location.latitude(), 34.06893);
    assert_eq!(m.location.longitude(), -118.445127);
    assert_eq!(m.location.latitude_str(), "+34.068930");
    assert_eq!(m.location.longitude_str(), "-118.445127");
}

#[test]
fn times() {
    valid!(
        b"IAMAT c +0+0 0",
        b"IAMAT c +0+0 1479413884",
        b"IAMAT c +0+0 1479413884.3920144",
        b"IAMAT c +0+0 1479413884.392014450",
        b"IAMAT c +0+0 18446744073709551615.999999999",
        b"IAMAT c +0+0 000000000000000000000000001.5",
    );
    invalid!(
        b"IAMAT c +0+0 1479413884.3920144501" => TimePrecision,
        b"IAMAT c +0+0 -1" => Time,
        b"IAMAT c +0+0 +1" => Time,
        b"IAMAT c +0+0 1e9" => Time,
        b"IAMAT c +0+0 NOW" => Time,
        b"IAMAT c +0+0 1." => Time,
        b"IAMAT c +0+0 .5" => Time,
        b"IAMAT c +0+0 18446744073709551616" => TimeRange,
    );
    let Message::IAmAt(m) = Message::parse(b"IAMAT c +0+0 12.3").unwrap() else {
        panic!()
    };
    assert_eq!(m.time.value(), Timestamp::new(12, 300_000_000).unwrap());
    assert_eq!(m.time.as_str(), "12.3");
}

#[test]
fn radius_and_bound() {
    valid!(
        b"WHATSAT c 50 0",
        b"WHATSAT c 10.5871263 20",
        b"WHATSAT c 0.0001 5",
        b"WHATSAT c 50.000 5",
        b"WHATSAT c 050 020",
    );
    invalid!(
        b"WHATSAT c 0 5" => RadiusRange,
        b"WHATSAT c 0.000 5" => RadiusRange,
        b"WHATSAT c 50.0001 5" => RadiusRange,
        b"WHATSAT c 51 5" => RadiusRange,
        b"WHATSAT c -1 5" => Radius,
        b"WHATSAT c 1e1 5" => Radius,
        b"WHATSAT c 10. 5" => Radius,
        b"WHATSAT c .5 5" => Radius,
        b"WHATSAT c 10 21" => BoundRange,
        b"WHATSAT c 10 99999999999999999999999" => BoundRange,
        b"WHATSAT c 10 -1" => Bound,
        b"WHATSAT c 10 2.5" => Bound,
        b"WHATSAT c 10 +5" => Bound,
    );
}

#[test]
fn metres_are_exact_plain_decimals() {
    for (km, m) in [
        ("10", "10000"),
        ("10.5", "10500"),
        ("10.5871263", "10587.1263"),
        ("0.0001", "0.1"),
        ("50", "50000"),
        ("050.000", "50000"),
        ("0.001", "1"),
        ("1.23456789", "1234.56789"),
    ] {
        assert_eq!(Radius::parse(km.as_bytes()).unwrap().metres(), m, "{km} km");
    }
}

#[test]
fn commands_and_field_counts() {
    invalid!(
        b"" => Empty,
        b" \t\r" => Empty,
        b"HELLO" => UnknownCommand,
        b"iamat c +0+0 1" => UnknownCommand,
        b"IAMTA c +0+0 1" => UnknownCommand,
        b"Whatsat c 10 5" => UnknownCommand,
        b"AT Alford +0.263873386 kiwi +34-118 1" => UnknownCommand,
        b"IAMAT" => MissingField,
        b"IAMAT c +0+0" => MissingField,
        b"IAMAT c +0+0 1 extra" => ExtraField,
        b"WHATSAT c 10" => MissingField,
        b"WHATSAT c 10 5 5" => ExtraField,
        b"HERD-HELLO 3 Alford Hamilton abc" => UnknownCommand,
    );
}

#[test]
fn errors_say_where() {
    let e = Message::parse(b"IAMAT kiwi +34-118 1e9").unwrap_err();
    assert_eq!((e.kind, e.offset), (ErrorKind::Time, 20));
    assert_eq!(e.to_string(), "time is not D+(.D{1,9})? at byte 20");
    let e = Message::parse(b"IAMAT kiwi +34-181 1").unwrap_err();
    assert_eq!((e.kind, e.offset), (ErrorKind::LongitudeRange, 14));
    let e = Message::parse(b"IAMAT kiwi +34-118 1 x").unwrap_err();
    assert_eq!((e.kind, e.offset), (ErrorKind::ExtraField, 21));
    let e = Message::parse(b"  FOO").unwrap_err();
    assert_eq!((e.kind, e.offset), (ErrorKind::UnknownCommand, 2));
}

#[test]
fn at_records() {
    for line in [
        &b"AT Alford +0.263873386 kiwi +34.068930-118.445127 1479413884.392014450"[..],
        b"AT Ball -0.500000000 \xff\xfe -90+180 0",
        b"AT Welsh +1234567.000000001 c +0+0 1.5",
        b"AT Welsh -170141183460469231731687303715.884105728 c +0+0 1.5",
        b"AT Welsh +170141183460469231731687303715.884105727 c +0+0 1.5",
    ] {
        let r = AtRecord::parse(line).unwrap();
        assert_eq!(r.to_bytes(), line);
    }
    for line in [
        &b"AT Alford +0.26387338 kiwi +34-118 1"[..],
        b"AT Alford 0.263873386 kiwi +34-118 1",
        b"AT Alford +0.2638733860 kiwi +34-118 1",
        b"AT Alford +0.263873386 kiwi 34-118 1",
        b"AT Alford +0.263873386 kiwi +34-118",
        b"AT Welsh +170141183460469231731687303715.884105728 c +0+0 1.5",
        b"IAMAT kiwi +34-118 1",
    ] {
        assert!(
            AtRecord::parse(line).is_err(),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn convergence_order() {
    let r = |s: &'static [u8]| AtRecord::parse(s).unwrap();
    // Client time first, exactly: 1.5 < 1.500000001 however the servers compare.
    assert!(r(b"AT Zed +9.000000000 c +0+0 1.5") < r(b"AT Able +0.000000000 c +0+0 1.500000001"));
    // Then the server name, bytewise.
    assert!(r(b"AT Alford +9.000000000 c +0+0 1.5") < r(b"AT Ball +0.000000000 c +0+0 1.5"));
    // Then the time difference, numerically.
    assert!(r(b"AT Ball -2.000000000 c +0+0 1.5") < r(b"AT Ball -1.000000000 c +0+0 1.5"));
    assert!(r(b"AT Ball +2.000000000 c +0+0 1.5") < r(b"AT Ball +10.000000000 c +0+0 1.5"));
}

#[test]
fn too_many_hashes_and_key_ranges() {
    let ids = |n: usize| PeerMessage::Ids {
        range: herd_proto::KeyRange::new(2, 0xab00_0000_0000_0000).unwrap(),
        hashes: (0..n as u32).collect(),
    };
    let line = ids(herd_proto::MAX_IDS).to_bytes();
    assert_eq!(PeerMessage::parse(&line), Ok(ids(herd_proto::MAX_IDS)));
    assert!(
        line.len() <= 64 * 2 + 256,
        "fits the smallest peer line limit"
    );
    assert_eq!(
        PeerMessage::parse(&ids(herd_proto::MAX_IDS + 1).to_bytes())
            .unwrap_err()
            .kind,
        ErrorKind::Base64
    );
    let r = herd_proto::KeyRange::new(2, 0xa3ff_0000_0000_0000).unwrap();
    assert_eq!(r.prefix(), 0xa300_0000_0000_0000);
    assert_eq!(r.last(), 0xa3ff_ffff_ffff_ffff);
    assert!(r.contains(0xa312_3456_789a_bcde) && !r.contains(0xa400_0000_0000_0000));
    assert_eq!(r.child(15).unwrap().prefix(), 0xa3f0_0000_0000_0000);
    assert_eq!(herd_proto::KeyRange::new(16, 7).unwrap().child(0), None);
    assert_eq!(herd_proto::KeyRange::new(17, 7), None);
    assert_eq!(herd_proto::KeyRange::ALL.last(), u64::MAX);
}

#[test]
fn peer_lines() {
    for line in [
        &b"HERD-HELLO 4 Alford Hamilton 0123abcd"[..],
        b"HERD-HELLO 4 Alford Hamilton -",
        b"HERD-ROOT 1000000 9f3a00c2e1d4b7f0 5eed",
        b"HERD-ROOT 0 0 1",
        b"HERD-FP - AAAAAAAAAAEAAAACAAAAAwAAAAQAAAAFAAAABgAAAAcAAAAIAAAACQAAAAoAAAALAAAADAAAAA0AAAAO_____w",
        b"HERD-FP a3f AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        b"HERD-IDS 0123456789abcdef AAAAAQAAAAI",
        b"HERD-IDS -",
        b"HERD-WANT 7 3q2-7w",
        b"HERD-IBF a3 3 0 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIj",
        b"HERD-IBF - 65535 65534 AAAAAAAAAAAAAAAA",
        b"HERD-OVER",
        b"HERD-WELCOME Hamilton 9a8b",
        b"HERD-REFUSED unknown-peer",
        b"HERD-SYNCED 1000000",
        b"HERD-PING",
        b"HERD-PONG",
        b"AT Alford +0.263873386 kiwi +34-118 1",
    ] {
        let m = PeerMessage::parse(line).unwrap();
        assert_eq!(m.to_bytes(), line);
    }
    for (line, kind) in [
        (&b"HERD-HELLO 1 Alford n"[..], ErrorKind::Version),
        (b"HERD-HELLO 2 Alford Hamilton -", ErrorKind::Version),
        (b"HERD-HELLO 3 Alford Hamilton -", ErrorKind::Version),
        (b"HERD-HELLO 5 Alford Hamilton - extra", ErrorKind::Version),
        (b"HERD-ROOT 1 ab", ErrorKind::MissingField),
        (b"HERD-ROOT 1 xyz 1", ErrorKind::Hex),
        (b"HERD-ROOT 1 1 ABC", ErrorKind::Hex),
        (b"HERD-ROOT 1 10000000000000000 1", ErrorKind::Hex),
        (b"HERD-FP -", ErrorKind::MissingField),
        (b"HERD-FP - AAAA", ErrorKind::Base64),
        (b"HERD-FP - AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA*", ErrorKind::Base64),
        (b"HERD-FP - AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB", ErrorKind::Base64),
        (b"HERD-FP - AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA 0", ErrorKind::ExtraField),
        (b"HERD-FP 0123456789abcdef AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ErrorKind::Hex),
        (b"HERD-FP 0123456789abcdef0 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ErrorKind::Hex),
        (b"HERD-IDS", ErrorKind::MissingField),
        (b"HERD-IDS -- AAAAAQ", ErrorKind::Hex),
        (b"HERD-IDS 1 AAAAAQ AAAAAQ", ErrorKind::ExtraField),
        (b"HERD-IDS 1 AAA", ErrorKind::Base64),
        (b"HERD-IDS 1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ErrorKind::Base64),
        (b"HERD-WANT 7", ErrorKind::MissingField),
        (b"HERD-IBF a 3 0", ErrorKind::MissingField),
        (b"HERD-IBF a 4 0 AAAAAAAAAAAAAAAA", ErrorKind::Count),
        (b"HERD-IBF a 0 0 AAAAAAAAAAAAAAAA", ErrorKind::Count),
        (b"HERD-IBF a 65538 0 AAAAAAAAAAAAAAAA", ErrorKind::Count),
        (b"HERD-IBF a 3 3 AAAAAAAAAAAAAAAA", ErrorKind::Count),
        (b"HERD-IBF a 3 0 AAAA", ErrorKind::Base64),
        (b"HERD-IBF a 66 0 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ErrorKind::Base64),
        (b"HERD-IBF x 3 0 AAAAAAAAAAAAAAAA", ErrorKind::Hex),
        (b"HERD-OVER now", ErrorKind::ExtraField),
        (b"HERD-HELLO x", ErrorKind::Version),
        (b"HERD-HELLO", ErrorKind::MissingField),
        (b"HERD-HELLO 4 Alford Hamilton", ErrorKind::MissingField),
        (b"HERD-HELLO 4 Alford Hamilton - x", ErrorKind::ExtraField),
        (b"HERD-WELCOME Hamilton", ErrorKind::MissingField),
        (b"HERD-PROOF -", ErrorKind::UnknownCommand),
        (b"HERD-PING now", ErrorKind::ExtraField),
        (b"HERD-SYNCED -1", ErrorKind::Count),
        (b"HERD-SYNCED 18446744073709551616", ErrorKind::Count),
        (b"IAMAT kiwi +34-118 1", ErrorKind::UnknownCommand),
        (b"herd-ping", ErrorKind::UnknownCommand),
    ] {
        assert_eq!(
            PeerMessage::parse(line).unwrap_err().kind,
            kind,
            "{}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn replies() {
    let mut out = Vec::new();
    herd_proto::write_invalid(b"  IAMAT x\r", &mut out);
    assert_eq!(out, b"?   IAMAT x\r\n");

    let r = AtRecord::parse(b"AT A +0.000000000 c +0+0 1").unwrap();
    let mut out = Vec::new();
    herd_proto::write_whatsat(
        &r,
        b"{\n  \"results\": [],\n\n  \"status\": \"OK\"\n}\n\n\n",
        &mut out,
    );
    assert_eq!(
        out,
        b"AT A +0.000000000 c +0+0 1\n{\n  \"results\": [],\n  \"status\": \"OK\"\n}\n\n"
    );
}
