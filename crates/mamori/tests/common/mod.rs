//! Helpers for tests that run the real `mamori` binary.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The EICAR test file, assembled at run time so that no file in the repository holds it.
pub fn eicar() -> Vec<u8> {
    let mut v = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STAN".to_vec();
    v.extend_from_slice(br"DARD-ANTIVIRUS-TEST-FILE!$H+H*");
    v
}

/// `../shared/corpora/<rel>` next to the repository, or `None` (with a message) when absent.
pub fn corpus(rel: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpora");
    let path = root.join(rel);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("SKIP: {} is absent (the shared corpora are not on this machine)", path.display());
        None
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A data directory and a command builder for `mamori` using it.
pub struct Env {
    pub data: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env { data: tempfile::tempdir().expect("tempdir") }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mamori"));
        c.env("MAMORI_DATA_DIR", self.data.path());
        c
    }

    /// Runs `mamori ARGS`, failing the test if it does not finish within `limit` (a hang).
    pub fn run(&self, args: &[&str]) -> Run {
        run_with_limit(self.cmd().args(args), Duration::from_secs(300))
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The JSON lines of stdout.
    pub fn json(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
            .collect()
    }

    pub fn findings(&self) -> Vec<Value> {
        self.json().into_iter().filter(|v| v["event"]["action"] == "malware_detected").collect()
    }

    pub fn summary(&self) -> Value {
        self.json()
            .into_iter()
            .find(|v| v["event"]["action"] == "scan_summary")
            .unwrap_or_else(|| panic!("no summary in:\n{}", self.stdout))
    }

    pub fn finding_paths(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .findings()
            .iter()
            .map(|f| f["file"]["path"].as_str().unwrap_or_default().to_string())
            .collect();
        v.sort();
        v
    }
}

pub fn run_with_limit(cmd: &mut Command, limit: Duration) -> Run {
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn mamori");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("mamori did not finish within {limit:?}: it hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let Output { status, stdout, stderr } = child.wait_with_output().expect("output");
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    };
    eprintln!("--- stdout\n{}\n--- stderr\n{}", run.stdout, run.stderr);
    run
}

pub fn write(path: &Path, data: &[u8]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::File::create(path).and_then(|mut f| f.write_all(data)).expect("write");
}

/// A zip holding `members` (name, bytes), deflated.
pub fn zip_bytes(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in members {
        w.start_file(*name, opts).expect("zip entry");
        w.write_all(data).expect("zip write");
    }
    w.finish().expect("zip finish").into_inner()
}
pub mod commands;
pub mod console;
pub mod fleet;
pub mod passkey;
pub mod vault;
