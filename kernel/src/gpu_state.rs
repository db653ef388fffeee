//! One GPU's idle-GPU state as Rust values, for the quiet steps of one `IdleGpuQuiet.apply_quiet` call.
//!
//! The state is read from its dict once, stepped on these values, and written back once, as
//! `IdleGpuQuiet::step` (the per-sample path, on dicts) would have left it: the same values of the same
//! types, the same keys in the same order (a key deleted and set again moves to the end, as in a dict).
//! Before, every sample copied the dict and made its entity, labels and slot lists again. A state this
//! does not read exactly (a value of another type than the per-sample path writes) is not loaded: its
//! samples take the per-sample path.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use crate::rounding::round_to;

const E: usize = 0;
const IV: usize = 1;
const LAST: usize = 2;
const LAB: usize = 3;
const IDLE: usize = 4;
const WASTE: usize = 5;
const SLOTS: usize = 6;
const NAMES: [&str; 7] = ["e", "iv", "last", "lab", "idle", "waste", "slots"];

/// One 5-minute slot of the underused window: its start, utilization sum and sample count; `kept` is its
/// entry in the loaded dict, written back as it was.
#[derive(Clone, Copy)]
struct Slot {
    start: f64,
    sum: f64,
    count: i64,
    kept: Option<usize>,
}

/// Where one key stands against the dict the call began with.
#[derive(Clone, Copy, Default)]
struct Key {
    in_base: bool,
    present: bool,
    moved: bool,   // deleted since, or added: it is no longer where the loaded dict had it
    written: bool, // set since the load: its value is this struct's
    added: u64,    // when it was last added, for the order of the keys added
}

/// A step's scalar changes: tried on a copy, kept only when the sample is quiet (its slots are built
/// anew by each step, and kept with them).
#[derive(Clone, Copy)]
struct Values {
    keys: [Key; 7],
    added: u64,
    last: Option<f64>,
    iv: f64,
    idle: Option<f64>,
    waste: Option<f64>,
}

impl Values {
    fn set(&mut self, k: usize) {
        let key = &mut self.keys[k];
        key.written = true;
        if !key.present {
            key.present = true;
            key.moved = true;
            self.added += 1;
            key.added = self.added;
        }
    }

    fn delete(&mut self, k: usize) {
        let key = &mut self.keys[k];
        if key.present {
            key.present = false;
            key.moved = true;
        }
    }
}

/// The quiet step's bars other than the idle thresholds (`IdleGpuQuiet`'s; those come per sample).
pub struct Bars {
    pub underused_below_pct: f64,
    pub underused_window_s: f64,
    pub gap_intervals: f64,
    pub slot_s: f64,
}

/// A sample's fields (a detector input `["g", id, start, end, util, allocated, cost, cluster, team,
/// gpu]`), read as `IdleGpuQuiet::step` reads them.
pub struct Sample<'py> {
    pub start: f64,
    pub end: f64,
    pub util: f64,
    pub allocated: bool,
    pub cost: f64,
    pub cluster: Bound<'py, PyAny>,
    pub team: Bound<'py, PyAny>,
    pub gpu: Bound<'py, PyAny>,
}

pub struct GpuState {
    entity: Py<PyString>,
    base: Option<Py<PyDict>>,
    pub open: bool,
    original: Vec<Py<PyAny>>,
    values: Values,
    slots: Vec<Slot>, // meaningful while the `slots` key is present
    labels: Option<(Py<PyAny>, Py<PyAny>, Py<PyAny>)>, // the last applied sample's gpu, team and cluster
    pub applied: bool,
}

impl GpuState {
    /// Load a GPU's state (None: it has none yet); Ok(None) when a value is not of a type read here.
    pub fn load(entity: Bound<'_, PyString>, state: Option<Bound<'_, PyDict>>) -> PyResult<Option<Self>> {
        let mut values =
            Values { keys: [Key::default(); 7], added: 0, last: None, iv: 0.0, idle: None, waste: None };
        let mut slots_read = Vec::new();
        let mut original = Vec::new();
        let mut open = false;
        if let Some(state) = &state {
            let py = state.py();
            for (k, name) in NAMES.iter().enumerate() {
                let present = state.contains(name)?;
                values.keys[k] = Key { in_base: present, present, ..Key::default() };
            }
            open = state.contains(intern!(py, "open"))?;
            let number = |name: &Bound<'_, PyString>| -> PyResult<Option<Option<f64>>> {
                Ok(match state.get_item(name)? {
                    None => Some(None),
                    Some(value) if value.is_none() => None,
                    Some(value) => value.extract::<f64>().ok().map(Some),
                })
            };
            let (Some(last), Some(waste)) = (number(intern!(py, "last"))?, number(intern!(py, "waste"))?)
            else {
                return Ok(None);
            };
            values.last = last;
            values.waste = waste;
            values.idle = match state.get_item(intern!(py, "idle"))? {
                Some(idle) if !idle.is_none() => match idle.extract::<f64>() {
                    Ok(idle) => Some(idle),
                    Err(_) => return Ok(None),
                },
                _ => None,
            };
            if let Some(slots) = state.get_item(intern!(py, "slots"))? {
                let Ok(entries) = slots.try_iter() else { return Ok(None) };
                for entry in entries {
                    let entry = entry?;
                    let read = || -> PyResult<(f64, f64, i64)> {
                        Ok((
                            entry.get_item(0)?.extract()?,
                            entry.get_item(1)?.extract()?,
                            entry.get_item(2)?.extract()?,
                        ))
                    };
                    let Ok((start, sum, count)) = read() else { return Ok(None) };
                    slots_read.push(Slot { start, sum, count, kept: Some(original.len()) });
                    original.push(entry.unbind());
                }
            }
        }
        Ok(Some(Self {
            entity: entity.unbind(),
            base: state.map(Bound::unbind),
            open,
            original,
            values,
            slots: slots_read,
            labels: None,
            applied: false,
        }))
    }

    /// Whether it has a state: loaded with one, or made by a step since.
    pub fn has_state(&self) -> bool {
        self.base.is_some() || self.applied
    }

    /// Its last sample's end (`state.get("last", -inf)`).
    pub fn last(&self) -> f64 {
        self.values.last.unwrap_or(f64::NEG_INFINITY)
    }

    /// `IdleGpuQuiet::step` on these values: true, and the step kept, when the sample is quiet.
    pub fn step(&mut self, bars: &Bars, thresholds: (f64, f64), sample: &Sample<'_>) -> bool {
        let Sample { start, end, util, allocated, cost, .. } = *sample;
        let mut new = self.values;
        let interval = if end - start > 1e-9 { end - start } else { 1e-9 };
        if let Some(last) = new.last {
            if start - last > bars.gap_intervals * interval && new.keys[IDLE].present {
                new.delete(IDLE); // missing samples break an idle run
                new.idle = None;
            }
        }
        for k in [E, IV, LAST, LAB] {
            new.set(k);
        }
        new.iv = interval;
        new.last = Some(end);
        let (util_below, for_s) = thresholds;
        if allocated && util < util_below {
            let idle = match new.idle {
                Some(idle) => idle,
                None => {
                    new.set(IDLE);
                    new.idle = Some(start);
                    new.set(WASTE);
                    new.waste = Some(0.0);
                    start
                }
            };
            let waste = new.waste.unwrap_or(0.0);
            new.set(WASTE);
            new.waste = Some(waste + cost);
            if end - idle >= for_s - 1e-6 {
                return false; // an idle GPU finding opens
            }
        } else {
            for k in [IDLE, WASTE] {
                new.delete(k);
            }
            new.idle = None;
            new.waste = None;
        }
        if allocated {
            let slot = floor_div(start, bars.slot_s) * bars.slot_s;
            let edge = end - bars.underused_window_s - bars.slot_s;
            let mut slots: Vec<Slot> = if new.keys[SLOTS].present {
                self.slots.iter().filter(|s| s.start > edge).copied().collect()
            } else {
                Vec::new()
            };
            let (last_sum, last_count) = match slots.last() {
                Some(s) if s.start == slot => {
                    let sums = (s.sum + util, s.count + 1);
                    slots.pop();
                    sums
                }
                _ => (util, 1),
            };
            let first = slots.first().map_or(slot, |s| s.start);
            let (mut total, mut count) = (0.0, 0i64);
            for s in &slots {
                total += s.sum;
                count += s.count;
            }
            total += last_sum;
            count += last_count;
            let mean = total / count as f64;
            if end - first >= bars.underused_window_s && mean < bars.underused_below_pct {
                return false; // a GPU underused finding opens
            }
            slots.push(Slot { start: slot, sum: round_to(last_sum, 3), count: last_count, kept: None });
            new.set(SLOTS);
            self.slots = slots;
        } else {
            new.delete(SLOTS);
            self.slots.clear();
        }
        self.values = new;
        self.labels = Some((
            sample.gpu.clone().unbind(),
            sample.team.clone().unbind(),
            sample.cluster.clone().unbind(),
        ));
        self.applied = true;
        true
    }

    /// Write the state back into `states` (noted in `changed`) if a step changed it.
    pub fn write_back(
        &self,
        py: Python<'_>,
        states: &Bound<'_, PyDict>,
        changed: &Bound<'_, pyo3::types::PySet>,
    ) -> PyResult<()> {
        if !self.applied {
            return Ok(());
        }
        let new = match &self.base {
            Some(base) => base.bind(py).copy()?,
            None => PyDict::new(py),
        };
        let keys = &self.values.keys;
        for (k, key) in keys.iter().enumerate() {
            if key.in_base && (key.moved || !key.present) {
                new.del_item(NAMES[k])?;
            }
        }
        let mut added: Vec<usize> = (0..NAMES.len()).filter(|&k| keys[k].present && keys[k].moved).collect();
        added.sort_by_key(|&k| keys[k].added);
        let in_place = (0..NAMES.len()).filter(|&k| keys[k].present && !keys[k].moved && keys[k].written);
        for k in in_place.chain(added) {
            new.set_item(NAMES[k], self.value(py, k)?)?;
        }
        let entity = self.entity.bind(py);
        states.set_item(entity, new)?;
        changed.add((intern!(py, "idle_gpu"), entity))?;
        Ok(())
    }

    fn value<'py>(&self, py: Python<'py>, k: usize) -> PyResult<Bound<'py, PyAny>> {
        let v = &self.values;
        let (gpu, team, cluster) = self.labels.as_ref().expect("a step has set the labels");
        Ok(match k {
            E => {
                let entity = PyDict::new(py);
                entity.set_item(intern!(py, "gpu"), gpu.bind(py))?;
                entity.into_any()
            }
            IV => v.iv.into_pyobject(py)?.into_any(),
            LAST => v.last.expect("a step has set it").into_pyobject(py)?.into_any(),
            LAB => {
                let labels = PyDict::new(py);
                for (name, value) in [("team", team.bind(py)), ("cluster", cluster.bind(py))] {
                    if value.is_truthy()? {
                        labels.set_item(name, value)?;
                    }
                }
                labels.into_any()
            }
            IDLE => v.idle.expect("set with a value").into_pyobject(py)?.into_any(),
            WASTE => v.waste.expect("set with a value").into_pyobject(py)?.into_any(),
            _ => {
                let slots = PyList::empty(py);
                for slot in &self.slots {
                    match slot.kept {
                        Some(at) => slots.append(self.original[at].bind(py))?,
                        None => slots.append(PyList::new(
                            py,
                            [
                                slot.start.into_pyobject(py)?.into_any(),
                                slot.sum.into_pyobject(py)?.into_any(),
                                slot.count.into_pyobject(py)?.into_any(),
                            ],
                        )?)?,
                    }
                }
                slots.into_any()
            }
        })
    }
}

/// Python's `a // b` for floats (`float_floor_div`): floor of the exact quotient, as CPython rounds it.
pub fn floor_div(a: f64, b: f64) -> f64 {
    let rem = a % b; // fmod
    let mut div = (a - rem) / b;
    if rem != 0.0 && ((b < 0.0) != (rem < 0.0)) {
        div -= 1.0;
    }
    if div != 0.0 {
        let floor = div.floor();
        if div - floor > 0.5 {
            floor + 1.0
        } else {
            floor
        }
    } else {
        0.0_f64.copysign(a / b)
    }
}
