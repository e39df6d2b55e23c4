//! Scan results as ECS-style JSON objects (Elastic Common Schema field names).
//!
//! One builder per kind of record, shared by `mamori scan --json` and the agent's scheduled
//! scans, so that a finding looks the same on a terminal, in a log pipeline and in the manager.
//! The builders are pure: they add no `@timestamp` (the caller knows when the record was made
//! and adds it) and read no clock, environment or file.
//!
//! Field map:
//! - finding: `event.action` `malware_detected`, `file.path` (with `!member` parts),
//!   `file.name`, `file.size`, `file.hash.sha256`, `rule.name`, `rule.ruleset`,
//!   `rule.category` (`yara`, `hash`, `builtin`), `rule.description`,
//!   `threat.indicator.type` `file` (and `threat.indicator.matched.field` for hash hits),
//!   `tags`, `mamori.file.container_path`, `mamori.file.inner`, `mamori.cached`;
//! - problem: `event.action` `scan_error` (content not scanned) or `scan_warning`,
//!   `file.path`, `error.type`, `error.message`;
//! - warning: `event.action` `scan_warning`, `message`;
//! - quarantined: `event.action` `file_quarantined`, `file.path`, `mamori.quarantine.id`;
//! - summary: `event.action` `scan_summary`, `event.duration` (ns), `event.outcome`, counts
//!   under `mamori.scan`.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use crate::engine::{Finding, FindingKind, LoadReport, Problem};
use crate::walk::Stats;

/// `event.dataset` of every record.
pub const DATASET: &str = "mamori.scan";

/// A detection. `from_cache` tells whether the verdict came from the verdict cache (the file
/// was not read again).
pub fn finding(f: &Finding, from_cache: bool) -> Value {
    let (category, hash_algo) = match &f.kind {
        FindingKind::Yara => ("yara", None),
        FindingKind::Hash(algo) => ("hash", Some(algo.as_str())),
        FindingKind::Builtin => ("builtin", None),
    };
    // The name of the object that matched: the innermost archive member when there is one.
    let name = f
        .inner
        .last()
        .map(|s| s.rsplit('/').next().unwrap_or(s).to_string())
        .or_else(|| f.path.file_name().map(|n| n.to_string_lossy().into_owned()));
    let mut value = json!({
        "event": {
            "kind": "alert",
            "category": ["malware"],
            "type": ["info"],
            "action": "malware_detected",
            "module": "mamori",
            "dataset": DATASET,
        },
        "file": {
            "path": f.display_path(),
            "name": name,
            "size": f.size,
            "hash": {"sha256": f.sha256},
        },
        "rule": {
            "name": f.rule,
            "ruleset": f.ruleset,
            "category": category,
            "description": f.description,
        },
        "threat": {"indicator": {"type": "file"}},
        "tags": f.tags,
        "mamori": {
            "file": {"container_path": f.path, "inner": f.inner},
            "cached": from_cache,
        },
    });
    if let Some(algo) = hash_algo {
        value["threat"]["indicator"]["matched"] = json!({"field": format!("file.hash.{algo}")});
    }
    value
}

/// Something that was not (fully) scanned.
pub fn problem(p: &Problem) -> Value {
    json!({
        "event": {
            "kind": "event",
            "action": if p.kind.is_error() { "scan_error" } else { "scan_warning" },
            "outcome": "failure",
            "dataset": DATASET,
        },
        "file": {"path": p.path},
        "error": {"type": p.kind, "message": p.message},
    })
}

/// A warning that concerns no scanned file (a rule left out, a hash list line skipped).
pub fn warning(message: &str) -> Value {
    json!({
        "event": {"kind": "event", "action": "scan_warning", "dataset": DATASET},
        "message": message,
    })
}

/// A detected file moved into the quarantine store under `id`.
pub fn quarantined(path: &Path, id: &str) -> Value {
    json!({
        "event": {"kind": "event", "action": "file_quarantined", "outcome": "success", "dataset": DATASET},
        "file": {"path": path},
        "mamori": {"quarantine": {"id": id}},
    })
}

/// What a finished scan knows beyond the engine's load report and the walk's [`Stats`].
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Distinct files with at least one finding.
    pub infected_files: u64,
    pub quarantined: u64,
    /// Problems that kept content from being scanned, plus failed responses (quarantine).
    pub errors: u64,
    pub duration: Duration,
    /// 0 nothing found, 1 something found, 2 an error kept content from being scanned.
    pub exit_code: u8,
}

/// The final record of a scan.
pub fn summary(report: &LoadReport, stats: &Stats, outcome: &Outcome) -> Value {
    let rules = report.rules.as_ref();
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    json!({
        "event": {
            "kind": "metric",
            "action": "scan_summary",
            "dataset": DATASET,
            "duration": u64::try_from(outcome.duration.as_nanos()).unwrap_or(u64::MAX),
            "outcome": if outcome.exit_code == 2 { "failure" } else { "success" },
        },
        "mamori": {"scan": {
            "files_scanned": get(&stats.scanned),
            "files_unchanged": get(&stats.cached),
            "bytes_scanned": get(&stats.bytes),
            "findings": get(&stats.findings),
            "infected_files": outcome.infected_files,
            "quarantined": outcome.quarantined,
            "errors": outcome.errors,
            "warnings": get(&stats.notices),
            "special_files_skipped": get(&stats.special),
            "rules_loaded": rules.map_or(0, |r| r.rules),
            "rule_files": rules.map_or(0, |r| r.files),
            "rules_from_cache": rules.is_some_and(|r| r.from_cache),
            "rule_errors": rules.map_or(0, |r| r.errors.len()),
            "hash_indicators": report.hash_indicators,
            "hash_list_errors": report.hash_errors.len(),
            "exit_code": outcome.exit_code,
        }},
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::engine::ProblemKind;

    fn yara_finding_in_archive() -> Finding {
        Finding {
            path: PathBuf::from("/srv/share/outer.zip"),
            inner: vec!["dir/inner.zip".into(), "dir/evil.exe".into()],
            rule: "Evil_Rule".into(),
            ruleset: "/rules/evil.yar".into(),
            kind: FindingKind::Yara,
            tags: vec!["apt".into()],
            description: Some("an evil thing".into()),
            size: 1234,
            sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn finding_fields() {
        let v = finding(&yara_finding_in_archive(), true);
        assert_eq!(v["event"]["action"], "malware_detected");
        assert_eq!(v["event"]["kind"], "alert");
        assert_eq!(v["event"]["dataset"], "mamori.scan");
        assert_eq!(v["file"]["path"], "/srv/share/outer.zip!dir/inner.zip!dir/evil.exe");
        assert_eq!(v["file"]["name"], "evil.exe");
        assert_eq!(v["file"]["size"], 1234);
        assert_eq!(v["file"]["hash"]["sha256"], "ab".repeat(32));
        assert_eq!(v["rule"]["name"], "Evil_Rule");
        assert_eq!(v["rule"]["ruleset"], "/rules/evil.yar");
        assert_eq!(v["rule"]["category"], "yara");
        assert_eq!(v["rule"]["description"], "an evil thing");
        assert_eq!(v["threat"]["indicator"]["type"], "file");
        assert!(v["threat"]["indicator"].get("matched").is_none(), "only hash hits name a matched field");
        assert_eq!(v["tags"], json!(["apt"]));
        assert_eq!(v["mamori"]["file"]["container_path"], "/srv/share/outer.zip");
        assert_eq!(v["mamori"]["file"]["inner"], json!(["dir/inner.zip", "dir/evil.exe"]));
        assert_eq!(v["mamori"]["cached"], true);
        assert!(v.get("@timestamp").is_none(), "the caller adds the time");
    }

    #[test]
    fn hash_finding_names_the_matched_field_and_plain_file_name() {
        let f = Finding {
            path: PathBuf::from("/tmp/x/payload.bin"),
            inner: Vec::new(),
            kind: FindingKind::Hash("md5".into()),
            ruleset: "hashes.txt".into(),
            description: None,
            ..yara_finding_in_archive()
        };
        let v = finding(&f, false);
        assert_eq!(v["file"]["path"], "/tmp/x/payload.bin");
        assert_eq!(v["file"]["name"], "payload.bin");
        assert_eq!(v["rule"]["category"], "hash");
        assert_eq!(v["threat"]["indicator"]["matched"]["field"], "file.hash.md5");
        assert_eq!(v["rule"]["description"], Value::Null);
        assert_eq!(v["mamori"]["cached"], false);
    }

    #[test]
    fn problems_split_into_errors_and_warnings() {
        let err = problem(&Problem {
            path: "/a/b".into(),
            kind: ProblemKind::Unreadable,
            message: "Permission denied".into(),
        });
        assert_eq!(err["event"]["action"], "scan_error");
        assert_eq!(err["event"]["outcome"], "failure");
        assert_eq!(err["file"]["path"], "/a/b");
        assert_eq!(err["error"]["type"], "unreadable");
        assert_eq!(err["error"]["message"], "Permission denied");
        let warn =
            problem(&Problem { path: "/big".into(), kind: ProblemKind::TooLarge, message: "big".into() });
        assert_eq!(warn["event"]["action"], "scan_warning");
        assert_eq!(warn["error"]["type"], "too_large");
        assert_eq!(warning("rule skipped: x")["event"]["action"], "scan_warning");
        assert_eq!(warning("rule skipped: x")["message"], "rule skipped: x");
        let q = quarantined(Path::new("/v/e"), "q1");
        assert_eq!(q["event"]["action"], "file_quarantined");
        assert_eq!(q["mamori"]["quarantine"]["id"], "q1");
    }

    #[test]
    fn summary_counts_and_outcome() {
        let stats = Stats::default();
        stats.scanned.store(10, Ordering::Relaxed);
        stats.cached.store(4, Ordering::Relaxed);
        stats.bytes.store(999, Ordering::Relaxed);
        stats.findings.store(3, Ordering::Relaxed);
        stats.notices.store(2, Ordering::Relaxed);
        stats.special.store(1, Ordering::Relaxed);
        let report = LoadReport { hash_indicators: 7, ..LoadReport::default() };
        let outcome = Outcome {
            infected_files: 2,
            quarantined: 1,
            errors: 0,
            duration: Duration::from_millis(1500),
            exit_code: 1,
        };
        let v = summary(&report, &stats, &outcome);
        assert_eq!(v["event"]["action"], "scan_summary");
        assert_eq!(v["event"]["kind"], "metric");
        assert_eq!(v["event"]["duration"], 1_500_000_000u64);
        assert_eq!(v["event"]["outcome"], "success");
        let s = &v["mamori"]["scan"];
        assert_eq!(s["files_scanned"], 10);
        assert_eq!(s["files_unchanged"], 4);
        assert_eq!(s["bytes_scanned"], 999);
        assert_eq!(s["findings"], 3);
        assert_eq!(s["infected_files"], 2);
        assert_eq!(s["quarantined"], 1);
        assert_eq!(s["warnings"], 2);
        assert_eq!(s["special_files_skipped"], 1);
        assert_eq!(s["rules_loaded"], 0);
        assert_eq!(s["rules_from_cache"], false);
        assert_eq!(s["hash_indicators"], 7);
        assert_eq!(s["exit_code"], 1);
        let failed = summary(&report, &stats, &Outcome { exit_code: 2, ..outcome });
        assert_eq!(failed["event"]["outcome"], "failure");
    }
}
