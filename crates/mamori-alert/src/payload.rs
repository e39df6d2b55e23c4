//! What goes on the wire besides mail: CEF in RFC 5424 syslog, and the webhook bodies (plain
//! JSON, Slack Block Kit, Microsoft Teams Adaptive Card).

use mamori_proto::Severity;
use serde_json::{json, Value};
use time::macros::format_description;
use time::OffsetDateTime;

use crate::render::{chat_headline, field_labels, format_time, one_line, source_label};
use crate::settings::Lang;
use crate::Alert;

/// ArcSight's limits for the Name header and the `msg` extension.
const CEF_MAX_NAME_CHARS: usize = 512;
const CEF_MAX_MSG_CHARS: usize = 1023;
/// Slack refuses a header over 150 characters and a section text over 3000.
const SLACK_MAX_HEADER_CHARS: usize = 150;
const SLACK_MAX_TEXT_CHARS: usize = 3000;
/// Kept well under the Teams message size limit (28 KB).
const TEAMS_MAX_TEXT_CHARS: usize = 4000;
/// Syslog facility `auth` (4), as the vault's security events use.
const SYSLOG_FACILITY: u8 = 4;

/// CEF severity 0-10: Low 3, Medium 5, High 8, Critical 10 (ArcSight's bands: 0-3 low, 4-6
/// medium, 7-8 high, 9-10 very high).
pub fn cef_severity(severity: Severity) -> u8 {
    match severity {
        Severity::Low => 3,
        Severity::Medium => 5,
        Severity::High => 8,
        Severity::Critical => 10,
    }
}

/// `CEF:0|mamori|mamori|<version>|<rule_id>|<title>|<severity>|<extensions>`, one line.
///
/// Extensions: `rt` (detection time, ms since the epoch), `externalId` (alert id), `dhost`
/// (affected host), `cat` (source), `msg` (summary), `cs1`/`cs1Label=consoleUrl`.
pub fn render_cef(alert: &Alert) -> String {
    let mut out = format!(
        "CEF:0|mamori|mamori|{}|{}|{}|{}|rt={} externalId={}",
        cef_header(env!("CARGO_PKG_VERSION")),
        cef_header(&alert.rule_id),
        cef_header(&truncate(&alert.title, CEF_MAX_NAME_CHARS)),
        cef_severity(alert.severity),
        alert.time_ms,
        cef_value(&alert.id),
    );
    if let Some(host) = &alert.host {
        out.push_str(&format!(" dhost={}", cef_value(host)));
    }
    out.push_str(&format!(" cat={}", cef_value(&alert.source)));
    out.push_str(&format!(" msg={}", cef_value(&truncate(&alert.summary, CEF_MAX_MSG_CHARS))));
    if let Some(url) = &alert.console_url {
        out.push_str(&format!(" cs1Label=consoleUrl cs1={}", cef_value(url)));
    }
    out
}

/// A CEF header field: `\` and `|` escaped; line breaks are not allowed there and become spaces.
fn cef_header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A CEF extension value: `\`, `=` escaped, line breaks as `\n` / `\r`.
fn cef_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\r' if chars.peek() == Some(&'\n') => {
                chars.next();
                out.push_str("\\n");
            }
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The RFC 5424 message carrying [`render_cef`]:
/// `<PRI>1 TIMESTAMP HOSTNAME mamori - alert - CEF:0|...`. `hostname` is the sender (the
/// manager); the affected host is `dhost` inside the CEF.
pub fn syslog_message(alert: &Alert, hostname: &str) -> String {
    let level: u8 = match alert.severity {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
    };
    let pri = SYSLOG_FACILITY * 8 + level;
    format!(
        "<{pri}>1 {} {} mamori - alert - {}",
        rfc3339_utc(alert.time_ms),
        header_token(hostname),
        render_cef(alert)
    )
}

/// RFC 6587 / RFC 5425 octet counting: `<length in bytes> <message>`.
pub fn syslog_frame(message: &str) -> Vec<u8> {
    let mut framed = format!("{} ", message.len()).into_bytes();
    framed.extend_from_slice(message.as_bytes());
    framed
}

/// An RFC 5424 header field: printable US-ASCII without spaces, at most 255, `-` when empty.
fn header_token(s: &str) -> String {
    let token: String = s.chars().filter(|c| c.is_ascii_graphic()).take(255).collect();
    if token.is_empty() {
        "-".into()
    } else {
        token
    }
}

fn rfc3339_utc(time_ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(time_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| "-".into())
}

/// For scripts and ticket systems: `{"type": "mamori.alert", "version": 1, "text": <headline>,
/// "time": <RFC 3339 UTC>, "alert": <the Alert as serialized>}`.
pub fn json_payload(alert: &Alert, lang: Lang) -> Value {
    json!({
        "type": "mamori.alert",
        "version": 1,
        "text": chat_headline(alert, lang),
        "time": rfc3339_utc(alert.time_ms),
        "alert": alert,
    })
}

/// A Slack incoming-webhook message: `text` (the notification line) and Block Kit blocks: a
/// header, the summary, the fields, and a button to the console when there is a link.
pub fn slack_payload(alert: &Alert, lang: Lang, utc_offset_minutes: i32) -> Value {
    let labels = field_labels(lang);
    let headline = chat_headline(alert, lang);
    let host = alert.host.as_deref().map(one_line).unwrap_or_else(|| labels.unknown_host.to_string());
    let field = |label: &str, value: &str| json!({"type": "mrkdwn", "text": format!("*{}*\n{}", label, slack_escape(value))});
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&headline, SLACK_MAX_HEADER_CHARS)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": slack_escape(&truncate(&alert.summary, SLACK_MAX_TEXT_CHARS - 100))}}),
        json!({"type": "section", "fields": [
            field(labels.host, &host),
            field(labels.time, &format_time(alert.time_ms, utc_offset_minutes)),
            field(labels.rule, &alert.rule_id),
            field(labels.source, &source_label(&alert.source, lang)),
        ]}),
    ];
    if let Some(url) = &alert.console_url {
        blocks.push(json!({"type": "actions", "elements": [{
            "type": "button",
            "text": {"type": "plain_text", "text": labels.open},
            "url": url,
        }]}));
    }
    json!({"text": slack_escape(&headline), "blocks": blocks})
}

/// Slack mrkdwn treats `&`, `<`, `>` as markup; everything else is shown as is.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A Microsoft Teams message for today's "Workflows" webhooks ("When a Teams webhook request is
/// received" / "Post to a channel when a webhook request is received"): an Adaptive Card 1.4 in
/// a `message` attachment. Workflows accept Adaptive Cards only (not the old connectors'
/// MessageCard); the same body also works with the retiring Office 365 connector webhooks.
pub fn teams_payload(alert: &Alert, lang: Lang, utc_offset_minutes: i32) -> Value {
    let labels = field_labels(lang);
    let host = alert.host.as_deref().map(one_line).unwrap_or_else(|| labels.unknown_host.to_string());
    let color = match alert.severity {
        Severity::Critical | Severity::High => "Attention",
        Severity::Medium => "Warning",
        Severity::Low => "Default",
    };
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": [
            {"type": "TextBlock", "text": chat_headline(alert, lang), "weight": "Bolder", "size": "Medium",
             "color": color, "wrap": true},
            {"type": "TextBlock", "text": truncate(&alert.summary, TEAMS_MAX_TEXT_CHARS), "wrap": true},
            {"type": "FactSet", "facts": [
                {"title": labels.host, "value": host},
                {"title": labels.time, "value": format_time(alert.time_ms, utc_offset_minutes)},
                {"title": labels.rule, "value": alert.rule_id},
                {"title": labels.source, "value": source_label(&alert.source, lang)},
            ]},
        ],
    });
    if let Some(url) = &alert.console_url {
        card["actions"] = json!([{"type": "Action.OpenUrl", "title": labels.open, "url": url}]);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    })
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max_chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert {
            id: "a=1".into(),
            time_ms: 1_748_736_000_123,
            severity: Severity::High,
            title: "Pipe | and back\\slash\nnewline".into(),
            rule_id: "rule|1".into(),
            host: Some("pc=01".into()),
            source: "sigma".into(),
            summary: "line1\r\nline2\nkey=value \\ end\r".into(),
            console_url: None,
        }
    }

    #[test]
    fn cef_escapes_headers_and_extensions() {
        let cef = render_cef(&alert());
        let expected = format!(
            "CEF:0|mamori|mamori|{}|rule\\|1|Pipe \\| and back\\\\slash newline|8|rt=1748736000123 externalId=a\\=1 \
             dhost=pc\\=01 cat=sigma msg=line1\\nline2\\nkey\\=value \\\\ end\\r",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(cef, expected);
        assert!(!cef.contains('\n') && !cef.contains('\r'));
    }

    #[test]
    fn syslog_header_and_octet_counting() {
        let msg = syslog_message(&alert(), "mamori manager");
        assert!(
            msg.starts_with("<35>1 2025-06-01T00:00:00.123Z mamorimanager mamori - alert - CEF:0|"),
            "{msg}"
        );
        let framed = syslog_frame("héllo");
        assert_eq!(framed, b"6 h\xc3\xa9llo");
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("あいうえお", 3), "あい…");
        assert_eq!(truncate("あいう", 3), "あいう");
    }

    #[test]
    fn slack_escapes_markup() {
        let mut a = alert();
        a.summary = "<script> & <@channel>".into();
        let payload = slack_payload(&a, Lang::En, 0);
        assert_eq!(payload["blocks"][1]["text"]["text"], "&lt;script&gt; &amp; &lt;@channel&gt;");
    }
}
