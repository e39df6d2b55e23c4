//! Session cookies, CSRF tokens, session expiry and the login challenge.
//!
//! Tokens are 256 random bits from the OS, hex-encoded. The store keeps only SHA-256 of a
//! session or challenge token ([`hash_token`]), so a copy of the database does not let anyone
//! take over a session. Looking a row up by that hash needs no constant-time care: an
//! attacker who learns how many leading bytes of a hash matched learns nothing about tokens.

use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const TOKEN_BYTES: usize = 32;

fn random_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// SHA-256 of a token as sent by the browser: the key to store and to look sessions and
/// challenges up by.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new session: the value for the `mamori_session` cookie, and the hash to store.
pub fn new_session_token() -> (String, [u8; 32]) {
    let token = random_token();
    let hash = hash_token(&token);
    (token, hash)
}

/// A new CSRF token, stored with the session and sent by the page as `X-CSRF-Token`.
pub fn new_csrf_token() -> String {
    random_token()
}

/// Whether the presented `X-CSRF-Token` is the session's, compared in constant time.
pub fn csrf_token_matches(expected: &str, presented: &str) -> bool {
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// How long a session lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// The session ends after this long without a request.
    pub idle_ms: i64,
    /// The session ends this long after login, however active.
    pub absolute_ms: i64,
}

impl Default for SessionPolicy {
    /// 15 minutes idle, 12 hours absolute (one long shift).
    fn default() -> Self {
        SessionPolicy { idle_ms: 15 * 60 * 1000, absolute_ms: 12 * 60 * 60 * 1000 }
    }
}

/// Why a session is no longer valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionEnd {
    /// No request for longer than the idle timeout.
    #[error("session ended after inactivity")]
    Idle,
    /// Older than the absolute lifetime.
    #[error("session reached its maximum lifetime")]
    Expired,
}

impl SessionPolicy {
    /// Whether a session created at `created_ms` and last used at `last_seen_ms` is still valid
    /// at `now_ms`. On `Ok`, the manager stores `now_ms` as the new `last_seen_ms`.
    pub fn session_valid(&self, created_ms: i64, last_seen_ms: i64, now_ms: i64) -> Result<(), SessionEnd> {
        if now_ms.saturating_sub(created_ms) >= self.absolute_ms {
            return Err(SessionEnd::Expired);
        }
        if now_ms.saturating_sub(last_seen_ms) >= self.idle_ms {
            return Err(SessionEnd::Idle);
        }
        Ok(())
    }

    /// The idle timeout in whole seconds (the API's `idle_timeout_s`).
    pub fn idle_timeout_s(&self) -> i64 {
        self.idle_ms / 1000
    }
}

/// The link between the password step and the TOTP step of one login: proof that the password
/// was right, without a session. Give `token` to the client, store `hash`, the user and
/// `expires_ms`; the token is single use (delete the row when it is presented, whatever the
/// outcome).
#[derive(Clone, PartialEq, Eq)]
pub struct Challenge {
    /// For the client (`"challenge"` in the login answer).
    pub token: String,
    /// SHA-256 of the token, to store and look up by ([`hash_token`] of what the client sends).
    pub hash: [u8; 32],
    /// When the challenge stops being usable (ms since the epoch).
    pub expires_ms: i64,
}

impl std::fmt::Debug for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenge")
            .field("token", &"<redacted>")
            .field("expires_ms", &self.expires_ms)
            .finish()
    }
}

impl Challenge {
    /// How long the user has to type the TOTP code.
    pub const TTL_MS: i64 = 5 * 60 * 1000;

    /// A new challenge issued at `now_ms`.
    pub fn issue(now_ms: i64) -> Challenge {
        let token = random_token();
        let hash = hash_token(&token);
        Challenge { token, hash, expires_ms: now_ms.saturating_add(Self::TTL_MS) }
    }
}

/// Why a presented challenge cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// More than [`Challenge::TTL_MS`] passed since the password step.
    #[error("login challenge expired; enter the password again")]
    Expired,
}

/// Whether a stored challenge with this expiry may still be used at `now_ms`.
pub fn challenge_usable(expires_ms: i64, now_ms: i64) -> Result<(), ChallengeError> {
    if now_ms < expires_ms {
        Ok(())
    } else {
        Err(ChallengeError::Expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60 * 1000;
    const T0: i64 = 1_760_000_000_000;

    #[test]
    fn session_tokens_are_random_256_bit_and_stored_as_sha256() {
        let (token, hash) = new_session_token();
        assert_eq!(token.len(), 64);
        assert_eq!(hex::decode(&token).unwrap().len(), 32);
        // SHA-256 of the ASCII token, checked with an independent digest call.
        assert_eq!(hash.as_slice(), sha2::Sha256::digest(token.as_bytes()).as_slice());
        assert_eq!(hash_token(&token), hash);
        let (other, other_hash) = new_session_token();
        assert_ne!(token, other);
        assert_ne!(hash, other_hash);
        // The FIPS 180-2 "abc" vector: hash_token is plain SHA-256 of the text.
        assert_eq!(
            hex::encode(hash_token("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn csrf_tokens_compare_exactly() {
        let csrf = new_csrf_token();
        assert_eq!(csrf.len(), 64);
        assert_ne!(csrf, new_csrf_token());
        assert!(csrf_token_matches(&csrf, &csrf.clone()));
        assert!(!csrf_token_matches(&csrf, &csrf[..63]));
        assert!(!csrf_token_matches(&csrf, &csrf.to_uppercase()));
        assert!(!csrf_token_matches(&csrf, ""));
        assert!(!csrf_token_matches("", ""), "an empty stored token must never match");
    }

    #[test]
    fn sessions_end_after_15_idle_minutes() {
        let policy = SessionPolicy::default();
        assert_eq!(policy.session_valid(T0, T0, T0 + 15 * MINUTE - 1), Ok(()));
        assert_eq!(policy.session_valid(T0, T0, T0 + 15 * MINUTE), Err(SessionEnd::Idle));
        // Activity keeps it alive.
        assert_eq!(policy.session_valid(T0, T0 + 60 * MINUTE, T0 + 74 * MINUTE), Ok(()));
        assert_eq!(policy.idle_timeout_s(), 900);
    }

    #[test]
    fn sessions_end_after_12_hours_however_active() {
        let policy = SessionPolicy::default();
        let twelve_hours = 12 * 60 * MINUTE;
        assert_eq!(policy.session_valid(T0, T0 + twelve_hours - 2, T0 + twelve_hours - 1), Ok(()));
        assert_eq!(
            policy.session_valid(T0, T0 + twelve_hours - 1, T0 + twelve_hours),
            Err(SessionEnd::Expired)
        );
    }

    #[test]
    fn challenges_last_five_minutes_and_are_stored_hashed() {
        let challenge = Challenge::issue(T0);
        assert_eq!(challenge.expires_ms, T0 + 5 * MINUTE);
        assert_eq!(hash_token(&challenge.token), challenge.hash);
        assert_ne!(challenge.token, Challenge::issue(T0).token);
        assert_eq!(challenge_usable(challenge.expires_ms, T0 + 5 * MINUTE - 1), Ok(()));
        assert_eq!(challenge_usable(challenge.expires_ms, T0 + 5 * MINUTE), Err(ChallengeError::Expired));
        assert!(!format!("{challenge:?}").contains(&challenge.token), "Debug must not print the token");
    }
}
