"""Timing and peak memory shared by the benchmarks."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable


def interleaved_timings(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each contender. Interleaved, so slow drifts in a shared machine's speed hit all alike."""
    timings: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - t0)
    return timings


def peak_resident_bytes() -> int:
    """This process's peak resident memory, its own only.

    ``ru_maxrss`` survives ``exec``: a child started by ``subprocess`` reports at least its parent's peak at the
    time it was spawned (a benchmark parent that had just written a 2 GB checkpoint made every contender seem to
    peak at 1.1 GB). Linux's ``VmHWM`` is the high-water mark of this program's own memory; elsewhere
    ``ru_maxrss`` (kilobytes on Linux, bytes on macOS) is the best there is.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
