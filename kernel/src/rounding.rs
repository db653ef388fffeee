//! Python's float rounding, for values the kernel computes as the Python detectors do.

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
