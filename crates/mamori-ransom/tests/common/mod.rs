//! Shared test helpers: realistic file contents, real ciphers, observation builders.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aes::cipher::{KeyIvInit, StreamCipher};
use mamori_ransom::{ContentSample, Detector, Observation, ObservationKind, Verdict};
use rand::{Rng, RngCore, SeedableRng};

pub type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

const WORDS: &[&str] = &[
    "patient",
    "admission",
    "discharge",
    "the",
    "of",
    "and",
    "ward",
    "blood",
    "pressure",
    "results",
    "laboratory",
    "invoice",
    "insurance",
    "doctor",
    "nurse",
    "schedule",
    "medication",
    "dose",
    "mg",
    "daily",
    "follow-up",
    "appointment",
    "radiology",
    "report",
    "normal",
    "within",
    "limits",
    "to",
    "is",
    "a",
    "for",
    "with",
    "on",
    "was",
    "allergies",
    "none",
    "known",
    "history",
    "surgery",
];

pub fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// English-like text of about `len` bytes.
pub fn text(r: &mut impl Rng, len: usize) -> Vec<u8> {
    let mut s = String::with_capacity(len + 16);
    let mut line = 0;
    while s.len() < len {
        let w = WORDS[r.gen_range(0..WORDS.len())];
        s.push_str(w);
        line += w.len() + 1;
        if line > 70 {
            s.push_str(".\n");
            line = 0;
        } else {
            s.push(' ');
        }
    }
    s.into_bytes()
}

pub fn csv(r: &mut impl Rng, rows: usize) -> Vec<u8> {
    let mut s = String::from("id,name,ward,admitted,amount\n");
    for i in 0..rows {
        let w = WORDS[r.gen_range(0..WORDS.len())];
        s.push_str(&format!(
            "{i},{w},{},{}-{:02}-{:02},{}.{:02}\n",
            r.gen_range(1..40),
            2020 + i % 6,
            1 + i % 12,
            1 + i % 28,
            r.gen_range(10..5000),
            r.gen_range(0..100)
        ));
    }
    s.into_bytes()
}

pub fn log_lines(r: &mut impl Rng, lines: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..lines {
        s.push_str(&format!(
            "2026-11-23T08:{:02}:{:02}.{:03}Z host{} svc[{}]: {} {} {}\n",
            (i / 60) % 60,
            i % 60,
            r.gen_range(0..1000),
            r.gen_range(1..9),
            r.gen_range(100..9999),
            WORDS[r.gen_range(0..WORDS.len())],
            WORDS[r.gen_range(0..WORDS.len())],
            r.gen_range(0..100000)
        ));
    }
    s.into_bytes()
}

/// A real .docx/.xlsx-like OOXML zip (deflated XML).
pub fn office_zip(r: &mut impl Rng, body_len: usize) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut out = std::io::Cursor::new(Vec::new());
    let mut z = zip::ZipWriter::new(&mut out);
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    z.start_file("[Content_Types].xml", opts).unwrap();
    z.write_all(br#"<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>"#).unwrap();
    z.start_file("word/document.xml", opts).unwrap();
    z.write_all(b"<w:document><w:body><w:p><w:t>").unwrap();
    z.write_all(&text(r, body_len)).unwrap();
    z.write_all(b"</w:t></w:p></w:body></w:document>").unwrap();
    z.finish().unwrap();
    out.into_inner()
}

/// A real PNG: gradient with noise, zlib-compressed, correct CRCs.
pub fn png(r: &mut impl Rng, w: u32, h: u32) -> Vec<u8> {
    let mut raw = Vec::with_capacity(((w * 3 + 1) * h) as usize);
    for y in 0..h {
        raw.push(0);
        for x in 0..w {
            let n: u8 = r.gen_range(0..24);
            raw.extend_from_slice(&[(x * 255 / w) as u8 ^ n, (y * 255 / h) as u8, ((x + y) % 256) as u8 ^ n]);
        }
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw).unwrap();
    let idat = z.finish().unwrap();
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    for (ty, data) in [(&b"IHDR"[..], &ihdr[..]), (b"IDAT", &idat[..]), (b"IEND", &[][..])] {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(ty);
        out.extend_from_slice(data);
        let mut crc = flate2::Crc::new();
        crc.update(ty);
        crc.update(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    out
}

/// JPEG-like: SOI, JFIF APP0, quantisation table, SOF0, then a compressed-looking but
/// non-uniform scan body (deflated noisy pixels, 0xFF bytes stuffed as in JPEG), EOI.
pub fn jpeg_like(r: &mut impl Rng, len: usize) -> Vec<u8> {
    let mut out = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x48\x00\x48\x00\x00".to_vec();
    out.extend_from_slice(b"\xff\xdb\x00\x43\x00");
    out.extend((0..64).map(|i| (1 + i / 4) as u8));
    out.extend_from_slice(b"\xff\xc0\x00\x11\x08\x01\xe0\x02\x80\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01");
    out.extend_from_slice(b"\xff\xda\x00\x0c\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00");
    let body = png(r, 256, (len / 600).max(8) as u32);
    for b in body.into_iter().skip(40).take(len) {
        out.push(b);
        if b == 0xff {
            out.push(0);
        }
    }
    out.extend_from_slice(b"\xff\xd9");
    out
}

/// A PDF with a deflated content stream (like real PDFs) and text objects.
pub fn pdf(r: &mut impl Rng, len: usize) -> Vec<u8> {
    let mut out =
        b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n".to_vec();
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&text(r, len)).unwrap();
    let s = z.finish().unwrap();
    out.extend_from_slice(
        format!("4 0 obj\n<< /Length {} /Filter /FlateDecode >>\nstream\n", s.len()).as_bytes(),
    );
    out.extend_from_slice(&s);
    out.extend_from_slice(b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n");
    out
}

/// AES-128-CTR keystream XOR (the `aes` + `ctr` RustCrypto crates).
pub fn aes_ctr(key: [u8; 16], iv: [u8; 16], data: &mut [u8]) {
    Aes128Ctr::new(&key.into(), &iv.into()).apply_keystream(data);
}

/// ChaCha20 keystream XOR (`rand_chacha::ChaCha20Rng`, the ChaCha20 block function).
pub fn chacha20(seed: u64, data: &mut [u8]) {
    let mut ks = vec![0u8; data.len()];
    rand_chacha::ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut ks);
    for (d, k) in data.iter_mut().zip(ks) {
        *d ^= k;
    }
}

pub fn at(secs_millis: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + Duration::from_millis(secs_millis)
}

/// A clock for simulations: every event advances it by `step` milliseconds.
pub struct Clock {
    pub ms: u64,
    pub step: u64,
}

impl Clock {
    pub fn tick(&mut self) -> SystemTime {
        self.ms += self.step;
        at(self.ms)
    }
}

pub fn sample(path: &Path) -> Option<ContentSample> {
    ContentSample::from_file(path).ok()
}

pub fn obs(
    time: SystemTime,
    pid: Option<u32>,
    exe: &str,
    kind: ObservationKind,
    path: &Path,
    before: Option<ContentSample>,
    after: Option<ContentSample>,
) -> Observation {
    Observation { time, pid, exe: Some(PathBuf::from(exe)), kind, path: path.to_path_buf(), before, after }
}

/// A detector fed with a baseline map (path → sample) kept like the agent would.
pub struct Harness {
    pub detector: Detector,
    /// Sees the same observations without the pid (an event source that gives none): its
    /// verdicts can only be about directories.
    pub no_pid: Detector,
    pub no_pid_verdicts: Vec<Verdict>,
    pub baseline: std::collections::HashMap<PathBuf, ContentSample>,
    pub verdicts: Vec<Verdict>,
    pub clock: Clock,
    pub pid: Option<u32>,
    pub exe: String,
}

impl Harness {
    pub fn new(pid: Option<u32>, exe: &str, step_ms: u64) -> Self {
        Harness {
            detector: Detector::default(),
            no_pid: Detector::default(),
            no_pid_verdicts: Vec::new(),
            baseline: Default::default(),
            verdicts: Vec::new(),
            clock: Clock { ms: 0, step: step_ms },
            pid,
            exe: exe.to_string(),
        }
    }

    /// Record the current content of every file under `root` as the baseline.
    pub fn baseline_tree(&mut self, root: &Path) {
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Some(s) = sample(&p) {
                    self.baseline.insert(p, s);
                }
            }
        }
    }

    fn feed(&mut self, mut o: Observation) {
        let v = self.detector.observe(&o);
        self.verdicts.extend(v);
        o.pid = None;
        let v = self.no_pid.observe(&o);
        self.no_pid_verdicts.extend(v);
    }

    /// The file at `path` was created or rewritten (and closed).
    pub fn wrote(&mut self, path: &Path, created: bool) {
        let t = self.clock.tick();
        let after = sample(path);
        let before = self.baseline.get(path).cloned();
        let kind = if created { ObservationKind::Create } else { ObservationKind::Close };
        let o = obs(t, self.pid, &self.exe.clone(), kind, path, before, after.clone());
        self.feed(o);
        if let Some(a) = after {
            self.baseline.insert(path.to_path_buf(), a);
        }
    }

    pub fn renamed(&mut self, from: &Path, to: &Path) {
        let t = self.clock.tick();
        // What the rename replaced, if anything, else what `from` was.
        let from_before = self.baseline.remove(from);
        let before = self.baseline.get(to).cloned().or(from_before);
        let after = sample(to);
        let kind = ObservationKind::Rename { from: from.to_path_buf(), to: to.to_path_buf() };
        let o = obs(t, self.pid, &self.exe.clone(), kind, to, before, after.clone());
        self.feed(o);
        if let Some(a) = after {
            self.baseline.insert(to.to_path_buf(), a);
        }
    }

    pub fn deleted(&mut self, path: &Path) {
        let t = self.clock.tick();
        let before = self.baseline.remove(path);
        let o = obs(t, self.pid, &self.exe.clone(), ObservationKind::Delete, path, before, None);
        self.feed(o);
    }

    /// Observe every file under `root` that is new or changed since the baseline, as creates
    /// (used after running an external tool), and every baseline file now gone as a delete.
    pub fn diff_tree(&mut self, root: &Path) {
        let mut now = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    now.push(p);
                }
            }
        }
        now.sort();
        let mut gone: Vec<PathBuf> =
            self.baseline.keys().filter(|p| p.starts_with(root) && !p.exists()).cloned().collect();
        gone.sort();
        for p in &now {
            let changed = match (self.baseline.get(p), sample(p)) {
                (Some(b), Some(a)) => *b != a,
                _ => true,
            };
            if changed {
                let created = !self.baseline.contains_key(p);
                self.wrote(p, created);
                // The tool replaced an original by this file (a.log -> a.log.xz): its delete
                // comes right after, as it would from the real tool.
                let stem = p.with_extension("");
                if let Some(i) = gone.iter().position(|g| *g == stem) {
                    let g = gone.remove(i);
                    self.deleted(&g);
                }
            }
        }
        for p in gone {
            self.deleted(&p);
        }
    }
}
