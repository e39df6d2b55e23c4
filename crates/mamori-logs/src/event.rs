//! Building events: the fields every input sets, and small typed setters.

use serde_json::Value;

use crate::timestamp::Timestamp;
use crate::{Event, ParseContext};

/// Strips one trailing `\n` and/or `\r` (framers and followers may leave them).
pub(crate) fn trim_eol(mut line: &[u8]) -> &[u8] {
    if let [rest @ .., b'\n'] = line {
        line = rest;
    }
    if let [rest @ .., b'\r'] = line {
        line = rest;
    }
    line
}

/// A new event with `log.original`, `mamori.input` and the receiver context.
pub(crate) fn base(input: &'static str, original: &str, ctx: &ParseContext) -> Event {
    let mut ev = Event::new();
    ev.insert("log.original".into(), Value::String(original.to_owned()));
    ev.insert("mamori.input".into(), Value::String(input.into()));
    if let Some(host) = &ctx.receiving_host {
        ev.insert("mamori.receiver.host".into(), Value::String(host.clone()));
    }
    if let Some(ip) = &ctx.peer_ip {
        ev.insert("log.source.address".into(), Value::String(ip.clone()));
    }
    ev
}

pub(crate) fn set_input(ev: &mut Event, input: &'static str) {
    ev.insert("mamori.input".into(), Value::String(input.into()));
}

pub(crate) fn set_logsource(ev: &mut Event, product: &str, service: Option<&str>, category: Option<&str>) {
    ev.insert("mamori.logsource.product".into(), Value::String(product.into()));
    match service {
        Some(s) => ev.insert("mamori.logsource.service".into(), Value::String(s.into())),
        None => ev.remove("mamori.logsource.service"),
    };
    match category {
        Some(c) => ev.insert("mamori.logsource.category".into(), Value::String(c.into())),
        None => ev.remove("mamori.logsource.category"),
    };
}

pub(crate) fn set_str(ev: &mut Event, key: &str, value: &str) {
    ev.insert(key.to_owned(), Value::String(value.to_owned()));
}

/// Sets `key` unless `value` is empty or a vendor's "no value" placeholder.
pub(crate) fn set_nonempty(ev: &mut Event, key: &str, value: &str) {
    if !value.is_empty() && value != "-" {
        set_str(ev, key, value);
    }
}

pub(crate) fn set_int(ev: &mut Event, key: &str, value: i64) {
    ev.insert(key.to_owned(), Value::from(value));
}

/// Sets `key` to the integer in `value` when it is one; otherwise nothing.
pub(crate) fn set_int_str(ev: &mut Event, key: &str, value: &str) {
    if let Ok(n) = value.trim().parse::<i64>() {
        set_int(ev, key, n);
    }
}

/// Copies a string field that is already in the event to another key (ECS mapping of originals).
pub(crate) fn copy_str(ev: &mut Event, from: &str, to: &str) {
    if let Some(Value::String(s)) = ev.get(from) {
        if !s.is_empty() && s != "-" {
            let s = s.clone();
            ev.insert(to.to_owned(), Value::String(s));
        }
    }
}

/// Copies a field holding an integer (or a string of one) to `to` as an integer.
pub(crate) fn copy_int(ev: &mut Event, from: &str, to: &str) {
    let n = match ev.get(from) {
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(Value::Number(n)) => n.as_i64(),
        _ => None,
    };
    if let Some(n) = n {
        set_int(ev, to, n);
    }
}

pub(crate) fn set_timestamp(ev: &mut Event, t: Timestamp) {
    ev.insert("@timestamp".into(), Value::String(t.to_rfc3339()));
}

/// `@timestamp` from the receive time when the record carried none (or one that did not parse).
pub(crate) fn ensure_timestamp(ev: &mut Event, ctx: &ParseContext) {
    if !ev.contains_key("@timestamp") {
        set_timestamp(ev, ctx.now_timestamp());
    }
}

/// Marks an event malformed. Fields parsed so far stay; `log.original` is always there.
pub(crate) fn mark_malformed(ev: &mut Event, error: impl Into<String>) {
    ev.insert("mamori.malformed".into(), Value::Bool(true));
    ev.insert("mamori.error".into(), Value::String(error.into()));
}

/// A value that is an integer when the text is one (sizes, ports, counts), else a string.
pub(crate) fn int_or_string(value: &str) -> Value {
    let b = value.as_bytes();
    let plain_integer =
        !b.is_empty() && b.len() <= 19 && (b[0] != b'0' || b.len() == 1) && b.iter().all(u8::is_ascii_digit);
    if plain_integer {
        if let Ok(n) = value.parse::<i64>() {
            return Value::from(n);
        }
    }
    Value::String(value.to_owned())
}
