//! Which snapshots the vault keeps, and the only way it deletes any (issue 6).
//!
//! The vault is the authority, not the protected host. A compromised client can upload as many
//! snapshots as it likes, garbage or encrypted, and claim any time for them; with restic or
//! borg `forget --keep-last N` that ages the good snapshots out. Here:
//!
//! - **Time, not count.** A policy keeps everything received within a number of days, then the
//!   latest snapshot of each of the last N days, ISO weeks and months (UTC) *that have one*, the
//!   way restic's `--keep-daily` counts. A flood of snapshots in one day fills one daily bucket.
//!   Times are the vault's clock at acceptance ([`crate::ledger::SnapshotRecord::received_ms`])
//!   when the ledger has a record, because a client can back- or forward-date its own snapshots
//!   into other buckets; the snapshot's own time is used only for snapshots without a record
//!   (written by local tools on the vault host).
//! - **Attack-aware.** A suspicious snapshot whose alert no admin cleared never fills a bucket
//!   and is itself kept, as evidence. For each device with such a snapshot, the last clean
//!   snapshot before the earliest one is **pinned** in every series of that device (a series is
//!   one device's snapshots of one set of paths, like restic's default grouping by host and
//!   paths): the last clean version of every path stays until an admin clears the alert.
//!   After clearing, the snapshot counts as clean.
//! - **Two-phase delete.** [`plan`] only computes. [`schedule`] writes a deletion record due
//!   after a delay (at least [`MIN_DELETE_DELAY_MS`], 7 days by default) that an admin can
//!   [`cancel`]; [`execute_due`] re-plans with the ledger as it is then, so a snapshot that
//!   became suspicious or pinned meanwhile is not deleted, removes the snapshot files and
//!   collects garbage (`gc.rs`). These are library functions for the vault host's local admin
//!   command, which opens the repository with its passphrase; the vault's network service
//!   accepts snapshots and writes ledger records and never calls them.
//!
//! Files: `deletions/<id>.json` (a [`Scheduled`], removed once executed) and `gc.lock` (an
//! advisory lock held while [`execute_due`] runs).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ledger::{self, check_snapshot_name};
use crate::{create_new, Error, Repository, Result};

pub const DAY_MS: i64 = 86_400_000;
/// A deletion is due a day after scheduling at the earliest: a shorter delay leaves nobody the
/// time to notice an alert (or a late analysis) and cancel.
pub const MIN_DELETE_DELAY_MS: i64 = DAY_MS;
const MAX_DELETE_DELAY_MS: i64 = 3650 * DAY_MS;
/// Bounds that catch a typo (a policy of 10^9 days) rather than express a limit of the design.
const MAX_KEEP_WITHIN_DAYS: u32 = 100 * 366;
const MAX_BUCKETS: u32 = 100_000;

/// How long snapshots are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Every snapshot received within this many days of now is kept.
    pub keep_within_days: u32,
    /// The latest clean snapshot of each of the last N UTC days that have one.
    pub keep_daily: u32,
    /// ... of each of the last N ISO weeks (Monday to Sunday, UTC).
    pub keep_weekly: u32,
    /// ... of each of the last N calendar months (UTC).
    pub keep_monthly: u32,
    /// Between scheduling a deletion and when it may run.
    pub delete_delay_ms: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            keep_within_days: 7,
            keep_daily: 30,
            keep_weekly: 12,
            keep_monthly: 12,
            delete_delay_ms: 7 * DAY_MS,
        }
    }
}

impl Policy {
    pub fn validate(&self) -> Result<()> {
        if self.keep_within_days == 0
            && self.keep_daily == 0
            && self.keep_weekly == 0
            && self.keep_monthly == 0
        {
            return Err(Error::Invalid("retention policy keeps nothing (every keep rule is 0)".into()));
        }
        if self.keep_within_days > MAX_KEEP_WITHIN_DAYS {
            return Err(Error::Invalid(format!(
                "retention policy: keep_within_days {} is more than {MAX_KEEP_WITHIN_DAYS}",
                self.keep_within_days
            )));
        }
        for (name, n) in [
            ("keep_daily", self.keep_daily),
            ("keep_weekly", self.keep_weekly),
            ("keep_monthly", self.keep_monthly),
        ] {
            if n > MAX_BUCKETS {
                return Err(Error::Invalid(format!(
                    "retention policy: {name} {n} is more than {MAX_BUCKETS}"
                )));
            }
        }
        check_delay(self.delete_delay_ms)
    }
}

fn check_delay(delay_ms: i64) -> Result<()> {
    if !(MIN_DELETE_DELAY_MS..=MAX_DELETE_DELAY_MS).contains(&delay_ms) {
        return Err(Error::Invalid(format!(
            "deletion delay {delay_ms} ms is outside {MIN_DELETE_DELAY_MS}..={MAX_DELETE_DELAY_MS} ms (1 day to 10 years)"
        )));
    }
    Ok(())
}

/// A snapshot as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The snapshot's file name.
    pub name: String,
    pub device_id: String,
    /// The snapshot's paths; with `device_id` they name its series.
    pub paths: Vec<String>,
    /// The vault's receive time when known (see the module documentation).
    pub time_ms: i64,
    pub suspicious: bool,
    /// An admin cleared the alert: counts as clean.
    pub cleared: bool,
}

impl Candidate {
    fn counts_as_clean(&self) -> bool {
        !self.suspicious || self.cleared
    }
}

/// Why a snapshot is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeepReason {
    /// Received within `keep_within_days`.
    Within,
    Daily,
    Weekly,
    Monthly,
    /// The last clean snapshot before its device's earliest uncleared suspicious one.
    Pinned,
    /// Flagged suspicious and not cleared: kept as evidence.
    Suspicious,
}

impl std::fmt::Display for KeepReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeepReason::Within => "within",
            KeepReason::Daily => "daily",
            KeepReason::Weekly => "weekly",
            KeepReason::Monthly => "monthly",
            KeepReason::Pinned => "pinned",
            KeepReason::Suspicious => "suspicious",
        })
    }
}

/// A kept snapshot and every reason that keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub name: String,
    pub device_id: String,
    pub time_ms: i64,
    pub reasons: Vec<KeepReason>,
}

/// What a policy keeps and forgets, each oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub keep: Vec<Kept>,
    /// Snapshot names.
    pub forget: Vec<String>,
}

impl Plan {
    /// Why `name` is kept; `None` when it is not.
    pub fn reasons(&self, name: &str) -> Option<&[KeepReason]> {
        self.keep.iter().find(|k| k.name == name).map(|k| k.reasons.as_slice())
    }

    pub fn forgets(&self, name: &str) -> bool {
        self.forget.iter().any(|n| n == name)
    }
}

/// The repository's snapshots as candidates, with the ledger's problems. Device and time come
/// from the ledger record when there is one; a snapshot without a record (local tools) is
/// clean, its device is the snapshot's `device_id` or else its hostname, its time its own. A
/// snapshot whose record cannot be read counts as uncleared suspicious, so that damage keeps
/// rather than frees it.
pub fn candidates(repo: &Repository) -> Result<(Vec<Candidate>, Vec<ledger::Problem>)> {
    let ledger = ledger::read_records(&repo.root)?;
    let records: HashMap<&str, &(ledger::SnapshotRecord, Option<ledger::Clearance>)> =
        ledger.records.iter().map(|r| (r.0.snapshot.as_str(), r)).collect();
    let damaged: HashSet<&str> = ledger
        .problems
        .iter()
        .filter(|p| !records.contains_key(p.snapshot.as_str()))
        .map(|p| p.snapshot.as_str())
        .collect();
    let mut out = Vec::new();
    for (name, snapshot) in repo.snapshots()? {
        let mut paths = snapshot.paths.clone();
        paths.sort();
        let local_device = if snapshot.device_id.is_empty() {
            snapshot.hostname.clone()
        } else {
            snapshot.device_id.clone()
        };
        let candidate = match records.get(name.as_str()) {
            Some((rec, clearance)) => Candidate {
                name: name.clone(),
                device_id: if rec.device_id.is_empty() { local_device } else { rec.device_id.clone() },
                paths,
                time_ms: rec.received_ms,
                suspicious: rec.suspicious,
                cleared: clearance.is_some(),
            },
            None => Candidate {
                name: name.clone(),
                device_id: local_device,
                paths,
                time_ms: snapshot.time_ms,
                suspicious: damaged.contains(name.as_str()),
                cleared: false,
            },
        };
        out.push(candidate);
    }
    Ok((out, ledger.problems))
}

/// The bucket a time falls in, for one kind of bucket.
type Bucket = fn(i64) -> i64;

fn day_of(time_ms: i64) -> i64 {
    time_ms.div_euclid(DAY_MS)
}

/// ISO weeks run Monday to Sunday; 1970-01-01 was a Thursday, so shifting by 3 days makes
/// Monday the first day of each 7-day block. The block number names the ISO week uniquely
/// (also across a year end, where week 1 may start in December).
fn week_of(time_ms: i64) -> i64 {
    (day_of(time_ms) + 3).div_euclid(7)
}

/// Months since year 0, from the proleptic Gregorian calendar (H. Hinnant's
/// `civil_from_days`): exact for every i64 millisecond time, which a hostile client may send.
fn month_of(time_ms: i64) -> i64 {
    let z = day_of(time_ms) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    year * 12 + (month - 1)
}

/// Applies `policy` at `now_ms` (see the module documentation for the rules).
pub fn plan(snapshots: &[Candidate], policy: &Policy, now_ms: i64) -> Plan {
    let order = |c: &Candidate| (c.time_ms, c.name.clone());
    // The earliest uncleared suspicious snapshot of each device: from there on its snapshots
    // may be the attacker's.
    let mut compromised: HashMap<&str, (i64, String)> = HashMap::new();
    for c in snapshots.iter().filter(|c| !c.counts_as_clean()) {
        let at = order(c);
        compromised
            .entry(c.device_id.as_str())
            .and_modify(|e| {
                if at < *e {
                    *e = at.clone();
                }
            })
            .or_insert(at);
    }

    let mut series: BTreeMap<(&str, &[String]), Vec<&Candidate>> = BTreeMap::new();
    for c in snapshots {
        series.entry((c.device_id.as_str(), c.paths.as_slice())).or_default().push(c);
    }
    let within_ms = i64::from(policy.keep_within_days) * DAY_MS;
    let mut reasons: HashMap<&str, Vec<KeepReason>> = HashMap::new();
    for ((device, _), mut members) in series {
        members.sort_by_key(|c| order(c));
        for c in &members {
            let r = reasons.entry(c.name.as_str()).or_default();
            if !c.counts_as_clean() {
                r.push(KeepReason::Suspicious);
            }
            if now_ms.saturating_sub(c.time_ms) < within_ms {
                r.push(KeepReason::Within);
            }
        }
        let rules: [(KeepReason, u32, Bucket); 3] = [
            (KeepReason::Daily, policy.keep_daily, day_of),
            (KeepReason::Weekly, policy.keep_weekly, week_of),
            (KeepReason::Monthly, policy.keep_monthly, month_of),
        ];
        for (reason, count, bucket) in rules {
            let mut left = count;
            let mut last = None;
            for c in members.iter().rev().filter(|c| c.counts_as_clean()) {
                if left == 0 {
                    break;
                }
                let key = bucket(c.time_ms);
                if last != Some(key) {
                    reasons.entry(c.name.as_str()).or_default().push(reason);
                    left -= 1;
                    last = Some(key);
                }
            }
        }
        if let Some(first_bad) = compromised.get(device) {
            if let Some(c) = members.iter().rev().find(|c| c.counts_as_clean() && order(c) < *first_bad) {
                reasons.entry(c.name.as_str()).or_default().push(KeepReason::Pinned);
            }
        }
    }

    let mut sorted: Vec<&Candidate> = snapshots.iter().collect();
    sorted.sort_by_key(|c| order(c));
    let mut out = Plan::default();
    let mut seen = HashSet::new();
    for c in sorted {
        // The same name twice in the input is one snapshot file.
        if !seen.insert(c.name.as_str()) {
            continue;
        }
        let mut r = reasons.remove(c.name.as_str()).unwrap_or_default();
        r.sort();
        r.dedup();
        if r.is_empty() {
            out.forget.push(c.name.clone());
        } else {
            out.keep.push(Kept {
                name: c.name.clone(),
                device_id: c.device_id.clone(),
                time_ms: c.time_ms,
                reasons: r,
            });
        }
    }
    out
}

/// A deletion waiting for its due time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scheduled {
    pub id: String,
    pub created_ms: i64,
    pub due_ms: i64,
    pub snapshots: Vec<String>,
}

fn deletions_dir(root: &Path) -> PathBuf {
    root.join("deletions")
}

fn check_deletion_id(id: &str) -> Result<()> {
    if id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(Error::Invalid(format!("`{id}` is not a deletion id (32 lowercase hex digits)")))
    }
}

/// Records that the snapshots `plan` forgets are to be deleted once `delay_ms` has passed.
pub fn schedule(repo_root: &Path, plan: &Plan, now_ms: i64, delay_ms: i64) -> Result<Scheduled> {
    check_delay(delay_ms)?;
    if plan.forget.is_empty() {
        return Err(Error::Refused("the plan forgets no snapshot; nothing to schedule".into()));
    }
    for name in &plan.forget {
        check_snapshot_name(name)?;
    }
    let due_ms = now_ms
        .checked_add(delay_ms)
        .ok_or_else(|| Error::Invalid(format!("now {now_ms} ms plus the delay is out of range")))?;
    let scheduled = Scheduled {
        id: hex::encode(rand::random::<[u8; 16]>()),
        created_ms: now_ms,
        due_ms,
        snapshots: plan.forget.clone(),
    };
    let json = serde_json::to_vec_pretty(&scheduled).map_err(|e| Error::Invalid(e.to_string()))?;
    if !create_new(&deletions_dir(repo_root), &format!("{}.json", scheduled.id), &json)? {
        return Err(Error::Refused(format!("deletion {} exists", scheduled.id)));
    }
    Ok(scheduled)
}

/// Every scheduled deletion, oldest first. A record that cannot be read is an error naming
/// it: these are the admin's own files, and a deletion must not be half-known.
pub fn pending(root: &Path) -> Result<Vec<Scheduled>> {
    let dir = deletions_dir(root);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".json") else { continue };
        if check_deletion_id(id).is_err() {
            continue;
        }
        let path = entry.path();
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let scheduled: Scheduled = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Corrupt(format!("deletion record {}: {e}", path.display())))?;
        if scheduled.id != id {
            return Err(Error::Corrupt(format!(
                "deletion record {}: it says it is {}",
                path.display(),
                scheduled.id
            )));
        }
        out.push(scheduled);
    }
    out.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// Drops a scheduled deletion; nothing of it is executed.
pub fn cancel(root: &Path, id: &str) -> Result<()> {
    check_deletion_id(id)?;
    let dir = deletions_dir(root);
    let path = dir.join(format!("{id}.json"));
    match std::fs::remove_file(&path) {
        Ok(()) => sync_dir(&dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::Invalid(format!("no scheduled deletion {id} (executed or cancelled already?)")))
        }
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// A scheduled snapshot that was not deleted, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub snapshot: String,
    pub why: String,
}

/// What [`Repository::collect_garbage`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub packs_before: u64,
    /// Packs whose every blob was still referenced: untouched.
    pub packs_kept: u64,
    pub packs_removed: u64,
    pub packs_written: u64,
    pub blobs_removed: u64,
    /// Referenced blobs copied out of packs that also held unreferenced ones.
    pub blobs_repacked: u64,
    pub bytes_removed: u64,
    pub bytes_written: u64,
    /// `bytes_removed - bytes_written`.
    pub bytes_reclaimed: u64,
    /// Packs left alone because they could not be read or hold a referenced blob that does
    /// not decrypt (removing them could only lose more); `check` says more.
    pub damaged_packs: Vec<String>,
}

/// What [`execute_due`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Executed {
    /// Deletions that were due and are done (their records removed).
    pub executed: Vec<String>,
    /// Deletions not yet due.
    pub not_due: Vec<String>,
    /// Snapshot files removed.
    pub removed: Vec<String>,
    /// Scheduled snapshots that were gone already (an earlier run was interrupted).
    pub already_gone: Vec<String>,
    /// Scheduled snapshots the current plan keeps.
    pub skipped: Vec<Skipped>,
    /// Ledger files that could not be read (their snapshots were kept).
    pub ledger_problems: Vec<ledger::Problem>,
    /// `None` when nothing was due.
    pub gc: Option<GcReport>,
}

/// Runs every scheduled deletion whose due time has passed: re-plans with `policy` and the
/// ledger as they are now, removes the snapshot files the plan still forgets, and collects
/// garbage. Interrupted at any point, it leaves a repository that checks clean, and running it
/// again finishes the job (a deletion record is removed only after its garbage is collected).
pub fn execute_due(repo: &mut Repository, policy: &Policy, now_ms: i64) -> Result<Executed> {
    policy.validate()?;
    let _lock = lock(&repo.root)?;
    let mut out = Executed::default();
    let mut due = Vec::new();
    for scheduled in pending(&repo.root)? {
        if scheduled.due_ms <= now_ms {
            due.push(scheduled);
        } else {
            out.not_due.push(scheduled.id);
        }
    }
    if due.is_empty() {
        return Ok(out);
    }
    let (candidates, problems) = candidates(repo)?;
    out.ledger_problems = problems;
    let current = plan(&candidates, policy, now_ms);
    let snapshots_dir = repo.root.join("snapshots");
    let mut done = HashSet::new();
    for scheduled in &due {
        for name in &scheduled.snapshots {
            if !done.insert(name.clone()) {
                continue;
            }
            if let Some(reasons) = current.reasons(name) {
                let why = reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ");
                out.skipped.push(Skipped { snapshot: name.clone(), why: format!("kept now: {why}") });
                continue;
            }
            if check_snapshot_name(name).is_err() {
                out.skipped.push(Skipped { snapshot: name.clone(), why: "not a snapshot name".into() });
                continue;
            }
            let path = snapshots_dir.join(name);
            if !current.forgets(name) {
                // Not among the readable snapshots: gone, or damaged (then `check` names it
                // and it is left for the admin to look at).
                if path.exists() {
                    out.skipped
                        .push(Skipped { snapshot: name.clone(), why: "cannot be read; run check".into() });
                } else {
                    out.already_gone.push(name.clone());
                }
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => out.removed.push(name.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.already_gone.push(name.clone()),
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
    }
    // The removals must be durable before any blob they referred to goes: otherwise a crash
    // could bring back a snapshot whose data is gone.
    sync_dir(&snapshots_dir)?;
    out.gc = Some(repo.collect_garbage()?);
    let dir = deletions_dir(&repo.root);
    for scheduled in due {
        let path = dir.join(format!("{}.json", scheduled.id));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
        out.executed.push(scheduled.id);
    }
    sync_dir(&dir)?;
    Ok(out)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))
}

/// An exclusive advisory lock on `<root>/gc.lock`, released when the file is dropped, so that
/// two admin runs never collect garbage at once, nor one under a running service.
fn lock(root: &Path) -> Result<std::fs::File> {
    flock_gc(
        root,
        libc::LOCK_EX,
        "the repository is in use by `mamori vault serve` or another prune; stop the service first",
    )
}

/// The shared side of the same lock, held by the vault service while it serves: garbage is
/// never collected under a service whose new snapshots might refer to it.
pub fn service_lock(root: &Path) -> Result<std::fs::File> {
    flock_gc(
        root,
        libc::LOCK_SH,
        "a prune (`mamori vault prune --execute`) is running; start the service after it",
    )
}

fn flock_gc(root: &Path, mode: libc::c_int, busy: &str) -> Result<std::fs::File> {
    use std::os::unix::io::AsRawFd;
    let path = root.join("gc.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    // SAFETY: flock on a file descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return Err(Error::Refused(format!("{}: {busy}", path.display())));
        }
        return Err(Error::io(&path, e));
    }
    Ok(file)
}
