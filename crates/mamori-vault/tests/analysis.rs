//! Snapshot analysis on real trees in a real repository: three legitimate upgrades of a tree
//! are not flagged, a ransomware pass (encrypt and rename part of the tree, drop notes) is.

use std::path::Path;

use mamori_vault::analysis::{analyze, Analysis, Samples};
use mamori_vault::chunk::ChunkerConfig;
use mamori_vault::tree::{store_path, StoreStats};
use mamori_vault::{Repository, Snapshot};

const SMALL: ChunkerConfig = ChunkerConfig { min: 4096, avg: 16384, max: 65536 };

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn source_text(rng: &mut Rng, lines: usize) -> Vec<u8> {
    let words = ["int", "patient", "ward", "return", "struct", "bed", "if", "record", "for", "chart"];
    let mut out = String::new();
    for i in 0..lines {
        let w: Vec<&str> = (0..8).map(|_| words[(rng.next() % 10) as usize]).collect();
        out.push_str(&format!("{} {} = {}; /* line {i} */\n", w[0], w[1], w[2..].join(" ")));
    }
    out.into_bytes()
}

fn png(rng: &mut Rng) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    // Structured payload: runs of a few values, like an uncompressed scan.
    for _ in 0..3000 {
        out.extend(std::iter::repeat_n((rng.next() % 4) as u8 * 60, 4));
    }
    out
}

fn pdf(rng: &mut Rng) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n".to_vec();
    out.extend(source_text(rng, 200));
    out
}

/// 3 directories of 40 files: C sources, PNG images, PDF reports.
fn make_tree(root: &Path, rng: &mut Rng) {
    for (dir, make) in [
        ("src", source_text as fn(&mut Rng, usize) -> Vec<u8>),
        ("img", |r: &mut Rng, _| png(r)),
        ("docs", |r: &mut Rng, _| pdf(r)),
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        let ext = match dir {
            "src" => "c",
            "img" => "png",
            _ => "pdf",
        };
        for i in 0..40 {
            std::fs::write(root.join(dir).join(format!("f{i:03}.{ext}")), make(rng, 150)).unwrap();
        }
    }
}

/// A version upgrade: edits, additions (one of them random-looking: an encrypted key file),
/// deletions, renames, replaced images.
fn upgrade(root: &Path, rng: &mut Rng, round: u32) {
    for i in (0..40).step_by(6) {
        let p = root.join(format!("src/f{i:03}.c"));
        if let Ok(mut text) = std::fs::read(&p) {
            text.extend(source_text(rng, 20));
            std::fs::write(&p, text).unwrap();
        }
    }
    for i in 0..8 {
        std::fs::write(root.join(format!("src/new{round}_{i}.c")), source_text(rng, 500)).unwrap();
    }
    std::fs::write(
        root.join(format!("docs/release-{round}.tar.xz")),
        [&b"\xfd7zXZ\0"[..], &rng.bytes(20_000)].concat(),
    )
    .unwrap();
    std::fs::write(root.join(format!("src/signing-key-{round}.gpg")), rng.bytes(8_000)).unwrap();
    for i in [round as usize, round as usize + 10] {
        let _ = std::fs::remove_file(root.join(format!("docs/f{i:03}.pdf")));
    }
    let _ = std::fs::rename(
        root.join(format!("src/f{:03}.c", 30 + round)),
        root.join(format!("src/moved{round}.c")),
    );
    for i in 0..3 {
        std::fs::write(root.join(format!("img/f{:03}.png", i + round as usize * 3)), png(rng)).unwrap();
    }
}

/// Encrypts (random bytes of the same size) and renames 45 % of the files, drops notes.
fn ransomware(root: &Path, rng: &mut Rng) {
    for dir in ["src", "img", "docs"] {
        let mut files: Vec<_> =
            std::fs::read_dir(root.join(dir)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for (i, path) in files.iter().enumerate() {
            if i % 20 >= 9 {
                continue;
            }
            let size = std::fs::metadata(path).unwrap().len() as usize;
            std::fs::write(path, rng.bytes(size)).unwrap();
            let mut locked = path.clone().into_os_string();
            locked.push(".k3rber");
            std::fs::rename(path, locked).unwrap();
        }
        std::fs::write(
            root.join(dir).join("README_TO_DECRYPT.txt"),
            b"All your files are encrypted. To decrypt them send 0.5 bitcoin; contact us at our .onion site.",
        )
        .unwrap();
    }
}

fn snapshot(repo: &mut Repository, source: &Path, time_ms: i64) -> Snapshot {
    let before = repo.written();
    let mut stats = StoreStats::default();
    let tree = store_path(repo, source, &mut stats).unwrap();
    assert!(stats.problems.is_empty(), "{:?}", stats.problems);
    let after = repo.written();
    let snapshot = Snapshot {
        time_ms,
        hostname: "file-server".into(),
        paths: vec![source.display().to_string()],
        tree,
        device_id: String::new(),
        excludes: Vec::new(),
        added_raw: after.0 - before.0,
        added_stored: after.1 - before.1,
    };
    repo.write_snapshot(&snapshot).unwrap();
    snapshot
}

fn explain(a: &Analysis) -> String {
    format!(
        "changed {} added {} deleted {} randomized {} magic {} new-ext {} notes {:?} ratio {:?}/{:?} reasons {:?}",
        a.changed,
        a.added,
        a.deleted,
        a.randomized_count,
        a.magic_destroyed_count,
        a.new_extension_count,
        a.ransom_notes,
        a.compression_ratio,
        a.previous_compression_ratio,
        a.reasons
    )
}

#[test]
fn upgrades_are_quiet_and_a_ransomware_pass_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let (source, vault) = (dir.path().join("share"), dir.path().join("vault"));
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    make_tree(&source, &mut rng);
    let mut repo = Repository::init(&vault, "passphrase", SMALL).unwrap();
    let mut samples = Samples::default();
    let mut previous = snapshot(&mut repo, &source, 1_000);
    let first = analyze(&mut repo, None, &previous, &mut samples).unwrap();
    assert!(!first.suspicious, "{}", explain(&first));

    for round in 1..=3 {
        upgrade(&source, &mut rng, round);
        let current = snapshot(&mut repo, &source, 1_000 + i64::from(round) * 86_400_000);
        let a = analyze(&mut repo, Some(&previous), &current, &mut samples).unwrap();
        assert!(!a.suspicious, "upgrade {round} flagged: {}", explain(&a));
        assert!(a.changed >= 7 && a.added >= 9 && a.deleted >= 1, "upgrade {round}: {}", explain(&a));
        previous = current;
    }

    ransomware(&source, &mut rng);
    let attacked = snapshot(&mut repo, &source, 10 * 86_400_000);
    let a = analyze(&mut repo, Some(&previous), &attacked, &mut samples).unwrap();
    assert!(a.suspicious, "{}", explain(&a));
    assert!(a.randomized_count >= 40, "{}", explain(&a));
    assert_eq!(a.ransom_notes.len(), 3, "{}", explain(&a));
    assert!(a.randomized.iter().all(|p| p.ends_with(".k3rber")), "{:?}", a.randomized);
    assert!(a.reasons.iter().any(|r| r.contains("no longer compresses")), "{}", explain(&a));
    assert!(a.reasons.iter().any(|r| r.contains("new unknown extensions")), "{}", explain(&a));
}
