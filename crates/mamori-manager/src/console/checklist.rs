//! Evidence for the technical items of the MHLW "Guideline for the Security Management of
//! Medical Information Systems" v6.0 inspection checklist that mamori can show: each item is
//! `ok`, `partial` or `missing`, with the evidence found and what is missing.
//!
//! [`evaluate`] is a pure function of [`Facts`] (gathered from the store by [`gather`]) and the
//! time, so that every rule of every item is tested without a manager.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::Json;
use mamori_auth::Permission;
use mamori_proto::kind;
use mamori_store::EventFilter;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::audit::{self, Actor};
use super::session::authenticate;
use crate::api::{ApiFailure, JsonBody};
use crate::state::Shared;
use crate::timefmt::{now_ms, rfc3339};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// Accounts not used for this long should be disabled.
pub(crate) const UNUSED_ACCOUNT_DAYS: i64 = 90;
/// The audit log should be reviewed (verified) at least this often.
pub(crate) const AUDIT_REVIEW_DAYS: i64 = 31;
/// A restore should have been tested within this many days.
pub(crate) const RESTORE_TEST_DAYS: i64 = 180;
/// Every endpoint should have a backup and a full scan this recent.
pub(crate) const BACKUP_DAYS: i64 = 7;
pub(crate) const SCAN_DAYS: i64 = 7;

pub(crate) const INVENTORY_SETTING: &str = "inventory";
pub(crate) const RESTORE_TEST_SETTING: &str = "restore_tests";

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Ok,
    Partial,
    Missing,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Item {
    pub id: &'static str,
    pub title_key: String,
    pub status: Status,
    pub evidence: Vec<String>,
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Account {
    pub username: String,
    pub role: String,
    pub disabled: bool,
    pub totp: bool,
    pub created_ms: i64,
    pub last_login_ms: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Endpoint {
    pub hostname: String,
    pub last_scan_ms: Option<i64>,
    pub last_backup_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct RestoreTest {
    pub host: String,
    pub snapshot: String,
    pub note: String,
    pub by: String,
    pub time_ms: i64,
}

/// Everything the checklist looks at.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts {
    pub accounts: Vec<Account>,
    pub audit_records: u64,
    pub audit_ok: Option<bool>,
    pub last_audit_review_ms: Option<i64>,
    pub endpoints: Vec<Endpoint>,
    /// Host names the site registered as its inventory (None: never registered).
    pub inventory: Option<Vec<String>>,
    pub backup_vault: Option<String>,
    pub restore_tests: Vec<RestoreTest>,
    /// Detection kinds the response policy isolates for, and whether it is a dry run.
    pub isolating_kinds: Vec<String>,
    pub response_dry_run: bool,
    pub isolation_allow: usize,
    pub alert_routes_for_critical: usize,
    pub log_events_7d: u64,
}

fn days(ms: i64) -> i64 {
    ms / DAY_MS
}

fn item(id: &'static str, evidence: Vec<String>, missing: Vec<String>, partial: bool) -> Item {
    let status = if missing.is_empty() {
        Status::Ok
    } else if partial || !evidence.is_empty() {
        Status::Partial
    } else {
        Status::Missing
    };
    Item { id, title_key: format!("checklist.item.{id}"), status, evidence, missing }
}

pub(crate) fn evaluate(f: &Facts, now: i64) -> Vec<Item> {
    let mut items = Vec::new();
    let enabled: Vec<&Account> = f.accounts.iter().filter(|a| !a.disabled).collect();

    // Two-factor authentication for every account (Guideline 6.0: required by 2027).
    let with: Vec<&&Account> = enabled.iter().filter(|a| a.totp).collect();
    let without: Vec<String> = enabled
        .iter()
        .filter(|a| !a.totp)
        .map(|a| format!("{} ({}): TOTP not set up", a.username, a.role))
        .collect();
    let mut evidence = vec![format!(
        "{} of {} enabled accounts use TOTP; no session is issued without it",
        with.len(),
        enabled.len()
    )];
    if enabled.is_empty() {
        evidence.clear();
    }
    items.push(item("mfa", evidence, without, false));

    // Access logs kept and reviewed.
    let mut evidence = Vec::new();
    let mut missing = Vec::new();
    evidence.push(format!("{} audit records in a signed hash chain", f.audit_records));
    match f.audit_ok {
        Some(true) => evidence.push("the chain verifies".to_string()),
        Some(false) => missing.push("the audit chain does not verify: it was altered".to_string()),
        None => {}
    }
    match f.last_audit_review_ms {
        Some(t) if now - t <= AUDIT_REVIEW_DAYS * DAY_MS => {
            evidence.push(format!("last reviewed (verified) {}", rfc3339(t)))
        }
        Some(t) => missing.push(format!(
            "last reviewed {} days ago (review at least every {AUDIT_REVIEW_DAYS} days)",
            days(now - t)
        )),
        None => missing.push("the audit log has never been reviewed (verified)".to_string()),
    }
    items.push(item("access_log", evidence, missing, true));

    // Unused accounts.
    let unused: Vec<String> = enabled
        .iter()
        .filter(|a| now - a.last_login_ms.unwrap_or(a.created_ms) > UNUSED_ACCOUNT_DAYS * DAY_MS)
        .map(|a| match a.last_login_ms {
            Some(t) => format!("{}: last login {} days ago", a.username, days(now - t)),
            None => format!("{}: never logged in since {}", a.username, rfc3339(a.created_ms)),
        })
        .collect();
    let evidence = if unused.is_empty() {
        vec![format!("every enabled account was used within {UNUSED_ACCOUNT_DAYS} days")]
    } else {
        Vec::new()
    };
    items.push(item("unused_accounts", evidence, unused, false));

    // Enrolled devices against the inventory.
    let enrolled: HashSet<String> = f.endpoints.iter().map(|e| e.hostname.to_lowercase()).collect();
    let mut evidence = vec![format!("{} endpoints enrolled with device certificates", f.endpoints.len())];
    let mut missing = Vec::new();
    match &f.inventory {
        None => missing.push("no device inventory registered to compare with".to_string()),
        Some(list) => {
            let absent: Vec<&String> =
                list.iter().filter(|h| !enrolled.contains(&h.to_lowercase())).collect();
            evidence.push(format!(
                "{} of {} inventory devices enrolled",
                list.len() - absent.len(),
                list.len()
            ));
            missing.extend(absent.iter().map(|h| format!("{h}: in the inventory, not enrolled")));
            let listed: HashSet<String> = list.iter().map(|h| h.to_lowercase()).collect();
            missing.extend(
                f.endpoints
                    .iter()
                    .filter(|e| !listed.contains(&e.hostname.to_lowercase()))
                    .map(|e| format!("{}: enrolled, not in the inventory", e.hostname)),
            );
        }
    }
    items.push(item("devices", evidence, missing, true));

    // Malware scans.
    let stale: Vec<String> = f
        .endpoints
        .iter()
        .filter(|e| e.last_scan_ms.is_none_or(|t| now - t > SCAN_DAYS * DAY_MS))
        .map(|e| match e.last_scan_ms {
            Some(t) => format!("{}: last full scan {} days ago", e.hostname, days(now - t)),
            None => format!("{}: no scan reported", e.hostname),
        })
        .collect();
    let scanned = f.endpoints.len() - stale.len();
    let evidence = if scanned == 0 {
        Vec::new()
    } else {
        vec![format!("{scanned} of {} endpoints scanned within {SCAN_DAYS} days", f.endpoints.len())]
    };
    let mut missing = stale;
    if f.endpoints.is_empty() {
        missing.push("no endpoints enrolled".to_string());
    }
    items.push(item("malware_scans", evidence, missing, false));

    // Backups on storage the protected hosts cannot change.
    let mut evidence = Vec::new();
    let mut missing = Vec::new();
    match &f.backup_vault {
        Some(vault) => evidence.push(format!(
            "backups go to the mamori vault {vault}: add-only, the hosts cannot delete, overwrite or age them out"
        )),
        None => missing.push("no backup to a vault is configured in the policy".to_string()),
    }
    for e in &f.endpoints {
        match e.last_backup_ms {
            Some(t) if now - t <= BACKUP_DAYS * DAY_MS => {}
            Some(t) => missing.push(format!("{}: last backup {} days ago", e.hostname, days(now - t))),
            None => missing.push(format!("{}: no backup reported", e.hostname)),
        }
    }
    let backed_up = f
        .endpoints
        .iter()
        .filter(|e| e.last_backup_ms.is_some_and(|t| now - t <= BACKUP_DAYS * DAY_MS))
        .count();
    if !f.endpoints.is_empty() {
        evidence.push(format!(
            "{backed_up} of {} endpoints backed up within {BACKUP_DAYS} days",
            f.endpoints.len()
        ));
    }
    items.push(item("backups_isolated", evidence, missing, true));

    // A restore tested recently.
    let recent: Vec<&RestoreTest> =
        f.restore_tests.iter().filter(|t| now - t.time_ms <= RESTORE_TEST_DAYS * DAY_MS).collect();
    let evidence: Vec<String> = recent
        .iter()
        .map(|t| {
            format!(
                "{}: restore of {} tested {} by {} ({})",
                rfc3339(t.time_ms),
                t.snapshot,
                t.host,
                t.by,
                t.note
            )
        })
        .collect();
    let missing = if recent.is_empty() {
        vec![format!("no restore test recorded within {RESTORE_TEST_DAYS} days")]
    } else {
        Vec::new()
    };
    items.push(item("restore_tested", evidence, missing, false));

    // Isolation and response ready.
    let mut evidence = Vec::new();
    let mut missing = Vec::new();
    if f.isolating_kinds.is_empty() {
        missing.push("no response rule isolates a host".to_string());
    } else {
        evidence.push(format!("hosts are isolated automatically on: {}", f.isolating_kinds.join(", ")));
    }
    if f.response_dry_run {
        missing.push("the response policy is in dry-run mode: nothing is carried out".to_string());
    }
    evidence.push(format!("{} allow-list entries stay reachable while isolated", f.isolation_allow));
    items.push(item("response_ready", evidence, missing, true));

    // Someone is told.
    let (evidence, missing) = if f.alert_routes_for_critical > 0 {
        (
            vec![format!("{} alert routes deliver critical detections", f.alert_routes_for_critical)],
            Vec::new(),
        )
    } else {
        (Vec::new(), vec!["no alert route delivers critical detections (mail, chat or SIEM)".to_string()])
    };
    items.push(item("alerting", evidence, missing, false));

    // Logs of the network devices and servers collected.
    let (evidence, missing) = if f.log_events_7d > 0 {
        (vec![format!("{} log events received in the last 7 days", f.log_events_7d)], Vec::new())
    } else {
        (Vec::new(), vec!["no logs received from firewalls or servers in the last 7 days".to_string()])
    };
    items.push(item("log_collection", evidence, missing, false));
    items
}

/// Reads the facts from the store and the running manager.
pub(crate) async fn gather(shared: &Arc<Shared>) -> Result<Facts, ApiFailure> {
    let now = now_ms();
    let key = shared.console.audit_key.verifying_key();
    let agents = super::views::agent_summaries(shared).await?;
    let backups = super::views::backup_state(shared, now - 90 * DAY_MS).await?;
    let mut facts = shared
        .with_store(move |s| {
            let mut f = Facts {
                accounts: s
                    .list_users()?
                    .into_iter()
                    .map(|u| Account {
                        username: u.username,
                        role: u.role,
                        disabled: u.disabled,
                        totp: u.totp_secret.is_some(),
                        created_ms: u.created_ms,
                        last_login_ms: u.last_login_ms,
                    })
                    .collect(),
                ..Facts::default()
            };
            let report = audit::verify_store(s, &key)?;
            f.audit_records = report.records;
            f.audit_ok = Some(report.ok);
            f.last_audit_review_ms = s.last_audit_of("audit.verify")?.map(|r| r.time_ms);
            f.inventory = s.get_setting(INVENTORY_SETTING)?.and_then(|t| serde_json::from_str(&t).ok());
            f.restore_tests = s
                .get_setting(RESTORE_TEST_SETTING)?
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            let scans = s.query_events(&EventFilter {
                kinds: vec![kind::SCAN_SUMMARY.to_string()],
                since_ms: Some(now - 30 * DAY_MS),
                limit: mamori_store::MAX_QUERY_LIMIT,
                newest_first: true,
                ..EventFilter::default()
            })?;
            let mut last_scan: HashMap<String, i64> = HashMap::new();
            for e in scans {
                last_scan.entry(e.agent_id).or_insert(e.time_ms);
            }
            f.log_events_7d = s
                .query_log_events(&mamori_store::LogFilter {
                    since_ms: Some(now - 7 * DAY_MS),
                    limit: 1000,
                    ..Default::default()
                })?
                .len() as u64;
            let settings = s.get_setting(super::alerting::SETTINGS_KEY)?;
            f.alert_routes_for_critical = super::alerting::routes_for_critical(settings.as_deref());
            Ok((f, last_scan))
        })
        .await?;
    let (ref mut f, ref last_scan) = facts;
    f.endpoints = agents
        .iter()
        .filter(|a| a.status == "online" || a.status == "offline")
        .map(|a| Endpoint {
            hostname: a.hostname.clone(),
            last_scan_ms: last_scan.get(&a.id).copied(),
            last_backup_ms: backups.last.get(&a.id).filter(|l| l.1 == "completed").map(|l| l.0),
        })
        .collect();
    let policy: Option<mamori_proto::Policy> =
        shared.policy.read().ok().and_then(|p| (p.0 > 0).then(|| serde_json::from_str(&p.1).ok()).flatten());
    if let Some(p) = policy {
        f.backup_vault = p.backup.as_ref().map(|b| b.vault.clone());
        let mut kinds: Vec<String> = p
            .response
            .rules
            .iter()
            .filter(|r| r.actions.contains(&mamori_proto::ResponseActionKind::Isolate))
            .map(|r| format!("{:?} ≥ {}", r.detection, r.min_severity.as_str()).to_lowercase())
            .collect();
        kinds.dedup();
        f.isolating_kinds = kinds;
        f.response_dry_run = p.response.dry_run;
        f.isolation_allow = p.response.isolation.allow.len();
    }
    Ok(facts.0)
}

pub(crate) async fn get(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiFailure> {
    authenticate(&shared, &method, &headers, Permission::View).await?;
    let facts = gather(&shared).await?;
    Ok(Json(json!({"items": evaluate(&facts, now_ms()), "generated": rfc3339(now_ms())})))
}

#[derive(Deserialize)]
pub(crate) struct Inventory {
    hosts: Vec<String>,
}

/// The site's device inventory (host names), to compare with the enrolled agents.
pub(crate) async fn put_inventory(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    body: Result<JsonBody<Inventory>, ApiFailure>,
) -> Result<Json<Value>, ApiFailure> {
    let session = authenticate(&shared, &method, &headers, Permission::ManageUsers).await?;
    let JsonBody(req) = body.map_err(ApiFailure::body_is_bad_request)?;
    let mut hosts: Vec<String> =
        req.hosts.iter().map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).collect();
    hosts.sort();
    hosts.dedup();
    if hosts.len() > 100_000 || hosts.iter().any(|h| h.len() > 255 || h.chars().any(char::is_control)) {
        return Err(ApiFailure::bad_request("at most 100000 host names of at most 255 printable characters"));
    }
    let text = serde_json::to_string(&hosts).map_err(ApiFailure::internal)?;
    shared.with_store(move |s| Ok(s.put_setting(INVENTORY_SETTING, &text, now_ms())?)).await?;
    audit::record(
        &shared,
        Actor::User(&session.username),
        "inventory.update",
        "",
        json!({"hosts": hosts.len()}),
    )
    .await;
    Ok(Json(json!({"hosts": hosts.len()})))
}

#[derive(Deserialize)]
pub(crate) struct RestoreTestBody {
    host: String,
    snapshot: String,
    #[serde(default)]
    note: String,
}

/// Records that a restore was tested (who, which host and snapshot); the checklist's evidence.
pub(crate) async fn record_restore_test(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    body: Result<JsonBody<RestoreTestBody>, ApiFailure>,
) -> Result<Json<Value>, ApiFailure> {
    let session = authenticate(&shared, &method, &headers, Permission::Respond).await?;
    let JsonBody(req) = body.map_err(ApiFailure::body_is_bad_request)?;
    if req.host.trim().is_empty() || req.snapshot.trim().is_empty() {
        return Err(ApiFailure::bad_request("host and snapshot are required"));
    }
    if req.host.len() > 255 || req.snapshot.len() > 255 || req.note.len() > 2000 {
        return Err(ApiFailure::bad_request(
            "host or snapshot longer than 255 bytes, or note longer than 2000",
        ));
    }
    let test = RestoreTest {
        host: req.host.trim().to_string(),
        snapshot: req.snapshot.trim().to_string(),
        note: req.note.trim().to_string(),
        by: session.username.clone(),
        time_ms: now_ms(),
    };
    let saved = test.clone();
    shared
        .with_store(move |s| {
            let mut list: Vec<RestoreTest> = s
                .get_setting(RESTORE_TEST_SETTING)?
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            list.push(saved);
            // The newest hundred are evidence enough; the audit log keeps every one.
            let skip = list.len().saturating_sub(100);
            let list: Vec<RestoreTest> = list.into_iter().skip(skip).collect();
            s.put_setting(RESTORE_TEST_SETTING, &serde_json::to_string(&list)?, now_ms())?;
            Ok(())
        })
        .await?;
    audit::record(
        &shared,
        Actor::User(&session.username),
        "restore_test.record",
        &test.host,
        json!({"snapshot": test.snapshot, "note": test.note}),
    )
    .await;
    Ok(Json(json!({"recorded": rfc3339(test.time_ms)})))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn status(items: &[Item], id: &str) -> Status {
        items.iter().find(|i| i.id == id).map(|i| i.status.clone()).unwrap()
    }

    fn good() -> Facts {
        Facts {
            accounts: vec![Account {
                username: "it".into(),
                role: "admin".into(),
                totp: true,
                created_ms: NOW - 400 * DAY_MS,
                last_login_ms: Some(NOW - DAY_MS),
                ..Default::default()
            }],
            audit_records: 10,
            audit_ok: Some(true),
            last_audit_review_ms: Some(NOW - 3 * DAY_MS),
            endpoints: vec![Endpoint {
                hostname: "ward-pc".into(),
                last_scan_ms: Some(NOW - DAY_MS),
                last_backup_ms: Some(NOW - DAY_MS),
            }],
            inventory: Some(vec!["WARD-PC".into()]),
            backup_vault: Some("https://vault:8444".into()),
            restore_tests: vec![RestoreTest {
                host: "ward-pc".into(),
                snapshot: "s1".into(),
                note: "ok".into(),
                by: "it".into(),
                time_ms: NOW - 10 * DAY_MS,
            }],
            isolating_kinds: vec!["ransomware ≥ high".into()],
            response_dry_run: false,
            isolation_allow: 2,
            alert_routes_for_critical: 1,
            log_events_7d: 5,
        }
    }

    #[test]
    fn a_well_run_site_is_all_ok() {
        let items = evaluate(&good(), NOW);
        let not_ok: Vec<_> =
            items.iter().filter(|i| i.status != Status::Ok).map(|i| (i.id, &i.missing)).collect();
        assert!(not_ok.is_empty(), "{not_ok:?}");
        assert_eq!(items.len(), 10);
    }

    #[test]
    fn each_gap_is_named() {
        let mut f = good();
        f.accounts.push(Account {
            username: "nurse".into(),
            role: "operator".into(),
            created_ms: NOW - 200 * DAY_MS,
            ..Default::default()
        });
        f.audit_ok = Some(false);
        f.inventory = Some(vec!["ward-pc".into(), "reception-01".into()]);
        f.endpoints[0].last_backup_ms = Some(NOW - 30 * DAY_MS);
        f.restore_tests[0].time_ms = NOW - 400 * DAY_MS;
        f.response_dry_run = true;
        f.alert_routes_for_critical = 0;
        f.log_events_7d = 0;
        f.endpoints[0].last_scan_ms = None;
        let items = evaluate(&f, NOW);
        assert_eq!(status(&items, "mfa"), Status::Partial);
        assert!(items[0].missing[0].contains("nurse"));
        assert_eq!(status(&items, "access_log"), Status::Partial);
        assert_eq!(status(&items, "unused_accounts"), Status::Missing);
        assert_eq!(status(&items, "devices"), Status::Partial);
        assert!(items[3].missing.iter().any(|m| m.contains("reception-01")));
        assert_eq!(status(&items, "malware_scans"), Status::Missing);
        assert_eq!(status(&items, "backups_isolated"), Status::Partial);
        assert_eq!(status(&items, "restore_tested"), Status::Missing);
        assert_eq!(status(&items, "response_ready"), Status::Partial);
        assert_eq!(status(&items, "alerting"), Status::Missing);
        assert_eq!(status(&items, "log_collection"), Status::Missing);
    }

    #[test]
    fn no_inventory_and_no_review_are_gaps_not_passes() {
        let mut f = good();
        f.inventory = None;
        f.last_audit_review_ms = None;
        let items = evaluate(&f, NOW);
        assert_eq!(status(&items, "devices"), Status::Partial);
        assert_eq!(status(&items, "access_log"), Status::Partial);
    }
}
