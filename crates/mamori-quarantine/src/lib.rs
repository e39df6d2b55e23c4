//! mamori's encrypted quarantine store.
//!
//! When the scanner detects a file, [`Store::quarantine`] moves it into the
//! store: the content is encrypted so that it can neither be executed nor be
//! re-detected by other antivirus products, and a [`Record`] keeps what is
//! needed to put it back bit-exact (path, owner, mode, mtime, hashes) plus
//! why it was taken (rule, ruleset, time). An administrator can later
//! [`list`](Store::list), [`restore`](Store::restore) or
//! [`delete`](Store::delete) items. Unix only.
//!
//! # On-disk layout
//!
//! ```text
//! <dir>/                 0700, must be owned by the current user
//! <dir>/key              0600, 32 random bytes (the store key)
//! <dir>/items/           0700
//! <dir>/items/<id>.bin   0600, encrypted content
//! <dir>/items/<id>.json  0600, {"format":1,"record":{..},"tag_nonce":hex,"tag":hex}
//! ```
//!
//! `<id>` is 16 random lowercase hex characters. Files whose names start
//! with `.` are temporaries of an operation in progress (or interrupted).
//!
//! `<id>.bin` is a 20-byte header — magic `MAMORIQ\0`, version byte `1`,
//! chunk size as big-endian u32 (65536), 7-byte random nonce prefix — and
//! then the content as an AES-256-GCM STREAM (`StreamBE32`: nonce = prefix ‖
//! 32-bit big-endian chunk counter ‖ last-chunk flag byte). Every chunk but
//! the last carries exactly 65536 plaintext bytes plus a 16-byte tag; the
//! last carries fewer (possibly none) and is sealed with the last-chunk flag.
//! Each chunk's associated data is the header followed by the item id.
//!
//! # Security properties
//!
//! * Confidentiality: nothing of the plaintext is stored unencrypted, so the
//!   store holds nothing executable or matchable by signature scanners.
//! * Integrity of content: modification, reordering, truncation or extension
//!   of a data file fails authentication; moving a data file under another
//!   item's id fails too (the id is authenticated). A restore decrypts into a
//!   private temporary file and additionally checks size and sha256 against
//!   the record before anything becomes visible at the target.
//! * Integrity of records: records carry an AES-GCM tag under a key derived
//!   from the store key. Restores run with the path, owner and mode written
//!   in a record, so records must not be forgeable by someone who can only
//!   write into the items directory.
//! * Keys: the store key is created atomically (written to a private
//!   temporary and linked into place without replacing, so concurrent first
//!   opens agree on one key) and is refused if it is not a regular file owned
//!   by the current user, is accessible by group or others, or is not 32
//!   bytes. It is never printed, logged, or put into an error. Anyone who can
//!   read the key file can decrypt the store; that is what the 0600 mode and
//!   the owner check protect.
//! * No overwrites: a restore never replaces an existing file, including one
//!   that appears while the restore runs (the final step is
//!   `renameat2(RENAME_NOREPLACE)`, or `link()` where that is unsupported).
//! * Quarantine never follows symlinks, refuses anything but a regular file
//!   without blocking on FIFOs, and deletes the original only after the
//!   encrypted copy and its record are durably on disk. If the file changed
//!   size or mtime while being copied, or was replaced, it is left in place.
//!   A hard-linked file keeps its other names; only the given name goes.

use std::fs::{self, DirBuilder, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

mod crypto;
mod record;
mod sys;
#[cfg(test)]
mod tests;

use crypto::{Keys, StreamError, KEY_LEN, TAG};
pub use record::Record;
use record::{Envelope, ENVELOPE_FORMAT};

const KEY_FILE: &str = "key";
const ITEMS_DIR: &str = "items";
const ID_BYTES: usize = 8;
const ID_LEN: usize = ID_BYTES * 2;
const MIN_PREFIX: usize = 4;
/// Records are small; a bound keeps a planted huge file from exhausting memory.
const MAX_RECORD_BYTES: u64 = 1 << 20;

/// Why a file is being quarantined.
#[derive(Debug, Clone, Copy)]
pub struct Detection<'a> {
    pub rule: &'a str,
    pub ruleset: &'a str,
}

/// Errors of the quarantine store. None of them ever contains key material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no quarantined item matches id {0:?}")]
    NotFound(String),
    #[error("id prefix {prefix:?} matches {count} quarantined items; give more characters")]
    Ambiguous { prefix: String, count: usize },
    #[error("invalid quarantine id {0:?}: expected 4 to 16 hexadecimal characters")]
    InvalidId(String),
    #[error("refusing to overwrite {}: something already exists there", .0.display())]
    TargetExists(PathBuf),
    #[error(
        "{} is not a regular file (symlinks, directories, FIFOs, sockets and devices are not quarantined)",
        .0.display()
    )]
    NotRegularFile(PathBuf),
    #[error("{} changed or was replaced while being quarantined; the original was left in place", .0.display())]
    Changed(PathBuf),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("quarantined item {id} is corrupt: {reason}")]
    Corrupt { id: String, reason: String },
    #[error("refusing to use {}: {reason}", path.display())]
    InsecurePermissions { path: PathBuf, reason: String },
    #[error("invalid quarantine key file {}: {reason}", path.display())]
    InvalidKey { path: PathBuf, reason: String },
    #[error("invalid path {}: {reason}", path.display())]
    InvalidPath { path: PathBuf, reason: String },
    #[error("cannot give {} the owner {uid}:{gid}: {source}", path.display())]
    Ownership { path: PathBuf, uid: u32, gid: u32, source: io::Error },
    #[error(
        "restored {} but could not remove item {id} from the store (delete it manually): {source}",
        path.display()
    )]
    RemoveAfterRestore { id: String, path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn corrupt(id: &str, reason: impl Into<String>) -> Error {
    Error::Corrupt { id: id.to_owned(), reason: reason.into() }
}

fn cname(path: &Path, name: &[u8]) -> Result<std::ffi::CString, Error> {
    sys::cstring(name)
        .map_err(|_| Error::InvalidPath { path: path.to_path_buf(), reason: "contains a NUL byte".into() })
}

fn static_cname(name: &str) -> std::ffi::CString {
    // Only called with constant names and generated hex names, none of which
    // contain NUL; an empty name would simply fail the following syscall.
    sys::cstring(name.as_bytes()).unwrap_or_default()
}

/// Splits a path into its directory (`.` for a bare name) and final name.
fn split_path(path: &Path) -> Result<(&Path, &std::ffi::OsStr), Error> {
    let name = path.file_name().ok_or_else(|| Error::InvalidPath {
        path: path.to_path_buf(),
        reason: "does not name a file".into(),
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((parent, name))
}

fn is_valid_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn mtime_ns(st: &libc::stat) -> i128 {
    i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec)
}

/// True when the file is still the same inode with the same size and mtime;
/// any write to it would have changed at least the mtime.
fn unchanged(before: &libc::stat, after: &libc::stat) -> bool {
    before.st_dev == after.st_dev
        && before.st_ino == after.st_ino
        && before.st_size == after.st_size
        && mtime_ns(before) == mtime_ns(after)
}

/// Refuses directories that someone other than us could plant files in or
/// rename files out of.
fn check_private_dir(path: &Path, st: &libc::stat) -> Result<(), Error> {
    let insecure = |reason: String| Error::InsecurePermissions { path: path.to_path_buf(), reason };
    if !sys::is_dir(st) {
        return Err(insecure("not a directory".into()));
    }
    let euid = sys::geteuid();
    if st.st_uid != euid {
        return Err(insecure(format!("owned by uid {}, but running as uid {euid}", st.st_uid)));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(insecure(format!(
            "directory mode {:04o} is writable by group or others",
            st.st_mode & 0o7777
        )));
    }
    Ok(())
}

/// An encrypted quarantine store rooted at one directory.
pub struct Store {
    dir: PathBuf,
    items: PathBuf,
    keys: Keys,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).field("key", &"<redacted>").finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    ///
    /// A missing `dir` is created with mode 0700 (as are missing parents).
    /// An existing `dir` and its `items` directory must be owned by the
    /// current user and not writable by group or others. A missing key is
    /// created; an existing key must be a regular 32-byte file owned by the
    /// current user with no group or other permission bits.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err(dir))?;
        let dir_fd = sys::open_dir(dir).map_err(io_err(dir))?;
        check_private_dir(dir, &sys::fstat(dir_fd.as_fd()).map_err(io_err(dir))?)?;

        let items = dir.join(ITEMS_DIR);
        let items_c = static_cname(ITEMS_DIR);
        match sys::mkdirat(dir_fd.as_fd(), &items_c, 0o700) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&items)(e)),
        }
        // lstat, so that a symlink planted in place of `items` is refused
        // rather than followed somewhere else.
        let st = sys::lstatat(dir_fd.as_fd(), &items_c).map_err(io_err(&items))?;
        check_private_dir(&items, &st)?;

        let master = load_or_create_key(dir, dir_fd.as_fd())?;
        let keys = Keys::derive(&master);
        Ok(Store { dir: dir.to_path_buf(), items, keys })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves `path` into the store and returns the new record.
    ///
    /// The original is unlinked only after the encrypted copy and the record
    /// have been written and synced. On any error the original stays where
    /// it was and nothing is left in the store.
    pub fn quarantine(&self, path: &Path, detection: Detection<'_>) -> Result<Record, Error> {
        self.quarantine_as(path, detection, &crypto::random_hex(ID_BYTES))
    }

    fn quarantine_as(&self, path: &Path, detection: Detection<'_>, id: &str) -> Result<Record, Error> {
        let (parent, name) = split_path(path)?;
        let name_c = cname(path, name.as_bytes())?;
        // The record should say where the file really was, independent of
        // the caller's working directory or symlinked parents.
        let parent = fs::canonicalize(parent).map_err(io_err(parent))?;
        let original_path = parent.join(name);
        let parent_fd = sys::open_dir(&parent).map_err(io_err(&parent))?;

        // Check the type before opening so that devices are never opened
        // (opening some has side effects) ...
        let pre = sys::lstatat(parent_fd.as_fd(), &name_c).map_err(io_err(&original_path))?;
        if !sys::is_regular(&pre) {
            return Err(Error::NotRegularFile(original_path));
        }
        // ... and again after opening, because the name may have been
        // swapped in between. O_NOFOLLOW refuses a swapped-in symlink;
        // O_NONBLOCK keeps a swapped-in FIFO from blocking the open.
        let fd = sys::openat(
            parent_fd.as_fd(),
            &name_c,
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
            0,
        )
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                Error::NotRegularFile(original_path.clone())
            } else {
                io_err(&original_path)(e)
            }
        })?;
        let st = sys::fstat(fd.as_fd()).map_err(io_err(&original_path))?;
        if !sys::is_regular(&st) {
            return Err(Error::NotRegularFile(original_path));
        }
        if st.st_dev != pre.st_dev || st.st_ino != pre.st_ino {
            return Err(Error::Changed(original_path));
        }
        let expected_size = u64::try_from(st.st_size).map_err(|_| Error::Changed(original_path.clone()))?;
        let mut input = File::from(fd);

        let items_fd = sys::open_dir(&self.items).map_err(io_err(&self.items))?;
        let items_fd = items_fd.as_fd();

        // Encrypt into a private temporary file.
        let (mut out, tmp_bin_c, tmp_bin_path, mut tmp_bin_guard) =
            self.create_private_temp(items_fd, id, "bin")?;
        let digests = crypto::encrypt_stream(&self.keys, id, &mut input, &mut out, expected_size).map_err(
            |e| match e {
                StreamError::Read(source) => io_err(&original_path)(source),
                StreamError::Write(source) => io_err(&tmp_bin_path)(source),
                StreamError::TooLong => Error::Changed(original_path.clone()),
                StreamError::Corrupt(reason) => {
                    Error::Io { path: original_path.clone(), source: io::Error::other(reason) }
                }
            },
        )?;
        if digests.size != expected_size {
            return Err(Error::Changed(original_path));
        }
        out.sync_all().map_err(io_err(&tmp_bin_path))?;
        drop(out);

        let bin_name = format!("{id}.bin");
        let bin_c = static_cname(&bin_name);
        sys::publish_noreplace(items_fd, &tmp_bin_c, &bin_c).map_err(io_err(&self.items.join(&bin_name)))?;
        tmp_bin_guard.disarm();
        let mut bin_guard = sys::UnlinkOnDrop::new(items_fd, bin_c);

        let record = Record {
            id: id.to_owned(),
            original_path: original_path.clone(),
            size: digests.size,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime_ns: mtime_ns(&st),
            md5: digests.md5,
            sha1: digests.sha1,
            sha256: digests.sha256,
            rule: detection.rule.to_owned(),
            ruleset: detection.ruleset.to_owned(),
            quarantined_at: record::rfc3339_utc(SystemTime::now()),
        };
        let mut json_guard = self.write_record(items_fd, &record)?;
        sys::fsync(items_fd).map_err(io_err(&self.items))?;

        // Last chance to notice a change: anything written after this point
        // would be lost with the unlink, so compare once more, and make sure
        // the name still refers to the file we copied.
        let after = sys::fstat(input.as_fd()).map_err(io_err(&original_path))?;
        let now = sys::lstatat(parent_fd.as_fd(), &name_c).map_err(io_err(&original_path))?;
        if !unchanged(&st, &after) || !unchanged(&st, &now) {
            return Err(Error::Changed(original_path));
        }
        sys::unlinkat(parent_fd.as_fd(), &name_c).map_err(io_err(&original_path))?;
        json_guard.disarm();
        bin_guard.disarm();
        // The file is already out of the namespace and safely stored; failing
        // to persist the directory entry removal is not worth an error that
        // would suggest the quarantine did not happen.
        let _ = sys::fsync(parent_fd.as_fd());
        Ok(record)
    }

    /// Writes `<id>.json` (temp, sync, no-replace publish). The returned guard
    /// removes it again unless disarmed.
    fn write_record<'a>(
        &self,
        items_fd: BorrowedFd<'a>,
        record: &Record,
    ) -> Result<sys::UnlinkOnDrop<'a>, Error> {
        let json_name = format!("{}.json", record.id);
        let json_path = self.items.join(&json_name);
        let canonical = serde_json::to_vec(record).map_err(|e| io_err(&json_path)(io::Error::other(e)))?;
        let nonce: [u8; 12] = crypto::random_bytes();
        let tag = crypto::record_tag(&self.keys, &nonce, &canonical)
            .ok_or_else(|| io_err(&json_path)(io::Error::other("cannot compute record tag")))?;
        let envelope = Envelope {
            format: ENVELOPE_FORMAT,
            record: record.clone(),
            tag_nonce: hex::encode(nonce),
            tag: hex::encode(tag),
        };
        let mut bytes =
            serde_json::to_vec_pretty(&envelope).map_err(|e| io_err(&json_path)(io::Error::other(e)))?;
        bytes.push(b'\n');

        let (mut f, tmp_c, tmp_path, mut tmp_guard) =
            self.create_private_temp(items_fd, &record.id, "json")?;
        f.write_all(&bytes).map_err(io_err(&tmp_path))?;
        f.sync_all().map_err(io_err(&tmp_path))?;
        drop(f);
        let json_c = static_cname(&json_name);
        sys::publish_noreplace(items_fd, &tmp_c, &json_c).map_err(io_err(&json_path))?;
        tmp_guard.disarm();
        Ok(sys::UnlinkOnDrop::new(items_fd, json_c))
    }

    /// A new 0600 file `.<id>.<random>.<kind>.tmp` in `items/`, removed again when the guard
    /// drops unless it is disarmed once the file has been published under its real name.
    fn create_private_temp<'a>(
        &self,
        items_fd: std::os::fd::BorrowedFd<'a>,
        id: &str,
        kind: &str,
    ) -> Result<(File, std::ffi::CString, PathBuf, sys::UnlinkOnDrop<'a>), Error> {
        let name = format!(".{id}.{}.{kind}.tmp", crypto::random_hex(4));
        let path = self.items.join(&name);
        let cname = static_cname(&name);
        let fd = sys::openat(
            items_fd,
            &cname,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o600,
        )
        .map_err(io_err(&path))?;
        let guard = sys::UnlinkOnDrop::new(items_fd, cname.clone());
        Ok((File::from(fd), cname, path, guard))
    }

    /// Reads and authenticates `<id>.json` for a full, valid id.
    fn load_record(&self, id: &str) -> Result<Record, Error> {
        let path = self.items.join(format!("{id}.json"));
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => Error::NotFound(id.to_owned()),
                _ => io_err(&path)(e),
            })?;
        let meta = f.metadata().map_err(io_err(&path))?;
        if !meta.is_file() {
            return Err(corrupt(id, "record is not a regular file"));
        }
        let mut bytes = Vec::new();
        f.take(MAX_RECORD_BYTES + 1).read_to_end(&mut bytes).map_err(io_err(&path))?;
        if bytes.len() as u64 > MAX_RECORD_BYTES {
            return Err(corrupt(id, "record file is implausibly large"));
        }
        let env: Envelope =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(id, format!("unreadable record: {e}")))?;
        if env.format != ENVELOPE_FORMAT {
            return Err(corrupt(id, format!("unsupported record format {}", env.format)));
        }
        let nonce: [u8; 12] = hex::decode(&env.tag_nonce)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| corrupt(id, "record tag nonce is malformed"))?;
        let tag: [u8; TAG] = hex::decode(&env.tag)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| corrupt(id, "record tag is malformed"))?;
        // The tag covers the record's canonical serialization, so formatting
        // changes are harmless but any change of a value is not.
        let canonical = serde_json::to_vec(&env.record).map_err(|e| corrupt(id, e.to_string()))?;
        if !crypto::record_tag_ok(&self.keys, &nonce, &canonical, &tag) {
            return Err(corrupt(
                id,
                "record failed authentication (modified, or written with a different key)",
            ));
        }
        if env.record.id != id {
            return Err(corrupt(id, "record belongs to a different id than its file name"));
        }
        match fs::symlink_metadata(self.items.join(format!("{id}.bin"))) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(corrupt(id, "encrypted data is not a regular file")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(corrupt(id, "encrypted data file is missing"))
            }
            Err(e) => return Err(io_err(&self.items.join(format!("{id}.bin")))(e)),
        }
        Ok(env.record)
    }

    /// Ids that have a record file, plus problems with unexpected names.
    fn scan_ids(&self) -> Result<(Vec<String>, Vec<Error>), Error> {
        let mut ids = Vec::new();
        let mut problems = Vec::new();
        for entry in fs::read_dir(&self.items).map_err(io_err(&self.items))? {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    problems.push(io_err(&self.items)(e));
                    continue;
                }
            };
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if is_valid_id(stem) {
                ids.push(stem.to_owned());
            } else {
                problems.push(corrupt(stem, "record file name is not a quarantine id"));
            }
        }
        Ok((ids, problems))
    }

    fn scan(&self) -> Result<(Vec<Record>, Vec<Error>), Error> {
        let (ids, mut problems) = self.scan_ids()?;
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            match self.load_record(&id) {
                Ok(r) => records.push(r),
                // Deleted or restored by someone else since the directory
                // was read: not a problem, just gone.
                Err(Error::NotFound(_)) => {}
                Err(e) => problems.push(e),
            }
        }
        records.sort_by(|a, b| a.quarantined_at.cmp(&b.quarantined_at).then_with(|| a.id.cmp(&b.id)));
        Ok((records, problems))
    }

    /// All readable records, sorted by quarantine time then id. Unreadable
    /// records are left out; see [`Store::list_with_problems`].
    pub fn list(&self) -> Result<Vec<Record>, Error> {
        self.scan().map(|(records, _)| records)
    }

    /// Like [`Store::list`], but also reports records that could not be read
    /// or failed authentication (and a failure to read the store at all).
    pub fn list_with_problems(&self) -> (Vec<Record>, Vec<Error>) {
        match self.scan() {
            Ok(r) => r,
            Err(e) => (Vec::new(), vec![e]),
        }
    }

    /// Looks up a record by id or by a unique prefix of at least 4 hex
    /// characters (case-insensitive).
    pub fn get(&self, id: &str) -> Result<Record, Error> {
        let prefix = id.to_ascii_lowercase();
        // Validating before touching the file system also keeps ids like
        // "../../x" from ever becoming paths.
        if prefix.len() < MIN_PREFIX
            || prefix.len() > ID_LEN
            || !prefix.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(Error::InvalidId(id.to_owned()));
        }
        if prefix.len() == ID_LEN {
            return self.load_record(&prefix);
        }
        let (ids, _) = self.scan_ids()?;
        let matches: Vec<&String> = ids.iter().filter(|i| i.starts_with(&prefix)).collect();
        match matches.as_slice() {
            [] => Err(Error::NotFound(id.to_owned())),
            [one] => self.load_record(one),
            many => Err(Error::Ambiguous { prefix: id.to_owned(), count: many.len() }),
        }
    }

    /// Restores an item to its original path and removes it from the store.
    /// Refuses with [`Error::TargetExists`] if anything exists at that path.
    /// On any failure before the file is in place, the item stays in the
    /// store and nothing is left at the target.
    pub fn restore(&self, id: &str) -> Result<Record, Error> {
        let record = self.get(id)?;
        let target = record.original_path.clone();
        self.restore_record(record, &target)
    }

    /// Like [`Store::restore`], but to `target` instead of the original path.
    pub fn restore_to(&self, id: &str, target: &Path) -> Result<Record, Error> {
        let record = self.get(id)?;
        self.restore_record(record, target)
    }

    fn restore_record(&self, record: Record, target: &Path) -> Result<Record, Error> {
        let id = record.id.as_str();
        let mtime_sec = libc::time_t::try_from(record.mtime_ns.div_euclid(1_000_000_000))
            .map_err(|_| corrupt(id, "recorded mtime is out of range"))?;
        let mtime_nsec = libc::c_long::try_from(record.mtime_ns.rem_euclid(1_000_000_000))
            .map_err(|_| corrupt(id, "recorded mtime is out of range"))?;
        let mode = libc::mode_t::try_from(record.mode & 0o7777)
            .map_err(|_| corrupt(id, "recorded mode is out of range"))?;

        let (parent, name) = split_path(target)?;
        let name_c = cname(target, name.as_bytes())?;
        let parent_fd = sys::open_dir(parent).map_err(io_err(parent))?;
        let parent_fd = parent_fd.as_fd();
        // An early check gives a clear error before doing the work; the
        // no-replace publish at the end is what actually guarantees that a
        // file appearing meanwhile is not overwritten.
        match sys::lstatat(parent_fd, &name_c) {
            Ok(_) => return Err(Error::TargetExists(target.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(target)(e)),
        }

        let bin_path = self.items.join(format!("{id}.bin"));
        let mut bin = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&bin_path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => corrupt(id, "encrypted data file is missing"),
                _ => io_err(&bin_path)(e),
            })?;

        // 0600 until verified: the plaintext must not be usable by anyone
        // else, nor executable, before its integrity is established.
        let tmp = format!(".mamori-restore.{id}.{}.tmp", crypto::random_hex(4));
        let tmp_c = static_cname(&tmp);
        let tmp_path = parent.join(&tmp);
        let out = sys::openat(
            parent_fd,
            &tmp_c,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o600,
        )
        .map_err(io_err(&tmp_path))?;
        let mut tmp_guard = sys::UnlinkOnDrop::new(parent_fd, tmp_c.clone());
        let mut out = File::from(out);
        let (size, sha256) =
            crypto::decrypt_stream(&self.keys, id, &mut bin, &mut out).map_err(|e| match e {
                StreamError::Read(source) => io_err(&bin_path)(source),
                StreamError::Write(source) => io_err(&tmp_path)(source),
                StreamError::TooLong => corrupt(id, "data longer than expected"),
                StreamError::Corrupt(reason) => corrupt(id, reason),
            })?;
        if size != record.size || sha256 != record.sha256 {
            return Err(corrupt(id, "decrypted content does not match the recorded size and sha256"));
        }

        // Owner before mode: chown clears set-id bits.
        if let Err(source) = sys::fchown(out.as_fd(), record.uid, record.gid) {
            // Without privilege chown fails even when nothing would change;
            // only a real difference in ownership is an error.
            let st = sys::fstat(out.as_fd()).map_err(io_err(&tmp_path))?;
            if st.st_uid != record.uid || st.st_gid != record.gid {
                return Err(Error::Ownership {
                    path: target.to_path_buf(),
                    uid: record.uid,
                    gid: record.gid,
                    source,
                });
            }
        }
        sys::fchmod(out.as_fd(), mode).map_err(io_err(&tmp_path))?;
        sys::set_mtime(out.as_fd(), mtime_sec, mtime_nsec).map_err(io_err(&tmp_path))?;
        out.sync_all().map_err(io_err(&tmp_path))?;
        drop(out);

        sys::publish_noreplace(parent_fd, &tmp_c, &name_c).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                Error::TargetExists(target.to_path_buf())
            } else {
                io_err(target)(e)
            }
        })?;
        tmp_guard.disarm();
        sys::fsync(parent_fd).map_err(io_err(parent))?;

        let items_fd = sys::open_dir(&self.items).map_err(|source| Error::RemoveAfterRestore {
            id: id.to_owned(),
            path: target.to_path_buf(),
            source,
        })?;
        remove_item_files(items_fd.as_fd(), id).map_err(|source| Error::RemoveAfterRestore {
            id: id.to_owned(),
            path: target.to_path_buf(),
            source,
        })?;
        Ok(record)
    }

    /// Permanently removes an item (record and encrypted data).
    pub fn delete(&self, id: &str) -> Result<Record, Error> {
        let record = self.get(id)?;
        let items_fd = sys::open_dir(&self.items).map_err(io_err(&self.items))?;
        remove_item_files(items_fd.as_fd(), &record.id)
            .map_err(io_err(&self.items.join(format!("{}.json", record.id))))?;
        Ok(record)
    }
}

/// Removes the record first so that an interruption leaves at worst an
/// orphaned data file (invisible, harmless) and never a listed record whose
/// data is gone.
fn remove_item_files(items_fd: BorrowedFd<'_>, id: &str) -> io::Result<()> {
    sys::unlinkat(items_fd, &static_cname(&format!("{id}.json")))?;
    match sys::unlinkat(items_fd, &static_cname(&format!("{id}.bin"))) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    sys::fsync(items_fd)
}

fn load_or_create_key(dir: &Path, dir_fd: BorrowedFd<'_>) -> Result<[u8; KEY_LEN], Error> {
    let key_path = dir.join(KEY_FILE);
    let key_c = static_cname(KEY_FILE);
    if let Some(key) = read_key(&key_path, dir_fd, &key_c)? {
        return Ok(key);
    }

    // Written in full under a temporary name and then linked into place
    // without replacing: a concurrent opener either sees no key or a
    // complete one, and if two race, both end up using the winner's key.
    let key: [u8; KEY_LEN] = crypto::random_bytes();
    let tmp = format!(".key.{}.tmp", crypto::random_hex(8));
    let tmp_c = static_cname(&tmp);
    let tmp_path = dir.join(&tmp);
    let fd =
        sys::openat(dir_fd, &tmp_c, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW, 0o600)
            .map_err(io_err(&tmp_path))?;
    let _tmp_guard = sys::UnlinkOnDrop::new(dir_fd, tmp_c.clone());
    // The umask could have produced something stricter than 0600 (e.g. 0400);
    // state the intended mode explicitly.
    sys::fchmod(fd.as_fd(), 0o600).map_err(io_err(&tmp_path))?;
    let mut f = File::from(fd);
    f.write_all(&key).map_err(io_err(&tmp_path))?;
    f.sync_all().map_err(io_err(&tmp_path))?;
    drop(f);
    match sys::publish_noreplace(dir_fd, &tmp_c, &key_c) {
        Ok(()) => {
            sys::fsync(dir_fd).map_err(io_err(dir))?;
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_key(&key_path, dir_fd, &key_c)?
            .ok_or_else(|| Error::InvalidKey {
                path: key_path.clone(),
                reason: "disappeared while the store was being opened".into(),
            }),
        Err(e) => Err(io_err(&key_path)(e)),
    }
}

/// Reads an existing key; `Ok(None)` if there is none.
fn read_key(
    path: &Path,
    dir_fd: BorrowedFd<'_>,
    name: &std::ffi::CStr,
) -> Result<Option<[u8; KEY_LEN]>, Error> {
    let invalid = |reason: String| Error::InvalidKey { path: path.to_path_buf(), reason };
    // O_NONBLOCK: a FIFO planted as the key must not hang open().
    let fd = match sys::openat(
        dir_fd,
        name,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
        0,
    ) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(invalid("is a symbolic link".into())),
        Err(e) => return Err(io_err(path)(e)),
    };
    let st = sys::fstat(fd.as_fd()).map_err(io_err(path))?;
    if !sys::is_regular(&st) {
        return Err(invalid("is not a regular file".into()));
    }
    let euid = sys::geteuid();
    if st.st_uid != euid {
        return Err(Error::InsecurePermissions {
            path: path.to_path_buf(),
            reason: format!("key file is owned by uid {}, but running as uid {euid}", st.st_uid),
        });
    }
    if st.st_mode & 0o077 != 0 {
        return Err(Error::InsecurePermissions {
            path: path.to_path_buf(),
            reason: format!(
                "key file mode is {:04o}; it must not be accessible by group or others (chmod 600)",
                st.st_mode & 0o7777
            ),
        });
    }
    if st.st_size != KEY_LEN as libc::off_t {
        return Err(invalid(format!("is {} bytes long, expected {KEY_LEN}", st.st_size)));
    }
    let mut key = [0u8; KEY_LEN];
    File::from(fd).read_exact(&mut key).map_err(io_err(path))?;
    Ok(Some(key))
}
