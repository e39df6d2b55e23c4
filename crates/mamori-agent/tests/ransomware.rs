//! The ransomware simulator against a running agent: real files, real ciphers, real fanotify
//! events, a real SIGKILL.
//!
//! The attacker is this test binary run again as a child (`simulated_attacker`, ignored unless
//! asked for), so it has a pid and an executable of its own, as malware would. It encrypts a
//! tree of realistic files as fast as it can in one of four styles; the agent must stop it. What
//! it touched is then counted on disk, against the files as they were.
//!
//! Needs root (fanotify gives the writer's pid only to root); skipped with a message otherwise.

mod common;
#[path = "../../mamori-ransom/tests/common/mod.rs"]
mod ransim;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use mamori_agent::enroll;
use mamori_proto::{
    kind, DetectionKind, FimPolicy, Policy, RansomwarePolicy, ResponseActionKind, ResponsePolicy,
    ResponseRule, Severity,
};
use rand::Rng;

const LIMIT: Duration = Duration::from_secs(60);
const DIRS: usize = 25;
const FILES_PER_DIR: usize = 40;
const STYLES: [&str; 4] = ["in_place_rename", "new_then_delete", "partial_head", "in_place"];

fn is_root() -> bool {
    // SAFETY: plain getter.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid() == 0
    }
}

/// `DIRS` directories of `FILES_PER_DIR` letters, CSV, logs, OOXML, PNG, JPEG-like and PDF files.
fn build_tree(root: &Path, seed: u64) {
    let mut r = ransim::rng(seed);
    for d in 0..DIRS {
        let dir = root.join(format!("ward{:02}", d / 5)).join(format!("case{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..FILES_PER_DIR {
            let a: usize = r.gen_range(0..1000);
            let b: usize = r.gen_range(0..1000);
            let (name, bytes) = match f % 7 {
                0 => (format!("letter_{f:03}.txt"), ransim::text(&mut r, 300 + a * 3)),
                1 => (format!("billing_{f:03}.csv"), ransim::csv(&mut r, 10 + a * 4 / 5)),
                2 => (format!("service_{f:03}.log"), ransim::log_lines(&mut r, 20 + a * 3 / 5)),
                3 => (format!("report_{f:03}.docx"), ransim::office_zip(&mut r, 2000 + a * 18)),
                4 => (format!("scan_{f:03}.png"), ransim::png(&mut r, 40 + a as u32 / 8, 30 + b as u32 / 15)),
                5 => (format!("photo_{f:03}.jpg"), ransim::jpeg_like(&mut r, 3000 + a * 27)),
                _ => (format!("result_{f:03}.pdf"), ransim::pdf(&mut r, 2000 + a * 23)),
            };
            fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Encrypts one file the way `style` does.
fn encrypt_one(style: &str, path: &Path, n: u64) {
    let mut data = fs::read(path).unwrap();
    let mut iv = [0u8; 16];
    iv[..8].copy_from_slice(&n.to_be_bytes());
    let with_suffix = |suffix: &str| {
        let mut to = path.as_os_str().to_owned();
        to.push(suffix);
        PathBuf::from(to)
    };
    match style {
        "in_place_rename" => {
            ransim::aes_ctr([0x42; 16], iv, &mut data);
            fs::write(path, &data).unwrap();
            fs::rename(path, with_suffix(".locked")).unwrap();
        }
        "new_then_delete" => {
            ransim::aes_ctr([0x17; 16], iv, &mut data);
            fs::write(with_suffix(".enc"), &data).unwrap();
            fs::remove_file(path).unwrap();
        }
        "partial_head" => {
            let head = data.len().min(4096);
            ransim::chacha20(n, &mut data[..head]);
            fs::write(path, &data).unwrap();
        }
        "in_place" => {
            ransim::chacha20(n ^ 0xdead, &mut data);
            fs::write(path, &data).unwrap();
        }
        other => panic!("unknown style {other}"),
    }
}

/// The attacker. Run by [`simulator_is_stopped_in_every_style`] as a child process with
/// `MAMORI_SIM_STYLE` and `MAMORI_SIM_ROOT`; exits 0 only if nobody stopped it.
#[test]
#[ignore = "the simulated attacker; run as a child process by simulator_is_stopped_in_every_style"]
fn simulated_attacker() {
    let (Ok(style), Ok(root)) = (std::env::var("MAMORI_SIM_STYLE"), std::env::var("MAMORI_SIM_ROOT")) else {
        panic!("MAMORI_SIM_STYLE and MAMORI_SIM_ROOT must be set");
    };
    for (n, f) in files_under(Path::new(&root)).iter().enumerate() {
        encrypt_one(&style, f, n as u64 + 1);
    }
}

/// Originals the attacker changed or removed, plus originals it made an encrypted copy of.
fn touched(originals: &BTreeMap<PathBuf, Vec<u8>>, root: &Path) -> usize {
    let now: HashSet<PathBuf> = files_under(root).into_iter().collect();
    originals
        .iter()
        .filter(|(p, content)| {
            let intact = fs::read(p).is_ok_and(|c| &c == *content);
            let copied = now
                .iter()
                .any(|n| n != *p && n.to_string_lossy().starts_with(&format!("{}.", p.to_string_lossy())));
            !intact || copied
        })
        .count()
}

fn policy(root: &Path) -> Policy {
    Policy {
        version: 1,
        fim: Some(FimPolicy {
            paths: vec![root.to_string_lossy().into_owned()],
            check_every_secs: 86_400,
            scan_on_write: false,
            ransomware: Some(RansomwarePolicy::default()),
            ..FimPolicy::default()
        }),
        response: ResponsePolicy {
            // Stop only: a test must never isolate the machine it runs on.
            rules: vec![ResponseRule {
                detection: DetectionKind::Ransomware,
                min_severity: Severity::High,
                actions: vec![ResponseActionKind::StopProcess],
            }],
            ..ResponsePolicy::default()
        },
        ..Policy::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_is_stopped_in_every_style() {
    if !is_root() {
        eprintln!("SKIPPED: the live ransomware test needs root (fanotify who-data)");
        return;
    }
    let mgr = TestManager::start().await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("agent");
    enroll(&dir, mgr.enroll_options()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let root = data.path().canonicalize().unwrap();
    let mut originals = BTreeMap::new();
    for (i, style) in STYLES.iter().enumerate() {
        let tree = root.join(style);
        build_tree(&tree, 500 + i as u64);
        for f in files_under(&tree) {
            let bytes = fs::read(&f).unwrap();
            originals.insert(f, bytes);
        }
    }
    mgr.rec().policy = policy(&root);
    let agent = RunningAgent::start(&dir, run_options());
    let ready = |mgr: &TestManager| {
        mgr.events_of_kind(kind::FIM_CHECK).iter().any(|e| e.data["event"]["action"] == "ransomware_ready")
    };
    assert!(wait_until(LIMIT, || ready(&mgr)).await, "the guard never became ready");
    let ready_event = mgr
        .events_of_kind(kind::FIM_CHECK)
        .into_iter()
        .find(|e| e.data["event"]["action"] == "ransomware_ready")
        .unwrap();
    assert_eq!(ready_event.data["mamori"]["ransomware"]["samples"], originals.len());

    let mut table = Vec::new();
    let mut counts = Vec::new();
    for style in STYLES {
        let tree = root.join(style);
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "simulated_attacker", "--test-threads=1", "--quiet"])
            .env("MAMORI_SIM_STYLE", style)
            .env("MAMORI_SIM_ROOT", &tree)
            .spawn()
            .unwrap();
        let pid = child.id();
        let status = tokio::task::spawn_blocking(move || {
            let mut child = child;
            child.wait().unwrap()
        })
        .await
        .unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{style}: the attacker was not killed ({status})");
        let mine: BTreeMap<PathBuf, Vec<u8>> = originals
            .iter()
            .filter(|(p, _)| p.starts_with(&tree))
            .map(|(p, c)| (p.clone(), c.clone()))
            .collect();
        let n = touched(&mine, &tree);
        assert!(
            wait_until(LIMIT, || mgr
                .events_of_kind(kind::RESPONSE_ACTION)
                .iter()
                .any(|e| e.data["process"]["pid"] == pid && e.data["event"]["action"] == "process_stopped"))
            .await,
            "{style}: no process_stopped event"
        );
        let stop = mgr
            .events_of_kind(kind::RESPONSE_ACTION)
            .into_iter()
            .find(|e| e.data["process"]["pid"] == pid)
            .unwrap();
        assert_eq!(stop.data["event"]["outcome"], "success", "{style}: {}", stop.data);
        assert_eq!(stop.data["mamori"]["response"]["killed"], true);
        let verdict = mgr
            .events_of_kind(kind::RANSOMWARE_DETECTED)
            .into_iter()
            .find(|e| e.data["process"]["pid"] == pid)
            .unwrap_or_else(|| panic!("{style}: no ransomware.detected event for the attacker"));
        let v = &verdict.data["mamori"]["ransomware"];
        table.push(format!(
            "{style:16} files touched before the kill: {n:3} of {}; verdict after {} files, score {}, {}",
            mine.len(),
            v["files_touched"],
            v["score"],
            v["reasons"]
        ));
        assert!(n < mine.len() / 10, "{style}: stopped only after {n} of {} files", mine.len());
        counts.push(n);
    }
    agent.stop().await.unwrap();
    counts.sort();
    let median = (counts[1] + counts[2]) as f64 / 2.0;
    println!("{}\nmedian files touched before the attacker was stopped: {median}", table.join("\n"));
    // Not a speed assertion: a generous bound that still fails if the stop comes late.
    assert!(median <= 30.0, "median {median}");
}
