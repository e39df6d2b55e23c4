//! Loading a rule set and running it over inputs.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use mamori_correlate::{CorrelationMatch, Correlator, RuleRef};
use mamori_evtx::{open_regular_file, read_file, ReadOptions};
use mamori_logs::{parse_line, Format, ParseContext};
use mamori_sigma::{LoadReport, Pipeline, RuleSet};
use rayon::prelude::*;
use serde_json::Value;

use crate::inputs::{collect_inputs, InputFile, InputKind};
use crate::summary::{InputProblem, Summary};
use crate::Event;

/// Lines longer than this are cut there (and counted as errors): a text log line is an event,
/// and a file without line ends must not be read into memory whole.
const MAX_LINE_BYTES: usize = 1 << 20;
/// Progress is reported after each file and every this many records.
const PROGRESS_EVERY: u64 = 4096;
/// Records evaluated together (in parallel) within one file.
const BATCH: usize = 256;

/// What a detection is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DetectionKind {
    /// A Sigma detection rule matched one event.
    Rule,
    /// A Sigma correlation rule held over several detections.
    Correlation,
}

/// The rule a detection came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleSummary {
    pub kind: DetectionKind,
    pub id: Option<String>,
    pub title: String,
    pub level: Option<String>,
    pub tags: Vec<String>,
}

/// One detection on the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Event time (for a correlation: its last event), milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub rule: RuleSummary,
    /// The file the event came from (a correlation: the file of its last event).
    pub source: PathBuf,
    /// EVTX: `EventRecordID`; text log: line number (from 1). None for correlations.
    pub record_id: Option<u64>,
    /// The matching event; for a correlation, its group fields, `count` and `value`.
    pub event: Event,
}

/// How far a hunt is, for a progress bar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub records_done: u64,
}

/// Knobs of [`Hunt::run`].
#[derive(Debug, Clone)]
pub struct HuntOptions {
    /// Files read and evaluated at once (0: one per core).
    pub threads: usize,
    pub evtx: ReadOptions,
    /// Format of text logs (`Auto` detects it per line).
    pub log_format: Format,
}

impl Default for HuntOptions {
    fn default() -> Self {
        HuntOptions { threads: 0, evtx: ReadOptions::default(), log_format: Format::Auto }
    }
}

/// Detections on a timeline and the summary of the run.
#[derive(Debug, Clone)]
pub struct HuntResult {
    /// Sorted by time, then source and record.
    pub detections: Vec<Detection>,
    pub summary: Summary,
}

/// A loaded rule set (detection and correlation rules), ready to run over inputs.
pub struct Hunt {
    rules: RuleSet,
    load_report: LoadReport,
    correlator_template: Vec<(PathBuf, Value)>,
    correlations_loaded: usize,
    correlation_problems: Vec<String>,
}

impl std::fmt::Debug for Hunt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hunt")
            .field("rules", &self.rules.len())
            .field("correlations", &self.correlations_loaded)
            .finish()
    }
}

impl Hunt {
    /// Load Sigma rules (files and directories) with `pipeline`; correlation rules among them
    /// are loaded too. Problems are kept for the summary.
    pub fn load(rule_paths: &[PathBuf], pipeline: &Pipeline) -> Hunt {
        let (rules, load_report) = RuleSet::load(rule_paths, pipeline);
        let correlator_template: Vec<(PathBuf, Value)> =
            load_report.correlations.iter().map(|doc| (doc.origin.clone(), doc.doc.clone())).collect();
        let (correlator, problems) = Correlator::load(&correlator_template);
        let correlation_problems = problems
            .iter()
            .map(|p| {
                let rule = p.rule.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
                format!("{}{rule}: {}", p.origin.display(), p.reason)
            })
            .collect();
        Hunt {
            rules,
            load_report,
            correlator_template,
            correlations_loaded: correlator.len(),
            correlation_problems,
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    pub fn load_report(&self) -> &LoadReport {
        &self.load_report
    }

    pub fn correlations_loaded(&self) -> usize {
        self.correlations_loaded
    }

    /// Read `inputs` (EVTX and text log files, directories), evaluate every event, correlate
    /// the detections in time order. `progress` is called from the reading threads.
    pub fn run(
        &self,
        inputs: &[PathBuf],
        options: &HuntOptions,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> HuntResult {
        let started = Instant::now();
        let (files, path_problems) = collect_inputs(inputs);
        let counters = Counters {
            files_total: files.len() as u64,
            bytes_total: files.iter().map(|f| f.bytes).sum(),
            ..Counters::default()
        };

        let mut order: Vec<(usize, &InputFile)> = files.iter().enumerate().collect();
        // Biggest first, so that one large file does not run alone at the end.
        order.sort_by_key(|(_, file)| std::cmp::Reverse(file.bytes));
        let evaluate_file = |&(source, file): &(usize, &InputFile)| -> FileOutcome {
            let outcome = self.evaluate_file(source, file, options, &counters, progress);
            counters.files_done.fetch_add(1, Ordering::Relaxed);
            counters.bytes_done.fetch_add(file.bytes, Ordering::Relaxed);
            progress(counters.snapshot());
            outcome
        };
        let outcomes: Vec<FileOutcome> =
            match rayon::ThreadPoolBuilder::new().num_threads(options.threads).build() {
                Ok(pool) => pool.install(|| order.par_iter().map(evaluate_file).collect()),
                Err(_) => order.iter().map(evaluate_file).collect(),
            };

        let mut summary = Summary {
            rule_files: self.load_report.files,
            rules_loaded: self.load_report.rules_loaded,
            rules_unsupported: self.load_report.problems.len(),
            correlations_loaded: self.correlations_loaded,
            correlation_problems: self.correlation_problems.clone(),
            files_total: files.len() as u64,
            ..Summary::default()
        };
        for problem in &path_problems {
            summary.input_problems.push(InputProblem {
                path: problem.path.clone(),
                reason: problem.reason.clone(),
                fatal: true,
            });
        }
        let mut raw = Vec::new();
        for outcome in outcomes {
            summary.records_read += outcome.records;
            summary.record_errors += outcome.error_count;
            summary.bytes_read += outcome.bytes;
            match outcome.kind {
                InputKind::Evtx => summary.evtx_files += 1,
                InputKind::TextLog => summary.log_files += 1,
            }
            if let Some(reason) = outcome.fatal {
                summary.input_problems.push(InputProblem {
                    path: files[outcome.source].path.clone(),
                    reason,
                    fatal: true,
                });
            } else if outcome.error_count > 0 {
                let first = outcome.errors.first().cloned().unwrap_or_default();
                summary.input_problems.push(InputProblem {
                    path: files[outcome.source].path.clone(),
                    reason: format!("{} unreadable record(s)/line(s), first: {first}", outcome.error_count),
                    fatal: false,
                });
            }
            raw.extend(outcome.matches);
        }
        summary.input_problems.sort_by(|a, b| a.path.cmp(&b.path));

        raw.sort_by_key(|m| (m.time_ms, m.source, m.record_id));
        let detections = self.timeline(raw, &files);
        summary.count_detections(&detections);
        summary.elapsed_ms = started.elapsed().as_millis() as u64;
        HuntResult { detections, summary }
    }

    fn evaluate_file(
        &self,
        source: usize,
        file: &InputFile,
        options: &HuntOptions,
        counters: &Counters,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> FileOutcome {
        let mut outcome = FileOutcome {
            source,
            kind: file.kind,
            bytes: file.bytes,
            records: 0,
            error_count: 0,
            errors: Vec::new(),
            fatal: None,
            matches: Vec::new(),
        };
        // Records are evaluated in batches spread over the pool's threads, so that a file
        // much bigger than the others does not leave the other cores idle at the end.
        let mut batch: Vec<PendingEvent> = Vec::with_capacity(BATCH);
        let mut on_event = |event: Event, time_ms: i64, record_id: Option<u64>, outcome: &mut FileOutcome| {
            outcome.records += 1;
            let done = counters.records_done.fetch_add(1, Ordering::Relaxed) + 1;
            if done.is_multiple_of(PROGRESS_EVERY) {
                progress(counters.snapshot());
            }
            batch.push(PendingEvent { event, time_ms, record_id });
            if batch.len() >= BATCH {
                self.evaluate_batch(&mut batch, source, &mut outcome.matches);
            }
        };
        match file.kind {
            InputKind::Evtx => {
                let report = read_file(&file.path, &options.evtx, &mut |record| {
                    let record_id =
                        record.event.get("EventRecordID").and_then(Value::as_u64).or(Some(record.record_id));
                    on_event(record.event, record.time_ms, record_id, &mut outcome);
                });
                outcome.error_count = report.error_count;
                outcome.errors = report.errors;
                outcome.fatal = report.fatal;
            }
            InputKind::TextLog => {
                read_text_log(
                    &file.path,
                    options.log_format,
                    &mut outcome,
                    &mut |event, time_ms, line, outcome| on_event(event, time_ms, Some(line), outcome),
                );
            }
        }
        self.evaluate_batch(&mut batch, source, &mut outcome.matches);
        outcome
    }

    fn evaluate_batch(&self, batch: &mut Vec<PendingEvent>, source: usize, out: &mut Vec<RawMatch>) {
        if batch.is_empty() {
            return;
        }
        let found: Vec<Vec<RawMatch>> = batch
            .par_drain(..)
            .map_init(Vec::new, |matched, pending| self.evaluate_one(pending, source, matched))
            .collect();
        out.extend(found.into_iter().flatten());
    }

    fn evaluate_one(&self, pending: PendingEvent, source: usize, matched: &mut Vec<usize>) -> Vec<RawMatch> {
        matched.clear();
        self.rules.evaluate(&pending.event, matched);
        let Some(last) = matched.len().checked_sub(1) else {
            return Vec::new();
        };
        let PendingEvent { event, time_ms, record_id } = pending;
        let mut event = Some(event);
        matched
            .iter()
            .enumerate()
            .map(|(position, &rule)| {
                // The last match takes the event, the others a copy.
                let event = if position == last {
                    event.take().unwrap_or_default()
                } else {
                    event.clone().unwrap_or_default()
                };
                RawMatch { rule, time_ms, source, record_id, event }
            })
            .collect()
    }

    /// Feed the sorted matches to the correlator; build the timeline.
    fn timeline(&self, raw: Vec<RawMatch>, files: &[InputFile]) -> Vec<Detection> {
        let (mut correlator, _) = Correlator::load(&self.correlator_template);
        let mut suppressed: HashMap<usize, bool> = HashMap::new();
        let mut correlation_matches: Vec<CorrelationMatch> = Vec::new();
        if !correlator.is_empty() {
            for (index, item) in raw.iter().enumerate() {
                let info = self.rules.rule(item.rule);
                let rule = RuleRef { id: info.id.as_deref(), name: info.name.as_deref() };
                correlator.observe(rule, item.time_ms, &item.event, index as u64, &mut correlation_matches);
            }
            correlator.flush(i64::MAX, &mut correlation_matches);
        }

        let mut detections = Vec::with_capacity(raw.len() + correlation_matches.len());
        for found in &correlation_matches {
            let info = correlator.rule(found.rule_index);
            let last = found.event_refs.last().and_then(|&i| raw.get(i as usize));
            let mut event = Event::new();
            for (field, value) in &found.group {
                event.insert(field.clone(), value.clone());
            }
            event.insert("count".into(), Value::from(found.count));
            if let Some(value) = found.value {
                event.insert("value".into(), Value::from(value));
            }
            event.insert("first_ms".into(), Value::from(found.first_ms));
            event.insert("last_ms".into(), Value::from(found.last_ms));
            detections.push(Detection {
                time_ms: found.last_ms,
                rule: RuleSummary {
                    kind: DetectionKind::Correlation,
                    id: info.id.clone(),
                    title: info.title.clone(),
                    level: info.level.clone(),
                    tags: info.tags.clone(),
                },
                source: last.map(|m| files[m.source].path.clone()).unwrap_or_default(),
                record_id: None,
                event,
            });
        }
        for item in raw {
            let info = self.rules.rule(item.rule);
            let hidden = *suppressed.entry(item.rule).or_insert_with(|| {
                correlator.suppress_generated(RuleRef { id: info.id.as_deref(), name: info.name.as_deref() })
            });
            if hidden {
                continue;
            }
            detections.push(Detection {
                time_ms: item.time_ms,
                rule: RuleSummary {
                    kind: DetectionKind::Rule,
                    id: info.id.clone(),
                    title: info.title.clone(),
                    level: info.level.clone(),
                    tags: info.tags.clone(),
                },
                source: files[item.source].path.clone(),
                record_id: item.record_id,
                event: item.event,
            });
        }
        // Stable: within one instant, files and records keep their order.
        detections
            .sort_by(|a, b| (a.time_ms, &a.source, a.record_id).cmp(&(b.time_ms, &b.source, b.record_id)));
        detections
    }
}

#[derive(Default)]
struct Counters {
    files_done: AtomicU64,
    files_total: u64,
    bytes_done: AtomicU64,
    bytes_total: u64,
    records_done: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Progress {
        Progress {
            files_done: self.files_done.load(Ordering::Relaxed),
            files_total: self.files_total,
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_total: self.bytes_total,
            records_done: self.records_done.load(Ordering::Relaxed),
        }
    }
}

struct PendingEvent {
    event: Event,
    time_ms: i64,
    record_id: Option<u64>,
}

struct RawMatch {
    rule: usize,
    time_ms: i64,
    source: usize,
    record_id: Option<u64>,
    event: Event,
}

struct FileOutcome {
    source: usize,
    kind: InputKind,
    bytes: u64,
    records: u64,
    error_count: u64,
    errors: Vec<String>,
    fatal: Option<String>,
    matches: Vec<RawMatch>,
}

/// Milliseconds of an RFC 3339 `@timestamp`.
pub(crate) fn timestamp_ms(text: &str) -> Option<i64> {
    text.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond())
}

fn read_text_log(
    path: &Path,
    format: Format,
    outcome: &mut FileOutcome,
    on_event: &mut dyn FnMut(Event, i64, u64, &mut FileOutcome),
) {
    let (file, _) = match open_regular_file(path) {
        Ok(opened) => opened,
        Err(error) => {
            outcome.fatal = Some(format!("cannot open: {error}"));
            return;
        }
    };
    // The file's time stands in for "now" (year of BSD syslog dates, events without a time).
    let modified = file.metadata().and_then(|m| m.modified()).unwrap_or_else(|_| SystemTime::now());
    let context = ParseContext::new(modified);
    let fallback_ms =
        modified.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut line = Vec::with_capacity(1024);
    let mut number = 0u64;
    loop {
        line.clear();
        let read = match read_line_capped(&mut reader, &mut line) {
            Ok(read) => read,
            Err(error) => {
                note_error(outcome, format!("line {}: read error: {error}", number + 1));
                break;
            }
        };
        let Some(cut) = read else { break };
        number += 1;
        if cut {
            note_error(outcome, format!("line {number}: longer than {MAX_LINE_BYTES} bytes, cut"));
        }
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let event = parse_line(format, &line, &context);
        let time_ms =
            event.get("@timestamp").and_then(Value::as_str).and_then(timestamp_ms).unwrap_or(fallback_ms);
        on_event(event, time_ms, number, outcome);
    }
}

fn note_error(outcome: &mut FileOutcome, reason: String) {
    outcome.error_count += 1;
    if outcome.errors.len() < 50 {
        outcome.errors.push(reason);
    }
}

/// One line into `line` (without its end), at most [`MAX_LINE_BYTES`]: `None` at the end of
/// the file, `Some(true)` when the line was longer and the rest was skipped.
fn read_line_capped(reader: &mut BufReader<File>, line: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
    let read = reader.by_ref().take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', line)?;
    if read == 0 {
        return Ok(None);
    }
    let ended = line.last() == Some(&b'\n');
    if ended {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        return Ok(Some(false));
    }
    if line.len() <= MAX_LINE_BYTES {
        return Ok(Some(false)); // the last line, without an end
    }
    line.truncate(MAX_LINE_BYTES);
    // Skip to the end of this line.
    let mut rest = Vec::new();
    loop {
        rest.clear();
        let n = reader.by_ref().take(1 << 16).read_until(b'\n', &mut rest)?;
        if n == 0 || rest.last() == Some(&b'\n') {
            break;
        }
    }
    Ok(Some(true))
}
