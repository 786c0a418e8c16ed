//! Hand-written word scanners, each equivalent to one pre-tokenizer regex of `tokenizers`.
//!
//! The character classes come from the regex engine `tokenizers` itself uses (oniguruma), so
//! `\s`, `\p{L}` and friends agree with it on every code point, whatever Unicode version each
//! library was built with.

use std::sync::OnceLock;

use tokenizers::utils::SysRegex;

/// `\p{L}`.
const LETTER: u8 = 1;
/// `\p{N}`.
const NUMBER: u8 = 2;
/// `\s`.
const SPACE: u8 = 4;
/// `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]`: tekken's "upper" class.
const UPPER: u8 = 8;
/// `[\p{Ll}\p{Lm}\p{Lo}\p{M}]`: tekken's "lower" class.
const LOWER: u8 = 16;

/// GPT-2's pattern, built into the `ByteLevel` pre-tokenizer (`use_regex: true`).
pub const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Mistral tekken's split pattern.
pub const TEKKEN_PATTERN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Llama 3's split pattern (tiktoken's cl100k spelling; digits by threes).
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen 2's split pattern: Llama 3's with one digit at a time.
pub const QWEN2_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Which pattern a scanner follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// [`GPT2_PATTERN`].
    Gpt2,
    /// [`TEKKEN_PATTERN`].
    Tekken,
    /// [`LLAMA3_PATTERN`].
    Llama3,
    /// [`QWEN2_PATTERN`].
    Qwen2,
}

impl Pattern {
    /// The scanner for a split regex, when there is one.
    pub fn recognise(regex: &str) -> Option<Self> {
        match regex {
            GPT2_PATTERN => Some(Self::Gpt2),
            TEKKEN_PATTERN => Some(Self::Tekken),
            LLAMA3_PATTERN => Some(Self::Llama3),
            QWEN2_PATTERN => Some(Self::Qwen2),
            _ => None,
        }
    }
}

/// One flag byte per code point (surrogates stay 0: a `str` never holds them).
fn table() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let all: String = (0..=0x10_FFFFu32).filter_map(char::from_u32).collect();
        let mut flags = vec![0u8; 0x11_0000];
        let classes = [
            (r"\p{L}+", LETTER),
            (r"\p{N}+", NUMBER),
            (r"\s+", SPACE),
            (r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+", UPPER),
            (r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]+", LOWER),
        ];
        for (pattern, flag) in classes {
            let regex = SysRegex::new(pattern).expect("character class pattern compiles");
            for (start, end) in regex.find_iter(&all) {
                for character in all[start..end].chars() {
                    flags[character as usize] |= flag;
                }
            }
        }
        flags
    })
}

/// A text being scanned: the flag table and char decoding at byte positions.
struct Scanner<'a> {
    text: &'a str,
    flags: &'static [u8],
}

impl Scanner<'_> {
    /// The char at byte `at` and its flags, or `None` at the end.
    #[inline]
    fn at(&self, at: usize) -> Option<(char, u8)> {
        let byte = *self.text.as_bytes().get(at)?;
        let character = if byte < 0x80 {
            char::from(byte)
        } else {
            self.text[at..].chars().next()?
        };
        Some((character, self.flags[character as usize]))
    }

    /// End of the run of chars from `at` whose flags satisfy `keep`.
    #[inline]
    fn run(&self, mut at: usize, keep: impl Fn(char, u8) -> bool) -> usize {
        while let Some((character, flags)) = self.at(at) {
            if !keep(character, flags) {
                break;
            }
            at += character.len_utf8();
        }
        at
    }

    /// `\s+(?!\S)|\s+` from `at` (a whitespace char).
    fn spaces(&self, at: usize) -> usize {
        let end = self.run(at, |_, flags| flags & SPACE != 0);
        if end == self.text.len() {
            return end;
        }
        // Followed by a non-space: the run gives up its last char when it has two or more.
        let last = self.text[..end].chars().next_back().map_or(0, char::len_utf8);
        if end - last > at { end - last } else { end }
    }
}

fn other(flags: u8) -> bool {
    flags & (LETTER | NUMBER | SPACE) == 0
}

/// The end of the word of `pattern` starting at byte `at` of `text` (`at < text.len()`).
pub fn next_word(pattern: Pattern, text: &str, at: usize) -> usize {
    let scanner = Scanner { text, flags: table() };
    match pattern {
        Pattern::Gpt2 => gpt2(&scanner, at),
        Pattern::Tekken => tekken(&scanner, at),
        Pattern::Llama3 => llama3(&scanner, at, 3),
        Pattern::Qwen2 => llama3(&scanner, at, 1),
    }
}

fn gpt2(scanner: &Scanner<'_>, at: usize) -> usize {
    let bytes = scanner.text.as_bytes();
    let Some((first, flags)) = scanner.at(at) else {
        return at;
    };
    if first == '\'' {
        match (bytes.get(at + 1), bytes.get(at + 2)) {
            (Some(b's' | b't' | b'm' | b'd'), _) => return at + 2,
            (Some(b'r' | b'v'), Some(b'e')) | (Some(b'l'), Some(b'l')) => return at + 3,
            _ => {}
        }
    }
    let after_space = if first == ' ' { scanner.at(at + 1) } else { None };
    for class in [LETTER, NUMBER] {
        if let Some((_, next)) = after_space
            && next & class != 0
        {
            return scanner.run(at + 1, |_, flags| flags & class != 0);
        }
        if flags & class != 0 {
            return scanner.run(at, |_, flags| flags & class != 0);
        }
    }
    if let Some((_, next)) = after_space
        && other(next)
    {
        return scanner.run(at + 1, |_, flags| other(flags));
    }
    if other(flags) {
        return scanner.run(at, |_, flags| other(flags));
    }
    scanner.spaces(at)
}

/// `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+` from `at`, with the backtracking
/// of the regex: the upper run gives back chars until a lower one can follow.
fn upper_then_lower(scanner: &Scanner<'_>, at: usize) -> Option<usize> {
    let upper_end = scanner.run(at, |_, flags| flags & UPPER != 0);
    if let Some((_, flags)) = scanner.at(upper_end)
        && flags & LOWER != 0
    {
        return Some(scanner.run(upper_end, |_, flags| flags & LOWER != 0));
    }
    scanner.text[at..upper_end]
        .char_indices()
        .rev()
        .find(|(_, character)| scanner.flags[*character as usize] & LOWER != 0)
        .map(|(offset, character)| at + offset + character.len_utf8())
}

/// `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*` from `at`.
fn upper_run_then_lower(scanner: &Scanner<'_>, at: usize) -> Option<usize> {
    let upper_end = scanner.run(at, |_, flags| flags & UPPER != 0);
    (upper_end > at).then(|| scanner.run(upper_end, |_, flags| flags & LOWER != 0))
}

fn tekken(scanner: &Scanner<'_>, at: usize) -> usize {
    let Some((first, flags)) = scanner.at(at) else {
        return at;
    };
    let next = at + first.len_utf8();
    let prefix = first != '\r' && first != '\n' && flags & (LETTER | NUMBER) == 0;
    for letters in [upper_then_lower, upper_run_then_lower] {
        if prefix && let Some(end) = letters(scanner, next) {
            return end;
        }
        if let Some(end) = letters(scanner, at) {
            return end;
        }
    }
    if flags & NUMBER != 0 {
        return next;
    }
    symbols_then(scanner, at, |character| matches!(character, '\r' | '\n' | '/'))
        .unwrap_or_else(|| line_breaks_or_spaces(scanner, at))
}

/// The end of `(?i:'s|'t|'re|'ve|'m|'ll|'d)` when it matches at `at` (a `'`). Case-insensitive
/// as oniguruma folds: besides ASCII case, only "ſ" (U+017F) folds to one of these letters.
fn contraction(scanner: &Scanner<'_>, at: usize) -> Option<usize> {
    let folded = |character: char| {
        if character == 'ſ' {
            's'
        } else {
            character.to_ascii_lowercase()
        }
    };
    let mut chars = scanner.text[at + 1..].chars();
    let first = chars.next()?;
    let after_first = at + 1 + first.len_utf8();
    let wanted = match folded(first) {
        's' | 't' | 'm' | 'd' => return Some(after_first),
        'r' | 'v' => 'e',
        'l' => 'l',
        _ => return None,
    };
    let second = chars.next()?;
    (folded(second) == wanted).then(|| after_first + second.len_utf8())
}

/// Llama 3's pattern, with `\p{N}{1,digits}` for its numbers (Qwen 2's has one digit).
fn llama3(scanner: &Scanner<'_>, at: usize, digits: usize) -> usize {
    let Some((first, flags)) = scanner.at(at) else {
        return at;
    };
    let next = at + first.len_utf8();
    if first == '\''
        && let Some(end) = contraction(scanner, at)
    {
        return end;
    }
    let letter = |_: char, flags: u8| flags & LETTER != 0;
    let prefix = first != '\r' && first != '\n' && flags & (LETTER | NUMBER) == 0;
    if prefix && scanner.at(next).is_some_and(|(_, flags)| flags & LETTER != 0) {
        return scanner.run(next, letter);
    }
    if flags & LETTER != 0 {
        return scanner.run(at, letter);
    }
    if flags & NUMBER != 0 {
        let mut end = next;
        for _ in 1..digits {
            match scanner.at(end) {
                Some((character, flags)) if flags & NUMBER != 0 => end += character.len_utf8(),
                _ => break,
            }
        }
        return end;
    }
    symbols_then(scanner, at, |character| matches!(character, '\r' | '\n'))
        .unwrap_or_else(|| line_breaks_or_spaces(scanner, at))
}

/// ` ?[^\s\p{L}\p{N}]+` followed by a run of the chars `trailing` takes, from `at`, when it matches.
fn symbols_then(scanner: &Scanner<'_>, at: usize, trailing: impl Fn(char) -> bool) -> Option<usize> {
    let (first, flags) = scanner.at(at)?;
    let next = at + first.len_utf8();
    let from = if first == ' ' && scanner.at(next).is_some_and(|(_, flags)| other(flags)) {
        next
    } else if other(flags) {
        at
    } else {
        return None;
    };
    let end = scanner.run(from, |_, flags| other(flags));
    Some(scanner.run(end, |character, _| trailing(character)))
}

/// `\s*[\r\n]+|\s+(?!\S)|\s+` from `at` (a whitespace char).
fn line_breaks_or_spaces(scanner: &Scanner<'_>, at: usize) -> usize {
    // `\s*[\r\n]+` ends after the run's last line break, when it has one.
    let end = scanner.run(at, |_, flags| flags & SPACE != 0);
    if let Some(position) = scanner.text[at..end].rfind(['\r', '\n']) {
        return at + position + 1;
    }
    scanner.spaces(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pattern: Pattern, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < text.len() {
            let end = next_word(pattern, text, at);
            out.push(text[at..end].to_string());
            at = end;
        }
        out
    }

    fn reference(pattern: &str, text: &str) -> Vec<String> {
        let regex = SysRegex::new(pattern).unwrap();
        regex
            .find_iter(text)
            .map(|(start, end)| text[start..end].to_string())
            .collect()
    }

    #[test]
    fn scanners_split_like_the_regex_on_awkward_text() {
        let texts = [
            "Hello world, it's 2024!  Don't\t\tstop\n\n  x  ",
            "ÉCOLE école ǅungla ʰmod 中文字 ﾃｽﾄ é́ a\u{301}\u{302}b 1234567 ١٢٣ Ⅻ",
            " \r\n\r\n  \u{2028}\u{a0}x\u{3000}y /// a/b\n//\r\n 😀😀 !?! 'S 'll 're",
            "\u{0}\u{1}\u{7f}\u{85}x  \u{200b}\u{feff}CamelCaseWORDS lowerUPPER",
            "'S x'T x'RE x'Ve x'M x'LL x'D x'ſ x'ſx x'Sx x'REx x'llama x'ﬆ x'K x'x x'r x'l 12345678 1\u{661}٢3 ''s '\n '",
            "\t\tx \r\n\tx -\n\n-- !\r\r\n  \n y",
        ];
        for text in texts {
            assert_eq!(words(Pattern::Gpt2, text), reference(GPT2_PATTERN, text), "{text:?}");
            assert_eq!(
                words(Pattern::Tekken, text),
                reference(TEKKEN_PATTERN, text),
                "{text:?}"
            );
            assert_eq!(
                words(Pattern::Llama3, text),
                reference(LLAMA3_PATTERN, text),
                "{text:?}"
            );
            assert_eq!(words(Pattern::Qwen2, text), reference(QWEN2_PATTERN, text), "{text:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn scanners_split_like_the_regex(text in "(\\PC|[ \t\r\n\u{2028}\u{301}'/ſ]|'s|'ll|'[SsTtRrEeVvMmLlDd]{1,2}|[0-9]{1,5}|[A-Z]+[a-z]+){0,24}") {
            proptest::prop_assert_eq!(words(Pattern::Gpt2, &text), reference(GPT2_PATTERN, &text));
            proptest::prop_assert_eq!(words(Pattern::Tekken, &text), reference(TEKKEN_PATTERN, &text));
            proptest::prop_assert_eq!(words(Pattern::Llama3, &text), reference(LLAMA3_PATTERN, &text));
            proptest::prop_assert_eq!(words(Pattern::Qwen2, &text), reference(QWEN2_PATTERN, &text));
        }
    }
}
