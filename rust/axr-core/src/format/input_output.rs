//! `input_output`: template-free segments, each trained or masked by its own
//! `label`. Nothing is added: no BOS, no EOS, no separators; the data writes
//! its own special tokens as text.

use serde_json::{Map, Value};

use super::text_builder::TextBuilder;
use super::{FormatSpec, json_kind};
use crate::{FieldError, RowFormatter, Sample};

/// Formatter of the `input_output` type.
#[derive(Debug, Clone)]
pub(super) struct InputOutputFormatter {
    train_on_inputs: bool,
}

impl InputOutputFormatter {
    pub(super) fn new(spec: &FormatSpec) -> Self {
        Self {
            train_on_inputs: spec.train_on_inputs,
        }
    }
}

impl RowFormatter for InputOutputFormatter {
    fn format(&self, row: &Map<String, Value>) -> Result<Sample, FieldError> {
        let segments = match row.get("segments") {
            Some(Value::Array(segments)) => segments,
            None | Some(Value::Null) => return Err(FieldError::new("segments", "missing required field")),
            Some(other) => {
                return Err(FieldError::new(
                    "segments",
                    format!("expected a list, got {}", json_kind(other)),
                ));
            }
        };
        let mut builder = TextBuilder::new();
        for (index, segment) in segments.iter().enumerate() {
            let Value::Object(segment) = segment else {
                return Err(FieldError::new(
                    format!("segments[{index}]"),
                    format!("expected an object with label and text, got {}", json_kind(segment)),
                ));
            };
            let text = match segment.get("text") {
                Some(Value::String(text)) => text,
                Some(other) => {
                    return Err(FieldError::new(
                        format!("segments[{index}].text"),
                        format!("expected a string, got {}", json_kind(other)),
                    ));
                }
                None => {
                    return Err(FieldError::new(
                        format!("segments[{index}].text"),
                        "missing required field",
                    ));
                }
            };
            let label = match segment.get("label") {
                Some(Value::Bool(label)) => *label,
                Some(other) => {
                    return Err(FieldError::new(
                        format!("segments[{index}].label"),
                        format!("expected true or false, got {}", json_kind(other)),
                    ));
                }
                None => {
                    return Err(FieldError::new(
                        format!("segments[{index}].label"),
                        "missing required field",
                    ));
                }
            };
            builder.push(text, label || self.train_on_inputs);
        }
        Ok(builder.finish_sample(false, false))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn format(row: &Value, train_on_inputs: bool) -> Result<Sample, FieldError> {
        InputOutputFormatter { train_on_inputs }.format(row.as_object().unwrap())
    }

    #[test]
    fn segments_keep_their_labels() {
        let row =
            json!({"segments": [{"label": false, "text": "<s>Q: hi\n"}, {"label": true, "text": "A: hello</s>"}]});
        let Sample::Text(rendered) = format(&row, false).unwrap() else {
            panic!()
        };
        assert_eq!(rendered.text, "<s>Q: hi\nA: hello</s>");
        assert_eq!(rendered.trainable, vec![9..rendered.text.len()]);
        assert!(!rendered.add_special_tokens);
        let Sample::Text(rendered) = format(&row, true).unwrap() else {
            panic!()
        };
        assert_eq!(rendered.trainable, vec![0..rendered.text.len()]);
    }

    #[test]
    fn bad_segments_name_the_field() {
        let error = format(&json!({"segments": [{"label": "yes", "text": "x"}]}), false).unwrap_err();
        assert_eq!(error.field, "segments[0].label");
        let error = format(&json!({"segments": [{"label": true}]}), false).unwrap_err();
        assert_eq!(error.field, "segments[0].text");
        let error = format(&json!({"text": "x"}), false).unwrap_err();
        assert_eq!(error.field, "segments");
    }
}
