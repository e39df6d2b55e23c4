//! Enrollment tokens.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const TOKEN_PREFIX: &str = "mmt_";

/// A freshly generated enrollment token. Show `secret` to the administrator once; store only `hash`.
pub struct NewToken {
    /// `"mmt_"` followed by base64url (no padding) of 32 random bytes.
    pub secret: String,
    /// SHA-256 of `secret` (the whole string, prefix included).
    pub hash: [u8; 32],
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("secret", &"[redacted]")
            .field("hash", &hex::encode(self.hash))
            .finish()
    }
}

/// Generates a 256-bit enrollment token.
pub fn generate_token() -> NewToken {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_token(&secret);
    NewToken { secret, hash }
}

/// SHA-256 of the token. A 256-bit random secret cannot be brute-forced, so a slow password hash
/// would add cost without adding security.
pub fn hash_token(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether `secret` hashes to `stored_hash`, compared in constant time so the comparison does not
/// leak how many leading bytes of the hash matched.
pub fn token_matches(secret: &str, stored_hash: &[u8; 32]) -> bool {
    hash_token(secret).ct_eq(stored_hash).into()
}
