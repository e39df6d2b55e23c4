//! The agent policy: JSON text, versioned by the store. Every version is kept, so an
//! administrator can see what an agent reporting an old `policy_version` is running.

use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};

use crate::{Error, Store};

impl Store {
    /// The newest policy and its version, or `None` before the first [`Store::put_policy`].
    pub fn current_policy(&self) -> Result<Option<(u64, String)>, Error> {
        Ok(self
            .conn
            .query_row("SELECT version, json FROM policies ORDER BY version DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    }

    /// Stores `json` as the next policy version (the first is 1) and returns that version.
    /// Refuses text that is not JSON; what the policy means is the manager's business.
    pub fn put_policy(&self, json: &str, now_ms: i64) -> Result<u64, Error> {
        serde_json::from_str::<serde_json::Value>(json).map_err(Error::PolicyNotJson)?;
        // IMMEDIATE so that two writers cannot both compute the same next version.
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        let version: u64 =
            tx.query_row("SELECT coalesce(max(version), 0) + 1 FROM policies", [], |r| r.get(0))?;
        tx.execute(
            "INSERT INTO policies (version, json, created_ms) VALUES (?1, ?2, ?3)",
            params![version, json, now_ms],
        )?;
        tx.commit()?;
        Ok(version)
    }
}
