//! mamori's ransomware behaviour detector (engine crate: no I/O policy, no clock, no killing).
//!
//! The agent turns real-time file events into [`Observation`]s, each with content samples
//! ([`ContentSample`]) of the file before (from its baseline) and after the event, and feeds them
//! to a [`Detector`]. The detector scores every process and every directory over a sliding
//! window and returns a [`Verdict`] once per subject when its score passes the threshold.
//!
//! Signals and their points (constants in [`detector`]):
//! - a canary ([`Canaries`]) written, renamed or deleted: 100 (alone above the threshold of 50);
//! - a known-type or text file rewritten in place as uniform random bytes (chi-square test on
//!   the first 4 KiB, no magic, not text): 10;
//! - a known-type file rewritten as unrecognised, non-uniform binary (magic destroyed): 6;
//! - a structured file deleted after a random-looking file named after it was written: 10
//!   (8 when not name-related but written just before, in the same directory, with the size of
//!   an encrypted copy);
//! - renames to unknown extensions: 4 when appended (`a.docx.locked`), 2 otherwise, capped at 30
//!   per window so renames alone never convict;
//! - ransom notes: 4 for the name, 10 for the content (two or more of bitcoin, decrypt, ransom,
//!   .onion...), +30 once notes are in 3 directories.
//!
//! A subject (a pid, reset when its exe changes; and the directory of the file, tracked only once
//! a signal happened in it) yields a verdict when its score over the last 120 s reaches 50, then
//! nothing more until 300 s without signals (`Config`). Severity is `Critical` for a canary or a
//! score of twice the threshold, `High` otherwise.
//!
//! Deliberately *not* signals: new files with compressed magic (xz, zstd, gzip...), deletions
//! of originals without a random-looking replacement, new random-looking files alone (caches,
//! encrypted backups), ELF/text replaced by ELF/text.

pub mod canary;
pub mod detector;
pub mod names;
pub mod sample;

pub use canary::Canaries;
pub use detector::{Config, Detector, Observation, ObservationKind, Severity, Subject, Verdict};
pub use sample::{chi_square, shannon_entropy, ContentSample, FileKind};
