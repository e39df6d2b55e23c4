//! Helpers for tests that run a manager and agents as separate `mamori` processes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mamori_store::{EventFilter, Store};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_mamori");

/// A child process killed when the test ends, with its output in a file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(cmd: &mut Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().expect("spawn mamori");
        Proc { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "exit {status:?} after SIGTERM:\n{}", self.log());
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("did not stop within 30 s of SIGTERM:\n{}", self.log());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {}:\n{}", self.log.display(), self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_for(what: &str, limit: Duration, ok: impl FnMut() -> bool) {
    wait_for_every(what, limit, Duration::from_millis(100), ok)
}

/// Like [`wait_for`], polling every `every`.
pub fn wait_for_every(what: &str, limit: Duration, every: Duration, mut ok: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ok() {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(every);
    }
}

pub fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn mamori(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("MAMORI_DATA_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.stdin(Stdio::null()).output().expect("run mamori");
    let o = Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!("$ mamori {}\n{}{}", args.join(" "), o.stdout, o.stderr);
    o
}

/// A manager data directory, its port, and agents next to it.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Site {
    pub fn new() -> Site {
        Site { dir: tempfile::tempdir().expect("tempdir"), port: free_port() }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("manager")
    }

    pub fn data_arg(&self) -> String {
        self.data().display().to_string()
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn start(&self, extra: &[&str]) -> Proc {
        let listen = format!("127.0.0.1:{}", self.port);
        let log = self.dir.path().join(format!("server-{}.log", unique()));
        let mut cmd = Command::new(BIN);
        cmd.args(["server", "--data", &self.data_arg(), "--listen", &listen]).args(extra);
        let mut proc = Proc::spawn(&mut cmd, log);
        wait_for("the manager to listen", Duration::from_secs(30), || {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("server exited {status:?}:\n{}", proc.log());
            }
            proc.log().contains("listening on") && std::net::TcpStream::connect(&listen).is_ok()
        });
        proc
    }

    pub fn fingerprint(&self) -> String {
        let text = std::fs::read_to_string(self.data().join("manager.json")).expect("manager.json");
        let v: Value = serde_json::from_str(&text).expect("manager.json is JSON");
        v["ca_fingerprint"].as_str().expect("fingerprint").to_string()
    }

    pub fn token(&self, extra: &[&str]) -> String {
        let data = self.data_arg();
        let mut args = vec!["token", "create", "--json", "--data", &data];
        args.extend_from_slice(extra);
        let out = mamori(&args, &[]);
        assert_eq!(out.code, 0, "token create failed: {}", out.stderr);
        let v: Value = serde_json::from_str(out.stdout.trim()).expect("token JSON");
        v["token"].as_str().expect("token").to_string()
    }

    pub fn agent_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `mamori agent enroll`, returning the output; `name` is the agent's directory and machine id.
    pub fn enroll_with(&self, name: &str, token: &str, fingerprint: &str, extra: &[&str]) -> Output {
        let dir = self.agent_dir(name).display().to_string();
        let url = self.url();
        let mut args = vec![
            "agent",
            "enroll",
            "--server",
            &url,
            "--token",
            token,
            "--ca-fingerprint",
            fingerprint,
            "--agent-dir",
            &dir,
        ];
        args.extend_from_slice(extra);
        mamori(&args, &[("MAMORI_MACHINE_ID", name)])
    }

    pub fn enroll(&self, name: &str) -> String {
        let token = self.token(&[]);
        let out = self.enroll_with(name, &token, &self.fingerprint(), &[]);
        assert_eq!(out.code, 0, "enroll failed: {}", out.stderr);
        device_id(&out.stdout)
    }

    pub fn run_agent(&self, name: &str, extra: &[&str]) -> Proc {
        let dir = self.agent_dir(name).display().to_string();
        let log = self.dir.path().join(format!("{name}-{}.log", unique()));
        let mut cmd = Command::new(BIN);
        cmd.args(["agent", "run", "--agent-dir", &dir]).args(extra).env("MAMORI_MACHINE_ID", name);
        Proc::spawn(&mut cmd, log)
    }

    pub fn agents(&self) -> Vec<Value> {
        let out = mamori(&["agents", "list", "--json", "--data", &self.data_arg()], &[]);
        assert_eq!(out.code, 0, "agents list failed: {}", out.stderr);
        out.stdout.lines().map(|l| serde_json::from_str(l).expect("agent JSON")).collect()
    }

    pub fn agent(&self, id: &str) -> Value {
        self.agents().into_iter().find(|a| a["id"] == id).unwrap_or_else(|| panic!("agent {id} not listed"))
    }

    pub fn store(&self) -> Store {
        Store::open(&self.data().join("manager.db")).expect("open the manager's store")
    }

    /// Whether any event of `kind` from `agent` is stored (one indexed lookup, cheap to poll).
    pub fn has_event(&self, store: &Store, agent: &str, kind: &str) -> bool {
        let filter = EventFilter {
            agent_id: Some(agent.to_string()),
            kinds: vec![kind.to_string()],
            limit: 1,
            ..EventFilter::default()
        };
        !store.query_events(&filter).expect("query events").is_empty()
    }

    /// Every stored event of `kind` from `agent`, oldest first.
    pub fn events(&self, agent: &str, kind: &str) -> Vec<mamori_store::EventRow> {
        let store = self.store();
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let filter = EventFilter {
                agent_id: Some(agent.to_string()),
                kinds: vec![kind.to_string()],
                after_id: Some(after),
                limit: 10_000,
                ..EventFilter::default()
            };
            let page = store.query_events(&filter).expect("query events");
            match page.last() {
                Some(last) => after = last.id,
                None => return all,
            }
            all.extend(page);
        }
    }
}

pub fn device_id(enroll_stdout: &str) -> String {
    enroll_stdout
        .lines()
        .find_map(|l| l.strip_prefix("Enrolled as agent "))
        .map(|s| s.trim_end_matches('.').to_string())
        .unwrap_or_else(|| panic!("no device id in: {enroll_stdout}"))
}

/// Appends `count` events of kind `test.event` straight into an agent's spool, as the agent's
/// own sources would; `data.n` numbers them from `first`.
pub fn spool_events(agent_dir: &Path, first: u64, count: u64, time_ms: i64, max_bytes: Option<u64>) -> u64 {
    let mut options = mamori_spool::Options::default();
    if let Some(max) = max_bytes {
        options.max_bytes = max;
        options.segment_bytes = (max / 4).max(64);
    }
    options.sync = mamori_spool::Sync::Batch;
    let mut spool = mamori_spool::Spool::open(&agent_dir.join("spool"), options).expect("open spool");
    for n in first..first + count {
        let data =
            serde_json::value::RawValue::from_string(format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(100)))
                .expect("raw");
        let payload = serde_json::to_vec(&mamori_proto::SpooledEvent { time_ms, data }).expect("payload");
        spool.append("test.event", &payload).expect("append");
    }
    spool.flush().expect("flush");
    spool.dropped_total()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64
}

pub fn assert_exactly_once(events: &[mamori_store::EventRow], expected: std::ops::Range<u64>) {
    let mut ns: Vec<u64> = events
        .iter()
        .map(|e| serde_json::from_str::<Value>(&e.data).expect("data")["n"].as_u64().expect("n"))
        .collect();
    ns.sort_unstable();
    let want: Vec<u64> = expected.collect();
    assert_eq!(ns.len(), want.len(), "stored {} events, expected {}", ns.len(), want.len());
    assert_eq!(ns, want, "events lost or duplicated");
}
