//! The data model's JSON form and checks, and the completeness of the translation table.

mod common;

use std::collections::BTreeSet;

use common::report;
use mamori_report::{Lang, MonthlyReport, ReportError, ReportMonth, TextKey, Totals};

#[test]
fn report_round_trips_through_json_with_a_yyyy_mm_month() {
    let report = report(6);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["month"], "2026-04");
    assert_eq!(json["endpoints"][0]["status"], "online");
    assert_eq!(json["top_rules"][0]["severity"], "critical");
    assert_eq!(json["checklist"][2]["status"], "missing");
    assert_eq!(json["isolations"][1]["trigger"], "manual");
    let back: MonthlyReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
}

#[test]
fn invalid_months_are_refused() {
    for bad in ["2026-13", "2026-00", "2026-4", "26-04", "2026/04", "２０２６-04", "", "2026-04-01"] {
        assert!(bad.parse::<ReportMonth>().is_err(), "{bad:?} accepted");
    }
    assert!(ReportMonth::new(2026, 13).is_err());
    assert_eq!("2026-12".parse::<ReportMonth>().unwrap(), ReportMonth::new(2026, 12).unwrap());
    let mut json = serde_json::to_value(report(2)).unwrap();
    json["month"] = "2026-13".into();
    let error = serde_json::from_value::<MonthlyReport>(json).unwrap_err().to_string();
    assert!(error.contains("2026-13"), "{error}");
}

#[test]
fn validate_names_the_bad_timestamp() {
    let mut report = report(6);
    report.validate().unwrap();
    report.endpoints[4].last_seen = Some("yesterday".to_owned());
    match report.validate() {
        Err(ReportError::InvalidTimestamp { field, value }) => {
            assert_eq!(field, "endpoints[4].last_seen");
            assert_eq!(value, "yesterday");
        }
        other => panic!("{other:?}"),
    }
    let mut reversed = common::report(2);
    std::mem::swap(&mut reversed.period_start, &mut reversed.period_end);
    assert!(matches!(reversed.validate(), Err(ReportError::InvalidPeriod { .. })));
}

#[test]
fn totals_sum_the_rows() {
    let endpoints = common::endpoints(10);
    let backups = common::backups(&endpoints);
    let totals = Totals::from_rows(&endpoints, &backups, 3);
    assert_eq!(totals.endpoints, 10);
    assert_eq!(totals.detections.critical, endpoints.iter().map(|row| row.detections.critical).sum::<u32>());
    assert_eq!(totals.detections.low, endpoints.iter().map(|row| row.detections.low).sum::<u32>());
    assert_eq!(totals.quarantined, endpoints.iter().map(|row| row.quarantined).sum::<u32>());
    assert_eq!(totals.backups_failed, backups.iter().map(|row| row.backups_failed).sum::<u32>());
    assert_eq!(totals.false_positives, 3);
    assert!(totals.detections.total() > 0, "the fixture should have detections");
}

fn is_japanese(character: char) -> bool {
    matches!(u32::from(character), 0x3000..=0x30FF | 0x4E00..=0x9FFF | 0xFF00..=0xFFEF)
}

fn placeholders(text: &str) -> BTreeSet<String> {
    text.split('{').skip(1).filter_map(|part| part.split_once('}')).map(|(name, _)| name.to_owned()).collect()
}

#[test]
fn every_text_exists_in_both_languages() {
    assert!(TextKey::ALL.len() > 50);
    for key in TextKey::ALL {
        let japanese = key.text(Lang::Ja);
        let english = key.text(Lang::En);
        assert!(!japanese.trim().is_empty() && !english.trim().is_empty(), "{key:?} is empty");
        assert!(japanese.chars().any(is_japanese), "{key:?}: {japanese:?} is not Japanese");
        assert!(!english.chars().any(is_japanese), "{key:?}: {english:?} is not English");
        assert_eq!(placeholders(japanese), placeholders(english), "{key:?}: placeholders differ");
    }
}

#[test]
fn language_names_parse() {
    assert_eq!("ja".parse::<Lang>().unwrap(), Lang::Ja);
    assert_eq!("EN".parse::<Lang>().unwrap(), Lang::En);
    assert!("fr".parse::<Lang>().is_err());
    assert_eq!(Lang::default(), Lang::Ja);
}
