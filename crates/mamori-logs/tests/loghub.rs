//! The real loghub files (Linux syslog, OpenSSH): every line parses, and facts counted with plain
//! substring searches in this test agree with what the parser extracted.

use std::collections::BTreeSet;
use std::path::PathBuf;

use mamori_logs::{parse_line, Event, Format, ParseContext, Value};

fn corpus(name: &str) -> Option<String> {
    let path =
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/corpora/logs/")).join(name);
    match std::fs::read(&path) {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) => {
            eprintln!("SKIP: corpus file {} not available ({e})", path.display());
            None
        }
    }
}

fn ctx() -> ParseContext {
    // loghub does not say which year; any fixed year makes the dates checkable.
    ParseContext { default_year: Some(2005), ..ParseContext::default() }
}

fn s<'a>(ev: &'a Event, key: &str) -> Option<&'a str> {
    ev.get(key).and_then(Value::as_str)
}

fn parse_all(text: &str, format: Format) -> Vec<Event> {
    let ctx = ctx();
    text.lines().map(|l| parse_line(format, l.as_bytes(), &ctx)).collect()
}

/// The date of a BSD syslog line, worked out here without the crate: "Jun 14 15:16:01" → "2005-06-14T15:16:01Z".
fn expected_timestamp(line: &str) -> String {
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let mut words = line.split_whitespace();
    let name = words.next().unwrap();
    let month = months.iter().position(|m| *m == name).unwrap() + 1;
    let day: u32 = words.next().unwrap().parse().unwrap();
    let time = words.next().unwrap();
    format!("2005-{month:02}-{day:02}T{time}Z")
}

#[test]
fn linux_syslog_every_line() {
    let Some(text) = corpus("Linux_2k.log") else { return };
    for format in [Format::Rfc3164, Format::Auto, Format::AuthLog] {
        let events = parse_all(&text, format);
        assert_eq!(events.len(), text.lines().count());
        let malformed: Vec<_> = events.iter().filter(|e| e.contains_key("mamori.malformed")).collect();
        assert!(
            malformed.is_empty(),
            "{format:?}: {} malformed, first {:?}",
            malformed.len(),
            malformed.first()
        );
        for (line, ev) in text.lines().zip(&events) {
            assert_eq!(s(ev, "log.original"), Some(line));
            assert_eq!(s(ev, "host.name"), line.split_whitespace().nth(3), "{line}");
            assert_eq!(s(ev, "@timestamp"), Some(expected_timestamp(line).as_str()), "{line}");
            assert!(ev.values().all(|v| !v.is_object()), "nested value in {ev:?}");
        }
        // pam_unix failures: counted by substring vs. recognised by the parser.
        let pam_lines = text.lines().filter(|l| l.contains("authentication failure;")).count();
        let pam_events = events
            .iter()
            .filter(|e| {
                s(e, "event.action") == Some("pam_authentication") && s(e, "event.outcome") == Some("failure")
            })
            .count();
        assert!(pam_lines > 300, "corpus changed? {pam_lines}");
        assert_eq!(pam_events, pam_lines, "{format:?}");
        // Every `rhost=<dotted quad>` becomes source.ip.
        let ips_by_substring: BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.split("rhost=").nth(1))
            .map(|r| r.split_whitespace().next().unwrap_or(""))
            .filter(|h| h.split('.').count() == 4 && h.split('.').all(|p| p.parse::<u8>().is_ok()))
            .collect();
        let ips_by_parser: BTreeSet<&str> = events
            .iter()
            .filter(|e| s(e, "event.action") == Some("pam_authentication"))
            .filter_map(|e| s(e, "source.ip"))
            .collect();
        assert_eq!(ips_by_parser, ips_by_substring);
        // The sshd(pam_unix) lines go to the sshd logsource, the rest stays generic syslog.
        let sshd_lines = text.lines().filter(|l| l.contains(" sshd(pam_unix)[")).count();
        let sshd_events = events.iter().filter(|e| s(e, "mamori.logsource.service") == Some("sshd")).count();
        assert_eq!(sshd_events, sshd_lines);
    }
}

#[test]
fn openssh_every_line() {
    let Some(text) = corpus("OpenSSH_2k.log") else { return };
    for format in [Format::AuthLog, Format::Auto, Format::Rfc3164] {
        let events = parse_all(&text, format);
        assert_eq!(events.len(), 2000);
        let malformed = events.iter().filter(|e| e.contains_key("mamori.malformed")).count();
        assert_eq!(malformed, 0, "{format:?}");
        assert!(events.iter().all(|e| s(e, "mamori.input") == Some("authlog")));
        assert!(events.iter().all(|e| s(e, "mamori.logsource.service") == Some("sshd")));

        let failed_lines: Vec<&str> = text.lines().filter(|l| l.contains("Failed password")).collect();
        let failed_events: Vec<&Event> = events
            .iter()
            .filter(|e| {
                s(e, "event.action") == Some("ssh_login")
                    && s(e, "event.outcome") == Some("failure")
                    && s(e, "sshd.method") == Some("password")
            })
            .collect();
        assert_eq!(failed_lines.len(), 520, "corpus changed?");
        assert_eq!(failed_events.len(), failed_lines.len());
        assert!(failed_events.iter().all(|e| s(e, "event.category") == Some("authentication")));

        // Source IPs and users of the failures, read off the lines by hand here.
        let ips_by_substring: BTreeSet<&str> = failed_lines
            .iter()
            .map(|l| l.rsplit(" from ").next().unwrap().split(' ').next().unwrap())
            .collect();
        let ips_by_parser: BTreeSet<&str> = failed_events.iter().filter_map(|e| s(e, "source.ip")).collect();
        assert_eq!(ips_by_parser, ips_by_substring);
        let ports_by_substring: Vec<i64> = failed_lines
            .iter()
            .map(|l| l.rsplit(" port ").next().unwrap().split(' ').next().unwrap().parse().unwrap())
            .collect();
        let ports_by_parser: Vec<i64> =
            failed_events.iter().filter_map(|e| e["source.port"].as_i64()).collect();
        assert_eq!(ports_by_parser, ports_by_substring);
        let root_failures = failed_lines.iter().filter(|l| l.contains("Failed password for root ")).count();
        assert_eq!(failed_events.iter().filter(|e| s(e, "user.name") == Some("root")).count(), root_failures);

        let accepted = text.lines().filter(|l| l.contains("Accepted password for ")).count();
        let accepted_events = events
            .iter()
            .filter(|e| s(e, "event.action") == Some("ssh_login") && s(e, "event.outcome") == Some("success"))
            .count();
        assert_eq!(accepted_events, accepted);

        let invalid_users: BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.split(": Invalid user ").nth(1))
            .map(|r| r.rsplit_once(" from ").unwrap().0)
            .collect();
        let invalid_by_parser: BTreeSet<&str> = events
            .iter()
            .filter(|e| s(e, "event.action") == Some("ssh_invalid_user"))
            .filter_map(|e| s(e, "user.name"))
            .collect();
        assert_eq!(invalid_by_parser, invalid_users);
        for (line, ev) in text.lines().zip(&events) {
            // Wherever a line says "port N", the event has that source port.
            let port =
                line.split(" port ").nth(1).map(|r| r.split(|c: char| !c.is_ascii_digit()).next().unwrap());
            let port: Option<i64> = port.map(|p| p.parse().unwrap());
            assert_eq!(ev.get("source.port").and_then(Value::as_i64), port, "{line}");
            let pid: i64 = line.split("sshd[").nth(1).unwrap().split(']').next().unwrap().parse().unwrap();
            assert_eq!(ev["process.pid"], pid);
            assert_eq!(s(ev, "@timestamp"), Some(expected_timestamp(line).as_str()));
        }
    }
}
