//! One run of a scheduled scan, on its own threads, turned into spool events.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use mamori_proto::{kind, Policy, ScheduledScan};
use mamori_scan::{ecs, rules, Engine, EngineOptions, Event, LoadReport, Problem, ProblemKind, Stats};
use mamori_scan::{VerdictCache, WalkOptions};
use serde_json::{json, Value};

use crate::response::Responder;
use crate::state;

/// An event on its way to the spool.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub kind: &'static str,
    pub data: Value,
}

/// Hash lists and rule loads can report thousands of bad lines; past this many, one event
/// says how many more there were.
const MAX_LOAD_WARNINGS: usize = 100;

/// Niceness of scan threads: a scheduled scan must not make a clinical workstation sluggish.
const SCAN_NICE: libc::c_int = 10;

/// Runs `scan` to completion, handing events to `emit` as they happen (in batches). The last
/// batch holds the `scan.summary`. `emit` returning false means nobody is listening any more;
/// the scan then finishes without reporting.
///
/// Blocking: call on a thread of its own.
/// `quarantine`: `Some(dry_run)` when files with findings are to be quarantined (or, in dry run,
/// reported as such) into `<agent_dir>/quarantine`; each action is a `response.action` event.
pub(crate) fn execute(
    scan: &ScheduledScan,
    agent_dir: &Path,
    quarantine: Option<bool>,
    emit: &(dyn Fn(Vec<Outgoing>) -> bool + Sync),
) {
    let cache_dir = &agent_dir.join(state::CACHE_DIR);
    let started = Instant::now();
    lower_priority();
    let stamp = |mut data: Value| {
        data["@timestamp"] = json!(state::rfc3339(SystemTime::now()));
        match data.get_mut("mamori").and_then(Value::as_object_mut) {
            Some(m) => {
                m.insert("scheduled_scan".into(), json!({"name": scan.name}));
            }
            None => data["mamori"] = json!({"scheduled_scan": {"name": scan.name}}),
        }
        data
    };
    let problem = |path: &str, kind: ProblemKind, message: String| Outgoing {
        kind: kind::SCAN_PROBLEM,
        data: stamp(ecs::problem(&Problem { path: path.to_string(), kind, message })),
    };
    let warning =
        |message: String| Outgoing { kind: kind::SCAN_PROBLEM, data: stamp(ecs::warning(&message)) };
    let responder = Mutex::new(Responder::new(agent_dir));
    let quarantined = AtomicU64::new(0);
    let response_failures = AtomicU64::new(0);

    let loaded = load_engine(&scan.rules, &scan.hashes, cache_dir, &scan.name);
    let mut setup: Vec<Outgoing> =
        loaded.notes.into_iter().map(|v| Outgoing { kind: kind::SCAN_PROBLEM, data: stamp(v) }).collect();
    let errors_before_walk = loaded.errors;
    let engine = match loaded.engine {
        Some(engine) => engine,
        None => {
            let summary = summary_event(
                &LoadReport::default(),
                &Stats::default(),
                0,
                0,
                errors_before_walk,
                started,
                &stamp,
            );
            setup.push(summary);
            emit(setup);
            return;
        }
    };
    let report = engine.report();

    let cache = match VerdictCache::open(&cache_dir.join("verdicts.sqlite"), engine.id()) {
        Ok(c) => Some(c),
        Err(e) => {
            setup.push(warning(format!("verdict cache unavailable, every file will be read: {e:#}")));
            None
        }
    };
    if !setup.is_empty() && !emit(setup) {
        return;
    }

    let walk = WalkOptions {
        excludes: scan.exclude.clone(),
        // Half the cores: the host has its own work to do.
        jobs: std::thread::available_parallelism().map(|n| n.get().div_ceil(2)).unwrap_or(1),
        ..WalkOptions::default()
    };
    let roots: Vec<PathBuf> = scan.paths.iter().map(PathBuf::from).collect();
    let stats = Stats::default();
    let infected = AtomicU64::new(0);
    let on_event = |event: Event| {
        let batch = match event {
            Event::Problem(p) => vec![Outgoing { kind: kind::SCAN_PROBLEM, data: stamp(ecs::problem(&p)) }],
            Event::File { path, findings, problems, from_cache } => {
                if !findings.is_empty() {
                    infected.fetch_add(1, Ordering::Relaxed);
                }
                let f = findings
                    .iter()
                    .map(|f| Outgoing { kind: kind::SCAN_FINDING, data: stamp(ecs::finding(f, from_cache)) });
                let p = problems
                    .iter()
                    .map(|p| Outgoing { kind: kind::SCAN_PROBLEM, data: stamp(ecs::problem(p)) });
                let mut batch: Vec<Outgoing> = f.chain(p).collect();
                if let (Some(dry_run), Some(first)) = (quarantine, findings.first()) {
                    let mut r = match responder.lock() {
                        Ok(r) => r,
                        Err(p) => p.into_inner(),
                    };
                    let action = r.quarantine(dry_run, &path, first, "scheduled");
                    if action.quarantined {
                        quarantined.fetch_add(1, Ordering::Relaxed);
                    }
                    if action.failed {
                        response_failures.fetch_add(1, Ordering::Relaxed);
                    }
                    batch.push(Outgoing { kind: action.event.kind, data: stamp(action.event.data) });
                }
                batch
            }
        };
        // A false return (the agent is stopping) is ignored: the walk cannot be stopped from
        // here, and what it still finds will be found again by the next run.
        emit(batch);
    };
    let walked = mamori_scan::scan_tree(&engine, &roots, &walk, cache.as_ref(), &stats, &on_event);

    let mut last = Vec::new();
    // As in `mamori scan`: a file left in place although quarantine was asked for is an error.
    let mut errors =
        stats.errors.load(Ordering::Relaxed) + errors_before_walk + response_failures.load(Ordering::Relaxed);
    if let Err(e) = walked {
        errors += 1;
        last.push(problem(&scan.name, ProblemKind::Unreadable, format!("scan could not run: {e:#}")));
    }
    if let Some(cache) = &cache {
        if let Err(e) = cache.save() {
            last.push(warning(format!("could not save the verdict cache: {e:#}")));
        }
    }
    last.push(summary_event(
        report,
        &stats,
        infected.load(Ordering::Relaxed),
        quarantined.load(Ordering::Relaxed),
        errors,
        started,
        &stamp,
    ));
    emit(last);
}

/// A one-off scan of `paths` with every rule path and hash list the policy names (those of the
/// FIM section and of all scheduled scans): what the clean scan before an automatic release and
/// the manager's scan command run. No excludes (they belong to the scans that set them) and no
/// quarantine of its own (the response policy decides).
pub(crate) fn full_scan(policy: &Policy, name: &str, paths: Vec<String>) -> ScheduledScan {
    let mut rules: Vec<String> = Vec::new();
    let mut hashes: Vec<String> = Vec::new();
    if let Some(f) = &policy.fim {
        rules.extend(f.rules.iter().cloned());
        hashes.extend(f.hashes.iter().cloned());
    }
    for s in &policy.scans {
        rules.extend(s.rules.iter().cloned());
        hashes.extend(s.hashes.iter().cloned());
    }
    rules.sort();
    rules.dedup();
    hashes.sort();
    hashes.dedup();
    ScheduledScan {
        name: name.into(),
        paths,
        every_secs: 0,
        rules,
        hashes,
        exclude: Vec::new(),
        quarantine: false,
    }
}

/// An engine built from a policy's rule paths and hash lists, and what went wrong on the way.
pub(crate) struct LoadedEngine {
    /// `None` when the engine could not be loaded at all (the reason is in `notes`).
    pub engine: Option<Engine>,
    /// ECS problems and warnings (`mamori_scan::ecs`), without `@timestamp`.
    pub notes: Vec<Value>,
    /// How many of `notes` are errors (content would not be scanned as asked).
    pub errors: u64,
}

/// Builds a scan engine from `rules` and `hashes` (the built-in EICAR detection always applies).
/// Each rule path and hash list is tried on its own, so that one bad entry in the policy costs
/// only that entry. `name` names the engine in the problem of a failed load. Blocking.
pub(crate) fn load_engine(rules: &[String], hashes: &[String], cache_dir: &Path, name: &str) -> LoadedEngine {
    let problem = |path: &str, kind: ProblemKind, message: String| {
        ecs::problem(&Problem { path: path.to_string(), kind, message })
    };
    let mut notes = Vec::new();
    let mut rule_paths = Vec::new();
    for r in rules {
        let p = PathBuf::from(r);
        match rules::collect_rule_files(std::slice::from_ref(&p)) {
            Ok(files) if !files.is_empty() => rule_paths.push(p),
            Ok(_) => notes.push(problem(
                r,
                ProblemKind::Unreadable,
                "rule path holds no .yar or .yara files; scanning without it".into(),
            )),
            Err(e) => notes.push(problem(
                r,
                ProblemKind::Unreadable,
                format!("rule path could not be loaded ({e}); scanning without it"),
            )),
        }
    }
    let mut hash_lists = Vec::new();
    for h in hashes {
        // Checked here because one unreadable list would make the whole engine fail to load.
        let readable = std::fs::File::open(h).and_then(|f| f.metadata()).and_then(|m| {
            if m.is_file() {
                Ok(())
            } else {
                Err(std::io::Error::other("not a regular file"))
            }
        });
        match readable {
            Ok(()) => hash_lists.push(PathBuf::from(h)),
            Err(e) => notes.push(problem(
                h,
                ProblemKind::Unreadable,
                format!("hash list could not be read ({e}); scanning without it"),
            )),
        }
    }
    let rules_cache = match state::ensure_private_dir(cache_dir) {
        Ok(()) => Some(cache_dir.join("rules")),
        Err(e) => {
            notes.push(ecs::warning(&format!(
                "rule cache unavailable, rules will be compiled every time: {e}"
            )));
            None
        }
    };
    let count_errors =
        |notes: &[Value]| notes.iter().filter(|v| v["event"]["action"] == "scan_error").count() as u64;

    let engine = match Engine::load(EngineOptions {
        rule_paths,
        hash_lists,
        cache_dir: rules_cache,
        ..EngineOptions::default()
    }) {
        Ok(engine) => engine,
        Err(e) => {
            notes.push(problem(
                name,
                ProblemKind::Unreadable,
                format!("scan engine could not be loaded: {e:#}"),
            ));
            let errors = count_errors(&notes);
            return LoadedEngine { engine: None, notes, errors };
        }
    };
    let errors = count_errors(&notes);
    let report = engine.report();
    let mut load_warnings: Vec<String> = Vec::new();
    if let Some(r) = &report.rules {
        load_warnings.extend(r.errors.iter().map(|e| format!("rule skipped: {e}")));
    }
    load_warnings.extend(report.hash_errors.iter().map(|e| format!("hash list line skipped: {e}")));
    let extra = load_warnings.len().saturating_sub(MAX_LOAD_WARNINGS);
    notes.extend(load_warnings.into_iter().take(MAX_LOAD_WARNINGS).map(|m| ecs::warning(&m)));
    if extra > 0 {
        notes.push(ecs::warning(&format!("{extra} more rule or hash list problems not reported")));
    }
    LoadedEngine { engine: Some(engine), notes, errors }
}

fn summary_event(
    report: &LoadReport,
    stats: &Stats,
    infected_files: u64,
    quarantined: u64,
    errors: u64,
    started: Instant,
    stamp: &dyn Fn(Value) -> Value,
) -> Outgoing {
    let exit_code = if errors > 0 {
        2
    } else if infected_files > 0 {
        1
    } else {
        0
    };
    let outcome =
        ecs::Outcome { infected_files, quarantined, errors, duration: started.elapsed(), exit_code };
    let data = ecs::summary(report, stats, &outcome);
    Outgoing { kind: kind::SCAN_SUMMARY, data: stamp(data) }
}

/// Lowers this thread's CPU priority; threads it starts (the walk) inherit it. On Linux the
/// nice value is per thread, so the rest of the agent keeps its priority. Best effort.
#[allow(unsafe_code)]
pub(crate) fn lower_priority() {
    // SAFETY: setpriority only reads its integer arguments; `who` 0 is the calling thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, SCAN_NICE) };
    if rc != 0 {
        tracing::debug!("could not lower the scan thread's priority: {}", std::io::Error::last_os_error());
    }
}
