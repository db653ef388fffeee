"""``BudgetGuard``: an in-process budget check for gateways and services, fed by ``budget.burn``.

A background thread follows the compacted ``budget.burn`` topic from the beginning (no consumer group
offsets: every guard rebuilds the latest record per budget on start) and swaps in a new immutable
``BurnIndex`` after each batch. ``BudgetGuard.check(dims)`` is then a few dict lookups on that index:
no network hop, no lock. ``SessionTokenLimiter`` caps the tokens of one session per minute and in total,
in process. The decisions themselves (``guard_decision``, ``BurnIndex``, the limiter) use no Kafka, so
the unit tests need no broker.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from streams.settings import Settings

BUDGET_BURN = "budget.burn"
Verdict = Literal["allowed", "warn", "blocked"]
_RANK: dict[Verdict, int] = {"allowed": 0, "warn": 1, "blocked": 2}
log = logging.getLogger(__name__)
# errors of a cluster settling (a leader being elected, a broker not up yet): the guard retries them
TRANSIENT = frozenset({
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.REQUEST_TIMED_OUT,
    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
})


def transient(error: KafkaException) -> bool:
    """Whether a Kafka client error is one the cluster recovers from by itself.

    >>> transient(KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)))
    True
    >>> transient(KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)))
    False
    """
    cause = error.args[0] if error.args else None
    return isinstance(cause, KafkaError) and (cause.code() in TRANSIENT or cause.retriable())


@dataclass(frozen=True)
class Decision:
    """The answer to one check: ``verdict``, and the budgets (or session limits) behind it with reasons."""

    verdict: Verdict
    budget_ids: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        """True unless the verdict is ``blocked`` (``warn`` lets the call through)."""
        return self.verdict != "blocked"


ALLOWED = Decision("allowed")


@dataclass(frozen=True)
class GuardPolicy:
    """Which budget statuses warn or block, and what to answer while the guard knows nothing yet.

    ``advisory`` budgets never block (their ``block`` statuses warn instead). ``not_ready`` is the
    verdict before the guard has read the topic up to its end at start-up: ``allowed`` (fail open, the
    default: a budget guard must not take a gateway down with Kafka), ``warn`` or ``blocked``.
    """

    block: frozenset[str] = frozenset({"exceeded"})
    warn: frozenset[str] = frozenset({"warning", "critical"})
    advisory: frozenset[str] = frozenset()
    not_ready: Verdict = "allowed"


@dataclass(frozen=True)
class _Entry:
    budget_id: str
    status: str
    period_end: float  # epoch seconds: a record of an ended period no longer binds
    reason: str


def _entry(record: Mapping[str, Any]) -> _Entry:
    end = datetime.fromisoformat(str(record["period_end"])).timestamp()
    reason = (f"budget {record['budget_id']} {record['status']}: {float(record['spent_pct']):.1f}% of "
              f"${float(record['amount_usd']):,.2f} ({record['period']}) spent, forecast "
              f"{float(record['forecast_pct']):.0f}%")
    return _Entry(str(record["budget_id"]), str(record["status"]), end, reason)


@dataclass(frozen=True)
class BurnIndex:
    """The latest burn record per budget, indexed by scope for lookups that cost a few dict gets.

    ``by_keys`` maps each distinct tuple of scope keys (sorted) to a dict from the tuple of scope values
    to the budgets with that scope. A check looks up each key tuple once: the cost grows with the number
    of distinct scope shapes (a handful), not with the number of budgets.
    """

    records: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    by_keys: Mapping[tuple[str, ...], Mapping[tuple[str, ...], tuple[_Entry, ...]]] = field(
        default_factory=dict
    )

    @classmethod
    def build(cls, records: Mapping[str, Mapping[str, Any]]) -> BurnIndex:
        """Index ``records`` (budget id -> latest burn record)."""
        by_keys: dict[tuple[str, ...], dict[tuple[str, ...], list[_Entry]]] = {}
        for record in records.values():
            scope = record.get("scope") or {}
            keys = tuple(sorted(scope))
            values = tuple(str(scope[k]) for k in keys)
            by_keys.setdefault(keys, {}).setdefault(values, []).append(_entry(record))
        frozen = {k: {v: tuple(e) for v, e in vs.items()} for k, vs in by_keys.items()}
        return cls(dict(records), frozen)

    def matching(self, dims: Mapping[str, str | None]) -> list[_Entry]:
        """Return the entries of every budget whose scope ``dims`` falls in."""
        found: list[_Entry] = []
        for keys, by_values in self.by_keys.items():
            entries = by_values.get(tuple(dims.get(k) or "" for k in keys))
            if entries:
                found.extend(entries)
        return found


def _decide(entries: Iterable[_Entry], policy: GuardPolicy, now: float) -> Decision:
    verdict: Verdict = "allowed"
    ids: list[str] = []
    reasons: list[str] = []
    for entry in entries:
        if entry.period_end <= now:
            continue
        if entry.status in policy.block:
            level: Verdict = "warn" if entry.budget_id in policy.advisory else "blocked"
        elif entry.status in policy.warn:
            level = "warn"
        else:
            continue
        ids.append(entry.budget_id)
        reasons.append(entry.reason)
        if _RANK[level] > _RANK[verdict]:
            verdict = level
    if verdict == "allowed":
        return ALLOWED
    return Decision(verdict, tuple(ids), tuple(reasons))


def guard_decision(
    records: Mapping[str, Mapping[str, Any]] | BurnIndex,
    dims: Mapping[str, str | None],
    policy: GuardPolicy | None = None,
    *,
    now: datetime | None = None,
) -> Decision:
    """Decide a call with allocation dimensions ``dims`` from the latest burn records.

    Every budget whose scope ``dims`` falls in counts; the worst verdict wins, and ``budget_ids`` /
    ``reasons`` list every budget that warns or blocks. Records of a period that has ended are ignored
    (the new period starts with nothing spent).

    >>> rec = {"budget_id": "search", "scope": {"team": "search"}, "period": "month",
    ...        "period_end": "2026-04-01T00:00:00Z", "status": "exceeded", "spent_pct": 104.0,
    ...        "amount_usd": 5000.0, "forecast_pct": 130.0}
    >>> at = datetime(2026, 3, 20, tzinfo=UTC)
    >>> guard_decision({"search": rec}, {"team": "search", "app": "chat"}, now=at).verdict
    'blocked'
    >>> guard_decision({"search": rec}, {"team": "ads"}, now=at).verdict
    'allowed'
    >>> guard_decision({"search": rec}, {"team": "search"}, now=datetime(2026, 4, 1, tzinfo=UTC)).verdict
    'allowed'
    """
    index = records if isinstance(records, BurnIndex) else BurnIndex.build(records)
    moment = (now or datetime.now(UTC)).timestamp()
    return _decide(index.matching(dims), policy or GuardPolicy(), moment)


def scope_relevant(record_scope: Mapping[str, str], wanted: Iterable[Mapping[str, str]] | None) -> bool:
    """Say whether a budget with ``record_scope`` can bind a call within one of the ``wanted`` scopes.

    A budget is relevant when it does not contradict the wanted scope: ``{}`` (everything) and
    ``{"team": "search"}`` bind calls of ``{"app": "chat"}``; ``{"app": "mail"}`` cannot.

    >>> scope_relevant({"app": "mail"}, [{"app": "chat"}]), scope_relevant({"team": "x"}, [{"app": "chat"}])
    (False, True)
    """
    if wanted is None:
        return True
    return any(all(record_scope.get(k, v) == v for k, v in w.items()) for w in wanted)


class BudgetGuard:
    """Follow ``budget.burn`` in a background thread and answer ``check(dims)`` in microseconds.

    ``scopes`` (optional) keeps only the budgets that can bind calls within those scopes, e.g.
    ``[{"app": "chat"}]`` for the chat gateway. Use as a context manager, or ``start()`` / ``stop()``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        scopes: Iterable[Mapping[str, str]] | None = None,
        policy: GuardPolicy | None = None,
        poll_timeout_s: float = 0.2,
    ) -> None:
        self.settings = settings
        self.topic = settings.topic(BUDGET_BURN)
        self.policy = policy or GuardPolicy()
        self.scopes = [dict(s) for s in scopes] if scopes is not None else None
        self.poll_timeout_s = poll_timeout_s
        self.retry_s = 2.0  # between tries to read the topic's partitions and end offsets
        self.index = BurnIndex()
        self.records_read = 0
        self.records_rejected = 0
        self._records: dict[str, Mapping[str, Any]] = {}
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the hot path -------------------------------------------------------------------------------

    def check(self, dims: Mapping[str, str | None]) -> Decision:
        """Return the verdict for a call with allocation dimensions ``dims`` (pure in-memory lookup)."""
        if not self._ready.is_set() and self.policy.not_ready != "allowed":
            return Decision(self.policy.not_ready, (), ("budget guard has not caught up with budget.burn",))
        entries = self.index.matching(dims)
        return _decide(entries, self.policy, time.time()) if entries else ALLOWED

    def update(self, record: Mapping[str, Any] | None, key: str | None = None) -> None:
        """Apply one record (``None`` with ``key``: a tombstone, the budget is gone) and republish."""
        self._apply(record, key)
        self.index = BurnIndex.build(self._records)

    def records(self) -> dict[str, Mapping[str, Any]]:
        """Return the latest record per budget (a copy)."""
        return dict(self.index.records)

    @property
    def ready(self) -> bool:
        """True once the records present at start-up have been read."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until ``ready`` or ``timeout`` seconds; return ``ready``."""
        return self._ready.wait(timeout)

    # -- the follower -------------------------------------------------------------------------------

    def start(self) -> BudgetGuard:
        """Start following the topic in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="budget-guard", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the follower thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> BudgetGuard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _apply(self, record: Mapping[str, Any] | None, key: str | None) -> None:
        if record is None:
            if key is not None:
                self._records.pop(key, None)
            return
        if not scope_relevant(record.get("scope") or {}, self.scopes):
            return
        self._records[str(record["budget_id"])] = record

    def _consumer(self) -> Consumer:
        conf = {
            **self.settings.librdkafka_config(),
            # librdkafka wants a group id even for assign(); nothing is ever committed to it
            "group.id": f"burnwatch-guard-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
        }
        return Consumer(conf)

    def _assign(self, consumer: Consumer) -> dict[int, int]:
        """Assign every partition from the beginning; return the end offsets to read up to for ready.

        A topic not there yet, or a partition whose leader is still being elected (a topic just
        created, a broker restarting), is retried every ``retry_s`` until it answers or the guard stops.
        """
        while not self._stop.is_set():
            try:
                meta = consumer.list_topics(self.topic, timeout=5)
                topic = meta.topics.get(self.topic)
                if topic is not None and topic.error is None and topic.partitions:
                    partitions = sorted(topic.partitions)
                    ends = {}
                    for p in partitions:
                        low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=5)
                        if high > low:
                            ends[p] = high
                    consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
                    return ends
                log.warning("budget guard: topic %s not there yet; retrying", self.topic)
            except KafkaException as error:
                if not transient(error):
                    raise
                log.warning("budget guard: the end offsets of %s are not readable yet (%s); retrying",
                            self.topic, error)
            self._stop.wait(self.retry_s)
        return {}

    def _run(self) -> None:
        consumer = self._consumer()
        try:
            pending = self._assign(consumer)
            if not pending:
                self._ready.set()
            while not self._stop.is_set():
                messages = consumer.consume(num_messages=1000, timeout=self.poll_timeout_s)
                changed = False
                for message in messages:
                    error = message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            log.warning("budget guard: %s", error)
                        continue
                    changed = True
                    self._read(message.key(), message.value())
                    partition, offset = message.partition() or 0, message.offset() or 0
                    end = pending.get(partition)
                    if end is not None and offset + 1 >= end:
                        del pending[partition]
                if changed:
                    self.index = BurnIndex.build(self._records)
                elif pending:
                    # the last offsets may be gone (compaction, transaction markers): compare positions
                    for tp in consumer.position([TopicPartition(self.topic, p) for p in list(pending)]):
                        if tp.offset >= pending[tp.partition]:
                            del pending[tp.partition]
                if not pending and not self._ready.is_set():
                    self._ready.set()
        except KafkaException:
            log.exception("budget guard: the follower stopped")
        finally:
            consumer.close()

    def _read(self, key: bytes | None, value: bytes | None) -> None:
        self.records_read += 1
        try:
            record = None if value is None else json.loads(value)
            if record is not None and not (isinstance(record, dict) and "budget_id" in record):
                raise ValueError("not a burn record")
            if record is not None:
                _entry(record)  # reject now what check() could not read later
            self._apply(record, key.decode() if key else None)
        except (ValueError, KeyError, TypeError):
            self.records_rejected += 1
            log.warning("budget guard: skipped a malformed record (key %r)", key)


@dataclass
class _SessionUse:
    total: int = 0
    window_start: int = 0  # the current minute (epoch seconds // 60)
    this_minute: int = 0
    last_minute: int = 0


class SessionTokenLimiter:
    """Per-session token budgets, in process: tokens per minute and in total.

    The per-minute count is a sliding window estimated from the current and the previous minute (the
    previous one weighted by how much of it still lies within the last 60 s): O(1) memory and time per
    session. Sessions idle for ``idle_ttl_s`` or beyond ``max_sessions`` (least recent first) are
    forgotten, and a forgotten session starts again from zero.

    >>> limiter = SessionTokenLimiter(tokens_per_minute=1000, total_tokens=1500)
    >>> [limiter.check_and_add("s1", n, now=t).verdict for n, t in [(700, 0.0), (200, 10.0), (200, 20.0)]]
    ['allowed', 'warn', 'blocked']
    >>> [limiter.check_and_add("s1", n, now=t).verdict for n, t in [(500, 130.0), (200, 131.0)]]
    ['warn', 'blocked']
    """

    def __init__(
        self,
        *,
        tokens_per_minute: int | None = None,
        total_tokens: int | None = None,
        warn_pct: float = 80.0,
        max_sessions: int = 100_000,
        idle_ttl_s: float = 3600.0,
    ) -> None:
        self.tokens_per_minute = tokens_per_minute
        self.total_tokens = total_tokens
        self.warn_fraction = warn_pct / 100.0
        self.max_sessions = max_sessions
        self.idle_ttl_s = idle_ttl_s
        self._sessions: OrderedDict[str, tuple[_SessionUse, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _use(self, session: str, now: float) -> _SessionUse:
        entry = self._sessions.get(session)
        if entry is None or now - entry[1] > self.idle_ttl_s:
            use = _SessionUse(window_start=int(now // 60))
        else:
            use = entry[0]
            self._sessions.move_to_end(session)
        self._sessions[session] = (use, now)
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        minute = int(now // 60)
        if minute != use.window_start:
            use.last_minute = use.this_minute if minute == use.window_start + 1 else 0
            use.this_minute, use.window_start = 0, minute
        return use

    def _per_minute(self, use: _SessionUse, now: float) -> float:
        elapsed = (now / 60.0) - use.window_start
        return use.this_minute + use.last_minute * max(0.0, 1.0 - elapsed)

    def check_and_add(self, session: str, tokens: int, now: float | None = None) -> Decision:
        """Admit ``tokens`` for ``session`` at ``now`` (epoch seconds) unless a limit would be passed.

        A blocked call adds nothing. ``warn`` when the call brings a count to ``warn_pct`` of a limit.
        """
        moment = time.time() if now is None else now
        with self._lock:
            use = self._use(session, moment)
            rate_after = self._per_minute(use, moment) + tokens
            total_after = use.total + tokens
            reasons: list[str] = []
            verdict: Verdict = "allowed"
            for name, after, limit in (("tokens per minute", rate_after, self.tokens_per_minute),
                                       ("total tokens", total_after, self.total_tokens)):
                if limit is None:
                    continue
                if after > limit:
                    verdict = "blocked"
                    reasons.append(f"session {session}: {name} would reach {after:,.0f} > limit {limit:,}")
                elif after >= self.warn_fraction * limit and verdict != "blocked":
                    verdict = "warn"
                    reasons.append(f"session {session}: {name} at {after:,.0f} of limit {limit:,}")
            if verdict != "blocked":
                use.this_minute += tokens
                use.total += tokens
        if verdict == "allowed":
            return ALLOWED
        return Decision(verdict, (f"session:{session}",), tuple(reasons))

    def add(self, session: str, tokens: int, now: float | None = None) -> None:
        """Count tokens without a check (e.g. the actual output tokens once a response is done)."""
        moment = time.time() if now is None else now
        with self._lock:
            use = self._use(session, moment)
            use.this_minute += tokens
            use.total += tokens

    def usage(self, session: str) -> tuple[int, int]:
        """Return (tokens in the current minute, total tokens) of ``session`` (0, 0 if unknown)."""
        entry = self._sessions.get(session)
        return (entry[0].this_minute, entry[0].total) if entry else (0, 0)
