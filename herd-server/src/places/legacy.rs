//! Places Nearby Search (legacy web service): `GET …/nearbysearch/json`, passed through.

use serde_json::Value;

use super::{send_json, Answer};
use crate::node::Lookup;

const DEFAULT_URL: &str = "https://maps.googleapis.com/maps/api/place/nearbysearch/json";

pub(crate) struct Legacy {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Legacy {
    pub(crate) fn new(http: reqwest::Client, url: Option<String>, key: String) -> Self {
        Legacy {
            http,
            url: url.unwrap_or_else(|| DEFAULT_URL.to_owned()),
            key,
        }
    }

    pub(crate) async fn search(&self, q: &Lookup) -> Answer {
        let location = format!("{},{}", q.latitude(), q.longitude());
        let radius = super::whole_metres(q).to_string();
        let request = self.http.get(&self.url).query(&[
            ("location", location.as_str()),
            ("radius", radius.as_str()),
            ("key", self.key.as_str()),
        ]);
        let (status, mut value) = match send_json(request).await {
            Ok(got) => got,
            Err(failed) => return failed,
        };
        let Some(obj) = value.as_object_mut() else {
            return Answer::error(
                "UNKNOWN_ERROR",
                "Places answered JSON that is not an object",
            );
        };
        if !status.is_success() {
            let message = obj
                .get("error_message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("Places answered HTTP {}", status.as_u16()));
            return Answer::error("UNKNOWN_ERROR", message);
        }
        if !obj.get("status").is_some_and(Value::is_string) {
            obj.insert("status".into(), Value::from("UNKNOWN_ERROR"));
            obj.entry("error_message")
                .or_insert_with(|| Value::from("Places answer has no status"));
        }
        obj.entry("html_attributions")
            .or_insert_with(|| Value::Array(Vec::new()));
        match obj.get_mut("results") {
            Some(Value::Array(results)) => results.truncate(usize::from(q.bound)),
            _ => {
                obj.insert("results".into(), Value::Array(Vec::new()));
            }
        }
        Answer::new(value)
    }
}
