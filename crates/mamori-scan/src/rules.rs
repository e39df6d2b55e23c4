//! YARA rules: collected from files and directories, compiled with YARA-X, cached on disk.
//!
//! Compiling a real rule set (signature-base: ~5,900 rules) takes seconds; the compiled form
//! is cached under a key made of every rule file's path and content, the YARA-X version and
//! the external variables, so the next run with the same rules loads it in milliseconds.
//! Any change of a rule file, or of YARA-X, makes a new key. The cache holds the rules'
//! native code, so it is only read back when it is owned by this user and writable by no one
//! else (it lives in the private data directory).
//!
//! Each rule file is compiled in a namespace of its own (its path), so that two files may
//! use the same rule name. A rule that does not compile is reported with file and line and
//! left out; every other rule, in that file too, still protects.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use yara_x::{Compiler, Rules, SourceCode};

/// External variables that THOR/LOKI-style rule sets read; set per scanned file.
pub const EXTERNALS: [&str; 5] = ["filename", "filepath", "extension", "filetype", "owner"];

/// Bumped whenever the cache file layout or what goes into the key changes.
const CACHE_FORMAT: &[u8] = b"mamori-rules-cache-v3";
const CACHE_MAGIC: &[u8; 8] = b"MAMRULES";

/// A rule that could not be compiled.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RuleError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// What loading the rules found, kept with the cache so a cached load reports it too.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RulesReport {
    pub files: usize,
    pub rules: usize,
    pub errors: Vec<RuleError>,
    /// True when the compiled rules came from the on-disk cache.
    #[serde(skip)]
    pub from_cache: bool,
}

/// Compiled rules and where they came from.
pub struct LoadedRules {
    pub rules: Rules,
    /// The same rules with some left out, for objects that cannot match those
    /// ([`crate::prefilter`]).
    pub reduced: Reduced,
    pub report: RulesReport,
    /// Digest of the sources, the YARA-X version and the externals.
    pub key: [u8; 32],
}

/// Rule sets with the rules left out that provably cannot match some objects
/// ([`crate::prefilter`]). Each is `None` when nothing could be left out, or when the compiled
/// set did not hold exactly the expected rules.
#[derive(Default)]
pub struct Reduced {
    /// Without the rules that can only match objects starting with `MZ`.
    pub without_mz: Option<Rules>,
    /// Without every rule that can only match objects starting with one of `magics`.
    pub without_magic: Option<Rules>,
    pub magics: Vec<Vec<u8>>,
}

/// The rule files named by `paths`: files as given, directories searched for `.yar`/`.yara`
/// (sorted, so that the cache key does not depend on directory order).
pub fn collect_rule_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            // Rule directories are often links into a store of available rules: follow them.
            for entry in ignore::WalkBuilder::new(path).standard_filters(false).follow_links(true).build() {
                let entry = entry.map_err(|e| std::io::Error::other(e.to_string()))?;
                let p = entry.path();
                let is_rule = p
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| e.eq_ignore_ascii_case("yar") || e.eq_ignore_ascii_case("yara"));
                if is_rule && entry.file_type().is_some_and(|t| t.is_file()) {
                    found.push(p.to_path_buf());
                }
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

/// Compiles the rule files, or loads them from `cache_dir` when compiled before.
/// An unreadable rule file is an `Err`: the user named it and would lose its protection.
pub fn load(files: &[PathBuf], cache_dir: Option<&Path>) -> anyhow::Result<LoadedRules> {
    let mut sources = Vec::with_capacity(files.len());
    let mut key = blake3::Hasher::new();
    key.update(CACHE_FORMAT);
    key.update(yara_x::VERSION.as_bytes());
    for name in EXTERNALS {
        key.update(name.as_bytes());
    }
    for file in files {
        let bytes = std::fs::read(file)
            .map_err(|e| anyhow::anyhow!("cannot read rule file {}: {e}", file.display()))?;
        let path = file.to_string_lossy();
        key.update(&(path.len() as u64).to_le_bytes());
        key.update(path.as_bytes());
        key.update(&(bytes.len() as u64).to_le_bytes());
        key.update(&bytes);
        sources.push((file, bytes));
    }
    let key: [u8; 32] = key.finalize().into();
    let cache_file = cache_dir.map(|d| d.join(format!("rules-{}.bin", &hex::encode(key)[..32])));

    if let Some(path) = &cache_file {
        if let Some((rules, reduced, mut report)) = read_cache(path) {
            report.from_cache = true;
            return Ok(LoadedRules { rules, reduced, report, key });
        }
    }

    // The rule texts are analysed on another thread while the full set compiles; then the two
    // reduced sets compile side by side. Measured with signature-base on 2 cores: 6.3 s instead
    // of 8.0 s one after the other, and 245 instead of 220 MiB at the peak of compiling, which
    // stays below what a scan of the tree then uses.
    let texts: Vec<&[u8]> = sources.iter().map(|(_, bytes)| bytes.as_slice()).collect();
    let origins: Vec<&PathBuf> = sources.iter().map(|(file, _)| *file).collect();
    let (full, split) = std::thread::scope(|scope| {
        let split = scope.spawn(|| crate::prefilter::split(&texts));
        let full = compile(origins.iter().copied().zip(texts.iter().copied()));
        // A panic in the analysis only costs the reduced sets' speed.
        (full, split.join().ok())
    });
    let build = |r: &crate::prefilter::Reduced| {
        if r.dropped == 0 {
            return None;
        }
        let pairs = origins.iter().copied().zip(r.sources.iter().map(Vec::as_slice));
        compile(pairs).ok().map(|(rules, _)| (rules, r.dropped))
    };
    let reduced = split.map(|split| {
        let (without_mz, without_magic) = std::thread::scope(|scope| {
            let without_mz = scope.spawn(|| build(&split.without_mz));
            let without_magic = build(&split.without_magic);
            // A panic there only costs that set's speed.
            (without_mz.join().ok().flatten(), without_magic)
        });
        (without_mz, without_magic, split.magics)
    });
    let (rules, errors) = full?;
    let mut report = RulesReport { files: files.len(), errors, ..Default::default() };
    report.rules = rules.iter().len();
    let checked = |set: Option<(Rules, usize)>| {
        set.filter(|(r, dropped)| same_minus(&rules, r, *dropped)).map(|(r, _)| r)
    };
    let reduced = match reduced {
        Some((without_mz, without_magic, magics)) => {
            Reduced { without_mz: checked(without_mz), without_magic: checked(without_magic), magics }
        }
        None => Reduced::default(),
    };

    if let Some(path) = &cache_file {
        // A cache that cannot be written only costs time on the next run.
        let _ = write_cache(path, &rules, &reduced, &report);
    }
    // Compiling leaves hundreds of MiB of freed heap in the allocator's arenas; hand it back to
    // the system so that it does not count against the scan's footprint.
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions; it only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
    Ok(LoadedRules { rules, reduced, report, key })
}

/// Compiles `(file, source)` pairs, each file in a namespace named after its path; rules that
/// do not compile are left out and returned as errors.
fn compile<'a>(
    sources: impl Iterator<Item = (&'a PathBuf, &'a [u8])>,
) -> anyhow::Result<(Rules, Vec<RuleError>)> {
    let mut compiler = Compiler::new();
    for name in EXTERNALS {
        compiler.define_global(name, "")?;
    }
    for (file, bytes) in sources {
        let origin = file.to_string_lossy().into_owned();
        compiler.new_namespace(&origin);
        let src = SourceCode::from(bytes).with_origin(origin);
        // Errors are read back from `compiler.errors()` below, all of them, not just the first.
        let _ = compiler.add_source(src);
    }
    let errors = compiler.errors().iter().map(rule_error).collect();
    Ok((compiler.build(), errors))
}

/// Whether `reduced` holds exactly the rules of `full` but `dropped` of them: the check that
/// leaving rules out did not make others disappear (or appear).
fn same_minus(full: &Rules, reduced: &Rules, dropped: usize) -> bool {
    let all: std::collections::HashSet<(&str, &str)> =
        full.iter().map(|r| (r.namespace(), r.identifier())).collect();
    let mut seen = std::collections::HashSet::new();
    reduced.iter().len() + dropped == all.len()
        && reduced.iter().all(|r| {
            all.contains(&(r.namespace(), r.identifier())) && seen.insert((r.namespace(), r.identifier()))
        })
}

fn rule_error(err: &yara_x::errors::CompileError) -> RuleError {
    let label = err.labels().next().and_then(|l| serde_json::to_value(&l).ok());
    let file =
        label.as_ref().and_then(|l| l.get("code_origin")?.as_str().map(PathBuf::from)).unwrap_or_default();
    let line = label.as_ref().and_then(|l| l.get("line")?.as_u64()).map(|l| l as usize);
    let mut message = err.title().to_string();
    if let Some(text) = err.labels().next().map(|l| l.text().to_string()) {
        if !text.is_empty() && text != message {
            message = format!("{message}: {text}");
        }
    }
    RuleError { file, line, message }
}

fn read_cache(path: &Path) -> Option<(Rules, Reduced, RulesReport)> {
    // The cache holds native code that will be run: only trust a file that we own and that
    // nobody else can have written.
    let meta = std::fs::symlink_metadata(path).ok()?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if !meta.is_file() || meta.uid() != euid || meta.mode() & 0o022 != 0 {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    let rest = bytes.strip_prefix(CACHE_MAGIC.as_slice())?;
    // A torn or bit-rotted file must never reach the deserialiser: it holds native code.
    let (checksum, mut payload) = rest.split_at_checked(32)?;
    if blake3::hash(payload).as_bytes() != checksum {
        return None;
    }
    let mut next = || -> Option<&[u8]> {
        let (len, rest) = payload.split_at_checked(8)?;
        let len = usize::try_from(u64::from_le_bytes(len.try_into().ok()?)).ok()?;
        let (part, rest) = rest.split_at_checked(len)?;
        payload = rest;
        Some(part)
    };
    let report: RulesReport = serde_json::from_slice(next()?).ok()?;
    let rules = Rules::deserialize(next()?).ok()?;
    let optional =
        |part: &[u8]| if part.is_empty() { Some(None) } else { Rules::deserialize(part).ok().map(Some) };
    let without_mz = optional(next()?)?;
    let without_magic = optional(next()?)?;
    let magics: Vec<Vec<u8>> = serde_json::from_slice(next()?).ok()?;
    Some((rules, Reduced { without_mz, without_magic, magics }, report))
}

fn write_cache(path: &Path, rules: &Rules, reduced: &Reduced, report: &RulesReport) -> anyhow::Result<()> {
    let dir = path.parent().ok_or_else(|| anyhow::anyhow!("cache path has no parent"))?;
    std::fs::create_dir_all(dir)?;
    let optional = |r: Option<&Rules>| r.map_or(Ok(Vec::new()), Rules::serialize);
    // Layout: length-prefixed report, full set, set without MZ rules, set without magic rules
    // (either may be empty), magics.
    let parts = [
        serde_json::to_vec(report)?,
        rules.serialize()?,
        optional(reduced.without_mz.as_ref())?,
        optional(reduced.without_magic.as_ref())?,
        serde_json::to_vec(&reduced.magics)?,
    ];
    let mut payload = Vec::with_capacity(parts.iter().map(|p| 8 + p.len()).sum());
    for part in &parts {
        payload.extend_from_slice(&(part.len() as u64).to_le_bytes());
        payload.extend_from_slice(part);
    }
    // No fsync: after a crash the checksum rejects a torn file and the rules are compiled again.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(CACHE_MAGIC)?;
    tmp.write_all(blake3::hash(&payload).as_bytes())?;
    tmp.write_all(&payload)?;
    tmp.persist(path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_rule_is_reported_with_line_and_others_still_compile() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yar");
        std::fs::write(&good, "rule good { strings: $a = \"abc\" condition: $a }").unwrap();
        let bad = dir.path().join("bad.yar");
        std::fs::write(
            &bad,
            "rule fine_in_bad_file { condition: filesize < 10 }\n\nrule broken { condition: nosuchthing }\n",
        )
        .unwrap();
        let files = collect_rule_files(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(files, vec![bad.clone(), good.clone()]);
        let loaded = load(&files, None).unwrap();
        assert_eq!(loaded.report.errors.len(), 1, "{:?}", loaded.report.errors);
        let err = &loaded.report.errors[0];
        assert_eq!(err.file, bad);
        assert_eq!(err.line, Some(3));
        assert_eq!(loaded.report.rules, 2);
    }

    /// Differential check on real data: every object gets the same matches from the rule set
    /// it is given as from the full set. Needs ../shared/corpora; run with `--ignored`.
    /// `MAMORI_DIFF_DIRS` (colon-separated) names the directories scanned (default /usr/bin).
    #[test]
    #[ignore]
    fn reduced_sets_match_like_the_full_set_on_real_files() {
        let root =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpora/yara/signature-base/yara");
        let files = collect_rule_files(&[root]).unwrap();
        let loaded = load(&files, None).unwrap();
        let reduced = &loaded.reduced;
        let (Some(no_mz), Some(no_magic)) = (&reduced.without_mz, &reduced.without_magic) else {
            panic!("reduced sets missing")
        };
        let new = |r| {
            let mut s = yara_x::Scanner::new(r);
            s.set_timeout(std::time::Duration::from_secs(60));
            s
        };
        let (mut full, mut no_mz, mut no_magic) = (new(&loaded.rules), new(no_mz), new(no_magic));
        let dirs = std::env::var("MAMORI_DIFF_DIRS").unwrap_or_else(|_| "/usr/bin".into());
        let (mut scanned, mut matched) = (0, 0);
        for dir in dirs.split(':') {
            for entry in ignore::WalkBuilder::new(dir).standard_filters(false).build().flatten() {
                if !entry.file_type().is_some_and(|t| t.is_file()) {
                    continue;
                }
                let Ok(data) = std::fs::read(entry.path()) else { continue };
                if data.len() > 32 << 20 {
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                let names = |s: &mut yara_x::Scanner<'_>| {
                    s.set_global("filename", name.as_str()).unwrap();
                    s.set_global("filepath", entry.path().to_str().unwrap_or("")).unwrap();
                    let r = s.scan(&data).unwrap();
                    let mut v: Vec<String> =
                        r.matching_rules().map(|r| format!("{}:{}", r.namespace(), r.identifier())).collect();
                    v.sort();
                    v
                };
                let want = names(&mut full);
                let got = if data.starts_with(b"MZ") {
                    want.clone()
                } else if reduced.magics.iter().any(|m| data.starts_with(m)) {
                    names(&mut no_mz)
                } else {
                    names(&mut no_magic)
                };
                assert_eq!(got, want, "{}", entry.path().display());
                // The set without MZ rules must also agree on every non-MZ object.
                if !data.starts_with(b"MZ") {
                    assert_eq!(names(&mut no_mz), want, "{}", entry.path().display());
                }
                scanned += 1;
                matched += usize::from(!want.is_empty());
            }
        }
        eprintln!("{scanned} files compared, {matched} with matches");
        assert!(scanned > 0);
    }

    #[test]
    fn cache_round_trip_and_invalidation() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let rule = dir.path().join("r.yar");
        std::fs::write(&rule, "rule one { condition: true }").unwrap();
        let first = load(std::slice::from_ref(&rule), Some(&cache)).unwrap();
        assert!(!first.report.from_cache);
        let second = load(std::slice::from_ref(&rule), Some(&cache)).unwrap();
        assert!(second.report.from_cache);
        assert_eq!(first.key, second.key);
        std::fs::write(&rule, "rule two { condition: true }").unwrap();
        let third = load(std::slice::from_ref(&rule), Some(&cache)).unwrap();
        assert!(!third.report.from_cache);
        assert_ne!(third.key, first.key);
    }

    #[test]
    fn corrupt_or_foreign_cache_files_are_never_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let rule = dir.path().join("r.yar");
        std::fs::write(&rule, "rule one { strings: $a = \"abc\" condition: $a }").unwrap();
        load(std::slice::from_ref(&rule), Some(&cache)).unwrap();
        let file = std::fs::read_dir(&cache).unwrap().next().unwrap().unwrap().path();
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 100;
        bytes[last] ^= 0x55;
        std::fs::write(&file, &bytes).unwrap();
        let after_flip = load(std::slice::from_ref(&rule), Some(&cache)).unwrap();
        assert!(!after_flip.report.from_cache, "a flipped bit must force a recompile");
        assert!(load(std::slice::from_ref(&rule), Some(&cache)).unwrap().report.from_cache);

        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let writable = load(std::slice::from_ref(&rule), Some(&cache)).unwrap();
        assert!(!writable.report.from_cache, "a file others can write is not trusted");
    }
}
