//! Log file collection in the running agent against the test manager: the policy's `logs`
//! section starts it, lines arrive parsed as `log.event`s, a missing file is reported and read
//! once it appears, and a stop and restart (with a rotation in between) neither loses nor
//! repeats a line.

mod common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::*;
use mamori_agent::enroll;
use mamori_proto::{kind, LogCollectionPolicy, LogFileSource, Policy};

const LIMIT: Duration = Duration::from_secs(15);

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn append_numbered(path: &Path, lines: std::ops::RangeInclusive<u32>) {
    let text: String = lines.map(|n| format!("{{\"n\":{n}}}\n")).collect();
    append(path, &text);
}

/// How often each `n` of `path` arrived (duplicate deliveries of one spool entry count once).
fn numbers(mgr: &TestManager, path: &Path) -> BTreeMap<u64, usize> {
    let mut out = BTreeMap::new();
    for e in mgr.events_of_kind(kind::LOG_EVENT) {
        if e.data["log.file.path"] == path.to_string_lossy().as_ref() {
            if let Some(n) = e.data["n"].as_u64() {
                *out.entry(n).or_insert(0) += 1;
            }
        }
    }
    out
}

fn exactly_once(range: std::ops::RangeInclusive<u64>) -> BTreeMap<u64, usize> {
    range.map(|n| (n, 1)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_files_are_collected_and_a_restart_neither_loses_nor_repeats_lines() {
    let mgr = TestManager::start().await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("agent");
    enroll(&dir, mgr.enroll_options()).await.unwrap();
    let logs = tempfile::tempdir().unwrap();
    let auth = logs.path().join("auth.log");
    let app = logs.path().join("app.jsonl");
    let later = logs.path().join("later.log");
    append(
        &auth,
        "Mar  5 10:00:01 web1 sshd[4242]: Failed password for invalid user admin from 198.51.100.23 port 40000 ssh2\n",
    );
    append_numbered(&app, 1..=50);
    let file = |p: &Path, format: Option<&str>| LogFileSource {
        path: p.to_string_lossy().into_owned(),
        format: format.map(String::from),
    };
    mgr.rec().policy = Policy {
        version: 1,
        logs: Some(LogCollectionPolicy {
            files: vec![file(&auth, Some("authlog")), file(&app, Some("json")), file(&later, None)],
            poll_ms: 100,
        }),
        ..Policy::default()
    };

    let agent = RunningAgent::start(&dir, run_options());
    assert!(wait_until(LIMIT, || numbers(&mgr, &app).len() == 50).await, "the first 50 lines");
    let ssh = mgr
        .events_of_kind(kind::LOG_EVENT)
        .into_iter()
        .find(|e| e.data["log.file.path"] == auth.to_string_lossy().as_ref())
        .expect("the sshd line");
    assert_eq!(ssh.data["user.name"], "admin", "{}", ssh.data);
    assert_eq!(ssh.data["source.ip"], "198.51.100.23");
    assert_eq!(ssh.data["mamori.logsource.service"], "sshd");
    assert_eq!(numbers(&mgr, &app)[&1], 1);
    assert_eq!(
        mgr.events_of_kind(kind::LOG_EVENT)
            .iter()
            .find(|e| e.data["n"] == 1)
            .map(|e| e.data["host.name"].clone()),
        Some("ward-3-pc".into()),
        "lines without a host get the agent's name"
    );
    assert!(
        wait_until(LIMIT, || mgr
            .events_of_kind(kind::LOG_PROBLEM)
            .iter()
            .any(|e| e.data["event.action"] == "log_file_missing"))
        .await,
        "the missing file is reported"
    );
    agent.stop().await.unwrap();

    // Written while the agent is stopped, with a rotation in the middle.
    append_numbered(&app, 51..=80);
    std::fs::rename(&app, logs.path().join("app.jsonl.1")).unwrap();
    append_numbered(&app, 81..=100);
    let agent = RunningAgent::start(&dir, run_options());
    assert!(wait_until(LIMIT, || numbers(&mgr, &app).len() == 100).await, "all 100 lines");
    append(&later, "{\"late\":true}\n");
    assert!(
        wait_until(LIMIT, || mgr.events_of_kind(kind::LOG_EVENT).iter().any(|e| e.data["late"] == true))
            .await,
        "the file that appeared later is read"
    );
    agent.stop().await.unwrap();
    assert_eq!(numbers(&mgr, &app), exactly_once(1..=100), "no line lost or repeated");
    let missing_reports = mgr
        .events_of_kind(kind::LOG_PROBLEM)
        .iter()
        .filter(|e| e.data["event.action"] == "log_file_missing")
        .count();
    // Once per agent run: both runs looked before the file appeared.
    assert_eq!(missing_reports, 2);
}
