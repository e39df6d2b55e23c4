//! The figures of one monthly report, as the manager gathers them from its database. Everything is
//! plain data with serde, so the manager can also hand the same report out as JSON.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::ReportError;

/// One institution's report for one calendar month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthlyReport {
    /// The institution's name as it should be printed, e.g. `みなと総合病院`.
    pub institution: String,
    pub month: ReportMonth,
    /// When the report was made (RFC 3339).
    pub generated: String,
    /// The first and last instant counted (RFC 3339, the institution's UTC offset).
    pub period_start: String,
    pub period_end: String,
    pub endpoints: Vec<EndpointRow>,
    pub totals: Totals,
    /// Last month's totals, for the trend column; `None` for an institution's first report.
    pub previous: Option<Totals>,
    /// The rules that fired most often, most frequent first (the manager decides how many).
    pub top_rules: Vec<RuleCount>,
    pub isolations: Vec<IsolationRow>,
    pub backups: Vec<BackupRow>,
    pub checklist: Vec<ChecklistRow>,
}

/// A calendar month, written `YYYY-MM` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReportMonth {
    year: i32,
    month: u8,
}

impl ReportMonth {
    /// Years outside 1..=9999 cannot be written as `YYYY-MM`, so they are refused too.
    pub fn new(year: i32, month: u8) -> Result<Self, ReportError> {
        if !(1..=9999).contains(&year) || !(1..=12).contains(&month) {
            return Err(ReportError::InvalidMonth { value: format!("{year}-{month:02}") });
        }
        Ok(ReportMonth { year, month })
    }

    pub fn year(self) -> i32 {
        self.year
    }

    /// 1 = January.
    pub fn month(self) -> u8 {
        self.month
    }
}

impl fmt::Display for ReportMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for ReportMonth {
    type Err = ReportError;

    fn from_str(text: &str) -> Result<Self, ReportError> {
        let invalid = || ReportError::InvalidMonth { value: text.to_owned() };
        let (year, month) = text.split_once('-').ok_or_else(invalid)?;
        let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if year.len() != 4 || month.len() != 2 || !all_digits(year) || !all_digits(month) {
            return Err(invalid());
        }
        let year = year.parse().map_err(|_| invalid())?;
        let month = month.parse().map_err(|_| invalid())?;
        ReportMonth::new(year, month)
    }
}

impl TryFrom<String> for ReportMonth {
    type Error = ReportError;

    fn try_from(text: String) -> Result<Self, ReportError> {
        text.parse()
    }
}

impl From<ReportMonth> for String {
    fn from(month: ReportMonth) -> String {
        month.to_string()
    }
}

/// Detection counts by severity (the four levels of `mamori-proto`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeverityCounts {
    pub critical: u32,
    pub high: u32,
    pub medium: u32,
    pub low: u32,
}

impl SeverityCounts {
    /// Computed rather than stored, so that a total can never disagree with its parts.
    pub fn total(&self) -> u64 {
        u64::from(self.critical) + u64::from(self.high) + u64::from(self.medium) + u64::from(self.low)
    }

    pub fn get(&self, severity: Severity) -> u32 {
        match severity {
            Severity::Critical => self.critical,
            Severity::High => self.high,
            Severity::Medium => self.medium,
            Severity::Low => self.low,
        }
    }

    fn saturating_add(self, other: SeverityCounts) -> SeverityCounts {
        SeverityCounts {
            critical: self.critical.saturating_add(other.critical),
            high: self.high.saturating_add(other.high),
            medium: self.medium.saturating_add(other.medium),
            low: self.low.saturating_add(other.low),
        }
    }
}

/// Serialized as `critical`, `high`, `medium`, `low`, like `mamori_proto::Severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// The agent's state at the end of the month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointStatus {
    Online,
    Offline,
    /// The agent's certificate was revoked: it no longer reports.
    Revoked,
}

/// One enrolled endpoint's month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRow {
    pub host: String,
    pub agent_id: String,
    pub status: EndpointStatus,
    pub detections: SeverityCounts,
    pub quarantined: u32,
    pub processes_stopped: u32,
    /// Network isolations that started this month.
    pub isolations: u32,
    /// RFC 3339; `None` when the endpoint never completed a scan.
    pub last_scan: Option<String>,
    /// RFC 3339; `None` when the agent never connected.
    pub last_seen: Option<String>,
}

/// The institution's month in numbers. Also used for last month, to show trends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub endpoints: u32,
    pub detections: SeverityCounts,
    pub quarantined: u32,
    pub processes_stopped: u32,
    pub isolations: u32,
    pub backups_ok: u32,
    pub backups_failed: u32,
    pub suspicious_snapshots: u32,
    /// Detections that staff marked as false positives.
    pub false_positives: u32,
}

impl Totals {
    /// Sums the per-endpoint and per-backup rows. False positives are not in any row (staff mark
    /// them on alerts), so the caller gives that count.
    pub fn from_rows(endpoints: &[EndpointRow], backups: &[BackupRow], false_positives: u32) -> Totals {
        let mut totals = Totals {
            endpoints: u32::try_from(endpoints.len()).unwrap_or(u32::MAX),
            false_positives,
            ..Totals::default()
        };
        for row in endpoints {
            totals.detections = totals.detections.saturating_add(row.detections);
            totals.quarantined = totals.quarantined.saturating_add(row.quarantined);
            totals.processes_stopped = totals.processes_stopped.saturating_add(row.processes_stopped);
            totals.isolations = totals.isolations.saturating_add(row.isolations);
        }
        for row in backups {
            totals.backups_ok = totals.backups_ok.saturating_add(row.backups_ok);
            totals.backups_failed = totals.backups_failed.saturating_add(row.backups_failed);
            totals.suspicious_snapshots =
                totals.suspicious_snapshots.saturating_add(row.suspicious_snapshots);
        }
        totals
    }
}

/// How often one rule fired this month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleCount {
    pub rule_id: String,
    pub title: String,
    pub severity: Severity,
    pub count: u32,
}

/// Who or what cut an endpoint off the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationTrigger {
    /// A staff member pressed the button.
    Manual,
    /// A response rule did it (ransomware, a critical detection...).
    Automatic,
}

/// One network isolation of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolationRow {
    pub host: String,
    /// RFC 3339.
    pub started: String,
    /// RFC 3339; `None` while the endpoint is still isolated.
    pub ended: Option<String>,
    /// Free text: the rule, the alert or the operator's note.
    pub reason: String,
    pub trigger: IsolationTrigger,
}

/// One endpoint's backups this month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRow {
    pub host: String,
    /// RFC 3339; `None` when no backup ever succeeded.
    pub last_backup: Option<String>,
    pub backups_ok: u32,
    pub backups_failed: u32,
    /// Snapshots that the ransomware heuristics flagged (mass changes, encrypted-looking files).
    pub suspicious_snapshots: u32,
    /// RFC 3339; `None` when a restore was never tested.
    pub last_restore_test: Option<String>,
}

/// How far one checklist item is met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecklistStatus {
    Ok,
    Partial,
    Missing,
}

/// One item of the checklist for the MHLW guidelines (医療情報システムの安全管理に関するガイドライン
/// 第6.0版). The titles come with the data because the manager owns the checklist's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChecklistRow {
    pub id: String,
    pub title_ja: String,
    pub title_en: String,
    pub status: ChecklistStatus,
    /// What shows the item is met (one sentence each).
    pub evidence: Vec<String>,
    /// What is still to be done (one sentence each).
    pub missing: Vec<String>,
}

impl MonthlyReport {
    /// Checks every timestamp and the period. The renderers do not require this (a timestamp they
    /// cannot read is printed as it is), so call it where bad data should be refused, e.g. before
    /// storing a report.
    pub fn validate(&self) -> Result<(), ReportError> {
        let start = parse_timestamp("period_start", &self.period_start)?;
        let end = parse_timestamp("period_end", &self.period_end)?;
        if start > end {
            return Err(ReportError::InvalidPeriod {
                start: self.period_start.clone(),
                end: self.period_end.clone(),
            });
        }
        parse_timestamp("generated", &self.generated)?;
        for (index, row) in self.endpoints.iter().enumerate() {
            check_optional(&format!("endpoints[{index}].last_scan"), &row.last_scan)?;
            check_optional(&format!("endpoints[{index}].last_seen"), &row.last_seen)?;
        }
        for (index, row) in self.isolations.iter().enumerate() {
            parse_timestamp(&format!("isolations[{index}].started"), &row.started)?;
            check_optional(&format!("isolations[{index}].ended"), &row.ended)?;
        }
        for (index, row) in self.backups.iter().enumerate() {
            check_optional(&format!("backups[{index}].last_backup"), &row.last_backup)?;
            check_optional(&format!("backups[{index}].last_restore_test"), &row.last_restore_test)?;
        }
        Ok(())
    }
}

fn parse_timestamp(field: &str, value: &str) -> Result<OffsetDateTime, ReportError> {
    OffsetDateTime::parse(value, &Rfc3339)
        .map_err(|_| ReportError::InvalidTimestamp { field: field.to_owned(), value: value.to_owned() })
}

fn check_optional(field: &str, value: &Option<String>) -> Result<(), ReportError> {
    match value {
        Some(value) => parse_timestamp(field, value).map(|_| ()),
        None => Ok(()),
    }
}
