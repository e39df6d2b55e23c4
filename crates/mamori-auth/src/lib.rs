//! Console login logic for mamori: who may log in, how they prove it, what they may do, and
//! for how long. Pure and deterministic: no I/O, no HTTP, no global state, and time is always
//! passed in as `now_ms` (milliseconds since the Unix epoch). The manager stores what these
//! functions return (strings, bytes, integers) in its SQLite store and passes it back in.
//!
//! - [`password`]: [`hash_password`] / [`verify_password`] (Argon2id PHC strings),
//!   [`spend_verification_time`] for unknown usernames, and [`password_policy`] with
//!   [`PolicyProblem`] codes for the console to translate.
//! - [`totp`]: the second factor, RFC 6238 TOTP (SHA-1, 6 digits, 30 s) as used by Google
//!   Authenticator, Microsoft Authenticator and IIJ SmartKey: [`TotpSecret`] (generate, base32,
//!   `otpauth://` URI, [`TotpSecret::verify`] with ±1 step of drift and replay refusal) and
//!   [`current_code`].
//! - [`passkey`]: WebAuthn passkeys, the alternative second factor: [`RelyingParty`] made
//!   from the console's address, registration and login ceremonies over JSON, and the
//!   [`StoredPasskey`] the store keeps (user verification required, counters checked).
//! - [`role`]: [`Role`] (admin, operator, auditor), [`Permission`] and the one table that says
//!   which role may do what ([`Role::allows`]).
//! - [`lockout`]: [`LockoutPolicy`] over the stored [`LoginFailures`] of a user: a wrong
//!   password and a wrong TOTP code both count, 5 failures in 15 minutes lock for 15 minutes.
//! - [`session`]: session cookies ([`new_session_token`], stored only as SHA-256), CSRF tokens,
//!   [`SessionPolicy`] (15 min idle, 12 h absolute) and the single-use [`Challenge`] that
//!   links the password step to the TOTP step of a login.
//! - [`username`]: [`validate_username`] and [`normalize_username`] (case-insensitive
//!   uniqueness).
//!
//! A login, as the manager is expected to run it:
//! 1. `POST /api/login`: [`normalize_username`]; if the user is unknown, call
//!    [`spend_verification_time`] and answer `bad_credentials`. If [`LockoutPolicy::is_locked`],
//!    answer `locked`. [`verify_password`]; on failure store [`LockoutPolicy::on_failure`].
//!    On success issue a [`Challenge`] (store its hash, the user and the expiry).
//! 2. `POST /api/login/totp`: look the challenge up by [`hash_token`] and delete it in the same
//!    statement (single use: a wrong code means starting again with the password), check
//!    [`challenge_usable`] and the lock, then [`TotpSecret::verify`] with the user's last used
//!    step; store the returned step. A wrong code is a failure for the lockout too. On success
//!    store [`LockoutPolicy::on_success`] and a session ([`new_session_token`],
//!    [`new_csrf_token`]); every request then checks [`SessionPolicy::session_valid`].

pub mod lockout;
pub mod passkey;
pub mod password;
pub mod role;
pub mod session;
pub mod totp;
pub mod username;

pub use lockout::{LockoutPolicy, LoginFailures};
pub use passkey::{LoginOutcome, PasskeyError, RelyingParty, StoredPasskey};
pub use password::{
    hash_password, needs_rehash, password_policy, spend_verification_time, verify_password, PolicyProblem,
};
pub use role::{Permission, Role, UnknownRole};
pub use session::{
    challenge_usable, csrf_token_matches, hash_token, new_csrf_token, new_session_token, Challenge,
    ChallengeError, SessionEnd, SessionPolicy,
};
pub use totp::{current_code, TotpError, TotpSecret};
pub use username::{normalize_username, validate_username, UsernameError};

/// What can go wrong while hashing a password.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The Argon2 library refused the input or parameters (its message, never the password).
    #[error("password hashing failed: {0}")]
    Hashing(String),
}
