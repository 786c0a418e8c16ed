//! Pretokenized rows: `input_ids`, `attention_mask` and `labels` passed through.
//!
//! Checked here: the three lists have equal lengths, ids are non-negative
//! integers, labels are -100 or equal to the id at their position, and
//! attention_mask is 0 or 1. Positions with attention_mask 0 are padding: they
//! must carry label -100 and are removed (packing needs no padding). The
//! tokenizer checks ids against its vocabulary when it encodes the sample.

use serde_json::{Map, Value};

use super::json_kind;
use crate::sample::IGNORE_INDEX;
use crate::{FieldError, RowFormatter, Sample};

/// Formatter of rows that are already tokenized.
#[derive(Debug, Clone, Copy)]
pub(super) struct PretokenizedFormatter;

fn integers<'row>(
    row: &'row Map<String, Value>,
    field: &str,
) -> Result<impl Iterator<Item = Result<i64, FieldError>> + 'row, FieldError> {
    let list = match row.get(field) {
        Some(Value::Array(list)) => list,
        None | Some(Value::Null) => {
            return Err(FieldError::new(
                field,
                "missing required field (rows without a `type` are pretokenized: input_ids, attention_mask, labels)",
            ));
        }
        Some(other) => {
            return Err(FieldError::new(
                field,
                format!("expected a list of integers, got {}", json_kind(other)),
            ));
        }
    };
    let field = field.to_string();
    Ok(list.iter().enumerate().map(move |(index, value)| {
        value
            .as_i64()
            .ok_or_else(|| FieldError::new(format!("{field}[{index}]"), format!("expected an integer, got {value}")))
    }))
}

impl RowFormatter for PretokenizedFormatter {
    fn format(&self, row: &Map<String, Value>) -> Result<Sample, FieldError> {
        let ids: Vec<i64> = integers(row, "input_ids")?.collect::<Result<_, _>>()?;
        let attention: Vec<i64> = integers(row, "attention_mask")?.collect::<Result<_, _>>()?;
        let labels: Vec<i64> = integers(row, "labels")?.collect::<Result<_, _>>()?;
        for (field, length) in [("attention_mask", attention.len()), ("labels", labels.len())] {
            if length != ids.len() {
                return Err(FieldError::new(
                    field,
                    format!(
                        "has {length} entries but input_ids has {}; the three lists must have equal lengths",
                        ids.len()
                    ),
                ));
            }
        }
        let mut input_ids = Vec::with_capacity(ids.len());
        let mut trainable = Vec::with_capacity(ids.len());
        for (index, ((&id, &attend), &label)) in ids.iter().zip(&attention).zip(&labels).enumerate() {
            let Ok(id) = u32::try_from(id) else {
                return Err(FieldError::new(
                    format!("input_ids[{index}]"),
                    format!("{id} is not a valid token id"),
                ));
            };
            if label != IGNORE_INDEX && label != i64::from(id) {
                return Err(FieldError::new(
                    format!("labels[{index}]"),
                    format!("{label} is neither -100 nor the input id {id}; labels must be the ids, masked with -100"),
                ));
            }
            match attend {
                1 => {
                    input_ids.push(id);
                    trainable.push(label != IGNORE_INDEX);
                }
                0 if label == IGNORE_INDEX => {}
                0 => {
                    return Err(FieldError::new(
                        format!("labels[{index}]"),
                        "a padding position (attention_mask 0) must have label -100",
                    ));
                }
                other => {
                    return Err(FieldError::new(
                        format!("attention_mask[{index}]"),
                        format!("{other} is not 0 or 1"),
                    ));
                }
            }
        }
        Ok(Sample::Tokens { input_ids, trainable })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn format(row: &Value) -> Result<Sample, FieldError> {
        PretokenizedFormatter.format(row.as_object().unwrap())
    }

    #[test]
    fn passes_rows_through_and_drops_padding() {
        let sample = format(
            &json!({"input_ids": [271, 299, 99, 0], "attention_mask": [1, 1, 1, 0], "labels": [271, -100, 99, -100]}),
        )
        .unwrap();
        assert_eq!(
            sample,
            Sample::Tokens {
                input_ids: vec![271, 299, 99],
                trainable: vec![true, false, true]
            }
        );
    }

    #[test]
    fn rejects_inconsistent_rows() {
        let error = format(&json!({"input_ids": [1, 2], "attention_mask": [1], "labels": [1, 2]})).unwrap_err();
        assert_eq!(error.field, "attention_mask");
        let error = format(&json!({"input_ids": [1, 2], "attention_mask": [1, 1], "labels": [1, 3]})).unwrap_err();
        assert_eq!(error.field, "labels[1]");
        let error = format(&json!({"input_ids": [1, -2], "attention_mask": [1, 1], "labels": [1, -100]})).unwrap_err();
        assert_eq!(error.field, "input_ids[1]");
        let error = format(&json!({"input_ids": [1, "a"], "attention_mask": [1, 1], "labels": [1, 2]})).unwrap_err();
        assert_eq!(error.field, "input_ids[1]");
        let error = format(&json!({"input_ids": [1], "labels": [1]})).unwrap_err();
        assert_eq!(error.field, "attention_mask");
    }
}
