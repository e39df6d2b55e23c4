//! FortiGate (FortiOS) `key=value` logs.
//!
//! Keys keep their names (`srcip`, `dstport`, `action`, `type`, `subtype`, `policyid`, ...);
//! values are strings, or integers when unquoted digits. Quoted values may contain spaces and
//! `\"`. ECS: `source.*`, `destination.*`, `user.name`, `event.action` (FortiGate's action:
//! `accept`, `deny`, `close`, `timeout`, `blocked`, ...), `event.type` (`allowed`/`denied`),
//! `rule.id`/`rule.name` (policy), `network.application`, `source.bytes`/`destination.bytes`,
//! `observer.name`/`.serial_number`, `message`, `log.level`. `@timestamp` from `eventtime` (s, ms,
//! µs or ns since the epoch, told apart by digit count), else `date`+`time` with `tz`.
//! Logsource: `fortinet`, service `fortigate`, category `firewall` for `type=traffic`.

use serde_json::Value;

use crate::event::{self, int_or_string, set_str};
use crate::timestamp::{parse_iso8601, Timestamp};
use crate::{Event, ParseContext};

/// Whether a message looks like a FortiGate key=value log.
pub fn looks_like_fortigate(line: &[u8]) -> bool {
    let head = &line[..line.len().min(512)];
    let starts = [&b"date="[..], b"logver=", b"devname=", b"eventtime=", b"timestamp="]
        .iter()
        .any(|p| head.starts_with(p));
    let find = |needle: &[u8]| memchr::memmem::find(head, needle).is_some();
    (starts && find(b"logid=")) || (find(b" logid=") && find(b" devid=") && find(b" type="))
}

/// Parses `key=value` pairs; `"..."` values may hold spaces and `\"`.
pub(crate) fn parse_pairs(text: &str) -> Result<Vec<(&str, Value)>, String> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(48);
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let key_start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b' ' {
            i += 1;
        }
        if i >= b.len() || b[i] != b'=' {
            return Err(format!("expected key=value at byte {key_start}"));
        }
        let key = &text[key_start..i];
        if key.is_empty() {
            return Err(format!("empty key at byte {key_start}"));
        }
        i += 1;
        if b.get(i) == Some(&b'"') {
            i += 1;
            let mut value = String::new();
            let mut seg = i;
            loop {
                let Some(off) = memchr::memchr2(b'"', b'\\', &b[i..]) else {
                    return Err(format!("unterminated quote in {key}"));
                };
                i += off;
                if b[i] == b'\\' && matches!(b.get(i + 1), Some(b'"' | b'\\')) {
                    value.push_str(&text[seg..i]);
                    value.push(char::from(b[i + 1]));
                    i += 2;
                    seg = i;
                } else if b[i] == b'\\' {
                    i += 1;
                } else {
                    value.push_str(&text[seg..i]);
                    i += 1;
                    break;
                }
            }
            out.push((key, Value::String(value)));
        } else {
            let start = i;
            while i < b.len() && b[i] != b' ' && b[i] != b'\t' {
                i += 1;
            }
            out.push((key, int_or_string(&text[start..i])));
        }
    }
    Ok(out)
}

/// Parses a bare FortiGate line (no syslog header).
pub fn parse(text: &str, ctx: &ParseContext) -> Event {
    let mut ev = event::base("fortigate", text, ctx);
    if let Err(e) = fill(&mut ev, text, ctx) {
        event::mark_malformed(&mut ev, format!("fortigate: {e}"));
    }
    event::ensure_timestamp(&mut ev, ctx);
    ev
}

/// Parses FortiGate key=value into `ev` (which may already hold syslog header fields).
pub fn fill(ev: &mut Event, text: &str, ctx: &ParseContext) -> Result<(), String> {
    event::set_input(ev, "fortigate");
    event::set_logsource(ev, "fortinet", Some("fortigate"), None);
    let pairs = parse_pairs(text.trim_end())?;
    if pairs.is_empty() {
        return Err("no key=value pairs".into());
    }
    for (key, value) in pairs {
        ev.insert(key.to_owned(), value);
    }
    set_str(ev, "observer.vendor", "Fortinet");
    set_str(ev, "observer.product", "FortiGate");
    for (from, to) in [
        ("srcip", "source.ip"),
        ("dstip", "destination.ip"),
        ("transip", "source.nat.ip"),
        ("srcmac", "source.mac"),
        ("dstmac", "destination.mac"),
        ("user", "user.name"),
        ("srcintf", "observer.ingress.interface.name"),
        ("dstintf", "observer.egress.interface.name"),
        ("action", "event.action"),
        ("policyname", "rule.name"),
        ("app", "network.application"),
        ("devname", "observer.name"),
        ("devid", "observer.serial_number"),
        ("msg", "message"),
        ("level", "log.level"),
        ("hostname", "url.domain"),
        ("url", "url.path"),
    ] {
        event::copy_str(ev, from, to);
    }
    for (from, to) in [
        ("srcport", "source.port"),
        ("dstport", "destination.port"),
        ("transport", "source.nat.port"),
        ("sentbyte", "source.bytes"),
        ("rcvdbyte", "destination.bytes"),
        ("sentpkt", "source.packets"),
        ("rcvdpkt", "destination.packets"),
        ("proto", "network.iana_number"),
    ] {
        event::copy_int(ev, from, to);
    }
    if let Some(policy) = ev.get("policyid").map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }) {
        set_str(ev, "rule.id", &policy);
    }
    if let Some(proto) = ev.get("proto").and_then(Value::as_i64) {
        let name = match proto {
            6 => Some("tcp"),
            17 => Some("udp"),
            1 => Some("icmp"),
            58 => Some("ipv6-icmp"),
            _ => None,
        };
        if let Some(name) = name {
            set_str(ev, "network.transport", name);
        }
    }
    if let Some(action) = ev.get("action").and_then(Value::as_str) {
        let denied = matches!(
            action,
            "deny" | "blocked" | "block" | "dropped" | "drop" | "reset" | "reject" | "server-rst-deny"
        );
        set_str(ev, "event.type", if denied { "denied" } else { "allowed" });
    }
    if ev.get("type").and_then(Value::as_str) == Some("traffic") {
        set_str(ev, "event.category", "network");
        event::set_logsource(ev, "fortinet", Some("fortigate"), Some("firewall"));
    }
    if let Some(t) = fortigate_time(ev, ctx) {
        event::set_timestamp(ev, t);
    }
    Ok(())
}

fn fortigate_time(ev: &Event, ctx: &ParseContext) -> Option<Timestamp> {
    if let Some(n) = ev.get("eventtime").and_then(Value::as_i64) {
        let digits = n.unsigned_abs().checked_ilog10().unwrap_or(0) + 1;
        let per_sec = match digits {
            0..=11 => 1,
            12..=14 => 1_000,
            15..=17 => 1_000_000,
            _ => 1_000_000_000,
        };
        return Some(Timestamp::from_ticks(n, per_sec));
    }
    let date = ev.get("date")?.as_str()?;
    let time = ev.get("time")?.as_str()?;
    let offset =
        ev.get("tz").and_then(Value::as_str).and_then(parse_tz).unwrap_or(i64::from(ctx.utc_offset_secs));
    let joined = format!("{date}T{time}");
    parse_iso8601(joined.as_bytes(), offset).map(|(t, _)| t)
}

/// `+0900`, `-05:00`.
fn parse_tz(tz: &str) -> Option<i64> {
    let (sign, rest) = match tz.as_bytes().first()? {
        b'+' => (1, &tz[1..]),
        b'-' => (-1, &tz[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(char::is_ascii_digit).collect();
    if digits.len() != 4 {
        return None;
    }
    let h: i64 = digits[..2].parse().ok()?;
    let m: i64 = digits[2..].parse().ok()?;
    Some(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s<'a>(ev: &'a Event, k: &str) -> &'a str {
        ev.get(k).and_then(Value::as_str).unwrap_or_else(|| panic!("{k} missing in {ev:?}"))
    }

    // Fixtures written for these tests after FortiOS log reference examples (invented values).
    pub(crate) const TRAFFIC_LINE: &str = r#"date=2024-03-05 time=10:11:12 devname="FGT-HQ 01" devid="FG100FTK20000001" eventtime=1709601072123456789 tz="+0900" logid="0000000013" type="traffic" subtype="forward" level="notice" vd="root" srcip=192.0.2.10 srcport=51514 srcintf="port1" srcintfrole="lan" dstip=198.51.100.20 dstport=443 dstintf="wan1" dstintfrole="wan" sessionid=1234567 proto=6 action="close" policyid=12 policytype="policy" service="HTTPS" dstcountry="Japan" srccountry="Reserved" trandisp="snat" transip=203.0.113.5 transport=40111 duration=12 sentbyte=1480 rcvdbyte=7640 sentpkt=11 rcvdpkt=9 appcat="unscanned" user="alice" msg="a \"quoted\" word""#;

    #[test]
    fn traffic_line() {
        assert!(looks_like_fortigate(TRAFFIC_LINE.as_bytes()));
        let ev = parse(TRAFFIC_LINE, &ParseContext::default());
        assert!(!ev.contains_key("mamori.malformed"), "{ev:?}");
        assert_eq!(s(&ev, "devname"), "FGT-HQ 01");
        assert_eq!(s(&ev, "source.ip"), "192.0.2.10");
        assert_eq!(ev["srcport"], 51514);
        assert_eq!(ev["destination.port"], 443);
        assert_eq!(s(&ev, "event.action"), "close");
        assert_eq!(s(&ev, "event.type"), "allowed");
        assert_eq!(s(&ev, "network.transport"), "tcp");
        assert_eq!(s(&ev, "user.name"), "alice");
        assert_eq!(s(&ev, "rule.id"), "12");
        assert_eq!(s(&ev, "message"), r#"a "quoted" word"#);
        assert_eq!(s(&ev, "@timestamp"), "2024-03-05T01:11:12.123456789Z");
        assert_eq!(s(&ev, "mamori.logsource.category"), "firewall");
    }

    #[test]
    fn utm_deny_with_tz_and_in_syslog() {
        let line = r#"<189>date=2024-03-05 time=19:00:00 devname="FGT" devid="FG1" logid="0419016384" type="utm" subtype="ips" level="alert" tz="+0900" srcip=203.0.113.7 dstip=192.0.2.30 action="dropped" attack="Bash.Function.Definitions.Remote.Code.Execution""#;
        let ev = crate::parse_str(crate::Format::Auto, line, &ParseContext::default());
        assert_eq!(s(&ev, "mamori.input"), "fortigate");
        assert!(!ev.contains_key("mamori.malformed"), "{ev:?}");
        assert_eq!(s(&ev, "event.type"), "denied");
        assert_eq!(s(&ev, "@timestamp"), "2024-03-05T10:00:00Z");
        assert_eq!(ev["log.syslog.priority"], 189);
        assert!(!ev.contains_key("mamori.logsource.category"));
    }

    #[test]
    fn broken_pairs() {
        for bad in [r#"date=2024-03-05 devname="open"#, "date=2024 novalue", "=x"] {
            let ev = parse(bad, &ParseContext::default());
            assert_eq!(ev["mamori.malformed"], true, "{bad}");
        }
    }
}
