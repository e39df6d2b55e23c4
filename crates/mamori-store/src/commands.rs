//! Commands an administrator queues for one agent (release or isolate the host, scan, restore or
//! delete a quarantined file, restore a backup snapshot), and the result the agent reports.
//!
//! A command is pending until its result arrives; the manager hands every pending command to the
//! agent at each heartbeat, so delivery is at-least-once and the agent reports by command id.
//! Results are therefore idempotent: the first one is kept and a repeat changes nothing.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension, Row, Transaction, TransactionBehavior};

use crate::{is_unique_violation, Error, Store};

/// The actions [`Store::queue_command`] accepts (the wire names of `mamori_proto::CommandAction`).
pub const COMMAND_ACTIONS: &[&str] =
    &["release", "isolate", "scan", "quarantine_restore", "quarantine_delete", "backup_restore"];

/// The most rows one [`Store::list_commands`] returns.
pub const MAX_COMMAND_LIST: u32 = 1_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRow {
    /// 16 random bytes, hex.
    pub id: String,
    pub agent_id: String,
    /// One of [`COMMAND_ACTIONS`].
    pub action: String,
    /// What the action applies to, when it needs one (a quarantine id, a snapshot name); empty
    /// otherwise.
    pub target: String,
    pub reason: String,
    pub created_ms: i64,
    /// When the agent's result arrived; `None` while pending.
    pub completed_ms: Option<i64>,
    /// The reported outcome; `None` while pending.
    pub success: Option<bool>,
    pub message: Option<String>,
}

impl CommandRow {
    pub fn is_pending(&self) -> bool {
        self.completed_ms.is_none()
    }
}

const COMMAND_COLUMNS: &str =
    "id, agent_id, action, reason, created_ms, completed_ms, success, message, target";

fn command_from_row(r: &Row<'_>) -> rusqlite::Result<CommandRow> {
    Ok(CommandRow {
        id: r.get(0)?,
        agent_id: r.get(1)?,
        action: r.get(2)?,
        reason: r.get(3)?,
        created_ms: r.get(4)?,
        completed_ms: r.get(5)?,
        success: r.get(6)?,
        message: r.get(7)?,
        target: r.get(8)?,
    })
}

impl Store {
    /// Queues `action` for an active agent and returns the new command. Unknown agents are
    /// refused with [`Error::UnknownAgent`], revoked and replaced ones with
    /// [`Error::AgentNotActive`]: a command for them could never be delivered.
    pub fn queue_command(
        &self,
        agent_id: &str,
        action: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<CommandRow, Error> {
        self.queue_command_on(agent_id, action, "", reason, now_ms)
    }

    /// [`Store::queue_command`] for an action that applies to something (`target`, e.g. the
    /// quarantine id of `quarantine_restore`).
    pub fn queue_command_on(
        &self,
        agent_id: &str,
        action: &str,
        target: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<CommandRow, Error> {
        if !COMMAND_ACTIONS.contains(&action) {
            return Err(Error::Invalid("unknown command action"));
        }
        // IMMEDIATE: the status check and the insert must see the same agent row, or a command
        // could be queued for an agent revoked in between.
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        let status: Option<String> =
            tx.query_row("SELECT status FROM agents WHERE id = ?1", [agent_id], |r| r.get(0)).optional()?;
        match status {
            None => return Err(Error::UnknownAgent(agent_id.to_owned())),
            Some(s) if s != "active" => {
                return Err(Error::AgentNotActive { id: agent_id.to_owned(), status: s })
            }
            Some(_) => {}
        }
        // Random rather than sequential: ids are shown to people and passed around, and must not
        // repeat across a database that was restored from a backup.
        let id = mamori_pki::new_device_id();
        let inserted = tx.execute(
            "INSERT INTO commands (id, agent_id, action, reason, created_ms, target) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, agent_id, action, reason, now_ms, target],
        );
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::Invalid("command id collision; try again"))
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit()?;
        Ok(CommandRow {
            id,
            agent_id: agent_id.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            reason: reason.to_owned(),
            created_ms: now_ms,
            completed_ms: None,
            success: None,
            message: None,
        })
    }

    /// One command of one agent; `None` if there is no such command or it is another agent's.
    pub fn get_command(&self, agent_id: &str, command_id: &str) -> Result<Option<CommandRow>, Error> {
        let sql = format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE id = ?1 AND agent_id = ?2");
        Ok(self.conn.prepare_cached(&sql)?.query_row([command_id, agent_id], command_from_row).optional()?)
    }

    /// An agent's commands, newest first, at most `limit` (0 or above [`MAX_COMMAND_LIST`] means
    /// [`MAX_COMMAND_LIST`]). An unknown agent simply has none.
    pub fn list_commands(&self, agent_id: &str, limit: u32) -> Result<Vec<CommandRow>, Error> {
        let limit = if limit == 0 || limit > MAX_COMMAND_LIST { MAX_COMMAND_LIST } else { limit };
        // rowid breaks ties between commands queued in the same millisecond.
        let sql = format!(
            "SELECT {COMMAND_COLUMNS} FROM commands WHERE agent_id = ?1 \
             ORDER BY created_ms DESC, rowid DESC LIMIT ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![agent_id, limit], command_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// An agent's commands without a result, oldest first (the order the agent should carry
    /// them out in).
    pub fn pending_commands(&self, agent_id: &str) -> Result<Vec<CommandRow>, Error> {
        let sql = format!(
            "SELECT {COMMAND_COLUMNS} FROM commands WHERE agent_id = ?1 AND completed_ms IS NULL \
             ORDER BY created_ms, rowid"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([agent_id], command_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every agent's commands without a result, oldest first: what a starting manager loads to
    /// answer heartbeats from memory.
    pub fn all_pending_commands(&self) -> Result<Vec<CommandRow>, Error> {
        let sql = format!(
            "SELECT {COMMAND_COLUMNS} FROM commands WHERE completed_ms IS NULL ORDER BY created_ms, rowid"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([], command_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many commands without a result each agent has (agents with none are absent).
    pub fn pending_command_counts(&self) -> Result<HashMap<String, u64>, Error> {
        let mut stmt = self.conn.prepare(
            "SELECT agent_id, count(*) FROM commands WHERE completed_ms IS NULL GROUP BY agent_id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records the result `agent_id` reports for its command `command_id` and returns the
    /// command as stored. A command that is not this agent's is [`Error::UnknownCommand`], so an
    /// agent cannot learn or settle another's commands. A repeated result (the agent did not see
    /// our answer and sent it again) returns `Ok` with the first result unchanged.
    pub fn complete_command(
        &self,
        agent_id: &str,
        command_id: &str,
        success: bool,
        message: &str,
        now_ms: i64,
    ) -> Result<CommandRow, Error> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE commands SET completed_ms = ?1, success = ?2, message = ?3 \
             WHERE id = ?4 AND agent_id = ?5 AND completed_ms IS NULL",
            params![now_ms, success, message, command_id, agent_id],
        )?;
        let sql = format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE id = ?1 AND agent_id = ?2");
        let row = tx.query_row(&sql, [command_id, agent_id], command_from_row).optional()?;
        let Some(row) = row else {
            return Err(Error::UnknownCommand(command_id.to_owned()));
        };
        tx.commit()?;
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HeartbeatRow, NewAgent};

    const T0: i64 = 1_700_000_000_000;

    fn store_with(dir: &tempfile::TempDir, ids: &[&str]) -> Store {
        let mut store = Store::open(&dir.path().join("m.sqlite")).unwrap();
        for id in ids {
            let new = NewAgent {
                id: (*id).into(),
                hostname: format!("{id}.ward.example"),
                machine_id: format!("machine-{id}"),
                previous_device_id: None,
                agent_version: "0.1.0".into(),
                cert_serial: format!("serial-{id}"),
                cert_not_after_ms: T0 + 86_400_000,
            };
            store.insert_agent_without_token(&new, T0).unwrap();
        }
        store
    }

    #[test]
    fn queue_list_pending_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(&dir, &["a", "b"]);
        let first = store.queue_command("a", "isolate", "ransomware on ward 3", T0 + 1).unwrap();
        let second = store.queue_command("a", "release", "", T0 + 1).unwrap();
        let other = store.queue_command("b", "release", "b's", T0 + 2).unwrap();
        assert_eq!(first.id.len(), 32);
        assert!(first.id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(first.id, second.id);
        assert!(first.is_pending());

        // Newest first; same-millisecond commands in reverse insertion order.
        let listed: Vec<String> = store.list_commands("a", 0).unwrap().into_iter().map(|c| c.id).collect();
        assert_eq!(listed, vec![second.id.clone(), first.id.clone()]);
        assert_eq!(store.list_commands("a", 1).unwrap().len(), 1);
        assert!(store.list_commands("nobody", 10).unwrap().is_empty());
        // Pending: oldest first.
        let pending: Vec<String> = store.pending_commands("a").unwrap().into_iter().map(|c| c.id).collect();
        assert_eq!(pending, vec![first.id.clone(), second.id.clone()]);
        let counts = store.pending_command_counts().unwrap();
        assert_eq!((counts.get("a"), counts.get("b")), (Some(&2), Some(&1)));

        let done = store.complete_command("a", &first.id, true, "isolated; 2 allow rules", T0 + 10).unwrap();
        assert_eq!(
            (done.completed_ms, done.success, done.message.as_deref()),
            (Some(T0 + 10), Some(true), Some("isolated; 2 allow rules"))
        );
        assert_eq!(store.get_command("a", &first.id).unwrap(), Some(done.clone()));
        let pending: Vec<String> = store.pending_commands("a").unwrap().into_iter().map(|c| c.id).collect();
        assert_eq!(pending, vec![second.id.clone()]);
        let all: Vec<String> = store.all_pending_commands().unwrap().into_iter().map(|c| c.id).collect();
        assert_eq!(all, vec![second.id.clone(), other.id.clone()]);
        assert_eq!(store.pending_command_counts().unwrap().get("a"), Some(&1));

        // A repeated result is accepted and changes nothing.
        let again = store.complete_command("a", &first.id, false, "late failure", T0 + 20).unwrap();
        assert_eq!(again, done);

        let failed = store.complete_command("a", &second.id, false, "nft not found", T0 + 30).unwrap();
        assert_eq!(failed.success, Some(false));
        assert!(!store.pending_command_counts().unwrap().contains_key("a"));
    }

    #[test]
    fn another_agents_command_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(&dir, &["a", "b"]);
        let cmd = store.queue_command("a", "release", "", T0).unwrap();
        assert!(matches!(
            store.complete_command("b", &cmd.id, true, "", T0 + 1),
            Err(Error::UnknownCommand(id)) if id == cmd.id
        ));
        assert!(matches!(
            store.complete_command("a", "does-not-exist", true, "", T0 + 1),
            Err(Error::UnknownCommand(_))
        ));
        assert_eq!(store.get_command("b", &cmd.id).unwrap(), None);
        assert!(store.get_command("a", &cmd.id).unwrap().unwrap().is_pending(), "the refusal wrote nothing");
    }

    #[test]
    fn inactive_and_unknown_agents_and_bad_actions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(&dir, &["a", "b"]);
        assert!(matches!(store.queue_command("zz", "release", "", T0), Err(Error::UnknownAgent(_))));
        assert!(matches!(store.queue_command("a", "reboot", "", T0), Err(Error::Invalid(_))));
        store.revoke_agent("a", T0).unwrap();
        match store.queue_command("a", "isolate", "", T0) {
            Err(Error::AgentNotActive { id, status }) => {
                assert_eq!((id.as_str(), status.as_str()), ("a", "revoked"))
            }
            other => panic!("expected AgentNotActive, got {other:?}"),
        }
        store
            .conn
            .execute("UPDATE agents SET status = 'replaced', replaced_by = 'c' WHERE id = 'b'", [])
            .unwrap();
        assert!(matches!(store.queue_command("b", "isolate", "", T0), Err(Error::AgentNotActive { .. })));
        assert!(store.all_pending_commands().unwrap().is_empty());
    }

    #[test]
    fn a_backup_restore_keeps_its_snapshot_target() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(&dir, &["a"]);
        let snapshot = "ab".repeat(32);
        let cmd = store.queue_command_on("a", "backup_restore", &snapshot, "ward 3 share", T0).unwrap();
        assert_eq!((cmd.action.as_str(), cmd.target.as_str()), ("backup_restore", snapshot.as_str()));
        assert_eq!(store.pending_commands("a").unwrap(), vec![cmd.clone()]);
        let done = store.complete_command("a", &cmd.id, true, "restored", T0 + 1).unwrap();
        assert_eq!(done.target, snapshot);
        assert_eq!(store.list_commands("a", 10).unwrap(), vec![done]);
    }

    #[test]
    fn commands_and_isolation_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (pending, done) = {
            let mut store = store_with(&dir, &["a"]);
            let pending = store.queue_command("a", "release", "why", T0).unwrap();
            let done = store.queue_command("a", "isolate", "", T0 + 1).unwrap();
            let done = store.complete_command("a", &done.id, true, "ok", T0 + 2).unwrap();
            let hb = HeartbeatRow {
                agent_version: "0.1.0".into(),
                hostname: "a".into(),
                policy_version: 1,
                spool_pending: 0,
                spool_dropped_total: 0,
                isolated: true,
            };
            store.record_live(&[("a".to_string(), T0 + 3, Some(hb))]).unwrap();
            (pending, done)
        };
        let store = Store::open(&dir.path().join("m.sqlite")).unwrap();
        assert_eq!(store.pending_commands("a").unwrap(), vec![pending]);
        assert_eq!(store.get_command("a", &done.id).unwrap(), Some(done));
        assert!(store.get_agent("a").unwrap().unwrap().isolated);
    }
}
