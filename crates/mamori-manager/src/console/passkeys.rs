//! Passkeys (WebAuthn) as the alternative second factor. A logged-in user registers them
//! (`/api/me/passkeys`); at the next login the password step offers a passkey ceremony with
//! the TOTP challenge, and `POST /api/login/passkey` answers it instead of a code. The password
//! is still required: a passkey replaces the code, not the password.
//!
//! Failures count towards the lockout like a wrong code; a counter that did not go up (a
//! cloned authenticator, a replayed signature) is refused; the ceremony states live in memory,
//! single use, like the TOTP challenge.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::{Extension, Json};
use mamori_auth::passkey::{Login, StoredPasskey};
use mamori_auth::{Permission, RelyingParty};
use mamori_store::{PasskeyRow, UserRow};
use serde::Deserialize;
use serde_json::{json, Value};

use super::audit::{self, Actor};
use super::session::{self, authenticate, PendingRegistration};
use super::ClientAddr;
use crate::api::{ApiFailure, JsonBody};
use crate::state::Shared;
use crate::timefmt::{now_ms, rfc3339};

/// How long the browser has to answer the registration options.
const REGISTRATION_TTL_MS: i64 = 5 * 60 * 1000;
/// The longest label a passkey may have.
const MAX_NAME_CHARS: usize = 64;

fn relying_party(shared: &Shared) -> Result<Arc<RelyingParty>, ApiFailure> {
    let unavailable = |why: String| ApiFailure::new(StatusCode::CONFLICT, "passkeys_unavailable", why);
    match &*shared.console.passkeys.read().map_err(|_| ApiFailure::internal("passkey settings poisoned"))? {
        Ok(rp) => Ok(rp.clone()),
        Err(why) => Err(unavailable(why.clone())),
    }
}

fn stored(rows: &[PasskeyRow]) -> Vec<StoredPasskey> {
    rows.iter()
        .map(|r| StoredPasskey {
            credential_id: r.credential_id.clone(),
            data: r.data.clone(),
            counter: r.sign_count,
        })
        .collect()
}

async fn passkeys_of(shared: &Arc<Shared>, user_id: i64) -> Result<Vec<PasskeyRow>, ApiFailure> {
    Ok(shared.with_store(move |s| Ok(s.passkeys_of(user_id)?)).await?)
}

/// The passkey ceremony to offer with a password step that succeeded, if the account has
/// passkeys and the console can run them. Without one the login goes on with the code, so a
/// problem here is logged and not shown.
pub(crate) async fn login_offer(shared: &Arc<Shared>, user: &UserRow) -> Option<(Value, Login)> {
    let rp = relying_party(shared).ok()?;
    let rows = match passkeys_of(shared, user.id).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!("cannot read the passkeys of {}: {}", user.username, e.message());
            return None;
        }
    };
    if rows.is_empty() {
        return None;
    }
    match rp.start_login(&stored(&rows)) {
        Ok(offer) => Some(offer),
        Err(e) => {
            tracing::warn!("cannot offer a passkey to {}: {e}", user.username);
            None
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct PasskeyLogin {
    challenge: String,
    /// `PublicKeyCredential.toJSON()` of the browser's answer.
    credential: Value,
}

/// `POST /api/login/passkey`: the second step with a passkey instead of the code.
pub(crate) async fn login(
    State(shared): State<Arc<Shared>>,
    Extension(addr): Extension<ClientAddr>,
    body: Result<JsonBody<PasskeyLogin>, ApiFailure>,
) -> Result<Response, ApiFailure> {
    let JsonBody(req) = body.map_err(ApiFailure::body_is_bad_request)?;
    let now = now_ms();
    let (pending, user) = match session::take_pending(&shared, &req.challenge, now).await? {
        Ok(found) => found,
        Err(refusal) => return Ok(refusal),
    };
    let Some(state) = pending.passkey else {
        return Err(ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "no_passkey",
            "no passkey was offered for this login; enter the password again and use the code",
        ));
    };
    let rp = relying_party(&shared)?;
    let rows = passkeys_of(&shared, user.id).await?;
    let refused = |why: String| ApiFailure::new(StatusCode::UNAUTHORIZED, "bad_passkey", why);
    let outcome = match rp.finish_login(&req.credential, &state, &stored(&rows)) {
        Ok(outcome) => outcome,
        Err(e) => return Ok(session::failed(&shared, &user, "passkey", &addr, refused(e.to_string())).await),
    };
    let (id, credential, data, counter) =
        (user.id, outcome.credential_id.clone(), outcome.updated.data.clone(), outcome.updated.counter);
    let accepted = shared
        .with_store(move |s| Ok(s.complete_passkey_login(id, &credential, &data, counter, now)?))
        .await?;
    if !accepted {
        // Another login used this signature first, or the passkey was removed meanwhile.
        let why = "the passkey's signature was already used".to_string();
        return Ok(session::failed(&shared, &user, "passkey", &addr, refused(why)).await);
    }
    session::start_session(&shared, &user, &addr, "passkey").await
}

fn passkey_json(row: &PasskeyRow) -> Value {
    json!({
        "id": row.id,
        "name": row.name,
        "created": rfc3339(row.created_ms),
        "last_used": row.last_used_ms.map(rfc3339),
    })
}

/// `GET /api/me/passkeys`: the user's own passkeys, and whether this console can use them.
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiFailure> {
    let session = authenticate(&shared, &method, &headers, Permission::View).await?;
    list_of(&shared, session.user_id).await
}

/// The body of `GET /api/me/passkeys` for `user_id` (also the answer to an add or a removal).
async fn list_of(shared: &Arc<Shared>, user_id: i64) -> Result<Json<Value>, ApiFailure> {
    let rows = passkeys_of(shared, user_id).await?;
    let (available, reason) = match relying_party(shared) {
        Ok(rp) => (true, json!({"origin": rp.origin()})),
        Err(e) => (false, json!({"unavailable": e.message()})),
    };
    Ok(Json(json!({
        "passkeys": rows.iter().map(passkey_json).collect::<Vec<_>>(),
        "available": available,
        "detail": reason,
    })))
}

/// `POST /api/me/passkeys/options`: starts a registration; the answer goes to
/// `navigator.credentials.create()`.
pub(crate) async fn registration_options(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiFailure> {
    let session = authenticate(&shared, &method, &headers, Permission::View).await?;
    let rp = relying_party(&shared)?;
    let id = session.user_id;
    let user =
        shared.with_store(move |s| Ok(s.get_user_by_id(id)?)).await?.ok_or_else(session::bad_credentials)?;
    let rows = passkeys_of(&shared, id).await?;
    let (options, state) = rp
        .start_registration(user.id, user.created_ms, &user.username, &stored(&rows))
        .map_err(ApiFailure::internal)?;
    let now = now_ms();
    let mut registrations = shared
        .console
        .sessions
        .registrations
        .lock()
        .map_err(|_| ApiFailure::internal("registrations poisoned"))?;
    registrations.retain(|_, r| r.expires_ms > now);
    registrations.insert(id, PendingRegistration { state, expires_ms: now + REGISTRATION_TTL_MS });
    Ok(Json(options))
}

#[derive(Deserialize)]
pub(crate) struct NewPasskey {
    name: String,
    credential: Value,
}

fn checked_name(name: &str) -> Result<String, ApiFailure> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "bad_name",
            format!("a passkey needs a name of 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(name.to_string())
}

/// `POST /api/me/passkeys`: finishes the registration started by the options.
pub(crate) async fn register(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    body: Result<JsonBody<NewPasskey>, ApiFailure>,
) -> Result<Json<Value>, ApiFailure> {
    let session = authenticate(&shared, &method, &headers, Permission::View).await?;
    let JsonBody(req) = body.map_err(ApiFailure::body_is_bad_request)?;
    let name = checked_name(&req.name)?;
    let now = now_ms();
    let pending = shared
        .console
        .sessions
        .registrations
        .lock()
        .map_err(|_| ApiFailure::internal("registrations poisoned"))?
        .remove(&session.user_id)
        .filter(|r| r.expires_ms > now)
        .ok_or_else(|| {
            ApiFailure::new(
                StatusCode::BAD_REQUEST,
                "registration_expired",
                "no passkey registration is in progress; start again",
            )
        })?;
    let rp = relying_party(&shared)?;
    let credential = match rp.finish_registration(&req.credential, &pending.state) {
        Ok(c) => c,
        Err(e) => {
            audit::record(
                &shared,
                Actor::User(&session.username),
                "passkey.refused",
                &session.username,
                json!({"name": name, "reason": e.to_string()}),
            )
            .await;
            return Err(ApiFailure::new(StatusCode::BAD_REQUEST, "bad_passkey", e.to_string()));
        }
    };
    let row = PasskeyRow {
        id: 0,
        user_id: session.user_id,
        credential_id: credential.credential_id,
        name: name.clone(),
        data: credential.data,
        sign_count: credential.counter,
        created_ms: now,
        last_used_ms: None,
    };
    let added = shared.with_store(move |s| Ok(s.add_passkey(&row))).await?;
    let id = match added {
        Ok(id) => id,
        Err(mamori_store::Error::Invalid(why)) => {
            return Err(ApiFailure::new(StatusCode::CONFLICT, "passkey_exists", why));
        }
        Err(e) => return Err(ApiFailure::internal(e)),
    };
    audit::record(
        &shared,
        Actor::User(&session.username),
        "passkey.added",
        &session.username,
        json!({"id": id, "name": name}),
    )
    .await;
    list_of(&shared, session.user_id).await
}

/// `DELETE /api/me/passkeys/{id}`: removes one of the user's own passkeys.
pub(crate) async fn remove(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiFailure> {
    let session = authenticate(&shared, &method, &headers, Permission::View).await?;
    let user_id = session.user_id;
    let removed = shared.with_store(move |s| Ok(s.delete_passkey(user_id, id)?)).await?;
    if !removed {
        return Err(ApiFailure::new(StatusCode::NOT_FOUND, "not_found", "you have no passkey with this id"));
    }
    audit::record(
        &shared,
        Actor::User(&session.username),
        "passkey.removed",
        &session.username,
        json!({"id": id}),
    )
    .await;
    list_of(&shared, session.user_id).await
}
