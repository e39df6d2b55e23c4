//! The specification repository's schema test documents (rules, filters, correlations):
//! each kind is routed where it belongs, and problems name the document and the reason.

use std::path::PathBuf;

use mamori_sigma::{Event, Pipeline, RuleSet};
use serde_json::{json, Value};

fn schema_tests() -> Option<PathBuf> {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/corpora/sigma/specification/tests/schema"
    ));
    if path.is_dir() {
        Some(path)
    } else {
        println!("SKIP: Sigma specification tests not found at {}", path.display());
        None
    }
}

fn event(value: Value) -> Event {
    let Value::Object(map) = value else { panic!("events are objects") };
    map
}

#[test]
fn schema_test_documents_load_where_they_belong() {
    let Some(dir) = schema_tests() else { return };
    let (rules, report) = RuleSet::load(std::slice::from_ref(&dir), &Pipeline::default_windows());
    println!(
        "{} files, {} rules, {} correlations, problems: {:#?}",
        report.files,
        rules.len(),
        report.correlations.len(),
        report.problems
    );
    // Both example rules load.
    assert_eq!(rules.len(), 2);
    // Every correlation example is handed over, with its origin.
    assert_eq!(report.correlations.len(), 8);
    for correlation in &report.correlations {
        assert!(correlation.origin.starts_with(dir.join("correlation")));
        assert!(correlation.doc.get("correlation").is_some_and(Value::is_object));
    }
    // The example filters name rules that are not in this set: reported, never silent.
    assert_eq!(report.problems.len(), 2);
    for problem in &report.problems {
        assert!(problem.path.starts_with(dir.join("filter")));
        assert!(problem.reason.contains("matches no loaded rule"), "{}", problem.reason);
    }

    let application_error = event(json!({
        "mamori.logsource.product": "windows", "Channel": "Application", "EventID": 1000,
        "Provider_Name": "Application Error"
    }));
    let hits = rules.matching(&application_error);
    assert_eq!(hits.len(), 1);
    assert_eq!(rules.rule(hits[0]).title, "A Title");
    assert_eq!(rules.rule(hits[0]).logsource.service.as_deref(), Some("application"));
    assert_eq!(rules.rule(hits[0]).attack_techniques(), vec!["T1211", "T1562.001"]);
    let dns = event(json!({
        "mamori.logsource.category": "network", "mamori.logsource.service": "dns", "dns.question.name": "SigmaHQ"
    }));
    assert_eq!(rules.matching(&dns).len(), 1);
    let other_dns = event(json!({
        "mamori.logsource.category": "network", "mamori.logsource.service": "dns", "dns.question.name": "example"
    }));
    assert!(rules.matching(&other_dns).is_empty());
}
