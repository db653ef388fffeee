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

/// mimalloc's `purge_delay` option (`mi_option_purge_delay` in mimalloc.h, the same number in its v2 and
/// v3): how long a freed page stays committed before it is handed back to the OS.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keep pages the kernel's allocations freed (purge delay -1) unless `MIMALLOC_PURGE_DELAY` says
/// otherwise. A step frees what its run routed and the next run, about a second later, allocates as much
/// again: with mimalloc's default (purge after 1 s) those pages went back to the OS between runs, and
/// each came back as a page fault that zeroes a 2 MiB huge page. In `bench.run`'s detectors phase the
/// kernel's page faults took 0.81 µs of CPU per event with the default, 0.29 (the arenas' first growth)
/// with -1. The cost: after a burst, the kernel's memory stays at its peak.
fn keep_freed_pages() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none()
        && std::env::var_os("MIMALLOC_RESET_DELAY").is_none()
    {
        // SAFETY: sets one integer option; mimalloc reads it when it next considers purging
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) };
    }
}

/// The allocator's purge delay in ms (-1: freed pages are never handed back), for tests and diagnostics.
#[pyfunction]
fn allocator_purge_delay() -> std::ffi::c_long {
    // SAFETY: reads one integer option
    unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }
}

mod app_quiet;
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
mod requests;
mod rounding;
mod route;
mod series;
mod session_chain;
mod session_quiet;
mod times;
mod value;

/// The kernel API: `KERNEL_API` in `streams/core/detector_kernel.py` must name the same number, or
/// burnwatch does not use this build. Raise both when a function's inputs or outputs change.
const API: u32 = 15;

#[pymodule]
fn burnwatch_kernel(m: &Bound<'_, PyModule>) -> PyResult<()> {
    keep_freed_pages();
    m.add("API", API)?;
    m.add_function(wrap_pyfunction!(allocator_purge_delay, m)?)?;
    m.add_function(wrap_pyfunction!(route::route, m)?)?;
    m.add_function(wrap_pyfunction!(route::route_runs, m)?)?;
    m.add_function(wrap_pyfunction!(lanes::latest_by_lane, m)?)?;
    m.add_function(wrap_pyfunction!(times::parse_time, m)?)?;
    m.add_function(wrap_pyfunction!(rounding::round_to, m)?)?;
    m.add_class::<buckets::LlmBucketer>()?;
    m.add_class::<requests::Requests>()?;
    m.add_class::<idle::IdleGpuQuiet>()?;
    Ok(())
}
