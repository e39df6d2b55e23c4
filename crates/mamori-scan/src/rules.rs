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
const CACHE_FORMAT: &[u8] = b"mamori-rules-cache-v2";
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
    pub report: RulesReport,
    /// Digest of the sources, the YARA-X version and the externals.
    pub key: [u8; 32],
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
        if let Some((rules, mut report)) = read_cache(path) {
            report.from_cache = true;
            return Ok(LoadedRules { rules, report, key });
        }
    }

    let mut compiler = Compiler::new();
    for name in EXTERNALS {
        compiler.define_global(name, "")?;
    }
    let mut report = RulesReport { files: files.len(), ..Default::default() };
    for (file, bytes) in &sources {
        let origin = file.to_string_lossy().into_owned();
        compiler.new_namespace(&origin);
        let src = SourceCode::from(bytes.as_slice()).with_origin(origin);
        // Errors are read back from `compiler.errors()` below, all of them, not just the first.
        let _ = compiler.add_source(src);
    }
    for err in compiler.errors() {
        report.errors.push(rule_error(err));
    }
    let rules = compiler.build();
    report.rules = rules.iter().len();

    if let Some(path) = &cache_file {
        // A cache that cannot be written only costs time on the next run.
        let _ = write_cache(path, &rules, &report);
    }
    Ok(LoadedRules { rules, report, key })
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

fn read_cache(path: &Path) -> Option<(Rules, RulesReport)> {
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
    let (checksum, payload) = rest.split_at_checked(32)?;
    if blake3::hash(payload).as_bytes() != checksum {
        return None;
    }
    let (len, rest) = payload.split_at_checked(8)?;
    let len = usize::try_from(u64::from_le_bytes(len.try_into().ok()?)).ok()?;
    let (report, rules) = rest.split_at_checked(len)?;
    let report: RulesReport = serde_json::from_slice(report).ok()?;
    let rules = Rules::deserialize(rules).ok()?;
    Some((rules, report))
}

fn write_cache(path: &Path, rules: &Rules, report: &RulesReport) -> anyhow::Result<()> {
    let dir = path.parent().ok_or_else(|| anyhow::anyhow!("cache path has no parent"))?;
    std::fs::create_dir_all(dir)?;
    let report = serde_json::to_vec(report)?;
    let rules = rules.serialize()?;
    let mut payload = Vec::with_capacity(8 + report.len() + rules.len());
    payload.extend_from_slice(&(report.len() as u64).to_le_bytes());
    payload.extend_from_slice(&report);
    payload.extend_from_slice(&rules);
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
