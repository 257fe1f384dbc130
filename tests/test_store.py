"""The frame store: dated paths, atomic writes, sidecars, recovery, write errors."""

from __future__ import annotations

import errno
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lyoncam_daemon.store import FrameStore, StoreError, frame_path, iso_utc

T0 = datetime(2026, 11, 26, 0, 15, 3, 250000, tzinfo=UTC)


def test_path_layout_is_per_camera_dated_utc() -> None:
    local = T0.astimezone(__import__("datetime").timezone(timedelta(hours=1)))
    assert frame_path(Path("/d"), "CWL9018", local) == Path(
        "/d/CWL9018/2026/11/26/CWL9018_20261126T001503Z.jpg")
    assert iso_utc(local) == "2026-11-26T00:15:03.250Z"


def test_save_writes_bytes_as_given_and_a_sidecar(tmp_path: Path) -> None:
    store = FrameStore(tmp_path)
    data = b"\xff\xd8\xff" + os.urandom(1000) + b"\xff\xd9"
    path = store.save("CAM", T0, data, {"sha256": "x", "camera_id": "CAM"})
    assert path.read_bytes() == data
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta == {"sha256": "x", "camera_id": "CAM", "file": path.name}
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.stem + ".json"]


def test_same_second_gets_a_suffix_and_never_overwrites(tmp_path: Path) -> None:
    store = FrameStore(tmp_path)
    a = store.save("CAM", T0, b"one", {})
    b = store.save("CAM", T0, b"two", {})
    c = store.save("CAM", T0, b"three", {})
    assert (a.name, b.name, c.name) == (
        "CAM_20261126T001503Z.jpg", "CAM_20261126T001503Z_1.jpg", "CAM_20261126T001503Z_2.jpg")
    assert a.read_bytes() == b"one"


def test_latest_finds_the_newest_frame_across_days(tmp_path: Path) -> None:
    store = FrameStore(tmp_path)
    assert store.latest("CAM") is None
    for i, day in enumerate([T0 - timedelta(days=40), T0 - timedelta(days=1), T0]):
        store.save("CAM", day, f"frame{i}".encode(), {"n": i})
    store.save("CAM", T0 - timedelta(hours=3), b"older same day", {"n": -1})
    found = store.latest("CAM")
    assert found is not None
    path, meta = found
    assert meta["n"] == 2 and path.read_bytes() == b"frame2"


def test_latest_skips_an_unreadable_sidecar(tmp_path: Path) -> None:
    store = FrameStore(tmp_path)
    store.save("CAM", T0, b"good", {"n": 1})
    bad = store.save("CAM", T0 + timedelta(seconds=60), b"bad", {"n": 2})
    bad.with_suffix(".json").write_text("{not json")
    found = store.latest("CAM")
    assert found is not None and found[1]["n"] == 1


def test_leftovers_of_a_killed_run_are_removed_on_recovery(tmp_path: Path) -> None:
    store = FrameStore(tmp_path)
    yesterday = store.save("CAM", T0 - timedelta(days=1), b"y", {"n": 0})
    path = store.save("CAM", T0, b"x", {"n": 1})
    leftovers = [
        path.parent / ".CAM_20261126T001603Z.jpg.tmp-dead",
        yesterday.parent / ".CAM_20261125T235959Z.json.tmp-beef",
        path.parent / "CAM_20261126T001703Z.jpg",  # renamed, killed before its sidecar
    ]
    for p in leftovers:
        p.write_bytes(b"partial")
    assert store.remove_incomplete("CAM") == 3
    assert not any(p.exists() for p in leftovers)
    assert path.exists() and yesterday.exists()
    found = store.latest("CAM")
    assert found is not None and found[1]["n"] == 1


def test_a_crash_between_the_renames_cannot_cause_a_duplicate(tmp_path: Path) -> None:
    store = FrameStore(tmp_path)
    store.save("CAM", T0, b"first", {"n": 1})
    orphan = store.save("CAM", T0 + timedelta(seconds=60), b"second", {"n": 2})
    orphan.with_suffix(".json").unlink()  # as if killed between the two renames
    store.remove_incomplete("CAM")
    found = store.latest("CAM")
    assert found is not None and found[1]["n"] == 1
    assert not orphan.exists()  # so "second" is stored again, with its sidecar, not twice


def test_a_failed_write_leaves_nothing_and_keeps_older_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FrameStore(tmp_path)
    kept = store.save("CAM", T0, b"kept", {"n": 1})
    real_write = os.write

    def full_disk(fd: int, data: bytes | memoryview) -> int:
        if bytes(data[:1]) == b"{":  # the sidecar: the JPEG is already written and renamed
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(StoreError) as info:
        store.save("CAM", T0 + timedelta(seconds=60), b"lost", {"n": 2})
    msg = str(info.value)
    assert "CAM" in msg and "No space left on device" in msg and "\n" not in msg
    assert sorted(p.name for p in kept.parent.iterdir()) == [kept.name, kept.stem + ".json"]
    assert kept.read_bytes() == b"kept"


def test_unwritable_data_dir_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot write frame of CAM"):
        FrameStore(blocker).save("CAM", T0, b"x", {})
