//! Conversation datasets: sharegpt and its variants, pygmalion, and
//! OpenAI-style `messages` rendered by a chat template, masked per turn.
//!
//! ```text
//! row ─> messages (roles mapped, trained flag per turn)
//!     ─> one Jinja render (built-in style or the tokenizer's template)
//!     ─> content spans from the same render (spans.rs)
//!     ─> trainable byte ranges: trained contents + end-of-turn text per train_on_eos
//! ```
//!
//! The text is exactly what `tokenizer.apply_chat_template(messages)` renders,
//! so tokenizing it once gives the ids the model sees at inference.

pub mod spans;

use std::collections::BTreeMap;
use std::ops::Range;

use serde_json::{Map, Value};

use crate::doctor::{ConversationView, GenerationPrompt};
use crate::error::{Error, Result};
use crate::sample::{FieldError, RenderedText, RowFormatter, Sample, TokenizerInfo};
use crate::spec::{ConversationType, FormatSpec, TrainOnEos};
use crate::template::{self, ChatTemplate, TemplateMessage};

/// One rendered turn: where its content and its end-of-turn text are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedTurn {
    /// Role as given to the template.
    pub role: String,
    /// Whether the content is trained.
    pub trained: bool,
    /// Byte ranges of the content in the text (usually one).
    pub content: Vec<Range<usize>>,
    /// The end-of-turn text after the content, if the template writes one.
    pub end_of_turn: Option<Range<usize>>,
    /// Whether the end-of-turn text is trained.
    pub end_of_turn_trained: bool,
}

/// A conversation rendered for training.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedConversation {
    /// Exactly `apply_chat_template(messages, tokenize=False)`.
    pub text: String,
    /// Per message, in input order.
    pub turns: Vec<RenderedTurn>,
    /// Sorted, merged byte ranges to train.
    pub trainable: Vec<Range<usize>>,
}

/// A message after reading the row and mapping its role.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Turn {
    role: String,
    content: String,
    trained: bool,
}

/// Formats conversation rows. Built once per dataset by [`build`].
#[derive(Debug)]
pub struct ChatFormatter {
    kind: ConversationType,
    template: ChatTemplate,
    field_messages: String,
    role_key: Option<String>,
    content_key: Option<String>,
    training_key: Option<String>,
    /// Source role → role given to the template.
    roles: BTreeMap<String, String>,
    roles_to_train: Vec<String>,
    train_on_inputs: bool,
    train_on_eos: TrainOnEos,
    end_of_turn: Vec<String>,
    default_system_message: Option<String>,
    drop_system_message: bool,
}

fn config_error(key: &str, message: impl Into<String>) -> Error {
    Error::Config {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// Resolve the template source: a style, the tokenizer's, or inline Jinja.
fn resolve_template(
    kind: ConversationType,
    options: &FormatSpec,
    tokenizer: &TokenizerInfo,
) -> Result<(String, String, Option<&'static template::styles::Style>)> {
    if kind == ConversationType::Pygmalion {
        let style = template::styles::find("pygmalion").expect("built-in style");
        return Ok((style.name.to_owned(), style.source.to_owned(), Some(style)));
    }
    let (key, requested) = match (&options.chat_template, &options.conversation) {
        (Some(name), _) => ("chat_template", name.clone()),
        (None, Some(name)) => ("conversation", name.clone()),
        (None, None) if options.chat_template_jinja.is_some() => ("chat_template", "jinja".to_owned()),
        (None, None) if kind.is_sharegpt_family() => ("conversation", "vicuna_v1.1".to_owned()),
        (None, None) => ("chat_template", "tokenizer_default".to_owned()),
    };
    template::resolve_named(key, &requested, options.chat_template_jinja.as_deref(), tokenizer)
}

fn default_role_table() -> BTreeMap<String, String> {
    [
        ("human", "user"),
        ("user", "user"),
        ("gpt", "assistant"),
        ("assistant", "assistant"),
        ("system", "system"),
        ("tool", "tool"),
    ]
    .into_iter()
    .map(|(source, target)| (source.to_owned(), target.to_owned()))
    .collect()
}

/// Source role → template role, and the 2024 `roles.output` names (trained).
fn role_table(kind: ConversationType, options: &FormatSpec) -> (BTreeMap<String, String>, Vec<String>) {
    let legacy_roles = kind.is_sharegpt_family()
        && options
            .roles
            .as_ref()
            .is_some_and(|roles| roles.keys().all(|key| key == "input" || key == "output"));
    let mut table = match kind {
        ConversationType::ShareGptLoadRole => [("human", "user"), ("gpt", "assistant"), ("system", "system")]
            .into_iter()
            .collect(),
        ConversationType::ShareGptLoadGuanaco => {
            [("prompter", "user"), ("assistant", "assistant")].into_iter().collect()
        }
        ConversationType::Pygmalion => [("system", "system"), ("human", "user"), ("bot", "assistant")]
            .into_iter()
            .collect(),
        _ => BTreeMap::new(),
    }
    .into_iter()
    .map(|(source, target): (&str, &str)| (source.to_owned(), target.to_owned()))
    .collect::<BTreeMap<_, _>>();
    if table.is_empty() {
        table = default_role_table();
    }
    // 2024 `roles = {input = [...], output = [...]}`: names kept as template
    // labels; output ones trained.
    let (mut extra_input_roles, mut extra_output_roles) = (Vec::new(), Vec::new());
    if let Some(roles) = &options.roles {
        if legacy_roles {
            extra_input_roles = roles.get("input").cloned().unwrap_or_default();
            extra_output_roles = roles.get("output").cloned().unwrap_or_default();
        } else {
            table = roles
                .iter()
                .flat_map(|(target, sources)| sources.iter().map(move |source| (source.clone(), target.clone())))
                .collect();
        }
    }
    if kind.is_sharegpt_family() {
        if let Some(human) = &options.field_human {
            table.insert(human.clone(), "user".to_owned());
        }
        if let Some(model) = &options.field_model {
            table.insert(model.clone(), "assistant".to_owned());
        }
    }
    for name in extra_input_roles.iter().chain(&extra_output_roles) {
        table.insert(name.clone(), name.clone());
    }

    (table, extra_output_roles)
}

/// The message keys holding role and content; `None` means "detect per row"
/// (2024 sharegpt looks at the first message's keys).
fn message_keys(kind: ConversationType, options: &FormatSpec) -> Result<(Option<String>, Option<String>)> {
    let mappings = options.message_property_mappings.clone().unwrap_or_default();
    let role_key = mappings.get("role").or(options.message_field_role.as_ref()).cloned();
    let content_key = mappings
        .get("content")
        .or(options.message_field_content.as_ref())
        .cloned();
    if let Some(unknown) = mappings.keys().find(|key| !["role", "content"].contains(&key.as_str())) {
        return Err(config_error(
            "message_property_mappings",
            format!("`{unknown}` is not supported; map `role` and `content`"),
        ));
    }
    Ok(match kind {
        ConversationType::ShareGptLoadRole | ConversationType::Pygmalion => {
            (role_key.or(Some("role".into())), content_key.or(Some("value".into())))
        }
        ConversationType::ShareGptLoadGuanaco => {
            (role_key.or(Some("role".into())), content_key.or(Some("text".into())))
        }
        ConversationType::ChatTemplate => (role_key.or(Some("role".into())), content_key.or(Some("content".into()))),
        // sharegpt detects `role`/`from` and `text`/`content`/`value` per row.
        ConversationType::ShareGpt | ConversationType::ShareGptJokes => (role_key, content_key),
    })
}

/// Build the formatter of a conversation dataset.
pub fn build(kind: ConversationType, options: &FormatSpec, tokenizer: &TokenizerInfo) -> Result<ChatFormatter> {
    let (name, source, style) = resolve_template(kind, options, tokenizer)?;
    let bos = tokenizer.bos.clone().unwrap_or_default();
    let eos = tokenizer.eos.clone().unwrap_or_default();
    let template = ChatTemplate::new(&name, &source, &bos, &eos)
        .map_err(|message| {
            let key = if name == "chat_template_jinja" {
                "chat_template_jinja"
            } else {
                "chat_template"
            };
            config_error(key, message)
        })?
        .with_limits(options.template_limits.unwrap_or_default());

    let (table, extra_output_roles) = role_table(kind, options);

    let roles_to_train: Vec<String> = options
        .roles_to_train
        .clone()
        .unwrap_or_else(|| vec!["assistant".to_owned()])
        .into_iter()
        .map(|role| table.get(&role).cloned().unwrap_or(role))
        .chain(extra_output_roles.iter().cloned())
        .collect();

    let (role_key, content_key) = message_keys(kind, options)?;
    let field_messages = options.field_messages.clone().unwrap_or_else(|| {
        if kind == ConversationType::ChatTemplate {
            "messages"
        } else {
            "conversations"
        }
        .to_owned()
    });

    let mut end_of_turn = options.eot_tokens.clone().unwrap_or_else(|| {
        style
            .and_then(|style| style.end_of_turn)
            .map(str::to_owned)
            .into_iter()
            .chain(tokenizer.eos.clone())
            .collect()
    });
    end_of_turn.retain(|text| !text.is_empty());
    // Longest first, so `</s>` never shadows a longer marker that starts with it.
    end_of_turn.sort_by(|left, right| right.len().cmp(&left.len()).then_with(|| left.cmp(right)));
    end_of_turn.dedup();

    let default_system_message = options.default_system_message.clone().or_else(|| {
        kind.is_sharegpt_family()
            .then(|| style.and_then(|style| style.sharegpt_default_system).map(str::to_owned))
            .flatten()
    });

    Ok(ChatFormatter {
        kind,
        template,
        field_messages,
        role_key,
        content_key,
        training_key: options.message_field_training.clone(),
        roles: table,
        roles_to_train,
        // Pygmalion never trains its inputs (Axolotl ignores the option there).
        train_on_inputs: kind != ConversationType::Pygmalion && options.train_on_inputs,
        train_on_eos: options.train_on_eos.unwrap_or_default(),
        end_of_turn,
        default_system_message,
        drop_system_message: options.drop_system_message.unwrap_or(false),
    })
}

fn text_field<'a>(row: &'a Map<String, Value>, field: &str) -> Result<&'a str, FieldError> {
    match row.get(field) {
        Some(Value::String(text)) => Ok(text),
        Some(Value::Null) | None => Err(FieldError::new(field, "missing; expected text")),
        Some(other) => Err(FieldError::new(
            field,
            format!("expected text, found {}", json_kind(other)),
        )),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl ChatFormatter {
    /// The template's name (style, `tokenizer_default` or `chat_template_jinja`).
    pub fn template_name(&self) -> &str {
        self.template.name()
    }

    /// The template, e.g. to render a generation prompt.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The texts that end a turn (longest first): where generation stops.
    pub fn end_of_turn(&self) -> &[String] {
        &self.end_of_turn
    }

    fn map_role(&self, role: &str, field: &str) -> Result<String, FieldError> {
        let table = &self.roles;
        table.get(role).cloned().ok_or_else(|| {
            let known: Vec<&str> = table.keys().map(String::as_str).collect();
            FieldError::new(
                field,
                format!(
                    "unknown role `{role}` (known: {}); map it with the dataset's `roles` key",
                    known.join(", ")
                ),
            )
        })
    }

    /// sharegpt_jokes: a fixed four-turn conversation around the row's joke.
    fn joke_turns(&self, row: &Map<String, Value>) -> Result<Vec<Turn>, FieldError> {
        let title = text_field(row, "title").or_else(|error| match row.get("title") {
            None | Some(Value::Null) => Ok(""),
            Some(_) => Err(error),
        })?;
        let text = text_field(row, "text")?;
        let explanation = text_field(row, "explanation")?;
        let joke = if title.is_empty() {
            text.to_owned()
        } else {
            format!("{title} {text}")
        };
        let pairs = [
            ("user", "Tell me a joke.".to_owned()),
            ("assistant", joke),
            ("user", "Why is that joke funny?".to_owned()),
            ("assistant", explanation.to_owned()),
        ];
        Ok(pairs
            .into_iter()
            .map(|(role, content)| Turn {
                trained: self.role_trained(role),
                role: role.to_owned(),
                content,
            })
            .collect())
    }

    fn read_message(&self, message: &Value, at: &str, role_key: &str, content_key: &str) -> Result<Turn, FieldError> {
        let Some(message) = message.as_object() else {
            return Err(FieldError::new(
                at,
                format!("expected an object, found {}", json_kind(message)),
            ));
        };
        let source_role = text_field(message, role_key)
            .map_err(|error| FieldError::new(format!("{at}.{}", error.field), error.message))?;
        let role = self.map_role(source_role, &format!("{at}.{role_key}"))?;
        let mut content = text_field(message, content_key)
            .map_err(|error| FieldError::new(format!("{at}.{}", error.field), error.message))?;
        if self.kind == ConversationType::Pygmalion && role == "system" {
            content = content.strip_suffix("\n<START>").unwrap_or(content);
        }
        let content = content.to_owned();
        let trained = match self
            .training_key
            .as_ref()
            .and_then(|key| message.get(key).map(|value| (key, value)))
        {
            None | Some((_, Value::Null)) => self.role_trained(&role),
            Some((_, Value::Bool(flag))) => *flag,
            Some((key, other)) => {
                return Err(FieldError::new(
                    format!("{at}.{key}"),
                    format!("expected true or false, found {}", json_kind(other)),
                ));
            }
        };
        Ok(Turn { role, content, trained })
    }

    fn read_turns(&self, row: &Map<String, Value>) -> Result<Vec<Turn>, FieldError> {
        if self.kind == ConversationType::ShareGptJokes {
            return self.joke_turns(row);
        }
        let field = self.field_messages.as_str();
        let messages = match row.get(field) {
            Some(Value::Array(messages)) => messages,
            None | Some(Value::Null) => return Err(FieldError::new(field, "missing; expected a list of messages")),
            Some(other) => {
                return Err(FieldError::new(
                    field,
                    format!("expected a list of messages, found {}", json_kind(other)),
                ));
            }
        };
        if messages.is_empty() {
            return Err(FieldError::new(field, "the conversation has no messages"));
        }
        // sharegpt (2024) picks the keys from the first message.
        let first = messages.first().and_then(Value::as_object);
        let role_key = self.role_key.clone().unwrap_or_else(|| {
            if first.is_some_and(|message| message.contains_key("role")) {
                "role"
            } else {
                "from"
            }
            .to_owned()
        });
        let content_key = self.content_key.clone().unwrap_or_else(|| {
            ["text", "content", "value"]
                .into_iter()
                .find(|key| first.is_some_and(|message| message.contains_key(*key)))
                .unwrap_or("value")
                .to_owned()
        });
        let mut turns = Vec::with_capacity(messages.len() + 1);
        for (index, message) in messages.iter().enumerate() {
            let at = format!("{field}[{index}]");
            turns.push(self.read_message(message, &at, &role_key, &content_key)?);
        }
        self.apply_system_policy(&mut turns);
        Ok(turns)
    }

    /// `drop_system_message`, then `default_system_message` when no system turn leads.
    fn apply_system_policy(&self, turns: &mut Vec<Turn>) {
        if self.drop_system_message {
            turns.retain(|turn| turn.role != "system");
        }
        if let Some(system) = &self.default_system_message
            && turns.first().is_none_or(|turn| turn.role != "system")
        {
            turns.insert(
                0,
                Turn {
                    role: "system".to_owned(),
                    content: system.clone(),
                    trained: self.role_trained("system"),
                },
            );
        }
    }

    /// The inference prompt of `row`: its conversation without the trailing
    /// assistant turns (the reply to generate), rendered with the generation
    /// prompt, as `apply_chat_template(messages, add_generation_prompt=True)`.
    pub fn generation_prompt(&self, row: &Map<String, Value>) -> Result<String, FieldError> {
        let mut turns = self.read_turns(row)?;
        while turns.last().is_some_and(|turn| turn.role == "assistant") {
            turns.pop();
        }
        self.render_generation_prompt(&turns)
    }

    /// The inference prompt of a history of template messages (roles already
    /// mapped: `system`, `user`, `assistant`), with the dataset's system-message policy.
    pub fn generation_prompt_for_messages(&self, messages: &[TemplateMessage]) -> Result<String, FieldError> {
        let mut turns: Vec<Turn> = messages
            .iter()
            .map(|message| Turn {
                role: message.role.clone(),
                content: message.content.clone(),
                trained: false,
            })
            .collect();
        self.apply_system_policy(&mut turns);
        self.render_generation_prompt(&turns)
    }

    fn render_generation_prompt(&self, turns: &[Turn]) -> Result<String, FieldError> {
        let messages: Vec<TemplateMessage> = turns
            .iter()
            .map(|turn| TemplateMessage {
                role: turn.role.clone(),
                content: turn.content.clone(),
            })
            .collect();
        self.template
            .render(&messages, true)
            .map_err(|message| FieldError::new(self.field_messages.as_str(), message))
    }

    fn role_trained(&self, role: &str) -> bool {
        self.train_on_inputs || self.roles_to_train.iter().any(|trained| trained == role)
    }

    /// Render one row with its per-turn spans and trainable ranges.
    pub fn render_row(&self, row: &Map<String, Value>) -> Result<RenderedConversation, FieldError> {
        let turns = self.read_turns(row)?;
        let messages: Vec<TemplateMessage> = turns
            .iter()
            .map(|turn| TemplateMessage {
                role: turn.role.clone(),
                content: turn.content.clone(),
            })
            .collect();
        let trained: Vec<bool> = turns.iter().map(|turn| turn.trained).collect();
        let found = spans::content_spans(&self.template, &messages, &trained)
            .map_err(|message| FieldError::new(self.field_messages.as_str(), message))?;
        Ok(self.assemble(turns, found))
    }

    fn assemble(&self, turns: Vec<Turn>, found: spans::ContentSpans) -> RenderedConversation {
        let text = found.text;
        let all_spans: Vec<(usize, Range<usize>)> = found
            .spans
            .iter()
            .enumerate()
            .flat_map(|(index, spans)| spans.iter().map(move |span| (index, span.clone())))
            .collect();
        let mut rendered: Vec<RenderedTurn> = turns
            .into_iter()
            .zip(found.spans)
            .enumerate()
            .map(|(index, (turn, content))| {
                let end_of_turn = content
                    .last()
                    .and_then(|last| self.find_end_of_turn(&text, (index, last), &all_spans));
                RenderedTurn {
                    role: turn.role,
                    trained: turn.trained,
                    content,
                    end_of_turn,
                    end_of_turn_trained: false,
                }
            })
            .collect();
        let last_with_end = rendered.iter().rposition(|turn| turn.end_of_turn.is_some());
        for (index, turn) in rendered.iter_mut().enumerate() {
            turn.end_of_turn_trained = turn.end_of_turn.is_some()
                && match self.train_on_eos {
                    TrainOnEos::Turn => turn.trained,
                    TrainOnEos::All => true,
                    TrainOnEos::Last => Some(index) == last_with_end,
                    TrainOnEos::None => false,
                };
        }
        let mut trainable: Vec<Range<usize>> = rendered
            .iter()
            .flat_map(|turn| {
                let content = turn.content.iter().filter(|_| turn.trained).cloned();
                let end = turn.end_of_turn.clone().filter(|_| turn.end_of_turn_trained);
                content.chain(end)
            })
            .filter(|range| !range.is_empty())
            .collect();
        trainable.sort_by_key(|range| range.start);
        let mut merged: Vec<Range<usize>> = Vec::with_capacity(trainable.len());
        for range in trainable {
            match merged.last_mut() {
                Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
                _ => merged.push(range),
            }
        }
        RenderedConversation {
            text,
            turns: rendered,
            trainable: merged,
        }
    }

    /// The end-of-turn text right after a content (whitespace allowed in
    /// between), before the next content starts.
    fn find_end_of_turn(
        &self,
        text: &str,
        (message, content): (usize, &Range<usize>),
        all_spans: &[(usize, Range<usize>)],
    ) -> Option<Range<usize>> {
        let content_end = content.end;
        let gap_end = all_spans
            .iter()
            .filter(|(other, span)| span.start >= content_end && !(*other == message && span == content))
            .map(|(_, span)| span.start)
            .min()
            .unwrap_or(text.len());
        let gap = &text[content_end..gap_end];
        let skipped = gap.len() - gap.trim_start().len();
        let rest = &gap[skipped..];
        self.end_of_turn
            .iter()
            .find(|marker| rest.starts_with(marker.as_str()))
            .map(|marker| content_end + skipped..content_end + skipped + marker.len())
    }
}

impl RowFormatter for ChatFormatter {
    fn format(&self, row: &Map<String, Value>) -> Result<Sample, FieldError> {
        let rendered = self.render_row(row)?;
        Ok(Sample::Text(RenderedText {
            text: rendered.text,
            trainable: rendered.trainable,
            add_special_tokens: false,
        }))
    }

    fn format_for_doctor(&self, row: &Map<String, Value>) -> Result<(Sample, Option<ConversationView>), FieldError> {
        let rendered = self.render_row(row)?;
        let view = ConversationView::new(&rendered.turns, self.train_on_eos);
        let sample = Sample::Text(RenderedText {
            text: rendered.text,
            trainable: rendered.trainable,
            add_special_tokens: false,
        });
        Ok((sample, Some(view)))
    }

    fn generation_prompt_before_answer(&self, row: &Map<String, Value>) -> GenerationPrompt {
        let Ok(mut turns) = self.read_turns(row) else {
            return GenerationPrompt::NoFinalAnswer;
        };
        if turns.last().is_none_or(|turn| turn.role != "assistant") {
            return GenerationPrompt::NoFinalAnswer;
        }
        turns.pop();
        self.render_generation_prompt(&turns)
            .map_or(GenerationPrompt::NoFinalAnswer, GenerationPrompt::Text)
    }
}

#[cfg(test)]
mod tests;
