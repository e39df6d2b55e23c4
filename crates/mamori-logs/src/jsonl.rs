//! Generic JSON lines: one object per line, nested objects flattened to dotted keys.
//!
//! `{"a":{"b":1},"c":[1,2],"d":[{"e":true}]}` becomes `a.b = 1`, `c = [1, 2]`, `d.0.e = true`
//! (arrays of scalars stay arrays; arrays holding objects or arrays are flattened with their
//! index). `null` values are left out. `@timestamp` is taken from the first of `@timestamp`,
//! `timestamp`, `time`, `ts` that is an RFC 3339 string or a Unix time number (seconds, or
//! milliseconds when above 10¹¹); otherwise the receive time. The line's own keys win, except
//! `log.original`, `mamori.*` and `@timestamp`, which this crate sets. Logsource: product `json`.

use serde_json::Value;

use crate::event::{self};
use crate::timestamp::{parse_iso8601, Timestamp};
use crate::{Event, ParseContext};

const MAX_DEPTH: usize = 32;

fn flatten_into(ev: &mut Event, prefix: &str, value: Value, depth: usize) {
    match value {
        Value::Null => {}
        Value::Object(map) if depth < MAX_DEPTH => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
                flatten_into(ev, &key, v, depth + 1);
            }
        }
        Value::Array(items) if depth < MAX_DEPTH && items.iter().any(|x| x.is_object() || x.is_array()) => {
            for (i, v) in items.into_iter().enumerate() {
                flatten_into(ev, &format!("{prefix}.{i}"), v, depth + 1);
            }
        }
        Value::Array(items) => {
            let items = items.into_iter().filter(|x| !x.is_null()).collect();
            insert_field(ev, prefix, Value::Array(items));
        }
        Value::Object(_) => insert_field(ev, prefix, Value::String(value.to_string())),
        scalar => insert_field(ev, prefix, scalar),
    }
}

fn insert_field(ev: &mut Event, key: &str, value: Value) {
    let reserved = key == "log.original" || key.starts_with("mamori.");
    let key = if key.is_empty() { "value" } else { key };
    if reserved {
        ev.insert(format!("json.{key}"), value);
    } else {
        ev.insert(key.to_owned(), value);
    }
}

fn time_of(v: &Value) -> Option<Timestamp> {
    match v {
        Value::String(s) => parse_iso8601(s.as_bytes(), 0).map(|(t, _)| t),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(if i > 100_000_000_000 {
                    Timestamp::from_ticks(i, 1000)
                } else {
                    Timestamp { secs: i, nanos: 0 }
                })
            } else {
                let f = n.as_f64()?;
                if !f.is_finite() || f.abs() > 1e15 {
                    return None;
                }
                Some(Timestamp::from_ticks((f * 1e6) as i64, 1_000_000))
            }
        }
        _ => None,
    }
}

/// Parses one JSON line.
pub fn parse(text: &str, ctx: &ParseContext) -> Event {
    let mut ev = event::base("json", text, ctx);
    event::set_logsource(&mut ev, "json", None, None);
    let value: Value = match serde_json::from_str(text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            event::ensure_timestamp(&mut ev, ctx);
            event::mark_malformed(&mut ev, "json: not a JSON object");
            return ev;
        }
        Err(e) => {
            event::ensure_timestamp(&mut ev, ctx);
            event::mark_malformed(&mut ev, format!("json: {e}"));
            return ev;
        }
    };
    flatten_into(&mut ev, "", value, 0);
    let found = ["@timestamp", "timestamp", "time", "ts"].iter().find_map(|k| ev.get(*k).and_then(time_of));
    match found {
        Some(t) => event::set_timestamp(&mut ev, t),
        None => {
            // Keep a source @timestamp we could not read, under another name.
            if let Some(orig) = ev.remove("@timestamp") {
                ev.insert("json.@timestamp".into(), orig);
            }
            event::set_timestamp(&mut ev, ctx.now_timestamp());
        }
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flattens_nested_objects() {
        let ev = parse(
            r#"{"@timestamp":"2024-01-02T03:04:05+09:00","user":{"name":"alice","id":7},"tags":["a","b"],"d":[{"e":true}],"n":null,"mamori.input":"spoofed","log.original":"x"}"#,
            &ParseContext::default(),
        );
        assert!(!ev.contains_key("mamori.malformed"), "{ev:?}");
        assert_eq!(ev["@timestamp"], "2024-01-01T18:04:05Z");
        assert_eq!(ev["user.name"], "alice");
        assert_eq!(ev["user.id"], 7);
        assert_eq!(ev["tags"], json!(["a", "b"]));
        assert_eq!(ev["d.0.e"], true);
        assert!(!ev.contains_key("n"));
        assert_eq!(ev["mamori.input"], "json");
        assert_eq!(ev["json.mamori.input"], "spoofed");
        assert!(ev["log.original"].as_str().unwrap().starts_with("{\"@timestamp\""));
        assert!(ev.values().all(|v| !v.is_object()));
    }

    #[test]
    fn epoch_times_and_garbage() {
        let ev = parse(r#"{"ts":1700000000123}"#, &ParseContext::default());
        assert_eq!(ev["@timestamp"], "2023-11-14T22:13:20.123Z");
        let ev = parse(r#"{"@timestamp":"yesterday"}"#, &ParseContext::default());
        assert_eq!(ev["json.@timestamp"], "yesterday");
        for bad in ["[1]", "{", "nope", "\"s\""] {
            assert_eq!(parse(bad, &ParseContext::default())["mamori.malformed"], true, "{bad}");
        }
        // Deep nesting does not overflow the stack.
        let deep = format!("{}1{}", "{\"a\":".repeat(100), "}".repeat(100));
        let ev = parse(&deep, &ParseContext::default());
        assert!(!ev.contains_key("mamori.malformed"));
    }
}
