//! The quiet path of a user's or a session's runaway step: `TokenRunawayDetector.update` for a bucket
//! that nothing can flag, with nothing open or counted: too few requests in the window or too little
//! spend, or (a user's) a rate under `user_ratio` times its own learned baseline (no span is then judged).
//! Such a bucket is only learned: the window slides, the decayed sums move on and the baseline learns the
//! rate. The Python step is the reference; any other bucket goes to it (`quiet_runaway_step` returns
//! None). The pieces serve an app's quiet step too (`app_quiet.rs`).

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use crate::pending_doc::window_entry;
use crate::record::{at, is_text, number_or};
use crate::rounding::round7;

const HOUR_S: f64 = 3600.0;

/// What a quiet path reads of `RunawayConfig`, for one scope (a user's, an app's).
pub struct RunawayQuiet {
    pub window_s: f64,
    pub least: i64, // the scope's least requests in a window: user_min_requests, min_requests
    pub min_usd_per_hour: f64,
    pub min_fraction: f64, // min(scan_fractions)
    pub tau_s: f64,        // baseline_tau_s
    pub warmup: i64,
    pub ratio: f64, // the scope's ratio: user_ratio, app_ratio
}

impl RunawayQuiet {
    /// Read a scope's from a `RunawayConfig`: `least` and `ratio` name its fields for the scope
    /// (`user_min_requests` and `user_ratio` for users, `min_requests` and `app_ratio` for apps).
    pub fn read(config: &Bound<'_, PyAny>, least: &str, ratio: &str) -> PyResult<Self> {
        let number = |name: &str| -> PyResult<f64> { config.getattr(name)?.extract() };
        let fractions: Vec<f64> = config.getattr("scan_fractions")?.extract()?;
        Ok(RunawayQuiet {
            window_s: number("window_s")?,
            least: config.getattr(least)?.extract()?,
            min_usd_per_hour: number("min_usd_per_hour")?,
            min_fraction: fractions.iter().copied().fold(f64::INFINITY, f64::min),
            tau_s: number("baseline_tau_s")?,
            warmup: config.getattr("warmup")?.extract()?,
            ratio: number(ratio)?,
        })
    }
}

/// `detectors.base.time_rate`: the per-second rate of a decayed sum begun at `since`.
pub(crate) fn time_rate(total: f64, since: f64, now: f64, tau_s: f64) -> f64 {
    let span = now - since;
    let norm = if span > 0.0 { tau_s * -(-span / tau_s).exp_m1() } else { 0.0 };
    if norm > 0.0 {
        total / norm
    } else {
        0.0
    }
}

/// The window's rate in USD per hour, and whether the gates (`user_min_requests`, `min_usd_per_hour`)
/// keep it from being judged, for the kept entries' sums `usd` and `requests` with the bucket's own added.
pub(crate) fn gated_rate(usd: f64, requests: i64, c: &RunawayQuiet) -> (f64, bool) {
    let rate = usd / c.window_s * HOUR_S;
    (rate, requests < c.least || rate / c.min_fraction < c.min_usd_per_hour)
}

/// What a runaway state has learned (`q0`, `ql`, `uc`, `qc`, `lt`, `m`, `v`, `n`): the decayed sums of
/// what left the window, and the baseline of the rate. Every quiet path (a user's state's dict, a chain of
/// Rust values, an app's state) steps it with these functions, so their floats are the same.
#[derive(Default)]
pub(crate) struct Learned {
    q0: Option<f64>,
    ql: f64,
    uc: f64,
    qc: f64,
    pub(crate) lt: Option<f64>,
    m: f64,
    v: f64,
    n: i64,
}

impl Learned {
    pub(crate) fn read(state: &Bound<'_, PyDict>) -> PyResult<Self> {
        let py = state.py();
        let optional = |key| -> PyResult<Option<f64>> {
            state.get_item(key)?.map(|value| value.extract::<f64>()).transpose()
        };
        Ok(Learned {
            q0: optional(intern!(py, "q0"))?,
            ql: number_or(state, intern!(py, "ql"), 0.0)?,
            uc: number_or(state, intern!(py, "uc"), 0.0)?,
            qc: number_or(state, intern!(py, "qc"), 0.0)?,
            lt: optional(intern!(py, "lt"))?,
            m: number_or(state, intern!(py, "m"), 0.0)?,
            v: number_or(state, intern!(py, "v"), 0.0)?,
            n: number_or(state, intern!(py, "n"), 0)?,
        })
    }

    /// Set these keys on `state`, in the order a step's dict has them (a key it had keeps its place).
    pub(crate) fn write(&self, state: &Bound<'_, PyDict>) -> PyResult<()> {
        let py = state.py();
        if let Some(q0) = self.q0 {
            state.set_item(intern!(py, "q0"), q0)?;
            state.set_item(intern!(py, "ql"), self.ql)?;
            state.set_item(intern!(py, "uc"), self.uc)?;
            state.set_item(intern!(py, "qc"), self.qc)?;
        }
        if let Some(lt) = self.lt {
            state.set_item(intern!(py, "lt"), lt)?;
        }
        state.set_item(intern!(py, "m"), self.m)?;
        state.set_item(intern!(py, "v"), self.v)?;
        state.set_item(intern!(py, "n"), self.n)
    }

    /// Whether a bucket under neither gate is still unjudged: its own baseline (`_baseline`; a user has no
    /// hour-of-day slot and no peers) is not warm yet, or `ratio` times it is above the fastest rate.
    fn unjudged(&self, rate: f64, c: &RunawayQuiet) -> bool {
        match self.own_mean(c) {
            None => true, // no baseline: only learned
            Some(mean) => rate / c.min_fraction < c.ratio * mean,
        }
    }

    /// The own baseline's mean in USD per hour (`_baseline`'s "own" basis), None while it is not warm.
    pub(crate) fn own_mean(&self, c: &RunawayQuiet) -> Option<f64> {
        let learned_s = match self.q0 {
            Some(q0) => self.ql - q0,
            None => c.window_s,
        };
        if !(self.n >= c.warmup && learned_s >= c.window_s) {
            return None;
        }
        Some(match self.q0 {
            Some(q0) => time_rate(self.uc, q0, self.ql, c.tau_s) * HOUR_S,
            None => self.m,
        })
    }

    /// `_count`: the buckets that left the window (`(end, usd, requests)`) into the decayed sums, then
    /// on to a window before `end`.
    pub(crate) fn count(
        &mut self,
        start: f64,
        end: f64,
        dropped: impl IntoIterator<Item = (f64, f64, f64)>,
        c: &RunawayQuiet,
    ) {
        if self.q0.is_none() {
            self.q0 = Some(start);
            self.ql = start;
            self.uc = 0.0;
            self.qc = 0.0;
        }
        for (to, usd, requests) in dropped {
            self.advance(to, usd, requests, c);
        }
        let upto = end - c.window_s;
        if upto > self.ql {
            self.advance(upto, 0.0, 0.0, c);
        }
    }

    /// `_advance`, learning: both sums decay with one factor, then add what left the window.
    fn advance(&mut self, to: f64, usd: f64, requests: f64, c: &RunawayQuiet) {
        if to > self.ql {
            let decay = (-(to - self.ql) / c.tau_s).exp();
            self.uc = self.uc * decay + usd;
            self.qc = self.qc * decay + requests;
            self.ql = to;
        }
    }

    /// `_learn` (no hour-of-day slot for a user): the baseline's mean and variance take the rate.
    /// Return the seconds elapsed since the last lesson, which an app's hour-of-day slot learns with too.
    pub(crate) fn learn(&mut self, rate: f64, end: f64, c: &RunawayQuiet) -> f64 {
        let elapsed = end - self.lt.unwrap_or(end);
        let elapsed = if elapsed > 0.0 { elapsed } else { 0.0 };
        self.lt = Some(end);
        (self.m, self.v) = ew(self.m, self.v, rate, alpha(self.n, elapsed, c));
        self.n = (self.n + 1).min(1_000_000);
        elapsed
    }
}

/// `_learn`'s learning rate after `n` lessons: a plain mean until warm, then time-weighted.
pub(crate) fn alpha(n: i64, elapsed: f64, c: &RunawayQuiet) -> f64 {
    if n < c.warmup {
        1.0 / (n + 1) as f64
    } else {
        1.0 - (-elapsed / c.tau_s).exp()
    }
}

/// `detectors.base.ew`: one step of an exponentially weighted mean and variance.
pub(crate) fn ew(mean: f64, var: f64, x: f64, alpha: f64) -> (f64, f64) {
    let diff = x - mean;
    let incr = alpha * diff;
    (mean + incr, (1.0 - alpha) * (var + diff * incr))
}

/// `detectors.token_runaway.slide` over a state's window (a list of `[end, usd, requests, start]` lists,
/// and a held flag on an entry never learned): where the entries that leave it end, and the sums of those
/// that stay, before the new bucket's own are added.
pub(crate) struct Slid<'py> {
    kept: Bound<'py, PyList>,
    cut: usize,
    pub(crate) usd: f64,
    pub(crate) requests: i64,
}

impl<'py> Slid<'py> {
    pub(crate) fn read(state: &Bound<'py, PyDict>, end: f64, c: &RunawayQuiet) -> PyResult<Self> {
        let py = state.py();
        let kept = match state.get_item(intern!(py, "w"))? {
            Some(window) => window.cast_into::<PyList>()?,
            None => PyList::empty(py),
        };
        let edge = end - c.window_s;
        let size = kept.len();
        let mut cut = 0;
        while cut < size && at(&kept.get_item(cut)?, 0)?.extract::<f64>()? <= edge {
            cut += 1;
        }
        let (mut usd, mut requests) = (0.0, 0i64);
        for i in cut..size {
            let entry = kept.get_item(i)?;
            usd += at(&entry, 1)?.extract::<f64>()?;
            requests += at(&entry, 2)?.extract::<i64>()?;
        }
        Ok(Slid { kept, cut, usd, requests })
    }

    /// The entries that leave the window, `(end, usd, requests)`; None when one was held while flagged
    /// (it adds the expected traffic, not its own: the Python step's).
    pub(crate) fn dropped(&self) -> PyResult<Option<Vec<(f64, f64, f64)>>> {
        let mut dropped = Vec::with_capacity(self.cut);
        for i in 0..self.cut {
            let entry = self.kept.get_item(i)?;
            if entry.len()? >= 5 && !at(&entry, 4)?.is_truthy()? {
                return Ok(None);
            }
            dropped.push((
                at(&entry, 0)?.extract::<f64>()?,
                at(&entry, 1)?.extract::<f64>()?,
                at(&entry, 2)?.extract::<f64>()?,
            ));
        }
        Ok(Some(dropped))
    }

    /// The new window: the entries that stay, then the bucket's own.
    pub(crate) fn window(&self, own: &(f64, f64, i64, f64)) -> PyResult<Bound<'py, PyList>> {
        let window = PyList::empty(self.kept.py());
        for i in self.cut..self.kept.len() {
            window.append(self.kept.get_item(i)?)?;
        }
        window.append(window_entry(self.kept.py(), own)?)?;
        Ok(window)
    }
}

/// A user's or a session's runaway state made by quiet steps alone from none, as Rust values: what
/// `quiet_runaway_step` writes into the state's dict, step after step, without a dict made at each (a released
/// entity's pending buckets, `Waiting::release_quietly`, of which only the last state is kept).
#[derive(Default)]
pub struct QuietChain {
    last: f64,
    window: Vec<(f64, f64, i64, f64)>, // w: (end, USD rounded to 7 places, requests, start)
    learned: Learned,
    rate: f64,
}

impl QuietChain {
    /// `quiet_runaway_step` on these values: false (and the values left partly stepped) when the bucket
    /// is not quiet. The same operations in the same order, so the same floats. `own_baseline`: a bucket
    /// over the gates is still quiet while the own baseline leaves it unjudged (a user's; a session's is
    /// judged against its app's peers then, so it is not quiet).
    pub fn step(
        &mut self,
        (start, end, bucket_requests, cost_usd): (f64, f64, i64, f64),
        c: &RunawayQuiet,
        own_baseline: bool,
    ) -> bool {
        let edge = end - c.window_s;
        let cut = self.window.iter().take_while(|entry| entry.0 <= edge).count();
        let (mut usd, mut requests) = (0.0, 0i64);
        for entry in &self.window[cut..] {
            usd += entry.1;
            requests += entry.2;
        }
        let own_usd = round7(cost_usd);
        let (rate, gated) = gated_rate(usd + own_usd, requests + bucket_requests, c);
        let quiet = gated || own_baseline && self.learned.unjudged(rate, c);
        if !quiet {
            return false;
        }
        self.last = end;
        let dropped: Vec<(f64, f64, i64, f64)> = self.window.drain(..cut).collect();
        self.window.push((end, own_usd, bucket_requests, start));
        let dropped = dropped.into_iter().map(|(to, usd, requests, _)| (to, usd, requests as f64));
        self.learned.count(start, end, dropped, c);
        self.learned.learn(rate, end, c);
        self.rate = rate;
        true
    }

    /// The state's dict after one step or more, its keys in the order the steps' dicts have them (the
    /// saved JSON is the same).
    pub fn to_dict<'py>(&self, py: Python<'py>, entity: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>> {
        let state = PyDict::new(py);
        state.set_item(intern!(py, "e"), entity)?;
        state.set_item(intern!(py, "last"), self.last)?;
        let window = PyList::empty(py);
        for entry in &self.window {
            window.append(window_entry(py, entry)?)?;
        }
        state.set_item(intern!(py, "w"), window)?;
        self.learned.write(&state)?;
        state.set_item(intern!(py, "rate"), self.rate)?;
        Ok(state)
    }
}

/// A user's or a session's entity key, as `LlmBucket.entity` gives it: `{"app": app, "user": user}` or
/// `{"app": app, "session": session}`. Made when a step is quiet, unless the state's own is that dict
/// already (same keys, order and values: what the step writes is the same to the byte).
pub struct Entity<'a> {
    pub app: &'a str,
    pub scope: &'static str, // "user" or "session"
    pub key: &'a str,
}

impl Entity<'_> {
    pub(crate) fn for_state<'py>(self, state: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>> {
        let Entity { app, scope, key } = self;
        let py = state.py();
        let scope_name = if scope == "user" { intern!(py, "user") } else { intern!(py, "session") };
        if let Some(known) = state.get_item(intern!(py, "e"))? {
            if let Ok(known) = known.cast_into::<PyDict>() {
                let mut items = known.iter();
                let same = known.len() == 2
                    && matches!(items.next(), Some((k, v)) if is(&k, intern!(py, "app"))? && is_text(&v, app)?)
                    && matches!(items.next(), Some((k, v)) if is(&k, scope_name)? && is_text(&v, key)?);
                if same {
                    return Ok(known);
                }
            }
        }
        let entity = PyDict::new(py);
        entity.set_item(intern!(py, "app"), app)?;
        entity.set_item(scope_name, key)?;
        Ok(entity)
    }
}

/// `key == name` for a dict key and an interned name: the same object, most often.
fn is(key: &Bound<'_, PyAny>, name: &Bound<'_, PyString>) -> PyResult<bool> {
    Ok(key.as_ptr() == name.as_ptr() || key.eq(name)?)
}

/// The new runaway state of a user or a session after a quiet bucket `(start, end, requests, cost_usd)`,
/// and its rate; None when the bucket is not quiet (or the state is of a shape only the Python step
/// reads). `own_baseline`: as `QuietChain::step`'s (a user's; a session over its gates is judged).
pub fn quiet_runaway_step<'py>(
    py: Python<'py>,
    state: &Bound<'py, PyDict>,
    (start, end, bucket_requests, cost_usd): (f64, f64, i64, f64),
    entity: Entity<'_>,
    c: &RunawayQuiet,
    own_baseline: bool,
) -> PyResult<Option<(Bound<'py, PyDict>, f64)>> {
    if !only_learns(state)? {
        return Ok(None);
    }
    let slid = Slid::read(state, end, c)?;
    let own_usd = round7(cost_usd);
    let (rate, gated) = gated_rate(slid.usd + own_usd, slid.requests + bucket_requests, c);
    let learned = Learned::read(state)?;
    if !(gated || own_baseline && learned.unjudged(rate, c)) {
        return Ok(None); // judged against its baseline or its peers: the Python step
    }
    let entity = entity.for_state(state)?;
    let fields = (start, end, bucket_requests, own_usd);
    let Some((new, _)) = learned_state(state, &slid, learned, &entity, fields, rate, c)? else {
        return Ok(None);
    };
    new.set_item(intern!(py, "rate"), rate)?;
    Ok(Some((new, rate)))
}

/// Whether a runaway state may take a quiet path: nothing open or counted (`open`, `hot`), and not of the
/// shape before the decayed sums (`mq`), which only the Python step reads.
pub(crate) fn only_learns(state: &Bound<'_, PyDict>) -> PyResult<bool> {
    let py = state.py();
    Ok(!(state.contains(intern!(py, "open"))?
        || state.contains(intern!(py, "hot"))?
        || state.contains(intern!(py, "mq"))?))
}

/// A quiet bucket `(start, end, requests, USD rounded to 7 places)` learned into a copy of `state`: the
/// entity and `last` stamped, the window slid (`slid`), `cs` dropped, the decayed sums moved on and the
/// baseline learned, the keys set as the Python step sets them; `rate` is the caller's to set, last.
/// Return it and the seconds since the last lesson (`Learned::learn`); None when an entry leaving the
/// window was held while flagged.
pub(crate) fn learned_state<'py>(
    state: &Bound<'py, PyDict>,
    slid: &Slid<'py>,
    mut learned: Learned,
    entity: &Bound<'py, PyDict>,
    (start, end, requests, own_usd): (f64, f64, i64, f64),
    rate: f64,
    c: &RunawayQuiet,
) -> PyResult<Option<(Bound<'py, PyDict>, f64)>> {
    let py = state.py();
    let Some(dropped) = slid.dropped()? else {
        return Ok(None);
    };
    let new = state.copy()?;
    new.set_item(intern!(py, "e"), entity)?;
    new.set_item(intern!(py, "last"), end)?;
    new.set_item(intern!(py, "w"), slid.window(&(end, own_usd, requests, start))?)?;
    if new.contains(intern!(py, "cs"))? {
        new.del_item(intern!(py, "cs"))?;
    }
    learned.count(start, end, dropped, c);
    let elapsed = learned.learn(rate, end, c);
    learned.write(&new)?;
    Ok(Some((new, elapsed)))
}
