//! The JSON messages exchanged between the mamori manager, its agents and the admin CLI, and the
//! paths they are sent to.
//!
//! This crate has no behaviour: it exists so the manager, the agent and the CLI cannot disagree
//! about a field name. Times on the wire are Unix milliseconds (`*_ms`), which sort and compare
//! without parsing; the admin API adds RFC 3339 strings only where a human reads them.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Routes. Everything under `/v1/agent/` requires a client certificate; `/v1/admin/` requires the
/// admin token; enrollment requires an enrollment token.
pub mod path {
    pub const ENROLL: &str = "/v1/enroll";
    pub const RENEW: &str = "/v1/agent/renew";
    pub const HEARTBEAT: &str = "/v1/agent/heartbeat";
    pub const EVENTS: &str = "/v1/agent/events";
    pub const POLICY: &str = "/v1/agent/policy";
    /// `POST` a [`super::CommandResult`] for the command `{id}` (see [`command_result`]).
    pub const COMMAND_RESULT: &str = "/v1/agent/commands/{id}/result";
    /// `POST` a [`super::CommandRequest`] to queue a command for agent `{id}`; `GET` lists its
    /// commands, newest first.
    pub const ADMIN_AGENT_COMMANDS: &str = "/v1/admin/agents/{id}/commands";

    pub fn command_result(id: &str) -> String {
        COMMAND_RESULT.replace("{id}", id)
    }

    pub fn admin_agent_commands(agent_id: &str) -> String {
        ADMIN_AGENT_COMMANDS.replace("{id}", agent_id)
    }
    pub const ADMIN_AGENTS: &str = "/v1/admin/agents";
    pub const ADMIN_EVENTS: &str = "/v1/admin/events";
    pub const ADMIN_DETECTIONS: &str = "/v1/admin/detections";
    pub const ADMIN_TOKENS: &str = "/v1/admin/tokens";
    pub const ADMIN_POLICY: &str = "/v1/admin/policy";
    /// Syslog receivers (addresses), their counters and the log rules loaded.
    pub const ADMIN_LOG_STATUS: &str = "/v1/admin/logs/status";
    /// Logs received from other devices ([`super::LogEventPage`]).
    pub const ADMIN_LOG_EVENTS: &str = "/v1/admin/logs/events";
    /// What the Sigma rules detected in logs and agent alerts ([`super::LogDetectionPage`]).
    pub const ADMIN_LOG_DETECTIONS: &str = "/v1/admin/logs/detections";
    pub const OPENAPI: &str = "/v1/openapi.json";
    pub const HEALTH: &str = "/v1/health";
}

/// Header carrying the admin token: `Authorization: Bearer <token>`.
pub const AUTHORIZATION: &str = "authorization";

/// Every error response body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable machine-readable code, e.g. `token_expired`.
    pub error: String,
    /// What happened, for a person.
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub token: String,
    /// PKCS#10 request for a key the agent created and keeps.
    pub csr_pem: String,
    pub hostname: String,
    /// SHA-256 (hex) of the host's machine id; lets the manager notice a re-imaged host.
    pub machine_id: String,
    /// The device id this agent had before, if its state survived (cloned host, `--force`).
    #[serde(default)]
    pub previous_device_id: Option<String>,
    pub agent_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub device_id: String,
    pub cert_pem: String,
    pub ca_pem: String,
    /// Identities this enrollment superseded (marked `replaced` and revoked).
    #[serde(default)]
    pub replaced: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewRequest {
    /// A new CSR for the same key: the device id is bound to the key.
    pub csr_pem: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewResponse {
    pub cert_pem: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Heartbeat {
    pub agent_version: String,
    pub hostname: String,
    /// Policy version the agent is running (0: none yet).
    pub policy_version: u64,
    /// Events waiting in the agent's spool.
    pub spool_pending: u64,
    /// Events the spool has ever dropped for space.
    pub spool_dropped_total: u64,
    /// The host is isolated from the network (only the manager and the allow-list reachable).
    #[serde(default)]
    pub isolated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub server_time_ms: i64,
    /// The policy version the manager wants this agent to run. When it differs from the agent's,
    /// the agent fetches [`path::POLICY`].
    pub policy_version: u64,
    /// Commands for the agent that it has not reported a result for, oldest first. They are
    /// sent again with every heartbeat until their result arrives, so the agent must treat a
    /// command id it has already carried out as done (and report the result again).
    #[serde(default)]
    pub commands: Vec<AgentCommand>,
}

/// Something an admin asked one agent to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentCommand {
    /// Manager-assigned, unique.
    pub id: String,
    pub action: CommandAction,
    /// What the action applies to, when it needs one: the quarantine id of
    /// `quarantine_restore` / `quarantine_delete`, the snapshot name of `backup_restore`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// Why, as the admin wrote it (shown in events and the audit trail).
    #[serde(default)]
    pub reason: String,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandAction {
    /// Lift the host isolation.
    Release,
    /// Isolate the host now (the policy's isolation allow-list applies).
    Isolate,
    /// Run a full scan now (the isolation policy's clean-scan paths, else the scheduled
    /// scans' paths) and report what it found.
    Scan,
    /// Put the quarantined file `target` back where it was (bit-exact, mode and owner).
    QuarantineRestore,
    /// Delete the quarantined file `target` for good.
    QuarantineDelete,
    /// Restore the snapshot `target` (a full name, see [`is_snapshot_name`]) of this host from
    /// the vault of the policy's `backup` section into a new directory under
    /// [`BackupPolicy::restore_dir`]; nothing existing is overwritten.
    BackupRestore,
}

impl CommandAction {
    pub const ALL: [CommandAction; 6] = [
        CommandAction::Release,
        CommandAction::Isolate,
        CommandAction::Scan,
        CommandAction::QuarantineRestore,
        CommandAction::QuarantineDelete,
        CommandAction::BackupRestore,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandAction::Release => "release",
            CommandAction::Isolate => "isolate",
            CommandAction::Scan => "scan",
            CommandAction::QuarantineRestore => "quarantine_restore",
            CommandAction::QuarantineDelete => "quarantine_delete",
            CommandAction::BackupRestore => "backup_restore",
        }
    }

    /// Whether the action needs a `target`.
    pub fn needs_target(self) -> bool {
        matches!(
            self,
            CommandAction::QuarantineRestore | CommandAction::QuarantineDelete | CommandAction::BackupRestore
        )
    }
}

/// Length of a snapshot name: the BLAKE3 hash of the sealed snapshot record, in hex.
pub const SNAPSHOT_NAME_LEN: usize = 64;

/// Whether `name` is a snapshot name as the vault makes them: exactly [`SNAPSHOT_NAME_LEN`]
/// lowercase hexadecimal digits. Nothing else (no prefix, no `latest`, no path) names a
/// snapshot in a command, so a name can be used in a file name and a URL as it is.
pub fn is_snapshot_name(name: &str) -> bool {
    name.len() == SNAPSHOT_NAME_LEN && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Body of `POST` [`path::ADMIN_AGENT_COMMANDS`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandRequest {
    pub action: CommandAction,
    /// Required by actions that apply to something ([`CommandAction::needs_target`]).
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub reason: String,
}

/// Body of `POST` [`path::COMMAND_RESULT`], sent by the agent once it has carried a command out
/// (or failed to).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    pub success: bool,
    #[serde(default)]
    pub message: String,
}

/// A command as the admin API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandRecord {
    pub id: String,
    pub agent_id: String,
    pub action: CommandAction,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    pub reason: String,
    pub created: String,
    /// `pending` (not yet reported by the agent), `succeeded` or `failed`.
    pub status: String,
    pub completed: Option<String>,
    pub message: Option<String>,
}

/// What an agent does. Versioned by the manager; later issues add fields (always with defaults,
/// so an older agent ignores what it does not know).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Assigned by the manager when the policy is stored; ignored on upload.
    #[serde(default)]
    pub version: u64,
    #[serde(default = "default_heartbeat_secs")]
    pub heartbeat_secs: u64,
    #[serde(default)]
    pub scans: Vec<ScheduledScan>,
    /// Paths later issues watch (file integrity, ransomware behaviour).
    #[serde(default)]
    pub watch_paths: Vec<String>,
    /// File integrity monitoring and on-write scanning; absent means off.
    #[serde(default)]
    pub fim: Option<FimPolicy>,
    /// What the agent does about what it finds.
    #[serde(default)]
    pub response: ResponsePolicy,
    /// Log files the agent follows and sends as `log.event`; absent means none.
    #[serde(default)]
    pub logs: Option<LogCollectionPolicy>,
    /// Scheduled backups to the vault; absent means none.
    #[serde(default)]
    pub backup: Option<BackupPolicy>,
}

/// Backups the agent makes on a schedule (the same as `mamori backup run`), reported as
/// [`kind::BACKUP_COMPLETED`] or [`kind::BACKUP_FAILED`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupPolicy {
    /// The vault's URL, `https://host:port` (the agent's device certificate is its login).
    pub vault: String,
    /// Absolute paths to back up (files or directories).
    pub sources: Vec<String>,
    /// Globs matched against full paths; a matching directory is not entered.
    #[serde(default)]
    pub excludes: Vec<String>,
    /// Seconds between the end of one backup and the start of the next. Default one day; at
    /// least [`MIN_BACKUP_EVERY_SECS`]. A failed backup is tried again after at most
    /// [`BACKUP_RETRY_SECS`].
    #[serde(default = "default_backup_every_secs")]
    pub every_secs: u64,
    /// Where `backup_restore` commands restore snapshots: each into a new directory
    /// `<restore_dir>/<first 12 characters of the snapshot>-<UTC time>` (mode 0700). Absolute,
    /// and outside every source. Absent: `<agent state directory>/restores`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_dir: Option<std::path::PathBuf>,
}

/// Shortest interval between two scheduled backups a policy may ask for.
pub const MIN_BACKUP_EVERY_SECS: u64 = 600;
/// Longest wait before a failed scheduled backup is tried again.
pub const BACKUP_RETRY_SECS: u64 = 600;

fn default_backup_every_secs() -> u64 {
    86_400
}

impl BackupPolicy {
    /// Checks the section before it reaches an agent: an `https://` vault URL with a host and
    /// nothing after the port, at least one source, absolute and distinct sources, no empty
    /// exclude, an interval of at least [`MIN_BACKUP_EVERY_SECS`]. The message names the
    /// offending entry. A `restore_dir` must be absolute, without `.` or `..`, and lie outside
    /// every source (restores never go into the live tree).
    pub fn check(&self) -> Result<(), String> {
        let url = self.vault.trim();
        let Some(rest) = url.strip_prefix("https://") else {
            return Err(format!("backup.vault {:?} must be an https:// URL", self.vault));
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty()
            || authority.starts_with(':')
            || authority.contains(['/', '?', '#', '@'])
            || authority.chars().any(char::is_whitespace)
        {
            return Err(format!(
                "backup.vault {:?} must be https://HOST[:PORT] (no path, query or credentials)",
                self.vault
            ));
        }
        if self.sources.is_empty() {
            return Err("backup.sources must name at least one path".into());
        }
        let mut seen = std::collections::HashSet::new();
        for s in &self.sources {
            if !s.starts_with('/') {
                return Err(format!("backup.sources path {s:?} must be absolute"));
            }
            if !seen.insert(s.as_str()) {
                return Err(format!("backup.sources lists {s:?} twice"));
            }
        }
        if self.excludes.iter().any(|e| e.trim().is_empty()) {
            return Err("backup.excludes must not hold an empty pattern".into());
        }
        if self.every_secs < MIN_BACKUP_EVERY_SECS {
            return Err(format!("backup.every_secs must be at least {MIN_BACKUP_EVERY_SECS}"));
        }
        if let Some(dir) = &self.restore_dir {
            if !dir.is_absolute() {
                return Err(format!("backup.restore_dir {} must be absolute", dir.display()));
            }
            // Checked on the text: `Path::components` drops inner `.` components.
            if dir.to_string_lossy().split('/').any(|c| c == "." || c == "..") {
                return Err(format!("backup.restore_dir {} must not contain . or ..", dir.display()));
            }
            if let Some(source) = self.source_holding(dir) {
                return Err(format!(
                    "backup.restore_dir {} lies inside the backed-up source {source}; restores go \
                     outside the live tree",
                    dir.display()
                ));
            }
        }
        Ok(())
    }

    /// The first source that `path` is, or lies inside (compared by path components, as
    /// written: the agent compares the resolved paths again).
    pub fn source_holding(&self, path: &std::path::Path) -> Option<&str> {
        self.sources.iter().map(String::as_str).find(|s| path.starts_with(s))
    }
}

/// Log files the agent follows (across rotation and truncation, resuming where it stopped) and
/// sends line by line as parsed [`kind::LOG_EVENT`] events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogCollectionPolicy {
    #[serde(default)]
    pub files: Vec<LogFileSource>,
    /// Milliseconds between two looks at the files. Default 1000.
    #[serde(default = "default_log_poll_ms")]
    pub poll_ms: u64,
}

/// Shortest poll interval a policy may ask for: below it the agent would spin on stat calls.
pub const MIN_LOG_POLL_MS: u64 = 100;

fn default_log_poll_ms() -> u64 {
    1000
}

impl Default for LogCollectionPolicy {
    fn default() -> Self {
        LogCollectionPolicy { files: Vec::new(), poll_ms: default_log_poll_ms() }
    }
}

/// One followed log file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogFileSource {
    /// Absolute path; it need not exist yet.
    pub path: String,
    /// A `mamori-logs` format name (`authlog`, `auditd`, `json`, `rfc3164`, `rfc5424`, `cef`,
    /// `leef`, `panos`, `fortigate`, `journald`, `auto`); absent means detected per line.
    #[serde(default)]
    pub format: Option<String>,
}

impl LogCollectionPolicy {
    /// Checks what the agent cannot check for itself before it runs: absolute, distinct paths,
    /// formats that `is_known_format` accepts, a sane poll interval. The message names the
    /// offending entry.
    pub fn check(&self, is_known_format: impl Fn(&str) -> bool) -> Result<(), String> {
        if self.poll_ms < MIN_LOG_POLL_MS {
            return Err(format!("logs.poll_ms must be at least {MIN_LOG_POLL_MS}"));
        }
        let mut seen = std::collections::HashSet::new();
        for f in &self.files {
            if !f.path.starts_with('/') {
                return Err(format!("logs.files path {:?} must be absolute", f.path));
            }
            if !seen.insert(f.path.as_str()) {
                return Err(format!("logs.files lists {:?} twice", f.path));
            }
            if let Some(name) = &f.format {
                if !is_known_format(name) {
                    return Err(format!("logs.files {:?}: unknown format {name:?}", f.path));
                }
            }
        }
        Ok(())
    }
}

/// File integrity monitoring: a baseline of the watched trees, real-time change events, a
/// throttled full check on a schedule, and a malware scan of every new or modified file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FimPolicy {
    /// Absolute paths to watch. Default: /etc, /usr/bin, /usr/sbin, /bin, /sbin, /boot.
    #[serde(default = "default_fim_paths")]
    pub paths: Vec<String>,
    /// Globs matched against full paths; a matching directory is not entered.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Share of one core the full check may use (0 < share ≤ 1). Default 0.25.
    #[serde(default = "default_cpu_share")]
    pub cpu_share: f64,
    /// Seconds between full checks (which catch what real time missed). Default one day.
    #[serde(default = "default_check_every_secs")]
    pub check_every_secs: u64,
    /// Scan new and modified files with the malware engine. Default on.
    #[serde(default = "default_true")]
    pub scan_on_write: bool,
    /// YARA rule files or directories for on-write scans (EICAR is always detected).
    #[serde(default)]
    pub rules: Vec<String>,
    /// Hash lists for on-write scans.
    #[serde(default)]
    pub hashes: Vec<String>,
    /// Ransomware behaviour detection over the same real-time events. On by default; `null`
    /// turns it off.
    #[serde(default = "default_ransomware")]
    pub ransomware: Option<RansomwarePolicy>,
}

/// Ransomware behaviour detection on the FIM watcher's events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RansomwarePolicy {
    /// Directories where the agent plants decoy files (canaries) that no person or program
    /// should touch; touching one is a critical verdict. Data directories the admin names
    /// (shares, document folders). Each must be inside a FIM path.
    #[serde(default)]
    pub canary_dirs: Vec<String>,
}

fn default_ransomware() -> Option<RansomwarePolicy> {
    Some(RansomwarePolicy::default())
}

pub const DEFAULT_FIM_PATHS: &[&str] = &["/etc", "/usr/bin", "/usr/sbin", "/bin", "/sbin", "/boot"];

fn default_fim_paths() -> Vec<String> {
    DEFAULT_FIM_PATHS.iter().map(|p| p.to_string()).collect()
}

fn default_cpu_share() -> f64 {
    0.25
}

fn default_check_every_secs() -> u64 {
    86_400
}

fn default_true() -> bool {
    true
}

impl Default for FimPolicy {
    fn default() -> Self {
        FimPolicy {
            paths: default_fim_paths(),
            exclude: Vec::new(),
            cpu_share: default_cpu_share(),
            check_every_secs: default_check_every_secs(),
            scan_on_write: true,
            rules: Vec::new(),
            hashes: Vec::new(),
            ransomware: default_ransomware(),
        }
    }
}

/// Responses to detections. Every action taken (or, in dry-run, that would have been taken) is
/// reported as a `response.action` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponsePolicy {
    /// Say what would be done, do nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Move files with malware findings (on-write and scheduled scans) into the quarantine
    /// (the same as a `malware` rule with `quarantine`, kept for older policies).
    #[serde(default)]
    pub quarantine_malware: bool,
    /// Actions per detection kind and severity. Every rule whose detection and minimum severity
    /// match applies; the actions are the union. Default: [`default_response_rules`].
    #[serde(default = "default_response_rules")]
    pub rules: Vec<ResponseRule>,
    /// How the host is isolated when a rule says `isolate`.
    #[serde(default)]
    pub isolation: IsolationPolicy,
}

impl Default for ResponsePolicy {
    fn default() -> Self {
        ResponsePolicy {
            dry_run: false,
            quarantine_malware: false,
            rules: default_response_rules(),
            isolation: IsolationPolicy::default(),
        }
    }
}

impl ResponsePolicy {
    /// The actions for a detection of `detection` at `severity` (sorted, each once; `Alert` is
    /// implied and not listed).
    pub fn actions_for(&self, detection: DetectionKind, severity: Severity) -> Vec<ResponseActionKind> {
        let mut out: Vec<ResponseActionKind> = self
            .rules
            .iter()
            .filter(|r| r.detection == detection && severity >= r.min_severity)
            .flat_map(|r| r.actions.iter().copied())
            .filter(|a| *a != ResponseActionKind::Alert)
            .collect();
        if detection == DetectionKind::Malware && self.quarantine_malware {
            out.push(ResponseActionKind::Quarantine);
        }
        out.sort();
        out.dedup();
        out
    }
}

/// Default response rules: a ransomware verdict stops the process. Isolation is opt-in (a rule
/// with `isolate`): cutting a clinical host off the network needs an allow-list (DNS, the EMR,
/// PACS) that only the site's admin can write. Malware findings only alert unless the admin
/// adds `quarantine`.
pub fn default_response_rules() -> Vec<ResponseRule> {
    vec![ResponseRule {
        detection: DetectionKind::Ransomware,
        min_severity: Severity::High,
        actions: vec![ResponseActionKind::StopProcess],
    }]
}

/// One line of the response policy: for `detection` at `min_severity` or above, do `actions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseRule {
    pub detection: DetectionKind,
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
    pub actions: Vec<ResponseActionKind>,
}

fn default_min_severity() -> Severity {
    Severity::Low
}

/// What found something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectionKind {
    /// A malware scan finding (YARA rule, hash IOC, built-in), on-write or scheduled.
    Malware,
    /// A ransomware behaviour verdict.
    Ransomware,
    /// A Sigma detection or correlation rule at the manager (logs from firewalls and servers,
    /// the agents' collected logs and alerts), about a host that is an enrolled agent. Only
    /// `isolate` applies: there is no file or process to act on.
    Sigma,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseActionKind {
    /// Only the detection event (always sent).
    Alert,
    /// Move the file into the quarantine store.
    Quarantine,
    /// SIGSTOP the process at once, then kill it.
    StopProcess,
    /// Cut the host off the network except the manager and the allow-list.
    Isolate,
}

impl ResponseActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseActionKind::Alert => "alert",
            ResponseActionKind::Quarantine => "quarantine",
            ResponseActionKind::StopProcess => "stop_process",
            ResponseActionKind::Isolate => "isolate",
        }
    }
}

/// Host isolation: what stays reachable, and when it ends by itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IsolationPolicy {
    /// Reachable besides the manager (e.g. DNS, the EMR and PACS servers).
    #[serde(default)]
    pub allow: Vec<IsolationAllow>,
    /// Release the isolation by itself once a full scan of `clean_scan_paths` finds nothing
    /// (after the offending process is gone). Off: only an admin releases.
    #[serde(default)]
    pub release_on_clean_scan: bool,
    /// What that full scan covers. Default `/` (one file system at a time, pseudo file systems
    /// skipped by the walk).
    #[serde(default = "default_clean_scan_paths")]
    pub clean_scan_paths: Vec<String>,
}

impl IsolationAllow {
    /// The entry in the allow-list syntax `[in] ADDR[/PREFIX] [PROTO[/PORT]|any/PORT]` that
    /// `mamori-isolate` parses (and validates), e.g. `in 192.168.5.9 tcp/22`.
    pub fn spec(&self) -> String {
        let mut text = String::new();
        if self.inbound {
            text.push_str("in ");
        }
        text.push_str(self.cidr.trim());
        match (&self.proto, self.port) {
            (Some(p), Some(port)) => text.push_str(&format!(" {p}/{port}")),
            (Some(p), None) => text.push_str(&format!(" {p}")),
            (None, Some(port)) => text.push_str(&format!(" any/{port}")),
            (None, None) => {}
        }
        text
    }
}

fn default_clean_scan_paths() -> Vec<String> {
    vec!["/".to_string()]
}

/// One allow-list entry: an address or CIDR, optionally one protocol and port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsolationAllow {
    /// `10.0.5.0/24`, `192.168.1.53`, `fd00::/64`.
    pub cidr: String,
    /// `tcp` or `udp`; absent means any.
    #[serde(default)]
    pub proto: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// Also accept connections *from* this peer (e.g. the admin's workstation for SSH).
    #[serde(default)]
    pub inbound: bool,
    /// Shown in the rule comment and events (`DNS`, `EMR`).
    #[serde(default)]
    pub label: String,
}

fn default_heartbeat_secs() -> u64 {
    30
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            version: 0,
            heartbeat_secs: default_heartbeat_secs(),
            scans: Vec::new(),
            watch_paths: Vec::new(),
            fim: None,
            response: ResponsePolicy::default(),
            logs: None,
            backup: None,
        }
    }
}

/// A `mamori scan` the agent runs on a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledScan {
    pub name: String,
    pub paths: Vec<String>,
    /// Seconds between the end of one run and the start of the next.
    pub every_secs: u64,
    #[serde(default)]
    pub rules: Vec<String>,
    #[serde(default)]
    pub hashes: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub quarantine: bool,
}

/// One event as the agent sends it. `data` is passed through and stored verbatim.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireEvent {
    /// Agent-assigned, strictly increasing per agent; (agent, seq) is stored once.
    pub seq: u64,
    pub kind: String,
    /// When it happened, by the agent's clock.
    pub time_ms: i64,
    pub data: Box<RawValue>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EventBatch {
    pub events: Vec<WireEvent>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchAck {
    /// Events stored by this request.
    pub stored: u64,
    /// Events already stored earlier (a retry after a lost acknowledgement).
    pub duplicates: u64,
}

/// What the agent keeps in its spool for each event (the spool adds seq and kind).
#[derive(Debug, Serialize, Deserialize)]
pub struct SpooledEvent {
    pub time_ms: i64,
    pub data: Box<RawValue>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenCreateRequest {
    pub ttl_secs: u64,
    pub uses: u32,
    #[serde(default)]
    pub label: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenCreated {
    pub id: i64,
    /// Shown once; the manager keeps only its hash.
    pub token: String,
    pub expires_at: String,
    pub uses: u32,
    pub label: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentSummary {
    pub id: String,
    pub hostname: String,
    /// `online`, `offline`, `revoked` or `replaced`.
    pub status: String,
    pub agent_version: String,
    pub enrolled_at: String,
    pub last_seen: Option<String>,
    pub policy_version: u64,
    pub cert_not_after: String,
    pub replaced_by: Option<String>,
    pub spool_pending: u64,
    pub spool_dropped_total: u64,
    /// As the agent last reported it in a heartbeat (false before any heartbeat).
    #[serde(default)]
    pub isolated: bool,
    /// Commands queued for the agent that it has not reported on yet.
    #[serde(default)]
    pub pending_commands: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EventRecord {
    /// Manager-assigned, increasing in arrival order; use as `after` to follow new events.
    pub id: i64,
    pub agent_id: String,
    pub seq: u64,
    pub kind: String,
    pub time: String,
    pub received: String,
    pub data: Box<RawValue>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EventPage {
    pub events: Vec<EventRecord>,
}

/// One log event received from another device (firewall, server), as parsed.
#[derive(Debug, Serialize, Deserialize)]
pub struct LogEventRecord {
    /// Manager-assigned, increasing in arrival order; use as `after` to follow new ones.
    pub id: i64,
    /// How it came: `udp 10.0.0.1`, `tcp 10.0.0.1`, `tls 10.0.0.1`.
    pub source: String,
    pub time: String,
    pub received: String,
    /// The flat event (source fields, ECS-style common fields, `log.original`).
    pub data: Box<RawValue>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LogEventPage {
    pub events: Vec<LogEventRecord>,
}

/// A Sigma detection or correlation at the manager.
#[derive(Debug, Serialize, Deserialize)]
pub struct LogDetectionRecord {
    pub id: i64,
    /// `sigma` (one event matched a rule) or `correlation`.
    pub kind: String,
    pub rule_id: String,
    pub title: String,
    pub level: String,
    /// The host the events name, when they name one.
    pub host: Option<String>,
    /// Where the event came from: a syslog sender or `agent <id>`.
    pub source: String,
    pub time: String,
    pub created: String,
    /// The rule (id, title, level, tags, ATT&CK techniques) and the matching event; for a
    /// correlation also its group, window and count.
    pub data: Box<RawValue>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LogDetectionPage {
    pub detections: Vec<LogDetectionRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeResponse {
    pub id: String,
    pub revoked: bool,
    /// Open connections of this agent that were closed.
    pub connections_closed: u64,
}

pub mod vault;

/// Event kinds the agent emits.
pub mod kind {
    pub const AGENT_STARTED: &str = "agent.started";
    pub const SCAN_FINDING: &str = "scan.finding";
    pub const SCAN_PROBLEM: &str = "scan.problem";
    pub const SCAN_SUMMARY: &str = "scan.summary";
    pub const POLICY_APPLIED: &str = "agent.policy_applied";
    /// A file created, modified, deleted or changed in attributes under a watched path.
    pub const FIM_CHANGE: &str = "fim.change";
    /// A baseline was built or a full check finished (counts, problems).
    pub const FIM_CHECK: &str = "fim.check";
    /// A response taken or (dry run) planned, with its outcome.
    pub const RESPONSE_ACTION: &str = "response.action";
    /// A ransomware behaviour verdict (subject, score, signals, severity).
    pub const RANSOMWARE_DETECTED: &str = "ransomware.detected";
    /// One line of a log file the policy names, parsed by `mamori-logs`: `data` is the flat
    /// event (dotted keys) plus `log.file.path` and `host.name`.
    pub const LOG_EVENT: &str = "log.event";
    /// A followed log file is missing or unreadable, or its saved position was damaged
    /// (`event.action` `log_file_missing` / `log_file_error` / `log_position_reset`).
    pub const LOG_PROBLEM: &str = "log.problem";
    /// A scheduled backup (policy `backup`) committed a snapshot to the vault: `mamori.backup`
    /// holds the vault, the sources, the snapshot (name, suspicious, reasons), the counts
    /// (files, files unchanged, bytes, bytes uploaded), the first problems and their count,
    /// and the seconds it took.
    pub const BACKUP_COMPLETED: &str = "backup.completed";
    /// A scheduled backup failed and made no snapshot (`error.message` says why); it is tried
    /// again after at most `BACKUP_RETRY_SECS`.
    pub const BACKUP_FAILED: &str = "backup.failed";
    /// A `backup_restore` command restored a snapshot: `mamori.backup.restore` holds the
    /// snapshot (name, time, suspicious), the new directory (`target`), the counts (files,
    /// dirs, symlinks, bytes), the vault, and `command_id` / `reason`.
    pub const BACKUP_RESTORED: &str = "backup.restored";
    /// Kinds counted as detections by the admin API.
    pub const DETECTIONS: &[&str] = &[SCAN_FINDING, RANSOMWARE_DETECTED];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_without_logs_still_parses_and_logs_default_sensibly() {
        let old: Policy = serde_json::from_str(r#"{"version":3,"heartbeat_secs":30}"#).unwrap();
        assert_eq!(old.logs, None);
        let p: Policy = serde_json::from_str(
            r#"{"logs":{"files":[{"path":"/var/log/auth.log","format":"authlog"},{"path":"/x"}]}}"#,
        )
        .unwrap();
        let logs = p.logs.unwrap();
        assert_eq!(logs.poll_ms, 1000);
        assert_eq!(logs.files[0].format.as_deref(), Some("authlog"));
        assert_eq!(logs.files[1].format, None);
    }

    #[test]
    fn backup_policies_parse_with_defaults_and_are_checked() {
        let old: Policy = serde_json::from_str(r#"{"version":3}"#).unwrap();
        assert_eq!(old.backup, None);
        let p: Policy = serde_json::from_str(
            r#"{"backup":{"vault":"https://vault.local:8444","sources":["/srv/share"]}}"#,
        )
        .unwrap();
        let b = p.backup.unwrap();
        assert_eq!((b.every_secs, b.excludes.len()), (86_400, 0));
        assert_eq!(b.check(), Ok(()));
        assert_eq!(BackupPolicy { vault: "https://10.0.0.5/".into(), ..b.clone() }.check(), Ok(()));

        let cases: [(BackupPolicy, &str); 10] = [
            (BackupPolicy { vault: "http://vault.local".into(), ..b.clone() }, "https://"),
            (BackupPolicy { vault: "vault.local:8444".into(), ..b.clone() }, "https://"),
            (BackupPolicy { vault: "https://".into(), ..b.clone() }, "HOST"),
            (BackupPolicy { vault: "https://u:p@vault".into(), ..b.clone() }, "credentials"),
            (BackupPolicy { vault: "https://vault/x?y".into(), ..b.clone() }, "no path"),
            (BackupPolicy { sources: vec![], ..b.clone() }, "at least one"),
            (BackupPolicy { sources: vec!["srv".into()], ..b.clone() }, "absolute"),
            (BackupPolicy { sources: vec!["/a".into(), "/a".into()], ..b.clone() }, "twice"),
            (BackupPolicy { excludes: vec![" ".into()], ..b.clone() }, "empty pattern"),
            (BackupPolicy { every_secs: 599, ..b.clone() }, "every_secs"),
        ];
        for (policy, want) in cases {
            let err = policy.check().unwrap_err();
            assert!(err.contains(want), "{policy:?}: {err}");
        }
    }

    #[test]
    fn restore_dirs_are_optional_absolute_and_outside_the_sources() {
        let p: Policy = serde_json::from_str(
            r#"{"backup":{"vault":"https://vault.local:8444","sources":["/srv/share","/home"]}}"#,
        )
        .unwrap();
        let b = p.backup.unwrap();
        assert_eq!(b.restore_dir, None, "old policies parse");
        assert!(!serde_json::to_string(&b).unwrap().contains("restore_dir"), "absent stays absent");
        let with = |dir: &str| BackupPolicy { restore_dir: Some(dir.into()), ..b.clone() };
        for ok in ["/var/restores", "/srv/restores", "/srv/share2/r", "/", "/srv"] {
            assert_eq!(with(ok).check(), Ok(()), "{ok}");
        }
        let parsed: Policy = serde_json::from_str(
            r#"{"backup":{"vault":"https://v","sources":["/a"],"restore_dir":"/var/restores"}}"#,
        )
        .unwrap();
        assert_eq!(parsed.backup.unwrap().restore_dir, Some("/var/restores".into()));
        for (bad, want) in [
            ("restores", "absolute"),
            ("", "absolute"),
            ("/var/../srv/share", ". or .."),
            ("/var/./restores", ". or .."),
            ("/var/restores/..", ". or .."),
            ("/srv/share", "inside the backed-up source /srv/share"),
            ("/srv/share/", "inside the backed-up source /srv/share"),
            ("/srv//share/restores", "inside the backed-up source /srv/share"),
            ("/home/x/restores", "inside the backed-up source /home"),
        ] {
            let err = with(bad).check().unwrap_err();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn snapshot_names_are_exactly_sixty_four_lowercase_hex_digits() {
        let name = "0123456789abcdef".repeat(4);
        assert!(is_snapshot_name(&name));
        assert!(is_snapshot_name(&"f".repeat(64)));
        let upper = name.to_ascii_uppercase();
        let long = format!("{name}0");
        let with_slash = format!("{}/{}", &name[..31], &name[32..]);
        let with_dots = format!("..{}", &name[2..]);
        let with_nul = format!("{}\0", &name[..63]);
        let non_ascii = format!("{}é", &name[..62]);
        for bad in [
            "",
            "latest",
            &name[..12],
            &name[..63],
            long.as_str(),
            upper.as_str(),
            with_slash.as_str(),
            with_dots.as_str(),
            with_nul.as_str(),
            non_ascii.as_str(),
            "../../../../etc/passwd",
            &"g".repeat(64),
            &" ".repeat(64),
        ] {
            assert!(!is_snapshot_name(bad), "{bad:?} accepted");
        }
        assert_eq!(non_ascii.len(), 64, "same length in bytes, still refused");
    }

    #[test]
    fn backup_restore_is_a_command_with_a_target() {
        let a = CommandAction::BackupRestore;
        assert_eq!(a.as_str(), "backup_restore");
        assert!(a.needs_target());
        assert!(CommandAction::ALL.contains(&a));
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"backup_restore\"");
        for a in CommandAction::ALL {
            let wire: CommandAction = serde_json::from_str(&format!("\"{}\"", a.as_str())).unwrap();
            assert_eq!(wire, a);
        }
    }

    #[test]
    fn log_policies_are_checked() {
        let known = |n: &str| n == "authlog";
        let file = |path: &str, format: Option<&str>| LogFileSource {
            path: path.into(),
            format: format.map(String::from),
        };
        let ok =
            LogCollectionPolicy { files: vec![file("/var/log/auth.log", Some("authlog"))], poll_ms: 1000 };
        assert_eq!(ok.check(known), Ok(()));
        let cases = [
            (vec![file("var/log/x", None)], 1000, "must be absolute"),
            (vec![file("/a", Some("nope"))], 1000, "unknown format \"nope\""),
            (vec![file("/a", None), file("/a", None)], 1000, "twice"),
            (vec![], 10, "poll_ms"),
        ];
        for (files, poll_ms, want) in cases {
            let err = LogCollectionPolicy { files, poll_ms }.check(known).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
    }
}
