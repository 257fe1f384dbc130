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
    stats.set_state("B", State.FAILING)
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
    stats.set_condition("A", Condition.WRITE_FAILING)
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


def test_the_running_figures_follow_every_change_and_removal() -> None:
    """What /healthz and the status page read without walking the cameras."""
    stats = Stats()
    for cid in ("A", "B", "C"):
        stats.camera(cid)
    assert stats.states == {State.STARTING: 3}
    assert stats.problems == {"A": 3, "B": 3, "C": 3}  # starting: severity 3
    stats.set_state("A", State.OK)
    stats.set_state("B", State.OK)
    stats.set_condition("B", Condition.STALE)
    stats.set_state("C", State.DOWN)
    assert +stats.states == {State.OK: 2, State.DOWN: 1}
    assert stats.problems == {"B": 2, "C": 0}
    stats.set_condition("B", Condition.NORMAL)
    stats.remove("C")
    assert +stats.states == {State.OK: 2} and stats.problems == {}
    assert stats.ordered_ids() == ["A", "B"]


def test_daemon_wide_counts_keep_a_removed_cameras_polls() -> None:
    stats = Stats()
    for cid in ("A", "GONE"):
        stats.polled(stats.camera(cid))
    stats.counted(stats.camera("GONE"), "stored")
    stats.failed(stats.camera("GONE"), "timeout")
    stats.remove("GONE")
    every = stats.snapshot(cameras=False).every
    assert (every.polls, every.outcomes["stored"], every.errors["timeout"]) == (2, 1, 1)


def test_fresh_cameras_are_counted_as_they_store_and_expire_with_their_horizon() -> None:
    stats = Stats()
    stats.stored("A", "t", when_unix=1000.0, horizon_s=10.0)
    stats.stored("B", "t", when_unix=1000.0, horizon_s=100.0)
    assert stats.fresh.count(1005.0) == 2
    assert stats.fresh.count(1011.0) == 1  # A's horizon is over
    stats.stored("A", "t", when_unix=1020.0, horizon_s=10.0)
    assert stats.fresh.count(1025.0) == 2
    stats.remove("B")
    assert stats.fresh.count(1026.0) == 1
    assert stats.fresh.count(1031.0) == 0
    assert stats.camera("A").last_stored_at == "t"
