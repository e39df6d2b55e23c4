//! Careful file handling for private keys.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rand::RngCore;

use crate::Error;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Reads a secret file, refusing symlinks (someone could point it at a file they control) and
/// files that group or others can read (the key may already have leaked).
pub fn read_private(path: &Path) -> Result<String, Error> {
    let meta = std::fs::symlink_metadata(path).map_err(io_err(path))?;
    if meta.file_type().is_symlink() {
        return Err(Error::Symlink(path.to_path_buf()));
    }
    let mut opts = OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Closes the window between the lstat above and the open.
        opts.custom_flags(libc::O_NOFOLLOW);
    }
    let mut file = opts.open(path).map_err(io_err(path))?;
    // Check the file we actually opened, not the path.
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(Error::NotAFile(path.to_path_buf()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(Error::InsecurePermissions { path: path.to_path_buf(), mode });
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io_err(path))?;
    Ok(text)
}

fn open_new_private(path: &Path) -> Result<File, Error> {
    let mut opts = OpenOptions::new();
    // create_new is O_CREAT|O_EXCL: never follows or reuses an existing file or symlink.
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path).map_err(io_err(path))
}

/// Creates `path` exclusively with mode 0600 and writes `data`. Fails if it already exists.
pub fn create_private_exclusive(path: &Path, data: &[u8]) -> Result<(), Error> {
    let mut file = open_new_private(path)?;
    let res = file.write_all(data).and_then(|()| file.sync_all());
    if let Err(source) = res {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(Error::Io { path: path.to_path_buf(), source });
    }
    sync_parent(path);
    Ok(())
}

/// Replaces `path` atomically: readers see either the old or the complete new content.
pub fn write_atomic(path: &Path, data: &[u8], private: bool) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut suffix = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut suffix);
    let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(suffix)));
    let mut file = if private {
        open_new_private(&tmp)?
    } else {
        OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(io_err(&tmp))?
    };
    let res = file.write_all(data).and_then(|()| file.sync_all()).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(source) = res {
        drop(file);
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Io { path: path.to_path_buf(), source });
    }
    sync_parent(path);
    Ok(())
}

/// Best effort: makes the new directory entry durable. Not all platforms allow fsync on a
/// directory, and the data itself is already synced, so failures are ignored.
fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// Creates `dir` (and parents) if missing; a directory we create is 0700 because it will hold
/// key material. An existing directory is left as it is.
pub fn create_private_dir(dir: &Path) -> Result<(), Error> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_err(dir))
}
