mod common;

use std::io::{Cursor, Write};

use common::{chain, gzip, noise, paths, run, tar_of, zip_of, zip_with, Rng};
use mamori_archive::{detect, expand, Flow, Format, Limit, Limits, Member, Problem, Report};

fn is_limit(report: &Report, limit: Limit) -> bool {
    matches!(&report.problem, Problem::LimitExceeded { limit: l, .. } if *l == limit)
}

fn is_malformed(report: &Report) -> bool {
    matches!(report.problem, Problem::Malformed(_))
}

#[test]
fn zip_member_in_directory_is_visited_with_exact_bytes() {
    let body = b"hello from a hospital workstation\n".repeat(10);
    let zip = zip_of(&[("dir/", b""), ("dir/b.txt", &body)]);
    let (visited, reports) = run(&zip, "a.zip", &Limits::default());
    assert!(reports.is_empty(), "{reports:?}");
    assert_eq!(visited, vec![(chain(&["dir/b.txt"]), body)]);
}

#[test]
fn zip_names_are_made_relative() {
    let zip = zip_with(zip::CompressionMethod::Stored, &[("/abs/x.exe", b"x"), ("./rel/y.exe", b"y")]);
    let (visited, _) = run(&zip, "a.zip", &Limits::default());
    assert_eq!(paths(&visited), vec![chain(&["abs/x.exe"]), chain(&["rel/y.exe"])]);
}

#[test]
fn nested_zip_is_visited_then_expanded() {
    let inner = zip_of(&[("x.bin", b"\x4d\x5a payload")]);
    let outer = zip_of(&[("inner.zip", &inner)]);
    let (visited, reports) = run(&outer, "outer.zip", &Limits::default());
    assert!(reports.is_empty(), "{reports:?}");
    assert_eq!(
        visited,
        vec![
            (chain(&["inner.zip"]), inner.clone()),
            (chain(&["inner.zip", "x.bin"]), b"\x4d\x5a payload".to_vec()),
        ]
    );
}

#[test]
fn tar_gz_visits_the_tar_then_its_files() {
    let script = b"#!/bin/sh\nrm -rf /\n".to_vec();
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_ustar();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_size(0);
    dir.set_mode(0o755);
    b.append_data(&mut dir, "etc/", std::io::empty()).unwrap();
    let mut link = tar::Header::new_ustar();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    b.append_link(&mut link, "etc/link", "evil.sh").unwrap();
    let mut file = tar::Header::new_ustar();
    file.set_size(script.len() as u64);
    file.set_mode(0o755);
    b.append_data(&mut file, "etc/evil.sh", script.as_slice()).unwrap();
    let tar = b.into_inner().unwrap();
    let tgz = gzip(&tar);

    for outer_name in ["x.tar.gz", "x.tgz", "downloads/X.TGZ"] {
        let (visited, reports) = run(&tgz, outer_name, &Limits::default());
        assert!(reports.is_empty(), "{reports:?}");
        let expected_tar_name = if outer_name.ends_with("X.TGZ") { "X.tar" } else { "x.tar" };
        assert_eq!(
            visited,
            vec![
                (chain(&[expected_tar_name]), tar.clone()),
                (chain(&[expected_tar_name, "etc/evil.sh"]), script.clone()),
            ],
            "outer name {outer_name}"
        );
    }
}

#[test]
fn gzip_header_file_name_wins_over_outer_name() {
    let mut e = flate2::GzBuilder::new()
        .filename("/tmp/original.txt")
        .write(Vec::new(), flate2::Compression::default());
    e.write_all(b"content").unwrap();
    let gz = e.finish().unwrap();
    let (visited, reports) = run(&gz, "renamed.gz", &Limits::default());
    assert!(reports.is_empty(), "{reports:?}");
    assert_eq!(visited, vec![(chain(&["tmp/original.txt"]), b"content".to_vec())]);

    let plain = gzip(b"content");
    let (visited, _) = run(&plain, "blob.bin", &Limits::default());
    assert_eq!(paths(&visited), vec![chain(&["blob"])]);
}

#[test]
fn tar_entries_of_unknown_type_are_scanned() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::new(b'Z'));
    h.set_size(4);
    b.append_data(&mut h, "hidden.exe", b"MZ\x90\x00".as_slice()).unwrap();
    let tar = b.into_inner().unwrap();
    let (visited, reports) = run(&tar, "t.tar", &Limits::default());
    assert!(reports.is_empty(), "{reports:?}");
    assert_eq!(visited, vec![(chain(&["hidden.exe"]), b"MZ\x90\x00".to_vec())]);
}

#[test]
fn nesting_beyond_max_depth_is_reported_and_upper_levels_visited() {
    let mut data = zip_of(&[("core.txt", b"core")]);
    for level in (1..=20).rev() {
        data = zip_of(&[(&format!("l{level}.zip"), &data)]);
    }
    let limits = Limits::default();
    assert_eq!(limits.max_depth, 16);
    let (visited, reports) = run(&data, "outer.zip", &limits);

    let deepest = visited.iter().map(|(p, _)| p.len()).max().unwrap();
    assert_eq!(deepest, 17, "containers at levels 1..=16 expand, level 17 is only visited");
    for len in 1..=17 {
        let expected: Vec<String> = (1..=len).map(|l| format!("l{l}.zip")).collect();
        assert!(paths(&visited).contains(&expected), "missing {expected:?}");
    }
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(is_limit(&reports[0], Limit::Depth));
    assert_eq!(reports[0].path.len(), 17);
    assert_eq!(reports[0].path.last().unwrap(), "l17.zip");
}

#[test]
fn max_depth_zero_visits_only_direct_members() {
    let inner = zip_of(&[("x.bin", b"x")]);
    let outer = zip_of(&[("inner.zip", &inner)]);
    let limits = Limits { max_depth: 0, ..Limits::default() };
    let (visited, reports) = run(&outer, "o.zip", &limits);
    assert_eq!(paths(&visited), vec![chain(&["inner.zip"])]);
    assert_eq!(reports.len(), 1);
    assert!(is_limit(&reports[0], Limit::Depth));
}

#[test]
fn too_many_members_stop_everything() {
    let names: Vec<String> = (0..50).map(|i| format!("f{i}.txt")).collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), b"x".as_slice())).collect();
    let inner = zip_of(&files);
    let outer = zip_of(&[("inner.zip", &inner), ("after.txt", b"after")]);
    let limits = Limits { max_members: 10, ..Limits::default() };
    let (visited, reports) = run(&outer, "o.zip", &limits);
    // inner.zip is member 1; nine of its members fit; after.txt is never reached.
    assert_eq!(visited.len(), 10, "{:?}", paths(&visited));
    assert!(!paths(&visited).contains(&chain(&["after.txt"])));
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(is_limit(&reports[0], Limit::Members));
    assert_eq!(reports[0].path, chain(&["inner.zip"]));
}

#[test]
fn total_size_limit_stops_everything() {
    let parts: Vec<Vec<u8>> = (0..5).map(|i| noise(1024 * 1024, i)).collect();
    let names: Vec<String> = (0..5).map(|i| format!("part{i}.bin")).collect();
    let files: Vec<(&str, &[u8])> =
        names.iter().map(String::as_str).zip(parts.iter().map(Vec::as_slice)).collect();
    let zip = zip_of(&files);
    let limits = Limits {
        max_member_size: 2 * 1024 * 1024,
        max_total_size: 3 * 1024 * 1024 + 512 * 1024,
        ..Limits::default()
    };
    let (visited, reports) = run(&zip, "parts.zip", &limits);
    assert_eq!(paths(&visited), vec![chain(&["part0.bin"]), chain(&["part1.bin"]), chain(&["part2.bin"])]);
    assert_eq!(visited[2].1, parts[2]);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(is_limit(&reports[0], Limit::TotalSize));
    assert_eq!(reports[0].path, chain(&["part3.bin"]));
}

#[test]
fn oversized_member_is_skipped_and_the_next_one_visited() {
    let big = noise(3 * 1024 * 1024, 7);
    let zip = zip_of(&[("big.bin", &big), ("small.txt", b"small")]);
    let limits = Limits { max_member_size: 1024 * 1024, ..Limits::default() };
    let (visited, reports) = run(&zip, "z.zip", &limits);
    assert_eq!(visited, vec![(chain(&["small.txt"]), b"small".to_vec())]);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(is_limit(&reports[0], Limit::MemberSize));
    assert_eq!(reports[0].path, chain(&["big.bin"]));
}

#[test]
fn exactly_max_member_size_is_allowed() {
    let data = noise(4096, 3);
    let zip = zip_of(&[("exact.bin", &data)]);
    let limits = Limits { max_member_size: 4096, max_total_size: 4096, ..Limits::default() };
    let (visited, reports) = run(&zip, "z.zip", &limits);
    assert!(reports.is_empty(), "{reports:?}");
    assert_eq!(visited, vec![(chain(&["exact.bin"]), data)]);
}

#[test]
fn truncated_zip_is_malformed() {
    let zip = zip_of(&[("a.txt", &noise(10_000, 1)), ("b.txt", b"b")]);
    for cut in [4, 30, zip.len() / 2, zip.len() - 10] {
        let (visited, reports) = run(&zip[..cut], "t.zip", &Limits::default());
        assert!(visited.is_empty(), "cut {cut}");
        assert_eq!(reports.len(), 1, "cut {cut}: {reports:?}");
        assert!(is_malformed(&reports[0]));
        assert!(reports[0].path.is_empty());
    }
}

#[test]
fn garbage_after_zip_magic_is_malformed() {
    let mut data = b"PK\x03\x04".to_vec();
    data.extend_from_slice(&noise(5000, 9));
    let (visited, reports) = run(&data, "g.zip", &Limits::default());
    assert!(visited.is_empty());
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(is_malformed(&reports[0]));
}

#[test]
fn truncated_gzip_is_malformed() {
    let gz = gzip(&noise(100_000, 5));
    for cut in [3, 10, 500, gz.len() - 4] {
        let (visited, reports) = run(&gz[..cut], "t.gz", &Limits::default());
        assert!(visited.is_empty(), "cut {cut}");
        assert_eq!(reports.len(), 1, "cut {cut}: {reports:?}");
        assert!(is_malformed(&reports[0]), "cut {cut}: {reports:?}");
        assert_eq!(reports[0].path, chain(&["t"]));
    }
}

#[test]
fn corrupt_tar_is_malformed() {
    let mut tar = tar_of(&[("a.txt", b"first"), ("b.txt", b"second")]);
    // Break the second header's checksum: the first member is still read.
    let second = 1024;
    tar[second + 148..second + 156].copy_from_slice(b"0000000\0");
    let (visited, reports) = run(&tar, "c.tar", &Limits::default());
    assert_eq!(visited, vec![(chain(&["a.txt"]), b"first".to_vec())]);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(is_malformed(&reports[0]));
    assert!(reports[0].path.is_empty());

    // Truncated inside the first member's data.
    let tar = tar_of(&[("a.txt", &noise(4000, 2))]);
    let (visited, reports) = run(&tar[..2000], "c.tar", &Limits::default());
    assert!(visited.is_empty());
    assert!(!reports.is_empty() && reports.iter().all(is_malformed), "{reports:?}");
}

#[test]
fn corrupt_zip_member_is_reported_and_the_others_visited() {
    let a = b"AAAA first member AAAA".to_vec();
    let b = b"BBBB second member BBBB".to_vec();
    let c = b"CCCC third member CCCC".to_vec();
    let mut zip = zip_with(zip::CompressionMethod::Stored, &[("a.txt", &a), ("b.txt", &b), ("c.txt", &c)]);
    let at = zip.windows(b.len()).position(|w| w == b.as_slice()).unwrap();
    zip[at + 5] ^= 0xff;
    zip[at + 6] ^= 0x55;
    let (visited, reports) = run(&zip, "z.zip", &Limits::default());
    assert_eq!(visited, vec![(chain(&["a.txt"]), a), (chain(&["c.txt"]), c)]);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(is_malformed(&reports[0]));
    assert_eq!(reports[0].path, chain(&["b.txt"]));
}

#[test]
fn corrupt_deflate_member_is_reported_and_the_others_visited() {
    let text = b"some highly compressible text ".repeat(200);
    let mut zip = zip_of(&[("a.txt", &text), ("b.txt", &text), ("c.txt", b"fine")]);
    let mut archive = zip::ZipArchive::new(Cursor::new(zip.clone())).unwrap();
    let b = archive.by_index(1).unwrap();
    let start = b.data_start().unwrap() as usize;
    let len = b.compressed_size() as usize;
    drop(b);
    for byte in &mut zip[start + len / 3..start + len / 3 + 4] {
        *byte ^= 0xa5;
    }
    let (visited, reports) = run(&zip, "z.zip", &Limits::default());
    assert_eq!(paths(&visited), vec![chain(&["a.txt"]), chain(&["c.txt"])]);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(is_malformed(&reports[0]));
    assert_eq!(reports[0].path, chain(&["b.txt"]));
}

#[test]
fn duplicate_zip_names_are_reported() {
    let mut zip =
        zip_with(zip::CompressionMethod::Stored, &[("a1.exe", b"malicious"), ("a2.exe", b"benign")]);
    // Rename the second entry to the first one's name, in both headers.
    let mut i = 0;
    while let Some(at) = zip[i..].windows(6).position(|w| w == b"a2.exe") {
        zip[i + at + 1] = b'1';
        i += at + 6;
    }
    let (visited, reports) = run(&zip, "dup.zip", &Limits::default());
    assert_eq!(visited.len(), 1);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(is_malformed(&reports[0]));
    assert!(reports[0].path.is_empty());
}

#[test]
fn encrypted_zip_member_is_reported() {
    use zip::unstable::write::FileOptionsExt;
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let plain = zip::write::SimpleFileOptions::default();
    w.start_file("secret.docx", plain.with_deprecated_encryption(b"hunter2").unwrap()).unwrap();
    w.write_all(b"confidential").unwrap();
    w.start_file("readme.txt", plain).unwrap();
    w.write_all(b"readme").unwrap();
    let zip = w.finish().unwrap().into_inner();

    let (visited, reports) = run(&zip, "e.zip", &Limits::default());
    assert_eq!(visited, vec![(chain(&["readme.txt"]), b"readme".to_vec())]);
    assert_eq!(reports, vec![Report { path: chain(&["secret.docx"]), problem: Problem::Encrypted }]);
}

#[test]
fn unknown_zip_method_is_unsupported_and_the_next_member_visited() {
    let mut zip = zip_with(zip::CompressionMethod::Stored, &[("a.wv", b"audio"), ("b.txt", b"text")]);
    // Method 97 (WavPack) in the first local header and its central record.
    zip[8..10].copy_from_slice(&97u16.to_le_bytes());
    let cd = zip.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    zip[cd + 10..cd + 12].copy_from_slice(&97u16.to_le_bytes());
    let (visited, reports) = run(&zip, "m.zip", &Limits::default());
    assert_eq!(visited, vec![(chain(&["b.txt"]), b"text".to_vec())]);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(matches!(reports[0].problem, Problem::Unsupported(_)), "{reports:?}");
    assert_eq!(reports[0].path, chain(&["a.wv"]));
}

#[test]
#[should_panic(expected = "visitor bug")]
fn visitor_panics_are_not_swallowed() {
    let zip = zip_of(&[("a.txt", b"a")]);
    expand(&zip, "z.zip", &Limits::default(), &mut |_: &Member<'_>| panic!("visitor bug"));
}

#[test]
fn visitor_stop_stops_at_once() {
    let inner = zip_of(&[("deep.txt", b"deep")]);
    let zip = zip_of(&[("a.txt", b"a"), ("inner.zip", &inner), ("c.txt", b"c")]);
    let mut seen = Vec::new();
    let reports = expand(&zip, "z.zip", &Limits::default(), &mut |m: &Member<'_>| {
        seen.push(m.path.to_vec());
        if m.path.last().map(String::as_str) == Some("inner.zip") {
            Flow::Stop
        } else {
            Flow::Continue
        }
    });
    assert!(reports.is_empty(), "{reports:?}");
    assert_eq!(seen, vec![chain(&["a.txt"]), chain(&["inner.zip"])]);
}

#[test]
fn detect_formats() {
    let zip = zip_of(&[("a", b"a")]);
    assert_eq!(detect(&zip), Some(Format::Zip));
    let empty_zip = zip_of(&[]);
    assert_eq!(detect(&empty_zip), Some(Format::Zip));
    assert_eq!(detect(&gzip(b"x")), Some(Format::Gzip));
    assert_eq!(detect(&tar_of(&[("a", b"a")])), Some(Format::Tar));

    let mut old = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_old();
    h.set_size(1);
    old.append_data(&mut h, "a", b"a".as_slice()).unwrap();
    let old = old.into_inner().unwrap();
    assert_eq!(detect(&old), Some(Format::Tar));
    let mut broken = old.clone();
    broken[0] ^= 1;
    assert_eq!(detect(&broken), None, "v7 tar with a bad checksum");

    assert_eq!(detect(b""), None);
    assert_eq!(detect(b"PK"), None);
    assert_eq!(detect(b"MZ\x90\x00\x03"), None);
    assert_eq!(detect(b"%PDF-1.7\n"), None);
    assert_eq!(detect(&[0x1f, 0x8b]), None);
    assert_eq!(detect(&[0u8; 1024]), None);
    assert_eq!(detect(&noise(4096, 11)), None);
}

#[test]
fn non_archives_expand_to_nothing() {
    let mut calls = 0;
    let reports = expand(b"just text", "a.txt", &Limits::default(), &mut |_: &Member<'_>| {
        calls += 1;
        Flow::Continue
    });
    assert!(reports.is_empty());
    assert_eq!(calls, 0);
}

#[test]
fn empty_zip_has_no_members() {
    let (visited, reports) = run(&zip_of(&[]), "e.zip", &Limits::default());
    assert!(visited.is_empty());
    assert!(reports.is_empty(), "{reports:?}");
}

/// Mutate small valid containers at random; expansion must never panic.
#[test]
fn mutated_containers_never_panic() {
    let tar = tar_of(&[("etc/evil.sh", b"#!/bin/sh\necho hi\n"), ("b.bin", &noise(700, 4))]);
    let tgz = gzip(&tar);
    let inner = zip_of(&[("x.bin", b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), ("y.tgz", &tgz)]);
    let zip = zip_of(&[("inner.zip", &inner), ("dir/", b""), ("t.tar", &tar)]);
    let stored = zip_with(zip::CompressionMethod::Stored, &[("s.txt", b"stored text"), ("x.tar", &tar)]);
    let seeds: [(&str, &[u8]); 5] =
        [("z.zip", &zip), ("s.zip", &stored), ("t.tar", &tar), ("t.tgz", &tgz), ("i.zip", &inner)];
    let limits = Limits {
        max_member_size: 1024 * 1024,
        max_total_size: 4 * 1024 * 1024,
        ratio_floor: 64 * 1024,
        ..Limits::default()
    };
    // MAMORI_FUZZ_ROUNDS / MAMORI_FUZZ_SEED allow longer runs by hand.
    let rounds: usize = std::env::var("MAMORI_FUZZ_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let seed: u64 =
        std::env::var("MAMORI_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x9e37_79b9_7f4a_7c15);
    let mut rng = Rng(seed);
    let mut total_visits = 0usize;
    for round in 0..rounds {
        let (name, seed) = seeds[round % seeds.len()];
        let mut data = seed.to_vec();
        for _ in 0..1 + rng.below(8) {
            match rng.below(10) {
                0 => {
                    let cut = rng.below(data.len() + 1);
                    data.truncate(cut.max(4));
                }
                1 => {
                    let at = rng.below(data.len() + 1);
                    let junk = noise(1 + rng.below(64), rng.next());
                    data.splice(at..at, junk);
                }
                2 => {
                    // Field-sized overwrite with extreme values (sizes, counts, offsets).
                    let at = rng.below(data.len());
                    let fill = if rng.below(2) == 0 { 0xff } else { 0x00 };
                    let end = (at + 1 + rng.below(8)).min(data.len());
                    data[at..end].fill(fill);
                }
                _ => {
                    let at = rng.below(data.len());
                    data[at] = rng.next() as u8;
                }
            }
        }
        // expand() turns decoder panics into reports, so look for those too.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut visits = 0usize;
            let reports = expand(&data, name, &limits, &mut |m: &Member<'_>| {
                assert!(m.data.len() as u64 <= limits.max_member_size);
                visits += 1;
                Flow::Continue
            });
            (visits, reports)
        }));
        match outcome {
            Ok((visits, reports)) => {
                let panicked = reports
                    .iter()
                    .any(|r| matches!(&r.problem, Problem::Malformed(m) if m.starts_with("panicked")));
                assert!(!panicked, "round {round} ({name}) {reports:?} on input {data:02x?}");
                total_visits += visits;
            }
            Err(_) => panic!("round {round} ({name}) panicked on input {data:02x?}"),
        }
    }
    // The mutations must leave many inputs readable, or this tests nothing.
    assert!(total_visits > rounds / 4, "only {total_visits} visits in {rounds} rounds");
}
