//! Writers: a human timeline with a summary, JSON lines, CSV.

use std::io::{self, Write};

use serde_json::{json, Map, Value};

use crate::hunt::{Detection, DetectionKind, HuntResult};
use crate::summary::Summary;

/// `2020-12-17 10:38:33.951` (UTC) for the human and CSV forms; RFC 3339 for JSON.
fn time_text(time_ms: i64, rfc3339: bool) -> String {
    match jiff::Timestamp::from_millisecond(time_ms) {
        Ok(time) if rfc3339 => format!("{time:.3}"),
        Ok(time) => time.strftime("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        Err(_) => time_ms.to_string(),
    }
}

fn kind_text(kind: &DetectionKind) -> &'static str {
    match kind {
        DetectionKind::Rule => "rule",
        DetectionKind::Correlation => "correlation",
    }
}

/// The host an event is about: EVTX `Computer`, logs `host.name`.
fn host_of(event: &Map<String, Value>) -> String {
    ["Computer", "host.name", "observer.hostname"]
        .iter()
        .find_map(|key| event.get(*key))
        .map(scalar_text)
        .unwrap_or_default()
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A short, single-line description of the event for the timeline.
fn details(detection: &Detection) -> String {
    let event = &detection.event;
    if detection.rule.kind == DetectionKind::Correlation {
        let mut parts: Vec<String> = event
            .iter()
            .filter(|(key, _)| !matches!(key.as_str(), "first_ms" | "last_ms"))
            .map(|(key, value)| format!("{key}={}", scalar_text(value)))
            .collect();
        parts.truncate(6);
        return parts.join(" ");
    }
    let mut parts = Vec::new();
    for key in [
        "EventID",
        "CommandLine",
        "Image",
        "ServiceName",
        "ImagePath",
        "TargetUserName",
        "IpAddress",
        "log.original",
    ] {
        if let Some(value) = event.get(key) {
            let text = scalar_text(value);
            if !text.is_empty() && text != "-" {
                parts.push(format!("{key}={text}"));
            }
        }
        if parts.len() >= 3 {
            break;
        }
    }
    one_line(&parts.join(" "), 160)
}

fn one_line(text: &str, max_chars: usize) -> String {
    let flat: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if flat.chars().count() <= max_chars {
        flat
    } else {
        let mut cut: String = flat.chars().take(max_chars - 1).collect();
        cut.push('…');
        cut
    }
}

fn source_text(detection: &Detection) -> String {
    let name = detection.source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match detection.record_id {
        Some(record) => format!("{name}#{record}"),
        None => name,
    }
}

/// The timeline (one line per detection), then the summary.
pub fn write_human(out: &mut dyn Write, result: &HuntResult) -> io::Result<()> {
    if !result.detections.is_empty() {
        writeln!(
            out,
            "{:<23}  {:<13}  {:<60}  {:<20}  {:<40}  DETAILS",
            "TIME (UTC)", "LEVEL", "RULE", "HOST", "SOURCE"
        )?;
    }
    for detection in &result.detections {
        let mut title = detection.rule.title.clone();
        if detection.rule.kind == DetectionKind::Correlation {
            title = format!("[correlation] {title}");
        }
        writeln!(
            out,
            "{:<23}  {:<13}  {:<60}  {:<20}  {:<40}  {}",
            time_text(detection.time_ms, false),
            detection.rule.level.as_deref().unwrap_or("-"),
            one_line(&title, 60),
            one_line(&host_of(&detection.event), 20),
            one_line(&source_text(detection), 40),
            details(detection)
        )?;
    }
    writeln!(out)?;
    write_human_summary(out, &result.summary)
}

fn write_human_summary(out: &mut dyn Write, summary: &Summary) -> io::Result<()> {
    writeln!(out, "Summary")?;
    writeln!(
        out,
        "  rules: {} loaded from {} files, {} not loaded (unsupported or invalid), {} correlation rules",
        summary.rules_loaded, summary.rule_files, summary.rules_unsupported, summary.correlations_loaded
    )?;
    writeln!(
        out,
        "  input: {} files ({} EVTX, {} text logs), {} bytes, {} records in {:.2} s",
        summary.files_total,
        summary.evtx_files,
        summary.log_files,
        summary.bytes_read,
        summary.records_read,
        summary.elapsed_ms as f64 / 1000.0
    )?;
    if summary.record_errors > 0 || !summary.input_problems.is_empty() {
        writeln!(
            out,
            "  input problems: {} unreadable records/lines, {} files or paths:",
            summary.record_errors,
            summary.input_problems.len()
        )?;
        for problem in &summary.input_problems {
            writeln!(out, "    {}: {}", problem.path.display(), problem.reason)?;
        }
    }
    for problem in &summary.correlation_problems {
        writeln!(out, "  correlation rule not loaded: {problem}")?;
    }
    let levels: Vec<String> =
        summary.per_level.iter().map(|(level, count)| format!("{level} {count}")).collect();
    writeln!(out, "  detections: {} ({})", summary.detections, levels.join(", "))?;
    for count in &summary.per_rule {
        writeln!(
            out,
            "    {:>6}  {:<13}  {}{}",
            count.count,
            count.rule.level.as_deref().unwrap_or("-"),
            if count.rule.kind == DetectionKind::Correlation { "[correlation] " } else { "" },
            count.rule.title
        )?;
    }
    Ok(())
}

fn rule_json(detection: &Detection) -> Value {
    json!({
        "kind": kind_text(&detection.rule.kind),
        "id": detection.rule.id,
        "title": detection.rule.title,
        "level": detection.rule.level,
        "tags": detection.rule.tags,
    })
}

/// One detection as the JSON object `--json` prints.
pub fn detection_json(detection: &Detection) -> Value {
    json!({
        "type": "detection",
        "@timestamp": time_text(detection.time_ms, true),
        "rule": rule_json(detection),
        "source": detection.source.display().to_string(),
        "record_id": detection.record_id,
        "event": detection.event,
    })
}

/// The summary as the JSON object `--json` prints last.
pub fn summary_json(summary: &Summary) -> Value {
    let per_rule: Vec<Value> = summary
        .per_rule
        .iter()
        .map(|count| {
            json!({
                "kind": kind_text(&count.rule.kind),
                "id": count.rule.id,
                "title": count.rule.title,
                "level": count.rule.level,
                "count": count.count,
            })
        })
        .collect();
    let per_level: Map<String, Value> =
        summary.per_level.iter().map(|(level, count)| (level.clone(), Value::from(*count))).collect();
    let problems: Vec<Value> = summary
        .input_problems
        .iter()
        .map(|p| json!({"path": p.path.display().to_string(), "reason": p.reason, "fatal": p.fatal}))
        .collect();
    json!({
        "type": "summary",
        "rules": {
            "files": summary.rule_files,
            "loaded": summary.rules_loaded,
            "unsupported": summary.rules_unsupported,
            "correlations_loaded": summary.correlations_loaded,
            "correlation_problems": summary.correlation_problems,
        },
        "input": {
            "files": summary.files_total,
            "evtx_files": summary.evtx_files,
            "log_files": summary.log_files,
            "bytes": summary.bytes_read,
            "records": summary.records_read,
            "record_errors": summary.record_errors,
            "problems": problems,
        },
        "detections": summary.detections,
        "per_level": per_level,
        "per_rule": per_rule,
        "elapsed_ms": summary.elapsed_ms,
    })
}

/// One JSON object per detection, then the summary object, one per line.
pub fn write_json(out: &mut dyn Write, result: &HuntResult) -> io::Result<()> {
    for detection in &result.detections {
        serde_json::to_writer(&mut *out, &detection_json(detection))?;
        out.write_all(b"\n")?;
    }
    serde_json::to_writer(&mut *out, &summary_json(&result.summary))?;
    out.write_all(b"\n")
}

/// RFC 4180 field quoting.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// A header, then one row per detection (the event as compact JSON in the last column).
pub fn write_csv(out: &mut dyn Write, result: &HuntResult) -> io::Result<()> {
    writeln!(out, "timestamp,level,kind,rule_title,rule_id,tags,host,source,record_id,event")?;
    for detection in &result.detections {
        let event = serde_json::to_string(&detection.event).unwrap_or_default();
        let row = [
            time_text(detection.time_ms, true),
            detection.rule.level.clone().unwrap_or_default(),
            kind_text(&detection.rule.kind).to_owned(),
            detection.rule.title.clone(),
            detection.rule.id.clone().unwrap_or_default(),
            detection.rule.tags.join(";"),
            host_of(&detection.event),
            detection.source.display().to_string(),
            detection.record_id.map(|r| r.to_string()).unwrap_or_default(),
            event,
        ];
        let fields: Vec<String> = row.iter().map(|field| csv_field(field)).collect();
        writeln!(out, "{}", fields.join(","))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\"\n"), "\"say \"\"hi\"\"\n\"");
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(time_text(1_608_201_513_951, false), "2020-12-17 10:38:33.951");
        assert_eq!(time_text(1_608_201_513_951, true), "2020-12-17T10:38:33.951Z");
    }
}
