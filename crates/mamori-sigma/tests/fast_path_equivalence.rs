//! The fast path (literal prefilter + shared per-field Aho-Corasick scans) must give exactly
//! the matches of the reference path (every rule of the logsource, every value matched
//! directly). Events are built from the literals of real SigmaHQ rules, so that many rules
//! match, almost match (filters), or share literals with each other.

use std::path::{Path, PathBuf};

use mamori_sigma::{Event, Pipeline, RuleSet};
use serde_json::{json, Value};

fn rules_dir() -> Option<PathBuf> {
    let path =
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/corpora/sigma/sigmahq/rules"));
    if path.is_dir() {
        Some(path)
    } else {
        println!("SKIP: SigmaHQ corpus not found at {}", path.display());
        None
    }
}

/// (folder under rules/windows, channel, service, EventID)
const SOURCES: &[(&str, &str, &str, u64)] = &[
    ("process_creation", "Microsoft-Windows-Sysmon/Operational", "sysmon", 1),
    ("network_connection", "Microsoft-Windows-Sysmon/Operational", "sysmon", 3),
    ("image_load", "Microsoft-Windows-Sysmon/Operational", "sysmon", 7),
    ("file/file_event", "Microsoft-Windows-Sysmon/Operational", "sysmon", 11),
    ("registry/registry_set", "Microsoft-Windows-Sysmon/Operational", "sysmon", 13),
    ("dns_query", "Microsoft-Windows-Sysmon/Operational", "sysmon", 22),
    ("powershell/powershell_script", "Microsoft-Windows-PowerShell/Operational", "powershell", 4104),
];

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.replace(['*', '?'], "")),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Sets each field of `selection` to a value its first (`pick_last`: last) value matches.
fn fill(event: &mut Event, selection: &Value, pick_last: bool) {
    let Value::Object(map) = selection else { return };
    for (key, value) in map {
        let mut parts = key.split('|');
        let field = parts.next().unwrap_or_default();
        let modifiers: Vec<&str> = parts.collect();
        if field.is_empty()
            || modifiers.iter().any(|m| matches!(*m, "re" | "cidr" | "base64offset" | "exists"))
        {
            continue;
        }
        let values: Vec<String> = match value {
            Value::Array(items) => items.iter().filter_map(text_of).collect(),
            other => text_of(other).into_iter().collect(),
        };
        let chosen = if modifiers.contains(&"all") {
            values.join(" ")
        } else {
            match if pick_last { values.last() } else { values.first() } {
                Some(v) => v.clone(),
                None => continue,
            }
        };
        let text = if modifiers.contains(&"endswith") {
            format!("C:\\Users\\Public\\X{chosen}")
        } else if modifiers.contains(&"startswith") {
            format!("{chosen}Tail.dat")
        } else if modifiers.contains(&"contains") {
            format!("pre {chosen} post")
        } else {
            chosen
        };
        event.insert(field.to_string(), Value::String(text));
    }
}

fn events_from_rule(path: &Path, channel: &str, service: &str, event_id: u64) -> Vec<Event> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    let Ok(doc) = serde_norway::from_str::<Value>(&text) else { return Vec::new() };
    let Some(Value::Object(detection)) = doc.get("detection") else { return Vec::new() };
    let mut events = Vec::new();
    for (pick_last, with_filters) in [(false, false), (true, false), (false, true)] {
        let mut event = Event::new();
        event.insert("mamori.logsource.product".into(), json!("windows"));
        event.insert("mamori.logsource.service".into(), json!(service));
        event.insert("Channel".into(), json!(channel));
        event.insert("EventID".into(), json!(event_id));
        for (name, selection) in detection {
            if name == "condition" || (name.starts_with("filter") && !with_filters) {
                continue;
            }
            match selection {
                Value::Array(items) => {
                    let item = if pick_last { items.last() } else { items.first() };
                    if let Some(item) = item {
                        fill(&mut event, item, pick_last);
                    }
                }
                other => fill(&mut event, other, pick_last),
            }
        }
        events.push(event);
    }
    events
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn fast_path_matches_reference_path_on_rule_derived_events() {
    let Some(dir) = rules_dir() else { return };
    let (rules, _) = RuleSet::load(std::slice::from_ref(&dir), &Pipeline::default_windows());
    let mut events = Vec::new();
    for (folder, channel, service, event_id) in SOURCES {
        for file in yaml_files(&dir.join("windows").join(folder)) {
            for event in events_from_rule(&file, channel, service, *event_id) {
                // The same process creation as Security 4688 (field names mapped by the pipeline).
                if *event_id == 1 {
                    let mut security = event.clone();
                    security.insert("mamori.logsource.service".into(), json!("security"));
                    security.insert("Channel".into(), json!("Security"));
                    security.insert("EventID".into(), json!(4688));
                    for (from, to) in [("Image", "NewProcessName"), ("ParentImage", "ParentProcessName")] {
                        if let Some(value) = security.remove(from) {
                            security.insert(to.into(), value);
                        }
                    }
                    events.push(security);
                }
                events.push(event);
            }
        }
    }
    let (mut fast, mut reference) = (Vec::new(), Vec::new());
    let (mut events_with_matches, mut total_matches) = (0, 0);
    for event in &events {
        fast.clear();
        reference.clear();
        rules.evaluate(event, &mut fast);
        rules.evaluate_exhaustive(event, &mut reference);
        assert_eq!(fast, reference, "fast and reference paths differ on {event:?}");
        total_matches += fast.len();
        events_with_matches += usize::from(!fast.is_empty());
    }
    println!(
        "{} rule-derived events, {events_with_matches} with matches, {total_matches} matches",
        events.len()
    );
    // The events must exercise matching, not only non-matching.
    assert!(events.len() > 3000);
    assert!(events_with_matches * 2 > events.len(), "too few events match: {events_with_matches}");
}
