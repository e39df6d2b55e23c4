//! What a hunt did: rules, inputs, detections per rule and per level.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::hunt::{Detection, RuleSummary};

/// A file or path that could not be read (fully).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputProblem {
    pub path: PathBuf,
    pub reason: String,
    /// Nothing of it was read (otherwise some records or lines were skipped).
    pub fatal: bool,
}

/// Detections of one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCount {
    pub rule: RuleSummary,
    pub count: u64,
}

/// Sigma levels, lowest first; others sort after them.
pub const LEVELS: [&str; 5] = ["informational", "low", "medium", "high", "critical"];

/// The summary printed after the timeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub rule_files: usize,
    pub rules_loaded: usize,
    /// Rules (or rule files) not loaded: unsupported features, invalid YAML, ...
    pub rules_unsupported: usize,
    pub correlations_loaded: usize,
    pub correlation_problems: Vec<String>,
    /// Input files found.
    pub files_total: u64,
    pub evtx_files: u64,
    pub log_files: u64,
    pub bytes_read: u64,
    pub records_read: u64,
    /// Records or lines that could not be read (their files were read on).
    pub record_errors: u64,
    pub input_problems: Vec<InputProblem>,
    pub detections: u64,
    /// Most frequent first.
    pub per_rule: Vec<RuleCount>,
    /// (level, count), from critical down; `none` for rules without a level.
    pub per_level: Vec<(String, u64)>,
    pub elapsed_ms: u64,
}

impl Summary {
    pub(crate) fn count_detections(&mut self, detections: &[Detection]) {
        self.detections = detections.len() as u64;
        let mut per_rule: HashMap<&RuleSummary, u64> = HashMap::new();
        let mut per_level: HashMap<String, u64> = HashMap::new();
        for detection in detections {
            *per_rule.entry(&detection.rule).or_default() += 1;
            let level = detection.rule.level.clone().unwrap_or_else(|| "none".to_owned());
            *per_level.entry(level).or_default() += 1;
        }
        let mut rules: Vec<RuleCount> =
            per_rule.into_iter().map(|(rule, count)| RuleCount { rule: rule.clone(), count }).collect();
        rules.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.rule.title.cmp(&b.rule.title)));
        self.per_rule = rules;
        let mut levels: Vec<(String, u64)> = per_level.into_iter().collect();
        levels.sort_by_key(|(level, _)| std::cmp::Reverse(level_rank(Some(level))));
        self.per_level = levels;
    }
}

/// Higher is more severe; unknown levels rank below `informational`.
pub fn level_rank(level: Option<&str>) -> usize {
    level
        .and_then(|level| LEVELS.iter().position(|known| known.eq_ignore_ascii_case(level)))
        .map_or(0, |i| i + 1)
}
