//! Windows EVTX input: read `.evtx` files and directories into flat events.
//!
//! Each record becomes one event of the team's flat model (a `serde_json::Map` whose keys are
//! all top-level): the `System` fields (`EventID` as a number, `Channel`, `Computer`,
//! `Provider_Name`, `TimeCreated`, `ProcessID`, `Security_UserID`, ...), every `EventData`
//! `Data` by its `Name` (unnamed ones as `Data`), `UserData` leaves by their element names, and
//! the common fields `@timestamp`, `mamori.input: evtx`, `mamori.logsource.product: windows`
//! and `mamori.logsource.service` from the channel (Sigma taxonomy). These are the field names
//! Sigma rules for Windows use.
//!
//! Parsing is done by the [`evtx`] crate (its template-compiling JSON renderer); its output is
//! flattened in one streaming pass, without building a JSON tree.
//!
//! Damage is contained: a chunk or record that does not parse is counted and reported with its
//! reason in the file's [`FileReport`] and the rest of the file is read; a file cut inside a
//! chunk is read up to the cut; a path that cannot be read (missing, a FIFO, a link loop, not
//! an EVTX file) is reported and the other paths are read. FIFOs are never opened.
//!
//! Modules:
//! - `discover`: paths → [`EvtxFile`]s (recursive walk, `*.evtx`) and [`PathProblem`]s.
//! - `read`: [`read_file`] / [`read_bytes`] (one file, in record order), [`read_files`] /
//!   [`read_paths`] (files in parallel on a thread pool).
//! - `flatten`: rendered record JSON → flat event.
//! - `channels`: channel → Sigma service ([`service_for_channel`]).
//!
//! Deliberately not done here: Sigma logsource *categories* (the Sigma engine derives them from
//! channel and event ID), message-table rendering of event descriptions, carving records from
//! slack space, and sorting records across files by time (the caller's job).
//!
//! Parallelism: the sample corpora are many small files (593 files, 24,661 records: about 40
//! records each), so one file per thread with the `evtx` crate's own chunk threads off
//! ([`ReadOptions::chunk_threads`] = 1) is the default; see `examples/evtx_throughput.rs`.

mod channels;
mod discover;
mod flatten;
mod read;

pub use channels::service_for_channel;
pub use discover::{discover, discover_matching, has_evtx_extension, Discovery, EvtxFile, PathProblem};
pub use read::{
    open_regular_file, read_bytes, read_file, read_files, read_paths, FileReport, ReadOptions, ReadSummary,
    Record,
};

/// One flat event (see the crate docs for the field names).
pub type Event = serde_json::Map<String, serde_json::Value>;
