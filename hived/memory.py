"""The daemon's garbage-collection policy: what startup made is frozen, the rest is swept.

How it works: once the daemon serves, :func:`settle_garbage_collector` collects once, moves
every object startup made into the permanent generation (``gc.freeze()``: never scanned again)
and raises the young generation's threshold, so that the collector rarely interrupts a busy
daemon (full collections over thousands of connections took up to 178 ms each, which showed as
p99 latency). Those thresholds leave automatic full collections practically off, and a closed
connection leaves a few KiB of reference cycles that only a full collection frees (issue #19:
35 → 110 MB over 10k connections, never given back). So :func:`run_gc_sweeps` runs a full
collection every :data:`GC_SWEEP_INTERVAL_S` — but only when the daemon did something since
the last one (``activity()`` changed, or a young collection ran): an idle daemon is never
interrupted, a busy one pays one full collection per interval, and the garbage it can hold is
what one interval makes. docs/internals.md explains the choice.

:func:`trim_heap` hands the C heap's free pages back to the system (glibc's ``malloc_trim``):
the store's writer calls it once a burst of pending events is written (glibc otherwise keeps
what a burst freed, and the RSS stays at the burst's peak).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable
from typing import Final

import trio

log = logging.getLogger(__name__)

GC_THRESHOLDS: Final = (50_000, 50, 1000)
"""Young-generation collections every 50k allocations instead of 700 (see bench/RESULTS.md);
full collections come from :func:`run_gc_sweeps`."""

GC_SWEEP_INTERVAL_S: Final = 30.0
"""How often a full collection runs while the daemon is active."""


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``; None under another C library (musl has none)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_MALLOC_TRIM: Final = _malloc_trim()


def trim_heap() -> bool:
    """Give the free pages of the C heap back to the system; whether it could (glibc). Call it
    from a worker thread: it walks the heap, and ctypes lets go of the GIL meanwhile."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


def settle_garbage_collector() -> None:
    """Move what startup made out of the collector's sight, and collect the young less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _young_collections() -> int:
    return int(gc.get_stats()[0]["collections"])


async def run_gc_sweeps(
    activity: Callable[[], int], *, interval_s: float = GC_SWEEP_INTERVAL_S
) -> None:
    """Every ``interval_s``, a full collection if ``activity()`` (a counter that grows with the
    work that leaves garbage: connections accepted) changed or a young collection ran since
    the last look. Runs until cancelled."""
    seen = (activity(), _young_collections())
    while True:
        await trio.sleep(interval_s)
        now = (activity(), _young_collections())
        if now == seen:
            continue
        started = time.perf_counter()
        freed = gc.collect()
        seen = (activity(), _young_collections())
        log.debug(
            "gc sweep: %d unreachable objects in %.1f ms",
            freed,
            (time.perf_counter() - started) * 1000,
        )
