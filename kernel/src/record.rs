//! Reading a cost record or a detector state (Python dicts) as the Python code does.

use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

/// `record[key]`, with Python's `KeyError` when it is missing.
pub fn item<'py>(record: &Bound<'py, PyDict>, key: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
    record.get_item(key)?.ok_or_else(|| PyKeyError::new_err(key.clone().unbind()))
}

/// `sequence[index]` for a non-negative index: a list's item read directly (the states' windows and
/// entries are lists), anything else through Python's `[]`, which builds an int for the index.
pub fn at<'py>(sequence: &Bound<'py, PyAny>, index: usize) -> PyResult<Bound<'py, PyAny>> {
    match sequence.cast::<PyList>() {
        Ok(list) => list.get_item(index),
        Err(_) => sequence.get_item(index),
    }
}

/// `value == text`, with no str made to compare a str with.
pub fn is_text(value: &Bound<'_, PyAny>, text: &str) -> PyResult<bool> {
    match value.cast::<PyString>() {
        Ok(value) => Ok(value.to_str().is_ok_and(|value| value == text)), // a lone surrogate equals no &str
        Err(_) => value.eq(text),
    }
}

/// `record.get(key)`: None when missing.
pub fn get<'py>(record: &Bound<'py, PyDict>, key: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
    Ok(record.get_item(key)?.unwrap_or_else(|| record.py().None().into_bound(record.py())))
}

/// A str column's text (a `TypeError` for anything but a str).
pub fn text(value: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(value.cast::<PyString>()?.to_str()?.to_owned())
}

/// A str column that may be None, borrowed.
pub fn optional_str<'a>(value: &'a Bound<'_, PyAny>) -> PyResult<Option<&'a str>> {
    if value.is_none() {
        Ok(None)
    } else {
        Ok(Some(value.cast::<PyString>()?.to_str()?))
    }
}

/// `mapping.get(key, default)` for a number (a `TypeError` for anything else that is there).
pub fn number_or<'py, T>(mapping: &Bound<'py, PyDict>, key: &Bound<'py, PyString>, default: T) -> PyResult<T>
where
    T: pyo3::conversion::FromPyObjectOwned<'py, Error = PyErr>,
{
    match mapping.get_item(key)? {
        Some(value) => value.extract(),
        None => Ok(default),
    }
}
