//! The OpenAPI 3.1 description of the manager's HTTP API, served at `/v1/openapi.json`.
//!
//! Written by hand next to the router; a test checks that every route the router serves is
//! described here and the other way round.

use serde_json::{json, Value};

fn error_responses() -> Value {
    json!({
        "400": {"$ref": "#/components/responses/Error"},
        "401": {"$ref": "#/components/responses/Error"},
        "403": {"$ref": "#/components/responses/Error"}
    })
}

fn op(summary: &str, security: &str, request: Option<&str>, response: &str) -> Value {
    let mut responses = error_responses();
    responses["200"] = json!({
        "description": "OK",
        "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{response}")}}}
    });
    let mut op = json!({"summary": summary, "responses": responses});
    if !security.is_empty() {
        op["security"] = json!([{ security: [] }]);
    }
    if let Some(req) = request {
        op["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{req}")}}}
        });
    }
    op
}

fn event_query_parameters() -> Value {
    let p = |name: &str, description: &str, schema: Value| json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema});
    json!([
        p("since", "Start of the time range (inclusive), RFC 3339 or Unix ms", json!({"type": "string"})),
        p("until", "End of the time range (exclusive), RFC 3339 or Unix ms", json!({"type": "string"})),
        p("agent", "Agent (device) id", json!({"type": "string"})),
        p("kind", "Comma-separated event kinds", json!({"type": "string"})),
        p("q", "Case-insensitive text contained in the kind or the event data", json!({"type": "string"})),
        p(
            "after",
            "Only events with a larger id, oldest first (for following new events)",
            json!({"type": "integer"})
        ),
        p("limit", "At most this many events (1-10000, default 100)", json!({"type": "integer"})),
        p("order", "asc or desc (default)", json!({"type": "string", "enum": ["asc", "desc"]})),
    ])
}

fn log_query_parameters(filters: &[(&str, &str)]) -> Value {
    let p = |name: &str, description: &str, schema: Value| json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema});
    let mut params = vec![
        p("since", "Start of the time range (inclusive), RFC 3339 or Unix ms", json!({"type": "string"})),
        p("until", "End of the time range (exclusive), RFC 3339 or Unix ms", json!({"type": "string"})),
        p(
            "after",
            "Only rows with a larger id, oldest first (for following new ones)",
            json!({"type": "integer"}),
        ),
        p("limit", "At most this many (1-10000, default 100)", json!({"type": "integer"})),
        p("order", "asc or desc (default)", json!({"type": "string", "enum": ["asc", "desc"]})),
    ];
    params.extend(filters.iter().map(|(name, description)| p(name, description, json!({"type": "string"}))));
    Value::Array(params)
}

fn id_parameter() -> Value {
    json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}])
}

fn obj(required: &[&str], props: Value) -> Value {
    json!({"type": "object", "required": required, "properties": props})
}

/// The document.
pub fn document() -> Value {
    let s = |t: &str| json!({"type": t});
    let mut events_get = op("Query events", "adminToken", None, "EventPage");
    events_get["parameters"] = event_query_parameters();
    let mut detections_get =
        op("Query detections (events of detection kinds)", "adminToken", None, "EventPage");
    detections_get["parameters"] = event_query_parameters();
    let mut log_events_get =
        op("Logs received from other devices (syslog), parsed", "adminToken", None, "LogEventPage");
    log_events_get["parameters"] = log_query_parameters(&[
        ("source", "The sender, e.g. `udp 10.0.0.1`"),
        ("q", "Case-insensitive text contained in the event"),
    ]);
    let mut log_detections_get = op(
        "Sigma detections and correlations over received logs and the agents' alerts and collected logs",
        "adminToken",
        None,
        "LogDetectionPage",
    );
    log_detections_get["parameters"] = log_query_parameters(&[
        ("rule", "The rule's id (or name, or title)"),
        ("host", "The host the events name"),
        ("level", "Comma-separated Sigma levels"),
    ]);
    let mut agent_get = op("One agent", "adminToken", None, "AgentSummary");
    agent_get["parameters"] = id_parameter();
    let mut revoke_post =
        op("Revoke an agent: refused at once, open connections closed", "adminToken", None, "RevokeResponse");
    revoke_post["parameters"] = id_parameter();
    let mut result_post = op(
        "Report the result of a command (repeats are accepted; the first result is kept). 404 if it is not this agent's command",
        "clientCertificate",
        Some("CommandResult"),
        "CommandRecord",
    );
    result_post["parameters"] = id_parameter();
    result_post["responses"]["404"] = json!({"$ref": "#/components/responses/Error"});
    let mut command_post = op(
        "Queue a command for an agent; it is sent with every heartbeat until the agent reports its result. 400 a missing, unexpected or malformed target (backup_restore: not a full snapshot name), 404 unknown agent, 409 revoked or replaced agent",
        "adminToken",
        Some("CommandRequest"),
        "CommandRecord",
    );
    command_post["parameters"] = id_parameter();
    command_post["responses"]["404"] = json!({"$ref": "#/components/responses/Error"});
    command_post["responses"]["409"] = json!({"$ref": "#/components/responses/Error"});
    let mut command_get = op("The agent's commands, newest first", "adminToken", None, "CommandList");
    command_get["parameters"] = json!([
        {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
        {"name": "limit", "in": "query", "required": false, "description": "At most this many commands (1-1000, default 100)", "schema": {"type": "integer"}}
    ]);
    command_get["responses"]["404"] = json!({"$ref": "#/components/responses/Error"});
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "mamori manager API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Agents authenticate with their client certificate (mutual TLS 1.3); administrators with the admin token; enrollment with a one-time enrollment token."
        },
        "paths": {
            "/v1/health": {"get": op("Liveness", "", None, "Health")},
            "/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI document"}}}},
            "/v1/enroll": {"post": op("Enroll an agent with a one-time token and a CSR", "", Some("EnrollRequest"), "EnrollResponse")},
            "/v1/agent/renew": {"post": op("Renew the agent certificate (same key)", "clientCertificate", Some("RenewRequest"), "RenewResponse")},
            "/v1/agent/heartbeat": {"post": op("Heartbeat; answers the wanted policy version", "clientCertificate", Some("Heartbeat"), "HeartbeatResponse")},
            "/v1/agent/events": {"post": op("Deliver a batch of events (stored once per agent and sequence)", "clientCertificate", Some("EventBatch"), "BatchAck")},
            "/v1/agent/policy": {"get": op("The current policy", "clientCertificate", None, "Policy")},
            "/v1/agent/commands/{id}/result": {"post": result_post},
            "/v1/admin/agents": {"get": op("All agents with status", "adminToken", None, "AgentList")},
            "/v1/admin/agents/{id}": {"get": agent_get},
            "/v1/admin/agents/{id}/revoke": {"post": revoke_post},
            "/v1/admin/agents/{id}/commands": {"post": command_post, "get": command_get},
            "/v1/admin/events": {"get": events_get},
            "/v1/admin/detections": {"get": detections_get},
            "/v1/admin/logs/status": {"get": op("Syslog receivers (bound addresses), their counters (received, stored, malformed, dropped) and the log rules loaded, with every rule not used and why", "adminToken", None, "LogStatus")},
            "/v1/admin/logs/events": {"get": log_events_get},
            "/v1/admin/logs/detections": {"get": log_detections_get},
            "/v1/admin/tokens": {
                "post": op("Create an enrollment token (shown once)", "adminToken", Some("TokenCreateRequest"), "TokenCreated"),
                "get": op("Enrollment tokens (without secrets)", "adminToken", None, "TokenList")
            },
            "/v1/admin/policy": {
                "get": op("The current policy", "adminToken", None, "Policy"),
                "put": op("Store a new policy version", "adminToken", Some("Policy"), "Policy")
            }
        },
        "components": {
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer"},
                "clientCertificate": {"type": "mutualTLS"}
            },
            "responses": {
                "Error": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApiError"}}}}
            },
            "schemas": {
                "ApiError": obj(&["error", "message"], json!({"error": s("string"), "message": s("string")})),
                "Health": obj(&["status"], json!({"status": s("string")})),
                "EnrollRequest": obj(&["token", "csr_pem", "hostname", "machine_id", "agent_version"], json!({
                    "token": s("string"), "csr_pem": s("string"), "hostname": s("string"), "machine_id": s("string"),
                    "previous_device_id": {"type": ["string", "null"]}, "agent_version": s("string")})),
                "EnrollResponse": obj(&["device_id", "cert_pem", "ca_pem", "replaced"], json!({
                    "device_id": s("string"), "cert_pem": s("string"), "ca_pem": s("string"),
                    "replaced": {"type": "array", "items": s("string")}})),
                "RenewRequest": obj(&["csr_pem"], json!({"csr_pem": s("string")})),
                "RenewResponse": obj(&["cert_pem"], json!({"cert_pem": s("string")})),
                "Heartbeat": obj(&["agent_version", "hostname", "policy_version", "spool_pending", "spool_dropped_total"], json!({
                    "agent_version": s("string"), "hostname": s("string"), "policy_version": s("integer"),
                    "spool_pending": s("integer"), "spool_dropped_total": s("integer"), "isolated": s("boolean")})),
                "HeartbeatResponse": obj(&["server_time_ms", "policy_version"], json!({
                    "server_time_ms": s("integer"), "policy_version": s("integer"),
                    "commands": {"type": "array", "items": {"$ref": "#/components/schemas/AgentCommand"}}})),
                "ScheduledScan": obj(&["name", "paths", "every_secs"], json!({
                    "name": s("string"), "paths": {"type": "array", "items": s("string")}, "every_secs": s("integer"),
                    "rules": {"type": "array", "items": s("string")}, "hashes": {"type": "array", "items": s("string")},
                    "exclude": {"type": "array", "items": s("string")}, "quarantine": s("boolean")})),
                "Policy": obj(&[], json!({
                    "version": s("integer"), "heartbeat_secs": {"type": "integer", "minimum": 5, "maximum": 3600},
                    "scans": {"type": "array", "items": {"$ref": "#/components/schemas/ScheduledScan"}},
                    "watch_paths": {"type": "array", "items": s("string")},
                    "fim": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/FimPolicy"}]},
                    "response": {"$ref": "#/components/schemas/ResponsePolicy"}})),
                "FimPolicy": obj(&[], json!({
                    "paths": {"type": "array", "items": s("string")}, "exclude": {"type": "array", "items": s("string")},
                    "cpu_share": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                    "check_every_secs": {"type": "integer", "minimum": 60}, "scan_on_write": s("boolean"),
                    "rules": {"type": "array", "items": s("string")}, "hashes": {"type": "array", "items": s("string")},
                    "ransomware": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/RansomwarePolicy"}]}})),
                "RansomwarePolicy": obj(&[], json!({"canary_dirs": {"type": "array", "items": s("string")}})),
                "ResponsePolicy": obj(&[], json!({
                    "dry_run": s("boolean"), "quarantine_malware": s("boolean"),
                    "rules": {"type": "array", "items": {"$ref": "#/components/schemas/ResponseRule"}},
                    "isolation": {"$ref": "#/components/schemas/IsolationPolicy"}})),
                "ResponseRule": obj(&["detection", "actions"], json!({
                    "detection": {"type": "string", "enum": ["malware", "ransomware", "sigma"]},
                    "min_severity": {"type": "string", "enum": ["low", "medium", "high", "critical"]},
                    "actions": {"type": "array", "items": {"type": "string", "enum": ["alert", "quarantine", "stop_process", "isolate"]}}})),
                "IsolationPolicy": obj(&[], json!({
                    "allow": {"type": "array", "items": {"$ref": "#/components/schemas/IsolationAllow"}},
                    "release_on_clean_scan": s("boolean"),
                    "clean_scan_paths": {"type": "array", "items": s("string")}})),
                "IsolationAllow": obj(&["cidr"], json!({
                    "cidr": s("string"), "proto": {"type": "string", "enum": ["tcp", "udp"]},
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "inbound": s("boolean"), "label": s("string")})),
                "WireEvent": obj(&["seq", "kind", "time_ms", "data"], json!({
                    "seq": s("integer"), "kind": s("string"), "time_ms": s("integer"), "data": {}})),
                "EventBatch": obj(&["events"], json!({"events": {"type": "array", "maxItems": 10000, "items": {"$ref": "#/components/schemas/WireEvent"}}})),
                "BatchAck": obj(&["stored", "duplicates"], json!({"stored": s("integer"), "duplicates": s("integer")})),
                "AgentSummary": obj(&["id", "hostname", "status"], json!({
                    "id": s("string"), "hostname": s("string"),
                    "status": {"type": "string", "enum": ["online", "offline", "revoked", "replaced"]},
                    "agent_version": s("string"), "enrolled_at": s("string"), "last_seen": {"type": ["string", "null"]},
                    "policy_version": s("integer"), "cert_not_after": s("string"), "replaced_by": {"type": ["string", "null"]},
                    "spool_pending": s("integer"), "spool_dropped_total": s("integer"),
                    "isolated": s("boolean"), "pending_commands": s("integer")})),
                "AgentList": {"type": "array", "items": {"$ref": "#/components/schemas/AgentSummary"}},
                "RevokeResponse": obj(&["id", "revoked", "connections_closed"], json!({
                    "id": s("string"), "revoked": s("boolean"), "connections_closed": s("integer")})),
                "EventRecord": obj(&["id", "agent_id", "seq", "kind", "time", "received", "data"], json!({
                    "id": s("integer"), "agent_id": s("string"), "seq": s("integer"), "kind": s("string"),
                    "time": s("string"), "received": s("string"), "data": {}})),
                "EventPage": obj(&["events"], json!({"events": {"type": "array", "items": {"$ref": "#/components/schemas/EventRecord"}}})),
                "LogEventRecord": obj(&["id", "source", "time", "received", "data"], json!({
                    "id": s("integer"), "source": s("string"), "time": s("string"), "received": s("string"),
                    "data": {"type": "object", "description": "The flat event: the source's fields, ECS-style common fields, log.original"}})),
                "LogEventPage": obj(&["events"], json!({"events": {"type": "array", "items": {"$ref": "#/components/schemas/LogEventRecord"}}})),
                "LogDetectionRecord": obj(&["id", "kind", "rule_id", "title", "level", "source", "time", "created", "data"], json!({
                    "id": s("integer"), "kind": {"type": "string", "enum": ["sigma", "correlation"]},
                    "rule_id": s("string"), "title": s("string"), "level": s("string"),
                    "host": {"type": ["string", "null"]}, "source": s("string"), "time": s("string"), "created": s("string"),
                    "data": {"type": "object", "description": "rule (id, title, level, tags), threat.technique.id, event; for a correlation also correlation (group, first_ms, last_ms, count, value)"}})),
                "LogDetectionPage": obj(&["detections"], json!({"detections": {"type": "array", "items": {"$ref": "#/components/schemas/LogDetectionRecord"}}})),
                "LogStatus": obj(&["listen", "stats", "rules"], json!({
                    "listen": obj(&[], json!({"udp": {"type": ["string", "null"]}, "tcp": {"type": ["string", "null"]}, "tls": {"type": ["string", "null"]}})),
                    "stats": obj(&[], json!({"received": s("integer"), "stored": s("integer"), "malformed": s("integer"),
                        "framing_errors": s("integer"), "udp_dropped": s("integer"), "udp_kernel_drops": {"type": ["integer", "null"]},
                        "write_errors": s("integer"), "connections": s("integer")})),
                    "rules": obj(&[], json!({"files": s("integer"), "rules_loaded": s("integer"), "correlations_loaded": s("integer"),
                        "problems": {"type": "array", "items": s("string")}}))})),
                "TokenCreateRequest": obj(&["ttl_secs", "uses"], json!({"ttl_secs": s("integer"), "uses": s("integer"), "label": s("string")})),
                "TokenCreated": obj(&["id", "token", "expires_at", "uses", "label"], json!({
                    "id": s("integer"), "token": s("string"), "expires_at": s("string"), "uses": s("integer"), "label": s("string")})),
                "TokenList": {"type": "array", "items": obj(&["id"], json!({
                    "id": s("integer"), "label": s("string"), "created": s("string"), "expires_at": s("string"),
                    "uses_left": s("integer"), "uses_total": s("integer")}))}
            }
        }
    });
    // A separate literal: one `json!` this size exceeds the macro recursion limit.
    if let (Some(schemas), Value::Object(more)) =
        (doc["components"]["schemas"].as_object_mut(), command_schemas())
    {
        schemas.extend(more);
    }
    doc
}

fn command_schemas() -> Value {
    let s = |t: &str| json!({"type": t});
    let actions: Vec<&str> = mamori_proto::CommandAction::ALL.iter().map(|a| a.as_str()).collect();
    let target = json!({"type": "string", "maxLength": 128, "description":
        "What the action applies to: the quarantine id of quarantine_restore / quarantine_delete, the \
         snapshot's full name (64 lowercase hexadecimal characters) of backup_restore; empty for the others"});
    json!({
        "CommandAction": {"type": "string", "enum": actions},
        "AgentCommand": obj(&["id", "action", "created_ms"], json!({
            "id": s("string"), "action": {"$ref": "#/components/schemas/CommandAction"},
            "target": target, "reason": s("string"), "created_ms": s("integer")})),
        "CommandRequest": obj(&["action"], json!({
            "action": {"$ref": "#/components/schemas/CommandAction"}, "target": target,
            "reason": {"type": "string", "maxLength": 1000}})),
        "CommandResult": obj(&["success"], json!({"success": s("boolean"), "message": s("string")})),
        "CommandRecord": obj(&["id", "agent_id", "action", "reason", "created", "status"], json!({
            "id": s("string"), "agent_id": s("string"), "action": {"$ref": "#/components/schemas/CommandAction"},
            "target": target, "reason": s("string"), "created": s("string"),
            "status": {"type": "string", "enum": ["pending", "succeeded", "failed"]},
            "completed": {"type": ["string", "null"]}, "message": {"type": ["string", "null"]}})),
        "CommandList": {"type": "array", "items": {"$ref": "#/components/schemas/CommandRecord"}}
    })
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves_and_command_routes_are_described() {
        let doc = super::document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.iter().any(|r| r.ends_with("/CommandRecord")));
        for r in found {
            let pointer = r.strip_prefix('#').expect("local reference");
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
        let paths = doc["paths"].as_object().expect("paths");
        assert!(paths[mamori_proto::path::COMMAND_RESULT]["post"].is_object());
        assert!(paths[mamori_proto::path::ADMIN_AGENT_COMMANDS]["post"].is_object());
        assert!(paths[mamori_proto::path::ADMIN_AGENT_COMMANDS]["get"].is_object());
        let actions = &doc["components"]["schemas"]["CommandAction"]["enum"];
        let all: Vec<&str> = mamori_proto::CommandAction::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(actions, &serde_json::json!(all), "every action the API accepts");
        assert!(all.contains(&"backup_restore"));
    }
}
