//! Shared helpers: YAML documents to JSON values, and a driver that feeds hand-labelled
//! detection matches to a `Correlator`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use mamori_correlate::{CorrelationMatch, Correlator, Event, LoadProblem, RuleRef};
use serde::Deserialize;
use serde_json::Value;

pub const SECOND: i64 = 1_000;
pub const MINUTE: i64 = 60 * SECOND;
pub const HOUR: i64 = 60 * MINUTE;
pub const DAY: i64 = 24 * HOUR;

/// Every document of a (multi-document) YAML text.
pub fn yaml_docs(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text).map(|doc| Value::deserialize(doc).unwrap()).collect()
}

/// The correlation documents of a YAML text, as the loader would hand them over.
pub fn correlation_docs(origin: &str, text: &str) -> Vec<(PathBuf, Value)> {
    yaml_docs(text)
        .into_iter()
        .filter(|d| d.get("correlation").is_some())
        .map(|d| (PathBuf::from(origin), d))
        .collect()
}

pub fn load_ok(origin: &str, text: &str) -> Correlator {
    let (correlator, problems) = Correlator::load(&correlation_docs(origin, text));
    assert!(problems.is_empty(), "unexpected problems: {problems:#?}");
    correlator
}

pub fn load_all(docs: &[(PathBuf, Value)]) -> (Correlator, Vec<LoadProblem>) {
    Correlator::load(docs)
}

/// Build a flat event from `field => value` pairs.
pub fn event(fields: &[(&str, Value)]) -> Event {
    fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// Feeds detection matches (rule given by hand) and collects the correlation matches.
pub struct Driver {
    pub correlator: Correlator,
    pub out: Vec<CorrelationMatch>,
    next_ref: u64,
}

impl Driver {
    pub fn new(correlator: Correlator) -> Driver {
        Driver { correlator, out: Vec::new(), next_ref: 1 }
    }

    /// Observe one event matched by the detection rule `name` (also used as its id unless
    /// `id` is given via `feed_ref`). Returns the event ref given to it.
    pub fn feed(&mut self, name: &str, time_ms: i64, fields: &[(&str, Value)]) -> u64 {
        self.feed_ref(RuleRef { id: None, name: Some(name) }, time_ms, fields)
    }

    pub fn feed_ref(&mut self, r: RuleRef<'_>, time_ms: i64, fields: &[(&str, Value)]) -> u64 {
        let event_ref = self.next_ref;
        self.next_ref += 1;
        self.correlator.observe(r, time_ms, &event(fields), event_ref, &mut self.out);
        event_ref
    }

    pub fn flush(&mut self, now_ms: i64) {
        self.correlator.flush(now_ms, &mut self.out);
    }

    /// Matches so far, emptied.
    pub fn take(&mut self) -> Vec<CorrelationMatch> {
        std::mem::take(&mut self.out)
    }

    /// Titles of the matched rules, emptied.
    pub fn take_titles(&mut self) -> Vec<String> {
        self.take().iter().map(|m| self.correlator.rule(m.rule_index).title.clone()).collect()
    }
}

/// A corpus path, or `None` (with a message) when the corpora are not present.
pub fn corpus(relative: &str) -> Option<PathBuf> {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/corpora/")).join(relative);
    if path.exists() {
        Some(path)
    } else {
        println!("SKIP: corpus {} not present", path.display());
        None
    }
}
