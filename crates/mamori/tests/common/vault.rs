//! A manager (for the CA), an enrolled client and a vault service, all real processes on
//! loopback, for the backup vault's end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::fleet::*;

pub const PASSPHRASE: &str = "correct horse battery staple";

/// Fields drop in order: the processes (whose logs are printed when a test fails) before the
/// directory that holds their logs.
pub struct VaultSite {
    pub vault: Option<Proc>,
    pub manager: Proc,
    pub port: u16,
    pub site: Site,
}

impl VaultSite {
    /// A manager, one enrolled client `ward-pc`, and an initialised, signed vault (not started).
    pub fn new(manager_args: &[&str]) -> VaultSite {
        let site = Site::new();
        let manager = site.start(manager_args);
        site.enroll("ward-pc");
        let data = site.dir.path().join("vault").display().to_string();
        let out = mamori(
            &["vault", "init", "--data", &data, "--name", "127.0.0.1"],
            &[("MAMORI_VAULT_PASSPHRASE", PASSPHRASE)],
        );
        assert_eq!(out.code, 0, "vault init: {}", out.stderr);
        let csr = format!("{data}/tls/vault.csr");
        let crt = format!("{data}/tls/vault.crt");
        let out = mamori(&["vault", "sign", "--data", &site.data_arg(), "--csr", &csr, "--out", &crt], &[]);
        assert_eq!(out.code, 0, "vault sign: {}", out.stderr);
        VaultSite { vault: None, manager, port: free_port(), site }
    }

    pub fn data(&self) -> PathBuf {
        self.site.dir.path().join("vault")
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn start(&mut self, extra: &[&str]) {
        let listen = format!("127.0.0.1:{}", self.port);
        let log = self.site.dir.path().join(format!("vault-{}.log", unique()));
        let mut cmd = Command::new(BIN);
        cmd.args(["vault", "serve", "--data", &self.data().display().to_string(), "--listen", &listen])
            .args(extra)
            .env("MAMORI_VAULT_PASSPHRASE", PASSPHRASE);
        let mut proc = Proc::spawn(&mut cmd, log);
        wait_for("the vault to listen", Duration::from_secs(30), || {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("vault exited {status:?}:\n{}", proc.log());
            }
            proc.log().contains("listening on") && std::net::TcpStream::connect(&listen).is_ok()
        });
        self.vault = Some(proc);
    }

    pub fn agent_dir(&self) -> String {
        self.site.agent_dir("ward-pc").display().to_string()
    }

    /// `mamori backup <args> --vault URL --agent-dir DIR`.
    pub fn backup(&self, args: &[&str]) -> Output {
        let url = self.url();
        let dir = self.agent_dir();
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&["--vault", &url, "--agent-dir", &dir]);
        mamori(&all, &[])
    }

    /// `backup run --json` of `sources`; returns the exit code and the summary.
    pub fn run(&self, sources: &[&Path], extra: &[&str]) -> (i32, Value) {
        let mut args = vec!["backup".to_string(), "run".into(), "--json".into()];
        for s in sources {
            args.push("--source".into());
            args.push(s.display().to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.backup(&refs);
        let summary = serde_json::from_str(out.stdout.trim()).unwrap_or(Value::Null);
        (out.code, summary)
    }

    pub fn snapshots(&self) -> Vec<Value> {
        let out = self.backup(&["backup", "snapshots", "--json"]);
        assert_eq!(out.code, 0, "snapshots: {}", out.stderr);
        serde_json::from_str(out.stdout.trim()).expect("snapshots JSON")
    }

    /// `mamori vault <args> --data DIR` with the passphrase.
    pub fn admin(&self, args: &[&str]) -> Output {
        let data = self.data().display().to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&["--data", &data]);
        mamori(&all, &[("MAMORI_VAULT_PASSPHRASE", PASSPHRASE)])
    }

    /// The vault's security events.
    pub fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.data().join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn events_of(&self, kind: &str) -> Vec<Value> {
        self.events().into_iter().filter(|e| e["kind"] == kind).collect()
    }

    /// A raw request as the enrolled client (its own certificate).
    pub fn raw(&self, method: reqwest::Method, route: &str, body: Vec<u8>) -> (u16, String) {
        let id = mamori_agent::device_identity(&self.site.agent_dir("ward-pc")).expect("identity");
        let identity = mamori_backup::Identity {
            key_pem: id.key_pem,
            cert_pem: id.cert_pem,
            ca_fingerprint: id.ca_fingerprint,
            hostname: id.hostname,
        };
        let conn = mamori_backup::Connection::new(&self.url(), &identity).expect("connection");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let content_type =
            if body.first() == Some(&b'{') { "application/json" } else { "application/octet-stream" };
        rt.block_on(conn.raw(method, route, content_type, body)).expect("request")
    }
}

/// Byte-exact comparison of two trees: contents, modes, owners, mtimes and symlink targets.
pub fn assert_same_tree(a: &Path, b: &Path) {
    use std::os::unix::fs::MetadataExt;
    let list = |root: &Path| -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&dir).expect("read_dir").flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let p = e.path();
                let m = std::fs::symlink_metadata(&p).expect("metadata");
                let rel = p.strip_prefix(root).expect("prefix").to_path_buf();
                let owner = format!("{}:{}", m.uid(), m.gid());
                let what = if m.file_type().is_symlink() {
                    format!("link {:?} {} {owner}", std::fs::read_link(&p).expect("link"), m.mtime())
                } else if m.is_dir() {
                    stack.push(p.clone());
                    format!("dir {:o} {} {owner}", m.mode(), m.mtime())
                } else {
                    let data = std::fs::read(&p).expect("read");
                    format!(
                        "file {:o} {} {} {owner} {}",
                        m.mode(),
                        m.mtime(),
                        m.mtime_nsec(),
                        blake3::hash(&data)
                    )
                };
                out.push((rel, what));
            }
        }
        out.sort();
        out
    };
    let (la, lb) = (list(a), list(b));
    assert_eq!(la.len(), lb.len(), "different number of entries");
    for (x, y) in la.iter().zip(&lb) {
        assert_eq!(x, y, "restored tree differs");
    }
}
