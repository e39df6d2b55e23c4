//! Sigma correlation rules (specification v2.1.0) evaluated over a stream of detection
//! matches.
//!
//! The detection engine decides, per event, which Sigma detection rules matched. This crate
//! takes those matches ([`Correlator::observe`]) and decides when a correlation rule holds:
//! N events per group within a timespan (`event_count`), N distinct values (`value_count`),
//! a sum, average or percentile of a field (`value_sum`, `value_avg`, `value_percentile`),
//! or several rules seen together (`temporal`) or in order (`temporal_ordered`). A
//! correlation match is fed back as an observation of its own rule, so correlations chain.
//!
//! # Modules
//! - [`rule`]: parse and validate one correlation document from `serde_json::Value`
//!   ([`CorrelationInfo`], [`Condition`], [`parse_timespan`]).
//! - `engine`: [`Correlator`] (loading a rule set, routing, chaining, expiry, limits).
//! - `state`: per-group windows for each way of deciding a condition.
//!
//! # Stream semantics
//! - A window is `[newest - timespan, newest]` per group, both ends included; it slides
//!   with the group's newest event time (not fixed buckets).
//! - Conditions that only say "at least" (`gt`, `gte`) and temporal types are decided at
//!   the event that makes them true; the group then starts over, so one burst gives one
//!   match. Conditions with an upper bound (`lt`, `lte`, `eq`, `neq`) and `value_avg` are
//!   decided on the window opened by a group's first event once it has closed (a later event
//!   of the group, [`Correlator::flush`], or the periodic sweep).
//! - `value_percentile` (the spec gives no formula): the percentage of the group's window
//!   observations whose `field` value equals the current event's, checked per event; with
//!   `lte: 1` it finds values seen in at most 1% of the window. The window is kept after a
//!   match, as the baseline.
//! - Out of order: events are taken in arrival order with their own timestamps. An event
//!   older than its group's newest minus the timespan is counted as late and ignored;
//!   anything newer joins the window at its time (temporal_ordered compares timestamps, ties
//!   allowed). Groups are expired and windows closed only when the newest event time seen
//!   overall minus [`Limits::allowed_lateness_ms`] has passed them, so slower sources have
//!   that much slack.
//! - Observations lacking a `group-by` field (after aliases) are not correlated; they are
//!   counted in [`CorrelatorStats::missing_group_field`] instead of forming a "null" group.
//!   A list value (`host.ip: [v4, v6]`) puts the observation in the group of each element
//!   (at most 16 groups per observation). Group values compare by text, so `4624` and
//!   `"4624"` are the same group.
//! - Aliases are looked up by the observed rule's `name`, then its `id`; a `group-by` entry
//!   without an alias for that rule is read as a field name.
//! - Chaining: a correlation match is observed by the correlations referencing its rule, at
//!   its `last_ms`, with the triggering event's fields plus the group values (matches decided
//!   at window close carry the group values only). Reference cycles and references to
//!   correlation rules that failed to load are load problems.
//! - Memory: groups expire with their window; [`Limits`] caps groups per rule (least
//!   recently active evicted, counted in [`CorrelatorStats::evicted_groups`]), entries per
//!   group and event ids per match.
//! - `generate`: rules referenced by a correlation are not reported on their own
//!   ([`Correlator::suppress_generated`]) unless a correlation referencing them says
//!   `generate: true`; the same applies to intermediate correlation rules of a chain.
//!
//! # Not done here
//! No detection evaluation (that is `mamori-sigma`), no YAML parsing (the caller converts),
//! no persistence of window state across restarts, no `value_median` (not in the spec:
//! use `value_percentile`), and no output, I/O or process policy.

pub mod rule;

mod engine;
mod state;

pub use engine::{CorrelationMatch, Correlator, CorrelatorStats, Event, Limits, LoadProblem, RuleRef};
pub use rule::{parse_timespan, Condition, CorrelationInfo, CorrelationType};
