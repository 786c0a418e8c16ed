//! The options of one dataset's format: [`FormatSpec`] (the format keys of a `datasets` entry,
//! Axolotl's names) and the small types its keys parse into. Both the instruction formats
//! (`crate::format`) and the conversation formats (`crate::chat`) read it; it imports neither.

/// The format part of one `datasets` entry, with Axolotl's key names.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatSpec {
    /// The dataset type (`alpaca`, `alpaca:chat`, `completion`, ...). Absent means
    /// pretokenized rows, or the custom format when any custom key is set.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// `completion`: the column holding the text (default `text`).
    #[serde(default)]
    pub field: Option<String>,
    /// Custom format: system text used when the row has no `field_system` key.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Custom format: wraps the system text (default `{system}`).
    #[serde(default)]
    pub system_format: Option<String>,
    /// Custom format: column with a per-row system text (default `system`).
    #[serde(default)]
    pub field_system: Option<String>,
    /// Custom format: column with the instruction (default `instruction`).
    #[serde(default)]
    pub field_instruction: Option<String>,
    /// Custom format: column with the optional input (default `input`).
    #[serde(default)]
    pub field_input: Option<String>,
    /// Custom format: column with the response (default `output`).
    #[serde(default)]
    pub field_output: Option<String>,
    /// Custom format: prompt when the input is non-empty (default `"{instruction} {input} "`).
    #[serde(default)]
    pub format: Option<String>,
    /// Custom format: prompt when the input is empty (default `"{instruction} "`).
    #[serde(default)]
    pub no_input_format: Option<String>,
    /// `alpaca_chat`: the prompt style to use instead of `chat` (`instruct`, `chat`, `chatml`, `phi`).
    #[serde(default)]
    pub conversation: Option<String>,
    /// Train on the prompt too. Filled by the caller from the top-level config key.
    #[serde(default)]
    pub train_on_inputs: bool,
    /// Conversation types: a style name, `tokenizer_default[_fallback_<style>]` or `jinja` (see `crate::template`).
    #[serde(default)]
    pub chat_template: Option<String>,
    /// Conversation types: the Jinja template text or file, with `chat_template = "jinja"`.
    #[serde(default)]
    pub chat_template_jinja: Option<String>,
    /// Chat templates: the limits of each render (the top-level `chat_template_limits`, filled in
    /// by the caller; absent: the defaults).
    #[serde(default)]
    pub template_limits: Option<RenderLimits>,
    /// Conversation types: the row field holding the messages.
    #[serde(default)]
    pub field_messages: Option<String>,
    /// Conversation types: message keys, `{role = "from", content = "value"}`.
    #[serde(default)]
    pub message_property_mappings: Option<std::collections::BTreeMap<String, String>>,
    /// Conversation types: legacy spelling of `message_property_mappings.role`.
    #[serde(default)]
    pub message_field_role: Option<String>,
    /// Conversation types: legacy spelling of `message_property_mappings.content`.
    #[serde(default)]
    pub message_field_content: Option<String>,
    /// Conversation types: per-message boolean field overriding `roles_to_train`.
    #[serde(default)]
    pub message_field_training: Option<String>,
    /// sharegpt: the `from` value of the user.
    #[serde(default)]
    pub field_human: Option<String>,
    /// sharegpt: the `from` value of the assistant.
    #[serde(default)]
    pub field_model: Option<String>,
    /// Conversation types: role mapping (`{target = [sources]}`, or 2024 `{input = [...], output = [...]}`).
    #[serde(default)]
    pub roles: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// Conversation types: roles whose contents are trained (default `["assistant"]`).
    #[serde(default)]
    pub roles_to_train: Option<Vec<String>>,
    /// Conversation types: which end-of-turn texts are trained (`turn`, `last`, `all`, `none`).
    #[serde(default)]
    pub train_on_eos: Option<TrainOnEos>,
    /// Conversation types: texts that end a turn (default: the style's and EOS).
    #[serde(default)]
    pub eot_tokens: Option<Vec<String>>,
    /// Conversation types: system message for rows that have none.
    #[serde(default)]
    pub default_system_message: Option<String>,
    /// Conversation types: remove system messages.
    #[serde(default)]
    pub drop_system_message: Option<bool>,
}

impl FormatSpec {
    /// Whether any key of the user-defined (custom) instruction format is set.
    pub fn has_custom_keys(&self) -> bool {
        [
            &self.system_prompt,
            &self.system_format,
            &self.field_system,
            &self.field_instruction,
            &self.field_input,
            &self.field_output,
            &self.format,
            &self.no_input_format,
        ]
        .iter()
        .any(|key| key.is_some())
    }
}

/// The conversation dataset types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConversationType {
    /// `sharegpt`: `conversations: [{from, value}]` (2024 schema).
    ShareGpt,
    /// `sharegpt.load_role`: `conversations: [{role, value}]`.
    ShareGptLoadRole,
    /// `sharegpt.load_guanaco`: `conversations: [{role: prompter|assistant, text}]`.
    ShareGptLoadGuanaco,
    /// `sharegpt_jokes`: top-level `title`, `text`, `explanation`.
    ShareGptJokes,
    /// `pygmalion`: `conversations: [{role: system|human|bot, value}]`.
    Pygmalion,
    /// `chat_template`: `messages: [{role, content}]` (today's schema).
    ChatTemplate,
}

/// Every conversation `type:` name.
pub const CONVERSATION_TYPES: [&str; 7] = [
    "sharegpt",
    "sharegpt.load_role",
    "sharegpt.load_guanaco",
    "sharegpt_jokes",
    "pygmalion",
    "chat_template",
    "messages",
];

impl ConversationType {
    /// The type for a dataset `type:` value, if it is a conversation type.
    pub fn from_type_name(name: &str) -> Option<Self> {
        Some(match name {
            "sharegpt" => Self::ShareGpt,
            "sharegpt.load_role" => Self::ShareGptLoadRole,
            "sharegpt.load_guanaco" => Self::ShareGptLoadGuanaco,
            "sharegpt_jokes" => Self::ShareGptJokes,
            "pygmalion" => Self::Pygmalion,
            "chat_template" | "messages" => Self::ChatTemplate,
            _ => return None,
        })
    }

    /// sharegpt and its variants (2024 keys: `conversation`, `field_human`, `roles.input`/`output`).
    pub fn is_sharegpt_family(self) -> bool {
        matches!(
            self,
            Self::ShareGpt | Self::ShareGptLoadRole | Self::ShareGptLoadGuanaco | Self::ShareGptJokes
        )
    }
}

/// Which end-of-turn texts are trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainOnEos {
    /// After every trained turn (the default).
    #[default]
    Turn,
    /// Only the last end-of-turn of the conversation.
    Last,
    /// After every turn, trained or not.
    All,
    /// Never.
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_rejects_unknown_keys() {
        let parsed: std::result::Result<FormatSpec, _> = serde_json::from_str(r#"{"type": "alpaca", "feild": "x"}"#);
        assert!(parsed.is_err());
    }

    #[test]
    fn every_conversation_type_name_parses_and_no_other() {
        for name in CONVERSATION_TYPES {
            assert!(ConversationType::from_type_name(name).is_some(), "{name}");
        }
        for name in ["alpaca", "completion", "chat_template.default", "sharegpt:chat", ""] {
            assert_eq!(ConversationType::from_type_name(name), None, "{name}");
        }
    }
}

/// Instructions one render may execute by default. Real chat templates spend a few dozen per
/// message (~20,000 for a 500-turn conversation); this is the budget of a template gone wrong.
pub const RENDER_FUEL: u64 = 20_000_000;

/// Bytes one render may write: far beyond any sequence_len (64 MiB is millions of tokens),
/// far below what would exhaust memory.
pub const RENDER_MAX_BYTES: usize = 64 << 20;

/// Bytes one render may hold at once (what it allocates minus what it frees): room for a
/// render at the output cap plus copies of its messages, far below what would exhaust memory.
pub const RENDER_MAX_MEMORY: usize = 256 << 20;

/// The limits of one render (the config's `chat_template_limits`; each absent field keeps its
/// default: [`RENDER_FUEL`], [`RENDER_MAX_BYTES`], [`RENDER_MAX_MEMORY`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RenderLimits {
    /// Jinja instructions per render.
    pub instructions: u64,
    /// MiB of output per render.
    pub output_mib: usize,
    /// MiB of memory one render may hold at once.
    pub memory_mib: usize,
}

impl Default for RenderLimits {
    fn default() -> Self {
        Self {
            instructions: RENDER_FUEL,
            output_mib: RENDER_MAX_BYTES >> 20,
            memory_mib: RENDER_MAX_MEMORY >> 20,
        }
    }
}

impl RenderLimits {
    /// The output cap in bytes.
    pub fn output_bytes(self) -> usize {
        self.output_mib.saturating_mul(1 << 20)
    }

    /// The memory budget in bytes.
    pub fn memory_bytes(self) -> usize {
        self.memory_mib.saturating_mul(1 << 20)
    }
}
