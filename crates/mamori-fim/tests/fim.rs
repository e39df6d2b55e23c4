//! Real files, real kernel: baseline, check, problems, throttle, fanotify and inotify.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mamori_fim::{
    thread_cpu_time, Baseline, Budget, ChangeKind, CheckReport, Config, EventKind, Field, Kind, ProblemKind,
    WatchEvent, WatchMode, Watcher,
};

fn is_root() -> bool {
    // SAFETY: plain getter.
    unsafe { libc::geteuid() == 0 }
}

struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
    _dbdir: tempfile::TempDir,
    db: PathBuf,
}

fn tree() -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("watched");
    fs::create_dir(&root).unwrap();
    let dbdir = tempfile::tempdir().unwrap();
    let db = dbdir.path().join("fim.db");
    Tree { _dir: dir, root, _dbdir: dbdir, db }
}

fn write(p: &Path, s: &str) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, s).unwrap();
}

fn config(root: &Path) -> Config {
    Config::new(vec![root.to_path_buf()])
}

/// (relative path, kind) of every change.
fn summary(root: &Path, r: &CheckReport) -> BTreeSet<(String, ChangeKind)> {
    r.changes.iter().map(|c| (c.path.strip_prefix(root).unwrap().display().to_string(), c.kind)).collect()
}

fn set(items: &[(&str, ChangeKind)]) -> BTreeSet<(String, ChangeKind)> {
    items.iter().map(|(p, k)| (p.to_string(), *k)).collect()
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

/// Sets mtime (keeping atime) with utimensat.
fn set_mtime(p: &Path, mtime_ns: i64) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let ts = [
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        libc::timespec { tv_sec: mtime_ns / 1_000_000_000, tv_nsec: mtime_ns % 1_000_000_000 },
    ];
    // SAFETY: valid path and two timespecs.
    assert_eq!(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) }, 0);
}

#[test]
fn check_reports_exactly_the_changes() {
    let t = tree();
    let r = &t.root;
    for name in [
        "a.txt",
        "keep.txt",
        "chmod.txt",
        "chown.txt",
        "del.txt",
        "ren.txt",
        "same.txt",
        "sub/c.txt",
        ".hidden",
    ] {
        write(&r.join(name), &format!("content of {name}\n"));
    }
    std::os::unix::fs::symlink("keep.txt", r.join("link")).unwrap();
    let cfg = config(r);
    let mut b = Baseline::open(&t.db).unwrap();
    let rep = b.build(&cfg, &Budget::unthrottled()).unwrap();
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    assert_eq!(rep.stats.files, 9, "dotfiles too");
    assert_eq!(rep.stats.dirs, 2);
    assert_eq!(rep.stats.symlinks, 1);
    assert_eq!(b.get(&r.join("link")).unwrap().unwrap().target, Some(PathBuf::from("keep.txt")));

    // Nothing changed: nothing reported.
    let rep = b.check(&cfg, &Budget::unthrottled(), false).unwrap();
    assert!(rep.changes.is_empty(), "{:?}", rep.changes);

    fs::OpenOptions::new().append(true).open(r.join("a.txt")).unwrap();
    fs::write(r.join("a.txt"), "content of a.txt, longer\n").unwrap();
    fs::set_permissions(r.join("chmod.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    if is_root() {
        chown(&r.join("chown.txt"), 65534, 65534);
    }
    fs::remove_file(r.join("del.txt")).unwrap();
    fs::rename(r.join("ren.txt"), r.join("ren2.txt")).unwrap();
    write(&r.join("sub/new.txt"), "new\n");
    fs::remove_file(r.join("link")).unwrap();
    std::os::unix::fs::symlink("a.txt", r.join("link")).unwrap();
    // Same size, mtime put back: only ctime and the content tell.
    let before = fs::metadata(r.join("same.txt")).unwrap();
    fs::write(r.join("same.txt"), "CONTENT OF same.txt\n").unwrap();
    set_mtime(&r.join("same.txt"), before.mtime() * 1_000_000_000 + before.mtime_nsec());

    let mut expected = vec![
        ("a.txt", ChangeKind::Modified),
        ("chmod.txt", ChangeKind::AttributesChanged),
        ("del.txt", ChangeKind::Deleted),
        ("ren.txt", ChangeKind::Deleted),
        ("ren2.txt", ChangeKind::Created),
        ("sub/new.txt", ChangeKind::Created),
        ("link", ChangeKind::Modified),
        ("same.txt", ChangeKind::Modified),
    ];
    if is_root() {
        expected.push(("chown.txt", ChangeKind::AttributesChanged));
    }
    for budget in [Budget::unthrottled(), Budget::share(1.0)] {
        let rep = b.check(&cfg, &budget, false).unwrap();
        assert_eq!(summary(r, &rep), set(&expected));
        assert!(rep.problems.is_empty(), "{:?}", rep.problems);
        let get = |p: &str| rep.changes.iter().find(|c| c.path == r.join(p)).unwrap();
        let a = get("a.txt");
        assert!(a.has(Field::Hash) && a.has(Field::Size) && a.has(Field::Mtime), "{:?}", a.fields);
        let m = get("chmod.txt");
        assert!(m.has(Field::Mode) && !m.has(Field::Hash) && !m.has(Field::Uid), "{:?}", m.fields);
        let mode = m.fields.iter().find(|f| f.field == Field::Mode).unwrap();
        assert_eq!((mode.before.as_str(), mode.after.as_str()), ("0644", "0600"));
        if is_root() {
            let o = get("chown.txt");
            assert!(o.has(Field::Uid) && o.has(Field::Gid) && !o.has(Field::Mode), "{:?}", o.fields);
        }
        let s = get("same.txt");
        assert!(s.has(Field::Hash) && s.has(Field::Ctime) && !s.has(Field::Mtime), "{:?}", s.fields);
        assert!(get("link").has(Field::Target));
    }
    // Update, then the tree matches the baseline.
    let rep = b.check(&cfg, &Budget::unthrottled(), true).unwrap();
    assert_eq!(rep.changes.len(), expected.len());
    let rep = b.check(&cfg, &Budget::unthrottled(), false).unwrap();
    assert!(rep.changes.is_empty(), "{:?}", rep.changes);
}

#[test]
fn baseline_survives_reopen_and_is_private() {
    let t = tree();
    for i in 0..20 {
        write(&t.root.join(format!("d{}/f{i}", i % 3)), "x");
    }
    let cfg = config(&t.root);
    let n = {
        let mut b = Baseline::open(&t.db).unwrap();
        b.build(&cfg, &Budget::unthrottled()).unwrap();
        b.len().unwrap()
    };
    assert_eq!(n, 24);
    assert_eq!(fs::metadata(&t.db).unwrap().mode() & 0o777, 0o600);
    let mut b = Baseline::open(&t.db).unwrap();
    assert_eq!(b.len().unwrap(), 24);
    let files = b.files().unwrap();
    assert_eq!(files.len(), 20, "regular files only, not the root and the three directories");
    assert!(files.windows(2).all(|w| w[0] < w[1]), "in path order");
    assert!(files.contains(&t.root.join("d1/f4")));
    assert!(b.check(&cfg, &Budget::default(), false).unwrap().changes.is_empty());
    fs::write(t.root.join("d1/f1"), "changed").unwrap();
    let rep = b.check(&cfg, &Budget::default(), false).unwrap();
    assert_eq!(summary(&t.root, &rep), set(&[("d1/f1", ChangeKind::Modified)]));
}

#[test]
fn excludes_are_honoured() {
    let t = tree();
    let r = &t.root;
    write(&r.join("etc/passwd"), "root");
    write(&r.join("etc/x.swp"), "swap");
    write(&r.join("cache/big"), "cache");
    let mut cfg = config(r);
    cfg.excludes = vec!["**/*.swp".into(), format!("{}/cache", r.display())];
    let mut b = Baseline::open(&t.db).unwrap();
    b.build(&cfg, &Budget::unthrottled()).unwrap();
    assert!(b.get(&r.join("etc/passwd")).unwrap().is_some());
    assert!(b.get(&r.join("etc/x.swp")).unwrap().is_none());
    assert!(b.get(&r.join("cache")).unwrap().is_none());
    assert!(b.get(&r.join("cache/big")).unwrap().is_none());
    write(&r.join("etc/x.swp"), "changed");
    write(&r.join("etc/y.swp"), "new");
    write(&r.join("cache/big"), "changed");
    write(&r.join("cache/more"), "new");
    write(&r.join("etc/shadow"), "new");
    let rep = b.check(&cfg, &Budget::unthrottled(), false).unwrap();
    assert_eq!(summary(r, &rep), set(&[("etc/shadow", ChangeKind::Created)]));
}

#[test]
fn fifo_and_socket_are_never_opened() {
    let t = tree();
    let r = t.root.clone();
    write(&r.join("plain"), "x");
    let fifo = std::ffi::CString::new(r.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let _sock = std::os::unix::net::UnixListener::bind(r.join("sock")).unwrap();
    let cfg = config(&r);
    let db = t.db.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut b = Baseline::open(&db).unwrap();
        let built = b.build(&cfg, &Budget::unthrottled()).unwrap();
        let mut paranoid = cfg.clone();
        paranoid.paranoid = true;
        let checked = b.check(&paranoid, &Budget::share(1.0), false).unwrap();
        tx.send((built, checked)).unwrap();
    });
    let (built, checked) = rx.recv_timeout(Duration::from_secs(10)).expect("the walk blocked");
    for rep_problems in [&built.problems, &checked.problems] {
        let kinds: Vec<_> = rep_problems.iter().map(|p| (p.path.clone(), p.kind.clone())).collect();
        assert!(kinds.contains(&(r.join("fifo"), ProblemKind::NotRegular(Kind::Fifo))), "{kinds:?}");
        assert!(kinds.contains(&(r.join("sock"), ProblemKind::NotRegular(Kind::Socket))), "{kinds:?}");
        assert!(!rep_problems.iter().any(|p| p.is_error()));
    }
    assert_eq!(built.stats.other, 2);
    assert!(checked.changes.is_empty(), "{:?}", checked.changes);
}

/// Root reads everything, so the check runs on a thread whose file-system identity is
/// `nobody` (setfsuid/setfsgid are per thread and drop the file capabilities of that thread).
#[test]
fn unreadable_paths_are_problems_not_deletions() {
    if !is_root() {
        eprintln!("skipped: needs root to build a baseline nobody cannot read");
        return;
    }
    let t = tree();
    let r = t.root.clone();
    fs::set_permissions(t.root.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
    write(&r.join("open"), "anyone");
    write(&r.join("secret"), "root only");
    fs::set_permissions(r.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    write(&r.join("locked/inner"), "hidden");
    fs::set_permissions(r.join("locked"), fs::Permissions::from_mode(0o700)).unwrap();
    let mut cfg = config(&r);
    let mut b = Baseline::open(&t.db).unwrap();
    b.build(&cfg, &Budget::unthrottled()).unwrap();
    assert!(b.len().unwrap() >= 5);
    cfg.paranoid = true;
    let rep = std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: per-thread identity change of this short-lived thread only.
            unsafe {
                libc::setfsgid(65534);
                libc::setfsuid(65534);
            }
            b.check(&cfg, &Budget::share(1.0), false).unwrap()
        })
        .join()
        .unwrap()
    });
    assert!(rep.changes.is_empty(), "{:?}", rep.changes);
    let unreadable: BTreeSet<PathBuf> = rep
        .problems
        .iter()
        .filter(|p| matches!(p.kind, ProblemKind::Unreadable(_)))
        .map(|p| p.path.clone())
        .collect();
    assert_eq!(unreadable, [r.join("locked"), r.join("secret")].into_iter().collect());
    assert!(rep.problems.iter().all(|p| p.is_error()));
}

#[test]
fn throttle_keeps_cpu_share_near_budget() {
    let t = tree();
    let data = "x".repeat(4096);
    for i in 0..3000 {
        write(&t.root.join(format!("d{}/f{i}", i % 30)), &data);
    }
    let mut cfg = config(&t.root);
    let mut b = Baseline::open(&t.db).unwrap();
    b.build(&cfg, &Budget::unthrottled()).unwrap();
    cfg.paranoid = true; // read every file again
    let cpu0 = thread_cpu_time();
    let wall0 = Instant::now();
    let rep = b.check(&cfg, &Budget::share(0.2), false).unwrap();
    let cpu = thread_cpu_time() - cpu0;
    let wall = wall0.elapsed();
    assert!(rep.changes.is_empty());
    assert_eq!(rep.stats.hashed, 3000);
    let ratio = cpu.as_secs_f64() / wall.as_secs_f64();
    eprintln!("throttled check: cpu {cpu:?} wall {wall:?} ratio {ratio:.3}");
    assert!(ratio < 0.35, "ratio {ratio}");
}

/// Collects events until `done` holds for the collected set or `timeout` passes.
fn collect(w: &Watcher, timeout: Duration, done: impl Fn(&[WatchEvent]) -> bool) -> Vec<WatchEvent> {
    let end = Instant::now() + timeout;
    let mut got = Vec::new();
    while Instant::now() < end && !done(&got) {
        if let Some(e) = w.recv_timeout(Duration::from_millis(50)) {
            got.push(e);
        }
    }
    got
}

fn has(evs: &[WatchEvent], path: &Path, kind: EventKind) -> bool {
    evs.iter().any(|e| e.path == path && e.kind == kind)
}

/// Applies every event to the baseline (updating it) and returns (path, change kind) of what
/// changed.
fn apply_all(
    b: &mut Baseline,
    cfg: &Config,
    root: &Path,
    evs: &[WatchEvent],
) -> BTreeSet<(String, ChangeKind)> {
    let mut out = BTreeSet::new();
    for e in evs {
        let rep = b.apply_event(cfg, e, true).unwrap();
        out.extend(summary(root, &rep));
    }
    out
}

#[test]
fn fanotify_events_carry_pid_and_exe() {
    if !is_root() {
        eprintln!("skipped: fanotify needs root");
        return;
    }
    let t = tree();
    let r = t.root.clone();
    write(&r.join("f"), "x\n");
    write(&r.join("g"), "g\n");
    write(&r.join("h"), "h\n");
    write(&r.join("o"), "o\n");
    let cfg = config(&r);
    let mut b = Baseline::open(&t.db).unwrap();
    b.build(&cfg, &Budget::unthrottled()).unwrap();
    let w = Watcher::start(&cfg).unwrap();
    assert_eq!(w.mode(), WatchMode::Fanotify, "root gets fanotify");
    let sh = fs::canonicalize("/bin/sh").unwrap();
    let perl = fs::canonicalize("/usr/bin/perl").unwrap();

    // Each child stays alive 2 s after its change so its /proc/PID/exe can still be read when
    // the event is; the next one starts as soon as the change is visible.
    let mut children = Vec::new();
    let mut run = |cmd: &mut Command, done: &dyn Fn() -> bool| -> u32 {
        let child = cmd.current_dir(&r).spawn().unwrap();
        let pid = child.id();
        children.push(child);
        let end = Instant::now() + Duration::from_secs(5);
        while !done() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(done(), "child {pid} did not make its change");
        pid
    };
    let size = |p: &str| fs::metadata(r.join(p)).map(|m| m.len()).unwrap_or(0);
    let pid_append = run(Command::new("/bin/sh").args(["-c", "echo x >> f; sleep 2"]), &|| size("f") == 4);
    let pid_create =
        run(Command::new("/bin/sh").args(["-c", "echo new > new; sleep 2"]), &|| size("new") == 4);
    let pid_chmod =
        run(Command::new("/usr/bin/perl").args(["-e", "chmod 0600, 'g' or die; sleep 2"]), &|| {
            fs::metadata(r.join("g")).unwrap().mode() & 0o777 == 0o600
        });
    let pid_del = run(Command::new("/usr/bin/perl").args(["-e", "unlink 'h' or die; sleep 2"]), &|| {
        !r.join("h").exists()
    });
    let pid_mv =
        run(Command::new("/usr/bin/perl").args(["-e", "rename 'new', 'moved' or die; sleep 2"]), &|| {
            r.join("moved").exists()
        });
    let pid_chown =
        run(Command::new("/usr/bin/perl").args(["-e", "chown 65534, 65534, 'o' or die; sleep 2"]), &|| {
            fs::metadata(r.join("o")).unwrap().uid() == 65534
        });

    let want = [
        (r.join("f"), EventKind::Modified, pid_append, &sh),
        (r.join("f"), EventKind::ClosedWrite, pid_append, &sh),
        (r.join("new"), EventKind::Created, pid_create, &sh),
        (r.join("g"), EventKind::Attrib, pid_chmod, &perl),
        (r.join("h"), EventKind::Deleted, pid_del, &perl),
        (r.join("new"), EventKind::MovedFrom, pid_mv, &perl),
        (r.join("moved"), EventKind::MovedTo, pid_mv, &perl),
        (r.join("o"), EventKind::Attrib, pid_chown, &perl),
    ];
    let matches = |evs: &[WatchEvent], (p, k, pid, exe): &(PathBuf, EventKind, u32, &PathBuf)| {
        evs.iter()
            .any(|e| e.path == *p && e.kind == *k && e.pid == Some(*pid) && e.exe.as_ref() == Some(*exe))
    };
    let evs = collect(&w, Duration::from_secs(5), |evs| want.iter().all(|x| matches(evs, x)));
    for x in &want {
        assert!(matches(&evs, x), "missing {x:?} in {evs:#?}");
    }
    assert!(evs.iter().all(|e| e.path.starts_with(&r)));
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }

    // Events are applied after all the operations: `new` no longer exists and was never in
    // the baseline, so it gives nothing; `moved` is what is there now.
    let changes = apply_all(&mut b, &cfg, &r, &evs);
    assert_eq!(
        changes,
        set(&[
            ("f", ChangeKind::Modified),
            ("g", ChangeKind::AttributesChanged),
            ("o", ChangeKind::AttributesChanged),
            ("h", ChangeKind::Deleted),
            ("moved", ChangeKind::Created),
        ])
    );
    // The real-time path left the baseline matching the tree.
    assert!(b.check(&cfg, &Budget::unthrottled(), false).unwrap().changes.is_empty());
}

#[test]
fn inotify_fallback_follows_new_directories() {
    let t = tree();
    let r = t.root.clone();
    write(&r.join("f"), "x\n");
    write(&r.join("g"), "g\n");
    write(&r.join("old/h"), "h\n");
    let cfg = config(&r);
    let mut b = Baseline::open(&t.db).unwrap();
    b.build(&cfg, &Budget::unthrottled()).unwrap();
    let w = Watcher::start_mode(&cfg, WatchMode::Inotify).unwrap();
    assert_eq!(w.mode(), WatchMode::Inotify);

    fs::OpenOptions::new()
        .append(true)
        .open(r.join("f"))
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(b"more\n")
        })
        .unwrap();
    fs::set_permissions(r.join("g"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir(r.join("newdir")).unwrap();
    write(&r.join("newdir/inside"), "fresh\n");
    fs::remove_file(r.join("old/h")).unwrap();
    fs::rename(r.join("old"), r.join("renamed")).unwrap();

    let want = [
        (r.join("f"), EventKind::ClosedWrite),
        (r.join("g"), EventKind::Attrib),
        (r.join("newdir"), EventKind::Created),
        (r.join("newdir/inside"), EventKind::Created),
        (r.join("old/h"), EventKind::Deleted),
        (r.join("old"), EventKind::MovedFrom),
        (r.join("renamed"), EventKind::MovedTo),
    ];
    let evs = collect(&w, Duration::from_secs(5), |evs| want.iter().all(|(p, k)| has(evs, p, *k)));
    for (p, k) in &want {
        assert!(has(&evs, p, *k), "missing {p:?} {k:?} in {evs:#?}");
    }
    assert!(evs.iter().all(|e| e.pid.is_none() && e.exe.is_none()));

    // The batch form: each path looked at once.
    let rep = b.apply_events(&cfg, &evs, true).unwrap();
    assert_eq!(rep.changes.len(), 7, "{:?}", rep.changes);
    let changes = summary(&r, &rep);
    assert_eq!(
        changes,
        set(&[
            ("f", ChangeKind::Modified),
            ("g", ChangeKind::AttributesChanged),
            ("newdir", ChangeKind::Created),
            ("newdir/inside", ChangeKind::Created),
            ("old/h", ChangeKind::Deleted),
            ("old", ChangeKind::Deleted),
            ("renamed", ChangeKind::Created),
        ])
    );
    assert!(b.check(&cfg, &Budget::unthrottled(), false).unwrap().changes.is_empty());

    // A file in the new directory is watched too.
    write(&r.join("newdir/later"), "l\n");
    let evs =
        collect(&w, Duration::from_secs(3), |evs| has(evs, &r.join("newdir/later"), EventKind::Created));
    assert!(has(&evs, &r.join("newdir/later"), EventKind::Created), "{evs:#?}");
}

#[test]
fn missing_roots_and_symlink_loops_are_problems() {
    let t = tree();
    let r = t.root.clone();
    write(&r.join("f"), "x");
    std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
    // A watched path through a symlink loop, a missing one, and a symlink root (not followed).
    let cfg = Config::new(vec![r.clone(), r.join("loop/inside"), r.join("missing"), r.join("loop")]);
    let mut b = Baseline::open(&t.db).unwrap();
    let rep = b.build(&cfg, &Budget::unthrottled()).unwrap();
    let kinds: Vec<_> = rep.problems.iter().map(|p| (p.path.clone(), p.kind.clone())).collect();
    assert_eq!(
        kinds,
        vec![(r.join("loop/inside"), ProblemKind::Loop), (r.join("missing"), ProblemKind::Vanished)]
    );
    assert_eq!(b.get(&r.join("loop")).unwrap().unwrap().kind, Kind::Symlink);
    // A recorded root that disappears is reported deleted with everything under it.
    let rep = b.check(&Config::new(vec![r.clone()]), &Budget::unthrottled(), false).unwrap();
    assert!(rep.changes.is_empty(), "{:?}", rep.changes);
    fs::remove_file(r.join("f")).unwrap();
    fs::remove_file(r.join("loop")).unwrap();
    fs::remove_dir(&r).unwrap();
    let rep = b.check(&Config::new(vec![r.clone()]), &Budget::unthrottled(), false).unwrap();
    assert_eq!(
        summary(t._dir.path(), &rep),
        set(&[
            ("watched", ChangeKind::Deleted),
            ("watched/f", ChangeKind::Deleted),
            ("watched/loop", ChangeKind::Deleted)
        ])
    );
    assert_eq!(rep.problems.len(), 1);
    assert_eq!(rep.problems[0].kind, ProblemKind::Vanished);
}

#[test]
fn event_for_a_vanished_or_excluded_path() {
    let t = tree();
    let r = t.root.clone();
    write(&r.join("gone"), "x");
    write(&r.join("skip.tmp"), "x");
    let mut cfg = config(&r);
    cfg.excludes = vec!["**/*.tmp".into()];
    let mut b = Baseline::open(&t.db).unwrap();
    b.build(&cfg, &Budget::unthrottled()).unwrap();
    fs::remove_file(r.join("gone")).unwrap();
    let ev = |p: &Path| WatchEvent {
        path: p.to_path_buf(),
        kind: EventKind::Modified,
        is_dir: false,
        pid: None,
        exe: None,
        time: std::time::SystemTime::now(),
    };
    // Removed before its event was applied: deleted, without a problem.
    let rep = b.apply_event(&cfg, &ev(&r.join("gone")), false).unwrap();
    assert_eq!(summary(&r, &rep), set(&[("gone", ChangeKind::Deleted)]));
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    // Excluded or outside the watched trees: nothing.
    fs::write(r.join("skip.tmp"), "changed").unwrap();
    assert!(b.apply_event(&cfg, &ev(&r.join("skip.tmp")), false).unwrap().changes.is_empty());
    assert!(b.apply_event(&cfg, &ev(Path::new("/etc/passwd")), false).unwrap().changes.is_empty());
    // Update: applied once, the second time gives nothing.
    assert_eq!(b.apply_event(&cfg, &ev(&r.join("gone")), true).unwrap().changes.len(), 1);
    assert!(b.apply_event(&cfg, &ev(&r.join("gone")), true).unwrap().changes.is_empty());
}
