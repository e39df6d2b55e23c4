//! Security events of the vault (refused requests, garbage uploads, quota and rate refusals,
//! suspicious snapshots): appended to `events.jsonl` first, so that nothing is lost when the
//! manager is unreachable, then forwarded to the manager's syslog receiver over TLS as CEF.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecurityEvent {
    pub time_ms: i64,
    /// `refused`, `garbage_upload`, `malformed_upload`, `quota_exceeded`, `rate_limited`,
    /// `tls_refused`, `suspicious_snapshot`, `snapshot_accepted`.
    pub kind: String,
    pub device_id: String,
    pub address: String,
    pub detail: String,
    /// CEF severity 0-10.
    pub severity: u8,
}

pub struct EventLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
    pub(crate) appended: Arc<Notify>,
}

impl EventLog {
    pub fn open(path: PathBuf) -> anyhow::Result<EventLog> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(EventLog { path, file: Mutex::new(file), appended: Arc::new(Notify::new()) })
    }

    /// Appends and syncs the event; an event that cannot be written is logged loudly (the
    /// request it is about has been refused either way).
    pub fn record(&self, event: SecurityEvent) {
        let level_warn = event.kind != "snapshot_accepted";
        if level_warn {
            tracing::warn!(kind = %event.kind, device = %event.device_id, address = %event.address, "{}", event.detail);
        } else {
            tracing::info!(device = %event.device_id, "{}", event.detail);
        }
        let Ok(mut line) = serde_json::to_vec(&event) else { return };
        line.push(b'\n');
        let written = match self.file.lock() {
            Ok(mut file) => file.write_all(&line).and_then(|()| file.sync_data()),
            Err(_) => Err(std::io::Error::other("event log lock poisoned")),
        };
        if let Err(e) = written {
            tracing::error!("cannot write the security event log {}: {e}", self.path.display());
        }
        self.appended.notify_one();
    }
}

/// Where and how to forward events.
#[derive(Clone)]
pub struct Forwarding {
    /// `host:port` of the manager's syslog TLS receiver.
    pub address: String,
    pub tls: Arc<rustls::ClientConfig>,
    pub hostname: String,
}

/// Sends every event after the saved offset, then waits for more. Reconnects with backoff; the
/// offset is saved only after the bytes were written to the connection.
pub async fn forward(events: PathBuf, offset_file: PathBuf, forwarding: Forwarding, appended: Arc<Notify>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match forward_once(&events, &offset_file, &forwarding, &appended).await {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(e) => {
                tracing::warn!(
                    "forwarding vault events to {}: {e}; retrying in {backoff:?}",
                    forwarding.address
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

async fn forward_once(
    events: &std::path::Path,
    offset_file: &std::path::Path,
    forwarding: &Forwarding,
    appended: &Notify,
) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpStream::connect(&forwarding.address).await?;
    let host = forwarding.address.rsplit_once(':').map(|(h, _)| h).unwrap_or(&forwarding.address);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(forwarding.tls.clone());
    let mut tls = connector.connect(name, tcp).await?;
    loop {
        let mut offset: u64 =
            std::fs::read_to_string(offset_file).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        // Only what was appended since the last send is read, not the whole log each time.
        let bytes = unsent(events, &mut offset)?;
        let mut sent = 0usize;
        while let Some(end) = bytes[sent..].iter().position(|b| *b == b'\n') {
            let line = &bytes[sent..sent + end];
            sent += end + 1;
            let Ok(event) = serde_json::from_slice::<SecurityEvent>(line) else { continue };
            let message = syslog_line(&event, &forwarding.hostname);
            let framed = format!("{} {}", message.len(), message);
            tls.write_all(framed.as_bytes()).await?;
        }
        if sent > 0 {
            tls.flush().await?;
            std::fs::write(offset_file, (offset + sent as u64).to_string())?;
        }
        tokio::select! {
            _ = appended.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

/// The bytes of `events` after `offset` (set back to 0 when the log is shorter: an
/// administrator replaced it).
fn unsent(events: &std::path::Path, offset: &mut u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek};
    let mut file = match std::fs::File::open(events) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    if file.metadata()?.len() < *offset {
        *offset = 0;
    }
    file.seek(std::io::SeekFrom::Start(*offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// RFC 5424 with a CEF message: vendor `mamori`, product `vault`, the event kind as class id.
pub fn syslog_line(event: &SecurityEvent, hostname: &str) -> String {
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(event.time_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "-".into());
    // facility auth (4), severity warning (4) or notice (5)
    let pri = 4 * 8
        + if event.severity >= 7 {
            2
        } else if event.severity >= 4 {
            4
        } else {
            5
        };
    format!(
        "<{pri}>1 {time} {hostname} mamori-vault - - - CEF:0|mamori|vault|{}|{}|{}|{}|dvchost={} suser={} src={} msg={}",
        env!("CARGO_PKG_VERSION"),
        cef_header(&event.kind),
        cef_header(&title(&event.kind)),
        event.severity,
        cef_value(hostname),
        cef_value(&event.device_id),
        cef_value(&event.address),
        cef_value(&event.detail),
    )
}

fn title(kind: &str) -> String {
    match kind {
        "suspicious_snapshot" => "Suspicious backup snapshot (ransomware signs)".into(),
        "garbage_upload" => "Upload did not match its content address".into(),
        "refused" => "Refused request to modify the vault".into(),
        "quota_exceeded" => "Backup quota exceeded".into(),
        "rate_limited" => "Backup client rate limited".into(),
        other => other.replace('_', " "),
    }
}

fn cef_header(s: &str) -> String {
    s.replace('\\', "\\\\").replace('|', "\\|").replace(['\r', '\n'], " ")
}

fn cef_value(s: &str) -> String {
    s.replace('\\', "\\\\").replace('=', "\\=").replace(['\r', '\n'], " ")
}
