//! `latest_by_lane`: each reporting lane's latest record time in a batch (the `Watermark`'s input).

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::record::{get, item};
use crate::times::TimeCache;
use crate::FxIndexMap;

/// Return `{lane: latest time}` over `records`, lanes in order of first appearance (see the Python
/// `latest_by_lane` in `streams/core/detector_feed.py`): an app's LLM traffic, else the resource.
#[pyfunction]
pub fn latest_by_lane<'py>(py: Python<'py>, records: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    let (k_source, k_app, k_resource, k_start) = (
        intern!(py, "x_SourceType"),
        intern!(py, "x_App"),
        intern!(py, "ResourceId"),
        intern!(py, "ChargePeriodStart"),
    );
    let mut times = TimeCache::default();
    let mut latest: FxIndexMap<String, f64> = FxIndexMap::default();
    let mut lane = String::new();
    let mut last: Option<usize> = None; // the lane of the record before: a run's records come in lanes
    for record in records.try_iter()? {
        let record = record?;
        let record = record.cast::<PyDict>()?;
        let source = item(record, k_source)?;
        let source = source.cast::<PyString>()?.to_str()?;
        let owner = if source == "llm.request" { get(record, k_app)? } else { item(record, k_resource)? };
        let owner = owner.str()?;
        let owner = owner.to_str()?;
        lane.clear();
        lane.extend([source, "|", owner]);
        let t = times.parse(py, &item(record, k_start)?)?;
        let at = match last.filter(|&at| latest.get_index(at).is_some_and(|(known, _)| *known == lane)) {
            Some(at) => at,
            None => latest
                .get_index_of(&lane)
                .unwrap_or_else(|| latest.insert_full(lane.clone(), f64::NEG_INFINITY).0),
        };
        last = Some(at);
        let known = &mut latest[at];
        if t > *known {
            *known = t;
        }
    }
    let out = PyDict::new(py);
    for (lane, t) in latest {
        out.set_item(lane, t)?;
    }
    Ok(out)
}
