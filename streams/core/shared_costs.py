"""Shared costs: spend that belongs to no single team, split across teams by usage, evenly or by weights.

Shared spend is, for example, the idle capacity of a shared cluster or a central gateway's overhead;
it is split across a dimension (teams by default).

The rules live in the allocation mapping file under ``shared_costs`` (``docs/allocation.md``). The
split functions are pure and exact: the shares of an amount always add up to the amount (to within
one or two float roundings), because the recipient with the largest share absorbs the rounding.
``showback`` and ``chargeback`` differ only in the label on the result: the numbers are the same.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from streams.core.costs import CostRecord

if TYPE_CHECKING:
    from streams.core.allocation import Allocation

UNALLOCATED = "unallocated"
TAGS_PREFIX = "Tags."
RECORD_COLUMNS: frozenset[str] = frozenset(CostRecord.__annotations__)

SplitMethod = Literal["usage", "even", "weights"]
Mode = Literal["showback", "chargeback"]
Scalar = str | bool | int | float | None
Name = Annotated[str, Field(min_length=1, max_length=256)]


def split_proportional(amount: float, weights: Mapping[str, float]) -> dict[str, float]:
    """Split ``amount`` in proportion to ``weights``; the shares add up to ``amount``.

    Recipients with weight 0 get nothing; when every weight is 0 the split is even. With no
    recipient at all the whole amount goes to ``unallocated`` (shared spend is never dropped). The
    recipient with the largest weight (first by name on a tie) absorbs the rounding.

    >>> split_proportional(10.0, {"search": 3, "cx": 1})
    {'cx': 2.5, 'search': 7.5}
    >>> split_proportional(1.0, {"a": 0, "b": 0, "c": 0})
    {'a': 0.33333333333333337, 'b': 0.3333333333333333, 'c': 0.3333333333333333}
    >>> split_proportional(5.0, {})
    {'unallocated': 5.0}
    """
    for name, weight in weights.items():
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight of {name!r} must be a finite number >= 0 (got {weight!r})")
    names = sorted(weights)
    if not names:
        return {UNALLOCATED: amount}
    total = math.fsum(weights[n] for n in names)
    if total == 0:
        scaled = dict.fromkeys(names, 1.0 / len(names))
    else:
        scaled = {n: weights[n] / total for n in names if weights[n] > 0}
    absorber = max(scaled, key=scaled.__getitem__)  # the first of equals, in name order
    shares = {n: amount * s for n, s in scaled.items() if n != absorber}
    shares[absorber] = amount - math.fsum(shares.values())
    return {n: shares[n] for n in sorted(shares)}


def split_evenly(amount: float, among: Iterable[str]) -> dict[str, float]:
    """Split ``amount`` evenly across ``among`` (duplicates count once).

    >>> split_evenly(9.0, ["cx", "search", "data"])
    {'cx': 3.0, 'data': 3.0, 'search': 3.0}
    """
    return split_proportional(amount, dict.fromkeys(among, 1.0))


def split_by_usage(amount: float, usage: Mapping[str, float], among: Iterable[str] | None = None) -> dict[
        str, float]:
    """Split ``amount`` in proportion to each recipient's own spend (``usage``), optionally only ``among``.

    Recipients in ``among`` without usage get nothing, unless nobody has usage: then the split is even.
    Negative usage (credits) counts as none.

    >>> split_by_usage(100.0, {"search": 60.0, "cx": 20.0, "data": 20.0}, among=["search", "cx"])
    {'cx': 25.0, 'search': 75.0}
    """
    names = list(usage) if among is None else list(among)
    return split_proportional(amount, {n: max(0.0, usage.get(n, 0.0)) for n in names})


def split_by_weights(amount: float, weights: Mapping[str, float]) -> dict[str, float]:
    """Split ``amount`` by fixed weights (any positive scale: 2 and 1 mean two thirds and one third).

    >>> split_by_weights(30.0, {"research": 2, "search": 1})
    {'research': 20.0, 'search': 10.0}
    """
    return split_proportional(amount, weights)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_match(value: dict[str, Any]) -> dict[str, Any]:
    for key in value:
        if key.startswith(TAGS_PREFIX):
            if len(key) == len(TAGS_PREFIX):
                raise ValueError(f"{key}: needs a label key after 'Tags.' (got {key!r})")
        elif key not in RECORD_COLUMNS:
            raise ValueError(f"{key}: not a cost record column; use a column such as x_App, or Tags.<label> "
                             f"(got {key!r})")
    return value


@dataclass(frozen=True, slots=True)
class _Matcher:
    """A compiled ``match``: (label or None, column, allowed values) per key; equal when the specs are."""

    tests: tuple[tuple[str | None, str, tuple[Scalar, ...]], ...]

    def __call__(self, record: CostRecord) -> bool:
        tags = record["Tags"]
        for label, column, allowed in self.tests:
            value = tags.get(label) if label is not None else record.get(column)
            # bool is an int in Python: `false` must not match 0
            if not any(value == a and isinstance(value, bool) == isinstance(a, bool) for a in allowed):
                return False
        return True


def _compile(match: Mapping[str, Scalar | list[Scalar]]) -> _Matcher:
    tests: list[tuple[str | None, str, tuple[Scalar, ...]]] = []
    for key, wanted in match.items():
        allowed = tuple(wanted) if isinstance(wanted, list) else (wanted,)
        if key.startswith(TAGS_PREFIX):
            tests.append((key[len(TAGS_PREFIX):], "", allowed))
        else:
            tests.append((None, key, allowed))
    return _Matcher(tuple(tests))


class SharedCostRule(_Strict):
    """One kind of shared spend and how to split it.

    ``match`` selects the shared charges: every key must match (a cost record column such as
    ``x_App`` or ``x_GpuAllocated``, or ``Tags.<label>``; a list means any of its values).
    ``usage_match`` selects the charges that count as usage for ``split: usage`` (default: every
    charge that is not shared).

    >>> rule = SharedCostRule(name="gateway", match={"x_App": "gateway"}, split="even",
    ...                       among=["cx", "search"])
    >>> rule.matches({"x_App": "gateway", "Tags": {}}), rule.matches({"x_App": "bot", "Tags": {}})
    (True, False)
    >>> rule.split_amount(10.0, {})
    {'cx': 5.0, 'search': 5.0}
    """

    name: Name
    description: str | None = None
    match: dict[str, Scalar | list[Scalar]] = Field(min_length=1)
    split: SplitMethod = "usage"
    dimension: Name = "team"
    among: list[Name] | None = None
    weights: dict[Name, Annotated[float, Field(gt=0, allow_inf_nan=False)]] | None = None
    usage_match: dict[str, Scalar | list[Scalar]] | None = None
    _match_fn: _Matcher = PrivateAttr()
    _usage_fn: _Matcher | None = PrivateAttr(default=None)

    @field_validator("match", "usage_match")
    @classmethod
    def _known_keys(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else _check_match(value)

    @model_validator(mode="after")
    def _method_inputs(self) -> SharedCostRule:
        if self.split == "weights" and not self.weights:
            raise ValueError("weights: needed by split: weights (got none)")
        if self.split == "even" and not self.among:
            raise ValueError("among: needed by split: even (got none)")
        if self.split != "weights" and self.weights:
            raise ValueError(f"weights: only used with split: weights (got split {self.split!r})")
        return self

    def model_post_init(self, context: Any, /) -> None:
        """Compile the matchers once; a record is then checked with a few dict reads."""
        self._match_fn = _compile(self.match)
        self._usage_fn = _compile(self.usage_match) if self.usage_match else None

    def matches(self, record: CostRecord) -> bool:
        """Tell whether ``record`` is shared spend of this rule."""
        return self._match_fn(record)

    def split_amount(self, amount: float, usage: Mapping[str, float]) -> dict[str, float]:
        """Split ``amount`` by this rule's method; ``usage`` is each recipient's spend in the same period."""
        if self.split == "weights":
            weights = self.weights or {}
            chosen = weights if self.among is None else {n: weights.get(n, 0.0) for n in self.among}
            return split_by_weights(amount, chosen)
        if self.split == "even":
            return split_evenly(amount, self.among or ())
        return split_by_usage(amount, usage, self.among)


class SharedCostsConfig(_Strict):
    """The ``shared_costs`` section: the mode label and the rules, tried in order (first match wins)."""

    mode: Mode = "showback"
    rules: list[SharedCostRule] = Field(default_factory=list)

    def rule_for(self, record: CostRecord) -> SharedCostRule | None:
        """Return the first rule whose ``match`` selects ``record``, else ``None``."""
        return _first_match(_compiled(self.rules), record)


CompiledRule = tuple[SharedCostRule, _Matcher, _Matcher | None]
"""A rule with its match and its usage match (None: every charge that is not shared counts)."""


def _compiled(rules: list[SharedCostRule]) -> tuple[CompiledRule, ...]:
    """Return each rule with its matchers, read once.

    A pydantic model's private attribute is read through ``__getattr__``: too slow to do for every rule
    on every charge (it was most of ``SharedCostLedger.add``'s cost).
    """
    return tuple((rule, rule._match_fn, rule._usage_fn) for rule in rules)


def _first_match(rules: tuple[CompiledRule, ...], record: CostRecord) -> SharedCostRule | None:
    for rule, matches, _ in rules:
        if matches(record):
            return rule
    return None


@dataclass(frozen=True, slots=True)
class SharedSplit:
    """One rule's shared amount for a period and its shares per recipient; JSON via ``to_dict``."""

    rule: str
    mode: Mode
    dimension: str
    method: SplitMethod
    amount_usd: float
    shares_usd: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """Return a plain dict ready for JSON."""
        return {"rule": self.rule, "mode": self.mode, "dimension": self.dimension, "method": self.method,
                "amount_usd": self.amount_usd, "shares_usd": dict(self.shares_usd)}


@dataclass(slots=True)
class SharedCostLedger:
    """Pure accumulator for one period: pools shared spend per rule and usage per recipient.

    Feed every priced record with its allocation; ``settle`` returns each rule's split. A shared
    record keeps its direct allocation elsewhere (spend tables); the split is an extra view of it.

    >>> from streams.core.allocation import Allocation
    >>> config = SharedCostsConfig(rules=[{"name": "idle", "match": {"x_GpuAllocated": False}}])
    >>> ledger = SharedCostLedger(config)
    >>> def rec(cost, allocated):
    ...     return {"EffectiveCost": cost, "x_GpuAllocated": allocated, "Tags": {}}
    >>> for cost, team, allocated in [(6.0, "search", True), (2.0, "cx", True), (4.0, "cx", False)]:
    ...     _ = ledger.add(rec(cost, allocated), Allocation.unallocated()._replace(team=team))
    >>> [s.shares_usd for s in ledger.settle()]
    [{'cx': 1.0, 'search': 3.0}]
    """

    config: SharedCostsConfig
    pooled_usd: dict[str, float] = field(default_factory=dict)
    usage_usd: dict[str, dict[str, float]] = field(default_factory=dict)
    _rules: tuple[CompiledRule, ...] = field(init=False, repr=False)  # read once: ``add`` runs per charge
    _usage_rules: tuple[CompiledRule, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rules = _compiled(self.config.rules)
        self._usage_rules = tuple(entry for entry in self._rules if entry[0].split == "usage")

    def add(self, record: CostRecord, allocation: Allocation) -> SharedCostRule | None:
        """Count ``record`` as shared spend (returns its rule) or as usage of each rule it counts for."""
        if not self._rules:
            return None
        cost = record["EffectiveCost"]
        shared = _first_match(self._rules, record)
        if shared is not None:
            self.pooled_usd[shared.name] = self.pooled_usd.get(shared.name, 0.0) + cost
            return shared
        for rule, _, counts in self._usage_rules:  # its usage_match, or (None) every charge not shared
            if counts is None or counts(record):
                who = allocation.get(rule.dimension)
                table = self.usage_usd.setdefault(rule.name, {})
                table[who] = table.get(who, 0.0) + cost
        return None

    def settle(self) -> list[SharedSplit]:
        """Return one split per rule that pooled any spend, in rule order."""
        out = []
        for rule in self.config.rules:
            if rule.name not in self.pooled_usd:
                continue
            amount = self.pooled_usd[rule.name]
            shares = rule.split_amount(amount, self.usage_usd.get(rule.name, {}))
            out.append(SharedSplit(rule.name, self.config.mode, rule.dimension, rule.split, amount, shares))
        return out
