//! burnwatch's optional compiled kernel.
//!
//! The detector feed's per-record loops, written to give exactly what the pure-Python code in
//! `streams/core/detector_feed.py` gives (the same items, floats summed in the same order, the same
//! digests). The Python code stays the reference: `tests/unit/test_kernel.py` checks the two agree on
//! real priced records and on generated ones, and burnwatch runs the Python code when this module is not
//! installed (or `BURNWATCH_DETECTOR_KERNEL=python`).

use pyo3::prelude::*;

/// An insertion-ordered map (as Python dicts keep order) with rustc's fast hash. A map lives for one
/// call over one batch (the stream routes runs of about 1,000 records), so even keys crafted to collide
/// cost at most that batch's square, not a worker's memory over time.
pub(crate) type FxIndexMap<K, V> = indexmap::IndexMap<K, V, rustc_hash::FxBuildHasher>;

/// mimalloc for the kernel's own allocations (buckets, pending documents, a batch's routed inputs): the
/// path allocates and frees small blocks per input, which glibc's allocator served at a sixth of its time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod buckets;
mod gpu_state;
mod idle;
mod lanes;
mod peers;
mod pending;
mod pending_doc;
mod pending_log;
mod quiet;
mod record;
mod rounding;
mod route;
mod series;
mod times;
mod value;

/// The kernel API: `KERNEL_API` in `streams/core/detector_kernel.py` must name the same number, or
/// burnwatch does not use this build. Raise both when a function's inputs or outputs change.
const API: u32 = 12;

#[pymodule]
fn burnwatch_kernel(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("API", API)?;
    m.add_function(wrap_pyfunction!(route::route, m)?)?;
    m.add_function(wrap_pyfunction!(lanes::latest_by_lane, m)?)?;
    m.add_function(wrap_pyfunction!(times::parse_time, m)?)?;
    m.add_function(wrap_pyfunction!(rounding::round_to, m)?)?;
    m.add_class::<buckets::LlmBucketer>()?;
    m.add_class::<idle::IdleGpuQuiet>()?;
    Ok(())
}
