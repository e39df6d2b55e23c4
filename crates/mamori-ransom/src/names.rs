//! File-name heuristics: ransom-note names and extensions ordinary software uses.

use std::path::Path;

/// Extensions seen on ordinary files. A rename *to* an extension not in this list (and not
/// numeric, not a package manager's or editor's temp suffix) is a rename to an unknown extension.
const KNOWN_EXTENSIONS: &[&str] = &[
    // documents
    "txt",
    "text",
    "md",
    "rst",
    "csv",
    "tsv",
    "log",
    "pdf",
    "doc",
    "docx",
    "docm",
    "dot",
    "dotx",
    "xls",
    "xlsx",
    "xlsm",
    "xlsb",
    "ppt",
    "pptx",
    "odt",
    "ods",
    "odp",
    "rtf",
    "tex",
    "epub",
    "msg",
    "eml",
    "vcf",
    "ics",
    "one",
    "pst",
    "ost",
    "xps",
    "pages",
    "numbers",
    "key",
    // images / media / medical
    "png",
    "jpg",
    "jpeg",
    "gif",
    "bmp",
    "tif",
    "tiff",
    "webp",
    "heic",
    "svg",
    "ico",
    "psd",
    "raw",
    "dcm",
    "dicom",
    "nii",
    "mp3",
    "wav",
    "flac",
    "ogg",
    "mp4",
    "mov",
    "avi",
    "mkv",
    "webm",
    "m4a",
    // archives / compression / packages
    "zip",
    "gz",
    "tgz",
    "xz",
    "txz",
    "zst",
    "zstd",
    "bz2",
    "tbz2",
    "lz4",
    "lzma",
    "7z",
    "rar",
    "tar",
    "cab",
    "deb",
    "rpm",
    "apk",
    "jar",
    "war",
    "whl",
    "iso",
    "img",
    "dmg",
    "msi",
    "cpio",
    "z",
    // code / config / data
    "c",
    "h",
    "cc",
    "cpp",
    "hpp",
    "cxx",
    "rs",
    "go",
    "py",
    "pyc",
    "pyo",
    "java",
    "class",
    "js",
    "mjs",
    "ts",
    "tsx",
    "jsx",
    "json",
    "yaml",
    "yml",
    "toml",
    "ini",
    "cfg",
    "conf",
    "xml",
    "html",
    "htm",
    "css",
    "scss",
    "sh",
    "bash",
    "ps1",
    "bat",
    "cmd",
    "rb",
    "pl",
    "pm",
    "php",
    "sql",
    "db",
    "sqlite",
    "sqlite3",
    "mdb",
    "accdb",
    "dbf",
    "lock",
    "pem",
    "crt",
    "cer",
    "der",
    "key",
    "pub",
    "asc",
    "gpg",
    "sig",
    "map",
    "wasm",
    "proto",
    "cmake",
    "mk",
    "in",
    "am",
    "ac",
    "m4",
    "s",
    "asm",
    "inc",
    "d",
    "desktop",
    "service",
    "timer",
    "socket",
    "target",
    "mount",
    "rules",
    "policy",
    "list",
    "sources",
    "pkla",
    "repo",
    "pid",
    "sock",
    // build outputs / binaries
    "o",
    "obj",
    "a",
    "so",
    "lo",
    "la",
    "ko",
    "dll",
    "exe",
    "sys",
    "lib",
    "rlib",
    "rmeta",
    "pdb",
    "dylib",
    "bin",
    "elf",
    "out",
    "mo",
    "po",
    "pot",
    "gch",
    "pch",
    "dep",
    "dwo",
    "idx",
    "pack",
    "rev",
    "keep",
    // temp / backup / package manager suffixes
    "tmp",
    "temp",
    "part",
    "partial",
    "crdownload",
    "download",
    "swp",
    "swo",
    "swx",
    "bak",
    "backup",
    "old",
    "orig",
    "new",
    "save",
    "sav",
    "prev",
    "dist",
    "rej",
    "cache",
    "journal",
    "wal",
    "shm",
    "rpmnew",
    "rpmsave",
    "rpmorig",
    "pacnew",
    "pacsave",
    "cfsaved",
];

/// The extension (lower-case) of `path`, if any.
pub fn extension(path: &Path) -> Option<String> {
    path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase())
}

/// Extensions ordinary tools produce: the list above, numbers and dates (`.1`, `.2026-11-23`,
/// log rotation, sonames), `dpkg-*`/`ucf-*` suffixes, editor backups (`~`).
pub fn is_known_extension(ext: &str) -> bool {
    if ext.is_empty()
        || ext.ends_with('~')
        || ext.bytes().all(|b| b.is_ascii_digit() || b == b'-' || b == b'_')
        || ext.starts_with("dpkg-")
        || ext.starts_with("ucf-")
        || ext.starts_with("tmp")
    {
        return true;
    }
    KNOWN_EXTENSIONS.contains(&ext)
}

/// A file name ransom notes use: `README_TO_DECRYPT.txt`, `HOW_TO_RESTORE_FILES.html`,
/// `!!!RECOVER_YOUR_DATA!!!.txt`, `RANSOM_NOTE`, `_unlock_files_.txt`...
pub fn is_ransom_note_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let n: String = name.to_ascii_lowercase().chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    if n.contains("decrypt") || n.contains("ransom") {
        return true;
    }
    let action = ["restore", "recover", "unlock", "getback", "return"].iter().any(|w| n.contains(w));
    let object = ["file", "data", "howto", "readme", "your"].iter().any(|w| n.contains(w));
    action && object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_names() {
        for n in [
            "README_TO_DECRYPT.txt",
            "HOW_TO_RESTORE_FILES.html",
            "!!!RECOVER_YOUR_DATA!!!.txt",
            "how-to-decrypt.hta",
            "RESTORE-MY-FILES.TXT",
            "_unlock_files_.txt",
        ] {
            assert!(is_ransom_note_name(Path::new(n)), "{n}");
        }
        for n in ["README.md", "HOW_TO_BUILD.txt", "backup_files.txt", "restore.sh", "recovery.log"] {
            assert!(!is_ransom_note_name(Path::new(n)), "{n}");
        }
    }

    #[test]
    fn extensions() {
        for e in ["txt", "1", "2026-11-23", "dpkg-new", "tmpab12", "c~", "zst"] {
            assert!(is_known_extension(e), "{e}");
        }
        for e in ["locked", "enc", "lockbit", "wncry", "8a7sdf2"] {
            assert!(!is_known_extension(e), "{e}");
        }
    }
}
