//! Scanning trees: a parallel walk feeding scanning threads, with the verdict cache in front.
//!
//! Walker threads list directories and `lstat` entries; only regular files go on. A file whose
//! verdict is cached is answered right there, without opening it; the rest go through a
//! bounded channel to the scanning threads, each with its own [`FileScanner`]; the walker asks
//! the kernel to read each queued file ahead (`POSIX_FADV_WILLNEED`), so that scanning threads
//! rarely wait for the disk. FIFOs,
//! sockets and device files are counted and never opened, so a scan cannot hang on them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use globset::{Glob, GlobSetBuilder};
use ignore::{WalkBuilder, WalkState};

use crate::engine::{Engine, Finding, Problem, ProblemKind};
use crate::verdicts::{FileKey, VerdictCache};

/// How to walk.
#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// Follow symbolic links (loops are detected and reported).
    pub follow_symlinks: bool,
    /// Do not cross into other file systems below each root.
    pub one_file_system: bool,
    /// Globs matched against the full path; a matching directory is not entered.
    pub excludes: Vec<String>,
    /// Scanning threads (and as many walking threads).
    pub jobs: usize,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            follow_symlinks: false,
            one_file_system: false,
            excludes: Vec::new(),
            jobs: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
        }
    }
}

/// Running totals, read by the caller while the scan goes on (for a progress bar).
#[derive(Debug, Default)]
pub struct Stats {
    /// Regular files whose content was read and scanned.
    pub scanned: AtomicU64,
    /// Regular files answered from the verdict cache without reading.
    pub cached: AtomicU64,
    /// Bytes of file content read.
    pub bytes: AtomicU64,
    /// Findings (including cached ones).
    pub findings: AtomicU64,
    /// Problems that kept content from being scanned (exit code 2).
    pub errors: AtomicU64,
    /// Other problems reported (too large, malformed archives, symlink loops, vanished files).
    pub notices: AtomicU64,
    /// FIFOs, sockets and device files passed over without opening.
    pub special: AtomicU64,
}

impl Stats {
    fn count_problem(&self, p: &Problem) {
        let counter = if p.kind.is_error() { &self.errors } else { &self.notices };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a scan tells its caller, as it happens. Clean files are only counted in [`Stats`].
#[derive(Debug)]
pub enum Event {
    /// A file with findings or problems.
    File { path: PathBuf, findings: Vec<Finding>, problems: Vec<Problem>, from_cache: bool },
    /// A problem with no file behind it (an unreadable directory, a symlink loop).
    Problem(Problem),
}

/// Scans every regular file below `roots`. `emit` is called from the scanning threads.
pub fn scan_tree(
    engine: &Engine,
    roots: &[PathBuf],
    options: &WalkOptions,
    cache: Option<&VerdictCache>,
    stats: &Stats,
    emit: &(dyn Fn(Event) + Sync),
) -> anyhow::Result<()> {
    // A path the user named that does not exist is an error, unlike a file that vanishes
    // during the walk.
    let mut present = Vec::with_capacity(roots.len());
    for root in roots {
        match std::fs::symlink_metadata(root) {
            Ok(_) => present.push(root.clone()),
            Err(e) => {
                let problem = Problem {
                    path: root.to_string_lossy().into_owned(),
                    kind: ProblemKind::Unreadable,
                    message: e.to_string(),
                };
                stats.count_problem(&problem);
                emit(Event::Problem(problem));
            }
        }
    }
    let Some((first, rest)) = present.split_first() else {
        return Ok(());
    };
    let mut excludes = GlobSetBuilder::new();
    for pattern in &options.excludes {
        excludes.add(Glob::new(pattern).map_err(|e| anyhow::anyhow!("--exclude {pattern}: {e}"))?);
    }
    let excludes = Arc::new(excludes.build()?);

    let jobs = options.jobs.max(1);
    let mut builder = WalkBuilder::new(first);
    for root in rest {
        builder.add(root);
    }
    builder
        .standard_filters(false)
        .follow_links(options.follow_symlinks)
        .same_file_system(options.one_file_system)
        .threads(jobs);
    if !excludes.is_empty() {
        builder.filter_entry(move |e| !excludes.is_match(e.path()));
    }

    let follow = options.follow_symlinks;
    let (tx, rx) = crossbeam_channel::bounded::<PathBuf>(jobs * 256);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            let rx = rx.clone();
            scope.spawn(move || {
                let mut scanner = engine.scanner();
                for path in rx {
                    match scanner.scan_path(&path, follow) {
                        Ok((verdict, key)) => {
                            stats.scanned.fetch_add(1, Ordering::Relaxed);
                            stats.bytes.fetch_add(verdict.bytes_read, Ordering::Relaxed);
                            stats.findings.fetch_add(verdict.findings.len() as u64, Ordering::Relaxed);
                            verdict.problems.iter().for_each(|p| stats.count_problem(p));
                            if let Some(cache) = cache {
                                if verdict.is_complete() {
                                    cache.record(key, &verdict.findings);
                                }
                            }
                            if !verdict.findings.is_empty() || !verdict.problems.is_empty() {
                                emit(Event::File {
                                    path,
                                    findings: verdict.findings,
                                    problems: verdict.problems,
                                    from_cache: false,
                                });
                            }
                        }
                        Err(problem) => {
                            stats.count_problem(&problem);
                            emit(Event::File {
                                path,
                                findings: Vec::new(),
                                problems: vec![problem],
                                from_cache: false,
                            });
                        }
                    }
                }
            });
        }
        drop(rx);

        builder.build_parallel().run(|| {
            let tx = tx.clone();
            Box::new(move |entry| {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(err) => {
                        let problem = walk_problem(&err);
                        stats.count_problem(&problem);
                        emit(Event::Problem(problem));
                        return WalkState::Continue;
                    }
                };
                let Some(file_type) = entry.file_type() else {
                    return WalkState::Continue;
                };
                if file_type.is_dir() || file_type.is_symlink() {
                    // Directories are walked into; symlinks are only followed when asked,
                    // in which case the walker reports their targets' types instead.
                    return WalkState::Continue;
                }
                if !file_type.is_file() {
                    stats.special.fetch_add(1, Ordering::Relaxed);
                    return WalkState::Continue;
                }
                let path = entry.into_path();
                if let Some(cache) = cache {
                    let meta =
                        if follow { std::fs::metadata(&path) } else { std::fs::symlink_metadata(&path) };
                    if let Ok(meta) = meta {
                        if let Some(findings) = cache.lookup(&FileKey::from_metadata(&meta), &path) {
                            stats.cached.fetch_add(1, Ordering::Relaxed);
                            if !findings.is_empty() {
                                stats.findings.fetch_add(findings.len() as u64, Ordering::Relaxed);
                                emit(Event::File { path, findings, problems: Vec::new(), from_cache: true });
                            }
                            return WalkState::Continue;
                        }
                    }
                }
                prefetch(&path, follow);
                match tx.send(path) {
                    Ok(()) => WalkState::Continue,
                    Err(_) => WalkState::Quit,
                }
            })
        });
        drop(tx);
    });
    Ok(())
}

/// How much of a queued file the kernel is asked to read ahead of its scan.
const PREFETCH_BYTES: libc::off_t = 8 << 20;

/// Asks the kernel to start reading a file that waits in the queue, so that the scanning
/// threads find it in the page cache instead of blocking on the disk: with one scanning thread
/// per core, every blocking read leaves a core idle. Advisory only; any failure is ignored
/// (the scan itself reports problems with the file).
fn prefetch(path: &std::path::Path, follow: bool) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    if let Ok(file) = std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path) {
        // SAFETY: a valid open descriptor; posix_fadvise only reads its arguments.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, PREFETCH_BYTES, libc::POSIX_FADV_WILLNEED) };
    }
}

/// Turns a walk error into a problem report naming the path.
fn walk_problem(err: &ignore::Error) -> Problem {
    fn find(err: &ignore::Error, path: &mut Option<PathBuf>) -> ProblemKind {
        match err {
            ignore::Error::WithPath { path: p, err } => {
                path.get_or_insert_with(|| p.clone());
                find(err, path)
            }
            ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
                find(err, path)
            }
            ignore::Error::Partial(errs) => errs.first().map_or(ProblemKind::Unreadable, |e| find(e, path)),
            ignore::Error::Loop { child, .. } => {
                path.get_or_insert_with(|| child.clone());
                ProblemKind::SymlinkLoop
            }
            ignore::Error::Io(e) if e.raw_os_error() == Some(libc::ELOOP) => ProblemKind::SymlinkLoop,
            // A dangling symlink (when following) or an entry deleted while walking has no
            // content left to scan. Missing roots are caught before the walk.
            ignore::Error::Io(e) if e.kind() == std::io::ErrorKind::NotFound => ProblemKind::Vanished,
            _ => ProblemKind::Unreadable,
        }
    }
    let mut path = None;
    let kind = find(err, &mut path);
    Problem {
        path: path.map(|p| p.to_string_lossy().into_owned()).unwrap_or_default(),
        kind,
        message: err.to_string(),
    }
}
