//! Tests of the public API against real SQLite files in temporary directories.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mamori_store::{
    AgentBatch, EnrollError, Error, EventFilter, HeartbeatRow, NewAgent, NewEvent, Store, TokenRefusal,
    SCHEMA_VERSION,
};

const T0: i64 = 1_700_000_000_000;
const DAY: i64 = 86_400_000;

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("manager.sqlite")
}

fn new_agent(id: &str, machine_id: &str, previous: Option<&str>) -> NewAgent {
    NewAgent {
        id: id.into(),
        hostname: format!("{id}.ward.example"),
        machine_id: machine_id.into(),
        previous_device_id: previous.map(Into::into),
        agent_version: "0.1.0".into(),
        cert_serial: format!("serial-{id}"),
        cert_not_after_ms: T0 + 7 * DAY,
    }
}

fn token(store: &Store, secret: &str, uses: u32) -> i64 {
    store.create_token(&mamori_pki::hash_token(secret), "test", T0 + DAY, uses, T0).unwrap()
}

/// Enrolls agents with a fresh single-use token each.
fn enroll(store: &mut Store, agent: &NewAgent) -> Vec<String> {
    let secret = format!("mmt_secret_for_{}", agent.id);
    token(store, &secret, 1);
    store.enroll(&secret, agent, T0 + 1).unwrap()
}

fn ev(seq: u64, kind: &'static str, time_ms: i64, data: &'static str) -> NewEvent<'static> {
    NewEvent { seq, kind, time_ms, data }
}

fn uses_left(store: &Store, id: i64) -> u32 {
    store.list_tokens().unwrap().into_iter().find(|t| t.id == id).unwrap().uses_left
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// --- opening and migrations -------------------------------------------------------------------

#[test]
fn fresh_file_is_migrated_and_reopening_keeps_version_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        token(&store, "mmt_kept", 2);
        store.put_policy(r#"{"scan":true}"#, T0).unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let tokens = store.list_tokens().unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!((tokens[0].uses_left, tokens[0].uses_total), (2, 2));
    assert_eq!(store.current_policy().unwrap(), Some((1, r#"{"scan":true}"#.to_owned())));
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(Store::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);

    let err = Store::open(&path).err().unwrap();
    match &err {
        Error::SchemaTooNew { found, supported } => {
            assert_eq!(*found, 99);
            assert_eq!(*supported, SCHEMA_VERSION);
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("99") && msg.contains("newer"), "{msg}");
    // Refusing must not have touched the version.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(v, 99);
}

#[test]
fn files_are_created_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = Store::open(&path).unwrap();
    token(&store, "mmt_x", 1); // make sure the WAL has been written to
    assert_eq!(mode(&path), 0o600);
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", path.display()));
        assert!(side.exists(), "{} missing: not in WAL mode?", side.display());
        assert_eq!(mode(&side), 0o600, "{}", side.display());
    }
}

#[test]
fn not_a_database_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    std::fs::write(&path, vec![0x5au8; 8192]).unwrap();
    assert!(matches!(Store::open(&path), Err(Error::Sqlite(_))));
    assert!(matches!(Store::open(&dir.path().join("missing/dir/x.sqlite")), Err(Error::Create { .. })));
}

#[test]
fn store_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Store>();
}

// --- tokens and enrollment --------------------------------------------------------------------

#[test]
fn token_arguments_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db(&dir)).unwrap();
    let hash = mamori_pki::hash_token("mmt_a");
    assert!(matches!(store.create_token(&hash, "x", T0 + 1, 0, T0), Err(Error::Invalid(_))));
    assert!(matches!(store.create_token(&hash, "x", T0, 1, T0), Err(Error::Invalid(_))));
    store.create_token(&hash, "x", T0 + 1, 1, T0).unwrap();
    assert!(matches!(store.create_token(&hash, "y", T0 + 1, 1, T0), Err(Error::TokenExists)));
    assert_eq!(store.list_tokens().unwrap().len(), 1);
}

#[test]
fn token_with_several_uses_is_used_up_after_exactly_that_many() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&db(&dir)).unwrap();
    let id = token(&store, "mmt_three", 3);
    for i in 0..3 {
        let agent = new_agent(&format!("a{i}"), &format!("m{i}"), None);
        assert_eq!(store.enroll("mmt_three", &agent, T0 + 10).unwrap(), Vec::<String>::new());
        assert_eq!(uses_left(&store, id), 2 - i);
    }
    let fourth = new_agent("a3", "m3", None);
    match store.enroll("mmt_three", &fourth, T0 + 10) {
        Err(EnrollError::Refused(TokenRefusal::UsedUp)) => {}
        other => panic!("expected UsedUp, got {other:?}"),
    }
    assert_eq!(uses_left(&store, id), 0);
    assert_eq!(store.get_agent("a3").unwrap(), None);
    assert_eq!(store.list_agents().unwrap().len(), 3);
    let t = &store.list_tokens().unwrap()[0];
    assert_eq!((t.uses_total, t.created_ms, t.expires_at_ms, t.label.as_str()), (3, T0, T0 + DAY, "test"));
}

#[test]
fn enrolled_agent_is_recorded_with_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&db(&dir)).unwrap();
    token(&store, "mmt_ok", 1);
    let agent = new_agent("dev-1", "machine-1", None);
    assert!(store.enroll("mmt_ok", &agent, T0 + 5).unwrap().is_empty());
    let row = store.get_agent("dev-1").unwrap().unwrap();
    assert_eq!(row.status, "active");
    assert_eq!(row.hostname, "dev-1.ward.example");
    assert_eq!(row.machine_id, "machine-1");
    assert_eq!(row.enrolled_ms, T0 + 5);
    assert_eq!(row.last_seen_ms, None);
    assert_eq!(row.cert_serial, "serial-dev-1");
    assert_eq!(row.cert_not_after_ms, T0 + 7 * DAY);
    assert_eq!((row.replaced_by, row.revoked_ms), (None, None));
    assert_eq!((row.policy_version, row.spool_pending, row.spool_dropped_total), (0, 0, 0));
}

#[test]
fn refused_tokens_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&db(&dir)).unwrap();
    let id = token(&store, "mmt_real", 2); // expires at T0 + DAY
    let agent = new_agent("dev-1", "m", None);

    let refusal = |r: Result<Vec<String>, EnrollError>| match r {
        Err(EnrollError::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };
    // Unknown: a different secret, and one that differs from the real one in a single character.
    assert_eq!(refusal(store.enroll("mmt_fake", &agent, T0 + 1)), TokenRefusal::Unknown);
    assert_eq!(refusal(store.enroll("mmt_reaL", &agent, T0 + 1)), TokenRefusal::Unknown);
    assert_eq!(refusal(store.enroll("", &agent, T0 + 1)), TokenRefusal::Unknown);
    // Expired: exactly at and after the expiry instant.
    assert_eq!(refusal(store.enroll("mmt_real", &agent, T0 + DAY)), TokenRefusal::Expired);
    assert_eq!(refusal(store.enroll("mmt_real", &agent, T0 + 2 * DAY)), TokenRefusal::Expired);

    assert_eq!(uses_left(&store, id), 2);
    assert_eq!(store.get_agent("dev-1").unwrap(), None);
    assert!(store.list_agents().unwrap().is_empty());

    // One millisecond before expiry still works.
    store.enroll("mmt_real", &agent, T0 + DAY - 1).unwrap();
    assert_eq!(uses_left(&store, id), 1);

    assert_eq!(TokenRefusal::Unknown.to_string(), "enrollment token is unknown");
    assert_eq!(TokenRefusal::Expired.to_string(), "enrollment token has expired");
    assert_eq!(TokenRefusal::UsedUp.to_string(), "enrollment token has already been used");
    assert_eq!(
        EnrollError::Refused(TokenRefusal::UsedUp).to_string(),
        "enrollment token has already been used"
    );
}

#[test]
fn failed_enrollment_does_not_use_up_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&db(&dir)).unwrap();
    enroll(&mut store, &new_agent("dev-1", "m1", None));
    let id = token(&store, "mmt_again", 1);

    // Same device id again: refused by the store, token untouched, old agent untouched.
    let dup = new_agent("dev-1", "m2", None);
    assert!(matches!(
        store.enroll("mmt_again", &dup, T0 + 2),
        Err(EnrollError::Store(Error::AgentExists(_)))
    ));
    // Certificate serial already recorded.
    let mut same_serial = new_agent("dev-2", "m1", Some("dev-1"));
    same_serial.cert_serial = "serial-dev-1".into();
    assert!(matches!(
        store.enroll("mmt_again", &same_serial, T0 + 2),
        Err(EnrollError::Store(Error::CertExists(_)))
    ));
    assert_eq!(uses_left(&store, id), 1);
    let old = store.get_agent("dev-1").unwrap().unwrap();
    assert_eq!((old.status.as_str(), old.machine_id.as_str()), ("active", "m1"));
    assert_eq!(store.get_agent("dev-2").unwrap(), None);
}

#[test]
fn enrollment_replaces_by_machine_id_and_previous_id_but_not_revoked_agents() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&db(&dir)).unwrap();
    enroll(&mut store, &new_agent("old-a", "host-1", None));
    enroll(&mut store, &new_agent("old-b", "host-1", None)); // same machine: replaces old-a
    assert_eq!(store.get_agent("old-a").unwrap().unwrap().replaced_by.as_deref(), Some("old-b"));
    enroll(&mut store, &new_agent("old-c", "host-2", None));
    enroll(&mut store, &new_agent("revoked", "host-1", Some("old-b"))); // replaces old-b
    assert!(store.revoke_agent("revoked", T0 + 3).unwrap());
    enroll(&mut store, &new_agent("other", "host-3", None));

    // Re-enrollment of host-1 that also remembers old-c's id (e.g. a disk moved between hosts).
    let replaced = enroll(&mut store, &new_agent("new", "host-1", Some("old-c")));
    assert_eq!(replaced, vec!["old-c".to_owned()]);

    let get = |id: &str| store.get_agent(id).unwrap().unwrap();
    assert_eq!(get("old-a").replaced_by.as_deref(), Some("old-b")); // already replaced: unchanged
    assert_eq!(get("old-b").replaced_by.as_deref(), Some("revoked"));
    assert_eq!(get("old-c").status, "replaced");
    assert_eq!(get("old-c").replaced_by.as_deref(), Some("new"));
    assert_eq!(get("revoked").status, "revoked"); // revoked stays revoked
    assert_eq!(get("revoked").replaced_by, None);
    assert_eq!(get("other").status, "active");
    assert_eq!(get("new").status, "active");

    // Both rules at once.
    let replaced = enroll(&mut store, &new_agent("newer", "host-3", Some("new")));
    assert_eq!(replaced, vec!["new".to_owned(), "other".to_owned()]);
}

#[test]
fn empty_machine_id_replaces_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&db(&dir)).unwrap();
    enroll(&mut store, &new_agent("a", "", None));
    assert!(enroll(&mut store, &new_agent("b", "", None)).is_empty());
    assert_eq!(store.get_agent("a").unwrap().unwrap().status, "active");
}

#[test]
fn revocation_is_idempotent_and_untrusted_ids_include_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&db(&dir)).unwrap();
    enroll(&mut store, &new_agent("a", "m1", None));
    enroll(&mut store, &new_agent("b", "m2", None));
    enroll(&mut store, &new_agent("c", "m1", None)); // replaces a
    assert_eq!(store.untrusted_agent_ids().unwrap(), vec!["a".to_owned()]);

    assert!(!store.revoke_agent("nobody", T0 + 10).unwrap());
    assert!(store.revoke_agent("b", T0 + 10).unwrap());
    assert!(store.revoke_agent("b", T0 + 20).unwrap());
    let b = store.get_agent("b").unwrap().unwrap();
    assert_eq!((b.status.as_str(), b.revoked_ms), ("revoked", Some(T0 + 10)));

    // A replaced agent can still be revoked explicitly; it keeps its replacement link.
    assert!(store.revoke_agent("a", T0 + 30).unwrap());
    let a = store.get_agent("a").unwrap().unwrap();
    assert_eq!((a.status.as_str(), a.replaced_by.as_deref()), ("revoked", Some("c")));

    assert_eq!(store.untrusted_agent_ids().unwrap(), vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(store.get_agent("c").unwrap().unwrap().status, "active");
}

#[test]
fn renewal_heartbeat_and_touch() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&db(&dir)).unwrap();
    enroll(&mut store, &new_agent("a", "m1", None));

    store.record_renewal("a", "serial-2", T0 + 14 * DAY, T0 + 6 * DAY).unwrap();
    let a = store.get_agent("a").unwrap().unwrap();
    assert_eq!((a.cert_serial.as_str(), a.cert_not_after_ms), ("serial-2", T0 + 14 * DAY));
    assert!(matches!(store.record_renewal("a", "serial-2", T0, T0), Err(Error::CertExists(_))));
    assert!(matches!(store.record_renewal("zz", "serial-3", T0, T0), Err(Error::UnknownAgent(_))));

    let hb = HeartbeatRow {
        agent_version: "0.2.0".into(),
        hostname: "renamed.ward.example".into(),
        policy_version: 7,
        spool_pending: 12,
        spool_dropped_total: 3,
        isolated: true,
    };
    store.record_heartbeat("a", &hb, T0 + 100).unwrap();
    let a = store.get_agent("a").unwrap().unwrap();
    assert_eq!(a.last_seen_ms, Some(T0 + 100));
    assert_eq!((a.agent_version.as_str(), a.hostname.as_str()), ("0.2.0", "renamed.ward.example"));
    assert_eq!((a.policy_version, a.spool_pending, a.spool_dropped_total), (7, 12, 3));
    assert!(a.isolated, "the reported isolation state is stored");

    store.touch_agent("a", T0 + 200).unwrap();
    assert_eq!(store.get_agent("a").unwrap().unwrap().last_seen_ms, Some(T0 + 200));
    // A late commit from another thread does not move last_seen backwards.
    store.touch_agent("a", T0 + 150).unwrap();
    assert_eq!(store.get_agent("a").unwrap().unwrap().last_seen_ms, Some(T0 + 200));

    assert!(matches!(store.touch_agent("zz", T0), Err(Error::UnknownAgent(_))));
    assert!(matches!(store.record_heartbeat("zz", &hb, T0), Err(Error::UnknownAgent(_))));
    let huge = HeartbeatRow { spool_pending: u64::MAX, ..hb };
    assert!(matches!(
        store.record_heartbeat("a", &huge, T0 + 300),
        Err(Error::TooLarge { field: "spool_pending", .. })
    ));
    assert_eq!(store.get_agent("a").unwrap().unwrap().spool_pending, 12);

    // A revoked agent's renewal is not recorded.
    store.revoke_agent("a", T0 + 400).unwrap();
    assert!(matches!(
        store.record_renewal("a", "serial-9", T0 + 20 * DAY, T0 + 500),
        Err(Error::AgentNotActive { .. })
    ));
    assert_eq!(store.get_agent("a").unwrap().unwrap().cert_serial, "serial-2");
}

// --- policy -----------------------------------------------------------------------------------

#[test]
fn policy_versions_increment_and_history_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.current_policy().unwrap(), None);
    assert_eq!(store.put_policy(r#"{"v":1}"#, T0).unwrap(), 1);
    assert_eq!(store.put_policy(r#"{"v":2}"#, T0 + 1).unwrap(), 2);
    assert!(matches!(store.put_policy("{not json", T0 + 2), Err(Error::PolicyNotJson(_))));
    assert_eq!(store.put_policy(r#"{"v":3}"#, T0 + 3).unwrap(), 3);
    assert_eq!(store.current_policy().unwrap(), Some((3, r#"{"v":3}"#.to_owned())));
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let n: i64 = conn.query_row("SELECT count(*) FROM policies", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 3);
}

// --- events -----------------------------------------------------------------------------------

fn store_with_agents(dir: &tempfile::TempDir, ids: &[&str]) -> Store {
    let mut store = Store::open(&db(dir)).unwrap();
    for (i, id) in ids.iter().enumerate() {
        enroll(&mut store, &new_agent(id, &format!("m{i}"), None));
    }
    store
}

#[test]
fn insert_events_deduplicates_per_agent_and_seq() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_agents(&dir, &["a", "b"]);
    let first = [ev(1, "k", T0, "{}"), ev(2, "k", T0, "{}"), ev(3, "k", T0, "{}")];
    let batch = AgentBatch { agent_id: "a", events: &first };
    assert_eq!(store.insert_events(&[batch], T0).unwrap(), vec![(3, 0)]);
    assert_eq!(store.insert_events(&[batch], T0).unwrap(), vec![(0, 3)]);

    // Overlapping resend, with a changed payload for seq 3: the first copy is kept.
    let overlap = [ev(3, "k", T0, r#"{"changed":1}"#), ev(4, "k", T0, "{}"), ev(5, "k", T0, "{}")];
    // Duplicates inside one batch.
    let inner = [ev(1, "k", T0, "{}"), ev(1, "k", T0, "{}"), ev(2, "k", T0, "{}"), ev(1, "k", T0, "{}")];
    let counts = store
        .insert_events(
            &[AgentBatch { agent_id: "a", events: &overlap }, AgentBatch { agent_id: "b", events: &inner }],
            T0 + 1,
        )
        .unwrap();
    assert_eq!(counts, vec![(2, 1), (2, 2)]);
    assert_eq!(store.count_events().unwrap(), 7);
    let a3 = store
        .query_events(&EventFilter { agent_id: Some("a".into()), ..Default::default() })
        .unwrap()
        .into_iter()
        .find(|e| e.seq == 3)
        .unwrap();
    assert_eq!((a3.data.as_str(), a3.received_ms), ("{}", T0));
    // Empty input is fine.
    assert_eq!(store.insert_events(&[], T0).unwrap(), Vec::<(u64, u64)>::new());
    assert_eq!(store.insert_events(&[AgentBatch { agent_id: "a", events: &[] }], T0).unwrap(), vec![(0, 0)]);
}

#[test]
fn unknown_agent_rolls_back_the_whole_call() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_agents(&dir, &["a"]);
    let evs = [ev(1, "k", T0, "{}"), ev(2, "k", T0, "{}")];
    let err = store
        .insert_events(
            &[AgentBatch { agent_id: "a", events: &evs }, AgentBatch { agent_id: "ghost", events: &evs }],
            T0,
        )
        .unwrap_err();
    assert!(matches!(&err, Error::UnknownAgent(id) if id == "ghost"), "{err:?}");
    assert_eq!(store.count_events().unwrap(), 0);
    // The store is usable afterwards and the rolled-back seqs are not considered duplicates.
    assert_eq!(store.insert_events(&[AgentBatch { agent_id: "a", events: &evs }], T0).unwrap(), vec![(2, 0)]);
}

#[test]
fn seq_beyond_i64_is_rejected_not_wrapped() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_agents(&dir, &["a"]);
    let max = i64::MAX as u64;
    let ok = [ev(max, "k", T0, "{}")];
    assert_eq!(store.insert_events(&[AgentBatch { agent_id: "a", events: &ok }], T0).unwrap(), vec![(1, 0)]);
    let bad = [ev(5, "k", T0, "{}"), ev(max + 1, "k", T0, "{}")];
    let err = store.insert_events(&[AgentBatch { agent_id: "a", events: &bad }], T0).unwrap_err();
    assert!(matches!(err, Error::SeqTooLarge { seq, .. } if seq == max + 1), "{err:?}");
    assert!(err.to_string().contains(&(max + 1).to_string()));
    assert_eq!(store.count_events().unwrap(), 1);
    let all = store.query_events(&EventFilter::default()).unwrap();
    assert_eq!(all[0].seq, max);
}

/// 30 events: agents a, b, c in turn, time_ms = T0 + i * 10, kinds cycling, and data mentioning
/// literal `%` and `_` in a few of them.
fn query_fixture(dir: &tempfile::TempDir) -> Store {
    let mut store = store_with_agents(dir, &["a", "b", "c"]);
    let kinds = ["file.write", "process.start", "scan.finding"];
    let datas: Vec<String> = (0..30)
        .map(|i| match i {
            4 => r#"{"note":"disk 100% full"}"#.to_owned(),
            7 => r#"{"path":"C:\\Users\\RAD_ADMIN\\x"}"#.to_owned(),
            11 => r#"{"note":"100 percent"}"#.to_owned(),
            13 => r#"{"path":"radXadmin"}"#.to_owned(),
            _ => format!(r#"{{"i":{i}}}"#),
        })
        .collect();
    let evs: Vec<(usize, NewEvent<'_>)> = (0..30)
        .map(|i| {
            (
                i % 3,
                NewEvent {
                    seq: i as u64 + 1,
                    kind: kinds[i % 3],
                    time_ms: T0 + i as i64 * 10,
                    data: &datas[i],
                },
            )
        })
        .collect();
    // Insert in shuffled time order so id order and time order differ.
    for chunk in [(20..30), (0..10), (10..20)] {
        for agent in 0..3 {
            let mine: Vec<NewEvent<'_>> =
                evs[chunk.clone()].iter().filter(|(a, _)| *a == agent).map(|(_, e)| *e).collect();
            let id = ["a", "b", "c"][agent];
            store.insert_events(&[AgentBatch { agent_id: id, events: &mine }], T0 + 1000).unwrap();
        }
    }
    store
}

fn times(rows: &[mamori_store::EventRow]) -> Vec<i64> {
    rows.iter().map(|r| (r.time_ms - T0) / 10).collect()
}

#[test]
fn query_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = query_fixture(&dir);
    let q = |f: EventFilter| store.query_events(&f).unwrap();

    let all = q(EventFilter::default());
    assert_eq!(times(&all), (0..30).collect::<Vec<_>>(), "default: oldest first, everything");

    // Time range: since inclusive, until exclusive.
    let range = q(EventFilter { since_ms: Some(T0 + 50), until_ms: Some(T0 + 90), ..Default::default() });
    assert_eq!(times(&range), vec![5, 6, 7, 8]);

    let agent_b = q(EventFilter { agent_id: Some("b".into()), ..Default::default() });
    assert_eq!(times(&agent_b), (0..30).filter(|i| i % 3 == 1).collect::<Vec<_>>());
    assert!(agent_b.iter().all(|e| e.agent_id == "b" && e.kind == "process.start"));
    assert!(q(EventFilter { agent_id: Some("nobody".into()), ..Default::default() }).is_empty());

    let kinds =
        q(EventFilter { kinds: vec!["file.write".into(), "scan.finding".into()], ..Default::default() });
    assert_eq!(times(&kinds), (0..30).filter(|i| i % 3 != 1).collect::<Vec<_>>());

    // Text: % and _ are literal, matching is case-insensitive, kind is searched too.
    let pct = q(EventFilter { text: Some("100%".into()), ..Default::default() });
    assert_eq!(times(&pct), vec![4]);
    let underscore = q(EventFilter { text: Some("rad_admin".into()), ..Default::default() });
    assert_eq!(times(&underscore), vec![7]);
    // A lone backslash is literal too (unescaped, it would turn the closing `%` into a literal).
    let backslash = q(EventFilter { text: Some("\\".into()), ..Default::default() });
    assert_eq!(times(&backslash), vec![7]);
    let by_kind = q(EventFilter { text: Some("SCAN.FIND".into()), ..Default::default() });
    assert_eq!(times(&by_kind), (0..30).filter(|i| i % 3 == 2).collect::<Vec<_>>());

    // Filters combine.
    let combined = q(EventFilter {
        since_ms: Some(T0 + 30),
        until_ms: Some(T0 + 200),
        agent_id: Some("a".into()),
        kinds: vec!["file.write".into()],
        text: Some(r#""i":1"#.into()),
        ..Default::default()
    });
    assert_eq!(times(&combined), vec![12, 15, 18]);

    // Limit and newest_first.
    let newest = q(EventFilter { newest_first: true, limit: 4, ..Default::default() });
    assert_eq!(times(&newest), vec![29, 28, 27, 26]);
    let oldest = q(EventFilter { limit: 2, ..Default::default() });
    assert_eq!(times(&oldest), vec![0, 1]);
}

#[test]
fn tailing_with_after_id_follows_insertion_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = query_fixture(&dir);
    let all = store.query_events(&EventFilter { after_id: Some(0), ..Default::default() }).unwrap();
    assert_eq!(all.len(), 30);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "ascending ids");
    // Insertion order was times 20..30, then 0..10, then 10..20 (per agent within each chunk).
    assert!(all[..10].iter().all(|e| e.time_ms >= T0 + 200));

    // newest_first is ignored while tailing; limit applies.
    let page = store
        .query_events(&EventFilter {
            after_id: Some(all[4].id),
            limit: 3,
            newest_first: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        page.iter().map(|e| e.id).collect::<Vec<_>>(),
        all[5..8].iter().map(|e| e.id).collect::<Vec<_>>()
    );

    // A new event shows up after the last id seen, even with an old time.
    let last = all[29].id;
    let late = [ev(100, "late", T0 - 5, "{}")];
    store.insert_events(&[AgentBatch { agent_id: "a", events: &late }], T0 + 2000).unwrap();
    let tail = store.query_events(&EventFilter { after_id: Some(last), ..Default::default() }).unwrap();
    assert_eq!(tail.len(), 1);
    assert_eq!((tail[0].kind.as_str(), tail[0].seq, tail[0].received_ms), ("late", 100, T0 + 2000));
}

#[test]
fn limit_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_agents(&dir, &["a"]);
    let evs: Vec<NewEvent<'_>> = (1..=10_050).map(|s| ev(s, "k", T0 + s as i64, "{}")).collect();
    store.insert_events(&[AgentBatch { agent_id: "a", events: &evs }], T0).unwrap();
    assert_eq!(store.count_events().unwrap(), 10_050);
    for limit in [0, 10_001, u32::MAX] {
        let rows = store.query_events(&EventFilter { limit, ..Default::default() }).unwrap();
        assert_eq!(rows.len(), mamori_store::MAX_QUERY_LIMIT as usize, "limit {limit}");
    }
    assert_eq!(store.query_events(&EventFilter { limit: 9_999, ..Default::default() }).unwrap().len(), 9_999);
}

#[test]
fn retention_deletes_exactly_the_old_events_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_agents(&dir, &["a", "b"]);
    // 1000 events per agent, time_ms T0 .. T0 + 999, inserted newest first for agent b.
    let a: Vec<NewEvent<'_>> = (0..1000).map(|i| ev(i + 1, "k", T0 + i as i64, "{}")).collect();
    let b: Vec<NewEvent<'_>> = (0..1000).rev().map(|i| ev(i + 1, "k", T0 + i as i64, "{}")).collect();
    store
        .insert_events(
            &[AgentBatch { agent_id: "a", events: &a }, AgentBatch { agent_id: "b", events: &b }],
            T0,
        )
        .unwrap();

    assert!(matches!(store.delete_events_before(T0 + 10, 0), Err(Error::Invalid(_))));
    // Cutoff T0 + 735: 735 per agent, 1470 in chunks of 100 (15 transactions, the last partial).
    assert_eq!(store.delete_events_before(T0 + 735, 100).unwrap(), 1470);
    assert_eq!(store.count_events().unwrap(), 530);
    let left = store.query_events(&EventFilter::default()).unwrap();
    assert_eq!(left.first().unwrap().time_ms, T0 + 735);
    assert_eq!(left.iter().filter(|e| e.time_ms < T0 + 735).count(), 0);
    // Nothing more to delete; an exact multiple of the chunk size also terminates.
    assert_eq!(store.delete_events_before(T0 + 735, 100).unwrap(), 0);
    assert_eq!(store.delete_events_before(T0 + 835, 50).unwrap(), 200);
    assert_eq!(store.count_events().unwrap(), 330);
}

// --- concurrency ------------------------------------------------------------------------------

#[test]
fn writer_waits_for_another_connections_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut store = store_with_agents(&dir, &["a"]);

    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder_path = path.clone();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&holder_path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        conn.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();

    let start = Instant::now();
    let evs = [ev(1, "k", T0, "{}")];
    assert_eq!(store.insert_events(&[AgentBatch { agent_id: "a", events: &evs }], T0).unwrap(), vec![(1, 0)]);
    let waited = start.elapsed();
    holder.join().unwrap();
    assert!(waited >= Duration::from_millis(300), "did not wait for the lock: {waited:?}");
}

#[test]
fn two_handles_write_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(store_with_agents(&dir, &["a", "b"]));

    let writers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|agent| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut store = Store::open(&path).unwrap();
                let mut stored = 0;
                for round in 0..50u64 {
                    let evs: Vec<NewEvent<'_>> =
                        (0..20).map(|i| ev(round * 20 + i + 1, "k", T0 + i as i64, "{}")).collect();
                    let counts =
                        store.insert_events(&[AgentBatch { agent_id: agent, events: &evs }], T0).unwrap();
                    stored += counts[0].0;
                    // Interleave other writes, as the manager's threads do.
                    store.touch_agent(agent, T0 + round as i64).unwrap();
                    store.put_policy("{}", T0).unwrap();
                }
                stored
            })
        })
        .collect();
    let stored: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(stored, 2000);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.count_events().unwrap(), 2000);
    // Every put_policy got its own version.
    assert_eq!(store.current_policy().unwrap().unwrap().0, 100);
}

#[test]
fn concurrent_opens_of_a_fresh_file_migrate_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let openers: Vec<_> = (0..4)
        .map(|_| {
            let (path, barrier) = (path.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                Store::open(&path).map(|s| s.schema_version().unwrap()).map_err(|e| e.to_string())
            })
        })
        .collect();
    for opener in openers {
        assert_eq!(opener.join().unwrap(), Ok(SCHEMA_VERSION));
    }
}

#[test]
fn concurrent_policy_writers_get_distinct_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(Store::open(&path).unwrap());
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                let store = Store::open(&path).unwrap();
                (0..100).map(|i| store.put_policy(&format!("[{w},{i}]"), T0).unwrap()).collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut versions: Vec<u64> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    versions.sort();
    assert_eq!(versions, (1..=200).collect::<Vec<u64>>());
}

// --- ingest ceiling ---------------------------------------------------------------------------

#[test]
fn raw_ingest_ceiling_inserts_everything_and_refuses_existing_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.sqlite");
    let c = mamori_store::raw_ingest_ceiling(&path, 3, 1001, 100).unwrap();
    assert_eq!(c.events, 1001);
    assert!(c.seconds > 0.0 && c.events_per_sec > 0.0);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.count_events().unwrap(), 1001);
    assert_eq!(store.list_agents().unwrap().len(), 3);
    // Round-robin: 11 calls of up to 100 → agents get 4, 4 and 3 batches.
    let per_agent = |id: &str| {
        store.query_events(&EventFilter { agent_id: Some(id.into()), ..Default::default() }).unwrap().len()
    };
    assert_eq!(
        (per_agent("bench-000000"), per_agent("bench-000001"), per_agent("bench-000002")),
        (400, 301, 300)
    );
    drop(store);

    assert!(matches!(mamori_store::raw_ingest_ceiling(&path, 3, 10, 10), Err(Error::AlreadyExists(_))));
    assert!(matches!(
        mamori_store::raw_ingest_ceiling(&dir.path().join("other"), 0, 10, 10),
        Err(Error::Invalid(_))
    ));
}
