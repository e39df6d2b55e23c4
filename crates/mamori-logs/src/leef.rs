//! IBM QRadar Log Event Extended Format.
//!
//! * LEEF 1.0: `LEEF:1.0|Vendor|Product|Version|EventID|key=value<TAB>key=value...`
//! * LEEF 2.0: `LEEF:2.0|Vendor|Product|Version|EventID|DelimiterCharacter|key=value<D>...`,
//!   where the delimiter is one character (`^`) or its hex code (`x09`, `0x09`, `\x09`); when the
//!   field is absent the delimiter is a tab.
//!
//! Header fields: `leef.version`, `deviceVendor`, `deviceProduct`, `deviceVersion`, `eventId`
//! (→ `observer.*`, `event.code`). Attributes keep their names (`src`, `dstPort`, `usrName`,
//! `devTime`, ...) and the predefined ones are mapped to ECS.

use serde_json::Value;

use crate::cef::{parse_vendor_time, product_for_vendor, split_header};
use crate::event::{self, int_or_string, set_str};
use crate::{Event, ParseContext};

/// Parses a bare LEEF line (no syslog header).
pub fn parse(text: &str, ctx: &ParseContext) -> Event {
    let mut ev = event::base("leef", text, ctx);
    if let Err(e) = fill(&mut ev, text, ctx) {
        event::mark_malformed(&mut ev, format!("leef: {e}"));
    }
    event::ensure_timestamp(&mut ev, ctx);
    ev
}

/// A LEEF 2.0 delimiter field: one character, or `x09` / `0x09` / `\x09` hex.
fn delimiter_spec(field: &str) -> Option<char> {
    let mut chars = field.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        return Some(c);
    }
    let hex = field
        .strip_prefix("\\x")
        .or_else(|| field.strip_prefix("0x"))
        .or_else(|| field.strip_prefix("x"))
        .or_else(|| field.strip_prefix("X"))?;
    if hex.is_empty() || hex.len() > 4 {
        return None;
    }
    char::from_u32(u32::from_str_radix(hex, 16).ok()?)
}

/// Parses `LEEF:...` into `ev` (which may already hold syslog header fields).
pub fn fill(ev: &mut Event, text: &str, ctx: &ParseContext) -> Result<(), String> {
    event::set_input(ev, "leef");
    let rest = text.strip_prefix("LEEF:").ok_or("does not start with LEEF:")?;
    let (header, mut attributes) = split_header(rest, 5)?;
    let version = header[0].trim();
    let mut delimiter = '\t';
    match version {
        "1.0" | "1" => {}
        "2.0" | "2" => {
            // The delimiter field is optional; it is there when a `|` follows a short field.
            if let Some(bar) = attributes.find('|') {
                if let Some(d) = delimiter_spec(&attributes[..bar]) {
                    delimiter = d;
                    attributes = &attributes[bar + 1..];
                }
            }
        }
        other => return Err(format!("unsupported version {other:?}")),
    }
    set_str(ev, "leef.version", version);
    for (name, value) in
        ["deviceVendor", "deviceProduct", "deviceVersion", "eventId"].iter().zip(&header[1..])
    {
        set_str(ev, name, value);
    }
    event::set_nonempty(ev, "observer.vendor", &header[1]);
    event::set_nonempty(ev, "observer.product", &header[2]);
    event::set_nonempty(ev, "observer.version", &header[3]);
    event::set_nonempty(ev, "event.code", &header[4]);
    event::set_logsource(ev, &product_for_vendor(&header[1]), None, None);
    let mut dev_time_format = None;
    for pair in attributes.split(delimiter) {
        let pair = pair.trim_matches(|c| c == ' ' || c == '\r' || c == '\n');
        if pair.is_empty() {
            continue;
        }
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        if key.is_empty() {
            continue;
        }
        if key == "devTimeFormat" {
            dev_time_format = Some(value.to_owned());
        }
        let value = match key {
            "srcPort" | "dstPort" | "srcPreNATPort" | "dstPreNATPort" | "srcPostNATPort"
            | "dstPostNATPort" | "srcBytes" | "dstBytes" | "totalCount" | "srcPackets" | "dstPackets"
            | "sev" => int_or_string(value),
            _ => Value::String(value.to_owned()),
        };
        ev.insert(key.to_owned(), value);
    }
    for (from, to) in [
        ("src", "source.ip"),
        ("dst", "destination.ip"),
        ("srcMAC", "source.mac"),
        ("dstMAC", "destination.mac"),
        ("usrName", "user.name"),
        ("identHostName", "host.name"),
        ("url", "url.original"),
        ("srcPostNAT", "source.nat.ip"),
        ("dstPostNAT", "destination.nat.ip"),
        ("action", "event.action"),
        ("msg", "message"),
    ] {
        event::copy_str(ev, from, to);
    }
    for (from, to) in [
        ("srcPort", "source.port"),
        ("dstPort", "destination.port"),
        ("srcBytes", "source.bytes"),
        ("dstBytes", "destination.bytes"),
        ("sev", "event.severity"),
    ] {
        event::copy_int(ev, from, to);
    }
    if let Some(Value::String(p)) = ev.get("proto") {
        let p = p.to_ascii_lowercase();
        set_str(ev, "network.transport", &p);
    }
    if let Some(Value::String(t)) = ev.get("devTime") {
        // devTimeFormat is a Java SimpleDateFormat; the common ones are what parse_vendor_time
        // reads, so the pattern itself is only kept, not interpreted.
        let _ = &dev_time_format;
        if let Some(ts) = parse_vendor_time(t, ctx) {
            event::set_timestamp(ev, ts);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s<'a>(ev: &'a Event, k: &str) -> &'a str {
        ev.get(k).and_then(Value::as_str).unwrap_or_else(|| panic!("{k} missing in {ev:?}"))
    }

    // Fixtures written for these tests after the LEEF 1.0 / 2.0 format description.
    #[test]
    fn leef1_tab_delimited() {
        let line = "LEEF:1.0|Microsoft|MSExchange|4.0 SP1|15345|src=192.0.2.0\tdst=172.50.123.1\tsev=5\tcat=anomaly\tsrcPort=81\tdstPort=21\tusrName=joe.black\tdevTime=Oct 12 2024 13:10:02";
        let ev = parse(line, &ParseContext::default());
        assert!(!ev.contains_key("mamori.malformed"), "{ev:?}");
        assert_eq!(s(&ev, "source.ip"), "192.0.2.0");
        assert_eq!(ev["destination.port"], 21);
        assert_eq!(s(&ev, "user.name"), "joe.black");
        assert_eq!(s(&ev, "@timestamp"), "2024-10-12T13:10:02Z");
        assert_eq!(s(&ev, "event.code"), "15345");
    }

    #[test]
    fn leef2_custom_delimiters() {
        for (spec, d) in [("^", "^"), ("x09", "\t"), ("0x5e", "^"), ("\\x7c", "|")] {
            let attrs = ["src=10.1.1.1", "dst=10.2.2.2", "usrName=a b", "proto=TCP"].join(d);
            let line = format!("LEEF:2.0|Lancope|StealthWatch|1.0|41|{spec}|{attrs}");
            let ev = parse(&line, &ParseContext::default());
            assert!(!ev.contains_key("mamori.malformed"), "{spec}: {ev:?}");
            assert_eq!(s(&ev, "destination.ip"), "10.2.2.2", "{spec}");
            assert_eq!(s(&ev, "user.name"), "a b");
            assert_eq!(s(&ev, "network.transport"), "tcp");
        }
        // LEEF 2.0 without the delimiter field: tab.
        let ev = parse("LEEF:2.0|V|P|1|id|src=1.2.3.4\tdst=5.6.7.8", &ParseContext::default());
        assert_eq!(s(&ev, "dst"), "5.6.7.8");
    }

    #[test]
    fn bad_leef() {
        for bad in ["LEEF:3.0|a|b|c|d|", "LEEF:1.0|a|b", "LEEF"] {
            let ev = parse(bad, &ParseContext::default());
            assert_eq!(ev["mamori.malformed"], true, "{bad}");
        }
    }
}
