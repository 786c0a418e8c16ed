//! Differential tests: the fast encoder against `tokenizers`' full pipeline, ids and offsets.

use proptest::prelude::*;
use serde_json::{Value, json};
use tokenizers::{AddedToken, Tokenizer};

use super::*;

/// A SentencePiece-style BPE: "▁" words, byte fallback, a few merges, `<s>` from the template.
fn sentencepiece_json() -> Value {
    let mut pieces: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    pieces.extend((0..=255u8).map(|byte| format!("<0x{byte:02X}>")));
    pieces.extend(
        "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ:#.,!?é中"
            .chars()
            .map(String::from),
    );
    let merges = [
        ("▁", "▁"),
        ("▁▁", "▁▁"),
        ("▁", "h"),
        ("e", "l"),
        ("el", "l"),
        ("▁h", "ell"),
        ("▁hell", "o"),
        ("o", "r"),
        ("▁", "w"),
        ("▁w", "or"),
        ("▁", "中"),
    ];
    pieces.extend(merges.iter().map(|(left, right)| format!("{left}{right}")));
    let vocab: serde_json::Map<String, Value> = pieces
        .iter()
        .enumerate()
        .map(|(id, piece)| (piece.clone(), Value::from(id)))
        .collect();
    json!({
        "version": "1.0", "truncation": null, "padding": null,
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
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}, "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}
        },
        "decoder": null,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab,
            "merges": merges.iter().map(|(left, right)| vec![*left, *right]).collect::<Vec<_>>()
        }
    })
}

/// The same vocabulary with the `Metaspace` pre-tokenizer (no normalizer), as tokenizer.json
/// files converted by recent transformers have it.
fn metaspace_json(scheme: &str, split: bool) -> Value {
    let mut json = sentencepiece_json();
    json["normalizer"] = Value::Null;
    json["pre_tokenizer"] = json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme, "split": split});
    if split {
        // Pieces that hold a char then "▁" are fine when `tokenizers` splits before each "▁";
        // merged across the split they would change the result if the encoder cut elsewhere.
        let pieces = [("a", "▁"), ("▁", "▁"), ("d", "▁▁"), ("▁", "b")];
        let vocab = json["model"]["vocab"].as_object_mut().unwrap();
        for (left, right) in pieces {
            let next = vocab.len();
            vocab.entry(format!("{left}{right}")).or_insert(Value::from(next));
        }
        let merges = json["model"]["merges"].as_array_mut().unwrap();
        merges.extend(pieces.iter().map(|(left, right)| json!([left, right])));
    }
    json
}

/// A GPT-2-style byte-level BPE: the 256-char alphabet and merges of common English pieces.
fn byte_level_json(pre_tokenizer: &Value) -> Value {
    let alphabet = byte_level_alphabet();
    let mut pieces: Vec<String> = alphabet.iter().map(char::to_string).collect();
    let space = alphabet[b' ' as usize];
    let merges: Vec<(String, String)> = [
        (format!("{space}"), "t".to_string()),
        ("h".into(), "e".into()),
        (format!("{space}t"), "he".into()),
        ("i".into(), "n".into()),
        ("in".into(), "g".into()),
        (format!("{space}"), "a".into()),
        ("e".into(), "r".into()),
        (format!("{space}{space}"), format!("{space}{space}")),
        (format!("{space}"), format!("{space}")),
        ("Ã".into(), "©".into()),
    ]
    .into_iter()
    .collect();
    for (left, right) in &merges {
        let piece = format!("{left}{right}");
        if !pieces.contains(&piece) {
            pieces.push(piece);
        }
    }
    let vocab: serde_json::Map<String, Value> = pieces
        .iter()
        .enumerate()
        .map(|(id, piece)| (piece.clone(), Value::from(id)))
        .collect();
    let endoftext = pieces.len();
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [
            {"id": endoftext, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": endoftext + 1, "content": "<|im_start|>", "single_word": false, "lstrip": true, "rstrip": true, "normalized": false, "special": true},
            {"id": endoftext + 2, "content": "word", "single_word": true, "lstrip": false, "rstrip": false, "normalized": true, "special": false}
        ],
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": null,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab,
            "merges": merges.iter().map(|(left, right)| vec![left.clone(), right.clone()]).collect::<Vec<_>>()
        }
    })
}

/// GPT-2's own layout: the GPT-2 split and a `ByteLevel` post-processor that trims offsets,
/// alone or in a `Sequence` before or after a template that adds `<|endoftext|>` as BOS; plus
/// whitespace added tokens (one multi-byte), whose strings the trim also counts.
fn trimming_json(add_prefix_space: bool, template: Option<&str>) -> Value {
    let mut json = byte_level_json(&gpt2_pre_tokenizer());
    let byte_level =
        json!({"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": true, "use_regex": true});
    let bos = json["added_tokens"][0]["id"].clone();
    let template_step = json!({"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [bos], "tokens": ["<|endoftext|>"]}}});
    json["post_processor"] = match template {
        None => byte_level,
        Some("before") => json!({"type": "Sequence", "processors": [byte_level, template_step]}),
        Some(_) => json!({"type": "Sequence", "processors": [template_step, byte_level]}),
    };
    let next = json["model"]["vocab"].as_object().unwrap().len() + 3;
    let added = json["added_tokens"].as_array_mut().unwrap();
    for (index, content) in [" \u{3000}", "\t\t"].into_iter().enumerate() {
        added.push(json!({"id": next + index, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": false}));
    }
    json
}

fn trimming_jsons() -> Vec<Value> {
    [
        (false, None),
        (true, None),
        (true, Some("before")),
        (true, Some("after")),
        (false, Some("after")),
    ]
    .into_iter()
    .map(|(add_prefix_space, template)| trimming_json(add_prefix_space, template))
    .collect()
}

fn gpt2_pre_tokenizer() -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
}

fn tekken_pre_tokenizer() -> Value {
    json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": scan::TEKKEN_PATTERN}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
    ]})
}

fn llama3_pre_tokenizer() -> Value {
    json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": scan::LLAMA3_PATTERN}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
    ]})
}

/// Llama 3's tokenizer.json layout: the Llama 3 split, and a post-processor `Sequence` of an
/// offset-keeping `ByteLevel` and a template adding `<|endoftext|>` as its BOS.
fn llama3_json() -> Value {
    let mut json = byte_level_json(&llama3_pre_tokenizer());
    let bos = json["added_tokens"][0]["id"].clone();
    json["post_processor"] = json!({"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [bos], "tokens": ["<|endoftext|>"]}}}
    ]});
    json
}

/// Qwen 2's tokenizer.json layout: NFC, the Qwen 2 split and an offset-keeping `ByteLevel`
/// post-processor.
fn qwen2_json() -> Value {
    let mut json = byte_level_json(&json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": scan::QWEN2_PATTERN}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}
    ]}));
    json["normalizer"] = json!({"type": "NFC"});
    json["post_processor"] =
        json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false});
    json
}

fn tokenizer(json: &Value) -> Tokenizer {
    Tokenizer::from_bytes(json.to_string().as_bytes()).unwrap()
}

/// Ids and offsets from the fast encoder and from `tokenizers`, for `text`.
fn both(fast: &FastEncoder, reference: &Tokenizer, text: &str, add_special: bool) -> (FastEncoding, FastEncoding) {
    let mine = fast.encode(text, add_special).unwrap();
    let encoding = reference.encode(text, add_special).unwrap();
    let sequence_ids = encoding.get_sequence_ids();
    let content: Vec<usize> = (0..encoding.len())
        .filter(|&index| sequence_ids[index].is_some())
        .collect();
    let theirs = FastEncoding {
        ids: encoding.get_ids().to_vec(),
        offsets: (0..encoding.len())
            .map(|index| {
                if sequence_ids[index].is_some() {
                    encoding.get_offsets()[index]
                } else {
                    (0, 0)
                }
            })
            .collect(),
        content: content
            .first()
            .map_or(mine.content.start..mine.content.start, |&first| {
                first..content.last().map_or(first, |last| last + 1)
            }),
    };
    (mine, theirs)
}

const AWKWARD: &[&str] = &[
    "",
    " ",
    "hello world",
    "  hello  world  ",
    "hello</s>world",
    "a </s>  b</s>",
    "</s>",
    "</s> hi",
    "é中文 x 😀👍🏽 e\u{301} \u{0}\u{7}\t\r\n\u{2028}\u{85}",
    "▁literal ▁▁ marks▁ ",
    "1234567890 ١٢٣ Ⅻ 3.14",
    "it's don't WE'LL they're 'S 'ſ 'Re",
    "<|endoftext|>x <|im_start|>  y  <|im_start|>z",
    "a word, words, sword word",
    " a\t\tb \u{3000} c  \u{3000}\t\t \u{3000}",
    "\t\tx\t\t",
    " x ",
];

fn assert_same(fast: &FastEncoder, reference: &Tokenizer, text: &str) {
    for add_special in [true, false] {
        let (mine, theirs) = both(fast, reference, text, add_special);
        assert_eq!(mine, theirs, "{text:?} (add_special_tokens: {add_special})");
    }
}

fn long_texts() -> Vec<String> {
    vec![
        " ".repeat(300) + "x",
        "word".repeat(2000),
        "\n".repeat(50) + &"\t ".repeat(40),
        "9".repeat(100),
        "héllo wörld ".repeat(50),
    ]
}

#[test]
fn sentencepiece_matches_tokenizers_on_awkward_text() {
    let reference = tokenizer(&sentencepiece_json());
    let fast = recognise(&reference).unwrap();
    assert!(fast.description().contains("SentencePiece"));
    for text in AWKWARD.iter().map(ToString::to_string).chain(long_texts()) {
        assert_same(&fast, &reference, &text);
    }
    let stats = fast.stats();
    assert!(stats.cache_hits > 0 && stats.cache_misses > 0, "{stats:?}");
}

#[test]
fn metaspace_matches_tokenizers_on_awkward_text() {
    for split in [false, true] {
        for scheme in ["first", "always", "never"] {
            let reference = tokenizer(&metaspace_json(scheme, split));
            let fast = recognise(&reference).unwrap();
            let name = if split {
                "Metaspace \"▁\" split"
            } else {
                "Metaspace \"▁\","
            };
            assert!(fast.description().contains(name), "{}", fast.description());
            for text in AWKWARD.iter().map(ToString::to_string).chain(long_texts()) {
                assert_same(&fast, &reference, &text);
            }
        }
    }
    // The pieces across "▁" that make the split layout exact are what the unsplit one refuses.
    let unsplit = metaspace_json("first", true);
    let mut unsplit = unsplit;
    unsplit["pre_tokenizer"]["split"] = Value::from(false);
    assert!(
        recognise(&tokenizer(&unsplit))
            .unwrap_err()
            .contains("spans a word boundary")
    );
}

#[test]
fn byte_level_matches_tokenizers_on_awkward_text() {
    let jsons = [
        byte_level_json(&gpt2_pre_tokenizer()),
        byte_level_json(&tekken_pre_tokenizer()),
        llama3_json(),
        qwen2_json(),
    ];
    for json in jsons.into_iter().chain(trimming_jsons()) {
        let reference = tokenizer(&json);
        let fast = recognise(&reference).unwrap();
        assert!(fast.description().contains("byte-level"));
        for text in AWKWARD.iter().map(ToString::to_string).chain(long_texts()) {
            // The NFC tokenizer leaves texts not in NFC (the combining accent) to `tokenizers`.
            if fast.accepts(&text) {
                assert_same(&fast, &reference, &text);
            }
        }
    }
}

#[test]
fn added_tokens_with_options_split_like_tokenizers() {
    let mut reference = tokenizer(&sentencepiece_json());
    reference
        .add_tokens(vec![
            AddedToken::from("<tool>", false).normalized(false).lstrip(true),
            AddedToken::from("<end>", false).normalized(false).rstrip(true),
            AddedToken::from("go", false).normalized(false).single_word(true),
        ])
        .unwrap();
    let fast = recognise(&reference).unwrap();
    for text in [
        "a <tool> b",
        "a   <tool>   <end>   c",
        "go go, going ago go",
        "<end> <tool><end>",
    ] {
        assert_same(&fast, &reference, text);
    }
}

#[test]
fn unrecognised_pipelines_fall_back_with_a_reason() {
    let mut json = sentencepiece_json();
    json["normalizer"] = json!({"type": "NFKC"});
    assert!(recognise(&tokenizer(&json)).unwrap_err().contains("normalizer"));

    let mut json = sentencepiece_json();
    json["model"]["vocab"]["a▁"] = Value::from(9999);
    assert!(
        recognise(&tokenizer(&json))
            .unwrap_err()
            .contains("spans a word boundary")
    );

    let mut json = byte_level_json(&tekken_pre_tokenizer());
    json["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = Value::from(r"\w+|\s+");
    assert!(recognise(&tokenizer(&json)).unwrap_err().contains("has no scanner"));

    let mut json = trimming_json(true, Some("before"));
    json["post_processor"]["processors"][1] = json["post_processor"]["processors"][0].clone();
    assert!(
        recognise(&tokenizer(&json))
            .unwrap_err()
            .contains("trims offsets twice")
    );

    let mut json = metaspace_json("first", true);
    json["post_processor"] =
        json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    assert!(recognise(&tokenizer(&json)).unwrap_err().contains("SentencePiece"));

    let mut json = llama3_json();
    json["post_processor"]["processors"][0] = json!({"type": "BertProcessing", "sep": ["</s>", 2], "cls": ["<s>", 1]});
    assert!(recognise(&tokenizer(&json)).unwrap_err().contains("is not handled"));

    let mut reference = tokenizer(&sentencepiece_json());
    reference.add_tokens(vec![AddedToken::from("hi there", false)]).unwrap();
    assert!(recognise(&reference).unwrap_err().contains("normalized: true"));
}

fn fuzz_text() -> impl Strategy<Value = String> {
    "(\\PC|[ \t\r\n\u{2028}\u{3000}\u{301}\u{2581}']|</s>|<\\|endoftext\\|>|<\\|im_start\\|>| word |hello|the|ing|'[sSrRlL]{1,2}|[0-9]{1,5}|  +|\t\t| \u{3000}){0,30}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_strings_encode_like_tokenizers(text in fuzz_text()) {
        thread_local! {
            static ENCODERS: Vec<(Tokenizer, FastEncoder)> = [
                sentencepiece_json(),
                metaspace_json("first", false),
                metaspace_json("always", false),
                metaspace_json("first", true),
                metaspace_json("always", true),
                metaspace_json("never", true),
                byte_level_json(&gpt2_pre_tokenizer()),
                byte_level_json(&tekken_pre_tokenizer()),
                llama3_json(),
                qwen2_json(),
            ]
            .into_iter()
            .chain(trimming_jsons())
            .collect::<Vec<_>>()
            .iter()
            .map(|json| {
                let reference = tokenizer(json);
                let fast = recognise(&reference).unwrap();
                (reference, fast)
            })
            .collect();
        }
        ENCODERS.with(|encoders| {
            for (reference, fast) in encoders {
                if !fast.accepts(&text) {
                    continue;
                }
                let (mine, theirs) = both(fast, reference, &text, true);
                prop_assert_eq!(mine, theirs, "{}", fast.description());
            }
            Ok(())
        })?;
    }
}

#[test]
fn nfc_tokenizers_take_only_texts_already_in_nfc() {
    let reference = tokenizer(&qwen2_json());
    let fast = recognise(&reference).unwrap();
    assert!(
        fast.description().contains("Qwen 2 split, NFC"),
        "{}",
        fast.description()
    );
    // "é" composed is NFC; "e" + U+0301 is not, and NFC would change its ids and offsets.
    for text in ["caf\u{e9} 12345 it'S", "<|endoftext|>\u{e9}t\u{e9}"] {
        assert!(fast.accepts(text), "{text:?}");
        assert_same(&fast, &reference, text);
    }
    for text in ["cafe\u{301}", "x<|endoftext|>e\u{301}"] {
        assert!(!fast.accepts(text), "{text:?}");
        let (mine, theirs) = both(&fast, &reference, text, true);
        assert_ne!(
            mine.ids, theirs.ids,
            "{text:?}: NFC changes the ids, so the fast path must not take it"
        );
    }
    let mut json = sentencepiece_json();
    json["normalizer"] = json!({"type": "NFC"});
    assert!(recognise(&tokenizer(&json)).unwrap_err().contains("NFC"));
}

#[test]
fn preprocessing_sends_texts_not_in_nfc_to_tokenizers() {
    use crate::encode::{AddedTokens, Encoder};
    use crate::sample::{RenderedText, Sample};

    let dir = tempfile::tempdir().unwrap();
    fs_err::write(dir.path().join("tokenizer.json"), qwen2_json().to_string()).unwrap();
    let encoder = Encoder::from_dir(dir.path(), &AddedTokens::default()).unwrap();
    assert!(encoder.fast_encoder().is_ok());
    let reference = tokenizer(&qwen2_json());
    for text in ["the caf\u{e9}", "the cafe\u{301}"] {
        let sample = Sample::Text(RenderedText {
            text: text.into(),
            trainable: std::iter::once(0..text.len()).collect(),
            add_special_tokens: true,
        });
        let output = encoder.encode(&sample).unwrap();
        assert_eq!(
            output.input_ids,
            reference.encode(text, true).unwrap().get_ids(),
            "{text:?}"
        );
    }
}
