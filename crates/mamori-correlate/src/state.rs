//! Per-group window state, one kind per evaluation mode.
//!
//! Time semantics shared by all modes: a group's clock is the newest event time it has seen.
//! A window covers `[newest - timespan, newest]` (both ends included, so "within 10 minutes"
//! accepts exactly 10:00 apart). Events older than that are late and counted, not used.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;

use serde_json::Value;

use crate::engine::{CorrelationMatch, CorrelatorStats, Limits};
use crate::rule::{CorrelationInfo, CorrelationType};

/// How a rule's condition is decided in a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// event_count with only gt/gte: decided at the event that reaches the bound.
    SlidingCount,
    /// value_count with only gt/gte.
    SlidingDistinct,
    /// value_sum with only gt/gte.
    SlidingSum,
    /// value_percentile: each event's value against the group's window.
    Percentile,
    /// Upper bounds (lt, lte, eq, neq) and value_avg: the window that opens at a group's
    /// first event is decided once it has closed.
    Window,
    Temporal,
    Ordered,
}

impl Mode {
    pub(crate) fn for_rule(info: &CorrelationInfo) -> Mode {
        let lower_only = info.condition.only_lower_bounds();
        match info.kind {
            CorrelationType::EventCount if lower_only => Mode::SlidingCount,
            CorrelationType::ValueCount if lower_only => Mode::SlidingDistinct,
            CorrelationType::ValueSum if lower_only => Mode::SlidingSum,
            CorrelationType::EventCount
            | CorrelationType::ValueCount
            | CorrelationType::ValueSum
            | CorrelationType::ValueAvg => Mode::Window,
            CorrelationType::ValuePercentile => Mode::Percentile,
            CorrelationType::Temporal => Mode::Temporal,
            CorrelationType::TemporalOrdered => Mode::Ordered,
        }
    }
}

/// Caller event ids of one observation: one for a detection, several for a chained match.
#[derive(Debug, Clone)]
pub(crate) enum Refs {
    One(u64),
    Many(Box<[u64]>),
}

impl Refs {
    pub(crate) fn from_slice(refs: &[u64]) -> Refs {
        match refs {
            [one] => Refs::One(*one),
            many => Refs::Many(many.into()),
        }
    }

    fn as_slice(&self) -> &[u64] {
        match self {
            Refs::One(one) => std::slice::from_ref(one),
            Refs::Many(many) => many,
        }
    }
}

/// Keep the earliest and the latest half when there are more than `cap` ids.
fn bounded(mut refs: Vec<u64>, cap: usize) -> Vec<u64> {
    if refs.len() > cap {
        let head = cap / 2;
        let tail = cap - head;
        let drop_to = refs.len() - tail;
        refs.drain(head..drop_to);
    }
    refs
}

/// Head-and-tail sample of ids for windows that do not keep their entries.
#[derive(Debug, Default)]
struct RefSample {
    head: Vec<u64>,
    tail: VecDeque<u64>,
}

impl RefSample {
    fn push(&mut self, refs: &Refs, cap: usize) {
        for &id in refs.as_slice() {
            if self.head.len() < cap / 2 {
                self.head.push(id);
            } else {
                self.tail.push_back(id);
                if self.tail.len() > cap - cap / 2 {
                    self.tail.pop_front();
                }
            }
        }
    }

    fn to_vec(&self) -> Vec<u64> {
        self.head.iter().chain(&self.tail).copied().collect()
    }
}

/// Append one value to a key: its text with `|` and `\` escaped, then `|`. Numbers and
/// strings with the same text share a key, so `EventID: 4624` from EVTX and `"4624"` from a
/// text log group together.
pub(crate) fn group_key(out: &mut String, value: &Value) {
    match value {
        Value::String(s) => push_escaped(out, s),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Null => {}
        other => push_escaped(out, &other.to_string()),
    }
    out.push('|');
}

fn push_escaped(out: &mut String, text: &str) {
    if !text.contains(['|', '\\']) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        if c == '|' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
}

/// A number, or a string holding one (text logs often carry byte counts as strings).
pub(crate) fn numeric_value(value: &Value) -> Option<f64> {
    let number = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    number.filter(|n| n.is_finite())
}

#[derive(Debug)]
struct Entry {
    time_ms: i64,
    refs: Refs,
    numeric: f64,
    key: Option<Box<str>>,
}

#[derive(Debug, Default)]
pub(crate) struct Sliding {
    /// Sorted by time; out-of-order arrivals are inserted in place.
    entries: VecDeque<Entry>,
    sum: f64,
    /// Occurrences per distinct value among `entries`.
    distinct: HashMap<Box<str>, u32>,
}

impl Sliding {
    fn insert(&mut self, entry: Entry) {
        self.sum += entry.numeric;
        if let Some(key) = &entry.key {
            *self.distinct.entry(key.clone()).or_insert(0) += 1;
        }
        let in_order = self.entries.back().is_none_or(|last| last.time_ms <= entry.time_ms);
        if in_order {
            self.entries.push_back(entry);
        } else {
            let at = self.entries.partition_point(|e| e.time_ms <= entry.time_ms);
            self.entries.insert(at, entry);
        }
    }

    fn pop_oldest(&mut self) {
        if let Some(old) = self.entries.pop_front() {
            self.sum -= old.numeric;
            if let Some(key) = old.key {
                if let Some(n) = self.distinct.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        self.distinct.remove(&key);
                    }
                }
            }
        }
    }

    fn prune_before(&mut self, oldest_ms: i64) {
        while self.entries.front().is_some_and(|e| e.time_ms < oldest_ms) {
            self.pop_oldest();
        }
        if self.entries.is_empty() {
            // Drop accumulated rounding error with the last entry.
            self.sum = 0.0;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.distinct.clear();
        self.sum = 0.0;
    }

    fn refs(&self, cap: usize) -> Vec<u64> {
        let all = self.entries.iter().flat_map(|e| e.refs.as_slice().iter().copied()).collect();
        bounded(all, cap)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Window {
    first_ms: i64,
    last_ms: i64,
    count: u64,
    sum: f64,
    distinct: HashSet<Box<str>>,
    refs: RefSample,
}

#[derive(Debug, Clone)]
pub(crate) struct Stage {
    start_ms: i64,
    end_ms: i64,
    refs: Vec<u64>,
}

#[derive(Debug)]
pub(crate) enum GroupBody {
    Sliding(Sliding),
    Window(Window),
    /// Per referenced rule: newest time seen and its ids.
    Temporal(Vec<Option<(i64, Refs)>>),
    /// Per position `p`: the in-order chain through rules `0..=p` with the latest start.
    Ordered(Vec<Option<Stage>>),
}

#[derive(Debug)]
pub(crate) struct Group {
    /// The `group-by` values, for reporting.
    pub(crate) values: Vec<Value>,
    /// Newest event time seen by this group.
    pub(crate) last_ms: i64,
    pub(crate) body: GroupBody,
}

/// One observation as a group sees it.
pub(crate) struct Step<'a> {
    pub(crate) rule: usize,
    pub(crate) info: &'a CorrelationInfo,
    pub(crate) mode: Mode,
    pub(crate) limits: &'a Limits,
    /// Positions in `rules` that the observed rule fills.
    pub(crate) positions: &'a [usize],
    pub(crate) time_ms: i64,
    pub(crate) refs: &'a Refs,
    pub(crate) value_key: Option<Box<str>>,
    pub(crate) numeric: f64,
}

#[derive(Default)]
pub(crate) struct Outcome {
    /// The group's previous window, decided because this event is past its end.
    pub(crate) closed: Option<CorrelationMatch>,
    /// The condition held at this event.
    pub(crate) fired: Option<CorrelationMatch>,
}

impl Group {
    pub(crate) fn new(values: Vec<Value>, mode: Mode, rule_count: usize, time_ms: i64) -> Group {
        let body = match mode {
            Mode::SlidingCount | Mode::SlidingDistinct | Mode::SlidingSum | Mode::Percentile => {
                GroupBody::Sliding(Sliding::default())
            }
            Mode::Window => GroupBody::Window(Window::default()),
            Mode::Temporal => GroupBody::Temporal(vec![None; rule_count]),
            Mode::Ordered => GroupBody::Ordered(vec![None; rule_count]),
        };
        Group { values, last_ms: time_ms, body }
    }

    /// Start of the window that decides whether this group can still matter.
    pub(crate) fn window_start_ms(&self) -> i64 {
        match &self.body {
            GroupBody::Window(w) if w.count > 0 => w.first_ms,
            _ => self.last_ms,
        }
    }

    fn found(
        &self,
        step_rule: usize,
        info: &CorrelationInfo,
        span: (i64, i64),
        count: u64,
        value: Option<f64>,
        event_refs: Vec<u64>,
    ) -> CorrelationMatch {
        CorrelationMatch {
            rule_index: step_rule,
            group: info.group_by.iter().cloned().zip(self.values.iter().cloned()).collect(),
            first_ms: span.0,
            last_ms: span.1,
            count,
            value,
            event_refs,
        }
    }

    pub(crate) fn observe(&mut self, step: Step<'_>, stats: &mut CorrelatorStats) -> Outcome {
        let span = step.info.timespan_ms;
        let t = step.time_ms;
        let mut outcome = Outcome::default();
        if let GroupBody::Window(_) = self.body {
            return self.observe_window(step, stats);
        }
        let newest = self.last_ms.max(t);
        let oldest_allowed = newest.saturating_sub(span);
        if t < oldest_allowed {
            stats.late_dropped += 1;
            return outcome;
        }
        self.last_ms = newest;
        let cap = step.limits.max_event_refs;
        match &mut self.body {
            GroupBody::Sliding(s) => {
                s.insert(Entry {
                    time_ms: t,
                    refs: step.refs.clone(),
                    numeric: step.numeric,
                    key: step.value_key.clone(),
                });
                while s.entries.len() > step.limits.max_entries_per_group {
                    s.pop_oldest();
                    stats.truncated_entries += 1;
                }
                s.prune_before(oldest_allowed);
                let count = s.entries.len() as u64;
                let (metric, value) = match step.mode {
                    Mode::SlidingCount => (count as f64, None),
                    Mode::SlidingDistinct => {
                        let d = s.distinct.len() as f64;
                        (d, Some(d))
                    }
                    Mode::SlidingSum => (s.sum, Some(s.sum)),
                    _ => {
                        let same =
                            step.value_key.as_ref().and_then(|k| s.distinct.get(k)).copied().unwrap_or(0);
                        let share = 100.0 * f64::from(same) / count.max(1) as f64;
                        (share, Some(share))
                    }
                };
                if step.info.condition.holds(metric) {
                    let first = s.entries.front().map_or(t, |e| e.time_ms);
                    let last = s.entries.back().map_or(t, |e| e.time_ms);
                    if step.mode == Mode::Percentile {
                        // The rare event is the finding; the window stays as the baseline.
                        let refs = bounded(step.refs.as_slice().to_vec(), cap);
                        outcome.fired =
                            Some(self.found(step.rule, step.info, (first, last), count, value, refs));
                    } else {
                        let refs = s.refs(cap);
                        s.clear();
                        outcome.fired =
                            Some(self.found(step.rule, step.info, (first, last), count, value, refs));
                    }
                }
            }
            GroupBody::Temporal(seen) => {
                for &p in step.positions {
                    let newer = seen[p].as_ref().is_none_or(|(at, _)| *at <= t);
                    if newer {
                        seen[p] = Some((t, step.refs.clone()));
                    }
                }
                for slot in seen.iter_mut() {
                    if slot.as_ref().is_some_and(|(at, _)| *at < oldest_allowed) {
                        *slot = None;
                    }
                }
                let count = seen.iter().flatten().count();
                if step.info.condition.holds(count as f64) {
                    let times = seen.iter().flatten().map(|(at, _)| *at);
                    let first = times.clone().min().unwrap_or(t);
                    let last = times.max().unwrap_or(t);
                    let mut ordered: Vec<&(i64, Refs)> = seen.iter().flatten().collect();
                    ordered.sort_by_key(|(at, _)| *at);
                    let refs = ordered.iter().flat_map(|(_, r)| r.as_slice().iter().copied()).collect();
                    seen.iter_mut().for_each(|slot| *slot = None);
                    outcome.fired = Some(self.found(
                        step.rule,
                        step.info,
                        (first, last),
                        count as u64,
                        None,
                        bounded(refs, cap),
                    ));
                }
            }
            GroupBody::Ordered(stages) => {
                // Highest position first, so one event cannot fill two consecutive steps.
                for &p in step.positions.iter().rev() {
                    let candidate = if p == 0 {
                        Some(Stage {
                            start_ms: t,
                            end_ms: t,
                            refs: bounded(step.refs.as_slice().to_vec(), cap),
                        })
                    } else {
                        stages[p - 1]
                            .as_ref()
                            .filter(|prev| prev.end_ms <= t && t.saturating_sub(prev.start_ms) <= span)
                            .map(|prev| {
                                let mut refs = prev.refs.clone();
                                refs.extend_from_slice(step.refs.as_slice());
                                Stage { start_ms: prev.start_ms, end_ms: t, refs: bounded(refs, cap) }
                            })
                    };
                    if let Some(candidate) = candidate {
                        // A later start leaves more room for the remaining steps.
                        let better = stages[p].as_ref().is_none_or(|old| candidate.start_ms >= old.start_ms);
                        if better {
                            stages[p] = Some(candidate);
                        }
                    }
                }
                for slot in stages.iter_mut() {
                    if slot.as_ref().is_some_and(|s| s.start_ms < oldest_allowed) {
                        *slot = None;
                    }
                }
                let reached = stages.iter().rposition(Option::is_some).map_or(0, |p| p + 1);
                if reached > 0 && step.info.condition.holds(reached as f64) {
                    let done = stages[reached - 1].clone();
                    stages.iter_mut().for_each(|slot| *slot = None);
                    if let Some(done) = done {
                        outcome.fired = Some(self.found(
                            step.rule,
                            step.info,
                            (done.start_ms, done.end_ms),
                            reached as u64,
                            None,
                            done.refs,
                        ));
                    }
                }
            }
            GroupBody::Window(_) => {}
        }
        outcome
    }

    fn observe_window(&mut self, step: Step<'_>, stats: &mut CorrelatorStats) -> Outcome {
        let span = step.info.timespan_ms;
        let t = step.time_ms;
        let mut outcome = Outcome::default();
        let window_ended = match &self.body {
            GroupBody::Window(w) => w.count > 0 && t > w.first_ms.saturating_add(span),
            _ => false,
        };
        if window_ended {
            outcome.closed = self.close(step.rule, step.info, step.limits);
        }
        self.last_ms = self.last_ms.max(t);
        let GroupBody::Window(w) = &mut self.body else {
            return outcome;
        };
        if w.count == 0 {
            w.first_ms = t;
            w.last_ms = t;
        } else if t < w.first_ms {
            // Late, but still within one timespan of everything seen: the window widens back.
            if w.last_ms.saturating_sub(t) <= span {
                w.first_ms = t;
            } else {
                stats.late_dropped += 1;
                return outcome;
            }
        }
        w.last_ms = w.last_ms.max(t);
        w.count += 1;
        w.sum += step.numeric;
        if let Some(key) = step.value_key {
            if w.distinct.len() < step.limits.max_entries_per_group || w.distinct.contains(&key) {
                w.distinct.insert(key);
            } else {
                stats.truncated_entries += 1;
            }
        }
        w.refs.push(step.refs, step.limits.max_event_refs);
        outcome
    }

    /// Decide and reset a window-mode group; `None` for other modes or when the condition
    /// does not hold.
    pub(crate) fn close(
        &mut self,
        rule: usize,
        info: &CorrelationInfo,
        _limits: &Limits,
    ) -> Option<CorrelationMatch> {
        let GroupBody::Window(w) = &mut self.body else {
            return None;
        };
        if w.count == 0 {
            return None;
        }
        let window = std::mem::take(w);
        let (metric, value) = match info.kind {
            CorrelationType::EventCount => (window.count as f64, None),
            CorrelationType::ValueCount => {
                let d = window.distinct.len() as f64;
                (d, Some(d))
            }
            CorrelationType::ValueSum => (window.sum, Some(window.sum)),
            _ => {
                let avg = window.sum / window.count as f64;
                (avg, Some(avg))
            }
        };
        if !info.condition.holds(metric) {
            return None;
        }
        Some(self.found(
            rule,
            info,
            (window.first_ms, window.last_ms),
            window.count,
            value,
            window.refs.to_vec(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_unambiguous_and_text_based() {
        let key = |values: &[Value]| {
            let mut k = String::new();
            values.iter().for_each(|v| group_key(&mut k, v));
            k
        };
        assert_eq!(key(&[json!(4624)]), key(&[json!("4624")]));
        assert_ne!(key(&[json!("a|b"), json!("c")]), key(&[json!("a"), json!("b|c")]));
        assert_ne!(key(&[json!("a\\"), json!("b")]), key(&[json!("a"), json!("\\b")]));
    }

    #[test]
    fn bounded_keeps_head_and_tail() {
        assert_eq!(bounded((1..=10).collect(), 4), vec![1, 2, 9, 10]);
        assert_eq!(bounded(vec![1, 2], 4), vec![1, 2]);
        let mut sample = RefSample::default();
        for i in 1..=10 {
            sample.push(&Refs::One(i), 4);
        }
        assert_eq!(sample.to_vec(), vec![1, 2, 9, 10]);
    }

    #[test]
    fn numbers_from_strings() {
        assert_eq!(numeric_value(&json!("1500")), Some(1500.0));
        assert_eq!(numeric_value(&json!(2.5)), Some(2.5));
        assert_eq!(numeric_value(&json!("n/a")), None);
        assert_eq!(numeric_value(&json!("NaN")), None);
        assert_eq!(numeric_value(&json!(true)), None);
    }
}
