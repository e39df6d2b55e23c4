//! Any bytes as JSON correlation documents, loaded, then a few observations and a flush:
//! never panics, whatever the rules say.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use mamori_correlate::{Correlator, Event, RuleRef};
use serde_json::{json, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    // A list is a rule set (chains, duplicates, cycles); anything else is one document.
    let docs: Vec<(PathBuf, Value)> = match value {
        Value::Array(items) => items.into_iter().map(|d| (PathBuf::from("fuzz.yml"), d)).collect(),
        other => vec![(PathBuf::from("fuzz.yml"), other)],
    };
    let (mut correlator, _problems) = Correlator::load(&docs);
    let mut event = Event::new();
    event.insert("host.name".into(), json!("h"));
    event.insert("user.name".into(), json!(["a", "b"]));
    event.insert("bytes".into(), json!(1500));
    let mut out = Vec::new();
    // Observe every reference each loaded rule makes, at times around the window edges.
    let references: Vec<String> = correlator.rules().iter().flat_map(|r| r.rules.clone()).collect();
    for (n, reference) in references.iter().take(16).enumerate() {
        let r = RuleRef { id: Some(reference), name: Some(reference) };
        for time in [0, 1, 59_999, 60_000, i64::MAX, i64::MIN] {
            correlator.observe(r, time, &event, n as u64, &mut out);
        }
    }
    correlator.flush(i64::MAX, &mut out);
    for found in &out {
        let _ = correlator.rule(found.rule_index);
    }
});
