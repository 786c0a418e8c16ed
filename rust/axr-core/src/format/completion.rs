//! `completion`: raw text from one column (`text`, or the dataset's `field`),
//! followed by EOS, all of it trained.

use serde_json::{Map, Value};

use super::text_builder::TextBuilder;
use super::{FormatSpec, required_str};
use crate::{FieldError, RowFormatter, Sample, TokenizerInfo};

/// Formatter of the `completion` type.
#[derive(Debug, Clone)]
pub(super) struct CompletionFormatter {
    field: String,
    eos: Option<String>,
}

impl CompletionFormatter {
    pub(super) fn new(spec: &FormatSpec, tokenizer: &TokenizerInfo) -> Self {
        Self {
            field: spec.field.clone().unwrap_or_else(|| "text".into()),
            eos: tokenizer.eos.clone(),
        }
    }
}

impl RowFormatter for CompletionFormatter {
    fn format(&self, row: &Map<String, Value>) -> Result<Sample, FieldError> {
        let text = required_str(row, &self.field)?;
        let mut builder = TextBuilder::new();
        builder.push_trained(text);
        if let Some(eos) = &self.eos
            && !text.is_empty()
            && !text.ends_with(eos.as_str())
        {
            builder.push_trained(eos);
        }
        // Completion trains on everything whatever train_on_inputs says (Axolotl does the same).
        Ok(builder.finish_sample(true, false))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_and_eos_are_trained_from_the_configured_field() {
        let spec = FormatSpec {
            field: Some("content".into()),
            ..FormatSpec::default()
        };
        let info = TokenizerInfo {
            bos: None,
            eos: Some("</s>".into()),
            chat_template: None,
        };
        let formatter = CompletionFormatter::new(&spec, &info);
        let Sample::Text(rendered) = formatter
            .format(json!({"content": "The fox."}).as_object().unwrap())
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(rendered.text, "The fox.</s>");
        assert_eq!(rendered.trainable, vec![0..rendered.text.len()]);
        let error = formatter.format(json!({"text": "x"}).as_object().unwrap()).unwrap_err();
        assert_eq!(error.field, "content");
    }
}
