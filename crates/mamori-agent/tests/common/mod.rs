//! A small manager for the agent's tests: the real mamori-pki CA and TLS configuration (TLS 1.3,
//! optional client certificates with a revocation check), the real wire types, and the five
//! agent routes, recording what it receives. Knobs let a test make it fail or slow down.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hyper_util::rt::TokioIo;
use mamori_agent::{EnrollOptions, RunOptions};
use mamori_pki::tls::{self, ClientAuth};
use mamori_pki::{Ca, CertInfo};
use mamori_proto::{
    path, ApiError, BatchAck, EnrollRequest, EnrollResponse, EventBatch, Heartbeat, HeartbeatResponse,
    Policy, RenewRequest, RenewResponse,
};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::ServiceExt;

pub const TOKEN: &str = "test-enrollment-token";
/// A token the manager knows but has expired.
pub const EXPIRED_TOKEN: &str = "expired-enrollment-token";
pub const EXPIRED_MESSAGE: &str = "this enrollment token expired at 2020-01-01T00:00:00Z";
pub const MACHINE: &str = "test-machine-0001";

/// One event as the manager stored it.
#[derive(Debug, Clone)]
pub struct Received {
    pub device: String,
    pub seq: u64,
    pub kind: String,
    pub time_ms: i64,
    pub data: Value,
}

#[derive(Default)]
pub struct Recorded {
    pub enroll_bodies: Vec<String>,
    pub enrolls: Vec<EnrollRequest>,
    pub heartbeats: Vec<(String, String, Heartbeat)>,
    pub renewals: Vec<String>,
    pub policy_fetches: u32,
    pub event_requests: u32,
    pub events: Vec<Received>,
    /// Knobs.
    pub policy: Policy,
    pub fail_events: u32,
    pub events_delay: Duration,
    pub cert_validity: Option<Duration>,
    pub next_device: u32,
}

pub struct TestManager {
    pub url: String,
    pub fingerprint: String,
    pub ca: Arc<Ca>,
    pub rec: Arc<Mutex<Recorded>>,
    pub revoked: Arc<Mutex<HashSet<String>>>,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for TestManager {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Peer(Option<CertInfo>);

#[derive(Clone)]
struct App {
    ca: Arc<Ca>,
    rec: Arc<Mutex<Recorded>>,
}

fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(ApiError { error: code.into(), message: message.into() })).into_response()
}

/// The device id and certificate serial of an agent route's caller, or the refusal to send.
fn device_of(peer: &Peer) -> Result<(String, String), Box<Response>> {
    match &peer.0 {
        Some(info) => match &info.device_id {
            Some(id) => Ok((id.clone(), info.serial_hex.clone())),
            None => {
                Err(Box::new(api_error(StatusCode::FORBIDDEN, "no_device", "certificate names no device")))
            }
        },
        None => Err(Box::new(api_error(
            StatusCode::UNAUTHORIZED,
            "client_cert_required",
            "a client certificate is required",
        ))),
    }
}

async fn enroll(State(app): State<App>, body: String) -> Response {
    let req: EnrollRequest = match serde_json::from_str(&body) {
        Ok(r) => r,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
    };
    let (id, validity) = {
        let mut rec = app.rec.lock().unwrap();
        rec.enroll_bodies.push(body.clone());
        rec.enrolls.push(req.clone());
        if req.token == EXPIRED_TOKEN {
            return api_error(StatusCode::UNAUTHORIZED, "token_expired", EXPIRED_MESSAGE);
        }
        if req.token != TOKEN {
            return api_error(StatusCode::UNAUTHORIZED, "token_invalid", "unknown enrollment token");
        }
        rec.next_device += 1;
        (format!("dev-{}", rec.next_device), rec.cert_validity.unwrap_or(mamori_pki::DEFAULT_CLIENT_VALIDITY))
    };
    let issued = match app.ca.sign_csr(&req.csr_pem, &id, validity) {
        Ok(i) => i,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "bad_csr", &e.to_string()),
    };
    Json(EnrollResponse {
        device_id: id,
        cert_pem: issued.cert_pem,
        ca_pem: app.ca.cert_pem().to_string(),
        replaced: req.previous_device_id.into_iter().collect(),
    })
    .into_response()
}

async fn renew(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    Json(req): Json<RenewRequest>,
) -> Response {
    let (device, _) = match device_of(&peer) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let validity = app.rec.lock().unwrap().cert_validity.unwrap_or(mamori_pki::DEFAULT_CLIENT_VALIDITY);
    match app.ca.sign_csr(&req.csr_pem, &device, validity) {
        Ok(issued) => {
            app.rec.lock().unwrap().renewals.push(issued.info.serial_hex.clone());
            Json(RenewResponse { cert_pem: issued.cert_pem }).into_response()
        }
        Err(e) => api_error(StatusCode::BAD_REQUEST, "bad_csr", &e.to_string()),
    }
}

async fn heartbeat(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    Json(hb): Json<Heartbeat>,
) -> Response {
    let (device, serial) = match device_of(&peer) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let mut rec = app.rec.lock().unwrap();
    rec.heartbeats.push((device, serial, hb));
    Json(HeartbeatResponse { server_time_ms: 0, policy_version: rec.policy.version, commands: Vec::new() })
        .into_response()
}

async fn policy(State(app): State<App>, Extension(peer): Extension<Peer>) -> Response {
    if let Err(r) = device_of(&peer) {
        return *r;
    }
    let mut rec = app.rec.lock().unwrap();
    rec.policy_fetches += 1;
    Json(rec.policy.clone()).into_response()
}

async fn events(State(app): State<App>, Extension(peer): Extension<Peer>, body: String) -> Response {
    let (device, _) = match device_of(&peer) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let delay = {
        let mut rec = app.rec.lock().unwrap();
        rec.event_requests += 1;
        if rec.fail_events > 0 {
            rec.fail_events -= 1;
            return api_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "try again later");
        }
        rec.events_delay
    };
    let batch: EventBatch = match serde_json::from_str(&body) {
        Ok(b) => b,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
    };
    tokio::time::sleep(delay).await;
    let mut rec = app.rec.lock().unwrap();
    let n = batch.events.len() as u64;
    for e in batch.events {
        let data = serde_json::from_str(e.data.get()).unwrap();
        rec.events.push(Received {
            device: device.clone(),
            seq: e.seq,
            kind: e.kind,
            time_ms: e.time_ms,
            data,
        });
    }
    Json(BatchAck { stored: n, duplicates: 0 }).into_response()
}

impl TestManager {
    pub async fn start() -> TestManager {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = Ca::load_or_create(dir.path(), "mamori test CA").unwrap();
        let ca = Arc::new(ca);
        let server =
            ca.issue_server(&["localhost".into(), "127.0.0.1".into()], Duration::from_secs(3600)).unwrap();
        let revoked: Arc<Mutex<HashSet<String>>> = Arc::default();
        let check = revoked.clone();
        let config = tls::server_config(
            ca.cert_der(),
            &server,
            ClientAuth::Optional,
            Arc::new(move |info: &CertInfo| check.lock().unwrap().contains(&info.serial_hex)),
        )
        .unwrap();
        let rec: Arc<Mutex<Recorded>> = Arc::default();
        let app = App { ca: ca.clone(), rec: rec.clone() };
        let router = Router::new()
            .route(path::ENROLL, post(enroll))
            .route(path::RENEW, post(renew))
            .route(path::HEARTBEAT, post(heartbeat))
            .route(path::POLICY, get(policy))
            .route(path::EVENTS, post(events))
            .with_state(app);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                let router = router.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let peer = Peer(tls::peer_info(tls.get_ref().1));
                    let svc =
                        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                            req.extensions_mut().insert(peer.clone());
                            router.clone().oneshot(req.map(axum::body::Body::new))
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        TestManager {
            url: format!("https://127.0.0.1:{}", addr.port()),
            fingerprint: ca.fingerprint(),
            ca,
            rec,
            revoked,
            task,
            _dir: dir,
        }
    }

    pub fn enroll_options(&self) -> EnrollOptions {
        EnrollOptions {
            server_url: self.url.clone(),
            token: TOKEN.into(),
            ca_fingerprint: self.fingerprint.clone(),
            force: false,
            machine_id: Some(MACHINE.into()),
            hostname: Some("ward-3-pc".into()),
        }
    }

    pub fn rec(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.rec.lock().unwrap()
    }

    pub fn seqs_of(&self, device: &str) -> HashSet<u64> {
        self.rec().events.iter().filter(|e| e.device == device).map(|e| e.seq).collect()
    }

    /// Events of one kind as the real manager would store them: delivery is at-least-once (a
    /// stop between send and ack resends the batch), so a repeated (device, seq) counts once.
    pub fn events_of_kind(&self, kind: &str) -> Vec<Received> {
        let mut seen = HashSet::new();
        self.rec()
            .events
            .iter()
            .filter(|e| e.kind == kind && seen.insert((e.device.clone(), e.seq)))
            .cloned()
            .collect()
    }
}

/// Run options for tests: fast heartbeats, the test machine id.
pub fn run_options() -> RunOptions {
    RunOptions {
        heartbeat_override: Some(Duration::from_millis(200)),
        machine_id: Some(MACHINE.into()),
        ..RunOptions::default()
    }
}

pub struct RunningAgent {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), mamori_agent::Error>>,
}

impl RunningAgent {
    pub fn start(dir: &Path, opts: RunOptions) -> RunningAgent {
        let (stop, rx) = watch::channel(false);
        let dir: PathBuf = dir.to_path_buf();
        let task = tokio::spawn(async move { mamori_agent::run(&dir, opts, rx).await });
        RunningAgent { stop, task }
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Asks the agent to stop and returns what `run` returned; fails the test on a hang.
    pub async fn stop(self) -> Result<(), mamori_agent::Error> {
        self.stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the agent did not stop within 10 s")
            .expect("the agent task panicked")
    }
}

/// Polls `cond` every 25 ms until it holds; false after `limit`.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The EICAR test file, assembled at run time so that no file in the repository holds it.
pub fn eicar() -> Vec<u8> {
    let mut v = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STAN".to_vec();
    v.extend_from_slice(br"DARD-ANTIVIRUS-TEST-FILE!$H+H*");
    v
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Serial of the certificate in `dir/device.crt`.
pub fn saved_serial(dir: &Path) -> String {
    let pem = std::fs::read_to_string(dir.join("device.crt")).unwrap();
    mamori_pki::cert_info(&mamori_pki::pem_to_der(&pem).unwrap()).unwrap().serial_hex
}
