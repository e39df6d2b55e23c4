//! Log file collection: the files the policy's `logs` section names are followed with
//! [`mamori_logs::Follower`] (rotation, truncation, a persisted position) and every line becomes
//! one `log.event` in the spool, parsed by [`mamori_logs::parse_line`].
//!
//! # Delivery
//!
//! A round polls every file, parses the lines and hands the events to the caller; the caller
//! appends them to the spool and only then calls [`Collector::commit`], which persists each
//! file's position. So a crash between the two repeats at most the last round, and a clean stop
//! (which always finishes the round it is in) neither repeats nor loses a line. Malformed lines
//! are events too (`mamori.malformed`), never dropped.
//!
//! # Fairness and bounds
//!
//! Each file gives at most [`MAX_BYTES_PER_FILE`] per round and a round stops taking files once
//! it holds [`MAX_LINES_PER_ROUND`] lines; the file a round starts with rotates, so one huge file
//! cannot starve the others. A full round is followed by the next one at once, otherwise the
//! loop sleeps the policy's interval.
//!
//! # Problems
//!
//! A file that does not exist yet is waited for (looked at every round) and reported once as a
//! `log.problem`; an unreadable file (permissions, I/O error) is reported once per distinct
//! error and retried every round while the others go on. Nothing here ends the agent except a
//! spool that cannot be written.
//!
//! # State
//!
//! `<agent dir>/logs/<sha-256 of the path, 32 hex>.pos`: one follower state file per followed
//! path (the follower's own format). A state file left by a path the policy no longer names is
//! harmless and reused if the path comes back.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mamori_logs::{Event, Follower, FollowerOptions, Format, ParseContext, Value};
use mamori_proto::{kind, LogCollectionPolicy, Policy, MIN_LOG_POLL_MS};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::run::{stopped, Agent};
use crate::scan::Outgoing;
use crate::{state, Error};

/// `<agent dir>/logs/`: the follower positions.
pub(crate) const LOGS_DIR: &str = "logs";
/// A round stops polling further files once it holds this many lines.
pub(crate) const MAX_LINES_PER_ROUND: usize = 10_000;
/// Most bytes one file gives in one round (the follower's read budget).
pub(crate) const MAX_BYTES_PER_FILE: usize = 1 << 20;
/// Longest line kept whole; longer ones arrive in pieces of this size (each its own event).
const MAX_LINE: usize = 64 * 1024;

/// One followed file.
struct Source {
    /// As the policy wrote it (also the event's `log.file.path`).
    path: String,
    format: Format,
    state_file: PathBuf,
    /// `None` while the follower cannot be opened (the error is in `last_error`).
    follower: Option<Follower>,
    missing_reported: bool,
    /// The last error reported, so that a lasting problem is reported once, not every round.
    last_error: Option<String>,
}

/// What one round produced.
pub(crate) struct Round {
    /// `log.event`s in file order, then `log.problem`s.
    pub events: Vec<Outgoing>,
    /// Lines read (the `log.event`s among `events`).
    pub lines: usize,
    /// Some file may have more to read at once (a budget was used up).
    pub full: bool,
}

/// Follows the files of one `logs` policy section. See the module documentation.
pub(crate) struct Collector {
    sources: Vec<Source>,
    host: String,
    /// Index of the source the next round starts with.
    next: usize,
}

impl Collector {
    /// Sets up a follower per file with its position under `state_dir` (created if needed).
    /// Files that cannot be opened yet are retried by [`Collector::poll`].
    pub(crate) fn new(
        policy: &LogCollectionPolicy,
        state_dir: &Path,
        host: &str,
    ) -> Result<Collector, Error> {
        state::ensure_private_dir(state_dir)?;
        let mut sources = Vec::with_capacity(policy.files.len());
        let mut seen = std::collections::HashSet::new();
        for file in &policy.files {
            // Two followers on one state file would each overwrite the other's position.
            if !seen.insert(file.path.as_str()) {
                tracing::warn!(path = %file.path, "the logs policy names this file twice; following it once");
                continue;
            }
            // The manager checks the names; an older manager or a hand-written policy.json may
            // not have, and one bad entry must not stop the other files.
            let format = match file.format.as_deref() {
                None => Format::Auto,
                Some(name) => name.parse::<Format>().unwrap_or_else(|e| {
                    tracing::warn!(path = %file.path, "{e}; detecting the format per line instead");
                    Format::Auto
                }),
            };
            sources.push(Source {
                path: file.path.clone(),
                format,
                state_file: state_dir.join(state_file_name(&file.path)),
                follower: None,
                missing_reported: false,
                last_error: None,
            });
        }
        Ok(Collector { sources, host: host.to_string(), next: 0 })
    }

    /// Reads what the files have now (within the bounds) and parses it. The positions are not
    /// saved: call [`Collector::commit`] once the events are stored.
    pub(crate) fn poll(&mut self) -> Round {
        let mut ctx = ParseContext::new(SystemTime::now());
        ctx.utc_offset_secs = local_utc_offset_secs();
        let mut round = Round { events: Vec::new(), lines: 0, full: false };
        let mut problems = Vec::new();
        let count = self.sources.len();
        let start = self.next;
        self.next = if count == 0 { 0 } else { (start + 1) % count };
        let mut lines: Vec<Vec<u8>> = Vec::new();
        for i in 0..count {
            if round.lines >= MAX_LINES_PER_ROUND {
                round.full = true;
                break;
            }
            let source = &mut self.sources[(start + i) % count];
            lines.clear();
            source.poll(&mut lines, &mut problems, &self.host);
            let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
            // A follower that used (nearly) all its budget likely stopped before the end.
            round.full |= bytes + MAX_LINE >= MAX_BYTES_PER_FILE;
            round.lines += lines.len();
            round.events.extend(lines.iter().map(|line| Outgoing {
                kind: kind::LOG_EVENT,
                data: Value::Object(source.event(line, &ctx, &self.host)),
            }));
        }
        round.events.extend(problems);
        round
    }

    /// Saves every file's position after the lines handed out so far. Call only once the events
    /// of the rounds before are in the spool.
    pub(crate) fn commit(&mut self) {
        for s in &mut self.sources {
            if let Some(f) = s.follower.as_mut() {
                if let Err(e) = f.commit() {
                    // The lines are stored; only a restart would read them again.
                    let message = format!("could not save the position in {}: {e}", s.state_file.display());
                    if s.last_error.as_deref() != Some(message.as_str()) {
                        tracing::warn!(path = %s.path, "{message}");
                        s.last_error = Some(message);
                    }
                }
            }
        }
    }
}

impl Source {
    fn open_follower(&self) -> io::Result<Follower> {
        let options = FollowerOptions {
            max_line: MAX_LINE,
            max_read_per_poll: MAX_BYTES_PER_FILE,
            start_at_end: false,
        };
        Follower::open_with(&self.path, &self.state_file, options)
    }

    /// Appends this file's new lines to `out`, and a problem event to `problems` when something
    /// is wrong that was not reported yet.
    fn poll(&mut self, out: &mut Vec<Vec<u8>>, problems: &mut Vec<Outgoing>, host: &str) {
        if self.follower.is_none() {
            match self.open_follower() {
                Ok(f) => self.follower = Some(f),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    // A damaged position (disk trouble, an edit by hand): start the file again
                    // rather than skip it — repeating lines is the lesser harm. The old state
                    // is kept beside for a look.
                    let aside = self.state_file.with_extension("pos.damaged");
                    let message = format!("{e}; reading the file again from its start");
                    tracing::warn!(path = %self.path, "{message}");
                    problems.push(problem("log_position_reset", &self.path, &message, host));
                    if let Err(e) = std::fs::rename(&self.state_file, &aside) {
                        self.report(problems, host, format!("cannot move the damaged position aside: {e}"));
                        return;
                    }
                    match self.open_follower() {
                        Ok(f) => self.follower = Some(f),
                        Err(e) => {
                            self.report(problems, host, format!("cannot open: {e}"));
                            return;
                        }
                    }
                }
                Err(e) => {
                    self.report(problems, host, format!("cannot open: {e}"));
                    return;
                }
            }
        }
        let Some(follower) = self.follower.as_mut() else { return };
        let before = out.len();
        // Lines handed out before an error are kept: the follower has moved past them and
        // counts them as handed out with the next successful poll.
        match follower.poll(out) {
            Ok(_) => {
                if self.last_error.take().is_some() {
                    tracing::info!(path = %self.path, "log file readable again");
                }
            }
            Err(e) => self.report(problems, host, format!("cannot read: {e}")),
        }
        if out.len() == before && !self.missing_reported {
            if let Err(e) = std::fs::metadata(&self.path) {
                if e.kind() == io::ErrorKind::NotFound {
                    self.missing_reported = true;
                    tracing::warn!(path = %self.path, "log file does not exist (yet); waiting for it");
                    problems.push(problem(
                        "log_file_missing",
                        &self.path,
                        "the file does not exist (yet); it is read as soon as it appears",
                        host,
                    ));
                }
            }
        }
    }

    fn report(&mut self, problems: &mut Vec<Outgoing>, host: &str, message: String) {
        if self.last_error.as_deref() == Some(message.as_str()) {
            return;
        }
        tracing::warn!(path = %self.path, "log file: {message}");
        problems.push(problem("log_file_error", &self.path, &message, host));
        self.last_error = Some(message);
    }

    fn event(&self, line: &[u8], ctx: &ParseContext, host: &str) -> Event {
        let mut ev = mamori_logs::parse_line(self.format, line, ctx);
        // A syslog header names the host that wrote the line; only lines without one get ours.
        ev.entry("host.name").or_insert_with(|| Value::String(host.to_string()));
        ev.insert("log.file.path".into(), Value::String(self.path.clone()));
        ev
    }
}

/// A `log.problem`: flat like the `log.event`s it is about.
fn problem(action: &str, path: &str, message: &str, host: &str) -> Outgoing {
    let mut ev = Event::new();
    ev.insert("@timestamp".into(), Value::String(state::rfc3339(SystemTime::now())));
    ev.insert("event.kind".into(), "event".into());
    ev.insert("event.action".into(), action.into());
    ev.insert("event.outcome".into(), "failure".into());
    ev.insert("event.dataset".into(), "mamori.logs".into());
    ev.insert("log.file.path".into(), path.into());
    ev.insert("error.message".into(), message.into());
    ev.insert("host.name".into(), host.into());
    Outgoing { kind: kind::LOG_PROBLEM, data: Value::Object(ev) }
}

/// Position file name for `path`: a digest, because paths hold slashes and may be long.
fn state_file_name(path: &str) -> String {
    let digest = Sha256::digest(path.as_bytes());
    format!("{}.pos", hex::encode(&digest[..16]))
}

/// This host's offset from UTC now, for syslog dates that carry no zone (a local rsyslog writes
/// local time). Looked up every round, so a change of daylight saving time is followed.
#[allow(unsafe_code)]
fn local_utc_offset_secs() -> i32 {
    // SAFETY: `time` with a null pointer only returns the time; `localtime_r` writes into our
    // zeroed `tm` and is thread-safe. The agent never changes the environment (TZ), which is
    // what makes local time lookups unsound elsewhere.
    let now = unsafe { libc::time(std::ptr::null_mut()) };
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::localtime_r(&now, &mut tm) };
    if r.is_null() {
        return 0;
    }
    i32::try_from(tm.tm_gmtoff).unwrap_or(0)
}

/// The running collector, as the async side sees it.
struct Running {
    policy: LogCollectionPolicy,
    collector: Collector,
}

impl Agent {
    /// Collects the policy's log files until `stop`. A changed `logs` section replaces the
    /// collector (positions survive in the state files, so nothing is read twice).
    pub(crate) async fn logs_loop(
        &self,
        mut policy_rx: watch::Receiver<Arc<Policy>>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let state_dir = self.dir.join(LOGS_DIR);
        let host = self.config.hostname.clone().unwrap_or_else(state::system_hostname);
        let mut running: Option<Running> = None;
        // Files whose collector could not be set up, so the error is logged once per policy.
        let mut failed: Option<LogCollectionPolicy> = None;
        loop {
            let policy = policy_rx.borrow_and_update().clone();
            let wanted = policy.logs.as_ref().filter(|l| !l.files.is_empty());
            if running.as_ref().map(|r| &r.policy) != wanted {
                if running.take().is_some() {
                    tracing::info!("the log collection policy changed");
                }
                if let Some(logs) = wanted.filter(|l| failed.as_ref() != Some(*l)) {
                    match Collector::new(logs, &state_dir, &host) {
                        Ok(collector) => {
                            tracing::info!(files = logs.files.len(), "log collection starting");
                            failed = None;
                            running = Some(Running { policy: logs.clone(), collector });
                        }
                        Err(e) => {
                            tracing::error!("log collection cannot start: {e}");
                            failed = Some(logs.clone());
                        }
                    }
                }
            }
            // `None`: nothing to do until the policy changes.
            let mut wait = None;
            if let Some(r) = running.take() {
                let interval = Duration::from_millis(r.policy.poll_ms.max(MIN_LOG_POLL_MS));
                let (r, round) = blocking(move || {
                    let mut r = r;
                    let round = r.collector.poll();
                    (r, round)
                })
                .await?;
                let full = round.full;
                self.append(round.events).await?;
                // Only now: the events are in the spool.
                let r = blocking(move || {
                    let mut r = r;
                    r.collector.commit();
                    r
                })
                .await?;
                running = Some(r);
                wait = Some(if full { Duration::ZERO } else { interval });
            }
            tokio::select! {
                // A stop wins over a ready timer: the round just done is committed, so stopping
                // here neither loses nor repeats a line.
                biased;
                _ = stopped(&mut stop) => return Ok(()),
                changed = policy_rx.changed() => if changed.is_err() {
                    // The heartbeat side is gone, which happens only when stopping.
                    stopped(&mut stop).await;
                    return Ok(());
                },
                _ = sleep_or_forever(wait) => {}
            }
        }
    }
}

async fn sleep_or_forever(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending::<()>().await,
    }
}
/// File reads and fsyncs stay off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Internal(format!("log collection task: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mamori_proto::{LogFileSource, SpooledEvent};
    use mamori_spool::Spool;
    use std::collections::HashMap;
    use std::fs::{self, OpenOptions};
    use std::io::Write;

    /// Lines per file in `events`.
    fn lines_per_file(events: &[Outgoing]) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for e in events.iter().filter(|e| e.kind == kind::LOG_EVENT) {
            if let Some(p) = e.data["log.file.path"].as_str() {
                *out.entry(p.to_string()).or_insert(0) += 1;
            }
        }
        out
    }

    fn policy(files: &[(&Path, Option<&str>)]) -> LogCollectionPolicy {
        LogCollectionPolicy {
            files: files
                .iter()
                .map(|(p, f)| LogFileSource {
                    path: p.to_string_lossy().into_owned(),
                    format: f.map(String::from),
                })
                .collect(),
            poll_ms: 100,
        }
    }

    fn append_lines(path: &Path, lines: std::ops::RangeInclusive<u32>) {
        let mut f = OpenOptions::new().create(true).append(true).open(path).unwrap();
        for n in lines {
            writeln!(f, "{{\"n\":{n},\"msg\":\"line {n}\"}}").unwrap();
        }
        f.sync_all().unwrap();
    }

    /// What the agent does with a round: into the spool (encoded as `Agent::append` does),
    /// then commit.
    fn round_into_spool(c: &mut Collector, spool: &mut Spool) -> Round {
        let round = c.poll();
        let encoded: Vec<(&str, Vec<u8>)> = round
            .events
            .iter()
            .map(|o| {
                let data = serde_json::value::to_raw_value(&o.data).unwrap();
                (o.kind, serde_json::to_vec(&SpooledEvent { time_ms: 1, data }).unwrap())
            })
            .collect();
        if !encoded.is_empty() {
            let refs: Vec<(&str, &[u8])> = encoded.iter().map(|(k, p)| (*k, p.as_slice())).collect();
            spool.append_batch(&refs).unwrap();
            spool.flush().unwrap();
        }
        c.commit();
        round
    }

    /// Every event in the spool, as (kind, data).
    fn spooled(spool: &mut Spool) -> Vec<(String, serde_json::Map<String, Value>)> {
        spool
            .peek(usize::MAX, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|e| {
                let s: SpooledEvent = serde_json::from_slice(&e.payload).unwrap();
                let v: Value = serde_json::from_str(s.data.get()).unwrap();
                (e.kind, v.as_object().unwrap().clone())
            })
            .collect()
    }

    /// The `n` of every JSON-line event in the spool, in order.
    fn numbers(spool: &mut Spool) -> Vec<u64> {
        spooled(spool)
            .iter()
            .filter(|(k, _)| k == kind::LOG_EVENT)
            .filter_map(|(_, d)| d["n"].as_u64())
            .collect()
    }

    struct Setup {
        _tmp: tempfile::TempDir,
        logs: PathBuf,
        state: PathBuf,
        spool: Spool,
    }

    fn setup() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let logs = tmp.path().join("var-log");
        fs::create_dir(&logs).unwrap();
        let state = tmp.path().join("agent").join(LOGS_DIR);
        let spool = Spool::open(&tmp.path().join("spool"), mamori_spool::Options::default()).unwrap();
        Setup { logs, state, spool, _tmp: tmp }
    }

    #[test]
    fn sshd_lines_become_parsed_log_events() {
        let mut s = setup();
        let auth = s.logs.join("auth.log");
        fs::write(
            &auth,
            "Mar  5 10:00:01 web1 sshd[4242]: Failed password for root from 203.0.113.7 port 50022 ssh2\n\
             this is not a log line at all\n",
        )
        .unwrap();
        let json = s.logs.join("app.json");
        append_lines(&json, 1..=1);
        let mut c =
            Collector::new(&policy(&[(&auth, Some("authlog")), (&json, None)]), &s.state, "agent-host")
                .unwrap();
        let round = round_into_spool(&mut c, &mut s.spool);
        assert_eq!(round.lines, 3);
        let events = spooled(&mut s.spool);
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(events.iter().all(|(k, _)| k == kind::LOG_EVENT));
        let ssh = events.iter().find(|(_, d)| d.get("source.ip").is_some()).map(|(_, d)| d).unwrap();
        assert_eq!(ssh["user.name"], "root");
        assert_eq!(ssh["source.ip"], "203.0.113.7");
        assert_eq!(ssh["host.name"], "web1", "the line's own host wins");
        assert_eq!(ssh["log.file.path"], auth.to_string_lossy().as_ref());
        let bad = events.iter().find(|(_, d)| d.get("mamori.malformed").is_some()).map(|(_, d)| d);
        let bad = bad.expect("the malformed line is still an event");
        assert_eq!(bad["log.original"], "this is not a log line at all");
        let j = events.iter().find(|(_, d)| d.get("n").is_some()).map(|(_, d)| d).unwrap();
        assert_eq!(j["host.name"], "agent-host", "lines without a host get the agent's");
        assert_eq!(j["mamori.input"], "json", "auto-detected");

        // Nothing new: nothing more, and no problem events.
        let round = round_into_spool(&mut c, &mut s.spool);
        assert_eq!((round.lines, round.events.len()), (0, 0));
    }

    #[test]
    fn rotation_and_truncation_lose_no_lines() {
        let mut s = setup();
        let f = s.logs.join("app.log");
        append_lines(&f, 1..=10);
        let mut c = Collector::new(&policy(&[(&f, Some("json"))]), &s.state, "h").unwrap();
        round_into_spool(&mut c, &mut s.spool);
        // Written after the last look, then renamed away and a new file started.
        append_lines(&f, 11..=20);
        fs::rename(&f, s.logs.join("app.log.1")).unwrap();
        append_lines(&f, 21..=25);
        for _ in 0..3 {
            round_into_spool(&mut c, &mut s.spool);
        }
        assert_eq!(numbers(&mut s.spool), (1..=25).collect::<Vec<_>>());
        // copytruncate: everything read before the truncation, then the file starts over.
        append_lines(&f, 26..=30);
        round_into_spool(&mut c, &mut s.spool);
        OpenOptions::new().write(true).truncate(true).open(&f).unwrap();
        round_into_spool(&mut c, &mut s.spool);
        append_lines(&f, 31..=33);
        round_into_spool(&mut c, &mut s.spool);
        assert_eq!(numbers(&mut s.spool), (1..=33).collect::<Vec<_>>());
    }

    #[test]
    fn a_new_collector_on_the_same_state_neither_repeats_nor_loses_lines() {
        let mut s = setup();
        let f = s.logs.join("app.log");
        let p = policy(&[(&f, Some("json"))]);
        append_lines(&f, 1..=100);
        let mut c = Collector::new(&p, &s.state, "h").unwrap();
        round_into_spool(&mut c, &mut s.spool);
        drop(c);
        // Written while no collector ran, including a rotation.
        append_lines(&f, 101..=150);
        fs::rename(&f, s.logs.join("app.log.1")).unwrap();
        append_lines(&f, 151..=160);
        let mut c = Collector::new(&p, &s.state, "h").unwrap();
        for _ in 0..3 {
            round_into_spool(&mut c, &mut s.spool);
        }
        assert_eq!(numbers(&mut s.spool), (1..=160).collect::<Vec<_>>());

        // Polled but never committed (a crash before the spool append): read again, once.
        append_lines(&f, 161..=170);
        let mut c = Collector::new(&p, &s.state, "h").unwrap();
        assert_eq!(c.poll().lines, 10);
        drop(c);
        let mut c = Collector::new(&p, &s.state, "h").unwrap();
        round_into_spool(&mut c, &mut s.spool);
        assert_eq!(numbers(&mut s.spool), (1..=170).collect::<Vec<_>>());
    }

    #[test]
    fn a_missing_file_is_reported_once_and_read_when_it_appears() {
        let mut s = setup();
        let later = s.logs.join("later.log");
        let present = s.logs.join("present.log");
        append_lines(&present, 1..=2);
        let mut c =
            Collector::new(&policy(&[(&later, Some("json")), (&present, Some("json"))]), &s.state, "h")
                .unwrap();
        for _ in 0..3 {
            round_into_spool(&mut c, &mut s.spool);
        }
        let problems: Vec<_> =
            spooled(&mut s.spool).into_iter().filter(|(k, _)| k == kind::LOG_PROBLEM).collect();
        assert_eq!(problems.len(), 1, "reported once: {problems:?}");
        assert_eq!(problems[0].1["event.action"], "log_file_missing");
        assert_eq!(problems[0].1["log.file.path"], later.to_string_lossy().as_ref());
        assert_eq!(numbers(&mut s.spool), vec![1, 2], "the other file goes on");

        append_lines(&later, 3..=5);
        round_into_spool(&mut c, &mut s.spool);
        assert_eq!(numbers(&mut s.spool), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn an_unreadable_file_is_reported_and_the_others_go_on() {
        let mut s = setup();
        // A directory cannot be read as a file, whoever runs the test (root reads any file).
        let dir = s.logs.join("not-a-file");
        fs::create_dir(&dir).unwrap();
        let good = s.logs.join("good.log");
        append_lines(&good, 1..=3);
        let mut c = Collector::new(&policy(&[(&dir, None), (&good, Some("json"))]), &s.state, "h").unwrap();
        for _ in 0..3 {
            round_into_spool(&mut c, &mut s.spool);
        }
        let problems: Vec<_> =
            spooled(&mut s.spool).into_iter().filter(|(k, _)| k == kind::LOG_PROBLEM).collect();
        assert_eq!(problems.len(), 1, "reported once: {problems:?}");
        assert_eq!(problems[0].1["event.action"], "log_file_error");
        assert_eq!(numbers(&mut s.spool), vec![1, 2, 3]);
    }

    #[test]
    fn a_damaged_position_restarts_the_file_instead_of_failing() {
        let mut s = setup();
        let f = s.logs.join("app.log");
        let p = policy(&[(&f, Some("json"))]);
        append_lines(&f, 1..=2);
        fs::create_dir_all(&s.state).unwrap();
        fs::write(s.state.join(state_file_name(&f.to_string_lossy())), "garbage").unwrap();
        let mut c = Collector::new(&p, &s.state, "h").unwrap();
        round_into_spool(&mut c, &mut s.spool);
        assert_eq!(numbers(&mut s.spool), vec![1, 2]);
        let actions: Vec<_> = spooled(&mut s.spool)
            .into_iter()
            .filter(|(k, _)| k == kind::LOG_PROBLEM)
            .map(|(_, d)| d["event.action"].clone())
            .collect();
        assert_eq!(actions, ["log_position_reset"]);
    }

    #[test]
    fn one_huge_file_does_not_starve_the_others() {
        let s = setup();
        let huge = s.logs.join("huge.log");
        let small = s.logs.join("small.log");
        {
            let mut f = std::io::BufWriter::new(fs::File::create(&huge).unwrap());
            for n in 0..40_000u32 {
                writeln!(f, "{{\"big\":{n}}}").unwrap();
            }
        }
        append_lines(&small, 1..=1);
        let mut c =
            Collector::new(&policy(&[(&huge, Some("json")), (&small, Some("json"))]), &s.state, "h").unwrap();
        let first = c.poll();
        assert!(first.full, "the huge file has more");
        c.commit();
        let second = c.poll();
        let mut seen = lines_per_file(&first.events);
        for (k, v) in lines_per_file(&second.events) {
            *seen.entry(k).or_insert(0) += v;
        }
        assert_eq!(seen.get(&*small.to_string_lossy()), Some(&1), "the small file was read: {seen:?}");
    }

    #[test]
    fn state_files_are_named_by_path() {
        let a = state_file_name("/var/log/auth.log");
        assert_eq!(a.len(), 32 + 4);
        assert_ne!(a, state_file_name("/var/log/auth.log.1"));
    }
}
