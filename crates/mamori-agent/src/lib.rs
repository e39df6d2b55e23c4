//! The mamori agent: enrolls a host with a manager, then keeps it in touch.
//!
//! - [`enroll`] creates the agent's key on this host, sends only a CSR and a one-time token to a
//!   manager whose CA is pinned by fingerprint (no trust on first use), checks that the
//!   certificate it gets back is for that key and from that CA, and saves the identity.
//! - [`run`] is the long-running agent: heartbeats (which carry the spool's backlog and bring
//!   policy changes), certificate renewal before expiry, shipping of the durable event spool
//!   (at-least-once: the manager de-duplicates by sequence number), and the scheduled scans the
//!   policy asks for, and file integrity monitoring (`fim`: baseline, real-time changes with
//!   who-data, scheduled full checks, on-write malware scans) when the policy has a `fim`
//!   section, with ransomware behaviour detection on the same live events. The policy's
//!   response rules (per detection kind and severity) quarantine files, stop processes and
//!   isolate the host. The manager's commands arrive with heartbeats (`commands`): `isolate` /
//!   `release`, `scan` (a full scan now, like a scheduled one), `quarantine_restore` /
//!   `quarantine_delete` (an item of the agent's quarantine store) and `backup_restore` (a
//!   snapshot from the vault into a new directory), each carried out once and answered with a
//!   result. The manager being down or refusing us is logged and retried with
//!   backoff; it never ends the agent. Only local failures (the spool cannot be written) do.
//! - [`status`] reads the state directory for `mamori agent status`.
//!
//! # State directory
//!
//! Everything lives in the directory the caller passes (created 0700; every file 0600, written
//! atomically by temporary file and rename):
//!
//! | file | what |
//! |---|---|
//! | `agent.json` | server URL, pinned CA fingerprint, device id, machine id hash, enrollment time; written last, so its presence means "enrolled" |
//! | `device.key` | the agent's private key; never sent anywhere |
//! | `device.crt`, `ca.crt` | the agent's certificate (replaced on renewal) and the manager's CA |
//! | `policy.json` | the last policy applied, so scans keep running while the manager is away |
//! | `schedule.json` | when each scheduled scan last ended, so a restart does not rescan at once |
//! | `backup.json` | when the last scheduled backup ended and whether it made a snapshot |
//! | `status.json` | last heartbeat result and spool counts, for `status` while the agent runs |
//! | `spool/` | the event outbox (`mamori-spool`); it survives re-enrollment |
//! | `cache/` | compiled rules and the verdict cache of scheduled scans |
//! | `fim/` | `baseline.db` (the FIM baseline) and `state.json` (watched path set, last full check end) |
//! | `logs/` | one position file per followed log file (`<sha-256 of the path>.pos`), saved after the lines are in the spool |
//! | `quarantine/` | the encrypted quarantine store (`mamori-quarantine`) |
//! | `restores/` | snapshots restored by `backup_restore` commands when the policy names no `backup.restore_dir` (one new 0700 directory each) |
//! | `isolation/` | `isolation.json` (the verified isolation plan, re-applied at start), `auto_release.json` (an automatic release awaits a clean scan), `commands.json` (results of all the manager's commands, answered again if asked again) |
//!
//! # Events
//!
//! Every event's `data` is an ECS-style object with `@timestamp` and `event.action`:
//! `agent.started` (`agent.id`, `host.hostname`, spool counts), `agent.policy_applied`
//! (`mamori.policy.version`, `previous_version`, scan names), and per scheduled scan
//! `scan.finding` / `scan.problem` / `scan.summary` as built by `mamori_scan::ecs` (the same
//! fields as `mamori scan --json`) plus `mamori.scheduled_scan.name`. FIM adds `fim.change`
//! (`event.action` `file_created` / `file_modified` / `attributes_changed` / `file_deleted`,
//! `file.*`, `mamori.fim.source` `realtime` or `check`, `mamori.fim.changes` before → after,
//! `process.pid` / `process.executable` when known), `fim.check` (baseline and check summaries,
//! and problems and errors), and on-write `scan.finding` / `scan.problem` with
//! `mamori.scan.trigger` `on_write`. The ransomware guard adds `ransomware.detected` (subject
//! process or directory, score, severity, reasons, files touched) and a `fim.check` with
//! `event.action` `ransomware_ready` once every watched file has its content sample. Every
//! response — quarantine, process stopped, host isolated, released or restored, or what a dry
//! run would have done — is a `response.action` with its outcome and trigger; so are the
//! manager's `quarantine_restore` / `quarantine_delete` commands (`event.action` and
//! `mamori.response.action` named after the command, `mamori.response.quarantine_id`,
//! `file.path`, `trigger` `command`, `command_id`). A `scan` command's events are those of a
//! scheduled scan named `manager-command`, with `mamori.scheduled_scan.command_id`.
//! Log collection (`logs`) adds one `log.event` per line of a followed file — the flat event
//! `mamori-logs` parses, with `log.file.path` and `host.name` — and `log.problem` for files that
//! are missing or unreadable.
//! Scheduled backups (`backup`) add `backup.completed` (`mamori.backup`: vault, sources,
//! snapshot name, suspicious and reasons, file and byte counts, the first 20 problems and their
//! count, seconds) or `backup.failed` (`error.message`); a `backup_restore` command that worked
//! adds `backup.restored` (`mamori.backup.restore`: snapshot name, time, paths and flag, the new
//! directory `target`, file, directory, symlink and byte counts, `command_id`, `reason`).
//! The spool's own `mamori.spool.dropped` notices are sent as the spool wrote them.
//!
//! # What this crate never does
//!
//! It never sends the private key or the raw machine id (only its SHA-256), never talks to a
//! manager over anything but TLS 1.3 to the pinned CA, never prints (it logs with `tracing`;
//! the CLI decides what to show), never reads the environment, and never exits the process.
//! It never watches its own directory.

#![deny(unsafe_code)]

mod backup;
mod client;
mod commands;
mod enroll;
mod fim;
mod guard;
mod isolation;
mod logs;
mod process;
mod response;
mod run;
mod scan;
mod state;
mod status;

use std::path::PathBuf;
use std::time::Duration;

pub use enroll::{enroll, EnrollOptions, Enrolled};
pub use run::{run, RunOptions};
pub use status::{status, AgentStatus, ScanStatus};

/// This host's enrolled identity, for the other mamori services it talks to (the backup
/// vault accepts the same device certificate).
#[derive(Clone)]
pub struct DeviceIdentity {
    pub device_id: String,
    pub key_pem: String,
    pub cert_pem: String,
    /// The pinned mamori CA.
    pub ca_fingerprint: String,
    pub hostname: String,
}

pub fn device_identity(dir: &std::path::Path) -> Result<DeviceIdentity, Error> {
    let config = state::load_config(dir)?;
    let key = mamori_pki::DeviceKey::load(&dir.join(state::KEY_FILE))?;
    let cert_pem = state::read_text(&dir.join(state::CERT_FILE))?;
    Ok(DeviceIdentity {
        device_id: config.device_id,
        key_pem: key.key_pem().to_string(),
        cert_pem,
        ca_fingerprint: config.ca_fingerprint,
        hostname: config.hostname.unwrap_or_else(state::system_hostname),
    })
}

/// Version reported to the manager.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything that can go wrong, phrased for the person running `mamori agent`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("this host is not enrolled ({path} does not exist); run `mamori agent enroll` first")]
    NotEnrolled { path: PathBuf },
    #[error(
        "this host is already enrolled as device {device_id} with {server_url}; \
         use --force to re-enroll with a new identity"
    )]
    AlreadyEnrolled { device_id: String, server_url: String },
    #[error("agent state file {path} is invalid: {reason}")]
    BadState { path: PathBuf, reason: String },
    #[error("invalid manager URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error(
        "invalid CA fingerprint {0:?}: expected the 64 hexadecimal characters of a SHA-256 \
         (as `mamori manager` prints it; colons are allowed)"
    )]
    InvalidFingerprint(String),
    #[error("invalid option: {0}")]
    InvalidOptions(String),
    #[error(
        "cannot determine this host's machine id: neither /etc/machine-id nor \
         /var/lib/dbus/machine-id holds one; give an explicit machine id"
    )]
    NoMachineId,
    #[error(
        "this host's machine id differs from the one it enrolled with (cloned or re-imaged?); \
         run `mamori agent enroll --force`"
    )]
    MachineIdChanged,
    #[error("this agent's certificate expired at {not_after}; re-enroll with `mamori agent enroll --force`")]
    CertificateExpired { not_after: String },
    #[error(
        "the manager's CA did not match the pinned fingerprint {pinned} (connecting to {url}); \
         check the fingerprint, and that this is really your manager"
    )]
    CaMismatch { url: String, pinned: String },
    #[error("the manager at {url} presented a certificate this agent cannot accept: {reason}")]
    ServerCertificate { url: String, reason: String },
    #[error(
        "the manager refused this agent's certificate ({reason}); it may have been revoked or \
         replaced: re-enroll with `mamori agent enroll --force`"
    )]
    CertificateRefused { reason: String },
    #[error("could not reach the manager at {url}: {message}")]
    Transport { url: String, message: String },
    #[error("the manager answered {status} ({code}): {message}")]
    Api { status: u16, code: String, message: String },
    #[error("the manager sent an invalid response to {what}: {reason}")]
    Protocol { what: String, reason: String },
    // Not `#[from]`/`#[source]`: the message already includes the cause, and a source would make
    // `{:#}` print it twice.
    #[error("{0}")]
    Pki(mamori_pki::Error),
    #[error("event spool: {0}")]
    Spool(mamori_spool::Error),
    #[error("another mamori agent process is using {0}; stop it first")]
    Busy(PathBuf),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<mamori_pki::Error> for Error {
    fn from(e: mamori_pki::Error) -> Self {
        Error::Pki(e)
    }
}

impl From<mamori_spool::Error> for Error {
    fn from(e: mamori_spool::Error) -> Self {
        Error::Spool(e)
    }
}

impl Error {
    /// Failures of the conversation with the manager: logged and retried by [`run`], never fatal.
    fn is_remote(&self) -> bool {
        matches!(
            self,
            Error::CaMismatch { .. }
                | Error::ServerCertificate { .. }
                | Error::CertificateRefused { .. }
                | Error::Transport { .. }
                | Error::Api { .. }
                | Error::Protocol { .. }
        )
    }
}

/// Exponential backoff for retries against the manager: 1 s doubling to 30 s.
#[derive(Debug, Clone)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);

    fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_thirty_seconds_and_resets() {
        let mut b = Backoff::new();
        let got: Vec<u64> = (0..8).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30, 30]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }
}
