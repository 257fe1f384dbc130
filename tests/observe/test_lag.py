"""The event loop's lag: a sleeper that says how late it woke, and the last minute's worst."""

from __future__ import annotations

import asyncio
import time

import pytest

from lyoncam_daemon.observe import metrics
from lyoncam_daemon.observe.lag import RecentMax, watch_loop
from lyoncam_daemon.observe.stats import Stats
from tests.observe.test_status import NO_DISK, value


def test_the_recent_max_keeps_the_worst_of_the_last_minute_then_forgets_it() -> None:
    recent = RecentMax(span_s=60.0, slots=6)
    assert recent.value(1000.0) == 0.0
    recent.observe(0.5, now=1000.0)
    recent.observe(2.0, now=1005.0)  # same 10 s slot: the larger stays
    recent.observe(0.1, now=1031.0)
    assert recent.value(1031.0) == 2.0
    assert recent.value(1049.0) == 2.0  # the slot of 1000-1010 s is within the last minute
    recent.observe(0.3, now=1062.0)  # the slot of 1060-1070 s takes 1000-1010's place
    assert recent.value(1062.0) == 0.3
    assert recent.value(1200.0) == 0.0  # nothing observed within a minute


async def test_a_held_loop_shows_as_lag_whatever_held_it() -> None:
    lags: list[float] = []
    woke = asyncio.Event()

    def observe(seconds: float) -> None:
        lags.append(seconds)
        woke.set()

    watcher = asyncio.create_task(watch_loop(observe, every=0.01))
    await woke.wait()  # the sleeper has woken once: now asleep, due in 10 ms
    woke.clear()
    time.sleep(0.2)  # the hold under test: nothing else runs meanwhile
    await woke.wait()
    watcher.cancel()
    # Due at most 10 ms after the hold began, woken only after it ended: a lower bound that
    # holds on any machine, however slow.
    assert lags[1] >= 0.19


def test_metrics_serve_the_loop_lag_since_the_start_and_the_last_minutes_worst() -> None:
    stats = Stats()
    now = time.monotonic()
    for seconds in (0.001, 0.003, 1.2):
        stats.loop_lagged(seconds, now)
    text = metrics.render(stats.snapshot(), NO_DISK, per_camera=False).decode()
    bucket = "lyoncam_daemon_loop_lag_seconds_bucket"
    assert [value(text, bucket, le=le) for le in ("0.01", "1.0", "1.5")] == [2, 2, 3]
    assert value(text, "lyoncam_daemon_loop_lag_seconds_count") == 3
    assert value(text, "lyoncam_daemon_loop_lag_max_seconds") == pytest.approx(1.2)
