//! `mamori scan --quarantine` and `mamori quarantine list|restore|delete`, end to end.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{eicar, write, Env};

#[test]
fn quarantine_then_restore_is_bit_exact_with_mode_and_owner() {
    let env = Env::new();
    let tree = tempfile::tempdir().unwrap();
    let target = tree.path().join("docs/eicar.com");
    let mut content = eicar();
    content.extend_from_slice(b"\n");
    write(&target, &content);
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = std::fs::metadata(&target).unwrap();
    write(&tree.path().join("docs/clean.txt"), b"keep me");

    let run = env.run(&["scan", "--json", "--quarantine", tree.path().to_str().unwrap()]);
    assert_eq!(run.code, 1);
    let events = run.json();
    let q: Vec<_> = events.iter().filter(|v| v["event"]["action"] == "file_quarantined").collect();
    assert_eq!(q.len(), 1);
    let id = q[0]["mamori"]["quarantine"]["id"].as_str().unwrap().to_string();
    assert!(!target.exists(), "the detected file was moved away");
    assert!(tree.path().join("docs/clean.txt").exists());
    assert_eq!(run.summary()["mamori"]["scan"]["quarantined"], 1);

    // The store holds no plaintext: nothing in it is detected by a rescan.
    let rescan =
        env.run(&["scan", "--json", "--no-cache", env.data.path().join("quarantine").to_str().unwrap()]);
    assert_eq!(rescan.code, 0, "quarantined content must not be re-detected");

    let list = env.run(&["quarantine", "list", "--json"]);
    assert_eq!(list.code, 0);
    let records = list.json();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["id"], id.as_str());
    assert_eq!(records[0]["original_path"], target.to_str().unwrap());
    assert_eq!(records[0]["rule"], "EICAR-Test-File");
    let human = env.run(&["quarantine", "list"]);
    assert!(human.stdout.contains(&id) && human.stdout.contains("eicar.com"));

    // A file that appeared at the original path since is never overwritten.
    write(&target, b"a new file by the user");
    let refused = env.run(&["quarantine", "restore", &id]);
    assert_eq!(refused.code, 2);
    assert!(refused.stderr.contains("exists"), "{}", refused.stderr);
    assert_eq!(std::fs::read(&target).unwrap(), b"a new file by the user");
    std::fs::remove_file(&target).unwrap();

    let restored = env.run(&["quarantine", "restore", &id[..6]]);
    assert_eq!(restored.code, 0);
    assert_eq!(std::fs::read(&target).unwrap(), content, "bit-exact");
    let after = std::fs::metadata(&target).unwrap();
    assert_eq!(after.mode() & 0o7777, 0o640);
    assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
    assert_eq!(after.mtime(), before.mtime());
    assert_eq!(env.run(&["quarantine", "list", "--json"]).json().len(), 0);
    assert_eq!(env.run(&["quarantine", "restore", &id]).code, 2, "already restored");
}

#[test]
fn delete_removes_for_good_and_unknown_ids_are_clear_errors() {
    let env = Env::new();
    let tree = tempfile::tempdir().unwrap();
    let target = tree.path().join("x.com");
    write(&target, &eicar());
    assert_eq!(env.run(&["scan", "--quarantine", tree.path().to_str().unwrap()]).code, 1);
    let records = env.run(&["quarantine", "list", "--json"]).json();
    let id = records[0]["id"].as_str().unwrap().to_string();

    let unknown = env.run(&["quarantine", "restore", "ffffffffffffffff"]);
    assert_eq!(unknown.code, 2);
    assert!(unknown.stderr.contains("ffffffffffffffff"));

    assert_eq!(env.run(&["quarantine", "delete", &id]).code, 0);
    assert!(env.run(&["quarantine", "list", "--json"]).json().is_empty());
    assert!(!target.exists());
    let items = env.data.path().join("quarantine/items");
    assert_eq!(std::fs::read_dir(items).unwrap().count(), 0, "nothing left behind");
}
