//! `mamori scan`: loads the engine, walks the paths, prints findings, quarantines on request.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mamori_quarantine::{Detection, Store};
use mamori_scan::{
    ecs, scan_tree, ArchiveLimits, Engine, EngineOptions, Event, Finding, Problem, Stats, VerdictCache,
    WalkOptions,
};
use serde_json::Value;

use crate::datadir;
use crate::units::parse_size;

#[derive(Args)]
pub struct ScanArgs {
    /// YARA rule file, or directory searched for .yar/.yara files (repeatable).
    #[arg(long = "rules", value_name = "PATH")]
    rules: Vec<PathBuf>,
    /// Hash list: `hash;comment` lines (signature-base) or ClamAV .hdb/.hsb (repeatable).
    #[arg(long = "hashes", value_name = "FILE")]
    hashes: Vec<PathBuf>,
    /// One JSON object per finding (ECS field names), then a summary object.
    #[arg(long)]
    json: bool,
    /// Move detected files into the encrypted quarantine store.
    #[arg(long)]
    quarantine: bool,
    /// Skip paths matching this glob (matched against the full path; repeatable).
    #[arg(long = "exclude", value_name = "GLOB")]
    exclude: Vec<String>,
    /// Do not read files larger than this (e.g. 100M).
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = parse_size)]
    max_filesize: u64,
    /// Scanning threads (default: one per CPU).
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Stay on the file system of each PATH.
    #[arg(long)]
    one_file_system: bool,
    /// Follow symbolic links (loops are detected and reported).
    #[arg(long)]
    follow_symlinks: bool,
    /// Neither use nor update the verdict cache: read every file. (Compiled rules are still
    /// cached.)
    #[arg(long)]
    no_cache: bool,
    /// Do not look inside zip, gzip and tar files (they are still scanned as files).
    #[arg(long)]
    no_archives: bool,
    /// Deepest archive nesting looked into.
    #[arg(long, value_name = "N", default_value_t = ArchiveLimits::default().max_depth)]
    archive_depth: u32,
    /// Most bytes expanded from one archive (e.g. 1G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    archive_max_size: Option<u64>,
    /// Files and directories to scan.
    #[arg(value_name = "PATH", required = true)]
    paths: Vec<PathBuf>,
}

/// What the scan did, for the exit code and the summary.
#[derive(Default)]
struct Tally {
    infected: HashSet<PathBuf>,
    quarantined: usize,
    quarantine_failures: usize,
}

pub fn run(args: ScanArgs, data_dir: &Path) -> anyhow::Result<u8> {
    let started = Instant::now();
    let cache_dir = data_dir.join("cache");
    // Compiled rules are always cached; --no-cache is about verdicts. A data directory that
    // cannot be created only costs the rule cache, not the scan.
    let rules_cache = match datadir::ensure_private_dir(&cache_dir) {
        Ok(()) => Some(cache_dir.join("rules")),
        Err(_) => None,
    };
    let mut limits = ArchiveLimits { max_depth: args.archive_depth, ..ArchiveLimits::default() };
    if let Some(max) = args.archive_max_size {
        limits.max_total_size = max;
    }
    let engine = Engine::load(EngineOptions {
        rule_paths: args.rules.clone(),
        hash_lists: args.hashes.clone(),
        cache_dir: rules_cache,
        max_filesize: args.max_filesize,
        archive_limits: limits,
        scan_archives: !args.no_archives,
        ..EngineOptions::default()
    })?;
    let out = Output::new(args.json);
    out.load_report(&engine);

    let cache = if args.no_cache {
        None
    } else {
        match VerdictCache::open(&cache_dir.join("verdicts.sqlite"), engine.id()) {
            Ok(c) => Some(c),
            Err(e) => {
                out.warn(&format!("verdict cache unavailable, every file will be read: {e:#}"));
                None
            }
        }
    };
    let store = if args.quarantine {
        let dir = data_dir.join("quarantine");
        datadir::ensure_private_dir(data_dir)?;
        Some(Store::open(&dir).map_err(|e| anyhow::anyhow!("quarantine store {}: {e}", dir.display()))?)
    } else {
        None
    };

    let walk = WalkOptions {
        follow_symlinks: args.follow_symlinks,
        one_file_system: args.one_file_system,
        excludes: args.exclude.clone(),
        jobs: args.jobs.unwrap_or(WalkOptions::default().jobs).max(1),
    };
    let stats = Stats::default();
    let progress = out.progress_bar();
    let mut tally = Tally::default();
    let (tx, rx) = crossbeam_channel::unbounded::<Event>();
    let walk_result = std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let emit = move |e: Event| {
                // The receiver lives until the scan ends; a send cannot fail before that.
                let _ = tx.send(e);
            };
            scan_tree(&engine, &args.paths, &walk, cache.as_ref(), &stats, &emit)
        });
        loop {
            match rx.recv_timeout(Duration::from_millis(150)) {
                Ok(event) => progress.suspend(|| handle_event(event, &out, store.as_ref(), &mut tally)),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
            update_progress(&progress, &stats, started);
        }
        worker.join().unwrap_or_else(|_| Err(anyhow::anyhow!("scanning thread panicked")))
    });
    progress.finish_and_clear();
    walk_result?;

    if let Some(cache) = &cache {
        if let Err(e) = cache.save() {
            out.warn(&format!("could not save the verdict cache: {e:#}"));
        }
    }

    let errors = stats.errors.load(Ordering::Relaxed) + tally.quarantine_failures as u64;
    let code = if errors > 0 {
        2
    } else if !tally.infected.is_empty() {
        1
    } else {
        0
    };
    out.summary(&engine, &stats, &tally, started.elapsed(), errors, code);
    Ok(code)
}

fn handle_event(event: Event, out: &Output, store: Option<&Store>, tally: &mut Tally) {
    match event {
        Event::Problem(problem) => out.problem(&problem),
        Event::File { path, findings, problems, from_cache } => {
            for finding in &findings {
                out.finding(finding, from_cache);
            }
            for problem in &problems {
                out.problem(problem);
            }
            let Some(first) = findings.first() else { return };
            tally.infected.insert(path.clone());
            let Some(store) = store else { return };
            let detection = Detection { rule: &first.rule, ruleset: &first.ruleset };
            match store.quarantine(&path, detection) {
                Ok(record) => {
                    tally.quarantined += 1;
                    out.quarantined(&path, &record.id);
                }
                Err(e) => {
                    tally.quarantine_failures += 1;
                    out.problem(&Problem {
                        path: path.to_string_lossy().into_owned(),
                        kind: mamori_scan::ProblemKind::Unreadable,
                        message: format!("could not quarantine: {e}"),
                    });
                }
            }
        }
    }
}

fn update_progress(bar: &ProgressBar, stats: &Stats, started: Instant) {
    if bar.is_hidden() {
        return;
    }
    let bytes = stats.bytes.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64().max(0.001);
    bar.set_message(format!(
        "{} files ({} unchanged) · {} · {}/s · {} detections · {} errors",
        stats.scanned.load(Ordering::Relaxed),
        stats.cached.load(Ordering::Relaxed),
        indicatif::HumanBytes(bytes),
        indicatif::HumanBytes((bytes as f64 / secs) as u64),
        stats.findings.load(Ordering::Relaxed),
        stats.errors.load(Ordering::Relaxed),
    ));
}

/// Human text or JSON lines; progress only on a terminal.
struct Output {
    json: bool,
}

impl Output {
    fn new(json: bool) -> Output {
        Output { json }
    }

    fn progress_bar(&self) -> ProgressBar {
        if self.json || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    /// Prints one ECS record, stamped with the time it is printed.
    fn line(&self, mut value: Value) {
        if let Some(record) = value.as_object_mut() {
            record.insert("@timestamp".into(), Value::String(now_rfc3339()));
        }
        let mut stdout = std::io::stdout().lock();
        // Output to a closed pipe is not worth aborting a scan (and quarantine) for.
        let _ = writeln!(stdout, "{value}");
    }

    fn warn(&self, message: &str) {
        if self.json {
            self.line(ecs::warning(message));
        } else {
            eprintln!("warning: {message}");
        }
    }

    fn load_report(&self, engine: &Engine) {
        let report = engine.report();
        if let Some(rules) = &report.rules {
            for err in &rules.errors {
                self.warn(&format!("rule skipped: {err}"));
            }
        }
        for err in &report.hash_errors {
            self.warn(&format!("hash list line skipped: {err}"));
        }
        if report.rules.is_none() && report.hash_indicators == 0 && !self.json {
            eprintln!("note: no --rules or --hashes given: only the built-in EICAR test detection is active");
        }
    }

    fn finding(&self, f: &Finding, from_cache: bool) {
        if self.json {
            self.line(ecs::finding(f, from_cache));
        } else {
            println!("FOUND {}  {}  [{}]", f.display_path(), f.rule, f.ruleset);
        }
    }

    fn problem(&self, p: &Problem) {
        if self.json {
            self.line(ecs::problem(p));
        } else {
            let severity = if p.kind.is_error() { "error" } else { "warning" };
            eprintln!("{severity}: {}: {}", p.path, p.message);
        }
    }

    fn quarantined(&self, path: &Path, id: &str) {
        if self.json {
            self.line(ecs::quarantined(path, id));
        } else {
            println!("QUARANTINED {}  (id {id})", path.display());
        }
    }

    fn summary(&self, engine: &Engine, stats: &Stats, tally: &Tally, took: Duration, errors: u64, code: u8) {
        let report = engine.report();
        let rules = report.rules.as_ref();
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        if self.json {
            let outcome = ecs::Outcome {
                infected_files: tally.infected.len() as u64,
                quarantined: tally.quarantined as u64,
                errors,
                duration: took,
                exit_code: code,
            };
            self.line(ecs::summary(report, stats, &outcome));
            return;
        }
        println!("----------- SCAN SUMMARY -----------");
        if let Some(r) = rules {
            println!(
                "Rules: {} from {} files{}{}",
                r.rules,
                r.files,
                if r.from_cache { " (compiled rules from cache)" } else { "" },
                if r.errors.is_empty() {
                    String::new()
                } else {
                    format!(", {} rule errors skipped", r.errors.len())
                }
            );
        }
        if report.hash_indicators > 0 {
            println!("Hash indicators: {}", report.hash_indicators);
        }
        println!(
            "Files scanned: {} ({} unchanged since last scan, not read)",
            get(&stats.scanned) + get(&stats.cached),
            get(&stats.cached)
        );
        println!("Data scanned: {}", indicatif::HumanBytes(get(&stats.bytes)));
        println!("Infected files: {}", tally.infected.len());
        if tally.quarantined > 0 {
            println!("Quarantined: {}", tally.quarantined);
        }
        if get(&stats.special) > 0 {
            println!("Special files skipped (FIFOs, sockets, devices): {}", get(&stats.special));
        }
        println!("Errors: {errors}  Warnings: {}", get(&stats.notices));
        println!("Time: {:.3} s", took.as_secs_f64());
    }
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
