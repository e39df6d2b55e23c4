//! The words people read: mail subjects and bodies for alerts and the digest, and the one-line
//! chat texts, in Japanese or English. Times are shown in the configured UTC offset.

use std::fmt::Write as _;

use mamori_proto::Severity;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

use crate::router::{Digest, DigestGroup};
use crate::settings::Lang;
use crate::Alert;

/// Subjects longer than this are cut (with "…"): mail clients show little more.
const MAX_SUBJECT_CHARS: usize = 160;

/// A mail's subject (plain text; encoded on sending) and text/plain body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailText {
    pub subject: String,
    pub body: String,
    /// Files sent along (the monthly report's PDF); none for alerts and digests.
    pub attachments: Vec<Attachment>,
}

/// A file attached to a mail.
#[derive(Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The name the recipient sees (UTF-8 is fine: it is encoded on sending).
    pub filename: String,
    /// `application/pdf`, ...
    pub content_type: String,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Attachment({}, {}, {} bytes)", self.filename, self.content_type, self.bytes.len())
    }
}

/// `重大`/`高`/`中`/`低`/`情報` or `Critical`/`High`/`Medium`/`Low`/`Informational` (`None`).
pub fn severity_label(severity: Option<Severity>, lang: Lang) -> &'static str {
    match (lang, severity) {
        (Lang::Ja, Some(Severity::Critical)) => "重大",
        (Lang::Ja, Some(Severity::High)) => "高",
        (Lang::Ja, Some(Severity::Medium)) => "中",
        (Lang::Ja, Some(Severity::Low)) => "低",
        (Lang::Ja, None) => "情報",
        (Lang::En, Some(Severity::Critical)) => "Critical",
        (Lang::En, Some(Severity::High)) => "High",
        (Lang::En, Some(Severity::Medium)) => "Medium",
        (Lang::En, Some(Severity::Low)) => "Low",
        (Lang::En, None) => "Informational",
    }
}

/// `2025-06-01 09:00:00 (UTC+09:00)`.
pub fn format_time(time_ms: i64, utc_offset_minutes: i32) -> String {
    let offset = utc_offset(utc_offset_minutes);
    let Some(local) = local_time(time_ms, offset) else {
        return format!("{time_ms} ms");
    };
    let shown = local
        .format(format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"))
        .unwrap_or_else(|_| time_ms.to_string());
    format!("{shown} ({})", offset_label(offset))
}

/// `[mamori] 重大: <title> (<host>)`.
pub fn alert_subject(alert: &Alert, lang: Lang) -> String {
    let label = severity_label(Some(alert.severity), lang);
    let title = one_line(&alert.title);
    let subject = match &alert.host {
        Some(host) => format!("[mamori] {label}: {title} ({})", one_line(host)),
        None => format!("[mamori] {label}: {title}"),
    };
    cut_subject(subject)
}

/// The mail for one alert.
pub fn alert_mail(alert: &Alert, lang: Lang, utc_offset_minutes: i32) -> MailText {
    let severity = severity_label(Some(alert.severity), lang);
    let time = format_time(alert.time_ms, utc_offset_minutes);
    let source = source_label(&alert.source, lang);
    let mut body = String::new();
    match lang {
        Lang::Ja => {
            let host = alert.host.as_deref().unwrap_or("(不明)");
            let _ = writeln!(body, "mamori がセキュリティ上の警告を検知しました。\n");
            let _ = writeln!(body, "重要度: {severity}");
            let _ = writeln!(body, "内容: {}", one_line(&alert.title));
            let _ = writeln!(body, "対象ホスト: {host}");
            let _ = writeln!(body, "発生日時: {time}");
            let _ = writeln!(body, "検知ルール: {}", alert.rule_id);
            let _ = writeln!(body, "検知元: {source}");
            let _ = writeln!(body, "警告ID: {}", alert.id);
            let _ = writeln!(body, "\n概要:\n{}", alert.summary.trim_end());
            if let Some(url) = &alert.console_url {
                let _ = writeln!(body, "\n管理画面で詳細を確認してください:\n{url}");
            }
            let _ = writeln!(body, "\n-- \nこのメールは mamori から自動送信されています。");
        }
        Lang::En => {
            let host = alert.host.as_deref().unwrap_or("(unknown)");
            let _ = writeln!(body, "mamori detected a security alert.\n");
            let _ = writeln!(body, "Severity: {severity}");
            let _ = writeln!(body, "What: {}", one_line(&alert.title));
            let _ = writeln!(body, "Host: {host}");
            let _ = writeln!(body, "When: {time}");
            let _ = writeln!(body, "Rule: {}", alert.rule_id);
            let _ = writeln!(body, "Detected by: {source}");
            let _ = writeln!(body, "Alert id: {}", alert.id);
            let _ = writeln!(body, "\nSummary:\n{}", alert.summary.trim_end());
            if let Some(url) = &alert.console_url {
                let _ = writeln!(body, "\nDetails in the console:\n{url}");
            }
            let _ = writeln!(body, "\n-- \nThis mail was sent automatically by mamori.");
        }
    }
    MailText { subject: alert_subject(alert, lang), body, attachments: Vec::new() }
}

/// One line for chat: `[重大] <title> (<host>)`.
pub fn chat_headline(alert: &Alert, lang: Lang) -> String {
    let label = severity_label(Some(alert.severity), lang);
    match &alert.host {
        Some(host) => format!("[{label}] {} ({})", one_line(&alert.title), one_line(host)),
        None => format!("[{label}] {}", one_line(&alert.title)),
    }
}

/// The labels of the alert's fields, for chat cards: (host, time, rule, source, open-in-console).
pub(crate) struct FieldLabels {
    pub host: &'static str,
    pub time: &'static str,
    pub rule: &'static str,
    pub source: &'static str,
    pub open: &'static str,
    pub unknown_host: &'static str,
}

pub(crate) fn field_labels(lang: Lang) -> FieldLabels {
    match lang {
        Lang::Ja => FieldLabels {
            host: "対象ホスト",
            time: "発生日時",
            rule: "検知ルール",
            source: "検知元",
            open: "管理画面で開く",
            unknown_host: "(不明)",
        },
        Lang::En => FieldLabels {
            host: "Host",
            time: "When",
            rule: "Rule",
            source: "Detected by",
            open: "Open in console",
            unknown_host: "(unknown)",
        },
    }
}

/// `ログ検知 (Sigma)` for `sigma`, and so on; unknown sources as they are.
pub fn source_label(source: &str, lang: Lang) -> String {
    let known = match (lang, source) {
        (Lang::Ja, "sigma") => "ログ検知 (Sigma)",
        (Lang::Ja, "malware") => "マルウェア検査",
        (Lang::Ja, "ransomware") => "ランサムウェア挙動検知",
        (Lang::Ja, "fim") => "ファイル改ざん検知",
        (Lang::En, "sigma") => "log detection (Sigma)",
        (Lang::En, "malware") => "malware scan",
        (Lang::En, "ransomware") => "ransomware behaviour",
        (Lang::En, "fim") => "file integrity monitoring",
        _ => return one_line(source),
    };
    known.to_string()
}

/// The daily digest mail.
pub fn digest_mail(digest: &Digest) -> MailText {
    let lang = digest.lang;
    let offset = utc_offset(digest.utc_offset_minutes);
    let day = local_time(digest.to_ms, offset)
        .and_then(|t| t.format(format_description!("[year]-[month]-[day]")).ok())
        .unwrap_or_default();
    let total = digest.total();
    let suppressed = digest.suppressed();
    let sent: u64 = digest.groups.iter().map(|g| g.sent).sum();
    let not_routed: u64 = digest.groups.iter().map(|g| g.not_routed).sum();
    let period = format!(
        "{} - {}",
        short_time(digest.from_ms, offset, true),
        format_time(digest.to_ms, digest.utc_offset_minutes)
    );
    let mut body = String::new();
    let subject = match lang {
        Lang::Ja => {
            let _ = writeln!(body, "mamori 日次ダイジェスト\n");
            let _ = writeln!(body, "対象期間: {period}");
            let _ = writeln!(
                body,
                "合計: {total} 件 (個別に通知 {sent} 件 / 抑制 {suppressed} 件 / 通知対象外 {not_routed} 件)"
            );
            if total == 0 {
                let _ = writeln!(body, "\nこの期間に警告はありませんでした。");
            }
            if total == 0 {
                format!("[mamori] 日次ダイジェスト {day}: 警告はありません")
            } else if suppressed > 0 {
                format!("[mamori] 日次ダイジェスト {day}: 警告 {total} 件 (抑制 {suppressed} 件)")
            } else {
                format!("[mamori] 日次ダイジェスト {day}: 警告 {total} 件")
            }
        }
        Lang::En => {
            let _ = writeln!(body, "mamori daily digest\n");
            let _ = writeln!(body, "Period: {period}");
            let _ = writeln!(
                body,
                "Total: {total} (alerted {sent} / suppressed {suppressed} / below routing {not_routed})"
            );
            if total == 0 {
                let _ = writeln!(body, "\nNo alerts in this period.");
            }
            if total == 0 {
                format!("[mamori] Daily digest {day}: no alerts")
            } else if suppressed > 0 {
                format!("[mamori] Daily digest {day}: {total} alerts ({suppressed} suppressed)")
            } else {
                format!("[mamori] Daily digest {day}: {total} alerts")
            }
        }
    };
    let mut current: Option<Option<Severity>> = None;
    for group in &digest.groups {
        if current != Some(group.severity) {
            current = Some(group.severity);
            let in_severity: u64 =
                digest.groups.iter().filter(|g| g.severity == group.severity).map(DigestGroup::total).sum();
            let label = severity_label(group.severity, lang);
            let _ = match lang {
                Lang::Ja => writeln!(body, "\n■ {label} ({in_severity} 件)"),
                Lang::En => writeln!(body, "\n■ {label} ({in_severity})"),
            };
        }
        write_group(&mut body, group, lang, offset);
    }
    if digest.ungrouped > 0 {
        let _ = match lang {
            Lang::Ja => writeln!(body, "\nその他 (ルールが多すぎるため集計のみ): {} 件", digest.ungrouped),
            Lang::En => writeln!(body, "\nOther (too many rules to list): {}", digest.ungrouped),
        };
    }
    let _ = match lang {
        Lang::Ja => writeln!(
            body,
            "\n抑制: 同じルール・同じホストの警告が一定時間内の上限を超えたため、個別の通知を送らなかった件数です。\n\
             通知対象外: 通知設定の重要度に満たない警告と、情報レベルの検知です。\n\n\
             -- \nこのメールは mamori から自動送信されています。"
        ),
        Lang::En => writeln!(
            body,
            "\nSuppressed: alerts of the same rule and host beyond the throttle limit, not sent one by one.\n\
             Below routing: alerts under every route's minimum severity, and informational detections.\n\n\
             -- \nThis mail was sent automatically by mamori."
        ),
    };
    MailText { subject: cut_subject(subject), body, attachments: Vec::new() }
}

fn write_group(body: &mut String, group: &DigestGroup, lang: Lang, offset: UtcOffset) {
    let title = one_line(&group.title);
    let total = group.total();
    let _ = match lang {
        Lang::Ja => writeln!(
            body,
            "・{title} [{}]: {total} 件 (通知 {} / 抑制 {} / 対象外 {})",
            group.rule_id, group.sent, group.suppressed, group.not_routed
        ),
        Lang::En => writeln!(
            body,
            "- {title} [{}]: {total} (alerted {} / suppressed {} / below routing {})",
            group.rule_id, group.sent, group.suppressed, group.not_routed
        ),
    };
    if !group.hosts.is_empty() {
        let mut hosts: Vec<String> =
            group.hosts.iter().map(|h| format!("{} ({})", h.host, h.count)).collect();
        if group.other_hosts > 0 {
            hosts.push(match lang {
                Lang::Ja => format!("ほか {} 件", group.other_hosts),
                Lang::En => format!("{} more", group.other_hosts),
            });
        }
        let _ = match lang {
            Lang::Ja => writeln!(body, "    ホスト: {}", hosts.join(", ")),
            Lang::En => writeln!(body, "    Hosts: {}", hosts.join(", ")),
        };
    }
    let first = short_time(group.first_ms, offset, false);
    let last = short_time(group.last_ms, offset, false);
    let _ = match lang {
        Lang::Ja => writeln!(body, "    最初 {first} / 最後 {last}"),
        Lang::En => writeln!(body, "    First {first} / last {last}"),
    };
}

/// Text for a test message of each channel.
pub fn test_alert(lang: Lang, now_ms: i64) -> Alert {
    let (title, summary) = match lang {
        Lang::Ja => ("テスト通知", "これは mamori の通知設定を確認するためのテストです。対応は不要です。"),
        Lang::En => ("Test notification", "This is a test of mamori's alert settings. No action is needed."),
    };
    Alert {
        id: format!("test-{now_ms}"),
        time_ms: now_ms,
        severity: Severity::Low,
        title: title.into(),
        rule_id: "mamori-test".into(),
        host: None,
        source: "mamori".into(),
        summary: summary.into(),
        console_url: None,
    }
}

fn utc_offset(minutes: i32) -> UtcOffset {
    UtcOffset::from_whole_seconds(minutes.saturating_mul(60)).unwrap_or(UtcOffset::UTC)
}

fn local_time(time_ms: i64, offset: UtcOffset) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(time_ms) * 1_000_000)
        .ok()
        .map(|t| t.to_offset(offset))
}

fn offset_label(offset: UtcOffset) -> String {
    let (h, m, _) = offset.as_hms();
    let sign = if offset.is_negative() { '-' } else { '+' };
    format!("UTC{sign}{:02}:{:02}", h.unsigned_abs(), m.unsigned_abs())
}

/// `05-31 10:00`, or `2025-05-31 10:00` with the year.
fn short_time(time_ms: i64, offset: UtcOffset, with_year: bool) -> String {
    let Some(t) = local_time(time_ms, offset) else { return time_ms.to_string() };
    let formatted = if with_year {
        t.format(format_description!("[year]-[month]-[day] [hour]:[minute]"))
    } else {
        t.format(format_description!("[month]-[day] [hour]:[minute]"))
    };
    formatted.unwrap_or_else(|_| time_ms.to_string())
}

/// Line breaks and other control characters become spaces: subjects and chat headlines are one
/// line, and a title must not be able to add mail headers.
pub(crate) fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().trim().to_string()
}

fn cut_subject(subject: String) -> String {
    match subject.char_indices().nth(MAX_SUBJECT_CHARS) {
        Some((at, _)) => format!("{}…", &subject[..at]),
        None => subject,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert {
            id: "a-1".into(),
            time_ms: 1_748_736_000_000, // 2025-06-01T00:00:00Z
            severity: Severity::Critical,
            title: "ランサムウェアの疑い\r\nBcc: x@example.jp".into(),
            rule_id: "ransom-1".into(),
            host: Some("ward3-pc".into()),
            source: "ransomware".into(),
            summary: "C:\\Users\\nurse 配下で 300 件のファイルが暗号化されました。".into(),
            console_url: Some("https://mamori.example.jp/alerts/a-1".into()),
        }
    }

    #[test]
    fn japanese_subject_and_body() {
        let mail = alert_mail(&alert(), Lang::Ja, 540);
        assert_eq!(mail.subject, "[mamori] 重大: ランサムウェアの疑い  Bcc: x@example.jp (ward3-pc)");
        assert!(mail.body.contains("発生日時: 2025-06-01 09:00:00 (UTC+09:00)"), "{}", mail.body);
        assert!(mail.body.contains("検知元: ランサムウェア挙動検知"));
        assert!(mail.body.contains("https://mamori.example.jp/alerts/a-1"));
    }

    #[test]
    fn english_subject_without_host_and_negative_offset() {
        let mut a = alert();
        a.host = None;
        a.severity = Severity::Medium;
        a.title = "Suspicious login".into();
        let mail = alert_mail(&a, Lang::En, -330);
        assert_eq!(mail.subject, "[mamori] Medium: Suspicious login");
        assert!(mail.body.contains("When: 2025-05-31 18:30:00 (UTC-05:30)"), "{}", mail.body);
        assert!(mail.body.contains("Host: (unknown)"));
    }

    #[test]
    fn long_subjects_are_cut_on_a_character() {
        let mut a = alert();
        a.title = "長".repeat(500);
        let subject = alert_subject(&a, Lang::Ja);
        assert_eq!(subject.chars().count(), MAX_SUBJECT_CHARS + 1);
        assert!(subject.ends_with('…'));
    }
}
