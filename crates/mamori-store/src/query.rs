//! What the event and log queries share: a `SELECT` built clause by clause with numbered
//! placeholders, the time range, the tail/order/limit rules of the admin API, and retention in
//! chunks.

use rusqlite::types::Value;
use rusqlite::{params, Connection};

use crate::{Error, MAX_QUERY_LIMIT};

/// A `SELECT` with numbered placeholders built up clause by clause. `alias` prefixes the
/// `id` and `time_ms` columns (`e.` when the table is joined).
pub(crate) struct Query {
    pub sql: String,
    pub args: Vec<Value>,
    alias: &'static str,
}

impl Query {
    pub fn new(select: &str, alias: &'static str) -> Query {
        Query { sql: select.to_string(), args: Vec::new(), alias }
    }

    /// Appends `clause`, its `?` numbered for `value` (so a clause can use its value twice).
    pub fn bind(&mut self, clause: &str, value: Value) {
        self.args.push(value);
        self.sql.push_str(&clause.replace('?', &format!("?{}", self.args.len())));
    }

    /// ` AND column IN (...)` unless `values` is empty.
    pub fn any_of(&mut self, column: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        self.sql.push_str(&format!(" AND {column} IN ("));
        for (i, v) in values.iter().enumerate() {
            self.bind(if i == 0 { "?" } else { ", ?" }, Value::Text(v.clone()));
        }
        self.sql.push(')');
    }

    /// ` AND column LIKE %text%`, the text matching literally.
    pub fn contains(&mut self, columns: &[&str], text: &str) {
        let clause: Vec<String> = columns.iter().map(|c| format!("{c} LIKE ? ESCAPE '\\'")).collect();
        self.bind(
            &format!(" AND ({})", clause.join(" OR ")),
            Value::Text(format!("%{}%", escape_like(text))),
        );
    }

    pub fn range(&mut self, since_ms: Option<i64>, until_ms: Option<i64>) {
        let a = self.alias;
        if let Some(since) = since_ms {
            self.bind(&format!(" AND {a}time_ms >= ?"), Value::Integer(since));
        }
        if let Some(until) = until_ms {
            self.bind(&format!(" AND {a}time_ms < ?"), Value::Integer(until));
        }
    }

    /// Tailing (`after_id`: ascending ids), else by time; at most [`MAX_QUERY_LIMIT`] rows (0
    /// means that).
    pub fn order_and_limit(&mut self, after_id: Option<i64>, newest_first: bool, limit: u32) {
        let a = self.alias;
        if let Some(after) = after_id {
            self.bind(&format!(" AND {a}id > ?"), Value::Integer(after));
            self.sql.push_str(&format!(" ORDER BY {a}id ASC"));
        } else if newest_first {
            self.sql.push_str(&format!(" ORDER BY {a}time_ms DESC, {a}id DESC"));
        } else {
            self.sql.push_str(&format!(" ORDER BY {a}time_ms ASC, {a}id ASC"));
        }
        let limit = if limit == 0 { MAX_QUERY_LIMIT } else { limit.min(MAX_QUERY_LIMIT) };
        self.bind(" LIMIT ?", Value::Integer(i64::from(limit)));
    }
}

/// Escapes `text` for a `LIKE ... ESCAPE '\'` pattern so it matches literally.
pub(crate) fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Retention: deletes every row of `table` with `time_ms < cutoff_ms`, at most `chunk` rows per
/// transaction, so that a large purge lets ingest in between instead of holding the write lock
/// for its whole duration. Returns the number deleted.
pub(crate) fn delete_before(
    conn: &Connection,
    table: &str,
    cutoff_ms: i64,
    chunk: u32,
) -> Result<u64, Error> {
    if chunk == 0 {
        return Err(Error::Invalid("retention chunk size must be at least 1"));
    }
    // Each execute is its own (autocommit) transaction. The bundled SQLite has no
    // DELETE ... LIMIT, hence the subquery, which walks the time index from the oldest.
    let mut stmt = conn.prepare_cached(&format!(
        "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE time_ms < ?1 ORDER BY time_ms LIMIT ?2)"
    ))?;
    let mut total = 0u64;
    loop {
        let deleted = stmt.execute(params![cutoff_ms, chunk])?;
        total += deleted as u64;
        if deleted < chunk as usize {
            return Ok(total);
        }
    }
}
