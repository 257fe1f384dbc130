"""When to poll next: pure arithmetic on monotonic seconds, so it is tested without a clock."""

from __future__ import annotations

import math


def next_due(prev_due: float, interval: float, now: float) -> float:
    """The first tick of the fixed-rate grid `prev_due + k * interval` that lies after `now`.

    Anchoring on the previous *due* time, not on when the poll finished, keeps a slow
    request from making the schedule drift; ticks missed while a request was slow are
    skipped, never bunched into a burst.
    """
    if interval <= 0:
        raise ValueError("interval must be positive")
    k = max(1, math.floor((now - prev_due) / interval) + 1)
    return prev_due + k * interval


def phase(index: int, count: int, interval: float) -> float:
    """Start offset of camera `index` of `count`, spread evenly over one interval.

    N cameras then never fire in the same second, which spares the camera server a burst
    and keeps the decode pool evenly loaded.
    """
    if count <= 0:
        return 0.0
    return (index % count) * interval / count


#: Share of the nominal delay added at random.
JITTER = 0.25


def backoff_delay(failures: int, initial: float, maximum: float, jitter: float) -> float:
    """Capped exponential backoff, jittered upwards only.

    `failures` counts consecutive failures (1 for the first); `jitter` is a number in
    [0, 1) from the caller's random source. Up to 25 % is added at random, so retries of
    cameras that failed together (one server outage) spread out, while a retry never
    comes sooner than the nominal delay: `initial` keeps the polling floor.
    """
    if failures < 1:
        return 0.0
    nominal = min(maximum, initial * 2.0 ** min(failures - 1, 60))
    return nominal * (1.0 + JITTER * jitter)
