//! Log input parsers for mamori: turn one log line or record into one flat [`Event`].
//!
//! The manager (syslog over TCP/TLS/UDP) and the agent (files, journald) feed lines in; this crate
//! only parses. It opens no sockets, starts no threads and decides nothing about where events go.
//!
//! # The event model
//!
//! An [`Event`] is a flat `serde_json::Map`: every field is one top-level key, values are strings,
//! integers, booleans or arrays of scalars — never nested objects. Fields are:
//!
//! * the source's own fields under the source's own names (CEF extension keys such as `src`, LEEF
//!   attributes, FortiGate keys such as `srcip`, PAN-OS field names such as `rule`/`app`, auditd
//!   keys such as `syscall`/`a0`, journald keys such as `_PID`, JSON keys flattened to dotted keys);
//! * ECS-style dotted keys: `@timestamp` (RFC 3339, UTC), `message`, `event.category`,
//!   `event.action`, `event.outcome`, `source.ip`, `source.port`, `destination.ip`,
//!   `destination.port`, `user.name`, `host.name`, `process.name`, `process.pid`,
//!   `process.command_line`, `process.executable`, `network.transport`, `observer.vendor`,
//!   `observer.product`, `log.syslog.*`, `log.original` (the raw line);
//! * `mamori.input` (which parser: `rfc3164`, `rfc5424`, `cef`, `leef`, `panos`, `fortigate`,
//!   `auditd`, `journald`, `authlog`, `json`) and `mamori.logsource.product` / `.service` /
//!   `.category` for Sigma logsource routing (`linux`/`sshd`, `linux`/`auditd`,
//!   `paloalto`/`firewall`, ...); a line whose product could not be told (garbage, a broken CEF
//!   header) gets product `unknown`;
//! * `mamori.malformed: true` and `mamori.error` when a line could not be parsed. Such a line is
//!   still an event (with `log.original` and whatever was understood) — never dropped, never a
//!   panic. Callers count these.
//!
//! # Timestamps
//!
//! `@timestamp` comes from the record when it has one, else from [`ParseContext::now`] (receive
//! time). RFC 3164 dates have no year and no zone: the zone is [`ParseContext::utc_offset_secs`]
//! (UTC by default) and the year is [`ParseContext::default_year`] if set (replaying an old file),
//! otherwise the latest of next/this/last year that puts the time no more than one day after
//! `now` — the nearest time to `now` that is not in the future, with a day of slack for clock
//! drift and zones (see [`timestamp::resolve_bsd_date`]).
//!
//! # Module map
//!
//! * [`syslog`] — RFC 3164 (with or without `<PRI>`) and RFC 5424 headers, then a look inside the
//!   message for CEF, LEEF, PAN-OS, FortiGate, auditd and sshd/sudo content.
//! * [`framer`] — splits a syslog TCP/TLS byte stream into messages: RFC 6587 octet counting and
//!   newline delimiting, detected per frame, with a maximum frame size.
//! * [`cef`], [`leef`] — ArcSight CEF and IBM QRadar LEEF 1.0/2.0.
//! * [`panos`] — Palo Alto PAN-OS syslog CSV (TRAFFIC, THREAT, SYSTEM).
//! * [`fortigate`] — FortiGate `key=value` logs.
//! * [`auditd`] — Linux audit records and [`AuditAggregator`], which joins the records of one
//!   audit event.
//! * [`journald`] — `journalctl -o json` records.
//! * [`authlog`] — OpenSSH sshd and sudo messages (as found in auth.log / secure).
//! * [`jsonl`] — generic JSON lines, flattened.
//! * [`follower`] — [`Follower`], the agent's rotation-aware file tail with a persisted position.
//! * [`timestamp`] — calendar arithmetic and timestamp formats.
//!
//! # Entry points
//!
//! [`parse_line`] with a [`Format`] (or [`Format::Auto`] to detect it), [`Framer`] for streams,
//! [`AuditAggregator`] for auditd, [`Follower`] for files.
//!
//! ```
//! use mamori_logs::{parse_line, Format, Framer, ParseContext};
//!
//! let ctx = ParseContext::default();
//! let mut framer = Framer::new(64 * 1024);
//! let mut frames = Vec::new();
//! // One TCP read holding an octet-counted and a newline-delimited message.
//! framer.push(b"63 <38>Mar  5 10:00:00 web1 sshd[7]: Invalid user x from 192.0.2.9<13>hi\n", &mut frames);
//! let events: Vec<_> = frames.iter().map(|f| parse_line(Format::Auto, f, &ctx)).collect();
//! assert_eq!(events[0]["source.ip"], "192.0.2.9");
//! assert_eq!(events[0]["mamori.logsource.service"], "sshd");
//! assert_eq!(events[1]["message"], "hi");
//! ```
//!
//! # What this crate deliberately does not do
//!
//! No sockets, listeners, threads, rate limits or storage; no Windows EVTX (see `mamori-evtx`);
//! no Sigma evaluation (it only labels events with their logsource); no character-set guessing
//! (input is UTF-8, invalid bytes are replaced with U+FFFD).

pub mod auditd;
pub mod authlog;
pub mod cef;
mod event;
pub mod follower;
pub mod fortigate;
pub mod framer;
pub mod journald;
pub mod jsonl;
pub mod leef;
pub mod panos;
pub mod syslog;
pub mod timestamp;

use std::time::SystemTime;

pub use auditd::{AuditAggregator, AuditLimits};
pub use follower::{Follower, FollowerOptions};
pub use framer::{Framer, FramerStats};
pub use serde_json::{Map, Value};

/// One log event: a flat map of field name to scalar (or array of scalars).
pub type Event = serde_json::Map<String, Value>;

/// Which parser to apply to a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Detect per line (see [`detect`]).
    Auto,
    /// BSD syslog, with or without `<PRI>` (plain `/var/log/syslog` and `messages` lines too).
    Rfc3164,
    /// IETF syslog.
    Rfc5424,
    /// ArcSight Common Event Format (bare, or use a syslog format to parse a syslog-wrapped one).
    Cef,
    /// IBM QRadar Log Event Extended Format 1.0 / 2.0.
    Leef,
    /// Palo Alto PAN-OS syslog CSV (the message part).
    PanOs,
    /// FortiGate `key=value` (the message part).
    FortiGate,
    /// One Linux audit record (`type=... msg=audit(...): ...`).
    Auditd,
    /// One `journalctl -o json` record.
    Journald,
    /// An auth.log / secure line (BSD syslog header, sshd/sudo message understood).
    AuthLog,
    /// One JSON object per line, flattened to dotted keys.
    JsonLines,
}

impl Format {
    /// Every format by its configuration name (the same name as `mamori.input`, plus `auto`).
    pub const ALL: &'static [Format] = &[
        Format::Auto,
        Format::Rfc3164,
        Format::Rfc5424,
        Format::Cef,
        Format::Leef,
        Format::PanOs,
        Format::FortiGate,
        Format::Auditd,
        Format::Journald,
        Format::AuthLog,
        Format::JsonLines,
    ];

    /// The name used in configuration (agent policies) and in `mamori.input`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Rfc3164 => "rfc3164",
            Format::Rfc5424 => "rfc5424",
            Format::Cef => "cef",
            Format::Leef => "leef",
            Format::PanOs => "panos",
            Format::FortiGate => "fortigate",
            Format::Auditd => "auditd",
            Format::Journald => "journald",
            Format::AuthLog => "authlog",
            Format::JsonLines => "json",
        }
    }

    /// The format named `name` (see [`Format::name`]); `None` for an unknown name.
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.iter().copied().find(|f| f.name() == name)
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        Format::from_name(s).ok_or_else(|| {
            let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
            format!("unknown log format {s:?}; known formats: {}", names.join(", "))
        })
    }
}

/// What the receiver knows about a line besides its bytes.
#[derive(Debug, Clone)]
pub struct ParseContext {
    /// Receive time: the fallback `@timestamp`, and the reference for RFC 3164 year inference.
    pub now: SystemTime,
    /// Year for dates without one (RFC 3164); `None` infers it from `now`.
    pub default_year: Option<i32>,
    /// Offset east of UTC, in seconds, for dates without a zone (RFC 3164, some vendors).
    pub utc_offset_secs: i32,
    /// The host that received the line (set as `mamori.receiver.host`).
    pub receiving_host: Option<String>,
    /// The sender's address (set as `log.source.address`).
    pub peer_ip: Option<String>,
}

impl Default for ParseContext {
    fn default() -> Self {
        ParseContext::new(SystemTime::now())
    }
}

impl ParseContext {
    pub fn new(now: SystemTime) -> ParseContext {
        ParseContext { now, default_year: None, utc_offset_secs: 0, receiving_host: None, peer_ip: None }
    }

    pub(crate) fn now_timestamp(&self) -> timestamp::Timestamp {
        timestamp::Timestamp::from_system_time(self.now)
    }
}

/// Parses one line (or record) with the given format. Never fails: unparseable input comes back as
/// an event with `mamori.malformed`. A trailing `\n` / `\r\n` is ignored.
pub fn parse_line(format: Format, line: &[u8], ctx: &ParseContext) -> Event {
    let line = event::trim_eol(line);
    let text = String::from_utf8_lossy(line);
    let format = match format {
        Format::Auto => detect(line),
        f => f,
    };
    let mut event = match format {
        Format::Auto => unrecognised(&text, ctx),
        Format::Rfc3164 => syslog::parse_rfc3164(&text, ctx),
        Format::Rfc5424 => syslog::parse_rfc5424(&text, ctx),
        Format::Cef => cef::parse(&text, ctx),
        Format::Leef => leef::parse(&text, ctx),
        Format::PanOs => panos::parse(&text, ctx),
        Format::FortiGate => fortigate::parse(&text, ctx),
        Format::Auditd => auditd::parse(&text, ctx),
        Format::Journald => journald::parse(&text, ctx),
        Format::AuthLog => authlog::parse(&text, ctx),
        Format::JsonLines => jsonl::parse(&text, ctx),
    };
    // A line that broke before its parser knew the product still gets routed somewhere.
    if !event.contains_key("mamori.logsource.product") {
        event::set_logsource(&mut event, "unknown", None, None);
    }
    event
}

/// Parses a line as text (convenience for callers that already hold a `str`).
pub fn parse_str(format: Format, line: &str, ctx: &ParseContext) -> Event {
    parse_line(format, line.as_bytes(), ctx)
}

fn unrecognised(text: &str, ctx: &ParseContext) -> Event {
    let mut ev = event::base("unknown", text, ctx);
    event::set_timestamp(&mut ev, ctx.now_timestamp());
    event::mark_malformed(&mut ev, "unrecognised log format");
    ev
}

/// Guesses the format of one line from its first bytes. Syslog (`<PRI>` or a BSD date) is
/// reported as [`Format::Rfc5424`] / [`Format::Rfc3164`]; the syslog parsers then look inside the
/// message for CEF, LEEF, PAN-OS, FortiGate, auditd and sshd content on their own. Returns
/// [`Format::Auto`] when nothing fits.
pub fn detect(line: &[u8]) -> Format {
    let line = line.trim_ascii_start();
    match line.first() {
        Some(b'<') => {
            // `<PRI>1 ` is RFC 5424 (version 1); anything else after a PRI is BSD.
            if let Some(close) = line.iter().take(5).position(|&c| c == b'>') {
                let rest = &line[close + 1..];
                if rest.starts_with(b"1 ") {
                    return Format::Rfc5424;
                }
                return Format::Rfc3164;
            }
            Format::Auto
        }
        Some(b'{') => {
            if memchr::memmem::find(line, b"\"__REALTIME_TIMESTAMP\"").is_some() {
                Format::Journald
            } else {
                Format::JsonLines
            }
        }
        _ if line.starts_with(b"CEF:") => Format::Cef,
        _ if line.starts_with(b"LEEF:") => Format::Leef,
        _ if (line.starts_with(b"type=") || line.starts_with(b"node="))
            && memchr::memmem::find(line, b"msg=audit(").is_some() =>
        {
            Format::Auditd
        }
        _ if timestamp::parse_bsd_date(line).is_some() => Format::Rfc3164,
        _ if timestamp::parse_iso8601(line, 0).is_some() => Format::Rfc3164,
        _ if panos::looks_like_panos(line) => Format::PanOs,
        _ if fortigate::looks_like_fortigate(line) => Format::FortiGate,
        _ => Format::Auto,
    }
}

#[cfg(test)]
mod format_name_tests {
    use super::*;

    #[test]
    fn every_format_round_trips_through_its_name() {
        for f in Format::ALL {
            assert_eq!(Format::from_name(f.name()), Some(*f));
            assert_eq!(f.name().parse::<Format>(), Ok(*f));
        }
        assert_eq!(Format::from_name("syslog"), None);
        let err = "Auth.log".parse::<Format>().unwrap_err();
        assert!(err.contains("authlog"), "{err}");
    }
}
