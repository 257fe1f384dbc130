"""A bounded, durable local spool in front of a remote store, so an outage loses nothing.

While the remote store answers and nothing is waiting, a frame goes straight to it. When it
fails, the frame is written to the spool (a filesystem store under the daemon's state folder:
the same atomic writes, the same layout) and an uploader sends the spooled frames, oldest
first, as soon as the store answers again. While anything is waiting, new frames queue
behind it, so frames arrive in capture order. The spool survives a restart (it is read back
at `open`), and is bounded: past `max_bytes`, a frame is refused with a StoreError (the camera
counts it and fetches that scene again next poll), logged once per outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from lyoncam_daemon.storage import Frame, Storage, StoreDenied, StoredFrame, StoreError, tree
from lyoncam_daemon.storage.filesystem import FilesystemStorage
from lyoncam_daemon.storage.layout import parse_frame_stem

#: Retry delays of the uploader while the store stays unreachable (seconds).
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 30.0



@dataclass
class SpoolStats:
    """Frames waiting on local disk for an unreachable object store (spool.py)."""

    frames: int = 0
    bytes: int = 0
    #: Capture time (Unix seconds) of the oldest frame waiting: the upload lag's start.
    oldest_unix: float | None = None
    uploaded: int = 0
    #: Frames refused because the spool was full (counted, logged once).
    refused: int = 0
    #: Spooled frames that could not be read back from the local disk (logged each).
    lost: int = 0
    #: The object store as last seen: "ok", "unreachable" (an outage: the spool waits it
    #: out), or "denied" (it refuses our credentials, HTTP 401/403: someone must act).
    store: str = "ok"
    #: The store's last error while it is not "ok".
    store_error: str | None = None

    def as_dict(self, now: float) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lag_s"] = round(now - self.oldest_unix, 3) if self.oldest_unix is not None else 0.0
        return d

class SpoolingStorage:
    """Implements `storage.Storage`: `upstream` with a local spool; see the module docstring."""

    def __init__(self, upstream: Storage, spool_dir: Path, max_bytes: int,
                 stats: SpoolStats) -> None:
        self.upstream = upstream
        self.local = FilesystemStorage(spool_dir)
        self.max_bytes = max_bytes
        self.stats = stats
        self._queue: deque[StoredFrame] = deque()
        self._wake = asyncio.Event()
        self._uploader: asyncio.Task[None] | None = None
        self._outage: str | None = None
        self._full_logged = False
        self.log = structlog.get_logger("lyoncam.storage")

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        await self.upstream.open()
        for stored in await asyncio.to_thread(self._read_back):
            self._queued(stored)
        if self._queue:
            self.log.info("spooled frames from an earlier run to upload",
                          frames=len(self._queue), bytes=self.stats.bytes)
        self._uploader = asyncio.create_task(self._upload_loop(), name="spool-uploader")

    async def close(self) -> None:
        if self._uploader is not None:
            self._uploader.cancel()
            await asyncio.gather(self._uploader, return_exceptions=True)
        await self.upstream.close()
        if self._queue:
            self.log.warning("frames left in the spool for the next start",
                             frames=len(self._queue), folder=str(self.local.data_dir))

    # -- the Storage protocol ---------------------------------------------------------------

    async def save(self, frame: Frame) -> StoredFrame:
        if not self._queue:
            try:
                return await self.upstream.save(frame)
            except StoreError as exc:
                self._went_down(exc)
        return await self._spool(frame)

    async def latest(self, camera_id: str) -> StoredFrame | None:
        for stored in reversed(self._queue):  # spooled frames are the newest there are
            if stored.camera_id == camera_id:
                return stored
        return await self.upstream.latest(camera_id)

    async def read(self, key: str) -> bytes:
        if any(stored.key == key for stored in self._queue):  # not uploaded yet
            return await self.local.read(key)
        return await self.upstream.read(key)

    async def recover(self, camera_id: str) -> int:
        removed = await self.local.recover(camera_id)
        if any(stored.camera_id == camera_id for stored in self._queue):
            # The uploader may be between this camera's JPEG and its sidecar: the bucket's
            # repair would delete a JPEG about to be completed. Its own frames come first.
            return removed
        return removed + await self.upstream.recover(camera_id)

    # -- internals --------------------------------------------------------------------------

    async def _spool(self, frame: Frame) -> StoredFrame:
        if self.stats.bytes + len(frame.data) > self.max_bytes:
            self.stats.refused += 1
            if not self._full_logged:
                self._full_logged = True
                self.log.error("spool full: frames are refused until uploads resume",
                               folder=str(self.local.data_dir), max_bytes=self.max_bytes)
            raise StoreError(f"cannot store frame of {frame.camera_id}: the spool is full "
                             f"({self.max_bytes} bytes) and the object store unreachable")
        # Shielded: a camera cancelled mid-write (a reload's grace ran out) must not leave a
        # frame on disk that the queue never heard of.
        return await asyncio.shield(self._write_and_queue(frame))

    async def _write_and_queue(self, frame: Frame) -> StoredFrame:
        stored = await self.local.save(frame)
        self._queued(stored)
        self._wake.set()
        return stored

    def _queued(self, stored: StoredFrame) -> None:
        self._queue.append(stored)
        self.stats.frames += 1
        self.stats.bytes += stored.size
        if self.stats.oldest_unix is None:
            self.stats.oldest_unix = stored.captured_at.timestamp()

    def _went_down(self, exc: StoreError) -> None:
        """The store failed: an outage (unreachable) or a refusal (denied), logged when the
        condition begins or changes, never per frame."""
        state = "denied" if isinstance(exc, StoreDenied) else "unreachable"
        if state != self.stats.store:
            if state == "denied":
                self.log.error("object store refuses the credentials; spooling frames locally",
                               error=str(exc), hint="check AWS_ACCESS_KEY_ID/SECRET_ACCESS_KEY"
                               " (or storage.credentials_file) and the bucket's policy; "
                               "uploads resume once it accepts them")
            else:
                self.log.warning("object store unreachable; spooling frames locally",
                                 error=str(exc))
        self.stats.store, self.stats.store_error = state, str(exc)
        self._outage = str(exc)

    async def _upload_loop(self) -> None:
        delay = RETRY_FIRST_S
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            head = self._queue[0]
            try:
                data, sidecar = await asyncio.to_thread(self._read, head)
            except OSError as exc:
                # Gone or unreadable on the local disk: nothing to upload, and waiting would
                # hold every later frame behind it for good.
                self.log.error("spooled frame unreadable; dropped", key=head.key,
                               error=exc.strerror or str(exc))
                self.stats.lost += 1
                self._dequeue()
                continue
            try:
                await self.upstream.save(Frame(head.camera_id, head.captured_at, data, sidecar))
            except StoreError as exc:
                self._went_down(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            except Exception as exc:  # a bug must not stop the uploader for good
                self.log.exception("spool upload crashed; retrying", key=head.key,
                                   error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            delay = RETRY_FIRST_S
            self.stats.store, self.stats.store_error = "ok", None  # it took a frame
            try:
                await asyncio.to_thread(self._remove, head)
            except OSError as exc:  # uploaded: a local copy left behind costs only disk
                self.log.warning("uploaded frame not removed from the spool", key=head.key,
                                 error=exc.strerror or str(exc))
            self._dequeue()
            self.stats.uploaded += 1

    def _dequeue(self) -> None:
        head = self._queue.popleft()
        self.stats.frames -= 1
        self.stats.bytes -= head.size
        self.stats.oldest_unix = (self._queue[0].captured_at.timestamp()
                                  if self._queue else None)
        if not self._queue:
            if self._outage is not None:
                self.log.info("object store back; spool drained")
            self._outage, self._full_logged = None, False
            self.stats.store, self.stats.store_error = "ok", None

    def _read(self, stored: StoredFrame) -> tuple[bytes, dict[str, Any]]:
        jpg = self.local.path_of(stored.key)
        sidecar = dict(stored.sidecar)
        sidecar.pop("file", None)  # the store names the file where it puts it
        return jpg.read_bytes(), sidecar

    def _remove(self, stored: StoredFrame) -> None:
        jpg = self.local.path_of(stored.key)
        for path in (jpg.with_suffix(".json"), jpg):  # sidecar first: no half frame remains
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _read_back(self) -> list[StoredFrame]:
        """Spooled frames of an earlier run, oldest first."""
        found: list[StoredFrame] = []
        root = self.local.data_dir
        if not root.is_dir():
            return found
        days = [day for camera in tree.subdirs(root) for year in tree.subdirs(camera, numeric=True)
                for month in tree.subdirs(year, numeric=True)
                for day in tree.subdirs(month, numeric=True)]
        for sidecar in (f for day in days for f in tree.files(day) if f.suffix == ".json"):
            parsed = parse_frame_stem(sidecar.stem)
            jpg = sidecar.with_suffix(".jpg")
            if parsed is None or sidecar.name.startswith(".") or not jpg.exists():
                continue
            try:
                meta = json.loads(sidecar.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            key = jpg.relative_to(root).as_posix()
            found.append(StoredFrame(parsed[0], key, parsed[1], jpg.stat().st_size, meta))
        return sorted(found, key=lambda f: (f.captured_at, f.key))
