//! Retention on real repositories: time buckets, the garbage-snapshot attack, the two-phase
//! delete with garbage collection (and every state a kill can leave), a snapshot flagged after
//! scheduling, and clearing an alert.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mamori_vault::chunk::ChunkerConfig;
use mamori_vault::ledger::{self, SnapshotRecord};
use mamori_vault::retention::{self, candidates, execute_due, plan, Candidate, KeepReason, Policy, DAY_MS};
use mamori_vault::tree::{restore, store_path, StoreStats};
use mamori_vault::{Error, Repository, Snapshot};

const PASS: &str = "correct horse battery staple";
const SMALL: ChunkerConfig = ChunkerConfig { min: 4096, avg: 16384, max: 65536 };
/// 2025-01-01T00:00:00Z, a Wednesday.
const JAN_1_2025: i64 = 1_735_689_600_000;
const HOUR_MS: i64 = 3_600_000;

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A source tree for day `day`: a text file that never changes and 300 KB of content that is
/// new every day (random, so that it does not compress and its removal is measurable).
fn make_source(root: &Path, day: u64) {
    std::fs::create_dir_all(root.join("docs")).unwrap();
    let text: String = (0..2000).map(|i| format!("line {i} of the ward rota\n")).collect();
    std::fs::write(root.join("docs/rota.txt"), text).unwrap();
    std::fs::write(root.join("day.bin"), pseudo_random(300_000, day + 1)).unwrap();
    std::fs::set_permissions(root.join("day.bin"), std::fs::Permissions::from_mode(0o640)).unwrap();
}

fn backup(repo: &mut Repository, source: &Path, time_ms: i64, device: &str) -> String {
    let mut stats = StoreStats::default();
    let tree = store_path(repo, source, &mut stats).unwrap();
    assert!(stats.problems.is_empty(), "{:?}", stats.problems);
    let snapshot = Snapshot {
        time_ms,
        hostname: format!("{device}-host"),
        // One series whatever the temporary directory is called.
        paths: vec!["/data".into()],
        tree,
        device_id: device.into(),
        excludes: Vec::new(),
        added_raw: 0,
        added_stored: 0,
    };
    repo.write_snapshot(&snapshot).unwrap()
}

fn record(root: &Path, snapshot: &str, device: &str, time_ms: i64, received_ms: i64, suspicious: bool) {
    ledger::write_record(
        root,
        &SnapshotRecord {
            snapshot: snapshot.into(),
            device_id: device.into(),
            hostname: format!("{device}-host"),
            time_ms,
            received_ms,
            suspicious,
            reasons: if suspicious { vec!["files went random".into()] } else { Vec::new() },
            analysis: None,
        },
    )
    .unwrap();
}

/// Every entry of `a` and `b`: type, bytes, mode, mtime (ns), link target.
fn assert_same_tree(a: &Path, b: &Path) {
    let names =
        |d: &Path| -> BTreeSet<_> { std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect() };
    assert_eq!(names(a), names(b), "{} vs {}", a.display(), b.display());
    for name in names(a) {
        let (pa, pb) = (a.join(&name), b.join(&name));
        let (ma, mb) = (std::fs::symlink_metadata(&pa).unwrap(), std::fs::symlink_metadata(&pb).unwrap());
        assert_eq!(ma.file_type(), mb.file_type(), "{}", pa.display());
        assert_eq!(ma.mode(), mb.mode(), "{}", pa.display());
        assert_eq!((ma.mtime(), ma.mtime_nsec()), (mb.mtime(), mb.mtime_nsec()), "{}", pa.display());
        if ma.is_dir() {
            assert_same_tree(&pa, &pb);
        } else {
            assert_eq!(std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap(), "{}", pa.display());
        }
    }
}

fn restore_and_compare(repo: &mut Repository, snapshot: &str, source: &Path, scratch: &Path) {
    let tree = repo.read_snapshot(snapshot).unwrap().tree;
    let target = scratch.join(format!("restored-{}", &snapshot[..12]));
    let _ = std::fs::remove_dir_all(&target);
    restore(repo, &tree, &target).unwrap();
    assert_same_tree(source, &target);
}

fn candidate(n: usize, device: &str, time_ms: i64) -> Candidate {
    Candidate {
        name: format!("{n:064x}"),
        device_id: device.into(),
        paths: vec!["/data".into()],
        time_ms,
        suspicious: false,
        cleared: false,
    }
}

fn kept_times(plan: &retention::Plan, device: &str) -> Vec<i64> {
    plan.keep.iter().filter(|k| k.device_id == device).map(|k| k.time_ms).collect()
}

#[test]
fn buckets_keep_the_latest_clean_snapshot_of_each_day_iso_week_and_month() {
    // Two snapshots a day, 06:00 and 18:00 UTC, from 2024-12-01 to 2025-01-15.
    let first_day = JAN_1_2025 - 31 * DAY_MS;
    let mut all = Vec::new();
    for day in 0..46 {
        for hour in [6, 18] {
            all.push(candidate(all.len(), "a", first_day + day * DAY_MS + hour * HOUR_MS));
        }
    }
    let at = |month_day: i64, hour: i64| JAN_1_2025 + (month_day - 1) * DAY_MS + hour * HOUR_MS;
    let dec = |month_day: i64, hour: i64| JAN_1_2025 - (32 - month_day) * DAY_MS + hour * HOUR_MS;
    let now = at(16, 12);
    let policy = Policy {
        keep_within_days: 0,
        keep_daily: 3,
        keep_weekly: 3,
        keep_monthly: 2,
        delete_delay_ms: 7 * DAY_MS,
    };
    policy.validate().unwrap();
    let p = plan(&all, &policy, now);
    // Daily: Jan 15, 14, 13. ISO weeks: Jan 13-19, Jan 6-12, and Dec 30 - Jan 5 (2025-W01,
    // which starts in 2024: a week counted by calendar year would have split it). Months:
    // January and December.
    assert_eq!(
        kept_times(&p, "a"),
        vec![dec(31, 18), at(5, 18), at(12, 18), at(13, 18), at(14, 18), at(15, 18)]
    );
    let reasons = |t: i64| p.keep.iter().find(|k| k.time_ms == t).unwrap().reasons.clone();
    assert_eq!(reasons(at(15, 18)), vec![KeepReason::Daily, KeepReason::Weekly, KeepReason::Monthly]);
    assert_eq!(reasons(at(5, 18)), vec![KeepReason::Weekly]);
    assert_eq!(reasons(dec(31, 18)), vec![KeepReason::Monthly]);
    assert_eq!(p.keep.len() + p.forget.len(), all.len());

    // Keep-within counts from now: 18:00 yesterday is 18 hours old, 06:00 is 30.
    let within = Policy { keep_within_days: 1, ..policy };
    let p = plan(&all, &within, now);
    assert!(p.reasons(&all[91].name).unwrap().contains(&KeepReason::Within));
    assert!(p.forgets(&all[90].name));

    // Another device's snapshots fill its own buckets, not device a's.
    let mut both = all.clone();
    for day in 0..46 {
        both.push(candidate(1000 + day as usize, "b", first_day + day * DAY_MS + 20 * HOUR_MS));
    }
    let p = plan(&both, &policy, now);
    assert_eq!(kept_times(&p, "a").len(), 6);
    assert_eq!(kept_times(&p, "b").len(), 6);

    // An uncleared suspicious snapshot fills no bucket and is kept as evidence; the day's
    // earlier clean snapshot takes the bucket and is pinned.
    let mut flagged = all.clone();
    let bad = flagged.iter().position(|c| c.time_ms == at(14, 18)).unwrap();
    flagged[bad].suspicious = true;
    let p = plan(&flagged, &policy, now);
    assert_eq!(p.reasons(&flagged[bad].name).unwrap(), [KeepReason::Suspicious]);
    assert_eq!(p.reasons(&flagged[bad - 1].name).unwrap(), [KeepReason::Daily, KeepReason::Pinned]);
    // Cleared, it counts as clean again.
    flagged[bad].cleared = true;
    assert_eq!(plan(&flagged, &policy, now), plan(&all, &policy, now));
}

#[test]
fn policy_validation_refuses_nonsense() {
    Policy::default().validate().unwrap();
    let nothing =
        Policy { keep_within_days: 0, keep_daily: 0, keep_weekly: 0, keep_monthly: 0, ..Policy::default() };
    assert!(matches!(nothing.validate(), Err(Error::Invalid(_))));
    let hasty = Policy { delete_delay_ms: 60_000, ..Policy::default() };
    assert!(matches!(hasty.validate(), Err(Error::Invalid(_))));
    let plan = retention::Plan { keep: Vec::new(), forget: vec![format!("{:064x}", 1)] };
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(retention::schedule(dir.path(), &plan, 0, 0), Err(Error::Invalid(_))));
    let traversal = retention::Plan { keep: Vec::new(), forget: vec!["../config".into()] };
    assert!(matches!(retention::schedule(dir.path(), &traversal, 0, DAY_MS), Err(Error::Invalid(_))));
    assert!(matches!(retention::cancel(dir.path(), "../../etc/passwd"), Err(Error::Invalid(_))));
}

/// 40 days of clean daily backups, then a compromised client floods 500 snapshots of an
/// encrypted-looking tree in one day, claiming times spread over the 40 past days.
fn garbage_flood(flagged: bool) {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    let mut repo = Repository::init(&vault, PASS, SMALL).unwrap();
    let source = dir.path().join("src");
    let mut genuine = Vec::new();
    for day in 0..40 {
        std::fs::create_dir_all(&source).unwrap();
        std::fs::write(source.join("notes.txt"), format!("day {day}\n")).unwrap();
        let t = JAN_1_2025 + day * DAY_MS + 10 * HOUR_MS;
        let name = backup(&mut repo, &source, t, "ward-pc");
        record(&vault, &name, "ward-pc", t, t, false);
        genuine.push(name);
    }
    let garbage = dir.path().join("garbage");
    std::fs::create_dir_all(&garbage).unwrap();
    std::fs::write(garbage.join("notes.txt.locked"), pseudo_random(4096, 666)).unwrap();
    let flood_day = JAN_1_2025 + 40 * DAY_MS;
    let mut flood = Vec::new();
    for i in 0..500 {
        // Half claim the time they were sent; half are back-dated to 23:00 of an earlier day,
        // where by the client's clock each would be the latest snapshot of its day. The vault
        // goes by when it received them.
        let sent = flood_day + i * 60_000;
        let claimed = if i % 2 == 0 { sent } else { JAN_1_2025 + (i % 40) * DAY_MS + 23 * HOUR_MS + i };
        let name = backup(&mut repo, &garbage, claimed, "ward-pc");
        record(&vault, &name, "ward-pc", claimed, sent, flagged);
        flood.push(name);
    }
    let now = flood_day + 12 * HOUR_MS;
    let policy = Policy::default();
    let (all, problems) = candidates(&repo).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(all.len(), 540);
    let p = plan(&all, &policy, now);
    let last_clean = &genuine[39];

    // Naive `forget --keep-last 30` (restic, borg) by the snapshots' own times keeps 30 of the
    // attacker's snapshots and ages out every genuine one; by arrival it is no better.
    let mut by_claimed = repo.snapshots().unwrap();
    by_claimed.sort_by_key(|(_, s)| s.time_ms);
    let naive: Vec<&String> = by_claimed.iter().rev().take(30).map(|(n, _)| n).collect();
    assert!(naive.iter().all(|n| flood.contains(n)), "keep-last-30 keeps only the flood");

    if flagged {
        assert_eq!(
            p.reasons(last_clean).unwrap(),
            [
                KeepReason::Within,
                KeepReason::Daily,
                KeepReason::Weekly,
                KeepReason::Monthly,
                KeepReason::Pinned
            ]
        );
        for name in &flood {
            assert!(p.reasons(name).unwrap().contains(&KeepReason::Suspicious));
        }
        // The genuine snapshots fare exactly as if the flood had not happened (plus the pin).
        let without: Vec<Candidate> = all.iter().filter(|c| genuine.contains(&c.name)).cloned().collect();
        let baseline = plan(&without, &policy, now);
        for name in &genuine {
            assert_eq!(p.reasons(name).is_some(), baseline.reasons(name).is_some(), "{name}");
        }
    } else {
        assert!(p.reasons(last_clean).unwrap().contains(&KeepReason::Daily));
        // The flood fills one daily bucket (its latest snapshot); the 29 most recent genuine
        // days keep theirs.
        let daily_flood = flood.iter().filter(|n| p.reasons(n).unwrap().contains(&KeepReason::Daily)).count();
        assert_eq!(daily_flood, 1);
        for (day, name) in genuine.iter().enumerate().skip(11) {
            assert!(p.reasons(name).unwrap().contains(&KeepReason::Daily), "day {day}");
        }
    }
}

#[test]
fn the_garbage_snapshot_attack_flagged_does_not_age_out_the_last_clean_version() {
    garbage_flood(true);
}

#[test]
fn the_garbage_snapshot_attack_unflagged_does_not_age_out_the_last_clean_version() {
    garbage_flood(false);
}

/// Three daily snapshots of sources that share a file and differ in 300 KB each.
struct ThreeDays {
    dir: tempfile::TempDir,
    vault: PathBuf,
    repo: Repository,
    names: Vec<String>,
    sources: Vec<PathBuf>,
}

fn three_days(record_day: impl Fn(usize) -> bool) -> ThreeDays {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    let mut repo = Repository::init(&vault, PASS, SMALL).unwrap();
    let (mut names, mut sources) = (Vec::new(), Vec::new());
    for day in 1..=3usize {
        let source = dir.path().join(format!("src{day}"));
        make_source(&source, day as u64);
        let t = JAN_1_2025 + day as i64 * DAY_MS;
        let name = backup(&mut repo, &source, t, "ward-pc");
        if record_day(day) {
            record(&vault, &name, "ward-pc", t, t, false);
        }
        names.push(name);
        sources.push(source);
    }
    ThreeDays { dir, vault, repo, names, sources }
}

const ONE_DAILY: Policy = Policy {
    keep_within_days: 0,
    keep_daily: 1,
    keep_weekly: 0,
    keep_monthly: 0,
    delete_delay_ms: 7 * DAY_MS,
};

#[test]
fn two_phase_delete_waits_for_the_delay_then_removes_and_reclaims() {
    let ThreeDays { dir, vault, mut repo, names, sources } = three_days(|_| true);
    let now = JAN_1_2025 + 3 * DAY_MS + HOUR_MS;
    let (all, _) = candidates(&repo).unwrap();
    let p = plan(&all, &ONE_DAILY, now);
    assert_eq!(p.forget, vec![names[0].clone(), names[1].clone()]);
    let scheduled = retention::schedule(&vault, &p, now, ONE_DAILY.delete_delay_ms).unwrap();
    assert_eq!(retention::pending(&vault).unwrap(), vec![scheduled.clone()]);

    let early = execute_due(&mut repo, &ONE_DAILY, now + DAY_MS).unwrap();
    assert_eq!(early.not_due, vec![scheduled.id.clone()]);
    assert!(early.removed.is_empty() && early.gc.is_none());
    assert_eq!(repo.snapshots().unwrap().len(), 3);

    let before = dir.path().join("before");
    copy_dir(&vault, &before);
    let done = execute_due(&mut repo, &ONE_DAILY, now + 8 * DAY_MS).unwrap();
    assert_eq!(done.executed, vec![scheduled.id.clone()]);
    assert_eq!(done.removed, vec![names[0].clone(), names[1].clone()]);
    assert!(done.skipped.is_empty(), "{:?}", done.skipped);
    let gc = done.gc.unwrap();
    // Two days of 300 KB random content that no kept snapshot has.
    assert!(gc.bytes_reclaimed > 550_000, "{gc:?}");
    assert!(gc.blobs_repacked > 0, "day 1's pack also held the shared file: {gc:?}");
    assert!(gc.damaged_packs.is_empty(), "{gc:?}");
    assert!(retention::pending(&vault).unwrap().is_empty());
    let report = repo.check(true).unwrap();
    assert!(report.is_ok(), "{report:?}");
    restore_and_compare(&mut repo, &names[2], &sources[2], dir.path());
    drop(repo);

    let mut reopened = Repository::open(&vault, PASS).unwrap();
    assert_eq!(reopened.snapshots().unwrap().len(), 1);
    assert!(reopened.check(true).unwrap().is_ok());
    let scratch = dir.path().join("again");
    restore_and_compare(&mut reopened, &names[2], &sources[2], &scratch);
    drop(reopened);

    // Every state a kill could leave: after the snapshot files went but before collection;
    // after the new packs were written but before any old one went; halfway through removing
    // the old ones. Each checks clean, restores, and a rerun finishes the job.
    let after = dir.path().join("after");
    copy_dir(&vault, &after);
    let old_packs: Vec<PathBuf> =
        pack_files(&before).into_iter().filter(|p| !pack_files(&after).contains(p)).collect();
    assert!(!old_packs.is_empty());
    for (i, keep_old) in [old_packs.len(), old_packs.len(), old_packs.len() / 2].into_iter().enumerate() {
        let state = dir.path().join(format!("state{i}"));
        copy_dir(&before, &state);
        for name in &names[..2] {
            std::fs::remove_file(state.join("snapshots").join(name)).unwrap();
        }
        if i > 0 {
            for pack in pack_files(&after) {
                let to = state.join(&pack);
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(after.join(&pack), to).unwrap();
            }
            for pack in &old_packs[keep_old..] {
                std::fs::remove_file(state.join(pack)).unwrap();
            }
        }
        let mut repo = Repository::open(&state, PASS).unwrap();
        let report = repo.check(true).unwrap();
        assert!(report.is_ok(), "state {i}: {report:?}");
        restore_and_compare(&mut repo, &names[2], &sources[2], &dir.path().join(format!("r{i}")));
        let rerun = execute_due(&mut repo, &ONE_DAILY, now + 8 * DAY_MS).unwrap();
        assert_eq!(rerun.already_gone, vec![names[0].clone(), names[1].clone()], "state {i}");
        assert!(repo.check(true).unwrap().is_ok(), "state {i}");
        assert!(retention::pending(&state).unwrap().is_empty());
        restore_and_compare(&mut repo, &names[2], &sources[2], &dir.path().join(format!("s{i}")));
    }
}

fn pack_files(vault: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(vault.join("packs")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            out.push(f.unwrap().path().strip_prefix(vault).unwrap().to_path_buf());
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_snapshot_flagged_after_scheduling_is_not_deleted() {
    // Day 3's analysis is still running when the deletion is scheduled: no record yet.
    let ThreeDays { dir, vault, mut repo, names, sources } = three_days(|day| day < 3);
    let now = JAN_1_2025 + 3 * DAY_MS + HOUR_MS;
    let (all, _) = candidates(&repo).unwrap();
    let p = plan(&all, &ONE_DAILY, now);
    assert_eq!(p.forget, vec![names[0].clone(), names[1].clone()]);
    retention::schedule(&vault, &p, now, ONE_DAILY.delete_delay_ms).unwrap();

    // Then the verdict: day 3 was ransomware. Day 2 is now the last clean version.
    let t3 = JAN_1_2025 + 3 * DAY_MS;
    record(&vault, &names[2], "ward-pc", t3, t3, true);
    let done = execute_due(&mut repo, &ONE_DAILY, now + 8 * DAY_MS).unwrap();
    assert_eq!(done.removed, vec![names[0].clone()]);
    assert_eq!(done.skipped.len(), 1);
    assert_eq!(done.skipped[0].snapshot, names[1]);
    assert!(done.skipped[0].why.contains("pinned"), "{:?}", done.skipped);
    assert!(repo.check(true).unwrap().is_ok());
    restore_and_compare(&mut repo, &names[1], &sources[1], dir.path());
    restore_and_compare(&mut repo, &names[2], &sources[2], dir.path());
}

#[test]
fn clearing_an_alert_releases_the_pin_and_is_done_once() {
    let ThreeDays { vault, mut repo, mut names, dir, .. } = three_days(|day| day != 3);
    let t3 = JAN_1_2025 + 3 * DAY_MS;
    record(&vault, &names[2], "ward-pc", t3, t3, true);
    let source = dir.path().join("src4");
    make_source(&source, 4);
    let t4 = JAN_1_2025 + 4 * DAY_MS;
    names.push(backup(&mut repo, &source, t4, "ward-pc"));
    record(&vault, &names[3], "ward-pc", t4, t4, false);
    let now = t4 + HOUR_MS;

    let (all, _) = candidates(&repo).unwrap();
    let p = plan(&all, &ONE_DAILY, now);
    assert_eq!(p.forget, vec![names[0].clone()]);
    assert_eq!(p.reasons(&names[1]).unwrap(), [KeepReason::Pinned]);
    assert_eq!(p.reasons(&names[2]).unwrap(), [KeepReason::Suspicious]);
    assert_eq!(p.reasons(&names[3]).unwrap(), [KeepReason::Daily]);

    // Not suspicious, unknown, not a name: refused, naming it.
    match ledger::clear(&vault, &names[0], "fine", "admin", now) {
        Err(Error::Refused(m)) => assert!(m.contains(&names[0]), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        ledger::clear(&vault, &format!("{:064x}", 7), "?", "admin", now),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(ledger::clear(&vault, "../config", "?", "admin", now), Err(Error::Invalid(_))));

    ledger::clear(&vault, &names[2], "the nightly re-encode of the image archive", "admin", now).unwrap();
    let (all, _) = candidates(&repo).unwrap();
    assert!(all.iter().any(|c| c.name == names[2] && c.suspicious && c.cleared));
    let p = plan(&all, &ONE_DAILY, now);
    assert_eq!(p.forget, names[..3].to_vec());
    assert!(p.keep.iter().all(|k| !k.reasons.contains(&KeepReason::Pinned)));

    match ledger::clear(&vault, &names[2], "again", "admin", now) {
        Err(Error::Refused(m)) => assert!(m.contains("cleared already"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A verdict is written once.
    let rec = ledger::read_record(&vault, &names[3]).unwrap().unwrap();
    assert!(matches!(
        ledger::write_record(&vault, &SnapshotRecord { suspicious: true, ..rec }),
        Err(Error::Refused(_))
    ));
}

#[test]
fn a_damaged_ledger_record_is_reported_and_keeps_its_snapshot() {
    let ThreeDays { vault, repo, names, dir: _dir, .. } = three_days(|day| day != 1);
    let path = vault.join("ledger").join(format!("{}.json", names[0]));
    std::fs::write(&path, b"{\"snapshot\": truncated").unwrap();
    let (all, problems) = candidates(&repo).unwrap();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].path, path);
    assert_eq!(problems[0].snapshot, names[0]);
    let now = JAN_1_2025 + 3 * DAY_MS + HOUR_MS;
    let p = plan(&all, &ONE_DAILY, now);
    assert_eq!(p.reasons(&names[0]).unwrap(), [KeepReason::Suspicious]);
    assert_eq!(p.forget, vec![names[1].clone()]);
}
