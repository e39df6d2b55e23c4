//! Leaving out rules that provably cannot match, before the scan.
//!
//! More than half of signature-base's ~5,900 rules start their condition with
//! `uint16(0) == 0x5a4d and ...`: they can only match a Windows executable (`MZ`); a few
//! hundred more need other magic bytes (ELF, OLE, PDF, ...). YARA-X still evaluates every
//! rule's condition for every object, which is most of the fixed cost of scanning a small
//! object (a 2 KB `.class` member of a jar cost ~0.5 ms with ~5,900 rules). So two more rule
//! sets are compiled from the same files:
//! - without the rules that need `MZ`: for objects that do not start with `MZ` but do start
//!   with the magic bytes of some other left-out rule (an ELF file, a `.class` file);
//! - without every rule that needs some magic bytes: for objects that start with none of them
//!   (text, scripts, most data);
//!
//! and objects starting with `MZ` are scanned with all rules.
//!
//! A rule is left out only when all of these hold, so that no verdict can change:
//! - its file parses without error (the analysis uses the YARA-X parser's own syntax tree);
//! - its condition is a conjunction (`and`, at any nesting) of which one operand compares the
//!   bytes at offset 0 with a constant (`uint16(0) == 0x5a4d`, `uint32(0) == 0x00905a4d`,
//!   `uint16be(0) == 0x4d5a`, ...): a conjunction is only true when every operand is, and such
//!   a comparison is false (or undefined) for an object that does not start with those bytes;
//! - it is not `global` (a global rule that is false makes other rules false);
//! - no other text anywhere in the rule files names it (a rule used in another condition
//!   keeps its place; YARA-X has no rule-name wildcards such as `any of (Foo*)`).
//!
//! After compiling, each reduced set must hold exactly the full set's rules minus the ones
//! left out, or it is not used (see [`rules::load`](crate::rules::load)). The ignored test
//! `rules::tests::reduced_sets_match_like_the_full_set_on_real_files` compares the sets'
//! matches on real files.

use std::collections::HashMap;

use yara_x_parser::ast::{Expr, WithSpan, AST};
use yara_x_parser::cst::{SyntaxKind, CST};
use yara_x_parser::Parser;

/// The magic bytes that select the full rule set; other magic bytes select the set without
/// `MZ` rules.
pub const MZ: &[u8] = b"MZ";

/// Rule sources with some rules left out.
pub struct Reduced {
    /// The sources, in the order given, with the rules left out cut from their text.
    pub sources: Vec<Vec<u8>>,
    /// How many rules were left out.
    pub dropped: usize,
}

/// The two reduced rule sets.
pub struct Split {
    /// Without the rules that can only match objects starting with `MZ`.
    pub without_mz: Reduced,
    /// Without every rule that can only match objects starting with some magic bytes.
    pub without_magic: Reduced,
    /// The magic bytes of every rule left out of `without_magic` (none a prefix of another):
    /// an object starting with none of them cannot match any of those rules.
    pub magics: Vec<Vec<u8>>,
}

/// Splits rule sources as described in the module documentation.
pub fn split(sources: &[&[u8]]) -> Split {
    // Every identifier-like word in all rule files, with its number of occurrences. Comments
    // and strings are counted too, which only keeps more rules.
    let mut words: HashMap<&[u8], usize> = HashMap::new();
    for src in sources {
        for_each_word(src, |word| *words.entry(word).or_default() += 1);
    }

    let mut without_mz = Reduced { sources: Vec::new(), dropped: 0 };
    let mut without_magic = Reduced { sources: Vec::new(), dropped: 0 };
    let mut magics: Vec<Vec<u8>> = Vec::new();
    for src in sources {
        let removable = removable_rules(src, &words);
        let mz: Vec<_> =
            removable.iter().filter(|(_, m)| m.starts_with(MZ)).map(|(r, _)| r.clone()).collect();
        without_mz.dropped += mz.len();
        without_mz.sources.push(cut(src, &mz));
        let all: Vec<_> = removable.iter().map(|(r, _)| r.clone()).collect();
        without_magic.dropped += all.len();
        without_magic.sources.push(cut(src, &all));
        magics.extend(removable.into_iter().map(|(_, m)| m));
    }
    // Shortest first; a magic that starts with a shorter one adds nothing.
    magics.sort_by(|a, b| a.len().cmp(&b.len()).then(a.cmp(b)));
    let mut minimal: Vec<Vec<u8>> = Vec::new();
    for m in magics {
        if !minimal.iter().any(|p| m.starts_with(p)) {
            minimal.push(m);
        }
    }
    Split { without_mz, without_magic, magics: minimal }
}

/// `src` without the byte ranges `cut` (sorted, disjoint).
fn cut(src: &[u8], cut: &[std::ops::Range<usize>]) -> Vec<u8> {
    let mut text = Vec::with_capacity(src.len());
    let mut at = 0;
    for range in cut {
        text.extend_from_slice(&src[at..range.start]);
        at = range.end;
    }
    text.extend_from_slice(&src[at..]);
    text
}

/// Byte ranges (sorted, disjoint) of the rule declarations in `src` that may be left out, each
/// with the magic bytes that an object must start with for that rule to match.
fn removable_rules(src: &[u8], words: &HashMap<&[u8], usize>) -> Vec<(std::ops::Range<usize>, Vec<u8>)> {
    let ast = AST::from(Parser::new(src));
    if !ast.errors().is_empty() {
        return Vec::new();
    }
    let Ok(cst) = CST::try_from(Parser::new(src)) else {
        return Vec::new();
    };
    // Rule declarations by name, from the concrete tree, which has their full extent.
    let mut decls: HashMap<&[u8], std::ops::Range<usize>> = HashMap::new();
    let mut count = 0;
    for node in cst.root().children() {
        if node.kind() == SyntaxKind::ERROR {
            return Vec::new();
        }
        if node.kind() != SyntaxKind::RULE_DECL {
            continue;
        }
        count += 1;
        let ident = node
            .children_with_tokens()
            .filter_map(|c| c.into_token())
            .find(|t| t.kind() == SyntaxKind::IDENT);
        let Some(ident) = ident else { return Vec::new() };
        let span = ident.span();
        let Some(name) = src.get(span.range()) else { return Vec::new() };
        decls.insert(name, node.span().range());
    }
    if count != decls.len() || count != ast.rules().count() {
        // Duplicate names or trees that disagree: leave the file as it is.
        return Vec::new();
    }

    let mut out = Vec::new();
    for rule in ast.rules() {
        if rule.flags.contains(yara_x_parser::ast::RuleFlags::Global) {
            continue;
        }
        let name = rule.identifier.name.as_bytes();
        if src.get(rule.identifier.span().range()) != Some(name) {
            continue;
        }
        let Some(range) = decls.get(name) else { continue };
        let Some(magic) = required_prefix(&rule.condition) else { continue };
        // Named anywhere outside its own declaration: keep. (YARA-X has no rule-name wildcards:
        // `any of (Foo*)` does not parse, and only files that parse lose rules.)
        let mut own = 0;
        for_each_word(&src[range.clone()], |w| own += usize::from(w == name));
        if words.get(name).copied().unwrap_or(0) != own {
            continue;
        }
        out.push((range.clone(), magic));
    }
    out.sort_by_key(|(r, _)| r.start);
    // Declarations never overlap; if they somehow did, removing nothing is the safe answer.
    if out.windows(2).any(|w| w[0].0.end > w[1].0.start) {
        return Vec::new();
    }
    out
}

/// Bytes that data must start with for `condition` to be true, if the condition says so in a
/// way this analysis understands (a conjunction with a `uintN(0) == K` operand).
fn required_prefix(condition: &Expr<'_>) -> Option<Vec<u8>> {
    match condition {
        // Every operand must hold: any operand's requirement is the rule's; take the longest.
        Expr::And(and) => and.operands().filter_map(required_prefix).max_by_key(Vec::len),
        Expr::Eq(eq) => magic_at_zero(&eq.lhs, &eq.rhs).or_else(|| magic_at_zero(&eq.rhs, &eq.lhs)),
        _ => None,
    }
}

/// For `uintN[be](0) == K`, the bytes that data must start with for the comparison to be true.
fn magic_at_zero(call: &Expr<'_>, value: &Expr<'_>) -> Option<Vec<u8>> {
    let (Expr::FuncCall(call), Expr::LiteralInteger(value)) = (call, value) else {
        return None;
    };
    if call.object.is_some() || call.args.len() != 1 {
        return None;
    }
    let Expr::LiteralInteger(offset) = &call.args[0] else { return None };
    if offset.value != 0 || offset.is_unsigned || value.is_unsigned || value.value < 0 {
        return None;
    }
    let (width, big_endian) = match call.identifier.name {
        "uint8" => (1, false),
        "uint16" => (2, false),
        "uint32" => (4, false),
        "uint8be" => (1, true),
        "uint16be" => (2, true),
        "uint32be" => (4, true),
        _ => return None,
    };
    let v = u64::try_from(value.value).ok()?;
    if width < 8 && v >> (8 * width) != 0 {
        return None;
    }
    let le = v.to_le_bytes();
    let mut bytes = le[..width].to_vec();
    if big_endian {
        bytes.reverse();
    }
    Some(bytes)
}

/// Calls `f(word)` for every maximal run of `[A-Za-z0-9_]` that starts with a letter or
/// `_` and is not part of a longer run.
fn for_each_word<'a>(src: &'a [u8], mut f: impl FnMut(&'a [u8])) {
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < src.len() {
        if is_word(src[i]) {
            let start = i;
            while i < src.len() && is_word(src[i]) {
                i += 1;
            }
            if !src[start].is_ascii_digit() {
                f(&src[start..i]);
            }
        } else {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(src: &str) -> (String, usize) {
        let split = split(&[src.as_bytes()]);
        let r = split.without_mz;
        (String::from_utf8(r.sources.into_iter().next().unwrap()).unwrap(), r.dropped)
    }

    #[test]
    fn only_rules_that_need_mz_and_are_not_used_elsewhere_go() {
        let src = r#"
rule pe_only { strings: $a = "evil" condition: uint16(0) == 0x5a4d and $a }
rule pe_nested { condition: filesize < 10 and (0x5A4D == uint16(0) and filesize > 2) }
rule pe_u32 { condition: uint32(0) == 0x00905a4d and filesize > 1 }
rule pe_be { condition: uint16be(0) == 0x4d5a and filesize > 1 }
rule pe_or { strings: $a = "evil" condition: uint16(0) == 0x5a4d or $a }
rule pe_not { condition: not uint16(0) == 0x5a4d and filesize > 1 }
rule elf { condition: uint32(0) == 0x464c457f and filesize > 1 }
rule pe_other_offset { condition: uint16(2) == 0x5a4d and filesize > 1 }
global rule pe_global { condition: uint16(0) == 0x5a4d }
rule pe_used { condition: uint16(0) == 0x5a4d and filesize > 1 }
rule user { condition: pe_used }
private rule pe_private { condition: uint16(0) == 0x5a4d and filesize > 1 }
"#;
        let (out, n) = strip(src);
        assert_eq!(n, 5, "{out}");
        for gone in ["pe_only", "pe_nested", "pe_u32", "pe_be", "pe_private"] {
            assert!(!out.contains(&format!("rule {gone} ")), "{gone} kept:\n{out}");
        }
        for kept in ["pe_or", "pe_not", "elf", "pe_other_offset", "pe_global", "pe_used", "user"] {
            assert!(out.contains(&format!("rule {kept} ")), "{kept} dropped:\n{out}");
        }
    }

    #[test]
    fn rules_needing_any_magic_go_from_the_second_set_and_their_magics_are_listed() {
        let src = r#"
rule pe { condition: uint16(0) == 0x5a4d and filesize > 1 }
rule elf { condition: filesize > 1 and uint32(0) == 0x464c457f }
rule elf_short { condition: uint8(0) == 0x7f and filesize > 1 }
rule ole { condition: uint32be(0) == 0xd0cf11e0 and filesize > 1 }
rule any_file { strings: $a = "x" condition: $a }
"#;
        let split = split(&[src.as_bytes()]);
        assert_eq!(split.without_mz.dropped, 1);
        assert_eq!(split.without_magic.dropped, 4);
        let text = String::from_utf8(split.without_magic.sources[0].clone()).unwrap();
        assert!(text.contains("rule any_file ") && !text.contains("rule elf"), "{text}");
        assert_eq!(split.magics, vec![b"\x7f".to_vec(), b"MZ".to_vec(), vec![0xd0, 0xcf, 0x11, 0xe0]]);
    }

    #[test]
    fn a_file_with_syntax_errors_is_left_alone() {
        let src = "rule pe { condition: uint16(0) == 0x5a4d and filesize > 1 }\nrule broken { condition: ( }";
        let (out, n) = strip(src);
        assert_eq!(n, 0);
        assert_eq!(out, src);
    }

    #[test]
    fn names_in_other_files_keep_a_rule() {
        let a = b"rule pe { condition: uint16(0) == 0x5a4d and filesize > 1 }".as_slice();
        let b = b"rule other { condition: filesize > 1 } // mentions pe".as_slice();
        assert_eq!(split(&[a, b]).without_mz.dropped, 0);
        let alone = split(&[a]).without_mz;
        assert_eq!(alone.dropped, 1);
        assert!(alone.sources[0].is_empty());
    }
}

#[cfg(test)]
mod corpus {
    /// How many signature-base rules are left out (run with `--ignored --nocapture`).
    #[test]
    #[ignore]
    fn signature_base_counts() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/corpora/yara/signature-base/yara");
        let files = crate::rules::collect_rule_files(&[dir]).unwrap();
        let texts: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
        let refs: Vec<&[u8]> = texts.iter().map(Vec::as_slice).collect();
        let split = super::split(&refs);
        eprintln!(
            "files {} without MZ: -{} rules, without magic: -{} rules, {} magics",
            files.len(),
            split.without_mz.dropped,
            split.without_magic.dropped,
            split.magics.len()
        );
    }
}
