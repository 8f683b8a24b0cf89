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
