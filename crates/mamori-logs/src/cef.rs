//! ArcSight Common Event Format:
//! `CEF:Version|Device Vendor|Device Product|Device Version|Device Event Class ID|Name|Severity|Extension`.
//!
//! Header fields are kept as `cef.version`, `deviceVendor`, `deviceProduct`, `deviceVersion`,
//! `deviceEventClassId`, `name`, `severity` (the names of the CEF field dictionary) and mapped to
//! `observer.vendor`/`.product`/`.version`, `event.code`, `event.severity` (0-10) or `log.level`
//! (`Low`, `High`, ...). Extension keys keep their names (`src`, `dpt`, `suser`, `cs1Label`, ...);
//! common ones are mapped to ECS (`src`/`dst` → `source.ip`/`destination.ip`, `spt`/`dpt` → ports,
//! `suser` → `user.name`, `act` → `event.action`, `msg` → `message`, `request` → `url.original`,
//! `proto` → `network.transport`, `rt` → `@timestamp`, ...). Escapes: `\|` and `\\` in the header;
//! `\=`, `\\`, `\n`, `\r` (and `\|`) in extension values. Values may contain spaces: a value runs
//! until the next ` key=`.

use serde_json::Value;

use crate::event::{self, int_or_string, set_str};
use crate::timestamp::{parse_bsd_date, parse_iso8601, resolve_bsd_date, Timestamp};
use crate::{Event, ParseContext};

/// Parses a bare CEF line (no syslog header).
pub fn parse(text: &str, ctx: &ParseContext) -> Event {
    let mut ev = event::base("cef", text, ctx);
    if let Err(e) = fill(&mut ev, text, ctx) {
        event::mark_malformed(&mut ev, format!("cef: {e}"));
    }
    event::ensure_timestamp(&mut ev, ctx);
    ev
}

/// Splits `n` header fields separated by unescaped `|`; returns them (unescaped) and the rest.
pub(crate) fn split_header(s: &str, n: usize) -> Result<(Vec<String>, &str), String> {
    let mut fields = Vec::with_capacity(n);
    let mut current = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, e @ ('|' | '\\'))) => current.push(e),
                Some((_, other)) => {
                    current.push('\\');
                    current.push(other);
                }
                None => current.push('\\'),
            },
            '|' => {
                fields.push(std::mem::take(&mut current));
                if fields.len() == n {
                    return Ok((fields, &s[i + 1..]));
                }
            }
            c => current.push(c),
        }
    }
    Err(format!("header has {} of {n} '|'-separated fields", fields.len()))
}

/// Sigma-style product name for a vendor string.
pub(crate) fn product_for_vendor(vendor: &str) -> String {
    let v = vendor.to_ascii_lowercase();
    for (needle, product) in [
        ("palo alto", "paloalto"),
        ("fortinet", "fortinet"),
        ("check point", "checkpoint"),
        ("cisco", "cisco"),
        ("microsoft", "windows"),
        ("trend micro", "trendmicro"),
        ("sophos", "sophos"),
        ("juniper", "juniper"),
    ] {
        if v.contains(needle) {
            return product.into();
        }
    }
    v.chars().filter(char::is_ascii_alphanumeric).collect()
}

/// Parses `CEF:...` into `ev` (which may already hold syslog header fields).
pub fn fill(ev: &mut Event, text: &str, ctx: &ParseContext) -> Result<(), String> {
    event::set_input(ev, "cef");
    let rest = text.strip_prefix("CEF:").ok_or("does not start with CEF:")?;
    let (header, extension) = split_header(rest, 7)?;
    let version = header[0].trim();
    if version.is_empty() || !version.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        return Err(format!("bad version {version:?}"));
    }
    set_str(ev, "cef.version", version);
    let names = ["deviceVendor", "deviceProduct", "deviceVersion", "deviceEventClassId", "name", "severity"];
    for (name, value) in names.iter().zip(&header[1..]) {
        set_str(ev, name, value);
    }
    event::set_nonempty(ev, "observer.vendor", &header[1]);
    event::set_nonempty(ev, "observer.product", &header[2]);
    event::set_nonempty(ev, "observer.version", &header[3]);
    event::set_nonempty(ev, "event.code", &header[4]);
    let severity = header[6].trim();
    match severity.parse::<i64>() {
        Ok(n) => event::set_int(ev, "event.severity", n),
        Err(_) => event::set_nonempty(ev, "log.level", severity),
    }
    set_str(ev, "message", &header[5]);
    event::set_logsource(ev, &product_for_vendor(&header[1]), None, None);
    for (key, value) in parse_extension(extension) {
        ev.insert(key.to_owned(), value);
    }
    map_extension(ev, ctx);
    Ok(())
}

fn is_key_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b'[' | b']')
}

/// Integer-typed keys of the CEF dictionary.
const INTEGER_KEYS: &[&str] = &[
    "spt",
    "dpt",
    "spid",
    "dpid",
    "in",
    "out",
    "cnt",
    "cn1",
    "cn2",
    "cn3",
    "fsize",
    "oldFileSize",
    "sourceTranslatedPort",
    "destinationTranslatedPort",
    "type",
];

/// `k=v k2=v with spaces k3=...` → (key, value) pairs, values unescaped.
pub(crate) fn parse_extension(ext: &str) -> Vec<(&str, Value)> {
    let b = ext.as_bytes();
    // Key spans: (key start, '=' position) for each unescaped '=' preceded by a word that starts
    // at the beginning or after a space.
    let mut keys: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while let Some(off) = memchr::memchr2(b'=', b'\\', &b[i..]) {
        let p = i + off;
        if b[p] == b'\\' {
            i = p + 2;
            if i > b.len() {
                break;
            }
            continue;
        }
        let mut start = p;
        while start > 0 && is_key_byte(b[start - 1]) {
            start -= 1;
        }
        if start < p && (start == 0 || b[start - 1] == b' ') {
            keys.push((start, p));
        }
        i = p + 1;
    }
    let mut out = Vec::with_capacity(keys.len());
    for (n, &(start, eq)) in keys.iter().enumerate() {
        let end = keys.get(n + 1).map_or(b.len(), |&(next, _)| next);
        let raw = ext[eq + 1..end].trim_end_matches(' ');
        let key = &ext[start..eq];
        let value = unescape_value(raw);
        let value = if INTEGER_KEYS.contains(&key) { int_or_string(&value) } else { Value::String(value) };
        out.push((key, value));
    }
    out
}

fn unescape_value(raw: &str) -> String {
    if !raw.contains('\\') {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(e @ ('=' | '\\' | '|')) => out.push(e),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// CEF dictionary keys → ECS.
fn map_extension(ev: &mut Event, ctx: &ParseContext) {
    for (from, to) in [
        ("src", "source.ip"),
        ("dst", "destination.ip"),
        ("shost", "source.domain"),
        ("dhost", "destination.domain"),
        ("smac", "source.mac"),
        ("dmac", "destination.mac"),
        ("suser", "source.user.name"),
        ("suser", "user.name"),
        ("duser", "destination.user.name"),
        ("act", "event.action"),
        ("msg", "message"),
        ("request", "url.original"),
        ("app", "network.protocol"),
        ("fname", "file.name"),
        ("filePath", "file.path"),
        ("sproc", "process.name"),
        ("dvchost", "observer.hostname"),
        ("dvc", "observer.ip"),
        ("requestClientApplication", "user_agent.original"),
        ("sourceTranslatedAddress", "source.nat.ip"),
        ("destinationTranslatedAddress", "destination.nat.ip"),
    ] {
        event::copy_str(ev, from, to);
    }
    for (from, to) in [
        ("spt", "source.port"),
        ("dpt", "destination.port"),
        ("spid", "process.pid"),
        ("in", "source.bytes"),
        ("out", "destination.bytes"),
        ("sourceTranslatedPort", "source.nat.port"),
        ("destinationTranslatedPort", "destination.nat.port"),
    ] {
        event::copy_int(ev, from, to);
    }
    if let Some(Value::String(p)) = ev.get("proto") {
        let p = p.to_ascii_lowercase();
        set_str(ev, "network.transport", &p);
    }
    if let Some(Value::String(o)) = ev.get("outcome") {
        let o = o.to_ascii_lowercase();
        let outcome = match o.as_str() {
            "success" | "succeeded" | "/success" => Some("success"),
            "failure" | "failed" | "/failure" => Some("failure"),
            _ => None,
        };
        if let Some(outcome) = outcome {
            set_str(ev, "event.outcome", outcome);
        }
    }
    if let Some(Value::String(rt)) = ev.get("rt") {
        if let Some(t) = parse_vendor_time(rt, ctx) {
            event::set_timestamp(ev, t);
        }
    }
}

/// The time formats CEF/LEEF senders use: epoch milliseconds, `MMM dd yyyy HH:mm:ss[.SSS][ zone]`,
/// `MMM dd HH:mm:ss`, ISO 8601. A trailing zone name is ignored (the context offset applies).
pub(crate) fn parse_vendor_time(s: &str, ctx: &ParseContext) -> Option<Timestamp> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
        let n: i64 = s.parse().ok()?;
        // Ten digits or fewer are seconds, more are milliseconds.
        return Some(if s.len() > 10 {
            Timestamp::from_ticks(n, 1000)
        } else {
            Timestamp { secs: n, nanos: 0 }
        });
    }
    let offset = i64::from(ctx.utc_offset_secs);
    if let Some((t, _)) = parse_iso8601(s.as_bytes(), offset) {
        return Some(t);
    }
    let (d, _) = parse_bsd_date(s.as_bytes())?;
    resolve_bsd_date(&d, ctx.now_timestamp(), ctx.default_year.map(i64::from), offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s<'a>(ev: &'a Event, k: &str) -> &'a str {
        ev.get(k).and_then(Value::as_str).unwrap_or_else(|| panic!("{k} missing in {ev:?}"))
    }

    // Test fixtures written for this crate after the CEF specification's examples.
    #[test]
    fn header_and_extension_with_escapes_and_spaces() {
        let line = r"CEF:0|Security|threat\|manager|1.0|100|worm successfully stopped|10|src=10.0.0.1 dst=2.1.2.2 spt=1232 msg=Detected a threat. No action needed\=really c:\\temp act=blocked it cs1Label=Rule Name cs1=Block all\nnow rt=1700000000123";
        let ev = parse(line, &ParseContext::default());
        assert!(!ev.contains_key("mamori.malformed"), "{ev:?}");
        assert_eq!(s(&ev, "deviceProduct"), "threat|manager");
        assert_eq!(s(&ev, "observer.vendor"), "Security");
        assert_eq!(ev["event.severity"], 10);
        assert_eq!(s(&ev, "source.ip"), "10.0.0.1");
        assert_eq!(ev["spt"], 1232);
        assert_eq!(ev["source.port"], 1232);
        assert_eq!(s(&ev, "msg"), r"Detected a threat. No action needed=really c:\temp");
        assert_eq!(s(&ev, "message"), s(&ev, "msg"));
        assert_eq!(s(&ev, "act"), "blocked it");
        assert_eq!(s(&ev, "cs1Label"), "Rule Name");
        assert_eq!(s(&ev, "cs1"), "Block all\nnow");
        assert_eq!(s(&ev, "@timestamp"), "2023-11-14T22:13:20.123Z");
        assert_eq!(s(&ev, "mamori.input"), "cef");
    }

    #[test]
    fn empty_extension_and_string_severity() {
        let ev = parse("CEF:1|V|P|2|sig|Name with = sign|Very-High|", &ParseContext::default());
        assert!(!ev.contains_key("mamori.malformed"), "{ev:?}");
        assert_eq!(s(&ev, "log.level"), "Very-High");
        assert_eq!(s(&ev, "name"), "Name with = sign");
        let exts = parse_extension("a=1 url=http://x/?q=1&r=2 b= c=x\\");
        assert_eq!(
            exts,
            vec![
                ("a", json!("1")),
                ("url", json!("http://x/?q=1&r=2")),
                ("b", json!("")),
                ("c", json!("x\\")),
            ]
        );
    }

    #[test]
    fn broken_headers_are_malformed() {
        for bad in ["CEF:0|a|b|c", "CEF:x|a|b|c|d|e|f|", "CEF", "CEF:|||||||"] {
            let ev = parse(bad, &ParseContext::default());
            assert_eq!(ev["mamori.malformed"], true, "{bad}");
            assert_eq!(s(&ev, "log.original"), bad);
        }
    }
}
