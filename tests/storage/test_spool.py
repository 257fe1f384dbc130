"""The spool's own logic, with a filesystem store standing in for the bucket."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from lyoncam_daemon.storage import Frame, StoredFrame, StoreError
from lyoncam_daemon.storage.filesystem import FilesystemStorage
from lyoncam_daemon.storage.spool import SpoolingStorage, SpoolStats
from tests.conftest import until

T0 = datetime(2026, 11, 26, 0, 15, 3, tzinfo=UTC)


class Flaky(FilesystemStorage):
    """A 'remote' store that refuses everything while `down`; `arrived` is the order it
    took frames in (the keys alone sort by time whatever the order of arrival)."""

    down = True

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.arrived: list[bytes] = []

    async def save(self, frame: Frame) -> StoredFrame:
        if self.down:
            raise StoreError("cannot store frame: connection refused")
        stored = await super().save(frame)
        self.arrived.append(frame.data)
        return stored


async def test_an_unreadable_spooled_frame_is_dropped_and_the_rest_still_upload(
    tmp_path: Path,
) -> None:
    remote = Flaky(tmp_path / "remote")
    stats = SpoolStats()
    spool = SpoolingStorage(remote, tmp_path / "spool", 10**9, stats)
    await spool.open()
    try:
        with structlog.testing.capture_logs() as logs:
            first = await spool.save(Frame("CAM", T0, b"one", {"n": 1}))
            await spool.save(Frame("CAM", T0 + timedelta(minutes=1), b"two", {"n": 2}))
            assert stats.frames == 2
            spool.local.path_of(first.key).unlink()  # the local disk lost it
            remote.down = False
            await until(lambda: stats.frames == 0, "the spool drained")
            third = await spool.save(Frame("CAM", T0 + timedelta(minutes=2), b"three", {}))
    finally:
        await spool.close()
    assert (stats.lost, stats.uploaded) == (1, 1)
    assert (remote.path_of(third.key)).read_bytes() == b"three"  # straight through again
    uploaded = sorted(p.read_bytes() for p in (tmp_path / "remote").rglob("*.jpg"))
    assert uploaded == [b"three", b"two"]
    events = [e["event"] for e in logs]
    assert "spooled frame unreadable; dropped" in events
    assert "object store back; spool drained" in events


async def test_frames_queue_behind_the_spool_and_arrive_in_order(tmp_path: Path) -> None:
    remote = Flaky(tmp_path / "remote")
    stats = SpoolStats()
    spool = SpoolingStorage(remote, tmp_path / "spool", 10**9, stats)
    await spool.open()
    try:
        for i in range(5):
            await spool.save(Frame("CAM", T0 + timedelta(minutes=i), f"f{i}".encode(), {}))
        remote.down = False
        # a new frame while frames are waiting goes behind them, not ahead
        await spool.save(Frame("CAM", T0 + timedelta(minutes=9), b"late", {}))
        await until(lambda: stats.frames == 0, "the spool drained")
    finally:
        await spool.close()
    # Uploaded in capture order, the late frame last: not merely all there in the end.
    assert remote.arrived == [b"f0", b"f1", b"f2", b"f3", b"f4", b"late"]
    keys = sorted(p.relative_to(tmp_path / "remote").as_posix()
                  for p in (tmp_path / "remote").rglob("*.jpg"))
    assert [(tmp_path / "remote" / k).read_bytes() for k in keys] == remote.arrived
    assert stats.uploaded == 6 and stats.bytes == 0


async def test_a_full_spool_refuses_frames_and_says_so_once(tmp_path: Path) -> None:
    stats = SpoolStats()
    spool = SpoolingStorage(Flaky(tmp_path / "remote"), tmp_path / "spool", 5, stats)
    await spool.open()
    try:
        with structlog.testing.capture_logs() as logs:
            await spool.save(Frame("CAM", T0, b"1234", {}))
            for i in range(3):
                try:
                    await spool.save(Frame("CAM", T0 + timedelta(minutes=i + 1), b"5678", {}))
                except StoreError as exc:
                    assert "the spool is full" in str(exc)
                else:
                    raise AssertionError("a full spool took a frame")
        await asyncio.sleep(0)
    finally:
        await spool.close()
    assert stats.refused == 3
    assert [e["event"] for e in logs].count(
        "spool full: frames are refused until uploads resume") == 1
