"""Which code runs the detector feed's hot loop: the compiled kernel (``kernel/``) or the pure Python.

``burnwatch_kernel`` (Rust, built by ``make install`` with cargo; ``pip install ./kernel`` by hand) holds
a twin of ``route`` that gives exactly what the Python ``route`` gives, about four times faster. It is
optional: ``load_route("auto")`` (the default, ``BURNWATCH_DETECTOR_KERNEL``) takes the kernel when it is
installed and built from this source's kernel API, else the Python code; ``"compiled"`` requires the
kernel (a worker that should have it fails at start instead of running slower); ``"python"`` never
uses it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any, Literal

from streams.core.detector_feed import route

KernelMode = Literal["auto", "compiled", "python"]
Router = Callable[..., dict[str, list[Any]]]
# The kernel API this source expects (``API`` in kernel/src/lib.rs): a kernel built from an older or a
# newer checkout may route differently, so it is not used.
KERNEL_API = 1
MODULE = "burnwatch_kernel"
log = logging.getLogger("burnwatch.detectors")


class KernelMissing(RuntimeError):
    """``BURNWATCH_DETECTOR_KERNEL=compiled`` and no usable kernel is installed."""


def load_route(mode: KernelMode = "auto") -> tuple[Router, str]:
    """Return the ``route`` to run and what it is (``"compiled"`` or ``"python"``).

    >>> load_route("python")[1]
    'python'
    """
    if mode == "python":
        return route, "python"
    try:
        kernel = importlib.import_module(MODULE)
    except ImportError as error:
        return _fallback(mode, f"{MODULE} is not installed ({error})")
    api = getattr(kernel, "API", None)
    if api != KERNEL_API:
        return _fallback(mode, f"{MODULE} has kernel API {api}, this burnwatch needs {KERNEL_API} "
                               "(a stale build)")
    return kernel.route, "compiled"


def _fallback(mode: KernelMode, why: str) -> tuple[Router, str]:
    if mode == "compiled":
        raise KernelMissing(
            f"BURNWATCH_DETECTOR_KERNEL=compiled, but {why}: build it with `make install` (needs Rust's "
            "cargo) or `pip install ./kernel`, or set BURNWATCH_DETECTOR_KERNEL=auto"
        )
    log.warning("detector feed runs in pure Python, about 4x slower per record: %s", why)
    return route, "python"
