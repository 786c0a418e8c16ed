use super::*;
use crate::template::styles;

fn mistral_info(chat_template: Option<&str>) -> TokenizerInfo {
    TokenizerInfo {
        bos: Some("<s>".into()),
        eos: Some("</s>".into()),
        chat_template: chat_template.map(str::to_owned),
    }
}

fn row(json: &str) -> Map<String, Value> {
    serde_json::from_str(json).unwrap()
}

fn options(json: &str) -> FormatSpec {
    serde_json::from_str(json).unwrap()
}

fn trained_texts(rendered: &RenderedConversation) -> Vec<&str> {
    rendered
        .trainable
        .iter()
        .map(|range| &rendered.text[range.clone()])
        .collect()
}

const SHAREGPT_ROW: &str = r#"{"conversations":[{"from":"human","value":"What is 2+2?"},{"from":"gpt","value":"4."},{"from":"human","value":"And 3+3?"},{"from":"gpt","value":"6."}]}"#;

#[test]
fn sharegpt_defaults_to_vicuna_and_trains_answers_with_eos() {
    let formatter = build(ConversationType::ShareGpt, &FormatSpec::default(), &mistral_info(None)).unwrap();
    let rendered = formatter.render_row(&row(SHAREGPT_ROW)).unwrap();
    assert_eq!(
        rendered.text,
        format!(
            "<s>{} USER: What is 2+2? ASSISTANT: 4.</s>USER: And 3+3? ASSISTANT: 6.</s>",
            styles::VICUNA_SYSTEM
        )
    );
    assert_eq!(trained_texts(&rendered), vec!["4.</s>", "6.</s>"]);
}

#[test]
fn sharegpt_chatml_2024_has_a_default_system_message() {
    let formatter = build(
        ConversationType::ShareGpt,
        &options(r#"{"conversation":"chatml"}"#),
        &mistral_info(None),
    )
    .unwrap();
    let rendered = formatter.render_row(&row(SHAREGPT_ROW)).unwrap();
    assert!(
        rendered
            .text
            .starts_with("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    );
    assert_eq!(trained_texts(&rendered), vec!["4.<|im_end|>", "6.<|im_end|>"]);
}

#[test]
fn chat_template_with_property_mappings_matches_the_axolotl_example() {
    let formatter = build(
        ConversationType::ChatTemplate,
        &options(
            r#"{"chat_template":"chatml","field_messages":"conversations",
                "message_property_mappings":{"role":"from","content":"value"}}"#,
        ),
        &mistral_info(None),
    )
    .unwrap();
    let rendered = formatter
        .render_row(&row(
            r#"{"conversations":[{"from":"system","value":"Be terse."},{"from":"human","value":"What is 2+2?"},
                {"from":"gpt","value":"4."},{"from":"human","value":"And 3+3?"},{"from":"gpt","value":"6."}]}"#,
        ))
        .unwrap();
    assert_eq!(
        rendered.text,
        "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n\
         4.<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n6.<|im_end|>\n"
    );
    assert_eq!(trained_texts(&rendered), vec!["4.<|im_end|>", "6.<|im_end|>"]);
    assert_eq!(rendered.turns.len(), 5);
    assert!(!rendered.turns[0].trained && rendered.turns[2].trained);
}

#[test]
fn train_on_eos_variants() {
    let messages = r#"{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},
                       {"role":"user","content":"c"},{"role":"assistant","content":"d"}]}"#;
    let cases = [
        ("turn", vec!["b<|im_end|>", "d<|im_end|>"]),
        ("last", vec!["b", "d<|im_end|>"]),
        ("none", vec!["b", "d"]),
        ("all", vec!["<|im_end|>", "b<|im_end|>", "<|im_end|>", "d<|im_end|>"]),
    ];
    for (mode, expected) in cases {
        let formatter = build(
            ConversationType::ChatTemplate,
            &options(&format!(r#"{{"chat_template":"chatml","train_on_eos":"{mode}"}}"#)),
            &mistral_info(None),
        )
        .unwrap();
        let rendered = formatter.render_row(&row(messages)).unwrap();
        assert_eq!(trained_texts(&rendered), expected, "{mode}");
    }
}

#[test]
fn roles_to_train_and_train_on_inputs() {
    let messages = r#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"},{"role":"assistant","content":"a"}]}"#;
    let formatter = build(
        ConversationType::ChatTemplate,
        &options(r#"{"chat_template":"llama3","roles_to_train":["user"],"train_on_eos":"none"}"#),
        &mistral_info(None),
    )
    .unwrap();
    assert_eq!(trained_texts(&formatter.render_row(&row(messages)).unwrap()), vec!["u"]);
    let formatter = build(
        ConversationType::ChatTemplate,
        &options(r#"{"chat_template":"llama3","train_on_inputs":true,"train_on_eos":"none"}"#),
        &mistral_info(None),
    )
    .unwrap();
    assert_eq!(
        trained_texts(&formatter.render_row(&row(messages)).unwrap()),
        vec!["s", "u", "a"]
    );
}

#[test]
fn per_message_training_flag_overrides_roles() {
    let formatter = build(
        ConversationType::ChatTemplate,
        &options(r#"{"chat_template":"mistral","message_field_training":"train"}"#),
        &mistral_info(None),
    )
    .unwrap();
    let rendered = formatter
        .render_row(&row(
            r#"{"messages":[{"role":"user","content":"q1"},{"role":"assistant","content":"bad","train":false},
                {"role":"user","content":"q2"},{"role":"assistant","content":"good"}]}"#,
        ))
        .unwrap();
    assert_eq!(rendered.text, "<s>[INST] q1 [/INST]bad</s>[INST] q2 [/INST]good</s>");
    assert_eq!(trained_texts(&rendered), vec!["good</s>"]);
}

#[test]
fn llama2_trims_and_trains_the_eos_after_a_space() {
    let formatter = build(
        ConversationType::ChatTemplate,
        &options(r#"{"chat_template":"llama2"}"#),
        &mistral_info(None),
    )
    .unwrap();
    let rendered = formatter
        .render_row(&row(
            r#"{"messages":[{"role":"system","content":" sys "},{"role":"user","content":"hi "},{"role":"assistant","content":" yo\n"}]}"#,
        ))
        .unwrap();
    assert_eq!(rendered.text, "<s>[INST] <<SYS>>\nsys\n<</SYS>>\n\nhi [/INST] yo </s>");
    assert_eq!(trained_texts(&rendered), vec!["yo", "</s>"]);
}

#[test]
fn default_and_dropped_system_messages() {
    let messages = r#"{"messages":[{"role":"user","content":"u"},{"role":"assistant","content":"a"}]}"#;
    let formatter = build(
        ConversationType::ChatTemplate,
        &options(r#"{"chat_template":"chatml","default_system_message":"Be kind."}"#),
        &mistral_info(None),
    )
    .unwrap();
    assert!(
        formatter
            .render_row(&row(messages))
            .unwrap()
            .text
            .starts_with("<|im_start|>system\nBe kind.<|im_end|>")
    );
    let formatter = build(
        ConversationType::ChatTemplate,
        &options(r#"{"chat_template":"chatml","drop_system_message":true}"#),
        &mistral_info(None),
    )
    .unwrap();
    let with_system = r#"{"messages":[{"role":"system","content":"x"},{"role":"user","content":"u"}]}"#;
    assert_eq!(
        formatter.render_row(&row(with_system)).unwrap().text,
        "<|im_start|>user\nu<|im_end|>\n"
    );
}

#[test]
fn tokenizer_default_and_inline_jinja() {
    let jinja = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{{ eos_token }}{% endfor %}";
    let formatter = build(
        ConversationType::ChatTemplate,
        &FormatSpec::default(),
        &mistral_info(Some(jinja)),
    )
    .unwrap();
    assert_eq!(formatter.template_name(), "tokenizer_default");
    let rendered = formatter
        .render_row(&row(
            r#"{"messages":[{"role":"user","content":"u"},{"role":"assistant","content":"a"}]}"#,
        ))
        .unwrap();
    assert_eq!(trained_texts(&rendered), vec!["a</s>"]);

    let error = build(
        ConversationType::ChatTemplate,
        &FormatSpec::default(),
        &mistral_info(None),
    )
    .unwrap_err();
    assert!(error.to_string().contains("no chat_template"), "{error}");

    let formatter = build(
        ConversationType::ChatTemplate,
        &options(r#"{"chat_template":"tokenizer_default_fallback_chatml"}"#),
        &mistral_info(None),
    )
    .unwrap();
    assert_eq!(formatter.template_name(), "chatml");

    let formatter = build(
        ConversationType::ChatTemplate,
        &FormatSpec {
            chat_template_jinja: Some(jinja.into()),
            ..FormatSpec::default()
        },
        &mistral_info(None),
    )
    .unwrap();
    assert_eq!(formatter.template_name(), "chat_template_jinja");
}

#[test]
fn unknown_style_is_a_config_error_listing_the_styles() {
    let error = build(
        ConversationType::ChatTemplate,
        &options(r#"{"chat_template":"chatmel"}"#),
        &mistral_info(None),
    )
    .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("chat_template") && text.contains("chatmel") && text.contains("llama3"),
        "{text}"
    );
}

#[test]
fn bad_rows_name_the_field() {
    let formatter = build(
        ConversationType::ChatTemplate,
        &options(r#"{"chat_template":"chatml"}"#),
        &mistral_info(None),
    )
    .unwrap();
    let cases = [
        (r#"{"text":"x"}"#, "messages"),
        (r#"{"messages":"hi"}"#, "messages"),
        (r#"{"messages":[]}"#, "messages"),
        (r#"{"messages":[{"role":"wizard","content":"x"}]}"#, "messages[0].role"),
        (r#"{"messages":[{"role":"user"}]}"#, "messages[0].content"),
        (
            r#"{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":7}]}"#,
            "messages[1].content",
        ),
        (r#"{"messages":[{"role":"user","content":"a"},"b"]}"#, "messages[1]"),
    ];
    for (json, field) in cases {
        let error = formatter.format(&row(json)).unwrap_err();
        assert_eq!(error.field, field, "{json}: {}", error.message);
    }
    let error = formatter
        .format(&row(r#"{"messages":[{"role":"wizard","content":"x"}]}"#))
        .unwrap_err();
    assert!(
        error.message.contains("wizard") && error.message.contains("roles"),
        "{}",
        error.message
    );
}

#[test]
fn template_errors_become_field_errors() {
    let formatter = build(
        ConversationType::ChatTemplate,
        &options(r#"{"chat_template":"mistral"}"#),
        &mistral_info(None),
    )
    .unwrap();
    let error = formatter
        .format(&row(
            r#"{"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}"#,
        ))
        .unwrap_err();
    assert_eq!(error.field, "messages");
    assert!(error.message.contains("alternate"), "{}", error.message);
}

#[test]
fn sharegpt_variants() {
    let guanaco = build(
        ConversationType::ShareGptLoadGuanaco,
        &FormatSpec::default(),
        &mistral_info(None),
    )
    .unwrap();
    let rendered = guanaco
        .render_row(&row(
            r#"{"conversations":[{"role":"prompter","text":"Hi"},{"role":"assistant","text":"Hello!"}]}"#,
        ))
        .unwrap();
    assert!(
        rendered.text.ends_with("USER: Hi ASSISTANT: Hello!</s>"),
        "{}",
        rendered.text
    );
    assert_eq!(trained_texts(&rendered), vec!["Hello!</s>"]);

    let role = build(
        ConversationType::ShareGptLoadRole,
        &FormatSpec::default(),
        &mistral_info(None),
    )
    .unwrap();
    let rendered = role
        .render_row(&row(
            r#"{"conversations":[{"role":"human","value":"Hi"},{"role":"gpt","value":"Hello!"}]}"#,
        ))
        .unwrap();
    assert_eq!(trained_texts(&rendered), vec!["Hello!</s>"]);

    let jokes = build(
        ConversationType::ShareGptJokes,
        &FormatSpec::default(),
        &mistral_info(None),
    )
    .unwrap();
    let rendered = jokes
        .render_row(&row(r#"{"title":"Atoms","text":"Never trust an atom; they make up everything.","explanation":"Pun on 'make up'."}"#))
        .unwrap();
    assert!(rendered.text.ends_with(
        "USER: Tell me a joke. ASSISTANT: Atoms Never trust an atom; they make up everything.</s>USER: Why is that joke funny? ASSISTANT: Pun on 'make up'.</s>"
    ));
    assert_eq!(
        trained_texts(&rendered),
        vec![
            "Atoms Never trust an atom; they make up everything.</s>",
            "Pun on 'make up'.</s>"
        ]
    );

    let pygmalion = build(ConversationType::Pygmalion, &FormatSpec::default(), &mistral_info(None)).unwrap();
    let rendered = pygmalion
        .render_row(&row(
            r#"{"conversations":[{"role":"system","value":"A friendly bot.\n<START>"},{"role":"human","value":"Hi"},{"role":"bot","value":"Hello!"}]}"#,
        ))
        .unwrap();
    assert_eq!(
        rendered.text,
        "<s><|system|>Persona: A friendly bot.<|user|> Hi<|model|> Hello!</s>"
    );
    assert_eq!(trained_texts(&rendered), vec!["Hello!</s>"]);
}

#[test]
fn sharegpt_2024_roles_and_field_names() {
    let formatter = build(
        ConversationType::ShareGpt,
        &options(
            r#"{"conversation":"chatml","field_human":"person","roles":{"input":["critic"],"output":["writer"]}}"#,
        ),
        &mistral_info(None),
    )
    .unwrap();
    let rendered = formatter
        .render_row(&row(
            r#"{"conversations":[{"from":"person","value":"p"},{"from":"writer","value":"w"},{"from":"critic","value":"c"},{"from":"gpt","value":"g"}]}"#,
        ))
        .unwrap();
    assert!(
        rendered.text.contains("<|im_start|>writer\nw<|im_end|>") && rendered.text.contains("<|im_start|>critic\nc")
    );
    assert_eq!(trained_texts(&rendered), vec!["w<|im_end|>", "g<|im_end|>"]);
}

#[test]
fn custom_roles_replace_the_default_map() {
    let formatter = build(
        ConversationType::ChatTemplate,
        &options(r#"{"chat_template":"chatml","roles":{"user":["q"],"assistant":["a"]}}"#),
        &mistral_info(None),
    )
    .unwrap();
    assert!(
        formatter
            .render_row(&row(
                r#"{"messages":[{"role":"q","content":"x"},{"role":"a","content":"y"}]}"#
            ))
            .is_ok()
    );
    let error = formatter
        .format(&row(r#"{"messages":[{"role":"user","content":"x"}]}"#))
        .unwrap_err();
    assert_eq!(error.field, "messages[0].role");
}

#[test]
fn format_build_dispatches_conversation_types() {
    let spec: FormatSpec = serde_json::from_str(
        r#"{"type":"chat_template","chat_template":"chatml","field_messages":"conversations",
            "message_property_mappings":{"role":"from","content":"value"},"train_on_eos":"none"}"#,
    )
    .unwrap();
    let formatter = crate::dataset_type::build(&spec, &mistral_info(None)).unwrap();
    let sample = formatter.format(&row(SHAREGPT_ROW)).unwrap();
    let Sample::Text(rendered) = sample else {
        panic!("conversations render to text")
    };
    assert!(!rendered.add_special_tokens);
    let trained: Vec<&str> = rendered
        .trainable
        .iter()
        .map(|range| &rendered.text[range.clone()])
        .collect();
    assert_eq!(trained, vec!["4.", "6."]);

    let typo: FormatSpec = serde_json::from_str(r#"{"type":"sharegtp"}"#).unwrap();
    let error = crate::dataset_type::build(&typo, &mistral_info(None))
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("did you mean 'sharegpt'"), "{error}");
}

#[test]
fn template_source_resolves_config_names() {
    assert_eq!(
        crate::template::source("chatml", None, &mistral_info(None)).unwrap(),
        styles::find("chatml").unwrap().source
    );
    assert_eq!(
        crate::template::source("tokenizer_default", None, &mistral_info(Some("{{ x }}"))).unwrap(),
        "{{ x }}"
    );
    assert_eq!(
        crate::template::source("jinja", Some("{{ y }}"), &mistral_info(None)).unwrap(),
        "{{ y }}"
    );
    assert!(crate::template::source("jinja", None, &mistral_info(None)).is_err());
}

#[test]
fn a_style_saved_as_the_tokenizer_template_keeps_its_end_of_turn() {
    let llama3 = styles::find("llama3").unwrap().source;
    let formatter = build(
        ConversationType::ChatTemplate,
        &FormatSpec::default(),
        &mistral_info(Some(llama3)),
    )
    .unwrap();
    let rendered = formatter
        .render_row(&row(
            r#"{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}"#,
        ))
        .unwrap();
    assert_eq!(trained_texts(&rendered), vec!["a<|eot_id|>"]);
}
