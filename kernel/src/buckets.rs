//! The LLM bucketer: requests folded into session, user and app buckets, the closed ones returned in
//! closing order, as `detectors.buckets.LlmBucketer` does (the Python class is the reference).
//!
//! A request finds its bucket by (scope, entity key, bucket start); open buckets wait by end time, so a
//! flush touches only the buckets it closes. Sums are kept as the Python class keeps them: counts and
//! tokens as integers, USD and the per-model figures as floats added in arrival order, session inputs and
//! prompts and app models in first-seen order. A closed bucket goes back to Python as a
//! `detectors.buckets.LlmBucket`.

use std::collections::hash_map::Entry;
use std::collections::BTreeMap;

use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PySet, PyString, PyTuple};
use rustc_hash::FxHashMap;

use crate::app_quiet::{AppBucket, AppQuiet, MixConfig};
use crate::peers::PeerConfig;
use crate::pending::{Outcome, Waiting};
use crate::quiet::RunawayQuiet;
use crate::requests::{as_requests, not_requests, Request};
use crate::session_chain::SessionQuiet;

pub(crate) const SESSION: usize = 0;
pub(crate) const USER: usize = 1;
const APP: usize = 2;
const SCOPES: [&str; 3] = ["session", "user", "app"];
/// Where each scope sorts among buckets that end together: by name, as the Python sort compares them.
const SCOPE_ORDER: [u8; 3] = [1, 2, 0];

fn overflow() -> PyErr {
    PyOverflowError::new_err("an LLM bucket's token count passed 2**63")
}

/// A float as an integer in the same order (IEEE total order), to key maps by time.
fn ordered(x: f64) -> i64 {
    let bits = x.to_bits() as i64;
    bits ^ ((((bits >> 63) as u64) >> 1) as i64)
}

pub(crate) struct Bucket {
    pub(crate) scope: usize,
    pub(crate) key: Py<PyAny>,
    pub(crate) app: Py<PyAny>,
    pub(crate) team: Py<PyAny>,
    pub(crate) start: f64,
    pub(crate) end: f64,
    pub(crate) requests: i64,
    pub(crate) input_tokens: i64,
    pub(crate) output_tokens: i64,
    pub(crate) cost_usd: f64,
    pub(crate) inputs: Vec<i64>,
    pub(crate) prompts: Vec<(String, i64)>,
    models: Vec<(String, [f64; 3])>,
}

type Slot = (usize, String, i64); // scope, entity key, ordered(start)

/// One request's `LlmUsage` fields as `fold_usage` reads them; `keys` by scope (session, user, app).
#[derive(Clone, Copy)]
struct Usage<'a, 'py> {
    time: f64,
    keys: [&'a Bound<'py, PyAny>; 3],
    model: &'a Bound<'py, PyAny>,
    input_tokens: i64,
    output_tokens: i64,
    cost_usd: f64,
    prompt: &'a Bound<'py, PyAny>,
    team: &'a Bound<'py, PyAny>,
}

#[pyclass(module = "burnwatch_kernel")]
pub struct LlmBucketer {
    widths: [f64; 3],
    max_inputs: usize,  // detectors.buckets.MAX_INPUTS: input sizes a session bucket keeps
    max_prompts: usize, // detectors.buckets.MAX_PROMPTS: prompts a session bucket counts
    open: FxHashMap<Slot, Bucket>,
    ends: BTreeMap<i64, (f64, Vec<Slot>)>, // ordered(end) -> the end, and the open buckets that end then
    make: Py<PyAny>,                       // detectors.buckets.LlmBucket
    no_inputs: Py<PyAny>,                  // the shared empty containers of scopes that fill none
    no_prompts: Py<PyAny>,
    no_models: Py<PyAny>,
    waiting: Option<Waiting>, // young sessions and users wait here (`wait`), else in the Python runner
    apps: Option<AppQuiet>,   // app buckets that only learn are stepped here (`step_apps`)
}

#[pymethods]
impl LlmBucketer {
    /// `config`: a `BucketConfig` (`session_s`, `scope_s` for users, `app_s`).
    #[new]
    fn new(py: Python<'_>, config: &Bound<'_, PyAny>) -> PyResult<Self> {
        let module = py.import("detectors.buckets")?;
        let width = |name: &str| -> PyResult<f64> { config.getattr(name)?.extract() };
        Ok(Self {
            widths: [width("session_s")?, width("scope_s")?, width("app_s")?],
            max_inputs: module.getattr("MAX_INPUTS")?.extract()?,
            max_prompts: module.getattr("MAX_PROMPTS")?.extract()?,
            open: FxHashMap::default(),
            ends: BTreeMap::new(),
            make: module.getattr("LlmBucket")?.unbind(),
            no_inputs: module.getattr("_NO_INPUTS")?.unbind(),
            no_prompts: module.getattr("_NO_PROMPTS")?.unbind(),
            no_models: module.getattr("_NO_MODELS")?.unbind(),
            waiting: None,
            apps: None,
        })
    }

    /// Fold one request (an `LlmUsage`) into its session, user and app buckets.
    fn add(&mut self, usage: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.fold(|i| usage.get_item(i))
    }

    /// Fold the requests of detector inputs, in order, as `add` folds each one's `LlmUsage`: `chunks` is
    /// a list of chunks, each a list of `["u", id, *LlmUsage fields]` lists or a `Requests` (a run's, from
    /// `route_runs`). No Python tuple is made per request, and none of a `Requests`' lists.
    fn add_inputs(&mut self, chunks: &Bound<'_, PyList>) -> PyResult<()> {
        let py = chunks.py();
        for chunk in chunks.iter() {
            if let Some(requests) = as_requests(&chunk) {
                for request in &requests.get().items {
                    self.fold_request(py, request)?;
                }
                continue;
            }
            let items = chunk.cast::<PyList>().map_err(|_| not_requests(&chunk))?;
            for item in items.iter() {
                let item = item.cast_into::<PyList>()?;
                self.fold(|i| item.get_item(i + 2))?;
            }
        }
        Ok(())
    }

    /// Close and return every bucket that ended at or before `watermark`, by end time, scope and key.
    fn flush<'py>(&mut self, py: Python<'py>, watermark: f64) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for bucket in self.closing(watermark) {
            out.append(self.to_python(py, bucket)?)?;
        }
        Ok(out)
    }

    /// `watermark`, or an earlier end time to close up to when more than `limit` buckets end by it: the
    /// latest end by which at most `limit` do (the first end when more than `limit` end then), as
    /// `detectors.buckets.LlmBucketer.closing_bound` gives it.
    fn closing_bound(&self, watermark: f64, limit: usize) -> f64 {
        if self.open.len() <= limit {
            return watermark;
        }
        let (mut count, mut before) = (0, None);
        for (end, slots) in self.ends.values() {
            if *end > watermark {
                break;
            }
            count += slots.len();
            if count > limit {
                return before.unwrap_or(*end);
            }
            before = Some(*end);
        }
        watermark
    }

    /// Keep young sessions' and users' buckets here from now on, as `DetectorRunner._wait` would.
    ///
    /// `below`: `detectors.deferred.wait_below`'s counts (session, user); `runaway`, `agent_loop`,
    /// `context_bloat`: the runner's states by entity id (an entity with states never waits); `peers`
    /// and `peers_changed`: its session peers by app and the apps whose peers changed, which a waiting
    /// session's bucket teaches in place; `changed`: the runner's changed states, where a user's bucket
    /// stepped here on its quiet path (`quiet.rs`) is noted; `runaway_config`: the runaway detector's
    /// `RunawayConfig`. `close` then applies it.
    #[allow(clippy::too_many_arguments)]
    fn wait(
        &mut self,
        below_session: i64,
        below_user: i64,
        runaway_config: &Bound<'_, PyAny>,
        runaway: Bound<'_, PyDict>,
        agent_loop: Bound<'_, PyDict>,
        context_bloat: Bound<'_, PyDict>,
        peers: Bound<'_, PyDict>,
        peers_changed: Bound<'_, PySet>,
        changed: Bound<'_, PySet>,
    ) -> PyResult<()> {
        let number = |name: &str| -> PyResult<f64> { runaway_config.getattr(name)?.extract() };
        let peer = PeerConfig {
            window_s: number("window_s")?,
            tau_s: number("baseline_tau_s")?,
            alpha: number("peer_alpha")?,
        };
        let quiet = RunawayQuiet::read(runaway_config, "user_min_requests", "user_ratio")?;
        let states = [runaway.unbind(), agent_loop.unbind(), context_bloat.unbind()];
        self.waiting = Some(Waiting::new(
            [below_session, below_user],
            number("expire_after_s")?,
            states,
            (peers.unbind(), peers_changed.unbind()),
            peer,
            changed.unbind(),
            quiet,
        ));
        Ok(())
    }

    /// Step a released session's pending buckets here from now on (`wait` first), as
    /// `DetectorRunner._step_pending` steps them, when each takes its three steps' quiet paths
    /// (`session_chain.rs`); `max_tracked`: `detectors.agent_loop.MAX_TRACKED`.
    fn release_sessions_here(
        &mut self,
        runaway_config: &Bound<'_, PyAny>,
        agent_loop_config: &Bound<'_, PyAny>,
        context_bloat_config: &Bound<'_, PyAny>,
        max_tracked: usize,
    ) -> PyResult<()> {
        let run = RunawayQuiet::read(runaway_config, "min_requests", "ratio")?;
        let session = SessionQuiet {
            repeats: agent_loop_config.getattr("repeats")?.extract()?,
            loop_window_s: agent_loop_config.getattr("window_s")?.extract()?,
            max_requests: agent_loop_config.getattr("max_requests")?.extract()?,
            max_tracked,
            rising_turns: context_bloat_config.getattr("rising_turns")?.extract()?,
            min_growth: context_bloat_config.getattr("min_growth")?.extract()?,
        };
        self.waiting_mut()?.sessions = Some((run, session));
        Ok(())
    }

    /// Step app buckets that only learn here from now on, as `DetectorRunner._llm` steps them
    /// (`app_quiet.rs`): `runaway` and `model_switch`, the runner's states by entity id, and `changed`, its
    /// changed states, where such a bucket's steps are noted. The others still go to `close`'s `step`.
    fn step_apps(
        &mut self,
        runaway_config: &Bound<'_, PyAny>,
        model_switch_config: &Bound<'_, PyAny>,
        runaway: Bound<'_, PyDict>,
        model_switch: Bound<'_, PyDict>,
        changed: Bound<'_, PySet>,
    ) -> PyResult<()> {
        let mix = |name: &str| model_switch_config.getattr(name);
        let run = RunawayQuiet::read(runaway_config, "min_requests", "app_ratio")?;
        let mix = MixConfig {
            price_ratio: mix("price_ratio")?.extract()?,
            min_shift: mix("min_shift")?.extract()?,
            fast_alpha: mix("fast_alpha")?.extract()?,
            slow_alpha: mix("slow_alpha")?.extract()?,
            warmup: mix("warmup")?.extract()?,
            max_models: mix("max_models")?.extract()?,
        };
        let (runaway, model_switch, changed) = (runaway.unbind(), model_switch.unbind(), changed.unbind());
        self.apps = Some(AppQuiet { runaway, model_switch, changed, run, mix });
        Ok(())
    }

    /// Close the buckets that ended by `watermark`, in `flush`'s order, and hand each one the runner
    /// steps to `step` as it comes; return how many buckets closed.
    ///
    /// A young session's or user's bucket waits here instead (`wait`); a session's teaches its app's
    /// peers at once. When an entity is old enough, `step` gets `("r", scope, entity id, pending
    /// document)` first (the runner steps those buckets), then the bucket. `step` runs before the
    /// next bucket is looked at, so every step and every lesson comes in closing order.
    fn close(&mut self, py: Python<'_>, watermark: f64, step: &Bound<'_, PyAny>) -> PyResult<usize> {
        let closed = self.closing(watermark);
        let count = closed.len();
        if let Some(waiting) = self.waiting.as_mut() {
            waiting.begin();
        }
        let stepped = self.step_closed(py, closed, step);
        // the peers learned as Rust values go back to the runner's dicts, whether every step ran or not
        let written = self.waiting.as_mut().map_or(Ok(()), |waiting| waiting.write_peers(py, None));
        stepped.and(written).map(|()| count)
    }

    /// Drop the pending entities quiet for longer than the runaway detector's `expire_after_s`.
    fn expire_pending(&mut self, now: f64) -> usize {
        self.waiting.as_mut().map_or(0, |waiting| waiting.expire(now))
    }

    /// Put back a pending entity's saved document (`wait` first), pinned at the young entities' log
    /// entry `seq` (None: at none yet); `old` if it is a document saved before the log (its base).
    #[pyo3(signature = (key, doc, seq = None, old = false))]
    fn restore_pending(
        &mut self,
        key: String,
        doc: &Bound<'_, PyDict>,
        seq: Option<u64>,
        old: bool,
    ) -> PyResult<()> {
        self.waiting_mut()?.restore(key, doc, seq, old)
    }

    /// Keep the young entities' log (`detectors.pending_log`), writing an entity again once it is pinned
    /// at an entry `carry_after_s` of event time old (`wait` first).
    fn log_pending(&mut self, carry_after_s: f64) -> PyResult<()> {
        self.waiting_mut()?.log.enable(carry_after_s);
        Ok(())
    }

    /// Take back the log's entries the table holds, `(seq, event time)`, before `restore_pending`.
    fn restore_pending_log(&mut self, written: Vec<(u64, f64)>) -> PyResult<()> {
        self.waiting_mut()?.log.restore_entries(written);
        Ok(())
    }

    /// End a step of the young entities' log at event time `now`: `((seq, JSON of its entry) or None,
    /// [entries to delete], [entities whose documents saved before the log go])`.
    #[allow(clippy::type_complexity)]
    fn take_pending_log<'py>(
        &mut self,
        py: Python<'py>,
        now: f64,
    ) -> PyResult<(Option<(u64, Bound<'py, PyBytes>)>, Vec<u64>, Vec<String>)> {
        let Some(waiting) = self.waiting.as_mut() else {
            return Ok((None, Vec::new(), Vec::new()));
        };
        let (entry, deleted, dropped) = waiting.take_log(now);
        Ok((entry.map(|(seq, json)| (seq, PyBytes::new(py, &json))), deleted, dropped))
    }

    /// Take every pending entity out, by id, as `close`'s `("r", ...)` items.
    fn release_pending<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let released = match self.waiting.as_mut() {
            Some(waiting) => waiting.release_all(py)?,
            None => Vec::new(),
        };
        PyList::new(py, released)
    }

    /// Every pending document by entity id, as the Python runner would hold it.
    fn pending_docs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        match &self.waiting {
            Some(waiting) => waiting.docs(py),
            None => Ok(PyDict::new(py)),
        }
    }

    /// The number of pending entities.
    fn pending_count(&self) -> usize {
        self.waiting.as_ref().map_or(0, Waiting::len)
    }

    /// The number of open buckets.
    fn __len__(&self) -> usize {
        self.open.len()
    }
}

impl LlmBucketer {
    /// Fold one request into its session, user and app buckets; `field(i)` is its `LlmUsage`'s field i.
    fn fold<'py>(&mut self, field: impl Fn(usize) -> PyResult<Bound<'py, PyAny>>) -> PyResult<()> {
        let time: f64 = field(0)?.extract()?;
        let app = field(1)?;
        let model = field(4)?;
        let input_tokens: i64 = field(5)?.extract()?;
        let output_tokens: i64 = field(6)?.extract()?;
        let cost_usd: f64 = field(7)?.extract()?;
        let prompt = field(8)?;
        let team = field(9)?;
        let (user, session) = (field(2)?, field(3)?);
        let usage = Usage {
            time,
            keys: [&session, &user, &app],
            model: &model,
            input_tokens,
            output_tokens,
            cost_usd,
            prompt: &prompt,
            team: &team,
        };
        self.fold_usage(&usage)
    }

    /// Fold a request kept as Rust values (`route_runs`) as `fold` folds its list.
    fn fold_request(&mut self, py: Python<'_>, request: &Request) -> PyResult<()> {
        let (input_tokens, output_tokens) = request.tokens()?;
        let usage = Usage {
            time: request.time,
            keys: [request.session.bind(py), request.user.bind(py), request.app.bind(py)],
            model: request.model.bind(py),
            input_tokens,
            output_tokens,
            cost_usd: request.cost,
            prompt: request.prompt.bind(py),
            team: request.team.bind(py),
        };
        self.fold_usage(&usage)
    }

    fn fold_usage(&mut self, usage: &Usage<'_, '_>) -> PyResult<()> {
        let Usage { time, model, input_tokens, output_tokens, cost_usd, team, .. } = *usage;
        let app = usage.keys[APP];
        let prompt: Option<String> =
            if usage.prompt.is_truthy()? { Some(usage.prompt.extract()?) } else { None };
        for scope in [SESSION, USER, APP] {
            let key = usage.keys[scope];
            if !key.is_truthy()? {
                continue;
            }
            let width = self.widths[scope];
            let start = (time / width).floor() * width;
            let slot = (scope, key.extract::<String>()?, ordered(start));
            let bucket = match self.open.entry(slot) {
                Entry::Occupied(found) => found.into_mut(),
                Entry::Vacant(new) => {
                    let end = start + width;
                    self.ends.entry(ordered(end)).or_insert((end, Vec::new())).1.push(new.key().clone());
                    new.insert(Bucket {
                        scope,
                        key: key.clone().unbind(),
                        app: app.clone().unbind(),
                        team: team.clone().unbind(),
                        start,
                        end,
                        requests: 0,
                        input_tokens: 0,
                        output_tokens: 0,
                        cost_usd: 0.0,
                        inputs: Vec::new(),
                        prompts: Vec::new(),
                        models: Vec::new(),
                    })
                }
            };
            bucket.requests += 1;
            // events carry at most 10^12 tokens a count (MAX_TOKENS): a bucket overflows after millions
            bucket.input_tokens = bucket.input_tokens.checked_add(input_tokens).ok_or_else(overflow)?;
            bucket.output_tokens = bucket.output_tokens.checked_add(output_tokens).ok_or_else(overflow)?;
            bucket.cost_usd += cost_usd;
            if scope == SESSION {
                if bucket.inputs.len() < self.max_inputs {
                    bucket.inputs.push(input_tokens);
                }
                if let Some(prompt) = &prompt {
                    let prompts = &mut bucket.prompts;
                    match prompts.iter().position(|(p, _)| p == prompt) {
                        Some(at) => prompts[at].1 += 1,
                        None if prompts.len() < self.max_prompts => prompts.push((prompt.clone(), 1)),
                        None => {}
                    }
                }
            } else if scope == APP {
                let model: String = model.extract()?;
                let tokens = input_tokens.checked_add(output_tokens).ok_or_else(overflow)? as f64;
                match bucket.models.iter_mut().find(|(m, _)| *m == model) {
                    Some((_, sums)) => {
                        sums[0] += 1.0;
                        sums[1] += tokens;
                        sums[2] += cost_usd;
                    }
                    None => bucket.models.push((model, [1.0, tokens, cost_usd])),
                }
            }
        }
        Ok(())
    }

    /// `close`'s loop: each closed bucket waits, or goes to `step` (a session's once its app's peers are
    /// written back: the runner's session step reads and learns them).
    fn step_closed(&mut self, py: Python<'_>, closed: Vec<Bucket>, step: &Bound<'_, PyAny>) -> PyResult<()> {
        for mut bucket in closed {
            if let (Some(apps), true) = (self.apps.as_ref(), bucket.scope == APP) {
                let app = bucket.app.bind(py).cast::<PyString>()?.to_str()?;
                let figures = AppBucket {
                    app,
                    start: bucket.start,
                    end: bucket.end,
                    requests: bucket.requests,
                    cost_usd: bucket.cost_usd,
                    models: &bucket.models,
                };
                if apps.step(py, &figures)? {
                    continue;
                }
            }
            if let (Some(waiting), true) = (self.waiting.as_mut(), bucket.scope != APP) {
                match waiting.take(py, &mut bucket)? {
                    Outcome::Done => continue,
                    Outcome::Release(release) => {
                        step.call1((release,))?;
                    }
                    Outcome::Step => {}
                }
                if bucket.scope == SESSION {
                    waiting.write_peers(py, Some(bucket.app.bind(py).cast::<PyString>()?.to_str()?))?;
                }
            }
            step.call1((self.to_python(py, bucket)?,))?;
        }
        Ok(())
    }

    /// Take the buckets that ended by `watermark` out of the open ones: by end time, scope and key.
    fn closing(&mut self, watermark: f64) -> Vec<Bucket> {
        let mut closed = Vec::new();
        while let Some(entry) = self.ends.first_entry() {
            if entry.get().0 > watermark {
                break;
            }
            let mut closing: Vec<(u8, String, Bucket)> = entry
                .remove()
                .1
                .into_iter()
                .filter_map(|slot| {
                    self.open.remove(&slot).map(|bucket| (SCOPE_ORDER[slot.0], slot.1, bucket))
                })
                .collect();
            closing.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            closed.extend(closing.into_iter().map(|(_, _, bucket)| bucket));
        }
        closed
    }

    fn waiting_mut(&mut self) -> PyResult<&mut Waiting> {
        self.waiting.as_mut().ok_or_else(|| {
            PyValueError::new_err("this bucketer keeps no pending entities: call wait() first")
        })
    }

    fn to_python<'py>(&self, py: Python<'py>, b: Bucket) -> PyResult<Bound<'py, PyAny>> {
        let inputs = if b.scope == SESSION {
            PyList::new(py, &b.inputs)?.into_any()
        } else {
            self.no_inputs.bind(py).clone()
        };
        let prompts = if b.scope == SESSION {
            let prompts = PyDict::new(py);
            for (prompt, count) in &b.prompts {
                prompts.set_item(prompt, count)?;
            }
            prompts.into_any()
        } else {
            self.no_prompts.bind(py).clone()
        };
        let models = if b.scope == APP {
            let models = PyDict::new(py);
            for (model, sums) in &b.models {
                models.set_item(model, PyList::new(py, sums)?)?;
            }
            models.into_any()
        } else {
            self.no_models.bind(py).clone()
        };
        let args = PyTuple::new(
            py,
            [
                SCOPES[b.scope].into_pyobject(py)?.into_any(),
                b.key.into_bound(py),
                b.app.into_bound(py),
                b.start.into_pyobject(py)?.into_any(),
                b.end.into_pyobject(py)?.into_any(),
                b.team.into_bound(py),
                b.requests.into_pyobject(py)?.into_any(),
                b.input_tokens.into_pyobject(py)?.into_any(),
                b.output_tokens.into_pyobject(py)?.into_any(),
                b.cost_usd.into_pyobject(py)?.into_any(),
                inputs,
                prompts,
                models,
            ],
        )?;
        self.make.bind(py).call1(args)
    }
}
