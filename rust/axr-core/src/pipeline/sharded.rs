//! Sharded preprocessing: `axr preprocess CONFIG --shard I/N` builds part I of N reading only its
//! share of the inputs; `axr preprocess CONFIG --merge` (or the first `axr train`) joins the N
//! parts into the stores a single run builds, byte for byte, under the same fingerprint.
//!
//! Shares: the input files (all of `datasets`, then all of `test_datasets`, in reading order) are
//! one run of bytes cut into N equal ranges. A JSON-lines or text file is cut where the cuts
//! fall, and a line belongs to the range that holds its first byte. A file that cannot be cut
//! (parquet, Arrow, a JSON array, an empty file) belongs whole to the range holding its first
//! byte. A part hashes the blocks of 1 MiB its range touches (a fingerprint is composed of block
//! digests, see `store::fingerprint`) and writes the samples of its rows in input order.
//!
//! Part I's rows all come before part I+1's, so the parts read back to back are exactly the
//! staging store of a single run; the merge shuffles, splits and copies them with the same code
//! a single run uses on its staging store, so token data is copied once, as in a single run.
//!
//! Layout: `<prepared_dir>/parts/<key>/<IIIII>-of-<NNNNN>/` with `part.json`, `train/` and, with
//! `test_datasets`, `eval/`. The key hashes what all parts must agree on: settings, tokenizer,
//! and the sizes and kinds of the input files (their bytes are not known to any one part).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{
    FormatterFactory, MetaContext, PipelineTokenizer, Plan, Prepared, Progress, ProgressUpdate, Run, SKIPPED_EXAMPLES,
    Settings, build_formatter, build_formatters, copy_samples, existing, finish_store, load_encoder, no_samples,
    publish, resolve_group, settings_hasher, shuffled, split_plan, temporary_dir, tick, tokenize_into, tokenizer_hash,
    write_staging_meta,
};
use crate::chunk;
use crate::doctor::{DoctorReport, EXAMPLES, TEMPLATE_SAMPLE, TemplateOutcome};
use crate::error::{Error, Result};
use crate::options::PreprocessOptions;
use crate::source::{DatasetFiles, FileKind, RowReader, SourceFile};
use crate::store::{
    ConcatStores, HASH_BLOCK, RawSamples, RunCounts, Staged, StoreWriter, TokenDtype, block_count, block_digests,
};

/// Folder of `<prepared_dir>` that holds the parts of sharded runs.
pub const PARTS_DIR: &str = "parts";
const MANIFEST: &str = "part.json";
const PART_FORMAT: u32 = 2;

/// Which part of a sharded run to build: part `index` (0-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSpec {
    /// 0-based part number, below `count`.
    pub index: u64,
    /// Number of parts.
    pub count: u64,
}

impl ShardSpec {
    /// Part `index` of `count`; an error unless `0 <= index < count`.
    pub fn new(index: u64, count: u64) -> Result<Self> {
        if count == 0 || index >= count {
            return Err(Error::Config {
                key: "--shard".into(),
                message: format!(
                    "{index}/{count}: expected I/N with N at least 1 and I from 0 to N-1 (0-based, as a Slurm array \
                     --array=0-{})",
                    count.max(1) - 1
                ),
            });
        }
        Ok(Self { index, count })
    }

    fn dir_name(self) -> String {
        format!("{:05}-of-{:05}", self.index, self.count)
    }

    fn from_dir_name(name: &str) -> Option<Self> {
        let (index, count) = name.split_once("-of-")?;
        let all_digits = |text: &str| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit());
        if !all_digits(index) || !all_digits(count) {
            return None;
        }
        Self::new(index.parse().ok()?, count.parse().ok()?).ok()
    }
}

/// What [`preprocess_part`] built (or found).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartReport {
    /// The part's folder.
    pub dir: PathBuf,
    /// Which part.
    pub index: u64,
    /// Of how many.
    pub count: u64,
    /// True when an identical part (same settings and same bytes of its share) was there already.
    pub reused: bool,
    /// Input bytes in this part's share.
    pub bytes: u64,
    /// Rows, samples and tokens of this part's share of `datasets`.
    pub train: RunCounts,
    /// The same for `test_datasets`, when there are some.
    pub eval: Option<RunCounts>,
    /// Wall time of this call.
    pub seconds: f64,
    /// What the user should know but did not stop the run.
    pub warnings: Vec<String>,
}

/// One input file as the parts see it.
struct Input<'a> {
    file: &'a SourceFile,
    /// 0: `datasets`, 1: `test_datasets`.
    group: usize,
    dataset: usize,
    /// Offset of its first byte in the run of all inputs.
    offset: u64,
}

fn inputs<'a>(train: &'a [DatasetFiles], eval: &'a [DatasetFiles]) -> Vec<Input<'a>> {
    let mut offset = 0;
    let mut inputs = Vec::new();
    for (group, datasets) in [train, eval].into_iter().enumerate() {
        for (dataset, files) in datasets.iter().enumerate() {
            for file in &files.files {
                inputs.push(Input {
                    file,
                    group,
                    dataset,
                    offset,
                });
                offset += file.size;
            }
        }
    }
    inputs
}

/// Whether a file can be cut between lines: JSON lines and text can, a JSON array (told apart
/// by its first byte, as the reader does), parquet, Arrow and an empty file cannot.
fn splittable(file: &SourceFile) -> Result<bool> {
    match file.kind {
        FileKind::Parquet | FileKind::Arrow => Ok(false),
        _ if file.size == 0 => Ok(false),
        FileKind::Text => Ok(true),
        FileKind::Json => {
            let mut reader = BufReader::new(fs_err::File::open(&file.path)?);
            let mut first = true;
            loop {
                let buffer = reader.fill_buf()?;
                if buffer.is_empty() {
                    return Ok(false);
                }
                let start = if first && buffer.starts_with(b"\xEF\xBB\xBF") {
                    3
                } else {
                    0
                };
                first = false;
                if let Some(&byte) = buffer[start..].iter().find(|byte| !byte.is_ascii_whitespace()) {
                    return Ok(byte != b'[');
                }
                let length = buffer.len();
                reader.consume(length);
            }
        }
    }
}

/// A part's share of one file: the rows it reads (the reader's range: `None` all of them, an
/// empty range none) and the blocks it hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Share {
    rows: Option<Range<u64>>,
    blocks: Range<u64>,
}

/// The byte range of the run of inputs that part `spec` owns; the last part owns the end.
fn bounds(total: u64, spec: ShardSpec) -> Range<u64> {
    let cut = |index: u64| (u128::from(total) * u128::from(index) / u128::from(spec.count)) as u64;
    let end = if spec.index + 1 == spec.count {
        u64::MAX
    } else {
        cut(spec.index + 1)
    };
    cut(spec.index)..end
}

fn share(offset: u64, size: u64, splittable: bool, owned: &Range<u64>) -> Share {
    let none = Share {
        rows: Some(0..0),
        blocks: 0..0,
    };
    if !splittable {
        return if owned.contains(&offset) {
            Share {
                rows: None,
                blocks: 0..block_count(size),
            }
        } else {
            none
        };
    }
    let (start, end) = (owned.start.max(offset), owned.end.min(offset + size));
    if start >= end {
        return none;
    }
    let local = start - offset..end - offset;
    Share {
        blocks: local.start / HASH_BLOCK..local.end.div_ceil(HASH_BLOCK),
        rows: Some(local),
    }
}

/// Hash of everything the parts of one merge must agree on.
fn part_key(options: &PreprocessOptions, tokenizer_bytes: &[u8], inputs: &[Input<'_>]) -> String {
    let mut hasher = settings_hasher(options, tokenizer_bytes);
    hasher.add("parts", &PART_FORMAT.to_le_bytes());
    for input in inputs {
        let kind = match input.file.kind {
            FileKind::Json => "json",
            FileKind::Text => "text",
            FileKind::Parquet => "parquet",
            FileKind::Arrow => "arrow",
        };
        hasher.add("group", &(input.group as u64).to_le_bytes());
        hasher.add("dataset", &(input.dataset as u64).to_le_bytes());
        hasher.add("size", &input.file.size.to_le_bytes());
        hasher.add("kind", kind.as_bytes());
    }
    hasher.hex()
}

/// One input file's entry in a part's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartFile {
    /// Index in the run of all inputs.
    file: usize,
    size: u64,
    /// Digests (hex) of blocks `first_block..` of the file.
    first_block: u64,
    digests: Vec<String>,
    /// The part read only a byte range of the file, and that range held no row.
    range_without_rows: bool,
}

/// `part.json`: what a part holds and what it read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartManifest {
    format_version: u32,
    key: String,
    index: u64,
    count: u64,
    files: Vec<PartFile>,
    /// Per file the part read as a byte range (index in the run of all inputs): the lines it
    /// read, blank ones included. The merge adds those of the parts before to a part's lines.
    lines_read: BTreeMap<usize, u64>,
    train: RunCounts,
    eval: Option<RunCounts>,
    /// The doctor's findings on the part's rows (absent when built with the doctor off).
    train_doctor: Option<PartDoctor>,
    eval_doctor: Option<PartDoctor>,
}

/// A part's doctor report. Its examples are `file index:line` with the part's own line numbers,
/// and its template checks are outcomes: a single run checks the first rows of each dataset,
/// which the merge picks across parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartDoctor {
    report: DoctorReport,
    templates: Vec<Vec<TemplateOutcome>>,
}

impl PartManifest {
    fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let text = fs_err::read_to_string(&path)?;
        let manifest: Self = serde_json::from_str(&text).map_err(|error| Error::Format {
            path: path.clone(),
            message: format!("not a part manifest of this axr version ({error}); rebuild the part"),
        })?;
        if manifest.format_version != PART_FORMAT {
            return Err(Error::Format {
                path,
                message: format!(
                    "part format {}, this axr reads {PART_FORMAT}; rebuild the part",
                    manifest.format_version
                ),
            });
        }
        Ok(manifest)
    }

    /// What decides the part's contents besides the key: its files' bytes.
    fn same_reads(&self, files: &[PartFile]) -> bool {
        self.files.len() == files.len()
            && self.files.iter().zip(files).all(|(old, new)| {
                (old.file, old.size, old.first_block, &old.digests)
                    == (new.file, new.size, new.first_block, &new.digests)
            })
    }
}

/// A dataset's `shards` numbers rows across the whole dataset, which a part reading a byte
/// range cannot do without reading the ranges before it.
fn refuse_interleaved(options: &PreprocessOptions) -> Result<()> {
    for (list, datasets) in [
        ("datasets", &options.datasets),
        ("test_datasets", &options.test_datasets),
    ] {
        for (index, dataset) in datasets.iter().enumerate() {
            if dataset.source.shards.is_some() {
                return Err(Error::Config {
                    key: format!("{}.shards", dataset.key(list, index)),
                    message: "keeps every n-th row of the dataset, and a shard of a sharded run cannot number \
                              the rows of the ranges before its own without reading them: not supported with \
                              --shard yet; remove it (or use the top-level dataset_shard_num), or preprocess \
                              without --shard"
                        .into(),
                });
            }
        }
    }
    Ok(())
}

fn thread_pool(options: &PreprocessOptions) -> Result<rayon::ThreadPool> {
    let threads = options
        .num_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|index| format!("axr-preprocess-{index}"))
        .build()
        .map_err(|error| Error::Invalid(format!("cannot start {threads} preprocessing threads: {error}")))
}

fn hex_digest(digest: u128) -> String {
    format!("{digest:032x}")
}

/// The digests of the blocks each share touches, as manifest entries.
fn hash_shares(inputs: &[Input<'_>], shares: &[Share], progress: &mut dyn Progress) -> Result<Vec<PartFile>> {
    let mut files = Vec::new();
    let to_hash: u64 = inputs
        .iter()
        .zip(shares)
        .map(|(input, share)| {
            (share.blocks.end * HASH_BLOCK).min(input.file.size)
                - (share.blocks.start * HASH_BLOCK).min(input.file.size)
        })
        .sum();
    let (mut hashed, mut last_tick) = (0u64, Instant::now());
    for (index, (input, share)) in inputs.iter().zip(shares).enumerate() {
        if share.blocks.is_empty() {
            continue;
        }
        let mut interrupted = false;
        let digests = block_digests(&input.file.path, share.blocks.clone(), |bytes| {
            hashed += bytes;
            if last_tick.elapsed().as_millis() >= 200 {
                last_tick = Instant::now();
                let update = ProgressUpdate {
                    stage: "hash",
                    done: hashed,
                    total: to_hash,
                    rows: 0,
                    tokens: 0,
                };
                interrupted = progress.tick(&update).is_break();
            }
            !interrupted
        })?
        .ok_or(Error::Interrupted)?;
        files.push(PartFile {
            file: index,
            size: input.file.size,
            first_block: share.blocks.start,
            digests: digests.into_iter().map(hex_digest).collect(),
            range_without_rows: false,
        });
    }

    Ok(files)
}

/// `axr preprocess CONFIG --shard I/N` with a given tokenizer and formatter factory.
pub fn preprocess_part_with(
    options: &PreprocessOptions,
    tokenizer: &dyn PipelineTokenizer,
    build: &FormatterFactory<'_>,
    spec: ShardSpec,
    progress: &mut dyn Progress,
) -> Result<PartReport> {
    let started = Instant::now();
    options.validate()?;
    refuse_interleaved(options)?;
    let train_formatters = build_formatters(&options.datasets, "datasets", build)?;
    let eval_formatters = build_formatters(&options.test_datasets, "test_datasets", build)?;
    let mut warnings = Vec::new();
    let train = resolve_group(&options.datasets, "datasets", &mut warnings)?;
    let eval = resolve_group(&options.test_datasets, "test_datasets", &mut warnings)?;
    let inputs = inputs(&train, &eval);
    let total = inputs.iter().map(|input| input.file.size).sum();
    let owned = bounds(total, spec);
    let shares = inputs
        .iter()
        .map(|input| Ok(share(input.offset, input.file.size, splittable(input.file)?, &owned)))
        .collect::<Result<Vec<_>>>()?;
    let share_bytes: u64 = inputs
        .iter()
        .zip(&shares)
        .map(|(input, share)| match &share.rows {
            None => input.file.size,
            Some(range) => range.end - range.start,
        })
        .sum();

    let tokenizer_bytes = tokenizer.fingerprint_bytes();
    let key = part_key(options, &tokenizer_bytes, &inputs);
    let files = hash_shares(&inputs, &shares, progress)?;

    let parent = options.prepared_dir.join(PARTS_DIR).join(&key);
    let dir = parent.join(spec.dir_name());
    // A part built with the doctor off has no findings to merge: a doctor run rebuilds it.
    if let Ok(old) = PartManifest::read(&dir)
        && old.key == key
        && old.same_reads(&files)
        && (!options.doctor || old.train_doctor.is_some())
    {
        return Ok(PartReport {
            dir,
            index: spec.index,
            count: spec.count,
            reused: true,
            bytes: share_bytes,
            train: old.train,
            eval: old.eval,
            seconds: started.elapsed().as_secs_f64(),
            warnings,
        });
    }

    fs_err::create_dir_all(&parent)?;
    let temporary = temporary_dir(&parent, &spec.dir_name());
    let mut manifest = PartManifest {
        format_version: PART_FORMAT,
        key: key.clone(),
        index: spec.index,
        count: spec.count,
        files,
        lines_read: BTreeMap::new(),
        train: RunCounts::default(),
        eval: None,
        train_doctor: None,
        eval_doctor: None,
    };
    let groups = [(&train, &train_formatters), (&eval, &eval_formatters)];
    let outcome = build_part(
        options,
        tokenizer,
        &key,
        &groups,
        &shares,
        &temporary,
        &mut manifest,
        progress,
    );
    if let Err(error) = outcome {
        let _ = fs_err::remove_dir_all(&temporary);
        return Err(error);
    }
    // A part of the same key and number built from other bytes (an edited input) is replaced.
    if dir.exists() {
        fs_err::remove_dir_all(&dir)?;
    }
    if let Err(error) = fs_err::rename(&temporary, &dir) {
        let _ = fs_err::remove_dir_all(&temporary);
        return Err(error.into());
    }
    Ok(PartReport {
        dir,
        index: spec.index,
        count: spec.count,
        reused: false,
        bytes: share_bytes,
        train: manifest.train,
        eval: manifest.eval,
        seconds: started.elapsed().as_secs_f64(),
        warnings,
    })
}

type Group<'a> = (&'a Vec<DatasetFiles>, &'a Vec<Box<dyn crate::RowFormatter>>);

#[expect(
    clippy::too_many_arguments,
    reason = "one private call site; a struct would only rename them"
)]
fn build_part(
    options: &PreprocessOptions,
    tokenizer: &dyn PipelineTokenizer,
    key: &str,
    groups: &[Group<'_>; 2],
    shares: &[Share],
    temporary: &Path,
    manifest: &mut PartManifest,
    progress: &mut dyn Progress,
) -> Result<()> {
    let pool = thread_pool(options)?;
    let vocab_size = tokenizer.vocab_size();
    let dtype = TokenDtype::for_vocab(vocab_size);
    let settings = Settings {
        part: true,
        ..Settings::new(options, tokenizer, vocab_size)
    };
    let strategies = [
        chunk::strategies(options.excess_length_strategy, &options.datasets, "datasets")?,
        chunk::strategies(options.excess_length_strategy, &options.test_datasets, "test_datasets")?,
    ];
    let context = MetaContext {
        fingerprint: key,
        tokenizer_hash: tokenizer_hash(&tokenizer.fingerprint_bytes()),
        vocab_size,
        options: serde_json::to_value(options).expect("options serialise"),
        tokenizer,
    };
    let mut first_file = 0;
    for (group, (datasets, formatters)) in groups.iter().enumerate() {
        let count: usize = datasets.iter().map(|dataset| dataset.files.len()).sum();
        if group == 1 && datasets.is_empty() {
            break;
        }
        let ranges = shares[first_file..first_file + count]
            .iter()
            .map(|share| share.rows.clone())
            .collect();
        let reader = RowReader::new((*datasets).clone(), options.chunk_rows, options.chunk_bytes).with_ranges(ranges);
        let empty_ranges = reader.empty_ranges();
        let lines_read = reader.lines_read();
        let (split, stage) = if group == 0 {
            ("train", "tokenize train")
        } else {
            ("eval", "tokenize eval")
        };
        let dir = temporary.join(split);
        let mut writer = StoreWriter::create(&dir, dtype, options.shard_tokens)?;
        let run = tokenize_into(
            reader,
            formatters,
            &strategies[group],
            tokenizer,
            &settings,
            &pool,
            &mut writer,
            stage,
            progress,
        )?;
        let staged = writer.finish()?;
        write_staging_meta(&dir, &staged, dtype, &context)?;
        for local in empty_ranges.lock().expect("not poisoned").iter() {
            let file = first_file + local;
            if let Some(entry) = manifest.files.iter_mut().find(|entry| entry.file == file) {
                entry.range_without_rows = true;
            }
        }
        for &(local, lines) in lines_read.lock().expect("not poisoned").iter() {
            manifest.lines_read.insert(first_file + local, lines);
        }
        let doctor = run.doctor.map(|report| PartDoctor {
            report,
            templates: run.templates,
        });
        if group == 0 {
            manifest.train = run.counts;
            manifest.train_doctor = doctor;
        } else {
            manifest.eval = Some(run.counts);
            manifest.eval_doctor = doctor;
        }
        first_file += count;
    }
    let text = serde_json::to_string_pretty(manifest).expect("manifest serialises");
    fs_err::write(temporary.join(MANIFEST), text + "\n")?;
    Ok(())
}

/// Every part folder of `dir` (`<parts>/<key>`) by part count, then index.
fn scan(dir: &Path) -> Result<BTreeMap<u64, BTreeMap<u64, PathBuf>>> {
    let mut found: BTreeMap<u64, BTreeMap<u64, PathBuf>> = BTreeMap::new();
    if !dir.is_dir() {
        return Ok(found);
    }
    for entry in fs_err::read_dir(dir)? {
        let path = entry?.path();
        let spec = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(ShardSpec::from_dir_name);
        if let Some(spec) = spec
            && path.join(MANIFEST).is_file()
        {
            found.entry(spec.count).or_default().insert(spec.index, path);
        }
    }
    Ok(found)
}

fn merge_error(message: String) -> Error {
    Error::Config {
        key: "--merge".into(),
        message,
    }
}

/// The parts under other keys that have the part numbers this key misses: built from other
/// settings, another tokenizer or other input files.
fn elsewhere(parts_root: &Path, key: &str, count: u64, missing: &[u64]) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    if !parts_root.is_dir() {
        return Ok(notes);
    }
    for entry in fs_err::read_dir(parts_root)? {
        let other = entry?.path();
        if other.file_name().and_then(|name| name.to_str()) == Some(key) {
            continue;
        }
        let found = scan(&other)?;
        let Some(parts) = found.get(&count) else { continue };
        let there: Vec<String> = missing
            .iter()
            .filter(|index| parts.contains_key(index))
            .map(|index| format!("{index}/{count}"))
            .collect();
        if !there.is_empty() {
            notes.push(format!("{} holds part {}", other.display(), there.join(", ")));
        }
    }
    Ok(notes)
}

/// The complete set of parts under `<parts>/<key>`, with their manifests; `Ok(Err(message))`
/// says what is missing.
fn complete_set(prepared_dir: &Path, key: &str) -> Result<std::result::Result<Vec<(PathBuf, PartManifest)>, String>> {
    let parts_root = prepared_dir.join(PARTS_DIR);
    let dir = parts_root.join(key);
    let found = scan(&dir)?;
    let complete: Vec<u64> = found
        .iter()
        .filter(|(count, parts)| parts.len() as u64 == **count)
        .map(|(count, _)| *count)
        .collect();
    let count = match complete.as_slice() {
        [count] => *count,
        [] => {
            let Some((count, parts)) = found.iter().max_by_key(|(_, parts)| parts.len()) else {
                let mut message = format!(
                    "no parts of this config under {}: run `axr preprocess CONFIG --shard I/N` for every I from 0 to \
                     N-1 first (a merge deletes the parts it joined: if this config was merged already, `axr \
                     train` finds its store)",
                    dir.display()
                );
                if parts_root.is_dir() && fs_err::read_dir(&parts_root)?.next().is_some() {
                    let _ = write!(
                        message,
                        " ({} holds only parts built with other settings, another tokenizer or other input files)",
                        parts_root.display()
                    );
                }
                return Ok(Err(message));
            };
            let missing: Vec<u64> = (0..*count).filter(|index| !parts.contains_key(index)).collect();
            let listed: Vec<String> = missing.iter().map(|index| format!("{index}/{count}")).collect();
            let mut message = format!(
                "part {} missing under {}: run `axr preprocess CONFIG --shard {}` (parts are numbered from 0)",
                listed.join(", "),
                dir.display(),
                listed[0]
            );
            let others = elsewhere(&parts_root, key, *count, &missing)?;
            if !others.is_empty() {
                let _ = write!(
                    message,
                    "; {} — built with other settings, another tokenizer or other input files than this config, \
                     so it cannot be merged with these",
                    others.join("; ")
                );
            }
            return Ok(Err(message));
        }
        several => {
            return Ok(Err(format!(
                "{} holds complete sets of parts for several part counts ({}); remove the ones you do not want",
                dir.display(),
                several.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
            )));
        }
    };
    let mut set = Vec::new();
    for (index, path) in &found[&count] {
        let manifest = PartManifest::read(path)?;
        if manifest.key != key || manifest.index != *index || manifest.count != count {
            return Err(Error::Format {
                path: path.join(MANIFEST),
                message: format!(
                    "describes part {}/{} of key {}, not the part its folder names; rebuild it",
                    manifest.index, manifest.count, manifest.key
                ),
            });
        }
        set.push((path.clone(), manifest));
    }
    Ok(Ok(set))
}

fn parse_digest(text: &str, path: &Path) -> Result<u128> {
    u128::from_str_radix(text, 16).map_err(|_| Error::Format {
        path: path.join(MANIFEST),
        message: format!("{text:?} is not a block digest"),
    })
}

/// Every input file's block digests, gathered from the parts; parts that read the same block
/// (where a cut falls inside it) must agree.
fn gather_digests(inputs: &[Input<'_>], set: &[(PathBuf, PartManifest)]) -> Result<Vec<Vec<u128>>> {
    let mut blocks: Vec<Vec<Option<(u128, u64)>>> = inputs
        .iter()
        .map(|input| vec![None; block_count(input.file.size) as usize])
        .collect();
    for (path, manifest) in set {
        for entry in &manifest.files {
            let Some(input) = inputs.get(entry.file).filter(|input| input.file.size == entry.size) else {
                return Err(Error::Format {
                    path: path.join(MANIFEST),
                    message: format!(
                        "lists input file {} of {} bytes, which this config does not have",
                        entry.file, entry.size
                    ),
                });
            };
            for (offset, text) in entry.digests.iter().enumerate() {
                let block = entry.first_block as usize + offset;
                let digest = parse_digest(text, path)?;
                let slot = blocks[entry.file].get_mut(block).ok_or_else(|| Error::Format {
                    path: path.join(MANIFEST),
                    message: format!("block {block} is past the end of {}", input.file.path.display()),
                })?;
                match *slot {
                    Some((seen, part)) if seen != digest => {
                        return Err(Error::Format {
                            path: input.file.path.clone(),
                            message: format!(
                                "parts {part} and {} read different bytes at offset {}: the file changed while the \
                                 shards ran; run them again",
                                manifest.index,
                                block as u64 * HASH_BLOCK
                            ),
                        });
                    }
                    _ => *slot = Some((digest, manifest.index)),
                }
            }
        }
    }
    inputs
        .iter()
        .zip(blocks)
        .map(|(input, blocks)| {
            blocks
                .into_iter()
                .enumerate()
                .map(|(block, slot)| {
                    slot.map(|(digest, _)| digest).ok_or_else(|| Error::Format {
                        path: input.file.path.clone(),
                        message: format!(
                            "no part read the bytes at offset {}: the parts were built by different axr versions; \
                             rebuild them",
                            block as u64 * HASH_BLOCK
                        ),
                    })
                })
                .collect()
        })
        .collect()
}

/// A file cut between parts whose ranges all held no row has no rows at all: the error a single
/// run gives for it.
fn check_empty_files(inputs: &[Input<'_>], set: &[(PathBuf, PartManifest)]) -> Result<()> {
    for (index, input) in inputs.iter().enumerate() {
        let entries: Vec<&PartFile> = set
            .iter()
            .flat_map(|(_, manifest)| &manifest.files)
            .filter(|entry| entry.file == index)
            .collect();
        if entries.len() > 1 && entries.iter().all(|entry| entry.range_without_rows) {
            return Err(Error::Data {
                path: input.file.path.clone(),
                line: 0,
                field: "-".into(),
                message: "the file is empty: it has no rows".into(),
            });
        }
    }
    Ok(())
}

/// The fingerprint a single run computes, from the parts' block digests instead of the files.
fn compose_fingerprint(
    options: &PreprocessOptions,
    tokenizer_bytes: &[u8],
    train: &[DatasetFiles],
    eval: &[DatasetFiles],
    digests: &[Vec<u128>],
) -> String {
    let mut hasher = settings_hasher(options, tokenizer_bytes);
    let mut file = 0;
    for (group, datasets) in [("train", train), ("eval", eval)] {
        for (index, dataset) in datasets.iter().enumerate() {
            hasher.add(group, &(index as u64).to_le_bytes());
            for source in &dataset.files {
                hasher.add_file_digests(source.size, &digests[file]);
                file += 1;
            }
        }
    }
    hasher.hex()
}

fn merged_counts<'a>(parts: impl Iterator<Item = &'a RunCounts>) -> RunCounts {
    let mut total = RunCounts::default();
    for counts in parts {
        total.rows_read += counts.rows_read;
        total.rows_outside_shard += counts.rows_outside_shard;
        total.samples_kept += counts.samples_kept;
        for (reason, count) in &counts.dropped {
            *total.dropped.entry(reason.clone()).or_default() += count;
        }
        for (reason, count) in &counts.truncated {
            *total.truncated.entry(reason.clone()).or_default() += count;
        }
        total.skipped_bad_rows += counts.skipped_bad_rows;
        total.skipped_examples.extend(counts.skipped_examples.iter().cloned());
        total.samples_outside_dataset_shard += counts.samples_outside_dataset_shard;
        total.tokens += counts.tokens;
        total.trainable_tokens += counts.trainable_tokens;
        total.documents_split += counts.documents_split;
        total.chunks_made += counts.chunks_made;
        total.tokens_dropped += counts.tokens_dropped;
    }
    // A single run keeps the first messages in input order, which is the parts' order.
    total.skipped_examples.truncate(SKIPPED_EXAMPLES);
    total
}

/// The parts' `split` staging stores as one; `first_file` and `files`: the group's files in the
/// run of all inputs.
fn open_parts(set: &[(PathBuf, PartManifest)], split: &str, first_file: usize, files: usize) -> Result<ConcatStores> {
    let stores = set
        .iter()
        .map(|(dir, _)| Staged::open(&dir.join(split)))
        .collect::<Result<Vec<_>>>()?;
    ConcatStores::new(stores, line_offsets(set, first_file, files))
}

/// Per part, per file of a group: the lines of that file the parts before it read.
fn line_offsets(set: &[(PathBuf, PartManifest)], first_file: usize, files: usize) -> Vec<Vec<u64>> {
    let mut before = vec![0u64; files];
    set.iter()
        .map(|(_, manifest)| {
            let offsets = before.clone();
            for (&file, &lines) in &manifest.lines_read {
                if let Some(slot) = file.checked_sub(first_file).and_then(|local| before.get_mut(local)) {
                    *slot += lines;
                }
            }
            offsets
        })
        .collect()
}

/// The report a single run makes, from the parts' (`None` when the doctor is off): counts add,
/// examples are the first in part order, the template check takes each dataset's first rows
/// across parts. `paths`: the group's files; `offsets`: as [`line_offsets`].
fn merged_doctor(
    options: &PreprocessOptions,
    parts: &[(&Path, Option<&PartDoctor>)],
    paths: &[String],
    offsets: &[Vec<u64>],
) -> Result<Option<DoctorReport>> {
    if !options.doctor {
        return Ok(None);
    }
    let mut total = DoctorReport::default();
    let mut templates: Vec<Vec<String>> = Vec::new();
    let mut checked: Vec<Vec<Option<bool>>> = Vec::new();
    for (index, (dir, part)) in parts.iter().enumerate() {
        let Some(part) = part else {
            return Err(merge_error(format!(
                "part {} was built with the doctor off; build it again without --no-doctor, or merge with --no-doctor",
                dir.display()
            )));
        };
        let relocate = |location: &str| relocate(location, paths, &offsets[index], dir);
        total.rows += part.report.rows;
        for (name, finding) in &part.report.findings {
            let merged = total.findings.entry(name.clone()).or_default();
            merged.count += finding.count;
            for example in &finding.examples {
                if merged.examples.len() < EXAMPLES {
                    merged.examples.push(relocate(example)?);
                }
            }
        }
        for (dataset, outcomes) in part.templates.iter().enumerate() {
            if templates.len() <= dataset {
                templates.resize(dataset + 1, Vec::new());
                checked.resize(dataset + 1, Vec::new());
            }
            for outcome in outcomes {
                if (checked[dataset].len() as u64) < TEMPLATE_SAMPLE {
                    checked[dataset].push(outcome.matches);
                    templates[dataset].push(relocate(&outcome.location)?);
                }
            }
        }
    }
    // Datasets are read one after another, so dataset by dataset is the single run's order.
    for (matches, locations) in checked.into_iter().zip(templates) {
        for (matches, location) in matches.into_iter().zip(locations) {
            total.template(matches, || location);
        }
    }
    Ok(Some(total))
}

/// A part's `file index:line` as the single run's `path:line`.
fn relocate(location: &str, paths: &[String], offsets: &[u64], dir: &Path) -> Result<String> {
    let parsed = location
        .split_once(':')
        .and_then(|(file, line)| Some((file.parse::<usize>().ok()?, line.parse::<u64>().ok()?)))
        .filter(|(file, _)| *file < paths.len());
    let Some((file, line)) = parsed else {
        return Err(Error::Format {
            path: dir.join(MANIFEST),
            message: format!("doctor location {location:?} is not `file index:line`; rebuild the part"),
        });
    };
    Ok(format!(
        "{}:{}",
        paths[file],
        line + offsets.get(file).copied().unwrap_or(0)
    ))
}

/// The stores of a single run, from its staging store given as the parts read back to back.
fn build_merged(
    options: &PreprocessOptions,
    tokenizer: &dyn PipelineTokenizer,
    fingerprint: &str,
    (set, groups): (&[(PathBuf, PartManifest)], [&[DatasetFiles]; 2]),
    temporary: &Path,
    progress: &mut dyn Progress,
) -> Result<Vec<&'static str>> {
    let paths = groups.map(|datasets| {
        datasets
            .iter()
            .flat_map(|dataset| &dataset.files)
            .map(|file| file.path.display().to_string())
            .collect::<Vec<_>>()
    });
    let offsets = [
        line_offsets(set, 0, paths[0].len()),
        line_offsets(set, paths[0].len(), paths[1].len()),
    ];
    let doctors = |group: usize| {
        set.iter()
            .map(|(dir, manifest)| {
                let doctor = if group == 0 {
                    &manifest.train_doctor
                } else {
                    &manifest.eval_doctor
                };
                (dir.as_path(), doctor.as_ref())
            })
            .collect::<Vec<_>>()
    };
    let vocab_size = tokenizer.vocab_size();
    let dtype = TokenDtype::for_vocab(vocab_size);
    let context = MetaContext {
        fingerprint,
        tokenizer_hash: tokenizer_hash(&tokenizer.fingerprint_bytes()),
        vocab_size,
        options: serde_json::to_value(options).expect("options serialise"),
        tokenizer,
    };
    let mut written = vec!["train"];
    let mut run = Run {
        counts: merged_counts(set.iter().map(|(_, manifest)| &manifest.train)),
        doctor: merged_doctor(options, &doctors(0), &paths[0], &offsets[0])?,
        templates: Vec::new(),
        source_files: paths[0].clone(),
    };
    if run.counts.samples_kept == 0 {
        return Err(no_samples("datasets", &run.counts));
    }
    let staging = open_parts(set, "train", 0, paths[0].len())?;
    let reorder = options.shuffle_merged_datasets || options.val_set_size > 0.0 || options.dataset_shard_num.is_some();
    let (order, eval_order) = if reorder {
        let split = split_plan(staging.sample_count(), options, true)?;
        run.counts.samples_outside_dataset_shard = split.outside_shard;
        (split.train, split.eval)
    } else {
        ((0..staging.sample_count()).collect(), Vec::new())
    };
    let mut train = StoreWriter::create(&temporary.join("train"), dtype, options.shard_tokens)?;
    copy_samples(&staging, &order, &mut train, "merge", progress)?;
    drop(order);
    finish_store(train, "train", &run, &context)?;
    if !eval_order.is_empty() {
        let mut eval = StoreWriter::create(&temporary.join("eval"), dtype, options.shard_tokens)?;
        copy_samples(&staging, &eval_order, &mut eval, "merge", progress)?;
        finish_store(eval, "eval", &run, &context)?;
        written.push("eval");
    }
    if !options.test_datasets.is_empty() {
        let run = Run {
            counts: merged_counts(set.iter().filter_map(|(_, manifest)| manifest.eval.as_ref())),
            doctor: merged_doctor(options, &doctors(1), &paths[1], &offsets[1])?,
            templates: Vec::new(),
            source_files: paths[1].clone(),
        };
        if run.counts.samples_kept == 0 {
            return Err(no_samples("test_datasets", &run.counts));
        }
        let staging = open_parts(set, "eval", paths[0].len(), paths[1].len())?;
        let order = if options.shuffle_merged_datasets {
            shuffled(staging.sample_count(), options.seed)
        } else {
            (0..staging.sample_count()).collect()
        };
        let mut eval = StoreWriter::create(&temporary.join("eval"), dtype, options.shard_tokens)?;
        copy_samples(&staging, &order, &mut eval, "merge", progress)?;
        finish_store(eval, "eval", &run, &context)?;
        written.push("eval");
    }
    tick(
        progress,
        &ProgressUpdate {
            stage: "merge",
            done: 1,
            total: 1,
            rows: 0,
            tokens: 0,
        },
    )?;
    Ok(written)
}

/// Joins a complete set of parts whose fingerprint is `fingerprint`, or finds the stores done.
fn merge_set(
    options: &PreprocessOptions,
    tokenizer: &dyn PipelineTokenizer,
    fingerprint: String,
    set: (&[(PathBuf, PartManifest)], [&[DatasetFiles]; 2]),
    started: Instant,
    warnings: Vec<String>,
    progress: &mut dyn Progress,
) -> Result<Prepared> {
    let root = options.prepared_dir.join(&fingerprint);
    let (stores, reused) = if let Some(stores) = existing(&root)? {
        (stores, true)
    } else {
        let stores = publish(&options.prepared_dir, &fingerprint, |temporary| {
            build_merged(options, tokenizer, &fingerprint, set, temporary, progress)
        })?;
        (stores, false)
    };
    if !options.keep_parts {
        remove_parts(&options.prepared_dir, set.0)?;
    }
    Ok(Prepared {
        root,
        fingerprint,
        reused,
        stores,
        seconds: started.elapsed().as_secs_f64(),
        warnings,
        encoder: None,
    })
}

/// Deletes merged parts: the merged store holds all they hold, and keeping them would double the
/// disk a huge corpus takes. Their set's folder goes too when nothing else is left in it, and so
/// does the parts folder.
fn remove_parts(prepared_dir: &Path, parts: &[(PathBuf, PartManifest)]) -> Result<()> {
    for (dir, _) in parts {
        fs_err::remove_dir_all(dir)?;
    }
    let parts_root = prepared_dir.join(PARTS_DIR);
    let set_dirs = parts.iter().filter_map(|(dir, _)| dir.parent());
    for dir in set_dirs.chain([parts_root.as_path()]) {
        // Not empty (another config's parts, a part still being written): it stays.
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

/// `axr preprocess CONFIG --merge` with a given tokenizer: join the parts of this config into the
/// stores a single run builds. The inputs are not read: the parts' block digests give the
/// fingerprint.
pub fn merge_parts_with(
    options: &PreprocessOptions,
    tokenizer: &dyn PipelineTokenizer,
    progress: &mut dyn Progress,
) -> Result<Prepared> {
    let started = Instant::now();
    options.validate()?;
    refuse_interleaved(options)?;
    let mut warnings = Vec::new();
    let train = resolve_group(&options.datasets, "datasets", &mut warnings)?;
    let eval = resolve_group(&options.test_datasets, "test_datasets", &mut warnings)?;
    let inputs = inputs(&train, &eval);
    let tokenizer_bytes = tokenizer.fingerprint_bytes();
    let key = part_key(options, &tokenizer_bytes, &inputs);
    let set = complete_set(&options.prepared_dir, &key)?.map_err(merge_error)?;
    let digests = gather_digests(&inputs, &set)?;
    check_empty_files(&inputs, &set)?;
    let fingerprint = compose_fingerprint(options, &tokenizer_bytes, &train, &eval, &digests);
    merge_set(
        options,
        tokenizer,
        fingerprint,
        (&set, [&train, &eval]),
        started,
        warnings,
        progress,
    )
}

/// Called when a run finds no store for its fingerprint: a complete set of parts of exactly
/// these inputs (their digests compose to `plan.fingerprint`) is merged instead of built again.
pub(super) fn merge_if_complete(
    options: &PreprocessOptions,
    tokenizer: &dyn PipelineTokenizer,
    plan: &Plan,
    progress: &mut dyn Progress,
) -> Result<Option<Prepared>> {
    if !options.prepared_dir.join(PARTS_DIR).is_dir() || refuse_interleaved(options).is_err() {
        return Ok(None);
    }
    let inputs = inputs(&plan.train, &plan.eval);
    let tokenizer_bytes = tokenizer.fingerprint_bytes();
    let key = part_key(options, &tokenizer_bytes, &inputs);
    let Ok(set) = complete_set(&options.prepared_dir, &key)? else {
        return Ok(None);
    };
    let Ok(digests) = gather_digests(&inputs, &set) else {
        return Ok(None);
    };
    if compose_fingerprint(options, &tokenizer_bytes, &plan.train, &plan.eval, &digests) != plan.fingerprint {
        return Ok(None);
    }
    check_empty_files(&inputs, &set)?;
    let started = Instant::now();
    merge_set(
        options,
        tokenizer,
        plan.fingerprint.clone(),
        (&set, [&plan.train, &plan.eval]),
        started,
        plan.warnings.clone(),
        progress,
    )
    .map(Some)
}

/// `axr preprocess CONFIG --shard I/N`: build part `spec` of a sharded run.
pub fn preprocess_part(
    options: &PreprocessOptions,
    spec: ShardSpec,
    progress: &mut dyn Progress,
) -> Result<PartReport> {
    let started = Instant::now();
    options.validate()?;
    let encoder = load_encoder(options)?;
    let info = encoder.info();
    let build = |format_keys: &serde_json::Value, key: &str| build_formatter(&info, format_keys, key);
    let mut report = preprocess_part_with(options, &encoder, &build, spec, progress)?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// `axr preprocess CONFIG --merge`: join the parts of a sharded run.
pub fn merge_parts(options: &PreprocessOptions, progress: &mut dyn Progress) -> Result<Prepared> {
    let started = Instant::now();
    options.validate()?;
    let encoder = load_encoder(options)?;
    let mut prepared = merge_parts_with(options, &encoder, progress)?;
    prepared.seconds = started.elapsed().as_secs_f64();
    Ok(prepared)
}

#[cfg(test)]
mod tests;
