//! auth.log / secure: OpenSSH sshd, sudo, su and pam_unix messages.
//!
//! The syslog header is RFC 3164 (see [`crate::syslog`]); this module understands the message.
//! Fields set when recognised: `event.category` (`authentication`, `session`), `event.action`
//! (`ssh_login`, `ssh_invalid_user`, `ssh_disconnect`, `ssh_connection`, `pam_authentication`,
//! `session_open`, `session_close`, `sudo_command`, `su`), `event.outcome`
//! (`success`/`failure`), `user.name`, `source.address`, `source.ip` (only when it is an IP
//! address), `source.domain` (when a host name), `source.port`, `sshd.method` (`password`,
//! `publickey`, `none`, `keyboard-interactive/pam`, ...), `sshd.invalid_user: true`, `event.count`
//! (`message repeated N times`), `user.effective.name` and `process.command_line` (sudo).
//! Logsource: `linux` + `sshd` / `sudo` / `auth`.

use std::net::IpAddr;

use crate::event::{self, set_str};
use crate::{Event, ParseContext};

/// Parses an auth.log line: BSD syslog header, then the sshd/sudo/pam message.
pub fn parse(text: &str, ctx: &ParseContext) -> Event {
    let mut ev = crate::syslog::parse_rfc3164(text, ctx);
    if ev.get("mamori.input").and_then(|v| v.as_str()) == Some("rfc3164") {
        event::set_input(&mut ev, "authlog");
        event::set_logsource(&mut ev, "linux", Some("auth"), None);
    }
    ev
}

/// Understands the message of a program found in auth logs. Returns whether the program was one
/// of them (the event is then relabelled `authlog`).
pub fn enrich(ev: &mut Event, app: &str, msg: &str) -> bool {
    // `sshd(pam_unix)` is how older PAM logged through syslog.
    let program = app.split('(').next().unwrap_or(app);
    let service = match program {
        "sshd" | "sshd-session" => "sshd",
        "sudo" => "sudo",
        "su" | "login" | "gdm" | "passwd" | "systemd-logind" => "auth",
        _ => return false,
    };
    event::set_input(ev, "authlog");
    event::set_logsource(ev, "linux", Some(service), None);
    match service {
        "sshd" => sshd(ev, msg),
        "sudo" => sudo(ev, msg),
        _ => {}
    }
    if msg.contains("authentication failure;") || msg.starts_with("PAM ") {
        pam_failure(ev, msg);
    } else if let Some(p) = msg.find("session opened for user ") {
        session(ev, &msg[p + "session opened for user ".len()..], "session_open");
    } else if let Some(p) = msg.find("session closed for user ") {
        session(ev, &msg[p + "session closed for user ".len()..], "session_close");
    } else if program == "su" {
        su(ev, msg);
    }
    true
}

fn set_outcome(ev: &mut Event, category: &str, action: &str, success: bool) {
    set_str(ev, "event.category", category);
    set_str(ev, "event.action", action);
    set_str(ev, "event.outcome", if success { "success" } else { "failure" });
}

/// Sets `source.address` and `source.ip` or `source.domain`.
fn set_source(ev: &mut Event, addr: &str) {
    let addr = addr.trim_matches(|c| c == '[' || c == ']');
    if addr.is_empty() {
        return;
    }
    set_str(ev, "source.address", addr);
    if addr.parse::<IpAddr>().is_ok() {
        set_str(ev, "source.ip", addr);
    } else {
        set_str(ev, "source.domain", addr);
    }
}

/// `IP[ port N][ rest]` → source fields.
fn source_and_port(ev: &mut Event, s: &str) {
    let mut words = s.split(' ');
    if let Some(addr) = words.next() {
        set_source(ev, addr.trim_end_matches(':'));
    }
    if words.next() == Some("port") {
        if let Some(port) = words.next() {
            // "port 22:11: Bye Bye" (Received disconnect) has more after the number.
            let digits = port.split(|c: char| !c.is_ascii_digit()).next().unwrap_or("");
            event::set_int_str(ev, "source.port", digits);
        }
    }
}

fn sshd(ev: &mut Event, msg: &str) {
    let mut msg = msg;
    // "message repeated 3 times: [ Failed password for root from ...]"
    if let Some(rest) = msg.strip_prefix("message repeated ") {
        if let Some((count, inner)) = rest.split_once(" times: [") {
            event::set_int_str(ev, "event.count", count);
            msg = inner.trim_start().trim_end_matches(']');
        }
    }
    for (prefix, success) in [("Accepted ", true), ("Failed ", false)] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            let Some((method, rest)) = rest.split_once(" for ") else {
                return;
            };
            let Some(from) = rest.rfind(" from ") else {
                return;
            };
            let mut user = &rest[..from];
            if let Some(u) = user.strip_prefix("invalid user ") {
                user = u;
                ev.insert("sshd.invalid_user".into(), true.into());
            }
            set_outcome(ev, "authentication", "ssh_login", success);
            set_str(ev, "sshd.method", method);
            event::set_nonempty(ev, "user.name", user);
            source_and_port(ev, &rest[from + 6..]);
            return;
        }
    }
    if let Some(rest) = msg.strip_prefix("Invalid user ") {
        set_outcome(ev, "authentication", "ssh_invalid_user", false);
        ev.insert("sshd.invalid_user".into(), true.into());
        if let Some(from) = rest.rfind(" from ") {
            event::set_nonempty(ev, "user.name", &rest[..from]);
            source_and_port(ev, &rest[from + 6..]);
        } else {
            event::set_nonempty(ev, "user.name", rest);
        }
        return;
    }
    if let Some(rest) = msg.strip_prefix("input_userauth_request: invalid user ") {
        let user = rest.trim_end_matches(" [preauth]");
        event::set_nonempty(ev, "user.name", user);
        ev.insert("sshd.invalid_user".into(), true.into());
        return;
    }
    for prefix in
        ["Received disconnect from ", "Disconnected from ", "Connection closed by ", "Connection reset by "]
    {
        if let Some(mut rest) = msg.strip_prefix(prefix) {
            set_str(ev, "event.category", "session");
            set_str(ev, "event.action", "ssh_disconnect");
            for who in ["authenticating user ", "invalid user ", "user "] {
                if let Some(r) = rest.strip_prefix(who) {
                    if let Some((user, r)) = r.split_once(' ') {
                        event::set_nonempty(ev, "user.name", user);
                        rest = r;
                    }
                    break;
                }
            }
            source_and_port(ev, rest);
            return;
        }
    }
    if let Some(rest) = msg.strip_prefix("Connection from ") {
        set_str(ev, "event.category", "network");
        set_str(ev, "event.action", "ssh_connection");
        source_and_port(ev, rest);
        return;
    }
    if let Some(rest) = msg.strip_prefix("Did not receive identification string from ") {
        set_str(ev, "event.category", "network");
        source_and_port(ev, rest);
        return;
    }
    if msg.starts_with("reverse mapping checking") {
        if let (Some(open), Some(close)) = (msg.find('['), msg.find(']')) {
            if open < close {
                set_source(ev, &msg[open + 1..close]);
            }
        }
        return;
    }
    // "error: PAM: Authentication failure for [illegal user ]root from 192.0.2.1"
    if let Some(p) = msg.find("PAM: Authentication failure for ") {
        let rest = &msg[p + "PAM: Authentication failure for ".len()..];
        set_outcome(ev, "authentication", "ssh_login", false);
        set_str(ev, "sshd.method", "keyboard-interactive/pam");
        if let Some(from) = rest.rfind(" from ") {
            let user = rest[..from].trim_start_matches("illegal user ").trim_start_matches("invalid user ");
            event::set_nonempty(ev, "user.name", user);
            set_source(ev, &rest[from + 6..]);
        }
        return;
    }
    if let Some(p) = msg.find("maximum authentication attempts exceeded for ") {
        let rest = &msg[p + "maximum authentication attempts exceeded for ".len()..];
        set_outcome(ev, "authentication", "ssh_login", false);
        if let Some(from) = rest.rfind(" from ") {
            let user = rest[..from].trim_start_matches("invalid user ");
            event::set_nonempty(ev, "user.name", user);
            source_and_port(ev, &rest[from + 6..]);
        }
    }
}

/// `... authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=1.2.3.4  user=root`
fn pam_failure(ev: &mut Event, msg: &str) {
    set_outcome(ev, "authentication", "pam_authentication", false);
    let fields = msg.split_once(';').map_or(msg, |(_, f)| f);
    for pair in fields.split_ascii_whitespace() {
        match pair.split_once('=') {
            Some(("rhost", v)) => set_source(ev, v),
            Some(("user", v)) if !v.is_empty() => set_str(ev, "user.name", v),
            Some(("ruser", v)) if !v.is_empty() => set_str(ev, "source.user.name", v),
            _ => {}
        }
    }
    if let Some(n) = msg.strip_prefix("PAM ").and_then(|r| r.split(' ').next()) {
        event::set_int_str(ev, "event.count", n);
    }
}

/// `USER by (uid=0)` / `USER(uid=0) by alice(uid=1000)`.
fn session(ev: &mut Event, rest: &str, action: &str) {
    set_str(ev, "event.category", "session");
    set_str(ev, "event.action", action);
    set_str(ev, "event.outcome", "success");
    let user = rest.split([' ', '(']).next().unwrap_or("");
    event::set_nonempty(ev, "user.name", user);
}

/// `alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id -u`
fn sudo(ev: &mut Event, msg: &str) {
    let Some((user, rest)) = msg.trim_start().split_once(" : ") else {
        return;
    };
    if user.contains(' ') {
        return;
    }
    set_str(ev, "user.name", user);
    let mut success = true;
    for part in rest.split(" ; ") {
        match part.split_once('=') {
            Some(("TTY", v)) => set_str(ev, "sudo.tty", v),
            Some(("PWD", v)) => set_str(ev, "sudo.pwd", v),
            Some(("USER", v)) => set_str(ev, "user.effective.name", v),
            Some(("COMMAND", v)) => set_str(ev, "process.command_line", v),
            _ => {
                if part.contains("incorrect password") || part.contains("NOT in sudoers") {
                    success = false;
                    set_str(ev, "sudo.error", part.trim());
                }
            }
        }
    }
    set_outcome(ev, "authentication", "sudo_command", success);
}

/// `(to root) alice on pts/0` (success) / `FAILED SU (to root) alice on pts/0`.
fn su(ev: &mut Event, msg: &str) {
    let (success, rest) = match msg.strip_prefix("FAILED SU ") {
        Some(r) => (false, r),
        None => (true, msg),
    };
    let Some(rest) = rest.strip_prefix("(to ") else {
        return;
    };
    let Some((target, rest)) = rest.split_once(") ") else {
        return;
    };
    set_outcome(ev, "authentication", "su", success);
    set_str(ev, "user.effective.name", target);
    if let Some(user) = rest.split(' ').next() {
        event::set_nonempty(ev, "user.name", user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn ev(line: &str) -> Event {
        parse(line, &ParseContext::default())
    }
    fn s<'a>(ev: &'a Event, k: &str) -> Option<&'a str> {
        ev.get(k).and_then(Value::as_str)
    }

    // Fixtures written for these tests in the formats OpenSSH and sudo print.
    #[test]
    fn sshd_logins() {
        let e = ev("Mar  3 10:00:00 web1 sshd[811]: Accepted publickey for alice from 2001:db8::7 port 50022 ssh2: ED25519 SHA256:abc");
        assert_eq!(s(&e, "mamori.input"), Some("authlog"));
        assert_eq!(s(&e, "mamori.logsource.service"), Some("sshd"));
        assert_eq!(s(&e, "event.outcome"), Some("success"));
        assert_eq!(s(&e, "sshd.method"), Some("publickey"));
        assert_eq!(s(&e, "user.name"), Some("alice"));
        assert_eq!(s(&e, "source.ip"), Some("2001:db8::7"));
        assert_eq!(e["source.port"], 50022);

        let e = ev("Mar  3 10:00:01 web1 sshd[812]: Failed password for invalid user admin from 10.0.0.9 port 4242 ssh2");
        assert_eq!(s(&e, "event.outcome"), Some("failure"));
        assert_eq!(s(&e, "user.name"), Some("admin"));
        assert_eq!(e["sshd.invalid_user"], true);

        let e = ev("Mar  3 10:00:02 web1 sshd[813]: message repeated 5 times: [ Failed password for root from 10.0.0.9 port 4243 ssh2]");
        assert_eq!(e["event.count"], 5);
        assert_eq!(s(&e, "user.name"), Some("root"));
        assert_eq!(e["source.port"], 4243);

        let e = ev("Mar  3 10:00:03 web1 sshd[814]: Invalid user  from 10.0.0.10 port 1");
        assert_eq!(s(&e, "event.action"), Some("ssh_invalid_user"));
        assert!(!e.contains_key("user.name"));
        assert_eq!(s(&e, "source.ip"), Some("10.0.0.10"));

        let e = ev("Mar  3 10:00:05 web1 sshd[816]: error: PAM: Authentication failure for illegal user oracle from 198.51.100.3");
        assert_eq!(s(&e, "event.outcome"), Some("failure"));
        assert_eq!(s(&e, "user.name"), Some("oracle"));
        assert_eq!(s(&e, "source.ip"), Some("198.51.100.3"));

        let e = ev("Mar  3 10:00:04 web1 sshd[815]: Received disconnect from 10.0.0.12 port 5022:11: Bye Bye [preauth]");
        assert_eq!(e["source.port"], 5022);
        assert_eq!(s(&e, "source.ip"), Some("10.0.0.12"));

        let e = ev("Mar  3 10:00:04 web1 sshd[815]: Connection closed by authenticating user root 10.0.0.11 port 2 [preauth]");
        assert_eq!(s(&e, "event.action"), Some("ssh_disconnect"));
        assert_eq!(s(&e, "user.name"), Some("root"));
        assert_eq!(s(&e, "source.ip"), Some("10.0.0.11"));
    }

    #[test]
    fn sudo_su_and_pam() {
        let e = ev("Mar  3 10:01:00 web1 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/apt install -y x");
        assert_eq!(s(&e, "mamori.logsource.service"), Some("sudo"));
        assert_eq!(s(&e, "user.name"), Some("alice"));
        assert_eq!(s(&e, "user.effective.name"), Some("root"));
        assert_eq!(s(&e, "process.command_line"), Some("/usr/bin/apt install -y x"));
        assert_eq!(s(&e, "event.outcome"), Some("success"));
        let e = ev("Mar  3 10:01:01 web1 sudo:      bob : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/ ; USER=root ; COMMAND=/bin/sh");
        assert_eq!(s(&e, "event.outcome"), Some("failure"));
        let e = ev("Jun 15 02:04:59 combo sshd(pam_unix)[20882]: authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=220-135-151-1.hinet-ip.hinet.net  user=root");
        assert_eq!(s(&e, "source.domain"), Some("220-135-151-1.hinet-ip.hinet.net"));
        assert!(!e.contains_key("source.ip"));
        assert_eq!(s(&e, "user.name"), Some("root"));
        assert_eq!(s(&e, "event.outcome"), Some("failure"));
        let e = ev("Mar  3 10:01:02 web1 su(pam_unix)[9]: session opened for user news by (uid=0)");
        assert_eq!(s(&e, "event.action"), Some("session_open"));
        assert_eq!(s(&e, "user.name"), Some("news"));
        let e = ev("Mar  3 10:01:03 web1 CRON[7]: (root) CMD (true)");
        assert_eq!(s(&e, "mamori.input"), Some("authlog"));
        assert_eq!(s(&e, "mamori.logsource.service"), Some("auth"));
        assert!(!e.contains_key("event.outcome"));
    }
}
