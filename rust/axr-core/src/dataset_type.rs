//! Dataset types: the row formatter for one `datasets` entry.
//!
//! [`build`] reads the format part of the entry ([`FormatSpec`], Axolotl's key names) and
//! returns the [`RowFormatter`] for its `type`: a conversation type (`crate::chat`) or a text
//! type (`crate::format`).

use crate::spec::{CONVERSATION_TYPES, ConversationType, FormatSpec};
use crate::{Error, Result, RowFormatter, TokenizerInfo};

/// The row formatter for `spec`'s dataset type.
///
/// An unknown type is an [`Error::Config`] on key `type` that lists the known
/// types and suggests the closest one.
pub fn build(spec: &FormatSpec, tokenizer: &TokenizerInfo) -> Result<Box<dyn RowFormatter>> {
    if let Some(conversation) = spec.kind.as_deref().and_then(ConversationType::from_type_name) {
        return Ok(Box::new(crate::chat::build(conversation, spec, tokenizer)?));
    }
    crate::format::build(spec, tokenizer)?.ok_or_else(|| unknown_type(spec.kind.as_deref().unwrap_or_default()))
}

/// Every type name [`build`] accepts as a string (prompt-style suffixes aside).
pub fn known_types() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = crate::format::type_names().collect();
    // Conversation types after `completion` and `input_output`, before the instruction table.
    names.splice(2..2, CONVERSATION_TYPES);
    names
}

/// The error for a `type` no formatter knows.
pub(crate) fn unknown_type(kind: &str) -> Error {
    let known = known_types();
    let base = kind.split(':').next().unwrap_or(kind);
    let suggestion = crate::suggest::hint(base, known.iter().copied());
    Error::Config {
        key: "type".into(),
        message: format!("unknown dataset type '{kind}'{suggestion}; known: {}", known.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_type_suggests_the_closest_name() {
        let spec = FormatSpec {
            kind: Some("alpacca".into()),
            ..FormatSpec::default()
        };
        let error = build(&spec, &TokenizerInfo::for_tests())
            .err()
            .expect("unknown type must fail");
        let message = error.to_string();
        assert!(message.contains("unknown dataset type 'alpacca'"), "{message}");
        assert!(message.contains("did you mean 'alpaca'"), "{message}");
        assert!(message.contains("context_qa.load_v2"), "{message}");
    }

    #[test]
    fn far_away_names_get_no_suggestion() {
        let spec = FormatSpec {
            kind: Some("zzzzzzzzzzzzzzzzzz".into()),
            ..FormatSpec::default()
        };
        let message = build(&spec, &TokenizerInfo::for_tests())
            .err()
            .expect("must fail")
            .to_string();
        assert!(!message.contains("did you mean"), "{message}");
    }
}
