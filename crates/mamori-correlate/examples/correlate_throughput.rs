//! Throughput of `Correlator::observe`: 1M detection matches over 10k hosts, against an
//! event_count, a value_count and a temporal_ordered rule (each match feeds two of them).
//!
//! `cargo run --release -p mamori-correlate --example correlate_throughput`

use std::path::PathBuf;
use std::time::Instant;

use mamori_correlate::{Correlator, Event, RuleRef};
use serde_json::{json, Value};

const OBSERVATIONS: u64 = 1_000_000;
const GROUPS: u64 = 10_000;

fn main() {
    let rules = [
        json!({"title": "burst", "correlation": {"type": "event_count", "rules": ["det_a"],
            "group-by": ["host.name"], "timespan": "5m", "condition": {"gte": 50}}}),
        json!({"title": "many users", "correlation": {"type": "value_count", "rules": ["det_b"],
            "group-by": ["host.name"], "timespan": "10m", "condition": {"field": "user.name", "gte": 20}}}),
        json!({"title": "a then b", "correlation": {"type": "temporal_ordered", "rules": ["det_a", "det_b"],
            "group-by": ["host.name"], "timespan": "1m"}}),
    ];
    let docs: Vec<(PathBuf, Value)> =
        rules.into_iter().map(|doc| (PathBuf::from("bench.yml"), doc)).collect();
    let (mut correlator, problems) = Correlator::load(&docs);
    assert!(problems.is_empty(), "{problems:?}");

    let events: Vec<Event> = (0..GROUPS)
        .map(|i| {
            let mut event = Event::new();
            event.insert("host.name".into(), json!(format!("host-{i:05}")));
            event.insert("user.name".into(), json!(format!("user-{}", i % 37)));
            event.insert("event.action".into(), json!("deny"));
            event
        })
        .collect();
    let det_a = RuleRef { id: Some("0a1b"), name: Some("det_a") };
    let det_b = RuleRef { id: Some("0c2d"), name: Some("det_b") };

    let mut out = Vec::new();
    let mut matches = 0usize;
    // A fixed linear congruential sequence picks the group: the same stream on every run.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let start = Instant::now();
    for n in 0..OBSERVATIONS {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let group = (state >> 33) % GROUPS;
        let r = if state & 1 == 0 { det_a } else { det_b };
        // 1M observations over ~17 minutes of event time: 1 ms apart.
        correlator.observe(r, n as i64, &events[group as usize], n, &mut out);
        matches += out.len();
        out.clear();
    }
    correlator.flush(i64::MAX, &mut out);
    matches += out.len();
    let elapsed = start.elapsed();
    let per_second = OBSERVATIONS as f64 / elapsed.as_secs_f64();
    println!(
        "{OBSERVATIONS} observations over {GROUPS} groups in {:.3} s: {:.0} observations/s; {matches} matches; stats {:?}",
        elapsed.as_secs_f64(),
        per_second,
        correlator.stats()
    );
}
