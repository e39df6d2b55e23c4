//! Enrollment tokens. Only the SHA-256 of a token is stored; the secret is shown to the
//! administrator once and then exists only where they put it. Tokens are consumed by
//! [`Store::enroll`](crate::Store::enroll).

use rusqlite::params;

use crate::{is_unique_violation, Error, Store};

/// An enrollment token as listed for the administrator (there is no secret to show).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: i64,
    pub label: String,
    pub created_ms: i64,
    /// The first instant at which the token no longer works.
    pub expires_at_ms: i64,
    pub uses_left: u32,
    pub uses_total: u32,
}

impl Store {
    /// Records a new token by its hash ([`mamori_pki::hash_token`]). It enrolls up to `uses`
    /// agents before `expires_at_ms`. Returns the token id.
    pub fn create_token(
        &self,
        hash: &[u8; 32],
        label: &str,
        expires_at_ms: i64,
        uses: u32,
        now_ms: i64,
    ) -> Result<i64, Error> {
        if uses == 0 {
            return Err(Error::Invalid("an enrollment token must allow at least one use"));
        }
        if expires_at_ms <= now_ms {
            return Err(Error::Invalid("an enrollment token must expire after it is created"));
        }
        let inserted = self.conn.execute(
            "INSERT INTO tokens (hash, label, created_ms, expires_at_ms, uses_left, uses_total) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![hash.as_slice(), label, now_ms, expires_at_ms, uses],
        );
        match inserted {
            Ok(_) => Ok(self.conn.last_insert_rowid()),
            Err(e) if is_unique_violation(&e) => Err(Error::TokenExists),
            Err(e) => Err(e.into()),
        }
    }

    /// All tokens, oldest first, including expired and used-up ones.
    pub fn list_tokens(&self) -> Result<Vec<TokenRow>, Error> {
        let mut stmt = self.conn.prepare(
            "SELECT id, label, created_ms, expires_at_ms, uses_left, uses_total FROM tokens ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(TokenRow {
                id: r.get(0)?,
                label: r.get(1)?,
                created_ms: r.get(2)?,
                expires_at_ms: r.get(3)?,
                uses_left: r.get(4)?,
                uses_total: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
