"""A harness sent SIGTERM stops the process it started in a session of its own (``bench.sigterm``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# a harness: a child in its own session (as bench.run starts its worker), stopped in ``finally``
HARNESS = """
import os, signal, subprocess, sys, time
from bench.sigterm import unwind_on_sigterm
if sys.argv[1] == "unwind":
    unwind_on_sigterm()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
try:
    print(child.pid, flush=True)
    time.sleep(300)
finally:
    os.killpg(child.pid, signal.SIGTERM)
    child.wait()
"""


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def terminate_harness(mode: str) -> tuple[int, int]:
    """Start the harness, SIGTERM it once its child runs; return its exit status and the child's pid."""
    harness = subprocess.Popen([sys.executable, "-c", HARNESS, mode], cwd=ROOT, stdout=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert harness.stdout is not None
    child = int(harness.stdout.readline())
    harness.send_signal(signal.SIGTERM)
    return harness.wait(timeout=30), child


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_sigterm_unwinds_the_harness_and_stops_its_child() -> None:
    status, child = terminate_harness("unwind")
    assert status == 128 + signal.SIGTERM  # as the default SIGTERM would end it, but after ``finally``
    assert not alive(child)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_without_it_the_child_outlives_the_harness() -> None:
    status, child = terminate_harness("default")
    try:
        assert status == -signal.SIGTERM
        time.sleep(0.2)
        assert alive(child)  # what unwind_on_sigterm is for
    finally:
        os.killpg(child, signal.SIGKILL)
