//! The isolation state file: `<state_dir>/isolation.json`, mode 0600, replaced atomically
//! (`isolation.json.tmp`, fsync, rename, fsync the directory). Present = the host is meant to be
//! isolated with this plan.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IsolateError, Result};
use crate::plan::IsolationPlan;

pub const STATE_FILE: &str = "isolation.json";
const STATE_VERSION: u32 = 1;
const MAX_STATE_BYTES: u64 = 4 << 20;

/// What the state file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsolationState {
    pub version: u32,
    /// The verified plan in force.
    pub plan: IsolationPlan,
    /// When it was (last) applied, seconds since the Unix epoch.
    pub applied_at: u64,
    /// `nft list table inet mamori_isolate` right after applying: `status` compares the live
    /// table against it, so a deleted or edited table is noticed.
    pub listing: String,
}

impl IsolationState {
    pub(crate) fn new(plan: IsolationPlan, listing: String) -> Self {
        let applied_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        IsolationState { version: STATE_VERSION, plan, applied_at, listing }
    }
}

pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IsolateError + '_ {
    move |source| IsolateError::State { path: path.to_path_buf(), source }
}

/// Reads the state; `Ok(None)` when there is none.
pub(crate) fn read(dir: &Path) -> Result<Option<IsolationState>> {
    let path = path(dir);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let mut text = String::new();
    file.take(MAX_STATE_BYTES + 1).read_to_string(&mut text).map_err(io_err(&path))?;
    let corrupt = |reason: String| IsolateError::StateCorrupt { path: path.clone(), reason };
    if text.len() as u64 > MAX_STATE_BYTES {
        return Err(corrupt("larger than 4 MiB".into()));
    }
    let state: IsolationState = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    if state.version != STATE_VERSION {
        return Err(corrupt(format!("unknown version {}", state.version)));
    }
    state.plan.validate().map_err(|e| corrupt(e.to_string()))?;
    Ok(Some(state))
}

/// Writes the state atomically with mode 0600 (the directory is created 0700 if missing).
pub(crate) fn write(dir: &Path, state: &IsolationState) -> Result<()> {
    let path = path(dir);
    ensure_dir(dir)?;
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let _ = fs::remove_file(&tmp);
    let json = serde_json::to_vec_pretty(state).map_err(|e| io_err(&path)(std::io::Error::other(e)))?;
    let mut f =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io_err(&tmp))?;
    f.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io_err(&tmp))?;
    f.write_all(&json).and_then(|()| f.sync_all()).map_err(io_err(&tmp))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)
}

fn ensure_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err(dir))?;
    }
    Ok(())
}

pub const LOCK_FILE: &str = "isolation.lock";

/// An exclusive `flock(2)` on `<state_dir>/isolation.lock`, held while isolating, releasing or
/// restoring, so an agent and an admin command never interleave (released on drop).
pub(crate) struct Lock(#[allow(dead_code)] File);

pub(crate) fn lock(dir: &Path) -> Result<Lock> {
    ensure_dir(dir)?;
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(&path))?;
    loop {
        // SAFETY: flock on a descriptor we own.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(Lock(f));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(io_err(&path)(e));
        }
    }
}

/// Removes the state file (no error if absent).
pub(crate) fn remove(dir: &Path) -> Result<()> {
    let path = path(dir);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&path)(e)),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_private_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        assert_eq!(read(&dir).unwrap(), None);
        let plan = IsolationPlan::new(vec!["10.0.0.1:8443".parse().unwrap()])
            .allow("10.0.0.53 udp/53".parse().unwrap());
        let st = IsolationState::new(plan, "table inet mamori_isolate {}".into());
        write(&dir, &st).unwrap();
        write(&dir, &st).unwrap();
        assert_eq!(read(&dir).unwrap(), Some(st));
        let meta = fs::metadata(path(&dir)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(!dir.join("isolation.json.tmp").exists());
        remove(&dir).unwrap();
        remove(&dir).unwrap();
        assert_eq!(read(&dir).unwrap(), None);
    }

    #[test]
    fn corrupt_or_tampered_state_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(path(tmp.path()), b"{not json").unwrap();
        assert!(matches!(read(tmp.path()), Err(IsolateError::StateCorrupt { .. })));
        let tampered = r#"{"version":1,"plan":{"manager":["10.0.0.1:8443"],"allow":[{"net":"10.0.0.1","label":"x\"; flush ruleset"}]},"applied_at":0,"listing":""}"#;
        fs::write(path(tmp.path()), tampered).unwrap();
        let e = read(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("label"), "{e}");
    }
}
