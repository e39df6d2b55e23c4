//! Offline hunt: run a Sigma rule set over Windows event logs (EVTX) and text logs, and put
//! the detections on one timeline.
//!
//! [`Hunt::load`] loads detection and correlation rules (`mamori-sigma`, `mamori-correlate`).
//! [`Hunt::run`] finds the input files (EVTX by extension or content, text logs by name in
//! directories and any file named directly), reads and evaluates them in parallel (one file
//! per thread: `mamori-evtx` for EVTX, `mamori-logs` with format detection per line for text),
//! then sorts the detections by time and feeds them, in that order, to the correlator. The
//! result is a [`HuntResult`]: [`Detection`]s on a timeline and a [`Summary`] (counts per rule
//! and per level, records read, input problems, rules loaded and not loaded). The writers in
//! [`output`] print it for people (timeline table + summary), as JSON lines (one object per
//! detection, then one summary object) or as CSV. A [`Progress`] callback feeds a progress bar.
//!
//! Modules:
//! - `inputs`: paths → [`InputFile`]s ([`InputKind::Evtx`] or [`InputKind::TextLog`]);
//! - `hunt`: [`Hunt`], [`HuntOptions`], [`Detection`], [`Progress`];
//! - `summary`: [`Summary`] and its parts;
//! - [`output`]: the three writers.
//!
//! Not done here: compressed logs (`.gz` rotations are skipped when walking directories),
//! reading from stdin, output files and exit codes (the CLI's job), deduplication of the same
//! record found in two copies of a log. All detections are kept in memory until the end (they
//! must be sorted before correlation); events that match nothing are dropped as soon as they
//! are evaluated.

mod hunt;
mod inputs;
pub mod output;
mod summary;

pub use hunt::{Detection, DetectionKind, Hunt, HuntOptions, HuntResult, Progress, RuleSummary};
pub use inputs::{collect_inputs, is_text_log_name, InputFile, InputKind};
pub use mamori_logs::Format as LogFormat;
pub use mamori_sigma::Pipeline;
pub use output::{write_csv, write_human, write_json};
pub use summary::{level_rank, InputProblem, RuleCount, Summary, LEVELS};

/// A flat event (the team's event model).
pub type Event = serde_json::Map<String, serde_json::Value>;
