//! ISO 8601 times to epoch seconds, as Python's `datetime.fromisoformat(text).timestamp()` gives them.

use rustc_hash::FxHashMap;

use pyo3::prelude::*;
use pyo3::types::PyString;

/// Times already parsed in one call, by their text (a batch repeats few distinct times), and the str
/// object read last: an event's cost records share theirs, so most records need no lookup. The cache
/// holds that object, so no other object can take its address while it is compared with.
#[derive(Default)]
pub struct TimeCache {
    by_text: FxHashMap<String, f64>,
    last: Option<(Py<PyAny>, f64)>,
}

impl TimeCache {
    /// Epoch seconds of a record's time text (a str), parsed once per cache.
    pub fn parse(&mut self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<f64> {
        if let Some((last, t)) = &self.last {
            if last.as_ptr() == value.as_ptr() {
                return Ok(*t);
            }
        }
        let text = value.cast::<PyString>()?.to_str()?;
        let t = match self.by_text.get(text) {
            Some(t) => *t,
            None => {
                let t = parse_time(py, text)?;
                self.by_text.insert(text.to_owned(), t);
                t
            }
        };
        self.last = Some((value.clone().unbind(), t));
        Ok(t)
    }
}

/// Return epoch seconds of `text`; shapes other than the priced records' own go to Python's parser.
#[pyfunction]
pub fn parse_time(py: Python<'_>, text: &str) -> PyResult<f64> {
    match parse_fast(text) {
        Some(t) => Ok(t),
        None => parse_in_python(py, text),
    }
}

/// Python's own `datetime.fromisoformat(text).timestamp()`: its errors, its local time for naive times.
pub fn parse_in_python(py: Python<'_>, text: &str) -> PyResult<f64> {
    py.import("datetime")?
        .getattr("datetime")?
        .call_method1("fromisoformat", (text,))?
        .call_method0("timestamp")?
        .extract()
}

/// Epoch seconds of `YYYY-MM-DDTHH:MM:SS[.fff|.ffffff](Z|+HH:MM|-HH:MM)` for years 1970-2200; None for
/// anything else, invalid dates included (Python then parses it, or raises its own error).
///
/// Python computes `(dt - epoch) / timedelta(seconds=1)`: whole microseconds divided by 10**6, correctly
/// rounded. In these years the microseconds are below 2**53, so the f64 division rounds the same.
pub fn parse_fast(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(b, 0, 4)?;
    let (month, day) = (digits(b, 5, 2)?, digits(b, 8, 2)?);
    let (hour, minute, second) = (digits(b, 11, 2)?, digits(b, 14, 2)?, digits(b, 17, 2)?);
    if !(1970..=2200).contains(&year)
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b[i] == b'.' {
        let n = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        micros = match n {
            3 => digits(b, i + 1, 3)? * 1000,
            6 => digits(b, i + 1, 6)?,
            _ => return None,
        };
        i += 1 + n;
    }
    let offset = match &b[i..] {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (digits(b, i + 1, 2)?, digits(b, i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            (h * 3600 + m * 60) * if *sign == b'-' { -1 } else { 1 }
        }
        _ => return None,
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some((seconds * 1_000_000 + micros) as f64 / 1e6)
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    b.get(at..at + n)?.iter().try_fold(0i64, |v, c| c.is_ascii_digit().then(|| v * 10 + i64::from(c - b'0')))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
