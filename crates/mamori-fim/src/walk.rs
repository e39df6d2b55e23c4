//! The walk: every path under the targets is observed once and compared with its previous
//! record, on one throttled thread or on N unthrottled walker threads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use ignore::{WalkBuilder, WalkState};

use crate::change::{diff, Change};
use crate::entry::{observe, Entry, Kind, Prev};
use crate::throttle::{thread_cpu_time, Throttle};
use crate::{Budget, Problem, ProblemKind, Scope, Stats};

/// A previous record of a path, with whether the walk saw it.
pub(crate) struct Stored {
    pub entry: Entry,
    pub recorded_ns: i64,
    pub seen: AtomicBool,
}

pub(crate) type PrevMap = HashMap<PathBuf, Stored>;

/// A path to look at; `recursive` descends into it when it is a directory.
pub(crate) struct Target {
    pub path: PathBuf,
    pub recursive: bool,
}

/// What the walk found at one path.
pub(crate) struct Item {
    pub path: PathBuf,
    pub entry: Option<Entry>,
    pub change: Option<Change>,
    pub problem: Option<Problem>,
    pub hashed: bool,
    pub bytes: u64,
}

fn process(path: PathBuf, prev: &PrevMap, paranoid: bool, buf: &mut Vec<u8>) -> Item {
    let stored = prev.get(&path);
    if let Some(s) = stored {
        s.seen.store(true, Ordering::Relaxed);
    }
    let obs =
        observe(&path, stored.map(|s| Prev { entry: &s.entry, recorded_ns: s.recorded_ns }), paranoid, buf);
    let mut entry = obs.entry;
    let before = stored.map(|s| &s.entry);
    if let (Some(e), Some(b)) = (entry.as_mut(), before) {
        // Unreadable now but the same version as before: keep the known content hash.
        if e.kind == Kind::File && e.hash.is_none() && e.same_key(b) {
            e.hash = b.hash;
        }
    }
    let change = match (&entry, &obs.problem) {
        (Some(e), _) => diff(&path, before, Some(e)),
        (None, Some(p)) if p.kind == ProblemKind::Vanished => diff(&path, before, None),
        (None, _) => None,
    };
    Item { path, entry, change, problem: obs.problem, hashed: obs.hashed, bytes: obs.bytes }
}

fn error_item(err: &ignore::Error) -> Item {
    fn path_of(err: &ignore::Error) -> Option<PathBuf> {
        match err {
            ignore::Error::WithPath { path, .. } => Some(path.clone()),
            ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => path_of(err),
            ignore::Error::Loop { child, .. } => Some(child.clone()),
            ignore::Error::Partial(errs) => errs.first().and_then(path_of),
            _ => None,
        }
    }
    let path = path_of(err).unwrap_or_default();
    let problem = match err.io_error() {
        Some(io) => crate::entry::io_problem(&path, io),
        None if matches!(err, ignore::Error::Loop { .. }) => Problem::new(&path, ProblemKind::Loop),
        None => Problem::new(&path, ProblemKind::Io(err.to_string())),
    };
    Item { path, entry: None, change: None, problem: Some(problem), hashed: false, bytes: 0 }
}

fn builder(scope: &Scope, roots: &[&Path], threads: usize) -> WalkBuilder {
    let mut b = WalkBuilder::new(roots[0]);
    for r in &roots[1..] {
        b.add(r);
    }
    b.standard_filters(false).follow_links(false).threads(threads);
    let excludes = scope.excludes.clone();
    b.filter_entry(move |e| !excludes.is_match(e.path()));
    b
}

/// Walks `targets`, calling `sink` on the calling thread for every path and problem.
pub(crate) fn walk(
    scope: &Scope,
    targets: &[Target],
    budget: &Budget,
    paranoid: bool,
    prev: &PrevMap,
    sink: &mut dyn FnMut(Item),
) -> Stats {
    let start = Instant::now();
    let cpu0 = thread_cpu_time();
    let mut stats = Stats::default();
    let mut throttle = budget.cpu_share.map(Throttle::new);
    let mut buf = Vec::new();

    let count = |stats: &mut Stats, item: &Item| {
        if let Some(e) = &item.entry {
            match e.kind {
                Kind::File => stats.files += 1,
                Kind::Dir => stats.dirs += 1,
                Kind::Symlink => stats.symlinks += 1,
                _ => stats.other += 1,
            }
        }
        if item.hashed {
            stats.hashed += 1;
            stats.bytes_hashed += item.bytes;
        }
        if item.problem.is_some() {
            stats.problems += 1;
        }
    };

    // Targets that are not directories to descend into are observed directly.
    let mut roots: Vec<&Path> = Vec::new();
    for t in targets {
        if scope.is_excluded(&t.path) {
            continue;
        }
        let is_dir = std::fs::symlink_metadata(&t.path).map(|m| m.is_dir()).unwrap_or(false);
        if t.recursive && is_dir {
            roots.push(&t.path);
        } else {
            let item = process(t.path.clone(), prev, paranoid, &mut buf);
            count(&mut stats, &item);
            sink(item);
        }
    }

    if !roots.is_empty() {
        match &mut throttle {
            Some(throttle) => {
                for res in builder(scope, &roots, 1).build() {
                    let item = match res {
                        Ok(e) => process(e.into_path(), prev, paranoid, &mut buf),
                        Err(err) => error_item(&err),
                    };
                    count(&mut stats, &item);
                    sink(item);
                    throttle.pace();
                }
            }
            None => {
                let threads = if budget.threads == 0 {
                    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
                } else {
                    budget.threads
                };
                let walker = builder(scope, &roots, threads).build_parallel();
                std::thread::scope(|s| {
                    let (tx, rx) = crossbeam_channel::bounded::<Item>(4096);
                    s.spawn(move || {
                        walker.run(|| {
                            let tx = tx.clone();
                            let mut buf = Vec::new();
                            Box::new(move |res| {
                                let item = match res {
                                    Ok(e) => process(e.into_path(), prev, paranoid, &mut buf),
                                    Err(err) => error_item(&err),
                                };
                                match tx.send(item) {
                                    Ok(()) => WalkState::Continue,
                                    Err(_) => WalkState::Quit,
                                }
                            })
                        });
                    });
                    for item in rx {
                        count(&mut stats, &item);
                        sink(item);
                    }
                });
            }
        }
    }
    stats.elapsed = start.elapsed();
    stats.cpu = thread_cpu_time().saturating_sub(cpu0);
    stats
}
