//! An app's session peers learn a waiting session's bucket, as
//! `TokenRunawayDetector.learn_peer(peers, seen, owned=True)` does (with `app_activity.add_traffic`):
//! on Rust values (`Peers`) between the runner's reads of them, or in place in the runner's dict
//! (`learn`) when it holds a shape `Peers` does not read.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString};

use crate::record::{at, number_or};
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
    let end_at = |i: usize| -> PyResult<f64> { at(&window.get_item(i)?, 0)?.extract() };
    let mut i = window.len();
    while i > 0 && end_at(i - 1)? > end {
        i -= 1;
    }
    if i > 0 && end_at(i - 1)? == end {
        let old = window.get_item(i - 1)?;
        let (usd0, req0): (f64, i64) = (at(&old, 1)?.extract()?, at(&old, 2)?.extract()?);
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
        let when: f64 = at(&old, 0)?.extract()?;
        let (old_usd, old_req): (f64, f64) = (at(&old, 1)?.extract()?, at(&old, 2)?.extract()?);
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
    } else if drop == 0 {
        return Ok(()); // the sums did not move: Python writes none of them (an int stays an int)
    }
    peers.set_item(intern!(py, "ct"), ct)?;
    peers.set_item(intern!(py, "cu"), cu)?;
    peers.set_item(intern!(py, "cq"), cq)?;
    Ok(())
}

/// The runner's peers of `app`: its dict, or a new one put in its place when it holds none or an empty
/// one (as `learn_peer(peers or {}, ...)` gives a new dict).
pub fn peers_of<'py>(
    py: Python<'py>,
    peers_by_app: &Bound<'py, PyDict>,
    app: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    Ok(match peers_by_app.get_item(app)? {
        Some(peers) if peers.is_truthy()? => peers.cast_into::<PyDict>()?,
        _ => {
            let peers = PyDict::new(py);
            peers_by_app.set_item(app, &peers)?;
            peers
        }
    })
}

/// The keys of a peer state the learning has written, in the order it first writes them.
const KEYS: [&str; 8] = ["c0", "ct", "cu", "cq", "cw", "m", "v", "n"];

/// An app's session peers as Rust values: the runner's dict read once, learned into, and written back
/// whole (`write`) before the runner reads it again. Its figures are those `learn` would leave in the dict.
pub struct Peers {
    sums: Option<[f64; 4]>,       // c0, ct, cu, cq: None until the first bucket is learned
    window: Vec<(f64, f64, i64)>, // cw: (end, USD, requests)
    mean: f64,
    var: f64,
    n: i64,
}

fn float(value: &Bound<'_, PyAny>) -> Option<f64> {
    value.cast::<PyFloat>().ok().map(|x| x.value())
}

fn int(value: &Bound<'_, PyAny>) -> Option<i64> {
    if value.is_instance_of::<PyBool>() {
        return None;
    }
    value.cast::<PyInt>().ok()?.extract().ok()
}

impl Peers {
    /// Read the runner's peers of an app (None or empty: none yet). None when the dict lacks one of the
    /// eight keys the learning writes, or holds a type it does not write there (floats, the counts ints):
    /// such a dict is learned in place (`learn`), so what the runner holds stays exactly what Python's
    /// learning would leave. Other keys (a restored state's version, `_v`) stay as they are.
    pub fn read(peers: Option<&Bound<'_, PyDict>>) -> PyResult<Option<Self>> {
        let fresh = Self { sums: None, window: Vec::new(), mean: 0.0, var: 0.0, n: 0 };
        let Some(peers) = peers.filter(|peers| !peers.is_empty()) else {
            return Ok(Some(fresh));
        };
        let py = peers.py();
        let mut values = Vec::with_capacity(KEYS.len());
        for key in KEYS {
            match peers.get_item(PyString::intern(py, key))? {
                Some(value) => values.push(value),
                None => return Ok(None),
            }
        }
        let floats: Option<Vec<f64>> = [0, 1, 2, 3, 5, 6].iter().map(|&i| float(&values[i])).collect();
        let (Some(floats), Some(n)) = (floats, int(&values[7])) else {
            return Ok(None);
        };
        let Ok(list) = values[4].cast::<PyList>() else {
            return Ok(None);
        };
        let mut window = Vec::with_capacity(list.len());
        for entry in list.iter() {
            let Ok(entry) = entry.cast_into::<PyList>() else {
                return Ok(None);
            };
            if entry.len() != 3 {
                return Ok(None);
            }
            let (end, usd, requests) = (entry.get_item(0)?, entry.get_item(1)?, entry.get_item(2)?);
            match (float(&end), float(&usd), int(&requests)) {
                (Some(end), Some(usd), Some(requests)) => window.push((end, usd, requests)),
                _ => return Ok(None),
            }
        }
        Ok(Some(Self {
            sums: Some([floats[0], floats[1], floats[2], floats[3]]),
            window,
            mean: floats[4],
            var: floats[5],
            n,
        }))
    }

    /// `learn` on these values.
    pub fn learn(&mut self, rate: f64, latest: (f64, f64, f64, i64), config: &PeerConfig) {
        self.add_traffic(latest, config);
        let alpha = config.alpha.max(1.0 / (self.n + 1) as f64);
        let diff = rate.ln_1p() - self.mean;
        let incr = alpha * diff;
        self.mean += incr;
        self.var = (1.0 - alpha) * (self.var + diff * incr);
        self.n = (self.n + 1).min(1_000_000);
    }

    fn add_traffic(&mut self, (start, end, usd, requests): (f64, f64, f64, i64), config: &PeerConfig) {
        let [_, ct, cu, cq] = self.sums.get_or_insert([start, start, 0.0, 0.0]);
        let window = &mut self.window;
        let mut i = window.len();
        while i > 0 && window[i - 1].0 > end {
            i -= 1;
        }
        if i > 0 && window[i - 1].0 == end {
            let (_, usd0, req0) = window[i - 1];
            window[i - 1] = (end, round7(usd0 + usd), req0 + requests);
        } else {
            window.insert(i, (end, usd, requests));
        }
        let edge = window[window.len() - 1].0 - config.window_s;
        let drop = window.iter().take_while(|entry| entry.0 <= edge).count();
        for &(when, old_usd, old_req) in &window[..drop] {
            let when = if when >= *ct { when } else { *ct };
            let factor = decay(*ct, when, config.tau_s);
            *cu = *cu * factor + old_usd;
            *cq = *cq * factor + old_req as f64;
            *ct = when;
        }
        window.drain(..drop);
        if edge > *ct {
            let factor = decay(*ct, edge, config.tau_s);
            *cu *= factor;
            *cq *= factor;
            *ct = edge;
        }
    }

    /// Write the values into the runner's `peers` of an app (a new dict when it holds none, or an empty
    /// one), key by key in the order the learning first writes them, as `learn` leaves the dict.
    pub fn write(
        &self,
        py: Python<'_>,
        peers_by_app: &Bound<'_, PyDict>,
        app: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let Some([c0, ct, cu, cq]) = self.sums else {
            return Ok(()); // nothing learned
        };
        let peers = peers_of(py, peers_by_app, app)?;
        let window = PyList::empty(py);
        for &(end, usd, requests) in &self.window {
            window.append(PyList::new(
                py,
                [
                    end.into_pyobject(py)?.into_any(),
                    usd.into_pyobject(py)?.into_any(),
                    requests.into_pyobject(py)?.into_any(),
                ],
            )?)?;
        }
        peers.set_item(intern!(py, "c0"), c0)?;
        peers.set_item(intern!(py, "ct"), ct)?;
        peers.set_item(intern!(py, "cu"), cu)?;
        peers.set_item(intern!(py, "cq"), cq)?;
        peers.set_item(intern!(py, "cw"), window)?;
        peers.set_item(intern!(py, "m"), self.mean)?;
        peers.set_item(intern!(py, "v"), self.var)?;
        peers.set_item(intern!(py, "n"), self.n)?;
        Ok(())
    }
}
