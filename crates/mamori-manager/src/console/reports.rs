//! The monthly report: the month's figures gathered from the store (per endpoint, isolations,
//! backups, top rules, last month for trends, the checklist) and rendered by `mamori-report`
//! as HTML or PDF; on demand from the console, and on the 1st of each month at 08:00 (Japan
//! time) mailed to the digest recipients.
//!
//! Months are Japan's (UTC+09:00): a hospital's "November" ends at midnight in Tokyo.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mamori_auth::Permission;
use mamori_proto::kind;
use mamori_report::{
    BackupRow, ChecklistRow, ChecklistStatus, EndpointRow, EndpointStatus, IsolationRow, IsolationTrigger,
    Lang, MonthlyReport, ReportMonth, RuleCount, Severity, SeverityCounts, Totals,
};
use mamori_store::EventFilter;
use serde::Deserialize;
use serde_json::{json, Value};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use super::audit::{self, Actor};
use super::session::authenticate;
use crate::api::{ApiFailure, JsonBody};
use crate::state::Shared;
use crate::timefmt::now_ms;

const JST_SECONDS: i32 = 9 * 3600;
const LAST_SENT_KEY: &str = "reports.last_sent";

fn jst() -> UtcOffset {
    UtcOffset::from_whole_seconds(JST_SECONDS).unwrap_or(UtcOffset::UTC)
}

/// RFC 3339 in Japan time: the report is read in Japan, so `2026-12-01T00:00:00+09:00`.
fn jst_time(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.to_offset(jst()).format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// [start, end) of a month in Unix ms, Japan time.
pub(crate) fn month_range(month: ReportMonth) -> Result<(i64, i64), ApiFailure> {
    let start_of = |year: i32, m: u8| -> Result<i64, ApiFailure> {
        let month = Month::try_from(m).map_err(ApiFailure::internal)?;
        let date = Date::from_calendar_date(year, month, 1).map_err(ApiFailure::internal)?;
        let t = PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_offset(jst());
        Ok(i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX))
    };
    let (ny, nm) =
        if month.month() == 12 { (month.year() + 1, 1) } else { (month.year(), month.month() + 1) };
    Ok((start_of(month.year(), month.month())?, start_of(ny, nm)?))
}

fn previous(month: ReportMonth) -> Option<ReportMonth> {
    let (y, m) = if month.month() == 1 { (month.year() - 1, 12) } else { (month.year(), month.month() - 1) };
    ReportMonth::new(y, m).ok()
}

/// The month before the one `now_ms` falls in (Japan time): what the scheduled report covers.
pub(crate) fn last_month(now_ms: i64) -> Option<ReportMonth> {
    let now = OffsetDateTime::from_unix_timestamp(now_ms / 1000).ok()?.to_offset(jst());
    previous(ReportMonth::new(now.year(), now.month() as u8).ok()?)
}

fn severity(level: &str) -> Option<Severity> {
    match level.to_ascii_lowercase().as_str() {
        "critical" => Some(Severity::Critical),
        "high" => Some(Severity::High),
        "medium" => Some(Severity::Medium),
        "low" => Some(Severity::Low),
        _ => None,
    }
}

fn add(counts: &mut SeverityCounts, s: Severity) {
    match s {
        Severity::Critical => counts.critical += 1,
        Severity::High => counts.high += 1,
        Severity::Medium => counts.medium += 1,
        Severity::Low => counts.low += 1,
    }
}

/// One month's figures (without last month's and without the checklist).
struct MonthFigures {
    endpoints: Vec<EndpointRow>,
    backups: Vec<BackupRow>,
    isolations: Vec<IsolationRow>,
    top_rules: Vec<RuleCount>,
    false_positives: u32,
}

async fn figures(shared: &Arc<Shared>, month: ReportMonth) -> Result<MonthFigures, ApiFailure> {
    let (start, end) = month_range(month)?;
    let agents = super::views::agent_summaries(shared).await?;
    let (detections, events, false_positives, restore_tests) = shared
        .with_store(move |s| {
            let detections = s.query_detections(&mamori_store::DetectionFilter {
                since_ms: Some(start),
                until_ms: Some(end),
                limit: 100_000,
                ..Default::default()
            })?;
            let events = s.query_events(&EventFilter {
                since_ms: Some(start),
                until_ms: Some(end),
                kinds: vec![
                    kind::RESPONSE_ACTION.to_string(),
                    kind::BACKUP_COMPLETED.to_string(),
                    kind::BACKUP_FAILED.to_string(),
                    kind::SCAN_SUMMARY.to_string(),
                ],
                limit: mamori_store::MAX_QUERY_LIMIT,
                ..EventFilter::default()
            })?;
            let fp = s
                .triage_of(&detections.iter().map(|d| d.id).collect::<Vec<_>>())?
                .iter()
                .filter(|t| t.status == "false_positive")
                .count() as u32;
            let tests: Vec<super::checklist::RestoreTest> = s
                .get_setting(super::checklist::RESTORE_TEST_SETTING)?
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            Ok((detections, events, fp, tests))
        })
        .await?;

    let mut rows: Vec<EndpointRow> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut by_host: HashMap<String, usize> = HashMap::new();
    for a in &agents {
        let status = match a.status.as_str() {
            "online" => EndpointStatus::Online,
            "offline" => EndpointStatus::Offline,
            "revoked" => EndpointStatus::Revoked,
            _ => continue,
        };
        index.insert(a.id.clone(), rows.len());
        by_host.insert(a.hostname.to_lowercase(), rows.len());
        rows.push(EndpointRow {
            host: a.hostname.clone(),
            agent_id: a.id.clone(),
            status,
            detections: SeverityCounts::default(),
            quarantined: 0,
            processes_stopped: 0,
            isolations: 0,
            last_scan: None,
            last_seen: a.last_seen.clone(),
        });
    }
    let mut rules: HashMap<String, RuleCount> = HashMap::new();
    for d in &detections {
        let Some(sev) = severity(&d.level) else { continue };
        let agent = d.source.strip_prefix("agent ").and_then(|id| index.get(id));
        let host = d.host.as_ref().and_then(|h| by_host.get(&h.to_lowercase()));
        if let Some(&i) = agent.or(host) {
            add(&mut rows[i].detections, sev);
        }
        let entry = rules.entry(d.rule_id.clone()).or_insert_with(|| RuleCount {
            rule_id: d.rule_id.clone(),
            title: d.title.clone(),
            severity: sev,
            count: 0,
        });
        entry.count += 1;
    }
    let mut top_rules: Vec<RuleCount> = rules.into_values().collect();
    top_rules.sort_by(|a, b| {
        b.count.cmp(&a.count).then(b.severity.cmp(&a.severity)).then(a.rule_id.cmp(&b.rule_id))
    });
    top_rules.truncate(10);

    let mut backups: HashMap<String, BackupRow> = HashMap::new();
    let mut isolations: Vec<IsolationRow> = Vec::new();
    let mut open_isolation: HashMap<String, usize> = HashMap::new();
    for e in &events {
        let Some(&i) = index.get(&e.agent_id) else { continue };
        let data: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
        let host = rows[i].host.clone();
        match e.kind.as_str() {
            k if k == kind::SCAN_SUMMARY => rows[i].last_scan = Some(jst_time(e.time_ms)),
            k if k == kind::BACKUP_COMPLETED || k == kind::BACKUP_FAILED => {
                let row = backups.entry(e.agent_id.clone()).or_insert_with(|| BackupRow {
                    host: host.clone(),
                    last_backup: None,
                    backups_ok: 0,
                    backups_failed: 0,
                    suspicious_snapshots: 0,
                    last_restore_test: None,
                });
                if k == kind::BACKUP_COMPLETED {
                    row.backups_ok += 1;
                    row.last_backup = Some(jst_time(e.time_ms));
                    if data.pointer("/mamori/backup/suspicious").and_then(Value::as_bool) == Some(true) {
                        row.suspicious_snapshots += 1;
                    }
                } else {
                    row.backups_failed += 1;
                }
            }
            _ => {
                let response = data.pointer("/mamori/response");
                let action = response.and_then(|r| r.get("action")).and_then(Value::as_str).unwrap_or("");
                let dry = response.and_then(|r| r.get("dry_run")).and_then(Value::as_bool) == Some(true);
                let ok = data.pointer("/event/outcome").and_then(Value::as_str) == Some("success");
                if dry || !ok {
                    continue;
                }
                match action {
                    "quarantine" => rows[i].quarantined += 1,
                    "stop_process" => rows[i].processes_stopped += 1,
                    "isolate" => {
                        rows[i].isolations += 1;
                        let trigger =
                            response.and_then(|r| r.get("trigger")).and_then(Value::as_str).unwrap_or("");
                        open_isolation.insert(e.agent_id.clone(), isolations.len());
                        isolations.push(IsolationRow {
                            host,
                            started: jst_time(e.time_ms),
                            ended: None,
                            reason: response
                                .and_then(|r| r.get("reason"))
                                .and_then(Value::as_str)
                                .unwrap_or(trigger)
                                .to_string(),
                            trigger: if trigger == "command" {
                                IsolationTrigger::Manual
                            } else {
                                IsolationTrigger::Automatic
                            },
                        });
                    }
                    "release" => {
                        if let Some(j) = open_isolation.remove(&e.agent_id) {
                            isolations[j].ended = Some(jst_time(e.time_ms));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    let mut backup_rows: Vec<BackupRow> = rows
        .iter()
        .map(|r| {
            let mut b = backups.remove(&r.agent_id).unwrap_or(BackupRow {
                host: r.host.clone(),
                last_backup: None,
                backups_ok: 0,
                backups_failed: 0,
                suspicious_snapshots: 0,
                last_restore_test: None,
            });
            b.last_restore_test = restore_tests
                .iter()
                .filter(|t| t.host.eq_ignore_ascii_case(&r.host) && t.time_ms < end)
                .map(|t| t.time_ms)
                .max()
                .map(jst_time);
            b
        })
        .collect();
    backup_rows.sort_by(|a, b| a.host.cmp(&b.host));
    Ok(MonthFigures { endpoints: rows, backups: backup_rows, isolations, top_rules, false_positives })
}

fn checklist_title(key: &str, lang_json: &str) -> String {
    serde_json::from_str::<Value>(lang_json)
        .ok()
        .and_then(|v| v.get(key).and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| key.to_string())
}

pub(crate) async fn build(
    shared: &Arc<Shared>,
    month: ReportMonth,
    lang: Lang,
) -> Result<MonthlyReport, ApiFailure> {
    let (start, end) = month_range(month)?;
    let this = figures(shared, month).await?;
    let prev = match previous(month) {
        Some(p) => {
            let f = figures(shared, p).await?;
            Some(Totals::from_rows(&f.endpoints, &f.backups, f.false_positives))
        }
        None => None,
    };
    let facts = super::checklist::gather(shared).await?;
    let checklist = super::checklist::evaluate(&facts, now_ms(), lang)
        .into_iter()
        .map(|item| ChecklistRow {
            id: item.id.to_string(),
            title_ja: checklist_title(&item.title_key, super::I18N_JA),
            title_en: checklist_title(&item.title_key, super::I18N_EN),
            status: match item.status {
                super::checklist::Status::Ok => ChecklistStatus::Ok,
                super::checklist::Status::Partial => ChecklistStatus::Partial,
                super::checklist::Status::Missing => ChecklistStatus::Missing,
            },
            evidence: item.evidence,
            missing: item.missing,
        })
        .collect();
    Ok(MonthlyReport {
        institution: shared.console.institution.clone(),
        month,
        generated: jst_time(now_ms()),
        period_start: jst_time(start),
        period_end: jst_time(end),
        totals: Totals::from_rows(&this.endpoints, &this.backups, this.false_positives),
        endpoints: this.endpoints,
        previous: prev,
        top_rules: this.top_rules,
        isolations: this.isolations,
        backups: this.backups,
        checklist,
    })
}

fn lang_of(text: Option<&str>) -> Result<Lang, ApiFailure> {
    match text.unwrap_or("ja") {
        "ja" => Ok(Lang::Ja),
        "en" => Ok(Lang::En),
        other => Err(ApiFailure::bad_request(format!("lang must be ja or en, not {other}"))),
    }
}

pub(crate) async fn render(report: MonthlyReport, lang: Lang, pdf: bool) -> Result<Vec<u8>, ApiFailure> {
    if !pdf {
        return Ok(mamori_report::render_html(&report, lang).into_bytes());
    }
    tokio::task::spawn_blocking(move || {
        mamori_report::render_pdf(&report, lang, std::path::Path::new(mamori_report::DEFAULT_FONT))
    })
    .await
    .map_err(ApiFailure::internal)?
    .map_err(|e| ApiFailure::new(StatusCode::SERVICE_UNAVAILABLE, "report_font", e.to_string()))
}

#[derive(Deserialize)]
pub(crate) struct ReportQuery {
    month: Option<String>,
    lang: Option<String>,
    format: Option<String>,
}

fn month_of(text: Option<&str>) -> Result<ReportMonth, ApiFailure> {
    match text {
        Some(t) => t.parse().map_err(|e: mamori_report::ReportError| ApiFailure::bad_request(e.to_string())),
        None => last_month(now_ms()).ok_or_else(|| ApiFailure::internal("clock out of range")),
    }
}

pub(crate) async fn monthly(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    Query(query): Query<ReportQuery>,
) -> Result<Response, ApiFailure> {
    let session = authenticate(&shared, &method, &headers, Permission::Reports).await?;
    let month = month_of(query.month.as_deref())?;
    let lang = lang_of(query.lang.as_deref())?;
    let pdf = match query.format.as_deref().unwrap_or("html") {
        "pdf" => true,
        "html" => false,
        "json" => {
            let report = build(&shared, month, lang).await?;
            return Ok(Json(report).into_response());
        }
        other => {
            return Err(ApiFailure::bad_request(format!("format must be html, pdf or json, not {other}")))
        }
    };
    let report = build(&shared, month, lang).await?;
    let body = render(report, lang, pdf).await?;
    audit::record(
        &shared,
        Actor::User(&session.username),
        "report.download",
        &month.to_string(),
        json!({"pdf": pdf}),
    )
    .await;
    let (content_type, disposition) = if pdf {
        ("application/pdf", format!("attachment; filename=\"mamori-report-{month}.pdf\""))
    } else {
        ("text/html; charset=utf-8", format!("inline; filename=\"mamori-report-{month}.html\""))
    };
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    if let Ok(v) = header::HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    // The HTML report has its own inline styles and no scripts at all.
    if !pdf {
        h.insert(
            "content-security-policy",
            header::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
        );
    }
    Ok(response)
}

#[derive(Deserialize)]
pub(crate) struct SendRequest {
    month: Option<String>,
    lang: Option<String>,
}

/// Builds the month's PDF and mails it to the digest recipients (whoever reads the daily
/// summary also gets the monthly one).
pub(crate) async fn send_report(
    shared: &Arc<Shared>,
    month: ReportMonth,
    lang: Lang,
) -> Result<usize, ApiFailure> {
    let settings = shared.with_store(|s| super::alerting::load_settings(s)).await?;
    let recipients = settings.digest.email.clone();
    if recipients.is_empty() {
        return Err(ApiFailure::new(
            StatusCode::CONFLICT,
            "no_recipients",
            "reports go to the digest recipients (alerting settings, digest.email), and none are set",
        ));
    }
    let report = build(shared, month, lang).await?;
    let pdf = render(report, lang, true).await?;
    let (subject, body) = match lang {
        Lang::Ja => (
            format!("[mamori] 月次セキュリティレポート {month} ({})", shared.console.institution),
            format!("{} の {month} の月次セキュリティレポートを添付します。\n", shared.console.institution),
        ),
        Lang::En => (
            format!("[mamori] Monthly security report {month} ({})", shared.console.institution),
            format!(
                "Attached is the monthly security report of {} for {month}.\n",
                shared.console.institution
            ),
        ),
    };
    let dispatcher = mamori_alert::Dispatcher::new(&settings);
    let attachment = mamori_alert::Attachment {
        filename: format!("mamori-report-{month}.pdf"),
        content_type: "application/pdf".to_string(),
        bytes: pdf,
    };
    let mail = mamori_alert::MailText { subject, body, attachments: vec![attachment] };
    dispatcher
        .send_mail(&recipients, &mail)
        .await
        .map_err(|e| ApiFailure::new(StatusCode::BAD_GATEWAY, "mail_failed", e.to_string()))?;
    Ok(recipients.len())
}

pub(crate) async fn send(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    body: Result<JsonBody<SendRequest>, ApiFailure>,
) -> Result<Json<Value>, ApiFailure> {
    let session = authenticate(&shared, &method, &headers, Permission::SendReports).await?;
    let JsonBody(req) = body.map_err(ApiFailure::body_is_bad_request)?;
    let month = month_of(req.month.as_deref())?;
    let lang = lang_of(req.lang.as_deref())?;
    let result = send_report(&shared, month, lang).await;
    audit::record(
        &shared,
        Actor::User(&session.username),
        "report.send",
        &month.to_string(),
        json!({"ok": result.is_ok(), "error": result.as_ref().err().map(|e| format!("{e:?}"))}),
    )
    .await;
    let sent = result?;
    Ok(Json(json!({"sent_to": sent})))
}

/// On the 1st of each month from 08:00 Japan time: last month's report to the recipients, once
/// (the month sent is remembered in the store).
pub(crate) fn spawn_schedule(
    shared: Arc<Shared>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(300)) => {}
                _ = shutdown.changed() => return,
            }
            let now = now_ms();
            let Ok(local) = OffsetDateTime::from_unix_timestamp(now / 1000).map(|t| t.to_offset(jst()))
            else {
                continue;
            };
            if local.day() != 1 || local.hour() < 8 {
                continue;
            }
            let Some(month) = last_month(now) else { continue };
            let sent = shared.with_store(|s| Ok(s.get_setting(LAST_SENT_KEY)?)).await.ok().flatten();
            if sent.as_deref() == Some(month.to_string().as_str()) {
                continue;
            }
            let configured =
                shared.with_store(|s| Ok(s.get_setting(super::alerting::SETTINGS_KEY)?.is_some())).await;
            if !matches!(configured, Ok(true)) {
                continue;
            }
            let result = send_report(&shared, month, Lang::Ja).await;
            let m = month.to_string();
            let _ = shared.with_store(move |s| Ok(s.put_setting(LAST_SENT_KEY, &m, now_ms())?)).await;
            audit::record(
                &shared,
                Actor::Manager,
                "report.scheduled",
                &month.to_string(),
                json!({"ok": result.is_ok(), "error": result.as_ref().err().map(|e| format!("{e:?}"))}),
            )
            .await;
        }
    })
}
