//! `latest_by_lane`: each reporting lane's latest record time in a batch (the `Watermark`'s input); `route`
//! keeps the same figures while it routes (`Lanes`), so the router reads a batch once.

use pyo3::exceptions::PyKeyError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::record::{get, item};
use crate::times::TimeCache;
use crate::FxIndexMap;

/// Each lane's latest record time, lanes in order of first appearance (see the Python `latest_by_lane` in
/// `streams/core/detector_feed.py`): an app's LLM traffic, else the resource.
#[derive(Default)]
pub(crate) struct Lanes {
    latest: FxIndexMap<String, f64>,
    lane: String,
    last: Option<usize>, // the lane of the record before: a run's records come in lanes
    // and the source type and owner objects it was read from (an event's records share theirs): held,
    // so that no other object takes their addresses while they are compared with
    last_read: Option<(Py<PyAny>, Py<PyAny>)>,
}

impl Lanes {
    /// Take a record: its source type (`get`'s), then `x_App` or `ResourceId` and its time (`time()`), read
    /// in the Python code's order.
    pub(crate) fn see(
        &mut self,
        record: &Bound<'_, PyDict>,
        source: &Bound<'_, PyAny>,
        time: impl FnOnce() -> PyResult<f64>,
    ) -> PyResult<()> {
        let py = record.py();
        if source.is_none() && !record.contains(intern!(py, "x_SourceType"))? {
            return Err(PyKeyError::new_err("x_SourceType"));
        }
        let source_text = source.cast::<PyString>()?.to_str()?;
        let read = if source_text == "llm.request" {
            get(record, intern!(py, "x_App"))?
        } else {
            item(record, intern!(py, "ResourceId"))?
        };
        if let (Some(at), Some((known_source, known_owner))) = (self.last, &self.last_read) {
            if known_source.as_ptr() == source.as_ptr() && known_owner.as_ptr() == read.as_ptr() {
                let t = time()?; // the lane of the record before
                let known = &mut self.latest[at];
                if t > *known {
                    *known = t;
                }
                return Ok(());
            }
        }
        let owner = read.str()?;
        let owner = owner.to_str()?;
        let t = time()?;
        self.last_read = Some((source.clone().unbind(), read.clone().unbind()));
        let Self { latest, lane, last, .. } = self;
        lane.clear();
        lane.extend([source_text, "|", owner]);
        let at = match last.filter(|&at| latest.get_index(at).is_some_and(|(known, _)| known == lane)) {
            Some(at) => at,
            None => latest
                .get_index_of(lane)
                .unwrap_or_else(|| latest.insert_full(lane.clone(), f64::NEG_INFINITY).0),
        };
        *last = Some(at);
        let known = &mut latest[at];
        if t > *known {
            *known = t;
        }
        Ok(())
    }

    /// Put each lane's time in `out`, in order.
    pub(crate) fn write_to(self, out: &Bound<'_, PyDict>) -> PyResult<()> {
        for (lane, t) in self.latest {
            out.set_item(lane, t)?;
        }
        Ok(())
    }
}

/// Return `{lane: latest time}` over `records` (see `Lanes`).
#[pyfunction]
pub fn latest_by_lane<'py>(py: Python<'py>, records: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    let (k_source, k_start) = (intern!(py, "x_SourceType"), intern!(py, "ChargePeriodStart"));
    let mut times = TimeCache::default();
    let mut lanes = Lanes::default();
    for record in records.try_iter()? {
        let record = record?;
        let record = record.cast::<PyDict>()?;
        let source = item(record, k_source)?;
        lanes.see(record, &source, || times.parse(py, &item(record, k_start)?))?;
    }
    let out = PyDict::new(py);
    lanes.write_to(&out)?;
    Ok(out)
}
