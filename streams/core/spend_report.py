"""Spend reports from ``spend.windows`` records: latest per key, partitions added, one row per window.

Used by ``burnwatch spend`` on the live topic and on replay's ``spend.jsonl`` alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from streams.core.shared_costs import SharedCostsConfig
from streams.core.spend import merge_window_values, partition_values


def latest_records(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Keep the latest record of each (window, partition), as a compacted topic would.

    >>> a = {"kind": "window", "granularity": "day", "window_start": "d", "dimension": "team",
    ...      "value": "x", "partition": 0, "usd": 1.0}
    >>> [r["usd"] for r in latest_records([a, {**a, "usd": 2.0}, {**a, "partition": 1, "usd": 5.0}])]
    [2.0, 5.0]
    """
    latest: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    for record in records:
        ident = (record["kind"], record["granularity"], record["window_start"], record["dimension"],
                 record["value"], record["partition"])
        latest[ident] = record
    return list(latest.values())


def spend_rows(
    records: Iterable[Mapping[str, Any]],
    *,
    by: str,
    period: str,
    last: int | None = None,
    shared_costs: SharedCostsConfig | None = None,
) -> list[dict[str, Any]]:
    """Return one row per (window, value) of dimension ``by`` at granularity ``period``, newest last.

    Rows carry the merged totals (``usd``, ``list_usd``, ``charges``, ``events``,
    ``unallocated_usd``, ``closed``), ``kind`` (``window`` or ``correction``), ``tag_compliance``
    (allocated / total) and, where present, ``unit_economics`` and the settled ``shared`` splits.
    ``last`` keeps the newest N window starts.

    >>> base = {"granularity": "day", "window_start": "2026-01-01T00:00:00+00:00", "dimension": "team",
    ...         "window_end": "2026-01-02T00:00:00+00:00", "list_usd": 0.0, "charges": 1, "events": 1,
    ...         "unallocated_usd": 0.0}
    >>> recs = [{**base, "kind": "window", "value": "a", "partition": p, "usd": 1.5} for p in (0, 1)]
    >>> [(r["value"], r["usd"]) for r in spend_rows(recs, by="team", period="day")]
    [('a', 3.0)]
    """
    chosen = [r for r in latest_records(records) if r["dimension"] == by and r["granularity"] == period]
    starts = sorted({r["window_start"] for r in chosen})
    if last is not None:
        keep = set(starts[-last:]) if last > 0 else set()
        chosen = [r for r in chosen if r["window_start"] in keep]
    rows = []
    for (kind, granularity, start, dimension, value), parts in partition_values(chosen):
        merged = merge_window_values(parts)
        usd = merged["usd"]
        row = {"kind": kind, "granularity": granularity, "window_start": start,
               "window_end": parts[0]["window_end"], "dimension": dimension, "value": value,
               "partitions": len(parts), **merged,
               "tag_compliance": (usd - merged["unallocated_usd"]) / usd if usd else None}
        if "shared" in merged and shared_costs is not None:
            row["shared"] = settle_shared(merged["shared"], shared_costs)
        rows.append(row)
    rows.sort(key=lambda r: (r["window_start"], r["kind"] != "window", -r["usd"], r["value"]))
    return rows


def settle_shared(pools: Mapping[str, Any], config: SharedCostsConfig) -> list[dict[str, Any]]:
    """Split each rule's pooled spend to its recipients (showback or chargeback), as in the config."""
    out = []
    for rule in config.rules:
        amount = pools["pooled_usd"].get(rule.name)
        if amount is None:
            continue
        shares = rule.split_amount(amount, pools["usage_usd"].get(rule.name, {}))
        out.append({"rule": rule.name, "mode": config.mode, "dimension": rule.dimension,
                    "method": rule.split, "amount_usd": amount, "shares_usd": shares})
    return out
