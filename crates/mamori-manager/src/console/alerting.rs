//! Detections → alerts. A task follows the detections table (a cursor in the settings, so a
//! restart neither repeats nor loses alerts), drops the ones a false-positive suppression
//! covers (marking them `false_positive`), and hands the rest to `mamori-alert`'s router
//! (per-severity routes, throttling, the daily digest) and dispatcher (mail, webhooks, CEF).
//!
//! The settings are kept in the store as JSON without the SMTP password, which has a row of
//! its own: `mamori-alert` never serialises it, so an API answer cannot leak it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::Json;
use mamori_alert::{Alert, Delivery, Dispatcher, Router, Settings};
use mamori_auth::Permission;
use mamori_store::{DetectionRow, Store, SuppressionRow, TriageRow};
use serde::Deserialize;
use serde_json::{json, Value};

use super::audit::{self, Actor};
use super::session::authenticate;
use crate::api::{ApiFailure, JsonBody};
use crate::state::Shared;
use crate::timefmt::{now_ms, rfc3339};

pub(crate) const SETTINGS_KEY: &str = "alerting";
const PASSWORD_KEY: &str = "alerting.smtp_password";
const CURSOR_KEY: &str = "alerting.cursor";
const ROUTER_KEY: &str = "alerting.router";
const POLL: Duration = Duration::from_secs(2);
/// Deliveries of one alert that take longer are given up (and reported), not waited for.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// The stored settings with the password put back.
pub(crate) fn load_settings(store: &Store) -> anyhow::Result<Settings> {
    let mut settings: Settings = match store.get_setting(SETTINGS_KEY)? {
        Some(text) => serde_json::from_str(&text)?,
        None => Settings::default(),
    };
    if let Some(smtp) = settings.smtp.as_mut() {
        smtp.password = store.get_setting(PASSWORD_KEY)?.filter(|p| !p.is_empty());
    }
    Ok(settings)
}

/// How many routes deliver critical alerts somewhere (the checklist's evidence).
pub(crate) fn routes_for_critical(stored: Option<&str>) -> usize {
    let Some(settings) = stored.and_then(|t| serde_json::from_str::<Settings>(t).ok()) else { return 0 };
    settings
        .routes
        .iter()
        .filter(|r| {
            r.min_severity <= mamori_proto::Severity::Critical
                && (!r.email.is_empty() || !r.webhooks.is_empty() || !r.syslog.is_empty())
        })
        .count()
}

fn suppressed_by<'a>(suppressions: &'a [SuppressionRow], d: &DetectionRow) -> Option<&'a SuppressionRow> {
    suppressions.iter().find(|s| {
        s.rule_id == d.rule_id
            && match (&s.host, &d.host) {
                (None, _) => true,
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                (Some(_), None) => false,
            }
    })
}

fn alert_of(d: &DetectionRow, severity: mamori_proto::Severity, console_url: Option<&str>) -> Alert {
    let data: Value = serde_json::from_str(&d.data).unwrap_or(Value::Null);
    let mut summary = format!("{} — {}", d.title, d.source);
    for pointer in ["/event/file/path", "/event/rule/name", "/event/source/ip", "/event/user/name"] {
        if let Some(v) = data.pointer(pointer).and_then(Value::as_str) {
            summary.push_str(&format!("\n{}: {v}", pointer.trim_start_matches("/event/")));
        }
    }
    Alert {
        id: d.id.to_string(),
        time_ms: d.time_ms,
        severity,
        title: d.title.clone(),
        rule_id: d.rule_id.clone(),
        host: d.host.clone(),
        source: d.kind.clone(),
        summary,
        console_url: console_url.map(|u| format!("{u}/#/detections")),
    }
}

/// The alert task: runs until `shutdown`.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut current: Option<(String, Router, Arc<Dispatcher>)> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = shared.console.alerting_changed.notified() => {}
                _ = shutdown.changed() => return,
            }
            if let Err(e) = step(&shared, &mut current).await {
                tracing::warn!("alerting: {e:#}");
            }
        }
    })
}

async fn step(
    shared: &Arc<Shared>,
    current: &mut Option<(String, Router, Arc<Dispatcher>)>,
) -> anyhow::Result<()> {
    let (settings, text, cursor, router_state, suppressions) = shared
        .with_store(|s| {
            let settings = load_settings(s)?;
            let text = s.get_setting(SETTINGS_KEY)?.unwrap_or_default()
                + &s.get_setting(PASSWORD_KEY)?.unwrap_or_default();
            let cursor = match s.get_setting(CURSOR_KEY)? {
                Some(c) => c.parse::<i64>()?,
                // First start: alert from now on, not about the history.
                None => {
                    let head = s.max_detection_id()?;
                    s.put_setting(CURSOR_KEY, &head.to_string(), now_ms())?;
                    head
                }
            };
            let router_state = s.get_setting(ROUTER_KEY)?;
            Ok((settings, text, cursor, router_state, s.list_suppressions()?))
        })
        .await?;
    if current.as_ref().is_none_or(|(t, _, _)| *t != text) {
        let mut router = Router::new(settings.clone());
        if let Some(state) = router_state.and_then(|t| serde_json::from_str(&t).ok()) {
            router.import_state(state);
        }
        *current = Some((text, router, Arc::new(Dispatcher::new(&settings))));
    }
    let Some((_, router, dispatcher)) = current.as_mut() else { return Ok(()) };
    let detections = shared
        .with_store(move |s| {
            Ok(s.query_detections(&mamori_store::DetectionFilter {
                after_id: Some(cursor),
                limit: 200,
                ..Default::default()
            })?)
        })
        .await?;
    let now = now_ms();
    let console_url = shared.console.public_url.read().ok().and_then(|u| u.clone());
    let mut last = cursor;
    let mut marks = Vec::new();
    let mut sends = Vec::new();
    for d in &detections {
        last = last.max(d.id);
        if let Some(sup) = suppressed_by(&suppressions, d) {
            marks.push(TriageRow {
                detection_id: d.id,
                status: "false_positive".to_string(),
                note: format!("suppressed by #{} ({}): {}", sup.id, sup.created_by, sup.note),
                updated_by: "manager".to_string(),
                updated_ms: now,
            });
            router.note_for_digest(&d.rule_id, &d.title, d.host.as_deref(), now);
            continue;
        }
        match mamori_alert::severity_from_level(&d.level) {
            None => router.note_for_digest(&d.rule_id, &d.title, d.host.as_deref(), now),
            Some(severity) => {
                let alert = alert_of(d, severity, console_url.as_deref());
                let decision = router.route(&alert, now);
                for delivery in decision.deliveries {
                    sends.push((delivery, alert.clone()));
                }
            }
        }
    }
    let digest = if router.digest_due(now) { router.take_digest(now) } else { None };
    let state = serde_json::to_string(&router.export_state())?;
    shared
        .with_store(move |s| {
            for mark in &marks {
                s.set_triage(mark)?;
            }
            s.put_setting(ROUTER_KEY, &state, now)?;
            s.put_setting(CURSOR_KEY, &last.to_string(), now)?;
            Ok(())
        })
        .await?;
    // Delivered after the cursor moved: a crash in between loses these messages (the console
    // still shows the detections) rather than sending them twice on every restart.
    for (delivery, alert) in sends {
        let dispatcher = dispatcher.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let result = tokio::time::timeout(DELIVERY_TIMEOUT, dispatcher.deliver(&delivery, &alert)).await;
            let outcome = match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("gave up after {} s", DELIVERY_TIMEOUT.as_secs())),
            };
            report(&shared, &delivery, &alert.id, outcome).await;
        });
    }
    if let Some(digest) = digest {
        let dispatcher = dispatcher.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let outcome = dispatcher.send_digest(&digest).await.map_err(|e| e.to_string());
            if let Err(e) = &outcome {
                tracing::warn!("daily digest not sent: {e}");
            }
            audit::record(
                &shared,
                Actor::Manager,
                "alert.digest",
                "",
                json!({"ok": outcome.is_ok(), "error": outcome.err()}),
            )
            .await;
        });
    }
    Ok(())
}

/// Delivery outcomes go to the manager's log and, for failures, to the audit log, where the
/// console shows them: a mail relay that stopped accepting must not go unnoticed.
async fn report(shared: &Arc<Shared>, delivery: &Delivery, alert_id: &str, outcome: Result<(), String>) {
    let target = serde_json::to_value(delivery).unwrap_or(Value::Null);
    match outcome {
        Ok(()) => tracing::info!("alert {alert_id} delivered: {target}"),
        Err(e) => {
            tracing::warn!("alert {alert_id} not delivered to {target}: {e}");
            audit::record(
                shared,
                Actor::Manager,
                "alert.delivery_failed",
                alert_id,
                json!({"to": target, "error": e}),
            )
            .await;
        }
    }
}

pub(crate) async fn get_settings(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiFailure> {
    let session = authenticate(&shared, &method, &headers, Permission::View).await?;
    let settings = shared.with_store(|s| load_settings(s)).await?;
    let mut shown = settings.redacted();
    // A chat webhook's URL is its secret: only those who may change the settings see it whole.
    if !session.role.allows(Permission::ManageAlerting) {
        if let Some(hooks) = shown.get_mut("webhooks").and_then(Value::as_array_mut) {
            for hook in hooks {
                if let Some(url) = hook.get("url").and_then(Value::as_str) {
                    let origin: String = url.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
                    hook["url"] = Value::String(format!("{origin}/…"));
                }
            }
        }
    }
    Ok(Json(json!({"settings": shown})))
}

pub(crate) async fn put_settings(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    body: Result<JsonBody<Value>, ApiFailure>,
) -> Result<Json<Value>, ApiFailure> {
    let session = authenticate(&shared, &method, &headers, Permission::ManageAlerting).await?;
    let JsonBody(value) = body.map_err(ApiFailure::body_is_bad_request)?;
    let mut settings: Settings = serde_json::from_value(value.clone()).map_err(|e| {
        ApiFailure::new(StatusCode::BAD_REQUEST, "bad_settings", format!("not valid alerting settings: {e}"))
    })?;
    // No password in the request keeps the stored one (the page never has it); "" clears it.
    let given = value.pointer("/smtp/password").and_then(Value::as_str).map(str::to_string);
    let stored = shared.with_store(|s| Ok(s.get_setting(PASSWORD_KEY)?)).await?;
    let password = given.clone().or(stored).filter(|p| !p.is_empty());
    if let Some(smtp) = settings.smtp.as_mut() {
        smtp.password = password.clone();
    }
    if let Err(problems) = settings.validate() {
        return Err(ApiFailure::new(StatusCode::BAD_REQUEST, "bad_settings", problems.join("; ")));
    }
    let text = serde_json::to_string(&settings).map_err(ApiFailure::internal)?;
    shared
        .with_store(move |s| {
            s.put_setting(SETTINGS_KEY, &text, now_ms())?;
            if given.is_some() || password.is_none() {
                s.put_setting(PASSWORD_KEY, password.as_deref().unwrap_or(""), now_ms())?;
            }
            Ok(())
        })
        .await?;
    shared.console.alerting_changed.notify_one();
    audit::record(&shared, Actor::User(&session.username), "alerting.update", "", settings.redacted()).await;
    Ok(Json(json!({"settings": settings.redacted()})))
}

#[derive(Deserialize)]
pub(crate) struct TestRequest {
    channel: Delivery,
}

pub(crate) async fn test(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    body: Result<JsonBody<TestRequest>, ApiFailure>,
) -> Result<Json<Value>, ApiFailure> {
    let session = authenticate(&shared, &method, &headers, Permission::ManageAlerting).await?;
    let JsonBody(req) = body.map_err(ApiFailure::body_is_bad_request)?;
    let settings = shared.with_store(|s| load_settings(s)).await?;
    let dispatcher = Dispatcher::new(&settings);
    let outcome = tokio::time::timeout(DELIVERY_TIMEOUT, dispatcher.send_test(&req.channel))
        .await
        .map_err(|_| "timed out".to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    audit::record(
        &shared,
        Actor::User(&session.username),
        "alerting.test",
        "",
        json!({"channel": req.channel, "ok": outcome.is_ok(), "error": outcome.as_ref().err()}),
    )
    .await;
    Ok(Json(json!({"ok": outcome.is_ok(), "error": outcome.err(), "time": rfc3339(now_ms())})))
}
