//! Where the vault keeps things under its data directory.

use std::path::{Path, PathBuf};

/// `<data>/repo` the repository, `<data>/tls` the vault's key, CSR and certificate,
/// `<data>/events.jsonl` its security events.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout { root: root.to_path_buf() }
    }
    pub fn repo(&self) -> PathBuf {
        self.root.join("repo")
    }
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }
    pub fn key(&self) -> PathBuf {
        self.tls_dir().join("vault.key")
    }
    pub fn csr(&self) -> PathBuf {
        self.tls_dir().join("vault.csr")
    }
    /// The signed certificate followed by the CA certificate (what `mamori vault sign` writes).
    pub fn cert(&self) -> PathBuf {
        self.tls_dir().join("vault.crt")
    }
    pub fn events(&self) -> PathBuf {
        self.root.join("events.jsonl")
    }
    /// How far the forwarder has sent `events.jsonl` to the manager.
    pub fn forwarded(&self) -> PathBuf {
        self.root.join("events.forwarded")
    }
}
