//! The vault's own record of every snapshot it accepted: who sent it, when the vault (not the
//! client) received it, and whether the analysis found it suspicious. Retention reads these
//! records; a client cannot write or change them.
//!
//! ```text
//! ledger/<snapshot>.json           SnapshotRecord, written once when the snapshot is accepted
//! ledger/cleared/<snapshot>.json   Clearance, written once by an admin who cleared the alert
//! ```
//!
//! Both are created with [`crate::create_new`] and never replaced: a verdict cannot be
//! rewritten after the fact, and clearing an alert is a separate, attributable record. Records
//! of snapshots that retention later deleted stay as the audit trail (they are small).
//!
//! A record that cannot be read is not skipped silently: [`read_records`] returns it in
//! [`Ledger::problems`], and retention treats its snapshot as an uncleared suspicious one
//! (kept, and pinning its device's last clean version), so damage never makes a snapshot
//! deletable.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::analysis::Analysis;
use crate::{create_new, Error, Result};

/// What the vault service records when it accepts a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The snapshot's file name in `snapshots/`.
    pub snapshot: String,
    /// The enrolled device (certificate) that uploaded it.
    pub device_id: String,
    pub hostname: String,
    /// The time the client claims.
    pub time_ms: i64,
    /// The vault's clock when the snapshot was accepted: what retention goes by, because a
    /// client can claim any `time_ms`.
    pub received_ms: i64,
    pub suspicious: bool,
    #[serde(default)]
    pub reasons: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
}

/// An admin's decision that a suspicious snapshot's alert was a false alarm (or handled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clearance {
    pub note: String,
    pub at_ms: i64,
    pub by: String,
}

/// A ledger file that could not be read, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The snapshot the file is about (from its name).
    pub snapshot: String,
    pub path: PathBuf,
    pub error: String,
}

/// Everything in the ledger.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// Records by snapshot name (sorted), each with its clearance if an admin cleared it.
    pub records: Vec<(SnapshotRecord, Option<Clearance>)>,
    /// Files that exist and could not be read or do not match their name.
    pub problems: Vec<Problem>,
}

fn ledger_dir(root: &Path) -> PathBuf {
    root.join("ledger")
}

fn cleared_dir(root: &Path) -> PathBuf {
    root.join("ledger").join("cleared")
}

/// Snapshot names are 64 hex digits; anything else would put a file outside the ledger.
pub(crate) fn check_snapshot_name(name: &str) -> Result<()> {
    if name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(Error::Invalid(format!("`{name}` is not a snapshot name (64 lowercase hex digits)")))
    }
}

/// Writes the record of an accepted snapshot. A second record for the same snapshot is
/// refused: the first verdict stands.
pub fn write_record(root: &Path, rec: &SnapshotRecord) -> Result<()> {
    check_snapshot_name(&rec.snapshot)?;
    let json = serde_json::to_vec_pretty(rec).map_err(|e| Error::Invalid(e.to_string()))?;
    let dir = ledger_dir(root);
    if !create_new(&dir, &format!("{}.json", rec.snapshot), &json)? {
        return Err(Error::Refused(format!(
            "{}: a ledger record for snapshot {} exists (records are written once)",
            dir.join(format!("{}.json", rec.snapshot)).display(),
            rec.snapshot
        )));
    }
    Ok(())
}

/// Reads one snapshot's record; `Ok(None)` when there is none.
pub fn read_record(root: &Path, snapshot: &str) -> Result<Option<SnapshotRecord>> {
    check_snapshot_name(snapshot)?;
    let path = ledger_dir(root).join(format!("{snapshot}.json"));
    match std::fs::read(&path) {
        Ok(bytes) => parse_record(&path, snapshot, &bytes).map(Some).map_err(Error::Corrupt),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

fn parse_record(path: &Path, snapshot: &str, bytes: &[u8]) -> std::result::Result<SnapshotRecord, String> {
    let rec: SnapshotRecord =
        serde_json::from_slice(bytes).map_err(|e| format!("{}: not a ledger record: {e}", path.display()))?;
    if rec.snapshot != snapshot {
        return Err(format!("{}: the record is about snapshot {}", path.display(), rec.snapshot));
    }
    Ok(rec)
}

/// Every record with its clearance, and the files that could not be read.
pub fn read_records(root: &Path) -> Result<Ledger> {
    let mut ledger = Ledger::default();
    for (snapshot, path) in json_files(&ledger_dir(root))? {
        let record = std::fs::read(&path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|bytes| parse_record(&path, &snapshot, &bytes));
        let record = match record {
            Ok(r) => r,
            Err(error) => {
                ledger.problems.push(Problem { snapshot, path, error });
                continue;
            }
        };
        let clearance = match read_clearance(root, &snapshot) {
            Ok(c) => c,
            // Counted as not cleared: a damaged clearance keeps the snapshot, never frees it.
            Err(e) => {
                let path = cleared_dir(root).join(format!("{snapshot}.json"));
                ledger.problems.push(Problem { snapshot, path, error: e.to_string() });
                None
            }
        };
        ledger.records.push((record, clearance));
    }
    Ok(ledger)
}

fn read_clearance(root: &Path, snapshot: &str) -> Result<Option<Clearance>> {
    let path = cleared_dir(root).join(format!("{snapshot}.json"));
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Corrupt(format!("{}: not a clearance: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// `<snapshot>.json` files of `dir` (absent directory: none), sorted. Temporaries of a killed
/// writer and the `cleared` directory do not match.
fn json_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".json") else { continue };
        if check_snapshot_name(stem).is_ok() {
            out.push((stem.to_string(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Clears the alert of a suspicious snapshot: from then on retention counts it as clean and
/// releases the pin it caused. Refused for a snapshot without a record, one that was not
/// suspicious, and one already cleared.
pub fn clear(root: &Path, snapshot: &str, note: &str, by: &str, now_ms: i64) -> Result<()> {
    let record = read_record(root, snapshot)?
        .ok_or_else(|| Error::Invalid(format!("snapshot {snapshot} has no ledger record")))?;
    if !record.suspicious {
        return Err(Error::Refused(format!(
            "snapshot {snapshot} was not flagged suspicious; nothing to clear"
        )));
    }
    if by.trim().is_empty() {
        return Err(Error::Invalid(format!("clearing snapshot {snapshot}: say who clears it")));
    }
    let dir = cleared_dir(root);
    if let Some(previous) = read_clearance(root, snapshot)? {
        return Err(Error::Refused(format!(
            "snapshot {snapshot} was cleared already by {} at {} ms",
            previous.by, previous.at_ms
        )));
    }
    let clearance = Clearance { note: note.to_string(), at_ms: now_ms, by: by.to_string() };
    let json = serde_json::to_vec_pretty(&clearance).map_err(|e| Error::Invalid(e.to_string()))?;
    if !create_new(&dir, &format!("{snapshot}.json"), &json)? {
        return Err(Error::Refused(format!("snapshot {snapshot} was cleared already (concurrently)")));
    }
    Ok(())
}
