//! Content samples: what a file's bytes look like, computed from a bounded read.
//!
//! A [`ContentSample`] is small (no bytes are kept) and serialisable, so the agent can keep the
//! "before" sample of every watched file in its baseline and compare it with the "after" sample
//! taken when the file is closed.
//!
//! The sample is the head of the file ([`HEAD_BYTES`]) plus, for larger files, a chunk from the
//! middle ([`MIDDLE_BYTES`]). Two chi-square statistics are kept: one over the first
//! [`HEAD_WINDOW`] bytes (catches encryptors that only encrypt the head of each file) and one over
//! the whole sample (reference).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Bytes read from the start of a file.
pub const HEAD_BYTES: usize = 64 * 1024;
/// Bytes read from the middle of a file larger than `HEAD_BYTES + MIDDLE_BYTES`.
pub const MIDDLE_BYTES: usize = 16 * 1024;
/// The window at the start of the file whose byte distribution decides "looks random".
pub const HEAD_WINDOW: usize = 4096;
/// Fewer bytes than this in the head window and no uniformity judgement is made: with so few
/// bytes even text can have a flat-looking histogram of mostly-zero bins.
pub const MIN_JUDGED_BYTES: usize = 256;

/// Chi-square (255 degrees of freedom) at or below which a byte window is "uniform".
///
/// Under the uniform hypothesis the statistic has mean 255 and standard deviation
/// sqrt(2 * 255) = 22.6, whatever the window size; 360 is about 4.2 standard deviations up the
/// (right-skewed) chi-square tail, p of the order of 1e-5, so an encrypted head is missed about
/// once in 60,000 files. Measured in `tests/chi_square.rs` over 1,000 windows of 4 KiB each:
/// AES-128-CTR min 188 / mean 255 / max 340, ChaCha20 173 / 254 / 330 (512-byte windows: max
/// 346). Text, CSV and logs: 40,000-66,000 per 4 KiB. PNG head ~810, JPEG head ~1,400.
///
/// Compressed data is *not* reliably separated by this test over one 4 KiB window: xz (LZMA, a
/// range coder) bodies measure 207-295 (uniform), zstd heads 261-299, and single deflate/zstd
/// body windows go down to ~210-235 even though their averages (310-360) are not uniform; a PDF
/// with a deflated stream measured 356 over its head. That is why "looks random" also requires
/// that no file-type magic is recognised (every compressed *file* starts with its magic, and
/// compressors never rewrite a file in place), and why the strong signal is the *transition* of
/// one path from structured to random, not randomness alone.
pub const UNIFORM_CHI_SQUARE_MAX: f64 = 360.0;

/// What a file's leading bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// Zero bytes.
    Empty,
    /// OOXML (docx/xlsx/pptx) or ODF: a zip with the office markers in its head.
    OfficeZip,
    Zip,
    /// OLE compound file (legacy .doc/.xls/.msg).
    Ole,
    Pdf,
    Png,
    Jpeg,
    Gif,
    Tiff,
    /// RIFF container (WAV, AVI, WebP).
    Riff,
    /// ISO base media (MP4, MOV, HEIC).
    IsoMedia,
    /// DICOM medical image ("DICM" at offset 128).
    Dicom,
    Sqlite,
    /// zlib stream (RFC 1950 header with a valid check value).
    Zlib,
    /// Git pack file.
    GitPack,
    Gzip,
    Xz,
    Zstd,
    Bzip2,
    Lz4,
    SevenZip,
    Rar,
    Tar,
    /// `ar` archive (static libraries, .deb).
    Ar,
    Elf,
    /// Windows PE executable.
    Pe,
    /// UTF-8 / ASCII text without NUL bytes, or text with a UTF-16 byte-order mark.
    Text,
    /// Nothing recognised.
    Unknown,
}

impl FileKind {
    /// A recognised type (anything but `Unknown` and `Empty`).
    pub fn is_known(self) -> bool {
        !matches!(self, FileKind::Unknown | FileKind::Empty)
    }

    /// Binary magic was recognised (not text, not unknown, not empty).
    pub fn has_magic(self) -> bool {
        self.is_known() && self != FileKind::Text
    }
}

/// Statistics of a file's content, from at most `HEAD_BYTES + MIDDLE_BYTES` bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentSample {
    /// Length of the whole file (or buffer).
    pub size: u64,
    /// Bytes the statistics were computed over.
    pub sampled: u64,
    pub kind: FileKind,
    /// Chi-square of the byte histogram of the first `HEAD_WINDOW` bytes against uniform.
    pub head_chi_square: f64,
    /// Chi-square over the whole sample (reference; grows with the sample size for non-uniform
    /// data, stays near 255 for uniform data).
    pub chi_square: f64,
    /// Shannon entropy of the whole sample in bits per byte (reference only: compressed data is
    /// also near 8).
    pub entropy: f64,
    pub is_text: bool,
    /// Distinct ransom-note keywords found in the text (0 when not text).
    pub ransom_words: u8,
}

impl ContentSample {
    /// Sample an in-memory file content.
    pub fn from_bytes(bytes: &[u8]) -> ContentSample {
        if bytes.len() <= HEAD_BYTES + MIDDLE_BYTES {
            return Self::from_parts(bytes.len() as u64, bytes, &[]);
        }
        let head = &bytes[..HEAD_BYTES];
        let mid_start = bytes.len() / 2;
        let middle = &bytes[mid_start..mid_start + MIDDLE_BYTES];
        Self::from_parts(bytes.len() as u64, head, middle)
    }

    /// Sample a file on disk: regular files only, opened without following symlinks and
    /// non-blocking (a FIFO put in place of a file must not hang the agent).
    pub fn from_file(path: &Path) -> io::Result<ContentSample> {
        let mut file = open_regular(path)?;
        let size = file.metadata()?.len();
        let mut head = Vec::with_capacity(HEAD_BYTES.min(size as usize));
        (&mut file).take(HEAD_BYTES as u64).read_to_end(&mut head)?;
        let mut middle = Vec::new();
        if size > (HEAD_BYTES + MIDDLE_BYTES) as u64 {
            file.seek(SeekFrom::Start(size / 2))?;
            (&mut file).take(MIDDLE_BYTES as u64).read_to_end(&mut middle)?;
        }
        Ok(Self::from_parts(size, &head, &middle))
    }

    fn from_parts(size: u64, head: &[u8], middle: &[u8]) -> ContentSample {
        let mut counts = [0u64; 256];
        let window = &head[..head.len().min(HEAD_WINDOW)];
        histogram(window, &mut counts);
        let head_chi_square = chi_square_counts(&counts, window.len() as u64);
        histogram(&head[window.len()..], &mut counts);
        histogram(middle, &mut counts);
        let total = (head.len() + middle.len()) as u64;
        let chi_square = chi_square_counts(&counts, total);
        let entropy = entropy_counts(&counts, total);
        let is_text = size > 0 && looks_text(head);
        let kind = detect_kind(head, is_text);
        let ransom_words = if is_text { ransom_keywords(head) } else { 0 };
        ContentSample {
            size,
            sampled: total,
            kind,
            head_chi_square,
            chi_square,
            entropy,
            is_text,
            ransom_words,
        }
    }

    /// The head is statistically indistinguishable from uniform random bytes, carries no
    /// recognised magic and is not text: what encrypted content looks like.
    pub fn looks_random(&self) -> bool {
        let judged = self.size.min(HEAD_WINDOW as u64) >= MIN_JUDGED_BYTES as u64;
        judged
            && !self.is_text
            && self.kind == FileKind::Unknown
            && self.head_chi_square <= UNIFORM_CHI_SQUARE_MAX
    }

    /// The content had structure worth protecting: a recognised type or text, or an
    /// unrecognised format whose head is far from uniform (ten times the uniform threshold:
    /// proprietary instrument data, databases without magic).
    pub fn is_structured(&self) -> bool {
        self.kind.is_known()
            || (self.size.min(HEAD_WINDOW as u64) >= MIN_JUDGED_BYTES as u64
                && self.head_chi_square > 10.0 * UNIFORM_CHI_SQUARE_MAX)
    }
}

fn open_regular(path: &Path) -> io::Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = opts.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(file)
}

fn histogram(bytes: &[u8], counts: &mut [u64; 256]) {
    for &b in bytes {
        counts[b as usize] += 1;
    }
}

fn chi_square_counts(counts: &[u64; 256], total: u64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let expected = total as f64 / 256.0;
    counts
        .iter()
        .map(|&c| {
            let d = c as f64 - expected;
            d * d / expected
        })
        .sum()
}

fn entropy_counts(counts: &[u64; 256], total: u64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let n = total as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Pearson's chi-square statistic of `bytes`' byte histogram against the uniform distribution
/// (255 degrees of freedom). 0 for an empty slice.
pub fn chi_square(bytes: &[u8]) -> f64 {
    let mut counts = [0u64; 256];
    histogram(bytes, &mut counts);
    chi_square_counts(&counts, bytes.len() as u64)
}

/// Shannon entropy in bits per byte.
pub fn shannon_entropy(bytes: &[u8]) -> f64 {
    let mut counts = [0u64; 256];
    histogram(bytes, &mut counts);
    entropy_counts(&counts, bytes.len() as u64)
}

/// Valid UTF-8 (a character cut at the end of the sample allowed), no NUL, and fewer than 2% of
/// other control characters.
fn looks_text(head: &[u8]) -> bool {
    if head.is_empty() || head.contains(&0) {
        return false;
    }
    let valid = match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    };
    if !valid {
        return false;
    }
    let controls =
        head.iter().filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c | 0x1b)).count();
    controls * 50 < head.len()
}

fn detect_kind(head: &[u8], is_text: bool) -> FileKind {
    let starts = |m: &[u8]| head.starts_with(m);
    let at = |off: usize, m: &[u8]| head.len() >= off + m.len() && &head[off..off + m.len()] == m;
    if head.is_empty() {
        return FileKind::Empty;
    }
    if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") {
        let office = [&b"[Content_Types].xml"[..], b"word/", b"xl/", b"ppt/", b"application/vnd.oasis"];
        if office.iter().any(|m| contains(head, m)) {
            return FileKind::OfficeZip;
        }
        return FileKind::Zip;
    }
    if starts(b"%PDF-") {
        FileKind::Pdf
    } else if starts(b"\x89PNG\r\n\x1a\n") {
        FileKind::Png
    } else if starts(b"\xff\xd8\xff") {
        FileKind::Jpeg
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        FileKind::Gif
    } else if starts(b"II*\0") || starts(b"MM\0*") {
        FileKind::Tiff
    } else if starts(b"RIFF") && head.len() >= 12 {
        FileKind::Riff
    } else if at(4, b"ftyp") {
        FileKind::IsoMedia
    } else if at(128, b"DICM") {
        FileKind::Dicom
    } else if starts(b"SQLite format 3\0") {
        FileKind::Sqlite
    } else if starts(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1") {
        FileKind::Ole
    } else if !is_text
        && head.len() >= 2
        && head[0] == 0x78
        && matches!(head[1], 0x01 | 0x5e | 0x9c | 0xda)
        && (u16::from(head[0]) * 256 + u16::from(head[1])) % 31 == 0
    {
        FileKind::Zlib
    } else if starts(b"PACK\0\0\0") {
        FileKind::GitPack
    } else if starts(b"\x1f\x8b\x08") {
        FileKind::Gzip
    } else if starts(b"\xfd7zXZ\0") {
        FileKind::Xz
    } else if starts(b"\x28\xb5\x2f\xfd")
        || (head.len() >= 4 && head[0] & 0xf0 == 0x50 && at(1, b"\x2a\x4d\x18"))
    {
        FileKind::Zstd
    } else if head.len() >= 4 && starts(b"BZh") && (b'1'..=b'9').contains(&head[3]) {
        FileKind::Bzip2
    } else if starts(b"\x04\x22\x4d\x18") {
        FileKind::Lz4
    } else if starts(b"7z\xbc\xaf\x27\x1c") {
        FileKind::SevenZip
    } else if starts(b"Rar!\x1a\x07") {
        FileKind::Rar
    } else if at(257, b"ustar") {
        FileKind::Tar
    } else if starts(b"!<arch>\n") {
        FileKind::Ar
    } else if starts(b"\x7fELF") {
        FileKind::Elf
    } else if starts(b"MZ") && is_pe(head) {
        FileKind::Pe
    } else if is_text || starts(b"\xff\xfe") || starts(b"\xfe\xff") {
        FileKind::Text
    } else {
        FileKind::Unknown
    }
}

/// "MZ" is only two bytes: also require the PE signature where `e_lfanew` points, when that is
/// inside the head (otherwise accept a plausible DOS header).
fn is_pe(head: &[u8]) -> bool {
    if head.len() < 0x40 {
        return false;
    }
    let off = u32::from_le_bytes([head[0x3c], head[0x3d], head[0x3e], head[0x3f]]) as usize;
    head.len() >= off.saturating_add(4) && off >= 0x40 && &head[off..off + 4] == b"PE\0\0"
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

const RANSOM_WORDS: &[&str] = &[
    "bitcoin",
    "btc",
    "monero",
    "decrypt",
    "ransom",
    "your files",
    "encrypted",
    ".onion",
    "tor browser",
    "private key",
    "wallet",
    "recover your",
];

/// How many distinct ransom-note keywords appear (case-insensitive) in the text.
fn ransom_keywords(head: &[u8]) -> u8 {
    let text = String::from_utf8_lossy(&head[..head.len().min(16 * 1024)]).to_lowercase();
    RANSOM_WORDS.iter().filter(|w| text.contains(*w)).count() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_recognised() {
        assert_eq!(ContentSample::from_bytes(b"%PDF-1.7\n...").kind, FileKind::Pdf);
        assert_eq!(ContentSample::from_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").kind, FileKind::Png);
        assert_eq!(ContentSample::from_bytes(b"\xfd7zXZ\0\0\x04").kind, FileKind::Xz);
        assert_eq!(ContentSample::from_bytes(b"\x28\xb5\x2f\xfd\x04\0").kind, FileKind::Zstd);
        assert_eq!(ContentSample::from_bytes(b"\x7fELF\x02\x01\x01").kind, FileKind::Elf);
        assert_eq!(ContentSample::from_bytes(b"hello, world\n").kind, FileKind::Text);
        assert_eq!(ContentSample::from_bytes(b"").kind, FileKind::Empty);
        assert_eq!(ContentSample::from_bytes(b"\x01\x02\x03\0\xff").kind, FileKind::Unknown);
        let mut dicom = vec![0u8; 128];
        dicom.extend_from_slice(b"DICM\x02\0");
        assert_eq!(ContentSample::from_bytes(&dicom).kind, FileKind::Dicom);
        assert_eq!(ContentSample::from_bytes(b"\x78\x9c\x4b\x4c").kind, FileKind::Zlib);
        assert_eq!(ContentSample::from_bytes(b"\xff\xfeH\0i\0").kind, FileKind::Text);
        // Binary without magic but clearly structured counts as structured.
        let mut rec = Vec::new();
        for i in 0u32..600 {
            rec.extend_from_slice(&i.to_le_bytes());
            rec.extend_from_slice(&[0, 0, 1, 0]);
        }
        let s = ContentSample::from_bytes(&rec);
        assert_eq!(s.kind, FileKind::Unknown);
        assert!(s.is_structured() && !s.looks_random());
    }

    #[test]
    fn text_and_keywords() {
        let note = b"All your files are encrypted. Pay 0.5 Bitcoin to decrypt them.";
        let s = ContentSample::from_bytes(note);
        assert!(s.is_text);
        assert!(s.ransom_words >= 3, "{}", s.ransom_words);
        let s = ContentSample::from_bytes("Grüße aus Tokyo, 東京\n".as_bytes());
        assert!(s.is_text);
        assert_eq!(s.ransom_words, 0);
    }

    #[test]
    fn small_files_are_not_judged() {
        let s = ContentSample::from_bytes(&[0x55u8; 100]);
        assert!(!s.looks_random());
    }

    #[cfg(unix)]
    #[test]
    fn from_file_refuses_fifos_and_symlinks_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(ContentSample::from_file(&fifo).is_err());
        let target = dir.path().join("t.txt");
        std::fs::write(&target, "hello\n").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(ContentSample::from_file(&link).is_err());
        assert_eq!(ContentSample::from_file(&target).unwrap().kind, FileKind::Text);
        // Large file: head + middle sampled, size is the whole file.
        let big = dir.path().join("big.bin");
        std::fs::write(&big, vec![b'a'; 1 << 20]).unwrap();
        let s = ContentSample::from_file(&big).unwrap();
        assert_eq!((s.size, s.sampled), (1 << 20, (HEAD_BYTES + MIDDLE_BYTES) as u64));
    }

    #[test]
    fn uniform_counts_give_zero() {
        let all: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        assert!(chi_square(&all) < 1e-9);
        assert!((shannon_entropy(&all) - 8.0).abs() < 1e-9);
    }
}
