//! Binding of `axr_core::pipeline::preprocess`: options JSON in, report JSON out, the GIL
//! released while it runs and re-taken between chunks for Ctrl-C and the progress callback.

use std::ops::ControlFlow;

use axr_core::options::{PreprocessOptions, SourceOptions};
use axr_core::pipeline::{self, Progress, ProgressUpdate};
use axr_core::source::{self, FileKind};
use pyo3::prelude::*;

use crate::errors::PyAxrError;

/// Re-attaches to Python at every tick: `check_signals` makes Ctrl-C stop the run within a
/// chunk (about a second), and the optional callback draws the progress bar. A Python error
/// from either is kept and raised once the core has cleaned up.
struct PythonProgress {
    callback: Option<Py<PyAny>>,
    error: Option<PyErr>,
}

impl Progress for PythonProgress {
    fn tick(&mut self, update: &ProgressUpdate<'_>) -> ControlFlow<()> {
        Python::attach(|py| {
            let outcome = py.check_signals().and_then(|()| match &self.callback {
                Some(callback) => callback
                    .call1(
                        py,
                        (update.stage, update.done, update.total, update.rows, update.tokens),
                    )
                    .map(drop),
                None => Ok(()),
            });
            match outcome {
                Ok(()) => ControlFlow::Continue(()),
                Err(error) => {
                    self.error = Some(error);
                    ControlFlow::Break(())
                }
            }
        })
    }
}

/// Runs (or reuses) a preprocessing job; returns the report as JSON
/// (`root`, `fingerprint`, `reused`, `stores`, `seconds`).
#[pyfunction]
#[pyo3(signature = (options_json, *, progress = None))]
fn preprocess(py: Python<'_>, options_json: &str, progress: Option<Py<PyAny>>) -> PyResult<String> {
    let options = PreprocessOptions::from_json(options_json).map_err(PyAxrError::from)?;
    let mut reporter = PythonProgress {
        callback: progress,
        error: None,
    };
    let result = py.detach(|| pipeline::preprocess(&options, &mut reporter));
    if let Some(error) = reporter.error {
        return Err(error);
    }
    let prepared = result.map_err(PyAxrError::from)?;
    Ok(serde_json::to_string(&prepared).expect("report serialises to JSON"))
}

/// The store root (`<prepared_dir>/<fingerprint>`) the options lead to, built or not.
#[pyfunction]
fn locate_prepared(py: Python<'_>, options_json: &str) -> PyResult<String> {
    let options = PreprocessOptions::from_json(options_json).map_err(PyAxrError::from)?;
    let root = py.detach(|| pipeline::locate(&options)).map_err(PyAxrError::from)?;
    Ok(root.to_string_lossy().into_owned())
}

/// The files a dataset's source keys resolve to, in reading order, as `(path, kind)` with kind
/// `json`, `text`, `parquet` or `arrow`: the data doctor reads rows exactly where preprocess did.
#[pyfunction]
fn resolve_source(source_json: &str, key: &str) -> PyResult<Vec<(String, &'static str)>> {
    let source: SourceOptions = serde_json::from_str(source_json).map_err(|error| {
        PyAxrError(axr_core::Error::Config {
            key: key.into(),
            message: error.to_string(),
        })
    })?;
    let files = source::resolve(&source, key).map_err(PyAxrError::from)?;
    Ok(files
        .into_iter()
        .map(|file| {
            let kind = match file.kind {
                FileKind::Json => "json",
                FileKind::Text => "text",
                FileKind::Parquet => "parquet",
                FileKind::Arrow => "arrow",
            };
            (file.path.to_string_lossy().into_owned(), kind)
        })
        .collect())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(resolve_source, m)?)?;
    m.add_function(wrap_pyfunction!(preprocess, m)?)?;
    m.add_function(wrap_pyfunction!(locate_prepared, m)?)?;
    Ok(())
}
