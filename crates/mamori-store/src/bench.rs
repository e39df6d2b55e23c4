//! The raw ingest ceiling: how fast batched inserts into this schema go with no network, TLS or
//! JSON parsing in front of them. `mamori bench ingest` prints it next to the measured network
//! rate, so a slow manager can be told apart from a slow disk.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{AgentBatch, Error, NewAgent, NewEvent, Store};

/// The result of [`raw_ingest_ceiling`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IngestCeiling {
    pub events: u64,
    /// Time spent inside [`Store::insert_events`] only; building the synthetic events is excluded.
    pub seconds: f64,
    pub events_per_sec: f64,
}

/// Creates a fresh store at `path` (which must not exist), adds `agents` synthetic agents, and
/// inserts `events` synthetic events of about 200 bytes of JSON each, round-robin over the
/// agents, `batch` events per [`Store::insert_events`] call (one agent per call), with the same
/// settings as the manager (WAL, `synchronous=FULL`). The file is left behind for the caller to
/// inspect or delete.
pub fn raw_ingest_ceiling(
    path: &Path,
    agents: usize,
    events: u64,
    batch: usize,
) -> Result<IngestCeiling, Error> {
    if agents == 0 || events == 0 || batch == 0 {
        return Err(Error::Invalid("agents, events and batch must all be at least 1"));
    }
    // Refusing an existing file keeps a mistyped path from filling the real database with
    // synthetic agents and events.
    if path.symlink_metadata().is_ok() {
        return Err(Error::AlreadyExists(path.to_path_buf()));
    }
    let mut store = Store::open(path)?;
    let start_ms = 1_700_000_000_000i64;
    let ids: Vec<String> = (0..agents).map(|i| format!("bench-{i:06}")).collect();
    for (i, id) in ids.iter().enumerate() {
        store.insert_agent_without_token(
            &NewAgent {
                id: id.clone(),
                hostname: format!("ward-{i}.hospital.example"),
                machine_id: format!("{i:032x}"),
                previous_device_id: None,
                agent_version: "bench".into(),
                cert_serial: format!("bench-serial-{i}"),
                cert_not_after_ms: start_ms + 7 * 86_400_000,
            },
            start_ms,
        )?;
    }

    let mut next_seq = vec![1u64; agents];
    let mut data: Vec<String> = Vec::with_capacity(batch);
    let mut spent = Duration::ZERO;
    let mut remaining = events;
    let mut call = 0usize;
    while remaining > 0 {
        let agent = call % agents;
        call += 1;
        let n = remaining.min(batch as u64);
        let done = events - remaining;
        remaining -= n;

        let first_seq = next_seq[agent];
        next_seq[agent] += n;
        data.clear();
        for seq in first_seq..first_seq + n {
            data.push(synthetic_event(agent, seq));
        }
        let evs: Vec<NewEvent<'_>> = data
            .iter()
            .zip(first_seq..)
            .zip(done..)
            .map(|((d, seq), nth)| NewEvent {
                seq,
                kind: if seq % 10 == 0 { "process.start" } else { "file.write" },
                // One millisecond apart, in insertion order, like a steady stream.
                time_ms: start_ms.saturating_add(i64::try_from(nth).unwrap_or(i64::MAX)),
                data: d,
            })
            .collect();

        let t = Instant::now();
        store.insert_events(&[AgentBatch { agent_id: &ids[agent], events: &evs }], start_ms)?;
        spent += t.elapsed();
    }
    let seconds = spent.as_secs_f64();
    Ok(IngestCeiling { events, seconds, events_per_sec: events as f64 / seconds.max(1e-9) })
}

/// About 200 bytes of event JSON that varies per event, like a file-write event would.
pub fn synthetic_event(agent: usize, seq: u64) -> String {
    let mut s = String::with_capacity(224);
    let _ = write!(
        s,
        r#"{{"path":"/home/staff{agent}/Documents/patient-letters/letter-{seq:08}.docx","size":{size},"sha256":"{hash:016x}{hash:016x}{hash:016x}{hash:016x}","pid":{pid},"user":"staff{agent}"}}"#,
        size = 4096 + seq % 65_536,
        hash = (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)) ^ agent as u64,
        pid = 1000 + seq % 30_000,
    );
    s
}

#[cfg(test)]
mod tests {
    use super::synthetic_event;

    #[test]
    fn synthetic_events_are_about_200_bytes_of_json() {
        for (agent, seq) in [(0, 1), (99, 123_456), (7, 99_999_999)] {
            let s = synthetic_event(agent, seq);
            assert!((180..=240).contains(&s.len()), "{} bytes: {s}", s.len());
            assert!(serde_json::from_str::<serde_json::Value>(&s).is_ok(), "not JSON: {s}");
        }
    }
}
