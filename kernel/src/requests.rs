//! A run's LLM requests for one partition as Rust values (`route_runs`), not Python lists.
//!
//! `route` makes each request a Python list (`["u", event_id, time, app, user, session, model,
//! input_tokens, output_tokens, usd, prompt_hash, team, offset]`); in the stream most of those lists were
//! made only to be read back by the bucketer (`LlmBucketer.add_inputs`) and the open inputs' `o|u|` entry,
//! then freed: 2.5% of the in-place path's instructions (docs/detectors.md, twenty-fourth round).
//! `Requests` keeps them as the values they are made of; the bucketer folds them as they are and
//! `open_json` writes the open ones' JSON. To anything else it is a sequence of the same lists `route`
//! makes (made when read).

use pyo3::exceptions::{PyIndexError, PyOverflowError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyFloat, PyIterator, PyList, PyString};

use crate::value::{write_f64, write_str};

/// One LLM request's input: its first record's columns (str or None, as the record holds them, with
/// route's defaults) and its sums.
pub struct Request {
    pub event_id: Py<PyAny>,
    pub time: f64,
    pub app: Py<PyAny>,
    pub user: Py<PyAny>,
    pub session: Py<PyAny>,
    pub model: Py<PyAny>,
    pub input: f64,
    pub output: f64,
    pub cost: f64,
    pub prompt: Py<PyAny>,
    pub team: Py<PyAny>,
    pub offset: Option<i64>, // its usage message's, when routed with its source
}

impl Request {
    /// The input's Python list, as `route` makes it.
    pub fn to_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let fields = [
            intern!(py, "u").clone().into_any(),
            self.event_id.bind(py).clone(),
            PyFloat::new(py, self.time).into_any(),
            self.app.bind(py).clone(),
            self.user.bind(py).clone(),
            self.session.bind(py).clone(),
            self.model.bind(py).clone(),
            whole(py, self.input)?,
            whole(py, self.output)?,
            PyFloat::new(py, self.cost).into_any(),
            self.prompt.bind(py).clone(),
            self.team.bind(py).clone(),
        ];
        match self.offset {
            Some(offset) => PyList::new(py, fields.into_iter().chain([offset.into_pyobject(py)?.into_any()])),
            None => PyList::new(py, fields),
        }
    }

    /// What `route` raises making its list, where a token sum is not finite (`int()` of it).
    pub fn check(&self, py: Python<'_>) -> PyResult<()> {
        for x in [self.input, self.output] {
            if !x.is_finite() {
                whole(py, x)?;
            }
        }
        Ok(())
    }

    /// Its input and output token sums as the bucketer reads a list's (an i64 each, else `OverflowError`).
    pub fn tokens(&self) -> PyResult<(i64, i64)> {
        Ok((as_count(self.input)?, as_count(self.output)?))
    }

    /// Write the input's list as JSON, as pydantic's `to_json` writes it.
    fn write_json(&self, py: Python<'_>, out: &mut Vec<u8>) -> PyResult<()> {
        out.extend_from_slice(b"[\"u\",");
        write_value(out, self.event_id.bind(py))?;
        out.push(b',');
        write_f64(out, self.time);
        for value in [&self.app, &self.user, &self.session, &self.model] {
            out.push(b',');
            write_value(out, value.bind(py))?;
        }
        let (input, output) = self.tokens()?;
        for count in [input, output] {
            out.push(b',');
            out.extend_from_slice(itoa::Buffer::new().format(count).as_bytes());
        }
        out.push(b',');
        write_f64(out, self.cost);
        for value in [&self.prompt, &self.team] {
            out.push(b',');
            write_value(out, value.bind(py))?;
        }
        if let Some(offset) = self.offset {
            out.push(b',');
            out.extend_from_slice(itoa::Buffer::new().format(offset).as_bytes());
        }
        out.push(b']');
        Ok(())
    }
}

/// Python's `int(x)` of a token sum: an i64 when it fits, else Python's own int (or its error: a token
/// count that is not finite is not one).
pub fn whole(py: Python<'_>, x: f64) -> PyResult<Bound<'_, PyAny>> {
    match as_i64(x) {
        Some(count) => Ok(count.into_pyobject(py)?.into_any()),
        None => py.import("builtins")?.getattr("int")?.call1((x,)),
    }
}

/// `int(x)` when it fits an i64 (well inside: below 9e18).
fn as_i64(x: f64) -> Option<i64> {
    (x.is_finite() && x.abs() < 9.0e18).then_some(x as i64)
}

/// A token sum as the bucketer's i64 (events carry at most 10^12 tokens a count, so a request's fit).
fn as_count(x: f64) -> PyResult<i64> {
    as_i64(x).ok_or_else(|| {
        PyOverflowError::new_err(format!("an LLM request's token sum {x} is not a 64-bit count"))
    })
}

/// The requests' Python lists, as `route` makes them.
pub fn lists<'py>(py: Python<'py>, requests: &[Request]) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, requests.iter().map(|request| request.to_list(py)).collect::<PyResult<Vec<_>>>()?)
}

/// A str or None column as JSON.
fn write_value(out: &mut Vec<u8>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if value.is_none() {
        out.extend_from_slice(b"null");
    } else {
        write_str(out, value.cast::<PyString>()?.to_str()?);
    }
    Ok(())
}

/// `Requests.open_json`'s answer: the first open request's event id, the latest time, their JSON.
type OpenJson<'py> = (Py<PyAny>, f64, Bound<'py, PyBytes>);

/// A partition's LLM requests of one run (`route_runs`), in `route`'s order; a sequence of their lists.
#[pyclass(module = "burnwatch_kernel", frozen, sequence)]
pub struct Requests {
    pub items: Vec<Request>,
}

#[pymethods]
impl Requests {
    fn __len__(&self) -> usize {
        self.items.len()
    }

    fn __getitem__<'py>(&self, py: Python<'py>, index: isize) -> PyResult<Bound<'py, PyList>> {
        let at = if index < 0 { index + self.items.len() as isize } else { index };
        match usize::try_from(at).ok().and_then(|at| self.items.get(at)) {
            Some(request) => request.to_list(py),
            None => Err(PyIndexError::new_err("Requests index out of range")),
        }
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyIterator>> {
        self.to_lists(py)?.as_any().try_iter()
    }

    /// The requests' lists, as `route` makes them.
    fn to_lists<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        lists(py, &self.items)
    }

    /// The requests at or after `since` (their buckets are still open): `(first's event id, latest time,
    /// their lists' JSON joined by commas)`, or None if there is none: what
    /// `streams.core.open_inputs.OpenInputs.save` keeps of their lists.
    fn open_json<'py>(&self, py: Python<'py>, since: f64) -> PyResult<Option<OpenJson<'py>>> {
        let mut first = None;
        let mut latest = f64::NEG_INFINITY;
        let mut out = Vec::new();
        for request in self.items.iter().filter(|request| request.time >= since) {
            if first.is_none() {
                first = Some(request.event_id.clone_ref(py));
            } else {
                out.push(b',');
            }
            latest = latest.max(request.time);
            request.write_json(py, &mut out)?;
        }
        Ok(first.map(|first| (first, latest, PyBytes::new(py, &out))))
    }
}

/// The requests of `chunk` if it is a `Requests`.
pub fn as_requests<'a, 'py>(chunk: &'a Bound<'py, PyAny>) -> Option<&'a Bound<'py, Requests>> {
    chunk.cast::<Requests>().ok()
}

/// `TypeError` for a chunk of requests that is neither a list nor a `Requests`.
pub fn not_requests(chunk: &Bound<'_, PyAny>) -> PyErr {
    PyTypeError::new_err(format!("LLM requests must be a list or Requests, not {}", chunk.get_type()))
}
