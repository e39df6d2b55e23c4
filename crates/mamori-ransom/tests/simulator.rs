//! A ransomware simulator: builds a realistic tree of real files on disk, encrypts it in place
//! with real ciphers (AES-128-CTR from the RustCrypto `aes`+`ctr` crates, ChaCha20 from
//! `rand_chacha`) in four styles, and feeds the detector the observations the agent would see,
//! with before/after samples computed from the real files as the simulator goes.
//!
//! Run with `--nocapture` to see the files-touched-before-detection table.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use mamori_ransom::{Canaries, Severity, Subject};
use rand::Rng;

const DIRS: usize = 50;
const FILES_PER_DIR: usize = 40;

/// 50 directories (two levels) × 40 files: letters, CSV, logs, OOXML zips, PNGs, JPEG-likes,
/// PDFs, of 300 B to ~100 KiB. Returns the directories in walk order.
fn build_tree(root: &Path, seed: u64, ndirs: usize) -> Vec<PathBuf> {
    let mut r = rng(seed);
    let mut dirs = Vec::new();
    for d in 0..ndirs {
        let dir = root.join(format!("dept{:02}", d / 10)).join(format!("case{:03}", d));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..FILES_PER_DIR {
            let a: usize = r.gen_range(0..1000);
            let b: usize = r.gen_range(0..1000);
            let (name, bytes) = match f % 7 {
                0 => (format!("letter_{f:03}.txt"), text(&mut r, 300 + a * 3)),
                1 => (format!("billing_{f:03}.csv"), csv(&mut r, 10 + a * 4 / 5)),
                2 => (format!("service_{f:03}.log"), log_lines(&mut r, 20 + a * 3 / 5)),
                3 => (format!("report_{f:03}.docx"), office_zip(&mut r, 2000 + a * 18)),
                4 => (format!("scan_{f:03}.png"), png(&mut r, 40 + a as u32 / 8, 30 + b as u32 / 15)),
                5 => (format!("photo_{f:03}.jpg"), jpeg_like(&mut r, 3000 + a * 27)),
                _ => (format!("result_{f:03}.pdf"), pdf(&mut r, 2000 + a * 23)),
            };
            fs::write(dir.join(name), bytes).unwrap();
        }
        dirs.push(dir);
    }
    dirs.sort();
    dirs
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Style {
    /// Overwrite in place with AES-CTR, then rename to `.locked`.
    InPlaceRename,
    /// Write `name.enc` (AES-CTR) then delete the original.
    NewThenDelete,
    /// ChaCha20 over the first 4 KiB only, in place.
    PartialHead,
    /// ChaCha20 over the whole file, in place, no rename.
    InPlace,
    /// Extra: write a randomly named file (AES-CTR + a 512-byte "wrapped key" footer) in the
    /// same directory, then delete the original.
    RandomNameThenDelete,
    /// Extra: write the encrypted copy (AES-CTR) to a hidden temp file, then rename it over the
    /// original (an "atomic" in-place encryption).
    TempThenRenameOver,
}

/// Encrypt one file the way `style` does, telling the harness what the agent would see.
fn encrypt_one(h: &mut Harness, style: Style, path: &Path, n: u64) {
    let mut data = fs::read(path).unwrap();
    match style {
        Style::InPlaceRename => {
            let mut iv = [0u8; 16];
            iv[..8].copy_from_slice(&n.to_be_bytes());
            aes_ctr([0x42; 16], iv, &mut data);
            fs::write(path, &data).unwrap();
            h.wrote(path, false);
            let mut to = path.as_os_str().to_owned();
            to.push(".locked");
            let to = PathBuf::from(to);
            fs::rename(path, &to).unwrap();
            h.renamed(path, &to);
        }
        Style::NewThenDelete => {
            let mut iv = [0u8; 16];
            iv[8..].copy_from_slice(&n.to_be_bytes());
            aes_ctr([0x17; 16], iv, &mut data);
            let mut to = path.as_os_str().to_owned();
            to.push(".enc");
            let to = PathBuf::from(to);
            fs::write(&to, &data).unwrap();
            h.wrote(&to, true);
            fs::remove_file(path).unwrap();
            h.deleted(path);
        }
        Style::RandomNameThenDelete => {
            let mut iv = [0u8; 16];
            iv[..8].copy_from_slice(&(n * 7919).to_be_bytes());
            aes_ctr([0x99; 16], iv, &mut data);
            let mut footer = vec![0u8; 512];
            chacha20(n, &mut footer);
            data.extend_from_slice(&footer);
            let to = path.with_file_name(format!("{:016x}.{:x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15), n));
            fs::write(&to, &data).unwrap();
            h.wrote(&to, true);
            fs::remove_file(path).unwrap();
            h.deleted(path);
        }
        Style::TempThenRenameOver => {
            let mut iv = [0u8; 16];
            iv[4..12].copy_from_slice(&n.to_le_bytes());
            aes_ctr([0x5a; 16], iv, &mut data);
            let name = path.file_name().unwrap().to_str().unwrap();
            let tmp = path.with_file_name(format!(".{name}.tmp{n}"));
            fs::write(&tmp, &data).unwrap();
            h.wrote(&tmp, true);
            fs::rename(&tmp, path).unwrap();
            h.renamed(&tmp, path);
        }
        Style::PartialHead => {
            let head = data.len().min(4096);
            chacha20(n, &mut data[..head]);
            fs::write(path, &data).unwrap();
            h.wrote(path, false);
        }
        Style::InPlace => {
            chacha20(n ^ 0xdead, &mut data);
            fs::write(path, &data).unwrap();
            h.wrote(path, false);
        }
    }
}

/// Directories the simulated encryptor gets through (the rest of the tree stays as it was).
const ENCRYPTED_DIRS: usize = 8;

struct Run {
    /// Victim files processed when the first verdict came, with and without the pid.
    first: Option<u64>,
    first_no_pid: Option<u64>,
    files: u64,
    harness: Harness,
}

fn simulate(style: Style, seed: u64) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = build_tree(tmp.path(), seed, DIRS);
    let mut h = Harness::new(Some(4242), "/tmp/.x/svchost", 5);
    h.baseline_tree(tmp.path());
    let (mut first, mut first_no_pid) = (None, None);
    let mut n = 0u64;
    for dir in &dirs[..ENCRYPTED_DIRS] {
        for f in files_in(dir) {
            n += 1;
            encrypt_one(&mut h, style, &f, n);
            if first.is_none() && !h.verdicts.is_empty() {
                first = Some(n);
            }
            if first_no_pid.is_none() && !h.no_pid_verdicts.is_empty() {
                first_no_pid = Some(n);
            }
        }
    }
    Run { first, first_no_pid, files: n, harness: h }
}

#[test]
fn detects_every_style_within_ten_files() {
    let styles = [
        Style::InPlaceRename,
        Style::NewThenDelete,
        Style::PartialHead,
        Style::InPlace,
        Style::RandomNameThenDelete,
        Style::TempThenRenameOver,
    ];
    let mut table = Vec::new();
    for (i, style) in styles.into_iter().enumerate() {
        let run = simulate(style, 100 + i as u64);
        let h = &run.harness;
        for (pid, first, v) in
            [(Some(4242), run.first, &h.verdicts), (None, run.first_no_pid, &h.no_pid_verdicts)]
        {
            let first = first.unwrap_or_else(|| panic!("{style:?} pid {pid:?}: no verdict"));
            let procs = v.iter().filter(|v| matches!(v.subject, Subject::Process { .. })).count();
            let dirs = v.iter().filter(|v| matches!(v.subject, Subject::Directory(_))).count();
            table.push(format!(
                "{:20} pid {:5}: first verdict after {first:2} files; verdicts over {} files: {procs} process, \
                 {dirs} directory; first: score {} {:?} {:?}",
                format!("{style:?}"),
                pid.map_or("none".into(), |p| p.to_string()),
                run.files,
                v[0].score,
                v[0].severity,
                v[0].reasons
            ));
            assert!(first <= 10, "{style:?} pid {pid:?}: first verdict after {first} files");
            // Once per subject: one process verdict for the whole run (it never goes quiet),
            // and every directory of 40 files is caught.
            assert_eq!(procs, usize::from(pid.is_some()), "{style:?}");
            assert_eq!(dirs, ENCRYPTED_DIRS, "{style:?} pid {pid:?}");
            if let Some(pid) = pid {
                let pv = v.iter().find(|v| matches!(v.subject, Subject::Process { .. })).unwrap();
                assert_eq!(pv.subject, Subject::Process { pid, exe: Some(PathBuf::from("/tmp/.x/svchost")) });
                assert!(pv.files_touched >= first && pv.files_touched <= 2 * first, "{}", pv.files_touched);
                assert!(!pv.reasons.is_empty());
            }
        }
    }
    println!("\nfiles touched before the first verdict (tree of {} files):", DIRS * FILES_PER_DIR);
    for line in table {
        println!("  {line}");
    }
}

#[test]
fn canaries_catch_a_sorted_walk_on_the_first_file() {
    for reverse in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = build_tree(tmp.path(), 7, 3);
        let mut canaries = Canaries::new();
        for d in &dirs {
            canaries.plant(d).unwrap();
        }
        let mut h = Harness::new(Some(777), "/usr/bin/evil", 5);
        h.detector.add_canaries(&canaries);
        h.baseline_tree(tmp.path());
        let mut first = None;
        let mut n = 0;
        'walk: for dir in &dirs {
            let mut files = files_in(dir);
            if reverse {
                files.reverse();
            }
            for f in files {
                n += 1;
                encrypt_one(&mut h, Style::InPlace, &f, n);
                if !h.verdicts.is_empty() {
                    first = Some(n);
                    break 'walk;
                }
            }
        }
        println!(
            "canaries, {} walk: first verdict after {first:?} files",
            if reverse { "reverse" } else { "sorted" }
        );
        assert_eq!(first, Some(1));
        assert_eq!(h.verdicts[0].severity, Severity::Critical);
        assert!(h.verdicts[0].reasons[0].contains("canary"), "{:?}", h.verdicts[0].reasons);
    }
}

#[test]
fn ransom_notes_in_many_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let mut h = Harness::new(Some(99), "/usr/bin/x", 50);
    let note = "YOUR FILES ARE ENCRYPTED!\nTo decrypt them send 0.3 Bitcoin to the wallet below and \
                contact us via Tor Browser at http://abc.onion\n";
    for i in 0..5 {
        let d = tmp.path().join(format!("d{i}"));
        fs::create_dir(&d).unwrap();
        let p = d.join("HOW_TO_DECRYPT_FILES.txt");
        fs::write(&p, note).unwrap();
        h.wrote(&p, true);
        if !h.verdicts.is_empty() {
            println!("ransom notes: verdict after notes in {} directories", i + 1);
            assert_eq!(i + 1, 3);
            assert!(h.verdicts[0].reasons.iter().any(|r| r.contains("ransom-note")));
            return;
        }
    }
    panic!("no verdict for ransom notes");
}
