//! Signed checkpoints and the checkpoint key.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::rngs::OsRng;

use crate::{put_length_prefixed, AuditError, Head};

const CHECKPOINT_DOMAIN: &str = "mamori.audit.checkpoint.v1";

/// A signed statement "the log's record `seq` has hash `hash`", made at `time_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The seq of the record vouched for.
    pub seq: u64,
    /// That record's hash.
    pub hash: [u8; 32],
    /// When the checkpoint was signed (ms since the Unix epoch).
    pub time_ms: i64,
    /// Ed25519 signature over the encoding in the crate docs.
    pub signature: [u8; 64],
}

impl Checkpoint {
    /// Signs `head` at `time_ms`.
    pub fn sign(head: Head, time_ms: i64, key: &SigningKey) -> Checkpoint {
        let signature = key.sign(&signed_message(head.seq, &head.hash, time_ms)).to_bytes();
        Checkpoint { seq: head.seq, hash: head.hash, time_ms, signature }
    }

    /// Whether the signature is `key`'s over this checkpoint's seq, hash and time (the strict
    /// RFC 8032 check: malleable signatures and weak keys are refused).
    pub fn signature_valid(&self, key: &VerifyingKey) -> bool {
        let signature = Signature::from_bytes(&self.signature);
        key.verify_strict(&signed_message(self.seq, &self.hash, self.time_ms), &signature).is_ok()
    }
}

fn signed_message(seq: u64, hash: &[u8; 32], time_ms: i64) -> Vec<u8> {
    let mut message = Vec::with_capacity(8 + CHECKPOINT_DOMAIN.len() + 8 + 32 + 8);
    put_length_prefixed(&mut message, CHECKPOINT_DOMAIN.as_bytes());
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(hash);
    message.extend_from_slice(&time_ms.to_be_bytes());
    message
}

/// When the manager signs a checkpoint besides on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Sign after every this many records.
    pub every: u64,
}

impl Default for CheckpointPolicy {
    /// Every 100 records: a signature costs about 20 µs and 112 bytes of storage, and an
    /// attacker can rewrite at most the records after the latest one undetected.
    fn default() -> Self {
        CheckpointPolicy { every: 100 }
    }
}

impl CheckpointPolicy {
    /// Whether appending record `seq` calls for a checkpoint.
    pub fn due(&self, seq: u64) -> bool {
        seq > 0 && seq.is_multiple_of(self.every.max(1))
    }
}

/// A new checkpoint key from the OS random number generator. Store `key.to_bytes()` (32
/// bytes) in a file only the manager can read (mode 0600).
pub fn generate_signing_key() -> SigningKey {
    SigningKey::generate(&mut OsRng)
}

/// The checkpoint key from the 32 bytes [`SigningKey::to_bytes`] gave (the RFC 8032 seed).
pub fn signing_key_from_bytes(bytes: &[u8]) -> Result<SigningKey, AuditError> {
    let seed: &[u8; 32] = bytes.try_into().map_err(|_| AuditError::BadSigningKey(bytes.len()))?;
    Ok(SigningKey::from_bytes(seed))
}

/// The public key as 64 lowercase hex digits, to print and to pin (e.g. in a report or in the
/// hospital's records) so that a replaced key is noticed.
pub fn verifying_key_hex(key: &VerifyingKey) -> String {
    hex::encode(key.as_bytes())
}

/// A public key from [`verifying_key_hex`]'s output.
pub fn verifying_key_from_hex(text: &str) -> Result<VerifyingKey, AuditError> {
    let bytes = hex::decode(text.trim()).map_err(|e| AuditError::BadVerifyingKey(e.to_string()))?;
    let bytes: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| AuditError::BadVerifyingKey(format!("{} bytes instead of 32", bytes.len())))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| AuditError::BadVerifyingKey(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 section 7.1, TEST 1: secret key, public key, and the signature of the empty
    /// message.
    const RFC8032_SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const RFC8032_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const RFC8032_SIGNATURE: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

    #[test]
    fn keys_load_from_rfc8032_seed_bytes() {
        let key = signing_key_from_bytes(&hex::decode(RFC8032_SECRET).unwrap()).unwrap();
        assert_eq!(verifying_key_hex(&key.verifying_key()), RFC8032_PUBLIC);
        assert_eq!(hex::encode(key.sign(b"").to_bytes()), RFC8032_SIGNATURE);
        let public = verifying_key_from_hex(RFC8032_PUBLIC).unwrap();
        assert_eq!(public, key.verifying_key());
        assert_eq!(hex::encode(key.to_bytes()), RFC8032_SECRET, "to_bytes gives back the seed");
    }

    #[test]
    fn bad_key_material_is_refused() {
        assert_eq!(signing_key_from_bytes(&[1; 31]).unwrap_err(), AuditError::BadSigningKey(31));
        assert_eq!(signing_key_from_bytes(&[1; 64]).unwrap_err(), AuditError::BadSigningKey(64));
        assert!(verifying_key_from_hex("zz").is_err());
        assert!(verifying_key_from_hex(&RFC8032_PUBLIC[..62]).is_err());
    }

    #[test]
    fn generated_keys_differ_and_sign_checkpoints() {
        let key = generate_signing_key();
        assert_ne!(key.to_bytes(), generate_signing_key().to_bytes());
        let head = Head { seq: 7, hash: [9; 32] };
        let checkpoint = Checkpoint::sign(head, 1_760_000_000_000, &key);
        assert!(checkpoint.signature_valid(&key.verifying_key()));
        assert!(!checkpoint.signature_valid(&generate_signing_key().verifying_key()));
        for tampered in [
            Checkpoint { seq: 8, ..checkpoint.clone() },
            Checkpoint { hash: [8; 32], ..checkpoint.clone() },
            Checkpoint { time_ms: checkpoint.time_ms + 1, ..checkpoint.clone() },
        ] {
            assert!(!tampered.signature_valid(&key.verifying_key()), "{tampered:?}");
        }
        let mut flipped = checkpoint.clone();
        flipped.signature[10] ^= 1;
        assert!(!flipped.signature_valid(&key.verifying_key()));
        // The reloaded key signs the same (Ed25519 is deterministic).
        let reloaded = signing_key_from_bytes(&key.to_bytes()).unwrap();
        assert_eq!(Checkpoint::sign(head, checkpoint.time_ms, &reloaded), checkpoint);
    }

    #[test]
    fn checkpoints_are_due_every_n_records() {
        let policy = CheckpointPolicy { every: 10 };
        let due: Vec<u64> = (1..=35).filter(|&seq| policy.due(seq)).collect();
        assert_eq!(due, [10, 20, 30]);
        assert!(!policy.due(0));
        assert!(CheckpointPolicy { every: 0 }.due(1), "0 is read as every record");
    }
}
