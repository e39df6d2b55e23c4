//! Stream semantics of every correlation type: windows, groups, ordering, chaining,
//! `generate`, out-of-order arrival and the memory bounds.

mod common;

use common::*;
use mamori_correlate::{Correlator, Limits, RuleRef};
use serde_json::json;

fn host(h: &str) -> [(&'static str, serde_json::Value); 1] {
    [("host.name", json!(h.to_string()))]
}

#[test]
fn event_count_range_is_decided_when_the_window_closes() {
    let rule = r#"
title: between two and three
correlation:
    type: event_count
    rules: [det]
    group-by: [host.name]
    timespan: 10m
    condition: {gte: 2, lte: 3}
"#;
    let mut d = Driver::new(load_ok("r.yml", rule));
    // a: 2 events (in range), b: 4 events (above), c: 1 event (below).
    for (h, n) in [("a", 2), ("b", 4), ("c", 1)] {
        for i in 0..n {
            d.feed("det", i * MINUTE, &host(h));
        }
    }
    assert!(d.take().is_empty(), "undecided while the windows are open");
    // A later event of group a closes its window [0, 10m] and opens a new one.
    d.feed("det", 10 * MINUTE + 1, &host("a"));
    let matches = d.take();
    assert_eq!(matches.len(), 1);
    assert_eq!(matches[0].group[0].1, json!("a"));
    assert_eq!(matches[0].count, 2);
    assert_eq!((matches[0].first_ms, matches[0].last_ms), (0, MINUTE));
    // End of input: b and c are decided (no match), a's new window holds 1 event (no match).
    d.flush(i64::MAX);
    assert!(d.take().is_empty());
    assert_eq!(d.correlator.group_count(), 0, "flush at the end frees every group");
}

#[test]
fn event_count_eq_and_neq() {
    let rules = r#"
title: exactly three
correlation: {type: event_count, rules: [det], group-by: [host.name], timespan: 1h, condition: {eq: 3}}
---
title: not three
correlation: {type: event_count, rules: [det], group-by: [host.name], timespan: 1h, condition: {neq: 3}}
"#;
    let mut d = Driver::new(load_ok("r.yml", rules));
    for i in 0..3 {
        d.feed("det", i * MINUTE, &host("three"));
    }
    for i in 0..4 {
        d.feed("det", i * MINUTE, &host("four"));
    }
    d.flush(i64::MAX);
    let mut got: Vec<(String, serde_json::Value)> = d
        .take()
        .iter()
        .map(|m| (d.correlator.rule(m.rule_index).title.clone(), m.group[0].1.clone()))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![("exactly three".to_string(), json!("three")), ("not three".to_string(), json!("four"))]
    );
}

#[test]
fn value_count_below_a_bound_is_decided_at_window_end() {
    let rule = r#"
title: a single destination port only
correlation:
    type: value_count
    rules: [conn]
    group-by: [source.ip]
    timespan: 5m
    condition: {field: destination.port, lt: 2}
"#;
    let mut d = Driver::new(load_ok("r.yml", rule));
    let conn =
        |ip: &str, port: i64| [("source.ip", json!(ip.to_string())), ("destination.port", json!(port))];
    d.feed("conn", 0, &conn("10.0.0.1", 443));
    d.feed("conn", MINUTE, &conn("10.0.0.1", 443));
    d.feed("conn", 0, &conn("10.0.0.2", 443));
    d.feed("conn", MINUTE, &conn("10.0.0.2", 22));
    d.flush(6 * MINUTE);
    let matches = d.take();
    assert_eq!(matches.len(), 1);
    assert_eq!(matches[0].group[0].1, json!("10.0.0.1"));
    assert_eq!(matches[0].value, Some(1.0));
    assert_eq!(matches[0].count, 2);
}

#[test]
fn value_count_over_several_fields_combines_them() {
    let rule = r#"
title: many user and host pairs
correlation:
    type: value_count
    rules: [det]
    group-by: []
    timespan: 1h
    condition: {field: [user.name, host.name], gte: 3}
"#;
    let mut d = Driver::new(load_ok("r.yml", rule));
    let pair = |u: &str, h: &str| [("user.name", json!(u.to_string())), ("host.name", json!(h.to_string()))];
    d.feed("det", 0, &pair("a", "x"));
    d.feed("det", 1, &pair("a", "y"));
    d.feed("det", 2, &pair("a", "x"));
    d.feed("det", 3, &pair("b", "x"));
    let matches = d.take();
    assert_eq!(matches.len(), 1, "three distinct (user, host) pairs, one global group");
    assert!(matches[0].group.is_empty());
    assert_eq!(matches[0].count, 4);
}

const MALWARE_THEN_TRAFFIC: &str = r#"
title: A then B then C
correlation:
    type: temporal_ordered
    rules: [step_a, step_b, step_c]
    group-by: [host.name]
    timespan: 10m
"#;

#[test]
fn temporal_ordered_needs_the_given_order() {
    let mut d = Driver::new(load_ok("r.yml", MALWARE_THEN_TRAFFIC));
    // Wrong orders on three hosts.
    for (h, order) in [
        ("h1", ["step_b", "step_a", "step_c"]),
        ("h2", ["step_a", "step_c", "step_b"]),
        ("h3", ["step_c", "step_b", "step_a"]),
    ] {
        for (i, rule) in order.iter().enumerate() {
            d.feed(rule, i as i64 * MINUTE, &host(h));
        }
    }
    assert!(d.take().is_empty());
    // h2 now gets the missing C after its B: A(0) B(2m) C(3m) is in order.
    d.feed("step_c", 3 * MINUTE, &host("h2"));
    let matches = d.take();
    assert_eq!(matches.len(), 1);
    assert_eq!(matches[0].group[0].1, json!("h2"));
    assert_eq!((matches[0].first_ms, matches[0].last_ms), (0, 3 * MINUTE));
    assert_eq!(matches[0].count, 3);
}

#[test]
fn temporal_ordered_uses_the_latest_start_that_fits_the_window() {
    let mut d = Driver::new(load_ok("r.yml", MALWARE_THEN_TRAFFIC));
    d.feed("step_a", 0, &host("h"));
    d.feed("step_b", MINUTE, &host("h"));
    // A second A after B: the chain A(0) B(1m) must survive, and C at 10m still fits it.
    d.feed("step_a", 2 * MINUTE, &host("h"));
    d.feed("step_c", 10 * MINUTE, &host("h"));
    let matches = d.take();
    assert_eq!(matches.len(), 1);
    assert_eq!(matches[0].event_refs, vec![1, 2, 4]);
    // A(20m) B(21m) then A(25m) B(26m): C at 34m only fits the later chain (25m..34m).
    d.feed("step_a", 20 * MINUTE, &host("h"));
    d.feed("step_b", 21 * MINUTE, &host("h"));
    d.feed("step_a", 25 * MINUTE, &host("h"));
    d.feed("step_b", 26 * MINUTE, &host("h"));
    d.feed("step_c", 34 * MINUTE, &host("h"));
    let matches = d.take();
    assert_eq!(matches.len(), 1);
    assert_eq!((matches[0].first_ms, matches[0].last_ms), (25 * MINUTE, 34 * MINUTE));
}

#[test]
fn temporal_ordered_with_the_same_rule_twice_needs_two_events() {
    let rule = r#"
title: two detections of X then Y
correlation: {type: temporal_ordered, rules: [det_x, det_y, det_x2], group-by: [host.name], timespan: 1h}
"#;
    let mut d = Driver::new(load_ok("r.yml", rule));
    // det_x is referenced by id at position 0 and by name at position 2.
    let x = RuleRef { id: Some("det_x"), name: Some("det_x2") };
    d.feed_ref(x, 0, &host("h"));
    d.feed("det_y", MINUTE, &host("h"));
    assert!(d.take().is_empty());
    d.feed_ref(x, 2 * MINUTE, &host("h"));
    assert_eq!(d.take().len(), 1);
}

#[test]
fn temporal_with_a_condition_needs_only_that_many_rules() {
    let rule = r#"
title: two of three
correlation:
    type: temporal
    rules: [r1, r2, r3]
    group-by: [host.name]
    timespan: 5m
    condition: {gte: 2}
"#;
    let mut d = Driver::new(load_ok("r.yml", rule));
    d.feed("r1", 0, &host("h"));
    d.feed("r1", MINUTE, &host("h"));
    assert!(d.take().is_empty(), "the same rule twice is one rule");
    d.feed("r3", 2 * MINUTE, &host("h"));
    let matches = d.take();
    assert_eq!(matches.len(), 1);
    assert_eq!(matches[0].count, 2);
    assert_eq!(matches[0].event_refs, vec![2, 3], "newest r1 and r3");
}

#[test]
fn generate_true_reports_referenced_rules_and_inner_correlations() {
    let rules = r#"
title: outer
generate: true
correlation: {type: temporal_ordered, rules: [burst, det_b], group-by: [host.name], timespan: 10m}
---
title: burst
name: burst
correlation: {type: event_count, rules: [det_a], group-by: [host.name], timespan: 10m, condition: {gte: 2}}
"#;
    let mut d = Driver::new(load_ok("r.yml", rules));
    let a = RuleRef { id: None, name: Some("det_a") };
    let b = RuleRef { id: None, name: Some("det_b") };
    // det_a is only referenced by `burst`, which does not set generate.
    assert!(d.correlator.suppress_generated(a));
    // det_b and burst are referenced by `outer`, which does.
    assert!(!d.correlator.suppress_generated(b));
    d.feed("det_a", 0, &host("h"));
    d.feed("det_a", MINUTE, &host("h"));
    assert_eq!(d.take_titles(), vec!["burst"], "inner match reported: outer says generate");
    d.feed("det_b", 2 * MINUTE, &host("h"));
    assert_eq!(d.take_titles(), vec!["outer"]);
}

#[test]
fn generate_inside_the_correlation_section_is_honoured_too() {
    let rule = r#"
title: pySigma style
correlation: {type: event_count, rules: [det_a], group-by: [h], timespan: 1m, condition: {gte: 2}, generate: true}
"#;
    let d = Driver::new(load_ok("r.yml", rule));
    assert!(d.correlator.rule(0).generate);
}

#[test]
fn three_level_chain_passes_event_fields_through() {
    // Inner groups by user; middle by user; outer by host: the host comes from the
    // triggering event carried along the chain.
    let rules = r#"
title: outer
correlation: {type: temporal, rules: [middle, det_c], group-by: [host.name], timespan: 1h}
---
title: middle
name: middle
correlation: {type: temporal_ordered, rules: [inner, det_b], group-by: [user.name], timespan: 1h}
---
title: inner
name: inner
correlation: {type: event_count, rules: [det_a], group-by: [user.name], timespan: 1h, condition: {gte: 2}}
"#;
    let mut d = Driver::new(load_ok("r.yml", rules));
    let at = |u: &str, h: &str| [("user.name", json!(u.to_string())), ("host.name", json!(h.to_string()))];
    d.feed("det_a", 0, &at("u", "pc1"));
    d.feed("det_a", MINUTE, &at("u", "pc1"));
    d.feed("det_b", 2 * MINUTE, &at("u", "pc9"));
    d.feed("det_c", 3 * MINUTE, &at("v", "pc1"));
    assert!(d.take().is_empty(), "middle fired on pc9's event: host pc9, not pc1");
    d.feed("det_c", 4 * MINUTE, &at("w", "pc9"));
    let matches = d.take();
    assert_eq!(matches.len(), 1);
    assert_eq!(d.correlator.rule(matches[0].rule_index).title, "outer");
    assert_eq!(matches[0].group[0].1, json!("pc9"));
    assert_eq!(matches[0].event_refs, vec![1, 2, 3, 5]);
    assert_eq!(d.correlator.stats().matches, 3);
}

#[test]
fn references_work_by_id_or_by_name() {
    let rule = r#"
title: by id and by name
correlation:
    type: temporal
    rules: [7f5c5c4e-1111-4aaa-8bbb-123456789abc, named_rule]
    group-by: [host.name]
    timespan: 1m
"#;
    let mut d = Driver::new(load_ok("r.yml", rule));
    d.feed_ref(RuleRef { id: Some("7f5c5c4e-1111-4aaa-8bbb-123456789abc"), name: None }, 0, &host("h"));
    d.feed_ref(
        RuleRef { id: Some("00000000-0000-4000-8000-000000000000"), name: Some("named_rule") },
        SECOND,
        &host("h"),
    );
    assert_eq!(d.take().len(), 1);
}

#[test]
fn aliases_may_name_the_rule_by_id_and_fall_back_to_the_field_itself() {
    let rule = r#"
title: alias by id
correlation:
    type: temporal
    rules: [11111111-0000-4000-8000-000000000001, det_b]
    group-by: [ip]
    timespan: 1m
    aliases:
        ip:
            11111111-0000-4000-8000-000000000001: source.ip
"#;
    let mut d = Driver::new(load_ok("r.yml", rule));
    d.feed_ref(
        RuleRef { id: Some("11111111-0000-4000-8000-000000000001"), name: None },
        0,
        &[("source.ip", json!("10.0.0.1"))],
    );
    // det_b has no alias entry: its events are grouped by a field literally named `ip`.
    d.feed("det_b", SECOND, &[("ip", json!("10.0.0.1"))]);
    assert_eq!(d.take().len(), 1);
}

#[test]
fn missing_group_fields_are_counted_not_grouped_as_null() {
    let mut d = Driver::new(load_ok("r.yml", MALWARE_THEN_TRAFFIC));
    d.feed("step_a", 0, &[]);
    d.feed("step_b", 1, &[("host.name", serde_json::Value::Null)]);
    d.feed("step_c", 2, &[]);
    assert!(d.take().is_empty());
    assert_eq!(d.correlator.stats().missing_group_field, 3);
    assert_eq!(d.correlator.group_count(), 0);
}

#[test]
fn numbers_and_strings_with_the_same_text_share_a_group() {
    let rule = r#"
title: by event id
correlation: {type: event_count, rules: [det], group-by: [EventID], timespan: 1m, condition: {gte: 2}}
"#;
    let mut d = Driver::new(load_ok("r.yml", rule));
    d.feed("det", 0, &[("EventID", json!(4625))]);
    d.feed("det", 1, &[("EventID", json!("4625"))]);
    assert_eq!(d.take().len(), 1);
}

#[test]
fn out_of_order_events_within_the_timespan_count_older_ones_are_late() {
    let rule = r#"
title: three in ten minutes
correlation: {type: event_count, rules: [det], group-by: [host.name], timespan: 10m, condition: {gte: 3}}
"#;
    let mut d = Driver::new(load_ok("r.yml", rule));
    d.feed("det", 20 * MINUTE, &host("h"));
    // From a slower source: 9 minutes older than the newest, still inside the window.
    d.feed("det", 11 * MINUTE, &host("h"));
    // 10 minutes and 1 ms older than the newest: late.
    d.feed("det", 10 * MINUTE - 1, &host("h"));
    assert!(d.take().is_empty());
    assert_eq!(d.correlator.stats().late_dropped, 1);
    d.feed("det", 15 * MINUTE, &host("h"));
    let matches = d.take();
    assert_eq!(matches.len(), 1);
    assert_eq!((matches[0].first_ms, matches[0].last_ms), (11 * MINUTE, 20 * MINUTE));
    // Entries are kept in time order: refs follow event time, not arrival.
    assert_eq!(matches[0].event_refs, vec![2, 4, 1]);
}

#[test]
fn temporal_ordered_compares_timestamps_not_arrival() {
    let mut d = Driver::new(load_ok("r.yml", MALWARE_THEN_TRAFFIC));
    d.feed("step_a", 5 * MINUTE, &host("h"));
    // B arrives after A but happened before it.
    d.feed("step_b", 4 * MINUTE, &host("h"));
    d.feed("step_c", 6 * MINUTE, &host("h"));
    assert!(d.take().is_empty());
    // Equal timestamps count as in order.
    d.feed("step_b", 5 * MINUTE, &host("h"));
    d.feed("step_c", 5 * MINUTE, &host("h"));
    assert_eq!(d.take().len(), 1);
}

#[test]
fn groups_expire_with_the_timespan_and_allowed_lateness() {
    let rule = r#"
title: pairs
correlation: {type: event_count, rules: [det], group-by: [host.name], timespan: 1m, condition: {gte: 2}}
"#;
    let docs = correlation_docs("r.yml", rule);
    let limits = Limits { allowed_lateness_ms: 30 * SECOND, ..Limits::default() };
    let (correlator, _) = Correlator::load_with_limits(&docs, limits);
    let mut d = Driver::new(correlator);
    for i in 0..100 {
        d.feed("det", 0, &host(&format!("h{i}")));
    }
    assert_eq!(d.correlator.group_count(), 100);
    // The periodic sweep (every 8192 observations) expires groups once the newest event time
    // minus the allowed lateness has passed their window: at 90s the window [0, 60s] is
    // exactly at the horizon and kept; at 90s + 1ms it is gone.
    for _ in 0..8192 {
        d.feed("det", 90 * SECOND, &host("busy"));
    }
    assert_eq!(d.correlator.group_count(), 101);
    for _ in 0..8192 {
        d.feed("det", 90 * SECOND + 1, &host("busy"));
    }
    assert_eq!(d.correlator.group_count(), 1, "only the busy host is left");
    // An explicit flush is the caller saying time has passed: no lateness is added.
    d.take();
    d.flush(90 * SECOND + 1 + 60 * SECOND);
    assert_eq!(d.correlator.group_count(), 1);
    d.flush(90 * SECOND + 1 + 60 * SECOND + 1);
    assert_eq!(d.correlator.group_count(), 0);
}

#[test]
fn the_group_cap_evicts_least_recently_active_and_counts_it() {
    let rule = r#"
title: pairs
correlation: {type: event_count, rules: [det], group-by: [host.name], timespan: 1h, condition: {gte: 2}}
"#;
    let docs = correlation_docs("r.yml", rule);
    let limits = Limits { max_groups_per_rule: 64, ..Limits::default() };
    let (correlator, _) = Correlator::load_with_limits(&docs, limits);
    let mut d = Driver::new(correlator);
    // h0 is the least recently active group when h64 arrives.
    for i in 0..64 {
        d.feed("det", i * SECOND, &host(&format!("h{i}")));
    }
    d.feed("det", 100 * SECOND, &host("h64"));
    assert_eq!(d.correlator.stats().evicted_groups, 4, "a sixteenth of 64");
    assert!(d.correlator.group_count() <= 64);
    // h0's first event was evicted: its second does not make a pair; h10's does.
    d.feed("det", 101 * SECOND, &host("h0"));
    assert!(d.take().is_empty());
    d.feed("det", 102 * SECOND, &host("h10"));
    assert_eq!(d.take().len(), 1);
}

#[test]
fn entries_per_group_are_bounded_and_counted() {
    let rule = r#"
title: huge threshold
correlation: {type: event_count, rules: [det], group-by: [host.name], timespan: 1d, condition: {gte: 1000000}}
"#;
    let docs = correlation_docs("r.yml", rule);
    let limits = Limits { max_entries_per_group: 100, ..Limits::default() };
    let (correlator, _) = Correlator::load_with_limits(&docs, limits);
    let mut d = Driver::new(correlator);
    for i in 0..250 {
        d.feed("det", i, &host("h"));
    }
    assert_eq!(d.correlator.stats().truncated_entries, 150);
}

#[test]
fn unreferenced_rules_are_ignored_cheaply() {
    let mut d = Driver::new(load_ok("r.yml", MALWARE_THEN_TRAFFIC));
    d.feed("something_else", 0, &host("h"));
    assert_eq!(d.correlator.stats().observations, 0);
    assert_eq!(d.correlator.group_count(), 0);
}

#[test]
fn extreme_times_and_zero_limits_do_not_panic() {
    // Every type, every mode, with times at the ends of i64 and limits at zero.
    let rules = r#"
title: count
correlation: {type: event_count, rules: [det_a], group-by: [host.name], timespan: 1m, condition: {gte: 2}}
---
title: range
correlation: {type: event_count, rules: [det_a], group-by: [host.name], timespan: 1m, condition: {gt: 0, lt: 5}}
---
title: values
correlation: {type: value_count, rules: [det_a], group-by: [host.name], timespan: 1m, condition: {field: user.name, gte: 2}}
---
title: sum
correlation: {type: value_sum, rules: [det_a], group-by: [host.name], timespan: 1m, condition: {field: bytes, gt: 1}}
---
title: avg
correlation: {type: value_avg, rules: [det_a], group-by: [host.name], timespan: 1m, condition: {field: bytes, gt: 1}}
---
title: pct
correlation: {type: value_percentile, rules: [det_a], group-by: [host.name], timespan: 1m, condition: {field: user.name, lte: 100}}
---
title: temporal
name: temporal
correlation: {type: temporal, rules: [det_a, det_b], group-by: [host.name], timespan: 1m}
---
title: ordered
correlation: {type: temporal_ordered, rules: [temporal, det_b], group-by: [host.name], timespan: 1m}
"#;
    let docs = correlation_docs("r.yml", rules);
    for limits in [
        Limits::default(),
        Limits {
            max_groups_per_rule: 0,
            max_entries_per_group: 0,
            max_event_refs: 0,
            allowed_lateness_ms: i64::MAX,
        },
    ] {
        let (correlator, problems) = Correlator::load_with_limits(&docs, limits);
        assert!(problems.is_empty(), "{problems:?}");
        let mut d = Driver::new(correlator);
        let fields = [("host.name", json!(["h1", "h2"])), ("user.name", json!("u")), ("bytes", json!(1e308))];
        for time in [i64::MIN, 0, i64::MAX, i64::MIN, 1, i64::MAX] {
            d.feed("det_a", time, &fields);
            d.feed("det_b", time, &fields);
        }
        d.flush(i64::MIN);
        d.flush(i64::MAX);
        assert_eq!(d.correlator.group_count(), 0);
    }
}
