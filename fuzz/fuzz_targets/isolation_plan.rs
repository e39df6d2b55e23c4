//! Any text as an allow-list entry and as a stored isolation plan (the state file is read back
//! at agent start): refused with an error or accepted, never a panic, and an accepted entry
//! renders to a ruleset.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mamori_isolate::{AllowEntry, IsolationPlan};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(entry) = text.parse::<AllowEntry>() {
            let plan = IsolationPlan { manager: Vec::new(), allow: vec![entry], allow_dhcp: true };
            let _ = mamori_isolate::ruleset::render(&plan);
        }
    }
    let _ = serde_json::from_slice::<IsolationPlan>(data);
});
