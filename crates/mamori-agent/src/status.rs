//! `mamori agent status`: what the state directory says, without talking to the manager.

use std::path::Path;
use std::time::SystemTime;

use mamori_proto::Policy;
use mamori_spool::Spool;
use serde::{Serialize, Serializer};

use crate::state::{self, RuntimeStatus, Schedule};
use crate::Error;

/// The agent's state. Serialises to JSON with times as RFC 3339 strings.
#[derive(Debug, Clone, Serialize)]
pub struct AgentStatus {
    pub device_id: String,
    pub server_url: String,
    pub ca_fingerprint: String,
    #[serde(serialize_with = "rfc3339")]
    pub enrolled_at: SystemTime,
    pub cert_serial: String,
    #[serde(serialize_with = "rfc3339")]
    pub cert_not_before: SystemTime,
    #[serde(serialize_with = "rfc3339")]
    pub cert_not_after: SystemTime,
    /// The version of the policy last applied (0: none yet).
    pub policy_version: u64,
    /// An agent process holds the spool (`run` is active in this directory).
    pub running: bool,
    /// Events waiting to be sent. When `running`, as of the agent's last heartbeat.
    pub spool_pending: u64,
    /// Events the spool has dropped for space, ever.
    pub spool_dropped_total: u64,
    /// Last successful heartbeat.
    #[serde(serialize_with = "rfc3339_opt")]
    pub last_heartbeat: Option<SystemTime>,
    /// The last failure talking to the manager, if the latest attempt failed.
    pub last_error: Option<String>,
    /// The policy's scheduled scans.
    pub scans: Vec<ScanStatus>,
    /// The host is isolated (mamori-isolate's state file is present; the rules are put back at
    /// the agent's next start if they went missing).
    pub isolated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScanStatus {
    pub name: String,
    pub every_secs: u64,
    /// When the last run ended; `None` if it never ran (it runs as soon as the agent does).
    #[serde(serialize_with = "rfc3339_opt")]
    pub last_end: Option<SystemTime>,
}

/// Reads the agent's state in `dir`.
pub fn status(dir: &Path) -> Result<AgentStatus, Error> {
    let config = state::load_config(dir)?;
    let cert_path = dir.join(state::CERT_FILE);
    let bad = |reason: String| Error::BadState { path: cert_path.clone(), reason };
    let der = mamori_pki::pem_to_der(&state::read_text(&cert_path)?).map_err(|e| bad(e.to_string()))?;
    let cert = mamori_pki::cert_info(&der).map_err(|e| bad(e.to_string()))?;
    let policy: Policy = state::read_json(&dir.join(state::POLICY_FILE))?.unwrap_or_default();
    let schedule: Schedule = state::read_json(&dir.join(state::SCHEDULE_FILE))?.unwrap_or_default();
    let runtime: RuntimeStatus = state::read_json(&dir.join(state::STATUS_FILE))?.unwrap_or_default();

    // Opening the spool is the only way to count it exactly, and its lock says whether an agent
    // is running; a running agent's counts come from its last status write instead.
    let spool_dir = dir.join(state::SPOOL_DIR);
    let (running, spool_pending, spool_dropped_total) = if !spool_dir.is_dir() {
        (false, 0, 0)
    } else {
        match Spool::open(&spool_dir, mamori_spool::Options::default()) {
            Ok(s) => (false, s.pending(), s.dropped_total()),
            Err(mamori_spool::Error::Locked(_)) => (true, runtime.spool_pending, runtime.spool_dropped_total),
            Err(e) => return Err(e.into()),
        }
    };

    Ok(AgentStatus {
        device_id: config.device_id,
        server_url: config.server_url,
        ca_fingerprint: config.ca_fingerprint,
        enrolled_at: state::ms_to_system_time(config.enrolled_ms),
        cert_serial: cert.serial_hex,
        cert_not_before: cert.not_before,
        cert_not_after: cert.not_after,
        policy_version: policy.version,
        running,
        spool_pending,
        spool_dropped_total,
        last_heartbeat: runtime.last_heartbeat_ms.map(state::ms_to_system_time),
        last_error: runtime.last_error,
        scans: policy
            .scans
            .iter()
            .map(|s| ScanStatus {
                name: s.name.clone(),
                every_secs: s.every_secs,
                last_end: schedule.last_end_ms.get(&s.name).copied().map(state::ms_to_system_time),
            })
            .collect(),
        isolated: dir.join(crate::isolation::ISOLATION_DIR).join(mamori_isolate::STATE_FILE).exists(),
    })
}

fn rfc3339<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&state::rfc3339(*t))
}

fn rfc3339_opt<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&state::rfc3339(*t)),
        None => s.serialize_none(),
    }
}
