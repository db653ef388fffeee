//! Series inputs: a batch's charges summed per spend scope or storage bucket and minute, with an id
//! digested from the charges they hold and their sums per usage message (the Python `route`'s folds).

use blake2b_simd::Params;
use pyo3::prelude::*;

use crate::value::{joined, V};
use crate::FxIndexMap;

/// A charge group: one minute of one (team, project, model), as the Python code's `spend` values.
pub struct Spend {
    pub cost: f64,
    pub charges: Charges,
    pub parts: FxIndexMap<i64, f64>,
}

/// One storage bucket's minute: `[usd, quantity, charges, {offset: [usd, quantity]}]`.
pub struct Egress {
    pub usd: f64,
    pub quantity: f64,
    pub charges: Charges,
    pub parts: FxIndexMap<i64, (f64, f64)>,
}

/// A group's charge ids in order, as the bytes the digest reads: each one after U+001F. One buffer, not a
/// string per charge: a batch has a charge per cost record.
#[derive(Default)]
pub struct Charges(String);

impl Charges {
    pub fn push(&mut self, charge: &str) {
        self.0.push('\x1f');
        self.0.push_str(charge);
    }
}

/// A series input being folded: spend folds point at their charge groups, egress folds at their bucket.
enum Parts {
    Spend(Vec<usize>),
    Egress(usize),
}

/// One series input being summed.
struct Fold {
    cost: f64,
    quantity: f64,
    parts: Parts,
}

pub type GroupKey = (u64, String, Option<String>, Option<String>);
type FoldKey = (&'static str, String, &'static str, u64);

/// Append each fold's series input to `out` under its group key (`scope:key`); with a `source`, the
/// inputs carry it, the run's offset ranges and their sums per message.
pub fn fold_series<'py>(
    py: Python<'py>,
    spend: &FxIndexMap<GroupKey, Spend>,
    egress: &FxIndexMap<(String, u64), Egress>,
    source: &Option<Bound<'py, PyAny>>,
    messages: &[(i64, i64)],
    out: &mut FxIndexMap<String, Vec<Bound<'py, PyAny>>>,
) -> PyResult<()> {
    // per series and minute: the three spend scopes of each charge group, then the storage buckets
    let mut folds: FxIndexMap<FoldKey, Fold> = FxIndexMap::default();
    for (index, ((minute, team, project, model), sums)) in spend.iter().enumerate() {
        let keys = [("team", Some(team)), ("project", project.as_ref()), ("model", model.as_ref())];
        for (scope, key) in keys {
            let Some(key) = key.filter(|k| !k.is_empty()) else { continue };
            match folds.get_mut(&(scope, key.clone(), "spend_spike", *minute)) {
                None => {
                    folds.insert(
                        (scope, key.clone(), "spend_spike", *minute),
                        Fold { cost: sums.cost, quantity: 0.0, parts: Parts::Spend(vec![index]) },
                    );
                }
                Some(fold) => {
                    fold.cost += sums.cost;
                    if let Parts::Spend(groups) = &mut fold.parts {
                        groups.push(index);
                    }
                }
            }
        }
    }
    for (index, ((bucket, minute), sums)) in egress.iter().enumerate() {
        folds.insert(
            ("bucket", bucket.clone(), "egress_spike", *minute),
            Fold { cost: sums.usd, quantity: sums.quantity, parts: Parts::Egress(index) },
        );
    }
    let span = match (source, messages.is_empty()) {
        // the messages with records: one whose every event was known (another router stored its ids, and
        // its run of it holds them) is not claimed by this run
        (Some(_), false) => Some(ranges(messages.iter().filter(|(_, n)| *n > 0).map(|(offset, _)| *offset))),
        _ => None,
    };
    for ((scope, key, kind, minute), fold) in &folds {
        let charges: Vec<&Charges> = match &fold.parts {
            Parts::Spend(groups) => groups.iter().map(|g| &spend[*g].charges).collect(),
            Parts::Egress(index) => vec![&egress[*index].charges],
        };
        let mut fields = vec![
            V::Static("s"),
            V::Str(joined(&[scope, "|", &digest(kind, key, &charges)])),
            V::Static(kind),
            V::Static(scope),
            V::Str(key.clone()),
            V::F(f64::from_bits(*minute)),
            V::F(fold.cost),
            V::F(fold.quantity),
        ];
        if let (Some(source), Some(span)) = (source, &span) {
            fields.push(V::Obj(source.clone()));
            fields.push(V::List(span.iter().map(|(a, b)| V::List(vec![V::I(*a), V::I(*b)])).collect()));
            fields.push(per_message(&fold.parts, spend, egress));
        }
        out.entry(joined(&[scope, ":", key])).or_default().push(V::List(fields).to_py(py)?);
    }
    Ok(())
}

/// The series input's id digest: blake2b (12 bytes) of kind, key and charges joined by U+001F.
fn digest(kind: &str, key: &str, charges: &[&Charges]) -> String {
    let mut hasher = Params::new().hash_length(12).to_state();
    hasher.update(kind.as_bytes());
    hasher.update(b"\x1f");
    hasher.update(key.as_bytes());
    for group in charges {
        hasher.update(group.0.as_bytes());
    }
    hasher.finalize().to_hex().to_string() // lower-case, as Python's hexdigest
}

/// Ascending offsets as ranges of consecutive ones, `[(first, last), ...]`.
fn ranges(offsets: impl Iterator<Item = i64>) -> Vec<(i64, i64)> {
    let mut spans: Vec<(i64, i64)> = Vec::new();
    for offset in offsets {
        match spans.last_mut() {
            Some(last) if offset == last.1 + 1 => last.1 = offset,
            _ => spans.push((offset, offset)),
        }
    }
    spans
}

/// A fold's sums per message, `[[offset, usd, quantity], ...]` (the Python `_per_message`).
fn per_message<'py>(
    parts: &Parts,
    spend: &FxIndexMap<GroupKey, Spend>,
    egress: &FxIndexMap<(String, u64), Egress>,
) -> V<'py> {
    let rows: Vec<(i64, f64, f64)> = match parts {
        Parts::Egress(index) => {
            let mut rows: Vec<(i64, f64, f64)> =
                egress[*index].parts.iter().map(|(o, (usd, q))| (*o, *usd, *q)).collect();
            rows.sort_by_key(|row| row.0);
            rows
        }
        Parts::Spend(groups) if groups.len() == 1 => {
            spend[groups[0]].parts.iter().map(|(o, usd)| (*o, *usd, 0.0)).collect()
        }
        Parts::Spend(groups) => {
            let mut merged: FxIndexMap<i64, f64> = FxIndexMap::default();
            for group in groups {
                for (offset, usd) in &spend[*group].parts {
                    *merged.entry(*offset).or_insert(0.0) += usd;
                }
            }
            let mut rows: Vec<(i64, f64, f64)> = merged.into_iter().map(|(o, usd)| (o, usd, 0.0)).collect();
            rows.sort_by_key(|row| row.0);
            rows
        }
    };
    V::List(
        rows.into_iter()
            .map(|(offset, usd, quantity)| V::List(vec![V::I(offset), V::F(usd), V::F(quantity)]))
            .collect(),
    )
}
