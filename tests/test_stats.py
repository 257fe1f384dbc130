"""The stats snapshot: one consistent copy feeds the summary and health.json."""

from __future__ import annotations

import json

from lyoncam_daemon.stats import Condition, State, Stats


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
