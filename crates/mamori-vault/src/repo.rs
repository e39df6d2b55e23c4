//! A repository on disk: `config`, `keys/`, `packs/`, `snapshots/` (see `FORMAT.md`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::chunk::ChunkerConfig;
use crate::keys::{Keys, SealedKeys};
use crate::pack::{self, HeaderEntry, PackWriter};
use crate::{create_new, Error, Result};

/// A pack is written once it holds this many bytes (or on [`Repository::flush`]).
pub(crate) const PACK_TARGET: usize = 16 * 1024 * 1024;
const FORMAT_VERSION: u32 = 1;

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum BlobKind {
    /// A chunk of file contents.
    Data = 0,
    /// A directory listing ([`crate::Tree`], JSON).
    Tree = 1,
}

/// A blob's id: keyed BLAKE3 of its plaintext.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub [u8; 32]);

impl BlobId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Result<BlobId> {
        let bytes = hex::decode(text).map_err(|_| Error::Invalid(format!("`{text}` is not a blob id")))?;
        let array: [u8; 32] =
            bytes.try_into().map_err(|_| Error::Invalid(format!("`{text}` is not a blob id")))?;
        Ok(BlobId(array))
    }
}

impl std::fmt::Debug for BlobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobId({})", &self.to_hex()[..16])
    }
}

impl Serialize for BlobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for BlobId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        BlobId::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Config {
    version: u32,
    id: String,
    chunker: ChunkerConfig,
}

/// Where a blob is: kept small (the index holds one per blob, hundreds of thousands on a
/// hospital's file server), with the pack name shared by all its blobs.
#[derive(Debug, Clone)]
pub(crate) struct Location {
    pub(crate) pack: std::sync::Arc<str>,
    pub(crate) entry: Placement,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Placement {
    pub(crate) kind: BlobKind,
    pub(crate) offset: u64,
    pub(crate) length: u32,
    pub(crate) raw_length: u64,
}

impl Location {
    pub(crate) fn new(pack: &std::sync::Arc<str>, entry: &HeaderEntry) -> Location {
        Location {
            pack: pack.clone(),
            entry: Placement {
                kind: entry.kind,
                offset: entry.offset,
                length: entry.length,
                raw_length: entry.raw_length,
            },
        }
    }
}

/// What [`Repository::check`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub packs: u64,
    pub blobs: u64,
    /// Packs whose name is not the hash of their bytes, or that do not parse.
    pub damaged_packs: Vec<String>,
    /// Blobs that do not decrypt or whose content does not match their id (with `read_data`).
    pub damaged_blobs: Vec<String>,
    /// Blobs that snapshots refer to and no pack holds.
    pub missing_blobs: Vec<String>,
    /// Snapshot files that do not decrypt or parse.
    pub damaged_snapshots: Vec<String>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.damaged_packs.is_empty()
            && self.damaged_blobs.is_empty()
            && self.missing_blobs.is_empty()
            && self.damaged_snapshots.is_empty()
    }
}

/// An open repository: its keys, the index of every blob, and the pack being filled.
pub struct Repository {
    pub(crate) root: PathBuf,
    pub(crate) keys: Keys,
    pub(crate) config: Config,
    pub(crate) index: HashMap<BlobId, Location>,
    pub(crate) writer: PackWriter,
    /// Blobs in the pack being filled.
    pub(crate) pending: HashSet<BlobId>,
    /// Plaintext and stored bytes of the data blobs added since the repository was opened.
    pub(crate) written: (u64, u64),
}

impl Repository {
    /// Creates a repository in `root` (which must be empty or absent), keys sealed by
    /// `passphrase`.
    pub fn init(root: &Path, passphrase: &str, chunker: ChunkerConfig) -> Result<Repository> {
        chunker.validate().map_err(Error::Invalid)?;
        if root.exists() && std::fs::read_dir(root).map_err(|e| Error::io(root, e))?.next().is_some() {
            return Err(Error::Refused(format!("{} is not empty", root.display())));
        }
        for dir in ["keys", "packs", "snapshots"] {
            std::fs::create_dir_all(root.join(dir)).map_err(|e| Error::io(root.join(dir), e))?;
        }
        let keys = Keys::generate();
        let sealed =
            serde_json::to_vec_pretty(&keys.seal(passphrase)?).map_err(|e| Error::Invalid(e.to_string()))?;
        create_new(&root.join("keys"), "admin.json", &sealed)?;
        let config = Config { version: FORMAT_VERSION, id: hex::encode(rand::random::<[u8; 16]>()), chunker };
        let text = serde_json::to_vec_pretty(&config).map_err(|e| Error::Invalid(e.to_string()))?;
        create_new(root, "config", &text)?;
        Ok(Repository {
            root: root.to_path_buf(),
            keys,
            config,
            index: HashMap::new(),
            writer: PackWriter::default(),
            pending: HashSet::new(),
            written: (0, 0),
        })
    }

    /// Opens a repository and rebuilds the index from every pack header. Damaged packs are
    /// left out of the index (their blobs count as missing); `check` names them.
    pub fn open(root: &Path, passphrase: &str) -> Result<Repository> {
        let config_path = root.join("config");
        let text = std::fs::read(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let config: Config = serde_json::from_slice(&text).map_err(|_| Error::Corrupt("config".into()))?;
        if config.version != FORMAT_VERSION {
            return Err(Error::Invalid(format!("repository format {} is not supported", config.version)));
        }
        let key_path = root.join("keys/admin.json");
        let sealed = std::fs::read(&key_path).map_err(|e| Error::io(&key_path, e))?;
        let sealed: SealedKeys =
            serde_json::from_slice(&sealed).map_err(|_| Error::Corrupt("key file".into()))?;
        let keys = Keys::unseal(&sealed, passphrase)?;
        let mut repo = Repository {
            root: root.to_path_buf(),
            keys,
            config,
            index: HashMap::new(),
            writer: PackWriter::default(),
            pending: HashSet::new(),
            written: (0, 0),
        };
        for (name, path) in repo.pack_files()? {
            let Ok(bytes) = std::fs::read(&path) else { continue };
            if let Ok(entries) = pack::read_header(&repo.keys, &bytes, &name) {
                let pack: std::sync::Arc<str> = std::sync::Arc::from(name.as_str());
                for entry in entries {
                    if let Ok(id) = BlobId::from_hex(&entry.id) {
                        repo.index.insert(id, Location::new(&pack, &entry));
                    }
                }
            }
        }
        Ok(repo)
    }

    pub fn chunker(&self) -> ChunkerConfig {
        self.config.chunker
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(self.keys.blob_id(plaintext))
    }

    /// (plaintext, stored) bytes of the new data blobs since the repository was opened: their
    /// ratio is how well new content compresses, which encrypted content does not.
    pub fn written(&self) -> (u64, u64) {
        self.written
    }

    pub fn contains(&self, id: &BlobId) -> bool {
        self.index.contains_key(id) || self.pending.contains(id)
    }

    /// Number of blobs stored or pending.
    pub fn blob_count(&self) -> usize {
        self.index.len() + self.pending.len()
    }

    /// Stores `plaintext` unless a blob with its id exists; returns the id and whether it was
    /// new. A pack is written whenever enough has accumulated.
    pub fn put(&mut self, kind: BlobKind, plaintext: &[u8]) -> Result<(BlobId, bool)> {
        let id = self.blob_id(plaintext);
        if self.contains(&id) {
            return Ok((id, false));
        }
        let entry = self.writer.add(&self.keys, kind, &id, plaintext)?;
        if kind == BlobKind::Data {
            self.written.0 += entry.raw_length;
            self.written.1 += u64::from(entry.length);
        }
        self.pending.insert(id);
        if self.writer.len_bytes() >= PACK_TARGET {
            self.flush()?;
        }
        Ok((id, true))
    }

    /// Accepts a blob uploaded under `claimed` only if its content has that id: a client
    /// cannot place garbage under a valid name.
    pub fn put_verified(&mut self, kind: BlobKind, claimed: &BlobId, plaintext: &[u8]) -> Result<bool> {
        if self.blob_id(plaintext) != *claimed {
            return Err(Error::Refused(format!("content does not match the id {}", claimed.to_hex())));
        }
        self.put(kind, plaintext).map(|(_, new)| new)
    }

    /// Writes the pack being filled (if any) and adds its blobs to the index.
    pub fn flush(&mut self) -> Result<()> {
        if self.writer.is_empty() {
            return Ok(());
        }
        let writer = std::mem::take(&mut self.writer);
        let (bytes, entries) = writer.finish(&self.keys)?;
        let name = blake3::hash(&bytes).to_hex().to_string();
        create_new(&self.root.join("packs").join(&name[..2]), &name, &bytes)?;
        let pack: std::sync::Arc<str> = std::sync::Arc::from(name.as_str());
        for entry in entries {
            let id = BlobId::from_hex(&entry.id)?;
            self.pending.remove(&id);
            self.index.insert(id, Location::new(&pack, &entry));
        }
        Ok(())
    }

    /// The plaintext of blob `id` (flushes first if it is still pending).
    pub fn get(&mut self, id: &BlobId) -> Result<Vec<u8>> {
        if self.pending.contains(id) {
            self.flush()?;
        }
        let location = self.index.get(id).ok_or_else(|| Error::Missing(id.to_hex()))?;
        let path = self.pack_path(&location.pack);
        let sealed = read_range(&path, location.entry.offset, location.entry.length)?;
        pack::open_blob(&self.keys, &sealed, location.entry.kind, id, location.entry.raw_length)
    }

    /// Writes a snapshot record (encrypted, named by the hash of its bytes); returns the name.
    pub fn write_snapshot(&mut self, snapshot: &crate::Snapshot) -> Result<String> {
        self.flush()?;
        let json = serde_json::to_vec(snapshot).map_err(|e| Error::Invalid(e.to_string()))?;
        let sealed = self.keys.encrypt(&json, b"mamori-snapshot")?;
        let name = blake3::hash(&sealed).to_hex().to_string();
        create_new(&self.root.join("snapshots"), &name, &sealed)?;
        Ok(name)
    }

    /// Every snapshot, oldest first, with its name; damaged ones are reported by `check`.
    pub fn snapshots(&self) -> Result<Vec<(String, crate::Snapshot)>> {
        let mut out = Vec::new();
        for name in self.snapshot_names()? {
            if let Ok(snapshot) = self.read_snapshot(&name) {
                out.push((name, snapshot));
            }
        }
        out.sort_by(|a, b| a.1.time_ms.cmp(&b.1.time_ms).then_with(|| a.0.cmp(&b.0)));
        Ok(out)
    }

    pub fn read_snapshot(&self, name: &str) -> Result<crate::Snapshot> {
        let path = self.root.join("snapshots").join(name);
        let sealed = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        if blake3::hash(&sealed).to_hex().as_str() != name {
            return Err(Error::Corrupt(format!("snapshot {name}")));
        }
        let json = self.keys.decrypt(&sealed, b"mamori-snapshot", &format!("snapshot {name}"))?;
        serde_json::from_slice(&json).map_err(|_| Error::Corrupt(format!("snapshot {name}")))
    }

    /// Verifies the repository: every pack's name is the hash of its bytes and its header
    /// decrypts; with `read_data`, every blob decrypts to content matching its id; every blob a
    /// snapshot's trees refer to exists.
    pub fn check(&mut self, read_data: bool) -> Result<CheckReport> {
        self.flush()?;
        let mut report = CheckReport::default();
        for (name, path) in self.pack_files()? {
            report.packs += 1;
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(_) => {
                    report.damaged_packs.push(name);
                    continue;
                }
            };
            if blake3::hash(&bytes).to_hex().as_str() != name {
                report.damaged_packs.push(name);
                continue;
            }
            let Ok(entries) = pack::read_header(&self.keys, &bytes, &name) else {
                report.damaged_packs.push(name);
                continue;
            };
            for entry in entries {
                report.blobs += 1;
                if !read_data {
                    continue;
                }
                let ok = BlobId::from_hex(&entry.id).ok().is_some_and(|id| {
                    let end = (entry.offset + u64::from(entry.length)) as usize;
                    pack::open_blob(
                        &self.keys,
                        &bytes[entry.offset as usize..end],
                        entry.kind,
                        &id,
                        entry.raw_length,
                    )
                    .is_ok()
                });
                if !ok {
                    report.damaged_blobs.push(entry.id);
                }
            }
        }
        // What a damaged pack holds cannot be trusted, nor a blob that failed to decrypt: they
        // count as missing for the snapshots below, which are then named.
        let damaged_packs: HashSet<&String> = report.damaged_packs.iter().collect();
        let damaged_blobs: HashSet<&String> = report.damaged_blobs.iter().collect();
        self.index.retain(|id, location| {
            !damaged_packs.contains(&location.pack.to_string()) && !damaged_blobs.contains(&id.to_hex())
        });
        for name in self.snapshot_names()? {
            match self.read_snapshot(&name) {
                Ok(snapshot) => {
                    let mut missing = Vec::new();
                    crate::tree::referenced_blobs(self, &snapshot.tree, &mut missing)?;
                    report.missing_blobs.extend(missing);
                }
                Err(_) => report.damaged_snapshots.push(name),
            }
        }
        report.missing_blobs.sort();
        report.missing_blobs.dedup();
        Ok(report)
    }

    pub(crate) fn pack_path(&self, name: &str) -> PathBuf {
        self.root.join("packs").join(&name[..2.min(name.len())]).join(name)
    }

    pub(crate) fn pack_files(&self) -> Result<Vec<(String, PathBuf)>> {
        let packs = self.root.join("packs");
        let mut out = Vec::new();
        for dir in std::fs::read_dir(&packs).map_err(|e| Error::io(&packs, e))? {
            let dir = dir.map_err(|e| Error::io(&packs, e))?.path();
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                // Temporary files of a writer that was killed are not packs.
                if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                    out.push((name, entry.path()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    pub(crate) fn snapshot_names(&self) -> Result<Vec<String>> {
        let dir = self.root.join("snapshots");
        let mut out: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .collect();
        out.sort();
        Ok(out)
    }
}

fn read_range(path: &Path, offset: u64, length: u32) -> Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buf = vec![0u8; length as usize];
    file.read_exact_at(&mut buf, offset).map_err(|e| Error::io(path, e))?;
    Ok(buf)
}
