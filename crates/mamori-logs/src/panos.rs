//! Palo Alto Networks PAN-OS syslog in the default CSV format: TRAFFIC, THREAT and SYSTEM logs.
//!
//! Field positions follow Palo Alto's published "Syslog Field Descriptions" for PAN-OS 10.x/11.x
//! (the positions of the first ~55 fields have been stable since 8.x; later releases only append).
//! Each field is kept under the field's variable name from those pages (`receive_time`, `src`,
//! `rule`, `app`, `sport`, `action`, `bytes_sent`, `threatid`, `severity`, `eventid`, ...); fields
//! past the known list become `panos.field_<N>` (0-based). Log types other than the three are kept
//! with their common header fields only. Quoted CSV fields (`"a, b"`, `""` for a quote) are
//! supported.
//!
//! ECS mapping: `source.ip`/`.port`, `destination.ip`/`.port`, `source.nat.*`,
//! `destination.nat.*`, `user.name` (source user), `source.user.name`, `destination.user.name`,
//! `network.application`, `network.transport`, `rule.name`, `event.action` (the firewall's action:
//! `allow`, `deny`, `drop`, `reset-both`, ...), `event.type` (`allowed`/`denied`), `source.bytes`,
//! `destination.bytes`, `network.bytes`, `network.packets`, `observer.ingress.zone`,
//! `observer.egress.zone`, `panos.threat.name` and `panos.threat.id` (from `Name(1234)`),
//! `log.level` and `event.severity` (informational 1 … critical 5), `message` (SYSTEM description).
//! Logsource: `paloalto`, service `traffic`/`threat`/`system`, category `firewall` for TRAFFIC and
//! THREAT.

use std::borrow::Cow;

use crate::event::{self, int_or_string, set_str};
use crate::timestamp::parse_iso8601;
use crate::{Event, ParseContext};

const COMMON: &[&str] =
    &["future_use1", "receive_time", "serial", "type", "subtype", "future_use2", "time_generated"];

const TRAFFIC: &[&str] = &[
    "future_use1",
    "receive_time",
    "serial",
    "type",
    "subtype",
    "future_use2",
    "time_generated",
    "src",
    "dst",
    "natsrc",
    "natdst",
    "rule",
    "srcuser",
    "dstuser",
    "app",
    "vsys",
    "from",
    "to",
    "inbound_if",
    "outbound_if",
    "logset",
    "future_use3",
    "sessionid",
    "repeatcnt",
    "sport",
    "dport",
    "natsport",
    "natdport",
    "flags",
    "proto",
    "action",
    "bytes",
    "bytes_sent",
    "bytes_received",
    "packets",
    "start",
    "elapsed",
    "category",
    "future_use4",
    "seqno",
    "actionflags",
    "srcloc",
    "dstloc",
    "future_use5",
    "pkts_sent",
    "pkts_received",
    "session_end_reason",
    "dg_hier_level_1",
    "dg_hier_level_2",
    "dg_hier_level_3",
    "dg_hier_level_4",
    "vsys_name",
    "device_name",
    "action_source",
    "src_uuid",
    "dst_uuid",
    "tunnelid_imsi",
    "monitortag_imei",
    "parent_session_id",
    "parent_start_time",
    "tunnel",
    "assoc_id",
    "chunks",
    "chunks_sent",
    "chunks_received",
    "rule_uuid",
    "http2_connection",
];

const THREAT: &[&str] = &[
    "future_use1",
    "receive_time",
    "serial",
    "type",
    "subtype",
    "future_use2",
    "time_generated",
    "src",
    "dst",
    "natsrc",
    "natdst",
    "rule",
    "srcuser",
    "dstuser",
    "app",
    "vsys",
    "from",
    "to",
    "inbound_if",
    "outbound_if",
    "logset",
    "future_use3",
    "sessionid",
    "repeatcnt",
    "sport",
    "dport",
    "natsport",
    "natdport",
    "flags",
    "proto",
    "action",
    "misc",
    "threatid",
    "category",
    "severity",
    "direction",
    "seqno",
    "actionflags",
    "srcloc",
    "dstloc",
    "future_use4",
    "contenttype",
    "pcap_id",
    "filedigest",
    "cloud",
    "url_idx",
    "user_agent",
    "filetype",
    "xff",
    "referer",
    "sender",
    "subject",
    "recipient",
    "reportid",
    "dg_hier_level_1",
    "dg_hier_level_2",
    "dg_hier_level_3",
    "dg_hier_level_4",
    "vsys_name",
    "device_name",
    "future_use5",
    "src_uuid",
    "dst_uuid",
    "http_method",
    "tunnelid_imsi",
    "monitortag_imei",
    "parent_session_id",
    "parent_start_time",
    "tunnel",
    "thr_category",
    "contentver",
    "future_use6",
    "assoc_id",
    "ppid",
    "http_headers",
    "url_category_list",
    "rule_uuid",
    "http2_connection",
    "dynusergroup_name",
];

const SYSTEM: &[&str] = &[
    "future_use1",
    "receive_time",
    "serial",
    "type",
    "subtype",
    "future_use2",
    "time_generated",
    "vsys",
    "eventid",
    "object",
    "future_use3",
    "future_use4",
    "module",
    "severity",
    "description",
    "seqno",
    "actionflags",
    "dg_hier_level_1",
    "dg_hier_level_2",
    "dg_hier_level_3",
    "dg_hier_level_4",
    "vsys_name",
    "device_name",
    "future_use5",
    "future_use6",
    "high_res_timestamp",
];

/// Fields that hold integers in every log type that has them.
const INTEGER_FIELDS: &[&str] = &[
    "sessionid",
    "repeatcnt",
    "sport",
    "dport",
    "natsport",
    "natdport",
    "bytes",
    "bytes_sent",
    "bytes_received",
    "packets",
    "elapsed",
    "seqno",
    "pkts_sent",
    "pkts_received",
    "url_idx",
    "parent_session_id",
    "chunks",
    "chunks_sent",
    "chunks_received",
    "assoc_id",
];

const LOG_TYPES: &[&str] = &[
    "TRAFFIC",
    "THREAT",
    "SYSTEM",
    "CONFIG",
    "HIPMATCH",
    "GLOBALPROTECT",
    "USERID",
    "AUTH",
    "DECRYPTION",
    "TUNNEL",
    "SCTP",
    "CORRELATION",
    "IPTAG",
    "GTP",
];

/// Whether a message looks like PAN-OS CSV: `<n>,<date>,<serial>,<TYPE>,...`.
pub fn looks_like_panos(line: &[u8]) -> bool {
    let mut fields = line.splitn(5, |&c| c == b',');
    let (Some(_), Some(time), Some(_serial), Some(kind), Some(_)) =
        (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    time.len() >= 10
        && time[..4].iter().all(u8::is_ascii_digit)
        && matches!(time[4], b'/' | b'-')
        && LOG_TYPES.iter().any(|t| t.as_bytes() == kind)
}

/// Splits one CSV record. A field that starts with `"` runs to the closing `"`; `""` inside is a
/// quote. Returns an error for an unterminated quote.
fn split_csv(line: &str) -> Result<Vec<Cow<'_, str>>, String> {
    let mut fields = Vec::with_capacity(80);
    let b = line.as_bytes();
    let mut i = 0;
    loop {
        if b.get(i) == Some(&b'"') {
            let mut value = String::new();
            let mut j = i + 1;
            loop {
                let Some(off) = memchr::memchr(b'"', &b[j..]) else {
                    return Err(format!("unterminated quote in field {}", fields.len()));
                };
                value.push_str(&line[j..j + off]);
                j += off + 1;
                if b.get(j) == Some(&b'"') {
                    value.push('"');
                    j += 1;
                } else {
                    break;
                }
            }
            fields.push(Cow::Owned(value));
            // Anything between the closing quote and the comma is kept, as Excel would.
            match memchr::memchr(b',', &b[j..]) {
                Some(off) => i = j + off + 1,
                None => return Ok(fields),
            }
        } else {
            match memchr::memchr(b',', &b[i..]) {
                Some(off) => {
                    fields.push(Cow::Borrowed(&line[i..i + off]));
                    i += off + 1;
                }
                None => {
                    fields.push(Cow::Borrowed(&line[i..]));
                    return Ok(fields);
                }
            }
        }
    }
}

/// PAN-OS time: `2024/01/31 13:45:00` (firewall local time; the context offset applies) or ISO 8601.
fn parse_panos_time(s: &str, ctx: &ParseContext) -> Option<crate::timestamp::Timestamp> {
    let mut b: Vec<u8> = s.as_bytes().to_vec();
    if b.len() >= 10 && b[4] == b'/' && b[7] == b'/' {
        b[4] = b'-';
        b[7] = b'-';
    }
    let (t, n) = parse_iso8601(&b, i64::from(ctx.utc_offset_secs))?;
    (n == b.len()).then_some(t)
}

/// Parses a bare PAN-OS CSV line (no syslog header).
pub fn parse(text: &str, ctx: &ParseContext) -> Event {
    let mut ev = event::base("panos", text, ctx);
    if let Err(e) = fill(&mut ev, text, ctx) {
        event::mark_malformed(&mut ev, format!("panos: {e}"));
    }
    event::ensure_timestamp(&mut ev, ctx);
    ev
}

fn severity_number(s: &str) -> Option<i64> {
    Some(match s {
        "informational" => 1,
        "low" => 2,
        "medium" => 3,
        "high" => 4,
        "critical" => 5,
        _ => return None,
    })
}

/// Parses PAN-OS CSV into `ev` (which may already hold syslog header fields).
pub fn fill(ev: &mut Event, text: &str, ctx: &ParseContext) -> Result<(), String> {
    event::set_input(ev, "panos");
    let fields = split_csv(text.trim_end())?;
    if fields.len() < COMMON.len() {
        return Err(format!("only {} CSV fields", fields.len()));
    }
    let kind = fields[3].as_ref();
    let names: &[&str] = match kind {
        "TRAFFIC" => TRAFFIC,
        "THREAT" => THREAT,
        "SYSTEM" => SYSTEM,
        k if LOG_TYPES.contains(&k) => COMMON,
        other => return Err(format!("unknown log type {other:?}")),
    };
    let minimum = match kind {
        "TRAFFIC" => 34,
        "THREAT" => 36,
        "SYSTEM" => 15,
        _ => COMMON.len(),
    };
    if fields.len() < minimum {
        return Err(format!("{kind} log with {} fields, expected at least {minimum}", fields.len()));
    }
    for (i, value) in fields.iter().enumerate() {
        if value.is_empty() {
            continue;
        }
        match names.get(i) {
            Some(name) if name.starts_with("future_use") => {}
            Some(name) if INTEGER_FIELDS.contains(name) => {
                ev.insert((*name).to_owned(), int_or_string(value));
            }
            Some(name) => set_str(ev, name, value),
            None => set_str(ev, &format!("panos.field_{i}"), value),
        }
    }
    set_str(ev, "observer.vendor", "Palo Alto Networks");
    set_str(ev, "observer.product", "PAN-OS");
    event::copy_str(ev, "serial", "observer.serial_number");
    event::copy_str(ev, "device_name", "observer.name");
    let time = fields[6].as_ref();
    let time = if time.is_empty() { fields[1].as_ref() } else { time };
    if let Some(t) = parse_panos_time(time, ctx) {
        event::set_timestamp(ev, t);
    }
    match kind {
        "TRAFFIC" | "THREAT" => {
            map_session(ev);
            let service = if kind == "TRAFFIC" { "traffic" } else { "threat" };
            event::set_logsource(ev, "paloalto", Some(service), Some("firewall"));
        }
        "SYSTEM" => {
            event::copy_str(ev, "description", "message");
            event::copy_str(ev, "eventid", "event.code");
            event::set_logsource(ev, "paloalto", Some("system"), None);
        }
        _ => event::set_logsource(ev, "paloalto", Some(&kind.to_ascii_lowercase()), None),
    }
    if let Some(sev) = ev.get("severity").and_then(|v| v.as_str()).map(str::to_owned) {
        set_str(ev, "log.level", &sev);
        if let Some(n) = severity_number(&sev) {
            event::set_int(ev, "event.severity", n);
        }
    }
    Ok(())
}

fn map_session(ev: &mut Event) {
    for (from, to) in [
        ("src", "source.ip"),
        ("dst", "destination.ip"),
        ("natsrc", "source.nat.ip"),
        ("natdst", "destination.nat.ip"),
        ("srcuser", "user.name"),
        ("srcuser", "source.user.name"),
        ("dstuser", "destination.user.name"),
        ("app", "network.application"),
        ("rule", "rule.name"),
        ("rule_uuid", "rule.uuid"),
        ("from", "observer.ingress.zone"),
        ("to", "observer.egress.zone"),
        ("inbound_if", "observer.ingress.interface.name"),
        ("outbound_if", "observer.egress.interface.name"),
        ("proto", "network.transport"),
        ("action", "event.action"),
        ("direction", "network.direction"),
        ("user_agent", "user_agent.original"),
    ] {
        event::copy_str(ev, from, to);
    }
    for (from, to) in [
        ("sport", "source.port"),
        ("dport", "destination.port"),
        ("natsport", "source.nat.port"),
        ("natdport", "destination.nat.port"),
        ("bytes", "network.bytes"),
        ("bytes_sent", "source.bytes"),
        ("bytes_received", "destination.bytes"),
        ("packets", "network.packets"),
        ("pkts_sent", "source.packets"),
        ("pkts_received", "destination.packets"),
    ] {
        event::copy_int(ev, from, to);
    }
    if let Some(action) = ev.get("action").and_then(|v| v.as_str()) {
        let allowed = matches!(action, "allow" | "alert" | "continue" | "override");
        set_str(ev, "event.type", if allowed { "allowed" } else { "denied" });
    }
    set_str(ev, "event.category", "network");
    // THREAT: `misc` is the URL or file name, `threatid` is `Name(1234)`.
    if let Some(misc) = ev.get("misc").and_then(|v| v.as_str()).map(str::to_owned) {
        let subtype = ev.get("subtype").and_then(|v| v.as_str()).unwrap_or("");
        if subtype == "url" {
            set_str(ev, "url.original", &misc);
        } else {
            set_str(ev, "file.name", &misc);
        }
    }
    if let Some(threat) = ev.get("threatid").and_then(|v| v.as_str()).map(str::to_owned) {
        set_str(ev, "event.category", "intrusion_detection");
        match threat.rfind('(') {
            Some(open) if threat.ends_with(')') => {
                let name = threat[..open].trim_end();
                event::set_nonempty(ev, "panos.threat.name", name);
                event::set_int_str(ev, "panos.threat.id", &threat[open + 1..threat.len() - 1]);
            }
            _ => set_str(ev, "panos.threat.name", &threat),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn s<'a>(ev: &'a Event, k: &str) -> &'a str {
        ev.get(k).and_then(Value::as_str).unwrap_or_else(|| panic!("{k} missing in {ev:?}"))
    }

    // Fixtures written for these tests following the field order of Palo Alto's syslog field
    // descriptions; addresses are documentation ranges, names invented.
    pub(crate) const TRAFFIC_LINE: &str = "1,2024/03/05 10:11:12,012801000001,TRAFFIC,end,2561,2024/03/05 10:11:10,192.0.2.10,198.51.100.20,203.0.113.5,198.51.100.20,Allow-Web,corp\\alice,,ssl,vsys1,trust,untrust,ethernet1/1,ethernet1/2,Forward-All,,81234,1,51514,443,40111,443,0x400053,tcp,allow,9120,1480,7640,20,2024/03/05 10:10:58,12,computer-and-internet-info,,7311111111111,0x8000000000000000,192.168.0.0-192.168.255.255,United States,,11,9,tcp-fin,0,0,0,0,,fw-hq-01,from-policy,,,0,,0,,N/A,0,0,0,0,6a1e2c3d-1111-2222-3333-444455556666,0";
    pub(crate) const THREAT_LINE: &str = "1,2024/03/05 10:12:00,012801000001,THREAT,vulnerability,2561,2024/03/05 10:11:59,203.0.113.77,192.0.2.30,0.0.0.0,0.0.0.0,\"Inbound, DMZ\",,,web-browsing,vsys1,untrust,dmz,ethernet1/2,ethernet1/3,Forward-All,,99887,1,40000,80,0,0,0x2000,tcp,reset-both,\"cgi-bin/test.cgi?a=1,2\",Bash Remote Code Execution Vulnerability(36729),any,critical,client-to-server,7322222222222,0x8000000000000000,United States,192.0.2.0-192.0.2.255,,,0,,,0,,,,,,,,0,0,0,0,0,,fw-hq-01";
    pub(crate) const SYSTEM_LINE: &str = "1,2024/03/05 10:13:00,012801000001,SYSTEM,auth,2561,2024/03/05 10:13:00,,auth-fail,admin,,,0,medium,\"failed authentication for user 'admin'. Reason: Invalid username or password. From: 192.0.2.99.\",7333333333333,0x0,0,0,0,0,,fw-hq-01";

    #[test]
    fn traffic_fields_and_ecs() {
        assert!(looks_like_panos(TRAFFIC_LINE.as_bytes()));
        let ev = parse(TRAFFIC_LINE, &ParseContext::default());
        assert!(!ev.contains_key("mamori.malformed"), "{ev:?}");
        assert_eq!(s(&ev, "source.ip"), "192.0.2.10");
        assert_eq!(s(&ev, "destination.ip"), "198.51.100.20");
        assert_eq!(ev["source.port"], 51514);
        assert_eq!(ev["destination.port"], 443);
        assert_eq!(s(&ev, "user.name"), "corp\\alice");
        assert_eq!(s(&ev, "network.application"), "ssl");
        assert_eq!(s(&ev, "rule.name"), "Allow-Web");
        assert_eq!(s(&ev, "event.action"), "allow");
        assert_eq!(s(&ev, "event.type"), "allowed");
        assert_eq!(ev["network.bytes"], 9120);
        assert_eq!(ev["source.bytes"], 1480);
        assert_eq!(ev["destination.bytes"], 7640);
        assert_eq!(s(&ev, "session_end_reason"), "tcp-fin");
        assert_eq!(s(&ev, "device_name"), "fw-hq-01");
        assert_eq!(s(&ev, "serial"), "012801000001");
        assert_eq!(s(&ev, "@timestamp"), "2024-03-05T10:11:10Z");
        assert_eq!(s(&ev, "mamori.logsource.category"), "firewall");
    }

    #[test]
    fn threat_with_quoted_commas() {
        let ev = parse(THREAT_LINE, &ParseContext::default());
        assert!(!ev.contains_key("mamori.malformed"), "{ev:?}");
        assert_eq!(s(&ev, "rule.name"), "Inbound, DMZ");
        assert_eq!(s(&ev, "file.name"), "cgi-bin/test.cgi?a=1,2");
        assert_eq!(s(&ev, "panos.threat.name"), "Bash Remote Code Execution Vulnerability");
        assert_eq!(ev["panos.threat.id"], 36729);
        assert_eq!(s(&ev, "log.level"), "critical");
        assert_eq!(ev["event.severity"], 5);
        assert_eq!(s(&ev, "event.action"), "reset-both");
        assert_eq!(s(&ev, "event.type"), "denied");
        assert_eq!(s(&ev, "device_name"), "fw-hq-01");
    }

    #[test]
    fn system_and_syslog_wrapped() {
        let ev = parse(SYSTEM_LINE, &ParseContext::default());
        assert!(!ev.contains_key("mamori.malformed"), "{ev:?}");
        assert_eq!(s(&ev, "eventid"), "auth-fail");
        assert!(s(&ev, "message").starts_with("failed authentication for user 'admin'."));
        assert_eq!(s(&ev, "mamori.logsource.service"), "system");
        let wrapped = format!("<14>Mar  5 10:11:12 fw-hq-01 {TRAFFIC_LINE}");
        let ev = crate::parse_str(crate::Format::Auto, &wrapped, &ParseContext::default());
        assert_eq!(s(&ev, "mamori.input"), "panos");
        assert_eq!(s(&ev, "host.name"), "fw-hq-01");
        assert_eq!(s(&ev, "source.ip"), "192.0.2.10");
        let bare_host = format!("Mar  5 10:11:12 {TRAFFIC_LINE}");
        let ev = crate::parse_str(crate::Format::Auto, &bare_host, &ParseContext::default());
        assert_eq!(s(&ev, "mamori.input"), "panos");
        assert!(!ev.contains_key("mamori.malformed"), "{ev:?}");
    }

    #[test]
    fn short_or_broken_lines_are_malformed() {
        for bad in [
            "1,2024/03/05 10:11:12,0128,TRAFFIC,end,1,2024/03/05 10:11:10,1.2.3.4",
            "1,2024/03/05 10:11:12,0128,NOPE,end,1,2024/03/05 10:11:10",
            "1,2024/03/05 10:11:12,0128,SYSTEM,\"open",
        ] {
            let ev = parse(bad, &ParseContext::default());
            assert_eq!(ev["mamori.malformed"], true, "{bad}");
        }
    }
}
