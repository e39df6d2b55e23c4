//! Any bytes, as a signature-base list and as a ClamAV list: never panics.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mamori_scan::hashes::HashDb;

fuzz_target!(|data: &[u8]| {
    let mut db = HashDb::default();
    let _ = db.load_bytes(data, Path::new("fuzz.txt"));
    let _ = db.load_bytes(data, Path::new("fuzz.hdb"));
    let _ = db.lookup(data);
});
