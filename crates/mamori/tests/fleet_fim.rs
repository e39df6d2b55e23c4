//! File integrity monitoring through the whole fleet: a real manager and a real agent process,
//! a FIM policy set with `mamori policy set`, changes made by other processes, and the events
//! read back from the manager's store: who-data (fanotify as root), on-write scanning and the
//! quarantine response (dry run first).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::fleet::*;
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(20);

fn set_policy(site: &Site, policy: &Value) {
    let file = site.dir.path().join(format!("policy-{}.json", unique()));
    std::fs::write(&file, policy.to_string()).expect("policy file");
    let out = mamori(&["policy", "set", &file.display().to_string(), "--data", &site.data_arg()], &[]);
    assert_eq!(out.code, 0, "policy set failed: {}", out.stderr);
}

fn datas(site: &Site, agent: &str, kind: &str) -> Vec<Value> {
    site.events(agent, kind).iter().map(|e| serde_json::from_str(&e.data).expect("event JSON")).collect()
}

/// Waits for an event of `kind` matching `pred` and returns it.
fn wait_event(site: &Site, agent: &str, kind: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let mut found = None;
    wait_for(what, LIMIT, || {
        found = datas(site, agent, kind).into_iter().find(|v| pred(v));
        found.is_some()
    });
    found.expect("found")
}

fn path_is(v: &Value, p: &Path) -> bool {
    v["file"]["path"] == p.to_string_lossy().as_ref()
}

/// A watched directory (canonical: fanotify reports resolved paths).
fn watched(site: &Site) -> PathBuf {
    let w = site.dir.path().join("watched");
    std::fs::create_dir_all(&w).expect("mkdir");
    w.canonicalize().expect("canonical")
}

fn fim_policy(dir: &Path, response: Value) -> Value {
    json!({
        "heartbeat_secs": 5,
        "fim": {"paths": [dir.display().to_string()], "check_every_secs": 86400},
        "response": response,
    })
}

fn start(site: &Site, policy: &Value) -> (String, Proc) {
    let id = site.enroll("host");
    set_policy(site, policy);
    let agent = site.run_agent("host", &[]);
    wait_event(site, &id, "fim.check", "the FIM baseline", |v| v["mamori"]["fim"]["phase"] == "baseline");
    (id, agent)
}

fn sh(script: &str) {
    let status = Command::new("/bin/sh").args(["-c", script]).status().expect("run /bin/sh");
    assert!(status.success(), "{script}: {status:?}");
}

/// Unix ms of an RFC 3339 UTC time as the agent writes it (`2026-11-23T08:52:06.123456789Z`).
fn rfc3339_ms(s: &str) -> i64 {
    let num = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap_or_else(|_| panic!("bad time {s}"));
    assert!(s.ends_with('Z'), "not UTC: {s}");
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    let (hh, mm, ss) = (num(11..13), num(14..16), num(17..19));
    let frac = s[19..s.len() - 1].trim_start_matches('.');
    let ms = if frac.is_empty() { 0 } else { format!("{frac:0<3}")[..3].parse::<i64>().expect("fraction") };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + ms
}

#[test]
fn rfc3339_parsing_matches_the_clock() {
    assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), 0);
    assert_eq!(rfc3339_ms("2000-03-01T00:00:01.5Z"), 951_868_801_500);
    assert_eq!(rfc3339_ms("2026-11-23T08:52:06.123456789Z"), 1_795_423_926_123);
}

#[test]
fn changes_are_reported_with_who_data() {
    let site = Site::new();
    let _server = site.start(&[]);
    let w = watched(&site);
    let (id, mut agent) = start(&site, &fim_policy(&w, json!({})));
    let base = wait_event(&site, &id, "fim.check", "baseline", |v| v["mamori"]["fim"]["phase"] == "baseline");
    assert_eq!(base["event"]["action"], "fim_baseline");
    assert_eq!(base["mamori"]["fim"]["files"], 0, "{base}");
    assert_eq!(base["mamori"]["fim"]["watch_mode"], if common::is_root() { "fanotify" } else { "inotify" });

    let file = w.join("new.txt");
    // The shell lingers a moment so that its executable can still be read when the event is.
    sh(&format!("echo hello > '{}'; sleep 1", file.display()));
    let created = wait_event(&site, &id, "fim.change", "file_created", |v| {
        path_is(v, &file) && v["event"]["action"] == "file_created"
    });
    eprintln!("created: {created}");
    assert_eq!(created["event"]["kind"], "event");
    assert_eq!(created["event"]["category"], json!(["file"]));
    assert_eq!(created["event"]["type"], json!(["creation"]));
    assert_eq!(created["file"]["size"], 6);
    assert_eq!(created["mamori"]["fim"]["source"], "realtime");
    assert_eq!(
        created["file"]["hash"]["blake3"].as_str().map(str::len),
        Some(64),
        "the content hash: {created}"
    );
    let shell = std::fs::canonicalize("/bin/sh").expect("/bin/sh");
    if common::is_root() {
        assert_eq!(created["process"]["executable"], shell.to_string_lossy().as_ref(), "who-data: {created}");
        assert!(created["process"]["pid"].as_u64().is_some_and(|p| p > 0), "{created}");
    } else {
        eprintln!("not root: inotify has no who-data");
    }

    let mode_before = format!(
        "{:04o}",
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions()) & 0o7777
    );
    sh(&format!("chmod 600 '{}'", file.display()));
    let attrs = wait_event(&site, &id, "fim.change", "attributes_changed", |v| {
        path_is(v, &file) && v["event"]["action"] == "attributes_changed"
    });
    assert_eq!(attrs["event"]["type"], json!(["change"]));
    assert_eq!(attrs["file"]["mode"], "0600");
    let changes = attrs["mamori"]["fim"]["changes"].as_array().expect("changes");
    assert!(
        changes.contains(&json!({"field": "mode", "before": mode_before, "after": "0600"})),
        "mode before → after: {attrs}"
    );

    sh(&format!("rm '{}'", file.display()));
    let deleted = wait_event(&site, &id, "fim.change", "file_deleted", |v| {
        path_is(v, &file) && v["event"]["action"] == "file_deleted"
    });
    assert_eq!(deleted["event"]["type"], json!(["deletion"]));
    assert_eq!(deleted["file"]["mode"], "0600", "a deletion describes what was there");
    assert!(datas(&site, &id, "scan.finding").is_empty(), "nothing malicious was written");

    // FIM does not hold up a shutdown.
    let asked = std::time::Instant::now();
    agent.stop();
    eprintln!("agent stopped {:?} after SIGTERM", asked.elapsed());
    assert!(asked.elapsed() < Duration::from_secs(5), "stopping took {:?}", asked.elapsed());
}

#[test]
fn malware_written_is_found_at_once_then_quarantined_after_the_dry_run() {
    let site = Site::new();
    let _server = site.start(&[]);
    let w = watched(&site);
    let (id, _agent) = start(&site, &fim_policy(&w, json!({"quarantine_malware": true, "dry_run": true})));

    // Dry run: found within a second or so, reported as "would quarantine", left in place.
    let first = w.join("first.com");
    let written = now_ms();
    common::write(&first, &common::eicar());
    let finding = wait_event(&site, &id, "scan.finding", "an on-write finding", |v| path_is(v, &first));
    let delay = rfc3339_ms(finding["@timestamp"].as_str().expect("@timestamp")) - written;
    eprintln!("write → on-write finding: {delay} ms");
    assert!(delay < 5000, "the on-write finding took {delay} ms");
    assert_eq!(finding["mamori"]["scan"]["trigger"], "on_write");
    assert_eq!(finding["event"]["action"], "malware_detected");
    assert_eq!(finding["rule"]["name"], "EICAR-Test-File");
    let planned = wait_event(&site, &id, "response.action", "a dry-run response", |v| path_is(v, &first));
    assert_eq!(planned["event"]["action"], "would_quarantine");
    assert_eq!(planned["event"]["outcome"], "unknown");
    assert_eq!(planned["mamori"]["response"]["dry_run"], true);
    assert_eq!(planned["mamori"]["response"]["action"], "quarantine");
    assert!(planned["mamori"]["response"]["quarantine_id"].is_null());
    assert!(first.exists(), "a dry run moves nothing");

    // For real: the response section changes (the watcher is not restarted for that).
    let applied = datas(&site, &id, "agent.policy_applied").len();
    set_policy(&site, &fim_policy(&w, json!({"quarantine_malware": true})));
    wait_for("the new policy", LIMIT, || datas(&site, &id, "agent.policy_applied").len() > applied);
    let second = w.join("second.com");
    common::write(&second, &common::eicar());
    let done = wait_event(&site, &id, "response.action", "a quarantine", |v| path_is(v, &second));
    assert_eq!(done["event"]["action"], "file_quarantined", "{done}");
    assert_eq!(done["event"]["outcome"], "success", "{done}");
    assert_eq!(done["mamori"]["response"]["dry_run"], false);
    assert_eq!(done["mamori"]["response"]["trigger"], "on_write");
    let qid = done["mamori"]["response"]["quarantine_id"].as_str().expect("quarantine id").to_string();
    assert!(!second.exists(), "the file was moved into the quarantine");
    assert!(
        site.agent_dir("host").join("quarantine/items").join(format!("{qid}.json")).exists(),
        "the item is in the agent's store"
    );
    let gone = wait_event(&site, &id, "fim.change", "the quarantined file's deletion", |v| {
        path_is(v, &second) && v["event"]["action"] == "file_deleted"
    });
    assert_eq!(gone["mamori"]["fim"]["cause"], "quarantine");

    // No loop: the quarantine's own changes trigger no further scan or response.
    std::thread::sleep(Duration::from_millis(1500));
    let findings = datas(&site, &id, "scan.finding");
    assert_eq!(findings.iter().filter(|v| path_is(v, &second)).count(), 1, "{findings:?}");
    let responses = datas(&site, &id, "response.action");
    assert_eq!(responses.iter().filter(|v| path_is(v, &second)).count(), 1, "{responses:?}");
    assert!(
        datas(&site, &id, "fim.change").iter().all(|v| !v["file"]["path"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&site.agent_dir("host").to_string_lossy().to_string())),
        "the agent's own directory is not watched"
    );
    assert!(first.exists(), "the dry-run file stays");
}
