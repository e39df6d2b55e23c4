//! Keeping a check to a share of one core, measured with the thread's own CPU time.

use std::time::{Duration, Instant};

/// CPU time consumed by the calling thread (user + system), `CLOCK_THREAD_CPUTIME_ID`.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; this clock exists on every Linux since 2.6.12.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Sleeps the calling thread so that, since it was created, its CPU time stays at most
/// `share` × wall time. Cheap to call per file: it measures at most every 2 ms of CPU.
pub(crate) struct Throttle {
    share: f64,
    cpu0: Duration,
    wall0: Instant,
    next_cpu: Duration,
}

const STEP: Duration = Duration::from_millis(2);

impl Throttle {
    pub(crate) fn new(share: f64) -> Throttle {
        let cpu0 = thread_cpu_time();
        Throttle { share: share.clamp(0.01, 1.0), cpu0, wall0: Instant::now(), next_cpu: cpu0 + STEP }
    }

    pub(crate) fn pace(&mut self) {
        let cpu = thread_cpu_time();
        if cpu < self.next_cpu {
            return;
        }
        self.next_cpu = cpu + STEP;
        let used = cpu.saturating_sub(self.cpu0);
        let wanted_wall = used.div_f64(self.share);
        let elapsed = self.wall0.elapsed();
        if wanted_wall > elapsed {
            std::thread::sleep(wanted_wall - elapsed);
        }
    }
}
