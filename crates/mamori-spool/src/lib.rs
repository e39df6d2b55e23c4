//! The agent's durable on-disk outbox.
//!
//! Events get an agent-assigned sequence number (`seq`, starting at 1) when appended. The sender
//! [`Spool::peek`]s the oldest unacknowledged events, ships them, and [`Spool::ack`]s up to a seq once
//! the manager has stored them. Delivery is at-least-once: the manager de-duplicates by (agent, seq),
//! which is why a seq must never be handed out twice, not even after a crash.
//!
//! # On-disk format (all integers little-endian)
//!
//! ```text
//! <dir>/lock                      flock(2)ed while open, so two processes never share a spool
//! <dir>/ack                       76 bytes: "MSPLACK1", acked u64, next_seq u64, dropped_total u64,
//!                                 has_notice u64, notice_seq u64, notice.dropped/first_seq/last_seq u64,
//!                                 crc32 u32 of everything before it. Replaced atomically (ack.tmp,
//!                                 fsync, rename, fsync dir).
//! <dir>/seg-<first seq, 20 digits>.log
//!     header  "MSPLSEG1"
//!     record  len u32 | crc32 u32 | seq u64 | kind_len u16 | kind (UTF-8, 1..=255) | payload
//!             len = bytes after the 8-byte record header; crc32 covers the len field and those bytes,
//!             so a damaged length is caught too. Seqs inside a segment are consecutive from first seq.
//! ```
//!
//! `acked` means "every seq <= acked is gone from the queue", whether delivered or dropped for space.
//! `next_seq` in `ack` is a high-water mark: together with segment names and contents it guarantees seqs
//! continue after the highest ever assigned even when every segment has been acked and deleted.
//!
//! # Crash guarantees
//!
//! * [`Sync::EveryAppend`]: when `append`/`append_batch` returns `Ok`, the events are fsynced
//!   (one `write` + one `fdatasync` per call) and survive kill -9 and power loss.
//! * [`Sync::Batch`]: events are durable after [`Spool::flush`] returns (or a segment roll, which syncs
//!   the finished segment). [`Spool::peek`] only returns durable events: if the sender could see an
//!   unflushed event, a crash could lose it and reassign its seq to a different event, which the
//!   manager would then discard as a duplicate — a silent loss.
//! * [`Spool::ack`] is durable when it returns; fully acked segments are deleted afterwards, and a
//!   crash between the two is cleaned up by the next `open`.
//! * Recovery on `open`: each segment is read record by record; the first record that is short, fails
//!   its CRC, has an impossible length or an unexpected seq ends that segment. Everything before it is
//!   kept. In the last segment the bad tail is truncated away (a torn write); in an older segment the
//!   bytes are left in place but ignored, and reading continues with the next segment. Because the
//!   discarded bytes may have held seqs that were already sent, the next seq is bumped past the largest
//!   number of records those bytes could have held (`ceil(bytes / 19)`), so after damage the manager
//!   sees a gap rather than a reused seq. The damaged segment is never appended to again.
//! * A damaged `ack` file is an error ([`Error::CorruptState`]), not a reset: guessing the ack
//!   position could reassign seqs, and resending everything is the caller's decision to make.
//!
//! # Bounded size and drop notices
//!
//! `bytes_on_disk()` (the sum of segment file sizes; `ack` and `lock` are not counted) never exceeds
//! `max_bytes` after any call returns. When an append would exceed it, whole segments are dropped
//! oldest first, so at most one segment's worth of room is wasted. Unacked events in dropped segments
//! are counted in [`Spool::dropped_total`] and reported by a synthetic event of kind
//! [`DROPPED_KIND`] with payload `{"dropped":N,"first_seq":a,"last_seq":b}` (N events lost, all with
//! seq in `a..=b`), written with its own new seq in the same write as the event that caused the drop.
//! The pending notice is persisted in `ack` before any segment is deleted, so a crash cannot make the
//! drop silent. If an unacked drop notice is itself dropped, its counts are folded into the next
//! notice instead of being counted as a lost event, so the notices that reach the manager always add up
//! to exactly the number of real events lost. One append (all records plus a segment header and a
//! drop notice) must fit in `max_bytes - 264` bytes; anything larger is [`Error::TooLarge`].

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::ops::RangeInclusive;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Kind of the synthetic event that reports events dropped for space.
pub const DROPPED_KIND: &str = "mamori.spool.dropped";
/// Longest accepted event kind, in bytes (it is stored behind a u16 but kept short on purpose).
pub const MAX_KIND_LEN: usize = 255;

const SEG_MAGIC: &[u8; 8] = b"MSPLSEG1";
const SEG_HEADER_LEN: u64 = 8;
const REC_HEADER_LEN: u64 = 8;
/// seq + kind_len + one byte of kind.
const MIN_BODY_LEN: u64 = 8 + 2 + 1;
const MIN_RECORD_LEN: u64 = REC_HEADER_LEN + MIN_BODY_LEN;
/// Room kept for a drop notice: its record is at most 8 + 8 + 2 + 20 + 97 bytes.
const NOTICE_RESERVE: u64 = 256;
const STATE_MAGIC: &[u8; 8] = b"MSPLACK1";
const STATE_LEN: usize = 8 + 8 * 8 + 4;
const STATE_FILE: &str = "ack";
const STATE_TMP: &str = "ack.tmp";
const LOCK_FILE: &str = "lock";

/// When appended events are fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// Every `append`/`append_batch` call is fsynced before it returns.
    EveryAppend,
    /// The caller calls [`Spool::flush`]; `peek` only sees flushed events.
    Batch,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Upper bound on `bytes_on_disk()`. Default 256 MiB; at least 1 KiB.
    pub max_bytes: u64,
    /// A new segment is started when the current one would grow past this. Default 8 MiB;
    /// at least 64 bytes and at most `max_bytes`.
    pub segment_bytes: u64,
    pub sync: Sync,
}

impl Default for Options {
    fn default() -> Self {
        Options { max_bytes: 256 << 20, segment_bytes: 8 << 20, sync: Sync::EveryAppend }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    pub kind: String,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("spool I/O error: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid spool options: {0}")]
    InvalidOptions(String),
    #[error("invalid event kind: {0}")]
    InvalidKind(String),
    #[error(
        "append of {size} bytes (encoded) does not fit in the spool: with max_bytes {max_bytes} \
         one append may be at most {limit} bytes"
    )]
    TooLarge { size: u64, limit: u64, max_bytes: u64 },
    #[error("cannot ack up to seq {requested}: the highest seq assigned is {last}")]
    AckBeyondEnd { requested: u64, last: u64 },
    #[error("spool directory {0} is already open in another process")]
    Locked(PathBuf),
    #[error("spool state file {path} is corrupt: {reason}")]
    CorruptState { path: PathBuf, reason: String },
    #[error("spool segment {path} is damaged at offset {offset}; reopen the spool to recover")]
    CorruptSegment { path: PathBuf, offset: u64 },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io { op, path: path.to_path_buf(), source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
struct Notice {
    dropped: u64,
    first_seq: u64,
    last_seq: u64,
}

impl Notice {
    fn merge(self, other: Notice) -> Notice {
        Notice {
            dropped: self.dropped + other.dropped,
            first_seq: self.first_seq.min(other.first_seq),
            last_seq: self.last_seq.max(other.last_seq),
        }
    }

    fn payload(&self) -> String {
        format!(
            r#"{{"dropped":{},"first_seq":{},"last_seq":{}}}"#,
            self.dropped, self.first_seq, self.last_seq
        )
    }
}

/// A drop notice not yet written to a segment. `seq` is the seq it was due to get when the drop
/// was persisted; on reopen, any surviving record with seq >= it proves the notice was written,
/// because the notice is always the first record of the write that follows a drop.
#[derive(Debug, Clone, Copy)]
struct PendingNotice {
    notice: Notice,
    seq: u64,
}

#[derive(Debug, Clone, Copy)]
struct State {
    acked: u64,
    next_seq: u64,
    dropped_total: u64,
    notice: Option<PendingNotice>,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    /// One past the last valid record's seq.
    next_seq: u64,
    /// Reads stop here; past it there may be damaged bytes in an older segment.
    valid_end: u64,
    file_len: u64,
    /// Drop notices stored in this segment, kept so that dropping them can fold their counts forward.
    notices: Vec<(u64, Notice)>,
}

impl Segment {
    fn unacked(&self, acked: u64) -> u64 {
        self.next_seq.saturating_sub(self.first_seq.max(acked + 1))
    }
}

/// Where the first unacked record was last seen, so `peek` does not rescan a segment from its start.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    seg_first: u64,
    offset: u64,
    seq: u64,
}

pub struct Spool {
    dir: PathBuf,
    options: Options,
    _lock: File,
    segments: VecDeque<Segment>,
    /// Write handle to `segments.back()`; `None` when that segment must not be appended to.
    active: Option<File>,
    /// The active segment has data that has not been fsynced.
    dirty: bool,
    next_seq: u64,
    /// Seqs below this are fsynced (or gone); `peek` does not look past it.
    durable_next: u64,
    acked: u64,
    dropped_total: u64,
    pending_notice: Option<PendingNotice>,
    bytes: u64,
    cursor: Option<Cursor>,
}

fn seg_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("seg-{first_seq:020}.log"))
}

fn parse_seg_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&s| s > 0)
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync directory", dir))
}

fn validate_kind(kind: &str) -> Result<(), Error> {
    if kind.is_empty() || kind.len() > MAX_KIND_LEN {
        return Err(Error::InvalidKind(format!(
            "kind must be 1..={MAX_KIND_LEN} bytes, got {} bytes",
            kind.len()
        )));
    }
    Ok(())
}

fn record_len(kind_len: usize, payload_len: usize) -> u64 {
    REC_HEADER_LEN + 8 + 2 + kind_len as u64 + payload_len as u64
}

fn encode_record(buf: &mut Vec<u8>, seq: u64, kind: &str, payload: &[u8]) {
    let start = buf.len();
    // Callers check sizes against max_bytes and u32::MAX first; kind is at most 255 bytes.
    let body_len = (8 + 2 + kind.len() + payload.len()) as u32;
    buf.extend_from_slice(&body_len.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&(kind.len() as u16).to_le_bytes());
    buf.extend_from_slice(kind.as_bytes());
    buf.extend_from_slice(payload);
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[start..start + 4]);
    h.update(&buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&h.finalize().to_le_bytes());
}

struct Record {
    seq: u64,
    kind: String,
    payload: Vec<u8>,
    offset: u64,
    end: u64,
}

enum Next {
    Record(Record),
    End,
    Damaged,
}

struct RecordReader<R> {
    r: R,
    pos: u64,
    end: u64,
}

impl<R: Read> RecordReader<R> {
    fn next(&mut self) -> io::Result<Next> {
        if self.pos >= self.end {
            return Ok(Next::End);
        }
        let remaining = self.end - self.pos;
        if remaining < REC_HEADER_LEN {
            return Ok(Next::Damaged);
        }
        let mut hdr = [0u8; 8];
        if let Err(e) = self.r.read_exact(&mut hdr) {
            // The file is shorter than it was a moment ago: the same thing as a torn tail.
            return if e.kind() == io::ErrorKind::UnexpectedEof { Ok(Next::Damaged) } else { Err(e) };
        }
        let len = u64::from(u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]));
        let crc = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        // Checking the length against what is left bounds the allocation for a damaged length field.
        if len < MIN_BODY_LEN || len > remaining - REC_HEADER_LEN {
            return Ok(Next::Damaged);
        }
        let mut body = vec![0u8; len as usize];
        if let Err(e) = self.r.read_exact(&mut body) {
            return if e.kind() == io::ErrorKind::UnexpectedEof { Ok(Next::Damaged) } else { Err(e) };
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&hdr[0..4]);
        h.update(&body);
        if h.finalize() != crc {
            return Ok(Next::Damaged);
        }
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&body[0..8]);
        let seq = u64::from_le_bytes(seq_bytes);
        let kind_len = usize::from(u16::from_le_bytes([body[8], body[9]]));
        if kind_len == 0 || kind_len > MAX_KIND_LEN || 10 + kind_len > body.len() {
            return Ok(Next::Damaged);
        }
        let payload = body.split_off(10 + kind_len);
        let Ok(kind) = String::from_utf8(body.split_off(10)) else {
            return Ok(Next::Damaged);
        };
        let offset = self.pos;
        self.pos += REC_HEADER_LEN + len;
        Ok(Next::Record(Record { seq, kind, payload, offset, end: self.pos }))
    }
}

/// Reads one segment at open time. Returns the segment (valid prefix only) and the number of bytes
/// after it that could not be read as records.
fn recover_segment(path: &Path, first_seq: u64) -> Result<(Segment, u64), Error> {
    let file = File::open(path).map_err(io_err("open segment", path))?;
    let file_len = file.metadata().map_err(io_err("stat segment", path))?.len();
    let mut seg = Segment { first_seq, next_seq: first_seq, valid_end: 0, file_len, notices: Vec::new() };
    let mut r = BufReader::with_capacity(1 << 16, file);
    let mut magic = [0u8; 8];
    if file_len < SEG_HEADER_LEN || r.read_exact(&mut magic).is_err() || &magic != SEG_MAGIC {
        return Ok((seg, file_len));
    }
    seg.valid_end = SEG_HEADER_LEN;
    let mut rr = RecordReader { r, pos: SEG_HEADER_LEN, end: file_len };
    while let Next::Record(rec) = rr.next().map_err(io_err("read segment", path))? {
        if rec.seq != seg.next_seq {
            break;
        }
        if rec.kind == DROPPED_KIND {
            if let Ok(n) = serde_json::from_slice::<Notice>(&rec.payload) {
                seg.notices.push((rec.seq, n));
            }
        }
        seg.next_seq += 1;
        seg.valid_end = rec.end;
    }
    let discarded = file_len - seg.valid_end;
    Ok((seg, discarded))
}

fn read_state(path: &Path) -> Result<Option<State>, Error> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    let corrupt = |reason: &str| Error::CorruptState { path: path.to_path_buf(), reason: reason.to_string() };
    if bytes.len() != STATE_LEN {
        return Err(corrupt(&format!("expected {STATE_LEN} bytes, found {}", bytes.len())));
    }
    if &bytes[0..8] != STATE_MAGIC {
        return Err(corrupt("bad magic"));
    }
    let crc_at = STATE_LEN - 4;
    let stored = u32::from_le_bytes([bytes[crc_at], bytes[crc_at + 1], bytes[crc_at + 2], bytes[crc_at + 3]]);
    if crc32fast::hash(&bytes[..crc_at]) != stored {
        return Err(corrupt("checksum mismatch"));
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[8 + 8 * i..16 + 8 * i]);
        u64::from_le_bytes(w)
    };
    let notice = (word(3) != 0).then(|| PendingNotice {
        seq: word(4),
        notice: Notice { dropped: word(5), first_seq: word(6), last_seq: word(7) },
    });
    Ok(Some(State { acked: word(0), next_seq: word(1), dropped_total: word(2), notice }))
}

fn write_state(dir: &Path, st: &State) -> Result<(), Error> {
    let mut buf = Vec::with_capacity(STATE_LEN);
    buf.extend_from_slice(STATE_MAGIC);
    let (has, n) = match st.notice {
        Some(p) => (1, p),
        None => (0, PendingNotice { seq: 0, notice: Notice { dropped: 0, first_seq: 0, last_seq: 0 } }),
    };
    for w in [
        st.acked,
        st.next_seq,
        st.dropped_total,
        has,
        n.seq,
        n.notice.dropped,
        n.notice.first_seq,
        n.notice.last_seq,
    ] {
        buf.extend_from_slice(&w.to_le_bytes());
    }
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(STATE_TMP);
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    f.write_all_at(&buf, 0).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("fsync", &tmp))?;
    let path = dir.join(STATE_FILE);
    fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
    sync_dir(dir)
}

impl Options {
    fn validate(&self) -> Result<(), Error> {
        if self.max_bytes < 1024 {
            return Err(Error::InvalidOptions(format!(
                "max_bytes must be at least 1024, got {}",
                self.max_bytes
            )));
        }
        if self.segment_bytes < 64 || self.segment_bytes > self.max_bytes {
            return Err(Error::InvalidOptions(format!(
                "segment_bytes must be in 64..=max_bytes ({}), got {}",
                self.max_bytes, self.segment_bytes
            )));
        }
        Ok(())
    }
}

impl Spool {
    /// Opens (creating with mode 0700 if needed) and recovers the spool in `dir`.
    pub fn open(dir: &Path, options: Options) -> Result<Spool, Error> {
        options.validate()?;
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err("create", dir))?;
        // The outbox holds patient-adjacent security events: keep it private even if the directory
        // was pre-created with looser permissions.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err("chmod", dir))?;

        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(Error::Locked(dir.to_path_buf()));
            }
            return Err(io_err("lock", &lock_path)(e));
        }

        match fs::remove_file(dir.join(STATE_TMP)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("remove", &dir.join(STATE_TMP))(e));
            }
            _ => {}
        }
        let state_path = dir.join(STATE_FILE);
        let state = read_state(&state_path)?.unwrap_or(State {
            acked: 0,
            next_seq: 1,
            dropped_total: 0,
            notice: None,
        });

        let mut firsts = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
            let entry = entry.map_err(io_err("list", dir))?;
            if let Some(first) = entry.file_name().to_str().and_then(parse_seg_name) {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();

        let mut recovered = Vec::with_capacity(firsts.len());
        for &first in &firsts {
            recovered.push(recover_segment(&seg_path(dir, first), first)?);
        }

        let mut next_seq = state.next_seq.max(state.acked + 1);
        let mut highest_record_next = 0;
        for (seg, discarded) in &recovered {
            next_seq = next_seq.max(seg.first_seq).max(seg.next_seq + discarded.div_ceil(MIN_RECORD_LEN));
            if seg.next_seq > seg.first_seq {
                highest_record_next = highest_record_next.max(seg.next_seq);
            }
        }
        let notice = state.notice.filter(|p| !(highest_record_next > p.seq || state.acked >= p.seq));
        let state = State { next_seq, notice, ..state };
        // Persist the high-water mark before deleting or truncating anything that proved it.
        write_state(dir, &state)?;

        let last_idx = recovered.len().checked_sub(1);
        let mut segments = VecDeque::with_capacity(recovered.len());
        let mut active = None;
        let mut deleted = false;
        for (i, (mut seg, discarded)) in recovered.into_iter().enumerate() {
            let path = seg_path(dir, seg.first_seq);
            let is_last = Some(i) == last_idx;
            if seg.next_seq == seg.first_seq || seg.next_seq <= state.acked + 1 {
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
                deleted = true;
                continue;
            }
            if is_last {
                let f = OpenOptions::new().write(true).open(&path).map_err(io_err("open segment", &path))?;
                if discarded > 0 {
                    f.set_len(seg.valid_end).map_err(io_err("truncate torn tail of", &path))?;
                    seg.file_len = seg.valid_end;
                }
                // What the previous process wrote may never have been fsynced (Sync::Batch).
                f.sync_all().map_err(io_err("fsync", &path))?;
                if discarded == 0 {
                    active = Some(f);
                }
            }
            segments.push_back(seg);
        }
        if deleted {
            sync_dir(dir)?;
        }

        let bytes = segments.iter().map(|s| s.file_len).sum();
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            options,
            _lock: lock,
            segments,
            active,
            dirty: false,
            next_seq,
            durable_next: next_seq,
            acked: state.acked,
            dropped_total: state.dropped_total,
            pending_notice: state.notice,
            bytes,
            cursor: None,
        };
        if spool.pending_notice.is_some() {
            spool.write_events(&[])?;
        }
        Ok(spool)
    }

    /// Appends one event and returns its seq.
    pub fn append(&mut self, kind: &str, payload: &[u8]) -> Result<u64, Error> {
        let range = self.append_batch(&[(kind, payload)])?;
        Ok(*range.start())
    }

    /// Appends events with consecutive seqs using one write (and, with `Sync::EveryAppend`, one fsync).
    /// All or nothing: on error no event of the batch is in the spool. An empty batch returns an
    /// empty range (`start > end`).
    pub fn append_batch(&mut self, events: &[(&str, &[u8])]) -> Result<RangeInclusive<u64>, Error> {
        let first = self.next_seq + u64::from(self.pending_notice.is_some());
        match self.write_events(events)? {
            Some(range) => Ok(range),
            None => Ok(first..=first - 1),
        }
    }

    /// Makes every appended event durable (needed with `Sync::Batch`).
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.dirty {
            if let (Some(f), Some(seg)) = (&self.active, self.segments.back()) {
                let path = seg_path(&self.dir, seg.first_seq);
                f.sync_data().map_err(io_err("fsync", &path))?;
            }
            self.dirty = false;
        }
        self.durable_next = self.next_seq;
        Ok(())
    }

    /// Oldest unacked durable events in seq order: at most `max_events`, and at most `max_bytes` of
    /// kind + payload, except that one event is always returned if any is pending.
    pub fn peek(&mut self, max_events: usize, max_bytes: usize) -> Result<Vec<Event>, Error> {
        let mut out: Vec<Event> = Vec::new();
        if max_events == 0 {
            return Ok(out);
        }
        let mut used = 0usize;
        for idx in 0..self.segments.len() {
            let (seg_first, seg_next, valid_end) = {
                let s = &self.segments[idx];
                (s.first_seq, s.next_seq, s.valid_end)
            };
            if seg_next <= self.acked + 1 {
                continue;
            }
            if seg_first >= self.durable_next {
                break;
            }
            let (offset, mut expect) = match self.cursor {
                Some(c) if c.seg_first == seg_first && c.seq <= self.acked + 1 => (c.offset, c.seq),
                _ => (SEG_HEADER_LEN, seg_first),
            };
            let path = seg_path(&self.dir, seg_first);
            let mut f = File::open(&path).map_err(io_err("open segment", &path))?;
            f.seek(SeekFrom::Start(offset)).map_err(io_err("seek segment", &path))?;
            let mut rr =
                RecordReader { r: BufReader::with_capacity(1 << 16, f), pos: offset, end: valid_end };
            while expect < seg_next && expect < self.durable_next {
                let rec = match rr.next().map_err(io_err("read segment", &path))? {
                    Next::Record(rec) if rec.seq == expect => rec,
                    _ => return Err(Error::CorruptSegment { path, offset: rr.pos }),
                };
                expect += 1;
                if rec.seq <= self.acked {
                    self.cursor = Some(Cursor { seg_first, offset: rec.end, seq: rec.seq + 1 });
                    continue;
                }
                if out.is_empty() {
                    self.cursor = Some(Cursor { seg_first, offset: rec.offset, seq: rec.seq });
                }
                let size = rec.kind.len() + rec.payload.len();
                if !out.is_empty() && used + size > max_bytes {
                    return Ok(out);
                }
                used += size;
                out.push(Event { seq: rec.seq, kind: rec.kind, payload: rec.payload });
                if out.len() >= max_events {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// Durably acknowledges every event with seq <= `up_to_seq` and deletes fully acked segments.
    /// Acking a seq at or below the current ack position is a no-op; acking past the highest seq ever
    /// assigned is [`Error::AckBeyondEnd`] (clamping would hide a sender bug).
    pub fn ack(&mut self, up_to_seq: u64) -> Result<(), Error> {
        if up_to_seq > self.acked {
            let last = self.next_seq - 1;
            if up_to_seq > last {
                return Err(Error::AckBeyondEnd { requested: up_to_seq, last });
            }
            let st = State { acked: up_to_seq, ..self.state() };
            write_state(&self.dir, &st)?;
            self.acked = up_to_seq;
        }
        // Also runs for no-op acks so that a deletion that failed earlier is retried.
        let mut deleted = false;
        while let Some(seg) = self.segments.front() {
            if seg.next_seq > self.acked + 1 {
                break;
            }
            let path = seg_path(&self.dir, seg.first_seq);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("remove", &path)(e)),
                _ => {}
            }
            self.forget_front();
            deleted = true;
        }
        if deleted {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Events appended and not yet acked or dropped (including unflushed ones in `Sync::Batch`).
    pub fn pending(&self) -> u64 {
        self.segments.iter().map(|s| s.unacked(self.acked)).sum()
    }

    /// Total size of the segment files; never more than `Options::max_bytes`.
    pub fn bytes_on_disk(&self) -> u64 {
        self.bytes
    }

    /// Real events dropped for space since the spool was created (drop notices not included).
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    fn state(&self) -> State {
        State {
            acked: self.acked,
            next_seq: self.next_seq,
            dropped_total: self.dropped_total,
            notice: self.pending_notice,
        }
    }

    fn forget_front(&mut self) {
        if let Some(seg) = self.segments.pop_front() {
            self.bytes -= seg.file_len;
            if self.cursor.is_some_and(|c| c.seg_first == seg.first_seq) {
                self.cursor = None;
            }
            if self.segments.is_empty() {
                self.active = None;
                self.dirty = false;
            }
        }
    }

    /// Drops the oldest segment for space. The notice is persisted before the file goes away.
    fn drop_oldest(&mut self) -> Result<(), Error> {
        let Some(seg) = self.segments.front() else {
            return Ok(());
        };
        let lost = seg.unacked(self.acked);
        let mut st = self.state();
        if lost > 0 {
            let mut notice = Notice {
                dropped: 0,
                first_seq: seg.first_seq.max(self.acked + 1),
                last_seq: seg.next_seq - 1,
            };
            let mut lost_notices = 0;
            for &(seq, n) in &seg.notices {
                if seq > self.acked {
                    lost_notices += 1;
                    notice = notice.merge(n);
                }
            }
            notice.dropped += lost - lost_notices;
            st.dropped_total += lost - lost_notices;
            let merged = match st.notice {
                Some(p) => p.notice.merge(notice),
                None => notice,
            };
            st.notice = Some(PendingNotice { notice: merged, seq: self.next_seq });
        }
        st.acked = st.acked.max(seg.next_seq - 1);
        let path = seg_path(&self.dir, seg.first_seq);
        write_state(&self.dir, &st)?;
        self.acked = st.acked;
        self.dropped_total = st.dropped_total;
        self.pending_notice = st.notice;
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("remove", &path)(e)),
            _ => {}
        }
        self.forget_front();
        sync_dir(&self.dir)
    }

    fn roll(&mut self) -> Result<(), Error> {
        if let Some(f) = self.active.take() {
            if self.dirty {
                if let Some(seg) = self.segments.back() {
                    f.sync_data().map_err(io_err("fsync", &seg_path(&self.dir, seg.first_seq)))?;
                }
                self.dirty = false;
            }
        }
        self.durable_next = self.next_seq;
        // An empty segment left by a failed write would otherwise collide with the new file's name.
        if self.segments.back().is_some_and(|s| s.first_seq == self.next_seq) {
            if let Some(s) = self.segments.pop_back() {
                self.bytes -= s.file_len;
            }
        }
        let path = seg_path(&self.dir, self.next_seq);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("create segment", &path))?;
        f.write_all_at(SEG_MAGIC, 0).map_err(io_err("write", &path))?;
        f.sync_all().map_err(io_err("fsync", &path))?;
        sync_dir(&self.dir)?;
        self.segments.push_back(Segment {
            first_seq: self.next_seq,
            next_seq: self.next_seq,
            valid_end: SEG_HEADER_LEN,
            file_len: SEG_HEADER_LEN,
            notices: Vec::new(),
        });
        self.bytes += SEG_HEADER_LEN;
        self.active = Some(f);
        Ok(())
    }

    /// Writes the pending drop notice (if any) followed by `events`, making room first.
    fn write_events(&mut self, events: &[(&str, &[u8])]) -> Result<Option<RangeInclusive<u64>>, Error> {
        let mut total = 0u64;
        for (kind, payload) in events {
            validate_kind(kind)?;
            let body = 8 + 2 + kind.len() as u64 + payload.len() as u64;
            if body > u64::from(u32::MAX) {
                total = u64::MAX;
                break;
            }
            total += REC_HEADER_LEN + body;
        }
        let max_bytes = self.options.max_bytes;
        let limit = max_bytes - SEG_HEADER_LEN - NOTICE_RESERVE;
        if total > limit {
            return Err(Error::TooLarge { size: total, limit, max_bytes });
        }
        if events.is_empty() && self.pending_notice.is_none() {
            return Ok(None);
        }

        let roll = loop {
            let notice_len =
                self.pending_notice.map_or(0, |p| record_len(DROPPED_KIND.len(), p.notice.payload().len()));
            let write_len = notice_len + total;
            let roll = match (&self.active, self.segments.back()) {
                (Some(_), Some(seg)) => {
                    seg.next_seq > seg.first_seq && seg.valid_end + write_len > self.options.segment_bytes
                }
                _ => true,
            };
            let need = write_len + if roll { SEG_HEADER_LEN } else { 0 };
            if self.bytes + need <= max_bytes {
                break roll;
            }
            if self.segments.is_empty() {
                // Unreachable given the size check above; kept so a bug cannot loop forever.
                return Err(Error::TooLarge { size: total, limit, max_bytes });
            }
            self.drop_oldest()?;
        };
        if roll {
            self.roll()?;
        }

        let mut buf = Vec::with_capacity(total as usize + NOTICE_RESERVE as usize);
        let mut seq = self.next_seq;
        let notice = self.pending_notice.map(|p| (seq, p.notice));
        if let Some((_, n)) = notice {
            encode_record(&mut buf, seq, DROPPED_KIND, n.payload().as_bytes());
            seq += 1;
        }
        let events_first = seq;
        for (kind, payload) in events {
            encode_record(&mut buf, seq, kind, payload);
            seq += 1;
        }
        // A drop notice must not be lost to a later crash, so it is synced even in Batch mode.
        let sync = self.options.sync == Sync::EveryAppend || notice.is_some();
        let (Some(f), Some(seg)) = (&self.active, self.segments.back_mut()) else {
            return Err(Error::Io {
                op: "append",
                path: self.dir.clone(),
                source: io::Error::other("no active segment after roll"),
            });
        };
        let path = seg_path(&self.dir, seg.first_seq);
        let result = f.write_all_at(&buf, seg.valid_end).map_err(io_err("write", &path)).and_then(|()| {
            if sync {
                f.sync_data().map_err(io_err("fsync", &path))
            } else {
                Ok(())
            }
        });
        if let Err(e) = result {
            // Undo the partial write so its records are not visible and their seqs stay unassigned.
            if f.set_len(seg.valid_end).and_then(|()| f.sync_data()).is_err() {
                // The file's tail is unknown now; never append to it again and count the worst case.
                seg.file_len = seg.valid_end + buf.len() as u64;
                self.bytes += buf.len() as u64;
                self.active = None;
                self.dirty = false;
            }
            return Err(e);
        }
        let len = buf.len() as u64;
        seg.valid_end += len;
        seg.file_len = seg.valid_end;
        seg.next_seq = seq;
        if let Some((nseq, n)) = notice {
            seg.notices.push((nseq, n));
            self.pending_notice = None;
        }
        self.bytes += len;
        self.next_seq = seq;
        if sync {
            self.dirty = false;
            self.durable_next = seq;
        } else {
            self.dirty = true;
        }
        Ok((!events.is_empty()).then(|| events_first..=seq - 1))
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        // Best effort for Sync::Batch callers that forgot flush(); errors cannot be reported here.
        let _ = self.flush();
    }
}
