from __future__ import annotations

import json
import random
import statistics
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.llm_traces import TokenSizeSampler, derive_fixture, read_trace_csv, systematic_sample
from tests.support.shared_data import SHARED_DATA, needs_shared

TRACES = SHARED_DATA / "llm-traces"
TRACE_FILES = sorted(TRACES.glob("*.csv")) if TRACES.is_dir() else []


def packaged_doc() -> dict:
    return json.loads(resources.files("streams").joinpath("data", "llm_token_sizes.json").read_text())


def test_fixture_carries_attribution_and_both_traces() -> None:
    doc = packaged_doc()
    assert "CC BY 4.0" in doc["attribution"] and "Azure" in doc["attribution"]
    assert set(doc["traces"]) == {"code", "conv"}
    assert all(200 <= len(pairs) <= 1000 for pairs in doc["traces"].values())


def test_sampler_is_deterministic_for_a_seed() -> None:
    sampler = TokenSizeSampler.packaged()
    first = [sampler.sample("conv", random.Random(5)) for _ in range(3)]
    draws_a = [sampler.sample("code", rng) for rng in [random.Random(9)] for _ in range(50)]
    draws_b = [sampler.sample("code", rng) for rng in [random.Random(9)] for _ in range(50)]
    assert draws_a == draws_b
    assert len(set(first)) == 1
    assert len(set(draws_a)) > 20


def test_code_and_conversation_traces_differ_as_in_the_paper() -> None:
    sampler = TokenSizeSampler.packaged()
    rng = random.Random(1)
    code = [sampler.sample("code", rng) for _ in range(2000)]
    conv = [sampler.sample("conv", rng) for _ in range(2000)]
    # code completion: long prompts, short answers; conversation: shorter prompts, longer answers
    assert statistics.median(c for c, _ in code) > statistics.median(c for c, _ in conv)
    assert statistics.median(g for _, g in code) < statistics.median(g for _, g in conv)


@needs_shared(TRACES / "azure_llm_inference_2023_code.csv")
def test_fixture_is_reproducible_from_the_full_traces_and_keeps_their_quantiles() -> None:
    derived = derive_fixture(TRACE_FILES)
    assert derived["traces"] == packaged_doc()["traces"]
    for path in TRACE_FILES:
        full = read_trace_csv(path)
        sample = TokenSizeSampler.from_csv([path]).traces
        assert len(next(iter(sample.values()))) == len(full)
        small = derived["traces"][path.stem.rsplit("_", 1)[-1]]
        for column in (0, 1):
            whole = statistics.quantiles([p[column] for p in full], n=10)
            part = statistics.quantiles([p[column] for p in small], n=10)
            for a, b in zip(whole, part, strict=True):
                assert abs(a - b) <= 0.1 * a + 5


def test_empty_traces_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenSizeSampler({"conv": ()})
    with pytest.raises(ValueError):
        TokenSizeSampler({})


@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**5)), max_size=300), st.integers(0, 400))
def test_systematic_sample_is_a_sorted_subset_of_the_right_size(pairs: list, size: int) -> None:
    sample = systematic_sample(pairs, size)
    assert len(sample) == min(size, len(pairs))
    assert sample == sorted(sample)
    remaining = list(pairs)
    for pair in sample:
        remaining.remove(pair)  # each picked pair really was in the input, as often as picked
