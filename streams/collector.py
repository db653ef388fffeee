"""Python's cyclic garbage collector, tuned for a long-running stream worker.

A worker allocates a few small containers per event (decoded JSON, cost records, detector states and
buckets) that nearly all die young, while start-up leaves about 90,000 long-lived objects the collector tracks
(faust, aiokafka, pydantic models, the price catalog) that every full collection scans again. Once the
worker has started, ``tune_collector`` moves what start-up made to the permanent generation
(``gc.freeze``) and lets the youngest generation grow to ``GEN0_THRESHOLD`` allocations before it is
collected (Python's default is 700), so fewer short-lived objects are promoted and scanned again.
Measured with callgrind on the detector path in process (route, detectors, state encoding over ten
simulated minutes): the collector took about 7% of its instructions, and with these settings no more
than with the collector off.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("burnwatch.worker")

GEN0_THRESHOLD = 10_000


def tune_collector() -> None:
    """Freeze the objects made so far and raise the youngest generation's threshold."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    log.info("froze %d start-up objects; collector thresholds %s", gc.get_freeze_count(), gc.get_threshold())
