//! Binding of `axr_core::suggest`: the "did you mean" helper shared by config keys and dataset types.

use pyo3::prelude::*;

/// The candidate a misspelt `key` was meant to be, if one is a typo away.
#[pyfunction]
#[expect(clippy::needless_pass_by_value, reason = "PyO3 extracts the list as an owned Vec")]
fn suggest(key: &str, candidates: Vec<String>) -> Option<String> {
    axr_core::suggest::closest(key, candidates.iter().map(String::as_str)).map(str::to_owned)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(suggest, m)?)?;
    Ok(())
}
