//! Long documents → `sequence_len` chunks, Axolotl's rule for `completion` data.
//!
//! Axolotl's `CompletionPromptTokenizingStrategy` tokenizes the whole document once (BOS from the
//! tokenizer at its start, EOS appended at its end), then cuts the ids at every multiple of
//! `sequence_len`; rows shorter than 2 tokens are dropped later (`min_sample_len`). So BOS opens
//! only the first chunk and EOS closes only the last, and a chunk never holds two documents.
//!
//! One deliberate difference: Axolotl tokenizes with `max_length = 64 * sequence_len` and so loses
//! the rest of a longer document without a word. axr keeps every chunk: silently losing text is
//! what `split` exists to prevent.

use std::ops::Range;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::options::{DatasetOptions, ExcessLengthStrategy};

/// Rows (documents or chunks) with fewer tokens are dropped under `split`, as Axolotl's
/// `min_sample_len` default does: a single token teaches nothing (its label is never used).
pub const MIN_ROW_TOKENS: usize = 2;

/// Reason recorded for rows or chunks shorter than [`MIN_ROW_TOKENS`].
pub const TOO_SHORT: &str = "shorter_than_2_tokens";

/// Dataset types whose long documents are split by default (and the only ones `split` accepts):
/// plain text, where a cut loses no structure a template put there.
const SPLITTABLE_TYPES: [&str; 2] = ["completion", "pretrain"];

/// Whether a dataset's `format` keys name a splittable type.
fn splittable(format: &Value) -> bool {
    format
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|kind| SPLITTABLE_TYPES.contains(&kind))
}

/// The strategy each dataset uses: the configured one, or by default `split` for completion
/// data and `drop` for the rest. `split` on a type with a template (instructions, chats) is an
/// error naming the entry: a chunk would start in the middle of a turn.
pub fn strategies(
    configured: Option<ExcessLengthStrategy>,
    datasets: &[DatasetOptions],
    list: &str,
) -> Result<Vec<ExcessLengthStrategy>> {
    datasets
        .iter()
        .enumerate()
        .map(|(index, dataset)| match configured {
            Some(ExcessLengthStrategy::Split) if !splittable(&dataset.format) => Err(Error::Config {
                key: "excess_length_strategy".into(),
                message: format!(
                    "split applies to completion data only, and {} is of type {}; use drop or truncate",
                    dataset.key(list, index),
                    dataset
                        .format
                        .get("type")
                        .map_or_else(|| "none".into(), Value::to_string),
                ),
            }),
            Some(strategy) => Ok(strategy),
            None if splittable(&dataset.format) => Ok(ExcessLengthStrategy::Split),
            None => Ok(ExcessLengthStrategy::Drop),
        })
        .collect()
}

/// What splitting one tokenized document gives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chunks {
    /// Token ranges kept, in order.
    pub kept: Vec<Range<usize>>,
    /// Pieces dropped as shorter than [`MIN_ROW_TOKENS`].
    pub too_short: u64,
    /// Pieces dropped because none of their tokens is trained.
    pub untrained: u64,
    /// Tokens of the dropped pieces.
    pub tokens_dropped: u64,
}

/// Axolotl's cut: `[i, i + sequence_len)` for every `i` in `0, sequence_len, 2 * sequence_len, …`;
/// each piece keeps the labels the document gave its tokens.
pub fn split(trainable: &[bool], sequence_len: usize) -> Chunks {
    let step = sequence_len.max(1);
    let mut chunks = Chunks::default();
    for start in (0..trainable.len()).step_by(step) {
        let range = start..(start + step).min(trainable.len());
        if range.len() < MIN_ROW_TOKENS {
            chunks.too_short += 1;
            chunks.tokens_dropped += range.len() as u64;
        } else if !trainable[range.clone()].contains(&true) {
            chunks.untrained += 1;
            chunks.tokens_dropped += range.len() as u64;
        } else {
            chunks.kept.push(range);
        }
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(kind: &str) -> DatasetOptions {
        serde_json::from_value(serde_json::json!({"source": {"path": "a.jsonl"}, "format": {"type": kind}})).unwrap()
    }

    #[test]
    fn cuts_at_multiples_of_sequence_len_and_drops_short_tails() {
        let trained = vec![true; 10];
        assert_eq!(split(&trained, 4).kept, vec![0..4, 4..8, 8..10]);
        let cut = split(&trained[..9], 4);
        assert_eq!(cut.kept, vec![0..4, 4..8]);
        assert_eq!((cut.too_short, cut.tokens_dropped), (1, 1));
        assert_eq!(split(&trained[..4], 4).kept, vec![0..4]);
        assert_eq!(split(&trained[..1], 4).too_short, 1);
        assert_eq!(split(&[], 4), Chunks::default());
    }

    #[test]
    fn a_chunk_without_a_trained_token_is_dropped() {
        let mut trainable = vec![false; 4];
        trainable.extend([true; 4]);
        let cut = split(&trainable, 4);
        assert_eq!(cut.kept, vec![4..8]);
        assert_eq!((cut.untrained, cut.tokens_dropped), (1, 4));
    }

    #[test]
    fn completion_splits_by_default_and_split_is_refused_for_templates() {
        let datasets = [dataset("completion"), dataset("alpaca")];
        assert_eq!(
            strategies(None, &datasets, "datasets").unwrap(),
            [ExcessLengthStrategy::Split, ExcessLengthStrategy::Drop]
        );
        let truncate = Some(ExcessLengthStrategy::Truncate);
        assert_eq!(
            strategies(truncate, &datasets, "datasets").unwrap(),
            [ExcessLengthStrategy::Truncate; 2]
        );
        let error = strategies(Some(ExcessLengthStrategy::Split), &datasets, "datasets")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("excess_length_strategy") && error.contains("datasets[1]") && error.contains("alpaca"),
            "{error}"
        );
    }
}
