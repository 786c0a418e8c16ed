//! "Did you mean ...?": the one helper that picks the known name a misspelt
//! one was meant to be, for config keys (through the bindings) and for dataset
//! types and styles (here).

/// The candidate a misspelt `key` was meant to be, if one is a typo away.
///
/// Only spelling slips count (a few edited letters, or the same words in another order): a key
/// that merely shares words with another (`batch_size` / `eval_batch_size`) means something else,
/// so it is not suggested. Ties go to the more similar spelling (difflib's ratio), then to the
/// earlier candidate.
pub fn closest<'a>(key: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let length = key.chars().count();
    let allowed = match length {
        0..=4 => 1,
        5..=12 => 2,
        _ => 3,
    };
    let words = sorted_words(key);
    let mut best: Option<(usize, f64, &str)> = None;
    for candidate in candidates {
        let distance = if sorted_words(candidate) == words {
            0
        } else {
            edit_distance(key, candidate)
        };
        if distance > allowed {
            continue;
        }
        let ratio = similarity(key, candidate);
        let better = best.is_none_or(|(best_distance, best_ratio, _)| {
            distance < best_distance || (distance == best_distance && ratio > best_ratio)
        });
        if better {
            best = Some((distance, ratio, candidate));
        }
    }
    best.map(|(_, _, candidate)| candidate)
}

/// ` (did you mean 'name'?)` for the closest candidate, or an empty string.
pub fn hint<'a>(key: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(key, candidates)
        .map(|name| format!(" (did you mean '{name}'?)"))
        .unwrap_or_default()
}

fn sorted_words(key: &str) -> Vec<&str> {
    let mut words: Vec<&str> = key.split('_').collect();
    words.sort_unstable();
    words
}

/// Levenshtein distance over chars, with a swap of two neighbours counting as one edit
/// (optimal string alignment).
pub fn edit_distance(first: &str, second: &str) -> usize {
    let first: Vec<char> = first.chars().collect();
    let second: Vec<char> = second.chars().collect();
    let mut before_previous: Vec<usize> = Vec::new();
    let mut previous: Vec<usize> = (0..=second.len()).collect();
    for (i, &a) in first.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, &b) in second.iter().enumerate() {
            let mut cost = (previous[j + 1] + 1)
                .min(current[j] + 1)
                .min(previous[j] + usize::from(a != b));
            if i > 0 && j > 0 && a == second[j - 1] && first[i - 1] == b {
                cost = cost.min(before_previous[j - 1] + 1);
            }
            current.push(cost);
        }
        before_previous = std::mem::replace(&mut previous, current);
    }
    previous[second.len()]
}

/// `2 * matches / total length`, where matches are found as Python's
/// `difflib.SequenceMatcher(None, a, b).ratio()` finds them (longest block first, then both sides).
fn similarity(first: &str, second: &str) -> f64 {
    let a: Vec<char> = first.chars().collect();
    let b: Vec<char> = second.chars().collect();
    let total = a.len() + b.len();
    if total == 0 {
        return 1.0;
    }
    let mut matched = 0;
    let mut queue = vec![(0, a.len(), 0, b.len())];
    while let Some((a_low, a_high, b_low, b_high)) = queue.pop() {
        let (i, j, size) = longest_match(&a, &b, (a_low, a_high), (b_low, b_high));
        if size > 0 {
            matched += size;
            queue.push((a_low, i, b_low, j));
            queue.push((i + size, a_high, j + size, b_high));
        }
    }
    2.0 * matched as f64 / total as f64
}

/// The longest common block of `a[a_range]` and `b[b_range]`, the earliest in `a` (then in `b`)
/// among equals, as difflib's `find_longest_match` without junk.
fn longest_match(
    a: &[char],
    b: &[char],
    (a_low, a_high): (usize, usize),
    (b_low, b_high): (usize, usize),
) -> (usize, usize, usize) {
    let mut best = (a_low, b_low, 0);
    // run[j + 1]: length of the common block ending at a[i - 1], b[j].
    let mut run = vec![0_usize; b.len() + 1];
    for (i, &left) in a.iter().enumerate().take(a_high).skip(a_low) {
        let mut next = vec![0_usize; b.len() + 1];
        for (j, &right) in b.iter().enumerate().take(b_high).skip(b_low) {
            if left == right {
                let size = run[j] + 1;
                next[j + 1] = size;
                if size > best.2 {
                    best = (i + 1 - size, j + 1 - size, size);
                }
            }
        }
        run = next;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_are_suggested_and_other_names_are_not() {
        let known = ["lora_r", "lora_alpha", "batch_size", "eval_batch_size", "alpaca"];
        assert_eq!(closest("lora_rr", known), Some("lora_r"));
        assert_eq!(closest("alpha_lora", known), Some("lora_alpha"));
        assert_eq!(closest("alpacca", known), Some("alpaca"));
        assert_eq!(closest("batch_szie", known), Some("batch_size"));
        assert_eq!(closest("zzzzzzzzzzzz", known), None);
        assert_eq!(hint("batch_sizes", ["eval_batch_size"]), "");
    }

    #[test]
    fn swaps_count_as_one_edit() {
        assert_eq!(edit_distance("sharegtp", "sharegpt"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn similarity_matches_difflib() {
        // Values of difflib.SequenceMatcher(None, a, b).ratio().
        assert!((similarity("abcd", "bcde") - 0.75).abs() < 1e-12);
        assert!((similarity("lora_rr", "lora_r") - 12.0 / 13.0).abs() < 1e-12);
        assert!((similarity("qabxcd", "abycdf") - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn ties_go_to_the_more_similar_spelling() {
        // Both one edit from "lrx"; difflib rates "lx" 0.8 and "lr_" 0.67.
        assert_eq!(closest("lrx", ["lr_", "lx"]), Some("lx"));
    }
}
