//! The quiet path of an app bucket's two steps, as `DetectorRunner._llm` takes them: `token_runaway`
//! (`TokenRunawayDetector.update` for an app) and `model_switch` (`ModelSwitchDetector.update`). Most app
//! buckets open, grow and resolve nothing: their runaway step only learns (the rate is under the gates, or
//! under `app_ratio` times the baseline), and their model step only moves the mix. Those are stepped here,
//! on the state's values; a bucket that either step might judge, or a state of a shape only the Python step
//! reads, goes to the Python steps (both of them: `AppQuiet::step` returns false). The Python steps are the
//! reference: the same operations in the same order, so the same floats and the same dicts, key for key.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySet, PyString};

use crate::quiet::{alpha, ew, gated_rate, learned_state, only_learns, Learned, RunawayQuiet, Slid};
use crate::record::{at, number_or};
use crate::rounding::{round7, round_to};
use crate::value::joined;

const HOUR_S: f64 = 3600.0;
const RUNAWAY: &str = "runaway";
const MODEL_SWITCH: &str = "model_switch";

/// What the model step's quiet path reads of `ModelSwitchConfig`.
pub struct MixConfig {
    pub price_ratio: f64,
    pub min_shift: f64,
    pub fast_alpha: f64,
    pub slow_alpha: f64,
    pub warmup: i64,
    pub max_models: usize,
}

/// A closed app bucket's figures, as the two steps read them.
pub struct AppBucket<'a> {
    pub app: &'a str,
    pub start: f64,
    pub end: f64,
    pub requests: i64,
    pub cost_usd: f64,
    pub models: &'a [(String, [f64; 3])], // per model, in first-seen order: requests, tokens, USD
}

/// The runner's app states (runaway, model_switch) and its changed states, which the quiet path steps
/// and notes as `_step_key` would.
pub struct AppQuiet {
    pub runaway: Py<PyDict>,
    pub model_switch: Py<PyDict>,
    pub changed: Py<PySet>,
    pub run: RunawayQuiet, // least: min_requests; ratio: app_ratio
    pub mix: MixConfig,
}

impl AppQuiet {
    /// Take both steps of an app bucket here when both are quiet (true); else change nothing (false).
    pub fn step(&self, py: Python<'_>, bucket: &AppBucket<'_>) -> PyResult<bool> {
        let key = PyString::new(py, &joined(&["app=", bucket.app]));
        let (runaway, model_switch) = (self.runaway.bind(py), self.model_switch.bind(py));
        let (Some(run_state), Some(mix_state)) = (state_of(runaway, &key)?, state_of(model_switch, &key)?)
        else {
            return Ok(false); // a new app: its first model step adds its models (the Python step's)
        };
        // one entity dict for both states, as the bucket's `entity` is one
        let entity = PyDict::new(py);
        entity.set_item(intern!(py, "app"), bucket.app)?;
        let Some(run_new) = quiet_app_runaway(&run_state, bucket, &entity, &self.run)? else {
            return Ok(false);
        };
        let Some(mix_new) = quiet_mix(&mix_state, bucket, &entity, &self.mix)? else {
            return Ok(false);
        };
        runaway.set_item(&key, run_new)?;
        model_switch.set_item(&key, mix_new)?;
        let changed = self.changed.bind(py);
        changed.add((intern!(py, RUNAWAY), &key))?;
        changed.add((intern!(py, MODEL_SWITCH), &key))?;
        Ok(true)
    }
}

/// The state of `key` when it is a dict (None: none, or one only the Python step reads).
fn state_of<'py>(
    states: &Bound<'py, PyDict>,
    key: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    Ok(states.get_item(key)?.and_then(|state| state.cast_into::<PyDict>().ok()))
}

/// Python's `str(int(start // 3600 % 24))`: the hour-of-day slot an app bucket learns into.
fn hour_slot(start: f64) -> String {
    let hours = floor_div(start, HOUR_S);
    let slot = modulo(hours, 24.0);
    (slot.trunc() as i64).to_string()
}

/// Python's float `a // b` (`_float_div_mod`).
fn floor_div(a: f64, b: f64) -> f64 {
    let rem = a % b;
    let mut div = (a - rem) / b;
    if rem != 0.0 && ((b < 0.0) != (rem < 0.0)) {
        div -= 1.0;
    }
    if div != 0.0 {
        let mut floor = div.floor();
        if div - floor > 0.5 {
            floor += 1.0;
        }
        floor
    } else {
        0.0f64.copysign(a / b)
    }
}

/// Python's float `a % b` (`float_rem`).
fn modulo(a: f64, b: f64) -> f64 {
    let rem = a % b;
    if rem != 0.0 {
        if (b < 0.0) != (rem < 0.0) {
            rem + b
        } else {
            rem
        }
    } else {
        0.0f64.copysign(b)
    }
}

/// `TokenRunawayDetector.update` for an app bucket that only learns, or None for the Python step.
///
/// Quiet: nothing open or counted (`open`, `hot`), and the rate is under the gates, or there is no
/// baseline yet (an app has no peers), or the rate over the shortest span is under `app_ratio` times the
/// baseline, or the window's rate (the one span an app is judged over, with no lift) is.
fn quiet_app_runaway<'py>(
    state: &Bound<'py, PyDict>,
    bucket: &AppBucket<'_>,
    entity: &Bound<'py, PyDict>,
    c: &RunawayQuiet,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let py = state.py();
    if !only_learns(state)? {
        return Ok(None);
    }
    let (start, end) = (bucket.start, bucket.end);
    let slid = Slid::read(state, end, c)?;
    let own_usd = round7(bucket.cost_usd);
    let (usd, requests) = (slid.usd + own_usd, slid.requests + bucket.requests);
    let (rate, gated) = gated_rate(usd, requests, c);
    let slot = hour_slot(start);
    let hours = match state.get_item(intern!(py, "h"))? {
        Some(hours) => match hours.cast_into::<PyDict>() {
            Ok(hours) => Some(hours),
            Err(_) => return Ok(None),
        },
        None => None,
    };
    let seasonal = match &hours {
        Some(hours) => hours.get_item(&slot)?,
        None => None,
    };
    let learned = Learned::read(state)?;
    if !gated {
        // `_baseline`: the hour of day's once warm, else the app's own (an app has no peers)
        let mean = match &seasonal {
            Some(slot) if slot.is_truthy()? && at(slot, 2)?.extract::<i64>()? >= c.warmup => {
                Some(at(slot, 0)?.extract::<f64>()?)
            }
            _ => learned.own_mean(c),
        };
        if let Some(mean) = mean {
            // no span spends faster than the window over the shortest one; an app's one span to judge
            // (`_judge`) is the window, with no lift, and it is judged only over the ratio bar
            let top_rate = rate / c.min_fraction;
            let judged_rate = usd * (HOUR_S / c.window_s);
            let under = top_rate < c.ratio * mean
                || judged_rate < c.min_usd_per_hour
                || judged_rate < mean * 1.0 + (c.ratio - 1.0) * mean;
            if !under {
                return Ok(None); // judged by count and deviation: the Python step
            }
        }
    }
    let fields = (start, end, bucket.requests, own_usd);
    let Some((new, elapsed)) = learned_state(state, &slid, learned, entity, fields, rate, c)? else {
        return Ok(None);
    };
    // `_learn`'s hour-of-day slot: a plain mean until warm, then time-weighted, as the app's own
    let (m, v, k) = match &seasonal {
        Some(slot) => {
            (at(slot, 0)?.extract::<f64>()?, at(slot, 1)?.extract::<f64>()?, at(slot, 2)?.extract::<i64>()?)
        }
        None => (0.0, 0.0, 0),
    };
    let (m, v) = ew(m, v, rate, alpha(k, elapsed, c));
    let slots = match &hours {
        Some(hours) => hours.copy()?,
        None => PyDict::new(py),
    };
    let learned_slot = PyList::new(
        py,
        [
            round7(m).into_pyobject(py)?.into_any(),
            round7(v).into_pyobject(py)?.into_any(),
            (k + 1).min(1_000_000).into_pyobject(py)?.into_any(),
        ],
    )?;
    slots.set_item(slot, learned_slot)?;
    new.set_item(intern!(py, "h"), slots)?;
    new.set_item(intern!(py, "rate"), rate)?;
    Ok(Some(new))
}

/// `ModelSwitchDetector.update` for an app bucket that opens nothing, or None for the Python step.
///
/// Quiet: no switch open, every model of the bucket already in the app's mix (a new one takes its place
/// in the order of a Python set), at most `max_models` of them, and the new mix is no switch.
fn quiet_mix<'py>(
    state: &Bound<'py, PyDict>,
    bucket: &AppBucket<'_>,
    entity: &Bound<'py, PyDict>,
    c: &MixConfig,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let py = state.py();
    if state.contains(intern!(py, "open"))? {
        return Ok(None);
    }
    let Some(mix) = state.get_item(intern!(py, "mix"))? else {
        return Ok(None);
    };
    let Ok(mix) = mix.cast_into::<PyDict>() else {
        return Ok(None);
    };
    if mix.len() > c.max_models {
        return Ok(None);
    }
    let mut models: Vec<(Bound<'py, PyAny>, String, [f64; 3])> = Vec::with_capacity(mix.len());
    for (name, values) in mix.iter() {
        let Ok(text) = name.cast::<PyString>() else {
            return Ok(None);
        };
        let text = text.to_str()?.to_owned();
        let Ok(values) = values.cast_into::<PyList>() else {
            return Ok(None);
        };
        if values.len() != 3 {
            return Ok(None);
        }
        let read = |i| -> PyResult<f64> { values.get_item(i)?.extract::<f64>() };
        models.push((name.clone(), text, [read(0)?, read(1)?, read(2)?]));
    }
    if bucket.models.iter().any(|(name, _)| !models.iter().any(|(_, known, _)| known == name)) {
        return Ok(None);
    }
    // `sum(v[0] for v in bucket.models.values())`, in order
    let mut total = 0.0;
    for (_, sums) in bucket.models {
        total += sums[0];
    }
    if !total.is_finite() {
        return Ok(None);
    }
    let reqs_here = total.trunc() as i64;
    let total = if total == 0.0 { 1.0 } else { total };
    let n: i64 = number_or(state, intern!(py, "n"), 0)?;
    let seen = if n + reqs_here != 0 { n + reqs_here } else { 1 };
    let per_request = reqs_here as f64 / seen as f64;
    let rate = |a: f64| {
        let by_count = 1.0 - (1.0 - a).powf(reqs_here as f64);
        if per_request > by_count {
            per_request
        } else {
            by_count
        }
    };
    let (fast_a, slow_a) = (rate(c.fast_alpha), rate(c.slow_alpha));
    for (_, name, [fast, slow, price]) in &mut models {
        let (reqs, tokens, usd) = match bucket.models.iter().find(|(model, _)| model == name) {
            Some((_, sums)) => (sums[0], sums[1], sums[2]),
            None => (0.0, 0.0, 0.0),
        };
        let share = reqs / total;
        *fast += fast_a * (share - *fast);
        *slow += slow_a * (share - *slow);
        if tokens > 0.0 {
            *price = if *price == 0.0 { usd / tokens } else { *price + 0.1 * (usd / tokens - *price) };
        }
    }
    let (mut fast_index, mut slow_index) = (0.0, 0.0);
    let mut gain: Option<f64> = None;
    for (_, _, [fast, slow, price]) in &models {
        fast_index += fast * price;
        slow_index += slow * price;
        let g = fast - slow;
        if gain.is_none_or(|best| g > best) {
            gain = Some(g);
        }
    }
    let gain = gain.unwrap_or(0.0);
    if n >= c.warmup && slow_index > 0.0 && fast_index >= c.price_ratio * slow_index && gain >= c.min_shift {
        return Ok(None); // a switch opens: the Python step
    }
    let new_mix = PyDict::new(py);
    for (name, _, values) in &models {
        let rounded = values.map(|x| round_to(x, 9));
        new_mix.set_item(name, PyList::new(py, rounded)?)?;
    }
    let new = state.copy()?;
    new.set_item(intern!(py, "e"), entity)?;
    new.set_item(intern!(py, "last"), bucket.end)?;
    new.set_item(intern!(py, "mix"), new_mix)?;
    new.set_item(intern!(py, "n"), (n + reqs_here).min(1_000_000_000))?;
    Ok(Some(new))
}
