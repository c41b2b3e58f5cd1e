"""`LatencyHistogram`: durations counted into fixed buckets, immutable (no torch, no clock).

The engine's worker thread records each request's queue time in one and hands the current
value out with its stats: an immutable value needs no lock to be read from another thread, and
recording one observation copies a tuple of a dozen counts, once per request (never per step).
The neuron exports it as a Prometheus histogram (`cortex_neuron_queue_time_seconds`).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

__all__ = ["QUEUE_TIME_BUCKETS_S", "LatencyHistogram"]

QUEUE_TIME_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
"""Upper bounds (seconds) of a queue-time histogram's buckets: from an idle engine's few
milliseconds to the minutes a saturated one makes a request wait."""


@dataclass(frozen=True)
class LatencyHistogram:
    """Durations counted per bucket.

    Args:
        bounds_s: the buckets' upper bounds, increasing (an implicit last bucket holds the rest).
        counts: observations per bucket, `len(bounds_s) + 1` of them: `counts[i]` fell in
            `(bounds_s[i - 1], bounds_s[i]]`, the last one above `bounds_s[-1]`.
        sum_s: the sum of every observation.
    """

    bounds_s: tuple[float, ...] = QUEUE_TIME_BUCKETS_S
    counts: tuple[int, ...] = ()
    sum_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            object.__setattr__(self, "counts", (0,) * (len(self.bounds_s) + 1))
        assert len(self.counts) == len(self.bounds_s) + 1, "one count per bucket, plus the rest"

    @property
    def count(self) -> int:
        """How many durations were observed."""
        return sum(self.counts)

    def observe(self, seconds: float) -> LatencyHistogram:
        """This histogram with `seconds` counted too."""
        index = bisect.bisect_left(self.bounds_s, seconds)  # a bound is inclusive, as Prometheus'
        counts = list(self.counts)
        counts[index] += 1
        return LatencyHistogram(self.bounds_s, tuple(counts), self.sum_s + seconds)

    def cumulative(self) -> list[tuple[float, int]]:
        """Prometheus' buckets: each bound (`inf` last) with the observations at or below it."""
        running, out = 0, []
        for bound, count in zip((*self.bounds_s, math.inf), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out
