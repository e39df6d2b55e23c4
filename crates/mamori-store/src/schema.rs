//! Schema migrations, tracked in `PRAGMA user_version`.
//!
//! `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`. Migrations are append-only: a
//! released one is never edited, because databases in the field have already run it.

use rusqlite::{Connection, TransactionBehavior};

use crate::Error;

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    "
    CREATE TABLE tokens (
        id            INTEGER PRIMARY KEY,
        hash          BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),
        label         TEXT NOT NULL,
        created_ms    INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        uses_left     INTEGER NOT NULL CHECK (uses_left >= 0),
        uses_total    INTEGER NOT NULL CHECK (uses_total >= uses_left)
    );

    -- `key` is what events reference: an 8-byte integer per event instead of a text id, and
    -- the rowid lookup is the cheapest join there is.
    CREATE TABLE agents (
        key                 INTEGER PRIMARY KEY,
        id                  TEXT NOT NULL UNIQUE,
        hostname            TEXT NOT NULL,
        machine_id          TEXT NOT NULL,
        previous_device_id  TEXT,
        status              TEXT NOT NULL CHECK (status IN ('active', 'revoked', 'replaced')),
        agent_version       TEXT NOT NULL,
        token_id            INTEGER REFERENCES tokens (id),
        enrolled_ms         INTEGER NOT NULL,
        last_seen_ms        INTEGER,
        policy_version      INTEGER NOT NULL DEFAULT 0 CHECK (policy_version >= 0),
        cert_serial         TEXT NOT NULL,
        cert_not_after_ms   INTEGER NOT NULL,
        replaced_by         TEXT,
        replaced_ms         INTEGER,
        revoked_ms          INTEGER,
        spool_pending       INTEGER NOT NULL DEFAULT 0 CHECK (spool_pending >= 0),
        spool_dropped_total INTEGER NOT NULL DEFAULT 0 CHECK (spool_dropped_total >= 0)
    );
    CREATE INDEX agents_machine_id ON agents (machine_id);

    -- Every certificate ever issued, so an audit can map any serial back to its agent.
    CREATE TABLE certs (
        id           INTEGER PRIMARY KEY,
        serial       TEXT NOT NULL UNIQUE,
        agent_key    INTEGER NOT NULL REFERENCES agents (key),
        not_after_ms INTEGER NOT NULL,
        issued_ms    INTEGER NOT NULL,
        reason       TEXT NOT NULL CHECK (reason IN ('enroll', 'renew'))
    );
    CREATE INDEX certs_agent ON certs (agent_key);

    CREATE TABLE policies (
        version    INTEGER PRIMARY KEY CHECK (version >= 1),
        json       TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );

    -- No CHECK constraints here on purpose: ingest inserts with ON CONFLICT DO NOTHING, and the
    -- store validates seq itself. No full-text index either: it would cost more per insert than
    -- the rest of the row, and text search is a LIKE scan bounded by the other filters.
    -- UNIQUE(agent_key, seq) doubles as the index for per-agent queries.
    CREATE TABLE events (
        id          INTEGER PRIMARY KEY,
        agent_key   INTEGER NOT NULL REFERENCES agents (key),
        seq         INTEGER NOT NULL,
        kind        TEXT NOT NULL,
        time_ms     INTEGER NOT NULL,
        received_ms INTEGER NOT NULL,
        data        TEXT NOT NULL,
        UNIQUE (agent_key, seq)
    );
    CREATE INDEX events_time ON events (time_ms);
    ",
    // 2: commands for agents (release / isolate), and the isolation state agents report.
    "
    ALTER TABLE agents ADD COLUMN isolated INTEGER NOT NULL DEFAULT 0 CHECK (isolated IN (0, 1));

    -- `action` has no CHECK list on purpose: a new action would otherwise need the table rebuilt;
    -- the store checks it on insert. A row is pending while `completed_ms` is NULL, and a result
    -- always comes with its outcome.
    CREATE TABLE commands (
        id           TEXT PRIMARY KEY,
        agent_id     TEXT NOT NULL REFERENCES agents (id),
        action       TEXT NOT NULL,
        reason       TEXT NOT NULL,
        created_ms   INTEGER NOT NULL,
        completed_ms INTEGER,
        success      INTEGER CHECK (success IN (0, 1)),
        message      TEXT,
        CHECK ((completed_ms IS NULL) = (success IS NULL))
    );
    CREATE INDEX commands_agent ON commands (agent_id, created_ms);
    -- What heartbeats are answered from (loaded at start) stays small however long the history.
    CREATE INDEX commands_pending ON commands (created_ms) WHERE completed_ms IS NULL;
    ",
    // 3: events received as logs (syslog senders, collected files) and the detections that rules
    // made of them. Logs have no agent and no sequence number, so they get their own table with
    // one index, the time (range queries and retention), and nothing else to keep ingest cheap.
    "
    CREATE TABLE log_events (
        id          INTEGER PRIMARY KEY,
        source      TEXT NOT NULL,
        time_ms     INTEGER NOT NULL,
        received_ms INTEGER NOT NULL,
        line        TEXT NOT NULL
    );
    CREATE INDEX log_events_time ON log_events (time_ms);
    CREATE TABLE detections (
        id          INTEGER PRIMARY KEY,
        kind        TEXT NOT NULL CHECK (kind IN ('sigma', 'correlation')),
        rule_id     TEXT NOT NULL,
        title       TEXT NOT NULL,
        level       TEXT NOT NULL,
        host        TEXT,
        source      TEXT NOT NULL,
        time_ms     INTEGER NOT NULL,
        created_ms  INTEGER NOT NULL,
        data        TEXT NOT NULL
    );
    CREATE INDEX detections_time ON detections (time_ms);
    ",
    // 4: the web console: accounts, triage of detections, suppressions (false positives),
    // site settings and the tamper-evident audit log; commands get a target (the quarantine id
    // of a restore or delete). Sessions live in the manager's memory only:
    // a restart logs everybody out, and no session token ever reaches the disk.
    "
    ALTER TABLE commands ADD COLUMN target TEXT NOT NULL DEFAULT '';
    CREATE TABLE users (
        id                  INTEGER PRIMARY KEY,
        username            TEXT NOT NULL UNIQUE,
        role                TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'auditor')),
        password_phc        TEXT NOT NULL,
        totp_secret         TEXT,
        totp_last_step      INTEGER,
        disabled            INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
        failures            INTEGER NOT NULL DEFAULT 0,
        first_failure_ms    INTEGER,
        locked_until_ms     INTEGER,
        lang                TEXT NOT NULL DEFAULT 'ja',
        created_ms          INTEGER NOT NULL,
        last_login_ms       INTEGER,
        password_changed_ms INTEGER NOT NULL
    );
    CREATE TABLE triage (
        detection_id INTEGER PRIMARY KEY REFERENCES detections (id) ON DELETE CASCADE,
        status       TEXT NOT NULL,
        note         TEXT NOT NULL,
        updated_by   TEXT NOT NULL,
        updated_ms   INTEGER NOT NULL
    );
    CREATE INDEX triage_status ON triage (status);
    CREATE TABLE suppressions (
        id           INTEGER PRIMARY KEY,
        rule_id      TEXT NOT NULL,
        host         TEXT,
        note         TEXT NOT NULL,
        created_by   TEXT NOT NULL,
        created_ms   INTEGER NOT NULL,
        detection_id INTEGER
    );
    CREATE TABLE settings (
        key        TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    -- The chain itself is verified by mamori-audit; the table only keeps it in order.
    CREATE TABLE audit_log (
        seq       INTEGER PRIMARY KEY,
        time_ms   INTEGER NOT NULL,
        actor     TEXT NOT NULL,
        action    TEXT NOT NULL,
        target    TEXT NOT NULL,
        detail    TEXT NOT NULL,
        prev_hash BLOB NOT NULL,
        hash      BLOB NOT NULL
    );
    CREATE INDEX audit_log_action ON audit_log (action, seq);
    CREATE TABLE audit_checkpoints (
        seq       INTEGER PRIMARY KEY,
        hash      BLOB NOT NULL,
        time_ms   INTEGER NOT NULL,
        signature BLOB NOT NULL
    );
    ",
    // 5: passkeys (WebAuthn), the alternative second factor. A credential belongs to one
    // account; `data` is the credential as mamori-auth serialises it (public key, counter).
    "
    CREATE TABLE passkeys (
        id            INTEGER PRIMARY KEY,
        user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        credential_id TEXT NOT NULL UNIQUE,
        name          TEXT NOT NULL,
        data          TEXT NOT NULL,
        sign_count    INTEGER NOT NULL DEFAULT 0 CHECK (sign_count >= 0),
        created_ms    INTEGER NOT NULL,
        last_used_ms  INTEGER
    );
    CREATE INDEX passkeys_user ON passkeys (user_id);
    ",
];

pub(crate) fn read_version(conn: &Connection) -> Result<u32, Error> {
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    u32::try_from(v).map_err(|_| Error::BadSchemaVersion(v))
}

/// Applies every migration the database is missing, one transaction each.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), Error> {
    loop {
        // The version is read inside an IMMEDIATE transaction so that two processes opening a
        // fresh file at the same time cannot both run the same migration: the second waits for
        // the write lock and then sees the new version.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found = read_version(&tx)?;
        if found > SCHEMA_VERSION {
            return Err(Error::SchemaTooNew { found, supported: SCHEMA_VERSION });
        }
        let Some(sql) = MIGRATIONS.get(found as usize) else {
            return Ok(()); // up to date; dropping `tx` ends the empty transaction
        };
        tx.execute_batch(sql)?;
        // PRAGMA takes no bound parameters; `found + 1` is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {}", found + 1))?;
        tx.commit()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    /// A database written by a build that knew only version 1 is upgraded in place: existing
    /// agents get `isolated = 0` and can be given commands.
    #[test]
    fn version_1_database_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch("PRAGMA user_version = 1").unwrap();
            conn.execute(
                "INSERT INTO agents (id, hostname, machine_id, status, agent_version, enrolled_ms, cert_serial, \
                 cert_not_after_ms) VALUES ('old', 'h', 'm', 'active', '0.0.9', 1, 's', 2)",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let agent = store.get_agent("old").unwrap().unwrap();
        assert!(!agent.isolated);
        let cmd = store.queue_command("old", "isolate", "", 10).unwrap();
        assert_eq!(store.pending_commands("old").unwrap(), vec![cmd]);
    }
}
