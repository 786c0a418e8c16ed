//! Bindings of `axr_core::chat` and `axr_core::template`: render conversation rows as training text with
//! per-turn spans (for tests, `axr inspect` and the data doctor).

use std::ops::Range;

use axr_core::spec::CONVERSATION_TYPES;
use axr_core::template::styles;
use axr_core::{Error, FormatSpec, TokenizerInfo, encode};
use pyo3::prelude::*;

use crate::encode::parse_spec;
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
/// dataset's other format keys (`chat_template`, `roles_to_train`, ...). A bad
/// row raises DataError naming `<rows>:<1-based index>` and the field.
#[pyfunction]
#[pyo3(signature = (dataset_type, options_json, rows, *, bos_token=None, eos_token=None, chat_template=None))]
#[expect(clippy::needless_pass_by_value, reason = "PyO3 extracts the list as an owned Vec")]
pub fn chat_render(
    py: Python<'_>,
    dataset_type: &str,
    options_json: &str,
    rows: Vec<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    chat_template: Option<String>,
) -> PyResult<Vec<Rendered>> {
    let spec = FormatSpec {
        kind: Some(dataset_type.to_owned()),
        ..parse_spec(options_json)?
    };
    let info = TokenizerInfo {
        bos: bos_token,
        eos: eos_token,
        chat_template,
    };
    let rendered = py
        .detach(|| encode::render_conversations(&rows, &spec, &info))
        .map_err(PyAxrError::from)?;
    let pair = |range: &Range<usize>| (range.start, range.end);
    Ok(rendered
        .into_iter()
        .map(|conversation| {
            let turns = conversation
                .turns
                .iter()
                .map(|turn| {
                    let content = turn.content.iter().map(pair).collect();
                    let end = turn.end_of_turn.as_ref().map(pair);
                    (turn.role.clone(), turn.trained, content, end, turn.end_of_turn_trained)
                })
                .collect();
            (
                conversation.text,
                conversation.trainable.iter().map(pair).collect(),
                turns,
            )
        })
        .collect())
}

/// The Jinja source of a built-in style, so Python can hand transformers the
/// very template axr renders.
#[pyfunction]
pub fn chat_style_source(name: &str) -> PyResult<String> {
    styles::find(name).map(|style| style.source.to_owned()).ok_or_else(|| {
        invalid(
            "chat_template",
            format!("unknown style `{name}`; known: {}", styles::names().join(", ")),
        )
        .into()
    })
}

/// Names of the built-in styles.
#[pyfunction]
pub fn chat_style_names() -> Vec<&'static str> {
    styles::names()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(chat_render, m)?)?;
    m.add_function(wrap_pyfunction!(chat_style_source, m)?)?;
    m.add_function(wrap_pyfunction!(chat_style_names, m)?)?;
    m.add("CONVERSATION_TYPES", CONVERSATION_TYPES.to_vec())?;
    Ok(())
}
