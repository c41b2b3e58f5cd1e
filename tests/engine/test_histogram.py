"""`LatencyHistogram`: bounds inclusive, counts cumulative as Prometheus reads them, immutable."""

from __future__ import annotations

import math

from cortex.engine.histogram import QUEUE_TIME_BUCKETS_S, LatencyHistogram


def test_observations_fall_in_the_bucket_whose_bound_holds_them() -> None:
    empty = LatencyHistogram((0.1, 1.0))
    seen = empty.observe(0.1).observe(0.5).observe(0.05).observe(7.0)
    assert empty.count == 0 and empty.counts == (0, 0, 0)  # observing returned new values
    assert seen.counts == (2, 1, 1)  # 0.1 is in the first bucket: bounds are inclusive
    assert seen.count == 4 and math.isclose(seen.sum_s, 7.65)
    assert seen.cumulative() == [(0.1, 2), (1.0, 3), (math.inf, 4)]


def test_the_default_buckets_reach_minutes() -> None:
    histogram = LatencyHistogram().observe(0.002).observe(90.0)
    assert histogram.bounds_s == QUEUE_TIME_BUCKETS_S
    assert histogram.cumulative()[0] == (0.005, 1)
    assert histogram.cumulative()[-2:] == [(120, 2), (math.inf, 2)]
