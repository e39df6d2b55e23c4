//! Renders real PDFs with the real font and reads them back with poppler's pdftotext/pdfinfo, the
//! way a person's PDF viewer or a search index would.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{expected_trend, font_available, grouped, report, single_spaced, squash, tool, LONG_HOST};
use mamori_report::{
    check_font, render_html, render_pdf, EndpointStatus, Lang, MonthlyReport, ReportError, TextKey, Totals,
    DEFAULT_FONT,
};

const ENDPOINTS: usize = 42;

struct Extracted {
    text: String,
    pages: usize,
    fonts: String,
}

fn extract(pdf: &[u8], directory: &Path, name: &str) -> Extracted {
    let path = directory.join(name);
    std::fs::write(&path, pdf).unwrap();
    let text = Command::new("pdftotext").arg("-layout").arg(&path).arg("-").output().unwrap();
    assert!(text.status.success(), "pdftotext failed: {}", String::from_utf8_lossy(&text.stderr));
    let info = Command::new("pdfinfo").arg(&path).output().unwrap();
    assert!(info.status.success(), "pdfinfo failed: {}", String::from_utf8_lossy(&info.stderr));
    let info = String::from_utf8(info.stdout).unwrap();
    let pages = info
        .lines()
        .find_map(|line| line.strip_prefix("Pages:"))
        .map(|count| count.trim().parse().unwrap())
        .expect("pdfinfo prints the page count");
    assert!(info.contains("595.28 x 841.89") || info.contains("595 x 842"), "not A4 portrait:\n{info}");
    let fonts = Command::new("pdffonts")
        .arg(&path)
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned());
    Extracted { text: String::from_utf8(text.stdout).unwrap(), pages, fonts: fonts.unwrap_or_default() }
}

fn tools_and_font() -> bool {
    tool("pdftotext").is_some() && tool("pdfinfo").is_some() && font_available()
}

fn status_text(status: EndpointStatus, lang: Lang) -> &'static str {
    match status {
        EndpointStatus::Online => TextKey::StatusOnline.text(lang),
        EndpointStatus::Offline => TextKey::StatusOffline.text(lang),
        EndpointStatus::Revoked => TextKey::StatusRevoked.text(lang),
    }
}

/// Every endpoint's line shows its status and then its eight counts, in column order.
fn assert_endpoint_rows(report: &MonthlyReport, text: &str, lang: Lang) {
    let mut checked = 0;
    for row in report.endpoints.iter().filter(|row| row.host != LONG_HOST) {
        let line = text
            .lines()
            .find(|line| line.split_whitespace().next() == Some(row.host.as_str()))
            .unwrap_or_else(|| panic!("no line starts with host {}", row.host));
        let tokens: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(tokens.get(1), Some(&status_text(row.status, lang)), "status of {} in {line:?}", row.host);
        let expected: Vec<String> = [
            u64::from(row.detections.critical),
            u64::from(row.detections.high),
            u64::from(row.detections.medium),
            u64::from(row.detections.low),
            u64::from(row.detections.critical)
                + u64::from(row.detections.high)
                + u64::from(row.detections.medium)
                + u64::from(row.detections.low),
            u64::from(row.quarantined),
            u64::from(row.processes_stopped),
            u64::from(row.isolations),
        ]
        .into_iter()
        .map(grouped)
        .collect();
        assert_eq!(
            tokens.get(2..10).map(|slice| slice.to_vec()),
            Some(expected.iter().map(String::as_str).collect()),
            "counts of {} in {line:?}",
            row.host
        );
        checked += 1;
    }
    assert_eq!(checked, report.endpoints.len() - 1);
}

/// The summary line of a metric: label, this month, last month, change.
fn assert_summary_line(text: &str, label: &str, current: u64, previous: Option<u64>) {
    let line = text
        .lines()
        .map(single_spaced)
        .find(|line| line.starts_with(label))
        .unwrap_or_else(|| panic!("no summary line for {label}"));
    let last_month = previous.map(grouped).unwrap_or_else(|| "—".to_owned());
    let expected = format!("{label} {} {last_month} {}", grouped(current), expected_trend(current, previous));
    assert_eq!(line, expected);
}

fn assert_common(report: &MonthlyReport, extracted: &Extracted, lang: Lang) {
    let text = &extracted.text;
    let squashed = squash(text);
    for heading in [
        TextKey::ReportTitle,
        TextKey::SectionSummary,
        TextKey::SectionEndpoints,
        TextKey::SectionTopRules,
        TextKey::SectionIsolations,
        TextKey::SectionBackups,
        TextKey::SectionChecklist,
    ] {
        assert!(squashed.contains(&squash(heading.text(lang))), "heading {heading:?} missing");
    }
    assert_endpoint_rows(report, text, lang);

    let totals = &report.totals;
    let previous = report.previous.as_ref();
    let figure = |pick: fn(&Totals) -> u64| (pick(totals), previous.map(pick));
    let (detections, previous_detections) = figure(|t| t.detections.total());
    assert_summary_line(text, TextKey::MetricDetections.text(lang), detections, previous_detections);
    let (critical, previous_critical) = figure(|t| t.detections.critical.into());
    assert_summary_line(text, TextKey::MetricCritical.text(lang), critical, previous_critical);
    let (quarantined, previous_quarantined) = figure(|t| t.quarantined.into());
    assert_summary_line(text, TextKey::MetricQuarantined.text(lang), quarantined, previous_quarantined);
    let (isolations, previous_isolations) = figure(|t| t.isolations.into());
    assert_summary_line(text, TextKey::MetricIsolations.text(lang), isolations, previous_isolations);
    let (medium, previous_medium) = figure(|t| t.detections.medium.into());
    assert_summary_line(text, TextKey::MetricMedium.text(lang), medium, previous_medium);

    // Top rules keep their counts; every page carries "n / N".
    // A long rule ID wraps, so the row is found by its rank and the ID's beginning.
    for (index, rule) in report.top_rules.iter().enumerate() {
        let rank = (index + 1).to_string();
        let id_start: String = rule.rule_id.chars().take(12).collect();
        let line = text
            .lines()
            .find(|line| line.split_whitespace().next() == Some(rank.as_str()) && line.contains(&id_start))
            .unwrap_or_else(|| panic!("no line for rule {}", rule.rule_id));
        assert_eq!(line.split_whitespace().last(), Some(grouped(rule.count.into()).as_str()), "{line}");
    }
    assert!(extracted.pages > 1, "{ENDPOINTS} endpoints should need more than one page");
    for page in 1..=extracted.pages {
        assert!(text.contains(&format!("{page} / {}", extracted.pages)), "page number {page} missing");
    }
    // The endpoint table's header row is repeated on the page it continues on.
    let header_count = text.lines().filter(|line| line.contains(TextKey::ColumnLastScan.text(lang))).count();
    assert!(header_count >= 2, "the endpoint table header should repeat, found {header_count}");
    // The long hostname is cut with an ellipsis, not drawn past the margin.
    assert!(!squashed.contains(&squash(LONG_HOST)));
    assert!(squashed.contains("radiology-reading-room"));
    assert!(text.contains('…'));
    if !extracted.fonts.is_empty() {
        let font_line =
            extracted.fonts.lines().find(|line| line.contains("IPAexGothic")).expect("font listed");
        assert!(single_spaced(font_line).contains("yes yes yes"), "embedded, subset, ToUnicode: {font_line}");
    }
}

/// Where the PNG and PDF are kept for a person to look at.
fn artefact_directory() -> PathBuf {
    let directory = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(target) => PathBuf::from(target).join("report-artefacts"),
        None => std::env::temp_dir().join("mamori-report-artefacts"),
    };
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

/// Kept for a person to look at (before any assertion, so a failing run leaves them too): the PDF
/// and its first page as PNG.
fn keep_artefacts(pdf: &[u8], stem: &str) {
    let directory = artefact_directory();
    let kept = directory.join(format!("{stem}.pdf"));
    std::fs::write(&kept, pdf).unwrap();
    if tool("pdftoppm").is_some() {
        let status = Command::new("pdftoppm")
            .args(["-png", "-r", "60", "-f", "1", "-l", "1"])
            .arg(&kept)
            .arg(directory.join(stem))
            .status()
            .unwrap();
        assert!(status.success());
    }
    eprintln!("artefacts: {} and its first page as PNG", kept.display());
}

#[test]
fn japanese_pdf_has_figures_headings_and_page_numbers() {
    if !tools_and_font() {
        return;
    }
    let report = report(ENDPOINTS);
    let started = Instant::now();
    let pdf = render_pdf(&report, Lang::Ja, Path::new(DEFAULT_FONT)).unwrap();
    let elapsed = started.elapsed();
    eprintln!("Japanese PDF, {ENDPOINTS} endpoints: {} bytes in {elapsed:?}", pdf.len());
    keep_artefacts(&pdf, "monthly-report-ja");
    // The HTML version beside it, for comparing the two by eye.
    std::fs::write(artefact_directory().join("monthly-report-ja.html"), render_html(&report, Lang::Ja))
        .unwrap();

    let temp = tempfile::tempdir().unwrap();
    let extracted = extract(&pdf, temp.path(), "report-ja.pdf");
    assert_common(&report, &extracted, Lang::Ja);
    let text = &extracted.text;
    assert!(text.contains("2026年4月"));
    assert!(text.contains("みなと総合病院"));
    for heading in ["月次セキュリティレポート", "端末別の検知と対応", "バックアップの状態", "前月比"]
    {
        assert!(text.contains(heading), "{heading} missing");
    }
    assert!(squash(text).contains("医療情報システムの安全管理に関するガイドライン第6.0版チェックリスト"));
    assert!(text.contains("ランサムウェアのおとりファイルへの書き込み"));
    assert!(text.contains("隔離中"), "the ongoing isolation");
}

#[test]
fn english_pdf_has_figures_headings_and_page_numbers() {
    if !tools_and_font() {
        return;
    }
    let report = report(ENDPOINTS);
    let pdf = render_pdf(&report, Lang::En, Path::new(DEFAULT_FONT)).unwrap();
    keep_artefacts(&pdf, "monthly-report-en");
    let temp = tempfile::tempdir().unwrap();
    let extracted = extract(&pdf, temp.path(), "report-en.pdf");
    assert_common(&report, &extracted, Lang::En);
    let text = &extracted.text;
    assert!(text.contains("April 2026"));
    assert!(text.contains("Detections and response by endpoint"));
    assert!(text.contains("Backup health"));
    assert!(!text.contains("端末別"), "no Japanese heading in the English report");
    // Japanese data stays Japanese.
    assert!(text.contains("受付PC-01"));
}

#[test]
fn first_report_without_previous_month_shows_dashes() {
    if !tools_and_font() {
        return;
    }
    let mut report = report(ENDPOINTS);
    report.previous = None;
    let pdf = render_pdf(&report, Lang::Ja, Path::new(DEFAULT_FONT)).unwrap();
    let temp = tempfile::tempdir().unwrap();
    let extracted = extract(&pdf, temp.path(), "first.pdf");
    assert_summary_line(&extracted.text, "誤検知", report.totals.false_positives.into(), None);
    assert!(squash(&extracted.text).contains(&squash(TextKey::NoPreviousMonth.text(Lang::Ja))));
}

#[test]
fn missing_font_error_names_the_path_and_the_package() {
    let missing = Path::new("/nonexistent/fonts/ipaexg.ttf");
    let error = render_pdf(&report(3), Lang::Ja, missing).unwrap_err();
    assert!(matches!(error, ReportError::FontUnreadable { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("/nonexistent/fonts/ipaexg.ttf"), "{message}");
    assert!(message.contains("fonts-ipaexfont-gothic"), "{message}");
    assert!(check_font(missing).is_err());
}

#[test]
fn a_file_that_is_not_a_font_is_refused_clearly() {
    let temp = tempfile::tempdir().unwrap();
    let not_font = temp.path().join("ipaexg.ttf");
    std::fs::write(&not_font, b"<html>404 Not Found</html>").unwrap();
    let error = render_pdf(&report(3), Lang::En, &not_font).unwrap_err();
    assert!(matches!(error, ReportError::FontUnusable { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&not_font.display().to_string()) && message.contains("fonts-ipaexfont-gothic"));
}

#[test]
fn a_font_without_japanese_is_refused_clearly() {
    let latin_only = Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf");
    if !latin_only.exists() {
        eprintln!("SKIPPED: {} is missing (Debian package fonts-dejavu-core)", latin_only.display());
        return;
    }
    let error = check_font(latin_only).unwrap_err();
    assert!(matches!(error, ReportError::FontUnusable { .. }), "{error:?}");
    assert!(error.to_string().contains("Japanese"), "{error}");
}

#[test]
fn the_default_font_passes_the_check() {
    if !font_available() {
        return;
    }
    check_font(Path::new(DEFAULT_FONT)).unwrap();
}
