//! The hand-off between formatting and tokenization.
//!
//! A dataset row becomes a [`Sample`]: either one rendered string with the byte
//! ranges that are trained (every text format, instruction or chat), or tokens
//! that arrive already made (pretokenized rows). Tokenization then turns a
//! `Sample` into [`Encoded`] ids and a trainable mask. Keeping this boundary
//! small is what lets every format share one tokenizer path.

use std::ops::Range;

/// The label of a position that is not trained (PyTorch's `cross_entropy` default `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// A row rendered to the exact string the model sees at inference.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RenderedText {
    /// The whole sample as one string (special tokens such as `</s>` appear
    /// as their literal text; the tokenizer maps them to their ids).
    pub text: String,
    /// Byte ranges of `text` whose tokens are trained: sorted, non-overlapping.
    /// A token is trainable when any of its characters lies in one of them.
    pub trainable: Vec<Range<usize>>,
    /// Whether the tokenizer's post-processor adds its special tokens (BOS)
    /// around `text`. Chat templates write BOS themselves and set this false.
    pub add_special_tokens: bool,
}

/// What one dataset row becomes before tokenization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sample {
    /// Text to tokenize once, with trainable byte spans.
    Text(RenderedText),
    /// Already tokenized: ids and, per id, whether it is trained.
    Tokens {
        /// Token ids.
        input_ids: Vec<u32>,
        /// One flag per id.
        trainable: Vec<bool>,
    },
}

/// Token ids of one sample and, per token, whether it is trained.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Encoded {
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// One flag per id: true when the loss is computed on it.
    pub trainable: Vec<bool>,
}

/// A problem with one field of one row. The pipeline adds file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field at fault (`-` for the whole row).
    pub field: String,
    /// What is wrong, in words a user can act on.
    pub message: String,
}

impl FieldError {
    /// A new error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What a formatter needs to know of the tokenizer: its special-token
/// strings (e.g. to append EOS to a response) and its own chat template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenizerInfo {
    /// Beginning-of-sequence token text (`<s>`), if the tokenizer has one.
    pub bos: Option<String>,
    /// End-of-sequence token text (`</s>`), if the tokenizer has one.
    pub eos: Option<String>,
    /// The Jinja `chat_template` of tokenizer_config.json, if any.
    pub chat_template: Option<String>,
}

#[cfg(test)]
impl TokenizerInfo {
    /// The tests' tokenizer: Llama's `<s>`/`</s>`, no chat template of its own.
    pub(crate) fn for_tests() -> Self {
        Self {
            bos: Some("<s>".into()),
            eos: Some("</s>".into()),
            chat_template: None,
        }
    }
}

/// Turns one JSON row into a [`Sample`]. Implemented once per family of
/// formats (instruction table, chat templates, pretokenized), selected by the
/// dataset's `type`. Shared across rayon workers, hence `Send + Sync`.
pub trait RowFormatter: Send + Sync {
    /// Format one row.
    fn format(&self, row: &serde_json::Map<String, serde_json::Value>) -> Result<Sample, FieldError>;

    /// Format one row and, for a conversation, what the data doctor checks of its turns.
    fn format_for_doctor(
        &self,
        row: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(Sample, Option<crate::doctor::ConversationView>), FieldError> {
        Ok((self.format(row)?, None))
    }

    /// For a conversation format: the inference prompt of the row's messages before its final
    /// answer, as `apply_chat_template(..., add_generation_prompt=True)` renders it.
    fn generation_prompt_before_answer(
        &self,
        _row: &serde_json::Map<String, serde_json::Value>,
    ) -> crate::doctor::GenerationPrompt {
        crate::doctor::GenerationPrompt::NotAConversation
    }
}
