//! The epoch plan: which bins each rank trains on at each step.
//!
//! A pure function of (lengths, capacity, strategy, seed, epoch, world_size,
//! micro_batch_size, drop_last):
//!
//! ```text
//! pack ──> bins 0..B ──shuffle(seed, epoch)──> b7 b2 b9 b0 b4 b1 b8 b3 ...
//!                                               └──── step 0 ────┘└── step 1 ...
//!          each step takes world_size × micro_batch_size bins and deals them
//!          to ranks largest first, each to the rank with the fewest tokens
//!          so far (that still has a free slot):
//!          rank 0: [b7, b1]   rank 1: [b2, b4]   ...  (micro_batch_size = 2)
//! ```
//!
//! Every rank runs exactly `steps` micro-batches. Work is balanced by token
//! count within each step, because a synchronous step waits for its slowest
//! rank. With `drop_last` the bins that do not fill a whole step are left out
//! (listed in [`EpochPlan::dropped_bins`]); without it the last step's
//! micro-batches may be smaller, and when fewer bins than ranks remain, bins
//! from the start of the epoch are repeated so no rank is idle (listed in
//! [`EpochPlan::repeated_bins`]). The `sequential` strategy keeps bins in order.
//!
//! Without packing ([`plan_rows`]) every bin holds one sample and the same
//! dealing applies, so padded and packed runs share the step count and the
//! last-step rule.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::str::FromStr;

use super::{PackOptions, Packing, Strategy, pack};
use crate::error::{Error, Result};
use crate::random::{BIN_STREAM, STEP_STREAM, shuffled};

/// Everything an epoch plan depends on besides the lengths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// Packing of items into bins (capacity, strategy, seed, epoch, ...).
    pub pack: PackOptions,
    /// Number of data-parallel ranks.
    pub world_size: u32,
    /// Bins per micro-batch on each rank.
    pub micro_batch_size: u32,
    /// Leave out the bins that do not fill a whole step instead of running a short last step.
    pub drop_last: bool,
}

impl PlanOptions {
    fn validate(&self) -> Result<()> {
        if self.world_size == 0 {
            return Err(Error::Invalid("world_size must be at least 1".into()));
        }
        if self.micro_batch_size == 0 {
            return Err(Error::Invalid("micro_batch_size must be at least 1 bin".into()));
        }
        Ok(())
    }
}

/// Order of the rows of a padded plan before they are dealt into steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowOrder {
    /// Dataset order (evaluation).
    Dataset,
    /// A permutation of (seed, epoch).
    Shuffled,
    /// Shuffled, then each window of 64 steps sorted by length so a step's rows need little
    /// padding, then the steps shuffled so lengths do not decrease through the epoch.
    GroupedByLength,
}

impl RowOrder {
    /// Every order, in the order the docs list them.
    pub const ALL: [RowOrder; 3] = [RowOrder::Dataset, RowOrder::Shuffled, RowOrder::GroupedByLength];

    /// The short name used in the Python API.
    pub fn name(self) -> &'static str {
        match self {
            RowOrder::Dataset => "dataset",
            RowOrder::Shuffled => "shuffled",
            RowOrder::GroupedByLength => "grouped_by_length",
        }
    }
}

impl FromStr for RowOrder {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        RowOrder::ALL
            .into_iter()
            .find(|order| order.name() == name)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown row order {name:?}; expected one of \"dataset\", \"shuffled\", \"grouped_by_length\""
                ))
            })
    }
}

/// Everything a padded (one sample per row) epoch plan depends on besides the lengths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowPlanOptions {
    /// How rows are ordered before dealing.
    pub order: RowOrder,
    /// Seed of the shuffles.
    pub seed: u64,
    /// Epoch mixed into the shuffles.
    pub epoch: u64,
    /// Number of data-parallel ranks.
    pub world_size: u32,
    /// Rows per micro-batch on each rank.
    pub micro_batch_size: u32,
    /// Leave out the rows that do not fill a whole step instead of running a short last step.
    pub drop_last: bool,
}

/// Steps per window sorted together by [`RowOrder::GroupedByLength`].
const GROUP_WINDOW_STEPS: usize = 64;

/// Per-step imbalance between ranks: `max(rank cost) / mean(rank cost) − 1`, 0 when perfect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Imbalance {
    /// Average over steps.
    pub mean: f64,
    /// The worst step.
    pub worst: f64,
}

/// The micro-batches of every rank for one epoch.
///
/// Stored flat, step-major: the micro-batch of `rank` at `step` is the bins
/// `micro_batch_bins[micro_batch_offsets[step × world_size + rank] ..
/// micro_batch_offsets[step × world_size + rank + 1]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochPlan {
    packing: Packing,
    world_size: u32,
    steps: usize,
    micro_batch_offsets: Vec<u64>,
    micro_batch_bins: Vec<u32>,
    dropped_bins: Vec<u32>,
    repeated_bins: Vec<u32>,
}

/// Packs the lengths and distributes the bins over ranks and steps.
pub fn plan_epoch(lengths: &[u32], options: &PlanOptions) -> Result<EpochPlan> {
    options.validate()?;
    let packing = pack(lengths, &options.pack)?;
    distribute(packing, options)
}

/// Distributes an existing packing (made with `options.pack`) over ranks and
/// steps, so a caller can reuse one `ffd`/`bfd` packing for every epoch.
pub fn distribute(packing: Packing, options: &PlanOptions) -> Result<EpochPlan> {
    options.validate()?;
    let mut order: Vec<u32> = (0..packing.num_bins() as u32).collect();
    if options.pack.strategy != Strategy::Sequential {
        order = shuffled(order, options.pack.seed, options.pack.epoch, BIN_STREAM);
    }
    Ok(deal(
        packing,
        order,
        options.world_size,
        options.micro_batch_size,
        options.drop_last,
    ))
}

/// The padded plan: one sample per row (bin), dealt like packed bins.
pub fn plan_rows(lengths: &[u32], options: &RowPlanOptions) -> Result<EpochPlan> {
    if options.world_size == 0 {
        return Err(Error::Invalid("world_size must be at least 1".into()));
    }
    if options.micro_batch_size == 0 {
        return Err(Error::Invalid("micro_batch_size must be at least 1 row".into()));
    }
    let packing = Packing::one_per_bin(lengths)?;
    let rows: Vec<u32> = (0..lengths.len() as u32).collect();
    let per_step = options.world_size as usize * options.micro_batch_size as usize;
    let order = match options.order {
        RowOrder::Dataset => rows,
        RowOrder::Shuffled => shuffled(rows, options.seed, options.epoch, BIN_STREAM),
        RowOrder::GroupedByLength => grouped_by_length(
            shuffled(rows, options.seed, options.epoch, BIN_STREAM),
            lengths,
            per_step,
            options.seed,
            options.epoch,
        ),
    };
    Ok(deal(
        packing,
        order,
        options.world_size,
        options.micro_batch_size,
        options.drop_last,
    ))
}

/// Sorts each window of [`GROUP_WINDOW_STEPS`] full steps longest first, then shuffles the full
/// steps. Rows past the last full step stay at the end, where `deal` drops or runs them.
fn grouped_by_length(mut order: Vec<u32>, lengths: &[u32], per_step: usize, seed: u64, epoch: u64) -> Vec<u32> {
    let full = order.len() / per_step * per_step;
    for window in order[..full].chunks_mut(per_step * GROUP_WINDOW_STEPS) {
        window.sort_by_key(|&row| Reverse(lengths[row as usize]));
    }
    let steps: Vec<&[u32]> = order[..full].chunks(per_step).collect();
    let mut grouped: Vec<u32> = shuffled(steps, seed, epoch, STEP_STREAM).concat();
    grouped.extend_from_slice(&order[full..]);
    grouped
}

/// Cuts `order` (bin indices) into steps of `world_size × micro_batch_size` bins, drops or repeats
/// bins for the last step, and deals each step's bins to ranks.
fn deal(packing: Packing, mut order: Vec<u32>, world_size: u32, micro_batch_size: u32, drop_last: bool) -> EpochPlan {
    let ranks = world_size as usize;
    let per_step = ranks * micro_batch_size as usize;
    let mut dropped_bins = Vec::new();
    let mut repeated_bins = Vec::new();
    let steps;
    if drop_last {
        steps = order.len() / per_step;
        dropped_bins = order.split_off(steps * per_step);
    } else {
        steps = order.len().div_ceil(per_step);
        let in_last_step = order.len() - steps.saturating_sub(1) * per_step;
        if steps > 0 && in_last_step < ranks {
            repeated_bins = (0..ranks - in_last_step).map(|k| order[k % order.len()]).collect();
            order.extend_from_slice(&repeated_bins);
        }
    }
    let mut micro_batch_offsets = Vec::with_capacity(steps * ranks + 1);
    micro_batch_offsets.push(0);
    let mut micro_batch_bins = Vec::with_capacity(order.len());
    let mut per_rank: Vec<Vec<u32>> = vec![Vec::new(); ranks];
    for step_bins in order.chunks(per_step) {
        deal_largest_first(step_bins, packing.bin_tokens(), micro_batch_size, &mut per_rank);
        for rank_bins in &mut per_rank {
            micro_batch_bins.append(rank_bins);
            micro_batch_offsets.push(micro_batch_bins.len() as u64);
        }
    }
    EpochPlan {
        packing,
        world_size,
        steps,
        micro_batch_offsets,
        micro_batch_bins,
        dropped_bins,
        repeated_bins,
    }
}

/// Longest-processing-time-first: each bin, largest first, goes to the rank
/// with the fewest tokens so far among those with a free slot (ties: fewer
/// bins, then lower rank, so every rank gets a bin before any gets two).
fn deal_largest_first(step_bins: &[u32], bin_tokens: &[u32], slots: u32, per_rank: &mut [Vec<u32>]) {
    let mut by_size = step_bins.to_vec();
    by_size.sort_unstable_by_key(|&bin| (Reverse(bin_tokens[bin as usize]), bin));
    let mut ranks: BinaryHeap<Reverse<(u64, u32, u32)>> =
        (0..per_rank.len() as u32).map(|rank| Reverse((0, 0, rank))).collect();
    for bin in by_size {
        let Some(Reverse((tokens, count, rank))) = ranks.pop() else {
            unreachable!("a step holds at most world_size × micro_batch_size bins")
        };
        per_rank[rank as usize].push(bin);
        if count + 1 < slots {
            ranks.push(Reverse((tokens + u64::from(bin_tokens[bin as usize]), count + 1, rank)));
        }
    }
}

impl EpochPlan {
    /// The packing the plan distributes.
    pub fn packing(&self) -> &Packing {
        &self.packing
    }

    /// Number of ranks.
    pub fn world_size(&self) -> u32 {
        self.world_size
    }

    /// Micro-batches per rank this epoch (the same for every rank).
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Bin indices of the micro-batch of `rank` at `step`.
    pub fn micro_batch(&self, rank: u32, step: usize) -> &[u32] {
        let slot = step * self.world_size as usize + rank as usize;
        &self.micro_batch_bins[self.micro_batch_offsets[slot] as usize..self.micro_batch_offsets[slot + 1] as usize]
    }

    /// Every micro-batch of `rank` as lists of bins of item indices.
    pub fn rank_batches(&self, rank: u32) -> Vec<Vec<Vec<u32>>> {
        (0..self.steps)
            .map(|step| {
                self.micro_batch(rank, step)
                    .iter()
                    .map(|&bin| self.packing.bin(bin as usize).to_vec())
                    .collect()
            })
            .collect()
    }

    /// `steps × world_size + 1` offsets into [`EpochPlan::micro_batch_bins`], step-major.
    pub fn micro_batch_offsets(&self) -> &[u64] {
        &self.micro_batch_offsets
    }

    /// Bin indices of all micro-batches, concatenated step-major.
    pub fn micro_batch_bins(&self) -> &[u32] {
        &self.micro_batch_bins
    }

    /// Bins left out this epoch by `drop_last`.
    pub fn dropped_bins(&self) -> &[u32] {
        &self.dropped_bins
    }

    /// Bins that appear twice this epoch so every rank has a last micro-batch (`drop_last = false`).
    pub fn repeated_bins(&self) -> &[u32] {
        &self.repeated_bins
    }

    /// Imbalance between ranks under a per-item cost, e.g. `|length| f64::from(length)` for tokens or
    /// its square for attention.
    pub fn imbalance(&self, lengths: &[u32], cost: impl Fn(u32) -> f64) -> Imbalance {
        let mut sum = 0.0;
        let mut worst: f64 = 0.0;
        for step in 0..self.steps {
            let rank_costs: Vec<f64> = (0..self.world_size)
                .map(|rank| {
                    self.micro_batch(rank, step)
                        .iter()
                        .flat_map(|&bin| self.packing.bin(bin as usize))
                        .map(|&item| cost(lengths[item as usize]))
                        .sum()
                })
                .collect();
            let mean = rank_costs.iter().sum::<f64>() / rank_costs.len() as f64;
            let max = rank_costs.iter().copied().fold(0.0, f64::max);
            let step_imbalance = if mean > 0.0 { max / mean - 1.0 } else { 0.0 };
            sum += step_imbalance;
            worst = worst.max(step_imbalance);
        }
        let mean = if self.steps == 0 { 0.0 } else { sum / self.steps as f64 };
        Imbalance { mean, worst }
    }

    /// The flat arrays `(micro_batch_offsets, micro_batch_bins, dropped_bins, repeated_bins)` and the packing.
    pub fn into_parts(self) -> (Packing, Vec<u64>, Vec<u32>, Vec<u32>, Vec<u32>) {
        (
            self.packing,
            self.micro_batch_offsets,
            self.micro_batch_bins,
            self.dropped_bins,
            self.repeated_bins,
        )
    }
}
