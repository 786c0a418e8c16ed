//! Built-in conversation styles, each a Jinja chat template.
//!
//! They go through the same renderer as a tokenizer's own template, so there
//! is one code path and each style can be checked against transformers'
//! `apply_chat_template` by handing it the same template string. The sources
//! contain no newlines: with `trim_blocks`, a newline after `}}` would be
//! output, and keeping them on one logical line avoids that trap.

/// A named style: its Jinja source and the text that ends a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Canonical name, as used in configs (`conversation:` / `chat_template:`).
    pub name: &'static str,
    /// Other accepted spellings (FastChat and Axolotl template names).
    pub aliases: &'static [&'static str],
    /// The Jinja template.
    pub source: &'static str,
    /// Text that closes a turn, trained per `train_on_eos`. `None` means the
    /// tokenizer's EOS token.
    pub end_of_turn: Option<&'static str>,
    /// The system message used when a row has none and the config sets no
    /// `default_system_message` (2024 FastChat behaviour for `chatml`).
    pub sharegpt_default_system: Option<&'static str>,
}

/// The default system prompt of FastChat's `vicuna_v1.1`.
pub const VICUNA_SYSTEM: &str = "A chat between a curious user and an artificial intelligence assistant. \
                                 The assistant gives helpful, detailed, and polite answers to the user's questions.";

// Shared fragments; macros because concat! takes only literals.
macro_rules! alternation_check {
    () => {
        concat!(
            r"{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}",
            r"{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/... after an optional system message') }}",
            r"{% endif %}",
        )
    };
}

/// Split off a leading system message: sets `system` (or none) and `rest`.
macro_rules! split_system {
    () => {
        concat!(
            r"{% if messages and messages[0]['role'] == 'system' %}",
            r"{% set system = messages[0]['content'] %}{% set rest = messages[1:] %}",
            r"{% else %}{% set system = none %}{% set rest = messages %}{% endif %}",
        )
    };
}

const CHATML: &str = concat!(
    r"{% for message in messages %}",
    r"{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}",
    r"{% endfor %}",
    r"{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
);

const QWEN2: &str = concat!(
    r"{% for message in messages %}",
    r"{% if loop.first and message['role'] != 'system' %}",
    r"{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}",
    r"{% endif %}",
    r"{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}",
    r"{% endfor %}",
    r"{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
);

const LLAMA2: &str = concat!(
    split_system!(),
    r"{% for message in rest %}",
    alternation_check!(),
    r"{% if message['role'] == 'user' %}",
    r"{{ bos_token + '[INST] ' }}",
    r"{% if loop.first and system is not none %}{{ '<<SYS>>\n' + system.strip() + '\n<</SYS>>\n\n' }}{% endif %}",
    r"{{ message['content'].strip() + ' [/INST]' }}",
    r"{% else %}",
    r"{{ ' ' + message['content'].strip() + ' ' + eos_token }}",
    r"{% endif %}",
    r"{% endfor %}",
);

const MISTRAL: &str = concat!(
    r"{{ bos_token }}",
    split_system!(),
    r"{% for message in rest %}",
    alternation_check!(),
    r"{% if message['role'] == 'user' %}",
    r"{{ '[INST] ' }}{% if loop.first and system is not none %}{{ system + '\n\n' }}{% endif %}",
    r"{{ message['content'] + ' [/INST]' }}",
    r"{% else %}",
    r"{{ message['content'] + eos_token }}",
    r"{% endif %}",
    r"{% endfor %}",
);

const LLAMA3: &str = concat!(
    r"{{ bos_token }}",
    r"{% for message in messages %}",
    r"{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + (message['content'] | trim) + '<|eot_id|>' }}",
    r"{% endfor %}",
    r"{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
);

const GEMMA: &str = concat!(
    r"{{ bos_token }}",
    r"{% if messages and messages[0]['role'] == 'system' %}",
    r"{% set system = messages[0]['content'] | trim %}{% set rest = messages[1:] %}",
    r"{% else %}{% set system = '' %}{% set rest = messages %}{% endif %}",
    r"{% for message in rest %}",
    alternation_check!(),
    r"{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}",
    r"{{ '<start_of_turn>' + role + '\n' }}",
    r"{% if loop.first and system %}{{ system + '\n\n' }}{% endif %}",
    r"{{ (message['content'] | trim) + '<end_of_turn>\n' }}",
    r"{% endfor %}",
    r"{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}",
);

const PHI3: &str = concat!(
    r"{{ bos_token }}",
    r"{% for message in messages %}",
    r"{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}",
    r"{% endfor %}",
    r"{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}",
);

// FastChat 0.2.36 ADD_COLON_TWO: the separator alternates with the message
// index (" " then EOS), an empty message renders as "ROLE:" with no separator,
// and the system prompt is always followed by one space.
const VICUNA: &str = concat!(
    r"{{ bos_token }}",
    r"{% if messages and messages[0]['role'] == 'system' %}",
    r"{% set system = messages[0]['content'] %}{% set rest = messages[1:] %}",
    r"{% else %}",
    r"{% set system = 'A chat between a curious user and an artificial intelligence assistant. ",
    r"The assistant gives helpful, detailed, and polite answers to the user\'s questions.' %}",
    r"{% set rest = messages %}",
    r"{% endif %}",
    r"{{ system + ' ' }}",
    r"{% for message in rest %}",
    r"{% if message['role'] == 'user' %}{% set label = 'USER' %}",
    r"{% elif message['role'] == 'assistant' %}{% set label = 'ASSISTANT' %}",
    r"{% else %}{% set label = message['role'] %}{% endif %}",
    r"{% if message['content'] %}",
    r"{{ label + ': ' + message['content'] }}{% if loop.index0 % 2 == 0 %}{{ ' ' }}{% else %}{{ eos_token }}{% endif %}",
    r"{% else %}{{ label + ':' }}{% endif %}",
    r"{% endfor %}",
    r"{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}",
);

// Axolotl 0.19's alpaca chat template: messages joined by a blank line, a
// leading system message bare, EOS after each response.
const ALPACA: &str = concat!(
    r"{{ bos_token }}",
    r"{% for message in messages %}",
    r"{% if not loop.first %}{{ '\n\n' }}{% endif %}",
    r"{% if message['role'] == 'system' %}{{ message['content'] }}",
    r"{% elif message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] }}",
    r"{% elif message['role'] == 'assistant' %}{{ '### Response:\n' + message['content'] + eos_token }}",
    r"{% else %}{{ raise_exception('alpaca: unsupported role ' + message['role'] + ' (system, user and assistant are supported)') }}",
    r"{% endif %}",
    r"{% endfor %}",
    r"{% if add_generation_prompt %}{{ '\n\n### Response:\n' }}{% endif %}",
);

// Pygmalion: the text Axolotl's per-segment encoding concatenates to.
const PYGMALION: &str = concat!(
    r"{{ bos_token }}",
    r"{% for message in messages %}",
    r"{% if message['role'] == 'system' %}{{ '<|system|>Persona: ' + message['content'].strip() }}",
    r"{% elif message['role'] == 'user' %}{{ '<|user|> ' + message['content'].strip() }}",
    r"{% elif message['role'] == 'assistant' %}{{ '<|model|> ' + message['content'].strip() + eos_token }}",
    r"{% else %}{{ raise_exception('pygmalion: unsupported role ' + message['role']) }}",
    r"{% endif %}",
    r"{% endfor %}",
    r"{% if add_generation_prompt %}{{ '<|model|>' }}{% endif %}",
);

/// Every built-in style.
pub const STYLES: &[Style] = &[
    Style {
        name: "chatml",
        aliases: &[],
        source: CHATML,
        end_of_turn: Some("<|im_end|>"),
        sharegpt_default_system: Some("You are a helpful assistant."),
    },
    Style {
        name: "qwen2",
        aliases: &["qwen", "qwen2.5", "qwen_25"],
        source: QWEN2,
        end_of_turn: Some("<|im_end|>"),
        sharegpt_default_system: None,
    },
    Style {
        name: "llama2",
        aliases: &["llama-2", "llama2_chat", "inst"],
        source: LLAMA2,
        end_of_turn: None,
        sharegpt_default_system: None,
    },
    Style {
        name: "llama3",
        aliases: &["llama-3"],
        source: LLAMA3,
        end_of_turn: Some("<|eot_id|>"),
        sharegpt_default_system: None,
    },
    Style {
        name: "mistral",
        aliases: &["mistral_v1"],
        source: MISTRAL,
        end_of_turn: None,
        sharegpt_default_system: None,
    },
    Style {
        name: "vicuna_v1.1",
        aliases: &["vicuna"],
        source: VICUNA,
        end_of_turn: None,
        sharegpt_default_system: None,
    },
    Style {
        name: "alpaca",
        aliases: &[],
        source: ALPACA,
        end_of_turn: None,
        sharegpt_default_system: None,
    },
    Style {
        name: "gemma",
        aliases: &[],
        source: GEMMA,
        end_of_turn: Some("<end_of_turn>"),
        sharegpt_default_system: None,
    },
    Style {
        name: "phi3",
        aliases: &["phi_3", "phi-3"],
        source: PHI3,
        end_of_turn: Some("<|end|>"),
        sharegpt_default_system: None,
    },
    Style {
        name: "pygmalion",
        aliases: &[],
        source: PYGMALION,
        end_of_turn: None,
        sharegpt_default_system: None,
    },
];

/// Find a style by name or alias.
pub fn find(name: &str) -> Option<&'static Style> {
    STYLES
        .iter()
        .find(|style| style.name == name || style.aliases.contains(&name))
}

/// Names of all styles, for error messages.
pub fn names() -> Vec<&'static str> {
    STYLES.iter().map(|style| style.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::render::{ChatTemplate, TemplateMessage};

    #[test]
    fn every_style_compiles_and_renders() {
        let conversation = [
            TemplateMessage {
                role: "system".into(),
                content: "Be terse.".into(),
            },
            TemplateMessage {
                role: "user".into(),
                content: "What is 2+2?".into(),
            },
            TemplateMessage {
                role: "assistant".into(),
                content: "4.".into(),
            },
        ];
        for style in STYLES {
            let template = ChatTemplate::new(style.name, style.source, "<s>", "</s>").unwrap();
            let text = template.render(&conversation, false).unwrap();
            assert!(
                text.contains("What is 2+2?") && text.contains("4."),
                "{}: {text}",
                style.name
            );
        }
    }

    #[test]
    fn vicuna_matches_fastchat_get_prompt() {
        let template = ChatTemplate::new("vicuna_v1.1", VICUNA, "", "</s>").unwrap();
        let conversation: Vec<TemplateMessage> = [
            ("user", "Hi"),
            ("assistant", "Hello!"),
            ("user", "Bye"),
            ("assistant", "Ciao"),
        ]
        .iter()
        .map(|(role, content)| TemplateMessage {
            role: (*role).into(),
            content: (*content).into(),
        })
        .collect();
        let text = template.render(&conversation, false).unwrap();
        assert_eq!(
            text,
            format!("{VICUNA_SYSTEM} USER: Hi ASSISTANT: Hello!</s>USER: Bye ASSISTANT: Ciao</s>")
        );
    }

    #[test]
    fn alpaca_matches_axolotl() {
        let template = ChatTemplate::new("alpaca", ALPACA, "<s>", "</s>").unwrap();
        let conversation: Vec<TemplateMessage> = [
            ("system", "Be terse."),
            ("user", "What is 2+2?"),
            ("assistant", "4."),
            ("user", "And 3+3?"),
            ("assistant", "6."),
        ]
        .iter()
        .map(|(role, content)| TemplateMessage {
            role: (*role).into(),
            content: (*content).into(),
        })
        .collect();
        assert_eq!(
            template.render(&conversation, false).unwrap(),
            "<s>Be terse.\n\n### Instruction:\nWhat is 2+2?\n\n### Response:\n4.</s>\n\n### Instruction:\nAnd 3+3?\n\n### Response:\n6.</s>"
        );
    }

    #[test]
    fn alternation_is_enforced() {
        let template = ChatTemplate::new("mistral", MISTRAL, "<s>", "</s>").unwrap();
        let conversation = [
            TemplateMessage {
                role: "user".into(),
                content: "a".into(),
            },
            TemplateMessage {
                role: "user".into(),
                content: "b".into(),
            },
        ];
        assert!(template.render(&conversation, false).unwrap_err().contains("alternate"));
    }
}
