//! Pack files: many blobs in one file, so that a backup of 80,000 small files is a few hundred
//! files on the vault, not 80,000.
//!
//! ```text
//! "MAMORIPK" 0x01 | blob | blob | ... | header | header length (u32 LE) | "MAMORIPE"
//! blob   = nonce(12) ‖ AES-256-GCM(zstd(plaintext)), AAD = kind byte ‖ blob id (32)
//! header = nonce(12) ‖ AES-256-GCM(zstd(JSON [HeaderEntry...])), AAD = "mamori-pack-header"
//! ```
//! A pack is named by the unkeyed BLAKE3 of its bytes, so a changed byte anywhere is noticed by
//! `check` even before decryption.

use serde::{Deserialize, Serialize};

use crate::keys::Keys;
use crate::repo::{BlobId, BlobKind};
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"MAMORIPK";
const END_MAGIC: &[u8; 8] = b"MAMORIPE";
const VERSION: u8 = 1;
const HEADER_AAD: &[u8] = b"mamori-pack-header";
/// zstd level 3: most of level 19's ratio on source trees at a fraction of the CPU.
const ZSTD_LEVEL: i32 = 3;

/// Where one blob is in a pack.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HeaderEntry {
    pub id: String,
    pub kind: BlobKind,
    pub offset: u64,
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u64,
}

/// A pack being filled.
pub struct PackWriter {
    bytes: Vec<u8>,
    entries: Vec<HeaderEntry>,
    raw_bytes: u64,
}

impl Default for PackWriter {
    fn default() -> Self {
        // Room for a full pack and its largest blob up front: growing by doubling would copy
        // the buffer and briefly hold twice the pack in memory.
        let mut bytes = Vec::with_capacity(crate::repo::PACK_TARGET + 9 * 1024 * 1024);
        bytes.extend_from_slice(MAGIC);
        bytes.push(VERSION);
        PackWriter { bytes, entries: Vec::new(), raw_bytes: 0 }
    }
}

pub(crate) fn blob_aad(kind: BlobKind, id: &BlobId) -> [u8; 33] {
    let mut aad = [0u8; 33];
    aad[0] = kind as u8;
    aad[1..].copy_from_slice(&id.0);
    aad
}

impl PackWriter {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len_bytes(&self) -> usize {
        self.bytes.len()
    }

    pub fn raw_bytes(&self) -> u64 {
        self.raw_bytes
    }

    /// Compresses, encrypts and appends one blob; returns its header entry.
    pub fn add(&mut self, keys: &Keys, kind: BlobKind, id: &BlobId, plaintext: &[u8]) -> Result<HeaderEntry> {
        let sealed = seal_blob(keys, kind, id, plaintext)?;
        self.add_sealed(kind, id, &sealed, plaintext.len() as u64)
    }

    /// Appends a blob sealed by [`seal_blob`] (sealing is the costly part and needs no writer,
    /// so a service can seal in parallel and append under its lock).
    pub fn add_sealed(
        &mut self,
        kind: BlobKind,
        id: &BlobId,
        sealed: &[u8],
        raw_length: u64,
    ) -> Result<HeaderEntry> {
        let length =
            u32::try_from(sealed.len()).map_err(|_| Error::Invalid("blob larger than 4 GiB".into()))?;
        let entry =
            HeaderEntry { id: id.to_hex(), kind, offset: self.bytes.len() as u64, length, raw_length };
        self.bytes.extend_from_slice(sealed);
        self.raw_bytes += raw_length;
        self.entries.push(entry.clone());
        Ok(entry)
    }

    /// The pack's bytes and its entries (offsets as written).
    pub fn finish(mut self, keys: &Keys) -> Result<(Vec<u8>, Vec<HeaderEntry>)> {
        let json = serde_json::to_vec(&self.entries).map_err(|e| Error::Invalid(e.to_string()))?;
        let compressed = zstd::bulk::compress(&json, ZSTD_LEVEL)
            .map_err(|e| Error::Invalid(format!("pack header: {e}")))?;
        let header = keys.encrypt(&compressed, HEADER_AAD)?;
        let header_len =
            u32::try_from(header.len()).map_err(|_| Error::Invalid("pack header too large".into()))?;
        self.bytes.extend_from_slice(&header);
        self.bytes.extend_from_slice(&header_len.to_le_bytes());
        self.bytes.extend_from_slice(END_MAGIC);
        Ok((self.bytes, self.entries))
    }
}

thread_local! {
    /// One zstd context per sealing thread: a backup seals tens of thousands of blobs, most of
    /// them small files, and setting up a fresh context for each costs about as much as
    /// compressing it (the same was measured for decompression, see `ingest::BlobReader`).
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn compress_blob(plaintext: &[u8]) -> Result<Vec<u8>> {
    let failed = |e: std::io::Error| Error::Invalid(format!("compressing a blob: {e}"));
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let compressor = match &mut *cell {
            Some(c) => c,
            None => cell.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(failed)?),
        };
        compressor.compress(plaintext).map_err(failed)
    })
}

/// The stored form of a blob: `nonce ‖ AES-256-GCM(zstd(plaintext), aad = kind ‖ id)`.
pub fn seal_blob(keys: &Keys, kind: BlobKind, id: &BlobId, plaintext: &[u8]) -> Result<Vec<u8>> {
    let compressed = compress_blob(plaintext)?;
    keys.encrypt(&compressed, &blob_aad(kind, id))
}

/// The header of a whole pack held in memory (`check`, index rebuild).
pub fn read_header(keys: &Keys, pack: &[u8], name: &str) -> Result<Vec<HeaderEntry>> {
    let corrupt = || Error::Corrupt(format!("pack {name}"));
    if pack.len() < MAGIC.len() + 1 + 4 + END_MAGIC.len() || &pack[..8] != MAGIC || pack[8] != VERSION {
        return Err(corrupt());
    }
    let tail = pack.len() - END_MAGIC.len();
    if &pack[tail..] != END_MAGIC {
        return Err(corrupt());
    }
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&pack[tail - 4..tail]);
    let header_len = u32::from_le_bytes(len_bytes) as usize;
    let header_start = (tail - 4).checked_sub(header_len).filter(|s| *s >= 9).ok_or_else(corrupt)?;
    let compressed =
        keys.decrypt(&pack[header_start..tail - 4], HEADER_AAD, &format!("pack {name} header"))?;
    // The header of a pack of 16 MiB of blobs is far below this.
    let json = zstd::bulk::decompress(&compressed, 64 * 1024 * 1024).map_err(|_| corrupt())?;
    let entries: Vec<HeaderEntry> = serde_json::from_slice(&json).map_err(|_| corrupt())?;
    for e in &entries {
        let end = e.offset.checked_add(u64::from(e.length)).ok_or_else(corrupt)?;
        if e.offset < 9 || end > header_start as u64 {
            return Err(corrupt());
        }
    }
    Ok(entries)
}

/// Decrypts and decompresses one blob from its sealed bytes, and checks its content against
/// its id.
pub fn open_blob(
    keys: &Keys,
    sealed: &[u8],
    kind: BlobKind,
    id: &BlobId,
    raw_length: u64,
) -> Result<Vec<u8>> {
    let plaintext = open_blob_authenticated(keys, sealed, kind, id, raw_length)?;
    if keys.blob_id(&plaintext) != id.0 {
        return Err(Error::Corrupt(format!("blob {}", id.to_hex())));
    }
    Ok(plaintext)
}

/// Like [`open_blob`] without recomputing the id: AES-GCM has authenticated the bytes as ones
/// this repository sealed under this id (the id is in the AAD). For serving blobs to a client
/// that recomputes every id itself; `check` and local restores use [`open_blob`].
pub fn open_blob_authenticated(
    keys: &Keys,
    sealed: &[u8],
    kind: BlobKind,
    id: &BlobId,
    raw_length: u64,
) -> Result<Vec<u8>> {
    let corrupt = || Error::Corrupt(format!("blob {}", id.to_hex()));
    let compressed = keys.decrypt(sealed, &blob_aad(kind, id), &format!("blob {}", id.to_hex()))?;
    let limit = usize::try_from(raw_length).map_err(|_| corrupt())?;
    let plaintext = zstd::bulk::decompress(&compressed, limit.max(1)).map_err(|_| corrupt())?;
    if plaintext.len() as u64 != raw_length {
        return Err(corrupt());
    }
    Ok(plaintext)
}
