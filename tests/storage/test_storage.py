"""The filesystem store and the frame layout: dated keys, atomic writes, sidecars, recovery."""

from __future__ import annotations

import errno
import json
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from lyoncam_daemon.storage import Frame, StoreError, encode_sidecar
from lyoncam_daemon.storage.filesystem import FilesystemStorage
from lyoncam_daemon.storage.layout import (
    day_prefix,
    frame_key,
    iso_utc,
    parse_frame_stem,
    utc_stamp,
)

T0 = datetime(2026, 11, 26, 0, 15, 3, 250000, tzinfo=UTC)


def save(store: FilesystemStorage, camera_id: str, moment: datetime, data: bytes,
         sidecar: dict[str, object]) -> Path:
    return store.path_of(store.write(Frame(camera_id, moment, data, sidecar)).key)


def test_path_layout_is_per_camera_dated_utc() -> None:
    local = T0.astimezone(__import__("datetime").timezone(timedelta(hours=1)))
    assert frame_key("CWL9018", local) == "CWL9018/2026/11/26/CWL9018_20261126T001503Z.jpg"
    assert frame_key("CWL9018", local, 2).endswith("/CWL9018_20261126T001503Z_2.jpg")
    assert iso_utc(local) == "2026-11-26T00:15:03.250Z"


@pytest.mark.parametrize("moment", [
    T0,
    datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),
    datetime(2027, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),  # UTC: the year before
])
def test_layout_names_are_those_of_strftime_in_utc(moment: datetime) -> None:
    m = moment.astimezone(UTC)
    assert utc_stamp(moment) == m.strftime("%Y%m%dT%H%M%SZ")
    assert day_prefix("CAM", moment) == m.strftime("CAM/%Y/%m/%d")
    assert frame_key("CAM", moment, 3) == m.strftime("CAM/%Y/%m/%d/CAM_%Y%m%dT%H%M%SZ_3.jpg")


def test_a_sidecar_is_one_sorted_line_of_utf8_json() -> None:
    sidecar = {"z": 1, "camera_name": "Pont Lafayette, Rhône", "a": [1.5, None],
               "m": {"b": 2, "a": 1}}
    raw = encode_sidecar(sidecar)
    assert b"\n" not in raw and "Rhône".encode() in raw  # UTF-8, not \u escapes
    assert json.loads(raw) == sidecar
    assert raw.index(b'"a"') < raw.index(b'"camera_name"') < raw.index(b'"m"') < raw.index(b'"z"')
    assert raw.index(b'"a": 1') < raw.index(b'"b": 2')  # nested keys sorted too


def test_frame_names_parse_back_to_camera_and_time() -> None:
    moment = T0.replace(microsecond=0)
    for cam in ("CWL9018", "CAM_A", "cam-2_b"):
        for n in (0, 3):
            stem = frame_key(cam, T0, n).rsplit("/", 1)[1].removesuffix(".jpg")
            assert parse_frame_stem(stem) == (cam, moment)
    assert parse_frame_stem("holiday_photo") is None
    assert parse_frame_stem("CAM_20261399T001503Z") is None  # month 13


def test_save_writes_bytes_as_given_and_a_sidecar(tmp_path: Path) -> None:
    store = FilesystemStorage(tmp_path)
    data = b"\xff\xd8\xff" + os.urandom(1000) + b"\xff\xd9"
    path = save(store, "CAM", T0, data, {"sha256": "x", "camera_id": "CAM"})
    assert path.read_bytes() == data
    raw = path.with_suffix(".json").read_bytes()
    meta = json.loads(raw)
    assert meta == {"sha256": "x", "camera_id": "CAM", "file": path.name}
    assert raw == encode_sidecar(meta)  # the one encoding every store and tool writes
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.stem + ".json"]


def test_same_second_gets_a_suffix_and_never_overwrites(tmp_path: Path) -> None:
    store = FilesystemStorage(tmp_path)
    a = save(store, "CAM", T0, b"one", {})
    b = save(store, "CAM", T0, b"two", {})
    c = save(store, "CAM", T0, b"three", {})
    assert (a.name, b.name, c.name) == (
        "CAM_20261126T001503Z.jpg", "CAM_20261126T001503Z_1.jpg", "CAM_20261126T001503Z_2.jpg")
    assert a.read_bytes() == b"one"


def test_latest_finds_the_newest_frame_across_days(tmp_path: Path) -> None:
    store = FilesystemStorage(tmp_path)
    assert store.find_latest("CAM") is None
    for i, day in enumerate([T0 - timedelta(days=40), T0 - timedelta(days=1), T0]):
        save(store, "CAM", day, f"frame{i}".encode(), {"n": i})
    save(store, "CAM", T0 - timedelta(hours=3), b"older same day", {"n": -1})
    found = store.find_latest("CAM")
    assert found is not None
    assert found.sidecar["n"] == 2 and store.path_of(found.key).read_bytes() == b"frame2"
    assert found.captured_at == T0.replace(microsecond=0) and found.size == len(b"frame2")


def test_latest_skips_an_unreadable_sidecar(tmp_path: Path) -> None:
    store = FilesystemStorage(tmp_path)
    save(store, "CAM", T0, b"good", {"n": 1})
    bad = save(store, "CAM", T0 + timedelta(seconds=60), b"bad", {"n": 2})
    bad.with_suffix(".json").write_text("{not json")
    found = store.find_latest("CAM")
    assert found is not None and found.sidecar["n"] == 1


def test_leftovers_of_a_killed_run_are_removed_on_recovery(tmp_path: Path) -> None:
    store = FilesystemStorage(tmp_path)
    yesterday = save(store, "CAM", T0 - timedelta(days=1), b"y", {"n": 0})
    path = save(store, "CAM", T0, b"x", {"n": 1})
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
    found = store.find_latest("CAM")
    assert found is not None and found.sidecar["n"] == 1


def test_a_crash_between_the_renames_cannot_cause_a_duplicate(tmp_path: Path) -> None:
    store = FilesystemStorage(tmp_path)
    save(store, "CAM", T0, b"first", {"n": 1})
    orphan = save(store, "CAM", T0 + timedelta(seconds=60), b"second", {"n": 2})
    orphan.with_suffix(".json").unlink()  # as if killed between the two renames
    store.remove_incomplete("CAM")
    found = store.find_latest("CAM")
    assert found is not None and found.sidecar["n"] == 1
    assert not orphan.exists()  # so "second" is stored again, with its sidecar, not twice


def test_a_failed_write_leaves_nothing_and_keeps_older_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FilesystemStorage(tmp_path)
    kept = save(store, "CAM", T0, b"kept", {"n": 1})
    real_write = os.write

    def full_disk(fd: int, data: bytes | memoryview) -> int:
        if bytes(data[:1]) == b"{":  # the sidecar: the JPEG is already written and renamed
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(StoreError) as info:
        save(store, "CAM", T0 + timedelta(seconds=60), b"lost", {"n": 2})
    msg = str(info.value)
    assert "CAM" in msg and "No space left on device" in msg and "\n" not in msg
    assert sorted(p.name for p in kept.parent.iterdir()) == [kept.name, kept.stem + ".json"]
    assert kept.read_bytes() == b"kept"


def test_unwritable_data_dir_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot write frame of CAM"):
        save(FilesystemStorage(blocker), "CAM", T0, b"x", {})


async def test_read_gives_a_stored_frame_back_and_a_missing_one_is_a_store_error(
        tmp_path: Path) -> None:
    store = FilesystemStorage(tmp_path)
    stored = await store.save(Frame("CAM", datetime(2026, 12, 6, tzinfo=UTC), b"\xff\xd8jpeg",
                                    {"sha256": "0" * 64}))
    assert await store.read(stored.key) == b"\xff\xd8jpeg"
    with pytest.raises(StoreError, match=r"CAM/nothing\.jpg"):
        await store.read("CAM/nothing.jpg")
