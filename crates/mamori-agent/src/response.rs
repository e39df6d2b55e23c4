//! Responses to detections: moving files with malware findings into the quarantine store, or
//! (dry run) saying that it would have. Every action is a `response.action` event.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use mamori_proto::{kind, DetectionKind, ResponseActionKind, ResponsePolicy, Severity};
use mamori_quarantine::{Detection, Store};
use mamori_scan::Finding;
use serde_json::{json, Value};

use crate::scan::Outgoing;
use crate::state;

/// Severity of every malware finding (YARA rule, hash IOC, built-in): a known-bad file on the
/// host. Response rules for `malware` match it with `min_severity` up to `high`.
pub(crate) const MALWARE_SEVERITY: Severity = Severity::High;

/// `<agent dir>/quarantine`.
pub(crate) const QUARANTINE_DIR: &str = "quarantine";

/// What one response did.
#[derive(Debug)]
pub(crate) struct Action {
    /// The `response.action` event.
    pub event: Outgoing,
    /// The file really was moved into the quarantine.
    pub quarantined: bool,
    /// The action was attempted and failed.
    pub failed: bool,
}

/// Quarantines (or, in dry run, reports) files with findings. The store is opened on first use
/// and kept; a store that cannot be opened makes every action a reported failure.
pub(crate) struct Responder {
    dir: PathBuf,
    store: Option<Result<Store, String>>,
}

impl Responder {
    pub(crate) fn new(agent_dir: &Path) -> Responder {
        Responder { dir: agent_dir.join(QUARANTINE_DIR), store: None }
    }

    fn store(&mut self) -> Result<&Store, String> {
        let dir = &self.dir;
        let s = self.store.get_or_insert_with(|| {
            Store::open(dir).map_err(|e| format!("quarantine store {}: {e}", dir.display()))
        });
        s.as_ref().map_err(Clone::clone)
    }

    /// Applies `policy` to `path` (whose first finding is `finding`). `None` when the policy asks
    /// for nothing. `trigger` says what found it (`on_write`, `scheduled`).
    pub(crate) fn respond(
        &mut self,
        policy: &ResponsePolicy,
        path: &Path,
        finding: &Finding,
        trigger: &str,
    ) -> Option<Action> {
        if !policy
            .actions_for(DetectionKind::Malware, MALWARE_SEVERITY)
            .contains(&ResponseActionKind::Quarantine)
        {
            return None;
        }
        Some(self.quarantine(policy.dry_run, path, finding, trigger))
    }

    /// Quarantines `path` (or reports that it would, when `dry_run`).
    pub(crate) fn quarantine(
        &mut self,
        dry_run: bool,
        path: &Path,
        finding: &Finding,
        trigger: &str,
    ) -> Action {
        if dry_run {
            let data = action_event(path, finding, trigger, true, "would_quarantine", "unknown", None, None);
            return Action {
                event: Outgoing { kind: kind::RESPONSE_ACTION, data },
                quarantined: false,
                failed: false,
            };
        }
        let detection = Detection { rule: &finding.rule, ruleset: &finding.ruleset };
        let result = self.store().and_then(|s| s.quarantine(path, detection).map_err(|e| e.to_string()));
        match result {
            Ok(record) => {
                tracing::info!(path = %path.display(), id = %record.id, "file quarantined");
                let data = action_event(
                    path,
                    finding,
                    trigger,
                    false,
                    "file_quarantined",
                    "success",
                    Some(&record.id),
                    None,
                );
                Action {
                    event: Outgoing { kind: kind::RESPONSE_ACTION, data },
                    quarantined: true,
                    failed: false,
                }
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "could not quarantine: {e}");
                let data = action_event(
                    path,
                    finding,
                    trigger,
                    false,
                    "file_quarantined",
                    "failure",
                    None,
                    Some(&e),
                );
                Action {
                    event: Outgoing { kind: kind::RESPONSE_ACTION, data },
                    quarantined: false,
                    failed: true,
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn action_event(
    path: &Path,
    finding: &Finding,
    trigger: &str,
    dry_run: bool,
    action: &str,
    outcome: &str,
    id: Option<&str>,
    error: Option<&str>,
) -> Value {
    let mut v = json!({
        "@timestamp": state::rfc3339(SystemTime::now()),
        "event": {
            "kind": "event",
            "category": ["malware"],
            "type": ["deletion"],
            "action": action,
            "outcome": outcome,
            "module": "mamori",
            "dataset": "mamori.response",
        },
        "file": {"path": path},
        "rule": {"name": finding.rule, "ruleset": finding.ruleset},
        "mamori": {"response": {
            "action": "quarantine",
            "dry_run": dry_run,
            "quarantine_id": id,
            "trigger": trigger,
        }},
    });
    if let Some(message) = error {
        v["error"] = json!({"message": message});
    }
    v
}
