//! The quiet paths of a stepped session's bucket, on its states' dicts: what `DetectorRunner._session`
//! does for a session bucket that opens, grows and resolves nothing. Its runaway step (`quiet.rs`, under
//! its gates: too few requests in the window or too little spend to judge), its app's peers learning it
//! (`Waiting::learn_peers`), and its agent-loop and context-bloat steps here: the same operations in the
//! same order as `AgentLoopDetector.update` and `ContextBloatDetector.update`, on a copy of the state,
//! so the same dict (its keys in the same order). Any other bucket goes to the Python steps.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use crate::buckets::Bucket;
use crate::record::{at, number_or};
use crate::rounding::round7;
use crate::session_chain::SessionQuiet;

/// `AgentLoopDetector.update` for a bucket that opens no loop, with none open; None for the Python step.
pub fn quiet_loop_step<'py>(
    state: &Bound<'py, PyDict>,
    bucket: &Bucket,
    entity: &Bound<'py, PyDict>,
    c: &SessionQuiet,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let py = state.py();
    if state.contains(intern!(py, "open"))? {
        return Ok(None); // it may resolve as quiet, or grow
    }
    let req = number_or(state, intern!(py, "req"), 0i64)? + bucket.requests;
    let usd = round7(number_or(state, intern!(py, "usd"), 0.0)? + bucket.cost_usd);
    let edge = bucket.end - c.loop_window_s;
    // the prompts still in the window, as (key, entry): an entry is replaced, never changed in place
    let mut seen: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)> = Vec::new();
    if let Some(tracked) = state.get_item(intern!(py, "p"))? {
        let Ok(tracked) = tracked.cast_into::<PyDict>() else {
            return Ok(None);
        };
        for (prompt, entry) in tracked.iter() {
            if at(&entry, 1)?.extract::<f64>()? > edge {
                seen.push((prompt, entry));
            }
        }
    }
    for (prompt, count) in &bucket.prompts {
        match seen.iter().position(|(key, _)| key.cast::<PyString>().is_ok_and(|key| key == prompt.as_str()))
        {
            Some(i) => {
                let entry = &seen[i].1;
                let counted = (at(entry, 0)?.extract::<i64>()? + count).into_pyobject(py)?.into_any();
                seen[i].1 = PyList::new(py, [counted, at(entry, 1)?, at(entry, 2)?])?.into_any();
            }
            None => {
                let entry = [
                    count.into_pyobject(py)?.into_any(),
                    bucket.start.into_pyobject(py)?.into_any(),
                    round7(usd - bucket.cost_usd).into_pyobject(py)?.into_any(),
                ];
                seen.push((PyString::new(py, prompt).into_any(), PyList::new(py, entry)?.into_any()));
            }
        }
    }
    if seen.len() > c.max_tracked {
        return Ok(None); // the Python step keeps the most repeated
    }
    let mut top: Option<i64> = None;
    for (_, entry) in &seen {
        let count = at(entry, 0)?.extract::<i64>()?;
        if top.is_none_or(|best| count > best) {
            top = Some(count);
        }
    }
    let unbounded = match state.get_item(intern!(py, "unbounded"))? {
        Some(flag) => flag.is_truthy()?,
        None => false,
    };
    if top.is_some_and(|count| count >= c.repeats) || (req > c.max_requests && !unbounded) {
        return Ok(None); // a loop, or a session that passed max_requests: it opens
    }
    let new = state.copy()?;
    new.set_item(intern!(py, "e"), entity)?;
    new.set_item(intern!(py, "last"), bucket.end)?;
    new.set_item(intern!(py, "req"), req)?;
    new.set_item(intern!(py, "usd"), usd)?;
    let tracked = PyDict::new(py);
    for (prompt, entry) in seen {
        tracked.set_item(prompt, entry)?;
    }
    new.set_item(intern!(py, "p"), tracked)?;
    if !new.contains(intern!(py, "first"))? {
        new.set_item(intern!(py, "first"), bucket.start)?;
    }
    Ok(Some(new))
}

/// `ContextBloatDetector.update` for a bucket that opens no finding, with none open; None for the Python
/// step.
pub fn quiet_bloat_step<'py>(
    state: &Bound<'py, PyDict>,
    bucket: &Bucket,
    entity: &Bound<'py, PyDict>,
    c: &SessionQuiet,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let py = state.py();
    if state.contains(intern!(py, "open"))? {
        return Ok(None); // it may resolve, or grow
    }
    let mut prev: Option<i64> = match state.get_item(intern!(py, "prev"))? {
        Some(prev) if !prev.is_none() => Some(prev.extract()?),
        _ => None,
    };
    let mut run: i64 = number_or(state, intern!(py, "run"), 0)?;
    let mut run_from: Option<i64> = match state.get_item(intern!(py, "run_from"))? {
        Some(from) => Some(from.extract()?),
        None => None,
    };
    let new = state.copy()?;
    new.set_item(intern!(py, "e"), entity)?;
    new.set_item(intern!(py, "last"), bucket.end)?;
    for &size in &bucket.inputs {
        match prev {
            Some(before) if size > before => {
                if run == 0 {
                    new.set_item(intern!(py, "run_from"), before)?;
                    new.set_item(intern!(py, "run_at"), bucket.start)?;
                    run_from = Some(before);
                }
                run += 1;
                let Some(from) = run_from else {
                    return Ok(None); // a rise counted with no start: the Python step's to read
                };
                if run >= c.rising_turns && size as f64 >= c.min_growth * from as f64 {
                    return Ok(None); // it opens
                }
            }
            _ => run = 0,
        }
        prev = Some(size);
    }
    new.set_item(intern!(py, "prev"), prev)?;
    new.set_item(intern!(py, "run"), run)?;
    Ok(Some(new))
}
