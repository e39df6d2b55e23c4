//! What the web console keeps: accounts (password hash, second factors, lockout state), passkeys, the
//! triage state of detections and the suppressions made from false positives, site settings
//! (alerting, inventory, report recipients) and the audit log with its signed checkpoints.
//!
//! The store only keeps rows. Hashing passwords, checking codes and computing the audit chain
//! belong to `mamori-auth` and `mamori-audit`; the manager passes their results in.

use rusqlite::{params, OptionalExtension, Row, Transaction, TransactionBehavior};

use crate::{is_unique_violation, Error, Store};

/// The roles the console knows (the wire names of `mamori_auth::Role`).
pub const ROLES: &[&str] = &["admin", "operator", "auditor"];

/// The triage states a detection can be put in; a detection without a row is `open`.
pub const TRIAGE_STATES: &[&str] = &["acknowledged", "closed", "false_positive"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: i64,
    /// Normalised (lower case); unique.
    pub username: String,
    pub role: String,
    pub password_phc: String,
    /// Base32; `None` until the user has set up the second factor.
    pub totp_secret: Option<String>,
    /// The last TOTP step accepted, so that a code cannot be used twice.
    pub totp_last_step: Option<u64>,
    pub disabled: bool,
    pub failures: u32,
    pub first_failure_ms: Option<i64>,
    pub locked_until_ms: Option<i64>,
    pub lang: String,
    pub created_ms: i64,
    pub last_login_ms: Option<i64>,
    pub password_changed_ms: i64,
}

const USER_COLUMNS: &str =
    "id, username, role, password_phc, totp_secret, totp_last_step, disabled, failures, \
     first_failure_ms, locked_until_ms, lang, created_ms, last_login_ms, password_changed_ms";

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(0)?,
        username: r.get(1)?,
        role: r.get(2)?,
        password_phc: r.get(3)?,
        totp_secret: r.get(4)?,
        totp_last_step: r.get::<_, Option<i64>>(5)?.map(|s| s.max(0) as u64),
        disabled: r.get::<_, i64>(6)? != 0,
        failures: r.get::<_, i64>(7)?.clamp(0, u32::MAX as i64) as u32,
        first_failure_ms: r.get(8)?,
        locked_until_ms: r.get(9)?,
        lang: r.get(10)?,
        created_ms: r.get(11)?,
        last_login_ms: r.get(12)?,
        password_changed_ms: r.get(13)?,
    })
}

/// The lockout counters of one account, as `mamori-auth` computes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureState {
    pub failures: u32,
    pub first_failure_ms: Option<i64>,
    pub locked_until_ms: Option<i64>,
}

/// A registered passkey (see `mamori_auth::passkey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyRow {
    pub id: i64,
    pub user_id: i64,
    /// base64url, unique across accounts.
    pub credential_id: String,
    /// The label the user gave it ("office PC", "YubiKey").
    pub name: String,
    /// The credential as mamori-auth serialises it.
    pub data: String,
    pub sign_count: u32,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
}

/// A detection's triage row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriageRow {
    pub detection_id: i64,
    pub status: String,
    pub note: String,
    pub updated_by: String,
    pub updated_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuppressionRow {
    pub id: i64,
    pub rule_id: String,
    /// `None`: the rule on any host.
    pub host: Option<String>,
    pub note: String,
    pub created_by: String,
    pub created_ms: i64,
    /// The detection that was marked as a false positive.
    pub detection_id: Option<i64>,
}

/// One audit record as stored (the chain fields are computed by `mamori-audit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: u64,
    pub time_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheckpointRow {
    pub seq: u64,
    pub hash: Vec<u8>,
    pub time_ms: i64,
    pub signature: Vec<u8>,
}

fn audit_from_row(r: &Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        seq: r.get::<_, i64>(0)?.max(0) as u64,
        time_ms: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        target: r.get(4)?,
        detail: r.get(5)?,
        prev_hash: r.get(6)?,
        hash: r.get(7)?,
    })
}

impl Store {
    // ----- accounts -----

    /// Creates an account. `username` must already be normalised; a taken name is
    /// [`Error::Invalid`].
    pub fn create_user(
        &self,
        username: &str,
        role: &str,
        password_phc: &str,
        now_ms: i64,
    ) -> Result<UserRow, Error> {
        if !ROLES.contains(&role) {
            return Err(Error::Invalid("unknown role"));
        }
        let inserted = self.conn.execute(
            "INSERT INTO users (username, role, password_phc, created_ms, password_changed_ms) \
             VALUES (?1, ?2, ?3, ?4, ?4)",
            params![username, role, password_phc, now_ms],
        );
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Err(Error::Invalid("username already exists")),
            Err(e) => return Err(e.into()),
        }
        self.get_user(username)?.ok_or(Error::Invalid("user vanished after insert"))
    }

    pub fn get_user(&self, username: &str) -> Result<Option<UserRow>, Error> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1");
        Ok(self.conn.prepare_cached(&sql)?.query_row([username], user_from_row).optional()?)
    }

    pub fn get_user_by_id(&self, id: i64) -> Result<Option<UserRow>, Error> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1");
        Ok(self.conn.prepare_cached(&sql)?.query_row([id], user_from_row).optional()?)
    }

    pub fn list_users(&self) -> Result<Vec<UserRow>, Error> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY username");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([], user_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn count_users(&self) -> Result<u64, Error> {
        let n: i64 = self.conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// Records the lockout counters after a failed or successful step.
    pub fn set_user_failures(&self, user_id: i64, state: FailureState) -> Result<(), Error> {
        self.conn.execute(
            "UPDATE users SET failures = ?2, first_failure_ms = ?3, locked_until_ms = ?4 WHERE id = ?1",
            params![user_id, state.failures, state.first_failure_ms, state.locked_until_ms],
        )?;
        Ok(())
    }

    /// A completed login: the TOTP step used (never accepted again), the secret when this login
    /// set up the second factor, counters cleared.
    ///
    /// The step is compared inside the update so that two logins racing with the same code
    /// cannot both succeed: returns `false` if a step at or after `step` was already used.
    pub fn complete_login(
        &self,
        user_id: i64,
        step: u64,
        new_totp_secret: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, Error> {
        let step = i64::try_from(step).map_err(|_| Error::Invalid("TOTP step out of range"))?;
        let changed = self.conn.execute(
            "UPDATE users SET totp_last_step = ?2, totp_secret = coalesce(?3, totp_secret), failures = 0, \
             first_failure_ms = NULL, locked_until_ms = NULL, last_login_ms = ?4 \
             WHERE id = ?1 AND (totp_last_step IS NULL OR totp_last_step < ?2)",
            params![user_id, step, new_totp_secret, now_ms],
        )?;
        Ok(changed == 1)
    }

    pub fn set_user_role(&self, user_id: i64, role: &str) -> Result<(), Error> {
        if !ROLES.contains(&role) {
            return Err(Error::Invalid("unknown role"));
        }
        self.conn.execute("UPDATE users SET role = ?2 WHERE id = ?1", params![user_id, role])?;
        Ok(())
    }

    pub fn set_user_disabled(&self, user_id: i64, disabled: bool) -> Result<(), Error> {
        self.conn
            .execute("UPDATE users SET disabled = ?2 WHERE id = ?1", params![user_id, disabled as i64])?;
        Ok(())
    }

    pub fn set_user_password(&self, user_id: i64, password_phc: &str, now_ms: i64) -> Result<(), Error> {
        self.conn.execute(
            "UPDATE users SET password_phc = ?2, password_changed_ms = ?3 WHERE id = ?1",
            params![user_id, password_phc, now_ms],
        )?;
        Ok(())
    }

    /// Forgets the second factors, TOTP and passkeys: the next login sets up a new code.
    pub fn reset_user_totp(&self, user_id: i64) -> Result<(), Error> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE users SET totp_secret = NULL, totp_last_step = NULL WHERE id = ?1",
            params![user_id],
        )?;
        tx.execute("DELETE FROM passkeys WHERE user_id = ?1", params![user_id])?;
        tx.commit()?;
        Ok(())
    }

    /// Registers a passkey; a credential id already registered (to anyone) is refused.
    pub fn add_passkey(&self, row: &PasskeyRow) -> Result<i64, Error> {
        let inserted = self.conn.execute(
            "INSERT INTO passkeys (user_id, credential_id, name, data, sign_count, created_ms, last_used_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                row.user_id,
                row.credential_id,
                row.name,
                row.data,
                i64::from(row.sign_count),
                row.created_ms,
                row.last_used_ms
            ],
        );
        match inserted {
            Ok(_) => Ok(self.conn.last_insert_rowid()),
            Err(e) if is_unique_violation(&e) => Err(Error::Invalid("this passkey is already registered")),
            Err(e) => Err(e.into()),
        }
    }

    /// The passkeys of an account, oldest first.
    pub fn passkeys_of(&self, user_id: i64) -> Result<Vec<PasskeyRow>, Error> {
        let mut stmt = self.conn.prepare(
            "SELECT id, user_id, credential_id, name, data, sign_count, created_ms, last_used_ms \
             FROM passkeys WHERE user_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![user_id], |r| {
            Ok(PasskeyRow {
                id: r.get(0)?,
                user_id: r.get(1)?,
                credential_id: r.get(2)?,
                name: r.get(3)?,
                data: r.get(4)?,
                sign_count: r.get::<_, i64>(5)?.clamp(0, u32::MAX as i64) as u32,
                created_ms: r.get(6)?,
                last_used_ms: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many passkeys each account has (accounts without any are absent).
    pub fn passkey_counts(&self) -> Result<Vec<(i64, u64)>, Error> {
        let mut stmt = self.conn.prepare("SELECT user_id, count(*) FROM passkeys GROUP BY user_id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A login completed with a passkey: the credential's new state is stored and the failure
    /// counters cleared, in one step. The counter is compared inside the update so that two
    /// logins racing with the same signature cannot both succeed: returns `false` if the stored
    /// counter already reached `sign_count` (an authenticator that counts, 0 meaning it does not).
    pub fn complete_passkey_login(
        &self,
        user_id: i64,
        credential_id: &str,
        data: &str,
        sign_count: u32,
        now_ms: i64,
    ) -> Result<bool, Error> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            "UPDATE passkeys SET data = ?3, sign_count = ?4, last_used_ms = ?5 \
             WHERE user_id = ?1 AND credential_id = ?2 AND (sign_count < ?4 OR (sign_count = 0 AND ?4 = 0))",
            params![user_id, credential_id, data, i64::from(sign_count), now_ms],
        )?;
        if changed != 1 {
            return Ok(false);
        }
        tx.execute(
            "UPDATE users SET failures = 0, first_failure_ms = NULL, locked_until_ms = NULL, last_login_ms = ?2 \
             WHERE id = ?1",
            params![user_id, now_ms],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Removes one of an account's passkeys; `false` if it has no passkey with that id.
    pub fn delete_passkey(&self, user_id: i64, id: i64) -> Result<bool, Error> {
        let n =
            self.conn.execute("DELETE FROM passkeys WHERE id = ?1 AND user_id = ?2", params![id, user_id])?;
        Ok(n == 1)
    }

    pub fn set_user_lang(&self, user_id: i64, lang: &str) -> Result<(), Error> {
        self.conn.execute("UPDATE users SET lang = ?2 WHERE id = ?1", params![user_id, lang])?;
        Ok(())
    }

    // ----- triage and suppressions -----

    /// Sets the triage state of a detection (`Invalid` for an unknown state or detection).
    pub fn set_triage(&self, row: &TriageRow) -> Result<(), Error> {
        if !TRIAGE_STATES.contains(&row.status.as_str()) {
            return Err(Error::Invalid("unknown triage state"));
        }
        let exists: Option<i64> = self
            .conn
            .query_row("SELECT id FROM detections WHERE id = ?1", [row.detection_id], |r| r.get(0))
            .optional()?;
        if exists.is_none() {
            return Err(Error::Invalid("no such detection"));
        }
        self.conn.execute(
            "INSERT INTO triage (detection_id, status, note, updated_by, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (detection_id) DO UPDATE SET status = excluded.status, note = excluded.note, \
             updated_by = excluded.updated_by, updated_ms = excluded.updated_ms",
            params![row.detection_id, row.status, row.note, row.updated_by, row.updated_ms],
        )?;
        Ok(())
    }

    pub fn get_triage(&self, detection_id: i64) -> Result<Option<TriageRow>, Error> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT detection_id, status, note, updated_by, updated_ms FROM triage WHERE detection_id = ?1",
            )?
            .query_row([detection_id], |r| {
                Ok(TriageRow {
                    detection_id: r.get(0)?,
                    status: r.get(1)?,
                    note: r.get(2)?,
                    updated_by: r.get(3)?,
                    updated_ms: r.get(4)?,
                })
            })
            .optional()?)
    }

    /// Triage rows of the given detections (those without a row are open).
    pub fn triage_of(&self, detection_ids: &[i64]) -> Result<Vec<TriageRow>, Error> {
        let mut out = Vec::new();
        for id in detection_ids {
            if let Some(row) = self.get_triage(*id)? {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// Open detections (no triage row, or acknowledged) per level, since `since_ms`.
    pub fn open_detection_counts(&self, since_ms: i64) -> Result<Vec<(String, u64)>, Error> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT d.level, count(*) FROM detections d LEFT JOIN triage t ON t.detection_id = d.id \
             WHERE d.time_ms >= ?1 AND (t.status IS NULL OR t.status = 'acknowledged') GROUP BY d.level",
        )?;
        let rows =
            stmt.query_map([since_ms], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Detection ids in a triage state, newest first: `open` (no row, or acknowledged: still
    /// being worked on), `all`, or one of [`TRIAGE_STATES`].
    pub fn detection_ids_by_status(&self, status: &str, limit: u32) -> Result<Vec<i64>, Error> {
        let sql = match status {
            "open" => {
                "SELECT d.id FROM detections d LEFT JOIN triage t ON t.detection_id = d.id \
                 WHERE t.status IS NULL OR t.status = 'acknowledged' ORDER BY d.id DESC LIMIT ?1"
            }
            "all" => "SELECT id FROM detections ORDER BY id DESC LIMIT ?1",
            s if TRIAGE_STATES.contains(&s) => {
                "SELECT d.id FROM detections d JOIN triage t ON t.detection_id = d.id \
                 WHERE t.status = ?2 ORDER BY d.id DESC LIMIT ?1"
            }
            _ => return Err(Error::Invalid("unknown triage state")),
        };
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = if sql.contains("?2") {
            stmt.query_map(params![limit, status], |r| r.get(0))?.collect::<Result<Vec<i64>, _>>()?
        } else {
            stmt.query_map(params![limit], |r| r.get(0))?.collect::<Result<Vec<i64>, _>>()?
        };
        Ok(rows)
    }

    pub fn get_detections_by_id(&self, ids: &[i64]) -> Result<Vec<crate::DetectionRow>, Error> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, kind, rule_id, title, level, host, source, time_ms, created_ms, data FROM detections \
             WHERE id = ?1",
        )?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(row) = stmt.query_row([id], crate::logs::detection_from_row).optional()? {
                out.push(row);
            }
        }
        Ok(out)
    }

    pub fn add_suppression(&self, row: &SuppressionRow) -> Result<i64, Error> {
        self.conn.execute(
            "INSERT INTO suppressions (rule_id, host, note, created_by, created_ms, detection_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![row.rule_id, row.host, row.note, row.created_by, row.created_ms, row.detection_id],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn list_suppressions(&self) -> Result<Vec<SuppressionRow>, Error> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, rule_id, host, note, created_by, created_ms, detection_id FROM suppressions ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(SuppressionRow {
                id: r.get(0)?,
                rule_id: r.get(1)?,
                host: r.get(2)?,
                note: r.get(3)?,
                created_by: r.get(4)?,
                created_ms: r.get(5)?,
                detection_id: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Returns whether a suppression was deleted.
    pub fn delete_suppression(&self, id: i64) -> Result<bool, Error> {
        Ok(self.conn.execute("DELETE FROM suppressions WHERE id = ?1", [id])? == 1)
    }

    // ----- settings -----

    pub fn get_setting(&self, key: &str) -> Result<Option<String>, Error> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM settings WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    pub fn put_setting(&self, key: &str, value: &str, now_ms: i64) -> Result<(), Error> {
        self.conn.execute(
            "INSERT INTO settings (key, value, updated_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
            params![key, value, now_ms],
        )?;
        Ok(())
    }

    // ----- audit log -----

    /// Appends one record. `make` gets the current head (seq, hash) and returns the record to
    /// store; the read and the insert are one IMMEDIATE transaction, so concurrent appenders
    /// (threads or processes) cannot fork the chain.
    pub fn append_audit<E: From<Error>>(
        &mut self,
        make: impl FnOnce(Option<(u64, Vec<u8>)>) -> Result<AuditRow, E>,
    ) -> Result<AuditRow, E> {
        self.append_audit_tx(make)
    }

    fn append_audit_tx<E: From<Error>>(
        &mut self,
        make: impl FnOnce(Option<(u64, Vec<u8>)>) -> Result<AuditRow, E>,
    ) -> Result<AuditRow, E> {
        let tx = Transaction::new(&mut self.conn, TransactionBehavior::Immediate).map_err(Error::from)?;
        let head: Option<(i64, Vec<u8>)> = tx
            .query_row("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(Error::from)?;
        let row = make(head.map(|(s, h)| (s.max(0) as u64, h)))?;
        tx.execute(
            "INSERT INTO audit_log (seq, time_ms, actor, action, target, detail, prev_hash, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                crate::to_i64("seq", row.seq)?,
                row.time_ms,
                row.actor,
                row.action,
                row.target,
                row.detail,
                row.prev_hash,
                row.hash
            ],
        )
        .map_err(Error::from)?;
        tx.commit().map_err(Error::from)?;
        Ok(row)
    }

    pub fn audit_head(&self) -> Result<Option<(u64, Vec<u8>)>, Error> {
        Ok(self
            .conn
            .query_row("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", [], |r| {
                Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get(1)?))
            })
            .optional()?)
    }

    /// Records newest first, with `seq < before` when given.
    pub fn list_audit(&self, before: Option<u64>, limit: u32) -> Result<Vec<AuditRow>, Error> {
        let before = before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64);
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, time_ms, actor, action, target, detail, prev_hash, hash FROM audit_log \
             WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![before, limit], audit_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every record in order, handed to `visit` one at a time (verification streams the log).
    pub fn for_each_audit(&self, mut visit: impl FnMut(AuditRow)) -> Result<(), Error> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, time_ms, actor, action, target, detail, prev_hash, hash FROM audit_log ORDER BY seq",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            visit(audit_from_row(row)?);
        }
        Ok(())
    }

    /// The most recent record of an action (for the checklist: when was the log last verified).
    pub fn last_audit_of(&self, action: &str) -> Result<Option<AuditRow>, Error> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT seq, time_ms, actor, action, target, detail, prev_hash, hash FROM audit_log \
                 WHERE action = ?1 ORDER BY seq DESC LIMIT 1",
            )?
            .query_row([action], audit_from_row)
            .optional()?)
    }

    pub fn add_audit_checkpoint(&self, row: &AuditCheckpointRow) -> Result<(), Error> {
        self.conn.execute(
            "INSERT OR IGNORE INTO audit_checkpoints (seq, hash, time_ms, signature) VALUES (?1, ?2, ?3, ?4)",
            params![crate::to_i64("seq", row.seq)?, row.hash, row.time_ms, row.signature],
        )?;
        Ok(())
    }

    pub fn audit_checkpoints(&self) -> Result<Vec<AuditCheckpointRow>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, hash, time_ms, signature FROM audit_checkpoints ORDER BY seq")?;
        let rows = stmt.query_map([], |r| {
            Ok(AuditCheckpointRow {
                seq: r.get::<_, i64>(0)?.max(0) as u64,
                hash: r.get(1)?,
                time_ms: r.get(2)?,
                signature: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ----- what changed (the console's live updates) -----

    pub fn max_event_id(&self) -> Result<i64, Error> {
        Ok(self.conn.query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))?)
    }

    pub fn max_detection_id(&self) -> Result<i64, Error> {
        Ok(self.conn.query_row("SELECT coalesce(max(id), 0) FROM detections", [], |r| r.get(0))?)
    }

    /// Changes whenever a command is queued or completed.
    pub fn command_fingerprint(&self) -> Result<String, Error> {
        Ok(self.conn.query_row(
            "SELECT count(*) || ':' || count(completed_ms) || ':' || coalesce(max(completed_ms), 0) FROM commands",
            [],
            |r| r.get(0),
        )?)
    }

    /// Direct access for tests that play the attacker editing the file.
    #[doc(hidden)]
    pub fn execute_raw(&self, sql: &str) -> Result<usize, Error> {
        Ok(self.conn.execute(sql, [])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("m.sqlite")).unwrap();
        (dir, store)
    }

    #[test]
    fn users_are_unique_and_a_totp_step_is_accepted_once() {
        let (_d, store) = store();
        let u = store.create_user("alice", "admin", "$argon2id$x", 1).unwrap();
        assert!(matches!(store.create_user("alice", "auditor", "p", 2), Err(Error::Invalid(_))));
        assert!(matches!(store.create_user("bob", "root", "p", 2), Err(Error::Invalid(_))));
        assert!(store.complete_login(u.id, 100, Some("SECRET"), 10).unwrap());
        // The same step (a replayed code, or a racing second login) is refused.
        assert!(!store.complete_login(u.id, 100, None, 11).unwrap());
        assert!(store.complete_login(u.id, 101, None, 12).unwrap());
        let u = store.get_user("alice").unwrap().unwrap();
        assert_eq!(u.totp_secret.as_deref(), Some("SECRET"));
        assert_eq!(u.totp_last_step, Some(101));
        assert_eq!(u.last_login_ms, Some(12));
        store.reset_user_totp(u.id).unwrap();
        assert_eq!(store.get_user("alice").unwrap().unwrap().totp_secret, None);
    }

    #[test]
    fn passkeys_are_unique_per_credential_and_a_counter_is_used_once() {
        let (_d, store) = store();
        let a = store.create_user("alice", "admin", "$argon2id$x", 1).unwrap();
        let b = store.create_user("bob", "operator", "$argon2id$x", 1).unwrap();
        let row = |user_id, cred: &str| PasskeyRow {
            id: 0,
            user_id,
            credential_id: cred.into(),
            name: "pc".into(),
            data: "{}".into(),
            sign_count: 3,
            created_ms: 5,
            last_used_ms: None,
        };
        let id = store.add_passkey(&row(a.id, "CRED")).unwrap();
        // The same authenticator credential cannot belong to two accounts.
        assert!(matches!(store.add_passkey(&row(b.id, "CRED")), Err(Error::Invalid(_))));
        store.add_passkey(&row(a.id, "CRED2")).unwrap();
        assert_eq!(store.passkey_counts().unwrap(), vec![(a.id, 2)]);
        store
            .set_user_failures(
                a.id,
                FailureState { failures: 2, first_failure_ms: Some(1), locked_until_ms: None },
            )
            .unwrap();
        // A counter that does not go up (a replay or a clone) is refused.
        assert!(!store.complete_passkey_login(a.id, "CRED", "{}", 3, 9).unwrap());
        assert!(store.complete_passkey_login(a.id, "CRED", "{\"n\":4}", 4, 9).unwrap());
        assert!(!store.complete_passkey_login(a.id, "CRED", "{}", 4, 10).unwrap());
        // Another account's credential cannot be used.
        assert!(!store.complete_passkey_login(b.id, "CRED", "{}", 9, 10).unwrap());
        let keys = store.passkeys_of(a.id).unwrap();
        assert_eq!(
            (keys[0].sign_count, keys[0].last_used_ms, keys[0].data.as_str()),
            (4, Some(9), "{\"n\":4}")
        );
        let user = store.get_user_by_id(a.id).unwrap().unwrap();
        assert_eq!((user.failures, user.last_login_ms), (0, Some(9)));
        assert!(!store.delete_passkey(b.id, id).unwrap(), "not bob's");
        assert!(store.delete_passkey(a.id, id).unwrap());
        assert_eq!(store.passkeys_of(a.id).unwrap().len(), 1);
        // Resetting the second factor removes the passkeys too.
        store.reset_user_totp(a.id).unwrap();
        assert!(store.passkeys_of(a.id).unwrap().is_empty());
    }

    #[test]
    fn audit_appends_chain_on_the_head_and_list_newest_first() {
        let (_d, mut store) = store();
        for i in 0..3u64 {
            store
                .append_audit::<Error>(|head| {
                    let (seq, prev) = head.map(|(s, h)| (s + 1, h)).unwrap_or((1, vec![0; 32]));
                    assert_eq!(seq, i + 1);
                    Ok(AuditRow {
                        seq,
                        time_ms: i as i64,
                        actor: "a".into(),
                        action: "x".into(),
                        target: String::new(),
                        detail: "{}".into(),
                        prev_hash: prev,
                        hash: vec![i as u8; 32],
                    })
                })
                .unwrap();
        }
        let rows = store.list_audit(None, 10).unwrap();
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 2, 1]);
        assert_eq!(rows[0].prev_hash, vec![1u8; 32]);
        assert_eq!(store.list_audit(Some(3), 1).unwrap()[0].seq, 2);
    }
}
