//! Turns the manager's detections into messages for people and machines: decides who gets what
//! ([`Router`]) and delivers it ([`Dispatcher`]).
//!
//! The crate holds no process policy: it prints nothing, exits nothing and reads no global
//! configuration. The manager hands it [`Settings`] (JSON, checked by [`Settings::validate`]) and
//! [`Alert`]s, persists the router's state with [`Router::export_state`] /
//! [`Router::import_state`], and decides what to do with errors.
//!
//! * [`Router`] — pure and deterministic (time is an argument): per-severity [`Route`]s, a sliding
//!   throttle per (rule, host), the daily [`Digest`] of everything alerted or suppressed, and
//!   bounded state.
//! * [`Dispatcher`] — async delivery of one [`Delivery`]: mail over SMTP (STARTTLS, implicit TLS,
//!   or plaintext to a loopback relay only), chat webhooks (JSON, Slack, Microsoft Teams Workflows
//!   Adaptive Cards), and syslog (RFC 5424 carrying CEF over UDP, TCP or TLS). Failures come back
//!   as a [`DeliveryError`] a person can act on, and never contain the SMTP password.
//! * [`render`] and [`payload`] — the mail texts (Japanese or English), [`render_cef`], and the
//!   chat payload builders, public so they can be checked on their own.

mod dispatch;
pub mod payload;
pub mod render;
mod router;
mod settings;
mod smtp;
mod tls;

use mamori_proto::Severity;
use serde::{Deserialize, Serialize};

pub use dispatch::{DeliveryError, Dispatcher};
pub use payload::{
    cef_severity, json_payload, render_cef, slack_payload, syslog_frame, syslog_message, teams_payload,
};
pub use render::{Attachment, MailText};
pub use router::{
    Decision, Delivery, Digest, DigestGroup, HostCount, Router, RouterState, MAX_DIGEST_GROUPS,
    MAX_HOSTS_PER_GROUP, MAX_THROTTLE_KEYS,
};
pub use settings::{
    DigestSettings, Lang, Route, Settings, SmtpSecurity, SmtpSettings, SyslogTarget, SyslogTransport,
    Throttle, Webhook, WebhookFormat,
};

/// One thing worth telling a person about, as the manager hands it over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// The manager's id for the alert (shown in messages so people can find it in the console).
    pub id: String,
    /// When the detection happened, milliseconds since the Unix epoch (UTC).
    pub time_ms: i64,
    pub severity: Severity,
    pub title: String,
    /// The detection rule (Sigma id, YARA rule, ...); throttling counts per (rule, host).
    pub rule_id: String,
    /// The affected machine, when there is one.
    #[serde(default)]
    pub host: Option<String>,
    /// What found it (`sigma`, `malware`, `ransomware`, ...).
    pub source: String,
    /// A few lines for a person: what happened and where.
    pub summary: String,
    /// A link to the alert in the manager's console.
    #[serde(default)]
    pub console_url: Option<String>,
}

/// Maps a Sigma rule's `level` to an alert severity.
///
/// `informational` gives `None`: such detections are never alerted on their own, only counted in
/// the digest (see [`Router::note_for_digest`]). Anything that is not a Sigma level also gives
/// `None`; the rule parser is the place that rejects those.
pub fn severity_from_level(level: &str) -> Option<Severity> {
    match level.trim().to_ascii_lowercase().as_str() {
        "low" => Some(Severity::Low),
        "medium" => Some(Severity::Medium),
        "high" => Some(Severity::High),
        "critical" => Some(Severity::Critical),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigma_levels_map_to_severities() {
        assert_eq!(severity_from_level("informational"), None);
        assert_eq!(severity_from_level("low"), Some(Severity::Low));
        assert_eq!(severity_from_level(" High "), Some(Severity::High));
        assert_eq!(severity_from_level("critical"), Some(Severity::Critical));
        assert_eq!(severity_from_level("medium"), Some(Severity::Medium));
        assert_eq!(severity_from_level("severe"), None);
    }
}
