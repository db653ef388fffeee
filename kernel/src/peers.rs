//! An app's session peers learn a waiting session's bucket in place, as
//! `TokenRunawayDetector.learn_peer(peers, seen, owned=True)` does (with `app_activity.add_traffic`).

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::record::number_or;
use crate::rounding::round7;

pub struct PeerConfig {
    pub window_s: f64,
    pub tau_s: f64,
    pub alpha: f64,
}

fn decay(last: f64, now: f64, tau_s: f64) -> f64 {
    // detectors.app_activity._decay: math.exp(-max(0.0, now - last) / tau_s)
    let gap = now - last;
    (-(if gap > 0.0 { gap } else { 0.0 }) / tau_s).exp()
}

/// Learn a session's windowed `rate` and its latest bucket `(start, end, usd, requests)` into `peers`.
pub fn learn(
    py: Python<'_>,
    peers: &Bound<'_, PyDict>,
    rate: f64,
    latest: (f64, f64, f64, i64),
    config: &PeerConfig,
) -> PyResult<()> {
    add_traffic(py, peers, latest, config)?;
    let n: i64 = number_or(peers, intern!(py, "n"), 0)?;
    let alpha = config.alpha.max(1.0 / (n + 1) as f64);
    let (mean, var) = (number_or(peers, intern!(py, "m"), 0.0)?, number_or(peers, intern!(py, "v"), 0.0)?);
    let x = rate.ln_1p();
    let diff = x - mean;
    let incr = alpha * diff;
    peers.set_item(intern!(py, "m"), mean + incr)?;
    peers.set_item(intern!(py, "v"), (1.0 - alpha) * (var + diff * incr))?;
    peers.set_item(intern!(py, "n"), (n + 1).min(1_000_000))?;
    Ok(())
}

fn add_traffic(
    py: Python<'_>,
    peers: &Bound<'_, PyDict>,
    (start, end, usd, requests): (f64, f64, f64, i64),
    config: &PeerConfig,
) -> PyResult<()> {
    let window = match peers.get_item(intern!(py, "cw"))? {
        Some(window) => window.cast_into::<PyList>()?,
        None => PyList::empty(py),
    };
    if !peers.contains(intern!(py, "c0"))? {
        peers.set_item(intern!(py, "c0"), start)?;
        peers.set_item(intern!(py, "ct"), start)?;
        peers.set_item(intern!(py, "cu"), 0.0)?;
        peers.set_item(intern!(py, "cq"), 0.0)?;
    }
    peers.set_item(intern!(py, "cw"), &window)?;
    let end_at = |i: usize| -> PyResult<f64> { window.get_item(i)?.get_item(0)?.extract() };
    let mut i = window.len();
    while i > 0 && end_at(i - 1)? > end {
        i -= 1;
    }
    if i > 0 && end_at(i - 1)? == end {
        let old = window.get_item(i - 1)?;
        let (usd0, req0): (f64, i64) = (old.get_item(1)?.extract()?, old.get_item(2)?.extract()?);
        let entry = PyList::new(
            py,
            [
                end.into_pyobject(py)?.into_any(),
                round7(usd0 + usd).into_pyobject(py)?.into_any(),
                (req0 + requests).into_pyobject(py)?.into_any(),
            ],
        )?;
        window.set_item(i - 1, entry)?;
    } else {
        let entry = PyList::new(
            py,
            [
                end.into_pyobject(py)?.into_any(),
                usd.into_pyobject(py)?.into_any(),
                requests.into_pyobject(py)?.into_any(),
            ],
        )?;
        window.insert(i, entry)?;
    }
    let latest = end_at(window.len() - 1)?;
    let edge = latest - config.window_s;
    let (mut ct, mut cu, mut cq) = (
        number_or(peers, intern!(py, "ct"), 0.0)?,
        number_or(peers, intern!(py, "cu"), 0.0)?,
        number_or(peers, intern!(py, "cq"), 0.0)?,
    );
    let mut drop = 0;
    while drop < window.len() && end_at(drop)? <= edge {
        let old = window.get_item(drop)?;
        let when: f64 = old.get_item(0)?.extract()?;
        let (old_usd, old_req): (f64, f64) = (old.get_item(1)?.extract()?, old.get_item(2)?.extract()?);
        let when = if when >= ct { when } else { ct };
        let factor = decay(ct, when, config.tau_s);
        cu = cu * factor + old_usd;
        cq = cq * factor + old_req;
        ct = when;
        drop += 1;
    }
    if drop > 0 {
        window.del_slice(0, drop)?;
    }
    if edge > ct {
        let factor = decay(ct, edge, config.tau_s);
        cu *= factor;
        cq *= factor;
        ct = edge;
    }
    peers.set_item(intern!(py, "ct"), ct)?;
    peers.set_item(intern!(py, "cu"), cu)?;
    peers.set_item(intern!(py, "cq"), cq)?;
    Ok(())
}
