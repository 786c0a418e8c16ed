//! Binding of `axr_core::encode::Encoder`: a tokenizer loaded once (with its added tokens),
//! reused for every batch of rows or texts, each batch run with the GIL released.

use std::path::PathBuf;

use axr_core::encode::{self, AddedTokens};
use axr_core::{Error, FormatSpec, Sample};
use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

use crate::errors::PyAxrError;

/// Each row's text and trained byte spans.
type RenderedRows = Vec<(String, Vec<(usize, usize)>)>;
/// Each row's ids and trainable flags.
type EncodedRows<'py> = Vec<(Bound<'py, PyArray1<u32>>, Bound<'py, PyArray1<bool>>)>;

pub fn config_error(key: &str, error: &serde_json::Error) -> PyAxrError {
    PyAxrError(Error::Config {
        key: key.into(),
        message: error.to_string(),
    })
}

pub fn parse_spec(json: &str) -> Result<FormatSpec, PyAxrError> {
    serde_json::from_str(json).map_err(|error| config_error("format_spec", &error))
}

/// `tokenizer.json` (and `tokenizer_config.json`) of a folder, with `added_tokens` applied.
#[pyclass(module = "axr._native", name = "Encoder", frozen)]
pub struct PyEncoder {
    encoder: encode::Encoder,
}

#[pymethods]
impl PyEncoder {
    /// Load the tokenizer of `tokenizer_dir` once; `added_tokens` is JSON (`{"special_tokens": ..., "tokens": [...]}`).
    #[new]
    #[pyo3(signature = (tokenizer_dir, added_tokens = "{}"))]
    #[expect(
        clippy::needless_pass_by_value,
        reason = "PyO3 extracts the path as an owned PathBuf"
    )]
    fn new(py: Python<'_>, tokenizer_dir: PathBuf, added_tokens: &str) -> PyResult<Self> {
        let added: AddedTokens =
            serde_json::from_str(added_tokens).map_err(|error| config_error("added_tokens", &error))?;
        let encoder = py
            .detach(|| encode::Encoder::from_dir(&tokenizer_dir, &added))
            .map_err(PyAxrError::from)?;
        Ok(Self { encoder })
    }

    /// `[(text, [(start_byte, end_byte), ...]), ...]`: each JSON row rendered with the format keys
    /// `format_spec` (JSON), with its trained byte spans.
    #[expect(clippy::needless_pass_by_value, reason = "PyO3 extracts the list as an owned Vec")]
    fn render_rows(&self, py: Python<'_>, rows: Vec<String>, format_spec: &str) -> PyResult<RenderedRows> {
        let spec = parse_spec(format_spec)?;
        let info = self.encoder.info();
        let samples = py
            .detach(|| encode::render_json_rows(&rows, &spec, &info))
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

    /// `[(input_ids u32, trainable bool), ...]`: each JSON row formatted, tokenized once, masked.
    #[expect(clippy::needless_pass_by_value, reason = "PyO3 extracts the list as an owned Vec")]
    fn encode_rows<'py>(&self, py: Python<'py>, rows: Vec<String>, format_spec: &str) -> PyResult<EncodedRows<'py>> {
        let spec = parse_spec(format_spec)?;
        let samples = py
            .detach(|| encode::encode_json_rows(&rows, &spec, &self.encoder))
            .map_err(PyAxrError::from)?;
        Ok(samples
            .into_iter()
            .map(|sample| (sample.input_ids.into_pyarray(py), sample.trainable.into_pyarray(py)))
            .collect())
    }

    /// `(ids per text, seconds, summary JSON)`: `texts` encoded in parallel as preprocess encodes
    /// them (fast encoder when the tokenizer is recognised); `seconds` times the encoding alone and
    /// the summary says which encoder ran, its word-cache counters (since load) and per-stage times.
    #[pyo3(signature = (texts, add_special_tokens = true))]
    #[expect(clippy::needless_pass_by_value, reason = "PyO3 extracts the list as an owned Vec")]
    fn encode_texts(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        add_special_tokens: bool,
    ) -> PyResult<(Vec<Vec<u32>>, f64, String)> {
        let (ids, seconds) = py.detach(|| {
            let started = std::time::Instant::now();
            let ids = self.encoder.encode_texts(&texts, add_special_tokens);
            (ids, started.elapsed().as_secs_f64())
        });
        let ids = ids.map_err(PyAxrError::from)?;
        let summary = serde_json::to_string(&self.encoder.summary()).expect("summary serialises to JSON");
        Ok((ids, seconds, summary))
    }

    /// Save the tokenizer with its added tokens into `out_dir` (created if missing).
    #[expect(
        clippy::needless_pass_by_value,
        reason = "PyO3 extracts the path as an owned PathBuf"
    )]
    fn save(&self, py: Python<'_>, out_dir: PathBuf) -> PyResult<()> {
        py.detach(|| self.encoder.save(&out_dir)).map_err(PyAxrError::from)?;
        Ok(())
    }

    /// The vocabulary size, added tokens included.
    #[getter]
    fn vocab_size(&self) -> usize {
        self.encoder.vocab_size()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEncoder>()
}
