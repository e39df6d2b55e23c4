//! Thin wrappers over the `*at` family of system calls.
//!
//! The store works relative to directory file descriptors so that, once a
//! directory has been opened, a concurrent rename or symlink swap of one of
//! its ancestors cannot redirect where we create, check or unlink files.

use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

pub(crate) fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = cstring(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is NUL-terminated and outlives the call.
    let fd = cvt(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by open() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated; the mode is passed as the promoted
    // unsigned int that the variadic openat expects.
    let fd = cvt(unsafe {
        libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC, libc::c_uint::from(mode))
    })?;
    // SAFETY: `fd` was just returned by openat() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is a valid out-pointer for one `struct stat`.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat() succeeded, so it filled the structure.
    Ok(unsafe { st.assume_init() })
}

/// `lstat` relative to `dir`: symlinks are reported, never followed.
pub(crate) fn lstatat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is NUL-terminated, `st` is a valid out-pointer.
    cvt(unsafe {
        libc::fstatat(dir.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW)
    })?;
    // SAFETY: fstatat() succeeded, so it filled the structure.
    Ok(unsafe { st.assume_init() })
}

pub(crate) fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

pub(crate) fn unlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }).map(drop)
}

pub(crate) fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we borrow for the duration.
    cvt(unsafe { libc::fsync(fd.as_raw_fd()) }).map(drop)
}

pub(crate) fn fchown(fd: BorrowedFd<'_>, uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we borrow for the duration.
    cvt(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

pub(crate) fn fchmod(fd: BorrowedFd<'_>, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we borrow for the duration.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

/// Sets the modification time; the access time becomes "now" because the
/// record does not keep it and a restore is an access anyway.
pub(crate) fn set_mtime(fd: BorrowedFd<'_>, sec: libc::time_t, nsec: libc::c_long) -> io::Result<()> {
    let times = [
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW },
        libc::timespec { tv_sec: sec, tv_nsec: nsec },
    ];
    // SAFETY: `times` points to the two timespecs futimens() reads.
    cvt(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) }).map(drop)
}

pub(crate) fn geteuid() -> libc::uid_t {
    // SAFETY: geteuid() cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

pub(crate) fn is_regular(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

pub(crate) fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Gives the file `from` the name `to` within `dir`, failing with
/// `AlreadyExists` instead of replacing anything that is already called `to`.
///
/// rename() would silently overwrite, which is exactly what a restore must
/// never do, so we use renameat2(RENAME_NOREPLACE) and fall back to
/// link()+unlink() (link also refuses to overwrite) on file systems or
/// kernels without it.
pub(crate) fn publish_noreplace(dir: BorrowedFd<'_>, from: &CStr, to: &CStr) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: both names are NUL-terminated; `dir` is borrowed for the call.
        let rc = unsafe {
            libc::renameat2(
                dir.as_raw_fd(),
                from.as_ptr(),
                dir.as_raw_fd(),
                to.as_ptr(),
                libc::RENAME_NOREPLACE as _,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {}
            _ => return Err(err),
        }
    }
    // SAFETY: both names are NUL-terminated; `dir` is borrowed for the call.
    cvt(unsafe { libc::linkat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr(), 0) })?;
    // The content is already visible under its final name; a leftover
    // temporary link is untidy but harmless, so its removal is best effort.
    let _ = unlinkat(dir, from);
    Ok(())
}

/// Unlinks a name in a directory when dropped, unless disarmed. Used so that
/// every early return on an error path cleans up temporary or half-published
/// files without repeating the cleanup at each `?`.
pub(crate) struct UnlinkOnDrop<'a> {
    dir: BorrowedFd<'a>,
    name: CString,
    armed: bool,
}

impl<'a> UnlinkOnDrop<'a> {
    pub(crate) fn new(dir: BorrowedFd<'a>, name: CString) -> Self {
        UnlinkOnDrop { dir, name, armed: true }
    }

    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for UnlinkOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = unlinkat(self.dir, &self.name);
        }
    }
}
