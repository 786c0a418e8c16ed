//! The one error type of the core. Every variant carries the context a user
//! needs to fix the input: which file, which line, which field.

use std::path::PathBuf;

/// Result alias used across the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the native data path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed (the message names the path).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A configuration value is invalid.
    #[error("config: {key}: {message}")]
    Config {
        /// The offending key, dotted (e.g. `datasets[0].type`).
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A row of input data is malformed.
    #[error("{}:{line}: {field}: {message}", path.display())]
    Data {
        /// The input file.
        path: PathBuf,
        /// 1-based line (JSONL) or row number.
        line: u64,
        /// The field at fault (`-` when the whole row is).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The tokenizer could not be loaded or failed on an input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A prepared store or other on-disk file has the wrong format.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Invalid arguments to a packing or other library call.
    #[error("{0}")]
    Invalid(String),
    /// The caller asked to stop (Ctrl-C).
    #[error("interrupted")]
    Interrupted,
}
