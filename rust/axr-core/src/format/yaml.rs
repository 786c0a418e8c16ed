//! A YAML dump of JSON values in PyYAML's `dump(value, default_flow_style=False)`
//! layout (block style, keys sorted, 2-space indent, indentless lists), which
//! is what `creative_acr` trains on. Strings are plain when PyYAML would leave
//! them plain and single-quoted otherwise; multi-line strings are double-quoted
//! with escapes (PyYAML folds those differently; such values are rare in scores
//! and critiques).

use serde_json::Value;

/// The YAML text of `value`, ending in a newline.
pub(crate) fn dump(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_mapping(&mut out, map, 0),
        Value::Array(list) if !list.is_empty() => write_sequence(&mut out, list, 0),
        scalar => {
            let text = scalar_text(scalar);
            let plain = !text.starts_with(['\'', '"', '{', '[']);
            out.push_str(&text);
            out.push('\n');
            // PyYAML ends a document that is one plain scalar with an explicit end marker.
            if plain {
                out.push_str("...\n");
            }
        }
    }
    out
}

fn write_mapping(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize) {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for key in keys {
        out.push_str(&" ".repeat(indent));
        out.push_str(&string_text(key));
        out.push(':');
        write_value_after_key(out, &map[key.as_str()], indent);
    }
}

fn write_value_after_key(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_mapping(out, map, indent + 2);
        }
        // PyYAML writes lists inside a mapping without extra indentation.
        Value::Array(list) if !list.is_empty() => {
            out.push('\n');
            write_sequence(out, list, indent);
        }
        scalar => {
            out.push(' ');
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
}

fn write_sequence(out: &mut String, list: &[Value], indent: usize) {
    for item in list {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            Value::Object(map) if !map.is_empty() => {
                // The first key shares the dash's line; the rest align under it.
                let mut nested = String::new();
                write_mapping(&mut nested, map, indent + 2);
                out.push(' ');
                out.push_str(&nested[indent + 2..]);
            }
            Value::Array(inner) if !inner.is_empty() => {
                let mut nested = String::new();
                write_sequence(&mut nested, inner, indent + 2);
                out.push(' ');
                out.push_str(&nested[indent + 2..]);
            }
            scalar => {
                out.push(' ');
                out.push_str(&scalar_text(scalar));
                out.push('\n');
            }
        }
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::String(text) => string_text(text),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

fn string_text(text: &str) -> String {
    if text.contains(['\n', '\r', '\t']) || text.chars().any(char::is_control) {
        return serde_json::to_string(text).unwrap_or_default();
    }
    if needs_quotes(text) {
        return format!("'{}'", text.replace('\'', "''"));
    }
    text.to_string()
}

/// Whether PyYAML would quote `text`: it is empty, starts with an indicator,
/// has edge spaces or `: ` / ` #`, or would read back as another type.
fn needs_quotes(text: &str) -> bool {
    let mut chars = text.chars();
    let Some(first) = chars.next() else { return true };
    if ",[]{}#&*!|>'\"%@`".contains(first) {
        return true;
    }
    // `-`, `?` and `:` start a plain scalar only when a non-space follows.
    if "-?:".contains(first) && chars.next().is_none_or(|second| second == ' ') {
        return true;
    }
    text.starts_with(' ')
        || text.ends_with(' ')
        || text.ends_with(':')
        || text.contains(": ")
        || text.contains(" #")
        || resolves_to_other_type(text)
}

fn resolves_to_other_type(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "null" | "~" | "true" | "false" | "yes" | "no" | "on" | "off" | ".nan" | ".inf" | "-.inf" | "+.inf"
    ) {
        return true;
    }
    let digits = text.trim_start_matches(['-', '+']);
    !digits.is_empty()
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '_' | 'e' | 'E' | '-' | '+'))
        && digits.chars().next().is_some_and(|c| c.is_ascii_digit() || c == '.')
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn mappings_are_sorted_block_style() {
        let value = json!({"refusal": 10, "creativity": 3});
        assert_eq!(dump(&value), "creativity: 3\nrefusal: 10\n");
        let value = json!({"creativity": {"improvements": "add imagery", "explanation": "dull"}});
        assert_eq!(
            dump(&value),
            "creativity:\n  explanation: dull\n  improvements: add imagery\n"
        );
    }

    #[test]
    fn scalars_and_lists() {
        assert_eq!(dump(&json!("just text")), "just text\n...\n");
        assert_eq!(dump(&json!({"a": ["x", "y"]})), "a:\n- x\n- y\n");
        assert_eq!(
            dump(&json!({"a": "10", "b": "it's: here", "c": ""})),
            "a: '10'\nb: 'it''s: here'\nc: ''\n"
        );
        assert_eq!(dump(&json!([{"a": 1, "b": 2}])), "- a: 1\n  b: 2\n");
    }
}
