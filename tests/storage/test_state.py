"""The daemon's own folder: one daemon per data_dir, leftovers of a killed run, the pid."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lyoncam_daemon.storage.state import StateDir, StateError, encode_camera, encode_record


def test_the_lock_names_its_holder_and_is_emptied_on_release(tmp_path: Path) -> None:
    first = StateDir(tmp_path)
    first.acquire()
    assert (tmp_path / ".lyoncam" / "lock").read_text() == f"{os.getpid()}\n"
    with pytest.raises(StateError, match=rf"another lyoncam daemon \(pid {os.getpid()}\)"):
        StateDir(tmp_path).acquire()
    assert (tmp_path / ".lyoncam" / "lock").read_text() == f"{os.getpid()}\n"
    first.release()
    # a stopped daemon's pid would send someone looking for a process that is gone
    assert (tmp_path / ".lyoncam" / "lock").read_text() == ""
    second = StateDir(tmp_path)
    second.acquire()
    second.release()


def test_temp_files_of_a_killed_run_are_removed_and_health_kept(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.acquire()
    state.write_health({"pid": 1})
    leftovers = [state.path / ".health.json.tmp-dead", state.path / ".health.json.tmp-beef"]
    for p in leftovers:
        p.write_text("{half")
    assert state.remove_leftovers() == 2
    assert not any(p.exists() for p in leftovers)
    assert json.loads(state.health_path.read_text()) == {"pid": 1}
    state.release()


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StateError) as info:
        StateDir(blocker / "data").acquire()
    assert str(info.value) == f"data_dir {blocker / 'data'}: Not a directory"


def test_the_health_record_is_encoded_as_json_dumps_would_camera_by_camera() -> None:
    """Each camera on its own (the GIL is handed back between them), the same bytes."""
    record: dict[str, object] = {
        "pid": 7, "heartbeat": "2026-12-06T03:00:00Z", "stopping": False, "status_url": None,
        "totals": {"cameras": 2, "outcomes": {"stored": 3}},
        "cameras": {"A": {"polls": 2, "last": 0.25, "name": 'quai \"Perrache\" \u00e9 \\ /'},
                    "B": {"polls": 1, "outcomes": {}, "lateness_s": {"last": None}}},
        "after": [1, 2.5, "x"],
    }
    assert encode_record(record) == json.dumps(record).encode()
    for empty in ({**record, "cameras": {}}, {"pid": 1}, {}):
        assert encode_record(empty) == json.dumps(empty).encode()
    cameras = record.pop("cameras")
    assert isinstance(cameras, dict)
    entries = [encode_camera(cid, cam) for cid, cam in cameras.items()]
    assert json.loads(encode_record(record, entries)) == {**record, "cameras": cameras}
