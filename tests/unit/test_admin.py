"""ensure_topics waits until the cluster's metadata shows what it created (a stand-in admin client)."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from streams.admin import wait_until_visible


def metadata(topics: dict[str, list[int]]) -> SimpleNamespace:
    """``list_topics`` output: each topic's partitions with their leaders (-1: no leader yet)."""
    return SimpleNamespace(topics={
        name: SimpleNamespace(error=None, partitions={i: SimpleNamespace(leader=leader)
                                                      for i, leader in enumerate(leaders)})
        for name, leaders in topics.items()})


class Admin:
    """Answers ``list_topics`` from a script of metadata, the last one again once it runs out."""

    def __init__(self, *answers: SimpleNamespace) -> None:
        self.answers, self.calls = list(answers), 0

    def list_topics(self, timeout: float) -> Any:
        self.calls += 1
        return self.answers[min(self.calls, len(self.answers)) - 1]


def test_waits_until_every_topic_has_all_its_partitions_led() -> None:
    admin = Admin(
        metadata({"a": [1, 1]}),                 # b not there yet
        metadata({"a": [1, 1], "b": [1]}),       # b with one of its two partitions
        metadata({"a": [1, 1], "b": [1, -1]}),   # b's second partition without a leader
        metadata({"a": [1, 1], "b": [1, 1], "other": [1]}),
    )
    slept: list[float] = []
    assert wait_until_visible(admin, {"a": 2, "b": 2}, timeout_s=30, sleep=slept.append)  # type: ignore[arg-type]
    assert admin.calls == 4
    assert slept == [0.2, 0.2, 0.2]


def test_gives_up_with_a_warning_naming_what_is_missing(caplog: pytest.LogCaptureFixture) -> None:
    admin = Admin(metadata({"a": [1]}))
    with caplog.at_level(logging.WARNING, "burnwatch.admin"):
        assert not wait_until_visible(admin, {"a": 1, "b": 3, "c": 1}, timeout_s=0)  # type: ignore[arg-type]
    assert "not yet in the cluster's metadata after 0 s: b, c" in caplog.text
