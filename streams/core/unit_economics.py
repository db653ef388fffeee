"""Unit economics for one period and scope: cost per 1K tokens, per training job, per active user.

``UnitEconomics`` is a pure accumulator fed with cost records; the caller keeps one per (period,
scope) and stores its ``to_state()``. State stays small: per-model, per-app and per-workload tables
hold at most ``max_keys`` entries each (``(other)`` included, pooling the rest), and active users are
counted exactly up to ``exact_users`` distinct ids, then estimated with a HyperLogLog of 2^12
one-byte registers (4 KiB, standard error about 1.6%). Definitions are in ``docs/allocation.md``.
"""

from __future__ import annotations

import base64
import hashlib
import math
from typing import Any

from streams.core.costs import CostRecord
from streams.core.pricing import LLM_METERS

TOKEN_METERS = frozenset(LLM_METERS)
GPU_METER = "gpu_hours"
OTHER = "(other)"
UNKNOWN = "unknown"
HLL_PRECISION = 12


def _hash64(item: str) -> int:
    # blake2b, not hash(): Python salts str hashes per process, and the state moves between workers
    return int.from_bytes(hashlib.blake2b(item.encode("utf-8"), digest_size=8).digest(), "big")


class DistinctCounter:
    """Counts distinct strings: exactly up to ``exact_limit``, then with a HyperLogLog (bounded state).

    >>> counter = DistinctCounter(exact_limit=100)
    >>> for i in range(50):
    ...     counter.add(f"user-{i % 10}")
    >>> counter.count(), counter.exact
    (10, True)
    >>> for i in range(5000):
    ...     counter.add(f"user-{i}")
    >>> counter.exact, abs(counter.count() - 5000) < 250
    (False, True)
    """

    __slots__ = ("exact_limit", "_items", "_registers")

    def __init__(self, exact_limit: int = 1000) -> None:
        self.exact_limit = exact_limit
        self._items: set[str] | None = set()
        self._registers: bytearray | None = None

    @property
    def exact(self) -> bool:
        """True while the count is exact (at most ``exact_limit`` distinct items seen)."""
        return self._items is not None

    def add(self, item: str) -> None:
        """Count one item."""
        items = self._items
        if items is not None:
            items.add(item)
            if len(items) > self.exact_limit:
                self._to_sketch()
            return
        self._add_hash(_hash64(item))

    def _to_sketch(self) -> None:
        items, self._items = self._items or set(), None
        self._registers = bytearray(1 << HLL_PRECISION)
        for item in items:
            self._add_hash(_hash64(item))

    def _add_hash(self, h: int) -> None:
        registers = self._registers
        assert registers is not None  # only called once the sketch exists
        rest_bits = 64 - HLL_PRECISION
        index = h >> rest_bits
        rest = h & ((1 << rest_bits) - 1)
        rank = rest_bits - rest.bit_length() + 1
        if rank > registers[index]:
            registers[index] = rank

    def count(self) -> int:
        """Return the number of distinct items (an estimate once past ``exact_limit``)."""
        if self._items is not None:
            return len(self._items)
        registers = self._registers or bytearray(1 << HLL_PRECISION)
        m = len(registers)
        estimate = 0.7213 / (1 + 1.079 / m) * m * m / math.fsum(2.0 ** -r for r in registers)
        zeros = registers.count(0)
        if estimate <= 2.5 * m and zeros:
            estimate = m * math.log(m / zeros)  # linear counting is more accurate at small counts
        return max(round(estimate), self.exact_limit + 1)

    def merge(self, other: DistinctCounter) -> None:
        """Add every item ``other`` counted (sketches merge register by register)."""
        if other._items is not None:
            for item in other._items:
                self.add(item)
            return
        if self._items is not None:
            self._to_sketch()
        mine, theirs = self._registers, other._registers
        assert mine is not None and theirs is not None  # both are sketches here
        for i, rank in enumerate(theirs):
            if rank > mine[i]:
                mine[i] = rank

    def to_state(self) -> dict[str, Any]:
        """Return the state as a JSON-ready dict (sorted ids, or the registers in base64)."""
        if self._items is not None:
            return {"exact_limit": self.exact_limit, "items": sorted(self._items)}
        registers = bytes(self._registers or b"")
        return {"exact_limit": self.exact_limit, "hll": base64.b64encode(registers).decode("ascii")}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> DistinctCounter:
        """Rebuild a counter from ``to_state()``."""
        counter = cls(int(state["exact_limit"]))
        if "hll" in state:
            counter._items = None
            counter._registers = bytearray(base64.b64decode(state["hll"]))
        else:
            counter._items = set(state["items"])
        return counter


def _per_1k(cost: float, tokens: float) -> float | None:
    return cost / tokens * 1000.0 if tokens else None


def _ratio(cost: float, count: float) -> float | None:
    return cost / count if count else None


class UnitEconomics:
    """Accumulates one (period, scope)'s unit costs from cost records; ``snapshot()`` is JSON-ready.

    >>> ue = UnitEconomics()
    >>> def llm(meter, tokens, cost, user):
    ...     return {"EffectiveCost": cost, "SkuMeter": meter, "ConsumedQuantity": tokens,
    ...             "x_Unpriced": False, "x_Model": "gpt-4o", "x_App": "bot", "x_User": user,
    ...             "x_Workload": None}
    >>> ue.add(llm("input_tokens", 1000, 0.0025, "u1"))
    >>> ue.add(llm("output_tokens", 1000, 0.01, "u2"))
    >>> ue.add({"EffectiveCost": 4.0, "SkuMeter": "gpu_hours", "ConsumedQuantity": 1.0,
    ...         "x_Unpriced": False, "x_Model": "H100", "x_App": None, "x_User": None, "x_Workload": "job-1"})
    >>> snap = ue.snapshot()
    >>> snap["by_model"]["gpt-4o"]["usd_per_1k_tokens"], snap["jobs"]["usd_per_job"], snap["users"]["active"]
    (0.00625, 4.0, 2)
    """

    def __init__(self, max_keys: int = 256, exact_users: int = 1000) -> None:
        self.max_keys = max(2, max_keys)
        self.cost_usd = 0.0
        self.records = 0
        self.token_cost_usd = 0.0
        self.tokens = 0.0
        self.unpriced_tokens = 0.0
        self.by_model: dict[str, list[float]] = {}  # model -> [cost, tokens]
        self.by_app: dict[str, list[float]] = {}
        self.gpu_cost_usd = 0.0
        self.gpu_hours = 0.0
        self.by_workload: dict[str, list[float]] = {}  # workload -> [cost, GPU-hours]
        self.user_cost_usd = 0.0
        self.users = DistinctCounter(exact_users)

    def _bump(self, table: dict[str, list[float]], key: str, cost: float, quantity: float) -> None:
        entry = table.get(key)
        if entry is None:
            if len(table) - (OTHER in table) >= self.max_keys - 1:  # one slot stays for (other)
                key = OTHER
                entry = table.get(key)
            if entry is None:
                table[key] = [cost, quantity]
                return
        entry[0] += cost
        entry[1] += quantity

    def add(self, record: CostRecord) -> None:
        """Count one charge."""
        cost = record["EffectiveCost"]
        self.cost_usd += cost
        self.records += 1
        meter = record["SkuMeter"]
        quantity = record["ConsumedQuantity"]
        if meter in TOKEN_METERS:
            if record["x_Unpriced"]:
                # a zero-cost charge would pull the price per token down; report it apart
                self.unpriced_tokens += quantity
            else:
                self.token_cost_usd += cost
                self.tokens += quantity
                self._bump(self.by_model, record["x_Model"] or UNKNOWN, cost, quantity)
                self._bump(self.by_app, record["x_App"] or UNKNOWN, cost, quantity)
        elif meter == GPU_METER:
            self.gpu_cost_usd += cost
            self.gpu_hours += quantity
            workload = record["x_Workload"]
            if workload:
                self._bump(self.by_workload, workload, cost, quantity)
        user = record["x_User"]
        if user:
            self.user_cost_usd += cost
            self.users.add(user)

    def merge(self, other: UnitEconomics) -> None:
        """Add another accumulator's counts (for example the same scope from another partition)."""
        self.cost_usd += other.cost_usd
        self.records += other.records
        self.token_cost_usd += other.token_cost_usd
        self.tokens += other.tokens
        self.unpriced_tokens += other.unpriced_tokens
        self.gpu_cost_usd += other.gpu_cost_usd
        self.gpu_hours += other.gpu_hours
        self.user_cost_usd += other.user_cost_usd
        for mine, theirs in ((self.by_model, other.by_model), (self.by_app, other.by_app),
                             (self.by_workload, other.by_workload)):
            for key, (cost, quantity) in theirs.items():
                self._bump(mine, key, cost, quantity)
        self.users.merge(other.users)

    def snapshot(self) -> dict[str, Any]:
        """Return the unit costs as plain dicts (``None`` where a denominator is 0)."""
        jobs = {k: v for k, v in self.by_workload.items() if k != OTHER}
        job_cost = math.fsum(v[0] for v in jobs.values())
        active = self.users.count()

        def tokens_table(table: dict[str, list[float]]) -> dict[str, dict[str, float | None]]:
            return {k: {"cost_usd": c, "tokens": t, "usd_per_1k_tokens": _per_1k(c, t)}
                    for k, (c, t) in sorted(table.items())}

        return {
            "cost_usd": self.cost_usd,
            "records": self.records,
            "tokens": {"cost_usd": self.token_cost_usd, "tokens": self.tokens,
                       "usd_per_1k_tokens": _per_1k(self.token_cost_usd, self.tokens),
                       "unpriced_tokens": self.unpriced_tokens},
            "by_model": tokens_table(self.by_model),
            "by_app": tokens_table(self.by_app),
            "jobs": {"count": len(jobs), "cost_usd": job_cost, "usd_per_job": _ratio(job_cost, len(jobs)),
                     "gpu_cost_usd": self.gpu_cost_usd, "gpu_hours": self.gpu_hours,
                     "by_workload": {k: {"cost_usd": c, "gpu_hours": h}
                                     for k, (c, h) in sorted(self.by_workload.items())}},
            "users": {"active": active, "exact": self.users.exact, "cost_usd": self.user_cost_usd,
                      "usd_per_active_user": _ratio(self.user_cost_usd, active)},
        }

    def to_state(self) -> dict[str, Any]:
        """Return the whole state as a JSON-ready dict, for a table or a file."""
        return {
            "max_keys": self.max_keys, "cost_usd": self.cost_usd, "records": self.records,
            "token_cost_usd": self.token_cost_usd, "tokens": self.tokens,
            "unpriced_tokens": self.unpriced_tokens, "gpu_cost_usd": self.gpu_cost_usd,
            "gpu_hours": self.gpu_hours,
            **{name: {k: list(v) for k, v in getattr(self, name).items()}
               for name in ("by_model", "by_app", "by_workload")},
            "user_cost_usd": self.user_cost_usd, "users": self.users.to_state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> UnitEconomics:
        """Rebuild an accumulator from ``to_state()``."""
        ue = cls(max_keys=int(state["max_keys"]))
        for name in ("cost_usd", "token_cost_usd", "tokens", "unpriced_tokens", "gpu_cost_usd", "gpu_hours",
                     "user_cost_usd"):
            setattr(ue, name, float(state[name]))
        ue.records = int(state["records"])
        for name in ("by_model", "by_app", "by_workload"):
            setattr(ue, name, {k: [float(v[0]), float(v[1])] for k, v in state[name].items()})
        ue.users = DistinctCounter.from_state(state["users"])
        return ue
