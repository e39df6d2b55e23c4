//! Ordinary work that must not yield any verdict, run for real with the system's tools when
//! they exist (a case is skipped with a message when its tool is missing).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn have(tool: &str) -> bool {
    let ok = Command::new(tool).arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        println!("SKIP: `{tool}` is not installed");
    }
    ok
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A directory of documents and logs like a user's or a service's.
fn documents(root: &Path, n: usize, seed: u64) -> Vec<PathBuf> {
    let mut r = rng(seed);
    fs::create_dir_all(root).unwrap();
    let mut files = Vec::new();
    for i in 0..n {
        let (name, bytes) = match i % 5 {
            0 => (format!("notes_{i:04}.txt"), text(&mut r, 2000 + i * 7 % 9000)),
            1 => (format!("export_{i:04}.csv"), csv(&mut r, 50 + i % 400)),
            2 => (format!("app_{i:04}.log"), log_lines(&mut r, 50 + i % 300)),
            3 => (format!("form_{i:04}.docx"), office_zip(&mut r, 3000 + i * 13 % 20000)),
            _ => (format!("scan_{i:04}.pdf"), pdf(&mut r, 3000 + i * 11 % 20000)),
        };
        let p = root.join(name);
        fs::write(&p, bytes).unwrap();
        files.push(p);
    }
    files
}

fn assert_quiet(h: &Harness, what: &str) {
    let scores = (
        h.detector.score(&mamori_ransom::Subject::Process { pid: h.pid.unwrap_or(0), exe: None }),
        h.verdicts.len(),
        h.no_pid_verdicts.len(),
    );
    println!("{what}: process score at end {}, verdicts {} (+{} without pid)", scores.0, scores.1, scores.2);
    assert!(h.verdicts.is_empty(), "{what}: {:#?}", h.verdicts);
    assert!(h.no_pid_verdicts.is_empty(), "{what}: {:#?}", h.no_pid_verdicts);
}

fn compress_directory(tool: &str, args: &[&str]) {
    if !have(tool) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("archive2025");
    let files = documents(&dir, 400, 11);
    let mut h = Harness::new(Some(3100), &format!("/usr/bin/{tool}"), 2);
    h.baseline_tree(tmp.path());
    run(Command::new(tool).args(args).args(&files));
    assert!(!files[0].exists(), "{tool} should have removed the originals");
    h.diff_tree(tmp.path());
    assert_quiet(&h, &format!("{tool} {} over 400 files, originals deleted", args.join(" ")));
}

#[test]
fn xz_compressing_a_directory() {
    compress_directory("xz", &["-q", "-T1", "-1"]);
}

#[test]
fn zstd_compressing_a_directory() {
    compress_directory("zstd", &["-q", "--rm", "-3"]);
}

#[test]
fn gzip_log_rotation() {
    if !have("gzip") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let logdir = tmp.path().join("log");
    fs::create_dir(&logdir).unwrap();
    let mut r = rng(5);
    let services: Vec<String> = (0..25).map(|i| format!("svc{i:02}")).collect();
    for s in &services {
        fs::write(logdir.join(format!("{s}.log")), log_lines(&mut r, 400)).unwrap();
    }
    let mut h = Harness::new(Some(812), "/usr/sbin/logrotate", 3);
    h.baseline_tree(tmp.path());
    // Five nights of logrotate (rotate 4, compress, delaycompress).
    for _night in 0..5 {
        for s in &services {
            let p = |k: u32, gz: bool| logdir.join(format!("{s}.log.{k}{}", if gz { ".gz" } else { "" }));
            if p(4, true).exists() {
                fs::remove_file(p(4, true)).unwrap();
                h.deleted(&p(4, true));
            }
            for k in (2..4).rev() {
                if p(k, true).exists() {
                    fs::rename(p(k, true), p(k + 1, true)).unwrap();
                    h.renamed(&p(k, true), &p(k + 1, true));
                }
            }
            if p(1, false).exists() {
                fs::rename(p(1, false), p(2, false)).unwrap();
                h.renamed(&p(1, false), &p(2, false));
                run(Command::new("gzip").arg("-9").arg(p(2, false)));
                h.wrote(&p(2, true), true);
                h.deleted(&p(2, false));
            }
            let live = logdir.join(format!("{s}.log"));
            fs::rename(&live, p(1, false)).unwrap();
            h.renamed(&live, &p(1, false));
            fs::write(&live, log_lines(&mut r, 300)).unwrap();
            h.wrote(&live, true);
        }
    }
    assert!(logdir.join("svc00.log.4.gz").exists());
    assert_quiet(&h, "gzip log rotation, 25 logs x 5 nights");
}

/// Real ELF heads from /usr/bin (or synthetic ELF headers when there are none).
fn elf_images(n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir("/usr/bin") {
        let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            if out.len() >= n {
                break;
            }
            if let Ok(b) = fs::read(&p) {
                if b.starts_with(b"\x7fELF") {
                    out.push(b[..b.len().min(96 * 1024)].to_vec());
                }
            }
        }
    }
    let mut r = rng(9);
    while out.len() < n {
        let mut b = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0\x3e\0".to_vec();
        b.extend(text(&mut r, 20_000));
        out.push(b);
    }
    out
}

#[test]
fn package_upgrade_rewriting_2000_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("usr");
    let elves = elf_images(60);
    println!("package upgrade: {} ELF images", elves.len());
    let mut r = rng(21);
    let mut files = Vec::new();
    for i in 0..2000 {
        let dir = root.join(["bin", "lib/x86_64-linux-gnu", "share/doc/pkg", "share/man/man1"][i % 4]);
        fs::create_dir_all(&dir).unwrap();
        let (name, bytes) = match i % 4 {
            0 => (format!("tool{i}"), elves[i % elves.len()].clone()),
            1 => (format!("libthing{i}.so.1"), elves[(i + 7) % elves.len()].clone()),
            2 => (format!("README{i}"), text(&mut r, 800 + i % 3000)),
            _ => {
                let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                std::io::Write::write_all(&mut z, &text(&mut r, 3000)).unwrap();
                (format!("tool{i}.1.gz"), z.finish().unwrap())
            }
        };
        fs::write(dir.join(&name), &bytes).unwrap();
        files.push((dir.join(name), bytes));
    }
    let mut h = Harness::new(Some(2001), "/usr/bin/dpkg", 1);
    h.baseline_tree(tmp.path());
    // dpkg: unpack every file as name.dpkg-new, then rename it over the old one.
    for (i, (path, old)) in files.iter().enumerate() {
        let mut new = old.clone();
        if new.starts_with(b"\x7fELF") {
            let j = new.len() / 3;
            new[j..].rotate_left(i % 97 + 1);
        } else if !new.starts_with(b"\x1f\x8b") {
            new.extend_from_slice(b"\nupdated for version 2.1\n");
        }
        let mut tmpname = path.as_os_str().to_owned();
        tmpname.push(".dpkg-new");
        let tmpname = PathBuf::from(tmpname);
        fs::write(&tmpname, &new).unwrap();
        h.wrote(&tmpname, true);
        fs::rename(&tmpname, path).unwrap();
        // The agent's "before" for a rename over a file is its baseline of the replaced file.
        h.renamed(&tmpname, path);
    }
    assert_quiet(&h, "package upgrade, 2000 files via .dpkg-new + rename");
}

#[test]
fn compiler_build() {
    if !have("cc") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let build = tmp.path().join("build");
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&build).unwrap();
    let mut sources = Vec::new();
    for i in 0..24 {
        let p = src.join(format!("unit{i}.c"));
        fs::write(
            &p,
            format!(
                "#include <string.h>\nstatic const char msg[] = \"unit {i}\";\n\
                 int f{i}(const char *s) {{ int n = 0; for (int k = 0; k < {i} + 3; k++) n += (int)strlen(s) * k; \
                 return n + (int)sizeof msg; }}\n"
            ),
        )
        .unwrap();
        sources.push(p);
    }
    let mut h = Harness::new(Some(5555), "/usr/bin/cc", 2);
    h.baseline_tree(tmp.path());
    run(Command::new("cc").arg("-c").arg("-O1").args(&sources).current_dir(&build));
    let objects: Vec<Vec<u8>> =
        fs::read_dir(&build).unwrap().map(|e| fs::read(e.unwrap().path()).unwrap()).collect();
    assert_eq!(objects.len(), 24);
    // A bigger build: 600 more objects (heads of the real ones, varied), each written by the
    // compiler after an assembler temp file in /tmp that is then deleted, and an archive.
    let tmpdir = tmp.path().join("tmp");
    fs::create_dir(&tmpdir).unwrap();
    let mut r = rng(4);
    for i in 0..600 {
        let s = tmpdir.join(format!("cc{i:06}.s"));
        fs::write(&s, text(&mut r, 4000)).unwrap();
        h.wrote(&s, true);
        let mut obj = objects[i % objects.len()].clone();
        obj.extend(std::iter::repeat_n((i % 251) as u8, i % 500));
        let o = build.join(format!("gen_{i:04}.o"));
        fs::write(&o, obj).unwrap();
        h.wrote(&o, true);
        fs::remove_file(&s).unwrap();
        h.deleted(&s);
    }
    h.diff_tree(tmp.path());
    if have("ar") {
        let mut objs: Vec<PathBuf> = fs::read_dir(&build).unwrap().map(|e| e.unwrap().path()).collect();
        objs.sort();
        run(Command::new("ar").arg("rcs").arg(build.join("libunits.a")).args(&objs[..24]));
        h.wrote(&build.join("libunits.a"), true);
    }
    assert_quiet(&h, "compiler build: 24 real cc -c objects + 600 more, temp .s files, ar");
}

#[test]
fn backup_tool_writing_one_tar_zst() {
    if !have("tar") || !have("zstd") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    documents(&data, 300, 31);
    let out = tmp.path().join("backup").join("nightly.tar.zst");
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    let mut h = Harness::new(Some(7000), "/usr/bin/tar", 100);
    h.baseline_tree(tmp.path());
    run(Command::new("sh").arg("-c").arg(format!(
        "tar -C '{}' -cf - . | zstd -q -T1 -o '{}'",
        data.display(),
        out.display()
    )));
    // The agent would see the archive grow: a few writes, then the close.
    for _ in 0..5 {
        h.wrote(&out, false);
    }
    h.diff_tree(tmp.path());
    assert!(ContentKindIs::zstd(&out));
    assert_quiet(&h, "backup: one tar.zst of 300 documents");
}

struct ContentKindIs;
impl ContentKindIs {
    fn zstd(p: &Path) -> bool {
        mamori_ransom::ContentSample::from_file(p).unwrap().kind == mamori_ransom::FileKind::Zstd
    }
}
