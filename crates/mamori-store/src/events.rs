//! Events shipped by agents: group-committed ingest, filtered queries, retention.
//!
//! Ingest is the hot path (the target is 100k events/s through the whole manager on two cores),
//! and the schema is shaped by it:
//!
//! * events reference their agent by integer key, resolved once per batch;
//! * many agents' batches are written in one transaction, so one WAL fsync covers them all;
//! * there are exactly two indexes, `UNIQUE(agent_key, seq)` (de-duplication of at-least-once
//!   delivery) and `time_ms` (time-range queries and retention);
//! * there is no full-text index: it would cost more per insert than the row itself. Text search
//!   is a `LIKE` scan over the rows the other filters leave, so it is cheap on a narrow time range
//!   or one agent and slow on the whole table.

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, OptionalExtension, TransactionBehavior};

use crate::query::Query;
use crate::{Error, Store};

/// The most rows one [`Store::query_events`] returns.
pub const MAX_QUERY_LIMIT: u32 = 10_000;

/// One agent's events in a [`Store::insert_events`] call.
#[derive(Debug, Clone, Copy)]
pub struct AgentBatch<'a> {
    pub agent_id: &'a str,
    pub events: &'a [NewEvent<'a>],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewEvent<'a> {
    /// The agent's sequence number; the store keeps one event per (agent, seq).
    pub seq: u64,
    pub kind: &'a str,
    /// When the event happened, by the agent's clock.
    pub time_ms: i64,
    /// JSON text, stored verbatim (not parsed).
    pub data: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// Store-assigned, increasing in insertion order; use with [`EventFilter::after_id`] to tail.
    pub id: i64,
    pub agent_id: String,
    pub seq: u64,
    pub kind: String,
    pub time_ms: i64,
    pub received_ms: i64,
    pub data: String,
}

/// Which events [`Store::query_events`] returns. All filters combine with AND; the default
/// matches everything (up to [`MAX_QUERY_LIMIT`] rows, oldest first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// `time_ms >= since_ms`.
    pub since_ms: Option<i64>,
    /// `time_ms < until_ms` (exclusive).
    pub until_ms: Option<i64>,
    pub agent_id: Option<String>,
    /// Any of these kinds; empty means all kinds.
    pub kinds: Vec<String>,
    /// Substring of the kind or the data, compared case-insensitively for ASCII letters (SQLite's
    /// `LIKE`; other characters must match exactly). `%` and `_` match themselves.
    pub text: Option<String>,
    /// Only events with `id > after_id`, in ascending id order (tailing); `newest_first` is then
    /// ignored.
    pub after_id: Option<i64>,
    /// At most this many rows; 0 or anything above [`MAX_QUERY_LIMIT`] means [`MAX_QUERY_LIMIT`].
    pub limit: u32,
    /// Newest `time_ms` first instead of oldest first.
    pub newest_first: bool,
}

impl Store {
    /// Stores many agents' batches in one transaction. Each event is stored at most once per
    /// (agent, seq); a repeat, whether from an earlier call or earlier in the same batch, is
    /// counted as a duplicate and the first copy is kept. Returns `(stored, duplicates)` for each
    /// batch, in order.
    ///
    /// Fails, writing nothing at all, if any batch names an unknown agent or any seq exceeds
    /// `i64::MAX` (SQLite integers are signed; wrapping would collide with other seqs).
    pub fn insert_events(
        &mut self,
        batches: &[AgentBatch<'_>],
        received_ms: i64,
    ) -> Result<Vec<(u64, u64)>, Error> {
        // IMMEDIATE: the agent lookups read before the first write (see `enroll`).
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut counts = Vec::with_capacity(batches.len());
        {
            let mut find_agent = tx.prepare_cached("SELECT key FROM agents WHERE id = ?1")?;
            // ON CONFLICT on exactly this constraint, rather than INSERT OR IGNORE: OR IGNORE also
            // swallows NOT NULL and CHECK failures, which would then be miscounted as duplicates.
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (agent_key, seq, kind, time_ms, received_ms, data) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (agent_key, seq) DO NOTHING",
            )?;
            for batch in batches {
                let Some(key) = find_agent.query_row([batch.agent_id], |r| r.get::<_, i64>(0)).optional()?
                else {
                    return Err(Error::UnknownAgent(batch.agent_id.to_owned()));
                };
                let (mut stored, mut duplicates) = (0u64, 0u64);
                for event in batch.events {
                    let seq = i64::try_from(event.seq).map_err(|_| Error::SeqTooLarge {
                        agent_id: batch.agent_id.to_owned(),
                        seq: event.seq,
                    })?;
                    match insert.execute(params![
                        key,
                        seq,
                        event.kind,
                        event.time_ms,
                        received_ms,
                        event.data
                    ])? {
                        0 => duplicates += 1,
                        _ => stored += 1,
                    }
                }
                counts.push((stored, duplicates));
            }
        }
        tx.commit()?;
        Ok(counts)
    }

    /// Events matching `filter`; see [`EventFilter`] for ordering and limits.
    pub fn query_events(&self, filter: &EventFilter) -> Result<Vec<EventRow>, Error> {
        let mut q = Query::new(
            "SELECT e.id, a.id, e.seq, e.kind, e.time_ms, e.received_ms, e.data \
             FROM events e JOIN agents a ON a.key = e.agent_key WHERE 1",
            "e.",
        );
        q.range(filter.since_ms, filter.until_ms);
        if let Some(agent) = &filter.agent_id {
            q.bind(" AND a.id = ?", Value::Text(agent.clone()));
        }
        q.any_of("e.kind", &filter.kinds);
        if let Some(text) = &filter.text {
            q.contains(&["e.kind", "e.data"], text);
        }
        q.order_and_limit(filter.after_id, filter.newest_first, filter.limit);
        let (sql, args) = (q.sql, q.args);

        // Not prepare_cached: the text varies with the number of kinds, and a query must not push
        // the ingest statements out of the cache.
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(args), |r| {
            Ok(EventRow {
                id: r.get(0)?,
                agent_id: r.get(1)?,
                seq: r.get(2)?,
                kind: r.get(3)?,
                time_ms: r.get(4)?,
                received_ms: r.get(5)?,
                data: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The number of stored events (a full scan of the smallest index: not free on a big table).
    pub fn count_events(&self) -> Result<u64, Error> {
        Ok(self.conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?)
    }

    /// Retention: deletes every event with `time_ms < cutoff_ms`, at most `chunk` rows per
    /// transaction (see [`crate::query::delete_before`]). Returns the number deleted.
    pub fn delete_events_before(&self, cutoff_ms: i64, chunk: u32) -> Result<u64, Error> {
        crate::query::delete_before(&self.conn, "events", cutoff_ms, chunk)
    }
}

#[cfg(test)]
mod tests {
    use crate::query::escape_like;

    #[test]
    fn like_escaping() {
        assert_eq!(escape_like("50%_a\\b"), "50\\%\\_a\\\\b");
        assert_eq!(escape_like("plain"), "plain");
    }
}
