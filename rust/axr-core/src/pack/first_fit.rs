//! First-fit placement: the lowest-numbered bin with room, found without scanning open bins.
//!
//! A max-tree over bins with 16 children per node: a node's 16 values fill one
//! cache line, so finding the leftmost bin that fits walks about log₁₆(bins)
//! lines (5 for a million bins) where a binary tree would take 20 dependent
//! loads, most of them cache misses.

const FANOUT: usize = 16;

/// Leaf values: `free + 1` for an open bin, 0 for a bin closed by the item
/// limit, and `capacity + 1` for a bin not opened yet. "Fits" is `value >
/// length`, so a closed bin never matches and an unopened bin looks like an
/// empty one: the leftmost fitting leaf is an open bin or the next new bin.
struct BinTree {
    /// `levels[0]` are the bins; each level above holds the maximum of 16 below.
    levels: Vec<Vec<u32>>,
}

impl BinTree {
    fn new(bins: usize, capacity: u32) -> Self {
        let mut levels = Vec::new();
        let mut width = bins.max(1).div_ceil(FANOUT) * FANOUT;
        loop {
            levels.push(vec![capacity + 1; width]);
            if width == FANOUT {
                break;
            }
            width = (width / FANOUT).div_ceil(FANOUT) * FANOUT;
        }
        Self { levels }
    }

    fn leftmost_fitting(&self, length: u32) -> usize {
        let mut node = 0;
        for level in self.levels.iter().rev() {
            let children = &level[node * FANOUT..(node + 1) * FANOUT];
            let Some(offset) = children.iter().position(|&value| value > length) else {
                unreachable!("there are as many leaves as items, so an unopened bin always fits")
            };
            node = node * FANOUT + offset;
        }
        node
    }

    fn set(&mut self, bin: usize, value: u32) {
        let mut index = bin;
        let mut value = value;
        for depth in 0..self.levels.len() {
            self.levels[depth][index] = value;
            if depth + 1 == self.levels.len() {
                break;
            }
            let group = index / FANOUT;
            let siblings = &self.levels[depth][group * FANOUT..(group + 1) * FANOUT];
            let largest = siblings.iter().copied().max().unwrap_or(0);
            if self.levels[depth + 1][group] == largest {
                break;
            }
            index = group;
            value = largest;
        }
    }
}

/// Places items in `placement_order` into the lowest-numbered bin with room; returns each placed item's bin.
pub(crate) fn place(lengths: &[u32], placement_order: &[u32], capacity: u32, item_limit: u32) -> Vec<u32> {
    // One leaf per item: never more bins than items, and only the opened
    // prefix (and the path above it) is ever touched.
    let mut tree = BinTree::new(placement_order.len(), capacity);
    let mut free: Vec<u32> = Vec::new();
    let mut items_in_bin: Vec<u32> = Vec::new();
    let mut bin_of_placed = Vec::with_capacity(placement_order.len());
    for &item in placement_order {
        let length = lengths[item as usize];
        let bin = tree.leftmost_fitting(length);
        if bin == free.len() {
            free.push(capacity);
            items_in_bin.push(0);
        }
        free[bin] -= length;
        items_in_bin[bin] += 1;
        let leaf = if items_in_bin[bin] >= item_limit {
            0
        } else {
            free[bin] + 1
        };
        tree.set(bin, leaf);
        bin_of_placed.push(bin as u32);
    }
    bin_of_placed
}
