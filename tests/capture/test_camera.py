"""The per-camera pieces that need no network: health transitions, the sidecar, the stop."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from lyoncam_daemon.capture.camera import Reachability, StopSignal, build_sidecar
from lyoncam_daemon.capture.fetch import Fetched
from lyoncam_daemon.config import parse_config
from lyoncam_daemon.frames.fingerprint import Fingerprint
from lyoncam_daemon.frames.judge import Outcome, Verdict
from lyoncam_daemon.observe.stats import State


def test_health_goes_failing_then_down_and_reports_only_changes() -> None:
    h = Reachability()
    assert h.succeeded() is State.STARTING
    assert h.succeeded() is None
    assert h.failed(now=100.0, down_after=60) is State.OK and h.state is State.FAILING
    assert h.failed(now=130.0, down_after=60) is None and h.failures == 2
    assert h.failed(now=161.0, down_after=60) is State.FAILING and h.state is State.DOWN
    assert h.failed(now=900.0, down_after=60) is None and h.state is State.DOWN
    assert h.succeeded() is State.DOWN and h.state is State.OK and h.failures == 0
    # a new failure streak counts from its own start
    assert h.failed(now=1000.0, down_after=60) is State.OK and h.state is State.FAILING


def test_a_failing_camera_is_down_at_down_after_without_another_poll() -> None:
    h = Reachability()
    h.failed(now=100.0, down_after=60)
    assert h.down_at(60) == 160.0
    assert not h.expire(159.9, 60) and h.state is State.FAILING
    assert h.expire(160.0, 60) and h.state is State.DOWN
    assert h.down_at(60) is None  # already down: nothing more to wait for


def test_sidecar_holds_what_the_dataset_tools_need() -> None:
    cam = parse_config(
        "cameras:\n  - id: CWL9018\n    url: https://x/CWL9018.JPG\n    name: Pont\n"
        "    lat: 45.77\n    lon: 4.81\n"
    ).cameras[0]
    fetched = Fetched(200, b"\xff\xd8\xff" + b"x" * 97, '"e1"', None, "image/jpeg", 0.1234)
    fp = Fingerprint("phash", 16, "ab" * 32)
    verdict = Verdict(Outcome.STORED, "c" * 64, 1920, 1080, fp, 40, False, "2026-11-26T01:15:03")
    side = build_sidecar(cam, fetched, verdict, datetime(2026, 11, 26, 0, 15, 3, tzinfo=UTC))
    assert side["camera_id"] == "CWL9018" and side["camera_name"] == "Pont"
    assert side["captured_at"] == "2026-11-26T00:15:03.000Z"
    assert side["bytes"] == 100 and side["sha256"] == "c" * 64
    assert (side["width"], side["height"]) == (1920, 1080)
    assert side["etag"] == '"e1"' and side["last_modified"] is None
    assert side["exif_datetime"] == "2026-11-26T01:15:03"
    assert side["fingerprint"] == fp.to_json() and side["distance"] == 40
    assert side["truncated"] is False and side["fetch_ms"] == 123.4
    assert (side["lat"], side["lon"]) == (45.77, 4.81)


async def test_a_stop_signal_times_out_unset_and_wakes_its_waiter_when_set() -> None:
    stop = StopSignal()
    assert await stop.wait(0.01) is False and not stop.is_set()
    waiter = asyncio.create_task(stop.wait(3600))
    await asyncio.sleep(0)  # the waiter is now waiting on its hour
    assert not waiter.done()
    stop.set()
    # woken by set(), not by its deadline: the bound only keeps a broken signal from hanging
    assert await asyncio.wait_for(waiter, timeout=10) is True
    assert stop.is_set()


def test_waiting_on_a_set_stop_signal_returns_without_suspending() -> None:
    stop = StopSignal()
    stop.set()
    # Driven by hand, outside any event loop: a coroutine that suspended would need one.
    with pytest.raises(StopIteration) as done:
        stop.wait(3600).send(None)
    assert done.value.value is True
