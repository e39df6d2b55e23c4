//! Syslog headers: RFC 3164 (BSD) and RFC 5424 (IETF), then the message content.
//!
//! Fields set: `log.syslog.priority`, `log.syslog.facility.code`/`.name`,
//! `log.syslog.severity.code`/`.name`, `host.name`, `process.name` (BSD tag / 5424 APP-NAME),
//! `process.pid` (when numeric), `log.syslog.procid` (5424, when not numeric), `log.syslog.msgid`,
//! `log.syslog.version`, `log.syslog.structured_data.<SD-ID>.<PARAM>` (an array when a parameter
//! repeats), `message`, `@timestamp`.
//!
//! The message is then examined by [`enrich_message`]: CEF, LEEF, PAN-OS CSV, FortiGate key=value,
//! auditd records and sshd/sudo messages are parsed into the same event, which then carries that
//! parser's `mamori.input` and logsource. Plain messages stay `rfc3164`/`rfc5424` with logsource
//! `linux`/`syslog` (the Sigma taxonomy's home for generic syslog).

use serde_json::Value;

use crate::event::{self, mark_malformed, set_int, set_str};
use crate::timestamp::{parse_bsd_date, parse_iso8601, resolve_bsd_date};
use crate::{Event, ParseContext};

const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];
const SEVERITIES: [&str; 8] = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"];

/// Parses `<PRI>` at the start; returns (priority, bytes consumed).
fn parse_pri(b: &[u8]) -> Result<Option<(u8, usize)>, &'static str> {
    if b.first() != Some(&b'<') {
        return Ok(None);
    }
    let mut value: u32 = 0;
    let mut i = 1;
    while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
        value = value * 10 + u32::from(c - b'0');
        i += 1;
        if i > 4 {
            return Err("PRI longer than three digits");
        }
    }
    if i == 1 || b.get(i) != Some(&b'>') {
        return Err("PRI is not <digits>");
    }
    if value > 191 {
        return Err("PRI above 191");
    }
    Ok(Some((value as u8, i + 1)))
}

fn set_pri(ev: &mut Event, pri: u8) {
    let facility = pri >> 3;
    let severity = pri & 7;
    set_int(ev, "log.syslog.priority", i64::from(pri));
    set_int(ev, "log.syslog.facility.code", i64::from(facility));
    set_str(ev, "log.syslog.facility.name", FACILITIES[usize::from(facility)]);
    set_int(ev, "log.syslog.severity.code", i64::from(severity));
    set_str(ev, "log.syslog.severity.name", SEVERITIES[usize::from(severity)]);
}

fn default_logsource(ev: &mut Event) {
    event::set_logsource(ev, "linux", Some("syslog"), None);
}

/// RFC 3164 / BSD syslog. Also accepts lines without `<PRI>` (files such as `/var/log/syslog`) and
/// an ISO 8601 date in place of the BSD one (rsyslog's file format). A line with neither a PRI nor
/// a date is malformed.
pub fn parse_rfc3164(text: &str, ctx: &ParseContext) -> Event {
    let mut ev = event::base("rfc3164", text, ctx);
    default_logsource(&mut ev);
    let b = text.as_bytes();
    let mut i = 0;
    let has_pri = match parse_pri(b) {
        Ok(Some((pri, len))) => {
            set_pri(&mut ev, pri);
            i = len;
            true
        }
        Ok(None) => false,
        Err(e) => {
            event::ensure_timestamp(&mut ev, ctx);
            mark_malformed(&mut ev, format!("rfc3164: {e}"));
            return ev;
        }
    };
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    let mut dated = false;
    if let Some((date, len)) = parse_bsd_date(&b[i..]) {
        let ts = resolve_bsd_date(
            &date,
            ctx.now_timestamp(),
            ctx.default_year.map(i64::from),
            i64::from(ctx.utc_offset_secs),
        );
        if let Some(ts) = ts {
            event::set_timestamp(&mut ev, ts);
            dated = true;
            i += len;
        }
    } else if let Some((ts, len)) = parse_iso8601(&b[i..], i64::from(ctx.utc_offset_secs)) {
        event::set_timestamp(&mut ev, ts);
        dated = true;
        i += len;
    }
    event::ensure_timestamp(&mut ev, ctx);
    if !has_pri && !dated {
        mark_malformed(&mut ev, "rfc3164: neither <PRI> nor a date at the start");
        return ev;
    }
    let rest = if dated { text[i..].trim_start_matches(' ') } else { &text[i..] };
    let (host, rest) = if dated { split_hostname(rest) } else { (None, rest) };
    if let Some(host) = host {
        set_str(&mut ev, "host.name", host);
    }
    let (tag, pid, msg) = split_tag(rest);
    if let Some(tag) = tag {
        set_str(&mut ev, "process.name", tag);
    }
    if let Some(pid) = pid {
        match pid.parse::<i64>() {
            Ok(n) => set_int(&mut ev, "process.pid", n),
            Err(_) => set_str(&mut ev, "log.syslog.procid", pid),
        }
    }
    set_str(&mut ev, "message", msg);
    enrich_message(&mut ev, tag, msg, ctx);
    ev
}

/// The token after the date is the host, unless it already looks like a tag (`sshd[1]:` or
/// `kernel:`), which happens when a local program logs without a hostname.
fn split_hostname(rest: &str) -> (Option<&str>, &str) {
    let end = rest.find(' ').unwrap_or(rest.len());
    let token = &rest[..end];
    // Host names never hold commas: `1,2024/01/01 ...` right after the date is a PAN-OS payload
    // from a sender that left the host out.
    if token.is_empty()
        || token.ends_with(':')
        || token.ends_with("]:")
        || token.contains(',')
        || is_cef_or_leef(token)
    {
        return (None, rest);
    }
    (Some(token), rest[end..].trim_start_matches(' '))
}

/// `TAG[PID]: MSG` / `TAG: MSG`. Without a `:` or `[` right after the first word there is no tag.
fn split_tag(rest: &str) -> (Option<&str>, Option<&str>, &str) {
    if is_cef_or_leef(rest) {
        return (None, None, rest);
    }
    let b = rest.as_bytes();
    let end = b.iter().take(129).position(|&c| c == b' ' || c == b'[' || c == b':').unwrap_or(b.len());
    if end == 0 || end > 128 {
        return (None, None, rest);
    }
    let tag = &rest[..end];
    match b.get(end) {
        Some(b'[') => {
            let Some(close) = rest[end..].find(']') else {
                return (None, None, rest);
            };
            let pid = &rest[end + 1..end + close];
            let mut after = &rest[end + close + 1..];
            after = after.strip_prefix(':').unwrap_or(after);
            (Some(tag), Some(pid), after.strip_prefix(' ').unwrap_or(after))
        }
        Some(b':') => {
            let after = &rest[end + 1..];
            (Some(tag), None, after.strip_prefix(' ').unwrap_or(after))
        }
        _ => (None, None, rest),
    }
}

/// `CEF:0|...` / `LEEF:1.0|...` right where a host or tag would be is the payload itself.
fn is_cef_or_leef(s: &str) -> bool {
    s.starts_with("CEF:") || s.starts_with("LEEF:")
}

/// Splits off one space-separated header field.
fn next_field(s: &str) -> Option<(&str, &str)> {
    let end = s.find(' ')?;
    Some((&s[..end], &s[end + 1..]))
}

/// RFC 5424. NILVALUE (`-`) fields are left out; a BOM before the message is dropped; structured
/// data escapes (`\"`, `\\`, `\]`) are undone.
pub fn parse_rfc5424(text: &str, ctx: &ParseContext) -> Event {
    let mut ev = event::base("rfc5424", text, ctx);
    default_logsource(&mut ev);
    if let Err(e) = rfc5424_into(&mut ev, text, ctx) {
        event::ensure_timestamp(&mut ev, ctx);
        mark_malformed(&mut ev, format!("rfc5424: {e}"));
    }
    ev
}

fn rfc5424_into(ev: &mut Event, text: &str, ctx: &ParseContext) -> Result<(), String> {
    let b = text.as_bytes();
    let (pri, len) = parse_pri(b)?.ok_or("no <PRI>")?;
    set_pri(ev, pri);
    let rest = &text[len..];
    let (version, rest) = next_field(rest).ok_or("no VERSION")?;
    if version != "1" {
        return Err(format!("unsupported VERSION {version:?}"));
    }
    set_int(ev, "log.syslog.version", 1);
    let (time, rest) = next_field(rest).ok_or("no TIMESTAMP")?;
    if time != "-" {
        match parse_iso8601(time.as_bytes(), 0) {
            Some((ts, n)) if n == time.len() => event::set_timestamp(ev, ts),
            _ => return Err(format!("bad TIMESTAMP {time:?}")),
        }
    }
    event::ensure_timestamp(ev, ctx);
    let (host, rest) = next_field(rest).ok_or("no HOSTNAME")?;
    event::set_nonempty(ev, "host.name", host);
    let (app, rest) = next_field(rest).ok_or("no APP-NAME")?;
    event::set_nonempty(ev, "process.name", app);
    let (procid, rest) = next_field(rest).ok_or("no PROCID")?;
    if procid != "-" {
        match procid.parse::<i64>() {
            Ok(n) => set_int(ev, "process.pid", n),
            Err(_) => set_str(ev, "log.syslog.procid", procid),
        }
    }
    // MSGID is the last header field; STRUCTURED-DATA may be the end of the line.
    let (msgid, rest) = next_field(rest).unwrap_or((rest, ""));
    if msgid.is_empty() {
        return Err("no MSGID".into());
    }
    event::set_nonempty(ev, "log.syslog.msgid", msgid);
    let msg = if let Some(after) = rest.strip_prefix('-') {
        after
    } else if rest.starts_with('[') {
        parse_structured_data(ev, rest)?
    } else {
        return Err("no STRUCTURED-DATA".into());
    };
    let msg = match msg.strip_prefix(' ') {
        Some(m) => m,
        None if msg.is_empty() => msg,
        None => return Err("no space after STRUCTURED-DATA".into()),
    };
    let msg = msg.strip_prefix('\u{feff}').unwrap_or(msg);
    set_str(ev, "message", msg);
    let app = (app != "-").then_some(app);
    enrich_message(ev, app, msg, ctx);
    Ok(())
}

/// Parses `[id k="v" ...]...` into the event; returns the text after the last element.
fn parse_structured_data<'a>(ev: &mut Event, mut s: &'a str) -> Result<&'a str, String> {
    let mut value = String::new();
    while let Some(inner) = s.strip_prefix('[') {
        let id_end = inner.find([' ', ']']).ok_or("unterminated SD-ELEMENT")?;
        let id = &inner[..id_end];
        if id.is_empty() || id.contains(['=', '"']) {
            return Err(format!("bad SD-ID {id:?}"));
        }
        let mut rest = &inner[id_end..];
        loop {
            rest = rest.trim_start_matches(' ');
            if let Some(after) = rest.strip_prefix(']') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("SD-PARAM without '='")?;
            let name = &rest[..eq];
            if name.is_empty() || name.contains([' ', ']', '"']) {
                return Err(format!("bad PARAM-NAME {name:?}"));
            }
            let quoted = rest[eq + 1..].strip_prefix('"').ok_or("PARAM-VALUE not quoted")?;
            value.clear();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((pos, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        // RFC 5424 6.3.3: only these three are escapes; a backslash before
                        // anything else is kept.
                        Some((_, e @ ('"' | '\\' | ']'))) => value.push(e),
                        Some((_, other)) => {
                            value.push('\\');
                            value.push(other);
                        }
                        None => break,
                    },
                    '"' => {
                        end = Some(pos);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or("unterminated PARAM-VALUE")?;
            let key = format!("log.syslog.structured_data.{id}.{name}");
            match ev.get_mut(&key) {
                Some(Value::Array(items)) => items.push(Value::String(value.clone())),
                Some(existing) => {
                    let first = existing.take();
                    *existing = Value::Array(vec![first, Value::String(value.clone())]);
                }
                None => {
                    ev.insert(key, Value::String(value.clone()));
                }
            }
            rest = &quoted[end + 1..];
        }
        s = rest;
    }
    Ok(s)
}

/// Looks inside a syslog message for a format of its own and parses it into `ev`.
pub fn enrich_message(ev: &mut Event, app: Option<&str>, msg: &str, ctx: &ParseContext) {
    let head = &msg.as_bytes()[..msg.len().min(256)];
    let inner: Option<(&str, Result<(), String>)> = if let Some(at) = find_prefix(head, b"CEF:") {
        Some(("cef", crate::cef::fill(ev, &msg[at..], ctx)))
    } else if let Some(at) = find_prefix(head, b"LEEF:") {
        Some(("leef", crate::leef::fill(ev, &msg[at..], ctx)))
    } else if crate::panos::looks_like_panos(msg.as_bytes()) {
        Some(("panos", crate::panos::fill(ev, msg, ctx)))
    } else if crate::fortigate::looks_like_fortigate(msg.as_bytes()) {
        Some(("fortigate", crate::fortigate::fill(ev, msg, ctx)))
    } else if (msg.starts_with("type=") || msg.starts_with("node=")) && msg.contains("msg=audit(") {
        Some(("auditd", crate::auditd::fill(ev, msg, ctx)))
    } else {
        if let Some(app) = app {
            crate::authlog::enrich(ev, app, msg);
        }
        None
    };
    if let Some((what, Err(e))) = inner {
        mark_malformed(ev, format!("{what} inside syslog: {e}"));
    }
}

/// Where a `CEF:`/`LEEF:` payload starts: at the beginning, or after a short vendor prefix
/// (some devices put their own host or a timestamp first) at a word boundary.
/// Only a version digit right after the prefix counts, so that prose such as "see CEF: docs"
/// in an ordinary message is not mistaken for a payload.
fn find_prefix(head: &[u8], prefix: &[u8]) -> Option<usize> {
    let at = memchr::memmem::find(head, prefix)?;
    let at_boundary = at == 0 || head[at - 1] == b' ';
    let versioned = head.get(at + prefix.len()).is_some_and(u8::is_ascii_digit);
    (at_boundary && versioned).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::parse_iso8601;
    use std::time::{Duration, UNIX_EPOCH};

    fn ctx() -> ParseContext {
        let (now, _) = parse_iso8601(b"2024-06-20T00:00:00Z", 0).unwrap();
        ParseContext::new(UNIX_EPOCH + Duration::from_secs(now.secs as u64))
    }

    fn s<'a>(ev: &'a Event, k: &str) -> &'a str {
        ev.get(k).and_then(Value::as_str).unwrap_or_else(|| panic!("{k} missing in {ev:?}"))
    }

    #[test]
    fn rfc3164_with_pri_host_tag_pid() {
        // RFC 3164 section 5.4 example 1.
        let ev = parse_rfc3164(
            "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
            &ctx(),
        );
        assert_eq!(ev["log.syslog.facility.code"], 4);
        assert_eq!(ev["log.syslog.severity.code"], 2);
        assert_eq!(s(&ev, "log.syslog.facility.name"), "auth");
        assert_eq!(s(&ev, "@timestamp"), "2023-10-11T22:14:15Z");
        assert_eq!(s(&ev, "host.name"), "mymachine");
        assert_eq!(s(&ev, "process.name"), "su");
        assert_eq!(s(&ev, "message"), "'su root' failed for lonvick on /dev/pts/8");
        assert!(!ev.contains_key("mamori.malformed"));

        let ev = parse_rfc3164("<13>Jun  1 01:02:03 sshd[42]: hello", &ctx());
        assert!(!ev.contains_key("host.name"));
        assert_eq!(s(&ev, "process.name"), "sshd");
        assert_eq!(ev["process.pid"], 42);
        assert_eq!(s(&ev, "message"), "hello");
    }

    #[test]
    fn rfc3164_without_pri_and_odd_tags() {
        let ev = parse_rfc3164("Jul  7 08:06:15 combo  -- root[2421]: ROOT LOGIN ON tty2", &ctx());
        assert_eq!(s(&ev, "host.name"), "combo");
        assert!(!ev.contains_key("process.name"));
        assert_eq!(s(&ev, "message"), "-- root[2421]: ROOT LOGIN ON tty2");
        let ev = parse_rfc3164("2024-05-01T10:00:00.5+02:00 web01 nginx: up", &ctx());
        assert_eq!(s(&ev, "@timestamp"), "2024-05-01T08:00:00.500Z");
        assert_eq!(s(&ev, "process.name"), "nginx");
        let ev = parse_rfc3164("<13>no date at all", &ctx());
        assert!(!ev.contains_key("mamori.malformed"));
        assert_eq!(s(&ev, "message"), "no date at all");
        for bad in ["hello world", "", "<999>Jun  1 01:02:03 x y: z", "<x>a"] {
            let ev = parse_rfc3164(bad, &ctx());
            assert_eq!(ev["mamori.malformed"], true, "{bad}");
            assert_eq!(s(&ev, "log.original"), bad);
        }
    }

    #[test]
    fn rfc5424_examples_from_the_rfc() {
        let ev = parse_rfc5424(
            "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \u{feff}'su root' failed for lonvick on /dev/pts/8",
            &ctx(),
        );
        assert_eq!(s(&ev, "@timestamp"), "2003-10-11T22:14:15.003Z");
        assert_eq!(s(&ev, "host.name"), "mymachine.example.com");
        assert_eq!(s(&ev, "process.name"), "su");
        assert!(!ev.contains_key("process.pid"));
        assert_eq!(s(&ev, "log.syslog.msgid"), "ID47");
        assert_eq!(s(&ev, "message"), "'su root' failed for lonvick on /dev/pts/8");

        let ev = parse_rfc5424(
            r#"<165>1 2003-10-11T22:14:15.003-07:00 mymachine.example.com evntslog 1234 ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high" note="a \"quoted\" \] \\ x"]"#,
            &ctx(),
        );
        assert_eq!(s(&ev, "@timestamp"), "2003-10-12T05:14:15.003Z");
        assert_eq!(ev["process.pid"], 1234);
        assert_eq!(s(&ev, "log.syslog.structured_data.exampleSDID@32473.eventSource"), "Application");
        assert_eq!(s(&ev, "log.syslog.structured_data.examplePriority@32473.class"), "high");
        assert_eq!(s(&ev, "log.syslog.structured_data.examplePriority@32473.note"), r#"a "quoted" ] \ x"#);
        assert_eq!(s(&ev, "message"), "");
        assert!(!ev.contains_key("mamori.malformed"), "{ev:?}");

        let ev = parse_rfc5424("<14>1 - - - - - -", &ctx());
        assert!(!ev.contains_key("mamori.malformed"), "{ev:?}");
        assert!(!ev.contains_key("host.name"));
        assert!(ev.contains_key("@timestamp"));

        let ev = parse_rfc5424(r#"<14>1 - h a p m [x@1 a="1" a="2"] hi"#, &ctx());
        assert_eq!(ev["log.syslog.structured_data.x@1.a"], serde_json::json!(["1", "2"]));
        assert_eq!(s(&ev, "message"), "hi");
    }

    #[test]
    fn prose_mentioning_cef_is_not_a_payload() {
        let ev = parse_rfc3164("<13>Jun  1 01:02:03 h app: export to CEF: failed, LEEF: too", &ctx());
        assert!(!ev.contains_key("mamori.malformed"), "{ev:?}");
        assert_eq!(s(&ev, "mamori.input"), "rfc3164");
        let ev = parse_rfc3164("<13>Jun  1 01:02:03 h app: CEF:0|broken", &ctx());
        assert_eq!(ev["mamori.malformed"], true, "a real but broken payload is reported");
        assert_eq!(s(&ev, "host.name"), "h");
    }

    #[test]
    fn rfc5424_garbage_is_malformed() {
        for bad in [
            "<14>2 - - - - - -",
            "<14>1 2003-13-11T22:14:15Z h a p m -",
            r#"<14>1 - h a p m [x a="1"#,
            r#"<14>1 - h a p m [x a=1]"#,
            "<14>1 - h a p m junk",
            "<14>1",
            "14>1 - - - - - -",
        ] {
            let ev = parse_rfc5424(bad, &ctx());
            assert_eq!(ev["mamori.malformed"], true, "{bad}");
            assert!(ev["mamori.error"].as_str().unwrap().starts_with("rfc5424"));
        }
    }
}
