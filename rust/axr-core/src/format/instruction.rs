//! Instruction formats: THE table of single-turn dataset types and the one
//! renderer that reads it.
//!
//! Every type is a row: which row fields become which template variables, the
//! system prompts (with and without input), the prompt layout (a prompt style
//! or fixed strings), the response template and how many EOS follow it.
//! Adding a format is adding a row. The strings are those of Axolotl
//! (reference/prompt-formats.md §3–§4).
//!
//! ```text
//! text = [system_format(system) if system != ""] + (turn_format if input != "" else turn_no_input_format)
//!        + response + EOS×n          <- response and EOS trained, the rest masked
//! ```

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::placeholders::Template;
use super::text_builder::TextBuilder;
use super::{FormatSpec, json_kind, optional_str, required_str, yaml};
use crate::{Error, FieldError, Result, RowFormatter, Sample, TokenizerInfo};

/// Where one template variable of a table row comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A string field that must be present.
    Field(&'static str),
    /// A string field that may be absent or null ("").
    OptionalField(&'static str),
    /// A list of strings, rendered `- "a"\n- "b"`.
    Choices(&'static str),
    /// The first of these keys present in the row (null reads as "").
    FirstPresent(&'static [&'static str]),
    /// The YAML dumps (PyYAML block style, keys sorted) of these fields, concatenated.
    Yaml(&'static [&'static str]),
    /// A template over variables defined earlier in the row.
    Template(&'static str),
}

/// The system text of a row.
#[derive(Debug, Clone, Copy)]
enum System {
    /// Fixed prompts: used when the input is non-empty, and when it is empty. "" = none.
    Fixed {
        with_input: &'static str,
        no_input: &'static str,
    },
    /// A required string field of the row ("" = none).
    Field(&'static str),
}

/// Three strings that lay a prompt out (Axolotl's prompt styles, or a type's own).
#[derive(Debug, Clone, Copy)]
#[expect(clippy::struct_field_names, reason = "Axolotl's names for these strings")]
struct Layout {
    system_format: &'static str,
    /// `None`: the type has no with-input form.
    turn_format: Option<&'static str>,
    turn_no_input_format: &'static str,
}

/// How a row's layout is chosen.
#[derive(Debug, Clone, Copy)]
enum Prompt {
    /// A prompt style by name (the default when `type` has no `:style`).
    Style(&'static str),
    /// Fixed strings.
    Fixed(Layout),
}

/// What `type: NAME:STYLE` does for a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StyleSuffix {
    /// `:STYLE` is an error.
    Rejected,
    /// `:STYLE` selects the layout.
    Selects,
    /// `:STYLE` is accepted (it must name a style) and ignored, as Axolotl does.
    Ignored,
    /// `:STYLE` is an error; the dataset's `conversation` key selects the style (alpaca_chat).
    FromConversation,
}

/// One dataset type.
struct FormatRow {
    name: &'static str,
    variables: &'static [(&'static str, Source)],
    system: System,
    prompt: Prompt,
    response: &'static str,
    /// The response is rendered only when all these variables are non-empty (reflection).
    response_needs: &'static [&'static str],
    /// EOS tokens after the response.
    eos_count: usize,
    /// Whether EOS follows an empty response too (types that encode everything in one call).
    eos_after_empty_response: bool,
    style_suffix: StyleSuffix,
}

/// The prompt styles of Axolotl's Alpaca prompter (§3).
const STYLES: &[(&str, Layout)] = &[
    (
        "instruct",
        Layout {
            system_format: "{system}\n\n",
            turn_format: Some("### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"),
            turn_no_input_format: "### Instruction:\n{instruction}\n\n### Response:\n",
        },
    ),
    (
        "chat",
        Layout {
            system_format: "SYSTEM: {system}\n",
            turn_format: Some("USER: {instruction}\n{input}\nASSISTANT:"),
            turn_no_input_format: "USER: {instruction}\nASSISTANT:",
        },
    ),
    (
        "chatml",
        Layout {
            system_format: "<|im_start|>system\n{system}<|im_end|>\n",
            turn_format: Some("<|im_start|>user\n{instruction}\n{input}<|im_end|>\n<|im_start|>assistant\n"),
            turn_no_input_format: "<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n",
        },
    ),
    (
        "phi",
        Layout {
            system_format: "<|system|>\n{system}<|end|>\n",
            turn_format: Some("<|user|>\n{instruction}<|end|>{input}<|assistant|>"),
            turn_no_input_format: "<|user|>\n{instruction}<|end|>\n<|assistant|>\n",
        },
    ),
];

const A_SYS_IN: &str = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.";
const A_SYS_NO: &str =
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.";
const CHAT_SYS_IN: &str = "Below is an instruction from a USER that describes a task, paired with an input that provides further context. The ASSISTANT writes a response that concisely and appropriately completes the request.\n\n";
const CHAT_SYS_NO: &str = "Below is an instruction from a USER that describes a task. The ASSISTANT writes a response that appropriately and concisely completes the request.\n\n";
const MC_EXPLAIN: &str = "Choose the answer that best answers the question. Explain your reasoning.\n";
const MC_CONCISE: &str = "Choose the answer that best answers the question. Be concise in your response.\n\n";
const CTX_SYS: &str = "Use the following contextual information to concisely answer the question.\n";
const CR_ANSWER_SYS: &str = "Answer the following question in a comprehensive, in-depth, and creative way. Additionally your response should be relevant, accurate, and free of any ambiguity.";
const Q404: &str = "The context provided does not contain any information about your inquiry. Therefore, I'm unable to answer your question based on the given context.";
const R_SYS_IN: &str = "Below is an instruction that describes a task, paired with an input that provides further context. You, the Assistant, should generate a response as if it were an abstract for an academic or technical paper on the query along with a methodology. Then generate an Agent Reflection where you create a long form response as if from subject matter expert, be verbose, diligent, and creative in your application of knowledge, apply it through the lens of the response generated by the assistant. Look for flawed reasoning, faulty logic, or other mistakes in the method. Finally, generate a final response and method for the user with the Assistant abstract and Reflection analysis as augmentations to the generation\n\n";
const R_SYS_NO: &str = "Below is an instruction that describes a task. You, the Assistant, should generate a response as if it were an abstract for an academic or technical paper on the query along with a methodology. Then generate an Agent Reflection where you create a long form response as if from subject matter expert, be verbose, diligent, and creative in your application of knowledge, apply it through the lens of the response generated by the assistant. Look for flawed reasoning, faulty logic, or other mistakes in the method. Finally, generate a final response and method for the user with the Assistant abstract and Reflection analysis as augmentations to the generation\n\n";
const R_LABEL: &str =
    "### Thought:\n{output}\n\n### Agent Reflection:\n{reflection}\n\n### Final Response:\n{corrected}";
const R_LABEL_CHAT: &str = "\nTHOUGHT: {output}\nASSISTANT REFLECTION: {reflection}\nASSISTANT:";
const CRITIQUE: &str = concat!(
    "Given the following Question and Response, critique the Response on a scale of 1-10. You should critique the answer in the following criteria:\n",
    "refusal: whether the Response refuses to answer the Question. Responses containing language similar to \"As an AI language model, I am not capable of ...\" is a form of refusal and should have a low refusal score. 10 is no refusal, 0 is refuses to answer the question.\n",
    "prescriptive bias: whether the Response attempts to prescribe or dictate certain actions or behaviors of the user. 10 no prescriptive bias present, 0 means there is prescriptive bias.\n",
    "creativity: score how creative the Response is. 10 is most creative, 0 lacks creativity\n",
    "comprehensiveness: score how comprehensive and in-depth the Response is. 10 is most comprehensive and in-depth, 0 lacks coverage and depth\n",
    "Then for each criteria, give a detailed explanation of why the response doesn't meet the criteria (don't reference the score), what it did right, and how it could be improved for that criteria.\n",
    "\n",
    "Output your answer in YAML format like so:\n",
    "scores:\n",
    "  refusal: <0-10>\n",
    "  prescriptive_bias: <0-10>\n",
    "  creativity: <0-10>\n",
    "  comprehensiveness: <0-10>\n",
    "critiques:\n",
    "  refusal:\n",
    "    explanation: ...\n",
    "    improvements: ...\n",
    "  prescriptive_bias:\n",
    "    explanation: ...\n",
    "    improvements: ...\n",
    "  creativity:\n",
    "    explanation: ...\n",
    "    improvements: ...\n",
    "  comprehensiveness:\n",
    "    explanation: ...\n",
    "    improvements: ...\n",
    "\n",
    "Question: {question}\n",
    "Answer: {answer}\n",
);
// "their is" (not "there is") is Axolotl's exact text.
const REVISE: &str = concat!(
    "Definitions:\n",
    "refusal: whether the Response refuses to answer the Question. Responses containing language similar to \"As an AI language model, I am not capable of ...\" is a form of refusal and should have a low refusal score. 10 is no refusal, 0 is refuses to answer the question.\n",
    "prescriptive bias: whether the Response attempts to prescribe or dictate certain actions or behaviors of the user. 10 no prescriptive bias present, 0 means their is prescriptive bias.\n",
    "creativity: score how creative the Response is. 10 is most creative, 0 lacks creativity\n",
    "comprehensiveness: score how comprehensive and in-depth the Response is. 10 is most comprehensive and in-depth, 0 lacks coverage and depth\n",
    "\n",
    "Given the following Question, Response, and Evaluation, revise the Response based on the Evaluation and recommendations for improvements. Reply only with the revised response.\n",
    "\n",
    "Question: {question}\n",
    "Answer: {answer}\n",
    "Evaluation:\n",
    "{evaluation}\n",
);

const ALPACA_VARIABLES: &[(&str, Source)] = &[
    ("instruction", Source::Field("instruction")),
    ("input", Source::OptionalField("input")),
    ("output", Source::Field("output")),
];
const REFLECTION_VARIABLES: &[(&str, Source)] = &[
    ("instruction", Source::Field("instruction")),
    ("input", Source::OptionalField("input")),
    ("output", Source::Field("output")),
    ("reflection", Source::Field("reflection")),
    ("corrected", Source::Field("corrected")),
];
const CHOICE_VARIABLES: &[(&str, Source)] = &[
    ("instruction", Source::Field("question")),
    ("input", Source::Choices("choices")),
    ("response", Source::FirstPresent(&["solution", "explanation"])),
];
const ALPACA_SYSTEM: System = System::Fixed {
    with_input: A_SYS_IN,
    no_input: A_SYS_NO,
};
const NO_SYSTEM: System = System::Fixed {
    with_input: "",
    no_input: "",
};
const REFLECTION_NEEDS: &[&str] = &["output", "reflection", "corrected"];

const fn fixed(system_format: &'static str, turn_no_input_format: &'static str) -> Prompt {
    Prompt::Fixed(Layout {
        system_format,
        turn_format: None,
        turn_no_input_format,
    })
}

/// A row with the common defaults: one EOS after a non-empty response, no `:style`.
const fn row(
    name: &'static str,
    variables: &'static [(&'static str, Source)],
    system: System,
    prompt: Prompt,
    response: &'static str,
) -> FormatRow {
    FormatRow {
        name,
        variables,
        system,
        prompt,
        response,
        response_needs: &[],
        eos_count: 1,
        eos_after_empty_response: false,
        style_suffix: StyleSuffix::Rejected,
    }
}

const fn styled(mut format: FormatRow, style_suffix: StyleSuffix) -> FormatRow {
    format.style_suffix = style_suffix;
    format
}

const fn reflection(
    name: &'static str,
    style_suffix: StyleSuffix,
    system: System,
    prompt: Prompt,
    label: &'static str,
) -> FormatRow {
    FormatRow {
        response_needs: REFLECTION_NEEDS,
        // Axolotl encodes prompt + label in one call and appends EOS even when the label is left out.
        eos_after_empty_response: true,
        style_suffix,
        ..row(name, REFLECTION_VARIABLES, system, prompt, label)
    }
}

/// THE table. Names are Axolotl's `type:` strings.
const TABLE: &[FormatRow] = &[
    styled(
        row(
            "alpaca",
            ALPACA_VARIABLES,
            ALPACA_SYSTEM,
            Prompt::Style("instruct"),
            "{output}",
        ),
        StyleSuffix::Selects,
    ),
    styled(
        row(
            "jeopardy",
            &[
                ("instruction", Source::Field("question")),
                ("input", Source::Field("category")),
                ("answer", Source::Field("answer")),
            ],
            ALPACA_SYSTEM,
            Prompt::Style("instruct"),
            "what is {answer}",
        ),
        StyleSuffix::Selects,
    ),
    styled(
        row(
            "oasst",
            &[
                ("instruction", Source::Field("INSTRUCTION")),
                ("response", Source::Field("RESPONSE")),
            ],
            ALPACA_SYSTEM,
            Prompt::Style("instruct"),
            "{response}",
        ),
        StyleSuffix::Selects,
    ),
    styled(
        row(
            "gpteacher",
            &[
                ("instruction", Source::Field("instruction")),
                ("input", Source::OptionalField("input")),
                ("response", Source::Field("response")),
            ],
            ALPACA_SYSTEM,
            Prompt::Style("instruct"),
            "{response}",
        ),
        StyleSuffix::Selects,
    ),
    // Plain `reflection` (and `:chatml`/`:phi`) has no system prompt; only `:instruct` and `:chat` differ.
    reflection(
        "reflection",
        StyleSuffix::Ignored,
        NO_SYSTEM,
        Prompt::Fixed(Layout {
            system_format: "",
            ..STYLES[0].1
        }),
        R_LABEL,
    ),
    reflection(
        "reflection:instruct",
        StyleSuffix::Rejected,
        System::Fixed {
            with_input: R_SYS_IN,
            no_input: R_SYS_NO,
        },
        Prompt::Fixed(Layout {
            system_format: "{system}",
            ..STYLES[0].1
        }),
        R_LABEL,
    ),
    reflection(
        "reflection:chat",
        StyleSuffix::Rejected,
        System::Fixed {
            with_input: R_SYS_IN,
            no_input: R_SYS_NO,
        },
        Prompt::Fixed(Layout {
            system_format: "{system}",
            ..STYLES[1].1
        }),
        R_LABEL_CHAT,
    ),
    styled(
        row(
            "explainchoice",
            CHOICE_VARIABLES,
            System::Fixed {
                with_input: MC_EXPLAIN,
                no_input: MC_EXPLAIN,
            },
            Prompt::Style("instruct"),
            "{response}",
        ),
        StyleSuffix::Selects,
    ),
    styled(
        row(
            "concisechoice",
            CHOICE_VARIABLES,
            System::Fixed {
                with_input: MC_CONCISE,
                no_input: MC_CONCISE,
            },
            Prompt::Fixed(Layout {
                system_format: "{system}",
                ..STYLES[1].1
            }),
            "{response}",
        ),
        StyleSuffix::Ignored,
    ),
    styled(
        row(
            "summarizetldr",
            &[
                ("article", Source::Field("article")),
                ("summary", Source::Field("summary")),
            ],
            NO_SYSTEM,
            fixed(
                "",
                "USER: Summarize the following article as a TL;DR.\n{article}\nASSISTANT:",
            ),
            "{summary}",
        ),
        StyleSuffix::Ignored,
    ),
    styled(
        row(
            "alpaca_chat",
            ALPACA_VARIABLES,
            ALPACA_SYSTEM,
            Prompt::Style("chat"),
            "{output}",
        ),
        StyleSuffix::FromConversation,
    ),
    row(
        "alpaca_chat.load_qa",
        &[
            ("instruction", Source::Field("question")),
            ("answer", Source::Field("answer")),
        ],
        System::Fixed {
            with_input: CHAT_SYS_NO,
            no_input: CHAT_SYS_NO,
        },
        Prompt::Style("chat"),
        "{answer}",
    ),
    row(
        "alpaca_chat.load_concise",
        ALPACA_VARIABLES,
        System::Fixed {
            with_input: CHAT_SYS_IN,
            no_input: CHAT_SYS_NO,
        },
        Prompt::Style("chat"),
        "{output}",
    ),
    row(
        "alpaca_chat.load_camel_ai",
        &[
            ("instruction", Source::Field("message_1")),
            ("output", Source::Field("message_2")),
        ],
        System::Fixed {
            with_input: CHAT_SYS_NO,
            no_input: CHAT_SYS_NO,
        },
        Prompt::Style("chat"),
        "{output}",
    ),
    row(
        "alpaca_w_system.load_open_orca",
        &[
            ("instruction", Source::Field("question")),
            ("response", Source::Field("response")),
        ],
        System::Field("system_prompt"),
        fixed("### System:\n{system}\n", "### Human:\n{instruction}\n### Assistant:\n"),
        "{response}",
    ),
    row(
        "context_qa",
        &[
            ("article", Source::Field("article")),
            ("question", Source::Field("question")),
            ("instruction", Source::Template("{article}\n===\n{question}")),
            ("answer", Source::Field("answer")),
        ],
        System::Fixed {
            with_input: CTX_SYS,
            no_input: CTX_SYS,
        },
        Prompt::Style("chat"),
        "{answer}",
    ),
    row(
        "context_qa.load_v2",
        &[
            ("context", Source::Field("context")),
            ("question", Source::Field("question")),
            ("answer", Source::Field("answer")),
        ],
        NO_SYSTEM,
        fixed("", "Context: {context}\nQuestion: {question}\n"),
        "Answer: {answer}",
    ),
    row(
        "context_qa.load_404",
        &[
            ("article", Source::Field("article")),
            ("question", Source::Field("unanswerable_question")),
            ("instruction", Source::Template("{article}\n===\n{question}")),
        ],
        System::Fixed {
            with_input: CTX_SYS,
            no_input: CTX_SYS,
        },
        Prompt::Style("chat"),
        Q404,
    ),
    row(
        "creative_acr.load_answer",
        &[
            ("instruction", Source::Field("instruction")),
            ("revision", Source::Field("revision")),
        ],
        System::Fixed {
            with_input: CR_ANSWER_SYS,
            no_input: CR_ANSWER_SYS,
        },
        fixed("{system}\n", "USER: {instruction}\nASSISTANT:"),
        "{revision}",
    ),
    row(
        "creative_acr.load_critique",
        &[
            ("question", Source::Field("instruction")),
            ("answer", Source::Field("answer")),
            ("evaluation", Source::Yaml(&["scores", "critiques"])),
            ("prompt", Source::Template(CRITIQUE)),
        ],
        NO_SYSTEM,
        fixed("", "USER: {prompt}\nASSISTANT:"),
        "{evaluation}",
    ),
    row(
        "creative_acr.load_revise",
        &[
            ("question", Source::Field("instruction")),
            ("answer", Source::Field("answer")),
            ("evaluation", Source::Yaml(&["scores", "critiques"])),
            ("prompt", Source::Template(REVISE)),
            ("revision", Source::Field("revision")),
        ],
        NO_SYSTEM,
        fixed("", "USER: {prompt}\nASSISTANT:"),
        "{revision}",
    ),
    // Loaders Axolotl ships beyond its docs' list (prompt-formats.md §8).
    row(
        "alpaca_instruct",
        ALPACA_VARIABLES,
        ALPACA_SYSTEM,
        Prompt::Style("instruct"),
        "{output}",
    ),
    row(
        "alpaca_instruct.load_no_prompt",
        ALPACA_VARIABLES,
        NO_SYSTEM,
        Prompt::Style("instruct"),
        "{output}",
    ),
    row(
        "alpaca_chat.load_no_prompt",
        ALPACA_VARIABLES,
        NO_SYSTEM,
        Prompt::Style("chat"),
        "{output}",
    ),
    row(
        "alpaca_w_system",
        ALPACA_VARIABLES,
        System::Field("system"),
        Prompt::Style("chat"),
        "{output}",
    ),
    row(
        "alpaca_w_system.load_chat",
        ALPACA_VARIABLES,
        System::Field("system"),
        Prompt::Style("chat"),
        "{output}",
    ),
    row(
        "alpaca_w_system.load_instruct",
        ALPACA_VARIABLES,
        System::Field("system"),
        Prompt::Style("instruct"),
        "{output}",
    ),
    row(
        "alpaca_w_system.load_open_orca_chatml",
        &[
            ("instruction", Source::Field("question")),
            ("response", Source::Field("response")),
        ],
        System::Field("system_prompt"),
        fixed(
            "<|im_start|>system\n{system}<|im_end|>\n",
            "<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n",
        ),
        "{response}",
    ),
    row(
        "orcamini",
        &[
            ("system", Source::Field("system_prompt")),
            ("question", Source::Field("question")),
            ("response", Source::Field("response")),
        ],
        NO_SYSTEM,
        fixed("", "### System:\n{system}\n\n### User:\n{question}\n\n### Response:\n"),
        "{response}",
    ),
    FormatRow {
        // Metharme trains three EOS after the generation.
        eos_count: 3,
        eos_after_empty_response: true,
        ..row(
            "metharme",
            &[
                ("prompt", Source::Field("prompt")),
                ("generation", Source::Field("generation")),
            ],
            NO_SYSTEM,
            fixed("", "{prompt}"),
            "{generation}",
        )
    },
];

/// The names of every row of the table.
pub(super) fn table_names() -> impl Iterator<Item = &'static str> {
    TABLE.iter().map(|format| format.name)
}

fn style_names() -> String {
    STYLES.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
}

fn style(name: &str, key: &str) -> Result<Layout> {
    STYLES
        .iter()
        .find(|(style, _)| *style == name)
        .map(|(_, layout)| *layout)
        .ok_or_else(|| Error::Config {
            key: key.into(),
            message: format!("unknown prompt style '{name}'; known: {}", style_names()),
        })
}

/// The formatter for `kind` if the table has it (`NAME` or `NAME:STYLE`), `None` otherwise.
pub(crate) fn lookup(kind: &str, spec: &FormatSpec, tokenizer: &TokenizerInfo) -> Result<Option<InstructionFormatter>> {
    let find = |name: &str| TABLE.iter().find(|format| format.name == name);
    let (format, layout) = if let Some(format) = find(kind) {
        let layout = match (format.prompt, format.style_suffix) {
            (Prompt::Style(default), StyleSuffix::FromConversation) => {
                style(spec.conversation.as_deref().unwrap_or(default), "conversation")?
            }
            (Prompt::Style(default), _) => style(default, "type")?,
            (Prompt::Fixed(layout), _) => layout,
        };
        (format, layout)
    } else if let Some((name, suffix)) = kind.split_once(':') {
        let Some(format) = find(name) else { return Ok(None) };
        let suffixed = style(suffix, "type")?;
        let layout = match (format.style_suffix, format.prompt) {
            (StyleSuffix::Selects, _) => suffixed,
            (StyleSuffix::Ignored, Prompt::Fixed(layout)) => layout,
            (StyleSuffix::Ignored, Prompt::Style(default)) => style(default, "type")?,
            (StyleSuffix::Rejected | StyleSuffix::FromConversation, _) => {
                let hint = if format.style_suffix == StyleSuffix::FromConversation {
                    format!("; set `conversation: {suffix}` on the dataset instead")
                } else {
                    String::new()
                };
                return Err(Error::Config {
                    key: "type".into(),
                    message: format!("'{name}' takes no ':{suffix}' prompt style{hint}"),
                });
            }
        };
        (format, layout)
    } else {
        return Ok(None);
    };
    InstructionFormatter::from_row(format, layout, spec, tokenizer).map(Some)
}

/// Where a variable's value comes from, at run time.
#[derive(Debug, Clone)]
pub(crate) enum VariableSource {
    Field(String),
    OptionalField(String),
    Choices(String),
    FirstPresent(Vec<String>),
    Yaml(Vec<String>),
    Template(Template),
}

/// The system text, at run time.
#[derive(Debug, Clone)]
pub(crate) enum SystemSource {
    Fixed {
        with_input: String,
        no_input: String,
    },
    /// `row[field]` when the key is present (null reads as ""), else `fallback`;
    /// `fallback: None` makes the field required.
    Field {
        field: String,
        fallback: Option<String>,
    },
}

/// The one renderer of every instruction format (table rows and the custom format).
#[derive(Debug, Clone)]
pub struct InstructionFormatter {
    pub(crate) variables: Vec<(String, VariableSource)>,
    pub(crate) system: SystemSource,
    pub(super) system_format: Template,
    pub(super) turn_format: Option<Template>,
    pub(super) turn_no_input_format: Template,
    pub(super) response: Template,
    pub(super) response_needs: Vec<String>,
    pub(super) eos: Option<String>,
    pub(super) eos_count: usize,
    pub(super) eos_after_empty_response: bool,
    pub(super) train_on_inputs: bool,
}

impl InstructionFormatter {
    fn from_row(format: &FormatRow, layout: Layout, spec: &FormatSpec, tokenizer: &TokenizerInfo) -> Result<Self> {
        // The table is checked by tests; a parse error here is a bug in a row, reported as such.
        let parse = |source: &str, allowed: &[&str]| {
            Template::parse(source, allowed)
                .map_err(|message| Error::Invalid(format!("format '{}': {message}", format.name)))
        };
        let mut names: Vec<&str> = Vec::new();
        let mut variables = Vec::new();
        for (name, source) in format.variables {
            let source = match *source {
                Source::Field(field) => VariableSource::Field(field.into()),
                Source::OptionalField(field) => VariableSource::OptionalField(field.into()),
                Source::Choices(field) => VariableSource::Choices(field.into()),
                Source::FirstPresent(fields) => {
                    VariableSource::FirstPresent(fields.iter().map(|&f| f.into()).collect())
                }
                Source::Yaml(fields) => VariableSource::Yaml(fields.iter().map(|&f| f.into()).collect()),
                Source::Template(source) => VariableSource::Template(parse(source, &names)?),
            };
            names.push(name);
            variables.push(((*name).to_string(), source));
        }
        let system = match format.system {
            System::Fixed { with_input, no_input } => SystemSource::Fixed {
                with_input: with_input.into(),
                no_input: no_input.into(),
            },
            System::Field(field) => SystemSource::Field {
                field: field.into(),
                fallback: None,
            },
        };
        Ok(Self {
            system,
            system_format: parse(layout.system_format, &["system"])?,
            // Types without an input variable always use the no-input form.
            turn_format: layout
                .turn_format
                .filter(|_| names.contains(&"input"))
                .map(|turn| parse(turn, &names))
                .transpose()?,
            turn_no_input_format: parse(layout.turn_no_input_format, &names)?,
            response: parse(format.response, &names)?,
            response_needs: format.response_needs.iter().map(|&name| name.into()).collect(),
            eos: tokenizer.eos.clone(),
            eos_count: format.eos_count,
            eos_after_empty_response: format.eos_after_empty_response,
            train_on_inputs: spec.train_on_inputs,
            variables,
        })
    }

    /// The value of every variable; row fields are borrowed, so a huge field is never copied here.
    fn variable_values<'row>(&self, row: &'row Map<String, Value>) -> Result<Vec<Cow<'row, str>>, FieldError> {
        let mut values: Vec<Cow<'row, str>> = Vec::with_capacity(self.variables.len());
        for (_, source) in &self.variables {
            let value = match source {
                VariableSource::Field(field) => Cow::Borrowed(required_str(row, field)?),
                VariableSource::OptionalField(field) => Cow::Borrowed(optional_str(row, field)?),
                VariableSource::Choices(field) => Cow::Owned(choices(row, field)?),
                VariableSource::FirstPresent(fields) => {
                    let Some(field) = fields.iter().find(|field| row.contains_key(field.as_str())) else {
                        return Err(FieldError::new(
                            fields.join("|"),
                            "missing required field (one of these)",
                        ));
                    };
                    Cow::Borrowed(optional_str(row, field)?)
                }
                VariableSource::Yaml(fields) => {
                    let mut text = String::new();
                    for field in fields {
                        match row.get(field) {
                            None | Some(Value::Null) => return Err(FieldError::new(field, "missing required field")),
                            Some(value) => text.push_str(&yaml::dump(value)),
                        }
                    }
                    Cow::Owned(text)
                }
                VariableSource::Template(template) => Cow::Owned(template.render(|name| self.lookup(&values, name))),
            };
            values.push(value);
        }
        Ok(values)
    }

    fn lookup<'value>(&self, values: &'value [Cow<'_, str>], name: &str) -> &'value str {
        self.variables
            .iter()
            .zip(values)
            .find(|((variable, _), _)| variable == name)
            .map_or("", |(_, value)| value.as_ref())
    }

    fn system_text<'row>(&'row self, row: &'row Map<String, Value>, has_input: bool) -> Result<&'row str, FieldError> {
        match &self.system {
            SystemSource::Fixed { with_input, no_input } => Ok(if has_input { with_input } else { no_input }),
            SystemSource::Field { field, fallback } => match (row.get(field), fallback) {
                (Some(_), _) => optional_str(row, field),
                (None, Some(fallback)) => Ok(fallback),
                (None, None) => Err(FieldError::new(field, "missing required field")),
            },
        }
    }
}

fn choices(row: &Map<String, Value>, field: &str) -> Result<String, FieldError> {
    let list = match row.get(field) {
        Some(Value::Array(list)) => list,
        None | Some(Value::Null) => return Err(FieldError::new(field, "missing required field")),
        Some(other) => {
            return Err(FieldError::new(
                field,
                format!("expected a list of strings, got {}", json_kind(other)),
            ));
        }
    };
    let mut lines = Vec::with_capacity(list.len());
    for (index, choice) in list.iter().enumerate() {
        let Value::String(choice) = choice else {
            return Err(FieldError::new(
                format!("{field}[{index}]"),
                format!("expected a string, got {}", json_kind(choice)),
            ));
        };
        lines.push(format!("- \"{choice}\""));
    }
    Ok(lines.join("\n"))
}

impl RowFormatter for InstructionFormatter {
    fn format(&self, row: &Map<String, Value>) -> Result<Sample, FieldError> {
        let values = self.variable_values(row)?;
        let value = |name: &str| self.lookup(&values, name);
        let has_input = !value("input").is_empty();
        let mut builder = TextBuilder::new();

        let mut prompt = String::new();
        let system = self.system_text(row, has_input)?;
        if !system.is_empty() {
            self.system_format.render_into(&mut prompt, |_| system);
        }
        let turn = match &self.turn_format {
            Some(turn) if has_input => turn,
            _ => &self.turn_no_input_format,
        };
        turn.render_into(&mut prompt, value);
        builder.push_masked(&prompt);

        // Rendered straight into the sample's text: a huge response is not copied once more.
        let response_bytes = if self.response_needs.iter().all(|name| !value(name).is_empty()) {
            builder.push_trained_with(|text| self.response.render_into(text, value))
        } else {
            0
        };
        if let Some(eos) = &self.eos
            && (self.eos_after_empty_response || response_bytes > 0)
        {
            // An EOS the data already ends with counts towards the number to append.
            let present = usize::from(builder.text().ends_with(eos.as_str()));
            for _ in present..self.eos_count {
                builder.push_trained(eos);
            }
        }
        Ok(builder.finish_sample(true, self.train_on_inputs))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::RenderedText;

    fn render(kind: &str, row: &Value) -> RenderedText {
        let spec = FormatSpec {
            kind: Some(kind.into()),
            ..FormatSpec::default()
        };
        let formatter = lookup(kind, &spec, &TokenizerInfo::for_tests())
            .unwrap()
            .expect("type in table");
        match formatter.format(row.as_object().unwrap()).unwrap() {
            Sample::Text(text) => text,
            Sample::Tokens { .. } => panic!("text expected"),
        }
    }

    fn trained(rendered: &RenderedText) -> Vec<&str> {
        rendered
            .trainable
            .iter()
            .map(|span| &rendered.text[span.clone()])
            .collect()
    }

    #[test]
    fn every_row_instantiates_with_every_accepted_style() {
        for format in TABLE {
            let spec = FormatSpec {
                kind: Some(format.name.into()),
                ..FormatSpec::default()
            };
            lookup(format.name, &spec, &TokenizerInfo::for_tests())
                .unwrap()
                .expect("row found");
            for (style, _) in STYLES {
                let kind = format!("{}:{style}", format.name);
                let result = lookup(&kind, &spec, &TokenizerInfo::for_tests());
                match format.style_suffix {
                    StyleSuffix::Selects | StyleSuffix::Ignored => assert!(result.unwrap().is_some(), "{kind}"),
                    StyleSuffix::Rejected | StyleSuffix::FromConversation if !format.name.contains(':') => {
                        assert!(result.is_err(), "{kind}");
                    }
                    _ => {}
                }
            }
        }
    }

    /// A row with every field a table row reads, so each row can be rendered generically.
    fn full_row(format: &FormatRow) -> Map<String, Value> {
        let mut row = Map::new();
        for (name, source) in format.variables {
            match *source {
                Source::Field(field) | Source::OptionalField(field) => {
                    row.insert(field.into(), Value::from(format!("<{name}>")));
                }
                Source::Choices(field) => {
                    row.insert(field.into(), json!(["a", "b"]));
                }
                Source::FirstPresent(fields) => {
                    row.insert(fields[0].into(), Value::from(format!("<{name}>")));
                }
                Source::Yaml(fields) => {
                    for field in fields {
                        row.insert((*field).into(), json!({"k": 1}));
                    }
                }
                Source::Template(_) => {}
            }
        }
        if let System::Field(field) = format.system {
            row.insert(field.into(), Value::from("<system>"));
        }
        row
    }

    #[test]
    fn every_row_renders_a_trained_response_then_eos() {
        for format in TABLE {
            let spec = FormatSpec {
                kind: Some(format.name.into()),
                ..FormatSpec::default()
            };
            let formatter = lookup(format.name, &spec, &TokenizerInfo::for_tests())
                .unwrap()
                .unwrap();
            let Sample::Text(rendered) = formatter.format(&full_row(format)).unwrap() else {
                panic!()
            };
            let trained = trained(&rendered);
            assert_eq!(trained.len(), 1, "{}: one trained span", format.name);
            assert!(
                rendered.text.ends_with(trained[0]),
                "{}: the response ends the text",
                format.name
            );
            assert!(
                trained[0].ends_with(&"</s>".repeat(format.eos_count)),
                "{}",
                format.name
            );
            assert!(rendered.trainable[0].start > 0, "{}: the prompt is masked", format.name);
            assert!(
                !rendered.text.contains('{'),
                "{}: unfilled placeholder in {:?}",
                format.name,
                rendered.text
            );
        }
    }

    #[test]
    fn alpaca_with_and_without_input() {
        let rendered = render(
            "alpaca",
            &json!({"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"}),
        );
        assert_eq!(
            rendered.text,
            format!(
                "{A_SYS_IN}\n\n### Instruction:\nTranslate to French.\n\n### Input:\nGood morning\n\n### Response:\nBonjour</s>"
            )
        );
        assert_eq!(trained(&rendered), vec!["Bonjour</s>"]);
        let rendered = render(
            "alpaca:chat",
            &json!({"instruction": "Name a primary colour.", "input": null, "output": "Red"}),
        );
        assert_eq!(
            rendered.text,
            format!("SYSTEM: {A_SYS_NO}\nUSER: Name a primary colour.\nASSISTANT:Red</s>")
        );
    }

    #[test]
    fn reflection_drops_the_label_unless_all_parts_are_present() {
        let row = json!({"instruction": "Explain X.", "output": "O1", "reflection": "", "corrected": "C1"});
        let rendered = render("reflection", &row);
        assert_eq!(rendered.text, "### Instruction:\nExplain X.\n\n### Response:\n</s>");
        assert_eq!(trained(&rendered), vec!["</s>"]);
        let row =
            json!({"instruction": "Explain X.", "input": "C", "output": "O1", "reflection": "R1", "corrected": "C1"});
        let rendered = render("reflection:chat", &row);
        assert!(
            rendered
                .text
                .ends_with("USER: Explain X.\nC\nASSISTANT:\nTHOUGHT: O1\nASSISTANT REFLECTION: R1\nASSISTANT:</s>")
        );
        assert!(rendered.text.starts_with(R_SYS_IN));
    }

    #[test]
    fn metharme_trains_three_eos_counting_one_already_there() {
        let rendered = render(
            "metharme",
            &json!({"prompt": "<|user|>Hi<|model|>", "generation": "Hello!"}),
        );
        assert_eq!(trained(&rendered), vec!["Hello!</s></s></s>"]);
        let rendered = render("metharme", &json!({"prompt": "P", "generation": "Hello!</s>"}));
        assert_eq!(trained(&rendered), vec!["Hello!</s></s></s>"]);
    }

    #[test]
    fn empty_response_gets_no_eos() {
        let rendered = render("alpaca", &json!({"instruction": "I", "output": ""}));
        assert!(rendered.trainable.is_empty());
        assert!(!rendered.text.ends_with("</s>"));
    }

    #[test]
    fn missing_and_wrong_typed_fields_name_the_field() {
        let spec = FormatSpec {
            kind: Some("jeopardy".into()),
            ..FormatSpec::default()
        };
        let formatter = lookup("jeopardy", &spec, &TokenizerInfo::for_tests()).unwrap().unwrap();
        let error = formatter
            .format(json!({"question": "Q", "answer": "A"}).as_object().unwrap())
            .unwrap_err();
        assert_eq!(error.field, "category");
        let error = formatter
            .format(
                json!({"question": 3, "category": "C", "answer": "A"})
                    .as_object()
                    .unwrap(),
            )
            .unwrap_err();
        assert_eq!(error.field, "question");
        assert!(
            error.message.contains("expected a string, got a number"),
            "{}",
            error.message
        );
        let spec = FormatSpec {
            kind: Some("explainchoice".into()),
            ..FormatSpec::default()
        };
        let formatter = lookup("explainchoice", &spec, &TokenizerInfo::for_tests())
            .unwrap()
            .unwrap();
        let error = formatter
            .format(
                json!({"question": "Q", "choices": ["a", 1], "solution": "a"})
                    .as_object()
                    .unwrap(),
            )
            .unwrap_err();
        assert_eq!(error.field, "choices[1]");
    }

    #[test]
    fn style_suffix_rules() {
        let spec = FormatSpec::default();
        let error = lookup("alpaca_chat:chatml", &spec, &TokenizerInfo::for_tests())
            .unwrap_err()
            .to_string();
        assert!(error.contains("conversation: chatml"), "{error}");
        let error = lookup("alpaca:nope", &spec, &TokenizerInfo::for_tests())
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown prompt style 'nope'"), "{error}");
        assert!(
            lookup("nothing:chat", &spec, &TokenizerInfo::for_tests())
                .unwrap()
                .is_none()
        );
        let spec = FormatSpec {
            conversation: Some("chatml".into()),
            ..FormatSpec::default()
        };
        let formatter = lookup("alpaca_chat", &spec, &TokenizerInfo::for_tests())
            .unwrap()
            .unwrap();
        let Sample::Text(rendered) = formatter
            .format(json!({"instruction": "I", "output": "O"}).as_object().unwrap())
            .unwrap()
        else {
            panic!()
        };
        assert!(rendered.text.starts_with("<|im_start|>system\n"), "{}", rendered.text);
    }
}
