//! `mamori hunt` through the real binary: SigmaHQ rules over real EVTX (skipped without
//! `../shared`), the built-in pack over text logs, the three output formats, exit codes, bad
//! inputs and bad rules.

mod common;

use std::path::{Path, PathBuf};

use common::corpus;
use common::fleet::{mamori, Output};
use serde_json::Value;

const MIMIKATZ: &str = "evtx/hayabusa-sample-evtx/EVTX-to-MITRE-Attack/TA0006-Credential Access/T1003-Credential dumping/ID10-Mimikatz LSASS process dump.evtx";

fn hunt(args: &[&str]) -> Output {
    let mut all = vec!["hunt"];
    all.extend_from_slice(args);
    mamori(&all, &[])
}

fn json_lines(out: &Output) -> Vec<Value> {
    out.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// An auth.log: `failures` failed root logins from one address, then a success from it.
fn brute_force_log(dir: &Path, failures: usize) -> PathBuf {
    let mut text = String::new();
    for i in 0..failures {
        text.push_str(&format!(
            "Dec  1 03:{:02}:{:02} web01 sshd[{}]: Failed password for root from 203.0.113.9 port 4{i:04} ssh2\n",
            i / 60,
            i % 60,
            1000 + i
        ));
    }
    text.push_str(
        "Dec  1 03:05:00 web01 sshd[2000]: Accepted password for root from 203.0.113.9 port 50000 ssh2\n",
    );
    text.push_str(
        "Dec  1 03:06:00 web01 sshd[2001]: Accepted publickey for nurse from 10.1.0.20 port 50001 ssh2\n",
    );
    let path = dir.join("auth.log");
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn sigmahq_rules_over_real_evtx_give_a_json_timeline_and_exit_1() {
    let (Some(rules), Some(evtx)) = (corpus("sigma/sigmahq/rules"), corpus(MIMIKATZ)) else {
        eprintln!("skipped: ../shared/corpora is absent");
        return;
    };
    let out = hunt(&[
        "--json",
        "--quiet-rules",
        "--rules",
        &rules.display().to_string(),
        &evtx.display().to_string(),
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let lines = json_lines(&out);
    let (summary, detections) = lines.split_last().expect("a summary line");
    let titles: Vec<&str> = detections.iter().map(|d| d["rule"]["title"].as_str().expect("title")).collect();
    assert!(titles.contains(&"HackTool - Mimikatz Execution"), "{titles:?}");
    let run = detections.iter().find(|d| d["rule"]["title"] == "HackTool - Mimikatz Execution").expect("run");
    assert!(run.to_string().contains("82849"), "the record id is given: {run}");
    assert_eq!(summary["detections"].as_u64(), Some(detections.len() as u64), "{summary}");
    assert!(summary["rules"]["loaded"].as_u64().expect("rules loaded") > 2000, "{summary}");
    // Sorted on one timeline.
    let times: Vec<&str> = detections.iter().map(|d| d["@timestamp"].as_str().expect("time")).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
}

#[test]
fn the_built_in_pack_finds_a_guessed_ssh_password_in_a_text_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = brute_force_log(dir.path(), 12);
    let out = hunt(&[&log.display().to_string()]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("[correlation] SSH brute force followed by an accepted login"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("detections: 1 (high 1)"), "{}", out.stdout);

    let csv = hunt(&["--csv", &log.display().to_string()]);
    assert_eq!(csv.code, 1);
    let rows: Vec<&str> = csv.stdout.lines().collect();
    assert_eq!(rows.len(), 2, "a header and one row: {}", csv.stdout);
    assert!(rows[1].contains("SSH brute force followed by an accepted login"), "{}", rows[1]);
    assert!(csv.stderr.contains("Summary"), "the summary goes to stderr with --csv: {}", csv.stderr);

    // Nine failures are below the pack's threshold of ten: nothing to report.
    let quiet_dir = tempfile::tempdir().expect("tempdir");
    let quiet = hunt(&[&brute_force_log(quiet_dir.path(), 9).display().to_string()]);
    assert_eq!(quiet.code, 0, "{}", quiet.stdout);
    assert!(quiet.stdout.contains("detections: 0"), "{}", quiet.stdout);
}

#[test]
fn the_built_in_pack_is_quiet_on_the_real_loghub_logs() {
    let (Some(linux), Some(ssh)) = (corpus("logs/Linux_2k.log"), corpus("logs/OpenSSH_2k.log")) else {
        eprintln!("skipped: ../shared/corpora is absent");
        return;
    };
    let out = hunt(&["--json", &linux.display().to_string(), &ssh.display().to_string()]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    let summary = json_lines(&out).pop().expect("summary");
    assert_eq!(summary["input"]["records"].as_u64(), Some(4000), "{summary}");
}

#[test]
fn unreadable_inputs_give_exit_2_and_the_rest_is_still_hunted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = brute_force_log(dir.path(), 12);
    let fifo = dir.path().join("pipe.log");
    let c = std::ffi::CString::new(fifo.display().to_string()).expect("path");
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let missing = dir.path().join("missing.evtx");
    let out =
        hunt(&[&log.display().to_string(), &fifo.display().to_string(), &missing.display().to_string()]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("SSH brute force followed by an accepted login"), "{}", out.stdout);
    assert!(out.stdout.contains("missing.evtx"), "named in the summary: {}", out.stdout);
    assert!(out.stdout.contains("pipe.log"), "named in the summary: {}", out.stdout);
}

#[test]
fn rules_that_cannot_load_are_named_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).expect("mkdir");
    std::fs::write(
        rules.join("bad.yml"),
        "title: x\nlogsource: {product: linux}\ndetection: {sel: {a|nosuch: 1}, condition: sel}\n",
    )
    .expect("write");
    std::fs::write(
        rules.join("good.yml"),
        "title: Root login\nlogsource: {product: linux, service: sshd}\ndetection: {sel: {user.name: root, event.outcome: success}, condition: sel}\nlevel: medium\n",
    )
    .expect("write");
    let log = brute_force_log(dir.path(), 1);
    let out = hunt(&["--rules", &rules.display().to_string(), &log.display().to_string()]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("bad.yml") && out.stderr.contains("nosuch"), "{}", out.stderr);
    assert!(out.stdout.contains("Root login"), "{}", out.stdout);

    std::fs::remove_file(rules.join("good.yml")).expect("rm");
    let none = hunt(&["--rules", &rules.display().to_string(), &log.display().to_string()]);
    assert_eq!(none.code, 2, "no usable rule is an error: {}", none.stderr);
    assert!(none.stderr.contains("no rule could be loaded"), "{}", none.stderr);
}
