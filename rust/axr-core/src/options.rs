//! [`PreprocessOptions`]: the one schema between Python and the native data
//! path. Python builds it from the config and sends it as JSON; the same JSON
//! is written to every store's `meta.json`. Unknown keys are errors on both
//! sides, so a key added on one side only fails loudly.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Everything `axr preprocess` needs, as resolved from the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessOptions {
    /// Training datasets, merged in this order (config `datasets`).
    pub datasets: Vec<DatasetOptions>,
    /// Evaluation datasets with their own store (config `test_datasets`).
    #[serde(default)]
    pub test_datasets: Vec<DatasetOptions>,
    /// Folder holding `tokenizer.json` (and `tokenizer_config.json`).
    pub tokenizer_dir: PathBuf,
    /// Special tokens to set or add (config `special_tokens`), e.g. `{"pad_token": "<pad>"}`.
    #[serde(default)]
    pub special_tokens: BTreeMap<String, String>,
    /// Extra tokens to add to the vocabulary (config `tokens`).
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Longest sample in tokens (config `sequence_len`).
    pub sequence_len: usize,
    /// What happens to a sample longer than `sequence_len`; unset: `split` for completion data,
    /// `drop` for the rest (see [`crate::chunk::strategies`]).
    #[serde(default)]
    pub excess_length_strategy: Option<ExcessLengthStrategy>,
    /// What happens to a malformed row.
    #[serde(default)]
    pub on_bad_row: BadRowPolicy,
    /// Shuffle the merged samples (seeded). Axolotl's default is true.
    #[serde(default = "default_true")]
    pub shuffle_merged_datasets: bool,
    /// Held-out evaluation share: a fraction when below 1, else a count of samples.
    #[serde(default)]
    pub val_set_size: f64,
    /// Seed of the shuffle and of the evaluation split.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Keep only one of this many contiguous shards of the merged samples.
    #[serde(default)]
    pub dataset_shard_num: Option<u64>,
    /// Which shard to keep (0-based), with `dataset_shard_num`.
    #[serde(default)]
    pub dataset_shard_idx: Option<u64>,
    /// Where prepared stores live (config `dataset_prepared_path`); one folder per fingerprint.
    pub prepared_dir: PathBuf,
    /// Worker threads (config `dataset_processes`); all cores when absent. Not part of the fingerprint.
    #[serde(default)]
    pub num_threads: Option<usize>,
    /// Rows per parallel chunk: memory is bounded by a few chunks. Not part of the fingerprint.
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: usize,
    /// Bytes of raw input per parallel chunk (whichever limit comes first). Not part of the fingerprint.
    #[serde(default = "default_chunk_bytes")]
    pub chunk_bytes: usize,
    /// Tokens per store shard file. Not part of the fingerprint.
    #[serde(default = "default_shard_tokens")]
    pub shard_tokens: u64,
    /// Top-level `chat_template` (a style, `tokenizer_default[_fallback_<style>]` or `jinja`): set as
    /// the tokenizer's template, used by conversation datasets that name none, saved with the tokenizer.
    #[serde(default)]
    pub chat_template: Option<String>,
    /// Top-level `chat_template_jinja`: the template text or file for `chat_template = "jinja"`.
    #[serde(default)]
    pub chat_template_jinja: Option<String>,
    /// Run the data doctor over every row (findings land in meta.json). Not part of the fingerprint.
    #[serde(default = "default_true")]
    pub doctor: bool,
    /// Keep the parts of a sharded run after they are merged (by default the merged store replaces
    /// them). Neither fingerprinted nor recorded in meta.json: the merged store is the same either way.
    #[serde(default, skip_serializing)]
    pub keep_parts: bool,
    /// What a row holding a special token's text does (config `special_tokens_in_text`).
    #[serde(default)]
    pub special_tokens_in_text: SpecialTokensPolicy,
    /// `axr preprocess --verify-encoder N`: encode the first N texts with both the fast encoder
    /// and `tokenizers`, fail on any difference; an existing store is rebuilt, not reused.
    /// Not part of the fingerprint.
    #[serde(default)]
    pub verify_encoder: u64,
}

/// Where one dataset's rows come from, and how they are formatted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetOptions {
    /// Where the rows are read from.
    pub source: SourceOptions,
    /// The format keys of the `datasets` entry (`type`, `field`, `field_*`, ...), given as is to the
    /// formatter, which checks them.
    pub format: serde_json::Value,
}

impl DatasetOptions {
    /// The config key that names this entry in messages: the one Python gave, else `list[index]`.
    pub fn key(&self, list: &str, index: usize) -> String {
        if self.source.key.is_empty() {
            format!("{list}[{index}]")
        } else {
            self.source.key.clone()
        }
    }
}

/// The source keys of one `datasets` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceOptions {
    /// A file, a glob, a directory, or a loader name (`json`, `text`) used with `data_files`.
    pub path: String,
    /// File type: `json` (JSON lines or a JSON array; the default) or `text` (one row per line).
    #[serde(default)]
    pub ds_type: Option<String>,
    /// Files (or globs) to read; relative ones are under `path` when it is a directory.
    #[serde(default)]
    pub data_files: Vec<String>,
    /// Split to read (`split` / `train_on_split`); local files have `train` only unless a
    /// directory names its files by split.
    #[serde(default)]
    pub split: Option<String>,
    /// Keep one of this many interleaved shards of this dataset's rows.
    #[serde(default)]
    pub shards: Option<u64>,
    /// Which shard to keep with `shards` (0-based; default 0).
    #[serde(default)]
    pub shards_idx: Option<u64>,
    /// Name used in messages, e.g. `datasets[0]`.
    #[serde(default)]
    pub key: String,
    /// Where the local files came from when they were fetched (a hub dataset's commit sha, a
    /// remote URL with its ETag). Fingerprinted, so a new revision or a changed remote file
    /// builds a new store even where the cached copies sit at the same path; kept in meta.json.
    #[serde(default)]
    pub origin: Option<String>,
}

/// What happens to a sample longer than `sequence_len` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExcessLengthStrategy {
    /// Drop it and count it (Axolotl's behaviour for templated data).
    Drop,
    /// Keep its first `sequence_len` tokens and count it.
    Truncate,
    /// Cut it into `sequence_len` chunks (Axolotl's behaviour for completion data; see [`crate::chunk`]).
    Split,
}

/// What happens to a row that cannot be read or formatted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BadRowPolicy {
    /// Stop with an error naming file, line and field.
    #[default]
    Error,
    /// Skip it, count it and keep the first messages in the summary.
    Skip,
}

/// What happens to a row whose text holds a special token's string (e.g. a literal `</s>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpecialTokensPolicy {
    /// The data doctor counts it (the row is trained as tokenized).
    #[default]
    Report,
    /// Preprocessing stops at the first such row, naming file, line and field.
    Error,
}

fn default_true() -> bool {
    true
}
fn default_seed() -> u64 {
    42
}
fn default_chunk_rows() -> usize {
    4096
}
fn default_chunk_bytes() -> usize {
    8 << 20
}
fn default_shard_tokens() -> u64 {
    1 << 30
}

/// Keys that change how the work runs but not what it produces.
const NOT_FINGERPRINTED: [&str; 8] = [
    "verify_encoder",
    "prepared_dir",
    "doctor",
    "num_threads",
    "chunk_rows",
    "chunk_bytes",
    "shard_tokens",
    "tokenizer_dir",
];

impl PreprocessOptions {
    /// Parse and check the options JSON sent by Python.
    pub fn from_json(json: &str) -> Result<Self> {
        let options: Self = serde_json::from_str(json).map_err(|error| Error::Config {
            key: "preprocess options".into(),
            message: error.to_string(),
        })?;
        options.validate()?;
        Ok(options)
    }

    /// Reject combinations that cannot work, naming the config key.
    pub fn validate(&self) -> Result<()> {
        let config = |key: &str, message: String| {
            Err(Error::Config {
                key: key.into(),
                message,
            })
        };
        if self.datasets.is_empty() {
            return config("datasets", "at least one dataset is needed".into());
        }
        if self.sequence_len == 0 {
            return config("sequence_len", "must be at least 1".into());
        }
        if !(self.val_set_size >= 0.0 && self.val_set_size.is_finite()) {
            return config("val_set_size", format!("must be 0 or more, got {}", self.val_set_size));
        }
        if self.val_set_size >= 1.0 && self.val_set_size.fract() != 0.0 {
            return config(
                "val_set_size",
                format!("{} is neither a fraction below 1 nor a whole count", self.val_set_size),
            );
        }
        if self.val_set_size > 0.0 && !self.test_datasets.is_empty() {
            return config(
                "val_set_size",
                "use either val_set_size or test_datasets, not both".into(),
            );
        }
        match (self.dataset_shard_num, self.dataset_shard_idx) {
            (None, None) => {}
            (Some(num), Some(idx)) if num > 0 && idx < num => {}
            (Some(num), Some(idx)) => {
                return config(
                    "dataset_shard_idx",
                    format!("must be below dataset_shard_num ({num}), got {idx}"),
                );
            }
            _ => {
                return config(
                    "dataset_shard_num",
                    "set both dataset_shard_num and dataset_shard_idx".into(),
                );
            }
        }
        if self.chunk_rows == 0 || self.chunk_bytes == 0 || self.shard_tokens == 0 {
            return config(
                "chunk_rows",
                "chunk_rows, chunk_bytes and shard_tokens must be at least 1".into(),
            );
        }
        crate::chunk::strategies(self.excess_length_strategy, &self.datasets, "datasets")?;
        crate::chunk::strategies(self.excess_length_strategy, &self.test_datasets, "test_datasets")?;
        for (index, dataset) in self.datasets.iter().chain(&self.test_datasets).enumerate() {
            if let Some(shards) = dataset.source.shards {
                let idx = dataset.source.shards_idx.unwrap_or(0);
                if shards == 0 || idx >= shards {
                    let key = dataset.key("datasets", index);
                    return config(
                        &format!("{key}.shards"),
                        format!("shards_idx {idx} must be below shards {shards}"),
                    );
                }
            }
        }
        Ok(())
    }

    /// The options as JSON with the keys that do not affect the output removed, and with
    /// dataset paths removed: the fingerprint hashes the bytes of the files, not their names.
    pub fn fingerprint_json(&self) -> String {
        let mut value = serde_json::to_value(self).expect("options serialise to JSON");
        if let Some(map) = value.as_object_mut() {
            for key in NOT_FINGERPRINTED {
                map.remove(key);
            }
            for list in ["datasets", "test_datasets"] {
                if let Some(serde_json::Value::Array(entries)) = map.get_mut(list) {
                    for entry in entries {
                        if let Some(source) = entry.get_mut("source").and_then(serde_json::Value::as_object_mut) {
                            for key in ["path", "data_files", "key"] {
                                source.remove(key);
                            }
                        }
                    }
                }
            }
        }
        // serde_json's map is ordered by key, so this text is canonical.
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> String {
        r#"{"datasets": [{"source": {"path": "a.jsonl"}, "format": {"type": "completion"}}],
            "tokenizer_dir": "tok", "sequence_len": 16, "prepared_dir": "out"}"#
            .to_string()
    }

    #[test]
    fn defaults_follow_axolotl() {
        let options = PreprocessOptions::from_json(&minimal()).unwrap();
        assert!(options.shuffle_merged_datasets);
        assert_eq!(options.excess_length_strategy, None);
        assert_eq!(options.on_bad_row, BadRowPolicy::Error);
        assert_eq!(options.seed, 42);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let json = minimal().replace("\"sequence_len\"", "\"sequence_length\": 3, \"sequence_len\"");
        let error = PreprocessOptions::from_json(&json).unwrap_err().to_string();
        assert!(error.contains("sequence_length"), "{error}");
    }

    #[test]
    fn fingerprint_ignores_paths_and_threads_but_not_sequence_len() {
        let base = PreprocessOptions::from_json(&minimal()).unwrap();
        let mut moved = base.clone();
        moved.datasets[0].source.path = "elsewhere/b.jsonl".into();
        moved.num_threads = Some(7);
        moved.verify_encoder = 100;
        moved.prepared_dir = "other".into();
        assert_eq!(base.fingerprint_json(), moved.fingerprint_json());
        let mut other_revision = base.clone();
        other_revision.datasets[0].source.origin = Some("hub dataset org/name at 1234abcd".into());
        assert_ne!(base.fingerprint_json(), other_revision.fingerprint_json());
        let mut longer = base.clone();
        longer.sequence_len = 17;
        assert_ne!(base.fingerprint_json(), longer.fingerprint_json());
    }

    #[test]
    fn both_val_set_size_and_test_datasets_is_an_error() {
        let mut options = PreprocessOptions::from_json(&minimal()).unwrap();
        options.val_set_size = 0.1;
        options.test_datasets = options.datasets.clone();
        let error = options.validate().unwrap_err().to_string();
        assert!(error.contains("val_set_size"), "{error}");
    }
}
