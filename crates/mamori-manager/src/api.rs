//! HTTP routes: enrollment, the agent API (client certificate), the admin API (admin token).

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mamori_proto::{self as proto, path};
use mamori_store::{CommandRow, EnrollError, EventFilter, HeartbeatRow, NewAgent, TokenRefusal};
use serde::Deserialize;

use crate::conn::Peer;
use crate::state::Shared;
use crate::timefmt::{now_ms, parse, rfc3339, system_time_ms};

/// Largest request body: a batch of 10,000 events at ~1 KiB each fits with room to spare.
const BODY_LIMIT: usize = 16 << 20;
const MAX_BATCH_EVENTS: usize = 10_000;
const MAX_TOKEN_TTL_SECS: u64 = 366 * 24 * 3600;
const MAX_TOKEN_USES: u32 = 100_000;
/// A reason is a line or two for the audit trail, not a document.
const MAX_COMMAND_REASON: usize = 1000;
/// An agent's result message is cut here rather than refused: a refusal would make the agent
/// send the same result again at every heartbeat, forever.
const MAX_COMMAND_MESSAGE: usize = 4096;
/// Command ids are 32 hex digits; anything much longer is not worth a query.
const MAX_COMMAND_ID: usize = 64;
/// Agents do not heartbeat more often than this (a thousand agents at 1 s would be pure overhead).
const MIN_HEARTBEAT_SECS: u64 = 5;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(path::HEALTH, get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route(path::OPENAPI, get(|| async { Json(crate::openapi::document()) }))
        .route(path::ENROLL, post(enroll))
        .route(path::RENEW, post(renew))
        .route(path::HEARTBEAT, post(heartbeat))
        .route(path::EVENTS, post(events))
        .route(path::POLICY, get(agent_policy))
        .route(path::COMMAND_RESULT, post(command_result))
        .route(path::ADMIN_AGENTS, get(list_agents))
        .route("/v1/admin/agents/{id}", get(get_agent))
        .route("/v1/admin/agents/{id}/revoke", post(revoke))
        .route(path::ADMIN_AGENT_COMMANDS, post(queue_command).get(list_commands))
        .route(path::ADMIN_EVENTS, get(query_events))
        .route(path::ADMIN_DETECTIONS, get(query_detections))
        .route(path::ADMIN_TOKENS, post(create_token).get(list_tokens))
        .route(path::ADMIN_POLICY, get(admin_policy).put(put_policy))
        .route(path::ADMIN_LOG_STATUS, get(log_status))
        .route(path::ADMIN_LOG_EVENTS, get(query_log_events))
        .route(path::ADMIN_LOG_DETECTIONS, get(query_log_detections))
        .fallback(|| async { ApiFailure::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

/// An error answer: status plus an [`proto::ApiError`] body.
#[derive(Debug)]
pub(crate) struct ApiFailure {
    status: StatusCode,
    error: &'static str,
    message: String,
}

impl ApiFailure {
    pub(crate) fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> ApiFailure {
        ApiFailure { status, error, message: message.into() }
    }
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiFailure {
        ApiFailure::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    /// A body that is JSON but not the expected shape is a bad request like any other (axum
    /// says 422); used by the routes whose contract says 400.
    pub(crate) fn body_is_bad_request(mut self) -> ApiFailure {
        if self.status == StatusCode::UNPROCESSABLE_ENTITY {
            self.status = StatusCode::BAD_REQUEST;
        }
        self
    }
    pub(crate) fn internal(e: impl std::fmt::Display) -> ApiFailure {
        tracing::error!("internal error: {e}");
        ApiFailure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the manager log")
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let body = proto::ApiError { error: self.error.to_string(), message: self.message };
        (self.status, Json(body)).into_response()
    }
}

impl From<anyhow::Error> for ApiFailure {
    fn from(e: anyhow::Error) -> Self {
        ApiFailure::internal(format!("{e:#}"))
    }
}

pub(crate) type ApiResult<T> = Result<Json<T>, ApiFailure>;

/// Body parsing with our error format instead of axum's plain-text rejection.
pub(crate) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for JsonBody<T> {
    type Rejection = ApiFailure;
    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiFailure> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(e) => Err(ApiFailure::new(e.status(), "bad_request", e.body_text())),
        }
    }
}

fn agent_identity(shared: &Shared, peer: &Peer) -> Result<String, ApiFailure> {
    let id = peer.device_id.clone().ok_or_else(|| {
        ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "client_certificate_required",
            "this route requires the agent's client certificate",
        )
    })?;
    if !shared.is_active(&id) {
        return Err(ApiFailure::new(
            StatusCode::FORBIDDEN,
            "agent_not_active",
            format!("agent {id} is revoked, replaced or unknown to this manager"),
        ));
    }
    Ok(id)
}

fn require_admin(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiFailure> {
    let presented = headers
        .get(proto::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if mamori_pki::token_matches(token, &shared.admin_token_hash) => Ok(()),
        Some(_) => {
            Err(ApiFailure::new(StatusCode::UNAUTHORIZED, "bad_admin_token", "the admin token is not valid"))
        }
        None => Err(ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "admin_token_required",
            "send the admin token as `Authorization: Bearer <token>`",
        )),
    }
}

async fn enroll(
    State(shared): State<Arc<Shared>>,
    JsonBody(req): JsonBody<proto::EnrollRequest>,
) -> ApiResult<proto::EnrollResponse> {
    if req.hostname.is_empty()
        || req.hostname.len() > 255
        || req.machine_id.len() > 128
        || req.agent_version.len() > 64
    {
        return Err(ApiFailure::bad_request("hostname, machine_id or agent_version is empty or too long"));
    }
    let device_id = mamori_pki::new_device_id();
    let issued = shared
        .ca
        .sign_csr(&req.csr_pem, &device_id, shared.client_cert_validity)
        .map_err(|e| ApiFailure::new(StatusCode::BAD_REQUEST, "bad_csr", e.to_string()))?;
    let new = NewAgent {
        id: device_id.clone(),
        hostname: req.hostname,
        machine_id: req.machine_id,
        previous_device_id: req.previous_device_id,
        agent_version: req.agent_version,
        cert_serial: issued.info.serial_hex.clone(),
        cert_not_after_ms: system_time_ms(issued.info.not_after),
    };
    let token = req.token;
    let now = now_ms();
    let outcome = shared.with_store(move |store| Ok(store.enroll(&token, &new, now))).await?;
    let replaced = match outcome {
        Ok(replaced) => replaced,
        Err(EnrollError::Refused(refusal)) => {
            // The certificate signed above is dropped unseen.
            tracing::warn!("enrollment refused: {refusal}");
            let code = match refusal {
                TokenRefusal::Unknown => "token_unknown",
                TokenRefusal::Expired => "token_expired",
                TokenRefusal::UsedUp => "token_used_up",
            };
            return Err(ApiFailure::new(StatusCode::FORBIDDEN, code, refusal.to_string()));
        }
        Err(EnrollError::Store(e)) => return Err(ApiFailure::internal(e)),
    };
    if let Ok(mut active) = shared.active.write() {
        active.insert(device_id.clone());
    }
    shared.distrust(&replaced);
    tracing::info!("enrolled agent {device_id}; replaced {replaced:?}");
    Ok(Json(proto::EnrollResponse {
        device_id,
        cert_pem: issued.cert_pem,
        ca_pem: shared.ca.cert_pem().to_string(),
        replaced,
    }))
}

async fn renew(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    JsonBody(req): JsonBody<proto::RenewRequest>,
) -> ApiResult<proto::RenewResponse> {
    let id = agent_identity(&shared, &peer)?;
    let current =
        peer.cert.as_ref().ok_or_else(|| ApiFailure::internal("verified peer without certificate"))?;
    let issued = shared
        .ca
        .sign_csr(&req.csr_pem, &id, shared.client_cert_validity)
        .map_err(|e| ApiFailure::new(StatusCode::BAD_REQUEST, "bad_csr", e.to_string()))?;
    // The device id is bound to the key: a renewal for another key would let a stolen
    // certificate outlive the key it was issued for.
    if issued.info.public_key_fingerprint != current.public_key_fingerprint {
        return Err(ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "key_mismatch",
            "the renewal request is for a different key than the certificate presented; re-enroll to change keys",
        ));
    }
    let serial = issued.info.serial_hex.clone();
    let not_after = system_time_ms(issued.info.not_after);
    let agent = id.clone();
    let recorded =
        shared.with_store(move |s| Ok(s.record_renewal(&agent, &serial, not_after, now_ms()))).await?;
    match recorded {
        Ok(()) => {}
        // Revoked while this request was in flight: the new certificate is never handed out.
        Err(mamori_store::Error::AgentNotActive { .. }) => {
            return Err(ApiFailure::new(
                StatusCode::FORBIDDEN,
                "agent_not_active",
                format!("agent {id} is not active"),
            ))
        }
        Err(e) => return Err(ApiFailure::internal(e)),
    }
    shared.touch(&id, now_ms(), None);
    Ok(Json(proto::RenewResponse { cert_pem: issued.cert_pem }))
}

async fn heartbeat(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    JsonBody(hb): JsonBody<proto::Heartbeat>,
) -> ApiResult<proto::HeartbeatResponse> {
    let id = agent_identity(&shared, &peer)?;
    if hb.hostname.len() > 255 || hb.agent_version.len() > 64 {
        return Err(ApiFailure::bad_request("hostname or agent_version too long"));
    }
    let row = HeartbeatRow {
        agent_version: hb.agent_version,
        hostname: hb.hostname,
        policy_version: hb.policy_version,
        spool_pending: hb.spool_pending,
        spool_dropped_total: hb.spool_dropped_total,
        isolated: hb.isolated,
    };
    let now = now_ms();
    shared.touch_from(&id, now, Some(row), Some(peer.addr.ip()));
    let policy_version = shared.policy.read().map(|p| p.0).unwrap_or(0);
    let commands = shared.pending_commands(&id);
    Ok(Json(proto::HeartbeatResponse { server_time_ms: now, policy_version, commands }))
}

async fn events(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    JsonBody(batch): JsonBody<proto::EventBatch>,
) -> ApiResult<proto::BatchAck> {
    let id = agent_identity(&shared, &peer)?;
    if batch.events.len() > MAX_BATCH_EVENTS {
        return Err(ApiFailure::bad_request(format!("at most {MAX_BATCH_EVENTS} events per batch")));
    }
    for e in &batch.events {
        if e.kind.is_empty() || e.kind.len() > 255 || e.kind.chars().any(char::is_control) {
            return Err(ApiFailure::bad_request(format!(
                "event {}: kind must be 1-255 printable characters",
                e.seq
            )));
        }
        if e.seq > i64::MAX as u64 {
            return Err(ApiFailure::bad_request(format!("event sequence {} is out of range", e.seq)));
        }
    }
    shared.touch_from(&id, now_ms(), None, Some(peer.addr.ip()));
    if batch.events.is_empty() {
        return Ok(Json(proto::BatchAck { stored: 0, duplicates: 0 }));
    }
    // Evaluated before the events move to the writer, stored only once they are committed.
    let (hostname, ip) = shared.agent_seen(&id);
    let seen = crate::log_rules::AgentSeen { id: &id, hostname: hostname.as_deref(), ip };
    let detections = shared.log_rules.detect_agent_events(&seen, &batch.events);
    let (stored, duplicates) = shared.writer.write(id, batch.events).await.map_err(ApiFailure::internal)?;
    // A batch sent again after a lost acknowledgement was evaluated the first time.
    if !detections.is_empty() && stored > 0 {
        crate::respond::after_detections(&shared, &detections);
        let receipt =
            shared.writer.submit_logs(Vec::new(), detections).await.map_err(ApiFailure::internal)?;
        receipt
            .await
            .map_err(|_| ApiFailure::internal("the event writer has stopped"))?
            .map_err(ApiFailure::internal)?;
    }
    Ok(Json(proto::BatchAck { stored, duplicates }))
}

async fn agent_policy(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
) -> Result<Response, ApiFailure> {
    agent_identity(&shared, &peer)?;
    Ok(policy_response(&shared))
}

fn policy_response(shared: &Shared) -> Response {
    let json = shared.policy.read().map(|p| p.1.clone()).unwrap_or_else(|_| Arc::from("{}"));
    ([(axum::http::header::CONTENT_TYPE, "application/json")], json.to_string()).into_response()
}

async fn log_status(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Result<Response, ApiFailure> {
    require_admin(&shared, &headers)?;
    let addrs = shared.syslog_addrs.read().map(|a| a.clone()).unwrap_or_default();
    let body = serde_json::json!({
        "listen": addrs,
        "stats": shared.log_stats.report(addrs.udp),
        "rules": shared.log_rules.summary(),
    });
    Ok(Json(body).into_response())
}

/// Query of the log routes: a time range, then what each route filters on.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LogQuery {
    since: Option<String>,
    until: Option<String>,
    /// Log events: the sender (`udp 10.0.0.1`).
    source: Option<String>,
    /// Log events: case-insensitive text in the event.
    q: Option<String>,
    /// Detections: the rule's id (or name, or title where it has neither).
    rule: Option<String>,
    /// Detections: the host.
    host: Option<String>,
    /// Detections: comma-separated levels.
    level: Option<String>,
    after: Option<i64>,
    limit: Option<u32>,
    order: Option<String>,
}

impl LogQuery {
    fn range(&self) -> Result<(Option<i64>, Option<i64>, bool), ApiFailure> {
        let newest_first = match self.order.as_deref() {
            None | Some("desc") => true,
            Some("asc") => false,
            Some(other) => {
                return Err(ApiFailure::bad_request(format!("order must be asc or desc, not `{other}`")))
            }
        };
        let time = |t: &Option<String>| t.as_deref().map(parse).transpose().map_err(ApiFailure::bad_request);
        Ok((time(&self.since)?, time(&self.until)?, newest_first))
    }

    fn limit(&self) -> u32 {
        self.limit.unwrap_or(100).clamp(1, 10_000)
    }
}

pub(crate) fn raw_json(text: String) -> Result<Box<serde_json::value::RawValue>, ApiFailure> {
    serde_json::value::RawValue::from_string(text).map_err(ApiFailure::internal)
}

async fn query_log_events(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<LogQuery>,
) -> ApiResult<proto::LogEventPage> {
    require_admin(&shared, &headers)?;
    let (since_ms, until_ms, newest_first) = query.range()?;
    let filter = mamori_store::LogFilter {
        since_ms,
        until_ms,
        source: query.source.clone().filter(|s| !s.is_empty()),
        text: query.q.clone().filter(|q| !q.is_empty()),
        after_id: query.after,
        limit: query.limit(),
        newest_first,
    };
    let rows = shared.with_store(move |s| Ok(s.query_log_events(&filter)?)).await?;
    let events = rows
        .into_iter()
        .map(|row| {
            let event = crate::syslog::reparse(&row.line, &row.source, row.time_ms, row.received_ms);
            let data = serde_json::to_string(&event).map_err(ApiFailure::internal)?;
            Ok(proto::LogEventRecord {
                id: row.id,
                source: row.source,
                time: rfc3339(row.time_ms),
                received: rfc3339(row.received_ms),
                data: raw_json(data)?,
            })
        })
        .collect::<Result<_, ApiFailure>>()?;
    Ok(Json(proto::LogEventPage { events }))
}

async fn query_log_detections(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<LogQuery>,
) -> ApiResult<proto::LogDetectionPage> {
    require_admin(&shared, &headers)?;
    let (since_ms, until_ms, newest_first) = query.range()?;
    let filter = mamori_store::DetectionFilter {
        since_ms,
        until_ms,
        rule_id: query.rule.clone().filter(|r| !r.is_empty()),
        host: query.host.clone().filter(|h| !h.is_empty()),
        levels: query
            .level
            .as_deref()
            .map(|l| l.split(',').map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
            .unwrap_or_default(),
        after_id: query.after,
        limit: query.limit(),
        newest_first,
    };
    let rows = shared.with_store(move |s| Ok(s.query_detections(&filter)?)).await?;
    let detections = rows
        .into_iter()
        .map(|row| {
            Ok(proto::LogDetectionRecord {
                id: row.id,
                kind: row.kind,
                rule_id: row.rule_id,
                title: row.title,
                level: row.level,
                host: row.host,
                source: row.source,
                time: rfc3339(row.time_ms),
                created: rfc3339(row.created_ms),
                data: raw_json(row.data)?,
            })
        })
        .collect::<Result<_, ApiFailure>>()?;
    Ok(Json(proto::LogDetectionPage { detections }))
}

async fn admin_policy(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Result<Response, ApiFailure> {
    require_admin(&shared, &headers)?;
    Ok(policy_response(&shared))
}

async fn put_policy(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    JsonBody(mut policy): JsonBody<proto::Policy>,
) -> ApiResult<proto::Policy> {
    require_admin(&shared, &headers)?;
    if !(MIN_HEARTBEAT_SECS..=3600).contains(&policy.heartbeat_secs) {
        return Err(ApiFailure::bad_request(format!(
            "heartbeat_secs must be between {MIN_HEARTBEAT_SECS} and 3600"
        )));
    }
    if let Some(fim) = &policy.fim {
        if fim.paths.is_empty() || fim.paths.iter().any(|p| !p.starts_with('/')) {
            return Err(ApiFailure::bad_request("fim.paths must be a non-empty list of absolute paths"));
        }
        if !(fim.cpu_share > 0.0 && fim.cpu_share <= 1.0) {
            return Err(ApiFailure::bad_request("fim.cpu_share must be above 0 and at most 1"));
        }
        if fim.check_every_secs < 60 {
            return Err(ApiFailure::bad_request("fim.check_every_secs must be at least 60"));
        }
    }
    if let Some(logs) = &policy.logs {
        logs.check(|name| mamori_logs::Format::from_name(name).is_some()).map_err(ApiFailure::bad_request)?;
    }
    if let Some(backup) = &policy.backup {
        backup.check().map_err(ApiFailure::bad_request)?;
    }
    for a in &policy.response.isolation.allow {
        let spec = a.spec();
        let checked = spec.parse::<mamori_isolate::AllowEntry>().and_then(|e| {
            let e = if a.label.is_empty() { e } else { e.labelled(&a.label) };
            e.validate()
        });
        if let Err(e) = checked {
            return Err(ApiFailure::bad_request(format!("response.isolation.allow entry {spec:?}: {e}")));
        }
    }
    for rule in policy.response.rules.iter().filter(|r| r.detection == proto::DetectionKind::Sigma) {
        let allowed = [proto::ResponseActionKind::Alert, proto::ResponseActionKind::Isolate];
        if let Some(action) = rule.actions.iter().find(|a| !allowed.contains(a)) {
            return Err(ApiFailure::bad_request(format!(
                "response rule for `sigma` detections cannot `{}`: a log detection names a host, not a file \
                 or a process (use `isolate` or `alert`)",
                action.as_str()
            )));
        }
    }
    if policy.response.isolation.clean_scan_paths.iter().any(|p| !p.starts_with('/')) {
        return Err(ApiFailure::bad_request("response.isolation.clean_scan_paths must be absolute paths"));
    }
    if let Some(r) = policy.fim.as_ref().and_then(|f| f.ransomware.as_ref()) {
        if r.canary_dirs.iter().any(|p| !p.starts_with('/')) {
            return Err(ApiFailure::bad_request("fim.ransomware.canary_dirs must be absolute paths"));
        }
    }
    for scan in &policy.scans {
        if scan.name.is_empty() || scan.paths.is_empty() || scan.every_secs == 0 {
            return Err(ApiFailure::bad_request(format!(
                "scheduled scan `{}` needs a name, at least one path and every_secs > 0",
                scan.name
            )));
        }
    }
    let text = serde_json::to_string(&policy).map_err(ApiFailure::internal)?;
    let stored = shared.with_store(move |s| Ok(s.put_policy(&text, now_ms())?)).await?;
    policy.version = stored;
    let json = serde_json::to_string(&policy).map_err(ApiFailure::internal)?;
    if let Ok(mut current) = shared.policy.write() {
        // Two concurrent updates may finish out of order; the higher version wins.
        if stored > current.0 {
            *current = (stored, Arc::from(json.as_str()));
        }
    }
    Ok(Json(policy))
}

pub(crate) fn summary(
    shared: &Shared,
    a: mamori_store::AgentRow,
    pending_commands: u64,
) -> proto::AgentSummary {
    let live =
        shared.live.lock().ok().and_then(|l| l.get(&a.id).map(|l| (l.last_seen_ms, l.heartbeat.clone())));
    let (last_seen, hb) = match live {
        Some((seen, hb)) => (Some(seen.max(a.last_seen_ms.unwrap_or(i64::MIN))), hb),
        None => (a.last_seen_ms, None),
    };
    let offline_ms = i64::try_from(shared.offline_after.as_millis()).unwrap_or(i64::MAX);
    let status = match a.status.as_str() {
        "active" if last_seen.is_some_and(|s| now_ms().saturating_sub(s) <= offline_ms) => {
            "online".to_string()
        }
        "active" => "offline".to_string(),
        other => other.to_string(),
    };
    proto::AgentSummary {
        id: a.id,
        hostname: hb.as_ref().map(|h| h.hostname.clone()).unwrap_or(a.hostname),
        status,
        agent_version: hb.as_ref().map(|h| h.agent_version.clone()).unwrap_or(a.agent_version),
        enrolled_at: rfc3339(a.enrolled_ms),
        last_seen: last_seen.map(rfc3339),
        policy_version: hb.as_ref().map(|h| h.policy_version).unwrap_or(a.policy_version),
        cert_not_after: rfc3339(a.cert_not_after_ms),
        replaced_by: a.replaced_by,
        spool_pending: hb.as_ref().map(|h| h.spool_pending).unwrap_or(a.spool_pending),
        spool_dropped_total: hb.as_ref().map(|h| h.spool_dropped_total).unwrap_or(a.spool_dropped_total),
        isolated: hb.as_ref().map(|h| h.isolated).unwrap_or(a.isolated),
        pending_commands,
    }
}

async fn list_agents(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> ApiResult<Vec<proto::AgentSummary>> {
    require_admin(&shared, &headers)?;
    let (rows, pending) = shared.with_store(|s| Ok((s.list_agents()?, s.pending_command_counts()?))).await?;
    Ok(Json(
        rows.into_iter()
            .map(|a| {
                let n = pending.get(&a.id).copied().unwrap_or(0);
                summary(&shared, a, n)
            })
            .collect(),
    ))
}

async fn get_agent(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<proto::AgentSummary> {
    require_admin(&shared, &headers)?;
    let wanted = id.clone();
    let found = shared
        .with_store(move |s| {
            Ok(match s.get_agent(&wanted)? {
                Some(row) => Some((row, s.pending_commands(&wanted)?.len() as u64)),
                None => None,
            })
        })
        .await?;
    match found {
        Some((row, pending)) => Ok(Json(summary(&shared, row, pending))),
        None => Err(ApiFailure::new(StatusCode::NOT_FOUND, "unknown_agent", format!("no agent {id}"))),
    }
}

async fn revoke(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<proto::RevokeResponse> {
    require_admin(&shared, &headers)?;
    let wanted = id.clone();
    let known = shared.with_store(move |s| Ok(s.revoke_agent(&wanted, now_ms())?)).await?;
    if !known {
        return Err(ApiFailure::new(StatusCode::NOT_FOUND, "unknown_agent", format!("no agent {id}")));
    }
    let closed = shared.distrust(std::slice::from_ref(&id));
    tracing::info!("revoked agent {id}; closed {closed} open connections");
    Ok(Json(proto::RevokeResponse { id, revoked: true, connections_closed: closed }))
}

/// The wire form of a stored command, for the agent; `None` for an action this build does not
/// know (the store only accepts known ones, so only a newer build's database has such rows).
pub(crate) fn agent_command(row: &CommandRow) -> Option<proto::AgentCommand> {
    let action = proto::CommandAction::ALL.into_iter().find(|a| a.as_str() == row.action)?;
    Some(proto::AgentCommand {
        id: row.id.clone(),
        action,
        target: row.target.clone(),
        reason: row.reason.clone(),
        created_ms: row.created_ms,
    })
}

pub(crate) fn command_record(row: CommandRow) -> Result<proto::CommandRecord, ApiFailure> {
    let action = agent_command(&row)
        .ok_or_else(|| ApiFailure::internal(format!("command {} has unknown action {}", row.id, row.action)))?
        .action;
    let status = match row.success {
        None => "pending",
        Some(true) => "succeeded",
        Some(false) => "failed",
    };
    Ok(proto::CommandRecord {
        id: row.id,
        agent_id: row.agent_id,
        action,
        target: row.target,
        reason: row.reason,
        created: rfc3339(row.created_ms),
        status: status.to_string(),
        completed: row.completed_ms.map(rfc3339),
        message: row.message,
    })
}

pub(crate) fn unknown_agent(id: &str) -> ApiFailure {
    ApiFailure::new(StatusCode::NOT_FOUND, "unknown_agent", format!("no agent {id}"))
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

async fn command_result(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Path(command_id): Path<String>,
    body: Result<JsonBody<proto::CommandResult>, ApiFailure>,
) -> ApiResult<proto::CommandRecord> {
    let id = agent_identity(&shared, &peer)?;
    let JsonBody(result) = body.map_err(ApiFailure::body_is_bad_request)?;
    let not_found = || {
        ApiFailure::new(
            StatusCode::NOT_FOUND,
            "unknown_command",
            format!("this agent has no command {command_id}"),
        )
    };
    if command_id.is_empty() || command_id.len() > MAX_COMMAND_ID {
        return Err(not_found());
    }
    let message = truncate_utf8(&result.message, MAX_COMMAND_MESSAGE).to_string();
    let (agent, command) = (id.clone(), command_id.clone());
    let outcome = shared
        .with_store(move |s| Ok(s.complete_command(&agent, &command, result.success, &message, now_ms())))
        .await?;
    shared.touch(&id, now_ms(), None);
    match outcome {
        Ok(row) => {
            shared.command_completed(&id, &row.id);
            tracing::info!(
                "agent {id} reports command {} ({}): {}",
                row.id,
                row.action,
                if row.success == Some(true) { "succeeded" } else { "failed" }
            );
            Ok(Json(command_record(row)?))
        }
        // Someone else's command looks exactly like no command: an agent learns nothing about
        // other agents from this route.
        Err(mamori_store::Error::UnknownCommand(_)) => Err(not_found()),
        Err(e) => Err(ApiFailure::internal(e)),
    }
}

async fn queue_command(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(agent_id): Path<String>,
    body: Result<JsonBody<proto::CommandRequest>, ApiFailure>,
) -> ApiResult<proto::CommandRecord> {
    require_admin(&shared, &headers)?;
    let JsonBody(req) = body.map_err(ApiFailure::body_is_bad_request)?;
    let record = queue_for_agent(&shared, &agent_id, req.action, &req.target, &req.reason).await?;
    crate::console::audit::record(
        &shared,
        crate::console::audit::Actor::AdminToken,
        &format!("agent.{}", req.action.as_str()),
        &agent_id,
        command_audit_detail(req.action, &req.target, &req.reason, &record.id),
    )
    .await;
    Ok(Json(record))
}

/// What the audit log records of a queued command: the reason, the command id, the target when
/// there is one, and for `backup_restore` the snapshot.
pub(crate) fn command_audit_detail(
    action: proto::CommandAction,
    target: &str,
    reason: &str,
    command: &str,
) -> serde_json::Value {
    let mut detail = serde_json::json!({"reason": reason, "command": command});
    if !target.is_empty() {
        detail["target"] = serde_json::json!(target);
    }
    if action == proto::CommandAction::BackupRestore {
        detail["snapshot"] = serde_json::json!(target);
    }
    detail
}

/// Queues a command for an agent (the admin API and the console both come here).
pub(crate) async fn queue_for_agent(
    shared: &Arc<Shared>,
    agent_id: &str,
    action: proto::CommandAction,
    target: &str,
    reason: &str,
) -> Result<proto::CommandRecord, ApiFailure> {
    if action.needs_target() == target.is_empty() {
        return Err(ApiFailure::bad_request(if target.is_empty() {
            format!("{} needs a target", action.as_str())
        } else {
            format!("{} takes no target", action.as_str())
        }));
    }
    if target.len() > 128 || target.chars().any(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')) {
        return Err(ApiFailure::bad_request("target must be at most 128 letters, digits, '-' or '_'"));
    }
    if action == proto::CommandAction::BackupRestore && !proto::is_snapshot_name(target) {
        return Err(ApiFailure::bad_request(format!(
            "backup_restore needs the snapshot's full name ({} lowercase hexadecimal characters) as its target",
            proto::SNAPSHOT_NAME_LEN
        )));
    }
    if reason.len() > MAX_COMMAND_REASON {
        return Err(ApiFailure::bad_request(format!("reason is longer than {MAX_COMMAND_REASON} bytes")));
    }
    if reason.chars().any(char::is_control) {
        return Err(ApiFailure::bad_request("reason must not contain control characters"));
    }
    let (agent, target, reason) = (agent_id.to_string(), target.to_string(), reason.to_string());
    let queued = shared
        .with_store(move |s| Ok(s.queue_command_on(&agent, action.as_str(), &target, &reason, now_ms())))
        .await?;
    let row = match queued {
        Ok(row) => row,
        Err(mamori_store::Error::UnknownAgent(_)) => return Err(unknown_agent(agent_id)),
        Err(mamori_store::Error::AgentNotActive { status, .. }) => {
            return Err(ApiFailure::new(
                StatusCode::CONFLICT,
                "agent_not_active",
                format!("agent {agent_id} is {status}; it can no longer receive commands"),
            ))
        }
        Err(e) => return Err(ApiFailure::internal(e)),
    };
    if let Some(command) = agent_command(&row) {
        shared.command_queued(agent_id, command);
    }
    tracing::info!("queued command {} ({}) for agent {agent_id}", row.id, row.action);
    command_record(row)
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct CommandQuery {
    limit: Option<u32>,
}

async fn list_commands(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(agent_id): Path<String>,
    Query(query): Query<CommandQuery>,
) -> ApiResult<Vec<proto::CommandRecord>> {
    require_admin(&shared, &headers)?;
    let limit = query.limit.unwrap_or(100).clamp(1, mamori_store::MAX_COMMAND_LIST);
    let agent = agent_id.clone();
    let rows = shared
        .with_store(move |s| {
            Ok(match s.get_agent(&agent)? {
                Some(_) => Some(s.list_commands(&agent, limit)?),
                None => None,
            })
        })
        .await?
        .ok_or_else(|| unknown_agent(&agent_id))?;
    Ok(Json(rows.into_iter().map(command_record).collect::<Result<_, _>>()?))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct EventQuery {
    since: Option<String>,
    until: Option<String>,
    agent: Option<String>,
    /// Comma-separated kinds.
    kind: Option<String>,
    q: Option<String>,
    after: Option<i64>,
    limit: Option<u32>,
    /// `asc` or `desc` (default); ignored with `after`, which is always ascending.
    order: Option<String>,
}

fn filter_from(query: EventQuery) -> Result<EventFilter, ApiFailure> {
    let newest_first = match query.order.as_deref() {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(other) => {
            return Err(ApiFailure::bad_request(format!("order must be asc or desc, not `{other}`")))
        }
    };
    Ok(EventFilter {
        since_ms: query.since.as_deref().map(parse).transpose().map_err(ApiFailure::bad_request)?,
        until_ms: query.until.as_deref().map(parse).transpose().map_err(ApiFailure::bad_request)?,
        agent_id: query.agent.filter(|a| !a.is_empty()),
        kinds: query
            .kind
            .map(|k| k.split(',').map(str::trim).filter(|k| !k.is_empty()).map(String::from).collect())
            .unwrap_or_default(),
        text: query.q.filter(|q| !q.is_empty()),
        after_id: query.after,
        limit: query.limit.unwrap_or(100).clamp(1, 10_000),
        newest_first,
    })
}

async fn run_query(shared: &Arc<Shared>, filter: EventFilter) -> ApiResult<proto::EventPage> {
    let rows = shared.with_store(move |s| Ok(s.query_events(&filter)?)).await?;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let data = serde_json::value::RawValue::from_string(row.data).map_err(ApiFailure::internal)?;
        events.push(proto::EventRecord {
            id: row.id,
            agent_id: row.agent_id,
            seq: row.seq,
            kind: row.kind,
            time: rfc3339(row.time_ms),
            received: rfc3339(row.received_ms),
            data,
        });
    }
    Ok(Json(proto::EventPage { events }))
}

async fn query_events(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<EventQuery>,
) -> ApiResult<proto::EventPage> {
    require_admin(&shared, &headers)?;
    run_query(&shared, filter_from(query)?).await
}

async fn query_detections(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<EventQuery>,
) -> ApiResult<proto::EventPage> {
    require_admin(&shared, &headers)?;
    let mut filter = filter_from(query)?;
    let wanted: Vec<String> = if filter.kinds.is_empty() {
        proto::kind::DETECTIONS.iter().map(|k| k.to_string()).collect()
    } else {
        filter.kinds.iter().filter(|k| proto::kind::DETECTIONS.contains(&k.as_str())).cloned().collect()
    };
    if wanted.is_empty() {
        return Ok(Json(proto::EventPage { events: Vec::new() }));
    }
    filter.kinds = wanted;
    run_query(&shared, filter).await
}

async fn create_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<proto::TokenCreateRequest>,
) -> ApiResult<proto::TokenCreated> {
    require_admin(&shared, &headers)?;
    if req.ttl_secs == 0 || req.ttl_secs > MAX_TOKEN_TTL_SECS {
        return Err(ApiFailure::bad_request("ttl must be between 1 second and 366 days"));
    }
    if req.uses == 0 || req.uses > MAX_TOKEN_USES {
        return Err(ApiFailure::bad_request(format!("uses must be between 1 and {MAX_TOKEN_USES}")));
    }
    if req.label.len() > 200 {
        return Err(ApiFailure::bad_request("label is longer than 200 bytes"));
    }
    let token = mamori_pki::generate_token();
    let now = now_ms();
    let expires = now.saturating_add(i64::try_from(req.ttl_secs).unwrap_or(i64::MAX).saturating_mul(1000));
    let (hash, label, uses) = (token.hash, req.label.clone(), req.uses);
    let id = shared.with_store(move |s| Ok(s.create_token(&hash, &label, expires, uses, now)?)).await?;
    Ok(Json(proto::TokenCreated {
        id,
        token: token.secret,
        expires_at: rfc3339(expires),
        uses: req.uses,
        label: req.label,
    }))
}

async fn list_tokens(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> ApiResult<serde_json::Value> {
    require_admin(&shared, &headers)?;
    let tokens = shared.with_store(|s| Ok(s.list_tokens()?)).await?;
    let list: Vec<serde_json::Value> = tokens
        .into_iter()
        .map(|t| {
            serde_json::json!({
                "id": t.id, "label": t.label, "created": rfc3339(t.created_ms),
                "expires_at": rfc3339(t.expires_at_ms), "uses_left": t.uses_left, "uses_total": t.uses_total,
            })
        })
        .collect();
    Ok(Json(serde_json::Value::Array(list)))
}
