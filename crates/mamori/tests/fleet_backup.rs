//! Scheduled backups through the whole fleet: a real manager, vault and agent process; a
//! `backup` policy set with `mamori policy set` (bad ones refused); the agent backs its sources
//! up to the vault and the manager receives a `backup.completed` naming the snapshot.

mod common;

use std::time::Duration;

use common::fleet::*;
use common::vault::VaultSite;
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(20);

fn set_policy(site: &Site, policy: &Value) -> Output {
    let file = site.dir.path().join(format!("policy-{}.json", unique()));
    std::fs::write(&file, policy.to_string()).expect("policy file");
    mamori(&["policy", "set", &file.display().to_string(), "--data", &site.data_arg()], &[])
}

#[test]
fn a_backup_policy_makes_the_agent_back_up_to_the_vault() {
    let mut v = VaultSite::new(&[]);
    v.start(&[]);
    let site = &v.site;
    let id = mamori_agent::device_identity(&site.agent_dir("ward-pc")).expect("identity").device_id;

    let share = site.dir.path().join("share");
    for (name, data) in [("notes.txt", &b"ward 3 handover"[..]), ("sub/scan.dcm", &[7u8; 50_000][..])] {
        common::write(&share.join(name), data);
    }
    let share_arg = share.display().to_string();

    for (bad, message) in [
        (json!({"backup": {"vault": "http://127.0.0.1:1", "sources": [&share_arg]}}), "https://"),
        (json!({"backup": {"vault": v.url(), "sources": ["share"]}}), "must be absolute"),
        (json!({"backup": {"vault": v.url(), "sources": [&share_arg], "every_secs": 5}}), "every_secs"),
    ] {
        let out = set_policy(site, &bad);
        assert_ne!(out.code, 0, "{bad} was accepted");
        assert!(out.stderr.contains(message), "{bad}: {}", out.stderr);
    }

    let policy = json!({
        "heartbeat_secs": 5,
        "backup": {"vault": v.url(), "sources": [&share_arg], "excludes": ["*.tmp"], "every_secs": 600},
    });
    let out = set_policy(site, &policy);
    assert_eq!(out.code, 0, "policy set failed: {}", out.stderr);
    let mut agent = site.run_agent("ward-pc", &[]);

    let mut completed = None;
    wait_for("the backup.completed event", LIMIT, || {
        completed = site.events(&id, "backup.completed").first().map(|e| e.data.clone());
        completed.is_some()
    });
    let event: Value = serde_json::from_str(&completed.expect("found")).expect("event JSON");
    let backup = &event["mamori"]["backup"];
    let name = backup["snapshot"]["name"].as_str().expect("snapshot name").to_string();
    assert_eq!(backup["files"], 2, "{event}");
    assert_eq!(backup["snapshot"]["suspicious"], false, "{event}");
    assert_eq!(backup["problems_count"], 0, "{event}");
    assert!(backup["bytes_uploaded"].as_u64().expect("bytes_uploaded") > 0, "{event}");

    let snapshots = v.snapshots();
    assert_eq!(snapshots.len(), 1, "one backup per interval: {snapshots:?}");
    assert_eq!(snapshots[0]["name"], name.as_str());
    assert_eq!(
        snapshots[0]["paths"],
        json!([std::fs::canonicalize(&share).expect("share").display().to_string()])
    );
    assert!(site.events(&id, "backup.failed").is_empty());
    agent.stop();

    // A restart does not back up again before the interval is over.
    let mut agent = site.run_agent("ward-pc", &[]);
    wait_for("the restarted agent", LIMIT, || site.events(&id, "agent.started").len() >= 2);
    std::thread::sleep(Duration::from_secs(2));
    agent.stop();
    assert!(!agent.log().contains("scheduled backup starting"), "{}", agent.log());
    assert_eq!(v.snapshots().len(), 1, "a restart must not back up again at once");
    assert_eq!(site.events(&id, "backup.completed").len(), 1);
}
