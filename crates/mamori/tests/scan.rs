//! `mamori scan` end to end: the real binary on real files.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{corpus, eicar, is_root, write, zip_bytes, Env};
use sha2::{Digest, Sha256};

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[test]
fn eicar_is_found_with_no_rules_and_json_uses_ecs_names() {
    let env = Env::new();
    let tree = tempfile::tempdir().unwrap();
    write(&tree.path().join("clean.txt"), b"hello");
    let mut e = eicar();
    e.extend_from_slice(b"\r\n");
    write(&tree.path().join("sub/eicar.com"), &e);

    let run = env.run(&["scan", "--json", path_str(tree.path())]);
    assert_eq!(run.code, 1);
    let findings = run.findings();
    assert_eq!(findings.len(), 1);
    let f = &findings[0];
    assert_eq!(f["file"]["path"], path_str(&tree.path().join("sub/eicar.com")));
    assert_eq!(f["file"]["hash"]["sha256"], hex::encode(Sha256::digest(&e)));
    assert_eq!(f["rule"]["name"], "EICAR-Test-File");
    assert_eq!(f["rule"]["ruleset"], "builtin");
    assert_eq!(f["threat"]["indicator"]["type"], "file");
    assert_eq!(f["event"]["kind"], "alert");
    let summary = run.summary();
    assert_eq!(summary["mamori"]["scan"]["files_scanned"], 2);
    assert_eq!(summary["mamori"]["scan"]["infected_files"], 1);

    let human = env.run(&["scan", "--no-cache", path_str(tree.path())]);
    assert_eq!(human.code, 1);
    assert!(human.stdout.contains("FOUND") && human.stdout.contains("eicar.com"));

    std::fs::remove_file(tree.path().join("sub/eicar.com")).unwrap();
    assert_eq!(env.run(&["scan", path_str(tree.path())]).code, 0);
}

#[test]
fn signature_base_rules_compile_detect_and_load_from_cache() {
    let Some(rules) = corpus("yara/signature-base/yara") else { return };
    let env = Env::new();
    let tree = tempfile::tempdir().unwrap();
    // A line from the ShadowBrokers dump that rule FVEY_ShadowBroker_strifeworld looks for.
    write(&tree.path().join("notes/strife.txt"), b"log: Running STRIFEWORLD not protected\n");
    write(&tree.path().join("clean/readme.txt"), b"nothing to see here\n");
    write(&tree.path().join("clean/data.bin"), &[0u8; 4096]);

    let run = env.run(&["scan", "--json", "--rules", path_str(&rules), path_str(tree.path())]);
    assert_eq!(run.code, 1);
    let findings = run.findings();
    assert_eq!(findings.len(), 1, "only the planted file may match");
    assert_eq!(findings[0]["rule"]["name"], "FVEY_ShadowBroker_strifeworld");
    assert!(findings[0]["rule"]["ruleset"].as_str().unwrap().ends_with("apt_fvey_shadowbroker_dec16.yar"));
    let s = &run.summary()["mamori"]["scan"];
    assert!(s["rules_loaded"].as_u64().unwrap() > 4000, "{s}");
    assert!(s["rule_files"].as_u64().unwrap() > 700);
    assert_eq!(s["rules_from_cache"], false);
    // Every rule left out is named with its file in a warning.
    let warnings = run.json().into_iter().filter(|v| v["event"]["action"] == "scan_warning").count();
    assert_eq!(warnings as u64, s["rule_errors"].as_u64().unwrap());

    let again =
        env.run(&["scan", "--json", "--no-cache", "--rules", path_str(&rules), path_str(tree.path())]);
    assert_eq!(again.code, 1);
    let s = &again.summary()["mamori"]["scan"];
    assert_eq!(s["rules_from_cache"], true, "compiled rules are cached whatever --no-cache says");
    assert_eq!(s["files_scanned"], 3, "--no-cache reads every file");
    assert_eq!(again.findings().len(), 1);
    // A changed rule set is compiled again, never served from the cache.
    let more = tempfile::tempdir().unwrap();
    write(&more.path().join("extra.yar"), b"rule extra { condition: false }");
    let changed = env.run(&[
        "scan",
        "--json",
        "--rules",
        path_str(&rules),
        "--rules",
        path_str(more.path()),
        path_str(tree.path()),
    ]);
    assert_eq!(changed.summary()["mamori"]["scan"]["rules_from_cache"], false);
}

#[test]
fn hash_lists_in_signature_base_and_clamav_formats() {
    let env = Env::new();
    let tree = tempfile::tempdir().unwrap();
    let lists = tempfile::tempdir().unwrap();
    let (a, b, c) = (b"first bad file".as_slice(), b"second bad file".as_slice(), b"third bad".as_slice());
    write(&tree.path().join("a.bin"), a);
    write(&tree.path().join("b.bin"), b);
    write(&tree.path().join("c.bin"), c);
    write(&tree.path().join("clean.bin"), b"clean");
    let loki = lists.path().join("hash-iocs.txt");
    write(
        &loki,
        format!("# comment\n{};Sample A sha256\nzz-not-hex;broken\n", hex::encode(Sha256::digest(a)))
            .as_bytes(),
    );
    let hdb = lists.path().join("bad.hdb");
    write(&hdb, format!("{}:{}:Sample.B.MD5\n", md5_of(b), b.len()).as_bytes());
    let hsb = lists.path().join("bad.hsb");
    write(&hsb, format!("{}:*:Sample.C.SHA1:73\n", sha1_of(c)).as_bytes());

    let run = env.run(&[
        "scan",
        "--json",
        "--hashes",
        path_str(&loki),
        "--hashes",
        path_str(&hdb),
        "--hashes",
        path_str(&hsb),
        path_str(tree.path()),
    ]);
    assert_eq!(run.code, 1);
    let mut rules: Vec<String> =
        run.findings().iter().map(|f| f["rule"]["name"].as_str().unwrap().to_string()).collect();
    rules.sort();
    assert_eq!(rules, ["Sample A sha256", "Sample.B.MD5", "Sample.C.SHA1"]);
    assert!(run.stdout.contains("hash-iocs.txt:3"), "the malformed line is reported with file and line");
    assert_eq!(run.summary()["mamori"]["scan"]["hash_indicators"], 3);
}

fn md5_of(data: &[u8]) -> String {
    hex::encode(<md5::Md5 as Digest>::digest(data))
}

fn sha1_of(data: &[u8]) -> String {
    hex::encode(<sha1::Sha1 as Digest>::digest(data))
}

#[test]
fn nested_zip_and_tar_gz_members_are_named() {
    let env = Env::new();
    let tree = tempfile::tempdir().unwrap();
    let e = eicar();
    let inner = zip_bytes(&[("eicar.com", &e), ("readme.txt", b"hi")]);
    let outer = zip_bytes(&[("dir/inner.zip", &inner), ("other.txt", b"x")]);
    write(&tree.path().join("outer.zip"), &outer);

    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(e.len() as u64);
    header.set_mode(0o755);
    header.set_cksum();
    tar.append_data(&mut header, "etc/evil.sh", e.as_slice()).unwrap();
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    write(&tree.path().join("x.tar.gz"), &gz.finish().unwrap());

    let run = env.run(&["scan", "--json", path_str(tree.path())]);
    assert_eq!(run.code, 1);
    let root = path_str(tree.path());
    assert_eq!(
        run.finding_paths(),
        [format!("{root}/outer.zip!dir/inner.zip!eicar.com"), format!("{root}/x.tar.gz!x.tar!etc/evil.sh")]
    );
    assert_eq!(run.summary()["mamori"]["scan"]["infected_files"], 2);

    let flat = env.run(&["scan", "--json", "--no-archives", path_str(tree.path())]);
    assert_eq!(flat.code, 0, "--no-archives scans containers only as files");
    assert_eq!(flat.summary()["mamori"]["scan"]["files_scanned"], 2);
}

#[test]
fn zip_bomb_ends_with_a_clear_warning_and_the_rest_is_scanned() {
    let env = Env::new();
    let tree = tempfile::tempdir().unwrap();
    // 1 GiB of zeros deflates to about 1 MiB: a ratio of ~1000.
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    w.start_file("eicar.com", opts).unwrap();
    std::io::Write::write_all(&mut w, &eicar()).unwrap();
    w.start_file("zeros.img", opts).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        std::io::Write::write_all(&mut w, &chunk).unwrap();
    }
    let bomb = w.finish().unwrap().into_inner();
    assert!(bomb.len() < 8 << 20);
    write(&tree.path().join("bomb.zip"), &bomb);
    write(&tree.path().join("after.txt"), b"scanned too");

    let run = env.run(&["scan", "--json", path_str(tree.path())]);
    assert_eq!(run.code, 2, "part of the archive was not scanned");
    let errors: Vec<_> = run.json().into_iter().filter(|v| v["event"]["action"] == "scan_error").collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["error"]["type"], "limit_exceeded");
    assert!(errors[0]["file"]["path"].as_str().unwrap().contains("bomb.zip"));
    assert_eq!(run.finding_paths(), [format!("{}/bomb.zip!eicar.com", path_str(tree.path()))]);
    assert_eq!(run.summary()["mamori"]["scan"]["files_scanned"], 2);
}

#[test]
fn fifo_socket_device_and_symlink_loops_never_hang() {
    let env = Env::new();
    let tree = tempfile::tempdir().unwrap();
    let t = tree.path();
    write(&t.join("clean.txt"), b"fine");
    let fifo = std::ffi::CString::new(path_str(&t.join("fifo"))).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let _socket = std::os::unix::net::UnixListener::bind(t.join("sock")).unwrap();
    std::os::unix::fs::symlink(t.join("b"), t.join("a")).unwrap();
    std::os::unix::fs::symlink(t.join("a"), t.join("b")).unwrap();
    std::fs::create_dir(t.join("d")).unwrap();
    std::os::unix::fs::symlink("..", t.join("d/up")).unwrap();
    let mut special = 2;
    if is_root() {
        let dev = std::ffi::CString::new(path_str(&t.join("null-device"))).unwrap();
        // SAFETY: a valid path; makes a character device like /dev/null (1:3).
        assert_eq!(unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) }, 0);
        special += 1;
    } else {
        eprintln!("not root: no device node in this run");
    }

    let run = env.run(&["scan", "--json", path_str(t)]);
    assert_eq!(run.code, 0, "nothing unreadable: exit 0");
    let s = &run.summary()["mamori"]["scan"];
    assert_eq!(s["files_scanned"], 1);
    assert_eq!(s["special_files_skipped"], special);

    let follow = env.run(&["scan", "--json", "--follow-symlinks", path_str(t)]);
    assert_eq!(follow.code, 0, "a symlink loop is a warning, not an error");
    let loops: Vec<_> = follow
        .json()
        .into_iter()
        .filter(|v| {
            v["error"]["type"] == "symlink_loop"
                || v["error"]["message"].as_str().is_some_and(|m| m.contains("oo many levels"))
        })
        .collect();
    assert!(!loops.is_empty(), "the loop is reported");

    // A dangling symlink has no content: a warning when following, never an error.
    std::os::unix::fs::symlink(t.join("no-such-target"), t.join("dangling")).unwrap();
    let dangling = env.run(&["scan", "--json", "--follow-symlinks", path_str(t)]);
    assert_eq!(dangling.code, 0);
    assert!(dangling.stdout.contains("dangling"), "the dangling link is mentioned");
}

#[test]
fn unreadable_file_is_exit_2_and_the_rest_is_still_scanned() {
    let env = Env::new();
    let tree = tempfile::tempdir().unwrap();
    let t = tree.path();
    write(&t.join("secret.txt"), b"no access");
    write(&t.join("eicar.com"), &eicar());
    std::fs::set_permissions(t.join("secret.txt"), std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::create_dir(t.join("locked")).unwrap();
    write(&t.join("locked/inside.txt"), b"x");
    std::fs::set_permissions(t.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();

    let mut cmd = env.cmd();
    if is_root() {
        // Root reads everything; run the scan as nobody so permissions mean something.
        std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(t.join("eicar.com"), std::fs::Permissions::from_mode(0o644)).unwrap();
        cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_mamori")]);
    }
    cmd.args(["scan", "--json", "--no-cache", path_str(t)]);
    let run = common::run_with_limit(&mut cmd, std::time::Duration::from_secs(120));
    assert_eq!(run.code, 2);
    let errors: Vec<String> = run
        .json()
        .into_iter()
        .filter(|v| v["event"]["action"] == "scan_error")
        .map(|v| v["file"]["path"].as_str().unwrap().to_string())
        .collect();
    assert!(errors.iter().any(|p| p.ends_with("secret.txt")), "{errors:?}");
    assert!(errors.iter().any(|p| p.ends_with("locked")), "{errors:?}");
    assert_eq!(run.finding_paths(), [format!("{}/eicar.com", path_str(t))], "found despite the errors");
}

#[test]
fn verdict_cache_skips_unchanged_files_and_sees_every_change() {
    let env = Env::new();
    let tree = tempfile::tempdir().unwrap();
    let rules = tempfile::tempdir().unwrap();
    let t = tree.path();
    let rule = rules.path().join("r.yar");
    write(&rule, b"rule marker { strings: $a = \"MARKER-123\" condition: $a }");
    let same_size_clean = vec![b'A'; eicar().len()];
    write(&t.join("will-be-eicar.com"), &same_size_clean);
    write(&t.join("touched.txt"), b"plain text");
    write(&t.join("steady.txt"), b"steady");
    // Verdicts of files changed in the last second are not trusted; let the tree settle.
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let scan = || env.run(&["scan", "--json", "--rules", path_str(&rule), path_str(t)]);
    let counts = |r: &common::Run| {
        let s = &r.summary()["mamori"]["scan"];
        (s["files_scanned"].as_u64().unwrap(), s["files_unchanged"].as_u64().unwrap())
    };

    assert_eq!(counts(&scan()), (3, 0));
    assert_eq!(counts(&scan()), (0, 3), "nothing changed: nothing read");

    // Content change with the same size and the old mtime put back: ctime still changes.
    let before = std::fs::metadata(t.join("will-be-eicar.com")).unwrap().modified().unwrap();
    write(&t.join("will-be-eicar.com"), &eicar());
    std::fs::File::options()
        .write(true)
        .open(t.join("will-be-eicar.com"))
        .unwrap()
        .set_modified(before)
        .unwrap();
    let run = scan();
    assert_eq!(counts(&run), (1, 2));
    assert_eq!(run.code, 1);

    // mtime-only change.
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    std::fs::File::options().write(true).open(t.join("touched.txt")).unwrap().set_modified(old).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let run = scan();
    assert_eq!(counts(&run).0, 2, "the touched file and the not-yet-settled one are read");
    assert_eq!(run.code, 1, "a cached detection is still reported");
    let run = scan();
    assert_eq!(counts(&run), (0, 3));
    assert_eq!(run.finding_paths(), [format!("{}/will-be-eicar.com", path_str(t))]);

    // A rule change invalidates everything, and the new rule is applied.
    write(&t.join("steady.txt"), b"steady MARKER-999");
    std::thread::sleep(std::time::Duration::from_millis(1300));
    write(&rule, b"rule marker { strings: $a = \"MARKER-999\" condition: $a }");
    let run = scan();
    assert_eq!(counts(&run), (3, 0));
    assert_eq!(run.findings().len(), 2);
}

#[test]
fn clamav_test_files_inside_zip_gzip_and_tar_are_all_found() {
    let dir = Path::new("/usr/share/clamav-testfiles");
    if !dir.exists() {
        eprintln!("SKIP: clamav-testfiles is not installed (scripts/setup.sh installs it)");
        return;
    }
    let env = Env::new();
    let rules = tempfile::tempdir().unwrap();
    let rule = rules.path().join("clam.yar");
    write(&rule, b"rule ClamAV_Test_Marker { strings: $a = \"CLAMessageBoxA\" condition: $a }");
    let run = env.run(&["scan", "--json", "--rules", path_str(&rule), path_str(dir)]);
    let found = run.finding_paths();
    let mut containers = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let is_container = data.starts_with(b"PK\x03\x04")
            || data.starts_with(b"\x1f\x8b")
            || data.get(257..262) == Some(b"ustar".as_slice());
        if is_container {
            containers.push(path);
        }
    }
    assert!(containers.len() >= 5, "expected the zip/gzip/tar samples, found {containers:?}");
    for c in &containers {
        let prefix = format!("{}!", c.display());
        assert!(found.iter().any(|f| f.starts_with(&prefix)), "nothing found inside {}", c.display());
    }
}

#[test]
fn bad_arguments_and_broken_rules_get_clear_errors() {
    let env = Env::new();
    let tree = tempfile::tempdir().unwrap();
    write(&tree.path().join("x.txt"), b"GOODRULE-HIT");

    let missing = env.run(&["scan", "/nonexistent/mamori-test"]);
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("/nonexistent/mamori-test"));

    let bad_size = env.run(&["scan", "--max-filesize", "12X", path_str(tree.path())]);
    assert_eq!(bad_size.code, 2);
    assert!(bad_size.stderr.contains("unknown size unit"));

    let no_rules = env.run(&["scan", "--rules", "/nonexistent/rules.yar", path_str(tree.path())]);
    assert_eq!(no_rules.code, 2);
    assert!(no_rules.stderr.contains("/nonexistent/rules.yar"));

    let rules = tempfile::tempdir().unwrap();
    write(
        &rules.path().join("broken.yar"),
        b"rule ok { condition: true and false }\nrule broken {\n condition: $nope\n}\n",
    );
    write(&rules.path().join("good.yar"), b"rule good { strings: $a = \"GOODRULE-HIT\" condition: $a }");
    let run = env.run(&["scan", "--rules", path_str(rules.path()), path_str(tree.path())]);
    assert_eq!(run.code, 1, "the good rule still protects");
    assert!(run.stderr.contains("broken.yar:3"), "file and line of the broken rule: {}", run.stderr);

    // Rule directories made of symlinks into a store of available rules are followed.
    let linked = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(rules.path().join("good.yar"), linked.path().join("enabled.yar")).unwrap();
    let via_link = env.run(&["scan", "--json", "--rules", path_str(linked.path()), path_str(tree.path())]);
    assert_eq!(via_link.code, 1);
    assert_eq!(via_link.summary()["mamori"]["scan"]["rules_loaded"], 1);

    let too_big = env.run(&["scan", "--json", "--max-filesize", "4", path_str(tree.path())]);
    assert_eq!(too_big.code, 0, "a file over the configured limit is a warning");
    assert!(too_big.stdout.contains("too_large"));
}

#[test]
fn excludes_prune_paths_and_jobs_do_not_change_results() {
    let env = Env::new();
    let tree = tempfile::tempdir().unwrap();
    let t = tree.path();
    for i in 0..40 {
        write(&t.join(format!("d{}/f{i}.txt", i % 4)), format!("file {i}").as_bytes());
    }
    write(&t.join("d1/found.com"), &eicar());
    write(&t.join("skipme/hidden.com"), &eicar());
    write(&t.join("d2/also.iso"), &eicar());

    let all = env.run(&["scan", "--json", "--no-cache", path_str(t)]);
    assert_eq!(all.findings().len(), 3);
    for jobs in ["1", "3"] {
        let run = env.run(&[
            "scan",
            "--json",
            "--no-cache",
            "--jobs",
            jobs,
            "--exclude",
            "*/skipme",
            "--exclude",
            "*.iso",
            path_str(t),
        ]);
        assert_eq!(run.code, 1);
        assert_eq!(run.finding_paths(), [format!("{}/d1/found.com", path_str(t))]);
        assert_eq!(run.summary()["mamori"]["scan"]["files_scanned"], 41);
    }
    let bad = env.run(&["scan", "--exclude", "a[", path_str(t)]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("--exclude"), "{}", bad.stderr);
}

#[test]
fn one_file_system_stays_on_the_root_file_system() {
    if !is_root() {
        eprintln!("SKIP: mounting a tmpfs needs root");
        return;
    }
    let env = Env::new();
    let tree = tempfile::tempdir().unwrap();
    let t = tree.path();
    write(&t.join("here.com"), &eicar());
    std::fs::create_dir(t.join("mnt")).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "mamori-test", path_str(&t.join("mnt"))])
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIP: cannot mount a tmpfs here (no CAP_SYS_ADMIN in this sandbox)");
        return;
    }
    write(&t.join("mnt/there.com"), &eicar());
    let crossing = env.run(&["scan", "--json", "--no-cache", path_str(t)]);
    let staying = env.run(&["scan", "--json", "--no-cache", "--one-file-system", path_str(t)]);
    let _ = std::process::Command::new("umount").arg(t.join("mnt")).status();
    assert_eq!(crossing.findings().len(), 2);
    assert_eq!(staying.finding_paths(), [format!("{}/here.com", path_str(t))]);
}
