//! Arbitrary bytes as an EVTX file: every outcome must be events or reported errors, never a
//! crash (panics inside the parser are caught and reported per file, so also assert that the
//! report stays consistent).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mamori_evtx::{read_bytes, ReadOptions};

fuzz_target!(|data: &[u8]| {
    let mut delivered = 0u64;
    let report = read_bytes(
        Path::new("fuzz.evtx"),
        data.to_vec(),
        &ReadOptions::default(),
        &mut |record| {
            delivered += 1;
            assert!(record.event.contains_key("@timestamp"));
            assert!(record.event.values().all(|v| !v.is_object() && !v.is_null()));
        },
    );
    assert_eq!(report.records, delivered);
    assert!(report.errors.len() as u64 <= report.error_count);
});
