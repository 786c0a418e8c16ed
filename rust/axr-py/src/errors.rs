//! Core errors → Python exceptions. One root (`AxrError`) with leaves per kind,
//! so callers can catch `axr.errors.DataError` or everything at once.
//!
//! File-system failures are told apart by kind: a missing file, a permission
//! problem and a full disk each have their own class, which also derives from
//! the matching built-in (`FileNotFoundError`, `PermissionError`, `OSError`),
//! so `except OSError` keeps working. Each carries the path as `filename`.

use std::io::ErrorKind;

use pyo3::exceptions::{PyException, PyFileNotFoundError, PyKeyboardInterrupt, PyOSError, PyPermissionError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

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

/// The file-system classes: name, built-in base, docstring.
const FILE_ERRORS: [(&str, FileKind, &str); 4] = [
    (
        "NotFoundError",
        FileKind::NotFound,
        "A file or folder axr needs does not exist.",
    ),
    (
        "PermissionDeniedError",
        FileKind::Permission,
        "The operating system refused access to a file or folder.",
    ),
    (
        "DiskFullError",
        FileKind::DiskFull,
        "No space (or quota) left on the device.",
    ),
    ("FileAccessError", FileKind::Other, "Reading or writing a file failed."),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum FileKind {
    NotFound,
    Permission,
    DiskFull,
    Other,
}

static FILE_TYPES: PyOnceLock<Vec<(FileKind, Py<PyType>)>> = PyOnceLock::new();

/// `class Name(AxrError, <built-in OSError subclass>)`, built once.
fn file_types(py: Python<'_>) -> PyResult<&Vec<(FileKind, Py<PyType>)>> {
    FILE_TYPES.get_or_try_init(py, || {
        FILE_ERRORS
            .iter()
            .map(|&(name, kind, doc)| {
                let builtin = match kind {
                    FileKind::NotFound => py.get_type::<PyFileNotFoundError>(),
                    FileKind::Permission => py.get_type::<PyPermissionError>(),
                    FileKind::DiskFull | FileKind::Other => py.get_type::<PyOSError>(),
                };
                let bases = PyTuple::new(py, [py.get_type::<AxrError>(), builtin])?;
                let namespace = PyDict::new(py);
                namespace.set_item("__module__", "axr._native")?;
                namespace.set_item("__doc__", doc)?;
                // OSError's own __str__ rewrites the message as `[Errno n] strerror: filename`;
                // the core's message already names the path and the cause.
                namespace.set_item("__str__", py.get_type::<PyException>().getattr("__str__")?)?;
                let class = py.get_type::<PyType>().call1((name, bases, namespace))?;
                Ok((kind, class.cast_into::<PyType>()?.unbind()))
            })
            .collect()
    })
}

fn file_kind(error: &std::io::Error) -> Option<FileKind> {
    match error.kind() {
        ErrorKind::NotFound => Some(FileKind::NotFound),
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => Some(FileKind::Permission),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge => Some(FileKind::DiskFull),
        // A file that ends early or holds bytes that cannot be what it claims is a format problem.
        ErrorKind::UnexpectedEof | ErrorKind::InvalidData => None,
        _ => Some(FileKind::Other),
    }
}

/// The path fs-err names between backticks (`failed to open file `x`: ...`), if any.
fn quoted_path(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let end = message.rfind('`')?;
    (end > start).then(|| &message[start..end])
}

/// Newtype so `?` can turn a core error into a `PyErr` (orphan rule).
pub struct PyAxrError(pub axr_core::Error);

impl From<axr_core::Error> for PyAxrError {
    fn from(error: axr_core::Error) -> Self {
        Self(error)
    }
}

fn file_error(py: Python<'_>, kind: FileKind, message: &str) -> PyResult<PyErr> {
    let class = file_types(py)?
        .iter()
        .find(|(known, _)| *known == kind)
        .map(|(_, class)| class.bind(py))
        .expect("every kind has a class");
    let value = class.call1((message,))?;
    value.setattr("filename", quoted_path(message))?;
    Ok(PyErr::from_value(value))
}

fn with_filename(error: PyErr, path: &std::path::Path) -> PyErr {
    Python::attach(|py| {
        // Best effort: a failure to set an attribute must not hide the error itself.
        let _ = error.value(py).setattr("filename", path.to_string_lossy().as_ref());
    });
    error
}

impl From<PyAxrError> for PyErr {
    fn from(error: PyAxrError) -> Self {
        use axr_core::Error;
        let message = error.0.to_string();
        match error.0 {
            Error::Io(ref io) => match file_kind(io) {
                Some(kind) => Python::attach(|py| file_error(py, kind, &message).unwrap_or_else(|failure| failure)),
                None => FormatError::new_err(message),
            },
            Error::Format { ref path, .. } => with_filename(FormatError::new_err(message), path),
            Error::Config { .. } | Error::Invalid(_) => ConfigError::new_err(message),
            Error::Data { ref path, .. } => with_filename(DataError::new_err(message), path),
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
    for ((name, _, _), (_, class)) in FILE_ERRORS.iter().zip(file_types(py)?) {
        m.add(*name, class.bind(py))?;
    }
    Ok(())
}
