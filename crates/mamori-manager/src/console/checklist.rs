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
pub(crate) use mamori_report::Lang;

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

/// One sentence in the reader's language (the figures are the same in both).
macro_rules! tr {
    ($lang:expr, $en:literal, $ja:literal $(, $arg:expr)* $(,)?) => {
        match $lang {
            Lang::Ja => format!($ja $(, $arg)*),
            Lang::En => format!($en $(, $arg)*),
        }
    };
}

pub(crate) fn evaluate(f: &Facts, now: i64, lang: Lang) -> Vec<Item> {
    let mut items = Vec::new();
    let enabled: Vec<&Account> = f.accounts.iter().filter(|a| !a.disabled).collect();

    // Two-factor authentication for every account (Guideline 6.0: required by 2027).
    let with = enabled.iter().filter(|a| a.totp).count();
    let without: Vec<String> = enabled
        .iter()
        .filter(|a| !a.totp)
        .map(|a| tr!(lang, "{} ({}): TOTP not set up", "{} ({}): 認証アプリ(TOTP)未設定", a.username, a.role))
        .collect();
    let mut evidence = vec![tr!(
        lang,
        "{} of {} enabled accounts use TOTP; no session is issued without it",
        "有効なアカウント {1} 件中 {0} 件が TOTP を使用(二要素目なしではログインできません)",
        with,
        enabled.len()
    )];
    if enabled.is_empty() {
        evidence.clear();
    }
    items.push(item("mfa", evidence, without, false));

    // Access logs kept and reviewed.
    let mut evidence = Vec::new();
    let mut missing = Vec::new();
    evidence.push(tr!(
        lang,
        "{} audit records in a signed hash chain",
        "署名付きハッシュチェーンの監査記録 {} 件",
        f.audit_records
    ));
    match f.audit_ok {
        Some(true) => evidence.push(tr!(lang, "the chain verifies", "改ざんなし(検証成功)")),
        Some(false) => missing.push(tr!(
            lang,
            "the audit chain does not verify: it was altered",
            "監査ログの検証に失敗しました(改ざんされています)"
        )),
        None => {}
    }
    match f.last_audit_review_ms {
        Some(t) if now - t <= AUDIT_REVIEW_DAYS * DAY_MS => {
            evidence.push(tr!(lang, "last reviewed (verified) {}", "最終確認(検証) {}", rfc3339(t)))
        }
        Some(t) => missing.push(tr!(
            lang,
            "last reviewed {} days ago (review at least every {} days)",
            "最終確認は {} 日前です({} 日以内ごとに確認してください)",
            days(now - t),
            AUDIT_REVIEW_DAYS
        )),
        None => missing.push(tr!(
            lang,
            "the audit log has never been reviewed (verified)",
            "監査ログが一度も確認(検証)されていません"
        )),
    }
    items.push(item("access_log", evidence, missing, true));

    // Unused accounts.
    let unused: Vec<String> = enabled
        .iter()
        .filter(|a| now - a.last_login_ms.unwrap_or(a.created_ms) > UNUSED_ACCOUNT_DAYS * DAY_MS)
        .map(|a| match a.last_login_ms {
            Some(t) => tr!(
                lang,
                "{}: last login {} days ago",
                "{}: 最終ログインは {} 日前",
                a.username,
                days(now - t)
            ),
            None => tr!(
                lang,
                "{}: never logged in since {}",
                "{}: {} の作成以来ログインなし",
                a.username,
                rfc3339(a.created_ms)
            ),
        })
        .collect();
    let evidence = if unused.is_empty() {
        vec![tr!(
            lang,
            "every enabled account was used within {} days",
            "有効なアカウントはすべて {} 日以内に使用されています",
            UNUSED_ACCOUNT_DAYS
        )]
    } else {
        Vec::new()
    };
    items.push(item("unused_accounts", evidence, unused, false));

    // Enrolled devices against the inventory.
    let enrolled: HashSet<String> = f.endpoints.iter().map(|e| e.hostname.to_lowercase()).collect();
    let mut evidence = vec![tr!(
        lang,
        "{} endpoints enrolled with device certificates",
        "端末証明書で登録済みの端末 {} 台",
        f.endpoints.len()
    )];
    let mut missing = Vec::new();
    match &f.inventory {
        None => missing.push(tr!(
            lang,
            "no device inventory registered to compare with",
            "照合する機器台帳(インベントリ)が登録されていません"
        )),
        Some(list) => {
            let absent: Vec<&String> =
                list.iter().filter(|h| !enrolled.contains(&h.to_lowercase())).collect();
            evidence.push(tr!(
                lang,
                "{} of {} inventory devices enrolled",
                "台帳の {1} 台中 {0} 台が登録済み",
                list.len() - absent.len(),
                list.len()
            ));
            missing.extend(
                absent
                    .iter()
                    .map(|h| tr!(lang, "{}: in the inventory, not enrolled", "{}: 台帳にあるが未登録", h)),
            );
            let listed: HashSet<String> = list.iter().map(|h| h.to_lowercase()).collect();
            missing.extend(f.endpoints.iter().filter(|e| !listed.contains(&e.hostname.to_lowercase())).map(
                |e| tr!(lang, "{}: enrolled, not in the inventory", "{}: 登録済みだが台帳にない", e.hostname),
            ));
        }
    }
    items.push(item("devices", evidence, missing, true));

    // Malware scans.
    let stale: Vec<String> = f
        .endpoints
        .iter()
        .filter(|e| e.last_scan_ms.is_none_or(|t| now - t > SCAN_DAYS * DAY_MS))
        .map(|e| match e.last_scan_ms {
            Some(t) => tr!(
                lang,
                "{}: last full scan {} days ago",
                "{}: 最後のフルスキャンは {} 日前",
                e.hostname,
                days(now - t)
            ),
            None => tr!(lang, "{}: no scan reported", "{}: スキャンの報告なし", e.hostname),
        })
        .collect();
    let scanned = f.endpoints.len() - stale.len();
    let evidence = if scanned == 0 {
        Vec::new()
    } else {
        vec![tr!(
            lang,
            "{} of {} endpoints scanned within {} days",
            "{1} 台中 {0} 台が {2} 日以内にスキャン済み",
            scanned,
            f.endpoints.len(),
            SCAN_DAYS
        )]
    };
    let mut missing = stale;
    if f.endpoints.is_empty() {
        missing.push(tr!(lang, "no endpoints enrolled", "登録済みの端末がありません"));
    }
    items.push(item("malware_scans", evidence, missing, false));

    // Backups on storage the protected hosts cannot change.
    let mut evidence = Vec::new();
    let mut missing = Vec::new();
    match &f.backup_vault {
        Some(vault) => evidence.push(tr!(
            lang,
            "backups go to the mamori vault {}: add-only, the hosts cannot delete, overwrite or age them out",
            "バックアップは mamori 保管庫 {} へ(追記のみ: 端末からは削除・上書き・期限切れにできません)",
            vault
        )),
        None => missing.push(tr!(
            lang,
            "no backup to a vault is configured in the policy",
            "ポリシーに保管庫へのバックアップが設定されていません"
        )),
    }
    for e in &f.endpoints {
        match e.last_backup_ms {
            Some(t) if now - t <= BACKUP_DAYS * DAY_MS => {}
            Some(t) => missing.push(tr!(
                lang,
                "{}: last backup {} days ago",
                "{}: 最後のバックアップは {} 日前",
                e.hostname,
                days(now - t)
            )),
            None => {
                missing.push(tr!(lang, "{}: no backup reported", "{}: バックアップの報告なし", e.hostname))
            }
        }
    }
    let backed_up = f
        .endpoints
        .iter()
        .filter(|e| e.last_backup_ms.is_some_and(|t| now - t <= BACKUP_DAYS * DAY_MS))
        .count();
    if !f.endpoints.is_empty() {
        evidence.push(tr!(
            lang,
            "{} of {} endpoints backed up within {} days",
            "{1} 台中 {0} 台が {2} 日以内にバックアップ済み",
            backed_up,
            f.endpoints.len(),
            BACKUP_DAYS
        ));
    }
    items.push(item("backups_isolated", evidence, missing, true));

    // A restore tested recently.
    let recent: Vec<&RestoreTest> =
        f.restore_tests.iter().filter(|t| now - t.time_ms <= RESTORE_TEST_DAYS * DAY_MS).collect();
    let evidence: Vec<String> = recent
        .iter()
        .map(|t| {
            tr!(
                lang,
                "{}: restore of {} tested on {} by {} ({})",
                "{}: {} の復元を {} で {} が確認 ({})",
                rfc3339(t.time_ms),
                t.snapshot,
                t.host,
                t.by,
                t.note
            )
        })
        .collect();
    let missing = if recent.is_empty() {
        vec![tr!(
            lang,
            "no restore test recorded within {} days",
            "{} 日以内の復元テストの記録がありません",
            RESTORE_TEST_DAYS
        )]
    } else {
        Vec::new()
    };
    items.push(item("restore_tested", evidence, missing, false));

    // Isolation and response ready.
    let mut evidence = Vec::new();
    let mut missing = Vec::new();
    if f.isolating_kinds.is_empty() {
        missing.push(tr!(lang, "no response rule isolates a host", "端末を隔離する対応ルールがありません"));
    } else {
        evidence.push(tr!(
            lang,
            "hosts are isolated automatically on: {}",
            "次の検知で端末を自動隔離: {}",
            f.isolating_kinds.join(", ")
        ));
    }
    if f.response_dry_run {
        missing.push(tr!(
            lang,
            "the response policy is in dry-run mode: nothing is carried out",
            "対応ポリシーが試行モードです(実際には何も実行されません)"
        ));
    }
    evidence.push(tr!(
        lang,
        "{} allow-list entries stay reachable while isolated",
        "隔離中も通信できる許可リスト {} 件",
        f.isolation_allow
    ));
    items.push(item("response_ready", evidence, missing, true));

    // Someone is told.
    let (evidence, missing) = if f.alert_routes_for_critical > 0 {
        (
            vec![tr!(
                lang,
                "{} alert routes deliver critical detections",
                "重大な検知を通知する経路 {} 件",
                f.alert_routes_for_critical
            )],
            Vec::new(),
        )
    } else {
        (
            Vec::new(),
            vec![tr!(
                lang,
                "no alert route delivers critical detections (mail, chat or SIEM)",
                "重大な検知の通知先(メール・チャット・SIEM)が設定されていません"
            )],
        )
    };
    items.push(item("alerting", evidence, missing, false));

    // Logs of the network devices and servers collected.
    let (evidence, missing) = if f.log_events_7d > 0 {
        (
            vec![tr!(
                lang,
                "{} log events received in the last 7 days",
                "直近 7 日間に受信したログ {} 件",
                f.log_events_7d
            )],
            Vec::new(),
        )
    } else {
        (
            Vec::new(),
            vec![tr!(
                lang,
                "no logs received from firewalls or servers in the last 7 days",
                "直近 7 日間、ファイアウォールやサーバーからのログを受信していません"
            )],
        )
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
    let session = authenticate(&shared, &method, &headers, Permission::View).await?;
    let facts = gather(&shared).await?;
    let lang = if session.lang == "en" { Lang::En } else { Lang::Ja };
    Ok(Json(json!({"items": evaluate(&facts, now_ms(), lang), "generated": rfc3339(now_ms())})))
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
        let items = evaluate(&good(), NOW, Lang::En);
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
        let items = evaluate(&f, NOW, Lang::En);
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
    fn the_sentences_are_in_the_readers_language() {
        let mut f = good();
        f.inventory = Some(vec!["ward-pc".into(), "reception-01".into()]);
        let ja = evaluate(&f, NOW, Lang::Ja);
        let en = evaluate(&f, NOW, Lang::En);
        assert_eq!(
            ja.iter().map(|i| &i.status).collect::<Vec<_>>(),
            en.iter().map(|i| &i.status).collect::<Vec<_>>()
        );
        let devices = ja.iter().find(|i| i.id == "devices").unwrap();
        assert_eq!(devices.missing, vec!["reception-01: 台帳にあるが未登録".to_string()]);
        assert!(
            devices.evidence.contains(&"台帳の 2 台中 1 台が登録済み".to_string()),
            "{:?}",
            devices.evidence
        );
        for item in &ja {
            for line in item.evidence.iter().chain(&item.missing) {
                assert!(line.chars().any(|c| ('\u{3040}'..='\u{9fff}').contains(&c)), "{line}");
            }
        }
    }

    #[test]
    fn no_inventory_and_no_review_are_gaps_not_passes() {
        let mut f = good();
        f.inventory = None;
        f.last_audit_review_ms = None;
        let items = evaluate(&f, NOW, Lang::En);
        assert_eq!(status(&items, "devices"), Status::Partial);
        assert_eq!(status(&items, "access_log"), Status::Partial);
    }
}
