//! Any bytes, as a zip/gzip/tar container: expansion must never panic or exceed its limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mamori_archive::{expand, Flow, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_total_size: 64 << 20, max_member_size: 16 << 20, ..Limits::default() };
    let mut seen = 0u64;
    let _ = expand(data, "fuzz.zip", &limits, &mut |m| {
        seen += m.data.len() as u64;
        assert!(m.data.len() as u64 <= limits.max_member_size);
        Flow::Continue
    });
    assert!(seen <= limits.max_total_size);
});
