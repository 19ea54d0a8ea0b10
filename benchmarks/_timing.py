"""Timing shared by the measurement benchmarks: every contender timed in turn, repetition after repetition."""

from __future__ import annotations

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
