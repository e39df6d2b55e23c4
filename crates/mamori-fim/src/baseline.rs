//! The baseline: one SQLite file (WAL, created 0600), one row per path.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::change::{diff, Change};
use crate::entry::{path_bytes, path_from_bytes, Entry, Kind};
use crate::walk::{walk, Item, PrevMap, Stored, Target};
use crate::watch::{EventKind, WatchEvent};
use crate::{Budget, Config, Error, Problem, ProblemKind, Result, Scope, Stats};

const SCHEMA_VERSION: i64 = 1;

/// The result of [`Baseline::build`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub problems: Vec<Problem>,
    pub stats: Stats,
}

/// The result of [`Baseline::check`] and [`Baseline::apply_event`]. Changes and problems are
/// sorted by path.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CheckReport {
    pub changes: Vec<Change>,
    pub problems: Vec<Problem>,
    pub stats: Stats,
}

/// The recorded state of the watched trees.
pub struct Baseline {
    conn: Connection,
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

fn hash_col(h: &Option<[u8; 32]>) -> Option<&[u8]> {
    h.as_ref().map(|h| h.as_slice())
}

fn read_hash(v: Option<Vec<u8>>) -> Option<[u8; 32]> {
    v.and_then(|v| v.try_into().ok())
}

const COLS: &str =
    "path, kind, size, mode, uid, gid, mtime_ns, ctime_ns, ino, dev, hash, xattrs, target, recorded_ns";

fn row_to(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<(PathBuf, Entry, i64)>> {
    let Some(kind) = Kind::from_code(r.get(1)?) else { return Ok(None) };
    let entry = Entry {
        kind,
        size: r.get::<_, i64>(2)? as u64,
        mode: r.get(3)?,
        uid: r.get(4)?,
        gid: r.get(5)?,
        mtime_ns: r.get(6)?,
        ctime_ns: r.get(7)?,
        ino: r.get::<_, i64>(8)? as u64,
        dev: r.get::<_, i64>(9)? as u64,
        hash: read_hash(r.get(10)?),
        xattrs: read_hash(r.get(11)?),
        target: r.get::<_, Option<Vec<u8>>>(12)?.map(path_from_bytes),
    };
    Ok(Some((path_from_bytes(r.get(0)?), entry, r.get(13)?)))
}

fn put(tx: &Connection, path: &Path, e: &Entry, recorded_ns: i64) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(&format!(
        "INSERT OR REPLACE INTO files ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
    ))?;
    stmt.execute(params![
        path_bytes(path),
        e.kind.code(),
        e.size as i64,
        e.mode,
        e.uid,
        e.gid,
        e.mtime_ns,
        e.ctime_ns,
        e.ino as i64,
        e.dev as i64,
        hash_col(&e.hash),
        hash_col(&e.xattrs),
        e.target.as_deref().map(path_bytes),
        recorded_ns,
    ])?;
    Ok(())
}

fn remove(tx: &Connection, path: &Path) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM files WHERE path = ?1")?.execute(params![path_bytes(path)])?;
    Ok(())
}

/// The smallest byte string greater than every path under `dir/` (`dir0`: '0' follows '/').
fn subtree_bounds(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let mut lo = path_bytes(dir).to_vec();
    if lo.last() != Some(&b'/') {
        lo.push(b'/');
    }
    let mut hi = lo.clone();
    *hi.last_mut().expect("non-empty") = b'0';
    (lo, hi)
}

impl Baseline {
    /// Opens the baseline at `db_path`, creating it (mode 0600) if needed.
    pub fn open(db_path: &Path) -> Result<Baseline> {
        // Pre-create with the right mode; this descriptor is closed before SQLite opens the file,
        // so no lock of a connection of ours can be dropped by closing it.
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(db_path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        let conn = Connection::open(db_path)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        match version {
            0 => conn.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS files (
                    path BLOB PRIMARY KEY, kind INTEGER NOT NULL, size INTEGER NOT NULL,
                    mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
                    mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, ino INTEGER NOT NULL,
                    dev INTEGER NOT NULL, hash BLOB, xattrs BLOB, target BLOB,
                    recorded_ns INTEGER NOT NULL) WITHOUT ROWID;
                 PRAGMA user_version = 1;
                 COMMIT;",
            )?,
            SCHEMA_VERSION => {}
            v => return Err(Error::Schema(v)),
        }
        Ok(Baseline { conn })
    }

    /// Number of recorded paths.
    pub fn len(&self) -> Result<u64> {
        Ok(self.conn.query_row("SELECT COUNT(*) FROM files", [], |r| r.get::<_, i64>(0))? as u64)
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Every recorded regular file, in path order (for consumers that keep their own per-file
    /// state, such as the ransomware detector's content samples).
    pub fn files(&self) -> Result<Vec<PathBuf>> {
        let mut stmt = self.conn.prepare("SELECT path FROM files WHERE kind = ?1 ORDER BY path")?;
        let rows = stmt.query_map(params![Kind::File.code()], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(path_from_bytes(r?));
        }
        Ok(out)
    }

    /// The recorded entry of `path`.
    pub fn get(&self, path: &Path) -> Result<Option<Entry>> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT {COLS} FROM files WHERE path = ?1"),
                params![path_bytes(path)],
                row_to,
            )
            .optional()?;
        Ok(row.flatten().map(|(_, e, _)| e))
    }

    /// Records every path of the watched trees, replacing the previous baseline.
    pub fn build(&mut self, config: &Config, budget: &Budget) -> Result<Report> {
        let scope = config.scope()?;
        let targets: Vec<Target> =
            scope.roots.iter().map(|r| Target { path: r.clone(), recursive: true }).collect();
        let prev = PrevMap::new();
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM files", [])?;
        let recorded = now_ns();
        let mut problems = Vec::new();
        let mut err = None;
        let stats = walk(&scope, &targets, budget, true, &prev, &mut |item: Item| {
            if let Some(e) = &item.entry {
                if err.is_none() {
                    err = put(&tx, &item.path, e, recorded).err();
                }
            }
            if let Some(p) = item.problem {
                problems.push(p);
            }
        });
        if let Some(e) = err {
            return Err(e.into());
        }
        tx.commit()?;
        problems.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Report { problems, stats })
    }

    /// Walks the watched trees again and compares with the baseline. With `update`, the
    /// baseline is made to match what was found (in one transaction).
    pub fn check(&mut self, config: &Config, budget: &Budget, update: bool) -> Result<CheckReport> {
        let scope = config.scope()?;
        let targets: Vec<Target> =
            scope.roots.iter().map(|r| Target { path: r.clone(), recursive: true }).collect();
        let prev = self.load(None)?;
        self.compare(&scope, &targets, budget, config.paranoid, prev, update, false)
    }

    /// Turns a real-time event into changes: the path is looked at again (always re-hashed)
    /// and compared with its baseline record, exactly as in [`Baseline::check`]. A new or
    /// moved-in directory is walked; a removed or moved-away directory reports everything
    /// recorded under it as deleted. `Rescan` (lost events) runs a full check at the default
    /// budget. Paths outside the watched trees or excluded give nothing.
    pub fn apply_event(&mut self, config: &Config, event: &WatchEvent, update: bool) -> Result<CheckReport> {
        if event.kind == EventKind::Rescan {
            return self.check(config, &Budget::default(), update);
        }
        let scope = config.scope()?;
        self.apply_in(&scope, event, update)
    }

    /// Applies a batch of events: each path is looked at once (events are coalesced per path,
    /// in order of first appearance), and a `Rescan` among them replaces the batch with one
    /// full check at the default budget. Changes and problems are merged and sorted by path.
    pub fn apply_events(
        &mut self,
        config: &Config,
        events: &[WatchEvent],
        update: bool,
    ) -> Result<CheckReport> {
        if events.iter().any(|e| e.kind == EventKind::Rescan) {
            return self.check(config, &Budget::default(), update);
        }
        let scope = config.scope()?;
        // One transaction for the batch: with synchronous=FULL a commit is an fsync, and one per
        // changed path capped real-time FIM at the disk's commit rate (p50 0.8 s at 1,000
        // changes/s, bench/fim-latency.sh).
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match self.apply_batch(&scope, events, update) {
            Ok(out) => {
                self.conn.execute_batch("COMMIT")?;
                Ok(out)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn apply_batch(&mut self, scope: &Scope, events: &[WatchEvent], update: bool) -> Result<CheckReport> {
        let mut seen = HashSet::new();
        let mut out = CheckReport::default();
        for e in events {
            if !seen.insert(e.path.as_path()) {
                continue;
            }
            let r = self.apply_in(scope, e, update)?;
            out.changes.extend(r.changes);
            out.problems.extend(r.problems);
            let (a, b) = (&mut out.stats, r.stats);
            a.files += b.files;
            a.dirs += b.dirs;
            a.symlinks += b.symlinks;
            a.other += b.other;
            a.hashed += b.hashed;
            a.bytes_hashed += b.bytes_hashed;
            a.problems += b.problems;
            a.elapsed += b.elapsed;
            a.cpu += b.cpu;
        }
        out.changes.sort_by(|a, b| a.path.cmp(&b.path));
        out.problems.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn apply_in(&mut self, scope: &Scope, event: &WatchEvent, update: bool) -> Result<CheckReport> {
        if !scope.contains(&event.path) {
            return Ok(CheckReport::default());
        }
        let now = std::fs::symlink_metadata(&event.path).ok();
        let before = self.get(&event.path)?;
        let recursive = match &now {
            None => true,
            Some(m) => m.is_dir() && before.as_ref().is_none_or(|b| b.kind != Kind::Dir),
        };
        let prev = self.load(Some((&event.path, recursive)))?;
        let targets = [Target { path: event.path.clone(), recursive }];
        self.compare(scope, &targets, &Budget::unthrottled(), true, prev, update, true)
    }

    /// Rows of the whole baseline, or of one path (and everything under it when recursive).
    fn load(&self, only: Option<(&Path, bool)>) -> Result<PrevMap> {
        let mut map = PrevMap::new();
        let mut add = |row: Option<(PathBuf, Entry, i64)>| {
            if let Some((path, entry, recorded_ns)) = row {
                map.insert(path, Stored { entry, recorded_ns, seen: AtomicBool::new(false) });
            }
        };
        match only {
            None => {
                let mut stmt = self.conn.prepare(&format!("SELECT {COLS} FROM files"))?;
                for row in stmt.query_map([], row_to)? {
                    add(row?);
                }
            }
            Some((path, recursive)) => {
                let mut stmt = self.conn.prepare(&format!("SELECT {COLS} FROM files WHERE path = ?1"))?;
                for row in stmt.query_map(params![path_bytes(path)], row_to)? {
                    add(row?);
                }
                if recursive {
                    let (lo, hi) = subtree_bounds(path);
                    let mut stmt = self
                        .conn
                        .prepare(&format!("SELECT {COLS} FROM files WHERE path >= ?1 AND path < ?2"))?;
                    for row in stmt.query_map(params![lo, hi], row_to)? {
                        add(row?);
                    }
                }
            }
        }
        Ok(map)
    }

    #[allow(clippy::too_many_arguments)]
    fn compare(
        &mut self,
        scope: &Scope,
        targets: &[Target],
        budget: &Budget,
        paranoid: bool,
        prev: PrevMap,
        update: bool,
        quiet_missing: bool,
    ) -> Result<CheckReport> {
        // A savepoint: on its own it is a transaction; inside `apply_events`' batch transaction
        // it nests, so a whole batch costs one commit (one fsync) instead of one per path.
        let tx = self.conn.savepoint()?;
        let recorded = now_ns();
        let mut changes = Vec::new();
        let mut problems = Vec::new();
        // Directories we could not list: what is recorded under them is not "deleted".
        let mut unlisted: HashSet<PathBuf> = HashSet::new();
        let mut err = None;
        let target_paths: HashSet<&Path> = targets.iter().map(|t| t.path.as_path()).collect();
        let stats = walk(scope, targets, budget, paranoid, &prev, &mut |item: Item| {
            let mut write = None;
            let mut delete = false;
            if let Some(e) = &item.entry {
                if item.change.is_some() || item.hashed {
                    write = Some(e);
                }
            } else if matches!(item.change, Some(ref c) if c.kind == crate::ChangeKind::Deleted) {
                delete = true;
            }
            if update && err.is_none() {
                if let Some(e) = write {
                    err = put(&tx, &item.path, e, recorded).err();
                } else if delete {
                    err = remove(&tx, &item.path).err();
                }
            }
            if let Some(c) = item.change {
                changes.push(c);
            }
            if let Some(p) = item.problem {
                if item.entry.is_none() && p.kind != ProblemKind::Vanished {
                    unlisted.insert(p.path.clone());
                }
                let missing_target =
                    p.kind == ProblemKind::Vanished && target_paths.contains(p.path.as_path());
                if !(quiet_missing && missing_target) {
                    problems.push(p);
                }
            }
        });
        if let Some(e) = err {
            return Err(e.into());
        }
        for (path, stored) in &prev {
            if stored.seen.load(Ordering::Relaxed) {
                continue;
            }
            if path.ancestors().skip(1).any(|a| unlisted.contains(a)) {
                continue;
            }
            if !scope.contains(path) {
                // No longer watched (the configuration changed): forget it without a report.
                if update {
                    remove(&tx, path)?;
                }
                continue;
            }
            if let Some(c) = diff(path, Some(&stored.entry), None) {
                changes.push(c);
            }
            if update {
                remove(&tx, path)?;
            }
        }
        tx.commit()?;
        changes.sort_by(|a, b| a.path.cmp(&b.path));
        problems.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(CheckReport { changes, problems, stats })
    }
}
