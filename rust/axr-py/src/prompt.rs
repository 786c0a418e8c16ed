//! Binding of `axr_core::prompt::render_prompt`: inference prompts rendered by
//! the training formatters and tokenized by the training tokenizer.

use axr_core::encode::Encoder;
use axr_core::options::PreprocessOptions;
use axr_core::pipeline;
use axr_core::prompt::{PromptRequest, render_prompt, stop_texts};
use axr_core::template::TemplateMessage;
use axr_core::{Error, FormatSpec, RenderedText, Sample, TokenizerInfo};
use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

use crate::errors::PyAxrError;

fn config_error(key: &str, error: &serde_json::Error) -> PyAxrError {
    PyAxrError(Error::Config {
        key: key.into(),
        message: error.to_string(),
    })
}

/// A dataset's format and tokenizer, loaded once, rendering prompts for generation.
#[pyclass(module = "axr._native", name = "PromptRenderer", frozen)]
pub struct PyPromptRenderer {
    spec: FormatSpec,
    encoder: Encoder,
    info: TokenizerInfo,
    stop_texts: Vec<String>,
}

#[pymethods]
impl PyPromptRenderer {
    /// `options_json`: the preprocessing options of the config (`axr.data.options_from_config`),
    /// which say how the tokenizer is set up (added tokens, top-level chat template);
    /// `format_spec`: the format keys of the dataset whose prompt format to use, as JSON.
    #[new]
    fn new(py: Python<'_>, options_json: &str, format_spec: &str) -> PyResult<Self> {
        let options: PreprocessOptions =
            serde_json::from_str(options_json).map_err(|error| config_error("preprocess options", &error))?;
        let spec: FormatSpec =
            serde_json::from_str(format_spec).map_err(|error| config_error("format_spec", &error))?;
        let encoder = py
            .detach(|| pipeline::load_encoder(&options))
            .map_err(PyAxrError::from)?;
        let info = encoder.info();
        // Build once so a bad format is an error at load time, not at the first prompt.
        render_prompt(&spec, &info, &PromptRequest::Text(String::new())).map_err(PyAxrError::from)?;
        let stop_texts = stop_texts(&spec, &info).map_err(PyAxrError::from)?;
        Ok(Self {
            spec,
            encoder,
            info,
            stop_texts,
        })
    }

    /// `(prompt text, input ids, fields read as empty)` for exactly one of: `row` (a JSON
    /// object in the dataset's schema), `text` (the user's text) or `messages` (a history of
    /// `(role, content)` in template roles).
    #[pyo3(signature = (*, row = None, text = None, messages = None))]
    fn render<'py>(
        &self,
        py: Python<'py>,
        row: Option<&str>,
        text: Option<String>,
        messages: Option<Vec<(String, String)>>,
    ) -> PyResult<(String, Bound<'py, PyArray1<u32>>, Vec<String>)> {
        let request = match (row, text, messages) {
            (Some(row), None, None) => {
                PromptRequest::Row(serde_json::from_str(row).map_err(|error| config_error("row", &error))?)
            }
            (None, Some(text), None) => PromptRequest::Text(text),
            (None, None, Some(messages)) => PromptRequest::Messages(
                messages
                    .into_iter()
                    .map(|(role, content)| TemplateMessage { role, content })
                    .collect(),
            ),
            _ => {
                return Err(PyAxrError(Error::Invalid(
                    "PromptRenderer.render takes exactly one of row, text, messages".into(),
                ))
                .into());
            }
        };
        let (prompt, ids) = py
            .detach(|| -> Result<_, Error> {
                let prompt = render_prompt(&self.spec, &self.info, &request)?;
                let sample = Sample::Text(RenderedText {
                    text: prompt.text.clone(),
                    trainable: Vec::new(),
                    add_special_tokens: prompt.add_special_tokens,
                });
                let encoded = self.encoder.encode(&sample).map_err(|error| Error::Data {
                    path: "<prompt>".into(),
                    line: 1,
                    field: error.field,
                    message: error.message,
                })?;
                Ok((prompt, encoded.input_ids))
            })
            .map_err(PyAxrError::from)?;
        Ok((prompt.text, ids.into_pyarray(py), prompt.empty_fields))
    }

    /// The tokenizer's EOS text, if it has one.
    #[getter]
    fn eos_token(&self) -> Option<String> {
        self.info.eos.clone()
    }

    /// Texts that end an answer (EOS, a conversation's end-of-turn markers).
    #[getter]
    fn stop_texts(&self) -> Vec<String> {
        self.stop_texts.clone()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyPromptRenderer>()?;
    Ok(())
}
