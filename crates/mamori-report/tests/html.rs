//! The HTML page: escaping of what comes from the network, both languages, and the trend column.

mod common;

use common::{expected_trend, grouped, report};
use mamori_report::{render_html, Lang, MonthlyReport, SeverityCounts, TextKey, Totals};

/// The `<tr>` of the summary table whose first cell is `label`.
fn summary_row<'a>(html: &'a str, label: &str) -> &'a str {
    let start = html.find(&format!("<tr><td>{label}</td>")).unwrap_or_else(|| panic!("no row for {label}"));
    let end = html[start..].find("</tr>").unwrap() + start;
    &html[start..end]
}

fn cells(row: &str) -> Vec<String> {
    row.split("<td")
        .skip(1)
        .map(|cell| {
            let content = &cell[cell.find('>').unwrap() + 1..];
            content[..content.find("</td>").unwrap_or(content.len())].to_owned()
        })
        .collect()
}

#[test]
fn hostile_text_from_the_network_is_escaped() {
    let mut report = report(5);
    report.endpoints[1].host = "<script>alert('x')</script>".to_owned();
    report.endpoints[2].agent_id = "\"><img src=x onerror=alert(1)>".to_owned();
    report.top_rules[0].title = "<iframe src=javascript:alert(1)>&amp;".to_owned();
    report.isolations[0].reason = "</td></tr></table><h1>pwned</h1>".to_owned();
    report.institution = "A&B 病院 <b>".to_owned();
    report.endpoints[3].host = "invoice\u{202E}txt.exe\nsecond-line".to_owned();

    for lang in [Lang::Ja, Lang::En] {
        let html = render_html(&report, lang);
        for forbidden in ["<script", "<img", "<iframe", "<h1>pwned", "<b>", "\u{202E}"] {
            assert!(!html.contains(forbidden), "{forbidden:?} got through in {lang:?}");
        }
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
        assert!(html.contains("&lt;iframe src=javascript:alert(1)&gt;&amp;amp;"));
        assert!(html.contains("A&amp;B 病院 &lt;b&gt;"));
        // The override is dropped and the newline cannot split the hostname's cell.
        assert!(html.contains("invoicetxt.exe second-line"));
        // Structure intact: every opened table is closed, one page, no script at all.
        assert_eq!(html.matches("<table>").count(), html.matches("</table>").count());
        assert_eq!(html.matches("<html").count(), 1);
    }
}

#[test]
fn both_languages_have_all_headings_and_the_month() {
    let report = report(12);
    let japanese = render_html(&report, Lang::Ja);
    let english = render_html(&report, Lang::En);
    assert!(japanese.contains("<html lang=\"ja\">"));
    assert!(english.contains("<html lang=\"en\">"));
    assert!(japanese.contains("2026年4月"));
    assert!(english.contains("April 2026"));
    for key in [
        TextKey::ReportTitle,
        TextKey::SectionSummary,
        TextKey::SectionEndpoints,
        TextKey::SectionTopRules,
        TextKey::SectionIsolations,
        TextKey::SectionBackups,
        TextKey::SectionChecklist,
    ] {
        assert!(japanese.contains(key.text(Lang::Ja)), "{key:?} in Japanese");
        assert!(english.contains(key.text(Lang::En)), "{key:?} in English");
        assert!(!english.contains(key.text(Lang::Ja)), "{key:?}: Japanese text in the English page");
    }
    assert!(japanese.contains("医療情報システムの安全管理に関するガイドライン第6.0版 チェックリスト"));
    assert!(japanese.contains("端末別の検知と対応"));
    // The checklist shows each item's title in the page's language.
    assert!(
        japanese.contains(&report.checklist[0].title_ja) && !japanese.contains(&report.checklist[0].title_en)
    );
    assert!(
        english.contains(&report.checklist[0].title_en) && !english.contains(&report.checklist[0].title_ja)
    );
    // Self-contained: nothing is fetched when the page is opened or printed.
    for page in [&japanese, &english] {
        for external in ["http://", "https://", "<link", "<script", "src="] {
            assert!(!page.contains(external), "{external} in the page");
        }
    }
}

#[test]
fn every_endpoint_row_shows_its_counts() {
    let report = report(12);
    let html = render_html(&report, Lang::Ja);
    for row in &report.endpoints {
        let start = html.find(&format!("<tr><td>{}<span", row.host)).expect("endpoint row");
        let end = html[start..].find("</tr>").unwrap() + start;
        let cells = cells(&html[start..end]);
        let total =
            row.detections.critical + row.detections.high + row.detections.medium + row.detections.low;
        let counts: Vec<String> = [
            row.detections.critical,
            row.detections.high,
            row.detections.medium,
            row.detections.low,
            total,
            row.quarantined,
            row.processes_stopped,
            row.isolations,
        ]
        .into_iter()
        .map(|count| grouped(count.into()))
        .collect();
        assert_eq!(cells[2..10].to_vec(), counts, "row of {}", row.host);
    }
}

fn with_totals(current: Totals, previous: Option<Totals>) -> MonthlyReport {
    let mut report = report(4);
    report.totals = current;
    report.previous = previous;
    report
}

#[test]
fn trends_up_down_same_from_zero_and_without_previous_month() {
    let current = Totals {
        endpoints: 40,
        detections: SeverityCounts { critical: 3, high: 12, medium: 30, low: 1_205 },
        quarantined: 18,
        isolations: 2,
        backups_ok: 1_190,
        backups_failed: 4,
        ..Totals::default()
    };
    let previous = Totals {
        endpoints: 40,
        detections: SeverityCounts { critical: 5, high: 8, medium: 30, low: 1_000 },
        quarantined: 24,
        isolations: 0,
        backups_ok: 1_200,
        backups_failed: 1,
        ..Totals::default()
    };
    let html = render_html(&with_totals(current, Some(previous)), Lang::Ja);
    let cases: [(TextKey, u64, u64, &str); 6] = [
        (TextKey::MetricDetections, 1_250, 1_043, "bad"),
        (TextKey::MetricCritical, 3, 5, "good"),
        (TextKey::MetricEndpoints, 40, 40, ""),
        (TextKey::MetricIsolations, 2, 0, "bad"),
        (TextKey::MetricBackupsOk, 1_190, 1_200, "bad"),
        (TextKey::MetricBackupsFailed, 4, 1, "bad"),
    ];
    for (key, now, before, tone) in cases {
        let cells = cells(summary_row(&html, key.text(Lang::Ja)));
        assert_eq!(cells[1], grouped(now), "{key:?}");
        assert_eq!(cells[2], grouped(before), "{key:?}");
        assert_eq!(cells[3], expected_trend(now, Some(before)), "{key:?}");
        let row = summary_row(&html, key.text(Lang::Ja));
        let last_cell = &row[row.rfind("<td").unwrap()..];
        let classes = if tone.is_empty() { "num nowrap".to_owned() } else { format!("num nowrap {tone}") };
        assert!(last_cell.starts_with(&format!("<td class=\"{classes}\">")), "{key:?} tone in {last_cell}");
    }
    // Spot-check the oracle itself against hand-computed values.
    assert_eq!(expected_trend(1_250, Some(1_043)), "▲ +207 (+19.8%)");
    assert_eq!(expected_trend(3, Some(5)), "▼ -2 (-40.0%)");
    assert_eq!(expected_trend(2, Some(0)), "▲ +2");

    let first = render_html(&with_totals(current, None), Lang::En);
    for key in [TextKey::MetricDetections, TextKey::MetricEndpoints] {
        let cells = cells(summary_row(&first, key.text(Lang::En)));
        assert_eq!(cells[2], "—");
        assert_eq!(cells[3], "—");
    }
    assert!(first.contains(&TextKey::NoPreviousMonth.text(Lang::En).replace('"', "&quot;")));
}

#[test]
fn empty_sections_say_so_instead_of_an_empty_table() {
    let mut report = report(4);
    report.isolations.clear();
    report.top_rules.clear();
    let html = render_html(&report, Lang::Ja);
    assert_eq!(html.matches(TextKey::NothingThisMonth.text(Lang::Ja)).count(), 2);
    assert!(!html.contains(TextKey::ColumnRuleId.text(Lang::Ja)));
}
