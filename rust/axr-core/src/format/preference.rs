//! Preference datasets (Axolotl's DPO/IPO/SimPO/ORPO and KTO types): one row → a prompt with a
//! chosen and a rejected completion, or (KTO) one completion with a desirable/undesirable label.
//!
//! ```text
//! chat_template.default        messages (prompt) + chosen/rejected (message or text), the chat template
//! chat_template.argilla_chat   chosen/rejected: whole conversations sharing the prompt turns
//! chat_template.argilla        ORPO only: user/assistant conversations, optional system and prompt
//! chatml.* / llama3.*          intel, argilla, argilla_chat, prompt_pairs, ultra, icr: Axolotl's fixed prompt strings
//!                              (KTO: intel, argilla, argilla_chat, prompt_pairs, ultra)
//! user_defined.default         field_* and prompt_format/chosen_format/rejected_format (KTO: completion_*)
//! ```
//!
//! Each completion is rendered with its prompt as ONE string (what inference sees after the
//! prompt) and tokenized once; the trained bytes are everything after the prompt, which is
//! rendered once per row (for chat templates: with the generation prompt, as TRL does). Rows come
//! out as consecutive sequences, chosen then rejected, so a pair never separates.

use std::collections::BTreeMap;
use std::ops::Range;

use rayon::prelude::*;
use serde_json::{Map, Value};

use crate::Encoder;
use crate::error::{Error, Result};
use crate::options::SourceOptions;
use crate::sample::{Encoded, FieldError, RenderedText, Sample, TokenizerInfo};
use crate::source::{DatasetFiles, RowData, RowReader, SourceFile};
use crate::template::{ChatTemplate, TemplateMessage};

/// The preference keys of one `datasets` entry (Axolotl's names; the `type:` map's keys included).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferenceSpec {
    /// The dataset type (`chat_template.default`, `chatml.intel`, `user_defined.default`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Chat types: the column with the prompt messages (default `messages`).
    pub field_messages: Option<String>,
    /// The column with the chosen answer (default `chosen`).
    pub field_chosen: Option<String>,
    /// The column with the rejected answer (default `rejected`).
    pub field_rejected: Option<String>,
    /// user_defined: the column with the prompt (default `prompt`).
    pub field_prompt: Option<String>,
    /// user_defined: the column with the system text (default `system`).
    pub field_system: Option<String>,
    /// KTO user_defined: the column with the completion (default `completion`).
    pub field_completion: Option<String>,
    /// KTO user_defined: the column with the boolean label (default `label`).
    pub field_label: Option<String>,
    /// user_defined: the prompt template (`{prompt}`, `{system}`).
    pub prompt_format: Option<String>,
    /// user_defined: the chosen template (`{chosen}`).
    pub chosen_format: Option<String>,
    /// user_defined: the rejected template (`{rejected}`).
    pub rejected_format: Option<String>,
    /// KTO user_defined: the completion template (`{completion}`).
    pub completion_format: Option<String>,
    /// Chat types: message keys, `{role = "from", content = "value"}`.
    pub message_property_mappings: Option<BTreeMap<String, String>>,
    /// Chat types: a style name, `tokenizer_default[_fallback_<style>]` or `jinja`.
    pub chat_template: Option<String>,
    /// Chat types: the Jinja template with `chat_template = "jinja"`.
    pub chat_template_jinja: Option<String>,
    /// The limits of each chat-template render (the top-level `chat_template_limits`).
    pub template_limits: Option<crate::spec::RenderLimits>,
}

/// Which kind of training the rows feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreferenceKind {
    /// DPO, IPO, SimPO: a chosen and a rejected completion per prompt.
    Pairs,
    /// ORPO: pairs as [`PreferenceKind::Pairs`]; Axolotl's ORPO-only types ([`ORPO_TYPES`]) too.
    Orpo,
    /// KTO: one completion per row and whether it is desirable.
    Kto,
}

/// One row, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreferenceRow {
    /// Prompt + chosen, prompt + rejected.
    Pair {
        /// The prompt followed by the chosen completion; the completion is trained.
        chosen: RenderedText,
        /// The prompt followed by the rejected completion.
        rejected: RenderedText,
    },
    /// Prompt + completion and its label.
    Labelled {
        /// The prompt followed by the completion; the completion is trained.
        completion: RenderedText,
        /// True for a desirable completion.
        desirable: bool,
    },
}

/// Axolotl's fixed prompt strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Markup {
    Chatml,
    Llama3,
}

impl Markup {
    fn prompt(self, system: &str, prompt: &str) -> String {
        match (self, system.is_empty()) {
            (Self::Chatml, false) => format!(
                "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
            ),
            (Self::Chatml, true) => format!("<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"),
            (Self::Llama3, false) => format!(
                "<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>\
                 <|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|>\
                 <|start_header_id|>assistant<|end_header_id|>\n\n"
            ),
            (Self::Llama3, true) => format!(
                "<|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|>\
                 <|start_header_id|>assistant<|end_header_id|>\n\n"
            ),
        }
    }

    fn end_of_turn(self) -> &'static str {
        match self {
            Self::Chatml => "<|im_end|>",
            Self::Llama3 => "<|eot_id|>",
        }
    }
}

/// Where a fixed-markup type finds its prompt and answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `question`, `chosen`, `rejected` (KTO: `completion`).
    Intel,
    /// `instruction`, `chosen_response`, `rejected_response` (KTO: `completion`).
    Argilla,
    /// `prompt`, `chosen`, `rejected` (KTO: `completion`).
    PromptPairs,
    /// `prompt`, `chosen[1].content`, `rejected[1].content` (KTO: `completion`).
    Ultra,
    /// `input`, `chosen`, `rejected`.
    Icr,
    /// `chosen[0].content` (the prompt), `chosen[1].content`, `rejected[1].content`; no system.
    /// KTO: the conversation in `completion` (chatml: its messages 0 and 1; llama3: every message
    /// before the last is the prompt, with its own role).
    ArgillaChat,
}

impl Layout {
    fn prompt_field(self) -> &'static str {
        match self {
            Self::Intel => "question",
            Self::Argilla => "instruction",
            Self::PromptPairs | Self::Ultra => "prompt",
            Self::Icr => "input",
            Self::ArgillaChat => "chosen",
        }
    }

    fn answer_fields(self) -> (&'static str, &'static str) {
        match self {
            Self::Argilla => ("chosen_response", "rejected_response"),
            _ => ("chosen", "rejected"),
        }
    }
}

#[derive(Debug)]
enum Shape {
    ChatDefault,
    ChatArgilla,
    OrpoArgilla,
    Fixed(Markup, Layout),
    UserDefined,
}

/// Formats the rows of one preference dataset. Built once per dataset by [`PreferenceFormatter::new`].
pub struct PreferenceFormatter {
    shape: Shape,
    kind: PreferenceKind,
    spec: PreferenceSpec,
    template: Option<ChatTemplate>,
}

/// Every preference `type:` name of pair data.
pub const PAIR_TYPES: [&str; 16] = [
    "chat_template.default",
    "chat_template.argilla_chat",
    "chatml.intel",
    "chatml.argilla",
    "chatml.prompt_pairs",
    "chatml.ultra",
    "chatml.icr",
    "chatml.argilla_chat",
    "llama3.intel",
    "llama3.argilla",
    "llama3.prompt_pairs",
    "llama3.ultra",
    "llama3.icr",
    "llama3.argilla_chat",
    "user_defined.default",
    "chat_template",
];

/// The `type:` names that Axolotl accepts only with `rl: orpo` (its `prompt_strategies.orpo`).
pub const ORPO_TYPES: [&str; 1] = ["chat_template.argilla"];

/// Every KTO `type:` name.
pub const KTO_TYPES: [&str; 11] = [
    "chatml.argilla",
    "chatml.argilla_chat",
    "chatml.intel",
    "chatml.prompt_pairs",
    "chatml.ultra",
    "llama3.argilla",
    "llama3.argilla_chat",
    "llama3.intel",
    "llama3.prompt_pairs",
    "llama3.ultra",
    "user_defined.default",
];

fn known_types(kind: PreferenceKind) -> Vec<&'static str> {
    match kind {
        PreferenceKind::Pairs => PAIR_TYPES.to_vec(),
        PreferenceKind::Orpo => [PAIR_TYPES.as_slice(), ORPO_TYPES.as_slice()].concat(),
        PreferenceKind::Kto => KTO_TYPES.to_vec(),
    }
}

fn config_error(key: &str, message: impl Into<String>) -> Error {
    Error::Config {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// Whether `name` is a dataset type of `kind` training; the error lists the known ones. Cheap, so a
/// config's types can be checked before any input is read.
pub fn check_type(name: &str, kind: PreferenceKind) -> Result<()> {
    let known = known_types(kind);
    if known.contains(&name) {
        return Ok(());
    }
    // Axolotl loads this name from its ORPO strategies only; under dpo it fails to import it.
    if kind == PreferenceKind::Pairs && ORPO_TYPES.contains(&name) {
        return Err(config_error(
            "type",
            format!(
                "'{name}' is Axolotl's ORPO dataset type: it needs rl: orpo (Axolotl refuses it with \
                 dpo, ipo and simpo); chat_template.argilla_chat reads chosen/rejected conversations \
                 for those"
            ),
        ));
    }
    let training = if kind == PreferenceKind::Kto {
        "KTO"
    } else {
        "preference"
    };
    Err(config_error(
        "type",
        format!("'{name}' is not a {training} dataset type; known: {}", known.join(", ")),
    ))
}

fn shape_of(name: &str, kind: PreferenceKind) -> Option<Shape> {
    if !known_types(kind).contains(&name) {
        return None;
    }
    Some(match name {
        "chat_template.default" | "chat_template" => Shape::ChatDefault,
        "chat_template.argilla_chat" => Shape::ChatArgilla,
        "chat_template.argilla" => Shape::OrpoArgilla,
        "user_defined.default" => Shape::UserDefined,
        _ => {
            let (markup, layout) = name.split_once('.')?;
            let markup = if markup == "chatml" {
                Markup::Chatml
            } else {
                Markup::Llama3
            };
            let layout = match layout {
                "intel" => Layout::Intel,
                "argilla" => Layout::Argilla,
                "prompt_pairs" => Layout::PromptPairs,
                "ultra" => Layout::Ultra,
                "argilla_chat" => Layout::ArgillaChat,
                _ => Layout::Icr,
            };
            Shape::Fixed(markup, layout)
        }
    })
}

fn text<'row>(row: &'row Map<String, Value>, field: &str) -> Result<&'row str, FieldError> {
    match row.get(field) {
        Some(Value::String(text)) => Ok(text),
        None | Some(Value::Null) => Err(FieldError::new(field, "missing; expected text")),
        Some(other) => Err(FieldError::new(
            field,
            format!("expected text, found {}", super::json_kind(other)),
        )),
    }
}

fn answer<'row>(row: &'row Map<String, Value>, field: &str) -> Result<&'row str, FieldError> {
    let answer = text(row, field)?;
    if answer.trim().is_empty() {
        return Err(FieldError::new(field, "empty answer"));
    }
    Ok(answer)
}

fn optional_text<'row>(row: &'row Map<String, Value>, field: &str) -> Result<&'row str, FieldError> {
    match row.get(field) {
        None | Some(Value::Null) => Ok(""),
        _ => text(row, field),
    }
}

fn label(row: &Map<String, Value>, field: &str) -> Result<bool, FieldError> {
    match row.get(field) {
        Some(Value::Bool(flag)) => Ok(*flag),
        None | Some(Value::Null) => Err(FieldError::new(field, "missing; expected true or false")),
        Some(other) => Err(FieldError::new(
            field,
            format!("expected true or false, found {}", super::json_kind(other)),
        )),
    }
}

/// A prompt and a completion as one text whose completion bytes are trained.
fn joined(prompt: &str, completion: &str, add_special_tokens: bool) -> RenderedText {
    RenderedText {
        text: format!("{prompt}{completion}"),
        trainable: trained_tail(prompt.len(), prompt.len() + completion.len()),
        add_special_tokens,
    }
}

fn trained_tail(start: usize, end: usize) -> Vec<Range<usize>> {
    let mut spans = Vec::with_capacity(1);
    if start < end {
        spans.push(start..end);
    }
    spans
}

fn fill(template: &str, values: &[(&str, &str)]) -> String {
    values.iter().fold(template.to_owned(), |text, (name, value)| {
        text.replace(&format!("{{{name}}}"), value)
    })
}

impl PreferenceFormatter {
    /// The formatter of `spec.kind` for `kind` training; an unknown type lists the known ones.
    pub fn new(spec: &PreferenceSpec, kind: PreferenceKind, tokenizer: &TokenizerInfo) -> Result<Self> {
        check_type(&spec.kind, kind)?;
        let shape = shape_of(&spec.kind, kind).expect("check_type accepted the type");
        if let Some(unknown) = spec
            .message_property_mappings
            .iter()
            .flat_map(BTreeMap::keys)
            .find(|key| !["role", "content"].contains(&key.as_str()))
        {
            return Err(config_error(
                "message_property_mappings",
                format!("`{unknown}` is not supported; map `role` and `content`"),
            ));
        }
        let template = match shape {
            Shape::ChatDefault | Shape::ChatArgilla | Shape::OrpoArgilla => {
                let name = spec.chat_template.as_deref().unwrap_or("tokenizer_default");
                let source = crate::template::source(name, spec.chat_template_jinja.as_deref(), tokenizer)?;
                let bos = tokenizer.bos.clone().unwrap_or_default();
                let eos = tokenizer.eos.clone().unwrap_or_default();
                Some(
                    ChatTemplate::new(name, &source, &bos, &eos)
                        .map_err(|message| config_error("chat_template", message))?
                        .with_limits(spec.template_limits.unwrap_or_default()),
                )
            }
            _ => None,
        };
        Ok(Self {
            shape,
            kind,
            spec: spec.clone(),
            template,
        })
    }

    fn key<'spec>(value: Option<&'spec str>, default: &'spec str) -> &'spec str {
        value.unwrap_or(default)
    }

    /// Format one row.
    pub fn format(&self, row: &Map<String, Value>) -> Result<PreferenceRow, FieldError> {
        match (&self.shape, self.kind) {
            (Shape::ChatDefault, _) => self.chat_default(row),
            (Shape::ChatArgilla, _) => self.chat_argilla(row),
            (Shape::OrpoArgilla, _) => self.orpo_argilla(row),
            (Shape::Fixed(markup, layout), PreferenceKind::Pairs | PreferenceKind::Orpo) => {
                let prompt = if *layout == Layout::ArgillaChat {
                    markup.prompt("", turn(row, layout.prompt_field(), 0)?)
                } else {
                    markup.prompt(optional_text(row, "system")?, text(row, layout.prompt_field())?)
                };
                let (chosen_field, rejected_field) = layout.answer_fields();
                let (chosen, rejected) = if matches!(layout, Layout::Ultra | Layout::ArgillaChat) {
                    (turn(row, chosen_field, 1)?, turn(row, rejected_field, 1)?)
                } else {
                    (answer(row, chosen_field)?, answer(row, rejected_field)?)
                };
                let end = markup.end_of_turn();
                Ok(PreferenceRow::Pair {
                    chosen: joined(&prompt, &format!("{chosen}{end}"), true),
                    rejected: joined(&prompt, &format!("{rejected}{end}"), true),
                })
            }
            (Shape::Fixed(markup, layout), PreferenceKind::Kto) => {
                let (prompt, completion) = match (layout, markup) {
                    (Layout::ArgillaChat, Markup::Chatml) => (
                        markup.prompt("", turn(row, "completion", 0)?),
                        turn(row, "completion", 1)?,
                    ),
                    (Layout::ArgillaChat, Markup::Llama3) => llama3_conversation(row, "completion")?,
                    _ => (
                        markup.prompt(optional_text(row, "system")?, text(row, layout.prompt_field())?),
                        answer(row, "completion")?,
                    ),
                };
                Ok(PreferenceRow::Labelled {
                    completion: joined(&prompt, &format!("{completion}{}", markup.end_of_turn()), true),
                    desirable: label(row, "label")?,
                })
            }
            (Shape::UserDefined, kind) => self.user_defined(row, kind),
        }
    }

    fn user_defined(&self, row: &Map<String, Value>, kind: PreferenceKind) -> Result<PreferenceRow, FieldError> {
        let spec = &self.spec;
        let prompt_field = Self::key(spec.field_prompt.as_deref(), "prompt");
        let system_field = Self::key(spec.field_system.as_deref(), "system");
        let prompt_format = spec.prompt_format.clone().unwrap_or_else(|| "{prompt}".to_owned());
        let system = optional_text(row, system_field)?;
        let prompt = if prompt_format.contains("{system}") && !system.is_empty() {
            fill(
                &prompt_format,
                &[("system", system), ("prompt", text(row, prompt_field)?)],
            )
        } else {
            fill(&prompt_format, &[("prompt", text(row, prompt_field)?)])
        };
        match kind {
            PreferenceKind::Pairs | PreferenceKind::Orpo => {
                let chosen_field = Self::key(spec.field_chosen.as_deref(), "chosen");
                let rejected_field = Self::key(spec.field_rejected.as_deref(), "rejected");
                let chosen = fill(
                    Self::key(spec.chosen_format.as_deref(), "{chosen}"),
                    &[("chosen", answer(row, chosen_field)?)],
                );
                let rejected = fill(
                    Self::key(spec.rejected_format.as_deref(), "{rejected}"),
                    &[("rejected", answer(row, rejected_field)?)],
                );
                Ok(PreferenceRow::Pair {
                    chosen: joined(&prompt, &chosen, true),
                    rejected: joined(&prompt, &rejected, true),
                })
            }
            PreferenceKind::Kto => {
                let completion_field = Self::key(spec.field_completion.as_deref(), "completion");
                let completion = fill(
                    Self::key(spec.completion_format.as_deref(), "{completion}"),
                    &[("completion", answer(row, completion_field)?)],
                );
                Ok(PreferenceRow::Labelled {
                    completion: joined(&prompt, &completion, true),
                    desirable: label(row, Self::key(spec.field_label.as_deref(), "label"))?,
                })
            }
        }
    }

    fn message(&self, value: &Value, at: &str) -> Result<TemplateMessage, FieldError> {
        let mappings = self.spec.message_property_mappings.clone().unwrap_or_default();
        let role_key = mappings.get("role").map_or("role", String::as_str);
        let content_key = mappings.get("content").map_or("content", String::as_str);
        let Some(message) = value.as_object() else {
            return Err(FieldError::new(
                at,
                format!("expected a message object, found {}", super::json_kind(value)),
            ));
        };
        let inner = |error: FieldError| FieldError::new(format!("{at}.{}", error.field), error.message);
        Ok(TemplateMessage {
            role: text(message, role_key).map_err(inner)?.to_owned(),
            content: text(message, content_key).map_err(inner)?.to_owned(),
        })
    }

    fn messages(&self, row: &Map<String, Value>, field: &str) -> Result<Vec<TemplateMessage>, FieldError> {
        match row.get(field) {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(index, item)| self.message(item, &format!("{field}[{index}]")))
                .collect(),
            None | Some(Value::Null) => Err(FieldError::new(field, "missing; expected a list of messages")),
            Some(other) => Err(FieldError::new(
                field,
                format!("expected a list of messages, found {}", super::json_kind(other)),
            )),
        }
    }

    /// A chosen/rejected answer of `chat_template.default`: a message object or plain text.
    fn chat_answer(&self, row: &Map<String, Value>, field: &str) -> Result<TemplateMessage, FieldError> {
        let message = match row.get(field) {
            Some(Value::String(_)) => TemplateMessage {
                role: "assistant".to_owned(),
                content: answer(row, field)?.to_owned(),
            },
            Some(value @ Value::Object(_)) => self.message(value, field)?,
            None | Some(Value::Null) => return Err(FieldError::new(field, "missing; expected a message or text")),
            Some(other) => {
                return Err(FieldError::new(
                    field,
                    format!("expected a message or text, found {}", super::json_kind(other)),
                ));
            }
        };
        if message.content.trim().is_empty() {
            return Err(FieldError::new(field, "empty answer"));
        }
        Ok(message)
    }

    fn chat_default(&self, row: &Map<String, Value>) -> Result<PreferenceRow, FieldError> {
        let spec = &self.spec;
        let field = Self::key(spec.field_messages.as_deref(), "messages");
        let prompt = self.messages(row, field)?;
        let chosen = self.chat_answer(row, Self::key(spec.field_chosen.as_deref(), "chosen"))?;
        let rejected = self.chat_answer(row, Self::key(spec.field_rejected.as_deref(), "rejected"))?;
        self.chat_pair(&prompt, chosen, rejected, field)
    }

    fn chat_argilla(&self, row: &Map<String, Value>) -> Result<PreferenceRow, FieldError> {
        let chosen_field = Self::key(self.spec.field_chosen.as_deref(), "chosen");
        let rejected_field = Self::key(self.spec.field_rejected.as_deref(), "rejected");
        let mut chosen = self.messages(row, chosen_field)?;
        let mut rejected = self.messages(row, rejected_field)?;
        let (Some(chosen_answer), Some(rejected_answer)) = (chosen.pop(), rejected.pop()) else {
            let field = if chosen.is_empty() {
                chosen_field
            } else {
                rejected_field
            };
            return Err(FieldError::new(field, "the conversation has no messages"));
        };
        if chosen != rejected {
            return Err(FieldError::new(
                rejected_field,
                format!("the turns before the last must equal those of `{chosen_field}` (the shared prompt)"),
            ));
        }
        self.chat_pair(&chosen, chosen_answer, rejected_answer, chosen_field)
    }

    /// ORPO's `chat_template.argilla`: `chosen` and `rejected` alternate user and assistant turns and
    /// end with their answer. The prompt is `system` (when set) and `chosen`'s turns before its
    /// answer, with `prompt` (when set) as the last user turn, as in Axolotl's single-turn rows.
    fn orpo_argilla(&self, row: &Map<String, Value>) -> Result<PreferenceRow, FieldError> {
        let spec = &self.spec;
        let chosen_field = Self::key(spec.field_chosen.as_deref(), "chosen");
        let rejected_field = Self::key(spec.field_rejected.as_deref(), "rejected");
        let mut chosen = self.messages(row, chosen_field)?;
        let mut rejected = self.messages(row, rejected_field)?;
        alternating(&chosen, chosen_field)?;
        alternating(&rejected, rejected_field)?;
        let (Some(chosen_answer), Some(rejected_answer)) = (chosen.pop(), rejected.pop()) else {
            unreachable!("alternating conversations hold at least two turns");
        };
        // Axolotl builds both prompts from `chosen`: a `rejected` that answers other turns would
        // be trained as the answer to a prompt it never saw.
        if chosen != rejected {
            return Err(FieldError::new(
                rejected_field,
                format!("the turns before the last must equal those of `{chosen_field}` (the shared prompt)"),
            ));
        }
        for (field, answer) in [(chosen_field, &chosen_answer), (rejected_field, &rejected_answer)] {
            if answer.content.trim().is_empty() {
                return Err(FieldError::new(format!("{field}[{}]", chosen.len()), "empty answer"));
            }
        }
        let mut prompt = Vec::with_capacity(chosen.len() + 1);
        let system = optional_text(row, Self::key(spec.field_system.as_deref(), "system"))?;
        if !system.is_empty() {
            prompt.push(TemplateMessage {
                role: "system".to_owned(),
                content: system.to_owned(),
            });
        }
        prompt.extend(chosen);
        let prompt_field = Self::key(spec.field_prompt.as_deref(), "prompt");
        if !matches!(row.get(prompt_field), None | Some(Value::Null)) {
            let question = text(row, prompt_field)?;
            if let Some(last_user_turn) = prompt.last_mut() {
                question.clone_into(&mut last_user_turn.content);
            }
        }
        self.chat_pair(&prompt, chosen_answer, rejected_answer, chosen_field)
    }

    fn chat_pair(
        &self,
        prompt: &[TemplateMessage],
        chosen: TemplateMessage,
        rejected: TemplateMessage,
        field: &str,
    ) -> Result<PreferenceRow, FieldError> {
        let template = self.template.as_ref().expect("chat shapes have a template");
        let render = |messages: &[TemplateMessage], generation: bool| {
            template
                .render(messages, generation)
                .map_err(|message| FieldError::new(field, message))
        };
        let prompt_text = render(prompt, true)?;
        let completion = |answer: TemplateMessage| -> Result<RenderedText, FieldError> {
            let mut messages = prompt.to_vec();
            messages.push(answer);
            let text = render(&messages, false)?;
            if !text.starts_with(&prompt_text) {
                return Err(FieldError::new(
                    field,
                    "the chat template renders the prompt differently once an answer follows; \
                     preference training needs the prompt as a prefix",
                ));
            }
            Ok(RenderedText {
                trainable: trained_tail(prompt_text.len(), text.len()),
                text,
                add_special_tokens: false,
            })
        };
        Ok(PreferenceRow::Pair {
            chosen: completion(chosen)?,
            rejected: completion(rejected)?,
        })
    }
}

/// Axolotl's ORPO reads the turns by position (user, assistant, ..., assistant): a conversation of
/// another shape would be rendered with the wrong speakers.
fn alternating(messages: &[TemplateMessage], field: &str) -> Result<(), FieldError> {
    for (index, message) in messages.iter().enumerate() {
        let expected = if index % 2 == 0 { "user" } else { "assistant" };
        if message.role != expected {
            return Err(FieldError::new(
                format!("{field}[{index}]"),
                format!(
                    "role `{}`, expected `{expected}`: the turns alternate user and assistant \
                     (a system prompt goes in the row's `system` field)",
                    message.role
                ),
            ));
        }
    }
    if messages.is_empty() || !messages.len().is_multiple_of(2) {
        return Err(FieldError::new(
            field,
            format!(
                "expected user and assistant turns ending with the answer, found {} messages",
                messages.len()
            ),
        ));
    }
    Ok(())
}

/// KTO `llama3.argilla_chat`: the messages of `field` before the last are the prompt, each under
/// its own role's header (Axolotl's strings); the last message's content is the completion.
fn llama3_conversation<'row>(row: &'row Map<String, Value>, field: &str) -> Result<(String, &'row str), FieldError> {
    let messages = match row.get(field) {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => return Err(FieldError::new(field, "missing; expected a list of messages")),
        Some(other) => {
            return Err(FieldError::new(
                field,
                format!("expected a list of messages, found {}", super::json_kind(other)),
            ));
        }
    };
    let Some((last, history)) = messages.split_last() else {
        return Err(FieldError::new(field, "the conversation has no messages"));
    };
    let part = |index: usize, message: &'row Value, key: &str| -> Result<&'row str, FieldError> {
        let at = format!("{field}[{index}]");
        let Some(message) = message.as_object() else {
            return Err(FieldError::new(
                at,
                format!("expected a message object, found {}", super::json_kind(message)),
            ));
        };
        text(message, key).map_err(|error| FieldError::new(format!("{at}.{}", error.field), error.message))
    };
    let mut prompt = String::new();
    for (index, message) in history.iter().enumerate() {
        let role = part(index, message, "role")?;
        let content = part(index, message, "content")?;
        prompt.extend([
            "<|start_header_id|>",
            role,
            "<|end_header_id|>\n\n",
            content,
            "<|eot_id|>",
        ]);
    }
    prompt.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
    let completion = part(history.len(), last, "content")?;
    if completion.trim().is_empty() {
        return Err(FieldError::new(
            format!("{field}[{}].content", history.len()),
            "empty answer",
        ));
    }
    Ok((prompt, completion))
}

/// The text of message `index` of the conversation in `field` (ultra and argilla_chat layouts).
fn turn<'row>(row: &'row Map<String, Value>, field: &str, index: usize) -> Result<&'row str, FieldError> {
    let content = row
        .get(field)
        .and_then(Value::as_array)
        .and_then(|messages| messages.get(index))
        .and_then(Value::as_object)
        .and_then(|message| message.get("content"));
    let at = format!("{field}[{index}].content");
    match content {
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(text),
        Some(Value::String(_)) => Err(FieldError::new(
            at,
            if index == 0 { "empty prompt" } else { "empty answer" },
        )),
        _ => Err(FieldError::new(
            at,
            format!("missing; expected a conversation with a message at position {index}"),
        )),
    }
}

/// Token ids of a preference dataset, one sequence per completion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreferenceRows {
    /// Every sequence's ids, concatenated.
    pub input_ids: Vec<u32>,
    /// One flag per id: true on completion tokens.
    pub trainable: Vec<bool>,
    /// `sequences + 1` offsets into `input_ids`. Pairs: sequence `2i` is chosen, `2i + 1` rejected.
    pub offsets: Vec<u64>,
    /// KTO: per sequence, whether it is desirable (empty for pairs).
    pub desirable: Vec<bool>,
}

/// One row's sequences, tokenized, and (KTO) its label.
type EncodedRow = (Vec<Encoded>, Option<bool>);

/// Tokenize one sequence; a completion that leaves no trained token is the row's error.
fn encode_sequence(text: RenderedText, encoder: &Encoder) -> std::result::Result<Encoded, FieldError> {
    let tokens = encoder.encode(&Sample::Text(text))?;
    if !tokens.trainable.iter().any(|flag| *flag) {
        return Err(FieldError::new("-", "the completion has no tokens after the prompt"));
    }
    Ok(tokens)
}

fn encode_row(row: PreferenceRow, encoder: &Encoder) -> std::result::Result<EncodedRow, FieldError> {
    Ok(match row {
        PreferenceRow::Pair { chosen, rejected } => (
            vec![encode_sequence(chosen, encoder)?, encode_sequence(rejected, encoder)?],
            None,
        ),
        PreferenceRow::Labelled { completion, desirable } => {
            (vec![encode_sequence(completion, encoder)?], Some(desirable))
        }
    })
}

/// Resolve one dataset's files (as SFT datasets do), then [`encode_preference_files`] them.
pub fn encode_preference_dataset(
    source: &SourceOptions,
    spec: &PreferenceSpec,
    kind: PreferenceKind,
    encoder: &Encoder,
) -> Result<(PreferenceRows, Vec<String>)> {
    let mut warnings = Vec::new();
    let files = crate::source::resolve(source, &source.key, &mut warnings)?;
    Ok((encode_preference_files(files, spec, kind, encoder)?, warnings))
}

/// Read, format and tokenize every row of `files` (JSON lines, JSON arrays, parquet, Arrow).
/// A bad row is an [`Error::Data`] naming its file, line and field.
pub fn encode_preference_files(
    files: Vec<SourceFile>,
    spec: &PreferenceSpec,
    kind: PreferenceKind,
    encoder: &Encoder,
) -> Result<PreferenceRows> {
    let formatter = PreferenceFormatter::new(spec, kind, &encoder.info())?;
    let mut reader = RowReader::new(vec![DatasetFiles { files, shard: None }], 4096, 8 << 20);
    let mut rows = PreferenceRows {
        offsets: vec![0],
        ..PreferenceRows::default()
    };
    while let Some(chunk) = reader.next_chunk()? {
        let rendered: Vec<Result<EncodedRow>> = chunk
            .rows
            .par_iter()
            .map(|raw| {
                let file = &reader.files[raw.file];
                let data_error = |field: String, message: String| Error::Data {
                    path: file.path.clone(),
                    line: raw.line,
                    field,
                    message,
                };
                let parsed;
                let row = match &raw.data {
                    RowData::Parsed(row) => row,
                    RowData::JsonLine(range) => {
                        parsed = serde_json::from_slice::<Map<String, Value>>(&chunk.bytes[range.clone()])
                            .map_err(|error| data_error("-".into(), format!("not a JSON object: {error}")))?;
                        &parsed
                    }
                    RowData::TextLine(_) => {
                        return Err(data_error("-".into(), "preference rows must be JSON objects".into()));
                    }
                };
                // Formatting and tokenizing both run on the worker threads; only the copy is serial.
                formatter
                    .format(row)
                    .and_then(|row| encode_row(row, encoder))
                    .map_err(|error| data_error(error.field, error.message))
            })
            .collect();
        for result in rendered {
            let (sequences, desirable) = result?;
            for tokens in sequences {
                rows.input_ids.extend_from_slice(&tokens.input_ids);
                rows.trainable.extend_from_slice(&tokens.trainable);
                rows.offsets.push(rows.input_ids.len() as u64);
            }
            rows.desirable.extend(desirable);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).expect("test row")
    }

    fn spec(kind: &str) -> PreferenceSpec {
        PreferenceSpec {
            kind: kind.into(),
            ..PreferenceSpec::default()
        }
    }

    fn trained(text: &RenderedText) -> String {
        text.trainable.iter().map(|span| &text.text[span.clone()]).collect()
    }

    #[test]
    fn chatml_intel_renders_axolotls_prompt_and_trains_the_answers() {
        let formatter = PreferenceFormatter::new(
            &spec("chatml.intel"),
            PreferenceKind::Pairs,
            &TokenizerInfo::for_tests(),
        )
        .unwrap();
        let PreferenceRow::Pair { chosen, rejected } = formatter
            .format(&row(
                r#"{"system": "Be brief.", "question": "2+2?", "chosen": "4", "rejected": "5"}"#,
            ))
            .unwrap()
        else {
            panic!("pairs");
        };
        let prompt =
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n";
        assert_eq!(chosen.text, format!("{prompt}4<|im_end|>"));
        assert_eq!(trained(&chosen), "4<|im_end|>");
        assert_eq!(trained(&rejected), "5<|im_end|>");
    }

    #[test]
    fn chat_template_default_trains_everything_after_the_generation_prompt() {
        let mut spec = spec("chat_template.default");
        spec.chat_template = Some("chatml".into());
        spec.message_property_mappings = Some([("role".to_owned(), "from".to_owned())].into());
        let formatter = PreferenceFormatter::new(&spec, PreferenceKind::Pairs, &TokenizerInfo::for_tests()).unwrap();
        let PreferenceRow::Pair { chosen, .. } = formatter
            .format(&row(r#"{"messages": [{"from": "user", "content": "hi"}],
                    "chosen": {"from": "assistant", "content": "hello"}, "rejected": "go away"}"#))
            .unwrap()
        else {
            panic!("pairs");
        };
        assert!(
            chosen
                .text
                .starts_with("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
        );
        assert!(trained(&chosen).starts_with("hello<|im_end|>"), "{}", trained(&chosen));
    }

    #[test]
    fn argilla_chat_takes_the_first_turn_as_prompt_and_the_second_as_answers() {
        let formatter = PreferenceFormatter::new(
            &spec("llama3.argilla_chat"),
            PreferenceKind::Pairs,
            &TokenizerInfo::for_tests(),
        )
        .unwrap();
        let pair = row(r#"{"system": "ignored, as in Axolotl",
            "chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
            "rejected": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}]}"#);
        let PreferenceRow::Pair { chosen, rejected } = formatter.format(&pair).unwrap() else {
            panic!("pairs");
        };
        let prompt = "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>\
                      <|start_header_id|>assistant<|end_header_id|>\n\n";
        assert_eq!(chosen.text, format!("{prompt}4<|eot_id|>"));
        assert_eq!(trained(&rejected), "5<|eot_id|>");
        let short = formatter
            .format(&row(
                r#"{"chosen": [{"role": "user", "content": "q"}], "rejected": []}"#,
            ))
            .unwrap_err();
        assert_eq!(short.field, "chosen[1].content");
    }

    fn orpo_argilla() -> PreferenceFormatter {
        let mut spec = spec("chat_template.argilla");
        spec.chat_template = Some("chatml".into());
        PreferenceFormatter::new(&spec, PreferenceKind::Orpo, &TokenizerInfo::for_tests()).unwrap()
    }

    #[test]
    fn orpo_argilla_prompts_with_system_and_prompt_and_trains_the_last_turns() {
        let formatter = orpo_argilla();
        let PreferenceRow::Pair { chosen, rejected } = formatter
            .format(&row(r#"{"system": "Be brief.", "prompt": "2+2?",
                "chosen": [{"role": "user", "content": "two plus two?"}, {"role": "assistant", "content": "4"}],
                "rejected": [{"role": "user", "content": "two plus two?"}, {"role": "assistant", "content": "5"}]}"#))
            .unwrap()
        else {
            panic!("pairs");
        };
        let prompt = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n\
                      <|im_start|>assistant\n";
        assert_eq!(chosen.text, format!("{prompt}4<|im_end|>\n"));
        assert_eq!(trained(&chosen), "4<|im_end|>\n");
        assert_eq!(rejected.text, format!("{prompt}5<|im_end|>\n"));
        assert_eq!(trained(&rejected), "5<|im_end|>\n");

        // No system, no prompt field: the earlier turns of `chosen` are the prompt.
        let PreferenceRow::Pair { chosen, .. } = formatter
            .format(&row(r#"{"system": "",
                "chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                           {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
                "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                             {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}]}"#))
            .unwrap()
        else {
            panic!("pairs");
        };
        assert!(
            chosen.text.starts_with(
                "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n\
                 <|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4"
            ),
            "{}",
            chosen.text
        );
        assert_eq!(trained(&chosen), "4<|im_end|>\n");
    }

    #[test]
    fn orpo_argilla_is_refused_outside_orpo_and_names_bad_turns() {
        let mut dpo = spec("chat_template.argilla");
        dpo.chat_template = Some("chatml".into());
        let error = PreferenceFormatter::new(&dpo, PreferenceKind::Pairs, &TokenizerInfo::for_tests())
            .err()
            .expect("chat_template.argilla is ORPO's");
        assert!(error.to_string().contains("needs rl: orpo"), "{error}");
        let kto = PreferenceFormatter::new(&dpo, PreferenceKind::Kto, &TokenizerInfo::for_tests())
            .err()
            .expect("no KTO type");
        assert!(kto.to_string().contains("not a KTO dataset type"), "{kto}");

        let formatter = orpo_argilla();
        let bad = |json: &str| {
            let error = formatter.format(&row(json)).unwrap_err();
            (error.field, error.message)
        };
        let user = r#"{"role": "user", "content": "q"}"#;
        let (field, message) = bad(&format!(
            r#"{{"chosen": [{{"role": "system", "content": "s"}}, {user}, {{"role": "assistant", "content": "a"}}],
                "rejected": [{user}, {{"role": "assistant", "content": "b"}}]}}"#
        ));
        assert_eq!(field, "chosen[0]");
        assert!(message.contains("role `system`, expected `user`"), "{message}");
        let (field, message) = bad(&format!(r#"{{"chosen": [{user}], "rejected": [{user}]}}"#));
        assert_eq!(field, "chosen");
        assert!(message.contains("found 1 messages"), "{message}");
        let (field, _) = bad(&format!(
            r#"{{"chosen": [{user}, {{"role": "assistant", "content": "a"}}], "rejected": "b"}}"#
        ));
        assert_eq!(field, "rejected");
        let (field, message) = bad(&format!(
            r#"{{"chosen": [{user}, {{"role": "assistant", "content": "a"}}],
                "rejected": [{{"role": "user", "content": "other"}}, {{"role": "assistant", "content": "b"}}]}}"#
        ));
        assert_eq!(field, "rejected");
        assert!(message.contains("the shared prompt"), "{message}");
        let (field, message) = bad(&format!(
            r#"{{"chosen": [{user}, {{"role": "assistant", "content": "a"}}],
                "rejected": [{user}, {{"role": "assistant", "content": " "}}]}}"#
        ));
        assert_eq!((field.as_str(), message.as_str()), ("rejected[1]", "empty answer"));
        let (field, _) = bad(&format!(
            r#"{{"prompt": 3, "chosen": [{user}, {{"role": "assistant", "content": "a"}}],
                "rejected": [{user}, {{"role": "assistant", "content": "b"}}]}}"#
        ));
        assert_eq!(field, "prompt");
        let (field, _) = bad(&format!(
            r#"{{"chosen": [{user}, {{"role": "assistant"}}], "rejected": [{user}, {{"role": "assistant", "content": "b"}}]}}"#
        ));
        assert_eq!(field, "chosen[1].content");
    }

    fn labelled(kind: &str, json: &str) -> (RenderedText, bool) {
        let formatter =
            PreferenceFormatter::new(&spec(kind), PreferenceKind::Kto, &TokenizerInfo::for_tests()).unwrap();
        match formatter.format(&row(json)).unwrap() {
            PreferenceRow::Labelled { completion, desirable } => (completion, desirable),
            PreferenceRow::Pair { .. } => panic!("KTO rows are labelled"),
        }
    }

    #[test]
    fn kto_argilla_chat_uses_axolotls_strings() {
        let conversation = r#"{"label": false, "system": "ignored, as in Axolotl", "completion": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "5"}]}"#;
        // chatml: messages 0 and 1, whatever their roles and however many follow.
        let (chatml, desirable) = labelled("chatml.argilla_chat", conversation);
        assert!(!desirable);
        assert_eq!(
            chatml.text,
            "<|im_start|>user\nBe brief.<|im_end|>\n<|im_start|>assistant\n2+2?<|im_end|>"
        );
        assert_eq!(trained(&chatml), "2+2?<|im_end|>");
        // llama3: every message before the last under its own role, the last one trained.
        let (llama3, _) = labelled("llama3.argilla_chat", conversation);
        let prompt = "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
                      <|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>\
                      <|start_header_id|>assistant<|end_header_id|>\n\n";
        assert_eq!(llama3.text, format!("{prompt}5<|eot_id|>"));
        assert_eq!(trained(&llama3), "5<|eot_id|>");

        let kto = PreferenceFormatter::new(
            &spec("llama3.argilla_chat"),
            PreferenceKind::Kto,
            &TokenizerInfo::for_tests(),
        )
        .unwrap();
        let field = |json: &str| kto.format(&row(json)).unwrap_err().field;
        assert_eq!(field(r#"{"completion": [], "label": true}"#), "completion");
        assert_eq!(
            field(r#"{"completion": [{"content": "q"}, {"role": "assistant", "content": "a"}], "label": true}"#),
            "completion[0].role"
        );
        assert_eq!(
            field(r#"{"completion": [{"role": "user", "content": "q"}, "a"], "label": true}"#),
            "completion[1]"
        );
        assert_eq!(
            field(r#"{"completion": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}"#),
            "label"
        );
        let chatml = PreferenceFormatter::new(
            &spec("chatml.argilla_chat"),
            PreferenceKind::Kto,
            &TokenizerInfo::for_tests(),
        )
        .unwrap();
        let short = chatml
            .format(&row(
                r#"{"completion": [{"role": "user", "content": "q"}], "label": true}"#,
            ))
            .unwrap_err();
        assert_eq!(short.field, "completion[1].content");
    }

    #[test]
    fn bad_rows_name_the_field() {
        let formatter = PreferenceFormatter::new(
            &spec("chatml.intel"),
            PreferenceKind::Pairs,
            &TokenizerInfo::for_tests(),
        )
        .unwrap();
        let missing = formatter
            .format(&row(r#"{"question": "q", "rejected": "r"}"#))
            .unwrap_err();
        assert_eq!(missing.field, "chosen");
        let empty = formatter
            .format(&row(r#"{"question": "q", "chosen": "c", "rejected": " "}"#))
            .unwrap_err();
        assert_eq!(
            (empty.field.as_str(), empty.message.as_str()),
            ("rejected", "empty answer")
        );
        let kto = PreferenceFormatter::new(
            &spec("user_defined.default"),
            PreferenceKind::Kto,
            &TokenizerInfo::for_tests(),
        )
        .unwrap();
        let label = kto
            .format(&row(r#"{"prompt": "q", "completion": "c", "label": "yes"}"#))
            .unwrap_err();
        assert_eq!(label.field, "label");
        assert!(label.message.contains("expected true or false"), "{}", label.message);
    }

    #[test]
    fn user_defined_fills_the_formats() {
        let mut spec = spec("user_defined.default");
        spec.field_prompt = Some("q".into());
        spec.prompt_format = Some("[{system}] Q: {prompt}\nA: ".into());
        spec.chosen_format = Some("{chosen}</s>".into());
        let formatter = PreferenceFormatter::new(&spec, PreferenceKind::Pairs, &TokenizerInfo::for_tests()).unwrap();
        let PreferenceRow::Pair { chosen, rejected } = formatter
            .format(&row(
                r#"{"q": "why?", "system": "S", "chosen": "because", "rejected": "no"}"#,
            ))
            .unwrap()
        else {
            panic!("pairs");
        };
        assert_eq!(chosen.text, "[S] Q: why?\nA: because</s>");
        assert_eq!(trained(&chosen), "because</s>");
        assert_eq!(trained(&rejected), "no");
    }

    #[test]
    fn unknown_types_list_the_known_ones() {
        let error = PreferenceFormatter::new(&spec("alpaca"), PreferenceKind::Kto, &TokenizerInfo::for_tests())
            .err()
            .expect("alpaca is no KTO type");
        assert!(error.to_string().contains("not a KTO dataset type"), "{error}");
        assert!(error.to_string().contains("llama3.argilla"), "{error}");
    }
}
