//! Python `str.format`-style templates: `{name}` is replaced by a value
//! verbatim, `{{` and `}}` are literal braces. Axolotl's format strings use this
//! syntax, so users' custom formats keep working unchanged.

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Placeholder(String),
}

/// A template parsed once, filled many times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parse `source`, accepting only placeholders named in `allowed`.
    pub(crate) fn parse(source: &str, allowed: &[&str]) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = source.chars().peekable();
        while let Some(character) = chars.next() {
            match character {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => {
                                return Err(format!(
                                    "unclosed '{{' in {source:?} (write '{{{{' for a literal brace)"
                                ));
                            }
                            Some(other) => name.push(other),
                        }
                    }
                    if !allowed.contains(&name.as_str()) {
                        return Err(format!(
                            "unknown placeholder '{{{name}}}' in {source:?}; allowed here: {}",
                            allowed
                                .iter()
                                .map(|known| format!("{{{known}}}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Placeholder(name));
                }
                '}' => {
                    return Err(format!("single '}}' in {source:?} (write '}}}}' for a literal brace)"));
                }
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Self { pieces })
    }

    /// Append the template to `out`, looking placeholder values up with `value`.
    pub(crate) fn render_into<'value>(&self, out: &mut String, value: impl Fn(&str) -> &'value str) {
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Placeholder(name) => out.push_str(value(name)),
            }
        }
    }

    /// The template filled in, as a new string.
    pub(crate) fn render<'value>(&self, value: impl Fn(&str) -> &'value str) -> String {
        let mut out = String::new();
        self.render_into(&mut out, value);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_placeholders_and_unescapes_braces() {
        let template = Template::parse("{{x}} {a}-{b}}}", &["a", "b"]).unwrap();
        let out = template.render(|name| if name == "a" { "{A}" } else { "B" });
        assert_eq!(out, "{x} {A}-B}");
    }

    #[test]
    fn rejects_unknown_and_unbalanced_placeholders() {
        assert!(
            Template::parse("{input}", &["instruction"])
                .unwrap_err()
                .contains("unknown placeholder")
        );
        assert!(
            Template::parse("{instruction", &["instruction"])
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(Template::parse("a } b", &[]).unwrap_err().contains("single '}'"));
    }
}
