//! File integrity monitoring in the agent, when the policy has a `fim` section.
//!
//! One worker thread per FIM configuration owns the baseline (`<agent dir>/fim/baseline.db`),
//! the real-time [`Watcher`], the on-write scan engine and the quarantine store:
//!
//! 1. The watcher is started first (so that nothing changed while the baseline is built is
//!    missed), then the baseline is built when it is empty or the watched path set changed
//!    (a `fim.check` event with `mamori.fim.phase` `baseline`).
//! 2. Watcher events are collected for [`COLLECT`] after the first one, applied to the baseline
//!    (updating it) and every change becomes a `fim.change` event (`mamori.fim.source`
//!    `realtime`, with the writer's `process.pid` / `process.executable` when fanotify gave
//!    them).
//! 3. New and modified regular files are then scanned at once (`scan_on_write`): findings are
//!    `scan.finding` events with `mamori.scan.trigger` `on_write`, and the response policy may
//!    quarantine the file (`response.action`). The quarantine's own unlink is applied to the
//!    baseline directly (a `fim.change` deletion with `mamori.fim.cause` `quarantine`); deletions
//!    are never scanned, so a quarantine cannot loop.
//! 4. A full check runs every `check_every_secs` (at least [`MIN_CHECK_INTERVAL_SECS`]) within
//!    `cpu_share` of one core; the end time is kept in `fim/state.json`, so a restart does not
//!    check again at once. Its changes have source `check`, and a `fim.check` summary follows.
//!
//! The async side ([`Agent::fim_loop`]) only forwards the worker's batches to the spool and
//! restarts the worker when the `fim` section of the policy changes (the response section is
//! read by the worker at each action, so changing it restarts nothing). A long baseline build
//! or full check cannot be interrupted: on shutdown the loop returns at once and the thread,
//! finding nobody listening, ends when the walk does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::RecvTimeoutError;
use mamori_fim::{
    Baseline, Budget, Change, ChangeKind, Config, EventKind, Kind, Problem, ProblemKind, Stats, WatchEvent,
    Watcher,
};
use mamori_proto::{kind, DetectionKind, FimPolicy, Policy, ResponseActionKind, Severity};
use mamori_ransom::Canaries;
use mamori_scan::{ecs, Engine};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::guard::{self, Guard, Tap, TapContext};
use crate::isolation::IsoRequest;
use crate::response::Responder;
use crate::run::{stopped, Agent};
use crate::scan::{self, Outgoing};
use crate::{state, Error};

/// `<agent dir>/fim/`: the baseline and the check schedule.
pub(crate) const FIM_DIR: &str = "fim";
const BASELINE_FILE: &str = "baseline.db";
const STATE_FILE: &str = "state.json";
/// How long events are gathered after the first one before they are applied: a write is
/// several events (create, modify, close-write) that are best looked at once.
const COLLECT: Duration = Duration::from_millis(200);
/// How often the worker looks at its stop flag when nothing happens.
const POLL: Duration = Duration::from_millis(200);
/// Shortest time between two full checks, whatever the policy says.
const MIN_CHECK_INTERVAL_SECS: u64 = 60;
/// Problems listed by name in one `fim.check` summary; the rest are counted.
const MAX_LISTED_PROBLEMS: usize = 100;
/// Most events forwarded to the spool in one append.
const MAX_APPEND_BATCH: usize = 512;

/// `fim/state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct FimState {
    /// The watched paths the baseline was built for (sorted, de-duplicated).
    #[serde(default)]
    paths: Vec<String>,
    /// When the last baseline build or full check ended (Unix ms).
    #[serde(default)]
    last_check_end_ms: Option<i64>,
}

/// A running worker, as the async side sees it.
struct Running {
    fim: FimPolicy,
    stop: Arc<AtomicBool>,
    /// `None` once the worker has ended.
    rx: Option<mpsc::Receiver<Vec<Outgoing>>>,
}

enum Wake {
    Stop,
    PolicyChanged,
    PolicyGone,
    Batch(Option<Vec<Outgoing>>),
}

impl Agent {
    /// Runs FIM as the policy says until `stop`.
    pub(crate) async fn fim_loop(
        &self,
        mut policy_rx: watch::Receiver<Arc<Policy>>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let mut running: Option<Running> = None;
        loop {
            let policy = policy_rx.borrow_and_update().clone();
            if running.as_ref().map(|r| &r.fim) != policy.fim.as_ref() {
                if let Some(old) = running.take() {
                    tracing::info!("the FIM policy changed; restarting file integrity monitoring");
                    if !self.stop_worker(old, &mut stop).await? {
                        return Ok(());
                    }
                }
                if let Some(fim) = &policy.fim {
                    running = Some(self.start_worker(fim.clone(), policy_rx.clone()));
                }
            }
            let wake = {
                let recv = async {
                    match running.as_mut().and_then(|r| r.rx.as_mut()) {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = stopped(&mut stop) => Wake::Stop,
                    changed = policy_rx.changed() => if changed.is_ok() { Wake::PolicyChanged } else { Wake::PolicyGone },
                    b = recv => Wake::Batch(b),
                }
            };
            match wake {
                Wake::Stop => {
                    if let Some(r) = &running {
                        r.stop.store(true, Ordering::Relaxed);
                    }
                    return Ok(());
                }
                Wake::PolicyGone => {
                    // The heartbeat side is gone, which happens only when stopping.
                    if let Some(r) = &running {
                        r.stop.store(true, Ordering::Relaxed);
                    }
                    stopped(&mut stop).await;
                    return Ok(());
                }
                Wake::PolicyChanged => {}
                Wake::Batch(Some(mut batch)) => {
                    if let Some(rx) = running.as_mut().and_then(|r| r.rx.as_mut()) {
                        while batch.len() < MAX_APPEND_BATCH {
                            match rx.try_recv() {
                                Ok(more) => batch.extend(more),
                                Err(_) => break,
                            }
                        }
                    }
                    self.append(batch).await?;
                }
                Wake::Batch(None) => {
                    // The worker ended on its own (it reported why). It is started again when
                    // the FIM policy changes.
                    if let Some(r) = running.as_mut() {
                        r.rx = None;
                    }
                }
            }
        }
    }

    fn start_worker(&self, fim: FimPolicy, policy_rx: watch::Receiver<Arc<Policy>>) -> Running {
        tracing::info!(paths = ?fim.paths, "file integrity monitoring starting");
        let (tx, rx) = mpsc::channel::<Vec<Outgoing>>(64);
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            agent_dir: self.dir.clone(),
            fim: fim.clone(),
            policy_rx,
            stop: stop.clone(),
            tx: tx.clone(),
            iso_tx: self.iso_tx.clone(),
        };
        // A plain thread: baseline builds and checks cannot be interrupted, and a runtime waits
        // for its blocking tasks at shutdown.
        let spawned = std::thread::Builder::new().name("mamori-fim".into()).spawn(move || worker.run());
        if let Err(e) = spawned {
            tracing::error!("could not start the FIM thread: {e}");
            let _ = tx.try_send(vec![error_event(
                "fim_error",
                None,
                &format!("could not start the FIM thread: {e}"),
            )]);
        }
        Running { fim, stop, rx: Some(rx) }
    }

    /// Stops a worker and forwards what it still sends. False when the agent is stopping.
    async fn stop_worker(&self, mut old: Running, stop: &mut watch::Receiver<bool>) -> Result<bool, Error> {
        old.stop.store(true, Ordering::Relaxed);
        let Some(mut rx) = old.rx.take() else { return Ok(true) };
        loop {
            let batch = tokio::select! {
                _ = stopped(stop) => return Ok(false),
                b = rx.recv() => b,
            };
            match batch {
                Some(batch) => self.append(batch).await?,
                None => return Ok(true),
            }
        }
    }
}

/// Everything the worker thread owns.
struct Worker {
    agent_dir: PathBuf,
    fim: FimPolicy,
    policy_rx: watch::Receiver<Arc<Policy>>,
    stop: Arc<AtomicBool>,
    tx: mpsc::Sender<Vec<Outgoing>>,
    iso_tx: mpsc::Sender<IsoRequest>,
}

/// Who made a change, from the watcher's events.
type WhoData = HashMap<PathBuf, (Option<u32>, Option<PathBuf>)>;

impl Worker {
    fn emit(&self, batch: Vec<Outgoing>) -> bool {
        if batch.is_empty() {
            return true;
        }
        let ok = self.tx.blocking_send(batch).is_ok();
        if !ok {
            self.stop.store(true, Ordering::Relaxed);
        }
        ok
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn run(self) {
        let fim_dir = self.agent_dir.join(FIM_DIR);
        if let Err(e) = state::ensure_private_dir(&fim_dir) {
            self.emit(vec![error_event("fim_error", None, &format!("FIM cannot run: {e}"))]);
            return;
        }
        let config = self.config();

        let engine = if self.fim.scan_on_write {
            let loaded = scan::load_engine(
                &self.fim.rules,
                &self.fim.hashes,
                &self.agent_dir.join(state::CACHE_DIR),
                "on-write scan",
            );
            let notes = loaded
                .notes
                .into_iter()
                .map(|v| Outgoing { kind: kind::SCAN_PROBLEM, data: on_write_stamp(v, None) })
                .collect();
            if !self.emit(notes) {
                return;
            }
            loaded.engine
        } else {
            None
        };

        // Planted before the watcher starts, so that planting them is not a change to report,
        // and before the baseline, which then knows them.
        let guard = match &self.fim.ransomware {
            Some(r) => {
                let (canaries, notes) = plant_canaries(&r.canary_dirs);
                if !self.emit(notes) {
                    return;
                }
                Some(Guard::new(&canaries))
            }
            None => None,
        };

        // Started before the baseline is built, so that a change made meanwhile is not missed.
        let watcher = match Watcher::start(&config) {
            Ok(w) => {
                tracing::info!(mode = ?w.mode(), "FIM watcher started");
                Some(w)
            }
            Err(e) => {
                let message = format!(
                    "real-time file monitoring is unavailable ({e}); changes are found by the scheduled checks only"
                );
                tracing::error!("{message}");
                if !self.emit(vec![error_event("fim_error", None, &message)]) {
                    return;
                }
                None
            }
        };
        let watch_mode = watcher.as_ref().map(|w| w.mode());
        let mut tap: Option<Tap> = match watcher {
            Some(w) => {
                let ctx = TapContext {
                    guard,
                    policy_rx: self.policy_rx.clone(),
                    tx: self.tx.clone(),
                    iso_tx: self.iso_tx.clone(),
                    stop: self.stop.clone(),
                };
                match guard::spawn_tap(w, ctx) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        let message = format!("could not start the real-time event thread ({e}); changes are found by the scheduled checks only");
                        if !self.emit(vec![error_event("fim_error", None, &message)]) {
                            return;
                        }
                        None
                    }
                }
            }
            None => None,
        };
        // From here on this thread hashes, writes the baseline and scans: not urgent. The
        // watcher and guard threads, which must stop an encryptor within a few files, were
        // started above and keep their normal priority (the nice value is per thread on Linux
        // and inherited at creation); on a two-core clinic PC they compete for the same cores.
        scan::lower_priority();

        let db = fim_dir.join(BASELINE_FILE);
        let mut baseline = match Baseline::open(&db) {
            Ok(b) => b,
            Err(e) => {
                self.emit(vec![error_event(
                    "fim_error",
                    None,
                    &format!("FIM cannot run: baseline {}: {e}", db.display()),
                )]);
                return;
            }
        };
        let state_path = fim_dir.join(STATE_FILE);
        let mut fim_state: FimState = match state::read_json(&state_path) {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                tracing::warn!("ignoring the saved FIM state: {e}");
                FimState::default()
            }
        };
        let paths = path_set(&self.fim.paths);
        let budget = Budget::share(cpu_share(self.fim.cpu_share));
        let empty = baseline.is_empty().unwrap_or(true);
        if empty || fim_state.paths != paths {
            tracing::info!(paths = ?paths, "building the FIM baseline");
            let started = Instant::now();
            let event = match baseline.build(&config, &budget) {
                Ok(report) => check_event(
                    "baseline",
                    &self.fim,
                    watch_mode,
                    &report.stats,
                    0,
                    &report.problems,
                    started,
                ),
                Err(e) => {
                    error_event("fim_error", None, &format!("the FIM baseline could not be built: {e}"))
                }
            };
            fim_state = FimState { paths: paths.clone(), last_check_end_ms: Some(state::now_ms()) };
            save_state(&state_path, &fim_state);
            if !self.emit(vec![event]) {
                return;
            }
        }

        if let Some(t) = &tap {
            if self.fim.ransomware.is_some() {
                match baseline.files() {
                    Ok(files) => {
                        let _ = t.prefill.send(files);
                    }
                    Err(e) => tracing::warn!("ransomware detection starts without content samples: {e}"),
                }
            }
        }
        let mut responder = Responder::new(&self.agent_dir);
        let every_ms =
            i64::try_from(self.fim.check_every_secs.max(MIN_CHECK_INTERVAL_SECS).saturating_mul(1000))
                .unwrap_or(i64::MAX);
        while !self.stopping() {
            let now = state::now_ms();
            // A last end in the future (the clock was set back) counts as now.
            let due = fim_state.last_check_end_ms.map_or(now, |last| last.min(now).saturating_add(every_ms));
            if due <= now {
                tracing::info!("FIM check starting");
                let started = Instant::now();
                let batch = match baseline.check(&config, &budget, true) {
                    Ok(report) => {
                        let mut batch: Vec<Outgoing> = report
                            .changes
                            .iter()
                            .map(|c| change_event(c, "check", &WhoData::new(), None))
                            .collect();
                        batch.push(check_event(
                            "check",
                            &self.fim,
                            watch_mode,
                            &report.stats,
                            report.changes.len(),
                            &report.problems,
                            started,
                        ));
                        batch
                    }
                    Err(e) => vec![error_event("fim_error", None, &format!("the FIM check failed: {e}"))],
                };
                fim_state.last_check_end_ms = Some(state::now_ms());
                save_state(&state_path, &fim_state);
                if !self.emit(batch) {
                    return;
                }
                continue;
            }
            let wait = Duration::from_millis(u64::try_from(due - now).unwrap_or(0)).min(POLL);
            let Some(t) = &tap else {
                std::thread::sleep(wait);
                continue;
            };
            let first = match t.events.recv_timeout(wait) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    tap = None;
                    if self.stopping() {
                        return;
                    }
                    let message =
                        "real-time file monitoring stopped; changes are found by the scheduled checks only";
                    tracing::error!("{message}");
                    if !self.emit(vec![error_event("fim_error", None, message)]) {
                        return;
                    }
                    continue;
                }
            };
            let mut events = vec![first];
            let until = Instant::now() + COLLECT;
            loop {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match t.events.recv_timeout(left) {
                    Ok(e) => events.push(e),
                    Err(_) => break,
                }
            }
            while let Ok(e) = t.events.try_recv() {
                events.push(e);
            }
            if self.stopping() {
                // Not applied: the baseline must not learn a change nobody will report. The next
                // worker (or the next check) sees it.
                return;
            }
            if !self.realtime(&mut baseline, &config, &events, engine.as_ref(), &mut responder) {
                return;
            }
        }
    }

    fn config(&self) -> Config {
        let mut config = Config::new(self.fim.paths.iter().map(PathBuf::from).collect());
        config.excludes = self.fim.exclude.clone();
        // Never watch ourselves: the spool, the baseline and the quarantine change all the time.
        let mut own = vec![self.agent_dir.clone()];
        if let Ok(c) = self.agent_dir.canonicalize() {
            if c != self.agent_dir {
                own.push(c);
            }
        }
        for d in own {
            let d = d.to_string_lossy();
            config.excludes.push(escape_glob(&d));
        }
        config
    }

    /// Applies a batch of watcher events; false when nobody listens any more.
    fn realtime(
        &self,
        baseline: &mut Baseline,
        config: &Config,
        events: &[WatchEvent],
        engine: Option<&Engine>,
        responder: &mut Responder,
    ) -> bool {
        let mut who = WhoData::new();
        for e in events {
            let entry = who.entry(e.path.clone()).or_insert((None, None));
            if entry.0.is_none() && e.pid.is_some() {
                *entry = (e.pid, e.exe.clone());
            }
        }
        let report = match baseline.apply_events(config, events, true) {
            Ok(r) => r,
            Err(e) => {
                let paths: Vec<&Path> = events.iter().map(|e| e.path.as_path()).collect();
                let message = format!("FIM could not apply real-time changes to {paths:?}: {e}");
                return self.emit(vec![error_event("fim_error", None, &message)]);
            }
        };
        let mut batch: Vec<Outgoing> =
            report.changes.iter().map(|c| change_event(c, "realtime", &who, None)).collect();
        batch.extend(report.problems.iter().map(problem_event));
        if !self.emit(batch) {
            return false;
        }
        let Some(engine) = engine else { return true };
        let mut scanner = engine.scanner();
        for c in &report.changes {
            let new_content = matches!(c.kind, ChangeKind::Created | ChangeKind::Modified);
            if !new_content || c.after.as_ref().is_none_or(|a| a.kind != Kind::File) {
                continue;
            }
            let writer = who.get(&c.path).cloned().unwrap_or((None, None));
            let (verdict, problems) = match scanner.scan_path(&c.path, false) {
                Ok((verdict, _)) => {
                    let problems = verdict.problems.clone();
                    (Some(verdict), problems)
                }
                Err(p) => (None, vec![p]),
            };
            let mut out: Vec<Outgoing> = Vec::new();
            let findings = verdict.as_ref().map(|v| v.findings.as_slice()).unwrap_or_default();
            for f in findings {
                out.push(Outgoing {
                    kind: kind::SCAN_FINDING,
                    data: on_write_stamp(ecs::finding(f, false), Some(&writer)),
                });
            }
            for p in &problems {
                out.push(Outgoing {
                    kind: kind::SCAN_PROBLEM,
                    data: on_write_stamp(ecs::problem(p), Some(&writer)),
                });
            }
            let mut quarantined = false;
            if let Some(first) = findings.first() {
                let response = self.policy_rx.borrow().response.clone();
                if let Some(action) = responder.respond(&response, &c.path, first, "on_write") {
                    quarantined = action.quarantined;
                    out.push(action.event);
                }
                if response
                    .actions_for(DetectionKind::Malware, Severity::High)
                    .contains(&ResponseActionKind::Isolate)
                {
                    let request = IsoRequest::Isolate {
                        trigger: "malware".into(),
                        reason: format!("malware {} in {}", first.rule, c.path.display()),
                        command: None,
                    };
                    if self.iso_tx.blocking_send(request).is_err() {
                        tracing::error!("the isolation task is gone; the host could not be isolated");
                    }
                }
            }
            if quarantined {
                // Our own unlink: the watcher does not report it (fanotify drops our own events),
                // so the baseline learns it here, and the deletion is reported as ours.
                let gone = WatchEvent {
                    path: c.path.clone(),
                    kind: EventKind::Deleted,
                    is_dir: false,
                    pid: Some(std::process::id()),
                    exe: std::env::current_exe().ok(),
                    time: SystemTime::now(),
                };
                let mut own = WhoData::new();
                own.insert(c.path.clone(), (gone.pid, gone.exe.clone()));
                match baseline.apply_events(config, std::slice::from_ref(&gone), true) {
                    Ok(r) => out.extend(
                        r.changes.iter().map(|d| change_event(d, "realtime", &own, Some("quarantine"))),
                    ),
                    Err(e) => out.push(error_event(
                        "fim_error",
                        Some(&c.path),
                        &format!("could not record the quarantined file's removal: {e}"),
                    )),
                }
            }
            if !self.emit(out) {
                return false;
            }
        }
        true
    }
}

/// Plants the decoys of every canary directory; `fim.check` events for those that failed.
fn plant_canaries(dirs: &[String]) -> (Canaries, Vec<Outgoing>) {
    let mut canaries = Canaries::new();
    let mut notes = Vec::new();
    for d in dirs {
        let dir = Path::new(d);
        let result = if dir.is_absolute() {
            canaries.plant(dir).map(drop).map_err(|e| e.to_string())
        } else {
            Err("not an absolute path".to_string())
        };
        match result {
            Ok(()) => tracing::info!(dir = %dir.display(), "ransomware decoys in place"),
            Err(e) => {
                let message = format!("could not plant ransomware decoys in {}: {e}", dir.display());
                tracing::error!("{message}");
                notes.push(error_event("canary_error", Some(dir), &message));
            }
        }
    }
    (canaries, notes)
}

fn save_state(path: &Path, s: &FimState) {
    if let Err(e) = state::write_json(path, s) {
        tracing::error!("could not save the FIM state (the next start may check or rebuild early): {e}");
    }
}

/// The policy's paths, sorted and de-duplicated: the identity of a baseline.
fn path_set(paths: &[String]) -> Vec<String> {
    let mut v: Vec<String> = paths.to_vec();
    v.sort();
    v.dedup();
    v
}

/// A usable CPU share: (0, 1], default 0.25 for nonsense.
fn cpu_share(share: f64) -> f64 {
    if share.is_finite() && share > 0.0 {
        share.min(1.0)
    } else {
        0.25
    }
}

/// `path` as a glob matching exactly itself.
fn escape_glob(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for ch in path.chars() {
        match ch {
            '*' | '?' | '[' | ']' | '{' | '}' => {
                out.push('[');
                out.push(ch);
                out.push(']');
            }
            '\\' => out.push_str("\\\\"),
            _ => out.push(ch),
        }
    }
    out
}

fn now() -> String {
    state::rfc3339(SystemTime::now())
}

/// Adds `@timestamp`, `mamori.scan.trigger` `on_write` and the writer (who-data) to an ECS scan
/// record.
fn on_write_stamp(mut data: Value, writer: Option<&(Option<u32>, Option<PathBuf>)>) -> Value {
    data["@timestamp"] = json!(now());
    match data.get_mut("mamori").and_then(Value::as_object_mut) {
        Some(m) => {
            m.insert("scan".into(), json!({"trigger": "on_write"}));
        }
        None => data["mamori"] = json!({"scan": {"trigger": "on_write"}}),
    }
    if let Some(p) = writer.and_then(process_of) {
        data["process"] = p;
    }
    data
}

fn process_of(w: &(Option<u32>, Option<PathBuf>)) -> Option<Value> {
    let (pid, exe) = w;
    if pid.is_none() && exe.is_none() {
        return None;
    }
    let mut p = json!({});
    if let Some(pid) = pid {
        p["pid"] = json!(pid);
    }
    if let Some(exe) = exe {
        p["executable"] = json!(exe);
    }
    Some(p)
}

/// One `fim.change` event.
fn change_event(c: &Change, source: &str, who: &WhoData, cause: Option<&str>) -> Outgoing {
    let (ty, action) = match c.kind {
        ChangeKind::Created => ("creation", "file_created"),
        ChangeKind::Modified => ("change", "file_modified"),
        ChangeKind::AttributesChanged => ("change", "attributes_changed"),
        ChangeKind::Deleted => ("deletion", "file_deleted"),
    };
    let entry = c.after.as_ref().or(c.before.as_ref());
    let mut file = json!({"path": c.path});
    if let Some(e) = entry {
        file["type"] = json!(e.kind.as_str());
        file["size"] = json!(e.size);
        file["mode"] = json!(format!("{:04o}", e.mode));
        file["uid"] = json!(e.uid);
        file["gid"] = json!(e.gid);
        file["inode"] = json!(e.ino);
        if let Some(t) = &e.target {
            file["target_path"] = json!(t);
        }
    }
    if let Some(h) = c.after.as_ref().and_then(|a| a.hash) {
        file["hash"] = json!({"blake3": mamori_fim::entry::hex(&h)});
    }
    let changes: Vec<Value> =
        c.fields.iter().map(|f| json!({"field": f.field, "before": f.before, "after": f.after})).collect();
    let mut fim = json!({"source": source, "changes": changes});
    if let Some(cause) = cause {
        fim["cause"] = json!(cause);
    }
    let mut data = json!({
        "@timestamp": now(),
        "event": {
            "kind": "event",
            "category": ["file"],
            "type": [ty],
            "action": action,
            "module": "mamori",
            "dataset": "mamori.fim",
        },
        "file": file,
        "mamori": {"fim": fim},
    });
    if let Some(p) = who.get(&c.path).and_then(process_of) {
        data["process"] = p;
    }
    Outgoing { kind: kind::FIM_CHANGE, data }
}

fn problem_parts(p: &Problem) -> (&'static str, String) {
    match &p.kind {
        ProblemKind::Unreadable(m) => ("unreadable", m.clone()),
        ProblemKind::Vanished => ("vanished", "removed while being looked at".into()),
        ProblemKind::Loop => ("loop", "too many levels of symbolic links".into()),
        ProblemKind::NotRegular(k) => {
            ("not_regular", format!("a {}: recorded from lstat, never opened", k.as_str()))
        }
        ProblemKind::Io(m) => ("io", m.clone()),
    }
}

fn problem_json(p: &Problem) -> Value {
    let (ty, message) = problem_parts(p);
    json!({"path": p.path, "type": ty, "message": message, "is_error": p.is_error()})
}

/// A problem met while applying real-time events: a `fim.check` event of its own.
fn problem_event(p: &Problem) -> Outgoing {
    let (ty, message) = problem_parts(p);
    let data = json!({
        "@timestamp": now(),
        "event": {
            "kind": "event",
            "category": ["file"],
            "type": ["info"],
            "action": if p.is_error() { "fim_error" } else { "fim_warning" },
            "outcome": "failure",
            "module": "mamori",
            "dataset": "mamori.fim",
        },
        "file": {"path": p.path},
        "error": {"type": ty, "message": message},
        "mamori": {"fim": {"source": "realtime"}},
    });
    Outgoing { kind: kind::FIM_CHECK, data }
}

/// FIM could not do something at all (no baseline, no watcher, a database error).
fn error_event(action: &str, path: Option<&Path>, message: &str) -> Outgoing {
    let mut data = json!({
        "@timestamp": now(),
        "event": {
            "kind": "event",
            "category": ["file"],
            "type": ["error"],
            "action": action,
            "outcome": "failure",
            "module": "mamori",
            "dataset": "mamori.fim",
        },
        "error": {"message": message},
    });
    if let Some(p) = path {
        data["file"] = json!({"path": p});
    }
    Outgoing { kind: kind::FIM_CHECK, data }
}

/// The summary of a baseline build or full check.
fn check_event(
    phase: &str,
    fim: &FimPolicy,
    mode: Option<mamori_fim::WatchMode>,
    stats: &Stats,
    changes: usize,
    problems: &[Problem],
    started: Instant,
) -> Outgoing {
    let errors = problems.iter().filter(|p| p.is_error()).count();
    let listed: Vec<Value> = problems.iter().take(MAX_LISTED_PROBLEMS).map(problem_json).collect();
    let data = json!({
        "@timestamp": now(),
        "event": {
            "kind": "metric",
            "category": ["file"],
            "type": ["info"],
            "action": if phase == "baseline" { "fim_baseline" } else { "fim_check" },
            "outcome": if errors > 0 { "failure" } else { "success" },
            "duration": u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            "module": "mamori",
            "dataset": "mamori.fim",
        },
        "mamori": {"fim": {
            "phase": phase,
            "paths": fim.paths,
            "watch_mode": mode,
            "files": stats.files,
            "dirs": stats.dirs,
            "symlinks": stats.symlinks,
            "other": stats.other,
            "hashed": stats.hashed,
            "bytes_hashed": stats.bytes_hashed,
            "cpu_ms": u64::try_from(stats.cpu.as_millis()).unwrap_or(u64::MAX),
            "changes": changes,
            "problems": problems.len(),
            "errors": errors,
            "problem_list": listed,
            "problems_not_listed": problems.len().saturating_sub(MAX_LISTED_PROBLEMS),
        }},
    });
    Outgoing { kind: kind::FIM_CHECK, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_a_set_and_shares_are_sane() {
        assert_eq!(path_set(&["/b".into(), "/a".into(), "/b".into()]), ["/a", "/b"]);
        assert_eq!(cpu_share(0.5), 0.5);
        assert_eq!(cpu_share(3.0), 1.0);
        assert_eq!(cpu_share(0.0), 0.25);
        assert_eq!(cpu_share(f64::NAN), 0.25);
        assert_eq!(escape_glob("/var/lib/a*b[1]"), "/var/lib/a[*]b[[]1[]]");
    }

    #[test]
    fn the_agent_directory_is_never_watched() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let (_ptx, prx) = watch::channel(Arc::new(Policy::default()));
        let w = Worker {
            agent_dir: dir.path().join("agent"),
            fim: FimPolicy { paths: vec![dir.path().display().to_string()], ..FimPolicy::default() },
            policy_rx: prx,
            stop: Arc::new(AtomicBool::new(false)),
            tx,
            iso_tx: mpsc::channel(1).0,
        };
        let config = w.config();
        assert!(config.excludes.iter().any(|e| e.ends_with("/agent")), "{:?}", config.excludes);
    }

    #[test]
    fn change_events_carry_ecs_fields_and_who_data() {
        let after = mamori_fim::Entry {
            kind: Kind::File,
            size: 6,
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            ino: 7,
            dev: 1,
            hash: Some([0xab; 32]),
            xattrs: None,
            target: None,
        };
        let before = mamori_fim::Entry { mode: 0o644, ..after.clone() };
        let c = mamori_fim::change::diff(Path::new("/w/f"), Some(&before), Some(&after)).unwrap();
        let mut who = WhoData::new();
        who.insert("/w/f".into(), (Some(42), Some("/usr/bin/chmod".into())));
        let v = change_event(&c, "realtime", &who, None).data;
        assert_eq!(v["event"]["action"], "attributes_changed");
        assert_eq!(v["event"]["type"], json!(["change"]));
        assert_eq!(v["event"]["category"], json!(["file"]));
        assert_eq!(v["file"]["mode"], "0600");
        assert_eq!(v["file"]["hash"]["blake3"], "ab".repeat(32));
        assert_eq!(v["process"]["pid"], 42);
        assert_eq!(v["process"]["executable"], "/usr/bin/chmod");
        assert_eq!(v["mamori"]["fim"]["source"], "realtime");
        let mode =
            v["mamori"]["fim"]["changes"].as_array().unwrap().iter().find(|f| f["field"] == "mode").cloned();
        assert_eq!(mode, Some(json!({"field": "mode", "before": "0644", "after": "0600"})));
        let gone = mamori_fim::change::diff(Path::new("/w/f"), Some(&before), None).unwrap();
        let v = change_event(&gone, "check", &WhoData::new(), None).data;
        assert_eq!(v["event"]["action"], "file_deleted");
        assert_eq!(v["event"]["type"], json!(["deletion"]));
        assert!(v.get("process").is_none());
        assert!(v["file"].get("hash").is_none(), "no content after a deletion");
    }
}
