use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::RenderedText;
use crate::options::SourceOptions;
use crate::store::StoreReader;

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

/// `{"prompt", "answer"}` → prompt + answer, the answer trained.
struct PromptAnswer;

impl RowFormatter for PromptAnswer {
    #[expect(clippy::single_range_in_vec_init, reason = "one trained span")]
    fn format(&self, row: &Map<String, Value>) -> Result<Sample, FieldError> {
        let field = |name: &str| {
            row.get(name)
                .ok_or_else(|| FieldError::new(name, "missing"))?
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| FieldError::new(name, "expected a string"))
        };
        let (prompt, answer) = (field("prompt")?, field("answer")?);
        let text = format!("{prompt}{answer}");
        Ok(Sample::Text(RenderedText {
            trainable: vec![prompt.len()..text.len()],
            text,
            add_special_tokens: true,
        }))
    }
}

static BUILT: AtomicUsize = AtomicUsize::new(0);

#[expect(clippy::unnecessary_wraps, reason = "the factory signature")]
fn build(_format: &Value, _key: &str) -> Result<Box<dyn RowFormatter>> {
    BUILT.fetch_add(1, Ordering::Relaxed);
    Ok(Box::new(PromptAnswer))
}

fn write_rows(path: &Path, rows: &[(&str, &str)]) {
    let lines: Vec<String> = rows
        .iter()
        .map(|(prompt, answer)| serde_json::json!({"prompt": prompt, "answer": answer}).to_string())
        .collect();
    fs_err::write(path, lines.join("\n") + "\n").unwrap();
}

fn options(dir: &Path, files: &[&Path]) -> PreprocessOptions {
    PreprocessOptions {
        datasets: files
            .iter()
            .map(|file| DatasetOptions {
                source: SourceOptions {
                    path: file.to_str().unwrap().into(),
                    ds_type: None,
                    data_files: vec![],
                    split: None,
                    shards: None,
                    shards_idx: None,
                    key: String::new(),
                    origin: None,
                },
                format: serde_json::json!({"type": "test"}),
            })
            .collect(),
        test_datasets: vec![],
        tokenizer_dir: dir.join("tokenizer"),
        special_tokens: BTreeMap::new(),
        tokens: vec![],
        sequence_len: 64,
        excess_length_strategy: Some(ExcessLengthStrategy::Drop),
        on_bad_row: BadRowPolicy::Error,
        shuffle_merged_datasets: false,
        val_set_size: 0.0,
        seed: 42,
        chat_template: None,
        chat_template_jinja: None,
        doctor: true,
        keep_parts: false,
        special_tokens_in_text: SpecialTokensPolicy::Report,
        verify_encoder: 0,
        dataset_shard_num: None,
        dataset_shard_idx: None,
        prepared_dir: dir.join("prepared"),
        num_threads: Some(2),
        chunk_rows: 3,
        chunk_bytes: 1 << 20,
        shard_tokens: 100,
    }
}

fn run(options: &PreprocessOptions) -> Result<Prepared> {
    preprocess_with(options, &ByteTokenizer, &build, &mut NoProgress)
}

fn texts(store: &Path) -> Vec<String> {
    let reader = StoreReader::open(store).unwrap();
    (0..reader.len())
        .map(|index| {
            let (ids, _) = reader.read(index).unwrap();
            ids[1..].iter().map(|&id| char::from((id - 3) as u8)).collect()
        })
        .collect()
}

fn numbered(count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|index| (format!("q{index} "), format!("a{index}")))
        .collect()
}

fn as_refs(rows: &[(String, String)]) -> Vec<(&str, &str)> {
    rows.iter()
        .map(|(prompt, answer)| (prompt.as_str(), answer.as_str()))
        .collect()
}

#[test]
fn rows_keep_input_order_across_chunks_files_and_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let rows = numbered(40);
    write_rows(&first, &as_refs(&rows[..25]));
    write_rows(&second, &as_refs(&rows[25..]));
    let prepared = run(&options(dir.path(), &[&first, &second])).unwrap();
    assert!(!prepared.reused);
    let expected: Vec<String> = rows
        .iter()
        .map(|(prompt, answer)| format!("{prompt}{answer}"))
        .collect();
    assert_eq!(texts(&prepared.stores["train"]), expected);
    let meta = StoreMeta::read(&prepared.stores["train"]).unwrap();
    assert!(meta.shards.len() > 1, "small shard_tokens splits the store");
    assert_eq!(meta.counts.rows_read, 40);
    assert!(prepared.stores["train"].join("tokenizer/tokenizer.json").is_file());
}

#[test]
fn length_policy_and_untrained_rows_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.jsonl");
    write_rows(
        &file,
        &[
            ("short ", "ok"),
            ("x", &"y".repeat(100)),
            ("only a prompt", ""),
            (&"p".repeat(70), "late"),
        ],
    );
    let mut settings = options(dir.path(), &[&file]);
    let meta = StoreMeta::read(&run(&settings).unwrap().stores["train"]).unwrap();
    assert_eq!(meta.samples, 1);
    assert_eq!(meta.counts.dropped[TOO_LONG], 2);
    assert_eq!(meta.counts.dropped[NO_TRAINABLE], 1);

    settings.excess_length_strategy = Some(ExcessLengthStrategy::Truncate);
    let meta = StoreMeta::read(&run(&settings).unwrap().stores["train"]).unwrap();
    // The 100-byte answer is cut to 64 tokens and kept; the long prompt's answer is cut away
    // entirely, so that sample is dropped for having nothing to train (and not counted as truncated).
    assert_eq!(meta.samples, 2);
    assert_eq!(meta.longest, 64);
    assert_eq!(meta.counts.truncated[TOO_LONG], 1);
    assert_eq!(meta.counts.dropped[NO_TRAINABLE], 2);
}

#[test]
fn bad_rows_stop_the_run_or_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.jsonl");
    let mut content = b"{\"prompt\": \"a\", \"answer\": \"b\"}\n{\"prompt\": \"a\"}\n{\"prompt\": 1,\n".to_vec();
    content
        .extend_from_slice(b"{\"prompt\": \"\xff\", \"answer\": \"b\"}\n[1]\n{\"prompt\": \"c\", \"answer\": \"d\"}\n");
    fs_err::write(&file, content).unwrap();
    let mut settings = options(dir.path(), &[&file]);
    let error = run(&settings).unwrap_err().to_string();
    assert!(error.ends_with("bad.jsonl:2: answer: missing"), "{error}");
    assert!(!settings.prepared_dir.exists() || fs_err::read_dir(&settings.prepared_dir).unwrap().count() == 0);

    settings.on_bad_row = BadRowPolicy::Skip;
    let meta = StoreMeta::read(&run(&settings).unwrap().stores["train"]).unwrap();
    assert_eq!(meta.samples, 2);
    assert_eq!(meta.counts.skipped_bad_rows, 4);
    let examples = meta.counts.skipped_examples.join("\n");
    for needle in [
        ":2: answer: missing",
        ":3: -: malformed JSON",
        ":4: -: invalid UTF-8",
        ":5: -: row is a JSON array",
    ] {
        assert!(examples.contains(needle), "{needle} not in {examples}");
    }
}

#[test]
fn stores_are_reused_until_bytes_or_settings_change() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.jsonl");
    write_rows(&file, &as_refs(&numbered(10)));
    let settings = options(dir.path(), &[&file]);
    let first = run(&settings).unwrap();
    let again = run(&settings).unwrap();
    assert!(again.reused);
    assert_eq!(first.root, again.root);

    // Same bytes under another name: same store.
    let renamed = dir.path().join("renamed.jsonl");
    fs_err::copy(&file, &renamed).unwrap();
    assert!(run(&options(dir.path(), &[&renamed])).unwrap().reused);

    let mut longer = settings.clone();
    longer.sequence_len = 65;
    assert!(!run(&longer).unwrap().reused);

    let mut bytes = fs_err::read(&file).unwrap();
    let position = bytes.iter().position(|&byte| byte == b'q').unwrap();
    bytes[position] = b'Q';
    fs_err::write(&file, bytes).unwrap();
    let edited = run(&settings).unwrap();
    assert!(!edited.reused);
    assert_ne!(edited.root, first.root);
    assert_eq!(locate_with(&settings, &ByteTokenizer).unwrap(), edited.root);
}

#[test]
fn shuffle_shard_and_eval_split_are_seeded_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.jsonl");
    let rows = numbered(50);
    write_rows(&file, &as_refs(&rows));
    let mut settings = options(dir.path(), &[&file]);
    settings.shuffle_merged_datasets = true;
    settings.val_set_size = 0.1;
    let prepared = run(&settings).unwrap();
    let (train, eval) = (texts(&prepared.stores["train"]), texts(&prepared.stores["eval"]));
    assert_eq!((train.len(), eval.len()), (45, 5));
    let mut all: Vec<String> = train.iter().chain(&eval).cloned().collect();
    let in_order: Vec<String> = rows
        .iter()
        .map(|(prompt, answer)| format!("{prompt}{answer}"))
        .collect();
    assert_ne!(all, in_order, "shuffled");
    all.sort();
    let mut expected = in_order.clone();
    expected.sort();
    assert_eq!(all, expected);
    // Same seed, same order (a fresh directory, so nothing is reused).
    let other = tempfile::tempdir().unwrap();
    let mut again = settings.clone();
    again.prepared_dir = other.path().to_path_buf();
    assert_eq!(texts(&run(&again).unwrap().stores["train"]), train);

    settings.val_set_size = 0.0;
    settings.dataset_shard_num = Some(3);
    settings.dataset_shard_idx = Some(2);
    let meta = StoreMeta::read(&run(&settings).unwrap().stores["train"]).unwrap();
    assert_eq!((meta.samples, meta.counts.samples_outside_dataset_shard), (16, 34));
}

#[test]
fn test_datasets_get_their_own_store() {
    let dir = tempfile::tempdir().unwrap();
    let (train_file, test_file) = (dir.path().join("train.jsonl"), dir.path().join("test.jsonl"));
    write_rows(&train_file, &as_refs(&numbered(6)));
    write_rows(&test_file, &[("held ", "out")]);
    let mut settings = options(dir.path(), &[&train_file]);
    settings.test_datasets = options(dir.path(), &[&test_file]).datasets;
    let prepared = run(&settings).unwrap();
    assert_eq!(texts(&prepared.stores["eval"]), ["held out"]);
    assert_eq!(texts(&prepared.stores["train"]).len(), 6);
}

#[test]
fn ctrl_c_stops_and_leaves_no_store() {
    struct StopAtOnce;
    impl Progress for StopAtOnce {
        fn tick(&mut self, update: &ProgressUpdate<'_>) -> ControlFlow<()> {
            if update.stage.starts_with("tokenize") {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.jsonl");
    write_rows(&file, &as_refs(&numbered(20)));
    let settings = options(dir.path(), &[&file]);
    let error = preprocess_with(&settings, &ByteTokenizer, &build, &mut StopAtOnce).unwrap_err();
    assert!(matches!(error, Error::Interrupted));
    assert_eq!(fs_err::read_dir(&settings.prepared_dir).unwrap().count(), 0);
}

#[test]
fn shuffled_is_a_permutation() {
    let order = shuffled(1000, 7);
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<u64>>());
    assert_eq!(order, shuffled(1000, 7));
    assert_ne!(order, shuffled(1000, 8));
}
