"""The worker's garbage-collector settings: fewer passes of the cyclic collector over a busy stream.

CPython frees most objects by reference counting; its cyclic collector only finds garbage in
reference cycles. By default it runs a young-generation pass every 700 net allocations of container
objects, every tenth of those also scans the middle generation, and some of those the whole heap. A
worker allocates many short-lived dicts, lists and tuples per event (events, cost records, detector
states), nearly all freed by reference counting, so it runs hundreds of passes a second that find
nothing, and the older-generation passes among them walk every live detector state and everything
start-up made. Measured in process (``bench.feed``'s stages, 30 simulated minutes: 312 young, 29 middle
and 3 full passes over ``apply``), the passes were 24% of the detectors' CPU and 10% of parsing and
pricing; a threshold of 10,000 removed nearly all of that. In the stream a higher one does better
again: a pass that comes in the middle of a batch finds the batch's own objects (decoded inputs, cost
records, table entries) still alive, and moves them to the older generations, whose passes then walk
them and every live detector state. At 400,000 the collector's own time in ``bench.run``'s worker
(timed with ``gc.callbacks``, 300,000 events) fell from 4.5% to 1.1% of its CPU pricing alone, and from
6.7% to 2.6% with the detectors on (docs/detectors.md, ninth round). Cycles are still collected, and
what start-up made (modules, the catalog, faust's app) is frozen out of the full passes
(``gc.freeze``), as long-running servers do.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("burnwatch.worker")

YOUNG_THRESHOLD = 400_000  # the worker's default (``Settings.gc_young_threshold``) and the benches'


def tune_collector(young_threshold: int) -> None:
    """Set the young generation's threshold (0: leave Python's) and freeze what start-up made.

    >>> before = gc.get_threshold()
    >>> tune_collector(5000); gc.get_threshold()[0]
    5000
    >>> gc.unfreeze(); gc.set_threshold(*before)
    """
    if young_threshold <= 0:
        return
    _, middle, old = gc.get_threshold()
    gc.collect()  # what start-up left as garbage goes now, not into the permanent generation
    gc.freeze()
    gc.set_threshold(young_threshold, middle, old)
    log.info("garbage collector: young-generation threshold %d, %d start-up objects frozen",
             young_threshold, gc.get_freeze_count())
