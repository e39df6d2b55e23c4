//! Restoring a snapshot (or one path of it) into an empty directory, bit-exact with modes,
//! owners (when run as root), times and symlinks; and the read-only questions about
//! snapshots: which one is the last clean one, the versions of a file, what changed between
//! two snapshots.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use mamori_proto::vault::SnapshotInfo;
use mamori_vault::tree::{entry_path, set_file_metadata, set_metadata};
use mamori_vault::{BlobId, Node, NodeKind, Tree};
use serde::Serialize;

use crate::connection::{Blobs, Connection};
use crate::trees::TreeCache;

/// Data blobs fetched per request while restoring.
const FETCH_BYTES: u64 = 4 * 1024 * 1024;
const FETCH_IDS: usize = 2000;
/// A request for blobs under way, with the (file, chunk) list its blobs serve.
type Fetch = (tokio::task::JoinHandle<anyhow::Result<Blobs>>, Vec<(usize, usize)>);

/// Requests the vault works on while the client writes: enough to keep both sides busy.
const FETCHES_IN_FLIGHT: usize = 2;

/// Which snapshot: a name (or unique prefix), `latest`, or the last one before an attack.
pub fn choose<'a>(
    snapshots: &'a [SnapshotInfo],
    wanted: Option<&str>,
    before_attack: bool,
) -> anyhow::Result<&'a SnapshotInfo> {
    if before_attack {
        return last_clean(snapshots)
            .ok_or_else(|| anyhow!("there is no clean snapshot before the first uncleared suspicious one"));
    }
    match wanted {
        None | Some("latest") => {
            snapshots.last().ok_or_else(|| anyhow!("this device has no snapshots in the vault"))
        }
        Some(prefix) => {
            let found: Vec<_> = snapshots.iter().filter(|s| s.name.starts_with(prefix)).collect();
            match found.as_slice() {
                [one] => Ok(one),
                [] => bail!("no snapshot of this device starts with `{prefix}`"),
                _ => bail!("`{prefix}` names {} snapshots; give more of the name", found.len()),
            }
        }
    }
}

/// The last clean snapshot before the earliest suspicious one whose alert is not cleared.
/// Snapshots after an attack are not flagged themselves (encrypted files that stay encrypted
/// do not change), so "before the first flag" is what restores the data.
pub fn last_clean(snapshots: &[SnapshotInfo]) -> Option<&SnapshotInfo> {
    let first_attack = snapshots.iter().position(|s| s.suspicious && !s.cleared);
    let before = match first_attack {
        Some(i) => &snapshots[..i],
        None => snapshots,
    };
    before.iter().rev().find(|s| !s.suspicious || s.cleared)
}

#[derive(Debug, Default, Serialize)]
pub struct RestoreSummary {
    pub snapshot: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub target: String,
}

/// Splits an absolute path inside a snapshot into names.
fn components(path: &str) -> anyhow::Result<Vec<String>> {
    if !path.starts_with('/') {
        bail!("`{path}`: give the path as it was backed up, starting with /");
    }
    Ok(path.split('/').filter(|c| !c.is_empty() && *c != ".").map(str::to_string).collect())
}

/// Follows `path` from the root tree; returns the node's ancestors' trees fetched and the node.
async fn lookup(cache: &mut TreeCache, root: BlobId, path: &[String]) -> anyhow::Result<Option<Node>> {
    let mut tree_id = root;
    let mut node = None;
    for (i, name) in path.iter().enumerate() {
        cache.fetch(&[tree_id]).await?;
        let tree = cache.get(&tree_id).ok_or_else(|| anyhow!("tree {} missing", tree_id.to_hex()))?;
        let Some(found) = tree.nodes.iter().find(|n| !n.name_is_hex && n.name == *name).cloned() else {
            return Ok(None);
        };
        if i + 1 < path.len() {
            tree_id = found.subtree.ok_or_else(|| anyhow!("/{} is not a directory", path[..=i].join("/")))?;
        }
        node = Some(found);
    }
    Ok(node)
}

pub async fn restore(
    conn: &Connection,
    id_key: [u8; 32],
    snapshot: &SnapshotInfo,
    only: Option<&str>,
    target: &Path,
) -> anyhow::Result<RestoreSummary> {
    if target.exists() {
        let mut entries =
            std::fs::read_dir(target).with_context(|| format!("target {}", target.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} is not empty; restore into a new or empty directory (nothing is overwritten)",
                target.display()
            );
        }
    }
    let root = BlobId::from_hex(&snapshot.tree).map_err(|_| anyhow!("snapshot names a bad tree"))?;
    let mut cache = TreeCache::new(conn.clone(), id_key);
    // What to restore: the whole snapshot, or one node with the directories above it.
    let (start_dir, start): (PathBuf, Vec<Node>) = match only {
        None => {
            cache.fetch_all(&[root]).await?;
            let tree = cache.get(&root).cloned().unwrap_or_default();
            (target.to_path_buf(), tree.nodes)
        }
        Some(path) => {
            let names = components(path)?;
            let node = lookup(&mut cache, root, &names)
                .await?
                .ok_or_else(|| anyhow!("{path} is not in snapshot {}", snapshot.name))?;
            if let Some(sub) = node.subtree {
                cache.fetch_all(&[sub]).await?;
            }
            let mut dir = target.to_path_buf();
            for name in &names[..names.len().saturating_sub(1)] {
                dir.push(name);
            }
            (dir, vec![node])
        }
    };
    std::fs::create_dir_all(&start_dir).with_context(|| format!("creating {}", start_dir.display()))?;
    // Nodes are moved out of the trees into the plan, not copied: a tree of a hundred thousand
    // files is held once.
    let mut trees = cache.into_map();

    // Directories and symlinks first, files listed; directory times are set last.
    let mut plan = Plan::default();
    plan.count_uses(&trees, &start);
    plan.walk(&mut trees, &start_dir, start)?;
    drop(trees);
    let mut summary = RestoreSummary {
        snapshot: snapshot.name.clone(),
        dirs: plan.dirs.len() as u64,
        symlinks: plan.symlinks,
        target: target.display().to_string(),
        ..Default::default()
    };

    let mut writer = FileWriter::default();
    let mut batch: Vec<BlobId> = Vec::new();
    let mut in_batch: HashSet<BlobId> = HashSet::new();
    let mut batch_bytes = 0u64;
    let mut queue: Vec<(usize, usize)> = Vec::new(); // (file, chunk) in order
                                                     // Fetches in flight, oldest first, each with the (file, chunk) list its blobs serve.
    let mut in_flight: std::collections::VecDeque<Fetch> = std::collections::VecDeque::new();
    for (fi, (_, node)) in plan.files.iter().enumerate() {
        if node.content.is_empty() {
            queue.push((fi, usize::MAX));
        }
        for (ci, id) in node.content.iter().enumerate() {
            queue.push((fi, ci));
            if in_batch.insert(*id) {
                batch.push(*id);
                batch_bytes += node.size / node.content.len() as u64 + 1;
            }
            if batch_bytes >= FETCH_BYTES || batch.len() >= FETCH_IDS {
                in_batch.clear();
                in_flight.push_back((
                    spawn_fetch(conn, std::mem::take(&mut batch), id_key),
                    std::mem::take(&mut queue),
                ));
                batch_bytes = 0;
                if in_flight.len() >= FETCHES_IN_FLIGHT {
                    if let Some((fetch, files)) = in_flight.pop_front() {
                        writer.write(&plan.files, files, fetch.await??, &mut summary)?;
                    }
                }
            }
        }
    }
    in_flight.push_back((spawn_fetch(conn, std::mem::take(&mut batch), id_key), std::mem::take(&mut queue)));
    while let Some((fetch, files)) = in_flight.pop_front() {
        writer.write(&plan.files, files, fetch.await??, &mut summary)?;
    }
    writer.close(&plan.files, &mut summary)?;

    // Deepest first, so that setting a directory's time is not undone by writing into it.
    for (path, node) in plan.dirs.iter().rev() {
        set_metadata(path, node)?;
    }
    sync_filesystem(target)?;
    Ok(summary)
}

/// Flushes the filesystem holding `dir` to disk: a restore reports success only once its
/// files would survive a power cut.
fn sync_filesystem(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::io::AsRawFd;
    let handle = std::fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    // SAFETY: syncfs on a descriptor we own.
    if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("syncing {}", dir.display()));
    }
    Ok(())
}

fn spawn_fetch(
    conn: &Connection,
    ids: Vec<BlobId>,
    id_key: [u8; 32],
) -> tokio::task::JoinHandle<anyhow::Result<Blobs>> {
    let conn = conn.clone();
    tokio::spawn(async move { conn.read(ids.iter().map(BlobId::to_hex).collect(), &id_key).await })
}

#[derive(Default)]
struct Plan {
    dirs: Vec<(PathBuf, Node)>,
    files: Vec<(PathBuf, Node)>,
    symlinks: u64,
    /// How many directory entries refer to each tree.
    uses: HashMap<BlobId, usize>,
}

impl Plan {
    /// Counts every time the walk will reach each tree (a shared tree inside a shared tree is
    /// reached once per path to it).
    fn count_uses(&mut self, trees: &HashMap<BlobId, Tree>, nodes: &[Node]) {
        for sub in nodes.iter().filter_map(|n| n.subtree) {
            *self.uses.entry(sub).or_insert(0) += 1;
            if let Some(tree) = trees.get(&sub) {
                self.count_uses(trees, &tree.nodes);
            }
        }
    }

    fn walk(
        &mut self,
        trees: &mut HashMap<BlobId, Tree>,
        dir: &Path,
        nodes: Vec<Node>,
    ) -> anyhow::Result<()> {
        for node in nodes {
            let path = entry_path(dir, &node)?;
            match node.kind {
                NodeKind::Dir => {
                    std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
                    let sub =
                        node.subtree.ok_or_else(|| anyhow!("directory {} has no tree", path.display()))?;
                    // Identical directories share one tree: it is copied for all but its last use.
                    let uses = self.uses.entry(sub).or_insert(1);
                    *uses -= 1;
                    let tree = if *uses == 0 { trees.remove(&sub) } else { trees.get(&sub).cloned() }
                        .ok_or_else(|| anyhow!("tree {} missing", sub.to_hex()))?;
                    self.dirs.push((path.clone(), node));
                    self.walk(trees, &path, tree.nodes)?;
                }
                NodeKind::File => self.files.push((path, node)),
                NodeKind::Symlink => {
                    let target = hex::decode(node.target.as_deref().unwrap_or_default())
                        .map_err(|_| anyhow!("symlink {} is damaged", path.display()))?;
                    use std::os::unix::ffi::OsStrExt;
                    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    set_metadata(&path, &node)?;
                    self.symlinks += 1;
                }
                // FIFOs, sockets and devices are recorded, not recreated.
                NodeKind::Special => {}
            }
        }
        Ok(())
    }
}

/// Threads that create and write the files complete within one batch. Writing is most of a
/// restore's work on the client (copying into the page cache, creating inodes, setting
/// metadata), and one thread left a core idle.
const WRITERS: usize = 2;

/// Writes files as their chunks arrive. A file that spans batches is written in order by the
/// calling thread and stays open between them; the files that a batch holds whole are written
/// by [`WRITERS`] threads.
#[derive(Default)]
struct FileWriter {
    open: Option<(usize, std::fs::File)>,
}

impl FileWriter {
    fn write(
        &mut self,
        files: &[(PathBuf, Node)],
        queue: Vec<(usize, usize)>,
        blobs: Blobs,
        summary: &mut RestoreSummary,
    ) -> anyhow::Result<()> {
        let by_id: HashMap<&[u8; 32], &[u8]> = blobs.iter().map(|(_, id, data)| (id, data)).collect();
        let chunk = |fi: usize, ci: usize| -> anyhow::Result<&[u8]> {
            let id = files[fi].1.content[ci];
            by_id.get(&id.0).copied().ok_or_else(|| anyhow!("the vault did not send blob {}", id.to_hex()))
        };
        // The chunks that continue the file left open by the previous batch.
        let mut rest = queue.as_slice();
        if let Some((open, file)) = self.open.as_mut() {
            let continued = rest.iter().take_while(|&&(fi, _)| fi == *open).count();
            summary.bytes += append(file, files, &rest[..continued], &chunk)?;
            rest = &rest[continued..];
        }
        if rest.is_empty() {
            return Ok(());
        }
        self.close(files, summary)?;
        // The last file goes on in the next batch unless its last chunk is here.
        let spans = |&(fi, ci): &(usize, usize)| ci != usize::MAX && ci + 1 < files[fi].1.content.len();
        let tail_start = match rest.last() {
            Some(last) if spans(last) => rest.iter().position(|&(fi, _)| fi == last.0).unwrap_or(rest.len()),
            _ => rest.len(),
        };
        let (whole, tail) = rest.split_at(tail_start);

        let written = write_whole_files(files, whole, &chunk)?;
        summary.files += written.0;
        summary.bytes += written.1;

        if let Some(&(fi, _)) = tail.first() {
            let mut file = create(&files[fi].0)?;
            summary.bytes += append(&mut file, files, tail, &chunk)?;
            self.open = Some((fi, file));
        }
        Ok(())
    }

    fn close(&mut self, files: &[(PathBuf, Node)], summary: &mut RestoreSummary) -> anyhow::Result<()> {
        if let Some((fi, file)) = self.open.take() {
            // No fsync per file (one syncfs at the end makes the whole restore durable at a
            // fraction of the cost on a disk).
            set_file_metadata(&file, &files[fi].0, &files[fi].1)?;
            summary.files += 1;
        }
        Ok(())
    }
}

fn create(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Writes the chunks `entries` name (all of one file; `usize::MAX` marks an empty file) to
/// `file`; returns the bytes written.
fn append<'b>(
    file: &mut std::fs::File,
    files: &[(PathBuf, Node)],
    entries: &[(usize, usize)],
    chunk: &(dyn Fn(usize, usize) -> anyhow::Result<&'b [u8]> + Sync),
) -> anyhow::Result<u64> {
    let mut bytes = 0;
    for &(fi, ci) in entries.iter().filter(|&&(_, ci)| ci != usize::MAX) {
        let data = chunk(fi, ci)?;
        file.write_all(data).with_context(|| format!("writing {}", files[fi].0.display()))?;
        bytes += data.len() as u64;
    }
    Ok(bytes)
}

/// Writes files whose chunks are all in `entries` (in file order, a file's chunks together)
/// on [`WRITERS`] threads; returns the files and bytes written.
fn write_whole_files<'b>(
    files: &[(PathBuf, Node)],
    entries: &[(usize, usize)],
    chunk: &(dyn Fn(usize, usize) -> anyhow::Result<&'b [u8]> + Sync),
) -> anyhow::Result<(u64, u64)> {
    // Each file's entries, as a range of `entries`.
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, &(fi, _)) in entries.iter().enumerate() {
        match ranges.last_mut() {
            Some(r) if entries[r.start].0 == fi => r.end = i + 1,
            _ => ranges.push(i..i + 1),
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || -> anyhow::Result<(u64, u64)> {
        let (mut count, mut bytes) = (0u64, 0u64);
        loop {
            let Some(range) = ranges.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) else {
                return Ok((count, bytes));
            };
            let fi = entries[range.start].0;
            let (path, node) = &files[fi];
            let mut file = create(path)?;
            bytes += append(&mut file, files, &entries[range.clone()], chunk)?;
            set_file_metadata(&file, path, node)?;
            count += 1;
        }
    };
    if ranges.len() < 2 {
        return work();
    }
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..WRITERS).map(|_| scope.spawn(work)).collect();
        let mut total = work()?;
        for helper in helpers {
            let (count, bytes) = helper.join().map_err(|_| anyhow!("a restore writer thread panicked"))??;
            total.0 += count;
            total.1 += bytes;
        }
        Ok(total)
    })
}

/// One version of a file: where it changed.
#[derive(Debug, Serialize)]
pub struct Version {
    pub snapshot: String,
    pub time_ms: i64,
    pub size: u64,
    pub mtime_ns: i64,
    /// A short digest of the content ids: equal digests, equal contents.
    pub content: String,
    pub suspicious: bool,
}

/// The distinct versions of `path` across `snapshots` (oldest first): a snapshot is listed when
/// the file's content differs from the previous listed one.
pub async fn versions(
    conn: &Connection,
    id_key: [u8; 32],
    snapshots: &[SnapshotInfo],
    path: &str,
) -> anyhow::Result<Vec<Version>> {
    let names = components(path)?;
    let mut cache = TreeCache::new(conn.clone(), id_key);
    let roots: Vec<BlobId> = snapshots.iter().filter_map(|s| BlobId::from_hex(&s.tree).ok()).collect();
    cache.fetch(&roots).await?;
    let mut out: Vec<Version> = Vec::new();
    for s in snapshots {
        let Ok(root) = BlobId::from_hex(&s.tree) else { continue };
        let Some(node) = lookup(&mut cache, root, &names).await? else { continue };
        if node.kind != NodeKind::File {
            continue;
        }
        let mut hasher = blake3::Hasher::new();
        for id in &node.content {
            hasher.update(&id.0);
        }
        let content = hasher.finalize().to_hex()[..16].to_string();
        if out.last().is_some_and(|v| v.content == content) {
            continue;
        }
        out.push(Version {
            snapshot: s.name.clone(),
            time_ms: s.time_ms,
            size: node.size,
            mtime_ns: node.mtime_ns,
            content,
            suspicious: s.suspicious && !s.cleared,
        });
    }
    Ok(out)
}

#[derive(Debug, Default, Serialize)]
pub struct Diff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Content changed.
    pub modified: Vec<String>,
    /// Same content, other mode, owner or time.
    pub metadata: Vec<String>,
}

pub async fn diff(
    conn: &Connection,
    id_key: [u8; 32],
    a: &SnapshotInfo,
    b: &SnapshotInfo,
) -> anyhow::Result<Diff> {
    let ra = BlobId::from_hex(&a.tree).map_err(|_| anyhow!("bad tree"))?;
    let rb = BlobId::from_hex(&b.tree).map_err(|_| anyhow!("bad tree"))?;
    let mut cache = TreeCache::new(conn.clone(), id_key);
    cache.fetch_all(&[ra, rb]).await?;
    let trees = cache.into_map();
    let mut out = Diff::default();
    compare(&trees, "", Some(ra), Some(rb), &mut out)?;
    Ok(out)
}

fn compare(
    trees: &HashMap<BlobId, Tree>,
    prefix: &str,
    a: Option<BlobId>,
    b: Option<BlobId>,
    out: &mut Diff,
) -> anyhow::Result<()> {
    if a == b {
        return Ok(()); // same tree blob: nothing below differs
    }
    let get = |id: Option<BlobId>| -> anyhow::Result<Vec<Node>> {
        match id {
            None => Ok(Vec::new()),
            Some(id) => {
                trees.get(&id).map(|t| t.nodes.clone()).ok_or_else(|| anyhow!("tree {} missing", id.to_hex()))
            }
        }
    };
    let (na, nb) = (get(a)?, get(b)?);
    let names: std::collections::BTreeSet<&str> =
        na.iter().chain(nb.iter()).map(|n| n.name.as_str()).collect();
    for name in names {
        let path = format!("{prefix}/{name}");
        let x = na.iter().find(|n| n.name == name);
        let y = nb.iter().find(|n| n.name == name);
        match (x, y) {
            (Some(x), None) => {
                out.removed.push(path.clone());
                if x.kind == NodeKind::Dir {
                    compare(trees, &path, x.subtree, None, out)?;
                }
            }
            (None, Some(y)) => {
                out.added.push(path.clone());
                if y.kind == NodeKind::Dir {
                    compare(trees, &path, None, y.subtree, out)?;
                }
            }
            (Some(x), Some(y)) => {
                if x.kind == NodeKind::Dir && y.kind == NodeKind::Dir {
                    compare(trees, &path, x.subtree, y.subtree, out)?;
                } else if x.kind != y.kind || x.content != y.content || x.target != y.target {
                    out.modified.push(path);
                } else if x.mode != y.mode || x.uid != y.uid || x.gid != y.gid || x.mtime_ns != y.mtime_ns {
                    out.metadata.push(path);
                }
            }
            (None, None) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use mamori_vault::NodeKind;

    use super::*;

    fn file(dir: &Path, name: &str, chunks: &[&[u8]], mode: u32) -> (PathBuf, Node) {
        let content: Vec<BlobId> = chunks.iter().map(|c| BlobId(*blake3::hash(c).as_bytes())).collect();
        let node = Node {
            name: name.into(),
            name_is_hex: false,
            kind: NodeKind::File,
            mode,
            uid: 0,
            gid: 0,
            mtime_ns: 1_600_000_000_123_456_789,
            size: chunks.iter().map(|c| c.len() as u64).sum(),
            content,
            subtree: None,
            target: None,
            ctime_ns: 0,
            inode: 0,
        };
        (dir.join(name), node)
    }

    #[test]
    fn files_spanning_batches_empty_files_and_whole_files_are_written_bit_exact() {
        let dir = tempfile::tempdir().unwrap();
        let chunks: Vec<Vec<u8>> = (0..12u8).map(|i| vec![i; 1000 + i as usize]).collect();
        let c = |i: usize| chunks[i].as_slice();
        let files = vec![
            file(dir.path(), "a", &[c(0), c(1), c(2)], 0o640),
            file(dir.path(), "empty", &[], 0o600),
            file(dir.path(), "b", &[c(3)], 0o755),
            file(dir.path(), "c", &[c(4), c(5)], 0o644),
            file(dir.path(), "d", &[c(6), c(7), c(8), c(9)], 0o400),
            file(dir.path(), "e", &[c(10)], 0o644),
            file(dir.path(), "f", &[c(11)], 0o644),
        ];
        // (file, chunk) in order, cut into batches the way a restore cuts them: "a" spans two
        // batches, "c" two, "d" three, and "e" and "f" share the last one.
        let batches: Vec<Vec<(usize, usize)>> = vec![
            vec![(0, 0), (0, 1)],
            vec![(0, 2), (1, usize::MAX), (2, 0), (3, 0)],
            vec![(3, 1), (4, 0)],
            vec![(4, 1)],
            vec![(4, 2), (4, 3), (5, 0), (6, 0)],
        ];
        let mut writer = FileWriter::default();
        let mut summary = RestoreSummary::default();
        for batch in batches {
            let blobs: Vec<([u8; 32], &[u8])> = batch
                .iter()
                .filter(|e| e.1 != usize::MAX)
                .map(|&(fi, ci)| (files[fi].1.content[ci].0, c(chunk_index(fi, ci))))
                .collect();
            writer.write(&files, batch, Blobs::for_tests(&blobs), &mut summary).unwrap();
        }
        writer.close(&files, &mut summary).unwrap();

        assert_eq!(summary.files, files.len() as u64);
        assert_eq!(summary.bytes, chunks.iter().map(|c| c.len() as u64).sum::<u64>());
        let expected: [&[usize]; 7] = [&[0, 1, 2], &[], &[3], &[4, 5], &[6, 7, 8, 9], &[10], &[11]];
        for ((path, node), parts) in files.iter().zip(expected) {
            let want: Vec<u8> = parts.iter().flat_map(|&i| chunks[i].clone()).collect();
            assert_eq!(std::fs::read(path).unwrap(), want, "{}", path.display());
            let meta = std::fs::metadata(path).unwrap();
            assert_eq!(meta.permissions().mode() & 0o7777, node.mode, "{}", path.display());
            assert_eq!(meta.mtime() * 1_000_000_000 + meta.mtime_nsec(), node.mtime_ns);
        }

        // A blob the vault did not send is an error naming it, not a short file.
        let lone = vec![file(dir.path(), "lone", &[c(0)], 0o644)];
        let err = FileWriter::default()
            .write(&lone, vec![(0, 0)], Blobs::for_tests(&[]), &mut RestoreSummary::default())
            .unwrap_err();
        assert!(err.to_string().contains("did not send blob"), "{err}");
    }

    /// Which of the test's chunks file `fi`'s chunk `ci` is.
    fn chunk_index(fi: usize, ci: usize) -> usize {
        [0, 3, 3, 4, 6, 10, 11][fi] + ci
    }
}
