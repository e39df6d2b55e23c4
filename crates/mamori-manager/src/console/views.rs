//! What the console shows and the actions on it: overview, agents (isolate, release), detections
//! and their triage, events, quarantine and backups. Reads go to the store on a blocking
//! thread; every action is written to the audit log after it succeeded.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::Json;
use mamori_auth::Permission;
use mamori_proto::{self as proto, kind};
use mamori_store::{DetectionRow, EventFilter, SuppressionRow, TriageRow};
use serde::Deserialize;
use serde_json::{json, Value};

use super::audit::{self, Actor};
use super::session::authenticate;
use crate::api::{ApiFailure, JsonBody};
use crate::state::Shared;
use crate::timefmt::{now_ms, parse, rfc3339};

type JsonResult = Result<Json<Value>, ApiFailure>;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The ids of the default pack's vault rules (`mamori_vault_suspicious_snapshot`,
/// `mamori_vault_refused_request`): detections are stored under the rule's id.
pub(crate) const VAULT_RULE_IDS: [&str; 2] =
    ["6e1f9ede-cc5f-4831-837b-cfd98292e840", "fb31029a-1b51-4e97-a92d-1c308e6fd9fd"];

/// Sigma levels, most severe first (the console's severities).
pub(crate) const LEVELS: [&str; 5] = ["critical", "high", "medium", "low", "informational"];

fn level_name(level: &str) -> &'static str {
    let lower = level.to_ascii_lowercase();
    LEVELS.iter().find(|l| **l == lower).copied().unwrap_or("informational")
}

pub(crate) async fn agent_summaries(shared: &Arc<Shared>) -> Result<Vec<proto::AgentSummary>, ApiFailure> {
    let (rows, pending) = shared.with_store(|s| Ok((s.list_agents()?, s.pending_command_counts()?))).await?;
    Ok(rows
        .into_iter()
        .map(|a| {
            let n = pending.get(&a.id).copied().unwrap_or(0);
            crate::api::summary(shared, a, n)
        })
        .collect())
}

/// The latest backup event of each agent and its count of suspicious snapshots in 30 days.
pub(crate) struct BackupState {
    pub last: HashMap<String, (i64, String, Value)>,
    pub suspicious: HashMap<String, u64>,
    pub events: Vec<mamori_store::EventRow>,
}

pub(crate) async fn backup_state(shared: &Arc<Shared>, since_ms: i64) -> Result<BackupState, ApiFailure> {
    let filter = EventFilter {
        since_ms: Some(since_ms),
        kinds: vec![kind::BACKUP_COMPLETED.to_string(), kind::BACKUP_FAILED.to_string()],
        limit: mamori_store::MAX_QUERY_LIMIT,
        newest_first: true,
        ..EventFilter::default()
    };
    let events = shared.with_store(move |s| Ok(s.query_events(&filter)?)).await?;
    let mut last = HashMap::new();
    let mut suspicious: HashMap<String, u64> = HashMap::new();
    for e in &events {
        let data: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
        if data.pointer("/mamori/backup/suspicious").and_then(Value::as_bool) == Some(true) {
            *suspicious.entry(e.agent_id.clone()).or_default() += 1;
        }
        let status = if e.kind == kind::BACKUP_COMPLETED { "completed" } else { "failed" };
        last.entry(e.agent_id.clone()).or_insert((e.time_ms, status.to_string(), data));
    }
    Ok(BackupState { last, suspicious, events })
}

pub(crate) async fn overview(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
) -> JsonResult {
    authenticate(&shared, &method, &headers, Permission::View).await?;
    let agents = agent_summaries(&shared).await?;
    let active: Vec<&proto::AgentSummary> =
        agents.iter().filter(|a| a.status == "online" || a.status == "offline").collect();
    let counts = shared.with_store(|s| Ok(s.open_detection_counts(0)?)).await?;
    let mut open = serde_json::Map::new();
    for level in LEVELS {
        open.insert(level.to_string(), json!(0));
    }
    for (level, n) in counts {
        let key = level_name(&level);
        let before = open.get(key).and_then(Value::as_u64).unwrap_or(0);
        open.insert(key.to_string(), json!(before + n));
    }
    let backups = backup_state(&shared, now_ms() - 30 * DAY_MS).await?;
    let backup_rows: Vec<Value> = active
        .iter()
        .map(|a| {
            let last = backups.last.get(&a.id);
            json!({
                "host": a.hostname,
                "agent_id": a.id,
                "last_backup": last.map(|l| rfc3339(l.0)),
                "last_status": last.map(|l| l.1.clone()),
                "suspicious": backups.suspicious.get(&a.id).copied().unwrap_or(0),
            })
        })
        .collect();
    Ok(Json(json!({
        "agents": {
            "online": active.iter().filter(|a| a.status == "online").count(),
            "offline": active.iter().filter(|a| a.status == "offline").count(),
            "isolated": active.iter().filter(|a| a.isolated).count(),
            "total": active.len(),
        },
        "detections_open": open,
        "backups": backup_rows,
        "generated": rfc3339(now_ms()),
    })))
}

pub(crate) async fn agents(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
) -> JsonResult {
    authenticate(&shared, &method, &headers, Permission::View).await?;
    Ok(Json(json!({"agents": agent_summaries(&shared).await?})))
}

pub(crate) async fn agent(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> JsonResult {
    authenticate(&shared, &method, &headers, Permission::View).await?;
    let wanted = id.clone();
    let found = shared
        .with_store(move |s| {
            let Some(row) = s.get_agent(&wanted)? else { return Ok(None) };
            let pending = s.pending_commands(&wanted)?.len() as u64;
            let commands = s.list_commands(&wanted, 50)?;
            let events = s.query_events(&EventFilter {
                agent_id: Some(wanted.clone()),
                limit: 50,
                newest_first: true,
                ..EventFilter::default()
            })?;
            Ok(Some((row, pending, commands, events)))
        })
        .await?;
    let Some((row, pending, commands, events)) = found else {
        return Err(crate::api::unknown_agent(&id));
    };
    let commands =
        commands.into_iter().map(crate::api::command_record).collect::<Result<Vec<_>, ApiFailure>>()?;
    let events: Vec<Value> = events
        .into_iter()
        .map(|e| {
            json!({"id": e.id, "kind": e.kind, "time": rfc3339(e.time_ms),
                   "data": serde_json::from_str::<Value>(&e.data).unwrap_or(Value::Null)})
        })
        .collect();
    Ok(Json(json!({
        "agent": crate::api::summary(&shared, row, pending),
        "commands": commands,
        "recent_events": events,
    })))
}

#[derive(Deserialize, Default)]
pub(crate) struct ReasonBody {
    #[serde(default)]
    reason: String,
}

pub(crate) async fn agent_action(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Result<JsonBody<ReasonBody>, ApiFailure>,
) -> JsonResult {
    let session = authenticate(&shared, &method, &headers, Permission::Respond).await?;
    let JsonBody(req) = body.map_err(ApiFailure::body_is_bad_request)?;
    let command = match action.as_str() {
        "isolate" => proto::CommandAction::Isolate,
        "release" => proto::CommandAction::Release,
        "scan" => proto::CommandAction::Scan,
        _ => {
            return Err(ApiFailure::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "actions: isolate, release, scan",
            ))
        }
    };
    command_for(&shared, &session, &id, command, "", &req.reason).await
}

/// Queues a command from the console, writes it to the audit log and tells open pages.
async fn command_for(
    shared: &Arc<Shared>,
    session: &super::session::Session,
    agent_id: &str,
    command: proto::CommandAction,
    target: &str,
    reason: &str,
) -> JsonResult {
    let full_reason = format!("{} (console: {})", reason.trim(), session.username);
    let record =
        crate::api::queue_for_agent(shared, agent_id, command, target, full_reason.trim_start()).await?;
    let mut detail = json!({"reason": reason, "target": target, "command": record.id});
    if command == proto::CommandAction::BackupRestore {
        detail["snapshot"] = json!(target);
    }
    audit::record(
        shared,
        Actor::User(&session.username),
        &format!("agent.{}", command.as_str()),
        agent_id,
        detail,
    )
    .await;
    shared.console.notify(super::stream::Topic::Commands);
    Ok(Json(json!({"command": record})))
}

/// Restore or delete a quarantined file on the agent that holds it.
pub(crate) async fn quarantine_action(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    Path((id, qid, action)): Path<(String, String, String)>,
    body: Result<JsonBody<ReasonBody>, ApiFailure>,
) -> JsonResult {
    let session = authenticate(&shared, &method, &headers, Permission::Respond).await?;
    let JsonBody(req) = body.map_err(ApiFailure::body_is_bad_request)?;
    let command = match action.as_str() {
        "restore" => proto::CommandAction::QuarantineRestore,
        "delete" => proto::CommandAction::QuarantineDelete,
        _ => return Err(ApiFailure::new(StatusCode::NOT_FOUND, "not_found", "actions: restore, delete")),
    };
    command_for(&shared, &session, &id, command, &qid, &req.reason).await
}

/// Restore a backup snapshot on the agent it belongs to, into a new directory there (the
/// policy's `backup.restore_dir`); the snapshot must be named in full.
pub(crate) async fn backup_restore(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    Path((id, snapshot)): Path<(String, String)>,
    body: Result<JsonBody<ReasonBody>, ApiFailure>,
) -> JsonResult {
    let session = authenticate(&shared, &method, &headers, Permission::Respond).await?;
    let JsonBody(req) = body.map_err(ApiFailure::body_is_bad_request)?;
    // Also checked by `queue_for_agent`; said here first in the console's terms.
    if !proto::is_snapshot_name(&snapshot) {
        return Err(ApiFailure::bad_request(format!(
            "not a snapshot name: give the full name ({} lowercase hexadecimal characters)",
            proto::SNAPSHOT_NAME_LEN
        )));
    }
    command_for(&shared, &session, &id, proto::CommandAction::BackupRestore, &snapshot, &req.reason).await
}

fn detection_json(row: DetectionRow, triage: Option<&TriageRow>) -> Value {
    json!({
        "id": row.id,
        "kind": row.kind,
        "rule_id": row.rule_id,
        "title": row.title,
        "severity": level_name(&row.level),
        "host": row.host,
        "source": row.source,
        "time": rfc3339(row.time_ms),
        "status": triage.map_or("open", |t| t.status.as_str()),
        "note": triage.map(|t| t.note.clone()),
        "updated_by": triage.map(|t| t.updated_by.clone()),
        "updated": triage.map(|t| rfc3339(t.updated_ms)),
        "data": serde_json::from_str::<Value>(&row.data).unwrap_or(Value::Null),
    })
}

#[derive(Deserialize, Default)]
pub(crate) struct DetectionQuery {
    status: Option<String>,
    severity: Option<String>,
    limit: Option<u32>,
}

pub(crate) async fn detections(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    Query(query): Query<DetectionQuery>,
) -> JsonResult {
    authenticate(&shared, &method, &headers, Permission::View).await?;
    let status = query.status.unwrap_or_else(|| "open".to_string());
    let limit = query.limit.unwrap_or(200).clamp(1, 1000);
    let severity = query.severity.filter(|s| !s.is_empty());
    if let Some(s) = &severity {
        if !LEVELS.contains(&s.as_str()) {
            return Err(ApiFailure::bad_request(format!("severity must be one of {}", LEVELS.join(", "))));
        }
    }
    let rows = shared
        .with_store(move |s| {
            // The severity filter is applied after the status query, so ask for more rows then.
            let ids =
                s.detection_ids_by_status(&status, if severity.is_some() { limit * 5 } else { limit })?;
            let mut rows = s.get_detections_by_id(&ids)?;
            if let Some(sev) = &severity {
                rows.retain(|r| level_name(&r.level) == sev);
            }
            rows.truncate(limit as usize);
            let triage = s.triage_of(&rows.iter().map(|r| r.id).collect::<Vec<_>>())?;
            Ok((rows, triage))
        })
        .await
        .map_err(|e| match e.downcast_ref::<mamori_store::Error>() {
            Some(mamori_store::Error::Invalid(m)) => ApiFailure::bad_request(*m),
            _ => ApiFailure::from(e),
        })?;
    let (rows, triage) = rows;
    let by_id: HashMap<i64, &TriageRow> = triage.iter().map(|t| (t.detection_id, t)).collect();
    let list: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let t = by_id.get(&r.id).copied();
            detection_json(r, t)
        })
        .collect();
    Ok(Json(json!({"detections": list})))
}

#[derive(Deserialize, Default)]
pub(crate) struct NoteBody {
    #[serde(default)]
    note: String,
}

pub(crate) async fn triage(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    Path((id, action)): Path<(i64, String)>,
    body: Result<JsonBody<NoteBody>, ApiFailure>,
) -> JsonResult {
    let session = authenticate(&shared, &method, &headers, Permission::Triage).await?;
    let JsonBody(req) = body.map_err(ApiFailure::body_is_bad_request)?;
    let status = match action.as_str() {
        "acknowledge" => "acknowledged",
        "close" => "closed",
        "false-positive" => "false_positive",
        _ => {
            return Err(ApiFailure::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "actions: acknowledge, close, false-positive",
            ))
        }
    };
    let note = req.note.trim().to_string();
    if status != "acknowledged" && note.is_empty() {
        return Err(ApiFailure::bad_request(
            "a note is required to close a detection or mark it as a false positive",
        ));
    }
    if note.len() > 4000 {
        return Err(ApiFailure::bad_request("the note is longer than 4000 bytes"));
    }
    let row = TriageRow {
        detection_id: id,
        status: status.to_string(),
        note: note.clone(),
        updated_by: session.username.clone(),
        updated_ms: now_ms(),
    };
    let user = session.username.clone();
    let result = shared
        .with_store(move |s| {
            let Some(detection) = s.get_detections_by_id(&[id])?.pop() else { return Ok(None) };
            s.set_triage(&row)?;
            let suppression = if row.status == "false_positive" {
                let sup = SuppressionRow {
                    id: 0,
                    rule_id: detection.rule_id.clone(),
                    host: detection.host.clone(),
                    note: row.note.clone(),
                    created_by: user,
                    created_ms: row.updated_ms,
                    detection_id: Some(id),
                };
                Some(s.add_suppression(&sup)?)
            } else {
                None
            };
            Ok(Some((detection, row, suppression)))
        })
        .await?;
    let Some((detection, row, suppression)) = result else {
        return Err(ApiFailure::new(StatusCode::NOT_FOUND, "not_found", format!("no detection {id}")));
    };
    audit::record(
        &shared,
        Actor::User(&session.username),
        &format!("detection.{status}"),
        &id.to_string(),
        json!({"note": note, "rule_id": detection.rule_id, "host": detection.host, "suppression": suppression}),
    )
    .await;
    shared.console.notify(super::stream::Topic::Detections);
    Ok(Json(detection_json(detection, Some(&row))))
}

pub(crate) async fn suppressions(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
) -> JsonResult {
    authenticate(&shared, &method, &headers, Permission::View).await?;
    let rows = shared.with_store(|s| Ok(s.list_suppressions()?)).await?;
    let list: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            json!({"id": r.id, "rule_id": r.rule_id, "host": r.host, "note": r.note,
                   "created_by": r.created_by, "created": rfc3339(r.created_ms), "detection_id": r.detection_id})
        })
        .collect();
    Ok(Json(json!({"suppressions": list})))
}

pub(crate) async fn delete_suppression(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> JsonResult {
    let session = authenticate(&shared, &method, &headers, Permission::Triage).await?;
    if !shared.with_store(move |s| Ok(s.delete_suppression(id)?)).await? {
        return Err(ApiFailure::new(StatusCode::NOT_FOUND, "not_found", format!("no suppression {id}")));
    }
    audit::record(&shared, Actor::User(&session.username), "suppression.delete", &id.to_string(), json!({}))
        .await;
    Ok(Json(json!({})))
}

#[derive(Deserialize, Default)]
pub(crate) struct EventQuery {
    q: Option<String>,
    kind: Option<String>,
    agent: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<u32>,
}

fn time_arg(text: &Option<String>) -> Result<Option<i64>, ApiFailure> {
    text.as_deref().filter(|t| !t.is_empty()).map(parse).transpose().map_err(ApiFailure::bad_request)
}

pub(crate) async fn events(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    Query(query): Query<EventQuery>,
) -> JsonResult {
    authenticate(&shared, &method, &headers, Permission::View).await?;
    let filter = EventFilter {
        since_ms: time_arg(&query.since)?,
        until_ms: time_arg(&query.until)?,
        agent_id: query.agent.filter(|a| !a.is_empty()),
        kinds: query
            .kind
            .map(|k| k.split(',').map(str::trim).filter(|k| !k.is_empty()).map(String::from).collect())
            .unwrap_or_default(),
        text: query.q.filter(|q| !q.is_empty()),
        after_id: None,
        limit: query.limit.unwrap_or(200).clamp(1, 1000),
        newest_first: true,
    };
    let (rows, agents) = shared.with_store(move |s| Ok((s.query_events(&filter)?, s.list_agents()?))).await?;
    let names: HashMap<String, String> = agents.into_iter().map(|a| (a.id, a.hostname)).collect();
    let list: Vec<Value> = rows
        .into_iter()
        .map(|e| {
            json!({"id": e.id, "agent_id": e.agent_id, "hostname": names.get(&e.agent_id), "kind": e.kind,
                   "time": rfc3339(e.time_ms), "data": serde_json::from_str::<Value>(&e.data).unwrap_or(Value::Null)})
        })
        .collect();
    Ok(Json(json!({"events": list})))
}

pub(crate) async fn logs(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    Query(query): Query<EventQuery>,
) -> JsonResult {
    authenticate(&shared, &method, &headers, Permission::View).await?;
    let filter = mamori_store::LogFilter {
        since_ms: time_arg(&query.since)?,
        until_ms: time_arg(&query.until)?,
        source: None,
        text: query.q.filter(|q| !q.is_empty()),
        after_id: None,
        limit: query.limit.unwrap_or(200).clamp(1, 1000),
        newest_first: true,
    };
    let rows = shared.with_store(move |s| Ok(s.query_log_events(&filter)?)).await?;
    let list: Vec<Value> = rows
        .into_iter()
        .map(|row| {
            let event = crate::syslog::reparse(&row.line, &row.source, row.time_ms, row.received_ms);
            json!({"id": row.id, "source": row.source, "time": rfc3339(row.time_ms), "data": event})
        })
        .collect();
    Ok(Json(json!({"events": list})))
}

/// Files the agents quarantined (from their `response.action` events).
pub(crate) async fn quarantine(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
) -> JsonResult {
    authenticate(&shared, &method, &headers, Permission::View).await?;
    let filter = EventFilter {
        kinds: vec![kind::RESPONSE_ACTION.to_string()],
        text: Some("quarantine_id".to_string()),
        limit: 1000,
        newest_first: true,
        ..EventFilter::default()
    };
    let (rows, agents) = shared.with_store(move |s| Ok((s.query_events(&filter)?, s.list_agents()?))).await?;
    let names: HashMap<String, String> = agents.into_iter().map(|a| (a.id, a.hostname)).collect();
    // Oldest first: the quarantine creates the item, a later restore or delete changes its
    // state. A command about an id this host never quarantined creates nothing.
    let mut order = Vec::new();
    let mut items: HashMap<(String, String), Value> = HashMap::new();
    for e in rows.into_iter().rev() {
        let data: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
        let Some(qid) = data.pointer("/mamori/response/quarantine_id").and_then(Value::as_str) else {
            continue;
        };
        if data.pointer("/mamori/response/dry_run").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let action = data.pointer("/mamori/response/action").and_then(Value::as_str).unwrap_or("");
        let ok = data.pointer("/event/outcome").and_then(Value::as_str) == Some("success");
        let key = (e.agent_id.clone(), qid.to_string());
        match (action, items.get_mut(&key)) {
            ("quarantine", None) => {
                order.push(key.clone());
                items.insert(
                    key,
                    json!({
                        "agent_id": e.agent_id,
                        "hostname": names.get(&e.agent_id),
                        "quarantine_id": qid,
                        "path": data.pointer("/file/path"),
                        "rule": data.pointer("/rule/name"),
                        "time": rfc3339(e.time_ms),
                        "state": if ok { "quarantined" } else { "failed" },
                    }),
                );
            }
            ("quarantine", Some(item)) if ok => item["state"] = json!("quarantined"),
            ("quarantine_restore", Some(item)) if ok => item["state"] = json!("restored"),
            ("quarantine_delete", Some(item)) if ok => item["state"] = json!("deleted"),
            _ => {}
        }
    }
    let items: Vec<Value> = order.iter().rev().filter_map(|k| items.remove(k)).collect();
    Ok(Json(json!({"items": items})))
}

pub(crate) async fn backups(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
) -> JsonResult {
    authenticate(&shared, &method, &headers, Permission::View).await?;
    let state = backup_state(&shared, now_ms() - 90 * DAY_MS).await?;
    let agents = agent_summaries(&shared).await?;
    let mut hosts = Vec::new();
    for a in agents.iter().filter(|a| a.status == "online" || a.status == "offline") {
        let snapshots: Vec<Value> = state
            .events
            .iter()
            .filter(|e| e.agent_id == a.id && e.kind == kind::BACKUP_COMPLETED)
            .take(30)
            .map(|e| {
                let d: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
                json!({
                    "snapshot": d.pointer("/mamori/backup/snapshot/name"),
                    "time": rfc3339(e.time_ms),
                    "files": d.pointer("/mamori/backup/files"),
                    "bytes_added": d.pointer("/mamori/backup/bytes_uploaded"),
                    "suspicious": d.pointer("/mamori/backup/suspicious"),
                    "reasons": d.pointer("/mamori/backup/snapshot/reasons"),
                })
            })
            .collect();
        let last = state.last.get(&a.id);
        hosts.push(json!({
            "agent_id": a.id,
            "hostname": a.hostname,
            "last_backup": last.map(|l| rfc3339(l.0)),
            "last_status": last.map(|l| l.1.clone()),
            "last_error": last.and_then(|l| l.2.pointer("/error/message").cloned()),
            "snapshots": snapshots,
        }));
    }
    let vault_alerts = shared
        .with_store(|s| {
            let mut rows = Vec::new();
            for rule in VAULT_RULE_IDS {
                rows.extend(s.query_detections(&mamori_store::DetectionFilter {
                    rule_id: Some(rule.to_string()),
                    limit: 100,
                    newest_first: true,
                    ..Default::default()
                })?);
            }
            rows.sort_by_key(|r| std::cmp::Reverse(r.id));
            let triage = s.triage_of(&rows.iter().map(|r| r.id).collect::<Vec<_>>())?;
            Ok((rows, triage))
        })
        .await?;
    let (rows, triage) = vault_alerts;
    let by_id: HashMap<i64, &TriageRow> = triage.iter().map(|t| (t.detection_id, t)).collect();
    let alerts: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let t = by_id.get(&r.id).copied();
            detection_json(r, t)
        })
        .collect();
    Ok(Json(json!({"hosts": hosts, "vault_alerts": alerts})))
}
