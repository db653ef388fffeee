"""The router places each group where Kafka's keyed partitioner (faust's producer) would."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from streams import group_partitions
from streams.group_partitions import GroupPartitions


@given(st.text(), st.integers(min_value=1, max_value=64))
def test_a_group_goes_where_a_keyed_send_would(key: str, partitions: int) -> None:
    all_partitions = list(range(partitions))
    expected = DefaultPartitioner()(key.encode(), all_partitions, all_partitions)
    place = GroupPartitions(partitions)
    assert place(key) == expected
    assert place(key) == expected  # from the cache


def test_the_cache_starts_over_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(group_partitions, "MAX_CACHED", 3)
    place = GroupPartitions(6)
    keys = [f"app:{n}" for n in range(10)]
    first = [place(key) for key in keys]
    assert len(place._cache) <= 3
    assert [place(key) for key in keys] == first
