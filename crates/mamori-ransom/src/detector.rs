//! The scoring engine: observations in, verdicts out.
//!
//! Every observation is turned into zero or more *file signals* (independent of who did it),
//! which are then added to the sliding-window score of the process (when the pid is known) and
//! of the directory the file is in. A subject whose score reaches [`Config::threshold`] yields
//! one [`Verdict`]; it yields another only after [`Config::rearm_after`] without any signal.
//!
//! Time comes from the observations only: the same stream always gives the same verdicts.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::names::{extension, is_known_extension, is_ransom_note_name};
use crate::sample::{ContentSample, FileKind, UNIFORM_CHI_SQUARE_MAX};

/// Points for a write, rename or delete of a registered canary file: alone above the threshold.
pub const CANARY_POINTS: u32 = 100;
/// A file that was a known type or text is now uniform random bytes without magic.
pub const RANDOM_OVERWRITE_POINTS: u32 = 10;
/// A file lost its type (magic or text) and is now unrecognised binary, but not uniform
/// (e.g. a weak XOR "encryption").
pub const MAGIC_DESTROYED_POINTS: u32 = 6;
/// A structured original deleted after a random-looking file named after it was written
/// (`a.docx` deleted after `a.docx.enc` was created).
pub const NAMED_PAIR_POINTS: u32 = 10;
/// A structured file deleted right after the same subject wrote a random-looking new file in
/// the same directory whose size is that of an encrypted copy (not name-related: encryptors that
/// pick random names). Only the latest such file can pair, so cache churn (random-looking entries
/// written, unrelated images deleted) rarely matches.
pub const LOOSE_PAIR_POINTS: u32 = 8;
/// A rename that appends an unknown extension (`a.docx` → `a.docx.locked`).
pub const RENAME_APPENDED_POINTS: u32 = 4;
/// A rename that changes the extension to an unknown one (`a.docx` → `a.x8f2k`).
pub const RENAME_UNKNOWN_POINTS: u32 = 2;
/// Renames alone never reach a verdict: their points in a window are capped at this.
pub const RENAME_CAP: u32 = 30;
/// A file with a ransom-note name.
pub const NOTE_NAME_POINTS: u32 = 4;
/// A text file with at least two ransom keywords (bitcoin, decrypt, .onion...).
pub const NOTE_CONTENT_POINTS: u32 = 10;
/// Ransom notes in at least [`NOTE_DIRS`] directories.
pub const NOTE_DIRS_BONUS: u32 = 30;
pub const NOTE_DIRS: usize = 3;

/// Detector settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Score at which a subject yields a verdict.
    pub threshold: u32,
    /// Signals older than this no longer count.
    pub window: Duration,
    /// A subject that yielded a verdict can yield another after this long without signals.
    pub rearm_after: Duration,
    /// Distinct paths remembered per subject for `files_touched` (beyond, counted approximately).
    pub max_tracked_paths: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            threshold: 50,
            window: Duration::from_secs(120),
            rearm_after: Duration::from_secs(300),
            max_tracked_paths: 4096,
        }
    }
}

/// What happened to a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObservationKind {
    Write,
    Create,
    /// `path` should be `to`.
    Rename {
        from: PathBuf,
        to: PathBuf,
    },
    Delete,
    /// Closed after writing (fanotify `FAN_CLOSE_WRITE`).
    Close,
}

/// One file event as the agent sees it, with content samples before (from its baseline) and
/// after (read when the event came).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub time: SystemTime,
    pub pid: Option<u32>,
    pub exe: Option<PathBuf>,
    pub kind: ObservationKind,
    pub path: PathBuf,
    /// The file's content before the event; `None` for a file the agent did not know. For a
    /// rename: the content `to` had when the rename replaced an existing file (write-temp-then-
    /// rename-over: what was lost is the destination's old content), otherwise that of `from`.
    pub before: Option<ContentSample>,
    /// The content after the event; `None` for a delete or when it could not be read.
    pub after: Option<ContentSample>,
}

/// Who a verdict is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    Process { pid: u32, exe: Option<PathBuf> },
    Directory(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The score passed the threshold.
    High,
    /// A canary was touched, or the score is twice the threshold.
    Critical,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub subject: Subject,
    /// Time of the observation that crossed the threshold.
    pub time: SystemTime,
    pub score: u32,
    pub severity: Severity,
    pub reasons: Vec<String>,
    /// Distinct files the subject wrote, created, renamed or deleted since it was (re-)armed.
    pub files_touched: u64,
}

/// A signal derived from one observation, before it is attributed to subjects.
#[derive(Debug, Clone, PartialEq)]
enum FileSignal {
    Canary(PathBuf),
    RandomOverwrite(PathBuf),
    MagicDestroyed(PathBuf),
    RandomCreate(PathBuf, u64),
    StructuredDelete(PathBuf, u64),
    Rename { ext: String, appended: bool },
    Note { path: PathBuf, name: bool, content: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sig {
    Canary = 0,
    RandomOverwrite,
    MagicDestroyed,
    NamedPair,
    LoosePair,
    Rename,
    Note,
    NoteDirs,
}
const NSIG: usize = 8;

#[derive(Debug)]
struct Entry {
    time: SystemTime,
    points: u32,
    sig: Sig,
    path: Option<PathBuf>,
}

#[derive(Debug)]
struct SubjectState {
    entries: VecDeque<Entry>,
    score: u32,
    rename_points: u32,
    /// Paths already scored for a content change or as a note in the window.
    scored: HashSet<PathBuf>,
    /// Originals a random-looking new file may have replaced (`a.docx` for `a.docx.enc`).
    candidates: HashSet<PathBuf>,
    /// The subject's latest random-looking new file not yet paired: (path, size).
    last_random: Option<(PathBuf, u64)>,
    note_dirs: HashSet<PathBuf>,
    note_bonus: bool,
    /// Last change to the pairing and note state above (they expire with the window too).
    last_aux: Option<SystemTime>,
    // Since (re-)armed, for reasons and files_touched.
    totals: [u64; NSIG],
    rename_exts: HashMap<String, u64>,
    canaries: Vec<PathBuf>,
    touched: HashSet<PathBuf>,
    touched_overflow: u64,
    fired: bool,
    last_signal: Option<SystemTime>,
    last_activity: SystemTime,
}

impl SubjectState {
    fn new(now: SystemTime) -> Self {
        SubjectState {
            entries: VecDeque::new(),
            score: 0,
            rename_points: 0,
            scored: HashSet::new(),
            candidates: HashSet::new(),
            last_random: None,
            note_dirs: HashSet::new(),
            note_bonus: false,
            last_aux: None,
            totals: [0; NSIG],
            rename_exts: HashMap::new(),
            canaries: Vec::new(),
            touched: HashSet::new(),
            touched_overflow: 0,
            fired: false,
            last_signal: None,
            last_activity: now,
        }
    }

    fn expire(&mut self, now: SystemTime, window: Duration) {
        while let Some(e) = self.entries.front() {
            if age(now, e.time) <= window {
                break;
            }
            let e = self.entries.pop_front().expect("front exists");
            self.score -= e.points;
            match e.sig {
                Sig::Rename => self.rename_points -= e.points,
                Sig::NoteDirs => self.note_bonus = false,
                _ => {}
            }
            if let Some(p) = e.path {
                self.scored.remove(&p);
            }
        }
        if self.last_aux.is_some_and(|t| age(now, t) > window) {
            self.last_aux = None;
            self.candidates.clear();
            self.last_random = None;
            self.note_dirs.clear();
        }
        if self.entries.is_empty() {
            self.scored.clear();
            self.note_bonus = false;
        }
    }

    fn push(&mut self, now: SystemTime, sig: Sig, points: u32, path: Option<PathBuf>) {
        let points = if sig == Sig::Rename {
            let p = points.min(RENAME_CAP - self.rename_points);
            self.rename_points += p;
            p
        } else {
            points
        };
        self.totals[sig as usize] += 1;
        self.score += points;
        self.last_signal = Some(now);
        self.entries.push_back(Entry { time: now, points, sig, path });
    }

    fn touch(&mut self, path: &Path, max: usize) {
        if self.touched.contains(path) {
            return;
        }
        if self.touched.len() < max {
            self.touched.insert(path.to_path_buf());
        } else {
            self.touched_overflow += 1;
        }
    }

    fn apply(&mut self, now: SystemTime, signal: &FileSignal) {
        if matches!(
            signal,
            FileSignal::RandomCreate(..) | FileSignal::StructuredDelete(..) | FileSignal::Note { .. }
        ) {
            self.last_aux = Some(now);
        }
        match signal {
            FileSignal::Canary(p) => {
                if self.canaries.len() < 8 && !self.canaries.contains(p) {
                    self.canaries.push(p.clone());
                }
                self.push(now, Sig::Canary, CANARY_POINTS, None);
            }
            FileSignal::RandomOverwrite(p) | FileSignal::MagicDestroyed(p) => {
                if self.scored.insert(p.clone()) {
                    let (sig, pts) = match signal {
                        FileSignal::RandomOverwrite(_) => (Sig::RandomOverwrite, RANDOM_OVERWRITE_POINTS),
                        _ => (Sig::MagicDestroyed, MAGIC_DESTROYED_POINTS),
                    };
                    self.push(now, sig, pts, Some(p.clone()));
                }
            }
            FileSignal::RandomCreate(p, size) => {
                if self.candidates.len() < 65_536 {
                    let mut stem = p.clone();
                    for _ in 0..3 {
                        if stem.extension().is_none() {
                            break;
                        }
                        stem.set_extension("");
                        self.candidates.insert(stem.clone());
                    }
                }
                self.last_random = Some((p.clone(), *size));
            }
            FileSignal::StructuredDelete(p, size) => {
                if self.candidates.remove(p) {
                    self.last_random = None;
                    self.push(now, Sig::NamedPair, NAMED_PAIR_POINTS, None);
                } else if self.last_random.as_ref().is_some_and(|(r, rsize)| {
                    r.parent() == p.parent() && encrypted_size_matches(*size, *rsize)
                }) {
                    // Not named after it, but the file written just before, in the same
                    // directory, has the size an encrypted copy of this one would have.
                    self.last_random = None;
                    self.push(now, Sig::LoosePair, LOOSE_PAIR_POINTS, None);
                }
            }
            FileSignal::Rename { ext, appended } => {
                if self.rename_exts.len() < 16 || self.rename_exts.contains_key(ext) {
                    *self.rename_exts.entry(ext.clone()).or_default() += 1;
                }
                let pts = if *appended { RENAME_APPENDED_POINTS } else { RENAME_UNKNOWN_POINTS };
                self.push(now, Sig::Rename, pts, None);
            }
            FileSignal::Note { path, name, content } => {
                if self.scored.insert(path.clone()) {
                    let pts = if *name { NOTE_NAME_POINTS } else { 0 }
                        + if *content { NOTE_CONTENT_POINTS } else { 0 };
                    self.push(now, Sig::Note, pts, Some(path.clone()));
                    if let Some(dir) = path.parent() {
                        self.note_dirs.insert(dir.to_path_buf());
                    }
                    if !self.note_bonus && self.note_dirs.len() >= NOTE_DIRS {
                        self.note_bonus = true;
                        self.push(now, Sig::NoteDirs, NOTE_DIRS_BONUS, None);
                    }
                }
            }
        }
    }

    fn reasons(&self) -> Vec<String> {
        let t = |s: Sig| self.totals[s as usize];
        let mut r = Vec::new();
        for c in &self.canaries {
            r.push(format!("canary file modified, renamed or deleted: {}", c.display()));
        }
        if t(Sig::RandomOverwrite) > 0 {
            r.push(format!(
                "{} files rewritten from a known type or text to uniform random bytes \
                 (head chi-square <= {UNIFORM_CHI_SQUARE_MAX})",
                t(Sig::RandomOverwrite)
            ));
        }
        if t(Sig::MagicDestroyed) > 0 {
            r.push(format!(
                "{} files lost their file type (now unrecognised binary)",
                t(Sig::MagicDestroyed)
            ));
        }
        if t(Sig::NamedPair) + t(Sig::LoosePair) > 0 {
            r.push(format!(
                "{} originals deleted after random-looking new files were written ({} named after them)",
                t(Sig::NamedPair) + t(Sig::LoosePair),
                t(Sig::NamedPair)
            ));
        }
        if t(Sig::Rename) > 0 {
            let mut exts: Vec<_> = self.rename_exts.iter().collect();
            exts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let list: Vec<String> = exts.iter().take(3).map(|(e, n)| format!(".{e} x{n}")).collect();
            r.push(format!("{} renames to unknown extensions ({})", t(Sig::Rename), list.join(", ")));
        }
        if t(Sig::Note) > 0 {
            r.push(format!(
                "{} ransom-note-like files in {} directories",
                t(Sig::Note),
                self.note_dirs.len().max(1)
            ));
        }
        r
    }
}

/// An encrypted copy is the original's size, rounded up to a cipher block, plus at most a
/// header/footer (wrapped key, nonce, marker): allow 8 KiB + 2%.
fn encrypted_size_matches(original: u64, copy: u64) -> bool {
    copy + 16 >= original && copy <= original + 8192 + original / 50
}

fn age(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or(Duration::ZERO)
}

/// The ransomware behaviour detector. Feed it every observation in time order with
/// [`Detector::observe`].
#[derive(Debug)]
pub struct Detector {
    cfg: Config,
    canaries: HashSet<PathBuf>,
    processes: HashMap<u32, (Option<PathBuf>, SubjectState)>,
    directories: HashMap<PathBuf, SubjectState>,
    observed: u64,
}

impl Default for Detector {
    fn default() -> Self {
        Self::new(Config::default())
    }
}

impl Detector {
    pub fn new(cfg: Config) -> Self {
        Detector {
            cfg,
            canaries: HashSet::new(),
            processes: HashMap::new(),
            directories: HashMap::new(),
            observed: 0,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Watch `path` as a canary: any write, rename or delete of it is a strong signal.
    pub fn add_canary(&mut self, path: impl Into<PathBuf>) {
        self.canaries.insert(path.into());
    }

    pub fn add_canaries(&mut self, canaries: &crate::Canaries) {
        self.canaries.extend(canaries.paths().iter().cloned());
    }

    pub fn is_canary(&self, path: &Path) -> bool {
        self.canaries.contains(path)
    }

    /// Current windowed score of a subject (0 when unknown).
    pub fn score(&self, subject: &Subject) -> u32 {
        match subject {
            Subject::Process { pid, .. } => self.processes.get(pid).map_or(0, |(_, s)| s.score),
            Subject::Directory(d) => self.directories.get(d).map_or(0, |s| s.score),
        }
    }

    /// Take one observation; returns the verdicts it caused (usually none; at most one per
    /// subject: the process and the directory).
    pub fn observe(&mut self, obs: &Observation) -> Vec<Verdict> {
        let now = obs.time;
        self.observed += 1;
        if self.observed.is_multiple_of(1024) {
            self.prune(now);
        }
        let signals = self.signals(obs);
        let touched: Vec<&Path> = match &obs.kind {
            ObservationKind::Rename { from, to } => vec![from, to],
            _ => vec![&obs.path],
        };
        let dir = obs.path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut verdicts = Vec::new();
        let cfg = &self.cfg;

        if let Some(pid) = obs.pid {
            let (exe, state) = self.processes.entry(pid).or_insert_with(|| (None, SubjectState::new(now)));
            if obs.exe.is_some() && *exe != obs.exe {
                if exe.is_some() {
                    // The pid was reused (or the process exec'd): a new subject.
                    *state = SubjectState::new(now);
                }
                exe.clone_from(&obs.exe);
            }
            let subject = Subject::Process { pid, exe: exe.clone() };
            if let Some(v) = Self::update(cfg, state, now, &signals, &touched, subject) {
                verdicts.push(v);
            }
        }
        // Directories are only tracked once something suspicious happens in them, so builds and
        // upgrades touching many directories cost nothing here.
        if !signals.is_empty() || self.directories.contains_key(&dir) {
            let state = self.directories.entry(dir.clone()).or_insert_with(|| SubjectState::new(now));
            if let Some(v) = Self::update(cfg, state, now, &signals, &touched, Subject::Directory(dir)) {
                verdicts.push(v);
            }
        }
        verdicts
    }

    fn update(
        cfg: &Config,
        state: &mut SubjectState,
        now: SystemTime,
        signals: &[FileSignal],
        touched: &[&Path],
        subject: Subject,
    ) -> Option<Verdict> {
        state.expire(now, cfg.window);
        if state.fired && state.last_signal.is_some_and(|t| age(now, t) >= cfg.rearm_after) {
            // Quiet long enough: start over.
            *state = SubjectState::new(now);
        }
        state.last_activity = now;
        for p in touched {
            state.touch(p, cfg.max_tracked_paths);
        }
        for s in signals {
            state.apply(now, s);
        }
        if state.fired || state.score < cfg.threshold {
            return None;
        }
        state.fired = true;
        let canary = state.totals[Sig::Canary as usize] > 0;
        let severity =
            if canary || state.score >= 2 * cfg.threshold { Severity::Critical } else { Severity::High };
        Some(Verdict {
            subject,
            time: now,
            score: state.score,
            severity,
            reasons: state.reasons(),
            files_touched: state.touched.len() as u64 + state.touched_overflow,
        })
    }

    /// Forget subjects with no activity for longer than both the window and the re-arm time.
    fn prune(&mut self, now: SystemTime) {
        let keep = self.cfg.window.max(self.cfg.rearm_after);
        self.processes.retain(|_, (_, s)| age(now, s.last_activity) <= keep);
        self.directories.retain(|_, s| age(now, s.last_activity) <= keep);
    }

    fn signals(&self, obs: &Observation) -> Vec<FileSignal> {
        let mut out = Vec::new();
        let canary = match &obs.kind {
            ObservationKind::Rename { from, to } => {
                [from, to].into_iter().find(|p| self.canaries.contains(*p))
            }
            _ => Some(&obs.path).filter(|p| self.canaries.contains(*p)),
        };
        if let Some(c) = canary {
            out.push(FileSignal::Canary(c.clone()));
            return out;
        }
        let content_path = match &obs.kind {
            ObservationKind::Rename { from, to } => {
                let old = extension(from).unwrap_or_default();
                if let Some(ext) = extension(to) {
                    if ext != old && !is_known_extension(&ext) {
                        let appended = match (from.file_name(), to.file_name()) {
                            (Some(f), Some(t)) => {
                                let (f, t) = (f.as_encoded_bytes(), t.as_encoded_bytes());
                                t.len() > f.len() + 1 && t.starts_with(f) && t[f.len()] == b'.'
                            }
                            _ => false,
                        };
                        out.push(FileSignal::Rename { ext, appended });
                    }
                }
                to
            }
            ObservationKind::Delete => {
                if obs.before.as_ref().is_some_and(ContentSample::is_structured) {
                    out.push(FileSignal::StructuredDelete(
                        obs.path.clone(),
                        obs.before.as_ref().map_or(0, |b| b.size),
                    ));
                }
                return out;
            }
            _ => &obs.path,
        };
        if let Some(after) = &obs.after {
            match &obs.before {
                Some(before) if before.is_structured() => {
                    if after.looks_random() {
                        out.push(FileSignal::RandomOverwrite(content_path.clone()));
                    } else if after.kind == FileKind::Unknown && after.size >= 16 && before.kind.is_known() {
                        out.push(FileSignal::MagicDestroyed(content_path.clone()));
                    }
                }
                Some(_) => {}
                None => {
                    if after.looks_random() {
                        out.push(FileSignal::RandomCreate(content_path.clone(), after.size));
                    }
                }
            }
        }
        let note_content = obs.after.as_ref().is_some_and(|a| a.is_text && a.ransom_words >= 2);
        let note_name = is_ransom_note_name(content_path);
        if note_name || note_content {
            out.push(FileSignal::Note { path: content_path.clone(), name: note_name, content: note_content });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn structured() -> ContentSample {
        ContentSample::from_bytes(&b"Dear colleague, the results are within normal limits.\n".repeat(100))
    }

    fn random(seed: u8, len: usize) -> ContentSample {
        // A xorshift keystream: statistically uniform enough for one 4 KiB window.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(seed);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let s = ContentSample::from_bytes(&bytes);
        assert!(s.looks_random());
        s
    }

    fn ob(time: SystemTime, kind: ObservationKind, path: &str) -> Observation {
        Observation {
            time,
            pid: Some(10),
            exe: Some("/x".into()),
            kind,
            path: path.into(),
            before: None,
            after: None,
        }
    }

    fn overwrite(d: &mut Detector, time: SystemTime, path: &str) -> Vec<Verdict> {
        let mut o = ob(time, ObservationKind::Close, path);
        o.before = Some(structured());
        o.after = Some(random(path.len() as u8, 5000));
        d.observe(&o)
    }

    #[test]
    fn five_overwrites_fire_once_and_rearm_after_quiet() {
        let mut d = Detector::default();
        let mut verdicts = Vec::new();
        for i in 0..20 {
            verdicts.extend(overwrite(&mut d, t(i), &format!("/d/f{i}.txt")));
        }
        // One for the process, one for the directory, both at the fifth file.
        assert_eq!(verdicts.len(), 2);
        assert!(verdicts.iter().all(|v| v.files_touched == 5 && v.score == 50));
        // Rewriting the same file again does not count twice.
        assert!(overwrite(&mut d, t(21), "/d/f1.txt").is_empty());
        // Quiet for the re-arm time: the next burst is reported again.
        let mut again = Vec::new();
        for i in 0..5 {
            again.extend(overwrite(&mut d, t(400 + i), &format!("/e/g{i}.txt")));
        }
        assert_eq!(again.len(), 2, "{again:#?}");
        assert!(matches!(again[0].subject, Subject::Process { pid: 10, .. }));
        assert_eq!(again[1].subject, Subject::Directory("/e".into()));
    }

    #[test]
    fn slow_signals_leave_the_window() {
        let mut d = Detector::default();
        for i in 0..20 {
            // One file every 30 s: at most 5 in the 120 s window, i.e. the threshold exactly
            // only if they all stayed; they do not.
            assert!(overwrite(&mut d, t(i * 31), &format!("/d/f{i}.txt")).is_empty(), "at {i}");
        }
        assert!(d.score(&Subject::Process { pid: 10, exe: None }) <= 40);
    }

    #[test]
    fn renames_alone_are_capped() {
        let mut d = Detector::default();
        for i in 0..200 {
            let (from, to) = (format!("/d/f{i}.txt"), format!("/d/f{i}.txt.locked"));
            let o = ob(t(i / 10), ObservationKind::Rename { from: from.into(), to: to.clone().into() }, &to);
            assert!(d.observe(&o).is_empty());
        }
        assert_eq!(d.score(&Subject::Process { pid: 10, exe: None }), RENAME_CAP);
        assert_eq!(d.score(&Subject::Directory("/d".into())), RENAME_CAP);
    }

    #[test]
    fn canary_rename_is_critical_at_once() {
        let mut d = Detector::default();
        d.add_canary("/d/!0000_a.docx");
        let o = ob(
            t(0),
            ObservationKind::Rename { from: "/d/!0000_a.docx".into(), to: "/d/!0000_a.docx.x".into() },
            "/d/!0000_a.docx.x",
        );
        let v = d.observe(&o);
        assert_eq!(v.len(), 2);
        assert!(v.iter().all(|v| v.severity == Severity::Critical));
        assert!(v[0].reasons[0].contains("!0000_a.docx"));
    }

    fn new_then_delete(d: &mut Detector, time: SystemTime, new: &str, old: &str, new_len: usize) -> usize {
        let mut c = ob(time, ObservationKind::Create, new);
        c.after = Some(random(new.len() as u8, new_len));
        let mut n = d.observe(&c).len();
        let mut del = ob(time, ObservationKind::Delete, old);
        del.before = Some(structured());
        n += d.observe(&del).len();
        n
    }

    #[test]
    fn random_names_pair_by_directory_and_size() {
        let size = structured().size as usize;
        let mut d = Detector::default();
        let mut first = None;
        for i in 0..10 {
            if new_then_delete(&mut d, t(i), &format!("/d/{i:x}q7z.bin"), &format!("/d/f{i}.txt"), size + 32)
                > 0
            {
                first.get_or_insert(i + 1);
            }
        }
        assert_eq!(first, Some(7));
        // Cache churn: random-looking entries, unrelated deletes of other sizes or elsewhere.
        let mut d = Detector::default();
        for i in 0..300 {
            let dir = if i % 2 == 0 { "/cache" } else { "/other" };
            let n =
                new_then_delete(&mut d, t(i / 5), &format!("/cache/e{i}"), &format!("{dir}/f{i}"), 40_000);
            assert_eq!(n, 0);
        }
        // Creates alone never score.
        assert_eq!(d.score(&Subject::Process { pid: 10, exe: None }), 0);
    }

    #[test]
    fn one_article_about_ransomware_does_not_fire() {
        let mut d = Detector::default();
        let mut o = ob(t(0), ObservationKind::Create, "/d/article.txt");
        o.after = Some(ContentSample::from_bytes(
            b"How ransomware works: it will encrypt files and ask for bitcoin.",
        ));
        assert!(d.observe(&o).is_empty());
        assert_eq!(d.score(&Subject::Process { pid: 10, exe: None }), NOTE_CONTENT_POINTS);
    }

    #[test]
    fn observations_and_verdicts_round_trip_as_json() {
        let mut d = Detector::default();
        let mut o = ob(t(0), ObservationKind::Rename { from: "/d/a".into(), to: "/d/a.x".into() }, "/d/a.x");
        o.before = Some(structured());
        o.after = Some(random(1, 4096));
        let json = serde_json::to_string(&o).unwrap();
        // (serde_json's default float parsing may differ in the last bit: compare what matters.)
        let back: Observation = serde_json::from_str(&json).unwrap();
        assert_eq!((&back.kind, back.time, back.pid), (&o.kind, o.time, o.pid));
        assert!(back.after.unwrap().looks_random() && back.before.unwrap().is_structured());
        d.add_canary("/d/a");
        let v = d.observe(&o);
        let json = serde_json::to_string(&v).unwrap();
        assert!(json.contains("\"critical\""), "{json}");
        assert_eq!(serde_json::from_str::<Vec<Verdict>>(&json).unwrap(), v);
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn deterministic() {
        let run = || {
            let mut d = Detector::default();
            let mut out = Vec::new();
            for i in 0..30 {
                out.extend(overwrite(&mut d, t(i * 3), &format!("/d{}/f{i}.txt", i % 3)));
            }
            out
        };
        let (a, b) = (run(), run());
        assert!(!a.is_empty());
        assert_eq!(a, b);
    }
}
