//! Accepting blobs from a client: verify that the content has the id it was sent under, seal
//! it (compress + encrypt) and append it to the pack being filled.
//!
//! Verifying and sealing are split from appending so that a service holding the repository
//! behind a lock can do the costly part in parallel, outside the lock.

use std::path::PathBuf;

use crate::pack::{seal_blob, HeaderEntry};
use crate::repo::{BlobId, BlobKind, Repository, PACK_TARGET};
use crate::{Error, Keys, Result};

/// A blob whose content matched its id, sealed and ready to append.
pub struct Sealed {
    pub kind: BlobKind,
    pub id: BlobId,
    pub sealed: Vec<u8>,
    pub raw_length: u64,
}

/// Verifies and seals blobs without access to the repository.
#[derive(Clone)]
pub struct Sealer {
    keys: Keys,
}

impl Sealer {
    /// Refuses content that does not hash (keyed) to `claimed`: a client cannot place garbage
    /// under a valid name.
    pub fn verify_and_seal(&self, kind: BlobKind, claimed: &BlobId, plaintext: &[u8]) -> Result<Sealed> {
        if self.keys.blob_id(plaintext) != claimed.0 {
            return Err(Error::Refused(format!("content does not match the id {}", claimed.to_hex())));
        }
        Ok(Sealed {
            kind,
            id: *claimed,
            sealed: seal_blob(&self.keys, kind, claimed, plaintext)?,
            raw_length: plaintext.len() as u64,
        })
    }
}

/// Where a stored blob is and how big it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobInfo {
    pub kind: BlobKind,
    pub raw_length: u64,
    pub stored_length: u64,
}

impl Repository {
    pub fn sealer(&self) -> Sealer {
        Sealer { keys: self.keys.clone() }
    }

    /// Appends a sealed blob unless the repository holds its id already (then nothing changes:
    /// an existing blob is never replaced). Returns whether it was new.
    pub fn add_sealed(&mut self, blob: Sealed) -> Result<bool> {
        if self.contains(&blob.id) {
            return Ok(false);
        }
        let entry: HeaderEntry =
            self.writer.add_sealed(blob.kind, &blob.id, &blob.sealed, blob.raw_length)?;
        if blob.kind == BlobKind::Data {
            self.written.0 += entry.raw_length;
            self.written.1 += u64::from(entry.length);
        }
        self.pending.insert(blob.id);
        if self.writer.len_bytes() >= PACK_TARGET {
            self.flush()?;
        }
        Ok(true)
    }

    /// Kind and sizes of a blob on disk (None if absent or still pending).
    pub fn blob_info(&self, id: &BlobId) -> Option<BlobInfo> {
        self.index.get(id).map(|l| BlobInfo {
            kind: l.entry.kind,
            raw_length: l.entry.raw_length,
            stored_length: u64::from(l.entry.length),
        })
    }
}

/// Where a blob is on disk, for reading it without holding the repository.
#[derive(Debug, Clone)]
pub struct Located {
    pub pack: PathBuf,
    pub kind: BlobKind,
    pub offset: u64,
    pub length: u32,
    pub raw_length: u64,
}

/// Reads blobs located by [`Repository::locate`], outside any lock (a service serving several
/// restores at once), keeping each pack it opened open for the next blob. One buffer and one
/// zstd context serve every blob: a restore reads tens of thousands, and a fresh context (and
/// fresh pages) per blob cost more than the decompression itself (measured with perf).
pub struct BlobReader {
    keys: Keys,
    open: std::collections::HashMap<PathBuf, std::fs::File>,
    sealed: Vec<u8>,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

impl BlobReader {
    pub fn read(&mut self, id: &BlobId, at: &Located) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_into(id, at, &mut out)?;
        Ok(out)
    }

    /// Appends blob `id`'s plaintext (`at.raw_length` bytes) to `out`. The client recomputes
    /// every id; GCM has authenticated the bytes (see `pack::open_blob_authenticated`).
    pub fn read_into(&mut self, id: &BlobId, at: &Located, out: &mut Vec<u8>) -> Result<()> {
        use std::os::unix::fs::FileExt;
        if !self.open.contains_key(&at.pack) {
            let file = std::fs::File::open(&at.pack).map_err(|e| Error::io(&at.pack, e))?;
            self.open.insert(at.pack.clone(), file);
        }
        let file = &self.open[&at.pack];
        self.sealed.resize(at.length as usize, 0);
        file.read_exact_at(&mut self.sealed, at.offset).map_err(|e| Error::io(&at.pack, e))?;
        let what = format!("blob {}", id.to_hex());
        self.keys.decrypt_in_place(&mut self.sealed, &crate::pack::blob_aad(at.kind, id), &what)?;
        let length = usize::try_from(at.raw_length).map_err(|_| Error::Corrupt(what.clone()))?;
        let zstd = match &mut self.zstd {
            Some(z) => z,
            None => {
                self.zstd.insert(zstd::bulk::Decompressor::new().map_err(|e| Error::Invalid(e.to_string()))?)
            }
        };
        let start = out.len();
        out.resize(start + length, 0);
        let written = zstd.decompress_to_buffer(&self.sealed, &mut out[start..]);
        if written.ok() != Some(length) {
            out.truncate(start);
            return Err(Error::Corrupt(what));
        }
        Ok(())
    }
}

impl Repository {
    pub fn reader(&self) -> BlobReader {
        BlobReader {
            keys: self.keys.clone(),
            open: std::collections::HashMap::new(),
            sealed: Vec::new(),
            zstd: None,
        }
    }

    /// Where blob `id` is (None if absent or still pending: flush first).
    pub fn locate(&self, id: &BlobId) -> Option<Located> {
        self.index.get(id).map(|l| Located {
            pack: self.pack_path(&l.pack),
            kind: l.entry.kind,
            offset: l.entry.offset,
            length: l.entry.length,
            raw_length: l.entry.raw_length,
        })
    }
}
