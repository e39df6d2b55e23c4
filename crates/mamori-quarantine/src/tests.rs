use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

use super::*;
use crate::crypto::{CHUNK, HEADER_LEN};

const MARKER: &[u8] = b"MAMORI-PLAINTEXT-MARKER-7f3a9c";
const DET: Detection<'static> = Detection { rule: "EICAR-Test-File", ruleset: "builtin" };

struct Env {
    tmp: TempDir,
    store: Store,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("store")).unwrap();
        fs::create_dir(tmp.path().join("work")).unwrap();
        Env { tmp, store }
    }

    fn work(&self, name: &str) -> PathBuf {
        self.tmp.path().join("work").join(name)
    }

    fn bin(&self, id: &str) -> PathBuf {
        self.store.dir().join("items").join(format!("{id}.bin"))
    }

    fn json(&self, id: &str) -> PathBuf {
        self.store.dir().join("items").join(format!("{id}.json"))
    }
}

/// Deterministic pseudo-random bytes with the marker sprinkled in.
fn content(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut pos = 0;
    while pos + MARKER.len() <= len {
        v[pos..pos + MARKER.len()].copy_from_slice(MARKER);
        pos += 100_003;
    }
    v
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn write_file(path: &Path, data: &[u8], mode: u32, mtime: Duration) {
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(UNIX_EPOCH + mtime).unwrap();
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn round_trip_multi_chunk() {
    let env = Env::new();
    let path = env.work("sample.exe");
    let data = content(3 * CHUNK / 2 * 16 + 12_345); // > 1 MiB, not chunk aligned
    assert!(data.len() > 1 << 20);
    let mtime = Duration::new(1_700_000_000, 123_456_789);
    write_file(&path, &data, 0o640, mtime);
    let before = fs::metadata(&path).unwrap();

    let rec = env.store.quarantine(&path, DET).unwrap();
    assert!(!path.exists() && fs::symlink_metadata(&path).is_err(), "original must be gone");
    assert_eq!(rec.id.len(), 16);
    assert!(is_valid_id(&rec.id));
    assert_eq!(rec.original_path, fs::canonicalize(env.work("")).unwrap().join("sample.exe"));
    assert_eq!(rec.size, data.len() as u64);
    assert_eq!(rec.mode, 0o640);
    assert_eq!(rec.uid, before.uid());
    assert_eq!(rec.gid, before.gid());
    assert_eq!(rec.mtime_ns, 1_700_000_000_123_456_789);
    assert_eq!(rec.sha256, sha256_hex(&data));
    assert_eq!(rec.md5, hex::encode(md5::Md5::digest(&data)));
    assert_eq!(rec.sha1, hex::encode(sha1::Sha1::digest(&data)));
    assert_eq!(rec.rule, "EICAR-Test-File");
    assert_eq!(rec.ruleset, "builtin");
    assert_eq!(rec.quarantined_at.len(), 20);
    assert!(rec.quarantined_at.ends_with('Z'));

    let stored = fs::read(env.bin(&rec.id)).unwrap();
    assert!(!contains(&stored, MARKER), "plaintext marker found in store");
    assert!(!contains(&stored, &data[1000..1064]));
    let expected_chunks = data.len() / CHUNK + 1;
    assert_eq!(stored.len(), HEADER_LEN + data.len() + expected_chunks * 16);
    let json = fs::read(env.json(&rec.id)).unwrap();
    assert!(!contains(&json, MARKER));
    assert_eq!(mode_of(&env.bin(&rec.id)), 0o600);
    assert_eq!(mode_of(&env.json(&rec.id)), 0o600);

    let listed = env.store.list().unwrap();
    assert_eq!(listed, vec![rec.clone()]);

    let restored = env.store.restore(&rec.id).unwrap();
    assert_eq!(restored, rec);
    assert_eq!(fs::read(&path).unwrap(), data);
    let after = fs::metadata(&path).unwrap();
    assert_eq!(after.permissions().mode() & 0o7777, 0o640);
    assert_eq!(after.mtime(), 1_700_000_000);
    assert_eq!(after.mtime_nsec(), 123_456_789);
    assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));

    assert!(env.store.list().unwrap().is_empty());
    assert!(matches!(env.store.get(&rec.id), Err(Error::NotFound(_))));
    assert!(!env.bin(&rec.id).exists());
    assert!(!env.json(&rec.id).exists());
    assert_eq!(dir_entries(&env.store.dir().join("items")), Vec::<String>::new());
    assert_eq!(dir_entries(&env.work("")), vec!["sample.exe".to_string()]);
}

#[test]
fn empty_file_round_trip() {
    let env = Env::new();
    let path = env.work("empty");
    write_file(&path, b"", 0o600, Duration::new(1_000_000_000, 0));
    let rec = env.store.quarantine(&path, DET).unwrap();
    assert!(!path.exists());
    assert_eq!(rec.size, 0);
    assert_eq!(rec.sha256, sha256_hex(b""));
    assert_eq!(fs::metadata(env.bin(&rec.id)).unwrap().len(), (HEADER_LEN + 16) as u64);
    env.store.restore(&rec.id).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"");
    assert_eq!(fs::metadata(&path).unwrap().mtime(), 1_000_000_000);
}

#[test]
fn chunk_aligned_round_trip_and_boundary_truncation() {
    let env = Env::new();
    let path = env.work("aligned");
    let data = content(2 * CHUNK);
    write_file(&path, &data, 0o644, Duration::new(1_600_000_000, 0));
    let rec = env.store.quarantine(&path, DET).unwrap();
    let bin = env.bin(&rec.id);
    let full = fs::read(&bin).unwrap();
    // Two full chunks plus an empty, last-flagged chunk.
    assert_eq!(full.len(), HEADER_LEN + 2 * (CHUNK + 16) + 16);

    let target = env.work("out");
    for cut in [HEADER_LEN + 2 * (CHUNK + 16), HEADER_LEN + CHUNK + 16, HEADER_LEN, 5] {
        fs::write(&bin, &full[..cut]).unwrap();
        let err = env.store.restore_to(&rec.id, &target).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "cut {cut}: {err}");
        assert!(fs::symlink_metadata(&target).is_err());
    }
    fs::write(&bin, &full).unwrap();
    env.store.restore_to(&rec.id, &target).unwrap();
    assert_eq!(fs::read(&target).unwrap(), data);
}

#[test]
fn restore_refuses_existing_target() {
    let env = Env::new();
    let path = env.work("victim.doc");
    write_file(&path, b"malicious payload", 0o644, Duration::new(1_650_000_000, 0));
    let rec = env.store.quarantine(&path, DET).unwrap();

    fs::write(&path, b"new legitimate file").unwrap();
    let err = env.store.restore(&rec.id).unwrap_err();
    assert!(matches!(&err, Error::TargetExists(p) if p == &rec.original_path), "{err}");
    assert_eq!(fs::read(&path).unwrap(), b"new legitimate file");
    assert_eq!(env.store.get(&rec.id).unwrap(), rec);
    assert!(env.bin(&rec.id).exists());
    assert_eq!(dir_entries(&env.work("")), vec!["victim.doc".to_string()]);

    // A dangling symlink counts as "something exists" too, and is not followed.
    fs::remove_file(&path).unwrap();
    let elsewhere = env.work("elsewhere");
    std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
    assert!(matches!(env.store.restore(&rec.id), Err(Error::TargetExists(_))));
    assert!(fs::symlink_metadata(&elsewhere).is_err());

    fs::remove_file(&path).unwrap();
    env.store.restore(&rec.id).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"malicious payload");
}

#[test]
fn restore_to_other_path() {
    let env = Env::new();
    let path = env.work("a.bin");
    let data = content(70_000);
    write_file(&path, &data, 0o750, Duration::new(1_500_000_000, 42));
    let rec = env.store.quarantine(&path, DET).unwrap();
    fs::create_dir(env.work("analysis")).unwrap();
    let target = env.work("analysis").join("copy");
    let restored = env.store.restore_to(&rec.id[..6], &target).unwrap();
    assert_eq!(restored.original_path, rec.original_path);
    assert_eq!(fs::read(&target).unwrap(), data);
    assert_eq!(mode_of(&target), 0o750);
    assert_eq!(fs::metadata(&target).unwrap().mtime_nsec(), 42);
    assert!(!path.exists());
    assert!(env.store.list().unwrap().is_empty());
    assert_eq!(dir_entries(&env.work("analysis")), vec!["copy".to_string()]);

    // Refuses an existing target as well.
    let path2 = env.work("b.bin");
    write_file(&path2, b"second", 0o600, Duration::new(1, 0));
    let rec2 = env.store.quarantine(&path2, DET).unwrap();
    assert!(matches!(env.store.restore_to(&rec2.id, &target), Err(Error::TargetExists(_))));
    assert_eq!(fs::read(&target).unwrap(), data);
    // A missing target directory is an error and the item stays.
    assert!(matches!(env.store.restore_to(&rec2.id, &env.work("missing/dir/x")), Err(Error::Io { .. })));
    assert!(env.store.get(&rec2.id).is_ok());
}

#[test]
fn tampered_data_is_detected() {
    let env = Env::new();
    let path = env.work("t.exe");
    let data = content(3 * CHUNK + 500);
    write_file(&path, &data, 0o755, Duration::new(1_700_000_000, 0));
    let rec = env.store.quarantine(&path, DET).unwrap();
    let bin = env.bin(&rec.id);
    let good = fs::read(&bin).unwrap();
    let target = env.work("restored");

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    for pos in [HEADER_LEN + 10, HEADER_LEN + CHUNK + 16 + 3, good.len() - 1, 10, 15] {
        let mut b = good.clone();
        b[pos] ^= 0x01;
        cases.push(("flip", b));
    }
    cases.push(("truncate", good[..good.len() - 100].to_vec()));
    cases.push(("truncate-tag", good[..good.len() - 1].to_vec()));
    let mut extended = good.clone();
    extended.extend_from_slice(&[0u8; 40]);
    cases.push(("extend", extended));
    let mut swapped = good.clone();
    let (a, b) = (HEADER_LEN, HEADER_LEN + CHUNK + 16);
    let first: Vec<u8> = swapped[a..b].to_vec();
    let second: Vec<u8> = swapped[b..b + CHUNK + 16].to_vec();
    swapped[a..b].copy_from_slice(&second);
    swapped[b..b + CHUNK + 16].copy_from_slice(&first);
    cases.push(("reorder", swapped));

    for (what, bytes) in cases {
        fs::write(&bin, &bytes).unwrap();
        let err = env.store.restore_to(&rec.id, &target).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{what}: {err}");
        assert!(fs::symlink_metadata(&target).is_err(), "{what}: something written at target");
        assert_eq!(dir_entries(&env.work("")), Vec::<String>::new(), "{what}: temp left behind");
        assert_eq!(env.store.get(&rec.id).unwrap(), rec, "{what}: item must stay");
    }
    fs::write(&bin, &good).unwrap();
    env.store.restore_to(&rec.id, &target).unwrap();
    assert_eq!(fs::read(&target).unwrap(), data);
}

#[test]
fn data_file_of_another_item_is_rejected() {
    let env = Env::new();
    let (p1, p2) = (env.work("one"), env.work("two"));
    write_file(&p1, b"first file", 0o600, Duration::new(1, 0));
    write_file(&p2, b"second file", 0o600, Duration::new(1, 0));
    let r1 = env.store.quarantine(&p1, DET).unwrap();
    let r2 = env.store.quarantine(&p2, DET).unwrap();
    fs::copy(env.bin(&r2.id), env.bin(&r1.id)).unwrap();
    let err = env.store.restore(&r1.id).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(fs::symlink_metadata(&p1).is_err());
}

#[test]
fn tampered_record_is_detected() {
    let env = Env::new();
    let path = env.work("r");
    write_file(&path, b"payload", 0o644, Duration::new(1, 0));
    let rec = env.store.quarantine(&path, DET).unwrap();
    let other = env.work("r2");
    write_file(&other, b"fine", 0o644, Duration::new(1, 0));
    let good = env.store.quarantine(&other, DET).unwrap();

    let json = fs::read_to_string(env.json(&rec.id)).unwrap();
    let forged = json.replace("\"mode\": 420", "\"mode\": 3565");
    assert_ne!(json, forged);
    fs::write(env.json(&rec.id), forged).unwrap();
    assert!(matches!(env.store.get(&rec.id), Err(Error::Corrupt { .. })));
    assert!(matches!(env.store.restore(&rec.id), Err(Error::Corrupt { .. })));
    assert!(fs::symlink_metadata(&path).is_err());

    // Reformatting without changing values is harmless.
    let mut v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(env.json(&good.id)).unwrap()).unwrap();
    fs::write(env.json(&good.id), serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(env.store.get(&good.id).unwrap(), good);
    v["record"]["original_path"] = serde_json::Value::String("/etc/passwd".into());
    fs::write(env.json(&good.id), serde_json::to_vec(&v).unwrap()).unwrap();
    assert!(matches!(env.store.get(&good.id), Err(Error::Corrupt { .. })));

    fs::write(env.store.dir().join("items").join("0123456789abcdef.json"), b"{ not json").unwrap();
    let (records, problems) = env.store.list_with_problems();
    assert!(records.is_empty());
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems.iter().all(|p| matches!(p, Error::Corrupt { .. })));
    assert!(env.store.list().unwrap().is_empty());
}

#[test]
fn record_from_another_store_is_rejected() {
    let env = Env::new();
    let other = Store::open(&env.tmp.path().join("other-store")).unwrap();
    let path = env.work("x");
    write_file(&path, b"x", 0o600, Duration::new(1, 0));
    let rec = other.quarantine(&path, DET).unwrap();
    let items = env.store.dir().join("items");
    fs::copy(
        other.dir().join("items").join(format!("{}.json", rec.id)),
        items.join(format!("{}.json", rec.id)),
    )
    .unwrap();
    fs::copy(
        other.dir().join("items").join(format!("{}.bin", rec.id)),
        items.join(format!("{}.bin", rec.id)),
    )
    .unwrap();
    assert!(matches!(env.store.get(&rec.id), Err(Error::Corrupt { .. })));
}

#[test]
fn refuses_fifo_symlink_and_directory() {
    let env = Env::new();
    let fifo = env.work("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let err = env.store.quarantine(&fifo, DET).unwrap_err();
    assert!(matches!(err, Error::NotRegularFile(_)), "{err}");
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo_like());

    let real = env.work("real");
    write_file(&real, b"real content", 0o644, Duration::new(1, 0));
    let link = env.work("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let err = env.store.quarantine(&link, DET).unwrap_err();
    assert!(matches!(err, Error::NotRegularFile(_)), "{err}");
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(fs::read(&real).unwrap(), b"real content");

    let dir = env.work("dir");
    fs::create_dir(&dir).unwrap();
    let err = env.store.quarantine(&dir, DET).unwrap_err();
    assert!(matches!(err, Error::NotRegularFile(_)), "{err}");
    assert!(dir.is_dir());

    assert!(matches!(env.store.quarantine(&env.work("nonexistent"), DET), Err(Error::Io { .. })));
    assert!(matches!(env.store.quarantine(Path::new("/"), DET), Err(Error::InvalidPath { .. })));
    assert!(env.store.list().unwrap().is_empty());
    assert_eq!(dir_entries(&env.store.dir().join("items")), Vec::<String>::new());
}

trait IsFifo {
    fn is_fifo_like(&self) -> bool;
}
impl IsFifo for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_fifo(self)
    }
}

#[test]
fn file_growing_during_copy_is_left_in_place() {
    // procfs files report size 0 but yield data: exactly the "changed while
    // copying" case, reproducible without racing a writer thread.
    let env = Env::new();
    let err = env.store.quarantine(Path::new("/proc/self/status"), DET).unwrap_err();
    assert!(matches!(err, Error::Changed(_)), "{err}");
    assert!(Path::new("/proc/self/status").exists());
    assert_eq!(dir_entries(&env.store.dir().join("items")), Vec::<String>::new());
}

#[test]
fn store_and_key_permissions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested").join("store");
    let store = Store::open(&dir).unwrap();
    assert_eq!(store.dir(), dir);
    assert_eq!(mode_of(&dir), 0o700);
    assert_eq!(mode_of(&dir.join("items")), 0o700);
    assert_eq!(mode_of(&dir.join("key")), 0o600);
    assert_eq!(fs::metadata(dir.join("key")).unwrap().len(), 32);
    assert_eq!(dir_entries(&dir), vec!["items".to_string(), "key".to_string()]);

    // Reopening uses the same key: an item from the first handle is readable.
    let path = tmp.path().join("f");
    write_file(&path, b"abc", 0o600, Duration::new(1, 0));
    let rec = store.quarantine(&path, DET).unwrap();
    let again = Store::open(&dir).unwrap();
    assert_eq!(again.get(&rec.id).unwrap(), rec);

    let dbg = format!("{again:?}");
    assert!(dbg.contains("redacted"));
    let key = fs::read(dir.join("key")).unwrap();
    assert!(!dbg.contains(&hex::encode(&key)));

    fs::set_permissions(dir.join("key"), fs::Permissions::from_mode(0o644)).unwrap();
    let err = Store::open(&dir).unwrap_err();
    assert!(matches!(err, Error::InsecurePermissions { .. }), "{err}");
    assert!(!err.to_string().contains(&hex::encode(&key)));
    fs::set_permissions(dir.join("key"), fs::Permissions::from_mode(0o640)).unwrap();
    assert!(matches!(Store::open(&dir), Err(Error::InsecurePermissions { .. })));
    fs::set_permissions(dir.join("key"), fs::Permissions::from_mode(0o600)).unwrap();
    Store::open(&dir).unwrap();

    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    assert!(matches!(Store::open(&dir), Err(Error::InsecurePermissions { .. })));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn bad_key_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();

    write_file(&dir.join("key"), &[7u8; 31], 0o600, Duration::new(1, 0));
    assert!(matches!(Store::open(&dir), Err(Error::InvalidKey { .. })));

    fs::remove_file(dir.join("key")).unwrap();
    write_file(&dir.join("key"), &[7u8; 32], 0o644, Duration::new(1, 0));
    assert!(matches!(Store::open(&dir), Err(Error::InsecurePermissions { .. })));

    fs::remove_file(dir.join("key")).unwrap();
    write_file(&tmp.path().join("elsewhere"), &[7u8; 32], 0o600, Duration::new(1, 0));
    std::os::unix::fs::symlink(tmp.path().join("elsewhere"), dir.join("key")).unwrap();
    assert!(matches!(Store::open(&dir), Err(Error::InvalidKey { .. })));

    fs::remove_file(dir.join("key")).unwrap();
    write_file(&dir.join("key"), &[7u8; 32], 0o600, Duration::new(1, 0));
    Store::open(&dir).unwrap();
}

#[test]
fn concurrent_first_open_agrees_on_one_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("race");
    let fingerprints: Vec<[u8; 32]> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..8).map(|_| s.spawn(|| Store::open(&dir).unwrap().keys.fingerprint())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(fingerprints.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(dir_entries(&dir), vec!["items".to_string(), "key".to_string()]);
}

#[test]
fn delete_get_prefix_and_ids() {
    let env = Env::new();
    let mk = |name: &str, id: &str| {
        let p = env.work(name);
        write_file(&p, name.as_bytes(), 0o600, Duration::new(1, 0));
        env.store.quarantine_as(&p, DET, id).unwrap()
    };
    let a = mk("a", "abcd000000000001");
    let b = mk("b", "abcd000000000002");
    let c = mk("c", "ffee000000000003");

    assert_eq!(env.store.get("ffee").unwrap(), c);
    assert_eq!(env.store.get("FFEE00").unwrap(), c);
    assert_eq!(env.store.get("abcd000000000001").unwrap(), a);
    assert_eq!(env.store.get("abcd000000000002").unwrap(), b);
    assert!(matches!(env.store.get("abcd"), Err(Error::Ambiguous { count: 2, .. })));
    assert!(matches!(env.store.get("abcd00000000000"), Err(Error::Ambiguous { .. })));
    assert!(matches!(env.store.get("1234"), Err(Error::NotFound(_))));
    assert!(matches!(env.store.get("1234567812345678"), Err(Error::NotFound(_))));
    for bad in ["abc", "", "../../etc/passwd", "abcd/", "abcd000000000001x", "ghij"] {
        assert!(matches!(env.store.get(bad), Err(Error::InvalidId(_))), "{bad}");
    }

    let mut ids: Vec<String> = env.store.list().unwrap().into_iter().map(|r| r.id).collect();
    ids.sort();
    assert_eq!(ids, vec![a.id.clone(), b.id.clone(), c.id.clone()]);

    let deleted = env.store.delete("ffee").unwrap();
    assert_eq!(deleted, c);
    assert!(!env.bin(&c.id).exists());
    assert!(!env.json(&c.id).exists());
    assert!(matches!(env.store.get("ffee"), Err(Error::NotFound(_))));
    assert!(matches!(env.store.delete(&c.id), Err(Error::NotFound(_))));
    assert!(matches!(env.store.delete("abcd"), Err(Error::Ambiguous { .. })));
    assert_eq!(env.store.list().unwrap().len(), 2);
    // Deleting does not bring anything back.
    assert!(fs::symlink_metadata(env.work("c")).is_err());
}

#[test]
fn list_is_sorted_by_time_then_id() {
    let env = Env::new();
    for (name, id) in [("x", "9000000000000000"), ("y", "1000000000000000"), ("z", "5000000000000000")] {
        let p = env.work(name);
        write_file(&p, b"data", 0o600, Duration::new(1, 0));
        env.store.quarantine_as(&p, DET, id).unwrap();
    }
    let list = env.store.list().unwrap();
    let keys: Vec<(String, String)> = list.iter().map(|r| (r.quarantined_at.clone(), r.id.clone())).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(keys.len(), 3);
}

#[test]
fn non_utf8_file_name_round_trip() {
    let env = Env::new();
    let path = env.work("").join(OsStr::from_bytes(b"evil\xff\xfe.exe"));
    write_file(&path, b"odd name", 0o700, Duration::new(1, 0));
    let rec = env.store.quarantine(&path, DET).unwrap();
    assert!(fs::symlink_metadata(&path).is_err());
    let json = fs::read_to_string(env.json(&rec.id)).unwrap();
    assert!(json.contains("unix_bytes_hex"));
    assert_eq!(env.store.get(&rec.id).unwrap().original_path, rec.original_path);
    env.store.restore(&rec.id).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"odd name");
    assert_eq!(mode_of(&path), 0o700);
}

#[test]
fn relative_path_is_recorded_absolute() {
    let env = Env::new();
    // Relative to a symlinked directory, to check canonicalization.
    let link = env.tmp.path().join("worklink");
    std::os::unix::fs::symlink(env.work(""), &link).unwrap();
    let path = link.join("rel");
    write_file(&path, b"rel", 0o600, Duration::new(1, 0));
    let rec = env.store.quarantine(&path, DET).unwrap();
    assert_eq!(rec.original_path, fs::canonicalize(env.work("")).unwrap().join("rel"));
    assert!(rec.original_path.is_absolute());
}

#[test]
fn restores_foreign_owner_when_root() {
    if sys::geteuid() != 0 {
        // Changing ownership needs privilege; covered by the same-owner tests otherwise.
        return;
    }
    let env = Env::new();
    let path = env.work("owned");
    write_file(&path, b"owned by someone", 0o4755, Duration::new(1, 0));
    std::os::unix::fs::chown(&path, Some(12345), Some(23456)).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o4755)).unwrap();
    let rec = env.store.quarantine(&path, DET).unwrap();
    assert_eq!((rec.uid, rec.gid, rec.mode), (12345, 23456, 0o4755));
    env.store.restore(&rec.id).unwrap();
    let m = fs::metadata(&path).unwrap();
    assert_eq!((m.uid(), m.gid()), (12345, 23456));
    assert_eq!(m.permissions().mode() & 0o7777, 0o4755);
}

#[test]
fn rfc3339_formatting() {
    use crate::record::format_unix_secs;
    assert_eq!(format_unix_secs(0), "1970-01-01T00:00:00Z");
    assert_eq!(format_unix_secs(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(format_unix_secs(1_795_410_000), "2026-11-23T05:00:00Z");
    assert_eq!(format_unix_secs(1_709_251_199), "2024-02-29T23:59:59Z");
    assert_eq!(format_unix_secs(-1), "1969-12-31T23:59:59Z");
    assert_eq!(format_unix_secs(4_102_444_800), "2100-01-01T00:00:00Z");
}

#[test]
fn publish_never_replaces() {
    // The guarantee a restore relies on when a file appears at the target
    // after the early existence check.
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("tmp"), b"new").unwrap();
    fs::write(tmp.path().join("target"), b"existing").unwrap();
    let dir = sys::open_dir(tmp.path()).unwrap();
    let from = sys::cstring(b"tmp").unwrap();
    let to = sys::cstring(b"target").unwrap();
    let err = sys::publish_noreplace(dir.as_fd(), &from, &to).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(fs::read(tmp.path().join("target")).unwrap(), b"existing");
    assert_eq!(fs::read(tmp.path().join("tmp")).unwrap(), b"new");

    let free = sys::cstring(b"free").unwrap();
    sys::publish_noreplace(dir.as_fd(), &from, &free).unwrap();
    assert_eq!(fs::read(tmp.path().join("free")).unwrap(), b"new");
    assert!(!tmp.path().join("tmp").exists());
}
