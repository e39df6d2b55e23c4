//! The specification's own material: the schema test documents of the sigma-specification
//! repository (read from the shared corpus), the examples of the correlation specification
//! (v2.1.0) run as streams, and documents the schema or the spec refuse.

mod common;

use std::path::PathBuf;

use common::*;
use mamori_correlate::{Condition, CorrelationType, Correlator, RuleRef};
use serde_json::{json, Value};

/// File, type, timespan, group-by and condition field.
type SchemaExpectation = (&'static str, CorrelationType, i64, &'static [&'static str], Option<&'static str>);

/// Expected parse of each schema test file, written from the file text by hand.
const SCHEMA_FILES: &[SchemaExpectation] = &[
    ("event_count.yml", CorrelationType::EventCount, HOUR, &["ComputerName"], None),
    ("event_count_ecs.yml", CorrelationType::EventCount, HOUR, &["dns.question.name"], None),
    ("temporal.yml", CorrelationType::Temporal, 5 * MINUTE, &["ComputerName", "User"], None),
    ("temporal_ordered.yml", CorrelationType::TemporalOrdered, 5 * MINUTE, &["ComputerName", "User"], None),
    ("value_avg.yml", CorrelationType::ValueAvg, DAY, &["SourceIP", "User"], Some("BytesOut")),
    ("value_count.yml", CorrelationType::ValueCount, DAY, &["ComputerName", "WorkstationName"], Some("User")),
    ("value_percentile.yml", CorrelationType::ValuePercentile, DAY, &["ComputerName"], Some("Image")),
    ("value_sum.yml", CorrelationType::ValueSum, HOUR, &["SourceIP", "User"], Some("bytes_sent")),
];

#[test]
fn schema_test_documents_all_load_with_the_right_meaning() {
    let Some(dir) = corpus("sigma/specification/tests/schema/correlation") else {
        return;
    };
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<(PathBuf, Value)> = yaml_docs(&text).into_iter().map(|d| (path.clone(), d)).collect();
        let (correlator, problems) = Correlator::load(&docs);
        assert!(problems.is_empty(), "{}: {problems:?}", path.display());
        assert_eq!(correlator.len(), 1, "{}", path.display());
        let file = path.file_name().unwrap().to_str().unwrap();
        let (_, kind, span, group_by, field) = SCHEMA_FILES
            .iter()
            .find(|(name, ..)| *name == file)
            .unwrap_or_else(|| panic!("schema test {file} has no expectation here"));
        let info = correlator.rule(0);
        assert_eq!(info.kind, *kind, "{file}");
        assert_eq!(info.timespan_ms, *span, "{file}");
        assert_eq!(info.group_by, *group_by, "{file}");
        assert_eq!(info.fields.first().map(String::as_str), *field, "{file}");
        seen += 1;
    }
    assert_eq!(seen, SCHEMA_FILES.len(), "schema test files changed");
}

#[test]
fn schema_test_conditions_are_read_exactly() {
    let Some(dir) = corpus("sigma/specification/tests/schema/correlation") else {
        return;
    };
    let load = |file: &str| {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        load_ok(file, &text).rule(0).condition.clone()
    };
    let gte = |n: f64| Condition { gte: Some(n), ..Condition::default() };
    let gt = |n: f64| Condition { gt: Some(n), ..Condition::default() };
    assert_eq!(load("event_count.yml"), gte(100.0));
    assert_eq!(load("value_count.yml"), gte(100.0));
    assert_eq!(load("value_sum.yml"), gt(1_000_000.0));
    assert_eq!(load("value_avg.yml"), gt(500.0));
    assert_eq!(load("value_percentile.yml"), Condition { lte: Some(1.0), ..Condition::default() });
    // temporal without a condition: every referenced rule (three) must be seen.
    assert_eq!(load("temporal.yml"), gte(3.0));
}

const MANY_FAILED_LOGINS: &str = r#"
title: Many failed logins
id: 0e95725d-7320-415d-80f7-004da920fc11
correlation:
    type: event_count
    rules:
        - 5638f7c0-ac70-491d-8465-2a65075e0d86
    group-by:
        - ComputerName
    timespan: 1h
    condition:
        gte: 100
"#;

fn failed_login(id: &str) -> RuleRef<'_> {
    RuleRef { id: Some(id), name: Some("failed_login") }
}

#[test]
fn spec_event_count_example_100_failed_logins_in_an_hour() {
    let mut d = Driver::new(load_ok("ec.yml", MANY_FAILED_LOGINS));
    let id = "5638f7c0-ac70-491d-8465-2a65075e0d86";
    // 99 failures on host A within 59 minutes, 100 on B spread over 2 hours: nothing.
    for i in 0..99 {
        d.feed_ref(failed_login(id), i * 36 * SECOND, &[("ComputerName", json!("A"))]);
    }
    for i in 0..100 {
        d.feed_ref(failed_login(id), i * 72 * SECOND, &[("ComputerName", json!("B"))]);
    }
    assert!(d.take().is_empty());
    // The 100th failure on A, still inside the hour that started with the first one.
    let hundredth = d.feed_ref(failed_login(id), 3599 * SECOND, &[("ComputerName", json!("A"))]);
    let matches = d.take();
    assert_eq!(matches.len(), 1);
    let m = &matches[0];
    assert_eq!(m.group, vec![("ComputerName".to_string(), json!("A"))]);
    assert_eq!(m.count, 100);
    assert_eq!((m.first_ms, m.last_ms), (0, 3599 * SECOND));
    assert_eq!(m.event_refs.len(), 32, "refs are bounded");
    assert_eq!(m.event_refs.first(), Some(&1));
    assert_eq!(m.event_refs.last(), Some(&hundredth));
    // The group starts over after a match: one more failure does not fire again.
    d.feed_ref(failed_login(id), 3600 * SECOND, &[("ComputerName", json!("A"))]);
    assert!(d.take().is_empty());
}

#[test]
fn spec_value_count_example_100_users_per_source_and_destination() {
    let rule = r#"
title: Failed login
id: 0e95725d-7320-415d-80f7-004da920fc12
correlation:
    type: value_count
    rules:
        - 5638f7c0-ac70-491d-8465-2a65075e0d86
    group-by:
        - ComputerName
        - WorkstationName
    timespan: 1d
    condition:
        field: User
        gte: 100
"#;
    let mut d = Driver::new(load_ok("vc.yml", rule));
    let id = "5638f7c0-ac70-491d-8465-2a65075e0d86";
    let at = |user: String| {
        [("ComputerName", json!("DC1")), ("WorkstationName", json!("WS7")), ("User", json!(user))]
    };
    // 500 failures for only 99 distinct users: no match.
    for i in 0..500 {
        d.feed_ref(failed_login(id), i * MINUTE, &at(format!("user{}", i % 99)));
    }
    assert!(d.take().is_empty());
    // The 100th distinct user within the day.
    d.feed_ref(failed_login(id), 501 * MINUTE, &at("user-new".to_string()));
    let matches = d.take();
    assert_eq!(matches.len(), 1);
    assert_eq!(matches[0].value, Some(100.0));
    assert_eq!(
        matches[0].group,
        vec![("ComputerName".to_string(), json!("DC1")), ("WorkstationName".to_string(), json!("WS7"))]
    );
}

#[test]
fn spec_temporal_example_recon_commands_in_any_order_within_5_minutes() {
    let rule = r#"
title: Recon
correlation:
    type: temporal
    rules:
        - recon_cmd_a
        - recon_cmd_b
        - recon_cmd_c
    group-by:
        - ComputerName
        - User
    timespan: 5m
"#;
    let mut d = Driver::new(load_ok("t.yml", rule));
    let who = |user: &str| [("ComputerName", json!("PC1")), ("User", json!(user))];
    d.feed("recon_cmd_c", 0, &who("alice"));
    d.feed("recon_cmd_a", MINUTE, &who("alice"));
    d.feed("recon_cmd_b", 2 * MINUTE, &who("bob")); // other user: other group
    assert!(d.take().is_empty());
    d.feed("recon_cmd_b", 5 * MINUTE, &who("alice"));
    let matches = d.take();
    assert_eq!(matches.len(), 1);
    assert_eq!((matches[0].first_ms, matches[0].last_ms), (0, 5 * MINUTE));
    assert_eq!(matches[0].count, 3);
    assert_eq!(matches[0].event_refs, vec![1, 2, 4]);
    // Same three, but c is 5 minutes and 1 second before b: too far apart.
    d.feed("recon_cmd_c", 10 * MINUTE, &who("carol"));
    d.feed("recon_cmd_a", 12 * MINUTE, &who("carol"));
    d.feed("recon_cmd_b", 15 * MINUTE + SECOND, &who("carol"));
    assert!(d.take().is_empty());
}

/// The complete example at the end of the spec: a multi-document file with a chained
/// correlation and its detection rules, referenced by name.
const SPEC_FULL_EXAMPLE: &str = r#"
title: Correlation - Multiple Failed Logins Followed by Successful Login
id: b180ead8-d58f-40b2-ae54-c8940995b9b6
status: experimental
description: Detects multiple failed logins by a single user followed by a successful login of that user
references:
    - https://reference.com
author: Florian Roth (Nextron Systems)
date: 2023-06-16
correlation:
    type: temporal_ordered
    rules:
        - multiple_failed_login
        - successful_login
    group-by:
        - User
    timespan: 10m
falsepositives:
    - Unlikely
level: high
---
title: Multiple failed logons
id: a8418a5a-5fc4-46b5-b23b-6c73beb19d41
description: Detects multiple failed logins within a certain amount of time
name: multiple_failed_login
correlation:
    type: event_count
    rules:
        - failed_login
    group-by:
        - User
    timespan: 10m
    condition:
        gte: 10
---
title: Single failed login
id: 53ba33fd-3a50-4468-a5ef-c583635cfa92
name: failed_login
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID:
            - 529
            - 4625
    condition: selection
---
title: Successful login
id: 4d0a2c83-c62c-4ed4-b475-c7e23a9269b8
description: Detects a successful login
name: successful_login
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID:
            - 528
            - 4624
    condition: selection
"#;

fn failed(user: &str) -> [(&'static str, Value); 2] {
    [("EventID", json!(4625)), ("User", json!(user.to_string()))]
}

fn succeeded(user: &str) -> [(&'static str, Value); 2] {
    [("EventID", json!(4624)), ("User", json!(user.to_string()))]
}

const FAILED: RuleRef<'static> =
    RuleRef { id: Some("53ba33fd-3a50-4468-a5ef-c583635cfa92"), name: Some("failed_login") };
const SUCCESS: RuleRef<'static> =
    RuleRef { id: Some("4d0a2c83-c62c-4ed4-b475-c7e23a9269b8"), name: Some("successful_login") };

#[test]
fn spec_full_example_chains_event_count_into_temporal_ordered() {
    let correlator = load_ok("spec_example.yml", SPEC_FULL_EXAMPLE);
    assert_eq!(correlator.len(), 2);
    assert!(correlator.is_referenced(FAILED) && correlator.is_referenced(SUCCESS));
    // Neither correlation sets `generate`: the detections and the inner correlation are not
    // reported on their own.
    assert!(correlator.suppress_generated(FAILED));
    assert!(correlator.suppress_generated(SUCCESS));
    assert!(correlator.suppress_generated(RuleRef { id: None, name: Some("multiple_failed_login") }));
    let unrelated = RuleRef { id: Some("x"), name: Some("other") };
    assert!(!correlator.is_referenced(unrelated) && !correlator.suppress_generated(unrelated));

    let mut d = Driver::new(correlator);
    // mallory: 10 failures in 9 minutes, then success 1 minute later.
    for i in 0..10 {
        d.feed_ref(FAILED, i * MINUTE, &failed("mallory"));
    }
    // alice: only 9 failures, then success.
    for i in 0..9 {
        d.feed_ref(FAILED, i * MINUTE, &failed("alice"));
    }
    d.feed_ref(SUCCESS, 10 * MINUTE, &succeeded("alice"));
    assert!(d.take().is_empty(), "the inner match is not emitted on its own");
    let success_ref = d.feed_ref(SUCCESS, 10 * MINUTE, &succeeded("mallory"));
    let matches = d.take();
    assert_eq!(matches.len(), 1);
    let m = &matches[0];
    assert_eq!(d.correlator.rule(m.rule_index).level.as_deref(), Some("high"));
    assert_eq!(m.group, vec![("User".to_string(), json!("mallory"))]);
    assert_eq!((m.first_ms, m.last_ms), (9 * MINUTE, 10 * MINUTE));
    // The ten failures (refs 1..=10, via the chained match) then the success.
    let mut expected: Vec<u64> = (1..=10).collect();
    expected.push(success_ref);
    assert_eq!(m.event_refs, expected);
    assert_eq!(d.correlator.stats().matches, 2, "inner + outer");
}

#[test]
fn spec_full_example_success_before_the_failures_does_not_fire() {
    let mut d = Driver::new(load_ok("spec_example.yml", SPEC_FULL_EXAMPLE));
    d.feed_ref(SUCCESS, 0, &succeeded("mallory"));
    for i in 1..=10 {
        d.feed_ref(FAILED, i * 30 * SECOND, &failed("mallory"));
    }
    assert!(d.take().is_empty());
    // And a success 11 minutes after the burst completed is outside the 10-minute window.
    d.feed_ref(SUCCESS, 5 * MINUTE + 11 * MINUTE, &succeeded("mallory"));
    d.flush(i64::MAX);
    assert!(d.take().is_empty());
}

#[test]
fn spec_value_sum_example_exfiltration() {
    let rule = r#"
title: Possible Exfiltration to Website
correlation:
    type: value_sum
    rules:
        - website_access
    group-by:
        - SourceIP
        - User
    timespan: 1h
    condition:
        field: bytes_sent
        gt: 1000000
"#;
    let mut d = Driver::new(load_ok("vs.yml", rule));
    let access =
        |bytes: Value| [("SourceIP", json!("10.1.2.3")), ("User", json!("bob")), ("bytes_sent", bytes)];
    d.feed("website_access", 0, &access(json!(600_000)));
    // Exactly 1,000,000 in total is not "greater than".
    d.feed("website_access", 10 * MINUTE, &access(json!("400000")));
    assert!(d.take().is_empty());
    // The first 600,000 fall out of the hour before this one arrives.
    d.feed("website_access", 61 * MINUTE, &access(json!(500_000)));
    assert!(d.take().is_empty());
    d.feed("website_access", 62 * MINUTE, &access(json!(100_001)));
    let matches = d.take();
    assert_eq!(matches.len(), 1);
    assert_eq!(matches[0].value, Some(1_000_001.0));
    assert_eq!(matches[0].count, 3);
    // A non-numeric byte count is counted, not guessed.
    d.feed("website_access", 63 * MINUTE, &access(json!("lots")));
    assert_eq!(d.correlator.stats().missing_value_field, 1);
}

#[test]
fn spec_value_avg_example_decided_when_the_window_closes() {
    let rule = r#"
title: Suspicious average network traffic
correlation:
    type: value_avg
    rules:
        - rule_a_id
    group-by:
        - SourceIP
        - User
    timespan: 24h
    condition:
        field: BytesOut
        gt: 500
"#;
    let mut d = Driver::new(load_ok("va.yml", rule));
    let traffic = |ip: &str, bytes: i64| {
        [("SourceIP", json!(ip.to_string())), ("User", json!("u")), ("BytesOut", json!(bytes))]
    };
    // 10.0.0.1 averages (1000 + 200 + 600) / 3 = 600; 10.0.0.2 averages 450.
    d.feed("rule_a_id", 0, &traffic("10.0.0.1", 1000));
    d.feed("rule_a_id", HOUR, &traffic("10.0.0.1", 200));
    d.feed("rule_a_id", 2 * HOUR, &traffic("10.0.0.1", 600));
    d.feed("rule_a_id", 0, &traffic("10.0.0.2", 800));
    d.feed("rule_a_id", HOUR, &traffic("10.0.0.2", 100));
    // The first event alone averages 1000, but nothing is decided before the day is over.
    assert!(d.take().is_empty());
    d.flush(DAY);
    assert!(d.take().is_empty(), "window [0, 24h] is still open at 24h");
    d.flush(DAY + 1);
    let matches = d.take();
    assert_eq!(matches.len(), 1);
    assert_eq!(matches[0].value, Some(600.0));
    assert_eq!(matches[0].group[0].1, json!("10.0.0.1"));
    assert_eq!(matches[0].event_refs, vec![1, 2, 3]);
}

#[test]
fn spec_value_percentile_example_rare_process_per_computer() {
    let rule = r#"
title: A computer spawned a processes name in the last 24h than 1% of all the processes.
correlation:
    type: value_percentile
    rules:
        - process_creation
    group-by:
        - ComputerName
    timespan: 24h
    condition:
        field: Image
        lte: 1
"#;
    let mut d = Driver::new(load_ok("vp.yml", rule));
    let process = |image: &str| [("ComputerName", json!("PC1")), ("Image", json!(image.to_string()))];
    // 150 ordinary process starts; each image is 50% of the window or more once there are
    // two, and the first starts are 100%: nothing is rare.
    for i in 0..150 {
        let image = if i % 2 == 0 { "C:\\svchost.exe" } else { "C:\\explorer.exe" };
        d.feed("process_creation", i * MINUTE, &process(image));
    }
    assert!(d.take().is_empty());
    // One start of a new image: 1 of 151 = 0.66% ≤ 1%.
    let rare = d.feed("process_creation", 151 * MINUTE, &process("C:\\Users\\x\\AppData\\evil.exe"));
    let matches = d.take();
    assert_eq!(matches.len(), 1);
    let share = matches[0].value.unwrap();
    assert!((share - 100.0 / 151.0).abs() < 1e-9, "{share}");
    assert_eq!(matches[0].event_refs, vec![rare]);
}

#[test]
fn spec_alias_example_groups_source_and_destination_across_rules() {
    let rule = r#"
title: internal error then connection back
id: 11111111-2222-4333-8444-555555555555
correlation:
    type: temporal
    rules:
        - internal_error
        - new_network_connection
    group-by:
        - internal_ip
        - remote_ip
    timespan: 10s
    aliases:
        internal_ip:
            internal_error: destination.ip
            new_network_connection: source.ip
        remote_ip:
            internal_error: source.ip
            new_network_connection: destination.ip
"#;
    let mut d = Driver::new(load_ok("alias.yml", rule));
    let error = [
        ("destination.ip", json!("10.0.0.5")),
        ("source.ip", json!("203.0.113.9")),
        ("http.response.status_code", json!(500)),
    ];
    d.feed("internal_error", 0, &error);
    // A connection in the same direction as the error does not share the aliased values.
    d.feed(
        "new_network_connection",
        2 * SECOND,
        &[("source.ip", json!("203.0.113.9")), ("destination.ip", json!("10.0.0.5"))],
    );
    assert!(d.take().is_empty());
    // The internal host connecting back to the remote one does.
    d.feed(
        "new_network_connection",
        9 * SECOND,
        &[("source.ip", json!("10.0.0.5")), ("destination.ip", json!("203.0.113.9"))],
    );
    let matches = d.take();
    assert_eq!(matches.len(), 1);
    assert_eq!(
        matches[0].group,
        vec![("internal_ip".to_string(), json!("10.0.0.5")), ("remote_ip".to_string(), json!("203.0.113.9"))]
    );
}

fn problems_of(yaml: &str) -> Vec<String> {
    let docs: Vec<(PathBuf, Value)> =
        yaml_docs(yaml).into_iter().map(|d| (PathBuf::from("bad.yml"), d)).collect();
    let (_, problems) = Correlator::load(&docs);
    problems.into_iter().map(|p| p.reason).collect()
}

fn base(correlation: &str) -> String {
    format!("title: t\nid: 9d2b8a1c-0000-4000-8000-000000000001\ncorrelation:\n{correlation}")
}

#[test]
fn documents_the_schema_or_spec_refuse_get_precise_reasons() {
    let cases: &[(String, &str)] = &[
        ("- just a list".to_string(), "must be a map"),
        ("title: t\n".to_string(), "no `correlation` section"),
        (
            "correlation:\n  type: temporal\n  rules: [aa, bb]\n  group-by: [x]\n  timespan: 1m\n"
                .to_string(),
            "`title` is missing",
        ),
        (base("  type: event_sum\n  rules: [aa]\n  group-by: [x]\n  timespan: 1m\n  condition: {gte: 1}\n"), "\"event_sum\" is not supported"),
        (base("  rules: [aa]\n  group-by: [x]\n  timespan: 1m\n"), "`correlation.type` is missing"),
        (base("  type: event_count\n  group-by: [x]\n  timespan: 1m\n  condition: {gte: 1}\n"), "`correlation.rules` is missing"),
        (base("  type: event_count\n  rules: []\n  group-by: [x]\n  timespan: 1m\n  condition: {gte: 1}\n"), "`correlation.rules` is empty"),
        (base("  type: event_count\n  rules: [aa, aa]\n  group-by: [x]\n  timespan: 1m\n  condition: {gte: 1}\n"), "lists \"aa\" twice"),
        (base("  type: event_count\n  rules: [aa]\n  timespan: 1m\n  condition: {gte: 1}\n"), "`correlation.group-by` is missing"),
        (base("  type: event_count\n  rules: [aa]\n  group-by: [x]\n  condition: {gte: 1}\n"), "`correlation.timespan` is missing"),
        (base("  type: event_count\n  rules: [aa]\n  group-by: [x]\n  timespan: 10\n  condition: {gte: 1}\n"), "has no unit"),
        (base("  type: event_count\n  rules: [aa]\n  group-by: [x]\n  timespan: 1H\n  condition: {gte: 1}\n"), "unknown unit"),
        (base("  type: event_count\n  rules: [aa]\n  group-by: [x]\n  timespan: 1m\n"), "`correlation.condition` is missing"),
        (base("  type: event_count\n  rules: [aa]\n  group-by: [x]\n  timespan: 1m\n  condition: {greater: 1}\n"), "unknown condition operator `greater`"),
        (base("  type: event_count\n  rules: [aa]\n  group-by: [x]\n  timespan: 1m\n  condition: {gte: ten}\n"), "must be a number"),
        (base("  type: event_count\n  rules: [aa]\n  group-by: [x]\n  timespan: 1m\n  condition: {gte: 1, field: y}\n"), "has no meaning for event_count"),
        (base("  type: value_count\n  rules: [aa]\n  group-by: [x]\n  timespan: 1m\n  condition: {gte: 1}\n"), "`correlation.condition.field` is missing"),
        (base("  type: value_sum\n  rules: [aa]\n  group-by: [x]\n  timespan: 1m\n  condition: {gte: 1, field: [a, b]}\n"), "adds up one numeric field"),
        (base("  type: temporal\n  rules: [aa, bb]\n  group-by: [x]\n  timespan: 1m\n  condition: {lt: 2}\n"), "support gt, gte and eq only"),
        (base("  type: temporal_ordered\n  rules: [aa]\n  group-by: [x]\n  timespan: 1m\n"), "at least two rules"),
        (base("  type: temporal\n  rules: [aa, bb]\n  group-by: [x]\n  timespan: 1m\n  aliases: {ip: [a, b]}\n"), "`correlation.aliases.ip` must map rule names"),
        (base("  type: temporal\n  rules: [aa, bb]\n  group-by: [x]\n  timespan: 1m\n  groupby: [y]\n"), "unknown attribute `correlation.groupby`"),
        (format!("level: severe\n{}", base("  type: temporal\n  rules: [aa, bb]\n  group-by: [x]\n  timespan: 1m\n")), "`level` \"severe\""),
        (format!("generate: yes please\n{}", base("  type: temporal\n  rules: [aa, bb]\n  group-by: [x]\n  timespan: 1m\n")), "`generate` must be true or false"),
        (format!("title: {}\ncorrelation:\n  type: temporal\n  rules: [aa, bb]\n  group-by: [x]\n  timespan: 1m\n", "x".repeat(257)), "longer than 256"),
    ];
    for (yaml, expected) in cases {
        let problems = problems_of(yaml);
        assert_eq!(problems.len(), 1, "{yaml}\n→ {problems:?}");
        assert!(problems[0].contains(expected), "{yaml}\nexpected {expected:?} in {:?}", problems[0]);
    }
}

#[test]
fn bad_documents_are_reported_with_origin_and_the_rest_load() {
    let good = yaml_docs(MANY_FAILED_LOGINS).remove(0);
    let bad = json!({"title": "Broken", "id": "abc-1", "correlation": {"type": "event_count"}});
    let docs = vec![(PathBuf::from("rules/good.yml"), good), (PathBuf::from("rules/broken.yml"), bad)];
    let (correlator, problems) = Correlator::load(&docs);
    assert_eq!(correlator.len(), 1);
    assert_eq!(correlator.rule(0).title, "Many failed logins");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].origin, PathBuf::from("rules/broken.yml"));
    assert_eq!(problems[0].rule.as_deref(), Some("Broken (abc-1)"));
    assert_eq!(problems[0].reason, "`correlation.rules` is missing (mandatory)");
    assert_eq!(
        problems[0].to_string(),
        "rules/broken.yml: Broken (abc-1): `correlation.rules` is missing (mandatory)"
    );
}

#[test]
fn duplicate_ids_cycles_and_broken_chains_are_refused() {
    let yaml = r#"
title: first
id: same-id
correlation: {type: event_count, rules: [det_a], group-by: [h], timespan: 1m, condition: {gte: 2}}
---
title: second with the same id
id: same-id
correlation: {type: event_count, rules: [det_a], group-by: [h], timespan: 1m, condition: {gte: 2}}
---
title: loop one
name: loop_one
correlation: {type: event_count, rules: [loop_two], group-by: [h], timespan: 1m, condition: {gte: 2}}
---
title: loop two
name: loop_two
correlation: {type: event_count, rules: [loop_one], group-by: [h], timespan: 1m, condition: {gte: 2}}
---
title: broken inner
name: broken_inner
correlation: {type: event_count, rules: [det_a], group-by: [h], timespan: 1 minute, condition: {gte: 2}}
---
title: outer of broken
name: outer_of_broken
correlation: {type: temporal, rules: [broken_inner, det_b], group-by: [h], timespan: 1m}
---
title: outer of outer
correlation: {type: temporal, rules: [outer_of_broken, det_c], group-by: [h], timespan: 1m}
"#;
    let problems = problems_of(yaml);
    assert_eq!(problems.len(), 6, "{problems:#?}");
    assert!(problems.iter().any(|p| p.contains("\"same-id\" is already used")));
    assert_eq!(problems.iter().filter(|p| p.contains("loops back on itself")).count(), 2);
    assert!(problems.iter().any(|p| p.contains("\"1 minute\" is not a number followed by a unit")));
    assert!(problems.iter().any(|p| p == "references correlation rule \"broken_inner\", which did not load"));
    assert!(problems
        .iter()
        .any(|p| p == "references correlation rule \"outer_of_broken\", which did not load"));
    let docs = correlation_docs("x.yml", yaml);
    let (correlator, _) = Correlator::load(&docs);
    assert_eq!(correlator.len(), 1);
    assert_eq!(correlator.rule(0).title, "first");
}
