//! Bindings of `axr_core::chat`: render conversation rows as training text with
//! per-turn spans (for tests, `axr inspect` and the data doctor).

use axr_core::chat::{self, ChatOptions, ConversationType};
use axr_core::{Error, TokenizerInfo};
use pyo3::prelude::*;

use crate::errors::PyAxrError;

/// One turn: `(role, trained, content byte ranges, end-of-turn byte range or None, end-of-turn trained)`.
type Turn = (String, bool, Vec<(usize, usize)>, Option<(usize, usize)>, bool);

/// `(text, trainable byte ranges, turns)` for one row.
type Rendered = (String, Vec<(usize, usize)>, Vec<Turn>);

fn invalid(key: &str, message: impl std::fmt::Display) -> PyAxrError {
    PyAxrError(Error::Config {
        key: key.to_owned(),
        message: message.to_string(),
    })
}

/// Render JSON rows of a conversation dataset type. `options_json` holds the
/// dataset's conversation keys (`chat_template`, `roles_to_train`, ...). A bad
/// row raises DataError naming `<rows>:<1-based index>` and the field.
#[pyfunction]
#[pyo3(signature = (dataset_type, options_json, rows, *, bos_token=None, eos_token=None, chat_template=None))]
pub fn chat_render(
    py: Python<'_>,
    dataset_type: &str,
    options_json: &str,
    rows: Vec<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    chat_template: Option<String>,
) -> PyResult<Vec<Rendered>> {
    let kind = ConversationType::from_type_name(dataset_type)
        .ok_or_else(|| invalid("type", format!("`{dataset_type}` is not a conversation type")))?;
    let options: ChatOptions = serde_json::from_str(options_json).map_err(|error| invalid("options_json", error))?;
    let info = TokenizerInfo {
        bos: bos_token,
        eos: eos_token,
        chat_template,
    };
    let rendered = py.detach(|| -> Result<Vec<Rendered>, PyAxrError> {
        let formatter = chat::build(kind, &options, &info)?;
        rows.into_iter()
            .enumerate()
            .map(|(index, json)| {
                let data_error = |field: &str, message: String| {
                    PyAxrError(Error::Data {
                        path: "<rows>".into(),
                        line: index as u64 + 1,
                        field: field.to_owned(),
                        message,
                    })
                };
                let row: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&json).map_err(|error| data_error("-", error.to_string()))?;
                let conversation = formatter
                    .render_row(&row)
                    .map_err(|error| data_error(&error.field, error.message))?;
                let pair = |range: &std::ops::Range<usize>| (range.start, range.end);
                let turns = conversation
                    .turns
                    .iter()
                    .map(|turn| {
                        (
                            turn.role.clone(),
                            turn.trained,
                            turn.content.iter().map(pair).collect(),
                            turn.end_of_turn.as_ref().map(pair),
                            turn.end_of_turn_trained,
                        )
                    })
                    .collect();
                Ok((
                    conversation.text,
                    conversation.trainable.iter().map(pair).collect(),
                    turns,
                ))
            })
            .collect()
    })?;
    Ok(rendered)
}

/// The Jinja source of a built-in style, so Python can hand transformers the
/// very template axr renders.
#[pyfunction]
pub fn chat_style_source(name: &str) -> PyResult<String> {
    chat::styles::find(name)
        .map(|style| style.source.to_owned())
        .ok_or_else(|| {
            invalid(
                "chat_template",
                format!("unknown style `{name}`; known: {}", chat::styles::names().join(", ")),
            )
            .into()
        })
}

/// Names of the built-in styles.
#[pyfunction]
pub fn chat_style_names() -> Vec<&'static str> {
    chat::styles::names()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(chat_render, m)?)?;
    m.add_function(wrap_pyfunction!(chat_style_source, m)?)?;
    m.add_function(wrap_pyfunction!(chat_style_names, m)?)?;
    Ok(())
}
