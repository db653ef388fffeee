"""The detectors' feed: priced cost records in, detector inputs per group out, state as table entries.

Three pure pieces that the stream (``streams/detector_agents.py``) and ``burnwatch replay`` share:

- ``route(records)``: the detector inputs of a batch of cost records, grouped by *group key*: the key
  under which entities whose state reads each other live together. A GPU is its own group; an app
  holds its users and sessions (their runaway baselines read the app's state and its session peers);
  each spend scope (team, project, model) and each storage bucket is a group. The stream sends each
  group's inputs keyed by the group key, so one group's state lives in one partition.
- ``PartitionDetectors``: the detectors of one partition (a ``DetectorRunner``). It drops repeated
  inputs (the same ``x_ChargeId``; for LLM requests the same ``x_EventId``), steps the detectors, and
  returns the findings plus the table entries that save its state.
- ``finding_alert``: a finding's alert record (``open`` fires, ``resolved`` resolves; ``update`` only
  goes to ``anomalies``).

Inputs are JSON lists, short on the wire: ``["g", charge_id, start, end, util_pct, allocated, usd,
cluster, team, gpu]`` (a GPU sample), ``["u", event_id, time, app, user, session, model, input_tokens,
output_tokens, usd, prompt_hash, team, offset]`` (an LLM request; ``offset``, its usage message's, only
when routed with its source), ``["s", "<scope>|<digest>", kind, scope, key, minute, usd, quantity]`` (a
batch's sum for one minute of a spend or egress series), ``["t", time, router]`` (an event-time tick
from a router's ``Watermark``; ``router`` names the worker's router; time is null while it starts,
"quiet" once none of its lanes reports), ``["r", source, [[first, last], ...], gpus, requests, series]``
(the inputs one partition gets from a run of usage messages, by kind: ``by_partition``). Times are
epoch seconds.

``route`` and ``latest_by_lane`` have compiled twins in ``kernel/`` (Rust), which the
stream runs when installed (``detector_kernel.py``): a change to one of them is a change to its twin too,
and ``tests/unit/test_kernel.py`` fails until both agree.

Event time moves on ticks only, never on a partition's own inputs: a partition holds GPUs, apps and
scopes together, and one source running ahead of another (a GPU batch late behind LLM traffic) must
not make a GPU look silent or a session look quiet. The ``Watermark`` is the slowest source that still
reports, so a node that stops is a telemetry gap while the other nodes report. Each worker routes the
usage partitions it reads, so with several workers a partition moves only as far as the slowest
router's ticks (``RouterTicks``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from pathlib import Path
from typing import Any

import yaml
from pydantic_core import from_json

from alerting.model import Alert, fingerprint
from detectors.buckets import (
    ALLOCATED,
    CLUSTER,
    COST,
    EGRESS_METER,
    END,
    EVENT_ID,
    LLM_SOURCE,
    METER,
    MODEL,
    PROJECT,
    QUANTITY,
    RESOURCE,
    SOURCE,
    SPEND_SCOPES,
    START,
    STORAGE_METER,
    TEAM,
    UNALLOCATED,
    UTIL,
    GpuBucket,
    LlmUsage,
    SeriesBucket,
    add_llm_record,
    parse_time,
    usage_of,
)
from detectors.config import DetectorConfig
from detectors.deferred import PENDING
from detectors.findings import Finding
from detectors.pending_log import entry_time, replay
from detectors.runner import TICK_S, DetectorRunner
from detectors.state import State, StateError, from_dict, stamped
from streams.core.bounded_groups import bounded_groups
from streams.core.entity_states import LLM_DETECTORS, LLM_SECTIONS, fuse, split
from streams.core.open_inputs import OPEN, OpenInputs, PackedRequests
from streams.core.repeats import seen_before
from streams.core.router_ticks import QUIET, STARTING, RouterTicks

GPU, USAGE, SERIES, TICK, RUN = "g", "u", "s", "t", "r"
STEP_MAX_INPUTS = 20_000  # inputs a step of detector.inputs messages applies at most (``steps_of``)
# LLM buckets a step closes at most, about (``PartitionDetectors.apply``): a tick after a backlog, event time
# held back while it was read, closed every bucket of 300,000 events in one step and wrote 19 MB
STEP_MAX_CLOSED = 20_000
FOLD_S = 60.0  # series inputs of one batch are summed per minute before they are sent
IDLE_SOURCE_S = 300.0
IDLE_WALL_S = 30.0
SEEN, STATE, PEERS, MARK, RANGES, USAGE_RANGES = "i|", "s|", "p|", "w|", "r|", "a|"
SERIES_FIELDS = 8  # a series input's fields before the usage source, run range and per-message sums
USAGE_FIELDS = 12  # an LLM request input's fields before its usage message's offset
MAX_RANGES = 16  # offset ranges kept per series group and usage partition; older gaps count as applied
LLM_STATES = "s|llm|"  # an LLM entity's detector states, one entry (``entity_states``)
LOG = "y|"  # ``y|<partition>|<seq>``: an entry of the young entities' log (``detectors.pending_log``)
LOG_CARRY_FRACTION = 0.5  # of the time a quiet young entity waits: when it is written into the log again
SEEN_VALUE = b"1"  # an ``i|`` entry's value (JSON already): the input was applied; ``o|`` keeps its content
OPEN_SINCE = "|o"  # ``w|<partition>|o``: flushed_to when ``o|`` entries began (null: from the start)
UPGRADED = "|a"  # ``w|<partition>|a``: [true] if saved by a version before runs' ranges, else [false]
# An upgraded partition looks a source's LLM requests up in ``i|`` in this many messages from the first
# run of it applied since. The old version's requests that come again are those of the messages priced
# again after the restart: from the committed offset, past the ones whose ids were stored (no inputs
# now), to the end of the pricing batch then in flight (``BURNWATCH_BATCH_MAX_MESSAGES``: 100,000 at most).
UPGRADE_LOOKUP_MESSAGES = 1_000_000
log = logging.getLogger("burnwatch.detectors")
Item = list[Any]
# LLM requests in chunks, each a list of request inputs or a run's requests as the kernel keeps them
# (``route_runs``): a sequence of the same lists, which its bucketer and ``OpenInputs`` read without them
Chunks = list[Sequence[Item]]


def route(
    records: Iterable[Mapping[str, Any]],
    fold_s: float = FOLD_S,
    *,
    source: str | None = None,
    messages: Sequence[tuple[int, int]] = (),
    lanes: dict[str, float] | None = None,
) -> dict[str, list[Item]]:
    """Return the detector inputs of ``records`` by group key, in record order within a group.

    Series inputs are folded: the records of one batch that fall in the same ``fold_s`` bucket of one
    series become one input at the bucket's start, its id a digest of the charges it holds (the same
    batch read again gives the same ids, so the detectors drop the repeat). ``fold_s`` must divide
    every series bucket width (the narrowest width does).

    With ``source`` (the usage partition the records were priced from) and ``messages`` (the offset and
    record count of each usage message, in order), a series input also carries the run's offsets, as
    ranges (a message skipped in the batch is a gap), and its sums per message: ``[..., source,
    [[first, last], ...], [[offset, usd, quantity], ...]]``. A message priced again after a crash is
    routed in a run that starts elsewhere, with new ids; the detectors count only the messages outside
    the ranges they have applied (``PartitionDetectors.applied_part``). An LLM request input then ends
    with its message's offset, which the detectors judge against the runs they have applied from that
    source (``by_partition``), with no ``i|`` entry of its own.

    With ``lanes`` (a dict), each lane's latest record time goes in it too, as ``latest_by_lane`` gives
    them: the router's ``Watermark`` takes them (``observe``), and the compiled kernel reads the batch once.

    >>> rec = {"SkuMeter": "gpu_hours", "ResourceId": "GPU-1", "ChargePeriodStart": "2026-01-01T00:00:30Z",
    ...        "ChargePeriodEnd": "2026-01-01T00:00:45Z", "x_GpuUtilPct": 1.0, "x_GpuAllocated": True,
    ...        "EffectiveCost": 0.01, "x_ChargeId": "e1:gpu0", "x_SourceType": "gpu.sample",
    ...        "x_Team": "ml", "x_Project": None, "x_Model": "A100", "x_Cluster": "c1"}
    >>> later = {**rec, "ChargePeriodStart": "2026-01-01T00:00:45Z", "x_ChargeId": "e2:gpu0"}
    >>> sorted(route([rec, later]))
    ['gpu:GPU-1', 'model:A100', 'team:ml']
    >>> [item[:3] for item in route([rec, later])["gpu:GPU-1"]]
    [['g', 'e1:gpu0', 1767225630.0], ['g', 'e2:gpu0', 1767225645.0]]
    >>> [(item[0], item[2:]) for item in route([rec, later])["team:ml"]]
    [('s', ['spend_spike', 'team', 'ml', 1767225600.0, 0.02, 0.0])]
    """
    if lanes is not None:
        records = records if isinstance(records, Sequence) else list(records)
        lanes.update(latest_by_lane(records))
    out: dict[str, list[Item]] = {}
    # one pass: a record's charge goes to its (minute, team, project, model) group, its LLM meters to its
    # request's sums; the groups fold into the three spend scopes after it
    # spend: [usd, charges, {message offset: usd}]; egress: [usd, quantity, charges, {offset: [usd, qty]}]
    spend: dict[tuple[float, str, str | None, str | None], list[Any]] = {}
    egress: dict[tuple[str, float], list[Any]] = {}
    usages: dict[str, list[Any]] = {}
    usage_offsets: dict[str, int] | None = {} if source is not None else None  # event id -> first offset
    times: dict[str, tuple[float, float]] = {}
    sizes = iter(messages if source is not None else ())
    offset, left = next(sizes, (0, math.inf))  # the current message's offset, and its records left
    for record in records:
        while left <= 0:  # the next message (messages with no records are skipped)
            offset, left = next(sizes, (offset, math.inf))
        left -= 1
        charge = record["x_ChargeId"]
        text = record[START]
        known = times.get(text)
        if known is None:
            t = parse_time(text)
            known = times[text] = (t, math.floor(t / fold_s) * fold_s)
        t, minute = known
        cost = record[COST]
        meter = record.get(METER)
        if meter == "gpu_hours":
            gpu = str(record[RESOURCE])
            out.setdefault(f"gpu:{gpu}", []).append([
                GPU, charge, t, parse_time(record[END]), float(record.get(UTIL) or 0.0),
                bool(record.get(ALLOCATED)), cost, record.get(CLUSTER), record.get(TEAM), gpu,
            ])
        elif record.get(SOURCE) == LLM_SOURCE:
            add_llm_record(usages, record)
            if usage_offsets is not None:
                usage_offsets.setdefault(record[EVENT_ID], offset)
        group = (minute, record.get(TEAM) or UNALLOCATED, record.get(PROJECT), record.get(MODEL))
        sums = spend.get(group)
        if sums is None:
            spend[group] = [cost, [charge], {offset: cost}]
        else:
            sums[0] += cost
            sums[1].append(charge)
            parts = sums[2]
            parts[offset] = parts.get(offset, 0.0) + cost
        if meter == EGRESS_METER or meter == STORAGE_METER:
            # a storage report opens the bucket's egress series at 0: quiet minutes count (as SeriesBucketer)
            moved = meter == EGRESS_METER
            where = (str(record[RESOURCE]), minute)
            sums = egress.get(where)
            if sums is None:
                sums = egress[where] = [0.0, 0.0, [], {}]
            usd, quantity = (cost, record.get(QUANTITY, 0.0)) if moved else (0.0, 0.0)
            sums[0] += usd
            sums[1] += quantity
            sums[2].append(charge)
            part = sums[3].get(offset)
            if part is None:
                sums[3][offset] = [usd, quantity]
            else:
                part[0] += usd
                part[1] += quantity
    # per series and minute: [usd, quantity, charges, per-message sums]
    folds: dict[tuple[str, str, str, float], list[Any]] = {}
    for (minute, *keys), (cost, charges, parts) in spend.items():
        for (scope, _), key in zip(SPEND_SCOPES, keys, strict=True):
            if key:
                sums = folds.get((scope, key, "spend_spike", minute))
                if sums is None:
                    folds[(scope, key, "spend_spike", minute)] = [cost, 0.0, list(charges), [parts]]
                else:
                    sums[0] += cost
                    sums[2] += charges
                    sums[3].append(parts)
    for (bucket, minute), (cost, quantity, charges, parts) in egress.items():
        folds[("bucket", bucket, "egress_spike", minute)] = [cost, quantity, charges, parts]
    span = _spanned(messages) if source is not None and messages else None
    for (scope, key, kind, minute), (cost, quantity, charges, parts) in folds.items():
        digest = blake2b("\x1f".join((kind, key, *charges)).encode(), digest_size=12).hexdigest()
        item = [SERIES, f"{scope}|{digest}", kind, scope, key, minute, cost, quantity]
        if span is not None:
            item += [source, span, _per_message(parts)]
        out.setdefault(f"{scope}:{key}", []).append(item)
    for event_id, acc in usages.items():
        usage = usage_of(acc)
        item = [
            USAGE, event_id, usage.time, usage.app, usage.user, usage.session, usage.model,
            usage.input_tokens, usage.output_tokens, usage.cost_usd, usage.prompt_hash, usage.team,
        ]
        if usage_offsets is not None:
            item.append(usage_offsets[event_id])
        out.setdefault(f"app:{usage.app}", []).append(item)
    return out


def by_partition(
    routed: Mapping[str, list[Item]],
    partition_of: Callable[[str], int],
    source: str,
    messages: Sequence[tuple[int, int]],
) -> dict[int, list[Item]]:
    """Return a run's inputs (``route``'s, by group key) by partition, as one run item each.

    A run item is ``["r", source, [[first, last], ...], gpus, requests, series]``: the usage partition,
    the offsets of the run's messages (as ranges) and its inputs for the partition by kind, each kind in
    group order (a group's inputs are all of one kind). A partition takes a run whole, in one message
    or one in-place step, so once it has applied a run it has applied all of it: its LLM requests need
    no ``i|`` entries, only the runs' ranges (``PartitionDetectors.apply``).

    >>> routed = {"app:a": [["u", "e1"]], "gpu:G": [["g", "c1"]], "app:b": [["u", "e2"]]}
    >>> parts = by_partition(routed, lambda key: int(key.startswith("gpu")), "usage.llm:3", [(7, 1), (8, 2)])
    >>> parts[0]
    [['r', 'usage.llm:3', [[7, 8]], [], [['u', 'e1'], ['u', 'e2']], []]]
    >>> parts[1]
    [['r', 'usage.llm:3', [[7, 8]], [['g', 'c1']], [], []]]
    """
    span = _spanned(messages)
    at = {GPU: 3, USAGE: 4, SERIES: 5}
    out: dict[int, list[Item]] = {}
    for key, items in routed.items():
        partition = partition_of(key)
        run = out.get(partition)
        if run is None:
            run = out[partition] = [[RUN, source, span, [], [], []]]
        run[0][at[items[0][0]]] += items
    return out


def route_runs(
    records: Iterable[Mapping[str, Any]],
    partition_of: Callable[[str], int],
    fold_s: float = FOLD_S,
    *,
    source: str,
    messages: Sequence[tuple[int, int]],
    lanes: dict[str, float] | None = None,
) -> dict[int, list[Item]]:
    """Return a run's inputs by partition: ``by_partition`` of ``route``'s, in one call.

    The compiled twin (``burnwatch_kernel.route_runs``) gives the same, except that a run item's
    requests are a ``Requests``: a sequence of the same lists, made only when read, which the kernel's
    bucketer folds and ``OpenInputs.save_chunks`` writes without them (making, reading back and freeing
    them was 2.5% of the in-place path's instructions: docs/detectors.md, twenty-fourth round).
    ``plain`` turns it into its lists for JSON.

    >>> rec = {"SkuMeter": "input_tokens", "ConsumedQuantity": 10.0, "EffectiveCost": 0.25,
    ...        "ChargePeriodStart": "2026-01-01T00:00:30Z", "x_SourceType": "llm.request", "x_EventId": "e1",
    ...        "x_ChargeId": "e1:in", "x_App": "chat", "x_Team": "ml"}
    >>> runs = route_runs([rec], lambda key: 0, source="usage.llm:3", messages=[(7, 1)])
    >>> runs[0][0][:3], runs[0][0][4][0][:3]
    (['r', 'usage.llm:3', [[7, 7]]], ['u', 'e1', 1767225630.0])
    """
    routed = route(records, fold_s, source=source, messages=messages, lanes=lanes)
    return by_partition(routed, partition_of, source, messages)


def plain(value: Any) -> list[Item]:
    """Return a run item's packed requests (the kernel's ``Requests``) as their lists.

    ``to_json``'s ``fallback`` for a run sent through the topic: it is called for what JSON cannot hold.

    >>> plain(3)
    Traceback (most recent call last):
    ...
    TypeError: cannot write int as JSON
    """
    if isinstance(value, PackedRequests):
        return value.to_lists()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def run_inputs(run: Item) -> int:
    """Return how many inputs a run item (``by_partition``) holds: its GPU samples, requests and series.

    >>> run_inputs(["r", "usage.llm:3", [[7, 8]], [["g", "c1"]], [["u", "e1"], ["u", "e2"]], []])
    3
    """
    return len(run[3]) + len(run[4]) + len(run[5])


def steps_of(messages: Iterable[list[Item]], max_inputs: int = STEP_MAX_INPUTS) -> Iterator[list[Item]]:
    """Group ``detector.inputs`` messages (each a list of items) into steps of at most ``max_inputs`` inputs.

    A step saves everything it changed in one changelog message, whose size grows with its inputs (up
    to about 160 bytes an input where every session is new): a step over all of a large batch could pass
    the broker's message size (a 19 MB step of 129,000 inputs was measured). Messages stay whole (a run
    is applied all or none), in order; one larger than ``max_inputs`` is a step of its own. A tick counts
    as one input.

    >>> run = lambda n: ["r", "usage.llm:0", [[0, 0]], [], [["u", str(i)] for i in range(n)], []]
    >>> [[len(item[4]) if item[0] == "r" else item[0] for item in step]
    ...  for step in steps_of([[run(3)], [run(2), ["t", 5.0]], [run(9)], [run(1)]], max_inputs=6)]
    [[3, 2, 't'], [9], [1]]
    """
    def inputs(items: list[Item]) -> int:
        return sum(run_inputs(item) if item[0] == RUN else 1 for item in items)

    for group in bounded_groups(messages, inputs, max_inputs):
        yield [item for items in group for item in items]


def _spanned(messages: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Return the offset ranges a run's inputs stand for: those of its messages with records.

    A message with none had every event known to pricing: another router priced it and stored its ids
    once its inputs were sent, so that router's run holds them and must count, wherever it comes.

    >>> _spanned([(4, 2), (5, 0), (6, 1), (7, 3)])
    [[4, 4], [6, 7]]
    """
    return _ranges(offset for offset, records in messages if records)


def _ranges(offsets: Iterable[int]) -> list[list[int]]:
    """Return ascending offsets as ranges of consecutive ones.

    >>> _ranges([4, 5, 6, 9, 10])
    [[4, 6], [9, 10]]
    """
    out: list[list[int]] = []
    for offset in offsets:
        if out and offset == out[-1][1] + 1:
            out[-1][1] = offset
        else:
            out.append([offset, offset])
    return out


def _per_message(parts: Any) -> list[list[Any]]:
    """Return a fold's sums per message, ``[[offset, usd, quantity], ...]`` by offset.

    ``parts`` is an egress fold's ``{offset: [usd, quantity]}`` or a spend fold's list of ``{offset: usd}``
    (one per group it folds).
    """
    if isinstance(parts, dict):
        return [[offset, usd, quantity] for offset, (usd, quantity) in sorted(parts.items())]
    if len(parts) == 1:
        return [[offset, usd, 0.0] for offset, usd in parts[0].items()]  # in record order: by offset
    merged: dict[int, float] = {}
    for group in parts:
        for offset, usd in group.items():
            merged[offset] = merged.get(offset, 0.0) + usd
    return [[offset, merged[offset], 0.0] for offset in sorted(merged)]


def tick(watermark: float, router: str | None = None) -> Item:
    """Return the input that moves a partition's event time to ``watermark``, as far as ``router`` goes.

    A worker's router names itself, so a partition fed by several moves only as far as the slowest
    (``RouterTicks``). ``watermark`` -inf says the router is starting (wait for it), inf that it has
    nothing more to send (``Watermark.keepalive``): JSON has no infinities, they go as null and "quiet".

    >>> tick(60.0, "r1"), tick(-math.inf, "r1"), tick(math.inf, "r1")
    (['t', 60.0, 'r1'], ['t', None, 'r1'], ['t', 'quiet', 'r1'])
    """
    time = watermark if math.isfinite(watermark) else STARTING if watermark < 0 else QUIET
    return [TICK, time] if router is None else [TICK, time, router]


class Watermark:
    """The router's event time: the latest time of the slowest *lane* still reporting.

    A lane is one reporter: a GPU, an app's LLM traffic, a storage bucket (each arrives through its own
    usage partition, so lanes drain a backlog at different speeds). A lane that sent nothing for
    ``idle_wall_s`` seconds of wall-clock time (``now``, in the stream) or, without a clock (replay, in
    time order), is more than ``idle_source_s`` behind the fastest in event time no longer holds time
    back: it stopped, and its silence is what the detectors should notice. With a clock, nothing is
    returned for the first ``idle_wall_s`` after start, so every live lane has reported before time
    moves (a restarted router would otherwise run ahead on the first lanes it reads). While the router
    reads a backlog (``backlog=True``, see ``Backlog``) no lane is let go: a lane whose partition waits
    behind others is starved, not silent. ``observe`` returns a new tick time once event time has moved
    at least ``tick_s``, else None.

    >>> llm = {"x_SourceType": "llm.request", "x_App": "bot"}
    >>> gpu = {"x_SourceType": "gpu.sample", "ResourceId": "GPU-1"}
    >>> wm = Watermark(tick_s=5.0)
    >>> wm.observe([{**llm, "ChargePeriodStart": "2026-01-01T00:01:00Z"}])
    1767225660.0
    >>> wm.observe([{**gpu, "ChargePeriodStart": "2026-01-01T00:00:30Z"}]) is None
    True
    >>> wm.observe([{**llm, "ChargePeriodStart": "2026-01-01T00:01:10Z"},
    ...             {**gpu, "ChargePeriodStart": "2026-01-01T00:01:20Z"}])
    1767225670.0
    """

    def __init__(
        self,
        tick_s: float = TICK_S,
        idle_source_s: float = IDLE_SOURCE_S,
        idle_wall_s: float = IDLE_WALL_S,
        lanes: Callable[[Iterable[Mapping[str, Any]]], dict[str, float]] | None = None,
    ) -> None:
        self.tick_s, self.idle_source_s, self.idle_wall_s = tick_s, idle_source_s, idle_wall_s
        self.lanes = lanes or latest_by_lane  # the compiled kernel's twin, when it runs
        self.latest: dict[str, float] = {}
        self.arrived: dict[str, float] = {}
        self.ticked = -math.inf
        self.started: float | None = None

    def observe(
        self, records: Iterable[Mapping[str, Any]], now: float | None = None, backlog: bool = False,
        lanes: Mapping[str, float] | None = None,
    ) -> float | None:
        """Take a batch of cost records (read at wall-clock ``now``, if any); return a tick time or None.

        ``lanes``: the batch's lanes, when ``route`` has read them already (its ``lanes``).
        """
        latest, arrived = self.latest, self.arrived
        for lane, t in (self.lanes(records) if lanes is None else lanes).items():
            if now is not None:
                arrived[lane] = now
            if t > latest.get(lane, -math.inf):
                latest[lane] = t
        if now is not None:
            if self.started is None:
                self.started = now
            if self._starting(now):
                return None
        if not latest:
            return None
        if now is None:
            top = max(latest.values())
            live = [t for t in latest.values() if t >= top - self.idle_source_s]
        elif backlog:
            live = list(latest.values())
        else:
            live = [t for s, t in latest.items() if self.arrived.get(s, now) >= now - self.idle_wall_s]
        event_time = min(live or latest.values())
        if event_time < self.ticked + self.tick_s:
            return None
        self.ticked = event_time
        return event_time

    def restart(self) -> None:
        """Wait again as at start: the router's usage partitions changed (a rebalance).

        Lanes it has just been given are unknown until it reads them; ticking before then, it would
        run ahead of them (their GPUs would look silent). The lanes it lost go quiet and are let go.
        """
        self.started = None

    def _starting(self, now: float) -> bool:
        """Whether the router is in its first ``idle_wall_s`` (after start, or ``restart``)."""
        return self.started is None or now - self.started < self.idle_wall_s

    def keepalive(self, now: float, backlog: bool = False) -> float:
        """Return what to tick again when ``observe`` returned nothing: this router is still there.

        While it starts (its first ``idle_wall_s``, again after a rebalance: ``restart``), -inf: it has
        not ticked yet, and the partitions wait for it (``RouterTicks``). Then its last tick, while one
        of its lanes still reports or it reads a backlog (``observe`` lets no lane go then); inf once
        none does (they all went quiet, or it has none): it holds no partition back.

        >>> wm = Watermark(idle_wall_s=5.0)
        >>> wm.observe([], now=0.0), wm.keepalive(now=1.0)
        (None, -inf)
        >>> wm.observe([{"x_SourceType": "gpu.sample", "ResourceId": "G1",
        ...              "ChargePeriodStart": "2026-01-01T00:00:30Z"}], now=6.0)
        1767225630.0
        >>> wm.keepalive(now=7.0), wm.keepalive(now=12.0), wm.keepalive(now=12.0, backlog=True)
        (1767225630.0, inf, 1767225630.0)
        """
        if self._starting(now):
            return -math.inf
        live = backlog or any(at >= now - self.idle_wall_s for at in self.arrived.values())
        return self.ticked if live and self.ticked > -math.inf else math.inf


def latest_by_lane(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Return each lane's latest record time in ``records``, lanes in order of first appearance.

    A lane is an app's LLM traffic or a resource's (a GPU, a storage bucket) reports (``Watermark``).

    >>> llm = {"x_SourceType": "llm.request", "x_App": "bot"}
    >>> gpu = {"x_SourceType": "gpu.sample", "ResourceId": "GPU-1"}
    >>> latest_by_lane([{**llm, "ChargePeriodStart": "2026-01-01T00:01:00Z"},
    ...                 {**gpu, "ChargePeriodStart": "2026-01-01T00:00:30Z"},
    ...                 {**llm, "ChargePeriodStart": "2026-01-01T00:00:59Z"}])
    {'llm.request|bot': 1767225660.0, 'gpu.sample|GPU-1': 1767225630.0}
    """
    latest: dict[str, float] = {}
    for record in records:
        source = record["x_SourceType"]
        lane = source + "|" + str(record.get("x_App") if source == "llm.request" else record[RESOURCE])
        t = parse_time(record[START])  # cached: route has just parsed the same times
        if t > latest.get(lane, -math.inf):
            latest[lane] = t
    return latest


class Backlog:
    """Whether the router reads a backlog: some input partition had more than ``limit`` messages unread.

    ``record`` takes, after each batch, how many messages its partition still had unread (the
    partition's end offset less the batch's next one). A partition's figure counts for ``keep_s``
    seconds of wall-clock time after its last batch, so a partition the worker no longer reads (after a
    rebalance) stops counting; one starved that long behind the others lets its lanes go.

    >>> backlog = Backlog(limit=100, keep_s=60.0)
    >>> backlog.record(("usage.gpu", 0), 5_000, now=0.0)
    >>> backlog.behind(now=1.0), backlog.behind(now=61.0)
    (True, False)
    >>> backlog.record(("usage.gpu", 0), 40, now=2.0)
    >>> backlog.behind(now=3.0)
    False
    """

    def __init__(self, limit: int, keep_s: float) -> None:
        self.limit, self.keep_s = limit, keep_s
        self.unread: dict[Any, tuple[int, float]] = {}

    def record(self, partition: Any, unread: int, now: float) -> None:
        """Note that ``partition`` had ``unread`` messages left after a batch read at ``now``."""
        self.unread[partition] = (unread, now)

    def behind(self, now: float) -> bool:
        """Whether a partition read in the last ``keep_s`` seconds had more than ``limit`` unread."""
        return any(unread > self.limit and now - at <= self.keep_s for unread, at in self.unread.values())


class SeriesContributions:
    """``SeriesBucketer`` over routed series inputs: sums them into 1-minute and 1-hour buckets.

    >>> bk = SeriesContributions((60.0,))
    >>> bk.add(["s", "team|e1:x", "spend_spike", "team", "cx", 10.0, 2.0, 0.0])
    >>> [(b.kind, b.entity, b.cost_usd) for b in bk.flush(60.0)]
    [('spend_spike', {'team': 'cx', 'window': '1m'}, 2.0)]
    """

    def __init__(self, widths: Iterable[float]) -> None:
        self.widths = tuple(float(w) for w in widths)
        # keyed by width too: the minute and the hour that start at the same time are two buckets
        self.open: dict[tuple[str, str, str, float, float], SeriesBucket] = {}
        # the open buckets' keys by end time, so a flush looks only at those that end by then
        self.ends: dict[float, list[tuple[str, str, str, float, float]]] = {}

    def add(self, item: Item) -> None:
        """Fold one series input into its bucket of every width."""
        kind, scope, key, t, cost, quantity = item[2:SERIES_FIELDS]
        for width in self.widths:
            start = math.floor(t / width) * width
            where = (scope, key, kind, start, width)
            bucket = self.open.get(where)
            if bucket is None:
                bucket = self.open[where] = SeriesBucket(kind, scope, key, start, start + width)
                self.ends.setdefault(bucket.end, []).append(where)
            bucket.cost_usd += cost
            bucket.quantity += quantity

    def flush(self, watermark: float) -> list[SeriesBucket]:
        """Close and return every bucket that ended at or before ``watermark``, by end time."""
        ends = [end for end in self.ends if end <= watermark]
        if not ends:
            return []
        closed = [self.open.pop(where) for end in ends for where in self.ends.pop(end)]
        closed.sort(key=lambda b: (b.end, b.kind, b.scope, b.key))
        return closed


def _usage(item: Item) -> LlmUsage:
    return LlmUsage(*item[2:12])


def _gpu(item: Item) -> GpuBucket:
    _, _, start, end, util, allocated, cost, cluster, team, gpu = item
    return GpuBucket(gpu, start, end, util, allocated, cost, None, cluster, team)


@dataclass
class Applied:
    """What one batch of inputs did: findings, table entries to save, inputs dropped as repeats."""

    findings: list[Finding] = field(default_factory=list)
    entries: list[tuple[str, Any]] = field(default_factory=list)
    applied: int = 0
    repeated: int = 0
    late_buckets: int = 0  # buckets of late inputs, closed at the batch's end (``DetectorRunner.close_late``)
    # a tick's closes stopped short (``max_closed``): save this, then apply ``rest`` (the items after it)
    unfinished: bool = False
    rest: list[Item] = field(default_factory=list)


class PartitionDetectors:
    """The detectors of one partition, their state saved as ``(key, JSON value)`` table entries.

    Entries: ``i|<input id>`` (seen series inputs, and LLM requests routed outside a run: the
    dedup memory; its value is ``1``), ``a|<usage partition>`` (the usage offset ranges of the runs
    applied from it: the LLM requests' dedup memory, ``apply``),
    ``o|u|<input id>`` and ``o|s|<input id>`` (the LLM requests and series sums of one step whose
    buckets were still open, for a restart: ``open_inputs``), ``r|<scope>|<key>|<usage partition>``
    (the usage offset ranges a series group has applied: ``applied_part``), ``s|llm|<entity id>`` (an
    app's, user's or session's states, one document for all its LLM detectors: ``entity_states.fuse``),
    ``y|<partition>|<seq>`` (the young sessions' and users' log: what happened to them in one step, JSON
    bytes already when the compiled bucketer keeps them: ``detectors.pending_log``; before the log each
    had its own ``s|llm|`` document, which the log continues after a restore until it goes),
    ``s|<detector>|<entity id>`` (a GPU's or a series' state; both ``None`` once expired), ``p|<app>``
    (an app's session peers), ``w|<partition>`` (event time reached and buckets closed up to) and
    ``w|<partition>|o`` (buckets closed up to when ``o|`` entries began: ``saved_entries``).

    Examples
    --------
    >>> det = PartitionDetectors(0)
    >>> items = [["g", f"e{i}:gpu0", 15.0 * i, 15.0 * (i + 1), 0.0, True, 0.01, None, "ml", "G1"]
    ...          for i in range(64)]
    >>> done = det.apply(items, lambda keys: [False] * len(keys))
    >>> [(f.kind, f.state, f.detected_at.timestamp()) for f in done.findings]
    [('idle_gpu', 'open', 900.0)]
    >>> det.apply(items[:2], lambda keys: [True] * len(keys)).repeated
    2
    >>> again = PartitionDetectors.restore(0, done.entries)
    >>> again.apply([["g", "e99:gpu0", 960.0, 975.0, 90.0, True, 0.01, None, "ml", "G1"]],
    ...             lambda keys: [False] * len(keys)).findings[0].state
    'resolved'
    """

    def __init__(
        self,
        partition: int,
        config: DetectorConfig | None = None,
        llm_bucketer: Callable[[Any], Any] | None = None,
        idle_gpu_quiet: Callable[[Any], Any] | None = None,
        routers: RouterTicks | None = None,
    ) -> None:
        self.partition = partition
        self.routers = routers or RouterTicks()  # how far the ticks of the routers feeding it let time move
        self.runner = DetectorRunner(config, track_entities=False)
        if llm_bucketer is not None:  # the compiled kernel's twin (``detector_kernel.Feed.llm_bucketer``)
            self.runner.llm = llm_bucketer(self.runner.config.buckets)
            if hasattr(self.runner.llm, "wait"):  # it keeps young entities' buckets too (kernel API 5)
                self.runner.wait_in_bucketer()
        # the compiled kernel's quiet path of the idle-GPU step (``detector_kernel.Feed.idle_gpu_quiet``)
        self.gpu_quiet = None if idle_gpu_quiet is None else idle_gpu_quiet(self.runner.config.idle_gpu)
        self.legacy: set[str] = set()  # LLM entities restored from one entry per detector (before s|llm|)
        self.runner.series = SeriesContributions(self.runner.config.buckets.series_s)
        # series group and usage partition -> [applied offset ranges, the current run's ranges]
        self.ranges: dict[str, list[Any]] = {}
        self.ranges_changed: set[str] = set()
        self.usage_ranges: dict[str, list[list[int]]] = {}  # usage partition -> offset ranges of runs applied
        self.usage_ranges_changed: set[str] = set()
        # saved by a version before the runs' ranges (``w|<partition>|a``): its ``i|`` entries hold requests
        self.upgraded = False
        self.upgraded_saved = False
        self.open = OpenInputs()
        # ``w|<partition>|o``: -inf for a partition that began with ``o|`` entries; None, restored from a
        # version before them, until its first tick (its ``i|`` entries may hold inputs of open buckets)
        self.open_since: float | None = -math.inf
        self.open_since_saved = False
        self.advancing: float | None = None  # a tick's event time, while its closes go on over steps
        buckets = self.runner.config.buckets
        self.llm_widths = (buckets.session_s, buckets.app_s, buckets.scope_s)
        self.series_widths = buckets.series_s
        # a young entity pinned this long is written again whole: about twice in its life at most
        self.runner.log_pending(self.runner.runaway.config.expire_after_s * LOG_CARRY_FRACTION)

    def apply(self, items: Sequence[Item], known: Callable[[Sequence[str]], list[bool]],
              max_closed: int | None = None) -> Applied:
        """Step the detectors with ``items``, skipping inputs already applied.

        ``known(keys)`` says which ``i|<input id>`` keys the table holds (one lookup per batch). Items
        apply in order: a tick closes buckets over the inputs before it, not those after it. Buckets that
        only late inputs opened after the last tick (they end by it) are closed at the end of the batch.

        With ``max_closed``, a tick that would close more LLM buckets than that moves event time only as
        far as closes about that many (``LlmBucketer.closing_bound``), as if a tick had come there, and
        the step ends there, ``unfinished``: the caller saves it and applies ``rest``, the items after the
        tick, which goes on towards the tick's time first. What one step saves stays bounded: a tick after
        a backlog, with event time held back while it was read, can close every bucket of the backlog.

        A run (``by_partition``: a run of usage messages' inputs for this partition, by kind) applies
        whole (``_apply_run``); inputs routed without one (by ``replay``, or by a version before runs)
        one by one, LLM requests and series alike by their ``i|`` entries.

        GPU samples, like LLM requests, are applied together between two ticks (``_add_gpus``): only a
        tick reads the GPUs' states, and only the GPUs' own steps find anything before it.
        """
        runner, done = self.runner, Applied()
        if self.advancing is not None and not self._advance(self.advancing, max_closed):
            done.rest, items = list(items), ()  # they come after the tick under way
        bounds = self._look_up_bounds(items)  # per source: requests of messages below it are looked up
        keys = self._seen_keys(items, bounds)
        repeats = iter(zip(keys, seen_before(keys, known(keys) if keys else []), strict=True))
        gpus: list[Item] = []  # GPU samples since the last tick, applied together before the next one
        # LLM requests since the last tick, bucketed together before the next one, in chunks (``Chunks``)
        usages: Chunks = []
        fresh: tuple[Chunks, list[Item]] = ([], [])  # the LLM requests and series sums applied
        for index, item in enumerate(items):
            tag = item[0]
            if tag == RUN:
                self._apply_run(item, bounds[item[1]], repeats, gpus, usages, fresh, done)
            elif tag == TICK:
                if gpus:
                    self._add_gpus(gpus, done)
                    gpus = []
                if usages:
                    self._add_usages(usages)
                    usages = []
                event_time = self.routers.tick(item)
                if event_time is not None and event_time > runner.watermark and not self._advance(
                        event_time, max_closed):
                    done.rest = list(items[index + 1:])
                    break
            elif tag == GPU:
                gpus.append(item)
            else:
                seen, repeated = next(repeats)
                if repeated:
                    done.repeated += 1
                elif tag == USAGE:
                    usages.append([item])
                    fresh[0].append([item])
                    done.applied += 1
                    done.entries.append((seen, SEEN_VALUE))
                else:
                    self._add_series(item, seen, fresh, done)
        if gpus:
            self._add_gpus(gpus, done)
        if usages:
            self._add_usages(usages)
        # a late input's bucket, one that ends by the last flush, is closed now rather than at the next
        # tick: a restart before that tick would rebuild only the buckets ending after the flush
        done.late_buckets = runner.close_late()
        done.findings, runner.findings = runner.findings, []
        done.unfinished = self.advancing is not None
        self._save_open(*fresh, done.entries)
        self._save(done.entries)
        return done

    def _advance(self, event_time: float, max_closed: int | None) -> bool:
        """Move event time to a tick's ``event_time``; False when it stopped short (``max_closed``)."""
        if max_closed is not None:
            bound = self.runner.llm.closing_bound(event_time, max_closed)
            if bound < event_time:
                self.runner.advance(bound, now=True)  # as a tick there would (even within TICK_S of the last)
                self.advancing = event_time
                return False
        self.runner.advance(event_time)
        self.advancing = None
        return True

    def _apply_run(self, run: Item, below: float, repeats: Iterator[tuple[str, bool]], gpus: list[Item],
                   usages: Chunks, fresh: tuple[Chunks, list[Item]], done: Applied) -> None:
        """Take in a run's inputs (applied with the others between the same two ticks).

        Its LLM requests are judged by their messages' offsets, not ``i|`` entries: one is a repeat when
        its offset is in the ranges of the runs applied from its source before (``a|`` entries), and the
        run's offsets join those ranges now. A run wholly after them, the usual case, takes its requests
        without a look at each. A partition saved by a version before the ranges (``upgraded``: its
        ``i|`` entries hold the requests it applied) also looks a source's requests up in ``i|`` below
        ``below``: those in the ``UPGRADE_LOOKUP_MESSAGES`` messages from the first run of the source
        applied since, where the messages the old version applied and pricing prices again after the
        restart are; those applied there get an ``i|`` entry too, for the old version's inputs of them
        that may still be in the topic. Its series inputs are judged as ever (``i|`` entries and
        ``applied_part``).
        """
        _, source, span, run_gpus, run_usages, run_series = run
        gpus += run_gpus
        ranges = self.usage_ranges.get(source)
        if run_usages:
            first = span[0][0]
            kept: Sequence[Item]
            if first >= below and (ranges is None or first > ranges[-1][1]):
                kept = run_usages  # as it is: a list, or the kernel's ``Requests`` (``route_runs``)
            else:
                unseen: list[Item] = []
                for item in run_usages:
                    offset = item[USAGE_FIELDS]
                    seen, repeated = next(repeats) if offset < below else (None, False)
                    if repeated or _in_ranges(ranges, offset):
                        done.repeated += 1
                        continue
                    unseen.append(item)
                    if seen is not None:  # the old version's inputs of it, still in the topic, may follow
                        done.entries.append((seen, SEEN_VALUE))
                kept = unseen
            usages.append(kept)
            fresh[0].append(kept)
            done.applied += len(kept)
        for item in run_series:
            seen, repeated = next(repeats)
            if repeated:
                done.repeated += 1
            else:
                self._add_series(item, seen, fresh, done)
        self.usage_ranges[source] = _merged(ranges or [], span)
        self.usage_ranges_changed.add(source)

    def _add_series(self, item: Item, seen: str, fresh: tuple[Chunks, list[Item]], done: Applied) -> None:
        """Add a series input not seen before (only the part of its run's messages not applied before)."""
        if len(item) > SERIES_FIELDS:
            part = self.applied_part(item)
            if part is None:  # every message of it was applied in an earlier run
                done.repeated += 1
                return
            # its run's offsets are in the ``r|`` ranges now; the ``i|`` entry keeps what a restore
            # refills the bucket with, not the sums of every usage message in the run
            item = part[:SERIES_FIELDS]
        self.runner.series.add(item)
        fresh[1].append(item)
        done.applied += 1
        done.entries.append((seen, SEEN_VALUE))

    def _look_up_bounds(self, items: Sequence[Item]) -> dict[str, float]:
        """Return, per source of a run in ``items``, the offset below which its requests are looked up."""
        bounds: dict[str, float] = {}
        for item in items:
            if item[0] == RUN and item[1] not in bounds:
                if not self.upgraded:
                    bounds[item[1]] = -math.inf
                else:  # from the first run of the source applied since the upgrade on
                    ranges = self.usage_ranges.get(item[1])
                    bounds[item[1]] = math.inf if ranges is None else ranges[0][0] + UPGRADE_LOOKUP_MESSAGES
        return bounds

    @staticmethod
    def _seen_keys(items: Sequence[Item], bounds: Mapping[str, float]) -> list[str]:
        """Return the ``i|`` keys ``apply`` looks up, in the order it takes them."""
        keys: list[str] = []
        for item in items:
            tag = item[0]
            if tag == RUN:
                below = bounds[item[1]]
                if item[4] and below > item[2][0][0]:  # some of its requests may be below it
                    keys += [SEEN + usage[1] for usage in item[4] if usage[USAGE_FIELDS] < below]
                keys += [SEEN + series[1] for series in item[5]]
            elif tag == USAGE or tag == SERIES:
                keys.append(SEEN + item[1])
        return keys

    def _add_gpus(self, items: list[Item], done: Applied) -> None:
        """Apply GPU samples in order: the kernel's quiet path where it can, else the Python step.

        A sample is a repeat when it ends no later than its GPU's last applied sample (its state's
        ``last``, saved with the state): a GPU's samples arrive in time order, so GPU inputs need no
        ``i|`` entry of their own (they were half of all inputs). The kernel (``IdleGpuQuiet.apply_quiet``)
        takes the samples in order up to the first that could find something; that one goes to the Python
        step, and the kernel goes on after it.
        """
        runner, quiet = self.runner, self.gpu_quiet
        if quiet is None:
            gpus = runner.states["idle_gpu"]
            for item in items:
                state = gpus.get("gpu=" + item[9])  # entity_id of a GpuBucket without a node
                if state is not None and item[3] <= state.get("last", -math.inf):
                    done.repeated += 1
                else:
                    runner.add_gpu(_gpu(item))
                    done.applied += 1
            return
        at = 0
        while at < len(items):
            at, applied, repeated = quiet.apply_quiet(runner.states["idle_gpu"], runner.changed, items, at)
            done.applied += applied
            done.repeated += repeated
            if at < len(items):  # it could find something: the Python step
                runner.add_gpu(_gpu(items[at]))
                done.applied += 1
                at += 1

    def _add_usages(self, usages: Chunks) -> None:
        """Bucket LLM request inputs (only a tick closes buckets, so those between two go in together)."""
        add_inputs = getattr(self.runner.llm, "add_inputs", None)  # the kernel's: no LlmUsage per request
        if add_inputs is not None:
            add_inputs(usages)
        else:
            for chunk in usages:
                for item in chunk:
                    self.runner.add_usage(_usage(item))

    def applied_part(self, item: Item) -> Item | None:
        """Return the part of a series input from messages its group has not applied yet (None: none).

        The input names its usage partition, its run's offsets (as ranges) and its sums per message. A
        run that overlaps no range the group (scope and key) has applied from that partition counts
        whole; one that does (its messages priced again after a crash, or read again out of order) counts
        only the messages outside those ranges. A run's ranges join them at the group's next run: the
        inputs of one run (one per minute) are all judged against the ranges before it.

        >>> det = PartitionDetectors(0)
        >>> run = ["s", "team|a", "spend_spike", "team", "ml", 0.0, 3.0, 0.0, "usage.llm:0", [[10, 12]],
        ...        [[10, 1.0, 0.0], [11, 1.0, 0.0], [12, 1.0, 0.0]]]
        >>> det.applied_part(run)[6]
        3.0
        >>> again = [*run[:6], 5.0, 0.0, "usage.llm:0", [[11, 13]],
        ...          [[11, 1.0, 0.0], [12, 1.0, 0.0], [13, 2.0, 0.0]]]
        >>> det.applied_part(again)[6]  # 11 and 12 were applied with the first run: only 13 counts
        2.0
        >>> det.applied_part([*run[:6], 1.0, 0.0, "usage.llm:0", [[10, 10]], [[10, 1.0, 0.0]]]) is None
        True
        """
        scope, key, source, span, parts = item[3], item[4], item[8], item[9], item[10]
        name = f"{scope}|{key}|{source}"
        ranges = self.ranges.get(name)
        if ranges is None:
            ranges = self.ranges[name] = [[], span]
        elif ranges[1] != span:
            ranges[0], ranges[1] = _merged(ranges[0], ranges[1]), span
        self.ranges_changed.add(name)
        applied = ranges[0]
        if all(end < first or start > last for first, last in span for start, end in applied):
            return item
        usd = quantity = 0.0
        fresh = False
        for offset, part_usd, part_quantity in parts:
            if not _in_ranges(applied, offset):
                usd += part_usd
                quantity += part_quantity
                fresh = True
        return [*item[:6], usd, quantity, *item[SERIES_FIELDS:]] if fresh else None

    def _save_open(self, usages: Chunks, series: list[Item], entries: list[tuple[str, Any]]) -> None:
        """Keep the step's inputs whose buckets are still open (``o|``); delete those all closed now."""
        flushed_to = self.runner.flushed_to
        if not self.open_since_saved:
            if self.open_since is None and flushed_to > -math.inf:
                self.open_since = flushed_to
            if self.open_since is not None:
                entries.append((f"{MARK}{self.partition}{OPEN_SINCE}", [_finite(self.open_since)]))
                self.open_since_saved = True
        if usages:
            entries += self.open.save_chunks(USAGE + "|", usages, self.llm_widths, flushed_to)
        if series:
            entries += self.open.save(SERIES + "|", series, 5, self.series_widths, flushed_to)
        entries += self.open.expired(flushed_to)

    def _save(self, entries: list[tuple[str, Any]]) -> None:
        runner, states = self.runner, self.runner.states
        fused: dict[str, None] = {}  # LLM entities, in order
        for name, key in sorted(runner.changed):
            if name in LLM_DETECTORS:
                fused[key] = None
            else:
                state = states[name].get(key)
                entries.append((f"{STATE}{name}|{key}", None if state is None else stamped(state)))
        tables = [(name, states[name]) for name in LLM_DETECTORS]
        for key in fused:
            entries.append((LLM_STATES + key, fuse(tables, key)))
            if self.legacy and key in self.legacy:  # its states were last saved one entry each
                self.legacy.discard(key)
                entries += [(f"{STATE}{name}|{key}", None) for name in LLM_DETECTORS]
        logged, deleted, dropped = runner.pending_log_entry()
        log_key = f"{LOG}{self.partition}|"
        if logged is not None:
            entries.append((f"{log_key}{logged[0]}", logged[1]))
        entries += [(f"{log_key}{seq}", None) for seq in deleted]
        # young entities saved whole before the log, gone or written into it now: their documents go
        entries += [(LLM_STATES + key, None) for key in dropped if key not in fused]
        for app in sorted(runner.peers_changed):
            entries.append((PEERS + app, stamped(runner.peers[app])))
        entries += [(RANGES + name, self.ranges[name]) for name in sorted(self.ranges_changed)]
        self.ranges_changed.clear()
        entries += [(USAGE_RANGES + source, self.usage_ranges[source])
                    for source in sorted(self.usage_ranges_changed)]
        self.usage_ranges_changed.clear()
        if not self.upgraded_saved:
            entries.append((f"{MARK}{self.partition}{UPGRADED}", [self.upgraded]))
            self.upgraded_saved = True
        runner.changed.clear()
        runner.peers_changed.clear()
        entries.append((f"{MARK}{self.partition}", [_finite(runner.watermark), _finite(runner.flushed_to)]))

    @classmethod
    def restore(
        cls,
        partition: int,
        entries: Iterable[tuple[str, Any]],
        config: DetectorConfig | None = None,
        llm_bucketer: Callable[[Any], Any] | None = None,
        idle_gpu_quiet: Callable[[Any], Any] | None = None,
        routers: RouterTicks | None = None,
    ) -> PartitionDetectors:
        """Rebuild a partition's detectors from its saved entries (after a restart or a rebalance).

        Open buckets are rebuilt from the inputs they hold (``o|`` entries; before them, ``i|`` entries
        held their inputs): those not yet closed when the state was saved (bucket end after
        ``flushed_to``). ``saved_entries`` reads just the entries this needs.
        """
        self = cls(partition, config, llm_bucketer, idle_gpu_quiet, routers)
        runner = self.runner
        pending: list[Item] = []
        marked, since, ranged = False, None, None  # a saved mark; when ``o|`` entries began; ``|a``
        states: dict[tuple[str, str], State] = {}
        merged: dict[str, dict[str, State]] = {}  # s|llm| entries by entity
        logged: list[tuple[int, Any]] = []  # the young entities' log: (seq, entry)
        log_key = f"{LOG}{partition}|"
        for key, value in entries:
            if value is None:
                continue
            if isinstance(value, bytes):  # JSON written by the kernel (``apply``'s entries, not yet stored)
                value = from_json(value)
            if key.startswith(LLM_STATES):
                entity = key[len(LLM_STATES):]
                try:
                    fused = split(value)
                except StateError as error:
                    log.warning("dropped the saved detector states %s: %s", key, error)
                    continue
                merged[entity] = fused
            elif key.startswith(STATE) or key.startswith(PEERS):
                try:
                    state = from_dict(value)
                except StateError as error:  # one unreadable state starts that entity afresh
                    log.warning("dropped the saved detector state %s: %s", key, error)
                    continue
                if key.startswith(PEERS):
                    runner.peers[key[len(PEERS):]] = state
                    continue
                name, entity = key[len(STATE):].split("|", 1)
                states[(name, entity)] = state
                if name in LLM_DETECTORS:  # saved one entry each, before ``s|llm|``: dropped at its next save
                    self.legacy.add(entity)
            elif key.startswith(RANGES):
                if _ranges_ok(value):
                    self.ranges[key[len(RANGES):]] = value
                else:  # its group counts every later run whole, as before ranges were kept
                    log.warning("dropped the saved offset ranges %s: %r", key, value)
            elif key.startswith(USAGE_RANGES):
                if _pairs(value) and value:
                    self.usage_ranges[key[len(USAGE_RANGES):]] = value
                else:  # its source's requests are looked up in ``i|`` again until a run brings a new one
                    log.warning("dropped the saved offset ranges %s: %r", key, value)
            elif key == f"{MARK}{partition}":
                runner.watermark, runner.flushed_to = (v if v is not None else -math.inf for v in value)
                marked = True
            elif key == f"{MARK}{partition}{OPEN_SINCE}":
                since = _saved_time(value)
            elif key == f"{MARK}{partition}{UPGRADED}":
                ranged = value
            elif key.startswith(OPEN):
                pending += self.open.restore(key, value)
            elif key.startswith(log_key):
                seq = key[len(log_key):]
                if seq.isdigit():
                    logged.append((int(seq), value))
                else:
                    log.warning("dropped the young entities' log entry %s: not a sequence number", key)
            elif key.startswith(SEEN) and isinstance(value, list):  # saved before ``o|`` entries
                pending.append(value)
        if since is not None:
            self.open_since, self.open_since_saved = since, True
        elif marked:  # saved by a version before ``o|`` entries
            self.open_since = None
        if isinstance(ranged, list) and len(ranged) == 1 and isinstance(ranged[0], bool):
            self.upgraded, self.upgraded_saved = ranged[0], True
        elif marked:  # saved by a version before the runs' ranges (or its mark unreadable: looked up)
            self.upgraded = True
        for entity, fused in merged.items():  # newer than any one-entry state of the same entity
            for name in LLM_SECTIONS:
                states.pop((name, entity), None)
            states.update(((name, entity), state) for name, state in fused.items())
        old: dict[str, State] = {}  # young entities saved whole before the log: the log continues them
        for (name, entity), state in states.items():
            if name == PENDING:
                old[entity] = state
            else:
                runner.restore(name, entity, state)
        waiting, pinned = replay(logged, runner.runaway.config.window_s, old)
        runner.restore_pending_log((seq, entry_time(value)) for seq, value in logged)
        for entity, doc in waiting.items():
            try:
                runner.restore_waiting(entity, doc, pinned.get(entity), entity in old)
            except ValueError as error:  # a pending document the kernel's bucketer cannot read
                log.warning("dropped the saved detector state %s of %s: %s", PENDING, entity, error)
        horizon = runner.flushed_to - widest_bucket_s(runner.config)
        for item in sorted(pending, key=lambda i: i[5] if i[0] == SERIES else i[2]):
            if item[0] == USAGE and item[2] >= horizon:
                runner.add_usage(_usage(item))
            elif item[0] == SERIES and item[5] >= horizon:
                runner.series.add(item)
        runner.llm.flush(runner.flushed_to)  # already closed and stepped before the restart
        runner.series.flush(runner.flushed_to)
        return self


def widest_bucket_s(config: DetectorConfig) -> float:
    """Return the widest bucket of any detector: how far before ``flushed_to`` a bucket can be open."""
    buckets = config.buckets
    return max((*buckets.series_s, buckets.app_s, buckets.scope_s, buckets.session_s))


def saved_entries(read: Callable[[str], Iterable[tuple[str, Any]]], partition: int, widest_s: float
                  ) -> Iterator[tuple[str, Any]]:
    """Yield the entries ``PartitionDetectors.restore`` needs, read by key prefix with ``read(prefix)``.

    The ``i|`` entries (one per input applied within the dedup horizon, days of them) are skipped: a
    restore needs only the open inputs, in ``o|`` entries. Those a partition saved before ``o|``
    entries began hold inputs in ``i|`` entries, which are read until buckets have closed up to a widest
    bucket past that start (``w|<partition>|o``: from a partition's first tick after it), or while that
    mark is missing.

    >>> table = {"i|a": ["u", "a", 5.0], "i|b": 1, "w|0": [3600.0, 3600.0], "o|u|c": [3610.0, []]}
    >>> def read(prefix):
    ...     return [(key, value) for key, value in table.items() if key.startswith(prefix)]
    >>> sorted(key for key, _ in saved_entries(read, 0, 3600.0))  # no w|0|o: saved before o| began
    ['i|a', 'i|b', 'o|u|c', 'w|0']
    >>> table["w|0|o"] = [0.0]
    >>> sorted(key for key, _ in saved_entries(read, 0, 3600.0))
    ['o|u|c', 'w|0', 'w|0|o']
    >>> table["w|0|o"] = [None]  # a partition that kept o| entries from its start
    >>> sorted(key for key, _ in saved_entries(read, 0, 3600.0))
    ['o|u|c', 'w|0', 'w|0|o']
    """
    marks = dict(read(MARK))
    since = _saved_time(marks.get(f"{MARK}{partition}{OPEN_SINCE}"))
    mark = marks.get(f"{MARK}{partition}")
    flushed_to = _saved_time(mark[1:]) if isinstance(mark, list) else None
    yield from marks.items()
    for prefix in (OPEN, PEERS, RANGES, USAGE_RANGES, STATE, f"{LOG}{partition}|"):
        yield from read(prefix)
    if since is None or flushed_to is None or flushed_to < since + widest_s:
        yield from read(SEEN)


def _saved_time(value: Any) -> float | None:
    """Return a saved ``[time]`` as a float (null: -inf); None if it is not one.

    >>> _saved_time([60.0]), _saved_time([None]), _saved_time("x")
    (60.0, -inf, None)
    """
    if not (isinstance(value, list) and len(value) == 1):
        return None
    if value[0] is None:
        return -math.inf
    return float(value[0]) if isinstance(value[0], (int, float)) else None


def _merged(ranges: list[list[int]], span: list[list[int]]) -> list[list[int]]:
    """Return ``ranges`` with the ranges of ``span`` added: sorted, overlapping or adjacent ones joined.

    At most ``MAX_RANGES`` are kept, the oldest gaps closed first: a re-read comes back seconds later.

    >>> _merged([[0, 9], [20, 29]], [[10, 15], [17, 18]])
    [[0, 15], [17, 18], [20, 29]]
    >>> _merged([[2 * i, 2 * i] for i in range(16)], [[40, 41]])[:2]
    [[0, 2], [4, 4]]
    """
    out: list[list[int]] = []
    for start, end in sorted([*ranges, *span]):
        if out and start <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    while len(out) > MAX_RANGES:
        out[0:2] = [[out[0][0], out[1][1]]]
    return out


def _pairs(value: Any) -> bool:
    """Whether ``value`` is ``[[start, end], ...]`` of integers.

    >>> _pairs([[1, 4], [6, 6]]), _pairs([[1, 4.5]]), _pairs("x")
    (True, False, False)
    """
    return isinstance(value, list) and all(
        isinstance(r, list) and len(r) == 2 and all(type(x) is int for x in r) for r in value)


def _ranges_ok(value: Any) -> bool:
    """Whether a saved ``r|`` entry is ``[[[start, end], ...], [[start, end], ...]]`` of integers."""
    return isinstance(value, list) and len(value) == 2 and _pairs(value[0]) and _pairs(value[1])


def _in_ranges(ranges: list[list[int]] | None, offset: int) -> bool:
    """Whether ``offset`` is in one of ``ranges`` (ascending ``[first, last]`` pairs; None or []: none).

    >>> [_in_ranges([[0, 3], [5, 8]], offset) for offset in (2, 4, 8, 9)]
    [True, False, True, False]
    >>> _in_ranges(None, 1), _in_ranges([], 1)
    (False, False)
    """
    if not ranges or offset > ranges[-1][1]:
        return False
    return any(start <= offset <= end for start, end in ranges)


def load_detector_config(path: Path | None) -> DetectorConfig:
    """Read detector sensitivities from a YAML file (keys as in ``DetectorConfig``); None: the defaults."""
    if path is None:
        return DetectorConfig()
    return DetectorConfig.model_validate(yaml.safe_load(path.read_text()) or {})


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def finding_alert(finding: Finding) -> Alert | None:
    """Return the alert record of a finding: ``open`` fires, ``resolved`` resolves, ``update`` is None.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> f = Finding("idle_gpu", {"gpu": "g1"}, "open", "warning", "idle", t, t, cost_impact_usd=1.5,
    ...             cost_impact_usd_per_hour=3.0, evidence={"util_pct": 0.5})
    >>> a = finding_alert(f)
    >>> a.status, a.kind, a.cost_impact_usd, a.evidence["cost_impact_usd_per_hour"]
    ('firing', 'idle_gpu', 1.5, 3.0)
    >>> from dataclasses import replace
    >>> finding_alert(f.resolve(t)).status, finding_alert(replace(f, state="update"))
    ('resolved', None)
    """
    if finding.state == "update":
        return None
    alert = Alert.firing(
        finding.kind, finding.entity, severity=finding.severity, summary=finding.summary,
        started_at=finding.started_at, detected_at=finding.detected_at, labels=dict(finding.labels),
        cost_impact_usd=finding.cost_impact_usd,
        evidence={**finding.evidence, "cost_impact_usd_per_hour": finding.cost_impact_usd_per_hour},
    )
    if finding.state == "resolved":
        return alert.resolve(finding.resolved_at or finding.detected_at)
    return alert


def finding_key(finding: Finding) -> str:
    """Return the ``anomalies`` message key: the alert fingerprint of the finding's kind and entity."""
    return fingerprint(finding.kind, finding.entity)
