"""The running cameras: id → task with its own stop, so cameras come and go at run time.

The daemon starts every camera through here and a reload adds, removes and replaces them
through here. Each camera task runs under a supervisor that restarts it one interval after
a bug escapes it, so a bug costs minutes of one camera, never its months.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import structlog

from lyoncam_daemon.capture.camera import CameraTask, Runtime
from lyoncam_daemon.config import CameraConfig
from lyoncam_daemon.observe.stats import ErrorKind


class CameraRegistry:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._cameras: dict[str, tuple[CameraTask, asyncio.Task[None]]] = {}
        self.log = structlog.get_logger("lyoncam.daemon")

    def __contains__(self, camera_id: object) -> bool:
        return camera_id in self._cameras

    def __len__(self) -> int:
        return len(self._cameras)

    def __iter__(self) -> Iterator[CameraTask]:
        return (cam for cam, _ in self._cameras.values())

    def get(self, camera_id: str) -> CameraTask | None:
        entry = self._cameras.get(camera_id)
        return entry[0] if entry else None

    def add(self, camera: CameraConfig, phase: float = 0.0,
            previous: CameraTask | None = None, anchor: float | None = None) -> CameraTask:
        """Start polling `camera`, first `phase` seconds after `anchor` (monotonic; now by
        default: cameras started together share one); with `previous` (same URL), carry on
        from its memory."""
        if camera.id in self._cameras:
            raise ValueError(f"camera {camera.id!r} is already running")
        cam = CameraTask(camera, self.rt, phase, anchor)
        if previous is not None:
            cam.inherit(previous)
        task = asyncio.create_task(self._supervise(cam), name=f"camera:{camera.id}")
        self._cameras[camera.id] = (cam, task)
        return cam

    async def remove(self, camera_id: str, grace: float, *, forget: bool = True) -> CameraTask:
        """Stop a camera: its in-flight poll may finish within `grace`, then it is cancelled.

        `forget` drops its counters too (a camera gone from the config); a replaced camera
        keeps them.
        """
        cam, task = self._cameras.pop(camera_id)
        await _stop([(cam, task)], grace)
        if forget:
            self.rt.stats.remove(camera_id)
        return cam

    async def replace(self, camera: CameraConfig, grace: float, phase: float = 0.0,
                      anchor: float | None = None) -> None:
        """Restart a camera with new settings, keeping its dedup memory if the URL is the
        same (a new URL is another picture: start afresh)."""
        old = await self.remove(camera.id, grace, forget=False)
        self.add(camera, phase, previous=old if old.camera.url == camera.url else None,
                 anchor=anchor)

    async def stop_all(self, grace: float) -> int:
        """Stop every camera; return how many were cancelled mid-poll."""
        try:
            return await _stop(list(self._cameras.values()), grace)
        finally:
            self._cameras.clear()

    def cancel_all(self) -> None:
        """A second Ctrl-C: no more grace."""
        for _, task in self._cameras.values():
            task.cancel()

    async def _supervise(self, cam: CameraTask) -> None:
        while not cam.stop.is_set():
            try:
                await cam.run()
                return
            except Exception:
                self.log.exception("camera task crashed; restarting", camera=cam.camera.id)
                cam.rt.stats.failed(cam.stats, ErrorKind.INTERNAL.value)
                await cam.stop.wait(cam.camera.interval)


async def _stop(entries: list[tuple[CameraTask, asyncio.Task[None]]], grace: float) -> int:
    for cam, _ in entries:
        cam.stop.set()
    tasks = [task for _, task in entries]
    if not tasks:
        return 0
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    # Counted after the fact: a second Ctrl-C may have cancelled them before the grace ended.
    return sum(task.cancelled() for task in tasks)
