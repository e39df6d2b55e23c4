//! Tamper-evident audit log for mamori: every security-relevant action on the manager becomes
//! a [`Record`] in a SHA-256 hash chain, and the chain's head is periodically signed with an
//! Ed25519 key as a [`Checkpoint`]. Pure logic: the manager stores records and checkpoints in
//! its SQLite store and keeps the signing key in a 0600 file; this crate builds, signs and
//! verifies them.
//!
//! - [`Chain::append`]: the next [`Record`] after the stored head ([`Head`]).
//! - [`Checkpoint::sign`]: a signature over a head; [`CheckpointPolicy`] says when one is due.
//! - [`verify`] / [`Verifier`]: streaming verification in seq order, giving a
//!   [`VerifyReport`] with the first bad seq and why.
//! - [`generate_signing_key`], [`signing_key_from_bytes`], [`verifying_key_hex`],
//!   [`verifying_key_from_hex`]: the checkpoint key as bytes and as printable hex.
//!
//! # What it detects
//! Someone who can edit the SQLite file can change a record's fields (the stored hash no
//! longer matches), delete or insert records (a seq gap, or a `prev_hash` that does not link),
//! or recompute the whole chain after an edit (it is consistent again, but no longer matches
//! the signed checkpoints), forge a checkpoint (its signature fails without the private key),
//! or cut the tail off (a checkpoint names a seq beyond the last record).
//!
//! What it cannot detect: changes after the latest checkpoint that recompute the chain, or
//! the removal of the newest records *together with* the checkpoints that cover them. So the
//! manager signs a checkpoint every [`CheckpointPolicy::every`] records and also on demand
//! (at each verification and at shutdown), and [`VerifyReport::unsigned_tail`] says how many
//! records are protected by the chain alone. Printing the latest checkpoint elsewhere (monthly
//! report, syslog) extends the protection to an attacker who also deletes checkpoints.
//!
//! # Encoding (enough to re-implement verification)
//! Integers are big-endian; `u64` and two's-complement `i64` take 8 bytes. A string `s` is
//! written as `lp(s)` = its UTF-8 byte length as `u64`, then its bytes.
//!
//! A record's `hash` is SHA-256 of
//! `lp("mamori.audit.record.v1") ‖ u64(seq) ‖ i64(time_ms) ‖ lp(actor) ‖ lp(action) ‖
//! lp(target) ‖ lp(detail) ‖ prev_hash` (32 bytes). `seq` starts at 1 with no gaps;
//! `prev_hash` is the previous record's `hash`, 32 zero bytes for seq 1. `detail` is text
//! (the manager writes JSON), hashed exactly as stored, so no JSON canonicalisation is needed.
//!
//! A checkpoint's `signature` is a pure Ed25519 signature (RFC 8032) over
//! `lp("mamori.audit.checkpoint.v1") ‖ u64(seq) ‖ hash (32 bytes) ‖ i64(time_ms)`, where
//! `(seq, hash)` is the head it vouches for and `time_ms` when it was signed. Verification
//! uses the strict check (no malleable signatures, no weak keys).
//!
//! Verification walks the records in seq order. For each: the seq must be the expected one,
//! the recomputed hash must equal the stored one, `prev_hash` must equal the previous hash,
//! and every checkpoint at that seq must name the same hash. Every checkpoint's signature must
//! be valid, and no checkpoint may name a seq after the last record. The first failure in seq
//! order is reported.

mod chain;
mod checkpoint;
mod verify;

pub use chain::{Chain, Entry, Head, Record};
pub use checkpoint::{
    generate_signing_key, signing_key_from_bytes, verifying_key_from_hex, verifying_key_hex, Checkpoint,
    CheckpointPolicy,
};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use verify::{verify, Verifier, VerifyReport};

/// What can go wrong building the log or loading its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The head's seq is `u64::MAX`; no record can follow it.
    #[error("the audit log's sequence numbers are exhausted")]
    SeqExhausted,
    /// Signing-key bytes that are not a 32-byte Ed25519 seed.
    #[error("the audit signing key must be 32 bytes, got {0}")]
    BadSigningKey(usize),
    /// A verifying key that is not 64 hex digits of a valid Ed25519 public key.
    #[error("not an Ed25519 public key in hex: {0}")]
    BadVerifyingKey(String),
}

/// Appends `lp(s)`: the byte length as a big-endian u64, then the bytes.
fn put_length_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    // usize is at most 64 bits on every platform Rust supports.
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}
