//! Places API (New): `POST …/v1/places:searchNearby`, mapped into the Nearby Search shape.

use serde_json::{json, Map, Value};

use super::{send_json, Answer};
use crate::node::Lookup;

const DEFAULT_URL: &str = "https://places.googleapis.com/v1/places:searchNearby";

/// The fields asked for: exactly what the mapping below reads (the API bills by field).
pub(crate) const FIELD_MASK: &str = "places.id,places.displayName,places.location,\
places.shortFormattedAddress,places.formattedAddress,places.types,places.rating,places.userRatingCount,\
places.businessStatus,places.currentOpeningHours,places.regularOpeningHours,places.priceLevel,places.plusCode";

pub(crate) struct Google {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Google {
    pub(crate) fn new(http: reqwest::Client, url: Option<String>, key: String) -> Self {
        Google {
            http,
            url: url.unwrap_or_else(|| DEFAULT_URL.to_owned()),
            key,
        }
    }

    pub(crate) async fn search(&self, q: &Lookup) -> Answer {
        if q.bound == 0 {
            return Answer::new(json!({ "html_attributions": [], "results": [], "status": "OK" }));
        }
        // Written by hand so the radius goes out as whole metres, as the cache key has it.
        let body = format!(
            "{{\"locationRestriction\":{{\"circle\":{{\"center\":{{\"latitude\":{},\"longitude\":{}}},\"radius\":{}}}}},\"maxResultCount\":{}}}",
            q.latitude(),
            q.longitude(),
            super::whole_metres(q),
            q.bound
        );
        let request = self
            .http
            .post(&self.url)
            .header("X-Goog-Api-Key", &self.key)
            .header("X-Goog-FieldMask", FIELD_MASK)
            .header("Content-Type", "application/json")
            .body(body);
        let (status, value) = match send_json(request).await {
            Ok(got) => got,
            Err(failed) => return failed,
        };
        if let Some(err) = value.get("error") {
            return map_error(err, status.as_u16());
        }
        if !status.is_success() {
            return Answer::error(
                "UNKNOWN_ERROR",
                format!("Places answered HTTP {}", status.as_u16()),
            );
        }
        let places = value
            .get("places")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let results = places
            .iter()
            .take(usize::from(q.bound))
            .map(map_place)
            .collect();
        Answer::ok(results, Vec::new())
    }
}

/// `{"error": {"code", "message", "status"}}` → the legacy status names.
fn map_error(err: &Value, http: u16) -> Answer {
    let rpc = err.get("status").and_then(Value::as_str).unwrap_or("");
    let status = match rpc {
        "PERMISSION_DENIED" | "UNAUTHENTICATED" => "REQUEST_DENIED",
        "RESOURCE_EXHAUSTED" => "OVER_QUERY_LIMIT",
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => "INVALID_REQUEST",
        _ => match http {
            401 | 403 => "REQUEST_DENIED",
            429 => "OVER_QUERY_LIMIT",
            400 => "INVALID_REQUEST",
            _ => "UNKNOWN_ERROR",
        },
    };
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("Places answered HTTP {http} {rpc}"));
    Answer::error(status, message)
}

fn price_level(p: &str) -> Option<u64> {
    Some(match p {
        "PRICE_LEVEL_FREE" => 0,
        "PRICE_LEVEL_INEXPENSIVE" => 1,
        "PRICE_LEVEL_MODERATE" => 2,
        "PRICE_LEVEL_EXPENSIVE" => 3,
        "PRICE_LEVEL_VERY_EXPENSIVE" => 4,
        _ => return None,
    })
}

/// One New-API place as a legacy Nearby Search result.
fn map_place(p: &Value) -> Value {
    let mut r = Map::new();
    let s = |v: &Value, k: &str| v.get(k).cloned();
    if let Some(loc) = p.get("location") {
        r.insert(
            "geometry".into(),
            json!({ "location": { "lat": loc.get("latitude"), "lng": loc.get("longitude") } }),
        );
    }
    if let Some(name) = p.pointer("/displayName/text") {
        r.insert("name".into(), name.clone());
    }
    if let Some(open) = p
        .pointer("/currentOpeningHours/openNow")
        .or_else(|| p.pointer("/regularOpeningHours/openNow"))
    {
        r.insert("opening_hours".into(), json!({ "open_now": open }));
    }
    if let Some(id) = s(p, "id") {
        r.insert("place_id".into(), id);
    }
    if let Some(pc) = p.get("plusCode") {
        let mut m = Map::new();
        if let Some(c) = pc.get("compoundCode") {
            m.insert("compound_code".into(), c.clone());
        }
        if let Some(g) = pc.get("globalCode") {
            m.insert("global_code".into(), g.clone());
        }
        r.insert("plus_code".into(), Value::Object(m));
    }
    if let Some(level) = p
        .get("priceLevel")
        .and_then(Value::as_str)
        .and_then(price_level)
    {
        r.insert("price_level".into(), json!(level));
    }
    if let Some(v) = s(p, "rating") {
        r.insert("rating".into(), v);
    }
    if let Some(v) = s(p, "businessStatus") {
        r.insert("business_status".into(), v);
    }
    if let Some(v) = s(p, "types") {
        r.insert("types".into(), v);
    }
    if let Some(v) = s(p, "userRatingCount") {
        r.insert("user_ratings_total".into(), v);
    }
    if let Some(v) = s(p, "shortFormattedAddress").or_else(|| s(p, "formattedAddress")) {
        r.insert("vicinity".into(), v);
    }
    Value::Object(r)
}
