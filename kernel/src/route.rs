//! `route`: a batch of priced cost records to detector inputs by group key; `route_runs`: the same inputs
//! by partition, as run items.
//!
//! The twins of `route` and `route_runs` in `streams/core/detector_feed.py`, whose docstrings say what
//! the inputs are; these give the same dicts (the same keys in the same order, the same items, floats
//! summed in the same order), except that `route_runs` keeps a run item's LLM requests as Rust values
//! (`requests.rs`). Records must be dicts whose `x_` columns are str or None, as `Pricer` makes them.

use indexmap::map::Entry;
use pyo3::exceptions::PyKeyError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyList, PyString};

use crate::lanes::Lanes;
use crate::record::{at, get, is_text, item, optional_str, text};
use crate::requests::{lists, Request, Requests};
use crate::series::{fold_series, Charges, Egress, GroupKey, Spend};
use crate::times::TimeCache;
use crate::value::joined;
use crate::FxIndexMap;

const INPUT_METERS: [&str; 3] = ["input_tokens", "cached_input_tokens", "cache_write_tokens"];
const OUTPUT_METERS: [&str; 2] = ["output_tokens", "reasoning_tokens"];
const UNALLOCATED: &str = "unallocated";

/// One LLM request's sums (`add_llm_record`): its first record (and its usage message's offset, and the
/// time, model and team `route` read of it already) and its token and cost sums.
struct Usage<'py> {
    first: Bound<'py, PyDict>,
    offset: i64,
    time: f64,
    model: Bound<'py, PyAny>,
    team: Bound<'py, PyAny>,
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

/// A batch's LLM requests by group key (`app:<app>`; those keys come after all of `Inputs`' in `route`'s
/// dict), kept as Rust values: `route` makes their lists, `route_runs` hands them on as they are.
type AppRequests = FxIndexMap<String, Vec<Request>>;

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
    let (built, requests) = build(py, records, fold_s, source, messages, lanes)?;
    let result = PyDict::new(py);
    for (key, items) in built {
        result.set_item(key, PyList::new(py, items)?)?;
    }
    for (key, items) in requests {
        result.set_item(key, lists(py, &items)?)?;
    }
    Ok(result)
}

/// A partition's share of a run: its inputs by kind (`by_partition`'s run item).
#[derive(Default)]
struct Run<'py> {
    gpus: Vec<Bound<'py, PyAny>>,
    requests: Vec<Request>,
    series: Vec<Bound<'py, PyAny>>,
}

/// Return a run's inputs by partition, one run item each, as `by_partition(route(...))` gives them
/// (`route_runs` in `streams/core/detector_feed.py`), except that a run item's requests are one
/// `Requests` (their lists made only when read) instead of a list. `partition_of(group_key)` is called
/// once per group key.
#[pyfunction]
#[pyo3(signature = (records, partition_of, fold_s = 60.0, *, source, messages, lanes = None))]
pub fn route_runs<'py>(
    py: Python<'py>,
    records: &Bound<'py, PyAny>,
    partition_of: &Bound<'py, PyAny>,
    fold_s: f64,
    source: Bound<'py, PyAny>,
    messages: Vec<(i64, i64)>,
    lanes: Option<Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let span = PyList::new(py, spanned(&messages))?;
    let (built, requests) = build(py, records, fold_s, Some(source.clone()), messages, lanes)?;
    let mut runs: FxIndexMap<i64, (Bound<'py, PyAny>, Run<'py>)> = FxIndexMap::default();
    for (key, items) in built {
        let is_gpu = match items.first() {
            Some(first) => is_text(&at(first, 0)?, "g")?,
            None => continue,
        };
        let run = run_of(&mut runs, partition_of, &key)?;
        if is_gpu { &mut run.gpus } else { &mut run.series }.extend(items);
    }
    for (key, items) in requests {
        for request in &items {
            request.check(py)?; // what `route` raises for a token sum that is not finite, here too
        }
        run_of(&mut runs, partition_of, &key)?.requests.extend(items);
    }
    let result = PyDict::new(py);
    for (partition, run) in runs.into_values() {
        let requests = Bound::new(py, Requests { items: run.requests })?.into_any();
        let item = PyList::new(
            py,
            [
                intern!(py, "r").clone().into_any(),
                source.clone(),
                span.clone().into_any(),
                PyList::new(py, run.gpus)?.into_any(),
                requests,
                PyList::new(py, run.series)?.into_any(),
            ],
        )?;
        result.set_item(partition, PyList::new(py, [item])?)?;
    }
    Ok(result)
}

/// The run of `key`'s partition (`partition_of(key)`), new if none is yet.
fn run_of<'a, 'py>(
    runs: &'a mut FxIndexMap<i64, (Bound<'py, PyAny>, Run<'py>)>,
    partition_of: &Bound<'py, PyAny>,
    key: &str,
) -> PyResult<&'a mut Run<'py>> {
    let partition = partition_of.call1((key,))?;
    let number: i64 = partition.extract()?;
    Ok(&mut runs.entry(number).or_insert_with(|| (partition, Run::default())).1)
}

/// The offset ranges a run's inputs stand for: those of its messages with records (`_spanned`).
fn spanned(messages: &[(i64, i64)]) -> Vec<[i64; 2]> {
    let mut ranges: Vec<[i64; 2]> = Vec::new();
    for &(offset, _) in messages.iter().filter(|(_, records)| *records != 0) {
        match ranges.last_mut() {
            Some(last) if last[1] + 1 == offset => last[1] = offset,
            _ => ranges.push([offset, offset]),
        }
    }
    ranges
}

/// Read the records into their inputs; with `lanes_out`, put each lane's latest record time in it too.
fn build<'py>(
    py: Python<'py>,
    records: &Bound<'py, PyAny>,
    fold_s: f64,
    source: Option<Bound<'py, PyAny>>,
    messages: Vec<(i64, i64)>,
    lanes_out: Option<Bound<'py, PyDict>>,
) -> PyResult<(Inputs<'py>, AppRequests)> {
    let mut seen = lanes_out.as_ref().map(|_| Lanes::default());
    let mut lanes = seen.as_mut();
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
        }
        let (project, model) = (get(record, k_project)?, get(record, k_model)?);
        if meter_text != Some("gpu_hours") && is_text(&record_source, "llm.request")? {
            let keys = (k_event, k_meter, k_quantity);
            add_llm_record(record, meter_text, cost, offset, &mut usages, keys, (t, &model, &team))?;
        }
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
    let mut requests = AppRequests::default();
    let empty = intern!(py, "");
    for (_, usage) in usages.by_id {
        let first = &usage.first;
        let app = get(first, intern!(py, "x_App"))?;
        let app_key = if app.is_truthy()? { text(&app)? } else { UNALLOCATED.to_owned() };
        let or_empty = |value: Bound<'py, PyAny>| -> PyResult<Py<PyAny>> {
            Ok(if value.is_truthy()? { value } else { empty.clone().into_any() }.unbind())
        };
        let prompt = get(first, intern!(py, "x_PromptHash"))?;
        let request = Request {
            event_id: usage.event_id.unbind(),
            time: usage.time,
            app: if app.is_truthy()? { app } else { intern!(py, UNALLOCATED).clone().into_any() }.unbind(),
            user: or_empty(get(first, intern!(py, "x_User"))?)?,
            session: or_empty(get(first, intern!(py, "x_Session"))?)?,
            model: or_empty(usage.model)?,
            input: usage.input,
            output: usage.output,
            cost: usage.cost,
            prompt: if prompt.is_truthy()? { prompt } else { py.None().into_bound(py) }.unbind(),
            team: usage.team.unbind(),
            // its usage message's offset last: the detectors judge it by the run
            offset: source.is_some().then_some(usage.offset),
        };
        requests.entry(joined(&["app:", &app_key])).or_default().push(request);
    }
    if let (Some(out), Some(seen)) = (lanes_out, seen) {
        seen.write_to(&out)?;
    }
    Ok((out, requests))
}

/// Fold one LLM cost record, of the usage message at `offset`, into its request's running sums (keyed by
/// `x_EventId`); `keys`: the event id's, the meter's and the quantity's column names; `read`: the record's
/// time, model and team, as `route` has read them.
fn add_llm_record<'py>(
    record: &Bound<'py, PyDict>,
    meter: Option<&str>,
    cost: f64,
    offset: i64,
    usages: &mut Usages<'py>,
    keys: (&Bound<'py, PyString>, &Bound<'py, PyString>, &Bound<'py, PyString>),
    (time, model, team): (f64, &Bound<'py, PyAny>, &Bound<'py, PyAny>),
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
                time,
                model: model.clone(),
                team: team.clone(),
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
