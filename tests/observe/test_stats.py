"""The stats snapshot: one consistent copy feeds the summary and health.json."""

from __future__ import annotations

import dataclasses
import json

import pytest

from lyoncam_daemon.observe import stats as stats_module
from lyoncam_daemon.observe.stats import CameraStats, Condition, State, Stats, Timing
from lyoncam_daemon.storage.spool import SpoolStats


def test_totals_add_up_over_cameras() -> None:
    stats = Stats()
    stats.camera("A").outcomes.update({"stored": 2, "unchanged": 1})
    stats.camera("B").outcomes.update({"stored": 1})
    stats.camera("B").errors["timeout"] += 1
    stats.camera("B").state = State.FAILING
    totals = stats.snapshot().totals()
    assert totals["stored"] == 3 and totals["cameras"] == 2
    assert totals["errors"] == {"timeout": 1}
    assert totals["states"] == {"starting": 1, "failing": 1}


def test_a_snapshot_does_not_move_when_counting_goes_on() -> None:
    stats = Stats()
    stats.camera("A").polls = 5
    stats.camera("A").fetch_s.observe(0.25)
    snap = stats.snapshot()
    stats.camera("A").polls += 1
    stats.camera("A").fetch_s.observe(1.0)
    stats.camera("B")
    assert snap.cameras["A"].polls == 5 and snap.cameras["A"].fetch_s.count == 1
    assert set(snap.cameras) == {"A"}


def test_the_health_record_is_plain_json_with_enum_values() -> None:
    stats = Stats()
    cam = stats.camera("A")
    cam.condition = Condition.WRITE_FAILING
    cam.lateness_s.observe(0.5)
    stats.storage_error = "cannot write frame of A under /d: No space left on device"
    record = json.loads(json.dumps(stats.snapshot().as_dict()))
    assert record["cameras"]["A"]["condition"] == "write_failing"
    assert record["cameras"]["A"]["state"] == "starting"
    assert record["cameras"]["A"]["lateness_s"] == {"count": 1, "total": 0.5, "max": 0.5,
                                                   "last": 0.5}
    assert record["storage"] == {"ok": False, "error": stats.storage_error}


def test_a_removed_camera_leaves_the_reports() -> None:
    stats = Stats()
    stats.camera("A")
    stats.camera("GONE").polls = 3
    stats.remove("GONE")
    assert set(stats.snapshot().cameras) == {"A"}
    assert stats.snapshot().totals()["polls"] == 0


def _observe_every_timing(cam: CameraStats, seconds: float) -> None:
    for f in dataclasses.fields(cam):
        timing = getattr(cam, f.name)
        if isinstance(timing, Timing):
            timing.observe(seconds)


def test_a_camera_copy_shares_no_counter_or_bucket_with_its_original() -> None:
    cam = CameraStats(polls=2)
    cam.outcomes["stored"], cam.errors["timeout"] = 1, 1
    _observe_every_timing(cam, 0.2)
    copied = cam.copy()
    assert copied == cam
    before = dataclasses.asdict(cam)  # asdict copies deeply: a reference to compare with
    copied.outcomes["stored"] += 1
    copied.errors["http"] += 1
    _observe_every_timing(copied, 1.2)
    assert dataclasses.asdict(cam) == before
    after = dataclasses.asdict(copied)
    cam.outcomes["unchanged"] += 1
    cam.errors["timeout"] += 1
    _observe_every_timing(cam, 7.0)
    assert dataclasses.asdict(copied) == after


def test_a_snapshot_keeps_the_daemon_wide_timings_and_spool_of_its_moment() -> None:
    stats = Stats(spool=SpoolStats(frames=2, bytes=100))
    stats.fetch_s.observe(0.3)
    stats.lateness_s.observe(1.8)
    snap = stats.snapshot()
    stats.fetch_s.observe(0.3)
    stats.lateness_s.observe(1.8)
    stats.spool.frames, stats.spool.bytes = 3, 150
    assert (snap.fetch_s.count, sum(snap.fetch_s.buckets)) == (1, 1)
    assert (snap.lateness_s.count, sum(snap.lateness_s.buckets)) == (1, 1)
    assert snap.spool == SpoolStats(frames=2, bytes=100)


def test_looking_a_camera_up_builds_its_stats_once(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[CameraStats] = []

    def counting() -> CameraStats:
        built.append(CameraStats())
        return built[-1]

    monkeypatch.setattr(stats_module, "CameraStats", counting)
    stats = Stats()
    first = stats.camera("A")
    assert stats.camera("A") is first and stats.camera("A") is first
    assert len(built) == 1  # no CameraStats built and thrown away per lookup
