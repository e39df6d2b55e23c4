//! The manager's commands to this agent, from their arrival in a heartbeat response to their
//! result at `/v1/agent/commands/{id}/result`.
//!
//! - **At most once, answered at least once**: the manager resends a command with every
//!   heartbeat until its result arrives. [`Commands`] remembers the results of commands carried
//!   out (in `isolation/commands.json`, where it has always been, so a command finished before
//!   a restart, or whose result was lost, is answered again and never carried out twice) and
//!   which ones are in progress (a resend of those is ignored). A command interrupted by a stop
//!   has no result yet and is carried out again when the manager resends it.
//! - `isolate` / `release` go to the isolation task (`isolation.rs`).
//! - `scan` runs a full scan on a thread of its own, the same way as a scheduled scan (its
//!   findings, quarantines and isolation follow the response policy; its events are
//!   `scan.*` with `mamori.scheduled_scan.name` [`COMMAND_SCAN_NAME`] and `command_id`), over
//!   the isolation policy's `clean_scan_paths`, else the scheduled scans' paths. One at a time:
//!   a second scan command while one runs fails with "a scan is already running". Its result
//!   never releases an isolation: only the isolation task's own clean scan (after an
//!   automatic isolation) or an admin's `release` does.
//! - `quarantine_restore` / `quarantine_delete` act on the item `target` of the agent's
//!   quarantine store (the id its `response.action` events reported), each with a
//!   `response.action` event.
//! - `backup_restore` restores the snapshot `target` from the policy's vault into a new
//!   directory (`backup.rs`, "Restores") in a task of its own, reported as a `backup.restored`
//!   event and a result naming the directory and the counts. One at a time: a second one waits
//!   for the first. A stop abandons the running one (it is carried out again, into another new
//!   directory, when the manager resends it).
//!
//! One task ([`Agent::command_loop`]) carries out all but `isolate` / `release`, so neither the
//! heartbeats nor the isolation task wait for a scan or a restore.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use mamori_proto::{kind, AgentCommand, CommandAction, CommandResult, Policy};
use mamori_quarantine::{Record, Store};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::backup::{restore_snapshot, restored_event, Restored};
use crate::isolation::{failure, success, IsoRequest, ISOLATION_DIR};
use crate::response::QUARANTINE_DIR;
use crate::run::{stopped, Agent, RunningScan};
use crate::scan::{self, Outgoing};
use crate::{state, Error};

const COMMANDS_FILE: &str = "commands.json";
/// Command results remembered (the manager stops resending a command once it has its result).
const MAX_REMEMBERED_COMMANDS: usize = 200;
/// `mamori.scheduled_scan.name` of the scan a `scan` command runs.
pub(crate) const COMMAND_SCAN_NAME: &str = "manager-command";
/// Length of the quarantine store's item ids (hexadecimal).
const QUARANTINE_ID_LEN: usize = 16;
/// Paths named in a scan command's result; the rest are counted.
const MAX_PATHS_NAMED: usize = 3;

/// `isolation/commands.json`: results of commands carried out, by id, with when (Unix ms).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct CommandBook {
    done: BTreeMap<String, (i64, CommandResult)>,
}

/// Commands known to the agent: finished (with their result) and in progress.
#[derive(Debug, Default)]
pub(crate) struct Commands {
    book: CommandBook,
    in_flight: HashSet<String>,
}

/// What to do with a command that came with a heartbeat response.
#[derive(Debug, PartialEq)]
pub(crate) enum Admission {
    /// New: carry it out.
    CarryOut,
    /// Carried out before: send this result again.
    AnswerAgain(CommandResult),
    /// Being carried out: its result is sent when it is done.
    InProgress,
}

impl Commands {
    pub(crate) fn load(agent_dir: &Path) -> Commands {
        let book = match state::read_json(&book_path(agent_dir)) {
            Ok(b) => b.unwrap_or_default(),
            Err(e) => {
                tracing::warn!("ignoring the saved command results: {e}");
                CommandBook::default()
            }
        };
        Commands { book, in_flight: HashSet::new() }
    }

    /// Decides about command `id`; a new one is in progress from now on.
    pub(crate) fn admit(&mut self, id: &str) -> Admission {
        if let Some((_, r)) = self.book.done.get(id) {
            Admission::AnswerAgain(r.clone())
        } else if self.in_flight.insert(id.to_string()) {
            Admission::CarryOut
        } else {
            Admission::InProgress
        }
    }

    /// Forgets that `id` is in progress without a result (it could not be started; the
    /// manager's next resend starts it again).
    pub(crate) fn abandon(&mut self, id: &str) {
        self.in_flight.remove(id);
    }

    /// Records the result of `id` (dropping the oldest beyond [`MAX_REMEMBERED_COMMANDS`]) and
    /// returns the book to save.
    pub(crate) fn finish(&mut self, id: &str, result: CommandResult, now_ms: i64) -> CommandBook {
        self.in_flight.remove(id);
        self.book.done.insert(id.to_string(), (now_ms, result));
        while self.book.done.len() > MAX_REMEMBERED_COMMANDS {
            let oldest = self.book.done.iter().min_by_key(|(_, (t, _))| *t).map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.book.done.remove(&k),
                None => break,
            };
        }
        self.book.clone()
    }
}

fn book_path(agent_dir: &Path) -> std::path::PathBuf {
    agent_dir.join(ISOLATION_DIR).join(COMMANDS_FILE)
}

/// The scan a `scan` command started.
struct CommandScan {
    id: String,
    paths: Vec<String>,
    run: RunningScan,
}

/// The restore a `backup_restore` command started.
struct CommandRestore {
    command: AgentCommand,
    task: tokio::task::JoinHandle<anyhow::Result<Restored>>,
}

enum Step {
    Command(AgentCommand),
    ScanBatch(Option<Vec<Outgoing>>),
    RestoreDone(Box<Result<anyhow::Result<Restored>, tokio::task::JoinError>>),
}

impl Agent {
    /// Takes the commands of a heartbeat response: new ones are handed to the task that carries
    /// them out, finished ones answered again, running ones left alone.
    pub(crate) async fn take_commands(&self, commands: Vec<AgentCommand>) {
        for c in commands {
            let admission = lock(&self.commands).admit(&c.id);
            match admission {
                Admission::InProgress => {}
                Admission::AnswerAgain(result) => self.post_command_result(&c.id, &result).await,
                Admission::CarryOut => {
                    tracing::info!(id = %c.id, action = c.action.as_str(), target = %c.target, "command from the manager");
                    let id = c.id.clone();
                    let queued = match IsoRequest::from_command(&c) {
                        Some(request) => self.iso_tx.send(request).await.is_ok(),
                        None => self.command_tx.send(c).await.is_ok(),
                    };
                    if !queued {
                        lock(&self.commands).abandon(&id);
                    }
                }
            }
        }
    }

    /// Records `result` as the answer to command `id` (also on disk) and sends it.
    pub(crate) async fn finish_command(&self, id: &str, result: CommandResult) {
        let snapshot = lock(&self.commands).finish(id, result.clone(), state::now_ms());
        let file = book_path(&self.dir);
        let saved = file
            .parent()
            .map_or(Ok(()), state::ensure_private_dir)
            .and_then(|()| state::write_json(&file, &snapshot));
        if let Err(e) = saved {
            tracing::error!(
                "could not save the command results (a restart may carry a command out again): {e}"
            );
        }
        self.post_command_result(id, &result).await;
    }

    async fn post_command_result(&self, id: &str, result: &CommandResult) {
        let client = self.client();
        match client.post_json::<_, Value>(&mamori_proto::path::command_result(id), result).await {
            Ok(_) => tracing::debug!(id, "command result delivered"),
            // The manager resends the command with the next heartbeat; it is answered then.
            Err(e) => tracing::warn!(id, "could not deliver a command result (retried): {e}"),
        }
    }

    /// Carries out `scan`, `quarantine_restore`, `quarantine_delete` and `backup_restore`
    /// commands until `stop`.
    pub(crate) async fn command_loop(
        &self,
        mut rx: mpsc::Receiver<AgentCommand>,
        policy_rx: watch::Receiver<Arc<Policy>>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let mut scan: Option<CommandScan> = None;
        let mut restore: Option<CommandRestore> = None;
        let mut waiting_restores: VecDeque<AgentCommand> = VecDeque::new();
        loop {
            // Biased: a command already waiting is taken before the running scan's events, so a
            // second scan command that came with the first is refused, not run after it.
            let step = tokio::select! {
                biased;
                _ = stopped(&mut stop) => {
                    if let Some(r) = restore.take() {
                        tracing::warn!(id = %r.command.id, "restore interrupted by the stop; it runs again when the manager resends it");
                        r.task.abort();
                    }
                    return Ok(());
                }
                c = rx.recv() => match c {
                    Some(c) => Step::Command(c),
                    None => { stopped(&mut stop).await; return Ok(()); }
                },
                batch = async {
                    match scan.as_mut() {
                        Some(s) => s.run.next_batch().await,
                        None => std::future::pending().await,
                    }
                } => Step::ScanBatch(batch),
                done = async {
                    match restore.as_mut() {
                        Some(r) => (&mut r.task).await,
                        None => std::future::pending().await,
                    }
                } => Step::RestoreDone(Box::new(done)),
            };
            match step {
                Step::Command(c) => match c.action {
                    CommandAction::Scan => self.start_command_scan(c, &policy_rx, &mut scan).await,
                    CommandAction::QuarantineRestore | CommandAction::QuarantineDelete => {
                        self.quarantine_command(&c).await?
                    }
                    CommandAction::BackupRestore => {
                        if restore.is_none() {
                            restore = Some(self.start_restore(c, &policy_rx));
                        } else {
                            tracing::info!(id = %c.id, "restore waits for the one running");
                            waiting_restores.push_back(c);
                        }
                    }
                    // Routed to the isolation task by `take_commands`; passed on should one come.
                    CommandAction::Isolate | CommandAction::Release => {
                        if let Some(request) = IsoRequest::from_command(&c) {
                            if self.iso_tx.send(request).await.is_err() {
                                lock(&self.commands).abandon(&c.id);
                            }
                        }
                    }
                },
                Step::ScanBatch(Some(batch)) => {
                    if let Some(s) = scan.as_mut() {
                        self.take_scan_batch(&mut s.run, batch).await?;
                    }
                }
                Step::ScanBatch(None) => {
                    if let Some(s) = scan.take() {
                        self.end_scan(&s.run).await?;
                        let result = scan_result(s.run.summary.as_ref(), &s.paths);
                        tracing::info!(id = %s.id, success = result.success, "{}", result.message);
                        self.finish_command(&s.id, result).await;
                    }
                }
                Step::RestoreDone(done) => {
                    if let Some(r) = restore.take() {
                        self.end_restore(&r.command, *done).await?;
                    }
                    if let Some(next) = waiting_restores.pop_front() {
                        restore = Some(self.start_restore(next, &policy_rx));
                    }
                }
            }
        }
    }

    /// Starts restoring the snapshot of a `backup_restore` command with the policy as it is now.
    fn start_restore(&self, c: AgentCommand, policy_rx: &watch::Receiver<Arc<Policy>>) -> CommandRestore {
        let backup = policy_rx.borrow().backup.clone();
        let (dir, snapshot) = (self.dir.clone(), c.target.clone());
        tracing::info!(id = %c.id, snapshot = %snapshot, "restore ordered by the manager starting");
        let task = tokio::spawn(async move { restore_snapshot(&dir, backup.as_ref(), &snapshot).await });
        CommandRestore { command: c, task }
    }

    /// Reports a finished restore: a `backup.restored` event when it worked (in the spool
    /// before the result is sent), then the command's result.
    async fn end_restore(
        &self,
        c: &AgentCommand,
        done: Result<anyhow::Result<Restored>, tokio::task::JoinError>,
    ) -> Result<(), Error> {
        let result = match done {
            Ok(Ok(restored)) => {
                let host = self.config.hostname.clone().unwrap_or_else(state::system_hostname);
                let event = restored_event(c, &restored, &self.config.device_id, &host);
                self.append(vec![event]).await?;
                let m = restored.message();
                tracing::warn!(id = %c.id, "{m}");
                success(&m)
            }
            Ok(Err(e)) => {
                let m = format!("could not restore snapshot {}: {e:#}", c.target);
                tracing::error!(id = %c.id, "{m}");
                failure(&m)
            }
            Err(e) => failure(&format!("the restore task failed: {e}")),
        };
        self.finish_command(&c.id, result).await;
        Ok(())
    }

    async fn start_command_scan(
        &self,
        c: AgentCommand,
        policy_rx: &watch::Receiver<Arc<Policy>>,
        scan: &mut Option<CommandScan>,
    ) {
        if let Some(running) = scan {
            let m =
                format!("a scan is already running (command {}); try again when it has finished", running.id);
            self.finish_command(&c.id, failure(&m)).await;
            return;
        }
        let policy = policy_rx.borrow().clone();
        let paths = command_scan_paths(&policy);
        if paths.is_empty() {
            let m =
                "no scan paths in the policy (set response.isolation.clean_scan_paths or a scheduled scan)";
            self.finish_command(&c.id, failure(m)).await;
            return;
        }
        let job = scan::full_scan(&policy, COMMAND_SCAN_NAME, paths);
        tracing::info!(id = %c.id, paths = ?job.paths, "scan ordered by the manager starting");
        let described = format!("the scan ordered by the manager (command {})", c.id);
        let run = self.start_scan(&job, &policy.response, described, Some(c.id.clone()));
        *scan = Some(CommandScan { id: c.id, paths: job.paths, run });
    }

    /// Restores or deletes a quarantined item, reports it as a `response.action` event, then
    /// answers the command.
    async fn quarantine_command(&self, c: &AgentCommand) -> Result<(), Error> {
        let store_dir = self.dir.join(QUARANTINE_DIR);
        let (action, target) = (c.action, c.target.clone());
        let outcome = tokio::task::spawn_blocking(move || carry_out_quarantine(&store_dir, action, &target))
            .await
            .unwrap_or_else(|e| QuarantineOutcome {
                result: failure(&format!("the quarantine task failed: {e}")),
                record: None,
            });
        if outcome.result.success {
            tracing::warn!(id = %c.id, "{}", outcome.result.message);
        } else {
            tracing::error!(id = %c.id, "{}", outcome.result.message);
        }
        self.append(vec![quarantine_event(c, &outcome)]).await?;
        self.finish_command(&c.id, outcome.result).await;
        Ok(())
    }
}

pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Where a `scan` command looks: the isolation policy's clean-scan paths (the admin's "whole
/// host" list), else every scheduled scan's paths (first mention first, no repeats).
fn command_scan_paths(policy: &Policy) -> Vec<String> {
    let clean = &policy.response.isolation.clean_scan_paths;
    if !clean.is_empty() {
        return clean.clone();
    }
    let mut seen = HashSet::new();
    policy.scans.iter().flat_map(|s| s.paths.iter()).filter(|p| seen.insert(p.as_str())).cloned().collect()
}

/// The result of a `scan` command, from its summary. The scan succeeded when it ran to its end
/// and looked at files (or had nothing to look at, without errors); findings are in the
/// message, not a failure of the command.
fn scan_result(summary: Option<&Value>, paths: &[String]) -> CommandResult {
    let Some(summary) = summary else {
        return failure("the scan ended without a summary (its thread failed); see the agent log");
    };
    let s = &summary["mamori"]["scan"];
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    let (read, unchanged, infected, quarantined, errors) =
        (n("files_scanned"), n("files_unchanged"), n("infected_files"), n("quarantined"), n("errors"));
    let mut named: Vec<&str> = paths.iter().take(MAX_PATHS_NAMED).map(String::as_str).collect();
    let more = format!("{} more", paths.len().saturating_sub(MAX_PATHS_NAMED));
    if paths.len() > MAX_PATHS_NAMED {
        named.push(&more);
    }
    let named = named.join(", ");
    if read + unchanged == 0 && errors > 0 {
        return failure(&format!(
            "the scan of {named} could not read anything: {} (see the scan.problem events)",
            count(errors, "error")
        ));
    }
    let verdict = if infected > 0 { "malware found" } else { "nothing found" };
    success(&format!(
        "{verdict}: {} checked under {named} ({read} read, {unchanged} unchanged since an earlier scan), \
         {infected} with findings, {quarantined} quarantined, {}",
        count(read + unchanged, "file"),
        count(errors, "error")
    ))
}

fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// What a quarantine command did: its result and the item it was about, when known.
#[derive(Debug)]
struct QuarantineOutcome {
    result: CommandResult,
    record: Option<Record>,
}

/// Restores or deletes the quarantined item `target` of the store in `store_dir`. Only a whole
/// id is accepted (the store would take a prefix, which is not precise enough for a delete).
/// Blocking.
fn carry_out_quarantine(store_dir: &Path, action: CommandAction, target: &str) -> QuarantineOutcome {
    let fail = |m: String| QuarantineOutcome { result: failure(&m), record: None };
    if target.is_empty() {
        return fail(format!("the {} command names no quarantined item", action.as_str()));
    }
    if target.len() != QUARANTINE_ID_LEN || !target.bytes().all(|b| b.is_ascii_hexdigit()) {
        return fail(format!(
            "{target:?} is not a quarantine id (expected the {QUARANTINE_ID_LEN} hexadecimal characters \
             of mamori.response.quarantine_id)"
        ));
    }
    let id = target.to_ascii_lowercase();
    let unknown =
        || format!("no quarantined item {id} on this host (restored or deleted already, or never here)");
    // Not opened (which would create it) when this agent never quarantined anything.
    if !store_dir.exists() {
        return fail(unknown());
    }
    let store = match Store::open(store_dir) {
        Ok(s) => s,
        Err(e) => return fail(format!("quarantine store {}: {e}", store_dir.display())),
    };
    let record = match store.get(&id) {
        Ok(r) => r,
        Err(mamori_quarantine::Error::NotFound(_)) => return fail(unknown()),
        Err(e) => return fail(format!("quarantine item {id}: {e}")),
    };
    let path = record.original_path.display().to_string();
    let result = match action {
        CommandAction::QuarantineRestore => match store.restore(&id) {
            Ok(r) => success(&format!(
                "restored {path} from quarantine item {id} ({} bytes, mode {:04o}, owner {}:{})",
                r.size, r.mode, r.uid, r.gid
            )),
            Err(e) => failure(&format!("could not restore quarantine item {id} to {path}: {e}")),
        },
        CommandAction::QuarantineDelete => match store.delete(&id) {
            Ok(r) => success(&format!("deleted quarantine item {id} ({path}, rule {}) for good", r.rule)),
            Err(e) => failure(&format!("could not delete quarantine item {id} ({path}): {e}")),
        },
        other => failure(&format!("{} is not a quarantine action", other.as_str())),
    };
    QuarantineOutcome { result, record: Some(record) }
}

/// The `response.action` event of a quarantine command: `event.action` and
/// `mamori.response.action` are the command's action (`quarantine_restore` /
/// `quarantine_delete`), with the item's id, path and rule when known.
fn quarantine_event(c: &AgentCommand, outcome: &QuarantineOutcome) -> Outgoing {
    let action = c.action.as_str();
    let message = &outcome.result.message;
    let mut response = json!({
        "action": action,
        "dry_run": false,
        "quarantine_id": outcome.record.as_ref().map_or_else(|| c.target.to_ascii_lowercase(), |r| r.id.clone()),
        "trigger": "command",
        "command_id": c.id,
    });
    if !c.reason.is_empty() {
        response["reason"] = json!(c.reason);
    }
    let mut data = json!({
        "@timestamp": state::rfc3339(SystemTime::now()),
        "event": {
            "kind": "event",
            "category": ["malware", "file"],
            "type": [if c.action == CommandAction::QuarantineRestore { "creation" } else { "deletion" }],
            "action": action,
            "outcome": if outcome.result.success { "success" } else { "failure" },
            "reason": message,
            "module": "mamori",
            "dataset": "mamori.response",
        },
        "message": message,
        "mamori": {"response": response},
    });
    if let Some(r) = &outcome.record {
        data["file"] = json!({"path": r.original_path, "size": r.size, "hash": {"sha256": r.sha256}});
        data["rule"] = json!({"name": r.rule, "ruleset": r.ruleset});
    }
    if !outcome.result.success {
        data["error"] = json!({"message": message});
    }
    Outgoing { kind: kind::RESPONSE_ACTION, data }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use mamori_proto::ScheduledScan;
    use mamori_quarantine::Detection;

    use super::*;

    fn command(action: CommandAction, target: &str) -> AgentCommand {
        AgentCommand {
            id: "c0ffee".into(),
            action,
            target: target.into(),
            reason: "false positive".into(),
            created_ms: 0,
        }
    }

    /// A quarantined file in a store under `dir`: (store dir, original path, content, record).
    fn quarantined(dir: &Path, mode: u32) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>, Record) {
        let store_dir = dir.join("quarantine");
        let original = dir.join("report.bin");
        let content: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&original, &content).unwrap();
        std::fs::set_permissions(&original, std::fs::Permissions::from_mode(mode)).unwrap();
        let original = original.canonicalize().unwrap();
        let store = Store::open(&store_dir).unwrap();
        let record =
            store.quarantine(&original, Detection { rule: "Test-Rule", ruleset: "builtin" }).unwrap();
        assert!(!original.exists());
        (store_dir, original, content, record)
    }

    #[test]
    fn restore_puts_the_file_back_bit_exact_and_reports_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store_dir, original, content, record) = quarantined(dir.path(), 0o640);
        let outcome = carry_out_quarantine(&store_dir, CommandAction::QuarantineRestore, &record.id);
        assert!(outcome.result.success, "{}", outcome.result.message);
        assert!(
            outcome.result.message.contains(&original.display().to_string()),
            "{}",
            outcome.result.message
        );
        assert!(outcome.result.message.contains("mode 0640"), "{}", outcome.result.message);
        assert_eq!(std::fs::read(&original).unwrap(), content);
        assert_eq!(std::fs::metadata(&original).unwrap().permissions().mode() & 0o7777, 0o640);
        assert!(Store::open(&store_dir).unwrap().list().unwrap().is_empty(), "gone from the store");

        let event = quarantine_event(&command(CommandAction::QuarantineRestore, &record.id), &outcome);
        assert_eq!(event.kind, kind::RESPONSE_ACTION);
        let d = &event.data;
        assert_eq!(d["event"]["action"], "quarantine_restore");
        assert_eq!(d["event"]["outcome"], "success");
        assert_eq!(d["mamori"]["response"]["action"], "quarantine_restore");
        assert_eq!(d["mamori"]["response"]["quarantine_id"], record.id.as_str());
        assert_eq!(d["mamori"]["response"]["trigger"], "command");
        assert_eq!(d["mamori"]["response"]["command_id"], "c0ffee");
        assert_eq!(d["mamori"]["response"]["reason"], "false positive");
        assert_eq!(d["file"]["path"], original.display().to_string().as_str());
        assert_eq!(d["rule"]["name"], "Test-Rule");
        assert!(d.get("error").is_none());

        // Answered by the store once it is gone.
        let again = carry_out_quarantine(&store_dir, CommandAction::QuarantineRestore, &record.id);
        assert!(!again.result.success);
        assert!(again.result.message.contains("no quarantined item"), "{}", again.result.message);
    }

    #[test]
    fn restore_refuses_to_overwrite_a_file_that_appeared_since() {
        let dir = tempfile::tempdir().unwrap();
        let (store_dir, original, _, record) = quarantined(dir.path(), 0o600);
        std::fs::write(&original, b"a new report").unwrap();
        let outcome = carry_out_quarantine(&store_dir, CommandAction::QuarantineRestore, &record.id);
        assert!(!outcome.result.success);
        assert!(outcome.result.message.contains("refusing to overwrite"), "{}", outcome.result.message);
        assert_eq!(std::fs::read(&original).unwrap(), b"a new report");
        assert_eq!(Store::open(&store_dir).unwrap().list().unwrap().len(), 1, "still quarantined");
        let event = quarantine_event(&command(CommandAction::QuarantineRestore, &record.id), &outcome);
        assert_eq!(event.data["event"]["outcome"], "failure");
        assert_eq!(event.data["file"]["path"], original.display().to_string().as_str());
        assert!(event.data["error"]["message"].as_str().unwrap().contains("refusing to overwrite"));
    }

    #[test]
    fn delete_removes_the_item_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let (store_dir, original, _, record) = quarantined(dir.path(), 0o644);
        let upper = record.id.to_ascii_uppercase();
        let outcome = carry_out_quarantine(&store_dir, CommandAction::QuarantineDelete, &upper);
        assert!(outcome.result.success, "{}", outcome.result.message);
        assert!(!original.exists());
        assert!(Store::open(&store_dir).unwrap().list().unwrap().is_empty());
        let event = quarantine_event(&command(CommandAction::QuarantineDelete, &upper), &outcome);
        assert_eq!(event.data["event"]["action"], "quarantine_delete");
        assert_eq!(event.data["event"]["type"], json!(["deletion"]));
        assert_eq!(event.data["mamori"]["response"]["quarantine_id"], record.id.as_str());
    }

    #[test]
    fn unknown_malformed_and_missing_ids_fail_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let (store_dir, _, _, record) = quarantined(dir.path(), 0o644);
        let unknown = if record.id == "0123456789abcdef" { "fedcba9876543210" } else { "0123456789abcdef" };
        for (target, expected) in [
            (unknown, "no quarantined item"),
            ("", "names no quarantined item"),
            (&record.id[..8], "is not a quarantine id"),
            ("../../etc/passwdx", "is not a quarantine id"),
        ] {
            let outcome = carry_out_quarantine(&store_dir, CommandAction::QuarantineDelete, target);
            assert!(!outcome.result.success, "{target}");
            let m = &outcome.result.message;
            assert!(m.contains(expected), "{target}: {m}");
            assert!(outcome.record.is_none());
        }
        let unknown_outcome = carry_out_quarantine(&store_dir, CommandAction::QuarantineRestore, unknown);
        assert!(unknown_outcome.result.message.contains(unknown), "{}", unknown_outcome.result.message);
        let event = quarantine_event(&command(CommandAction::QuarantineRestore, unknown), &unknown_outcome);
        assert_eq!(event.data["event"]["outcome"], "failure");
        assert!(event.data.get("file").is_none());
        assert_eq!(Store::open(&store_dir).unwrap().list().unwrap().len(), 1, "nothing else touched");

        // An agent that never quarantined anything has no store, and does not get one.
        let none = dir.path().join("never");
        let outcome = carry_out_quarantine(&none, CommandAction::QuarantineDelete, unknown);
        assert!(outcome.result.message.contains("no quarantined item"), "{}", outcome.result.message);
        assert!(!none.exists());
    }

    #[test]
    fn commands_are_carried_out_once_and_answered_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmds = Commands::load(dir.path());
        assert_eq!(cmds.admit("a"), Admission::CarryOut);
        assert_eq!(cmds.admit("a"), Admission::InProgress, "a resend while it runs");
        assert_eq!(cmds.admit("b"), Admission::CarryOut);
        cmds.abandon("b");
        assert_eq!(cmds.admit("b"), Admission::CarryOut, "could not be started: started on the resend");
        let result = CommandResult { success: true, message: "nothing found".into() };
        let book = cmds.finish("a", result.clone(), 1);
        assert_eq!(cmds.admit("a"), Admission::AnswerAgain(result.clone()));

        std::fs::create_dir(dir.path().join(ISOLATION_DIR)).unwrap();
        state::write_json(&book_path(dir.path()), &book).unwrap();
        let mut restarted = Commands::load(dir.path());
        assert_eq!(restarted.admit("a"), Admission::AnswerAgain(result));
        assert_eq!(restarted.admit("b"), Admission::CarryOut, "unfinished before the restart: carried out");
    }

    #[test]
    fn the_oldest_results_are_forgotten_first() {
        let mut cmds = Commands::default();
        for i in 0..MAX_REMEMBERED_COMMANDS as i64 + 5 {
            cmds.admit(&format!("c{i}"));
            cmds.finish(&format!("c{i}"), success("ok"), 1000 + i);
        }
        assert_eq!(cmds.book.done.len(), MAX_REMEMBERED_COMMANDS);
        assert_eq!(cmds.admit("c0"), Admission::CarryOut);
        assert!(matches!(cmds.admit("c10"), Admission::AnswerAgain(_)));
    }

    fn scheduled(name: &str, paths: &[&str], rules: &[&str]) -> ScheduledScan {
        ScheduledScan {
            name: name.into(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            every_secs: 3600,
            rules: rules.iter().map(|p| p.to_string()).collect(),
            hashes: vec![],
            exclude: vec!["*.dcm".into()],
            quarantine: false,
        }
    }

    #[test]
    fn a_scan_command_covers_the_clean_scan_paths_else_the_scheduled_ones() {
        let mut policy = Policy::default();
        assert!(command_scan_paths(&policy).is_empty());
        policy.scans = vec![
            scheduled("home", &["/home", "/srv/share"], &["/rules/a"]),
            scheduled("share", &["/srv/share", "/opt"], &["/rules/b", "/rules/a"]),
        ];
        assert_eq!(command_scan_paths(&policy), ["/home", "/srv/share", "/opt"]);
        policy.response.isolation.clean_scan_paths = vec!["/".into()];
        assert_eq!(command_scan_paths(&policy), ["/"]);
        let job = scan::full_scan(&policy, COMMAND_SCAN_NAME, command_scan_paths(&policy));
        assert_eq!(job.rules, ["/rules/a", "/rules/b"], "every rule of the policy, once");
        assert!(job.exclude.is_empty() && !job.quarantine);
    }

    #[test]
    fn a_scan_result_summarises_the_summary() {
        let summary = |read: u64, unchanged: u64, infected: u64, quarantined: u64, errors: u64| {
            json!({"mamori": {"scan": {"files_scanned": read, "files_unchanged": unchanged,
                "infected_files": infected, "quarantined": quarantined, "errors": errors}}})
        };
        let paths: Vec<String> = ["/a", "/b", "/c", "/d", "/e"].iter().map(|p| p.to_string()).collect();
        let r = scan_result(Some(&summary(10, 2, 1, 1, 0)), &paths[..1]);
        assert!(r.success);
        assert_eq!(
            r.message,
            "malware found: 12 files checked under /a (10 read, 2 unchanged since an earlier scan), \
             1 with findings, 1 quarantined, 0 errors"
        );
        let r = scan_result(Some(&summary(3, 0, 0, 0, 1)), &paths);
        assert!(r.success && r.message.starts_with("nothing found: 3 files"), "{}", r.message);
        assert!(r.message.contains("under /a, /b, /c, 2 more"), "{}", r.message);
        assert!(r.message.ends_with("0 quarantined, 1 error"), "{}", r.message);
        let r = scan_result(Some(&summary(0, 0, 0, 0, 0)), &paths[..1]);
        assert!(r.success, "an empty tree: {}", r.message);
        let r = scan_result(Some(&summary(0, 0, 0, 0, 2)), &paths[..1]);
        assert!(!r.success && r.message.contains("could not read anything"), "{}", r.message);
        let r = scan_result(None, &paths);
        assert!(!r.success && r.message.contains("without a summary"), "{}", r.message);
    }
}
