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
//! in well under a second or two), [`RENDER_MAX_BYTES`] of output (the
//! render writes into a writer that refuses more) and [`RENDER_MAX_MEMORY`] of
//! memory held at once (values built without being written out; see
//! [`super::render_memory`]). Each limit ends the render with an error the
//! pipeline reports with the row's file and line.

use minijinja::value::{Kwargs, StringInput, Value};
use minijinja::{Environment, ErrorKind, State};

use super::render_memory::{self, RenderBudget};

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
    limits: RenderLimits,
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

pub use crate::spec::{RENDER_FUEL, RENDER_MAX_BYTES, RENDER_MAX_MEMORY, RenderLimits};

/// Collects a render's output and refuses to grow past its cap.
struct BoundedWriter {
    buffer: Vec<u8>,
    cap: usize,
    exceeded: bool,
}

impl std::io::Write for BoundedWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if render_memory::passed() {
            return Err(std::io::Error::other("render memory budget passed"));
        }
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

/// The steps of a `range`, each first checking the render's memory budget: the loop is where
/// a template grows a value without calling anything else of axr's. The size hint stays the
/// range's own, so `length` and `loop.last` work as before.
struct BudgetedSteps(Option<minijinja::value::ValueIter>);

impl Iterator for BudgetedSteps {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        if render_memory::passed() {
            return None;
        }
        self.0.as_mut()?.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.as_ref().map_or((0, Some(0)), Iterator::size_hint)
    }
}

fn budgeted_range(lower: isize, upper: Option<isize>, step: Option<isize>) -> Result<Value, minijinja::Error> {
    let steps = minijinja::functions::range(lower, upper, step)?;
    steps.try_iter()?; // an iterable, checked here so that iterating it cannot fail
    Ok(Value::make_iterable(move || BudgetedSteps(steps.try_iter().ok())))
}

/// `indent`, refused before it builds a value larger than the render's memory budget allows.
fn budgeted_indent(
    value: StringInput<'_>,
    width: Option<usize>,
    indent_first_line: Option<bool>,
    indent_blank_lines: Option<bool>,
    kwargs: Kwargs,
) -> Result<Value, minijinja::Error> {
    let width = match width {
        Some(width) => Some(width),
        None => kwargs.peek::<Option<usize>>("width")?,
    };
    let lines = value.as_str().bytes().filter(|&byte| byte == b'\n').count() + 1;
    render_memory::reserve(
        width
            .unwrap_or(4)
            .saturating_add(1)
            .saturating_mul(lines)
            .saturating_add(value.as_str().len()),
    )?;
    minijinja::filters::indent(value, width, indent_first_line, indent_blank_lines, kwargs)
}

/// Size of `text` with every `from` replaced by `to` (at most `count` of them).
fn replaced_len(text: &str, from: &str, to: &str, count: Option<usize>) -> usize {
    if to.len() <= from.len() {
        return text.len();
    }
    let matches = if from.is_empty() {
        text.chars().count() + 1
    } else {
        text.matches(from).count()
    };
    let matches = count.map_or(matches, |count| count.min(matches));
    text.len().saturating_add(matches.saturating_mul(to.len() - from.len()))
}

/// `replace`, refused before it builds a value larger than the render's memory budget allows.
fn budgeted_replace(
    state: &State,
    value: StringInput<'_>,
    from: StringInput<'_>,
    to: StringInput<'_>,
) -> Result<Value, minijinja::Error> {
    render_memory::reserve(replaced_len(value.as_str(), from.as_str(), to.as_str(), None))?;
    minijinja::filters::replace(state, value, from, to)
}

/// Bytes the separators of joining `items` with `joiner` add (the items exist already).
fn joined_len(items: &Value, joiner: &str) -> Result<usize, minijinja::Error> {
    let count = match items.len() {
        Some(count) => count,
        None => items.try_iter()?.count(),
    };
    Ok(count.saturating_sub(1).saturating_mul(joiner.len()))
}

/// `join`, refused before it builds a value larger than the render's memory budget allows.
fn budgeted_join(state: &State, value: &Value, joiner: Option<StringInput<'_>>) -> Result<Value, minijinja::Error> {
    if !value.is_undefined() && !value.is_none() && value.as_str().is_none() {
        render_memory::reserve(joined_len(value, joiner.as_ref().map_or("", StringInput::as_str))?)?;
    }
    minijinja::filters::join(state, value, joiner)
}

/// Python's string methods (minijinja-contrib's pycompat), each a point where a render past
/// its memory budget ends, and `replace`/`join` refused before they build too large a value.
fn budgeted_method(state: &State, value: &Value, method: &str, args: &[Value]) -> Result<Value, minijinja::Error> {
    render_memory::check()?;
    if let Some(text) = value.as_str() {
        match (method, args) {
            ("replace", [from, to, rest @ ..]) => {
                if let (Some(from), Some(to)) = (from.as_str(), to.as_str()) {
                    let count = rest.first().and_then(|count| usize::try_from(count.clone()).ok());
                    render_memory::reserve(replaced_len(text, from, to, count))?;
                }
            }
            ("join", [items]) if items.as_str().is_none() => render_memory::reserve(joined_len(items, text)?)?,
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
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
        environment.set_fuel(Some(RenderLimits::default().instructions));
        environment.set_unknown_method_callback(budgeted_method);
        environment.add_function("range", budgeted_range);
        environment.add_filter("indent", budgeted_indent);
        environment.add_filter("replace", budgeted_replace);
        environment.add_filter("join", budgeted_join);
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
            limits: RenderLimits::default(),
        })
    }

    /// The same template with other limits per render.
    #[must_use]
    pub fn with_limits(mut self, limits: RenderLimits) -> Self {
        self.environment.set_fuel(Some(limits.instructions));
        self.limits = limits;
        self
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
        let limits = self.limits;
        let budget = RenderBudget::start(&self.name, limits.memory_bytes());
        let context = minijinja::context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        let mut writer = BoundedWriter {
            buffer: Vec::new(),
            cap: limits.output_bytes(),
            exceeded: false,
        };
        let rendered = template.render_captured_to(context, &mut writer).map(drop);
        let passed_memory = budget.passed();
        drop(budget);
        match rendered {
            _ if passed_memory => Err(format!(
                "chat template `{}`: the render held more than {} MiB of memory, the limit per row (a template \
                 that builds a huge value?; `chat_template_limits.memory_mib` raises it)",
                self.name, limits.memory_mib
            )),
            Ok(()) => String::from_utf8(writer.buffer)
                .map_err(|error| format!("chat template `{}`: the render is not UTF-8: {error}", self.name)),
            Err(_) if writer.exceeded => Err(format!(
                "chat template `{}`: the render passed {} MiB of output, the limit per row (a template that \
                 repeats text without end?; `chat_template_limits.output_mib` raises it)",
                self.name, limits.output_mib
            )),
            Err(error) if error.kind() == ErrorKind::OutOfFuel => Err(format!(
                "chat template `{}`: the render used up its budget of {} instructions per row \
                 (a template that loops without end?; `chat_template_limits.instructions` raises it)",
                self.name, limits.instructions
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

    /// A string doubled `times` times through a namespace and never written out (issue 20).
    fn doubling(times: u32) -> String {
        format!(
            "{{% set ns = namespace(s='x') %}}{{% for i in range({times}) %}}{{% set ns.s = ns.s ~ ns.s %}}\
             {{% endfor %}}{{{{ ns.s | length }}}}"
        )
    }

    #[test]
    fn values_built_without_output_stop_at_the_memory_budget() {
        for times in [28, 34] {
            let template = ChatTemplate::new("doubling", &doubling(times), "", "").unwrap();
            let error = template.render(&[], false).unwrap_err();
            assert!(
                error.contains("doubling") && error.contains("MiB of memory"),
                "{times}: {error}"
            );
        }
        // Under the budget the same template renders, and the next render starts afresh.
        let template = ChatTemplate::new("doubling", &doubling(20), "", "").unwrap();
        assert_eq!(template.render(&[], false).unwrap(), (1 << 20).to_string());
    }

    #[test]
    fn amplifying_filters_and_methods_are_refused_before_they_allocate() {
        for (source, amplifier) in [
            ("{{ 'x' | indent(10**10) }}", "indent"),
            ("{{ ('x' * 10**7) | replace('x', 'x' * 10**7) }}", "replace filter"),
            ("{{ ('x' * 10**7).replace('x', 'x' * 10**7) }}", "replace method"),
            ("{{ range(100000) | join('x' * 10**7) }}", "join filter"),
            ("{{ ('x' * 10**7).join(range(100000)) }}", "join method"),
        ] {
            let template = ChatTemplate::new("amplifier", source, "", "").unwrap();
            let error = template.render(&[], false).unwrap_err();
            assert!(error.contains("MiB of memory"), "{amplifier}: {error}");
        }
        // `center`, a Jinja2 filter, is not one of minijinja's: an error here, never an allocation.
        let template = ChatTemplate::new("center", "{{ 'x' | center(10**10) }}", "", "").unwrap();
        assert!(
            template
                .render(&[], false)
                .unwrap_err()
                .contains("filter center is unknown")
        );
    }

    #[test]
    fn budgeted_built_ins_render_as_minijinja_does() {
        let source = "{% for i in range(1, 7, 2) %}{{ i }}{% if loop.last %}.{{ loop.length }}{% endif %}\
                      {% endfor %}{{ range(4) | length }}|{{ 'a\nb' | indent(2, true) }}|\
                      {{ 'aXa' | replace('a', 'bc') }}|{{ [1, 2] | join('-') }}|{{ '+'.join(['x', 'y']) }}|\
                      {{ 'aaa'.replace('a', 'b', 2) }}";
        let template = ChatTemplate::new("t", source, "", "").unwrap();
        assert_eq!(
            template.render(&[], false).unwrap(),
            "135.34|  a\n  b|bcXbc|1-2|x+y|bba"
        );
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
