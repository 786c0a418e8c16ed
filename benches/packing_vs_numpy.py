"""axr.packing.pack against a straightforward numpy first-fit-decreasing, on the same lengths.

    python benches/packing_vs_numpy.py [--items 100000] [--capacity 2048] [--distribution alpaca]

Prints one JSON object: time and efficiency of each, their time ratio, and
whether axr's "ffd" made exactly the bins the numpy version made (it must:
both are first-fit over the same stable longest-first order).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from numpy.typing import NDArray

from axr.packing import pack


def sample_lengths(distribution: str, count: int, capacity: int, seed: int) -> NDArray[np.uint32]:
    """The distributions of benches/packing.rs: instruction-like, chat-like long tail, uniform."""
    rng = np.random.default_rng(seed)
    if distribution == "alpaca":
        lengths = np.clip(rng.lognormal(np.log(200), 0.7, count), 8, 8192)
    elif distribution == "chat":
        lengths = np.clip(rng.lognormal(np.log(700), 1.0, count), 16, 8192)
    else:
        lengths = rng.integers(1, capacity + 1, count)
    return np.minimum(lengths.astype(np.uint32), capacity)


def numpy_first_fit_decreasing(lengths: NDArray[np.uint32], capacity: int) -> list[list[int]]:
    """Sort longest first (stable), then put each item in the first bin with room: a vectorised scan."""
    order = np.argsort(-lengths.astype(np.int64), kind="stable")
    free = np.empty(len(lengths), dtype=np.int64)
    bins: list[list[int]] = []
    for index in order.tolist():
        length = int(lengths[index])
        open_free = free[: len(bins)]
        fitting = np.flatnonzero(open_free >= length)
        if len(fitting):
            chosen = int(fitting[0])
        else:
            chosen = len(bins)
            bins.append([])
            free[chosen] = capacity
        bins[chosen].append(index)
        free[chosen] -= length
    return bins


def best_of(repeats: int, function, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Best wall time and best CPU time of this thread (the packer runs on the calling thread, GIL
    released), the latter being the less disturbed figure on a shared machine."""
    best_wall, best_cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.thread_time()
        result = function(*args, **kwargs)
        best_cpu = min(best_cpu, time.thread_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return best_wall, best_cpu, result


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--capacity", type=int, default=2048)
    parser.add_argument("--distribution", choices=["alpaca", "chat", "uniform"], default="alpaca")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()

    lengths = sample_lengths(arguments.distribution, arguments.items, arguments.capacity, arguments.seed)
    total = int(lengths.sum())
    lower_bound = -(-total // arguments.capacity)

    numpy_seconds, numpy_cpu, numpy_bins = best_of(1, numpy_first_fit_decreasing, lengths, arguments.capacity)
    results: dict[str, object] = {
        "items": arguments.items,
        "capacity": arguments.capacity,
        "distribution": arguments.distribution,
        "total_tokens": total,
        "lower_bound": lower_bound,
        "numpy_ffd": {
            "seconds": numpy_seconds,
            "cpu_seconds": numpy_cpu,
            "bins": len(numpy_bins),
            "efficiency": total / (len(numpy_bins) * arguments.capacity),
        },
    }
    for strategy in ("ffd", "bfd", "shuffle", "sequential"):
        seconds, cpu_seconds, packing = best_of(5, pack, lengths, arguments.capacity, strategy=strategy)
        results[f"axr_{strategy}"] = {
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "bins": packing.num_bins,
            "efficiency": packing.efficiency,
            "speedup_vs_numpy_ffd": numpy_seconds / seconds,
            "cpu_speedup_vs_numpy_ffd": numpy_cpu / cpu_seconds,
        }
        if strategy == "ffd":
            results["axr_ffd_bins_identical_to_numpy_ffd"] = list(packing.bins) == numpy_bins
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
