//! mamori's Sigma detection engine.
//!
//! Loads Sigma rules (specification v2.1) from YAML files, compiles their detections into
//! matchers and evaluates flat JSON events ([`Event`]) against them. Rules are indexed by
//! logsource, so an event is only tested against the rules written for its product, service
//! and category.
//!
//! ```no_run
//! use mamori_sigma::{Pipeline, RuleSet};
//! let pipeline = Pipeline::default_windows();
//! let (rules, report) = RuleSet::load(&["rules/".into()], &pipeline);
//! for problem in &report.problems {
//!     eprintln!("{}: {:?}: {}", problem.path.display(), problem.rule, problem.reason);
//! }
//! let event: mamori_sigma::Event = serde_json::from_str(r#"{"EventID": 1}"#).unwrap();
//! let mut matches = Vec::new();
//! rules.evaluate(&event, &mut matches);
//! for index in matches {
//!     println!("{}", rules.rule(index).title);
//! }
//! ```
//!
//! # Module map
//! - [`ruleset`]: files and YAML documents → [`RuleSet`] + [`LoadReport`]; the logsource
//!   index; [`RuleSet::evaluate`]; filters (the filters specification) applied to the rules
//!   they name;
//! - [`pipeline`]: event logsource resolution and field-name mappings ([`Pipeline`]);
//! - `detection`: search identifiers, modifiers, field items and their evaluation;
//! - `condition`: the condition grammar;
//! - `pattern`: wildcards, escapes, value-transforming modifiers, string matchers.
//!
//! # How evaluation stays fast
//! - Rules are indexed by (product, service, category): an event only meets the rules of its
//!   logsource.
//! - Case-insensitive literals (exact, `startswith`, `endswith`, `contains`, and the longest
//!   literal run of other wildcard patterns) are collected per event field across all
//!   rules into one Aho-Corasick automaton per field. Each event field is lowercased once
//!   and scanned once; the scan marks every literal found, and where (anywhere, start,
//!   end, whole value).
//! - A field item whose values are all such literals (e.g. `CommandLine|contains:` with 100
//!   values) is answered by one lookup.
//! - Each rule carries a prefilter derived from its condition: clauses of literals, one of
//!   each must be present for the rule to possibly match (`not` parts give none). Rules
//!   whose prefilter fails are not evaluated at all.
//! - Per-thread scratch buffers are reused across events: no allocation per event once
//!   warm. [`RuleSet::evaluate_exhaustive`] skips all of this (reference path for tests).
//!
//! # Semantics (where the specification leaves room)
//! - Matching is case-insensitive unless `cased` is given; `re` is case-sensitive unless
//!   `re|i`. Values produced by `base64`/`base64offset` are matched case-sensitively
//!   (base64 is case-significant).
//! - A plain number matches a numeric event value or a string holding the same number.
//! - `null` matches a missing field or a JSON null; `exists: true` matches any present
//!   field, null included.
//! - `neq` matches when the field is present, not null, and none of the values match.
//! - Keywords (values without a field) are full-text: each keyword may occur anywhere in any
//!   value of the event (keys under `mamori.` excepted).
//! - Array values in events match when any element matches.
//! - `fieldref` compares with another field of the same event (case-insensitive unless
//!   `cased`), also combined with `contains`, `startswith` or `endswith`.
//! - `lt`/`lte`/`gt`/`gte` compare numbers and numeric strings; other values do not match.
//! - `windash` permutes `-`, `/`, en dash, em dash and horizontal bar for dashes that start
//!   a word (a flag), like pySigma.
//! - `expand` placeholders take their values from the pipeline's `vars`; a rule with an
//!   unresolved placeholder is reported and not loaded.
//!
//! # Event logsource
//! From `mamori.logsource.product`, `.service` and `.category`. For `product: windows` the
//! pipeline derives the service from `Channel` and the categories from (`Channel`,
//! `EventID`) when the input did not set them (a Sysmon EventID 13 is both `registry_event`
//! and `registry_set`). An event with `Channel` and `EventID` but no product is taken as
//! Windows. A rule is evaluated only when every logsource part it sets equals the event's.
//!
//! # Pipeline format
//! A YAML subset of pySigma processing pipelines:
//! ```yaml
//! name: my pipeline
//! vars:                       # values of `expand` placeholders (%Admins%)
//!   Admins: [adm_*, root]
//! windows_services:           # Windows channel -> Sigma service
//!   Security: security
//! windows_categories:         # (channel, EventID) -> Sigma category
//!   - {channel: Security, event_ids: [4688], category: process_creation}
//! transformations:
//!   - id: security_4688
//!     type: field_name_mapping          # the only transformation type supported
//!     mapping: {Image: NewProcessName}   # rule field -> event field
//!     rule_conditions:                   # which rules (pySigma semantics)
//!       - {type: logsource, product: windows, category: process_creation}
//!     event_conditions:                  # which events (mamori extension)
//!       - {type: logsource, service: security, event_ids: [4688]}
//! ```
//! [`Pipeline::default_windows`] holds the taxonomy tables of the specification and the
//! Security 4688 field names; [`Pipeline::merged`] adds a site pipeline to it.
//!
//! # Not done here
//! Correlation rules are returned untouched in [`LoadReport::correlations`] (evaluated by
//! `mamori-correlate`); reading EVTX and parsing logs belong to other crates. Not supported:
//! time modifiers (`minute`, `hour`, ...), Sigma 1.0 aggregations (`| count()`), rule
//! collections (`action: global`), regular expressions using features the `regex` crate
//! lacks (look-around, back-references). Each is reported per rule.

pub mod pipeline;
pub mod ruleset;

mod condition;
mod detection;
mod pattern;

pub use pipeline::{Pipeline, PipelineError};
pub use ruleset::{CorrelationDoc, LoadReport, Logsource, RuleInfo, RuleProblem, RuleSet};

/// A flat event: every field one top-level key (see the team's event model).
pub type Event = serde_json::Map<String, serde_json::Value>;
