//! `route`: a batch of priced cost records to detector inputs by group key.
//!
//! The twin of `route` in `streams/core/detector_feed.py`, whose docstring says what the inputs are;
//! this one gives the same dict (the same keys in the same order, the same items, floats summed in the
//! same order). Records must be dicts whose `x_` columns are str or None, as `Pricer` makes them.

use indexmap::map::Entry;
use pyo3::exceptions::PyKeyError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyList, PyString};

use crate::lanes::Lanes;
use crate::record::{get, is_text, item, optional_str, text};
use crate::series::{fold_series, Charges, Egress, GroupKey, Spend};
use crate::times::TimeCache;
use crate::value::joined;
use crate::FxIndexMap;

const INPUT_METERS: [&str; 3] = ["input_tokens", "cached_input_tokens", "cache_write_tokens"];
const OUTPUT_METERS: [&str; 2] = ["output_tokens", "reasoning_tokens"];
const UNALLOCATED: &str = "unallocated";

/// One LLM request's sums (`add_llm_record`): its first record (and its usage message's offset) and its
/// token and cost sums.
struct Usage<'py> {
    first: Bound<'py, PyDict>,
    offset: i64,
    event_id: Bound<'py, PyAny>,
    input: f64,
    output: f64,
    cost: f64,
}

/// A batch's LLM requests by event id, and which one the LLM record before was part of (a request's
/// records, one per meter, follow each other).
#[derive(Default)]
struct Usages<'py> {
    by_id: FxIndexMap<String, Usage<'py>>,
    last: Option<usize>,
}

/// A batch's inputs by group key, each already the Python list the Python `route` makes: built in place
/// as a record is read, not kept as Rust values to the end of the run and written out then.
type Inputs<'py> = FxIndexMap<String, Vec<Bound<'py, PyAny>>>;

/// Return the detector inputs of `records` by group key (see the Python `route`); with `lanes`, a dict,
/// put each lane's latest record time in it too, as `latest_by_lane` returns them.
#[pyfunction]
#[pyo3(signature = (records, fold_s = 60.0, *, source = None, messages = Vec::new(), lanes = None))]
pub fn route<'py>(
    py: Python<'py>,
    records: &Bound<'py, PyAny>,
    fold_s: f64,
    source: Option<Bound<'py, PyAny>>,
    messages: Vec<(i64, i64)>,
    lanes: Option<Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let mut seen = lanes.as_ref().map(|_| Lanes::default());
    let built = build(py, records, fold_s, source, messages, seen.as_mut())?;
    if let (Some(out), Some(seen)) = (lanes, seen) {
        seen.write_to(&out)?;
    }
    let result = PyDict::new(py);
    for (key, items) in built {
        result.set_item(key, PyList::new(py, items)?)?;
    }
    Ok(result)
}

fn build<'py>(
    py: Python<'py>,
    records: &Bound<'py, PyAny>,
    fold_s: f64,
    source: Option<Bound<'py, PyAny>>,
    messages: Vec<(i64, i64)>,
    mut lanes: Option<&mut Lanes>,
) -> PyResult<Inputs<'py>> {
    let k_charge = intern!(py, "x_ChargeId");
    let k_start = intern!(py, "ChargePeriodStart");
    let k_end = intern!(py, "ChargePeriodEnd");
    let k_cost = intern!(py, "EffectiveCost");
    let k_meter = intern!(py, "SkuMeter");
    let k_resource = intern!(py, "ResourceId");
    let k_util = intern!(py, "x_GpuUtilPct");
    let k_allocated = intern!(py, "x_GpuAllocated");
    let k_cluster = intern!(py, "x_Cluster");
    let k_team = intern!(py, "x_Team");
    let k_project = intern!(py, "x_Project");
    let k_model = intern!(py, "x_Model");
    let k_source = intern!(py, "x_SourceType");
    let k_event = intern!(py, "x_EventId");
    let k_quantity = intern!(py, "ConsumedQuantity");

    let mut out: Inputs<'py> = FxIndexMap::default();
    let mut spend: FxIndexMap<GroupKey, Spend> = FxIndexMap::default();
    let mut egress: FxIndexMap<(String, u64), Egress> = FxIndexMap::default();
    let mut usages = Usages::default();
    let mut times = TimeCache::default();
    let sized: &[(i64, i64)] = if source.is_some() { &messages } else { &[] };
    let mut sizes = sized.iter().copied();
    // the current message's offset and its records left (i64::MAX: past the last message)
    let (mut offset, mut left) = sizes.next().unwrap_or((0, i64::MAX));
    let mut last_group: Option<usize> = None; // the spend group of the record before

    for record in records.try_iter()? {
        let record = record?;
        let record = record.cast::<PyDict>()?;
        while left <= 0 {
            (offset, left) = sizes.next().unwrap_or((offset, i64::MAX));
        }
        left -= 1;
        let charge = item(record, k_charge)?;
        let t = times.parse(py, &item(record, k_start)?)?;
        let minute = (t / fold_s).floor() * fold_s;
        let cost_value = item(record, k_cost)?;
        let cost: f64 = cost_value.extract()?;
        let meter = get(record, k_meter)?;
        let meter_text = if meter.is_none() { None } else { Some(meter.cast::<PyString>()?.to_str()?) };
        let record_source = get(record, k_source)?;
        if let Some(lanes) = lanes.as_deref_mut() {
            lanes.see(record, &record_source, || Ok(t))?;
        }
        let team = get(record, k_team)?; // a GPU sample's input holds it too
        if meter_text == Some("gpu_hours") {
            let gpu = item(record, k_resource)?.str()?;
            let util = get(record, k_util)?;
            let util = if util.is_truthy()? { util.extract::<f64>()? } else { 0.0 };
            let item = PyList::new(
                py,
                [
                    intern!(py, "g").clone().into_any(),
                    charge.clone(),
                    PyFloat::new(py, t).into_any(),
                    PyFloat::new(py, times.parse(py, &item(record, k_end)?)?).into_any(),
                    PyFloat::new(py, util).into_any(),
                    PyBool::new(py, get(record, k_allocated)?.is_truthy()?).to_owned().into_any(),
                    cost_value.clone(),
                    get(record, k_cluster)?,
                    team.clone(),
                    gpu.clone().into_any(),
                ],
            )?;
            let key = joined(&["gpu:", gpu.to_str()?]);
            out.entry(key).or_default().push(item.into_any());
        } else if is_text(&record_source, "llm.request")? {
            let keys = (k_event, k_meter, k_quantity);
            add_llm_record(record, meter_text, cost, offset, &mut usages, keys)?;
        }
        let (project, model) = (get(record, k_project)?, get(record, k_model)?);
        let team_text = if team.is_truthy()? { team.cast::<PyString>()?.to_str()? } else { UNALLOCATED };
        let (project_text, model_text) = (optional_str(&project)?, optional_str(&model)?);
        let charge_text = charge.cast::<PyString>()?.to_str()?;
        // a request's records (one per meter) follow each other: most records join the group before
        let before = last_group.filter(|&at| {
            spend.get_index(at).is_some_and(|((m, t, p, md), _)| {
                *m == minute.to_bits()
                    && t == team_text
                    && p.as_deref() == project_text
                    && md.as_deref() == model_text
            })
        });
        let join = |sums: &mut Spend| {
            sums.cost += cost;
            sums.charges.push(charge_text);
            *sums.parts.entry(offset).or_insert(0.0) += cost;
        };
        let at = match before {
            Some(at) => {
                join(&mut spend[at]);
                at
            }
            None => {
                let group = (
                    minute.to_bits(),
                    team_text.to_owned(),
                    project_text.map(str::to_owned),
                    model_text.map(str::to_owned),
                );
                match spend.entry(group) {
                    Entry::Occupied(mut known) => {
                        join(known.get_mut());
                        known.index()
                    }
                    Entry::Vacant(new) => {
                        let at = new.index();
                        let mut charges = Charges::default();
                        charges.push(charge_text);
                        new.insert(Spend { cost, charges, parts: FxIndexMap::from_iter([(offset, cost)]) });
                        at
                    }
                }
            }
        };
        last_group = Some(at);
        if meter_text == Some("egress_gb") || meter_text == Some("storage_gb_months") {
            // a storage report opens the bucket's egress series at 0: quiet minutes count (as SeriesBucketer)
            let moved = meter_text == Some("egress_gb");
            let bucket = item(record, k_resource)?.str()?.to_str()?.to_owned();
            let sums = egress.entry((bucket, minute.to_bits())).or_insert_with(|| Egress {
                usd: 0.0,
                quantity: 0.0,
                charges: Charges::default(),
                parts: FxIndexMap::default(),
            });
            let (usd, quantity) = if moved {
                let quantity = record.get_item(k_quantity)?;
                (
                    cost,
                    match quantity {
                        Some(q) => q.extract::<f64>()?,
                        None => 0.0,
                    },
                )
            } else {
                (0.0, 0.0)
            };
            sums.usd += usd;
            sums.quantity += quantity;
            sums.charges.push(charge_text);
            match sums.parts.get_mut(&offset) {
                None => {
                    sums.parts.insert(offset, (usd, quantity));
                }
                Some(part) => {
                    part.0 += usd;
                    part.1 += quantity;
                }
            }
        }
    }

    fold_series(py, &spend, &egress, &source, &messages, &mut out)?;
    for (_, usage) in usages.by_id {
        let first = &usage.first;
        let app = get(first, intern!(py, "x_App"))?;
        let app_key = if app.is_truthy()? { text(&app)? } else { UNALLOCATED.to_owned() };
        let empty = intern!(py, "");
        let or_empty = |key: &Bound<'py, PyString>| -> PyResult<Bound<'py, PyAny>> {
            let value = get(first, key)?;
            Ok(if value.is_truthy()? { value } else { empty.clone().into_any() })
        };
        let prompt = get(first, intern!(py, "x_PromptHash"))?;
        let fields = [
            intern!(py, "u").clone().into_any(),
            usage.event_id.clone(),
            PyFloat::new(py, times.parse(py, &item(first, k_start)?)?).into_any(),
            if app.is_truthy()? { app } else { intern!(py, UNALLOCATED).clone().into_any() },
            or_empty(intern!(py, "x_User"))?,
            or_empty(intern!(py, "x_Session"))?,
            or_empty(k_model)?,
            whole(py, usage.input)?,
            whole(py, usage.output)?,
            PyFloat::new(py, usage.cost).into_any(),
            if prompt.is_truthy()? { prompt } else { py.None().into_bound(py) },
            get(first, k_team)?,
        ];
        let item = if source.is_some() {
            // its usage message's offset last: the detectors judge it by the run
            PyList::new(py, fields.into_iter().chain([usage.offset.into_pyobject(py)?.into_any()]))?
        } else {
            PyList::new(py, fields)?
        };
        out.entry(joined(&["app:", &app_key])).or_default().push(item.into_any());
    }
    Ok(out)
}

/// Python's `int(x)` of a token sum: an i64 when it fits, else Python's own int (or its error: a
/// token count that is not finite is not one).
fn whole(py: Python<'_>, x: f64) -> PyResult<Bound<'_, PyAny>> {
    if x.is_finite() && x.abs() < 9.0e18 {
        return Ok((x as i64).into_pyobject(py)?.into_any());
    }
    py.import("builtins")?.getattr("int")?.call1((x,))
}

/// Fold one LLM cost record, of the usage message at `offset`, into its request's running sums (keyed by
/// `x_EventId`); `keys`: the event id's, the meter's and the quantity's column names.
fn add_llm_record<'py>(
    record: &Bound<'py, PyDict>,
    meter: Option<&str>,
    cost: f64,
    offset: i64,
    usages: &mut Usages<'py>,
    keys: (&Bound<'py, PyString>, &Bound<'py, PyString>, &Bound<'py, PyString>),
) -> PyResult<()> {
    let (k_event, k_meter, k_quantity) = keys;
    let event_id = item(record, k_event)?;
    let id = event_id.cast::<PyString>()?.to_str()?;
    let Usages { by_id, last } = usages;
    let before = last.filter(|&at| by_id.get_index(at).is_some_and(|(key, _)| key == id));
    let at = match before.or_else(|| by_id.get_index_of(id)) {
        Some(at) => at,
        None => {
            let usage = Usage {
                first: record.clone(),
                offset,
                event_id: event_id.clone(),
                input: 0.0,
                output: 0.0,
                cost: 0.0,
            };
            by_id.insert_full(id.to_owned(), usage).0
        }
    };
    *last = Some(at);
    let acc = &mut by_id[at];
    // the record's meter and cost, as route has just read them; an LLM record must have a meter
    let meter = meter.ok_or_else(|| PyKeyError::new_err(k_meter.clone().unbind()))?;
    if INPUT_METERS.contains(&meter) {
        acc.input += item(record, k_quantity)?.extract::<f64>()?;
    } else if OUTPUT_METERS.contains(&meter) {
        acc.output += item(record, k_quantity)?.extract::<f64>()?;
    }
    acc.cost += cost;
    Ok(())
}
