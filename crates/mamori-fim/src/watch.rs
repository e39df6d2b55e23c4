//! Real-time change notifications for the watched trees.
//!
//! * **fanotify** (needs CAP_SYS_ADMIN): `FAN_CLASS_NOTIF | FAN_REPORT_DFID_NAME`, one
//!   filesystem mark per file system holding a watched path, for create, modify, close-write,
//!   attrib, delete and moves (files and directories). Each event carries the PID of the
//!   process that made the change; its executable is read from `/proc/PID/exe` as soon as the
//!   event is read ("who-data": a process that has already exited has no exe). The directory
//!   of each event is resolved from its file handle with `open_by_handle_at` (needs
//!   CAP_DAC_READ_SEARCH) and events outside the watched trees or excluded are dropped.
//! * **inotify** (fallback): one watch per directory, added recursively; watches are added for
//!   new and moved-in directories (whose existing contents are reported as created). No PID.
//!
//! Lost events (queue overflow, an unresolvable directory handle) are reported as
//! [`EventKind::Rescan`] of the watched roots: the consumer should run a full check.
//!
//! A reader thread polls the descriptor and sends [`WatchEvent`]s over an unbounded channel;
//! dropping the [`Watcher`] stops and joins it.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};

use crate::entry::os;
use crate::{Config, Result, Scope};

/// Which kernel interface a [`Watcher`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchMode {
    Fanotify,
    Inotify,
}

/// What happened at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Created,
    Modified,
    ClosedWrite,
    Attrib,
    Deleted,
    MovedFrom,
    MovedTo,
    /// Events were lost: check the whole tree at `path`.
    Rescan,
}

/// Which of our event kinds a kernel mask reports, for fanotify and inotify alike (the two APIs
/// name the same bits differently).
fn kinds(mask: u64, table: &'static [(u64, EventKind)]) -> impl Iterator<Item = EventKind> {
    table.iter().filter(move |(bit, _)| mask & bit != 0).map(|(_, kind)| *kind)
}

const FANOTIFY_KINDS: [(u64, EventKind); 7] = [
    (libc::FAN_CREATE, EventKind::Created),
    (libc::FAN_MODIFY, EventKind::Modified),
    (libc::FAN_CLOSE_WRITE, EventKind::ClosedWrite),
    (libc::FAN_ATTRIB, EventKind::Attrib),
    (libc::FAN_DELETE, EventKind::Deleted),
    (libc::FAN_MOVED_FROM, EventKind::MovedFrom),
    (libc::FAN_MOVED_TO, EventKind::MovedTo),
];

const INOTIFY_KINDS: [(u64, EventKind); 7] = [
    (libc::IN_CREATE as u64, EventKind::Created),
    (libc::IN_MODIFY as u64, EventKind::Modified),
    (libc::IN_CLOSE_WRITE as u64, EventKind::ClosedWrite),
    (libc::IN_ATTRIB as u64, EventKind::Attrib),
    (libc::IN_DELETE as u64, EventKind::Deleted),
    (libc::IN_MOVED_FROM as u64, EventKind::MovedFrom),
    (libc::IN_MOVED_TO as u64, EventKind::MovedTo),
];

/// One change notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    pub path: PathBuf,
    pub kind: EventKind,
    pub is_dir: bool,
    /// The process that made the change (fanotify only).
    pub pid: Option<u32>,
    /// Its executable, when it was still running when the event was read.
    pub exe: Option<PathBuf>,
    pub time: SystemTime,
}

/// A running watcher. Events arrive on [`Watcher::events`].
pub struct Watcher {
    mode: WatchMode,
    rx: Receiver<WatchEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// fanotify when permitted (root), otherwise inotify.
    pub fn start(config: &Config) -> Result<Watcher> {
        match Watcher::start_mode(config, WatchMode::Fanotify) {
            Ok(w) => Ok(w),
            Err(_) => Watcher::start_mode(config, WatchMode::Inotify),
        }
    }

    /// Starts with the given interface (an error when it is not available).
    pub fn start_mode(config: &Config, mode: WatchMode) -> Result<Watcher> {
        let scope = config.scope()?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = match mode {
            WatchMode::Fanotify => {
                let fan = Fanotify::new(scope, config.ignore_own_process)?;
                std::thread::Builder::new().name("fim-fanotify".into()).spawn(move || fan.run(&tx, &stop2))?
            }
            WatchMode::Inotify => {
                let mut ino = Inotify::new(scope)?;
                std::thread::Builder::new().name("fim-inotify".into()).spawn(move || ino.run(&tx, &stop2))?
            }
        };
        Ok(Watcher { mode, rx, stop, thread: Some(thread) })
    }

    pub fn mode(&self) -> WatchMode {
        self.mode
    }

    /// The next event; `None` once the watcher has stopped.
    pub fn recv(&self) -> Option<WatchEvent> {
        self.rx.recv().ok()
    }

    /// The next event within `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<WatchEvent> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The channel, for `select!` or iteration.
    pub fn events(&self) -> &Receiver<WatchEvent> {
        &self.rx
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Waits up to 200 ms for `fd` to be readable. `false` on timeout.
fn wait_readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut p, 1, 200) };
    rc > 0
}

/// Reads what is available on a non-blocking descriptor into `buf`.
fn read_some(fd: RawFd, buf: &mut [u8]) -> usize {
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        0
    } else {
        n as usize
    }
}

fn rescan_all(scope: &Scope, tx: &Sender<WatchEvent>) {
    for r in &scope.roots {
        let _ = tx.send(WatchEvent {
            path: r.clone(),
            kind: EventKind::Rescan,
            is_dir: true,
            pid: None,
            exe: None,
            time: SystemTime::now(),
        });
    }
}

// ---------------------------------------------------------------------------------------------
// fanotify

struct Fanotify {
    fd: OwnedFd,
    /// One descriptor per watched file system (by fsid), for `open_by_handle_at`.
    mounts: Vec<([u8; 8], OwnedFd)>,
    scope: Scope,
    own_pid: Option<u32>,
    /// Directory handles (fsid + type + handle bytes) already resolved to paths: saves an
    /// `open_by_handle_at` per event, and gives a path to events in a directory that is gone
    /// by the time they are read (`rm -rf`). Cleared whenever a directory is moved or deleted
    /// (paths may have changed), on overflow, and when full.
    dirs: std::cell::RefCell<HashMap<Vec<u8>, PathBuf>>,
}

const DIRS_MAX: usize = 65536;

const FAN_MASK: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MOVED_FROM
    | libc::FAN_MOVED_TO
    | libc::FAN_MODIFY
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_ATTRIB
    | libc::FAN_ONDIR;

fn fsid_of(fd: RawFd) -> io::Result<[u8; 8]> {
    // SAFETY: statfs is plain data; `s` is a valid out-pointer and `fd` is open.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(fd, &mut s) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = [0u8; 8];
    // SAFETY: `f_fsid` is 8 bytes of plain data (two ints); its fields are private in libc.
    unsafe {
        std::ptr::copy_nonoverlapping((&s.f_fsid as *const libc::fsid_t).cast::<u8>(), out.as_mut_ptr(), 8)
    };
    Ok(out)
}

impl Fanotify {
    fn new(scope: Scope, ignore_own: bool) -> Result<Fanotify> {
        // SAFETY: plain syscall; the result is checked and owned below.
        let fd = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK | libc::FAN_REPORT_DFID_NAME,
                (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut mounts: Vec<([u8; 8], OwnedFd)> = Vec::new();
        for root in &scope.roots {
            let c = cstr(root)?;
            // open_by_handle_at refuses O_PATH descriptors: open the directory (or, for a
            // root that is not one, its parent) for reading.
            let is_dir = std::fs::symlink_metadata(root).map(|m| m.is_dir()).unwrap_or(false);
            let dir = if is_dir { root.as_path() } else { root.parent().unwrap_or(Path::new("/")) };
            let cdir = cstr(dir)?;
            // SAFETY: valid path; the result is checked.
            let mfd = unsafe {
                libc::open(
                    cdir.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                )
            };
            if mfd < 0 {
                continue; // a missing root: nothing to mark (a check reports it)
            }
            // SAFETY: freshly opened descriptor.
            let mfd = unsafe { OwnedFd::from_raw_fd(mfd) };
            let fsid = fsid_of(mfd.as_raw_fd())?;
            if mounts.iter().any(|(f, _)| *f == fsid) {
                continue;
            }
            // SAFETY: valid descriptors and path.
            let rc = unsafe {
                libc::fanotify_mark(
                    fd.as_raw_fd(),
                    libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM | libc::FAN_MARK_DONT_FOLLOW,
                    FAN_MASK,
                    libc::AT_FDCWD,
                    c.as_ptr(),
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error().into());
            }
            mounts.push((fsid, mfd));
        }
        let own_pid = if ignore_own { Some(std::process::id()) } else { None };
        Ok(Fanotify { fd, mounts, scope, own_pid, dirs: Default::default() })
    }

    fn run(&self, tx: &Sender<WatchEvent>, stop: &AtomicBool) {
        // u64 storage: the kernel writes 8-byte aligned records.
        let mut storage = vec![0u64; 8192];
        while !stop.load(Ordering::Relaxed) {
            if !wait_readable(self.fd.as_raw_fd()) {
                continue;
            }
            // SAFETY: reinterpreting the u64 buffer as bytes.
            let buf = unsafe {
                std::slice::from_raw_parts_mut(storage.as_mut_ptr().cast::<u8>(), storage.len() * 8)
            };
            let n = read_some(self.fd.as_raw_fd(), buf);
            self.parse(&buf[..n], tx);
        }
    }

    fn parse(&self, buf: &[u8], tx: &Sender<WatchEvent>) {
        let meta_len = std::mem::size_of::<libc::fanotify_event_metadata>();
        let mut off = 0;
        while off + meta_len <= buf.len() {
            // SAFETY: at least `meta_len` bytes remain; read_unaligned has no alignment need.
            let meta: libc::fanotify_event_metadata =
                unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
            let len = meta.event_len as usize;
            if meta.vers != libc::FANOTIFY_METADATA_VERSION || len < meta_len || off + len > buf.len() {
                break;
            }
            let event = &buf[off..off + len];
            off += len;
            if meta.fd >= 0 {
                // SAFETY: the kernel gave us this descriptor; close it (not used in FID mode).
                drop(unsafe { OwnedFd::from_raw_fd(meta.fd) });
            }
            if meta.mask & libc::FAN_Q_OVERFLOW != 0 {
                self.dirs.borrow_mut().clear();
                rescan_all(&self.scope, tx);
                continue;
            }
            let dir_moved = meta.mask & libc::FAN_ONDIR != 0
                && meta.mask & (libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO | libc::FAN_DELETE) != 0;
            let pid = u32::try_from(meta.pid).ok().filter(|p| *p > 0);
            if pid.is_some() && pid == self.own_pid {
                continue;
            }
            // `None`: the directory was gone before any event in it was read. A watched directory
            // that is removed is reported by the event in its parent, which covers its subtree.
            let path = self.event_path(&event[meta.metadata_len as usize..]);
            if dir_moved {
                self.dirs.borrow_mut().clear();
            }
            let Some(path) = path else { continue };
            if !self.scope.contains(&path) {
                continue;
            }
            let exe = pid.and_then(|p| std::fs::read_link(format!("/proc/{p}/exe")).ok());
            let time = SystemTime::now();
            let is_dir = meta.mask & libc::FAN_ONDIR != 0;
            for kind in kinds(meta.mask, &FANOTIFY_KINDS) {
                let _ = tx.send(WatchEvent { path: path.clone(), kind, is_dir, pid, exe: exe.clone(), time });
            }
        }
    }

    /// The path of an event from its DFID / DFID_NAME info record.
    fn event_path(&self, mut info: &[u8]) -> Option<PathBuf> {
        while info.len() >= 4 {
            let info_type = info[0];
            let len = u16::from_ne_bytes([info[2], info[3]]) as usize;
            if len < 4 || len > info.len() {
                return None;
            }
            let rec = &info[..len];
            info = &info[len..];
            if info_type != libc::FAN_EVENT_INFO_TYPE_DFID_NAME && info_type != libc::FAN_EVENT_INFO_TYPE_DFID
            {
                continue;
            }
            // header (4) + fsid (8) + file_handle { handle_bytes: u32, handle_type: i32, f_handle[] }
            if rec.len() < 20 {
                return None;
            }
            let fsid: [u8; 8] = rec[4..12].try_into().ok()?;
            let hbytes = u32::from_ne_bytes(rec[12..16].try_into().ok()?) as usize;
            let htype = i32::from_ne_bytes(rec[16..20].try_into().ok()?);
            let handle = rec.get(20..20 + hbytes)?;
            let name = if info_type == libc::FAN_EVENT_INFO_TYPE_DFID_NAME {
                let rest = &rec[20 + hbytes..];
                let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
                &rest[..end]
            } else {
                &[][..]
            };
            let mut key = Vec::with_capacity(12 + handle.len());
            key.extend_from_slice(&fsid);
            key.extend_from_slice(&htype.to_ne_bytes());
            key.extend_from_slice(handle);
            let cached = self.dirs.borrow().get(&key).cloned();
            let dir = match cached {
                Some(dir) => dir,
                None => {
                    let dir = self.resolve(&fsid, htype, handle)?;
                    let mut dirs = self.dirs.borrow_mut();
                    if dirs.len() >= DIRS_MAX {
                        dirs.clear();
                    }
                    dirs.insert(key, dir.clone());
                    dir
                }
            };
            return Some(if name.is_empty() || name == b"." { dir } else { dir.join(os(name)) });
        }
        None
    }

    fn resolve(&self, fsid: &[u8; 8], htype: i32, handle: &[u8]) -> Option<PathBuf> {
        let (_, mfd) = self.mounts.iter().find(|(f, _)| f == fsid)?;
        // struct file_handle, built in u32 storage for its alignment.
        let mut fh = vec![0u32; 2 + handle.len().div_ceil(4)];
        fh[0] = handle.len() as u32;
        fh[1] = htype as u32;
        // SAFETY: `fh` has room for the 8-byte header plus `handle.len()` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(handle.as_ptr(), fh.as_mut_ptr().add(2).cast::<u8>(), handle.len());
        }
        // SAFETY: `fh` is a well-formed file_handle; the result is checked and owned.
        let fd = unsafe {
            libc::open_by_handle_at(
                mfd.as_raw_fd(),
                fh.as_mut_ptr().cast::<libc::file_handle>(),
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: freshly opened descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
    }
}

// ---------------------------------------------------------------------------------------------
// inotify

struct Inotify {
    fd: OwnedFd,
    wds: HashMap<i32, PathBuf>,
    scope: Scope,
}

const IN_MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_ATTRIB
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DONT_FOLLOW;

impl Inotify {
    fn new(scope: Scope) -> Result<Inotify> {
        // SAFETY: plain syscall; checked and owned below.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut me = Inotify { fd, wds: HashMap::new(), scope };
        for root in me.scope.roots.clone() {
            me.add_tree(&root, None);
        }
        Ok(me)
    }

    fn add_watch(&mut self, path: &Path) -> bool {
        let Ok(c) = cstr(path) else { return false };
        // SAFETY: valid descriptor and path.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), IN_MASK) };
        if wd < 0 {
            return false;
        }
        self.wds.insert(wd, path.to_path_buf());
        true
    }

    /// Watches `path` (and every directory under it). With `tx`, whatever is found under it is
    /// reported as created (it appeared before its watch existed).
    fn add_tree(&mut self, path: &Path, tx: Option<&Sender<WatchEvent>>) {
        if self.scope.is_excluded(path) {
            return;
        }
        let Ok(meta) = std::fs::symlink_metadata(path) else { return };
        self.add_watch(path);
        if !meta.is_dir() {
            return;
        }
        let Ok(rd) = std::fs::read_dir(path) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if self.scope.is_excluded(&p) {
                continue;
            }
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if let Some(tx) = tx {
                let _ = tx.send(WatchEvent {
                    path: p.clone(),
                    kind: EventKind::Created,
                    is_dir,
                    pid: None,
                    exe: None,
                    time: SystemTime::now(),
                });
            }
            if is_dir {
                self.add_tree(&p, tx);
            }
        }
    }

    fn forget_tree(&mut self, path: &Path) {
        let gone: Vec<i32> = self.wds.iter().filter(|(_, p)| p.starts_with(path)).map(|(w, _)| *w).collect();
        for wd in gone {
            // SAFETY: valid descriptor; a stale wd only gives EINVAL.
            unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
            self.wds.remove(&wd);
        }
    }

    fn run(&mut self, tx: &Sender<WatchEvent>, stop: &AtomicBool) {
        let mut storage = vec![0u64; 8192];
        while !stop.load(Ordering::Relaxed) {
            if !wait_readable(self.fd.as_raw_fd()) {
                continue;
            }
            // SAFETY: reinterpreting the u64 buffer as bytes.
            let buf = unsafe {
                std::slice::from_raw_parts_mut(storage.as_mut_ptr().cast::<u8>(), storage.len() * 8)
            };
            let n = read_some(self.fd.as_raw_fd(), buf);
            let buf = buf[..n].to_vec();
            self.parse(&buf, tx);
        }
    }

    fn parse(&mut self, buf: &[u8], tx: &Sender<WatchEvent>) {
        let hdr = std::mem::size_of::<libc::inotify_event>();
        let mut off = 0;
        while off + hdr <= buf.len() {
            // SAFETY: at least `hdr` bytes remain; unaligned read.
            let ev: libc::inotify_event = unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
            let name_bytes = buf.get(off + hdr..off + hdr + ev.len as usize).unwrap_or(&[]);
            off += hdr + ev.len as usize;
            if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                rescan_all(&self.scope, tx);
                continue;
            }
            if ev.mask & libc::IN_IGNORED != 0 {
                self.wds.remove(&ev.wd);
                continue;
            }
            let Some(dir) = self.wds.get(&ev.wd) else { continue };
            let end = name_bytes.iter().position(|b| *b == 0).unwrap_or(name_bytes.len());
            let name = &name_bytes[..end];
            let path = if name.is_empty() { dir.clone() } else { dir.join(os(name)) };
            if !self.scope.contains(&path) {
                continue;
            }
            let is_dir = ev.mask & libc::IN_ISDIR != 0;
            let time = SystemTime::now();
            for kind in kinds(u64::from(ev.mask), &INOTIFY_KINDS) {
                let _ = tx.send(WatchEvent { path: path.clone(), kind, is_dir, pid: None, exe: None, time });
            }
            if is_dir && ev.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
                self.add_tree(&path, Some(tx));
            }
            if is_dir && ev.mask & (libc::IN_MOVED_FROM | libc::IN_DELETE) != 0 {
                self.forget_tree(&path);
            }
        }
    }
}
