//! axr-core: the native data path of axr.
//!
//! Plain Rust with no Python in it, so every stage can be tested and
//! benchmarked with cargo alone. Data flows one way:
//!
//! ```text
//! JSONL ─> source ─> format ─> template ─> tokenize ─> mask ─> store ─> pack
//! ```
//!
//! A dataset's format options are one type, [`spec::FormatSpec`], in a module that imports
//! no formatter; `dataset_type` picks the formatter (`format` for text types, `chat` for
//! conversations), and both render chat templates through `template`.
#![deny(missing_docs)]

pub mod chat;
pub mod chunk;
pub mod dataset_type;
pub mod doctor;
pub mod encode;
pub mod error;
pub mod fast_encode;
pub mod format;
#[cfg(test)]
mod fuzz;
pub mod options;
pub mod pack;
pub mod pipeline;
pub mod prompt;
pub mod random;
pub mod sample;
pub mod source;
pub mod spec;
pub mod store;
pub mod suggest;
pub mod template;

pub use encode::{AddedTokens, Encoder};
pub use error::{Error, Result};
pub use sample::{Encoded, FieldError, IGNORE_INDEX, RenderedText, RowFormatter, Sample, TokenizerInfo};
pub use spec::FormatSpec;

/// Version of the crate, reported by `axr version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
