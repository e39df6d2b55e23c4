//! Events received as logs (syslog senders, collected log files) and the detections rules made
//! of them.
//!
//! Logs differ from agent events in what identifies them: a sender has no enrolled identity and
//! no sequence number, so there is nothing to de-duplicate on and no agent to reference. A row
//! names its `source` (e.g. `tcp 10.0.0.1`, `udp 10.0.0.254`) and keeps the line as it was
//! received, not the parsed event: parsing is deterministic given the line, the receive time
//! and the sender, and the parsed event (every source field twice, once under its own name and
//! once under an ECS name, plus the original) is five to six times the line. Storing the line
//! is what lets the manager write at the rate firewalls send.

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, TransactionBehavior};

use crate::query::Query;
use crate::{Error, Store};

/// One log event for [`Store::insert_log_events`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewLogEvent<'a> {
    pub source: &'a str,
    /// When it happened (the log's own time, else when it was received).
    pub time_ms: i64,
    /// The line as received (invalid UTF-8 replaced).
    pub line: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEventRow {
    pub id: i64,
    pub source: String,
    pub time_ms: i64,
    pub received_ms: i64,
    pub line: String,
}

/// Which log events [`Store::query_log_events`] returns (all filters combine with AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub source: Option<String>,
    /// Substring of the line (SQLite `LIKE`, ASCII case-insensitive).
    pub text: Option<String>,
    /// Only rows with `id > after_id`, ascending (tailing).
    pub after_id: Option<i64>,
    /// 0 or anything above [`MAX_QUERY_LIMIT`] means [`MAX_QUERY_LIMIT`].
    pub limit: u32,
    pub newest_first: bool,
}

/// What a detection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectionKind {
    /// One event matched a Sigma detection rule.
    Sigma,
    /// A Sigma correlation rule's condition was met over several events.
    Correlation,
}

impl DetectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DetectionKind::Sigma => "sigma",
            DetectionKind::Correlation => "correlation",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDetection<'a> {
    pub kind: DetectionKind,
    pub rule_id: &'a str,
    pub title: &'a str,
    /// Sigma level: informational, low, medium, high, critical.
    pub level: &'a str,
    /// The host the detection is about, when the events name one.
    pub host: Option<&'a str>,
    pub source: &'a str,
    pub time_ms: i64,
    /// JSON text: the rule's metadata and the matching event(s).
    pub data: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectionRow {
    pub id: i64,
    pub kind: String,
    pub rule_id: String,
    pub title: String,
    pub level: String,
    pub host: Option<String>,
    pub source: String,
    pub time_ms: i64,
    pub created_ms: i64,
    pub data: String,
}

/// Which detections [`Store::query_detections`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DetectionFilter {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub rule_id: Option<String>,
    pub host: Option<String>,
    /// Any of these levels; empty means all.
    pub levels: Vec<String>,
    pub after_id: Option<i64>,
    pub limit: u32,
    pub newest_first: bool,
}

/// Maps `SELECT id, kind, rule_id, title, level, host, source, time_ms, created_ms, data`.
pub(crate) fn detection_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DetectionRow> {
    Ok(DetectionRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        rule_id: r.get(2)?,
        title: r.get(3)?,
        level: r.get(4)?,
        host: r.get(5)?,
        source: r.get(6)?,
        time_ms: r.get(7)?,
        created_ms: r.get(8)?,
        data: r.get(9)?,
    })
}

impl Store {
    /// Stores log events and detections in one transaction (one fsync): the detections made of a
    /// batch are durable exactly when the batch is. Returns the number of log events stored.
    pub fn insert_logs(
        &mut self,
        events: &[NewLogEvent<'_>],
        detections: &[NewDetection<'_>],
        received_ms: i64,
    ) -> Result<u64, Error> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO log_events (source, time_ms, received_ms, line) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for e in events {
                insert.execute(params![e.source, e.time_ms, received_ms, e.line])?;
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO detections (kind, rule_id, title, level, host, source, time_ms, created_ms, data) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for d in detections {
                insert.execute(params![
                    d.kind.as_str(),
                    d.rule_id,
                    d.title,
                    d.level,
                    d.host,
                    d.source,
                    d.time_ms,
                    received_ms,
                    d.data
                ])?;
            }
        }
        tx.commit()?;
        Ok(events.len() as u64)
    }

    pub fn query_log_events(&self, filter: &LogFilter) -> Result<Vec<LogEventRow>, Error> {
        let mut q = Query::new("SELECT id, source, time_ms, received_ms, line FROM log_events WHERE 1", "");
        q.range(filter.since_ms, filter.until_ms);
        if let Some(source) = &filter.source {
            q.bind(" AND source = ?", Value::Text(source.clone()));
        }
        if let Some(text) = &filter.text {
            q.contains(&["line"], text);
        }
        q.order_and_limit(filter.after_id, filter.newest_first, filter.limit);
        let mut stmt = self.conn.prepare(&q.sql)?;
        let rows = stmt.query_map(params_from_iter(q.args), |r| {
            Ok(LogEventRow {
                id: r.get(0)?,
                source: r.get(1)?,
                time_ms: r.get(2)?,
                received_ms: r.get(3)?,
                line: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn query_detections(&self, filter: &DetectionFilter) -> Result<Vec<DetectionRow>, Error> {
        let mut q = Query::new(
            "SELECT id, kind, rule_id, title, level, host, source, time_ms, created_ms, data \
             FROM detections WHERE 1",
            "",
        );
        q.range(filter.since_ms, filter.until_ms);
        if let Some(rule) = &filter.rule_id {
            q.bind(" AND rule_id = ?", Value::Text(rule.clone()));
        }
        if let Some(host) = &filter.host {
            q.bind(" AND host = ?", Value::Text(host.clone()));
        }
        q.any_of("level", &filter.levels);
        q.order_and_limit(filter.after_id, filter.newest_first, filter.limit);
        let mut stmt = self.conn.prepare(&q.sql)?;
        let rows = stmt.query_map(params_from_iter(q.args), detection_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The number of stored log events (a full index scan).
    pub fn count_log_events(&self) -> Result<u64, Error> {
        Ok(self.conn.query_row("SELECT count(*) FROM log_events", [], |r| r.get(0))?)
    }

    /// Retention for logs, like [`Store::delete_events_before`]; detections are kept (they are
    /// the record of what happened, and few).
    pub fn delete_log_events_before(&self, cutoff_ms: i64, chunk: u32) -> Result<u64, Error> {
        crate::query::delete_before(&self.conn, "log_events", cutoff_ms, chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("m.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn logs_and_their_detections_are_stored_together_and_queried() {
        let (_dir, mut store) = store();
        let events = [
            NewLogEvent { source: "tcp 10.0.0.1", time_ms: 1_000, line: "a 100%_x" },
            NewLogEvent { source: "udp 10.0.0.2", time_ms: 3_000, line: "b" },
            NewLogEvent { source: "tcp 10.0.0.1", time_ms: 2_000, line: "c" },
        ];
        let detections = [NewDetection {
            kind: DetectionKind::Sigma,
            rule_id: "r-1",
            title: "T",
            level: "high",
            host: Some("pc1"),
            source: "tcp 10.0.0.1",
            time_ms: 2_000,
            data: "{}",
        }];
        assert_eq!(store.insert_logs(&events, &detections, 5_000).unwrap(), 3);
        assert_eq!(store.count_log_events().unwrap(), 3);

        let all = store.query_log_events(&LogFilter::default()).unwrap();
        assert_eq!(all.iter().map(|r| r.time_ms).collect::<Vec<_>>(), [1_000, 2_000, 3_000]);
        assert!(all.iter().all(|r| r.received_ms == 5_000));
        let one =
            LogFilter { source: Some("tcp 10.0.0.1".into()), since_ms: Some(1_500), ..Default::default() };
        assert_eq!(store.query_log_events(&one).unwrap().len(), 1);
        // LIKE wildcards in the search text match themselves.
        let text = LogFilter { text: Some("100%_".into()), ..Default::default() };
        assert_eq!(store.query_log_events(&text).unwrap().len(), 1);
        let tail = LogFilter { after_id: Some(all[0].id), ..Default::default() };
        assert_eq!(store.query_log_events(&tail).unwrap().len(), 2);

        let d =
            store.query_detections(&DetectionFilter { levels: vec!["high".into()], ..Default::default() });
        let d = d.unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].host.as_deref(), d[0].kind.as_str(), d[0].created_ms),
            (Some("pc1"), "sigma", 5_000)
        );
        let none = DetectionFilter { levels: vec!["low".into()], ..Default::default() };
        assert!(store.query_detections(&none).unwrap().is_empty());

        assert_eq!(store.delete_log_events_before(2_500, 1).unwrap(), 2);
        assert_eq!(store.count_log_events().unwrap(), 1);
        assert_eq!(store.query_detections(&DetectionFilter::default()).unwrap().len(), 1, "detections stay");
    }
}
