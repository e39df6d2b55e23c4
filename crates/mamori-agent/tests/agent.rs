//! The agent against a test manager built on the real CA and TLS configuration: enrollment,
//! event shipping with failures and restarts, renewal, policy and scheduled scans.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::*;
use mamori_agent::{enroll, Error};
use mamori_proto::{kind, Policy, ScheduledScan, SpooledEvent};
use mamori_spool::Spool;
use serde_json::value::RawValue;

const LIMIT: Duration = Duration::from_secs(15);

/// Appends `n` test events to the agent's spool the way the agent itself stores events.
fn prefill(dir: &Path, n: u64) -> Vec<u64> {
    let mut spool = Spool::open(&dir.join("spool"), mamori_spool::Options::default()).unwrap();
    (0..n)
        .map(|i| {
            let data = RawValue::from_string(format!(r#"{{"n":{i}}}"#)).unwrap();
            let payload = serde_json::to_vec(&SpooledEvent { time_ms: 1_000 + i as i64, data }).unwrap();
            spool.append("test.event", &payload).unwrap()
        })
        .collect()
}

fn spool_pending(dir: &Path) -> u64 {
    Spool::open(&dir.join("spool"), mamori_spool::Options::default()).unwrap().pending()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_saves_the_identity_and_never_sends_the_key() {
    let mgr = TestManager::start().await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("agent");
    let enrolled = enroll(&dir, mgr.enroll_options()).await.unwrap();

    assert_eq!(enrolled.device_id, "dev-1");
    assert!(enrolled.replaced.is_empty());
    assert!(enrolled.cert_not_after > SystemTime::now() + Duration::from_secs(6 * 24 * 3600));
    assert_eq!(mode(&dir), 0o700);
    for f in ["agent.json", "device.key", "device.crt", "ca.crt"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    let key_pem = std::fs::read_to_string(dir.join("device.key")).unwrap();
    assert!(key_pem.contains("PRIVATE KEY"));

    let rec = mgr.rec();
    assert_eq!(rec.enroll_bodies.len(), 1);
    let body = &rec.enroll_bodies[0];
    assert!(!body.contains("PRIVATE KEY"), "the enrollment request carried a private key");
    let key_b64: String = key_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!body.contains(&key_b64[..40]), "the enrollment request carried key material");
    let req = &rec.enrolls[0];
    assert_eq!(req.hostname, "ward-3-pc");
    assert!(req.previous_device_id.is_none());
    assert_eq!(req.machine_id.len(), 64, "the machine id is sent hashed");
    assert!(!body.contains(MACHINE), "the raw machine id was sent");
    drop(rec);

    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("agent.json")).unwrap()).unwrap();
    assert_eq!(cfg["device_id"], "dev-1");
    assert_eq!(cfg["server_url"], mgr.url.as_str());
    assert_eq!(cfg["ca_fingerprint"], mgr.fingerprint.as_str());
    assert_eq!(std::fs::read_to_string(dir.join("ca.crt")).unwrap(), mgr.ca.cert_pem());

    // The saved certificate is the manager's, for the saved key, naming the device.
    let st = mamori_agent::status(&dir).unwrap();
    assert_eq!(st.device_id, "dev-1");
    assert_eq!(st.server_url, mgr.url);
    assert_eq!(st.policy_version, 0);
    assert!(!st.running);
    assert_eq!(st.cert_not_after, enrolled.cert_not_after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_with_the_wrong_ca_fingerprint_fails_clearly_and_saves_nothing() {
    let mgr = TestManager::start().await;
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _) = mamori_pki::Ca::load_or_create(other.path(), "someone else").unwrap();
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("agent");
    let opts = mamori_agent::EnrollOptions { ca_fingerprint: other_ca.fingerprint(), ..mgr.enroll_options() };
    let err = enroll(&dir, opts).await.unwrap_err();
    assert!(matches!(err, Error::CaMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("did not match the pinned fingerprint"), "{err}");
    assert!(!dir.exists(), "nothing may be saved");
    assert!(mgr.rec().enroll_bodies.is_empty(), "no request may reach an unpinned manager");

    // Plain HTTP is refused before any connection.
    let opts =
        mamori_agent::EnrollOptions { server_url: mgr.url.replace("https", "http"), ..mgr.enroll_options() };
    let err = enroll(&dir, opts).await.unwrap_err();
    assert!(err.to_string().contains("only https://"), "{err}");
    assert!(!dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_shows_the_managers_error_message() {
    let mgr = TestManager::start().await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("agent");
    let opts = mamori_agent::EnrollOptions { token: EXPIRED_TOKEN.into(), ..mgr.enroll_options() };
    let err = enroll(&dir, opts).await.unwrap_err();
    assert!(matches!(&err, Error::Api { status: 401, code, .. } if code == "token_expired"), "{err:?}");
    assert!(err.to_string().contains(EXPIRED_MESSAGE), "{err}");
    assert!(!dir.exists(), "nothing may be saved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_refuses_to_overwrite_and_force_makes_a_new_identity() {
    let mgr = TestManager::start().await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("agent");
    enroll(&dir, mgr.enroll_options()).await.unwrap();
    let first_key = std::fs::read(dir.join("device.key")).unwrap();
    // Events queued under the first identity must survive re-enrollment.
    prefill(&dir, 3);

    let err = enroll(&dir, mgr.enroll_options()).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyEnrolled { .. }), "{err:?}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(mgr.rec().enrolls.len(), 1, "a refused re-enrollment must not contact the manager");

    let again =
        enroll(&dir, mamori_agent::EnrollOptions { force: true, ..mgr.enroll_options() }).await.unwrap();
    assert_eq!(again.device_id, "dev-2");
    assert_eq!(again.replaced, ["dev-1"]);
    assert_eq!(mgr.rec().enrolls[1].previous_device_id.as_deref(), Some("dev-1"));
    assert_ne!(
        std::fs::read(dir.join("device.key")).unwrap(),
        first_key,
        "re-enrollment must make a new key"
    );
    assert_eq!(mamori_agent::status(&dir).unwrap().device_id, "dev-2");
    assert_eq!(spool_pending(&dir), 3, "the spool survives re-enrollment");

    // The new identity works: its events reach the manager under the new device id.
    let agent = RunningAgent::start(&dir, run_options());
    assert!(wait_until(LIMIT, || mgr.seqs_of("dev-2").len() >= 4).await);
    agent.stop().await.unwrap();
    assert!(mgr.seqs_of("dev-1").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_ships_spooled_events_and_acks_them() {
    let mgr = TestManager::start().await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("agent");
    enroll(&dir, mgr.enroll_options()).await.unwrap();
    let seqs = prefill(&dir, 25);

    let agent = RunningAgent::start(&dir, mamori_agent::RunOptions { batch_max_events: 7, ..run_options() });
    // 25 test events, then agent.started.
    assert!(wait_until(LIMIT, || mgr.seqs_of("dev-1").len() == 26).await, "not all events arrived");
    assert!(wait_until(LIMIT, || !mgr.rec().heartbeats.is_empty()).await);
    let st = mamori_agent::status(&dir).unwrap();
    assert!(st.running, "status must see the running agent");
    agent.stop().await.unwrap();

    let got = mgr.rec().events.clone();
    let test_events: Vec<_> = got.iter().filter(|e| e.kind == "test.event").collect();
    assert_eq!(test_events.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs, "in order, each once");
    assert_eq!(test_events[3].data["n"], 3);
    assert_eq!(test_events[3].time_ms, 1_003, "the time the event happened, not when it was sent");
    let started: Vec<_> = got.iter().filter(|e| e.kind == kind::AGENT_STARTED).collect();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].seq, 26);
    assert_eq!(started[0].data["agent"]["id"], "dev-1");
    assert_eq!(started[0].data["event"]["action"], "agent_started");
    assert!(mgr.rec().event_requests >= 4, "batches of at most 7 events");

    let (device, _, hb) = mgr.rec().heartbeats[0].clone();
    assert_eq!(device, "dev-1");
    assert_eq!(hb.hostname, "ward-3-pc");
    assert_eq!(hb.policy_version, 0);
    assert_eq!(hb.agent_version, mamori_agent::AGENT_VERSION);

    assert_eq!(spool_pending(&dir), 0, "everything delivered was acked");
    let st = mamori_agent::status(&dir).unwrap();
    assert!(!st.running);
    assert_eq!(st.spool_pending, 0);
    assert!(st.last_heartbeat.is_some());
    // `mamori agent status` prints this as JSON, with readable times.
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["device_id"], "dev-1");
    assert!(json["cert_not_after"].as_str().is_some_and(|t| t.ends_with('Z') && t.contains('T')), "{json}");
    assert!(json["last_heartbeat"].is_string(), "{json}");
    assert_eq!(json["last_error"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_retries_after_manager_errors_without_losing_events() {
    let mgr = TestManager::start().await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("agent");
    enroll(&dir, mgr.enroll_options()).await.unwrap();
    prefill(&dir, 40);
    mgr.rec().fail_events = 2;

    let agent = RunningAgent::start(&dir, run_options());
    assert!(wait_until(LIMIT, || mgr.seqs_of("dev-1").len() == 41).await, "events lost after 503s");
    assert!(!agent.is_finished(), "a failing manager must not stop the agent");
    agent.stop().await.unwrap();
    let rec = mgr.rec();
    assert_eq!(rec.fail_events, 0, "both failures were retried");
    assert_eq!(rec.event_requests, 3, "two refused requests, then one that carried everything");
    assert_eq!(mgr_seq_range(&rec.events), (1..=41).collect::<HashSet<u64>>());
    drop(rec);
    assert_eq!(spool_pending(&dir), 0);
}

fn mgr_seq_range(events: &[Received]) -> HashSet<u64> {
    events.iter().map(|e| e.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_agent_mid_stream_delivers_every_event() {
    let mgr = TestManager::start().await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("agent");
    enroll(&dir, mgr.enroll_options()).await.unwrap();
    prefill(&dir, 300);
    mgr.rec().events_delay = Duration::from_millis(20);
    let opts = mamori_agent::RunOptions { batch_max_events: 10, ..run_options() };

    let agent = RunningAgent::start(&dir, opts.clone());
    assert!(wait_until(LIMIT, || mgr.seqs_of("dev-1").len() >= 60).await);
    agent.stop().await.unwrap();
    let after_first = mgr.seqs_of("dev-1").len();
    assert!(after_first < 301, "the first run was to be stopped mid-stream");

    // Two agent.started events (one per run) on top of the 300.
    let agent = RunningAgent::start(&dir, opts);
    assert!(wait_until(LIMIT, || mgr.seqs_of("dev-1").len() == 302).await, "events lost across a restart");
    agent.stop().await.unwrap();
    assert_eq!(mgr.seqs_of("dev-1"), (1..=302).collect::<HashSet<u64>>());
    assert_eq!(mgr.events_of_kind(kind::AGENT_STARTED).len(), 2);
    assert_eq!(spool_pending(&dir), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_is_renewed_saved_and_used() {
    let mgr = TestManager::start().await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("agent");
    enroll(&dir, mgr.enroll_options()).await.unwrap();
    let original = saved_serial(&dir);

    // With a tiny fraction every heartbeat finds the certificate due for renewal.
    let agent = RunningAgent::start(&dir, mamori_agent::RunOptions { renew_fraction: 1e-9, ..run_options() });
    assert!(wait_until(LIMIT, || mgr.rec().renewals.len() >= 2).await, "no renewal");
    // A heartbeat made with a renewed certificate proves the client was rebuilt with it.
    assert!(
        wait_until(LIMIT, || {
            let rec = mgr.rec();
            rec.heartbeats.iter().any(|(_, serial, _)| rec.renewals.contains(serial))
        })
        .await,
        "the renewed certificate was not used"
    );
    agent.stop().await.unwrap();

    let saved = saved_serial(&dir);
    assert_ne!(saved, original);
    assert!(mgr.rec().renewals.contains(&saved), "device.crt holds a certificate the manager issued");
    assert_eq!(mode(&dir.join("device.crt")), 0o600);
    assert_eq!(mamori_agent::status(&dir).unwrap().cert_serial, saved);
    assert!(mgr.rec().heartbeats.iter().all(|(d, _, _)| d == "dev-1"), "renewal keeps the device id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_policy_schedules_a_scan_whose_findings_reach_the_manager_once() {
    let mgr = TestManager::start().await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("agent");
    enroll(&dir, mgr.enroll_options()).await.unwrap();

    let tree = tempfile::tempdir().unwrap();
    let infected = tree.path().join("sub/eicar.com");
    std::fs::create_dir_all(infected.parent().unwrap()).unwrap();
    std::fs::write(&infected, eicar()).unwrap();
    std::fs::write(tree.path().join("clean.txt"), b"nothing to see").unwrap();
    // One detection per engine: a YARA rule, a hash list entry (SHA-256 of "hello"), EICAR.
    std::fs::write(tree.path().join("marker.txt"), b"xx mamori-test-marker xx").unwrap();
    std::fs::write(tree.path().join("hashed.txt"), b"hello").unwrap();
    let conf = tempfile::tempdir().unwrap();
    let rule_file = conf.path().join("marker.yar");
    std::fs::write(&rule_file, "rule Test_Marker { strings: $a = \"mamori-test-marker\" condition: $a }\n")
        .unwrap();
    let hash_list = conf.path().join("hashes.txt");
    std::fs::write(&hash_list, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824;greeting\n")
        .unwrap();
    let missing_rules = conf.path().join("no-such-rules");
    let s = |p: &Path| p.to_string_lossy().into_owned();

    let agent = RunningAgent::start(&dir, run_options());
    assert!(wait_until(LIMIT, || !mgr.rec().heartbeats.is_empty()).await);
    assert!(mgr.events_of_kind(kind::SCAN_SUMMARY).is_empty(), "no scans before a policy asks for one");
    mgr.rec().policy = Policy {
        version: 1,
        scans: vec![ScheduledScan {
            name: "daily".into(),
            paths: vec![s(tree.path())],
            every_secs: 3600,
            rules: vec![s(&missing_rules), s(&rule_file)],
            hashes: vec![s(&hash_list), s(conf.path())],
            exclude: vec![],
            quarantine: true,
        }],
        ..Policy::default()
    };
    assert!(
        wait_until(LIMIT, || !mgr.events_of_kind(kind::SCAN_SUMMARY).is_empty()).await,
        "no scan summary"
    );
    agent.stop().await.unwrap();

    let applied = mgr.events_of_kind(kind::POLICY_APPLIED);
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].data["mamori"]["policy"]["version"], 1);
    let mut findings = mgr.events_of_kind(kind::SCAN_FINDING);
    findings.sort_by_key(|f| f.data["file"]["path"].as_str().unwrap_or_default().to_string());
    let found: Vec<(&str, &str)> = findings
        .iter()
        .map(|f| (f.data["file"]["name"].as_str().unwrap(), f.data["rule"]["category"].as_str().unwrap()))
        .collect();
    assert_eq!(found, [("hashed.txt", "hash"), ("marker.txt", "yara"), ("eicar.com", "builtin")]);
    assert_eq!(findings[1].data["rule"]["name"], "Test_Marker");
    let f = &findings[2].data;
    assert_eq!(f["event"]["action"], "malware_detected");
    assert_eq!(f["file"]["path"], infected.to_string_lossy().as_ref());
    assert_eq!(f["rule"]["name"], "EICAR-Test-File");
    assert_eq!(f["threat"]["indicator"]["type"], "file");
    assert_eq!(f["mamori"]["scheduled_scan"]["name"], "daily");
    assert!(f["@timestamp"].is_string());
    let problems = mgr.events_of_kind(kind::SCAN_PROBLEM);
    assert!(
        problems.iter().any(|p| p.data["file"]["path"] == missing_rules.to_string_lossy().as_ref()
            && p.data["event"]["action"] == "scan_error"),
        "a rule path that does not load is reported: {problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.data["file"]["path"] == s(conf.path()) && p.data["event"]["action"] == "scan_error"),
        "a hash list that cannot be read is reported: {problems:?}"
    );
    let summary = &mgr.events_of_kind(kind::SCAN_SUMMARY)[0].data;
    assert_eq!(summary["mamori"]["scan"]["infected_files"], 3);
    assert_eq!(summary["mamori"]["scan"]["rules_loaded"], 1);
    assert_eq!(summary["mamori"]["scan"]["hash_indicators"], 1);
    assert_eq!(summary["mamori"]["scan"]["quarantined"], 3, "the scan asked for quarantine");
    assert_eq!(
        summary["mamori"]["scan"]["exit_code"], 2,
        "the rule and hash list errors make the scan incomplete"
    );
    assert_eq!(summary["mamori"]["scan"]["errors"], 2);
    assert!(!infected.exists(), "the scan's quarantine moved the file");
    let actions = mgr.events_of_kind(kind::RESPONSE_ACTION);
    assert_eq!(actions.len(), 3, "{actions:?}");
    let a = actions
        .iter()
        .find(|a| a.data["file"]["path"] == infected.to_string_lossy().as_ref())
        .expect("a response for the EICAR file");
    assert_eq!(a.data["event"]["action"], "file_quarantined");
    assert_eq!(a.data["event"]["outcome"], "success");
    assert_eq!(a.data["mamori"]["response"]["dry_run"], false);
    assert_eq!(a.data["mamori"]["response"]["trigger"], "scheduled");
    let id = a.data["mamori"]["response"]["quarantine_id"].as_str().expect("an id").to_string();
    assert!(dir.join("quarantine/items").join(format!("{id}.json")).exists(), "the item is in the store");

    let saved: Policy = serde_json::from_slice(&std::fs::read(dir.join("policy.json")).unwrap()).unwrap();
    assert_eq!(saved.version, 1);
    let st = mamori_agent::status(&dir).unwrap();
    assert_eq!(st.policy_version, 1);
    assert_eq!(st.scans.len(), 1);
    assert!(st.scans[0].last_end.is_some(), "schedule.json records the run");

    // After a restart the saved policy and schedule hold: no refetch, no immediate rescan.
    let beats_before = mgr.rec().heartbeats.len();
    let agent = RunningAgent::start(&dir, run_options());
    assert!(wait_until(LIMIT, || mgr.rec().heartbeats.len() >= beats_before + 5).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    agent.stop().await.unwrap();
    assert_eq!(mgr.events_of_kind(kind::SCAN_SUMMARY).len(), 1, "the scan ran again right after a restart");
    assert_eq!(mgr.rec().policy_fetches, 1);
    assert!(mgr.rec().heartbeats[beats_before..].iter().all(|(_, _, hb)| hb.policy_version == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_a_changed_machine_id_an_unenrolled_dir_and_an_expired_certificate() {
    let mgr = TestManager::start().await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("agent");
    let (_tx, rx) = tokio::sync::watch::channel(false);

    let err = mamori_agent::run(&dir, run_options(), rx.clone()).await.unwrap_err();
    assert!(matches!(err, Error::NotEnrolled { .. }), "{err:?}");
    assert!(err.to_string().contains("mamori agent enroll"), "{err}");
    assert!(!dir.exists(), "a failed start must not create the state directory");

    enroll(&dir, mgr.enroll_options()).await.unwrap();
    let cloned = mamori_agent::RunOptions { machine_id: Some("another-machine".into()), ..run_options() };
    let err = mamori_agent::run(&dir, cloned, rx.clone()).await.unwrap_err();
    assert!(matches!(err, Error::MachineIdChanged), "{err:?}");
    assert!(err.to_string().contains("differs from the one it enrolled with"), "{err}");
    assert!(err.to_string().contains("mamori agent enroll --force"), "{err}");
    assert!(mgr.rec().heartbeats.is_empty(), "a refused start must not talk to the manager");

    // A certificate that has run out.
    mgr.rec().cert_validity = Some(Duration::from_secs(1));
    enroll(&dir, mamori_agent::EnrollOptions { force: true, ..mgr.enroll_options() }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = mamori_agent::run(&dir, run_options(), rx).await.unwrap_err();
    assert!(matches!(err, Error::CertificateExpired { .. }), "{err:?}");
    assert!(err.to_string().contains("re-enroll"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agent_keeps_retrying_and_stops_cleanly() {
    let mgr = TestManager::start().await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("agent");
    enroll(&dir, mgr.enroll_options()).await.unwrap();
    mgr.revoked.lock().unwrap().insert(saved_serial(&dir));

    let agent = RunningAgent::start(&dir, run_options());
    let refused = wait_until(LIMIT, || {
        mamori_agent::status(&dir)
            .ok()
            .and_then(|s| s.last_error)
            .is_some_and(|e| e.contains("refused this agent's certificate"))
    })
    .await;
    assert!(refused, "status: {:?}", mamori_agent::status(&dir).map(|s| s.last_error));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!agent.is_finished(), "the agent must keep trying");
    agent.stop().await.unwrap();
    let rec = mgr.rec();
    assert!(rec.heartbeats.is_empty() && rec.events.is_empty(), "a revoked certificate got through");
    drop(rec);
    assert!(spool_pending(&dir) >= 1, "agent.started waits in the spool");
}
