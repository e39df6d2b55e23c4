//! The vault's HTTP routes (behind mutual TLS, see `lib.rs`). Every route needs a device
//! certificate from the mamori CA; there is no route that replaces or removes anything, and
//! any attempt to modify is refused and recorded as a security event.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mamori_proto::vault::{self as wire, path};
use mamori_proto::ApiError;
use mamori_vault::analysis::{self, Samples};
use mamori_vault::ingest::Sealer;
use mamori_vault::ledger::{self, SnapshotRecord};
use mamori_vault::{BlobId, BlobKind, Repository, Snapshot};

use crate::events::{EventLog, SecurityEvent};
use crate::limits::{Limits, RateVerdict, Usage};

/// The verified client certificate of a connection.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    pub device_id: Option<String>,
    pub addr: SocketAddr,
}

pub struct Vault {
    repo: Mutex<Repository>,
    sealer: Sealer,
    id_key: String,
    chunker: mamori_vault::chunk::ChunkerConfig,
    repo_root: std::path::PathBuf,
    limits: Limits,
    usage: Mutex<Usage>,
    /// Per device: (raw, stored) bytes of data blobs it added since its last snapshot, the
    /// increment whose compression ratio the analysis compares.
    increments: Mutex<HashMap<String, (u64, u64)>>,
    pub(crate) events: EventLog,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock is a bug; the data (counters, the repository's in-memory
    // index) stays usable, and refusing every later request would be worse.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Vault {
    pub fn new(
        repo: Repository,
        repo_root: std::path::PathBuf,
        limits: Limits,
        events: EventLog,
    ) -> anyhow::Result<Vault> {
        let mut usage = Usage::default();
        for (_, snapshot) in repo.snapshots()? {
            if !snapshot.device_id.is_empty() {
                usage.add_stored(&snapshot.device_id, snapshot.added_stored);
            }
        }
        Ok(Vault {
            sealer: repo.sealer(),
            id_key: hex::encode(repo.keys().id_key()),
            chunker: repo.chunker(),
            repo: Mutex::new(repo),
            repo_root,
            limits,
            usage: Mutex::new(usage),
            increments: Mutex::new(HashMap::new()),
            events,
        })
    }

    pub(crate) fn flush(&self) -> mamori_vault::Result<()> {
        lock(&self.repo).flush()
    }

    fn event(&self, peer: &Peer, kind: &str, severity: u8, detail: String) {
        self.events.record(SecurityEvent {
            time_ms: now_ms(),
            kind: kind.into(),
            device_id: peer.device_id.clone().unwrap_or_default(),
            address: peer.addr.ip().to_string(),
            detail,
            severity,
        });
    }

    /// Snapshots written by devices whose ledger record is missing (the vault was killed
    /// between writing the snapshot and its record) are analysed now.
    pub fn reconcile(&self) -> anyhow::Result<usize> {
        let mut repo = lock(&self.repo);
        let recorded: std::collections::HashSet<String> =
            ledger::read_records(&self.repo_root)?.records.into_iter().map(|(r, _)| r.snapshot).collect();
        let snapshots = repo.snapshots()?;
        let mut done = 0;
        for (i, (name, snapshot)) in snapshots.iter().enumerate() {
            if snapshot.device_id.is_empty() || recorded.contains(name) {
                continue;
            }
            let previous =
                snapshots[..i].iter().rev().find(|(_, s)| s.device_id == snapshot.device_id).map(|(_, s)| s);
            let analysis = analysis::analyze(&mut repo, previous, snapshot, &mut Samples::default())?;
            write_record(&self.repo_root, name, snapshot, analysis)?;
            done += 1;
        }
        Ok(done)
    }
}

fn write_record(
    root: &std::path::Path,
    name: &str,
    s: &Snapshot,
    analysis: analysis::Analysis,
) -> mamori_vault::Result<()> {
    ledger::write_record(
        root,
        &SnapshotRecord {
            snapshot: name.to_string(),
            device_id: s.device_id.clone(),
            hostname: s.hostname.clone(),
            time_ms: s.time_ms,
            received_ms: now_ms(),
            suspicious: analysis.suspicious,
            reasons: analysis.reasons.clone(),
            analysis: Some(analysis),
        },
    )
}

pub(crate) fn router(vault: Arc<Vault>) -> Router {
    Router::new()
        .route(path::SESSION, get(session))
        .route(path::MISSING, post(missing))
        .route(path::BLOBS, post(upload))
        .route(path::READ, post(read))
        .route(path::SNAPSHOTS, get(list).post(commit))
        .route(path::SNAPSHOT, get(show))
        .fallback(refuse)
        // A DELETE or PUT on a route that exists for GET/POST is refused the same way.
        .method_not_allowed_fallback(refuse)
        .layer(DefaultBodyLimit::max(wire::MAX_BATCH_BYTES + 1024 * 1024))
        .with_state(vault)
}

pub(crate) struct Failure(StatusCode, &'static str, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1.into(), message: self.2 })).into_response()
    }
}

impl From<mamori_vault::Error> for Failure {
    fn from(e: mamori_vault::Error) -> Self {
        match e {
            mamori_vault::Error::Missing(_) => Failure(StatusCode::NOT_FOUND, "missing", e.to_string()),
            mamori_vault::Error::Refused(_) => Failure(StatusCode::FORBIDDEN, "refused", e.to_string()),
            _ => {
                tracing::error!("vault: {e}");
                Failure(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

impl From<tokio::task::JoinError> for Failure {
    fn from(e: tokio::task::JoinError) -> Self {
        Failure(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

type Answer<T> = Result<T, Failure>;

/// The device id of the connection, after the rate limit.
fn device(vault: &Vault, peer: &Peer) -> Answer<String> {
    let Some(device) = peer.device_id.clone() else {
        vault.event(
            peer,
            "refused",
            5,
            "a certificate without a mamori device id tried to use the vault".into(),
        );
        return Err(Failure(
            StatusCode::FORBIDDEN,
            "not_a_device",
            "this certificate names no enrolled device".into(),
        ));
    };
    match lock(&vault.usage).request(&vault.limits, &device, Instant::now()) {
        RateVerdict::Allowed => Ok(device),
        RateVerdict::Refused(log) => {
            if log {
                vault.event(
                    peer,
                    "rate_limited",
                    5,
                    format!("more than {} requests per second", vault.limits.requests_per_second),
                );
            }
            Err(Failure(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests; slow down".into()))
        }
    }
}

async fn session(
    State(vault): State<Arc<Vault>>,
    Extension(peer): Extension<Peer>,
) -> Answer<Json<wire::Session>> {
    let device = device(&vault, &peer)?;
    let quota_left = lock(&vault.usage).quota_left(&vault.limits, &device);
    Ok(Json(wire::Session {
        device_id: device,
        id_key: vault.id_key.clone(),
        chunk_min: vault.chunker.min,
        chunk_avg: vault.chunker.avg,
        chunk_max: vault.chunker.max,
        quota_left,
    }))
}

fn parse_ids(ids: &[String]) -> Answer<Vec<BlobId>> {
    if ids.len() > wire::MAX_IDS {
        return Err(Failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_ids",
            format!("at most {} ids per request", wire::MAX_IDS),
        ));
    }
    ids.iter()
        .map(|s| {
            BlobId::from_hex(s)
                .map_err(|_| Failure(StatusCode::BAD_REQUEST, "bad_id", format!("`{s}` is not a blob id")))
        })
        .collect()
}

async fn missing(
    State(vault): State<Arc<Vault>>,
    Extension(peer): Extension<Peer>,
    Json(req): Json<wire::Ids>,
) -> Answer<Json<wire::Ids>> {
    device(&vault, &peer)?;
    let ids = parse_ids(&req.ids)?;
    let repo = lock(&vault.repo);
    let ids = ids.iter().filter(|id| !repo.contains(id)).map(BlobId::to_hex).collect();
    Ok(Json(wire::Ids { ids }))
}

async fn upload(
    State(vault): State<Arc<Vault>>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Answer<Json<wire::Stored>> {
    let device = device(&vault, &peer)?;
    let task_vault = vault.clone();
    let task_peer = peer.clone();
    tokio::task::spawn_blocking(move || upload_blocking(&task_vault, &task_peer, &device, &body)).await?
}

fn upload_blocking(vault: &Vault, peer: &Peer, device: &str, body: &[u8]) -> Answer<Json<wire::Stored>> {
    let frames = match wire::decode_frames(body) {
        Ok(f) => f,
        Err(e) => {
            vault.event(peer, "malformed_upload", 5, format!("malformed upload: {e}"));
            return Err(Failure(StatusCode::BAD_REQUEST, "malformed", e));
        }
    };
    let mut sealed = Vec::with_capacity(frames.len());
    for frame in &frames {
        let kind = if frame.kind == wire::KIND_TREE { BlobKind::Tree } else { BlobKind::Data };
        let id = BlobId(frame.id);
        match vault.sealer.verify_and_seal(kind, &id, frame.data) {
            Ok(s) => sealed.push(s),
            Err(mamori_vault::Error::Refused(why)) => {
                vault.event(
                    peer,
                    "garbage_upload",
                    8,
                    format!(
                        "upload refused: {why} ({} bytes); nothing of this request was stored",
                        frame.data.len()
                    ),
                );
                return Err(Failure(StatusCode::UNPROCESSABLE_ENTITY, "content_mismatch", why));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let incoming: u64 = sealed.iter().map(|s| s.sealed.len() as u64).sum();
    let reserved = lock(&vault.usage).reserve(&vault.limits, device, incoming);
    if let Err(left) = reserved {
        vault.event(
            peer,
            "quota_exceeded",
            6,
            format!("upload of {incoming} bytes refused: {left} bytes of quota left"),
        );
        return Err(Failure(
            StatusCode::INSUFFICIENT_STORAGE,
            "quota_exceeded",
            format!("the vault's quota for this device is used up ({left} bytes left)"),
        ));
    }
    let mut stored = wire::Stored { received: frames.len() as u64, ..Default::default() };
    let (mut raw_new, mut stored_new) = (0u64, 0u64);
    let written: Answer<()> = {
        let mut repo = lock(&vault.repo);
        sealed.into_iter().try_for_each(|blob| {
            let (kind, raw, len) = (blob.kind, blob.raw_length, blob.sealed.len() as u64);
            if repo.add_sealed(blob)? {
                stored.new += 1;
                stored.new_stored_bytes += len;
                if kind == BlobKind::Data {
                    raw_new += raw;
                    stored_new += len;
                }
            }
            Ok(())
        })
    };
    // Blobs already in the vault cost nothing; a failed write keeps what it did store.
    lock(&vault.usage).release(device, incoming - stored.new_stored_bytes);
    written?;
    let mut increments = lock(&vault.increments);
    let inc = increments.entry(device.to_string()).or_default();
    inc.0 += raw_new;
    inc.1 += stored_new;
    Ok(Json(stored))
}

async fn read(
    State(vault): State<Arc<Vault>>,
    Extension(peer): Extension<Peer>,
    Json(req): Json<wire::Ids>,
) -> Answer<Response> {
    device(&vault, &peer)?;
    let ids = parse_ids(&req.ids)?;
    let task_vault = vault.clone();
    let body = tokio::task::spawn_blocking(move || -> Answer<Vec<u8>> {
        // Locations under the lock; reading, decrypting and decompressing outside it, so that
        // restores in parallel use the cores.
        let (located, mut reader) = {
            let mut repo = lock(&task_vault.repo);
            repo.flush()?;
            let mut located = Vec::with_capacity(ids.len());
            for id in &ids {
                let at = repo
                    .locate(id)
                    .ok_or_else(|| Failure::from(mamori_vault::Error::Missing(id.to_hex())))?;
                located.push(at);
            }
            (located, repo.reader())
        };
        // Sized up front: a growing buffer would be copied and briefly held twice.
        let total: u64 = located.iter().map(|at| at.raw_length + wire::FRAME_HEADER as u64).sum();
        if total > wire::MAX_BATCH_BYTES as u64 {
            return Err(Failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "ask for fewer blobs at once".into(),
            ));
        }
        let mut out = Vec::with_capacity(total as usize);
        for (id, at) in ids.iter().zip(&located) {
            let kind = if at.kind == BlobKind::Tree { wire::KIND_TREE } else { wire::KIND_DATA };
            let length = u32::try_from(at.raw_length)
                .map_err(|_| Failure::from(mamori_vault::Error::Corrupt(format!("blob {}", id.to_hex()))))?;
            // The frame's header, then the plaintext decompressed straight behind it.
            wire::encode_frame_header(&mut out, kind, &id.0, length);
            reader.read_into(id, at, &mut out)?;
        }
        Ok(out)
    })
    .await??;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
}

async fn commit(
    State(vault): State<Arc<Vault>>,
    Extension(peer): Extension<Peer>,
    Json(req): Json<wire::CommitRequest>,
) -> Answer<Json<wire::Committed>> {
    let device = device(&vault, &peer)?;
    if req.hostname.is_empty() || req.hostname.len() > 255 || req.paths.is_empty() || req.paths.len() > 1000 {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            "bad_snapshot",
            "hostname or paths empty or too long".into(),
        ));
    }
    let tree = BlobId::from_hex(&req.tree).map_err(|_| {
        Failure(StatusCode::BAD_REQUEST, "bad_id", format!("`{}` is not a blob id", req.tree))
    })?;
    if !lock(&vault.usage).snapshot(&vault.limits, &device, Instant::now()) {
        vault.event(
            &peer,
            "rate_limited",
            7,
            format!("snapshot refused: more than {} snapshots in an hour", vault.limits.snapshots_per_hour),
        );
        return Err(Failure(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_snapshots",
            format!("at most {} snapshots per hour", vault.limits.snapshots_per_hour),
        ));
    }
    let task_vault = vault.clone();
    let info = tokio::task::spawn_blocking(move || commit_blocking(&task_vault, &peer, &device, req, tree))
        .await??;
    Ok(Json(wire::Committed { snapshot: info }))
}

fn commit_blocking(
    vault: &Vault,
    peer: &Peer,
    device: &str,
    req: wire::CommitRequest,
    tree: BlobId,
) -> Answer<wire::SnapshotInfo> {
    let mut repo = lock(&vault.repo);
    repo.flush()?;
    let mut absent = Vec::new();
    mamori_vault::tree::referenced_blobs(&mut repo, &tree, &mut absent)?;
    if !absent.is_empty() {
        return Err(Failure(
            StatusCode::CONFLICT,
            "incomplete",
            format!(
                "{} blobs the snapshot refers to are not in the vault (first: {})",
                absent.len(),
                absent[0]
            ),
        ));
    }
    let previous = repo.snapshots()?.into_iter().rev().find(|(_, s)| s.device_id == device).map(|(_, s)| s);
    let (added_raw, added_stored) = lock(&vault.increments).remove(device).unwrap_or_default();
    let snapshot = Snapshot {
        // The vault's clock, never the client's: a client that back-dates snapshots must not
        // be able to take over the retention buckets of past days.
        time_ms: now_ms(),
        hostname: req.hostname,
        paths: req.paths,
        tree,
        device_id: device.to_string(),
        excludes: req.excludes,
        added_raw,
        added_stored,
    };
    let analysis = analysis::analyze(&mut repo, previous.as_ref(), &snapshot, &mut Samples::default())?;
    let name = repo.write_snapshot(&snapshot)?;
    drop(repo);
    let (suspicious, reasons) = (analysis.suspicious, analysis.reasons.clone());
    write_record(&vault.repo_root, &name, &snapshot, analysis)?;
    if suspicious {
        vault.event(
            peer,
            "suspicious_snapshot",
            10,
            format!("snapshot {name} of {} looks like ransomware: {}", snapshot.hostname, reasons.join("; ")),
        );
    } else {
        vault.event(peer, "snapshot_accepted", 1, format!("snapshot {name} of {}", snapshot.hostname));
    }
    Ok(info(&name, &snapshot, suspicious, reasons, false))
}

fn info(
    name: &str,
    s: &Snapshot,
    suspicious: bool,
    reasons: Vec<String>,
    cleared: bool,
) -> wire::SnapshotInfo {
    wire::SnapshotInfo {
        name: name.to_string(),
        time_ms: s.time_ms,
        hostname: s.hostname.clone(),
        device_id: s.device_id.clone(),
        paths: s.paths.clone(),
        tree: s.tree.to_hex(),
        suspicious,
        reasons,
        cleared,
        added_raw: s.added_raw,
        added_stored: s.added_stored,
    }
}

/// This device's snapshots with their flags, oldest first.
fn own_snapshots(vault: &Vault, device: &str) -> Answer<Vec<wire::SnapshotInfo>> {
    let ledger = ledger::read_records(&vault.repo_root)?;
    for problem in &ledger.problems {
        tracing::warn!("ledger: {}: {}", problem.path.display(), problem.error);
    }
    let records: HashMap<String, (SnapshotRecord, bool)> =
        ledger.records.into_iter().map(|(r, cleared)| (r.snapshot.clone(), (r, cleared.is_some()))).collect();
    let snapshots = lock(&vault.repo).snapshots()?;
    Ok(snapshots
        .into_iter()
        .filter(|(_, s)| s.device_id == device)
        .map(|(name, s)| {
            let (suspicious, reasons, cleared) = match records.get(&name) {
                Some((r, cleared)) => (r.suspicious, r.reasons.clone(), *cleared),
                None => (false, Vec::new(), false),
            };
            info(&name, &s, suspicious, reasons, cleared)
        })
        .collect())
}

async fn list(
    State(vault): State<Arc<Vault>>,
    Extension(peer): Extension<Peer>,
) -> Answer<Json<Vec<wire::SnapshotInfo>>> {
    let device = device(&vault, &peer)?;
    let task_vault = vault.clone();
    Ok(Json(tokio::task::spawn_blocking(move || own_snapshots(&task_vault, &device)).await??))
}

async fn show(
    State(vault): State<Arc<Vault>>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> Answer<Json<wire::SnapshotInfo>> {
    let device = device(&vault, &peer)?;
    let task_vault = vault.clone();
    let all = tokio::task::spawn_blocking(move || own_snapshots(&task_vault, &device)).await??;
    all.into_iter().find(|s| s.name == name).map(Json).ok_or_else(|| {
        Failure(StatusCode::NOT_FOUND, "no_snapshot", format!("this device has no snapshot {name}"))
    })
}

/// Everything else. Attempts to modify (DELETE, PUT, PATCH, unknown POSTs) are security events.
async fn refuse(
    State(vault): State<Arc<Vault>>,
    Extension(peer): Extension<Peer>,
    method: Method,
    uri: Uri,
) -> Failure {
    let modifying = method != Method::GET && method != Method::HEAD;
    if modifying {
        vault.event(
            &peer,
            "refused",
            7,
            format!("refused {method} {}: the vault does not delete or replace anything", uri.path()),
        );
        Failure(
            StatusCode::METHOD_NOT_ALLOWED,
            "refused",
            "the vault only adds; nothing can be deleted or replaced over the network".into(),
        )
    } else {
        Failure(StatusCode::NOT_FOUND, "not_found", format!("no route {}", uri.path()))
    }
}
