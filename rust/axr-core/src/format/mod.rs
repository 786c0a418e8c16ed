//! Text dataset types: turn one JSON row into a [`Sample`](crate::Sample) rendered as one
//! string with byte spans of the trained parts (tokenization happens once, later: see
//! `crate::encode`). `crate::dataset_type` picks between these and the conversation types.
//!
//! ```text
//! type absent, no custom keys      -> pretokenized rows (input_ids, attention_mask, labels)
//! type absent, custom keys present -> the user-defined instruction format (field_*, format, ...)
//! "completion"                     -> raw text (+ EOS), all trained
//! "input_output"                   -> template-free segments, each with its own label
//! anything in the instruction table (alpaca, jeopardy, context_qa.load_v2, alpaca:chat, ...)
//! ```

mod completion;
pub(crate) mod custom;
mod input_output;
pub(crate) mod instruction;
mod placeholders;
pub mod preference;
mod pretokenized;
mod text_builder;
mod yaml;

use serde_json::{Map, Value};

use crate::spec::FormatSpec;
use crate::{FieldError, Result, RowFormatter, TokenizerInfo};

pub use text_builder::TextBuilder;

/// The formatter of `spec`'s text (not conversation) dataset type; `Ok(None)` when its `type`
/// names none (`crate::dataset_type` words that error, knowing the conversation types too).
pub fn build(spec: &FormatSpec, tokenizer: &TokenizerInfo) -> Result<Option<Box<dyn RowFormatter>>> {
    let Some(kind) = spec.kind.as_deref() else {
        if spec.has_custom_keys() {
            return Ok(Some(Box::new(custom::build(spec, tokenizer)?)));
        }
        return Ok(Some(Box::new(pretokenized::PretokenizedFormatter)));
    };
    Ok(match kind {
        "completion" => Some(Box::new(completion::CompletionFormatter::new(spec, tokenizer))),
        "input_output" => Some(Box::new(input_output::InputOutputFormatter::new(spec))),
        _ => instruction::lookup(kind, spec, tokenizer)?.map(|formatter| Box::new(formatter) as Box<dyn RowFormatter>),
    })
}

/// Every text type name [`build`] accepts (prompt-style suffixes aside).
pub fn type_names() -> impl Iterator<Item = &'static str> {
    ["completion", "input_output"]
        .into_iter()
        .chain(instruction::table_names())
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
