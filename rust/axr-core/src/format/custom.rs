//! The user-defined instruction format (Axolotl's `type:` mapping): the same
//! renderer as the table, with fields and format strings from the config.

use super::FormatSpec;
use super::instruction::{InstructionFormatter, SystemSource, VariableSource};
use super::placeholders::Template;
use crate::{Error, Result, TokenizerInfo};

/// The formatter for a custom format spec; format strings are checked here,
/// so a typo in a placeholder is a config error before any row is read.
pub(crate) fn build(spec: &FormatSpec, tokenizer: &TokenizerInfo) -> Result<InstructionFormatter> {
    let parse = |key: &str, source: &str, allowed: &[&str]| {
        Template::parse(source, allowed).map_err(|message| Error::Config {
            key: key.into(),
            message,
        })
    };
    let field = |value: &Option<String>, default: &str| value.clone().unwrap_or_else(|| default.to_string());
    let format = spec.format.as_deref().unwrap_or("{instruction} {input} ");
    let no_input_format = spec.no_input_format.as_deref().unwrap_or("{instruction} ");
    Ok(InstructionFormatter {
        variables: vec![
            (
                "instruction".into(),
                VariableSource::Field(field(&spec.field_instruction, "instruction")),
            ),
            (
                "input".into(),
                VariableSource::OptionalField(field(&spec.field_input, "input")),
            ),
            (
                "output".into(),
                VariableSource::OptionalField(field(&spec.field_output, "output")),
            ),
        ],
        system: SystemSource::Field {
            field: field(&spec.field_system, "system"),
            fallback: Some(spec.system_prompt.clone().unwrap_or_default()),
        },
        system_format: parse(
            "system_format",
            spec.system_format.as_deref().unwrap_or("{system}"),
            &["system"],
        )?,
        turn_format: Some(parse("format", format, &["instruction", "input"])?),
        turn_no_input_format: parse("no_input_format", no_input_format, &["instruction"])?,
        response: parse("field_output", "{output}", &["output"])?,
        response_needs: Vec::new(),
        eos: tokenizer.eos.clone(),
        eos_count: 1,
        eos_after_empty_response: false,
        train_on_inputs: spec.train_on_inputs,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{RowFormatter, Sample};

    fn render(spec: &FormatSpec, row: &serde_json::Value) -> (String, Vec<String>) {
        let Sample::Text(rendered) = build(spec, &TokenizerInfo::for_tests())
            .unwrap()
            .format(row.as_object().unwrap())
            .unwrap()
        else {
            panic!("text expected")
        };
        let trained = rendered
            .trainable
            .iter()
            .map(|span| rendered.text[span.clone()].to_string())
            .collect();
        (rendered.text, trained)
    }

    #[test]
    fn defaults_and_docs_example() {
        let (text, trained) = render(
            &FormatSpec::default(),
            &json!({"instruction": "Add", "input": "2 and 2", "output": "4"}),
        );
        assert_eq!(text, "Add 2 and 2 4</s>");
        assert_eq!(trained, vec!["4</s>"]);
        let spec = FormatSpec {
            field_instruction: Some("input".into()),
            format: Some("[INST] {instruction} [/INST]".into()),
            no_input_format: Some("[INST] {instruction} [/INST]".into()),
            ..FormatSpec::default()
        };
        let (text, _) = render(&spec, &json!({"input": "What is 2+2?", "output": "4"}));
        assert_eq!(text, "[INST] What is 2+2? [/INST]4</s>");
    }

    #[test]
    fn per_row_system_wins_even_when_empty() {
        let spec = FormatSpec {
            system_prompt: Some("Be exact.".into()),
            system_format: Some("SYS: {system}\n".into()),
            format: Some("User: {instruction} {input}\nAssistant:".into()),
            no_input_format: Some("User: {instruction}\nAssistant:".into()),
            ..FormatSpec::default()
        };
        let (text, _) = render(&spec, &json!({"instruction": "Add", "input": "2 and 2", "output": "4"}));
        assert_eq!(text, "SYS: Be exact.\nUser: Add 2 and 2\nAssistant:4</s>");
        let (text, _) = render(
            &spec,
            &json!({"instruction": "Add two and two", "output": "4", "system": "Per-row system"}),
        );
        assert_eq!(text, "SYS: Per-row system\nUser: Add two and two\nAssistant:4</s>");
        let (text, _) = render(&spec, &json!({"instruction": "Add", "output": "4", "system": ""}));
        assert_eq!(text, "User: Add\nAssistant:4</s>");
    }

    #[test]
    fn input_in_no_input_format_is_a_config_error() {
        let info = TokenizerInfo::default();
        let spec = FormatSpec {
            no_input_format: Some("{instruction} {input}".into()),
            ..FormatSpec::default()
        };
        let error = build(&spec, &info).unwrap_err().to_string();
        assert!(
            error.contains("no_input_format") && error.contains("{input}"),
            "{error}"
        );
    }
}
