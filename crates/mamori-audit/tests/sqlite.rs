//! End to end with a real SQLite file: the log is written to a table the way the manager
//! stores it, the file is edited with SQL as an attacker with file access would, and the
//! verification reads it back through a cursor.

use mamori_audit::{
    generate_signing_key, verify, Chain, Checkpoint, CheckpointPolicy, Entry, Head, Record, SigningKey,
    Verifier, VerifyReport,
};
use rusqlite::{params, Connection};
use std::path::{Path, PathBuf};

const T0: i64 = 1_760_000_000_000;
const RECORDS: u64 = 50;

fn open(path: &Path) -> Connection {
    Connection::open(path).unwrap()
}

fn head(db: &Connection) -> Option<Head> {
    db.query_row("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", [], |row| {
        let seq: i64 = row.get(0)?;
        let hash: Vec<u8> = row.get(1)?;
        Ok(Head { seq: seq as u64, hash: hash.try_into().unwrap() })
    })
    .ok()
}

/// Appends in one transaction (read head, insert), as the manager does.
fn append(db: &mut Connection, entry: Entry<'_>, key: &SigningKey, policy: CheckpointPolicy) {
    let tx = db.transaction().unwrap();
    let record = Chain::append(head(&tx), entry).unwrap();
    tx.execute(
        "INSERT INTO audit (seq, time_ms, actor, action, target, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            record.seq as i64,
            record.time_ms,
            record.actor,
            record.action,
            record.target,
            record.detail,
            record.prev_hash.as_slice(),
            record.hash.as_slice()
        ],
    )
    .unwrap();
    if policy.due(record.seq) {
        let checkpoint = Checkpoint::sign(record.head(), record.time_ms, key);
        tx.execute(
            "INSERT INTO audit_checkpoints (seq, hash, time_ms, signature) VALUES (?1, ?2, ?3, ?4)",
            params![
                checkpoint.seq as i64,
                checkpoint.hash.as_slice(),
                checkpoint.time_ms,
                checkpoint.signature.as_slice()
            ],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

fn create_log(dir: &Path, key: &SigningKey) -> PathBuf {
    let path = dir.join("manager.sqlite");
    let mut db = open(&path);
    db.execute_batch(
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, actor TEXT NOT NULL,
             action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL,
             prev_hash BLOB NOT NULL, hash BLOB NOT NULL);
         CREATE TABLE audit_checkpoints (seq INTEGER NOT NULL, hash BLOB NOT NULL,
             time_ms INTEGER NOT NULL, signature BLOB NOT NULL);",
    )
    .unwrap();
    let policy = CheckpointPolicy { every: 10 };
    for i in 0..RECORDS {
        let detail = serde_json::json!({"reason": format!("救急外来 端末 {i}"), "command": i}).to_string();
        let target = format!("agent-{:04}", i % 9);
        let entry = Entry {
            time_ms: T0 + i as i64 * 60_000,
            actor: if i % 2 == 0 { "tanaka" } else { "sato" },
            action: if i % 5 == 0 { "agent.isolate" } else { "detection.close" },
            target: &target,
            detail: &detail,
        };
        append(&mut db, entry, key, policy);
    }
    path
}

/// Copies the database so that each attack starts from the same untouched file.
fn copy_of(original: &Path, name: &str) -> PathBuf {
    let copy = original.with_file_name(name);
    std::fs::copy(original, &copy).unwrap();
    copy
}

fn verify_file(path: &Path, key: &SigningKey) -> VerifyReport {
    let db = open(path);
    let checkpoints: Vec<Checkpoint> = db
        .prepare("SELECT seq, hash, time_ms, signature FROM audit_checkpoints")
        .unwrap()
        .query_map([], |row| {
            Ok(Checkpoint {
                seq: row.get::<_, i64>(0)? as u64,
                hash: row.get::<_, Vec<u8>>(1)?.try_into().unwrap(),
                time_ms: row.get(2)?,
                signature: row.get::<_, Vec<u8>>(3)?.try_into().unwrap(),
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut statement = db
        .prepare(
            "SELECT seq, time_ms, actor, action, target, detail, prev_hash, hash FROM audit ORDER BY seq",
        )
        .unwrap();
    // Streamed straight from the cursor.
    let rows = statement
        .query_map([], |row| {
            Ok(Record {
                seq: row.get::<_, i64>(0)? as u64,
                time_ms: row.get(1)?,
                actor: row.get(2)?,
                action: row.get(3)?,
                target: row.get(4)?,
                detail: row.get(5)?,
                prev_hash: row.get::<_, Vec<u8>>(6)?.try_into().unwrap(),
                hash: row.get::<_, Vec<u8>>(7)?.try_into().unwrap(),
            })
        })
        .unwrap()
        .map(|row| row.unwrap());
    verify(rows, &checkpoints, &key.verifying_key())
}

#[test]
fn sqlite_log_detects_edits_recomputation_deletion_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_signing_key();
    let original = create_log(dir.path(), &key);

    let untouched = verify_file(&original, &key);
    assert!(untouched.ok, "{untouched:?}");
    assert_eq!((untouched.records, untouched.checkpoints), (RECORDS, 5));

    // One row's detail edited with an UPDATE.
    let edited = copy_of(&original, "edited.sqlite");
    let changed = open(&edited)
        .execute("UPDATE audit SET detail = '{\"reason\":\"routine\"}' WHERE seq = 17", [])
        .unwrap();
    assert_eq!(changed, 1);
    let report = verify_file(&edited, &key);
    assert!(!report.ok);
    assert_eq!(report.first_bad_seq, Some(17), "{report:?}");

    // The same edit with every hash from there on recomputed and rewritten in the file.
    let recomputed = copy_of(&edited, "recomputed.sqlite");
    {
        let db = open(&recomputed);
        let mut prev: Option<Head> = None;
        let records: Vec<Record> = {
            let mut statement = db
                .prepare("SELECT seq, time_ms, actor, action, target, detail FROM audit ORDER BY seq")
                .unwrap();
            statement
                .query_map([], |row| {
                    Ok((
                        row.get::<_, i64>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, String>(4)?,
                        row.get::<_, String>(5)?,
                    ))
                })
                .unwrap()
                .map(|row| {
                    let (time_ms, actor, action, target, detail) = row.unwrap();
                    let record = Chain::append(
                        prev,
                        Entry { time_ms, actor: &actor, action: &action, target: &target, detail: &detail },
                    )
                    .unwrap();
                    prev = Some(record.head());
                    record
                })
                .collect()
        };
        for record in records {
            db.execute(
                "UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
                params![record.prev_hash.as_slice(), record.hash.as_slice(), record.seq as i64],
            )
            .unwrap();
        }
    }
    let report = verify_file(&recomputed, &key);
    assert_eq!(report.first_bad_seq, Some(20), "the first checkpoint after the edit: {report:?}");

    // A row deleted from the middle.
    let deleted = copy_of(&original, "deleted.sqlite");
    open(&deleted).execute("DELETE FROM audit WHERE seq = 33", []).unwrap();
    assert_eq!(verify_file(&deleted, &key).first_bad_seq, Some(33));

    // The newest rows removed (the checkpoint at 50 remains).
    let truncated = copy_of(&original, "truncated.sqlite");
    open(&truncated).execute("DELETE FROM audit WHERE seq > 44", []).unwrap();
    let report = verify_file(&truncated, &key);
    assert_eq!(report.first_bad_seq, Some(45), "{report:?}");
    assert_eq!(report.records, 44);

    // A checkpoint row rewritten to vouch for another hash.
    let forged = copy_of(&original, "forged.sqlite");
    open(&forged).execute("UPDATE audit_checkpoints SET hash = zeroblob(32) WHERE seq = 40", []).unwrap();
    let report = verify_file(&forged, &key);
    assert_eq!(report.first_bad_seq, Some(40), "{report:?}");
    assert!(report.reason.unwrap().contains("invalid signature"));

    // The untouched original still verifies after all that.
    assert!(verify_file(&original, &key).ok);
}

#[test]
fn a_row_with_a_short_hash_is_reported_through_the_verifier() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_signing_key();
    let path = create_log(dir.path(), &key);
    open(&path).execute("UPDATE audit SET hash = substr(hash, 1, 31) WHERE seq = 8", []).unwrap();

    let db = open(&path);
    let checkpoints: Vec<Checkpoint> = Vec::new();
    let verifying_key = key.verifying_key();
    let mut verifier = Verifier::new(&checkpoints, &verifying_key);
    let mut statement = db
        .prepare(
            "SELECT seq, time_ms, actor, action, target, detail, prev_hash, hash FROM audit ORDER BY seq",
        )
        .unwrap();
    let mut rows = statement.query([]).unwrap();
    while let Some(row) = rows.next().unwrap() {
        let seq = row.get::<_, i64>(0).unwrap() as u64;
        let hash: Vec<u8> = row.get(7).unwrap();
        let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) else {
            verifier.unreadable(seq, &format!("hash is {} bytes", hash.len()));
            break;
        };
        let record = Record {
            seq,
            time_ms: row.get(1).unwrap(),
            actor: row.get(2).unwrap(),
            action: row.get(3).unwrap(),
            target: row.get(4).unwrap(),
            detail: row.get(5).unwrap(),
            prev_hash: row.get::<_, Vec<u8>>(6).unwrap().try_into().unwrap(),
            hash,
        };
        if !verifier.push(&record) {
            break;
        }
    }
    let report = verifier.finish();
    assert_eq!(report.first_bad_seq, Some(8), "{report:?}");
    assert_eq!(report.records, 7);
}
