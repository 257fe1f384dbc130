"""Schedule arithmetic: fixed rate, no drift, skipped (not bunched) ticks, spread phases."""

from __future__ import annotations

import pytest

from lyoncam_daemon.capture.schedule import backoff_delay, next_due, phase


def test_fixed_rate_does_not_drift_after_a_slow_poll() -> None:
    # due at 100, the poll took 7 s: the next one is still due at 160, not 167.
    assert next_due(100.0, 60.0, 107.0) == 160.0


def test_missed_ticks_are_skipped_not_bunched() -> None:
    # a 150 s stall skips the ticks at 160 and 220; the next is 280, once.
    assert next_due(100.0, 60.0, 250.0) == 280.0


def test_next_due_is_always_in_the_future() -> None:
    assert next_due(100.0, 60.0, 160.0) == 220.0
    assert next_due(100.0, 60.0, 99.0) == 160.0


def test_phases_spread_cameras_over_one_interval() -> None:
    offsets = [phase(i, 15, 60.0) for i in range(15)]
    assert offsets[0] == 0.0
    assert offsets == sorted(set(offsets))
    assert max(offsets) < 60.0
    assert offsets[1] - offsets[0] == pytest.approx(4.0)


def test_backoff_doubles_up_to_the_cap_and_jitters_only_upwards() -> None:
    assert backoff_delay(1, 15, 300, 0.0) == 15
    assert backoff_delay(1, 15, 300, 0.999) == pytest.approx(18.75, abs=0.01)
    assert backoff_delay(3, 15, 300, 0.0) == 60
    assert backoff_delay(10, 15, 300, 0.0) == 300
    assert backoff_delay(1000, 15, 300, 1.0) == 375
    assert backoff_delay(0, 15, 300, 0.5) == 0
