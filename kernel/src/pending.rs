//! Young sessions and users wait in the kernel: the closed buckets of an entity too young to be judged
//! are kept here, as `DetectorRunner._wait` keeps them in Python (`detectors/deferred.py`; the Python code
//! is the reference), and never become Python objects unless the entity grows old enough to be stepped.
//!
//! A pending entity is a `pending_doc::Pending`, saved through the partition's young entities' log
//! (`pending_log`).

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PySet, PyString, PyTuple};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::buckets::{Bucket, SESSION};
use crate::peers::{learn, peers_of, PeerConfig, Peers};
use crate::pending_doc::{Entry, Pending, SCOPE_NAMES};
use crate::pending_log::{PendingLog, Taken};
use crate::quiet::{quiet_runaway_step, Entity, QuietChain, RunawayQuiet};
use crate::rounding::round7;
use crate::session_chain::{BloatChain, LoopChain, SessionQuiet};
use crate::session_quiet::{quiet_bloat_step, quiet_loop_step};
use crate::value::joined;

const HOUR_S: f64 = 3600.0;

/// What `Waiting::take` decided for a closed session or user bucket.
pub enum Outcome<'py> {
    /// The runner steps it (the entity is old enough, or has states already).
    Step,
    /// Nothing for the runner: it waits (a session's bucket has taught its app's peers already, as
    /// `_wait` teaches them), or it was a user's and took its runaway step's quiet path here.
    Done,
    /// The entity is old enough now: step its pending buckets (`("r", scope, key, doc)`), then this one.
    Release(Bound<'py, PyTuple>),
}

pub struct Waiting {
    below: [i64; 2], // per scope (session, user): the request count under which an entity waits
    window_s: f64,
    expire_after_s: f64,
    // the runner's states by entity id: an entity with states is stepped, never made to wait
    runaway: Py<PyDict>,
    agent_loop: Py<PyDict>,
    context_bloat: Py<PyDict>,
    peers: Py<PyDict>,        // the runner's peers by app
    peers_changed: Py<PySet>, // and the apps whose peers changed since its last save
    peer: PeerConfig,
    // apps whose peers learned in this `close`, as Rust values (None: learned in the runner's dict), until
    // `write_peers` writes them back: the runner reads no peers in between
    learned: FxHashMap<String, Option<Peers>>,
    changed_states: Py<PySet>, // the runner's `changed`: (detector, entity id) of the states it saves
    quiet: RunawayQuiet,
    // a released session's buckets are stepped here too (`release_sessions_here`): its runaway step's
    // quiet path (least: min_requests) and its other two steps'
    pub sessions: Option<(RunawayQuiet, SessionQuiet)>,
    pending: FxHashMap<String, Pending>,
    pub log: PendingLog,
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
            learned: FxHashMap::default(),
            changed_states,
            quiet,
            sessions: None,
            pending: FxHashMap::default(),
            log: PendingLog::default(),
            handed: FxHashSet::default(),
        }
    }

    /// Start one `close`: no entity has been handed to the runner in it yet.
    pub fn begin(&mut self) {
        self.handed.clear();
    }

    /// Decide for a closed session or user bucket, as `DetectorRunner._wait` does; a user's bucket to
    /// step takes its quiet path here when it can (`stepped`).
    pub fn take<'py>(&mut self, py: Python<'py>, bucket: &mut Bucket) -> PyResult<Outcome<'py>> {
        let scope = bucket.scope;
        let below = self.below[scope];
        if below <= 0 && scope == SESSION {
            return Ok(Outcome::Step);
        }
        let app_object = bucket.app.bind(py).cast::<PyString>()?.clone();
        let app = app_object.to_str()?;
        let name = bucket.key.bind(py).cast::<PyString>()?.to_str()?;
        let key = entity_id(scope, app, name);
        if below <= 0 || self.handed.contains(&key) {
            return self.stepped(py, &key, app, name, bucket);
        }
        let mut fresh = true;
        match self.pending.get(&key).map(|pending| pending.n) {
            Some(sent) if sent + bucket.requests >= below => {
                let pending = self.pending.remove(&key).expect("a key just read");
                self.log.gone(&key);
                self.handed.insert(key.clone());
                if self.release_quietly(py, &key, &pending)? {
                    return self.stepped(py, &key, app, name, bucket); // its states are made
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
            Some(_) => fresh = false,
            None => {
                if bucket.requests >= below {
                    self.handed.insert(key.clone());
                    return self.stepped(py, &key, app, name, bucket);
                }
                let entity = PyString::new(py, &key);
                if self.runaway.bind(py).contains(&entity)? {
                    return self.stepped(py, &key, app, name, bucket);
                }
                if scope == SESSION
                    && (self.agent_loop.bind(py).contains(&entity)?
                        || self.context_bloat.bind(py).contains(&entity)?)
                {
                    return Ok(Outcome::Step); // restored from states saved some other way: stepped as they are
                }
                let (app, name) = (app.to_owned(), name.to_owned());
                let pending =
                    Pending { scope, app, key: name, last: 0.0, n: 0, b: Vec::new(), w: Vec::new() };
                self.pending.insert(key.clone(), pending);
            }
        }
        let pending = self.pending.get_mut(&key).expect("a key just read or put");
        pending.last = bucket.end;
        pending.n += bucket.requests;
        let session = scope == SESSION;
        pending.b.push(Entry {
            start: bucket.start,
            end: bucket.end,
            requests: bucket.requests,
            input_tokens: bucket.input_tokens,
            output_tokens: bucket.output_tokens,
            cost_usd: bucket.cost_usd,
            // the bucket waits here and is not handed on: what it holds moves into the document
            inputs: if session { std::mem::take(&mut bucket.inputs) } else { Vec::new() },
            prompts: if session { std::mem::take(&mut bucket.prompts) } else { Vec::new() },
            team: bucket.team.extract(py)?,
        });
        if session {
            // detectors.token_runaway.slide: the window moves on to this bucket, summed in order
            let edge = bucket.end - self.window_s;
            let cut = pending.w.iter().take_while(|entry| entry.0 <= edge).count();
            pending.w.drain(..cut);
            let latest = (bucket.end, round7(bucket.cost_usd), bucket.requests, bucket.start);
            pending.w.push(latest);
            let usd = pending.w.iter().fold(0.0, |sum, entry| sum + entry.1);
            // its app's peers learn its rate and latest bucket now, in closing order, as in `_wait`
            let rate = usd / self.window_s * HOUR_S;
            self.learn_peers(py, &app_object, rate, (latest.3, latest.0, latest.1, latest.2))?;
        }
        let pending = &self.pending[&key];
        if fresh {
            self.log.opened(&key, pending);
        } else if let Some(entry) = pending.b.last() {
            self.log.added(&key, entry);
        }
        Ok(Outcome::Done)
    }

    /// An app's peers learn a waiting session's rate and latest bucket: on the Rust values this `close`
    /// keeps of them, read from the runner's dict at the app's first lesson in it.
    fn learn_peers(
        &mut self,
        py: Python<'_>,
        app: &Bound<'_, PyString>,
        rate: f64,
        latest: (f64, f64, f64, i64),
    ) -> PyResult<()> {
        let name = app.to_str()?;
        if !self.learned.contains_key(name) {
            let peers_by_app = self.peers.bind(py);
            let found = peers_by_app.get_item(app)?;
            let peers = Peers::read(found.as_ref().map(|peers| peers.cast::<PyDict>()).transpose()?)?;
            if found.is_none() {
                // the app takes its place among the runner's apps at its first lesson, as in Python
                peers_by_app.set_item(app, PyDict::new(py))?;
            }
            self.learned.insert(name.to_owned(), peers);
        }
        match self.learned.get_mut(name).expect("an app just read") {
            Some(peers) => peers.learn(rate, latest, &self.peer),
            None => learn(py, &peers_of(py, self.peers.bind(py), app)?, rate, latest, &self.peer)?,
        }
        Ok(())
    }

    /// Write the peers learned as Rust values back into the runner's dicts, and note their apps as
    /// changed: those of `app` only, or of every app (None). The runner steps a session's bucket only after
    /// its app's are written, and `close` writes the rest before it returns.
    pub fn write_peers(&mut self, py: Python<'_>, app: Option<&str>) -> PyResult<()> {
        let apps: Vec<String> = match app {
            Some(app) if self.learned.contains_key(app) => vec![app.to_owned()],
            Some(_) => return Ok(()),
            None => self.learned.keys().cloned().collect(),
        };
        let (peers_by_app, changed) = (self.peers.bind(py), self.peers_changed.bind(py));
        for name in apps {
            let peers = self.learned.remove(&name).expect("an app just listed");
            let app = PyString::new(py, &name);
            if let Some(peers) = peers {
                peers.write(py, peers_by_app, app.as_any())?;
            }
            changed.add(app)?;
        }
        Ok(())
    }

    /// Step a released entity's pending buckets here, in order, from new states (`_step_pending`): each
    /// one takes its steps' quiet paths, as every bucket of an entity too young to judge does (a user's
    /// runaway step; a session's runaway, agent-loop and context-bloat steps, when `sessions` is set).
    /// True when they all did (its states are kept and noted); False, and nothing kept, when one did not.
    /// The steps are taken on Rust values (`quiet::QuietChain`, `session_chain`), and only the last
    /// states become dicts.
    fn release_quietly(&self, py: Python<'_>, key: &str, pending: &Pending) -> PyResult<bool> {
        if pending.scope == SESSION {
            return self.release_session_quietly(py, key, pending);
        }
        let mut chain = QuietChain::default();
        for e in &pending.b {
            if !chain.step((e.start, e.end, e.requests, e.cost_usd), &self.quiet, true) {
                return Ok(false);
            }
        }
        let entity = PyDict::new(py);
        entity.set_item(intern!(py, "app"), &pending.app)?;
        entity.set_item(intern!(py, "user"), &pending.key)?;
        let state = if pending.b.is_empty() { PyDict::new(py) } else { chain.to_dict(py, &entity)? };
        self.runaway.bind(py).set_item(key, state)?;
        self.changed_states.bind(py).add(("runaway", key))?;
        Ok(true)
    }

    /// `release_quietly` for a session: its three steps (`SESSION_STEPS`), each bucket in turn.
    fn release_session_quietly(&self, py: Python<'_>, key: &str, pending: &Pending) -> PyResult<bool> {
        let Some((run, session)) = &self.sessions else {
            return Ok(false);
        };
        if pending.b.is_empty() {
            return Ok(false); // the Python steps take none: no states
        }
        let (mut runaway, mut looping, mut bloat) =
            (QuietChain::default(), LoopChain::default(), BloatChain::default());
        for e in &pending.b {
            let quiet = runaway.step((e.start, e.end, e.requests, e.cost_usd), run, false)
                && looping.step(e, session)
                && bloat.step(e, session);
            if !quiet {
                return Ok(false);
            }
        }
        let entity = PyDict::new(py);
        entity.set_item(intern!(py, "app"), &pending.app)?;
        entity.set_item(intern!(py, "session"), &pending.key)?;
        let states =
            [runaway.to_dict(py, &entity)?, looping.to_dict(py, &entity)?, bloat.to_dict(py, &entity)?];
        self.keep_session(py, &PyString::new(py, key), states)?;
        Ok(true)
    }

    /// Keep a session's new runaway, agent-loop and context-bloat states and note them as changed, as
    /// `_note` does after each of its steps.
    fn keep_session(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyString>,
        states: [Bound<'_, PyDict>; 3],
    ) -> PyResult<()> {
        let tables = [&self.runaway, &self.agent_loop, &self.context_bloat];
        let names = [intern!(py, "runaway"), intern!(py, "agent_loop"), intern!(py, "context_bloat")];
        let changed = self.changed_states.bind(py);
        for ((table, name), state) in tables.into_iter().zip(names).zip(states) {
            table.bind(py).set_item(key, state)?;
            changed.add((name, key))?;
        }
        Ok(())
    }

    /// A bucket the runner would step: a user's takes its runaway step's quiet path here when it can
    /// (`quiet::quiet_runaway_step`, as `DetectorRunner._llm` would step it), a session's its steps'
    /// (`stepped_session`); else it goes to the runner.
    fn stepped<'py>(
        &mut self,
        py: Python<'py>,
        key: &str,
        app: &str,
        name: &str,
        bucket: &Bucket,
    ) -> PyResult<Outcome<'py>> {
        if bucket.scope == SESSION {
            return self.stepped_session(py, key, app, name, bucket);
        }
        let states = self.runaway.bind(py);
        let key = PyString::new(py, key); // one str: hashed once for the lookup, the store and the mark
        let Some(state) = states.get_item(&key)? else {
            return Ok(Outcome::Step);
        };
        let Ok(state) = state.cast_into::<PyDict>() else {
            return Ok(Outcome::Step);
        };
        let fields = (bucket.start, bucket.end, bucket.requests, bucket.cost_usd);
        let entity = Entity { app, scope: "user", key: name };
        let Some((new, _)) = quiet_runaway_step(py, &state, fields, entity, &self.quiet, true)? else {
            return Ok(Outcome::Step);
        };
        states.set_item(&key, new)?;
        self.changed_states.bind(py).add((intern!(py, "runaway"), key))?;
        Ok(Outcome::Done)
    }

    /// A session bucket the runner would step (`DetectorRunner._session`), taken here when all its steps
    /// are quiet (`session_quiet.rs`): the runaway step under its gates, its app's peers learning it (as
    /// `learn_peer` after that step), the agent-loop and context-bloat steps opening nothing.
    fn stepped_session<'py>(
        &mut self,
        py: Python<'py>,
        key: &str,
        app: &str,
        name: &str,
        bucket: &Bucket,
    ) -> PyResult<Outcome<'py>> {
        let Some((run, session)) = &self.sessions else {
            return Ok(Outcome::Step);
        };
        let key = PyString::new(py, key);
        let mut states = Vec::with_capacity(3);
        for table in [&self.runaway, &self.agent_loop, &self.context_bloat].map(|table| table.bind(py)) {
            match table.get_item(&key)?.map(|state| state.cast_into::<PyDict>()) {
                Some(Ok(state)) => states.push(state),
                _ => return Ok(Outcome::Step), // a new session, or a state only the Python steps read
            }
        }
        let fields = (bucket.start, bucket.end, bucket.requests, bucket.cost_usd);
        let entity = Entity { app, scope: "session", key: name };
        let Some((runaway, rate)) = quiet_runaway_step(py, &states[0], fields, entity, run, false)? else {
            return Ok(Outcome::Step);
        };
        let entity =
            runaway.get_item(intern!(py, "e"))?.expect("a stepped state's entity").cast_into::<PyDict>()?;
        let Some(looping) = quiet_loop_step(&states[1], bucket, &entity, session)? else {
            return Ok(Outcome::Step);
        };
        let Some(bloat) = quiet_bloat_step(&states[2], bucket, &entity, session)? else {
            return Ok(Outcome::Step);
        };
        let latest = (bucket.start, bucket.end, round7(bucket.cost_usd), bucket.requests);
        let app_object = bucket.app.bind(py).cast::<PyString>()?.clone();
        self.learn_peers(py, &app_object, rate, latest)?;
        self.keep_session(py, &key, [runaway, looping, bloat])?;
        Ok(Outcome::Done)
    }

    /// Drop the entities quiet for more than `expire_after_s` at `now`; return how many.
    pub fn expire(&mut self, now: f64) -> usize {
        let mut gone: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| now - p.last > self.expire_after_s)
            .map(|(key, _)| key.clone())
            .collect();
        gone.sort_unstable(); // logged in the order the Python runner drops them
        for key in &gone {
            self.pending.remove(key);
            self.log.gone(key);
        }
        gone.len()
    }

    /// Put back a saved document (decoded), pinned at log entry `seq` (None: at none yet); `old` if it
    /// is a document saved before the log.
    pub fn restore(
        &mut self,
        key: String,
        doc: &Bound<'_, PyDict>,
        seq: Option<u64>,
        old: bool,
    ) -> PyResult<()> {
        let pending = Pending::from_python(doc).map_err(|error| {
            PyValueError::new_err(format!("the pending document of {key} is not one: {error}"))
        })?;
        self.log.restore(&key, seq, old);
        self.pending.insert(key, pending);
        Ok(())
    }

    /// End a step of the log (`pending_log::Taken`).
    pub fn take_log(&mut self, now: f64) -> Taken {
        self.log.take(&self.pending, now)
    }

    /// Every pending entity, sorted by id, taken out (as `("r", scope, key, doc)` tuples).
    pub fn release_all<'py>(&mut self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        let mut keys: Vec<String> = self.pending.keys().cloned().collect();
        keys.sort_unstable();
        keys.into_iter()
            .map(|key| {
                let pending = self.pending.remove(&key).expect("a key just listed");
                self.log.gone(&key);
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

/// `detectors.runner.entity_id` of a session or user: `app=<app>,session=<key>` or `app=<app>,user=<key>`.
fn entity_id(scope: usize, app: &str, key: &str) -> String {
    joined(&["app=", app, ",", SCOPE_NAMES[scope], "=", key])
}
