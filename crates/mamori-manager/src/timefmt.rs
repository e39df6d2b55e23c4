//! Unix milliseconds, as stored, to and from RFC 3339, as people read and write them.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub(crate) fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn system_time_ms(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Accepts RFC 3339 (`2026-11-23T10:00:00Z`) or Unix milliseconds.
pub(crate) fn parse(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
        format!("`{text}` is neither RFC 3339 (2026-11-23T10:00:00Z) nor Unix milliseconds: {e}")
    })?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| format!("`{text}` is out of range"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let ms = 1_795_000_000_123;
        assert_eq!(super::parse(&super::rfc3339(ms)), Ok(ms));
        assert_eq!(super::parse("42"), Ok(42));
        assert!(super::parse("yesterday").is_err());
    }
}
