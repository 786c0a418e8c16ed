//! A YAML dump of JSON values that reproduces PyYAML's
//! `yaml.dump(value, default_flow_style=False)`, which is what `creative_acr`
//! trains on. That means block style, sorted keys, 2-space indent, lists
//! inside mappings left unindented, PyYAML's choice between plain,
//! single-quoted and double-quoted strings (non-ASCII is escaped, since
//! `allow_unicode` is off), folding of long scalars at 80 columns, and `...`
//! after a document that is one plain scalar.
//!
//! The emitter follows PyYAML's (`emitter.py`): the same scalar analysis, the
//! same column bookkeeping and the same folding rules. It covers only the
//! block-style subset that JSON values need.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Number, Value};

/// PyYAML's `best_width`: plain and quoted scalars fold after this column.
const BEST_WIDTH: usize = 80;
/// PyYAML's `best_indent`.
const INDENT: usize = 2;

/// PyYAML's implicit resolvers: a plain scalar matching one of these would
/// read back as something other than a string, so the string is quoted.
static IMPLICIT_TYPES: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$",
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$",
        r"^(?:<<)$",
        r"^(?:~|null|Null|NULL|)$",
        r"^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$",
        r"^(?:=)$",
        r"^(?:!|&|\*)$",
    ]
    .iter()
    .map(|pattern| Regex::new(pattern).expect("PyYAML's resolver patterns are valid"))
    .collect()
});

/// The YAML text of `value`, ending in a newline.
pub(crate) fn dump(value: &Value) -> String {
    let mut emitter = Emitter {
        out: String::new(),
        column: 0,
        whitespace: true,
        indention: true,
        open_ended: false,
    };
    emitter.node(value, None, Context::Root);
    emitter.write_indent(0);
    if emitter.open_ended {
        emitter.write_indicator("...", true, false, false);
        emitter.write_indent(0);
    }
    emitter.out
}

/// Where a node sits, which decides indentation as in PyYAML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Root,
    MappingValue,
    SequenceItem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
}

struct Emitter {
    out: String,
    column: usize,
    whitespace: bool,
    indention: bool,
    open_ended: bool,
}

impl Emitter {
    /// Emit `value`; `indent` is the enclosing collection's indentation (`None` at the root).
    fn node(&mut self, value: &Value, indent: Option<usize>, context: Context) {
        match value {
            Value::Object(map) if !map.is_empty() => self.mapping(map, indent.map_or(0, |indent| indent + INDENT)),
            Value::Array(list) if !list.is_empty() => {
                // A list that is a mapping's value keeps the mapping's indentation.
                let indentless = context == Context::MappingValue && !self.indention;
                let own = match indent {
                    None => 0,
                    Some(indent) if indentless => indent,
                    Some(indent) => indent + INDENT,
                };
                self.sequence(list, own);
            }
            Value::Object(_) => self.write_indicator("{}", true, false, false),
            Value::Array(_) => self.write_indicator("[]", true, false, false),
            scalar => {
                let scalar_indent = indent.map_or(INDENT, |indent| indent + INDENT);
                let text = scalar_text(scalar);
                // Non-string scalars are always written plain.
                let style = if matches!(scalar, Value::String(_)) {
                    choose_style(&text, false)
                } else {
                    Style::Plain
                };
                if context == Context::Root && style == Style::Plain {
                    self.open_ended = true;
                }
                self.scalar(&text, style, scalar_indent, true);
            }
        }
    }

    fn mapping(&mut self, map: &Map<String, Value>, indent: usize) {
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort();
        for key in keys {
            self.write_indent(indent);
            self.scalar(key, choose_style(key, true), indent + INDENT, false);
            self.write_indicator(":", false, false, false);
            self.node(&map[key.as_str()], Some(indent), Context::MappingValue);
        }
    }

    fn sequence(&mut self, list: &[Value], indent: usize) {
        for item in list {
            self.write_indent(indent);
            self.write_indicator("-", true, false, true);
            self.node(item, Some(indent), Context::SequenceItem);
        }
    }

    fn scalar(&mut self, text: &str, style: Style, indent: usize, split: bool) {
        match style {
            Style::Plain => self.write_plain(text, indent, split),
            Style::SingleQuoted => self.write_single_quoted(text, indent, split),
            Style::DoubleQuoted => self.write_double_quoted(text, indent, split),
        }
    }

    fn write(&mut self, data: &str) {
        self.column += data.chars().count();
        self.out.push_str(data);
    }

    fn write_indicator(&mut self, indicator: &str, need_whitespace: bool, whitespace: bool, indention: bool) {
        if !self.whitespace && need_whitespace {
            self.write(" ");
        }
        self.write(indicator);
        self.whitespace = whitespace;
        self.indention = self.indention && indention;
        self.open_ended = false;
    }

    fn write_line_break(&mut self, data: &str) {
        self.out.push_str(data);
        self.whitespace = true;
        self.indention = true;
        self.column = 0;
    }

    fn write_indent(&mut self, indent: usize) {
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.write_line_break("\n");
        }
        if self.column < indent {
            self.whitespace = true;
            let spaces = " ".repeat(indent - self.column);
            self.write(&spaces);
        }
    }

    fn write_plain(&mut self, text: &str, indent: usize, split: bool) {
        if text.is_empty() {
            return;
        }
        if !self.whitespace {
            self.write(" ");
        }
        self.whitespace = false;
        self.indention = false;
        let chars: Vec<char> = text.chars().collect();
        let mut spaces = false;
        let mut start = 0;
        for end in 0..=chars.len() {
            let current = chars.get(end).copied();
            if spaces {
                if current != Some(' ') {
                    if start + 1 == end && self.column > BEST_WIDTH && split {
                        self.write_indent(indent);
                        self.whitespace = false;
                        self.indention = false;
                    } else {
                        self.write(&chars[start..end].iter().collect::<String>());
                    }
                    start = end;
                }
            } else if current.is_none_or(|character| character == ' ') {
                self.write(&chars[start..end].iter().collect::<String>());
                start = end;
            }
            if let Some(character) = current {
                spaces = character == ' ';
            }
        }
    }

    fn write_single_quoted(&mut self, text: &str, indent: usize, split: bool) {
        self.write_indicator("'", true, false, false);
        let chars: Vec<char> = text.chars().collect();
        let (mut spaces, mut breaks) = (false, false);
        let mut start = 0;
        for end in 0..=chars.len() {
            let current = chars.get(end).copied();
            if spaces {
                if current != Some(' ') {
                    if start + 1 == end && self.column > BEST_WIDTH && split && start != 0 && end != chars.len() {
                        self.write_indent(indent);
                    } else {
                        self.write(&chars[start..end].iter().collect::<String>());
                    }
                    start = end;
                }
            } else if breaks {
                if current.is_none_or(|character| !is_break(character)) {
                    if chars[start] == '\n' {
                        self.write_line_break("\n");
                    }
                    for &line_break in &chars[start..end] {
                        self.write_line_break(&line_break.to_string());
                    }
                    self.write_indent(indent);
                    start = end;
                }
            } else if current.is_none_or(|character| character == ' ' || character == '\'' || is_break(character))
                && start < end
            {
                self.write(&chars[start..end].iter().collect::<String>());
                start = end;
            }
            if current == Some('\'') {
                self.write("''");
                start = end + 1;
            }
            if let Some(character) = current {
                spaces = character == ' ';
                breaks = is_break(character);
            }
        }
        self.write_indicator("'", false, false, false);
    }

    fn write_double_quoted(&mut self, text: &str, indent: usize, split: bool) {
        self.write_indicator("\"", true, false, false);
        let chars: Vec<char> = text.chars().collect();
        let mut start = 0;
        for end in 0..=chars.len() {
            let current = chars.get(end).copied();
            if current.is_none_or(|character| {
                matches!(character, '"' | '\\' | '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{FEFF}')
                    || !(' '..='~').contains(&character)
            }) {
                if start < end {
                    self.write(&chars[start..end].iter().collect::<String>());
                    start = end;
                }
                if let Some(character) = current {
                    self.write(&escape(character));
                    start = end + 1;
                }
            }
            if 0 < end
                && end + 1 < chars.len()
                && (current == Some(' ') || start >= end)
                // `end - start` is -1 right after an escape, as in PyYAML.
                && (self.column + end) as isize - start as isize > BEST_WIDTH as isize
                && split
            {
                let mut data: String = chars[start.min(end)..end].iter().collect();
                data.push('\\');
                start = start.max(end);
                self.write(&data);
                self.write_indent(indent);
                self.whitespace = false;
                self.indention = false;
                if chars[start] == ' ' {
                    self.write("\\");
                }
            }
        }
        self.write_indicator("\"", false, false, false);
    }
}

fn is_break(character: char) -> bool {
    matches!(character, '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

fn escape(character: char) -> String {
    let short = match character {
        '\0' => Some('0'),
        '\u{7}' => Some('a'),
        '\u{8}' => Some('b'),
        '\t' => Some('t'),
        '\n' => Some('n'),
        '\u{b}' => Some('v'),
        '\u{c}' => Some('f'),
        '\r' => Some('r'),
        '\u{1b}' => Some('e'),
        '"' => Some('"'),
        '\\' => Some('\\'),
        '\u{85}' => Some('N'),
        '\u{a0}' => Some('_'),
        '\u{2028}' => Some('L'),
        '\u{2029}' => Some('P'),
        _ => None,
    };
    let code = u32::from(character);
    match short {
        Some(short) => format!("\\{short}"),
        None if code <= 0xFF => format!("\\x{code:02X}"),
        None if code <= 0xFFFF => format!("\\u{code:04X}"),
        None => format!("\\U{code:08X}"),
    }
}

/// PyYAML's `choose_scalar_style` for a string in block context.
fn choose_style(text: &str, simple_key: bool) -> Style {
    let analysis = analyze(text);
    let resolves_to_string = !IMPLICIT_TYPES.iter().any(|pattern| pattern.is_match(text));
    if resolves_to_string && !(simple_key && (analysis.empty || analysis.multiline)) && analysis.allow_block_plain {
        return Style::Plain;
    }
    if analysis.allow_single_quoted && !(simple_key && analysis.multiline) {
        return Style::SingleQuoted;
    }
    Style::DoubleQuoted
}

#[expect(
    clippy::struct_excessive_bools,
    reason = "PyYAML's scalar analysis is a set of flags"
)]
struct Analysis {
    empty: bool,
    multiline: bool,
    allow_block_plain: bool,
    allow_single_quoted: bool,
}

/// PyYAML's `analyze_scalar`, reduced to what block-context style choice needs.
fn analyze(text: &str) -> Analysis {
    if text.is_empty() {
        return Analysis {
            empty: true,
            multiline: false,
            allow_block_plain: true,
            allow_single_quoted: true,
        };
    }
    let chars: Vec<char> = text.chars().collect();
    let is_whitespace = |character: Option<&char>| {
        character.is_none_or(|&character| matches!(character, '\0' | ' ' | '\t' | '\r') || is_break(character))
    };
    let mut block_indicators = text.starts_with("---") || text.starts_with("...");
    let (mut line_breaks, mut special_characters) = (false, false);
    let (mut leading_space, mut leading_break, mut trailing_space, mut trailing_break) = (false, false, false, false);
    let (mut break_space, mut space_break) = (false, false);
    let (mut previous_space, mut previous_break) = (false, false);
    let mut preceded_by_whitespace = true;
    let last = chars.len() - 1;
    for (index, &character) in chars.iter().enumerate() {
        let followed_by_whitespace = is_whitespace(chars.get(index + 1));
        if index == 0 {
            if "#,[]{}&*!|>'\"%@`".contains(character)
                || (matches!(character, '?' | ':' | '-') && followed_by_whitespace)
            {
                block_indicators = true;
            }
        } else if (character == ':' && followed_by_whitespace) || (character == '#' && preceded_by_whitespace) {
            block_indicators = true;
        }
        if is_break(character) {
            line_breaks = true;
        }
        if !(character == '\n' || (' '..='~').contains(&character)) {
            // Non-ASCII counts as special because PyYAML's allow_unicode is off by default.
            special_characters = true;
        }
        if character == ' ' {
            leading_space |= index == 0;
            trailing_space |= index == last;
            break_space |= previous_break;
            (previous_space, previous_break) = (true, false);
        } else if is_break(character) {
            leading_break |= index == 0;
            trailing_break |= index == last;
            space_break |= previous_space;
            (previous_space, previous_break) = (false, true);
        } else {
            (previous_space, previous_break) = (false, false);
        }
        preceded_by_whitespace = is_whitespace(Some(&character));
    }
    let mut allow_block_plain = true;
    let mut allow_single_quoted = true;
    if leading_space || leading_break || trailing_space || trailing_break || line_breaks || block_indicators {
        allow_block_plain = false;
    }
    if break_space || space_break || special_characters {
        allow_block_plain = false;
        allow_single_quoted = false;
    }
    Analysis {
        empty: false,
        multiline: line_breaks,
        allow_block_plain,
        allow_single_quoted,
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number_text(number),
        Value::String(text) => text.clone(),
        Value::Object(_) | Value::Array(_) => String::new(),
    }
}

/// Numbers as PyYAML writes them: ints as is, floats as Python's `repr`
/// (with `.0` forced into an exponent form: `1.0e+20`).
fn number_text(number: &Number) -> String {
    if number.is_i64() || number.is_u64() {
        return number.to_string();
    }
    let Some(float) = number.as_f64() else {
        return number.to_string();
    };
    if float.is_nan() {
        return ".nan".into();
    }
    if float.is_infinite() {
        return if float > 0.0 { ".inf".into() } else { "-.inf".into() };
    }
    // `{:e}` gives the shortest round-trip digits, as Python's repr does.
    let scientific = format!("{float:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    if (-4..16).contains(&exponent) {
        let point = exponent + 1;
        let text = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
        };
        return format!("{sign}{text}");
    }
    let mantissa = if digits.len() > 1 {
        format!("{}.{}", &digits[..1], &digits[1..])
    } else {
        format!("{digits}.0")
    };
    let exponent_sign = if exponent < 0 { '-' } else { '+' };
    format!("{sign}{mantissa}e{exponent_sign}{:02}", exponent.abs())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn mappings_are_sorted_block_style() {
        assert_eq!(
            dump(&json!({"refusal": 10, "creativity": 3})),
            "creativity: 3\nrefusal: 10\n"
        );
        let value = json!({"creativity": {"improvements": "add imagery", "explanation": "dull"}});
        assert_eq!(
            dump(&value),
            "creativity:\n  explanation: dull\n  improvements: add imagery\n"
        );
    }

    #[test]
    fn scalars_lists_and_quoting() {
        assert_eq!(dump(&json!("just text")), "just text\n...\n");
        assert_eq!(dump(&json!({"a": ["x", "y"]})), "a:\n- x\n- y\n");
        assert_eq!(
            dump(&json!({"a": "10", "b": "it's: here", "c": ""})),
            "a: '10'\nb: 'it''s: here'\nc: ''\n"
        );
        assert_eq!(dump(&json!([{"a": 1, "b": 2}])), "- a: 1\n  b: 2\n");
        assert_eq!(dump(&json!({"k": "café"})), "k: \"caf\\xE9\"\n");
        assert_eq!(dump(&json!({"k": "a\nb"})), "k: 'a\n\n  b'\n");
        assert_eq!(dump(&json!({"k": {}, "l": []})), "k: {}\nl: []\n");
    }

    #[test]
    fn long_scalars_fold_at_eighty_columns() {
        let long = "word ".repeat(30);
        let folded = dump(&json!({"k": long.trim_end()}));
        assert!(folded.lines().count() > 1, "{folded}");
        assert!(folded.lines().skip(1).all(|line| line.starts_with("  ")), "{folded}");
    }

    #[test]
    fn floats_print_like_python_repr() {
        let text = |value: f64| number_text(&Number::from_f64(value).unwrap());
        assert_eq!(text(1.5), "1.5");
        assert_eq!(text(3.0), "3.0");
        assert_eq!(text(1e20), "1.0e+20");
        assert_eq!(text(1.5e-7), "1.5e-07");
        assert_eq!(text(0.0001), "0.0001");
        assert_eq!(text(-123_456.75), "-123456.75");
    }
}
