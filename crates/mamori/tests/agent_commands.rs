//! The manager's `scan`, `quarantine_restore` and `quarantine_delete` commands carried out by a
//! real agent (`mamori agent run`) for a real manager (`mamori server`): queued with the admin
//! API, delivered with heartbeats over mutual TLS, results and events read back from the
//! manager, and the agent's own quarantine store and files checked on disk.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::commands::Http;
use common::fleet::*;
use mamori_proto::path;
use reqwest::Method;
use serde_json::{json, Value};

/// A command is delivered at the agent's next heartbeat (every 5 s, the policy's minimum).
const LIMIT: Duration = Duration::from_secs(60);

fn set_policy(site: &Site, policy: &Value) {
    let file = site.dir.path().join(format!("policy-{}.json", unique()));
    std::fs::write(&file, policy.to_string()).expect("policy file");
    let out = mamori(&["policy", "set", &file.display().to_string(), "--data", &site.data_arg()], &[]);
    assert_eq!(out.code, 0, "policy set failed: {}", out.stderr);
}

/// Queues a command with the admin API and returns its id.
fn queue(admin: &Http, agent: &str, action: &str, target: &str, reason: &str) -> String {
    let body = json!({"action": action, "target": target, "reason": reason});
    let answer = admin.request(Method::POST, &path::admin_agent_commands(agent), Some(&body));
    assert_eq!(answer.status, 200, "queueing {action}: {}", answer.body);
    answer.body["id"].as_str().expect("command id").to_string()
}

/// Waits for the agent's result of `command` and returns the command's record.
fn result(admin: &Http, agent: &str, command: &str) -> Value {
    let mut found = Value::Null;
    wait_for(&format!("the result of command {command}"), LIMIT, || {
        let answer = admin.request(Method::GET, &path::admin_agent_commands(agent), None);
        assert_eq!(answer.status, 200, "{}", answer.body);
        found = answer
            .body
            .as_array()
            .and_then(|list| list.iter().find(|c| c["id"] == command).cloned())
            .unwrap_or(Value::Null);
        found["status"] == "succeeded" || found["status"] == "failed"
    });
    eprintln!("command {command}: {found}");
    found
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

fn message(record: &Value) -> &str {
    record["message"].as_str().unwrap_or_default()
}

#[test]
fn a_scan_command_finds_malware_once_at_a_time_and_needs_scan_paths() {
    let site = Site::new();
    let _server = site.start(&[]);
    let id = site.enroll("host");
    let target = site.dir.path().canonicalize().expect("canonical").join("target");
    common::write(&target.join("notes.txt"), b"ward rota");
    common::write(&target.join("sub/eicar.com"), &common::eicar());
    for i in 0..200 {
        common::write(&target.join(format!("bulk/{i}.txt")), format!("chart {i}").as_bytes());
    }
    let eicar = target.join("sub/eicar.com").display().to_string();
    // Nothing scheduled, no quarantine: only the command scans, and the file stays.
    set_policy(
        &site,
        &json!({"heartbeat_secs": 5, "response": {"isolation": {"clean_scan_paths": [target.display().to_string()]}}}),
    );
    let admin = Http::admin(&site);
    // Both queued before the agent starts, so they come with the same heartbeat.
    let first = queue(&admin, &id, "scan", "", "weekly check");
    let second = queue(&admin, &id, "scan", "", "");
    let _agent = site.run_agent("host", &[]);

    let (a, b) = (result(&admin, &id, &first), result(&admin, &id, &second));
    let (done, refused) = if a["status"] == "succeeded" { (a, b) } else { (b, a) };
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(refused["status"], "failed", "{refused}");
    assert!(message(&refused).contains("a scan is already running"), "{refused}");
    let scan_id = done["id"].as_str().expect("id").to_string();
    let m = message(&done);
    assert!(m.starts_with("malware found: 202 files checked under"), "{m}");
    assert!(m.contains("1 with findings, 0 quarantined, 0 errors"), "{m}");

    let finding = wait_event(&site, &id, "scan.finding", "the EICAR finding", |v| v["file"]["path"] == eicar);
    assert_eq!(finding["mamori"]["scheduled_scan"]["name"], "manager-command", "{finding}");
    assert_eq!(finding["mamori"]["scheduled_scan"]["command_id"], scan_id.as_str(), "{finding}");
    assert_eq!(datas(&site, &id, "scan.finding").len(), 1, "one file with one finding, scanned once");
    let summary = wait_event(&site, &id, "scan.summary", "the summary", |v| {
        v["mamori"]["scheduled_scan"]["command_id"] == scan_id.as_str()
    });
    assert_eq!(summary["mamori"]["scan"]["infected_files"], 1, "{summary}");
    assert_eq!(summary["mamori"]["scan"]["files_scanned"], 202, "{summary}");
    assert_eq!(datas(&site, &id, "scan.summary").len(), 1, "the refused scan did not run");
    assert!(Path::new(&eicar).exists(), "no quarantine in this policy");

    // A policy that names nothing to scan.
    set_policy(&site, &json!({"heartbeat_secs": 5}));
    let nothing = queue(&admin, &id, "scan", "", "");
    let r = result(&admin, &id, &nothing);
    assert_eq!(r["status"], "failed", "{r}");
    assert!(message(&r).starts_with("no scan paths in the policy"), "{r}");
}

/// `len` bytes that no rule matches and that differ from chunk to chunk (xorshift).
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn quarantined_files_are_restored_bit_exact_or_deleted_on_command() {
    let site = Site::new();
    let _server = site.start(&[]);
    let id = site.enroll("host");
    let base = site.dir.path().canonicalize().expect("canonical");
    let target = base.join("target");
    let idle = base.join("idle");
    std::fs::create_dir_all(&idle).expect("mkdir");
    // A hash indicator makes any content "malware": here a 200 kB file over several of the
    // store's 64 KiB chunks, with an unusual mode.
    let content = noise(200_000);
    let file = target.join("scan-result.dat");
    common::write(&file, &content);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let before = std::fs::metadata(&file).expect("metadata");
    let iocs = base.join("iocs.txt");
    let sha256 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&content))
    };
    std::fs::write(&iocs, format!("{sha256};Test-IOC\n")).expect("hash list");
    set_policy(
        &site,
        &json!({
            "heartbeat_secs": 5,
            // Brings the hash list into the policy; scans an empty directory once at start.
            "scans": [{"name": "idle", "paths": [idle.display().to_string()], "every_secs": 86400,
                       "hashes": [iocs.display().to_string()]}],
            "response": {"quarantine_malware": true,
                         "isolation": {"clean_scan_paths": [target.display().to_string()]}},
        }),
    );
    let admin = Http::admin(&site);
    let _agent = site.run_agent("host", &[]);
    let store_dir = site.agent_dir("host").join("quarantine");
    let file_s = file.display().to_string();
    let quarantined_other_than = |previous: Option<&str>| {
        wait_event(&site, &id, "response.action", "the file's quarantine", |v| {
            v["event"]["action"] == "file_quarantined"
                && v["event"]["outcome"] == "success"
                && v["file"]["path"] == file_s.as_str()
                && v["mamori"]["response"]["quarantine_id"].as_str() != previous
        })["mamori"]["response"]["quarantine_id"]
            .as_str()
            .expect("quarantine id")
            .to_string()
    };

    let scan = queue(&admin, &id, "scan", "", "");
    assert_eq!(result(&admin, &id, &scan)["status"], "succeeded");
    let first = quarantined_other_than(None);
    assert!(!file.exists(), "moved into the quarantine");

    // A file appeared at the path meanwhile: not overwritten. An unknown id: refused.
    std::fs::write(&file, b"the new scan result").expect("write");
    let unknown_id = if first == "0123456789abcdef" { "fedcba9876543210" } else { "0123456789abcdef" };
    let blocked = queue(&admin, &id, "quarantine_restore", &first, "false positive");
    let unknown = queue(&admin, &id, "quarantine_delete", unknown_id, "");
    let r = result(&admin, &id, &blocked);
    assert_eq!(r["status"], "failed", "{r}");
    assert!(message(&r).contains("refusing to overwrite"), "{r}");
    assert_eq!(std::fs::read(&file).expect("read"), b"the new scan result");
    let r = result(&admin, &id, &unknown);
    assert_eq!(r["status"], "failed", "{r}");
    assert!(message(&r).contains(&format!("no quarantined item {unknown_id}")), "{r}");

    std::fs::remove_file(&file).expect("rm");
    let restore = queue(&admin, &id, "quarantine_restore", &first, "false positive");
    let r = result(&admin, &id, &restore);
    assert_eq!(r["status"], "succeeded", "{r}");
    assert!(message(&r).contains(&file_s) && message(&r).contains("mode 0640"), "{r}");
    assert!(std::fs::read(&file).expect("restored") == content, "not bit-exact");
    let after = std::fs::metadata(&file).expect("metadata");
    assert_eq!(after.permissions().mode() & 0o7777, 0o640);
    assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
    assert_eq!((after.mtime(), after.mtime_nsec()), (before.mtime(), before.mtime_nsec()));
    let event = wait_event(&site, &id, "response.action", "the restore event", |v| {
        v["event"]["action"] == "quarantine_restore"
            && v["mamori"]["response"]["command_id"] == restore.as_str()
    });
    assert_eq!(event["event"]["outcome"], "success", "{event}");
    assert_eq!(event["mamori"]["response"]["quarantine_id"], first.as_str());
    assert_eq!(event["mamori"]["response"]["trigger"], "command");
    assert_eq!(event["file"]["path"], file_s.as_str());
    for (command, outcome) in [(&blocked, "failure"), (&unknown, "failure")] {
        let e = wait_event(&site, &id, "response.action", "the refusal events", |v| {
            v["mamori"]["response"]["command_id"] == command.as_str()
        });
        assert_eq!(e["event"]["outcome"], outcome, "{e}");
    }

    // Found again by the next scan, and this time deleted for good.
    let scan = queue(&admin, &id, "scan", "", "");
    assert_eq!(result(&admin, &id, &scan)["status"], "succeeded");
    let second = quarantined_other_than(Some(&first));
    assert!(!file.exists());
    let listed = mamori_quarantine::Store::open(&store_dir).expect("store").list().expect("list");
    assert_eq!(listed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [second.as_str()]);
    let delete = queue(&admin, &id, "quarantine_delete", &second, "confirmed malicious");
    let r = result(&admin, &id, &delete);
    assert_eq!(r["status"], "succeeded", "{r}");
    let listed = mamori_quarantine::Store::open(&store_dir).expect("store").list().expect("list");
    assert!(listed.is_empty(), "{listed:?}");
    assert!(!file.exists());
    let event = wait_event(&site, &id, "response.action", "the delete event", |v| {
        v["event"]["action"] == "quarantine_delete"
            && v["mamori"]["response"]["command_id"] == delete.as_str()
    });
    assert_eq!(event["event"]["outcome"], "success", "{event}");
    assert_eq!(event["mamori"]["response"]["quarantine_id"], second.as_str());
    assert_eq!(event["file"]["path"], file_s.as_str());
}
