//! Records and the hash chain.

use sha2::{Digest, Sha256};

use crate::{put_length_prefixed, AuditError};

const RECORD_DOMAIN: &str = "mamori.audit.record.v1";

/// One audit-log entry as stored. See the crate docs for how `hash` is computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// When the action happened (ms since the Unix epoch).
    pub time_ms: i64,
    /// Who did it: a username, or `system`.
    pub actor: String,
    /// What was done, e.g. `agent.isolate`, `user.create`, `login.failure`.
    pub action: String,
    /// What it was done to, e.g. an agent id or a username.
    pub target: String,
    /// Further detail as text (JSON written by the manager), hashed exactly as stored.
    pub detail: String,
    /// The previous record's `hash`; zeros for seq 1.
    pub prev_hash: [u8; 32],
    /// SHA-256 over all the fields above.
    pub hash: [u8; 32],
}

/// The newest record's seq and hash: all that is needed to append, and what a checkpoint signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The newest record's seq.
    pub seq: u64,
    /// The newest record's hash.
    pub hash: [u8; 32],
}

/// The content of a new record. Named fields, so that actor, action and target cannot be
/// swapped by accident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// When the action happened (ms since the Unix epoch).
    pub time_ms: i64,
    /// Who did it.
    pub actor: &'a str,
    /// What was done.
    pub action: &'a str,
    /// What it was done to.
    pub target: &'a str,
    /// Further detail (JSON text).
    pub detail: &'a str,
}

impl Record {
    /// The hash this record's fields should have (ignores the stored `hash`).
    pub fn compute_hash(&self) -> [u8; 32] {
        record_hash(
            self.seq,
            &Entry {
                time_ms: self.time_ms,
                actor: &self.actor,
                action: &self.action,
                target: &self.target,
                detail: &self.detail,
            },
            &self.prev_hash,
        )
    }

    /// This record as the head of the chain.
    pub fn head(&self) -> Head {
        Head { seq: self.seq, hash: self.hash }
    }
}

fn record_hash(seq: u64, entry: &Entry<'_>, prev_hash: &[u8; 32]) -> [u8; 32] {
    let mut encoded = Vec::with_capacity(
        128 + entry.actor.len() + entry.action.len() + entry.target.len() + entry.detail.len(),
    );
    put_length_prefixed(&mut encoded, RECORD_DOMAIN.as_bytes());
    encoded.extend_from_slice(&seq.to_be_bytes());
    encoded.extend_from_slice(&entry.time_ms.to_be_bytes());
    put_length_prefixed(&mut encoded, entry.actor.as_bytes());
    put_length_prefixed(&mut encoded, entry.action.as_bytes());
    put_length_prefixed(&mut encoded, entry.target.as_bytes());
    put_length_prefixed(&mut encoded, entry.detail.as_bytes());
    encoded.extend_from_slice(prev_hash);
    Sha256::digest(&encoded).into()
}

/// The hash chain's append rule.
#[derive(Debug)]
pub struct Chain;

impl Chain {
    /// The record that follows `head` (`None` for an empty log). The manager reads the head
    /// and inserts the result in one transaction, so that two appends cannot both follow the
    /// same head.
    pub fn append(head: Option<Head>, entry: Entry<'_>) -> Result<Record, AuditError> {
        let (seq, prev_hash) = match head {
            None => (1, [0u8; 32]),
            Some(head) => (head.seq.checked_add(1).ok_or(AuditError::SeqExhausted)?, head.hash),
        };
        let hash = record_hash(seq, &entry, &prev_hash);
        Ok(Record {
            seq,
            time_ms: entry.time_ms,
            actor: entry.actor.to_string(),
            action: entry.action.to_string(),
            target: entry.target.to_string(),
            detail: entry.detail.to_string(),
            prev_hash,
            hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(actor: &'a str, action: &'a str, target: &'a str, detail: &'a str) -> Entry<'a> {
        Entry { time_ms: 1_760_000_000_000, actor, action, target, detail }
    }

    #[test]
    fn records_chain_from_seq_1_with_a_zero_prev_hash() {
        let first = Chain::append(None, entry("tanaka", "login.success", "tanaka", "{}")).unwrap();
        assert_eq!(first.seq, 1);
        assert_eq!(first.prev_hash, [0; 32]);
        assert_eq!(first.hash, first.compute_hash());
        let second =
            Chain::append(Some(first.head()), entry("tanaka", "agent.isolate", "ward-pc-01", "{}")).unwrap();
        assert_eq!(second.seq, 2);
        assert_eq!(second.prev_hash, first.hash);
        assert_ne!(second.hash, first.hash);
    }

    #[test]
    fn the_hash_is_the_documented_encoding() {
        // Re-implemented from the crate docs, byte by byte.
        let record = Chain::append(
            Some(Head { seq: 41, hash: [0xab; 32] }),
            Entry {
                time_ms: -5,
                actor: "佐藤",
                action: "user.create",
                target: "",
                detail: r#"{"role":"auditor"}"#,
            },
        )
        .unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 22]);
        bytes.extend_from_slice(b"mamori.audit.record.v1");
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 42]);
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfb]);
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 6]);
        bytes.extend_from_slice("佐藤".as_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 11]);
        bytes.extend_from_slice(b"user.create");
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 18]);
        bytes.extend_from_slice(br#"{"role":"auditor"}"#);
        bytes.extend_from_slice(&[0xab; 32]);
        assert_eq!(record.hash.as_slice(), Sha256::digest(&bytes).as_slice());
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let a = Chain::append(None, entry("ab", "c", "d", "e")).unwrap();
        let b = Chain::append(None, entry("a", "bc", "d", "e")).unwrap();
        let c = Chain::append(None, entry("a", "b", "cd", "e")).unwrap();
        let d = Chain::append(None, entry("a", "b", "c", "de")).unwrap();
        let hashes = [a.hash, b.hash, c.hash, d.hash];
        for i in 0..hashes.len() {
            for j in i + 1..hashes.len() {
                assert_ne!(hashes[i], hashes[j], "{i} and {j}");
            }
        }
    }

    #[test]
    fn the_last_seq_cannot_be_followed() {
        let head = Head { seq: u64::MAX, hash: [1; 32] };
        assert_eq!(Chain::append(Some(head), entry("a", "b", "c", "d")), Err(AuditError::SeqExhausted));
    }
}
