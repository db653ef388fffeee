"""Which code runs the detector feed's per-record loops: the compiled kernel (``kernel/``) or Python.

``burnwatch_kernel`` (Rust, built by ``make install`` with cargo; ``pip install ./kernel`` by hand) holds
twins of ``route`` and ``latest_by_lane`` (the ``Watermark``'s loop) that give exactly what the Python
functions give, in about 0.4 of their time (``python -m bench.feed``), of ``route_runs`` (the same, its
LLM requests kept as Rust values, ``Requests``, which the kernel's bucketer and the open inputs' entry read
with no Python list made per request), and of
``detectors.buckets.LlmBucketer`` (the same closed buckets, in the same order; about 0.4 of its time
too), which the stream's detectors bucket LLM requests with; it also keeps the young sessions and users
that wait unstepped (``DetectorRunner.wait_in_bucketer``), and writes their table entries as JSON;
``IdleGpuQuiet`` takes GPU samples through the idle-GPU step's quiet path (a batch's in one call). It is
optional: ``load_feed("auto")`` (the default, ``BURNWATCH_DETECTOR_KERNEL``) takes the kernel when it is
installed and built with this source's kernel API, else the Python code; ``"compiled"`` requires the
kernel (a worker that should have it fails at start instead of running slower); ``"python"`` never uses
it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from detectors.buckets import LlmBucketer
from streams.core.detector_feed import latest_by_lane, route, route_runs

KernelMode = Literal["auto", "compiled", "python"]
# The kernel API this source expects (``API`` in kernel/src/lib.rs): a kernel built from an older or a
# newer checkout may compute differently, so it is not used.
KERNEL_API = 15
MODULE = "burnwatch_kernel"
log = logging.getLogger("burnwatch.detectors")


class KernelMissing(RuntimeError):
    """``BURNWATCH_DETECTOR_KERNEL=compiled`` and no usable kernel is installed."""


@dataclass(frozen=True)
class Feed:
    """The feed's loops to run, and which code they are (``"compiled"`` or ``"python"``)."""

    route: Callable[..., dict[str, list[Any]]]
    latest_by_lane: Callable[[Iterable[Mapping[str, Any]]], dict[str, float]]
    kind: str
    # a run's inputs by partition (``by_partition`` of ``route``'s); the kernel's keep the requests packed
    route_runs: Callable[..., dict[int, list[Any]]] = route_runs
    llm_bucketer: Callable[[Any], Any] = LlmBucketer  # made with a BucketConfig; ``add`` and ``flush``
    # made with an IdleGpuConfig: ``step(state, input)`` takes a GPU sample's quiet path (None: the kernel's)
    idle_gpu_quiet: Callable[[Any], Any] | None = None


PYTHON = Feed(route, latest_by_lane, "python")


def load_feed(mode: KernelMode = "auto") -> Feed:
    """Return the feed's loops for ``mode``.

    >>> load_feed("python").kind
    'python'
    """
    if mode == "python":
        return PYTHON
    try:
        kernel = importlib.import_module(MODULE)
    except ImportError as error:
        return _fallback(mode, f"{MODULE} is not installed ({error})")
    api = getattr(kernel, "API", None)
    if api != KERNEL_API:
        return _fallback(mode, f"{MODULE} has kernel API {api}, this burnwatch needs {KERNEL_API} "
                               "(a stale build)")
    return Feed(kernel.route, kernel.latest_by_lane, "compiled", kernel.route_runs, kernel.LlmBucketer,
                kernel.IdleGpuQuiet)


def _fallback(mode: KernelMode, why: str) -> Feed:
    if mode == "compiled":
        raise KernelMissing(
            f"BURNWATCH_DETECTOR_KERNEL=compiled, but {why}: build it with `make install` (needs Rust's "
            "cargo) or `pip install ./kernel`, or set BURNWATCH_DETECTOR_KERNEL=auto"
        )
    log.warning("detector feed runs in pure Python, about 2.4 times slower per record: %s", why)
    return PYTHON
