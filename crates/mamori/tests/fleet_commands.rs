//! Manager → agent commands (release, isolate) with a real manager process, a real enrolled
//! identity and real mutual TLS, the agent's side played by the test: queuing with the CLI,
//! delivery with every heartbeat until the result arrives, `--wait`, refusals, the isolation
//! state in `agents list`, and persistence across a manager restart.

mod common;

use common::commands::*;
use common::fleet::*;
use mamori_proto::{path, CommandAction};
use reqwest::Method;
use serde_json::{json, Value};

fn commands_json(site: &Site, id: &str) -> Vec<Value> {
    let out = mamori(&["agent", "commands", id, "--json", "--data", &site.data_arg()], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout.lines().map(|l| serde_json::from_str(l).expect("command JSON")).collect()
}

#[test]
fn a_command_is_sent_with_every_heartbeat_until_its_result_arrives() {
    let site = Site::new();
    let _server = site.start(&[]);
    let id = site.enroll("host");
    let agent = Http::agent(&site, "host");
    assert!(agent.heartbeat(false).commands.is_empty(), "nothing queued yet");

    let out = mamori(&["agent", "release", &id, "--reason", "all clear", "--data", &site.data_arg()], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let cmd = queued_id(&out);
    assert_eq!(site.agent(&id)["pending_commands"], 1);

    for _ in 0..2 {
        let commands = agent.heartbeat(false).commands;
        assert_eq!(commands.len(), 1, "resent until the result arrives: {commands:?}");
        assert_eq!(commands[0].id, cmd);
        assert_eq!(commands[0].action, CommandAction::Release);
        assert_eq!(commands[0].reason, "all clear");
    }
    let listed = commands_json(&site, &id);
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0]["status"].as_str(), listed[0]["completed"].is_null()), (Some("pending"), true));

    let answer = agent.report(&cmd, true, "isolation lifted");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["status"], "succeeded");
    assert!(agent.heartbeat(false).commands.is_empty(), "not sent again after its result");

    // The agent did not see our answer and reports again (differently): the first result stays.
    let again = agent.report(&cmd, false, "second thoughts");
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        (again.body["status"].as_str(), again.body["message"].as_str()),
        (Some("succeeded"), Some("isolation lifted"))
    );

    let listed = commands_json(&site, &id);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], cmd.as_str());
    assert_eq!(listed[0]["action"], "release");
    assert_eq!(listed[0]["reason"], "all clear");
    assert_eq!(listed[0]["status"], "succeeded");
    assert_eq!(listed[0]["message"], "isolation lifted");
    assert!(listed[0]["completed"].is_string());
    assert_eq!(site.agent(&id)["pending_commands"], 0);

    let table = mamori(&["agent", "commands", &id, "--data", &site.data_arg()], &[]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    let header = table.stdout.lines().next().unwrap_or_default();
    for column in ["ID", "ACTION", "STATUS", "CREATED", "COMPLETED", "MESSAGE"] {
        assert!(header.contains(column), "{column} missing from {header}");
    }
    assert!(table.stdout.contains(&cmd) && table.stdout.contains("isolation lifted"), "{}", table.stdout);
}

#[test]
fn wait_reports_success_failure_and_timeout() {
    let site = Site::new();
    let _server = site.start(&[]);
    let id = site.enroll("host");
    let agent = Http::agent(&site, "host");
    let data = site.data_arg();

    let waiting =
        spawn_cli(&["agent", "isolate", &id, "--reason", "canary touched", "--wait", "60", "--data", &data]);
    let isolate = agent.next_command(&[]);
    assert_eq!((isolate.action, isolate.reason.as_str()), (CommandAction::Isolate, "canary touched"));
    assert_eq!(
        agent.report(&isolate.id, true, "isolated; manager and 2 allow-list entries reachable").status,
        200
    );
    let out = finish(waiting);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(&isolate.id), "{}", out.stdout);
    assert!(out.stdout.contains("2 allow-list entries reachable"), "{}", out.stdout);

    let waiting = spawn_cli(&["agent", "release", &id, "--wait", "60", "--data", &data]);
    let release = agent.next_command(&[]);
    assert_eq!(release.action, CommandAction::Release);
    assert_eq!(agent.report(&release.id, false, "nft: Operation not permitted").status, 200);
    let out = finish(waiting);
    assert_eq!(out.code, 1, "a failed result exits 1: {}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("failed") && out.stderr.contains("nft: Operation not permitted"),
        "{}",
        out.stderr
    );

    // Nobody answers: exit 2, and the command stays queued for the agent.
    let out = mamori(&["agent", "release", &id, "--wait", "1", "--data", &data], &[]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("no result"), "{}", out.stderr);
    let late = queued_id(&out);
    assert_eq!(agent.heartbeat(false).commands.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), vec![late]);
}

#[test]
fn an_agent_cannot_report_on_another_agents_command() {
    let site = Site::new();
    let _server = site.start(&[]);
    let a = site.enroll("host-a");
    let _b = site.enroll("host-b");
    let (agent_a, agent_b) = (Http::agent(&site, "host-a"), Http::agent(&site, "host-b"));

    let out = mamori(&["agent", "isolate", &a, "--data", &site.data_arg()], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let cmd = queued_id(&out);
    assert!(agent_b.heartbeat(false).commands.is_empty(), "b is not given a's command");

    let stolen = agent_b.report(&cmd, true, "done (not really)");
    assert_eq!(stolen.status, 404, "{}", stolen.body);
    assert_eq!(stolen.body["error"], "unknown_command");
    assert_eq!(agent_b.report("00000000000000000000000000000000", true, "").status, 404);
    assert_eq!(agent_b.report(&"f".repeat(500), true, "").status, 404);
    let anonymous = Http::anonymous(&site).report(&cmd, true, "");
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);

    assert_eq!(commands_json(&site, &a)[0]["status"], "pending", "nothing was recorded");
    assert_eq!(agent_a.heartbeat(false).commands[0].id, cmd);
    assert_eq!(agent_a.report(&cmd, true, "ok").status, 200);
}

#[test]
fn commands_for_unknown_revoked_or_replaced_agents_are_refused() {
    let site = Site::new();
    let _server = site.start(&[]);
    let data = site.data_arg();
    let id = site.enroll("host");
    let admin = Http::admin(&site);
    let route = path::admin_agent_commands(&id);

    let bad = admin.request(Method::POST, &route, Some(&json!({"action": "reboot"})));
    assert_eq!(bad.status, 400, "{}", bad.body);
    let bad =
        admin.request(Method::POST, &route, Some(&json!({"action": "isolate", "reason": "x\u{1b}[2J"})));
    assert_eq!(bad.status, 400, "control characters in the reason: {}", bad.body);
    let no_token = Http::anonymous(&site).request(Method::GET, &route, None);
    assert_eq!(no_token.status, 401, "{}", no_token.body);

    let unknown = path::admin_agent_commands("0123456789abcdef0123456789abcdef");
    let answer = admin.request(Method::POST, &unknown, Some(&json!({"action": "isolate"})));
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (404, Some("unknown_agent")),
        "{}",
        answer.body
    );
    assert_eq!(admin.request(Method::GET, &unknown, None).status, 404);
    let out = mamori(&["agent", "isolate", "0123456789abcdef0123456789abcdef", "--data", &data], &[]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("no agent"), "{}", out.stderr);
    let out = mamori(&["agent", "isolate", "../tokens", "--data", &data], &[]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("not an agent id"), "{}", out.stderr);

    assert_eq!(mamori(&["agent", "revoke", &id, "--data", &data], &[]).code, 0);
    let answer = admin.request(Method::POST, &route, Some(&json!({"action": "release"})));
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (409, Some("agent_not_active")),
        "{}",
        answer.body
    );
    let out = mamori(&["agent", "release", &id, "--wait", "5", "--data", &data], &[]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stderr.contains("revoked"), "{}", out.stderr);
    // The history of a revoked agent can still be read.
    assert_eq!(admin.request(Method::GET, &route, None).status, 200);

    // A replaced identity is refused the same way.
    let old = site.enroll("other");
    let token = site.token(&[]);
    assert_eq!(site.enroll_with("other", &token, &site.fingerprint(), &["--force"]).code, 0);
    let answer =
        admin.request(Method::POST, &path::admin_agent_commands(&old), Some(&json!({"action": "isolate"})));
    assert_eq!(answer.status, 409, "{}", answer.body);
}

#[test]
fn isolation_state_and_pending_commands_survive_a_manager_restart() {
    let site = Site::new();
    let mut server = site.start(&[]);
    let data = site.data_arg();
    let id = site.enroll("host");
    assert_eq!(site.agent(&id)["isolated"], false, "false before any heartbeat");

    Http::agent(&site, "host").heartbeat(true);
    assert_eq!(site.agent(&id)["isolated"], true, "from the live heartbeat");
    let table = mamori(&["agents", "list", "--data", &data], &[]);
    assert!(table.stdout.lines().next().unwrap_or_default().contains("ISOLATED"), "{}", table.stdout);
    let row = table.stdout.lines().find(|l| l.starts_with(&id)).expect("agent row");
    assert!(row.split_whitespace().nth(2) == Some("yes"), "{row}");

    let out = mamori(&["agent", "release", &id, "--reason", "after restart", "--data", &data], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let cmd = queued_id(&out);
    server.stop();

    let mut server = site.start(&[]);
    let listed = site.agent(&id);
    assert_eq!(listed["isolated"], true, "the stored flag, before the agent is heard from again");
    assert_eq!(listed["pending_commands"], 1);
    let agent = Http::agent(&site, "host");
    let commands = agent.heartbeat(true).commands;
    assert_eq!(commands.len(), 1, "{commands:?}");
    assert_eq!((commands[0].id.as_str(), commands[0].reason.as_str()), (cmd.as_str(), "after restart"));
    assert_eq!(agent.report(&cmd, true, "released").status, 200);
    agent.heartbeat(false);
    assert_eq!(site.agent(&id)["isolated"], false);
    server.stop();

    let _server = site.start(&[]);
    let agent = Http::agent(&site, "host");
    assert!(agent.heartbeat(false).commands.is_empty(), "a completed command is not delivered again");
    let listed = site.agent(&id);
    assert_eq!((listed["isolated"].as_bool(), listed["pending_commands"].as_u64()), (Some(false), Some(0)));
    assert_eq!(commands_json(&site, &id)[0]["status"], "succeeded");
}

#[test]
fn a_response_policy_that_cannot_be_applied_is_refused_when_set() {
    let site = Site::new();
    let _server = site.start(&[]);
    let file = site.dir.path().join("policy.json");
    let set = |text: &str| {
        std::fs::write(&file, text).unwrap();
        mamori(&["policy", "set", &file.display().to_string(), "--data", &site.data_arg()], &[])
    };
    for (bad, why) in [
        (
            r#"{"response": {"isolation": {"allow": [{"cidr": "10.0.0.1; flush ruleset"}]}}}"#,
            "not an IP address",
        ),
        (r#"{"response": {"isolation": {"allow": [{"cidr": "0.0.0.0/0"}]}}}"#, "/0"),
        (
            r#"{"response": {"isolation": {"allow": [{"cidr": "10.0.0.1", "proto": "icmp"}]}}}"#,
            "unknown protocol",
        ),
        (r#"{"response": {"isolation": {"allow": [{"cidr": "10.0.0.1", "label": "a\"b"}]}}}"#, "label"),
        (r#"{"response": {"isolation": {"clean_scan_paths": ["relative"]}}}"#, "absolute"),
        (r#"{"fim": {"ransomware": {"canary_dirs": ["docs"]}}}"#, "absolute"),
        (r#"{"response": {"rules": [{"detection": "ransomware", "actions": ["reboot"]}]}}"#, "reboot"),
    ] {
        let out = set(bad);
        assert_ne!(out.code, 0, "{bad} was accepted");
        assert!(out.stderr.contains(why), "{bad}: {}", out.stderr);
    }
    let good = r#"{"response": {"rules": [{"detection": "ransomware", "min_severity": "critical", "actions": ["stop_process", "isolate"]}],
        "isolation": {"allow": [{"cidr": "10.0.0.53", "proto": "udp", "port": 53, "label": "DNS"}], "release_on_clean_scan": true}}}"#;
    assert_eq!(set(good).code, 0);
    let shown = mamori(&["policy", "show", "--data", &site.data_arg()], &[]);
    let policy: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(policy["response"]["isolation"]["allow"][0]["label"], "DNS");
    assert_eq!(policy["response"]["rules"][0]["actions"], json!(["stop_process", "isolate"]));
}
