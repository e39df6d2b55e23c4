//! Scanning trees: a parallel walk feeding scanning threads, with the verdict cache in front.
//!
//! Walker threads list directories and `lstat` entries; only regular files go on. A file whose
//! verdict is cached is answered right there, without opening it; the rest go through a
//! bounded channel to the scanning threads, each with its own [`FileScanner`]; the walker asks
//! the kernel to read each queued file ahead (`POSIX_FADV_WILLNEED`), so that scanning threads
//! rarely wait for the disk. FIFOs,
//! sockets and device files are counted and never opened, so a scan cannot hang on them.
//!
//! A thread expanding an archive hands members to the other threads through a short queue
//! (they take members before new files), so that one big jar does not leave a single core
//! working at the end of a scan; the file's verdict is finished, cached and reported by
//! whichever thread scans its last part.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use globset::{Glob, GlobSetBuilder};
use ignore::{WalkBuilder, WalkState};

use mamori_archive::Member;

use crate::engine::{Engine, FileScanner, FileVerdict, Finding, Problem, ProblemKind};
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
    /// Archive members scanned by another thread than the one that expanded the archive.
    pub shared_members: AtomicU64,
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
    let (member_tx, member_rx) = crossbeam_channel::bounded::<MemberJob>(jobs * SHARED_MEMBERS_PER_THREAD);
    // What a thread does with a file once its scan (and every member shared out) is done.
    let finish = |path: PathBuf, result: Result<(FileVerdict, FileKey), Problem>| match result {
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
            emit(Event::File { path, findings: Vec::new(), problems: vec![problem], from_cache: false });
        }
    };
    let finish = &finish;
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            let rx = rx.clone();
            let member_tx = member_tx.clone();
            let member_rx = member_rx.clone();
            scope.spawn(move || {
                let mut scanner = engine.scanner();
                let scan_member = |scanner: &mut FileScanner<'_>, job: MemberJob| {
                    let verdict = scanner.scan_member(&job.archive.path, &job.owner, &job.inner, &job.data);
                    stats.shared_members.fetch_add(1, Ordering::Relaxed);
                    if let Some((path, result)) = job.archive.add_member(verdict) {
                        finish(path, result);
                    }
                };
                // Members of another thread's archive come first: they hold up that file's
                // verdict, and at the end of a scan they are the only work left.
                loop {
                    let next = member_rx.try_recv().map(Work::Member).or_else(|_| {
                        crossbeam_channel::select! {
                            recv(member_rx) -> job => job.map(Work::Member).map_err(|_| ()),
                            recv(rx) -> path => path.map(Work::File).map_err(|_| ()),
                        }
                    });
                    let path = match next {
                        Ok(Work::Member(job)) => {
                            scan_member(&mut scanner, job);
                            continue;
                        }
                        Ok(Work::File(path)) => path,
                        Err(()) => break,
                    };
                    let mut shared: Option<Arc<SharedArchive>> = None;
                    let result = scanner.scan_path_sharing(&path, follow, &mut |member, owner| {
                        share_member(&member_tx, &mut shared, &path, member, owner)
                    });
                    match shared {
                        None => finish(path, result),
                        Some(archive) => {
                            if let Some((path, result)) = archive.add_file(result) {
                                finish(path, result);
                            }
                        }
                    }
                }
                // No file is left to scan: help with the members still being shared until
                // every thread is done expanding (each holds a sender until then).
                drop(member_tx);
                for job in member_rx {
                    scan_member(&mut scanner, job);
                }
            });
        }
        drop(rx);
        drop(member_tx);
        drop(member_rx);

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

/// Archive members waiting for a free thread, per scanning thread. Few: a member is only
/// handed over when a thread could take it soon; otherwise its own thread scans it.
const SHARED_MEMBERS_PER_THREAD: usize = 4;

/// Larger members are scanned by the thread expanding the archive, so that members waiting
/// in the queue hold at most `jobs * 4 * 4 MiB` of copies.
const MAX_SHARED_MEMBER: usize = 4 << 20;

enum Work {
    File(PathBuf),
    Member(MemberJob),
}

/// An archive member copied out for another scanning thread. One big archive (a jar of
/// 30,000 classes) would otherwise keep one thread busy while the others have nothing left.
struct MemberJob {
    archive: Arc<SharedArchive>,
    owner: String,
    inner: Vec<String>,
    data: Vec<u8>,
}

/// A file some of whose members were shared: its verdict, gathered from every thread that
/// scanned a part of it, is finished by whichever thread scans the last part.
struct SharedArchive {
    path: PathBuf,
    parts: Mutex<Parts>,
}

#[derive(Default)]
struct Parts {
    /// Members handed over and not scanned yet.
    pending: usize,
    /// The file's own part (the file and the members its thread kept), once scanned.
    file: Option<Result<FileKey, Problem>>,
    verdict: FileVerdict,
}

type Outcome = (PathBuf, Result<(FileVerdict, FileKey), Problem>);

impl SharedArchive {
    fn parts(&self) -> std::sync::MutexGuard<'_, Parts> {
        // A poisoned lock means a scanning thread panicked; the scope re-raises that panic.
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The file's own thread is done; returns the whole outcome if no member is pending.
    fn add_file(&self, result: Result<(FileVerdict, FileKey), Problem>) -> Option<Outcome> {
        let mut parts = self.parts();
        let file = match result {
            Ok((verdict, key)) => {
                parts.verdict.bytes_read += verdict.bytes_read;
                merge(&mut parts.verdict, verdict);
                Ok(key)
            }
            Err(problem) => Err(problem),
        };
        parts.file = Some(file);
        self.outcome(parts)
    }

    /// One shared member is scanned; returns the whole outcome if it was the last part.
    fn add_member(&self, verdict: FileVerdict) -> Option<Outcome> {
        let mut parts = self.parts();
        parts.pending -= 1;
        merge(&mut parts.verdict, verdict);
        self.outcome(parts)
    }

    fn outcome(&self, mut parts: std::sync::MutexGuard<'_, Parts>) -> Option<Outcome> {
        if parts.pending > 0 {
            return None;
        }
        let key = parts.file.take()?;
        let mut verdict = std::mem::take(&mut parts.verdict);
        // Members finish in any order; report them in the archive's order of names.
        verdict.findings.sort_by(|a, b| a.inner.cmp(&b.inner));
        verdict.problems.sort_by(|a, b| a.path.cmp(&b.path));
        Some((self.path.clone(), key.map(|key| (verdict, key))))
    }
}

fn merge(into: &mut FileVerdict, part: FileVerdict) {
    into.findings.extend(part.findings);
    into.problems.extend(part.problems);
}

/// Hands `member` of the file at `path` to another thread if the queue has room for it.
fn share_member(
    queue: &crossbeam_channel::Sender<MemberJob>,
    shared: &mut Option<Arc<SharedArchive>>,
    path: &std::path::Path,
    member: &Member<'_>,
    owner: &str,
) -> bool {
    if member.data.len() > MAX_SHARED_MEMBER || queue.is_full() {
        return false;
    }
    let archive = shared
        .get_or_insert_with(|| Arc::new(SharedArchive { path: path.to_path_buf(), parts: Mutex::default() }))
        .clone();
    archive.parts().pending += 1;
    let job = MemberJob {
        archive,
        owner: owner.to_string(),
        inner: member.path.to_vec(),
        data: member.data.to_vec(),
    };
    match queue.try_send(job) {
        Ok(()) => true,
        Err(e) => {
            // Full after all (another thread shared first): scanned here instead.
            let job = e.into_inner();
            job.archive.parts().pending -= 1;
            false
        }
    }
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use super::*;
    use crate::engine::EngineOptions;

    /// A zip of `members` files, every `every`-th of them EICAR.
    fn zip_with_eicar(members: usize, every: usize) -> (Vec<u8>, Vec<String>) {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let mut infected = Vec::new();
        for i in 0..members {
            let name = format!("dir/m{i:04}.bin");
            zip.start_file(name.as_str(), zip::write::SimpleFileOptions::default()).unwrap();
            if i % every == 0 {
                zip.write_all(&crate::eicar::eicar_for_tests()).unwrap();
                infected.push(name);
            } else {
                zip.write_all(format!("member {i}").as_bytes()).unwrap();
            }
        }
        (zip.finish().unwrap().into_inner(), infected)
    }

    fn scan(
        engine: &Engine,
        root: &std::path::Path,
        jobs: usize,
        cache: &VerdictCache,
    ) -> (Stats, Vec<Event>) {
        let stats = Stats::default();
        let events = Mutex::new(Vec::new());
        let options = WalkOptions { jobs, ..Default::default() };
        scan_tree(engine, &[root.to_path_buf()], &options, Some(cache), &stats, &|e| {
            events.lock().unwrap().push(e)
        })
        .unwrap();
        (stats, events.into_inner().unwrap())
    }

    #[test]
    fn members_shared_between_threads_are_all_reported_once_in_order_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir(&root).unwrap();
        let (zip, infected) = zip_with_eicar(600, 7);
        std::fs::write(root.join("big.zip"), &zip).unwrap();
        std::fs::write(root.join("clean.txt"), b"nothing here").unwrap();
        let engine = Engine::load(EngineOptions::default()).unwrap();
        // Verdicts of files changed in the last second are not cached.
        std::thread::sleep(std::time::Duration::from_millis(1300));
        for jobs in [1, 2, 4] {
            let cache_file = dir.path().join(format!("cache{jobs}"));
            let cache = VerdictCache::open(&cache_file, engine.id()).unwrap();
            let (stats, events) = scan(&engine, &root, jobs, &cache);
            assert!(stats.shared_members.load(Ordering::Relaxed) > 0, "jobs {jobs}: nothing was shared");
            assert_eq!(stats.scanned.load(Ordering::Relaxed), 2);
            assert_eq!(stats.findings.load(Ordering::Relaxed), infected.len() as u64);
            assert_eq!(events.len(), 1, "jobs {jobs}: one event for the archive");
            let Event::File { path, findings, problems, from_cache } = &events[0] else { panic!() };
            assert_eq!(path, &root.join("big.zip"));
            assert!(problems.is_empty() && !from_cache);
            let inner: Vec<String> = findings.iter().map(|f| f.inner.join("!")).collect();
            assert_eq!(inner, infected, "jobs {jobs}: every infected member once, in order");

            // The verdict was cached only once complete: the rescan reads nothing and
            // still names every member.
            assert_eq!(cache.save().unwrap(), 2);
            let cache = VerdictCache::open(&cache_file, engine.id()).unwrap();
            let (stats, events) = scan(&engine, &root, jobs, &cache);
            assert_eq!(stats.scanned.load(Ordering::Relaxed), 0);
            assert_eq!(stats.cached.load(Ordering::Relaxed), 2);
            let Event::File { findings, from_cache, .. } = &events[0] else { panic!() };
            assert!(from_cache);
            assert_eq!(findings.len(), infected.len());
        }
    }
}
