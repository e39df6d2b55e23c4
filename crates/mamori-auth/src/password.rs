//! Password hashing (Argon2id, PHC strings) and the password policy.
//!
//! The stored form is the PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`): it carries its
//! own parameters and salt, so verification keeps working after [`hash_password`]'s
//! parameters change, and [`needs_rehash`] tells when to store a fresh hash at the next login.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::Serialize;

use crate::username::normalize_username;
use crate::AuthError;

/// Argon2id with 19 MiB of memory, 2 passes and 1 lane: OWASP's recommended minimum for
/// Argon2id. On the 2-core development machine a hash or a verification takes 25–35 ms
/// (release build, measured by the `hashing_cost_is_reported` test), which a login pays
/// once; 19 MiB per concurrent login is affordable on a small hospital server, and an
/// attacker with the hash file pays the same per guess.
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;
const SALT_BYTES: usize = 16;

/// The shortest password the policy accepts, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The longest password the policy accepts, in characters: long enough for any passphrase,
/// short enough that nobody can make the server hash megabytes.
pub const MAX_PASSWORD_CHARS: usize = 256;

/// A hash of a random password nobody knows, made with the current parameters (the
/// `dummy_hash_uses_current_parameters` test keeps it in step with them).
const DUMMY_PHC: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$T5UEkigaBq1Y1JA7eOKBOg$etPLJRI0Alj+KUZLZtIVU7cozuh4rGR1wSLsnwE2mX4";

fn current_params() -> Result<Params, AuthError> {
    Params::new(MEMORY_KIB, PASSES, LANES, None).map_err(|e| AuthError::Hashing(e.to_string()))
}

/// Hashes a password with Argon2id and a fresh random salt; returns the PHC string to store.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, current_params()?);
    let mut salt_bytes = [0u8; SALT_BYTES];
    OsRng.fill_bytes(&mut salt_bytes);
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| AuthError::Hashing(e.to_string()))?;
    let hash =
        argon.hash_password(password.as_bytes(), &salt).map_err(|e| AuthError::Hashing(e.to_string()))?;
    Ok(hash.to_string())
}

/// True if `password` matches the stored PHC string. A malformed PHC string matches nothing.
/// The hash comparison inside is constant-time.
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    // Only Argon2id hashes are ever stored; refusing the other variants keeps a tampered row
    // from downgrading verification.
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return false;
    }
    // The verifier takes memory, passes and lanes from the PHC string itself.
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}

/// Does the same work as a real [`verify_password`] and discards the result. Call it when the
/// username is unknown, so that the answer takes as long as for a known user and the timing
/// does not tell which usernames exist.
pub fn spend_verification_time(password: &str) {
    let _ = std::hint::black_box(verify_password(password, DUMMY_PHC));
}

/// True if the stored hash was made with other parameters than [`hash_password`] uses now (or
/// cannot be read): after a successful login, store a fresh hash of the password.
pub fn needs_rehash(phc: &str) -> bool {
    let (Ok(parsed), Ok(current)) = (PasswordHash::new(phc), current_params()) else {
        return true;
    };
    let Ok(stored) = Params::try_from(&parsed) else {
        return true;
    };
    parsed.algorithm != Algorithm::Argon2id.ident()
        || stored.m_cost() != current.m_cost()
        || stored.t_cost() != current.t_cost()
        || stored.p_cost() != current.p_cost()
}

/// Why the policy refuses a new password. Serialized as its [`code`](Self::code), which the
/// console translates (`error.<code>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum PolicyProblem {
    /// Fewer than [`MIN_PASSWORD_CHARS`] characters.
    #[serde(rename = "password_too_short")]
    TooShort,
    /// More than [`MAX_PASSWORD_CHARS`] characters.
    #[serde(rename = "password_too_long")]
    TooLong,
    /// The username itself (ignoring case).
    #[serde(rename = "password_is_username")]
    SameAsUsername,
    /// One of the most common passwords, or one character repeated (ignoring case).
    #[serde(rename = "password_too_common")]
    TooCommon,
}

impl PolicyProblem {
    /// The stable code of this problem (what serde writes).
    pub fn code(self) -> &'static str {
        match self {
            PolicyProblem::TooShort => "password_too_short",
            PolicyProblem::TooLong => "password_too_long",
            PolicyProblem::SameAsUsername => "password_is_username",
            PolicyProblem::TooCommon => "password_too_common",
        }
    }
}

/// Common passwords of 12 characters or more (shorter ones fail the length rule anyway),
/// from the top of public breach-frequency lists, plus the obvious ones for this product and
/// setting. Compared lowercased.
const COMMON_PASSWORDS: &[&str] = &[
    "123456789012",
    "1234567890123",
    "12345678901234",
    "123456789012345",
    "1234567890qwerty",
    "123123123123",
    "123412341234",
    "111111111111",
    "000000000000",
    "121212121212",
    "987654321098",
    "qwertyuiop12",
    "qwertyuiop123",
    "qwertyuiopasdf",
    "qwertyuiopasdfghjkl",
    "qwerty123456",
    "qwerty1234567",
    "qwertyqwerty",
    "asdfghjkl123",
    "asdfasdfasdf",
    "zxcvbnm12345",
    "1q2w3e4r5t6y",
    "1q2w3e4r5t6y7u",
    "1qaz2wsx3edc",
    "1qaz2wsx3edc4rfv",
    "qazwsxedcrfv",
    "zaq12wsxcde3",
    "abcdefghijkl",
    "abc123456789",
    "abcd12345678",
    "password1234",
    "password12345",
    "password123!",
    "password@123",
    "passwordpassword",
    "p@ssw0rd1234",
    "p@ssword1234",
    "passw0rd1234",
    "iloveyou1234",
    "administrator",
    "administrator1",
    "admin1234567",
    "adminadmin12",
    "adminadminadmin",
    "welcome12345",
    "welcome123456",
    "letmein12345",
    "changeme1234",
    "changeme12345",
    "football1234",
    "baseball1234",
    "sunshine1234",
    "princess1234",
    "superman1234",
    "trustno11234",
    "computer1234",
    "internet1234",
    "mamori123456",
    "mamorimamori",
    "mamoripassword",
    "hospital1234",
    "hospital12345",
    "byouin123456",
    "nihonjapan12",
    "japan1234567",
    "tokyo1234567",
];

/// Checks a new password for `username`; all problems at once, so the console can show them
/// together.
pub fn password_policy(password: &str, username: &str) -> Result<(), Vec<PolicyProblem>> {
    let mut problems = Vec::new();
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        problems.push(PolicyProblem::TooShort);
    }
    if chars > MAX_PASSWORD_CHARS {
        problems.push(PolicyProblem::TooLong);
    }
    let lowered = password.to_lowercase();
    if !username.is_empty() && lowered == normalize_username(username) {
        problems.push(PolicyProblem::SameAsUsername);
    }
    let mut distinct = lowered.chars();
    let one_character_repeated = match distinct.next() {
        Some(first) => distinct.all(|c| c == first),
        None => false,
    };
    if one_character_repeated || COMMON_PASSWORDS.contains(&lowered.as_str()) {
        problems.push(PolicyProblem::TooCommon);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_hash_verifies_its_password_and_nothing_else() {
        let phc = hash_password("correct horse battery staple").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("correct horse battery staple", &phc));
        assert!(!verify_password("correct horse battery stapl", &phc));
        assert!(!verify_password("Correct horse battery staple", &phc));
        assert!(!verify_password("", &phc));
        // A fresh salt each time.
        assert_ne!(phc, hash_password("correct horse battery staple").unwrap());
        assert!(!needs_rehash(&phc));
    }

    #[test]
    fn verifies_a_hash_made_by_the_reference_implementation() {
        // `echo -n "correct horse battery staple" | argon2 mamori-test-salt -id -t 2 -k 19456
        //  -p 1 -l 32 -e` with the phc-winner-argon2 reference CLI (Debian package argon2).
        let reference = "$argon2id$v=19$m=19456,t=2,p=1$bWFtb3JpLXRlc3Qtc2FsdA$\
                         sJ02QYfcmN/dkNpe5IIXsxV/gxDqDLw7xHKv3fQscNw";
        assert!(verify_password("correct horse battery staple", reference));
        assert!(!verify_password("correct horse battery staplf", reference));
        assert!(!needs_rehash(reference));
    }

    #[test]
    fn malformed_or_foreign_hashes_match_nothing() {
        for phc in ["", "plaintext", "$argon2id$v=19$m=19456,t=2,p=1$", "$2b$12$abcdefghijklmnopqrstuu"] {
            assert!(!verify_password("anything at all", phc), "{phc:?}");
            assert!(needs_rehash(phc), "{phc:?}");
        }
        // phc-winner-argon2's README example, an Argon2i hash of "password": genuine, but
        // not the variant this crate stores.
        let argon2i = "$argon2i$v=19$m=65536,t=2,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
        assert!(!verify_password("password", argon2i));
        assert!(needs_rehash(argon2i));
    }

    #[test]
    fn weaker_parameters_need_a_rehash() {
        let weak =
            Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(8 * 1024, 1, 1, None).unwrap());
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let phc = weak.hash_password(b"old password 1", &salt).unwrap().to_string();
        assert!(verify_password("old password 1", &phc), "old hashes keep verifying");
        assert!(needs_rehash(&phc));
    }

    #[test]
    fn dummy_hash_uses_current_parameters() {
        // Unknown users must cost what known users cost: same algorithm and parameters.
        assert!(!needs_rehash(DUMMY_PHC));
        assert!(PasswordHash::new(DUMMY_PHC).is_ok());
        let known = hash_password("a password for timing").unwrap();
        let started = Instant::now();
        assert!(verify_password("a password for timing", &known));
        let real = started.elapsed();
        let started = Instant::now();
        spend_verification_time("a password for timing");
        let dummy = started.elapsed();
        println!("verify: {real:?}; dummy verification: {dummy:?}");
    }

    #[test]
    fn hashing_cost_is_reported() {
        let started = Instant::now();
        let rounds = 4;
        for _ in 0..rounds {
            hash_password("measure me please").unwrap();
        }
        println!("hash_password: {:?} each", started.elapsed() / rounds);
    }

    #[test]
    fn the_policy_wants_12_characters() {
        assert_eq!(password_policy("Kj7#mPq2vL9", "tanaka"), Err(vec![PolicyProblem::TooShort]));
        assert_eq!(password_policy("Kj7#mPq2vL9x", "tanaka"), Ok(()));
        // Characters, not bytes: 12 kana are 36 bytes but 12 characters.
        assert_eq!(password_policy("あいうえおかきくけこさし", "tanaka"), Ok(()));
        assert_eq!(password_policy("あいうえおかきくけこさ", "tanaka"), Err(vec![PolicyProblem::TooShort]));
        assert_eq!(password_policy(&"ab".repeat(129), "tanaka"), Err(vec![PolicyProblem::TooLong]));
        assert_eq!(password_policy(&"ab".repeat(128), "tanaka"), Ok(()));
    }

    #[test]
    fn the_policy_refuses_the_username_and_common_passwords() {
        assert_eq!(
            password_policy("Yamada.Hanako", "yamada.hanako"),
            Err(vec![PolicyProblem::SameAsUsername])
        );
        assert_eq!(password_policy("Password1234", "tanaka"), Err(vec![PolicyProblem::TooCommon]));
        assert_eq!(password_policy("1qaz2wsx3edc", "tanaka"), Err(vec![PolicyProblem::TooCommon]));
        assert_eq!(password_policy("zzzzzzzzzzzzzzzz", "tanaka"), Err(vec![PolicyProblem::TooCommon]));
        // All problems at once.
        assert_eq!(
            password_policy("admin", "admin"),
            Err(vec![PolicyProblem::TooShort, PolicyProblem::SameAsUsername])
        );
        assert_eq!(password_policy("", "tanaka"), Err(vec![PolicyProblem::TooShort]));
        // Every listed common password is refused, whatever its case.
        for common in COMMON_PASSWORDS {
            assert!(common.chars().count() >= MIN_PASSWORD_CHARS, "{common} is caught by length already");
            let upper = common.to_uppercase();
            assert_eq!(password_policy(&upper, "tanaka"), Err(vec![PolicyProblem::TooCommon]), "{upper}");
        }
    }

    #[test]
    fn problems_serialize_as_their_codes() {
        for problem in [
            PolicyProblem::TooShort,
            PolicyProblem::TooLong,
            PolicyProblem::SameAsUsername,
            PolicyProblem::TooCommon,
        ] {
            assert_eq!(serde_json::to_value(problem).unwrap(), serde_json::Value::from(problem.code()));
        }
        assert_eq!(serde_json::to_string(&PolicyProblem::TooShort).unwrap(), "\"password_too_short\"");
    }
}
