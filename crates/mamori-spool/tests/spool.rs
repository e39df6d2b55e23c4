use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mamori_spool::{Error, Event, Options, Spool, Sync, DROPPED_KIND};

const SEG_HEADER: u64 = 8;

fn opts(max_bytes: u64, segment_bytes: u64, sync: Sync) -> Options {
    Options { max_bytes, segment_bytes, sync }
}

fn all(sp: &mut Spool) -> Vec<Event> {
    sp.peek(usize::MAX, usize::MAX).unwrap()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("seg-"))
        .collect();
    v.sort();
    v
}

/// Encoded size of a record: len + crc + seq + kind_len + kind + payload.
fn rec_len(kind: &str, payload_len: usize) -> u64 {
    (8 + 8 + 2 + kind.len() + payload_len) as u64
}

#[test]
fn round_trip_reopen_and_seq_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let mut sp = Spool::open(&dir, Options::default()).unwrap();
    let mode = fs::metadata(&dir).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o700);

    let mut last = 0;
    for i in 0..10 {
        let seq = sp.append("test.kind", format!("payload {i}").as_bytes()).unwrap();
        assert!(seq > last);
        last = seq;
    }
    assert_eq!(last, 10);
    assert_eq!(sp.pending(), 10);

    let first3 = sp.peek(3, usize::MAX).unwrap();
    assert_eq!(first3.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(first3[0].kind, "test.kind");
    assert_eq!(first3[0].payload, b"payload 0");
    // Peek does not consume.
    assert_eq!(sp.peek(3, usize::MAX).unwrap(), first3);
    sp.ack(3).unwrap();
    assert_eq!(sp.pending(), 7);
    let rest = all(&mut sp);
    assert_eq!(rest.iter().map(|e| e.seq).collect::<Vec<_>>(), (4..=10).collect::<Vec<_>>());
    drop(sp);

    let mut sp = Spool::open(&dir, Options::default()).unwrap();
    assert_eq!(sp.pending(), 7);
    assert_eq!(all(&mut sp), rest);
    assert_eq!(sp.append("test.kind", b"after reopen").unwrap(), 11);
}

#[test]
fn seq_continues_after_everything_acked_and_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let o = || opts(1 << 20, 256, Sync::EveryAppend);
    let mut sp = Spool::open(dir, o()).unwrap();
    for _ in 0..40 {
        sp.append("k", &[7u8; 40]).unwrap();
    }
    assert!(segments(dir).len() > 3, "small segments should have rolled");
    sp.ack(40).unwrap();
    assert_eq!(sp.pending(), 0);
    assert_eq!(sp.bytes_on_disk(), 0);
    assert!(segments(dir).is_empty());
    assert!(all(&mut sp).is_empty());
    drop(sp);

    let mut sp = Spool::open(dir, o()).unwrap();
    assert_eq!(sp.pending(), 0);
    assert_eq!(sp.append("k", b"x").unwrap(), 41);
    sp.ack(41).unwrap();
    assert_eq!(sp.append("k", b"y").unwrap(), 42);
    drop(sp);
    let mut sp = Spool::open(dir, o()).unwrap();
    assert_eq!(all(&mut sp).iter().map(|e| e.seq).collect::<Vec<_>>(), vec![42]);
}

#[test]
fn torn_tail_is_truncated_and_appends_continue() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut sp = Spool::open(dir, Options::default()).unwrap();
    for i in 0..5u8 {
        sp.append("k", &[i; 20]).unwrap();
    }
    let before = all(&mut sp);
    drop(sp);

    // Cut the last record in the middle, as a torn write would.
    let seg = segments(dir).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    assert_eq!(len, SEG_HEADER + 5 * rec_len("k", 20));
    fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 10).unwrap();

    let mut sp = Spool::open(dir, Options::default()).unwrap();
    assert_eq!(all(&mut sp), before[..4]);
    assert_eq!(fs::metadata(&seg).unwrap().len(), SEG_HEADER + 4 * rec_len("k", 20), "tail truncated");
    let next = sp.append("k", b"after tear").unwrap();
    // The torn bytes could have held a seq already seen elsewhere, so seqs skip past them (documented).
    assert!(next >= 5, "next seq {next} must not reuse a kept seq");
    drop(sp);

    // Garbage appended after complete records: all complete records are kept.
    let seg = segments(dir).pop().unwrap();
    fs::OpenOptions::new().append(true).open(&seg).unwrap().write_all(b"\x13\x00\x00\x00garbage!").unwrap();
    let mut sp = Spool::open(dir, Options::default()).unwrap();
    let got = all(&mut sp);
    assert_eq!(got.len(), 5);
    assert_eq!(got[..4], before[..4]);
    assert_eq!(got[4].seq, next);
    assert_eq!(got[4].payload, b"after tear");
    let again = sp.append("k", b"again").unwrap();
    assert!(again > next);
    drop(sp);
    let mut sp = Spool::open(dir, Options::default()).unwrap();
    assert_eq!(all(&mut sp).last().unwrap().seq, again);
}

#[test]
fn corrupt_crc_in_middle_keeps_prefix_and_later_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rl = rec_len("k", 10);
    // Five records per segment.
    let o = || opts(1 << 20, SEG_HEADER + 5 * rl, Sync::EveryAppend);
    let mut sp = Spool::open(dir, o()).unwrap();
    for i in 0..15u8 {
        sp.append("k", &[i; 10]).unwrap();
    }
    let before = all(&mut sp);
    drop(sp);
    let segs = segments(dir);
    assert_eq!(segs.len(), 3);

    // Flip a payload byte of the third record (seq 3) of the first segment.
    let mut bytes = fs::read(&segs[0]).unwrap();
    let at = (SEG_HEADER + 2 * rl + rl - 1) as usize;
    bytes[at] ^= 0xff;
    fs::write(&segs[0], &bytes).unwrap();

    let mut sp = Spool::open(dir, o()).unwrap();
    let got = all(&mut sp);
    let seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
    // Documented choice: stop at the first damaged record in a segment, continue with the next one.
    assert_eq!(seqs, [1, 2, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
    assert_eq!(got[..2], before[..2]);
    assert_eq!(got[2..], before[5..]);
    assert_eq!(sp.pending(), 12);
    assert_eq!(sp.append("k", &[16; 10]).unwrap(), 16);
    assert_eq!(sp.append_batch(&[("k", &[17; 10]), ("k", &[18; 10])]).unwrap(), 17..=18);
    // Acking across the damaged range works and deletes the damaged segment.
    sp.ack(6).unwrap();
    assert_eq!(segments(dir).len(), 3);
    assert!(!segments(dir).contains(&segs[0]));
    drop(sp);

    // Damage in the middle of the segment being written: prefix kept, and seqs are never reused.
    let last = segments(dir).pop().unwrap();
    let mut bytes = fs::read(&last).unwrap();
    assert_eq!(bytes.len() as u64, SEG_HEADER + 3 * rl, "seqs 16..=18");
    bytes[(SEG_HEADER + rl + 12) as usize] ^= 0x55; // inside seq 17's record
    fs::write(&last, &bytes).unwrap();
    let mut sp = Spool::open(dir, o()).unwrap();
    let got: Vec<u64> = all(&mut sp).iter().map(|e| e.seq).collect();
    assert_eq!(got, (7..=16).collect::<Vec<_>>());
    let next = sp.append("k", b"x").unwrap();
    assert!(next > 18, "seq {next} must skip past the damaged records' seqs");
    drop(sp);
    let mut sp = Spool::open(dir, o()).unwrap();
    assert_eq!(all(&mut sp).last().unwrap().seq, next);
}

const CHILD_ENV: &str = "MAMORI_SPOOL_CHILD";

/// Not a test on its own: the body of `kill_9_loses_no_returned_event`'s child process.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let mut sp = Spool::open(Path::new(&dir), opts(1 << 30, 4096, Sync::EveryAppend)).unwrap();
    let out = std::io::stdout();
    for i in 0..1_000_000u64 {
        let seq = sp.append("crash.test", format!("event {i}").as_bytes()).unwrap();
        let mut lock = out.lock();
        writeln!(lock, "SEQ {seq}").unwrap();
        lock.flush().unwrap();
    }
}

#[test]
fn kill_9_loses_no_returned_event() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut seqs = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest prints "test crash_child ... " without a newline before the child's first line.
            if let Some((_, n)) = line.split_once("SEQ ") {
                seqs.push(n.parse::<u64>().unwrap());
                let _ = tx.send(());
            }
        }
        seqs
    });
    // The machine may be loaded: wait for the child to really be appending before the 200 ms start.
    rx.recv_timeout(Duration::from_secs(30)).expect("child never appended");
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let printed = reader.join().unwrap();
    assert!(!printed.is_empty());

    let mut sp = Spool::open(&dir, opts(1 << 30, 4096, Sync::EveryAppend)).unwrap();
    let events = all(&mut sp);
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "gap or duplicate after crash");
    let present: BTreeSet<u64> = seqs.iter().copied().collect();
    for s in &printed {
        assert!(present.contains(s), "seq {s} was returned by append but is gone after kill -9");
    }
    let max_printed = *printed.iter().max().unwrap();
    assert_eq!(printed, (1..=max_printed).collect::<Vec<_>>(), "child saw gaps or duplicates");
    assert!(seqs.len() as u64 <= max_printed + 1, "at most the one in-flight append may be extra");
    for e in &events {
        assert_eq!(e.payload, format!("event {}", e.seq - 1).as_bytes());
    }
    assert_eq!(sp.append("k", b"after crash").unwrap(), seqs.len() as u64 + 1);
    eprintln!("crash test: {} appends printed, {} recovered", printed.len(), seqs.len());
}

#[derive(serde::Deserialize)]
struct NoticePayload {
    dropped: u64,
    first_seq: u64,
    last_seq: u64,
}

#[test]
fn bounded_spool_drops_oldest_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let max = 4096;
    let o = || opts(max, 512, Sync::EveryAppend);
    let mut sp = Spool::open(dir, o()).unwrap();
    let n = 500u64;
    let mut seq_of = Vec::new();
    for i in 0..n {
        seq_of.push(sp.append("test.event", format!("{i:050}").as_bytes()).unwrap());
        assert!(sp.bytes_on_disk() <= max, "bytes_on_disk {} > max {max}", sp.bytes_on_disk());
        let on_disk: u64 = segments(dir).iter().map(|p| fs::metadata(p).unwrap().len()).sum();
        assert_eq!(on_disk, sp.bytes_on_disk());
    }
    let events = all(&mut sp);
    assert_eq!(events.len() as u64, sp.pending());
    let real: Vec<&Event> = events.iter().filter(|e| e.kind == "test.event").collect();
    let notices: Vec<NoticePayload> = events
        .iter()
        .filter(|e| e.kind == DROPPED_KIND)
        .map(|e| serde_json::from_slice(&e.payload).unwrap())
        .collect();
    assert_eq!(real.len() + notices.len(), events.len());
    let lost = n - real.len() as u64;
    assert!(lost > 0 && !notices.is_empty());
    // The survivors are exactly the newest events, intact.
    for (k, e) in real.iter().enumerate() {
        let i = lost as usize + k;
        assert_eq!(e.seq, seq_of[i]);
        assert_eq!(e.payload, format!("{i:050}").as_bytes());
    }
    assert_eq!(notices.iter().map(|p| p.dropped).sum::<u64>(), lost, "notices must count every loss");
    assert_eq!(sp.dropped_total(), lost);
    // Every lost seq is inside some notice's range.
    for s in &seq_of[..lost as usize] {
        assert!(notices.iter().any(|p| p.first_seq <= *s && *s <= p.last_seq), "seq {s} lost unreported");
    }
    drop(sp);

    let mut sp = Spool::open(dir, o()).unwrap();
    assert_eq!(sp.dropped_total(), lost);
    assert_eq!(all(&mut sp), events);
}

#[test]
fn oversized_event_and_bad_kind_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sp = Spool::open(tmp.path(), opts(4096, 1024, Sync::EveryAppend)).unwrap();
    sp.append("k", b"small").unwrap();
    let err = sp.append("k", &[0u8; 4096]).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("does not fit"), "{err}");
    assert!(matches!(sp.append("", b"x"), Err(Error::InvalidKind(_))));
    assert!(matches!(sp.append(&"k".repeat(256), b"x"), Err(Error::InvalidKind(_))));
    sp.append(&"k".repeat(255), b"x").unwrap();
    // Nothing was dropped or lost by the rejected appends.
    assert_eq!(sp.dropped_total(), 0);
    assert_eq!(all(&mut sp).iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert!(matches!(
        Spool::open(&tmp.path().join("x"), opts(100, 64, Sync::Batch)),
        Err(Error::InvalidOptions(_))
    ));
}

#[test]
fn peek_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sp = Spool::open(tmp.path(), opts(1 << 20, 200, Sync::EveryAppend)).unwrap();
    for i in 0..20u8 {
        sp.append("kk", &[i; 8]).unwrap(); // 10 bytes of kind + payload each
    }
    let seqs = |v: Vec<Event>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(sp.peek(4, usize::MAX).unwrap()), [1, 2, 3, 4]);
    assert_eq!(seqs(sp.peek(usize::MAX, 35).unwrap()), [1, 2, 3]);
    assert_eq!(seqs(sp.peek(usize::MAX, 1).unwrap()), [1], "one event even if larger than max_bytes");
    assert!(sp.peek(0, usize::MAX).unwrap().is_empty());
    sp.ack(5).unwrap();
    // Crosses segment boundaries (200-byte segments hold 7 records).
    assert_eq!(seqs(sp.peek(10, usize::MAX).unwrap()), (6..=15).collect::<Vec<_>>());
    sp.ack(15).unwrap();
    assert_eq!(seqs(all(&mut sp)), (16..=20).collect::<Vec<_>>());
}

#[test]
fn ack_beyond_end_is_error_and_old_ack_is_noop() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sp = Spool::open(tmp.path(), Options::default()).unwrap();
    for _ in 0..5 {
        sp.append("k", b"x").unwrap();
    }
    let err = sp.ack(6).unwrap_err();
    assert!(matches!(err, Error::AckBeyondEnd { requested: 6, last: 5 }), "{err}");
    assert_eq!(sp.pending(), 5);
    sp.ack(3).unwrap();
    sp.ack(2).unwrap();
    sp.ack(3).unwrap();
    assert_eq!(sp.pending(), 2);
    assert_eq!(all(&mut sp).iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
    sp.ack(0).unwrap();
    assert_eq!(sp.pending(), 2);
}

#[test]
fn batch_append_survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut sp = Spool::open(dir, Options::default()).unwrap();
    sp.append("single", b"0").unwrap();
    let batch: Vec<(&str, &[u8])> = vec![("a", b"1"), ("b", b"22"), ("c", b"333")];
    assert_eq!(sp.append_batch(&batch).unwrap(), 2..=4);
    assert!(sp.append_batch(&[]).unwrap().is_empty());
    // A batch with one bad kind writes nothing.
    assert!(sp.append_batch(&[("ok", b"x"), ("", b"y")]).is_err());
    assert_eq!(sp.append("d", b"4444").unwrap(), 5);
    drop(sp);
    let mut sp = Spool::open(dir, Options::default()).unwrap();
    let got = all(&mut sp);
    let want: Vec<(u64, &str, &[u8])> =
        vec![(1, "single", b"0"), (2, "a", b"1"), (3, "b", b"22"), (4, "c", b"333"), (5, "d", b"4444")];
    assert_eq!(got.len(), want.len());
    for (e, (seq, kind, payload)) in got.iter().zip(want) {
        assert_eq!((e.seq, e.kind.as_str(), e.payload.as_slice()), (seq, kind, payload));
    }
}

#[test]
fn batch_sync_mode_peeks_only_flushed_events() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let o = || opts(1 << 20, 4096, Sync::Batch);
    let mut sp = Spool::open(dir, o()).unwrap();
    let batch: Vec<(&str, &[u8])> = (0..5).map(|_| ("k", &b"v"[..])).collect();
    assert_eq!(sp.append_batch(&batch).unwrap(), 1..=5);
    assert_eq!(sp.pending(), 5);
    assert!(all(&mut sp).is_empty(), "unflushed events must not be handed to the sender");
    sp.flush().unwrap();
    assert_eq!(all(&mut sp).len(), 5);
    sp.append("k", b"unflushed").unwrap();
    drop(sp); // Drop flushes best-effort.
    let mut sp = Spool::open(dir, o()).unwrap();
    assert_eq!(all(&mut sp).len(), 6);
}

#[test]
fn second_open_is_refused_while_locked() {
    let tmp = tempfile::tempdir().unwrap();
    let _sp = Spool::open(tmp.path(), Options::default()).unwrap();
    assert!(matches!(Spool::open(tmp.path(), Options::default()), Err(Error::Locked(_))));
}

#[test]
fn corrupt_ack_file_is_an_error_not_a_reset() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sp = Spool::open(tmp.path(), Options::default()).unwrap();
    sp.append("k", b"x").unwrap();
    sp.ack(1).unwrap();
    drop(sp);
    let ack = tmp.path().join("ack");
    let mut bytes = fs::read(&ack).unwrap();
    bytes[10] ^= 1;
    fs::write(&ack, bytes).unwrap();
    assert!(matches!(Spool::open(tmp.path(), Options::default()), Err(Error::CorruptState { .. })));
}

#[test]
fn drop_notice_is_rewritten_if_lost_in_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let o = || opts(2048, 512, Sync::EveryAppend);
    let mut sp = Spool::open(dir, o()).unwrap();
    let mut appended = 0u64;
    while sp.dropped_total() == 0 {
        sp.append("test.event", &[1u8; 40]).unwrap();
        appended += 1;
    }
    let lost = sp.dropped_total();
    let events = all(&mut sp);
    let notice = &events[events.len() - 2];
    assert_eq!(notice.kind, DROPPED_KIND);
    let p: NoticePayload = serde_json::from_slice(&notice.payload).unwrap();
    assert_eq!(p.dropped, lost);
    drop(sp);

    // Simulate a crash after the drop was persisted but before the notice + event write hit the disk.
    let seg = segments(dir).pop().unwrap();
    let cut = rec_len(DROPPED_KIND, notice.payload.len()) + rec_len("test.event", 40);
    let len = fs::metadata(&seg).unwrap().len();
    fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - cut).unwrap();

    let mut sp = Spool::open(dir, o()).unwrap();
    assert_eq!(sp.dropped_total(), lost);
    let after = all(&mut sp);
    let notices: Vec<NoticePayload> = after
        .iter()
        .filter(|e| e.kind == DROPPED_KIND)
        .map(|e| serde_json::from_slice(&e.payload).unwrap())
        .collect();
    assert_eq!(notices.len(), 1, "the lost notice is written again, exactly once");
    assert_eq!(
        (notices[0].dropped, notices[0].first_seq, notices[0].last_seq),
        (p.dropped, p.first_seq, p.last_seq)
    );
    let real = after.iter().filter(|e| e.kind == "test.event").count() as u64;
    // The cut event itself was never acknowledged to anyone (a real crash would have lost it before
    // append returned); everything else is accounted for.
    assert_eq!(real + lost + 1, appended);
    drop(sp);
    let mut sp = Spool::open(dir, o()).unwrap();
    assert_eq!(all(&mut sp), after, "no second re-emission on a clean reopen");
}
