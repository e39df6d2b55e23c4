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
//!
//! # Restores
//!
//! A `backup_restore` command ([`restore_snapshot`], run by the command task) restores one
//! snapshot of this host, named in full, with the same code as `mamori backup restore`, into a
//! new directory `<restore_dir>/<first 12 characters of the snapshot>-<UTC time>` (then `-2`,
//! `-3`, ... if that exists), created with mode 0700 because the files in it keep their
//! snapshot modes and owners. `restore_dir` is the policy's `backup.restore_dir`, else
//! `<agent dir>/restores`; a restore directory inside a backed-up source (after resolving
//! symlinks) is refused, so a restore never lands in the live tree. Nothing is created before
//! the vault has answered and named the snapshot. A restore interrupted by a stop, or one that
//! failed part way, leaves the new directory with what it holds so far (the message names it);
//! a resent command restores into another new directory.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context};
use mamori_backup::restore::RestoreSummary;
use mamori_backup::{BackupOptions, BackupSummary, Connection, Identity};
use mamori_proto::vault::SnapshotInfo;
use mamori_proto::{kind, AgentCommand, BackupPolicy, Policy, BACKUP_RETRY_SECS, MIN_BACKUP_EVERY_SECS};
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
/// `<agent dir>/restores`: where `backup_restore` commands restore when the policy names no
/// `backup.restore_dir`.
pub(crate) const RESTORES_DIR: &str = "restores";
/// Characters of the snapshot name in a restore directory's name.
const RESTORE_NAME_PREFIX: usize = 12;
/// Suffixes tried (`-2`, `-3`, ...) when a restore directory's name is taken.
const MAX_RESTORE_DIR_TRIES: u32 = 1000;

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
        let (conn, identity) = vault_connection(&self.dir, policy)?;
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

/// A connection to the policy's vault with this host's identity as it is now (the certificate
/// may have been renewed).
fn vault_connection(agent_dir: &Path, policy: &BackupPolicy) -> anyhow::Result<(Connection, Identity)> {
    let id = crate::device_identity(agent_dir)?;
    let identity = Identity {
        key_pem: id.key_pem,
        cert_pem: id.cert_pem,
        ca_fingerprint: id.ca_fingerprint,
        hostname: id.hostname,
    };
    let conn = Connection::new(&policy.vault, &identity)?;
    Ok((conn, identity))
}

/// A snapshot restored by a `backup_restore` command.
#[derive(Debug)]
pub(crate) struct Restored {
    pub vault: String,
    pub snapshot: SnapshotInfo,
    /// The new directory the snapshot is in.
    pub dir: PathBuf,
    pub summary: RestoreSummary,
}

impl Restored {
    /// The command's result message (also the event's `message`).
    pub(crate) fn message(&self) -> String {
        format!(
            "restored snapshot {} ({}) into {}: {} files, {} directories, {} symlinks, {} bytes",
            self.snapshot.name,
            state::rfc3339(state::ms_to_system_time(self.snapshot.time_ms)),
            self.dir.display(),
            self.summary.files,
            self.summary.dirs,
            self.summary.symlinks,
            self.summary.bytes
        )
    }
}

/// Carries out a `backup_restore` command: restores `snapshot` (a full name) of this host from
/// the policy's vault into a new directory (see the module documentation). The error says what
/// went wrong for the person who asked.
pub(crate) async fn restore_snapshot(
    agent_dir: &Path,
    policy: Option<&BackupPolicy>,
    snapshot: &str,
) -> anyhow::Result<Restored> {
    if !mamori_proto::is_snapshot_name(snapshot) {
        bail!(
            "{snapshot:?} is not a snapshot name (expected the {} lowercase hexadecimal characters the vault names snapshots with)",
            mamori_proto::SNAPSHOT_NAME_LEN
        );
    }
    let Some(policy) = policy else {
        bail!("this agent's policy has no backup section, so it has no vault to restore from");
    };
    let base = match &policy.restore_dir {
        Some(dir) if !dir.is_absolute() => {
            bail!("backup.restore_dir {} is not an absolute path", dir.display())
        }
        Some(dir) => dir.clone(),
        None => std::path::absolute(agent_dir.join(RESTORES_DIR))
            .with_context(|| format!("locating {}", agent_dir.display()))?,
    };
    check_outside_sources(policy, &resolve(&base))?;

    let (conn, _) = vault_connection(agent_dir, policy)?;
    let id_key = mamori_backup::id_key(&conn).await?;
    let snapshots = conn.snapshots().await?;
    let Some(chosen) = snapshots.iter().find(|s| s.name == snapshot) else {
        bail!(
            "the vault {} has no snapshot {snapshot} of this host ({} snapshots of it there)",
            policy.vault,
            snapshots.len()
        );
    };

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&base)
        .with_context(|| format!("creating the restore directory {}", base.display()))?;
    // Created under the resolved path, checked again: a symlink swapped in meanwhile does not
    // lead the restore into a source.
    let base = base.canonicalize().with_context(|| format!("resolving {}", base.display()))?;
    check_outside_sources(policy, &base)?;
    let dir = new_restore_dir(&base, snapshot, SystemTime::now())?;
    tracing::warn!(snapshot, dir = %dir.display(), "restoring a snapshot ordered by the manager");
    let summary = mamori_backup::restore::restore(&conn, id_key, chosen, None, &dir)
        .await
        .with_context(|| {
            format!(
                "restoring snapshot {snapshot} into {} failed part way (the directory keeps what was restored)",
                dir.display()
            )
        })?;
    Ok(Restored { vault: policy.vault.clone(), snapshot: chosen.clone(), dir, summary })
}

/// `path` with symlinks resolved as far as it exists (the rest appended as written).
fn resolve(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Refuses a restore directory that is, or lies inside, a source (both resolved).
fn check_outside_sources(policy: &BackupPolicy, dir: &Path) -> anyhow::Result<()> {
    for source in &policy.sources {
        let real = resolve(Path::new(source));
        if dir.starts_with(&real) || dir.starts_with(source) {
            bail!(
                "the restore directory {} lies inside the backed-up source {source}; a restore never goes \
                 into the live tree: set backup.restore_dir to a directory outside the sources",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Creates `<base>/<first 12 characters of snapshot>-<UTC time>` (or with `-2`, `-3`, ... when
/// taken) with mode 0700 and returns it.
fn new_restore_dir(base: &Path, snapshot: &str, now: SystemTime) -> anyhow::Result<PathBuf> {
    let stamp = time::OffsetDateTime::from(now)
        .format(time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"))
        .map_err(|e| anyhow!("formatting the time: {e}"))?;
    let prefix = &snapshot[..RESTORE_NAME_PREFIX.min(snapshot.len())];
    let stem = format!("{prefix}-{stamp}");
    for n in 1..=MAX_RESTORE_DIR_TRIES {
        let name = if n == 1 { stem.clone() } else { format!("{stem}-{n}") };
        let dir = base.join(name);
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                // The umask may have taken more; the mode is exactly 0700.
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("setting the mode of {}", dir.display()))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!("{} already holds {MAX_RESTORE_DIR_TRIES} restores named {stem}", base.display())
}

/// The `backup.restored` event of a restore a command made.
pub(crate) fn restored_event(c: &AgentCommand, r: &Restored, device_id: &str, host: &str) -> Outgoing {
    let mut data = base_event("backup_restored", "success", device_id, host);
    let message = r.message();
    data["message"] = json!(message);
    data["event"]["type"] = json!(["creation"]);
    data["event"]["reason"] = json!(message);
    let mut restore = json!({
        "snapshot": {
            "name": r.snapshot.name,
            "time_ms": r.snapshot.time_ms,
            "paths": r.snapshot.paths,
            "suspicious": r.snapshot.suspicious,
        },
        "target": r.dir.display().to_string(),
        "files": r.summary.files,
        "dirs": r.summary.dirs,
        "symlinks": r.summary.symlinks,
        "bytes": r.summary.bytes,
        "trigger": "command",
        "command_id": c.id,
    });
    if !c.reason.is_empty() {
        restore["reason"] = json!(c.reason);
    }
    data["mamori"] = json!({"backup": {"vault": r.vault, "restore": restore}});
    Outgoing { kind: kind::BACKUP_RESTORED, data }
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
            restore_dir: None,
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
    fn restore_dirs_are_new_private_and_numbered_when_taken() {
        use std::os::unix::fs::MetadataExt;
        let base = tempfile::tempdir().unwrap();
        let snapshot = "0123456789abcdef".repeat(4);
        // 2026-12-03 07:15:00 UTC.
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_796_282_100);
        let first = new_restore_dir(base.path(), &snapshot, at).unwrap();
        assert_eq!(first, base.path().join("0123456789ab-20261203T071500Z"));
        let second = new_restore_dir(base.path(), &snapshot, at).unwrap();
        assert_eq!(second, base.path().join("0123456789ab-20261203T071500Z-2"));
        // A file or a symlink with the next name is not reused either.
        std::os::unix::fs::symlink("/", base.path().join("0123456789ab-20261203T071500Z-3")).unwrap();
        let fourth = new_restore_dir(base.path(), &snapshot, at).unwrap();
        assert!(fourth.ends_with("0123456789ab-20261203T071500Z-4"), "{}", fourth.display());
        for dir in [&first, &second, &fourth] {
            let meta = std::fs::symlink_metadata(dir).unwrap();
            assert!(meta.is_dir());
            assert_eq!(meta.mode() & 0o7777, 0o700, "{}", dir.display());
            assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0);
        }
        let err = new_restore_dir(&base.path().join("missing"), &snapshot, at).unwrap_err();
        assert!(format!("{err:#}").contains("creating"), "{err:#}");
    }

    #[test]
    fn a_restore_dir_inside_a_source_is_refused_even_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let share = root.join("share");
        std::fs::create_dir_all(share.join("inner")).unwrap();
        std::os::unix::fs::symlink(share.join("inner"), root.join("link")).unwrap();
        let mut p = policy(600);
        p.sources = vec![share.display().to_string()];
        assert!(check_outside_sources(&p, &resolve(&root.join("restores/new"))).is_ok());
        assert!(check_outside_sources(&p, &resolve(&root.join("share2"))).is_ok());
        for inside in [share.clone(), share.join("restores/x"), root.join("link/restores")] {
            let err = check_outside_sources(&p, &resolve(&inside)).unwrap_err().to_string();
            assert!(err.contains("lies inside the backed-up source"), "{}: {err}", inside.display());
        }
        assert_eq!(resolve(&root.join("link/a/b")), share.join("inner/a/b"));
    }

    #[tokio::test]
    async fn restores_without_a_policy_a_name_or_a_safe_place_fail_before_the_vault() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = "ab".repeat(32);
        let err = restore_snapshot(dir.path(), None, &snapshot).await.unwrap_err();
        assert!(format!("{err:#}").contains("no backup section"), "{err:#}");
        let relative = BackupPolicy { restore_dir: Some("restores".into()), ..policy(600) };
        let err = restore_snapshot(dir.path(), Some(&relative), &snapshot).await.unwrap_err();
        assert!(format!("{err:#}").contains("not an absolute path"), "{err:#}");
        let p = policy(600);
        for bad in ["", "latest", &snapshot[..12], "../../etc", &snapshot.to_ascii_uppercase()] {
            let err = restore_snapshot(dir.path(), Some(&p), bad).await.unwrap_err();
            assert!(format!("{err:#}").contains("is not a snapshot name"), "{bad}: {err:#}");
        }
        // The default place, <agent dir>/restores, inside a source.
        let mut inside = policy(600);
        inside.sources = vec![dir.path().display().to_string()];
        let err = restore_snapshot(dir.path(), Some(&inside), &snapshot).await.unwrap_err();
        assert!(format!("{err:#}").contains("lies inside the backed-up source"), "{err:#}");
        assert!(!dir.path().join(RESTORES_DIR).exists(), "nothing created");
        // An unenrolled agent has no identity to show the vault.
        let err = restore_snapshot(dir.path(), Some(&p), &snapshot).await.unwrap_err();
        assert!(!dir.path().join(RESTORES_DIR).exists(), "nothing created: {err:#}");
    }

    #[test]
    fn the_restored_event_names_the_snapshot_the_directory_and_the_counts() {
        let snapshot = SnapshotInfo {
            name: "cd".repeat(32),
            time_ms: 1_796_282_100_000,
            hostname: "ward-pc".into(),
            device_id: "dev".into(),
            paths: vec!["/srv/share".into()],
            tree: "00".repeat(32),
            suspicious: false,
            reasons: vec![],
            cleared: false,
            added_raw: 0,
            added_stored: 0,
        };
        let restored = Restored {
            vault: "https://vault.local:8444".into(),
            snapshot,
            dir: "/var/restores/cdcdcdcdcdcd-20261203T071500Z".into(),
            summary: RestoreSummary { files: 3, dirs: 2, symlinks: 1, bytes: 1234, ..Default::default() },
        };
        let c = AgentCommand {
            id: "c0ffee".into(),
            action: mamori_proto::CommandAction::BackupRestore,
            target: "cd".repeat(32),
            reason: "ward 3 share encrypted".into(),
            created_ms: 0,
        };
        let m = restored.message();
        assert!(
            m.starts_with(&format!("restored snapshot {} (2026-12-03T07:15:00Z)", "cd".repeat(32))),
            "{m}"
        );
        assert!(m.ends_with("into /var/restores/cdcdcdcdcdcd-20261203T071500Z: 3 files, 2 directories, 1 symlinks, 1234 bytes"), "{m}");
        let e = restored_event(&c, &restored, "dev", "ward-pc");
        assert_eq!(e.kind, kind::BACKUP_RESTORED);
        let d = &e.data;
        assert_eq!(
            (d["event"]["action"].as_str(), d["event"]["outcome"].as_str()),
            (Some("backup_restored"), Some("success"))
        );
        assert_eq!(d["message"], m.as_str());
        let r = &d["mamori"]["backup"]["restore"];
        assert_eq!(r["snapshot"]["name"], "cd".repeat(32).as_str());
        assert_eq!(r["target"], "/var/restores/cdcdcdcdcdcd-20261203T071500Z");
        assert_eq!((r["files"].as_u64(), r["bytes"].as_u64()), (Some(3), Some(1234)));
        assert_eq!(
            (r["command_id"].as_str(), r["reason"].as_str()),
            (Some("c0ffee"), Some("ward 3 share encrypted"))
        );
        assert_eq!(d["mamori"]["backup"]["vault"], "https://vault.local:8444");
        assert_eq!(d["agent"]["id"], "dev");
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
