//! Logging in (password, then the second factor: a TOTP code, or a passkey for accounts that
//! have one; no session exists before the second factor), sessions in memory with idle and
//! absolute expiry, CSRF tokens, and the role check every route makes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use mamori_auth::{LockoutPolicy, LoginFailures, Permission, Role, SessionPolicy, TotpSecret};
use serde::Deserialize;
use serde_json::json;

use super::audit::{self, Actor};
use super::ClientAddr;
use crate::api::{ApiFailure, JsonBody};
use crate::state::Shared;
use crate::timefmt::now_ms;

pub(crate) const COOKIE: &str = "mamori_session";
const CSRF_HEADER: &str = "x-csrf-token";
/// Sent by the page on requests it makes without the user (refetches after a live update).
const BACKGROUND_HEADER: &str = "x-mamori-background";

/// One logged-in browser.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub user_id: i64,
    pub username: String,
    pub role: Role,
    pub lang: String,
    pub csrf: String,
    pub created_ms: i64,
    pub last_seen_ms: i64,
}

/// A password step that succeeded, waiting for the second factor.
pub(crate) struct PendingLogin {
    pub user_id: i64,
    pub expires_ms: i64,
    /// The secret shown to a user who has no second factor yet; stored only once a code made
    /// from it has been accepted.
    pub new_secret: Option<String>,
    /// The passkey ceremony offered with the challenge, for accounts that have passkeys.
    pub passkey: Option<mamori_auth::passkey::Login>,
}

/// A passkey registration waiting for the browser's answer.
pub(crate) struct PendingRegistration {
    pub state: mamori_auth::passkey::Registration,
    pub expires_ms: i64,
}

pub(crate) struct Sessions {
    policy: SessionPolicy,
    pub(crate) lockout: LockoutPolicy,
    live: Mutex<HashMap<[u8; 32], Session>>,
    pending: Mutex<HashMap<[u8; 32], PendingLogin>>,
    /// One registration at a time per account, keyed by user id.
    pub(crate) registrations: Mutex<HashMap<i64, PendingRegistration>>,
}

impl Sessions {
    pub fn new(policy: SessionPolicy) -> Sessions {
        Sessions {
            policy,
            lockout: LockoutPolicy::default(),
            live: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            registrations: Mutex::new(HashMap::new()),
        }
    }

    /// Logs a user out everywhere (role changed, disabled, password or second factor reset).
    pub fn end_sessions_of(&self, user_id: i64) {
        if let Ok(mut live) = self.live.lock() {
            live.retain(|_, s| s.user_id != user_id);
        }
        if let Ok(mut pending) = self.pending.lock() {
            pending.retain(|_, p| p.user_id != user_id);
        }
        if let Ok(mut registrations) = self.registrations.lock() {
            registrations.remove(&user_id);
        }
    }

    pub fn idle_timeout_s(&self) -> i64 {
        self.policy.idle_timeout_s()
    }

    /// Whether the session is still valid, without counting this as activity.
    pub fn is_live(&self, key: &[u8; 32]) -> bool {
        let now = now_ms();
        self.live
            .lock()
            .ok()
            .and_then(|live| {
                live.get(key).map(|s| self.policy.session_valid(s.created_ms, s.last_seen_ms, now).is_ok())
            })
            .unwrap_or(false)
    }
}

/// The store key of the request's session cookie, if it has one.
pub(crate) fn session_key(headers: &HeaderMap) -> Option<[u8; 32]> {
    cookie_value(headers).map(mamori_auth::hash_token)
}

fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

fn not_logged_in(message: &str) -> ApiFailure {
    ApiFailure::new(StatusCode::UNAUTHORIZED, "not_logged_in", message)
}

/// The session of a request, checked for expiry, CSRF (on anything but GET/HEAD) and the
/// permission the route needs. A refusal for lack of permission is written to the audit log.
pub(crate) async fn authenticate(
    shared: &Arc<Shared>,
    method: &Method,
    headers: &HeaderMap,
    permission: Permission,
) -> Result<Session, ApiFailure> {
    let sessions = &shared.console.sessions;
    let token = cookie_value(headers).ok_or_else(|| not_logged_in("log in first"))?;
    let key = mamori_auth::hash_token(token);
    let now = now_ms();
    let session = {
        let mut live = sessions.live.lock().map_err(|_| ApiFailure::internal("session table poisoned"))?;
        let Some(session) = live.get_mut(&key) else {
            return Err(not_logged_in("the session is unknown or has ended; log in again"));
        };
        if let Err(end) = sessions.policy.session_valid(session.created_ms, session.last_seen_ms, now) {
            live.remove(&key);
            return Err(not_logged_in(&end.to_string()));
        }
        // Refetches the page makes by itself after a live update are not the user's activity:
        // counting them would keep an unattended console logged in forever.
        if headers.get(BACKGROUND_HEADER).is_none() {
            session.last_seen_ms = now;
        }
        session.clone()
    };
    if method != Method::GET && method != Method::HEAD {
        let presented = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !mamori_auth::csrf_token_matches(&session.csrf, presented) {
            return Err(ApiFailure::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "missing or wrong X-CSRF-Token header",
            ));
        }
    }
    if !session.role.allows(permission) {
        audit::record(
            shared,
            Actor::User(&session.username),
            "access.denied",
            "",
            json!({"role": session.role.as_str(), "needs": permission}),
        )
        .await;
        return Err(ApiFailure::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the {} role may not do this", session.role.as_str()),
        ));
    }
    Ok(session)
}

fn me_body(session: &Session, idle_timeout_s: i64) -> serde_json::Value {
    json!({
        "user": {"username": session.username, "role": session.role.as_str(), "lang": session.lang},
        "csrf": session.csrf,
        "idle_timeout_s": idle_timeout_s,
    })
}

#[derive(Deserialize)]
pub(crate) struct LoginRequest {
    username: String,
    password: String,
}

pub(crate) fn bad_credentials() -> ApiFailure {
    ApiFailure::new(StatusCode::UNAUTHORIZED, "bad_credentials", "wrong user name or password")
}

pub(crate) fn locked(remaining_ms: u64) -> Response {
    let retry = remaining_ms.div_ceil(1000);
    (
        StatusCode::LOCKED,
        [(header::RETRY_AFTER, HeaderValue::from(retry))],
        Json(json!({
            "error": "locked",
            "message": format!("too many failed attempts; try again in {retry} s or ask an admin to unlock"),
            "retry_after_s": retry,
        })),
    )
        .into_response()
}

pub(crate) fn failures_of(user: &mamori_store::UserRow) -> LoginFailures {
    LoginFailures {
        count: user.failures,
        first_ms: user.first_failure_ms.unwrap_or(0),
        locked_until_ms: user.locked_until_ms,
    }
}

fn stored(f: LoginFailures) -> mamori_store::FailureState {
    mamori_store::FailureState {
        failures: f.count,
        first_failure_ms: (f.count > 0).then_some(f.first_ms),
        locked_until_ms: f.locked_until_ms,
    }
}

/// Counts a failed step and writes it down; returns the answer to give.
pub(crate) async fn failed(
    shared: &Arc<Shared>,
    user: &mamori_store::UserRow,
    step: &str,
    addr: &ClientAddr,
    answer: ApiFailure,
) -> Response {
    let now = now_ms();
    let next = shared.console.sessions.lockout.on_failure(failures_of(user), now);
    let id = user.id;
    if let Err(e) = shared.with_store(move |s| Ok(s.set_user_failures(id, stored(next))?)).await {
        return ApiFailure::internal(e).into_response();
    }
    let locked_now = next.locked_until_ms.is_some() && user.locked_until_ms != next.locked_until_ms;
    audit::record(
        shared,
        Actor::User(&user.username),
        "login.failure",
        &user.username,
        json!({"step": step, "from": addr.0.ip().to_string(), "failures": next.count, "locked": locked_now}),
    )
    .await;
    answer.into_response()
}

pub(crate) async fn login(
    State(shared): State<Arc<Shared>>,
    Extension(addr): Extension<ClientAddr>,
    body: Result<JsonBody<LoginRequest>, ApiFailure>,
) -> Result<Response, ApiFailure> {
    let JsonBody(req) = body.map_err(ApiFailure::body_is_bad_request)?;
    let username = mamori_auth::normalize_username(&req.username);
    let wanted = username.clone();
    let user = shared.with_store(move |s| Ok(s.get_user(&wanted)?)).await?;
    let Some(user) = user else {
        // The same work as for a real account, so that timing does not tell which names exist.
        let password = req.password;
        tokio::task::spawn_blocking(move || mamori_auth::spend_verification_time(&password)).await.ok();
        audit::record(
            &shared,
            Actor::Anonymous,
            "login.failure",
            &username,
            json!({"step": "password", "from": addr.0.ip().to_string(), "reason": "unknown user"}),
        )
        .await;
        return Err(bad_credentials());
    };
    let now = now_ms();
    if let Some(remaining) = shared.console.sessions.lockout.is_locked(failures_of(&user), now) {
        audit::record(
            &shared,
            Actor::User(&user.username),
            "login.refused",
            &user.username,
            json!({"from": addr.0.ip().to_string(), "reason": "locked"}),
        )
        .await;
        return Ok(locked(remaining));
    }
    let (password, phc) = (req.password, user.password_phc.clone());
    let password_ok = tokio::task::spawn_blocking(move || mamori_auth::verify_password(&password, &phc))
        .await
        .map_err(ApiFailure::internal)?;
    if !password_ok || user.disabled {
        return Ok(failed(&shared, &user, "password", &addr, bad_credentials()).await);
    }
    let challenge = mamori_auth::Challenge::issue(now);
    let new_secret = user.totp_secret.is_none().then(TotpSecret::generate);
    let mut body = json!({"stage": "totp", "challenge": challenge.token});
    // Passkeys stand in for the code only once the account has its TOTP set up (they are
    // registered from a logged-in session, so a new account has none anyway).
    let mut passkey = None;
    if new_secret.is_none() {
        if let Some((options, state)) = super::passkeys::login_offer(&shared, &user).await {
            body["passkey"] = options;
            passkey = Some(state);
        }
    }
    if let Some(secret) = &new_secret {
        body = json!({
            "stage": "totp_setup",
            "challenge": challenge.token,
            "secret": secret.to_base32(),
            "otpauth_uri": secret.otpauth_uri(mamori_auth::totp::ISSUER, &user.username),
        });
    }
    let pending = PendingLogin {
        user_id: user.id,
        expires_ms: challenge.expires_ms,
        new_secret: new_secret.map(|s| s.to_base32()),
        passkey,
    };
    if let Ok(mut map) = shared.console.sessions.pending.lock() {
        map.retain(|_, p| p.expires_ms > now);
        map.insert(challenge.hash, pending);
    }
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
pub(crate) struct TotpRequest {
    challenge: String,
    code: String,
}

pub(crate) async fn login_totp(
    State(shared): State<Arc<Shared>>,
    Extension(addr): Extension<ClientAddr>,
    body: Result<JsonBody<TotpRequest>, ApiFailure>,
) -> Result<Response, ApiFailure> {
    let JsonBody(req) = body.map_err(ApiFailure::body_is_bad_request)?;
    let now = now_ms();
    let (pending, user) = match take_pending(&shared, &req.challenge, now).await? {
        Ok(found) => found,
        Err(refusal) => return Ok(refusal),
    };
    let id = user.id;
    let secret_text = pending.new_secret.clone().or_else(|| user.totp_secret.clone());
    let secret = secret_text
        .as_deref()
        .map(TotpSecret::from_base32)
        .transpose()
        .map_err(ApiFailure::internal)?
        .ok_or_else(|| ApiFailure::internal("account has no second factor and none is being set up"))?;
    let bad_code = || ApiFailure::new(StatusCode::UNAUTHORIZED, "bad_code", "wrong or already used code");
    let step = match secret.verify(req.code.trim(), now, user.totp_last_step) {
        Ok(step) => step,
        Err(_) => return Ok(failed(&shared, &user, "totp", &addr, bad_code()).await),
    };
    let new_secret = pending.new_secret.clone();
    let accepted =
        shared.with_store(move |s| Ok(s.complete_login(id, step, new_secret.as_deref(), now)?)).await?;
    if !accepted {
        // Another login used this step first.
        return Ok(failed(&shared, &user, "totp", &addr, bad_code()).await);
    }
    if pending.new_secret.is_some() {
        audit::record(&shared, Actor::User(&user.username), "totp.enrolled", &user.username, json!({})).await;
    }
    start_session(&shared, &user, &addr, "totp").await
}

/// Takes the password step a second factor answers (single use whatever the outcome: a wrong
/// code or passkey means the password again) with its account, re-read: an account disabled
/// or locked since the password step gets no session. `Ok(Err(answer))` is a refusal to send.
pub(crate) async fn take_pending(
    shared: &Arc<Shared>,
    challenge: &str,
    now: i64,
) -> Result<Result<(PendingLogin, mamori_store::UserRow), Response>, ApiFailure> {
    let pending = shared
        .console
        .sessions
        .pending
        .lock()
        .map_err(|_| ApiFailure::internal("login table poisoned"))?
        .remove(&mamori_auth::hash_token(challenge));
    let expired = || {
        ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "challenge_expired",
            "the login has expired; enter the password again",
        )
    };
    let pending = pending.ok_or_else(expired)?;
    mamori_auth::challenge_usable(pending.expires_ms, now).map_err(|_| expired())?;
    let id = pending.user_id;
    let user = shared.with_store(move |s| Ok(s.get_user_by_id(id)?)).await?.ok_or_else(bad_credentials)?;
    if user.disabled {
        return Err(bad_credentials());
    }
    if let Some(remaining) = shared.console.sessions.lockout.is_locked(failures_of(&user), now) {
        return Ok(Err(locked(remaining)));
    }
    Ok(Ok((pending, user)))
}

/// Opens a session for an account that passed both factors (`factor`: `totp` or `passkey`)
/// and sets its cookie.
pub(crate) async fn start_session(
    shared: &Arc<Shared>,
    user: &mamori_store::UserRow,
    addr: &ClientAddr,
    factor: &str,
) -> Result<Response, ApiFailure> {
    let now = now_ms();
    let role: Role = user.role.parse().map_err(ApiFailure::internal)?;
    let (token, key) = mamori_auth::new_session_token();
    let session = Session {
        user_id: user.id,
        username: user.username.clone(),
        role,
        lang: user.lang.clone(),
        csrf: mamori_auth::new_csrf_token(),
        created_ms: now,
        last_seen_ms: now,
    };
    if let Ok(mut live) = shared.console.sessions.live.lock() {
        let policy = shared.console.sessions.policy;
        live.retain(|_, s| policy.session_valid(s.created_ms, s.last_seen_ms, now).is_ok());
        live.insert(key, session.clone());
    }
    audit::record(
        shared,
        Actor::User(&user.username),
        "login.success",
        &user.username,
        json!({"from": addr.0.ip().to_string(), "role": role.as_str(), "factor": factor}),
    )
    .await;
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict");
    let mut response = Json(me_body(&session, shared.console.sessions.idle_timeout_s())).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(ApiFailure::internal)?);
    Ok(response)
}

pub(crate) async fn logout(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiFailure> {
    let session = authenticate(&shared, &method, &headers, Permission::View).await?;
    if let Some(token) = cookie_value(&headers) {
        if let Ok(mut live) = shared.console.sessions.live.lock() {
            live.remove(&mamori_auth::hash_token(token));
        }
    }
    audit::record(&shared, Actor::User(&session.username), "logout", &session.username, json!({})).await;
    let mut response = Json(json!({})).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("mamori_session=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0"),
    );
    Ok(response)
}

pub(crate) async fn me(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let session = authenticate(&shared, &method, &headers, Permission::View).await?;
    Ok(Json(me_body(&session, shared.console.sessions.idle_timeout_s())))
}

#[derive(Deserialize)]
pub(crate) struct LangRequest {
    lang: String,
}

pub(crate) async fn set_lang(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    body: Result<JsonBody<LangRequest>, ApiFailure>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let session = authenticate(&shared, &method, &headers, Permission::View).await?;
    let JsonBody(req) = body.map_err(ApiFailure::body_is_bad_request)?;
    if req.lang != "ja" && req.lang != "en" {
        return Err(ApiFailure::bad_request("lang must be ja or en"));
    }
    let (id, lang) = (session.user_id, req.lang.clone());
    shared.with_store(move |s| Ok(s.set_user_lang(id, &lang)?)).await?;
    if let Ok(mut live) = shared.console.sessions.live.lock() {
        for s in live.values_mut().filter(|s| s.user_id == id) {
            s.lang = req.lang.clone();
        }
    }
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub(crate) struct PasswordChange {
    current: String,
    new: String,
}

pub(crate) async fn change_password(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    Extension(addr): Extension<ClientAddr>,
    body: Result<JsonBody<PasswordChange>, ApiFailure>,
) -> Result<Response, ApiFailure> {
    let session = authenticate(&shared, &method, &headers, Permission::View).await?;
    let JsonBody(req) = body.map_err(ApiFailure::body_is_bad_request)?;
    let id = session.user_id;
    let user = shared.with_store(move |s| Ok(s.get_user_by_id(id)?)).await?.ok_or_else(bad_credentials)?;
    let (current, phc) = (req.current, user.password_phc.clone());
    let ok = tokio::task::spawn_blocking(move || mamori_auth::verify_password(&current, &phc))
        .await
        .map_err(ApiFailure::internal)?;
    if !ok {
        return Ok(failed(&shared, &user, "password_change", &addr, bad_credentials()).await);
    }
    let phc = super::users::checked_hash(&req.new, &user.username).await?;
    shared.with_store(move |s| Ok(s.set_user_password(id, &phc, now_ms())?)).await?;
    audit::record(
        &shared,
        Actor::User(&session.username),
        "user.password_changed",
        &session.username,
        json!({}),
    )
    .await;
    Ok(Json(json!({})).into_response())
}
