//! The data doctor: problems in rows that train silently but wrongly, found on every row in the
//! same pass as tokenization (no second read of the inputs) and stored in each store's
//! `meta.json`, where `axr inspect --doctor` and the preprocess summary read them.
//!
//! Findings, each counted over the whole corpus with the first few locations (`file:line`):
//! - `no_trainable_tokens`: rows dropped because nothing in them is trained;
//! - `double_bos` / `missing_bos`: ids that start with two BOS, or without the BOS the tokenizer
//!   adds to plain text (a chat template that does not write it);
//! - `end_of_turn_not_trained`: a conversation whose end-of-turn text `train_on_eos` says to train
//!   is absent, untrained, or cut off by truncation;
//! - `special_tokens_in_text`: a string field of the row (any dataset type) holding a special
//!   token's text, which tokenizes as that control token;
//! - `template_prompt_mismatch`: on the first rows of each conversation dataset, the token ids of
//!   the generation prompt (`add_generation_prompt=True` on the messages before the last answer)
//!   are not a prefix of the training ids, so inference prompts differ from training.

mod sources;

use std::collections::BTreeMap;
use std::ops::Range;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::chat::RenderedTurn;
use crate::pipeline::PipelineTokenizer;
use crate::spec::TrainOnEos;
use crate::{RenderedText, Sample};

pub use sources::{SOURCES_FILE, SampleSource, SourceWriter, SourcesReader};

/// Locations kept per finding.
pub const EXAMPLES: usize = 5;
/// Rows of each conversation dataset whose generation prompt is checked.
pub const TEMPLATE_SAMPLE: u64 = 32;

/// Names of the findings, in report order.
pub const FINDINGS: [&str; 6] = [
    NO_TRAINABLE_TOKENS,
    DOUBLE_BOS,
    MISSING_BOS,
    END_OF_TURN_NOT_TRAINED,
    SPECIAL_TOKENS_IN_TEXT,
    TEMPLATE_PROMPT_MISMATCH,
];
const NO_TRAINABLE_TOKENS: &str = "no_trainable_tokens";
const DOUBLE_BOS: &str = "double_bos";
const MISSING_BOS: &str = "missing_bos";
const END_OF_TURN_NOT_TRAINED: &str = "end_of_turn_not_trained";
const SPECIAL_TOKENS_IN_TEXT: &str = "special_tokens_in_text";
const TEMPLATE_PROMPT_MISMATCH: &str = "template_prompt_mismatch";

/// How many rows show a problem, and where the first of them are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// Rows showing it, over the whole run.
    pub count: u64,
    /// `file:line` of the first [`EXAMPLES`] rows.
    pub examples: Vec<String>,
}

/// The doctor's report of one preprocessing run (`meta.json` → `doctor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoctorReport {
    /// Samples examined: every sample kept.
    pub rows: u64,
    /// Conversations whose generation prompt was compared with the training ids.
    pub template_checked: u64,
    /// Sampled conversations with no answer at the end to compare a prompt with.
    pub template_skipped: u64,
    /// Finding name → count and examples.
    pub findings: BTreeMap<String, Finding>,
}

impl Default for DoctorReport {
    fn default() -> Self {
        Self {
            rows: 0,
            template_checked: 0,
            template_skipped: 0,
            findings: FINDINGS
                .iter()
                .map(|name| ((*name).to_owned(), Finding::default()))
                .collect(),
        }
    }
}

impl DoctorReport {
    fn add(&mut self, name: &str, location: impl FnOnce() -> String) {
        // A corpus may hold a finding on every row: no key is allocated once it is there.
        if let Some(finding) = self.findings.get_mut(name) {
            finding.count += 1;
            if finding.examples.len() < EXAMPLES {
                finding.examples.push(location());
            }
            return;
        }
        self.findings.insert(
            name.to_owned(),
            Finding {
                count: 1,
                examples: vec![location()],
            },
        );
    }

    /// Count a row dropped for having no trained token.
    pub fn untrained(&mut self, location: impl FnOnce() -> String) {
        self.add(NO_TRAINABLE_TOKENS, location);
    }

    /// Count the findings of one kept sample.
    pub fn record(&mut self, found: &RowFindings, location: impl Fn() -> String) {
        self.rows += 1;
        if found.double_bos {
            self.add(DOUBLE_BOS, &location);
        }
        if found.missing_bos {
            self.add(MISSING_BOS, &location);
        }
        if found.end_of_turn_not_trained {
            self.add(END_OF_TURN_NOT_TRAINED, &location);
        }
        if found.special_token.is_some() {
            self.add(SPECIAL_TOKENS_IN_TEXT, &location);
        }
    }

    /// Count the outcome of one generation-prompt check (`None`: nothing to compare).
    pub fn template(&mut self, matches: Option<bool>, location: impl FnOnce() -> String) {
        match matches {
            None => self.template_skipped += 1,
            Some(matches) => {
                self.template_checked += 1;
                if !matches {
                    self.add(TEMPLATE_PROMPT_MISMATCH, location);
                }
            }
        }
    }
}

/// A row's generation prompt, for the template check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenerationPrompt {
    /// The dataset's format has no conversation (nothing of it is checked).
    NotAConversation,
    /// A conversation that does not end with an answer to generate (counted as skipped).
    NoFinalAnswer,
    /// The prompt text before the final answer.
    Text(String),
}

/// Counts the findings of a run in input order, on the thread that writes the store, so the
/// examples are the first rows whatever the worker threads' timing.
pub struct Tally {
    report: DoctorReport,
    /// Per dataset: rows whose generation prompt was rendered (at most [`TEMPLATE_SAMPLE`]).
    prompts: Vec<u64>,
    /// In a part of a sharded run: the template checks' outcomes per dataset, kept apart from
    /// the report because a single run checks the first rows of the whole dataset, which only the
    /// merge of the parts knows.
    templates: Option<Vec<Vec<TemplateOutcome>>>,
}

/// One generation-prompt check of a part of a sharded run (`matches`: as [`DoctorReport::template`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateOutcome {
    /// `None`: no answer to compare; otherwise whether the prompt is a prefix of the ids.
    pub matches: Option<bool>,
    /// Where the row is, as the tally's location closure gave it.
    pub location: String,
}

impl Tally {
    /// A tally for a run over `datasets` datasets.
    pub fn new(datasets: usize) -> Self {
        Self {
            report: DoctorReport::default(),
            prompts: vec![0; datasets],
            templates: None,
        }
    }

    /// A tally for a part of a sharded run: template checks are kept as outcomes (see
    /// [`Self::finish_part`]) rather than counted.
    pub fn for_part(datasets: usize) -> Self {
        Self {
            templates: Some(vec![Vec::new(); datasets]),
            ..Self::new(datasets)
        }
    }

    fn template(&mut self, dataset: usize, matches: Option<bool>, location: impl FnOnce() -> String) {
        match &mut self.templates {
            Some(templates) => templates[dataset].push(TemplateOutcome {
                matches,
                location: location(),
            }),
            None => self.report.template(matches, location),
        }
    }

    /// Count one kept sample of `dataset` (`sample`: its stored ids and whether they were
    /// truncated); `prompt` renders its generation prompt, asked only of a dataset's first rows.
    pub fn kept(
        &mut self,
        dataset: usize,
        found: &RowFindings,
        (input_ids, truncated): (&[u32], bool),
        prompt: impl FnOnce() -> GenerationPrompt,
        tokenizer: &dyn PipelineTokenizer,
        location: impl Fn() -> String,
    ) {
        self.report.record(found, &location);
        if self.prompts[dataset] >= TEMPLATE_SAMPLE {
            return;
        }
        match prompt() {
            // Not a conversation format: nothing of this dataset to check.
            GenerationPrompt::NotAConversation => self.prompts[dataset] = TEMPLATE_SAMPLE,
            GenerationPrompt::NoFinalAnswer => {
                self.prompts[dataset] += 1;
                self.template(dataset, None, location);
            }
            GenerationPrompt::Text(text) => {
                self.prompts[dataset] += 1;
                let matches = prompt_is_prefix(&text, input_ids, truncated, tokenizer);
                self.template(dataset, matches, location);
            }
        }
    }

    /// Count a row dropped for having no trained token.
    pub fn untrained(&mut self, location: impl FnOnce() -> String) {
        self.report.untrained(location);
    }

    /// The report of the run.
    pub fn finish(self) -> DoctorReport {
        self.report
    }

    /// The report of a part, and its template outcomes per dataset (empty for a whole run).
    pub fn finish_part(self) -> (DoctorReport, Vec<Vec<TemplateOutcome>>) {
        (self.report, self.templates.unwrap_or_default())
    }
}

/// What the doctor found in one row (computed on the worker threads).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowFindings {
    /// The ids start with two BOS.
    pub double_bos: bool,
    /// The ids lack the BOS the tokenizer adds to plain text.
    pub missing_bos: bool,
    /// An end-of-turn text to train is absent, untrained or truncated away.
    pub end_of_turn_not_trained: bool,
    /// The first field holding a special token's text, and that text.
    pub special_token: Option<(String, String)>,
}

/// The turns of a rendered conversation as the doctor needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationView {
    /// Whether an end-of-turn text that `train_on_eos` asks to train is absent or not trained.
    pub end_of_turn_missing: bool,
    /// The last end-of-turn text that must be trained (to check truncation did not cut it).
    pub last_expected_end: Option<Range<usize>>,
}

impl ConversationView {
    /// What `train_on_eos` expects of `turns`: after each trained turn (`turn`), after each
    /// trained turn and every turn that has one (`all`), the last one of the conversation (`last`).
    pub fn new(turns: &[RenderedTurn], train_on_eos: TrainOnEos) -> Self {
        let with_end: Vec<usize> = (0..turns.len())
            .filter(|&index| turns[index].end_of_turn.is_some())
            .collect();
        let expected: Vec<usize> = match train_on_eos {
            TrainOnEos::Turn => (0..turns.len()).filter(|&index| turns[index].trained).collect(),
            TrainOnEos::All => (0..turns.len())
                .filter(|&index| turns[index].trained || turns[index].end_of_turn.is_some())
                .collect(),
            TrainOnEos::Last => match with_end.last() {
                Some(&last) => vec![last],
                None => {
                    return Self {
                        end_of_turn_missing: !turns.is_empty(),
                        last_expected_end: None,
                    };
                }
            },
            TrainOnEos::None => Vec::new(),
        };
        let end_of_turn_missing = expected
            .iter()
            .any(|&index| turns[index].end_of_turn.is_none() || !turns[index].end_of_turn_trained);
        Self {
            end_of_turn_missing,
            last_expected_end: expected
                .iter()
                .filter_map(|&index| turns[index].end_of_turn.clone())
                .max_by_key(|range| range.start),
        }
    }
}

/// The per-row checks, built once per run from the tokenizer; shared by the worker threads.
pub struct Doctor {
    bos_id: Option<u32>,
    adds_bos: bool,
    specials: Option<Regex>,
}

impl Doctor {
    /// Learn the tokenizer's BOS and special-token texts.
    pub fn new(tokenizer: &dyn PipelineTokenizer) -> Self {
        let plain = |text: &str, add_special_tokens: bool| {
            tokenizer
                .encode(&Sample::Text(RenderedText {
                    text: text.to_owned(),
                    trainable: Vec::new(),
                    add_special_tokens,
                }))
                .map(|encoded| encoded.input_ids)
                .unwrap_or_default()
        };
        let bos_id = tokenizer.bos_text().and_then(|bos| match plain(&bos, false)[..] {
            [id] => Some(id),
            _ => None,
        });
        let adds_bos = bos_id.is_some() && plain("a", true).first() == bos_id.as_ref();
        let mut texts: Vec<String> = tokenizer
            .special_texts()
            .into_iter()
            .filter(|text| !text.is_empty())
            .collect();
        // Longest first, so `<|im_start|>` is named rather than a shorter special inside it.
        texts.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        texts.dedup();
        let specials = (!texts.is_empty()).then(|| {
            let pattern = texts
                .iter()
                .map(|text| regex::escape(text))
                .collect::<Vec<_>>()
                .join("|");
            Regex::new(&pattern).expect("escaped literals form a valid pattern")
        });
        Self {
            bos_id,
            adds_bos,
            specials,
        }
    }

    /// The first string field of `row` (in key order, nested fields as `a[0].b`) holding a
    /// special token's text, and that text.
    pub fn special_token_in(&self, row: &Map<String, Value>) -> Option<(String, String)> {
        let specials = self.specials.as_ref()?;
        find_in_row(specials, row)
    }

    /// Examine one kept sample: `input_ids` as stored, `untruncated_len` the ids before the length
    /// policy, `rendered` the text it was tokenized from (with `view` for a conversation).
    pub fn examine(
        &self,
        input_ids: &[u32],
        truncated: bool,
        rendered: Option<(&RenderedText, &ConversationView)>,
        tokenizer: &dyn PipelineTokenizer,
    ) -> RowFindings {
        let mut found = RowFindings::default();
        if let Some(bos) = self.bos_id {
            if input_ids.len() >= 2 && input_ids[0] == bos && input_ids[1] == bos {
                found.double_bos = true;
            } else if self.adds_bos && input_ids.first() != Some(&bos) {
                found.missing_bos = true;
            }
        }
        if let Some((text, view)) = rendered {
            found.end_of_turn_not_trained = view.end_of_turn_missing
                || (truncated
                    && view
                        .last_expected_end
                        .as_ref()
                        .is_some_and(|end| !survives_truncation(text, end, input_ids.len(), tokenizer)));
        }
        found
    }
}

/// Whether a token of `end` (a byte range of the text) is among the first `kept` tokens: the text
/// up to `end` is encoded again with only `end` trainable, which only truncated conversations pay
/// for (never past the end-of-turn checked, however long the row).
fn survives_truncation(
    text: &RenderedText,
    end: &Range<usize>,
    kept: usize,
    tokenizer: &dyn PipelineTokenizer,
) -> bool {
    let probe = Sample::Text(RenderedText {
        text: text.text.get(..end.end).unwrap_or(&text.text).to_owned(),
        trainable: vec![end.clone()],
        add_special_tokens: text.add_special_tokens,
    });
    tokenizer
        .encode(&probe)
        .is_ok_and(|encoded| encoded.trainable.iter().take(kept).any(|&flag| flag))
}

fn find_in_row(specials: &Regex, row: &Map<String, Value>) -> Option<(String, String)> {
    row.iter()
        .find_map(|(key, value)| find_in_value(specials, value).map(|(path, text)| (format!("{key}{path}"), text)))
}

/// The path below `value` (`[0].content`) of its first string holding a special token's text, and
/// that text. The path is built only for a find: every row is scanned, few hold one.
fn find_in_value(specials: &Regex, value: &Value) -> Option<(String, String)> {
    match value {
        Value::String(text) => specials
            .find(text)
            .map(|found| (String::new(), found.as_str().to_owned())),
        Value::Array(items) => items.iter().enumerate().find_map(|(index, item)| {
            find_in_value(specials, item).map(|(path, text)| (format!("[{index}]{path}"), text))
        }),
        Value::Object(map) => map
            .iter()
            .find_map(|(key, item)| find_in_value(specials, item).map(|(path, text)| (format!(".{key}{path}"), text))),
        _ => None,
    }
}

/// Whether the ids of `prompt` (the generation prompt, tokenized as the template wrote it) are a
/// prefix of `input_ids`; `None` when the stored ids were cut shorter than the prompt.
fn prompt_is_prefix(
    prompt: &str,
    input_ids: &[u32],
    truncated: bool,
    tokenizer: &dyn PipelineTokenizer,
) -> Option<bool> {
    let ids = tokenizer
        .encode(&Sample::Text(RenderedText {
            text: prompt.to_owned(),
            trainable: Vec::new(),
            add_special_tokens: false,
        }))
        .ok()?
        .input_ids;
    if truncated && ids.len() > input_ids.len() {
        return None;
    }
    Some(input_ids.starts_with(&ids))
}

#[cfg(test)]
mod tests;
