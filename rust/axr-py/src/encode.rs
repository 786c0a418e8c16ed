//! Bindings of `axr_core::encode` and `axr_core::format` for tests and prompt
//! rendering: JSON rows in, rendered text or ids + masks out.

use std::path::PathBuf;

use axr_core::encode::{self, AddedTokens, Encoder};
use axr_core::{Error, FormatSpec, Sample};
use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

use crate::errors::PyAxrError;

/// Each row's text and trained byte spans.
type RenderedRows = Vec<(String, Vec<(usize, usize)>)>;
/// Each row's ids and trainable flags.
type EncodedRows<'py> = Vec<(Bound<'py, PyArray1<u32>>, Bound<'py, PyArray1<bool>>)>;

fn config_error(key: &str, error: &serde_json::Error) -> PyAxrError {
    PyAxrError(Error::Config {
        key: key.into(),
        message: error.to_string(),
    })
}

fn parse_spec(json: &str) -> Result<FormatSpec, PyAxrError> {
    serde_json::from_str(json).map_err(|error| config_error("format_spec", &error))
}

fn load(tokenizer_dir: &str, added_tokens: &str) -> Result<Encoder, PyAxrError> {
    let added: AddedTokens =
        serde_json::from_str(added_tokens).map_err(|error| config_error("added_tokens", &error))?;
    Ok(Encoder::from_dir(&PathBuf::from(tokenizer_dir), &added)?)
}

/// `[(text, [(start_byte, end_byte), ...]), ...]`: each row rendered, with its trained byte spans.
#[pyfunction]
#[pyo3(signature = (rows, format_spec, tokenizer_dir, added_tokens = "{}"))]
#[expect(clippy::needless_pass_by_value, reason = "PyO3 extracts the list as an owned Vec")]
fn render_rows(
    py: Python<'_>,
    rows: Vec<String>,
    format_spec: &str,
    tokenizer_dir: &str,
    added_tokens: &str,
) -> PyResult<RenderedRows> {
    let spec = parse_spec(format_spec)?;
    let encoder = load(tokenizer_dir, added_tokens)?;
    let samples = py
        .detach(|| encode::render_json_rows(&rows, &spec, &encoder.info()))
        .map_err(PyAxrError::from)?;
    samples
        .into_iter()
        .map(|sample| match sample {
            Sample::Text(rendered) => Ok((
                rendered.text,
                rendered
                    .trainable
                    .into_iter()
                    .map(|span| (span.start, span.end))
                    .collect(),
            )),
            Sample::Tokens { .. } => {
                Err(PyAxrError(Error::Invalid("pretokenized rows have no text to render".into())).into())
            }
        })
        .collect()
}

/// `[(input_ids u32, trainable bool), ...]`: each row formatted, tokenized once, masked.
#[pyfunction]
#[pyo3(signature = (rows, format_spec, tokenizer_dir, added_tokens = "{}"))]
#[expect(clippy::needless_pass_by_value, reason = "PyO3 extracts the list as an owned Vec")]
fn encode_rows<'py>(
    py: Python<'py>,
    rows: Vec<String>,
    format_spec: &str,
    tokenizer_dir: &str,
    added_tokens: &str,
) -> PyResult<EncodedRows<'py>> {
    let spec = parse_spec(format_spec)?;
    let encoder = load(tokenizer_dir, added_tokens)?;
    let samples = py
        .detach(|| encode::encode_json_rows(&rows, &spec, &encoder))
        .map_err(PyAxrError::from)?;
    Ok(samples
        .into_iter()
        .map(|sample| (sample.input_ids.into_pyarray(py), sample.trainable.into_pyarray(py)))
        .collect())
}

/// `(ids per text, seconds, summary JSON)`: `texts` encoded in parallel as preprocess encodes
/// them (fast encoder when the tokenizer is recognised); `seconds` times the encoding alone and
/// the summary says which encoder ran, its word-cache counters and per-stage times.
#[pyfunction]
#[pyo3(signature = (texts, tokenizer_dir, added_tokens = "{}", add_special_tokens = true))]
#[expect(clippy::needless_pass_by_value, reason = "PyO3 extracts the list as an owned Vec")]
fn encode_texts(
    py: Python<'_>,
    texts: Vec<String>,
    tokenizer_dir: &str,
    added_tokens: &str,
    add_special_tokens: bool,
) -> PyResult<(Vec<Vec<u32>>, f64, String)> {
    let encoder = load(tokenizer_dir, added_tokens)?;
    let (ids, seconds) = py.detach(|| {
        let started = std::time::Instant::now();
        let ids = encoder.encode_texts(&texts, add_special_tokens);
        (ids, started.elapsed().as_secs_f64())
    });
    let ids = ids.map_err(PyAxrError::from)?;
    let summary = serde_json::to_string(&encoder.summary()).expect("summary serialises to JSON");
    Ok((ids, seconds, summary))
}

/// Save the tokenizer with `added_tokens` applied into `out_dir`; returns its vocabulary size.
#[pyfunction]
#[pyo3(signature = (tokenizer_dir, out_dir, added_tokens = "{}"))]
fn save_tokenizer(tokenizer_dir: &str, out_dir: &str, added_tokens: &str) -> PyResult<usize> {
    let encoder = load(tokenizer_dir, added_tokens)?;
    encoder.save(&PathBuf::from(out_dir)).map_err(PyAxrError::from)?;
    Ok(encoder.vocab_size())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(render_rows, m)?)?;
    m.add_function(wrap_pyfunction!(encode_rows, m)?)?;
    m.add_function(wrap_pyfunction!(save_tokenizer, m)?)?;
    m.add_function(wrap_pyfunction!(encode_texts, m)?)?;
    Ok(())
}
