//! Bin packing of samples into fixed-capacity rows ("multipack").
//!
//! Samples are never split: each bin holds whole samples whose lengths sum to
//! at most `capacity` tokens. Four strategies:
//!
//! | strategy     | order of placement                  | placement              | cost        |
//! |--------------|-------------------------------------|------------------------|-------------|
//! | `ffd`        | longest first (ties: lower index)    | leftmost bin that fits | O(n log B)  |
//! | `bfd`        | longest first (ties: lower index)    | fullest bin that fits  | O(n log C)  |
//! | `shuffle`    | random permutation of (seed, epoch) | leftmost bin that fits | O(n log B)  |
//! | `sequential` | dataset order                       | the last bin, or a new | O(n)        |
//!
//! The whole dataset is packed at once, never in windows (windows cost tail
//! bins). The result is a pure function of the inputs.
//!
//! ```text
//! lengths  [5, 3, 7, 2, 4]   capacity 8, bfd
//! order    7(2) 5(0) 4(4) 3(1) 2(3)
//! bins     [2]  [0, 1]  [4, 3]      → 3 bins, 21 tokens / 24 = 0.875 efficiency
//! ```
//! (Item 2 fills bin 0 to 7; item 0 opens bin 1; item 4 opens bin 2; item 1
//! goes to the fullest bin it fits, bin 1; item 3 to bin 2.)

mod best_fit;
mod first_fit;
mod order;
pub mod plan;

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

pub use plan::{EpochPlan, Imbalance, PlanOptions, RowOrder, RowPlanOptions, plan_epoch, plan_rows};

/// Largest supported bin capacity in tokens (best-fit keeps an index over every free-space value).
pub const MAX_CAPACITY: u32 = 1 << 24;

/// How items are ordered and placed into bins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// First-fit-decreasing: longest first, into the lowest-numbered bin with room.
    FirstFitDecreasing,
    /// Best-fit-decreasing: longest first, into the bin with the least room that still fits.
    BestFitDecreasing,
    /// Shuffle by (seed, epoch), then first-fit: bin contents change every epoch.
    Shuffle,
    /// Next-fit in dataset order: keeps the stream order, opens a bin when the item does not fit.
    Sequential,
}

impl Strategy {
    /// Every strategy, in the order the docs list them.
    pub const ALL: [Strategy; 4] = [
        Strategy::FirstFitDecreasing,
        Strategy::BestFitDecreasing,
        Strategy::Shuffle,
        Strategy::Sequential,
    ];

    /// The short name used in configs and the Python API.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::FirstFitDecreasing => "ffd",
            Strategy::BestFitDecreasing => "bfd",
            Strategy::Shuffle => "shuffle",
            Strategy::Sequential => "sequential",
        }
    }

    /// Whether the packing depends on the epoch (only `shuffle` re-packs).
    pub fn depends_on_epoch(self) -> bool {
        self == Strategy::Shuffle
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        Strategy::ALL
            .into_iter()
            .find(|strategy| strategy.name() == name)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown packing strategy {name:?}; expected one of \"ffd\", \"bfd\", \"shuffle\", \"sequential\""
                ))
            })
    }
}

/// What to pack and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackOptions {
    /// Tokens per bin (the packed row length).
    pub capacity: u32,
    /// Ordering and placement rule.
    pub strategy: Strategy,
    /// At most this many items per bin (`None`: no limit).
    pub max_items_per_bin: Option<u32>,
    /// Drop (and count) items longer than `capacity` instead of failing.
    pub drop_oversized: bool,
    /// Seed of the `shuffle` strategy's permutation.
    pub seed: u64,
    /// Epoch mixed into the `shuffle` permutation, so each epoch packs differently.
    pub epoch: u64,
}

impl PackOptions {
    /// Options with the given capacity and strategy, no item limit, failing on oversized items.
    pub fn new(capacity: u32, strategy: Strategy) -> Self {
        Self {
            capacity,
            strategy,
            max_items_per_bin: None,
            drop_oversized: false,
            seed: 0,
            epoch: 0,
        }
    }

    fn validate(&self, item_count: usize) -> Result<()> {
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return Err(Error::Invalid(format!(
                "packing capacity must be between 1 and {MAX_CAPACITY} tokens, got {}",
                self.capacity
            )));
        }
        if self.max_items_per_bin == Some(0) {
            return Err(Error::Invalid(
                "max_items_per_bin must be at least 1 (or unset for no limit)".into(),
            ));
        }
        if u32::try_from(item_count).is_err() {
            return Err(Error::Invalid(format!(
                "cannot pack {item_count} items: at most {} are supported",
                u32::MAX
            )));
        }
        Ok(())
    }
}

/// Bins of item indices, stored flat: bin `b` holds `items[bin_offsets[b]..bin_offsets[b + 1]]`.
///
/// ```text
/// bin_offsets  [0,    1,       3,       5]
/// items        [2 |   0, 1 |   4, 3]
///               bin0  bin1     bin2
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packing {
    capacity: u32,
    bin_offsets: Vec<u64>,
    items: Vec<u32>,
    bin_tokens: Vec<u32>,
    dropped: Vec<u32>,
    total_tokens: u64,
}

impl Packing {
    /// Tokens per bin this packing was made for.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Number of bins.
    pub fn num_bins(&self) -> usize {
        self.bin_tokens.len()
    }

    /// Item indices of bin `bin`, in placement order.
    pub fn bin(&self, bin: usize) -> &[u32] {
        &self.items[self.bin_offsets[bin] as usize..self.bin_offsets[bin + 1] as usize]
    }

    /// Every bin in order.
    pub fn bins(&self) -> impl ExactSizeIterator<Item = &[u32]> + '_ {
        (0..self.num_bins()).map(|bin| self.bin(bin))
    }

    /// `num_bins + 1` offsets into [`Packing::items`].
    pub fn bin_offsets(&self) -> &[u64] {
        &self.bin_offsets
    }

    /// Item indices of all bins, concatenated.
    pub fn items(&self) -> &[u32] {
        &self.items
    }

    /// Tokens in each bin.
    pub fn bin_tokens(&self) -> &[u32] {
        &self.bin_tokens
    }

    /// Indices of items dropped because they were longer than the capacity (ascending).
    pub fn dropped(&self) -> &[u32] {
        &self.dropped
    }

    /// Tokens of all packed items (dropped items excluded).
    pub fn total_tokens(&self) -> u64 {
        self.total_tokens
    }

    /// Fewest bins any packing could use: `ceil(total_tokens / capacity)`.
    pub fn lower_bound(&self) -> u64 {
        self.total_tokens.div_ceil(u64::from(self.capacity))
    }

    /// Real tokens over bin space: `total_tokens / (num_bins × capacity)`; 1.0 for no bins.
    pub fn efficiency(&self) -> f64 {
        if self.num_bins() == 0 {
            return 1.0;
        }
        self.total_tokens as f64 / (self.num_bins() as f64 * f64::from(self.capacity))
    }

    /// One item per bin, in item order: the rows of a padded (unpacked) batch. The capacity is the
    /// longest item (at least 1), so [`Packing::efficiency`] is the share of real tokens in rows
    /// padded to the longest.
    pub fn one_per_bin(lengths: &[u32]) -> Result<Self> {
        let count = u32::try_from(lengths.len()).map_err(|_| {
            Error::Invalid(format!(
                "cannot plan {} items: at most {} are supported",
                lengths.len(),
                u32::MAX
            ))
        })?;
        Ok(Self {
            capacity: lengths.iter().copied().max().unwrap_or(0).max(1),
            bin_offsets: (0..=u64::from(count)).collect(),
            items: (0..count).collect(),
            bin_tokens: lengths.to_vec(),
            dropped: Vec::new(),
            total_tokens: lengths.iter().map(|&length| u64::from(length)).sum(),
        })
    }

    /// The flat arrays `(bin_offsets, items, bin_tokens, dropped)`, moved out without copying.
    pub fn into_parts(self) -> (Vec<u64>, Vec<u32>, Vec<u32>, Vec<u32>) {
        (self.bin_offsets, self.items, self.bin_tokens, self.dropped)
    }
}

/// Packs items of the given lengths into bins of `options.capacity` tokens.
///
/// Items longer than the capacity are an [`Error::Invalid`] naming how many
/// there are and the longest, unless `options.drop_oversized` is set: then
/// they are left out and listed in [`Packing::dropped`].
pub fn pack(lengths: &[u32], options: &PackOptions) -> Result<Packing> {
    options.validate(lengths.len())?;
    let capacity = options.capacity;
    let (candidates, dropped) = split_oversized(lengths, capacity, options.drop_oversized)?;
    let placement_order = match options.strategy {
        Strategy::FirstFitDecreasing | Strategy::BestFitDecreasing => {
            order::longest_first(lengths, candidates, capacity)
        }
        Strategy::Shuffle => {
            crate::random::shuffled(candidates, options.seed, options.epoch, crate::random::ITEM_STREAM)
        }
        Strategy::Sequential => candidates,
    };
    let item_limit = options.max_items_per_bin.unwrap_or(u32::MAX);
    let bin_of_placed = match options.strategy {
        Strategy::FirstFitDecreasing | Strategy::Shuffle => {
            first_fit::place(lengths, &placement_order, capacity, item_limit)
        }
        Strategy::BestFitDecreasing => best_fit::place(lengths, &placement_order, capacity, item_limit),
        Strategy::Sequential => next_fit(lengths, &placement_order, capacity, item_limit),
    };
    Ok(collect_bins(
        lengths,
        &placement_order,
        &bin_of_placed,
        capacity,
        dropped,
    ))
}

/// Splits indices into those that fit a bin and those longer than `capacity`.
fn split_oversized(lengths: &[u32], capacity: u32, drop_oversized: bool) -> Result<(Vec<u32>, Vec<u32>)> {
    let mut candidates = Vec::with_capacity(lengths.len());
    let mut dropped = Vec::new();
    for (index, &length) in lengths.iter().enumerate() {
        if length > capacity {
            dropped.push(index as u32);
        } else {
            candidates.push(index as u32);
        }
    }
    if !dropped.is_empty() && !drop_oversized {
        let longest = dropped
            .iter()
            .copied()
            .max_by_key(|&index| (lengths[index as usize], u32::MAX - index));
        let longest = longest.unwrap_or_default();
        return Err(Error::Invalid(format!(
            "{} of {} items are longer than the packing capacity of {capacity} tokens (the longest is item \
             {longest} with {} tokens); raise the capacity, truncate or drop long samples, or pass \
             drop_oversized=true to skip them",
            dropped.len(),
            lengths.len(),
            lengths[longest as usize],
        )));
    }
    Ok((candidates, dropped))
}

/// Next-fit: only the newest bin is open, so bins follow the input order.
fn next_fit(lengths: &[u32], placement_order: &[u32], capacity: u32, item_limit: u32) -> Vec<u32> {
    let mut bin_of_placed = Vec::with_capacity(placement_order.len());
    let mut bins = 0_u32;
    let mut free = 0_u32;
    let mut items_in_bin = item_limit;
    for &item in placement_order {
        let length = lengths[item as usize];
        if bins == 0 || length > free || items_in_bin >= item_limit {
            bins += 1;
            free = capacity;
            items_in_bin = 0;
        }
        free -= length;
        items_in_bin += 1;
        bin_of_placed.push(bins - 1);
    }
    bin_of_placed
}

/// Turns "placed item k went to bin b" into flat bins (a counting sort by bin, stable in placement order).
fn collect_bins(
    lengths: &[u32],
    placement_order: &[u32],
    bin_of_placed: &[u32],
    capacity: u32,
    dropped: Vec<u32>,
) -> Packing {
    let num_bins = bin_of_placed.iter().max().map_or(0, |&last| last as usize + 1);
    let mut bin_offsets = vec![0_u64; num_bins + 1];
    let mut bin_tokens = vec![0_u32; num_bins];
    for (&item, &bin) in placement_order.iter().zip(bin_of_placed) {
        bin_offsets[bin as usize + 1] += 1;
        bin_tokens[bin as usize] += lengths[item as usize];
    }
    for bin in 0..num_bins {
        bin_offsets[bin + 1] += bin_offsets[bin];
    }
    let mut cursor: Vec<u64> = bin_offsets[..num_bins].to_vec();
    let mut items = vec![0_u32; placement_order.len()];
    for (&item, &bin) in placement_order.iter().zip(bin_of_placed) {
        let slot = &mut cursor[bin as usize];
        items[*slot as usize] = item;
        *slot += 1;
    }
    let total_tokens = bin_tokens.iter().map(|&tokens| u64::from(tokens)).sum();
    Packing {
        capacity,
        bin_offsets,
        items,
        bin_tokens,
        dropped,
        total_tokens,
    }
}

#[cfg(test)]
mod tests;
