//! What is recorded about one path, and how it is observed from the file system.
//!
//! Only regular files are ever opened, always `O_NOFOLLOW | O_NONBLOCK`, and the opened file is
//! re-checked with `fstat`: FIFOs, sockets and devices are recorded from `lstat` alone, so
//! the walk can never block on them. Symlinks are never followed; their target is recorded.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Problem, ProblemKind};

/// A baseline row whose file changed less than this long before it was recorded is hashed
/// again at the next check even when its key looks unchanged: a second write inside the same
/// timestamp tick would not move `mtime`/`ctime`.
pub(crate) const SETTLE_NS: i64 = 2_000_000_000;

/// The type of a file system object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl Kind {
    pub(crate) fn code(self) -> i64 {
        match self {
            Kind::File => 0,
            Kind::Dir => 1,
            Kind::Symlink => 2,
            Kind::Fifo => 3,
            Kind::Socket => 4,
            Kind::CharDevice => 5,
            Kind::BlockDevice => 6,
        }
    }

    pub(crate) fn from_code(code: i64) -> Option<Kind> {
        Some(match code {
            0 => Kind::File,
            1 => Kind::Dir,
            2 => Kind::Symlink,
            3 => Kind::Fifo,
            4 => Kind::Socket,
            5 => Kind::CharDevice,
            6 => Kind::BlockDevice,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
            Kind::CharDevice => "char_device",
            Kind::BlockDevice => "block_device",
        }
    }

    fn of(meta: &Metadata) -> Kind {
        let t = meta.file_type();
        if t.is_file() {
            Kind::File
        } else if t.is_dir() {
            Kind::Dir
        } else if t.is_symlink() {
            Kind::Symlink
        } else if t.is_fifo() {
            Kind::Fifo
        } else if t.is_socket() {
            Kind::Socket
        } else if t.is_char_device() {
            Kind::CharDevice
        } else {
            Kind::BlockDevice
        }
    }
}

/// The recorded state of one path (the baseline of a file, or what a check found).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub kind: Kind,
    pub size: u64,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
    /// BLAKE3 of the content (regular files that could be read).
    pub hash: Option<[u8; 32]>,
    /// BLAKE3 over the sorted extended attributes (names and values); `None` when there are none.
    pub xattrs: Option<[u8; 32]>,
    /// The target of a symlink, as stored in the link.
    pub target: Option<PathBuf>,
}

impl Entry {
    pub(crate) fn from_metadata(meta: &Metadata) -> Entry {
        Entry {
            kind: Kind::of(meta),
            size: meta.size(),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime_ns: meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec()),
            ctime_ns: meta.ctime().saturating_mul(1_000_000_000).saturating_add(meta.ctime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
            hash: None,
            xattrs: None,
            target: None,
        }
    }

    /// Same file version: (dev, inode, size, mtime, ctime) are equal.
    pub(crate) fn same_key(&self, other: &Entry) -> bool {
        self.kind == other.kind
            && self.dev == other.dev
            && self.ino == other.ino
            && self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.ctime_ns == other.ctime_ns
    }
}

/// What observing one path gave.
pub(crate) struct Observed {
    pub entry: Option<Entry>,
    pub problem: Option<Problem>,
    /// The content was read (not taken over from the baseline).
    pub hashed: bool,
    pub bytes: u64,
}

/// A previous record of the path: the entry and when it was recorded.
pub(crate) struct Prev<'a> {
    pub entry: &'a Entry,
    pub recorded_ns: i64,
}

/// Observes `path` (never following it). The content hash is taken over from `prev` when the
/// file key is unchanged, `prev` was recorded well after the file's last change and not
/// `paranoid`; otherwise the file is read.
pub(crate) fn observe(path: &Path, prev: Option<Prev<'_>>, paranoid: bool, buf: &mut Vec<u8>) -> Observed {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => {
            return Observed { entry: None, problem: Some(io_problem(path, &e)), hashed: false, bytes: 0 }
        }
    };
    let mut entry = Entry::from_metadata(&meta);
    let mut problem = None;
    match entry.kind {
        Kind::File => {
            if let Some(p) = &prev {
                if !paranoid
                    && p.entry.same_key(&entry)
                    && p.entry.hash.is_some()
                    && p.entry.ctime_ns.saturating_add(SETTLE_NS) < p.recorded_ns
                {
                    entry.hash = p.entry.hash;
                    entry.xattrs = p.entry.xattrs;
                    return Observed { entry: Some(entry), problem: None, hashed: false, bytes: 0 };
                }
            }
            match hash_file(path, buf) {
                Ok((meta, hash, xattrs, bytes)) => {
                    // Describe the file that was actually read (it may have been replaced
                    // between lstat and open).
                    let mut e = Entry::from_metadata(&meta);
                    e.hash = Some(hash);
                    e.xattrs = xattrs;
                    return Observed { entry: Some(e), problem: None, hashed: true, bytes };
                }
                Err(HashError::Vanished) => {
                    return Observed {
                        entry: None,
                        problem: Some(Problem::new(path, ProblemKind::Vanished)),
                        hashed: false,
                        bytes: 0,
                    }
                }
                Err(HashError::Replaced) => {
                    // Not a regular file any more: record what is there now, without opening it.
                    return observe(path, None, paranoid, buf);
                }
                Err(HashError::Io(e)) => {
                    problem = Some(io_problem(path, &e));
                    entry.xattrs = path_xattrs(path).unwrap_or(None);
                }
            }
        }
        Kind::Symlink => {
            match std::fs::read_link(path) {
                Ok(t) => entry.target = Some(t),
                Err(e) => problem = Some(io_problem(path, &e)),
            }
            entry.xattrs = path_xattrs(path).unwrap_or(None);
        }
        Kind::Dir => match path_xattrs(path) {
            Ok(x) => entry.xattrs = x,
            Err(e) => problem = Some(io_problem(path, &e)),
        },
        k => {
            entry.xattrs = path_xattrs(path).unwrap_or(None);
            problem = Some(Problem::new(path, ProblemKind::NotRegular(k)));
        }
    }
    Observed { entry: Some(entry), problem, hashed: false, bytes: 0 }
}

pub(crate) fn io_problem(path: &Path, e: &io::Error) -> Problem {
    let kind = match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => ProblemKind::Vanished,
        Some(libc::EACCES) | Some(libc::EPERM) => ProblemKind::Unreadable(e.to_string()),
        Some(libc::ELOOP) => ProblemKind::Loop,
        _ => match e.kind() {
            io::ErrorKind::NotFound => ProblemKind::Vanished,
            io::ErrorKind::PermissionDenied => ProblemKind::Unreadable(e.to_string()),
            _ => ProblemKind::Io(e.to_string()),
        },
    };
    Problem::new(path, kind)
}

enum HashError {
    Vanished,
    Replaced,
    Io(io::Error),
}

fn open_file(path: &Path) -> io::Result<File> {
    let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    match std::fs::OpenOptions::new().read(true).custom_flags(flags | libc::O_NOATIME).open(path) {
        // O_NOATIME is only allowed to the owner (or CAP_FOWNER).
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path)
        }
        r => r,
    }
}

type Hashed = (Metadata, [u8; 32], Option<[u8; 32]>, u64);

fn hash_file(path: &Path, buf: &mut Vec<u8>) -> Result<Hashed, HashError> {
    let mut file = match open_file(path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Err(HashError::Vanished),
        // A symlink put in place of the file since lstat.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(HashError::Replaced),
        Err(e) => return Err(HashError::Io(e)),
    };
    let meta = file.metadata().map_err(HashError::Io)?;
    if !meta.file_type().is_file() {
        return Err(HashError::Replaced);
    }
    if buf.len() < 256 * 1024 {
        buf.resize(256 * 1024, 0);
    }
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    loop {
        match file.read(buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HashError::Io(e)),
        }
    }
    let xattrs = fd_xattrs(&file).map_err(HashError::Io)?;
    // Metadata after reading: a write during the read moves mtime/ctime, so the recorded key
    // never pairs an old key with new content.
    let meta = file.metadata().map_err(HashError::Io)?;
    Ok((meta, *hasher.finalize().as_bytes(), xattrs, total))
}

/// Lists and reads extended attributes through `list`/`get`, hashing sorted (name, value)
/// pairs. `None` when the file has none (or the file system does not support them).
fn xattrs_with(
    list: impl Fn(*mut libc::c_char, usize) -> isize,
    get: impl Fn(*const libc::c_char, *mut libc::c_void, usize) -> isize,
) -> io::Result<Option<[u8; 32]>> {
    let mut names = Vec::new();
    loop {
        let n = list(std::ptr::null_mut(), 0);
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOTSUP) => Ok(None),
                _ => Err(e),
            };
        }
        if n == 0 {
            return Ok(None);
        }
        names.resize(n as usize, 0u8);
        let m = list(names.as_mut_ptr().cast(), names.len());
        if m < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue; // grew in between
            }
            return Err(e);
        }
        names.truncate(m as usize);
        break;
    }
    let mut list: Vec<&[u8]> = names.split(|b| *b == 0).filter(|n| !n.is_empty()).collect();
    list.sort_unstable();
    let mut hasher = blake3::Hasher::new();
    let mut value = Vec::new();
    for name in list {
        let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        let len = loop {
            let n = get(cname.as_ptr(), std::ptr::null_mut(), 0);
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENODATA) {
                    break None; // removed in between
                }
                return Err(e);
            }
            value.resize(n as usize, 0);
            let m = get(cname.as_ptr(), value.as_mut_ptr().cast(), value.len());
            if m < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::ERANGE) => continue,
                    Some(libc::ENODATA) => break None,
                    _ => return Err(e),
                }
            }
            break Some(m as usize);
        };
        let Some(len) = len else { continue };
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name);
        hasher.update(&(len as u64).to_le_bytes());
        hasher.update(&value[..len]);
    }
    Ok(Some(*hasher.finalize().as_bytes()))
}

fn fd_xattrs(file: &File) -> io::Result<Option<[u8; 32]>> {
    let fd = file.as_raw_fd();
    // SAFETY: the buffers passed by `xattrs_with` are valid for the lengths given; fd is open.
    xattrs_with(
        |buf, len| unsafe { libc::flistxattr(fd, buf, len) },
        |name, buf, len| unsafe { libc::fgetxattr(fd, name, buf, len) },
    )
}

/// Extended attributes of the path itself (never following a symlink, never opening it).
pub(crate) fn path_xattrs(path: &Path) -> io::Result<Option<[u8; 32]>> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let p = c.as_ptr();
    // SAFETY: `p` is a valid NUL-terminated path; buffers are valid for the lengths given.
    xattrs_with(
        |buf, len| unsafe { libc::llistxattr(p, buf, len) },
        |name, buf, len| unsafe { libc::lgetxattr(p, name, buf, len) },
    )
}

pub(crate) fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

pub(crate) fn path_from_bytes(b: Vec<u8>) -> PathBuf {
    PathBuf::from(OsString::from_vec(b))
}

pub(crate) fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// Hex of a digest.
pub fn hex(d: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(d.len() * 2);
    for b in d {
        let _ = write!(s, "{b:02x}");
    }
    s
}
