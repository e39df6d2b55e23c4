//! The mamori manager's embedded store: one SQLite file holding enrollment tokens, agents and
//! their certificates, the versioned policy, the events agents ship, the commands queued for
//! agents, the logs received from other devices and the detections rules made of them ([`logs`]).
//!
//! A [`Store`] is one SQLite connection. It is `Send` but not `Sync`: the manager opens one per
//! thread, and SQLite's own file locking (WAL mode, a 10 s busy timeout) serialises writers across
//! them and across processes.
//!
//! # Durability and layout
//!
//! * WAL journal, `synchronous=FULL`: a call that returned `Ok` survives power loss, and readers
//!   never block the writer.
//! * The file is created with mode 0600 (SQLite gives the `-wal` and `-shm` files the same mode).
//! * The schema is versioned with `PRAGMA user_version`; [`Store::open`] applies missing migrations
//!   in order, each in its own transaction, and refuses a file written by a newer build
//!   ([`Error::SchemaTooNew`]) rather than guess at it.
//! * Events are keyed by an integer agent key, not the agent's text id, and carry exactly two
//!   indexes: `UNIQUE(agent_key, seq)` for at-least-once de-duplication and `time_ms` for range
//!   queries and retention. Ingest speed is what the schema is built around; see [`events`].
//!
//! # What this crate never does
//!
//! * It never stores an enrollment token secret, only its SHA-256 ([`mamori_pki::hash_token`]),
//!   and it never sees a private key: certificates are recorded by serial and expiry only.
//! * It never reads the clock or the environment, never chooses paths, never prints. Every time
//!   is an `i64` of Unix milliseconds passed in by the caller, which keeps tests deterministic.
//! * It never deletes an agent. Revoked and replaced agents stay, so that their ids stay
//!   untrusted ([`Store::untrusted_agent_ids`]) and their events keep an owner.
//! * It never parses event data: `data` is JSON text produced by the manager and stored
//!   verbatim. Policy JSON is checked for syntax only.

#![forbid(unsafe_code)]

mod agents;
mod bench;
mod commands;
pub mod console;
pub mod events;
pub mod logs;
mod policy;
mod query;
mod schema;
mod tokens;

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

pub use agents::{AgentRow, EnrollError, HeartbeatRow, NewAgent, TokenRefusal};
pub use bench::{raw_ingest_ceiling, synthetic_event, IngestCeiling};
pub use commands::{CommandRow, COMMAND_ACTIONS, MAX_COMMAND_LIST};
pub use console::{
    AuditCheckpointRow, AuditRow, FailureState, PasskeyRow, SuppressionRow, TriageRow, UserRow,
};
pub use events::{AgentBatch, EventFilter, EventRow, NewEvent, MAX_QUERY_LIMIT};
pub use logs::{
    DetectionFilter, DetectionKind, DetectionRow, LogEventRow, LogFilter, NewDetection, NewLogEvent,
};
pub use schema::SCHEMA_VERSION;
pub use tokens::TokenRow;

/// How long a statement waits for another connection's write lock before failing with "database
/// is locked". Long enough to ride out a big group commit or a retention chunk, short enough that a
/// stuck writer shows up as an error rather than a hang.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything that can go wrong in the store, apart from enrollment refusals ([`EnrollError`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create database file {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "database schema version {found} is newer than the newest this build of mamori knows \
         ({supported}); run the mamori version that wrote it, or a newer one (downgrades are not supported)"
    )]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("database schema version {0} is not valid (negative or too large)")]
    BadSchemaVersion(i64),
    #[error("SQLite refused WAL journal mode (it reported {0:?}); is the file on a network filesystem?")]
    NoWal(String),
    #[error("no agent with id {0:?}")]
    UnknownAgent(String),
    #[error("agent has no command with id {0:?}")]
    UnknownCommand(String),
    #[error("an agent with id {0:?} already exists")]
    AgentExists(String),
    #[error("agent {id:?} is {status}, not active")]
    AgentNotActive { id: String, status: String },
    #[error("an enrollment token with this hash already exists")]
    TokenExists,
    #[error("a certificate with serial {0} is already recorded")]
    CertExists(String),
    #[error("event seq {seq} from agent {agent_id:?} is larger than the store can hold (at most {max})", max = i64::MAX)]
    SeqTooLarge { agent_id: String, seq: u64 },
    #[error("{field} = {value} is larger than the store can hold (at most {max})", max = i64::MAX)]
    TooLarge { field: &'static str, value: u64 },
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("policy is not valid JSON: {0}")]
    PolicyNotJson(#[source] serde_json::Error),
    #[error("{0} already exists; the ingest benchmark only writes to a fresh file")]
    AlreadyExists(PathBuf),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// The manager's database. See the crate documentation.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens or creates the database file at `path` (created with mode 0600; an existing file's
    /// mode is left alone), configures the connection and brings the schema up to
    /// [`SCHEMA_VERSION`]. The parent directory must exist.
    pub fn open(path: &Path) -> Result<Store, Error> {
        // SQLite would create a missing file with 0644 (minus umask); creating it ourselves first
        // is the only way to get 0600 from the start, with no window in which it is readable.
        // Only when it is missing: closing any descriptor of a file drops every POSIX lock this
        // process holds on it, including those of other open SQLite connections, so opening an
        // existing database "just to make sure" would corrupt their locking.
        match OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(Error::Create { path: path.to_path_buf(), source }),
        }

        let conn = Connection::open(path)?;
        // Before anything that takes a lock: switching to WAL and migrating both write.
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode = journal_mode_wal(&conn)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::NoWal(mode));
        }
        // FULL (not NORMAL) because an acknowledged event batch lets the agent delete it from its
        // spool: losing the last commits on power loss would lose events nobody still has.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut store = Store { conn };
        schema::migrate(&mut store.conn)?;
        Ok(store)
    }

    /// The schema version of the open database (equal to [`SCHEMA_VERSION`] after `open`).
    pub fn schema_version(&self) -> Result<u32, Error> {
        schema::read_version(&self.conn)
    }
}

/// Switches to WAL. On a fresh file this needs an exclusive lock, and SQLite answers "database
/// is locked" at once, without its busy handler, when another connection is converting the
/// same file at that moment, so wait here the way the busy timeout would.
fn journal_mode_wal(conn: &Connection) -> Result<String, Error> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

/// Converts a count or version to SQLite's signed integer, refusing rather than wrapping.
fn to_i64(field: &'static str, value: u64) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| Error::TooLarge { field, value })
}

/// Whether `err` is a UNIQUE or PRIMARY KEY constraint violation.
fn is_unique_violation(err: &rusqlite::Error) -> bool {
    match err {
        rusqlite::Error::SqliteFailure(e, _) => {
            e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rusqlite already sets a 5 s busy timeout, so a behavioural test with a shorter lock cannot
    /// tell ours from its default; check the connection settings directly.
    #[test]
    fn connection_settings() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.sqlite")).unwrap();
        let get = |pragma: &str| -> String {
            store
                .conn
                .query_row(&format!("PRAGMA {pragma}"), [], |r| r.get::<_, rusqlite::types::Value>(0))
                .map(|v| match v {
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Text(t) => t,
                    other => format!("{other:?}"),
                })
                .unwrap()
        };
        assert_eq!(get("busy_timeout"), BUSY_TIMEOUT.as_millis().to_string());
        assert_eq!(get("journal_mode"), "wal");
        assert_eq!(get("synchronous"), "2"); // FULL
        assert_eq!(get("foreign_keys"), "1");
    }
}
