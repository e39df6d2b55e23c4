//! File integrity monitoring in the agent against the test manager: baseline, real-time changes,
//! policy changes (restart without rebuilding, stop), restart without re-checking.
//!
//! Changes are made by child processes: the watcher ignores the agent's own process, which here
//! is the test process.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use mamori_agent::enroll;
use mamori_proto::{kind, FimPolicy, Policy};

const LIMIT: Duration = Duration::from_secs(15);

fn sh(script: &str) {
    let status = Command::new("/bin/sh").args(["-c", script]).status().unwrap();
    assert!(status.success(), "{script}");
}

fn changes_of(mgr: &TestManager, path: &Path, action: &str) -> usize {
    mgr.events_of_kind(kind::FIM_CHANGE)
        .iter()
        .filter(|e| {
            e.data["file"]["path"] == path.to_string_lossy().as_ref() && e.data["event"]["action"] == action
        })
        .count()
}

fn checks(mgr: &TestManager, phase: &str) -> usize {
    mgr.events_of_kind(kind::FIM_CHECK).iter().filter(|e| e.data["mamori"]["fim"]["phase"] == phase).count()
}

fn fim(paths: &Path, exclude: &[&str]) -> Option<FimPolicy> {
    Some(FimPolicy {
        paths: vec![paths.to_string_lossy().into_owned()],
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
        check_every_secs: 86_400,
        ..FimPolicy::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fim_follows_the_policy_and_a_restart_neither_rebuilds_nor_rechecks() {
    let mgr = TestManager::start().await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("agent");
    enroll(&dir, mgr.enroll_options()).await.unwrap();
    let tree = tempfile::tempdir().unwrap();
    let w = tree.path().canonicalize().unwrap();
    std::fs::write(w.join("a.txt"), b"a").unwrap();

    mgr.rec().policy = Policy { version: 1, fim: fim(&w, &[]), ..Policy::default() };
    let agent = RunningAgent::start(&dir, run_options());
    assert!(wait_until(LIMIT, || checks(&mgr, "baseline") == 1).await, "no baseline");
    let base = mgr.events_of_kind(kind::FIM_CHECK)[0].data.clone();
    assert_eq!(base["event"]["action"], "fim_baseline");
    assert_eq!(base["mamori"]["fim"]["files"], 1, "{base}");
    assert!(dir.join("fim/baseline.db").exists());

    let b = w.join("b.txt");
    sh(&format!("echo b > '{}'", b.display()));
    assert!(wait_until(LIMIT, || changes_of(&mgr, &b, "file_created") == 1).await, "b.txt created");

    // A changed exclude list restarts the watcher but keeps the baseline (same paths).
    mgr.rec().policy = Policy { version: 2, fim: fim(&w, &["**/*.tmp"]), ..Policy::default() };
    assert!(wait_until(LIMIT, || mgr.events_of_kind(kind::POLICY_APPLIED).len() == 2).await);
    let c = w.join("c.txt");
    let skipped = w.join("skip.tmp");
    // The restarted watcher may need a moment; write until it is seen.
    assert!(
        wait_until(LIMIT, || {
            sh(&format!("echo c >> '{}'; echo x > '{}'", c.display(), skipped.display()));
            changes_of(&mgr, &c, "file_created") == 1
        })
        .await,
        "c.txt created after the restart"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(changes_of(&mgr, &skipped, "file_created"), 0, "excluded");
    assert_eq!(checks(&mgr, "baseline"), 1, "the baseline was not rebuilt for an exclude change");
    agent.stop().await.unwrap();

    // A restart: same paths, recent baseline: neither a rebuild nor a check; real time works.
    let agent = RunningAgent::start(&dir, run_options());
    let d = w.join("d.txt");
    let seen = wait_until(LIMIT, || {
        sh(&format!("echo d >> '{}'", d.display()));
        changes_of(&mgr, &d, "file_created") == 1
    })
    .await;
    assert!(
        seen,
        "d.txt created after the agent restarted: {:#?} {:#?}",
        mgr.events_of_kind(kind::FIM_CHECK),
        mgr.events_of_kind(kind::FIM_CHANGE)
    );
    assert_eq!(checks(&mgr, "baseline"), 1, "no rebuild after a restart");
    assert_eq!(checks(&mgr, "check"), 0, "no full check right after a restart");

    agent.stop().await.unwrap();

    // A change made while the agent is down is found by the next full check, which is due at
    // once when the last one is long past.
    let a = w.join("a.txt");
    sh(&format!("echo changed > '{}'", a.display()));
    let state_file = dir.join("fim/state.json");
    let mut st: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    assert!(st["last_check_end_ms"].as_i64().is_some(), "{st}");
    st["last_check_end_ms"] = serde_json::json!(1);
    std::fs::write(&state_file, st.to_string()).unwrap();
    let agent = RunningAgent::start(&dir, run_options());
    assert!(wait_until(LIMIT, || checks(&mgr, "check") == 1).await, "no full check");
    let modified: Vec<_> = mgr
        .events_of_kind(kind::FIM_CHANGE)
        .into_iter()
        .filter(|e| e.data["file"]["path"] == a.to_string_lossy().as_ref())
        .collect();
    assert_eq!(modified.len(), 1, "{modified:?}");
    assert_eq!(modified[0].data["event"]["action"], "file_modified");
    assert_eq!(modified[0].data["mamori"]["fim"]["source"], "check");
    let summary =
        mgr.events_of_kind(kind::FIM_CHECK).into_iter().find(|e| e.data["mamori"]["fim"]["phase"] == "check");
    let summary = summary.unwrap().data;
    assert_eq!(summary["event"]["action"], "fim_check");
    assert!(summary["mamori"]["fim"]["changes"].as_u64().unwrap() >= 1, "{summary}");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    assert!(saved["last_check_end_ms"].as_i64().unwrap() > 1, "the check end is saved");

    // FIM off: changes are no longer reported.
    mgr.rec().policy = Policy { version: 3, fim: None, ..Policy::default() };
    assert!(wait_until(LIMIT, || mgr.events_of_kind(kind::POLICY_APPLIED).len() == 3).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = w.join("e.txt");
    sh(&format!("echo e > '{}'", e.display()));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(changes_of(&mgr, &e, "file_created"), 0, "FIM stopped");
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_scans_follow_the_response_policy_in_dry_run() {
    let mgr = TestManager::start().await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("agent");
    enroll(&dir, mgr.enroll_options()).await.unwrap();
    let tree = tempfile::tempdir().unwrap();
    let infected = tree.path().join("eicar.com");
    std::fs::write(&infected, eicar()).unwrap();

    mgr.rec().policy = Policy {
        version: 1,
        scans: vec![mamori_proto::ScheduledScan {
            name: "daily".into(),
            paths: vec![tree.path().to_string_lossy().into_owned()],
            every_secs: 3600,
            rules: vec![],
            hashes: vec![],
            exclude: vec![],
            quarantine: false,
        }],
        response: mamori_proto::ResponsePolicy {
            dry_run: true,
            quarantine_malware: true,
            ..Default::default()
        },
        ..Policy::default()
    };
    let agent = RunningAgent::start(&dir, run_options());
    assert!(wait_until(LIMIT, || !mgr.events_of_kind(kind::SCAN_SUMMARY).is_empty()).await, "no summary");
    agent.stop().await.unwrap();
    let actions = mgr.events_of_kind(kind::RESPONSE_ACTION);
    assert_eq!(actions.len(), 1, "{actions:?}");
    let a = &actions[0].data;
    assert_eq!(a["event"]["action"], "would_quarantine");
    assert_eq!(a["event"]["outcome"], "unknown");
    assert_eq!(a["file"]["path"], infected.to_string_lossy().as_ref());
    assert_eq!(a["mamori"]["response"]["dry_run"], true);
    assert_eq!(a["mamori"]["response"]["trigger"], "scheduled");
    assert_eq!(a["mamori"]["scheduled_scan"]["name"], "daily");
    assert!(infected.exists(), "a dry run moves nothing");
    let summary = &mgr.events_of_kind(kind::SCAN_SUMMARY)[0].data;
    assert_eq!(summary["mamori"]["scan"]["quarantined"], 0);
    assert_eq!(summary["mamori"]["scan"]["exit_code"], 1);
}
