//! `mamori agent enroll`: a new key on this host, a certificate from the manager.

use std::path::Path;
use std::time::SystemTime;

use mamori_pki::DeviceKey;
use mamori_proto::{path, EnrollRequest, EnrollResponse};

use crate::client::{verify_issued, ManagerClient};
use crate::state::{self, AgentConfig};
use crate::{Error, AGENT_VERSION};

/// Placeholder CN in the enrollment CSR: the manager chooses the device id and ignores it.
const CSR_PLACEHOLDER_ID: &str = "enrolling";

#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// `https://host:port` of the manager.
    pub server_url: String,
    /// One-time enrollment token from the administrator.
    pub token: String,
    /// SHA-256 of the manager's CA certificate, obtained out of band.
    pub ca_fingerprint: String,
    /// Re-enroll although this directory holds an identity: a new key and device id are made and
    /// the manager is told which device this one replaces.
    pub force: bool,
    /// The host's machine id, for hosts without `/etc/machine-id`. Only its SHA-256 is sent and
    /// kept. Default: `/etc/machine-id`, then `/var/lib/dbus/machine-id`.
    pub machine_id: Option<String>,
    /// Default: the system host name, read again at every heartbeat.
    pub hostname: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Enrolled {
    pub device_id: String,
    /// Device ids the manager marked replaced by this enrollment.
    pub replaced: Vec<String>,
    pub cert_not_after: SystemTime,
}

/// Enrolls this host with the manager and saves the identity in `dir`.
///
/// Nothing is written unless the manager's CA matches the pinned fingerprint and the returned
/// certificate checks out; `agent.json` is written last, so an interrupted enrollment leaves
/// the directory "not enrolled" (or, with `force`, still refers to the old identity until the
/// very end).
pub async fn enroll(dir: &Path, opts: EnrollOptions) -> Result<Enrolled, Error> {
    let server_url = state::normalize_server_url(&opts.server_url)?;
    let pinned = state::normalize_fingerprint(&opts.ca_fingerprint)?;
    if opts.token.trim().is_empty() {
        return Err(Error::InvalidOptions("the enrollment token is empty".into()));
    }
    let (machine_id, machine_id_explicit) = match &opts.machine_id {
        Some(id) => (state::explicit_machine_id(id)?, true),
        None => (state::host_machine_id(&state::default_machine_id_files())?, false),
    };
    let hostname = match &opts.hostname {
        Some(h) if h.trim().is_empty() => return Err(Error::InvalidOptions("the host name is empty".into())),
        Some(h) => Some(h.trim().to_string()),
        None => None,
    };

    let previous_device_id = match state::read_json::<AgentConfig>(&dir.join(state::AGENT_FILE)) {
        Ok(Some(old)) if !opts.force => {
            return Err(Error::AlreadyEnrolled { device_id: old.device_id, server_url: old.server_url })
        }
        Ok(Some(old)) => Some(old.device_id),
        Ok(None) => None,
        // Unreadable state is exactly what --force is for.
        Err(_) if opts.force => None,
        Err(e) => return Err(e),
    };

    // A running agent would keep using (and renewing) the old identity and could overwrite the
    // new certificate; holding the spool lock for the whole enrollment keeps one from starting.
    // No spool directory means no agent has ever run here.
    let spool_dir = dir.join(state::SPOOL_DIR);
    let _spool_guard = if spool_dir.is_dir() {
        match mamori_spool::Spool::open(&spool_dir, mamori_spool::Options::default()) {
            Ok(s) => Some(s),
            Err(mamori_spool::Error::Locked(_)) => return Err(Error::Busy(dir.to_path_buf())),
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };

    let key = DeviceKey::generate()?;
    let request = EnrollRequest {
        token: opts.token.trim().to_string(),
        csr_pem: key.csr_pem(CSR_PLACEHOLDER_ID)?,
        hostname: hostname.clone().unwrap_or_else(state::system_hostname),
        machine_id: machine_id.clone(),
        previous_device_id,
        agent_version: AGENT_VERSION.to_string(),
    };
    let client = ManagerClient::new(&server_url, &pinned, None)?;
    let response: EnrollResponse = client.post_json(path::ENROLL, &request).await?;

    // The TLS handshake already proved the manager holds a certificate from the pinned CA; the
    // CA it hands us to keep must be that same one.
    let ca_der = mamori_pki::pem_to_der(&response.ca_pem)
        .map_err(|e| Error::Protocol { what: path::ENROLL.into(), reason: format!("CA certificate: {e}") })?;
    if mamori_pki::fingerprint_of_der(&ca_der) != pinned {
        return Err(Error::CaMismatch { url: server_url, pinned });
    }
    let info = verify_issued(path::ENROLL, &response.cert_pem, &key, &ca_der, Some(&response.device_id))?;

    state::ensure_private_dir(dir)?;
    key.save(&dir.join(state::KEY_FILE))?;
    state::write_atomic(&dir.join(state::CERT_FILE), response.cert_pem.as_bytes())?;
    state::write_atomic(&dir.join(state::CA_FILE), response.ca_pem.as_bytes())?;
    let config = AgentConfig {
        server_url,
        ca_fingerprint: pinned,
        device_id: response.device_id.clone(),
        machine_id,
        machine_id_explicit,
        hostname,
        enrolled_ms: state::now_ms(),
    };
    state::write_json(&dir.join(state::AGENT_FILE), &config)?;
    tracing::info!(device_id = %config.device_id, server = %config.server_url, "enrolled");
    Ok(Enrolled {
        device_id: response.device_id,
        replaced: response.replaced,
        cert_not_after: info.not_after,
    })
}
