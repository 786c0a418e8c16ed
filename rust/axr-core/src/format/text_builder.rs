//! Builds a [`RenderedText`] piece by piece, recording which byte ranges are trained.

use std::ops::Range;

use crate::{RenderedText, Sample};

/// Appends masked and trained pieces to one string; adjacent trained pieces
/// merge into one span.
#[derive(Debug, Default)]
pub struct TextBuilder {
    text: String,
    trainable: Vec<Range<usize>>,
}

impl TextBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append `piece`, trained when `trained` is true.
    pub fn push(&mut self, piece: &str, trained: bool) {
        if trained {
            self.push_trained(piece);
        } else {
            self.push_masked(piece);
        }
    }

    /// Append text the loss ignores (prompt, template glue).
    pub fn push_masked(&mut self, piece: &str) {
        self.text.push_str(piece);
    }

    /// Append text the model learns to produce.
    pub fn push_trained(&mut self, piece: &str) {
        if piece.is_empty() {
            return;
        }
        let start = self.text.len();
        self.text.push_str(piece);
        let end = self.text.len();
        match self.trainable.last_mut() {
            Some(last) if last.end == start => last.end = end,
            _ => self.trainable.push(start..end),
        }
    }

    /// Append trained text that `write` appends to the buffer itself (no intermediate string);
    /// returns how many bytes it wrote.
    pub fn push_trained_with(&mut self, write: impl FnOnce(&mut String)) -> usize {
        let start = self.text.len();
        write(&mut self.text);
        let end = self.text.len();
        if end > start {
            match self.trainable.last_mut() {
                Some(last) if last.end == start => last.end = end,
                _ => self.trainable.push(start..end),
            }
        }
        end - start
    }

    /// The text so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The finished rendering. With `train_on_inputs` every byte is trained.
    pub fn finish(self, add_special_tokens: bool, train_on_inputs: bool) -> RenderedText {
        let trainable = if train_on_inputs && !self.text.is_empty() {
            std::iter::once(0..self.text.len()).collect()
        } else {
            self.trainable
        };
        RenderedText {
            text: self.text,
            trainable,
            add_special_tokens,
        }
    }

    /// [`Self::finish`] wrapped in a [`Sample`].
    pub fn finish_sample(self, add_special_tokens: bool, train_on_inputs: bool) -> Sample {
        Sample::Text(self.finish(add_special_tokens, train_on_inputs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_trained_pieces_merge() {
        let mut builder = TextBuilder::new();
        builder.push_masked("Q: ");
        builder.push_trained("A");
        builder.push_trained("</s>");
        builder.push_masked("\n");
        builder.push_trained("");
        builder.push_trained("B");
        let rendered = builder.finish(true, false);
        assert_eq!(rendered.text, "Q: A</s>\nB");
        assert_eq!(rendered.trainable, vec![3..8, 9..10]);
    }

    #[test]
    fn train_on_inputs_covers_everything() {
        let mut builder = TextBuilder::new();
        builder.push_masked("prompt ");
        builder.push_trained("answer");
        let rendered = builder.finish(true, true);
        assert_eq!(rendered.trainable, vec![0..rendered.text.len()]);
    }
}
