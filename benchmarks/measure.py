"""Wall time and peak RSS of a block of code, measured in-process.

Peak RSS is sampled by a background thread (every 5 ms) and reported relative to nothing:
it is the process's resident size at its highest while the block ran, so phases measured
one after another in the same run are comparable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

__all__ = ["Measurement", "measure"]


@dataclass
class Measurement:
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0


@contextmanager
def measure(interval_s: float = 0.005) -> Iterator[Measurement]:
    """Time the block and record the process's peak RSS while it ran."""
    proc = psutil.Process()
    result = Measurement()
    stop = threading.Event()
    peak = [proc.memory_info().rss]

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            stop.wait(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    try:
        yield result
    finally:
        result.wall_s = time.perf_counter() - start
        stop.set()
        thread.join()
        peak[0] = max(peak[0], proc.memory_info().rss)
        result.peak_rss_mb = peak[0] / 2**20
