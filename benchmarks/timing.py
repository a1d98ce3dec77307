"""Timing helpers: warm-up, repeats, median and p95 in milliseconds."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["Timing", "measure", "measure_interleaved"]


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p95_ms: float
    repeats: int
    samples_ms: tuple[float, ...] = field(default=(), compare=False, repr=False)  # sorted

    def per_call(self, calls: int) -> Timing:
        """The timing of a function that made ``calls`` calls, per call (the median and p95 of
        the groups, divided; the groups' own samples are not kept)."""
        return Timing(self.median_ms / calls, self.p95_ms / calls, self.repeats * calls)

    def to_dict(self, *, samples: bool = False) -> dict:
        """Median, p95 and repeats; with ``samples``, every timed call too (sorted), for
        timings whose distribution is not one hump (the app's round trips)."""
        summary: dict = {
            "median_ms": round(self.median_ms, 2),
            "p95_ms": round(self.p95_ms, 2),
            "repeats": self.repeats,
        }
        if samples:
            summary["samples_ms"] = [round(t, 1) for t in self.samples_ms]
        return summary


def measure(fn: Callable[[], object], *, warmup: int = 3, repeats: int = 30) -> Timing:
    """Call ``fn`` ``warmup`` times, then time ``repeats`` calls."""
    return measure_interleaved({"fn": fn}, warmup=warmup, repeats=repeats)["fn"]


def measure_interleaved(
    fns: Mapping[str, Callable[[], object]], *, warmup: int = 3, repeats: int = 30, self_timed: bool = False
) -> dict[str, Timing]:
    """Time several functions in alternation: each round calls every one once, in an order
    shuffled round by round (seeded, so a run is repeatable). With ``self_timed`` each function
    returns its own duration in milliseconds (measured where the work happens, such as inside
    a browser page, around only the part to time), and that is recorded instead of the call's.

    On a shared machine the load drifts over seconds; timing A's calls and then B's puts
    them in different conditions, while alternating them gives both the same, so their
    ratio is a fair comparison. The shuffle keeps a fixed order from biasing it: in
    ``A, B, C, A, B, C, ...`` A always runs right after C, on the caches C left behind
    (cold ones, after a large reference model), and B always on A's.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    order = random.Random(0)
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        order.shuffle(names)
        for name in names:
            fn = fns[name]
            start = time.perf_counter()
            result = fn()
            samples[name].append(float(result) if self_timed else (time.perf_counter() - start) * 1000)
    return {name: _summary(times) for name, times in samples.items()}


def _summary(samples: list[float]) -> Timing:
    samples = sorted(samples)
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return Timing(statistics.median(samples), p95, len(samples), tuple(samples))
