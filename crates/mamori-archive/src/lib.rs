//! Recursive, bomb-safe expansion of zip, gzip and tar containers for scanning.
//!
//! The scanner holds a file in memory. When [`detect`] says it is a container,
//! [`expand`] hands every regular-file member to a visitor as bytes together
//! with its inner path chain, so a finding can be named `a.zip!dir/b.exe` or
//! `x.tar.gz!x.tar!etc/evil.sh`. Members that are containers themselves are
//! first visited as files and then expanded in turn (zip in zip, tar in gzip,
//! ...). Nothing is ever written to disk; member names are only for display.
//!
//! # Hostile input
//!
//! Input is assumed to be crafted by an attacker. Two rules follow:
//!
//! * **Every limit is enforced on the bytes actually produced while
//!   streaming.** Sizes declared in zip, gzip or tar headers never size an
//!   allocation or bound the work; they are only compared with what was
//!   actually read, to spot truncation. A member that lies about its size is
//!   stopped at the same point as one that does not.
//! * **Malformed input is a finding, not a crash.** Corrupt or truncated data
//!   becomes a [`Problem::Malformed`] report and expansion carries on with the
//!   next member where the container format allows it. This crate does not
//!   panic, print or exit.
//!
//! # Limits
//!
//! All limits live in [`Limits`]; the defaults are chosen so a normal
//! hospital workload (office documents, DICOM exports, installers, log
//! bundles) passes untouched while a zip bomb costs at most about
//! `max_total_size` bytes of memory and decompression work.
//!
//! | limit | default | why |
//! |---|---|---|
//! | `max_depth` | 16 | Nesting such as `42.zip` multiplies work per level, but a `.tar.gz` costs two levels (gzip, then tar) and real backups nest archives of archives; ClamAV allows 17. The size and member limits bound the total work whatever the depth. Values above 64 are treated as 64 because every level costs stack. |
//! | `max_member_size` | 256 MiB | One member must fit in memory next to its parents; a member larger than this cannot be scanned here. |
//! | `max_total_size` | 1 GiB | Bounds memory and CPU for one outer file, whatever the trick (many members, overlapping zip entries, recursion). Every expanded byte counts, including bytes of members that were later rejected, so rejected members cannot be used to burn CPU for free. |
//! | `max_members` | 100 000 | Bounds per-entry overhead (directory entries included) for archives with huge numbers of tiny entries. |
//! | `max_ratio` | 250 | Deflate tops out near 1032:1 and real data rarely exceeds 100:1, so a higher ratio is the signature of a bomb. Checked against the compressed bytes consumed *so far*, so a 10 GiB member of zeros is stopped after about `ratio_floor` bytes rather than after `max_member_size`. The price: a member that starts with more than `ratio_floor` bytes of near-constant data is judged by that start. |
//! | `ratio_floor` | 8 MiB | Small, very compressible members (a page of zeros, a blank bitmap) are normal; the ratio is only judged once a member has expanded past this. |
//!
//! Hitting `max_total_size` or `max_members` stops everything below the outer
//! file, because the budget is shared and whatever follows would be cut off
//! arbitrarily anyway. Hitting `max_member_size` or `max_ratio` only skips that
//! member. A member stopped by a limit is *not* visited, since the visitor is
//! promised complete bytes; the [`Report`] is the warning instead.
//!
//! Memory held at any time is bounded by the bytes counted against
//! `max_total_size` (a member's buffer never grows past what the limits
//! allow), plus what the decoders keep for themselves, which this crate cannot
//! meter: the zip central directory (proportional to the input size), LZMA
//! and xz dictionaries (they grow with the output), a second copy of the
//! output for the legacy zip methods shrink, reduce and implode, and up to
//! 128 MiB for a zstd window (libzstd's default cap).
//!
//! # Coverage choices
//!
//! * Zip entries are visited even when flagged as symlinks, because several
//!   extractors ignore Unix modes and write the bytes out as a regular file.
//!   Directory entries are skipped unless they carry data.
//! * Tar entries of an unknown type are visited: GNU tar extracts them as
//!   regular files, so skipping them would be a way to hide content.
//! * A zip whose central directory lists several entries under one name is
//!   reported as malformed, because the zip reader can only reach one entry
//!   per name and the others would otherwise go unscanned without a word.
//! * Gzip input is decoded as a multi-member stream (as `gunzip` does) and
//!   appears as one member.
//! * A panic inside a decoder (a dependency bug reached by hostile input) is
//!   caught and reported as [`Problem::Malformed`] for the place it happened,
//!   ending expansion of that outer file; this needs `panic = "unwind"`.
//!   Panics raised by the visitor are passed on unchanged.

use std::cell::Cell;
use std::fmt;
use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

/// Container formats this crate can expand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Zip,
    Gzip,
    Tar,
}

/// Sniff the container format from magic bytes.
///
/// * zip: `PK\x03\x04` (a local file header) or `PK\x05\x06` (an empty zip)
///   at offset 0;
/// * gzip: `1f 8b 08` — the third byte (compression method deflate, the only
///   one defined) is required as well, so that arbitrary binaries starting
///   with `1f 8b` are not reported as corrupt gzip;
/// * tar: `ustar` at offset 257 (POSIX and GNU), or an old-style (v7) header
///   whose checksum validates.
pub fn detect(data: &[u8]) -> Option<Format> {
    if data.starts_with(b"PK\x03\x04") || data.starts_with(b"PK\x05\x06") {
        return Some(Format::Zip);
    }
    if data.starts_with(&[0x1f, 0x8b, 0x08]) {
        return Some(Format::Gzip);
    }
    if data.get(257..262) == Some(b"ustar".as_slice()) || is_v7_tar_header(data) {
        return Some(Format::Tar);
    }
    None
}

/// Expansion limits; see the crate documentation for the reasoning behind
/// each default.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Nesting levels of containers below the outer file. The outer file's
    /// own members are always visited; a container found at nesting level
    /// `max_depth + 1` is visited as a file but not expanded.
    pub max_depth: u32,
    /// Bytes of one expanded member.
    pub max_member_size: u64,
    /// Bytes expanded in total below one outer file.
    pub max_total_size: u64,
    /// Members (of any kind, directories included) in total below one outer
    /// file.
    pub max_members: u64,
    /// Expanded bytes per compressed byte, checked per member once it has
    /// expanded more than `ratio_floor`. Set `ratio_floor` to `u64::MAX` to
    /// disable the check.
    pub max_ratio: u64,
    /// Expanded size below which the ratio is not judged.
    pub ratio_floor: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 16,
            max_member_size: 256 * 1024 * 1024,
            max_total_size: 1024 * 1024 * 1024,
            max_members: 100_000,
            max_ratio: 250,
            ratio_floor: 8 * 1024 * 1024,
        }
    }
}

/// Something that kept part of the input from being scanned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A limit stopped expansion (the zip-bomb warning); `detail` names the
    /// numbers involved.
    #[error("{limit} limit exceeded: {detail}")]
    LimitExceeded { limit: Limit, detail: String },
    /// Corrupt or truncated container or member.
    #[error("malformed: {0}")]
    Malformed(String),
    /// Password-protected zip member: its content cannot be scanned.
    #[error("encrypted member: content cannot be scanned")]
    Encrypted,
    /// A feature the decoder does not support, e.g. a zip compression method.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// Which limit of [`Limits`] was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Depth,
    MemberSize,
    TotalSize,
    Members,
    Ratio,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Depth => "nesting depth",
            Limit::MemberSize => "member size",
            Limit::TotalSize => "total size",
            Limit::Members => "member count",
            Limit::Ratio => "compression ratio",
        })
    }
}

/// A member handed to the visitor.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// Inner path chain below the outer file, e.g. `["dir/inner.zip", "b.exe"]`.
    pub path: &'a [String],
    /// The member's complete expanded bytes.
    pub data: &'a [u8],
}

/// A problem tied to where it happened: the path chain of the container or
/// member concerned, empty for the outer file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub path: Vec<String>,
    pub problem: Problem,
}

/// The visitor's answer: carry on, or stop expanding at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Expand `data` (the outer file's bytes) recursively and call `visit` for
/// every member that is a regular file.
///
/// A member is visited before it is itself expanded, so a nested container is
/// scanned both as a file and through its members. Directories, symlinks,
/// hard links and devices in tar have no content and are not visited.
///
/// `outer_name` is the outer file's name; it only serves to name the member
/// of a gzip file whose header carries no file name: `x.tar.gz` and `x.tgz`
/// give `x.tar`, `y.gz` gives `y`, anything else gives the name without its
/// last extension.
///
/// Returns every problem met. After a problem expansion goes on where that is
/// safe (a malformed member is skipped, the next one is tried), except that
/// hitting `max_total_size` or `max_members` ends expansion of the whole
/// outer file. If `visit` returns [`Flow::Stop`], expansion ends at once.
/// If `data` is not a container known to [`detect`], nothing is visited and
/// no problem is returned.
pub fn expand(
    data: &[u8],
    outer_name: &str,
    limits: &Limits,
    visit: &mut dyn FnMut(&Member<'_>) -> Flow,
) -> Vec<Report> {
    let Some(format) = detect(data) else {
        return Vec::new();
    };
    let mut walker = Walker {
        limits,
        max_depth: limits.max_depth.min(HARD_MAX_DEPTH),
        visit,
        reports: Vec::new(),
        expanded: 0,
        members: 0,
        chunk: Vec::new(),
        in_visitor: false,
    };
    let mut path = Vec::new();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        walker.container(data, format, &mut path, base_name(outer_name))
    }));
    match outcome {
        // Halting only means "stop early"; the reports gathered so far are the answer.
        Ok(_) => {}
        // The visitor's panics are the caller's business.
        Err(payload) if walker.in_visitor => panic::resume_unwind(payload),
        // A decoder bug triggered by hostile input must not take the scanner
        // down with it; the input is then as unscannable as a corrupt one.
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            walker.report(&path, Problem::Malformed(format!("panicked while decoding: {message}")));
        }
    }
    walker.reports
}

/// Recursion costs stack per level; beyond this, depth buys no realistic
/// coverage and risks overflowing a worker thread's stack.
const HARD_MAX_DEPTH: u32 = 64;

/// Read granularity: small enough that overshoot past a limit is negligible,
/// large enough that per-call overhead does not matter.
const CHUNK: usize = 64 * 1024;

/// Expansion of the whole outer file must end (visitor asked to stop, or a
/// shared budget ran out). The reason is already recorded.
struct Halt;

type Step = Result<(), Halt>;

struct Walker<'a> {
    limits: &'a Limits,
    max_depth: u32,
    visit: &'a mut dyn FnMut(&Member<'_>) -> Flow,
    reports: Vec<Report>,
    /// Bytes produced so far below the outer file, counted against `max_total_size`.
    expanded: u64,
    /// Entries met so far below the outer file, counted against `max_members`.
    members: u64,
    /// Reused read buffer, kept on the heap so deep recursion stays cheap on stack.
    chunk: Vec<u8>,
    /// Set while the visitor runs, to tell its panics from the decoders'.
    in_visitor: bool,
}

impl Walker<'_> {
    fn report(&mut self, path: &[String], problem: Problem) {
        self.reports.push(Report { path: path.to_vec(), problem });
    }

    /// Expand one container whose own path chain is `path` (restored on return).
    fn container(&mut self, data: &[u8], format: Format, path: &mut Vec<String>, name: &str) -> Step {
        match format {
            Format::Zip => self.zip(data, path),
            Format::Gzip => self.gzip(data, path, name),
            Format::Tar => self.tar(data, path),
        }
    }

    fn count_member(&mut self, container: &[String]) -> Step {
        self.members = self.members.saturating_add(1);
        if self.members > self.limits.max_members {
            let detail = format!(
                "more than {} members below the outer file; expansion stopped",
                self.limits.max_members
            );
            self.report(container, Problem::LimitExceeded { limit: Limit::Members, detail });
            return Err(Halt);
        }
        Ok(())
    }

    /// Visit a fully read member (path chain `path`), then expand it if it is
    /// a container and the depth allows.
    fn member(&mut self, data: &[u8], path: &mut Vec<String>) -> Step {
        self.in_visitor = true;
        let flow = (self.visit)(&Member { path, data });
        self.in_visitor = false;
        if let Flow::Stop = flow {
            return Err(Halt);
        }
        let Some(format) = detect(data) else {
            return Ok(());
        };
        let level = path.len();
        if level > self.max_depth as usize {
            let detail = format!(
                "container nested {level} levels below the outer file, limit is {}; its members were not expanded",
                self.max_depth
            );
            self.report(path, Problem::LimitExceeded { limit: Limit::Depth, detail });
            return Ok(());
        }
        let name = path.last().map(String::as_str).unwrap_or_default();
        let name = base_name(name).to_owned();
        self.container(data, format, path, &name)
    }

    /// Stream one member into memory under the member, total and ratio
    /// limits. `consumed` reports the compressed bytes read so far for this
    /// member. `Ok(None)` means the member was rejected and reported.
    fn read_member(
        &mut self,
        label: &str,
        reader: &mut dyn Read,
        consumed: &dyn Fn() -> u64,
        path: &[String],
    ) -> Result<Option<Vec<u8>>, Halt> {
        let limits = self.limits;
        let remaining = limits.max_total_size.saturating_sub(self.expanded);
        let cap = limits.max_member_size.min(remaining);
        self.chunk.resize(CHUNK, 0);
        let mut out: Vec<u8> = Vec::new();
        let outcome = loop {
            let n = match reader.read(&mut self.chunk) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The zip reader creates decompressors lazily, so an unknown
                // method only shows up here, as an `Unsupported` read error.
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                    break Err(Problem::Unsupported(format!("{label}: {e}")))
                }
                Err(e) => break Err(Problem::Malformed(format!("{label}: {e}"))),
            };
            let len = out.len() as u64;
            let new_len = len.saturating_add(n as u64);
            if new_len > cap {
                if new_len > limits.max_member_size && limits.max_member_size <= remaining {
                    let detail = format!("member expands to more than {} bytes", limits.max_member_size);
                    break Err(Problem::LimitExceeded { limit: Limit::MemberSize, detail });
                }
                let detail = format!(
                    "more than {} bytes expanded below the outer file; expansion stopped",
                    limits.max_total_size
                );
                break Err(Problem::LimitExceeded { limit: Limit::TotalSize, detail });
            }
            if out.capacity() - out.len() < n {
                // Grow geometrically but never past the cap, so a member's
                // buffer is bounded by the limits rather than by 2x of them.
                let target = new_len.max(len.saturating_mul(2)).max(CHUNK as u64).min(cap);
                let additional = usize::try_from(target - len).unwrap_or(n).max(n);
                if out.try_reserve_exact(additional).is_err() {
                    break Err(Problem::LimitExceeded {
                        limit: Limit::MemberSize,
                        detail: format!("out of memory after expanding {len} bytes of member"),
                    });
                }
            }
            out.extend_from_slice(&self.chunk[..n]);
            let compressed = consumed().max(1);
            if new_len > limits.ratio_floor && new_len > limits.max_ratio.saturating_mul(compressed) {
                let detail = format!(
                    "member expanded to {new_len} bytes from {compressed} compressed bytes, more than {}:1",
                    limits.max_ratio
                );
                break Err(Problem::LimitExceeded { limit: Limit::Ratio, detail });
            }
        };
        // Bytes of rejected members count too: otherwise a bomb of many
        // members, each stopped just past a limit, would cost unbounded CPU.
        self.expanded = self.expanded.saturating_add(out.len() as u64);
        match outcome {
            Ok(()) => Ok(Some(out)),
            Err(problem) => {
                let halt = matches!(problem, Problem::LimitExceeded { limit: Limit::TotalSize, .. });
                self.report(path, problem);
                if halt {
                    Err(Halt)
                } else {
                    Ok(None)
                }
            }
        }
    }

    fn zip(&mut self, data: &[u8], path: &mut Vec<String>) -> Step {
        let counter = Rc::new(Cell::new(0u64));
        let reader = Counted { inner: Cursor::new(data), count: Rc::clone(&counter) };
        let mut archive = match zip::ZipArchive::new(reader) {
            Ok(archive) => archive,
            Err(e) => {
                self.report(path, zip_problem(e));
                return Ok(());
            }
        };
        if archive.has_duplicate_names() {
            let detail = "zip: several central directory entries share a name; \
                          only one entry per name can be read, the others were not scanned";
            self.report(path, Problem::Malformed(detail.to_owned()));
        }
        for index in 0..archive.len() {
            self.count_member(path)?;
            let (name, encrypted, empty_dir) = match archive.by_index_data(index) {
                Ok(entry) => {
                    let name = match entry.name() {
                        Ok(name) => display_name(&name, index),
                        Err(_) => display_name(&String::from_utf8_lossy(entry.name_raw()), index),
                    };
                    (name, entry.encrypted(), entry.is_dir() && entry.size() == 0)
                }
                Err(e) => {
                    let detail = format!("zip: central directory entry {index}: {e}");
                    self.report(path, Problem::Malformed(detail));
                    continue;
                }
            };
            if empty_dir {
                continue;
            }
            path.push(name);
            let step = if encrypted {
                self.report(path, Problem::Encrypted);
                Ok(())
            } else {
                self.zip_entry(&mut archive, index, &counter, path)
            };
            path.pop();
            step?;
        }
        Ok(())
    }

    fn zip_entry(
        &mut self,
        archive: &mut zip::ZipArchive<Counted<Cursor<&[u8]>>>,
        index: usize,
        counter: &Rc<Cell<u64>>,
        path: &mut Vec<String>,
    ) -> Step {
        let mut file = match archive.by_index(index) {
            Ok(file) => file,
            Err(e) => {
                self.report(path, zip_problem(e));
                return Ok(());
            }
        };
        // Opening the entry read its local header; only what follows is compressed data.
        let start = counter.get();
        let consumed = || counter.get().saturating_sub(start);
        let bytes = self.read_member("zip", &mut file, &consumed, path)?;
        drop(file);
        match bytes {
            Some(bytes) => self.member(&bytes, path),
            None => Ok(()),
        }
    }

    fn gzip(&mut self, data: &[u8], path: &mut Vec<String>, outer_name: &str) -> Step {
        self.count_member(path)?;
        let name = gzip_header_name(data)
            .and_then(|raw| clean_name(&raw))
            .unwrap_or_else(|| gunzipped_name(outer_name));
        path.push(name);
        let counter = Rc::new(Cell::new(0u64));
        let mut decoder =
            flate2::read::MultiGzDecoder::new(Counted { inner: data, count: Rc::clone(&counter) });
        let consumed = || counter.get();
        let step = match self.read_member("gzip", &mut decoder, &consumed, path) {
            Ok(Some(bytes)) => {
                drop(decoder);
                self.member(&bytes, path)
            }
            Ok(None) => Ok(()),
            Err(halt) => Err(halt),
        };
        path.pop();
        step
    }

    fn tar(&mut self, data: &[u8], path: &mut Vec<String>) -> Step {
        let counter = Rc::new(Cell::new(0u64));
        let mut archive = tar::Archive::new(Counted { inner: data, count: Rc::clone(&counter) });
        let entries = match archive.entries() {
            Ok(entries) => entries,
            Err(e) => {
                self.report(path, Problem::Malformed(format!("tar: {e}")));
                return Ok(());
            }
        };
        for (index, entry) in entries.enumerate() {
            let mut entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    // A bad header leaves no reliable way to find the next one.
                    self.report(path, Problem::Malformed(format!("tar: {e}")));
                    return Ok(());
                }
            };
            self.count_member(path)?;
            if !tar_has_content(entry.header().entry_type()) {
                continue;
            }
            let name = display_name(&String::from_utf8_lossy(&entry.path_bytes()), index);
            path.push(name);
            let start = counter.get();
            let consumed = || counter.get().saturating_sub(start);
            let step = match self.read_member("tar", &mut entry, &consumed, path) {
                // The tar reader ends an entry quietly when the input runs
                // out, so the header's size is what reveals truncation.
                Ok(Some(bytes)) if (bytes.len() as u64) < entry.size() => {
                    let detail =
                        format!("tar: member truncated at {} of {} bytes", bytes.len(), entry.size());
                    self.report(path, Problem::Malformed(detail));
                    Ok(())
                }
                Ok(Some(bytes)) => self.member(&bytes, path),
                Ok(None) => Ok(()),
                Err(halt) => Err(halt),
            };
            path.pop();
            step?;
        }
        Ok(())
    }
}

fn zip_problem(error: zip::result::ZipError) -> Problem {
    use zip::result::ZipError as E;
    match error {
        E::UnsupportedArchive(msg) if msg == E::PASSWORD_REQUIRED => Problem::Encrypted,
        e @ (E::UnsupportedArchive(_) | E::CompressionMethodNotSupported(_)) => {
            Problem::Unsupported(format!("zip: {e}"))
        }
        e => Problem::Malformed(format!("zip: {e}")),
    }
}

/// Counts bytes pulled from the compressed input, which is the only honest
/// denominator for the compression ratio: declared sizes can lie.
struct Counted<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get().saturating_add(n as u64));
        Ok(n)
    }
}

impl<R: Seek> Seek for Counted<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

/// Tar entry kinds that carry no file content. Anything else, including
/// unknown type flags, is read: GNU tar extracts unknown types as regular
/// files.
fn tar_has_content(kind: tar::EntryType) -> bool {
    use tar::EntryType as T;
    !matches!(
        kind,
        T::Directory
            | T::Symlink
            | T::Link
            | T::Char
            | T::Block
            | T::Fifo
            | T::XGlobalHeader
            | T::XHeader
            | T::GNULongName
            | T::GNULongLink
    )
}

/// The FNAME field of a gzip header, if present and terminated.
fn gzip_header_name(data: &[u8]) -> Option<String> {
    const FEXTRA: u8 = 0x04;
    const FNAME: u8 = 0x08;
    let flags = *data.get(3)?;
    if flags & FNAME == 0 {
        return None;
    }
    let mut pos = 10usize;
    if flags & FEXTRA != 0 {
        let xlen = u16::from_le_bytes([*data.get(10)?, *data.get(11)?]);
        pos = 12 + usize::from(xlen);
    }
    let rest = data.get(pos..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    let raw = &rest[..end];
    // RFC 1952 says ISO 8859-1, but most tools write UTF-8; accept both.
    Some(match std::str::from_utf8(raw) {
        Ok(s) => s.to_owned(),
        Err(_) => raw.iter().map(|&b| char::from(b)).collect(),
    })
}

/// Name for the content of a gzip file called `outer` when the header has none.
fn gunzipped_name(outer: &str) -> String {
    let lower = outer.to_ascii_lowercase();
    let name = if lower.ends_with(".tgz") {
        format!("{}.tar", &outer[..outer.len() - 4])
    } else if lower.ends_with(".gz") {
        outer[..outer.len() - 3].to_owned()
    } else {
        match outer.rfind('.') {
            Some(dot) if dot > 0 => outer[..dot].to_owned(),
            _ => outer.to_owned(),
        }
    };
    if name.is_empty() {
        "content".to_owned()
    } else {
        name
    }
}

/// Last component of a path written with either separator.
fn base_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// Make an inner name fit for display: relative, and free of control
/// characters that could forge log lines or terminal output. Never used to
/// touch the file system.
fn display_name(raw: &str, index: usize) -> String {
    clean_name(raw).unwrap_or_else(|| format!("[unnamed entry {index}]"))
}

/// [`display_name`] without the fallback; `None` when nothing is left.
fn clean_name(raw: &str) -> Option<String> {
    let mut name = raw;
    loop {
        let trimmed = name.trim_start_matches(['/', '\\']).trim_start_matches("./").trim_start_matches(".\\");
        if trimmed.len() == name.len() {
            break;
        }
        name = trimmed;
    }
    if name.is_empty() {
        return None;
    }
    Some(name.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect())
}

/// Old-style (pre-POSIX) tar has no magic; a header whose checksum matches is
/// strong enough evidence, random data passes with negligible probability.
fn is_v7_tar_header(data: &[u8]) -> bool {
    let Some(header) = data.get(..512) else {
        return false;
    };
    if header[0] == 0 {
        return false;
    }
    let Some(stored) = parse_octal(&header[148..156]) else {
        return false;
    };
    let sum: u64 = header
        .iter()
        .enumerate()
        .map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u64::from(b) })
        .sum();
    stored == sum
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let digits = field.iter().skip_while(|&&b| b == b' ').take_while(|&&b| (b'0'..=b'7').contains(&b));
    let mut value: u64 = 0;
    let mut any = false;
    for &d in digits {
        value = value.checked_mul(8)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gunzipped_names() {
        assert_eq!(gunzipped_name("x.tar.gz"), "x.tar");
        assert_eq!(gunzipped_name("x.tgz"), "x.tar");
        assert_eq!(gunzipped_name("X.TGZ"), "X.tar");
        assert_eq!(gunzipped_name("log.txt.gz"), "log.txt");
        assert_eq!(gunzipped_name("blob.bin"), "blob");
        assert_eq!(gunzipped_name("blob"), "blob");
        assert_eq!(gunzipped_name(".gz"), "content");
        assert_eq!(gunzipped_name(".hidden"), ".hidden");
    }

    #[test]
    fn display_names_are_relative_and_printable() {
        assert_eq!(display_name("/etc/passwd", 0), "etc/passwd");
        assert_eq!(display_name("./a/./b", 0), "a/./b");
        assert_eq!(display_name("//.//x", 0), "x");
        assert_eq!(display_name("..\\evil", 0), "..\\evil");
        assert_eq!(display_name("a\nb\x1b[31m", 0), "a\u{fffd}b\u{fffd}[31m");
        assert_eq!(display_name("/", 3), "[unnamed entry 3]");
    }

    #[test]
    fn gzip_header_name_parsing() {
        let mut with_name = vec![0x1f, 0x8b, 8, 0x08, 0, 0, 0, 0, 0, 3];
        with_name.extend_from_slice(b"report.pdf\0rest");
        assert_eq!(gzip_header_name(&with_name).as_deref(), Some("report.pdf"));

        let mut extra_then_name = vec![0x1f, 0x8b, 8, 0x0c, 0, 0, 0, 0, 0, 3, 2, 0, 0xff, 0xff];
        extra_then_name.extend_from_slice(b"caf\xe9\0");
        assert_eq!(gzip_header_name(&extra_then_name).as_deref(), Some("café"));

        let unterminated = [0x1f, 0x8b, 8, 0x08, 0, 0, 0, 0, 0, 3, b'a'];
        assert_eq!(gzip_header_name(&unterminated), None);
        let huge_extra = [0x1f, 0x8b, 8, 0x0c, 0, 0, 0, 0, 0, 3, 0xff, 0xff];
        assert_eq!(gzip_header_name(&huge_extra), None);
    }
}
