//! Expand the paths a user named into the EVTX files to read.
//!
//! Directories are walked recursively (following symbolic links, with loop detection) for
//! `*.evtx` files; a file named explicitly is read whatever its name. Anything that is not a
//! regular file (a FIFO, a socket, a device) is reported and never opened: opening a FIFO for
//! reading would block until a writer appears.

use std::io;
use std::path::{Path, PathBuf};

/// One file to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvtxFile {
    pub path: PathBuf,
    /// Size when discovered, for progress and to schedule big files first.
    pub bytes: u64,
}

/// A path that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathProblem {
    pub path: PathBuf,
    pub reason: String,
}

/// The files found and the paths that were reported instead.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// Sorted by path, without duplicates.
    pub files: Vec<EvtxFile>,
    pub problems: Vec<PathProblem>,
}

impl Discovery {
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|file| file.bytes).sum()
    }
}

/// Whether a file name ends in `.evtx` (any case).
pub fn has_evtx_extension(path: &Path) -> bool {
    path.extension().is_some_and(|extension| extension.eq_ignore_ascii_case("evtx"))
}

/// Expand `paths`: files as given, directories walked for `*.evtx`.
pub fn discover(paths: &[PathBuf]) -> Discovery {
    discover_matching(paths, &has_evtx_extension)
}

/// Expand `paths`: files as given, directories walked for the files `wanted` accepts (by
/// path; special files among them are reported, never opened).
pub fn discover_matching(paths: &[PathBuf], wanted: &dyn Fn(&Path) -> bool) -> Discovery {
    let mut discovery = Discovery::default();
    for path in paths {
        match std::fs::metadata(path) {
            Err(error) => discovery
                .problems
                .push(PathProblem { path: path.clone(), reason: describe_metadata_error(path, &error) }),
            Ok(metadata) if metadata.is_dir() => walk_directory(path, wanted, &mut discovery),
            Ok(metadata) if metadata.is_file() => {
                discovery.files.push(EvtxFile { path: path.clone(), bytes: metadata.len() })
            }
            Ok(metadata) => discovery
                .problems
                .push(PathProblem { path: path.clone(), reason: not_regular_reason(&metadata.file_type()) }),
        }
    }
    discovery.files.sort_by(|a, b| a.path.cmp(&b.path));
    discovery.files.dedup_by(|a, b| a.path == b.path);
    discovery
}

fn walk_directory(root: &Path, wanted: &dyn Fn(&Path) -> bool, discovery: &mut Discovery) {
    let walker = walkdir::WalkDir::new(root).follow_links(true).sort_by_file_name();
    for entry in walker {
        match entry {
            Ok(entry) => {
                let file_type = entry.file_type();
                if file_type.is_dir() || !wanted(entry.path()) {
                    continue;
                }
                if !file_type.is_file() {
                    discovery.problems.push(PathProblem {
                        path: entry.path().to_path_buf(),
                        reason: not_regular_reason(&file_type),
                    });
                    continue;
                }
                match entry.metadata() {
                    Ok(metadata) => discovery
                        .files
                        .push(EvtxFile { path: entry.path().to_path_buf(), bytes: metadata.len() }),
                    Err(error) => discovery
                        .problems
                        .push(PathProblem { path: entry.path().to_path_buf(), reason: error.to_string() }),
                }
            }
            Err(error) => {
                let path = error.path().unwrap_or(root).to_path_buf();
                if let Some(ancestor) = error.loop_ancestor() {
                    discovery.problems.push(PathProblem {
                        reason: format!("symbolic link loop (back to {}): not followed", ancestor.display()),
                        path,
                    });
                    continue;
                }
                let not_found = error.io_error().is_some_and(|io| io.kind() == io::ErrorKind::NotFound);
                // A dangling link matters only when it names a file we want.
                if not_found && !wanted(&path) {
                    continue;
                }
                let reason = match error.io_error() {
                    Some(io) => describe_metadata_error(&path, io),
                    None => error.to_string(),
                };
                discovery.problems.push(PathProblem { path, reason });
            }
        }
    }
}

fn describe_metadata_error(path: &Path, error: &io::Error) -> String {
    let dangling = error.kind() == io::ErrorKind::NotFound
        && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if dangling {
        format!("dangling symbolic link: {error}")
    } else if error.raw_os_error() == Some(libc::ELOOP) {
        format!("symbolic link loop: {error}")
    } else {
        error.to_string()
    }
}

fn not_regular_reason(file_type: &std::fs::FileType) -> String {
    use std::os::unix::fs::FileTypeExt;
    let kind = if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    };
    format!("{kind}, not an event log file: not opened")
}
