//! Micro measurement of `RuleSet::evaluate`: all SigmaHQ rules against synthetic Windows
//! events (Sysmon 1/3/7/11/13/22, PowerShell 4104, Security 4624/4688), single thread.
//!
//! `cargo run --release -p mamori-sigma --example sigma_throughput [rules-dir] [events] [rounds]`

use std::path::PathBuf;
use std::time::Instant;

use mamori_sigma::{Event, Pipeline, RuleSet};
use serde_json::{json, Value};

/// Small deterministic generator (xorshift) so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.next() % items.len()]
    }
}

const IMAGES: &[&str] = &[
    "C:\\Windows\\System32\\svchost.exe",
    "C:\\Windows\\System32\\cmd.exe",
    "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
    "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
    "C:\\Windows\\explorer.exe",
    "C:\\Windows\\System32\\rundll32.exe",
    "C:\\Users\\alice\\AppData\\Local\\Temp\\setup.exe",
    "C:\\Windows\\System32\\conhost.exe",
    "C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE",
    "C:\\Windows\\System32\\whoami.exe",
];
const COMMAND_LINES: &[&str] = &[
    "C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s Schedule",
    "cmd.exe /c echo hello > C:\\Users\\alice\\out.txt",
    "powershell.exe -NoProfile -ExecutionPolicy Bypass -File C:\\scripts\\inventory.ps1",
    "\"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe\" --type=renderer --lang=en-US",
    "C:\\Windows\\Explorer.EXE",
    "rundll32.exe C:\\Windows\\System32\\shell32.dll,Control_RunDLL",
    "\"C:\\Users\\alice\\AppData\\Local\\Temp\\setup.exe\" /S /D=C:\\Program Files\\Tool",
    "\\??\\C:\\Windows\\system32\\conhost.exe 0xffffffff -ForceV1",
    "\"C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE\" /n \"C:\\Users\\alice\\Documents\\report.docx\"",
    "whoami /all",
];
const HOSTS: &[&str] =
    &["www.google.com", "login.microsoftonline.com", "update.example.org", "cdn.example.net"];
const REG_KEYS: &[&str] = &[
    "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run\\Updater",
    "HKU\\S-1-5-21-1-2-3-1104\\Software\\Microsoft\\Office\\16.0\\Word\\MRU\\Item 1",
    "HKLM\\SYSTEM\\CurrentControlSet\\Services\\bam\\State\\UserSettings\\S-1-5-21-1-2-3-1104",
];

fn windows(channel: &str, service: &str, event_id: u64, mut fields: Value) -> Event {
    let map = fields.as_object_mut().map(std::mem::take).unwrap_or_default();
    let mut event = Event::new();
    event.insert("mamori.input".into(), json!("evtx"));
    event.insert("mamori.logsource.product".into(), json!("windows"));
    event.insert("mamori.logsource.service".into(), json!(service));
    event.insert("EventID".into(), json!(event_id));
    event.insert("Channel".into(), json!(channel));
    event.insert("Computer".into(), json!("ws01.corp.example"));
    event.insert("TimeCreated".into(), json!("2024-05-02T09:14:03.512Z"));
    event.insert("EventRecordID".into(), json!(1000));
    event.extend(map);
    event
}

fn synthetic(count: usize) -> Vec<Event> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let sysmon = "Microsoft-Windows-Sysmon/Operational";
    (0..count)
        .map(|i| {
            let image = rng.pick(IMAGES);
            let command_line = rng.pick(COMMAND_LINES);
            let parent = rng.pick(IMAGES);
            match i % 10 {
                0..=3 => windows(sysmon, "sysmon", 1, json!({
                    "Image": image, "CommandLine": command_line, "ParentImage": parent,
                    "ParentCommandLine": rng.pick(COMMAND_LINES), "User": "CORP\\alice",
                    "OriginalFileName": "-", "Description": "-", "Product": "-", "Company": "-",
                    "IntegrityLevel": "Medium", "CurrentDirectory": "C:\\Users\\alice\\", "ProcessId": "4242",
                    "Hashes": "SHA256=1D5491E3C468EE4B4EF6EDFF4BBC7D06EE83180F6F0B1576763EA2EFE049493A"})),
                4 => windows(sysmon, "sysmon", 3, json!({
                    "Image": image, "DestinationIp": format!("10.0.{}.{}", i % 250, i % 200),
                    "DestinationPort": "443", "DestinationHostname": rng.pick(HOSTS), "Protocol": "tcp",
                    "Initiated": "true", "SourceIp": "192.168.1.20", "SourcePort": "50123", "User": "CORP\\alice"})),
                5 => windows(sysmon, "sysmon", 11, json!({
                    "Image": image, "TargetFilename": format!("C:\\Users\\alice\\AppData\\Local\\Temp\\file{i}.tmp")})),
                6 => windows(sysmon, "sysmon", 13, json!({
                    "Image": image, "EventType": "SetValue", "TargetObject": rng.pick(REG_KEYS),
                    "Details": "DWORD (0x00000001)"})),
                7 => windows(sysmon, "sysmon", 22, json!({
                    "Image": image, "QueryName": rng.pick(HOSTS), "QueryStatus": "0", "QueryResults": "::1;"})),
                8 => windows("Microsoft-Windows-PowerShell/Operational", "powershell", 4104, json!({
                    "ScriptBlockText": format!("Get-ChildItem -Path C:\\Users\\alice -Recurse | Where-Object {{ $_.Length -gt {i} }}"),
                    "Path": "C:\\scripts\\inventory.ps1"})),
                _ => {
                    if i % 20 == 9 {
                        windows("Security", "security", 4688, json!({
                            "NewProcessName": image, "CommandLine": command_line, "ParentProcessName": parent,
                            "SubjectUserName": "alice", "SubjectDomainName": "CORP", "SubjectLogonId": "0x5c3a1",
                            "NewProcessId": "0x19f4", "ProcessId": "0x1400", "TokenElevationType": "%%1938"}))
                    } else {
                        windows("Security", "security", 4624, json!({
                            "TargetUserName": "alice", "TargetDomainName": "CORP", "LogonType": 3,
                            "IpAddress": "192.168.1.20", "IpPort": "50555", "WorkstationName": "WS02",
                            "AuthenticationPackageName": "Kerberos", "LogonProcessName": "Kerberos"}))
                    }
                }
            }
        })
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/corpora/sigma/sigmahq/rules"))
    });
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let started = Instant::now();
    let (rules, report) = RuleSet::load(&[dir], &Pipeline::default_windows());
    println!(
        "loaded {} rules ({} problems, {} prefiltered) in {:?}",
        rules.len(),
        report.problems.len(),
        rules.prefiltered_rules(),
        started.elapsed()
    );
    let events = synthetic(count);
    let mut matches = Vec::new();
    let mut total_matches = 0usize;
    // Warm-up round (scratch buffers, caches).
    for event in &events {
        matches.clear();
        rules.evaluate(event, &mut matches);
    }
    let started = Instant::now();
    for _ in 0..rounds {
        for event in &events {
            matches.clear();
            rules.evaluate(event, &mut matches);
            total_matches += matches.len();
        }
    }
    let elapsed = started.elapsed();
    let evaluated = count * rounds;
    println!(
        "{evaluated} events in {elapsed:?}: {:.0} events/s, {:.2} µs/event, {} matches",
        evaluated as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / evaluated as f64,
        total_matches
    );
}
