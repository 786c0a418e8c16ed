//! Bindings of `axr_core::pack`: lengths in as numpy (copied), bins and plans out as numpy (moved).

use axr_core::pack::{
    self as core_pack, EpochPlan, PackOptions, Packing, PlanOptions, RowOrder, RowPlanOptions, Strategy,
};
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;

use crate::errors::PyAxrError;

/// `(bin_offsets, items, bin_tokens, dropped, total_tokens)`.
type PackingArrays<'py> = (
    Bound<'py, PyArray1<u64>>,
    Bound<'py, PyArray1<u32>>,
    Bound<'py, PyArray1<u32>>,
    Bound<'py, PyArray1<u32>>,
    u64,
);

/// `(packing, steps, micro_batch_offsets, micro_batch_bins, dropped_bins, repeated_bins)`.
type PlanArrays<'py> = (
    PackingArrays<'py>,
    usize,
    Bound<'py, PyArray1<u64>>,
    Bound<'py, PyArray1<u32>>,
    Bound<'py, PyArray1<u32>>,
    Bound<'py, PyArray1<u32>>,
);

fn pack_options(
    capacity: u32,
    strategy: &str,
    max_items_per_bin: Option<u32>,
    drop_oversized: bool,
    seed: u64,
    epoch: u64,
) -> Result<PackOptions, PyAxrError> {
    let strategy: Strategy = strategy.parse()?;
    Ok(PackOptions {
        capacity,
        strategy,
        max_items_per_bin,
        drop_oversized,
        seed,
        epoch,
    })
}

fn packing_arrays(py: Python<'_>, packing: Packing) -> PackingArrays<'_> {
    let total_tokens = packing.total_tokens();
    let (bin_offsets, items, bin_tokens, dropped) = packing.into_parts();
    (
        bin_offsets.into_pyarray(py),
        items.into_pyarray(py),
        bin_tokens.into_pyarray(py),
        dropped.into_pyarray(py),
        total_tokens,
    )
}

/// Packs items of the given lengths into bins of `capacity` tokens.
#[pyfunction]
#[pyo3(signature = (lengths, capacity, *, strategy = "bfd", max_items_per_bin = None, drop_oversized = false, seed = 0, epoch = 0))]
#[expect(clippy::too_many_arguments, reason = "mirrors the keyword-only Python signature")]
#[expect(clippy::needless_pass_by_value, reason = "PyO3 extracts the array argument by value")]
fn pack<'py>(
    py: Python<'py>,
    lengths: PyReadonlyArray1<'py, u32>,
    capacity: u32,
    strategy: &str,
    max_items_per_bin: Option<u32>,
    drop_oversized: bool,
    seed: u64,
    epoch: u64,
) -> PyResult<PackingArrays<'py>> {
    let lengths: Vec<u32> = lengths.as_array().iter().copied().collect();
    let options = pack_options(capacity, strategy, max_items_per_bin, drop_oversized, seed, epoch)?;
    let packing = py
        .detach(|| core_pack::pack(&lengths, &options))
        .map_err(PyAxrError::from)?;
    Ok(packing_arrays(py, packing))
}

/// Packs, then distributes the bins over ranks and steps for one epoch.
#[pyfunction]
#[pyo3(signature = (
    lengths, capacity, micro_batch_size, *, strategy = "bfd", seed = 0, epoch = 0, world_size = 1,
    drop_last = true, max_items_per_bin = None, drop_oversized = false
))]
#[expect(clippy::too_many_arguments, reason = "mirrors the keyword-only Python signature")]
#[expect(clippy::needless_pass_by_value, reason = "PyO3 extracts the array argument by value")]
fn plan_epoch<'py>(
    py: Python<'py>,
    lengths: PyReadonlyArray1<'py, u32>,
    capacity: u32,
    micro_batch_size: u32,
    strategy: &str,
    seed: u64,
    epoch: u64,
    world_size: u32,
    drop_last: bool,
    max_items_per_bin: Option<u32>,
    drop_oversized: bool,
) -> PyResult<PlanArrays<'py>> {
    let lengths: Vec<u32> = lengths.as_array().iter().copied().collect();
    let options = PlanOptions {
        pack: pack_options(capacity, strategy, max_items_per_bin, drop_oversized, seed, epoch)?,
        world_size,
        micro_batch_size,
        drop_last,
    };
    let plan = py
        .detach(|| core_pack::plan_epoch(&lengths, &options))
        .map_err(PyAxrError::from)?;
    Ok(plan_arrays(py, plan))
}

/// The padded plan: one sample per row, dealt over ranks and steps like packed bins.
#[pyfunction]
#[pyo3(signature = (lengths, micro_batch_size, *, order = "shuffled", seed = 0, epoch = 0, world_size = 1, drop_last = true))]
#[expect(clippy::too_many_arguments, reason = "mirrors the keyword-only Python signature")]
#[expect(clippy::needless_pass_by_value, reason = "PyO3 extracts the array argument by value")]
fn plan_rows<'py>(
    py: Python<'py>,
    lengths: PyReadonlyArray1<'py, u32>,
    micro_batch_size: u32,
    order: &str,
    seed: u64,
    epoch: u64,
    world_size: u32,
    drop_last: bool,
) -> PyResult<PlanArrays<'py>> {
    let lengths: Vec<u32> = lengths.as_array().iter().copied().collect();
    let order: RowOrder = order.parse().map_err(PyAxrError::from)?;
    let options = RowPlanOptions {
        order,
        seed,
        epoch,
        world_size,
        micro_batch_size,
        drop_last,
    };
    let plan = py
        .detach(|| core_pack::plan_rows(&lengths, &options))
        .map_err(PyAxrError::from)?;
    Ok(plan_arrays(py, plan))
}

fn plan_arrays(py: Python<'_>, plan: EpochPlan) -> PlanArrays<'_> {
    let steps = plan.steps();
    let (packing, micro_batch_offsets, micro_batch_bins, dropped_bins, repeated_bins) = plan.into_parts();
    (
        packing_arrays(py, packing),
        steps,
        micro_batch_offsets.into_pyarray(py),
        micro_batch_bins.into_pyarray(py),
        dropped_bins.into_pyarray(py),
        repeated_bins.into_pyarray(py),
    )
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(pack, m)?)?;
    m.add_function(wrap_pyfunction!(plan_epoch, m)?)?;
    m.add_function(wrap_pyfunction!(plan_rows, m)?)?;
    Ok(())
}
