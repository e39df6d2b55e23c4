//! Host isolation in the agent, and the manager's commands that drive it.
//!
//! One task ([`Agent::isolation_loop`]) owns the `mamori-isolate` [`Isolator`] (state in
//! `<agent dir>/isolation/`) and carries out [`IsoRequest`]s one at a time, from three places:
//! a detection whose response policy says `isolate` (the ransomware guard, malware findings),
//! and the manager's `isolate` / `release` commands, which arrive in heartbeat responses.
//!
//! - **At start** a recorded isolation is put back (`restore_if_isolated`: after a reboot the
//!   rules are gone, the state file is not), so an isolated host stays isolated until released.
//! - **Isolating** resolves the manager's address first (DNS may be cut off afterwards), applies
//!   the rules, and requires a fresh mutual-TLS request to the manager to succeed within
//!   [`VERIFY_TIMEOUT`], else the isolation is rolled back (the dead-man switch lives in
//!   `mamori-isolate`; the check is ours).
//! - **Automatic release**: after an isolation caused by a detection, when the policy sets
//!   `release_on_clean_scan`, a full scan of `clean_scan_paths` runs; if it finds nothing and
//!   no new detection came meanwhile, the isolation is released. `auto_release.json` remembers
//!   that this is pending, so a restart runs the scan again. An admin's isolation is only ever
//!   released by an admin, and so is one whose clean scan was not clean: the manager's `scan`
//!   command finding nothing releases nothing (asking for a scan is not asking for a release).
//!   Its findings, like any, make a running clean scan's verdict stale.
//! - **Commands** reach this task through `commands.rs`, which answers a command already carried
//!   out (also before a restart) again instead of carrying it out twice.
//!
//! Every isolation, release, restore and refusal is a `response.action` event.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mamori_isolate::{AllowEntry, IsolateError, IsolationPlan, Isolator, Restore};
use mamori_proto::{kind, path, AgentCommand, CommandAction, CommandResult, IsolationAllow, Policy};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::client::ManagerClient;
use crate::run::{stopped, Agent};
use crate::scan::{self, Outgoing};
use crate::{state, Error};

/// `<agent dir>/isolation/`: mamori-isolate's state file and lock, and ours.
pub(crate) const ISOLATION_DIR: &str = "isolation";
const AUTO_RELEASE_FILE: &str = "auto_release.json";
/// The manager must answer through the new rules within this long, or they are rolled back.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(15);
/// One verification request (retried until [`VERIFY_TIMEOUT`]).
const VERIFY_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Name of the scan that decides an automatic release.
const CLEAN_SCAN_NAME: &str = "isolation-clean-check";

/// Something to do about the host's isolation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum IsoRequest {
    Isolate {
        /// `ransomware`, `malware` or `command`.
        trigger: String,
        reason: String,
        /// The manager's command id, when it came from one.
        command: Option<String>,
    },
    Release {
        trigger: String,
        reason: String,
        command: Option<String>,
    },
}

impl IsoRequest {
    /// The request of an `isolate` or `release` command; `None` for the other actions.
    pub(crate) fn from_command(c: &AgentCommand) -> Option<IsoRequest> {
        let (trigger, reason, command) = ("command".to_string(), c.reason.clone(), Some(c.id.clone()));
        match c.action {
            CommandAction::Isolate => Some(IsoRequest::Isolate { trigger, reason, command }),
            CommandAction::Release => Some(IsoRequest::Release { trigger, reason, command }),
            CommandAction::Scan
            | CommandAction::QuarantineRestore
            | CommandAction::QuarantineDelete
            | CommandAction::BackupRestore => None,
        }
    }
}

/// `isolation/auto_release.json`: an automatic release is pending.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AutoRelease {
    isolated_ms: i64,
    reason: String,
}

/// A scan that decides an automatic release, running on its own thread.
struct CleanScan {
    rx: mpsc::Receiver<Vec<Outgoing>>,
    started_ms: i64,
    verdict: Option<bool>,
}

impl Agent {
    /// Carries out isolation requests until `stop`.
    pub(crate) async fn isolation_loop(
        &self,
        mut rx: mpsc::Receiver<IsoRequest>,
        mut policy_rx: watch::Receiver<Arc<Policy>>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let dir = self.dir.join(ISOLATION_DIR);
        let isolator = match state::ensure_private_dir(&dir)
            .map_err(|e| e.to_string())
            .and_then(|()| Isolator::new(&dir, None).map_err(|e| e.to_string()))
        {
            Ok(i) => Some(i),
            Err(e) => {
                tracing::error!("host isolation is unavailable: {e}");
                None
            }
        };
        if let Some(iso) = &isolator {
            self.restore_at_start(iso).await?;
        }
        let mut clean: Option<CleanScan> = None;
        if self.isolated.load(Ordering::Relaxed) && dir.join(AUTO_RELEASE_FILE).exists() {
            clean = self.start_clean_scan(&policy_rx);
        }
        // Detections seen since the clean scan started: its result no longer decides anything.
        let mut last_detection_ms = 0i64;
        let mut policy_open = true;
        policy_rx.mark_unchanged();
        loop {
            let next = tokio::select! {
                _ = stopped(&mut stop) => return Ok(()),
                changed = policy_rx.changed(), if policy_open => {
                    match (changed, &isolator) {
                        // The heartbeat side is gone, which happens only when stopping.
                        (Err(_), _) => policy_open = false,
                        (Ok(()), Some(iso)) => {
                            let policy = policy_rx.borrow_and_update().clone();
                            if let Some(event) = self.follow_policy(iso, &policy).await {
                                self.append(vec![event]).await?;
                            }
                        }
                        (Ok(()), None) => {}
                    }
                    None
                }
                r = rx.recv() => match r {
                    Some(r) => Some(r),
                    None => { stopped(&mut stop).await; return Ok(()); }
                },
                batch = async {
                    match clean.as_mut() {
                        Some(c) => c.rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    match batch {
                        Some(batch) => {
                            if let Some(c) = clean.as_mut() {
                                if let Some(s) = batch.iter().find(|o| o.kind == kind::SCAN_SUMMARY) {
                                    c.verdict = Some(scan_was_clean(&s.data));
                                }
                            }
                            self.append(batch).await?;
                            None
                        }
                        None => {
                            let done = clean.take();
                            if let Some(c) = done {
                                let fresh = last_detection_ms < c.started_ms;
                                match c.verdict {
                                    Some(true) if fresh => Some(IsoRequest::Release {
                                        trigger: "clean_scan".into(),
                                        reason: "a full scan found nothing".into(),
                                        command: None,
                                    }),
                                    Some(true) => {
                                        tracing::info!("a detection came during the clean scan; scanning again");
                                        clean = self.start_clean_scan(&policy_rx);
                                        None
                                    }
                                    _ => {
                                        tracing::warn!("the clean scan was not clean; the host stays isolated until an admin releases it");
                                        self.append(vec![isolation_event("auto_release_refused", "failure", "clean_scan",
                                            "the full scan found something or could not run completely; release by an admin", None, false)]).await?;
                                        remove_auto_release(&dir);
                                        None
                                    }
                                }
                            } else {
                                None
                            }
                        }
                    }
                }
            };
            let Some(request) = next else { continue };
            let policy = policy_rx.borrow().clone();
            if matches!(&request, IsoRequest::Isolate { trigger, .. } if trigger != "command") {
                last_detection_ms = state::now_ms();
            }
            let automatic_isolation =
                matches!(&request, IsoRequest::Isolate { trigger, .. } if trigger != "command");
            let (result, event) = self.carry_out(isolator.as_ref(), &request, &policy).await;
            self.append(vec![event]).await?;
            if automatic_isolation && result.success && policy.response.isolation.release_on_clean_scan {
                let pending = AutoRelease { isolated_ms: state::now_ms(), reason: request_reason(&request) };
                if let Err(e) = state::write_json(&dir.join(AUTO_RELEASE_FILE), &pending) {
                    tracing::error!("could not record the pending automatic release: {e}");
                }
                if clean.is_none() {
                    clean = self.start_clean_scan(&policy_rx);
                }
            }
            if matches!(request, IsoRequest::Release { .. }) && result.success {
                remove_auto_release(&dir);
            }
            if let Some(id) = request_command(&request) {
                self.finish_command(id, result).await;
            }
        }
    }

    async fn restore_at_start(&self, iso: &Isolator) -> Result<(), Error> {
        let recorded = iso.state_dir().join(mamori_isolate::STATE_FILE).exists();
        let i = iso.clone();
        let restored = tokio::task::spawn_blocking(move || i.restore_if_isolated())
            .await
            .map_err(|e| Error::Internal(format!("isolation restore task: {e}")))?;
        let event = match restored {
            Ok(Restore::NotIsolated) => None,
            Ok(Restore::AlreadyInPlace) => Some(isolation_event(
                "isolation_restored",
                "success",
                "start",
                "isolation still in force",
                None,
                false,
            )),
            Ok(Restore::Reapplied) => Some(isolation_event(
                "isolation_restored",
                "success",
                "start",
                "the recorded isolation was applied again (rules were missing or altered)",
                None,
                false,
            )),
            Ok(Restore::RemovedStaleTable) => Some(isolation_event(
                "isolation_restored",
                "success",
                "start",
                "removed isolation rules left by an isolation that was never verified",
                None,
                false,
            )),
            Err(e) if recorded => Some(isolation_event(
                "isolation_restored",
                "failure",
                "start",
                &format!("the host was isolated but the isolation could not be put back: {e}"),
                None,
                false,
            )),
            Err(e) => {
                // Never isolated and no nftables here: nothing to restore, nothing to say.
                tracing::debug!("isolation restore check: {e}");
                None
            }
        };
        self.isolated.store(recorded, Ordering::Relaxed);
        if let Some(e) = event {
            self.append(vec![e]).await?;
        }
        Ok(())
    }

    /// Does what `request` asks; the command result and the `response.action` event.
    async fn carry_out(
        &self,
        isolator: Option<&Isolator>,
        request: &IsoRequest,
        policy: &Policy,
    ) -> (CommandResult, Outgoing) {
        let command = request_command(request);
        let Some(iso) = isolator else {
            let (action, trigger) = match request {
                IsoRequest::Isolate { trigger, .. } => ("host_isolated", trigger),
                IsoRequest::Release { trigger, .. } => ("host_released", trigger),
            };
            let m = "host isolation is unavailable on this agent (see its log)";
            return (failure(m), isolation_event(action, "failure", trigger, m, command, false));
        };
        match request {
            IsoRequest::Isolate { trigger, reason, .. } => {
                // Dry run is for automatic responses; an admin's explicit order is carried out.
                if policy.response.dry_run && trigger != "command" {
                    let m = format!("dry run: would isolate the host ({reason})");
                    return (
                        success(&m),
                        isolation_event("would_isolate", "unknown", trigger, &m, command, true),
                    );
                }
                if self.isolated.load(Ordering::Relaxed) {
                    let m = "the host is already isolated";
                    return (
                        success(m),
                        isolation_event("host_isolated", "success", trigger, m, command, false),
                    );
                }
                match self.isolate(iso, policy).await {
                    Ok(plan) => {
                        self.isolated.store(true, Ordering::Relaxed);
                        let m = format!(
                            "isolated ({reason}); reachable: the manager and {} allow-list entries",
                            plan.allow.len()
                        );
                        tracing::warn!("{m}");
                        let mut e = isolation_event("host_isolated", "success", trigger, &m, command, false);
                        e.data["mamori"]["response"]["plan"] = plan_json(&plan);
                        (success(&m), e)
                    }
                    Err(m) => {
                        tracing::error!("isolation failed: {m}");
                        (
                            failure(&m),
                            isolation_event("host_isolated", "failure", trigger, &m, command, false),
                        )
                    }
                }
            }
            IsoRequest::Release { trigger, reason, .. } => {
                let i = iso.clone();
                let released = tokio::task::spawn_blocking(move || i.release())
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                match released {
                    Ok(()) => {
                        let was = self.isolated.swap(false, Ordering::Relaxed);
                        let m = if was {
                            format!("isolation released ({reason})")
                        } else {
                            "the host was not isolated".to_string()
                        };
                        tracing::warn!("{m}");
                        (
                            success(&m),
                            isolation_event("host_released", "success", trigger, &m, command, false),
                        )
                    }
                    Err(e) => {
                        let m = format!("the isolation could not be released: {e}");
                        tracing::error!("{m}");
                        (
                            failure(&m),
                            isolation_event("host_released", "failure", trigger, &m, command, false),
                        )
                    }
                }
            }
        }
    }

    /// While isolated, puts a changed allow-list in force (an admin adding the PACS server to
    /// an isolated host's allow-list expects it reachable now, not at the next isolation). The
    /// same dead-man switch applies: on failure the previous isolation stays.
    async fn follow_policy(&self, iso: &Isolator, policy: &Policy) -> Option<Outgoing> {
        if !self.isolated.load(Ordering::Relaxed) {
            return None;
        }
        let i = iso.clone();
        let applied = match tokio::task::spawn_blocking(move || i.status()).await {
            Ok(Ok(status)) => status.plan?,
            Ok(Err(e)) => {
                tracing::warn!("could not read the isolation state to follow the new policy: {e}");
                return None;
            }
            Err(e) => {
                tracing::warn!("isolation status task: {e}");
                return None;
            }
        };
        let outcome = match allow_entries(&policy.response.isolation.allow) {
            Ok(allow) if allow == applied.allow => return None,
            Ok(_) => self.isolate(iso, policy).await,
            Err(e) => Err(e),
        };
        let event = match outcome {
            Ok(plan) => {
                let m = format!(
                    "the isolation now follows policy version {}: reachable are the manager and {} allow-list entries",
                    policy.version,
                    plan.allow.len()
                );
                tracing::warn!("{m}");
                let mut e = isolation_event("isolation_updated", "success", "policy", &m, None, false);
                e.data["mamori"]["response"]["plan"] = plan_json(&plan);
                e
            }
            Err(e) => {
                let m = format!("the new isolation allow-list was not applied; the previous one stays: {e}");
                tracing::error!("{m}");
                isolation_event("isolation_updated", "failure", "policy", &m, None, false)
            }
        };
        Some(event)
    }

    /// Applies the policy's isolation with the dead-man switch; the plan on success.
    async fn isolate(&self, iso: &Isolator, policy: &Policy) -> Result<IsolationPlan, String> {
        let url = reqwest::Url::parse(&self.config.server_url).map_err(|e| format!("server URL: {e}"))?;
        let host = url.host_str().ok_or("the server URL has no host")?.to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let allow = allow_entries(&policy.response.isolation.allow)?;
        let identity = self.probe_identity()?;
        let i = iso.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let manager = mamori_isolate::resolve_manager(&host, port).map_err(|e| e.to_string())?;
            let mut plan = IsolationPlan::new(manager);
            plan.allow = allow;
            // A new connection each time: an established one would pass even if new ones fail.
            let verify = move || {
                let (url, pinned, key_and_cert) = &identity;
                let Ok(client) = ManagerClient::new(url, pinned, Some(key_and_cert)) else { return false };
                runtime.block_on(async move {
                    let reply = tokio::time::timeout(
                        VERIFY_REQUEST_TIMEOUT,
                        client.get_json::<Value>(path::HEALTH),
                    )
                    .await;
                    matches!(reply, Ok(Ok(_)))
                })
            };
            match i.isolate(&plan, verify, VERIFY_TIMEOUT) {
                Ok(()) => Ok(plan),
                Err(IsolateError::VerifyFailed { timeout, restored }) => Err(format!(
                    "the manager was not reachable within {timeout:?} after isolating, so the isolation was rolled back ({restored:?})"
                )),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
        .map_err(|e| format!("isolation task: {e}"))?
    }

    /// What a client with our identity, and a connection pool of its own, is built from.
    fn probe_identity(&self) -> Result<(String, String, mamori_pki::KeyAndCert), String> {
        let cert_pem = state::read_text(&self.dir.join(state::CERT_FILE)).map_err(|e| e.to_string())?;
        let key_and_cert = mamori_pki::KeyAndCert { key_pem: self.key.key_pem().to_string(), cert_pem };
        Ok((self.config.server_url.clone(), self.config.ca_fingerprint.clone(), key_and_cert))
    }

    fn start_clean_scan(&self, policy_rx: &watch::Receiver<Arc<Policy>>) -> Option<CleanScan> {
        let policy = policy_rx.borrow().clone();
        let job =
            scan::full_scan(&policy, CLEAN_SCAN_NAME, policy.response.isolation.clean_scan_paths.clone());
        tracing::info!(paths = ?job.paths, "scanning the host before releasing the isolation");
        let (tx, rx) = mpsc::channel::<Vec<Outgoing>>(64);
        let agent_dir = self.dir.clone();
        let spawned = std::thread::Builder::new().name("mamori-clean-scan".into()).spawn(move || {
            let emit = |batch: Vec<Outgoing>| tx.blocking_send(batch).is_ok();
            scan::execute(&job, &agent_dir, None, &emit);
        });
        match spawned {
            Ok(_) => Some(CleanScan { rx, started_ms: state::now_ms(), verdict: None }),
            Err(e) => {
                tracing::error!("could not start the clean scan: {e}");
                None
            }
        }
    }
}

fn request_command(r: &IsoRequest) -> Option<&str> {
    match r {
        IsoRequest::Isolate { command, .. } | IsoRequest::Release { command, .. } => command.as_deref(),
    }
}

fn request_reason(r: &IsoRequest) -> String {
    match r {
        IsoRequest::Isolate { reason, .. } | IsoRequest::Release { reason, .. } => reason.clone(),
    }
}

fn remove_auto_release(dir: &std::path::Path) {
    match std::fs::remove_file(dir.join(AUTO_RELEASE_FILE)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::error!("could not clear the pending automatic release: {e}"),
    }
}

pub(crate) fn success(m: &str) -> CommandResult {
    CommandResult { success: true, message: m.to_string() }
}

pub(crate) fn failure(m: &str) -> CommandResult {
    CommandResult { success: false, message: m.to_string() }
}

fn plan_json(plan: &IsolationPlan) -> Value {
    json!({
        "manager": plan.manager.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "allow": plan.allow.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    })
}

/// The policy's allow-list in mamori-isolate's terms, naming the first bad entry.
fn allow_entries(allow: &[IsolationAllow]) -> Result<Vec<AllowEntry>, String> {
    allow
        .iter()
        .map(|a| {
            let text = a.spec();
            let entry: AllowEntry =
                text.parse().map_err(|e| format!("isolation allow-list entry {text:?}: {e}"))?;
            Ok(if a.label.is_empty() { entry } else { entry.labelled(&a.label) })
        })
        .collect()
}

/// The scan found nothing, the rules and hash lists it was given all loaded, and it either ran
/// without errors or did look at files (unreadable files alone do not make it unclean: they are
/// reported with the summary; a scan that could read nothing at all proves nothing).
fn scan_was_clean(summary: &Value) -> bool {
    let s = &summary["mamori"]["scan"];
    let n = |k: &str| s[k].as_u64();
    n("infected_files") == Some(0)
        && n("rule_errors") == Some(0)
        && n("hash_list_errors") == Some(0)
        && (n("exit_code") == Some(0)
            || n("files_scanned").unwrap_or(0) + n("files_unchanged").unwrap_or(0) > 0)
}

/// A `response.action` about isolation.
fn isolation_event(
    action: &str,
    outcome: &str,
    trigger: &str,
    message: &str,
    command: Option<&str>,
    dry_run: bool,
) -> Outgoing {
    let mut response = json!({
        "action": if action.contains("release") { "release" } else { "isolate" },
        "dry_run": dry_run,
        "trigger": trigger,
    });
    if let Some(id) = command {
        response["command_id"] = json!(id);
    }
    let data = json!({
        "@timestamp": state::rfc3339(SystemTime::now()),
        "event": {
            "kind": "event",
            "category": ["network", "host"],
            "type": ["change"],
            "action": action,
            "outcome": outcome,
            "reason": message,
            "module": "mamori",
            "dataset": "mamori.response",
        },
        "message": message,
        "mamori": {"response": response},
    });
    Outgoing { kind: kind::RESPONSE_ACTION, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_entries_convert_and_bad_ones_are_named() {
        let allow = vec![
            IsolationAllow {
                cidr: "10.0.0.53".into(),
                proto: Some("udp".into()),
                port: Some(53),
                inbound: false,
                label: "DNS".into(),
            },
            IsolationAllow {
                cidr: "10.20.0.0/24".into(),
                proto: None,
                port: Some(443),
                inbound: false,
                label: String::new(),
            },
            IsolationAllow {
                cidr: "192.168.5.9".into(),
                proto: Some("tcp".into()),
                port: Some(22),
                inbound: true,
                label: "admin".into(),
            },
        ];
        let entries = allow_entries(&allow).unwrap();
        assert_eq!(entries[0].to_string(), "10.0.0.53 udp/53 (DNS)");
        assert_eq!(entries[1].to_string(), "10.20.0.0/24 any/443");
        assert_eq!(entries[2].to_string(), "in 192.168.5.9 tcp/22 (admin)");
        let bad = vec![IsolationAllow {
            cidr: "10.0.0.1; flush ruleset".into(),
            proto: None,
            port: None,
            inbound: false,
            label: String::new(),
        }];
        let e = allow_entries(&bad).unwrap_err();
        assert!(e.contains("flush ruleset"), "{e}");
    }

    #[test]
    fn a_scan_is_clean_only_with_nothing_found_and_everything_loaded() {
        let s = |infected: u64, rule_errors: u64, scanned: u64, exit_code: u64| {
            json!({"mamori": {"scan": {"infected_files": infected, "rule_errors": rule_errors,
                "hash_list_errors": 0, "files_scanned": scanned, "files_unchanged": 0, "exit_code": exit_code}}})
        };
        assert!(scan_was_clean(&s(0, 0, 10, 0)));
        assert!(scan_was_clean(&s(0, 0, 10, 2)), "some unreadable files");
        assert!(scan_was_clean(&s(0, 0, 0, 0)), "an empty tree is clean");
        assert!(!scan_was_clean(&s(1, 0, 10, 1)));
        assert!(!scan_was_clean(&s(0, 1, 10, 2)), "rules that did not load do not prove anything");
        assert!(!scan_was_clean(&s(0, 0, 0, 2)), "a scan that could read nothing proves nothing");
        assert!(!scan_was_clean(&json!({})));
    }
}
