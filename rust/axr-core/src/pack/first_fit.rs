//! First-fit placement with a max-tree over bins: O(log B) per item, no scan of open bins.

/// Max segment tree over bins; a leaf holds `free + 1` for an open bin and 0
/// for a bin closed by the item limit, so "fits" is `leaf > length` and a
/// closed bin never matches. Leaves past the opened bins hold `capacity + 1`:
/// an unopened bin looks exactly like an empty one, so the leftmost fitting
/// leaf is either an open bin or the next new bin.
struct BinTree {
    leaves: usize,
    nodes: Vec<u32>,
}

impl BinTree {
    fn new(leaves: usize, capacity: u32) -> Self {
        let mut tree = Self {
            leaves,
            nodes: vec![capacity + 1; 2 * leaves],
        };
        tree.nodes[0] = 0;
        tree
    }

    /// Leftmost bin whose free space is at least `length`.
    fn leftmost_fitting(&self, length: u32) -> Option<usize> {
        if self.nodes[1] <= length {
            return None;
        }
        let mut node = 1;
        while node < self.leaves {
            node = if self.nodes[2 * node] > length {
                2 * node
            } else {
                2 * node + 1
            };
        }
        Some(node - self.leaves)
    }

    fn set(&mut self, bin: usize, value: u32) {
        let mut node = bin + self.leaves;
        self.nodes[node] = value;
        while node > 1 {
            node /= 2;
            let larger = self.nodes[2 * node].max(self.nodes[2 * node + 1]);
            if self.nodes[node] == larger {
                break;
            }
            self.nodes[node] = larger;
        }
    }

    /// Doubles the number of leaves, keeping the values of the existing ones.
    fn grow(&mut self, capacity: u32) {
        let mut grown = BinTree::new(self.leaves * 2, capacity);
        grown.nodes[grown.leaves..grown.leaves + self.leaves].copy_from_slice(&self.nodes[self.leaves..]);
        for node in (1..grown.leaves).rev() {
            grown.nodes[node] = grown.nodes[2 * node].max(grown.nodes[2 * node + 1]);
        }
        *self = grown;
    }
}

/// Places items in `placement_order` into the lowest-numbered bin with room; returns each placed item's bin.
pub(crate) fn place(lengths: &[u32], placement_order: &[u32], capacity: u32, item_limit: u32) -> Vec<u32> {
    let total: u64 = placement_order
        .iter()
        .map(|&item| u64::from(lengths[item as usize]))
        .sum();
    // Start near the lower bound and double when full: the tree stays small
    // (cache-friendly) and growing costs O(B) amortised.
    let estimate = usize::try_from(total.div_ceil(u64::from(capacity))).unwrap_or(usize::MAX / 4);
    let mut tree = BinTree::new(
        estimate.saturating_add(estimate / 8).max(64).next_power_of_two(),
        capacity,
    );
    let mut free = Vec::new();
    let mut items_in_bin: Vec<u32> = Vec::new();
    let mut bin_of_placed = Vec::with_capacity(placement_order.len());
    for &item in placement_order {
        let length = lengths[item as usize];
        let bin = loop {
            if let Some(bin) = tree.leftmost_fitting(length) {
                break bin;
            }
            tree.grow(capacity);
        };
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
