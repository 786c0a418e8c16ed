//! Inference prompts: what the model sees before it starts to answer,
//! rendered by the same formatters that prepared the training data.
//!
//! ```text
//! training:  [prompt ............ masked][response + EOS ... trained]
//! inference: [prompt ............ masked] -> model generates the rest
//! ```
//!
//! Text formats (instruction types, the custom format, `input_output`) are
//! rendered with `train_on_inputs` off and cut before the first trained byte,
//! so the prompt is byte for byte the training text up to the response.
//! Conversation types render the chat template with the generation prompt.
//! `completion` has no prompt part: the user's text is continued as is.

use serde_json::{Map, Value};

use crate::chat::{self, ChatFormatter};
use crate::dataset_type::build;
use crate::format::instruction::{self, InstructionFormatter, SystemSource, VariableSource};
use crate::format::{custom, required_str};
use crate::spec::{ConversationType, FormatSpec};
use crate::template::TemplateMessage;
use crate::{Error, FieldError, Result, Sample, TokenizerInfo};

/// What to build a prompt from.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptRequest {
    /// A row in the dataset's own schema; its output part, if present, is left out.
    Row(Map<String, Value>),
    /// The user's text: the instruction of an instruction format, a user
    /// message of a conversation, the text to continue for `completion`.
    Text(String),
    /// A conversation history in template roles (`system`, `user`, `assistant`);
    /// conversation types only.
    Messages(Vec<TemplateMessage>),
}

/// A rendered inference prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The prompt text.
    pub text: String,
    /// Whether the tokenizer adds its special tokens (BOS), as in training.
    pub add_special_tokens: bool,
    /// Required row fields that were absent and read as empty text.
    pub empty_fields: Vec<String>,
}

/// How one dataset type builds prompts.
enum PromptFormatter {
    Instruction(Box<InstructionFormatter>),
    InputOutput(Box<dyn crate::RowFormatter>),
    Chat(Box<ChatFormatter>),
    Completion { field: String },
}

/// The inference prompt for `request`, formatted as `spec`'s dataset type.
///
/// Errors: [`Error::Config`] for a type with no prompt (pretokenized rows) or a
/// request the type cannot take (a history for a single-turn format);
/// [`Error::Data`] naming the field when the row is malformed.
pub fn render_prompt(spec: &FormatSpec, tokenizer: &TokenizerInfo, request: &PromptRequest) -> Result<Prompt> {
    let formatter = prompt_formatter(spec, tokenizer)?;
    let field_error = |error: FieldError| Error::Data {
        path: "<prompt>".into(),
        line: 1,
        field: error.field,
        message: error.message,
    };
    match (&formatter, request) {
        (PromptFormatter::Chat(chat), PromptRequest::Row(row)) => Ok(chat_prompt(chat.generation_prompt(row))?),
        (PromptFormatter::Chat(chat), PromptRequest::Text(text)) => {
            let messages = [TemplateMessage {
                role: "user".into(),
                content: text.clone(),
            }];
            Ok(chat_prompt(chat.generation_prompt_for_messages(&messages))?)
        }
        (PromptFormatter::Chat(chat), PromptRequest::Messages(messages)) => {
            Ok(chat_prompt(chat.generation_prompt_for_messages(messages))?)
        }
        (_, PromptRequest::Messages(_)) => Err(Error::Config {
            key: "type".into(),
            message: format!(
                "'{}' is a single-turn format; a conversation history needs a conversation type \
                 (chat_template, sharegpt, ...)",
                spec.kind.as_deref().unwrap_or("custom")
            ),
        }),
        (PromptFormatter::Completion { field }, request) => {
            let text = match request {
                PromptRequest::Row(row) => required_str(row, field).map_err(field_error)?.to_owned(),
                PromptRequest::Text(text) => text.clone(),
                PromptRequest::Messages(_) => unreachable!("handled above"),
            };
            Ok(Prompt {
                text,
                add_special_tokens: true,
                empty_fields: Vec::new(),
            })
        }
        (PromptFormatter::Instruction(formatter), request) => {
            let row = match request {
                PromptRequest::Row(row) => row.clone(),
                PromptRequest::Text(text) => {
                    let mut row = Map::new();
                    row.insert(user_field(formatter), Value::String(text.clone()));
                    row
                }
                PromptRequest::Messages(_) => unreachable!("handled above"),
            };
            let (row, empty_fields) = with_absent_fields_empty(formatter, row);
            let sample = crate::RowFormatter::format(formatter.as_ref(), &row).map_err(field_error)?;
            Ok(Prompt {
                empty_fields,
                ..cut_before_trained(sample)
            })
        }
        (PromptFormatter::InputOutput(formatter), request) => {
            let row = match request {
                PromptRequest::Row(row) => row.clone(),
                PromptRequest::Text(text) => {
                    let segment = serde_json::json!({"label": false, "text": text});
                    Map::from_iter([("segments".to_owned(), Value::Array(vec![segment]))])
                }
                PromptRequest::Messages(_) => unreachable!("handled above"),
            };
            Ok(cut_before_trained(formatter.format(&row).map_err(field_error)?))
        }
    }
}

/// Texts that end the answer besides the EOS token: a conversation's
/// end-of-turn markers (`<|im_end|>`, ...), which generation should stop at.
pub fn stop_texts(spec: &FormatSpec, tokenizer: &TokenizerInfo) -> Result<Vec<String>> {
    Ok(match prompt_formatter(spec, tokenizer)? {
        PromptFormatter::Chat(chat) => chat.end_of_turn().to_vec(),
        _ => tokenizer.eos.iter().cloned().collect(),
    })
}

fn chat_prompt(rendered: Result<String, FieldError>) -> Result<Prompt> {
    let text = rendered.map_err(|error| Error::Data {
        path: "<prompt>".into(),
        line: 1,
        field: error.field,
        message: error.message,
    })?;
    // Chat templates write BOS themselves, as in training.
    Ok(Prompt {
        text,
        add_special_tokens: false,
        empty_fields: Vec::new(),
    })
}

fn prompt_formatter(spec: &FormatSpec, tokenizer: &TokenizerInfo) -> Result<PromptFormatter> {
    // The prompt is the masked part, whatever train_on_inputs trained.
    let spec = FormatSpec {
        train_on_inputs: false,
        ..spec.clone()
    };
    let Some(kind) = spec.kind.as_deref() else {
        if spec.has_custom_keys() {
            return Ok(PromptFormatter::Instruction(Box::new(custom::build(&spec, tokenizer)?)));
        }
        return Err(Error::Config {
            key: "type".into(),
            message: "pretokenized rows (no type) have no prompt format to render; send raw text \
                      (axr inference --prompter none)"
                .into(),
        });
    };
    if let Some(conversation) = ConversationType::from_type_name(kind) {
        return Ok(PromptFormatter::Chat(Box::new(chat::build(
            conversation,
            &spec,
            tokenizer,
        )?)));
    }
    match kind {
        "completion" => Ok(PromptFormatter::Completion {
            field: spec.field.clone().unwrap_or_else(|| "text".into()),
        }),
        "input_output" => Ok(PromptFormatter::InputOutput(build(&spec, tokenizer)?)),
        _ => match instruction::lookup(kind, &spec, tokenizer)? {
            Some(formatter) => Ok(PromptFormatter::Instruction(Box::new(formatter))),
            // `build` words the unknown-type error (known types, did-you-mean).
            None => build(&spec, tokenizer).map(|_| unreachable!("an unknown type does not build")),
        },
    }
}

/// The rendering up to its first trained byte (all of it when nothing is trained).
fn cut_before_trained(sample: Sample) -> Prompt {
    match sample {
        Sample::Text(rendered) => {
            let end = rendered
                .trainable
                .first()
                .map_or(rendered.text.len(), |span| span.start);
            let mut text = rendered.text;
            text.truncate(end);
            Prompt {
                text,
                add_special_tokens: rendered.add_special_tokens,
                empty_fields: Vec::new(),
            }
        }
        Sample::Tokens { .. } => unreachable!("text formats render text"),
    }
}

/// The row field that takes the user's text: the one feeding `{instruction}`,
/// else `{prompt}`, else the first field the format reads.
fn user_field(formatter: &InstructionFormatter) -> String {
    let field_of = |source: &VariableSource| match source {
        VariableSource::Field(field) | VariableSource::OptionalField(field) => Some(field.clone()),
        _ => None,
    };
    ["instruction", "prompt"]
        .iter()
        .find_map(|wanted| {
            formatter
                .variables
                .iter()
                .find(|(name, _)| name == wanted)
                .and_then(|(_, source)| field_of(source))
        })
        .or_else(|| formatter.variables.iter().find_map(|(_, source)| field_of(source)))
        .unwrap_or_else(|| "instruction".into())
}

/// `row` with every field the format requires but the row lacks set to empty
/// (the output fields of an inference row, usually), and the names of those fields.
fn with_absent_fields_empty(
    formatter: &InstructionFormatter,
    mut row: Map<String, Value>,
) -> (Map<String, Value>, Vec<String>) {
    let mut filled = Vec::new();
    let mut fill = |row: &mut Map<String, Value>, field: &str, empty: Value| {
        if matches!(row.get(field), None | Some(Value::Null)) {
            row.insert(field.to_owned(), empty);
            filled.push(field.to_owned());
        }
    };
    for (_, source) in &formatter.variables {
        match source {
            VariableSource::Field(field) => fill(&mut row, field, Value::String(String::new())),
            VariableSource::Choices(field) => fill(&mut row, field, Value::Array(Vec::new())),
            VariableSource::FirstPresent(fields) => {
                if !fields.iter().any(|field| row.contains_key(field.as_str()))
                    && let Some(first) = fields.first()
                {
                    fill(&mut row, first, Value::String(String::new()));
                }
            }
            VariableSource::Yaml(fields) => {
                for field in fields {
                    fill(&mut row, field, Value::Object(Map::new()));
                }
            }
            VariableSource::OptionalField(_) | VariableSource::Template(_) => {}
        }
    }
    if let SystemSource::Field { field, fallback: None } = &formatter.system {
        fill(&mut row, field, Value::String(String::new()));
    }
    (row, filled)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(kind: &str) -> FormatSpec {
        FormatSpec {
            kind: Some(kind.into()),
            ..FormatSpec::default()
        }
    }

    fn row(value: &Value) -> Map<String, Value> {
        value.as_object().expect("object").clone()
    }

    fn training_text(spec: &FormatSpec, value: &Value) -> (String, usize) {
        let Sample::Text(rendered) = build(spec, &TokenizerInfo::for_tests())
            .unwrap()
            .format(&row(value))
            .unwrap()
        else {
            panic!("text expected")
        };
        let start = rendered.trainable.first().expect("something trained").start;
        (rendered.text, start)
    }

    #[test]
    fn instruction_prompt_is_the_training_text_up_to_the_response() {
        for kind in [
            "alpaca",
            "alpaca:chat",
            "alpaca:chatml",
            "jeopardy",
            "context_qa.load_v2",
            "metharme",
        ] {
            let value = json!({
                "instruction": "Name a colour.", "input": "", "output": "Blue",
                "question": "Q", "category": "C", "answer": "A", "context": "ctx",
                "prompt": "Once", "generation": "upon",
            });
            let (text, start) = training_text(&spec(kind), &value);
            let prompt = render_prompt(
                &spec(kind),
                &TokenizerInfo::for_tests(),
                &PromptRequest::Row(row(&value)),
            )
            .unwrap();
            assert_eq!(prompt.text, text[..start], "{kind}");
            assert!(prompt.add_special_tokens);
            assert!(prompt.empty_fields.is_empty(), "{kind}: {:?}", prompt.empty_fields);
        }
    }

    #[test]
    fn user_text_fills_the_instruction_and_the_output_reads_empty() {
        let prompt = render_prompt(
            &spec("alpaca"),
            &TokenizerInfo::for_tests(),
            &PromptRequest::Text("Say hi.".into()),
        )
        .unwrap();
        assert_eq!(
            prompt.text,
            "Below is an instruction that describes a task. Write a response that appropriately completes \
             the request.\n\n### Instruction:\nSay hi.\n\n### Response:\n"
        );
        assert_eq!(prompt.empty_fields, vec!["output".to_owned()]);
        let metharme = render_prompt(
            &spec("metharme"),
            &TokenizerInfo::for_tests(),
            &PromptRequest::Text("Hi".into()),
        )
        .unwrap();
        assert_eq!(metharme.text, "Hi");
    }

    #[test]
    fn train_on_inputs_does_not_move_the_cut() {
        let value = json!({"instruction": "i", "output": "o"});
        let trained_inputs = FormatSpec {
            train_on_inputs: true,
            ..spec("alpaca")
        };
        let plain = render_prompt(
            &spec("alpaca"),
            &TokenizerInfo::for_tests(),
            &PromptRequest::Row(row(&value)),
        )
        .unwrap();
        let with_inputs = render_prompt(
            &trained_inputs,
            &TokenizerInfo::for_tests(),
            &PromptRequest::Row(row(&value)),
        )
        .unwrap();
        assert_eq!(plain, with_inputs);
        assert!(plain.text.ends_with("### Response:\n"));
    }

    #[test]
    fn custom_format_prompt() {
        let custom = FormatSpec {
            system_prompt: Some("Be brief.".into()),
            system_format: Some("<<{system}>>\n".into()),
            format: Some("Q: {instruction} ({input})\nA: ".into()),
            no_input_format: Some("Q: {instruction}\nA: ".into()),
            ..FormatSpec::default()
        };
        let prompt = render_prompt(
            &custom,
            &TokenizerInfo::for_tests(),
            &PromptRequest::Text("2+2?".into()),
        )
        .unwrap();
        assert_eq!(prompt.text, "<<Be brief.>>\nQ: 2+2?\nA: ");
    }

    #[test]
    fn chat_prompt_ends_with_the_generation_prompt() {
        let chat = FormatSpec {
            chat_template: Some("chatml".into()),
            ..spec("chat_template")
        };
        let value = json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
        ]});
        let from_row = render_prompt(&chat, &TokenizerInfo::for_tests(), &PromptRequest::Row(row(&value))).unwrap();
        let expected = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n";
        assert_eq!(from_row.text, expected);
        assert!(!from_row.add_special_tokens);
        let from_text = render_prompt(&chat, &TokenizerInfo::for_tests(), &PromptRequest::Text("hi".into())).unwrap();
        assert_eq!(from_text.text, expected);
        let history = PromptRequest::Messages(vec![
            TemplateMessage {
                role: "user".into(),
                content: "hi".into(),
            },
            TemplateMessage {
                role: "assistant".into(),
                content: "hello".into(),
            },
            TemplateMessage {
                role: "user".into(),
                content: "again".into(),
            },
        ]);
        let from_history = render_prompt(&chat, &TokenizerInfo::for_tests(), &history).unwrap();
        assert_eq!(
            from_history.text,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n<|im_start|>user\nagain<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn conversations_stop_at_the_end_of_turn() {
        let chat = FormatSpec {
            chat_template: Some("chatml".into()),
            ..spec("chat_template")
        };
        assert!(
            stop_texts(&chat, &TokenizerInfo::for_tests())
                .unwrap()
                .contains(&"<|im_end|>".to_owned())
        );
        assert_eq!(
            stop_texts(&spec("alpaca"), &TokenizerInfo::for_tests()).unwrap(),
            vec!["</s>".to_owned()]
        );
    }

    #[test]
    fn completion_and_input_output_prompts() {
        let completion = render_prompt(
            &spec("completion"),
            &TokenizerInfo::for_tests(),
            &PromptRequest::Text("Once".into()),
        )
        .unwrap();
        assert_eq!(
            (completion.text.as_str(), completion.add_special_tokens),
            ("Once", true)
        );
        let segments = json!({"segments": [
            {"label": false, "text": "Q: x\n"},
            {"label": true, "text": "A: y"},
        ]});
        let prompt = render_prompt(
            &spec("input_output"),
            &TokenizerInfo::for_tests(),
            &PromptRequest::Row(row(&segments)),
        )
        .unwrap();
        assert_eq!(prompt.text, "Q: x\n");
    }

    #[test]
    fn requests_a_type_cannot_take_are_config_errors() {
        let pretokenized = render_prompt(
            &FormatSpec::default(),
            &TokenizerInfo::for_tests(),
            &PromptRequest::Text("x".into()),
        );
        assert!(matches!(pretokenized, Err(Error::Config { ref key, .. }) if key == "type"));
        let history = render_prompt(
            &spec("alpaca"),
            &TokenizerInfo::for_tests(),
            &PromptRequest::Messages(Vec::new()),
        );
        assert!(matches!(history, Err(Error::Config { ref key, .. }) if key == "type"));
        let unknown = render_prompt(
            &spec("alpacca"),
            &TokenizerInfo::for_tests(),
            &PromptRequest::Text("x".into()),
        );
        assert!(matches!(unknown, Err(Error::Config { ref message, .. }) if message.contains("alpaca")));
    }

    #[test]
    fn malformed_rows_name_the_field() {
        let bad = json!({"instruction": 3});
        let error = render_prompt(
            &spec("alpaca"),
            &TokenizerInfo::for_tests(),
            &PromptRequest::Row(row(&bad)),
        )
        .unwrap_err();
        assert!(
            matches!(error, Error::Data { ref field, .. } if field == "instruction"),
            "{error}"
        );
    }
}
