//! Output for people: coloured JSON and a readable list of places.

use std::fmt::Write as _;
use std::io::IsTerminal;

use herd_proto::AtRecord;
use serde_json::Value;

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour on a terminal, unless `NO_COLOR` is set or `TERM=dumb`.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// Whether stdout counts as a terminal (`HERD_PRETEND_TTY=1` says yes, for tests).
pub fn stdout_is_tty() -> bool {
    std::env::var_os("HERD_PRETEND_TTY").is_some_and(|v| v == "1")
        || std::io::stdout().is_terminal()
}

impl ColorChoice {
    /// Whether to colour stdout.
    pub fn enabled(self) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
                let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
                stdout_is_tty() && !no_color && !dumb
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Paint(bool);

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// JSON pretty-printed with two-space indents, coloured when `color`.
pub fn json(value: &Value, color: bool) -> String {
    let mut out = String::new();
    write_json(&mut out, value, 0, &Paint(color));
    out
}

fn write_json(out: &mut String, v: &Value, depth: usize, p: &Paint) {
    let pad = |d: usize| "  ".repeat(d);
    match v {
        Value::Null => out.push_str(&p.wrap("2", "null")),
        Value::Bool(b) => out.push_str(&p.wrap("33", &b.to_string())),
        Value::Number(n) => out.push_str(&p.wrap("36", &n.to_string())),
        Value::String(s) => out.push_str(&p.wrap("32", &Value::String(s.clone()).to_string())),
        Value::Array(a) if a.is_empty() => out.push_str("[]"),
        Value::Object(o) if o.is_empty() => out.push_str("{}"),
        Value::Array(a) => {
            out.push_str("[\n");
            for (i, item) in a.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                write_json(out, item, depth + 1, p);
                out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(depth));
            out.push(']');
        }
        Value::Object(o) => {
            out.push_str("{\n");
            for (i, (k, item)) in o.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                out.push_str(&p.wrap("1;34", &Value::String(k.clone()).to_string()));
                out.push_str(": ");
                write_json(out, item, depth + 1, p);
                out.push_str(if i + 1 < o.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(depth));
            out.push('}');
        }
    }
}

pub use herd_proto::km_between;

/// The places of a WHATSAT answer as a numbered list: name, distance from the client, rating, types,
/// vicinity. Failures show their status and message.
pub fn places(record: &AtRecord<'_>, answer: &Value, color: bool) -> String {
    let p = Paint(color);
    let mut out = String::new();
    let status = answer.get("status").and_then(Value::as_str).unwrap_or("?");
    let results = answer
        .get("results")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let (lat, lon) = (record.location.latitude(), record.location.longitude());
    if status != "OK" && status != "ZERO_RESULTS" {
        let msg = answer
            .get("error_message")
            .and_then(Value::as_str)
            .unwrap_or("");
        let _ = writeln!(out, "{} {msg}", p.wrap("1;31", status));
        return out;
    }
    if results.is_empty() {
        let _ = writeln!(out, "{}", p.wrap("2", "no places within the radius"));
    }
    for (i, r) in results.iter().enumerate() {
        place(&mut out, p, i + 1, r, (lat, lon));
    }
    if let Some(attr) = answer.get("html_attributions").and_then(Value::as_array) {
        for a in attr.iter().filter_map(Value::as_str) {
            let _ = writeln!(out, "{}", p.wrap("2", &html_to_text(a)));
        }
    }
    out
}

/// Place number `n` of an answer: its name, its distance from the client at `from` (latitude,
/// longitude), its rating, then a line of its vicinity and types.
fn place(out: &mut String, p: Paint, n: usize, r: &Value, from: (f64, f64)) {
    let name = r.get("name").and_then(Value::as_str).unwrap_or("(unnamed)");
    let loc = r.pointer("/geometry/location");
    let dist = match (
        loc.and_then(|l| l.get("lat")).and_then(Value::as_f64),
        loc.and_then(|l| l.get("lng")).and_then(Value::as_f64),
    ) {
        (Some(a), Some(b)) => format!("{:.2} km", km_between(from.0, from.1, a, b)),
        _ => "? km".into(),
    };
    let _ = write!(
        out,
        "{n:>2}. {}  {}",
        p.wrap("1", name),
        p.wrap("36", &dist)
    );
    if let Some(rating) = r.get("rating").and_then(Value::as_f64) {
        let total = r.get("user_ratings_total").and_then(Value::as_u64);
        let votes = total.map(|t| format!(" ({t})")).unwrap_or_default();
        let _ = write!(out, "  {}", p.wrap("33", &format!("★ {rating:.1}{votes}")));
    }
    out.push('\n');
    let types: Vec<&str> = r
        .get("types")
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let vicinity = r.get("vicinity").and_then(Value::as_str).unwrap_or("");
    let detail = [vicinity, &types.join(", ")]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" · ");
    if !detail.is_empty() {
        let _ = writeln!(out, "    {}", p.wrap("2", &detail));
    }
}

/// An HTML attribution as plain text for a terminal: `<a href="URL">TEXT</a>` becomes `TEXT (URL)`,
/// other tags are dropped and the common entities decoded.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    let mut href: Option<String> = None;
    while let Some(open) = rest.find('<') {
        out.push_str(&decode_entities(&rest[..open]));
        let Some(close) = rest[open..].find('>') else {
            out.push_str(&decode_entities(&rest[open..]));
            return out;
        };
        let tag = &rest[open + 1..open + close];
        let name = tag
            .split(|c: char| c.is_whitespace() || c == '/')
            .find(|s| !s.is_empty())
            .unwrap_or("");
        if name.eq_ignore_ascii_case("a") && !tag.starts_with('/') {
            href = attribute(tag, "href").map(|h| decode_entities(&h));
        } else if tag.starts_with('/') && name.eq_ignore_ascii_case("a") {
            if let Some(h) = href.take() {
                let _ = write!(out, " ({h})");
            }
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(&decode_entities(rest));
    out
}

/// The value of `name="…"` (or `'…'`) in a tag's text.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let at = lower.find(&format!("{name}="))? + name.len() + 1;
    let value = &tag[at..];
    let quote = value.chars().next().filter(|&c| c == '"' || c == '\'');
    Some(match quote {
        Some(q) => value[1..].split(q).next().unwrap_or("").to_owned(),
        None => value.split_whitespace().next().unwrap_or("").to_owned(),
    })
}

fn decode_entities(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribution_as_text() {
        assert_eq!(
            html_to_text(
                r#"Place data from <a href="https://www.geonames.org/">GeoNames</a> (cities1000), CC BY 4.0"#
            ),
            "Place data from GeoNames (https://www.geonames.org/) (cities1000), CC BY 4.0"
        );
        assert_eq!(html_to_text("<b>A &amp; B</b> &lt;x&gt;"), "A & B <x>");
        assert_eq!(html_to_text("plain"), "plain");
        assert_eq!(html_to_text("broken <a"), "broken <a");
    }

    #[test]
    fn json_without_color_is_plain_pretty_json() {
        let v: Value =
            serde_json::from_str(r#"{"a":[1,{"b":null}],"c":"x\"y","d":[],"e":true}"#).unwrap();
        let s = json(&v, false);
        assert_eq!(serde_json::from_str::<Value>(&s).unwrap(), v);
        assert!(s.contains("\n  \"a\": [\n    1,"));
        assert!(!s.contains('\x1b'));
        assert!(json(&v, true).contains("\x1b[32m\"x\\\"y\"\x1b[0m"));
    }

    #[test]
    fn distance() {
        let d = km_between(34.068930, -118.445127, 34.07362, -118.40036);
        assert!((d - 4.16).abs() < 0.05, "{d}");
    }
}
