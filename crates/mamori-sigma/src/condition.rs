//! The condition grammar: `and`, `or`, `not`, parentheses, `1 of pattern*`, `all of
//! pattern*`, `1 of them`, `all of them`, with the specification's precedence (least to most
//! binding: or, and, not, x of, parentheses).

/// A compiled condition over search identifiers (by index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cond {
    Selection(usize),
    Not(Box<Cond>),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    /// `N of ...`: at least N of the identifiers match.
    AtLeast(usize, Vec<usize>),
    /// `all of ...`.
    All(Vec<usize>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    And,
    Or,
    Not,
    Of,
    Word(String),
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        match c {
            '(' => {
                chars.next();
                tokens.push(Token::Open);
            }
            ')' => {
                chars.next();
                tokens.push(Token::Close);
            }
            '|' => return Err("aggregation expressions (`| count() ...`) are not supported".into()),
            _ => {
                let mut end = start;
                while let Some(&(i, c)) = chars.peek() {
                    if c.is_whitespace() || c == '(' || c == ')' || c == '|' {
                        break;
                    }
                    end = i + c.len_utf8();
                    chars.next();
                }
                let word = &text[start..end];
                tokens.push(match word.to_ascii_lowercase().as_str() {
                    "and" => Token::And,
                    "or" => Token::Or,
                    "not" => Token::Not,
                    "of" => Token::Of,
                    _ => Token::Word(word.to_string()),
                });
            }
        }
    }
    Ok(tokens)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    position: usize,
    names: &'a [(String, usize)],
    depth: usize,
}

/// Deep nesting would only come from hostile input; refuse it rather than overflow the stack.
const MAX_DEPTH: usize = 64;

/// Parses `text` against the search identifiers `names` (name, selection index).
pub(crate) fn parse_condition(text: &str, names: &[(String, usize)]) -> Result<Cond, String> {
    let tokens = tokenize(text)?;
    if tokens.is_empty() {
        return Err("empty condition".into());
    }
    let mut parser = Parser { tokens, position: 0, names, depth: 0 };
    let cond = parser.or_expr()?;
    if parser.position != parser.tokens.len() {
        return Err(format!("unexpected {:?} in condition {text:?}", parser.tokens[parser.position]));
    }
    Ok(cond)
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.position).cloned();
        self.position += 1;
        token
    }

    fn or_expr(&mut self) -> Result<Cond, String> {
        let mut parts = vec![self.and_expr()?];
        while self.peek() == Some(&Token::Or) {
            self.position += 1;
            parts.push(self.and_expr()?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Cond::Or(parts) })
    }

    fn and_expr(&mut self) -> Result<Cond, String> {
        let mut parts = vec![self.not_expr()?];
        while self.peek() == Some(&Token::And) {
            self.position += 1;
            parts.push(self.not_expr()?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Cond::And(parts) })
    }

    fn not_expr(&mut self) -> Result<Cond, String> {
        if self.peek() == Some(&Token::Not) {
            self.position += 1;
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err("condition nested too deeply".into());
            }
            let inner = self.not_expr()?;
            self.depth -= 1;
            return Ok(Cond::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Cond, String> {
        match self.next() {
            Some(Token::Open) => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err("condition nested too deeply".into());
                }
                let inner = self.or_expr()?;
                self.depth -= 1;
                match self.next() {
                    Some(Token::Close) => Ok(inner),
                    _ => Err("missing closing parenthesis".into()),
                }
            }
            Some(Token::Word(word)) => {
                if self.peek() == Some(&Token::Of) {
                    self.position += 1;
                    let target = match self.next() {
                        Some(Token::Word(target)) => target,
                        other => {
                            return Err(format!(
                                "expected a search identifier pattern after `of`, got {other:?}"
                            ))
                        }
                    };
                    self.quantified(&word, &target)
                } else {
                    self.identifier(&word)
                }
            }
            Some(other) => Err(format!("unexpected {other:?} in condition")),
            None => Err("condition ends unexpectedly".into()),
        }
    }

    fn identifier(&self, name: &str) -> Result<Cond, String> {
        self.names
            .iter()
            .find(|(candidate, _)| candidate == name)
            .map(|(_, index)| Cond::Selection(*index))
            .ok_or_else(|| format!("condition refers to unknown search identifier {name:?}"))
    }

    fn quantified(&self, quantifier: &str, target: &str) -> Result<Cond, String> {
        let indices: Vec<usize> = if target.eq_ignore_ascii_case("them") {
            self.names.iter().filter(|(name, _)| !name.starts_with('_')).map(|(_, i)| *i).collect()
        } else {
            self.names.iter().filter(|(name, _)| wildcard_match(target, name)).map(|(_, i)| *i).collect()
        };
        if indices.is_empty() {
            return Err(format!("`{quantifier} of {target}` matches no search identifier"));
        }
        if quantifier.eq_ignore_ascii_case("all") {
            return Ok(Cond::All(indices));
        }
        let count = if quantifier.eq_ignore_ascii_case("any") {
            1
        } else {
            quantifier
                .parse::<usize>()
                .map_err(|_| format!("invalid quantifier {quantifier:?} before `of`"))?
        };
        if count == 0 {
            return Err("`0 of` is not a valid quantifier".into());
        }
        Ok(Cond::AtLeast(count, indices))
    }
}

/// Identifier patterns: `*` is any run of characters; everything else is literal.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (index, part) in parts.iter().enumerate() {
        if index == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if index == parts.len() - 1 {
            return rest.ends_with(part);
        } else if let Some(found) = rest.find(part) {
            rest = &rest[found + part.len()..];
        } else {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<(String, usize)> {
        [
            "selection",
            "selection_img",
            "selection_cli",
            "filter_main_a",
            "filter_optional_b",
            "_hidden",
            "keywords",
        ]
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), i))
        .collect()
    }

    #[test]
    fn precedence_or_and_not() {
        // `a or b and not c` is `a or (b and (not c))`.
        let cond = parse_condition("selection or selection_img and not keywords", &names()).unwrap();
        assert_eq!(
            cond,
            Cond::Or(vec![
                Cond::Selection(0),
                Cond::And(vec![Cond::Selection(1), Cond::Not(Box::new(Cond::Selection(6)))]),
            ])
        );
        let cond = parse_condition("(selection or selection_img) and keywords", &names()).unwrap();
        assert_eq!(
            cond,
            Cond::And(vec![Cond::Or(vec![Cond::Selection(0), Cond::Selection(1)]), Cond::Selection(6)])
        );
    }

    #[test]
    fn quantifiers_and_patterns() {
        let cond = parse_condition("1 of selection* and not 1 of filter_*", &names()).unwrap();
        assert_eq!(
            cond,
            Cond::And(vec![
                Cond::AtLeast(1, vec![0, 1, 2]),
                Cond::Not(Box::new(Cond::AtLeast(1, vec![3, 4]))),
            ])
        );
        assert_eq!(parse_condition("all of them", &names()).unwrap(), Cond::All(vec![0, 1, 2, 3, 4, 6]));
        assert_eq!(parse_condition("1 of them", &names()).unwrap(), Cond::AtLeast(1, vec![0, 1, 2, 3, 4, 6]));
        assert_eq!(parse_condition("all of *_cli", &names()).unwrap(), Cond::All(vec![2]));
        // `not` binds tighter than `and`, `x of` tighter than `not`.
        assert_eq!(
            parse_condition("not 1 of filter* and keywords", &names()).unwrap(),
            Cond::And(vec![Cond::Not(Box::new(Cond::AtLeast(1, vec![3, 4]))), Cond::Selection(6)])
        );
    }

    #[test]
    fn errors_are_reported() {
        assert!(parse_condition("selection and", &names()).is_err());
        assert!(parse_condition("unknown", &names()).is_err());
        assert!(parse_condition("1 of nothing*", &names()).is_err());
        assert!(parse_condition("(selection", &names()).is_err());
        assert!(parse_condition("selection | count() > 5", &names()).unwrap_err().contains("aggregation"));
        assert!(parse_condition(&"(".repeat(500), &names()).unwrap_err().contains("deeply"));
        assert!(parse_condition(&"not ".repeat(500), &names()).unwrap_err().contains("deeply"));
    }
}
