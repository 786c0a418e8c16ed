//! axr-core: the native data path of axr.
//!
//! Plain Rust with no Python in it, so every stage can be tested and
//! benchmarked with cargo alone. Data flows one way:
//!
//! ```text
//! JSONL ─> source ─> format ─> template ─> tokenize ─> mask ─> store ─> pack
//! ```
#![deny(missing_docs)]

pub mod chat;
pub mod chunk;
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
pub mod random;
pub mod sample;
pub mod source;
pub mod store;
pub mod suggest;

pub use encode::{AddedTokens, Encoder};
pub use error::{Error, Result};
pub use format::FormatSpec;
pub use sample::{Encoded, FieldError, IGNORE_INDEX, RenderedText, RowFormatter, Sample, TokenizerInfo};

/// Version of the crate, reported by `axr version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
