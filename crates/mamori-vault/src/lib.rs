//! The backup vault's repository format (issue 6): what is on the vault's disk and how it is
//! written, read and checked. `FORMAT.md` at the crate root describes the bytes.
//!
//! - [`analysis`]: is a snapshot what ransomware leaves behind (per-file content signals).
//! - [`chunk`]: content-defined chunking of file contents (FastCDC 2020).
//! - [`ingest`]: accepting a client's blob: verify its id, seal it (outside any lock), append.
//! - [`keys`]: the repository keys (a data key and an id key), sealed by a passphrase with
//!   Argon2id and AES-256-GCM.
//! - [`ledger`]: the vault's per-snapshot records (device, receive time, verdict, clearance).
//! - [`pack`]: append-only pack files: encrypted, compressed blobs and an encrypted header.
//! - [`repo`]: [`Repository`]: blobs by id (keyed BLAKE3 of the plaintext), an in-memory
//!   index rebuilt from the pack headers, content-address verification of uploads, `check`.
//! - [`retention`]: attack-aware, time-based retention; two-phase deletion and garbage
//!   collection, the admin-only path that removes files.
//! - [`tree`]: directory trees and snapshots as blobs; storing a directory and restoring it
//!   bit-exact with modes, owners, times and symlinks.
//!
//! Nothing is ever overwritten by this crate: packs and snapshots are named by the hash of
//! their bytes and created with a hard link that fails if the name exists. Nothing is deleted
//! except by [`retention::execute_due`], the vault host admin's path (two-phase, delayed). No
//! network and no process policy here (the vault service's job).

pub mod analysis;
pub mod chunk;
mod gc;
pub mod ingest;
pub mod keys;
pub mod ledger;
pub mod pack;
pub mod repo;
pub mod retention;
pub mod tree;

pub use keys::Keys;
pub use repo::{BlobId, BlobKind, CheckReport, Repository};
pub use tree::{Node, NodeKind, Snapshot, Tree};

/// What can go wrong; every variant names what it was about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("wrong passphrase, or the key file is damaged")]
    WrongPassphrase,
    #[error("{0}: damaged or not a mamori vault object")]
    Corrupt(String),
    #[error("blob {0} is not in the repository")]
    Missing(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Writes `bytes` to `dir/name` so that it appears whole or not at all and never replaces an
/// existing file: written to a private temporary file, synced, then hard-linked into place
/// (which fails if the name exists) and the directory synced.
pub(crate) fn create_new(dir: &std::path::Path, name: &str, bytes: &[u8]) -> Result<bool> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let final_path = dir.join(name);
    if final_path.exists() {
        return Ok(false);
    }
    let temp_path =
        dir.join(format!(".tmp-{}-{}", std::process::id(), hex::encode(rand::random::<[u8; 8]>())));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp_path)
        .map_err(|e| Error::io(&temp_path, e))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| Error::io(&temp_path, e))?;
    drop(file);
    let linked = std::fs::hard_link(&temp_path, &final_path);
    let _ = std::fs::remove_file(&temp_path);
    match linked {
        Ok(()) => {}
        // Someone else wrote the same content-addressed name meanwhile: same bytes.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(Error::io(&final_path, e)),
    }
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))?;
    Ok(true)
}
