//! Thin PyO3 bindings of axr-core, imported from Python as `axr._native`.
//!
//! No logic lives here: convert arguments, release the GIL around core work,
//! map core errors to Python exceptions.

mod chat;
mod encode;
mod errors;
mod packing;
mod preference;
mod preprocess;
mod prompt;
mod suggest;

use pyo3::prelude::*;

/// The native extension module.
#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", axr_core::VERSION)?;
    m.add("IGNORE_INDEX", axr_core::IGNORE_INDEX)?;
    errors::register(m)?;
    chat::register(m)?;
    encode::register(m)?;
    packing::register(m)?;
    preference::register(m)?;
    preprocess::register(m)?;
    prompt::register(m)?;
    suggest::register(m)?;
    Ok(())
}
