//! Processing pipeline: where an event's Sigma logsource comes from, which event field a
//! rule's field name reads on which logsource, and the values of `expand` placeholders.
//!
//! The format is a small subset of pySigma processing pipelines (`name`, `vars`,
//! `transformations` of type `field_name_mapping` with `logsource` `rule_conditions`), plus
//! two mamori tables that pySigma leaves to backends (`windows_services`,
//! `windows_categories`) and `event_conditions`, which say on which events a mapping applies
//! (pySigma rewrites a query for one backend; mamori evaluates one rule against events from
//! several sources, e.g. Sysmon 1 and Security 4688, so the choice is made per event).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use crate::Event;

const DEFAULT_WINDOWS: &str = include_str!("data/default_windows.yml");

/// Event keys holding the logsource identity set by mamori's inputs.
pub(crate) const PRODUCT_KEY: &str = "mamori.logsource.product";
pub(crate) const SERVICE_KEY: &str = "mamori.logsource.service";
pub(crate) const CATEGORY_KEY: &str = "mamori.logsource.category";

/// A processing pipeline (see the crate documentation for the YAML format).
#[derive(Clone, Debug, Default)]
pub struct Pipeline {
    name: String,
    /// Windows channel → Sigma service, by exact channel name and by lowercased name.
    services: HashMap<String, String>,
    services_lower: HashMap<String, String>,
    /// Windows channel (exact and lowercased) → EventID → categories.
    categories: HashMap<String, HashMap<i64, Vec<String>>>,
    pub(crate) field_mappings: Vec<FieldMapping>,
    pub(crate) vars: HashMap<String, Vec<String>>,
}

/// Why a pipeline could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineError(pub String);

impl std::fmt::Display for PipelineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid pipeline: {}", self.0)
    }
}

impl std::error::Error for PipelineError {}

/// `field_name_mapping`: on events matching `event_conditions`, rules matching
/// `rule_conditions` read `mapping[rule field]` instead of the rule field.
#[derive(Clone, Debug)]
pub(crate) struct FieldMapping {
    pub mapping: HashMap<String, String>,
    pub rule_conditions: Vec<LogsourceCondition>,
    pub event_conditions: Vec<LogsourceCondition>,
}

/// A logsource condition; unset parts match anything. `event_ids` only applies to events.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogsourceCondition {
    #[serde(rename = "type")]
    kind: String,
    product: Option<String>,
    service: Option<String>,
    category: Option<String>,
    #[serde(default)]
    event_ids: Vec<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineDoc {
    name: Option<String>,
    #[allow(dead_code)]
    priority: Option<i64>,
    #[serde(default)]
    vars: HashMap<String, Value>,
    #[serde(default)]
    windows_services: HashMap<String, String>,
    #[serde(default)]
    windows_categories: Vec<CategoryDoc>,
    #[serde(default)]
    transformations: Vec<TransformationDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryDoc {
    channel: OneOrMany,
    event_ids: Vec<i64>,
    category: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransformationDoc {
    id: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    mapping: HashMap<String, Value>,
    #[serde(default)]
    rule_conditions: Vec<LogsourceCondition>,
    #[serde(default)]
    event_conditions: Vec<LogsourceCondition>,
}

/// The logsource of one event, as the rule index sees it.
#[derive(Debug, Default)]
pub(crate) struct EventLogsource<'a> {
    pub product: Option<&'a str>,
    pub service: Option<&'a str>,
    /// Set by the input (`mamori.logsource.category`); wins over `derived`.
    explicit_category: Option<&'a str>,
    /// From the pipeline's (Channel, EventID) table.
    derived_categories: &'a [String],
    pub event_id: Option<i64>,
}

impl<'a> EventLogsource<'a> {
    pub fn categories(&self) -> impl Iterator<Item = &'a str> + '_ {
        let derived = if self.explicit_category.is_some() { &[][..] } else { self.derived_categories };
        self.explicit_category.into_iter().chain(derived.iter().map(String::as_str))
    }
}

impl Pipeline {
    /// An empty pipeline: logsources only from `mamori.logsource.*`, no field mappings.
    pub fn empty() -> Pipeline {
        Pipeline::default()
    }

    /// The built-in Windows pipeline: Sigma taxonomy channel/service/category tables and the
    /// Security 4688 field names for `process_creation` rules.
    pub fn default_windows() -> Pipeline {
        match Pipeline::from_yaml(DEFAULT_WINDOWS) {
            Ok(pipeline) => pipeline,
            // The embedded file is checked by a unit test; an empty pipeline still works.
            Err(_) => Pipeline::empty(),
        }
    }

    /// This pipeline followed by the pipeline files at `paths`, in order (a site's field
    /// mappings on top of the built-in ones). The error names the file.
    pub fn with_files(self, paths: &[std::path::PathBuf]) -> Result<Pipeline, PipelineError> {
        let mut pipeline = self;
        for path in paths {
            let text = std::fs::read_to_string(path)
                .map_err(|e| PipelineError(format!("cannot read {}: {e}", path.display())))?;
            let extra = Pipeline::from_yaml(&text)
                .map_err(|e| PipelineError(format!("{}: {}", path.display(), e.0)))?;
            pipeline = pipeline.merged(extra);
        }
        Ok(pipeline)
    }

    /// Reads a pipeline from YAML (see the crate documentation for the format).
    pub fn from_yaml(text: &str) -> Result<Pipeline, PipelineError> {
        let doc: PipelineDoc = serde_norway::from_str(text).map_err(|e| PipelineError(e.to_string()))?;
        let mut pipeline = Pipeline { name: doc.name.unwrap_or_default(), ..Pipeline::default() };
        for (name, value) in doc.vars {
            let values = match value {
                Value::Array(items) => items.iter().map(scalar_text).collect::<Option<Vec<_>>>(),
                other => scalar_text(&other).map(|v| vec![v]),
            }
            .ok_or_else(|| PipelineError(format!("vars.{name}: values must be scalars")))?;
            pipeline.vars.insert(name, values);
        }
        for (channel, service) in doc.windows_services {
            pipeline.add_service(&channel, &service);
        }
        for category in doc.windows_categories {
            let channels = match category.channel {
                OneOrMany::One(c) => vec![c],
                OneOrMany::Many(c) => c,
            };
            for channel in channels {
                // Under the exact name (no allocation per event) and lowercased (fallback).
                let mut keys = vec![channel.to_lowercase()];
                if keys[0] != channel {
                    keys.push(channel);
                }
                for key in keys {
                    let by_id = pipeline.categories.entry(key).or_default();
                    for id in &category.event_ids {
                        by_id.entry(*id).or_default().push(category.category.to_lowercase());
                    }
                }
            }
        }
        for (index, transformation) in doc.transformations.into_iter().enumerate() {
            let label = transformation.id.clone().unwrap_or_else(|| format!("#{index}"));
            if transformation.kind != "field_name_mapping" {
                return Err(PipelineError(format!(
                    "transformation {label}: type {:?} is not supported (only field_name_mapping)",
                    transformation.kind
                )));
            }
            for condition in transformation.rule_conditions.iter().chain(&transformation.event_conditions) {
                if condition.kind != "logsource" {
                    return Err(PipelineError(format!(
                        "transformation {label}: condition type {:?} is not supported (only logsource)",
                        condition.kind
                    )));
                }
            }
            let mut mapping = HashMap::new();
            for (from, to) in transformation.mapping {
                match to {
                    Value::String(to) => {
                        mapping.insert(from, to);
                    }
                    _ => {
                        return Err(PipelineError(format!(
                            "transformation {label}: mapping of {from} must be one field name"
                        )))
                    }
                }
            }
            pipeline.field_mappings.push(FieldMapping {
                mapping,
                rule_conditions: transformation.rule_conditions,
                event_conditions: transformation.event_conditions,
            });
        }
        if pipeline.field_mappings.len() > 64 {
            return Err(PipelineError("at most 64 field_name_mapping transformations".into()));
        }
        Ok(pipeline)
    }

    /// Adds the transformations, tables and vars of `other` after this pipeline's own.
    pub fn merged(mut self, other: Pipeline) -> Pipeline {
        for (channel, service) in other.services {
            self.add_service(&channel, &service);
        }
        for (channel, by_id) in other.categories {
            let mine = self.categories.entry(channel).or_default();
            for (id, categories) in by_id {
                mine.entry(id).or_default().extend(categories);
            }
        }
        self.field_mappings.extend(other.field_mappings);
        self.vars.extend(other.vars);
        self
    }

    /// Sets the values of an `expand` placeholder (`%name%`).
    pub fn set_placeholder(&mut self, name: &str, values: Vec<String>) {
        self.vars.insert(name.to_string(), values);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn add_service(&mut self, channel: &str, service: &str) {
        self.services.insert(channel.to_string(), service.to_lowercase());
        self.services_lower.insert(channel.to_lowercase(), service.to_lowercase());
    }

    /// The logsource of `event`: `mamori.logsource.*` first; for Windows events, service from
    /// the Channel and categories from (Channel, EventID) when the input did not set them.
    pub(crate) fn event_logsource<'a>(&'a self, event: &'a Event) -> EventLogsource<'a> {
        let text = |key: &str| event.get(key).and_then(Value::as_str);
        let channel = text("Channel");
        let event_id = event.get("EventID").and_then(|v| match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        });
        // Raw EVTX JSON without mamori's keys is still recognisable as Windows.
        let product = text(PRODUCT_KEY).or(if channel.is_some() && event_id.is_some() {
            Some("windows")
        } else {
            None
        });
        let mut service = text(SERVICE_KEY);
        let explicit_category = text(CATEGORY_KEY);
        let mut derived_categories: &[String] = &[];
        if product.is_some_and(|p| p.eq_ignore_ascii_case("windows")) {
            if let Some(channel) = channel {
                if service.is_none() {
                    service = self
                        .services
                        .get(channel)
                        .or_else(|| self.services_lower.get(&channel.to_lowercase()))
                        .map(String::as_str);
                }
                if explicit_category.is_none() {
                    if let Some(id) = event_id {
                        let by_id = self.categories.get(channel).or_else(|| {
                            if channel.bytes().any(|b| b.is_ascii_uppercase()) {
                                self.categories.get(&channel.to_lowercase())
                            } else {
                                None
                            }
                        });
                        if let Some(found) = by_id.and_then(|by_id| by_id.get(&id)) {
                            derived_categories = found;
                        }
                    }
                }
            }
        }
        EventLogsource { product, service, explicit_category, derived_categories, event_id }
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn same(expected: &Option<String>, actual: Option<&str>) -> bool {
    match expected {
        None => true,
        Some(expected) => actual.is_some_and(|a| a.eq_ignore_ascii_case(expected)),
    }
}

impl LogsourceCondition {
    /// pySigma semantics: every part the condition sets must equal the rule's.
    pub fn matches_rule(&self, product: Option<&str>, service: Option<&str>, category: Option<&str>) -> bool {
        same(&self.product, product) && same(&self.service, service) && same(&self.category, category)
    }

    pub fn matches_event(&self, logsource: &EventLogsource<'_>) -> bool {
        same(&self.product, logsource.product)
            && same(&self.service, logsource.service)
            && match &self.category {
                None => true,
                Some(c) => logsource.categories().any(|e| e.eq_ignore_ascii_case(c)),
            }
            && (self.event_ids.is_empty()
                || logsource.event_id.is_some_and(|id| self.event_ids.contains(&id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: Value) -> Event {
        match json {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn built_in_pipeline_parses() {
        let pipeline = Pipeline::from_yaml(DEFAULT_WINDOWS).unwrap();
        assert!(pipeline.services.len() > 40);
        assert_eq!(pipeline.field_mappings.len(), 1);
    }

    #[test]
    fn windows_logsource_comes_from_channel_and_event_id() {
        let pipeline = Pipeline::default_windows();
        let sysmon = event(serde_json::json!({
            "mamori.logsource.product": "windows",
            "Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 13}));
        let ls = pipeline.event_logsource(&sysmon);
        assert_eq!(ls.service, Some("sysmon"));
        assert_eq!(ls.categories().collect::<Vec<_>>(), vec!["registry_event", "registry_set"]);

        let security = event(serde_json::json!({
            "mamori.logsource.product": "windows", "mamori.logsource.service": "security",
            "Channel": "Security", "EventID": "4688"}));
        let ls = pipeline.event_logsource(&security);
        assert_eq!(ls.service, Some("security"));
        assert_eq!(ls.categories().collect::<Vec<_>>(), vec!["process_creation"]);

        let ps = event(serde_json::json!({"Channel": "PowerShellCore/Operational", "EventID": 4104}));
        let ls = pipeline.event_logsource(&ps);
        assert_eq!(ls.product, Some("windows"));
        assert_eq!(ls.categories().collect::<Vec<_>>(), vec!["ps_script"]);

        let linux = event(
            serde_json::json!({"mamori.logsource.product": "linux", "mamori.logsource.service": "sshd"}),
        );
        let ls = pipeline.event_logsource(&linux);
        assert_eq!((ls.product, ls.service), (Some("linux"), Some("sshd")));
        assert_eq!(ls.categories().count(), 0);
    }

    #[test]
    fn bad_pipelines_are_rejected_with_a_reason() {
        let err = Pipeline::from_yaml("transformations:\n  - type: drop_detection_item\n").unwrap_err();
        assert!(err.0.contains("drop_detection_item"), "{err}");
        let err = Pipeline::from_yaml("unknown_key: 1\n").unwrap_err();
        assert!(err.0.contains("unknown_key"), "{err}");
        let ok = Pipeline::from_yaml("vars:\n  Admins: [adm_*, root]\n").unwrap();
        assert_eq!(ok.vars["Admins"], vec!["adm_*", "root"]);
    }
}
