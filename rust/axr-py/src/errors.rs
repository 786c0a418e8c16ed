//! Core errors → Python exceptions. One root (`AxrError`) with leaves per kind,
//! so callers can catch `axr.errors.DataError` or everything at once.

use pyo3::exceptions::{PyException, PyFileNotFoundError, PyKeyboardInterrupt};
use pyo3::prelude::*;

pyo3::create_exception!(axr._native, AxrError, PyException, "Root of every axr error.");
pyo3::create_exception!(axr._native, ConfigError, AxrError, "An invalid configuration value.");
pyo3::create_exception!(
    axr._native,
    DataError,
    AxrError,
    "Malformed input data (file, line, field)."
);
pyo3::create_exception!(
    axr._native,
    TokenizerError,
    AxrError,
    "The tokenizer failed to load or encode."
);
pyo3::create_exception!(
    axr._native,
    FormatError,
    AxrError,
    "A prepared store or file has the wrong format."
);

/// Newtype so `?` can turn a core error into a `PyErr` (orphan rule).
pub struct PyAxrError(pub axr_core::Error);

impl From<axr_core::Error> for PyAxrError {
    fn from(error: axr_core::Error) -> Self {
        Self(error)
    }
}

impl From<PyAxrError> for PyErr {
    fn from(error: PyAxrError) -> Self {
        use axr_core::Error;
        let message = error.0.to_string();
        match error.0 {
            Error::Io(ref io) if io.kind() == std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(message),
            Error::Io(_) | Error::Format { .. } => FormatError::new_err(message),
            Error::Config { .. } | Error::Invalid(_) => ConfigError::new_err(message),
            Error::Data { .. } => DataError::new_err(message),
            Error::Tokenizer(_) => TokenizerError::new_err(message),
            Error::Interrupted => PyKeyboardInterrupt::new_err(message),
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("AxrError", py.get_type::<AxrError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("DataError", py.get_type::<DataError>())?;
    m.add("TokenizerError", py.get_type::<TokenizerError>())?;
    m.add("FormatError", py.get_type::<FormatError>())?;
    Ok(())
}
