//! Where each message's content lands in the rendered conversation, from ONE
//! render of the whole conversation.
//!
//! Each content is wrapped in a pair of private-use code points that encode
//! the message index (open: U+F0000 + i, close: U+100000 + i), the wrapped
//! conversation is rendered once, and the markers are removed. If that gives
//! back the plain render byte for byte, the marker positions are exact spans
//! of the plain text; templates that rewrite earlier turns, merge the system
//! prompt into a user turn or drop a message are all handled, because nothing
//! is inferred from diffs or marker strings.
//!
//! Templates that transform content break the check in known ways, so a few
//! wrappings are tried in order and the first that verifies wins:
//!
//! ```text
//! edges   outer:  ⟨i "  Hi  " i⟩           content untouched by the template
//!         inner:  "  " ⟨i "Hi" i⟩ "  "     templates that .strip()/|trim content
//! empties all marked, then those of untrained roles left bare, then all left
//!         bare (templates that test `{% if message.content %}`); with inner
//!         wrapping, all-whitespace content counts as empty
//! ```
//! Outer wrappings come first (with each treatment of empties), so a template
//! that keeps edge whitespace trains it.
//! If none verifies, rendering stops with an error naming the template.

use std::ops::Range;

use crate::template::{ChatTemplate, TemplateMessage};

const OPEN_BASE: u32 = 0xF_0000;
const CLOSE_BASE: u32 = 0x10_0000;
/// Private-use planes 15 and 16 hold 65,534 usable code points each.
const MAX_MESSAGES: usize = 0xFFFE;

/// The plain render and, per message, the byte ranges of its content in it
/// (empty when the template does not show that content; several when it
/// shows it more than once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentSpans {
    /// The conversation exactly as `apply_chat_template` renders it.
    pub text: String,
    /// One entry per input message.
    pub spans: Vec<Vec<Range<usize>>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Edges {
    Outer,
    Inner,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Empties {
    Marked,
    BareWhenUntrained,
    Bare,
}

fn is_marker(character: char) -> bool {
    u32::from(character) >= OPEN_BASE
}

fn wrap(content: &str, index: usize, (edges, empties): (Edges, Empties), trained: bool) -> String {
    let open = char::from_u32(OPEN_BASE + index as u32).expect("index below MAX_MESSAGES");
    let close = char::from_u32(CLOSE_BASE + index as u32).expect("index below MAX_MESSAGES");
    // After a trim, all-whitespace content is as empty as "" to `{% if %}`.
    let empty = content.is_empty() || (edges == Edges::Inner && content.trim().is_empty());
    let leave_bare = empty
        && match empties {
            Empties::Marked => false,
            Empties::BareWhenUntrained => !trained,
            Empties::Bare => true,
        };
    if leave_bare {
        return content.to_owned();
    }
    if edges == Edges::Outer {
        return format!("{open}{content}{close}");
    }
    let core = content.trim();
    let lead = &content[..content.len() - content.trim_start().len()];
    // All-whitespace content is all lead: the trail would count it twice.
    let trail = if core.is_empty() {
        ""
    } else {
        &content[content.trim_end().len()..]
    };
    format!("{lead}{open}{core}{close}{trail}")
}

/// Strip markers from `marked`; `None` when they are not well formed.
fn strip_markers(marked: &str, count: usize) -> Option<ContentSpans> {
    let mut text = String::with_capacity(marked.len());
    let mut spans = vec![Vec::new(); count];
    let mut open: Option<(usize, usize)> = None;
    for character in marked.chars() {
        if !is_marker(character) {
            text.push(character);
            continue;
        }
        let code = u32::from(character);
        if code < CLOSE_BASE {
            let index = (code - OPEN_BASE) as usize;
            if open.is_some() || index >= count {
                return None;
            }
            open = Some((index, text.len()));
        } else {
            let index = (code - CLOSE_BASE) as usize;
            match open.take() {
                Some((opened, start)) if opened == index => spans[index].push(start..text.len()),
                _ => return None,
            }
        }
    }
    if open.is_some() {
        return None;
    }
    Some(ContentSpans { text, spans })
}

/// Render `messages` once plainly and once marked, and return the verified
/// content spans. `trained[i]` says whether message `i` is trained (used only
/// to choose which empty contents may stay unmarked).
pub fn content_spans(
    template: &ChatTemplate,
    messages: &[TemplateMessage],
    trained: &[bool],
) -> Result<ContentSpans, String> {
    if messages.len() > MAX_MESSAGES {
        return Err(format!(
            "a conversation has {} messages; at most {MAX_MESSAGES} are supported",
            messages.len()
        ));
    }
    if let Some(position) = messages
        .iter()
        .position(|message| message.content.chars().any(is_marker))
    {
        return Err(format!(
            "message {position} contains characters of Unicode private-use planes 15-16 (U+F0000 and above), \
             which axr reserves to locate contents in the render; remove them from the data"
        ));
    }
    let plain = template.render(messages, false)?;
    let has_edge_whitespace = messages
        .iter()
        .any(|message| message.content.trim().len() != message.content.len());
    let has_empty = messages.iter().any(|message| message.content.trim().is_empty());
    let edges: &[Edges] = if has_edge_whitespace {
        &[Edges::Outer, Edges::Inner]
    } else {
        &[Edges::Outer]
    };
    let empties: &[Empties] = if has_empty {
        &[Empties::Marked, Empties::BareWhenUntrained, Empties::Bare]
    } else {
        &[Empties::Marked]
    };
    let attempts = edges
        .iter()
        .flat_map(|&edge| empties.iter().map(move |&empty| (edge, empty)));
    for wrapping in attempts {
        let marked_messages: Vec<TemplateMessage> = messages
            .iter()
            .enumerate()
            .map(|(index, message)| TemplateMessage {
                role: message.role.clone(),
                content: wrap(
                    &message.content,
                    index,
                    wrapping,
                    trained.get(index).copied().unwrap_or(false),
                ),
            })
            .collect();
        // A template that branches on content can fail only when marked; that
        // attempt just does not verify.
        let Ok(marked) = template.render(&marked_messages, false) else {
            continue;
        };
        if let Some(found) = strip_markers(&marked, messages.len())
            && found.text == plain
        {
            return Ok(found);
        }
    }
    Err(format!(
        "chat template `{}` changes message contents in a way axr cannot locate exactly (it is not a plain \
         insertion, a strip/trim, or an emptiness test), so per-turn masks cannot be derived; use a built-in \
         style or a template that inserts each message's content as is",
        template.name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(pairs: &[(&str, &str)]) -> Vec<TemplateMessage> {
        pairs
            .iter()
            .map(|(role, content)| TemplateMessage {
                role: (*role).into(),
                content: (*content).into(),
            })
            .collect()
    }

    fn shown(found: &ContentSpans) -> Vec<Vec<&str>> {
        found
            .spans
            .iter()
            .map(|spans| spans.iter().map(|span| &found.text[span.clone()]).collect())
            .collect()
    }

    #[test]
    fn plain_insertion_keeps_edge_whitespace() {
        let template = ChatTemplate::new(
            "t",
            "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        let found = content_spans(
            &template,
            &messages(&[("user", " Hi "), ("assistant", "Yo\n")]),
            &[false, true],
        )
        .unwrap();
        assert_eq!(found.text, "[user] Hi [assistant]Yo\n");
        assert_eq!(shown(&found), vec![vec![" Hi "], vec!["Yo\n"]]);
    }

    #[test]
    fn trimming_templates_get_the_trimmed_content() {
        let template = ChatTemplate::new(
            "t",
            "{% for m in messages %}<{{ m.content | trim }}>{% endfor %}",
            "",
            "",
        )
        .unwrap();
        let found = content_spans(
            &template,
            &messages(&[("user", "  a b "), ("assistant", "\tc")]),
            &[false, true],
        )
        .unwrap();
        assert_eq!(found.text, "<a b><c>");
        assert_eq!(shown(&found), vec![vec!["a b"], vec!["c"]]);
    }

    #[test]
    fn merged_and_dropped_messages() {
        // The system prompt goes inside the first user turn; the second
        // system message is never shown.
        let source = "{% set sys = messages[0].content %}{% for m in messages[1:] %}{% if m.role == 'user' %}\
                      [{% if loop.first %}{{ sys }}|{% endif %}{{ m.content }}]{% elif m.role != 'system' %}\
                      {{ m.content }}{% endif %}{% endfor %}";
        let template = ChatTemplate::new("t", source, "", "").unwrap();
        let conversation = messages(&[("system", "S"), ("user", "U"), ("system", "hidden"), ("assistant", "A")]);
        let found = content_spans(&template, &conversation, &[false, false, false, true]).unwrap();
        assert_eq!(found.text, "[S|U]A");
        assert_eq!(shown(&found), vec![vec!["S"], vec!["U"], vec![], vec!["A"]]);
    }

    #[test]
    fn whitespace_only_content_with_a_trimming_template() {
        let template = ChatTemplate::new(
            "t",
            "{% for m in messages %}{% if m.content %}<{{ m.content | trim }}>{% endif %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        let found = content_spans(
            &template,
            &messages(&[("user", "x "), ("assistant", " \t "), ("user", "")]),
            &[false, true, false],
        )
        .unwrap();
        assert_eq!(found.text, "<x><>");
        assert_eq!(shown(&found), vec![vec!["x"], vec![""], vec![]]);
    }

    #[test]
    fn emptiness_tests_after_trimming() {
        // gemma-style: a system prompt that trims to nothing is not shown at all.
        let source = "{% set system = messages[0].content | trim %}{% if system %}[{{ system }}]{% endif %}\
                      {% for m in messages[1:] %}<{{ m.content | trim }}>{% endfor %}";
        let template = ChatTemplate::new("t", source, "", "").unwrap();
        let found = content_spans(
            &template,
            &messages(&[("system", " \t "), ("user", " q"), ("assistant", "a ")]),
            &[false, false, true],
        )
        .unwrap();
        assert_eq!(found.text, "<q><a>");
        assert_eq!(shown(&found), vec![vec![], vec!["q"], vec!["a"]]);
    }

    #[test]
    fn emptiness_tests_in_templates() {
        let source = "{% for m in messages %}{% if m.content %}{{ m.role }}: {{ m.content }} {% else %}{{ m.role }}:{% endif %}{% endfor %}";
        let template = ChatTemplate::new("t", source, "", "").unwrap();
        let found = content_spans(
            &template,
            &messages(&[("system", ""), ("user", "q"), ("assistant", "")]),
            &[false, false, true],
        )
        .unwrap();
        assert_eq!(found.text, "system:user: q assistant:");
        assert_eq!(shown(&found), vec![vec![], vec!["q"], vec![]]);
    }

    #[test]
    fn content_rewriting_is_an_error_naming_the_template() {
        let template = ChatTemplate::new(
            "clipped",
            "{% for m in messages %}{{ m.content[1:] }}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        let error = content_spans(&template, &messages(&[("user", "hi")]), &[false]).unwrap_err();
        assert!(error.contains("clipped"), "{error}");
    }

    #[test]
    fn reserved_code_points_in_data_are_an_error() {
        let template = ChatTemplate::new("t", "{% for m in messages %}{{ m.content }}{% endfor %}", "", "").unwrap();
        let error = content_spans(&template, &messages(&[("user", "a\u{F0001}")]), &[false]).unwrap_err();
        assert!(error.contains("private-use"), "{error}");
    }
}
