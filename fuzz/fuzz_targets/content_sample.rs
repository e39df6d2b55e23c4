//! Any bytes as file content for the ransomware detector's sampler (magic, chi-square, text,
//! ransom words): never panics, statistics stay finite.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mamori_ransom::sample::ContentSample;

fuzz_target!(|data: &[u8]| {
    let sample = ContentSample::from_bytes(data);
    assert!(sample.chi_square.is_finite() || data.is_empty());
    let _ = sample.looks_random();
    let _ = sample.is_structured();
});
