"""``burnwatch lag``: how far the worker and the notifier are behind their input topics.

The lag of a partition is its end offset minus the offset its consumer group committed (nothing
committed: the whole partition). ``--wait`` blocks until every input is read (lag 0 on two checks in
a row; while no input topic exists yet, nothing counts as read) and exits 1 if that does not happen
within ``--timeout``: scripts (the demo, a deploy's smoke test) wait on it before they read the
outputs. It only reads committed offsets; it never joins a group.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from streams.names import (
    ALERTS,
    ALERTS_BY_TEAM,
    BUDGET_CHARGES,
    COSTS_PRICED,
    DETECTOR_INPUTS,
    USAGE_TOPICS,
)
from streams.settings import Settings

console = Console()


@dataclass(frozen=True)
class TopicLag:
    """One consumer group's lag on one topic, summed over its partitions."""

    group: str
    topic: str
    committed: int
    end: int
    lag: int


GROUPS = ("all", "worker", "notifier")


def group_inputs(settings: Settings, which: str = "all") -> dict[str, list[str]]:
    """Return the input topics of the worker's and (or) the notifier's consumer groups.

    >>> from streams.settings import Settings
    >>> sorted(group_inputs(Settings(app_id="bw", topic_prefix="p."), "notifier").items())
    [('bw-notifier', ['p.alerts', 'p.alerts.by_team'])]
    >>> group_inputs(Settings(app_id="bw", topic_prefix="", spend_tables=False), "worker")["bw"][-2:]
    ['usage.storage', 'detector.inputs']
    """
    worker = [*USAGE_TOPICS]
    if settings.spend_tables or settings.budgets_path is not None:  # process_costs reads costs.priced
        worker.append(COSTS_PRICED)
    if settings.budgets_path is not None:
        worker.append(BUDGET_CHARGES)
    if settings.detectors_enabled:
        worker.append(DETECTOR_INPUTS)
    groups = {
        "worker": (settings.app_id, [settings.topic(name) for name in worker]),
        "notifier": (f"{settings.app_id}-notifier", [settings.topic(ALERTS), settings.topic(ALERTS_BY_TEAM)]),
    }
    return dict(value for key, value in groups.items() if which in ("all", key))


def topic_lag(group: str, topic: str, committed: Mapping[int, int], ends: Mapping[int, int]) -> TopicLag:
    """Sum a topic's lag over its partitions; a partition with nothing committed lags by all of it.

    >>> topic_lag("bw", "costs.priced", {0: 10, 1: -1001}, {0: 12, 1: 5})
    TopicLag(group='bw', topic='costs.priced', committed=10, end=17, lag=7)
    """
    done = {p: max(0, committed.get(p, 0)) for p in ends}
    return TopicLag(group, topic, sum(done.values()), sum(ends.values()),
                    sum(max(0, end - done[p]) for p, end in ends.items()))


def read_lags(settings: Settings, which: str = "all") -> list[TopicLag]:
    """Read committed and end offsets of every input topic of ``which`` groups (all, worker, notifier)."""
    from confluent_kafka import Consumer, TopicPartition

    rows: list[TopicLag] = []
    for group, topics in group_inputs(settings, which).items():
        consumer = Consumer(settings.librdkafka_config() | {"group.id": group, "enable.auto.commit": False})
        try:
            metadata = consumer.list_topics(timeout=10).topics
            for topic in topics:
                if topic not in metadata:
                    continue  # not created yet: nothing to read
                tps = [TopicPartition(topic, p) for p in sorted(metadata[topic].partitions)]
                committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
                ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
                rows.append(topic_lag(group, topic, committed, ends))
        finally:
            consumer.close()
    return rows


def wait_until_read(
    settings: Settings,
    which: str = "all",
    timeout_s: float = 300.0,
    *,
    check: Callable[[], None] | None = None,
    poll_s: float = 1.0,
) -> tuple[list[TopicLag], bool]:
    """Poll ``read_lags`` until every input is read (lag 0 on two checks in a row) or ``timeout_s``.

    Returns the last rows and whether they were all read; while no input topic exists yet, nothing
    counts as read. ``check`` runs before each poll (a caller can raise from it, e.g. when the process
    it waits on has died).
    """
    deadline, clear = time.monotonic() + timeout_s, 0
    while True:
        if check is not None:
            check()
        rows = read_lags(settings, which)
        clear = clear + 1 if rows and sum(r.lag for r in rows) == 0 else 0
        if clear >= 2:  # two in a row: a commit between them could have been the last
            return rows, True
        if time.monotonic() >= deadline:
            return rows, False
        time.sleep(poll_s)


def render(rows: list[TopicLag]) -> Table:
    """Return a table of the lags, one row per group and topic."""
    table = Table(title=f"consumer lag: {sum(r.lag for r in rows):,} messages", title_justify="left")
    for column in ("group", "topic", "committed", "end", "lag"):
        table.add_column(column, justify="left" if column in ("group", "topic") else "right")
    for r in rows:
        table.add_row(r.group, r.topic, f"{r.committed:,}", f"{r.end:,}",
                      f"[yellow]{r.lag:,}[/yellow]" if r.lag else "0")
    return table


def register(app: typer.Typer) -> None:
    """Add the ``lag`` command."""

    @app.command()
    def lag(
        wait: Annotated[bool, typer.Option("--wait", help="Block until every input is read.")] = False,
        timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits at most.")] = 300.0,
        as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
        group: Annotated[str, typer.Option("--group", help="all, worker or notifier.")] = "all",
        config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")] = None,
    ) -> None:
        """Show how many messages the worker and the notifier have not yet read, per input topic."""
        from streams.commands.common import fail, load_settings

        if group not in GROUPS:
            raise fail(f"--group {group!r}: expected one of {', '.join(GROUPS)}", code=2)
        settings = load_settings(config)
        rows, read = wait_until_read(settings, group, timeout) if wait else (read_lags(settings, group), True)
        if as_json:
            typer.echo(json.dumps([asdict(r) for r in rows], indent=2))
        else:
            console.print(render(rows))
        if not read:
            raise fail(f"still {sum(r.lag for r in rows):,} messages behind after {timeout:g} s")
