"""NAB runner: score NAB-style series with the spike scorer and write NAB's results format.

Input is a NAB data folder (``<category>/<series>.csv`` with ``timestamp,value``) and NAB's
``labels/combined_windows.json``. Output per series is ``timestamp,value,anomaly_score,label`` under
``<out>/<detector>/<category>/<detector>_<series>.csv``, which NAB's own scorer reads. The scorer is
``SpikeScorer`` with a protected baseline (a flagged row is not learned), as in the stream.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Hashable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from detectors.config import SpikeConfig
from detectors.eval import DAY_S, KindReport, Window, evaluate, merge_reports
from detectors.findings import Finding
from detectors.spikes import SpikeScorer

DETECTOR_NAME = "burnwatchSpike"
THRESHOLD = 0.5
MERGE_GAP = 12  # flagged rows closer than this (an hour at 5-minute steps) are one alarm


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def read_series(path: Path) -> list[tuple[str, float]]:
    """Read one NAB CSV into ``(timestamp text, value)`` rows."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [(row["timestamp"], float(row["value"])) for row in csv.DictReader(handle)]


def series_config(values: Sequence[float], base: SpikeConfig | None = None) -> SpikeConfig:
    """Adapt the spend defaults to a series of any unit: the log floor scales with the series' median.

    >>> series_config([10.0, 20.0, 30.0]).floor_usd
    0.2
    """
    base = base or SpikeConfig()
    head = [abs(v) for v in values[: max(10, len(values) // 7)]]
    floor = max(1e-6, 0.01 * statistics.median(head)) if head else base.floor_usd
    return base.model_copy(update={"floor_usd": floor, "min_excess_usd": 0.0})


def score_series(values: Sequence[float], config: SpikeConfig | None = None) -> list[float]:
    """Return one anomaly score per value: score first, then learn unless flagged (river's filter).

    >>> scores = score_series([10.0] * 40 + [100.0] + [10.0] * 5)
    >>> [i for i, s in enumerate(scores) if s >= 0.5]
    [40]
    """
    scorer = SpikeScorer(series_config(values, config))
    out = []
    for value in values:
        x: dict[Hashable, Any] = {"usd": value}
        s = scorer.score_one(x)
        out.append(s)
        if s < THRESHOLD:
            scorer.learn_one(x)
    return out


def _in_windows(stamp: str, windows: Sequence[Sequence[str]]) -> int:
    t = _time(stamp)
    return int(any(_time(a[:19]) <= t <= _time(b[:19]) for a, b in windows))


def _series(data_dir: Path, labels: Mapping[str, Sequence[Sequence[str]]]) -> Iterator[tuple[str, Path]]:
    for key in sorted(labels):
        path = data_dir / key
        if path.is_file():
            yield key, path


def write_nab_results(
    data_dir: Path,
    out: Path,
    labels: Mapping[str, Sequence[Sequence[str]]],
    config: SpikeConfig | None = None,
) -> list[Path]:
    """Write a results CSV for every labeled series found under ``data_dir``; return their paths."""
    written = []
    for key, path in _series(data_dir, labels):
        rows = read_series(path)
        scores = score_series([v for _, v in rows], config)
        category, name = key.split("/", 1)
        target = out / DETECTOR_NAME / category / f"{DETECTOR_NAME}_{name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["timestamp", "value", "anomaly_score", "label"])
            for (stamp, value), s in zip(rows, scores, strict=True):
                writer.writerow([stamp, value, round(s, 6), _in_windows(stamp, labels[key])])
        written.append(target)
    return written


def evaluate_nab(
    data_dir: Path, labels: Mapping[str, Sequence[Sequence[str]]], config: SpikeConfig | None = None
) -> dict[str, KindReport]:
    """Window-level precision, recall and delay per NAB category (alarm = a run of flagged rows)."""
    groups = []
    for key, path in _series(data_dir, labels):
        rows = read_series(path)
        scores = score_series([v for _, v in rows], config)
        category = key.split("/", 1)[0]
        windows = [
            Window(category, key, _time(a[:19]).timestamp(), _time(b[:19]).timestamp(), grace_s=0.0)
            for a, b in labels[key]
        ]
        findings, last = [], -MERGE_GAP - 1
        for i, s in enumerate(scores):
            if s >= THRESHOLD:
                if i - last > MERGE_GAP:
                    moment = _time(rows[i][0])
                    findings.append(
                        Finding(category, {"series": key}, "open", "warning", "spike", moment, moment)
                    )
                last = i
        span = (_time(rows[-1][0]) - _time(rows[0][0])).total_seconds() if rows else 0.0
        groups.append(evaluate(findings, windows, {category: span / DAY_S}).reports)
    return merge_reports(groups)
