//! Per-device quotas and rate limits. A compromised client must not be able to fill the
//! vault's disk or bury the good snapshots under a flood of new ones.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Limits {
    /// Stored (compressed, encrypted) bytes a device may add in all; None: no quota.
    pub quota_bytes: Option<u64>,
    /// Snapshots a device may commit per hour.
    pub snapshots_per_hour: u32,
    /// Requests per second a device may make (burst: twice that).
    pub requests_per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { quota_bytes: None, snapshots_per_hour: 12, requests_per_second: 200 }
    }
}

#[derive(Debug, Default)]
struct Device {
    stored: u64,
    snapshots: VecDeque<Instant>,
    tokens: f64,
    refilled: Option<Instant>,
    last_rate_event: Option<Instant>,
}

/// What a device has used, in memory. The stored bytes start from the snapshots on disk
/// (`added_stored`) and grow with every new blob; blobs a client uploaded without ever
/// committing a snapshot count until the vault restarts.
#[derive(Debug, Default)]
pub struct Usage {
    devices: HashMap<String, Device>,
}

pub enum RateVerdict {
    Allowed,
    /// Refused; `true` when this refusal should be logged (at most one event a minute).
    Refused(bool),
}

impl Usage {
    pub fn add_stored(&mut self, device: &str, bytes: u64) {
        let d = self.devices.entry(device.to_string()).or_default();
        d.stored = d.stored.saturating_add(bytes);
    }

    pub fn stored(&self, device: &str) -> u64 {
        self.devices.get(device).map_or(0, |d| d.stored)
    }

    /// Counts `bytes` against the device's quota if they fit, in one step, so that uploads
    /// in parallel cannot each see the same room left and together overshoot the quota.
    /// `Err(left)` when they do not fit.
    pub fn reserve(&mut self, limits: &Limits, device: &str, bytes: u64) -> Result<(), u64> {
        if let Some(left) = self.quota_left(limits, device) {
            if bytes > left {
                return Err(left);
            }
        }
        self.add_stored(device, bytes);
        Ok(())
    }

    /// Gives back part of a reservation (blobs that were already stored, or a failed write).
    pub fn release(&mut self, device: &str, bytes: u64) {
        if let Some(d) = self.devices.get_mut(device) {
            d.stored = d.stored.saturating_sub(bytes);
        }
    }

    pub fn quota_left(&self, limits: &Limits, device: &str) -> Option<u64> {
        limits.quota_bytes.map(|q| q.saturating_sub(self.stored(device)))
    }

    pub fn request(&mut self, limits: &Limits, device: &str, now: Instant) -> RateVerdict {
        let d = self.devices.entry(device.to_string()).or_default();
        let rate = f64::from(limits.requests_per_second.max(1));
        let burst = rate * 2.0;
        let elapsed = d.refilled.map_or(burst / rate, |t| now.duration_since(t).as_secs_f64());
        d.tokens = (d.tokens + elapsed * rate).min(burst);
        d.refilled = Some(now);
        if d.tokens >= 1.0 {
            d.tokens -= 1.0;
            return RateVerdict::Allowed;
        }
        let log = d.last_rate_event.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60));
        if log {
            d.last_rate_event = Some(now);
        }
        RateVerdict::Refused(log)
    }

    /// Counts a snapshot if the device is under its hourly limit.
    pub fn snapshot(&mut self, limits: &Limits, device: &str, now: Instant) -> bool {
        let d = self.devices.entry(device.to_string()).or_default();
        while d.snapshots.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(3600)) {
            d.snapshots.pop_front();
        }
        if d.snapshots.len() >= limits.snapshots_per_hour as usize {
            return false;
        }
        d.snapshots.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_per_hour_and_request_rate_are_enforced() {
        let limits = Limits { quota_bytes: Some(100), snapshots_per_hour: 2, requests_per_second: 5 };
        let mut usage = Usage::default();
        let t0 = Instant::now();
        assert!(usage.snapshot(&limits, "a", t0));
        assert!(usage.snapshot(&limits, "a", t0));
        assert!(!usage.snapshot(&limits, "a", t0 + Duration::from_secs(10)));
        assert!(usage.snapshot(&limits, "b", t0), "limits are per device");
        assert!(usage.snapshot(&limits, "a", t0 + Duration::from_secs(3601)));
        let allowed =
            (0..30).filter(|_| matches!(usage.request(&limits, "a", t0), RateVerdict::Allowed)).count();
        assert_eq!(allowed, 10, "burst is twice the rate");
        assert!(matches!(usage.request(&limits, "a", t0 + Duration::from_secs(1)), RateVerdict::Allowed));
        usage.add_stored("a", 60);
        assert_eq!(usage.quota_left(&limits, "a"), Some(40));
        usage.add_stored("a", 60);
        assert_eq!(usage.quota_left(&limits, "a"), Some(0));
    }

    #[test]
    fn a_reservation_counts_at_once_and_never_overshoots_the_quota() {
        let limits = Limits { quota_bytes: Some(100), ..Limits::default() };
        let mut usage = Usage::default();
        assert_eq!(usage.reserve(&limits, "a", 70), Ok(()));
        // A second upload checked before the first one is written sees 30 bytes, not 100.
        assert_eq!(usage.reserve(&limits, "a", 40), Err(30));
        assert_eq!(usage.stored("a"), 70, "a refused reservation counts nothing");
        usage.release("a", 50);
        assert_eq!(usage.reserve(&limits, "a", 80), Ok(()));
        assert_eq!(usage.quota_left(&limits, "a"), Some(0));
        let unlimited = Limits::default();
        assert_eq!(usage.reserve(&unlimited, "b", u64::MAX), Ok(()));
    }
}
