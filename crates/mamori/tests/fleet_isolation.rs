//! Host isolation through the real agent, in network namespaces made per test.
//!
//! Topology: namespaces `agent`, `peer` and `manager`, each with `eth0` on a bridge in a fourth
//! `hub` namespace (nothing is created on the host's own network): 10.79.0.1 / .2 / .3. The
//! manager (`mamori server`) and the admin CLI run in `manager`, the agent (`mamori agent run`)
//! in `agent`; the peer has TCP echo listeners on port 80 (not allow-listed) and 5432
//! (allow-listed), the agent one on port 22. The host's ruleset is checked unchanged at the end.
//!
//! Skipped, saying so, unless root with `ip` and `nft`.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fleet::{device_id, unique, wait_for, Output, Proc, BIN};
use mamori_proto::kind;
use mamori_store::{EventFilter, Store};
use serde_json::{json, Value};

const AGENT: &str = "10.79.0.1";
const PEER: &str = "10.79.0.2";
const MANAGER: &str = "10.79.0.3";
const MANAGER_PORT: u16 = 8443;
const WEB: u16 = 80;
const DB: u16 = 5432;
const SSH: u16 = 22;
const LIMIT: Duration = Duration::from_secs(90);

use mamori_netlab::{connects, listen, sa};

struct Lab {
    net: mamori_netlab::Lab,
    agent: String,
    peer: String,
    manager: String,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Option<Lab> {
        let net = mamori_netlab::Lab::new(
            "isolation through the agent",
            &["agent", "peer", "manager"],
            "10.79.0",
            None,
        )?;
        let lab = Lab {
            agent: net.ns("agent").to_string(),
            peer: net.ns("peer").to_string(),
            manager: net.ns("manager").to_string(),
            net,
            dir: tempfile::tempdir().unwrap(),
        };
        listen(&lab.peer, sa(PEER, WEB));
        listen(&lab.peer, sa(PEER, DB));
        listen(&lab.agent, sa(AGENT, SSH));
        lab.net.wait_until_connects(&lab.agent, sa(PEER, WEB));
        Some(lab)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("manager")
    }

    fn agent_dir(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    fn command(&self, ns: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, BIN])
            .args(args)
            .env_remove("MAMORI_DATA_DIR")
            .env("MAMORI_MACHINE_ID", "isolated-host");
        cmd
    }

    /// `mamori ARGS` in namespace `ns`.
    fn mamori(&self, ns: &str, args: &[&str]) -> Output {
        let out = self.command(ns, args).stdin(Stdio::null()).output().expect("run mamori");
        let o = Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!("$ [{ns}] mamori {}\n{}{}", args.join(" "), o.stdout, o.stderr);
        o
    }

    /// `mamori ARGS --data <manager data>` in the manager's namespace.
    fn admin(&self, args: &[&str]) -> Output {
        let data = self.data().display().to_string();
        let mut all = args.to_vec();
        all.extend(["--data", &data]);
        self.mamori(&self.manager.clone(), &all)
    }

    fn start_manager(&self) -> Proc {
        let data = self.data().display().to_string();
        let listen = format!("{MANAGER}:{MANAGER_PORT}");
        let log = self.dir.path().join(format!("server-{}.log", unique()));
        let mut proc = Proc::spawn(
            &mut self.command(&self.manager, &["server", "--data", &data, "--listen", &listen]),
            log,
        );
        wait_for("the manager to listen", Duration::from_secs(30), || {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("server exited {status:?}:\n{}", proc.log());
            }
            proc.log().contains("listening on")
        });
        proc
    }

    fn start_agent(&self) -> Proc {
        let dir = self.agent_dir().display().to_string();
        let log = self.dir.path().join(format!("agent-{}.log", unique()));
        Proc::spawn(&mut self.command(&self.agent, &["agent", "run", "--agent-dir", &dir]), log)
    }

    /// Enrolls the agent and returns its id.
    fn enroll(&self) -> String {
        let out = self.admin(&["token", "create", "--json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let token: Value = serde_json::from_str(out.stdout.trim()).unwrap();
        let manager: Value =
            serde_json::from_str(&std::fs::read_to_string(self.data().join("manager.json")).unwrap())
                .unwrap();
        let url = format!("https://{MANAGER}:{MANAGER_PORT}");
        let dir = self.agent_dir().display().to_string();
        let out = self.mamori(
            &self.agent.clone(),
            &[
                "agent",
                "enroll",
                "--server",
                &url,
                "--token",
                token["token"].as_str().unwrap(),
                "--ca-fingerprint",
                manager["ca_fingerprint"].as_str().unwrap(),
                "--agent-dir",
                &dir,
            ],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        device_id(&out.stdout)
    }

    fn set_policy(&self, policy: &Value) {
        let file = self.dir.path().join(format!("policy-{}.json", unique()));
        std::fs::write(&file, policy.to_string()).unwrap();
        let out = self.admin(&["policy", "set", &file.display().to_string()]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }

    fn agent_listed(&self, id: &str) -> Value {
        let out = self.admin(&["agents", "list", "--json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|a| a["id"] == id)
            .expect("agent listed")
    }

    fn responses(&self, id: &str) -> Vec<Value> {
        let store = Store::open(&self.data().join("manager.db")).unwrap();
        let filter = EventFilter {
            agent_id: Some(id.to_string()),
            kinds: vec![kind::RESPONSE_ACTION.to_string()],
            limit: 1000,
            ..EventFilter::default()
        };
        let mut rows = store.query_events(&filter).unwrap();
        rows.sort_by_key(|r| r.id);
        rows.iter().map(|r| serde_json::from_str(&r.data).unwrap()).collect()
    }

    fn has_response(&self, id: &str, action: &str, outcome: &str) -> bool {
        self.responses(id).iter().any(|r| r["event"]["action"] == action && r["event"]["outcome"] == outcome)
    }

    fn agent_table(&self) -> Option<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.agent, "nft", "list", "table", "inet", "mamori_isolate"])
            .output()
            .unwrap();
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn assert_open(&self) {
        assert!(connects(&self.agent, sa(PEER, WEB)), "agent -> peer should work");
        assert!(connects(&self.peer, sa(AGENT, SSH)), "peer -> agent should work");
    }

    fn assert_isolated(&self) {
        assert!(!connects(&self.agent, sa(PEER, WEB)), "agent -> peer:80 must fail");
        assert!(!connects(&self.peer, sa(AGENT, SSH)), "peer -> agent must fail");
        assert!(connects(&self.agent, sa(PEER, DB)), "agent -> allow-listed peer:5432 must work");
        assert!(connects(&self.agent, sa(MANAGER, MANAGER_PORT)), "agent -> manager must work");
    }
}

fn base_policy(extra_response: Value) -> Value {
    let mut response = json!({
        "isolation": {"allow": [{"cidr": PEER, "proto": "tcp", "port": DB, "label": "PACS"}]},
    });
    if let (Some(r), Some(extra)) = (response.as_object_mut(), extra_response.as_object()) {
        for (k, v) in extra {
            r.insert(k.clone(), v.clone());
        }
    }
    json!({"heartbeat_secs": 5, "response": response})
}

#[test]
fn admin_isolates_and_releases_and_isolation_survives_restart_and_lost_rules() {
    let Some(lab) = Lab::new() else { return };
    let _manager = lab.start_manager();
    let id = lab.enroll();
    lab.set_policy(&base_policy(json!({})));
    let mut agent = lab.start_agent();
    lab.assert_open();

    let out = lab.admin(&["agent", "isolate", &id, "--reason", "suspicious traffic", "--wait", "60"]);
    assert_eq!(out.code, 0, "isolate --wait: {}{}", out.stdout, out.stderr);
    lab.assert_isolated();
    assert!(lab.has_response(&id, "host_isolated", "success"));
    wait_for("agents list to show the isolation", LIMIT, || lab.agent_listed(&id)["isolated"] == true);
    let dir = lab.agent_dir().display().to_string();
    let status = lab.mamori(&lab.agent.clone(), &["agent", "status", "--agent-dir", &dir]);
    let status: Value = serde_json::from_str(&status.stdout).expect("status JSON");
    assert_eq!(status["isolated"], true, "{status}");

    // A restart keeps it; rules lost (as after a reboot) are put back at the next start.
    agent.stop();
    lab.assert_isolated();
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.agent, "nft", "delete", "table", "inet", "mamori_isolate"])
        .output()
        .unwrap();
    assert!(out.status.success());
    lab.assert_open();
    let mut agent = lab.start_agent();
    wait_for("the isolation to be restored", LIMIT, || lab.agent_table().is_some());
    lab.assert_isolated();
    wait_for("the restore event", LIMIT, || lab.has_response(&id, "isolation_restored", "success"));

    // The admin widens the allow-list of the isolated host: in force without a new isolation.
    let mut widened = base_policy(json!({}));
    widened["response"]["isolation"]["allow"]
        .as_array_mut()
        .unwrap()
        .push(json!({"cidr": PEER, "proto": "tcp", "port": WEB, "label": "EMR"}));
    lab.set_policy(&widened);
    wait_for("the widened allow-list", LIMIT, || connects(&lab.agent, sa(PEER, WEB)));
    assert!(!connects(&lab.peer, sa(AGENT, SSH)), "peer -> agent must still fail");
    wait_for("the update event", LIMIT, || lab.has_response(&id, "isolation_updated", "success"));

    let out = lab.admin(&["agent", "release", &id, "--reason", "cleaned", "--wait", "60"]);
    assert_eq!(out.code, 0, "release --wait: {}{}", out.stdout, out.stderr);
    lab.assert_open();
    assert!(lab.agent_table().is_none(), "the agent's table is gone");
    wait_for("agents list to show the release", LIMIT, || lab.agent_listed(&id)["isolated"] == false);
    let r = lab.responses(&id);
    let released = r.iter().find(|e| e["event"]["action"] == "host_released").expect("a release event");
    assert_eq!(released["mamori"]["response"]["trigger"], "command");
    assert!(released["mamori"]["response"]["command_id"].is_string());
    agent.stop();
}

#[test]
fn a_detection_isolates_rolls_back_without_the_manager_and_releases_after_a_clean_scan() {
    let Some(lab) = Lab::new() else { return };
    let watched = lab.dir.path().join("watched");
    std::fs::create_dir(&watched).unwrap();
    std::fs::write(watched.join("notes.txt"), "ward rota\n").unwrap();
    let watched_s = watched.canonicalize().unwrap().display().to_string();
    let mut manager = lab.start_manager();
    let id = lab.enroll();
    lab.set_policy(&{
        let mut p = base_policy(json!({
            "rules": [{"detection": "malware", "actions": ["quarantine", "isolate"]}],
        }));
        p["response"]["isolation"]["release_on_clean_scan"] = json!(true);
        p["response"]["isolation"]["clean_scan_paths"] = json!([watched_s]);
        p["fim"] = json!({"paths": [watched_s], "check_every_secs": 86400});
        p
    });
    let mut agent = lab.start_agent();
    wait_for("the FIM baseline", LIMIT, || {
        let store = Store::open(&lab.data().join("manager.db")).unwrap();
        let f = EventFilter {
            agent_id: Some(id.clone()),
            kinds: vec![kind::FIM_CHECK.to_string()],
            limit: 10,
            ..EventFilter::default()
        };
        !store.query_events(&f).unwrap().is_empty()
    });

    // With the manager up: malware written → quarantined, host isolated; the clean scan then
    // finds nothing (the file is in quarantine) and releases by itself.
    write_eicar(&watched.join("invoice.com"));
    wait_for("the automatic isolation", LIMIT, || lab.has_response(&id, "host_isolated", "success"));
    wait_for("the automatic release", LIMIT, || lab.has_response(&id, "host_released", "success"));
    lab.assert_open();
    let r = lab.responses(&id);
    let iso = r.iter().find(|e| e["event"]["action"] == "host_isolated").unwrap();
    assert_eq!(iso["mamori"]["response"]["trigger"], "malware");
    let rel = r.iter().find(|e| e["event"]["action"] == "host_released").unwrap();
    assert_eq!(rel["mamori"]["response"]["trigger"], "clean_scan");
    assert!(r
        .iter()
        .any(|e| e["event"]["action"] == "file_quarantined" && e["event"]["outcome"] == "success"));

    // Without the manager: the isolation cannot be verified and is rolled back.
    manager.stop();
    write_eicar(&watched.join("second.com"));
    let failed_at = Instant::now();
    let agent_log = |agent: &Proc| agent.log();
    wait_for("the rollback", LIMIT, || agent_log(&agent).contains("isolation failed"));
    assert!(failed_at.elapsed() >= Duration::from_secs(10), "gave up before the verification timeout");
    assert!(lab.agent_table().is_none(), "rolled back: no isolation table");
    lab.assert_open();
    let _manager = lab.start_manager();
    wait_for("the failure event to reach the manager", LIMIT, || {
        lab.has_response(&id, "host_isolated", "failure")
    });
    let failure = lab
        .responses(&id)
        .into_iter()
        .find(|e| e["event"]["action"] == "host_isolated" && e["event"]["outcome"] == "failure")
        .unwrap();
    assert!(failure["message"].as_str().unwrap().contains("rolled back"), "{failure}");
    agent.stop();
}

fn write_eicar(path: &Path) {
    // From a child process: the agent ignores its own writes, and this test is not the agent,
    // but a separate writer is what a real download looks like.
    let mut child = Command::new("/bin/sh")
        .args(["-c", &format!("cat > '{}'", path.display())])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&common::eicar()).unwrap();
    assert!(child.wait().unwrap().success());
}
