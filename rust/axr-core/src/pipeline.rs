//! `preprocess`: datasets → prepared stores, in parallel, in input order, in bounded memory.
//!
//! ```text
//! reader thread ──chunks (≤2 queued)──> rayon pool: parse → format → encode → length policy
//!                                        └──> in order: store writer (staging)
//! staging ──(seeded shuffle, dataset shard, eval tail)──> train/ and eval/ stores
//! ```
//!
//! Memory holds a few chunks of rows plus 8 bytes per kept sample (the shuffle
//! order), whatever the corpus size. Everything is written under
//! `<prepared_dir>/<fingerprint>.tmp-*` and renamed to `<prepared_dir>/<fingerprint>`
//! when complete, so a crash or Ctrl-C never leaves a store that looks whole.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::chunk;
use crate::dataset_type;
use crate::doctor::{
    Doctor, DoctorReport, GenerationPrompt, RowFindings, SampleSource, SourceWriter, Tally, TemplateOutcome,
};
use crate::encode::{AddedTokens, Encoder};
use crate::error::{Error, Result};
use crate::options::{BadRowPolicy, DatasetOptions, ExcessLengthStrategy, PreprocessOptions, SpecialTokensPolicy};
use crate::source::{self, DatasetFiles, RawChunk, RawRow, RowData, RowReader};
use crate::spec::FormatSpec;
use crate::store::{
    DATA_VERSION, FORMAT_VERSION, Fingerprinter, RawSamples, RunCounts, Staged, StoreContents, StoreMeta, StoreWriter,
    TOKENIZER_DIR, TokenDtype,
};
use crate::{Encoded, FieldError, RenderedText, RowFormatter, Sample, TokenizerInfo};

/// Reason recorded for samples longer than `sequence_len`.
pub const TOO_LONG: &str = "longer_than_sequence_len";
/// Reason recorded for samples without a trained token.
pub const NO_TRAINABLE: &str = "no_trainable_tokens";
/// How many skipped-row messages a run keeps.
const SKIPPED_EXAMPLES: usize = 10;

/// Where a long run stands, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressUpdate<'a> {
    /// What is running: `hash`, `tokenize train`, `tokenize eval`, `shuffle`.
    pub stage: &'a str,
    /// Work done in the stage's unit (bytes for hash and tokenize, samples for shuffle).
    pub done: u64,
    /// Work in the stage, same unit.
    pub total: u64,
    /// Rows read so far in the stage.
    pub rows: u64,
    /// Tokens produced so far in the stage.
    pub tokens: u64,
}

/// Receives progress between chunks; `Break` stops the run (Ctrl-C) with [`Error::Interrupted`].
pub trait Progress {
    /// Called every chunk of work (about every second or less).
    fn tick(&mut self, update: &ProgressUpdate<'_>) -> ControlFlow<()>;

    /// A flag the caller sets (from another thread, e.g. on Ctrl-C) to stop the run: the workers
    /// check it before every row, so a stop does not wait for the end of a chunk.
    fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::default()
    }
}

/// A [`Progress`] that shows nothing and never stops.
pub struct NoProgress;

impl Progress for NoProgress {
    fn tick(&mut self, _update: &ProgressUpdate<'_>) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}

fn tick(progress: &mut dyn Progress, update: &ProgressUpdate<'_>) -> Result<()> {
    match progress.tick(update) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(Error::Interrupted),
    }
}

/// What the pipeline needs of a tokenizer.
pub trait PipelineTokenizer: Sync {
    /// Tokenize one formatted sample.
    fn encode(&self, sample: &Sample) -> Result<Encoded, FieldError>;
    /// Number of ids (with added tokens).
    fn vocab_size(&self) -> u64;
    /// Bytes that identify the tokenizer exactly (its serialised form with added tokens).
    fn fingerprint_bytes(&self) -> Vec<u8>;
    /// Save it, as `tokenizer.json` and friends, into `dir` (created by the caller).
    fn save(&self, dir: &Path) -> Result<()>;
    /// The most bytes of text one token can stand for, when the tokenizer bounds it: a text of
    /// more than `sequence_len` times this many bytes is surely longer than `sequence_len`.
    fn max_bytes_per_token(&self) -> Option<usize> {
        None
    }
    /// The beginning-of-sequence token's text, for the data doctor's BOS checks.
    fn bos_text(&self) -> Option<String> {
        None
    }
    /// Texts of the special tokens (BOS, EOS, added special tokens): a row's text holding one
    /// tokenizes as that control token.
    fn special_texts(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Builds the formatter of one dataset from its `format` keys; the `&str` names the entry
/// (`datasets[0]`) for messages.
pub type FormatterFactory<'a> = dyn Fn(&Value, &str) -> Result<Box<dyn RowFormatter>> + 'a;

/// The result of [`preprocess_with`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prepared {
    /// `<prepared_dir>/<fingerprint>`.
    pub root: PathBuf,
    /// The fingerprint (hex).
    pub fingerprint: String,
    /// True when an identical earlier run's stores were reused.
    pub reused: bool,
    /// Store directories by split (`train`, and `eval` when there is one).
    pub stores: BTreeMap<String, PathBuf>,
    /// Wall time of this call.
    pub seconds: f64,
    /// What the user should know but did not stop the run (e.g. a symlink loop not followed).
    pub warnings: Vec<String>,
    /// Which encoder tokenized (fast or `tokenizers`, and why), set by [`preprocess`].
    pub encoder: Option<crate::encode::EncoderSummary>,
}

struct Settings {
    sequence_len: usize,
    on_bad_row: BadRowPolicy,
    vocab_size: u64,
    /// Under `drop` only: texts longer than this many bytes are dropped without tokenizing them
    /// (truncation and splitting need the tokens of the full text, which a cut text cannot promise).
    surely_too_long_bytes: Option<usize>,
    /// The per-row checks, when the doctor runs or special tokens in text are errors.
    doctor: Option<Doctor>,
    /// Whether the doctor's report is kept (`options.doctor`).
    report: bool,
    special_tokens_error: bool,
    /// Used under `truncate` only: twice the bytes `sequence_len` tokens can stand for; a text more than twice
    /// this long is tokenized as prefixes (see `encode_prefix`).
    truncate_prefix_bytes: Option<usize>,
    /// Building a part of a sharded run: the doctor's locations are `file index:range line`
    /// (the merge makes them `path:line`), and template checks are kept as outcomes.
    part: bool,
}

impl Settings {
    fn new(options: &PreprocessOptions, tokenizer: &dyn PipelineTokenizer, vocab_size: u64) -> Self {
        let special_tokens_error = options.special_tokens_in_text == SpecialTokensPolicy::Error;
        Self {
            sequence_len: options.sequence_len,
            on_bad_row: options.on_bad_row,
            vocab_size,
            surely_too_long_bytes: tokenizer
                .max_bytes_per_token()
                .and_then(|bytes| bytes.checked_mul(options.sequence_len)),
            doctor: (options.doctor || special_tokens_error).then(|| Doctor::new(tokenizer)),
            report: options.doctor,
            special_tokens_error,
            truncate_prefix_bytes: tokenizer
                .max_bytes_per_token()
                .and_then(|bytes| bytes.checked_mul(options.sequence_len))
                .and_then(|bytes| bytes.checked_mul(2)),
            part: false,
        }
    }
}

/// `rendered` cut to at most `at` bytes (at a character boundary), trainable spans clipped.
fn text_prefix(rendered: &RenderedText, at: usize) -> Sample {
    let mut end = at.min(rendered.text.len());
    while !rendered.text.is_char_boundary(end) {
        end -= 1;
    }
    Sample::Text(RenderedText {
        text: rendered.text[..end].to_owned(),
        trainable: rendered
            .trainable
            .iter()
            .filter(|span| span.start < end)
            .map(|span| span.start..span.end.min(end))
            .collect(),
        add_special_tokens: rendered.add_special_tokens,
    })
}

/// Under `truncate`, a text far longer than `sequence_len` tokens can cover: only its first
/// `sequence_len` tokens are kept, so tokenizing all of it (~100x its size in tokenizer memory) is
/// waste. Those tokens lie within the first `sequence_len * max_bytes_per_token` bytes, but where
/// they end can depend on the text after them (a BPE word or a pre-tokenizer match running on), so
/// the text is tokenized cut at 2x and at 4x that length: when both give the same first tokens
/// (ids and trainable flags), the text after the cut did not reach them, and the longer prefix's
/// encoding is used. When they differ, the whole text is tokenized as before (`None`).
fn encode_prefix(
    sample: &Sample,
    tokenizer: &dyn PipelineTokenizer,
    settings: &Settings,
) -> Option<Result<Encoded, FieldError>> {
    let (Sample::Text(rendered), Some(cut)) = (sample, settings.truncate_prefix_bytes) else {
        return None;
    };
    if rendered.text.len() <= cut.saturating_mul(2) {
        return None;
    }
    let keep = settings.sequence_len;
    let short = tokenizer.encode(&text_prefix(rendered, cut));
    let long = tokenizer.encode(&text_prefix(rendered, cut * 2));
    match (short, long) {
        (Ok(short), Ok(long))
            if short.input_ids.len() > keep
                && long.input_ids.len() > keep
                && short.input_ids[..keep] == long.input_ids[..keep]
                && short.trainable[..keep] == long.trainable[..keep] =>
        {
            Some(Ok(long))
        }
        (Err(error), _) | (_, Err(error)) => Some(Err(error)),
        _ => None,
    }
}

enum Outcome {
    Kept {
        encoded: Encoded,
        truncated: bool,
        findings: RowFindings,
    },
    /// A document under `split`: the chunks kept (one when it fits) and what was dropped.
    Chunked {
        encoded: Encoded,
        chunks: chunk::Chunks,
        findings: RowFindings,
    },
    /// Dropped for `reason`, after tokenizing into this many tokens (0 when never tokenized).
    Dropped(&'static str, u64),
    Bad(FieldError),
    Interrupted,
}

pub(crate) fn parse_row<'a>(
    row: &'a RawRow,
    bytes: &[u8],
) -> Result<std::borrow::Cow<'a, Map<String, Value>>, FieldError> {
    use std::borrow::Cow;
    let text = |range: &std::ops::Range<usize>| {
        std::str::from_utf8(&bytes[range.clone()])
            .map(str::to_owned)
            .map_err(|error| {
                FieldError::new(
                    "-",
                    format!("invalid UTF-8 at byte {} of the line", error.valid_up_to()),
                )
            })
    };
    match &row.data {
        RowData::Parsed(map) => Ok(Cow::Borrowed(map)),
        RowData::TextLine(range) => {
            let mut map = Map::new();
            map.insert("text".into(), Value::String(text(range)?));
            Ok(Cow::Owned(map))
        }
        RowData::JsonLine(range) => {
            let line = &bytes[range.clone()];
            if let Err(error) = std::str::from_utf8(line) {
                return Err(FieldError::new(
                    "-",
                    format!("invalid UTF-8 at byte {} of the line", error.valid_up_to()),
                ));
            }
            match serde_json::from_slice::<Value>(line) {
                Ok(Value::Object(map)) => Ok(Cow::Owned(map)),
                Ok(other) => Err(FieldError::new(
                    "-",
                    format!("row is a JSON {}, expected an object", source::json_type(&other)),
                )),
                Err(error) => Err(FieldError::new(
                    "-",
                    format!("malformed JSON: {}", source::json_message(&error)),
                )),
            }
        }
    }
}

fn process_row(
    row: &RawRow,
    bytes: &[u8],
    formatter: &dyn RowFormatter,
    tokenizer: &dyn PipelineTokenizer,
    settings: &Settings,
    excess: ExcessLengthStrategy,
) -> Outcome {
    let map = match parse_row(row, bytes) {
        Ok(map) => map,
        Err(error) => return Outcome::Bad(error),
    };
    let (sample, conversation) = match formatter.format_for_doctor(&map) {
        Ok(pair) => pair,
        Err(error) => return Outcome::Bad(error),
    };
    // A huge row would take ~100x its size in tokenizer memory only to be dropped.
    if let (Sample::Text(rendered), Some(limit)) = (&sample, settings.surely_too_long_bytes)
        && excess == ExcessLengthStrategy::Drop
        && rendered.text.len() > limit
    {
        return Outcome::Dropped(TOO_LONG, 0);
    }
    let prefix = (excess == ExcessLengthStrategy::Truncate)
        .then(|| encode_prefix(&sample, tokenizer, settings))
        .flatten();
    let encoded = prefix.unwrap_or_else(|| tokenizer.encode(&sample));
    let mut encoded = match encoded {
        Ok(encoded) => encoded,
        Err(error) => return Outcome::Bad(error),
    };
    if let Some(id) = encoded
        .input_ids
        .iter()
        .find(|&&id| u64::from(id) >= settings.vocab_size)
    {
        return Outcome::Bad(FieldError::new(
            "input_ids",
            format!("token id {id} is outside the vocabulary ({} ids)", settings.vocab_size),
        ));
    }
    let findings_of = |encoded: &Encoded, truncated: bool| {
        settings.doctor.as_ref().map_or_else(RowFindings::default, |doctor| {
            let rendered = match (&sample, &conversation) {
                (Sample::Text(text), Some(view)) => Some((text, view)),
                _ => None,
            };
            let mut findings = doctor.examine(&encoded.input_ids, truncated, rendered, tokenizer);
            findings.special_token = doctor.special_token_in(&map);
            findings
        })
    };
    if excess == ExcessLengthStrategy::Split {
        let chunks = chunk::split(&encoded.trainable, settings.sequence_len);
        let findings = findings_of(&encoded, false);
        return Outcome::Chunked {
            encoded,
            chunks,
            findings,
        };
    }
    let mut truncated = false;
    if encoded.input_ids.len() > settings.sequence_len {
        match excess {
            ExcessLengthStrategy::Split => unreachable!("split returned above"),
            ExcessLengthStrategy::Drop => return Outcome::Dropped(TOO_LONG, encoded.input_ids.len() as u64),
            ExcessLengthStrategy::Truncate => {
                encoded.input_ids.truncate(settings.sequence_len);
                encoded.trainable.truncate(settings.sequence_len);
                truncated = true;
            }
        }
    }
    if !encoded.trainable.iter().any(|&flag| flag) {
        return Outcome::Dropped(NO_TRAINABLE, encoded.input_ids.len() as u64);
    }
    let findings = findings_of(&encoded, truncated);
    Outcome::Kept {
        encoded,
        truncated,
        findings,
    }
}

/// Writes the kept chunks of one split document and counts what the split did.
fn write_chunks(
    (writer, sources): (&mut StoreWriter, &mut SourceWriter),
    counts: &mut RunCounts,
    row: &RawRow,
    encoded: &Encoded,
    chunks: chunk::Chunks,
    sequence_len: usize,
) -> Result<()> {
    if encoded.input_ids.len() > sequence_len {
        counts.documents_split += 1;
        counts.chunks_made += chunks.kept.len() as u64;
    }
    for (reason, count) in [(chunk::TOO_SHORT, chunks.too_short), (NO_TRAINABLE, chunks.untrained)] {
        if count > 0 {
            *counts.dropped.entry(reason.into()).or_default() += count;
        }
    }
    counts.tokens_dropped += chunks.tokens_dropped;
    for range in chunks.kept {
        let (ids, trainable) = (&encoded.input_ids[range.clone()], &encoded.trainable[range]);
        writer.push(ids, trainable)?;
        // Every chunk comes from the document's row: `inspect` shows where each came from.
        sources.push(SampleSource {
            dataset: row.dataset as u32,
            file: row.file as u32,
            line: row.line,
        })?;
        counts.samples_kept += 1;
        counts.tokens += ids.len() as u64;
        counts.trainable_tokens += trainable.iter().filter(|&&flag| flag).count() as u64;
    }
    Ok(())
}

/// Formats, tokenizes and writes the rows of `datasets` (in order) into `writer`.
#[expect(
    clippy::too_many_arguments,
    reason = "one private call site; a struct would only rename them"
)]
#[expect(
    clippy::too_many_lines,
    reason = "the in-order loop over a chunk's outcomes; its parts share a dozen locals"
)]
fn tokenize_into(
    reader: RowReader,
    formatters: &[Box<dyn RowFormatter>],
    strategies: &[ExcessLengthStrategy],
    tokenizer: &dyn PipelineTokenizer,
    settings: &Settings,
    pool: &rayon::ThreadPool,
    writer: &mut StoreWriter,
    stage: &str,
    progress: &mut dyn Progress,
) -> Result<Run> {
    let mut counts = RunCounts::default();
    let mut tally = settings.report.then(|| {
        if settings.part {
            Tally::for_part(formatters.len())
        } else {
            Tally::new(formatters.len())
        }
    });
    let mut sources = SourceWriter::create(writer.dir())?;
    let total = reader.bytes_total();
    let files = reader.files.clone();
    // A shard reading a byte range numbers lines from the range; messages need the file's own.
    let origins = reader.line_origins();
    let mut line_bases = BTreeMap::new();
    let mut file_line = |file: usize, line: u64| -> Result<u64> {
        let base = if let Some(&base) = line_bases.get(&file) {
            base
        } else {
            let base = source::absolute_line(&files[file].path, origins[file], 0)?;
            line_bases.insert(file, base);
            base
        };
        Ok(base + line)
    };
    let interrupt = progress.stop_flag();
    std::thread::scope(|scope| {
        // Two chunks queued ahead: the reader stays ahead of the pool without memory growing.
        let (sender, receiver) = mpsc::sync_channel::<Result<RawChunk>>(2);
        let mut reader = reader;
        scope.spawn(move || {
            loop {
                let next = reader.next_chunk().transpose();
                let Some(next) = next else { break };
                let stop = next.is_err();
                if sender.send(next).is_err() || stop {
                    break;
                }
            }
        });
        for chunk in receiver {
            let chunk = chunk?;
            let outcomes: Vec<Outcome> = pool.install(|| {
                chunk
                    .rows
                    .par_iter()
                    .map(|row| {
                        if interrupt.load(Ordering::Relaxed) {
                            return Outcome::Interrupted;
                        }
                        process_row(
                            row,
                            &chunk.bytes,
                            formatters[row.dataset].as_ref(),
                            tokenizer,
                            settings,
                            strategies[row.dataset],
                        )
                    })
                    .collect()
            });
            if interrupt.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            counts.rows_outside_shard += chunk.rows_outside_shard;
            for (row, outcome) in chunk.rows.iter().zip(outcomes) {
                counts.rows_read += 1;
                let location = || {
                    if settings.part {
                        format!("{}:{}", row.file, row.line)
                    } else {
                        format!("{}:{}", files[row.file].path.display(), row.line)
                    }
                };
                let (encoded, truncated, findings, chunks) = match outcome {
                    Outcome::Kept {
                        encoded,
                        truncated,
                        findings,
                    } => (encoded, truncated, findings, None),
                    Outcome::Chunked {
                        encoded,
                        chunks,
                        findings,
                    } => (encoded, false, findings, Some(chunks)),
                    Outcome::Dropped(reason, tokens) => {
                        if let (NO_TRAINABLE, Some(tally)) = (reason, &mut tally) {
                            tally.untrained(location);
                        }
                        *counts.dropped.entry(reason.into()).or_default() += 1;
                        counts.tokens_dropped += tokens;
                        continue;
                    }
                    Outcome::Interrupted => return Err(Error::Interrupted),
                    Outcome::Bad(error) => {
                        let error = Error::Data {
                            path: files[row.file].path.clone(),
                            line: file_line(row.file, row.line)?,
                            field: error.field,
                            message: error.message,
                        };
                        if settings.on_bad_row == BadRowPolicy::Error {
                            return Err(error);
                        }
                        counts.skipped_bad_rows += 1;
                        if counts.skipped_examples.len() < SKIPPED_EXAMPLES {
                            counts.skipped_examples.push(error.to_string());
                        }
                        continue;
                    }
                };
                if let (true, Some((field, special))) = (settings.special_tokens_error, &findings.special_token) {
                    let line = file_line(row.file, row.line)?;
                    return Err(special_token_error(&files[row.file].path, line, field, special));
                }
                if let Some(tally) = &mut tally {
                    let formatter = formatters[row.dataset].as_ref();
                    let prompt = || generation_prompt(row, &chunk.bytes, formatter);
                    let sample = (&encoded.input_ids[..], truncated);
                    tally.kept(row.dataset, &findings, sample, prompt, tokenizer, location);
                }
                match chunks {
                    None => write_sample((writer, &mut sources), &mut counts, row, &encoded, truncated)?,
                    Some(chunks) => write_chunks(
                        (writer, &mut sources),
                        &mut counts,
                        row,
                        &encoded,
                        chunks,
                        settings.sequence_len,
                    )?,
                }
            }
            let update = ProgressUpdate {
                stage,
                done: chunk.bytes_read,
                total,
                rows: counts.rows_read,
                tokens: counts.tokens,
            };
            tick(progress, &update)?;
        }
        Ok(())
    })?;
    sources.finish()?;
    let (doctor, templates) = tally.map(Tally::finish_part).unzip();
    Ok(Run {
        counts,
        doctor,
        templates: templates.unwrap_or_default(),
        source_files: files.iter().map(|file| file.path.display().to_string()).collect(),
    })
}

/// Append a kept sample, with its source, to the store and count it.
fn write_sample(
    (writer, sources): (&mut StoreWriter, &mut SourceWriter),
    counts: &mut RunCounts,
    row: &RawRow,
    encoded: &Encoded,
    truncated: bool,
) -> Result<()> {
    writer.push(&encoded.input_ids, &encoded.trainable)?;
    sources.push(SampleSource {
        dataset: row.dataset as u32,
        file: row.file as u32,
        line: row.line,
    })?;
    if truncated {
        *counts.truncated.entry(TOO_LONG.into()).or_default() += 1;
    }
    counts.samples_kept += 1;
    counts.tokens += encoded.input_ids.len() as u64;
    counts.trainable_tokens += encoded.trainable.iter().filter(|&&flag| flag).count() as u64;
    Ok(())
}

/// The generation prompt of a sampled row (see [`RowFormatter::generation_prompt_before_answer`]);
/// the row is parsed again, which only the few sampled rows of a conversation dataset pay for.
fn generation_prompt(row: &RawRow, bytes: &[u8], formatter: &dyn RowFormatter) -> GenerationPrompt {
    parse_row(row, bytes).map_or(GenerationPrompt::NoFinalAnswer, |map| {
        formatter.generation_prompt_before_answer(&map)
    })
}

fn special_token_error(path: &Path, line: u64, field: &str, special: &str) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        line,
        field: field.to_owned(),
        message: format!(
            "holds the special token text {special:?}, which tokenizes as that control token; remove it \
             from the data, or set special_tokens_in_text = \"report\" to train on it"
        ),
    }
}

/// The merged-datasets order of preprocessing: a seeded permutation of `0..n`.
pub fn shuffled(n: u64, seed: u64) -> Vec<u64> {
    crate::random::shuffled((0..n).collect(), seed, 0, crate::random::MERGE_STREAM)
}

/// Which staged samples go to train and eval, in order: Axolotl's merge → shuffle →
/// `dataset_shard_num` (contiguous shard) → `val_set_size` (the tail is eval).
struct SplitPlan {
    train: Vec<u64>,
    eval: Vec<u64>,
    outside_shard: u64,
}

fn split_plan(samples: u64, options: &PreprocessOptions, with_val: bool) -> Result<SplitPlan> {
    let mut order = if options.shuffle_merged_datasets {
        shuffled(samples, options.seed)
    } else {
        (0..samples).collect()
    };
    let mut outside_shard = 0;
    if let (Some(num), Some(index)) = (options.dataset_shard_num, options.dataset_shard_idx) {
        // datasets' Dataset.shard(contiguous=True): the first n % num shards get one more.
        let (base, extra) = (samples / num, samples % num);
        let start = base * index + index.min(extra);
        let end = start + base + u64::from(index < extra);
        outside_shard = samples - (end - start);
        order = order[start as usize..end as usize].to_vec();
    }
    let mut eval = Vec::new();
    if with_val && options.val_set_size > 0.0 {
        let kept = order.len() as u64;
        let count = if options.val_set_size < 1.0 {
            (options.val_set_size * kept as f64).ceil() as u64
        } else {
            options.val_set_size as u64
        };
        if count >= kept {
            return Err(Error::Config {
                key: "val_set_size".into(),
                message: format!("asks for {count} evaluation samples of {kept}, leaving none to train on"),
            });
        }
        eval = order.split_off((kept - count) as usize);
    }
    Ok(SplitPlan {
        train: order,
        eval,
        outside_shard,
    })
}

/// Copies the samples `order` of `staging` into `writer`.
fn copy_samples(
    staging: &dyn RawSamples,
    order: &[u64],
    writer: &mut StoreWriter,
    stage: &str,
    progress: &mut dyn Progress,
) -> Result<()> {
    let (mut token_bytes, mut mask) = (Vec::new(), Vec::new());
    let total = order.len() as u64;
    let mut sources = SourceWriter::create(writer.dir())?;
    for (done, &index) in order.iter().enumerate() {
        staging.read_sample(index, &mut token_bytes, &mut mask)?;
        writer.push_raw(&token_bytes, &mask)?;
        sources.push(staging.source(index)?)?;
        if done % 65_536 == 65_535 {
            tick(
                progress,
                &ProgressUpdate {
                    stage,
                    done: done as u64 + 1,
                    total,
                    rows: done as u64 + 1,
                    tokens: 0,
                },
            )?;
        }
    }
    sources.finish()
}

struct MetaContext<'a> {
    fingerprint: &'a str,
    tokenizer_hash: String,
    vocab_size: u64,
    options: Value,
    tokenizer: &'a dyn PipelineTokenizer,
}

impl MetaContext<'_> {
    /// The meta.json of a store of `split` holding `contents`.
    fn meta(
        &self,
        split: &str,
        token_dtype: TokenDtype,
        contents: StoreContents,
        run: &Run,
        options: Value,
    ) -> StoreMeta {
        StoreMeta {
            format_version: FORMAT_VERSION,
            data_version: DATA_VERSION,
            axr_version: crate::VERSION.into(),
            split: split.into(),
            fingerprint: self.fingerprint.into(),
            tokenizer_hash: self.tokenizer_hash.clone(),
            token_dtype,
            vocab_size: self.vocab_size,
            samples: contents.samples,
            tokens: contents.tokens,
            trainable_tokens: contents.trainable_tokens,
            longest: contents.longest,
            shards: contents.shards,
            counts: run.counts.clone(),
            doctor: run.doctor.clone(),
            source_files: run.source_files.clone(),
            options,
        }
    }
}

/// What one tokenize pass produced besides the samples.
#[derive(Default)]
struct Run {
    counts: RunCounts,
    doctor: Option<DoctorReport>,
    /// A part's template-check outcomes per dataset (see [`Tally::for_part`]).
    templates: Vec<Vec<TemplateOutcome>>,
    source_files: Vec<String>,
}

fn finish_store(writer: StoreWriter, split: &str, run: &Run, context: &MetaContext<'_>) -> Result<StoreMeta> {
    let dir = writer.dir().to_path_buf();
    let dtype = writer.dtype();
    let contents: StoreContents = writer.finish()?;
    let tokenizer_dir = dir.join(TOKENIZER_DIR);
    fs_err::create_dir_all(&tokenizer_dir)?;
    context.tokenizer.save(&tokenizer_dir)?;
    let meta = context.meta(split, dtype, contents, run, context.options.clone());
    meta.write(&dir)?;
    Ok(meta)
}

fn resolve_group(datasets: &[DatasetOptions], list: &str, warnings: &mut Vec<String>) -> Result<Vec<DatasetFiles>> {
    datasets
        .iter()
        .enumerate()
        .map(|(index, dataset)| {
            let key = dataset.key(list, index);
            let mut found = Vec::new();
            let files = source::resolve(&dataset.source, &key, &mut found)?;
            warnings.extend(found.into_iter().map(|warning| format!("{key}.path: {warning}")));
            let shard = dataset
                .source
                .shards
                .map(|shards| (shards, dataset.source.shards_idx.unwrap_or(0)));
            Ok(DatasetFiles { files, shard })
        })
        .collect()
}

fn build_formatters(
    datasets: &[DatasetOptions],
    list: &str,
    build: &FormatterFactory<'_>,
) -> Result<Vec<Box<dyn RowFormatter>>> {
    datasets
        .iter()
        .enumerate()
        .map(|(index, dataset)| {
            let key = dataset.key(list, index);
            build(&dataset.format, &key)
        })
        .collect()
}

/// Everything resolved before any work: the files, the formatters and the fingerprint.
struct Plan {
    train: Vec<DatasetFiles>,
    eval: Vec<DatasetFiles>,
    fingerprint: String,
    tokenizer_hash: String,
    warnings: Vec<String>,
}

fn plan(options: &PreprocessOptions, tokenizer: &dyn PipelineTokenizer, progress: &mut dyn Progress) -> Result<Plan> {
    options.validate()?;
    let mut warnings = Vec::new();
    let train = resolve_group(&options.datasets, "datasets", &mut warnings)?;
    let eval = resolve_group(&options.test_datasets, "test_datasets", &mut warnings)?;
    let tokenizer_bytes = tokenizer.fingerprint_bytes();
    let mut hasher = settings_hasher(options, &tokenizer_bytes);
    let total: u64 = train
        .iter()
        .chain(&eval)
        .flat_map(|dataset| &dataset.files)
        .map(|file| file.size)
        .sum();
    let mut done = 0u64;
    let mut last_tick = Instant::now();
    let mut interrupted = false;
    // A dataset's template given as a file: editing the file must rebuild the store.
    for dataset in options.datasets.iter().chain(&options.test_datasets) {
        let jinja = dataset.format.get("chat_template_jinja").and_then(Value::as_str);
        if let Some(path) = jinja.and_then(crate::template::jinja_file) {
            hasher.add("chat_template_jinja", &fs_err::read(path)?);
        }
    }
    for (group, datasets) in [("train", &train), ("eval", &eval)] {
        for (index, dataset) in datasets.iter().enumerate() {
            hasher.add(group, &(index as u64).to_le_bytes());
            for file in &dataset.files {
                let completed = hasher.add_file(&file.path, |bytes| {
                    done += bytes;
                    if last_tick.elapsed().as_millis() >= 200 {
                        last_tick = Instant::now();
                        let update = ProgressUpdate {
                            stage: "hash",
                            done,
                            total,
                            rows: 0,
                            tokens: 0,
                        };
                        interrupted = progress.tick(&update).is_break();
                    }
                    !interrupted
                })?;
                if !completed {
                    return Err(Error::Interrupted);
                }
            }
        }
    }
    Ok(Plan {
        train,
        eval,
        fingerprint: hasher.hex(),
        tokenizer_hash: tokenizer_hash(&tokenizer_bytes),
        warnings,
    })
}

/// The fingerprint's hasher after everything but the inputs' bytes: the data version, the
/// options that decide the output, and the tokenizer.
fn settings_hasher(options: &PreprocessOptions, tokenizer_bytes: &[u8]) -> Fingerprinter {
    let mut hasher = Fingerprinter::new();
    hasher.add("data version", &DATA_VERSION.to_le_bytes());
    hasher.add("options", options.fingerprint_json().as_bytes());
    hasher.add("tokenizer", tokenizer_bytes);
    hasher
}

fn tokenizer_hash(tokenizer_bytes: &[u8]) -> String {
    let mut hasher = Fingerprinter::new();
    hasher.add("tokenizer", tokenizer_bytes);
    hasher.hex()
}

/// The store root the options produce, without building it: `<prepared_dir>/<fingerprint>`.
pub fn locate_with(options: &PreprocessOptions, tokenizer: &dyn PipelineTokenizer) -> Result<PathBuf> {
    let plan = plan(options, tokenizer, &mut NoProgress)?;
    Ok(options.prepared_dir.join(plan.fingerprint))
}

fn existing(root: &Path) -> Result<Option<BTreeMap<String, PathBuf>>> {
    if !root.join("train").join(crate::store::META_FILE).is_file() {
        return Ok(None);
    }
    let mut stores = BTreeMap::new();
    for split in ["train", "eval"] {
        let dir = root.join(split);
        if dir.join(crate::store::META_FILE).is_file() {
            StoreMeta::read(&dir)?;
            stores.insert(split.to_string(), dir);
        }
    }
    Ok(Some(stores))
}

/// Run the pipeline with a given tokenizer and formatter factory (`build(format, key)`).
pub fn preprocess_with(
    options: &PreprocessOptions,
    tokenizer: &dyn PipelineTokenizer,
    build: &FormatterFactory<'_>,
    progress: &mut dyn Progress,
) -> Result<Prepared> {
    let started = Instant::now();
    options.validate()?;
    // Formatters first: a wrong format key fails before the inputs are hashed.
    let train_formatters = build_formatters(&options.datasets, "datasets", build)?;
    let eval_formatters = build_formatters(&options.test_datasets, "test_datasets", build)?;
    let plan = plan(options, tokenizer, progress)?;
    let root = options.prepared_dir.join(&plan.fingerprint);
    // A verification run must encode: it never reuses a store.
    if options.verify_encoder == 0
        && let Some(stores) = existing(&root)?
    {
        return Ok(Prepared {
            root,
            fingerprint: plan.fingerprint,
            reused: true,
            stores,
            seconds: started.elapsed().as_secs_f64(),
            warnings: plan.warnings,
            encoder: None,
        });
    }
    // The parts of a sharded run of these very inputs: join them instead of starting over.
    if let Some(mut prepared) = sharded::merge_if_complete(options, tokenizer, &plan, progress)? {
        prepared.seconds = started.elapsed().as_secs_f64();
        return Ok(prepared);
    }
    let stores = publish(&options.prepared_dir, &plan.fingerprint, |temporary| {
        build_stores(
            options,
            tokenizer,
            &plan,
            &train_formatters,
            &eval_formatters,
            temporary,
            progress,
        )
    })?;
    Ok(Prepared {
        root,
        fingerprint: plan.fingerprint,
        reused: false,
        stores,
        seconds: started.elapsed().as_secs_f64(),
        warnings: plan.warnings,
        encoder: None,
    })
}

/// A fresh temporary folder name beside `name` in `parent`.
fn temporary_dir(parent: &Path, name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |time| time.subsec_nanos());
    parent.join(format!("{name}.tmp-{}-{nanos}", std::process::id()))
}

/// Runs `build` in a temporary folder and renames it to `<prepared_dir>/<fingerprint>` when it
/// succeeds (it is removed when it fails); returns the store folders by split.
fn publish(
    prepared_dir: &Path,
    fingerprint: &str,
    build: impl FnOnce(&Path) -> Result<Vec<&'static str>>,
) -> Result<BTreeMap<String, PathBuf>> {
    fs_err::create_dir_all(prepared_dir)?;
    let root = prepared_dir.join(fingerprint);
    let temporary = temporary_dir(prepared_dir, fingerprint);
    let stores = match build(&temporary) {
        Ok(stores) => stores,
        Err(error) => {
            // Best effort: the error that stopped the run matters more than a cleanup failure.
            let _ = fs_err::remove_dir_all(&temporary);
            return Err(error);
        }
    };
    if let Err(error) = fs_err::rename(&temporary, &root) {
        let _ = fs_err::remove_dir_all(&temporary);
        // Another run finished the same fingerprint first: its stores are identical.
        if existing(&root)?.is_none() {
            return Err(error.into());
        }
    }
    Ok(stores
        .into_iter()
        .map(|split| (split.to_string(), root.join(split)))
        .collect())
}

#[expect(
    clippy::too_many_lines,
    reason = "train then eval, in the order they run; apart they would pass a dozen locals around"
)]
fn build_stores(
    options: &PreprocessOptions,
    tokenizer: &dyn PipelineTokenizer,
    plan: &Plan,
    train_formatters: &[Box<dyn RowFormatter>],
    eval_formatters: &[Box<dyn RowFormatter>],
    temporary: &Path,
    progress: &mut dyn Progress,
) -> Result<Vec<&'static str>> {
    let threads = options
        .num_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|index| format!("axr-preprocess-{index}"))
        .build()
        .map_err(|error| Error::Invalid(format!("cannot start {threads} preprocessing threads: {error}")))?;
    let vocab_size = tokenizer.vocab_size();
    let dtype = TokenDtype::for_vocab(vocab_size);
    let settings = Settings::new(options, tokenizer, vocab_size);
    let context = MetaContext {
        fingerprint: &plan.fingerprint,
        tokenizer_hash: plan.tokenizer_hash.clone(),
        vocab_size,
        options: serde_json::to_value(options).expect("options serialise"),
        tokenizer,
    };
    let mut written = vec!["train"];
    let train_strategies = chunk::strategies(options.excess_length_strategy, &options.datasets, "datasets")?;
    let eval_strategies = chunk::strategies(options.excess_length_strategy, &options.test_datasets, "test_datasets")?;
    let tokenize = |datasets: &[DatasetFiles],
                    formatters,
                    strategies: &[ExcessLengthStrategy],
                    dir: &Path,
                    stage,
                    progress: &mut dyn Progress| {
        let reader = RowReader::new(datasets.to_vec(), options.chunk_rows, options.chunk_bytes);
        let mut writer = StoreWriter::create(dir, dtype, options.shard_tokens)?;
        let run = tokenize_into(
            reader,
            formatters,
            strategies,
            tokenizer,
            &settings,
            &pool,
            &mut writer,
            stage,
            progress,
        )?;
        Ok::<_, Error>((writer, run))
    };

    let reorder = options.shuffle_merged_datasets || options.val_set_size > 0.0 || options.dataset_shard_num.is_some();
    let staging = temporary.join("staging");
    let direct = temporary.join("train");
    let (writer, mut run) = tokenize(
        &plan.train,
        train_formatters,
        &train_strategies,
        if reorder { &staging } else { &direct },
        "tokenize train",
        progress,
    )?;
    if run.counts.samples_kept == 0 {
        return Err(no_samples("datasets", &run.counts));
    }
    if reorder {
        let staged = writer.finish()?;
        write_staging_meta(&staging, &staged, dtype, &context)?;
        let staging_store = Staged::open(&staging)?;
        let split = split_plan(staging_store.sample_count(), options, true)?;
        run.counts.samples_outside_dataset_shard = split.outside_shard;
        let mut train = StoreWriter::create(&direct, dtype, options.shard_tokens)?;
        copy_samples(&staging_store, &split.train, &mut train, "shuffle", progress)?;
        finish_store(train, "train", &run, &context)?;
        if !split.eval.is_empty() {
            let mut eval = StoreWriter::create(&temporary.join("eval"), dtype, options.shard_tokens)?;
            copy_samples(&staging_store, &split.eval, &mut eval, "shuffle", progress)?;
            finish_store(eval, "eval", &run, &context)?;
            written.push("eval");
        }
        drop(staging_store);
        fs_err::remove_dir_all(&staging)?;
    } else {
        finish_store(writer, "train", &run, &context)?;
    }

    if !plan.eval.is_empty() {
        let eval_staging = temporary.join("staging-eval");
        let eval_dir = temporary.join("eval");
        let target = if options.shuffle_merged_datasets {
            &eval_staging
        } else {
            &eval_dir
        };
        let (writer, run) = tokenize(
            &plan.eval,
            eval_formatters,
            &eval_strategies,
            target,
            "tokenize eval",
            progress,
        )?;
        if run.counts.samples_kept == 0 {
            return Err(no_samples("test_datasets", &run.counts));
        }
        if options.shuffle_merged_datasets {
            let staged = writer.finish()?;
            write_staging_meta(&eval_staging, &staged, dtype, &context)?;
            let staging_store = Staged::open(&eval_staging)?;
            let order = shuffled(staging_store.sample_count(), options.seed);
            let mut eval = StoreWriter::create(&eval_dir, dtype, options.shard_tokens)?;
            copy_samples(&staging_store, &order, &mut eval, "shuffle", progress)?;
            finish_store(eval, "eval", &run, &context)?;
            drop(staging_store);
            fs_err::remove_dir_all(&eval_staging)?;
        } else {
            finish_store(writer, "eval", &run, &context)?;
        }
        written.push("eval");
    }
    Ok(written)
}

fn write_staging_meta(
    dir: &Path,
    contents: &StoreContents,
    dtype: TokenDtype,
    context: &MetaContext<'_>,
) -> Result<()> {
    context
        .meta("staging", dtype, contents.clone(), &Run::default(), Value::Null)
        .write(dir)
}

fn no_samples(key: &str, counts: &RunCounts) -> Error {
    Error::Config {
        key: key.into(),
        message: format!(
            "no sample was kept: {} rows read, dropped {:?}, {} bad rows skipped{}",
            counts.rows_read,
            counts.dropped,
            counts.skipped_bad_rows,
            counts
                .skipped_examples
                .first()
                .map_or_else(String::new, |first| format!(" (first: {first})")),
        ),
    }
}

impl PipelineTokenizer for Encoder {
    fn encode(&self, sample: &Sample) -> Result<Encoded, FieldError> {
        Encoder::encode(self, sample)
    }
    fn vocab_size(&self) -> u64 {
        Encoder::vocab_size(self) as u64
    }
    fn fingerprint_bytes(&self) -> Vec<u8> {
        Encoder::fingerprint_bytes(self)
    }
    fn save(&self, dir: &Path) -> Result<()> {
        Encoder::save(self, dir)
    }
    fn max_bytes_per_token(&self) -> Option<usize> {
        Encoder::max_bytes_per_token(self)
    }
    fn bos_text(&self) -> Option<String> {
        self.info().bos
    }
    fn special_texts(&self) -> Vec<String> {
        Encoder::special_texts(self)
    }
}

/// The tokenizer these options prepare data with (added tokens, top-level chat template);
/// inference prompts are tokenized by the same one.
pub fn load_encoder(options: &PreprocessOptions) -> Result<Encoder> {
    let added = AddedTokens {
        special_tokens: options.special_tokens.clone(),
        tokens: options.tokens.clone(),
    };
    let mut encoder = Encoder::from_dir(&options.tokenizer_dir, &added)?;
    if let Some(name) = &options.chat_template {
        let jinja = options.chat_template_jinja.as_deref();
        encoder.set_chat_template(crate::template::source(name, jinja, &encoder.info())?);
    }
    Ok(encoder)
}

/// The formatter of one dataset entry: its format keys through [`FormatSpec`] and [`dataset_type::build`],
/// with errors naming the entry (`datasets[1].type`).
fn build_formatter(info: &TokenizerInfo, format_keys: &Value, key: &str) -> Result<Box<dyn RowFormatter>> {
    let spec: FormatSpec = serde_json::from_value(format_keys.clone()).map_err(|error| Error::Config {
        key: key.into(),
        message: error.to_string(),
    })?;
    dataset_type::build(&spec, info).map_err(|error| match error {
        Error::Config { key: inner, message } => Error::Config {
            key: format!("{key}.{inner}"),
            message,
        },
        other => other,
    })
}

/// `axr preprocess`: build the stores the options describe, or reuse them when an identical
/// run already did (same inputs' bytes, tokenizer, formats and settings).
pub fn preprocess(options: &PreprocessOptions, progress: &mut dyn Progress) -> Result<Prepared> {
    let started = Instant::now();
    options.validate()?;
    let encoder = load_encoder(options)?;
    encoder.verify_next(options.verify_encoder);
    let info = encoder.info();
    let build = |format_keys: &Value, key: &str| build_formatter(&info, format_keys, key);
    let mut prepared = preprocess_with(options, &encoder, &build, progress)?;
    let summary = encoder.summary();
    if let Some(mismatch) = &summary.mismatch {
        // The store holds tokenizers' ids for the verified texts but not necessarily for the
        // others: it must not be reused.
        let _ = fs_err::remove_dir_all(&prepared.root);
        return Err(Error::Invalid(format!(
            "--verify-encoder: the fast encoder ({}) {mismatch}; set {}=0 to encode with tokenizers",
            summary.detail,
            crate::encode::FAST_ENCODER_ENV
        )));
    }
    prepared.encoder = Some(summary);
    // The reported time includes loading the tokenizer, part of every run, reused or not.
    prepared.seconds = started.elapsed().as_secs_f64();
    Ok(prepared)
}

/// Where [`preprocess`] puts (or found) the stores of these options, without building them.
pub fn locate(options: &PreprocessOptions) -> Result<PathBuf> {
    options.validate()?;
    locate_with(options, &load_encoder(options)?)
}

mod sharded;

pub use sharded::{PartReport, ShardSpec, merge_parts, merge_parts_with, preprocess_part, preprocess_part_with};

#[cfg(test)]
mod tests;
