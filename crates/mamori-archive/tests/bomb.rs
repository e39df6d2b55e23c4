//! Decompression bombs, with a counting allocator so that "never allocates
//! more than the limits allow" is measured, not assumed. The allocator is
//! process-wide, so the tests in this file take a lock to run one at a time.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{chain, gzip_of_zeros, run, zip_of, zip_of_zeros};
use mamori_archive::{Limit, Limits, Problem};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static SERIAL: Mutex<()> = Mutex::new(());

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::SeqCst) + by;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: usize = 1024 * 1024;

/// Run `f` and return its result with the peak heap growth it caused.
fn peak_growth<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let out = f();
    (out, PEAK.load(Ordering::SeqCst).saturating_sub(base))
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn zeros_builders_make_valid_archives() {
    let _serial = lock();
    let limits = Limits::default();

    let (visited, reports) = run(&zip_of_zeros("z.bin", 3), "z.zip", &limits);
    assert!(reports.is_empty(), "{reports:?}");
    assert_eq!(visited.len(), 1);
    assert_eq!(visited[0].0, chain(&["z.bin"]));
    assert_eq!(visited[0].1.len(), 3 * MIB);
    assert!(visited[0].1.iter().all(|&b| b == 0));

    let (visited, reports) = run(&gzip_of_zeros(3), "z.bin.gz", &limits);
    assert!(reports.is_empty(), "{reports:?}");
    assert_eq!(visited.len(), 1);
    assert_eq!(visited[0].0, chain(&["z.bin"]));
    assert_eq!(visited[0].1.len(), 3 * MIB);
}

#[test]
fn two_gib_zip_of_zeros_stops_on_ratio_after_the_floor() {
    let _serial = lock();
    let bomb = zip_of_zeros("zeros.bin", 2048);
    assert!(bomb.len() < 4 * MIB, "bomb is {} bytes", bomb.len());
    let limits = Limits::default();

    let started = Instant::now();
    let ((visited, reports), peak) = peak_growth(|| run(&bomb, "bomb.zip", &limits));
    let took = started.elapsed();

    assert!(visited.is_empty(), "a rejected member must not be visited");
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].path, chain(&["zeros.bin"]));
    assert!(matches!(reports[0].problem, Problem::LimitExceeded { limit: Limit::Ratio, .. }), "{reports:?}");
    // The floor is 8 MiB; the member buffer may have doubled once past it.
    assert!(peak < 3 * limits.ratio_floor as usize, "peak heap growth {peak} bytes");
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn two_gib_gzip_of_zeros_stops_on_ratio_after_the_floor() {
    let _serial = lock();
    let bomb = gzip_of_zeros(2048);
    let limits = Limits::default();
    let ((visited, reports), peak) = peak_growth(|| run(&bomb, "bomb.gz", &limits));
    assert!(visited.is_empty());
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].path, chain(&["bomb"]));
    assert!(matches!(reports[0].problem, Problem::LimitExceeded { limit: Limit::Ratio, .. }));
    assert!(peak < 3 * limits.ratio_floor as usize, "peak heap growth {peak} bytes");
}

#[test]
fn without_ratio_check_member_size_caps_the_bomb_and_its_buffer() {
    let _serial = lock();
    let bomb = zip_of_zeros("zeros.bin", 2048);
    let limits = Limits { ratio_floor: u64::MAX, max_member_size: 16 * MIB as u64, ..Limits::default() };
    let ((visited, reports), peak) = peak_growth(|| run(&bomb, "bomb.zip", &limits));
    assert!(visited.is_empty());
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(matches!(reports[0].problem, Problem::LimitExceeded { limit: Limit::MemberSize, .. }));
    // The member buffer never grows past max_member_size.
    assert!(peak < 16 * MIB + 4 * MIB, "peak heap growth {peak} bytes");
}

#[test]
fn many_small_bombs_are_bounded_by_the_total_budget() {
    let _serial = lock();
    // Each member is stopped by the ratio check just past the floor; the
    // bytes spent on them still count, so the total budget ends the run.
    let one = zip_of_zeros("z", 64);
    let names: Vec<String> = (0..40).map(|i| format!("bomb{i}.zip")).collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), one.as_slice())).collect();
    let outer = zip_of(&files);
    let limits = Limits { max_total_size: 64 * MIB as u64, ..Limits::default() };
    let (visited, reports) = run(&outer, "outer.zip", &limits);
    let ratio = reports
        .iter()
        .filter(|r| matches!(r.problem, Problem::LimitExceeded { limit: Limit::Ratio, .. }))
        .count();
    let total: Vec<_> = reports
        .iter()
        .filter(|r| matches!(r.problem, Problem::LimitExceeded { limit: Limit::TotalSize, .. }))
        .collect();
    assert!((1..=8).contains(&ratio), "{reports:?}");
    assert_eq!(total.len(), 1, "{reports:?}");
    assert!(visited.len() < 40, "expansion went on after the budget ran out");
}
