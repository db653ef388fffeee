//! Python's float rounding, for values the kernel computes as the Python detectors do.

use pyo3::prelude::*;

/// Powers of ten that are exact as f64, for `round_to`'s fast path.
const POW10: [f64; 16] =
    [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];

/// Python's `round(x, digits)`: the nearest float to `x` correctly rounded to `digits` decimals (ties to
/// even, on the exact binary value, as CPython's `_Py_dg_dtoa` rounds).
///
/// Fast path: below 2**52 every integer and every half is a float, and rounding the product
/// `x * 10**digits` to a float is monotonic, so the float product lies on the same side of each of them
/// as the exact one, or on it: unless it is a half exactly (a tie, or too near one to tell), both round to
/// the same integer `n`. And `n / 10**digits` (both exact) is correctly rounded: the float nearest the
/// decimal Python makes. Otherwise the decimal is written and read back.
#[pyfunction]
pub fn round_to(x: f64, digits: usize) -> f64 {
    if !x.is_finite() {
        return x;
    }
    if let Some(&scale) = POW10.get(digits) {
        let scaled = x * scale;
        if scaled.abs() < 4.0e15 {
            let floor = scaled.floor();
            let fraction = scaled - floor;
            if fraction != 0.5 {
                let n = if fraction > 0.5 { floor + 1.0 } else { floor };
                // Python keeps the sign of a value that rounds to zero
                return if n == 0.0 { 0.0f64.copysign(x) } else { n / scale };
            }
        }
    }
    format!("{x:.digits$}").parse().unwrap_or(x)
}

/// `round(x, 7)`, as the runaway windows round USD.
pub fn round7(x: f64) -> f64 {
    round_to(x, 7)
}
