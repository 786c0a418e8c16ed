use proptest::prelude::{ProptestConfig, any, prop, prop_assert, prop_assert_eq, prop_oneof, proptest};

use super::*;

fn options(capacity: u32, strategy: Strategy) -> PackOptions {
    PackOptions::new(capacity, strategy)
}

/// Plain O(n·B) reference: scan every open bin, in the same placement order.
fn reference_bins(lengths: &[u32], capacity: u32, strategy: Strategy, item_limit: u32) -> Vec<Vec<u32>> {
    let order: Vec<u32> = match strategy {
        Strategy::FirstFitDecreasing | Strategy::BestFitDecreasing => {
            let mut order: Vec<u32> = (0..lengths.len() as u32).collect();
            order.sort_by_key(|&index| (std::cmp::Reverse(lengths[index as usize]), index));
            order
        }
        Strategy::Shuffle => {
            crate::random::shuffled((0..lengths.len() as u32).collect(), 0, 0, crate::random::ITEM_STREAM)
        }
        Strategy::Sequential => (0..lengths.len() as u32).collect(),
    };
    let mut bins: Vec<Vec<u32>> = Vec::new();
    let mut free: Vec<u32> = Vec::new();
    for item in order {
        let length = lengths[item as usize];
        let fits = |bin: usize| free[bin] >= length && (bins[bin].len() as u32) < item_limit;
        let chosen = match strategy {
            Strategy::FirstFitDecreasing | Strategy::Shuffle => (0..bins.len()).find(|&bin| fits(bin)),
            Strategy::BestFitDecreasing => (0..bins.len())
                .filter(|&bin| fits(bin))
                .min_by_key(|&bin| (free[bin], bin)),
            Strategy::Sequential => bins.len().checked_sub(1).filter(|&bin| fits(bin)),
        };
        let bin = chosen.unwrap_or_else(|| {
            bins.push(Vec::new());
            free.push(capacity);
            bins.len() - 1
        });
        bins[bin].push(item);
        free[bin] -= length;
    }
    bins
}

/// Exact optimum for a handful of items: the classic subset DP, where
/// `best[mask]` is (bins used, fill of the last bin) for packing `mask`.
fn optimal_bins(lengths: &[u32], capacity: u32) -> u32 {
    let count = lengths.len();
    let mut best = vec![(u32::MAX, 0_u32); 1 << count];
    best[0] = (1, 0);
    for mask in 1_usize..1 << count {
        for item in 0..count {
            if mask & (1 << item) == 0 {
                continue;
            }
            let (bins, fill) = best[mask ^ (1 << item)];
            let candidate = if fill + lengths[item] <= capacity {
                (bins, fill + lengths[item])
            } else {
                (bins + 1, lengths[item])
            };
            best[mask] = best[mask].min(candidate);
        }
    }
    best[(1 << count) - 1].0
}

fn check_packing(lengths: &[u32], packing: &Packing, item_limit: u32) {
    let mut seen = vec![0_u32; lengths.len()];
    for (bin, items) in packing.bins().enumerate() {
        assert!(!items.is_empty(), "bin {bin} is empty");
        assert!(
            items.len() as u32 <= item_limit,
            "bin {bin} holds {} items",
            items.len()
        );
        let tokens: u32 = items.iter().map(|&item| lengths[item as usize]).sum();
        assert!(tokens <= packing.capacity(), "bin {bin} holds {tokens} tokens");
        assert_eq!(tokens, packing.bin_tokens()[bin]);
        for &item in items {
            seen[item as usize] += 1;
        }
    }
    for &item in packing.dropped() {
        assert!(lengths[item as usize] > packing.capacity());
        seen[item as usize] += 1;
    }
    assert!(
        seen.iter().all(|&times| times == 1),
        "every item is packed or dropped exactly once"
    );
    assert!(packing.num_bins() as u64 >= packing.lower_bound());
}

#[test]
fn doc_example_best_fit() {
    let packing = pack(&[5, 3, 7, 2, 4], &options(8, Strategy::BestFitDecreasing)).unwrap();
    let bins: Vec<&[u32]> = packing.bins().collect();
    assert_eq!(bins, [&[2][..], &[0, 1], &[4, 3]]);
    assert_eq!(packing.bin_offsets(), [0, 1, 3, 5]);
    assert!((packing.efficiency() - 21.0 / 24.0).abs() < 1e-12);
    assert_eq!(packing.lower_bound(), 3);
}

#[test]
fn first_fit_takes_the_first_bin_and_best_fit_the_tightest() {
    // 8 → bin 0 (free 2), 6 → bin 1 (free 4), 3 → bin 1 (free 1); the last 1 fits both bins:
    // first-fit takes bin 0, best-fit the tighter bin 1.
    let lengths = [1, 3, 6, 8];
    let first = pack(&lengths, &options(10, Strategy::FirstFitDecreasing)).unwrap();
    let best = pack(&lengths, &options(10, Strategy::BestFitDecreasing)).unwrap();
    assert_eq!(first.bins().collect::<Vec<_>>(), [&[3, 0][..], &[2, 1]]);
    assert_eq!(best.bins().collect::<Vec<_>>(), [&[3][..], &[2, 1, 0]]);
}

#[test]
fn sequential_opens_a_bin_whenever_the_next_item_does_not_fit() {
    let packing = pack(&[5, 6, 2, 4], &options(10, Strategy::Sequential)).unwrap();
    assert_eq!(packing.bins().collect::<Vec<_>>(), [&[0][..], &[1, 2], &[3]]);
}

#[test]
fn oversized_items_are_an_error_naming_count_and_longest() {
    let error = pack(&[10, 300, 20, 500, 500], &options(256, Strategy::BestFitDecreasing)).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("3 of 5 items are longer than the packing capacity of 256"),
        "{message}"
    );
    assert!(message.contains("item 3 with 500 tokens"), "{message}");
    assert!(matches!(error, Error::Invalid(_)));
}

#[test]
fn oversized_items_are_dropped_and_counted_when_asked() {
    let mut options = options(256, Strategy::FirstFitDecreasing);
    options.drop_oversized = true;
    let packing = pack(&[10, 300, 20, 500], &options).unwrap();
    assert_eq!(packing.dropped(), [1, 3]);
    assert_eq!(packing.total_tokens(), 30);
    assert_eq!(packing.num_bins(), 1);
}

#[test]
fn invalid_options_are_errors() {
    assert!(pack(&[1], &options(0, Strategy::BestFitDecreasing)).is_err());
    let mut limited = options(8, Strategy::BestFitDecreasing);
    limited.max_items_per_bin = Some(0);
    assert!(pack(&[1], &limited).is_err());
    let message = "fastest".parse::<Strategy>().unwrap_err().to_string();
    assert!(message.contains("\"bfd\""), "{message}");
    for strategy in Strategy::ALL {
        assert_eq!(strategy.name().parse::<Strategy>().unwrap(), strategy);
    }
}

#[test]
fn empty_input_packs_to_no_bins() {
    for strategy in Strategy::ALL {
        let packing = pack(&[], &options(16, strategy)).unwrap();
        assert_eq!(packing.num_bins(), 0);
        assert_eq!(packing.bin_offsets(), [0]);
        assert!((packing.efficiency() - 1.0).abs() < f64::EPSILON);
    }
}

#[test]
fn first_fit_opens_a_bin_per_item_when_nothing_fits() {
    // No two items share a bin, so each one opens a new bin after checking all the open ones.
    let lengths = vec![51_u32; 1000];
    for strategy in [Strategy::FirstFitDecreasing, Strategy::Shuffle] {
        let packing = pack(&lengths, &options(100, strategy)).unwrap();
        assert_eq!(packing.num_bins(), 1000);
    }
}

#[test]
fn item_limit_caps_every_bin() {
    let lengths = vec![1_u32; 10];
    for strategy in Strategy::ALL {
        let mut limited = options(100, strategy);
        limited.max_items_per_bin = Some(3);
        let packing = pack(&lengths, &limited).unwrap();
        assert_eq!(packing.num_bins(), 4, "{strategy}");
        check_packing(&lengths, &packing, 3);
    }
}

#[test]
fn shuffle_repacks_each_epoch_with_the_same_items() {
    let lengths: Vec<u32> = (0..200).map(|index| 1 + (index * 37 % 97)).collect();
    let mut first = options(256, Strategy::Shuffle);
    first.seed = 7;
    let mut second = first.clone();
    second.epoch = 1;
    let epoch_zero = pack(&lengths, &first).unwrap();
    let epoch_one = pack(&lengths, &second).unwrap();
    assert_ne!(epoch_zero.items(), epoch_one.items());
    let mut zero_items = epoch_zero.items().to_vec();
    let mut one_items = epoch_one.items().to_vec();
    zero_items.sort_unstable();
    one_items.sort_unstable();
    assert_eq!(zero_items, one_items);
    assert_eq!(pack(&lengths, &first).unwrap(), epoch_zero);
}

fn plan_options(
    capacity: u32,
    strategy: Strategy,
    world_size: u32,
    micro_batch_size: u32,
    drop_last: bool,
) -> PlanOptions {
    PlanOptions {
        pack: options(capacity, strategy),
        world_size,
        micro_batch_size,
        drop_last,
    }
}

fn check_plan(plan: &EpochPlan, micro_batch_size: u32, drop_last: bool) {
    let num_bins = plan.packing().num_bins();
    let mut uses = vec![0_u32; num_bins];
    for step in 0..plan.steps() {
        for rank in 0..plan.world_size() {
            let batch = plan.micro_batch(rank, step);
            assert!(!batch.is_empty(), "rank {rank} is idle at step {step}");
            assert!(batch.len() as u32 <= micro_batch_size);
            if drop_last {
                assert_eq!(batch.len() as u32, micro_batch_size);
            }
            for &bin in batch {
                uses[bin as usize] += 1;
            }
        }
    }
    assert_eq!(
        plan.micro_batch_offsets().len(),
        plan.steps() * plan.world_size() as usize + 1
    );
    for &bin in plan.dropped_bins() {
        uses[bin as usize] += 1;
    }
    let mut expected = vec![1_u32; num_bins];
    for &bin in plan.repeated_bins() {
        expected[bin as usize] += 1;
    }
    assert_eq!(uses, expected, "ranks are disjoint and cover every bin not dropped");
    let per_step = (plan.world_size() * micro_batch_size) as usize;
    if drop_last {
        assert_eq!(plan.steps(), num_bins / per_step);
        assert_eq!(plan.dropped_bins().len(), num_bins % per_step);
    } else {
        assert_eq!(plan.steps(), num_bins.div_ceil(per_step));
        assert!(plan.repeated_bins().len() < plan.world_size() as usize);
    }
}

#[test]
fn plan_balances_tokens_within_a_step() {
    // Bins of 10, 9, 2, 1 tokens on two ranks with two slots: 10+1 and 9+2.
    let lengths = [10, 9, 2, 1];
    let mut options = plan_options(10, Strategy::FirstFitDecreasing, 2, 2, true);
    options.pack.max_items_per_bin = Some(1);
    let plan = plan_epoch(&lengths, &options).unwrap();
    assert_eq!(plan.steps(), 1);
    let mut totals: Vec<u32> = (0..2)
        .map(|rank| {
            plan.micro_batch(rank, 0)
                .iter()
                .map(|&bin| plan.packing().bin_tokens()[bin as usize])
                .sum()
        })
        .collect();
    totals.sort_unstable();
    assert_eq!(totals, [11, 11]);
    assert!(plan.imbalance(&lengths, f64::from).worst.abs() < 1e-12);
}

#[test]
fn plan_without_drop_last_repeats_bins_so_no_rank_idles() {
    // 5 bins, 4 ranks × 1 slot: step 0 takes 4, step 1 has 1 bin for 4 ranks → 3 repeated.
    let lengths = [8_u32; 5];
    let plan = plan_epoch(&lengths, &plan_options(8, Strategy::BestFitDecreasing, 4, 1, false)).unwrap();
    assert_eq!(plan.steps(), 2);
    assert_eq!(plan.repeated_bins().len(), 3);
    check_plan(&plan, 1, false);
    let dropped = plan_epoch(&lengths, &plan_options(8, Strategy::BestFitDecreasing, 4, 1, true)).unwrap();
    assert_eq!(dropped.steps(), 1);
    assert_eq!(dropped.dropped_bins().len(), 1);
}

#[test]
fn sequential_plan_keeps_bin_order() {
    let lengths = [3_u32, 3, 3, 3, 3, 3];
    let plan = plan_epoch(&lengths, &plan_options(6, Strategy::Sequential, 1, 1, true)).unwrap();
    let batches = plan.rank_batches(0);
    assert_eq!(batches, [vec![vec![0, 1]], vec![vec![2, 3]], vec![vec![4, 5]]]);
}

#[test]
fn plan_rejects_zero_ranks_or_slots() {
    assert!(plan_epoch(&[1], &plan_options(8, Strategy::BestFitDecreasing, 0, 1, true)).is_err());
    assert!(plan_epoch(&[1], &plan_options(8, Strategy::BestFitDecreasing, 1, 0, true)).is_err());
}

fn any_strategy() -> impl proptest::strategy::Strategy<Value = Strategy> {
    prop::sample::select(Strategy::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every item in exactly one bin, no bin over capacity or the item limit, bins ≥ ceil(total / capacity),
    /// and the placement equals the plain O(n·B) scan with the same tie-breaks.
    #[test]
    fn packing_is_valid_and_matches_the_reference(
        lengths in prop::collection::vec(0_u32..=120, 0..300),
        capacity in 1_u32..=128,
        strategy in any_strategy(),
        limit in prop::option::of(1_u32..6),
    ) {
        let mut options = options(capacity, strategy);
        options.max_items_per_bin = limit;
        options.drop_oversized = true;
        let packing = pack(&lengths, &options).unwrap();
        check_packing(&lengths, &packing, limit.unwrap_or(u32::MAX));
        let kept: Vec<u32> = lengths.iter().map(|&length| if length > capacity { u32::MAX } else { length }).collect();
        let kept_indices: Vec<u32> = (0..lengths.len() as u32).filter(|&index| lengths[index as usize] <= capacity).collect();
        let kept_lengths: Vec<u32> = kept_indices.iter().map(|&index| kept[index as usize]).collect();
        if strategy != Strategy::Shuffle {
            let expected: Vec<Vec<u32>> = reference_bins(&kept_lengths, capacity, strategy, limit.unwrap_or(u32::MAX))
                .into_iter()
                .map(|bin| bin.into_iter().map(|position| kept_indices[position as usize]).collect())
                .collect();
            prop_assert_eq!(packing.bins().map(<[u32]>::to_vec).collect::<Vec<_>>(), expected);
        }
    }

    /// First-fit and best-fit (any order, no item limit) never leave two bins at most half full: the later
    /// bin's first item would have fit the earlier one. So bins ≤ 2·lower_bound + 1 always.
    #[test]
    fn at_most_one_bin_is_half_empty(
        lengths in prop::collection::vec(1_u32..=100, 1..400),
        capacity in 100_u32..=300,
        strategy in prop::sample::select(vec![Strategy::FirstFitDecreasing, Strategy::BestFitDecreasing, Strategy::Shuffle]),
    ) {
        let packing = pack(&lengths, &options(capacity, strategy)).unwrap();
        let half_empty = packing.bin_tokens().iter().filter(|&&tokens| 2 * tokens <= capacity).count();
        prop_assert!(half_empty <= 1);
    }

    /// FFD ≤ 11/9·OPT + 6/9 (Dósa 2007, tight), checked against the exact optimum of small instances.
    /// The "≤ 11/9·lower_bound + 1" is not a theorem: with items just over capacity/3, two per bin
    /// is optimal and OPT ≈ 1.5·lower_bound, so a proxy for OPT would fail on correct packings. Best-fit-
    /// decreasing has the same asymptotic 11/9 ratio; its additive constant is checked at the same 6/9.
    #[test]
    fn decreasing_strategies_are_within_eleven_ninths_of_optimal(
        // Items of a quarter to a half of the capacity are where decreasing heuristics lose most.
        lengths in prop::collection::vec(prop_oneof![1_u32..=100, 20_u32..=55], 1..=11),
        strategy in prop::sample::select(vec![Strategy::FirstFitDecreasing, Strategy::BestFitDecreasing]),
    ) {
        let packing = pack(&lengths, &options(100, strategy)).unwrap();
        let optimum = optimal_bins(&lengths, 100);
        prop_assert!(packing.num_bins() as u64 >= packing.lower_bound());
        prop_assert!(u64::from(optimum) >= packing.lower_bound());
        prop_assert!(9 * packing.num_bins() as u32 <= 11 * optimum + 6, "{} bins, optimum {}", packing.num_bins(), optimum);
    }

    /// Same inputs → same plan; ranks disjoint and covering (minus counted drops, plus counted repeats);
    /// every rank runs the same number of steps.
    #[test]
    fn plans_are_deterministic_disjoint_and_even(
        lengths in prop::collection::vec(1_u32..=64, 0..300),
        strategy in any_strategy(),
        world_size in 1_u32..6,
        micro_batch_size in 1_u32..4,
        drop_last in any::<bool>(),
        seed in any::<u64>(),
        epoch in 0_u64..4,
    ) {
        let mut options = plan_options(64, strategy, world_size, micro_batch_size, drop_last);
        options.pack.seed = seed;
        options.pack.epoch = epoch;
        let plan = plan_epoch(&lengths, &options).unwrap();
        prop_assert_eq!(&plan_epoch(&lengths, &options).unwrap(), &plan);
        check_plan(&plan, micro_batch_size, drop_last);
    }
}

#[test]
fn large_inputs_match_the_reference() {
    // Over 256 bins, so first-fit searches cross the tree's second level (16 × 16 leaves per node).
    let mut random = crate::random::SplitMix64::new(5, 0, 0);
    let lengths: Vec<u32> = (0..3000).map(|_| 1 + random.below(256) as u32).collect();
    for strategy in [
        Strategy::FirstFitDecreasing,
        Strategy::BestFitDecreasing,
        Strategy::Shuffle,
    ] {
        let packing = pack(&lengths, &options(256, strategy)).unwrap();
        assert!(packing.num_bins() > 1000, "{}", packing.num_bins());
        check_packing(&lengths, &packing, u32::MAX);
        let expected = reference_bins(&lengths, 256, strategy, u32::MAX);
        assert_eq!(
            packing.bins().map(<[u32]>::to_vec).collect::<Vec<_>>(),
            expected,
            "{strategy}"
        );
    }
}

fn row_options(order: RowOrder, world_size: u32, micro_batch_size: u32, drop_last: bool) -> RowPlanOptions {
    RowPlanOptions {
        order,
        seed: 3,
        epoch: 0,
        world_size,
        micro_batch_size,
        drop_last,
    }
}

#[test]
fn row_plan_puts_one_sample_in_each_bin() {
    let lengths: Vec<u32> = (1..=50).collect();
    let plan = plan_rows(&lengths, &row_options(RowOrder::Shuffled, 3, 4, true)).unwrap();
    assert!(plan.packing().bins().all(|bin| bin.len() == 1));
    assert_eq!(plan.packing().capacity(), 50);
    // 50 rows, 3 ranks × 4 rows per step: 4 steps, 2 rows dropped (listed, not silent).
    assert_eq!(plan.steps(), 4);
    assert_eq!(plan.dropped_bins().len(), 2);
    check_plan(&plan, 4, true);
}

#[test]
fn row_plan_in_dataset_order_repeats_rows_like_the_packed_plan() {
    // 2 rows for 3 ranks: one step, the third rank gets a copy of the first row.
    let plan = plan_rows(&[4, 5], &row_options(RowOrder::Dataset, 3, 1, false)).unwrap();
    assert_eq!(plan.steps(), 1);
    assert_eq!(plan.repeated_bins(), [0]);
    check_plan(&plan, 1, false);
    let rows: Vec<Vec<Vec<u32>>> = (0..3).map(|rank| plan.rank_batches(rank)[0].clone()).collect();
    let mut firsts: Vec<u32> = rows.iter().map(|batch| batch[0][0]).collect();
    firsts.sort_unstable();
    assert_eq!(firsts, [0, 0, 1]);
}

#[test]
fn row_plan_grouped_by_length_gives_steps_of_similar_lengths() {
    let mut random = crate::random::SplitMix64::new(0, 0, 0);
    let lengths: Vec<u32> = (0..512).map(|_| 1 + random.below(1000) as u32).collect();
    let spread = |order| {
        let plan = plan_rows(&lengths, &row_options(order, 1, 8, true)).unwrap();
        let spreads: Vec<u32> = plan
            .rank_batches(0)
            .iter()
            .map(|batch| {
                let batch_lengths: Vec<u32> = batch.iter().map(|bin| lengths[bin[0] as usize]).collect();
                batch_lengths.iter().max().unwrap() - batch_lengths.iter().min().unwrap()
            })
            .collect();
        f64::from(spreads.iter().sum::<u32>()) / spreads.len() as f64
    };
    assert!(spread(RowOrder::GroupedByLength) < spread(RowOrder::Shuffled) / 4.0);
    // The steps are shuffled: lengths do not simply decrease through the epoch.
    let plan = plan_rows(&lengths, &row_options(RowOrder::GroupedByLength, 1, 8, true)).unwrap();
    let firsts: Vec<u32> = plan
        .rank_batches(0)
        .iter()
        .map(|batch| lengths[batch[0][0] as usize])
        .collect();
    assert!(firsts.windows(2).any(|pair| pair[0] < pair[1]));
}

#[test]
fn row_plan_epochs_reshuffle_and_replay() {
    let lengths: Vec<u32> = (1..=40).collect();
    let mut options = row_options(RowOrder::Shuffled, 1, 4, true);
    let zero = plan_rows(&lengths, &options).unwrap();
    options.epoch = 1;
    let one = plan_rows(&lengths, &options).unwrap();
    assert_ne!(zero.micro_batch_bins(), one.micro_batch_bins());
    let mut sorted = one.micro_batch_bins().to_vec();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..40).collect::<Vec<u32>>());
    options.epoch = 0;
    assert_eq!(plan_rows(&lengths, &options).unwrap(), zero);
}

#[test]
fn row_plan_rejects_zero_ranks_or_rows_and_unknown_orders() {
    assert!(plan_rows(&[1], &row_options(RowOrder::Dataset, 0, 1, true)).is_err());
    assert!(plan_rows(&[1], &row_options(RowOrder::Dataset, 1, 0, true)).is_err());
    assert!("by_length".parse::<RowOrder>().is_err());
    for order in RowOrder::ALL {
        assert_eq!(order.name().parse::<RowOrder>().unwrap(), order);
    }
}

proptest! {
    /// The padded plan keeps the packed plan's guarantees: deterministic, disjoint ranks, equal steps.
    #[test]
    fn row_plans_are_deterministic_disjoint_and_even(
        lengths in prop::collection::vec(1_u32..=64, 0..300),
        order in prop::sample::select(RowOrder::ALL.to_vec()),
        world_size in 1_u32..6,
        micro_batch_size in 1_u32..4,
        drop_last in any::<bool>(),
        epoch in 0_u64..4,
    ) {
        let mut options = row_options(order, world_size, micro_batch_size, drop_last);
        options.epoch = epoch;
        let plan = plan_rows(&lengths, &options).unwrap();
        prop_assert_eq!(&plan_rows(&lengths, &options).unwrap(), &plan);
        prop_assert!(plan.packing().bins().all(|bin| bin.len() == 1));
        check_plan(&plan, micro_batch_size, drop_last);
    }
}
