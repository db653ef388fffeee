"""Who owns a dollar: cost records to allocations through a mapping file, and the scopes spend is kept by.

An allocation names the organization > business unit > product line > feature of a charge, plus its
team, project, env and cost center.

A dimension's value comes, in this order of precedence, from an explicit label (through its
aliases), a lookup (app → team, team → business unit, ...), a default for the record's source type,
else ``unallocated``. Required dimensions (default: team) that end up ``unallocated`` are listed in
``Allocation.missing_required``; the spend is kept, never dropped. The mapping file format, the
scope key syntax and the rules are in ``docs/allocation.md``. The default mapping ships as
``streams/data/allocation.yaml``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, NamedTuple, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streams.core.config_errors import describe_validation_error
from streams.core.costs import CostRecord
from streams.core.events import GPU_SAMPLE, LLM_REQUEST, STORAGE_USAGE
from streams.core.shared_costs import RECORD_COLUMNS, UNALLOCATED, SharedCostsConfig

STANDARD_DIMENSIONS = (
    "organization", "business_unit", "product_line", "feature", "team", "project", "env", "cost_center",
)
DEFAULT_HIERARCHY = ("organization", "business_unit", "product_line", "feature")
SOURCE_TYPES = (GPU_SAMPLE, LLM_REQUEST, STORAGE_USAGE)
ANY_SOURCE = "*"
RECORD_PREFIX = "record."
TOTAL_SCOPE = ("total", "all")
PROJECT_ENV = "project/env"
# Scopes that come from the record's own columns, not from the allocation.
RECORD_SCOPES = (("model", "x_Model"), ("app", "x_App"), ("user", "x_User"), ("session", "x_Session"))
# What ``Allocator.dims`` adds to the allocation's dimensions (the names budgets match on).
RECORD_DIMS = (*RECORD_SCOPES, ("source", "x_SourceType"), ("provider", "ProviderName"),
               ("region", "RegionId"), ("cluster", "x_Cluster"), ("workload", "x_Workload"))

_DIMENSION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
Name = Annotated[str, Field(min_length=1, max_length=256)]
Scope = tuple[str, str]


class AllocationError(ValueError):
    """A mapping file is unreadable or invalid; the message names the file, the key path and the value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Lookup(_Strict):
    """A table from one attribute's value to dimension values: ``app: support-bot → team: cx``.

    ``values`` maps each value of ``from`` to a mapping of dimensions, or, when ``to`` names the
    one dimension filled, to a plain string.

    >>> Lookup(**{"from": "namespace", "to": "team", "values": {"ml-research": "research"}}).resolved()
    {'ml-research': {'team': 'research'}}
    """

    from_: Name = Field(alias="from")
    to: Name | None = None
    values: dict[Name, dict[Name, Name] | Name]
    description: str | None = None

    @model_validator(mode="after")
    def _plain_needs_to(self) -> Lookup:
        for key, target in self.values.items():
            if isinstance(target, str) and self.to is None:
                raise ValueError(f"values.{key}: a plain value needs 'to' (the dimension it fills) "
                                 f"(got {target!r})")
        return self

    def resolved(self) -> dict[str, dict[str, str]]:
        """Return ``values`` with every entry as a mapping of dimension to value."""
        out: dict[str, dict[str, str]] = {}
        for key, target in self.values.items():
            out[key] = {self.to or "": target} if isinstance(target, str) else target
        return out


class AllocationConfig(_Strict):
    """The allocation mapping: dimensions, label aliases, lookups, defaults and shared-cost rules.

    >>> config = AllocationConfig(aliases={"team": ["team", "owner"]},
    ...                           lookups=[{"from": "team", "values": {"cx": {"business_unit": "customer"}}}])
    >>> config.dimensions_all()[:4], config.required
    (('organization', 'business_unit', 'product_line', 'feature'), ['team'])
    """

    version: Name = "custom"
    description: str | None = None
    hierarchy: list[Name] = Field(default_factory=lambda: list(DEFAULT_HIERARCHY))
    dimensions: list[Name] = Field(default_factory=list)
    required: list[Name] = Field(default_factory=lambda: ["team"])
    aliases: dict[Name, list[Name]] = Field(default_factory=dict)
    lookups: list[Lookup] = Field(default_factory=list)
    defaults: dict[Name, dict[Name, Name]] = Field(default_factory=dict)
    shared_costs: SharedCostsConfig = Field(default_factory=SharedCostsConfig)

    @field_validator("dimensions")
    @classmethod
    def _new_names(cls, value: list[str]) -> list[str]:
        for index, name in enumerate(value):
            if not _DIMENSION_NAME.match(name):
                raise ValueError(f"[{index}]: must be lower_snake_case (got {name!r})")
            if name in STANDARD_DIMENSIONS or value.index(name) != index:
                raise ValueError(f"[{index}]: already a dimension (got {name!r})")
        return value

    @model_validator(mode="after")
    def _cross_check(self) -> AllocationConfig:
        problems = self._problems()
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def dimensions_all(self) -> tuple[str, ...]:
        """Return every dimension: the hierarchy (top down), the other standard ones, then the extras."""
        ordered = list(dict.fromkeys([*self.hierarchy, *STANDARD_DIMENSIONS, *self.dimensions]))
        return tuple(ordered)

    def sources_of(self, name: str) -> list[str]:
        """Return the label keys (or ``record.<column>``) an attribute is read from; first non-empty wins."""
        return self.aliases.get(name, [name])

    def _problems(self) -> list[str]:
        dims = {*STANDARD_DIMENSIONS, *self.dimensions}
        attrs = dims | set(self.aliases)
        out: list[str] = []

        def need_dim(path: str, name: str) -> None:
            if name not in dims:
                out.append(f"{path}: not a dimension; dimensions are {', '.join(sorted(dims))} "
                           f"(got {name!r})")

        for section in ("hierarchy", "required"):
            names: list[str] = getattr(self, section)
            for index, name in enumerate(names):
                need_dim(f"{section}[{index}]", name)
                if names.index(name) != index:
                    out.append(f"{section}[{index}]: listed twice (got {name!r})")
        for attr, sources in self.aliases.items():
            if not sources:
                out.append(f"aliases.{attr}: needs at least one label key (got [])")
            for index, source in enumerate(sources):
                if source.startswith(RECORD_PREFIX) and source[len(RECORD_PREFIX):] not in RECORD_COLUMNS:
                    out.append(f"aliases.{attr}[{index}]: not a cost record column (got {source!r})")
        filled_by: dict[str, int] = {}
        for index, lookup in enumerate(self.lookups):
            for dim in {d for target in lookup.resolved().values() for d in target}:
                filled_by.setdefault(dim, index)
        for index, lookup in enumerate(self.lookups):
            path = f"lookups[{index}]"
            if lookup.from_ not in attrs:
                out.append(f"{path}.from: not a dimension or an alias name (got {lookup.from_!r})")
            later = filled_by.get(lookup.from_)
            if later is not None and later > index:
                out.append(f"{path}.from: {lookup.from_!r} is only filled by lookups[{later}], which comes "
                           f"later; move this lookup after it (got {lookup.from_!r})")
            if lookup.to is not None:
                need_dim(f"{path}.to", lookup.to)
            for key, target in lookup.values.items():
                if isinstance(target, dict):
                    for dim in target:
                        need_dim(f"{path}.values.{key}.{dim}", dim)
        for source, targets in self.defaults.items():
            if source != ANY_SOURCE and source not in SOURCE_TYPES:
                out.append(f"defaults.{source}: not a source type; use {', '.join(SOURCE_TYPES)} or "
                           f"'{ANY_SOURCE}' (got {source!r})")
            for dim in targets:
                need_dim(f"defaults.{source}.{dim}", dim)
        rule_names: set[str] = set()
        for index, rule in enumerate(self.shared_costs.rules):
            need_dim(f"shared_costs.rules[{index}].dimension", rule.dimension)
            if rule.name in rule_names:
                out.append(f"shared_costs.rules[{index}].name: used twice (got {rule.name!r})")
            rule_names.add(rule.name)
        return out


class Allocation(NamedTuple):
    """Where one charge belongs. Each dimension is a string, ``unallocated`` when nothing names it.

    ``missing_required`` lists the required dimensions that are ``unallocated``; ``extra`` holds the
    values of dimensions added in the mapping file, as ``(name, value)`` pairs.

    >>> a = Allocation.unallocated()._replace(team="search")
    >>> a.get("team"), a.get("env"), a.missing_required
    ('search', 'unallocated', ())
    """

    organization: str
    business_unit: str
    product_line: str
    feature: str
    team: str
    project: str
    env: str
    cost_center: str
    missing_required: tuple[str, ...] = ()
    extra: tuple[tuple[str, str], ...] = ()

    @classmethod
    def unallocated(cls) -> Allocation:
        """Return an allocation with every dimension ``unallocated`` and nothing listed as missing."""
        u = UNALLOCATED
        return cls(u, u, u, u, u, u, u, u)

    def get(self, dimension: str) -> str:
        """Return one dimension's value (standard or extra); ``unallocated`` for an unknown name."""
        index = _STANDARD_INDEX.get(dimension)
        if index is not None:
            return str(self[index])
        for name, value in self.extra:
            if name == dimension:
                return value
        return UNALLOCATED

    @property
    def allocated(self) -> bool:
        """True when every required dimension has a value."""
        return not self.missing_required

    def to_dict(self) -> dict[str, Any]:
        """Return a plain dict ready for JSON (extras inline, ``missing_required`` as a list)."""
        out: dict[str, Any] = {name: self[i] for name, i in _STANDARD_INDEX.items()}
        out.update(self.extra)
        out["missing_required"] = list(self.missing_required)
        return out


_STANDARD_INDEX = {name: index for index, name in enumerate(STANDARD_DIMENSIONS)}


def scope_key(scope: Scope) -> str:
    """Render a scope as ``kind:value``, the form budgets and spend tables use.

    >>> scope_key(("project/env", "ranking/prod"))
    'project/env:ranking/prod'
    """
    return f"{scope[0]}:{scope[1]}"


def parse_scope(text: str) -> Scope:
    """Read ``kind:value`` back into a scope (the value may itself contain ``:``).

    >>> parse_scope("user:alice@example.com:42")
    ('user', 'alice@example.com:42')
    """
    kind, sep, value = text.partition(":")
    if not sep or not kind or not value:
        raise ValueError(f"a scope is kind:value, e.g. team:search (got {text!r})")
    return kind, value


class Allocator:
    """Allocates cost records with one mapping; build once, call ``allocate`` per record (cached).

    The cache key is the record's source type plus the values of exactly the labels and columns the
    mapping reads, so records that differ only in other labels share one entry. The cache is cleared
    when it holds ``cache_size`` entries, which bounds memory when a mapped label has many values.

    >>> config = AllocationConfig(
    ...     aliases={"team": ["team", "owner"], "app": ["record.x_App"]},
    ...     lookups=[{"from": "app", "values": {"support-bot": {"team": "cx", "product_line": "support"}}},
    ...              {"from": "team", "to": "business_unit", "values": {"cx": "customer"}}],
    ...     defaults={"*": {"organization": "acme"}})
    >>> allocator = Allocator(config)
    >>> a = allocator.allocate({"Tags": {"env": "prod"}, "x_SourceType": "llm.request",
    ...                         "x_App": "support-bot"})
    >>> a.organization, a.business_unit, a.product_line, a.team, a.env, a.missing_required
    ('acme', 'customer', 'support', 'cx', 'prod', ())
    >>> allocator.allocate({"Tags": {}, "x_SourceType": "gpu.sample", "x_App": None}).missing_required
    ('team',)
    """

    def __init__(self, config: AllocationConfig, cache_size: int = 100_000) -> None:
        self.config = config
        self.dimensions = config.dimensions_all()
        self._extra = tuple(config.dimensions)
        self._cache_size = cache_size
        self._cache: dict[tuple[Any, ...], Allocation] = {}
        self._scope_cache: dict[Allocation, tuple[Scope, ...]] = {}
        attributes = list(dict.fromkeys([*self.dimensions, *config.aliases]))
        tag_keys: set[str] = set()
        columns: dict[str, int] = {}
        plan: list[tuple[str, tuple[str | int, ...]]] = []
        for attr in attributes:
            sources: list[str | int] = []
            for source in config.sources_of(attr):
                if source.startswith(RECORD_PREFIX):
                    sources.append(columns.setdefault(source[len(RECORD_PREFIX):], len(columns)))
                else:
                    tag_keys.add(source)
                    sources.append(source)
            plan.append((attr, tuple(sources)))
        self._tag_keys = frozenset(tag_keys)
        self._columns = tuple(columns)
        self._plan = tuple(plan)
        self._lookups = tuple((lk.from_, lk.resolved()) for lk in config.lookups)
        self._defaults = {
            source: {**config.defaults.get(ANY_SOURCE, {}), **config.defaults.get(source, {})}
            for source in SOURCE_TYPES
        }
        self._any_defaults = dict(config.defaults.get(ANY_SOURCE, {}))
        self._required = tuple(config.required)

    @property
    def cache_len(self) -> int:
        """How many distinct keys are cached now."""
        return len(self._cache)

    def allocate(self, record: CostRecord) -> Allocation:
        """Return the allocation of one cost record."""
        wanted = self._tag_keys
        # only the labels the mapping reads: a request id in Tags must not defeat the cache
        key = (record["x_SourceType"], tuple([(k, v) for k, v in record["Tags"].items() if k in wanted]),
               tuple(map(record.get, self._columns)))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        result = self._cache[key] = self._resolve(key[0], key[1], key[2])
        return result

    def _resolve(
        self, source_type: str, tag_pairs: tuple[tuple[str, str], ...], column_values: tuple[Any, ...]
    ) -> Allocation:
        tags = dict(tag_pairs)
        attrs: dict[str, str] = {}
        for attr, sources in self._plan:
            for source in sources:
                raw = column_values[source] if isinstance(source, int) else tags.get(source)
                value = "" if raw is None else str(raw).strip()
                if value:
                    attrs[attr] = value
                    break
        found = {d: attrs[d] for d in self.dimensions if d in attrs}
        self._apply_lookups(found, attrs)
        for dim, value in self._defaults.get(source_type, self._any_defaults).items():
            found.setdefault(dim, value)
        self._apply_lookups(found, attrs)  # defaults may feed lookups (a default team → its business unit)
        missing = tuple(d for d in self._required if d not in found)
        g = found.get
        u = UNALLOCATED
        extra = tuple((d, g(d, u)) for d in self._extra)
        return Allocation(g("organization", u), g("business_unit", u), g("product_line", u), g("feature", u),
                          g("team", u), g("project", u), g("env", u), g("cost_center", u), missing, extra)

    def _apply_lookups(self, found: dict[str, str], attrs: Mapping[str, str]) -> None:
        for source, table in self._lookups:
            value = found.get(source) or attrs.get(source)
            if value is None:
                continue
            target = table.get(value)
            if target:
                for dim, mapped in target.items():
                    found.setdefault(dim, mapped)

    def scopes(self, allocation: Allocation, record: CostRecord) -> list[Scope]:
        """Every scope a budget or a spend table can be keyed by, for one charge.

        In order: one per dimension (hierarchy first), ``("project/env", "<project>/<env>")``,
        ``("total", "all")``, then ``model``, ``app``, ``user`` and ``session`` from the record's
        columns when set. ``unallocated`` values are scopes too, so spend by any dimension adds up
        to the total.
        """
        base = self._scope_cache.get(allocation)
        if base is None:
            if len(self._scope_cache) >= self._cache_size:
                self._scope_cache.clear()
            dims = [(d, allocation.get(d)) for d in self.dimensions]
            base = (*dims, (PROJECT_ENV, f"{allocation.project}/{allocation.env}"), TOTAL_SCOPE)
            self._scope_cache[allocation] = base
        out = list(base)
        for kind, column in RECORD_SCOPES:
            value = record.get(column)
            if value:
                out.append((kind, str(value)))
        return out


    def dims(self, allocation: Allocation, record: CostRecord) -> dict[str, str | None]:
        """Return one charge's dimensions as a mapping, the form budget scopes match on.

        Every allocation dimension (``unallocated`` included), plus ``model``, ``app``, ``user``,
        ``session``, ``source``, ``provider``, ``region``, ``cluster`` and ``workload`` from the
        record's columns (``None`` when unset).
        """
        out: dict[str, str | None] = {d: allocation.get(d) for d in self.dimensions}
        for name, column in RECORD_DIMS:
            value = record.get(column)
            out[name] = None if value is None else str(value)
        return out

    def team_for(self, attrs: Mapping[str, str]) -> str | None:
        """Return the team the mapping gives something named only by attributes (an alert's labels).

        The attributes are read as a record's labels; ``app``, ``model``, ``user``, ``session``,
        ``source``, ``provider``, ``region``, ``cluster`` and ``workload`` also fill the record columns
        ``dims`` reads them from, so ``record.x_App`` aliases see them. An ``unallocated`` value counts
        as unset. ``None`` when the mapping names no team.

        >>> allocator = Allocator(AllocationConfig(
        ...     aliases={"app": ["record.x_App"]},
        ...     lookups=[{"from": "app", "to": "team", "values": {"support-bot": "cx"}}]))
        >>> allocator.team_for({"app": "support-bot", "team": "unallocated"})
        'cx'
        >>> allocator.team_for({"app": "x"}) is None
        True
        """
        known = {k: v for k, v in attrs.items() if v and v != UNALLOCATED}
        record: dict[str, Any] = {column: known.get(name) for name, column in RECORD_DIMS}
        record["Tags"] = known
        record["x_SourceType"] = known.get("source", ANY_SOURCE)  # "*": only the every-source defaults
        team = self.allocate(cast(CostRecord, record)).team
        return None if team == UNALLOCATED else team


class ExactSum:
    """A float sum without rounding drift: the result is the exactly rounded sum of every value added.

    Shewchuk's partials (as ``math.fsum``), kept incrementally; the order of additions does not change
    the result, so a replay and a stream that see the same charges in another order agree to the bit.

    >>> s = ExactSum()
    >>> for x in [0.1] * 10:
    ...     s.add(x)
    >>> s.value, sum([0.1] * 10)
    (1.0, 0.9999999999999999)
    """

    __slots__ = ("partials",)

    def __init__(self, partials: Iterable[float] = ()) -> None:
        self.partials: list[float] = []
        for x in partials:
            self.add(x)

    def add(self, x: float) -> None:
        """Add one finite value."""
        if not math.isfinite(x):
            raise ValueError(f"cannot add a non-finite amount (got {x!r})")
        partials = self.partials
        i = 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                partials[i] = lo
                i += 1
            x = hi
        partials[i:] = [x]

    @property
    def value(self) -> float:
        """The sum, rounded once."""
        return math.fsum(self.partials)


class ComplianceTally:
    """Tag compliance for one period: allocated and unallocated spend and the top offending resources.

    A charge is allocated when its allocation misses no required dimension. ``total_usd`` is defined
    as ``allocated_usd + unallocated_usd``, so the two always add up to the total exactly. At most
    ``max_resources`` offending resources are tracked; past that the smallest half is folded into
    ``other_resources_usd`` (the top entries stay exact in practice; see ``docs/allocation.md``).

    >>> tally = ComplianceTally()
    >>> ok = Allocation.unallocated()._replace(team="search")
    >>> bad = Allocation.unallocated()._replace(missing_required=("team",))
    >>> tally.add({"EffectiveCost": 3.0, "ResourceId": "GPU-1", "x_SourceType": "gpu.sample"}, ok)
    >>> tally.add({"EffectiveCost": 1.0, "ResourceId": "GPU-2", "x_SourceType": "gpu.sample"}, bad)
    >>> tally.total_usd, tally.ratio, tally.top(1)[0]["resource_id"]
    (4.0, 0.75, 'GPU-2')
    """

    def __init__(self, max_resources: int = 1000) -> None:
        self.max_resources = max(2, max_resources)
        self._allocated = ExactSum()
        self._unallocated = ExactSum()
        self.records = 0
        self.unallocated_records = 0
        self.missing_usd: dict[str, float] = {}
        self.by_resource: dict[str, list[Any]] = {}  # resource -> [usd, source type, missing dims]
        self.other_resources_usd = 0.0

    @property
    def allocated_usd(self) -> float:
        """Spend whose required dimensions are all known."""
        return self._allocated.value

    @property
    def unallocated_usd(self) -> float:
        """Spend attributed to ``unallocated`` for at least one required dimension."""
        return self._unallocated.value

    @property
    def total_usd(self) -> float:
        """``allocated_usd + unallocated_usd``."""
        return self.allocated_usd + self.unallocated_usd

    @property
    def ratio(self) -> float:
        """Allocated / total spend, in [0, 1]; 1.0 when there is no spend."""
        total = self.total_usd
        if total == 0:
            return 1.0
        return min(1.0, max(0.0, self.allocated_usd / total))

    def add(self, record: CostRecord, allocation: Allocation) -> None:
        """Count one charge."""
        cost = record["EffectiveCost"]
        self.records += 1
        if not allocation.missing_required:
            self._allocated.add(cost)
            return
        self._unallocated.add(cost)
        self.unallocated_records += 1
        for dim in allocation.missing_required:
            self.missing_usd[dim] = self.missing_usd.get(dim, 0.0) + cost
        resource = record["ResourceId"] or "(none)"
        entry = self.by_resource.get(resource)
        if entry is None:
            if len(self.by_resource) >= self.max_resources:
                self._prune()
            self.by_resource[resource] = [cost, record["x_SourceType"], allocation.missing_required]
        else:
            entry[0] += cost

    def _prune(self) -> None:
        ranked = sorted(self.by_resource.items(), key=lambda item: item[1][0], reverse=True)
        keep = self.max_resources // 2
        self.other_resources_usd += math.fsum(entry[0] for _, entry in ranked[keep:])
        self.by_resource = dict(ranked[:keep])

    def top(self, n: int = 10) -> list[dict[str, Any]]:
        """Return the ``n`` offending resources with the most unallocated spend, largest first."""
        ranked = sorted(self.by_resource.items(), key=lambda item: (-item[1][0], item[0]))[:n]
        return [{"resource_id": r, "unallocated_usd": e[0], "source_type": e[1], "missing": list(e[2])}
                for r, e in ranked]

    def snapshot(self, top_n: int = 10) -> dict[str, Any]:
        """Return the period's figures as a plain dict ready for JSON."""
        return {
            "total_usd": self.total_usd,
            "allocated_usd": self.allocated_usd,
            "unallocated_usd": self.unallocated_usd,
            "ratio": self.ratio,
            "records": self.records,
            "unallocated_records": self.unallocated_records,
            "missing_usd": dict(sorted(self.missing_usd.items())),
            "top_offenders": self.top(top_n),
            "other_resources_usd": self.other_resources_usd,
        }


# --- loading -------------------------------------------------------------------------------------


def parse_allocation(doc: Any, where: str) -> AllocationConfig:
    """Validate a parsed mapping document; raise ``AllocationError`` listing every problem."""
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise AllocationError(f"{where}: (top level): must be a mapping (got {type(doc).__name__})")
    try:
        return AllocationConfig.model_validate(doc)
    except ValidationError as error:
        raise AllocationError(describe_validation_error(error, where)) from None


def _load_yaml(text: str, where: str) -> Any:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader, never the full one
    except yaml.YAMLError as error:
        raise AllocationError(f"{where}: (top level): not valid YAML: {error}") from None


def load_allocation(path: Path | None = None) -> AllocationConfig:
    """Load a mapping file (``None``: the packaged default).

    Raises ``AllocationError`` naming the file, the key path and the bad value.
    """
    if path is None:
        return default_allocation()
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise AllocationError(f"{where}: (top level): cannot read the file ({error.strerror})") from None
    return parse_allocation(_load_yaml(text, where), where)


@lru_cache(maxsize=1)
def default_allocation() -> AllocationConfig:
    """Return the mapping shipped with the package (parsed once)."""
    where = "streams/data/allocation.yaml"
    text = resources.files("streams").joinpath("data/allocation.yaml").read_text(encoding="utf-8")
    return parse_allocation(_load_yaml(text, where), where)
