//! The stateful [`Correlator`]: routes detection matches to correlation rules, keeps per-group
//! windows, emits [`CorrelationMatch`]es and feeds them to chained correlations.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::rule::{parse_correlation, CorrelationInfo, CorrelationType};
use crate::state::{group_key, numeric_value, Group, Mode, Refs, Step};

/// One event: flat map of field name to scalar (or list of scalars).
pub type Event = Map<String, Value>;

/// A correlation document that did not load, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadProblem {
    pub origin: PathBuf,
    /// Title and id of the rule when the document has them.
    pub rule: Option<String>,
    pub reason: String,
}

impl fmt::Display for LoadProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule {
            Some(rule) => write!(f, "{}: {rule}: {}", self.origin.display(), self.reason),
            None => write!(f, "{}: {}", self.origin.display(), self.reason),
        }
    }
}

/// How a detection (or correlation) rule is known: correlation `rules` may use either.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleRef<'a> {
    pub id: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// A correlation rule whose condition held for one group.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelationMatch {
    /// Index for [`Correlator::rule`].
    pub rule_index: usize,
    /// `group-by` names (aliases as written) with this group's values.
    pub group: Vec<(String, Value)>,
    pub first_ms: i64,
    pub last_ms: i64,
    /// Observations that make up the match.
    pub count: u64,
    /// The aggregate compared with the condition: distinct values (value_count), sum, average,
    /// percentage share (value_percentile). `None` for event_count and temporal types, where
    /// `count` is the compared number.
    pub value: Option<f64>,
    /// Caller ids of contributing events; at most [`Limits::max_event_refs`], the earliest
    /// half and the latest half when there were more.
    pub event_refs: Vec<u64>,
}

/// Memory bounds. Every bound that discards data is counted in [`CorrelatorStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Groups kept per correlation rule; beyond it the least recently active are evicted.
    pub max_groups_per_rule: usize,
    /// Observations kept per group window; beyond it the oldest are dropped.
    pub max_entries_per_group: usize,
    /// Event ids kept per match.
    pub max_event_refs: usize,
    /// How far behind the newest event time a source may lag before its events count as
    /// late: groups are only expired or closed once the newest event time minus this
    /// lateness has passed their window.
    pub allowed_lateness_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_groups_per_rule: 100_000,
            max_entries_per_group: 10_000,
            max_event_refs: 32,
            allowed_lateness_ms: 60_000,
        }
    }
}

/// Counters for what the correlator did and what it had to discard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorrelatorStats {
    /// Observations routed to at least one correlation rule (chained ones included).
    pub observations: u64,
    /// Matches produced, including intermediate chain matches that were not emitted.
    pub matches: u64,
    /// Groups dropped because a rule hit `max_groups_per_rule`.
    pub evicted_groups: u64,
    /// Window entries dropped because a group hit `max_entries_per_group`.
    pub truncated_entries: u64,
    /// Observations older than their group's window (out of order beyond the timespan).
    pub late_dropped: u64,
    /// Observations without a value for a `group-by` field.
    pub missing_group_field: u64,
    /// Observations without a usable `condition.field` value (value_* types).
    pub missing_value_field: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Target {
    rule: usize,
    position: usize,
}

/// Observations are counted between sweeps of expired groups; a sweep visits every group.
const SWEEP_EVERY: u32 = 8192;

/// Groups one event may join through list-valued `group-by` fields.
const MAX_GROUPS_PER_EVENT: usize = 16;

/// Correlates detection matches according to loaded Sigma correlation rules.
///
/// Feed it with [`Correlator::observe`] in (roughly) time order and call
/// [`Correlator::flush`] when time passes without events and at the end of input.
pub struct Correlator {
    rules: Vec<CorrelationInfo>,
    modes: Vec<Mode>,
    groups: Vec<hashbrown::HashMap<String, Group>>,
    /// Reference string (id or name) → the rule positions that reference it.
    by_reference: HashMap<String, Vec<Target>>,
    /// For each rule: the positions of other rules that reference it (chaining).
    chain_targets: Vec<Vec<Target>>,
    /// Per rule: an intermediate chain step whose matches are not reported (`generate`).
    inner_suppressed: Vec<bool>,
    /// Rules ordered so that a referenced rule comes before the rules referencing it.
    inner_first: Vec<usize>,
    limits: Limits,
    stats: CorrelatorStats,
    watermark_ms: i64,
    since_sweep: u32,
    /// Reused for group keys, which are built for every observation.
    key_buffer: String,
    /// Reused for the rule positions an observation fills.
    target_buffer: Vec<Target>,
    position_buffer: Vec<usize>,
}

impl fmt::Debug for Correlator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Correlator").field("rules", &self.rules.len()).field("stats", &self.stats).finish()
    }
}

/// The `group-by` values of a group, built only when the group is new.
enum GroupValues<'e> {
    FromEvent(&'e Event, RuleRef<'e>),
    Given(Vec<Value>),
}

/// A match waiting to be fed to the correlations that reference its rule.
struct Chained {
    rule: usize,
    time_ms: i64,
    event: Event,
    refs: Refs,
}

fn doc_label(doc: &Value) -> Option<String> {
    let title = doc.get("title").and_then(Value::as_str);
    let id = doc.get("id").and_then(Value::as_str);
    match (title, id) {
        (Some(t), Some(i)) => Some(format!("{t} ({i})")),
        (Some(t), None) => Some(t.to_string()),
        (None, Some(i)) => Some(i.to_string()),
        (None, None) => None,
    }
}

fn doc_identities(doc: &Value) -> impl Iterator<Item = &str> {
    ["id", "name"].into_iter().filter_map(|key| doc.get(key).and_then(Value::as_str))
}

fn identities(info: &CorrelationInfo) -> impl Iterator<Item = &str> {
    info.id.as_deref().into_iter().chain(info.name.as_deref())
}

impl Correlator {
    /// Load correlation documents; the ones that do not validate are reported and skipped.
    pub fn load(docs: &[(PathBuf, Value)]) -> (Correlator, Vec<LoadProblem>) {
        Correlator::load_with_limits(docs, Limits::default())
    }

    pub fn load_with_limits(docs: &[(PathBuf, Value)], limits: Limits) -> (Correlator, Vec<LoadProblem>) {
        let mut problems = Vec::new();
        // Ids and names of correlation documents that did not load: rules referring to them
        // cannot work and are refused instead of waiting forever for a detection of that name.
        let mut failed: HashSet<String> = HashSet::new();
        let mut candidates: Vec<CorrelationInfo> = Vec::new();
        for (origin, doc) in docs {
            match parse_correlation(origin.clone(), doc) {
                Ok(info) => candidates.push(info),
                Err(reason) => {
                    failed.extend(doc_identities(doc).map(str::to_string));
                    problems.push(LoadProblem { origin: origin.clone(), rule: doc_label(doc), reason });
                }
            }
        }

        // Ids and names must identify one rule; the first document keeps it.
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut unique = Vec::with_capacity(candidates.len());
        for info in candidates {
            let clash = identities(&info).find(|i| seen.contains_key(*i)).map(str::to_string);
            if let Some(clash) = clash {
                problems.push(LoadProblem {
                    origin: info.origin.clone(),
                    rule: Some(info.label()),
                    reason: format!("id or name {clash:?} is already used by another correlation rule"),
                });
                continue;
            }
            for identity in identities(&info) {
                seen.insert(identity.to_string(), unique.len());
            }
            unique.push(info);
        }

        let kept = drop_broken_chains(unique, &mut failed, &mut problems);
        Correlator::build(kept, limits, problems)
    }

    fn build(
        rules: Vec<CorrelationInfo>,
        limits: Limits,
        problems: Vec<LoadProblem>,
    ) -> (Correlator, Vec<LoadProblem>) {
        let mut by_reference: HashMap<String, Vec<Target>> = HashMap::new();
        for (rule, info) in rules.iter().enumerate() {
            for (position, reference) in info.rules.iter().enumerate() {
                by_reference.entry(reference.clone()).or_default().push(Target { rule, position });
            }
        }
        let mut chain_targets = vec![Vec::new(); rules.len()];
        for (rule, info) in rules.iter().enumerate() {
            let mut targets: Vec<Target> =
                identities(info).filter_map(|i| by_reference.get(i)).flatten().copied().collect();
            targets.sort_unstable();
            targets.dedup();
            chain_targets[rule] = targets;
        }
        let inner_first = order_inner_first(&rules);
        let inner_suppressed = chain_targets
            .iter()
            .map(|targets| !targets.is_empty() && !targets.iter().any(|t: &Target| rules[t.rule].generate))
            .collect();
        let modes = rules.iter().map(Mode::for_rule).collect();
        let groups = rules.iter().map(|_| hashbrown::HashMap::new()).collect();
        let correlator = Correlator {
            rules,
            modes,
            groups,
            by_reference,
            chain_targets,
            inner_suppressed,
            inner_first,
            limits,
            stats: CorrelatorStats::default(),
            watermark_ms: i64::MIN,
            since_sweep: 0,
            key_buffer: String::new(),
            target_buffer: Vec::new(),
            position_buffer: Vec::new(),
        };
        (correlator, problems)
    }

    /// Number of loaded correlation rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The loaded rule behind [`CorrelationMatch::rule_index`].
    ///
    /// # Panics
    /// When `index` is not below [`Correlator::len`] (indices come from matches).
    pub fn rule(&self, index: usize) -> &CorrelationInfo {
        &self.rules[index]
    }

    pub fn rules(&self) -> &[CorrelationInfo] {
        &self.rules
    }

    pub fn stats(&self) -> &CorrelatorStats {
        &self.stats
    }

    /// Groups currently held, over all rules (for monitoring memory).
    pub fn group_count(&self) -> usize {
        self.groups.iter().map(hashbrown::HashMap::len).sum()
    }

    fn targets_for(&self, r: RuleRef<'_>, into: &mut Vec<Target>) {
        into.clear();
        for reference in r.id.into_iter().chain(r.name) {
            if let Some(targets) = self.by_reference.get(reference) {
                into.extend_from_slice(targets);
            }
        }
        if into.len() > 1 {
            into.sort_unstable();
            into.dedup();
        }
    }

    /// Does any loaded correlation rule reference this rule (by id or name)?
    pub fn is_referenced(&self, r: RuleRef<'_>) -> bool {
        r.id.into_iter().chain(r.name).any(|reference| self.by_reference.contains_key(reference))
    }

    /// The spec's `generate`: a rule referenced by correlations is not reported on its own
    /// unless one of the correlations referencing it sets `generate: true`. Rules no
    /// correlation references are never suppressed.
    pub fn suppress_generated(&self, r: RuleRef<'_>) -> bool {
        let mut targets = Vec::new();
        self.targets_for(r, &mut targets);
        !targets.is_empty() && !targets.iter().any(|t| self.rules[t.rule].generate)
    }

    /// Feed one detection match. Matches completed by it (and by chains it triggers) are
    /// appended to `out`; windows of other groups that have passed are closed as well.
    pub fn observe(
        &mut self,
        r: RuleRef<'_>,
        time_ms: i64,
        event: &Event,
        event_ref: u64,
        out: &mut Vec<CorrelationMatch>,
    ) {
        let mut targets = std::mem::take(&mut self.target_buffer);
        self.targets_for(r, &mut targets);
        if targets.is_empty() {
            self.target_buffer = targets;
            return;
        }
        self.watermark_ms = self.watermark_ms.max(time_ms);
        let mut chained = Vec::new();
        self.observe_targets(&targets, r, time_ms, event, Refs::One(event_ref), out, &mut chained);
        self.target_buffer = targets;
        self.run_chains(chained, out);
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.since_sweep = 0;
            let horizon = self.watermark_ms.saturating_sub(self.limits.allowed_lateness_ms);
            self.sweep(horizon, out);
        }
    }

    /// Declare that event time has reached `now_ms`: windows that ended before it are decided
    /// (conditions with upper bounds such as `lt` are only decidable then) and expired groups
    /// are dropped. At the end of input call `flush(i64::MAX, ..)`.
    pub fn flush(&mut self, now_ms: i64, out: &mut Vec<CorrelationMatch>) {
        self.watermark_ms = self.watermark_ms.max(now_ms);
        self.since_sweep = 0;
        self.sweep(now_ms, out);
    }

    fn run_chains(&mut self, mut chained: Vec<Chained>, out: &mut Vec<CorrelationMatch>) {
        let mut targets = Vec::new();
        while let Some(item) = chained.pop() {
            targets.clear();
            targets.extend_from_slice(&self.chain_targets[item.rule]);
            let id = self.rules[item.rule].id.clone();
            let name = self.rules[item.rule].name.clone();
            let r = RuleRef { id: id.as_deref(), name: name.as_deref() };
            let mut next = Vec::new();
            self.observe_targets(&targets, r, item.time_ms, &item.event, item.refs, out, &mut next);
            chained.append(&mut next);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn observe_targets(
        &mut self,
        targets: &[Target],
        r: RuleRef<'_>,
        time_ms: i64,
        event: &Event,
        refs: Refs,
        out: &mut Vec<CorrelationMatch>,
        chained: &mut Vec<Chained>,
    ) {
        // Targets are sorted by rule then position; each rule sees the event once, with all
        // the positions it fills (a rule may be listed under its id and its name).
        let mut positions = std::mem::take(&mut self.position_buffer);
        let mut start = 0;
        while start < targets.len() {
            let rule = targets[start].rule;
            let mut end = start;
            positions.clear();
            while end < targets.len() && targets[end].rule == rule {
                positions.push(targets[end].position);
                end += 1;
            }
            start = end;
            self.stats.observations += 1;
            let mut fired = Vec::new();
            self.observe_rule(rule, &positions, r, time_ms, event, &refs, out, &mut fired);
            for found in fired {
                self.emit(rule, found, Some(event), out, chained);
            }
        }
        self.position_buffer = positions;
    }

    #[allow(clippy::too_many_arguments)]
    fn observe_rule(
        &mut self,
        rule: usize,
        positions: &[usize],
        r: RuleRef<'_>,
        time_ms: i64,
        event: &Event,
        refs: &Refs,
        out: &mut Vec<CorrelationMatch>,
        fired: &mut Vec<CorrelationMatch>,
    ) {
        let info = &self.rules[rule];
        // What the window aggregates besides the count: a number or a distinct-value key.
        let mut value_key = None;
        let mut numeric = 0.0;
        if info.kind.needs_field() {
            let mut found = true;
            if matches!(info.kind, CorrelationType::ValueSum | CorrelationType::ValueAvg) {
                match event.get(resolve_alias(info, &info.fields[0], r)).and_then(numeric_value) {
                    Some(v) => numeric = v,
                    None => found = false,
                }
            } else {
                let mut text = String::new();
                for field in &info.fields {
                    match event.get(resolve_alias(info, field, r)) {
                        Some(value) if !value.is_null() => group_key(&mut text, value),
                        _ => found = false,
                    }
                }
                value_key = Some(text.into_boxed_str());
            }
            if !found {
                self.stats.missing_value_field += 1;
                return;
            }
        }

        let mut key = std::mem::take(&mut self.key_buffer);
        key.clear();
        let mut has_list = false;
        for group_by in &info.group_by {
            match event.get(resolve_alias(info, group_by, r)) {
                Some(Value::Array(items)) if !items.iter().all(Value::is_null) => has_list = true,
                Some(value) if !value.is_null() && !value.is_array() => group_key(&mut key, value),
                _ => {
                    self.stats.missing_group_field += 1;
                    self.key_buffer = key;
                    return;
                }
            }
        }
        if !has_list {
            let found = self.observe_group(
                rule,
                &key,
                GroupValues::FromEvent(event, r),
                positions,
                time_ms,
                refs,
                value_key,
                numeric,
                out,
            );
            fired.extend(found);
            self.key_buffer = key;
            return;
        }
        // A list value (`host.ip: [v4, v6]`) puts the event in the group of each element, so
        // it meets events that carry any one of them.
        let mut combos: Vec<Vec<Value>> = vec![Vec::new()];
        for group_by in &info.group_by {
            let choices: Vec<&Value> = match event.get(resolve_alias(info, group_by, r)) {
                Some(Value::Array(items)) => items.iter().filter(|v| !v.is_null()).collect(),
                Some(value) => vec![value],
                None => Vec::new(),
            };
            let mut next = Vec::new();
            for combo in &combos {
                for choice in &choices {
                    if next.len() == MAX_GROUPS_PER_EVENT {
                        self.stats.truncated_entries += 1;
                        break;
                    }
                    let mut extended = combo.clone();
                    extended.push((*choice).clone());
                    next.push(extended);
                }
            }
            combos = next;
        }
        for values in combos {
            key.clear();
            values.iter().for_each(|v| group_key(&mut key, v));
            let found = self.observe_group(
                rule,
                &key,
                GroupValues::Given(values),
                positions,
                time_ms,
                refs,
                value_key.clone(),
                numeric,
                out,
            );
            fired.extend(found);
        }
        self.key_buffer = key;
    }

    #[allow(clippy::too_many_arguments)]
    fn observe_group(
        &mut self,
        rule: usize,
        key: &str,
        values: GroupValues<'_>,
        positions: &[usize],
        time_ms: i64,
        refs: &Refs,
        value_key: Option<Box<str>>,
        numeric: f64,
        out: &mut Vec<CorrelationMatch>,
    ) -> Option<CorrelationMatch> {
        if self.groups[rule].len() >= self.limits.max_groups_per_rule && !self.groups[rule].contains_key(key)
        {
            self.make_room(rule, out);
        }
        let mode = self.modes[rule];
        let info = &self.rules[rule];
        let group = self.groups[rule].entry_ref(key).or_insert_with(|| {
            let values = match values {
                GroupValues::Given(values) => values,
                GroupValues::FromEvent(event, r) => info
                    .group_by
                    .iter()
                    .map(|g| event.get(resolve_alias(info, g, r)).cloned().unwrap_or(Value::Null))
                    .collect(),
            };
            Group::new(values, mode, info.rules.len(), time_ms)
        });
        let step = Step {
            rule,
            info: &self.rules[rule],
            mode: self.modes[rule],
            limits: &self.limits,
            positions,
            time_ms,
            refs,
            value_key,
            numeric,
        };
        let outcome = group.observe(step, &mut self.stats);
        if let Some(closed) = outcome.closed {
            // The group's previous window ended before this event: report it first.
            let mut chained = Vec::new();
            self.emit(rule, closed, None, out, &mut chained);
            self.run_chains(chained, out);
        }
        outcome.fired
    }

    fn emit(
        &mut self,
        rule: usize,
        found: CorrelationMatch,
        event: Option<&Event>,
        out: &mut Vec<CorrelationMatch>,
        chained: &mut Vec<Chained>,
    ) {
        self.stats.matches += 1;
        if !self.chain_targets[rule].is_empty() {
            // The outer correlation sees the triggering event with the group values on top,
            // so it can group by the inner group-by fields or by any other event field.
            let mut chain_event = event.cloned().unwrap_or_default();
            for (name, value) in &found.group {
                chain_event.insert(name.clone(), value.clone());
            }
            chained.push(Chained {
                rule,
                time_ms: found.last_ms,
                event: chain_event,
                refs: Refs::from_slice(&found.event_refs),
            });
        }
        if !self.inner_suppressed[rule] {
            out.push(found);
        }
    }

    /// A rule is at its group cap: decide what has passed, then evict the least recently
    /// active groups (a sixteenth, so that eviction is not paid for every new group).
    fn make_room(&mut self, rule: usize, out: &mut Vec<CorrelationMatch>) {
        let horizon = self.watermark_ms.saturating_sub(self.limits.allowed_lateness_ms);
        self.sweep(horizon, out);
        let groups = &mut self.groups[rule];
        if groups.is_empty() || groups.len() < self.limits.max_groups_per_rule {
            return;
        }
        let evict = (groups.len() / 16).max(1);
        let mut activity: Vec<i64> = groups.values().map(|g| g.last_ms).collect();
        let (_, cutoff, _) = activity.select_nth_unstable(evict - 1);
        let cutoff = *cutoff;
        let mut left = evict;
        groups.retain(|_, g| {
            if left > 0 && g.last_ms <= cutoff {
                left -= 1;
                false
            } else {
                true
            }
        });
        self.stats.evicted_groups += (evict - left) as u64;
    }

    /// Close windows that ended before `horizon_ms` and drop groups that can no longer match.
    fn sweep(&mut self, horizon_ms: i64, out: &mut Vec<CorrelationMatch>) {
        for order in 0..self.inner_first.len() {
            let rule = self.inner_first[order];
            let info = &self.rules[rule];
            let limits = &self.limits;
            let mut decided = Vec::new();
            self.groups[rule].retain(|_, group| {
                let ends = group.window_start_ms().saturating_add(info.timespan_ms);
                // `i64::MAX` is the end of input: even windows at the end of time are over.
                if ends >= horizon_ms && horizon_ms != i64::MAX {
                    return true;
                }
                decided.extend(group.close(rule, info, limits));
                false
            });
            let mut chained = Vec::new();
            for found in decided {
                self.emit(rule, found, None, out, &mut chained);
            }
            self.run_chains(chained, out);
        }
    }
}

fn resolve_alias<'s>(info: &'s CorrelationInfo, name: &'s str, r: RuleRef<'s>) -> &'s str {
    if let Some(per_rule) = info.aliases.get(name) {
        for key in r.name.into_iter().chain(r.id) {
            if let Some(field) = per_rule.get(key) {
                return field;
            }
        }
    }
    name
}

/// Refuse rules that reference correlation rules which did not load, and rules whose chain
/// references loop back to themselves; repeat until what is left is consistent.
fn drop_broken_chains(
    mut rules: Vec<CorrelationInfo>,
    failed: &mut HashSet<String>,
    problems: &mut Vec<LoadProblem>,
) -> Vec<CorrelationInfo> {
    loop {
        let before = rules.len();
        let mut kept = Vec::with_capacity(rules.len());
        for info in rules {
            if let Some(missing) = info.rules.iter().find(|r| failed.contains(*r)) {
                failed.extend(identities(&info).map(str::to_string));
                problems.push(LoadProblem {
                    origin: info.origin.clone(),
                    rule: Some(info.label()),
                    reason: format!("references correlation rule {missing:?}, which did not load"),
                });
            } else {
                kept.push(info);
            }
        }
        rules = kept;
        if let Some(cycle) = find_cycle(&rules) {
            let path: Vec<String> = cycle
                .iter()
                .map(|&i| {
                    let info = &rules[i];
                    info.name.clone().or(info.id.clone()).unwrap_or(info.title.clone())
                })
                .collect();
            let mut on_cycle: Vec<usize> = cycle.clone();
            on_cycle.sort_unstable();
            on_cycle.dedup();
            for &i in on_cycle.iter().rev() {
                let info = rules.remove(i);
                failed.extend(identities(&info).map(str::to_string));
                problems.push(LoadProblem {
                    origin: info.origin.clone(),
                    rule: Some(info.label()),
                    reason: format!("correlation chain loops back on itself: {}", path.join(" → ")),
                });
            }
            continue;
        }
        if rules.len() == before {
            return rules;
        }
    }
}

/// Edges from each rule to the correlation rules it references.
fn references(rules: &[CorrelationInfo]) -> Vec<Vec<usize>> {
    let mut by_identity: HashMap<&str, usize> = HashMap::new();
    for (i, info) in rules.iter().enumerate() {
        for identity in identities(info) {
            by_identity.insert(identity, i);
        }
    }
    rules
        .iter()
        .map(|info| info.rules.iter().filter_map(|r| by_identity.get(r.as_str()).copied()).collect())
        .collect()
}

/// A cycle as a path of rule indices (first repeated at the end), if any.
fn find_cycle(rules: &[CorrelationInfo]) -> Option<Vec<usize>> {
    let edges = references(rules);
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state = vec![0u8; rules.len()];
    for root in 0..rules.len() {
        if state[root] != 0 {
            continue;
        }
        let mut path = vec![root];
        let mut next_edge = vec![0usize];
        state[root] = 1;
        while let Some(&node) = path.last() {
            let edge = next_edge.last().copied().unwrap_or(0);
            if let Some(&to) = edges[node].get(edge) {
                if let Some(slot) = next_edge.last_mut() {
                    *slot += 1;
                }
                match state[to] {
                    0 => {
                        state[to] = 1;
                        path.push(to);
                        next_edge.push(0);
                    }
                    1 => {
                        let from = path.iter().position(|&p| p == to).unwrap_or(0);
                        let mut cycle = path[from..].to_vec();
                        cycle.push(to);
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                path.pop();
                next_edge.pop();
            }
        }
    }
    None
}

/// Post-order over the (acyclic) reference graph: referenced rules first.
fn order_inner_first(rules: &[CorrelationInfo]) -> Vec<usize> {
    let edges = references(rules);
    let mut done = vec![false; rules.len()];
    let mut order = Vec::with_capacity(rules.len());
    for root in 0..rules.len() {
        if done[root] {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        done[root] = true;
        while let Some((node, edge)) = stack.pop() {
            if let Some(&to) = edges[node].get(edge) {
                stack.push((node, edge + 1));
                if !done[to] {
                    done[to] = true;
                    stack.push((to, 0));
                }
            } else {
                order.push(node);
            }
        }
    }
    order
}
