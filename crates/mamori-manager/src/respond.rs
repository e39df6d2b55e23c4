//! Responses the manager orders by itself: a Sigma detection or correlation about a host that
//! is an enrolled agent, at a level the response policy names for `sigma` with `isolate`,
//! queues an `isolate` command for that agent (the agent then isolates itself exactly as when
//! an admin orders it: allow-list, dead-man rollback, release by an admin or a clean scan).
//!
//! Which agent a detection is about: the agent whose own event matched, or an agent whose
//! last reported hostname or connection address equals one of the detection's subjects (host
//! names and addresses from the event, and a correlation's group values). Names compare
//! without case and an FQDN also matches its first label. Nothing is ordered for a host that
//! is no agent, one already isolated, or one with an isolate command still pending; in
//! dry-run the order is only logged.

use std::collections::HashSet;
use std::sync::Arc;

use mamori_proto::{self as proto, DetectionKind, ResponseActionKind, Severity};

use crate::state::Shared;
use crate::writer::DetectionRecord;

/// The Sigma `level` as a response severity (`informational` counts as low).
pub(crate) fn severity_of_level(level: &str) -> Severity {
    match level.to_ascii_lowercase().as_str() {
        "critical" => Severity::Critical,
        "high" => Severity::High,
        "medium" => Severity::Medium,
        _ => Severity::Low,
    }
}

/// One isolation the policy asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Order {
    pub agent_id: String,
    pub reason: String,
}

/// The response policy as parsed for the current policy version, so that ingest does not parse
/// the policy JSON for every batch with a detection. `None` inside: no `sigma` rule isolates.
#[derive(Default)]
pub(crate) struct ResponseCache(std::sync::Mutex<Option<(u64, Option<Arc<proto::ResponsePolicy>>)>>);

impl ResponseCache {
    fn current(&self, shared: &Shared) -> Option<Arc<proto::ResponsePolicy>> {
        let (version, text) = match shared.policy.read() {
            Ok(p) if p.0 > 0 => (p.0, p.1.clone()),
            _ => return None,
        };
        let mut cache = self.0.lock().ok()?;
        if let Some((cached, response)) = cache.as_ref() {
            if *cached == version {
                return response.clone();
            }
        }
        let response = serde_json::from_str::<proto::Policy>(&text)
            .ok()
            .map(|p| p.response)
            .filter(|r| {
                r.rules.iter().any(|rule| {
                    rule.detection == DetectionKind::Sigma
                        && rule.actions.contains(&ResponseActionKind::Isolate)
                })
            })
            .map(Arc::new);
        *cache = Some((version, response.clone()));
        response
    }
}

/// Works out the isolations `detections` call for under the current policy and queues them in
/// the background (the caller is ingesting and must not wait for the store).
pub(crate) fn after_detections(shared: &Arc<Shared>, detections: &[DetectionRecord]) {
    let Some(response) = shared.response.current(shared) else { return };
    let agents = shared.agents_seen();
    let orders = orders_for(&response, detections, &agents);
    if orders.is_empty() {
        return;
    }
    if response.dry_run {
        for order in &orders {
            tracing::warn!("dry run: would isolate agent {}: {}", order.agent_id, order.reason);
        }
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        for order in orders {
            queue_isolation(&shared, order).await;
        }
    });
}

/// The isolations the response policy asks for, at most one per agent.
pub(crate) fn orders_for(
    response: &proto::ResponsePolicy,
    detections: &[DetectionRecord],
    agents: &[(String, Option<String>, Option<std::net::IpAddr>, bool)],
) -> Vec<Order> {
    let mut orders = Vec::new();
    let mut ordered = HashSet::new();
    for detection in detections {
        let actions = response.actions_for(DetectionKind::Sigma, severity_of_level(&detection.level));
        if !actions.contains(&ResponseActionKind::Isolate) {
            continue;
        }
        for (id, hostname, ip, isolated) in agents {
            let about = detection.agent.as_deref() == Some(id.as_str())
                || detection.subjects.iter().any(|s| {
                    hostname.as_deref().is_some_and(|h| same_host_name(h, s))
                        || ip.is_some_and(|ip| s.parse::<std::net::IpAddr>().is_ok_and(|a| a == ip))
                });
            if about && !isolated && ordered.insert(id.clone()) {
                let reason = format!(
                    "sigma {} detection {} ({})",
                    detection.level,
                    one_line(&detection.title, 200),
                    detection.rule_id
                );
                orders.push(Order { agent_id: id.clone(), reason });
            }
        }
    }
    orders
}

async fn queue_isolation(shared: &Arc<Shared>, order: Order) {
    let pending = shared.pending_commands(&order.agent_id);
    if pending.iter().any(|c| c.action == proto::CommandAction::Isolate) {
        return;
    }
    let (agent, reason) = (order.agent_id.clone(), order.reason.clone());
    let now = crate::timefmt::now_ms();
    let action = proto::CommandAction::Isolate.as_str();
    let queued = shared.with_store(move |s| Ok(s.queue_command(&agent, action, &reason, now))).await;
    match queued {
        Ok(Ok(row)) => {
            if let Some(command) = crate::api::agent_command(&row) {
                shared.command_queued(&order.agent_id, command);
            }
            tracing::warn!("isolating agent {} by response policy: {}", order.agent_id, order.reason);
        }
        Ok(Err(e)) => tracing::warn!("cannot queue the isolation of agent {}: {e}", order.agent_id),
        Err(e) => tracing::warn!("cannot queue the isolation of agent {}: {e:#}", order.agent_id),
    }
}

/// `PC-01` matches `pc-01` and `pc-01.hospital.local` (either side may be the FQDN).
fn same_host_name(a: &str, b: &str) -> bool {
    let first = |n: &str| n.split('.').next().unwrap_or(n).to_ascii_lowercase();
    !a.is_empty()
        && (a.eq_ignore_ascii_case(b) || (first(a) == first(b) && (a.contains('.') != b.contains('.'))))
}

fn one_line(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detection(level: &str, subjects: &[&str], agent: Option<&str>) -> DetectionRecord {
        DetectionRecord {
            kind: mamori_store::DetectionKind::Correlation,
            rule_id: "r1".into(),
            title: "Malware then egress".into(),
            level: level.into(),
            host: None,
            source: Arc::from("test"),
            time_ms: 0,
            data: "{}".into(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            agent: agent.map(str::to_string),
        }
    }

    fn policy(min: Severity) -> proto::ResponsePolicy {
        proto::ResponsePolicy {
            rules: vec![proto::ResponseRule {
                detection: DetectionKind::Sigma,
                min_severity: min,
                actions: vec![ResponseActionKind::Isolate],
            }],
            ..proto::ResponsePolicy::default()
        }
    }

    fn agents() -> Vec<(String, Option<String>, Option<std::net::IpAddr>, bool)> {
        vec![
            ("a1".into(), Some("PC-01".into()), "10.1.0.5".parse().ok(), false),
            ("a2".into(), Some("pc-02.hospital.local".into()), "10.1.0.6".parse().ok(), false),
            ("a3".into(), Some("pc-03".into()), "10.1.0.7".parse().ok(), true),
        ]
    }

    fn ids(orders: &[Order]) -> Vec<&str> {
        orders.iter().map(|o| o.agent_id.as_str()).collect()
    }

    #[test]
    fn a_detection_isolates_the_agents_it_names_by_address_or_name() {
        let ds = [detection("critical", &["10.1.0.5"], None), detection("critical", &["PC-02"], None)];
        assert_eq!(ids(&orders_for(&policy(Severity::High), &ds, &agents())), ["a1", "a2"]);
    }

    #[test]
    fn below_the_policy_level_or_without_a_sigma_rule_nothing_is_ordered() {
        let ds = [detection("medium", &["10.1.0.5"], None)];
        assert!(orders_for(&policy(Severity::High), &ds, &agents()).is_empty());
        let default = proto::ResponsePolicy::default();
        assert!(orders_for(&default, &[detection("critical", &["10.1.0.5"], None)], &agents()).is_empty());
    }

    #[test]
    fn unknown_hosts_isolated_agents_and_repeats_give_no_order() {
        let ds = [
            detection("critical", &["10.9.9.9", "fw-01"], None),
            detection("critical", &["pc-03"], None),
            detection("high", &["10.1.0.5"], Some("a1")),
            detection("high", &[], Some("a1")),
        ];
        let orders = orders_for(&policy(Severity::High), &ds, &agents());
        assert_eq!(ids(&orders), ["a1"]);
        assert!(orders[0].reason.contains("Malware then egress"), "{}", orders[0].reason);
    }

    #[test]
    fn host_names_match_without_case_and_by_first_label() {
        assert!(same_host_name("PC-01", "pc-01"));
        assert!(same_host_name("pc-01", "PC-01.hospital.local"));
        assert!(!same_host_name("pc-01", "pc-010"));
        assert!(!same_host_name("pc-01.a.local", "pc-01.b.local"));
        assert!(!same_host_name("", ""));
    }
}
