"""Measurement helpers shared by the benchmarks (scripts.bench*): median wall time and
this process's resident memory."""
from __future__ import annotations

import resource
import statistics
import time
from typing import Callable


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall-clock seconds of fn() (which must block until its result is ready)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rss_bytes() -> tuple[int, int]:
    """(current, peak so far) resident memory of this process in bytes: /proc for the
    current value, getrusage (KiB on Linux) for the peak."""
    with open("/proc/self/statm") as f:
        current = int(f.read().split()[1]) * resource.getpagesize()
    return current, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
