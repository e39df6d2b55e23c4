//! Directory trees and snapshots. A [`Tree`] lists one directory's entries (sorted by name) and
//! is itself a blob, so an unchanged directory is the same blob in every snapshot; a
//! [`Snapshot`] names the root tree.
//!
//! [`store_path`] and [`restore`] are the reference walk and restore: regular files, directories
//! and symlinks with mode, owner, group and modification time. Other file types (FIFOs,
//! sockets, devices) are recorded without content and never opened.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::chunk::chunk_stream;
use crate::repo::{BlobId, BlobKind, Repository};
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    /// FIFO, socket or device: recorded, never read.
    Special,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The name's bytes as hex when they are not UTF-8, else the name.
    pub name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub name_is_hex: bool,
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<BlobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<BlobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Status change time and inode: with size and mtime they decide whether a file is
    /// unchanged since the previous snapshot. ctime cannot be set back from user space, so a
    /// program that restores a file's mtime after rewriting it is still noticed.
    #[serde(default)]
    pub ctime_ns: i64,
    #[serde(default)]
    pub inode: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub time_ms: i64,
    pub hostname: String,
    pub paths: Vec<String>,
    pub tree: BlobId,
    /// The enrolled device (certificate) that uploaded it; empty for local snapshots.
    #[serde(default)]
    pub device_id: String,
    /// Patterns the client excluded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
    /// Plaintext and stored bytes of the content this snapshot added (new data blobs).
    #[serde(default)]
    pub added_raw: u64,
    #[serde(default)]
    pub added_stored: u64,
}

/// Counts of what a store walk did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StoreStats {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub new_blobs: u64,
    /// Paths that could not be read, with why; the walk went on.
    pub problems: Vec<String>,
}

impl Node {
    /// A node for directory entry `name` with its metadata (from `symlink_metadata`): kind
    /// `Special` and no content until the caller fills them in; `size` is the size on disk.
    pub fn from_metadata(name: &OsStr, meta: &std::fs::Metadata) -> Node {
        let (name, name_is_hex) = name_of(name);
        Node {
            name,
            name_is_hex,
            kind: NodeKind::Special,
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            size: if meta.is_file() { meta.len() } else { 0 },
            content: Vec::new(),
            subtree: None,
            target: None,
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            inode: meta.ino(),
        }
    }
}

/// A name as stored in a tree: the string, or its bytes as hex when it is not UTF-8.
pub fn name_of(name: &OsStr) -> (String, bool) {
    match name.to_str() {
        Some(s) => (s.to_string(), false),
        None => (hex::encode(name.as_bytes()), true),
    }
}

fn name_bytes(node: &Node) -> Result<Vec<u8>> {
    if node.name_is_hex {
        hex::decode(&node.name).map_err(|_| Error::Corrupt(format!("tree entry `{}`", node.name)))
    } else {
        Ok(node.name.as_bytes().to_vec())
    }
}

/// Stores the directory `dir` (recursively) and returns its tree's id.
pub fn store_path(repo: &mut Repository, dir: &Path, stats: &mut StoreStats) -> Result<BlobId> {
    let mut entries: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.flatten().collect(),
        Err(e) => {
            stats.problems.push(format!("{}: {e}", dir.display()));
            Vec::new()
        }
    };
    entries.sort_by_key(|e| e.file_name());
    let mut tree = Tree::default();
    for entry in entries {
        let path = entry.path();
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                stats.problems.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        let file_type = meta.file_type();
        let mut node = Node::from_metadata(&entry.file_name(), &meta);
        node.size = 0;
        if file_type.is_dir() {
            node.kind = NodeKind::Dir;
            node.subtree = Some(store_path(repo, &path, stats)?);
            stats.dirs += 1;
        } else if file_type.is_symlink() {
            node.kind = NodeKind::Symlink;
            match std::fs::read_link(&path) {
                Ok(target) => node.target = Some(hex::encode(target.as_os_str().as_bytes())),
                Err(e) => {
                    stats.problems.push(format!("{}: {e}", path.display()));
                    continue;
                }
            }
        } else if file_type.is_file() {
            node.kind = NodeKind::File;
            match store_file(repo, &path, stats) {
                Ok((content, size)) => {
                    node.content = content;
                    node.size = size;
                }
                Err(e) => {
                    stats.problems.push(format!("{}: {e}", path.display()));
                    continue;
                }
            }
            stats.files += 1;
        }
        tree.nodes.push(node);
    }
    let json = serde_json::to_vec(&tree).map_err(|e| Error::Invalid(e.to_string()))?;
    let (id, new) = repo.put(BlobKind::Tree, &json)?;
    stats.new_blobs += u64::from(new);
    Ok(id)
}

fn store_file(repo: &mut Repository, path: &Path, stats: &mut StoreStats) -> Result<(Vec<BlobId>, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    // Never follow a link swapped in after the walk looked, never block on a FIFO.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let mut content = Vec::new();
    let chunker = repo.chunker();
    let size = chunk_stream(file, chunker, |chunk| {
        let (id, new) = repo.put(BlobKind::Data, chunk)?;
        stats.new_blobs += u64::from(new);
        content.push(id);
        Ok(())
    })?;
    stats.bytes += size;
    Ok((content, size))
}

pub fn read_tree(repo: &mut Repository, id: &BlobId) -> Result<Tree> {
    let json = repo.get(id)?;
    serde_json::from_slice(&json).map_err(|_| Error::Corrupt(format!("tree {}", id.to_hex())))
}

/// Restores tree `id` into the directory `target` (created; must not hold the entries
/// already: nothing is overwritten).
pub fn restore(repo: &mut Repository, id: &BlobId, target: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(target)
        .map_err(|e| Error::io(target, e))?;
    let tree = read_tree(repo, id)?;
    for node in &tree.nodes {
        let path = entry_path(target, node)?;
        match node.kind {
            NodeKind::Dir => {
                let subtree =
                    node.subtree.ok_or_else(|| Error::Corrupt(format!("directory {}", node.name)))?;
                restore(repo, &subtree, &path)?;
            }
            NodeKind::File => {
                use std::io::Write;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| Error::io(&path, e))?;
                for chunk in &node.content {
                    let data = repo.get(chunk)?;
                    file.write_all(&data).map_err(|e| Error::io(&path, e))?;
                }
                file.sync_all().map_err(|e| Error::io(&path, e))?;
            }
            NodeKind::Symlink => {
                let target_bytes = hex::decode(node.target.as_deref().unwrap_or_default())
                    .map_err(|_| Error::Corrupt(format!("symlink {}", node.name)))?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target_bytes), &path)
                    .map_err(|e| Error::io(&path, e))?;
            }
            // Recorded for completeness; recreating devices is not a backup's job.
            NodeKind::Special => continue,
        }
        set_metadata(&path, node)?;
    }
    Ok(())
}

/// `dir/<node's name>`, refusing names that would leave `dir` (a damaged or hostile tree).
pub fn entry_path(dir: &Path, node: &Node) -> Result<std::path::PathBuf> {
    let name = name_bytes(node)?;
    if name.is_empty() || name.contains(&b'/') || name == b"." || name == b".." {
        return Err(Error::Corrupt(format!("tree entry name {:?}", node.name)));
    }
    Ok(dir.join(OsStr::from_bytes(&name)))
}

/// Sets owner (when running as root), mode and modification time as recorded; for
/// directories call it after their contents are written.
pub fn set_metadata(path: &Path, node: &Node) -> Result<()> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Invalid(format!("{}: NUL in path", path.display())))?;
    // SAFETY: lchown with a valid NUL-terminated path.
    let owned = unsafe { libc::lchown(c_path.as_ptr(), node.uid, node.gid) };
    if owned != 0 && unsafe { libc::geteuid() } == 0 {
        return Err(Error::io(path, std::io::Error::last_os_error()));
    }
    if node.kind != NodeKind::Symlink {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(node.mode & 0o7777))
            .map_err(|e| Error::io(path, e))?;
    }
    let times = [mtime(node), mtime(node)];
    // SAFETY: utimensat with a valid path and two timespecs; AT_SYMLINK_NOFOLLOW sets a
    // link's own time.
    let rc = unsafe {
        libc::utimensat(libc::AT_FDCWD, c_path.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
    };
    if rc != 0 {
        return Err(Error::io(path, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// [`set_metadata`] for a regular file through its open handle: no path lookups, which were a
/// visible part of restoring tens of thousands of small files. `path` names it in errors.
pub fn set_file_metadata(file: &std::fs::File, path: &Path, node: &Node) -> Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fchown on a descriptor we hold open.
    let owned = unsafe { libc::fchown(fd, node.uid, node.gid) };
    if owned != 0 && unsafe { libc::geteuid() } == 0 {
        return Err(Error::io(path, std::io::Error::last_os_error()));
    }
    file.set_permissions(std::fs::Permissions::from_mode(node.mode & 0o7777))
        .map_err(|e| Error::io(path, e))?;
    // SAFETY: futimens with a descriptor we hold open and two timespecs.
    if unsafe { libc::futimens(fd, [mtime(node), mtime(node)].as_ptr()) } != 0 {
        return Err(Error::io(path, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The recorded modification time, for `utimensat`/`futimens` (access time set to it too).
fn mtime(node: &Node) -> libc::timespec {
    libc::timespec {
        tv_sec: node.mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: node.mtime_ns.rem_euclid(1_000_000_000),
    }
}

/// Appends to `missing` every blob under tree `id` that the repository does not hold.
pub fn referenced_blobs(repo: &mut Repository, id: &BlobId, missing: &mut Vec<String>) -> Result<()> {
    if !repo.contains(id) {
        missing.push(id.to_hex());
        return Ok(());
    }
    let tree = match read_tree(repo, id) {
        Ok(t) => t,
        Err(Error::Corrupt(_)) => {
            missing.push(id.to_hex());
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for node in &tree.nodes {
        for chunk in &node.content {
            if !repo.contains(chunk) {
                missing.push(chunk.to_hex());
            }
        }
        if let Some(sub) = &node.subtree {
            referenced_blobs(repo, sub, missing)?;
        }
    }
    Ok(())
}
