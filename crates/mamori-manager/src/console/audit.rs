//! The audit log: every console and admin API action, each login and each refusal, appended to
//! a SHA-256 hash chain in the store (`mamori-audit`), with Ed25519-signed checkpoints every
//! few records, at each verification and at shutdown. The signing key is `audit.key` (0600) in
//! the data directory; its public half is printed in `audit.pub` so that it can be pinned
//! elsewhere (the monthly report prints it too).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method};
use axum::Json;
use mamori_audit::{Chain, Checkpoint, CheckpointPolicy, Entry, Head, Record, SigningKey, VerifyReport};
use mamori_auth::Permission;
use mamori_store::{AuditCheckpointRow, AuditRow, Store};
use serde::Deserialize;
use serde_json::{json, Value};

use super::session::authenticate;
use crate::api::ApiFailure;
use crate::state::Shared;
use crate::timefmt::{now_ms, rfc3339};

pub(crate) const KEY_FILE: &str = "audit.key";
pub(crate) const PUBLIC_KEY_FILE: &str = "audit.pub";

/// Who did it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Actor<'a> {
    /// A console user (by user name).
    User(&'a str),
    /// Someone who gave a user name that does not exist.
    Anonymous,
    /// The holder of the admin API token (the local CLI).
    AdminToken,
    /// The manager itself (scheduled reports, alert delivery).
    Manager,
}

impl Actor<'_> {
    fn name(&self) -> String {
        match self {
            Actor::User(name) => format!("user:{name}"),
            Actor::Anonymous => "anonymous".to_string(),
            Actor::AdminToken => "admin-token".to_string(),
            Actor::Manager => "manager".to_string(),
        }
    }
}

/// Loads the checkpoint key, creating it (0600) on first start.
pub(crate) fn load_or_create_key(data_dir: &Path) -> anyhow::Result<SigningKey> {
    let path = data_dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => mamori_audit::signing_key_from_bytes(&bytes)
            .with_context(|| format!("{} is not an audit signing key", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = mamori_audit::generate_signing_key();
            mamori_pki::fsutil::create_private_exclusive(&path, key.as_bytes())
                .with_context(|| format!("cannot create {}", path.display()))?;
            let public = mamori_audit::verifying_key_hex(&key.verifying_key());
            mamori_pki::fsutil::write_atomic(
                &data_dir.join(PUBLIC_KEY_FILE),
                format!("{public}\n").as_bytes(),
                false,
            )?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn head_of(head: Option<(u64, Vec<u8>)>) -> Option<Head> {
    let (seq, hash) = head?;
    // A stored hash of the wrong length is tampering; chaining on zeros lets verification name it.
    Some(Head { seq, hash: hash.try_into().unwrap_or([0; 32]) })
}

/// Appends one record (and a checkpoint when one is due). Failing to write the audit log is an
/// error in the manager's log, never silent; the action itself has already happened.
pub(crate) async fn record(
    shared: &Arc<Shared>,
    actor: Actor<'_>,
    action: &str,
    target: &str,
    detail: Value,
) {
    let (actor, action, target, detail) =
        (actor.name(), action.to_string(), target.to_string(), detail.to_string());
    let key = shared.console.audit_key.clone();
    let result = shared
        .with_store(move |store| {
            let row = append(store, &actor, &action, &target, &detail)?;
            if CheckpointPolicy::default().due(row.seq) {
                checkpoint(store, &key, row.seq, &row.hash)?;
            }
            Ok(())
        })
        .await;
    if let Err(e) = result {
        tracing::error!("could not write the audit log: {e:#}");
    }
    shared.console.notify(super::stream::Topic::Audit);
}

/// Appends one record to the chain in the store (one IMMEDIATE transaction, so concurrent
/// writers cannot fork it). Used by the manager and by local tools that hold the store.
pub(crate) fn append(
    store: &mut Store,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> anyhow::Result<AuditRow> {
    store.append_audit::<anyhow::Error>(|head| {
        let entry = Entry { time_ms: now_ms(), actor, action, target, detail };
        Ok(to_row(&Chain::append(head_of(head), entry)?))
    })
}

fn to_row(r: &Record) -> AuditRow {
    AuditRow {
        seq: r.seq,
        time_ms: r.time_ms,
        actor: r.actor.clone(),
        action: r.action.clone(),
        target: r.target.clone(),
        detail: r.detail.clone(),
        prev_hash: r.prev_hash.to_vec(),
        hash: r.hash.to_vec(),
    }
}

fn from_row(r: AuditRow) -> Result<Record, String> {
    let seq = r.seq;
    let bytes = |v: Vec<u8>, what: &str| -> Result<[u8; 32], String> {
        v.try_into().map_err(|_| format!("record {seq}: {what} is not 32 bytes"))
    };
    Ok(Record {
        seq,
        time_ms: r.time_ms,
        actor: r.actor,
        action: r.action,
        target: r.target,
        detail: r.detail,
        prev_hash: bytes(r.prev_hash, "prev_hash")?,
        hash: bytes(r.hash, "hash")?,
    })
}

/// Signs the head `(seq, hash)` as a checkpoint.
fn checkpoint(store: &Store, key: &SigningKey, seq: u64, hash: &[u8]) -> anyhow::Result<()> {
    let hash: [u8; 32] = hash.try_into().map_err(|_| anyhow::anyhow!("head hash is not 32 bytes"))?;
    let c = Checkpoint::sign(Head { seq, hash }, now_ms(), key);
    store.add_audit_checkpoint(&AuditCheckpointRow {
        seq: c.seq,
        hash: c.hash.to_vec(),
        time_ms: c.time_ms,
        signature: c.signature.to_vec(),
    })?;
    Ok(())
}

/// Signs the current head (if it has no checkpoint yet).
pub(crate) fn checkpoint_head(store: &Store, key: &SigningKey) -> anyhow::Result<()> {
    if let Some((seq, hash)) = store.audit_head()? {
        checkpoint(store, key, seq, &hash)?;
    }
    Ok(())
}

/// Verifies the whole log in the store against `key` (streaming).
pub fn verify_store(store: &Store, key: &mamori_audit::VerifyingKey) -> anyhow::Result<VerifyReport> {
    let mut checkpoints = Vec::new();
    for c in store.audit_checkpoints()? {
        let seq = c.seq;
        match (c.hash.try_into(), c.signature.try_into()) {
            (Ok(hash), Ok(signature)) => {
                checkpoints.push(Checkpoint { seq: c.seq, hash, time_ms: c.time_ms, signature })
            }
            _ => {
                return Ok(VerifyReport {
                    ok: false,
                    records: 0,
                    checkpoints: 0,
                    first_bad_seq: Some(seq),
                    reason: Some(format!("checkpoint at record {seq} has a malformed hash or signature")),
                    unsigned_tail: 0,
                })
            }
        }
    }
    let mut verifier = mamori_audit::Verifier::new(&checkpoints, key);
    store.for_each_audit(|row| {
        let seq = row.seq;
        match from_row(row) {
            Ok(record) => {
                verifier.push(&record);
            }
            Err(reason) => verifier.unreadable(seq, &reason),
        }
    })?;
    Ok(verifier.finish())
}

/// `mamori audit verify`: verifies the audit log of a manager data directory, with the public
/// key from `audit.pub` or the one given (pinned elsewhere).
pub fn verify_data_dir(data_dir: &Path, pinned_key_hex: Option<&str>) -> anyhow::Result<VerifyReport> {
    let key_hex = match pinned_key_hex {
        Some(k) => k.to_string(),
        None => {
            let path = data_dir.join(PUBLIC_KEY_FILE);
            std::fs::read_to_string(&path).with_context(|| {
                format!("cannot read {} (no audit log in this data directory?)", path.display())
            })?
        }
    };
    let key = mamori_audit::verifying_key_from_hex(key_hex.trim())?;
    let store = Store::open(&data_dir.join(crate::STORE_FILE))?;
    verify_store(&store, &key)
}

#[derive(Deserialize, Default)]
pub(crate) struct AuditQuery {
    before: Option<u64>,
    limit: Option<u32>,
}

pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Value>, ApiFailure> {
    authenticate(&shared, &method, &headers, Permission::View).await?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let (rows, head) =
        shared.with_store(move |s| Ok((s.list_audit(query.before, limit)?, s.audit_head()?))).await?;
    let records: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            json!({
                "seq": r.seq, "time": rfc3339(r.time_ms), "actor": r.actor, "action": r.action,
                "target": r.target, "detail": serde_json::from_str::<Value>(&r.detail).unwrap_or(Value::String(r.detail.clone())),
                "hash": hex(&r.hash),
            })
        })
        .collect();
    Ok(Json(json!({
        "records": records,
        "head": head.map(|(seq, hash)| json!({"seq": seq, "hash": hex(&hash)})),
        "public_key": mamori_audit::verifying_key_hex(&shared.console.audit_key.verifying_key()),
    })))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) async fn verify_route(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiFailure> {
    let session = authenticate(&shared, &method, &headers, Permission::VerifyAudit).await?;
    let key = shared.console.audit_key.clone();
    let report = shared
        .with_store(move |s| {
            let report = verify_store(s, &key.verifying_key())?;
            // Only a log that verified gets its head signed: signing a tampered head would bless it.
            if report.ok {
                checkpoint_head(s, &key)?;
            }
            Ok(report)
        })
        .await?;
    record(
        &shared,
        Actor::User(&session.username),
        "audit.verify",
        "",
        json!({"ok": report.ok, "records": report.records, "first_bad_seq": report.first_bad_seq}),
    )
    .await;
    Ok(Json(report_json(&report)))
}

pub(crate) fn report_json(report: &VerifyReport) -> Value {
    json!({
        "ok": report.ok,
        "records": report.records,
        "checkpoints": report.checkpoints,
        "first_bad_seq": report.first_bad_seq,
        "reason": report.reason,
        "unsigned_tail": report.unsigned_tail,
    })
}
