//! Tokenization and the label mask.
//!
//! A [`Sample::Text`] is tokenized ONCE with byte offsets; a token is trained
//! when any of its bytes lies in a trainable span of the rendering. Tokens the
//! post-processor adds (BOS) belong to no span and are never trained.
//!
//! ```text
//! text:      "### Response:\nBonjour</s>"         trainable span: [14, 25)
//! tokens:    <s>  ### ▁Response  :  <0x0A>  Bon  jour  </s>
//! trained:    .    .      .      .    .      X    X     X
//! ```
//!
//! The tokenizer is the model's `tokenizer.json`; `tokenizer_config.json`
//! gives the BOS/EOS strings, `add_bos_token`/`add_eos_token` and the chat
//! template. Tokens from the config's `special_tokens`/`tokens` are added
//! before anything is encoded, and [`Encoder::save`] writes the augmented
//! tokenizer so training resizes its embeddings to match.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use serde_json::{Map, Value};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use crate::chat::RenderedConversation;
use crate::fast_encode::{self, FastEncoder, FastStats};
use crate::spec::ConversationType;
use crate::{Encoded, Error, FieldError, FormatSpec, Result, Sample, TokenizerInfo};

/// Set to `0` to always encode with the `tokenizers` pipeline (for comparisons).
pub const FAST_ENCODER_ENV: &str = "AXR_FAST_ENCODER";

/// Tokens to add to the tokenizer, with Axolotl's config keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddedTokens {
    /// Special tokens by role: `bos_token`, `eos_token`, `pad_token`, `unk_token`, ...
    /// Each is added as a special token (never split, never normalized) and
    /// takes that role, e.g. `eos_token: "<|im_end|>"` makes it the EOS that
    /// instruction types append.
    #[serde(default)]
    pub special_tokens: BTreeMap<String, String>,
    /// Plain tokens to add to the vocabulary (matched as a whole, not normalized).
    #[serde(default)]
    pub tokens: Vec<String>,
}

/// The special-token roles of `tokenizer_config.json` that `special_tokens` may set.
const SPECIAL_TOKEN_ROLES: &[&str] = &[
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// A tokenizer with the model's configuration and the dataset config's added tokens.
pub struct Encoder {
    tokenizer: Tokenizer,
    /// tokenizer_config.json with the added special tokens written into it.
    config: Map<String, Value>,
    info: TokenizerInfo,
    vocab_size: usize,
    fingerprint: Vec<u8>,
    max_bytes_per_token: Option<usize>,
    /// The fast encoder, or why `tokenizers` encodes instead.
    fast: std::result::Result<FastEncoder, String>,
    verify: Verification,
}

/// `--verify-encoder N`: the first N texts are encoded both ways.
#[derive(Debug, Default)]
struct Verification {
    remaining: AtomicU64,
    checked: AtomicU64,
    mismatch: Mutex<Option<String>>,
}

/// Which encoder ran and how it went, for the preprocess summary.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EncoderSummary {
    /// `fast` or `tokenizers`.
    pub path: &'static str,
    /// The pipeline the fast encoder handles, or why it was not used.
    pub detail: String,
    /// Counters of the fast encoder (absent on the `tokenizers` path).
    pub stats: Option<FastStats>,
    /// Texts encoded both ways by `--verify-encoder`.
    pub verified: u64,
    /// The first difference found by `--verify-encoder`.
    pub mismatch: Option<String>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Encoder")
            .field("info", &self.info)
            .field("vocab_size", &self.vocab_size)
            .finish_non_exhaustive()
    }
}

fn tokenizer_error(path: &Path, error: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("{}: {error}", path.display()))
}

/// A special token entry of tokenizer_config.json: a string or `{"content": ...}`.
fn token_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Object(map) => map.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// The chat template: a string, or a list of `{name, template}` of which `default` is used.
fn chat_template(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) => Some(text.clone()),
        Value::Array(templates) => templates
            .iter()
            .find(|entry| entry.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|entry| entry.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

impl Encoder {
    /// Load `dir/tokenizer.json` (+ `dir/tokenizer_config.json` when present) and add `extra`.
    pub fn from_dir(dir: &Path, extra: &AddedTokens) -> Result<Self> {
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer_bytes = fs_err::read(&tokenizer_path)?;
        let mut tokenizer =
            Tokenizer::from_bytes(&tokenizer_bytes).map_err(|error| tokenizer_error(&tokenizer_path, error))?;
        let config_path = dir.join("tokenizer_config.json");
        let config_bytes = if config_path.exists() {
            fs_err::read(&config_path)?
        } else {
            b"{}".to_vec()
        };
        let mut config: Map<String, Value> = serde_json::from_slice(&config_bytes).map_err(|error| Error::Format {
            path: config_path.clone(),
            message: format!("invalid JSON: {error}"),
        })?;

        for (role, token) in &extra.special_tokens {
            if !SPECIAL_TOKEN_ROLES.contains(&role.as_str()) {
                return Err(Error::Config {
                    key: format!("special_tokens.{role}"),
                    message: format!("unknown special token role; known: {}", SPECIAL_TOKEN_ROLES.join(", ")),
                });
            }
            if token.is_empty() {
                return Err(Error::Config {
                    key: format!("special_tokens.{role}"),
                    message: "empty token".into(),
                });
            }
            config.insert(role.clone(), Value::String(token.clone()));
        }
        // Like transformers, the roles named in the config are registered as special tokens, so
        // literal "</s>" in text becomes the EOS id; added tokens are matched whole, unnormalized.
        let specials: Vec<AddedToken> = SPECIAL_TOKEN_ROLES
            .iter()
            .filter_map(|role| config.get(*role).and_then(token_text))
            .map(|token| AddedToken::from(token, true).normalized(false))
            .collect();
        tokenizer
            .add_special_tokens(specials)
            .map_err(|error| tokenizer_error(&tokenizer_path, error))?;
        let plain: Vec<AddedToken> = extra
            .tokens
            .iter()
            .map(|token| AddedToken::from(token.clone(), false).normalized(false))
            .collect();
        tokenizer
            .add_tokens(plain)
            .map_err(|error| tokenizer_error(&tokenizer_path, error))?;

        let info = TokenizerInfo {
            bos: config.get("bos_token").and_then(token_text),
            eos: config.get("eos_token").and_then(token_text),
            chat_template: chat_template(config.get("chat_template")),
        };
        // transformers rebuilds the post-processor from add_bos_token/add_eos_token when the
        // config names either; doing the same keeps our ids equal to AutoTokenizer's.
        if config.contains_key("add_bos_token") || config.contains_key("add_eos_token") {
            let prepend_bos = config.get("add_bos_token").and_then(Value::as_bool).unwrap_or(false);
            let append_eos = config.get("add_eos_token").and_then(Value::as_bool).unwrap_or(false);
            let processor = template_processor(&tokenizer, &info, prepend_bos, append_eos)
                .map_err(|message| tokenizer_error(&config_path, message))?;
            tokenizer.with_post_processor(Some(processor));
        }

        let vocab_size = tokenizer
            .get_vocab(true)
            .values()
            .map(|&id| id as usize + 1)
            .max()
            .unwrap_or(0);
        let max_bytes_per_token = tokenizer
            .to_string(false)
            .ok()
            .and_then(|json| serde_json::from_str::<Value>(&json).ok())
            .and_then(|json| token_byte_bound(&json));
        let fast = if std::env::var(FAST_ENCODER_ENV).is_ok_and(|value| value == "0") {
            Err(format!("disabled by {FAST_ENCODER_ENV}=0"))
        } else {
            fast_encode::recognise(&tokenizer)
        };
        let mut fingerprint = tokenizer_bytes;
        fingerprint.push(0);
        fingerprint.extend_from_slice(&config_bytes);
        fingerprint.push(0);
        fingerprint.extend_from_slice(&serde_json::to_vec(extra).unwrap_or_default());
        Ok(Self {
            tokenizer,
            config,
            info,
            vocab_size,
            fingerprint,
            max_bytes_per_token,
            fast,
            verify: Verification::default(),
        })
    }

    /// The fast encoder, or why `tokenizers` encodes instead.
    pub fn fast_encoder(&self) -> std::result::Result<&FastEncoder, &str> {
        self.fast.as_ref().map_err(String::as_str)
    }

    /// Encode the next `texts` texts with both the fast encoder and `tokenizers`; a difference
    /// is kept for [`Encoder::summary`] and the `tokenizers` result is used.
    pub fn verify_next(&self, texts: u64) {
        self.verify.remaining.store(texts, Ordering::Relaxed);
    }

    /// Which path encoded, its counters and the verification outcome.
    pub fn summary(&self) -> EncoderSummary {
        let (path, detail, stats) = match &self.fast {
            Ok(fast) => ("fast", fast.description().to_string(), Some(fast.stats())),
            Err(reason) => ("tokenizers", reason.clone(), None),
        };
        EncoderSummary {
            path,
            detail,
            stats,
            verified: self.verify.checked.load(Ordering::Relaxed),
            mismatch: self
                .verify
                .mismatch
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }

    /// `text` through the `tokenizers` pipeline.
    fn encode_reference(
        &self,
        text: &str,
        add_special_tokens: bool,
        spans: &[Range<usize>],
    ) -> Result<Encoded, FieldError> {
        let encoding = self
            .tokenizer
            .encode(text, add_special_tokens)
            .map_err(|error| FieldError::new("-", format!("tokenizer failed: {error}")))?;
        let trainable = trainable_mask(encoding.get_offsets(), &encoding.get_sequence_ids(), spans);
        Ok(Encoded {
            input_ids: encoding.get_ids().to_vec(),
            trainable,
        })
    }

    fn encode_text(&self, text: &str, add_special_tokens: bool, spans: &[Range<usize>]) -> Result<Encoded, FieldError> {
        // Texts the fast encoder does not take (not NFC for an NFC tokenizer) go to `tokenizers`.
        let fast = match &self.fast {
            Ok(fast) if fast.accepts(text) => fast,
            _ => return self.encode_reference(text, add_special_tokens, spans),
        };
        let encoding = fast
            .encode(text, add_special_tokens)
            .map_err(|message| FieldError::new("-", message))?;
        let sequence_ids: Vec<Option<usize>> = (0..encoding.ids.len())
            .map(|index| encoding.content.contains(&index).then_some(0))
            .collect();
        let encoded = Encoded {
            trainable: trainable_mask(&encoding.offsets, &sequence_ids, spans),
            input_ids: encoding.ids,
        };
        let verify = self
            .verify
            .remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1))
            .is_ok();
        if !verify {
            return Ok(encoded);
        }
        let reference = self.encode_reference(text, add_special_tokens, spans)?;
        self.verify.checked.fetch_add(1, Ordering::Relaxed);
        if reference != encoded {
            let mut mismatch = self
                .verify
                .mismatch
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if mismatch.is_none() {
                let what = if reference.input_ids == encoded.input_ids {
                    "label mask"
                } else {
                    "ids"
                };
                let mut excerpt: String = text.chars().take(80).collect();
                if excerpt.len() < text.len() {
                    excerpt.push('…');
                }
                *mismatch = Some(format!(
                    "{what} differ from tokenizers' for the text {excerpt:?}: fast {:?}, tokenizers {:?}",
                    encoded.input_ids, reference.input_ids
                ));
            }
        }
        Ok(reference)
    }

    /// The most bytes of text one token can stand for, or `None` when the tokenizer does not
    /// bound it (see [`token_byte_bound`]).
    pub fn max_bytes_per_token(&self) -> Option<usize> {
        self.max_bytes_per_token
    }

    /// Use `source` as the tokenizer's chat template (Axolotl's top-level `chat_template`):
    /// formatters see it as `tokenizer_default`, [`Encoder::save`] writes it into
    /// tokenizer_config.json so inference renders the same way, and the fingerprint changes.
    pub fn set_chat_template(&mut self, source: String) {
        self.fingerprint.push(0);
        self.fingerprint.extend_from_slice(source.as_bytes());
        self.config
            .insert("chat_template".into(), Value::String(source.clone()));
        self.info.chat_template = Some(source);
    }

    /// Texts of the special tokens: BOS, EOS and every added token marked special.
    pub fn special_texts(&self) -> Vec<String> {
        let added = self.tokenizer.get_added_tokens_decoder();
        let mut texts: Vec<String> = added
            .values()
            .filter(|token| token.special)
            .map(|token| token.content.clone())
            .chain(self.info.bos.clone())
            .chain(self.info.eos.clone())
            .collect();
        texts.sort();
        texts.dedup();
        texts
    }

    /// What formatters need to know: BOS/EOS text and the chat template.
    pub fn info(&self) -> TokenizerInfo {
        self.info.clone()
    }

    /// The underlying HF tokenizer (after tokens were added).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// One past the largest token id, added tokens included: the embedding rows the model needs.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Bytes that identify this tokenizer for the store fingerprint: tokenizer.json,
    /// tokenizer_config.json and the added tokens.
    pub fn fingerprint_bytes(&self) -> Vec<u8> {
        self.fingerprint.clone()
    }

    /// Tokenize a sample and compute its trainable mask.
    pub fn encode(&self, sample: &Sample) -> Result<Encoded, FieldError> {
        match sample {
            Sample::Text(rendered) => {
                self.encode_text(&rendered.text, rendered.add_special_tokens, &rendered.trainable)
            }
            Sample::Tokens { input_ids, trainable } => {
                if let Some((index, id)) = input_ids
                    .iter()
                    .enumerate()
                    .find(|(_, id)| **id as usize >= self.vocab_size)
                {
                    return Err(FieldError::new(
                        format!("input_ids[{index}]"),
                        format!(
                            "token id {id} is outside the tokenizer's vocabulary of {}",
                            self.vocab_size
                        ),
                    ));
                }
                if trainable.len() != input_ids.len() {
                    return Err(FieldError::new("labels", "one label per input id is required"));
                }
                Ok(Encoded {
                    input_ids: input_ids.clone(),
                    trainable: trainable.clone(),
                })
            }
        }
    }

    /// The ids of `texts` (in parallel on rayon's current pool), as [`Encoder::encode`] gives
    /// them: for benchmarks and differential tests against `tokenizers`' `encode_batch`.
    pub fn encode_texts(&self, texts: &[String], add_special_tokens: bool) -> Result<Vec<Vec<u32>>> {
        texts
            .par_iter()
            .enumerate()
            .map(|(index, text)| {
                self.encode_text(text, add_special_tokens, &[])
                    .map(|encoded| encoded.input_ids)
                    .map_err(|error| Error::Data {
                        path: "<texts>".into(),
                        line: index as u64 + 1,
                        field: error.field,
                        message: error.message,
                    })
            })
            .collect()
    }

    /// Write the augmented `tokenizer.json`, `tokenizer_config.json` and
    /// `special_tokens_map.json` into `dir` (created if missing).
    pub fn save(&self, dir: &Path) -> Result<()> {
        fs_err::create_dir_all(dir)?;
        let json = self
            .tokenizer
            .to_string(true)
            .map_err(|error| Error::Tokenizer(error.to_string()))?;
        fs_err::write(dir.join("tokenizer.json"), json)?;
        let config = serde_json::to_string_pretty(&self.config).map_err(|error| Error::Invalid(error.to_string()))?;
        fs_err::write(dir.join("tokenizer_config.json"), config + "\n")?;
        let special: Map<String, Value> = SPECIAL_TOKEN_ROLES
            .iter()
            .filter_map(|role| {
                self.config
                    .get(*role)
                    .and_then(token_text)
                    .map(|token| ((*role).to_string(), Value::String(token)))
            })
            .collect();
        let special = serde_json::to_string_pretty(&special).map_err(|error| Error::Invalid(error.to_string()))?;
        fs_err::write(dir.join("special_tokens_map.json"), special + "\n")?;
        Ok(())
    }
}

/// Format JSON rows (one object per string) with `spec`: for tests, prompt
/// rendering at inference and other small batches. The pipeline streams files
/// instead. Errors name the row (1-based) as the line of the file `<rows>`.
pub fn render_json_rows(rows: &[String], spec: &FormatSpec, info: &TokenizerInfo) -> Result<Vec<Sample>> {
    let formatter = crate::dataset_type::build(spec, info)?;
    map_json_rows(rows, |row| formatter.format(row))
}

/// Render JSON rows of a conversation type with their per-turn spans (for tests, benchmarks and
/// the chat parity checks); errors as [`render_json_rows`]. A `spec` whose `type` is not a
/// conversation type is an [`Error::Config`] on `type`.
pub fn render_conversations(
    rows: &[String],
    spec: &FormatSpec,
    info: &TokenizerInfo,
) -> Result<Vec<RenderedConversation>> {
    let kind = spec.kind.as_deref().unwrap_or_default();
    let conversation = ConversationType::from_type_name(kind).ok_or_else(|| Error::Config {
        key: "type".into(),
        message: format!("`{kind}` is not a conversation type"),
    })?;
    let formatter = crate::chat::build(conversation, spec, info)?;
    map_json_rows(rows, |row| formatter.render_row(row))
}

/// `apply` over JSON object rows, in parallel (rayon's global pool), then the first error in row
/// order, as a sequential loop would report it, naming the row as the line of the file `<rows>`.
fn map_json_rows<T: Send>(
    rows: &[String],
    apply: impl Fn(&Map<String, Value>) -> Result<T, FieldError> + Sync,
) -> Result<Vec<T>> {
    let results: Vec<Result<T>> = rows
        .par_iter()
        .enumerate()
        .map(|(index, row)| {
            let data_error = |field: String, message: String| Error::Data {
                path: "<rows>".into(),
                line: index as u64 + 1,
                field,
                message,
            };
            let row: Map<String, Value> = serde_json::from_str(row)
                .map_err(|error| data_error("-".into(), format!("not a JSON object: {error}")))?;
            apply(&row).map_err(|error| data_error(error.field, error.message))
        })
        .collect();
    results.into_iter().collect()
}

/// [`render_json_rows`], then [`Encoder::encode`] each sample.
pub fn encode_json_rows(rows: &[String], spec: &FormatSpec, encoder: &Encoder) -> Result<Vec<Encoded>> {
    let samples = render_json_rows(rows, spec, &encoder.info())?;
    let results: Vec<Result<Encoded>> = samples
        .par_iter()
        .enumerate()
        .map(|(index, sample)| {
            encoder.encode(sample).map_err(|error| Error::Data {
                path: "<rows>".into(),
                line: index as u64 + 1,
                field: error.field,
                message: error.message,
            })
        })
        .collect();
    results.into_iter().collect()
}

/// How many bytes of input one token can cover at most, from a `tokenizer.json`, or `None` when
/// nothing bounds it. Then a text of `B` bytes has at least `B / bound` tokens, so a row longer
/// than `sequence_len * bound` bytes is too long without tokenizing it.
///
/// Every step that could make a token cover more than its own spelling must be bounded:
/// - the model: a BPE token covers at most its vocabulary string's bytes (byte-level and
///   metaspace spellings are never shorter than what they cover); unknown characters must be
///   impossible (byte fallback or a full byte-level alphabet), or become one unfused `unk` per
///   character (4 bytes at most). WordPiece and WordLevel map whole words to `unk`, Unigram
///   fuses unknown runs: unbounded unless byte fallback is on.
/// - the normalizer may shrink text: Unicode normalization and lowercasing at most 4 to 1 (a
///   4-byte character becomes a 1-byte one, e.g. 𝐀 → A), a `Replace` by the ratio of its strings;
///   anything that deletes text (strip, accents, control characters, empty replacement, regex)
///   is unbounded.
/// - the pre-tokenizer must not delete text (whitespace splitters and `Removed` splits do).
/// - added tokens cover their content, unless `lstrip`/`rstrip` lets them swallow whitespace.
/// - the tokenizer's own truncation would cut long texts: then nothing is decided by length.
pub fn token_byte_bound(json: &Value) -> Option<usize> {
    if !json.get("truncation").is_none_or(Value::is_null) {
        return None;
    }
    let model = json.get("model")?;
    let vocab = model.get("vocab")?;
    let spellings: Vec<&str> = match vocab {
        // BPE, WordPiece, WordLevel: {token: id}; Unigram: [[token, score], ...].
        Value::Object(map) => map.keys().map(String::as_str).collect(),
        Value::Array(pairs) => pairs.iter().filter_map(|pair| pair.get(0)?.as_str()).collect(),
        _ => return None,
    };
    let has = |token: &str| match vocab {
        Value::Object(map) => map.contains_key(token),
        _ => spellings.contains(&token),
    };
    let byte_fallback = model.get("byte_fallback").and_then(Value::as_bool) == Some(true)
        && (0..=255u8).all(|byte| has(&format!("<0x{byte:02X}>")));
    let byte_level_alphabet =
        byte_level_in(json.get("pre_tokenizer")) && (0..=255u8).all(|byte| has(&byte_level_char(byte).to_string()));
    let mut longest = spellings.iter().map(|token| token.len()).max()?;
    match model.get("type").and_then(Value::as_str)? {
        "BPE" if byte_fallback || byte_level_alphabet => {}
        "BPE" => {
            // Without an unk token unknown characters are dropped; fused, a run becomes one unk.
            model.get("unk_token").and_then(Value::as_str)?;
            if model.get("fuse_unk").and_then(Value::as_bool) != Some(false) {
                return None;
            }
            longest = longest.max(4);
        }
        "Unigram" if byte_fallback => {}
        _ => return None,
    }
    for token in json.get("added_tokens").and_then(Value::as_array).into_iter().flatten() {
        let flag = |name: &str| token.get(name).and_then(Value::as_bool) == Some(true);
        if flag("lstrip") || flag("rstrip") {
            return None;
        }
        longest = longest.max(token.get("content").and_then(Value::as_str)?.len());
    }
    if !keeps_all_text(json.get("pre_tokenizer")) {
        return None;
    }
    longest.checked_mul(normalizer_shrink(json.get("normalizer"))?)
}

/// GPT-2's byte-to-character map (the byte-level alphabet).
fn byte_level_char(byte: u8) -> char {
    let printable = |byte: u8| matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(byte) {
        return char::from(byte);
    }
    let shift = (0..byte).filter(|&earlier| !printable(earlier)).count() as u32;
    char::from_u32(256 + shift).expect("below U+0200")
}

fn byte_level_in(pre_tokenizer: Option<&Value>) -> bool {
    let Some(pre_tokenizer) = pre_tokenizer.filter(|value| !value.is_null()) else {
        return false;
    };
    match pre_tokenizer.get("type").and_then(Value::as_str) {
        Some("ByteLevel") => true,
        Some("Sequence") => pre_tokenizer
            .get("pretokenizers")
            .and_then(Value::as_array)
            .is_some_and(|steps| steps.iter().any(|step| byte_level_in(Some(step)))),
        _ => false,
    }
}

/// Whether the pre-tokenizer keeps every byte of its input (it only splits or respells).
fn keeps_all_text(pre_tokenizer: Option<&Value>) -> bool {
    let Some(pre_tokenizer) = pre_tokenizer.filter(|value| !value.is_null()) else {
        return true;
    };
    let removes = pre_tokenizer.get("behavior").and_then(Value::as_str) == Some("Removed");
    match pre_tokenizer.get("type").and_then(Value::as_str) {
        Some("ByteLevel" | "Metaspace" | "Digits" | "UnicodeScripts") => true,
        Some("Split" | "Punctuation") => !removes,
        Some("Sequence") => pre_tokenizer
            .get("pretokenizers")
            .and_then(Value::as_array)
            .is_some_and(|steps| steps.iter().all(|step| keeps_all_text(Some(step)))),
        _ => false,
    }
}

/// By how much the normalizer can shrink text at most (original bytes per normalized byte).
fn normalizer_shrink(normalizer: Option<&Value>) -> Option<usize> {
    let Some(normalizer) = normalizer.filter(|value| !value.is_null()) else {
        return Some(1);
    };
    match normalizer.get("type").and_then(Value::as_str)? {
        "Prepend" | "ByteLevel" => Some(1),
        "NFC" | "NFD" | "NFKC" | "NFKD" | "Lowercase" => Some(4),
        "Replace" => {
            let pattern = normalizer.get("pattern")?.get("String")?.as_str()?;
            let content = normalizer.get("content")?.as_str()?;
            (!content.is_empty()).then(|| pattern.len().div_ceil(content.len()).max(1))
        }
        "Sequence" => normalizer
            .get("normalizers")?
            .as_array()?
            .iter()
            .try_fold(1usize, |total, step| total.checked_mul(normalizer_shrink(Some(step))?)),
        _ => None,
    }
}

/// `<bos>:0 $A:0 <eos>:0` as transformers builds it from add_bos_token/add_eos_token.
fn template_processor(
    tokenizer: &Tokenizer,
    info: &TokenizerInfo,
    prepend_bos: bool,
    append_eos: bool,
) -> Result<TemplateProcessing, String> {
    let mut special = Vec::new();
    for (enabled, token, role) in [
        (prepend_bos, &info.bos, "bos_token"),
        (append_eos, &info.eos, "eos_token"),
    ] {
        let Some(token) = token.as_ref().filter(|_| enabled) else {
            continue;
        };
        let id = tokenizer
            .token_to_id(token)
            .ok_or_else(|| format!("{role} '{token}' is not in the vocabulary"))?;
        special.push((token.clone(), id));
    }
    let bos = special
        .iter()
        .find(|(token, _)| Some(token) == info.bos.as_ref().filter(|_| prepend_bos));
    let eos = special
        .iter()
        .find(|(token, _)| Some(token) == info.eos.as_ref().filter(|_| append_eos));
    let wrap = |sequence: &str, type_id: u32| {
        let mut pieces = Vec::new();
        if let Some((token, _)) = bos {
            pieces.push(format!("{token}:{type_id}"));
        }
        pieces.push(format!("{sequence}:{type_id}"));
        if let Some((token, _)) = eos {
            pieces.push(format!("{token}:{type_id}"));
        }
        pieces.join(" ")
    };
    let single = wrap("$A", 0);
    let pair = format!("{} {}", wrap("$A", 0), wrap("$B", 1));
    TemplateProcessing::builder()
        .try_single(single)
        .and_then(|builder| builder.try_pair(pair))
        .map_err(|error| error.clone())?
        .special_tokens(special)
        .build()
        .map_err(|error| error.to_string())
}

/// One flag per token: true when the token's byte range touches a trainable
/// span. Tokens with no sequence (added by the post-processor) are never trained.
///
/// `spans` are sorted and disjoint. A zero-width token counts as the byte at
/// its position.
pub fn trainable_mask(offsets: &[(usize, usize)], sequence_ids: &[Option<usize>], spans: &[Range<usize>]) -> Vec<bool> {
    offsets
        .iter()
        .zip(sequence_ids)
        .map(|(&(start, end), sequence)| {
            if sequence.is_none() {
                return false;
            }
            let end = end.max(start + 1);
            // The first span ending after the token's start is the only one that can overlap it.
            let candidate = spans.partition_point(|span| span.end <= start);
            spans.get(candidate).is_some_and(|span| span.start < end)
        })
        .collect()
}

#[cfg(test)]
#[expect(
    clippy::single_range_in_vec_init,
    reason = "spans are lists of byte ranges; one span is common"
)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::RenderedText;

    /// A small SentencePiece-like BPE: "▁" prefix, byte fallback, a few merges,
    /// `<s>` added by the post-processor and `</s>` as a special token.
    fn write_test_tokenizer(dir: &Path, config: &Value) {
        let mut vocab = serde_json::Map::new();
        let mut pieces: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        pieces.extend((0..=255u8).map(|byte| format!("<0x{byte:02X}>")));
        let letters: Vec<String> = "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ:#.,!?"
            .chars()
            .map(String::from)
            .collect();
        pieces.extend(letters);
        let merges = [
            ("▁", "h"),
            ("e", "l"),
            ("el", "l"),
            ("▁h", "ell"),
            ("▁hell", "o"),
            ("o", "r"),
            ("▁", "w"),
            ("▁w", "or"),
        ];
        for (left, right) in merges {
            pieces.push(format!("{left}{right}"));
        }
        for (id, piece) in pieces.iter().enumerate() {
            vocab.insert(piece.clone(), Value::from(id));
        }
        let tokenizer = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [
                {"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
            ],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
            ]},
            "pre_tokenizer": null,
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
            },
            "decoder": null,
            "model": {
                "type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": vocab,
                "merges": merges.iter().map(|(left, right)| vec![*left, *right]).collect::<Vec<_>>()
            }
        });
        fs_err::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
        fs_err::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    }

    fn encoder(extra: &AddedTokens) -> (tempfile::TempDir, Encoder) {
        let dir = tempfile::tempdir().unwrap();
        write_test_tokenizer(
            dir.path(),
            &serde_json::json!({"bos_token": "<s>", "eos_token": {"content": "</s>"}}),
        );
        let encoder = Encoder::from_dir(dir.path(), extra).unwrap();
        (dir, encoder)
    }

    fn text(text: &str, trainable: Vec<Range<usize>>) -> Sample {
        Sample::Text(RenderedText {
            text: text.into(),
            trainable,
            add_special_tokens: true,
        })
    }

    fn tokens(encoder: &Encoder, output: &Encoded) -> Vec<String> {
        output
            .input_ids
            .iter()
            .map(|&id| encoder.tokenizer().id_to_token(id).unwrap())
            .collect()
    }

    #[test]
    fn a_token_straddling_the_span_edge_is_trained() {
        let (_dir, encoder) = encoder(&AddedTokens::default());
        // The span starts at "h"; "▁hello" also holds the space before it and is trained.
        let output = encoder.encode(&text("A: hello</s>", vec![3..12])).unwrap();
        assert_eq!(tokens(&encoder, &output), ["<s>", "▁", "A", ":", "▁hello", "</s>"]);
        assert_eq!(output.trainable, [false, false, false, false, true, true]);
        // A span covering only "ell" inside "▁hello" still trains the whole token.
        let output = encoder.encode(&text("hello", vec![1..4])).unwrap();
        assert_eq!(tokens(&encoder, &output), ["<s>", "▁hello"]);
        assert_eq!(output.trainable, [false, true]);
    }

    #[test]
    fn eos_text_becomes_the_eos_id_and_bos_is_never_trained() {
        let (_dir, encoder) = encoder(&AddedTokens::default());
        let output = encoder.encode(&text("hi</s>", vec![0..6])).unwrap();
        assert_eq!(output.input_ids.first(), Some(&1));
        assert_eq!(output.input_ids.last(), Some(&2));
        assert!(!output.trainable[0]);
        assert!(output.trainable[1..].iter().all(|&flag| flag));
        assert_eq!(encoder.info().eos.as_deref(), Some("</s>"));
    }

    #[test]
    fn pretokenized_ids_are_checked_against_the_vocabulary() {
        let (_dir, encoder) = encoder(&AddedTokens::default());
        let sample = Sample::Tokens {
            input_ids: vec![1, 9999],
            trainable: vec![false, true],
        };
        assert_eq!(encoder.encode(&sample).unwrap_err().field, "input_ids[1]");
        let sample = Sample::Tokens {
            input_ids: vec![1, 5],
            trainable: vec![false, true],
        };
        assert_eq!(encoder.encode(&sample).unwrap().input_ids, vec![1, 5]);
    }

    #[test]
    fn added_tokens_are_used_counted_and_saved() {
        let extra = AddedTokens {
            special_tokens: BTreeMap::from([("eos_token".to_string(), "<|im_end|>".to_string())]),
            tokens: vec!["<tool>".into()],
        };
        let (_dir, plain) = encoder(&AddedTokens::default());
        let (_dir2, encoder) = encoder(&extra);
        assert_eq!(encoder.vocab_size(), plain.vocab_size() + 2);
        assert_eq!(encoder.info().eos.as_deref(), Some("<|im_end|>"));
        let output = encoder.encode(&text("a<tool>b<|im_end|>", vec![])).unwrap();
        // The normalizer prepends "▁" to every piece between added tokens, as in transformers.
        assert_eq!(
            tokens(&encoder, &output),
            ["<s>", "▁", "a", "<tool>", "▁", "b", "<|im_end|>"]
        );
        assert_ne!(plain.fingerprint_bytes(), encoder.fingerprint_bytes());

        let saved = tempfile::tempdir().unwrap();
        encoder.save(saved.path()).unwrap();
        let reloaded = Encoder::from_dir(saved.path(), &AddedTokens::default()).unwrap();
        assert_eq!(reloaded.vocab_size(), encoder.vocab_size());
        assert_eq!(reloaded.info(), encoder.info());
        assert_eq!(reloaded.encode(&text("a<tool>b<|im_end|>", vec![])).unwrap(), output);
    }

    #[test]
    fn add_eos_token_in_the_config_rebuilds_the_post_processor() {
        let dir = tempfile::tempdir().unwrap();
        write_test_tokenizer(
            dir.path(),
            &serde_json::json!({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": false, "add_eos_token": true}),
        );
        let encoder = Encoder::from_dir(dir.path(), &AddedTokens::default()).unwrap();
        let output = encoder.encode(&text("hi", vec![0..2])).unwrap();
        assert_eq!(tokens(&encoder, &output), ["▁h", "i", "</s>"]);
        assert_eq!(output.trainable, [true, true, false]);
    }

    #[test]
    fn unknown_special_token_role_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        write_test_tokenizer(dir.path(), &serde_json::json!({}));
        let extra = AddedTokens {
            special_tokens: BTreeMap::from([("eos".into(), "x".into())]),
            tokens: vec![],
        };
        let error = Encoder::from_dir(dir.path(), &extra).unwrap_err().to_string();
        assert!(error.contains("special_tokens.eos"), "{error}");
    }

    fn text_strategy() -> impl Strategy<Value = (String, Vec<Range<usize>>)> {
        let piece = prop::sample::select(vec!["hello", " ", "world", "A:", "</s>", "é", "\n", "ab", "#"]);
        prop::collection::vec((piece, any::<bool>()), 0..12).prop_map(|parts| {
            let mut text = String::new();
            let mut spans: Vec<Range<usize>> = Vec::new();
            for (piece, trained) in parts {
                let start = text.len();
                text.push_str(piece);
                if trained {
                    match spans.last_mut() {
                        Some(last) if last.end == start => last.end = text.len(),
                        _ => spans.push(start..text.len()),
                    }
                }
            }
            (text, spans)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn mask_matches_ids_and_train_on_inputs_marks_all_but_specials((text, spans) in text_strategy()) {
            let (_dir, encoder) = encoder(&AddedTokens::default());
            let output = encoder.encode(&Sample::Text(RenderedText { text: text.clone(), trainable: spans, add_special_tokens: true })).unwrap();
            prop_assert_eq!(output.trainable.len(), output.input_ids.len());
            let everything = if text.is_empty() { vec![] } else { vec![0..text.len()] };
            let all = encoder.encode(&Sample::Text(RenderedText { text: text.clone(), trainable: everything, add_special_tokens: true })).unwrap();
            prop_assert!(!all.trainable[0], "BOS must not be trained");
            prop_assert!(all.trainable[1..].iter().all(|&flag| flag));
            // Whatever is trained with some spans is trained when everything is.
            prop_assert!(output.trainable.iter().zip(&all.trainable).all(|(&some, &every)| !some || every));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The bound that lets huge rows be dropped untokenized: no text has fewer tokens than
        /// its bytes divided by it.
        #[test]
        fn no_text_has_fewer_tokens_than_its_byte_bound_allows(
            text in "(\\PC|[ \n]|</s>|<s>|hello|world){0,40}",
        ) {
            let (_dir, encoder) = encoder(&AddedTokens::default());
            let bound = encoder.max_bytes_per_token().unwrap();
            let output = encoder.encode(&Sample::Text(RenderedText { text: text.clone(), trainable: vec![], add_special_tokens: false })).unwrap();
            prop_assert!(output.input_ids.len() * bound >= text.len(), "{} tokens, {} bytes, bound {}", output.input_ids.len(), text.len(), bound);
        }
    }

    #[test]
    fn token_byte_bound_follows_every_step_that_could_shrink_text() {
        let (dir, encoder) = encoder(&AddedTokens::default());
        // "▁hello" (8 bytes) is the longest spelling; the ▁ replacement never shrinks text.
        assert_eq!(encoder.max_bytes_per_token(), Some(8));
        let base: Value = serde_json::from_slice(&fs_err::read(dir.path().join("tokenizer.json")).unwrap()).unwrap();
        let with = |pointer: &str, value: Value| {
            let mut json = base.clone();
            *json.pointer_mut(pointer).unwrap() = value;
            token_byte_bound(&json)
        };
        assert_eq!(with("/normalizer", serde_json::json!({"type": "NFKC"})), Some(8 * 4));
        let deleting = serde_json::json!({"type": "Replace", "pattern": {"String": "x"}, "content": ""});
        assert_eq!(with("/normalizer", deleting), None);
        assert_eq!(with("/normalizer", serde_json::json!({"type": "StripAccents"})), None);
        assert_eq!(with("/pre_tokenizer", serde_json::json!({"type": "Whitespace"})), None);
        assert_eq!(with("/model/type", Value::from("WordPiece")), None);
        assert_eq!(with("/model/byte_fallback", Value::from(false)), None);
        assert_eq!(with("/added_tokens/2/rstrip", Value::from(true)), None);
        assert_eq!(with("/truncation", serde_json::json!({"max_length": 8})), None);
        // Without byte fallback, unknown characters become one unfused unk each (4 bytes at most).
        let mut unfused = base.clone();
        *unfused.pointer_mut("/model/byte_fallback").unwrap() = Value::from(false);
        *unfused.pointer_mut("/model/fuse_unk").unwrap() = Value::from(false);
        assert_eq!(token_byte_bound(&unfused), Some(8));
        assert_eq!(byte_level_char(b'!'), '!');
        assert_eq!(byte_level_char(b' '), '\u{120}');
    }

    #[test]
    fn mask_of_zero_width_and_post_processor_tokens() {
        let offsets = [(0, 0), (0, 0), (0, 3), (3, 5)];
        let sequences = [None, Some(0), Some(0), Some(0)];
        assert_eq!(
            trainable_mask(&offsets, &sequences, &[0..1]),
            [false, true, true, false]
        );
        assert_eq!(
            trainable_mask(&offsets, &sequences, &[4..5]),
            [false, false, false, true]
        );
        assert_eq!(trainable_mask(&offsets, &sequences, &[]), [false, false, false, false]);
    }
}
