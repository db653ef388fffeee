"""Run every detector in-process over priced cost records: the reference wiring of the per-entity steps.

The stream shell (``streams/core/detector_feed.py``, ``streams/detector_agents.py``) runs one per
partition, fed with buckets through ``add_gpu``/``add_usage`` and its own series bucketer, and saves
the entries named in ``changed`` and ``peers_changed`` to a table; ``burnwatch eval`` and the tests
use ``feed``. Records must arrive in event-time order (per entity is enough); ``advance(watermark)``
closes buckets, runs the steps, and ticks entities with open findings (and every GPU, for telemetry
gaps).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from detectors.agent_loop import MAX_TRACKED, AgentLoopDetector
from detectors.buckets import (
    GPU_METER,
    LLM_SOURCE,
    METER,
    SOURCE,
    GpuBucket,
    LlmBucket,
    LlmBucketer,
    LlmUsage,
    SeriesBucketer,
    gpu_bucket,
    llm_usages,
)
from detectors.config import DetectorConfig
from detectors.context_bloat import ContextBloatDetector
from detectors.deferred import PENDING, bucket_of, wait_below
from detectors.findings import Finding
from detectors.idle_gpu import IdleGpuDetector
from detectors.model_switch import ModelSwitchDetector
from detectors.pending_log import PendingLog, waited
from detectors.spikes import SpikeDetector
from detectors.state import State, decode, encode
from detectors.token_runaway import HOUR_S, TokenRunawayDetector

TICK_S = 5.0
EXPIRE_EVERY_S = 600.0
SESSION_STEPS = ("runaway", "agent_loop", "context_bloat")  # what _session steps, in order
SCOPE_STEPS = {"session": SESSION_STEPS, "user": ("runaway",)}  # the steps of a waiting entity's scope


def entity_id(entity: Mapping[str, str]) -> str:
    """Return the table key of an entity: sorted ``key=value`` pairs.

    >>> entity_id({"session": "s1", "app": "bot"})
    'app=bot,session=s1'
    """
    return ",".join(f"{k}={entity[k]}" for k in sorted(entity))


class DetectorRunner:
    """All detectors over one stream of cost records, state kept in dicts of JSON-safe values.

    Examples
    --------
    >>> run = DetectorRunner()
    >>> rec = {"SkuMeter": "gpu_hours", "ResourceId": "GPU-1", "x_GpuUtilPct": 0.5, "x_GpuAllocated": True,
    ...        "EffectiveCost": 0.01, "x_Team": "ml", "x_Project": None, "x_Model": "A100",
    ...        "x_SourceType": "gpu.sample"}
    >>> for i in range(61):
    ...     t = f"2026-01-01T00:{i // 4:02d}:{i % 4 * 15:02d}Z"
    ...     t2 = f"2026-01-01T00:{(i + 1) // 4:02d}:{(i + 1) % 4 * 15:02d}Z"
    ...     _ = run.feed([{**rec, "ChargePeriodStart": t, "ChargePeriodEnd": t2}])
    >>> [(f.kind, f.state, f.detected_at.minute) for f in run.findings]
    [('idle_gpu', 'open', 15)]
    """

    def __init__(
        self,
        config: DetectorConfig | None = None,
        *,
        roundtrip_state: bool = False,
        track_entities: bool = True,
        wait: bool = True,
    ) -> None:
        self.config = config = config or DetectorConfig()
        self.idle = IdleGpuDetector(config.idle_gpu)
        self.runaway = TokenRunawayDetector(config.runaway)
        self.loop = AgentLoopDetector(config.agent_loop)
        self.bloat = ContextBloatDetector(config.context_bloat)
        self.switch = ModelSwitchDetector(config.model_switch)
        self.spikes = SpikeDetector(config.spikes)
        self._after_runaway = (("agent_loop", self.loop), ("context_bloat", self.bloat))  # session steps
        # each detector narrows the bucket type of Detector.update, so the table of them is loosely typed
        self.detectors: dict[str, Any] = {
            "idle_gpu": self.idle,
            "runaway": self.runaway,
            "agent_loop": self.loop,
            "context_bloat": self.bloat,
            "model_switch": self.switch,
            "spikes": self.spikes,
        }
        self.states: dict[str, dict[str, State]] = {name: {} for name in self.detectors}
        self.peers: dict[str, State] = {}
        # sessions and users too young to be judged: their buckets, not yet stepped (``deferred``)
        self.pending: dict[str, State] = {}
        self.pending_log: PendingLog | None = None  # their changes, logged if saved (``log_pending``)
        self._wait_below = wait_below(config) if wait else {"session": 0, "user": 0}
        self.llm: Any = LlmBucketer(config.buckets)  # or the kernel's twin (``wait_in_bucketer``)
        self.bucketer_waits = False  # young entities' buckets wait in ``llm``, not in ``pending``
        self.series: Any = SeriesBucketer(config.buckets.series_s)  # anything with add/flush
        self.findings: list[Finding] = []
        self.roundtrip_state = roundtrip_state
        self.entities: dict[str, set[str]] = {}
        self._session_entities: list[set[str]] | None = None  # the sets of SESSION_STEPS, once made
        self.track_entities = track_entities  # eval counts entity-days; the stream must not grow a set
        self.changed: set[tuple[str, str]] = set()  # (detector, entity id) saved or dropped since cleared
        self.peers_changed: set[str] = set()
        self.watermark = float("-inf")
        self.flushed_to = float("-inf")  # buckets ending at or before this were closed and stepped
        self._next_tick = float("-inf")
        self._next_expire = float("-inf")
        self._open: set[tuple[str, str]] = set()

    # --- input ---

    def feed(
        self,
        records: Iterable[Mapping[str, Any]],
        *,
        node: str | None = None,
        prompt_hashes: Mapping[str, str] | None = None,
    ) -> list[Finding]:
        """Take the cost records of one or more events; return the findings this produced."""
        before = len(self.findings)
        records = list(records)
        latest = self.watermark
        series, llm = self.series, False
        for record in records:
            if record.get(METER) == GPU_METER:
                bucket = gpu_bucket(record, node)
                if bucket is not None:
                    self._step("idle_gpu", bucket.entity, bucket)
                    latest = max(latest, bucket.start)
            if not llm:  # GPU and storage events carry no LLM records: no usage pass for them
                llm = record.get(SOURCE) == LLM_SOURCE
            series.add(record)
        for usage in llm_usages(records, prompt_hashes) if llm else ():
            self.llm.add(usage)
            latest = max(latest, usage.time)
        if latest > self.watermark:
            self.advance(latest)
        return self.findings[before:]

    def add_gpu(self, bucket: GpuBucket) -> None:
        """Step the GPU's detector with one sample interval (GPU buckets need no bucketing)."""
        self._step("idle_gpu", bucket.entity, bucket)

    def add_usage(self, usage: LlmUsage) -> None:
        """Fold one LLM request into its session, user and app buckets (stepped on ``advance``)."""
        self.llm.add(usage)

    def advance(self, watermark: float, *, now: bool = False) -> list[Finding]:
        """Move event time to ``watermark``: close buckets, run steps, tick, expire.

        Within ``TICK_S`` of the last time that did, only event time moves, unless ``now``.
        """
        before = len(self.findings)
        self.watermark = max(self.watermark, watermark)
        if watermark < self._next_tick and not now:
            return []
        self._next_tick = watermark + TICK_S
        self.flushed_to = watermark
        self._close(watermark)
        for key in list(self.states["idle_gpu"]):
            self._tick("idle_gpu", key, watermark)
        for name, key in list(self._open):
            self._tick(name, key, watermark)
        if watermark >= self._next_expire:
            self._next_expire = watermark + EXPIRE_EVERY_S
            for name, states in self.states.items():
                detector = self.detectors[name]
                for key in [
                    k for k, s in states.items() if "open" not in s and detector.expired(s, watermark)
                ]:
                    del states[key]
                    self.changed.add((name, key))
            for key in sorted(k for k, p in self.pending.items() if self.runaway.expired(p, watermark)):
                del self.pending[key]
                if self.pending_log is not None:
                    self.pending_log.gone(key)
            if self.bucketer_waits:
                self.llm.expire_pending(watermark)
        return self.findings[before:]

    def finish(self) -> list[Finding]:
        """Close every open bucket at the end of input (no ticks: event time has not moved on)."""
        before = len(self.findings)
        self._close(float("inf"))
        return self.findings[before:]

    def close_late(self) -> int:
        """Close and step the buckets that end by ``flushed_to``; return how many there were.

        Every bucket ending by then was closed when event time got there, so these hold only late
        inputs, added since (older than the buckets already closed). Closed now, they need no saved
        content of their own: a restart rebuilds only the buckets that end after ``flushed_to``.
        """
        return self._close(self.flushed_to)

    def wait_in_bucketer(self) -> None:
        """Let the LLM bucketer (the compiled kernel's) keep young sessions' and users' buckets.

        It decides as ``_wait`` does and keeps their documents itself (``pending`` stays empty); a waiting
        session's bucket teaches its app's peers there, in place, and a user's bucket that its runaway
        step would only learn (the step's quiet path) is stepped there too, as are the buckets of an entity
        grown old enough that its steps would only learn, and an app bucket that its runaway and model
        steps would both only learn. Its ``close`` hands the runner, in closing order, the buckets to step
        and the entities that grew old enough whose buckets it did not step (``_closed``).
        ``PartitionDetectors`` saves its documents.
        """
        if self.track_entities or self.roundtrip_state:  # the eval's modes: they need ``pending`` in Python
            raise ValueError("only a runner that neither tracks entities nor round-trips states can wait in "
                             "its bucketer")
        below, states = self._wait_below, self.states
        self.llm.wait(below["session"], below["user"], self.runaway.config, states["runaway"],
                      states["agent_loop"], states["context_bloat"], self.peers, self.peers_changed,
                      self.changed)
        # a released session's buckets that only learn are stepped there (its three steps' quiet paths),
        # as is an app bucket that only learns (both its steps')
        self.llm.release_sessions_here(self.runaway.config, self.detectors["agent_loop"].config,
                                       self.detectors["context_bloat"].config, MAX_TRACKED)
        self.llm.step_apps(self.runaway.config, self.switch.config, states["runaway"], states["model_switch"],
                           self.changed)
        self._wait_below = {"session": 0, "user": 0}
        self.bucketer_waits = True

    def _close(self, upto: float) -> int:
        """Close the LLM and series buckets that end by ``upto``, and step them; return how many."""
        closed = 0
        if self.bucketer_waits:
            closed = self.llm.close(upto, self._closed)
        else:
            for llm_bucket in self.llm.flush(upto):
                self._llm(llm_bucket)
                closed += 1
        for series_bucket in self.series.flush(upto):
            self._step("spikes", series_bucket.entity, series_bucket)
            closed += 1
        return closed

    def step_pending(self) -> None:
        """Step every pending entity's buckets now: its states as if each bucket was stepped as it closed."""
        if self.bucketer_waits:
            for item in self.llm.release_pending():
                self._closed(item)
        for key, pending in sorted(self.pending.items()):
            del self.pending[key]
            if self.pending_log is not None:
                self.pending_log.gone(key)
            self._step_pending(key, "session" if "session" in pending["e"] else "user", pending)

    def log_pending(self, carry_after_s: float) -> None:
        """Log the young entities' changes (``detectors.pending_log``), for a caller that saves them.

        Each step's entry is ``pending_log_entry``'s.
        """
        if self.bucketer_waits:
            self.llm.log_pending(carry_after_s)
        else:
            self.pending_log = PendingLog(carry_after_s)

    def pending_log_entry(self) -> tuple[tuple[int, Any] | None, list[int], list[str]]:
        """End a step of the young entities' log: its entry ``(seq, records)`` and what to delete.

        What to delete: the log's entries no entity needs any more, and the documents saved before the log
        of entities gone or written again whole.

        The entry is None when there is none to write; its records are JSON bytes when the bucketer keeps
        them.
        """
        if self.bucketer_waits:
            taken: tuple[tuple[int, Any] | None, list[int], list[str]]
            taken = self.llm.take_pending_log(self.watermark)
            return taken
        if self.pending_log is None:
            return None, [], []
        return self.pending_log.take(self.pending, self.watermark)

    def restore_pending_log(self, written: Iterable[tuple[int, float]]) -> None:
        """Take back the young entities' log entries the table holds (before ``restore_waiting``).

        ``written``: their ``(seq, event time)``.
        """
        if self.bucketer_waits:
            self.llm.restore_pending_log(sorted(written))
        elif self.pending_log is not None:
            self.pending_log.restore_entries(written)

    def restore_waiting(self, key: str, doc: State, seq: int | None, old: bool = False) -> None:
        """Put back a young entity's document, pinned at log entry ``seq`` (None: at none yet).

        ``old``: a document saved before the log is its base (``pending_log``). Raises ``ValueError`` for a
        document the bucketer cannot read.
        """
        if self.bucketer_waits:
            self.llm.restore_pending(key, doc, seq, old)
            return
        self.pending[key] = doc
        if self.pending_log is not None:
            self.pending_log.restore(key, seq, old)

    def restore(self, name: str, key: str, state: State) -> None:
        """Put back an entity's saved state (after a restart); not marked as changed."""
        if name == PENDING:
            self.restore_waiting(key, state, None)
            return
        self.states[name][key] = state
        if "open" in state:
            self._open.add((name, key))

    # --- steps ---

    def _llm(self, bucket: LlmBucket) -> None:
        # the keys are entity_id(bucket.entity) written out ("app" sorts before "session" and "user"):
        # building the dict and sorting it was a large part of the runner's cost per request
        app, scope = bucket.app, bucket.scope
        app_key = "app=" + app
        if scope == "session":
            key = f"{app_key},session={bucket.key}"
            if not self._wait(key, bucket):
                self._session(key, app_key, bucket)
        elif scope == "user":
            key = f"{app_key},user={bucket.key}"
            if not self._wait(key, bucket):
                runaway = self.states["runaway"]
                self._step_key("runaway", key, bucket, app=runaway.get(app_key))
        else:
            self._step_key("runaway", app_key, bucket)
            if scope == "app":
                self._step_key("model_switch", app_key, bucket)

    def _wait(self, key: str, bucket: LlmBucket) -> bool:
        """Keep a young session's or user's bucket pending (True), or step its pending buckets (False).

        An entity waits while it has no state and its requests, this bucket's included, stay under
        ``wait_below``; then every step would take its quiet path (``detectors.deferred``). Once it
        reaches that count its pending buckets are stepped, in order, and False says to step this one.
        A waiting session's bucket still teaches its app's peers, as a stepped one would.
        """
        below = self._wait_below[bucket.scope]
        pending = self.pending.get(key)
        if pending is None:
            states = self.states
            if not below or bucket.requests >= below or key in states["runaway"]:
                return False
            if bucket.scope == "session" and (key in states["agent_loop"] or key in states["context_bloat"]):
                return False  # restored from states saved some other way: stepped as they are
        else:
            if self.roundtrip_state:
                pending = decode(encode(pending))
            if pending["n"] + bucket.requests >= below:
                del self.pending[key]
                if self.pending_log is not None:
                    self.pending_log.gone(key)
                self._step_pending(key, bucket.scope, pending)
                return False
        window_s = self.runaway.config.window_s
        waiting, usd = waited(pending, bucket, window_s)
        self.pending[key] = waiting
        if self.track_entities:
            for name in SCOPE_STEPS[bucket.scope]:
                self._seen(name).add(key)
        if bucket.scope == "session":  # its app's peers learn its rate and latest bucket, as when stepped
            app, peers = bucket.app, self.peers.get(bucket.app)
            seen = {"rate": usd / window_s * HOUR_S, "w": waiting["w"][-1:]}
            self.peers[app] = self.runaway.learn_peer(peers or {}, seen, owned=not self.roundtrip_state)
            self.peers_changed.add(app)
        if self.pending_log is not None:
            if pending is None:
                self.pending_log.opened(key, waiting)
            else:
                self.pending_log.added(key, waiting["b"][-1])
        return True

    def _closed(self, item: LlmBucket | tuple[str, str, str, State]) -> None:
        """Step what the waiting bucketer's ``close`` hands on (``wait_in_bucketer``).

        A bucket, or an entity grown old enough, ``("r", scope, entity id, pending document)``, whose
        pending buckets are stepped (its bucket comes next).
        """
        if isinstance(item, tuple):
            _, scope, key, pending = item
            self._step_pending(key, scope, pending)
        else:
            self._llm(item)

    def _step_pending(self, key: str, scope: str, pending: State) -> None:
        """Step a pending entity's buckets in order, as they would have been stepped when they closed.

        Every one takes its steps' quiet path, which reads neither the peers nor the app's state: those
        are learned (peers) or read (app) as the buckets closed, and need not be passed again.
        """
        entity = pending["e"]
        for item in pending["b"]:
            bucket = bucket_of(scope, entity, item)
            for name in SCOPE_STEPS[scope]:
                self._step_key(name, key, bucket)

    def _session(self, key: str, app_key: str, bucket: LlmBucket) -> None:
        """Run the four session steps over one closed session bucket in one pass.

        The same steps, in the same order, as ``_step_key`` for runaway, agent loop and context bloat
        with the app's peers learned in between, without the per-step lookups and bookkeeping: nearly
        every LLM request closes a session bucket of its own.
        """
        app, states, roundtrip = bucket.app, self.states, self.roundtrip_state
        if self.track_entities:
            if self._session_entities is None:
                self._session_entities = [self._seen(name) for name in SESSION_STEPS]
            for seen in self._session_entities:
                seen.add(key)
        runaway = states["runaway"]
        peers = self.peers.get(app)
        # every detector's new_state() is {}; a roundtrip hands each step a decoded copy, like a restart
        state = runaway.get(key)
        state = {} if state is None else decode(encode(state)) if roundtrip else state
        state, found = self.runaway.update(state, bucket, peers=peers, app=runaway.get(app_key))
        runaway[key] = state
        self._note("runaway", key, state, found)
        self.peers_changed.add(app)
        # the runner holds the only reference to its peer states (a roundtrip run hands out copies)
        self.peers[app] = self.runaway.learn_peer(peers or {}, state, owned=not roundtrip)
        for name, detector in self._after_runaway:
            table = states[name]
            state = table.get(key)
            state = {} if state is None else decode(encode(state)) if roundtrip else state
            state, found = detector.update(state, bucket)
            table[key] = state
            self._note(name, key, state, found)

    def _note(self, name: str, key: str, state: State, found: list[Finding]) -> None:
        """Mark a stepped entity as changed, keep its findings, and track whether it has one open."""
        entry = (name, key)
        self.changed.add(entry)
        if found:
            self.findings.extend(found)
        if "open" in state:
            self._open.add(entry)
        elif self._open:
            self._open.discard(entry)

    def _load(self, name: str, key: str) -> State:
        state = self.states[name].get(key)
        if state is None:
            fresh: State = self.detectors[name].new_state()
            return fresh
        return decode(encode(state)) if self.roundtrip_state else state

    def _step(self, name: str, entity: Mapping[str, str], bucket: Any, **extra: Any) -> str:
        key = entity_id(entity)
        self._step_key(name, key, bucket, **extra)
        return key

    def _seen(self, name: str) -> set[str]:
        """Return the set of entity ids ``name`` has stepped (made on first use)."""
        seen = self.entities.get(name)
        if seen is None:
            seen = self.entities[name] = set()
        return seen

    def _step_key(self, name: str, key: str, bucket: Any, **extra: Any) -> None:
        if self.track_entities:
            self._seen(name).add(key)
        state, found = self.detectors[name].update(self._load(name, key), bucket, **extra)
        self.states[name][key] = state
        self._note(name, key, state, found)

    def _tick(self, name: str, key: str, now: float) -> None:
        state, found = self.detectors[name].tick(self._load(name, key), now)
        if found or state is not self.states[name].get(key):
            self.states[name][key] = state
            self._note(name, key, state, found)
