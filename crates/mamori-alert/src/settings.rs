//! What the manager configures: mail relay, webhooks, syslog targets, routes, throttle, digest and
//! language. JSON with defaults; [`Settings::validate`] lists every problem at once.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use mamori_proto::Severity;
use serde::{Deserialize, Serialize, Serializer};

/// Everything the alerting needs to know. Every field has a default, so `{}` is valid (and
/// alerts nobody).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub smtp: Option<SmtpSettings>,
    pub webhooks: Vec<Webhook>,
    pub syslog: Vec<SyslogTarget>,
    pub routes: Vec<Route>,
    pub throttle: Throttle,
    pub digest: DigestSettings,
    pub lang: Lang,
}

/// The mail relay. Serializing never writes the password, only `password_set`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "SmtpSettingsInput")]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The sender, `alerts@example.jp` or `mamori <alerts@example.jp>`.
    pub from: String,
    /// An extra trust anchor (PEM) for a site's own relay, on top of the system roots.
    pub ca_file: Option<PathBuf>,
    /// For each step of the conversation (connect, TLS, each command).
    pub timeout_s: u64,
}

/// How the mail relay's connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS before anything else (port 587: Microsoft 365,
    /// Gmail). A server that does not offer STARTTLS is an error, never a plaintext fallback.
    #[default]
    Starttls,
    /// TLS from the first byte (port 465: Gmail).
    Tls,
    /// No encryption: only to a relay on this machine (loopback), and never with AUTH.
    None,
}

impl SmtpSecurity {
    pub fn default_port(self) -> u16 {
        match self {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        }
    }
}

/// What is accepted on input: the port defaults by security, and `password_set` (written by
/// [`Settings::redacted`]) is accepted and ignored so that a settings page can post the redacted
/// JSON back.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SmtpSettingsInput {
    host: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    security: SmtpSecurity,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    from: String,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default = "default_timeout_s")]
    timeout_s: u64,
    #[serde(default, rename = "password_set")]
    _password_set: Option<bool>,
}

fn default_timeout_s() -> u64 {
    30
}

impl From<SmtpSettingsInput> for SmtpSettings {
    fn from(input: SmtpSettingsInput) -> Self {
        SmtpSettings {
            port: input.port.unwrap_or(input.security.default_port()),
            host: input.host,
            security: input.security,
            username: input.username,
            password: input.password,
            from: input.from,
            ca_file: input.ca_file,
            timeout_s: input.timeout_s,
        }
    }
}

impl Serialize for SmtpSettings {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            host: &'a str,
            port: u16,
            security: SmtpSecurity,
            username: &'a Option<String>,
            password_set: bool,
            from: &'a str,
            ca_file: &'a Option<PathBuf>,
            timeout_s: u64,
        }
        Out {
            host: &self.host,
            port: self.port,
            security: self.security,
            username: &self.username,
            password_set: self.password.is_some(),
            from: &self.from,
            ca_file: &self.ca_file,
            timeout_s: self.timeout_s,
        }
        .serialize(serializer)
    }
}

// Settings end up in `{:?}` of error reports and traces; the password must not.
impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .field("ca_file", &self.ca_file)
            .field("timeout_s", &self.timeout_s)
            .finish()
    }
}

/// A chat or HTTP endpoint that receives a POST per alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// What routes call it.
    pub name: String,
    /// https (http only to loopback). The URL is often the secret itself (Slack, Teams), so
    /// errors name the host only.
    pub url: String,
    #[serde(default)]
    pub format: WebhookFormat,
    /// An extra trust anchor (PEM) on top of the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// [`crate::json_payload`]: the alert itself, for scripts and ticket systems.
    #[default]
    Json,
    /// [`crate::slack_payload`]: Slack incoming webhooks.
    Slack,
    /// [`crate::teams_payload`]: Microsoft Teams "Workflows" webhooks (Adaptive Card).
    Teams,
}

/// A syslog collector or SIEM that receives CEF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogTarget {
    pub name: String,
    /// `host:port` (`[v6]:port` for IPv6 literals).
    pub address: String,
    #[serde(default)]
    pub transport: SyslogTransport,
    /// An extra trust anchor (PEM) for `tls`, on top of the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SyslogTransport {
    /// RFC 5426: one datagram per message.
    #[default]
    Udp,
    /// RFC 6587 octet counting.
    Tcp,
    /// RFC 5425: octet counting inside TLS.
    Tls,
}

/// Who hears about alerts of `min_severity` or above. Every matching route applies; the targets
/// of all of them are merged (each recipient and target once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub min_severity: Severity,
    /// Mail recipients.
    #[serde(default)]
    pub email: Vec<String>,
    /// [`Webhook::name`]s.
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// [`SyslogTarget::name`]s.
    #[serde(default)]
    pub syslog: Vec<String>,
}

/// At most `max_per_window` alerts per (rule, host) in any `window_s` seconds; the rest are
/// counted and reported in the digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Throttle {
    pub window_s: u64,
    pub max_per_window: u32,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle { window_s: 3600, max_per_window: 5 }
    }
}

/// The daily summary mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DigestSettings {
    pub enabled: bool,
    /// The local hour (0-23) at which it is due.
    pub hour_local: u8,
    /// The local time zone as an offset from UTC; also used for the times shown in messages.
    /// Default +540 (Japan, which has no daylight saving time).
    pub utc_offset_minutes: i32,
    pub email: Vec<String>,
}

impl Default for DigestSettings {
    fn default() -> Self {
        DigestSettings { enabled: false, hour_local: 8, utc_offset_minutes: 540, email: Vec::new() }
    }
}

/// The language of mail and chat texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    Ja,
    En,
}

/// UTC-12:00 to UTC+14:00, the range of offsets in use.
const UTC_OFFSET_RANGE_MINUTES: std::ops::RangeInclusive<i32> = -720..=840;

impl Settings {
    /// Every problem in the settings, each a sentence naming the field. Pure: the CA files are
    /// read by the [`crate::Dispatcher`], which reports them on delivery.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if let Some(smtp) = &self.smtp {
            smtp.check(&mut problems);
        }
        check_unique_names("webhooks", self.webhooks.iter().map(|w| w.name.as_str()), &mut problems);
        for (i, hook) in self.webhooks.iter().enumerate() {
            hook.check(&format!("webhooks[{i}] ({:?})", hook.name), &mut problems);
        }
        check_unique_names("syslog", self.syslog.iter().map(|s| s.name.as_str()), &mut problems);
        for (i, target) in self.syslog.iter().enumerate() {
            target.check(&format!("syslog[{i}] ({:?})", target.name), &mut problems);
        }
        for (i, route) in self.routes.iter().enumerate() {
            self.check_route(i, route, &mut problems);
        }
        if self.throttle.window_s == 0 {
            problems.push("throttle.window_s: must be at least 1 second".into());
        }
        if self.throttle.max_per_window == 0 {
            problems.push("throttle.max_per_window: must be at least 1 (0 would silence every alert)".into());
        }
        self.check_digest(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The settings as JSON for showing or returning over an API: the SMTP password is replaced
    /// by `"password_set": true|false`. (Plain serialization does the same: the password is
    /// never serialized.)
    pub fn redacted(&self) -> serde_json::Value {
        // Serializing plain data into a Value cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    fn check_route(&self, i: usize, route: &Route, problems: &mut Vec<String>) {
        let at = format!("routes[{i}]");
        if route.email.is_empty() && route.webhooks.is_empty() && route.syslog.is_empty() {
            problems.push(format!("{at}: names no recipient, webhook or syslog target"));
        }
        if !route.email.is_empty() && self.smtp.is_none() {
            problems.push(format!("{at}.email: mail recipients need the smtp settings"));
        }
        for address in &route.email {
            if let Err(why) = check_address(address) {
                problems.push(format!("{at}.email: {address:?} {why}"));
            }
        }
        for name in &route.webhooks {
            if !self.webhooks.iter().any(|w| &w.name == name) {
                problems.push(format!("{at}.webhooks: no webhook is named {name:?}"));
            }
        }
        for name in &route.syslog {
            if !self.syslog.iter().any(|s| &s.name == name) {
                problems.push(format!("{at}.syslog: no syslog target is named {name:?}"));
            }
        }
    }

    fn check_digest(&self, problems: &mut Vec<String>) {
        let digest = &self.digest;
        if digest.hour_local > 23 {
            problems.push(format!("digest.hour_local: {} is not an hour (0-23)", digest.hour_local));
        }
        if !UTC_OFFSET_RANGE_MINUTES.contains(&digest.utc_offset_minutes) {
            problems.push(format!(
                "digest.utc_offset_minutes: {} is outside -720..=840 (UTC-12:00 to UTC+14:00)",
                digest.utc_offset_minutes
            ));
        }
        for address in &digest.email {
            if let Err(why) = check_address(address) {
                problems.push(format!("digest.email: {address:?} {why}"));
            }
        }
        if digest.enabled {
            if digest.email.is_empty() {
                problems.push("digest.email: the digest is enabled but has no recipient".into());
            }
            if self.smtp.is_none() {
                problems.push("digest: the digest is mail and needs the smtp settings".into());
            }
        }
    }
}

impl SmtpSettings {
    fn check(&self, problems: &mut Vec<String>) {
        if self.host.trim().is_empty() || self.host.contains(char::is_whitespace) {
            problems.push(format!("smtp.host: {:?} is not a host name", self.host));
        }
        if self.port == 0 {
            problems.push("smtp.port: 0 is not a port".into());
        }
        // The two common mix-ups hang or fail with an obscure TLS error; say so now.
        match (self.security, self.port) {
            (SmtpSecurity::Tls, 587) => problems
                .push("smtp.security: port 587 expects \"starttls\" (implicit \"tls\" is port 465)".into()),
            (SmtpSecurity::Starttls, 465) => problems
                .push("smtp.security: port 465 expects implicit \"tls\" (\"starttls\" is port 587)".into()),
            _ => {}
        }
        if self.security == SmtpSecurity::None {
            if !is_loopback_host(&self.host) {
                problems.push(format!(
                    "smtp.security: \"none\" (plaintext) is allowed only to a relay on this machine \
                     (localhost, 127.0.0.1, ::1), not {:?}",
                    self.host
                ));
            }
            if self.username.is_some() || self.password.is_some() {
                problems.push(
                    "smtp.username: AUTH over plaintext is refused: use \"starttls\" or \"tls\", or \
                     remove the username and password"
                        .into(),
                );
            }
        }
        if self.password.is_some() && self.username.is_none() {
            problems.push("smtp.password: a password without a username is never used".into());
        }
        if self.username.is_some() && self.password.is_none() {
            problems.push("smtp.password: the username has no password".into());
        }
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            problems.push(format!(
                "smtp.from: {:?} is not a mail address (user@example.jp or Name <user@example.jp>)",
                self.from
            ));
        }
        if !(1..=300).contains(&self.timeout_s) {
            problems.push(format!("smtp.timeout_s: {} is outside 1..=300 seconds", self.timeout_s));
        }
    }
}

impl Webhook {
    fn check(&self, at: &str, problems: &mut Vec<String>) {
        if self.name.trim().is_empty() {
            problems.push(format!("{at}.name: empty"));
        }
        match reqwest::Url::parse(&self.url) {
            Err(e) => problems.push(format!("{at}.url: not a URL ({e})")),
            Ok(url) => {
                let host = url.host_str().unwrap_or_default();
                match url.scheme() {
                    "https" => {}
                    "http" if is_loopback_host(host) => {}
                    "http" => problems
                        .push(format!("{at}.url: http is allowed only to loopback; use https for {host:?}")),
                    other => problems.push(format!("{at}.url: scheme {other:?} is not https")),
                }
                if host.is_empty() {
                    problems.push(format!("{at}.url: has no host"));
                }
            }
        }
    }
}

impl SyslogTarget {
    fn check(&self, at: &str, problems: &mut Vec<String>) {
        if self.name.trim().is_empty() {
            problems.push(format!("{at}.name: empty"));
        }
        if split_host_port(&self.address).is_none() {
            problems.push(format!(
                "{at}.address: {:?} is not host:port (e.g. siem.example.jp:514, [::1]:6514)",
                self.address
            ));
        }
        if self.ca_file.is_some() && self.transport != SyslogTransport::Tls {
            problems.push(format!("{at}.ca_file: only used with transport \"tls\""));
        }
    }
}

fn check_unique_names<'a>(what: &str, names: impl Iterator<Item = &'a str>, problems: &mut Vec<String>) {
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        if !seen.insert(name) {
            problems.push(format!("{what}: the name {name:?} is used twice"));
        }
    }
}

fn check_address(address: &str) -> Result<(), &'static str> {
    address.parse::<lettre::Address>().map(|_| ()).map_err(|_| "is not a mail address")
}

/// `localhost`, 127.0.0.0/8 or ::1 (brackets allowed).
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Splits `host:port` or `[v6]:port`; the host comes back without brackets.
pub(crate) fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, port) = rest.split_once("]:")?;
        (host, port)
    } else {
        let (host, port) = address.rsplit_once(':')?;
        if host.contains(':') {
            // An unbracketed IPv6 literal: its last group would be read as the port.
            return None;
        }
        (host, port)
    };
    let port: u16 = port.parse().ok()?;
    if host.is_empty() || port == 0 || host.contains(char::is_whitespace) {
        return None;
    }
    Some((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn office365() -> serde_json::Value {
        serde_json::json!({
            "host": "smtp.office365.com", "security": "starttls",
            "username": "alerts@hospital.example.jp", "password": "s3cret-Pa55",
            "from": "mamori <alerts@hospital.example.jp>"
        })
    }

    #[test]
    fn empty_settings_are_valid_with_the_documented_defaults() {
        let settings: Settings = serde_json::from_str("{}").unwrap();
        assert_eq!(settings.validate(), Ok(()));
        assert_eq!(settings.throttle, Throttle { window_s: 3600, max_per_window: 5 });
        assert_eq!(settings.digest.utc_offset_minutes, 540);
        assert_eq!(settings.lang, Lang::Ja);
    }

    #[test]
    fn microsoft_365_and_gmail_settings_are_valid() {
        let m365: SmtpSettings = serde_json::from_value(office365()).unwrap();
        assert_eq!(m365.port, 587);
        let gmail: SmtpSettings = serde_json::from_value(serde_json::json!({
            "host": "smtp.gmail.com", "security": "tls", "username": "it@gmail.com",
            "password": "abcd efgh ijkl mnop", "from": "it@gmail.com"
        }))
        .unwrap();
        assert_eq!(gmail.port, 465);
        for smtp in [m365, gmail] {
            let settings = Settings { smtp: Some(smtp), ..Settings::default() };
            assert_eq!(settings.validate(), Ok(()));
        }
    }

    #[test]
    fn the_password_is_never_serialized_and_redacted_json_reads_back() {
        let smtp: SmtpSettings = serde_json::from_value(office365()).unwrap();
        let settings = Settings { smtp: Some(smtp.clone()), ..Settings::default() };
        let text = serde_json::to_string(&settings).unwrap();
        assert!(!text.contains("s3cret-Pa55"), "{text}");
        assert!(!format!("{settings:?}").contains("s3cret-Pa55"));
        let redacted = settings.redacted();
        assert_eq!(redacted["smtp"]["password_set"], true);
        assert!(redacted["smtp"].get("password").is_none());
        let back: Settings = serde_json::from_value(redacted).unwrap();
        let back_smtp = back.smtp.unwrap();
        assert_eq!(back_smtp.password, None);
        assert_eq!(back_smtp.host, smtp.host);
    }

    #[test]
    fn every_problem_is_reported() {
        let settings: Settings = serde_json::from_value(serde_json::json!({
            "smtp": {"host": "mail.example.jp", "port": 25, "security": "none",
                     "username": "u", "password": "p", "from": "not an address"},
            "webhooks": [
                {"name": "a", "url": "http://chat.example.jp/hook"},
                {"name": "a", "url": "https://chat.example.jp/hook"}
            ],
            "syslog": [{"name": "siem", "address": "siem.example.jp", "transport": "udp", "ca_file": "/x.pem"}],
            "routes": [{"min_severity": "high", "email": ["nobody"], "webhooks": ["b"], "syslog": ["nope"]},
                       {"min_severity": "low"}],
            "throttle": {"window_s": 0, "max_per_window": 0},
            "digest": {"enabled": true, "hour_local": 24, "utc_offset_minutes": 900}
        }))
        .unwrap();
        let problems = settings.validate().unwrap_err();
        let expected = [
            "smtp.security: \"none\" (plaintext) is allowed only",
            "smtp.username: AUTH over plaintext is refused",
            "smtp.from:",
            "webhooks: the name \"a\" is used twice",
            "webhooks[0] (\"a\").url: http is allowed only to loopback",
            "syslog[0] (\"siem\").address:",
            "syslog[0] (\"siem\").ca_file:",
            "routes[0].email: \"nobody\"",
            "routes[0].webhooks: no webhook is named \"b\"",
            "routes[0].syslog: no syslog target is named \"nope\"",
            "routes[1]: names no recipient",
            "throttle.window_s",
            "throttle.max_per_window",
            "digest.hour_local",
            "digest.utc_offset_minutes",
            "digest.email: the digest is enabled but has no recipient",
        ];
        for prefix in expected {
            assert!(problems.iter().any(|p| p.starts_with(prefix)), "missing {prefix:?} in {problems:#?}");
        }
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    }

    #[test]
    fn plaintext_is_allowed_to_a_loopback_relay_without_auth() {
        let settings: Settings = serde_json::from_value(serde_json::json!({
            "smtp": {"host": "127.0.0.1", "security": "none", "from": "mamori@localhost.localdomain"},
            "webhooks": [{"name": "local", "url": "http://[::1]:8080/hook"}]
        }))
        .unwrap();
        assert_eq!(settings.validate(), Ok(()));
        assert_eq!(settings.smtp.unwrap().port, 25);
    }

    #[test]
    fn typos_in_field_names_are_errors() {
        let err = serde_json::from_str::<Settings>(r#"{"throttle": {"window": 60}}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `window`"), "{err}");
        let err = serde_json::from_value::<SmtpSettings>(serde_json::json!({
            "host": "h", "from": "a@b.jp", "pasword": "x"
        }))
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `pasword`"), "{err}");
    }

    #[test]
    fn host_port_splitting() {
        assert_eq!(split_host_port("siem.example.jp:514"), Some(("siem.example.jp".into(), 514)));
        assert_eq!(split_host_port("[::1]:6514"), Some(("::1".into(), 6514)));
        assert_eq!(split_host_port("::1:514"), None);
        assert_eq!(split_host_port("host:0"), None);
        assert_eq!(split_host_port("host"), None);
        assert!(is_loopback_host("127.0.0.2") && is_loopback_host("[::1]") && is_loopback_host("LOCALHOST"));
        assert!(!is_loopback_host("10.0.0.1") && !is_loopback_host("localhost.example.jp"));
    }
}
