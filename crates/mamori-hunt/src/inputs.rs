//! Which files a hunt reads, and as what.

use std::io::Read;
use std::path::{Path, PathBuf};

use mamori_evtx::{discover_matching, has_evtx_extension, open_regular_file, PathProblem};

/// How a file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Evtx,
    /// Text, one event per line (parsed by `mamori-logs`).
    TextLog,
}

/// One file to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    pub path: PathBuf,
    pub bytes: u64,
    pub kind: InputKind,
}

/// Names of text logs picked up when walking a directory. Files named on the command line are
/// read whatever their name.
pub fn is_text_log_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let name = name.to_ascii_lowercase();
    // Rotated copies (`syslog.1`, `auth.log.2`) count; compressed ones cannot be read yet.
    if name.ends_with(".gz") || name.ends_with(".xz") || name.ends_with(".bz2") || name.ends_with(".zst") {
        return false;
    }
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit()).trim_end_matches('.');
    base.ends_with(".log")
        || base.ends_with(".jsonl")
        || base.ends_with(".ndjson")
        || matches!(base, "syslog" | "messages" | "secure" | "auth" | "kern" | "daemon")
}

const EVTX_MAGIC: &[u8; 8] = b"ElfFile\0";

/// EVTX by content when the name does not say (a file named on the command line).
fn starts_like_evtx(path: &Path) -> bool {
    let Ok((mut file, _)) = open_regular_file(path) else {
        return false;
    };
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic).is_ok() && &magic == EVTX_MAGIC
}

/// Expand the user's paths into files to read, and the paths that could not be used.
pub fn collect_inputs(paths: &[PathBuf]) -> (Vec<InputFile>, Vec<PathProblem>) {
    let wanted = |path: &Path| has_evtx_extension(path) || is_text_log_name(path);
    let discovery = discover_matching(paths, &wanted);
    let files = discovery
        .files
        .into_iter()
        .map(|file| {
            let kind = if has_evtx_extension(&file.path) || starts_like_evtx(&file.path) {
                InputKind::Evtx
            } else {
                InputKind::TextLog
            };
            InputFile { path: file.path, bytes: file.bytes, kind }
        })
        .collect();
    (files, discovery.problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_log_names() {
        for name in ["auth.log", "auth.log.1", "syslog", "syslog.3", "app.jsonl", "messages", "x.NDJSON"] {
            assert!(is_text_log_name(Path::new(name)), "{name}");
        }
        for name in ["auth.log.2.gz", "notes.txt", "image.png", "Security.evtx", "catalog"] {
            assert!(!is_text_log_name(Path::new(name)), "{name}");
        }
    }
}
