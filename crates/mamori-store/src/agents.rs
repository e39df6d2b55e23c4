//! Agents: enrollment (which consumes a token), certificate renewals, heartbeats, revocation.
//!
//! An agent is `active`, `revoked` (by an administrator) or `replaced` (the same machine enrolled
//! again, under a new id). Revoked and replaced agents are never deleted and never become active
//! again; the manager refuses their certificates on every TLS handshake.

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

use crate::{is_unique_violation, to_i64, Error, Store};

/// What the manager knows about a newly enrolling agent. `id` is the device id the manager chose
/// and put in the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAgent {
    pub id: String,
    pub hostname: String,
    /// The host's stable machine id (e.g. `/etc/machine-id`). Empty if unknown; an empty machine
    /// id never matches another agent's.
    pub machine_id: String,
    /// The id this host was enrolled under before, if the agent still knows it.
    pub previous_device_id: Option<String>,
    pub agent_version: String,
    pub cert_serial: String,
    pub cert_not_after_ms: i64,
}

/// The state an agent reports in each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRow {
    pub agent_version: String,
    pub hostname: String,
    pub policy_version: u64,
    pub spool_pending: u64,
    pub spool_dropped_total: u64,
    /// The host is isolated from the network, as the agent sees it.
    pub isolated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRow {
    pub id: String,
    pub hostname: String,
    pub machine_id: String,
    /// `"active"`, `"revoked"` or `"replaced"`.
    pub status: String,
    pub agent_version: String,
    pub enrolled_ms: i64,
    pub last_seen_ms: Option<i64>,
    pub policy_version: u64,
    pub cert_serial: String,
    pub cert_not_after_ms: i64,
    pub replaced_by: Option<String>,
    pub revoked_ms: Option<i64>,
    pub spool_pending: u64,
    pub spool_dropped_total: u64,
    /// As the agent last reported it (false before its first heartbeat).
    pub isolated: bool,
}

/// Why a presented enrollment token was not accepted. Refusals change nothing in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("enrollment token is unknown")]
    Unknown,
    #[error("enrollment token has expired")]
    Expired,
    #[error("enrollment token has already been used")]
    UsedUp,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The token was not accepted. Safe to tell the enrolling agent.
    #[error("{0}")]
    Refused(TokenRefusal),
    /// Something went wrong in the store; nothing was written.
    #[error(transparent)]
    Store(#[from] Error),
}

impl From<rusqlite::Error> for EnrollError {
    fn from(e: rusqlite::Error) -> EnrollError {
        EnrollError::Store(Error::Sqlite(e))
    }
}

const AGENT_COLUMNS: &str = "id, hostname, machine_id, status, agent_version, enrolled_ms, last_seen_ms, \
     policy_version, cert_serial, cert_not_after_ms, replaced_by, revoked_ms, spool_pending, spool_dropped_total, \
     isolated";

fn agent_from_row(r: &Row<'_>) -> rusqlite::Result<AgentRow> {
    Ok(AgentRow {
        id: r.get(0)?,
        hostname: r.get(1)?,
        machine_id: r.get(2)?,
        status: r.get(3)?,
        agent_version: r.get(4)?,
        enrolled_ms: r.get(5)?,
        last_seen_ms: r.get(6)?,
        // Negative values cannot be stored (CHECK constraints); rusqlite reports one as an
        // out-of-range error rather than wrapping.
        policy_version: r.get(7)?,
        cert_serial: r.get(8)?,
        cert_not_after_ms: r.get(9)?,
        replaced_by: r.get(10)?,
        revoked_ms: r.get(11)?,
        spool_pending: r.get(12)?,
        spool_dropped_total: r.get(13)?,
        isolated: r.get(14)?,
    })
}

impl Store {
    /// Enrolls an agent with a token secret, in one IMMEDIATE transaction:
    ///
    /// 1. The token is looked up by [`mamori_pki::hash_token`] and confirmed with the
    ///    constant-time [`mamori_pki::token_matches`]. Unknown, expired (`now_ms >= expires_at`)
    ///    and used-up tokens are refused with [`EnrollError::Refused`], writing nothing.
    /// 2. One use of the token is consumed, the agent is inserted as `active` with its first
    ///    certificate.
    /// 3. Every other `active` agent whose id is `new.previous_device_id`, or whose machine id
    ///    is `new.machine_id` (if not empty), is marked `replaced` by the new one.
    ///
    /// Returns the ids of the replaced agents, sorted. On any error nothing is written; in
    /// particular a refused or failed enrollment does not use up the token.
    pub fn enroll(
        &mut self,
        token_secret: &str,
        new: &NewAgent,
        now_ms: i64,
    ) -> Result<Vec<String>, EnrollError> {
        if new.id.is_empty() {
            return Err(Error::Invalid("agent id is empty").into());
        }
        // IMMEDIATE: we read the token and then write; a deferred transaction could find its
        // snapshot stale at the first write and fail without waiting for the lock.
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let hash = mamori_pki::hash_token(token_secret);
        let token: Option<(i64, [u8; 32], i64, i64)> = tx
            .query_row(
                "SELECT id, hash, expires_at_ms, uses_left FROM tokens WHERE hash = ?1",
                [hash.as_slice()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((token_id, stored_hash, expires_at_ms, uses_left)) = token else {
            return Err(EnrollError::Refused(TokenRefusal::Unknown));
        };
        // The row was found by this very hash, so the check agrees with the lookup; it is here so
        // that the accept/refuse decision is made by the constant-time comparison.
        if !mamori_pki::token_matches(token_secret, &stored_hash) {
            return Err(EnrollError::Refused(TokenRefusal::Unknown));
        }
        if now_ms >= expires_at_ms {
            return Err(EnrollError::Refused(TokenRefusal::Expired));
        }
        if uses_left <= 0 {
            return Err(EnrollError::Refused(TokenRefusal::UsedUp));
        }
        tx.execute("UPDATE tokens SET uses_left = uses_left - 1 WHERE id = ?1", [token_id])?;

        let mut replaced = {
            // An empty machine id means "unknown"; matching on it would let one host without a
            // machine id replace every other such host.
            let mut stmt = tx.prepare(
                "UPDATE agents SET status = 'replaced', replaced_by = ?1, replaced_ms = ?2 \
                 WHERE status = 'active' AND (id = ?3 OR (?4 <> '' AND machine_id = ?4)) \
                 RETURNING id",
            )?;
            let ids = stmt
                .query_map(params![new.id, now_ms, new.previous_device_id, new.machine_id], |r| {
                    r.get::<_, String>(0)
                })?;
            ids.collect::<Result<Vec<_>, _>>()?
        };
        replaced.sort();

        insert_agent(&tx, new, Some(token_id), now_ms)?;
        tx.commit()?;
        Ok(replaced)
    }

    /// Records a renewed certificate for an active agent: a new row in the certificate history
    /// and the agent's current serial and expiry. Refuses unknown and non-active agents, so a
    /// renewal racing a revocation is not recorded (the caller must not hand out the certificate).
    pub fn record_renewal(
        &self,
        agent_id: &str,
        cert_serial: &str,
        cert_not_after_ms: i64,
        now_ms: i64,
    ) -> Result<(), Error> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        let agent: Option<(i64, String)> = tx
            .query_row("SELECT key, status FROM agents WHERE id = ?1", [agent_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let Some((key, status)) = agent else {
            return Err(Error::UnknownAgent(agent_id.to_owned()));
        };
        if status != "active" {
            return Err(Error::AgentNotActive { id: agent_id.to_owned(), status });
        }
        insert_cert(&tx, key, cert_serial, cert_not_after_ms, now_ms, "renew")?;
        tx.execute(
            "UPDATE agents SET cert_serial = ?1, cert_not_after_ms = ?2 WHERE key = ?3",
            params![cert_serial, cert_not_after_ms, key],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records a heartbeat: the reported state and `last_seen_ms`.
    pub fn record_heartbeat(&self, agent_id: &str, hb: &HeartbeatRow, now_ms: i64) -> Result<(), Error> {
        heartbeat_on(&self.conn, agent_id, hb, now_ms)
    }

    /// Writes what the manager gathered in memory since its last flush — per agent the last-seen
    /// time and, if one arrived, the latest heartbeat — in one transaction (one fsync for all
    /// agents rather than one per heartbeat). Agents that no longer exist are skipped.
    pub fn record_live(&mut self, live: &[(String, i64, Option<HeartbeatRow>)]) -> Result<(), Error> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (agent_id, seen_ms, heartbeat) in live {
            let result = match heartbeat {
                Some(hb) => heartbeat_on(&tx, agent_id, hb, *seen_ms),
                None => touch_on(&tx, agent_id, *seen_ms),
            };
            match result {
                Ok(()) | Err(Error::UnknownAgent(_)) => {}
                Err(e) => return Err(e),
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Updates `last_seen_ms` only (any authenticated request counts as a sign of life).
    pub fn touch_agent(&self, agent_id: &str, now_ms: i64) -> Result<(), Error> {
        touch_on(&self.conn, agent_id, now_ms)
    }

    /// Marks the agent revoked. Returns `Ok(false)` if there is no such agent, `Ok(true)`
    /// otherwise. Revoking again changes nothing (the first `revoked_ms` stays); revoking a
    /// replaced agent makes it revoked and keeps its `replaced_by`.
    pub fn revoke_agent(&self, agent_id: &str, now_ms: i64) -> Result<bool, Error> {
        let changed = self.conn.execute(
            "UPDATE agents SET status = 'revoked', revoked_ms = ?1 WHERE id = ?2 AND status <> 'revoked'",
            params![now_ms, agent_id],
        )?;
        if changed > 0 {
            return Ok(true);
        }
        // Agents are never deleted, so "not changed" means "absent" or "already revoked".
        Ok(self
            .conn
            .query_row("SELECT EXISTS (SELECT 1 FROM agents WHERE id = ?1)", [agent_id], |r| r.get(0))?)
    }

    /// Ids of all revoked or replaced agents, for the manager's in-memory revocation set.
    pub fn untrusted_agent_ids(&self) -> Result<Vec<String>, Error> {
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM agents WHERE status IN ('revoked', 'replaced') ORDER BY key")?;
        let ids = stmt.query_map([], |r| r.get(0))?;
        Ok(ids.collect::<Result<_, _>>()?)
    }

    pub fn get_agent(&self, id: &str) -> Result<Option<AgentRow>, Error> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = ?1");
        Ok(self.conn.prepare_cached(&sql)?.query_row([id], agent_from_row).optional()?)
    }

    /// All agents, in enrollment order.
    pub fn list_agents(&self) -> Result<Vec<AgentRow>, Error> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY key");
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([], agent_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Inserts an active agent without a token, for the ingest benchmark's synthetic agents.
    pub(crate) fn insert_agent_without_token(&mut self, new: &NewAgent, now_ms: i64) -> Result<(), Error> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        insert_agent(&tx, new, None, now_ms)?;
        tx.commit()?;
        Ok(())
    }
}

/// Inserts an active agent and its first certificate. Returns the agent's key.
fn insert_agent(conn: &Connection, new: &NewAgent, token_id: Option<i64>, now_ms: i64) -> Result<i64, Error> {
    let inserted = conn.execute(
        "INSERT INTO agents (id, hostname, machine_id, previous_device_id, status, agent_version, token_id, \
         enrolled_ms, cert_serial, cert_not_after_ms) VALUES (?1, ?2, ?3, ?4, 'active', ?5, ?6, ?7, ?8, ?9)",
        params![
            new.id,
            new.hostname,
            new.machine_id,
            new.previous_device_id,
            new.agent_version,
            token_id,
            now_ms,
            new.cert_serial,
            new.cert_not_after_ms
        ],
    );
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => return Err(Error::AgentExists(new.id.clone())),
        Err(e) => return Err(e.into()),
    }
    let key = conn.last_insert_rowid();
    insert_cert(conn, key, &new.cert_serial, new.cert_not_after_ms, now_ms, "enroll")?;
    Ok(key)
}

fn insert_cert(
    conn: &Connection,
    agent_key: i64,
    serial: &str,
    not_after_ms: i64,
    now_ms: i64,
    reason: &str,
) -> Result<(), Error> {
    let inserted = conn.execute(
        "INSERT INTO certs (serial, agent_key, not_after_ms, issued_ms, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![serial, agent_key, not_after_ms, now_ms, reason],
    );
    match inserted {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(Error::CertExists(serial.to_owned())),
        Err(e) => Err(e.into()),
    }
}

fn heartbeat_on(conn: &Connection, agent_id: &str, hb: &HeartbeatRow, now_ms: i64) -> Result<(), Error> {
    let policy_version = to_i64("policy_version", hb.policy_version)?;
    let spool_pending = to_i64("spool_pending", hb.spool_pending)?;
    let spool_dropped_total = to_i64("spool_dropped_total", hb.spool_dropped_total)?;
    // last_seen never moves backwards: two manager threads may commit a few ms out of order.
    let changed = conn
        .prepare_cached(
            "UPDATE agents SET agent_version = ?1, hostname = ?2, policy_version = ?3, spool_pending = ?4, \
         spool_dropped_total = ?5, isolated = ?6, last_seen_ms = max(coalesce(last_seen_ms, ?7), ?7) \
         WHERE id = ?8",
        )?
        .execute(params![
            hb.agent_version,
            hb.hostname,
            policy_version,
            spool_pending,
            spool_dropped_total,
            hb.isolated,
            now_ms,
            agent_id
        ])?;
    if changed == 0 {
        return Err(Error::UnknownAgent(agent_id.to_owned()));
    }
    Ok(())
}

fn touch_on(conn: &Connection, agent_id: &str, now_ms: i64) -> Result<(), Error> {
    let changed = conn
        .prepare_cached("UPDATE agents SET last_seen_ms = max(coalesce(last_seen_ms, ?1), ?1) WHERE id = ?2")?
        .execute(params![now_ms, agent_id])?;
    if changed == 0 {
        return Err(Error::UnknownAgent(agent_id.to_owned()));
    }
    Ok(())
}
