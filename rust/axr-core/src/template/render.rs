//! Jinja chat templates rendered the way `transformers` renders them.
//!
//! `tokenizer.apply_chat_template` uses a Jinja2 sandbox with `trim_blocks`,
//! `lstrip_blocks`, loop controls, a `raise_exception` global, `strftime_now`
//! and a `tojson` that does not escape HTML. Hub templates call Python string
//! methods (`.strip()`, `.startswith()`), which minijinja-contrib's pycompat
//! callback provides. Matching all of this is what makes the rendered training
//! text byte-identical to the inference prompt.
//!
//! Templates arrive with downloaded models, so every render is bounded: a fuel
//! budget of [`RENDER_FUEL`] instructions (a loop that never ends stops there,
//! in well under a second or two) and [`RENDER_MAX_BYTES`] of output (the
//! render writes into a writer that refuses more). Either limit ends the render
//! with an error the pipeline reports with the row's file and line.

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, ErrorKind};

/// One message as the template sees it: `{"role": ..., "content": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TemplateMessage {
    /// Role after mapping (`system`, `user`, `assistant`, `tool`, ...).
    pub role: String,
    /// Message text.
    pub content: String,
}

/// A compiled chat template plus the special-token strings it may reference.
pub struct ChatTemplate {
    environment: Environment<'static>,
    name: String,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ChatTemplate")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

const TEMPLATE_KEY: &str = "chat";

/// Instructions one render may execute. Real chat templates spend a few dozen per message
/// (~20,000 for a 500-turn conversation); this is the budget of a template gone wrong.
pub const RENDER_FUEL: u64 = 20_000_000;

/// Bytes one render may write: far beyond any sequence_len (64 MiB is millions of tokens),
/// far below what would exhaust memory.
pub const RENDER_MAX_BYTES: usize = 64 << 20;

/// Collects a render's output and refuses to grow past its cap.
struct BoundedWriter {
    buffer: Vec<u8>,
    cap: usize,
    exceeded: bool,
}

impl std::io::Write for BoundedWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.buffer.len() + bytes.len() > self.cap {
            self.exceeded = true;
            return Err(std::io::Error::other("render output cap reached"));
        }
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

fn strftime_now(format: &str) -> Result<Value, minijinja::Error> {
    // Templates use this for "Today Date:" lines; a fixed date keeps renders
    // reproducible (the prepared store is fingerprinted), and no built-in
    // style calls it.
    let _ = format;
    Err(minijinja::Error::new(
        ErrorKind::InvalidOperation,
        "strftime_now() makes a render depend on the clock, which would change the prepared data on every run; \
         pass the date as text in the system message instead",
    ))
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=..., sort_keys=...)`,
/// which is what transformers installs as `tojson` (minijinja's own escapes `<`).
#[expect(clippy::needless_pass_by_value, reason = "minijinja passes filter kwargs by value")]
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(value)
        .map_err(|error| minijinja::Error::new(ErrorKind::InvalidOperation, error.to_string()))?;
    let _ = sort_keys; // serde_json maps are already key-sorted
    let mut out = String::new();
    write_python_json(&json, indent, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

fn write_python_json(value: &serde_json::Value, indent: Option<usize>, depth: usize, out: &mut String) {
    use serde_json::Value as Json;
    let newline = |out: &mut String, level: usize| {
        if let Some(width) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', width * level));
        }
    };
    let separator = if indent.is_some() { "," } else { ", " };
    match value {
        Json::Array(items) if !items.is_empty() => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(separator);
                }
                newline(out, depth + 1);
                write_python_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        Json::Object(map) if !map.is_empty() => {
            out.push('{');
            for (index, (key, item)) in map.iter().enumerate() {
                if index > 0 {
                    out.push_str(separator);
                }
                newline(out, depth + 1);
                out.push_str(&serde_json::Value::String(key.clone()).to_string());
                out.push_str(": ");
                write_python_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

impl ChatTemplate {
    /// Compile `source`. `name` is used in error messages (a style name, or
    /// `tokenizer_default`, or `chat_template_jinja`).
    pub fn new(name: &str, source: &str, bos_token: &str, eos_token: &str) -> Result<Self, String> {
        let mut environment = Environment::new();
        environment.set_trim_blocks(true);
        environment.set_lstrip_blocks(true);
        environment.set_keep_trailing_newline(false);
        environment.set_fuel(Some(RENDER_FUEL));
        environment.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        environment.add_function("raise_exception", raise_exception);
        environment.add_function("strftime_now", strftime_now);
        environment.add_filter("tojson", tojson);
        environment
            .add_template_owned(TEMPLATE_KEY, source.to_owned())
            .map_err(|error| format!("chat template `{name}` does not compile: {}", describe(&error)))?;
        Ok(Self {
            environment,
            name: name.to_owned(),
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// Name of the template, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Render `messages`; the error is the template's own message
    /// (`raise_exception`) or minijinja's description.
    pub fn render(&self, messages: &[TemplateMessage], add_generation_prompt: bool) -> Result<String, String> {
        let template = self
            .environment
            .get_template(TEMPLATE_KEY)
            .map_err(|error| format!("chat template `{}`: {}", self.name, describe(&error)))?;
        let context = minijinja::context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        let mut writer = BoundedWriter {
            buffer: Vec::new(),
            cap: RENDER_MAX_BYTES,
            exceeded: false,
        };
        match template.render_captured_to(context, &mut writer) {
            Ok(_) => String::from_utf8(writer.buffer)
                .map_err(|error| format!("chat template `{}`: the render is not UTF-8: {error}", self.name)),
            Err(_) if writer.exceeded => Err(format!(
                "chat template `{}`: the render passed {} MiB of output, the limit per row (a template that \
                 repeats text without end?)",
                self.name,
                RENDER_MAX_BYTES >> 20
            )),
            Err(error) if error.kind() == ErrorKind::OutOfFuel => Err(format!(
                "chat template `{}`: the render used up its budget of {RENDER_FUEL} instructions per row \
                 (a template that loops without end?)",
                self.name
            )),
            Err(error) => Err(format!("chat template `{}`: {}", self.name, describe(&error))),
        }
    }
}

fn describe(error: &minijinja::Error) -> String {
    let mut text = error.detail().map_or_else(|| error.kind().to_string(), str::to_owned);
    if let Some(line) = error.line() {
        text = format!("{text} (template line {line})");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: &str, content: &str) -> TemplateMessage {
        TemplateMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn trims_blocks_like_transformers() {
        let source = "{% for m in messages %}\n  {{ m.role }}:{{ m.content.strip() }}|\n{% endfor %}";
        let template = ChatTemplate::new("t", source, "<s>", "</s>").unwrap();
        let text = template
            .render(&[message("user", "  hi "), message("assistant", "yo")], false)
            .unwrap();
        // Jinja2 with trim_blocks + lstrip_blocks gives exactly this (checked).
        assert_eq!(text, "  user:hi|\n  assistant:yo|\n");
    }

    #[test]
    fn raise_exception_reports_the_template_message() {
        let template = ChatTemplate::new("strict", "{{ raise_exception('roles must alternate') }}", "", "").unwrap();
        let error = template.render(&[], false).unwrap_err();
        assert!(error.contains("roles must alternate"), "{error}");
        assert!(error.contains("strict"), "{error}");
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let template = ChatTemplate::new(
            "j",
            "{{ messages | tojson }}|{{ messages[0] | tojson(indent=2) }}",
            "",
            "",
        )
        .unwrap();
        let text = template.render(&[message("user", "<a> & é")], false).unwrap();
        assert_eq!(
            text,
            "[{\"content\": \"<a> & é\", \"role\": \"user\"}]|{\n  \"content\": \"<a> & é\",\n  \"role\": \"user\"\n}"
        );
    }

    #[test]
    fn endless_loops_stop_at_the_fuel_budget() {
        let source = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let template = ChatTemplate::new("looping", source, "", "").unwrap();
        let started = std::time::Instant::now();
        let error = template.render(&[], false).unwrap_err();
        assert!(error.contains("looping") && error.contains("budget"), "{error}");
        assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
    }

    #[test]
    fn output_past_the_cap_stops_the_render() {
        let literal = format!("{{% for i in range(100000) %}}{}{{% endfor %}}", "y".repeat(1000));
        let template = ChatTemplate::new("literal", &literal, "", "").unwrap();
        let error = template.render(&[], false).unwrap_err();
        assert!(error.contains("literal") && error.contains("MiB of output"), "{error}");
    }

    #[test]
    fn loop_controls_and_special_tokens() {
        let source = "{{ bos_token }}{% for m in messages %}{% if loop.index0 == 1 %}{% break %}{% endif %}\
                      {{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}>{% endif %}";
        let template = ChatTemplate::new("t", source, "<s>", "</s>").unwrap();
        let text = template
            .render(&[message("user", "a"), message("user", "b")], true)
            .unwrap();
        assert_eq!(text, "<s>a</s>>");
    }
}
