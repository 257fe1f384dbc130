"""Token bucket arithmetic with an injected clock and sleep: no real waiting."""

from __future__ import annotations

import pytest

from lyoncam_daemon.labelstudio.ratelimit import TokenBucket


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_rate_is_enforced_over_many_requests() -> None:
    t = FakeTime()
    bucket = TokenBucket(4.0, 1, clock=t.clock, sleep=t.sleep)
    start = t.now
    for _ in range(41):
        await bucket.acquire()
    assert t.now - start == pytest.approx(10.0)  # 40 intervals of 0.25 s


async def test_burst_then_steady() -> None:
    t = FakeTime()
    bucket = TokenBucket(2.0, 3, clock=t.clock, sleep=t.sleep)
    for _ in range(3):
        await bucket.acquire()
    assert t.slept == []
    await bucket.acquire()
    assert t.slept == [pytest.approx(0.5)]


def test_concurrent_reservations_queue_in_order() -> None:
    t = FakeTime()
    bucket = TokenBucket(10.0, 1, clock=t.clock, sleep=t.sleep)
    waits = [bucket.reserve() for _ in range(5)]  # five callers at the same instant
    assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_idle_time_refills_up_to_burst_only() -> None:
    t = FakeTime()
    bucket = TokenBucket(1.0, 2, clock=t.clock, sleep=t.sleep)
    t.now += 3600
    assert [bucket.reserve() for _ in range(3)] == pytest.approx([0.0, 0.0, 1.0])


def test_unlimited_and_validation() -> None:
    assert TokenBucket(None).reserve() == 0.0
    with pytest.raises(ValueError):
        TokenBucket(0)
    with pytest.raises(ValueError):
        TokenBucket(1.0, 0.5)
