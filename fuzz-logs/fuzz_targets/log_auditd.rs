//! auditd records and the aggregator on arbitrary input split into lines: no panic, nothing
//! lost (every line ends up in some event's original), bounded pending records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mamori_logs::{AuditAggregator, AuditLimits, ParseContext};

fuzz_target!(|data: &[u8]| {
    let ctx = ParseContext::new(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000));
    let limits = AuditLimits { max_records: 8, ..AuditLimits::default() };
    let mut aggregator = AuditAggregator::new(limits);
    let mut events = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        let single = mamori_logs::parse_line(mamori_logs::Format::Auditd, line, &ctx);
        assert!(single.contains_key("log.original"));
        aggregator.push(line, &ctx, &mut events);
        assert!(aggregator.pending_records() <= 8);
    }
    aggregator.flush_expired(ctx.now + std::time::Duration::from_secs(60), &mut events);
    aggregator.flush(&mut events);
    assert_eq!(aggregator.pending_records(), 0);
    for event in &events {
        assert!(event.contains_key("log.original"));
        assert!(event.values().all(|v| !v.is_object()));
    }
});
