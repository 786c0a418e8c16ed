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

/// The method decides which dataset types exist: Axolotl loads KTO and ORPO types from their own
/// modules.
fn kind_of(rl: &str) -> Result<PreferenceKind, PyAxrError> {
    match rl {
        "kto" => Ok(PreferenceKind::Kto),
        "orpo" => Ok(PreferenceKind::Orpo),
        "dpo" | "ipo" | "simpo" => Ok(PreferenceKind::Pairs),
        other => Err(PyAxrError(Error::Config {
            key: "rl".into(),
            message: format!("'{other}' is not a preference method; known: dpo, ipo, kto, orpo, simpo"),
        })),
    }
}

/// Refuse a dataset `type:` that method `rl` does not read, before any input is hashed or read;
/// `key` is the dataset's key (`datasets[0]`), which the error names.
#[pyfunction]
fn check_preference_type(kind: &str, rl: &str, key: &str) -> PyResult<()> {
    preference::check_type(kind, kind_of(rl)?).map_err(|error| {
        let error = match error {
            Error::Config { key: inner, message } => Error::Config {
                key: format!("{key}.{inner}"),
                message,
            },
            other => other,
        };
        PyAxrError(error).into()
    })
}

/// Every completion of a preference dataset for method `rl` (Axolotl's `rl` value) tokenized once
/// with its prompt. Pairs: sequence `2i` is the chosen completion of row `i`, `2i + 1` the rejected
/// one; KTO: one sequence per row.
#[pyfunction]
#[pyo3(signature = (source, spec, tokenizer_dir, rl, added_tokens = "{}"))]
fn encode_preference<'py>(
    py: Python<'py>,
    source: &str,
    spec: &str,
    tokenizer_dir: &str,
    rl: &str,
    added_tokens: &str,
) -> PyResult<PreferenceArrays<'py>> {
    let kind = kind_of(rl)?;
    let source: SourceOptions = serde_json::from_str(source).map_err(|error| config_error("datasets", &error))?;
    let spec: PreferenceSpec = serde_json::from_str(spec).map_err(|error| config_error("datasets", &error))?;
    let added: AddedTokens =
        serde_json::from_str(added_tokens).map_err(|error| config_error("added_tokens", &error))?;
    let encoder = Encoder::from_dir(&PathBuf::from(tokenizer_dir), &added).map_err(PyAxrError::from)?;
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
    m.add_function(wrap_pyfunction!(check_preference_type, m)?)?;
    m.add_function(wrap_pyfunction!(encode_preference, m)?)?;
    Ok(())
}
