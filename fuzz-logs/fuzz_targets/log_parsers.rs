//! Every log parser and the auto-detector on arbitrary bytes: no panic, and every event keeps
//! the original line and stays flat.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mamori_logs::{parse_line, Format, ParseContext};

fuzz_target!(|data: &[u8]| {
    let ctx = ParseContext::new(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000));
    for &format in Format::ALL {
        let event = parse_line(format, data, &ctx);
        assert!(event.contains_key("log.original"));
        assert!(event.contains_key("@timestamp"));
        assert!(event.contains_key("mamori.logsource.product"));
        assert!(event.values().all(|v| !v.is_object()));
    }
});
