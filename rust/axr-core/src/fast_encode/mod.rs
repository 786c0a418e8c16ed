//! A fast encoder, id-identical to `tokenizers`, for the pipelines most models use.
//!
//! `tokenizers` spends most of its time on its general normalizer/pre-tokenizer/offset
//! machinery, not on BPE: the words of a corpus repeat (a few percent are distinct). This
//! encoder takes only tokenizer.json pipelines it recognises completely, splits added tokens the
//! way `tokenizers` does, cuts the text into words with a hand-written scanner and encodes each
//! distinct word once with the tokenizer's own BPE model, caching word → ids + lengths per
//! thread. Anything else is left to `tokenizers`, with the reason ([`recognise`]).
//!
//! Recognised pipelines:
//! - **SentencePiece BPE** (Llama/Mistral): normalizer `Prepend("▁")` + `Replace(" ", "▁")` and
//!   no pre-tokenizer, or `Metaspace` (any prepend scheme, with or without `split`) and no
//!   normalizer; byte fallback. With `split: true` `tokenizers` cuts before every "▁" and so do
//!   we. Otherwise it runs BPE on each whole segment; cutting it before every "▁" that follows
//!   another char cannot change the result when no vocabulary piece holds a char followed by
//!   "▁" (checked on load), since no merge can then cross a cut.
//! - **Byte-level BPE**: no normalizer or NFC (texts already in NFC only), `ByteLevel` with
//!   GPT-2's regex or `Split(tekken's, Llama 3's or Qwen 2's regex)` + `ByteLevel`; the scanners
//!   of [`scan`] split exactly like those regexes.
//!
//! Post-processors: `TemplateProcessing` and `ByteLevel`, alone or in a `Sequence`; a
//! `ByteLevel` with `trim_offsets` (byte-level pipelines only) trims each token's offsets as
//! `tokenizers`' `process_offsets` does, from the token's string.

mod scan;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use daachorse::{DoubleArrayAhoCorasick, DoubleArrayAhoCorasickBuilder, MatchKind};
use regex::Regex;
use serde_json::Value;
use tokenizers::models::bpe::BPE;
use tokenizers::{Model, ModelWrapper, Tokenizer};

use scan::Pattern;

/// Words a thread caches before it starts over: bounds memory on corpora of endless new words.
const CACHE_WORDS: usize = 1 << 18;

/// The replacement char of SentencePiece for spaces.
const METASPACE: &str = "\u{2581}";

/// How words are cut and fed to BPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    SentencePiece(Prepend, Cut),
    ByteLevel(Pattern),
}

/// Where a SentencePiece segment is cut into the words BPE sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// `tokenizers` runs BPE on the whole segment; cutting before each "▁" that follows another
    /// char is exact when no vocabulary piece spans such a cut (checked on load).
    AfterOther,
    /// `Metaspace` with `split: true` splits before every "▁" (`MergedWithNext`), so BPE sees
    /// exactly these words whatever the vocabulary.
    EveryMarker,
}

/// When a SentencePiece pipeline puts "▁" before a piece of text (a piece: the text between
/// added tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prepend {
    /// The legacy `Prepend("▁")` normalizer: before every piece.
    Every,
    /// `Metaspace` with `prepend_scheme: always`: before every piece not starting with a space.
    Always,
    /// `Metaspace` with `prepend_scheme: first`: as `Always`, for the piece at the text's start only.
    First,
    /// `Metaspace` with `prepend_scheme: never`.
    Never,
}

/// An added token as `tokenizers` matches it.
#[derive(Debug, Clone)]
struct Added {
    id: u32,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
}

/// One of the two added-token passes: tokens matched on the raw text, then on normalized pieces.
struct AddedSet {
    automaton: Option<DoubleArrayAhoCorasick<u32>>,
    tokens: Vec<Added>,
}

/// What a text is cut into by the added-token passes.
enum Piece {
    Added(u32, Range<usize>),
    Text(Range<usize>),
}

// The same patterns `tokenizers` uses for the added-token options (regex crate, Unicode `\w`/`\s`).
static STARTS_WITH_WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\w").expect("valid regex"));
static ENDS_WITH_WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\w$").expect("valid regex"));
static RIGHTMOST_SPACE_AT_START: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\s*").expect("valid regex"));
static LEFTMOST_SPACE_AT_END: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\s*$").expect("valid regex"));

impl AddedSet {
    fn new(tokens: Vec<(String, Added)>) -> Result<Self, String> {
        if tokens.is_empty() {
            return Ok(Self {
                automaton: None,
                tokens: Vec::new(),
            });
        }
        let patterns: Vec<(&str, u32)> = tokens
            .iter()
            .enumerate()
            .map(|(index, (content, _))| (content.as_str(), index as u32))
            .collect();
        let automaton = DoubleArrayAhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .build_with_values(patterns)
            .map_err(|error| format!("added tokens: {error}"))?;
        Ok(Self {
            automaton: Some(automaton),
            tokens: tokens.into_iter().map(|(_, added)| added).collect(),
        })
    }

    /// `AddedVocabulary::find_matches` of `tokenizers`, over `text[range]`.
    fn split(&self, text: &str, range: Range<usize>, out: &mut Vec<Piece>) {
        let Some(automaton) = &self.automaton else {
            out.push(Piece::Text(range));
            return;
        };
        let base = range.start;
        let sentence = &text[range];
        let mut start_offset = 0;
        for found in automaton.leftmost_find_iter(sentence) {
            let (mut start, mut stop) = (found.start(), found.end());
            let token = &self.tokens[found.value() as usize];
            if token.single_word {
                let start_space = start == 0 || !ENDS_WITH_WORD.is_match(&sentence[..start]);
                let stop_space = stop == sentence.len() || !STARTS_WITH_WORD.is_match(&sentence[stop..]);
                if !start_space || !stop_space {
                    continue;
                }
            }
            if token.lstrip {
                let new_start = LEFTMOST_SPACE_AT_END
                    .find(&sentence[..start])
                    .map_or(start, |space| space.start());
                start = new_start.max(start_offset);
            }
            if token.rstrip {
                stop += RIGHTMOST_SPACE_AT_START
                    .find(&sentence[stop..])
                    .map_or(0, |space| space.end());
            }
            if start_offset < start {
                out.push(Piece::Text(base + start_offset..base + start));
            }
            out.push(Piece::Added(token.id, base + start..base + stop));
            start_offset = stop;
        }
        if start_offset != sentence.len() {
            out.push(Piece::Text(base + start_offset..base + sentence.len()));
        }
    }
}

/// Counters over all threads, for the summary and benchmarks.
#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    bpe_nanos: AtomicU64,
    encode_nanos: AtomicU64,
    texts: AtomicU64,
}

/// What the fast encoder did so far (all threads).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct FastStats {
    /// Texts encoded.
    pub texts: u64,
    /// Words found in the per-thread cache.
    pub cache_hits: u64,
    /// Words encoded by the BPE model (then cached).
    pub cache_misses: u64,
    /// Seconds spent in the BPE model on cache misses (all threads together).
    pub bpe_seconds: f64,
    /// Seconds spent encoding in total: added-token split, word scan, cache, BPE, offsets.
    pub encode_seconds: f64,
}

/// Ids and byte offsets of one text; the post-processor's tokens are outside `content`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FastEncoding {
    /// Token ids, post-processor tokens included.
    pub ids: Vec<u32>,
    /// Byte range of the text each token stands for; `(0, 0)` for post-processor tokens.
    pub offsets: Vec<(usize, usize)>,
    /// The tokens that come from the text.
    pub content: Range<usize>,
}

/// The fast encoder of one tokenizer (see the module docs).
pub struct FastEncoder {
    id: u64,
    flavor: Flavor,
    bpe: BPE,
    raw_added: AddedSet,
    normalized_added: AddedSet,
    prefix: Vec<u32>,
    suffix: Vec<u32>,
    trim: Option<Trim>,
    byte_chars: [char; 256],
    /// The tokenizer normalizes to NFC: texts whose pieces are all NFC already are unchanged by
    /// it and encoded here; the others go to `tokenizers` ([`FastEncoder::accepts`]).
    nfc: bool,
    description: String,
    counters: Counters,
}

impl std::fmt::Debug for FastEncoder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FastEncoder")
            .field("flavor", &self.flavor)
            .finish_non_exhaustive()
    }
}

/// A small fast hash for short word keys (the std SipHash costs more than a cache hit saves).
#[derive(Default)]
struct WordHasher(u64);

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
        }
        for &byte in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(byte)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type WordMap = HashMap<Box<str>, (u32, u32), BuildHasherDefault<WordHasher>>;

/// A token of a cached word.
#[derive(Debug, Clone, Copy)]
struct WordToken {
    id: u32,
    /// Where it ends in the word's own bytes (normalized bytes for SentencePiece, original bytes
    /// for byte-level).
    end: u32,
    /// Its string's edge spaces ([`edge_spaces`]) when the post-processor trims offsets, else 0.
    leading: u32,
    trailing: u32,
}

/// One thread's words → tokens: each word's `(start, len)` range of `tokens`.
#[derive(Default)]
struct WordCache {
    owner: u64,
    /// Words without and with the prepended "▁" (SentencePiece's first word of a segment).
    words: [WordMap; 2],
    tokens: Vec<WordToken>,
    hits: u64,
    misses: u64,
    bpe_nanos: u64,
}

thread_local! {
    static CACHE: RefCell<WordCache> = RefCell::new(WordCache::default());
}

static NEXT_ENCODER_ID: AtomicU64 = AtomicU64::new(1);

/// The byte-level alphabet of GPT-2: each byte as a printable char.
fn byte_level_alphabet() -> [char; 256] {
    let mut chars = ['\0'; 256];
    let mut next = 256u32;
    for byte in 0..=255u8 {
        let printable = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        chars[byte as usize] = if printable {
            char::from(byte)
        } else {
            let character = char::from_u32(next).expect("below the surrogates");
            next += 1;
            character
        };
    }
    chars
}

fn is_null(value: Option<&Value>) -> bool {
    value.is_none_or(Value::is_null)
}

fn empty_or_null(value: Option<&Value>) -> bool {
    is_null(value) || value.and_then(Value::as_str) == Some("")
}

/// The flavor of a tokenizer.json's normalizer + pre-tokenizer and whether it normalizes to NFC,
/// or why it is not handled.
fn recognise_flavor(json: &Value) -> Result<(Flavor, bool), String> {
    let normalizer = json.get("normalizer").filter(|value| !value.is_null());
    let pre_tokenizer = json.get("pre_tokenizer").filter(|value| !value.is_null());
    // Qwen 2 normalizes byte-level text to NFC; nothing else in the pipeline changes with it.
    if normalizer == Some(&serde_json::json!({"type": "NFC"})) && pre_tokenizer.is_some() {
        let mut without = json.clone();
        without["normalizer"] = Value::Null;
        return match recognise_flavor(&without)? {
            (flavor @ Flavor::ByteLevel(_), _) => Ok((flavor, true)),
            _ => Err("normalizer NFC with a SentencePiece pipeline is not handled".into()),
        };
    }
    let sentencepiece = serde_json::json!({"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": METASPACE},
        {"type": "Replace", "pattern": {"String": " "}, "content": METASPACE}
    ]});
    match (normalizer, pre_tokenizer) {
        (Some(normalizer), None) if *normalizer == sentencepiece => {
            Ok((Flavor::SentencePiece(Prepend::Every, Cut::AfterOther), false))
        }
        // Metaspace replaces spaces and prepends as the scheme says; without `split` BPE then
        // sees each piece whole, as with the legacy normalizer, with it each "▁"-led word.
        (None, Some(pre))
            if pre.get("type").and_then(Value::as_str) == Some("Metaspace")
                && pre.get("replacement").and_then(Value::as_str) == Some(METASPACE) =>
        {
            let cut = match pre.get("split").and_then(Value::as_bool) {
                Some(false) => Cut::AfterOther,
                Some(true) => Cut::EveryMarker,
                None => return Err("Metaspace without `split` is not handled".into()),
            };
            let prepend = match pre.get("prepend_scheme").and_then(Value::as_str) {
                Some("always") => Prepend::Always,
                Some("first") => Prepend::First,
                Some("never") => Prepend::Never,
                scheme => return Err(format!("Metaspace prepend_scheme {scheme:?} is not handled")),
            };
            Ok((Flavor::SentencePiece(prepend, cut), false))
        }
        (None, Some(pre)) => {
            let byte_level = |value: &Value, use_regex: bool| {
                value.get("type").and_then(Value::as_str) == Some("ByteLevel")
                    && value.get("add_prefix_space").and_then(Value::as_bool) == Some(false)
                    && value.get("use_regex").and_then(Value::as_bool) == Some(use_regex)
            };
            if byte_level(pre, true) {
                return Ok((Flavor::ByteLevel(Pattern::Gpt2), false));
            }
            let steps = pre
                .get("pretokenizers")
                .and_then(Value::as_array)
                .filter(|_| pre.get("type").and_then(Value::as_str) == Some("Sequence"));
            if let Some([split, last]) = steps.map(Vec::as_slice)
                && split.get("type").and_then(Value::as_str) == Some("Split")
                && split.get("behavior").and_then(Value::as_str) == Some("Isolated")
                && split.get("invert").and_then(Value::as_bool) == Some(false)
                && byte_level(last, false)
            {
                let regex = split.pointer("/pattern/Regex").and_then(Value::as_str);
                return regex
                    .and_then(Pattern::recognise)
                    .map(|pattern| (Flavor::ByteLevel(pattern), false))
                    .ok_or_else(|| format!("split pattern {regex:?} has no scanner"));
            }
            Err(format!("pre-tokenizer {pre} is not handled"))
        }
        (Some(normalizer), _) => Err(format!("normalizer {normalizer} is not handled")),
        (None, None) => Err("no normalizer and no pre-tokenizer".into()),
    }
}

/// A `ByteLevel` post-processor with `trim_offsets`: each token's offsets leave out the spaces
/// at the edges of its string (`tokenizers`' `process_offsets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Trim {
    /// The first token keeps one leading space (the one `add_prefix_space` would have added).
    add_prefix_space: bool,
    /// It runs after the template in a `Sequence`: the template's tokens count in "first".
    after_template: bool,
}

/// What the post-processor does to a single text.
#[derive(Debug, Default)]
struct PostProcess {
    /// Ids put before the text.
    prefix: Vec<u32>,
    /// Ids put after the text.
    suffix: Vec<u32>,
    trim: Option<Trim>,
}

/// What the post-processor does, or why it is not handled.
///
/// Takes `TemplateProcessing` and `ByteLevel` (which changes only offsets, and only with
/// `trim_offsets`), alone or in a `Sequence` with at most one of each.
fn post_process(json: &Value) -> Result<PostProcess, String> {
    let Some(processor) = json.get("post_processor").filter(|value| !value.is_null()) else {
        return Ok(PostProcess::default());
    };
    let steps = if processor.get("type").and_then(Value::as_str) == Some("Sequence") {
        processor
            .get("processors")
            .and_then(Value::as_array)
            .ok_or("post-processor Sequence without `processors`")?
            .as_slice()
    } else {
        std::slice::from_ref(processor)
    };
    let mut out = PostProcess::default();
    let mut template_seen = false;
    for step in steps {
        match step.get("type").and_then(Value::as_str) {
            Some("TemplateProcessing") if !template_seen => {
                (out.prefix, out.suffix) = template_processing_ids(step)?;
                template_seen = true;
            }
            Some("ByteLevel") => match step.get("trim_offsets").and_then(Value::as_bool) {
                Some(false) => {}
                Some(true) if out.trim.is_none() => {
                    let add_prefix_space = step
                        .get("add_prefix_space")
                        .and_then(Value::as_bool)
                        .ok_or("post-processor ByteLevel without `add_prefix_space`")?;
                    out.trim = Some(Trim {
                        add_prefix_space,
                        after_template: template_seen,
                    });
                }
                _ => return Err("post-processor ByteLevel trims offsets twice or without `trim_offsets`".into()),
            },
            _ => {
                return Err(format!(
                    "post-processor step {} is not handled",
                    step.get("type").unwrap_or(&Value::Null)
                ));
            }
        }
    }
    Ok(out)
}

/// Leading and trailing chars of a token's string that the `ByteLevel` post-processor trims:
/// "Ġ" (the byte-level space) and whitespace.
fn edge_spaces(token: &str) -> (usize, usize) {
    let space = |character: &char| *character == '\u{120}' || character.is_whitespace();
    let leading = token.chars().take_while(space).count();
    let trailing = token.chars().rev().take_while(space).count();
    (leading, trailing)
}

/// The ids a `TemplateProcessing` puts before and after a single sequence.
fn template_processing_ids(processor: &Value) -> Result<(Vec<u32>, Vec<u32>), String> {
    let single = processor
        .get("single")
        .and_then(Value::as_array)
        .ok_or("TemplateProcessing without `single`")?;
    let (mut prefix, mut suffix, mut seen_sequence) = (Vec::new(), Vec::new(), false);
    for piece in single {
        if piece.get("Sequence").is_some() {
            if seen_sequence {
                return Err("template with two sequences".into());
            }
            seen_sequence = true;
        } else if let Some(name) = piece.pointer("/SpecialToken/id").and_then(Value::as_str) {
            let ids = processor
                .get("special_tokens")
                .and_then(|tokens| tokens.get(name))
                .and_then(|token| token.get("ids"))
                .and_then(Value::as_array)
                .ok_or_else(|| format!("template token {name:?} has no ids"))?;
            let target = if seen_sequence { &mut suffix } else { &mut prefix };
            for id in ids {
                target.push(id.as_u64().ok_or("template id is not a number")? as u32);
            }
        } else {
            return Err(format!("template piece {piece} is not handled"));
        }
    }
    if !seen_sequence {
        return Err("template without the sequence".into());
    }
    Ok((prefix, suffix))
}

/// Why a SentencePiece-style BPE model cannot take the fast path, if it cannot.
fn check_sentencepiece_model(model: &Value, bpe: &BPE, flavor: Flavor) -> Result<(), String> {
    let not_empty = |key: &str| !empty_or_null(model.get(key));
    if not_empty("continuing_subword_prefix") || not_empty("end_of_word_suffix") {
        return Err("BPE subword prefix or suffix is set".into());
    }
    if bpe.ignore_merges {
        return Err("BPE ignore_merges is set".into());
    }
    if !bpe.byte_fallback {
        return Err("BPE without byte fallback".into());
    }
    let vocab = bpe.get_vocab();
    if let Some(byte) = (0..=255u8).find(|byte| !vocab.contains_key(&format!("<0x{byte:02X}>"))) {
        return Err(format!("byte fallback token <0x{byte:02X}> is missing"));
    }
    if !vocab.contains_key(METASPACE) {
        return Err("\"▁\" is not in the vocabulary".into());
    }
    // Words are cut before each "▁" that follows another char: exact only when no piece
    // could span such a cut.
    if let Flavor::SentencePiece(_, Cut::AfterOther) = flavor
        && let Some(piece) = vocab.keys().find(|piece| {
            let mut previous_is_other = false;
            piece.chars().any(|character| {
                let crosses = character == '\u{2581}' && previous_is_other;
                previous_is_other = character != '\u{2581}';
                crosses
            })
        })
    {
        return Err(format!("vocabulary piece {piece:?} spans a word boundary"));
    }
    Ok(())
}

/// The fast encoder for `tokenizer`, or why it must not be used (then `tokenizers` runs).
pub fn recognise(tokenizer: &Tokenizer) -> Result<FastEncoder, String> {
    let json: Value = tokenizer
        .to_string(false)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .ok_or("tokenizer does not serialise")?;
    if !is_null(json.get("truncation")) || !is_null(json.get("padding")) {
        return Err("truncation or padding is set".into());
    }
    if tokenizer.get_encode_special_tokens() {
        return Err("encode_special_tokens is set".into());
    }
    let ModelWrapper::BPE(bpe) = tokenizer.get_model() else {
        return Err("the model is not BPE".into());
    };
    let model = json.get("model").ok_or("no model")?;
    if !is_null(model.get("dropout")) && model.get("dropout").and_then(Value::as_f64) != Some(0.0) {
        return Err("BPE dropout is set".into());
    }
    let (flavor, nfc) = recognise_flavor(&json)?;
    let PostProcess { prefix, suffix, trim } = post_process(&json)?;
    if trim.is_some() && matches!(flavor, Flavor::SentencePiece(..)) {
        return Err("post-processor ByteLevel trims offsets of a SentencePiece pipeline".into());
    }

    let mut raw = Vec::new();
    let mut normalized = Vec::new();
    let mut contents = std::collections::HashSet::new();
    for token in json.get("added_tokens").and_then(Value::as_array).into_iter().flatten() {
        let flag = |key: &str| token.get(key).and_then(Value::as_bool).unwrap_or(false);
        let content = token
            .get("content")
            .and_then(Value::as_str)
            .ok_or("added token without content")?;
        let id = token
            .get("id")
            .and_then(Value::as_u64)
            .ok_or("added token without id")? as u32;
        if content.is_empty() || !contents.insert(content.to_string()) {
            return Err(format!("added token {content:?} is empty or listed twice"));
        }
        let added = Added {
            id,
            single_word: flag("single_word"),
            lstrip: flag("lstrip"),
            rstrip: flag("rstrip"),
        };
        if flag("normalized") {
            if matches!(flavor, Flavor::SentencePiece(..)) {
                return Err(format!(
                    "added token {content:?} is matched after normalization (normalized: true)"
                ));
            }
            normalized.push((content.to_string(), added));
        } else {
            raw.push((content.to_string(), added));
        }
    }

    if matches!(flavor, Flavor::SentencePiece(..)) {
        check_sentencepiece_model(model, bpe, flavor)?;
    }

    Ok(FastEncoder {
        id: NEXT_ENCODER_ID.fetch_add(1, Ordering::Relaxed),
        flavor,
        bpe: bpe.clone(),
        raw_added: AddedSet::new(raw)?,
        normalized_added: AddedSet::new(normalized)?,
        prefix,
        suffix,
        trim,
        byte_chars: byte_level_alphabet(),
        nfc,
        description: describe(flavor, nfc),
        counters: Counters::default(),
    })
}

/// The pipeline's name in the summary.
fn describe(flavor: Flavor, nfc: bool) -> String {
    let name = match flavor {
        Flavor::SentencePiece(Prepend::Every, _) => "SentencePiece BPE (Prepend/Replace \"▁\", byte fallback)",
        Flavor::SentencePiece(_, Cut::AfterOther) => "SentencePiece BPE (Metaspace \"▁\", byte fallback)",
        Flavor::SentencePiece(_, Cut::EveryMarker) => "SentencePiece BPE (Metaspace \"▁\" split, byte fallback)",
        Flavor::ByteLevel(Pattern::Gpt2) => "byte-level BPE, GPT-2 split",
        Flavor::ByteLevel(Pattern::Tekken) => "byte-level BPE, tekken split",
        Flavor::ByteLevel(Pattern::Llama3) => "byte-level BPE, Llama 3 split",
        Flavor::ByteLevel(Pattern::Qwen2) => "byte-level BPE, Qwen 2 split",
    };
    if nfc {
        format!("{name}, NFC (texts not in NFC by tokenizers)")
    } else {
        name.to_string()
    }
}

fn floor_char(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn ceil_char(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

/// Byte length of the SentencePiece space marker at `at` (" " or "▁"), 0 when there is none.
#[inline]
fn marker_len(bytes: &[u8], at: usize) -> usize {
    match bytes.get(at) {
        Some(b' ') => 1,
        Some(0xE2) if bytes.get(at + 1) == Some(&0x96) && bytes.get(at + 2) == Some(&0x81) => 3,
        _ => 0,
    }
}

impl FastEncoder {
    /// Which pipeline this encoder handles, for the summary.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Counters so far, over all threads.
    pub fn stats(&self) -> FastStats {
        let nanos = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64 * 1e-9;
        FastStats {
            texts: self.counters.texts.load(Ordering::Relaxed),
            cache_hits: self.counters.hits.load(Ordering::Relaxed),
            cache_misses: self.counters.misses.load(Ordering::Relaxed),
            bpe_seconds: nanos(&self.counters.bpe_nanos),
            encode_seconds: nanos(&self.counters.encode_nanos),
        }
    }

    /// Whether [`FastEncoder::encode`] gives `tokenizers`' result for `text`: always, unless the
    /// tokenizer normalizes to NFC and a piece between added tokens is not NFC already.
    pub fn accepts(&self, text: &str) -> bool {
        if !self.nfc || text.is_ascii() {
            return true;
        }
        let mut pieces = Vec::new();
        self.raw_added.split(text, 0..text.len(), &mut pieces);
        pieces.iter().all(|piece| match piece {
            Piece::Text(range) => unicode_normalization_alignments::is_nfc(&text[range.clone()]),
            Piece::Added(..) => true,
        })
    }

    /// Encode `text` as `Tokenizer::encode(text, add_special_tokens)` would (for a text it
    /// [`accepts`](FastEncoder::accepts)).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<FastEncoding, String> {
        let started = Instant::now();
        let mut out = FastEncoding::default();
        if add_special_tokens {
            out.ids.extend_from_slice(&self.prefix);
            out.offsets.resize(self.prefix.len(), (0, 0));
        }
        let content_start = out.ids.len();
        // A trimming post-processor after the template sees the template's tokens first.
        let first_index = if self.trim.is_some_and(|trim| trim.after_template) {
            0
        } else {
            content_start
        };
        let mut pieces = Vec::new();
        self.raw_added.split(text, 0..text.len(), &mut pieces);
        let result = CACHE.with(|cell| {
            let mut cache = cell.borrow_mut();
            if cache.owner != self.id {
                *cache = WordCache {
                    owner: self.id,
                    ..WordCache::default()
                };
            }
            let mut inner = Vec::new();
            for piece in pieces {
                match piece {
                    Piece::Added(id, range) => {
                        let spaces = self.added_spaces(&text[range.clone()]);
                        self.push_trimmed(&mut out, first_index, id, (range.start, range.end), spaces);
                    }
                    Piece::Text(range) => {
                        inner.clear();
                        self.normalized_added.split(text, range, &mut inner);
                        for piece in inner.drain(..) {
                            match piece {
                                Piece::Added(id, range) => {
                                    let spaces = self.added_spaces(&text[range.clone()]);
                                    self.push_trimmed(&mut out, first_index, id, (range.start, range.end), spaces);
                                }
                                Piece::Text(range) if !range.is_empty() => match self.flavor {
                                    Flavor::SentencePiece(prepend, cut) => {
                                        self.sentencepiece(&mut cache, prepend, cut, text, range, &mut out)?;
                                    }
                                    Flavor::ByteLevel(pattern) => {
                                        self.byte_level(&mut cache, pattern, text, range, first_index, &mut out)?;
                                    }
                                },
                                Piece::Text(_) => {}
                            }
                        }
                    }
                }
            }
            let counters = &self.counters;
            counters
                .hits
                .fetch_add(std::mem::take(&mut cache.hits), Ordering::Relaxed);
            counters
                .misses
                .fetch_add(std::mem::take(&mut cache.misses), Ordering::Relaxed);
            counters
                .bpe_nanos
                .fetch_add(std::mem::take(&mut cache.bpe_nanos), Ordering::Relaxed);
            Ok::<(), String>(())
        });
        result?;
        out.content = content_start..out.ids.len();
        if add_special_tokens {
            out.ids.extend_from_slice(&self.suffix);
            out.offsets.resize(out.ids.len(), (0, 0));
        }
        self.counters.texts.fetch_add(1, Ordering::Relaxed);
        self.counters
            .encode_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(out)
    }

    /// The [`edge_spaces`] of an added token matched as `matched` (its string in the encoding,
    /// stripped spaces included), when the post-processor trims offsets.
    fn added_spaces(&self, matched: &str) -> (usize, usize) {
        if self.trim.is_some() {
            edge_spaces(matched)
        } else {
            (0, 0)
        }
    }

    /// The cached tokens of `word`, encoding `bpe_input()` on a miss.
    fn lookup<'c>(
        &self,
        cache: &'c mut WordCache,
        table: usize,
        word: &str,
        bpe_input: impl FnOnce() -> String,
        end_of: impl Fn(&str, usize) -> usize,
    ) -> Result<&'c [WordToken], String> {
        if let Some(&(start, len)) = cache.words[table].get(word) {
            cache.hits += 1;
            return Ok(&cache.tokens[start as usize..(start + len) as usize]);
        }
        cache.misses += 1;
        if cache.words[0].len() + cache.words[1].len() >= CACHE_WORDS {
            cache.words.iter_mut().for_each(HashMap::clear);
            cache.tokens.clear();
        }
        let started = Instant::now();
        let input = bpe_input();
        let tokens = self
            .bpe
            .tokenize(&input)
            .map_err(|error| format!("tokenizer failed: {error}"))?;
        let start = cache.tokens.len();
        for token in &tokens {
            let (leading, trailing) = if self.trim.is_some() {
                edge_spaces(&token.value)
            } else {
                (0, 0)
            };
            cache.tokens.push(WordToken {
                id: token.id,
                end: end_of(&input, token.offsets.1) as u32,
                leading: leading as u32,
                trailing: trailing as u32,
            });
        }
        cache.bpe_nanos += started.elapsed().as_nanos() as u64;
        let len = cache.tokens.len() - start;
        cache.words[table].insert(word.into(), (start as u32, len as u32));
        Ok(&cache.tokens[start..])
    }

    /// A text segment through Prepend("▁") + Replace(" ", "▁") + BPE, word by word.
    fn sentencepiece(
        &self,
        cache: &mut WordCache,
        prepend: Prepend,
        cut: Cut,
        text: &str,
        segment: Range<usize>,
        out: &mut FastEncoding,
    ) -> Result<(), String> {
        let bytes = text.as_bytes();
        let starts_with_mark = marker_len(bytes, segment.start) > 0;
        let prepend = match prepend {
            Prepend::Every => true,
            Prepend::Always => !starts_with_mark,
            Prepend::First => segment.start == 0 && !starts_with_mark,
            Prepend::Never => false,
        };
        let first_char = text[segment.start..].chars().next().map_or(0, char::len_utf8);
        let prepended = (segment.start, segment.start + first_char);
        let mut word_start = segment.start;
        let mut at = segment.start;
        let mut after_other = false;
        while at <= segment.end {
            let marker = if at < segment.end { marker_len(bytes, at) } else { 0 };
            let cut_here = match cut {
                Cut::AfterOther => after_other,
                Cut::EveryMarker => at > word_start,
            };
            if at == segment.end || (marker > 0 && cut_here) {
                let word = &text[word_start..at];
                let first = prepend && word_start == segment.start;
                let tokens = self.lookup(
                    cache,
                    usize::from(first),
                    word,
                    || {
                        let mut normalized = String::with_capacity(word.len() + 3);
                        if first {
                            normalized.push_str(METASPACE);
                        }
                        for character in word.chars() {
                            if character == ' ' {
                                normalized.push_str(METASPACE);
                            } else {
                                normalized.push(character);
                            }
                        }
                        normalized
                    },
                    |_, end| end,
                )?;
                // Offsets: the leading "▁"s (3 normalized bytes each) stand for the prepended
                // mark (the segment's first char), a space or a literal "▁"; the rest is as is.
                let unit = |index: usize| -> (usize, usize) {
                    if first && index == 0 {
                        return prepended;
                    }
                    let mut position = word_start;
                    for _ in 0..index - usize::from(first) {
                        position += marker_len(bytes, position);
                    }
                    (position, position + marker_len(bytes, position))
                };
                let mut lead_units = usize::from(first);
                let mut tail = word_start;
                while tail < at && marker_len(bytes, tail) > 0 {
                    tail += marker_len(bytes, tail);
                    lead_units += 1;
                }
                let lead = 3 * lead_units;
                let mut begin = 0usize;
                for token in tokens {
                    let end = token.end as usize;
                    let from = if begin < lead {
                        unit(begin / 3).0
                    } else {
                        floor_char(text, tail + begin - lead)
                    };
                    let to = if end <= lead {
                        unit(end / 3 - 1).1
                    } else {
                        ceil_char(text, tail + end - lead)
                    };
                    out.ids.push(token.id);
                    out.offsets.push((from, to));
                    begin = end;
                }
                if at == segment.end {
                    break;
                }
                word_start = at;
                after_other = false;
            }
            if marker > 0 {
                at += marker;
            } else {
                after_other = true;
                at += 1;
            }
        }
        Ok(())
    }

    /// Push a token of the text, its offsets trimmed as the post-processor does (`tokenizers`'
    /// `process_offsets`): `first_index` is the length of `out` at which the post-processor
    /// counts a token as the first, `spaces` the token's [`edge_spaces`].
    fn push_trimmed(
        &self,
        out: &mut FastEncoding,
        first_index: usize,
        id: u32,
        (mut from, mut to): (usize, usize),
        (mut leading, trailing): (usize, usize),
    ) {
        if let Some(trim) = self.trim {
            if leading > 0 {
                let first = out.ids.len() == first_index || from == 0;
                if first && trim.add_prefix_space && leading == 1 {
                    leading = 0;
                }
                from = (from + leading).min(to);
            }
            if trailing > 0 && to >= trailing {
                to = (to - trailing).max(from);
            }
        }
        out.ids.push(id);
        out.offsets.push((from, to));
    }

    /// A text segment through the split scanner + byte-level BPE, word by word.
    fn byte_level(
        &self,
        cache: &mut WordCache,
        pattern: Pattern,
        text: &str,
        segment: Range<usize>,
        first_index: usize,
        out: &mut FastEncoding,
    ) -> Result<(), String> {
        let piece = &text[segment.clone()];
        let mut at = 0;
        while at < piece.len() {
            let end = scan::next_word(pattern, piece, at);
            let word = &piece[at..end];
            let tokens = self.lookup(
                cache,
                0,
                word,
                || word.bytes().map(|byte| self.byte_chars[byte as usize]).collect(),
                // Each byte is one char of the byte-level alphabet.
                |input, end| input[..end].chars().count(),
            )?;
            let word_start = segment.start + at;
            let mut begin = 0usize;
            for token in tokens {
                let end = token.end as usize;
                let offsets = (floor_char(text, word_start + begin), ceil_char(text, word_start + end));
                let spaces = (token.leading as usize, token.trailing as usize);
                self.push_trimmed(out, first_index, token.id, offsets, spaces);
                begin = end;
            }
            at = end;
        }
        Ok(())
    }
}
