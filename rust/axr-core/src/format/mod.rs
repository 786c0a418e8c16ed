//! Dataset types: turn one JSON row into a [`Sample`](crate::Sample).
//!
//! [`build`] reads the format part of one `datasets` entry ([`FormatSpec`],
//! Axolotl's key names) and returns the [`RowFormatter`](crate::RowFormatter)
//! for its `type`:
//!
//! ```text
//! type absent, no custom keys      -> pretokenized rows (input_ids, attention_mask, labels)
//! type absent, custom keys present -> the user-defined instruction format (field_*, format, ...)
//! "completion"                     -> raw text (+ EOS), all trained
//! "input_output"                   -> template-free segments, each with its own label
//! anything in the instruction table (alpaca, jeopardy, context_qa.load_v2, alpaca:chat, ...)
//! ```
//!
//! Every text format renders the whole sample to one string with byte spans of
//! the trained parts; tokenization happens once, later (see `crate::encode`).

mod completion;
mod custom;
mod input_output;
mod instruction;
mod placeholders;
pub mod preference;
mod pretokenized;
pub mod prompt;
mod text_builder;
mod yaml;

use serde_json::{Map, Value};

use crate::{Error, FieldError, Result, RowFormatter, TokenizerInfo};

pub use prompt::{Prompt, PromptRequest, render_prompt, stop_texts};
pub use text_builder::TextBuilder;

/// The format part of one `datasets` entry, with Axolotl's key names.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatSpec {
    /// The dataset type (`alpaca`, `alpaca:chat`, `completion`, ...). Absent means
    /// pretokenized rows, or the custom format when any custom key is set.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// `completion`: the column holding the text (default `text`).
    #[serde(default)]
    pub field: Option<String>,
    /// Custom format: system text used when the row has no `field_system` key.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Custom format: wraps the system text (default `{system}`).
    #[serde(default)]
    pub system_format: Option<String>,
    /// Custom format: column with a per-row system text (default `system`).
    #[serde(default)]
    pub field_system: Option<String>,
    /// Custom format: column with the instruction (default `instruction`).
    #[serde(default)]
    pub field_instruction: Option<String>,
    /// Custom format: column with the optional input (default `input`).
    #[serde(default)]
    pub field_input: Option<String>,
    /// Custom format: column with the response (default `output`).
    #[serde(default)]
    pub field_output: Option<String>,
    /// Custom format: prompt when the input is non-empty (default `"{instruction} {input} "`).
    #[serde(default)]
    pub format: Option<String>,
    /// Custom format: prompt when the input is empty (default `"{instruction} "`).
    #[serde(default)]
    pub no_input_format: Option<String>,
    /// `alpaca_chat`: the prompt style to use instead of `chat` (`instruct`, `chat`, `chatml`, `phi`).
    #[serde(default)]
    pub conversation: Option<String>,
    /// Train on the prompt too. Filled by the caller from the top-level config key.
    #[serde(default)]
    pub train_on_inputs: bool,
    /// Conversation types: a style name, `tokenizer_default[_fallback_<style>]` or `jinja` (see `crate::chat`).
    #[serde(default)]
    pub chat_template: Option<String>,
    /// Conversation types: the Jinja template text or file, with `chat_template = "jinja"`.
    #[serde(default)]
    pub chat_template_jinja: Option<String>,
    /// Conversation types: the row field holding the messages.
    #[serde(default)]
    pub field_messages: Option<String>,
    /// Conversation types: message keys, `{role = "from", content = "value"}`.
    #[serde(default)]
    pub message_property_mappings: Option<std::collections::BTreeMap<String, String>>,
    /// Conversation types: legacy spelling of `message_property_mappings.role`.
    #[serde(default)]
    pub message_field_role: Option<String>,
    /// Conversation types: legacy spelling of `message_property_mappings.content`.
    #[serde(default)]
    pub message_field_content: Option<String>,
    /// Conversation types: per-message boolean field overriding `roles_to_train`.
    #[serde(default)]
    pub message_field_training: Option<String>,
    /// sharegpt: the `from` value of the user.
    #[serde(default)]
    pub field_human: Option<String>,
    /// sharegpt: the `from` value of the assistant.
    #[serde(default)]
    pub field_model: Option<String>,
    /// Conversation types: role mapping (`{target = [sources]}`, or 2024 `{input = [...], output = [...]}`).
    #[serde(default)]
    pub roles: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// Conversation types: roles whose contents are trained (default `["assistant"]`).
    #[serde(default)]
    pub roles_to_train: Option<Vec<String>>,
    /// Conversation types: which end-of-turn texts are trained (`turn`, `last`, `all`, `none`).
    #[serde(default)]
    pub train_on_eos: Option<crate::chat::TrainOnEos>,
    /// Conversation types: texts that end a turn (default: the style's and EOS).
    #[serde(default)]
    pub eot_tokens: Option<Vec<String>>,
    /// Conversation types: system message for rows that have none.
    #[serde(default)]
    pub default_system_message: Option<String>,
    /// Conversation types: remove system messages.
    #[serde(default)]
    pub drop_system_message: Option<bool>,
}

impl FormatSpec {
    /// Whether any key of the user-defined (custom) instruction format is set.
    fn has_custom_keys(&self) -> bool {
        [
            &self.system_prompt,
            &self.system_format,
            &self.field_system,
            &self.field_instruction,
            &self.field_input,
            &self.field_output,
            &self.format,
            &self.no_input_format,
        ]
        .iter()
        .any(|key| key.is_some())
    }
}

/// The row formatter for `spec`'s dataset type.
///
/// An unknown type is an [`Error::Config`] on key `type` that lists the known
/// types and suggests the closest one.
pub fn build(spec: &FormatSpec, tokenizer: &TokenizerInfo) -> Result<Box<dyn RowFormatter>> {
    let Some(kind) = spec.kind.as_deref() else {
        if spec.has_custom_keys() {
            return Ok(Box::new(custom::build(spec, tokenizer)?));
        }
        return Ok(Box::new(pretokenized::PretokenizedFormatter));
    };
    if let Some(conversation) = crate::chat::ConversationType::from_type_name(kind) {
        let options = crate::chat::ChatOptions::from_format_spec(spec);
        return Ok(Box::new(crate::chat::build(conversation, &options, tokenizer)?));
    }
    match kind {
        "completion" => Ok(Box::new(completion::CompletionFormatter::new(spec, tokenizer))),
        "input_output" => Ok(Box::new(input_output::InputOutputFormatter::new(spec))),
        _ => match instruction::lookup(kind, spec, tokenizer)? {
            Some(formatter) => Ok(Box::new(formatter)),
            None => Err(unknown_type(kind)),
        },
    }
}

/// Every type name [`build`] accepts as a string (prompt-style suffixes aside).
pub fn known_types() -> Vec<&'static str> {
    let mut names = vec!["completion", "input_output"];
    names.extend(crate::chat::TYPE_NAMES);
    names.extend(instruction::table_names());
    names
}

fn unknown_type(kind: &str) -> Error {
    let known = known_types();
    let base = kind.split(':').next().unwrap_or(kind);
    let suggestion = crate::suggest::hint(base, known.iter().copied());
    Error::Config {
        key: "type".into(),
        message: format!("unknown dataset type '{kind}'{suggestion}; known: {}", known.join(", ")),
    }
}

/// A string field that must be present (null counts as missing).
pub(crate) fn required_str<'row>(row: &'row Map<String, Value>, field: &str) -> Result<&'row str, FieldError> {
    match row.get(field) {
        Some(Value::String(text)) => Ok(text),
        None | Some(Value::Null) => Err(FieldError::new(field, "missing required field")),
        Some(other) => Err(FieldError::new(
            field,
            format!("expected a string, got {}", json_kind(other)),
        )),
    }
}

/// A string field that may be absent or null (both read as "").
pub(crate) fn optional_str<'row>(row: &'row Map<String, Value>, field: &str) -> Result<&'row str, FieldError> {
    match row.get(field) {
        Some(Value::String(text)) => Ok(text),
        None | Some(Value::Null) => Ok(""),
        Some(other) => Err(FieldError::new(
            field,
            format!("expected a string, got {}", json_kind(other)),
        )),
    }
}

/// The JSON type of `value`, in words for error messages.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> TokenizerInfo {
        TokenizerInfo {
            bos: Some("<s>".into()),
            eos: Some("</s>".into()),
            chat_template: None,
        }
    }

    #[test]
    fn unknown_type_suggests_the_closest_name() {
        let spec = FormatSpec {
            kind: Some("alpacca".into()),
            ..FormatSpec::default()
        };
        let error = build(&spec, &info()).err().expect("unknown type must fail");
        let message = error.to_string();
        assert!(message.contains("unknown dataset type 'alpacca'"), "{message}");
        assert!(message.contains("did you mean 'alpaca'"), "{message}");
        assert!(message.contains("context_qa.load_v2"), "{message}");
    }

    #[test]
    fn far_away_names_get_no_suggestion() {
        let spec = FormatSpec {
            kind: Some("zzzzzzzzzzzzzzzzzz".into()),
            ..FormatSpec::default()
        };
        let message = build(&spec, &info()).err().expect("must fail").to_string();
        assert!(!message.contains("did you mean"), "{message}");
    }

    #[test]
    fn spec_rejects_unknown_keys() {
        let parsed: std::result::Result<FormatSpec, _> = serde_json::from_str(r#"{"type": "alpaca", "feild": "x"}"#);
        assert!(parsed.is_err());
    }
}
