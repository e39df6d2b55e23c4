//! The backup vault end to end (issue 6), with real processes on loopback: a manager for the
//! CA, an enrolled client, `mamori vault serve`, `mamori backup`. Restores are compared byte
//! for byte with modes, times and symlinks; attacks are made with the client's own
//! certificate and must be refused and logged; processes are killed with SIGKILL mid-backup.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::fleet::*;
use common::vault::*;
use mamori_proto::vault as wire;
use serde_json::Value;

/// Deterministic bytes that do not compress (BLAKE3's output stream).
fn noise(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new().update(seed.as_bytes()).finalize_xof().fill(&mut out);
    out
}

fn text(seed: usize, len: usize) -> Vec<u8> {
    let mut s = String::new();
    let mut i = seed;
    while s.len() < len {
        s.push_str(&format!(
            "patient record {i}: ward {} bed {} blood pressure {}/{}\n",
            i % 7,
            i % 31,
            100 + i % 40,
            60 + i % 30
        ));
        i += 1;
    }
    s.into_bytes()
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, data).expect("write");
}

/// Removes a file without touching its directory's mtime, which the snapshot recorded before
/// the removal: otherwise the comparison with the restored tree fails whenever a second
/// boundary falls between the backup and the removal.
fn remove_keeping_parent_mtime(path: &Path) {
    let parent = path.parent().expect("parent");
    let mtime = std::fs::metadata(parent).expect("parent metadata").modified().expect("mtime");
    std::fs::remove_file(path).expect("rm");
    std::fs::File::open(parent).expect("open parent").set_modified(mtime).expect("set mtime");
}

fn names(list: &Value) -> Vec<String> {
    let mut v: Vec<String> =
        list.as_array().expect("array").iter().map(|x| x.as_str().expect("str").to_string()).collect();
    v.sort();
    v
}

#[test]
fn backup_restores_bit_exact_with_versions_diff_exclusions_and_metadata_skip() {
    let mut v = VaultSite::new(&[]);
    v.start(&[]);
    let root = v.site.dir.path().join("share");
    let src = root.join("ward3");
    write(&src.join("notes/a.txt"), &text(1, 5000));
    write(&src.join("notes/b.txt"), &text(2, 700));
    write(&src.join("empty"), b"");
    write(&src.join("images/scan.bin"), &noise("scan", 3 * 1024 * 1024 + 17));
    write(&src.join("big/log.txt"), &text(3, 2 * 1024 * 1024));
    write(&src.join("cache/tmp.tmp"), b"scratch");
    std::fs::set_permissions(src.join("notes/a.txt"), std::fs::Permissions::from_mode(0o640)).expect("chmod");
    std::fs::set_permissions(src.join("images"), std::fs::Permissions::from_mode(0o750)).expect("chmod");
    if common::is_root() {
        // Another owner, restored as such (only root can give files away).
        std::os::unix::fs::lchown(src.join("notes/b.txt"), Some(1234), Some(5678)).expect("chown");
    }
    std::os::unix::fs::symlink("notes/a.txt", src.join("link-to-a")).expect("symlink");
    std::os::unix::fs::symlink("/nonexistent/target", src.join("dangling")).expect("symlink");
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    write(&src.join(odd), b"latin-1 name");
    let fifo = src.join("pipe");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).expect("cstring");
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);

    let (code, first) = v.run(&[&src], &["--exclude", "*.tmp"]);
    assert_eq!(code, 0, "{first}");
    assert_eq!(first["suspicious"], false);
    assert_eq!(first["excluded"], 1);
    assert!(first["problems"].as_array().expect("problems").is_empty(), "{first}");
    assert_eq!(first["files_unchanged"], 0);

    // Restore: everything but the excluded file and the FIFO (recorded, never opened or
    // recreated) comes back exactly.
    let target = v.site.dir.path().join("restore1");
    let out =
        v.backup(&["backup", "restore", "--snapshot", "latest", "--target", &target.display().to_string()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    remove_keeping_parent_mtime(&fifo);
    remove_keeping_parent_mtime(&src.join("cache/tmp.tmp"));
    let restored = target.join(src.strip_prefix("/").expect("absolute"));
    assert_same_tree(&src, &restored);
    write(&src.join("cache/tmp.tmp"), b"scratch");

    // A second run reads only what changed.
    write(&src.join("notes/b.txt"), &text(9, 900));
    write(&src.join("notes/c.txt"), b"new file");
    std::fs::remove_file(src.join("empty")).expect("rm");
    let (code, second) = v.run(&[&src], &["--exclude", "*.tmp"]);
    assert_eq!(code, 0, "{second}");
    let files = second["files"].as_u64().expect("files");
    assert_eq!(second["files_unchanged"].as_u64(), Some(files - 2), "{second}");

    let snapshots = v.snapshots();
    assert_eq!(snapshots.len(), 2);
    let (a, b) = (snapshots[0]["name"].as_str().expect("name"), snapshots[1]["name"].as_str().expect("name"));
    let out = v.backup(&["backup", "diff", &a[..10], b, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let diff: Value = serde_json::from_str(out.stdout.trim()).expect("diff JSON");
    let p = |rel: &str| format!("{}/{rel}", src.display());
    assert_eq!(names(&diff["added"]), vec![p("notes/c.txt")]);
    assert_eq!(names(&diff["removed"]), vec![p("empty"), p("pipe")]);
    assert_eq!(names(&diff["modified"]), vec![p("notes/b.txt")]);

    let out = v.backup(&["backup", "versions", &p("notes/b.txt"), "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let versions: Vec<Value> = serde_json::from_str(out.stdout.trim()).expect("versions JSON");
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert_eq!(versions[0]["size"].as_u64(), Some(text(2, 700).len() as u64));
    let out = v.backup(&["backup", "versions", &p("notes/a.txt"), "--json"]);
    let versions: Vec<Value> = serde_json::from_str(out.stdout.trim()).expect("versions JSON");
    assert_eq!(versions.len(), 1, "unchanged file, one version");

    // One path of the first snapshot: the old b.txt, nothing else.
    let target = v.site.dir.path().join("restore2");
    let out = v.backup(&[
        "backup",
        "restore",
        "--snapshot",
        a,
        "--path",
        &p("notes/b.txt"),
        "--target",
        &target.display().to_string(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let restored = target.join(src.strip_prefix("/").expect("absolute")).join("notes");
    assert_eq!(std::fs::read(restored.join("b.txt")).expect("b.txt"), text(2, 700));
    assert_eq!(std::fs::read_dir(&restored).expect("dir").count(), 1);

    // Nothing is overwritten, and a missing source is an error, not an empty snapshot.
    let out = v.backup(&["backup", "restore", "--target", &target.display().to_string()]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("not empty"), "{}", out.stderr);
    let (code, _) = v.run(&[&root.join("missing")], &[]);
    assert_eq!(code, 2);
    assert_eq!(v.snapshots().len(), 2);
    let out = v.admin(&["vault", "check", "--read-data"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
}

use std::os::unix::ffi::OsStrExt;

#[test]
fn the_vault_only_adds_and_logs_every_refused_attempt() {
    let mut v = VaultSite::new(&[]);
    v.start(&["--snapshots-per-hour", "2", "--quota", "8M"]);
    let src = v.site.dir.path().join("src");
    write(&src.join("a.txt"), &text(1, 10_000));
    let (code, first) = v.run(&[&src], &[]);
    assert_eq!(code, 0, "{first}");
    let snapshot = v.snapshots()[0]["name"].as_str().expect("name").to_string();

    // Delete and overwrite: no such route, refused, logged.
    let (status, _) = v.raw(reqwest::Method::DELETE, &wire::path::snapshot(&snapshot), Vec::new());
    assert_eq!(status, 405);
    let (status, _) = v.raw(reqwest::Method::PUT, wire::path::BLOBS, b"x".to_vec());
    assert_eq!(status, 405);
    let refused = v.events_of("refused");
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused[0]["detail"].as_str().expect("detail").contains("DELETE"));
    assert_eq!(refused[0]["device_id"].as_str().map(str::len), Some(32));

    // Garbage under a valid name: the id of real content, other bytes.
    let session: wire::Session = {
        let (status, body) = v.raw(reqwest::Method::GET, wire::path::SESSION, Vec::new());
        assert_eq!(status, 200);
        serde_json::from_str(&body).expect("session")
    };
    let mut key = [0u8; 32];
    hex::decode_to_slice(&session.id_key, &mut key).expect("key");
    let real = b"the real content of a chunk".to_vec();
    let id = *blake3::keyed_hash(&key, &real).as_bytes();
    let mut body = Vec::new();
    wire::encode_frame(&mut body, wire::KIND_DATA, &id, b"ransomware's garbage");
    let (status, answer) = v.raw(reqwest::Method::POST, wire::path::BLOBS, body);
    assert_eq!(status, 422, "{answer}");
    assert_eq!(v.events_of("garbage_upload").len(), 1);
    let ask = serde_json::to_vec(&wire::Ids { ids: vec![hex::encode(id)] }).expect("json");
    let (_, missing) = v.raw(reqwest::Method::POST, wire::path::MISSING, ask);
    assert!(missing.contains(&hex::encode(id)), "nothing of the refused upload was stored");
    // Truncated frames are refused too.
    let (status, _) = v.raw(reqwest::Method::POST, wire::path::BLOBS, vec![0u8; 10]);
    assert_eq!(status, 400);
    assert_eq!(v.events_of("malformed_upload").len(), 1);

    // A flood of snapshots: the second one of the hour passes, the third is refused.
    let (code, _) = v.run(&[&src], &[]);
    assert_eq!(code, 0);
    let (code, _) = v.run(&[&src], &[]);
    assert_eq!(code, 2);
    assert_eq!(v.events_of("rate_limited").len(), 1);
    assert_eq!(v.snapshots().len(), 2);

    // Over the quota: of 9 MiB of incompressible content, uploaded in parallel batches, what
    // does not fit in the 8 MiB is refused and logged, and the vault never holds more than
    // the quota (the room left is claimed in one step, not checked and added later).
    let big = noise("quota", 9 * 1024 * 1024);
    write(&src.join("big.bin"), &big);
    let (code, out) = v.run(&[&src], &[]);
    assert_eq!(code, 2, "{out}");
    assert!(!v.events_of("quota_exceeded").is_empty());
    // A restore makes the vault write out the pack it is filling, so it can be measured; and
    // the good snapshots are still there to restore.
    let target = v.site.dir.path().join("restore-after-quota");
    let out =
        v.backup(&["backup", "restore", "--snapshot", "latest", "--target", &target.display().to_string()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let packs = pack_bytes(&v);
    assert!(packs <= 8 * 1024 * 1024 + 64 * 1024, "{packs} bytes in packs under an 8 MiB quota");
    assert_eq!(v.snapshots().len(), 2);

    // A certificate from another CA, made to look like an enrolled device: refused at the
    // TLS handshake, logged.
    let forged = v.site.dir.path().join("forged-ca");
    let (ca, _) = mamori_pki::Ca::load_or_create(&forged, "mamori device CA").expect("ca");
    let key = mamori_pki::DeviceKey::generate().expect("key");
    let id = mamori_agent::device_identity(&v.site.agent_dir("ward-pc")).expect("identity");
    let cert = ca
        .sign_csr(&key.csr_pem(&id.device_id).expect("csr"), &id.device_id, Duration::from_secs(3600))
        .expect("sign");
    let identity = mamori_backup::Identity {
        key_pem: key.key_pem().to_string(),
        cert_pem: cert.cert_pem,
        ca_fingerprint: id.ca_fingerprint,
        hostname: "forger".into(),
    };
    let conn = mamori_backup::Connection::new(&v.url(), &identity).expect("connection");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    assert!(rt.block_on(conn.session()).is_err());
    wait_for("the refused handshake to be logged", Duration::from_secs(10), || {
        !v.events_of("tls_refused").is_empty()
    });
    let out = v.admin(&["vault", "check"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
}

/// A tree big enough that a backup is still running when it is killed.
fn big_tree(dir: &Path, seed: &str, files: usize) {
    for i in 0..files {
        write(&dir.join(format!("d{}/f{i}.bin", i % 8)), &noise(&format!("{seed}{i}"), 3 * 1024 * 1024));
    }
}

/// Bytes of all pack files together.
fn pack_bytes(v: &VaultSite) -> u64 {
    let packs = v.data().join("repo/packs");
    let files = std::fs::read_dir(packs)
        .expect("packs")
        .flatten()
        .flat_map(|sub| std::fs::read_dir(sub.path()).expect("pack dir").flatten().collect::<Vec<_>>());
    files.map(|f| f.metadata().expect("pack metadata").len()).sum()
}

fn pack_count(v: &VaultSite) -> usize {
    let packs = v.data().join("repo/packs");
    std::fs::read_dir(packs)
        .map(|d| d.flatten().map(|sub| std::fs::read_dir(sub.path()).map(|e| e.count()).unwrap_or(0)).sum())
        .unwrap_or(0)
}

#[test]
fn kill_9_of_client_or_vault_leaves_no_partial_snapshot() {
    let mut v = VaultSite::new(&[]);
    v.start(&[]);
    let src = v.site.dir.path().join("src");
    big_tree(&src, "one", 60);

    // The client dies mid-upload.
    let url = v.url();
    let agent = v.agent_dir();
    let spawn_backup = || {
        let log = v.site.dir.path().join(format!("backup-{}.log", unique()));
        let mut cmd = std::process::Command::new(BIN);
        cmd.args([
            "backup",
            "run",
            "--quiet",
            "--vault",
            &url,
            "--agent-dir",
            &agent,
            "--source",
            &src.display().to_string(),
        ]);
        Proc::spawn(&mut cmd, log)
    };
    let mut client = spawn_backup();
    wait_for_every("the first pack", Duration::from_secs(60), Duration::from_millis(10), || {
        pack_count(&v) >= 1
    });
    assert!(client.child.try_wait().expect("wait").is_none(), "the backup ended before it could be killed");
    client.sigkill();
    assert!(v.snapshots().is_empty(), "a killed client leaves no snapshot");
    assert_eq!(v.admin(&["vault", "check", "--read-data"]).code, 0);
    let (code, done) = v.run(&[&src], &["--quiet"]);
    assert_eq!(code, 0, "{done}");
    assert_eq!(v.snapshots().len(), 1);

    // The vault dies mid-upload of new content.
    big_tree(&src.join("more"), "two", 60);
    let packs_before = pack_count(&v);
    let mut client = spawn_backup();
    wait_for_every("a new pack", Duration::from_secs(60), Duration::from_millis(10), || {
        pack_count(&v) > packs_before
    });
    assert!(
        client.child.try_wait().expect("wait").is_none(),
        "the backup ended before the vault could be killed"
    );
    v.vault.as_mut().expect("vault").sigkill();
    wait_for("the client to fail", Duration::from_secs(60), || {
        client.child.try_wait().expect("wait").is_some()
    });
    assert!(!client.child.try_wait().expect("wait").expect("exited").success());
    let out = v.admin(&["vault", "check", "--read-data"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    v.start(&[]);
    assert_eq!(v.snapshots().len(), 1, "no partial snapshot after the vault was killed");
    let (code, done) = v.run(&[&src], &["--quiet"]);
    assert_eq!(code, 0, "{done}");
    assert_eq!(v.snapshots().len(), 2);
    let target = v.site.dir.path().join("restored");
    let out = v.backup(&["backup", "restore", "--target", &target.display().to_string()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_same_tree(&src, &target.join(src.strip_prefix("/").expect("absolute")));
}

#[test]
fn a_corrupted_pack_is_found_by_check() {
    let mut v = VaultSite::new(&[]);
    v.start(&[]);
    let src = v.site.dir.path().join("src");
    write(&src.join("a.txt"), &text(1, 100_000));
    assert_eq!(v.run(&[&src], &[]).0, 0);
    v.vault.as_mut().expect("vault").stop();
    assert_eq!(v.admin(&["vault", "check", "--read-data"]).code, 0);
    let packs = v.data().join("repo/packs");
    let sub = std::fs::read_dir(&packs).expect("packs").flatten().next().expect("a pack dir").path();
    let pack = std::fs::read_dir(&sub).expect("pack dir").flatten().next().expect("a pack").path();
    let mut bytes = std::fs::read(&pack).expect("pack");
    bytes[100] ^= 0x01;
    std::fs::set_permissions(&pack, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::write(&pack, bytes).expect("corrupt");
    let out = v.admin(&["vault", "check"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let name = pack.file_name().expect("name").to_string_lossy().into_owned();
    assert!(out.stdout.contains(&format!("damaged pack: {name}")), "{}", out.stdout);
    assert!(out.stdout.contains("missing blob"), "the snapshot's lost blobs are named: {}", out.stdout);
}

fn detections(v: &VaultSite) -> Vec<Value> {
    let answer = common::commands::Http::admin(&v.site).request(
        reqwest::Method::GET,
        &format!("{}?limit=1000&order=asc", mamori_proto::path::ADMIN_LOG_DETECTIONS),
        None,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["detections"].as_array().cloned().unwrap_or_default()
}

/// `vault prune --json` keeping one clean snapshot a day and nothing else by time.
fn retention_plan(v: &VaultSite) -> Value {
    let out = v.admin(&[
        "vault",
        "prune",
        "--json",
        "--keep-within-days",
        "0",
        "--keep-daily",
        "1",
        "--keep-weekly",
        "0",
        "--keep-monthly",
        "0",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(out.stdout.trim()).expect("plan JSON")
}

fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().expect("cp");
    assert!(status.success());
}

#[test]
fn a_ransomware_pass_is_flagged_alerted_pinned_and_before_attack_restores_the_clean_tree() {
    let syslog = format!("127.0.0.1:{}", free_port());
    let mut v = VaultSite::new(&["--syslog-tls", &syslog]);
    v.start(&["--manager-syslog", &syslog]);
    let src = v.site.dir.path().join("share");
    for i in 0..30 {
        write(&src.join(format!("records/r{i}.txt")), &text(i, 4000 + i * 100));
        let mut pdf = b"%PDF-1.7\n".to_vec();
        pdf.extend_from_slice(&text(i + 100, 6000));
        write(&src.join(format!("reports/p{i}.pdf")), &pdf);
    }
    let (code, first) = v.run(&[&src], &[]);
    assert_eq!((code, first["suspicious"].as_bool()), (0, Some(false)), "{first}");

    // A legitimate week: some records edited, some added, one removed.
    for i in 0..8 {
        write(&src.join(format!("records/r{i}.txt")), &text(i + 500, 5000));
    }
    for i in 30..35 {
        write(&src.join(format!("records/r{i}.txt")), &text(i, 3000));
    }
    std::fs::remove_file(src.join("reports/p29.pdf")).expect("rm");
    let (code, second) = v.run(&[&src], &[]);
    assert_eq!((code, second["suspicious"].as_bool()), (0, Some(false)), "{second}");
    let clean = v.site.dir.path().join("clean-copy");
    copy_tree(&src, &clean);

    // Ransomware: most files encrypted in place and renamed, a note left behind.
    for dir in ["records", "reports"] {
        for entry in std::fs::read_dir(src.join(dir)).expect("dir").flatten().take(25) {
            let path = entry.path();
            let data = std::fs::read(&path).expect("read");
            let key = noise(&path.display().to_string(), data.len());
            let encrypted: Vec<u8> = data.iter().zip(&key).map(|(a, b)| a ^ b).collect();
            std::fs::write(
                path.with_extension(format!("{}.locked", path.extension().expect("ext").to_string_lossy())),
                encrypted,
            )
            .expect("write");
            std::fs::remove_file(&path).expect("rm");
        }
    }
    write(
        &src.join("README_RESTORE_FILES.txt"),
        b"Your files are encrypted. To decrypt them pay bitcoin to the address below.",
    );
    let (code, third) = v.run(&[&src], &[]);
    assert_eq!(code, 1, "a flagged snapshot exits 1: {third}");
    assert_eq!(third["suspicious"], true);
    let reasons = third["snapshot"]["reasons"].as_array().expect("reasons");
    assert!(reasons.iter().any(|r| r.as_str().is_some_and(|r| r.contains("random-looking"))), "{reasons:?}");
    assert_eq!(v.events_of("suspicious_snapshot").len(), 1);

    // The alert reaches the manager, through its syslog receiver and the default rule pack.
    wait_for("the manager's detection", Duration::from_secs(30), || {
        detections(&v)
            .iter()
            .any(|d| d["title"].as_str().is_some_and(|t| t.contains("flagged a snapshot as ransomware")))
    });

    // The last clean snapshot is pinned; the flagged one is kept but counts for nothing.
    let plan = retention_plan(&v);
    let snapshots = v.snapshots();
    let name = |i: usize| snapshots[i]["name"].as_str().expect("name").to_string();
    let reasons_of = |n: &str| -> Vec<String> {
        plan["keep"]
            .as_array()
            .expect("keep")
            .iter()
            .find(|k| k["name"] == n)
            .map(|k| names(&k["reasons"]))
            .unwrap_or_default()
    };
    assert!(reasons_of(&name(1)).contains(&"pinned".to_string()), "{plan:#}");
    assert!(reasons_of(&name(2)).contains(&"suspicious".to_string()), "{plan:#}");
    assert_eq!(names(&plan["forget"]), vec![name(0)], "{plan:#}");

    // --before-attack picks the last clean snapshot, whatever came after.
    let (code, _) = v.run(&[&src], &[]);
    assert_eq!(code, 0, "encrypted files that stay encrypted are no new alarm");
    let target = v.site.dir.path().join("recovered");
    let out = v.backup(&["backup", "restore", "--before-attack", "--target", &target.display().to_string()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains(&name(1)[..12]), "{}", out.stdout);
    assert_same_tree(&clean, &target.join(src.strip_prefix("/").expect("absolute")));

    // Clearing the alert releases the pin.
    let out = v.admin(&["vault", "clear", "--snapshot", &name(2)[..16], "--note", "test: handled"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let cleared = v.snapshots();
    assert_eq!(cleared[2]["cleared"], true);
    let plan = retention_plan(&v);
    assert!(!plan.to_string().contains("pinned"), "{plan:#}");
}
