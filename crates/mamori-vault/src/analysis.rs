//! Is a snapshot what ransomware leaves behind? The vault holds the keys, so it can compare
//! each snapshot with the one before it, file by file (issue 6).
//!
//! Signals, each counted over the files of the increment:
//! - **randomised**: a file (same path, or renamed by appending an extension) whose previous
//!   content was structured (a known type, text, or far from uniform) and whose new content is
//!   indistinguishable from uniform random bytes by a chi-square test on its head
//!   (`mamori-ransom`'s [`ContentSample`]; Shannon entropy alone would call every zip random);
//! - **magic destroyed**: a file of a known type rewritten as unrecognised non-random binary;
//! - **new extensions**: files added or renamed to extensions that no ordinary tool uses and
//!   that the previous snapshot did not have;
//! - **ransom notes**: files added with a ransom-note name, or text naming two or more of
//!   bitcoin, decrypt, ransom, .onion...;
//! - **mass delete**: the share of the previous snapshot's files that are gone;
//! - **compression collapse**: the stored / plaintext ratio of the new content near 1 while
//!   the previous increment's compressed well.
//!
//! The verdict needs content evidence: renames, new extensions and deletions alone never make
//! a snapshot suspicious (a software upgrade does all three).

use std::collections::{HashMap, HashSet};

use mamori_ransom::names::{extension, is_known_extension, is_ransom_note_name};
use mamori_ransom::ContentSample;

use crate::repo::{BlobId, Repository};
use crate::tree::{read_tree, NodeKind, Snapshot};
use crate::{Error, Result};

/// A file as a snapshot has it.
#[derive(Debug, Clone)]
pub struct FileState {
    pub size: u64,
    pub content: Vec<BlobId>,
}

/// What the analysis found, with the paths as evidence (at most [`EVIDENCE`] each).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Analysis {
    /// Files in the directories that changed (unchanged directories are not read).
    pub files: u64,
    pub changed: u64,
    pub added: u64,
    pub deleted: u64,
    pub randomized: Vec<String>,
    pub magic_destroyed: Vec<String>,
    pub new_extensions: Vec<String>,
    pub ransom_notes: Vec<String>,
    /// Counts behind the evidence lists (which are cut at [`EVIDENCE`]).
    pub randomized_count: u64,
    pub magic_destroyed_count: u64,
    pub new_extension_count: u64,
    /// Stored / plaintext bytes of the new content (None when too little was added to judge).
    pub compression_ratio: Option<f64>,
    pub previous_compression_ratio: Option<f64>,
    pub suspicious: bool,
    /// Why, in words, for the alert.
    pub reasons: Vec<String>,
}

/// Most paths kept per signal.
pub const EVIDENCE: usize = 20;
/// Content-changed files that must look encrypted, at least.
const MIN_RANDOMIZED: u64 = 10;
/// ... and at least this share of the content-changed files.
const MIN_RANDOMIZED_SHARE: f64 = 0.2;
/// Less new content than this says nothing about compression.
const MIN_RATIO_BYTES: u64 = 256 * 1024;

/// Calls `each(repo, directory, files before, files after)` for every directory whose tree differs
/// between two snapshot trees (files by name). A subtree with the same id in both is the same
/// content and is not read, and only one directory is held at a time: an increment of a large
/// share costs as much as what changed in it.
pub fn changed_directories(
    repo: &mut Repository,
    previous: Option<BlobId>,
    current: BlobId,
    mut each: impl FnMut(&mut Repository, &str, Vec<(String, FileState)>, Vec<(String, FileState)>) -> Result<()>,
) -> Result<()> {
    let mut stack = vec![(String::new(), previous, Some(current))];
    while let Some((prefix, old, new)) = stack.pop() {
        if old == new {
            continue;
        }
        let mut sides: [Vec<(String, FileState)>; 2] = [Vec::new(), Vec::new()];
        let mut subdirs: HashMap<String, (Option<BlobId>, Option<BlobId>)> = HashMap::new();
        for (side, id) in [(0, old), (1, new)] {
            let Some(id) = id else { continue };
            for node in read_tree(repo, &id)?.nodes {
                match node.kind {
                    NodeKind::Dir => {
                        let path = format!("{prefix}/{}", node.name);
                        let sub = node.subtree.ok_or_else(|| Error::Corrupt(format!("directory {path}")))?;
                        let entry = subdirs.entry(node.name).or_default();
                        if side == 0 {
                            entry.0 = Some(sub);
                        } else {
                            entry.1 = Some(sub);
                        }
                    }
                    NodeKind::File => {
                        sides[side].push((node.name, FileState { size: node.size, content: node.content }))
                    }
                    NodeKind::Symlink | NodeKind::Special => {}
                }
            }
        }
        let [before, after] = sides;
        each(repo, &prefix, before, after)?;
        for (name, (old_sub, new_sub)) in subdirs {
            stack.push((format!("{prefix}/{name}"), old_sub, new_sub));
        }
    }
    Ok(())
}

/// Samples of file heads, by first blob, so that unchanged content is sampled once.
#[derive(Default)]
pub struct Samples(HashMap<BlobId, ContentSample>);

impl Samples {
    fn get(&mut self, repo: &mut Repository, file: &FileState) -> Result<Option<ContentSample>> {
        let Some(first) = file.content.first() else { return Ok(None) };
        if let Some(sample) = self.0.get(first) {
            return Ok(Some(sample.clone()));
        }
        let head = repo.get(first)?;
        let mut sample = ContentSample::from_bytes(&head);
        sample.size = file.size;
        self.0.insert(*first, sample.clone());
        Ok(Some(sample))
    }
}

/// Compares `current` with `previous` (None for the first snapshot).
pub fn analyze(
    repo: &mut Repository,
    previous: Option<&Snapshot>,
    current: &Snapshot,
    samples: &mut Samples,
) -> Result<Analysis> {
    // Without a previous snapshot nothing changed, so nothing can look encrypted, and the
    // other signals count only next to that evidence (see `judge`): a first snapshot is not
    // read at all.
    let Some(previous_snapshot) = previous else {
        return Ok(Analysis::default());
    };
    let mut a = Analysis::default();
    let mut old_extensions: HashSet<String> = HashSet::new();
    // Added or renamed files under an unknown extension, judged once every old extension is known.
    let mut unknown_extensions: Vec<(String, String)> = Vec::new();
    // New small files are read for ransom-note wording only when content evidence exists:
    // notes count for nothing without it (see `judge`).
    let mut small_added: Vec<(String, FileState)> = Vec::new();
    let mut previous_files = 0u64;
    changed_directories(repo, Some(previous_snapshot.tree), current.tree, |repo, dir, before, after| {
        previous_files += before.len() as u64;
        a.files += after.len() as u64;
        old_extensions.extend(before.iter().filter_map(|(name, _)| extension(name.as_ref())));
        let before: HashMap<String, FileState> = before.into_iter().collect();
        let after_names: HashSet<&str> = after.iter().map(|(n, _)| n.as_str()).collect();
        // A deleted `x` and an added `x.locked` in the same directory are one file, renamed.
        let mut renamed_from: HashMap<&str, &str> = HashMap::new();
        for (name, _) in &after {
            if before.contains_key(name) {
                continue;
            }
            if let Some((stem, _)) = name.rsplit_once('.') {
                if before.contains_key(stem) && !after_names.contains(stem) {
                    renamed_from.insert(name.as_str(), stem);
                }
            }
        }
        let renamed_away: HashSet<&str> = renamed_from.values().copied().collect();
        a.deleted += before
            .keys()
            .filter(|n| !after_names.contains(n.as_str()) && !renamed_away.contains(n.as_str()))
            .count() as u64;
        for (name, file) in &after {
            let path = format!("{dir}/{name}");
            let renamed = renamed_from.get(name.as_str()).copied();
            let old_name = if before.contains_key(name) { Some(name.as_str()) } else { renamed };
            if renamed.is_some() || !before.contains_key(name) {
                if let Some(ext) = extension(name.as_ref()) {
                    if !is_known_extension(&ext) {
                        unknown_extensions.push((ext, path.clone()));
                    }
                }
            }
            match old_name.and_then(|n| before.get(n)) {
                Some(old) if old.content == file.content => {}
                Some(old) => {
                    a.changed += 1;
                    let (Some(was), Some(now)) = (samples.get(repo, old)?, samples.get(repo, file)?) else {
                        continue;
                    };
                    if was.is_structured() && now.looks_random() {
                        a.randomized_count += 1;
                        push(&mut a.randomized, &path);
                    } else if was.kind.has_magic()
                        && !now.kind.is_known()
                        && !now.is_text
                        && !now.looks_random()
                    {
                        a.magic_destroyed_count += 1;
                        push(&mut a.magic_destroyed, &path);
                    }
                }
                None => {
                    a.added += 1;
                    if is_ransom_note_name(name.as_ref()) {
                        push(&mut a.ransom_notes, &path);
                    } else if file.size < 64 * 1024 {
                        small_added.push((path, file.clone()));
                    }
                }
            }
        }
        Ok(())
    })?;
    for (ext, path) in &unknown_extensions {
        if !old_extensions.contains(ext) {
            a.new_extension_count += 1;
            push(&mut a.new_extensions, path);
        }
    }

    if a.randomized_count + a.magic_destroyed_count > 0 {
        for (path, file) in &small_added {
            if samples.get(repo, file)?.is_some_and(|s| s.is_text && s.ransom_words >= 2) {
                push(&mut a.ransom_notes, path);
            }
        }
    }
    a.compression_ratio = ratio(current.added_raw, current.added_stored);
    a.previous_compression_ratio = previous.and_then(|p| ratio(p.added_raw, p.added_stored));
    judge(&mut a, previous_files);
    Ok(a)
}

fn push(list: &mut Vec<String>, path: &str) {
    if list.len() < EVIDENCE {
        list.push(path.to_string());
    }
}

fn ratio(raw: u64, stored: u64) -> Option<f64> {
    (raw >= MIN_RATIO_BYTES).then(|| stored as f64 / raw as f64)
}

fn judge(a: &mut Analysis, previous_files: u64) {
    let content_evidence = a.randomized_count + a.magic_destroyed_count;
    let share = content_evidence as f64 / a.changed.max(1) as f64;
    if content_evidence >= MIN_RANDOMIZED && share >= MIN_RANDOMIZED_SHARE {
        a.reasons.push(format!(
            "{} of {} changed files went from structured to random-looking or lost their file type",
            content_evidence, a.changed
        ));
    }
    if !a.ransom_notes.is_empty() && content_evidence > 0 {
        a.reasons.push(format!("{} ransom-note-like files appeared", a.ransom_notes.len()));
    }
    if let (Some(now), Some(before)) = (a.compression_ratio, a.previous_compression_ratio) {
        if now > 0.95 && before < 0.7 && content_evidence > 0 {
            a.reasons
                .push(format!("new content no longer compresses (stored/raw {now:.2}, was {before:.2})"));
        }
    }
    a.suspicious = !a.reasons.is_empty();
    // Context for the alert, never a verdict alone.
    if a.suspicious {
        if a.new_extension_count > 0 {
            a.reasons.push(format!("{} files under new unknown extensions", a.new_extension_count));
        }
        if previous_files > 0 && a.deleted * 5 >= previous_files {
            a.reasons.push(format!("{} of {} files deleted", a.deleted, previous_files));
        }
    }
}
