//! The syslog stream framer on arbitrary chunks: no panic, bounded buffering, and every byte
//! of a frame comes from the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mamori_logs::Framer;

const MAX_FRAME: usize = 256;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, so chunk boundaries fall everywhere.
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split).max(1);
    let mut framer = Framer::new(MAX_FRAME);
    let mut out = Vec::new();
    for piece in stream.chunks(chunk) {
        framer.push(piece, &mut out);
        assert!(framer.pending_bytes() <= MAX_FRAME + 1);
    }
    framer.finish(&mut out);
    let total: usize = out.iter().map(Vec::len).sum();
    assert!(total <= stream.len());
    assert!(out.iter().all(|f| f.len() <= MAX_FRAME));
    assert_eq!(framer.stats().frames, out.len() as u64);
});
