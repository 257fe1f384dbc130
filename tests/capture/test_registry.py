"""Cameras added, removed and replaced while the daemon runs; post-store hooks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import structlog

from lyoncam_daemon.capture.daemon import Daemon
from lyoncam_daemon.config import CameraConfig
from lyoncam_daemon.devtools.simulator import CriterSimulator
from lyoncam_daemon.storage import Frame, StoredFrame
from lyoncam_daemon.storage.filesystem import FilesystemStorage
from tests.conftest import make_config, stored_frames, until


async def test_cameras_come_and_go_at_run_time(tmp_path: Path) -> None:
    async with CriterSimulator(["A", "B", "C"], period=0.2) as sim:
        config = make_config(tmp_path, {"A": sim.url("A"), "B": sim.url("B")}, interval=0.1)
        new = config.cameras[0].model_copy(update={"id": "C", "url": sim.url("C")})
        daemon = Daemon(config)
        task = asyncio.create_task(daemon.run())
        await until(lambda: daemon.registry is not None and len(daemon.registry) == 2, "start")
        registry = daemon.registry
        assert registry is not None
        registry.add(new)
        await until(lambda: daemon.stats.camera("C").outcomes["stored"] >= 2, "C storing")
        await registry.remove("B", grace=2)
        assert "B" not in registry and "B" not in daemon.stats.cameras
        requests_b = sim.stats["B"].requests
        await until(lambda: daemon.stats.camera("A").polls >= 10, "A polling on")
        assert sim.stats["B"].requests == requests_b  # B is no longer polled
        daemon.request_stop()
        assert await task == 0
    assert stored_frames(tmp_path, "C")


async def test_a_replaced_camera_with_the_same_url_stores_no_duplicate(tmp_path: Path) -> None:
    async with CriterSimulator(["R"], period=60, etag=False) as sim:
        config = make_config(tmp_path, {"R": sim.url("R")}, interval=0.1)
        daemon = Daemon(config)
        task = asyncio.create_task(daemon.run())
        await until(lambda: daemon.stats.camera("R").outcomes["stored"] == 1, "first frame")
        registry = daemon.registry
        assert registry is not None
        changed: CameraConfig = config.cameras[0].model_copy(update={"threshold": 10})
        await registry.replace(changed, grace=2)
        await until(lambda: daemon.stats.camera("R").outcomes["unchanged"] >= 3, "polls")
        daemon.request_stop()
        assert await task == 0
    assert len(stored_frames(tmp_path, "R")) == 1
    assert daemon.stats.cameras["R"].outcomes["stored"] == 1  # counters kept across it


async def test_hooks_hear_of_every_stored_frame_and_a_broken_one_costs_nothing(
    tmp_path: Path,
) -> None:
    heard: list[StoredFrame] = []

    async def index(frame: StoredFrame) -> None:
        heard.append(frame)

    async def broken(frame: StoredFrame) -> None:
        raise OSError("index database is locked")

    async with CriterSimulator(["H"], period=0.2) as sim:
        config = make_config(tmp_path, {"H": sim.url("H")}, interval=0.1)
        daemon = Daemon(config, hooks=[broken, index])
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(daemon.run())
            await until(lambda: len(heard) >= 3, "three stored frames")
            daemon.request_stop()
            assert await task == 0
    frames = stored_frames(tmp_path, "H")
    assert [tmp_path / f.key for f in heard] == frames
    for f in heard:
        assert f.sidecar == json.loads((tmp_path / f.key).with_suffix(".json").read_text())
        assert f.size == (tmp_path / f.key).stat().st_size
    assert daemon.stats.cameras["H"].hook_errors == len(heard)
    assert [e["event"] for e in logs].count("post-store hook failed") == 1


async def test_cameras_asleep_between_polls_stop_at_once_not_at_the_grace(
    tmp_path: Path,
) -> None:
    async with CriterSimulator(["S1", "S2"], period=60) as sim:
        config = make_config(tmp_path, {c: sim.url(c) for c in ("S1", "S2")}, interval=600)
        daemon = Daemon(config)
        task = asyncio.create_task(daemon.run())
        try:
            await until(lambda: daemon.stats.camera("S1").outcomes["stored"] == 1, "a frame")
            # S1 now sleeps until its next poll, S2 until its first (phase: 300 s away)
            await asyncio.sleep(0.2)
            registry = daemon.registry
            assert registry is not None
            s1 = next(t for t in asyncio.all_tasks() if t.get_name() == "camera:S1")
            await registry.remove("S1", grace=10)
            assert s1.done() and not s1.cancelled()  # it ended by itself, within the grace
            assert await registry.stop_all(grace=10) == 0  # none had to be cancelled
        finally:
            daemon.request_stop()
            assert await task == 0


async def test_a_failing_hook_or_enricher_is_logged_when_it_starts_and_again_after_recovery(
    tmp_path: Path,
) -> None:
    """Logged once per failure streak, whatever its message (here a new text every frame:
    remembering texts would grow without bound); a failure that comes back after the part
    worked is logged again."""
    failing = [True]
    count = [0]

    async def flaky(frame: StoredFrame) -> None:
        count[0] += 1
        if failing[0]:
            raise OSError(f"database is locked (attempt {count[0]})")

    class Flaky:
        name = "flaky"

        async def __call__(self, *args: object) -> dict[str, object]:
            if failing[0]:
                raise ValueError(f"answer {count[0]} is not JSON")
            return {}

    async with CriterSimulator(["L"], period=0.15) as sim:
        config = make_config(tmp_path, {"L": sim.url("L")}, interval=0.1)
        daemon = Daemon(config, hooks=[flaky], enrichers=[Flaky()])
        stored = lambda: daemon.stats.camera("L").outcomes["stored"]  # noqa: E731
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(daemon.run())
            for phase in (True, False, True, False):
                failing[0] = phase
                start = stored()
                await until(lambda start=start: stored() >= start + 3, "three frames")
            daemon.request_stop()
            assert await task == 0
    events = [e["event"] for e in logs]
    assert events.count("post-store hook failed") == 2
    assert events.count("post-store hook works again") == 2
    assert events.count("enricher failed; frame stored without it") == 2
    assert events.count("enricher works again") == 2
    assert daemon.stats.cameras["L"].hook_errors >= 6  # every failure still counted


class Slow(FilesystemStorage):
    """The filesystem store, whose answer comes late once `gate` is cleared: the frame is
    on disk, the camera still waits (a slow fsync, a loaded disk)."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()

    async def save(self, frame: Frame) -> StoredFrame:
        stored = await super().save(frame)
        if not self.gate.is_set():
            self.waiting.set()
            await self.gate.wait()
        return stored


async def test_a_reload_that_cancels_a_camera_mid_write_keeps_its_last_frame_and_hooks(
    tmp_path: Path,
) -> None:
    """The grace runs out while the frame is being written: it is recorded all the same
    (the camera's last frame, the index's row), so the restarted camera stores no
    duplicate and the index lists every frame on disk."""
    from lyoncam_daemon.curation.index import IndexHook, frame_keys, index_path

    store = Slow(tmp_path)
    hook = IndexHook(tmp_path)
    try:
        async with CriterSimulator(["M"], period=600, etag=False) as sim:  # one picture
            config = make_config(tmp_path, {"M": sim.url("M")}, interval=0.1)
            daemon = Daemon(config, hooks=[hook], storage=store)
            store.gate.clear()  # the first frame's write will be slow
            task = asyncio.create_task(daemon.run())
            await asyncio.wait_for(store.waiting.wait(), 30)  # the first frame, mid-write
            assert daemon.registry is not None
            changed = config.cameras[0].model_copy(update={"threshold": 10})
            old = daemon.registry._cameras["M"][1]
            replacing = asyncio.create_task(daemon.registry.replace(changed, grace=0.05))
            await until(lambda: old.cancelling() > 0 or old.done(), "the grace to run out")
            store.gate.set()
            await asyncio.wait_for(replacing, 10)
            polls = daemon.stats.camera("M").polls
            await until(lambda: daemon.stats.camera("M").polls >= polls + 3, "three more polls")
            daemon.request_stop()
            assert await task == 0
    finally:
        hook.close()
    assert len(stored_frames(tmp_path, "M")) == 1  # the same picture: stored once
    import sqlite3

    with sqlite3.connect(index_path(tmp_path)) as db:
        rows = {k for (k,) in db.execute("SELECT key FROM frames")}
    assert rows == set(frame_keys(tmp_path))
