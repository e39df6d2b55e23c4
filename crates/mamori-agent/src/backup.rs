//! Scheduled backups: when the policy has a `backup` section, the agent backs its sources up to
//! the vault (the same as `mamori backup run`, with this host's enrolled identity) every
//! `every_secs`, and reports each run as a `backup.completed` or `backup.failed` event.
//!
//! # Schedule
//!
//! One backup at a time, in this task. The next one is due `every_secs` (at least
//! [`MIN_BACKUP_EVERY_SECS`]) after the end of the last one, or at once if none has run; after a
//! failure, after at most [`BACKUP_RETRY_SECS`], so a vault that is down is tried again soon
//! but never in a tight loop. When each backup ended, and whether it worked, is kept in
//! `<agent dir>/backup.json`, so a restart neither backs up at once nor forgets a failure. A
//! policy change takes effect at the next due time (a first `backup` section: at once).
//!
//! A backup interrupted by a stop is not recorded: it runs again after the restart. The event
//! is in the spool before `backup.json` is written, so a crash between the two repeats the
//! backup (the vault stores only what it lacks), never loses its report.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mamori_backup::{BackupOptions, BackupSummary, Connection, Identity};
use mamori_proto::{kind, BackupPolicy, Policy, BACKUP_RETRY_SECS, MIN_BACKUP_EVERY_SECS};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::run::{stopped, wait_due_or_changed, Agent};
use crate::scan::Outgoing;
use crate::{state, Error, AGENT_VERSION};

/// `<agent dir>/backup.json`: the last scheduled backup.
pub(crate) const BACKUP_STATE_FILE: &str = "backup.json";
/// Problems listed in a `backup.completed` event (all are counted).
const MAX_PROBLEMS_REPORTED: usize = 20;

/// `backup.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct BackupState {
    /// When the last scheduled backup ended, successfully or not (Unix ms); `None`: never ran.
    #[serde(default)]
    pub last_end_ms: Option<i64>,
    /// Whether it made a snapshot.
    #[serde(default)]
    pub last_ok: bool,
    #[serde(default)]
    pub last_snapshot: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// When the next backup is due (Unix ms): at once if none ran, else `every_secs` after the last
/// end, or at most [`BACKUP_RETRY_SECS`] after it when it failed. A last end in the future (the
/// clock was set back) counts as now, so a clock fix cannot postpone backups indefinitely.
pub(crate) fn due_ms(last: &BackupState, policy: &BackupPolicy, now: i64) -> i64 {
    let Some(end) = last.last_end_ms else { return i64::MIN };
    let mut every = policy.every_secs.max(MIN_BACKUP_EVERY_SECS);
    if !last.last_ok {
        every = every.min(BACKUP_RETRY_SECS);
    }
    let every_ms = i64::try_from(every.saturating_mul(1000)).unwrap_or(i64::MAX);
    end.min(now).saturating_add(every_ms)
}

impl Agent {
    /// Runs the policy's scheduled backups until stopped. See the module documentation.
    pub(crate) async fn backup_loop(
        &self,
        mut policy_rx: watch::Receiver<Arc<Policy>>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let state_path = self.dir.join(BACKUP_STATE_FILE);
        let mut last: BackupState = match state::read_json(&state_path) {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                tracing::warn!("ignoring the saved backup schedule (a backup may run early once): {e}");
                BackupState::default()
            }
        };
        loop {
            let policy = policy_rx.borrow_and_update().clone();
            let now = state::now_ms();
            let next = policy.backup.as_ref().map(|b| (b, due_ms(&last, b, now)));
            match next {
                Some((backup, due)) if due <= now => {
                    let backup = backup.clone();
                    tracing::info!(vault = %backup.vault, sources = ?backup.sources, "scheduled backup starting");
                    let outcome = tokio::select! {
                        biased;
                        _ = stopped(&mut stop) => {
                            tracing::info!("scheduled backup interrupted by the stop; it runs again after a restart");
                            return Ok(());
                        }
                        r = self.run_backup(&backup) => r,
                    };
                    let (event, record) = self.backup_report(&backup, outcome);
                    self.append(vec![event]).await?;
                    last = record;
                    if let Err(e) = state::write_json(&state_path, &last) {
                        tracing::error!("could not save the backup schedule: {e}");
                    }
                }
                other => {
                    let wait =
                        other.map(|(_, due)| Duration::from_millis(u64::try_from(due - now).unwrap_or(0)));
                    if !wait_due_or_changed(wait, &mut policy_rx, &mut stop).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// One backup with the identity as it is now (the certificate may have been renewed).
    async fn run_backup(&self, policy: &BackupPolicy) -> anyhow::Result<BackupSummary> {
        let id = crate::device_identity(&self.dir)?;
        let identity = Identity {
            key_pem: id.key_pem,
            cert_pem: id.cert_pem,
            ca_fingerprint: id.ca_fingerprint,
            hostname: id.hostname,
        };
        let conn = Connection::new(&policy.vault, &identity)?;
        let options = BackupOptions {
            sources: policy.sources.iter().map(PathBuf::from).collect(),
            excludes: policy.excludes.clone(),
            hostname: identity.hostname.clone(),
            progress: false,
        };
        mamori_backup::backup(&conn, &options).await
    }

    /// The event for a finished backup, and what `backup.json` records of it.
    fn backup_report(
        &self,
        policy: &BackupPolicy,
        outcome: anyhow::Result<BackupSummary>,
    ) -> (Outgoing, BackupState) {
        let end = state::now_ms();
        let host = self.config.hostname.clone().unwrap_or_else(state::system_hostname);
        match outcome {
            Ok(summary) => {
                let name = summary.snapshot.as_ref().map(|s| s.name.clone());
                let data = completed_event(policy, &summary, &self.config.device_id, &host);
                if summary.suspicious {
                    tracing::warn!(snapshot = ?name, "the vault flagged the scheduled backup as suspicious");
                } else {
                    tracing::info!(
                        snapshot = ?name,
                        files = summary.files,
                        problems = summary.problems.len(),
                        "scheduled backup finished"
                    );
                }
                let record = BackupState {
                    last_end_ms: Some(end),
                    last_ok: true,
                    last_snapshot: name,
                    last_error: None,
                };
                (Outgoing { kind: kind::BACKUP_COMPLETED, data }, record)
            }
            Err(e) => {
                let message = format!("{e:#}");
                tracing::error!(
                    "scheduled backup failed (trying again in at most {} s): {message}",
                    policy.every_secs.clamp(MIN_BACKUP_EVERY_SECS, BACKUP_RETRY_SECS)
                );
                let data = failed_event(policy, &message, &self.config.device_id, &host);
                let record = BackupState {
                    last_end_ms: Some(end),
                    last_ok: false,
                    last_snapshot: None,
                    last_error: Some(message),
                };
                (Outgoing { kind: kind::BACKUP_FAILED, data }, record)
            }
        }
    }
}

fn base_event(action: &str, outcome: &str, device_id: &str, host: &str) -> Value {
    json!({
        "@timestamp": state::rfc3339(SystemTime::now()),
        "event": {"kind": "event", "action": action, "outcome": outcome, "module": "mamori", "dataset": "mamori.backup"},
        "agent": {"id": device_id, "type": "mamori", "version": AGENT_VERSION},
        "host": {"hostname": host},
    })
}

fn completed_event(policy: &BackupPolicy, summary: &BackupSummary, device_id: &str, host: &str) -> Value {
    let mut data = base_event("backup_completed", "success", device_id, host);
    let snapshot = summary.snapshot.as_ref().map(
        |s| json!({"name": s.name, "suspicious": s.suspicious, "reasons": s.reasons, "time_ms": s.time_ms}),
    );
    data["mamori"] = json!({"backup": {
        "vault": policy.vault,
        "sources": policy.sources,
        "snapshot": snapshot,
        "suspicious": summary.suspicious,
        "files": summary.files,
        "files_unchanged": summary.files_unchanged,
        "dirs": summary.dirs,
        "excluded": summary.excluded,
        "bytes": summary.bytes,
        "bytes_uploaded": summary.bytes_uploaded,
        "chunks_uploaded": summary.chunks_uploaded,
        "problems": summary.problems.iter().take(MAX_PROBLEMS_REPORTED).collect::<Vec<_>>(),
        "problems_count": summary.problems.len(),
        "seconds": summary.seconds,
    }});
    data
}

fn failed_event(policy: &BackupPolicy, message: &str, device_id: &str, host: &str) -> Value {
    let mut data = base_event("backup_failed", "failure", device_id, host);
    data["error"] = json!({"message": message});
    data["mamori"] = json!({"backup": {"vault": policy.vault, "sources": policy.sources}});
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(every_secs: u64) -> BackupPolicy {
        BackupPolicy {
            vault: "https://vault.local:8444".into(),
            sources: vec!["/srv".into()],
            excludes: vec![],
            every_secs,
        }
    }

    fn ended(at: i64, ok: bool) -> BackupState {
        BackupState { last_end_ms: Some(at), last_ok: ok, ..BackupState::default() }
    }

    #[test]
    fn backups_are_due_at_once_then_after_their_interval_and_retried_sooner() {
        let now = 1_000_000_000;
        assert!(due_ms(&BackupState::default(), &policy(86_400), now) <= now, "never ran: due now");
        let ok = ended(now - 1000, true);
        assert_eq!(due_ms(&ok, &policy(86_400), now), now - 1000 + 86_400_000);
        assert_eq!(due_ms(&ok, &policy(0), now), now - 1000 + 600_000, "interval has a floor");
        let failed = ended(now - 1000, false);
        assert_eq!(
            due_ms(&failed, &policy(86_400), now),
            now - 1000 + 600_000,
            "a failure is retried sooner"
        );
        assert_eq!(due_ms(&failed, &policy(0), now), now - 1000 + 600_000, "but not in a tight loop");
        let future = ended(now + 86_400_000, true);
        assert_eq!(due_ms(&future, &policy(3600), now), now + 3_600_000, "future end counts as now");
        assert!(due_ms(&ok, &policy(u64::MAX), now) > now, "no overflow");
    }

    #[test]
    fn the_state_file_round_trips_and_tolerates_missing_fields() {
        let s = BackupState {
            last_end_ms: Some(5),
            last_ok: true,
            last_snapshot: Some("abc".into()),
            last_error: None,
        };
        let back: BackupState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(serde_json::from_str::<BackupState>("{}").unwrap(), BackupState::default());
    }

    #[test]
    fn events_carry_the_summary_and_at_most_twenty_problems() {
        let summary = BackupSummary {
            files: 3,
            files_unchanged: 1,
            bytes: 100,
            bytes_uploaded: 60,
            problems: (0..25).map(|i| format!("/srv/{i}: denied")).collect(),
            seconds: 1.5,
            ..BackupSummary::default()
        };
        let v = completed_event(&policy(600), &summary, "dev", "host");
        let b = &v["mamori"]["backup"];
        assert_eq!(v["event"]["action"], "backup_completed");
        assert_eq!((b["files"].as_u64(), b["files_unchanged"].as_u64()), (Some(3), Some(1)));
        assert_eq!((b["bytes"].as_u64(), b["bytes_uploaded"].as_u64()), (Some(100), Some(60)));
        assert_eq!(b["problems"].as_array().unwrap().len(), 20);
        assert_eq!(b["problems_count"], 25);
        assert!(b["snapshot"].is_null());
        let f = failed_event(&policy(600), "the vault refused", "dev", "host");
        assert_eq!(
            (f["event"]["outcome"].as_str(), f["error"]["message"].as_str()),
            (Some("failure"), Some("the vault refused"))
        );
    }
}
