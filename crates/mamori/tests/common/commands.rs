//! Acting as an enrolled agent (its key and certificate, real mutual TLS) and as an admin client
//! over plain HTTPS, for tests of manager → agent commands without a real agent carrying them out.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mamori_proto as proto;
use serde_json::Value;

use super::fleet::{Output, Site, BIN};

/// An HTTPS client with its own runtime, so tests stay synchronous.
pub struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
    bearer: Option<String>,
}

/// A status code and the JSON body (`Null` if the body is not JSON).
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Http {
    fn build(site: &Site, identity: Option<&mamori_pki::KeyAndCert>, bearer: Option<String>) -> Http {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let tls = mamori_pki::tls::client_config(&site.fingerprint(), identity).expect("tls config");
        let client = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Http { rt, client, base: site.url(), bearer }
    }

    /// The agent enrolled in `site.agent_dir(name)`, presenting its own certificate.
    pub fn agent(site: &Site, name: &str) -> Http {
        let dir = site.agent_dir(name);
        let identity = mamori_pki::KeyAndCert {
            key_pem: std::fs::read_to_string(dir.join("device.key")).expect("device key"),
            cert_pem: std::fs::read_to_string(dir.join("device.crt")).expect("device certificate"),
        };
        Http::build(site, Some(&identity), None)
    }

    /// No client certificate, no token.
    pub fn anonymous(site: &Site) -> Http {
        Http::build(site, None, None)
    }

    /// The admin API with the manager's admin token.
    pub fn admin(site: &Site) -> Http {
        let token = std::fs::read_to_string(site.data().join("admin.token")).expect("admin token");
        Http::build(site, None, Some(token.trim().to_string()))
    }

    pub fn request(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Answer {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.bearer {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        self.rt.block_on(async {
            let resp = req.send().await.expect("request");
            let status = resp.status().as_u16();
            let text = resp.text().await.expect("body");
            Answer { status, body: serde_json::from_str(&text).unwrap_or(Value::Null) }
        })
    }

    /// Sends a heartbeat as the agent and returns the manager's answer (the test fails on an
    /// error status).
    pub fn heartbeat(&self, isolated: bool) -> proto::HeartbeatResponse {
        let hb = proto::Heartbeat {
            agent_version: "0.0.0-test".into(),
            hostname: "test-host".into(),
            isolated,
            ..proto::Heartbeat::default()
        };
        let answer = self.request(
            reqwest::Method::POST,
            proto::path::HEARTBEAT,
            Some(&serde_json::to_value(&hb).expect("json")),
        );
        assert_eq!(answer.status, 200, "heartbeat refused: {}", answer.body);
        serde_json::from_value(answer.body).expect("heartbeat response")
    }

    /// Heartbeats until the manager hands out a command with an id not in `known`.
    pub fn next_command(&self, known: &[String]) -> proto::AgentCommand {
        let started = Instant::now();
        loop {
            if let Some(c) = self.heartbeat(false).commands.into_iter().find(|c| !known.contains(&c.id)) {
                return c;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no new command within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Reports a command's result as the agent.
    pub fn report(&self, command_id: &str, success: bool, message: &str) -> Answer {
        let result = proto::CommandResult { success, message: message.into() };
        self.request(
            reqwest::Method::POST,
            &proto::path::command_result(command_id),
            Some(&serde_json::to_value(&result).expect("json")),
        )
    }
}

/// The command id in the output of `mamori agent release|isolate`.
pub fn queued_id(out: &Output) -> String {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("Queued "))
        .and_then(|l| l.split_whitespace().nth(2))
        .map(String::from)
        .unwrap_or_else(|| panic!("no command id in: {}{}", out.stdout, out.stderr))
}

/// Starts `mamori ARGS` without waiting for it (for `--wait`).
pub fn spawn_cli(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .env_remove("MAMORI_DATA_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mamori")
}

/// Waits (at most a minute) for a process from [`spawn_cli`] and collects its output.
pub fn finish(mut child: Child) -> Output {
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("mamori did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let o = Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!("$ mamori (spawned)\n{}{}", o.stdout, o.stderr);
    o
}
