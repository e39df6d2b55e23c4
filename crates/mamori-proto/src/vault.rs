//! The backup vault's protocol: what `mamori backup` (a client with its device certificate)
//! and `mamori vault serve` exchange. JSON for control messages; blob contents travel as
//! [frames](encode_frame) so that megabytes of chunks are not hex- or base64-encoded.
//!
//! The client can only add: upload blobs, commit a snapshot, and read back its own snapshots.
//! There is no route that replaces or removes anything.

use serde::{Deserialize, Serialize};

pub mod path {
    pub const SESSION: &str = "/v1/vault/session";
    pub const MISSING: &str = "/v1/vault/missing";
    pub const BLOBS: &str = "/v1/vault/blobs";
    pub const READ: &str = "/v1/vault/blobs/read";
    pub const SNAPSHOTS: &str = "/v1/vault/snapshots";
    pub const SNAPSHOT: &str = "/v1/vault/snapshots/{name}";
    pub fn snapshot(name: &str) -> String {
        format!("/v1/vault/snapshots/{name}")
    }
}

/// Largest upload or read body: a few chunks of the largest chunk size.
pub const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;
/// Most ids in one `missing` or `read` request.
pub const MAX_IDS: usize = 20_000;

/// What the vault tells a client at the start of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// The device id of the client's certificate, as the vault sees it.
    pub device_id: String,
    /// Hex of the keyed-BLAKE3 id key (see FORMAT.md, "Keys").
    pub id_key: String,
    pub chunk_min: u32,
    pub chunk_avg: u32,
    pub chunk_max: u32,
    /// Bytes this device may still add (None: no quota).
    pub quota_left: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ids {
    pub ids: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stored {
    pub received: u64,
    pub new: u64,
    pub new_stored_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitRequest {
    pub hostname: String,
    pub paths: Vec<String>,
    /// Hex id of the root tree (uploaded before).
    pub tree: String,
    pub time_ms: i64,
    #[serde(default)]
    pub excludes: Vec<String>,
}

/// A snapshot as the vault lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    pub time_ms: i64,
    pub hostname: String,
    pub device_id: String,
    pub paths: Vec<String>,
    pub tree: String,
    pub suspicious: bool,
    /// Why it was flagged (empty when it was not).
    #[serde(default)]
    pub reasons: Vec<String>,
    /// An administrator cleared the alert (it was a false alarm).
    #[serde(default)]
    pub cleared: bool,
    /// Plaintext and stored bytes of the content new in this snapshot.
    pub added_raw: u64,
    pub added_stored: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Committed {
    pub snapshot: SnapshotInfo,
}

/// Blob kinds on the wire (same numbers as in packs).
pub const KIND_DATA: u8 = 0;
pub const KIND_TREE: u8 = 1;

/// Frame header: kind (1 byte), id (32 bytes), length (u32 LE).
pub const FRAME_HEADER: usize = 1 + 32 + 4;

/// Appends one frame to `out`.
pub fn encode_frame(out: &mut Vec<u8>, kind: u8, id: &[u8; 32], data: &[u8]) {
    encode_frame_header(out, kind, id, data.len() as u32);
    out.extend_from_slice(data);
}

/// Appends the header of a frame whose `length` bytes of data the caller appends next.
pub fn encode_frame_header(out: &mut Vec<u8>, kind: u8, id: &[u8; 32], length: u32) {
    out.push(kind);
    out.extend_from_slice(id);
    out.extend_from_slice(&length.to_le_bytes());
}

/// One frame of a body.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub id: [u8; 32],
    pub data: &'a [u8],
}

/// Splits a body into frames; a truncated or overlong frame is an error naming its offset.
pub fn decode_frames(mut body: &[u8]) -> Result<Vec<Frame<'_>>, String> {
    let mut out = Vec::new();
    let mut offset = 0usize;
    while !body.is_empty() {
        if body.len() < FRAME_HEADER {
            return Err(format!("truncated frame header at byte {offset}"));
        }
        let kind = body[0];
        if kind != KIND_DATA && kind != KIND_TREE {
            return Err(format!("unknown blob kind {kind} at byte {offset}"));
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&body[1..33]);
        let mut len = [0u8; 4];
        len.copy_from_slice(&body[33..37]);
        let len = u32::from_le_bytes(len) as usize;
        let rest = &body[FRAME_HEADER..];
        if rest.len() < len {
            return Err(format!("frame at byte {offset} claims {len} bytes, {} left", rest.len()));
        }
        out.push(Frame { kind, id, data: &rest[..len] });
        body = &rest[len..];
        offset += FRAME_HEADER + len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_truncation_is_refused() {
        let mut body = Vec::new();
        encode_frame(&mut body, KIND_DATA, &[1; 32], b"hello");
        encode_frame(&mut body, KIND_TREE, &[2; 32], b"");
        let frames = decode_frames(&body).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], Frame { kind: KIND_DATA, id: [1; 32], data: b"hello" });
        assert_eq!(frames[1].data, b"");
        assert!(decode_frames(&body[..body.len() - 1]).unwrap_err().contains("truncated"));
        assert!(decode_frames(&body[..FRAME_HEADER + 2]).unwrap_err().contains("claims 5 bytes"));
        let mut bad = body.clone();
        bad[0] = 9;
        assert!(decode_frames(&bad).unwrap_err().contains("unknown blob kind"));
    }
}
