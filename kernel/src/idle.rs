//! The quiet path of the idle-GPU step: `IdleGpuDetector.update` for a sample that opens, grows, updates
//! or resolves nothing (no finding open, and neither the idle run nor the hour's mean reaches its bar).
//! The Python step is the reference; any other sample goes to it (`step` returns None).

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyList, PySet, PyString};

use crate::gpu_state::{floor_div, Bars, GpuState, Sample};
use crate::record::{at, number_or, optional_str};
use crate::rounding::round_to;
use crate::FxIndexMap;

const SLOT_S: f64 = 300.0; // detectors.idle_gpu.SLOT_S

struct Override {
    cluster: Option<String>,
    team: Option<String>,
    util_below_pct: Option<f64>,
    for_s: Option<f64>,
}

/// An `IdleGpuConfig` as the quiet path reads it.
#[pyclass(module = "burnwatch_kernel")]
pub struct IdleGpuQuiet {
    util_below_pct: f64,
    for_s: f64,
    underused_below_pct: f64,
    underused_window_s: f64,
    gap_intervals: f64,
    overrides: Vec<Override>,
}

#[pymethods]
impl IdleGpuQuiet {
    /// `config`: an `IdleGpuConfig`.
    #[new]
    fn new(config: &Bound<'_, PyAny>) -> PyResult<Self> {
        let number = |name: &str| -> PyResult<f64> { config.getattr(name)?.extract() };
        let mut overrides = Vec::new();
        for rule in config.getattr("overrides")?.try_iter()? {
            let rule = rule?;
            overrides.push(Override {
                cluster: rule.getattr("cluster")?.extract()?,
                team: rule.getattr("team")?.extract()?,
                util_below_pct: rule.getattr("util_below_pct")?.extract()?,
                for_s: rule.getattr("for_s")?.extract()?,
            });
        }
        Ok(Self {
            util_below_pct: number("util_below_pct")?,
            for_s: number("for_s")?,
            underused_below_pct: number("underused_below_pct")?,
            underused_window_s: number("underused_window_s")?,
            gap_intervals: number("gap_intervals")?,
            overrides,
        })
    }

    /// Apply the GPU samples `items[at..]` in order to `states` (the runner's idle-GPU states, by entity
    /// id `gpu=<gpu>`), as `PartitionDetectors.apply` does one at a time: a sample that ends by its GPU's
    /// `last` is a repeat; a quiet one's state (`step`) replaces the GPU's, which is noted in `changed`
    /// as `("idle_gpu", entity id)`. Stop before the first sample that is not quiet (the Python step's);
    /// return its index (`len(items)` if none) and the samples applied and repeated up to it.
    ///
    /// Each GPU's state is read once and stepped on Rust values (`gpu_state`), and written back once when
    /// the call returns (errors included), in the order the GPUs were first met: what the samples' steps
    /// one by one would leave.
    fn apply_quiet<'py>(
        &self,
        py: Python<'py>,
        states: &Bound<'py, PyDict>,
        changed: &Bound<'py, PySet>,
        items: &Bound<'py, PyList>,
        at: usize,
    ) -> PyResult<(usize, usize, usize)> {
        let mut gpus: FxIndexMap<String, Option<GpuState>> = FxIndexMap::default();
        let outcome = self.apply_in(py, states, changed, items, at, &mut gpus);
        let mut written = Ok(());
        for gpu in gpus.values().flatten() {
            if let Err(error) = gpu.write_back(py, states, changed) {
                written = Err(error);
                break;
            }
        }
        let counts = outcome?;
        written?;
        Ok(counts)
    }

    /// The GPU's new state after the sample `item` (a detector input: `["g", id, start, end, util,
    /// allocated, cost, cluster, team, gpu]`), or None when the sample is not quiet for `state`.
    fn step<'py>(
        &self,
        py: Python<'py>,
        state: Option<Bound<'py, PyDict>>,
        item: &Bound<'py, PyList>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let state = match state {
            Some(state) => state,
            None => PyDict::new(py),
        };
        if state.contains(intern!(py, "open"))? {
            return Ok(None);
        }
        let util_object = item.get_item(4)?;
        if !util_object.is_exact_instance_of::<PyFloat>() {
            return Ok(None); // an int utilization keeps its type in the slots: the Python step
        }
        let start: f64 = item.get_item(2)?.extract()?;
        let end: f64 = item.get_item(3)?.extract()?;
        let util: f64 = util_object.extract()?;
        let allocated = item.get_item(5)?.is_truthy()?;
        let cost: f64 = item.get_item(6)?.extract()?;
        let cluster = item.get_item(7)?;
        let team = item.get_item(8)?;
        let gpu = item.get_item(9)?;
        let new = state.copy()?;
        let interval = if end - start > 1e-9 { end - start } else { 1e-9 };
        if let Some(last) = state.get_item(intern!(py, "last"))? {
            if !last.is_none()
                && start - last.extract::<f64>()? > self.gap_intervals * interval
                && new.contains(intern!(py, "idle"))?
            {
                new.del_item(intern!(py, "idle"))?; // missing samples break an idle run
            }
        }
        let entity = PyDict::new(py);
        entity.set_item(intern!(py, "gpu"), &gpu)?;
        new.set_item(intern!(py, "e"), entity)?;
        new.set_item(intern!(py, "iv"), interval)?;
        new.set_item(intern!(py, "last"), end)?;
        let labels = PyDict::new(py);
        for (name, value) in [("team", &team), ("cluster", &cluster)] {
            if value.is_truthy()? {
                labels.set_item(name, value)?;
            }
        }
        new.set_item(intern!(py, "lab"), labels)?;
        let (util_below, for_s) = self.thresholds(optional_str(&cluster)?, optional_str(&team)?);
        if allocated && util < util_below {
            let idle = match new.get_item(intern!(py, "idle"))? {
                Some(idle) if !idle.is_none() => idle.extract::<f64>()?,
                _ => {
                    new.set_item(intern!(py, "idle"), start)?;
                    new.set_item(intern!(py, "waste"), 0.0)?;
                    start
                }
            };
            let waste: f64 = number_or(&new, intern!(py, "waste"), 0.0)?;
            new.set_item(intern!(py, "waste"), waste + cost)?;
            if end - idle >= for_s - 1e-6 {
                return Ok(None); // an idle GPU finding opens
            }
        } else {
            for key in ["idle", "waste"] {
                if new.contains(key)? {
                    new.del_item(key)?;
                }
            }
        }
        // _underused
        if !allocated {
            if new.contains(intern!(py, "slots"))? {
                new.del_item(intern!(py, "slots"))?;
            }
            return Ok(Some(new));
        }
        let slot = floor_div(start, SLOT_S) * SLOT_S;
        let edge = end - self.underused_window_s - SLOT_S;
        let mut slots: Vec<Bound<'py, PyAny>> = Vec::new();
        if let Some(old) = state.get_item(intern!(py, "slots"))? {
            for entry in old.try_iter()? {
                let entry = entry?;
                if at(&entry, 0)?.extract::<f64>()? > edge {
                    slots.push(entry);
                }
            }
        }
        let (last_sum, last_count) = match slots.last() {
            Some(entry) if at(entry, 0)?.extract::<f64>()? == slot => {
                let (sum, count): (f64, i64) = (at(entry, 1)?.extract()?, at(entry, 2)?.extract()?);
                slots.pop();
                (sum + util, count + 1)
            }
            _ => (util, 1),
        };
        let first = match slots.first() {
            Some(entry) => at(entry, 0)?.extract::<f64>()?,
            None => slot,
        };
        let (mut total, mut count) = (0.0, 0i64);
        for entry in &slots {
            total += at(entry, 1)?.extract::<f64>()?;
            count += at(entry, 2)?.extract::<i64>()?;
        }
        total += last_sum;
        count += last_count;
        let mean = total / count as f64;
        let covered = end - first;
        if covered >= self.underused_window_s && mean < self.underused_below_pct {
            return Ok(None); // a GPU underused finding opens
        }
        let window = PyList::new(py, &slots)?;
        window.append(PyList::new(
            py,
            [
                slot.into_pyobject(py)?.into_any(),
                round_to(last_sum, 3).into_pyobject(py)?.into_any(),
                last_count.into_pyobject(py)?.into_any(),
            ],
        )?)?;
        new.set_item(intern!(py, "slots"), window)?;
        Ok(Some(new))
    }
}

impl IdleGpuQuiet {
    /// `apply_quiet`'s loop; a GPU whose state `GpuState` does not read (None) takes `step` on its dict.
    fn apply_in<'py>(
        &self,
        py: Python<'py>,
        states: &Bound<'py, PyDict>,
        changed: &Bound<'py, PySet>,
        items: &Bound<'py, PyList>,
        at: usize,
        gpus: &mut FxIndexMap<String, Option<GpuState>>,
    ) -> PyResult<(usize, usize, usize)> {
        let (mut applied, mut repeated) = (0, 0);
        let mut key = String::new();
        let bars = Bars {
            underused_below_pct: self.underused_below_pct,
            underused_window_s: self.underused_window_s,
            gap_intervals: self.gap_intervals,
            slot_s: SLOT_S,
        };
        for index in at..items.len() {
            let item = items.get_item(index)?;
            let item = item.cast::<PyList>()?;
            let gpu = item.get_item(9)?;
            let name = gpu.cast::<PyString>()?.to_str()?;
            let mut entity = || {
                key.clear();
                key.push_str("gpu=");
                key.push_str(name);
                PyString::new(py, &key)
            };
            let at = match gpus.get_index_of(name) {
                Some(at) => at,
                None => {
                    let entity = entity();
                    let state = saved_state(states, &entity)?;
                    gpus.insert_full(name.to_owned(), GpuState::load(entity, state)?).0
                }
            };
            let Some(fast) = &mut gpus[at] else {
                // the per-sample path, on the GPU's dict
                let entity = entity();
                let state = saved_state(states, &entity)?;
                if let Some(state) = &state {
                    let last = number_or(state, intern!(py, "last"), f64::NEG_INFINITY)?;
                    if item.get_item(3)?.extract::<f64>()? <= last {
                        repeated += 1;
                        continue;
                    }
                }
                match self.step(py, state, item)? {
                    Some(new) => {
                        states.set_item(&entity, new)?;
                        changed.add((intern!(py, "idle_gpu"), &entity))?;
                        applied += 1;
                        continue;
                    }
                    None => return Ok((index, applied, repeated)),
                }
            };
            if fast.has_state() && item.get_item(3)?.extract::<f64>()? <= fast.last() {
                repeated += 1;
                continue;
            }
            if fast.open {
                return Ok((index, applied, repeated));
            }
            let util = item.get_item(4)?;
            if !util.is_exact_instance_of::<PyFloat>() {
                return Ok((index, applied, repeated)); // an int utilization keeps its type: the Python step
            }
            let sample = Sample {
                start: item.get_item(2)?.extract()?,
                end: item.get_item(3)?.extract()?,
                util: util.extract()?,
                allocated: item.get_item(5)?.is_truthy()?,
                cost: item.get_item(6)?.extract()?,
                cluster: item.get_item(7)?,
                team: item.get_item(8)?,
                gpu,
            };
            let thresholds = self.thresholds(optional_str(&sample.cluster)?, optional_str(&sample.team)?);
            if !fast.step(&bars, thresholds, &sample) {
                return Ok((index, applied, repeated));
            }
            applied += 1;
        }
        Ok((items.len(), applied, repeated))
    }

    /// `IdleGpuConfig.thresholds`: the most specific override's, else the defaults.
    fn thresholds(&self, cluster: Option<&str>, team: Option<&str>) -> (f64, f64) {
        let (mut util, mut span, mut best) = (self.util_below_pct, self.for_s, -1);
        for rule in &self.overrides {
            let skip_cluster =
                matches!(&rule.cluster, Some(c) if !c.is_empty() && Some(c.as_str()) != cluster);
            let skip_team = matches!(&rule.team, Some(t) if !t.is_empty() && Some(t.as_str()) != team);
            if skip_cluster || skip_team {
                continue;
            }
            let rank = (rule.cluster.is_some() as i32) * 2 + rule.team.is_some() as i32;
            if rank > best {
                best = rank;
                util = rule.util_below_pct.unwrap_or(self.util_below_pct);
                span = rule.for_s.unwrap_or(self.for_s);
            }
        }
        (util, span)
    }
}

/// A GPU's saved state in the runner's `states` (None: it has none yet).
fn saved_state<'py>(
    states: &Bound<'py, PyDict>,
    entity: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    Ok(match states.get_item(entity)? {
        Some(state) => Some(state.cast_into::<PyDict>()?),
        None => None,
    })
}
