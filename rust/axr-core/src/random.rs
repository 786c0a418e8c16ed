//! The one seeded random-number generator of axr: SplitMix64 (Steele, Lea,
//! Flood 2014), written out here so shuffles never change with the version of
//! a random-number crate. A resumed run must see the same batches and a
//! prepared store the same split after an upgrade; the test below pins the
//! exact outputs, so any change to this file fails it.

/// Stream of the packing `shuffle` strategy's item order.
pub const ITEM_STREAM: u64 = 1;
/// Stream of the epoch plan's bin order.
pub const BIN_STREAM: u64 = 2;
/// Stream of the merged-datasets shuffle of preprocessing.
pub const MERGE_STREAM: u64 = 3;
/// Stream of the order of length-grouped steps in a padded plan.
pub const STEP_STREAM: u64 = 4;

/// A SplitMix64 generator seeded from `(seed, epoch, stream)`.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose outputs are a pure function of `(seed, epoch, stream)`: epochs and streams
    /// of one seed are independent sequences.
    pub fn new(seed: u64, epoch: u64, stream: u64) -> Self {
        let mut mixer = Self { state: seed };
        let seed_part = mixer.next_u64();
        mixer.state ^= epoch.wrapping_mul(0xA076_1D64_78BD_642F);
        let epoch_part = mixer.next_u64();
        mixer.state ^= stream.wrapping_mul(0xE703_7ED1_A0B4_28DB);
        Self {
            state: seed_part ^ epoch_part.rotate_left(17) ^ mixer.next_u64(),
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// Uniform in `0..bound` without modulo bias (Lemire's multiply-and-reject).
    pub fn below(&mut self, bound: u64) -> u64 {
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(bound);
            if (product as u64) >= threshold {
                return (product >> 64) as u64;
            }
        }
    }

    /// Fisher–Yates shuffle of `items` in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for position in (1..items.len()).rev() {
            let other = self.below(position as u64 + 1) as usize;
            items.swap(position, other);
        }
    }
}

/// `items` in a Fisher–Yates order that is a pure function of `(seed, epoch, stream)`.
pub fn shuffled<T>(mut items: Vec<T>, seed: u64, epoch: u64, stream: u64) -> Vec<T> {
    SplitMix64::new(seed, epoch, stream).shuffle(&mut items);
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    // Literal outputs: a change to the generator, the seeding, the bound reduction or the
    // shuffle reorders every resumed run and every prepared split, and must fail here.
    #[test]
    fn outputs_are_pinned() {
        let mut random = SplitMix64::new(42, 3, BIN_STREAM);
        let words: Vec<u64> = (0..3).map(|_| random.next_u64()).collect();
        assert_eq!(words, PINNED_WORDS);
        let mut random = SplitMix64::new(7, 0, ITEM_STREAM);
        let small: Vec<u64> = (0..8).map(|_| random.below(10)).collect();
        assert_eq!(small, PINNED_BELOW);
        assert_eq!(shuffled((0..10_u32).collect(), 0, 0, BIN_STREAM), PINNED_SHUFFLE_BIN);
        assert_eq!(
            shuffled((0..10_u32).collect(), 42, 0, MERGE_STREAM),
            PINNED_SHUFFLE_MERGE
        );
    }

    #[test]
    fn below_is_unbiased_where_modulo_is_not() {
        // bound = 3 * 2^62: modulo maps a quarter of all words onto the lowest third twice.
        let bound = 3 << 62;
        let mut random = SplitMix64::new(1, 0, 0);
        let low = (0..30_000).filter(|_| random.below(bound) < bound / 3).count();
        // Unbiased: a third (10_000, sd ~82). Modulo would give a half (15_000).
        assert!((9_600..10_400).contains(&low), "{low}");
    }

    #[test]
    fn streams_and_epochs_differ() {
        let base = shuffled((0..16_u32).collect(), 5, 0, ITEM_STREAM);
        assert_ne!(base, shuffled((0..16_u32).collect(), 5, 1, ITEM_STREAM));
        assert_ne!(base, shuffled((0..16_u32).collect(), 5, 0, BIN_STREAM));
        let mut sorted = base.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..16).collect::<Vec<u32>>());
    }

    // Computed by an independent Python transcription of the algorithm above.
    const PINNED_WORDS: [u64; 3] = [0x8587_5a10_9d9e_2c81, 0xd143_a8ed_a5f4_74b6, 0x0c70_7b37_2c1b_0bf2];
    const PINNED_BELOW: [u64; 8] = [3, 4, 6, 3, 3, 6, 4, 4];
    const PINNED_SHUFFLE_BIN: [u32; 10] = [4, 1, 7, 5, 8, 2, 9, 0, 6, 3];
    const PINNED_SHUFFLE_MERGE: [u32; 10] = [8, 4, 0, 2, 6, 7, 1, 9, 3, 5];
}
