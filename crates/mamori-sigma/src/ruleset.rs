//! Loading rule files into a [`RuleSet`], the logsource index, and evaluation.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::detection::{Atoms, CompileCtx, Detection, EvalCtx, FieldTable, FilterPart, Scratch};
use crate::pipeline::Pipeline;
use crate::Event;

/// A correlation rule document, handed over untouched to `mamori-correlate`.
#[derive(Debug, Clone)]
pub struct CorrelationDoc {
    pub origin: PathBuf,
    pub doc: Value,
}

/// A rule (or document) that could not be loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleProblem {
    pub path: PathBuf,
    /// The rule's id, or its title when it has no id.
    pub rule: Option<String>,
    pub reason: String,
}

/// What loading did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Rule files read (YAML files found under the given paths).
    pub files: usize,
    pub rules_loaded: usize,
    pub problems: Vec<RuleProblem>,
    pub correlations: Vec<CorrelationDoc>,
}

/// A rule's `logsource` (lowercased).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Logsource {
    pub product: Option<String>,
    pub service: Option<String>,
    pub category: Option<String>,
}

/// What a rule is, for output and correlation.
#[derive(Debug, Clone, Default)]
pub struct RuleInfo {
    pub id: Option<String>,
    pub name: Option<String>,
    pub title: String,
    pub level: Option<String>,
    pub status: Option<String>,
    pub tags: Vec<String>,
    pub logsource: Logsource,
    pub path: PathBuf,
    pub description: Option<String>,
    pub author: Option<String>,
    pub references: Vec<String>,
    pub falsepositives: Vec<String>,
}

impl RuleInfo {
    /// ATT&CK technique ids from the tags (`attack.t1059.001` → `T1059.001`).
    pub fn attack_techniques(&self) -> Vec<String> {
        self.tags
            .iter()
            .filter_map(|tag| tag.strip_prefix("attack."))
            .filter(|t| {
                t.len() > 1 && t.starts_with(['t', 'T']) && t[1..2].chars().all(|c| c.is_ascii_digit())
            })
            .map(|t| t.to_uppercase())
            .collect()
    }
}

/// Compiled Sigma detection rules, indexed by logsource. Cloning is cheap (shared).
#[derive(Clone)]
pub struct RuleSet {
    inner: Arc<Inner>,
}

/// A rule in the logsource index, with the one or two atom groups of its narrowest prefilter
/// clause inline: most rules are rejected by this check alone, without touching the rule.
#[derive(Clone, Copy)]
struct Gated {
    rule: u32,
    gate: [u32; 2],
}

const NO_GATE: u32 = u32::MAX;

struct Inner {
    detections: Vec<Detection>,
    infos: Vec<RuleInfo>,
    fields: FieldTable,
    atoms: Atoms,
    pipeline: Pipeline,
    /// Interned (lowercased) logsource values; id 0 means "not set by the rule".
    logsource_values: HashMap<String, u32>,
    /// (product, service, category) ids → rules, each with its gate.
    index: HashMap<(u32, u32, u32), Vec<Gated>>,
    /// Per rule: range in `prefilter_clauses` of the clauses that must all hold for the rule
    /// to possibly match (a clause holds when one of its atom groups is marked); an empty
    /// range when the rule must always be evaluated.
    prefilter: Vec<(u32, u32)>,
    /// Ranges in `prefilter_groups`.
    prefilter_clauses: Vec<(u32, u32)>,
    prefilter_groups: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

const UNKNOWN: u32 = u32::MAX;

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet").field("rules", &self.len()).finish()
    }
}

/// A YAML document of a file, after classification.
enum Doc {
    Rule(Map<String, Value>),
    Filter(Map<String, Value>),
}

struct SourcedDoc {
    path: PathBuf,
    doc: Doc,
}

impl RuleSet {
    /// Loads every `.yml`/`.yaml` file under `paths` (directories recursively; files given
    /// directly are read whatever their extension).
    pub fn load(paths: &[PathBuf], pipeline: &Pipeline) -> (RuleSet, LoadReport) {
        let mut report = LoadReport::default();
        let mut files = Vec::new();
        for path in paths {
            collect_files(path, &mut files, &mut report);
        }
        // Reading and YAML parsing are a third of loading SigmaHQ and independent per file;
        // compiling shares the field tables and stays on one thread. Results are merged in
        // file order, so the rule order does not depend on the threads.
        let parsed: Vec<(Vec<SourcedDoc>, LoadReport)> = files
            .par_iter()
            .map(|file| {
                let mut part = LoadReport::default();
                let mut docs = Vec::new();
                match std::fs::read(file) {
                    Err(e) => part.problems.push(problem(file, None, format!("cannot read: {e}"))),
                    Ok(bytes) => match String::from_utf8(bytes) {
                        Err(_) => part.problems.push(problem(file, None, "not UTF-8 text".into())),
                        Ok(text) => split_documents(&text, file, &mut docs, &mut part),
                    },
                }
                (docs, part)
            })
            .collect();
        let mut docs = Vec::new();
        for (file_docs, part) in parsed {
            report.files += 1;
            report.problems.extend(part.problems);
            report.correlations.extend(part.correlations);
            docs.extend(file_docs);
        }
        let set = build(docs, pipeline, &mut report);
        (set, report)
    }

    /// Loads the documents of one YAML text (path `<memory>` in problems).
    pub fn from_yaml(text: &str, pipeline: &Pipeline) -> (RuleSet, LoadReport) {
        let mut report = LoadReport { files: 1, ..LoadReport::default() };
        let mut docs = Vec::new();
        split_documents(text, Path::new("<memory>"), &mut docs, &mut report);
        let set = build(docs, pipeline, &mut report);
        (set, report)
    }

    pub fn len(&self) -> usize {
        self.inner.infos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.infos.is_empty()
    }

    /// The rule at `index` (as returned by [`RuleSet::evaluate`]).
    ///
    /// # Panics
    /// When `index` is not below [`RuleSet::len`].
    pub fn rule(&self, index: usize) -> &RuleInfo {
        &self.inner.infos[index]
    }

    pub fn rules(&self) -> &[RuleInfo] {
        &self.inner.infos
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.inner.pipeline
    }

    /// Appends to `matches` the indices (ascending) of the rules that match `event`. Only
    /// the rules whose logsource fits the event's are evaluated.
    pub fn evaluate(&self, event: &Event, matches: &mut Vec<usize>) {
        self.evaluate_with(event, matches, false);
    }

    /// Like [`RuleSet::evaluate`] without the speed-ups (literal prefilter, shared
    /// multi-pattern scans): every rule of the event's logsource, every value matched
    /// directly. The reference the fast path is tested against; slow.
    pub fn evaluate_exhaustive(&self, event: &Event, matches: &mut Vec<usize>) {
        self.evaluate_with(event, matches, true);
    }

    fn evaluate_with(&self, event: &Event, matches: &mut Vec<usize>, exhaustive: bool) {
        let inner = &*self.inner;
        let logsource = inner.pipeline.event_logsource(event);
        let id_of = |value: Option<&str>| match value {
            None => UNKNOWN,
            Some(v) => match inner.logsource_values.get(v) {
                Some(id) => *id,
                None if v.bytes().any(|b| b.is_ascii_uppercase()) => {
                    inner.logsource_values.get(&v.to_ascii_lowercase()).copied().unwrap_or(UNKNOWN)
                }
                None => UNKNOWN,
            },
        };
        let product = id_of(logsource.product);
        let service = id_of(logsource.service);
        // Category ids without allocating: "not set by the rule" (0), then each known
        // category of the event once.
        let category_ids = || {
            std::iter::once(0).chain(
                logsource
                    .categories()
                    .enumerate()
                    .map(|(i, c)| (i, id_of(Some(c))))
                    .filter(|&(i, id)| {
                        id != UNKNOWN
                            && !logsource.categories().take(i).any(|earlier| id_of(Some(earlier)) == id)
                    })
                    .map(|(_, id)| id),
            )
        };
        let mut active_mappings = 0u64;
        for (bit, mapping) in inner.pipeline.field_mappings.iter().enumerate() {
            if mapping.event_conditions.iter().all(|c| c.matches_event(&logsource)) {
                active_mappings |= 1 << bit;
            }
        }
        let start = matches.len();
        SCRATCH.with(|scratch| {
            let Ok(mut scratch) = scratch.try_borrow_mut() else {
                return;
            };
            let mut ctx = EvalCtx::new(event, &inner.fields, &inner.atoms, active_mappings, &mut scratch);
            ctx.set_direct(exhaustive);
            if !exhaustive {
                ctx.scan_all_fields();
            }
            for p in [0, product] {
                if p == UNKNOWN {
                    continue;
                }
                for s in [0, service] {
                    if s == UNKNOWN {
                        continue;
                    }
                    for c in category_ids() {
                        if let Some(rules) = inner.index.get(&(p, s, c)) {
                            for &Gated { rule, gate } in rules {
                                if !exhaustive
                                    && gate[0] != NO_GATE
                                    && !ctx.group_marked(gate[0])
                                    && (gate[1] == NO_GATE || !ctx.group_marked(gate[1]))
                                {
                                    continue;
                                }
                                let (start, len) = inner.prefilter[rule as usize];
                                let clauses =
                                    &inner.prefilter_clauses[start as usize..(start + len) as usize];
                                if !exhaustive
                                    && !clauses.iter().all(|&(start, len)| {
                                        ctx.any_group(
                                            &inner.prefilter_groups[start as usize..(start + len) as usize],
                                        )
                                    })
                                {
                                    continue;
                                }
                                if inner.detections[rule as usize].is_match(&mut ctx) {
                                    matches.push(rule as usize);
                                }
                            }
                        }
                    }
                }
            }
        });
        matches[start..].sort_unstable();
    }

    /// How many rules have a prefilter (a set of literals one of which must occur in the
    /// event for the rule to be evaluated at all); the others are evaluated for every event
    /// of their logsource.
    pub fn prefiltered_rules(&self) -> usize {
        self.inner.prefilter.iter().filter(|(_, len)| *len > 0).count()
    }

    /// Whether the rule at `index` has a prefilter (see [`RuleSet::prefiltered_rules`]).
    pub fn is_prefiltered(&self, index: usize) -> bool {
        self.inner.prefilter.get(index).is_some_and(|(_, len)| *len > 0)
    }

    /// Convenience for tests and tools: the matching rule indices of one event.
    pub fn matching(&self, event: &Event) -> Vec<usize> {
        let mut matches = Vec::new();
        self.evaluate(event, &mut matches);
        matches
    }
}

fn problem(path: &Path, rule: Option<String>, reason: String) -> RuleProblem {
    RuleProblem { path: path.to_path_buf(), rule, reason }
}

fn collect_files(path: &Path, files: &mut Vec<PathBuf>, report: &mut LoadReport) {
    let metadata = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            report.problems.push(problem(path, None, format!("cannot read: {e}")));
            return;
        }
    };
    if !metadata.is_dir() {
        files.push(path.to_path_buf());
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => {
            report.problems.push(problem(path, None, format!("cannot list directory: {e}")));
            return;
        }
    };
    let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    children.sort();
    for child in children {
        let is_dir = std::fs::metadata(&child).map(|m| m.is_dir()).unwrap_or(false);
        if is_dir {
            collect_files(&child, files, report);
        } else if child
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("yml") || e.eq_ignore_ascii_case("yaml"))
        {
            files.push(child);
        }
    }
}

fn rule_label(map: &Map<String, Value>) -> Option<String> {
    ["id", "title", "name"].iter().find_map(|key| map.get(*key).and_then(Value::as_str).map(str::to_string))
}

fn split_documents(text: &str, path: &Path, docs: &mut Vec<SourcedDoc>, report: &mut LoadReport) {
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = match Value::deserialize(document) {
            Ok(value) => value,
            Err(e) => {
                report.problems.push(problem(path, None, format!("YAML document {}: {e}", index + 1)));
                // The parser cannot resynchronise after a syntax error.
                break;
            }
        };
        let map = match value {
            Value::Null => continue,
            Value::Object(map) => map,
            _ => {
                report.problems.push(problem(
                    path,
                    None,
                    format!("YAML document {} is not a map", index + 1),
                ));
                continue;
            }
        };
        if map.contains_key("correlation") {
            report.correlations.push(CorrelationDoc { origin: path.to_path_buf(), doc: Value::Object(map) });
        } else if map.contains_key("detection") {
            docs.push(SourcedDoc { path: path.to_path_buf(), doc: Doc::Rule(map) });
        } else if map.contains_key("filter") {
            docs.push(SourcedDoc { path: path.to_path_buf(), doc: Doc::Filter(map) });
        } else if map.get("action").and_then(Value::as_str).is_some() {
            report.problems.push(problem(
                path,
                rule_label(&map),
                "Sigma 1.0 rule collections (`action: global/repeat/reset`) are not supported".into(),
            ));
        } else {
            report.problems.push(problem(
                path,
                rule_label(&map),
                "document has neither detection, correlation nor filter".into(),
            ));
        }
    }
}

fn string_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn text_of(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key).and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn parse_logsource(map: &Map<String, Value>) -> Result<Logsource, String> {
    let logsource = match map.get("logsource") {
        Some(Value::Object(ls)) => ls,
        Some(_) => return Err("logsource must be a map".into()),
        None => return Err("missing logsource".into()),
    };
    let part = |key: &str| -> Result<Option<String>, String> {
        match logsource.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.to_lowercase())),
            Some(_) => Err(format!("logsource.{key} must be a string")),
        }
    };
    Ok(Logsource { product: part("product")?, service: part("service")?, category: part("category")? })
}

struct FilterEntry {
    path: PathBuf,
    label: String,
    logsource: Logsource,
    filter: Map<String, Value>,
    used: bool,
}

fn build(docs: Vec<SourcedDoc>, pipeline: &Pipeline, report: &mut LoadReport) -> RuleSet {
    // Filters first: they change the rules they name.
    let mut filters: Vec<FilterEntry> = Vec::new();
    let mut filters_by_target: HashMap<String, Vec<usize>> = HashMap::new();
    let mut rules = Vec::new();
    for SourcedDoc { path, doc } in docs {
        match doc {
            Doc::Rule(map) => rules.push((path, map)),
            Doc::Filter(map) => {
                let label = rule_label(&map).unwrap_or_else(|| "<untitled filter>".into());
                let filter = match map.get("filter") {
                    Some(Value::Object(f)) => f.clone(),
                    _ => {
                        report.problems.push(problem(&path, Some(label), "filter must be a map".into()));
                        continue;
                    }
                };
                let targets = string_list(filter.get("rules"));
                if targets.is_empty() {
                    report.problems.push(problem(&path, Some(label), "filter names no rules".into()));
                    continue;
                }
                let logsource = match parse_logsource(&map) {
                    Ok(ls) => ls,
                    Err(e) => {
                        report.problems.push(problem(&path, Some(label), e));
                        continue;
                    }
                };
                let index = filters.len();
                for target in targets {
                    filters_by_target.entry(target).or_default().push(index);
                }
                filters.push(FilterEntry { path, label, logsource, filter, used: false });
            }
        }
    }

    let mut fields = FieldTable::default();
    let mut atoms = Atoms::default();
    let mut detections = Vec::new();
    let mut infos = Vec::new();
    for (path, map) in rules {
        let label = rule_label(&map);
        match compile_rule(&path, &map, pipeline, &mut fields, &mut atoms, &mut filters, &filters_by_target) {
            Ok((detection, info)) => {
                detections.push(detection);
                infos.push(info);
            }
            Err(reason) => report.problems.push(problem(&path, label, reason)),
        }
    }
    for filter in &filters {
        if !filter.used {
            report.problems.push(problem(
                &filter.path,
                Some(filter.label.clone()),
                "filter matches no loaded rule (by id, name or title) with a compatible logsource".into(),
            ));
        }
    }

    report.rules_loaded = infos.len();
    // Without every automaton, atom groups are incomplete: evaluate every rule instead.
    let prefilter_usable = atoms.finish(fields.names.len());
    let mut prefilter_groups = Vec::new();
    let mut prefilter_clauses = Vec::new();
    let mut gates = Vec::with_capacity(detections.len());
    let prefilter = detections
        .iter()
        .map(|detection| {
            let clauses = if prefilter_usable { detection.requirement() } else { Vec::new() };
            let narrowest = clauses.iter().min_by_key(|clause| clause.len());
            gates.push(match narrowest.map(Vec::as_slice) {
                Some([only]) => [*only, NO_GATE],
                Some([first, second]) => [*first, *second],
                _ => [NO_GATE, NO_GATE],
            });
            let start = prefilter_clauses.len() as u32;
            for clause in &clauses {
                prefilter_clauses.push((prefilter_groups.len() as u32, clause.len() as u32));
                prefilter_groups.extend_from_slice(clause);
            }
            (start, clauses.len() as u32)
        })
        .collect();
    let mut logsource_values: HashMap<String, u32> = HashMap::new();
    let mut index: HashMap<(u32, u32, u32), Vec<Gated>> = HashMap::new();
    let mut intern = |value: &Option<String>| match value {
        None => 0,
        Some(v) => {
            let next = logsource_values.len() as u32 + 1;
            *logsource_values.entry(v.clone()).or_insert(next)
        }
    };
    for (rule, info) in infos.iter().enumerate() {
        let key = (
            intern(&info.logsource.product),
            intern(&info.logsource.service),
            intern(&info.logsource.category),
        );
        index.entry(key).or_default().push(Gated { rule: rule as u32, gate: gates[rule] });
    }
    RuleSet {
        inner: Arc::new(Inner {
            detections,
            infos,
            fields,
            atoms,
            pipeline: pipeline.clone(),
            logsource_values,
            index,
            prefilter,
            prefilter_clauses,
            prefilter_groups,
        }),
    }
}

fn compile_rule(
    path: &Path,
    map: &Map<String, Value>,
    pipeline: &Pipeline,
    fields: &mut FieldTable,
    atoms: &mut Atoms,
    filters: &mut [FilterEntry],
    filters_by_target: &HashMap<String, Vec<usize>>,
) -> Result<(Detection, RuleInfo), String> {
    let title = match map.get("title") {
        Some(Value::String(t)) if !t.trim().is_empty() => t.clone(),
        _ => return Err("missing title".into()),
    };
    let logsource = parse_logsource(map)?;
    let detection = match map.get("detection") {
        Some(Value::Object(d)) => d,
        _ => return Err("detection must be a map".into()),
    };
    let info = RuleInfo {
        id: text_of(map, "id"),
        name: text_of(map, "name"),
        title,
        level: text_of(map, "level"),
        status: text_of(map, "status"),
        tags: string_list(map.get("tags")),
        logsource,
        path: path.to_path_buf(),
        description: text_of(map, "description"),
        author: text_of(map, "author"),
        references: string_list(map.get("references")),
        falsepositives: string_list(map.get("falsepositives")),
    };

    let mut applicable = Vec::new();
    for key in [&info.id, &info.name, &Some(info.title.clone())].into_iter().flatten() {
        for &filter in filters_by_target.get(key).into_iter().flatten() {
            if !applicable.contains(&filter)
                && logsource_compatible(&filters[filter].logsource, &info.logsource)
            {
                applicable.push(filter);
            }
        }
    }
    let parts: Vec<FilterPart<'_>> = applicable
        .iter()
        .map(|&f| FilterPart { label: filters[f].label.clone(), detection: &filters[f].filter })
        .collect();

    let ls = &info.logsource;
    let mappings = pipeline
        .field_mappings
        .iter()
        .enumerate()
        .filter(|(_, m)| {
            m.rule_conditions
                .iter()
                .all(|c| c.matches_rule(ls.product.as_deref(), ls.service.as_deref(), ls.category.as_deref()))
        })
        .map(|(bit, m)| (bit as u8, m))
        .collect();
    let mut ctx = CompileCtx { fields, atoms, mappings, vars: &pipeline.vars };
    let detection = Detection::compile(detection, &parts, &mut ctx)?;
    drop(parts);
    for filter in applicable {
        filters[filter].used = true;
    }
    Ok((detection, info))
}

/// A filter applies when every logsource part both set agree.
fn logsource_compatible(filter: &Logsource, rule: &Logsource) -> bool {
    let agree = |a: &Option<String>, b: &Option<String>| match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    agree(&filter.product, &rule.product)
        && agree(&filter.service, &rule.service)
        && agree(&filter.category, &rule.category)
}
