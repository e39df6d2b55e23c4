//! The file follower on real files in a temporary directory: rotation, copytruncate, restart,
//! delete + recreate, unread lines in a rotated file, partial lines.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use mamori_logs::{Follower, FollowerOptions};

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn poll(f: &mut Follower) -> Vec<String> {
    let mut out = Vec::new();
    f.poll(&mut out).unwrap();
    out.into_iter().map(|l| String::from_utf8(l).unwrap()).collect()
}

#[test]
fn partial_lines_are_held_until_complete() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let state = dir.path().join("app.state");
    append(&log, "one\ntw");
    let mut f = Follower::open(&log, &state).unwrap();
    assert_eq!(poll(&mut f), ["one"]);
    assert_eq!(f.pending_bytes(), 2);
    assert!(poll(&mut f).is_empty());
    append(&log, "o\nthree\n");
    assert_eq!(poll(&mut f), ["two", "three"]);
}

#[test]
fn restart_neither_loses_nor_repeats_committed_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let state = dir.path().join("app.state");
    append(&log, "a\nb\n");
    let mut f = Follower::open(&log, &state).unwrap();
    assert_eq!(poll(&mut f), ["a", "b"]);
    f.commit().unwrap();
    append(&log, "c\nhalf");
    assert_eq!(poll(&mut f), ["c"]);
    // Not committed: a restart hands "c" out again (at-least-once).
    drop(f);
    let mut f = Follower::open(&log, &state).unwrap();
    assert_eq!(poll(&mut f), ["c"]);
    f.commit().unwrap();
    drop(f);
    append(&log, " line\nd\n");
    let mut f = Follower::open(&log, &state).unwrap();
    assert_eq!(poll(&mut f), ["half line", "d"]);
    f.commit().unwrap();
    let saved = fs::read_to_string(&state).unwrap();
    assert!(saved.starts_with("mamori-follower 1 "), "{saved}");
    assert!(saved.contains(&format!("offset={}", fs::metadata(&log).unwrap().len())), "{saved}");
}

#[test]
fn rotation_reads_the_rest_of_the_old_file_first() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let state = dir.path().join("app.state");
    append(&log, "1\n2\n");
    let mut f = Follower::open(&log, &state).unwrap();
    assert_eq!(poll(&mut f), ["1", "2"]);
    // Lines written just before the rename, a last line without newline, then a new file.
    append(&log, "3\n4\nlast-no-newline");
    fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    append(&log, "5\n");
    assert_eq!(poll(&mut f), ["3", "4", "last-no-newline", "5"]);
    append(&log, "6\n");
    assert_eq!(poll(&mut f), ["6"]);
    f.commit().unwrap();
    drop(f);
    let mut f = Follower::open(&log, &state).unwrap();
    assert!(poll(&mut f).is_empty());
}

#[test]
fn rotation_while_stopped_resumes_in_the_rotated_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let state = dir.path().join("app.state");
    append(&log, "1\n2\n");
    let mut f = Follower::open(&log, &state).unwrap();
    assert_eq!(poll(&mut f), ["1", "2"]);
    f.commit().unwrap();
    drop(f);
    append(&log, "3\n");
    fs::rename(&log, dir.path().join("app.log-20240101")).unwrap();
    append(&log, "4\n");
    let mut f = Follower::open(&log, &state).unwrap();
    assert_eq!(poll(&mut f), ["3", "4"]);
}

#[test]
fn copytruncate_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let state = dir.path().join("app.state");
    append(&log, "first line of the old content\nsecond\n");
    let mut f = Follower::open(&log, &state).unwrap();
    assert_eq!(poll(&mut f).len(), 2);
    // copytruncate: copy away, truncate in place, the writer goes on.
    fs::copy(&log, dir.path().join("app.log.1")).unwrap();
    OpenOptions::new().write(true).truncate(true).open(&log).unwrap();
    append(&log, "new\n");
    assert_eq!(poll(&mut f), ["new"]);
    // Truncated and rewritten past the old offset before we looked: the fingerprint notices.
    f.commit().unwrap();
    OpenOptions::new().write(true).truncate(true).open(&log).unwrap();
    append(&log, "completely different first line, longer than before\n");
    assert_eq!(poll(&mut f), ["completely different first line, longer than before"]);
}

#[test]
fn deleted_and_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let state = dir.path().join("app.state");
    let mut f = Follower::open(&log, &state).unwrap();
    assert!(poll(&mut f).is_empty(), "a missing file is not an error");
    append(&log, "x1\n");
    assert_eq!(poll(&mut f), ["x1"]);
    append(&log, "x2\n");
    fs::remove_file(&log).unwrap();
    assert_eq!(poll(&mut f), ["x2"], "a deleted file that is still open is read to its end");
    assert!(poll(&mut f).is_empty());
    append(&log, "y1\n");
    assert_eq!(poll(&mut f), ["y1"]);
    f.commit().unwrap();
    drop(f);
    // Recreated while stopped (new content, maybe the same inode number): the fingerprint decides.
    fs::remove_file(&log).unwrap();
    append(&log, "z1\n");
    let mut f = Follower::open(&log, &state).unwrap();
    assert_eq!(poll(&mut f), ["z1"]);
}

#[test]
fn long_lines_are_cut_and_corrupt_state_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let state = dir.path().join("app.state");
    append(&log, &format!("{}\nok\n", "x".repeat(25)));
    let options = FollowerOptions { max_line: 10, ..FollowerOptions::default() };
    let mut f = Follower::open_with(&log, &state, options.clone()).unwrap();
    assert_eq!(poll(&mut f), ["xxxxxxxxxx", "xxxxxxxxxx", "xxxxx", "ok"]);
    fs::write(&state, "garbage").unwrap();
    let err = Follower::open_with(&log, &state, options).err().unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
}

#[test]
fn start_at_end_only_without_state() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let state = dir.path().join("app.state");
    append(&log, "old 1\nold 2\n");
    let options = FollowerOptions { start_at_end: true, ..FollowerOptions::default() };
    let mut f = Follower::open_with(&log, &state, options.clone()).unwrap();
    assert!(poll(&mut f).is_empty());
    append(&log, "new\n");
    assert_eq!(poll(&mut f), ["new"]);
    f.commit().unwrap();
    drop(f);
    append(&log, "after restart\n");
    let mut f = Follower::open_with(&log, &state, options).unwrap();
    assert_eq!(poll(&mut f), ["after restart"], "with a state file the saved position wins");
}
