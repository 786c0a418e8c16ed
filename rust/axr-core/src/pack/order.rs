//! The order in which items are placed: longest first, or a seeded shuffle.

/// Stream id of the item shuffle (`shuffle` strategy).
pub(crate) const ITEM_STREAM: u64 = 1;
/// Stream id of the bin shuffle (epoch plan).
pub(crate) const BIN_STREAM: u64 = 2;

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

/// A Fisher–Yates permutation of `items`, a pure function of (seed, epoch, stream).
pub(crate) fn shuffled(mut items: Vec<u32>, seed: u64, epoch: u64, stream: u64) -> Vec<u32> {
    let mut random = SplitMix64::new(seed, epoch, stream);
    for position in (1..items.len()).rev() {
        let other = random.below(position as u64 + 1) as usize;
        items.swap(position, other);
    }
    items
}

/// SplitMix64 (Steele, Lea, Flood 2014), written out here so a plan never
/// changes with the version of a random-number crate: a run resumed after an
/// upgrade must see the same batches.
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64, epoch: u64, stream: u64) -> Self {
        let mut mixer = Self { state: seed };
        let seed_part = mixer.next_u64();
        mixer.state ^= epoch.wrapping_mul(0xA076_1D64_78BD_642F);
        let epoch_part = mixer.next_u64();
        mixer.state ^= stream.wrapping_mul(0xE703_7ED1_A0B4_28DB);
        Self {
            state: seed_part ^ epoch_part.rotate_left(17) ^ mixer.next_u64(),
        }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// Uniform in `0..bound` without modulo bias (Lemire's multiply-and-reject).
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(bound);
            if (product as u64) >= threshold {
                return (product >> 64) as u64;
            }
        }
    }
}
