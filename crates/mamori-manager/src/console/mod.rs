//! The web console: a single page for hospital IT staff, served over HTTPS on its own listener
//! (browsers have no device certificate, so the agents' mutual-TLS listener is not for them).
//!
//! Layout: [`session`] (login with password and TOTP, sessions in memory, CSRF, roles),
//! [`passkeys`] (WebAuthn passkeys instead of the TOTP code: registration and login),
//! [`audit`] (every action into the hash-chained audit log), [`users`] (accounts, admin only),
//! [`views`] (overview, agents, detections and their triage, events, checklist, backups),
//! [`checklist`] (MHLW Guideline 6.0 evidence), [`alerting`] (detections → mail, webhooks,
//! CEF), [`reports`] (monthly report), [`stream`] (server-sent "something changed" events).
//! The API is described in `docs/console-api.md`.
//!
//! Why sessions live in memory: a restart logs everybody out, and no session token ever reaches
//! the disk, where a backup or a stolen copy of the database could replay it.

pub(crate) mod alerting;
pub(crate) mod audit;
pub(crate) mod checklist;
pub(crate) mod passkeys;
pub(crate) mod reports;
pub(crate) mod session;
pub(crate) mod stream;
pub(crate) mod users;
pub(crate) mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::api::ApiFailure;
use crate::state::Shared;

const INDEX_HTML: &str = include_str!("../../console/index.html");
const APP_JS: &str = include_str!("../../console/app.js");
const STYLE_CSS: &str = include_str!("../../console/style.css");
pub(crate) const I18N_JA: &str = include_str!("../../console/i18n/ja.json");
pub(crate) const I18N_EN: &str = include_str!("../../console/i18n/en.json");

const BODY_LIMIT: usize = 256 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// The address the console listens on, once bound.
pub(crate) async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context;
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for the console on {addr}"))
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(|| async { page(INDEX_HTML, "text/html; charset=utf-8") }))
        .route("/static/app.js", get(|| async { page(APP_JS, "text/javascript; charset=utf-8") }))
        .route("/static/style.css", get(|| async { page(STYLE_CSS, "text/css; charset=utf-8") }))
        .route("/api/i18n/{lang}", get(i18n))
        .route("/api/login", post(session::login))
        .route("/api/login/totp", post(session::login_totp))
        .route("/api/login/passkey", post(passkeys::login))
        .route("/api/logout", post(session::logout))
        .route("/api/me", get(session::me))
        .route("/api/me/lang", put(session::set_lang))
        .route("/api/me/password", post(session::change_password))
        .route("/api/me/passkeys", get(passkeys::list).post(passkeys::register))
        .route("/api/me/passkeys/options", post(passkeys::registration_options))
        .route("/api/me/passkeys/{id}", delete(passkeys::remove))
        .route("/api/overview", get(views::overview))
        .route("/api/agents", get(views::agents))
        .route("/api/agents/{id}", get(views::agent))
        .route("/api/agents/{id}/{action}", post(views::agent_action))
        .route("/api/agents/{id}/quarantine/{qid}/{action}", post(views::quarantine_action))
        .route("/api/agents/{id}/backups/{snapshot}/restore", post(views::backup_restore))
        .route("/api/detections", get(views::detections))
        .route("/api/detections/{id}/{action}", post(views::triage))
        .route("/api/suppressions", get(views::suppressions))
        .route("/api/suppressions/{id}", delete(views::delete_suppression))
        .route("/api/events", get(views::events))
        .route("/api/logs", get(views::logs))
        .route("/api/quarantine", get(views::quarantine))
        .route("/api/backups", get(views::backups))
        .route("/api/checklist", get(checklist::get))
        .route("/api/checklist/inventory", put(checklist::put_inventory))
        .route("/api/checklist/restore-test", post(checklist::record_restore_test))
        .route("/api/audit", get(audit::list))
        .route("/api/audit/verify", post(audit::verify_route))
        .route("/api/users", get(users::list).post(users::create))
        .route("/api/users/{name}", put(users::update))
        .route("/api/users/{name}/{action}", post(users::action))
        .route("/api/alerting", get(alerting::get_settings).put(alerting::put_settings))
        .route("/api/alerting/test", post(alerting::test))
        .route("/api/reports/monthly", get(reports::monthly))
        .route("/api/reports/monthly/send", post(reports::send))
        .route("/api/stream", get(stream::stream))
        .fallback(|| async { ApiFailure::new(StatusCode::NOT_FOUND, "not_found", "no such page") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(shared)
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Headers on every answer: the page may load only its own files, never be framed, and
/// nothing is cached (the data is patient-adjacent and the machines are shared).
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        "content-security-policy",
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    );
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "x-frame-options", "DENY");
    set(headers, "referrer-policy", "no-referrer");
    set(headers, "strict-transport-security", "max-age=31536000");
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, "cache-control", "no-store");
    }
    response
}

async fn i18n(Path(lang): Path<String>) -> Response {
    match lang.as_str() {
        "ja" => page(I18N_JA, "application/json; charset=utf-8"),
        "en" => page(I18N_EN, "application/json; charset=utf-8"),
        _ => ApiFailure::new(StatusCode::NOT_FOUND, "not_found", "languages: ja, en").into_response(),
    }
}

/// Serves the console until `shutdown`: TLS 1.3 without client certificates, HTTP/1.1.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(shared.console_tls.clone());
    let router = router(shared.clone());
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("console accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        while tasks.try_join_next().is_some() {}
        let _ = tcp.set_nodelay(true);
        let (acceptor, router, mut shutdown) = (acceptor.clone(), router.clone(), shutdown.clone());
        tasks.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!("console TLS handshake from {addr} failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ClientAddr(addr));
                router.clone().oneshot(request)
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = shutdown.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), connection.as_mut()).await;
                }
            }
        });
    }
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain).await.is_err() {
        tasks.abort_all();
    }
}

/// What the console shares with the rest of the manager (it lives in [`Shared`]).
pub(crate) struct ConsoleState {
    pub sessions: session::Sessions,
    pub topics: tokio::sync::broadcast::Sender<stream::Topic>,
    pub audit_key: mamori_audit::SigningKey,
    /// Shown in reports and mails.
    pub institution: String,
    /// The console's address as people reach it (links in alert mails).
    pub public_url: std::sync::RwLock<Option<String>>,
    /// Passkeys for that address, or why they cannot be offered there (an IP address that is
    /// not loopback: browsers want a DNS name).
    pub passkeys: std::sync::RwLock<Result<Arc<mamori_auth::RelyingParty>, String>>,
    /// Wakes the alert task when the settings change.
    pub alerting_changed: tokio::sync::Notify,
}

impl ConsoleState {
    pub fn new(
        data_dir: &std::path::Path,
        idle: Duration,
        institution: String,
    ) -> anyhow::Result<ConsoleState> {
        let idle_ms = i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
        let policy = mamori_auth::SessionPolicy { idle_ms, ..mamori_auth::SessionPolicy::default() };
        Ok(ConsoleState {
            sessions: session::Sessions::new(policy),
            topics: stream::channel(),
            audit_key: audit::load_or_create_key(data_dir)?,
            institution,
            public_url: std::sync::RwLock::new(None),
            passkeys: std::sync::RwLock::new(Err("the console is not serving".to_string())),
            alerting_changed: tokio::sync::Notify::new(),
        })
    }

    /// Sets the address people reach the console at, and the passkey relying party for it.
    pub fn set_public_url(&self, url: &str) {
        if let Ok(mut public) = self.public_url.write() {
            *public = Some(url.to_string());
        }
        let relying_party = mamori_auth::RelyingParty::for_console(url, &self.institution)
            .map(Arc::new)
            .map_err(|e| e.to_string());
        if let Err(why) = &relying_party {
            tracing::warn!("console passkeys are off: {why}");
        }
        if let Ok(mut passkeys) = self.passkeys.write() {
            *passkeys = relying_party;
        }
    }

    /// Tells open pages that something in `topic` changed.
    pub fn notify(&self, topic: stream::Topic) {
        // No receiver (nobody has the console open) is not an error.
        let _ = self.topics.send(topic);
    }
}

/// The browser's address, for the audit log.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientAddr(pub SocketAddr);

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    fn keys(json: &str) -> BTreeSet<String> {
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).expect("i18n JSON");
        map.into_iter()
            .map(|(k, v)| {
                assert!(v.as_str().is_some_and(|s| !s.trim().is_empty()), "{k} has no text");
                k
            })
            .collect()
    }

    /// Every string the page shows is translated: both languages have the same keys, and
    /// every `t("key")` in the page exists; the checklist's items have titles.
    #[test]
    fn every_string_is_translated_in_both_languages() {
        let (ja, en) = (keys(super::I18N_JA), keys(super::I18N_EN));
        assert_eq!(ja.symmetric_difference(&en).collect::<Vec<_>>(), Vec::<&String>::new());
        let mut used = BTreeSet::new();
        let js = super::APP_JS;
        for (at, _) in js.match_indices("t(\"") {
            // `t(` itself, not `get(` or `x.split(`.
            let before = js[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
                continue;
            }
            let rest = &js[at + 3..];
            if let Some(end) = rest.find('"') {
                used.insert(rest[..end].to_string());
            }
        }
        assert!(used.len() > 100, "found only {} keys in app.js", used.len());
        let missing: Vec<_> = used.iter().filter(|k| !ja.contains(*k)).collect();
        assert!(missing.is_empty(), "keys used but not translated: {missing:?}");
        let facts = super::checklist::Facts::default();
        for item in super::checklist::evaluate(&facts, 0, super::checklist::Lang::Ja) {
            assert!(ja.contains(&item.title_key), "{} has no title", item.title_key);
        }
        // Japanese really is Japanese.
        let map: serde_json::Value = serde_json::from_str(super::I18N_JA).unwrap();
        assert_eq!(map["nav.overview"], "概要");
    }

    /// The vault rules' ids the backups page filters on are the default pack's.
    #[test]
    fn vault_rule_ids_are_the_default_packs() {
        let dir = tempfile::tempdir().unwrap();
        mamori_rules::write_pack(dir.path()).unwrap();
        let mut text = String::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            text.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
        }
        for id in super::views::VAULT_RULE_IDS {
            assert!(text.contains(&format!("id: {id}")), "{id} is not in the default pack");
        }
    }
}
