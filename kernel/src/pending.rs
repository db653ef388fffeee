//! Young sessions and users wait in the kernel: the closed buckets of an entity too young to be judged
//! are kept here, as `DetectorRunner._wait` keeps them in Python (`detectors/deferred.py`; the Python code
//! is the reference), and never become Python objects unless the entity grows old enough to be stepped.
//!
//! A pending entity is the document `{"e": entity, "last": end, "n": requests, "b": [entries], "w":
//! window}` (a user's has no window), saved as the table's `s|llm|<entity id>` entry: this module writes
//! that entry's JSON itself, and reads a saved one back from its Python value.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySet, PyString, PyTuple};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::buckets::{Bucket, SESSION, USER};
use crate::peers::{learn, PeerConfig};
use crate::quiet::{quiet_user_step, RunawayQuiet};
use crate::value::{write_f64, write_str};

const HOUR_S: f64 = 3600.0;
const STATE_VERSION: i64 = 1; // detectors.state.STATE_VERSION

/// A closed bucket as a pending entry (`detectors.deferred.entry`).
struct Entry {
    start: f64,
    end: f64,
    requests: i64,
    input_tokens: i64,
    output_tokens: i64,
    cost_usd: f64,
    inputs: Vec<i64>,
    prompts: Vec<(String, i64)>,
    team: Option<String>,
}

/// One pending entity's document.
struct Pending {
    scope: usize,
    app: String,
    key: String,
    last: f64,
    n: i64,
    b: Vec<Entry>,
    w: Vec<(f64, f64, i64, f64)>, // the runaway window: (end, USD rounded to 7 places, requests, start)
}

/// What `Waiting::take` decided for a closed session or user bucket.
pub enum Outcome<'py> {
    /// Step it (the entity is old enough, or has states already).
    Step,
    /// It waits (a session's bucket has taught its app's peers already, as `_wait` teaches them).
    Waits,
    /// The entity is old enough now: step its pending buckets (`("r", scope, key, doc)`), then this one.
    Release(Bound<'py, PyTuple>),
}

/// Python's `round(x, digits)`: the nearest float to `x` correctly rounded to `digits` decimals (ties to
/// even, on the exact binary value, as CPython's `_Py_dg_dtoa` rounds).
pub fn round_to(x: f64, digits: usize) -> f64 {
    if !x.is_finite() {
        return x;
    }
    format!("{x:.digits$}").parse().unwrap_or(x)
}

/// `round(x, 7)`, as the runaway windows round USD.
pub fn round7(x: f64) -> f64 {
    round_to(x, 7)
}

pub struct Waiting {
    below: [i64; 2], // per scope (session, user): the request count under which an entity waits
    window_s: f64,
    expire_after_s: f64,
    // the runner's states by entity id: an entity with states is stepped, never made to wait
    runaway: Py<PyDict>,
    agent_loop: Py<PyDict>,
    context_bloat: Py<PyDict>,
    peers: Py<PyDict>,        // the runner's peers by app, learned in place
    peers_changed: Py<PySet>, // and the apps whose peers changed since its last save
    peer: PeerConfig,
    changed_states: Py<PySet>, // the runner's `changed`: (detector, entity id) of the states it saves
    quiet: RunawayQuiet,
    pending: FxHashMap<String, Pending>,
    changed: FxHashSet<String>,
    // entities handed to the runner to step since `begin`: they have states once it has stepped them,
    // but it steps them only after the whole `close` (the states tables do not show them yet)
    handed: FxHashSet<String>,
}

impl Waiting {
    pub fn new(
        below: [i64; 2],
        expire_after_s: f64,
        states: [Py<PyDict>; 3],
        peers: (Py<PyDict>, Py<PySet>),
        peer: PeerConfig,
        changed_states: Py<PySet>,
        quiet: RunawayQuiet,
    ) -> Self {
        let [runaway, agent_loop, context_bloat] = states;
        Self {
            below,
            window_s: peer.window_s,
            expire_after_s,
            runaway,
            agent_loop,
            context_bloat,
            peers: peers.0,
            peers_changed: peers.1,
            peer,
            changed_states,
            quiet,
            pending: FxHashMap::default(),
            changed: FxHashSet::default(),
            handed: FxHashSet::default(),
        }
    }

    /// Start one `close`: no entity has been handed to the runner in it yet.
    pub fn begin(&mut self) {
        self.handed.clear();
    }

    /// Decide for a closed session or user bucket, as `DetectorRunner._wait` does.
    pub fn take<'py>(&mut self, py: Python<'py>, bucket: &Bucket) -> PyResult<Outcome<'py>> {
        let scope = bucket.scope;
        let below = self.below[scope];
        if below <= 0 {
            return Ok(Outcome::Step);
        }
        let app: String = bucket.app.extract(py)?;
        let name: String = bucket.key.extract(py)?;
        let key = entity_id(scope, &app, &name);
        if self.handed.contains(&key) {
            return Ok(Outcome::Step);
        }
        let mut pending = match self.pending.remove(&key) {
            Some(pending) => {
                if pending.n + bucket.requests >= below {
                    self.changed.insert(key.clone());
                    self.handed.insert(key.clone());
                    if scope == USER && self.release_quietly(py, &key, &pending)? {
                        return Ok(Outcome::Step); // its state is made: this bucket steps as any other
                    }
                    let doc = pending.to_python(py)?;
                    let release = PyTuple::new(
                        py,
                        [
                            "r".into_pyobject(py)?.into_any(),
                            SCOPE_NAMES[scope].into_pyobject(py)?.into_any(),
                            key.into_pyobject(py)?.into_any(),
                            doc.into_any(),
                        ],
                    )?;
                    return Ok(Outcome::Release(release));
                }
                pending
            }
            None => {
                if bucket.requests >= below {
                    self.handed.insert(key);
                    return Ok(Outcome::Step);
                }
                if self.runaway.bind(py).contains(&key)? {
                    return Ok(Outcome::Step);
                }
                if scope == SESSION
                    && (self.agent_loop.bind(py).contains(&key)?
                        || self.context_bloat.bind(py).contains(&key)?)
                {
                    return Ok(Outcome::Step); // restored from states saved some other way: stepped as they are
                }
                Pending { scope, app, key: name, last: 0.0, n: 0, b: Vec::new(), w: Vec::new() }
            }
        };
        pending.last = bucket.end;
        pending.n += bucket.requests;
        pending.b.push(Entry {
            start: bucket.start,
            end: bucket.end,
            requests: bucket.requests,
            input_tokens: bucket.input_tokens,
            output_tokens: bucket.output_tokens,
            cost_usd: bucket.cost_usd,
            inputs: if scope == SESSION { bucket.inputs.clone() } else { Vec::new() },
            prompts: if scope == SESSION { bucket.prompts.clone() } else { Vec::new() },
            team: bucket.team.extract(py)?,
        });
        if scope == SESSION {
            // detectors.token_runaway.slide: the window moves on to this bucket, summed in order
            let edge = bucket.end - self.window_s;
            let cut = pending.w.iter().take_while(|entry| entry.0 <= edge).count();
            pending.w.drain(..cut);
            let latest = (bucket.end, round7(bucket.cost_usd), bucket.requests, bucket.start);
            pending.w.push(latest);
            let usd = pending.w.iter().fold(0.0, |sum, entry| sum + entry.1);
            // its app's peers learn its rate and latest bucket now, in closing order, as in `_wait`
            let peers_by_app = self.peers.bind(py);
            let peers = match peers_by_app.get_item(&pending.app)? {
                Some(peers) if peers.is_truthy()? => peers.cast_into::<PyDict>()?,
                _ => {
                    let peers = PyDict::new(py);
                    peers_by_app.set_item(&pending.app, &peers)?;
                    peers
                }
            };
            let rate = usd / self.window_s * HOUR_S;
            learn(py, &peers, rate, (latest.3, latest.0, latest.1, latest.2), &self.peer)?;
            self.peers_changed.bind(py).add(&pending.app)?;
        }
        self.changed.insert(key.clone());
        self.pending.insert(key, pending);
        Ok(Outcome::Waits)
    }

    /// Step a user's pending buckets here, in order, from a new state (`_step_pending`): each one takes
    /// its runaway step's quiet path, as every bucket of an entity too young to judge does. True when
    /// they all did (its state is kept and noted); False, and nothing kept, when one did not.
    fn release_quietly(&self, py: Python<'_>, key: &str, pending: &Pending) -> PyResult<bool> {
        let mut state = PyDict::new(py);
        for e in &pending.b {
            let entity = PyDict::new(py);
            entity.set_item("app", &pending.app)?;
            entity.set_item("user", &pending.key)?;
            let fields = (e.start, e.end, e.requests, e.cost_usd);
            match quiet_user_step(py, &state, fields, entity, &self.quiet)? {
                Some(next) => state = next,
                None => return Ok(false),
            }
        }
        self.runaway.bind(py).set_item(key, state)?;
        self.changed_states.bind(py).add(("runaway", key))?;
        Ok(true)
    }

    /// Take a user's bucket through its runaway step's quiet path, as `DetectorRunner._llm` would step it
    /// (`quiet::quiet_user_step`): True when done here, False when the runner must step it.
    pub fn step_quiet_user(&mut self, py: Python<'_>, bucket: &Bucket) -> PyResult<bool> {
        let app = bucket.app.bind(py).cast::<PyString>()?.to_str()?;
        let name = bucket.key.bind(py).cast::<PyString>()?.to_str()?;
        let key = entity_id(USER, app, name);
        let states = self.runaway.bind(py);
        let Some(state) = states.get_item(&key)? else {
            return Ok(false);
        };
        let Ok(state) = state.cast_into::<PyDict>() else {
            return Ok(false);
        };
        let entity = PyDict::new(py);
        entity.set_item("app", app)?;
        entity.set_item("user", name)?;
        let fields = (bucket.start, bucket.end, bucket.requests, bucket.cost_usd);
        let Some(new) = quiet_user_step(py, &state, fields, entity, &self.quiet)? else {
            return Ok(false);
        };
        states.set_item(&key, new)?;
        self.changed_states.bind(py).add(("runaway", key))?;
        Ok(true)
    }

    /// Drop the entities quiet for more than `expire_after_s` at `now`; return how many.
    pub fn expire(&mut self, now: f64) -> usize {
        let gone: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| now - p.last > self.expire_after_s)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &gone {
            self.pending.remove(key);
            self.changed.insert(key.clone());
        }
        gone.len()
    }

    /// Put back a saved document (a table entry's `pending` section, decoded).
    pub fn restore(&mut self, key: String, doc: &Bound<'_, PyDict>) -> PyResult<()> {
        let pending = Pending::from_python(doc).map_err(|error| {
            PyValueError::new_err(format!("the pending document of {key} is not one: {error}"))
        })?;
        self.pending.insert(key, pending);
        Ok(())
    }

    /// The entities changed since the last call, sorted, each with its saved document's JSON (None: gone).
    pub fn changes(&mut self) -> Vec<(String, Option<Vec<u8>>)> {
        let mut keys: Vec<String> = self.changed.drain().collect();
        keys.sort_unstable();
        keys.into_iter()
            .map(|key| {
                let json = self.pending.get(&key).map(Pending::to_json);
                (key, json)
            })
            .collect()
    }

    /// Every pending entity, sorted by id, taken out (as `("r", scope, key, doc)` tuples).
    pub fn release_all<'py>(&mut self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        let mut keys: Vec<String> = self.pending.keys().cloned().collect();
        keys.sort_unstable();
        keys.into_iter()
            .map(|key| {
                let pending = self.pending.remove(&key).expect("a key just listed");
                self.changed.insert(key.clone());
                let scope = SCOPE_NAMES[pending.scope].into_pyobject(py)?.into_any();
                let doc = pending.to_python(py)?.into_any();
                PyTuple::new(
                    py,
                    ["r".into_pyobject(py)?.into_any(), scope, key.into_pyobject(py)?.into_any(), doc],
                )
            })
            .collect()
    }

    /// Every pending document as the Python runner keeps it (entity id -> doc), for tests.
    pub fn docs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let docs = PyDict::new(py);
        for (key, pending) in &self.pending {
            docs.set_item(key, pending.to_python(py)?)?;
        }
        Ok(docs)
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }
}

const SCOPE_NAMES: [&str; 2] = ["session", "user"];

/// `detectors.runner.entity_id` of a session or user: `app=<app>,session=<key>` or `app=<app>,user=<key>`.
fn entity_id(scope: usize, app: &str, key: &str) -> String {
    format!("app={app},{}={key}", SCOPE_NAMES[scope])
}

fn window_entry<'py>(py: Python<'py>, entry: &(f64, f64, i64, f64)) -> PyResult<Bound<'py, PyList>> {
    PyList::new(
        py,
        [
            entry.0.into_pyobject(py)?.into_any(),
            entry.1.into_pyobject(py)?.into_any(),
            entry.2.into_pyobject(py)?.into_any(),
            entry.3.into_pyobject(py)?.into_any(),
        ],
    )
}

impl Pending {
    fn to_python<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let doc = PyDict::new(py);
        let entity = PyDict::new(py);
        entity.set_item("app", &self.app)?;
        entity.set_item(SCOPE_NAMES[self.scope], &self.key)?;
        doc.set_item("e", entity)?;
        doc.set_item("last", self.last)?;
        doc.set_item("n", self.n)?;
        let entries = PyList::empty(py);
        for e in &self.b {
            let prompts = PyDict::new(py);
            for (prompt, count) in &e.prompts {
                prompts.set_item(prompt, count)?;
            }
            let item = PyList::new(
                py,
                [
                    e.start.into_pyobject(py)?.into_any(),
                    e.end.into_pyobject(py)?.into_any(),
                    e.requests.into_pyobject(py)?.into_any(),
                    e.input_tokens.into_pyobject(py)?.into_any(),
                    e.output_tokens.into_pyobject(py)?.into_any(),
                    e.cost_usd.into_pyobject(py)?.into_any(),
                    PyList::new(py, &e.inputs)?.into_any(),
                    prompts.into_any(),
                    e.team.as_deref().into_pyobject(py)?.into_any(),
                ],
            )?;
            entries.append(item)?;
        }
        doc.set_item("b", entries)?;
        if self.scope == SESSION {
            let window = PyList::empty(py);
            for entry in &self.w {
                window.append(window_entry(py, entry)?)?;
            }
            doc.set_item("w", window)?;
        }
        Ok(doc)
    }

    /// The table entry's value: `{"_v": 1, "pending": doc}` (`streams.core.entity_states.fuse`).
    fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + 120 * self.b.len());
        out.extend_from_slice(b"{\"_v\":");
        out.extend_from_slice(itoa::Buffer::new().format(STATE_VERSION).as_bytes());
        out.extend_from_slice(b",\"pending\":{\"e\":{\"app\":");
        write_str(&mut out, &self.app);
        out.extend_from_slice(if self.scope == SESSION { b",\"session\":" } else { b",\"user\":" });
        write_str(&mut out, &self.key);
        out.extend_from_slice(b"},\"last\":");
        write_f64(&mut out, self.last);
        out.extend_from_slice(b",\"n\":");
        write_i64(&mut out, self.n);
        out.extend_from_slice(b",\"b\":[");
        for (i, e) in self.b.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'[');
            write_f64(&mut out, e.start);
            out.push(b',');
            write_f64(&mut out, e.end);
            for count in [e.requests, e.input_tokens, e.output_tokens] {
                out.push(b',');
                write_i64(&mut out, count);
            }
            out.push(b',');
            write_f64(&mut out, e.cost_usd);
            out.extend_from_slice(b",[");
            for (j, size) in e.inputs.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                write_i64(&mut out, *size);
            }
            out.extend_from_slice(b"],{");
            for (j, (prompt, count)) in e.prompts.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                write_str(&mut out, prompt);
                out.push(b':');
                write_i64(&mut out, *count);
            }
            out.extend_from_slice(b"},");
            match &e.team {
                Some(team) => write_str(&mut out, team),
                None => out.extend_from_slice(b"null"),
            }
            out.push(b']');
        }
        out.push(b']');
        if self.scope == SESSION {
            out.extend_from_slice(b",\"w\":[");
            for (i, (end, usd, requests, start)) in self.w.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'[');
                write_f64(&mut out, *end);
                out.push(b',');
                write_f64(&mut out, *usd);
                out.push(b',');
                write_i64(&mut out, *requests);
                out.push(b',');
                write_f64(&mut out, *start);
                out.push(b']');
            }
            out.push(b']');
        }
        out.extend_from_slice(b"}}");
        out
    }

    fn from_python(doc: &Bound<'_, PyDict>) -> PyResult<Self> {
        let field = |name: &str| -> PyResult<Bound<'_, PyAny>> {
            doc.get_item(name)?.ok_or_else(|| PyValueError::new_err(format!("no {name:?}")))
        };
        let entity = field("e")?;
        let entity = entity.cast::<PyDict>()?;
        let (scope, key) = match entity.get_item("session")? {
            Some(key) => (SESSION, key),
            None => {
                (USER, entity.get_item("user")?.ok_or_else(|| PyValueError::new_err("no session or user"))?)
            }
        };
        let app = entity.get_item("app")?.ok_or_else(|| PyValueError::new_err("no app"))?;
        let mut b = Vec::new();
        for item in field("b")?.try_iter()? {
            let item = item?;
            let at = |i: usize| item.get_item(i);
            let prompts = at(7)?;
            let prompts = prompts
                .cast::<PyDict>()?
                .iter()
                .map(|(prompt, count)| Ok((prompt.extract::<String>()?, count.extract::<i64>()?)))
                .collect::<PyResult<Vec<_>>>()?;
            if item.len()? != 9 {
                return Err(PyValueError::new_err("an entry is not 9 fields"));
            }
            b.push(Entry {
                start: at(0)?.extract()?,
                end: at(1)?.extract()?,
                requests: at(2)?.extract()?,
                input_tokens: at(3)?.extract()?,
                output_tokens: at(4)?.extract()?,
                cost_usd: at(5)?.extract()?,
                inputs: at(6)?.extract()?,
                prompts,
                team: at(8)?.extract()?,
            });
        }
        let mut w = Vec::new();
        if let Some(window) = doc.get_item("w")? {
            for entry in window.try_iter()? {
                let entry = entry?;
                if entry.len()? != 4 {
                    return Err(PyValueError::new_err("a window entry is not 4 fields"));
                }
                let at = |i: usize| entry.get_item(i);
                w.push((at(0)?.extract()?, at(1)?.extract()?, at(2)?.extract()?, at(3)?.extract()?));
            }
        }
        Ok(Self {
            scope,
            app: app.extract()?,
            key: key.extract()?,
            last: field("last")?.extract()?,
            n: field("n")?.extract()?,
            b,
            w,
        })
    }
}

fn write_i64(out: &mut Vec<u8>, x: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(x).as_bytes());
}
