//! Where rows come from: a `datasets` entry's `path`, `data_files`, `ds_type`
//! and `split` resolved to a list of local files, and a streaming reader that
//! turns those files into chunks of raw rows with 1-based line numbers.
//!
//! Nothing here touches the network: a hub id or URL is an error that says how
//! to point at a local copy instead.

mod columnar;
mod reader;
mod resolve;

pub use reader::{DatasetFiles, RawChunk, RawRow, RowData, RowReader, absolute_line};
pub(crate) use reader::{json_message, json_type};
pub use resolve::{FileKind, SourceFile, resolve};
