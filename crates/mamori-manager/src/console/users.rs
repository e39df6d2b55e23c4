//! Accounts (admin only): create, change role, disable, reset the second factor, unlock, set a
//! password. Any change that affects what a user may do ends that user's sessions at once.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::Json;
use mamori_auth::{Permission, Role};
use serde::Deserialize;
use serde_json::{json, Value};

use super::audit::{self, Actor};
use super::session::authenticate;
use crate::api::{ApiFailure, JsonBody};
use crate::state::Shared;
use crate::timefmt::{now_ms, rfc3339};

/// Where the first admin's password is written when the manager creates that account.
pub const INITIAL_PASSWORD_FILE: &str = "console-initial-password";

/// Checks the password policy and hashes (argon2id, on a blocking thread).
pub(crate) async fn checked_hash(password: &str, username: &str) -> Result<String, ApiFailure> {
    if let Err(problems) = mamori_auth::password_policy(password, username) {
        let codes: Vec<&str> = problems.iter().map(|p| p.code()).collect();
        return Err(ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "weak_password",
            format!("the password does not meet the policy: {}", codes.join(", ")),
        ));
    }
    let password = password.to_string();
    tokio::task::spawn_blocking(move || mamori_auth::hash_password(&password))
        .await
        .map_err(ApiFailure::internal)?
        .map_err(ApiFailure::internal)
}

fn user_json(u: &mamori_store::UserRow) -> Value {
    json!({
        "username": u.username,
        "role": u.role,
        "disabled": u.disabled,
        "totp_enrolled": u.totp_secret.is_some(),
        "locked_until": u.locked_until_ms.filter(|t| *t > now_ms()).map(rfc3339),
        "failures": u.failures,
        "last_login": u.last_login_ms.map(rfc3339),
        "created": rfc3339(u.created_ms),
        "password_changed": rfc3339(u.password_changed_ms),
    })
}

pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiFailure> {
    authenticate(&shared, &method, &headers, Permission::ManageUsers).await?;
    let (users, passkeys) = shared.with_store(|s| Ok((s.list_users()?, s.passkey_counts()?))).await?;
    let passkeys: std::collections::HashMap<i64, u64> = passkeys.into_iter().collect();
    let users: Vec<Value> = users
        .iter()
        .map(|u| {
            let mut v = user_json(u);
            v["passkeys"] = json!(passkeys.get(&u.id).copied().unwrap_or(0));
            v
        })
        .collect();
    Ok(Json(json!({"users": users})))
}

#[derive(Deserialize)]
pub(crate) struct NewUser {
    username: String,
    role: Role,
    password: String,
}

pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    body: Result<JsonBody<NewUser>, ApiFailure>,
) -> Result<Json<Value>, ApiFailure> {
    let session = authenticate(&shared, &method, &headers, Permission::ManageUsers).await?;
    let JsonBody(req) = body.map_err(ApiFailure::body_is_bad_request)?;
    mamori_auth::validate_username(&req.username).map_err(|e| {
        ApiFailure::new(StatusCode::BAD_REQUEST, "bad_username", format!("{e} ({})", e.code()))
    })?;
    let username = mamori_auth::normalize_username(&req.username);
    let phc = checked_hash(&req.password, &username).await?;
    let (name, role) = (username.clone(), req.role);
    let created = shared.with_store(move |s| Ok(s.create_user(&name, role.as_str(), &phc, now_ms()))).await?;
    let user = match created {
        Ok(u) => u,
        Err(mamori_store::Error::Invalid(m)) => {
            return Err(ApiFailure::new(StatusCode::CONFLICT, "conflict", m))
        }
        Err(e) => return Err(ApiFailure::internal(e)),
    };
    audit::record(
        &shared,
        Actor::User(&session.username),
        "user.create",
        &username,
        json!({"role": role.as_str()}),
    )
    .await;
    Ok(Json(user_json(&user)))
}

async fn find(shared: &Arc<Shared>, name: &str) -> Result<mamori_store::UserRow, ApiFailure> {
    let wanted = mamori_auth::normalize_username(name);
    shared
        .with_store(move |s| Ok(s.get_user(&wanted)?))
        .await?
        .ok_or_else(|| ApiFailure::new(StatusCode::NOT_FOUND, "not_found", format!("no user {name}")))
}

/// Refuses a change that would leave no enabled admin (nobody could manage users any more).
async fn keeps_an_admin(
    shared: &Arc<Shared>,
    changed: &mamori_store::UserRow,
    role: Role,
    disabled: bool,
) -> Result<(), ApiFailure> {
    if changed.role != "admin" || (role == Role::Admin && !disabled) {
        return Ok(());
    }
    let users = shared.with_store(|s| Ok(s.list_users()?)).await?;
    let others = users.iter().filter(|u| u.id != changed.id && u.role == "admin" && !u.disabled).count();
    if others == 0 {
        return Err(ApiFailure::new(
            StatusCode::CONFLICT,
            "last_admin",
            "this is the last enabled admin account",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
pub(crate) struct UserUpdate {
    role: Option<Role>,
    disabled: Option<bool>,
}

pub(crate) async fn update(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    body: Result<JsonBody<UserUpdate>, ApiFailure>,
) -> Result<Json<Value>, ApiFailure> {
    let session = authenticate(&shared, &method, &headers, Permission::ManageUsers).await?;
    let JsonBody(req) = body.map_err(ApiFailure::body_is_bad_request)?;
    let user = find(&shared, &name).await?;
    let current: Role = user.role.parse().map_err(ApiFailure::internal)?;
    let (role, disabled) = (req.role.unwrap_or(current), req.disabled.unwrap_or(user.disabled));
    keeps_an_admin(&shared, &user, role, disabled).await?;
    let id = user.id;
    shared
        .with_store(move |s| {
            s.set_user_role(id, role.as_str())?;
            s.set_user_disabled(id, disabled)?;
            Ok(())
        })
        .await?;
    shared.console.sessions.end_sessions_of(id);
    audit::record(
        &shared,
        Actor::User(&session.username),
        "user.update",
        &user.username,
        json!({"role": role.as_str(), "disabled": disabled, "was": {"role": user.role, "disabled": user.disabled}}),
    )
    .await;
    let updated = find(&shared, &name).await?;
    Ok(Json(user_json(&updated)))
}

#[derive(Deserialize, Default)]
pub(crate) struct ActionBody {
    #[serde(default)]
    password: String,
}

pub(crate) async fn action(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    UrlPath((name, action)): UrlPath<(String, String)>,
    body: Result<JsonBody<ActionBody>, ApiFailure>,
) -> Result<Json<Value>, ApiFailure> {
    let session = authenticate(&shared, &method, &headers, Permission::ManageUsers).await?;
    let JsonBody(req) = body.map_err(ApiFailure::body_is_bad_request)?;
    let user = find(&shared, &name).await?;
    let id = user.id;
    match action.as_str() {
        "reset-totp" => shared.with_store(move |s| Ok(s.reset_user_totp(id)?)).await?,
        "unlock" => {
            shared
                .with_store(move |s| Ok(s.set_user_failures(id, mamori_store::FailureState::default())?))
                .await?
        }
        "password" => {
            let phc = checked_hash(&req.password, &user.username).await?;
            shared.with_store(move |s| Ok(s.set_user_password(id, &phc, now_ms())?)).await?
        }
        _ => {
            return Err(ApiFailure::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "actions: reset-totp, unlock, password",
            ))
        }
    }
    if action != "unlock" {
        shared.console.sessions.end_sessions_of(id);
    }
    audit::record(
        &shared,
        Actor::User(&session.username),
        &format!("user.{}", action.replace('-', "_")),
        &user.username,
        json!({}),
    )
    .await;
    Ok(Json(user_json(&find(&shared, &name).await?)))
}

/// At start: if there is no account at all, creates `admin` with a random password written to
/// `console-initial-password` (0600) in the data directory. The first login sets up TOTP.
/// Returns the file's path when it created the account.
pub(crate) fn ensure_first_admin(
    store: &mut mamori_store::Store,
    data_dir: &Path,
) -> anyhow::Result<Option<std::path::PathBuf>> {
    if store.count_users()? > 0 {
        return Ok(None);
    }
    // 24 characters of base64url from a 256-bit token: far above the policy's minimum.
    let token = mamori_pki::generate_token().secret;
    let password: String = token.trim_start_matches("mmt_").chars().take(24).collect();
    let phc = mamori_auth::hash_password(&password).map_err(|e| anyhow::anyhow!("{e}"))?;
    let path = data_dir.join(INITIAL_PASSWORD_FILE);
    mamori_pki::fsutil::write_atomic(&path, format!("admin\n{password}\n").as_bytes(), true)
        .with_context(|| format!("cannot write {}", path.display()))?;
    store.create_user("admin", "admin", &phc, now_ms())?;
    audit::append(
        store,
        "manager",
        "user.create",
        "admin",
        &json!({"role": "admin", "initial": true}).to_string(),
    )?;
    Ok(Some(path))
}

/// `mamori console user add|passwd|reset-totp|unlock` on a data directory (the local admin's
/// way in when no admin can log in). Written to the audit log as actor `cli`.
pub fn local_user_command(data_dir: &Path, command: LocalUserCommand<'_>) -> anyhow::Result<()> {
    let mut store = mamori_store::Store::open(&data_dir.join(crate::STORE_FILE))?;
    match command {
        LocalUserCommand::Add { username, role, password } => {
            mamori_auth::validate_username(username).map_err(|e| anyhow::anyhow!("{e}"))?;
            let name = mamori_auth::normalize_username(username);
            mamori_auth::password_policy(password, &name).map_err(|p| {
                anyhow::anyhow!(
                    "weak password: {}",
                    p.iter().map(|p| p.code()).collect::<Vec<_>>().join(", ")
                )
            })?;
            let role: Role = role.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
            let phc = mamori_auth::hash_password(password).map_err(|e| anyhow::anyhow!("{e}"))?;
            store.create_user(&name, role.as_str(), &phc, now_ms())?;
            audit::append(
                &mut store,
                "cli",
                "user.create",
                &name,
                &json!({"role": role.as_str()}).to_string(),
            )?;
        }
        LocalUserCommand::Password { username, password } => {
            let user = store.get_user(&mamori_auth::normalize_username(username))?.context("no such user")?;
            mamori_auth::password_policy(password, &user.username).map_err(|p| {
                anyhow::anyhow!(
                    "weak password: {}",
                    p.iter().map(|p| p.code()).collect::<Vec<_>>().join(", ")
                )
            })?;
            let phc = mamori_auth::hash_password(password).map_err(|e| anyhow::anyhow!("{e}"))?;
            store.set_user_password(user.id, &phc, now_ms())?;
            store.set_user_failures(user.id, mamori_store::FailureState::default())?;
            audit::append(&mut store, "cli", "user.password", &user.username, "{}")?;
        }
        LocalUserCommand::ResetTotp { username } => {
            let user = store.get_user(&mamori_auth::normalize_username(username))?.context("no such user")?;
            store.reset_user_totp(user.id)?;
            audit::append(&mut store, "cli", "user.reset_totp", &user.username, "{}")?;
        }
    }
    Ok(())
}

pub enum LocalUserCommand<'a> {
    Add { username: &'a str, role: &'a str, password: &'a str },
    Password { username: &'a str, password: &'a str },
    ResetTotp { username: &'a str },
}
