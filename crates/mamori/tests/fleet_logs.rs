//! Log file collection through the whole fleet: a real manager and a real agent process, a
//! `logs` policy set with `mamori policy set` (bad ones refused), and a line appended to a file
//! read back from the manager's store as a parsed `log.event`.

mod common;

use std::io::Write;
use std::time::Duration;

use common::fleet::*;
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(20);

fn set_policy(site: &Site, policy: &Value) -> Output {
    let file = site.dir.path().join(format!("policy-{}.json", unique()));
    std::fs::write(&file, policy.to_string()).expect("policy file");
    mamori(&["policy", "set", &file.display().to_string(), "--data", &site.data_arg()], &[])
}

#[test]
fn a_logs_policy_sends_parsed_lines_to_the_manager() {
    let site = Site::new();
    let _server = site.start(&[]);
    let auth = site.dir.path().join("auth.log");
    let auth_arg = auth.display().to_string();

    for (bad, message) in [
        (json!({"logs": {"files": [{"path": "var/log/auth.log"}]}}), "must be absolute"),
        (json!({"logs": {"files": [{"path": &auth_arg, "format": "syslogish"}]}}), "unknown format"),
    ] {
        let out = set_policy(&site, &bad);
        assert_ne!(out.code, 0, "{bad} was accepted");
        assert!(out.stderr.contains(message), "{bad}: {}", out.stderr);
    }

    let id = site.enroll("host");
    let policy = json!({
        "heartbeat_secs": 5,
        "logs": {"files": [{"path": &auth_arg, "format": "authlog"}], "poll_ms": 200},
    });
    let out = set_policy(&site, &policy);
    assert_eq!(out.code, 0, "policy set failed: {}", out.stderr);
    let mut agent = site.run_agent("host", &[]);
    wait_for("the policy applied", LIMIT, || !site.events(&id, "agent.policy_applied").is_empty());

    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&auth).expect("auth.log");
    f.write_all(b"Mar  5 10:00:01 web1 sshd[77]: Failed password for root from 192.0.2.44 port 5022 ssh2\n")
        .expect("write");
    drop(f);
    let mut found = None;
    wait_for("the log.event", LIMIT, || {
        found = site.events(&id, "log.event").first().map(|e| e.data.clone());
        found.is_some()
    });
    let event: Value = serde_json::from_str(&found.expect("found")).expect("event JSON");
    assert_eq!(event["user.name"], "root", "{event}");
    assert_eq!(event["source.ip"], "192.0.2.44");
    assert_eq!(event["log.file.path"], auth_arg.as_str());
    agent.stop();
}
