use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;

use serde_json::{Map, Value};

use super::*;
use crate::options::{BadRowPolicy, DatasetOptions, ExcessLengthStrategy, SourceOptions, SpecialTokensPolicy};
use crate::pipeline::{NoProgress, preprocess_with};
use crate::store::StoreMeta;
use crate::{Encoded, FieldError, RenderedText, RowFormatter, Sample};

/// Byte-level test tokenizer: BOS = 1, byte b = b + 3; a token is trained when its byte is.
struct ByteTokenizer;

impl PipelineTokenizer for ByteTokenizer {
    fn encode(&self, sample: &Sample) -> Result<Encoded, FieldError> {
        let Sample::Text(RenderedText { text, trainable, .. }) = sample else {
            return Err(FieldError::new("-", "tokens are not supported"));
        };
        let mut encoded = Encoded {
            input_ids: vec![1],
            trainable: vec![false],
        };
        for (index, byte) in text.bytes().enumerate() {
            encoded.input_ids.push(u32::from(byte) + 3);
            encoded
                .trainable
                .push(trainable.iter().any(|range| range.contains(&index)));
        }
        Ok(encoded)
    }
    fn vocab_size(&self) -> u64 {
        259
    }
    fn fingerprint_bytes(&self) -> Vec<u8> {
        b"byte tokenizer v1".to_vec()
    }
    fn save(&self, dir: &Path) -> Result<()> {
        fs_err::write(dir.join("tokenizer.json"), "{}")?;
        Ok(())
    }
}

/// `{"text"}` → the text, all of it trained; a row without `text` is a bad row.
struct TextFormatter;

impl RowFormatter for TextFormatter {
    #[expect(clippy::single_range_in_vec_init, reason = "one trained span")]
    fn format(&self, row: &Map<String, Value>) -> Result<Sample, FieldError> {
        let text = row
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| FieldError::new("text", "missing"))?
            .to_owned();
        Ok(Sample::Text(RenderedText {
            trainable: vec![0..text.len()],
            text,
            add_special_tokens: true,
        }))
    }
}

#[expect(clippy::unnecessary_wraps, reason = "the factory signature")]
fn build(_format: &Value, _key: &str) -> Result<Box<dyn RowFormatter>> {
    Ok(Box::new(TextFormatter))
}

fn dataset(path: &Path, ds_type: Option<&str>) -> DatasetOptions {
    DatasetOptions {
        source: SourceOptions {
            path: path.to_str().unwrap().into(),
            ds_type: ds_type.map(str::to_owned),
            data_files: vec![],
            split: None,
            shards: None,
            shards_idx: None,
            key: String::new(),
            origin: None,
        },
        format: serde_json::json!({"type": "test"}),
    }
}

fn options(dir: &Path, datasets: Vec<DatasetOptions>, prepared: &str) -> PreprocessOptions {
    PreprocessOptions {
        datasets,
        test_datasets: vec![],
        tokenizer_dir: dir.join("tokenizer"),
        special_tokens: BTreeMap::new(),
        tokens: vec![],
        sequence_len: 300,
        excess_length_strategy: Some(ExcessLengthStrategy::Drop),
        on_bad_row: BadRowPolicy::Error,
        shuffle_merged_datasets: true,
        val_set_size: 0.0,
        seed: 7,
        chat_template: None,
        chat_template_jinja: None,
        doctor: true,
        keep_parts: false,
        special_tokens_in_text: SpecialTokensPolicy::Report,
        verify_encoder: 0,
        dataset_shard_num: None,
        dataset_shard_idx: None,
        prepared_dir: dir.join(prepared),
        num_threads: Some(2),
        chunk_rows: 5,
        chunk_bytes: 1 << 20,
        shard_tokens: 2000,
    }
}

/// Deterministic text of `length` bytes (lowercase words).
fn text(seed: u64, length: usize) -> String {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = String::with_capacity(length);
    while out.len() < length {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.push(if state.is_multiple_of(6) {
            ' '
        } else {
            (b'a' + (state % 26) as u8) as char
        });
    }
    out
}

/// JSON lines of varied lengths with blank lines, CRLF endings and rows too long to keep.
fn jsonl(rows: usize, seed: u64) -> String {
    let mut out = String::new();
    for row in 0..rows {
        let length = 1 + (row * 37 + seed as usize * 11) % 350;
        out.push_str(&serde_json::json!({"text": text(seed * 1000 + row as u64, length)}).to_string());
        out.push_str(if row % 7 == 3 { "\r\n" } else { "\n" });
        if row % 11 == 5 {
            out.push_str("\n   \n");
        }
    }
    out
}

/// Every file under `dir` by relative path, with its bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in fs_err::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                files.insert(relative, fs_err::read(&path).unwrap());
            }
        }
    }
    files
}

fn build_parts(options: &PreprocessOptions, count: u64) -> Vec<PartReport> {
    (0..count)
        .map(|index| {
            let spec = ShardSpec::new(index, count).unwrap();
            preprocess_part_with(options, &ByteTokenizer, &build, spec, &mut NoProgress).unwrap()
        })
        .collect()
}

fn merge(options: &PreprocessOptions) -> Result<Prepared> {
    merge_parts_with(options, &ByteTokenizer, &mut NoProgress)
}

fn single(options: &PreprocessOptions) -> Prepared {
    preprocess_with(options, &ByteTokenizer, &build, &mut NoProgress).unwrap()
}

/// Builds `options` in one run and in `count` parts + merge (in another prepared folder) and
/// checks that both give the same fingerprint and the same files, byte for byte.
/// A single run's stores, moved aside so that the same options (meta.json records them, the
/// prepared folder included) can build them again.
fn single_aside(options: &PreprocessOptions) -> Prepared {
    let _ = fs_err::remove_dir_all(&options.prepared_dir);
    let mut whole = single(options);
    let reference = options.prepared_dir.with_extension("reference");
    let _ = fs_err::remove_dir_all(&reference);
    fs_err::rename(&whole.root, &reference).unwrap();
    whole.root = reference;
    whole
}

fn assert_same_files(expected: &Path, got: &Path, what: &str) {
    let (expected, got) = (tree(expected), tree(got));
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "{what}"
    );
    for (name, bytes) in &expected {
        assert!(got[name] == *bytes, "{name} differs: {what}");
    }
}

fn assert_merge_equals_single(options: &PreprocessOptions, count: u64) {
    let whole = single_aside(options);
    let sharded = options.clone();
    let parts = build_parts(&sharded, count);
    let rows: u64 = parts.iter().map(|part| part.train.rows_read).sum();
    let merged = merge(&sharded).unwrap();
    assert!(!merged.reused);
    assert_eq!(merged.fingerprint, whole.fingerprint, "{count} parts");
    assert_same_files(&whole.root, &merged.root, &format!("{count} parts"));
    let meta = StoreMeta::read(&whole.root.join("train")).unwrap();
    assert_eq!(rows, meta.counts.rows_read, "every row read exactly once");
}

#[test]
fn parts_merged_equal_a_single_run_for_any_part_count() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c, d) = (
        dir.path().join("a.jsonl"),
        dir.path().join("b.txt"),
        dir.path().join("c.json"),
        dir.path().join("d.jsonl"),
    );
    fs_err::write(&a, format!("\u{feff}{}", jsonl(90, 1))).unwrap();
    fs_err::write(
        &b,
        (0..40)
            .map(|line| text(line, 5 + line as usize * 3) + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let array: Vec<Value> = (0..20)
        .map(|row| serde_json::json!({"text": text(500 + row, 40)}))
        .collect();
    fs_err::write(&c, serde_json::to_string_pretty(&array).unwrap()).unwrap();
    // No final newline: the last row ends the file.
    fs_err::write(&d, jsonl(60, 2).trim_end()).unwrap();
    let datasets = vec![
        dataset(&a, None),
        dataset(&b, Some("text")),
        dataset(&c, None),
        dataset(&d, None),
    ];
    let options = options(dir.path(), datasets, "prepared");
    for count in [1, 2, 3, 4, 7, 16, 300] {
        assert_merge_equals_single(&options, count);
    }
    // Validation split, dataset shard and no shuffle take the same path after the merge.
    let mut split = options.clone();
    split.val_set_size = 0.1;
    split.dataset_shard_num = Some(3);
    split.dataset_shard_idx = Some(1);
    split.prepared_dir = dir.path().join("prepared-split");
    assert_merge_equals_single(&split, 4);
    let mut ordered = options.clone();
    ordered.shuffle_merged_datasets = false;
    ordered.prepared_dir = dir.path().join("prepared-ordered");
    assert_merge_equals_single(&ordered, 4);
    // test_datasets: their own eval store, from the same parts.
    let mut eval = options.clone();
    eval.test_datasets = vec![dataset(&d, None)];
    eval.prepared_dir = dir.path().join("prepared-eval");
    assert_merge_equals_single(&eval, 4);
}

#[test]
fn one_big_file_is_cut_by_byte_ranges_across_hash_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.jsonl");
    let mut content = String::new();
    let mut seed = 0;
    while content.len() < 3 * HASH_BLOCK as usize + 12_345 {
        content.push_str(&jsonl(50, seed));
        seed += 1;
    }
    fs_err::write(&big, &content).unwrap();
    let mut options = options(dir.path(), vec![dataset(&big, None)], "prepared");
    options.chunk_rows = 4096;
    options.shard_tokens = 1 << 20;
    let parts = build_parts(&options.clone_with_dir(dir.path().join("probe")), 4);
    // Each part read about a quarter of the bytes, not the whole file.
    for part in &parts {
        let quarter = content.len() as u64 / 4;
        assert!(part.bytes.abs_diff(quarter) <= 1, "{} of {}", part.bytes, content.len());
        assert!(part.train.rows_read > 0);
    }
    assert_merge_equals_single(&options, 4);
}

impl PreprocessOptions {
    fn clone_with_dir(&self, prepared: std::path::PathBuf) -> Self {
        let mut options = self.clone();
        options.prepared_dir = prepared;
        options
    }
}

#[test]
fn bad_rows_name_the_files_own_line_in_every_part() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.jsonl");
    let mut lines: Vec<String> = (0..400)
        .map(|row| serde_json::json!({"text": text(row, 30)}).to_string())
        .collect();
    lines[312] = "{\"other\": 1}".into();
    lines[57] = "{not json".into();
    fs_err::write(&path, lines.join("\n") + "\n").unwrap();
    let mut options = options(dir.path(), vec![dataset(&path, None)], "prepared");
    let spec = ShardSpec::new(3, 4).unwrap();
    let error = preprocess_part_with(&options, &ByteTokenizer, &build, spec, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(error.contains("data.jsonl:313: text: missing"), "{error}");

    options.on_bad_row = BadRowPolicy::Skip;
    options.keep_parts = true; // merged twice below
    let parts = build_parts(&options, 4);
    assert_eq!(parts[0].train.skipped_examples.len(), 1);
    assert!(parts[0].train.skipped_examples[0].contains("data.jsonl:58:"));
    assert!(parts[3].train.skipped_examples[0].contains("data.jsonl:313:"));
    assert_merge_equals_single(&options, 4);
    let merged = StoreMeta::read(
        &options
            .prepared_dir
            .join(&merge(&options).unwrap().fingerprint)
            .join("train"),
    )
    .unwrap();
    assert_eq!(merged.counts.skipped_examples.len(), 2);
}

#[test]
fn a_missing_part_a_foreign_part_and_a_bad_index_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.jsonl");
    fs_err::write(&path, jsonl(80, 3)).unwrap();
    let mut options = options(dir.path(), vec![dataset(&path, None)], "prepared");
    options.keep_parts = true; // merged twice below
    let error = ShardSpec::new(4, 4).unwrap_err().to_string();
    assert!(error.contains("--shard") && error.contains("4/4"), "{error}");

    let error = merge(&options).unwrap_err().to_string();
    assert!(error.contains("no parts of this config"), "{error}");

    for index in [0, 2, 3] {
        let spec = ShardSpec::new(index, 4).unwrap();
        preprocess_part_with(&options, &ByteTokenizer, &build, spec, &mut NoProgress).unwrap();
    }
    let error = merge(&options).unwrap_err().to_string();
    assert!(
        error.contains("part 1/4 missing") && error.contains("--shard 1/4"),
        "{error}"
    );
    // Part 1 built with another sequence_len belongs to another run: named, never merged.
    let mut other = options.clone();
    other.sequence_len = 200;
    let spec = ShardSpec::new(1, 4).unwrap();
    preprocess_part_with(&other, &ByteTokenizer, &build, spec, &mut NoProgress).unwrap();
    let error = merge(&options).unwrap_err().to_string();
    assert!(
        error.contains("part 1/4 missing") && error.contains("other settings"),
        "{error}"
    );
    // A second build of the same part reuses it; then the merge works.
    preprocess_part_with(&options, &ByteTokenizer, &build, spec, &mut NoProgress).unwrap();
    assert!(
        preprocess_part_with(&options, &ByteTokenizer, &build, spec, &mut NoProgress)
            .unwrap()
            .reused
    );
    assert!(!merge(&options).unwrap().reused);
    assert!(merge(&options).unwrap().reused);

    let mut interleaved = options.clone();
    interleaved.datasets[0].source.shards = Some(2);
    let error = preprocess_part_with(&interleaved, &ByteTokenizer, &build, spec, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("datasets[0].shards") && error.contains("--shard"),
        "{error}"
    );
}

/// Records the stages a run went through.
struct Stages(Vec<String>);

impl Progress for Stages {
    fn tick(&mut self, update: &ProgressUpdate<'_>) -> ControlFlow<()> {
        if self.0.last().map(String::as_str) != Some(update.stage) {
            self.0.push(update.stage.to_owned());
        }
        ControlFlow::Continue(())
    }
}

#[test]
fn a_plain_run_merges_complete_parts_of_the_same_bytes_instead_of_tokenizing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.jsonl");
    fs_err::write(&path, jsonl(120, 4)).unwrap();
    let options = options(dir.path(), vec![dataset(&path, None)], "prepared");
    let reference = single_aside(&options);
    build_parts(&options, 3);
    let mut stages = Stages(Vec::new());
    let prepared = preprocess_with(&options, &ByteTokenizer, &build, &mut stages).unwrap();
    assert!(!prepared.reused);
    assert_eq!(prepared.fingerprint, reference.fingerprint);
    assert!(stages.0.contains(&"merge".to_owned()), "{:?}", stages.0);
    assert!(
        !stages.0.iter().any(|stage| stage.starts_with("tokenize")),
        "{:?}",
        stages.0
    );
    assert_same_files(&reference.root, &prepared.root, "merged by a plain run");

    // Parts of other bytes (an input edited in place, same size) are not merged: the run builds.
    let mut content = fs_err::read(&path).unwrap();
    let at = content.iter().position(|&byte| byte == b'a').unwrap();
    content[at] = b'b';
    fs_err::write(&path, &content).unwrap();
    let mut stages = Stages(Vec::new());
    let rebuilt = preprocess_with(&options, &ByteTokenizer, &build, &mut stages).unwrap();
    assert_ne!(rebuilt.fingerprint, reference.fingerprint);
    assert!(stages.0.contains(&"tokenize train".to_owned()), "{:?}", stages.0);
}

#[test]
fn shares_tile_the_inputs() {
    // Splittable files are cut at the part boundaries; the others go whole to one part.
    let owned: Vec<Range<u64>> = (0..3)
        .map(|index| bounds(100, ShardSpec::new(index, 3).unwrap()))
        .collect();
    assert_eq!(owned[0], 0..33);
    assert_eq!(owned[1], 33..66);
    assert_eq!(owned[2].start, 66);
    let cut: Vec<Share> = owned.iter().map(|range| share(20, 50, true, range)).collect();
    assert_eq!(cut[0].rows, Some(0..13));
    assert_eq!(cut[1].rows, Some(13..46));
    assert_eq!(cut[2].rows, Some(46..50));
    let whole: Vec<Share> = owned.iter().map(|range| share(40, 50, false, range)).collect();
    assert_eq!(whole[0].rows, Some(0..0));
    assert_eq!(whole[1].rows, None);
    assert_eq!(whole[1].blocks, 0..1);
    assert_eq!(whole[2].rows, Some(0..0));
}

#[test]
fn doctor_findings_and_sources_of_the_merge_are_the_single_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rows.jsonl");
    // Every 9th row has no text: dropped with no trained token, a doctor finding with examples
    // (file:line) in every part, past the first EXAMPLES of the whole run too.
    let mut rows = String::new();
    for row in 0..200u64 {
        let text = if row % 9 == 4 {
            String::new()
        } else {
            text(row, 1 + (row as usize * 13) % 120)
        };
        rows.push_str(&serde_json::json!({"text": text}).to_string());
        rows.push_str(if row % 5 == 0 { "\n\n" } else { "\n" });
    }
    fs_err::write(&path, rows).unwrap();
    let options = options(dir.path(), vec![dataset(&path, None)], "prepared");
    for count in [2, 5] {
        assert_merge_equals_single(&options, count);
    }
    let meta = StoreMeta::read(&options.prepared_dir.with_extension("reference").join("train")).unwrap();
    let untrained = &meta.doctor.unwrap().findings["no_trainable_tokens"];
    assert_eq!(untrained.count, 22);
    let first = format!("{}:6", path.display());
    assert_eq!(
        untrained.examples.first(),
        Some(&first),
        "row 4 is line 6 (blank lines after rows 0)"
    );

    // Parts built with the doctor off cannot give a doctor run its findings.
    let mut off = options.clone();
    off.doctor = false;
    off.prepared_dir = dir.path().join("prepared-off");
    build_parts(&off, 3);
    let mut on = off.clone();
    on.doctor = true;
    let error = merge(&on).unwrap_err().to_string();
    assert!(error.contains("built with the doctor off"), "{error}");
    // With the doctor off on both sides, the merge equals a single run without it.
    assert_merge_equals_single(&off, 3);
}

#[test]
fn the_merge_deletes_its_parts_unless_asked_to_keep_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.jsonl");
    fs_err::write(&path, jsonl(60, 5)).unwrap();
    let mut options = options(dir.path(), vec![dataset(&path, None)], "prepared");
    let parts_root = options.prepared_dir.join(PARTS_DIR);
    // Another config's parts share the parts folder and are left alone.
    let foreign = parts_root.join("other-key").join("00000-of-00002");
    fs_err::create_dir_all(&foreign).unwrap();

    options.keep_parts = true;
    let parts = build_parts(&options, 3);
    let kept = merge(&options).unwrap();
    assert!(parts.iter().all(|part| part.dir.is_dir()), "kept when asked");

    fs_err::remove_dir_all(&kept.root).unwrap();
    options.keep_parts = false;
    let merged = merge(&options).unwrap();
    assert!(!merged.reused);
    assert!(parts.iter().all(|part| !part.dir.exists()), "deleted after the merge");
    assert!(!parts[0].dir.parent().unwrap().exists(), "their empty set folder too");
    assert!(foreign.is_dir(), "another config's parts stay");
    let meta = StoreMeta::read(&merged.root.join("train")).unwrap();
    assert_eq!(meta.counts.rows_read, 60);
}
