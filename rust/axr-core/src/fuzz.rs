//! Fuzzing of everything that reads untrusted input, as property tests that run with the
//! ordinary test suite: JSON lines and arrays, parquet and Arrow files, every dataset type,
//! chat templates with arbitrary messages, and prepared stores with corrupted files. The
//! property is always the same: an error is fine, a panic is a bug. Case counts are small so
//! CI spends seconds here; `PROPTEST_CASES=100000 cargo test --release fuzz` digs deeper.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::chat::spans;
use crate::source::{DatasetFiles, FileKind, RowReader, SourceFile};
use crate::store::{StoreMeta, StoreReader, StoreWriter, TokenDtype};
use crate::template::render::{ChatTemplate, TemplateMessage};
use crate::template::styles;
use crate::{FormatSpec, TokenizerInfo, dataset_type};

/// Pieces that make JSON, almost-JSON and the byte patterns readers stumble on.
const JSON_PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\"text\"",
    "\"messages\"",
    "\"a\"",
    "\n",
    "\r\n",
    " ",
    "\t",
    "null",
    "true",
    "1",
    "-0",
    "1e999",
    "123456789012345678901234567890",
    "\"\\ud800\"",
    "\"\\u0000\"",
    "\\",
    "\u{feff}",
    "\u{F0000}",
    "{\"text\": \"x\"}",
    "{\"instruction\": \"a\", \"output\": \"b\"}",
    "[{\"a\": 1}]",
];

fn json_ish_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(prop::sample::select(JSON_PIECES), 0..40).prop_map(|pieces| pieces.concat().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..200),
        (
            prop::collection::vec(prop::sample::select(JSON_PIECES), 0..30),
            prop::collection::vec((any::<usize>(), any::<u8>()), 0..4)
        )
            .prop_map(|(pieces, flips)| {
                let mut bytes = pieces.concat().into_bytes();
                for (position, byte) in flips {
                    if !bytes.is_empty() {
                        let at = position % bytes.len();
                        bytes[at] = byte;
                    }
                }
                bytes
            }),
    ]
}

/// Reads every row of `path` the way the pipeline does (split, then parse), ignoring errors.
fn read_everything(path: &Path, kind: FileKind) {
    let size = fs_err::metadata(path).map_or(0, |metadata| metadata.len());
    let file = SourceFile {
        path: path.to_path_buf(),
        kind,
        size,
    };
    let mut reader = RowReader::new(
        vec![DatasetFiles {
            files: vec![file],
            shard: None,
        }],
        3,
        64,
    );
    while let Ok(Some(chunk)) = reader.next_chunk() {
        for row in &chunk.rows {
            let _ = crate::pipeline::parse_row(row, &chunk.bytes);
        }
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,12}",
        prop::sample::select(vec![
            "",
            " ",
            "  x  ",
            "\u{F0000}",
            "\u{100000}",
            "<s>",
            "</s>",
            "{{ x }}",
            "{% if %}",
            "\n",
            "user",
            "assistant",
            "system",
            "human",
            "gpt",
            "tool",
            "bot",
            "prompter",
            "###",
            "\u{0}",
        ])
        .prop_map(str::to_owned),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u32..70_000).prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((field_name(), inner), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// Field names the formats look for, so rows reach deep into each formatter.
fn field_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "instruction",
        "input",
        "output",
        "text",
        "messages",
        "conversations",
        "role",
        "content",
        "from",
        "value",
        "system",
        "question",
        "answer",
        "context",
        "title",
        "explanation",
        "input_ids",
        "labels",
        "attention_mask",
        "segments",
        "label",
        "train",
        "response",
        "prompt",
        "category",
        "hint",
        "choices",
        "solution",
        "reflection",
        "corrected",
    ])
    .prop_map(str::to_owned)
}

fn message() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["role", "from"]),
        text(),
        prop::sample::select(vec!["content", "value", "text"]),
        prop_oneof![text().prop_map(Value::from), json_value()],
    )
        .prop_map(|(role_key, role, content_key, content)| {
            let mut message = Map::new();
            message.insert(role_key.to_owned(), Value::from(role));
            message.insert(content_key.to_owned(), content);
            Value::Object(message)
        })
}

fn row() -> impl Strategy<Value = Map<String, Value>> {
    (
        prop::collection::vec((field_name(), json_value()), 0..6),
        prop::option::of(prop::collection::vec(message(), 0..5)),
        prop::sample::select(vec!["messages", "conversations"]),
    )
        .prop_map(|(fields, messages, key)| {
            let mut row: Map<String, Value> = fields.into_iter().collect();
            if let Some(messages) = messages {
                row.insert(key.to_owned(), Value::Array(messages));
            }
            row
        })
}

fn tokenizer_info() -> TokenizerInfo {
    TokenizerInfo {
        bos: Some("<s>".into()),
        eos: Some("</s>".into()),
        chat_template: Some(styles::find("chatml").expect("built-in").source.to_owned()),
    }
}

/// Pieces of Jinja (kept cheap: no big ranges) for arbitrary templates.
const JINJA_PIECES: &[&str] = &[
    "{{ ",
    " }}",
    "{% for m in messages %}",
    "{% endfor %}",
    "{% if ",
    " %}",
    "{% endif %}",
    "{% else %}",
    "m.content",
    "m.role",
    "messages",
    "[0]",
    "[-1]",
    "|trim",
    ".strip()",
    " ~ ",
    "'x'",
    "loop.index",
    "loop.last",
    "range(3)",
    "{{",
    "}}",
    "{%-",
    "-%}",
    "|tojson",
    "raise_exception('no')",
    "bos_token",
    "eos_token",
    "add_generation_prompt",
    "{% set ns = namespace(a='') %}",
    "{% set ns.a = ns.a ~ m.content %}",
    "ns.a",
    "<|im_start|>",
    "\n",
    "text",
    " and ",
    " not ",
    "==",
    "'user'",
    "{# c #}",
    "|length",
    "(",
    ")",
    "{% break %}",
    "{% continue %}",
    "|upper",
    ".split(' ')",
    "|join('')",
];

fn template_source() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(prop::sample::select(JINJA_PIECES), 0..14).prop_map(|pieces| pieces.concat()),
        "\\PC{0,40}",
    ]
}

fn template_messages() -> impl Strategy<Value = Vec<(TemplateMessage, bool)>> {
    prop::collection::vec(
        (text(), text(), any::<bool>())
            .prop_map(|(role, content, trained)| (TemplateMessage { role, content }, trained)),
        0..5,
    )
}

fn render_all_ways(template: &ChatTemplate, messages: &[(TemplateMessage, bool)]) {
    let (messages, trained): (Vec<TemplateMessage>, Vec<bool>) = messages.iter().cloned().unzip();
    let _ = template.render(&messages, true);
    if let Ok(found) = spans::content_spans(template, &messages, &trained) {
        for span in found.spans.iter().flatten() {
            assert!(span.start <= span.end && span.end <= found.text.len());
            assert!(found.text.is_char_boundary(span.start) && found.text.is_char_boundary(span.end));
        }
    }
}

fn valid_parquet() -> Vec<u8> {
    let texts = StringArray::from(vec![Some("a"), None, Some("\u{F0000} c")]);
    let ids = Int64Array::from(vec![1, 2, 3]);
    let batch = RecordBatch::try_from_iter_with_nullable([
        ("text", Arc::new(texts) as ArrayRef, true),
        ("id", Arc::new(ids) as ArrayRef, false),
    ])
    .expect("batch");
    let mut bytes = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    bytes
}

fn valid_arrow_stream() -> Vec<u8> {
    let batch =
        RecordBatch::try_from_iter([("text", Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef)]).expect("batch");
    let mut bytes = Vec::new();
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut bytes, &batch.schema()).expect("writer");
    writer.write(&batch).expect("write");
    writer.finish().expect("finish");
    drop(writer);
    bytes
}

/// Truncation and byte overwrites of a valid file.
#[derive(Debug, Clone)]
struct Damage {
    truncate: Option<usize>,
    overwrites: Vec<(usize, u8)>,
}

fn damage() -> impl Strategy<Value = Damage> {
    (
        prop::option::of(any::<usize>()),
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
    )
        .prop_map(|(truncate, overwrites)| Damage { truncate, overwrites })
}

fn damaged(mut bytes: Vec<u8>, damage: &Damage) -> Vec<u8> {
    if let Some(length) = damage.truncate {
        bytes.truncate(length % (bytes.len() + 1));
    }
    for &(position, byte) in &damage.overwrites {
        if !bytes.is_empty() {
            let at = position % bytes.len();
            bytes[at] = byte;
        }
    }
    bytes
}

/// A small valid store in `dir`.
fn write_store(dir: &Path) {
    let mut writer = StoreWriter::create(dir, TokenDtype::Uint16, 5).expect("writer");
    for length in [3usize, 0, 7, 2] {
        let ids: Vec<u32> = (0..length as u32).collect();
        let flags: Vec<bool> = (0..length).map(|index| index % 2 == 0).collect();
        writer.push(&ids, &flags).expect("push");
    }
    let contents = writer.finish().expect("finish");
    StoreMeta {
        format_version: crate::store::FORMAT_VERSION,
        data_version: crate::store::DATA_VERSION,
        axr_version: crate::VERSION.into(),
        split: "train".into(),
        fingerprint: "0".repeat(32),
        tokenizer_hash: "0".repeat(32),
        token_dtype: TokenDtype::Uint16,
        vocab_size: 1 << 16,
        samples: contents.samples,
        tokens: contents.tokens,
        trainable_tokens: contents.trainable_tokens,
        longest: contents.longest,
        shards: contents.shards,
        counts: crate::store::RunCounts::default(),
        doctor: None,
        source_files: Vec::new(),
        options: Value::Null,
    }
    .write(dir)
    .expect("meta");
}

/// Sets every number in `value` whose path hash picks it to `replacement`.
fn replace_numbers(value: &mut Value, pick: u64, replacement: u64, counter: &mut u64) {
    match value {
        Value::Number(_) => {
            *counter += 1;
            if *counter % 7 == pick % 7 {
                *value = Value::from(replacement);
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| replace_numbers(item, pick, replacement, counter)),
        Value::Object(map) => map
            .values_mut()
            .for_each(|item| replace_numbers(item, pick, replacement, counter)),
        _ => {}
    }
}

fn read_store_everything(dir: &Path) {
    let Ok(reader) = StoreReader::open(dir) else {
        return;
    };
    let _ = reader.lengths();
    for index in 0..reader.len().min(64) {
        let _ = reader.read(index);
    }
}

/// Found by `damaged_parquet_and_arrow_files_never_panic`: arrow-ipc panicked ("the offset of
/// the new Buffer cannot exceed the existing length") on one flipped byte of a stream file.
#[test]
fn a_stream_file_with_a_flipped_buffer_length_is_a_data_error() {
    let damage = Damage {
        truncate: None,
        overwrites: vec![(13_386_862_025_242_466_737, 1)],
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.arrow");
    fs_err::write(&path, damaged(valid_arrow_stream(), &damage)).unwrap();
    let file = SourceFile {
        size: fs_err::metadata(&path).unwrap().len(),
        path: path.clone(),
        kind: FileKind::Arrow,
    };
    let mut reader = RowReader::new(
        vec![DatasetFiles {
            files: vec![file],
            shard: None,
        }],
        3,
        64,
    );
    let error = loop {
        match reader.next_chunk() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the damaged file read without error"),
            Err(error) => break error.to_string(),
        }
    };
    assert!(error.contains("data.arrow") && error.contains("damaged"), "{error}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn json_lines_and_arrays_never_panic(bytes in json_ish_bytes(), text in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.jsonl");
        fs_err::write(&path, &bytes).unwrap();
        read_everything(&path, if text { FileKind::Text } else { FileKind::Json });
    }

    #[test]
    fn every_dataset_type_formats_arbitrary_rows_without_panicking(
        kind in prop::sample::select(dataset_type::known_types()),
        rows in prop::collection::vec(row(), 1..6),
    ) {
        let spec: FormatSpec = serde_json::from_value(serde_json::json!({"type": kind})).unwrap();
        let Ok(formatter) = dataset_type::build(&spec, &tokenizer_info()) else {
            return Ok(());
        };
        for row in &rows {
            let _ = formatter.format(row);
        }
    }

    #[test]
    fn pretokenized_and_custom_formats_take_arbitrary_rows(rows in prop::collection::vec(row(), 1..6)) {
        let custom: FormatSpec = serde_json::from_value(serde_json::json!({
            "field_instruction": "instruction", "field_output": "output", "format": "[INST] {instruction} {input} [/INST]",
            "no_input_format": "[INST] {instruction} [/INST]", "system_prompt": "s"
        })).unwrap();
        for spec in [FormatSpec::default(), custom] {
            let formatter = dataset_type::build(&spec, &tokenizer_info()).unwrap();
            for row in &rows {
                let _ = formatter.format(row);
            }
        }
    }

    #[test]
    fn arbitrary_templates_render_arbitrary_messages_without_panicking(
        source in template_source(),
        messages in template_messages(),
    ) {
        if let Ok(template) = ChatTemplate::new("fuzzed", &source, "<s>", "</s>") {
            render_all_ways(&template, &messages);
        }
    }

    #[test]
    fn built_in_styles_render_arbitrary_messages_without_panicking(
        style in prop::sample::select(styles::STYLES.iter().map(|style| style.name).collect::<Vec<_>>()),
        messages in template_messages(),
    ) {
        let style = styles::find(style).unwrap();
        let template = ChatTemplate::new(style.name, style.source, "<s>", "</s>").unwrap();
        render_all_ways(&template, &messages);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn damaged_parquet_and_arrow_files_never_panic(damage in damage(), arrow in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let (name, bytes, kind) = if arrow {
            ("data.arrow", valid_arrow_stream(), FileKind::Arrow)
        } else {
            ("data.parquet", valid_parquet(), FileKind::Parquet)
        };
        let path = dir.path().join(name);
        fs_err::write(&path, damaged(bytes, &damage)).unwrap();
        read_everything(&path, kind);
    }

    #[test]
    fn damaged_stores_never_panic(
        file in 0usize..8,
        damage in damage(),
        pick in any::<u64>(),
        replacement in prop_oneof![Just(u64::MAX), Just(u64::MAX / 8), any::<u64>(), 0u64..20],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        write_store(&store);
        let mut names: Vec<_> = fs_err::read_dir(&store).unwrap().map(|entry| entry.unwrap().path()).collect();
        names.sort();
        let target = &names[file % names.len()];
        let bytes = fs_err::read(target).unwrap();
        if target.ends_with(crate::store::META_FILE) && pick % 2 == 0 {
            let mut meta: Value = serde_json::from_slice(&bytes).unwrap();
            replace_numbers(&mut meta, pick / 2, replacement, &mut 0);
            fs_err::write(target, serde_json::to_vec(&meta).unwrap()).unwrap();
        } else {
            fs_err::write(target, damaged(bytes, &damage)).unwrap();
        }
        read_store_everything(&store);
    }
}
