"""The price catalog: list prices for GPU-hours, LLM tokens, storage and egress, plus negotiated discounts.

A catalog is a YAML file (format in ``docs/pricing.md``). The default one ships as package data
(``streams/data/catalog.yaml``); a user file either replaces it or, with ``extends: default`` (or a
path to another catalog), is laid over it: a user entry replaces every base entry with the same
identity (see ``identity``), other base entries stay, discounts are appended.

Units are fixed: money in USD, GB = 2**30 bytes, month = 730 hours. Every entry may carry
``effective_from`` / ``effective_to`` (UTC; the period is ``[from, to)``), so a lookup by event time
finds the price that applied then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streams.core.config_errors import describe_validation_error

GB_BYTES = 2**30
HOURS_PER_MONTH = 730.0
HOURS_PER_YEAR = 8760.0
WILDCARD = "*"
DEFAULT_REF = "default"

Usd = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Pct = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
Key = Annotated[str, Field(min_length=1, max_length=256)]
PricingModel = Literal["on_demand", "spot", "reserved", "on_prem"]
Service = Literal["gpu", "llm", "storage", "egress"]


class CatalogError(ValueError):
    """A catalog file is unreadable or invalid; the message names the file, the key path and the value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _utc(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
        except ValueError:
            return value  # pydantic reports it with the field's name
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("must carry a UTC offset, e.g. 2026-01-01T00:00:00Z")
        return value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value


class _Dated(_Strict):
    effective_from: datetime | None = None
    effective_to: datetime | None = None
    source: str | None = None
    note: str | None = None

    @field_validator("effective_from", "effective_to", mode="before")
    @classmethod
    def _aware(cls, value: Any) -> Any:
        return _utc(value)

    @model_validator(mode="after")
    def _ordered(self) -> _Dated:
        if self.effective_from and self.effective_to and self.effective_to <= self.effective_from:
            raise ValueError("effective_to must be after effective_from")
        return self

    def active(self, moment: datetime) -> bool:
        """Tell whether this entry applies at ``moment`` (``[effective_from, effective_to)``)."""
        return (self.effective_from is None or self.effective_from <= moment) and (
            self.effective_to is None or moment < self.effective_to
        )

    def overlaps(self, other: _Dated) -> bool:
        """Tell whether two entries' effective periods share any instant."""
        lo = max(self.effective_from or datetime.min.replace(tzinfo=UTC),
                 other.effective_from or datetime.min.replace(tzinfo=UTC))
        hi = min(self.effective_to or datetime.max.replace(tzinfo=UTC),
                 other.effective_to or datetime.max.replace(tzinfo=UTC))
        return lo < hi


class Amortization(_Strict):
    """On-prem cost of owning a GPU, spread over its life: capex / (years x 8760 h) + opex per hour.

    >>> Amortization(capex_usd_per_gpu=35040, lifetime_years=4, opex_usd_per_gpu_hour=0.25).usd_per_gpu_hour()
    1.25
    """

    capex_usd_per_gpu: Usd
    lifetime_years: Annotated[float, Field(gt=0, le=50, allow_inf_nan=False)]
    opex_usd_per_gpu_hour: Usd = 0.0

    def usd_per_gpu_hour(self) -> float:
        """Return the amortized cost of one GPU-hour in USD."""
        return self.capex_usd_per_gpu / (self.lifetime_years * HOURS_PER_YEAR) + self.opex_usd_per_gpu_hour


class GpuPrice(_Dated):
    """The price of one GPU-hour for an instance type or a GPU model, in a region, under a pricing model.

    Give the price one of three ways: ``usd_per_gpu_hour``; ``instance_usd_per_hour`` with
    ``gpus_per_instance`` (the published instance list price, divided here); or ``amortization``.

    >>> GpuPrice(provider="aws", instance_type="p4d.24xlarge", gpus_per_instance=8,
    ...          instance_usd_per_hour=32.7726, pricing="on_demand").usd_per_gpu_hour
    4.096575
    """

    provider: Key
    pricing: PricingModel = "on_demand"
    region: Key = WILDCARD
    instance_type: Key | None = None
    gpu_model: Key | None = None
    gpus_per_instance: Annotated[int, Field(ge=1, le=64)] | None = None
    instance_usd_per_hour: Usd | None = None
    usd_per_gpu_hour: Usd | None = None
    amortization: Amortization | None = None

    @model_validator(mode="after")
    def _one_price(self) -> GpuPrice:
        if not self.instance_type and not self.gpu_model:
            raise ValueError("needs instance_type or gpu_model")
        ways = [self.usd_per_gpu_hour is not None, self.instance_usd_per_hour is not None,
                self.amortization is not None]
        if sum(ways) != 1:
            raise ValueError("give exactly one of usd_per_gpu_hour, instance_usd_per_hour, amortization")
        if self.instance_usd_per_hour is not None:
            if self.gpus_per_instance is None:
                raise ValueError("instance_usd_per_hour needs gpus_per_instance")
            object.__setattr__(self, "usd_per_gpu_hour", self.instance_usd_per_hour / self.gpus_per_instance)
        elif self.amortization is not None:
            object.__setattr__(self, "usd_per_gpu_hour", self.amortization.usd_per_gpu_hour())
        return self

    @property
    def gpu_hour_usd(self) -> float:
        """The resolved price of one GPU-hour (always set after validation)."""
        return self.usd_per_gpu_hour or 0.0


class LlmPrice(_Dated):
    """Per-token prices of one model (USD per token).

    Missing cache prices default to the input price, a missing reasoning price to the output price;
    a missing batch price is the list price less ``batch_discount_pct`` (0 when absent).
    """

    provider: Key
    model: Key
    input_usd_per_token: Usd
    output_usd_per_token: Usd
    cached_input_usd_per_token: Usd | None = None
    cache_write_usd_per_token: Usd | None = None
    reasoning_usd_per_token: Usd | None = None
    batch_input_usd_per_token: Usd | None = None
    batch_output_usd_per_token: Usd | None = None
    batch_cached_input_usd_per_token: Usd | None = None
    batch_cache_write_usd_per_token: Usd | None = None
    batch_discount_pct: Pct | None = None


class StoragePrice(_Dated):
    """Price of one GB-month (GB = 2**30 bytes, month = 730 h) of a storage class."""

    provider: Key
    region: Key = WILDCARD
    storage_class: Key = "standard"
    usd_per_gb_month: Usd


class EgressPrice(_Dated):
    """Price of one GB (2**30 bytes) transferred out, by destination."""

    provider: Key
    region: Key = WILDCARD
    destination: Literal["internet", "inter_region", "same_region"]
    usd_per_gb: Usd


class Discount(_Dated):
    """Percent off list for charges that match every given field; the most specific match wins.

    ``model`` matches an LLM model or a GPU model; ``instance_type`` a GPU instance type.
    """

    provider: Key | None = None
    model: Key | None = None
    instance_type: Key | None = None
    service: Service | None = None
    pct: Pct

    @model_validator(mode="after")
    def _has_matcher(self) -> Discount:
        if not (self.provider or self.model or self.instance_type or self.service):
            raise ValueError("needs at least one of provider, model, instance_type, service")
        return self

    def specificity(self) -> int:
        """Rank: a model or instance type counts 4, a provider 2, a service 1."""
        named = 4 if (self.model or self.instance_type) else 0
        return named + (2 if self.provider else 0) + (1 if self.service else 0)


class Source(_Strict):
    """Where a catalog's figures come from."""

    name: str
    url: str | None = None
    retrieved: str | None = None
    license: str | None = None
    note: str | None = None


class PriceCatalog(_Strict):
    """A versioned, effective-dated price catalog; ``version`` is stamped on every priced record.

    >>> cat = PriceCatalog(version="t1", llm=[{"provider": "openai", "model": "m",
    ...                    "input_usd_per_token": 1e-6, "output_usd_per_token": 2e-6}])
    >>> cat.version, cat.llm[0].output_usd_per_token
    ('t1', 2e-06)
    """

    version: Key
    currency: Literal["USD"] = "USD"
    description: str | None = None
    extends: str | None = None
    units: dict[str, str] = Field(default_factory=dict)
    sources: list[Source] = Field(default_factory=list)
    gpu: list[GpuPrice] = Field(default_factory=list)
    llm: list[LlmPrice] = Field(default_factory=list)
    storage: list[StoragePrice] = Field(default_factory=list)
    egress: list[EgressPrice] = Field(default_factory=list)
    discounts: list[Discount] = Field(default_factory=list)


SECTIONS = ("gpu", "llm", "storage", "egress")


def identity(section: str, entry: BaseModel) -> tuple[str, ...]:
    """Return the key that names what an entry prices (used for duplicates and ``extends``).

    >>> identity("llm", LlmPrice(provider="OpenAI", model="gpt-4o", input_usd_per_token=0,
    ...                          output_usd_per_token=0))
    ('openai', 'gpt-4o')
    """
    parts: tuple[str, ...]
    if isinstance(entry, GpuPrice):
        parts = (entry.provider, entry.pricing, entry.region, entry.instance_type or "",
                 entry.gpu_model or "")
    elif isinstance(entry, LlmPrice):
        parts = (entry.provider, entry.model)
    elif isinstance(entry, StoragePrice):
        parts = (entry.provider, entry.region, entry.storage_class)
    elif isinstance(entry, EgressPrice):
        parts = (entry.provider, entry.region, entry.destination)
    else:
        raise TypeError(f"no identity for section {section!r}")
    return tuple(p.lower() for p in parts)


# --- loading and checking ------------------------------------------------------------------------

def find_duplicates(catalog: PriceCatalog, where: str) -> list[str]:
    """Return one message per entry that prices the same thing as an earlier one in an overlapping period."""
    problems = []
    for section in SECTIONS:
        entries: Sequence[_Dated] = getattr(catalog, section)
        seen: dict[tuple[str, ...], list[int]] = {}
        for index, entry in enumerate(entries):
            key = identity(section, entry)
            for earlier in seen.get(key, []):
                if entries[earlier].overlaps(entry):
                    problems.append(
                        f"{where}: {section}[{index}]: same {'/'.join(key)} as {section}[{earlier}] "
                        f"with an overlapping effective period (got {'/'.join(key)})"
                    )
                    break
            seen.setdefault(key, []).append(index)
    return problems


def parse_catalog(doc: Any, where: str) -> PriceCatalog:
    """Validate a parsed catalog document; raise ``CatalogError`` listing every problem."""
    if not isinstance(doc, Mapping):
        raise CatalogError(f"{where}: (top level): must be a mapping (got {type(doc).__name__})")
    try:
        catalog = PriceCatalog.model_validate(doc)
    except ValidationError as error:
        raise CatalogError(describe_validation_error(error, where)) from None
    problems = find_duplicates(catalog, where)
    if problems:
        raise CatalogError("\n".join(problems))
    return catalog


def merge(base: PriceCatalog, overlay: PriceCatalog) -> PriceCatalog:
    """Lay ``overlay`` over ``base``: overlay entries replace base entries with the same identity.

    The version becomes ``"<overlay>+<base>"`` so records show both.
    """
    merged: dict[str, Any] = {}
    for section in SECTIONS:
        mine = getattr(overlay, section)
        replaced = {identity(section, e) for e in mine}
        kept = [e for e in getattr(base, section) if identity(section, e) not in replaced]
        merged[section] = list(mine) + kept
    return overlay.model_copy(
        update={
            **merged,
            "version": f"{overlay.version}+{base.version}",
            "sources": list(overlay.sources) + list(base.sources),
            "units": {**base.units, **overlay.units},
            "discounts": list(base.discounts) + list(overlay.discounts),
        }
    )


def _load_yaml(text: str, where: str) -> Any:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader, never the full one
    except yaml.YAMLError as error:
        raise CatalogError(f"{where}: (top level): not valid YAML: {error}") from None


def _load(path: Path, depth: int) -> PriceCatalog:
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise CatalogError(f"{where}: (top level): cannot read the file ({error.strerror})") from None
    catalog = parse_catalog(_load_yaml(text, where), where)
    if not catalog.extends:
        return catalog
    if depth >= 8:
        raise CatalogError(f"{where}: extends: chain deeper than 8 files (got {catalog.extends!r})")
    if catalog.extends == DEFAULT_REF:
        base = default_catalog()
    else:
        base_path = Path(catalog.extends)
        base = _load(base_path if base_path.is_absolute() else path.parent / base_path, depth + 1)
    return merge(base, catalog)


def load_catalog(path: Path | None = None) -> PriceCatalog:
    """Load a catalog file (``None``: the packaged default), following ``extends``.

    Raises ``CatalogError`` naming the file, the key path and the bad value.
    """
    if path is None:
        return default_catalog()
    return _load(Path(path), 0)


@lru_cache(maxsize=1)
def default_catalog() -> PriceCatalog:
    """Return the catalog shipped with the package (parsed once)."""
    text = resources.files("streams").joinpath("data/catalog.yaml").read_text(encoding="utf-8")
    return parse_catalog(_load_yaml(text, "streams/data/catalog.yaml"), "streams/data/catalog.yaml")
