//! What the report says, independent of HTML or PDF: the texts, numbers and tables in order. Both
//! renderers draw this one description, so the two formats cannot drift apart.

use crate::i18n::{clean_text, fill, format_count, format_month, format_percent, format_time};
use crate::i18n::{Lang, TextKey, TimeStyle};
use crate::model::{ChecklistStatus, EndpointStatus, IsolationTrigger, MonthlyReport, Severity, Totals};

/// How a value should catch the eye. Renderers map these to colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tone {
    Normal,
    /// Secondary information (an agent ID, "never").
    Muted,
    Good,
    Warning,
    Bad,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub label: String,
    /// Share of the table's width, relative to the other columns' (the shares need not add up to
    /// anything: the endpoint table gives its columns' widths in points on A4).
    pub share: f32,
    pub align: Align,
    /// Lines a cell of this column may take in the PDF before it is cut with "…".
    pub max_lines: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Cell {
    pub text: String,
    pub tone: Tone,
    /// A smaller second line (the agent ID under a hostname).
    pub note: Option<String>,
}

impl Cell {
    fn new(text: impl Into<String>) -> Cell {
        Cell { text: text.into(), tone: Tone::Normal, note: None }
    }

    fn toned(text: impl Into<String>, tone: Tone) -> Cell {
        Cell { text: text.into(), tone, note: None }
    }

    /// A count that deserves attention when it is not zero.
    fn count_alerting(count: u64, tone_if_nonzero: Tone) -> Cell {
        let tone = if count == 0 { Tone::Normal } else { tone_if_nonzero };
        Cell::toned(format_count(count), tone)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
}

#[derive(Debug, Clone)]
pub(crate) enum Block {
    Paragraph(String),
    Table(Table),
}

#[derive(Debug, Clone)]
pub(crate) struct Section {
    pub heading: String,
    pub blocks: Vec<Block>,
}

#[derive(Debug, Clone)]
pub(crate) struct ReportContent {
    pub lang: Lang,
    pub title: String,
    /// Label and value pairs under the title (institution, month, period, generated).
    pub facts: Vec<(String, String)>,
    pub sections: Vec<Section>,
    /// The footer's left part; the renderers add page numbers on the right.
    pub footer: String,
}

/// The change of one figure against last month.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Trend {
    NoPrevious,
    Same,
    Up { difference: u64, percent: Option<f64> },
    Down { difference: u64, percent: f64 },
}

impl Trend {
    pub(crate) fn between(current: u64, previous: Option<u64>) -> Trend {
        let Some(previous) = previous else { return Trend::NoPrevious };
        // From zero there is no meaningful percentage: the difference alone is shown.
        let percent_of =
            |difference: u64| (previous > 0).then(|| difference as f64 * 100.0 / previous as f64);
        match current.cmp(&previous) {
            std::cmp::Ordering::Equal => Trend::Same,
            std::cmp::Ordering::Greater => {
                let difference = current - previous;
                Trend::Up { difference, percent: percent_of(difference) }
            }
            std::cmp::Ordering::Less => {
                let difference = previous - current;
                Trend::Down { difference, percent: -percent_of(difference).unwrap_or(0.0) }
            }
        }
    }

    /// `▲ +5 (+25.0%)`, `▼ -3 (-10.0%)`, `±0`, or `—` without a previous month. The difference
    /// carries its sign because Japanese accounts also use ▲ for negative numbers: with the sign
    /// the text cannot be misread under either convention.
    pub(crate) fn text(self) -> String {
        match self {
            Trend::NoPrevious => "—".to_owned(),
            Trend::Same => "±0".to_owned(),
            Trend::Up { difference, percent: Some(percent) } => {
                format!("▲ +{} ({})", format_count(difference), format_percent(percent))
            }
            Trend::Up { difference, percent: None } => format!("▲ +{}", format_count(difference)),
            Trend::Down { difference, percent } => {
                format!("▼ -{} ({})", format_count(difference), format_percent(percent))
            }
        }
    }
}

/// Whether a rise of a figure is good news, bad news, or neither: it colours the trend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    HigherIsBetter,
    LowerIsBetter,
    Neutral,
}

fn trend_tone(trend: Trend, direction: Direction) -> Tone {
    match (trend, direction) {
        (Trend::Up { .. }, Direction::LowerIsBetter) | (Trend::Down { .. }, Direction::HigherIsBetter) => {
            Tone::Bad
        }
        (Trend::Up { .. }, Direction::HigherIsBetter) | (Trend::Down { .. }, Direction::LowerIsBetter) => {
            Tone::Good
        }
        _ => Tone::Normal,
    }
}

fn column(label: &str, share: f32, align: Align, max_lines: usize) -> Column {
    Column { label: label.to_owned(), share, align, max_lines }
}

pub(crate) fn build(report: &MonthlyReport, lang: Lang) -> ReportContent {
    let t = |key: TextKey| key.text(lang);
    let month = format_month(report.month, lang);
    let institution = clean_text(&report.institution);
    let period = format!(
        "{}{}{}",
        format_time(&report.period_start, TimeStyle::Minutes),
        t(TextKey::RangeSeparator),
        format_time(&report.period_end, TimeStyle::Full)
    );
    let facts = vec![
        (t(TextKey::Institution).to_owned(), institution.clone()),
        (t(TextKey::ReportMonth).to_owned(), month.clone()),
        (t(TextKey::Period).to_owned(), period),
        (t(TextKey::Generated).to_owned(), format_time(&report.generated, TimeStyle::Full)),
    ];
    let sections = vec![
        summary_section(report, lang),
        endpoints_section(report, lang),
        top_rules_section(report, lang),
        isolations_section(report, lang),
        backups_section(report, lang),
        checklist_section(report, lang),
    ];
    let footer = fill(t(TextKey::PageFooter), &[("institution", institution), ("month", month)]);
    ReportContent { lang, title: t(TextKey::ReportTitle).to_owned(), facts, sections, footer }
}

fn summary_section(report: &MonthlyReport, lang: Lang) -> Section {
    let t = |key: TextKey| key.text(lang);
    let totals = &report.totals;
    let headline = fill(
        t(TextKey::SummaryHeadline),
        &[
            ("endpoints", format_count(totals.endpoints.into())),
            ("detections", format_count(totals.detections.total())),
            ("critical", format_count(totals.detections.critical.into())),
            ("quarantined", format_count(totals.quarantined.into())),
            ("isolations", format_count(totals.isolations.into())),
            ("backups_failed", format_count(totals.backups_failed.into())),
        ],
    );
    type Figure = fn(&Totals) -> u64;
    let metrics: [(TextKey, Figure, Direction); 13] = [
        (TextKey::MetricEndpoints, |x| x.endpoints.into(), Direction::Neutral),
        (TextKey::MetricDetections, |x| x.detections.total(), Direction::LowerIsBetter),
        (TextKey::MetricCritical, |x| x.detections.critical.into(), Direction::LowerIsBetter),
        (TextKey::MetricHigh, |x| x.detections.high.into(), Direction::LowerIsBetter),
        (TextKey::MetricMedium, |x| x.detections.medium.into(), Direction::LowerIsBetter),
        (TextKey::MetricLow, |x| x.detections.low.into(), Direction::LowerIsBetter),
        (TextKey::MetricQuarantined, |x| x.quarantined.into(), Direction::Neutral),
        (TextKey::MetricProcessesStopped, |x| x.processes_stopped.into(), Direction::Neutral),
        (TextKey::MetricIsolations, |x| x.isolations.into(), Direction::LowerIsBetter),
        (TextKey::MetricBackupsOk, |x| x.backups_ok.into(), Direction::HigherIsBetter),
        (TextKey::MetricBackupsFailed, |x| x.backups_failed.into(), Direction::LowerIsBetter),
        (TextKey::MetricSuspiciousSnapshots, |x| x.suspicious_snapshots.into(), Direction::LowerIsBetter),
        (TextKey::MetricFalsePositives, |x| x.false_positives.into(), Direction::LowerIsBetter),
    ];
    let rows = metrics
        .iter()
        .map(|(key, figure, direction)| {
            let current = figure(totals);
            let previous = report.previous.as_ref().map(figure);
            let trend = Trend::between(current, previous);
            vec![
                Cell::new(t(*key)),
                Cell::new(format_count(current)),
                match previous {
                    Some(previous) => Cell::new(format_count(previous)),
                    None => Cell::toned("—", Tone::Muted),
                },
                Cell::toned(trend.text(), trend_tone(trend, *direction)),
            ]
        })
        .collect();
    let table = Table {
        columns: vec![
            column(t(TextKey::ColumnItem), 0.40, Align::Left, 2),
            column(t(TextKey::ColumnThisMonth), 0.16, Align::Right, 1),
            column(t(TextKey::ColumnLastMonth), 0.16, Align::Right, 1),
            column(t(TextKey::ColumnChange), 0.28, Align::Right, 1),
        ],
        rows,
    };
    let mut blocks = vec![Block::Paragraph(headline)];
    if report.previous.is_none() {
        blocks.push(Block::Paragraph(t(TextKey::NoPreviousMonth).to_owned()));
    }
    blocks.push(Block::Table(table));
    Section { heading: t(TextKey::SectionSummary).to_owned(), blocks }
}

fn endpoints_section(report: &MonthlyReport, lang: Lang) -> Section {
    let t = |key: TextKey| key.text(lang);
    let year = report.month.year();
    let compact = |value: &Option<String>| match value {
        Some(value) => Cell::new(format_time(value, TimeStyle::Compact { report_year: year })),
        None => Cell::toned(t(TextKey::NeverDone), Tone::Muted),
    };
    let rows = report
        .endpoints
        .iter()
        .map(|row| {
            let (status, status_tone) = match row.status {
                EndpointStatus::Online => (TextKey::StatusOnline, Tone::Good),
                EndpointStatus::Offline => (TextKey::StatusOffline, Tone::Warning),
                EndpointStatus::Revoked => (TextKey::StatusRevoked, Tone::Muted),
            };
            let detections = row.detections;
            vec![
                Cell {
                    text: clean_text(&row.host),
                    tone: Tone::Normal,
                    note: Some(clean_text(&row.agent_id)),
                },
                Cell::toned(t(status), status_tone),
                Cell::count_alerting(detections.critical.into(), Tone::Bad),
                Cell::count_alerting(detections.high.into(), Tone::Warning),
                Cell::new(format_count(detections.medium.into())),
                Cell::new(format_count(detections.low.into())),
                Cell::new(format_count(detections.total())),
                Cell::new(format_count(row.quarantined.into())),
                Cell::new(format_count(row.processes_stopped.into())),
                Cell::count_alerting(row.isolations.into(), Tone::Warning),
                compact(&row.last_scan),
                compact(&row.last_seen),
            ]
        })
        .collect();
    let number = |key: TextKey, share: f32| column(t(key), share, Align::Right, 1);
    // Widths in points of A4's 515 pt text width, each the narrowest that keeps its header and
    // usual values on one line (dates as `04-28 14:05`) in both languages.
    let table = Table {
        columns: vec![
            column(t(TextKey::ColumnHost), 100.0, Align::Left, 2),
            column(t(TextKey::ColumnStatus), 44.0, Align::Left, 1),
            number(TextKey::ColumnCritical, 30.0),
            number(TextKey::ColumnHigh, 24.0),
            number(TextKey::ColumnMedium, 33.0),
            number(TextKey::ColumnLow, 24.0),
            number(TextKey::ColumnTotal, 30.0),
            number(TextKey::ColumnQuarantined, 48.0),
            number(TextKey::ColumnProcessesStopped, 40.0),
            number(TextKey::ColumnIsolations, 38.0),
            column(t(TextKey::ColumnLastScan), 52.0, Align::Left, 1),
            column(t(TextKey::ColumnLastSeen), 52.0, Align::Left, 1),
        ],
        rows,
    };
    section_with_table(t(TextKey::SectionEndpoints), table, lang)
}

fn severity_cell(severity: Severity, lang: Lang) -> Cell {
    let (key, tone) = match severity {
        Severity::Critical => (TextKey::SeverityCritical, Tone::Bad),
        Severity::High => (TextKey::SeverityHigh, Tone::Warning),
        Severity::Medium => (TextKey::SeverityMedium, Tone::Normal),
        Severity::Low => (TextKey::SeverityLow, Tone::Normal),
    };
    Cell::toned(key.text(lang), tone)
}

fn top_rules_section(report: &MonthlyReport, lang: Lang) -> Section {
    let t = |key: TextKey| key.text(lang);
    let rows = report
        .top_rules
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            vec![
                Cell::new(format_count(index as u64 + 1)),
                Cell::new(clean_text(&rule.rule_id)),
                Cell::new(clean_text(&rule.title)),
                severity_cell(rule.severity, lang),
                Cell::new(format_count(rule.count.into())),
            ]
        })
        .collect();
    let table = Table {
        columns: vec![
            column(t(TextKey::ColumnRank), 0.07, Align::Right, 1),
            column(t(TextKey::ColumnRuleId), 0.23, Align::Left, 2),
            column(t(TextKey::ColumnRuleTitle), 0.48, Align::Left, 3),
            column(t(TextKey::ColumnSeverity), 0.11, Align::Left, 1),
            column(t(TextKey::ColumnCount), 0.11, Align::Right, 1),
        ],
        rows,
    };
    section_with_table(t(TextKey::SectionTopRules), table, lang)
}

fn isolations_section(report: &MonthlyReport, lang: Lang) -> Section {
    let t = |key: TextKey| key.text(lang);
    let rows = report
        .isolations
        .iter()
        .map(|row| {
            let trigger = match row.trigger {
                IsolationTrigger::Manual => TextKey::TriggerManual,
                IsolationTrigger::Automatic => TextKey::TriggerAutomatic,
            };
            vec![
                Cell::new(clean_text(&row.host)),
                Cell::new(format_time(&row.started, TimeStyle::Minutes)),
                match &row.ended {
                    Some(ended) => Cell::new(format_time(ended, TimeStyle::Minutes)),
                    None => Cell::toned(t(TextKey::StillIsolated), Tone::Bad),
                },
                Cell::new(clean_text(&row.reason)),
                Cell::new(t(trigger)),
            ]
        })
        .collect();
    let table = Table {
        columns: vec![
            column(t(TextKey::ColumnHost), 0.22, Align::Left, 2),
            column(t(TextKey::ColumnStarted), 0.15, Align::Left, 2),
            column(t(TextKey::ColumnEnded), 0.15, Align::Left, 2),
            column(t(TextKey::ColumnReason), 0.36, Align::Left, 4),
            column(t(TextKey::ColumnTrigger), 0.12, Align::Left, 1),
        ],
        rows,
    };
    section_with_table(t(TextKey::SectionIsolations), table, lang)
}

fn backups_section(report: &MonthlyReport, lang: Lang) -> Section {
    let t = |key: TextKey| key.text(lang);
    let rows = report
        .backups
        .iter()
        .map(|row| {
            let time_or = |value: &Option<String>, tone_if_never: Tone| match value {
                Some(value) => Cell::new(format_time(value, TimeStyle::Minutes)),
                None => Cell::toned(t(TextKey::NeverDone), tone_if_never),
            };
            vec![
                Cell::new(clean_text(&row.host)),
                time_or(&row.last_backup, Tone::Bad),
                Cell::new(format_count(row.backups_ok.into())),
                Cell::count_alerting(row.backups_failed.into(), Tone::Bad),
                Cell::count_alerting(row.suspicious_snapshots.into(), Tone::Bad),
                time_or(&row.last_restore_test, Tone::Warning),
            ]
        })
        .collect();
    let table = Table {
        columns: vec![
            column(t(TextKey::ColumnHost), 0.25, Align::Left, 2),
            column(t(TextKey::ColumnLastBackup), 0.17, Align::Left, 2),
            column(t(TextKey::ColumnBackupsOk), 0.1, Align::Right, 1),
            column(t(TextKey::ColumnBackupsFailed), 0.1, Align::Right, 1),
            column(t(TextKey::ColumnSuspiciousSnapshots), 0.21, Align::Right, 1),
            column(t(TextKey::ColumnLastRestoreTest), 0.17, Align::Left, 2),
        ],
        rows,
    };
    section_with_table(t(TextKey::SectionBackups), table, lang)
}

fn checklist_section(report: &MonthlyReport, lang: Lang) -> Section {
    let t = |key: TextKey| key.text(lang);
    let count_of = |status: ChecklistStatus| {
        format_count(report.checklist.iter().filter(|row| row.status == status).count() as u64)
    };
    let summary = fill(
        t(TextKey::ChecklistSummary),
        &[
            ("ok", count_of(ChecklistStatus::Ok)),
            ("partial", count_of(ChecklistStatus::Partial)),
            ("missing", count_of(ChecklistStatus::Missing)),
        ],
    );
    // One line per item, so the PDF can wrap each on its own.
    let bullet = match lang {
        Lang::Ja => "・",
        Lang::En => "- ",
    };
    let list = |items: &[String]| {
        items.iter().map(|item| format!("{bullet}{}", clean_text(item))).collect::<Vec<_>>().join("\n")
    };
    let rows = report
        .checklist
        .iter()
        .map(|row| {
            let (status, tone) = match row.status {
                ChecklistStatus::Ok => (TextKey::ChecklistOk, Tone::Good),
                ChecklistStatus::Partial => (TextKey::ChecklistPartial, Tone::Warning),
                ChecklistStatus::Missing => (TextKey::ChecklistMissing, Tone::Bad),
            };
            let title = match lang {
                Lang::Ja => &row.title_ja,
                Lang::En => &row.title_en,
            };
            vec![
                Cell::new(clean_text(&row.id)),
                Cell::new(clean_text(title)),
                Cell::toned(t(status), tone),
                Cell::new(list(&row.evidence)),
                Cell::new(list(&row.missing)),
            ]
        })
        .collect();
    let table = Table {
        columns: vec![
            column(t(TextKey::ColumnChecklistId), 0.09, Align::Left, 2),
            column(t(TextKey::ColumnChecklistItem), 0.27, Align::Left, 4),
            column(t(TextKey::ColumnStatus), 0.1, Align::Left, 1),
            column(t(TextKey::ColumnEvidence), 0.27, Align::Left, 8),
            column(t(TextKey::ColumnMissing), 0.27, Align::Left, 8),
        ],
        rows,
    };
    let mut section = section_with_table(t(TextKey::SectionChecklist), table, lang);
    if !report.checklist.is_empty() {
        section.blocks.insert(0, Block::Paragraph(summary));
    }
    section
}

/// An empty table is replaced by a sentence: a header row over nothing reads like a rendering bug.
fn section_with_table(heading: &str, table: Table, lang: Lang) -> Section {
    let block = if table.rows.is_empty() {
        Block::Paragraph(TextKey::NothingThisMonth.text(lang).to_owned())
    } else {
        Block::Table(table)
    };
    Section { heading: heading.to_owned(), blocks: vec![block] }
}
