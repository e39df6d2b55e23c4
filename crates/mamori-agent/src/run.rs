//! `mamori agent run`: heartbeats, renewal, policy, event shipping and scheduled scans.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use mamori_pki::{CertInfo, DeviceKey, KeyAndCert};
use mamori_proto::{
    kind, path, AgentCommand, BatchAck, DetectionKind, EventBatch, Heartbeat, HeartbeatResponse, Policy,
    RenewRequest, RenewResponse, ResponseActionKind, ResponsePolicy, ScheduledScan, SpooledEvent, WireEvent,
};
use mamori_spool::Spool;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Notify};

use crate::client::{key_matches_cert, verify_issued, ManagerClient};
use crate::commands::Commands;
use crate::isolation::IsoRequest;
use crate::response::MALWARE_SEVERITY;
use crate::scan::{self, Outgoing};
use crate::state::{self, AgentConfig, RuntimeStatus, Schedule};
use crate::{Backoff, Error, AGENT_VERSION};

/// How often the shipper looks at the spool when nothing woke it.
const SHIP_POLL: Duration = Duration::from_secs(1);
/// Bounds on the policy's heartbeat interval: a typo must neither flood the manager nor make the
/// agent look dead.
const MIN_HEARTBEAT: Duration = Duration::from_secs(5);
const MAX_HEARTBEAT: Duration = Duration::from_secs(3600);
/// Shortest time between two runs of one scheduled scan, whatever the policy says: `every_secs`
/// of 0 would otherwise mean scanning without pause.
const MIN_SCAN_INTERVAL_SECS: u64 = 60;
/// Most events the scan side gathers into one spool append (one fsync).
const MAX_APPEND_BATCH: usize = 512;
/// How long `run` waits for a spool lock held by a short-lived process (`status`, the tail of a
/// previous `run` in the same process).
const SPOOL_LOCK_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Heartbeat interval instead of the policy's (tests).
    pub heartbeat_override: Option<Duration>,
    /// Spool size bound and sync mode.
    pub spool: mamori_spool::Options,
    /// Most events in one request to the manager.
    pub batch_max_events: usize,
    /// Most bytes (kind + payload) in one request to the manager; a single larger event is still
    /// sent on its own.
    pub batch_max_bytes: usize,
    /// Renew the certificate once this fraction of its lifetime has passed.
    pub renew_fraction: f64,
    /// The explicit machine id given to `enroll`, for hosts without `/etc/machine-id`. When
    /// `None`, the host's machine id is read and compared with the one enrolled (unless the
    /// agent was enrolled with an explicit id, which then cannot be checked).
    pub machine_id: Option<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            heartbeat_override: None,
            spool: mamori_spool::Options::default(),
            batch_max_events: 1000,
            batch_max_bytes: 1 << 20,
            renew_fraction: 2.0 / 3.0,
            machine_id: None,
        }
    }
}

impl RunOptions {
    fn validate(&self) -> Result<(), Error> {
        if self.batch_max_events == 0 || self.batch_max_bytes == 0 {
            return Err(Error::InvalidOptions("batch limits must be at least 1".into()));
        }
        if !(self.renew_fraction > 0.0 && self.renew_fraction < 1.0) {
            return Err(Error::InvalidOptions(format!(
                "renew_fraction must be between 0 and 1 (exclusive), got {}",
                self.renew_fraction
            )));
        }
        if self.heartbeat_override.is_some_and(|d| d.is_zero()) {
            return Err(Error::InvalidOptions("the heartbeat interval must not be zero".into()));
        }
        Ok(())
    }
}

/// Runs the agent in `dir` until `shutdown` becomes true (or its sender is dropped).
///
/// Fails at start when the host is not enrolled, the certificate has expired, the machine id
/// changed or the spool is in use; afterwards only a local failure (the spool cannot be read or
/// written) ends it with an error. On shutdown the spool is flushed and `Ok` returned.
pub async fn run(dir: &Path, opts: RunOptions, shutdown: watch::Receiver<bool>) -> Result<(), Error> {
    opts.validate()?;
    // Loaded first so that a mistyped directory is reported as "not enrolled", not created.
    let identity = Identity::load(dir, &opts)?;
    state::ensure_private_dir(dir)?;
    let spool = open_spool(&dir.join(state::SPOOL_DIR), opts.spool.clone()).await?;
    let policy = match state::read_json::<Policy>(&dir.join(state::POLICY_FILE)) {
        Ok(p) => p.unwrap_or_default(),
        Err(e) => {
            // The manager will send the policy again at the first heartbeat.
            tracing::warn!("ignoring the saved policy: {e}");
            Policy::default()
        }
    };
    let client = ManagerClient::new(
        &identity.config.server_url,
        &identity.config.ca_fingerprint,
        Some(&KeyAndCert {
            key_pem: identity.key.key_pem().to_string(),
            cert_pem: identity.cert_pem.clone(),
        }),
    )?;
    let (iso_tx, iso_rx) = mpsc::channel::<IsoRequest>(64);
    let (command_tx, command_rx) = mpsc::channel::<AgentCommand>(64);
    let agent = Agent {
        iso_tx,
        command_tx,
        isolated: AtomicBool::new(false),
        commands: Mutex::new(Commands::load(dir)),
        dir: dir.to_path_buf(),
        opts,
        client: RwLock::new(client),
        cert: Mutex::new(identity.cert),
        config: identity.config,
        key: identity.key,
        ca_der: identity.ca_der,
        spool: Arc::new(Mutex::new(spool)),
        notify: Notify::new(),
        status: Mutex::new(
            state::read_json(&dir.join(state::STATUS_FILE)).ok().flatten().unwrap_or_default(),
        ),
    };
    tracing::info!(device_id = %agent.config.device_id, server = %agent.config.server_url, "agent starting");

    let (pending, dropped) = agent.spool_op(|s| Ok((s.pending(), s.dropped_total()))).await?;
    agent
        .append(vec![Outgoing {
            kind: kind::AGENT_STARTED,
            data: agent_event(
                "agent_started",
                &agent.config,
                json!({"spool": {"pending": pending, "dropped_total": dropped}, "policy": {"version": policy.version}}),
            ),
        }])
        .await?;

    let (policy_tx, policy_rx) = watch::channel(Arc::new(policy));
    let result = tokio::try_join!(
        agent.heartbeat_loop(&policy_tx, shutdown.clone()),
        agent.ship_loop(shutdown.clone()),
        agent.scheduler_loop(policy_rx.clone(), shutdown.clone()),
        agent.fim_loop(policy_rx.clone(), shutdown.clone()),
        agent.logs_loop(policy_rx.clone(), shutdown.clone()),
        agent.backup_loop(policy_rx.clone(), shutdown.clone()),
        agent.command_loop(command_rx, policy_rx.clone(), shutdown.clone()),
        agent.isolation_loop(iso_rx, policy_rx, shutdown.clone()),
    );
    let flushed = agent.spool_op(|s| s.flush()).await;
    agent.save_status().await;
    result?;
    flushed?;
    tracing::info!("agent stopped");
    Ok(())
}

/// What `run` loads from the state directory before anything else.
struct Identity {
    config: AgentConfig,
    key: DeviceKey,
    cert_pem: String,
    cert: CertInfo,
    ca_der: Vec<u8>,
}

impl Identity {
    fn load(dir: &Path, opts: &RunOptions) -> Result<Identity, Error> {
        let config = state::load_config(dir)?;
        let key = DeviceKey::load(&dir.join(state::KEY_FILE))?;
        let cert_path = dir.join(state::CERT_FILE);
        let cert_pem = state::read_text(&cert_path)?;
        let bad = |path: &Path, reason: String| Error::BadState { path: path.to_path_buf(), reason };
        let cert_der = mamori_pki::pem_to_der(&cert_pem).map_err(|e| bad(&cert_path, e.to_string()))?;
        let cert = mamori_pki::cert_info(&cert_der).map_err(|e| bad(&cert_path, e.to_string()))?;
        let ca_path = dir.join(state::CA_FILE);
        let ca_der =
            mamori_pki::pem_to_der(&state::read_text(&ca_path)?).map_err(|e| bad(&ca_path, e.to_string()))?;
        if mamori_pki::fingerprint_of_der(&ca_der) != config.ca_fingerprint {
            return Err(bad(
                &ca_path,
                "does not match the CA fingerprint in agent.json; re-enroll with --force".into(),
            ));
        }
        if let Err(reason) = key_matches_cert(&cert_der, &key) {
            return Err(bad(
                &cert_path,
                format!("does not belong to device.key ({reason}; an interrupted re-enrollment?); re-enroll with --force"),
            ));
        }
        if cert.not_after <= SystemTime::now() {
            return Err(Error::CertificateExpired { not_after: state::rfc3339(cert.not_after) });
        }
        let current = match (&opts.machine_id, config.machine_id_explicit) {
            (Some(id), _) => Some(state::explicit_machine_id(id)?),
            (None, false) => Some(state::host_machine_id(&state::default_machine_id_files())?),
            (None, true) => None,
        };
        if current.is_some_and(|c| c != config.machine_id) {
            return Err(Error::MachineIdChanged);
        }
        Ok(Identity { config, key, cert_pem, cert, ca_der })
    }
}

async fn open_spool(dir: &Path, options: mamori_spool::Options) -> Result<Spool, Error> {
    let deadline = tokio::time::Instant::now() + SPOOL_LOCK_WAIT;
    loop {
        let d = dir.to_path_buf();
        let o = options.clone();
        let opened = tokio::task::spawn_blocking(move || Spool::open(&d, o))
            .await
            .map_err(|e| Error::Internal(format!("opening the spool: {e}")))?;
        match opened {
            Ok(s) => return Ok(s),
            Err(mamori_spool::Error::Locked(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(mamori_spool::Error::Locked(_)) => {
                return Err(Error::Busy(dir.parent().unwrap_or(dir).to_path_buf()))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Resolves when `rx` says stop, or when nobody can tell us anything any more.
/// Waits until `wait` has passed (forever when None) or the policy changed; false when the
/// agent is stopping instead. The scan and backup schedulers wait the same way.
pub(crate) async fn wait_due_or_changed(
    wait: Option<Duration>,
    policy_rx: &mut watch::Receiver<Arc<Policy>>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        _ = stopped(stop) => false,
        changed = policy_rx.changed() => if changed.is_err() {
            // The heartbeat side is gone, which happens only when stopping.
            stopped(stop).await;
            false
        } else {
            true
        },
        _ = async {
            match wait {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        } => true,
    }
}

pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Sleeps for `d`, or returns true early when told to stop.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = stopped(stop) => true,
        _ = tokio::time::sleep(d) => false,
    }
}

fn agent_event(action: &str, config: &AgentConfig, mamori: Value) -> Value {
    json!({
        "@timestamp": state::rfc3339(SystemTime::now()),
        "event": {"kind": "event", "action": action, "module": "mamori", "dataset": "mamori.agent"},
        "agent": {"id": config.device_id, "type": "mamori", "version": AGENT_VERSION},
        "host": {"hostname": config.hostname.clone().unwrap_or_else(state::system_hostname)},
        "mamori": mamori,
    })
}

/// Spool payload → wire event. Our own events are [`SpooledEvent`]s; the spool's drop notices
/// carry their JSON directly and get the time they are sent.
fn to_wire(e: mamori_spool::Event) -> WireEvent {
    if let Ok(s) = serde_json::from_slice::<SpooledEvent>(&e.payload) {
        return WireEvent { seq: e.seq, kind: e.kind, time_ms: s.time_ms, data: s.data };
    }
    let len = e.payload.len();
    let data =
        String::from_utf8(e.payload).ok().and_then(|t| RawValue::from_string(t).ok()).unwrap_or_else(|| {
            // Never drop an event silently: send what we know about it instead.
            let v = json!({"mamori": {"spool": {"undecodable_payload_bytes": len}}});
            serde_json::value::to_raw_value(&v).unwrap_or_else(|_| RawValue::NULL.to_owned())
        });
    WireEvent { seq: e.seq, kind: e.kind, time_ms: state::now_ms(), data }
}

pub(crate) struct Agent {
    pub(crate) dir: PathBuf,
    opts: RunOptions,
    pub(crate) config: AgentConfig,
    pub(crate) key: DeviceKey,
    ca_der: Vec<u8>,
    client: RwLock<ManagerClient>,
    cert: Mutex<CertInfo>,
    spool: Arc<Mutex<Spool>>,
    /// Wakes the shipper when events are appended.
    notify: Notify,
    status: Mutex<RuntimeStatus>,
    /// Requests for the isolation task (detections, the manager's commands).
    pub(crate) iso_tx: mpsc::Sender<IsoRequest>,
    /// The manager's commands other than isolation (scan, quarantine restore and delete).
    pub(crate) command_tx: mpsc::Sender<AgentCommand>,
    /// The host is isolated (as recorded by mamori-isolate), for heartbeats.
    pub(crate) isolated: AtomicBool,
    pub(crate) commands: Mutex<Commands>,
}

impl Agent {
    pub(crate) fn client(&self) -> ManagerClient {
        // A poisoned lock still holds a usable client: the writer only swaps whole values.
        match self.client.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn cert(&self) -> CertInfo {
        match self.cert.lock() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Runs `f` on the spool on a blocking thread (appends and acks fsync).
    async fn spool_op<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Spool) -> Result<T, mamori_spool::Error> + Send + 'static,
    {
        let spool = self.spool.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = spool.lock().map_err(|_| Error::Internal("spool lock poisoned".into()))?;
            f(&mut guard).map_err(Error::from)
        })
        .await
        .map_err(|e| Error::Internal(format!("spool task: {e}")))?
    }

    /// Appends events (one write, one fsync) and wakes the shipper.
    pub(crate) async fn append(&self, events: Vec<Outgoing>) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        let time_ms = state::now_ms();
        let mut encoded: Vec<(&'static str, Vec<u8>)> = Vec::with_capacity(events.len());
        for o in events {
            let data =
                serde_json::value::to_raw_value(&o.data).map_err(|e| Error::Internal(e.to_string()))?;
            let payload = serde_json::to_vec(&SpooledEvent { time_ms, data })
                .map_err(|e| Error::Internal(e.to_string()))?;
            encoded.push((o.kind, payload));
        }
        self.spool_op(move |s| {
            let refs: Vec<(&str, &[u8])> = encoded.iter().map(|(k, p)| (*k, p.as_slice())).collect();
            match s.append_batch(&refs) {
                Ok(_) => {}
                Err(mamori_spool::Error::TooLarge { .. }) => {
                    // Too big together; one by one, replacing any single event the spool cannot
                    // hold by a note that it existed.
                    for (kind, payload) in &encoded {
                        match s.append(kind, payload) {
                            Ok(_) => {}
                            Err(mamori_spool::Error::TooLarge { size, .. }) => {
                                tracing::error!(kind, size, "event too large for the spool; sending a note instead");
                                let note = json!({"time_ms": time_ms, "data": {
                                    "event": {"kind": "event", "action": "event_too_large", "dataset": "mamori.agent"},
                                    "mamori": {"spool": {"original_kind": kind, "bytes": size}},
                                }});
                                s.append(kind, note.to_string().as_bytes())?;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) => return Err(e),
            }
            // A no-op with Sync::EveryAppend; with Sync::Batch it makes the events visible to peek.
            s.flush()
        })
        .await?;
        self.notify.notify_one();
        Ok(())
    }

    fn record_contact(&self, error: Option<&Error>) {
        let mut st = match self.status.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        match error {
            None => {
                st.last_heartbeat_ms = Some(state::now_ms());
                st.last_error = None;
            }
            Some(e) => st.last_error = Some(e.to_string()),
        }
    }

    /// Writes `status.json` for `mamori agent status`. Best effort: it is informational.
    async fn save_status(&self) {
        let counts = self.spool_op(|s| Ok((s.pending(), s.dropped_total()))).await;
        let snapshot = {
            let mut st = match self.status.lock() {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            };
            if let Ok((pending, dropped)) = counts {
                st.spool_pending = pending;
                st.spool_dropped_total = dropped;
            }
            st.updated_ms = state::now_ms();
            st.clone()
        };
        if let Err(e) = state::write_json(&self.dir.join(state::STATUS_FILE), &snapshot) {
            tracing::debug!("could not write the status file: {e}");
        }
    }

    // ---- heartbeat, renewal, policy ----

    async fn heartbeat_loop(
        &self,
        policy_tx: &watch::Sender<Arc<Policy>>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let mut backoff = Backoff::new();
        loop {
            let result = tokio::select! {
                _ = stopped(&mut stop) => return Ok(()),
                r = self.heartbeat_once(policy_tx) => r,
            };
            let wait = match result {
                Ok(()) => {
                    backoff.reset();
                    self.record_contact(None);
                    let policy = policy_tx.borrow().clone();
                    self.opts.heartbeat_override.unwrap_or_else(|| {
                        Duration::from_secs(policy.heartbeat_secs).clamp(MIN_HEARTBEAT, MAX_HEARTBEAT)
                    })
                }
                Err(e) if e.is_remote() => {
                    let wait = backoff.next_delay();
                    match &e {
                        Error::CertificateRefused { .. } | Error::CaMismatch { .. } => {
                            tracing::error!("heartbeat failed, retrying in {wait:?}: {e}")
                        }
                        _ => tracing::warn!("heartbeat failed, retrying in {wait:?}: {e}"),
                    }
                    self.record_contact(Some(&e));
                    wait
                }
                Err(e) => return Err(e),
            };
            self.save_status().await;
            if sleep_or_stop(wait, &mut stop).await {
                return Ok(());
            }
        }
    }

    async fn heartbeat_once(&self, policy_tx: &watch::Sender<Arc<Policy>>) -> Result<(), Error> {
        if self.renewal_due() {
            match self.renew().await {
                Ok(info) => {
                    tracing::info!(serial = %info.serial_hex, not_after = %state::rfc3339(info.not_after), "certificate renewed")
                }
                // The current certificate still works; the next heartbeat tries again.
                Err(e) => tracing::warn!("certificate renewal failed: {e}"),
            }
        }
        let (pending, dropped) = self.spool_op(|s| Ok((s.pending(), s.dropped_total()))).await?;
        let current = policy_tx.borrow().clone();
        let beat = Heartbeat {
            agent_version: AGENT_VERSION.to_string(),
            hostname: self.config.hostname.clone().unwrap_or_else(state::system_hostname),
            policy_version: current.version,
            spool_pending: pending,
            spool_dropped_total: dropped,
            isolated: self.isolated.load(Ordering::Relaxed),
        };
        let client = self.client();
        let resp: HeartbeatResponse = client.post_json(path::HEARTBEAT, &beat).await?;
        // The policy first: a command (isolate) is carried out under the policy (allow-list) the
        // admin set before giving it.
        let updated = if resp.policy_version != current.version {
            match client.get_json::<Policy>(path::POLICY).await {
                Ok(policy) => self.apply_policy(policy, &current, policy_tx).await,
                Err(e) => Err(e),
            }
        } else {
            Ok(())
        };
        self.take_commands(resp.commands).await;
        updated
    }

    async fn apply_policy(
        &self,
        policy: Policy,
        current: &Policy,
        policy_tx: &watch::Sender<Arc<Policy>>,
    ) -> Result<(), Error> {
        if policy == *current {
            return Ok(());
        }
        let mut names = std::collections::HashSet::new();
        for s in &policy.scans {
            if !names.insert(s.name.as_str()) {
                tracing::warn!(scan = %s.name, "the policy names two scheduled scans alike; they share one schedule");
            }
        }
        // Applied even if it cannot be saved: the manager's word counts, the file only helps
        // scans run after a restart while the manager is away.
        if let Err(e) = state::write_json(&self.dir.join(state::POLICY_FILE), &policy) {
            tracing::error!("could not save the policy: {e}");
        }
        let data = agent_event(
            "policy_applied",
            &self.config,
            json!({"policy": {
                "version": policy.version,
                "previous_version": current.version,
                "heartbeat_secs": policy.heartbeat_secs,
                "scans": policy.scans.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            }}),
        );
        tracing::info!(version = policy.version, previous = current.version, "policy applied");
        policy_tx.send_replace(Arc::new(policy));
        self.append(vec![Outgoing { kind: kind::POLICY_APPLIED, data }]).await
    }

    fn renewal_due(&self) -> bool {
        let cert = self.cert();
        let Ok(lifetime) = cert.not_after.duration_since(cert.not_before) else {
            return true;
        };
        let renew_at = cert.not_before + lifetime.mul_f64(self.opts.renew_fraction);
        SystemTime::now() >= renew_at
    }

    async fn renew(&self) -> Result<CertInfo, Error> {
        let csr_pem = self.key.csr_pem(&self.config.device_id)?;
        let resp: RenewResponse = self.client().post_json(path::RENEW, &RenewRequest { csr_pem }).await?;
        let info = verify_issued(
            path::RENEW,
            &resp.cert_pem,
            &self.key,
            &self.ca_der,
            Some(&self.config.device_id),
        )?;
        let client = ManagerClient::new(
            &self.config.server_url,
            &self.config.ca_fingerprint,
            Some(&KeyAndCert { key_pem: self.key.key_pem().to_string(), cert_pem: resp.cert_pem.clone() }),
        )?;
        state::write_atomic(&self.dir.join(state::CERT_FILE), resp.cert_pem.as_bytes())?;
        match self.client.write() {
            Ok(mut c) => *c = client,
            Err(p) => *p.into_inner() = client,
        }
        match self.cert.lock() {
            Ok(mut c) => *c = info.clone(),
            Err(p) => *p.into_inner() = info.clone(),
        }
        Ok(info)
    }

    // ---- shipping ----

    async fn ship_loop(&self, mut stop: watch::Receiver<bool>) -> Result<(), Error> {
        let mut backoff = Backoff::new();
        let mut max_events = self.opts.batch_max_events;
        let mut max_bytes = self.opts.batch_max_bytes;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let batch = self.spool_op(move |s| s.peek(max_events, max_bytes)).await?;
            let Some(last) = batch.last().map(|e| e.seq) else {
                tokio::select! {
                    _ = stopped(&mut stop) => return Ok(()),
                    _ = self.notify.notified() => {}
                    _ = tokio::time::sleep(SHIP_POLL) => {}
                }
                continue;
            };
            let count = batch.len();
            let body = EventBatch { events: batch.into_iter().map(to_wire).collect() };
            let body = serde_json::to_vec(&body).map_err(|e| Error::Internal(e.to_string()))?;
            let client = self.client();
            let sent = tokio::select! {
                _ = stopped(&mut stop) => return Ok(()),
                r = client.post_bytes::<BatchAck>(path::EVENTS, body) => r,
            };
            match sent {
                Ok(ack) => {
                    tracing::debug!(
                        count,
                        last,
                        stored = ack.stored,
                        duplicates = ack.duplicates,
                        "events delivered"
                    );
                    self.spool_op(move |s| s.ack(last)).await?;
                    backoff.reset();
                    max_events = self.opts.batch_max_events;
                    max_bytes = self.opts.batch_max_bytes;
                }
                Err(Error::Api { status: 413, .. }) if count > 1 => {
                    // The manager's body limit is below ours: send smaller batches, at once.
                    max_events = (count / 2).max(1);
                    max_bytes = (max_bytes / 2).max(1);
                    tracing::warn!(
                        max_events,
                        "the manager refused a batch as too large; sending smaller batches"
                    );
                }
                Err(e) if e.is_remote() => {
                    let wait = backoff.next_delay();
                    tracing::warn!(count, "sending events failed, retrying in {wait:?}: {e}");
                    if sleep_or_stop(wait, &mut stop).await {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    // ---- scheduled scans ----

    async fn scheduler_loop(
        &self,
        mut policy_rx: watch::Receiver<Arc<Policy>>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let schedule_path = self.dir.join(state::SCHEDULE_FILE);
        let mut schedule: Schedule = match state::read_json(&schedule_path) {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                tracing::warn!("ignoring the saved scan schedule (scans may run early once): {e}");
                Schedule::default()
            }
        };
        loop {
            let policy = policy_rx.borrow_and_update().clone();
            let now = state::now_ms();
            let next =
                policy.scans.iter().map(|s| (s, due_ms(&schedule, s, now))).min_by_key(|(_, due)| *due);
            match next {
                Some((scan, due)) if due <= now => {
                    let scan = scan.clone();
                    if !self.run_scan(&scan, &policy.response, &mut stop).await? {
                        return Ok(());
                    }
                    schedule.last_end_ms.insert(scan.name.clone(), state::now_ms());
                    if let Err(e) = state::write_json(&schedule_path, &schedule) {
                        tracing::error!("could not save the scan schedule: {e}");
                    }
                }
                other => {
                    let wait =
                        other.map(|(_, due)| Duration::from_millis(u64::try_from(due - now).unwrap_or(0)));
                    if !wait_due_or_changed(wait, &mut policy_rx, &mut stop).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Runs one scheduled scan; false when stopped before it finished (it is then not counted
    /// as run, so it runs again after a restart).
    async fn run_scan(
        &self,
        scan: &ScheduledScan,
        response: &ResponsePolicy,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<bool, Error> {
        tracing::info!(scan = %scan.name, paths = ?scan.paths, "scheduled scan starting");
        let mut run = self.start_scan(scan, response, format!("scheduled scan {:?}", scan.name), None);
        loop {
            let batch = tokio::select! {
                _ = stopped(stop) => return Ok(false),
                b = run.next_batch() => b,
            };
            let Some(batch) = batch else { break };
            self.take_scan_batch(&mut run, batch).await?;
        }
        self.end_scan(&run).await?;
        tracing::info!(scan = %scan.name, "scheduled scan finished");
        Ok(true)
    }

    /// Starts `scan` on a thread of its own; its events are then fed to
    /// [`Agent::take_scan_batch`] and its end to [`Agent::end_scan`] (scheduled scans and the
    /// manager's scan command go the same way).
    ///
    /// Files with findings are quarantined when the scan asks for it (`quarantine`) or the
    /// policy's response does (`response.quarantine_malware`); `response.dry_run` only reports.
    /// `described` names the scan in isolation reasons; `command` is the manager's command id
    /// that ordered it, added to its events as `mamori.scheduled_scan.command_id`.
    pub(crate) fn start_scan(
        &self,
        scan: &ScheduledScan,
        response: &ResponsePolicy,
        described: String,
        command: Option<String>,
    ) -> RunningScan {
        let malware_actions = response.actions_for(DetectionKind::Malware, MALWARE_SEVERITY);
        let quarantine = (scan.quarantine || malware_actions.contains(&ResponseActionKind::Quarantine))
            .then_some(response.dry_run);
        let isolate_on_finding = malware_actions.contains(&ResponseActionKind::Isolate);
        let (tx, rx) = mpsc::channel::<Vec<Outgoing>>(64);
        let agent_dir = self.dir.clone();
        let job = scan.clone();
        // A plain thread, not spawn_blocking: a walk cannot be interrupted, and a runtime waits
        // for its blocking tasks when it shuts down, so a long scan would hold up the process
        // exit after a stop. This thread just finds nobody listening and ends by itself.
        let spawned = std::thread::Builder::new().name("mamori-scan".into()).spawn(move || {
            let emit = |batch: Vec<Outgoing>| tx.blocking_send(batch).is_ok();
            scan::execute(&job, &agent_dir, quarantine, &emit);
        });
        if let Err(e) = spawned {
            tracing::error!(scan = %scan.name, "could not start the scan thread: {e}");
        }
        RunningScan { name: scan.name.clone(), described, command, rx, isolate_on_finding, summary: None }
    }

    /// Spools a batch of a running scan's events, and asks for the host's isolation at its first
    /// finding when the response policy says so.
    pub(crate) async fn take_scan_batch(
        &self,
        run: &mut RunningScan,
        mut batch: Vec<Outgoing>,
    ) -> Result<(), Error> {
        if let Some(id) = &run.command {
            for o in &mut batch {
                if let Some(s) = o.data.pointer_mut("/mamori/scheduled_scan").and_then(Value::as_object_mut) {
                    s.insert("command_id".into(), json!(id));
                }
            }
        }
        if let Some(s) = batch.iter().find(|o| o.kind == kind::SCAN_SUMMARY) {
            run.summary = Some(s.data.clone());
        }
        let finding =
            batch.iter().find(|o| o.kind == kind::SCAN_FINDING).map(|o| o.data["file"]["path"].clone());
        self.append(batch).await?;
        if let (true, Some(path)) = (run.isolate_on_finding, finding) {
            // Once per run: the first finding decides; the isolation task ignores repeats.
            run.isolate_on_finding = false;
            let request = IsoRequest::Isolate {
                trigger: "malware".into(),
                reason: format!("{} found malware in {}", run.described, path.as_str().unwrap_or("?")),
                command: None,
            };
            if self.iso_tx.send(request).await.is_err() {
                tracing::error!("the isolation task is gone; the host could not be isolated");
            }
        }
        Ok(())
    }

    /// After the last batch: a scan whose thread ended without a summary is reported.
    pub(crate) async fn end_scan(&self, run: &RunningScan) -> Result<(), Error> {
        if run.summary.is_some() {
            return Ok(());
        }
        let mut scheduled_scan = json!({"name": run.name});
        if let Some(id) = &run.command {
            scheduled_scan["command_id"] = json!(id);
        }
        let data = json!({
            "@timestamp": state::rfc3339(SystemTime::now()),
            "event": {"kind": "event", "action": "scan_error", "outcome": "failure", "dataset": "mamori.scan"},
            "error": {"message": "the scan ended without a summary (its thread failed); see the agent log"},
            "mamori": {"scheduled_scan": scheduled_scan},
        });
        self.append(vec![Outgoing { kind: kind::SCAN_PROBLEM, data }]).await
    }
}

/// A scan running on its own thread ([`Agent::start_scan`]).
pub(crate) struct RunningScan {
    name: String,
    described: String,
    command: Option<String>,
    rx: mpsc::Receiver<Vec<Outgoing>>,
    isolate_on_finding: bool,
    /// The `scan.summary` data, once it came.
    pub summary: Option<Value>,
}

impl RunningScan {
    /// The scan's next events (what is already waiting, up to one spool append's worth), or
    /// `None` once it ended. Cancel-safe: nothing is lost when another branch of a select wins.
    pub(crate) async fn next_batch(&mut self) -> Option<Vec<Outgoing>> {
        let mut batch = self.rx.recv().await?;
        while batch.len() < MAX_APPEND_BATCH {
            match self.rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        Some(batch)
    }
}

/// When `scan` is next due (Unix ms): at once if it never ran, else `every_secs` after its last
/// end. A last end in the future (the clock was set back) counts as now, so a clock fix cannot
/// postpone scans indefinitely.
fn due_ms(schedule: &Schedule, scan: &ScheduledScan, now: i64) -> i64 {
    match schedule.last_end_ms.get(&scan.name) {
        None => i64::MIN,
        Some(&last) => {
            let every = scan.every_secs.max(MIN_SCAN_INTERVAL_SECS);
            let every_ms = i64::try_from(every.saturating_mul(1000)).unwrap_or(i64::MAX);
            last.min(now).saturating_add(every_ms)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(name: &str, every_secs: u64) -> ScheduledScan {
        ScheduledScan {
            name: name.into(),
            paths: vec!["/x".into()],
            every_secs,
            rules: vec![],
            hashes: vec![],
            exclude: vec![],
            quarantine: false,
        }
    }

    #[test]
    fn scans_are_due_at_once_then_after_their_interval() {
        let mut s = Schedule::default();
        let now = 1_000_000_000;
        assert!(due_ms(&s, &scan("a", 3600), now) <= now, "never ran: due now");
        s.last_end_ms.insert("a".into(), now - 1000);
        assert_eq!(due_ms(&s, &scan("a", 3600), now), now - 1000 + 3_600_000);
        assert_eq!(due_ms(&s, &scan("a", 0), now), now - 1000 + 60_000, "interval has a floor");
        s.last_end_ms.insert("a".into(), now + 86_400_000);
        assert_eq!(due_ms(&s, &scan("a", 3600), now), now + 3_600_000, "future end counts as now");
        assert!(due_ms(&s, &scan("a", u64::MAX), now) > now, "no overflow");
    }

    #[test]
    fn spool_payloads_become_wire_events() {
        let ours = serde_json::to_vec(&SpooledEvent {
            time_ms: 42,
            data: RawValue::from_string(r#"{"a":1}"#.into()).unwrap(),
        })
        .unwrap();
        let w = to_wire(mamori_spool::Event { seq: 7, kind: "k".into(), payload: ours });
        assert_eq!((w.seq, w.kind.as_str(), w.time_ms, w.data.get()), (7, "k", 42, r#"{"a":1}"#));

        let notice = br#"{"dropped":3,"first_seq":1,"last_seq":3}"#.to_vec();
        let w =
            to_wire(mamori_spool::Event { seq: 8, kind: mamori_spool::DROPPED_KIND.into(), payload: notice });
        assert_eq!(w.data.get(), r#"{"dropped":3,"first_seq":1,"last_seq":3}"#);
        assert!(w.time_ms > 0);

        let junk = vec![0xff, 0xfe, b'{'];
        let w = to_wire(mamori_spool::Event { seq: 9, kind: "k".into(), payload: junk });
        let v: Value = serde_json::from_str(w.data.get()).unwrap();
        assert_eq!(v["mamori"]["spool"]["undecodable_payload_bytes"], 3);
    }

    #[test]
    fn run_options_are_checked() {
        assert!(RunOptions::default().validate().is_ok());
        for bad in [0.0, 1.0, -1.0, f64::NAN] {
            let o = RunOptions { renew_fraction: bad, ..RunOptions::default() };
            assert!(o.validate().is_err(), "{bad}");
        }
        assert!(RunOptions { batch_max_events: 0, ..RunOptions::default() }.validate().is_err());
        assert!(RunOptions { heartbeat_override: Some(Duration::ZERO), ..RunOptions::default() }
            .validate()
            .is_err());
    }
}
