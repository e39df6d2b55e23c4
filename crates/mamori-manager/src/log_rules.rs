//! Sigma rules applied to received logs: detection rules per event (`mamori-sigma`) and
//! correlation rules over the detections (`mamori-correlate`).
//!
//! Rules are loaded once at start. Every rule that cannot be used is logged with its reason at
//! start and counted in [`LogRules::summary`]; the others still run.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use mamori_correlate::{Correlator, RuleRef};
use mamori_proto as proto;
use mamori_sigma::{Event, Pipeline, RuleSet};
use serde::Serialize;
use serde_json::{json, Value};

use crate::writer::DetectionRecord;

/// Most events kept per correlation match in the stored detection (the rest are counted).
const EVENTS_PER_CORRELATION: usize = 20;

pub(crate) struct LogRules {
    rules: Option<RuleSet>,
    correlator: Option<Mutex<Correlator>>,
    summary: RulesSummary,
}

/// What was loaded, for the admin API and the start log.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RulesSummary {
    pub files: usize,
    pub rules_loaded: usize,
    pub correlations_loaded: usize,
    /// `path: rule: reason` of each rule that is not used.
    pub problems: Vec<String>,
}

impl LogRules {
    /// Loads the rules at `paths` with the built-in Windows field mappings plus the pipelines
    /// (pySigma-style YAML) at `pipelines`, applied in order. A pipeline that cannot be read or
    /// parsed stops the start: rules evaluated with the wrong field names would silently miss.
    pub fn load(paths: &[PathBuf], pipelines: &[PathBuf]) -> anyhow::Result<LogRules> {
        if paths.is_empty() {
            return Ok(LogRules { rules: None, correlator: None, summary: RulesSummary::default() });
        }
        for p in paths {
            std::fs::metadata(p).with_context(|| format!("log rules: cannot read {}", p.display()))?;
        }
        let pipeline = Pipeline::default_windows()
            .with_files(pipelines)
            .map_err(|e| anyhow::anyhow!("log pipeline {}", e.0))?;
        let (rules, report) = RuleSet::load(paths, &pipeline);
        let mut problems: Vec<String> = report
            .problems
            .iter()
            .map(|p| format!("{}: {}: {}", p.path.display(), p.rule.as_deref().unwrap_or("-"), p.reason))
            .collect();
        let docs: Vec<(PathBuf, Value)> =
            report.correlations.iter().map(|c| (c.origin.clone(), c.doc.clone())).collect();
        let (correlator, correlation_problems) = Correlator::load(&docs);
        problems.extend(
            correlation_problems.iter().map(|p| {
                format!("{}: {}: {}", p.origin.display(), p.rule.as_deref().unwrap_or("-"), p.reason)
            }),
        );
        for p in &problems {
            tracing::warn!("log rule not used: {p}");
        }
        let summary = RulesSummary {
            files: report.files,
            rules_loaded: rules.len(),
            correlations_loaded: correlator.len(),
            problems,
        };
        tracing::info!(
            "log rules: {} detection and {} correlation rules from {} files ({} not used)",
            summary.rules_loaded,
            summary.correlations_loaded,
            summary.files,
            summary.problems.len()
        );
        let correlator = (!correlator.is_empty()).then(|| Mutex::new(correlator));
        Ok(LogRules { rules: Some(rules), correlator, summary })
    }

    pub fn summary(&self) -> &RulesSummary {
        &self.summary
    }

    /// The detections an agent's own events make: its alerts (so that correlations can join
    /// them with firewall logs) and the log lines it collected.
    pub fn detect_agent_events(
        &self,
        agent: &AgentSeen<'_>,
        events: &[proto::WireEvent],
    ) -> Vec<DetectionRecord> {
        let mut out = Vec::new();
        if self.rules.is_none() {
            return out;
        }
        let source: Arc<str> = Arc::from(format!("agent {}", agent.id));
        for wire in events {
            let Some(event) = agent_event(&wire.kind, wire.data.get(), agent) else { continue };
            let first = out.len();
            self.detect(&event, &source, wire.time_ms, &mut out);
            for record in &mut out[first..] {
                if record.kind == mamori_store::DetectionKind::Sigma {
                    record.agent = Some(agent.id.to_string());
                }
            }
        }
        out
    }

    /// Appends the detections (and correlations they complete) that `event` makes.
    pub fn detect(&self, event: &Event, source: &Arc<str>, time_ms: i64, out: &mut Vec<DetectionRecord>) {
        let Some(rules) = &self.rules else { return };
        let mut matched = Vec::new();
        rules.evaluate(event, &mut matched);
        if matched.is_empty() {
            return;
        }
        let host = host_of(event);
        let subjects = subjects_of(event);
        let mut correlations = Vec::new();
        for index in matched {
            let rule = rules.rule(index);
            let r = RuleRef { id: rule.id.as_deref(), name: rule.name.as_deref() };
            let mut suppressed = false;
            if let Some(correlator) = &self.correlator {
                if let Ok(mut c) = correlator.lock() {
                    if c.is_referenced(r) {
                        suppressed = c.suppress_generated(r);
                        c.observe(r, time_ms, event, 0, &mut correlations);
                    }
                }
            }
            if suppressed {
                continue;
            }
            let rule_id = rule.id.clone().or_else(|| rule.name.clone()).unwrap_or_else(|| rule.title.clone());
            let level = rule.level.clone().unwrap_or_else(|| "medium".into());
            let data = json!({
                "rule": {"id": rule_id, "title": rule.title, "level": level, "tags": rule.tags,
                         "path": rule.path.display().to_string()},
                "threat": {"technique": {"id": rule.attack_techniques()}},
                "event": event,
            });
            out.push(DetectionRecord {
                kind: mamori_store::DetectionKind::Sigma,
                rule_id,
                title: rule.title.clone(),
                level,
                host: host.clone(),
                source: source.clone(),
                time_ms,
                data: data.to_string(),
                subjects: subjects.clone(),
                agent: None,
            });
        }
        let Some(correlator) = &self.correlator else { return };
        let Ok(c) = correlator.lock() else { return };
        for m in correlations {
            let info = c.rule(m.rule_index);
            let rule_id = info.id.clone().or_else(|| info.name.clone()).unwrap_or_else(|| info.title.clone());
            let level = info.level.clone().unwrap_or_else(|| "high".into());
            let group: serde_json::Map<String, Value> = m.group.iter().cloned().collect();
            // The group is what the rule says the correlation is about (e.g. the host's
            // address joining the agent's alert and the firewall's log).
            let mut subjects = subjects.clone();
            subjects.extend(group.values().filter_map(Value::as_str).map(str::to_string));
            let data = json!({
                "rule": {"id": rule_id, "title": info.title, "level": level, "tags": info.tags},
                "correlation": {"group": group, "first_ms": m.first_ms, "last_ms": m.last_ms,
                                "count": m.count, "value": m.value},
                // The event that completed it; earlier ones are in their own detections.
                "event": event,
                "events_kept": EVENTS_PER_CORRELATION.min(m.event_refs.len()),
            });
            out.push(DetectionRecord {
                kind: mamori_store::DetectionKind::Correlation,
                rule_id,
                title: info.title.clone(),
                level,
                host: host.clone(),
                source: source.clone(),
                time_ms,
                data: data.to_string(),
                subjects,
                agent: None,
            });
        }
    }
}

/// Who sent events: the agent's id, the hostname it last reported and the address it
/// connects from (what a firewall on the way sees as its source address).
pub(crate) struct AgentSeen<'a> {
    pub id: &'a str,
    pub hostname: Option<&'a str>,
    pub ip: Option<IpAddr>,
}

/// The flat event the rules see for an agent event: an alert (logsource `mamori`/`agent`,
/// `event.kind: alert`, the finding's own top-level fields kept) or a collected log line (as
/// the agent parsed it, with the agent's host name if the line named none). Other kinds are not
/// for the rules.
pub(crate) fn agent_event(kind: &str, data: &str, agent: &AgentSeen<'_>) -> Option<Event> {
    let is_alert = proto::kind::DETECTIONS.contains(&kind);
    if !is_alert && kind != proto::kind::LOG_EVENT {
        return None;
    }
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(data) else { return None };
    let mut event = Event::new();
    if is_alert {
        // Nested parts of a finding are not something the flat event model has names for.
        event.extend(fields.into_iter().filter(|(_, v)| !v.is_object()));
        event.insert("mamori.logsource.product".into(), "mamori".into());
        event.insert("mamori.logsource.service".into(), "agent".into());
        event.insert("event.kind".into(), "alert".into());
        event.insert("event.action".into(), kind.into());
        event.insert("agent.id".into(), agent.id.into());
        if let Some(ip) = agent.ip {
            event.insert("host.ip".into(), ip.to_string().into());
        }
        if let Some(name) = agent.hostname {
            event.insert("host.name".into(), name.into());
        }
    } else {
        event = fields;
        if let Some(name) = agent.hostname {
            event.entry("host.name").or_insert_with(|| name.into());
        }
        event.insert("agent.id".into(), agent.id.into());
    }
    Some(event)
}

/// Every name or address of the host an event is about, for matching it to an enrolled agent.
/// A connection's source address is left out: in a firewall log it is the host, but in a
/// logon event it is the attacker's, and isolating that agent would be wrong; correlation
/// rules that join on it say so in their group.
fn subjects_of(event: &Event) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["host.name", "Computer", "hostname", "log.syslog.hostname", "host.hostname", "host.ip"] {
        match event.get(key) {
            Some(Value::String(s)) => out.push(s.clone()),
            Some(Value::Array(items)) => {
                out.extend(items.iter().filter_map(Value::as_str).map(str::to_string))
            }
            _ => {}
        }
    }
    out
}

/// The host an event is about, under the names the inputs use.
fn host_of(event: &Event) -> Option<String> {
    ["host.name", "Computer", "hostname", "log.syslog.hostname", "source.ip"]
        .iter()
        .find_map(|k| event.get(*k).and_then(Value::as_str))
        .map(str::to_string)
}
