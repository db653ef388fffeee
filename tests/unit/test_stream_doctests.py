"""Doctests of the stream-side modules outside ``streams/core`` (pytest collects only core's itself)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = (
    "streams.batching",
    "streams.commands.lag",
    "streams.detector_agents",
    "streams.faust_fixes",
    "streams.gpu_agent.dcgm",
    "streams.gpu_agent.nvidia_smi",
    "streams.group_partitions",
    "streams.hooks.usage",
    "streams.ingest_server.auth",
    "streams.ingest_server.limits",
    "streams.producer",
    "streams.tables",
)


@pytest.mark.parametrize("name", MODULES)
def test_the_module_doctests_pass(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
