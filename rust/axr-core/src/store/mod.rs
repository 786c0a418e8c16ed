//! The prepared store: a directory of flat little-endian arrays plus `meta.json`.
//!
//! ```text
//! <store>/meta.json                 format version, counts, dtype, fingerprint, options
//! <store>/tokens-00000.bin          token ids, u16 or u32 LE, all samples back to back
//! <store>/mask-00000.bin            1 byte per token: 1 = trained, 0 = not
//! <store>/offsets-00000.bin         u64 LE, samples + 1 entries: sample i is tokens[offsets[i]..offsets[i+1]]
//! <store>/tokenizer/                the tokenizer the ids belong to (with added tokens)
//! ```
//!
//! A new shard (`-00001`, ...) starts when a shard would pass `shard_tokens`
//! tokens; offsets are relative to their shard. Python reads the same files
//! with `np.memmap` (python/axr/data/_format.py mirrors this module).

mod fingerprint;
mod reader;
mod writer;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use fingerprint::Fingerprinter;
pub use reader::StoreReader;
pub use writer::{StoreContents, StoreWriter};

use crate::error::{Error, Result};

/// Version of the on-disk layout; a reader refuses other versions.
pub const FORMAT_VERSION: u32 = 1;
/// Version of what the data path produces from the same inputs; part of the fingerprint, so a
/// change to tokenization, masking or the merge shuffle (2: unbiased RNG) rebuilds old stores
/// (3: the doctor's report and `sources.bin` in every store).
pub const DATA_VERSION: u32 = 3;
/// Name of the metadata file of a store.
pub const META_FILE: &str = "meta.json";
/// Folder of the saved tokenizer inside a store.
pub const TOKENIZER_DIR: &str = "tokenizer";

/// Width of the stored token ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenDtype {
    /// 2 bytes per token, for vocabularies of at most 65,536 ids.
    Uint16,
    /// 4 bytes per token.
    Uint32,
}

impl TokenDtype {
    /// The narrowest dtype that holds every id of a vocabulary of `vocab_size` ids.
    pub fn for_vocab(vocab_size: u64) -> Self {
        if vocab_size <= 1 << 16 {
            Self::Uint16
        } else {
            Self::Uint32
        }
    }

    /// Bytes per token.
    pub fn width(self) -> usize {
        match self {
            Self::Uint16 => 2,
            Self::Uint32 => 4,
        }
    }
}

/// The three files of one shard and what they hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardMeta {
    /// Token ids file, relative to the store.
    pub tokens: String,
    /// Label mask file.
    pub mask: String,
    /// Offsets file (`samples + 1` u64 entries).
    pub offsets: String,
    /// Samples in the shard.
    pub samples: u64,
    /// Tokens in the shard.
    pub tokens_count: u64,
}

/// What happened to the rows of one preprocessing run, by reason. Nothing is dropped unseen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCounts {
    /// Rows read from the input files (in the `shards` selection).
    pub rows_read: u64,
    /// Rows left out by a dataset's `shards` setting.
    pub rows_outside_shard: u64,
    /// Samples that reached the store(s), before the evaluation split and `dataset_shard_num`.
    pub samples_kept: u64,
    /// Samples dropped, by reason (`longer_than_sequence_len`, `no_trainable_tokens`).
    pub dropped: BTreeMap<String, u64>,
    /// Samples cut to `sequence_len`, by reason.
    pub truncated: BTreeMap<String, u64>,
    /// Malformed rows skipped (`on_bad_row = "skip"`).
    pub skipped_bad_rows: u64,
    /// The first messages of skipped rows (file:line: field: message).
    pub skipped_examples: Vec<String>,
    /// Samples left out by `dataset_shard_num` / `dataset_shard_idx`.
    pub samples_outside_dataset_shard: u64,
    /// Tokens of the kept samples.
    pub tokens: u64,
    /// Trained tokens of the kept samples.
    pub trainable_tokens: u64,
    /// Documents longer than `sequence_len` cut into chunks (`excess_length_strategy = "split"`).
    #[serde(default)]
    pub documents_split: u64,
    /// Samples those documents became (chunks kept).
    #[serde(default)]
    pub chunks_made: u64,
    /// Tokens of samples (or split pieces) tokenized and then dropped; rows dropped as surely too
    /// long before tokenizing are not in it.
    #[serde(default)]
    pub tokens_dropped: u64,
}

/// `meta.json` of a store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreMeta {
    /// [`FORMAT_VERSION`] of the layout.
    pub format_version: u32,
    /// [`DATA_VERSION`] of the producer.
    pub data_version: u32,
    /// axr version that wrote it.
    pub axr_version: String,
    /// `train` or `eval`.
    pub split: String,
    /// Hex xxh3-128 of everything that produced the store (inputs' bytes, options, tokenizer).
    pub fingerprint: String,
    /// Hex xxh3-128 of the tokenizer (with added tokens).
    pub tokenizer_hash: String,
    /// Width of the token ids.
    pub token_dtype: TokenDtype,
    /// Vocabulary size of the tokenizer (with added tokens).
    pub vocab_size: u64,
    /// Samples in the store.
    pub samples: u64,
    /// Tokens in the store.
    pub tokens: u64,
    /// Trained tokens in the store.
    pub trainable_tokens: u64,
    /// Longest sample in tokens.
    pub longest: u64,
    /// The shard files.
    pub shards: Vec<ShardMeta>,
    /// What happened to the rows of the run that produced this store.
    pub counts: RunCounts,
    /// The data doctor's findings over every row of that run (absent when it was built with the
    /// doctor off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doctor: Option<crate::doctor::DoctorReport>,
    /// The input files, indexed by `sources.bin`'s file field.
    #[serde(default)]
    pub source_files: Vec<String>,
    /// The preprocess options (the JSON Python sent).
    pub options: serde_json::Value,
}

impl StoreMeta {
    /// Read and check `meta.json` of the store at `dir`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(META_FILE);
        let text = fs_err::read_to_string(&path)?;
        let probe: serde_json::Value = serde_json::from_str(&text).map_err(|error| Error::Format {
            path: path.clone(),
            message: format!("not valid JSON: {error}"),
        })?;
        let version = probe.get("format_version").and_then(serde_json::Value::as_u64);
        if version != Some(u64::from(FORMAT_VERSION)) {
            return Err(Error::Format {
                path,
                message: format!(
                    "store format version {version:?}, this axr reads version {FORMAT_VERSION}; run axr preprocess again"
                ),
            });
        }
        serde_json::from_value(probe).map_err(|error| Error::Format {
            path,
            message: error.to_string(),
        })
    }

    /// Write `meta.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("meta serialises to JSON");
        fs_err::write(dir.join(META_FILE), text + "\n")?;
        Ok(())
    }
}

/// File names of shard `index`.
pub fn shard_file_names(index: usize) -> (String, String, String) {
    (
        format!("tokens-{index:05}.bin"),
        format!("mask-{index:05}.bin"),
        format!("offsets-{index:05}.bin"),
    )
}

#[cfg(test)]
mod tests;
