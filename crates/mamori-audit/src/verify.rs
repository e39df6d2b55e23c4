//! Verification of a stored log against its checkpoints, one record at a time.

use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use crate::{Checkpoint, Record};

/// The outcome of a verification. Serializes to the console API's
/// `{"ok", "records", "checkpoints", "first_bad_seq"?, "reason"?, "unsigned_tail"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// True if nothing was wrong.
    pub ok: bool,
    /// Records found intact (all of them if `ok`; those before the first problem otherwise).
    pub records: u64,
    /// Checkpoints whose signature and hash were confirmed.
    pub checkpoints: u64,
    /// The first seq at which the log differs from what was written (see [`Verifier::push`]
    /// for which seq each kind of tampering gives).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<u64>,
    /// Why, in English.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Intact records after the latest confirmed checkpoint: protected by the hash chain
    /// alone (see the crate docs).
    pub unsigned_tail: u64,
}

/// Streaming verification: feed records in seq order with [`push`](Self::push), then
/// [`finish`](Self::finish). Memory use is the checkpoint list, whatever the log's length.
#[derive(Debug)]
pub struct Verifier {
    /// Sorted by seq.
    checkpoints: Vec<Checkpoint>,
    next_checkpoint: usize,
    expected_seq: u64,
    prev_hash: [u8; 32],
    records: u64,
    checkpoints_confirmed: u64,
    last_confirmed_seq: u64,
    /// The earliest problem found so far: `(seq, reason)`.
    problem: Option<(u64, String)>,
    /// Set once nothing earlier than `problem` can be found any more.
    stopped: bool,
}

impl Verifier {
    /// Starts a verification against these checkpoints (in any order) and the pinned key.
    /// Checkpoint signatures are checked here, before any record.
    pub fn new(checkpoints: &[Checkpoint], key: &VerifyingKey) -> Verifier {
        let mut sorted = checkpoints.to_vec();
        sorted.sort_by_key(|checkpoint| checkpoint.seq);
        // A forged checkpoint is reported at its own seq, unless the records show a problem
        // earlier than that.
        let problem = sorted.iter().find(|checkpoint| !checkpoint.signature_valid(key)).map(|forged| {
            (
                forged.seq,
                format!(
                    "the checkpoint for record {} has an invalid signature: it was not made with the \
                     audit key (forged or altered)",
                    forged.seq
                ),
            )
        });
        Verifier {
            checkpoints: sorted,
            next_checkpoint: 0,
            expected_seq: 1,
            prev_hash: [0; 32],
            records: 0,
            checkpoints_confirmed: 0,
            last_confirmed_seq: 0,
            problem,
            stopped: false,
        }
    }

    /// Checks the next record. Returns false once a problem has been found that nothing later
    /// can precede: the caller may stop reading records.
    ///
    /// Which seq is reported: an edited record, its own seq (stored hash mismatch); a deleted
    /// record, the missing seq; a record inserted without renumbering, the duplicated seq; a
    /// record inserted and the rest renumbered, the seq after it (the old record there no
    /// longer hashes or links); a chain recomputed after an edit, the first checkpoint at or
    /// after the edit; a forged checkpoint, its seq; a truncated tail, the first missing seq.
    pub fn push(&mut self, record: &Record) -> bool {
        if self.stopped {
            return false;
        }
        if let Some((bad_seq, _)) = self.problem {
            if self.expected_seq >= bad_seq {
                self.stopped = true;
                return false;
            }
        }
        let expected = self.expected_seq;
        if record.seq != expected {
            let reason = if record.seq > expected {
                format!("record {expected} is missing (the next stored record is {})", record.seq)
            } else {
                format!("record {} is out of order or duplicated (expected record {expected})", record.seq)
            };
            self.fail(record.seq.min(expected), reason);
            return false;
        }
        if record.compute_hash() != record.hash {
            self.fail(
                record.seq,
                format!("record {} was edited: its contents do not match its hash", record.seq),
            );
            return false;
        }
        if record.prev_hash != self.prev_hash {
            let reason = if record.seq == 1 {
                "record 1 does not start the chain (its prev_hash is not zero)".to_string()
            } else {
                format!(
                    "record {} does not follow record {} (a record was removed, inserted or replaced)",
                    record.seq,
                    record.seq - 1
                )
            };
            self.fail(record.seq, reason);
            return false;
        }
        while let Some(checkpoint) = self.checkpoints.get(self.next_checkpoint) {
            if checkpoint.seq > record.seq {
                break;
            }
            // Only a checkpoint for seq 0 can be behind: seqs are checked to be contiguous.
            if checkpoint.seq != record.seq || checkpoint.hash != record.hash {
                let since = match self.last_confirmed_seq {
                    0 => "the start of the log".to_string(),
                    seq => format!("the checkpoint for record {seq}"),
                };
                let reason = format!(
                    "the signed checkpoint for record {} does not match the stored log: records \
                     after {since} were changed and the chain recomputed",
                    checkpoint.seq
                );
                self.fail(record.seq, reason);
                return false;
            }
            self.checkpoints_confirmed += 1;
            self.last_confirmed_seq = record.seq;
            self.next_checkpoint += 1;
        }
        self.prev_hash = record.hash;
        self.expected_seq = expected.saturating_add(1);
        self.records += 1;
        true
    }

    /// Reports a stored row that could not even be read as a [`Record`] (a hash of the wrong
    /// length, a missing column): that is tampering too.
    pub fn unreadable(&mut self, seq: u64, reason: &str) {
        if !self.stopped {
            self.fail(seq, format!("record {seq} cannot be read: {reason}"));
        }
    }

    fn fail(&mut self, seq: u64, reason: String) {
        if self.problem.as_ref().is_none_or(|(known, _)| seq < *known) {
            self.problem = Some((seq, reason));
        }
        self.stopped = true;
    }

    /// Ends the verification: the log ended here.
    pub fn finish(mut self) -> VerifyReport {
        if self.problem.is_none() {
            if let Some(beyond) = self.checkpoints.get(self.next_checkpoint) {
                let last = self.expected_seq - 1;
                let reason = format!(
                    "the log ends at record {last} but a checkpoint was signed for record {}: records \
                     from {} on were removed",
                    beyond.seq, self.expected_seq
                );
                self.problem = Some((self.expected_seq, reason));
            }
        }
        let (first_bad_seq, reason) = match self.problem {
            Some((seq, reason)) => (Some(seq), Some(reason)),
            None => (None, None),
        };
        VerifyReport {
            ok: first_bad_seq.is_none(),
            records: self.records,
            checkpoints: self.checkpoints_confirmed,
            first_bad_seq,
            reason,
            unsigned_tail: self.records.saturating_sub(self.last_confirmed_seq),
        }
    }
}

/// Verifies a whole log: `records` in seq order (streamed, e.g. straight from a database
/// cursor), all checkpoints, and the pinned public key.
pub fn verify<I>(records: I, checkpoints: &[Checkpoint], key: &VerifyingKey) -> VerifyReport
where
    I: IntoIterator<Item = Record>,
{
    let mut verifier = Verifier::new(checkpoints, key);
    for record in records {
        if !verifier.push(&record) {
            break;
        }
    }
    verifier.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{generate_signing_key, Chain, CheckpointPolicy, Entry, SigningKey};
    use std::time::Instant;

    const T0: i64 = 1_760_000_000_000;

    /// A log of `count` records with a checkpoint every `every` records.
    fn build(count: u64, every: u64, key: &SigningKey) -> (Vec<Record>, Vec<Checkpoint>) {
        let policy = CheckpointPolicy { every };
        let mut records: Vec<Record> = Vec::new();
        let mut checkpoints = Vec::new();
        for i in 0..count {
            let detail = format!(r#"{{"reason":"test {i}"}}"#);
            let target = format!("ward-pc-{:02}", i % 7);
            let entry = Entry {
                time_ms: T0 + i as i64 * 1000,
                actor: if i % 3 == 0 { "tanaka" } else { "system" },
                action: "agent.isolate",
                target: &target,
                detail: &detail,
            };
            let record = Chain::append(records.last().map(Record::head), entry).unwrap();
            if policy.due(record.seq) {
                checkpoints.push(Checkpoint::sign(record.head(), record.time_ms, key));
            }
            records.push(record);
        }
        (records, checkpoints)
    }

    /// Recomputes every hash from `from_seq` on, as an attacker with the file would.
    fn recompute_from(records: &mut [Record], from_seq: u64) {
        for i in 0..records.len() {
            if records[i].seq >= from_seq {
                if i > 0 {
                    records[i].prev_hash = records[i - 1].hash;
                }
                records[i].hash = records[i].compute_hash();
            }
        }
    }

    fn check(records: Vec<Record>, checkpoints: &[Checkpoint], key: &SigningKey) -> VerifyReport {
        verify(records, checkpoints, &key.verifying_key())
    }

    fn assert_bad_at(report: &VerifyReport, seq: u64, words: &str) {
        assert!(!report.ok, "{report:?}");
        assert_eq!(report.first_bad_seq, Some(seq), "{report:?}");
        let reason = report.reason.as_deref().unwrap();
        assert!(reason.contains(words), "reason {reason:?} should say {words:?}");
    }

    #[test]
    fn an_untouched_log_verifies() {
        let key = generate_signing_key();
        let (records, checkpoints) = build(45, 10, &key);
        let report = check(records, &checkpoints, &key);
        assert_eq!(
            report,
            VerifyReport {
                ok: true,
                records: 45,
                checkpoints: 4,
                first_bad_seq: None,
                reason: None,
                unsigned_tail: 5
            }
        );
        let empty = check(Vec::new(), &[], &key);
        assert!(empty.ok);
        assert_eq!(empty.records, 0);
    }

    #[test]
    fn ten_thousand_records_verify_quickly() {
        let key = generate_signing_key();
        let (records, checkpoints) = build(10_000, 100, &key);
        let started = Instant::now();
        let report = check(records, &checkpoints, &key);
        let took = started.elapsed();
        println!("verified 10,000 records and 100 checkpoints in {took:?}");
        assert!(report.ok, "{report:?}");
        assert_eq!((report.records, report.checkpoints, report.unsigned_tail), (10_000, 100, 0));
    }

    #[test]
    fn an_edited_field_is_found_at_its_record() {
        let key = generate_signing_key();
        let edits: [fn(&mut Record); 6] = [
            |r| r.actor = "sato".into(),
            |r| r.action = "agent.release".into(),
            |r| r.target.push('x'),
            |r| r.detail = r#"{"reason":"nothing happened"}"#.into(),
            |r| r.time_ms += 1,
            |r| r.hash[0] ^= 1,
        ];
        for (n, edit) in edits.iter().enumerate() {
            let (mut records, checkpoints) = build(30, 10, &key);
            edit(&mut records[16]);
            let report = check(records, &checkpoints, &key);
            assert_bad_at(&report, 17, "record 17 was edited");
            assert_eq!(report.records, 16, "edit {n}");
            assert_eq!(report.checkpoints, 1, "only the checkpoint at 10 precedes it");
        }
    }

    #[test]
    fn a_changed_prev_hash_breaks_the_link() {
        let key = generate_signing_key();
        let (mut records, checkpoints) = build(30, 10, &key);
        // The attacker rewrites prev_hash and recomputes this one record's hash.
        records[16].prev_hash = [7; 32];
        records[16].hash = records[16].compute_hash();
        assert_bad_at(&check(records, &checkpoints, &key), 17, "does not follow record 16");
        let (mut records, checkpoints) = build(5, 10, &key);
        records[0].prev_hash = [1; 32];
        records[0].hash = records[0].compute_hash();
        assert_bad_at(&check(records, &checkpoints, &key), 1, "record 1 does not start the chain");
    }

    #[test]
    fn a_deleted_record_is_found_at_its_seq() {
        let key = generate_signing_key();
        let (mut records, checkpoints) = build(30, 10, &key);
        records.remove(16);
        assert_bad_at(&check(records, &checkpoints, &key), 17, "record 17 is missing");
        let (mut records, checkpoints) = build(30, 10, &key);
        records.remove(0);
        assert_bad_at(&check(records, &checkpoints, &key), 1, "record 1 is missing");
    }

    #[test]
    fn an_inserted_record_is_found() {
        let key = generate_signing_key();
        let (records, checkpoints) = build(30, 10, &key);
        let forged = Chain::append(
            Some(records[15].head()),
            Entry { time_ms: T0, actor: "tanaka", action: "user.create", target: "mallory", detail: "{}" },
        )
        .unwrap();
        assert_eq!(forged.seq, 17);

        // Inserted with a duplicate seq: the old record 17 comes twice.
        let mut duplicated = records.clone();
        duplicated.insert(16, forged.clone());
        assert_bad_at(&check(duplicated, &checkpoints, &key), 17, "out of order or duplicated");

        // Inserted and the rest renumbered: the old record 17, now 18, no longer hashes.
        let mut renumbered = records.clone();
        for record in &mut renumbered[16..] {
            record.seq += 1;
        }
        renumbered.insert(16, forged);
        assert_bad_at(&check(renumbered, &checkpoints, &key), 18, "record 18 was edited");
    }

    #[test]
    fn a_recomputed_chain_fails_at_the_next_checkpoint() {
        let key = generate_signing_key();
        let (mut records, checkpoints) = build(45, 10, &key);
        records[12].detail = r#"{"reason":"rewritten"}"#.into();
        recompute_from(&mut records, 13);
        let report = check(records, &checkpoints, &key);
        assert_bad_at(&report, 20, "after the checkpoint for record 10 were changed");
        assert_eq!(report.records, 19);
        assert_eq!(report.checkpoints, 1);

        // Deleting a record, renumbering and recomputing everything is caught the same way.
        let (mut records, checkpoints) = build(45, 10, &key);
        records.remove(4);
        for record in &mut records[4..] {
            record.seq -= 1;
        }
        recompute_from(&mut records, 5);
        assert_bad_at(&check(records, &checkpoints, &key), 10, "after the start of the log");
    }

    #[test]
    fn a_forged_checkpoint_is_found_at_its_seq() {
        let key = generate_signing_key();
        let other = generate_signing_key();
        // The attacker recomputes the chain after record 13 and re-signs checkpoints with
        // their own key.
        let (mut records, mut checkpoints) = build(45, 10, &key);
        records[12].actor = "nobody".into();
        recompute_from(&mut records, 13);
        for checkpoint in &mut checkpoints[1..] {
            let seq = checkpoint.seq;
            let record = &records[usize::try_from(seq).unwrap() - 1];
            *checkpoint = Checkpoint::sign(record.head(), checkpoint.time_ms, &other);
        }
        let report = check(records, &checkpoints, &key);
        assert_bad_at(&report, 20, "checkpoint for record 20 has an invalid signature");
        assert_eq!(report.checkpoints, 1);

        // One flipped bit in a signature, nothing else changed.
        let (records, mut checkpoints) = build(45, 10, &key);
        checkpoints[2].signature[0] ^= 0x80;
        assert_bad_at(&check(records, &checkpoints, &key), 30, "invalid signature");

        // A record problem before the forged checkpoint is reported first.
        let (mut records, mut checkpoints) = build(45, 10, &key);
        checkpoints[2].signature[0] ^= 0x80;
        records[4].detail.clear();
        assert_bad_at(&check(records, &checkpoints, &key), 5, "record 5 was edited");

        // A forged checkpoint beyond the end is a forgery, not a truncation.
        let (records, mut checkpoints) = build(45, 10, &key);
        checkpoints.push(Checkpoint::sign(crate::Head { seq: 60, hash: [3; 32] }, T0, &other));
        assert_bad_at(&check(records, &checkpoints, &key), 60, "invalid signature");
    }

    #[test]
    fn a_truncated_tail_is_found_at_the_first_missing_seq() {
        let key = generate_signing_key();
        let (mut records, mut checkpoints) = build(25, 10, &key);
        // An on-demand checkpoint at the head, as the manager makes before a verification.
        checkpoints.push(Checkpoint::sign(records[24].head(), T0, &key));
        records.truncate(22);
        let report = check(records, &checkpoints, &key);
        assert_bad_at(&report, 23, "records from 23 on were removed");
        assert_eq!((report.records, report.checkpoints), (22, 2));

        // Everything removed.
        assert_bad_at(&check(Vec::new(), &checkpoints, &key), 1, "records from 1 on were removed");

        // A tail cut after the latest checkpoint cannot be seen; unsigned_tail says so.
        let (mut records, checkpoints) = build(25, 10, &key);
        records.truncate(23);
        let report = check(records, &checkpoints, &key);
        assert!(report.ok);
        assert_eq!(report.unsigned_tail, 3);
    }

    #[test]
    fn checkpoints_may_come_in_any_order() {
        let key = generate_signing_key();
        let (records, mut checkpoints) = build(45, 10, &key);
        checkpoints.reverse();
        let report = check(records, &checkpoints, &key);
        assert!(report.ok, "{report:?}");
        assert_eq!(report.checkpoints, 4);
    }

    #[test]
    fn a_checkpoint_for_seq_zero_matches_nothing() {
        let key = generate_signing_key();
        let (records, mut checkpoints) = build(5, 10, &key);
        checkpoints.push(Checkpoint::sign(crate::Head { seq: 0, hash: [0; 32] }, T0, &key));
        assert_bad_at(&check(records, &checkpoints, &key), 1, "checkpoint for record 0 does not match");
    }

    #[test]
    fn an_unreadable_row_is_reported() {
        let key = generate_signing_key();
        let (records, checkpoints) = build(8, 10, &key);
        let verifying_key = key.verifying_key();
        let mut verifier = Verifier::new(&checkpoints, &verifying_key);
        for record in &records[..3] {
            assert!(verifier.push(record));
        }
        verifier.unreadable(4, "hash is 31 bytes");
        assert!(!verifier.push(&records[4]));
        let report = verifier.finish();
        assert_bad_at(&report, 4, "record 4 cannot be read: hash is 31 bytes");
        assert_eq!(report.records, 3);
    }

    #[test]
    fn the_report_serializes_as_the_console_api_expects() {
        let ok = VerifyReport {
            ok: true,
            records: 123,
            checkpoints: 4,
            first_bad_seq: None,
            reason: None,
            unsigned_tail: 3,
        };
        assert_eq!(
            serde_json::to_value(&ok).unwrap(),
            serde_json::json!({"ok": true, "records": 123, "checkpoints": 4, "unsigned_tail": 3})
        );
        let bad = VerifyReport { ok: false, first_bad_seq: Some(17), reason: Some("x".into()), ..ok };
        let json = serde_json::to_value(&bad).unwrap();
        assert_eq!(json["first_bad_seq"], 17);
        assert_eq!(json["reason"], "x");
    }
}
