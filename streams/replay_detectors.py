"""Replay's detector stage: the stream's detector code in-process over priced records -> alerts.jsonl.

The same ``route``, ``PartitionDetectors`` and ``finding_alert`` the stream runs (one partition holds
every group), with event time from a ``Watermark`` that trusts file order (the latest time read), so
the alerts carry the event times the stream would give them and a backtest measures detection delay.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from detectors.config import DetectorConfig
from streams.core.detector_feed import SEEN, PartitionDetectors, Watermark, finding_alert, tick
from streams.core.detector_kernel import KernelMode, load_feed

ALERTS_FILE = "alerts.jsonl"


class ReplayDetectors:
    """Feed priced records to the detectors; write each alert record as one line of ``alerts.jsonl``."""

    def __init__(
        self, out_dir: Path, config: DetectorConfig | None = None, kernel: KernelMode = "auto"
    ) -> None:
        self.detectors = PartitionDetectors(0, config)
        self.loops = load_feed(kernel)
        # Replay reads in time order: no lane lags another, so event time is the latest time read.
        self.watermark = Watermark(idle_source_s=0.0, lanes=self.loops.latest_by_lane)
        self.seen: set[str] = set()
        self.alerts = 0
        self.findings = 0
        out_dir.mkdir(parents=True, exist_ok=True)
        self._out = open(out_dir / ALERTS_FILE, "w")  # noqa: SIM115 - closed by close()

    def feed(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Run the detectors over one chunk of priced records."""
        records = list(records)
        lanes: dict[str, float] = {}
        items = [item for group in self.loops.route(records, lanes=lanes).values() for item in group]
        event_time = self.watermark.observe(records, lanes=lanes)
        if event_time is not None:
            items.append(tick(event_time))
        done = self.detectors.apply(items, self._known)
        self.seen.update(key for key, _ in done.entries if key.startswith(SEEN))
        self.findings += len(done.findings)
        for finding in done.findings:
            alert = finding_alert(finding)
            if alert is not None:
                self._out.write(alert.model_dump_json())
                self._out.write("\n")
                self.alerts += 1

    def _known(self, keys: Sequence[str]) -> list[bool]:
        return [key in self.seen for key in keys]

    def close(self) -> None:
        """Close ``alerts.jsonl`` (findings still open at the end of the file stay open: no resolve)."""
        self._out.close()

    def __enter__(self) -> ReplayDetectors:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
