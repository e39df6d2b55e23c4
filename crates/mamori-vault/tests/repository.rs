//! The repository format on real files: round trips bit-exact with metadata, deduplication,
//! the passphrase, content-address verification, no overwrites, and `check` finding damage.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use mamori_vault::chunk::ChunkerConfig;
use mamori_vault::tree::{restore, store_path, StoreStats};
use mamori_vault::{BlobKind, Error, Repository, Snapshot};

const PASS: &str = "correct horse battery staple";
const SMALL: ChunkerConfig = ChunkerConfig { min: 4096, avg: 16384, max: 65536 };

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn set_mtime(path: &Path, secs: i64, nsec: i64) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let t = libc::timespec { tv_sec: secs, tv_nsec: nsec };
    // SAFETY: valid path and two timespecs.
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [t, t].as_ptr(), libc::AT_SYMLINK_NOFOLLOW) },
        0
    );
}

/// A small tree with what a restore must get right.
fn make_source(root: &Path) {
    std::fs::create_dir_all(root.join("docs/reports")).unwrap();
    std::fs::write(root.join("docs/empty.txt"), b"").unwrap();
    std::fs::write(root.join("docs/reports/2026-11.csv"), b"ward,beds\n3,40\n").unwrap();
    std::fs::write(root.join("big.bin"), pseudo_random(700_000, 7)).unwrap();
    std::fs::set_permissions(root.join("docs/reports/2026-11.csv"), std::fs::Permissions::from_mode(0o640))
        .unwrap();
    std::fs::set_permissions(root.join("big.bin"), std::fs::Permissions::from_mode(0o751)).unwrap();
    std::os::unix::fs::symlink("docs/reports/2026-11.csv", root.join("latest.csv")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    std::fs::write(root.join(odd), b"latin-1 name").unwrap();
    set_mtime(&root.join("big.bin"), 1_700_000_000, 123_456_789);
    set_mtime(&root.join("latest.csv"), 1_600_000_000, 5);
    set_mtime(&root.join("docs/reports"), 1_650_000_000, 0);
}

/// Every entry of `a` and `b`: type, bytes, mode, owner, mtime (ns), link target.
fn assert_same_tree(a: &Path, b: &Path) {
    let mut names_a: Vec<_> = std::fs::read_dir(a).unwrap().map(|e| e.unwrap().file_name()).collect();
    let mut names_b: Vec<_> = std::fs::read_dir(b).unwrap().map(|e| e.unwrap().file_name()).collect();
    names_a.sort();
    names_b.sort();
    assert_eq!(names_a, names_b, "{} vs {}", a.display(), b.display());
    for name in names_a {
        let (pa, pb) = (a.join(&name), b.join(&name));
        let (ma, mb) = (std::fs::symlink_metadata(&pa).unwrap(), std::fs::symlink_metadata(&pb).unwrap());
        assert_eq!(ma.file_type(), mb.file_type(), "{}", pa.display());
        assert_eq!((ma.uid(), ma.gid()), (mb.uid(), mb.gid()), "{}", pa.display());
        assert_eq!((ma.mtime(), ma.mtime_nsec()), (mb.mtime(), mb.mtime_nsec()), "{}", pa.display());
        if ma.file_type().is_symlink() {
            assert_eq!(std::fs::read_link(&pa).unwrap(), std::fs::read_link(&pb).unwrap());
            continue;
        }
        assert_eq!(ma.mode(), mb.mode(), "{}", pa.display());
        if ma.is_dir() {
            assert_same_tree(&pa, &pb);
        } else {
            assert_eq!(std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap(), "{}", pa.display());
        }
    }
}

fn backup(repo: &mut Repository, source: &Path, time_ms: i64) -> (String, StoreStats) {
    let mut stats = StoreStats::default();
    let tree = store_path(repo, source, &mut stats).unwrap();
    let snapshot = Snapshot {
        time_ms,
        hostname: "ward-pc".into(),
        paths: vec![source.display().to_string()],
        tree,
        device_id: String::new(),
        excludes: Vec::new(),
        added_raw: 0,
        added_stored: 0,
    };
    (repo.write_snapshot(&snapshot).unwrap(), stats)
}

#[test]
fn a_tree_round_trips_bit_exact_after_reopening_with_the_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let (source, vault, target) =
        (dir.path().join("src"), dir.path().join("vault"), dir.path().join("restored"));
    make_source(&source);
    let mut repo = Repository::init(&vault, PASS, SMALL).unwrap();
    let (name, stats) = backup(&mut repo, &source, 1_000);
    assert!(stats.problems.is_empty(), "{:?}", stats.problems);
    assert_eq!(stats.files, 4);
    assert_eq!(stats.bytes, 700_000 + 15 + 12);
    drop(repo);

    let mut repo = Repository::open(&vault, PASS).unwrap();
    let snapshots = repo.snapshots().unwrap();
    assert_eq!(snapshots.len(), 1);
    assert_eq!(snapshots[0].0, name);
    restore(&mut repo, &snapshots[0].1.tree, &target).unwrap();
    assert_same_tree(&source, &target);
    assert!(repo.check(true).unwrap().is_ok());
}

#[test]
fn unchanged_content_is_stored_once_and_a_small_edit_adds_little() {
    let dir = tempfile::tempdir().unwrap();
    let (source, vault) = (dir.path().join("src"), dir.path().join("vault"));
    make_source(&source);
    let mut repo = Repository::init(&vault, PASS, SMALL).unwrap();
    let (_, first) = backup(&mut repo, &source, 1_000);
    let (_, second) = backup(&mut repo, &source, 2_000);
    assert!(first.new_blobs > 40, "{first:?}");
    assert_eq!(second.new_blobs, 0, "nothing changed: {second:?}");
    // Insert 100 bytes near the start of the big file: content-defined chunks move with it.
    let mut big = std::fs::read(source.join("big.bin")).unwrap();
    big.splice(1_000..1_000, pseudo_random(100, 99));
    std::fs::write(source.join("big.bin"), &big).unwrap();
    let (_, third) = backup(&mut repo, &source, 3_000);
    // The changed chunk(s), the file's tree and the root tree; not the whole file again.
    assert!(third.new_blobs <= 5, "{third:?} of {} blobs", first.new_blobs);
}

#[test]
fn a_wrong_passphrase_opens_nothing() {
    let dir = tempfile::tempdir().unwrap();
    Repository::init(&dir.path().join("v"), PASS, SMALL).unwrap();
    assert!(matches!(Repository::open(&dir.path().join("v"), "guess"), Err(Error::WrongPassphrase)));
    // And a second init on top of it is refused.
    assert!(matches!(Repository::init(&dir.path().join("v"), PASS, SMALL), Err(Error::Refused(_))));
}

#[test]
fn garbage_under_a_valid_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = Repository::init(&dir.path().join("v"), PASS, SMALL).unwrap();
    let id = repo.blob_id(b"the real chunk");
    assert!(matches!(
        repo.put_verified(BlobKind::Data, &id, b"ransomware's garbage"),
        Err(Error::Refused(_))
    ));
    assert!(!repo.contains(&id));
    assert!(repo.put_verified(BlobKind::Data, &id, b"the real chunk").unwrap());
    assert!(!repo.put_verified(BlobKind::Data, &id, b"the real chunk").unwrap(), "second upload is a no-op");
    assert_eq!(repo.get(&id).unwrap(), b"the real chunk");
}

fn pack_files(vault: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(vault.join("packs")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

#[test]
fn check_finds_a_flipped_byte_and_a_missing_pack() {
    let dir = tempfile::tempdir().unwrap();
    let (source, vault) = (dir.path().join("src"), dir.path().join("vault"));
    make_source(&source);
    let mut repo = Repository::init(&vault, PASS, SMALL).unwrap();
    backup(&mut repo, &source, 1_000);
    let clean = repo.check(true).unwrap();
    assert!(clean.is_ok(), "{clean:?}");
    assert!(clean.blobs > 40);
    drop(repo);

    let packs = pack_files(&vault);
    assert!(!packs.is_empty());
    let mut bytes = std::fs::read(&packs[0]).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&packs[0], &bytes).unwrap();
    let mut repo = Repository::open(&vault, PASS).unwrap();
    let report = repo.check(true).unwrap();
    let name = packs[0].file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(report.damaged_packs, vec![name], "{report:?}");

    std::fs::remove_file(&packs[0]).unwrap();
    let mut repo = Repository::open(&vault, PASS).unwrap();
    let report = repo.check(false).unwrap();
    assert!(report.damaged_packs.is_empty());
    assert!(!report.missing_blobs.is_empty(), "the snapshot's blobs in that pack are missing: {report:?}");
}

#[test]
fn a_writer_killed_mid_pack_leaves_nothing_visible() {
    let dir = tempfile::tempdir().unwrap();
    let (source, vault) = (dir.path().join("src"), dir.path().join("vault"));
    make_source(&source);
    let mut repo = Repository::init(&vault, PASS, SMALL).unwrap();
    backup(&mut repo, &source, 1_000);
    drop(repo);
    // What a kill -9 during a write leaves: a temporary file next to the packs, and blobs
    // stored without a snapshot.
    let any_dir = pack_files(&vault)[0].parent().unwrap().to_path_buf();
    std::fs::write(any_dir.join(".tmp-4242-0011223344556677"), b"MAMORIPK half a pack").unwrap();
    let mut repo = Repository::open(&vault, PASS).unwrap();
    let mut stats = StoreStats::default();
    store_path(&mut repo, &source, &mut stats).unwrap();
    drop(repo); // not flushed, no snapshot: a client that died before finishing
    let mut repo = Repository::open(&vault, PASS).unwrap();
    assert_eq!(repo.snapshots().unwrap().len(), 1, "no partial snapshot is visible");
    assert!(repo.check(true).unwrap().is_ok());
}

/// The service's reader appends each blob behind what is already in the answer, through one
/// buffer and one zstd context for all blobs, and refuses a blob whose length is not the one
/// recorded (nothing appended).
#[test]
fn the_blob_reader_appends_blobs_and_refuses_a_wrong_length() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = Repository::init(&dir.path().join("repo"), PASS, SMALL).unwrap();
    let big = pseudo_random(3 << 20, 11);
    let small = b"ward,beds\n3,40\n".repeat(100);
    let (big_id, _) = repo.put(BlobKind::Data, &big).unwrap();
    let (small_id, _) = repo.put(BlobKind::Data, &small).unwrap();
    repo.flush().unwrap();
    let mut reader = repo.reader();
    let mut out = b"header".to_vec();
    for (id, data) in [(&big_id, &big), (&small_id, &small), (&big_id, &big)] {
        let at = repo.locate(id).unwrap();
        let before = out.len();
        reader.read_into(id, &at, &mut out).unwrap();
        assert_eq!(&out[before..], &data[..]);
    }
    assert_eq!(&out[..6], b"header");
    let mut wrong = repo.locate(&small_id).unwrap();
    wrong.raw_length -= 1;
    let before = out.len();
    assert!(matches!(reader.read_into(&small_id, &wrong, &mut out), Err(Error::Corrupt(_))));
    assert_eq!(out.len(), before, "nothing appended");
    // Sealed under another id (the id is in the AAD): refused.
    let small_at = repo.locate(&small_id).unwrap();
    assert!(matches!(reader.read_into(&big_id, &small_at, &mut out), Err(Error::Corrupt(_))));
    assert_eq!(reader.read(&small_id, &small_at).unwrap(), small);
}
