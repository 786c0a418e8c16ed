//! Best-fit placement: an index over free-space *values* `0..=capacity`.
//!
//! The tightest bin that fits an item of length `l` is the smallest free
//! value `v ≥ l` that some bin has: a successor query on a bitset of the
//! values present, answered in O(log₆₄ capacity) word operations. Bins with
//! the same free space wait in a min-heap, so ties go to the lowest bin number.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A set of integers in `0..size` with a successor query: one bit per value,
/// plus a summary level per 64 words so a query skips empty ranges.
struct ValueSet {
    levels: Vec<Vec<u64>>,
}

impl ValueSet {
    fn new(size: usize) -> Self {
        let mut levels = Vec::new();
        let mut words = size.div_ceil(64).max(1);
        loop {
            levels.push(vec![0_u64; words]);
            if words == 1 {
                break;
            }
            words = words.div_ceil(64);
        }
        Self { levels }
    }

    fn insert(&mut self, value: usize) {
        let mut position = value;
        for level in &mut self.levels {
            let word = &mut level[position / 64];
            let was_empty = *word == 0;
            *word |= 1 << (position % 64);
            if !was_empty {
                return;
            }
            position /= 64;
        }
    }

    fn remove(&mut self, value: usize) {
        let mut position = value;
        for level in &mut self.levels {
            let word = &mut level[position / 64];
            *word &= !(1 << (position % 64));
            if *word != 0 {
                return;
            }
            position /= 64;
        }
    }

    /// Smallest member `≥ value`.
    fn successor(&self, value: usize) -> Option<usize> {
        let mut level = 0;
        let mut position = value;
        loop {
            let words = self.levels.get(level)?;
            let word_index = position / 64;
            let word = *words.get(word_index)? & (u64::MAX << (position % 64));
            if word != 0 {
                position = word_index * 64 + word.trailing_zeros() as usize;
                break;
            }
            level += 1;
            position = word_index + 1;
        }
        while level > 0 {
            level -= 1;
            position = position * 64 + self.levels[level][position].trailing_zeros() as usize;
        }
        Some(position)
    }
}

/// Places items in `placement_order` into the bin with the least free space that fits; returns each placed item's bin.
pub(crate) fn place(lengths: &[u32], placement_order: &[u32], capacity: u32, item_limit: u32) -> Vec<u32> {
    let values = capacity as usize + 1;
    let mut present = ValueSet::new(values);
    let mut bins_with_free: Vec<BinaryHeap<Reverse<u32>>> = (0..values).map(|_| BinaryHeap::new()).collect();
    let mut items_in_bin: Vec<u32> = Vec::new();
    let mut bin_of_placed = Vec::with_capacity(placement_order.len());
    for &item in placement_order {
        let length = lengths[item as usize];
        let (bin, free_before) = if let Some(free) = present.successor(length as usize) {
            let bucket = &mut bins_with_free[free];
            let Some(Reverse(bin)) = bucket.pop() else {
                unreachable!("a value is present only while bins have it")
            };
            if bucket.is_empty() {
                present.remove(free);
            }
            (bin, free as u32)
        } else {
            items_in_bin.push(0);
            ((items_in_bin.len() - 1) as u32, capacity)
        };
        items_in_bin[bin as usize] += 1;
        if items_in_bin[bin as usize] < item_limit {
            let free_after = (free_before - length) as usize;
            bins_with_free[free_after].push(Reverse(bin));
            present.insert(free_after);
        }
        bin_of_placed.push(bin);
    }
    bin_of_placed
}
