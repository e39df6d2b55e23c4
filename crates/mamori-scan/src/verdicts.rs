//! The verdict cache: remembers what each file was found to be, so that a rescan of an
//! unchanged tree reads no file contents.
//!
//! A verdict is valid for exactly one (device, inode, size, mtime, ctime) under exactly one
//! engine id (rules, hash lists, limits, engine version). `ctime` cannot be set from user
//! space, so a file rewritten with its old mtime restored still misses. Files changed in the
//! last seconds before the scan are not cached: a write later in the same timestamp tick
//! would leave the key unchanged.
//!
//! Stored in SQLite (one file, WAL). Rows of the current engine id are loaded into memory
//! when the cache is opened; new verdicts are written in one transaction by [`VerdictCache::save`].

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};

use crate::engine::Finding;

/// Verdicts not refreshed for this long are dropped, so deleted files do not pile up and
/// every file is read again now and then.
const MAX_AGE: Duration = Duration::from_secs(90 * 24 * 3600);
/// Files changed this recently are not cached.
const SETTLE: Duration = Duration::from_secs(1);
const SCHEMA_VERSION: i64 = 1;

/// The identity of one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl FileKey {
    pub fn from_metadata(meta: &Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec()),
            ctime_ns: meta.ctime().saturating_mul(1_000_000_000).saturating_add(meta.ctime_nsec()),
        }
    }
}

/// Verdicts for one engine id.
pub struct VerdictCache {
    conn: Mutex<Connection>,
    engine_id: [u8; 32],
    known: HashMap<(u64, u64), (FileKey, Vec<Finding>)>,
    fresh: Mutex<Vec<(FileKey, Vec<Finding>)>>,
    settle_cutoff_ns: i64,
}

impl VerdictCache {
    /// Opens (creating if needed) the cache file and loads the verdicts of `engine_id`.
    pub fn open(path: &Path, engine_id: [u8; 32]) -> anyhow::Result<VerdictCache> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        migrate(&conn)?;

        let mut known = HashMap::new();
        {
            let mut stmt = conn.prepare(
                "SELECT dev, ino, size, mtime_ns, ctime_ns, findings FROM verdicts WHERE engine = ?1",
            )?;
            let rows = stmt.query_map(params![engine_id.as_slice()], |r| {
                Ok((
                    FileKey {
                        dev: r.get::<_, i64>(0)? as u64,
                        ino: r.get::<_, i64>(1)? as u64,
                        size: r.get::<_, i64>(2)? as u64,
                        mtime_ns: r.get(3)?,
                        ctime_ns: r.get(4)?,
                    },
                    r.get::<_, Option<String>>(5)?,
                ))
            })?;
            for row in rows {
                let (key, findings) = row?;
                // A row we cannot read is treated as absent: the file is simply scanned again.
                let findings = match findings {
                    None => Vec::new(),
                    Some(json) => match serde_json::from_str(&json) {
                        Ok(f) => f,
                        Err(_) => continue,
                    },
                };
                known.insert((key.dev, key.ino), (key, findings));
            }
        }
        let settle_cutoff_ns = now_ns().saturating_sub(SETTLE.as_nanos() as i64);
        Ok(VerdictCache {
            conn: Mutex::new(conn),
            engine_id,
            known,
            fresh: Mutex::new(Vec::new()),
            settle_cutoff_ns,
        })
    }

    /// The cached findings for this exact file version (empty: clean), with `path` as the
    /// path of each finding (a hard link may be cached under another name).
    pub fn lookup(&self, key: &FileKey, path: &Path) -> Option<Vec<Finding>> {
        let (cached_key, findings) = self.known.get(&(key.dev, key.ino))?;
        if cached_key != key {
            return None;
        }
        Some(findings.iter().map(|f| Finding { path: path.to_path_buf(), ..f.clone() }).collect())
    }

    /// Remembers a complete verdict, unless the file changed too recently to trust its key.
    pub fn record(&self, key: FileKey, findings: &[Finding]) {
        if key.mtime_ns >= self.settle_cutoff_ns || key.ctime_ns >= self.settle_cutoff_ns {
            return;
        }
        if let Ok(mut fresh) = self.fresh.lock() {
            fresh.push((key, findings.to_vec()));
        }
    }

    /// Number of entries loaded for the current engine id.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Writes the verdicts recorded since opening, and drops stale ones. Returns how many
    /// were written.
    pub fn save(&self) -> anyhow::Result<usize> {
        let fresh =
            std::mem::take(&mut *self.fresh.lock().map_err(|_| anyhow::anyhow!("cache lock poisoned"))?);
        let mut conn = self.conn.lock().map_err(|_| anyhow::anyhow!("cache lock poisoned"))?;
        let tx = conn.transaction()?;
        let now = now_ns();
        {
            let mut stmt = tx.prepare(
                "INSERT OR REPLACE INTO verdicts (engine, dev, ino, size, mtime_ns, ctime_ns, findings, seen_ns) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for (key, findings) in &fresh {
                let json = if findings.is_empty() { None } else { Some(serde_json::to_string(findings)?) };
                stmt.execute(params![
                    self.engine_id.as_slice(),
                    key.dev as i64,
                    key.ino as i64,
                    key.size as i64,
                    key.mtime_ns,
                    key.ctime_ns,
                    json,
                    now
                ])?;
            }
            tx.execute(
                "DELETE FROM verdicts WHERE seen_ns < ?1",
                params![now.saturating_sub(MAX_AGE.as_nanos() as i64)],
            )?;
        }
        tx.commit()?;
        Ok(fresh.len())
    }
}

fn migrate(conn: &Connection) -> anyhow::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        anyhow::bail!("verdict cache was written by a newer mamori (schema {version})");
    }
    if version < 1 {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS verdicts (
                engine BLOB NOT NULL,
                dev INTEGER NOT NULL,
                ino INTEGER NOT NULL,
                size INTEGER NOT NULL,
                mtime_ns INTEGER NOT NULL,
                ctime_ns INTEGER NOT NULL,
                findings TEXT,
                seen_ns INTEGER NOT NULL,
                PRIMARY KEY (engine, dev, ino)
             ) WITHOUT ROWID;
             PRAGMA user_version = 1;",
        )?;
    }
    Ok(())
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ino: u64, mtime_ns: i64) -> FileKey {
        FileKey { dev: 1, ino, size: 10, mtime_ns, ctime_ns: mtime_ns }
    }

    #[test]
    fn persists_per_engine_and_exact_key() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("v.sqlite");
        let old = 1_000_000_000;
        let cache = VerdictCache::open(&db, [1; 32]).unwrap();
        cache.record(key(5, old), &[]);
        cache.record(key(6, now_ns()), &[]); // too fresh to trust
        assert_eq!(cache.save().unwrap(), 1);
        drop(cache);

        let cache = VerdictCache::open(&db, [1; 32]).unwrap();
        assert_eq!(cache.lookup(&key(5, old), Path::new("/a")), Some(vec![]));
        assert_eq!(cache.lookup(&key(5, old + 1), Path::new("/a")), None);
        assert_eq!(cache.lookup(&key(6, old), Path::new("/a")), None);
        let other = VerdictCache::open(&db, [2; 32]).unwrap();
        assert!(other.is_empty());
    }
}
