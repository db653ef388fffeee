"""Realistic LLM request sizes: (context, generated) token pairs from Azure's public inference traces.

The full traces (``TIMESTAMP,ContextTokens,GeneratedTokens``) live outside the package; the package ships
``streams/data/llm_token_sizes.json``, a systematic sample of a few hundred pairs per trace that keeps
each trace's joint size distribution. Source: Azure Public Dataset, "Azure LLM inference trace 2023"
(Patel et al., Splitwise, ISCA 2024), licensed CC BY 4.0.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

FIXTURE_NAME = "llm_token_sizes.json"
ATTRIBUTION = (
    "Derived from the Azure Public Dataset, Azure LLM inference trace 2023 "
    "(https://github.com/Azure/AzurePublicDataset), licensed CC BY 4.0. Cite: P. Patel et al., "
    "'Splitwise: Efficient generative LLM inference using phase splitting', ISCA 2024."
)
TraceName = str
Pair = tuple[int, int]


def read_trace_csv(path: Path | str) -> list[Pair]:
    """Read one trace CSV into ``(context_tokens, generated_tokens)`` pairs, in file order."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [(int(row["ContextTokens"]), int(row["GeneratedTokens"])) for row in csv.DictReader(handle)]


def trace_name(path: Path | str) -> TraceName:
    """Name a trace after its file: ``azure_llm_inference_2023_code.csv`` is ``code``.

    >>> trace_name("data/azure_llm_inference_2023_conv.csv")
    'conv'
    """
    return Path(path).stem.rsplit("_", 1)[-1]


def systematic_sample(pairs: Sequence[Pair], size: int) -> list[Pair]:
    """Pick ``size`` pairs evenly spread over the pairs sorted by size, so every quantile is kept.

    >>> systematic_sample([(i, i) for i in range(10)], 3)
    [(1, 1), (5, 5), (8, 8)]
    """
    if size <= 0 or not pairs:
        return []
    ordered = sorted(pairs)
    if size >= len(ordered):
        return ordered
    step = len(ordered) / size
    return [ordered[int(step * i + step / 2)] for i in range(size)]


def derive_fixture(paths: Iterable[Path | str], size: int = 400) -> dict[str, Any]:
    """Build the shipped fixture's content from the full trace CSVs."""
    traces: dict[str, list[list[int]]] = {}
    counts: dict[str, int] = {}
    for path in sorted(paths, key=str):
        pairs = read_trace_csv(path)
        traces[trace_name(path)] = [list(p) for p in systematic_sample(pairs, size)]
        counts[trace_name(path)] = len(pairs)
    return {
        "attribution": ATTRIBUTION,
        "license": "CC BY 4.0",
        "columns": ["context_tokens", "generated_tokens"],
        "source_requests": counts,
        "traces": traces,
    }


@dataclass(frozen=True, slots=True)
class TokenSizeSampler:
    """Draw (context, generated) token pairs from the empirical distribution of named traces.

    >>> sampler = TokenSizeSampler({"conv": ((100, 10), (2000, 300))})
    >>> sampler.sample("conv", random.Random(1))
    (100, 10)
    >>> sampler.names
    ('conv',)
    """

    traces: Mapping[TraceName, Sequence[Pair]]

    def __post_init__(self) -> None:
        empty = [name for name, pairs in self.traces.items() if not pairs]
        if not self.traces or empty:
            raise ValueError(f"every trace needs at least one pair (empty: {empty or 'all'})")

    @property
    def names(self) -> tuple[TraceName, ...]:
        """Return the trace names, sorted."""
        return tuple(sorted(self.traces))

    def sample(self, trace: TraceName, rng: random.Random) -> Pair:
        """Draw one pair from ``trace`` using ``rng`` (so a seeded generator repeats itself)."""
        pairs = self.traces[trace]
        return pairs[rng.randrange(len(pairs))]

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> TokenSizeSampler:
        """Build a sampler from a fixture document (the shape ``derive_fixture`` returns)."""
        traces = {
            str(name): tuple((int(c), int(g)) for c, g in pairs) for name, pairs in doc["traces"].items()
        }
        return cls(traces)

    @classmethod
    def from_csv(cls, paths: Iterable[Path | str]) -> TokenSizeSampler:
        """Build a sampler from full trace CSVs, one trace per file."""
        return cls({trace_name(p): tuple(read_trace_csv(p)) for p in paths})

    @classmethod
    def packaged(cls) -> TokenSizeSampler:
        """Build a sampler from the fixture shipped in ``streams/data``."""
        text = resources.files("streams").joinpath("data", FIXTURE_NAME).read_text(encoding="utf-8")
        return cls.from_mapping(json.loads(text))
