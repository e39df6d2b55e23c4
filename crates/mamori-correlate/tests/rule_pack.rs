//! The hospital default pack (crates/mamori-rules/rules): its correlation rules and their detection
//! building blocks, run on synthetic firewall, endpoint, Windows and sshd streams. The
//! detection engine is not part of this crate: which detection matched each event is stated
//! by hand, from the detection YAML.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;

use common::*;
use mamori_correlate::{CorrelationMatch, Correlator, Event, RuleRef};
use serde_json::{json, Value};

fn pack_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../mamori-rules/rules"))
}

/// Every document of every `.yml` file in the pack, with its file.
fn pack_documents() -> Vec<(PathBuf, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(pack_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            yaml_docs(&text).into_iter().map(move |d| (path.clone(), d))
        })
        .collect()
}

fn load_pack() -> Correlator {
    let correlations: Vec<(PathBuf, Value)> =
        pack_documents().into_iter().filter(|(_, d)| d.get("correlation").is_some()).collect();
    let (correlator, problems) = Correlator::load(&correlations);
    assert!(problems.is_empty(), "{problems:#?}");
    correlator
}

/// Event fields each logsource of the shared event model provides (see the detection rule
/// descriptions); a detection that reads anything else would never match.
fn known_fields(logsource: &Value) -> &'static [&'static str] {
    let get = |k: &str| logsource.get(k).and_then(Value::as_str);
    match (get("product"), get("service"), get("category")) {
        (None, None, Some("firewall")) => &["event.action", "event.type", "source.ip", "destination.ip"],
        (Some("mamori"), Some("agent"), None) => &["event.kind", "host.name", "host.ip"],
        // The vault's CEF events (vendor mamori, product vault).
        (Some("mamori"), None, None) => &["deviceProduct", "deviceEventClassId"],
        (Some("windows"), Some("security"), None) => &["EventID", "LogonType", "TargetUserName", "IpAddress"],
        (Some("linux"), Some("sshd"), None) => &["event.action", "event.outcome", "user.name", "source.ip"],
        other => panic!("logsource {other:?} is not one the pack should use"),
    }
}

#[test]
fn every_pack_document_is_a_valid_detection_or_correlation() {
    let docs = pack_documents();
    assert_eq!(docs.len(), 17);
    let mut identities = HashSet::new();
    let mut detections = 0;
    for (path, doc) in &docs {
        let file = path.file_name().unwrap().to_str().unwrap();
        assert!(
            file.len() >= 10
                && file.len() <= 70
                && file.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'),
            "{file}: the spec's file name convention"
        );
        let id = doc["id"].as_str().unwrap_or_else(|| panic!("{file}: id"));
        assert_eq!(id.len(), 36, "{file}: UUID id");
        assert!(identities.insert(id.to_string()), "{file}: duplicate id");
        assert!(doc["title"].as_str().is_some_and(|t| !t.is_empty()), "{file}: title");
        assert!(
            doc["description"].as_str().is_some_and(|d| d.len() > 100),
            "{file}: the description states what the rule expects"
        );
        if doc.get("correlation").is_some() {
            assert!(file.starts_with("mr_"), "{file}: correlation files start with mr_");
            continue;
        }
        detections += 1;
        let name = doc["name"].as_str().unwrap_or_else(|| panic!("{file}: name"));
        assert!(identities.insert(name.to_string()), "{file}: duplicate name");
        assert_eq!(format!("{name}.yml"), file, "detection files are named after the rule");
        let logsource = &doc["logsource"];
        let fields = known_fields(logsource);
        let detection = doc["detection"].as_object().unwrap_or_else(|| panic!("{file}: detection"));
        let condition = detection["condition"].as_str().unwrap_or_else(|| panic!("{file}: condition"));
        for (selection, body) in detection.iter().filter(|(k, _)| *k != "condition") {
            let referenced = condition.contains(selection.as_str())
                || condition.contains("1 of filter_") && selection.starts_with("filter_");
            assert!(referenced, "{file}: selection {selection} unused by the condition");
            for field in body.as_object().unwrap().keys() {
                let bare = field.split('|').next().unwrap();
                assert!(
                    fields.contains(&bare),
                    "{file}: field {bare} is not in the event model for {logsource}"
                );
            }
        }
    }
    assert_eq!(detections, 10);
}

#[test]
fn every_correlation_reference_resolves_within_the_pack() {
    let docs = pack_documents();
    let names: HashSet<&str> =
        docs.iter().filter_map(|(_, d)| d.get("name").and_then(Value::as_str)).collect();
    let correlator = load_pack();
    assert_eq!(correlator.len(), 7);
    for info in correlator.rules() {
        for reference in &info.rules {
            assert!(names.contains(reference.as_str()), "{}: {reference}", info.title);
        }
        for (alias, per_rule) in &info.aliases {
            assert!(info.group_by.contains(alias), "{}: alias {alias} unused", info.title);
            for rule in per_rule.keys() {
                assert!(info.rules.contains(rule), "{}: alias for {rule}", info.title);
            }
        }
    }
}

// ---- Synthetic events in the shared event model --------------------------------------

const T0: i64 = 1_763_900_000_000; // 2025-11-23T12:13:20Z

fn agent_malware_alert(host: &str, ips: Value) -> Event {
    event(&[
        ("@timestamp", json!("2025-11-23T12:13:20Z")),
        ("mamori.logsource.product", json!("mamori")),
        ("mamori.logsource.service", json!("agent")),
        ("event.kind", json!("alert")),
        ("event.category", json!("malware")),
        ("host.name", json!(host.to_string())),
        ("host.ip", ips),
        ("rule.name", json!("Ransom.Generic.Encryptor")),
    ])
}

fn paloalto_traffic(src: &str, dst: &str, action: &str) -> Event {
    event(&[
        ("mamori.logsource.product", json!("paloalto")),
        ("mamori.logsource.service", json!("traffic")),
        ("mamori.logsource.category", json!("firewall")),
        ("source.ip", json!(src.to_string())),
        ("destination.ip", json!(dst.to_string())),
        ("destination.port", json!(443)),
        ("event.action", json!(action.to_string())),
        ("event.type", json!(if action == "allow" { "allowed" } else { "denied" })),
    ])
}

fn fortigate_traffic(src: &str, dst: &str, action: &str) -> Event {
    event(&[
        ("mamori.logsource.product", json!("fortinet")),
        ("mamori.logsource.service", json!("fortigate")),
        ("mamori.logsource.category", json!("firewall")),
        ("source.ip", json!(src.to_string())),
        ("destination.ip", json!(dst.to_string())),
        ("event.action", json!(action.to_string())),
        ("event.type", json!(if action == "deny" { "denied" } else { "allowed" })),
    ])
}

fn windows_security(event_id: u64, user: &str, ip: &str, logon_type: Option<u64>) -> Event {
    let mut e = event(&[
        ("mamori.logsource.product", json!("windows")),
        ("mamori.logsource.service", json!("security")),
        ("Channel", json!("Security")),
        ("Computer", json!("DC01.hospital.local")),
        ("EventID", json!(event_id)),
        ("TargetUserName", json!(user.to_string())),
        ("IpAddress", json!(ip.to_string())),
    ]);
    if let Some(t) = logon_type {
        e.insert("LogonType".into(), json!(t));
    }
    e
}

fn sshd_login(user: &str, ip: &str, success: bool) -> Event {
    event(&[
        ("mamori.logsource.product", json!("linux")),
        ("mamori.logsource.service", json!("sshd")),
        ("event.action", json!("ssh_login")),
        ("event.outcome", json!(if success { "success" } else { "failure" })),
        ("user.name", json!(user.to_string())),
        ("source.ip", json!(ip.to_string())),
    ])
}

/// The pack's detections, as `RuleRef`s (id and name from the YAML).
fn detection(name: &'static str) -> RuleRef<'static> {
    let id = match name {
        "mamori_agent_malware_alert" => "850ed5d9-e249-4349-8fcd-2075d84d551e",
        "firewall_allowed_outbound_internet" => "a75b9fac-d8f0-44eb-b244-582b6b4fd30c",
        "firewall_denied_from_internal_host" => "a5e028f4-296e-43bc-9e99-960ec64ffe73",
        "win_remote_logon_from_host" => "85d2da4a-f948-41fc-a6ef-96c5acafa6f0",
        "win_failed_logon" => "c169e0af-b3bf-477f-8de3-e030c07a56a0",
        "win_successful_logon" => "3d50fa0d-cd01-4e82-8c03-3b029597d614",
        "sshd_failed_login" => "5fd299b4-afa5-43f6-ab83-17eb077e47c7",
        "sshd_accepted_login" => "8da56003-776f-4ce8-b484-862d63ec72ab",
        other => panic!("no detection {other}"),
    };
    RuleRef { id: Some(id), name: Some(name) }
}

/// A stream of (time, event, detections that matched it), fed in order; then end of input.
fn run(stream: &[(i64, Event, Vec<&'static str>)]) -> (Correlator, Vec<CorrelationMatch>) {
    let mut correlator = load_pack();
    let mut out = Vec::new();
    for (n, (time, event, matched)) in stream.iter().enumerate() {
        for name in matched {
            correlator.observe(detection(name), *time, event, n as u64, &mut out);
        }
    }
    correlator.flush(i64::MAX, &mut out);
    (correlator, out)
}

fn titles(correlator: &Correlator, matches: &[CorrelationMatch]) -> Vec<String> {
    matches.iter().map(|m| correlator.rule(m.rule_index).title.clone()).collect()
}

const MALWARE_EGRESS: &str = "Malware on a host followed by allowed outbound internet traffic from it";

/// Background traffic from other hosts, interleaved in every malware scenario.
fn background(stream: &mut Vec<(i64, Event, Vec<&'static str>)>) {
    for i in 0..30 {
        let src = format!("10.20.0.{}", i % 7 + 10);
        stream.push((
            T0 + i * 40 * SECOND,
            paloalto_traffic(&src, "198.51.100.20", "allow"),
            vec!["firewall_allowed_outbound_internet"],
        ));
        stream.push((
            T0 + i * 40 * SECOND + 5,
            fortigate_traffic(&src, "10.20.1.1", "accept"),
            vec![], // internal destination: the detection does not match
        ));
    }
}

fn sorted(mut stream: Vec<(i64, Event, Vec<&'static str>)>) -> Vec<(i64, Event, Vec<&'static str>)> {
    stream.sort_by_key(|(t, ..)| *t);
    stream
}

#[test]
fn malware_then_allowed_internet_traffic_within_10_minutes_fires() {
    let mut stream = Vec::new();
    background(&mut stream);
    stream.push((
        T0 + MINUTE,
        agent_malware_alert("ward3-pc07", json!(["10.20.0.99", "fe80::1c2:3ff:fe44:5566"])),
        vec!["mamori_agent_malware_alert"],
    ));
    // 9 minutes 59 seconds later the same host reaches the internet through the FortiGate.
    stream.push((
        T0 + 10 * MINUTE + 59 * SECOND,
        fortigate_traffic("10.20.0.99", "203.0.113.50", "close"),
        vec!["firewall_allowed_outbound_internet"],
    ));
    let stream = sorted(stream);
    let (correlator, matches) = run(&stream);
    assert_eq!(titles(&correlator, &matches), vec![MALWARE_EGRESS]);
    let m = &matches[0];
    assert_eq!(m.group, vec![("host_ip".to_string(), json!("10.20.0.99"))]);
    assert_eq!(m.last_ms - m.first_ms, 9 * MINUTE + 59 * SECOND);
    assert_eq!(correlator.rule(m.rule_index).level.as_deref(), Some("critical"));
    // The refs point at the alert and the firewall log in the stream.
    let kinds: Vec<&str> = m
        .event_refs
        .iter()
        .map(|&r| stream[r as usize].1["mamori.logsource.product"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["mamori", "fortinet"]);
}

#[test]
fn malware_egress_reversed_order_does_not_fire() {
    let mut stream = Vec::new();
    background(&mut stream);
    stream.push((
        T0 + MINUTE,
        paloalto_traffic("10.20.0.99", "203.0.113.50", "allow"),
        vec!["firewall_allowed_outbound_internet"],
    ));
    stream.push((
        T0 + 3 * MINUTE,
        agent_malware_alert("ward3-pc07", json!("10.20.0.99")),
        vec!["mamori_agent_malware_alert"],
    ));
    let (correlator, matches) = run(&sorted(stream));
    assert!(matches.is_empty(), "{:?}", titles(&correlator, &matches));
}

#[test]
fn malware_egress_11_minutes_apart_does_not_fire() {
    let mut stream = Vec::new();
    background(&mut stream);
    stream.push((
        T0 + MINUTE,
        agent_malware_alert("ward3-pc07", json!("10.20.0.99")),
        vec!["mamori_agent_malware_alert"],
    ));
    stream.push((
        T0 + 12 * MINUTE,
        paloalto_traffic("10.20.0.99", "203.0.113.50", "allow"),
        vec!["firewall_allowed_outbound_internet"],
    ));
    let (correlator, matches) = run(&sorted(stream));
    assert!(matches.is_empty(), "{:?}", titles(&correlator, &matches));
}

#[test]
fn malware_egress_from_another_host_or_denied_does_not_fire() {
    let mut stream = Vec::new();
    background(&mut stream);
    stream.push((
        T0 + MINUTE,
        agent_malware_alert("ward3-pc07", json!("10.20.0.99")),
        vec!["mamori_agent_malware_alert"],
    ));
    // Denied traffic from the infected host: not the allowed-traffic detection.
    stream.push((
        T0 + 2 * MINUTE,
        paloalto_traffic("10.20.0.99", "203.0.113.50", "deny"),
        vec!["firewall_denied_from_internal_host"],
    ));
    // The background hosts keep talking to the internet: other groups.
    let (correlator, matches) = run(&sorted(stream));
    assert!(matches.is_empty(), "{:?}", titles(&correlator, &matches));
}

#[test]
fn the_pack_suppresses_building_blocks_but_not_unrelated_rules() {
    let correlator = load_pack();
    for name in [
        "mamori_agent_malware_alert",
        "firewall_allowed_outbound_internet",
        "firewall_denied_from_internal_host",
        "win_remote_logon_from_host",
        "win_failed_logon",
        "win_successful_logon",
        "sshd_failed_login",
        "sshd_accepted_login",
    ] {
        assert!(correlator.is_referenced(detection(name)), "{name}");
        assert!(correlator.suppress_generated(detection(name)), "{name}");
    }
    let other = RuleRef { id: Some("0d3c8f0e-0000-4000-8000-000000000000"), name: None };
    assert!(!correlator.is_referenced(other) && !correlator.suppress_generated(other));
}

const BURST_LOGON: &str = "Denied connection burst from an internal host followed by logons from it";

fn denied_burst(stream: &mut Vec<(i64, Event, Vec<&'static str>)>, src: &str, count: i64) {
    for i in 0..count {
        // A sweep over one subnet, alternating firewalls.
        let dst = format!("10.30.0.{}", i + 1);
        let event = if i % 2 == 0 {
            paloalto_traffic(src, &dst, "deny")
        } else {
            fortigate_traffic(src, &dst, "deny")
        };
        stream.push((T0 + i * 5 * SECOND, event, vec!["firewall_denied_from_internal_host"]));
    }
}

#[test]
fn denied_burst_then_network_logon_from_the_same_address_fires() {
    let mut stream = Vec::new();
    denied_burst(&mut stream, "10.20.5.5", 25);
    stream.push((
        T0 + 20 * MINUTE,
        windows_security(4624, "svc_backup", "10.20.5.5", Some(3)),
        vec!["win_remote_logon_from_host", "win_successful_logon"],
    ));
    let (correlator, matches) = run(&stream);
    assert_eq!(titles(&correlator, &matches), vec![BURST_LOGON]);
    assert_eq!(matches[0].group, vec![("internal_ip".to_string(), json!("10.20.5.5"))]);
    // The burst fired at its 20th denial (95 s); the logon came 18m25s after it.
    assert_eq!(matches[0].first_ms, T0 + 95 * SECOND);
    assert_eq!(matches[0].last_ms, T0 + 20 * MINUTE);
}

#[test]
fn denied_burst_too_small_too_early_or_other_address_does_not_fire() {
    // 19 denials only.
    let mut small = Vec::new();
    denied_burst(&mut small, "10.20.5.5", 19);
    small.push((
        T0 + 5 * MINUTE,
        windows_security(4624, "svc_backup", "10.20.5.5", Some(10)),
        vec!["win_remote_logon_from_host", "win_successful_logon"],
    ));
    assert!(run(&small).1.is_empty());
    // Enough denials, but the logon comes from another address.
    let mut other = Vec::new();
    denied_burst(&mut other, "10.20.5.5", 25);
    other.push((
        T0 + 5 * MINUTE,
        windows_security(4624, "svc_backup", "10.20.5.6", Some(3)),
        vec!["win_remote_logon_from_host", "win_successful_logon"],
    ));
    assert!(run(&other).1.is_empty());
    // The logon before the burst.
    let mut early = vec![(
        T0 - MINUTE,
        windows_security(4624, "svc_backup", "10.20.5.5", Some(3)),
        vec!["win_remote_logon_from_host", "win_successful_logon"],
    )];
    denied_burst(&mut early, "10.20.5.5", 25);
    assert!(run(&early).1.is_empty());
}

const WIN_BRUTE: &str = "Windows brute force followed by a successful logon";
const SSH_BRUTE: &str = "SSH brute force followed by an accepted login";

#[test]
fn windows_failed_logons_then_success_for_the_same_user_and_source_fires() {
    let mut stream = Vec::new();
    for i in 0..12 {
        stream.push((
            T0 + i * 20 * SECOND,
            windows_security(4625, "dr.house", "192.0.2.44", Some(3)),
            vec!["win_failed_logon"],
        ));
    }
    // A success for the same user from elsewhere, then from the attacking address.
    stream.push((
        T0 + 5 * MINUTE,
        windows_security(4624, "dr.house", "10.20.9.9", Some(3)),
        vec!["win_successful_logon", "win_remote_logon_from_host"],
    ));
    stream.push((
        T0 + 6 * MINUTE,
        windows_security(4624, "dr.house", "192.0.2.44", Some(3)),
        vec!["win_successful_logon", "win_remote_logon_from_host"],
    ));
    let (correlator, matches) = run(&stream);
    assert_eq!(titles(&correlator, &matches), vec![WIN_BRUTE]);
    assert_eq!(
        matches[0].group,
        vec![
            ("TargetUserName".to_string(), json!("dr.house")),
            ("IpAddress".to_string(), json!("192.0.2.44"))
        ]
    );
    // Ten failures (refs 0..=9 of the stream) and the success (ref 13).
    let mut expected: Vec<u64> = (0..10).collect();
    expected.push(13);
    assert_eq!(matches[0].event_refs, expected);
}

#[test]
fn windows_few_failures_or_success_first_does_not_fire() {
    let mut few = Vec::new();
    for i in 0..9 {
        few.push((
            T0 + i * SECOND,
            windows_security(4625, "u", "192.0.2.44", Some(3)),
            vec!["win_failed_logon"],
        ));
    }
    few.push((T0 + MINUTE, windows_security(4624, "u", "192.0.2.44", Some(3)), vec!["win_successful_logon"]));
    assert!(run(&few).1.is_empty());
    let mut first =
        vec![(T0, windows_security(4624, "u", "192.0.2.44", Some(3)), vec!["win_successful_logon"])];
    for i in 1..=10 {
        first.push((
            T0 + i * SECOND,
            windows_security(4625, "u", "192.0.2.44", Some(3)),
            vec!["win_failed_logon"],
        ));
    }
    assert!(run(&first).1.is_empty());
}

#[test]
fn sshd_failed_then_accepted_fires_only_for_the_same_user_and_source() {
    let mut stream = Vec::new();
    for i in 0..10 {
        stream.push((
            T0 + i * 3 * SECOND,
            sshd_login("root", "198.51.100.77", false),
            vec!["sshd_failed_login"],
        ));
        // Another source guessing the same account at the same time.
        stream.push((
            T0 + i * 3 * SECOND + 1,
            sshd_login("root", "198.51.100.78", false),
            vec!["sshd_failed_login"],
        ));
    }
    stream.push((T0 + MINUTE, sshd_login("root", "198.51.100.77", true), vec!["sshd_accepted_login"]));
    // 11 minutes after the other source's tenth failure: too late.
    stream.push((
        T0 + 27 * SECOND + 1 + 11 * MINUTE,
        sshd_login("root", "198.51.100.78", true),
        vec!["sshd_accepted_login"],
    ));
    let (correlator, matches) = run(&stream);
    assert_eq!(titles(&correlator, &matches), vec![SSH_BRUTE]);
    assert_eq!(
        matches[0].group,
        vec![("user.name".to_string(), json!("root")), ("source.ip".to_string(), json!("198.51.100.77"))]
    );
}
