"""The garbage collector's setting for budgetflow's own processes (its commands and its server).

CPython runs a young-generation collection every 700 net allocations of tracked objects. A run
that keeps its events (a progress view, a trace, a test's `EventLog`) retains about eleven such
objects per request, so with 64 requests in flight the collector runs every ~64 requests and each
pass walks every in-flight request's objects: `benchmarks/overhead.py` measured 30-45 µs of
collector time per request that way, against 5-10 µs at a first threshold of 10,000 (and under
1 µs when nothing is kept). Cycles are still collected; only less often.

A library does not change its host's collector: `budgetflow` commands call
`tune_garbage_collector` at start, and an application embedding budgetflow may do the same.
"""

from __future__ import annotations

import gc
from typing import Final

__all__ = ["YOUNG_THRESHOLD", "tune_garbage_collector"]

#: The first (young-generation) threshold budgetflow's commands run with.
YOUNG_THRESHOLD: Final = 10_000


def tune_garbage_collector() -> None:
    """Raise the collector's first threshold to `YOUNG_THRESHOLD` (never lower it); the older
    generations' thresholds are kept."""
    young, middle, old = gc.get_threshold()
    if young and young < YOUNG_THRESHOLD:  # 0 means disabled by the host: leave it so
        gc.set_threshold(YOUNG_THRESHOLD, middle, old)
