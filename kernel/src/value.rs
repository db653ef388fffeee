//! A series input as Rust values, written out as a Python list (`route` makes the other inputs' lists
//! directly); JSON's float and string spellings; keys joined from their parts.

use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyList, PyString};

/// One field of a detector input (an input is a `List`). `Obj` is a value taken from the record as it
/// is (a str or None there), so the Python list holds the record's own object.
pub enum V<'py> {
    Obj(Bound<'py, PyAny>),
    Str(String),
    Static(&'static str),
    F(f64),
    I(i64),
    List(Vec<V<'py>>),
}

impl<'py> V<'py> {
    /// The value as a Python object: what the Python `route` puts in its lists.
    pub fn to_py(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self {
            V::Obj(value) => value.clone(),
            V::Str(text) => PyString::new(py, text).into_any(),
            V::Static(text) => PyString::new(py, text).into_any(),
            V::F(x) => PyFloat::new(py, *x).into_any(),
            V::I(x) => x.into_pyobject(py)?.into_any(),
            V::List(items) => {
                PyList::new(py, items.iter().map(|v| v.to_py(py)).collect::<PyResult<Vec<_>>>()?)?.into_any()
            }
        })
    }
}

/// `parts` written one after the other (a group key, an input id, an entity id): `format!` costs several
/// times more.
pub(crate) fn joined(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|part| part.len()).sum());
    for part in parts {
        out.push_str(part);
    }
    out
}

/// A JSON float: shortest round-trip digits; `NaN`, `Infinity` and `-Infinity` as pydantic writes them.
pub(crate) fn write_f64(out: &mut Vec<u8>, x: f64) {
    if x.is_finite() {
        if x.fract() == 0.0 && x.abs() < 1e15 && x != 0.0 {
            // a whole number (most are times: bucket starts and ends): its integer digits and ".0", what
            // ryu writes below 1e15, without ryu's search for the shortest digits (zero keeps its sign there)
            out.extend_from_slice(itoa::Buffer::new().format(x as i64).as_bytes());
            out.extend_from_slice(b".0");
            return;
        }
        out.extend_from_slice(ryu::Buffer::new().format_finite(x).as_bytes());
    } else if x.is_nan() {
        out.extend_from_slice(b"NaN");
    } else {
        out.extend_from_slice(if x > 0.0 { b"Infinity" } else { b"-Infinity" });
    }
}

/// A JSON string: quotes, backslashes and control characters escaped, the rest as UTF-8.
pub(crate) fn write_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    if !needs_escape(text.as_bytes()) {
        out.extend_from_slice(text.as_bytes()); // ids, names and times: nothing to escape
        out.push(b'"');
        return;
    }
    for byte in text.bytes() {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => out.extend_from_slice(format!("\\u{byte:04x}").as_bytes()),
            _ => out.push(byte),
        }
    }
    out.push(b'"');
}

/// Whether JSON must escape a byte of `text` (a control character, a quote or a backslash), eight bytes
/// at a time: ids and prompt hashes (64 hex digits) are most of what the kernel writes, and none has one.
fn needs_escape(text: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // nonzero iff some byte of `word` is below `n` (n <= 0x80): bytes of 0x80 and above never count
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH;
    let zero = |word: u64| below(word, 1);
    let mut words = text.chunks_exact(8);
    for chunk in &mut words {
        let word = u64::from_ne_bytes(chunk.try_into().expect("eight bytes"));
        if below(word, 0x20) | zero(word ^ (ONES * u64::from(b'"'))) | zero(word ^ (ONES * u64::from(b'\\')))
            != 0
        {
            return true;
        }
    }
    words.remainder().iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}
