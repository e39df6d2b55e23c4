//! Parsing and validation of one Sigma correlation document (specification v2.1.0).
//!
//! Input is a `serde_json::Value` (the loader converts YAML to JSON). Every check produces a
//! sentence that names the offending attribute, so a rule author can fix the rule without
//! reading this code.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde_json::{Map, Value};

/// The seven correlation types of the specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CorrelationType {
    EventCount,
    ValueCount,
    Temporal,
    TemporalOrdered,
    ValueSum,
    ValueAvg,
    ValuePercentile,
}

impl CorrelationType {
    /// The spelling used in rule files.
    pub fn as_str(self) -> &'static str {
        match self {
            CorrelationType::EventCount => "event_count",
            CorrelationType::ValueCount => "value_count",
            CorrelationType::Temporal => "temporal",
            CorrelationType::TemporalOrdered => "temporal_ordered",
            CorrelationType::ValueSum => "value_sum",
            CorrelationType::ValueAvg => "value_avg",
            CorrelationType::ValuePercentile => "value_percentile",
        }
    }

    fn parse(text: &str) -> Option<CorrelationType> {
        Some(match text {
            "event_count" => CorrelationType::EventCount,
            "value_count" => CorrelationType::ValueCount,
            "temporal" => CorrelationType::Temporal,
            "temporal_ordered" => CorrelationType::TemporalOrdered,
            "value_sum" => CorrelationType::ValueSum,
            "value_avg" => CorrelationType::ValueAvg,
            "value_percentile" => CorrelationType::ValuePercentile,
            _ => return None,
        })
    }

    /// Types whose condition is about a `field` of the events.
    pub fn needs_field(self) -> bool {
        matches!(
            self,
            CorrelationType::ValueCount
                | CorrelationType::ValueSum
                | CorrelationType::ValueAvg
                | CorrelationType::ValuePercentile
        )
    }

    fn is_temporal(self) -> bool {
        matches!(self, CorrelationType::Temporal | CorrelationType::TemporalOrdered)
    }
}

impl fmt::Display for CorrelationType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The comparison part of a `condition` map; all present bounds must hold (AND).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Condition {
    pub gt: Option<f64>,
    pub gte: Option<f64>,
    pub lt: Option<f64>,
    pub lte: Option<f64>,
    pub eq: Option<f64>,
    pub neq: Option<f64>,
}

impl Condition {
    /// The default condition of `temporal`/`temporal_ordered`: every referenced rule was seen.
    fn at_least(count: usize) -> Condition {
        Condition { gte: Some(count as f64), ..Condition::default() }
    }

    pub fn holds(&self, value: f64) -> bool {
        self.gt.is_none_or(|b| value > b)
            && self.gte.is_none_or(|b| value >= b)
            && self.lt.is_none_or(|b| value < b)
            && self.lte.is_none_or(|b| value <= b)
            && self.eq.is_none_or(|b| value == b)
            && self.neq.is_none_or(|b| value != b)
    }

    /// True when the condition only says "at least": once it holds for a growing count it
    /// keeps holding, so a stream can decide it at the event that crosses the bound instead of
    /// waiting for the window to close.
    pub fn only_lower_bounds(&self) -> bool {
        self.lt.is_none() && self.lte.is_none() && self.eq.is_none() && self.neq.is_none()
    }

    fn is_empty(&self) -> bool {
        *self == Condition::default()
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            ("gt", self.gt),
            ("gte", self.gte),
            ("lt", self.lt),
            ("lte", self.lte),
            ("eq", self.eq),
            ("neq", self.neq),
        ];
        let mut first = true;
        for (name, bound) in parts {
            if let Some(bound) = bound {
                if !first {
                    f.write_str(" and ")?;
                }
                write!(f, "{name} {bound}")?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Everything the engine and its callers need to know about one loaded correlation rule.
#[derive(Debug, Clone)]
pub struct CorrelationInfo {
    pub origin: PathBuf,
    pub id: Option<String>,
    pub name: Option<String>,
    pub title: String,
    pub description: Option<String>,
    pub status: Option<String>,
    pub level: Option<String>,
    pub tags: Vec<String>,
    pub kind: CorrelationType,
    /// The `rules` references (ids or names), in the order given.
    pub rules: Vec<String>,
    /// The `group-by` names as written (possibly aliases).
    pub group_by: Vec<String>,
    pub timespan_ms: i64,
    /// The `timespan` as written, for display.
    pub timespan_text: String,
    /// For temporal types without a condition: at least every referenced rule.
    pub condition: Condition,
    /// `condition.field` (value_* types); several fields form one combined value.
    pub fields: Vec<String>,
    /// alias name → (referenced rule name or id → event field name).
    pub aliases: BTreeMap<String, BTreeMap<String, String>>,
    /// The spec's `generate`: referenced rules also stand alone when true.
    pub generate: bool,
}

impl CorrelationInfo {
    /// A label for messages: the title, with the id when there is one.
    pub fn label(&self) -> String {
        match &self.id {
            Some(id) => format!("{} ({id})", self.title),
            None => self.title.clone(),
        }
    }
}

/// Longest accepted `timespan` text; the schema allows 10 characters.
const MAX_TIMESPAN_CHARS: usize = 10;
const MAX_TITLE_CHARS: usize = 256;

/// Parse a `timespan` such as `90m` into milliseconds.
///
/// The spec defines s, m, h and d; `w` (week) is accepted as well because pySigma does. Month
/// and year are refused: their length varies, so a window over them has no single meaning.
pub fn parse_timespan(text: &str) -> Result<i64, String> {
    if text.chars().count() > MAX_TIMESPAN_CHARS {
        return Err(format!("`timespan` {text:?} is longer than {MAX_TIMESPAN_CHARS} characters"));
    }
    let Some(unit) = text.chars().last() else {
        return Err("`timespan` is empty".to_string());
    };
    let digits = &text[..text.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`timespan` {text:?} is not a number followed by a unit (s, m, h, d or w), e.g. `90m`"
        ));
    }
    let unit_ms: i64 = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        'w' => 7 * 86_400_000,
        'M' | 'y' | 'Y' => {
            return Err(format!("`timespan` {text:?}: months and years have no fixed length; use days (`d`)"))
        }
        _ => {
            return Err(format!(
                "`timespan` {text:?} has unknown unit {unit:?}; use s, m, h, d or w (lowercase)"
            ))
        }
    };
    let amount: i64 = digits.parse().map_err(|_| format!("`timespan` {text:?} is too large"))?;
    if amount == 0 {
        return Err(format!("`timespan` {text:?} is zero"));
    }
    amount.checked_mul(unit_ms).ok_or_else(|| format!("`timespan` {text:?} is too large"))
}

/// Read an optional string attribute.
fn optional_string(map: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("`{key}` must be a string, found {}", json_kind(other))),
    }
}

fn string_list(value: &Value, key: &str) -> Result<Vec<String>, String> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("`{key}` entries must be strings, found {}", json_kind(other))),
            })
            .collect(),
        other => Err(format!("`{key}` must be a list of strings, found {}", json_kind(other))),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

fn reject_duplicates(items: &[String], key: &str) -> Result<(), String> {
    for (i, item) in items.iter().enumerate() {
        if items[..i].contains(item) {
            return Err(format!("`{key}` lists {item:?} twice"));
        }
    }
    Ok(())
}

const LEVELS: [&str; 5] = ["informational", "low", "medium", "high", "critical"];
const STATUSES: [&str; 5] = ["stable", "test", "experimental", "deprecated", "unsupported"];
const CORRELATION_KEYS: [&str; 8] = [
    "type",
    "rules",
    "aliases",
    "group-by",
    "timespan",
    "condition",
    "generate",
    // Not in the spec but written by some authors (`name` belongs at the top level); refused
    // below with a precise message rather than as an unknown key.
    "name",
];

/// Parse one correlation document. `Err` is a reason for a [`crate::LoadProblem`].
pub fn parse_correlation(origin: PathBuf, doc: &Value) -> Result<CorrelationInfo, String> {
    let Value::Object(top) = doc else {
        return Err(format!("a correlation rule must be a map, found {}", json_kind(doc)));
    };
    let title = match top.get("title") {
        Some(Value::String(t)) if !t.trim().is_empty() => t.clone(),
        Some(Value::String(_)) => return Err("`title` is empty".to_string()),
        None => return Err("`title` is missing (mandatory)".to_string()),
        Some(other) => return Err(format!("`title` must be a string, found {}", json_kind(other))),
    };
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(format!("`title` is longer than {MAX_TITLE_CHARS} characters"));
    }
    let id = optional_string(top, "id")?;
    if id.as_deref().is_some_and(|s| s.trim().is_empty()) {
        return Err("`id` is empty".to_string());
    }
    let name = optional_string(top, "name")?;
    if name.as_deref().is_some_and(|s| s.trim().is_empty()) {
        return Err("`name` is empty".to_string());
    }
    let description = optional_string(top, "description")?;
    let status = optional_string(top, "status")?;
    if let Some(status) = &status {
        if !STATUSES.contains(&status.as_str()) {
            return Err(format!("`status` {status:?} is not one of {}", STATUSES.join(", ")));
        }
    }
    let level = optional_string(top, "level")?;
    if let Some(level) = &level {
        if !LEVELS.contains(&level.as_str()) {
            return Err(format!("`level` {level:?} is not one of {}", LEVELS.join(", ")));
        }
    }
    let tags = match top.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => string_list(value, "tags")?,
    };

    let correlation = match top.get("correlation") {
        Some(Value::Object(c)) => c,
        None => return Err("no `correlation` section: this is not a correlation rule".to_string()),
        Some(other) => return Err(format!("`correlation` must be a map, found {}", json_kind(other))),
    };
    for key in correlation.keys() {
        if key == "name" {
            return Err(
                "`correlation.name` is not an attribute; `name` belongs at the top level of the rule"
                    .to_string(),
            );
        }
        if !CORRELATION_KEYS.contains(&key.as_str()) {
            return Err(format!(
                "unknown attribute `correlation.{key}` (expected one of type, rules, aliases, group-by, timespan, condition)"
            ));
        }
    }

    let kind = match correlation.get("type") {
        Some(Value::String(t)) => CorrelationType::parse(t).ok_or_else(|| {
            format!(
                "`correlation.type` {t:?} is not supported (event_count, value_count, temporal, temporal_ordered, value_sum, value_avg, value_percentile)"
            )
        })?,
        None => return Err("`correlation.type` is missing (mandatory)".to_string()),
        Some(other) => {
            return Err(format!(
                "`correlation.type` must be a string, found {}",
                json_kind(other)
            ))
        }
    };

    let rules = match correlation.get("rules") {
        None => return Err("`correlation.rules` is missing (mandatory)".to_string()),
        // A single reference written as a scalar is a common slip; the schema wants a list.
        Some(value) => string_list(value, "correlation.rules")?,
    };
    if rules.is_empty() {
        return Err("`correlation.rules` is empty".to_string());
    }
    if let Some(short) = rules.iter().find(|r| r.trim().chars().count() < 2) {
        return Err(format!("`correlation.rules` entry {short:?} is too short to be a rule id or name"));
    }
    reject_duplicates(&rules, "correlation.rules")?;
    if kind == CorrelationType::TemporalOrdered && rules.len() < 2 {
        return Err("`temporal_ordered` needs at least two rules to order".to_string());
    }

    let group_by = match correlation.get("group-by") {
        None => {
            return Err(format!(
                "`correlation.group-by` is missing (mandatory for {kind}); use an empty list to correlate across everything"
            ))
        }
        Some(value) => string_list(value, "correlation.group-by")?,
    };
    reject_duplicates(&group_by, "correlation.group-by")?;
    if group_by.iter().any(|g| g.is_empty()) {
        return Err("`correlation.group-by` contains an empty field name".to_string());
    }

    let timespan_text = match correlation.get("timespan") {
        Some(Value::String(t)) => t.clone(),
        // YAML `timespan: 10` has no unit; saying so beats "must be a string".
        Some(Value::Number(n)) => {
            return Err(format!("`correlation.timespan` {n} has no unit; write e.g. `{n}m`"))
        }
        None => return Err("`correlation.timespan` is missing (mandatory)".to_string()),
        Some(other) => {
            return Err(format!("`correlation.timespan` must be a string, found {}", json_kind(other)))
        }
    };
    let timespan_ms = parse_timespan(&timespan_text)?;

    let (mut condition, fields) = match correlation.get("condition") {
        None | Some(Value::Null) => (Condition::default(), Vec::new()),
        Some(Value::Object(c)) => parse_condition(c)?,
        Some(other) => {
            return Err(format!(
                "`correlation.condition` must be a map such as `gte: 10`, found {}",
                json_kind(other)
            ))
        }
    };
    if kind.needs_field() {
        if fields.is_empty() {
            return Err(format!("`correlation.condition.field` is missing (mandatory for {kind})"));
        }
        if matches!(kind, CorrelationType::ValueSum | CorrelationType::ValueAvg) && fields.len() > 1 {
            return Err(format!(
                "{kind} adds up one numeric field; `condition.field` lists {}",
                fields.len()
            ));
        }
    } else if !fields.is_empty() {
        return Err(format!(
            "`correlation.condition.field` has no meaning for {kind} (did you mean value_count?)"
        ));
    }
    if kind.is_temporal() {
        if condition.is_empty() {
            condition = Condition::at_least(rules.len());
        } else if condition.lt.is_some() || condition.lte.is_some() || condition.neq.is_some() {
            // "fewer than N of the rules were seen" has no useful streaming meaning.
            return Err(format!(
                "{kind} conditions support gt, gte and eq only (the number of referenced rules seen)"
            ));
        }
        if condition.holds(0.0) {
            return Err(format!("{kind} condition `{condition}` holds without any event"));
        }
    } else if condition.is_empty() {
        return Err(format!(
            "`correlation.condition` is missing or has no comparison (mandatory for {kind}), e.g. `gte: 10`"
        ));
    }

    let aliases = match correlation.get("aliases") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(a)) => parse_aliases(a)?,
        Some(other) => {
            return Err(format!("`correlation.aliases` must be a map, found {}", json_kind(other)))
        }
    };

    // The spec puts `generate` at the top level; pySigma reads it inside `correlation`.
    let mut generate = false;
    for (place, value) in
        [("generate", top.get("generate")), ("correlation.generate", correlation.get("generate"))]
    {
        match value {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => generate |= *b,
            Some(other) => {
                return Err(format!("`{place}` must be true or false, found {}", json_kind(other)))
            }
        }
    }

    Ok(CorrelationInfo {
        origin,
        id,
        name,
        title,
        description,
        status,
        level,
        tags,
        kind,
        rules,
        group_by,
        timespan_ms,
        timespan_text,
        condition,
        fields,
        aliases,
        generate,
    })
}

fn parse_condition(map: &Map<String, Value>) -> Result<(Condition, Vec<String>), String> {
    let mut condition = Condition::default();
    let mut fields = Vec::new();
    for (key, value) in map {
        if key == "field" {
            fields = match value {
                Value::String(s) => vec![s.clone()],
                Value::Array(_) => string_list(value, "correlation.condition.field")?,
                other => {
                    return Err(format!(
                        "`correlation.condition.field` must be a field name, found {}",
                        json_kind(other)
                    ))
                }
            };
            if fields.is_empty() || fields.iter().any(|f| f.is_empty()) {
                return Err("`correlation.condition.field` is empty".to_string());
            }
            continue;
        }
        let slot = match key.as_str() {
            "gt" => &mut condition.gt,
            "gte" => &mut condition.gte,
            "lt" => &mut condition.lt,
            "lte" => &mut condition.lte,
            "eq" => &mut condition.eq,
            "neq" => &mut condition.neq,
            other => {
                return Err(format!(
                    "unknown condition operator `{other}` (gt, gte, lt, lte, eq, neq, field)"
                ))
            }
        };
        let bound = match value {
            Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
            _ => None,
        };
        match bound {
            Some(bound) => *slot = Some(bound),
            None => {
                return Err(format!(
                    "`correlation.condition.{key}` must be a number, found {}",
                    json_kind(value)
                ))
            }
        }
    }
    Ok((condition, fields))
}

fn parse_aliases(map: &Map<String, Value>) -> Result<BTreeMap<String, BTreeMap<String, String>>, String> {
    let mut aliases = BTreeMap::new();
    for (alias, per_rule) in map {
        let Value::Object(per_rule) = per_rule else {
            return Err(format!(
                "`correlation.aliases.{alias}` must map rule names to field names, found {}",
                json_kind(per_rule)
            ));
        };
        let mut fields = BTreeMap::new();
        for (rule, field) in per_rule {
            match field {
                Value::String(f) if !f.is_empty() => {
                    fields.insert(rule.clone(), f.clone());
                }
                other => {
                    return Err(format!(
                        "`correlation.aliases.{alias}.{rule}` must be a field name, found {}",
                        json_kind(other)
                    ))
                }
            }
        }
        aliases.insert(alias.clone(), fields);
    }
    Ok(aliases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans_convert_to_milliseconds() {
        assert_eq!(parse_timespan("10s"), Ok(10_000));
        assert_eq!(parse_timespan("90m"), Ok(5_400_000));
        assert_eq!(parse_timespan("1h"), Ok(3_600_000));
        assert_eq!(parse_timespan("1d"), Ok(86_400_000));
        assert_eq!(parse_timespan("2w"), Ok(1_209_600_000));
    }

    #[test]
    fn bad_timespans_are_refused() {
        for bad in ["", "m", "10", "1H", "-1m", "1.5h", "0s", "1M", "10 m", "99999999999d"] {
            assert!(parse_timespan(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn conditions_combine_with_and() {
        let c = Condition { gt: Some(100.0), lte: Some(200.0), ..Condition::default() };
        assert!(!c.holds(100.0));
        assert!(c.holds(101.0));
        assert!(c.holds(200.0));
        assert!(!c.holds(201.0));
        assert!(!c.only_lower_bounds());
        let neq = Condition { neq: Some(3.0), ..Condition::default() };
        assert!(neq.holds(2.0) && !neq.holds(3.0));
    }
}
