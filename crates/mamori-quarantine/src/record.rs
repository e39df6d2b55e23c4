//! The metadata record kept next to each encrypted item, its on-disk
//! envelope, and UTC timestamp formatting.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Metadata of one quarantined file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// 16 lowercase hex characters, random.
    pub id: String,
    /// Absolute path the file was taken from (its directory canonicalized).
    /// Serialized as a JSON string when it is valid UTF-8, otherwise as
    /// `{"unix_bytes_hex": "..."}`: Linux file names are arbitrary bytes and
    /// a malicious file must not escape quarantine by having an odd name.
    #[serde(with = "path_serde")]
    pub original_path: PathBuf,
    /// Size of the plaintext in bytes.
    pub size: u64,
    /// Permission bits including set-id and sticky bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: i128,
    /// Lowercase hex digests of the plaintext.
    pub md5: String,
    pub sha1: String,
    pub sha256: String,
    /// Name of the rule that matched, e.g. `EICAR-Test-File`.
    pub rule: String,
    /// Where the rule came from, e.g. `builtin` or a rules file path.
    pub ruleset: String,
    /// RFC 3339 UTC time of quarantine, e.g. `2026-11-23T05:00:00Z`.
    pub quarantined_at: String,
}

mod path_serde {
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Utf8(String),
        Raw { unix_bytes_hex: String },
    }

    pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        match path.to_str() {
            Some(p) => Repr::Utf8(p.to_owned()),
            None => Repr::Raw { unix_bytes_hex: hex::encode(path.as_os_str().as_bytes()) },
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Utf8(p) => Ok(PathBuf::from(p)),
            Repr::Raw { unix_bytes_hex } => hex::decode(unix_bytes_hex)
                .map(|b| PathBuf::from(OsString::from_vec(b)))
                .map_err(serde::de::Error::custom),
        }
    }
}

pub(crate) const ENVELOPE_FORMAT: u32 = 1;

/// What `<id>.json` contains: the record plus a tag authenticating it.
#[derive(Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub format: u32,
    pub record: Record,
    /// Hex of the 12-byte nonce used for `tag`.
    pub tag_nonce: String,
    /// Hex of the 16-byte AES-GCM tag over the record's canonical JSON.
    pub tag: String,
}

/// Formats a time as RFC 3339 UTC with whole seconds.
pub(crate) fn rfc3339_utc(t: SystemTime) -> String {
    let secs: i64 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            // Round towards the past so that the fraction is never dropped
            // into the wrong second.
            -whole - i64::from(d.subsec_nanos() > 0)
        }
    };
    format_unix_secs(secs)
}

pub(crate) fn format_unix_secs(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to proleptic Gregorian (year, month, day); Howard
/// Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
