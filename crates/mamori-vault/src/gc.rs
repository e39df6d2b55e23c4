//! Garbage collection: the only code in this crate that removes pack files.
//!
//! It is reached only through [`crate::retention::execute_due`], the admin path on the vault
//! host (a local command holding the repository passphrase, after a deletion's delay has
//! passed); nothing the vault's network service calls leads here.
//!
//! Order, so that a kill at any point leaves a repository that `check(true)` accepts:
//! 1. every snapshot is read and its trees walked for the blobs it refers to; any snapshot or
//!    tree that cannot be read stops the collection before anything changes, because its
//!    references are unknown;
//! 2. the referenced blobs of every pack that also holds unreferenced ones are copied (still
//!    sealed, after verifying they decrypt to their id) into new packs through the normal
//!    writer, and the new packs are flushed (written, synced, linked, directory synced);
//! 3. only then the old packs are removed. Until they are, blobs exist twice, which the index
//!    loader and `check` accept.
//!
//! The caller must stop the vault service (or keep it from writing) meanwhile: a snapshot
//! written concurrently could refer to a blob in a pack being removed, since deduplication
//! would not upload it again.

use std::collections::{HashMap, HashSet};

use crate::pack::{self, HeaderEntry};
use crate::repo::{BlobId, Location, Repository, PACK_TARGET};
use crate::retention::{sync_dir, GcReport};
use crate::tree::read_tree;
use crate::{Error, Result};

impl Repository {
    /// Removes every blob no snapshot refers to, rewriting packs that hold both kinds.
    pub(crate) fn collect_garbage(&mut self) -> Result<GcReport> {
        self.flush()?;
        let referenced = self.referenced()?;
        let mut report = GcReport::default();

        // What each readable pack holds. Packs that cannot be read are left alone.
        let before = self.pack_files()?;
        report.packs_before = before.len() as u64;
        let mut headers: Vec<PackContents> = Vec::new();
        for (name, path) in &before {
            match read_pack_header(self, name, path) {
                Some((entries, size)) => {
                    headers.push(PackContents { name: name.clone(), path: path.clone(), entries, size })
                }
                None => report.damaged_packs.push(name.clone()),
            }
        }

        // Packs whose every blob is referenced stay as they are. A blob they hold needs no
        // copy out of a pack being removed, once that kept copy is verified (below).
        let mut kept_copies: HashMap<BlobId, (&std::path::Path, &HeaderEntry)> = HashMap::new();
        let mut removable = Vec::new();
        for PackContents { name, path, entries, size } in &headers {
            if entries.iter().all(|(id, _)| referenced.contains(id)) {
                report.packs_kept += 1;
                for (id, entry) in entries {
                    kept_copies.insert(*id, (path.as_path(), entry));
                }
            } else {
                removable.push((name, path, entries, *size));
            }
        }
        let mut satisfied: HashSet<BlobId> = HashSet::new();

        let mut remove = Vec::new();
        for (name, path, entries, size) in removable {
            let mut wanted = Vec::new();
            for (id, entry) in entries {
                if !referenced.contains(id) || satisfied.contains(id) {
                    continue;
                }
                // Only duplicates get here (left by an interrupted collection): removing the
                // good copy while keeping a damaged one would lose the blob.
                if let Some((kept_path, kept_entry)) = kept_copies.get(id) {
                    if blob_is_intact(self, kept_path, kept_entry, id) {
                        satisfied.insert(*id);
                        continue;
                    }
                }
                wanted.push((id, entry));
            }
            let mut intact = true;
            if !wanted.is_empty() {
                let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
                for (id, entry) in wanted {
                    // The header was checked against the pack's length when it was read.
                    let end = entry.offset as usize + entry.length as usize;
                    let Some(sealed) = bytes.get(entry.offset as usize..end) else {
                        intact = false;
                        continue;
                    };
                    if pack::open_blob(&self.keys, sealed, entry.kind, id, entry.raw_length).is_err() {
                        intact = false;
                        continue;
                    }
                    self.writer.add_sealed(entry.kind, id, sealed, entry.raw_length)?;
                    self.pending.insert(*id);
                    satisfied.insert(*id);
                    report.blobs_repacked += 1;
                    if self.writer.len_bytes() >= PACK_TARGET {
                        self.flush()?;
                    }
                }
            }
            if intact {
                report.blobs_removed +=
                    entries.iter().filter(|(id, _)| !referenced.contains(id)).count() as u64;
                remove.push((name.clone(), path.clone(), size));
            } else {
                report.damaged_packs.push(name.clone());
            }
        }
        // The copies are durable before any original goes.
        self.flush()?;

        let old_names: HashSet<&String> = before.iter().map(|(name, _)| name).collect();
        let mut new_names = HashSet::new();
        for (name, path) in self.pack_files()? {
            if !old_names.contains(&name) {
                report.packs_written += 1;
                report.bytes_written += std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?.len();
                new_names.insert(name);
            }
        }

        let mut dirs = HashSet::new();
        let mut removed_names = HashSet::new();
        for (name, path, size) in remove {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
            report.packs_removed += 1;
            report.bytes_removed += size;
            if let Some(dir) = path.parent() {
                dirs.insert(dir.to_path_buf());
            }
            removed_names.insert(name);
        }
        for dir in dirs {
            sync_dir(&dir)?;
            // An emptied fan-out directory is left: `flush` would only create it again.
        }
        report.bytes_reclaimed = report.bytes_removed.saturating_sub(report.bytes_written);

        // The index as `open` would build it now: surviving packs, then the new copies.
        let mut index: HashMap<BlobId, Location> = HashMap::new();
        for PackContents { name, entries, .. } in headers {
            if removed_names.contains(&name) {
                continue;
            }
            let pack: std::sync::Arc<str> = std::sync::Arc::from(name.as_str());
            for (id, entry) in entries {
                index.insert(id, Location::new(&pack, &entry));
            }
        }
        for (id, location) in self.index.drain() {
            if new_names.contains(&*location.pack) {
                index.insert(id, location);
            }
        }
        self.index = index;
        Ok(report)
    }

    /// Every blob (trees and data) the snapshots refer to. Refuses when a snapshot or a tree
    /// cannot be read: what it refers to would be collected.
    fn referenced(&mut self) -> Result<HashSet<BlobId>> {
        let mut referenced = HashSet::new();
        let mut stack = Vec::new();
        for name in self.snapshot_names()? {
            let snapshot = self.read_snapshot(&name).map_err(|e| {
                Error::Refused(format!(
                    "garbage collection needs every snapshot; snapshot {name} cannot be read ({e}); run check"
                ))
            })?;
            stack.push((name, snapshot.tree));
        }
        while let Some((snapshot, id)) = stack.pop() {
            if !referenced.insert(id) {
                // A tree shared by many snapshots is walked once.
                continue;
            }
            let tree = read_tree(self, &id).map_err(|e| {
                Error::Refused(format!(
                    "garbage collection: tree {} of snapshot {snapshot} cannot be read ({e}); run check",
                    id.to_hex()
                ))
            })?;
            for node in tree.nodes {
                referenced.extend(node.content);
                if let Some(sub) = node.subtree {
                    stack.push((snapshot.clone(), sub));
                }
            }
        }
        Ok(referenced)
    }
}

/// What a readable pack holds.
struct PackContents {
    name: String,
    path: std::path::PathBuf,
    entries: Vec<(BlobId, HeaderEntry)>,
    /// Bytes on disk.
    size: u64,
}

/// Whether one stored blob decrypts to content with its id.
fn blob_is_intact(repo: &Repository, path: &std::path::Path, entry: &HeaderEntry, id: &BlobId) -> bool {
    use std::os::unix::fs::FileExt;
    let Ok(file) = std::fs::File::open(path) else { return false };
    let mut sealed = vec![0u8; entry.length as usize];
    file.read_exact_at(&mut sealed, entry.offset).is_ok()
        && pack::open_blob(&repo.keys, &sealed, entry.kind, id, entry.raw_length).is_ok()
}

/// The entries of a pack whose name matches its bytes and whose header decrypts, with its
/// size; `None` otherwise.
fn read_pack_header(
    repo: &Repository,
    name: &str,
    path: &std::path::Path,
) -> Option<(Vec<(BlobId, HeaderEntry)>, u64)> {
    let bytes = std::fs::read(path).ok()?;
    if blake3::hash(&bytes).to_hex().as_str() != name {
        return None;
    }
    let entries = pack::read_header(&repo.keys, &bytes, name).ok()?;
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        out.push((BlobId::from_hex(&entry.id).ok()?, entry));
    }
    Some((out, bytes.len() as u64))
}
