//! Compiling a rule's `detection` section (search identifiers, field items, modifiers) and
//! evaluating it against one event.
//!
//! A search identifier is an OR of groups, a group an AND of items; an item is one field (or
//! the whole event, for keywords) with its values. Event values are read through a per-thread
//! cache that holds each field's text and lowercased text once per event, so a thousand
//! rules testing `CommandLine` lowercase it once.

use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::condition::{parse_condition, Cond};
use crate::pattern::{
    apply_transforms, expand_placeholders, lowercase_into, SigmaString, StrMatcher, Transform,
};
use crate::pipeline::FieldMapping;
use crate::Event;

/// Interned event field names; rules refer to fields by id.
#[derive(Debug, Default)]
pub(crate) struct FieldTable {
    pub names: Vec<String>,
    ids: HashMap<String, u32>,
    /// The pseudo-field of keyword search (all values of the event); no event key or rule
    /// field name resolves to it.
    pub keywords: Option<u32>,
}

impl FieldTable {
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), id);
        id
    }

    fn keywords_id(&mut self) -> u32 {
        if let Some(id) = self.keywords {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push("<keywords>".to_string());
        self.keywords = Some(id);
        id
    }
}

/// Case-insensitive literals ("atoms") tested on each field, across all rules. One
/// Aho-Corasick pass per field and event finds every literal present and where (anywhere, at
/// the start, at the end, the whole value), so `contains`/`startswith`/`endswith`/equality
/// tests become lookups. Items whose values are all atoms form an "atom group": the scan
/// marks the group directly, so a list of 200 `contains` values costs one lookup.
#[derive(Default)]
pub(crate) struct Atoms {
    /// (field, literal) → index into that field's literal list.
    literal_index: HashMap<(u32, Vec<u8>), usize>,
    pending: HashMap<u32, Vec<PendingLiteral>>,
    atom_count: u32,
    group_count: u32,
    /// Per atom: the groups it completes.
    groups_by_atom: Vec<Vec<u32>>,
    automata: Vec<Option<FieldAutomaton>>,
}

/// Where a literal must occur in the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anchor {
    Anywhere = 0,
    Start = 1,
    End = 2,
    Whole = 3,
}

const NO_ATOM: u32 = u32::MAX;

struct PendingLiteral {
    literal: Vec<u8>,
    atoms: [u32; 4],
}

struct FieldAutomaton {
    automaton: aho_corasick::AhoCorasick,
    /// Per pattern: the atom for each anchor (NO_ATOM when unused).
    atoms: Vec<[u32; 4]>,
}

impl std::fmt::Debug for Atoms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Atoms").field("atoms", &self.atom_count).field("groups", &self.group_count).finish()
    }
}

impl Atoms {
    fn atom(&mut self, field: u32, literal: &[u8], anchor: Anchor) -> u32 {
        let pending = self.pending.entry(field).or_default();
        let index = *self.literal_index.entry((field, literal.to_vec())).or_insert_with(|| {
            pending.push(PendingLiteral { literal: literal.to_vec(), atoms: [NO_ATOM; 4] });
            pending.len() - 1
        });
        let slot = &mut pending[index].atoms[anchor as usize];
        if *slot == NO_ATOM {
            *slot = self.atom_count;
            self.atom_count += 1;
            self.groups_by_atom.push(Vec::new());
        }
        *slot
    }

    fn group(&mut self, atoms: &[u32]) -> u32 {
        let group = self.group_count;
        self.group_count += 1;
        for &atom in atoms {
            let groups = &mut self.groups_by_atom[atom as usize];
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
        group
    }

    pub fn counts(&self) -> (usize, usize) {
        (self.atom_count as usize, self.group_count as usize)
    }

    /// Builds the per-field automata once every rule is compiled. A field whose automaton
    /// cannot be built keeps working: its tests fall back to direct matching.
    /// Returns false when some automaton could not be built.
    pub fn finish(&mut self, field_count: usize) -> bool {
        use rayon::prelude::*;
        let mut all_built = true;
        self.automata = (0..field_count).map(|_| None).collect();
        // One automaton per field, independent of the others: built in parallel (a sixth of
        // loading SigmaHQ on one thread).
        let pending: Vec<_> = std::mem::take(&mut self.pending).into_iter().collect();
        let built: Vec<_> = pending
            .into_par_iter()
            .map(|(field, literals)| {
                let built = aho_corasick::AhoCorasick::builder()
                    .match_kind(aho_corasick::MatchKind::Standard)
                    .build(literals.iter().map(|p| &p.literal));
                (field, literals, built)
            })
            .collect();
        for (field, literals, built) in built {
            if let Ok(automaton) = built {
                let atoms = literals.iter().map(|p| p.atoms).collect();
                if let Some(slot) = self.automata.get_mut(field as usize) {
                    *slot = Some(FieldAutomaton { automaton, atoms });
                }
            } else {
                all_built = false;
            }
        }
        all_built
    }

    #[inline]
    fn has_automaton(&self, field: u32) -> bool {
        matches!(self.automata.get(field as usize), Some(Some(_)))
    }
}

/// The event field a rule field reads: `default`, unless an active pipeline mapping (bit
/// index into the pipeline's `field_mappings`) says otherwise for this event.
#[derive(Debug, Clone)]
pub(crate) struct FieldRef {
    default: u32,
    overrides: Vec<(u8, u32)>,
}

impl FieldRef {
    #[inline]
    fn resolve(&self, active_mappings: u64) -> u32 {
        for (bit, id) in &self.overrides {
            if active_mappings & (1u64 << bit) != 0 {
                return *id;
            }
        }
        self.default
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Lt,
    Lte,
    Gt,
    Gte,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefMode {
    Equals,
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug)]
enum Matcher {
    Str(StrMatcher),
    /// A case-insensitive literal test answered by the per-field atom scan; `atoms` holds the
    /// atom of each field this item may read (pipeline mappings), `fallback` matches directly.
    Atom {
        atoms: Vec<(u32, u32)>,
        fallback: StrMatcher,
    },
    /// A plain number: equal to a numeric event value or to its text.
    Number {
        value: f64,
        text: String,
    },
    Bool(bool),
    Null,
    Regex(regex::bytes::Regex),
    Cidr(Cidr),
    Compare(CmpOp, f64),
    FieldRef {
        other: FieldRef,
        mode: RefMode,
        cased: bool,
    },
}

#[derive(Debug)]
enum Target {
    Field(FieldRef),
    /// Field-less keyword search over every value of the event.
    Keywords,
}

#[derive(Debug)]
struct Item {
    target: Target,
    /// The rule's list of values; each may have expanded into alternatives (OR).
    values: Vec<Vec<Matcher>>,
    /// `all`: every value must match (AND), otherwise any (OR).
    all: bool,
    neq: bool,
    exists: Option<bool>,
    /// When every value is an atom (and not `all`): the item's atom group per field it may
    /// read. The item matches when the scan marked the group.
    groups: Vec<(u32, u32)>,
    /// Groups one of which must be marked for the item to match (rule prefilter).
    prefilter_groups: Vec<(u32, u32)>,
    has_field_refs: bool,
}

#[derive(Debug)]
struct Selection {
    /// OR of groups, each an AND of items.
    groups: Vec<Vec<Item>>,
}

/// A compiled detection: its search identifiers and condition.
#[derive(Debug)]
pub(crate) struct Detection {
    selections: Vec<Selection>,
    condition: Cond,
}

/// Everything compilation needs besides the detection itself.
pub(crate) struct CompileCtx<'a> {
    pub fields: &'a mut FieldTable,
    pub atoms: &'a mut Atoms,
    /// The pipeline mappings that apply to this rule's logsource, with their bit index.
    pub mappings: Vec<(u8, &'a FieldMapping)>,
    pub vars: &'a HashMap<String, Vec<String>>,
}

impl CompileCtx<'_> {
    fn field(&mut self, name: &str) -> FieldRef {
        let default = self.fields.intern(name);
        let mut overrides = Vec::new();
        for (bit, mapping) in &self.mappings {
            if let Some(target) = mapping.mapping.get(name) {
                overrides.push((*bit, self.fields.intern(target)));
            }
        }
        FieldRef { default, overrides }
    }
}

/// A filter document's contribution: its search identifiers and condition.
pub(crate) struct FilterPart<'a> {
    pub label: String,
    pub detection: &'a Map<String, Value>,
}

impl Detection {
    /// Compiles `detection`; each filter adds `and not (filter condition)`.
    pub fn compile(
        detection: &Map<String, Value>,
        filters: &[FilterPart<'_>],
        ctx: &mut CompileCtx<'_>,
    ) -> Result<Detection, String> {
        let mut selections = Vec::new();
        let names = compile_identifiers(detection, &["condition", "timeframe"], &mut selections, ctx)?;
        let condition = match detection.get("condition") {
            None => return Err("detection has no condition".into()),
            Some(value) => parse_condition_value(value, &names)?,
        };
        let mut parts = vec![condition];
        for filter in filters {
            let names = compile_identifiers(filter.detection, &["condition", "rules"], &mut selections, ctx)
                .map_err(|e| format!("filter {}: {e}", filter.label))?;
            let condition = match filter.detection.get("condition") {
                None => return Err(format!("filter {}: no condition", filter.label)),
                Some(value) => parse_condition_value(value, &names)
                    .map_err(|e| format!("filter {}: {e}", filter.label))?,
            };
            parts.push(Cond::Not(Box::new(condition)));
        }
        let condition = if parts.len() == 1 { parts.remove(0) } else { Cond::And(parts) };
        Ok(Detection { selections, condition })
    }

    /// A necessary condition for the rule to match, in conjunctive form: for every clause,
    /// one of its atom groups must be marked. Empty: nothing could be derived (always
    /// evaluate the rule).
    pub fn requirement(&self) -> Vec<Vec<u32>> {
        let mut clauses = self.cond_clauses(&self.condition).unwrap_or_default();
        for clause in &mut clauses {
            clause.sort_unstable();
            clause.dedup();
        }
        clauses.sort();
        clauses.dedup();
        clauses
    }

    /// `None` when no necessary literal is known for `cond`.
    fn cond_clauses(&self, cond: &Cond) -> Option<Vec<Vec<u32>>> {
        match cond {
            Cond::Selection(index) => self.selection_clauses(*index),
            Cond::Not(_) => None,
            // Every conjunct's clauses are necessary.
            Cond::And(parts) => {
                non_empty(parts.iter().filter_map(|p| self.cond_clauses(p)).flatten().collect())
            }
            Cond::All(indices) => {
                non_empty(indices.iter().filter_map(|i| self.selection_clauses(*i)).flatten().collect())
            }
            // Every alternative must have a clause; the union of one clause of each is necessary.
            Cond::Or(parts) => {
                let mut union = Vec::new();
                for part in parts {
                    union.extend(narrowest(self.cond_clauses(part)?));
                }
                Some(vec![union])
            }
            Cond::AtLeast(_, indices) => {
                let mut union = Vec::new();
                for index in indices {
                    union.extend(narrowest(self.selection_clauses(*index)?));
                }
                Some(vec![union])
            }
        }
    }

    fn selection_clauses(&self, index: usize) -> Option<Vec<Vec<u32>>> {
        let selection = self.selections.get(index)?;
        // neq items match when literals are absent: they give no clause.
        let item_clauses = |group: &Vec<Item>| -> Vec<Vec<u32>> {
            group
                .iter()
                .filter(|item| !item.neq && !item.prefilter_groups.is_empty())
                .map(|item| item.prefilter_groups.iter().map(|(_, g)| *g).collect())
                .collect()
        };
        match selection.groups.as_slice() {
            [group] => non_empty(item_clauses(group)),
            groups => {
                let mut union = Vec::new();
                for group in groups {
                    union.extend(narrowest(non_empty(item_clauses(group))?));
                }
                Some(vec![union])
            }
        }
    }

    pub fn is_match(&self, ctx: &mut EvalCtx<'_>) -> bool {
        self.eval_cond(&self.condition, ctx)
    }

    fn eval_cond(&self, cond: &Cond, ctx: &mut EvalCtx<'_>) -> bool {
        match cond {
            Cond::Selection(index) => self.eval_selection(*index, ctx),
            Cond::Not(inner) => !self.eval_cond(inner, ctx),
            Cond::And(parts) => parts.iter().all(|p| self.eval_cond(p, ctx)),
            Cond::Or(parts) => parts.iter().any(|p| self.eval_cond(p, ctx)),
            Cond::AtLeast(count, indices) => {
                let mut found = 0;
                for index in indices {
                    if self.eval_selection(*index, ctx) {
                        found += 1;
                        if found >= *count {
                            return true;
                        }
                    }
                }
                false
            }
            Cond::All(indices) => indices.iter().all(|i| self.eval_selection(*i, ctx)),
        }
    }

    fn eval_selection(&self, index: usize, ctx: &mut EvalCtx<'_>) -> bool {
        match self.selections.get(index) {
            Some(selection) => {
                selection.groups.iter().any(|group| group.iter().all(|item| eval_item(item, ctx)))
            }
            None => false,
        }
    }
}

fn parse_condition_value(value: &Value, names: &[(String, usize)]) -> Result<Cond, String> {
    match value {
        Value::String(text) => parse_condition(text, names),
        // A list of conditions is an OR of them.
        Value::Array(items) if !items.is_empty() => {
            let mut parts = Vec::new();
            for item in items {
                match item {
                    Value::String(text) => parts.push(parse_condition(text, names)?),
                    _ => return Err("condition list items must be strings".into()),
                }
            }
            Ok(if parts.len() == 1 { parts.remove(0) } else { Cond::Or(parts) })
        }
        _ => Err("condition must be a string or a list of strings".into()),
    }
}

fn compile_identifiers(
    detection: &Map<String, Value>,
    reserved: &[&str],
    selections: &mut Vec<Selection>,
    ctx: &mut CompileCtx<'_>,
) -> Result<Vec<(String, usize)>, String> {
    let mut names = Vec::new();
    for (name, definition) in detection {
        if reserved.contains(&name.as_str()) {
            continue;
        }
        let selection = compile_selection(definition, ctx).map_err(|e| format!("{name}: {e}"))?;
        names.push((name.clone(), selections.len()));
        selections.push(selection);
    }
    Ok(names)
}

fn compile_selection(definition: &Value, ctx: &mut CompileCtx<'_>) -> Result<Selection, String> {
    match definition {
        Value::Object(map) => Ok(Selection { groups: vec![compile_map(map, ctx)?] }),
        Value::Array(items) if items.is_empty() => Err("empty search identifier".into()),
        Value::Array(items) => {
            let mut groups = Vec::new();
            let mut keywords = Vec::new();
            for item in items {
                match item {
                    Value::Object(map) => groups.push(compile_map(map, ctx)?),
                    Value::Array(_) => return Err("nested lists are not valid here".into()),
                    scalar => keywords.push(scalar.clone()),
                }
            }
            if !keywords.is_empty() {
                groups.push(vec![compile_item(None, &[], &Value::Array(keywords), ctx)?]);
            }
            Ok(Selection { groups })
        }
        Value::String(_) | Value::Number(_) => {
            Ok(Selection { groups: vec![vec![compile_item(None, &[], definition, ctx)?]] })
        }
        _ => Err("a search identifier must be a map, a list or a keyword".into()),
    }
}

fn compile_map(map: &Map<String, Value>, ctx: &mut CompileCtx<'_>) -> Result<Vec<Item>, String> {
    if map.is_empty() {
        return Err("empty map".into());
    }
    let mut items = Vec::with_capacity(map.len());
    for (key, value) in map {
        let mut parts = key.split('|');
        let field = parts.next().unwrap_or_default();
        let modifiers: Vec<&str> = parts.collect();
        let field = if field.is_empty() { None } else { Some(field) };
        items.push(compile_item(field, &modifiers, value, ctx).map_err(|e| format!("{key}: {e}"))?);
    }
    Ok(items)
}

/// What the modifiers of one key say, once parsed.
#[derive(Default)]
struct Modifiers {
    transforms: Vec<Transform>,
    all: bool,
    cased: bool,
    neq: bool,
    expand: bool,
    exists: bool,
    regex: Option<String>,
    cidr: bool,
    compare: Option<CmpOp>,
    fieldref: bool,
}

fn parse_modifiers(names: &[&str]) -> Result<Modifiers, String> {
    let mut m = Modifiers::default();
    let mut in_regex = false;
    for name in names {
        if in_regex {
            let flag = match *name {
                "i" | "ignorecase" => Some("i"),
                "m" | "multiline" => Some("m"),
                "s" | "dotall" => Some("s"),
                _ => None,
            };
            if let (Some(flag), Some(flags)) = (flag, m.regex.as_mut()) {
                if !flags.contains(flag) {
                    flags.push_str(flag);
                }
                continue;
            }
        }
        in_regex = false;
        match *name {
            "contains" => m.transforms.push(Transform::Contains),
            "startswith" => m.transforms.push(Transform::StartsWith),
            "endswith" => m.transforms.push(Transform::EndsWith),
            "base64" => m.transforms.push(Transform::Base64),
            "base64offset" => m.transforms.push(Transform::Base64Offset),
            "utf16le" | "wide" => m.transforms.push(Transform::Utf16Le),
            "utf16be" => m.transforms.push(Transform::Utf16Be),
            "utf16" => m.transforms.push(Transform::Utf16Bom),
            "windash" => m.transforms.push(Transform::Windash),
            "all" => m.all = true,
            "cased" => m.cased = true,
            "neq" => m.neq = true,
            "expand" => m.expand = true,
            "exists" => m.exists = true,
            "re" => {
                m.regex = Some(String::new());
                in_regex = true;
            }
            "i" | "m" | "s" => return Err(format!("modifier {name} is only valid after re")),
            "cidr" => m.cidr = true,
            "lt" => m.compare = Some(CmpOp::Lt),
            "lte" => m.compare = Some(CmpOp::Lte),
            "gt" => m.compare = Some(CmpOp::Gt),
            "gte" => m.compare = Some(CmpOp::Gte),
            "fieldref" => m.fieldref = true,
            "minute" | "hour" | "day" | "week" | "month" | "year" => {
                return Err(format!("time modifier {name} is not supported"))
            }
            "" => return Err("empty modifier".into()),
            other => return Err(format!("unknown modifier {other}")),
        }
    }
    let kinds =
        [m.regex.is_some(), m.cidr, m.compare.is_some(), m.exists, m.fieldref].iter().filter(|k| **k).count();
    if kinds > 1 {
        return Err("re, cidr, lt/lte/gt/gte, exists and fieldref cannot be combined".into());
    }
    if (m.regex.is_some() || m.cidr || m.compare.is_some() || m.exists) && !m.transforms.is_empty() {
        return Err("string transformations cannot be combined with re, cidr, exists or comparisons".into());
    }
    Ok(m)
}

fn compile_item(
    field: Option<&str>,
    modifier_names: &[&str],
    value: &Value,
    ctx: &mut CompileCtx<'_>,
) -> Result<Item, String> {
    let mut modifiers = parse_modifiers(modifier_names)?;
    let anchored = modifiers
        .transforms
        .iter()
        .any(|t| matches!(t, Transform::Contains | Transform::StartsWith | Transform::EndsWith));
    if field.is_none() && !anchored && modifiers.regex.is_none() {
        // Keyword search is full-text search: the keyword may occur anywhere in a value.
        modifiers.transforms.push(Transform::Contains);
    }
    let target = match field {
        Some(name) => Target::Field(ctx.field(name)),
        None => Target::Keywords,
    };
    let raw_values: Vec<&Value> = match value {
        Value::Array(items) if items.is_empty() => return Err("empty value list".into()),
        Value::Array(items) => items.iter().collect(),
        Value::Object(_) => return Err("a field value cannot be a map".into()),
        other => vec![other],
    };
    if modifiers.all && raw_values.len() == 1 {
        // The specification forbids it; evaluation is still well defined, so accept it.
    }
    if modifiers.exists {
        let expected = match raw_values.as_slice() {
            [Value::Bool(b)] => *b,
            [Value::String(s)] if s.eq_ignore_ascii_case("true") => true,
            [Value::String(s)] if s.eq_ignore_ascii_case("false") => false,
            _ => return Err("exists needs one boolean value".into()),
        };
        if matches!(target, Target::Keywords) {
            return Err("exists needs a field".into());
        }
        return Ok(Item {
            target,
            values: Vec::new(),
            all: false,
            neq: false,
            exists: Some(expected),
            groups: Vec::new(),
            prefilter_groups: Vec::new(),
            has_field_refs: false,
        });
    }
    if matches!(target, Target::Keywords) && (modifiers.fieldref || modifiers.neq) {
        return Err("fieldref and neq need a field".into());
    }
    let mut values = Vec::with_capacity(raw_values.len());
    let mut all_atoms = true;
    let resolutions: Vec<u32> = match &target {
        Target::Field(field) => {
            std::iter::once(field.default).chain(field.overrides.iter().map(|(_, id)| *id)).collect()
        }
        Target::Keywords => vec![ctx.fields.keywords_id()],
    };
    for raw in raw_values {
        let mut matchers = compile_value(raw, &modifiers, ctx)?;
        for matcher in &mut matchers {
            let shape = match matcher {
                Matcher::Str(str_matcher) => str_matcher
                    .atom_shape()
                    .map(|(anchor, literal)| (anchor, literal.to_vec(), str_matcher.clone())),
                _ => None,
            };
            match shape {
                Some((anchor, literal, fallback)) => {
                    let atoms =
                        resolutions.iter().map(|&f| (f, ctx.atoms.atom(f, &literal, anchor))).collect();
                    *matcher = Matcher::Atom { atoms, fallback };
                }
                None => all_atoms = false,
            }
        }
        values.push(matchers);
    }
    let mut groups = Vec::new();
    if all_atoms && !modifiers.all && !values.is_empty() {
        for &field in &resolutions {
            let atoms: Vec<u32> = values
                .iter()
                .flatten()
                .filter_map(|m| match m {
                    Matcher::Atom { atoms, .. } => atoms.iter().find(|(f, _)| *f == field).map(|(_, a)| *a),
                    _ => None,
                })
                .collect();
            groups.push((field, ctx.atoms.group(&atoms)));
        }
    }
    // Keyword items give no prefilter: it would force a scan of every value of every event.
    let prefilter_groups = if matches!(target, Target::Keywords) {
        Vec::new()
    } else if !groups.is_empty() {
        groups.clone()
    } else {
        prefilter_groups_for(&values, modifiers.all, &resolutions, ctx)
    };
    let has_field_refs = values.iter().flatten().any(|m| matches!(m, Matcher::FieldRef { .. }));
    Ok(Item {
        target,
        values,
        all: modifiers.all,
        neq: modifiers.neq,
        exists: None,
        groups,
        prefilter_groups,
        has_field_refs,
    })
}

fn non_empty(clauses: Vec<Vec<u32>>) -> Option<Vec<Vec<u32>>> {
    if clauses.is_empty() {
        None
    } else {
        Some(clauses)
    }
}

/// The clause with the fewest groups (the most selective guess).
fn narrowest(clauses: Vec<Vec<u32>>) -> Vec<u32> {
    clauses.into_iter().min_by_key(Vec::len).unwrap_or_default()
}

/// The literal a matcher needs in the value, if any.
fn necessary_atom(matcher: &Matcher) -> Option<(Anchor, Vec<u8>)> {
    match matcher {
        Matcher::Str(m) => m.necessary_atom(),
        Matcher::Atom { fallback, .. } => fallback.necessary_atom(),
        _ => None,
    }
}

/// Groups one of which must be marked for the item to match: every alternative's literal
/// (OR of values), or, with `all`, those of the one value whose literals are longest.
fn prefilter_groups_for(
    values: &[Vec<Matcher>],
    all: bool,
    resolutions: &[u32],
    ctx: &mut CompileCtx<'_>,
) -> Vec<(u32, u32)> {
    let needed = |alternatives: &Vec<Matcher>| -> Option<Vec<(Anchor, Vec<u8>)>> {
        alternatives.iter().map(necessary_atom).collect()
    };
    let literals: Vec<(Anchor, Vec<u8>)> = if all {
        match values
            .iter()
            .filter_map(needed)
            .max_by_key(|atoms| atoms.iter().map(|(_, l)| l.len()).min().unwrap_or(0))
        {
            Some(atoms) => atoms,
            None => return Vec::new(),
        }
    } else {
        let mut literals = Vec::new();
        for alternatives in values {
            match needed(alternatives) {
                Some(atoms) => literals.extend(atoms),
                None => return Vec::new(),
            }
        }
        literals
    };
    if literals.is_empty() {
        return Vec::new();
    }
    resolutions
        .iter()
        .map(|&field| {
            let atoms: Vec<u32> =
                literals.iter().map(|(anchor, literal)| ctx.atoms.atom(field, literal, *anchor)).collect();
            (field, ctx.atoms.group(&atoms))
        })
        .collect()
}

fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn compile_value(raw: &Value, m: &Modifiers, ctx: &mut CompileCtx<'_>) -> Result<Vec<Matcher>, String> {
    if raw.is_null() {
        if !m.transforms.is_empty() || m.regex.is_some() || m.cidr || m.compare.is_some() || m.fieldref {
            return Err("null cannot be used with value modifiers".into());
        }
        return Ok(vec![Matcher::Null]);
    }
    let text = value_text(raw).ok_or("values must be strings, numbers, booleans or null")?;
    if let Some(flags) = &m.regex {
        let pattern = if flags.is_empty() { text } else { format!("(?{flags}){text}") };
        let regex = regex::bytes::RegexBuilder::new(&pattern)
            .size_limit(1 << 24)
            .build()
            .map_err(|e| format!("regular expression not supported: {}", first_line(&e.to_string())))?;
        return Ok(vec![Matcher::Regex(regex)]);
    }
    if m.cidr {
        return Ok(vec![Matcher::Cidr(Cidr::parse(&text).ok_or_else(|| format!("invalid CIDR {text:?}"))?)]);
    }
    if let Some(op) = m.compare {
        let number = match raw {
            Value::Number(n) => n.as_f64(),
            _ => text.trim().parse::<f64>().ok(),
        }
        .ok_or_else(|| format!("comparison needs a number, got {text:?}"))?;
        return Ok(vec![Matcher::Compare(op, number)]);
    }
    if m.fieldref {
        let mode = match m.transforms.as_slice() {
            [] => RefMode::Equals,
            [Transform::Contains] => RefMode::Contains,
            [Transform::StartsWith] => RefMode::StartsWith,
            [Transform::EndsWith] => RefMode::EndsWith,
            _ => return Err("fieldref only combines with contains, startswith or endswith".into()),
        };
        return Ok(vec![Matcher::FieldRef { other: ctx.field(&text), mode, cased: m.cased }]);
    }
    // Plain numbers and booleans keep their type; with string modifiers they become text.
    if m.transforms.is_empty() && !m.expand {
        match raw {
            Value::Number(n) => {
                return Ok(vec![Matcher::Number { value: n.as_f64().unwrap_or(f64::NAN), text }]);
            }
            Value::Bool(b) => return Ok(vec![Matcher::Bool(*b)]),
            _ => {}
        }
    }
    let texts = if m.expand { expand_placeholders(&text, ctx.vars)? } else { vec![text] };
    let mut matchers = Vec::new();
    for text in texts {
        for value in apply_transforms(SigmaString::parse(&text), &m.transforms)? {
            matchers.push(Matcher::Str(StrMatcher::compile(&value, m.cased)));
        }
    }
    Ok(matchers)
}

fn first_line(text: &str) -> String {
    text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or(text).trim().to_string()
}

/// An IPv4 or IPv6 network.
#[derive(Debug, Clone, Copy)]
struct Cidr {
    network: u128,
    mask: u128,
    v6: bool,
}

impl Cidr {
    fn parse(text: &str) -> Option<Cidr> {
        let (address, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u32>().ok()?)),
            None => (text.trim(), None),
        };
        let address: IpAddr = address.parse().ok()?;
        let (bits, value, v6) = match address {
            IpAddr::V4(v4) => (32, u32::from(v4) as u128, false),
            IpAddr::V6(v6) => (128, u128::from(v6), true),
        };
        let prefix = prefix.unwrap_or(bits);
        if prefix > bits {
            return None;
        }
        let mask = if prefix == 0 { 0 } else { (u128::MAX << (bits - prefix)) & (u128::MAX >> (128 - bits)) };
        Some(Cidr { network: value & mask, mask, v6 })
    }

    fn contains(&self, text: &str) -> bool {
        let Ok(address) = text.trim().trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() else {
            return false;
        };
        let value = match (address, self.v6) {
            (IpAddr::V4(v4), false) => u32::from(v4) as u128,
            (IpAddr::V6(v6), true) => u128::from(v6),
            (IpAddr::V6(v6), false) => match v6.to_ipv4_mapped() {
                Some(v4) => u32::from(v4) as u128,
                None => return false,
            },
            (IpAddr::V4(_), true) => return false,
        };
        value & self.mask == self.network
    }
}

/// One field's values for the current event: original and lowercased text of each scalar.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    generation: u32,
    present: bool,
    null: bool,
    original: String,
    lower: String,
    /// (original start, original end, lower start, lower end) per scalar value.
    parts: Vec<(u32, u32, u32, u32)>,
}

impl Slot {
    fn fill_from(&mut self, value: Option<&Value>) {
        self.original.clear();
        self.lower.clear();
        self.parts.clear();
        self.present = value.is_some();
        self.null = matches!(value, Some(Value::Null));
        if let Some(value) = value {
            self.push_value(value);
        }
    }

    fn push_value(&mut self, value: &Value) {
        use std::fmt::Write as _;
        let (o0, l0) = (self.original.len(), self.lower.len());
        match value {
            Value::String(s) => {
                self.original.push_str(s);
                lowercase_into(s, &mut self.lower);
            }
            Value::Number(n) => {
                let _ = write!(self.original, "{n}");
                self.lower.push_str(&self.original[o0..]);
            }
            Value::Bool(b) => {
                let text = if *b { "true" } else { "false" };
                self.original.push_str(text);
                self.lower.push_str(text);
            }
            Value::Array(items) => {
                for item in items {
                    self.push_value(item);
                }
                return;
            }
            // Objects should not occur in flat events; nulls have no text.
            Value::Null | Value::Object(_) => return,
        }
        self.parts.push((o0 as u32, self.original.len() as u32, l0 as u32, self.lower.len() as u32));
    }

    #[inline]
    fn texts(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let (original, lower) = (self.original.as_bytes(), self.lower.as_bytes());
        self.parts
            .iter()
            .map(move |&(a, b, c, d)| (&original[a as usize..b as usize], &lower[c as usize..d as usize]))
    }
}

/// Per-thread evaluation scratch, reused across events (no allocation once warm).
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    generation: u32,
    slots: Vec<Slot>,
    /// Per atom and per atom group: the generation (event) in which it was last seen.
    atom_generation: Vec<u32>,
    group_generation: Vec<u32>,
}

/// One evaluation: the event, the field mappings active for it, and the scratch.
pub(crate) struct EvalCtx<'a> {
    event: &'a Event,
    fields: &'a FieldTable,
    atoms: &'a Atoms,
    active_mappings: u64,
    scratch: &'a mut Scratch,
    /// Answer every test by direct matching, ignoring the atom scan (reference path).
    direct: bool,
}

impl<'a> EvalCtx<'a> {
    pub fn new(
        event: &'a Event,
        fields: &'a FieldTable,
        atoms: &'a Atoms,
        active_mappings: u64,
        scratch: &'a mut Scratch,
    ) -> Self {
        scratch.generation = scratch.generation.wrapping_add(1);
        if scratch.generation == 0 {
            // Wrapped: stale slots could look current; forget them all.
            scratch.slots.iter_mut().for_each(|s| s.generation = 0);
            scratch.atom_generation.iter_mut().for_each(|g| *g = 0);
            scratch.group_generation.iter_mut().for_each(|g| *g = 0);
            scratch.generation = 1;
        }
        if scratch.slots.len() < fields.names.len() {
            scratch.slots.resize_with(fields.names.len(), Slot::default);
        }
        let (atom_count, group_count) = atoms.counts();
        if scratch.atom_generation.len() < atom_count {
            scratch.atom_generation.resize(atom_count, 0);
        }
        if scratch.group_generation.len() < group_count {
            scratch.group_generation.resize(group_count, 0);
        }
        EvalCtx { event, fields, atoms, active_mappings, scratch, direct: false }
    }

    fn ensure(&mut self, id: u32) {
        let generation = self.scratch.generation;
        let slot = &mut self.scratch.slots[id as usize];
        if slot.generation != generation {
            slot.generation = generation;
            if Some(id) == self.fields.keywords {
                slot.fill_from(None);
                slot.present = true;
                for (key, value) in self.event {
                    // mamori's own bookkeeping is not part of the logged event.
                    if !key.starts_with("mamori.") {
                        slot.push_value(value);
                    }
                }
            } else {
                slot.fill_from(self.event.get(&self.fields.names[id as usize]));
            }
            if let Some(Some(field)) = self.atoms.automata.get(id as usize) {
                let (atom_generation, group_generation) =
                    (&mut self.scratch.atom_generation, &mut self.scratch.group_generation);
                let mut mark = |atom: u32| {
                    if atom != NO_ATOM && atom_generation[atom as usize] != generation {
                        atom_generation[atom as usize] = generation;
                        for &group in &self.atoms.groups_by_atom[atom as usize] {
                            group_generation[group as usize] = generation;
                        }
                    }
                };
                for (_, lower) in slot.texts() {
                    for found in field.automaton.find_overlapping_iter(lower) {
                        let atoms = field.atoms[found.pattern().as_usize()];
                        let at_start = found.start() == 0;
                        let at_end = found.end() == lower.len();
                        mark(atoms[Anchor::Anywhere as usize]);
                        if at_start {
                            mark(atoms[Anchor::Start as usize]);
                        }
                        if at_end {
                            mark(atoms[Anchor::End as usize]);
                        }
                        if at_start && at_end {
                            mark(atoms[Anchor::Whole as usize]);
                        }
                    }
                }
            }
        }
    }

    /// Disables the atom shortcuts: every test matches the value directly.
    pub fn set_direct(&mut self, direct: bool) {
        self.direct = direct;
    }

    /// Scans every event field that has an automaton, so that atom groups (and with them the
    /// rule prefilter) are complete before rules are evaluated.
    pub fn scan_all_fields(&mut self) {
        let event = self.event;
        for key in event.keys() {
            if let Some(&id) = self.fields.ids.get(key.as_str()) {
                if self.atoms.has_automaton(id) {
                    self.ensure(id);
                }
            }
        }
    }

    /// True when `group` was marked for this event.
    #[inline]
    pub fn group_marked(&self, group: u32) -> bool {
        self.scratch.group_generation[group as usize] == self.scratch.generation
    }

    /// True when one of `groups` was marked for this event.
    #[inline]
    pub fn any_group(&self, groups: &[u32]) -> bool {
        groups.iter().any(|g| self.scratch.group_generation[*g as usize] == self.scratch.generation)
    }
}

fn eval_item(item: &Item, ctx: &mut EvalCtx<'_>) -> bool {
    let slot_id = match &item.target {
        Target::Field(field) => {
            let id = field.resolve(ctx.active_mappings);
            ctx.ensure(id);
            // Field references read a second field; prepare it before borrowing.
            if item.has_field_refs {
                for alternatives in &item.values {
                    for matcher in alternatives {
                        if let Matcher::FieldRef { other, .. } = matcher {
                            let other = other.resolve(ctx.active_mappings);
                            ctx.ensure(other);
                        }
                    }
                }
            }
            id
        }
        Target::Keywords => {
            let Some(id) = ctx.fields.keywords else { return false };
            ctx.ensure(id);
            id
        }
    };
    let scratch = &*ctx.scratch;
    let slot = &scratch.slots[slot_id as usize];
    let slot_id = Some(slot_id);
    if let Some(expected) = item.exists {
        return slot.present == expected;
    }
    let atoms = ctx.atoms;
    let use_atoms = !ctx.direct;
    if let Some(field) = slot_id.filter(|f| use_atoms && !item.groups.is_empty() && atoms.has_automaton(*f)) {
        if let Some((_, group)) = item.groups.iter().find(|(f, _)| *f == field) {
            let matched = scratch.group_generation[*group as usize] == scratch.generation;
            return if item.neq { slot.present && !slot.null && !matched } else { matched };
        }
    }
    let value_matches = |alternatives: &Vec<Matcher>| {
        alternatives.iter().any(|m| {
            matcher_matches(m, slot, slot_id.filter(|_| use_atoms), scratch, atoms, ctx.active_mappings)
        })
    };
    let matched =
        if item.all { item.values.iter().all(value_matches) } else { item.values.iter().any(value_matches) };
    if item.neq {
        slot.present && !slot.null && !matched
    } else {
        matched
    }
}

#[inline]
fn matcher_matches(
    matcher: &Matcher,
    slot: &Slot,
    field: Option<u32>,
    scratch: &Scratch,
    atoms: &Atoms,
    active_mappings: u64,
) -> bool {
    match matcher {
        Matcher::Atom { atoms: candidates, fallback } => {
            if let Some(field) = field.filter(|f| atoms.has_automaton(*f)) {
                if let Some((_, atom)) = candidates.iter().find(|(f, _)| *f == field) {
                    return scratch.atom_generation[*atom as usize] == scratch.generation;
                }
            }
            slot.texts().any(|(_, lower)| fallback.is_match(lower))
        }
        Matcher::Null => !slot.present || slot.null,
        Matcher::Str(m) => {
            if m.cased {
                slot.texts().any(|(original, _)| m.is_match(original))
            } else {
                slot.texts().any(|(_, lower)| m.is_match(lower))
            }
        }
        Matcher::Number { value, text } => slot.texts().any(|(original, _)| {
            original == text.as_bytes()
                || std::str::from_utf8(original)
                    .ok()
                    .and_then(|s| s.trim().parse::<f64>().ok())
                    .is_some_and(|n| n == *value)
        }),
        Matcher::Bool(expected) => {
            let wanted: &[u8] = if *expected { b"true" } else { b"false" };
            slot.texts().any(|(_, lower)| lower == wanted)
        }
        Matcher::Regex(regex) => slot.texts().any(|(original, _)| regex.is_match(original)),
        Matcher::Cidr(cidr) => {
            slot.texts().any(|(original, _)| std::str::from_utf8(original).is_ok_and(|s| cidr.contains(s)))
        }
        Matcher::Compare(op, bound) => slot.texts().any(|(original, _)| {
            let Some(number) = std::str::from_utf8(original).ok().and_then(|s| s.trim().parse::<f64>().ok())
            else {
                return false;
            };
            match op {
                CmpOp::Lt => number < *bound,
                CmpOp::Lte => number <= *bound,
                CmpOp::Gt => number > *bound,
                CmpOp::Gte => number >= *bound,
            }
        }),
        Matcher::FieldRef { other, mode, cased } => {
            let other = &scratch.slots[other.resolve(active_mappings) as usize];
            slot.texts().any(|(original, lower)| {
                other.texts().any(|(other_original, other_lower)| {
                    let (text, wanted) =
                        if *cased { (original, other_original) } else { (lower, other_lower) };
                    match mode {
                        RefMode::Equals => text == wanted,
                        RefMode::StartsWith => text.starts_with(wanted),
                        RefMode::EndsWith => text.ends_with(wanted),
                        RefMode::Contains => memchr::memmem::find(text, wanted).is_some(),
                    }
                })
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_ranges() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.1.2.3"));
        assert!(!net.contains("11.1.2.3"));
        assert!(!net.contains("not an ip"));
        assert!(net.contains("::ffff:10.0.0.1"));
        let v6 = Cidr::parse("fe80::/10").unwrap();
        assert!(v6.contains("fe80::1"));
        assert!(!v6.contains("2001:db8::1"));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("192.168.1.1"));
    }
}
