//! Bindings of `axr_core::format::preference`: one preference dataset in, ids + masks out.

use std::path::PathBuf;

use axr_core::Error;
use axr_core::encode::{AddedTokens, Encoder};
use axr_core::format::preference::{self, PreferenceKind, PreferenceSpec};
use axr_core::options::SourceOptions;
use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

use crate::errors::PyAxrError;

/// `(input_ids, trainable, offsets, desirable, warnings)` of one dataset.
type PreferenceArrays<'py> = (
    Bound<'py, PyArray1<u32>>,
    Bound<'py, PyArray1<bool>>,
    Bound<'py, PyArray1<u64>>,
    Bound<'py, PyArray1<bool>>,
    Vec<String>,
);

fn config_error(key: &str, error: &serde_json::Error) -> PyAxrError {
    PyAxrError(Error::Config {
        key: key.into(),
        message: error.to_string(),
    })
}

/// Every completion of a preference (or, with `kto`, KTO) dataset tokenized once with its prompt.
/// Pairs: sequence `2i` is the chosen completion of row `i`, `2i + 1` the rejected one.
#[pyfunction]
#[pyo3(signature = (source, spec, tokenizer_dir, kto, added_tokens = "{}"))]
fn encode_preference<'py>(
    py: Python<'py>,
    source: &str,
    spec: &str,
    tokenizer_dir: &str,
    kto: bool,
    added_tokens: &str,
) -> PyResult<PreferenceArrays<'py>> {
    let source: SourceOptions = serde_json::from_str(source).map_err(|error| config_error("datasets", &error))?;
    let spec: PreferenceSpec = serde_json::from_str(spec).map_err(|error| config_error("datasets", &error))?;
    let added: AddedTokens =
        serde_json::from_str(added_tokens).map_err(|error| config_error("added_tokens", &error))?;
    let encoder = Encoder::from_dir(&PathBuf::from(tokenizer_dir), &added).map_err(PyAxrError::from)?;
    let kind = if kto {
        PreferenceKind::Kto
    } else {
        PreferenceKind::Pairs
    };
    let (rows, warnings) = py
        .detach(|| preference::encode_preference_dataset(&source, &spec, kind, &encoder))
        .map_err(PyAxrError::from)?;
    Ok((
        rows.input_ids.into_pyarray(py),
        rows.trainable.into_pyarray(py),
        rows.offsets.into_pyarray(py),
        rows.desirable.into_pyarray(py),
        warnings,
    ))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(encode_preference, m)?)?;
    Ok(())
}
