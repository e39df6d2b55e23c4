//! Any text as Sigma rule YAML: loading never panics, and whatever loads evaluates against a
//! fixed event without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mamori_sigma::{Event, Pipeline, RuleSet};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (rules, _report) = RuleSet::from_yaml(text, &Pipeline::default_windows());
    let mut event = Event::new();
    event.insert("mamori.logsource.product".into(), "windows".into());
    event.insert("Channel".into(), "Microsoft-Windows-Sysmon/Operational".into());
    event.insert("EventID".into(), 1.into());
    event.insert("Image".into(), "C:\\Windows\\System32\\cmd.exe".into());
    event.insert("CommandLine".into(), "cmd.exe /c whoami /all".into());
    event.insert("Tags".into(), serde_json::json!(["a", 1, true, null]));
    let mut matches = Vec::new();
    rules.evaluate(&event, &mut matches);
    for index in matches {
        let _ = rules.rule(index);
    }
});
