use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while isolating, releasing or restoring. Errors are values:
/// nothing in this crate panics on bad input.
#[derive(Debug, thiserror::Error)]
pub enum IsolateError {
    /// An allow-list entry (or the manager address) was refused before anything was applied.
    #[error("invalid allow-list entry {entry:?}: {reason}")]
    InvalidEntry { entry: String, reason: String },

    /// The plan as a whole is unusable (for example no manager address).
    #[error("invalid isolation plan: {0}")]
    InvalidPlan(String),

    /// The network namespace name is not a plain name.
    #[error("invalid network namespace name {0:?}")]
    InvalidNetns(String),

    /// The named network namespace does not exist (or cannot be opened).
    #[error("cannot open network namespace {name:?} ({path}): {source}")]
    Netns { name: String, path: PathBuf, source: std::io::Error },

    /// The manager's host name did not resolve.
    #[error("cannot resolve manager address {host:?}: {reason}")]
    Resolve { host: String, reason: String },

    /// `nft` is not installed (or not at the configured path).
    #[error("nft not found ({path}): install the nftables package")]
    NftMissing { path: PathBuf },

    /// `nft` refused because we lack privileges.
    #[error("isolation needs root (CAP_NET_ADMIN): nft {action}: {stderr}")]
    PermissionDenied { action: &'static str, stderr: String },

    /// Any other `nft` failure, with its own message.
    #[error("nft {action} failed ({status}): {stderr}")]
    Nft { action: &'static str, status: String, stderr: String },

    /// Running `nft` failed at the operating-system level.
    #[error("cannot run nft ({path}): {source}")]
    Spawn { path: PathBuf, source: std::io::Error },

    /// The dead-man switch fired: the manager was not confirmed reachable within the timeout
    /// after applying, and the previous state was put back.
    #[error("manager not confirmed reachable within {timeout:?} after isolating; rolled back ({restored})")]
    VerifyFailed { timeout: Duration, restored: Restored },

    /// Applying or verifying failed AND putting the previous state back failed too: the host may
    /// be isolated without a working path to the manager. This needs a human.
    #[error("isolation failed ({cause}) and rolling it back failed too: {rollback}")]
    RollbackFailed { cause: String, rollback: String },

    /// Reading or writing the state file failed.
    #[error("isolation state file {path}: {source}")]
    State { path: PathBuf, source: std::io::Error },

    /// The state file exists but is not a valid isolation state.
    #[error("isolation state file {path} is not valid: {reason}")]
    StateCorrupt { path: PathBuf, reason: String },
}

/// What a rollback put back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restored {
    /// There was no isolation before: our table was deleted, the host is not isolated.
    NotIsolated,
    /// The host was already isolated with a verified plan: that plan was re-applied.
    PreviousPlan,
}

impl std::fmt::Display for Restored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Restored::NotIsolated => "isolation removed, host is not isolated",
            Restored::PreviousPlan => "previous isolation plan re-applied",
        })
    }
}

pub type Result<T, E = IsolateError> = std::result::Result<T, E>;
