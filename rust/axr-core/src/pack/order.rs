//! The order in which items are placed: longest first (here), or a seeded
//! shuffle (`crate::random::shuffled`).

/// Indices sorted by length descending, ties by index ascending (stable).
///
/// Lengths are bounded by the capacity, so a counting sort over length values
/// costs O(n + capacity) instead of O(n log n) comparisons; a huge capacity
/// with few items falls back to a comparison sort.
pub(crate) fn longest_first(lengths: &[u32], mut candidates: Vec<u32>, capacity: u32) -> Vec<u32> {
    let values = capacity as usize + 1;
    if values > 4 * candidates.len() + (1 << 16) {
        candidates.sort_unstable_by_key(|&index| (std::cmp::Reverse(lengths[index as usize]), index));
        return candidates;
    }
    // Slot for length l starts after all longer items: count, then suffix sums.
    let mut starts = vec![0_u32; values + 1];
    for &index in &candidates {
        starts[(capacity - lengths[index as usize]) as usize + 1] += 1;
    }
    for value in 0..values {
        starts[value + 1] += starts[value];
    }
    let mut sorted = vec![0_u32; candidates.len()];
    for &index in &candidates {
        let slot = &mut starts[(capacity - lengths[index as usize]) as usize];
        sorted[*slot as usize] = index;
        *slot += 1;
    }
    sorted
}
