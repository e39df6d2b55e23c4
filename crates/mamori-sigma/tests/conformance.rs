//! Conformance with the Sigma specification v2.1: each modifier and each condition form,
//! written as a rule plus events that must and must not match. Examples come from the rules
//! specification and the modifiers appendix where they give one.

use mamori_sigma::{Event, Pipeline, RuleSet};
use serde_json::{json, Value};

fn event(value: Value) -> Event {
    let Value::Object(mut map) = value else { panic!("events are objects") };
    map.insert("mamori.logsource.product".into(), json!("test"));
    map
}

/// Loads one rule with `detection` (YAML, indented by 4) and returns it; fails on problems.
fn rule_with(detection: &str, pipeline: &Pipeline) -> RuleSet {
    let text = format!("title: conformance\nid: 11111111-1111-4111-8111-111111111111\nlogsource:\n    product: test\ndetection:\n{detection}\n");
    let (rules, report) = RuleSet::from_yaml(&text, pipeline);
    assert!(report.problems.is_empty(), "{:?}\n{text}", report.problems);
    assert_eq!(rules.len(), 1);
    rules
}

fn check(detection: &str, matching: &[Value], not_matching: &[Value]) {
    let rules = rule_with(detection, &Pipeline::empty());
    for e in matching {
        assert_eq!(rules.matching(&event(e.clone())), vec![0], "must match: {e}\n{detection}");
    }
    for e in not_matching {
        assert!(rules.matching(&event(e.clone())).is_empty(), "must not match: {e}\n{detection}");
    }
}

fn rejected(detection: &str) -> String {
    let text = format!("title: bad\nid: bad-rule\nlogsource:\n    product: test\ndetection:\n{detection}\n");
    let (rules, report) = RuleSet::from_yaml(&text, &Pipeline::empty());
    assert_eq!(rules.len(), 0, "{detection}");
    assert_eq!(report.problems.len(), 1, "{detection}");
    assert_eq!(report.problems[0].rule.as_deref(), Some("bad-rule"));
    report.problems[0].reason.clone()
}

#[test]
fn maps_are_and_value_lists_are_or() {
    // Rules specification, "Maps": EventLog Security and (EventID 517 or 1102).
    check(
        "    selection:\n        EventLog: Security\n        EventID:\n            - 517\n            - 1102\n    condition: selection",
        &[json!({"EventLog": "Security", "EventID": 517}), json!({"EventLog": "security", "EventID": 1102})],
        &[json!({"EventLog": "Security", "EventID": 4624}), json!({"EventLog": "System", "EventID": 517}), json!({"EventID": 517})],
    );
    // Quoted hex values stay strings.
    check(
        "    selection:\n        EventLog: Security\n        EventID: 4769\n        TicketOptions: '0x40810000'\n        TicketEncryption: '0x17'\n    condition: selection",
        &[json!({"EventLog": "Security", "EventID": 4769, "TicketOptions": "0x40810000", "TicketEncryption": "0x17"})],
        &[json!({"EventLog": "Security", "EventID": 4769, "TicketOptions": "0x40810000", "TicketEncryption": "0x12"})],
    );
}

#[test]
fn lists_of_maps_are_or() {
    check(
        "    selection:\n        - Image|endswith: '\\example.exe'\n        - Description|contains: 'Test executable'\n    condition: selection",
        &[json!({"Image": "C:\\tmp\\example.exe"}), json!({"Description": "A test executable here"})],
        &[json!({"Image": "C:\\tmp\\example.exe.bak", "Description": "other"})],
    );
}

#[test]
fn numbers_match_numbers_and_numeric_strings() {
    check(
        "    selection:\n        EventID: 4688\n    condition: selection",
        &[json!({"EventID": 4688}), json!({"EventID": "4688"}), json!({"EventID": [1, 4688]})],
        &[json!({"EventID": 46880}), json!({"EventID": "4688x"}), json!({"Other": 4688})],
    );
    // A quoted number is a string and still equals the number's text.
    check(
        "    selection:\n        EventID: '4688'\n    condition: selection",
        &[json!({"EventID": 4688})],
        &[json!({"EventID": 4689})],
    );
}

#[test]
fn strings_are_case_insensitive_with_wildcards() {
    check(
        // A backslash before a wildcard must itself be escaped (`\\*`), per the specification.
        "    selection:\n        Image: 'C:\\Windows\\\\*\\cmd.exe'\n        User: 'prog?'\n    condition: selection",
        &[json!({"Image": "c:\\windows\\system32\\CMD.EXE", "User": "PROGA"})],
        &[json!({"Image": "c:\\windows\\cmd.exe", "User": "proga"}), json!({"Image": "c:\\windows\\x\\cmd.exe", "User": "prog"})],
    );
    // Escaped wildcard is literal.
    check(
        "    selection:\n        Value: 'a\\*b'\n    condition: selection",
        &[json!({"Value": "A*B"})],
        &[json!({"Value": "axb"})],
    );
}

#[test]
fn empty_and_null_values() {
    // Rules specification, "Special Field Values".
    check(
        "    selection:\n        EventID: 4738\n    filter:\n        PasswordLastSet: null\n    condition: selection and not filter",
        &[json!({"EventID": 4738, "PasswordLastSet": "2020-01-01"})],
        &[json!({"EventID": 4738}), json!({"EventID": 4738, "PasswordLastSet": null})],
    );
    check(
        "    selection_main:\n        FieldA: 'something'\n    selection_empty1:\n        FieldB: ''\n    selection_empty2:\n        FieldB: null\n    condition: selection_main and 1 of selection_empty*",
        &[json!({"FieldA": "something", "FieldB": ""}), json!({"FieldA": "something"})],
        &[json!({"FieldA": "something", "FieldB": "x"})],
    );
}

#[test]
fn keywords_search_all_values() {
    // Rules specification, "Keywords search".
    check(
        "    mimikatz_keywords:\n        - 'event::clear'\n        - 'event::drop'\n    condition: mimikatz_keywords",
        &[json!({"CommandLine": "mimikatz.exe EVENT::Clear exit"}), json!({"Payload": ["x", "event::drop"]})],
        &[json!({"CommandLine": "event:clear"}), json!({"mamori.note": "event::clear"})],
    );
    check(
        "    keywords_cmdlet:\n        '|all':\n            - 'OabVirtualDirectory'\n            - ' -ExternalUrl '\n    condition: keywords_cmdlet",
        &[json!({"Payload": "Set-OabVirtualDirectory -ExternalUrl http://x"}), json!({"A": "OabVirtualDirectory", "B": "x -ExternalUrl y"})],
        &[json!({"Payload": "Set-OabVirtualDirectory -InternalUrl http://x"})],
    );
}

#[test]
fn modifier_contains_startswith_endswith() {
    check(
        "    selection:\n        CommandLine|contains: 'whoami'\n        Image|startswith: 'C:\\Windows\\'\n        ParentImage|endswith: '\\cmd.exe'\n    condition: selection",
        &[json!({"CommandLine": "x WHOAMI /all", "Image": "c:\\windows\\a.exe", "ParentImage": "C:\\x\\CMD.exe"})],
        &[
            json!({"CommandLine": "whoam", "Image": "c:\\windows\\a.exe", "ParentImage": "C:\\x\\cmd.exe"}),
            json!({"CommandLine": "whoami", "Image": "d:\\windows\\a.exe", "ParentImage": "C:\\x\\cmd.exe"}),
            json!({"CommandLine": "whoami", "Image": "c:\\windows\\a.exe", "ParentImage": "C:\\x\\cmd.exe.old"}),
        ],
    );
}

#[test]
fn modifier_all() {
    check(
        "    selection:\n        CommandLine|contains|all:\n            - ' -enc '\n            - ' -nop '\n    condition: selection",
        &[json!({"CommandLine": "powershell -nop -w hidden -enc AAAA"})],
        &[json!({"CommandLine": "powershell -nop -w hidden"})],
    );
}

#[test]
fn modifier_exists() {
    check(
        "    selection:\n        EventID: 4738\n        PasswordLastSet|exists: true\n    condition: selection",
        &[json!({"EventID": 4738, "PasswordLastSet": "x"}), json!({"EventID": 4738, "PasswordLastSet": null})],
        &[json!({"EventID": 4738})],
    );
    check(
        "    selection:\n        Field|exists: false\n    condition: selection",
        &[json!({"Other": 1})],
        &[json!({"Field": ""})],
    );
}

#[test]
fn modifier_cased() {
    check(
        "    selection:\n        Value|cased: 'CamelCase'\n    condition: selection",
        &[json!({"Value": "CamelCase"})],
        &[json!({"Value": "camelcase"})],
    );
    check(
        "    selection:\n        Value|contains|cased: 'Bad'\n    condition: selection",
        &[json!({"Value": "a Bad one"})],
        &[json!({"Value": "a bad one"})],
    );
}

#[test]
fn modifier_neq() {
    check(
        "    selection:\n        User|neq:\n            - 'SYSTEM'\n            - 'LOCAL SERVICE'\n    condition: selection",
        &[json!({"User": "alice"})],
        &[json!({"User": "system"}), json!({"User": "Local Service"}), json!({"Other": "x"})],
    );
    check(
        "    selection:\n        Port|neq: 443\n    condition: selection",
        &[json!({"Port": 80})],
        &[json!({"Port": "443"})],
    );
}

#[test]
fn modifier_windash() {
    // Appendix: `-`, `/`, en dash, em dash and horizontal bar are interchangeable.
    check(
        "    selection:\n        CommandLine|windash|contains: ' -exec bypass'\n    condition: selection",
        &[
            json!({"CommandLine": "powershell -exec bypass"}),
            json!({"CommandLine": "powershell /exec bypass"}),
            json!({"CommandLine": "powershell \u{2013}exec bypass"}),
            json!({"CommandLine": "powershell \u{2014}exec bypass"}),
            json!({"CommandLine": "powershell \u{2015}exec bypass"}),
        ],
        &[json!({"CommandLine": "powershell +exec bypass"})],
    );
}

#[test]
fn modifier_re_and_flags() {
    // `re` is case-sensitive by default.
    check(
        "    selection:\n        CommandLine|re: 'cmd\\.exe /c [a-z]+'\n    condition: selection",
        &[json!({"CommandLine": "x cmd.exe /c whoami"})],
        &[json!({"CommandLine": "x CMD.EXE /c whoami"}), json!({"CommandLine": "cmdxexe /c whoami"})],
    );
    check(
        "    selection:\n        Value|re|i: '^abc$'\n    condition: selection",
        &[json!({"Value": "ABC"})],
        &[json!({"Value": "ABCD"})],
    );
    check(
        "    selection:\n        Value|re|m: '^second$'\n    condition: selection",
        &[json!({"Value": "first\nsecond\nthird"})],
        &[json!({"Value": "first second"})],
    );
    check(
        "    selection:\n        Value|re|s: 'a.b'\n    condition: selection",
        &[json!({"Value": "a\nb"})],
        &[json!({"Value": "ab"})],
    );
    // Without `s`, `.` does not match a newline.
    check(
        "    selection:\n        Value|re: 'a.b'\n    condition: selection",
        &[json!({"Value": "axb"})],
        &[json!({"Value": "a\nb"})],
    );
}

#[test]
fn modifier_base64() {
    // base64("http://") = "aHR0cDovLw==" (computed with coreutils base64).
    check(
        "    selection:\n        Value|base64: 'http://'\n    condition: selection",
        &[json!({"Value": "aHR0cDovLw=="})],
        &[json!({"Value": "AHR0CDOVLW=="}), json!({"Value": "http://"})],
    );
}

#[test]
fn modifier_base64offset() {
    // Texts holding "http://" at byte offsets 0, 1 and 2 of the encoded data.
    // base64("http://x") = aHR0cDovL3g= ; base64("ahttp://x") = YWh0dHA6Ly94 ;
    // base64("abhttp://x") = YWJodHRwOi8veA== (coreutils base64).
    check(
        "    selection:\n        Value|base64offset|contains: 'http://'\n    condition: selection",
        &[
            json!({"Value": "x aHR0cDovL3g= y"}),
            json!({"Value": "YWh0dHA6Ly94"}),
            json!({"Value": "YWJodHRwOi8veA=="}),
        ],
        &[json!({"Value": "aHR0cHM6Ly94"}), json!({"Value": "http://"})],
    );
}

#[test]
fn modifiers_utf16_and_wide() {
    // Appendix: `cmd` > `63 00 6d 00 64 00`; base64 of those bytes is "YwBtAGQA".
    check(
        "    selection:\n        Value|utf16le|base64: 'cmd'\n    condition: selection",
        &[json!({"Value": "YwBtAGQA"})],
        &[json!({"Value": "Y21k"})],
    );
    check(
        "    selection:\n        Value|wide|base64: 'cmd'\n    condition: selection",
        &[json!({"Value": "YwBtAGQA"})],
        &[json!({"Value": "Y21k"})],
    );
    // `00 63 00 6d 00 64` → "AGMAbQBk".
    check(
        "    selection:\n        Value|utf16be|base64: 'cmd'\n    condition: selection",
        &[json!({"Value": "AGMAbQBk"})],
        &[json!({"Value": "YwBtAGQA"})],
    );
    // `FF FE 63 00 6d 00 64 00` → "//5jAG0AZAA=".
    check(
        "    selection:\n        Value|utf16|base64: 'cmd'\n    condition: selection",
        &[json!({"Value": "//5jAG0AZAA="})],
        &[json!({"Value": "YwBtAGQA"})],
    );
    // The SigmaHQ idiom: UTF-16LE PowerShell -EncodedCommand payloads.
    // base64(utf16le("Invoke-Expression")) contains "SQBuAHYAbwBrAGUALQBFAHgAcAByAGUAcwBzAGkAbwBuA".
    check(
        "    selection:\n        CommandLine|wide|base64offset|contains: 'Invoke-Expression'\n    condition: selection",
        &[json!({"CommandLine": "powershell -enc SQBuAHYAbwBrAGUALQBFAHgAcAByAGUAcwBzAGkAbwBuACAAeAA="})],
        &[json!({"CommandLine": "powershell -enc SW52b2tlLUV4cHJlc3Npb24="})],
    );
}

#[test]
fn modifier_cidr() {
    // Appendix example: `DestinationIp|cidr: 10.0.0.0/8`.
    check(
        "    selection:\n        DestinationIp|cidr:\n            - 10.0.0.0/8\n            - 'fc00::/7'\n    condition: selection",
        &[json!({"DestinationIp": "10.20.30.40"}), json!({"DestinationIp": "fd12::1"})],
        &[json!({"DestinationIp": "11.0.0.1"}), json!({"DestinationIp": "2001:db8::1"}), json!({"DestinationIp": "garbage"})],
    );
}

#[test]
fn numeric_comparisons() {
    check(
        "    selection:\n        Count|gt: 10\n        Size|lte: 100\n    condition: selection",
        &[json!({"Count": 11, "Size": 100}), json!({"Count": "10.5", "Size": "-1"})],
        &[
            json!({"Count": 10, "Size": 100}),
            json!({"Count": 11, "Size": 101}),
            json!({"Count": "many", "Size": 1}),
        ],
    );
    check(
        "    selection:\n        Count|gte: 10\n        Size|lt: 100\n    condition: selection",
        &[json!({"Count": 10, "Size": 99})],
        &[json!({"Count": 9, "Size": 99}), json!({"Count": 10, "Size": 100})],
    );
}

#[test]
fn modifier_fieldref() {
    // SigmaHQ: TargetFilename|fieldref: Image (a process writing its own file).
    check(
        "    selection:\n        TargetFilename|fieldref: Image\n    condition: selection",
        &[json!({"TargetFilename": "C:\\a.exe", "Image": "c:\\A.EXE"})],
        &[
            json!({"TargetFilename": "C:\\a.exe", "Image": "c:\\b.exe"}),
            json!({"TargetFilename": "C:\\a.exe"}),
        ],
    );
    check(
        "    selection:\n        User|fieldref|neq: ParentUser\n    condition: selection",
        &[json!({"User": "alice", "ParentUser": "bob"})],
        &[json!({"User": "alice", "ParentUser": "ALICE"})],
    );
    check(
        "    selection:\n        CommandLine|fieldref|contains: Image\n    condition: selection",
        &[json!({"CommandLine": "\"C:\\x\\a.exe\" -v", "Image": "c:\\x\\a.exe"})],
        &[json!({"CommandLine": "b.exe -v", "Image": "c:\\x\\a.exe"})],
    );
}

#[test]
fn modifier_expand_with_pipeline_placeholders() {
    let mut pipeline = Pipeline::empty();
    pipeline.set_placeholder("Administrators", vec!["adm_*".into(), "root".into()]);
    let rules = rule_with(
        "    selection:\n        User|expand: '%Administrators%'\n    condition: selection",
        &pipeline,
    );
    assert_eq!(rules.matching(&event(json!({"User": "ADM_alice"}))), vec![0]);
    assert_eq!(rules.matching(&event(json!({"User": "root"}))), vec![0]);
    assert!(rules.matching(&event(json!({"User": "alice"}))).is_empty());
    // Without expand, `%name%` is literal.
    check(
        "    selection:\n        User: '%Administrators%'\n    condition: selection",
        &[json!({"User": "%administrators%"})],
        &[json!({"User": "root"})],
    );
    // Unresolved placeholders: the rule is reported, not loaded.
    let reason = rejected("    selection:\n        User|expand: '%Servers%'\n    condition: selection");
    assert!(reason.contains("%Servers%"), "{reason}");
}

#[test]
fn condition_forms() {
    let detection = "    selection_a:\n        A: 1\n    selection_b:\n        B: 1\n    filter_x:\n        X: 1\n    _ignored:\n        I: 1\n";
    let cases: &[(&str, &[Value], &[Value])] = &[
        ("selection_a and selection_b", &[json!({"A": 1, "B": 1})], &[json!({"A": 1})]),
        ("selection_a or selection_b", &[json!({"B": 1})], &[json!({"X": 1})]),
        ("selection_a and not filter_x", &[json!({"A": 1})], &[json!({"A": 1, "X": 1})]),
        ("1 of selection_*", &[json!({"B": 1})], &[json!({"X": 1})]),
        ("all of selection_*", &[json!({"A": 1, "B": 1})], &[json!({"A": 1, "X": 1})]),
        ("1 of them", &[json!({"X": 1})], &[json!({"I": 1})]),
        ("all of them", &[json!({"A": 1, "B": 1, "X": 1})], &[json!({"A": 1, "B": 1, "I": 1})]),
        (
            "selection_a or selection_b and filter_x",
            &[json!({"A": 1}), json!({"B": 1, "X": 1})],
            &[json!({"B": 1})],
        ),
        ("(selection_a or selection_b) and filter_x", &[json!({"B": 1, "X": 1})], &[json!({"A": 1})]),
        ("not selection_a and selection_b", &[json!({"B": 1})], &[json!({"A": 1, "B": 1})]),
        ("selection_a and not 1 of filter*", &[json!({"A": 1})], &[json!({"A": 1, "X": 1})]),
        ("not (selection_a or selection_b)", &[json!({"X": 1})], &[json!({"A": 1})]),
    ];
    for (condition, matching, not_matching) in cases {
        check(&format!("{detection}    condition: {condition}"), matching, not_matching);
    }
    // A list of conditions is an OR.
    check(
        &format!("{detection}    condition:\n        - selection_a\n        - filter_x"),
        &[json!({"X": 1})],
        &[json!({"B": 1})],
    );
}

#[test]
fn invalid_detections_are_reported_with_a_reason() {
    assert!(rejected("    selection:\n        A|nosuchmod: 1\n    condition: selection")
        .contains("unknown modifier nosuchmod"));
    assert!(rejected("    selection:\n        A: 1\n    condition: selection and other").contains("other"));
    assert!(rejected("    selection:\n        A: 1").contains("condition"));
    assert!(rejected("    selection:\n        A|re: '(?<=a)b'\n    condition: selection")
        .contains("regular expression"));
    assert!(
        rejected("    selection:\n        A|cidr: 'not-a-net'\n    condition: selection").contains("CIDR")
    );
    assert!(rejected("    selection:\n        A|gt: abc\n    condition: selection").contains("number"));
    assert!(
        rejected("    selection:\n        A|minute: 5\n    condition: selection").contains("time modifier")
    );
    assert!(rejected("    selection:\n        A: 1\n    condition: selection | count() > 5")
        .contains("aggregation"));
}

#[test]
fn documents_and_filters_in_one_file() {
    // Filters specification example, applied to a rule it names; plus a correlation.
    let text = r#"
title: Data Compressed - rar.exe
id: 6f3e2987-db24-4c78-a860-b4f4095a7095
logsource:
    category: process_creation
    product: windows
detection:
    selection:
        Image|endswith: '\rar.exe'
    condition: selection
---
title: Filter Administrator account
description: The valid administrator account start with adm_
logsource:
    category: process_creation
    product: windows
filter:
    rules:
        - 6f3e2987-db24-4c78-a860-b4f4095a7095 # Data Compressed - rar.exe
        - df0841c0-9846-4e9f-ad8a-7df91571771b # Login on jump host
    selection:
        User|startswith: 'adm_'
    condition: selection
---
title: Recon
correlation:
    type: temporal
    rules:
        - recon_cmd_a
    group-by:
        - User
    timespan: 5m
---
title: Not a rule
something: else
"#;
    let (rules, report) = RuleSet::from_yaml(text, &Pipeline::default_windows());
    assert_eq!(rules.len(), 1);
    assert_eq!(report.correlations.len(), 1);
    assert_eq!(report.correlations[0].doc["correlation"]["type"], json!("temporal"));
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].rule.as_deref(), Some("Not a rule"));
    let sysmon = |user: &str| {
        let Value::Object(map) = json!({
            "mamori.logsource.product": "windows", "mamori.logsource.service": "sysmon",
            "Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1,
            "Image": "C:\\Program Files\\WinRAR\\Rar.exe", "User": user})
        else {
            unreachable!()
        };
        map
    };
    assert_eq!(rules.matching(&sysmon("CORP\\alice")), vec![0]);
    assert!(rules.matching(&sysmon("adm_alice")).is_empty(), "the filter suppresses admin accounts");
}

#[test]
fn yaml_errors_do_not_stop_other_files() {
    let dir = std::env::temp_dir().join(format!("mamori-sigma-test-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("broken.yml"), "title: [unclosed\n").unwrap();
    std::fs::write(
        dir.join("sub/good.yaml"),
        "title: good\nlogsource:\n    product: test\ndetection:\n    sel:\n        A: 1\n    condition: sel\n",
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not a rule").unwrap();
    let (rules, report) = RuleSet::load(std::slice::from_ref(&dir), &Pipeline::empty());
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(report.files, 2);
    assert_eq!(rules.len(), 1);
    assert_eq!(report.problems.len(), 1);
    assert!(report.problems[0].path.ends_with("broken.yml"));
    assert!(report.problems[0].reason.contains("YAML"), "{}", report.problems[0].reason);
}
