//! Key derivation, the chunked encryption format of `<id>.bin`, and the
//! authentication tag over records.

use std::io::{self, Read, Write};

use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use md5::Md5;
use rand::rngs::OsRng;
use rand::RngCore;
use sha1::Sha1;
use sha2::{Digest, Sha256};

pub(crate) const KEY_LEN: usize = 32;
pub(crate) const MAGIC: &[u8; 8] = b"MAMORIQ\0";
pub(crate) const VERSION: u8 = 1;
pub(crate) const CHUNK: usize = 64 * 1024;
pub(crate) const TAG: usize = 16;
const NONCE_PREFIX: usize = 7;
/// magic, version, chunk size (u32 big endian), nonce prefix.
pub(crate) const HEADER_LEN: usize = MAGIC.len() + 1 + 4 + NONCE_PREFIX;

const DATA_KEY_LABEL: &[u8] = b"mamori-quarantine v1 data key\0";
const RECORD_KEY_LABEL: &[u8] = b"mamori-quarantine v1 record key\0";
const RECORD_AAD_LABEL: &[u8] = b"mamori-quarantine record v1\0";

/// The two working keys derived from the store key. Separate keys keep the
/// random nonces of record tags from ever meeting the counter nonces of data
/// streams under the same AES-GCM key.
pub(crate) struct Keys {
    data: [u8; KEY_LEN],
    record: [u8; KEY_LEN],
}

impl Keys {
    pub(crate) fn derive(master: &[u8; KEY_LEN]) -> Keys {
        // The master key is uniformly random, so a labelled hash is a sound
        // KDF here and avoids another dependency.
        let derive = |label: &[u8]| -> [u8; KEY_LEN] {
            let mut h = Sha256::new();
            h.update(label);
            h.update(master);
            h.finalize().into()
        };
        Keys { data: derive(DATA_KEY_LABEL), record: derive(RECORD_KEY_LABEL) }
    }

    #[cfg(test)]
    pub(crate) fn fingerprint(&self) -> [u8; KEY_LEN] {
        Sha256::digest(self.data).into()
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        // Best effort: do not leave key material in freed heap memory.
        for b in self.data.iter_mut().chain(self.record.iter_mut()) {
            // SAFETY: `b` is a valid, aligned, exclusive reference.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    OsRng.fill_bytes(&mut b);
    b
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

#[derive(Debug)]
pub(crate) enum StreamError {
    Read(io::Error),
    Write(io::Error),
    /// More plaintext arrived than the caller allowed.
    TooLong,
    Corrupt(String),
}

pub(crate) struct Digests {
    pub size: u64,
    pub md5: String,
    pub sha1: String,
    pub sha256: String,
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Binding the header and item id into every chunk means a data file cannot
/// be moved under another item's record, nor its header edited, unnoticed.
fn chunk_aad(header: &[u8; HEADER_LEN], id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(HEADER_LEN + id.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(id.as_bytes());
    aad
}

fn cipher(key: &[u8; KEY_LEN]) -> Aes256Gcm {
    Aes256Gcm::new(GenericArray::from_slice(key))
}

/// Encrypts everything `input` yields into `output`, hashing the plaintext
/// on the way. Stops with `TooLong` once more than `limit` bytes were read so
/// that a file growing while we copy it cannot fill the disk.
///
/// Chunking: every chunk but the last holds exactly `CHUNK` plaintext bytes;
/// the last holds fewer (possibly zero) and is sealed with the STREAM "last"
/// flag. Readers can therefore tell the last chunk by its length alone, and a
/// stream cut at a chunk boundary lacks its last-flagged chunk.
pub(crate) fn encrypt_stream<R: Read, W: Write>(
    keys: &Keys,
    id: &str,
    input: &mut R,
    output: &mut W,
    limit: u64,
) -> Result<Digests, StreamError> {
    let prefix: [u8; NONCE_PREFIX] = random_bytes();
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8] = VERSION;
    header[9..13].copy_from_slice(&(CHUNK as u32).to_be_bytes());
    header[13..].copy_from_slice(&prefix);
    output.write_all(&header).map_err(StreamError::Write)?;

    let aad = chunk_aad(&header, id);
    let mut enc = EncryptorBE32::from_aead(cipher(&keys.data), GenericArray::from_slice(&prefix));
    let (mut md5, mut sha1, mut sha256) = (Md5::new(), Sha1::new(), Sha256::new());
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + TAG);
    let mut size: u64 = 0;
    loop {
        buf.clear();
        buf.resize(CHUNK, 0);
        let n = read_full(input, &mut buf).map_err(StreamError::Read)?;
        buf.truncate(n);
        size += n as u64;
        if size > limit {
            return Err(StreamError::TooLong);
        }
        md5.update(&buf);
        sha1.update(&buf);
        sha256.update(&buf);
        if n == CHUNK {
            enc.encrypt_next_in_place(&aad, &mut buf)
                .map_err(|_| StreamError::Corrupt("file too large for the stream format".into()))?;
            output.write_all(&buf).map_err(StreamError::Write)?;
        } else {
            enc.encrypt_last_in_place(&aad, &mut buf)
                .map_err(|_| StreamError::Corrupt("encryption of the last chunk failed".into()))?;
            output.write_all(&buf).map_err(StreamError::Write)?;
            break;
        }
    }
    output.flush().map_err(StreamError::Write)?;
    Ok(Digests {
        size,
        md5: hex::encode(md5.finalize()),
        sha1: hex::encode(sha1.finalize()),
        sha256: hex::encode(sha256.finalize()),
    })
}

/// Decrypts a data file into `output`. Each chunk is authenticated before
/// any of its plaintext is written. Only size and sha256 are computed; they
/// are what the caller compares against the record.
pub(crate) fn decrypt_stream<R: Read, W: Write>(
    keys: &Keys,
    id: &str,
    input: &mut R,
    output: &mut W,
) -> Result<(u64, String), StreamError> {
    let mut header = [0u8; HEADER_LEN];
    let n = read_full(input, &mut header).map_err(StreamError::Read)?;
    if n < HEADER_LEN {
        return Err(StreamError::Corrupt("data file is shorter than its header".into()));
    }
    if &header[..8] != MAGIC {
        return Err(StreamError::Corrupt("data file has no quarantine header".into()));
    }
    if header[8] != VERSION {
        return Err(StreamError::Corrupt(format!("unsupported data format version {}", header[8])));
    }
    let chunk = u32::from_be_bytes([header[9], header[10], header[11], header[12]]);
    // Accepting only the size we write keeps memory bounded no matter what
    // the header claims.
    if chunk as usize != CHUNK {
        return Err(StreamError::Corrupt(format!("unsupported chunk size {chunk}")));
    }
    let aad = chunk_aad(&header, id);
    let mut dec =
        DecryptorBE32::from_aead(cipher(&keys.data), GenericArray::from_slice(&header[13..HEADER_LEN]));
    let mut sha256 = Sha256::new();
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + TAG);
    let mut size: u64 = 0;
    let mut index: u64 = 0;
    loop {
        buf.clear();
        buf.resize(CHUNK + TAG, 0);
        let n = read_full(input, &mut buf).map_err(StreamError::Read)?;
        buf.truncate(n);
        if n < CHUNK + TAG {
            dec.decrypt_last_in_place(&aad, &mut buf).map_err(|_| {
                StreamError::Corrupt(format!(
                    "final chunk {index} failed authentication (data file truncated, extended or modified, or a different key)"
                ))
            })?;
            sha256.update(&buf);
            size += buf.len() as u64;
            output.write_all(&buf).map_err(StreamError::Write)?;
            break;
        }
        dec.decrypt_next_in_place(&aad, &mut buf).map_err(|_| {
            StreamError::Corrupt(format!(
                "chunk {index} failed authentication (data file modified, reordered or truncated, or a different key)"
            ))
        })?;
        sha256.update(&buf);
        size += buf.len() as u64;
        output.write_all(&buf).map_err(StreamError::Write)?;
        index += 1;
    }
    output.flush().map_err(StreamError::Write)?;
    Ok((size, hex::encode(sha256.finalize())))
}

fn record_aad(record_json: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(RECORD_AAD_LABEL.len() + record_json.len());
    aad.extend_from_slice(RECORD_AAD_LABEL);
    aad.extend_from_slice(record_json);
    aad
}

/// GMAC (AES-GCM over empty plaintext) of the record's canonical JSON.
/// Restores trust the record's path, owner and mode, so a record must not be
/// forgeable by anyone who merely gets write access to the items directory.
pub(crate) fn record_tag(keys: &Keys, nonce: &[u8; 12], record_json: &[u8]) -> Option<[u8; TAG]> {
    let tag = cipher(&keys.record)
        .encrypt_in_place_detached(GenericArray::from_slice(nonce), &record_aad(record_json), &mut [])
        .ok()?;
    Some(tag.into())
}

pub(crate) fn record_tag_ok(keys: &Keys, nonce: &[u8; 12], record_json: &[u8], tag: &[u8; TAG]) -> bool {
    cipher(&keys.record)
        .decrypt_in_place_detached(
            GenericArray::from_slice(nonce),
            &record_aad(record_json),
            &mut [],
            GenericArray::from_slice(tag),
        )
        .is_ok()
}
