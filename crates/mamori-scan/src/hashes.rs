//! Hash indicators of compromise: known-bad MD5, SHA-1 and SHA-256 digests.
//!
//! Two list formats are read:
//! - signature-base / LOKI: `hash;comment` per line (`#` starts a comment line);
//! - ClamAV `.hdb`/`.hsb` (and the unofficial `.hdu`/`.hsu`): `hash:size:name[:flevel...]`,
//!   where size may be `*`.
//!
//! Only the digest kinds that the loaded lists contain are computed while scanning, and when
//! every entry of a kind carries its file size (ClamAV lists do) a file whose size is not
//! among them is not hashed at all: hashing is the whole cost of an IOC-only scan.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// One indicator as the user wrote it.
#[derive(Debug, Clone)]
pub struct Indicator {
    /// The name or comment given in the list.
    pub name: String,
    /// The list it came from.
    pub list: PathBuf,
    /// Expected file size, when the list gives one.
    pub size: Option<u64>,
}

/// A line of a hash list that could not be read.
#[derive(Debug, Clone)]
pub struct HashListError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for HashListError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Indicators of one digest kind, and the file sizes worth hashing for it.
#[derive(Debug, Default)]
struct Table<const N: usize> {
    entries: HashMap<[u8; N], Indicator>,
    /// `Some` while every entry has a known size; `None` once any entry has none.
    sizes: Option<HashSet<u64>>,
    any_without_size: bool,
}

impl<const N: usize> Table<N> {
    fn insert(&mut self, digest: [u8; N], indicator: Indicator) {
        match indicator.size {
            Some(size) if !self.any_without_size => {
                self.sizes.get_or_insert_with(HashSet::new).insert(size);
            }
            Some(_) => {}
            None => {
                self.any_without_size = true;
                self.sizes = None;
            }
        }
        self.entries.entry(digest).or_insert(indicator);
    }

    fn wants(&self, size: u64) -> bool {
        !self.entries.is_empty()
            && (self.any_without_size || self.sizes.as_ref().is_some_and(|s| s.contains(&size)))
    }

    fn get(&self, digest: &[u8], size: u64) -> Option<&Indicator> {
        let key: [u8; N] = digest.try_into().ok()?;
        self.entries.get(&key).filter(|ind| ind.size.is_none_or(|s| s == size))
    }
}

/// A set of hash indicators loaded from lists.
#[derive(Debug, Default)]
pub struct HashDb {
    md5: Table<16>,
    sha1: Table<20>,
    sha256: Table<32>,
}

/// A digest match.
#[derive(Debug, Clone)]
pub struct HashHit<'a> {
    pub indicator: &'a Indicator,
    /// `md5`, `sha1` or `sha256`.
    pub algorithm: &'static str,
}

impl HashDb {
    pub fn len(&self) -> usize {
        self.md5.entries.len() + self.sha1.entries.len() + self.sha256.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads a list, adding its indicators. Lines that cannot be read are returned (and
    /// skipped); an unreadable file is an `Err`.
    pub fn load_file(&mut self, path: &Path) -> std::io::Result<Vec<HashListError>> {
        let bytes = std::fs::read(path)?;
        Ok(self.load_bytes(&bytes, path))
    }

    /// Adds the indicators in `bytes`, a list named `path` (its extension picks the format).
    pub fn load_bytes(&mut self, bytes: &[u8], path: &Path) -> Vec<HashListError> {
        let text = String::from_utf8_lossy(bytes);
        let clamav = matches!(
            path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref(),
            Some("hdb" | "hsb" | "hdu" | "hsu")
        );
        let mut errors = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = if clamav { parse_clamav(line) } else { parse_semicolon(line) };
            match parsed.and_then(|(hex, size, name)| {
                self.add(hex, Indicator { name, list: path.to_path_buf(), size })
            }) {
                Ok(()) => {}
                Err(message) => {
                    errors.push(HashListError { file: path.to_path_buf(), line: index + 1, message })
                }
            }
        }
        errors
    }

    fn add(&mut self, hex_digest: &str, indicator: Indicator) -> Result<(), String> {
        let bytes =
            hex::decode(hex_digest).map_err(|e| format!("'{hex_digest}' is not a hex digest: {e}"))?;
        match bytes.len() {
            16 => self.md5.insert(to_array(&bytes)?, indicator),
            20 => self.sha1.insert(to_array(&bytes)?, indicator),
            32 => self.sha256.insert(to_array(&bytes)?, indicator),
            n => return Err(format!("a digest of {n} bytes is not MD5, SHA-1 or SHA-256")),
        }
        Ok(())
    }

    /// Hashes `data` with the digest kinds that could match and returns the first hit.
    pub fn lookup(&self, data: &[u8]) -> Option<HashHit<'_>> {
        let size = data.len() as u64;
        if self.sha256.wants(size) {
            if let Some(ind) = self.sha256.get(&Sha256::digest(data), size) {
                return Some(HashHit { indicator: ind, algorithm: "sha256" });
            }
        }
        if self.sha1.wants(size) {
            if let Some(ind) = self.sha1.get(&Sha1::digest(data), size) {
                return Some(HashHit { indicator: ind, algorithm: "sha1" });
            }
        }
        if self.md5.wants(size) {
            if let Some(ind) = self.md5.get(&Md5::digest(data), size) {
                return Some(HashHit { indicator: ind, algorithm: "md5" });
            }
        }
        None
    }

    /// A digest of the whole set, so that verdicts cached under another set are not reused.
    pub fn fingerprint(&self, hasher: &mut blake3::Hasher) {
        fn table<const N: usize>(t: &Table<N>, h: &mut blake3::Hasher) {
            let mut keys: Vec<_> = t.entries.iter().collect();
            keys.sort_by(|a, b| a.0.cmp(b.0));
            h.update(&(keys.len() as u64).to_le_bytes());
            for (k, ind) in keys {
                h.update(k);
                h.update(&ind.size.map_or(u64::MAX, |s| s).to_le_bytes());
                h.update(ind.name.as_bytes());
                h.update(b"\0");
            }
        }
        table(&self.md5, hasher);
        table(&self.sha1, hasher);
        table(&self.sha256, hasher);
    }
}

fn to_array<const N: usize>(bytes: &[u8]) -> Result<[u8; N], String> {
    bytes.try_into().map_err(|_| "digest length mismatch".to_string())
}

fn parse_semicolon(line: &str) -> Result<(&str, Option<u64>, String), String> {
    let (hash, comment) = line.split_once(';').unwrap_or((line, ""));
    let hash = hash.trim();
    let name = if comment.trim().is_empty() { hash.to_string() } else { comment.trim().to_string() };
    Ok((hash, None, name))
}

fn parse_clamav(line: &str) -> Result<(&str, Option<u64>, String), String> {
    let mut fields = line.split(':');
    let (Some(hash), Some(size), Some(name)) = (fields.next(), fields.next(), fields.next()) else {
        return Err("expected hash:size:name".to_string());
    };
    let size = match size.trim() {
        "*" => None,
        s => Some(s.parse::<u64>().map_err(|_| format!("size '{s}' is not a number or '*'"))?),
    };
    if name.trim().is_empty() {
        return Err("empty signature name".to_string());
    }
    Ok((hash.trim(), size, name.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn both_formats_and_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"some malware bytes";
        let md5 = hex::encode(Md5::digest(data));
        let sha256 = hex::encode(Sha256::digest(data));
        let loki = dir.path().join("iocs.txt");
        let mut f = std::fs::File::create(&loki).unwrap();
        writeln!(f, "# comment\n\n{sha256};Evil sample\nnothex;bad\nabcd;too short").unwrap();
        let hdb = dir.path().join("x.hdb");
        std::fs::write(&hdb, format!("{md5}:{}:Evil.MD5\n{md5}:notnum:X\n", data.len())).unwrap();

        let mut db = HashDb::default();
        let errs = db.load_file(&loki).unwrap();
        assert_eq!(errs.iter().map(|e| e.line).collect::<Vec<_>>(), vec![4, 5]);
        let errs = db.load_file(&hdb).unwrap();
        assert_eq!(errs.len(), 1);
        assert_eq!(db.len(), 2);
        let hit = db.lookup(data).unwrap();
        assert_eq!(hit.algorithm, "sha256");
        assert_eq!(hit.indicator.name, "Evil sample");
        assert!(db.lookup(b"clean").is_none());
    }

    #[test]
    fn size_filter_skips_hashing_and_rejects_wrong_size() {
        let data = b"payload";
        let mut db = HashDb::default();
        let md5 = hex::encode(Md5::digest(data));
        db.add(&md5, Indicator { name: "a".into(), list: "l".into(), size: Some(7) }).unwrap();
        assert!(db.md5.wants(7) && !db.md5.wants(8));
        assert!(db.lookup(data).is_some());
        let mut db2 = HashDb::default();
        db2.add(&md5, Indicator { name: "a".into(), list: "l".into(), size: Some(99) }).unwrap();
        assert!(db2.lookup(data).is_none());
    }
}
