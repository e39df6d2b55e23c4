//! Ransomware behaviour detection on the FIM watcher's live events, and the response that must
//! not wait: stopping the process.
//!
//! Every watcher event first passes through the *tap* thread ([`spawn_tap`]), which feeds the
//! [`Guard`] and then forwards the event unchanged to the FIM worker. The worker gathers events
//! for 200 ms and may spend seconds scanning new files; an encryptor does hundreds of files in
//! that time, so detection and the SIGSTOP happen here, per event, before any of that.
//!
//! The guard turns events into `mamori_ransom` observations:
//! - a close after writing (`ClosedWrite`) is one write observation (a `Create` if the file was
//!   created since its last close), with the file's content sample before (kept from the last
//!   time it was seen) and after (read now). Individual `write()`s (`Modified`) are not
//!   observed: an encryptor writing in 64 KiB chunks would otherwise count many times;
//! - `MovedFrom` directly followed by `MovedTo` is a rename (the replaced file's sample is the
//!   "before" of a rename over an existing path); an unpaired `MovedFrom` is a move out of the
//!   watched trees (a delete), an unpaired `MovedTo` a move in (a create);
//! - `Deleted` is a delete with the sample the file had.
//!
//! "Before" samples of files that existed before the agent started come from the FIM
//! baseline's file list, sampled a few at a time between events ([`PREFILL_CHUNK`]).
//!
//! A verdict becomes a `ransomware.detected` event; the response policy then decides: stop the
//! process (SIGSTOP, then SIGKILL; only for a verdict about a process, which needs fanotify's
//! who-data), isolate the host (handed to the agent's isolation task).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mamori_fim::{EventKind, WatchEvent, Watcher};
use mamori_proto::{kind, DetectionKind, Policy, ResponseActionKind, Severity};
use mamori_ransom::{
    Canaries, ContentSample, Detector, Observation, ObservationKind, Severity as RansomSeverity, Subject,
    Verdict,
};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::isolation::IsoRequest;
use crate::process;
use crate::scan::Outgoing;
use crate::state;

/// Most content samples kept (about 200 bytes each with the path); beyond, files the guard has
/// not seen are judged without a "before" (renames, deletes and notes still count).
const MAX_SAMPLES: usize = 250_000;
/// Created files remembered until their first close; beyond, the set starts over.
const MAX_CREATED: usize = 100_000;
/// Baseline files sampled between two looks at the event queue.
const PREFILL_CHUNK: usize = 16;
/// A `MovedFrom` whose `MovedTo` has not come after this long was a move out.
const MOVE_PAIR_WAIT: Duration = Duration::from_millis(50);
/// How often the tap looks at its stop flag when nothing happens.
const POLL: Duration = Duration::from_millis(200);

/// The detector plus what it needs to know about files.
pub(crate) struct Guard {
    detector: Detector,
    samples: HashMap<PathBuf, ContentSample>,
    created: HashSet<PathBuf>,
    moved_from: Option<(WatchEvent, Instant)>,
    /// Baseline files still to sample.
    prefill: VecDeque<PathBuf>,
    own_pid: u32,
}

impl Guard {
    pub(crate) fn new(canaries: &Canaries) -> Guard {
        let mut detector = Detector::default();
        detector.add_canaries(canaries);
        Guard {
            detector,
            samples: HashMap::new(),
            created: HashSet::new(),
            moved_from: None,
            prefill: VecDeque::new(),
            own_pid: std::process::id(),
        }
    }

    /// Queue files whose current content is the "before" of their next change.
    pub(crate) fn queue_prefill(&mut self, files: Vec<PathBuf>) {
        self.prefill.extend(files);
    }

    fn prefilling(&self) -> bool {
        !self.prefill.is_empty()
    }

    /// Samples up to [`PREFILL_CHUNK`] queued files (those an event already sampled are kept).
    fn prefill_some(&mut self) {
        for _ in 0..PREFILL_CHUNK {
            let Some(path) = self.prefill.pop_front() else { return };
            if self.samples.len() >= MAX_SAMPLES {
                self.prefill.clear();
                tracing::warn!(
                    max = MAX_SAMPLES,
                    "ransomware detection keeps content samples of the first {MAX_SAMPLES} files only"
                );
                return;
            }
            if self.samples.contains_key(&path) {
                continue;
            }
            if let Ok(s) = ContentSample::from_file(&path) {
                self.samples.insert(path, s);
            }
        }
    }

    fn remember(&mut self, path: &Path, sample: Option<ContentSample>) {
        match sample {
            Some(s) if self.samples.len() < MAX_SAMPLES || self.samples.contains_key(path) => {
                self.samples.insert(path.to_path_buf(), s);
            }
            _ => {
                self.samples.remove(path);
            }
        }
    }

    /// A `MovedFrom` waiting for its `MovedTo` for longer than [`MOVE_PAIR_WAIT`] is a move out.
    pub(crate) fn expire_move(&mut self) -> Vec<Verdict> {
        match &self.moved_from {
            Some((_, at)) if at.elapsed() >= MOVE_PAIR_WAIT => {
                let (from, _) = self.moved_from.take().expect("checked above");
                self.deleted(&from)
            }
            _ => Vec::new(),
        }
    }

    pub(crate) fn observe(&mut self, e: &WatchEvent) -> Vec<Verdict> {
        if e.is_dir || e.kind == EventKind::Rescan || e.pid == Some(self.own_pid) {
            return Vec::new();
        }
        let mut verdicts = Vec::new();
        if let Some((from, _)) = self.moved_from.take() {
            let same_process = from.pid.is_none() || e.pid.is_none() || from.pid == e.pid;
            if e.kind == EventKind::MovedTo && same_process {
                return self.renamed(&from, e);
            }
            verdicts.extend(self.deleted(&from));
        }
        match e.kind {
            EventKind::Created => {
                if self.created.len() >= MAX_CREATED {
                    self.created.clear();
                }
                self.created.insert(e.path.clone());
            }
            EventKind::ClosedWrite => {
                let kind = if self.created.remove(&e.path) {
                    ObservationKind::Create
                } else {
                    ObservationKind::Close
                };
                let before = self.samples.get(&e.path).cloned();
                let after = ContentSample::from_file(&e.path).ok();
                verdicts.extend(self.feed(e, kind, before, after.clone()));
                // Gone already (renamed or deleted right after closing): the sample it had stays
                // the "before" of the rename or delete event that follows.
                if after.is_some() {
                    self.remember(&e.path, after);
                }
            }
            EventKind::Deleted => verdicts.extend(self.deleted(e)),
            EventKind::MovedFrom => self.moved_from = Some((e.clone(), Instant::now())),
            EventKind::MovedTo => {
                let after = ContentSample::from_file(&e.path).ok();
                verdicts.extend(self.feed(e, ObservationKind::Create, None, after.clone()));
                self.remember(&e.path, after);
            }
            EventKind::Modified | EventKind::Attrib | EventKind::Rescan => {}
        }
        verdicts
    }

    fn deleted(&mut self, e: &WatchEvent) -> Vec<Verdict> {
        self.created.remove(&e.path);
        let before = self.samples.remove(&e.path);
        self.feed(e, ObservationKind::Delete, before, None)
    }

    fn renamed(&mut self, from: &WatchEvent, to: &WatchEvent) -> Vec<Verdict> {
        let from_before = self.samples.remove(&from.path);
        // Renamed over an existing file: what was lost is that file's content.
        let before = self.samples.get(&to.path).cloned().or(from_before);
        if self.created.remove(&from.path) {
            self.created.insert(to.path.clone());
        }
        let after = ContentSample::from_file(&to.path).ok();
        let kind = ObservationKind::Rename { from: from.path.clone(), to: to.path.clone() };
        let verdicts = self.feed(to, kind, before, after.clone());
        self.remember(&to.path, after);
        verdicts
    }

    fn feed(
        &mut self,
        e: &WatchEvent,
        kind: ObservationKind,
        before: Option<ContentSample>,
        after: Option<ContentSample>,
    ) -> Vec<Verdict> {
        let obs = Observation {
            time: e.time,
            pid: e.pid,
            exe: e.exe.clone(),
            kind,
            path: e.path.clone(),
            before,
            after,
        };
        self.detector.observe(&obs)
    }
}

/// What the tap needs besides the watcher.
pub(crate) struct TapContext {
    /// `None`: ransomware detection is off; the tap only forwards.
    pub guard: Option<Guard>,
    pub policy_rx: watch::Receiver<Arc<Policy>>,
    /// Events for the spool (the FIM worker's channel).
    pub tx: mpsc::Sender<Vec<Outgoing>>,
    pub iso_tx: mpsc::Sender<IsoRequest>,
    pub stop: Arc<AtomicBool>,
}

/// The tap's outputs: the forwarded events, and where to send the baseline's file list.
pub(crate) struct Tap {
    pub events: Receiver<WatchEvent>,
    pub prefill: Sender<Vec<PathBuf>>,
}

/// Starts the tap thread; it owns the watcher and ends (dropping it) when `ctx.stop` is set or
/// the worker drops [`Tap::events`].
pub(crate) fn spawn_tap(watcher: Watcher, ctx: TapContext) -> std::io::Result<Tap> {
    let (fwd_tx, fwd_rx) = crossbeam_channel::unbounded();
    let (prefill_tx, prefill_rx) = crossbeam_channel::unbounded::<Vec<PathBuf>>();
    std::thread::Builder::new().name("mamori-guard".into()).spawn(move || {
        run_tap(watcher, ctx, fwd_tx, prefill_rx);
    })?;
    Ok(Tap { events: fwd_rx, prefill: prefill_tx })
}

fn run_tap(watcher: Watcher, mut ctx: TapContext, fwd: Sender<WatchEvent>, prefill: Receiver<Vec<PathBuf>>) {
    let mut guard = ctx.guard.take();
    while !ctx.stop.load(Ordering::Relaxed) {
        if let Some(g) = guard.as_mut() {
            while let Ok(files) = prefill.try_recv() {
                g.queue_prefill(files);
            }
        }
        let prefilling = guard.as_ref().is_some_and(Guard::prefilling);
        let pairing = guard.as_ref().is_some_and(|g| g.moved_from.is_some());
        let wait = if prefilling {
            Duration::ZERO
        } else if pairing {
            MOVE_PAIR_WAIT
        } else {
            POLL
        };
        match watcher.events().recv_timeout(wait) {
            Ok(e) => {
                if let Some(g) = guard.as_mut() {
                    let verdicts = g.observe(&e);
                    respond(&ctx, verdicts);
                }
                if fwd.send(e).is_err() {
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if let Some(g) = guard.as_mut() {
                    let verdicts = g.expire_move();
                    respond(&ctx, verdicts);
                    if prefilling {
                        g.prefill_some();
                        if !g.prefilling()
                            && ctx.tx.blocking_send(vec![ready_event(g.samples.len())]).is_err()
                        {
                            return;
                        }
                    }
                }
            }
            // The watcher's reader ended: the worker sees the forwarded channel close.
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The "before" samples of the baseline's files are in: in-place encryption of any of them is
/// now recognised.
fn ready_event(samples: usize) -> Outgoing {
    let data = json!({
        "@timestamp": state::rfc3339(SystemTime::now()),
        "event": {
            "kind": "event",
            "category": ["file"],
            "type": ["info"],
            "action": "ransomware_ready",
            "outcome": "success",
            "module": "mamori",
            "dataset": "mamori.ransomware",
        },
        "mamori": {"ransomware": {"samples": samples}},
    });
    Outgoing { kind: kind::FIM_CHECK, data }
}

fn severity(s: RansomSeverity) -> Severity {
    match s {
        RansomSeverity::High => Severity::High,
        RansomSeverity::Critical => Severity::Critical,
    }
}

/// Applies the response policy to verdicts: the process is stopped first (every millisecond is
/// files), then the events are written and an isolation requested.
fn respond(ctx: &TapContext, verdicts: Vec<Verdict>) {
    if verdicts.is_empty() {
        return;
    }
    let response = ctx.policy_rx.borrow().response.clone();
    for v in verdicts {
        let sev = severity(v.severity);
        let actions = response.actions_for(DetectionKind::Ransomware, sev);
        let mut out = Vec::new();
        if actions.contains(&ResponseActionKind::StopProcess) {
            let stop = match &v.subject {
                Subject::Process { pid, exe } if !response.dry_run => {
                    let result = process::stop_and_kill(*pid, exe.as_deref());
                    match &result {
                        Ok(s) => tracing::warn!(pid, gone = s.gone, "ransomware process stopped and killed"),
                        Err(e) => tracing::error!(pid, "could not stop the ransomware process: {e}"),
                    }
                    Some(stop_event(&v, Some(result), false))
                }
                Subject::Process { .. } => Some(stop_event(&v, None, true)),
                // A directory verdict (no who-data: inotify) names no process to stop.
                Subject::Directory(_) => None,
            };
            out.extend(stop);
        }
        out.insert(0, verdict_event(&v, sev, &actions));
        if actions.contains(&ResponseActionKind::Isolate) {
            let request = IsoRequest::Isolate {
                trigger: "ransomware".into(),
                reason: format!("ransomware behaviour: {}", subject_text(&v.subject)),
                command: None,
            };
            if ctx.iso_tx.blocking_send(request).is_err() {
                tracing::error!("the isolation task is gone; the host could not be isolated");
            }
        }
        if ctx.tx.blocking_send(out).is_err() {
            return;
        }
    }
}

fn subject_text(s: &Subject) -> String {
    match s {
        Subject::Process { pid, exe: Some(exe) } => format!("process {pid} ({})", exe.display()),
        Subject::Process { pid, exe: None } => format!("process {pid}"),
        Subject::Directory(d) => format!("directory {}", d.display()),
    }
}

fn subject_json(s: &Subject) -> Value {
    match s {
        Subject::Process { pid, exe } => {
            json!({"type": "process", "process": {"pid": pid, "executable": exe}})
        }
        Subject::Directory(d) => json!({"type": "directory", "directory": d}),
    }
}

/// `ransomware.detected`.
fn verdict_event(v: &Verdict, sev: Severity, actions: &[ResponseActionKind]) -> Outgoing {
    let mut data = json!({
        "@timestamp": state::rfc3339(v.time),
        "event": {
            "kind": "alert",
            "category": ["malware", "file"],
            "type": ["info"],
            "action": "ransomware_detected",
            "severity": match sev { Severity::Critical => 99, Severity::High => 73, Severity::Medium => 47, Severity::Low => 21 },
            "module": "mamori",
            "dataset": "mamori.ransomware",
        },
        "rule": {"name": "ransomware-behaviour", "ruleset": "mamori"},
        "mamori": {"ransomware": {
            "subject": subject_json(&v.subject),
            "score": v.score,
            "severity": sev.as_str(),
            "reasons": v.reasons,
            "files_touched": v.files_touched,
            "actions": actions.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        }},
    });
    match &v.subject {
        Subject::Process { pid, exe } => data["process"] = json!({"pid": pid, "executable": exe}),
        Subject::Directory(d) => data["file"] = json!({"directory": d}),
    }
    Outgoing { kind: kind::RANSOMWARE_DETECTED, data }
}

/// `response.action` for a process stop; `result` is `None` in dry run.
fn stop_event(v: &Verdict, result: Option<Result<process::Stopped, String>>, dry_run: bool) -> Outgoing {
    let (action, outcome) = match &result {
        None => ("would_stop_process", "unknown"),
        Some(Ok(_)) => ("process_stopped", "success"),
        Some(Err(_)) => ("process_stopped", "failure"),
    };
    let mut data = json!({
        "@timestamp": state::rfc3339(SystemTime::now()),
        "event": {
            "kind": "event",
            "category": ["process", "malware"],
            "type": ["end"],
            "action": action,
            "outcome": outcome,
            "module": "mamori",
            "dataset": "mamori.response",
        },
        "mamori": {"response": {
            "action": "stop_process",
            "dry_run": dry_run,
            "trigger": "ransomware",
            "files_touched_at_verdict": v.files_touched,
        }},
    });
    if let Subject::Process { pid, exe } = &v.subject {
        data["process"] = json!({"pid": pid, "executable": exe});
    }
    match result {
        Some(Ok(s)) => {
            data["process"]["command_line"] = json!(s.command_line);
            data["process"]["parent"] = json!({"pid": s.ppid});
            data["mamori"]["response"]["killed"] = json!(s.gone);
        }
        Some(Err(e)) => data["error"] = json!({"message": e}),
        None => {}
    }
    Outgoing { kind: kind::RESPONSE_ACTION, data }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn ev(path: &Path, kind: EventKind, pid: Option<u32>) -> WatchEvent {
        WatchEvent { path: path.to_path_buf(), kind, is_dir: false, pid, exe: None, time: SystemTime::now() }
    }

    /// Pseudo-random bytes (xorshift): uniform enough for the chi-square test.
    fn random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect()
    }

    fn letter(i: usize) -> Vec<u8> {
        format!("Dear patient {i},\nyour appointment is confirmed for next week.\n").repeat(80).into_bytes()
    }

    #[test]
    fn in_place_encryption_seen_through_events_gives_a_process_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..30).map(|i| dir.path().join(format!("letter{i:02}.txt"))).collect();
        for (i, f) in files.iter().enumerate() {
            fs::write(f, letter(i)).unwrap();
        }
        let mut g = Guard::new(&Canaries::new());
        g.queue_prefill(files.clone());
        while g.prefilling() {
            g.prefill_some();
        }
        assert_eq!(g.samples.len(), 30);
        let mut verdicts = Vec::new();
        let mut touched = 0;
        for (i, f) in files.iter().enumerate() {
            fs::write(f, random_bytes(8192, i as u64 + 1)).unwrap();
            touched += 1;
            // What fanotify reports for open(O_TRUNC) + two writes + close.
            for k in [EventKind::Modified, EventKind::Modified, EventKind::ClosedWrite] {
                verdicts.extend(g.observe(&ev(f, k, Some(4242))));
            }
            if verdicts.iter().any(|v| matches!(v.subject, Subject::Process { pid: 4242, .. })) {
                break;
            }
        }
        assert!(
            verdicts.iter().any(|v| matches!(v.subject, Subject::Process { pid: 4242, .. })),
            "no process verdict after {touched} files"
        );
        assert!(touched <= 10, "verdict only after {touched} files");
    }

    #[test]
    fn renames_pair_and_unpaired_moves_are_deletes_and_creates() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        let b = dir.path().join("b.txt");
        fs::write(&a, letter(1)).unwrap();
        let mut g = Guard::new(&Canaries::new());
        g.queue_prefill(vec![a.clone()]);
        g.prefill_some();
        fs::rename(&a, &b).unwrap();
        assert!(g.observe(&ev(&a, EventKind::MovedFrom, Some(7))).is_empty());
        g.observe(&ev(&b, EventKind::MovedTo, Some(7)));
        assert!(g.moved_from.is_none());
        assert!(g.samples.contains_key(&b) && !g.samples.contains_key(&a), "the sample follows the rename");

        // Moved out: after the pairing wait it is a delete, and its sample is forgotten.
        g.observe(&ev(&b, EventKind::MovedFrom, Some(7)));
        std::thread::sleep(MOVE_PAIR_WAIT + Duration::from_millis(10));
        g.expire_move();
        assert!(g.moved_from.is_none() && !g.samples.contains_key(&b));

        // Moved in: sampled as a new file.
        let c = dir.path().join("c.txt");
        fs::write(&c, letter(3)).unwrap();
        g.observe(&ev(&c, EventKind::MovedTo, None));
        assert!(g.samples.contains_key(&c));
    }

    #[test]
    fn a_canary_touched_is_critical_and_our_own_events_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut canaries = Canaries::new();
        let [first, _] = canaries.plant(dir.path()).unwrap();
        let mut g = Guard::new(&canaries);
        assert!(g.observe(&ev(&first, EventKind::ClosedWrite, Some(std::process::id()))).is_empty());
        let v = g.observe(&ev(&first, EventKind::ClosedWrite, Some(99)));
        assert!(v.iter().any(|v| v.severity == RansomSeverity::Critical), "{v:?}");
    }

    fn verdict(pid: u32, severity: RansomSeverity) -> Verdict {
        Verdict {
            subject: Subject::Process { pid, exe: None },
            time: SystemTime::now(),
            score: 60,
            severity,
            reasons: vec!["test".into()],
            files_touched: 6,
        }
    }

    fn context(
        response: mamori_proto::ResponsePolicy,
    ) -> (TapContext, mpsc::Receiver<Vec<Outgoing>>, mpsc::Receiver<IsoRequest>) {
        let (tx, rx) = mpsc::channel(8);
        let (iso_tx, iso_rx) = mpsc::channel(8);
        let policy = Policy { response, ..Policy::default() };
        let (_ptx, policy_rx) = watch::channel(Arc::new(policy));
        let ctx = TapContext { guard: None, policy_rx, tx, iso_tx, stop: Arc::new(AtomicBool::new(false)) };
        (ctx, rx, iso_rx)
    }

    #[test]
    fn dry_run_only_says_what_it_would_do_and_rules_follow_severity() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let response = mamori_proto::ResponsePolicy {
            dry_run: true,
            rules: vec![
                mamori_proto::ResponseRule {
                    detection: DetectionKind::Ransomware,
                    min_severity: Severity::High,
                    actions: vec![ResponseActionKind::StopProcess],
                },
                mamori_proto::ResponseRule {
                    detection: DetectionKind::Ransomware,
                    min_severity: Severity::Critical,
                    actions: vec![ResponseActionKind::Isolate],
                },
            ],
            ..Default::default()
        };
        let (ctx, mut rx, mut iso_rx) = context(response);
        respond(&ctx, vec![verdict(pid, RansomSeverity::High)]);
        let events = rx.try_recv().unwrap();
        assert_eq!(events[0].kind, kind::RANSOMWARE_DETECTED);
        assert_eq!(events[0].data["mamori"]["ransomware"]["actions"], json!(["stop_process"]));
        assert_eq!(events[1].data["event"]["action"], "would_stop_process");
        assert_eq!(events[1].data["mamori"]["response"]["dry_run"], true);
        assert!(iso_rx.try_recv().is_err(), "high is below the isolate rule");
        assert!(child.try_wait().unwrap().is_none(), "dry run: the process still runs");

        respond(&ctx, vec![verdict(pid, RansomSeverity::Critical)]);
        let events = rx.try_recv().unwrap();
        assert_eq!(events[0].data["mamori"]["ransomware"]["actions"], json!(["stop_process", "isolate"]));
        assert!(
            matches!(iso_rx.try_recv(), Ok(IsoRequest::Isolate { .. })),
            "the isolation task decides on dry run"
        );
        assert!(child.try_wait().unwrap().is_none());
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
