"""Retention and the free-space guard: the pure policy, the pass on disk, a real small disk."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import structlog

from lyoncam_daemon.capture.daemon import Daemon
from lyoncam_daemon.config import RetentionSettings
from lyoncam_daemon.devtools.simulator import CriterSimulator, camera_ids
from lyoncam_daemon.storage import Frame, Storage, StoredFrame
from lyoncam_daemon.storage.atomic import TMP_MARK
from lyoncam_daemon.storage.filesystem import FilesystemStorage
from lyoncam_daemon.storage.retention import (
    Day,
    FrameFile,
    FreeSpaceGuard,
    RetentionPass,
    StoragePaused,
    plan_days,
    plan_frames,
)
from tests.conftest import make_config, stored_frames

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def policy(**kw: object) -> RetentionSettings:
    return RetentionSettings.model_validate(kw)


def day(camera: str, d: date, size: int = 100) -> Day:
    return Day(camera, d, Path(f"/x/{camera}/{d}"), size)


# -- the policy -----------------------------------------------------------------------------


def test_days_older_than_max_age_go_oldest_first_but_never_a_cameras_newest_day() -> None:
    days = [day("A", date(2026, 11, d)) for d in (20, 22, 24, 25, 26)]
    days += [day("B", date(2026, 11, 1))]  # B stopped long ago: its only day is its newest
    doomed, excess = plan_days(days, NOW, policy(max_age_days=2))
    # a day goes when all of it is older than 2 days before 26 Nov 12:00: up to the 23rd
    assert [d.day.day for d in doomed] == [20, 22]
    assert excess == 0


def test_days_go_while_over_max_bytes_across_cameras_oldest_first() -> None:
    days = [day("A", date(2026, 11, d), 100) for d in (1, 3, 5)]
    days += [day("B", date(2026, 11, d), 100) for d in (2, 4)]
    doomed, excess = plan_days(days, NOW, policy(max_bytes=250))
    assert [(d.camera, d.day.day) for d in doomed] == [("A", 1), ("B", 2), ("A", 3)]
    assert excess == 0
    # only the two newest days are left and they alone are over: the rest is for plan_frames
    doomed, excess = plan_days(days, NOW, policy(max_bytes=150))
    assert len(doomed) == 3 and excess == 50


def test_nothing_goes_without_limits() -> None:
    days = [day("A", date(2020, 1, 1)), day("A", date(2026, 11, 26))]
    assert plan_days(days, NOW, policy()) == ([], 0)


def test_frames_of_the_newest_days_go_oldest_first_except_each_cameras_newest() -> None:
    t = NOW - timedelta(hours=5)
    frames = [FrameFile("A", t + timedelta(minutes=m), Path(f"a{m}"), 10) for m in range(5)]
    frames += [FrameFile("B", t - timedelta(days=30), Path("b0"), 10),
               FrameFile("B", t - timedelta(days=29), Path("b1"), 10)]
    doomed = plan_frames(frames, NOW, policy(max_bytes=1), excess=25)
    assert [f.jpg.name for f in doomed] == ["b0", "a0", "a1"]  # 30 bytes cover the 25
    doomed = plan_frames(frames, NOW, policy(max_age_days=7), excess=0)
    assert [f.jpg.name for f in doomed] == ["b0"]  # b1 is B's newest: kept however old
    doomed = plan_frames(frames, NOW, policy(max_bytes=1), excess=10**9)
    assert {f.jpg.name for f in doomed} == {"b0", "a0", "a1", "a2", "a3"}


# -- the pass on disk ------------------------------------------------------------------------


def put(store: FilesystemStorage, camera: str, when: datetime, size: int = 1000) -> Path:
    stored = store.write(Frame(camera, when, b"\xff\xd8" + b"x" * (size - 2), {"n": 1}))
    return store.path_of(stored.key)


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_a_pass_deletes_old_whole_days_and_their_empty_folders(tmp_path: Path) -> None:
    store = FilesystemStorage(tmp_path)
    old = [put(store, "CAM_A", datetime(2026, 10, 30, h, tzinfo=UTC)) for h in range(3)]
    keep = [put(store, "CAM_A", datetime(2026, 11, 25, 8, tzinfo=UTC)),
            put(store, "CAM_A", datetime(2026, 11, 26, 9, tzinfo=UTC)),
            put(store, "CAM_B", datetime(2026, 9, 1, 9, tzinfo=UTC))]  # B's newest: kept
    (tmp_path / ".lyoncam").mkdir()
    (tmp_path / ".lyoncam" / "health.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    tmp = old[0].parent / f".{old[0].name}{TMP_MARK}dead"
    tmp.write_bytes(b"half")
    old_bytes = sum(p.stat().st_size + p.with_suffix(".json").stat().st_size for p in old) + 4

    result = RetentionPass(tmp_path, policy(max_age_days=7), clock=lambda: NOW).run()

    assert (result.days, result.frames) == (1, 3)
    assert result.freed_bytes == old_bytes
    assert not (tmp_path / "CAM_A" / "2026" / "10").exists()  # emptied month removed
    assert (tmp_path / "CAM_A" / "2026").is_dir()
    left = files_under(tmp_path)
    for jpg in keep:
        assert jpg.relative_to(tmp_path).as_posix() in left
        assert jpg.with_suffix(".json").exists()
    assert {".lyoncam/health.json", "notes.txt"} <= left


def test_max_bytes_trims_the_newest_day_frame_by_frame_but_keeps_the_newest_frame(
    tmp_path: Path,
) -> None:
    store = FilesystemStorage(tmp_path)
    frames = [put(store, "CAM_A", NOW - timedelta(minutes=10 - m), 10_000) for m in range(10)]
    result = RetentionPass(tmp_path, policy(max_bytes=35_000), clock=lambda: NOW).run()
    left = stored_frames(tmp_path, "CAM_A")
    assert left == frames[-3:]  # three frames (and their sidecars) fit in 35,000 bytes
    assert result.frames == 7 and result.days == 0
    for jpg in left:
        assert jpg.with_suffix(".json").exists()
    # the newest frame stays even when it alone is over the limit
    RetentionPass(tmp_path, policy(max_bytes=1), clock=lambda: NOW).run()
    assert stored_frames(tmp_path, "CAM_A") == frames[-1:]


def test_a_cancelled_pass_stops_between_frames_and_leaves_whole_frames(tmp_path: Path) -> None:
    store = FilesystemStorage(tmp_path)
    for h in range(6):
        put(store, "CAM_A", datetime(2026, 10, 1 + h, tzinfo=UTC))
    put(store, "CAM_A", NOW)
    retention = RetentionPass(tmp_path, policy(max_age_days=1), clock=lambda: NOW)
    retention.cancel.set()
    assert retention.run().frames == 0
    for jpg in stored_frames(tmp_path, "CAM_A"):
        assert jpg.with_suffix(".json").exists()


# -- the free-space guard --------------------------------------------------------------------


class FakeDisk:
    def __init__(self, free: int) -> None:
        self.free = free
        self.reads = 0

    def __call__(self, path: Path) -> int:
        self.reads += 1
        return self.free


async def test_the_guard_pauses_below_min_free_logs_once_and_resumes_by_itself(
    tmp_path: Path,
) -> None:
    disk = FakeDisk(10_000)
    ticks = iter(range(1000))
    guard = FreeSpaceGuard(FilesystemStorage(tmp_path), tmp_path, 5_000, free=disk,
                           clock=lambda: float(next(ticks)))
    frame = Frame("CAM_A", NOW, b"x" * 4_000, {})
    assert (await guard.save(frame)).size == 4_000  # 10,000 - 4,000 >= 5,000
    disk.free = 8_000
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            with pytest.raises(StoragePaused, match=r"below retention\.min_free_bytes"):
                await guard.save(frame)
        assert guard.paused and guard.paused_frames == 3
        disk.free = 50_000
        await guard.save(frame)
    assert not guard.paused
    assert [e["event"] for e in logs] == ["storing paused: disk almost full", "storing resumed"]
    assert len(stored_frames(tmp_path, "CAM_A")) == 2


async def test_the_guard_reads_free_space_at_most_once_a_second(tmp_path: Path) -> None:
    disk = FakeDisk(10**9)
    now = [0.0]
    guard = FreeSpaceGuard(FilesystemStorage(tmp_path), tmp_path, 0, free=disk,
                           clock=lambda: now[0])
    for i in range(5):
        await guard.save(Frame("CAM_A", NOW + timedelta(seconds=i), b"x", {}))
    assert disk.reads == 1
    now[0] = 1.0
    guard.free_bytes()
    assert disk.reads == 2


# -- a real small disk -----------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 12 MB tmpfs (we are root in CI); fails loudly if it cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def whole_frames_only(data_dir: Path, camera: str) -> int:
    """Every stored JPEG has its sidecar and the sidecar's SHA-256; no temp file anywhere."""
    assert not [p for p in data_dir.rglob(f"*{TMP_MARK}*")], "temp files left"
    frames = stored_frames(data_dir, camera)
    for jpg in frames:
        meta = json.loads(jpg.with_suffix(".json").read_text())
        assert hashlib.sha256(jpg.read_bytes()).hexdigest() == meta["sha256"]
    return len(frames)


async def test_on_a_full_disk_storing_pauses_and_resumes_when_space_returns(
    small_disk: Path,
) -> None:
    ids = camera_ids(2)
    async with CriterSimulator(ids, period=0.15) as sim:
        config = make_config(small_disk, {i: sim.url(i) for i in ids}, interval=0.1,
                             extra="retention:\n  min_free_bytes: 6MB",
                             status="status:\n  port: 0")
        daemon = Daemon(config)
        task = asyncio.create_task(daemon.run())
        with structlog.testing.capture_logs() as logs:
            for _ in range(1000):
                if daemon.guard is not None and daemon.guard.paused_frames >= 4:
                    break
                await asyncio.sleep(0.02)
            assert daemon.guard is not None and daemon.guard.paused
            stored = sum(whole_frames_only(small_disk, i) for i in ids)
            assert stored >= 5  # 12 MB - 6 MB reserve holds ~20 frames of ~290 KB
            free = shutil.disk_usage(small_disk).free
            assert free >= 6_000_000 - 1  # the reserve was never eaten into
            assert daemon.status is not None
            status, health = await _get_json(daemon.status.port, "/healthz")
            assert status == 503 and health["storage_paused"] is True
            assert health["reasons"] == [
                "storing paused: free space below retention.min_free_bytes"]
            # space returns: delete this camera's older frames by hand
            for jpg in stored_frames(small_disk, ids[0])[:-1]:
                jpg.with_suffix(".json").unlink()
                jpg.unlink()
            for _ in range(1000):
                if daemon.guard is not None and not daemon.guard.paused:
                    break
                await asyncio.sleep(0.02)
            assert not daemon.guard.paused
        daemon.request_stop()
        assert await asyncio.wait_for(task, timeout=15) == 0
    events = [e["event"] for e in logs]
    assert events.count("storing paused: disk almost full") == 1
    assert events.count("storing resumed") == 1
    for cam in ids:
        whole_frames_only(small_disk, cam)
    assert sum(daemon.stats.cameras[i].write_errors for i in ids) >= 4


async def _get_json(port: int, path: str) -> tuple[int, dict[str, object]]:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as r:
        return r.status, await r.json()


async def fill_until_refused(small_disk: Path, storage: Storage | None = None) -> Daemon:
    """One camera storing onto the small disk until a frame is refused; then stop."""
    ids = camera_ids(1)
    async with CriterSimulator(ids, period=0.1) as sim:
        config = make_config(small_disk, {ids[0]: sim.url(ids[0])}, interval=0.06,
                             extra="retention:\n  min_free_bytes: 0")
        daemon = Daemon(config, storage=storage)
        task = asyncio.create_task(daemon.run())
        for _ in range(1500):
            if daemon.stats.cameras.get(ids[0]) and daemon.stats.cameras[ids[0]].write_errors:
                break
            await asyncio.sleep(0.02)
        daemon.request_stop()
        assert await asyncio.wait_for(task, timeout=15) == 0
    cam = daemon.stats.cameras[ids[0]]
    assert cam.write_errors >= 1 and cam.condition == "write_failing"
    assert whole_frames_only(small_disk, ids[0]) >= 10
    return daemon


class Unguarded:
    """The filesystem store under another type, so the daemon adds no free-space guard."""

    def __init__(self, data_dir: Path) -> None:
        self.inner = FilesystemStorage(data_dir)

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def save(self, frame: Frame) -> StoredFrame:
        return await self.inner.save(frame)

    async def latest(self, camera_id: str) -> StoredFrame | None:
        return await self.inner.latest(camera_id)

    async def recover(self, camera_id: str) -> int:
        return await self.inner.recover(camera_id)

    async def read(self, key: str) -> bytes:
        return await self.inner.read(key)


async def test_enospc_leaves_nothing_half_written(small_disk: Path) -> None:
    """The store alone (no guard): the disk really fills and writes fail with ENOSPC."""
    daemon = await fill_until_refused(small_disk, storage=Unguarded(small_disk))
    assert daemon.guard is None
    assert "No space left on device" in (daemon.stats.storage_error or "")


async def test_without_a_reserve_a_frame_that_does_not_fit_is_refused_before_writing(
    small_disk: Path,
) -> None:
    """`min_free_bytes: 0`: the guard still refuses a frame larger than the free space."""
    daemon = await fill_until_refused(small_disk)
    assert daemon.guard is not None and daemon.guard.paused_frames >= 1
    assert "below retention.min_free_bytes" in (daemon.stats.storage_error or "")


async def test_the_daemon_runs_a_retention_pass_at_start_and_logs_it_once(
    tmp_path: Path,
) -> None:
    store = FilesystemStorage(tmp_path)
    old = datetime.now(UTC) - timedelta(days=30)
    for h in range(4):
        put(store, "SIM001", old + timedelta(hours=h))
    # Frames of today and yesterday: the start-up recovery of interrupted writes looks at
    # the two newest day folders only, so it stays out of the folder retention deletes.
    put(store, "SIM001", datetime.now(UTC) - timedelta(days=1))
    put(store, "SIM001", datetime.now(UTC) - timedelta(seconds=5))
    ids = camera_ids(1)
    async with CriterSimulator(ids, period=0.3) as sim:
        config = make_config(tmp_path, {ids[0]: sim.url(ids[0])}, interval=0.2,
                             extra="retention:\n  max_age_days: 7\n  interval: 3600")
        with structlog.testing.capture_logs() as logs:
            daemon = Daemon(config)
            task = asyncio.create_task(daemon.run())
            for _ in range(500):
                if any(e["event"] == "retention pass" for e in logs):
                    break
                await asyncio.sleep(0.02)
            daemon.request_stop()
            assert await asyncio.wait_for(task, timeout=15) == 0
    passes = [e for e in logs if e["event"] == "retention pass"]
    assert len(passes) == 1
    assert passes[0]["frames"] == 4 and passes[0]["days"] >= 1
    assert passes[0]["freed_bytes"] > 4000
    assert not (tmp_path / "SIM001" / f"{old:%Y}" / f"{old:%m}" / f"{old:%d}").exists()



async def test_a_reloaded_retention_section_takes_effect(tmp_path: Path) -> None:
    store = FilesystemStorage(tmp_path)
    put(store, "SIM001", datetime.now(UTC) - timedelta(days=30))
    put(store, "SIM001", datetime.now(UTC) - timedelta(days=1))  # the newest: kept
    ids = camera_ids(1)
    async with CriterSimulator(ids, period=0.3) as sim:
        config = make_config(tmp_path, {ids[0]: sim.url(ids[0])}, interval=0.2)
        with structlog.testing.capture_logs() as logs:
            daemon = Daemon(config)
            task = asyncio.create_task(daemon.run())
            for _ in range(500):
                if daemon.registry is not None:
                    break
                await asyncio.sleep(0.02)
            assert daemon.guard is not None and daemon.guard.min_free_bytes == 10**9
            retention = config.retention.model_copy(
                update={"max_age_days": 7.0, "min_free_bytes": 5})
            daemon.config = config.model_copy(update={"retention": retention})
            daemon.monitoring_reloaded()
            assert daemon.guard.min_free_bytes == 5
            for _ in range(500):
                if any(e["event"] == "retention pass" for e in logs):
                    break
                await asyncio.sleep(0.02)
            daemon.request_stop()
            assert await asyncio.wait_for(task, timeout=15) == 0
    assert [e["frames"] for e in logs if e["event"] == "retention pass"] == [1]


# -- symlinks: nothing outside data_dir is ever followed or deleted --------------------------


def test_retention_and_repair_never_follow_a_symlink_out_of_data_dir(tmp_path: Path) -> None:
    data, outside = tmp_path / "data", tmp_path / "outside"
    elsewhere = FilesystemStorage(outside)
    # A camera folder linked to another tree of old frames, and one day folder of a real
    # camera linked to someone else's old day; both hold frame-named files.
    for h in range(6):
        put(elsewhere, "EVIL", datetime(2026, 10, 1 + h, tzinfo=UTC))
    put(elsewhere, "GOOD", datetime(2026, 10, 20, 9, tzinfo=UTC))
    today = put(elsewhere, "GOOD", NOW - timedelta(hours=1))  # an "orphan" JPEG outside
    today.with_suffix(".json").unlink()
    store = FilesystemStorage(data)
    put(store, "GOOD", NOW)
    data.joinpath("EVIL").symlink_to(outside / "EVIL")
    data.joinpath("GOOD/2026/10").mkdir(parents=True)
    data.joinpath("GOOD/2026/10/20").symlink_to(outside / "GOOD/2026/10/20")
    data.joinpath("GOOD/2026/11/25").symlink_to(today.parent)  # yesterday: repair looks there
    before = files_under(outside)

    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            RetentionPass(data, policy(max_age_days=1), clock=lambda: NOW).run()
        for camera in ("EVIL", "GOOD"):
            store.remove_incomplete(camera)

    assert files_under(outside) == before
    skipped = [e["path"] for e in logs if e["event"].startswith("symlink in the data tree")]
    # Said once per link, whichever walk met it first and however often.
    assert sorted(skipped) == sorted(str(data / p) for p in (
        "EVIL", "GOOD/2026/10/20", "GOOD/2026/11/25"))
