//! Real SigmaHQ rules over real EVTX samples and a real OpenSSH log. Each expected detection
//! was checked by reading the event and the rule (noted at each test); the tests also check
//! the event fields that make the rule apply, so a wrong match cannot pass unnoticed.
//! Tests skip with a message when the corpora are absent.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use mamori_hunt::{
    write_csv, write_human, write_json, Detection, DetectionKind, Hunt, HuntOptions, Pipeline,
};
use serde_json::Value;

const CORPORA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/corpora");

fn corpus(relative: &str) -> Option<PathBuf> {
    let path = Path::new(CORPORA).join(relative);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("SKIP: corpus path {} not found", path.display());
        None
    }
}

fn sample(relative: &str) -> Option<PathBuf> {
    corpus(&format!("evtx/hayabusa-sample-evtx/{relative}"))
}

/// All SigmaHQ rules, loaded once for the tests of this file.
fn sigmahq() -> Option<&'static Hunt> {
    static HUNT: OnceLock<Option<Hunt>> = OnceLock::new();
    HUNT.get_or_init(|| {
        let rules = corpus("sigma/sigmahq/rules")?;
        Some(Hunt::load(&[rules], &Pipeline::default_windows()))
    })
    .as_ref()
}

fn hunt_files(hunt: &Hunt, files: &[PathBuf]) -> mamori_hunt::HuntResult {
    hunt.run(files, &HuntOptions::default(), &|_| {})
}

fn text(detection: &Detection, field: &str) -> String {
    match detection.event.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn with_title<'a>(detections: &'a [Detection], title: &str) -> Vec<&'a Detection> {
    detections.iter().filter(|d| d.rule.title == title).collect()
}

#[test]
fn mimikatz_run_and_lsass_access_are_detected() {
    let Some(hunt) = sigmahq() else { return };
    let Some(file) = sample(
        "EVTX-to-MITRE-Attack/TA0006-Credential Access/T1003-Credential dumping/ID10-Mimikatz LSASS process dump.evtx",
    ) else {
        return;
    };
    let result = hunt_files(hunt, &[file]);
    // Sysmon 1, record 82849: Image C:\TOOLS\Mimikatzx64\mimikatz.exe, CommandLine
    // "mimikatz.exe" → proc_creation_win_hktl_mimikatz_command_line (CommandLine|contains
    // 'mimikatz').
    let runs = with_title(&result.detections, "HackTool - Mimikatz Execution");
    assert_eq!(runs.len(), 1, "{:?}", result.summary.per_rule);
    assert_eq!(runs[0].record_id, Some(82849));
    assert_eq!(runs[0].event["EventID"], 1);
    assert!(text(runs[0], "CommandLine").to_lowercase().contains("mimikatz"));
    // Sysmon 10 (process access) by mimikatz.exe → proc_access_win_hktl_generic_access
    // (SourceImage|endswith '\mimikatz.exe').
    let access = with_title(&result.detections, "HackTool - Generic Process Access");
    assert!(!access.is_empty());
    for detection in &access {
        assert_eq!(detection.event["EventID"], 10);
        assert!(text(detection, "SourceImage").to_lowercase().ends_with("\\mimikatz.exe"));
        assert!(text(detection, "TargetImage").to_lowercase().ends_with("\\lsass.exe"));
    }
    assert_eq!(access[0].rule.level.as_deref(), Some("high"));
    assert!(access[0].rule.tags.iter().any(|t| t.starts_with("attack.")));
}

#[test]
fn encoded_powershell_command_in_security_4688_is_detected() {
    let Some(hunt) = sigmahq() else { return };
    let Some(file) = sample("DeepBlueCLI/powersploit-security.evtx") else { return };
    let result = hunt_files(hunt, &[file]);
    // Security 4688, NewProcessName ...\powershell.exe, CommandLine "powershell.exe -NoP -sta
    // -NonI -W Hidden -Enc JABXAGMA..." → proc_creation_win_powershell_base64_encoded_cmd
    // (' -e' and ' JAB', Image mapped from NewProcessName by the Windows pipeline).
    let found = with_title(&result.detections, "Suspicious Encoded PowerShell Command Line");
    assert!(!found.is_empty(), "{:?}", result.summary.per_rule);
    for detection in found {
        assert_eq!(detection.event["EventID"], 4688);
        assert_eq!(detection.event["Channel"], "Security");
        assert!(text(detection, "NewProcessName").to_lowercase().ends_with("\\powershell.exe"));
        let command_line = text(detection, "CommandLine");
        assert!(command_line.contains(" -Enc ") && command_line.contains(" JAB"), "{command_line}");
    }
}

#[test]
fn psexec_service_install_is_detected_and_other_service_installs_are_not() {
    let Some(hunt) = sigmahq() else { return };
    let title = "PsExec Service Installation";
    let Some(psexec) = sample(
        "EVTX-to-MITRE-Attack/TA0003-Persistence/T1543.003-Create or Modify System Process-Windows Service/ID7045-7036 PSexec service installation.evtx",
    ) else {
        return;
    };
    // System 7045 from Service Control Manager, ServiceName PSEXESVC →
    // win_system_service_install_sysinternals_psexec.
    let result = hunt_files(hunt, &[psexec]);
    let found = with_title(&result.detections, title);
    assert_eq!(found.len(), 1, "{:?}", result.summary.per_rule);
    assert_eq!(found[0].event["EventID"], 7045);
    assert_eq!(found[0].event["ServiceName"], "PSEXESVC");
    assert_eq!(found[0].event["Provider_Name"], "Service Control Manager");

    // The same rule over other 7045 events (WCESERVICE, Office Click-to-Run, npcap, ...):
    // evaluated, and silent.
    let Some(other) = sample(
        "EVTX-to-MITRE-Attack/TA0003-Persistence/T1543.003-Create or Modify System Process-Windows Service/ID7045-New service for Mimikatz +npcap.evtx",
    ) else {
        return;
    };
    let mut installs = 0;
    mamori_evtx::read_file(&other, &Default::default(), &mut |record| {
        if record.event["EventID"] == 7045 {
            installs += 1;
            assert_ne!(record.event["ServiceName"], "PSEXESVC");
        }
    });
    assert!(installs >= 3, "the negative case needs service installs to evaluate");
    let result = hunt_files(hunt, &[other]);
    assert!(with_title(&result.detections, title).is_empty());
    // ... while that file's mimikatz service is caught by the rule written for it.
    assert!(!with_title(&result.detections, "HackTool Service Registration or Execution").is_empty());
}

#[test]
fn timeline_summary_and_progress_agree_with_an_independent_count() {
    let Some(hunt) = sigmahq() else { return };
    let Some(dir) = sample("EVTX-to-MITRE-Attack/TA0006-Credential Access") else { return };
    let calls = AtomicU64::new(0);
    let last_files = AtomicU64::new(0);
    let result = hunt.run(
        std::slice::from_ref(&dir),
        &HuntOptions { threads: 2, ..HuntOptions::default() },
        &|progress| {
            calls.fetch_add(1, Ordering::Relaxed);
            last_files.fetch_max(progress.files_done, Ordering::Relaxed);
            assert!(progress.files_done <= progress.files_total);
        },
    );
    let expected = mamori_evtx::read_paths(&[dir], &Default::default(), 1, |_, _| {});
    let summary = &result.summary;
    assert_eq!(summary.records_read, expected.records());
    assert_eq!(summary.evtx_files as usize, expected.files.len());
    assert_eq!(last_files.load(Ordering::Relaxed), summary.files_total);
    assert!(calls.load(Ordering::Relaxed) >= summary.files_total);
    assert!(summary.rules_loaded > 2000);
    assert_eq!(summary.detections as usize, result.detections.len());
    assert_eq!(summary.per_rule.iter().map(|c| c.count).sum::<u64>(), summary.detections);
    assert_eq!(summary.per_level.iter().map(|(_, n)| n).sum::<u64>(), summary.detections);
    assert!(result.detections.windows(2).all(|w| w[0].time_ms <= w[1].time_ms));
    assert!(!result.detections.is_empty());
}

#[test]
fn writers_print_every_detection() {
    let Some(hunt) = sigmahq() else { return };
    let Some(file) = sample("DeepBlueCLI/powersploit-security.evtx") else { return };
    let result = hunt_files(hunt, &[file]);
    assert!(!result.detections.is_empty());

    let mut json = Vec::new();
    write_json(&mut json, &result).unwrap();
    let objects: Vec<Value> =
        String::from_utf8(json).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(objects.len(), result.detections.len() + 1);
    let (summary, detections) = objects.split_last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["detections"], result.detections.len());
    assert_eq!(summary["input"]["records"], result.summary.records_read);
    for (object, detection) in detections.iter().zip(&result.detections) {
        assert_eq!(object["type"], "detection");
        assert_eq!(object["rule"]["title"], detection.rule.title.as_str());
        assert_eq!(object["record_id"], detection.record_id.unwrap());
        assert_eq!(object["event"]["EventRecordID"], detection.record_id.unwrap());
        assert!(object["@timestamp"].as_str().unwrap().ends_with('Z'));
    }

    let mut csv = Vec::new();
    write_csv(&mut csv, &result).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    assert!(csv.starts_with("timestamp,level,kind,rule_title"));
    assert_eq!(csv.lines().count(), result.detections.len() + 1);

    let mut human = Vec::new();
    write_human(&mut human, &result).unwrap();
    let human = String::from_utf8(human).unwrap();
    assert!(human.contains("Suspicious Encoded PowerShell Command Line"));
    assert!(human.contains("Summary"));
    assert!(human.contains(&format!("detections: {}", result.detections.len())));
}

#[test]
fn text_log_lines_are_hunted_with_their_line_numbers() {
    let Some(log) = corpus("logs/OpenSSH_2k.log") else { return };
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(
        rules.path().join("breakin.yml"),
        "title: Reverse Mapping Break-in Warning\n\
         id: 0b5c8f3e-6a37-4a6e-9a77-9d2f7f7a5c11\n\
         status: test\n\
         logsource:\n    product: linux\n    service: sshd\n\
         detection:\n    keywords:\n        - 'POSSIBLE BREAK-IN ATTEMPT'\n    condition: keywords\n\
         level: low\n",
    )
    .unwrap();
    let hunt = Hunt::load(&[rules.path().to_path_buf()], &Pipeline::default_windows());
    assert_eq!(hunt.rules().len(), 1);
    let result = hunt.run(std::slice::from_ref(&log), &HuntOptions::default(), &|_| {});
    let text = std::fs::read_to_string(&log).unwrap();
    let expected: Vec<u64> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| line.contains("POSSIBLE BREAK-IN ATTEMPT"))
        .map(|(i, _)| i as u64 + 1)
        .collect();
    assert!(!expected.is_empty());
    let mut lines: Vec<u64> = result.detections.iter().map(|d| d.record_id.unwrap()).collect();
    lines.sort_unstable();
    assert_eq!(lines, expected);
    assert_eq!(result.summary.records_read, text.lines().count() as u64);
    assert_eq!(result.summary.log_files, 1);
}

#[test]
fn correlation_over_real_detections() {
    let Some(file) = sample("DeepBlueCLI/smb-password-guessing-security.evtx") else { return };
    let Some(rule) =
        corpus("sigma/sigmahq/rules/windows/builtin/security/win_security_metasploit_authentication.yml")
    else {
        return;
    };
    let rules = tempfile::tempdir().unwrap();
    std::fs::copy(&rule, rules.path().join("metasploit.yml")).unwrap();
    std::fs::write(
        rules.path().join("burst.yml"),
        "title: Burst of Metasploit SMB Authentications\n\
         id: 3f1b2d5e-8c47-4f0e-9d7a-2b6e1c0a9f31\n\
         correlation:\n    type: event_count\n    rules:\n        - 72124974-a68b-4366-b990-d30e0b2a190d\n\
         \x20   group-by:\n        - Computer\n    timespan: 1h\n    condition:\n        gte: 10\n\
         level: critical\n",
    )
    .unwrap();
    let hunt = Hunt::load(&[rules.path().to_path_buf()], &Pipeline::default_windows());
    assert_eq!(hunt.correlations_loaded(), 1, "{:?}", hunt.load_report().problems);
    let result = hunt.run(std::slice::from_ref(&file), &HuntOptions::default(), &|_| {});

    // The detections the correlation counts, seen by the rule alone.
    let plain = Hunt::load(&[rule], &Pipeline::default_windows());
    let alone = plain.run(&[file], &HuntOptions::default(), &|_| {});
    let hits = alone.detections.len();
    assert!(hits >= 10, "the sample has {hits} Metasploit authentications");

    let bursts: Vec<&Detection> =
        result.detections.iter().filter(|d| d.rule.kind == DetectionKind::Correlation).collect();
    assert!(!bursts.is_empty());
    assert_eq!(bursts[0].rule.title, "Burst of Metasploit SMB Authentications");
    assert_eq!(bursts[0].event["Computer"], "DESKTOP-M5SN04R");
    assert!(bursts[0].event["count"].as_u64().unwrap() >= 10);
    // `generate` is false: the correlated rule's own detections are not reported.
    assert_eq!(result.detections.len(), bursts.len());
}

#[test]
fn unreadable_inputs_are_reported_and_the_rest_is_hunted() {
    let Some(hunt) = sigmahq() else { return };
    let Some(good) = sample("DeepBlueCLI/powersploit-security.evtx") else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&good, dir.path().join("good.evtx")).unwrap();
    std::fs::write(dir.path().join("garbage.evtx"), b"not an event log at all").unwrap();
    let fifo = std::ffi::CString::new(dir.path().join("pipe.evtx").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let result = hunt.run(&[dir.path().to_path_buf()], &HuntOptions::default(), &|_| {});
    let reported =
        |name: &str| result.summary.input_problems.iter().any(|p| p.path.ends_with(name) && p.fatal);
    assert!(reported("garbage.evtx"), "{:?}", result.summary.input_problems);
    assert!(reported("pipe.evtx"), "{:?}", result.summary.input_problems);
    assert!(!with_title(&result.detections, "Suspicious Encoded PowerShell Command Line").is_empty());
}
