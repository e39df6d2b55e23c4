//! `journalctl -o json` records (one JSON object per line).
//!
//! Journal fields keep their names (`MESSAGE`, `_PID`, `_COMM`, `SYSLOG_IDENTIFIER`,
//! `_SYSTEMD_UNIT`, `PRIORITY`, ...). A field the journal exports as an array of bytes (binary or
//! non-UTF-8 data, e.g. `MESSAGE`) is decoded to text (invalid UTF-8 replaced); a field that
//! occurs several times (an array of values) is kept as an array of strings. `@timestamp` comes
//! from `__REALTIME_TIMESTAMP` (µs since the epoch). ECS: `message`, `host.name`,
//! `process.pid`, `process.name`, `process.executable`, `process.command_line`, `user.id`,
//! `log.syslog.priority`/`.severity.code`/`.facility.code`. sshd/sudo messages get the same
//! analysis as in auth.log (see [`crate::authlog`]); the input stays `journald`. Logsource:
//! `linux` / `syslog` (or the authlog service).

use serde_json::Value;

use crate::event::{self, set_str};
use crate::timestamp::Timestamp;
use crate::{Event, ParseContext};

/// Decodes a journal export value: a string, a byte array, or (for repeated fields) an array.
fn journal_value(v: Value) -> Value {
    match v {
        Value::Array(items)
            if items.iter().all(|x| x.as_u64().is_some_and(|n| n <= 255)) && !items.is_empty() =>
        {
            let bytes: Vec<u8> = items.iter().filter_map(Value::as_u64).map(|n| n as u8).collect();
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        }
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|x| match journal_value(x) {
                    Value::String(s) => Value::String(s),
                    other => Value::String(other.to_string()),
                })
                .collect(),
        ),
        Value::Object(_) => Value::String(v.to_string()),
        other => other,
    }
}

/// Parses one journal JSON record.
pub fn parse(text: &str, ctx: &ParseContext) -> Event {
    let mut ev = event::base("journald", text, ctx);
    event::set_logsource(&mut ev, "linux", Some("syslog"), None);
    let parsed: Result<serde_json::Map<String, Value>, _> = serde_json::from_str(text);
    let object = match parsed {
        Ok(o) => o,
        Err(e) => {
            event::ensure_timestamp(&mut ev, ctx);
            event::mark_malformed(&mut ev, format!("journald: not a JSON object: {e}"));
            return ev;
        }
    };
    for (key, value) in object {
        ev.insert(key, journal_value(value));
    }
    if let Some(us) = ev
        .get("__REALTIME_TIMESTAMP")
        .and_then(|v| v.as_str().and_then(|s| s.parse::<i64>().ok()).or_else(|| v.as_i64()))
    {
        event::set_timestamp(&mut ev, Timestamp::from_ticks(us, 1_000_000));
    } else {
        event::ensure_timestamp(&mut ev, ctx);
    }
    for (from, to) in [
        ("MESSAGE", "message"),
        ("_HOSTNAME", "host.name"),
        ("_EXE", "process.executable"),
        ("_CMDLINE", "process.command_line"),
        ("_SYSTEMD_UNIT", "systemd.unit"),
    ] {
        event::copy_str(&mut ev, from, to);
    }
    for (from, to) in [
        ("_PID", "process.pid"),
        ("_UID", "user.id"),
        ("PRIORITY", "log.syslog.severity.code"),
        ("SYSLOG_FACILITY", "log.syslog.facility.code"),
    ] {
        event::copy_int(&mut ev, from, to);
    }
    let name =
        ev.get("SYSLOG_IDENTIFIER").or_else(|| ev.get("_COMM")).and_then(Value::as_str).map(str::to_owned);
    if let Some(name) = &name {
        set_str(&mut ev, "process.name", name);
    }
    if let (Some(name), Some(msg)) = (name, ev.get("MESSAGE").and_then(Value::as_str).map(str::to_owned)) {
        if crate::authlog::enrich(&mut ev, &name, &msg) {
            event::set_input(&mut ev, "journald");
        }
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s<'a>(ev: &'a Event, k: &str) -> &'a str {
        ev.get(k).and_then(Value::as_str).unwrap_or_else(|| panic!("{k} missing in {ev:?}"))
    }

    // Records written for these tests in the shape `journalctl -o json` prints.
    #[test]
    fn export_record_with_byte_array_message() {
        let line = r#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1700000000123456","__MONOTONIC_TIMESTAMP":"99","_BOOT_ID":"b","PRIORITY":"6","_PID":"811","_UID":"0","_COMM":"sshd","SYSLOG_IDENTIFIER":"sshd","_HOSTNAME":"web1","MESSAGE":[65,99,99,101,112,116,101,100,32,112,97,115,115,119,111,114,100,32,102,111,114,32,98,111,98,32,102,114,111,109,32,49,57,50,46,48,46,50,46,55,32,112,111,114,116,32,50,50,50,50,32,115,115,104,50,255]}"#;
        let ev = parse(line, &ParseContext::default());
        assert!(!ev.contains_key("mamori.malformed"), "{ev:?}");
        assert_eq!(s(&ev, "@timestamp"), "2023-11-14T22:13:20.123456Z");
        assert_eq!(s(&ev, "message"), "Accepted password for bob from 192.0.2.7 port 2222 ssh2\u{fffd}");
        assert_eq!(ev["process.pid"], 811);
        assert_eq!(s(&ev, "user.name"), "bob");
        assert_eq!(s(&ev, "event.outcome"), "success");
        assert_eq!(s(&ev, "mamori.input"), "journald");
        assert_eq!(s(&ev, "mamori.logsource.service"), "sshd");
        assert_eq!(ev["log.syslog.severity.code"], 6);
    }

    #[test]
    fn repeated_fields_and_garbage() {
        let ev =
            parse(r#"{"MESSAGE":"x","TAG":["a","b"],"__REALTIME_TIMESTAMP":"5"}"#, &ParseContext::default());
        assert_eq!(ev["TAG"], serde_json::json!(["a", "b"]));
        assert_eq!(s(&ev, "@timestamp"), "1970-01-01T00:00:00.000005Z");
        for bad in ["{", "[1,2]", "", "{\"a\":1"] {
            let ev = parse(bad, &ParseContext::default());
            assert_eq!(ev["mamori.malformed"], true, "{bad}");
        }
    }
}
