//! mamori's malware scanning engine.
//!
//! Given YARA rules and hash lists, decides which files are malicious: [`Engine`] holds the
//! compiled rules (cached on disk between runs) and the hash indicators; a [`FileScanner`]
//! per thread scans a file or a buffer, looking inside zip, gzip and tar containers (through
//! `mamori-archive`, with zip-bomb limits); [`walk::scan_tree`] scans whole trees in
//! parallel, with the [`VerdictCache`] answering for files that have not changed.
//!
//! This crate has no process policy: it prints nothing, chooses no directories and never
//! exits; the caller decides where caches live, what to do with findings (quarantine,
//! alert) and how to show progress.
//!
//! Module map:
//! - [`engine`]: loading and scanning one object; findings and problems;
//! - [`rules`]: collecting, compiling and caching YARA-X rules;
//! - [`hashes`]: MD5/SHA-1/SHA-256 indicator lists;
//! - [`prefilter`]: leaving out rules that cannot match an object (non-`MZ` objects);
//! - [`ecs`]: findings, problems and summaries as ECS-style JSON;
//! - [`eicar`]: the built-in EICAR test file detection;
//! - [`filetype`]: THOR-style `filetype` names for rule externals;
//! - [`verdicts`]: the persistent verdict cache;
//! - [`walk`]: parallel tree scanning.

pub mod ecs;
pub mod eicar;
pub mod engine;
pub mod filetype;
pub mod hashes;
pub mod prefilter;
pub mod rules;
pub mod verdicts;
pub mod walk;

pub use engine::{
    display_path, Engine, EngineOptions, FileScanner, FileVerdict, Finding, FindingKind, LoadReport, Problem,
    ProblemKind,
};
pub use mamori_archive::Limits as ArchiveLimits;
pub use verdicts::{FileKey, VerdictCache};
pub use walk::{scan_tree, Event, Stats, WalkOptions};
