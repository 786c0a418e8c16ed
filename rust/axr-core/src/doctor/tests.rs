use super::*;

fn turn(role: &str, trained: bool, end: Option<Range<usize>>, end_trained: bool) -> RenderedTurn {
    RenderedTurn {
        role: role.into(),
        trained,
        content: vec![Range { start: 0, end: 1 }],
        end_of_turn: end,
        end_of_turn_trained: end_trained,
    }
}

#[test]
fn end_of_turn_expectations_follow_train_on_eos() {
    let trained_end = [
        turn("user", false, Some(2..4), false),
        turn("assistant", true, Some(6..8), true),
    ];
    let view = ConversationView::new(&trained_end, TrainOnEos::Turn);
    assert!(!view.end_of_turn_missing);
    assert_eq!(view.last_expected_end, Some(6..8));
    // `all` also expects the user's end-of-turn to be trained.
    assert!(ConversationView::new(&trained_end, TrainOnEos::All).end_of_turn_missing);
    let no_end = [turn("user", false, None, false), turn("assistant", true, None, false)];
    assert!(ConversationView::new(&no_end, TrainOnEos::Turn).end_of_turn_missing);
    assert!(ConversationView::new(&no_end, TrainOnEos::Last).end_of_turn_missing);
    assert!(!ConversationView::new(&no_end, TrainOnEos::None).end_of_turn_missing);
}

#[test]
fn special_text_is_found_in_any_nested_field_with_its_path() {
    let specials = Regex::new("<\\|im_start\\|>|<s>").unwrap();
    let row: Value = serde_json::json!({
        "instruction": "plain",
        "messages": [{"role": "user", "content": "fine"}, {"role": "assistant", "content": "a <|im_start|> b"}],
    });
    let found = find_in_row(&specials, row.as_object().unwrap());
    assert_eq!(found, Some(("messages[1].content".into(), "<|im_start|>".into())));
    let nested = serde_json::json!({"a": {"b": [[], ["x", {"c": "<s>"}]]}, "z": "<s>"});
    assert_eq!(
        find_in_row(&specials, nested.as_object().unwrap()),
        Some(("a.b[1][1].c".into(), "<s>".into()))
    );
    assert_eq!(
        find_in_row(&specials, serde_json::json!({"a": ["x"]}).as_object().unwrap()),
        None
    );
}

#[test]
fn report_counts_every_row_and_keeps_the_first_examples() {
    let mut report = DoctorReport::default();
    let found = RowFindings {
        double_bos: true,
        ..RowFindings::default()
    };
    for line in 1..=8 {
        report.record(&found, || format!("a.jsonl:{line}"));
    }
    report.template(Some(false), || "a.jsonl:1".into());
    report.template(None, || "a.jsonl:2".into());
    let double = &report.findings[DOUBLE_BOS];
    assert_eq!(double.count, 8);
    assert_eq!(
        double.examples,
        ["a.jsonl:1", "a.jsonl:2", "a.jsonl:3", "a.jsonl:4", "a.jsonl:5"]
    );
    assert_eq!(
        (report.rows, report.template_checked, report.template_skipped),
        (8, 1, 1)
    );
    assert_eq!(report.findings[TEMPLATE_PROMPT_MISMATCH].count, 1);
}
