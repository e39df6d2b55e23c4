//! The engine: everything that decides whether some bytes are malicious.
//!
//! An [`Engine`] is loaded once (rules, hash lists, limits) and shared read-only by every
//! scanning thread; each thread makes its own [`FileScanner`], which owns the per-thread
//! YARA-X scanner and read buffer.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mamori_archive::{Flow, Limits, Member, Problem as ArchiveProblem};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::eicar;
use crate::filetype;
use crate::hashes::{HashDb, HashListError};
use crate::prefilter;
use crate::rules::{self, RulesReport};
use crate::verdicts::FileKey;

/// Bumped when a change here alters verdicts, so that cached verdicts are not reused.
const ENGINE_VERSION: &[u8] = b"mamori-engine-1";

/// Read buffers above this are released after the file, so one huge file does not keep a
/// scanning thread's memory high for the rest of the scan.
const KEEP_BUFFER: usize = 16 << 20;

/// What to load and how far to look.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Rule files or directories of `.yar`/`.yara` files.
    pub rule_paths: Vec<PathBuf>,
    /// Hash lists (signature-base `hash;comment`, ClamAV `.hdb`/`.hsb`).
    pub hash_lists: Vec<PathBuf>,
    /// Where compiled rules are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Files larger than this are not read (reported as skipped).
    pub max_filesize: u64,
    pub archive_limits: Limits,
    /// Look inside zip, gzip and tar containers.
    pub scan_archives: bool,
    /// Per-object YARA timeout, so that one pathological file cannot stall a thread forever.
    pub scan_timeout: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            rule_paths: Vec::new(),
            hash_lists: Vec::new(),
            cache_dir: None,
            max_filesize: 256 << 20,
            archive_limits: Limits::default(),
            scan_archives: true,
            scan_timeout: Duration::from_secs(120),
        }
    }
}

/// What loading found: counts and the rules or list lines that were left out.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub rules: Option<RulesReport>,
    pub hash_indicators: usize,
    pub hash_errors: Vec<HashListError>,
}

/// How a finding was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A YARA rule matched.
    Yara,
    /// A digest (`md5`, `sha1`, `sha256`) is on a hash list.
    Hash(String),
    /// Built into mamori (the EICAR test file).
    Builtin,
}

/// One detection in one object (a file, or a member inside an archive).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The file on disk.
    pub path: PathBuf,
    /// The chain of archive members leading to the object, empty for the file itself.
    pub inner: Vec<String>,
    pub rule: String,
    /// The rule file, the hash list, or `builtin`.
    pub ruleset: String,
    pub kind: FindingKind,
    pub tags: Vec<String>,
    pub description: Option<String>,
    /// Size and SHA-256 of the object that matched.
    pub size: u64,
    pub sha256: String,
}

impl Finding {
    /// `a.zip!dir/b.exe` style name of the object.
    pub fn display_path(&self) -> String {
        display_path(&self.path, &self.inner)
    }
}

pub fn display_path(path: &Path, inner: &[String]) -> String {
    let mut s = path.to_string_lossy().into_owned();
    for part in inner {
        s.push('!');
        s.push_str(part);
    }
    s
}

/// Why some or all of a file was not scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// Could not be opened or read (permissions, I/O error).
    Unreadable,
    /// An archive limit stopped expansion (zip bomb, too deep, too large).
    LimitExceeded,
    /// YARA scanning hit the timeout.
    Timeout,
    /// Larger than `max_filesize`; not read, as configured.
    TooLarge,
    /// A corrupt or truncated archive or member; the raw bytes were still scanned.
    Malformed,
    /// A password-protected archive member.
    Encrypted,
    /// A symlink loop met while following links.
    SymlinkLoop,
    /// Gone, or replaced by a non-regular file, between listing and opening.
    Vanished,
}

impl ProblemKind {
    /// Whether the problem kept content from being scanned that the user asked to scan: these
    /// make the exit code 2. The others are reported but are either configured (too large)
    /// or leave nothing unscanned that could be scanned.
    pub fn is_error(self) -> bool {
        matches!(self, ProblemKind::Unreadable | ProblemKind::LimitExceeded | ProblemKind::Timeout)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// Display path (with `!member` parts).
    pub path: String,
    pub kind: ProblemKind,
    pub message: String,
}

/// The outcome for one file.
#[derive(Debug, Default)]
pub struct FileVerdict {
    pub findings: Vec<Finding>,
    pub problems: Vec<Problem>,
    /// Bytes of file content read (members are not counted again).
    pub bytes_read: u64,
}

impl FileVerdict {
    /// Only a complete verdict may be cached: a file with an error is tried again next time.
    pub fn is_complete(&self) -> bool {
        !self.problems.iter().any(|p| p.kind.is_error())
    }
}

/// Loaded rules and indicators, shared by all scanning threads.
pub struct Engine {
    rules: Option<yara_x::Rules>,
    /// `rules` with the rules left out that cannot match some objects ([`crate::prefilter`]).
    reduced: rules::Reduced,
    hashes: HashDb,
    options: EngineOptions,
    report: LoadReport,
    id: [u8; 32],
}

impl Engine {
    /// Loads rules (from the cache when possible) and hash lists. Rules that do not compile
    /// and list lines that cannot be read are in [`Engine::report`]; a file that cannot be
    /// read at all is an error.
    pub fn load(options: EngineOptions) -> anyhow::Result<Engine> {
        let mut id = blake3::Hasher::new();
        id.update(ENGINE_VERSION);
        id.update(&options.max_filesize.to_le_bytes());
        id.update(format!("{:?} {}", options.archive_limits, options.scan_archives).as_bytes());
        let mut report = LoadReport::default();

        let (rules, reduced) = if options.rule_paths.is_empty() {
            (None, rules::Reduced::default())
        } else {
            let files = rules::collect_rule_files(&options.rule_paths)?;
            if files.is_empty() {
                anyhow::bail!("no .yar or .yara files found in the given rule paths");
            }
            let loaded = rules::load(&files, options.cache_dir.as_deref())?;
            id.update(&loaded.key);
            report.rules = Some(loaded.report);
            (Some(loaded.rules), loaded.reduced)
        };

        let mut hashes = HashDb::default();
        for list in &options.hash_lists {
            let errors = hashes
                .load_file(list)
                .map_err(|e| anyhow::anyhow!("cannot read hash list {}: {e}", list.display()))?;
            report.hash_errors.extend(errors);
        }
        report.hash_indicators = hashes.len();
        hashes.fingerprint(&mut id);

        Ok(Engine { rules, reduced, hashes, options, report, id: id.finalize().into() })
    }

    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Identifies everything that decides a verdict; cached verdicts are keyed by it.
    pub fn id(&self) -> [u8; 32] {
        self.id
    }

    pub fn scanner(&self) -> FileScanner<'_> {
        let new = |rules| {
            let mut s = yara_x::Scanner::new(rules);
            // Not `fast_scan`: it only stops pattern searches early, and on real rule sets
            // (signature-base) it measured 8% slower than the default (BENCHMARKS.md).
            s.set_timeout(self.options.scan_timeout);
            s
        };
        let yara = self.rules.as_ref().map(new);
        let yara_without_mz = self.reduced.without_mz.as_ref().map(new);
        let yara_without_magic = self.reduced.without_magic.as_ref().map(new);
        FileScanner {
            engine: self,
            yara,
            yara_without_mz,
            yara_without_magic,
            buf: Vec::new(),
            owners: HashMap::new(),
        }
    }
}

/// Scans files and buffers on one thread.
pub struct FileScanner<'e> {
    engine: &'e Engine,
    yara: Option<yara_x::Scanner<'e>>,
    /// For objects that do not start with `MZ`.
    yara_without_mz: Option<yara_x::Scanner<'e>>,
    /// For objects that start with none of the engine's `reduced.magics`.
    yara_without_magic: Option<yara_x::Scanner<'e>>,
    buf: Vec<u8>,
    owners: HashMap<u32, String>,
}

/// The object being looked at, for naming findings and setting external variables.
struct Object<'a> {
    path: &'a Path,
    inner: &'a [String],
    owner: &'a str,
}

impl<'e> FileScanner<'e> {
    /// Opens and scans the file at `path`. Never blocks on FIFOs or devices: the file is
    /// opened non-blocking and anything that is not a regular file is refused after `fstat`.
    /// Symlinks are refused unless `follow_symlinks`.
    pub fn scan_path(
        &mut self,
        path: &Path,
        follow_symlinks: bool,
    ) -> Result<(FileVerdict, FileKey), Problem> {
        self.scan_path_sharing(path, follow_symlinks, &mut |_, _| false)
    }

    /// [`FileScanner::scan_path`], offering each archive member to `share` (with the file's
    /// owner) first: a member it takes (`true`) is not scanned here, and its findings are not
    /// in the verdict returned; whoever took it scans it with [`FileScanner::scan_member`].
    pub fn scan_path_sharing(
        &mut self,
        path: &Path,
        follow_symlinks: bool,
        share: &mut dyn FnMut(&Member<'_>, &str) -> bool,
    ) -> Result<(FileVerdict, FileKey), Problem> {
        let problem =
            |kind, message: String| Problem { path: path.to_string_lossy().into_owned(), kind, message };
        let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY;
        if !follow_symlinks {
            flags |= libc::O_NOFOLLOW;
        }
        let mut file = match std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path) {
            Ok(f) => f,
            Err(e) => {
                let kind = match e.raw_os_error() {
                    Some(libc::ENOENT) | Some(libc::ELOOP) | Some(libc::ENXIO) => ProblemKind::Vanished,
                    _ => ProblemKind::Unreadable,
                };
                return Err(problem(kind, e.to_string()));
            }
        };
        let meta = file.metadata().map_err(|e| problem(ProblemKind::Unreadable, e.to_string()))?;
        if !meta.is_file() {
            return Err(problem(ProblemKind::Vanished, "no longer a regular file".into()));
        }
        let key = FileKey::from_metadata(&meta);
        if meta.len() > self.engine.options.max_filesize {
            return Err(problem(
                ProblemKind::TooLarge,
                format!(
                    "{} bytes is over the {} byte limit (--max-filesize)",
                    meta.len(),
                    self.engine.options.max_filesize
                ),
            ));
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let read = read_limited(&mut file, &mut buf, self.engine.options.max_filesize);
        let verdict = match read {
            Ok(()) => {
                let owner = self.owner_name(meta.uid());
                self.scan_bytes_as(path, &owner, &buf, share)
            }
            Err(e) => Err(problem(ProblemKind::Unreadable, e.to_string())),
        };
        if buf.capacity() > KEEP_BUFFER {
            buf = Vec::new();
        }
        self.buf = buf;
        verdict.map(|v| (v, key))
    }

    /// Scans `data` as the content of the file `path` (and, if it is an archive, its members).
    pub fn scan_bytes(&mut self, path: &Path, data: &[u8]) -> FileVerdict {
        let verdict = self.scan_bytes_as(path, "", data, &mut |_, _| false);
        verdict.unwrap_or_else(|p| FileVerdict { problems: vec![p], ..Default::default() })
    }

    /// Scans one archive member that another thread's [`FileScanner::scan_path_sharing`]
    /// handed over: `inner` is its path chain inside the file `path` owned by `owner`.
    /// `bytes_read` stays 0 (the file's bytes were counted once, by the thread that read it).
    pub fn scan_member(&mut self, path: &Path, owner: &str, inner: &[String], data: &[u8]) -> FileVerdict {
        let mut verdict = FileVerdict::default();
        self.scan_object(&Object { path, inner, owner }, data, &mut verdict);
        verdict
    }

    fn scan_bytes_as(
        &mut self,
        path: &Path,
        owner: &str,
        data: &[u8],
        share: &mut dyn FnMut(&Member<'_>, &str) -> bool,
    ) -> Result<FileVerdict, Problem> {
        let mut verdict = FileVerdict { bytes_read: data.len() as u64, ..Default::default() };
        let object = Object { path, inner: &[], owner };
        self.scan_object(&object, data, &mut verdict);

        if self.engine.options.scan_archives && mamori_archive::detect(data).is_some() {
            let outer_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let limits = self.engine.options.archive_limits.clone();
            let reports = mamori_archive::expand(data, &outer_name, &limits, &mut |m: &Member<'_>| {
                if !share(m, owner) {
                    let object = Object { path, inner: m.path, owner };
                    self.scan_object(&object, m.data, &mut verdict);
                }
                Flow::Continue
            });
            for report in reports {
                let (kind, message) = match report.problem {
                    ArchiveProblem::LimitExceeded { limit, detail } => (
                        ProblemKind::LimitExceeded,
                        format!("archive limit exceeded ({limit:?}), rest not scanned: {detail}"),
                    ),
                    ArchiveProblem::Malformed(m) => (ProblemKind::Malformed, m),
                    ArchiveProblem::Encrypted => {
                        (ProblemKind::Encrypted, "encrypted member, not scanned".into())
                    }
                    ArchiveProblem::Unsupported(m) => (ProblemKind::Malformed, m),
                };
                verdict.problems.push(Problem { path: display_path(path, &report.path), kind, message });
            }
        }
        Ok(verdict)
    }

    /// Runs every detector over one object.
    fn scan_object(&mut self, object: &Object<'_>, data: &[u8], verdict: &mut FileVerdict) {
        let mut sha256: Option<String> = None;
        let mut finding = |rule: String, ruleset: String, kind, tags, description| Finding {
            path: object.path.to_path_buf(),
            inner: object.inner.to_vec(),
            rule,
            ruleset,
            kind,
            tags,
            description,
            size: data.len() as u64,
            sha256: sha256.get_or_insert_with(|| hex::encode(Sha256::digest(data))).clone(),
        };

        if eicar::is_eicar(data) {
            verdict.findings.push(finding(
                eicar::EICAR_RULE.into(),
                "builtin".into(),
                FindingKind::Builtin,
                Vec::new(),
                Some("EICAR anti-malware test file".into()),
            ));
        }
        if let Some(hit) = self.engine.hashes.lookup(data) {
            verdict.findings.push(finding(
                hit.indicator.name.clone(),
                hit.indicator.list.to_string_lossy().into_owned(),
                FindingKind::Hash(hit.algorithm.into()),
                Vec::new(),
                None,
            ));
        }
        // The smallest rule set that holds every rule that could match this object
        // (`prefilter`): leaving out rules that cannot match changes no verdict.
        let yara = if data.starts_with(prefilter::MZ) {
            self.yara.as_mut()
        } else if self.engine.reduced.magics.iter().any(|m| data.starts_with(m)) {
            self.yara_without_mz.as_mut().or(self.yara.as_mut())
        } else {
            self.yara_without_magic.as_mut().or(self.yara_without_mz.as_mut()).or(self.yara.as_mut())
        };
        let Some(yara) = yara else { return };
        let name = object
            .inner
            .last()
            .map(|m| m.rsplit('/').next().unwrap_or(m).to_string())
            .or_else(|| object.path.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let extension = match name.rfind('.') {
            Some(i) if i > 0 => name[i..].to_ascii_lowercase(),
            _ => String::new(),
        };
        let full = display_path(object.path, object.inner);
        // The variables are defined by us at compile time, so setting them cannot fail.
        let _ = yara.set_global("filename", name.as_str());
        let _ = yara.set_global("filepath", full.as_str());
        let _ = yara.set_global("extension", extension.as_str());
        let _ = yara.set_global("filetype", filetype::detect(data, &extension));
        let _ = yara.set_global("owner", object.owner);
        match yara.scan(data) {
            Ok(results) => {
                for rule in results.matching_rules() {
                    let description = rule.metadata().find_map(|(k, v)| match (k, v) {
                        ("description", yara_x::MetaValue::String(s)) => Some(s.to_string()),
                        _ => None,
                    });
                    let tags = rule.tags().map(|t| t.identifier().to_string()).collect();
                    verdict.findings.push(finding(
                        rule.identifier().to_string(),
                        rule.namespace().to_string(),
                        FindingKind::Yara,
                        tags,
                        description,
                    ));
                }
            }
            Err(e) => verdict.problems.push(Problem {
                path: full,
                kind: if matches!(e, yara_x::errors::ScanError::Timeout) {
                    ProblemKind::Timeout
                } else {
                    ProblemKind::Unreadable
                },
                message: format!("YARA scan failed: {e}"),
            }),
        }
    }

    fn owner_name(&mut self, uid: u32) -> String {
        self.owners.entry(uid).or_insert_with(|| user_name(uid).unwrap_or_else(|| uid.to_string())).clone()
    }
}

/// Reads at most `limit` bytes; a file that grew past the limit while being read is an error
/// rather than a silently truncated scan.
fn read_limited(file: &mut File, buf: &mut Vec<u8>, limit: u64) -> std::io::Result<()> {
    file.take(limit.saturating_add(1)).read_to_end(buf)?;
    if buf.len() as u64 > limit {
        return Err(std::io::Error::other("file grew past --max-filesize while being read"));
    }
    Ok(())
}

fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 1024];
    loop {
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: getpwuid_r writes only into `pwd` and `buf`, whose sizes we pass.
        let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        // SAFETY: on success pw_name points to a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        return Some(name.to_string_lossy().into_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eicar_found_without_rules_and_rules_see_externals() {
        let dir = tempfile::tempdir().unwrap();
        let rule = dir.path().join("ext.yar");
        std::fs::write(
            &rule,
            r#"rule ext_seen { condition: extension == ".ps1" and filetype == "PowerShell" and filename == "run.ps1" }"#,
        )
        .unwrap();
        let engine =
            Engine::load(EngineOptions { rule_paths: vec![rule.clone()], ..Default::default() }).unwrap();
        let mut scanner = engine.scanner();
        let v = scanner.scan_bytes(Path::new("/x/run.ps1"), b"Write-Host hi");
        assert_eq!(v.findings.len(), 1);
        assert_eq!(v.findings[0].rule, "ext_seen");
        assert_eq!(v.findings[0].ruleset, rule.to_string_lossy());
        let v = scanner.scan_bytes(Path::new("/x/run.txt"), b"Write-Host hi");
        assert!(v.findings.is_empty());
        let v = scanner.scan_bytes(Path::new("/x/e.com"), &eicar::eicar_for_tests());
        assert_eq!(v.findings[0].rule, eicar::EICAR_RULE);
        assert_eq!(v.findings[0].kind, FindingKind::Builtin);
    }

    #[test]
    fn reduced_rule_sets_give_the_same_findings_fresh_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let rule = dir.path().join("r.yar");
        std::fs::write(
            &rule,
            r#"
rule pe { strings: $a = "evil" condition: uint16(0) == 0x5a4d and $a }
rule elf { strings: $a = "evil" condition: uint32(0) == 0x464c457f and $a }
rule any_evil { strings: $a = "evil" condition: $a }
"#,
        )
        .unwrap();
        let cache = dir.path().join("cache");
        for round in 0..2 {
            let engine = Engine::load(EngineOptions {
                rule_paths: vec![rule.clone()],
                cache_dir: Some(cache.clone()),
                ..Default::default()
            })
            .unwrap();
            assert_eq!(engine.report().rules.as_ref().unwrap().from_cache, round == 1);
            assert!(engine.reduced.without_mz.is_some() && engine.reduced.without_magic.is_some());
            let mut scanner = engine.scanner();
            let mut rules = |data: &[u8]| {
                let v = scanner.scan_bytes(Path::new("/x/f"), data);
                let mut names: Vec<String> = v.findings.into_iter().map(|f| f.rule).collect();
                names.sort();
                names
            };
            assert_eq!(rules(b"MZ evil"), ["any_evil", "pe"]);
            assert_eq!(rules(b"\x7fELF evil"), ["any_evil", "elf"]);
            assert_eq!(rules(b"#! evil"), ["any_evil"]);
            assert_eq!(rules(b"M"), Vec::<String>::new());
        }
    }

    #[test]
    fn engine_id_changes_with_rules_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let rule = dir.path().join("r.yar");
        std::fs::write(&rule, "rule a { condition: false }").unwrap();
        let opts = EngineOptions { rule_paths: vec![rule.clone()], ..Default::default() };
        let a = Engine::load(opts.clone()).unwrap().id();
        assert_eq!(a, Engine::load(opts.clone()).unwrap().id());
        let b = Engine::load(EngineOptions { max_filesize: 10, ..opts.clone() }).unwrap().id();
        assert_ne!(a, b);
        std::fs::write(&rule, "rule b { condition: false }").unwrap();
        assert_ne!(a, Engine::load(opts).unwrap().id());
    }
}
