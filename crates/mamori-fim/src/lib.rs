//! mamori's file integrity monitoring engine (library only: no CLI, no network, no process
//! policy — the agent decides what to watch, when to check and where events go).
//!
//! # API
//!
//! * [`Config`]: the watched paths (default [`DEFAULT_PATHS`]), exclude globs, `paranoid`.
//! * [`Budget`]: a share of one core (`Some(0.25)` = 25 %, measured with the thread's own CPU
//!   time, sleeping to keep the ratio; one walking thread) or `None` = unthrottled with N
//!   walker threads.
//! * [`Baseline::open`] a SQLite file (created 0600, WAL); [`Baseline::build`] records every
//!   path; [`Baseline::check`] walks again and returns a [`CheckReport`] of [`Change`]s
//!   (`Created`, `Modified`, `AttributesChanged`, `Deleted`, each with the changed
//!   [`FieldChange`]s before → after), [`Problem`]s and [`Stats`], optionally updating the
//!   baseline.
//! * [`Watcher::start`]: real-time [`WatchEvent`]s (path, kind, pid, exe, time) over a
//!   channel, from fanotify (root: filesystem marks, who-data) or recursive inotify (fallback,
//!   no who-data). [`Baseline::apply_event`] turns an event into the same [`Change`] records
//!   as the full check: both go through [`change::diff`]. [`Baseline::apply_events`] does a
//!   batch, looking at each path once.
//!
//! # What is recorded
//!
//! Per path: type, size, mode (`& 0o7777`), uid, gid, mtime and ctime (ns), inode, device,
//! BLAKE3 of the content (regular files), BLAKE3 over the extended attributes (sorted names
//! and values) when there are any, and the target of symlinks. Directories are recorded
//! and descended into; symlinks are recorded and never followed (so a symlink loop cannot trap
//! the walk). FIFOs, sockets and devices are recorded from `lstat` and never opened, and
//! reported as [`ProblemKind::NotRegular`] so that nothing is silently skipped.
//!
//! # Re-hashing
//!
//! A check does **not** read a file again when its (dev, inode, size, mtime, ctime) are the
//! ones in the baseline: the content hash is carried over. `ctime` cannot be set from user
//! space, so restoring `mtime` after a write does not hide it. Rows recorded less than 2 s
//! after the file's last change are always re-hashed (a second write in the same timestamp
//! tick would leave the key unchanged). [`Config::paranoid`] re-hashes everything; real-time
//! events always re-hash the path concerned.
//!
//! # Real time
//!
//! fanotify marks whole file systems (`FAN_MARK_FILESYSTEM`: mount marks cannot report
//! create/delete/move, and inode marks would need one per directory, like inotify), so the
//! reader thread sees every change on the file systems holding a watched path and drops those
//! outside the watched trees; the directory handle → path resolution is cached. The executable is read from `/proc/PID/exe`
//! when the event is read, so a process that exited before that has `pid` but no `exe`.
//! A write produces several events (modify, close-write); applying one again after an update
//! gives nothing new, and a consumer may coalesce events per path before applying them. Events
//! reflect the tree when they are applied, not when they happened: a file created and
//! removed before its events are applied produces no change.
//!
//! # Problems
//!
//! Unreadable files and directories, vanished paths (removed mid-walk), symlink loops and
//! non-regular files are [`Problem`]s; the walk goes on. A path in the baseline under an
//! unreadable directory is not reported as deleted.

mod baseline;
pub mod change;
pub mod entry;
mod throttle;
mod walk;
mod watch;

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

pub use baseline::{Baseline, CheckReport, Report};
pub use change::{Change, ChangeKind, Field, FieldChange};
pub use entry::{Entry, Kind};
pub use throttle::thread_cpu_time;
pub use watch::{EventKind, WatchEvent, WatchMode, Watcher};

/// The trees watched by default on Linux.
pub const DEFAULT_PATHS: &[&str] = &["/etc", "/usr/bin", "/usr/sbin", "/bin", "/sbin", "/boot"];

/// Errors of the engine (problems with single files are [`Problem`]s, not errors).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("baseline database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("exclude pattern: {0}")]
    Glob(#[from] globset::Error),
    #[error("watched path must be absolute: {0}")]
    RelativePath(PathBuf),
    #[error("baseline database has unknown schema version {0}")]
    Schema(i64),
}

pub type Result<T> = std::result::Result<T, Error>;

/// What to monitor.
#[derive(Debug, Clone)]
pub struct Config {
    /// Absolute paths of the watched trees (a symlink is recorded as a symlink, not followed).
    pub paths: Vec<PathBuf>,
    /// Glob patterns (globset syntax) matched against full paths; a matching directory is
    /// excluded with everything under it. E.g. `/etc/mtab`, `**/*.swp`, `/etc/ld.so.cache`.
    pub excludes: Vec<String>,
    /// Re-hash every file at every check, even when its key is unchanged.
    pub paranoid: bool,
    /// The watcher drops events caused by this process (fanotify only: it knows the PID).
    pub ignore_own_process: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config::new(DEFAULT_PATHS.iter().map(PathBuf::from).collect())
    }
}

impl Config {
    pub fn new(paths: Vec<PathBuf>) -> Config {
        Config { paths, excludes: Vec::new(), paranoid: false, ignore_own_process: true }
    }

    pub(crate) fn scope(&self) -> Result<Scope> {
        let mut roots = Vec::new();
        for p in &self.paths {
            if !p.is_absolute() {
                return Err(Error::RelativePath(p.clone()));
            }
            // Normalise `/etc/` and `/etc/.` to `/etc`, without resolving symlinks.
            let n: PathBuf = p.components().filter(|c| !matches!(c, Component::CurDir)).collect();
            if !roots.contains(&n) {
                roots.push(n);
            }
        }
        let mut b = GlobSetBuilder::new();
        for e in &self.excludes {
            b.add(Glob::new(e)?);
        }
        Ok(Scope { roots, excludes: b.build()? })
    }
}

/// The compiled form of a [`Config`]'s paths and excludes.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    pub roots: Vec<PathBuf>,
    pub excludes: GlobSet,
}

impl Scope {
    /// Whether `path` or a directory above it (up to its root) is excluded.
    pub(crate) fn is_excluded(&self, path: &Path) -> bool {
        path.ancestors().any(|a| !a.as_os_str().is_empty() && self.excludes.is_match(a))
    }

    /// Whether `path` is under a watched root and not excluded.
    pub(crate) fn contains(&self, path: &Path) -> bool {
        self.roots.iter().any(|r| path.starts_with(r)) && !self.is_excluded(path)
    }
}

/// How much CPU a check may use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Share of one core (0.25 = 25 %). `None`: unthrottled and parallel.
    pub cpu_share: Option<f64>,
    /// Walker threads when unthrottled (0 = one per core).
    pub threads: usize,
}

impl Default for Budget {
    /// 25 % of one core.
    fn default() -> Budget {
        Budget::share(0.25)
    }
}

impl Budget {
    pub fn share(share: f64) -> Budget {
        Budget { cpu_share: Some(share), threads: 1 }
    }

    pub fn unthrottled() -> Budget {
        Budget { cpu_share: None, threads: 0 }
    }
}

/// Why a path could not be fully recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// Permission denied (reading a file, listing a directory).
    Unreadable(String),
    /// Removed between being listed and being looked at.
    Vanished,
    /// ELOOP (symlinks are never followed, so only a watched root can cause this).
    Loop,
    /// A FIFO, socket or device: recorded from `lstat`, never opened.
    NotRegular(Kind),
    /// Any other I/O error.
    Io(String),
}

/// A path that was not fully recorded. The walk went on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub path: PathBuf,
    pub kind: ProblemKind,
}

impl Problem {
    pub(crate) fn new(path: &Path, kind: ProblemKind) -> Problem {
        Problem { path: path.to_path_buf(), kind }
    }

    /// Whether content or metadata could not be read (as opposed to an informational
    /// problem: a non-regular file, a file removed mid-walk).
    pub fn is_error(&self) -> bool {
        matches!(self.kind, ProblemKind::Unreadable(_) | ProblemKind::Loop | ProblemKind::Io(_))
    }
}

/// Counters of one walk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// FIFOs, sockets, devices.
    pub other: u64,
    /// Files whose content was read.
    pub hashed: u64,
    pub bytes_hashed: u64,
    pub problems: u64,
    pub elapsed: Duration,
    /// CPU time of the calling thread (all the work when throttled; collection and database
    /// writes when unthrottled).
    pub cpu: Duration,
}
