//! Binding of `axr_core::pipeline::preprocess`: options JSON in, report JSON out. The pipeline
//! runs on its own thread without the GIL; the calling (main) thread watches for Ctrl-C.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axr_core::options::PreprocessOptions;
use axr_core::pipeline::{self, Progress, ProgressUpdate};
use pyo3::prelude::*;

use crate::errors::PyAxrError;

/// How often the main thread looks for a pending Ctrl-C while the pipeline runs.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// Calls the optional progress callback at every tick; a Python error from it is kept and
/// raised once the core has cleaned up. `stop` is set by the main thread on Ctrl-C.
struct PythonProgress {
    callback: Option<Py<PyAny>>,
    error: Option<PyErr>,
    stop: Arc<AtomicBool>,
}

impl Progress for PythonProgress {
    fn tick(&mut self, update: &ProgressUpdate<'_>) -> ControlFlow<()> {
        if self.stop.load(Ordering::Relaxed) {
            return ControlFlow::Break(());
        }
        let Some(callback) = &self.callback else {
            return ControlFlow::Continue(());
        };
        Python::attach(|py| {
            let outcome = callback.call1(
                py,
                (update.stage, update.done, update.total, update.rows, update.tokens),
            );
            match outcome {
                Ok(_) => ControlFlow::Continue(()),
                Err(error) => {
                    self.error = Some(error);
                    ControlFlow::Break(())
                }
            }
        })
    }

    fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }
}

/// Runs (or reuses) a preprocessing job; returns the report as JSON
/// (`root`, `fingerprint`, `reused`, `stores`, `seconds`, `warnings`).
///
/// Python runs signal handlers only on the main thread while it holds the GIL, so the pipeline
/// runs on a worker thread and the main thread checks for signals every 50 ms: Ctrl-C sets the
/// stop flag, the workers stop at their next row, the core removes its temporary folder, and
/// the `KeyboardInterrupt` is raised.
#[pyfunction]
#[pyo3(signature = (options_json, *, progress = None))]
fn preprocess(py: Python<'_>, options_json: &str, progress: Option<Py<PyAny>>) -> PyResult<String> {
    let options = PreprocessOptions::from_json(options_json).map_err(PyAxrError::from)?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut reporter = PythonProgress {
        callback: progress,
        error: None,
        stop: Arc::clone(&stop),
    };
    let mut signal = None;
    let result = py.detach(|| {
        std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name("axr-preprocess".into())
                .spawn_scoped(scope, || pipeline::preprocess(&options, &mut reporter))
                .expect("spawn the preprocess thread");
            while !worker.is_finished() {
                std::thread::park_timeout(SIGNAL_POLL);
                if signal.is_none()
                    && let Some(error) = Python::attach(|py| py.check_signals().err())
                {
                    signal = Some(error);
                    stop.store(true, Ordering::Relaxed);
                }
            }
            worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    });
    if let Some(error) = signal.or(reporter.error) {
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

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(preprocess, m)?)?;
    m.add_function(wrap_pyfunction!(locate_prepared, m)?)?;
    Ok(())
}
