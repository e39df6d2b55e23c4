//! Every word the report prints, in Japanese and English, in one table; and the formatting of
//! numbers, months and times, which differs between the two.

use std::fmt::Write as _;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::model::ReportMonth;

/// The report's language. Japanese is the default: the readers are Japanese hospital staff.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    Ja,
    En,
}

impl Lang {
    /// The BCP 47 tag, for `<html lang>` and the PDF's `/Lang`.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::Ja => "ja",
            Lang::En => "en",
        }
    }
}

impl FromStr for Lang {
    type Err = crate::ReportError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "ja" | "ja-jp" => Ok(Lang::Ja),
            "en" | "en-us" | "en-gb" => Ok(Lang::En),
            _ => Err(crate::ReportError::UnknownLanguage { value: text.to_owned() }),
        }
    }
}

/// Builds [`TextKey`] so that a key cannot exist without both texts (the `match` is exhaustive).
macro_rules! texts {
    ($($key:ident => $ja:literal, $en:literal;)*) => {
        /// A text of the report. Texts with `{name}` placeholders are filled by the renderer.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum TextKey {
            $($key,)*
        }

        impl TextKey {
            /// Every key, for tests that check the table.
            pub const ALL: &'static [TextKey] = &[$(TextKey::$key,)*];

            pub fn text(self, lang: Lang) -> &'static str {
                match (self, lang) {
                    $(
                        (TextKey::$key, Lang::Ja) => $ja,
                        (TextKey::$key, Lang::En) => $en,
                    )*
                }
            }
        }
    };
}

texts! {
    ReportTitle => "月次セキュリティレポート", "Monthly Security Report";
    Institution => "医療機関", "Institution";
    ReportMonth => "対象月", "Month";
    Period => "集計期間", "Period";
    Generated => "作成日時", "Generated";
    RangeSeparator => " 〜 ", " – ";

    SectionSummary => "概要と前月比", "Summary and change from last month";
    SummaryHeadline =>
        "管理対象の端末 {endpoints} 台で脅威を {detections} 件検知し（うち重大 {critical} 件）、\
         ファイル {quarantined} 件を隔離しました。ネットワーク隔離は {isolations} 件、\
         バックアップの失敗は {backups_failed} 件でした。",
        "{detections} threats were detected on {endpoints} managed endpoints ({critical} critical) and \
         {quarantined} files were quarantined. There were {isolations} network isolations and \
         {backups_failed} failed backups.";
    NoPreviousMonth =>
        "前月のデータがないため、前月比は「—」と表示しています。",
        "There is no data for last month, so changes are shown as \"—\".";
    ColumnItem => "項目", "Item";
    ColumnThisMonth => "今月", "This month";
    ColumnLastMonth => "前月", "Last month";
    ColumnChange => "前月比", "Change";
    MetricEndpoints => "管理対象の端末数", "Managed endpoints";
    MetricDetections => "検知（合計）", "Detections (total)";
    MetricCritical => "検知（重大）", "Detections: critical";
    MetricHigh => "検知（高）", "Detections: high";
    MetricMedium => "検知（中）", "Detections: medium";
    MetricLow => "検知（低）", "Detections: low";
    MetricQuarantined => "隔離したファイル", "Files quarantined";
    MetricProcessesStopped => "停止したプロセス", "Processes stopped";
    MetricIsolations => "ネットワーク隔離", "Network isolations";
    MetricBackupsOk => "バックアップ成功", "Successful backups";
    MetricBackupsFailed => "バックアップ失敗", "Failed backups";
    MetricSuspiciousSnapshots => "不審なスナップショット", "Suspicious snapshots";
    MetricFalsePositives => "誤検知", "False positives";

    SectionEndpoints => "端末別の検知と対応", "Detections and response by endpoint";
    ColumnHost => "端末名", "Host";
    ColumnStatus => "状態", "Status";
    ColumnCritical => "重大", "Critical";
    ColumnHigh => "高", "High";
    ColumnMedium => "中", "Medium";
    ColumnLow => "低", "Low";
    ColumnTotal => "検知計", "Total";
    ColumnQuarantined => "隔離した\nファイル", "Quarantined";
    ColumnProcessesStopped => "停止した\nプロセス", "Processes stopped";
    ColumnIsolations => "NW隔離", "Isolations";
    ColumnLastScan => "最終スキャン", "Last scan";
    ColumnLastSeen => "最終通信", "Last seen";
    StatusOnline => "オンライン", "Online";
    StatusOffline => "オフライン", "Offline";
    StatusRevoked => "登録失効", "Revoked";
    AgentId => "エージェントID", "Agent ID";

    SectionTopRules => "検知の多いルール", "Most frequent detection rules";
    ColumnRank => "順位", "Rank";
    ColumnRuleId => "ルールID", "Rule ID";
    ColumnRuleTitle => "ルール名", "Rule";
    ColumnSeverity => "重要度", "Severity";
    ColumnCount => "件数", "Count";
    SeverityCritical => "重大", "Critical";
    SeverityHigh => "高", "High";
    SeverityMedium => "中", "Medium";
    SeverityLow => "低", "Low";

    SectionIsolations => "端末のネットワーク隔離", "Network isolation of endpoints";
    ColumnStarted => "開始", "Started";
    ColumnEnded => "解除", "Ended";
    ColumnReason => "理由", "Reason";
    ColumnTrigger => "実施方法", "Trigger";
    StillIsolated => "隔離中", "Still isolated";
    TriggerManual => "手動", "Manual";
    TriggerAutomatic => "自動", "Automatic";

    SectionBackups => "バックアップの状態", "Backup health";
    ColumnLastBackup => "最終バックアップ", "Last backup";
    ColumnBackupsOk => "成功", "Succeeded";
    ColumnBackupsFailed => "失敗", "Failed";
    ColumnSuspiciousSnapshots => "不審なスナップショット", "Suspicious snapshots";
    ColumnLastRestoreTest => "最終復元テスト", "Last restore test";
    NeverDone => "未実施", "Never";

    SectionChecklist =>
        "医療情報システムの安全管理に関するガイドライン第6.0版 チェックリスト",
        "Checklist: MHLW Guidelines for the Security Management of Medical Information Systems, version 6.0";
    ChecklistSummary =>
        "対応済み {ok} 項目、一部対応 {partial} 項目、未対応 {missing} 項目",
        "{ok} met, {partial} partly met, {missing} not met";
    ColumnChecklistId => "項目番号", "No.";
    ColumnChecklistItem => "確認項目", "Requirement";
    ColumnEvidence => "根拠", "Evidence";
    ColumnMissing => "不足している対応", "Still missing";
    ChecklistOk => "対応済み", "Met";
    ChecklistPartial => "一部対応", "Partly met";
    ChecklistMissing => "未対応", "Not met";

    NothingThisMonth => "今月は該当がありません。", "Nothing to report this month.";
    PageNumber => "{page} / {pages} ページ", "Page {page} / {pages}";
    PageFooter => "{institution}　{month} 月次セキュリティレポート", "{institution} · Monthly Security Report {month}";
}

/// `{name}` placeholders replaced by the given values; the template comes from [`TextKey`].
pub(crate) fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut text = template.to_owned();
    for (name, value) in values {
        text = text.replace(&format!("{{{name}}}"), value);
    }
    text
}

/// `1,234,567`: both languages group digits by thousands with a comma.
pub(crate) fn format_count(count: u64) -> String {
    let digits = count.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

const ENGLISH_MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// `2026年4月` or `April 2026`.
pub(crate) fn format_month(month: ReportMonth, lang: Lang) -> String {
    match lang {
        Lang::Ja => format!("{}年{}月", month.year(), month.month()),
        Lang::En => {
            let name = ENGLISH_MONTHS.get(usize::from(month.month()).saturating_sub(1)).unwrap_or(&"?");
            format!("{name} {}", month.year())
        }
    }
}

/// How much of a timestamp a place has room for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeStyle {
    /// `2026-04-28 14:05 (UTC+09:00)`, for the report's header.
    Full,
    /// `2026-04-28 14:05`.
    Minutes,
    /// `04-28 14:05` within the report's year, otherwise `2025-12-28`: for narrow table columns.
    Compact { report_year: i32 },
}

/// A timestamp as the reader wants it: in the UTC offset it was written with (the institution's),
/// to the minute. Text that is not RFC 3339 is shown as it is, cleaned of control characters.
pub(crate) fn format_time(value: &str, style: TimeStyle) -> String {
    let Ok(time) = OffsetDateTime::parse(value.trim(), &Rfc3339) else {
        return clean_text(value);
    };
    let minutes = format_description!("[year]-[month]-[day] [hour]:[minute]");
    let formatted = match style {
        TimeStyle::Full => time.format(minutes).map(|shown| {
            let offset = time.offset();
            let sign = if offset.is_negative() { '-' } else { '+' };
            let hours = offset.whole_hours().unsigned_abs();
            let rest = offset.minutes_past_hour().unsigned_abs();
            format!("{shown} (UTC{sign}{hours:02}:{rest:02})")
        }),
        TimeStyle::Minutes => time.format(minutes),
        TimeStyle::Compact { report_year } if time.year() == report_year => {
            time.format(format_description!("[month]-[day] [hour]:[minute]"))
        }
        TimeStyle::Compact { .. } => time.format(format_description!("[year]-[month]-[day]")),
    };
    formatted.unwrap_or_else(|_| clean_text(value))
}

/// Text from the network made safe to show: control characters become spaces (a newline in a
/// hostname must not break a table) and bidirectional overrides are dropped, because they can make
/// `exe.txt` read as `txt.exe`. Very long values are cut: no cell needs more.
pub(crate) fn clean_text(value: &str) -> String {
    const MAX_CHARS: usize = 400;
    let mut cleaned = String::with_capacity(value.len().min(MAX_CHARS * 4));
    for (count, character) in value.chars().enumerate() {
        if count == MAX_CHARS {
            cleaned.push('…');
            break;
        }
        match character {
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{FEFF}' => {}
            character if character.is_control() => cleaned.push(' '),
            character => cleaned.push(character),
        }
    }
    cleaned
}

/// `+25.0%`, `-12.5%`; written with ASCII signs so that it reads the same in both languages.
pub(crate) fn format_percent(percent: f64) -> String {
    let mut text = String::new();
    let _ = write!(text, "{percent:+.1}%");
    text
}
