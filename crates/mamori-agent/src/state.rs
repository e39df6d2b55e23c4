//! The state directory: file names, private atomic writes, `agent.json`, the host's identity.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;

pub(crate) const AGENT_FILE: &str = "agent.json";
pub(crate) const KEY_FILE: &str = "device.key";
pub(crate) const CERT_FILE: &str = "device.crt";
pub(crate) const CA_FILE: &str = "ca.crt";
pub(crate) const POLICY_FILE: &str = "policy.json";
pub(crate) const SCHEDULE_FILE: &str = "schedule.json";
pub(crate) const STATUS_FILE: &str = "status.json";
pub(crate) const SPOOL_DIR: &str = "spool";
pub(crate) const CACHE_DIR: &str = "cache";

/// Where machine ids live on systemd and older dbus systems, in order of preference.
pub(crate) const MACHINE_ID_FILES: [&str; 2] = ["/etc/machine-id", "/var/lib/dbus/machine-id"];

/// `agent.json`: who this agent is and whom it talks to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AgentConfig {
    pub server_url: String,
    /// Lowercase hex SHA-256 of the manager's CA certificate.
    pub ca_fingerprint: String,
    pub device_id: String,
    /// SHA-256 (hex) of the machine id at enrollment.
    pub machine_id: String,
    /// The machine id was given explicitly rather than read from the host, so `run` cannot
    /// re-derive it unless it is given again.
    #[serde(default)]
    pub machine_id_explicit: bool,
    /// Host name given at enrollment; `None` means "ask the system each time".
    #[serde(default)]
    pub hostname: Option<String>,
    pub enrolled_ms: i64,
}

/// `schedule.json`: scan name → when its last run ended (Unix ms).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Schedule {
    #[serde(default)]
    pub last_end_ms: BTreeMap<String, i64>,
}

/// `status.json`: what the running agent last saw, for `status` while the spool is locked.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RuntimeStatus {
    pub updated_ms: i64,
    #[serde(default)]
    pub last_heartbeat_ms: Option<i64>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub spool_pending: u64,
    #[serde(default)]
    pub spool_dropped_total: u64,
}

pub(crate) fn now_ms() -> i64 {
    system_time_ms(SystemTime::now())
}

pub(crate) fn system_time_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn ms_to_system_time(ms: i64) -> SystemTime {
    let d = std::time::Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io { op, path: path.to_path_buf(), source }
}

/// Creates `dir` with mode 0700, or tightens an existing one to 0700: it holds the private key.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), Error> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err("create", dir))?;
    let meta = std::fs::symlink_metadata(dir).map_err(io_err("inspect", dir))?;
    if !meta.is_dir() {
        return Err(Error::BadState { path: dir.to_path_buf(), reason: "not a directory".into() });
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod", dir))?;
    }
    Ok(())
}

/// Replaces `path` with `data` (mode 0600) so that readers and crashes see either the old or
/// the complete new content.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Error> {
    Ok(mamori_pki::fsutil::write_atomic(path, data, true)?)
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let mut text = serde_json::to_vec_pretty(value).map_err(|e| Error::Internal(e.to_string()))?;
    text.push(b'\n');
    write_atomic(path, &text)
}

/// Reads a JSON state file; `None` when it does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, Error> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| Error::BadState { path: path.to_path_buf(), reason: e.to_string() })
}

pub(crate) fn read_text(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(io_err("read", path))
}

pub(crate) fn load_config(dir: &Path) -> Result<AgentConfig, Error> {
    let path = dir.join(AGENT_FILE);
    read_json(&path)?.ok_or(Error::NotEnrolled { path })
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// SHA-256 (hex) of an explicitly given machine id.
pub(crate) fn explicit_machine_id(id: &str) -> Result<String, Error> {
    let id = id.trim();
    if id.is_empty() {
        return Err(Error::InvalidOptions("the machine id must not be empty".into()));
    }
    Ok(sha256_hex(id))
}

/// SHA-256 (hex) of the first machine id found in `files`. The raw id is never stored or sent:
/// machine-id(5) asks that it not be exposed.
pub(crate) fn host_machine_id(files: &[&Path]) -> Result<String, Error> {
    for file in files {
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let id = text.trim();
                // systemd writes "uninitialized" during the first boot of an image.
                if !id.is_empty() && id != "uninitialized" {
                    return Ok(sha256_hex(id));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("read", file)(e)),
        }
    }
    Err(Error::NoMachineId)
}

pub(crate) fn default_machine_id_files() -> Vec<&'static Path> {
    MACHINE_ID_FILES.iter().map(Path::new).collect()
}

/// The system's host name, as the kernel knows it.
pub(crate) fn system_hostname() -> String {
    for file in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(text) = std::fs::read_to_string(file) {
            let name = text.trim();
            if !name.is_empty() {
                return name.to_string();
            }
        }
    }
    "unknown".to_string()
}

/// Normalises a CA fingerprint to 64 lowercase hex characters; accepts colons and spaces.
pub(crate) fn normalize_fingerprint(fp: &str) -> Result<String, Error> {
    let hexed: String = fp.chars().filter(|c| !matches!(c, ':' | ' ' | '\t' | '\n' | '\r')).collect();
    if hexed.len() != 64 || !hexed.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidFingerprint(fp.to_string()));
    }
    Ok(hexed.to_ascii_lowercase())
}

/// Checks a manager URL and returns it without a trailing slash: HTTPS only, no query or
/// fragment (paths are appended to it).
pub(crate) fn normalize_server_url(url: &str) -> Result<String, Error> {
    let bad = |reason: &str| Error::InvalidUrl { url: url.to_string(), reason: reason.to_string() };
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| bad(&e.to_string()))?;
    if parsed.scheme() != "https" {
        return Err(bad("only https:// is allowed: the agent talks to the manager over mutual TLS only"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("a query or fragment is not allowed"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("credentials in the URL are not allowed"));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_id_is_hashed_and_falls_back_and_errors_clearly() {
        let d = tempfile::tempdir().unwrap();
        let first = d.path().join("etc-machine-id");
        let second = d.path().join("dbus-machine-id");
        std::fs::write(&second, "0123456789abcdef0123456789abcdef\n").unwrap();
        let got = host_machine_id(&[&first, &second]).unwrap();
        assert_eq!(got, sha256_hex("0123456789abcdef0123456789abcdef"));
        assert_eq!(got.len(), 64);
        assert!(!got.contains("0123456789abcdef"), "the raw id must not be kept");

        std::fs::write(&first, "uninitialized\n").unwrap();
        assert_eq!(host_machine_id(&[&first, &second]).unwrap(), got, "uninitialized is skipped");
        std::fs::write(&first, "ffffffffffffffffffffffffffffffff\n").unwrap();
        assert_ne!(host_machine_id(&[&first, &second]).unwrap(), got, "the first file wins");

        let none = host_machine_id(&[&d.path().join("nope")]).unwrap_err();
        assert!(matches!(none, Error::NoMachineId));
        assert!(none.to_string().contains("explicit machine id"), "{none}");
        assert_eq!(explicit_machine_id(" abc \n").unwrap(), sha256_hex("abc"));
        assert!(explicit_machine_id("  ").is_err());
    }

    #[test]
    fn fingerprints_are_normalised_or_refused() {
        let fp = "AB".repeat(32);
        assert_eq!(normalize_fingerprint(&fp).unwrap(), "ab".repeat(32));
        let colons = vec!["Ab"; 32].join(":");
        assert_eq!(normalize_fingerprint(&colons).unwrap(), "ab".repeat(32));
        assert!(normalize_fingerprint(&"ab".repeat(31)).is_err());
        assert!(normalize_fingerprint(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn only_plain_https_urls_are_accepted() {
        assert_eq!(normalize_server_url("https://m.example:8443/").unwrap(), "https://m.example:8443");
        assert_eq!(normalize_server_url("https://127.0.0.1:1/base/").unwrap(), "https://127.0.0.1:1/base");
        let http = normalize_server_url("http://m.example").unwrap_err().to_string();
        assert!(http.contains("only https://"), "{http}");
        assert!(normalize_server_url("https://m.example/?a=b").is_err());
        assert!(normalize_server_url("https://u:p@m.example").is_err());
        assert!(normalize_server_url("m.example").is_err());
    }

    #[test]
    fn atomic_writes_are_private_and_replace() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let p = dir.join("x.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left behind");

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);

        std::fs::write(dir.join("bad.json"), b"{not json").unwrap();
        let err = read_json::<Schedule>(&dir.join("bad.json")).unwrap_err();
        assert!(matches!(err, Error::BadState { .. }), "{err}");
        assert!(read_json::<Schedule>(&dir.join("absent.json")).unwrap().is_none());
    }
}
