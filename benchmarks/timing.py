"""Timing helpers: warm-up, repeats, median and p95 in milliseconds."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Timing", "measure"]


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p95_ms: float
    repeats: int

    def to_dict(self) -> dict[str, float]:
        return {
            "median_ms": round(self.median_ms, 2),
            "p95_ms": round(self.p95_ms, 2),
            "repeats": self.repeats,
        }


def measure(fn: Callable[[], object], *, warmup: int = 3, repeats: int = 30) -> Timing:
    """Call ``fn`` ``warmup`` times, then time ``repeats`` calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return Timing(statistics.median(samples), p95, repeats)
