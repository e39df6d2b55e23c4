//! Calendar arithmetic and the timestamp formats the parsers meet.
//!
//! Everything is computed on plain integers (proleptic Gregorian calendar, Unix seconds) so that a
//! timestamp costs no allocation until it is written out as RFC 3339.

use std::time::{SystemTime, UNIX_EPOCH};

/// A point in time: seconds since the Unix epoch (may be negative) and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

const MONTHS: [&str; 12] =
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

impl Timestamp {
    pub fn from_system_time(t: SystemTime) -> Timestamp {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp {
                secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2),
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let secs = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2);
                if d.subsec_nanos() == 0 {
                    Timestamp { secs, nanos: 0 }
                } else {
                    Timestamp { secs: secs - 1, nanos: 1_000_000_000 - d.subsec_nanos() }
                }
            }
        }
    }

    /// From a count of `unit`-sized ticks since the epoch (`unit_per_sec` = 1_000 for ms, ...).
    pub fn from_ticks(ticks: i64, ticks_per_sec: i64) -> Timestamp {
        let secs = ticks.div_euclid(ticks_per_sec);
        let rem = ticks.rem_euclid(ticks_per_sec);
        let nanos = (rem as i128 * 1_000_000_000 / ticks_per_sec as i128) as u32;
        Timestamp { secs, nanos }
    }

    /// RFC 3339 in UTC with a `Z`; fractional digits only as many as needed (3, 6 or 9).
    /// Years outside 0..=9999 cannot be written in RFC 3339 and are clamped.
    pub fn to_rfc3339(self) -> String {
        let days = self.secs.div_euclid(86_400);
        let sod = self.secs.rem_euclid(86_400);
        let (mut y, mut mo, mut d) = civil_from_days(days);
        let (mut h, mut mi, mut s) = (sod / 3600, sod % 3600 / 60, sod % 60);
        let mut nanos = self.nanos;
        if y < 0 {
            (y, mo, d, h, mi, s, nanos) = (0, 1, 1, 0, 0, 0, 0);
        } else if y > 9999 {
            (y, mo, d, h, mi, s, nanos) = (9999, 12, 31, 23, 59, 59, 0);
        }
        let mut out = String::with_capacity(30);
        use std::fmt::Write;
        let _ = write!(out, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
        if nanos != 0 {
            if nanos.is_multiple_of(1_000_000) {
                let _ = write!(out, ".{:03}", nanos / 1_000_000);
            } else if nanos.is_multiple_of(1_000) {
                let _ = write!(out, ".{:06}", nanos / 1_000);
            } else {
                let _ = write!(out, ".{nanos:09}");
            }
        }
        out.push('Z');
        out
    }

    /// Calendar year (UTC) of this instant.
    pub fn year(self) -> i64 {
        civil_from_days(self.secs.div_euclid(86_400)).0
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the usual era-based formula).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Wall-clock fields of a date-time; `offset_secs` is east of UTC.
#[derive(Debug, Clone, Copy)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
}

impl Civil {
    /// `None` for an impossible date (Feb 30, hour 25...). A leap second (:60) is folded into :59.
    pub fn to_timestamp(self, offset_secs: i64) -> Option<Timestamp> {
        if !(1..=12).contains(&self.month)
            || self.day == 0
            || self.day > days_in_month(self.year, self.month)
            || self.hour > 23
            || self.minute > 59
            || self.second > 60
        {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        let secs = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second.min(59))
            - offset_secs;
        Some(Timestamp { secs, nanos: self.nanos })
    }
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let s = b.get(at..at + n)?;
    let mut v = 0u32;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

/// Parses `.fff...` at `at`; returns (nanos, bytes consumed including the dot). Digits beyond nine
/// are accepted and ignored.
fn fraction(b: &[u8], at: usize) -> (u32, usize) {
    if b.get(at) != Some(&b'.') && b.get(at) != Some(&b',') {
        return (0, 0);
    }
    let mut i = at + 1;
    let mut nanos = 0u32;
    let mut n = 0;
    while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
        if n < 9 {
            nanos = nanos * 10 + u32::from(c - b'0');
            n += 1;
        }
        i += 1;
    }
    if i == at + 1 {
        return (0, 0);
    }
    for _ in n..9 {
        nanos *= 10;
    }
    (nanos, i - at)
}

/// RFC 3339 / ISO 8601 date-time at the start of `s`: `YYYY-MM-DD[T ]HH:MM:SS[.frac][Z|±HH:MM|±HHMM]`.
/// Without a zone the time is taken as `default_offset_secs` east of UTC. Returns the instant and
/// the number of bytes consumed.
pub fn parse_iso8601(s: &[u8], default_offset_secs: i64) -> Option<(Timestamp, usize)> {
    let year = digits(s, 0, 4)?;
    if s.get(4) != Some(&b'-') || s.get(7) != Some(&b'-') {
        return None;
    }
    let month = digits(s, 5, 2)?;
    let day = digits(s, 8, 2)?;
    if !matches!(s.get(10), Some(b'T' | b't' | b' ')) || s.get(13) != Some(&b':') {
        return None;
    }
    let hour = digits(s, 11, 2)?;
    let minute = digits(s, 14, 2)?;
    if s.get(16) != Some(&b':') {
        return None;
    }
    let second = digits(s, 17, 2)?;
    let (nanos, flen) = fraction(s, 19);
    let mut i = 19 + flen;
    let offset = match s.get(i) {
        Some(b'Z' | b'z') => {
            i += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let oh = digits(s, i + 1, 2)?;
            let (om, len) = if s.get(i + 3) == Some(&b':') {
                (digits(s, i + 4, 2)?, 6)
            } else if let Some(om) = digits(s, i + 3, 2) {
                (om, 5)
            } else {
                (0, 3)
            };
            if oh > 23 || om > 59 {
                return None;
            }
            i += len;
            let off = i64::from(oh * 3600 + om * 60);
            if sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => default_offset_secs,
    };
    let civil = Civil { year: i64::from(year), month, day, hour, minute, second, nanos };
    Some((civil.to_timestamp(offset)?, i))
}

/// Month number from a three-letter English abbreviation (case-insensitive).
pub fn month_from_abbrev(b: &[u8]) -> Option<u32> {
    let b = b.get(..3)?;
    MONTHS.iter().position(|m| m.as_bytes().eq_ignore_ascii_case(b)).map(|i| i as u32 + 1)
}

/// A BSD syslog date without a year: `Mmm dd hh:mm:ss` (day space- or zero-padded, or a single
/// digit), optionally with a fraction, and optionally followed by a four-digit year
/// (`Mmm dd yyyy hh:mm:ss`, as Cisco and others send).
#[derive(Debug, Clone, Copy)]
pub struct BsdDate {
    pub month: u32,
    pub day: u32,
    pub year: Option<i64>,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
}

/// Parses a [`BsdDate`] at the start of `s`; returns it and the bytes consumed.
pub fn parse_bsd_date(s: &[u8]) -> Option<(BsdDate, usize)> {
    let month = month_from_abbrev(s)?;
    if s.get(3) != Some(&b' ') {
        return None;
    }
    let mut i = 4;
    if s.get(i) == Some(&b' ') {
        i += 1;
    }
    let day = if let Some(d) = digits(s, i, 2) {
        i += 2;
        d
    } else {
        let d = digits(s, i, 1)?;
        i += 1;
        d
    };
    if s.get(i) != Some(&b' ') {
        return None;
    }
    i += 1;
    let mut year = None;
    if let (Some(y), Some(b' ')) = (digits(s, i, 4), s.get(i + 4)) {
        year = Some(i64::from(y));
        i += 5;
    }
    let hour = digits(s, i, 2)?;
    let minute = digits(s, i + 3, 2)?;
    let second = digits(s, i + 6, 2)?;
    if s.get(i + 2) != Some(&b':') || s.get(i + 5) != Some(&b':') {
        return None;
    }
    i += 8;
    let (nanos, flen) = fraction(s, i);
    i += flen;
    Some((BsdDate { month, day, year, hour, minute, second, nanos }, i))
}

/// How much later than "now" a year-less date may be before it is taken to belong to the previous
/// year: senders' clocks drift and RFC 3164 dates carry no zone, so a little "future" is normal.
pub const YEAR_INFERENCE_FUTURE_TOLERANCE_SECS: i64 = 86_400;

/// Resolves a year-less date. Rule (documented in the crate docs): if `default_year` is given it is
/// used; otherwise the date gets the latest of the years `now.year + 1`, `now.year`, `now.year - 1`
/// that puts it no more than [`YEAR_INFERENCE_FUTURE_TOLERANCE_SECS`] after `now` — i.e. the
/// nearest time to `now` that is not in the future. A Dec 31 line read on Jan 1 lands in the old
/// year; a Jan 1 line from a sender whose clock runs a few minutes fast, read on Dec 31, lands in
/// the new year. Feb 29 skips non-leap candidates.
pub fn resolve_bsd_date(
    d: &BsdDate,
    now: Timestamp,
    default_year: Option<i64>,
    offset_secs: i64,
) -> Option<Timestamp> {
    let civil = |year| Civil {
        year,
        month: d.month,
        day: d.day,
        hour: d.hour,
        minute: d.minute,
        second: d.second,
        nanos: d.nanos,
    };
    if let Some(y) = d.year.or(default_year) {
        return civil(y).to_timestamp(offset_secs);
    }
    let this_year = now.year();
    let limit = now.secs.saturating_add(YEAR_INFERENCE_FUTURE_TOLERANCE_SECS);
    // Feb 29 may need to look back up to eight years (1900/2100 are not leap years).
    for y in (this_year - 8..=this_year + 1).rev() {
        if let Some(t) = civil(y).to_timestamp(offset_secs) {
            if t.secs <= limit {
                return Some(t);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        parse_iso8601(s.as_bytes(), 0).unwrap().0
    }

    #[test]
    fn civil_round_trip_over_four_centuries() {
        for days in (-200_000i64..200_000).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn iso8601_offsets_and_fractions() {
        // 2003-10-11T22:14:15.003Z is the RFC 5424 example; 1065910455 is its Unix time.
        assert_eq!(ts("2003-10-11T22:14:15.003Z"), Timestamp { secs: 1_065_910_455, nanos: 3_000_000 });
        assert_eq!(ts("2003-08-24T05:14:15.000003-07:00").to_rfc3339(), "2003-08-24T12:14:15.000003Z");
        assert_eq!(ts("2024-02-29T00:00:00+0900").to_rfc3339(), "2024-02-28T15:00:00Z");
        assert!(parse_iso8601(b"2023-02-29T00:00:00Z", 0).is_none());
        assert!(parse_iso8601(b"2023-13-01T00:00:00Z", 0).is_none());
        assert!(parse_iso8601(b"garbage", 0).is_none());
    }

    #[test]
    fn year_inference_prefers_the_nearest_past() {
        let d = |s: &str| parse_bsd_date(s.as_bytes()).unwrap().0;
        let now = ts("2025-01-01T00:05:00Z");
        let r = resolve_bsd_date(&d("Dec 31 23:59:00"), now, None, 0).unwrap();
        assert_eq!(r.to_rfc3339(), "2024-12-31T23:59:00Z");
        let now = ts("2024-12-31T23:59:00Z");
        let r = resolve_bsd_date(&d("Jan  1 00:01:00"), now, None, 0).unwrap();
        assert_eq!(r.to_rfc3339(), "2025-01-01T00:01:00Z");
        let now = ts("2025-06-15T12:00:00Z");
        let r = resolve_bsd_date(&d("Jun 14 15:16:01"), now, None, 0).unwrap();
        assert_eq!(r.to_rfc3339(), "2025-06-14T15:16:01Z");
        let r = resolve_bsd_date(&d("Jul 14 15:16:01"), now, None, 0).unwrap();
        assert_eq!(r.to_rfc3339(), "2024-07-14T15:16:01Z");
        let r = resolve_bsd_date(&d("Feb 29 01:00:00"), now, None, 0).unwrap();
        assert_eq!(r.to_rfc3339(), "2024-02-29T01:00:00Z");
        let r = resolve_bsd_date(&d("Jun  1 00:00:00"), now, Some(2005), 0).unwrap();
        assert_eq!(r.to_rfc3339(), "2005-06-01T00:00:00Z");
        let r = resolve_bsd_date(&d("Oct 11 2003 22:14:15.5"), now, None, 0).unwrap();
        assert_eq!(r.to_rfc3339(), "2003-10-11T22:14:15.500Z");
    }
}
