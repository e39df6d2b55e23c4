//! The manager's `scan`, `quarantine_restore`, `quarantine_delete` and `backup_restore` commands
//! carried out by a real agent (`mamori agent run`) for a real manager (`mamori server`, with a
//! real vault for restores): queued with the admin API, the console or the CLI, delivered with
//! heartbeats over mutual TLS, results and events read back from the manager, and the agent's
//! own quarantine store, files and restored trees checked on disk.

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

/// A policy change reached the agent: one more `agent.policy_applied` than `before`.
fn set_policy_and_wait(site: &Site, agent: &str, policy: &Value) {
    let before = datas(site, agent, "agent.policy_applied").len();
    set_policy(site, policy);
    wait_for("the agent to apply the new policy", LIMIT, || {
        datas(site, agent, "agent.policy_applied").len() > before
    });
}

/// The one directory a restore made under `base`: `<first 12 of snapshot>-<YYYYMMDDTHHMMSSZ>`,
/// then `-2`, `-3`, ... when that was taken.
fn assert_restore_dir_name(dir: &Path, base: &Path, snapshot: &str) {
    assert_eq!(dir.parent(), Some(base), "{} is not directly under {}", dir.display(), base.display());
    let name = dir.file_name().and_then(|n| n.to_str()).expect("name");
    let rest = name.strip_prefix(&format!("{}-", &snapshot[..12])).unwrap_or_else(|| panic!("{name}"));
    let (stamp, suffix) = rest.split_at(16);
    let b = stamp.as_bytes();
    assert!(
        b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit) && b[8] == b'T' && b[15] == b'Z',
        "{name}: the time is not YYYYMMDDTHHMMSSZ"
    );
    assert!(stamp.starts_with("20"), "{name}");
    assert!(
        suffix.is_empty() || suffix.strip_prefix('-').is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n >= 2)),
        "{name}"
    );
}

#[test]
fn a_backup_snapshot_is_restored_on_command_into_a_new_private_directory() {
    use common::console::{initial_admin_password, Console};
    use common::vault::{assert_same_tree, VaultSite};

    // A manager with the console, a vault, an enrolled agent `ward-pc`.
    let console_addr = format!("127.0.0.1:{}", free_port());
    let mut v = VaultSite::new(&["--console", &console_addr, "--institution", "みなと総合病院"]);
    v.start(&[]);
    wait_for("the console to listen", LIMIT, || std::net::TcpStream::connect(&console_addr).is_ok());
    let site = &v.site;
    let id = mamori_agent::device_identity(&site.agent_dir("ward-pc")).expect("identity").device_id;
    let base = site.dir.path().canonicalize().expect("canonical");

    // A small tree with real files: several chunks, an executable 0750 script, a symlink, an
    // empty directory.
    let share = base.join("share");
    common::write(&share.join("notes.txt"), b"ward 3 handover: bed 12 needs a new line");
    common::write(&share.join("sub/scan.dcm"), &noise(300_000));
    common::write(&share.join("bin/rotate.sh"), b"#!/bin/sh\necho rotate\n");
    std::fs::set_permissions(share.join("bin/rotate.sh"), std::fs::Permissions::from_mode(0o750))
        .expect("chmod");
    std::os::unix::fs::symlink("sub/scan.dcm", share.join("latest.dcm")).expect("symlink");
    std::fs::create_dir_all(share.join("empty")).expect("mkdir");
    let restores = base.join("restores");
    let share_arg = share.display().to_string();
    let backed_up_bytes: u64 = ["notes.txt", "sub/scan.dcm", "bin/rotate.sh"]
        .iter()
        .map(|f| std::fs::metadata(share.join(f)).expect("file").len())
        .sum();

    // A restore directory inside the source is refused before it reaches the agent.
    let file = site.dir.path().join("bad-policy.json");
    let bad = json!({"backup": {"vault": v.url(), "sources": [&share_arg],
                                "restore_dir": share.join("restores").display().to_string()}});
    std::fs::write(&file, bad.to_string()).expect("policy file");
    let out = mamori(&["policy", "set", &file.display().to_string(), "--data", &site.data_arg()], &[]);
    assert_ne!(out.code, 0, "a restore_dir inside a source was accepted");
    assert!(out.stderr.contains("inside the backed-up source"), "{}", out.stderr);

    let policy = json!({
        "heartbeat_secs": 5,
        "backup": {"vault": v.url(), "sources": [&share_arg], "every_secs": 86400,
                   "restore_dir": restores.display().to_string()},
    });
    set_policy(site, &policy);
    let _agent = site.run_agent("ward-pc", &[]);
    let completed = wait_event(site, &id, "backup.completed", "the scheduled backup", |_| true);
    let snapshot = completed["mamori"]["backup"]["snapshot"]["name"].as_str().expect("snapshot").to_string();
    assert!(mamori_proto::is_snapshot_name(&snapshot), "{snapshot}");

    // The live tree changes after the backup (as ransomware would change it): the tree as it
    // was backed up is kept aside, untouched, to compare with.
    let pristine = base.join("share.as-backed-up");
    std::fs::rename(&share, &pristine).expect("rename");
    common::write(&share.join("notes.txt"), b"YOUR FILES ARE ENCRYPTED");
    common::write(&share.join("sub/scan.dcm.locked"), &noise(1000));

    let password = initial_admin_password(site);
    let mut admin = Console::new(site, &format!("https://{console_addr}"));
    admin.login("admin", &password, None, 0);
    let made = admin.post(
        "/api/users",
        json!({"username": "kansa", "role": "auditor", "password": "kansa-tantou-2026#"}),
    );
    assert_eq!(made.status, 200, "{made:?}");
    let mut auditor = Console::new(site, &format!("https://{console_addr}"));
    auditor.login("kansa", "kansa-tantou-2026#", None, 0);
    let route = |agent: &str, snap: &str| format!("/api/agents/{agent}/backups/{snap}/restore");

    // Refusals: an auditor may not (403, before anything else), a bad name is 400, an unknown
    // agent 404. None of them queues anything.
    let denied = auditor.post(&route(&id, &snapshot), json!({"reason": "curious"}));
    assert_eq!((denied.status, denied.body["error"].as_str()), (403, Some("forbidden")), "{denied:?}");
    let upper = snapshot.to_ascii_uppercase();
    let long = format!("{snapshot}0");
    for bad in ["latest", &snapshot[..12], &snapshot[..63], upper.as_str(), long.as_str(), "a%2F..%2F.."] {
        let r = admin.post(&route(&id, bad), json!({"reason": "x"}));
        assert_eq!(r.status, 400, "{bad}: {r:?}");
    }
    let unknown_agent = admin.post(&route("0123456789abcdef0123456789abcdef", &snapshot), json!({}));
    assert_eq!(unknown_agent.status, 404, "{unknown_agent:?}");
    let admin_api = Http::admin(site);
    let r = admin_api.request(
        Method::POST,
        &path::admin_agent_commands(&id),
        Some(&json!({"action": "backup_restore", "target": &snapshot[..12]})),
    );
    assert_eq!(r.status, 400, "a prefix through the admin API: {}", r.body);
    let r = admin_api.request(
        Method::POST,
        &path::admin_agent_commands(&id),
        Some(&json!({"action": "backup_restore"})),
    );
    assert_eq!(r.status, 400, "no target: {}", r.body);
    let listed = admin_api.request(Method::GET, &path::admin_agent_commands(&id), None);
    assert_eq!(listed.body.as_array().map(Vec::len), Some(0), "nothing queued: {}", listed.body);

    // From the console.
    let queued = admin.post(&route(&id, &snapshot), json!({"reason": "ward 3 share encrypted"}));
    assert_eq!(queued.status, 200, "{queued:?}");
    let from_console = queued.body["command"]["id"].as_str().expect("command id").to_string();
    assert_eq!(queued.body["command"]["action"], "backup_restore");
    assert_eq!(queued.body["command"]["target"], snapshot.as_str());
    let r1 = result(&admin_api, &id, &from_console);
    assert_eq!(r1["status"], "succeeded", "{r1}");

    // From the CLI (the admin API), waiting for the agent's answer.
    let data = site.data_arg();
    let cli = mamori(
        &[
            "agent",
            "restore",
            &id,
            "--snapshot",
            &snapshot,
            "--reason",
            "second copy",
            "--wait",
            "60",
            "--data",
            &data,
        ],
        &[],
    );
    assert_eq!(cli.code, 0, "{}{}", cli.stdout, cli.stderr);
    let from_cli = common::commands::queued_id(&cli);
    assert!(cli.stdout.contains("carried out backup_restore"), "{}", cli.stdout);
    let r2 = result(&admin_api, &id, &from_cli);
    assert_eq!(r2["status"], "succeeded", "{r2}");
    let bad_cli = mamori(&["agent", "restore", &id, "--snapshot", "latest", "--data", &data], &[]);
    assert_ne!(bad_cli.code, 0);
    assert!(bad_cli.stderr.contains("not a snapshot name"), "{}", bad_cli.stderr);

    // Two new directories, each 0700 directly under restore_dir, each holding the tree exactly
    // as it was backed up (not as it is now).
    let events = datas(site, &id, "backup.restored");
    assert_eq!(events.len(), 2, "{events:?}");
    let mut dirs = Vec::new();
    for (command, record, reason) in
        [(&from_console, &r1, "ward 3 share encrypted (console: admin)"), (&from_cli, &r2, "second copy")]
    {
        let event = events
            .iter()
            .find(|e| e["mamori"]["backup"]["restore"]["command_id"] == command.as_str())
            .unwrap_or_else(|| panic!("no backup.restored for {command}: {events:?}"));
        let restore = &event["mamori"]["backup"]["restore"];
        assert_eq!(event["event"]["action"], "backup_restored", "{event}");
        assert_eq!(event["event"]["outcome"], "success", "{event}");
        assert_eq!(restore["snapshot"]["name"], snapshot.as_str(), "{event}");
        assert_eq!(restore["reason"], reason, "{event}");
        assert_eq!(restore["files"], 3, "{event}");
        assert_eq!(restore["symlinks"], 1, "{event}");
        let bytes = restore["bytes"].as_u64().expect("bytes");
        assert_eq!(bytes, backed_up_bytes, "{event}");
        let dir = std::path::PathBuf::from(restore["target"].as_str().expect("target"));
        // The command's message says the same.
        let m = message(record);
        assert_eq!(event["message"], m, "{event}");
        assert!(m.contains(&snapshot) && m.contains(&dir.display().to_string()), "{m}");
        assert!(m.contains("3 files") && m.contains(&format!("{bytes} bytes")), "{m}");

        assert_restore_dir_name(&dir, &restores, &snapshot);
        let meta = std::fs::symlink_metadata(&dir).expect("restore dir");
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o700, "{}", dir.display());
        let restored = dir.join(share.strip_prefix("/").expect("absolute"));
        assert_same_tree(&restored, &pristine);
        assert_eq!(
            std::fs::metadata(restored.join("bin/rotate.sh")).expect("script").permissions().mode() & 0o7777,
            0o750
        );
        assert_eq!(std::fs::read_link(restored.join("latest.dcm")).expect("link"), Path::new("sub/scan.dcm"));
        assert_eq!(
            std::fs::read(restored.join("notes.txt")).expect("notes"),
            b"ward 3 handover: bed 12 needs a new line"
        );
        assert!(!restored.join("sub/scan.dcm.locked").exists());
        dirs.push(dir);
    }
    assert_ne!(dirs[0], dirs[1], "a second restore gets a new directory");
    assert_eq!(
        std::fs::read(share.join("notes.txt")).expect("live"),
        b"YOUR FILES ARE ENCRYPTED",
        "live tree untouched"
    );
    assert_eq!(std::fs::read_dir(&restores).expect("restores").count(), 2);

    // The audit log: the console's and the CLI's restores with the snapshot, the auditor's
    // refusal. (Before the slow part below: the console closes a connection idle for 30 s.)
    let audit = admin.get("/api/audit?limit=1000");
    assert_eq!(audit.status, 200, "{audit:?}");
    let records = audit.body["records"].as_array().expect("records").clone();
    let restore_by = |actor: &str, command: &str| {
        records.iter().find(|r| {
            r["actor"] == actor
                && r["action"] == "agent.backup_restore"
                && r["target"] == id.as_str()
                && r["detail"]["command"] == command
        })
    };
    for (actor, command) in [("user:admin", &from_console), ("admin-token", &from_cli)] {
        let row =
            restore_by(actor, command).unwrap_or_else(|| panic!("no audit row for {actor}: {records:?}"));
        assert_eq!(row["detail"]["snapshot"], snapshot.as_str(), "{row}");
    }
    assert!(
        records.iter().any(|r| r["actor"] == "user:kansa" && r["action"] == "access.denied"),
        "the auditor's refusal is audited: {records:?}"
    );
    assert_eq!(admin.post("/api/audit/verify", json!({})).body["ok"], true);

    // Failures end the command with a clear message and no event: an unknown snapshot, a vault
    // that cannot be reached, no backup section.
    let unknown = if snapshot.starts_with('0') { "f".repeat(64) } else { "0".repeat(64) };
    let c = queue(&admin_api, &id, "backup_restore", &unknown, "");
    let r = result(&admin_api, &id, &c);
    assert_eq!(r["status"], "failed", "{r}");
    assert!(message(&r).contains(&format!("has no snapshot {unknown} of this host")), "{r}");
    let dead_vault = format!("https://127.0.0.1:{}", free_port());
    set_policy_and_wait(
        site,
        &id,
        &json!({"heartbeat_secs": 5, "backup": {"vault": dead_vault, "sources": [&share_arg],
                "every_secs": 86400, "restore_dir": restores.display().to_string()}}),
    );
    let c = queue(&admin_api, &id, "backup_restore", &snapshot, "");
    let r = result(&admin_api, &id, &c);
    assert_eq!(r["status"], "failed", "{r}");
    assert!(message(&r).contains("cannot reach the vault"), "{r}");
    set_policy_and_wait(site, &id, &json!({"heartbeat_secs": 5}));
    let c = queue(&admin_api, &id, "backup_restore", &snapshot, "");
    let r = result(&admin_api, &id, &c);
    assert_eq!(r["status"], "failed", "{r}");
    assert!(message(&r).contains("no backup section"), "{r}");
    assert_eq!(datas(site, &id, "backup.restored").len(), 2, "failures make no backup.restored");
    assert_eq!(std::fs::read_dir(&restores).expect("restores").count(), 2, "failures create nothing");
}
