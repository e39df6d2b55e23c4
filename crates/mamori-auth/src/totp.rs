//! The second factor: time-based one-time passwords, RFC 6238 with HMAC-SHA-1, 6 digits and
//! 30-second steps — the only combination every common authenticator app (Google
//! Authenticator, Microsoft Authenticator, IIJ SmartKey) supports.
//!
//! The manager stores the secret ([`TotpSecret::to_base32`]) and the last step a code was
//! accepted for; [`TotpSecret::verify`] refuses any code from that step or an earlier one, so
//! an observed code cannot be replayed.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::rngs::OsRng;
use rand::RngCore;
use sha1::Sha1;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

type HmacSha1 = Hmac<Sha1>;

/// The step length.
pub const STEP_MS: i64 = 30_000;
/// Digits of a code.
pub const DIGITS: u32 = 6;
/// The issuer shown in authenticator apps.
pub const ISSUER: &str = "mamori";

/// New secrets are 160 bits, the length RFC 4226 recommends (and the HMAC-SHA-1 output size).
const GENERATED_SECRET_BYTES: usize = 20;
/// RFC 4226 requires at least 128 bits.
const MIN_SECRET_BYTES: usize = 16;
/// SHA-1's block size: HMAC zero-pads shorter keys to it, which lets [`hotp`] build the MAC
/// from a fixed-size key without a fallible constructor.
const MAX_SECRET_BYTES: usize = 64;

/// Steps of clock drift accepted either side of the current one.
const DRIFT_STEPS: u64 = 1;

/// Characters left as they are in `otpauth://` URIs: RFC 3986's unreserved set.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Why a code or secret was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    /// The code is not 6 digits (spaces are allowed and ignored).
    #[error("the code must be 6 digits")]
    Malformed,
    /// The code is not the current one (nor the one before or after).
    #[error("the code is not valid now")]
    Invalid,
    /// The code is valid but its step was already used for a login.
    #[error("the code was already used; wait for the next one")]
    Replayed,
    /// The stored secret is not base32 or not 16–64 bytes long.
    #[error("the TOTP secret is malformed")]
    BadSecret,
    /// `now_ms` is before 1970, where no step exists.
    #[error("the clock is before 1970")]
    TimeBeforeEpoch,
}

/// A TOTP shared secret. Zeroed when dropped; `Debug` does not print it.
#[derive(Clone)]
pub struct TotpSecret {
    bytes: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

impl TotpSecret {
    /// A new random 160-bit secret from the OS random number generator.
    pub fn generate() -> TotpSecret {
        let mut bytes = Zeroizing::new(vec![0u8; GENERATED_SECRET_BYTES]);
        OsRng.fill_bytes(&mut bytes);
        TotpSecret { bytes }
    }

    /// A secret from raw bytes (16 to 64 of them).
    pub fn from_bytes(bytes: &[u8]) -> Result<TotpSecret, TotpError> {
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
            return Err(TotpError::BadSecret);
        }
        Ok(TotpSecret { bytes: Zeroizing::new(bytes.to_vec()) })
    }

    /// The secret as unpadded RFC 4648 base32 (what apps accept for manual entry and what the
    /// manager stores).
    pub fn to_base32(&self) -> String {
        data_encoding::BASE32_NOPAD.encode(&self.bytes)
    }

    /// Reads base32 as written by [`to_base32`](Self::to_base32); also accepts lowercase,
    /// spaces and `=` padding, as people copy it.
    pub fn from_base32(text: &str) -> Result<TotpSecret, TotpError> {
        let cleaned: Zeroizing<String> = Zeroizing::new(
            text.chars().filter(|c| !matches!(c, ' ' | '=')).map(|c| c.to_ascii_uppercase()).collect(),
        );
        let bytes = Zeroizing::new(
            data_encoding::BASE32_NOPAD.decode(cleaned.as_bytes()).map_err(|_| TotpError::BadSecret)?,
        );
        TotpSecret::from_bytes(&bytes)
    }

    /// The `otpauth://totp/…` URI for enrolment (as text or a QR code), with every part
    /// percent-encoded.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> String {
        let issuer = utf8_percent_encode(issuer, URI_COMPONENT).to_string();
        let account = utf8_percent_encode(account, URI_COMPONENT);
        // The label's colon stays literal: it separates issuer and account for the app.
        format!(
            "otpauth://totp/{issuer}:{account}?secret={}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={}",
            self.to_base32(),
            STEP_MS / 1000
        )
    }

    /// Checks a code typed at `now_ms`. Accepts the codes of the current step and one step
    /// either side (clock drift), but only of steps after `last_used_step`. Returns the step
    /// the code belongs to: store it as the new `last_used_step`.
    pub fn verify(&self, code: &str, now_ms: i64, last_used_step: Option<u64>) -> Result<u64, TotpError> {
        let presented = parse_code(code)?;
        let now_step = step_at(now_ms)?;
        let mut accepted = None;
        let mut replayed = false;
        // All candidate steps are computed and compared, in constant time, whatever matches.
        for step in now_step.saturating_sub(DRIFT_STEPS)..=now_step.saturating_add(DRIFT_STEPS) {
            let matches: bool = hotp(&self.bytes, step, DIGITS).ct_eq(&presented).into();
            if matches {
                if last_used_step.is_some_and(|last| step <= last) {
                    replayed = true;
                } else {
                    accepted = Some(step);
                }
            }
        }
        match (accepted, replayed) {
            (Some(step), _) => Ok(step),
            (None, true) => Err(TotpError::Replayed),
            (None, false) => Err(TotpError::Invalid),
        }
    }
}

/// The code an authenticator app shows at `now_ms` (6 digits, zero-padded). Times before 1970
/// give the code of step 0.
pub fn current_code(secret: &TotpSecret, now_ms: i64) -> String {
    let step = step_at(now_ms).unwrap_or(0);
    format!("{:0width$}", hotp(&secret.bytes, step, DIGITS), width = DIGITS as usize)
}

fn step_at(now_ms: i64) -> Result<u64, TotpError> {
    u64::try_from(now_ms.div_euclid(STEP_MS)).map_err(|_| TotpError::TimeBeforeEpoch)
}

fn parse_code(code: &str) -> Result<u32, TotpError> {
    let mut value: u32 = 0;
    let mut digits = 0;
    for c in code.chars().filter(|&c| c != ' ') {
        let digit = c.to_digit(10).filter(|_| c.is_ascii_digit()).ok_or(TotpError::Malformed)?;
        digits += 1;
        if digits > DIGITS {
            return Err(TotpError::Malformed);
        }
        value = value * 10 + digit;
    }
    if digits == DIGITS {
        Ok(value)
    } else {
        Err(TotpError::Malformed)
    }
}

/// RFC 4226 HOTP: HMAC-SHA-1 of the big-endian counter, dynamic truncation, `digits` digits.
/// `key` is at most 64 bytes (checked when the secret was made).
fn hotp(key: &[u8], counter: u64, digits: u32) -> u32 {
    // HMAC pads a key shorter than the block with zeros (RFC 2104), so padding it here gives
    // the same MAC and a constructor that cannot fail.
    let mut block = Zeroizing::new([0u8; MAX_SECRET_BYTES]);
    let used = key.len().min(MAX_SECRET_BYTES);
    block[..used].copy_from_slice(&key[..used]);
    let mut mac = <HmacSha1 as KeyInit>::new(&(*block).into());
    mac.update(&counter.to_be_bytes());
    let digest: [u8; 20] = mac.finalize().into_bytes().into();
    let offset = usize::from(digest[19] & 0x0f);
    let binary = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    binary % 10u32.pow(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SHA-1 seed of RFC 6238 appendix B and RFC 4226 appendix D.
    const RFC_SECRET: &[u8] = b"12345678901234567890";

    /// RFC 6238 appendix B, the SHA-1 rows: (Unix time in seconds, TOTP with 8 digits).
    const RFC6238_SHA1: &[(i64, &str)] = &[
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ];

    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(RFC_SECRET).unwrap()
    }

    #[test]
    fn rfc6238_sha1_vectors_with_8_digits() {
        for &(seconds, expected) in RFC6238_SHA1 {
            let step = u64::try_from(seconds / 30).unwrap();
            assert_eq!(format!("{:08}", hotp(RFC_SECRET, step, 8)), expected, "T = {seconds}");
        }
    }

    #[test]
    fn rfc6238_sha1_vectors_truncated_to_6_digits() {
        let secret = rfc_secret();
        for &(seconds, expected8) in RFC6238_SHA1 {
            let expected = &expected8[2..];
            assert_eq!(current_code(&secret, seconds * 1000), expected, "T = {seconds}");
            let step = u64::try_from(seconds / 30).unwrap();
            assert_eq!(secret.verify(expected, seconds * 1000, None), Ok(step), "T = {seconds}");
        }
    }

    #[test]
    fn rfc4226_hotp_vectors() {
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871",
            "520489",
        ];
        for (counter, code) in expected.iter().enumerate() {
            assert_eq!(format!("{:06}", hotp(RFC_SECRET, counter as u64, 6)), *code, "counter {counter}");
        }
    }

    #[test]
    fn one_step_of_drift_is_accepted_two_are_not() {
        let rfc = rfc_secret();
        // 287082 is the code of step 1 (30 s to 59.999 s); RFC 4226 gives the neighbours'
        // codes: 755224 (step 0), 359152, 969429, 338314 (steps 2 to 4).
        assert_eq!(rfc.verify("287082", 45_000, None), Ok(1));
        assert_eq!(rfc.verify("287082", 60_000, None), Ok(1), "phone one step behind");
        assert_eq!(rfc.verify("287082", 89_999, None), Ok(1), "phone one step behind");
        assert_eq!(rfc.verify("287082", 29_999, None), Ok(1), "phone one step ahead");
        assert_eq!(rfc.verify("287082", 90_000, None), Err(TotpError::Invalid), "two steps behind");
        assert_eq!(rfc.verify("969429", 30_000, None), Err(TotpError::Invalid), "two steps ahead");
    }

    #[test]
    fn a_used_step_cannot_be_replayed() {
        let secret = rfc_secret();
        // 287082 is the code of step 1 (RFC 4226 counter 1).
        let step = secret.verify("287082", 59_000, None).unwrap();
        assert_eq!(step, 1);
        assert_eq!(secret.verify("287082", 59_000, Some(step)), Err(TotpError::Replayed));
        assert_eq!(secret.verify("287082", 61_000, Some(step)), Err(TotpError::Replayed));
        // An older step than the last used one is refused too.
        assert_eq!(secret.verify("755224", 31_000, Some(1)), Err(TotpError::Replayed));
        // The next step's code (359152, counter 2) is fine.
        assert_eq!(secret.verify("359152", 61_000, Some(step)), Ok(2));
        // A drifted-ahead code of step 2, used at step 1, then blocks step 2 itself.
        assert_eq!(secret.verify("359152", 59_000, Some(0)), Ok(2));
        assert_eq!(secret.verify("359152", 61_000, Some(2)), Err(TotpError::Replayed));
    }

    #[test]
    fn wrong_and_malformed_codes_are_refused() {
        let secret = rfc_secret();
        assert_eq!(secret.verify("287083", 59_000, None), Err(TotpError::Invalid));
        assert_eq!(secret.verify("287 082", 59_000, None), Ok(1), "spaces as apps display them");
        for bad in ["", "28708", "2870821", "28708a", "２８７０８２", "-28708", "+287082", "287082\n"] {
            assert_eq!(secret.verify(bad, 59_000, None), Err(TotpError::Malformed), "{bad:?}");
        }
        assert_eq!(secret.verify("287082", -1, None), Err(TotpError::TimeBeforeEpoch));
    }

    #[test]
    fn secrets_round_trip_through_base32() {
        // RFC 4648 base32 of the ASCII seed, as printed in many TOTP test suites.
        assert_eq!(rfc_secret().to_base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        let parsed = TotpSecret::from_base32("gezd gnbv gy3t qojq gezd gnbv gy3t qojq").unwrap();
        assert_eq!(current_code(&parsed, 59_000), "287082");

        let generated = TotpSecret::generate();
        let text = generated.to_base32();
        assert_eq!(text.len(), 32, "160 bits are 32 base32 characters");
        assert_ne!(text, TotpSecret::generate().to_base32());
        let back = TotpSecret::from_base32(&text).unwrap();
        assert_eq!(back.to_base32(), text);
        assert_eq!(current_code(&back, 1_760_000_000_000), current_code(&generated, 1_760_000_000_000));
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert_eq!(TotpSecret::from_base32("not base32!").unwrap_err(), TotpError::BadSecret);
        assert_eq!(TotpSecret::from_base32("GEZDGNBV").unwrap_err(), TotpError::BadSecret, "40 bits");
        assert_eq!(TotpSecret::from_bytes(&[7; 15]).unwrap_err(), TotpError::BadSecret);
        assert_eq!(TotpSecret::from_bytes(&[7; 65]).unwrap_err(), TotpError::BadSecret);
        assert!(TotpSecret::from_bytes(&[7; 64]).is_ok());
        assert_eq!(format!("{:?}", rfc_secret()), "TotpSecret(<redacted>)");
    }

    #[test]
    fn padding_the_key_gives_the_same_mac_as_hmac_itself() {
        // hotp builds the MAC from a zero-padded 64-byte block; the hmac crate's own
        // variable-length constructor must agree for every secret length allowed.
        for len in [MIN_SECRET_BYTES, 20, 33, 63, MAX_SECRET_BYTES] {
            let key: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
            let mut reference = <HmacSha1 as Mac>::new_from_slice(&key).unwrap();
            reference.update(&7u64.to_be_bytes());
            let digest = reference.finalize().into_bytes();
            let offset = usize::from(digest[19] & 0x0f);
            let binary = u32::from_be_bytes(digest[offset..offset + 4].try_into().unwrap()) & 0x7fff_ffff;
            assert_eq!(hotp(&key, 7, 8), binary % 100_000_000, "key of {len} bytes");
        }
    }

    #[test]
    fn otpauth_uri_is_percent_encoded() {
        let secret = rfc_secret();
        assert_eq!(
            secret.otpauth_uri(ISSUER, "tanaka@hospital.example"),
            "otpauth://totp/mamori:tanaka%40hospital.example?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=mamori&algorithm=SHA1&digits=6&period=30"
        );
        assert_eq!(
            secret.otpauth_uri("Mamori Byouin&Co", "a b/c?d"),
            "otpauth://totp/Mamori%20Byouin%26Co:a%20b%2Fc%3Fd?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=Mamori%20Byouin%26Co&algorithm=SHA1&digits=6&period=30"
        );
        assert!(secret.otpauth_uri("病院", "x").starts_with("otpauth://totp/%E7%97%85%E9%99%A2:x?"));
    }
}
