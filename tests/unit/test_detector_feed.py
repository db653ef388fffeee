"""The detectors' stream feed: same findings as the reference runner, exact after a restart, no repeats."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from detectors.buckets import SeriesBucketer, parse_time
from detectors.findings import Finding
from detectors.runner import DetectorRunner
from detectors.state import MAX_STATE_BYTES, size_bytes, stamped
from streams.cli import app as cli
from streams.core.catalog import load_catalog
from streams.core.detector_feed import (
    LLM_STATES,
    SEEN,
    USAGE_FIELDS,
    USAGE_RANGES,
    Backlog,
    PartitionDetectors,
    SeriesContributions,
    Watermark,
    by_partition,
    finding_alert,
    route,
    saved_entries,
    steps_of,
    tick,
    widest_bucket_s,
)
from streams.core.entity_states import LLM_DETECTORS, split
from streams.core.events import EVENT_ADAPTER
from streams.core.open_inputs import OPEN, bucket_end
from streams.core.pricing import Pricer
from streams.core.router_ticks import RouterTicks
from streams.core.simulation import IncidentSpec, Simulation, SimulationConfig

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@lru_cache(maxsize=1)
def priced_events() -> tuple[tuple[dict[str, Any], ...], ...]:
    """Twenty simulated minutes with an idle GPU and an agent loop, priced one event at a time."""
    incidents = (IncidentSpec("idle_gpu", 60, 900), IncidentSpec("runaway_loop", 300, 120))
    config = SimulationConfig(start=START, duration_s=1200, nodes=2, rate=3, seed=5, incidents=incidents)
    pricer = Pricer(load_catalog(None))
    return tuple(
        tuple(pricer.price(EVENT_ADAPTER.validate_python(event)))  # type: ignore[misc]
        for event in Simulation(config).events()
    )


def outline(findings: list[Finding]) -> list[tuple[Any, ...]]:
    """The findings, in order of event time (findings of one step may come in any order)."""
    rows = [(f.kind, f.state, f.entity_id, f.started_at, f.detected_at, f.resolved_at) for f in findings]
    return sorted(rows, key=lambda r: (r[5] or r[4], r[0], r[2], r[1]))


class Table:
    """A dict standing in for the faust table: the latest value per key."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def known(self, keys: Sequence[str]) -> list[bool]:
        return [key in self.data for key in keys]

    def put(self, entries: list[tuple[str, Any]]) -> None:
        # the kernel writes some values as JSON already: stored decoded, as the table's store gives them back
        self.data.update((key, json.loads(value) if isinstance(value, bytes) else value)
                         for key, value in entries)


def inputs(records: tuple[dict[str, Any], ...]) -> list[list[Any]]:
    """One event's detector inputs, then a tick to where ``DetectorRunner.feed`` moves event time."""
    items = [item for group in route(records).values() for item in group]
    times = [parse_time(r["ChargePeriodStart"]) for r in records if r["x_SourceType"] != "storage.usage"]
    return items + ([tick(max(times))] if times else [])


def run_feed(
    events: Iterator[tuple[dict[str, Any], ...]], det: PartitionDetectors, table: Table
) -> list[Finding]:
    found: list[Finding] = []
    for records in events:
        done = det.apply(inputs(records), table.known)
        table.put(done.entries)
        found += done.findings
    return found


def test_the_feed_finds_what_the_reference_runner_finds() -> None:
    events = priced_events()
    reference = DetectorRunner()
    expected: list[Finding] = []
    for records in events:
        expected += reference.feed(records)
    found = run_feed(iter(events), PartitionDetectors(0), Table())
    kinds = {f.kind for f in expected if f.state == "open"}
    assert {"idle_gpu", "agent_loop"} <= kinds
    assert outline(found) == outline(expected)


def test_a_batch_of_messages_applied_at_once_finds_what_one_message_at_a_time_finds() -> None:
    """``detect_anomalies`` applies a whole batch; its ticks close buckets over the inputs before them."""
    events = priced_events()
    one_by_one = run_feed(iter(events), PartitionDetectors(0), Table())
    det, table, found = PartitionDetectors(0), Table(), []
    for first in range(0, len(events), 97):
        items = [item for records in events[first:first + 97] for item in inputs(records)]
        done = det.apply(items, table.known)
        table.put(done.entries)
        found += done.findings
    assert outline(found) == outline(one_by_one)


def test_a_restart_from_the_saved_entries_changes_nothing() -> None:
    events = priced_events()
    whole = run_feed(iter(events), PartitionDetectors(0), Table())
    for cut in (len(events) // 3, len(events) // 2 + 7):
        table = Table()
        first = run_feed(iter(events[:cut]), PartitionDetectors(0), table)
        restored = PartitionDetectors.restore(0, table.data.items())
        second = run_feed(iter(events[cut:]), restored, table)
        assert outline(first + second) == outline(whole)


def open_buckets(det: PartitionDetectors) -> list[tuple[Any, ...]]:
    """The LLM and series buckets ``det`` holds open (closed on copies: ``det`` goes on unchanged).

    Sums of USD to 9 places: a restart re-adds a bucket's inputs by time, not in the order they came,
    which can move a float sum in its last digit.
    """
    llm = copy.deepcopy(det.runner.llm).flush(float("inf"))
    series = copy.deepcopy(det.runner.series).flush(float("inf"))
    llm_rows = [(b.scope, b.key, b.start, b.end, b.requests, b.input_tokens, b.output_tokens,
                 round(b.cost_usd, 9), b.inputs, b.prompts,
                 {m: [round(x, 9) for x in v] for m, v in b.models.items()}) for b in llm]
    series_rows = [(b.kind, b.scope, b.key, b.start, b.end, round(b.cost_usd, 9), round(b.quantity, 9))
                   for b in series]
    return llm_rows + series_rows


def delayed(events: Sequence[Any], every: int, by: int) -> list[Any]:
    """``events`` with every ``every``-th one moved ``by`` places later: late for the ticks in between."""
    out = [event for i, event in enumerate(events) if i % every]
    for i in range(0, len(events), every):
        out.insert(min(i + by, len(out)), events[i])
    return out


def test_late_inputs_applied_after_the_last_flush_survive_a_restart() -> None:
    """An input older than the buckets already closed opens a bucket of its own, closed with its batch.

    Were it left open until the next tick, a restart in between would drop it as closed before the
    restart: after every batch, detectors restored from the table hold the same open buckets as the
    live ones, and a run restarted there finds the same as one that went on.
    """
    events = delayed(priced_events(), every=5, by=60)
    batches = [events[first:first + 37] for first in range(0, len(events), 37)]
    whole, table, found_late = PartitionDetectors(0), Table(), 0
    expected: list[Finding] = []
    for batch in batches:
        done = whole.apply([item for records in batch for item in inputs(records)], table.known)
        table.put(done.entries)
        expected += done.findings
        restored = PartitionDetectors.restore(0, table.data.items())
        assert open_buckets(restored) == open_buckets(whole)
        found_late += bool(done.late_buckets)
    assert found_late > len(batches) // 4  # many batches had late inputs
    for cut in (5, len(batches) // 2):
        det, table, found = PartitionDetectors(0), Table(), []
        for number, batch in enumerate(batches):
            if number == cut:
                det = PartitionDetectors.restore(0, table.data.items())
            done = det.apply([item for records in batch for item in inputs(records)], table.known)
            table.put(done.entries)
            found += done.findings
        assert outline(found) == outline(expected)


def test_a_batch_applied_in_bounded_steps_finds_and_keeps_what_one_step_does() -> None:
    """``detect_anomalies`` applies a large batch of messages in steps of at most ``STEP_MAX_INPUTS``
    (``steps_of``), each saved on its own: the same findings and states as one step over the batch, and
    detectors restored from either table go on to find the same."""
    events = priced_events()
    messages = [inputs(records) for records in events]  # one message per event
    batches = [messages[first:first + 150] for first in range(0, len(messages), 150)]
    whole, split_up = PartitionDetectors(0), PartitionDetectors(0)
    whole_table, split_table = Table(), Table()
    expected: list[Finding] = []
    found: list[Finding] = []
    steps = 0
    for batch in batches[:-2]:
        done = whole.apply([item for message in batch for item in message], whole_table.known)
        whole_table.put(done.entries)
        expected += done.findings
        for items in steps_of(batch, max_inputs=40):
            assert len(items) <= 40
            done = split_up.apply(items, split_table.known)
            split_table.put(done.entries)
            found += done.findings
            steps += 1
    assert steps > 3 * len(batches[:-2])
    assert outline(found) == outline(expected) != []
    assert split_up.runner.states == whole.runner.states
    rest = []
    for table in (whole_table, split_table):  # the rest, by detectors restored from each table
        det = PartitionDetectors.restore(0, table.data.items())
        rest.append(outline([finding for batch in batches[-2:] for finding in det.apply(
            [item for message in batch for item in message], table.known).findings]))
    assert rest[0] == rest[1]


def applied_in_bounded_steps(
    det: PartitionDetectors, items: list[Any], table: Table, max_closed: int, restore_after: int | None = None
) -> tuple[PartitionDetectors, list[Finding], int]:
    """Apply ``items`` as ``detect_anomalies``'s ``step`` does: ``apply`` again with the rest while a tick's
    closes are unfinished, each part saved; with ``restore_after``, a restart after that many parts, where
    the router ticks again (the ticks after a restart come again, the last one's time at least)."""
    found: list[Finding] = []
    parts = 0
    last_tick = [item for item in items if item[0] == "t"][-1]
    while True:
        done = det.apply(items, table.known, max_closed)
        table.put(done.entries)
        found += done.findings
        parts += 1
        if parts == restore_after and done.unfinished:
            det = PartitionDetectors.restore(0, table.data.items())
            done.rest = [*done.rest, last_tick]
        if not done.unfinished:
            return det, found, parts
        items = done.rest


def test_a_tick_after_a_backlog_closes_its_buckets_over_bounded_steps() -> None:
    """A tick that would close more LLM buckets than a step saves (``max_closed``) moves event time in
    parts, as ticks in between would: the same findings and states as one step, each part's save a
    fraction of that step's, and a restart between parts goes on to find the same."""
    events = priced_events()
    held = [item for records in events for item in inputs(records) if item[0] != "t"]  # time held back
    last = max(item[2] for item in held if item[0] == "u")
    backlog = [held[first:first + 200] for first in range(0, len(held), 200)]  # read as runs, no tick
    final = [tick(last + 1.0), *inputs(events[-1])[:-1], tick(last + 30.0)]

    def read_backlog(det: PartitionDetectors, table: Table) -> list[Finding]:
        found = []
        for items in backlog:
            done = det.apply(items, table.known, 300)
            assert not done.unfinished
            table.put(done.entries)
            found += done.findings
        return found

    whole, whole_table = PartitionDetectors(0), Table()
    found = read_backlog(whole, whole_table)
    done = whole.apply(final, whole_table.known)
    whole_table.put(done.entries)
    assert not done.unfinished
    expected = outline(found + done.findings)
    assert expected and len(json.dumps(done.entries, default=str)) > 1_000_000
    for restore_after in (None, 2, 5):
        det, table = PartitionDetectors(0), Table()
        found = read_backlog(det, table)
        sizes: list[int] = []
        table_put = table.put

        def put(entries: list[tuple[str, Any]], sizes: list[int] = sizes, table_put: Any = table_put) -> None:
            sizes.append(len(json.dumps(entries, default=str)))
            table_put(entries)
        table.put = put  # type: ignore[method-assign]
        det, more, parts = applied_in_bounded_steps(det, final, table, 300, restore_after)
        assert parts > 10
        assert max(sizes) < len(json.dumps(done.entries, default=str)) / 10
        assert outline(found + more) == expected
        if restore_after is None:
            assert det.runner.states == whole.runner.states
            assert det.runner.watermark == whole.runner.watermark


def reader(table: Table, asked: list[str] | None = None) -> Callable[[str], list[tuple[str, Any]]]:
    """``table``'s entries by key prefix, as ``BatchLoggedTable.partition_items`` reads them."""
    def read(prefix: str) -> list[tuple[str, Any]]:
        if asked is not None:
            asked.append(prefix)
        return [(key, value) for key, value in table.data.items() if key.startswith(prefix)]
    return read


def test_open_inputs_are_saved_until_their_buckets_close_and_restored_without_the_seen_inputs() -> None:
    """``i|`` entries say only that an input was applied; ``o|`` entries keep the inputs of open buckets.

    After every batch, detectors restored from what ``saved_entries`` reads (no ``i|`` entry) hold the
    same open buckets as the live ones, from the first batch on (nothing closed yet: flushed_to -inf).
    """
    events = delayed(priced_events(), every=5, by=60)
    batches = [[item for records in events[first:first + 37] for item in inputs(records)]
               for first in range(0, len(events), 37)]
    widest = widest_bucket_s(PartitionDetectors(0).runner.config)
    det, table = PartitionDetectors(0), Table()
    batches[0] = [item for item in batches[0] if item[0] != "t"]
    for batch in batches:
        table.put(det.apply(batch, table.known).entries)
        asked: list[str] = []
        restored = PartitionDetectors.restore(0, saved_entries(reader(table, asked), 0, widest))
        assert open_buckets(restored) == open_buckets(det)
        assert SEEN not in asked
    assert all(value == 1 for key, value in table.data.items() if key.startswith(SEEN))
    kept = [item for key, value in table.data.items() if key.startswith(OPEN) and value is not None
            for item in value[1]]
    buckets = det.runner.config.buckets
    widths = {"u": (2, (buckets.session_s, buckets.app_s, buckets.scope_s)), "s": (5, buckets.series_s)}
    assert kept and all(bucket_end(item[widths[item[0]][0]], widths[item[0]][1]) > det.runner.flushed_to
                        for item in kept)
    # an LLM request is kept for its buckets' 10 s (a series sum for its hour: all of this run)
    usages = sum(item[0] == "u" for batch in batches for item in batch)
    assert sum(item[0] == "u" for item in kept) < usages / 10
    table.put(det.apply([tick(det.runner.flushed_to + widest)], table.known).entries)
    assert not [key for key, value in table.data.items() if key.startswith(OPEN) and value is not None]


def test_a_table_saved_before_open_inputs_restores_its_open_buckets_from_the_seen_inputs() -> None:
    """A partition saved by a version before ``o|`` entries: its ``i|`` entries hold the inputs.

    They are read until buckets have closed up to a widest bucket after the first save that keeps
    ``o|`` entries, and not after.
    """
    events = priced_events()
    cut = len(events) // 2
    widest = widest_bucket_s(PartitionDetectors(0).runner.config)
    det, table = PartitionDetectors(0), Table()
    first = run_feed(iter(events[:cut]), det, table)
    old = Table()
    for key, value in table.data.items():
        if key.startswith(OPEN):
            old.data.update((SEEN + item[1], item) for item in (value[1] if value is not None else []))
        elif key != "w|0|o":
            old.data.setdefault(key, value)
    restored = PartitionDetectors.restore(0, saved_entries(reader(old), 0, widest))
    assert open_buckets(restored) == open_buckets(det)
    second = run_feed(iter(events[cut:]), restored, old)
    assert outline(first + second) == outline(run_feed(iter(events), PartitionDetectors(0), Table()))
    since = old.data["w|0|o"][0]
    assert restored.runner.flushed_to < since + widest
    asked: list[str] = []
    list(saved_entries(reader(old, asked), 0, widest))
    assert SEEN in asked
    old.put(restored.apply([tick(since + widest)], old.known).entries)
    asked.clear()
    list(saved_entries(reader(old, asked), 0, widest))
    assert SEEN not in asked


def plain(states: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Detector states as JSON would give them back, without version stamps."""
    return {name: {key: {k: v for k, v in json.loads(json.dumps(state)).items() if k != "_v"}
                   for key, state in table.items()} for name, table in states.items()}


def test_an_llm_entity_is_saved_as_one_entry_and_restored_exactly() -> None:
    events = priced_events()
    det, table = PartitionDetectors(0), Table()
    run_feed(iter(events[: len(events) // 2]), det, table)
    saved = [key for key, value in table.data.items() if key.startswith("s|") and value is not None]
    sessions = [key for key in saved if ",session=" in key]
    assert sessions and all(key.startswith(LLM_STATES) for key in sessions)
    assert not [key for key in saved if key.split("|")[1] in LLM_DETECTORS]
    # a session's detector states together stay within the 2 KB an entity may keep
    assert max(size_bytes(table.data[key]) for key in sessions) <= MAX_STATE_BYTES
    restored = PartitionDetectors.restore(0, table.data.items())
    assert plain(restored.runner.states) == plain(det.runner.states)


def test_states_saved_one_entry_each_by_an_older_version_are_read_then_replaced() -> None:
    events = priced_events()
    whole = run_feed(iter(events), PartitionDetectors(0), Table())
    cut = len(events) // 2
    det, table = PartitionDetectors(0), Table()
    first = run_feed(iter(events[:cut]), det, table)
    old = Table()  # the same entries as a version before s|llm| saved them
    for key, value in table.data.items():
        if key.startswith(LLM_STATES) and value is not None:
            old.data.update((f"s|{name}|{key[len(LLM_STATES):]}", stamped(state))
                            for name, state in split(value).items())
        else:
            old.data[key] = value
    restored = PartitionDetectors.restore(0, old.data.items())
    assert plain(restored.runner.states) == plain(det.runner.states)
    second = run_feed(iter(events[cut:]), restored, old)
    assert outline(first + second) == outline(whole)
    # each entity saved again dropped its one-entry states; the others keep them until they change
    for key, value in old.data.items():
        name, entity = key.split("|", 2)[1:] if key.startswith("s|") else ("", "")
        if name in LLM_DETECTORS and old.data.get(LLM_STATES + entity) is not None:
            assert value is None, key


def test_repeated_batches_change_nothing_and_are_counted() -> None:
    events = priced_events()
    table, det = Table(), PartitionDetectors(0)
    once = run_feed(iter(events), PartitionDetectors(0), Table())
    found: list[Finding] = []
    repeated = 0
    for records in events:
        items = inputs(records)
        for _ in range(2):  # a pricing worker that crashed re-sends the same batch
            done = det.apply(items, table.known)
            table.put(done.entries)
            found += done.findings
            repeated += done.repeated
    assert outline(found) == outline(once)
    assert repeated == sum(len(group) for r in events for group in route(r).values())


SOURCE = "usage.llm:0"


def routed_run(messages: dict[int, list[dict[str, Any]]], offsets: Sequence[int], marked: bool = True,
               known: Collection[int] = ()) -> list[list[Any]]:
    """The detector inputs of the usage messages at ``offsets``, routed as one run as ``price_usage`` does
    (all to one partition; ``marked=False``: one by one, as versions before runs sent them; ``known``: the
    messages whose events pricing knew, as when another router stored their ids: no records)."""
    priced = {offset: [] if offset in known else messages[offset] for offset in offsets}
    records = [record for offset in offsets for record in priced[offset]]
    sizes = [(offset, len(priced[offset])) for offset in offsets]
    run = route(records, source=SOURCE, messages=sizes)
    if not marked:
        return [item[:USAGE_FIELDS] if item[0] == "u" else item for group in run.values() for item in group]
    return by_partition(run, lambda key: 0, SOURCE, sizes)[0]


def series_sums(det: PartitionDetectors) -> dict[tuple[Any, ...], float]:
    """The open series buckets' sums, by scope, key, kind, start and width."""
    return {key: round(bucket.cost_usd, 9) for key, bucket in det.runner.series.open.items()}


def usage_messages() -> dict[int, list[dict[str, Any]]]:
    """Forty usage messages (offsets 100-139), one priced event each, as a gateway sends them."""
    return {100 + i: list(records) for i, records in enumerate(priced_events()[:40])}


def apply_runs(runs: list[list[int]], restart: bool = False, table: Table | None = None,
               marked: bool = True) -> PartitionDetectors:
    messages, table, det = usage_messages(), table if table is not None else Table(), PartitionDetectors(0)
    for run in runs:
        done = det.apply(routed_run(messages, run, marked), table.known)
        table.put(done.entries)
        if restart:  # a restart between runs: only the saved entries are left
            det = PartitionDetectors.restore(0, table.data.items())
    return det


def llm_sums(det: PartitionDetectors) -> dict[tuple[Any, ...], tuple[int, float]]:
    """Every LLM bucket's requests and cost (all closed now), by scope, key and start."""
    closed = det.runner.llm.flush(math.inf)
    return {(b.scope, b.key, b.start): (b.requests, round(b.cost_usd, 9)) for b in closed}


def once() -> dict[tuple[Any, ...], float]:
    return series_sums(apply_runs([list(range(100, 140))]))


def test_a_message_priced_again_in_another_run_counts_once_in_its_series() -> None:
    """Killed after a run's inputs were sent, before its ids were stored: messages 110-124 are priced
    again in a run that starts elsewhere (new input ids), and count once in every series."""
    assert once() and series_sums(apply_runs([list(range(100, 125)), list(range(110, 140))])) == once()


def test_the_applied_ranges_survive_a_restart() -> None:
    runs = [list(range(100, 125)), list(range(110, 130)), list(range(125, 140))]
    assert series_sums(apply_runs(runs, restart=True)) == once()


def test_a_message_read_again_out_of_order_counts_once() -> None:
    """A message skipped under an old consumer generation is read again after the ones behind it."""
    runs = [list(range(100, 110)), list(range(111, 140)), list(range(110, 140))]
    assert series_sums(apply_runs(runs)) == once()


def test_a_message_skipped_inside_a_run_counts_when_it_is_read_again() -> None:
    """A batch that left message 110 out (an older generation's): the run's offsets have a gap there."""
    runs = [[*range(100, 110), *range(111, 140)], list(range(110, 140))]
    assert series_sums(apply_runs(runs)) == once()


def llm_once() -> dict[tuple[Any, ...], tuple[int, float]]:
    sums = llm_sums(apply_runs([list(range(100, 140))]))
    assert sum(requests for (scope, _, _), (requests, _) in sums.items() if scope == "app") >= 20
    return sums


def request_keys(offsets: Iterable[int]) -> set[str]:
    """The ``i|`` keys the LLM requests of the usage messages at ``offsets`` would have."""
    return {SEEN + item[1] for item in requests(routed_run(usage_messages(), list(offsets)))}


def requests(items: list[list[Any]]) -> list[list[Any]]:
    """The LLM requests of routed inputs: a run's, or those routed without one."""
    runs = [item[4] if item[0] == "r" else [item] if item[0] == "u" else [] for item in items]
    return [request for run in runs for request in run]


@pytest.mark.parametrize("runs", [
    [list(range(100, 125)), list(range(110, 140))],  # priced again in a run that starts elsewhere
    [list(range(100, 110)), list(range(111, 140)), list(range(110, 140))],  # one read again out of order
    [[*range(100, 110), *range(111, 140)], list(range(110, 140))],  # one skipped inside a run
    [list(range(100, 140)), list(range(100, 140))],  # the same run twice
])
@pytest.mark.parametrize("restart", [False, True])
def test_llm_requests_count_once_by_their_runs_offsets_with_no_seen_entries(
        runs: list[list[int]], restart: bool) -> None:
    table = Table()
    det = apply_runs(runs, restart=restart, table=table)
    assert llm_sums(det) == llm_once()
    assert table.data[USAGE_RANGES + SOURCE] == [[100, 139]]
    assert not request_keys(range(100, 140)) & set(table.data)


def test_two_routers_runs_read_in_one_step_count_once() -> None:
    """After a rebalance the old router's run and the new one's, over the same messages, in one batch."""
    messages, det = usage_messages(), PartitionDetectors(0)
    items = [*routed_run(messages, range(100, 130)), *routed_run(messages, range(115, 140))]
    done = det.apply(items, Table().known)
    assert done.repeated >= 1
    assert llm_sums(det) == llm_once()


def test_a_message_whose_ids_another_router_stored_counts_from_that_routers_run_whenever_it_comes() -> None:
    """After a rebalance the new router prices 100-139 again, but 100-119 were stored by the router before
    (their inputs sent, in a run the partition reads later): its run holds no records of them, and must
    not claim them."""
    messages, table, det = usage_messages(), Table(), PartitionDetectors(0)
    new_router = routed_run(messages, range(100, 140), known=range(100, 120))
    for items in (new_router, routed_run(messages, range(100, 120))):  # the router before's run, read later
        table.put(det.apply(items, table.known).entries)
    assert table.data[USAGE_RANGES + SOURCE] == [[100, 139]]
    assert llm_sums(det) == llm_once() and series_sums(det) == once()


def test_an_upgraded_partitions_requests_are_repeats_of_the_old_versions_inputs_read_after_them() -> None:
    """The old version's inputs of 110-124 are still in the topic when the new version, upgraded, applies
    its run of them in place: they come after it, one by one, and are found in ``i|``."""
    table, messages = Table(), usage_messages()
    old = routed_run(messages, range(100, 110), marked=False)
    table.put(PartitionDetectors(0).apply(old, table.known).entries)
    table.data.pop("w|0|a")  # as the old version saved it
    det = PartitionDetectors.restore(0, table.data.items())
    table.put(det.apply(routed_run(messages, range(110, 125)), table.known).entries)
    done = det.apply(routed_run(messages, range(110, 125), marked=False), table.known)
    assert done.applied == 0 and done.repeated > 0
    assert llm_sums(det) == llm_sums(apply_runs([list(range(100, 125))]))


def test_a_partition_that_began_with_ranges_never_looks_requests_up() -> None:
    table, asked = Table(), []

    def known(keys: Sequence[str]) -> list[bool]:
        asked.extend(keys)
        return table.known(keys)

    messages, det = usage_messages(), PartitionDetectors(0)
    for run in (range(100, 125), range(110, 140)):
        table.put(det.apply(routed_run(messages, run), known).entries)
        det = PartitionDetectors.restore(0, table.data.items())
    assert table.data["w|0|a"] == [False] and not det.upgraded
    assert not request_keys(range(100, 140)) & set(asked)


@pytest.mark.parametrize("old_apps", [None, 1])  # what the old version applied: whole runs, or one app's
def test_requests_a_version_before_runs_applied_are_found_in_their_seen_entries(old_apps: int | None
                                                                                        ) -> None:
    """Upgraded mid-stream: the old version applied 100-124 with an ``i|`` entry per request (only one
    app's, when its router died between one group's message and the next), and the new one prices
    110-139 again after the restart, in runs that start elsewhere. An upgraded partition looks a source's
    requests up in ``i|`` in the first messages after its first run since (``UPGRADE_LOOKUP_MESSAGES``)."""
    table, messages = Table(), usage_messages()
    old = routed_run(messages, range(100, 125), marked=False)
    apps = sorted({item[3] for item in old if item[0] == "u"})
    if old_apps is not None:
        old = [item for item in old if item[0] != "u" or item[3] in apps[:old_apps]]
    table.put(PartitionDetectors(0).apply(old, table.known).entries)
    table.data.pop("w|0|a")  # as the old version saved it
    det = PartitionDetectors.restore(0, table.data.items())
    assert det.upgraded
    for run in (range(110, 117), range(117, 130), range(125, 140)):
        table.put(det.apply(routed_run(messages, run), table.known).entries)
    assert table.data[USAGE_RANGES + SOURCE] == [[110, 139]] and table.data["w|0|a"] == [True]
    assert request_keys(range(125, 140)) <= set(table.data)  # in the window: the old version's may come
    if old_apps is None:
        assert llm_sums(det) == llm_once()
    else:  # the requests of 100-109 of the other apps were never applied
        early = requests(routed_run(messages, range(100, 110)))
        fresh = [item for item in early if item[3] not in apps[:old_apps]]
        assert fresh
        sums = llm_sums(det)
        expected = llm_once()
        assert sum(n for (scope, *_), (n, _) in sums.items() if scope == "app") == sum(
            n for (scope, *_), (n, _) in expected.items() if scope == "app") - len(fresh)


def test_gpu_samples_need_no_seen_entry_and_stay_repeats_after_a_restart() -> None:
    """A GPU sample is a repeat when it ends by the GPU's saved ``last``: no ``i|`` entry per sample."""
    det, table = PartitionDetectors(0), Table()
    samples = [["g", f"e{i}:gpu0", 15.0 * i, 15.0 * (i + 1), 0.0, True, 0.01, None, "ml", "G1"]
               for i in range(80)]
    done = det.apply(samples, table.known)
    table.put(done.entries)
    assert done.applied == 80 and not [key for key in table.data if key.startswith(SEEN)]
    restored = PartitionDetectors.restore(0, table.data.items())
    later = ["g", "e80:gpu0", 1200.0, 1215.0, 0.0, True, 0.01, None, "ml", "G1"]
    again = restored.apply([*samples[-5:], later], table.known)
    assert (again.repeated, again.applied) == (5, 1)


def at(source: str, second: int) -> dict[str, Any]:
    """A cost record's source and time, ``second`` s after 2026-01-01 00:00 UTC."""
    return {"x_SourceType": source, "x_App": "bot", "ResourceId": "GPU-1",
            "ChargePeriodStart": f"2026-01-01T{second // 3600:02d}:{second % 3600 // 60:02d}:"
                                 f"{second % 60:02d}Z"}


def test_the_watermark_waits_for_a_slow_source_but_not_for_a_silent_one() -> None:
    base = parse_time("2026-01-01T00:00:00Z")
    wm = Watermark(tick_s=5.0, idle_source_s=300.0)
    assert wm.observe([at("gpu.sample", 100), at("llm.request", 200)]) == base + 100
    assert wm.observe([at("llm.request", 380)]) is None  # GPUs are 280 s behind: still waited for
    assert wm.observe([at("llm.request", 420)]) == base + 420  # 320 s behind: GPUs went silent
    assert wm.observe([at("gpu.sample", 421)]) is None  # less than a tick later


def test_each_gpu_is_a_lane_so_one_lagging_node_holds_time_back() -> None:
    wm = Watermark(tick_s=5.0, idle_wall_s=30.0)
    one, two = at("gpu.sample", 100), {**at("gpu.sample", 400), "ResourceId": "GPU-2"}
    assert wm.observe([one, two], now=0.0) is None
    assert wm.observe([one], now=30.0) == parse_time("2026-01-01T00:00:00Z") + 100
    assert wm.observe([{**two, "ChargePeriodStart": "2026-01-01T00:08:00Z"}], now=40.0) is None


def test_with_a_clock_a_source_is_waited_for_until_it_stops_arriving() -> None:
    base = parse_time("2026-01-01T00:00:00Z")
    wm = Watermark(tick_s=5.0, idle_wall_s=30.0)
    assert wm.observe([at("gpu.sample", 10), at("llm.request", 20)], now=0.0) is None  # lanes still joining
    assert wm.observe([at("gpu.sample", 10)], now=30.0) == base + 10
    assert wm.observe([at("llm.request", 3000)], now=59.0) is None  # a GPU backlog is still being read
    assert wm.observe([at("llm.request", 3100)], now=61.0) == base + 3100  # no GPU sample for 31 s


def test_while_the_router_reads_a_backlog_a_starved_lane_is_not_let_go() -> None:
    """Catching up, a GPU whose usage partition waits behind the LLM backlog is not a telemetry gap."""
    base = parse_time("2026-01-01T00:00:00Z")
    wm, backlog = Watermark(tick_s=5.0, idle_wall_s=30.0), Backlog(limit=100, keep_s=60.0)
    assert wm.observe([at("gpu.sample", 10), at("llm.request", 20)], now=0.0) is None
    backlog.record(("usage.llm", 0), 20_000, now=31.0)
    assert wm.observe([at("llm.request", 3000)], now=31.0, backlog=backlog.behind(31.0)) == base + 10
    assert wm.observe([at("llm.request", 3100)], now=50.0, backlog=backlog.behind(50.0)) is None
    backlog.record(("usage.llm", 0), 0, now=55.0)  # caught up: the GPU has been silent for 55 s
    assert wm.observe([at("llm.request", 3200)], now=55.0, backlog=backlog.behind(55.0)) == base + 3200


def test_a_quiet_watermark_still_ticks_once_every_lane_has_stopped() -> None:
    """The router's timer observes no records: a worker that read everything at start still ticks."""
    base = parse_time("2026-01-01T00:00:00Z")
    wm = Watermark(tick_s=5.0, idle_wall_s=30.0)
    assert wm.observe([at("gpu.sample", 900), at("llm.request", 1000)], now=0.0) is None  # start-up hold
    assert wm.observe((), now=10.0) is None  # still joining
    assert wm.observe((), now=31.0) == base + 900  # everything stopped: the slowest lane's time
    assert wm.observe((), now=32.0) is None  # nothing new


def test_ticks_move_event_time_without_data() -> None:
    det = PartitionDetectors(0)
    gpu = [["g", f"e{i}:gpu0", 15.0 * i, 15.0 * (i + 1), 50.0, True, 0.01, None, "ml", "G1"]
           for i in range(4)]
    assert det.apply(gpu, lambda keys: [False] * len(keys)).findings == []
    found = det.apply([tick(300.0)], lambda keys: [False] * len(keys)).findings
    assert [(f.kind, f.state, f.started_at.timestamp()) for f in found] == [("telemetry_gap", "open", 60.0)]


def test_series_inputs_sum_to_the_reference_buckets() -> None:
    records = [r for event in priced_events() for r in event]
    reference = SeriesBucketer((60.0, 3600.0))
    ours = SeriesContributions((60.0, 3600.0))
    for record in records:
        reference.add(record)
    for group in route(records).values():
        for item in group:
            if item[0] == "s":
                ours.add(item)
    end = parse_time(records[-1]["ChargePeriodStart"]) + 7200

    def table(buckets: list[Any]) -> dict[tuple[Any, ...], tuple[float, float]]:
        return {(b.kind, b.scope, b.key, b.start, b.end): (round(b.cost_usd, 9), round(b.quantity, 9))
                for b in buckets}

    expected = table(reference.flush(end))
    assert len(expected) > 100
    assert table(ours.flush(end)) == expected


def test_every_finding_kind_maps_to_an_alert_kind_and_updates_do_not_fire() -> None:
    found = run_feed(iter(priced_events()), PartitionDetectors(0), Table())
    alerts = [finding_alert(f) for f in found]
    fired = [a for a in alerts if a is not None and a.status == "firing"]
    assert len(fired) == sum(f.state == "open" for f in found)
    idle = next(a for a in fired if a.kind == "idle_gpu")
    assert idle.cost_impact_usd > 0 and "util_pct" in idle.evidence and idle.detected_at > idle.started_at


def test_replay_writes_the_alerts_with_event_times(tmp_path: Path) -> None:
    incidents = (IncidentSpec("idle_gpu", 60, 1080),)
    config = SimulationConfig(start=START, duration_s=1320, nodes=2, rate=1, seed=3, incidents=incidents)
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in Simulation(config).events()))
    result = CliRunner().invoke(cli, ["replay", str(events), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    alerts = [json.loads(line) for line in (tmp_path / "out" / "alerts.jsonl").read_text().splitlines()]
    idle = [a for a in alerts if a["kind"] == "idle_gpu"]
    assert idle and {a["status"] for a in idle} == {"firing", "resolved"}
    for alert in idle:
        started = datetime.fromisoformat(alert["started_at"])
        assert START + timedelta(seconds=60) <= started < START + timedelta(seconds=90)
        if alert["status"] == "resolved":
            assert datetime.fromisoformat(alert["resolved_at"]) >= START + timedelta(seconds=1140)


def test_the_minute_and_the_hour_that_start_together_are_two_buckets() -> None:
    # Both used to share one bucket: every hour's first minute counted twice and fired a spend spike.
    reference, ours = SeriesBucketer((60.0, 3600.0)), SeriesContributions((60.0, 3600.0))
    for second in (0, 30, 90, 1800):
        record = {"ChargePeriodStart": f"2026-01-01T01:{second // 60:02d}:{second % 60:02d}Z",
                  "EffectiveCost": 1.0, "x_Team": "cx", "x_Project": None, "x_Model": None,
                  "SkuMeter": "gpu_hours", "ResourceId": "g"}
        reference.add(record)
        ours.add(["s", f"team|{second}", "spend_spike", "team", "cx", parse_time(record["ChargePeriodStart"]),
                  1.0, 0.0])
    for bucketer in (reference, ours):
        closed = {(b.entity["window"], b.start % 3600): b.cost_usd for b in bucketer.flush(parse_time(
            "2026-01-01T02:00:00Z"))}
        assert closed == {("1m", 0.0): 2.0, ("1m", 60.0): 1.0, ("1m", 1800.0): 1.0, ("1h", 0.0): 4.0}


def test_an_unreadable_saved_state_is_dropped_on_restore_not_fatal() -> None:
    entries = [("s|runaway|app=bot", {"_v": 99, "n": 1}), ("p|bot", {"m": float("nan")}),
               ("s|runaway|app=cx", {"n": 3, "_v": 1}), ("s|llm|app=dx", {"_v": 1, "spikes": {"n": 1}}),
               ("s|llm|app=ex", {"_v": 1, "runaway": {"e": {"app": "ex"}, "n": 4}})]
    det = PartitionDetectors.restore(0, entries)
    assert det.runner.states["runaway"] == {"app=cx": {"n": 3, "_v": 1},
                                            "app=ex": {"e": {"app": "ex"}, "n": 4}}
    assert det.runner.peers == {}


def test_a_partition_moves_only_as_far_as_its_slowest_router() -> None:
    """Two workers' routers tick one partition; the GPU's samples come through the slower one.

    Moved by the faster router's ticks alone, the partition would find the GPU silent (a false
    ``telemetry_gap``) before its samples arrive; waiting for the slower router it finds nothing.
    """
    def gpu(t: float) -> list[Any]:
        return ["g", f"e{t}:gpu0", t, t + 15.0, 90.0, True, 0.01, None, "ml", "G1"]

    def run(name: Any) -> list[str]:
        now = [0.0]
        det = PartitionDetectors(0, routers=RouterTicks(wait_s=5.0, gone_s=15.0, clock=lambda: now[0]))
        now[0] = 6.0  # past the wait after a rebuild
        found = det.apply([*map(gpu, range(0, 300, 15)), tick(300.0, name("slow"))], Table().known).findings
        now[0] = 7.0
        found += det.apply([tick(900.0, name("fast"))], Table().known).findings
        now[0] = 8.0
        later = [*map(gpu, range(300, 900, 15)), tick(900.0, name("slow"))]
        found += det.apply(later, Table().known).findings
        assert det.runner.watermark == 900.0
        return [f"{f.kind} {f.state}" for f in found]

    assert run(lambda router: router) == []
    # the ticks of one unnamed router (as before ticks named theirs): the fast tick moves time alone
    assert run(lambda router: None) == ["telemetry_gap open", "telemetry_gap resolved"]


def test_a_partition_waits_for_a_starting_router_not_a_quiet_one_and_lets_a_silent_one_go() -> None:
    now = [0.0]
    det = PartitionDetectors(0, routers=RouterTicks(wait_s=5.0, gone_s=15.0, clock=lambda: now[0]))
    det.apply([tick(100.0, "a")], Table().known)
    assert det.runner.watermark == -math.inf  # the first 5 s after a rebuild: every router ticks in them
    now[0] = 5.5
    det.apply([tick(-math.inf, "c"), tick(110.0, "b")], Table().known)  # "c" starts: it holds time back
    assert det.runner.watermark == -math.inf
    now[0] = 6.0
    det.apply([tick(105.0, "c")], Table().known)
    assert det.runner.watermark == 100.0
    now[0] = 7.0
    det.apply([tick(math.inf, "a")], Table().known)  # none of "a"'s lanes reports: it holds nothing back
    assert det.runner.watermark == 105.0
    now[0] = 20.0  # "b" last ticked 14.5 s ago: still there
    det.apply([tick(130.0, "c")], Table().known)
    assert det.runner.watermark == 110.0
    now[0] = 21.0  # 15.5 s: let go
    det.apply([tick(131.0, "c")], Table().known)
    assert det.runner.watermark == 131.0
    now[0] = 22.0
    det.apply([tick(120.0, "a")], Table().known)  # "a" reports again, behind "c"
    det.apply([tick(140.0, "c")], Table().known)
    assert det.runner.watermark == 131.0
