//! `mamori backup run`: walk the sources, skip files unchanged since the previous snapshot
//! (size, mtime, ctime and inode), cut the rest into chunks, ask the vault which chunks it
//! lacks, upload those, and commit the snapshot once everything it names is stored.
//!
//! The walk (reading, chunking, hashing) runs on a blocking thread and hands batches of
//! chunks to the uploader over a small bounded channel, so reading and uploading overlap and
//! memory stays bounded whatever the size of the tree.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use mamori_proto::vault::{self as wire};
use mamori_vault::chunk::ChunkerConfig;
use mamori_vault::{BlobId, Node, NodeKind, Tree};
use serde::Serialize;

use crate::connection::Connection;
use crate::trees::TreeCache;

/// A batch is sent when it holds this many bytes or ids.
const BATCH_BYTES: usize = 4 * 1024 * 1024;
const BATCH_IDS: usize = 4000;
/// Batches between the walker and the uploader; with two uploads in flight this bounds the
/// memory for file contents to about (2 + 2) × BATCH_BYTES plus one largest chunk.
const CHANNEL_BATCHES: usize = 2;
const UPLOADS_IN_FLIGHT: usize = 2;

#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub sources: Vec<PathBuf>,
    pub excludes: Vec<String>,
    pub hostname: String,
    pub progress: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BackupSummary {
    pub snapshot: Option<wire::SnapshotInfo>,
    pub suspicious: bool,
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    /// Files whose metadata matched the previous snapshot: not read.
    pub files_unchanged: u64,
    pub chunks_uploaded: u64,
    pub bytes_uploaded: u64,
    pub excluded: u64,
    /// Paths that could not be read, with why; the rest was backed up.
    pub problems: Vec<String>,
    pub seconds: f64,
}

/// Chunks already framed for the upload body, so that a full backup (where the vault lacks
/// everything) sends the batch without copying it.
#[derive(Default)]
struct Batch {
    body: Vec<u8>,
    /// Each blob's id and its frame's range in `body`.
    frames: Vec<(BlobId, std::ops::Range<usize>)>,
}

#[derive(Default)]
struct Counters {
    bytes_read: AtomicU64,
    bytes_uploaded: AtomicU64,
    chunks_uploaded: AtomicU64,
    files: AtomicU64,
}

pub async fn backup(conn: &Connection, opts: &BackupOptions) -> anyhow::Result<BackupSummary> {
    let started = std::time::Instant::now();
    if opts.sources.is_empty() {
        bail!("nothing to back up: give at least one --source");
    }
    let mut sources = Vec::new();
    for s in &opts.sources {
        let real = std::fs::canonicalize(s).with_context(|| format!("source {}", s.display()))?;
        sources.push(real);
    }
    sources.sort();
    sources.dedup();
    let excludes = build_excludes(&opts.excludes)?;
    let session = conn.session().await?;
    let id_key = parse_key(&session.id_key)?;
    let chunker = ChunkerConfig { min: session.chunk_min, avg: session.chunk_avg, max: session.chunk_max };
    chunker.validate().map_err(|e| anyhow!("the vault's chunker settings: {e}"))?;
    let paths: Vec<String> = sources.iter().map(|p| p.display().to_string()).collect();

    // The previous snapshot of the same sources: its trees say which files are unchanged.
    let previous = conn.snapshots().await?.into_iter().rev().find(|s| s.paths == paths);
    let mut parent_trees = TreeCache::new(conn.clone(), id_key);
    let parent_root = match &previous {
        Some(p) => {
            let root =
                BlobId::from_hex(&p.tree).map_err(|_| anyhow!("previous snapshot names a bad tree"))?;
            parent_trees.fetch_all(&[root]).await?;
            conn.release_buffers();
            Some(root)
        }
        None => None,
    };

    let counters = Arc::new(Counters::default());
    let progress = Progress::new(opts.progress, counters.clone());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(CHANNEL_BATCHES);
    let walker = Walker {
        id_key,
        chunker,
        excludes,
        tx,
        batch: Batch::default(),
        queued: HashSet::new(),
        parent: parent_trees.into_map(),
        summary: BackupSummary::default(),
        counters: counters.clone(),
    };
    let walk = tokio::task::spawn_blocking(move || walker.run(&sources, parent_root));

    let mut uploads = tokio::task::JoinSet::new();
    let mut failure: Option<anyhow::Error> = None;
    while let Some(batch) = rx.recv().await {
        while uploads.len() >= UPLOADS_IN_FLIGHT {
            if let Some(done) = uploads.join_next().await {
                if let Err(e) = done.map_err(anyhow::Error::from).and_then(|r| r) {
                    failure.get_or_insert(e);
                }
            }
        }
        if failure.is_some() {
            break;
        }
        let conn = conn.clone();
        let counters = counters.clone();
        uploads.spawn(async move { send_batch(&conn, batch, &counters).await });
    }
    while let Some(done) = uploads.join_next().await {
        if let Err(e) = done.map_err(anyhow::Error::from).and_then(|r| r) {
            failure.get_or_insert(e);
        }
    }
    drop(rx);
    let walked = walk.await?;
    progress.finish();
    if let Some(e) = failure {
        return Err(e.context("backup failed; no snapshot was made"));
    }
    let (root, mut summary) = walked?;
    let info = conn
        .commit(&wire::CommitRequest {
            hostname: opts.hostname.clone(),
            paths,
            tree: root.to_hex(),
            time_ms: now_ms(),
            excludes: opts.excludes.clone(),
        })
        .await?;
    summary.suspicious = info.suspicious;
    summary.snapshot = Some(info);
    summary.chunks_uploaded = counters.chunks_uploaded.load(Ordering::Relaxed);
    summary.bytes_uploaded = counters.bytes_uploaded.load(Ordering::Relaxed);
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

async fn send_batch(conn: &Connection, batch: Batch, counters: &Counters) -> anyhow::Result<()> {
    let ids: Vec<String> = batch.frames.iter().map(|(id, _)| id.to_hex()).collect();
    let missing: HashSet<String> = conn.missing(ids).await?.into_iter().collect();
    if missing.is_empty() {
        return Ok(());
    }
    let n = missing.len() as u64;
    let body = if missing.len() == batch.frames.len() {
        batch.body
    } else {
        let mut body = Vec::new();
        for (id, range) in &batch.frames {
            if missing.contains(&id.to_hex()) {
                body.extend_from_slice(&batch.body[range.clone()]);
            }
        }
        // Freed before the upload rather than after it: with two uploads in flight, holding
        // both copies was up to 8 MiB more at the peak of an incremental backup.
        drop(batch);
        body
    };
    let len = body.len() as u64;
    conn.upload(body).await?;
    counters.chunks_uploaded.fetch_add(n, Ordering::Relaxed);
    counters.bytes_uploaded.fetch_add(len, Ordering::Relaxed);
    Ok(())
}

struct Walker {
    id_key: [u8; 32],
    chunker: ChunkerConfig,
    excludes: globset::GlobSet,
    tx: tokio::sync::mpsc::Sender<Batch>,
    batch: Batch,
    /// Every blob this run has queued, so a chunk repeated across files is sent once.
    queued: HashSet<BlobId>,
    parent: HashMap<BlobId, Tree>,
    summary: BackupSummary,
    counters: Arc<Counters>,
}

impl Walker {
    fn run(
        mut self,
        sources: &[PathBuf],
        parent_root: Option<BlobId>,
    ) -> anyhow::Result<(BlobId, BackupSummary)> {
        let root = self.virtual_dir(Path::new("/"), sources, parent_root)?;
        self.send()?;
        Ok((root, self.summary))
    }

    /// The entries of a directory's tree in the previous snapshot, by name, taken out of the
    /// map so that their memory is freed as the walk goes on instead of being held to the end.
    /// A directory's tree names the inodes of its entries, so two directories with entries
    /// never share one; an empty directory has nothing to compare.
    fn take_parent(&mut self, id: Option<BlobId>) -> HashMap<(String, bool), Node> {
        let nodes = id.and_then(|id| self.parent.remove(&id)).map(|tree| tree.nodes).unwrap_or_default();
        nodes.into_iter().map(|n| ((n.name.clone(), n.name_is_hex), n)).collect()
    }

    fn put(&mut self, kind: u8, data: Vec<u8>) -> anyhow::Result<BlobId> {
        let id = BlobId(*blake3::keyed_hash(&self.id_key, &data).as_bytes());
        if self.queued.insert(id) {
            if self.batch.body.is_empty() {
                self.batch.body.reserve(BATCH_BYTES + wire::FRAME_HEADER + data.len());
            }
            let start = self.batch.body.len();
            wire::encode_frame(&mut self.batch.body, kind, &id.0, &data);
            self.batch.frames.push((id, start..self.batch.body.len()));
            if self.batch.body.len() >= BATCH_BYTES || self.batch.frames.len() >= BATCH_IDS {
                self.send()?;
            }
        }
        Ok(id)
    }

    fn send(&mut self) -> anyhow::Result<()> {
        if self.batch.frames.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        // The uploader stopped (an upload failed): its error is what the user needs to see.
        self.tx.blocking_send(batch).map_err(|_| anyhow!("the upload stopped"))
    }

    fn put_tree(&mut self, tree: &Tree) -> anyhow::Result<BlobId> {
        let json = serde_json::to_vec(tree)?;
        self.put(wire::KIND_TREE, json)
    }

    /// The directories above the sources: only the entries that lead to a source.
    fn virtual_dir(
        &mut self,
        dir: &Path,
        sources: &[PathBuf],
        parent: Option<BlobId>,
    ) -> anyhow::Result<BlobId> {
        let mut parent_tree = self.take_parent(parent);
        let mut children: Vec<(std::ffi::OsString, Vec<PathBuf>)> = Vec::new();
        for source in sources {
            let Ok(rest) = source.strip_prefix(dir) else { continue };
            let Some(first) = rest.components().next() else { continue };
            let name = first.as_os_str().to_os_string();
            match children.iter_mut().find(|(n, _)| *n == name) {
                Some((_, list)) => list.push(source.clone()),
                None => children.push((name, vec![source.clone()])),
            }
        }
        children.sort_by(|a, b| a.0.cmp(&b.0));
        let mut tree = Tree::default();
        for (name, under) in children {
            let path = dir.join(&name);
            let meta = std::fs::symlink_metadata(&path).with_context(|| format!("{}", path.display()))?;
            let previous = parent_tree.remove(&mamori_vault::tree::name_of(&name));
            let mut node = Node::from_metadata(&name, &meta);
            if under.contains(&path) {
                // The source itself, stored whole.
                if !self.fill(&path, &meta, &mut node, previous.as_ref())? {
                    continue;
                }
            } else {
                node.kind = NodeKind::Dir;
                node.subtree = Some(self.virtual_dir(&path, &under, previous.and_then(|p| p.subtree))?);
            }
            tree.nodes.push(node);
        }
        self.put_tree(&tree)
    }

    /// Stores a directory's entries recursively.
    fn store_dir(&mut self, dir: &Path, parent: Option<BlobId>) -> anyhow::Result<BlobId> {
        let mut parent_tree = self.take_parent(parent);
        let mut entries: Vec<_> = match std::fs::read_dir(dir) {
            Ok(rd) => {
                let mut v = Vec::new();
                for entry in rd {
                    match entry {
                        Ok(e) => v.push(e),
                        Err(e) => self.summary.problems.push(format!("{}: {e}", dir.display())),
                    }
                }
                v
            }
            Err(e) => {
                self.summary.problems.push(format!("{}: {e}", dir.display()));
                Vec::new()
            }
        };
        entries.sort_by_key(|e| e.file_name());
        let mut tree = Tree::default();
        for entry in entries {
            let path = entry.path();
            if self.excludes.is_match(&path) {
                self.summary.excluded += 1;
                continue;
            }
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    self.summary.problems.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            let name = entry.file_name();
            let previous = parent_tree.remove(&mamori_vault::tree::name_of(&name));
            let mut node = Node::from_metadata(&name, &meta);
            if self.fill(&path, &meta, &mut node, previous.as_ref())? {
                tree.nodes.push(node);
            }
        }
        self.put_tree(&tree)
    }

    /// Fills in a node's content by its type; false when the entry could not be read (the
    /// problem is recorded).
    fn fill(
        &mut self,
        path: &Path,
        meta: &std::fs::Metadata,
        node: &mut Node,
        previous: Option<&Node>,
    ) -> anyhow::Result<bool> {
        let file_type = meta.file_type();
        if file_type.is_dir() {
            node.kind = NodeKind::Dir;
            node.subtree = Some(self.store_dir(path, previous.and_then(|p| p.subtree))?);
            self.summary.dirs += 1;
        } else if file_type.is_symlink() {
            node.kind = NodeKind::Symlink;
            match std::fs::read_link(path) {
                Ok(target) => node.target = Some(hex::encode(target.as_os_str().as_bytes())),
                Err(e) => {
                    self.summary.problems.push(format!("{}: {e}", path.display()));
                    return Ok(false);
                }
            }
        } else if file_type.is_file() {
            node.kind = NodeKind::File;
            self.summary.files += 1;
            self.counters.files.fetch_add(1, Ordering::Relaxed);
            if let Some(p) = previous.filter(|p| unchanged(p, node)) {
                node.content = p.content.clone();
                node.size = p.size;
                self.summary.files_unchanged += 1;
                self.summary.bytes += p.size;
                return Ok(true);
            }
            match self.store_file(path, meta.len()) {
                Ok((content, size)) => {
                    node.content = content;
                    node.size = size;
                    self.summary.bytes += size;
                }
                Err(e) => {
                    self.summary.problems.push(format!("{}: {e:#}", path.display()));
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn store_file(&mut self, path: &Path, size_hint: u64) -> anyhow::Result<(Vec<BlobId>, u64)> {
        use std::os::unix::fs::OpenOptionsExt;
        // Never follow a link swapped in after the walk looked; never block on a FIFO.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)?;
        let mut content = Vec::new();
        if size_hint <= u64::from(self.chunker.min) {
            // FastCDC makes one chunk of anything up to the minimum size; reading it whole
            // avoids the stream chunker's buffer of the maximum chunk size per small file.
            let mut data = Vec::with_capacity(size_hint as usize);
            file.read_to_end(&mut data)?;
            if data.len() as u64 > u64::from(self.chunker.min) {
                return self.chunk_bytes(data);
            }
            let size = data.len() as u64;
            self.counters.bytes_read.fetch_add(size, Ordering::Relaxed);
            if size > 0 {
                content.push(self.put(wire::KIND_DATA, data)?);
            }
            return Ok((content, size));
        }
        let chunker =
            fastcdc::v2020::StreamCDC::new(file, self.chunker.min, self.chunker.avg, self.chunker.max);
        let mut size = 0u64;
        for chunk in chunker {
            let chunk = chunk.map_err(|e| anyhow!("reading: {e}"))?;
            size += chunk.length as u64;
            self.counters.bytes_read.fetch_add(chunk.length as u64, Ordering::Relaxed);
            content.push(self.put(wire::KIND_DATA, chunk.data)?);
        }
        Ok((content, size))
    }

    /// A file that grew past the small-file limit between stat and read.
    fn chunk_bytes(&mut self, data: Vec<u8>) -> anyhow::Result<(Vec<BlobId>, u64)> {
        let mut content = Vec::new();
        let cuts: Vec<(usize, usize)> =
            fastcdc::v2020::FastCDC::new(&data, self.chunker.min, self.chunker.avg, self.chunker.max)
                .map(|c| (c.offset, c.length))
                .collect();
        for (offset, length) in cuts {
            content.push(self.put(wire::KIND_DATA, data[offset..offset + length].to_vec())?);
        }
        self.counters.bytes_read.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok((content, data.len() as u64))
    }
}

fn unchanged(previous: &Node, now: &Node) -> bool {
    previous.kind == NodeKind::File
        && previous.size == now.size
        && previous.mtime_ns == now.mtime_ns
        && previous.ctime_ns == now.ctime_ns
        && previous.inode == now.inode
        && previous.ctime_ns != 0
}

fn build_excludes(patterns: &[String]) -> anyhow::Result<globset::GlobSet> {
    let mut set = globset::GlobSetBuilder::new();
    for p in patterns {
        set.add(globset::Glob::new(p).with_context(|| format!("exclude pattern `{p}`"))?);
    }
    Ok(set.build()?)
}

pub(crate) fn parse_key(text: &str) -> anyhow::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(text, &mut key).map_err(|_| anyhow!("the vault sent a malformed id key"))?;
    Ok(key)
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A spinner with counts on stderr (hidden when stderr is not a terminal or with --quiet).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    stop: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn new(enabled: bool, counters: Arc<Counters>) -> Progress {
        if !enabled {
            return Progress { bar: None, stop: None };
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        let task_bar = bar.clone();
        let stop = tokio::spawn(async move {
            loop {
                task_bar.set_message(format!(
                    "{} files, {} read, {} uploaded",
                    counters.files.load(Ordering::Relaxed),
                    indicatif::HumanBytes(counters.bytes_read.load(Ordering::Relaxed)),
                    indicatif::HumanBytes(counters.bytes_uploaded.load(Ordering::Relaxed)),
                ));
                task_bar.tick();
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        });
        Progress { bar: Some(bar), stop: Some(stop) }
    }

    fn finish(self) {
        if let Some(stop) = self.stop {
            stop.abort();
        }
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
