//! A released session's pending buckets stepped on Rust values: the quiet paths of its `agent_loop` and
//! `context_bloat` steps (`AgentLoopDetector.update`, `ContextBloatDetector.update`), beside its runaway
//! step's (`quiet::QuietChain`). A session waits while it is too young for any of them to find anything
//! (`detectors.deferred`); when it grows old enough, `DetectorRunner._step_pending` steps its buckets in
//! order from new states and keeps only the last ones. These chains take the same steps, with the same
//! operations in the same order, and make each state's dict once, its keys in the order the Python steps
//! put them in (the saved JSON is the same to the byte). A bucket that would open a finding (never one of
//! a waiting session under the default thresholds) stops a chain: the Python steps then take them all.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::pending_doc::Entry;
use crate::rounding::round7;

/// What the two chains read of `AgentLoopConfig` and `ContextBloatConfig`.
pub struct SessionQuiet {
    pub repeats: i64,
    pub loop_window_s: f64,
    pub max_requests: i64,
    pub max_tracked: usize, // detectors.agent_loop.MAX_TRACKED
    pub rising_turns: i64,
    pub min_growth: f64,
}

/// One tracked prompt of an agent-loop state: `[count, first seen, USD before it]`.
struct Tracked {
    prompt: String,
    count: i64,
    since: f64,
    usd_before: f64,
}

/// A session's agent-loop state made by quiet steps alone from none.
#[derive(Default)]
pub struct LoopChain {
    last: f64,
    req: i64,
    usd: f64,
    tracked: Vec<Tracked>,
    first: Option<f64>,
}

impl LoopChain {
    /// One bucket's step; false (the values left partly stepped) when it would open a loop.
    pub fn step(&mut self, e: &Entry, c: &SessionQuiet) -> bool {
        self.last = e.end;
        self.req += e.requests;
        self.usd = round7(self.usd + e.cost_usd);
        let edge = e.end - c.loop_window_s;
        self.tracked.retain(|t| t.since > edge);
        for (prompt, count) in &e.prompts {
            match self.tracked.iter_mut().find(|t| &t.prompt == prompt) {
                Some(known) => known.count += count,
                None => self.tracked.push(Tracked {
                    prompt: prompt.clone(),
                    count: *count,
                    since: e.start,
                    usd_before: round7(self.usd - e.cost_usd),
                }),
            }
        }
        if self.tracked.len() > c.max_tracked {
            return false; // the Python step keeps the most repeated
        }
        let top = self.tracked.iter().map(|t| t.count).max();
        if top.is_some_and(|count| count >= c.repeats) || self.req > c.max_requests {
            return false; // a loop, or an unbounded session: it opens
        }
        self.first.get_or_insert(e.start);
        true
    }

    /// The state's dict: `e`, `last`, `req`, `usd`, `p`, `first`, as the steps put them.
    pub fn to_dict<'py>(&self, py: Python<'py>, entity: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>> {
        let state = PyDict::new(py);
        state.set_item(intern!(py, "e"), entity)?;
        state.set_item(intern!(py, "last"), self.last)?;
        state.set_item(intern!(py, "req"), self.req)?;
        state.set_item(intern!(py, "usd"), self.usd)?;
        let tracked = PyDict::new(py);
        for t in &self.tracked {
            let entry = PyList::new(
                py,
                [
                    t.count.into_pyobject(py)?.into_any(),
                    t.since.into_pyobject(py)?.into_any(),
                    t.usd_before.into_pyobject(py)?.into_any(),
                ],
            )?;
            tracked.set_item(&t.prompt, entry)?;
        }
        state.set_item(intern!(py, "p"), tracked)?;
        if let Some(first) = self.first {
            state.set_item(intern!(py, "first"), first)?;
        }
        Ok(state)
    }
}

/// A session's context-bloat state made by quiet steps alone from none.
#[derive(Default)]
pub struct BloatChain {
    last: f64,
    stepped: bool,                // `prev` and `run` are set (after the first bucket)
    prev: Option<i64>,            // the last input size (None until one is seen)
    run: i64,                     // rises in a row
    run_from: Option<(i64, f64)>, // `run_from`, `run_at`: where the latest rise began
    run_from_first: bool,         // set in the first bucket, so before `prev` and `run` in the dict
}

impl BloatChain {
    /// One bucket's step; false (the values left partly stepped) when it would open a finding.
    pub fn step(&mut self, e: &Entry, c: &SessionQuiet) -> bool {
        self.last = e.end;
        for &size in &e.inputs {
            match self.prev {
                Some(prev) if size > prev => {
                    if self.run == 0 {
                        if self.run_from.is_none() && !self.stepped {
                            self.run_from_first = true;
                        }
                        self.run_from = Some((prev, e.start));
                    }
                    self.run += 1;
                    let from = self.run_from.map_or(0, |(from, _)| from);
                    if self.run >= c.rising_turns && size as f64 >= c.min_growth * from as f64 {
                        return false; // it opens
                    }
                }
                _ => self.run = 0,
            }
            self.prev = Some(size);
        }
        self.stepped = true;
        true
    }

    /// The state's dict: `e`, `last`, then `run_from` and `run_at` before or after `prev` and `run`, as
    /// the first rise came in the first bucket or later.
    pub fn to_dict<'py>(&self, py: Python<'py>, entity: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>> {
        let state = PyDict::new(py);
        state.set_item(intern!(py, "e"), entity)?;
        state.set_item(intern!(py, "last"), self.last)?;
        let rise = |state: &Bound<'py, PyDict>| -> PyResult<()> {
            if let Some((from, at)) = self.run_from {
                state.set_item(intern!(py, "run_from"), from)?;
                state.set_item(intern!(py, "run_at"), at)?;
            }
            Ok(())
        };
        if self.run_from_first {
            rise(&state)?;
        }
        state.set_item(intern!(py, "prev"), self.prev)?;
        state.set_item(intern!(py, "run"), self.run)?;
        if !self.run_from_first {
            rise(&state)?;
        }
        Ok(state)
    }
}
