//! Real EVTX files: the hayabusa sample set (593 files, 24,661 records per the corpora
//! README), cross-checked against python-evtx, plus damaged copies made here in temp dirs.
//! Tests skip with a message when the corpus (or the python-evtx venv) is absent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use mamori_evtx::{read_bytes, read_file, read_paths, ReadOptions, Record};
use serde_json::Value;

const SAMPLES: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/corpora/evtx/hayabusa-sample-evtx");
const PYTHON_EVTX: &str = "/var/tmp/pyevtx/bin/python";

fn samples() -> Option<PathBuf> {
    let dir = PathBuf::from(SAMPLES);
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIP: EVTX sample corpus not found at {SAMPLES}");
        None
    }
}

fn sample(relative: &str) -> Option<PathBuf> {
    let path = samples()?.join(relative);
    assert!(path.is_file(), "sample file missing: {}", path.display());
    Some(path)
}

fn read_all_records(path: &Path) -> (Vec<Record>, mamori_evtx::FileReport) {
    let mut records = Vec::new();
    let report = read_file(path, &ReadOptions::default(), &mut |record| records.push(record));
    (records, report)
}

#[test]
fn whole_sample_directory_parses() {
    let Some(dir) = samples() else { return };
    let seen = Mutex::new(Vec::new());
    let summary = read_paths(&[dir], &ReadOptions::default(), 2, |file, record| {
        let event = &record.event;
        let problems: Vec<&str> = [
            ("EventID", event.get("EventID").is_some_and(Value::is_u64)),
            ("@timestamp", event.get("@timestamp").is_some_and(Value::is_string)),
            ("mamori.input", event.get("mamori.input") == Some(&Value::from("evtx"))),
            (
                "mamori.logsource.product",
                event.get("mamori.logsource.product") == Some(&Value::from("windows")),
            ),
            (
                "flat",
                event.values().all(|v| match v {
                    Value::Object(_) | Value::Null => false,
                    Value::Array(items) => items.iter().all(|i| !i.is_object() && !i.is_array()),
                    _ => true,
                }),
            ),
        ]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name)
        .collect();
        if !problems.is_empty() {
            seen.lock().unwrap().push(format!(
                "{} record {}: bad {problems:?}",
                file.path.display(),
                record.record_id
            ));
        }
    });
    let bad = seen.into_inner().unwrap();
    assert!(bad.is_empty(), "malformed events: {:?}", &bad[..bad.len().min(5)]);
    assert_eq!(summary.files.len(), 593);
    assert!(summary.path_problems.is_empty(), "{:?}", summary.path_problems);
    let damaged: Vec<_> = summary.files.iter().filter(|f| f.has_problems()).collect();
    assert!(damaged.is_empty(), "files with errors: {damaged:?}");
    assert_eq!(summary.records(), 24_661);
}

/// Records of a file as python-evtx reads them, keyed by record id.
fn python_records(path: &Path) -> Option<HashMap<u64, Value>> {
    if !Path::new(PYTHON_EVTX).exists() {
        eprintln!(
            "SKIP: python-evtx venv missing ({PYTHON_EVTX}); create it with \
             `python3 -m venv /var/tmp/pyevtx && /var/tmp/pyevtx/bin/pip install python-evtx`"
        );
        return None;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python_evtx_records.py");
    let output = Command::new(PYTHON_EVTX).arg(script).arg(path).output().expect("run python-evtx");
    assert!(
        output.status.success(),
        "python-evtx failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut records = HashMap::new();
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        records.insert(record["record_id"].as_u64().unwrap(), record);
    }
    Some(records)
}

/// The text a flat value stands for, as an XML reader shows it.
fn as_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// python-evtx writes hexadecimal integers zero-padded (`0x0000000001f4c65f`), Windows and the
/// `evtx` crate do not (`0x1f4c65f`): compare those by value. The XML parser on the Python side
/// turns `\r\n` and a lone `\r` into `\n` (XML end-of-line handling).
/// Booleans and timestamps differ in form too (`2019-04-27 21:06:49.341000+00:00`): compare the instant.
fn comparable(text: &str) -> String {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let text = text.as_str();
    // Python spells booleans `True`/`False`; Windows writes `true`/`false`.
    if text == "True" || text == "False" {
        return text.to_ascii_lowercase();
    }
    if text.len() >= 19 && text.as_bytes()[4] == b'-' {
        if let Ok(time) = text.parse::<evtx::Timestamp>() {
            // python-evtx's float conversion can be a microsecond off: compare at 10 µs.
            return format!("time {}", (time.as_microsecond() + 5).div_euclid(10));
        }
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if let Ok(value) = u64::from_str_radix(hex, 16) {
            return format!("{value:#x}");
        }
    }
    text.to_owned()
}

#[test]
fn records_agree_with_python_evtx() {
    // Files chosen for their shapes: System with Qualifiers, Sysmon, Security, PowerShell,
    // positional Data, string arrays, UserData, Binary. (python-evtx cannot read the forwarded
    // log whose System fields are text; see system_fields_stored_as_text_become_numbers.)
    let files = [
        "EVTX-to-MITRE-Attack/TA0003-Persistence/T1543.003-Create or Modify System Process-Windows Service/ID7045-New service for Mimikatz +npcap.evtx",
        "EVTX-to-MITRE-Attack/TA0006-Credential Access/T1003-Credential dumping/ID10-Mimikatz LSASS process dump.evtx",
        "EVTX-to-MITRE-Attack/TA0008-Lateral Movement/T1550-Use Alternate Authentication Material/ID4624-Mimikatz Pass the hash.evtx",
        "DeepBlueCLI/password-spray.evtx",
        "EVTX-ATTACK-SAMPLES/AutomatedTestingTools/panache_sysmon_vs_EDRTestingScript.evtx",
        "DeepBlueCLI/Powershell-Invoke-Obfuscation-many.evtx",
        "EVTX-ATTACK-SAMPLES/Other/emotet/exec_emotet_ps_800_new-object.evtx",
        "EVTX-ATTACK-SAMPLES/Lateral Movement/MSSQL_15281_xp_cmdshell_exec_failed_attempt.evtx",
        "EVTX-ATTACK-SAMPLES/Credential Access/Zerologon_CVE-2020-1472_DFIR_System_NetLogon_Error_EventID_5805.evtx",
        "DeepBlueCLI/disablestop-eventlog.evtx",
        "DeepBlueCLI/eventlog-dac.evtx",
    ];
    let mut compared_records = 0;
    let mut compared_fields = 0;
    let mut python_failures = Vec::new();
    for relative in files {
        let Some(path) = sample(relative) else { return };
        let Some(expected) = python_records(&path) else { return };
        let (records, report) = read_all_records(&path);
        assert!(!report.has_problems(), "{report:?}");
        assert_eq!(records.len(), expected.len(), "record count of {relative}");
        for record in &records {
            let event = &record.event;
            let theirs = &expected[&record.record_id];
            if theirs.get("error").is_some() {
                // python-evtx cannot render some records (e.g. NullType substitutions).
                python_failures.push(format!("{relative} record {}: {theirs}", record.record_id));
                continue;
            }
            let context = format!("{relative} record {}", record.record_id);
            assert_eq!(event["EventID"].as_u64(), theirs["event_id"].as_u64(), "{context}");
            assert_eq!(event["EventRecordID"], theirs["event_record_id"], "{context}");
            assert_eq!(event["Channel"], theirs["channel"], "{context}");
            assert_eq!(event["Computer"], theirs["computer"], "{context}");
            // python-evtx keeps microseconds, converted through floating point (a microsecond
            // off at times): the milliseconds agree within one.
            let their_ms = theirs["time_us"].as_i64().unwrap().div_euclid(1000);
            assert!((record.time_ms - their_ms).abs() <= 1, "{context}: {} vs {their_ms}", record.time_ms);
            for (name, text) in theirs["named"].as_object().unwrap() {
                let ours = event.get(name.as_str()).or_else(|| event.get(&format!("EventData_{name}")));
                let Some(ours) = ours else {
                    // An element whose optional substitution is NULL: Windows (and the `evtx`
                    // crate, per MS-EVEN6 2.2.12) leaves it out, python-evtx shows it empty.
                    assert_eq!(text, "", "{context}: field {name} missing");
                    continue;
                };
                let (ours, theirs) = (comparable(&as_text(ours)), comparable(text.as_str().unwrap()));
                if ours != theirs {
                    let at = ours.chars().zip(theirs.chars()).take_while(|(a, b)| a == b).count();
                    let around = |t: &str| t.chars().skip(at.saturating_sub(30)).take(60).collect::<String>();
                    panic!(
                        "{context}: {name} differs at char {at} (lengths {} / {}): ours {:?} python-evtx {:?}",
                        ours.chars().count(),
                        theirs.chars().count(),
                        around(&ours),
                        around(&theirs)
                    );
                }
                compared_fields += 1;
            }
            let unnamed: Vec<String> = theirs["unnamed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect();
            if !unnamed.is_empty() {
                let ours: Vec<String> = match event.get("Data") {
                    Some(Value::Array(items)) => items.iter().map(as_text).collect(),
                    Some(one) => vec![as_text(one)],
                    // Left out as NULL (see above).
                    None if unnamed.iter().all(String::is_empty) => continue,
                    None => panic!("{context}: Data missing"),
                };
                // A string-array value is one `Data` element: python-evtx gives its items as
                // one text, we give them as array items. Compare the texts they hold.
                // (python-evtx also separates the items with line ends: whitespace is ignored.)
                let squeeze = |texts: Vec<String>| -> String {
                    texts.concat().chars().filter(|c| !c.is_whitespace()).collect()
                };
                compared_fields += unnamed.len();
                assert_eq!(squeeze(ours), squeeze(unnamed), "{context}: Data");
            }
            compared_records += 1;
        }
    }
    eprintln!(
        "compared {compared_records} records, {compared_fields} EventData values with python-evtx; \
         python-evtx could not render {}: {:?}",
        python_failures.len(),
        &python_failures[..python_failures.len().min(3)]
    );
    assert!(python_failures.len() * 10 < compared_records);
    assert!(compared_records > 100 && compared_fields > 500);
}

#[test]
fn service_install_record_maps_to_the_model() {
    let Some(path) = sample(
        "EVTX-to-MITRE-Attack/TA0003-Persistence/T1543.003-Create or Modify System Process-Windows Service/ID7045-New service for Mimikatz +npcap.evtx",
    ) else {
        return;
    };
    let (records, _) = read_all_records(&path);
    // Values read from the record with python-evtx (see records_agree_with_python_evtx):
    // <EventID Qualifiers="16384">7045</EventID>, <Execution ProcessID="672" .../>.
    let event = &records[0].event;
    assert_eq!(event["EventID"], 7045);
    assert_eq!(event["EventID_Qualifiers"], 16384);
    assert_eq!(event["Provider_Name"], "Service Control Manager");
    assert_eq!(event["ProcessID"], 672);
    assert_eq!(event["ThreadID"], 10348);
    assert_eq!(event["Security_UserID"], "S-1-5-21-4230534742-2542757381-3142984815-1111");
    assert_eq!(event["ServiceName"], "WCESERVICE");
    assert_eq!(event["ImagePath"], "D:\\Service\\test.exe");
    assert_eq!(event["TimeCreated"], "2020-12-17T10:38:33.9511809Z");
    assert_eq!(event["@timestamp"], "2020-12-17T10:38:33.9511809Z");
    assert_eq!(event["mamori.logsource.service"], "system");
}

#[test]
fn system_fields_stored_as_text_become_numbers() {
    let Some(path) = sample(
        "EVTX-to-MITRE-Attack/TA0008-Lateral Movement/T1021.006-Windows Remote Management/ID4656-WS Management listener enumeration.evtx",
    ) else {
        return;
    };
    let (records, report) = read_all_records(&path);
    assert!(!report.has_problems(), "{report:?}");
    // This forwarded log stores <EventID>4656</EventID> etc. as strings (see the rendered
    // JSON: "EventID":"4656"); the model wants numbers. EventData stays as stored.
    let first = &records[0].event;
    assert_eq!(first["EventID"], 4656);
    assert_eq!(first["Task"], 12804);
    assert!(first["EventRecordID"].is_u64());
    assert!(first["ProcessID"].is_u64());
    assert_eq!(first["RestrictedSidCount"], "0");
    assert!(records.iter().all(|r| r.event["EventID"] == 4656));
}

#[test]
fn log_cleared_user_data_is_flattened_by_leaf_name() {
    let Some(path) = sample("DeepBlueCLI/eventlog-dac.evtx") else { return };
    let (records, _) = read_all_records(&path);
    let cleared = records.iter().find(|r| r.event["EventID"] == 1102).expect("a 1102 record");
    assert_eq!(cleared.event["Channel"], "Security");
    assert!(cleared.event["SubjectUserName"].is_string());
    assert!(cleared.event["SubjectLogonId"].as_str().unwrap().starts_with("0x"));
    assert_eq!(cleared.event["mamori.logsource.service"], "security");
}

/// The biggest sample with at least `chunks` chunks.
fn multi_chunk_sample(chunks: u64) -> Option<PathBuf> {
    let dir = samples()?;
    let discovery = mamori_evtx::discover(&[dir]);
    discovery
        .files
        .iter()
        .filter(|f| f.bytes >= 4096 + chunks * 65536)
        .max_by_key(|f| f.bytes)
        .map(|f| f.path.clone())
}

#[test]
fn truncated_copy_yields_the_good_records_and_reports_the_cut() {
    let Some(path) = multi_chunk_sample(2) else { return };
    let full = std::fs::read(&path).unwrap();
    let (all, report) = read_all_records(&path);
    assert!(!report.has_problems());
    let by_id: HashMap<u64, &Record> = all.iter().map(|r| (r.record_id, r)).collect();

    // Cut in the middle of the second chunk.
    let cut = 4096 + 65536 + 30_000;
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("cut.evtx");
    std::fs::write(&copy, &full[..cut]).unwrap();
    let (some, report) = read_all_records(&copy);
    assert!(report.fatal.is_none(), "{report:?}");
    assert!(report.error_count >= 1);
    assert!(report.errors[0].contains("truncated"), "{:?}", report.errors);
    assert!(!some.is_empty() && some.len() < all.len());
    for record in &some {
        assert_eq!(
            Some(&record),
            by_id.get(&record.record_id),
            "record {} differs from the intact file",
            record.record_id
        );
    }
    // The same through the in-memory reader.
    let from_memory = read_bytes(&copy, full[..cut].to_vec(), &ReadOptions::default(), &mut |_| {});
    assert_eq!(from_memory.records, some.len() as u64);
}

#[test]
fn corrupted_chunk_is_reported_and_the_other_chunks_are_read() {
    let Some(path) = multi_chunk_sample(3) else { return };
    let mut data = std::fs::read(&path).unwrap();
    let (all, _) = read_all_records(&path);
    let by_id: HashMap<u64, &Record> = all.iter().map(|r| (r.record_id, r)).collect();
    // Overwrite the first chunk's records area (after its 512-byte header) with garbage.
    let chunk0 = 4096;
    for (i, byte) in data[chunk0 + 512..chunk0 + 40_000].iter_mut().enumerate() {
        *byte = (i as u8).wrapping_mul(151).wrapping_add(7);
    }
    let mut records = Vec::new();
    let report = read_bytes(&path, data, &ReadOptions::default(), &mut |r| records.push(r));
    assert!(report.fatal.is_none());
    assert!(report.error_count >= 1, "{report:?}");
    assert!(!report.errors[0].is_empty());
    let intact = records.iter().filter(|r| by_id.get(&r.record_id) == Some(r)).count();
    assert!(intact > 0, "no intact record after the damaged chunk");
    assert!(records.len() < all.len());
}

#[test]
fn garbage_file_is_fatal_for_that_file_only() {
    let Some(good) = sample("DeepBlueCLI/disablestop-eventlog.evtx") else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&good, dir.path().join("good.evtx")).unwrap();
    std::fs::write(dir.path().join("text.evtx"), b"this is not an event log\n").unwrap();
    std::fs::write(dir.path().join("empty.evtx"), b"").unwrap();
    let summary = read_paths(&[dir.path().to_path_buf()], &ReadOptions::default(), 2, |_, _| {});
    let by_name: HashMap<String, &mamori_evtx::FileReport> = summary
        .files
        .iter()
        .map(|f| (f.path.file_name().unwrap().to_string_lossy().into_owned(), f))
        .collect();
    assert!(by_name["text.evtx"].fatal.is_some());
    assert!(by_name["empty.evtx"].fatal.is_some());
    assert!(by_name["good.evtx"].fatal.is_none());
    assert!(by_name["good.evtx"].records > 0);
}

/// Fails the test instead of hanging when `work` blocks (as opening a FIFO would).
fn within_seconds<T: Send + 'static>(seconds: u64, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    rx.recv_timeout(std::time::Duration::from_secs(seconds))
        .expect("reading did not finish: blocked on a special file?")
}

#[test]
fn special_paths_are_reported_without_hanging() {
    let Some(good) = sample("DeepBlueCLI/disablestop-eventlog.evtx") else { return };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    std::fs::copy(&good, root.join("good.evtx")).unwrap();
    let fifo = root.join("pipe.evtx");
    let fifo_c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink(root.join("nowhere.evtx"), root.join("dangling.evtx")).unwrap();
    std::fs::create_dir(root.join("folder.evtx")).unwrap();
    std::os::unix::fs::symlink(&root, root.join("loop")).unwrap();

    let walked = root.clone();
    let summary = within_seconds(30, move || read_paths(&[walked], &ReadOptions::default(), 2, |_, _| {}));
    let problem = |name: &str| {
        summary
            .path_problems
            .iter()
            .find(|p| p.path.file_name().is_some_and(|n| n == name))
            .map(|p| p.reason.clone())
            .unwrap_or_else(|| panic!("{name} not reported: {:?}", summary.path_problems))
    };
    assert!(problem("pipe.evtx").contains("FIFO"));
    assert!(problem("dangling.evtx").contains("dangling"));
    assert!(problem("loop").contains("loop"));
    assert_eq!(summary.files.len(), 1, "{:?}", summary.files);
    assert!(summary.files[0].records > 0);

    // Named directly, the FIFO and the directory are refused without blocking.
    let direct_fifo = fifo.clone();
    let report = within_seconds(30, move || read_file(&direct_fifo, &ReadOptions::default(), &mut |_| {}));
    assert!(report.fatal.as_deref().unwrap().contains("not a regular file"), "{report:?}");
    let report = read_file(&root.join("folder.evtx"), &ReadOptions::default(), &mut |_| {});
    assert!(report.fatal.as_deref().unwrap().contains("directory"), "{report:?}");
    let named = mamori_evtx::discover(&[fifo, root.join("dangling.evtx")]);
    assert!(named.files.is_empty());
    assert_eq!(named.problems.len(), 2);
}

#[test]
fn chunk_threads_give_the_same_records_in_the_same_order() {
    let Some(path) = multi_chunk_sample(3) else { return };
    let (single, _) = read_all_records(&path);
    let mut threaded = Vec::new();
    let options = ReadOptions { chunk_threads: 2, ..ReadOptions::default() };
    read_file(&path, &options, &mut |r| threaded.push(r));
    assert_eq!(single.len(), threaded.len());
    assert!(single == threaded);
}
