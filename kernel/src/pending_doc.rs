//! A young session's or user's pending document, as the Python runner keeps it
//! (`detectors/deferred.py`): `{"e": entity, "last": end, "n": requests, "b": [entries], "w": window}`
//! (a user's has no window). Written as JSON into the young entities' log (`pending_log`), handed to the
//! runner as a Python dict, read back from one.

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::buckets::{SESSION, USER};
use crate::value::{write_f64, write_str};

pub const SCOPE_NAMES: [&str; 2] = ["session", "user"];

/// A closed bucket as a pending entry (`detectors.deferred.entry`).
pub struct Entry {
    pub start: f64,
    pub end: f64,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
    pub inputs: Vec<i64>,
    pub prompts: Vec<(String, i64)>,
    pub team: Option<String>,
}

impl Entry {
    /// Write the entry's JSON (`detectors.deferred.entry`'s list, as pydantic's `to_json` writes it).
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        write_f64(out, self.start);
        out.push(b',');
        write_f64(out, self.end);
        for count in [self.requests, self.input_tokens, self.output_tokens] {
            out.push(b',');
            write_i64(out, count);
        }
        out.push(b',');
        write_f64(out, self.cost_usd);
        out.extend_from_slice(b",[");
        joined(out, &self.inputs, |out, size| write_i64(out, *size));
        out.extend_from_slice(b"],{");
        joined(out, &self.prompts, |out, (prompt, count)| {
            write_str(out, prompt);
            out.push(b':');
            write_i64(out, *count);
        });
        out.extend_from_slice(b"},");
        match &self.team {
            Some(team) => write_str(out, team),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b']');
    }
}

/// One pending entity's document.
pub struct Pending {
    pub scope: usize,
    pub app: String,
    pub key: String,
    pub last: f64,
    pub n: i64,
    pub b: Vec<Entry>,
    pub w: Vec<(f64, f64, i64, f64)>, // the runaway window: (end, USD rounded to 7 places, requests, start)
}

/// A runaway window entry's list: `[end, usd, requests, start]`.
pub fn window_entry<'py>(py: Python<'py>, entry: &(f64, f64, i64, f64)) -> PyResult<Bound<'py, PyList>> {
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
    pub fn to_python<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let doc = PyDict::new(py);
        let entity = PyDict::new(py);
        entity.set_item(intern!(py, "app"), &self.app)?;
        entity.set_item(SCOPE_NAMES[self.scope], &self.key)?;
        doc.set_item(intern!(py, "e"), entity)?;
        doc.set_item(intern!(py, "last"), self.last)?;
        doc.set_item(intern!(py, "n"), self.n)?;
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
        doc.set_item(intern!(py, "b"), entries)?;
        if self.scope == SESSION {
            let window = PyList::empty(py);
            for entry in &self.w {
                window.append(window_entry(py, entry)?)?;
            }
            doc.set_item(intern!(py, "w"), window)?;
        }
        Ok(doc)
    }

    /// Write the document's JSON (as pydantic's `to_json` writes the Python runner's dict).
    pub fn write_doc(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"e\":{\"app\":");
        write_str(out, &self.app);
        out.extend_from_slice(if self.scope == SESSION { b",\"session\":" } else { b",\"user\":" });
        write_str(out, &self.key);
        out.extend_from_slice(b"},\"last\":");
        write_f64(out, self.last);
        out.extend_from_slice(b",\"n\":");
        write_i64(out, self.n);
        out.extend_from_slice(b",\"b\":[");
        joined(out, &self.b, |out, e| e.write(out));
        out.push(b']');
        if self.scope == SESSION {
            out.extend_from_slice(b",\"w\":[");
            joined(out, &self.w, |out, (end, usd, requests, start)| {
                out.push(b'[');
                write_f64(out, *end);
                out.push(b',');
                write_f64(out, *usd);
                out.push(b',');
                write_i64(out, *requests);
                out.push(b',');
                write_f64(out, *start);
                out.push(b']');
            });
            out.push(b']');
        }
        out.push(b'}');
    }

    pub fn from_python(doc: &Bound<'_, PyDict>) -> PyResult<Self> {
        let py = doc.py();
        let field = |name: &str| -> PyResult<Bound<'_, PyAny>> {
            doc.get_item(name)?.ok_or_else(|| PyValueError::new_err(format!("no {name:?}")))
        };
        let entity = field("e")?;
        let entity = entity.cast::<PyDict>()?;
        let (scope, key) = match entity.get_item(intern!(py, "session"))? {
            Some(key) => (SESSION, key),
            None => (
                USER,
                entity
                    .get_item(intern!(py, "user"))?
                    .ok_or_else(|| PyValueError::new_err("no session or user"))?,
            ),
        };
        let app = entity.get_item(intern!(py, "app"))?.ok_or_else(|| PyValueError::new_err("no app"))?;
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
        if let Some(window) = doc.get_item(intern!(py, "w"))? {
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

/// Write `items` with `write`, separated by commas.
fn joined<T>(out: &mut Vec<u8>, items: impl IntoIterator<Item = T>, mut write: impl FnMut(&mut Vec<u8>, T)) {
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, item);
    }
}

fn write_i64(out: &mut Vec<u8>, x: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(x).as_bytes());
}
